//! The gRPC form of V2 tensors. A `ModelInferRequest`'s inputs, as typed `contents` or as `raw_input_contents`,
//! decode into the same typed tensors as a JSON body, with the same checks and messages; outputs go back as
//! `raw_output_contents` (what Triton's clients read), or as typed `contents` when the request asks
//! (`parameters.binary_data_output = false`).

use bytes::Bytes;

use super::json::{input_shape, BinaryOutputs, DecodeError, InferRequest};
use super::{binary, DataType, Tensor, TensorData};
use crate::proto::infer_parameter::ParameterChoice;
use crate::proto::model_infer_request::InferInputTensor;
use crate::proto::model_infer_response::InferOutputTensor;
use crate::proto::{InferTensorContents, ModelInferRequest, ModelInferResponse};

/// Decodes a request's tensors, each within `max_elements`.
pub fn decode_request(
    request: ModelInferRequest,
    max_elements: usize,
) -> Result<InferRequest, DecodeError> {
    let ModelInferRequest {
        id,
        inputs,
        outputs,
        raw_input_contents,
        ..
    } = request;
    let raw = !raw_input_contents.is_empty();
    if raw && raw_input_contents.len() != inputs.len() {
        return Err(DecodeError::Json(format!(
            "raw_input_contents holds {} entries for {} inputs (one per input, in order)",
            raw_input_contents.len(),
            inputs.len()
        )));
    }
    let mut raw_contents = raw_input_contents.into_iter();
    let inputs = inputs
        .into_iter()
        .map(|input| decode_input(input, raw_contents.next(), max_elements))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(InferRequest {
        id: Some(id).filter(|id| !id.is_empty()),
        inputs,
        outputs: (!outputs.is_empty()).then(|| outputs.into_iter().map(|o| o.name).collect()),
        binary_outputs: BinaryOutputs::default(),
    })
}

/// Whether the request asks for typed `contents` rather than raw output bytes.
pub fn wants_typed_outputs(request: &ModelInferRequest) -> bool {
    matches!(
        request
            .parameters
            .get("binary_data_output")
            .and_then(|p| p.parameter_choice.as_ref()),
        Some(ParameterChoice::BoolParam(false))
    )
}

fn decode_input(
    input: InferInputTensor,
    raw: Option<Bytes>,
    max_elements: usize,
) -> Result<Tensor, DecodeError> {
    let InferInputTensor {
        name,
        datatype,
        shape,
        contents,
        ..
    } = input;
    let Some(dtype) = DataType::parse(&datatype) else {
        return Err(DecodeError::UnknownDatatype {
            input: name,
            given: datatype,
        });
    };
    let (shape, expected) = input_shape(&name, shape, max_elements)?;
    let data = match (raw, contents) {
        (Some(_), Some(_)) => Err(Refused::Message(
            "both contents and raw_input_contents are given; send one or the other".into(),
        )),
        (Some(bytes), None) => binary::decode(dtype, &bytes, expected).map_err(Refused::Message),
        (None, Some(contents)) => typed(dtype, contents, expected),
        (None, None) => return Err(DecodeError::MissingData { input: name }),
    };
    match data {
        Ok(data) => Ok(Tensor { name, shape, data }),
        Err(Refused::Count { given }) => Err(DecodeError::ElementCount {
            input: name,
            shape,
            expected,
            given,
        }),
        Err(Refused::Message(message)) => Err(DecodeError::Data {
            input: name,
            message,
        }),
    }
}

/// Why an input's elements were refused.
enum Refused {
    /// The datatype's field holds this many elements, not the shape's count.
    Count {
        given: usize,
    },
    Message(String),
}

