//! Warmup: a freshly loaded version runs once on each of its sessions before it takes traffic, so the first
//! requests after a swap do not pay ONNX Runtime's first-run costs (memory arena growth, kernel selection).
//!
//! The inputs come from the version's signature (dynamic dimensions as 1, zeros, empty strings) or from a sample
//! V2 JSON request named in `model.toml`'s `[warmup]`. A warmup that fails fails the load.

use std::path::{Path, PathBuf};

use ort::session::Session;
use serde::Deserialize;

use super::convert;
use super::signature::{IoKind, Signature};
use crate::tensor::json::{decode_request, DecodeLimits};
use crate::tensor::{DataType, Tensor, TensorData};

/// `[warmup]` in `model.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WarmupSettings {
    /// Run the warmup at all (default true).
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// A V2 JSON inference request whose inputs are run instead of the signature's zeros: looked up in the version's
    /// directory, then in the model's.
    pub request: Option<PathBuf>,
}

fn enabled() -> bool {
    true
}

impl Default for WarmupSettings {
    fn default() -> Self {
        WarmupSettings {
            enabled: true,
            request: None,
        }
    }
}

/// Largest sample request file read.
const MAX_SAMPLE_BYTES: u64 = 64 << 20;

/// The inputs a warmup runs for the version at `model_path` (`<model>/<version>/model.onnx`), or `None` when it
/// is turned off or the model takes inputs that only a sample request could give.
pub fn inputs(
    settings: &WarmupSettings,
    signature: &Signature,
    model_path: &Path,
) -> Result<Option<Vec<Tensor>>, String> {
    if !settings.enabled {
        return Ok(None);
    }
    match &settings.request {
        Some(request) => sample_inputs(&sample_path(request, model_path)?).map(Some),
        None => Ok(signature_inputs(signature)),
    }
}

/// Runs `inputs` once on every session, discarding the outputs. The error says where the inputs came from and
/// what the operator can do.
pub fn run(
    sessions: &mut [Session],
    inputs: &[Tensor],
    settings: &WarmupSettings,
) -> Result<(), String> {
    let failed = |e: String| {
        let source = match &settings.request {
            Some(request) => format!("the sample request {}", request.display()),
            None => "inputs built from the signature (dynamic dimensions as 1, zeros); give a sample request \
                     ([warmup] request = \"<file>\" in model.toml) or turn it off ([warmup] enabled = false)"
                .to_owned(),
        };
        format!("warmup failed with {source}: {e}")
    };
    for session in sessions {
        let values = inputs
            .iter()
            .cloned()
            .map(convert::to_input)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| failed(e.to_string()))?;
        session
            .run(values)
            .map_err(|e| failed(format!("ONNX Runtime: {e}")))?;
    }
    Ok(())
}

fn sample_path(request: &Path, model_path: &Path) -> Result<PathBuf, String> {
    let version_dir = model_path.parent().unwrap_or(Path::new("."));
    let model_dir = version_dir.parent().unwrap_or(Path::new("."));
    [version_dir, model_dir]
        .iter()
        .map(|dir| dir.join(request))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "warmup request {} found neither in {} nor in {}",
                request.display(),
                version_dir.display(),
                model_dir.display()
            )
        })
}

fn sample_inputs(path: &Path) -> Result<Vec<Tensor>, String> {
    let read = |e: std::io::Error| format!("warmup request {}: {e}", path.display());
    let len = std::fs::metadata(path).map_err(read)?.len();
    if len > MAX_SAMPLE_BYTES {
        return Err(format!(
            "warmup request {} is {len} bytes; at most {MAX_SAMPLE_BYTES} are read",
            path.display()
        ));
    }
    let body = std::fs::read(path).map_err(read)?;
    let limits = DecodeLimits {
        max_elements: 1 << 24,
        max_depth: 32,
    };
    decode_request(&body, limits)
        .map(|request| request.inputs)
        .map_err(|e| format!("warmup request {}: {e}", path.display()))
}

