//! Structure-aware edits of a decoded ONNX `ModelProto`: the input's dimensions and element
//! type, node attributes (pads, strides, kernel shapes, axes, ...) of every type, initializer
//! dimensions, data types and data (wrong sizes), nodes removed, reordered, duplicated, fed
//! by themselves or by later nodes (cycles), given unknown or other op types and domains,
//! graph outputs, opsets and metadata.

use arbitrary::Arbitrary;
use prost::Message;
use rand::RngExt;
use tract_onnx::pb::tensor_shape_proto::{Dimension, dimension};
use tract_onnx::pb::{AttributeProto, ModelProto, StringStringEntryProto, TensorProto, type_proto};

use super::arb;
use crate::mutate::{Rng, havoc, interesting};

/// Op types the frontend knows, a few it does not, and odd names.
const OPS: &[&str] = &[
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "Clip",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "ConvInteger",
    "DequantizeLinear",
    "Div",
    "Dropout",
    "Flatten",
    "Gather",
    "Gemm",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "HardSigmoid",
    "Identity",
    "LeakyRelu",
    "LogSoftmax",
    "MatMul",
    "MatMulInteger",
    "MaxPool",
    "Mul",
    "PRelu",
    "Pad",
    "Pow",
    "QLinearConv",
    "QLinearMatMul",
    "QuantizeLinear",
    "Relu",
    "Reshape",
    "Shape",
    "Sigmoid",
    "Slice",
    "Softmax",
    "Squeeze",
    "Sub",
    "Tanh",
    "Transpose",
    "Unsqueeze",
    "QLinearAdd",
    "Erf",
    "Loop",
    "If",
    "Resize",
    "",
];

/// Attribute names the frontend reads.
const ATTRS: &[&str] = &[
    "allowzero",
    "alpha",
    "auto_pad",
    "axes",
    "axis",
    "beta",
    "ceil_mode",
    "count_include_pad",
    "dilations",
    "epsilon",
    "group",
    "kernel_shape",
    "mode",
    "pads",
    "perm",
    "shape",
    "spatial",
    "storage_order",
    "strides",
    "to",
    "transA",
    "transB",
    "value",
    "value_float",
    "value_floats",
    "value_int",
    "value_ints",
    "training_mode",
    "keepdims",
];

/// Element types: every ONNX one, and unknown numbers.
const DTYPES: &[i32] = &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 99, -1];

/// One edit of a model.
#[derive(Arbitrary, Debug)]
enum Edit {
    /// A dimension of the graph input (or of every input): 0, negative, huge, symbolic, missing.
    InputDim { input: u8, dim: u8, how: u8 },
    /// The graph input's shape loses or gains a dimension, or disappears.
    InputRank { how: u8 },
    /// The graph input's element type.
    InputType { dtype: u8 },
    /// An attribute of a node set (added or replaced) with a value of some type.
    Attr { node: u16, name: u8, kind: u8, len: u8 },
    /// An attribute of a node removed.
    DropAttr { node: u16 },
    /// An initializer's dimensions (its data left as it is: a wrong size).
    InitDims { init: u16, dim: u8, how: u8 },
    /// An initializer's data type (its data left as it is).
    InitType { init: u16, dtype: u8 },
    /// An initializer's data cut, extended, moved between the raw and typed fields, or
    /// mutated.
    InitData { init: u16, how: u8 },
    /// An initializer removed (its consumers lose an input), or duplicated.
    InitDrop { init: u16, dup: bool },
    /// A node removed (missing inputs), duplicated, or moved (use before definition).
    Node { node: u16, to: u16, how: u8 },
    /// A node's input made its own output, a later node's output, the graph input, an empty
    /// name, or an unknown name; or an input added or removed.
    NodeInput { node: u16, slot: u8, how: u8 },
    /// A node's op type or domain.
    OpType { node: u16, op: u8, domain: u8 },
    /// A graph output removed, duplicated or renamed.
    Output { how: u8 },
    /// The opset or IR version.
    Opset { how: u8 },
    /// fhec metadata with a bad value.
    Metadata { key: u8 },
}

fn pick(n: usize, i: u16) -> Option<usize> {
    (n > 0).then(|| i as usize % n)
}

/// An awkward dimension or count.
fn dim(rng: &mut Rng) -> i64 {
    match rng.random_range(0..4) {
        0 => interesting(rng) as i64,
        1 => rng.random_range(-2..6),
        2 => [0, -1, 1 << 31, 1 << 40, i64::MAX, i64::MIN][rng.random_range(0..6)],
        _ => rng.random_range(1..64),
    }
}