/// An input's elements from the `contents` field of its datatype (INT8 and INT16 in `int_contents`, UINT8 and
/// UINT16 in `uint_contents`, each element checked for range).
fn typed(
    dtype: DataType,
    contents: InferTensorContents,
    expected: usize,
) -> Result<TensorData, Refused> {
    fn exact<T>(values: Vec<T>, expected: usize) -> Result<Vec<T>, Refused> {
        match values.len() {
            n if n == expected => Ok(values),
            given => Err(Refused::Count { given }),
        }
    }
    fn narrow<W: Copy + std::fmt::Display, T: TryFrom<W>>(
        values: Vec<W>,
        expected: usize,
        dtype: DataType,
    ) -> Result<Vec<T>, Refused> {
        exact(values, expected)?
            .into_iter()
            .map(|v| {
                T::try_from(v).map_err(|_| {
                    Refused::Message(format!("{v} is out of range for {}", dtype.as_str()))
                })
            })
            .collect()
    }
    let c = contents;
    Ok(match dtype {
        DataType::Bool => TensorData::Bool(exact(c.bool_contents, expected)?),
        DataType::Uint8 => TensorData::Uint8(narrow(c.uint_contents, expected, dtype)?),
        DataType::Uint16 => TensorData::Uint16(narrow(c.uint_contents, expected, dtype)?),
        DataType::Uint32 => TensorData::Uint32(exact(c.uint_contents, expected)?),
        DataType::Uint64 => TensorData::Uint64(exact(c.uint64_contents, expected)?),
        DataType::Int8 => TensorData::Int8(narrow(c.int_contents, expected, dtype)?),
        DataType::Int16 => TensorData::Int16(narrow(c.int_contents, expected, dtype)?),
        DataType::Int32 => TensorData::Int32(exact(c.int_contents, expected)?),
        DataType::Int64 => TensorData::Int64(exact(c.int64_contents, expected)?),
        DataType::Fp16 => {
            return Err(Refused::Message(
                "FP16 has no typed contents field; send it in raw_input_contents".into(),
            ))
        }
        DataType::Fp32 => TensorData::Fp32(exact(c.fp32_contents, expected)?),
        DataType::Fp64 => TensorData::Fp64(exact(c.fp64_contents, expected)?),
        DataType::Bytes => TensorData::Bytes(
            exact(c.bytes_contents, expected)?
                .into_iter()
                .map(|b| {
                    String::from_utf8(b.into()).map_err(|_| {
                        Refused::Message("a BYTES element is not UTF-8 (ONNX strings are)".into())
                    })
                })
                .collect::<Result<_, _>>()?,
        ),
    })
}

/// The response to a request for `model` at `version`: each output's name, datatype and shape, its elements as raw
/// bytes, or as typed contents when `typed` (except when an output is FP16, which has no typed field: then every
/// output is raw, as the protocol allows no mix).
pub fn encode_response(
    model: &str,
    version: u64,
    id: Option<String>,
    outputs: Vec<Tensor>,
    typed: bool,
) -> ModelInferResponse {
    let typed = typed && !outputs.iter().any(|t| t.datatype() == DataType::Fp16);
    let mut raw_output_contents = Vec::with_capacity(if typed { 0 } else { outputs.len() });
    let outputs = outputs
        .into_iter()
        .map(|tensor| {
            let Tensor { name, shape, data } = tensor;
            let mut output = InferOutputTensor {
                name,
                datatype: data.datatype().as_str().to_owned(),
                shape: shape
                    .iter()
                    .map(|&d| i64::try_from(d).unwrap_or(i64::MAX))
                    .collect(),
                ..Default::default()
            };
            if typed {
                output.contents = Some(contents(data));
            } else {
                let mut bytes = Vec::with_capacity(data.bytes());
                binary::encode(&data, &mut bytes);
                raw_output_contents.push(Bytes::from(bytes));
            }
            output
        })
        .collect();
    ModelInferResponse {
        model_name: model.to_owned(),
        model_version: version.to_string(),
        id: id.unwrap_or_default(),
        outputs,
        raw_output_contents,
        ..Default::default()
    }
}

/// A tensor's elements in the typed field of its datatype (never called for FP16).
fn contents(data: TensorData) -> InferTensorContents {
    let mut c = InferTensorContents::default();
    match data {
        TensorData::Bool(v) => c.bool_contents = v,
        TensorData::Uint8(v) => c.uint_contents = v.into_iter().map(u32::from).collect(),
        TensorData::Uint16(v) => c.uint_contents = v.into_iter().map(u32::from).collect(),
        TensorData::Uint32(v) => c.uint_contents = v,
        TensorData::Uint64(v) => c.uint64_contents = v,
        TensorData::Int8(v) => c.int_contents = v.into_iter().map(i32::from).collect(),
        TensorData::Int16(v) => c.int_contents = v.into_iter().map(i32::from).collect(),
        TensorData::Int32(v) => c.int_contents = v,
        TensorData::Int64(v) => c.int64_contents = v,
        TensorData::Fp16(v) => c.fp32_contents = v.into_iter().map(f32::from).collect(),
        TensorData::Fp32(v) => c.fp32_contents = v,
        TensorData::Fp64(v) => c.fp64_contents = v,
        TensorData::Bytes(v) => c.bytes_contents = v.into_iter().map(Bytes::from).collect(),
    }
    c
}
