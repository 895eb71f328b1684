//! The ONNX frontend: ONNX protobuf bytes -> NN IR ([`fhec_ir::Graph`]).
//!
//! tract-onnx parses the protobuf; this module walks the nodes in order and hands each
//! one to a small per-op function of the registry in [`ops`]. Values are either
//! computed nodes of the graph being built or constants (initializers, `Constant`
//! nodes, and everything computed from constants only, which is folded right away:
//! weight reshapes, `Shape`/`Gather`/`Concat` chains of PyTorch exports, ...).
//!
//! Real exports differ in many small ways; the frontend accepts:
//! * old IR versions where initializers are also listed as graph inputs;
//! * a symbolic (or missing) batch dimension, fixed to [`ImportOptions::batch`];
//! * attributes by their defaults, `auto_pad`, optional inputs given as empty names;
//! * opset-dependent forms (Clip bounds as attributes or inputs, Squeeze/Unsqueeze axes
//!   as attributes or inputs, Softmax's pre-13 coercion to 2-D).
//!
//! Anything else fails with an [`ImportError`] naming the node, its op type and what is
//! supported.

mod attrs;
mod ops;
pub mod tensor;

use std::collections::HashMap;

use fhec_ir::nn::{Graph, NodeId, Op, interp};
use ndarray::ArrayViewD;
use tract_onnx::pb::{self, ModelProto, NodeProto};
use tract_onnx::prelude::Framework;

pub use attrs::NodeCtx;
use tensor::CTensor;

/// Options of the import.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// Value given to a symbolic or unknown batch (first) dimension.
    pub batch: usize,
    /// Overrides the input shape entirely (for models with other symbolic dimensions).
    pub input_shape: Option<Vec<usize>>,
    /// The graph output holding the class scores, for a model with several outputs
    /// (logits and probabilities, say); `None`: the model must have exactly one.
    pub output: Option<String>,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions { batch: 1, input_shape: None, output: None }
    }
}

/// Why a model could not be imported. The `Display` text is meant for users.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// The bytes are not an ONNX model.
    #[error("malformed ONNX model: {0}")]
    Malformed(String),
    /// A node uses an operator fhec does not know.
    #[error("node '{node}' ({op_type}): operator {domain}{op_type} is not supported; supported operators: {supported}")]
    UnsupportedOp {
        /// Node name.
        node: String,
        /// ONNX op type.
        op_type: String,
        /// Domain prefix (`com.microsoft::`) or empty for the default domain.
        domain: String,
        /// Comma-separated list of supported op types.
        supported: String,
    },
    /// A known operator is used in a way fhec does not support, or is invalid.
    #[error("node '{node}' ({op_type}): {message}")]
    Node {
        /// Node name.
        node: String,
        /// ONNX op type.
        op_type: String,
        /// What is wrong.
        message: String,
    },
    /// A problem with the model as a whole (inputs, outputs, shapes).
    #[error("{0}")]
    Model(String),
}

/// A value during import.
#[derive(Clone, Debug)]
pub(crate) enum Val {
    /// Computed at run time by a node of the graph.
    Node(NodeId),
    /// Known at compile time.
    Const(CTensor),
    /// An integer tensor of a quantized model: the node computes its real value
    /// `(q - zero_point) * scale`, which lies on the grid.
    Quant(NodeId, fhec_ir::nn::Grid),
}

/// Import state: the graph being built and the values bound to ONNX names.
pub(crate) struct Importer {
    pub graph: Graph,
    pub values: HashMap<String, Val>,
    pub opset: i64,
}

/// Parses ONNX bytes and imports the model.
pub fn import_onnx(bytes: &[u8], options: &ImportOptions) -> Result<Graph, ImportError> {
    let proto = tract_onnx::onnx()
        .proto_model_for_read(&mut &bytes[..])
        .map_err(|e| ImportError::Malformed(format!("{e:#}")))?;
    import_proto(&proto, options)
}