/// An attribute value of the given kind.
fn attribute(name: &str, kind: u8, len: u8, rng: &mut Rng) -> AttributeProto {
    let n = (len % 6) as usize;
    let mut a = AttributeProto { name: name.to_string(), ..Default::default() };
    match kind % 7 {
        0 => {
            a.r#type = 2;
            a.i = dim(rng);
        }
        1 => {
            a.r#type = 7;
            a.ints = (0..n).map(|_| dim(rng)).collect();
        }
        2 => {
            a.r#type = 1;
            a.f = [0.0, -1.0, f32::NAN, f32::INFINITY, 1e30, 1e-30][rng.random_range(0..6)];
        }
        3 => {
            a.r#type = 6;
            a.floats = (0..n).map(|_| f32::from_bits(rng.random())).collect();
        }
        4 => {
            a.r#type = 3;
            a.s = ["SAME_UPPER", "SAME_LOWER", "VALID", "NOTSET", "", "bogus"][rng.random_range(0..6)].into();
        }
        5 => {
            a.r#type = 4;
            a.t = Some(tensor(rng));
        }
        _ => {
            // A type that disagrees with the value present.
            a.r#type = rng.random_range(0..15);
            a.i = dim(rng);
        }
    }
    a
}

/// A small tensor with awkward dimensions or type.
fn tensor(rng: &mut Rng) -> TensorProto {
    let dims: Vec<i64> = (0..rng.random_range(0..4))
        .map(|_| if rng.random_bool(0.7) { rng.random_range(0..4) } else { dim(rng) })
        .collect();
    let mut t = TensorProto { dims, data_type: DTYPES[rng.random_range(0..DTYPES.len())], ..Default::default() };
    match rng.random_range(0..3) {
        0 => t.raw_data = (0..rng.random_range(0..64)).map(|_| rng.random()).collect(),
        1 => t.float_data = (0..rng.random_range(0..16)).map(|i| i as f32).collect(),
        _ => t.int64_data = (0..rng.random_range(0..16)).map(|_| dim(rng)).collect(),
    }
    t
}

/// Decodes `input`, applies one edit and encodes it again (`None` if the input is not a
/// model or the edit does not apply).
pub fn mutate(input: &[u8], rng: &mut Rng) -> Option<Vec<u8>> {
    let mut m = ModelProto::decode(input).ok()?;
    edit(&mut m, rng)?;
    Some(m.encode_to_vec())
}

