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
        (None, None) => Err(Refused::Message(
            "no contents and no raw_input_contents entry given".into(),
        )),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn input(
        datatype: &str,
        shape: Vec<i64>,
        contents: Option<InferTensorContents>,
    ) -> InferInputTensor {
        InferInputTensor {
            name: "x".into(),
            datatype: datatype.into(),
            shape,
            contents,
            ..Default::default()
        }
    }

    fn decode(inputs: Vec<InferInputTensor>, raw: Vec<&[u8]>) -> Result<InferRequest, String> {
        let request = ModelInferRequest {
            inputs,
            raw_input_contents: raw.into_iter().map(Bytes::copy_from_slice).collect(),
            ..Default::default()
        };
        decode_request(request, 1000).map_err(|e| e.to_string())
    }

    #[test]
    fn typed_and_raw_contents_decode_alike() {
        let typed = InferTensorContents {
            int_contents: vec![1, -2, 3],
            ..Default::default()
        };
        let a = decode(vec![input("INT16", vec![1, 3], Some(typed))], vec![]).unwrap();
        let raw: Vec<u8> = [1i16, -2, 3].iter().flat_map(|v| v.to_le_bytes()).collect();
        let b = decode(vec![input("INT16", vec![1, 3], None)], vec![&raw]).unwrap();
        assert_eq!(a.inputs, b.inputs);
        assert_eq!(a.inputs[0].data, TensorData::Int16(vec![1, -2, 3]));
    }

    #[test]
    fn bad_contents_are_refused_with_the_input_named() {
        let ints = |v: Vec<i32>| {
            Some(InferTensorContents {
                int_contents: v,
                ..Default::default()
            })
        };
        let cases = [
            (
                decode(vec![input("INT8", vec![1], ints(vec![300]))], vec![]),
                "input 'x': 300 is out of range for INT8",
            ),
            (
                decode(vec![input("INT32", vec![1, 3], ints(vec![1]))], vec![]),
                "needs 3 elements but 'data' holds 1",
            ),
            (
                decode(vec![input("FP16", vec![1], ints(vec![1]))], vec![]),
                "send it in raw_input_contents",
            ),
            (
                decode(
                    vec![input("INT32", vec![1], ints(vec![1]))],
                    vec![&[0, 0, 0, 0]],
                ),
                "both contents and raw_input_contents",
            ),
            (
                decode(vec![input("INT32", vec![1], None)], vec![]),
                "no contents and no raw_input_contents",
            ),
            (
                decode(vec![input("INT32", vec![2], None)], vec![&[0, 0, 0, 0]]),
                "binary data holds 4 bytes",
            ),
            (
                decode(
                    vec![input("INT32", vec![1], None), input("INT32", vec![1], None)],
                    vec![&[0, 0, 0, 0]],
                ),
                "raw_input_contents holds 1 entries for 2 inputs",
            ),
            (
                decode(vec![input("INT32", vec![-1], None)], vec![]),
                "negative dimension",
            ),
            (
                decode(vec![input("INT32", vec![2000], None)], vec![]),
                "limits.max_tensor_elements",
            ),
            (
                decode(vec![input("NOPE", vec![1], None)], vec![]),
                "unknown datatype 'NOPE'",
            ),
        ];
        for (result, expected) in cases {
            let message = result.unwrap_err();
            assert!(message.contains(expected), "{message:?} lacks {expected:?}");
        }
    }

    #[test]
    fn outputs_are_raw_unless_typed_ones_are_asked_for_and_possible() {
        let outputs = || {
            vec![Tensor {
                name: "y".into(),
                shape: vec![2],
                data: TensorData::Uint8(vec![7, 9]),
            }]
        };
        let raw = encode_response("m", 3, Some("id".into()), outputs(), false);
        assert_eq!(raw.raw_output_contents, vec![Bytes::from_static(&[7, 9])]);
        assert_eq!((raw.model_version.as_str(), raw.id.as_str()), ("3", "id"));
        let typed = encode_response("m", 3, None, outputs(), true);
        assert!(typed.raw_output_contents.is_empty());
        assert_eq!(
            typed.outputs[0].contents.as_ref().unwrap().uint_contents,
            vec![7, 9]
        );
        let half = vec![Tensor {
            name: "h".into(),
            shape: vec![1],
            data: TensorData::Fp16(vec![half::f16::from_f32(1.5)]),
        }];
        // FP16 has no typed field: then every output is raw.
        assert_eq!(
            encode_response("m", 3, None, half, true)
                .raw_output_contents
                .len(),
            1
        );
    }
}
