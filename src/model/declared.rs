//! A model's signature read from its `.onnx` file without creating a session: the graph's inputs (less its
//! initializers, as ONNX Runtime reports them) and outputs, decoded with `prost` from the few `onnx.proto` messages
//! that hold them. Everything else in the file (nodes, weights) is skipped by the decoder.
//!
//! Its result is built from `ort`'s own [`ValueType`], so a signature read here and one read from a session are the
//! same value (tested on every model of the repository and the fixtures).

use std::path::Path;

use ort::value::{Shape, SymbolicDimensions, TensorElementType, ValueType};

use super::signature::{IoSpec, Signature};

// The subset of onnx.proto (field numbers as published) that declares a graph's interface.

#[derive(Clone, PartialEq, prost::Message)]
struct ModelProto {
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct GraphProto {
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<NamedProto>,
    #[prost(message, repeated, tag = "15")]
    sparse_initializer: Vec<SparseTensorProto>,
    #[prost(message, repeated, tag = "11")]
    input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    output: Vec<ValueInfoProto>,
}

/// A TensorProto, of which only the name is needed.
#[derive(Clone, PartialEq, prost::Message)]
struct NamedProto {
    #[prost(string, tag = "8")]
    name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SparseTensorProto {
    #[prost(message, optional, tag = "1")]
    values: Option<NamedProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ValueInfoProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    r#type: Option<TypeProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TypeProto {
    #[prost(message, optional, tag = "1")]
    tensor_type: Option<TensorTypeProto>,
    #[prost(message, optional, boxed, tag = "4")]
    sequence_type: Option<Box<ElementTypeProto>>,
    #[prost(message, optional, boxed, tag = "5")]
    map_type: Option<Box<MapTypeProto>>,
    #[prost(message, optional, boxed, tag = "9")]
    optional_type: Option<Box<ElementTypeProto>>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TensorTypeProto {
    #[prost(int32, tag = "1")]
    elem_type: i32,
    #[prost(message, optional, tag = "2")]
    shape: Option<TensorShapeProto>,
}

/// `TypeProto.Sequence` and `TypeProto.Optional`: one element type.
#[derive(Clone, PartialEq, prost::Message)]
struct ElementTypeProto {
    #[prost(message, optional, boxed, tag = "1")]
    elem_type: Option<Box<TypeProto>>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct MapTypeProto {
    #[prost(int32, tag = "1")]
    key_type: i32,
    #[prost(message, optional, boxed, tag = "2")]
    value_type: Option<Box<TypeProto>>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TensorShapeProto {
    #[prost(message, repeated, tag = "1")]
    dim: Vec<Dimension>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Dimension {
    #[prost(int64, optional, tag = "1")]
    dim_value: Option<i64>,
    #[prost(string, optional, tag = "2")]
    dim_param: Option<String>,
}

/// Reads the signature `path` declares.
pub fn read(path: &Path) -> Result<Signature, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// The signature the ONNX model in `bytes` declares.
pub fn parse(bytes: &[u8]) -> Result<Signature, String> {
    let model = <ModelProto as prost::Message>::decode(bytes)
        .map_err(|e| format!("not an ONNX model: {e}"))?;
    let graph = model.graph.ok_or("not an ONNX model: no graph")?;
    let initializers: std::collections::HashSet<&str> = graph
        .initializer
        .iter()
        .map(|t| t.name.as_str())
        .chain(
            graph
                .sparse_initializer
                .iter()
                .filter_map(|s| s.values.as_ref().map(|v| v.name.as_str())),
        )
        .collect();
    let spec = |info: &ValueInfoProto| -> Result<IoSpec, String> {
        let ty = info
            .r#type
            .as_ref()
            .ok_or_else(|| format!("'{}' has no type", info.name))
            .and_then(value_type)?;
        Ok(IoSpec::from_onnx(&info.name, &ty))
    };
    Ok(Signature {
        inputs: graph
            .input
            .iter()
            .filter(|i| !initializers.contains(i.name.as_str()))
            .map(spec)
            .collect::<Result<_, _>>()?,
        outputs: graph.output.iter().map(spec).collect::<Result<_, _>>()?,
    })
}

fn value_type(ty: &TypeProto) -> Result<ValueType, String> {
    if let Some(tensor) = &ty.tensor_type {
        let dims = tensor.shape.as_ref().map_or(&[][..], |s| &s.dim[..]);
        return Ok(ValueType::Tensor {
            ty: element(tensor.elem_type)?,
            shape: Shape::new(dims.iter().map(|d| d.dim_value.unwrap_or(-1))),
            dimension_symbols: SymbolicDimensions::new(
                dims.iter().map(|d| d.dim_param.clone().unwrap_or_default()),
            ),
        });
    }
    let inner = |e: &Option<Box<TypeProto>>| {
        e.as_deref()
            .ok_or_else(|| "an element type is missing".to_owned())
            .and_then(value_type)
            .map(Box::new)
    };
    if let Some(sequence) = &ty.sequence_type {
        return Ok(ValueType::Sequence(inner(&sequence.elem_type)?));
    }
    if let Some(optional) = &ty.optional_type {
        return Ok(ValueType::Optional(inner(&optional.elem_type)?));
    }
    if let Some(map) = &ty.map_type {
        let value = match inner(&map.value_type)?.as_ref() {
            ValueType::Tensor { ty, .. } => *ty,
            other => return Err(format!("a map of {other} is not supported")),
        };
        return Ok(ValueType::Map {
            key: element(map.key_type)?,
            value,
        });
    }
    Err("a type that is neither tensor, sequence, map nor optional".into())
}

/// `TensorProto.DataType` codes as published in onnx.proto.
fn element(code: i32) -> Result<TensorElementType, String> {
    use TensorElementType as T;
    Ok(match code {
        1 => T::Float32,
        2 => T::Uint8,
        3 => T::Int8,
        4 => T::Uint16,
        5 => T::Int16,
        6 => T::Int32,
        7 => T::Int64,
        8 => T::String,
        9 => T::Bool,
        10 => T::Float16,
        11 => T::Float64,
        12 => T::Uint32,
        13 => T::Uint64,
        14 => T::Complex64,
        15 => T::Complex128,
        16 => T::Bfloat16,
        17 => T::Float8E4M3FN,
        18 => T::Float8E4M3FNUZ,
        19 => T::Float8E5M2,
        20 => T::Float8E5M2FNUZ,
        21 => T::Uint4,
        22 => T::Int4,
        23 => T::Float4E2M1,
        0 => T::Undefined,
        other => return Err(format!("unknown element type {other}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_not_a_model() {
        assert!(parse(b"not a model")
            .unwrap_err()
            .contains("not an ONNX model"));
        assert!(parse(&[]).unwrap_err().contains("no graph"));
    }
}