/// One zero-filled tensor per input, dynamic dimensions as 1; `None` when an input is not a tensor.
fn signature_inputs(signature: &Signature) -> Option<Vec<Tensor>> {
    signature
        .inputs
        .iter()
        .map(|spec| match &spec.kind {
            IoKind::Tensor { datatype, shape } => {
                let shape: Vec<usize> = shape
                    .iter()
                    .map(|d| usize::try_from(*d).unwrap_or(1))
                    .collect();
                let len = shape.iter().product();
                Some(Tensor {
                    name: spec.name.clone(),
                    data: zeros(*datatype, len),
                    shape,
                })
            }
            IoKind::Other { .. } => None,
        })
        .collect()
}

fn zeros(datatype: DataType, len: usize) -> TensorData {
    match datatype {
        DataType::Bool => TensorData::Bool(vec![false; len]),
        DataType::Uint8 => TensorData::Uint8(vec![0; len]),
        DataType::Uint16 => TensorData::Uint16(vec![0; len]),
        DataType::Uint32 => TensorData::Uint32(vec![0; len]),
        DataType::Uint64 => TensorData::Uint64(vec![0; len]),
        DataType::Int8 => TensorData::Int8(vec![0; len]),
        DataType::Int16 => TensorData::Int16(vec![0; len]),
        DataType::Int32 => TensorData::Int32(vec![0; len]),
        DataType::Int64 => TensorData::Int64(vec![0; len]),
        DataType::Fp16 => TensorData::Fp16(vec![half::f16::ZERO; len]),
        DataType::Fp32 => TensorData::Fp32(vec![0.0; len]),
        DataType::Fp64 => TensorData::Fp64(vec![0.0; len]),
        DataType::Bytes => TensorData::Bytes(vec![String::new(); len]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::IoSpec;

    fn tensor_spec(name: &str, datatype: DataType, shape: &[i64]) -> IoSpec {
        IoSpec {
            name: name.into(),
            kind: IoKind::Tensor {
                datatype,
                shape: shape.to_vec(),
            },
        }
    }

    #[test]
    fn signature_inputs_are_zeros_with_dynamic_dimensions_as_one() {
        let signature = Signature {
            inputs: vec![
                tensor_spec("x", DataType::Fp32, &[-1, 4]),
                tensor_spec("s", DataType::Bytes, &[-1]),
            ],
            outputs: vec![],
        };
        let inputs = inputs(
            &WarmupSettings::default(),
            &signature,
            Path::new("m/1/model.onnx"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(inputs[0].shape, [1, 4]);
        assert_eq!(inputs[0].data, TensorData::Fp32(vec![0.0; 4]));
        assert_eq!(inputs[1].data, TensorData::Bytes(vec![String::new()]));
        let off = WarmupSettings {
            enabled: false,
            request: None,
        };
        assert_eq!(inputs_or_panic(&off, &signature), None);
    }

    fn inputs_or_panic(settings: &WarmupSettings, signature: &Signature) -> Option<Vec<Tensor>> {
        inputs(settings, signature, Path::new("m/1/model.onnx")).unwrap()
    }

    #[test]
    fn a_sample_request_is_read_from_the_version_then_the_model_directory() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("m/1")).unwrap();
        let body =
            r#"{"inputs":[{"name":"x","datatype":"FP32","shape":[2,4],"data":[1,2,3,4,5,6,7,8]}]}"#;
        std::fs::write(root.path().join("m/sample.json"), body).unwrap();
        let settings = WarmupSettings {
            enabled: true,
            request: Some("sample.json".into()),
        };
        let model = root.path().join("m/1/model.onnx");
        let empty = Signature {
            inputs: vec![],
            outputs: vec![],
        };
        let got = inputs(&settings, &empty, &model).unwrap().unwrap();
        assert_eq!(got[0].shape, [2, 4]);
        std::fs::write(
            root.path().join("m/1/sample.json"),
            body.replace("[2,4]", "[1,8]"),
        )
        .unwrap();
        let got = inputs(&settings, &empty, &model).unwrap().unwrap();
        assert_eq!(got[0].shape, [1, 8]);
        let missing = WarmupSettings {
            enabled: true,
            request: Some("nope.json".into()),
        };
        let err = inputs(&missing, &empty, &model).unwrap_err();
        assert!(err.contains("nope.json found neither"), "{err}");
        std::fs::write(root.path().join("m/bad.json"), "{").unwrap();
        let bad = WarmupSettings {
            enabled: true,
            request: Some("bad.json".into()),
        };
        assert!(inputs(&bad, &empty, &model)
            .unwrap_err()
            .contains("bad.json"));
    }
}
