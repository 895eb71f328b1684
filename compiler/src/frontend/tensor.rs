//! Constant tensors seen by the frontend (initializers, `Constant` nodes, folded values).

use ndarray::{ArrayD, IxDyn};
use tract_onnx::pb::TensorProto;

/// Element type of an integer constant (kept so quantized imports know signedness).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntType {
    /// `bool` (0/1).
    Bool,
    /// `uint8`.
    U8,
    /// `int8`.
    I8,
    /// `uint16`.
    U16,
    /// `int16`.
    I16,
    /// `int32`.
    I32,
    /// `uint32`.
    U32,
    /// `int64`.
    I64,
    /// `uint64` (values above `i64::MAX` are rejected).
    U64,
}

impl IntType {
    /// The ONNX `TensorProto.DataType` code.
    pub fn onnx_code(self) -> i32 {
        match self {
            IntType::U8 => 2,
            IntType::I8 => 3,
            IntType::U16 => 4,
            IntType::I16 => 5,
            IntType::I32 => 6,
            IntType::I64 => 7,
            IntType::Bool => 9,
            IntType::U32 => 12,
            IntType::U64 => 13,
        }
    }

    fn from_onnx(code: i32) -> Option<IntType> {
        Some(match code {
            2 => IntType::U8,
            3 => IntType::I8,
            4 => IntType::U16,
            5 => IntType::I16,
            6 => IntType::I32,
            7 => IntType::I64,
            9 => IntType::Bool,
            12 => IntType::U32,
            13 => IntType::U64,
            _ => return None,
        })
    }

    fn width(self) -> usize {
        match self {
            IntType::Bool | IntType::U8 | IntType::I8 => 1,
            IntType::U16 | IntType::I16 => 2,
            IntType::I32 | IntType::U32 => 4,
            IntType::I64 | IntType::U64 => 8,
        }
    }

    fn read_le(self, b: &[u8]) -> i64 {
        match self {
            IntType::Bool => (b[0] != 0) as i64,
            IntType::U8 => b[0] as i64,
            IntType::I8 => b[0] as i8 as i64,
            IntType::U16 => u16::from_le_bytes([b[0], b[1]]) as i64,
            IntType::I16 => i16::from_le_bytes([b[0], b[1]]) as i64,
            IntType::I32 => i32::from_le_bytes(b[..4].try_into().unwrap()) as i64,
            IntType::U32 => u32::from_le_bytes(b[..4].try_into().unwrap()) as i64,
            IntType::I64 | IntType::U64 => i64::from_le_bytes(b[..8].try_into().unwrap()),
        }
    }
}

/// A constant tensor: float or integer.
#[derive(Clone, Debug, PartialEq)]
pub enum CTensor {
    /// `float`, `double` and `float16` constants, as f32.
    F32(ArrayD<f32>),
    /// Integer and boolean constants, widened to i64, with their ONNX type.
    Int(ArrayD<i64>, IntType),
}

impl CTensor {
    /// The shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            CTensor::F32(a) => a.shape(),
            CTensor::Int(a, _) => a.shape(),
        }
    }

    /// As f32 values (integers converted).
    pub fn to_f32(&self) -> ArrayD<f32> {
        match self {
            CTensor::F32(a) => a.clone(),
            CTensor::Int(a, _) => a.mapv(|v| v as f32),
        }
    }

    /// As integers, if the tensor is integral.
    pub fn as_int(&self) -> Option<&ArrayD<i64>> {
        match self {
            CTensor::Int(a, _) => Some(a),
            CTensor::F32(_) => None,
        }
    }

    /// Human description, e.g. `f32[3, 3]`.
    pub fn describe(&self) -> String {
        match self {
            CTensor::F32(a) => format!("f32{:?}", a.shape()),
            CTensor::Int(a, t) => format!("{t:?}{:?}", a.shape()).to_lowercase(),
        }
    }
}