/// Imports an already parsed ONNX model.
pub fn import_proto(model: &ModelProto, options: &ImportOptions) -> Result<Graph, ImportError> {
    let graph = model.graph.as_ref().ok_or_else(|| ImportError::Malformed("the model has no graph".into()))?;
    if graph.node.is_empty() {
        return Err(ImportError::Malformed("the model's graph has no nodes (is this an ONNX model?)".into()));
    }
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .unwrap_or(if model.ir_version <= 3 { 8 } else { 1 });
    let name = if graph.name.is_empty() { "model".to_string() } else { graph.name.clone() };
    let mut imp = Importer { graph: Graph::new(name), values: HashMap::new(), opset };
    for kv in &model.metadata_props {
        imp.graph.metadata.insert(kv.key.clone(), kv.value.clone());
    }

    for init in &graph.initializer {
        let t = tensor::decode(init).map_err(|e| ImportError::Model(format!("initializer '{}': {e}", init.name)))?;
        imp.values.insert(init.name.clone(), Val::Const(t));
    }
    let real_inputs: Vec<&pb::ValueInfoProto> =
        graph.input.iter().filter(|i| !imp.values.contains_key(&i.name)).collect();
    if real_inputs.len() != 1 {
        let names: Vec<&str> = real_inputs.iter().map(|i| i.name.as_str()).collect();
        return Err(ImportError::Model(format!(
            "the model has {} non-constant inputs {names:?}; fhec classifies one image input",
            real_inputs.len()
        )));
    }
    let input = real_inputs[0];
    let shape = input_shape(input, options)?;
    let id = imp.graph.add_input(input.name.clone(), shape);
    imp.values.insert(input.name.clone(), Val::Node(id));

    for (i, node) in graph.node.iter().enumerate() {
        imp.import_node(node, i)?;
    }

    let names: Vec<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    let out_name = match (&options.output, names.as_slice()) {
        (Some(want), _) if names.contains(&want.as_str()) => want,
        (Some(want), _) => {
            return Err(ImportError::Model(format!("the model has no output '{want}'; its outputs are {names:?}")));
        }
        (None, [_]) => &graph.output[0].name,
        (None, _) => {
            return Err(ImportError::Model(format!(
                "the model has {} outputs {names:?}; fhec classifies with one: pick the class scores with --output NAME",
                names.len()
            )));
        }
    };
    match imp.values.get(out_name) {
        Some(Val::Node(id)) => {
            let id = *id;
            imp.graph.add_output(id)
        }
        Some(Val::Quant(..)) => {
            return Err(ImportError::Model(format!(
                "the output '{out_name}' is an integer tensor; fhec expects a float output (add DequantizeLinear)"
            )));
        }
        Some(Val::Const(_)) => {
            return Err(ImportError::Model(format!("the output '{out_name}' does not depend on the input")));
        }
        None => return Err(ImportError::Model(format!("the output '{out_name}' is not produced by any node"))),
    }
    imp.graph.remove_dead_nodes();
    fhec_ir::nn::verify::verify(&imp.graph).map_err(|e| ImportError::Model(format!("internal error: {e}")))?;
    Ok(imp.graph)
}

fn input_shape(input: &pb::ValueInfoProto, options: &ImportOptions) -> Result<Vec<usize>, ImportError> {
    use pb::tensor_shape_proto::dimension::Value as D;
    use pb::type_proto::Value as T;
    let bad = |m: String| Err(ImportError::Model(format!("input '{}' {m}", input.name)));
    let Some(T::TensorType(tt)) = input.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return bad("is not a tensor".into());
    };
    if tt.elem_type != 1 {
        return bad(format!("has ONNX element type {}; fhec takes float (type 1) images", tt.elem_type));
    }
    if let Some(s) = &options.input_shape {
        return checked_size(s.clone()).or_else(|m| bad(format!("given by --input-shape {m}")));
    }
    let Some(shape) = &tt.shape else {
        return bad("has no declared shape; give one with --input-shape".into());
    };
    let mut out = Vec::new();
    for (axis, d) in shape.dim.iter().enumerate() {
        match &d.value {
            Some(D::DimValue(v)) if *v > 0 => out.push(*v as usize),
            Some(D::DimValue(v)) if axis != 0 => return bad(format!("has dimension {axis} = {v}")),
            Some(D::DimParam(p)) if axis != 0 => {
                return bad(format!(
                    "has a symbolic dimension {axis} ('{p}') that cannot be resolved; fhec needs a static image shape (give one with --input-shape)"
                ));
            }
            None if axis != 0 => {
                return bad(format!(
                    "has an unknown dimension {axis}; fhec needs a static image shape (give one with --input-shape)"
                ));
            }
            _ => out.push(options.batch),
        }
    }
    if out.is_empty() {
        return bad("is a scalar".into());
    }
    checked_size(out).or_else(bad)
}

