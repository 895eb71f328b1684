//! The graph container.

use std::collections::BTreeMap;

use petgraph::Direction;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use serde::{Deserialize, Serialize};

use super::{Op, Shape, ShapeError};

/// The most values one node of the NN IR may hold (2^28: a grayscale CNN's largest
/// activation tensor is many orders of magnitude smaller).
pub const MAX_VALUES: usize = 1 << 28;

/// Identifies a node of a [`Graph`]; stable across removals of other nodes.
pub type NodeId = NodeIndex<u32>;

/// One operation and the static shape of its output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Provenance: the source node's name, or `{source}.{role}` for generated nodes.
    pub name: String,
    /// The operation.
    pub op: Op,
    /// Output shape.
    pub shape: Shape,
}

/// A DAG of [`Node`]s. Edges carry the consumer's input slot (0-based).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Graph {
    /// The model's name (for printing).
    pub name: String,
    /// Free-form metadata carried with the model (for instance `fhec.preprocess`).
    pub metadata: BTreeMap<String, String>,
    graph: StableDiGraph<Node, usize>,
    inputs: Vec<NodeId>,
    outputs: Vec<NodeId>,
}

impl Graph {
    /// An empty graph.
    pub fn new(name: impl Into<String>) -> Self {
        Graph {
            name: name.into(),
            metadata: BTreeMap::new(),
            graph: StableDiGraph::default(),
            inputs: vec![],
            outputs: vec![],
        }
    }

    /// Adds a graph input of the given shape.
    pub fn add_input(&mut self, name: impl Into<String>, shape: Shape) -> NodeId {
        let index = self.inputs.len();
        let id = self.graph.add_node(Node { name: name.into(), op: Op::Input { index }, shape });
        self.inputs.push(id);
        id
    }

    /// Adds `op` applied to `inputs`, inferring its output shape (at most [`MAX_VALUES`]
    /// values: shapes come from model files, and every size computed from them must stay
    /// far from overflow).
    /// `Reshape` takes its target shape from `reshape_to`; other ops ignore it.
    pub fn add_op(&mut self, name: impl Into<String>, op: Op, inputs: &[NodeId]) -> Result<NodeId, ShapeError> {
        self.add_op_with_shape(name, op, inputs, &[])
    }

