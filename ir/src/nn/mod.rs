//! The NN IR: float tensor ops over a petgraph DAG with static shapes.
//!
//! A [`Graph`] owns [`Node`]s; each node has one [`Op`], a name (its provenance, e.g. the
//! ONNX node name, or `{name}.bias` for generated nodes) and the static shape of its
//! single output. Edges run from producer to consumer and carry the consumer's input slot.
//! Weights live inside the ops (convolution kernels, dense matrices, constants of
//! element-wise ops), never as separate nodes.

mod graph;
pub mod interp;
mod op;
pub mod print;
pub mod verify;

pub use graph::{Graph, Node, NodeId};
pub use op::{Conv, Grid, Op, Pool, ShapeError, broadcast_shapes};

/// A static tensor shape (row-major, NCHW for images).
pub type Shape = Vec<usize>;

/// A float tensor.
pub type Tensor = ndarray::ArrayD<f32>;
