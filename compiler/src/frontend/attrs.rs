//! Reading node attributes with defaults and precise errors.

use tract_onnx::pb::{AttributeProto, NodeProto};

use super::ImportError;
use super::tensor::{self, CTensor};

/// One ONNX node being imported, with its resolved name and the model's opset.
pub struct NodeCtx<'a> {
    /// The protobuf node.
    pub node: &'a NodeProto,
    /// The node's name, or `{op_type}_{index}` when the export left it empty.
    pub name: String,
    /// Default-domain opset version of the model.
    pub opset: i64,
}

impl NodeCtx<'_> {
    /// An error about this node.
    pub fn err(&self, message: impl Into<String>) -> ImportError {
        ImportError::Node { node: self.name.clone(), op_type: self.node.op_type.clone(), message: message.into() }
    }

    fn attr(&self, name: &str) -> Option<&AttributeProto> {
        self.node.attribute.iter().find(|a| a.name == name)
    }

    /// Fails if an attribute has a type other than `ty` (ONNX `AttributeType` code).
    fn typed(&self, name: &str, ty: i32, what: &str) -> Result<Option<&AttributeProto>, ImportError> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) if a.r#type == ty || a.r#type == 0 => Ok(Some(a)),
            Some(a) => Err(self.err(format!("attribute '{name}' has type code {}, expected {what}", a.r#type))),
        }
    }

    /// An integer attribute.
    pub fn int(&self, name: &str) -> Result<Option<i64>, ImportError> {
        Ok(self.typed(name, 2, "an integer")?.map(|a| a.i))
    }

    /// An integer attribute with a default.
    pub fn int_or(&self, name: &str, default: i64) -> Result<i64, ImportError> {
        Ok(self.int(name)?.unwrap_or(default))
    }

    /// A float attribute with a default.
    pub fn float_or(&self, name: &str, default: f32) -> Result<f32, ImportError> {
        Ok(self.typed(name, 1, "a float")?.map_or(default, |a| a.f))
    }

    /// A float attribute.
    pub fn float(&self, name: &str) -> Result<Option<f32>, ImportError> {
        Ok(self.typed(name, 1, "a float")?.map(|a| a.f))
    }

    /// An integer-list attribute.
    pub fn ints(&self, name: &str) -> Result<Option<Vec<i64>>, ImportError> {
        Ok(self.typed(name, 7, "a list of integers")?.map(|a| a.ints.clone()))
    }

    /// A float-list attribute.
    pub fn floats(&self, name: &str) -> Result<Option<Vec<f32>>, ImportError> {
        Ok(self.typed(name, 6, "a list of floats")?.map(|a| a.floats.clone()))
    }

    /// A string attribute.
    pub fn string(&self, name: &str) -> Result<Option<String>, ImportError> {
        self.typed(name, 3, "a string")?
            .map(|a| String::from_utf8(a.s.clone()).map_err(|_| self.err(format!("attribute '{name}' is not UTF-8"))))
            .transpose()
    }

    /// A tensor attribute.
    pub fn tensor(&self, name: &str) -> Result<Option<CTensor>, ImportError> {
        match self.typed(name, 4, "a tensor")? {
            None => Ok(None),
            Some(a) => match &a.t {
                None => Err(self.err(format!("attribute '{name}' holds no tensor"))),
                Some(t) => tensor::decode(t).map(Some).map_err(|e| self.err(format!("attribute '{name}': {e}"))),
            },
        }
    }

    /// Whether the node has an attribute.
    pub fn has(&self, name: &str) -> bool {
        self.attr(name).is_some()
    }

    /// Fails if an attribute is present with a value other than the one supported.
    pub fn expect_int(&self, name: &str, supported: i64, why: &str) -> Result<(), ImportError> {
        match self.int(name)? {
            Some(v) if v != supported => {
                Err(self.err(format!("attribute '{name}' = {v} is not supported (only {supported}: {why})")))
            }
            _ => Ok(()),
        }
    }

    /// Whether output `i` of the node is used (named).
    pub fn output_used(&self, i: usize) -> bool {
        self.node.output.get(i).is_some_and(|s| !s.is_empty())
    }
}
