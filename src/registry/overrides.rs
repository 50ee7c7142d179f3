//! A load call's configuration override: Triton's `parameters.config` (a JSON model configuration) translated into the
//! part of `model.toml` it maps onto — `max_batch_size` with `dynamic_batching` (batching), the `instance_group`
//! counts (the session pool) and `version_policy`. A field sluice cannot honour is refused by name, never ignored.
//! The override lasts until the model's next load call, which sets another or none (as in Triton).

use serde_json::{Map, Value};

use crate::model::BatchSettings;
use crate::repository::ModelConfig;
use crate::repository::VersionPolicy;

/// What a load call changes in the model's configuration; `None` leaves the repository's setting.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct LoadOverride {
    /// `Some(None)`: batching off (`max_batch_size: 0`, or no `dynamic_batching`).
    pub batching: Option<Option<BatchSettings>>,
    pub pool_size: Option<usize>,
    pub version_policy: Option<VersionPolicy>,
}

impl LoadOverride {
    /// `config` with this override applied.
    pub fn apply(&self, mut config: ModelConfig) -> ModelConfig {
        if let Some(batching) = &self.batching {
            config.batching = batching.clone();
        }
        if let Some(size) = self.pool_size {
            config.session.pool_size = Some(size);
        }
        if let Some(policy) = &self.version_policy {
            config.version_policy = policy.clone();
        }
        config
    }

    /// Translates Triton's `parameters.config` for `model`; the error names the field and says why.
    pub fn from_triton_config(model: &str, text: &str) -> Result<LoadOverride, String> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| format!("parameters.config is not valid JSON: {e}"))?;
        let Value::Object(fields) = value else {
            return Err("parameters.config must be a JSON object (a model configuration)".into());
        };
        let mut out = LoadOverride::default();
        let mut max_batch_size = None;
        let mut dynamic = None;
        for (key, value) in &fields {
            let field = format!("config.{key}");
            match key.as_str() {
                "name" if value.as_str() == Some(model) => {}
                "name" => return Err(format!("{field} must be '{model}', the model loaded")),
                "platform" if value.as_str() == Some("onnxruntime_onnx") => {}
                "backend" if value.as_str() == Some("onnxruntime") => {}
                "platform" | "backend" => {
                    return Err(format!(
                        "{field} {value} is not supported: sluice serves ONNX models with ONNX Runtime"
                    ))
                }
                "max_batch_size" => max_batch_size = Some(count(&field, value, 0)?),
                "dynamic_batching" => dynamic = Some(object(&field, value)?),
                "instance_group" => out.pool_size = Some(instances(&field, value)?),
                "version_policy" => out.version_policy = Some(version_policy(&field, value)?),
                _ => {
                    return Err(format!(
                        "{field} is not supported: a load may set max_batch_size, dynamic_batching, \
                         instance_group and version_policy (inputs and outputs come from the ONNX file)"
                    ))
                }
            }
        }
        out.batching = match (max_batch_size, dynamic) {
            (None, None) => None,
            (Some(0), Some(_)) | (None, Some(_)) => {
                return Err("config.dynamic_batching needs config.max_batch_size above 0".into())
            }
            (Some(_), None) => Some(None),
            (Some(max), Some(fields)) => Some(Some(batching(max, fields)?)),
        };
        Ok(out)
    }
}

fn object<'a>(field: &str, value: &'a Value) -> Result<&'a Map<String, Value>, String> {
    value
        .as_object()
        .ok_or_else(|| format!("{field} must be an object, not {value}"))
}

/// A non-negative integer, at least `min`; Triton's JSON writes 64-bit integers as strings too.
fn count(field: &str, value: &Value, min: u64) -> Result<usize, String> {
    let n = match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    };
    n.filter(|&n| n >= min)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| format!("{field} must be an integer of at least {min}, not {value}"))
}

fn batching(max_batch_size: usize, fields: &Map<String, Value>) -> Result<BatchSettings, String> {
    let mut settings: BatchSettings =
        serde_json::from_value(serde_json::json!({ "max_batch_size": max_batch_size }))
            .map_err(|e| e.to_string())?;
    for (key, value) in fields {
        let field = format!("config.dynamic_batching.{key}");
        match key.as_str() {
            "max_queue_delay_microseconds" => {
                settings.max_queue_delay_us = count(&field, value, 0)? as u64
            }
            "preferred_batch_size" => {
                settings.preferred_sizes = value
                    .as_array()
                    .ok_or_else(|| format!("{field} must be a list of sizes"))?
                    .iter()
                    .map(|v| count(&field, v, 1))
                    .collect::<Result<_, _>>()?
            }
            _ => {
                return Err(format!(
                    "{field} is not supported: dynamic batching takes max_queue_delay_microseconds and \
                     preferred_batch_size"
                ))
            }
        }
    }
    Ok(settings)
}

