//! Checks a decoded request against a model version's [`Signature`] before any inference.
//!
//! Owns [`ValidationError`]: every message names the input or output, what the model expects and what was sent.
//! Knows nothing about ONNX Runtime or HTTP.

use std::collections::HashSet;

use crate::model::{IoKind, Signature};
use crate::tensor::json::InferRequest;
use crate::tensor::DataType;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ValidationError {
    #[error("input '{input}' is not an input of this model; it expects: {expected}")]
    UnknownInput { input: String, expected: String },
    #[error("input '{input}' is given more than once")]
    DuplicateInput { input: String },
    #[error("input '{input}' is missing: the model expects {datatype} with shape {shape:?}")]
    MissingInput {
        input: String,
        datatype: String,
        shape: Vec<i64>,
    },
    #[error("input '{input}': the model expects datatype {expected}, the request has {given}")]
    Datatype {
        input: String,
        expected: DataType,
        given: DataType,
    },
    #[error("input '{input}': the model expects shape {expected:?} (rank {}), the request has shape {given:?} (rank {})", expected.len(), given.len())]
    Rank {
        input: String,
        expected: Vec<i64>,
        given: Vec<usize>,
    },
    #[error("input '{input}': dimension {index} must be {want} (model shape {expected:?}), the request has shape {given:?}")]
    Dimension {
        input: String,
        index: usize,
        want: i64,
        expected: Vec<i64>,
        given: Vec<usize>,
    },
    #[error("input '{input}' is a non-tensor value ({onnx_type}) that V2 requests cannot carry")]
    NonTensorInput { input: String, onnx_type: String },
    #[error("output '{output}' is not an output of this model; it has: {available}")]
    UnknownOutput { output: String, available: String },
    #[error("output '{output}' is requested more than once")]
    DuplicateOutput { output: String },
    #[error("output '{output}' is a {onnx_type}, not a tensor, so it cannot be returned over V2; request one of: {tensors}")]
    NonTensorOutput {
        output: String,
        onnx_type: String,
        tensors: String,
    },
    #[error("this model has no tensor outputs that V2 can return")]
    NoTensorOutputs,
}

/// Validates `request` against `signature`; returns the output names to produce, in response order.
pub fn validate(
    signature: &Signature,
    request: &InferRequest,
) -> Result<Vec<String>, ValidationError> {
    check_inputs(signature, request)?;
    select_outputs(signature, request.outputs.as_deref())
}

fn check_inputs(signature: &Signature, request: &InferRequest) -> Result<(), ValidationError> {
    // Every input named is one of the model's, so a linear search for duplicates among those before it costs at
    // most the square of the model's input count; no set (and no allocation) per request.
    for (i, tensor) in request.inputs.iter().enumerate() {
        let Some(spec) = signature.inputs.iter().find(|s| s.name == tensor.name) else {
            return Err(ValidationError::UnknownInput {
                input: tensor.name.clone(),
                expected: names(signature.inputs.iter().map(|s| s.name.as_str())),
            });
        };
        if request.inputs[..i].iter().any(|t| t.name == tensor.name) {
            return Err(ValidationError::DuplicateInput {
                input: tensor.name.clone(),
            });
        }
        let (datatype, shape) = match &spec.kind {
            IoKind::Tensor { datatype, shape } => (*datatype, shape),
            IoKind::Other { onnx_type } => {
                return Err(ValidationError::NonTensorInput {
                    input: tensor.name.clone(),
                    onnx_type: onnx_type.clone(),
                })
            }
        };
        if tensor.datatype() != datatype {
            return Err(ValidationError::Datatype {
                input: tensor.name.clone(),
                expected: datatype,
                given: tensor.datatype(),
            });
        }
        check_shape(&tensor.name, shape, &tensor.shape)?;
    }
    // Distinct and all known: as many as the model has means none is missing.
    if request.inputs.len() == signature.inputs.len() {
        return Ok(());
    }
    if let Some(missing) = signature
        .inputs
        .iter()
        .find(|s| !request.inputs.iter().any(|t| t.name == s.name))
    {
        let (datatype, shape) = match &missing.kind {
            IoKind::Tensor { datatype, shape } => (datatype.as_str().to_owned(), shape.clone()),
            IoKind::Other { onnx_type } => (onnx_type.clone(), Vec::new()),
        };
        return Err(ValidationError::MissingInput {
            input: missing.name.clone(),
            datatype,
            shape,
        });
    }
    Ok(())
}

fn check_shape(input: &str, expected: &[i64], given: &[usize]) -> Result<(), ValidationError> {
    if expected.len() != given.len() {
        return Err(ValidationError::Rank {
            input: input.to_owned(),
            expected: expected.to_vec(),
            given: given.to_vec(),
        });
    }
    for (index, (&want, &got)) in expected.iter().zip(given).enumerate() {
        if want >= 0 && u64::try_from(want).ok() != u64::try_from(got).ok() {
            return Err(ValidationError::Dimension {
                input: input.to_owned(),
                index,
                want,
                expected: expected.to_vec(),
                given: given.to_vec(),
            });
        }
    }
    Ok(())
}

