//! Machine-readable summaries of a model (`fhec inspect --json`).

use std::collections::BTreeMap;

use fhec_ir::Graph;
use serde::Serialize;

/// One input or output.
#[derive(Debug, Serialize)]
pub struct Port {
    /// Node name.
    pub name: String,
    /// Static shape.
    pub shape: Vec<usize>,
}

/// One node, in topological order.
#[derive(Debug, Serialize)]
pub struct NodeSummary {
    /// Node name.
    pub name: String,
    /// Op name.
    pub op: &'static str,
    /// Output shape.
    pub shape: Vec<usize>,
    /// Stored parameters.
    pub parameters: usize,
}

/// Summary of an imported model.
#[derive(Debug, Serialize)]
pub struct ModelSummary {
    /// Graph name.
    pub name: String,
    /// Model metadata (for instance `fhec.preprocess`).
    pub metadata: BTreeMap<String, String>,
    /// Graph inputs.
    pub inputs: Vec<Port>,
    /// Graph outputs.
    pub outputs: Vec<Port>,
    /// Node count per op.
    pub op_counts: BTreeMap<&'static str, usize>,
    /// Total node count.
    pub node_count: usize,
    /// Total parameter count.
    pub parameter_count: usize,
    /// Every node.
    pub nodes: Vec<NodeSummary>,
}

/// Summarises a graph.
pub fn summarize(g: &Graph) -> ModelSummary {
    let port = |id| Port { name: g.node(id).name.clone(), shape: g.node(id).shape.clone() };
    let order = g.topo_order().unwrap_or_else(|| g.node_ids());
    ModelSummary {
        name: g.name.clone(),
        metadata: g.metadata.clone(),
        inputs: g.inputs().iter().map(|&i| port(i)).collect(),
        outputs: g.outputs().iter().map(|&i| port(i)).collect(),
        op_counts: g.op_counts(),
        node_count: g.len(),
        parameter_count: g.parameter_count(),
        nodes: order
            .into_iter()
            .map(|id| {
                let n = g.node(id);
                NodeSummary {
                    name: n.name.clone(),
                    op: n.op.name(),
                    shape: n.shape.clone(),
                    parameters: n.op.parameter_count(),
                }
            })
            .collect(),
    }
}