/// The most values an input may hold: a grayscale image model's input is far smaller (a
/// 28x28 image is 784), and every size computed from it stays far from overflow.
pub const MAX_INPUT_VALUES: usize = 1 << 24;

/// `shape` when it has no zero dimension and at most [`MAX_INPUT_VALUES`] values (checked
/// arithmetic), else what is wrong.
fn checked_size(shape: Vec<usize>) -> Result<Vec<usize>, String> {
    if shape.is_empty() || shape.contains(&0) {
        return Err(format!("{shape:?} has no values"));
    }
    match shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) {
        Some(n) if n <= MAX_INPUT_VALUES => Ok(shape),
        _ => Err(format!("{shape:?} is too large: at most {MAX_INPUT_VALUES} values (a grayscale image)")),
    }
}

impl Importer {
    fn import_node(&mut self, node: &NodeProto, index: usize) -> Result<(), ImportError> {
        let name = if node.name.is_empty() { format!("{}_{index}", node.op_type) } else { node.name.clone() };
        let ctx = NodeCtx { node, name, opset: self.opset };
        let domain = if node.domain == "ai.onnx" { "" } else { node.domain.as_str() };
        let Some(handler) = ops::lookup(domain, &node.op_type) else {
            return Err(ImportError::UnsupportedOp {
                node: ctx.name.clone(),
                op_type: node.op_type.clone(),
                domain: if domain.is_empty() { String::new() } else { format!("{domain}::") },
                supported: ops::supported().join(", "),
            });
        };
        let mut inputs = Vec::with_capacity(node.input.len());
        for i in &node.input {
            if i.is_empty() {
                inputs.push(None);
            } else {
                let v = self.values.get(i).cloned().ok_or_else(|| {
                    ctx.err(format!(
                        "input '{i}' is not produced by any earlier node (or is an unsupported secondary output)"
                    ))
                })?;
                inputs.push(Some(v));
            }
        }
        let outs = handler(self, &ctx, &inputs)?;
        for (name, v) in node.output.iter().zip(outs) {
            if !name.is_empty() {
                self.values.insert(name.clone(), v);
            }
        }
        Ok(())
    }

    /// Shape of a value.
    pub fn shape_of(&self, v: &Val) -> Vec<usize> {
        match v {
            Val::Node(id) | Val::Quant(id, _) => self.graph.node(*id).shape.clone(),
            Val::Const(c) => c.shape().to_vec(),
        }
    }

    /// Applies an NN IR op to values: folded if every input is constant, else emitted as
    /// a node named after the ONNX node (plus `.role` for helper nodes).
    pub fn apply(
        &mut self,
        ctx: &NodeCtx,
        role: Option<&str>,
        op: Op,
        args: &[Val],
        declared: &[usize],
    ) -> Result<Val, ImportError> {
        if args.iter().all(|a| matches!(a, Val::Const(_))) {
            let owned: Vec<ndarray::ArrayD<f32>> =
                args.iter().filter_map(|a| if let Val::Const(c) = a { Some(c.to_f32()) } else { None }).collect();
            let views: Vec<ArrayViewD<f32>> = owned.iter().map(|a| a.view()).collect();
            let out = interp::eval_op(&op, &views, declared).map_err(|e| ctx.err(format!("folding constants: {e}")))?;
            return Ok(Val::Const(CTensor::F32(out)));
        }
        let mut ids = Vec::with_capacity(args.len());
        for a in args {
            match a {
                Val::Node(id) => ids.push(*id),
                Val::Quant(..) => {
                    return Err(
                        ctx.err("this operator on an integer (quantized) tensor is not supported; dequantize it first")
                    );
                }
                Val::Const(c) => {
                    return Err(
                        ctx.err(format!("fhec supports a constant {} operand only where it is a weight", c.describe()))
                    );
                }
            }
        }
        let name = match role {
            Some(r) => format!("{}.{r}", ctx.name),
            None => ctx.name.clone(),
        };
        let id = self.graph.add_op_with_shape(name, op, &ids, declared).map_err(|e| ctx.err(e.0))?;
        Ok(Val::Node(id))
    }
}