    /// Like [`Graph::add_op`] with a declared output shape (required for `Reshape`).
    pub fn add_op_with_shape(
        &mut self,
        name: impl Into<String>,
        op: Op,
        inputs: &[NodeId],
        declared: &[usize],
    ) -> Result<NodeId, ShapeError> {
        if matches!(op, Op::Input { .. }) {
            return Err(ShapeError("inputs are added with Graph::add_input".into()));
        }
        let shapes: Vec<&[usize]> = inputs.iter().map(|&i| self.graph[i].shape.as_slice()).collect();
        let shape = op.infer_shape(&shapes, declared)?;
        match shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) {
            Some(n) if n <= MAX_VALUES => {}
            _ => {
                return Err(ShapeError(format!(
                    "{} output of shape {shape:?} is too large (at most {MAX_VALUES} values)",
                    op.name()
                )));
            }
        }
        let id = self.graph.add_node(Node { name: name.into(), op, shape });
        for (slot, &i) in inputs.iter().enumerate() {
            self.graph.add_edge(i, id, slot);
        }
        Ok(id)
    }

    /// Marks `id` as a graph output.
    pub fn add_output(&mut self, id: NodeId) {
        self.outputs.push(id);
    }

    /// The graph inputs, in order.
    pub fn inputs(&self) -> &[NodeId] {
        &self.inputs
    }

    /// The graph outputs, in order.
    pub fn outputs(&self) -> &[NodeId] {
        &self.outputs
    }

    /// The node `id`.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.graph[id]
    }

    /// The node `id`, mutably (callers re-verify after changing shapes).
    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.graph[id]
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.graph.node_count()
    }

    /// Whether the graph has no nodes.
    pub fn is_empty(&self) -> bool {
        self.graph.node_count() == 0
    }

    /// The producers of `id`'s inputs, ordered by slot.
    pub fn inputs_of(&self, id: NodeId) -> Vec<NodeId> {
        let mut e: Vec<(usize, NodeId)> =
            self.graph.edges_directed(id, Direction::Incoming).map(|e| (*e.weight(), e.source())).collect();
        e.sort_unstable();
        e.into_iter().map(|(_, n)| n).collect()
    }

    /// Input slots of `id` with their producers, unsorted (for the verifier).
    pub(crate) fn input_slots(&self, id: NodeId) -> Vec<(usize, NodeId)> {
        self.graph.edges_directed(id, Direction::Incoming).map(|e| (*e.weight(), e.source())).collect()
    }

    /// The consumers of `id` (a consumer using it twice appears twice).
    pub fn users_of(&self, id: NodeId) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self.graph.neighbors_directed(id, Direction::Outgoing).collect();
        v.sort_unstable();
        v
    }

    /// All node ids in insertion order.
    pub fn node_ids(&self) -> Vec<NodeId> {
        self.graph.node_indices().collect()
    }

    /// Node ids in a deterministic topological order (Kahn's algorithm, smallest id
    /// first). Returns `None` if the graph has a cycle.
    pub fn topo_order(&self) -> Option<Vec<NodeId>> {
        use std::cmp::Reverse;
        use std::collections::{BinaryHeap, HashMap};
        let mut indeg: HashMap<NodeId, usize> = HashMap::new();
        let mut heap = BinaryHeap::new();
        for n in self.graph.node_indices() {
            let d = self.graph.edges_directed(n, Direction::Incoming).count();
            indeg.insert(n, d);
            if d == 0 {
                heap.push(Reverse(n));
            }
        }
        let mut order = Vec::with_capacity(indeg.len());
        while let Some(Reverse(n)) = heap.pop() {
            order.push(n);
            for e in self.graph.edges_directed(n, Direction::Outgoing) {
                let d = indeg.get_mut(&e.target()).expect("edge target is a node");
                *d -= 1;
                if *d == 0 {
                    heap.push(Reverse(e.target()));
                }
            }
        }
        (order.len() == self.graph.node_count()).then_some(order)
    }

    /// Redirects every use of `old` (by consumers and graph outputs) to `new`.
    pub fn replace_uses(&mut self, old: NodeId, new: NodeId) {
        let uses: Vec<(petgraph::stable_graph::EdgeIndex, NodeId, usize)> =
            self.graph.edges_directed(old, Direction::Outgoing).map(|e| (e.id(), e.target(), *e.weight())).collect();
        for (e, target, slot) in uses {
            self.graph.remove_edge(e);
            self.graph.add_edge(new, target, slot);
        }
        for o in &mut self.outputs {
            if *o == old {
                *o = new;
            }
        }
    }

    /// Removes nodes from which no graph output is reachable. Graph inputs are kept.
    /// Returns how many nodes were removed.
    pub fn remove_dead_nodes(&mut self) -> usize {
        let mut live = std::collections::HashSet::new();
        let mut stack: Vec<NodeId> = self.outputs.clone();
        while let Some(n) = stack.pop() {
            if live.insert(n) {
                stack.extend(self.graph.neighbors_directed(n, Direction::Incoming));
            }
        }
        let dead: Vec<NodeId> =
            self.graph.node_indices().filter(|n| !live.contains(n) && !self.inputs.contains(n)).collect();
        for &n in &dead {
            self.graph.remove_node(n);
        }
        dead.len()
    }

    /// Total number of stored parameters.
    pub fn parameter_count(&self) -> usize {
        self.graph.node_weights().map(|n| n.op.parameter_count()).sum()
    }

    /// Count of each op kind, by [`Op::name`].
    pub fn op_counts(&self) -> BTreeMap<&'static str, usize> {
        let mut m = BTreeMap::new();
        for n in self.graph.node_weights() {
            *m.entry(n.op.name()).or_default() += 1;
        }
        m
    }
}