fn select_outputs(
    signature: &Signature,
    requested: Option<&[String]>,
) -> Result<Vec<String>, ValidationError> {
    let tensor_outputs = || {
        signature
            .outputs
            .iter()
            .filter(|o| matches!(o.kind, IoKind::Tensor { .. }))
            .map(|o| o.name.as_str())
    };
    let Some(requested) = requested.filter(|r| !r.is_empty()) else {
        let all: Vec<String> = tensor_outputs().map(str::to_owned).collect();
        return if all.is_empty() {
            Err(ValidationError::NoTensorOutputs)
        } else {
            Ok(all)
        };
    };
    let mut seen = HashSet::new();
    for name in requested {
        let Some(spec) = signature.outputs.iter().find(|o| &o.name == name) else {
            return Err(ValidationError::UnknownOutput {
                output: name.clone(),
                available: names(signature.outputs.iter().map(|o| o.name.as_str())),
            });
        };
        if let IoKind::Other { onnx_type } = &spec.kind {
            return Err(ValidationError::NonTensorOutput {
                output: name.clone(),
                onnx_type: onnx_type.clone(),
                tensors: names(tensor_outputs()),
            });
        }
        if !seen.insert(name.as_str()) {
            return Err(ValidationError::DuplicateOutput {
                output: name.clone(),
            });
        }
    }
    Ok(requested.to_vec())
}

fn names<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::IoSpec;
    use crate::tensor::{Tensor, TensorData};

    fn signature() -> Signature {
        let tensor = |name: &str, datatype, shape: &[i64]| IoSpec {
            name: name.into(),
            kind: IoKind::Tensor {
                datatype,
                shape: shape.to_vec(),
            },
        };
        Signature {
            inputs: vec![
                tensor("x", DataType::Fp32, &[-1, 4]),
                tensor("k", DataType::Int64, &[-1, 1]),
            ],
            outputs: vec![
                tensor("label", DataType::Int64, &[-1]),
                IoSpec {
                    name: "probs".into(),
                    kind: IoKind::Other {
                        onnx_type: "Sequence<Map>".into(),
                    },
                },
            ],
        }
    }

    fn x(shape: &[usize]) -> Tensor {
        let n = shape.iter().product();
        Tensor {
            name: "x".into(),
            shape: shape.to_vec(),
            data: TensorData::Fp32(vec![0.0; n]),
        }
    }

    fn k() -> Tensor {
        Tensor {
            name: "k".into(),
            shape: vec![2, 1],
            data: TensorData::Int64(vec![1, 2]),
        }
    }

    fn request(inputs: Vec<Tensor>, outputs: Option<Vec<&str>>) -> InferRequest {
        InferRequest {
            id: None,
            inputs,
            outputs: outputs.map(|o| o.into_iter().map(String::from).collect()),
            binary_outputs: Default::default(),
        }
    }

    #[test]
    fn a_good_request_selects_tensor_outputs() {
        assert_eq!(
            validate(&signature(), &request(vec![x(&[2, 4]), k()], None)),
            Ok(vec!["label".into()])
        );
    }

    #[test]
    fn each_problem_is_reported() {
        let sig = signature();
        let err = |inputs, outputs| validate(&sig, &request(inputs, outputs)).unwrap_err();
        assert!(
            matches!(err(vec![x(&[2, 4])], None), ValidationError::MissingInput { input, .. } if input == "k")
        );
        assert!(matches!(
            err(vec![x(&[2, 4]), k(), k()], None),
            ValidationError::DuplicateInput { .. }
        ));
        let mut y = k();
        y.name = "y".into();
        assert!(matches!(
            err(vec![x(&[2, 4]), y], None),
            ValidationError::UnknownInput { .. }
        ));
        let mut wrong = k();
        wrong.name = "x".into();
        assert!(matches!(
            err(vec![wrong, k()], None),
            ValidationError::Datatype { .. }
        ));
        assert!(matches!(
            err(vec![x(&[8]), k()], None),
            ValidationError::Rank { .. }
        ));
        assert!(matches!(
            err(vec![x(&[2, 3]), k()], None),
            ValidationError::Dimension {
                index: 1,
                want: 4,
                ..
            }
        ));
        assert!(matches!(
            err(vec![x(&[2, 4]), k()], Some(vec!["nope"])),
            ValidationError::UnknownOutput { .. }
        ));
        assert!(matches!(
            err(vec![x(&[2, 4]), k()], Some(vec!["probs"])),
            ValidationError::NonTensorOutput { .. }
        ));
        assert!(matches!(
            err(vec![x(&[2, 4]), k()], Some(vec!["label", "label"])),
            ValidationError::DuplicateOutput { .. }
        ));
    }

    #[test]
    fn messages_name_what_was_expected_and_given() {
        let sig = signature();
        let msg = validate(&sig, &request(vec![x(&[2, 3]), k()], None))
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            "input 'x': dimension 1 must be 4 (model shape [-1, 4]), the request has shape [2, 3]"
        );
    }
}