fn edit(m: &mut ModelProto, rng: &mut Rng) -> Option<()> {
    let e: Edit = arb(rng)?;
    if let Edit::Opset { how } = e {
        match how % 4 {
            0 => m.opset_import.clear(),
            1 => m.ir_version = dim(rng),
            _ => {
                m.opset_import.first_mut()?.version = [0, 1, 6, 7, 9, 11, 13, 18, 21, 100, -1][rng.random_range(0..11)]
            }
        }
        return Some(());
    }
    if let Edit::Metadata { key } = e {
        let key =
            ["fhec.preprocess", "fhec.compile.input_bits", "fhec.compile.act_bits", "fhec.dataset"][key as usize % 4];
        let value = ["", "bogus", "-1", "4294967296", "99", "unit"][rng.random_range(0..6)];
        m.metadata_props.retain(|p| p.key != key);
        m.metadata_props.push(StringStringEntryProto { key: key.into(), value: value.into() });
        return Some(());
    }
    let g = m.graph.as_mut()?;
    let inits: std::collections::HashSet<String> = g.initializer.iter().map(|t| t.name.clone()).collect();
    match e {
        Edit::InputDim { input, dim: d, how } => {
            let inputs: Vec<usize> = (0..g.input.len()).filter(|&i| !inits.contains(&g.input[i].name)).collect();
            let i = inputs.get(input as usize % inputs.len().max(1))?;
            let Some(type_proto::Value::TensorType(tt)) = g.input[*i].r#type.as_mut()?.value.as_mut() else {
                return None;
            };
            let dims = &mut tt.shape.as_mut()?.dim;
            let k = pick(dims.len(), d as u16)?;
            dims[k].value = match how % 4 {
                0 | 1 => Some(dimension::Value::DimValue(dim(rng))),
                2 => Some(dimension::Value::DimParam("h".into())),
                _ => None,
            };
        }
        Edit::InputRank { how } => {
            let i = g.input.iter().position(|v| !inits.contains(&v.name))?;
            let Some(type_proto::Value::TensorType(tt)) = g.input[i].r#type.as_mut()?.value.as_mut() else {
                return None;
            };
            match how % 4 {
                0 => tt.shape = None,
                1 => {
                    tt.shape.as_mut()?.dim.pop();
                }
                _ => tt.shape.as_mut()?.dim.push(Dimension {
                    value: Some(dimension::Value::DimValue(rng.random_range(1..4))),
                    ..Default::default()
                }),
            }
        }
        Edit::InputType { dtype } => {
            let i = g.input.iter().position(|v| !inits.contains(&v.name))?;
            let Some(type_proto::Value::TensorType(tt)) = g.input[i].r#type.as_mut()?.value.as_mut() else {
                return None;
            };
            tt.elem_type = DTYPES[dtype as usize % DTYPES.len()];
        }
        Edit::Attr { node, name, kind, len } => {
            let n = pick(g.node.len(), node)?;
            let node = &mut g.node[n];
            // Mostly an attribute the node already has (its name and often its type).
            let name = match node.attribute.get(name as usize % node.attribute.len().max(1)) {
                Some(a) if rng.random_bool(0.7) => a.name.clone(),
                _ => ATTRS[name as usize % ATTRS.len()].to_string(),
            };
            let a = attribute(&name, kind, len, rng);
            node.attribute.retain(|x| x.name != name);
            node.attribute.push(a);
        }
        Edit::DropAttr { node } => {
            let n = pick(g.node.len(), node)?;
            let attrs = &mut g.node[n].attribute;
            let i = pick(attrs.len(), node / 7)?;
            attrs.remove(i);
        }
        Edit::InitDims { init, dim: d, how } => {
            let i = pick(g.initializer.len(), init)?;
            let t = &mut g.initializer[i];
            match (how % 3, pick(t.dims.len(), d as u16)) {
                (0, _) => t.dims.push(dim(rng)),
                (1, Some(k)) => {
                    t.dims.remove(k);
                }
                (_, Some(k)) => t.dims[k] = dim(rng),
                _ => t.dims.push(0),
            }
        }
        Edit::InitType { init, dtype } => {
            let i = pick(g.initializer.len(), init)?;
            g.initializer[i].data_type = DTYPES[dtype as usize % DTYPES.len()];
        }
        Edit::InitData { init, how } => {
            let i = pick(g.initializer.len(), init)?;
            let t = &mut g.initializer[i];
            match how % 5 {
                0 => t.raw_data.truncate(t.raw_data.len().saturating_sub(rng.random_range(1..9))),
                1 => t.raw_data.extend_from_slice(&[0; 4]),
                2 => {
                    // Raw bytes as floats, or typed floats as raw bytes.
                    if t.raw_data.is_empty() {
                        t.raw_data = t.float_data.drain(..).flat_map(|f| f.to_le_bytes()).collect();
                    } else {
                        t.float_data = t.raw_data.chunks(4).map(|c| c.len() as f32).collect();
                        t.raw_data.clear();
                    }
                }
                3 => t.raw_data = havoc(&t.raw_data, &[], rng),
                _ => {
                    t.float_data.truncate(t.float_data.len() / 2);
                    t.int64_data.push(dim(rng));
                }
            }
        }
        Edit::InitDrop { init, dup } => {
            let i = pick(g.initializer.len(), init)?;
            if dup {
                let mut t = g.initializer[i].clone();
                t.dims.push(2);
                g.initializer.push(t);
            } else {
                g.initializer.remove(i);
            }
        }
        Edit::Node { node, to, how } => {
            let (i, j) = (pick(g.node.len(), node)?, pick(g.node.len(), to)?);
            match how % 3 {
                0 => {
                    g.node.remove(i);
                }
                1 => {
                    let n = g.node[i].clone();
                    g.node.insert(j, n);
                }
                _ => g.node.swap(i, j),
            }
        }
        Edit::NodeInput { node, slot, how } => {
            let i = pick(g.node.len(), node)?;
            let later = g.node.get(rng.random_range(i..g.node.len())).and_then(|n| n.output.first().cloned());
            let graph_input = g.input.first().map(|v| v.name.clone());
            let own = g.node[i].output.first().cloned();
            let ins = &mut g.node[i].input;
            match how % 6 {
                0 => ins.push(graph_input.unwrap_or_default()),
                1 => {
                    ins.pop();
                }
                h => {
                    let k = pick(ins.len(), slot as u16)?;
                    ins[k] = match h {
                        2 => own.unwrap_or_default(),
                        3 => later.unwrap_or_default(),
                        4 => String::new(),
                        _ => "no_such_value".into(),
                    };
                }
            }
        }
        Edit::OpType { node, op, domain } => {
            let i = pick(g.node.len(), node)?;
            let n = &mut g.node[i];
            if domain % 4 == 0 {
                n.domain = ["com.microsoft", "ai.onnx", "ai.onnx.ml", "x"][domain as usize / 4 % 4].into();
            } else {
                n.op_type = OPS[op as usize % OPS.len()].into();
            }
        }
        Edit::Output { how } => match how % 4 {
            0 => {
                g.output.pop();
            }
            1 => {
                let o = g.output.first()?.clone();
                g.output.push(o);
            }
            2 => g.output.first_mut()?.name = "no_such_value".into(),
            _ => g.output.first_mut()?.name = g.input.first()?.name.clone(),
        },
        Edit::Opset { .. } | Edit::Metadata { .. } => unreachable!("handled above"),
    }
    Some(())
}