/// Why a `TensorProto` cannot be decoded (each message names the tensor).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Data in an external file.
    #[error("tensor '{0}' keeps its data in an external file, which fhec does not read")]
    External(String),
    /// A segmented tensor.
    #[error("tensor '{0}' is segmented, which fhec does not support")]
    Segmented(String),
    /// A negative dimension.
    #[error("tensor '{0}' has a negative dimension {1}")]
    NegativeDimension(String, i64),
    /// The element count overflows.
    #[error("tensor too large")]
    Overflow,
    /// More elements than fhec accepts.
    #[error("tensor '{0}' has {1} elements, more than fhec accepts")]
    TooLarge(String, usize),
    /// The data does not match the shape.
    #[error("tensor '{name}' of shape {shape:?} holds {got} values instead of {expected}")]
    Count {
        /// The tensor.
        name: String,
        /// Its shape.
        shape: Vec<usize>,
        /// Values held.
        got: usize,
        /// Values its shape needs.
        expected: usize,
    },
    /// An unsupported ONNX data type.
    #[error("tensor '{0}' has ONNX data type {1}, which fhec does not support")]
    DataType(String, i32),
    /// The array could not be built (ndarray's message).
    #[error("{0}")]
    Shape(String),
}

/// Decodes an ONNX `TensorProto`. Errors name what is unsupported; nothing panics.
pub fn decode(t: &TensorProto) -> Result<CTensor, DecodeError> {
    if t.data_location == Some(1) {
        return Err(DecodeError::External(t.name.clone()));
    }
    if t.segment.is_some() {
        return Err(DecodeError::Segmented(t.name.clone()));
    }
    let mut shape = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        if d < 0 {
            return Err(DecodeError::NegativeDimension(t.name.clone(), d));
        }
        shape.push(d as usize);
    }
    let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or(DecodeError::Overflow)?;
    if n > 1 << 30 {
        return Err(DecodeError::TooLarge(t.name.clone(), n));
    }
    let count = |got: usize| -> Result<(), DecodeError> {
        if got != n {
            Err(DecodeError::Count { name: t.name.clone(), shape: shape.clone(), got, expected: n })
        } else {
            Ok(())
        }
    };
    let raw = !t.raw_data.is_empty();
    let f32s = |v: Vec<f32>| ArrayD::from_shape_vec(IxDyn(&shape), v).map_err(|e| DecodeError::Shape(e.to_string()));
    match t.data_type {
        1 => {
            let v: Vec<f32> = if raw {
                count(t.raw_data.len() / 4)?;
                t.raw_data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
            } else {
                t.float_data.clone()
            };
            count(v.len())?;
            Ok(CTensor::F32(f32s(v)?))
        }
        11 => {
            let v: Vec<f32> = if raw {
                t.raw_data.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32).collect()
            } else {
                t.double_data.iter().map(|&d| d as f32).collect()
            };
            count(v.len())?;
            Ok(CTensor::F32(f32s(v)?))
        }
        10 => {
            let bits: Vec<u16> = if raw {
                t.raw_data.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect()
            } else {
                t.int32_data.iter().map(|&x| x as u16).collect()
            };
            count(bits.len())?;
            Ok(CTensor::F32(f32s(bits.into_iter().map(f16_to_f32).collect())?))
        }
        code => {
            let Some(it) = IntType::from_onnx(code) else {
                return Err(DecodeError::DataType(t.name.clone(), code));
            };
            let v: Vec<i64> = if raw {
                count(t.raw_data.len() / it.width())?;
                t.raw_data.chunks_exact(it.width()).map(|c| it.read_le(c)).collect()
            } else if matches!(it, IntType::I64) {
                t.int64_data.clone()
            } else if matches!(it, IntType::U64) {
                t.uint64_data.iter().map(|&x| x as i64).collect()
            } else if matches!(it, IntType::U32) {
                t.uint64_data.iter().map(|&x| x as i64).collect()
            } else {
                t.int32_data.iter().map(|&x| x as i64).collect()
            };
            count(v.len())?;
            Ok(CTensor::Int(
                ArrayD::from_shape_vec(IxDyn(&shape), v).map_err(|e| DecodeError::Shape(e.to_string()))?,
                it,
            ))
        }
    }
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) & 1) as u32;
    let exp = ((h >> 10) & 0x1f) as i32;
    let frac = (h & 0x3ff) as u32;
    let v = match exp {
        0 => (frac as f32) * 2f32.powi(-24),
        31 => {
            if frac == 0 {
                f32::INFINITY
            } else {
                f32::NAN
            }
        }
        e => (1.0 + frac as f32 / 1024.0) * 2f32.powi(e - 15),
    };
    if sign == 1 { -v } else { v }
}