/// The sessions the groups ask for: the sum of their counts (CPU only).
fn instances(field: &str, value: &Value) -> Result<usize, String> {
    let groups = value
        .as_array()
        .filter(|g| !g.is_empty())
        .ok_or_else(|| format!("{field} must be a list of instance groups"))?;
    let mut total = 0;
    for (i, group) in groups.iter().enumerate() {
        let field = format!("{field}[{i}]");
        let mut size = 1;
        for (key, value) in object(&field, group)? {
            let field = format!("{field}.{key}");
            match key.as_str() {
                "count" => size = count(&field, value, 1)?,
                "kind" if matches!(value.as_str(), Some("KIND_CPU" | "KIND_AUTO")) => {}
                "kind" => {
                    return Err(format!(
                        "{field} {value} is not supported: sluice runs models on the CPU"
                    ))
                }
                "name" => {}
                _ => {
                    return Err(format!(
                        "{field} is not supported: an instance group may set count and kind"
                    ))
                }
            }
        }
        total += size;
    }
    Ok(total)
}

fn version_policy(field: &str, value: &Value) -> Result<VersionPolicy, String> {
    let fields = object(field, value)?;
    let mut entries = fields.iter();
    let (Some((key, inner)), None) = (entries.next(), entries.next()) else {
        return Err(format!(
            "{field} must hold exactly one of latest, all and specific"
        ));
    };
    let field = format!("{field}.{key}");
    match key.as_str() {
        "latest" => {
            let n = object(&field, inner)?
                .get("num_versions")
                .ok_or_else(|| format!("{field} needs num_versions"))?;
            Ok(VersionPolicy::Latest(count(
                &format!("{field}.num_versions"),
                n,
                1,
            )?))
        }
        "all" => Ok(VersionPolicy::All),
        "specific" => {
            let versions = object(&field, inner)?
                .get("versions")
                .and_then(Value::as_array)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("{field} needs a list of versions"))?;
            let versions = versions
                .iter()
                .map(|v| count(&format!("{field}.versions"), v, 1).map(|v| v as u64))
                .collect::<Result<_, _>>()?;
            Ok(VersionPolicy::Specific(versions))
        }
        _ => Err(format!(
            "{field} is not a version policy: use latest, all or specific"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<LoadOverride, String> {
        LoadOverride::from_triton_config("iris", text)
    }

    #[test]
    fn the_supported_subset_maps_onto_the_model_configuration() {
        let o = parse(
            r#"{"name": "iris", "platform": "onnxruntime_onnx", "max_batch_size": 8,
                "dynamic_batching": {"max_queue_delay_microseconds": 100, "preferred_batch_size": [4, 8]},
                "instance_group": [{"count": 2, "kind": "KIND_CPU"}, {"count": "1"}],
                "version_policy": {"latest": {"num_versions": 2}}}"#,
        )
        .unwrap();
        let batching = o.batching.clone().unwrap().unwrap();
        assert_eq!(batching.max_batch_size, 8);
        assert_eq!(batching.max_queue_delay_us, 100);
        assert_eq!(batching.preferred_sizes, vec![4, 8]);
        assert_eq!(o.pool_size, Some(3));
        assert_eq!(o.version_policy, Some(VersionPolicy::Latest(2)));
        let config = o.apply(ModelConfig::default());
        assert_eq!(config.session.pool_size, Some(3));
        assert_eq!(config.version_policy, VersionPolicy::Latest(2));

        assert_eq!(
            parse(r#"{"max_batch_size": 0}"#).unwrap().batching,
            Some(None)
        );
        assert_eq!(parse("{}").unwrap(), LoadOverride::default());
        assert_eq!(
            parse(r#"{"version_policy": {"specific": {"versions": [1, 3]}}}"#)
                .unwrap()
                .version_policy,
            Some(VersionPolicy::Specific(vec![1, 3]))
        );
    }

    #[test]
    fn anything_else_is_refused_by_name() {
        for (text, needle) in [
            ("{", "not valid JSON"),
            ("[1]", "must be a JSON object"),
            (r#"{"name": "other"}"#, "config.name must be 'iris'"),
            (r#"{"platform": "tensorrt_plan"}"#, "config.platform"),
            (r#"{"input": []}"#, "config.input is not supported"),
            (
                r#"{"optimization": {}}"#,
                "config.optimization is not supported",
            ),
            (
                r#"{"max_batch_size": -1}"#,
                "config.max_batch_size must be an integer",
            ),
            (
                r#"{"dynamic_batching": {}}"#,
                "needs config.max_batch_size above 0",
            ),
            (
                r#"{"max_batch_size": 4, "dynamic_batching": {"priority_levels": 2}}"#,
                "config.dynamic_batching.priority_levels is not supported",
            ),
            (
                r#"{"instance_group": [{"kind": "KIND_GPU"}]}"#,
                "config.instance_group[0].kind",
            ),
            (
                r#"{"instance_group": [{"count": 0}]}"#,
                "config.instance_group[0].count",
            ),
            (
                r#"{"instance_group": [{"gpus": [0]}]}"#,
                "config.instance_group[0].gpus is not supported",
            ),
            (r#"{"version_policy": {}}"#, "exactly one of"),
            (
                r#"{"version_policy": {"newest": {}}}"#,
                "config.version_policy.newest is not a version policy",
            ),
        ] {
            let error = parse(text).unwrap_err();
            assert!(error.contains(needle), "{text}: {error}");
        }
    }
}
