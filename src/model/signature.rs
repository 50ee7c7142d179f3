//! A model version's signature: its inputs and outputs as ONNX declares them, in V2 terms.

use ort::value::{TensorElementType, ValueType};
use serde::Serialize;

use crate::tensor::DataType;

/// Inputs and outputs of one model version, in the model's order.
#[derive(Debug, Clone, PartialEq)]
pub struct Signature {
    pub inputs: Vec<IoSpec>,
    pub outputs: Vec<IoSpec>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IoSpec {
    pub name: String,
    pub kind: IoKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum IoKind {
    /// A tensor; dynamic dimensions are -1.
    Tensor { datatype: DataType, shape: Vec<i64> },
    /// Anything V2 cannot carry: sequences, maps, optionals, or tensor types without a V2 datatype (e.g. BF16).
    /// `onnx_type` is ONNX Runtime's description, e.g. `Sequence<Map<Int64, Float32>>`.
    Other { onnx_type: String },
}

/// Metadata view of one input or output, as `GET /v2/models/{m}` lists it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TensorMetadata<'a> {
    pub name: &'a str,
    /// The V2 datatype; a non-tensor value (a sequence or map) is described by its ONNX type.
    pub datatype: String,
    /// `-1` for a dynamic dimension.
    pub shape: &'a [i64],
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<serde_json::Value>,
}

impl IoSpec {
    pub fn from_onnx(name: &str, ty: &ValueType) -> IoSpec {
        let kind = match ty {
            ValueType::Tensor { ty, shape, .. } => match datatype_of(*ty) {
                Some(datatype) => IoKind::Tensor {
                    datatype,
                    shape: shape.to_vec(),
                },
                None => IoKind::Other {
                    onnx_type: ty.to_string(),
                },
            },
            other => IoKind::Other {
                onnx_type: other.to_string(),
            },
        };
        IoSpec {
            name: name.to_owned(),
            kind,
        }
    }

    /// The tensor datatype and shape, or `None` for non-tensor values.
    pub fn tensor(&self) -> Option<(DataType, &[i64])> {
        match &self.kind {
            IoKind::Tensor { datatype, shape } => Some((*datatype, shape)),
            IoKind::Other { .. } => None,
        }
    }

    pub fn metadata(&self) -> TensorMetadata<'_> {
        match &self.kind {
            IoKind::Tensor { datatype, shape } => TensorMetadata {
                name: &self.name,
                datatype: datatype.as_str().to_owned(),
                shape,
                parameters: None,
            },
            IoKind::Other { onnx_type } => TensorMetadata {
                name: &self.name,
                datatype: onnx_type.clone(),
                shape: &[],
                parameters: Some(serde_json::json!({
                    "tensor": false,
                    "note": "not a tensor: it cannot be returned over the V2 protocol",
                })),
            },
        }
    }
}

/// The V2 datatype of an ONNX tensor element type, if V2 has one.
pub fn datatype_of(ty: TensorElementType) -> Option<DataType> {
    Some(match ty {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::Uint8,
        TensorElementType::Uint16 => DataType::Uint16,
        TensorElementType::Uint32 => DataType::Uint32,
        TensorElementType::Uint64 => DataType::Uint64,
        TensorElementType::Int8 => DataType::Int8,
        TensorElementType::Int16 => DataType::Int16,
        TensorElementType::Int32 => DataType::Int32,
        TensorElementType::Int64 => DataType::Int64,
        TensorElementType::Float16 => DataType::Fp16,
        TensorElementType::Float32 => DataType::Fp32,
        TensorElementType::Float64 => DataType::Fp64,
        TensorElementType::String => DataType::Bytes,
        _ => return None,
    })
}
