//! Input drift: a sliding window of the last N rows of each feature, binned with the version's reference profile
//! (`<version>/reference.json`, written by the models generator from training data), compared by the population
//! stability index (PSI) per feature and overall (the mean over features).
//!
//! Observing a request costs one lock and a binary search per feature value; PSI is recomputed every
//! `recompute_every` rows, not per request.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use crate::tensor::{Tensor, TensorData};

/// Below this share a bucket is treated as this share (PSI is undefined for empty buckets).
const EPSILON: f64 = 1e-4;

/// The reference profile file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceProfile {
    pub inputs: BTreeMap<String, InputProfile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputProfile {
    pub kind: String,
    pub features: Vec<FeatureProfile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureProfile {
    /// Column of the input's last dimension.
    pub index: usize,
    pub name: String,
    /// Numeric: ascending bin edges; buckets are (-inf, e0), [e0, e1), …, [e_last, inf).
    #[serde(default)]
    pub edges: Vec<f64>,
    /// Numeric: expected share per bucket (edges.len() + 1 of them).
    #[serde(default)]
    pub proportions: Vec<f64>,
    /// Categorical: expected share per category; anything else goes to an "other" bucket.
    #[serde(default)]
    pub categories: BTreeMap<String, f64>,
}

/// PSI of one feature in the current window.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct FeatureDrift {
    pub input: String,
    pub feature: String,
    pub psi: f64,
}

/// The state the drift endpoint and metrics show.
#[derive(Debug, Clone, Serialize, PartialEq, Default, utoipa::ToSchema)]
pub struct DriftReport {
    pub rows_in_window: usize,
    pub overall_psi: Option<f64>,
    pub features: Vec<FeatureDrift>,
}

/// One feature being watched: its buckets, expected shares, and the window's bucket of each row.
struct Watched {
    input: String,
    index: usize,
    name: String,
    edges: Vec<f64>,
    categories: Vec<String>,
    expected: Vec<f64>,
    counts: Vec<u64>,
    window: VecDeque<u16>,
}

impl Watched {
    fn bucket_of_number(&self, x: f64) -> usize {
        self.edges.partition_point(|e| *e <= x)
    }

    fn bucket_of_string(&self, s: &str) -> usize {
        self.categories
            .iter()
            .position(|c| c == s)
            .unwrap_or(self.categories.len())
    }

    fn push(&mut self, bucket: usize, capacity: usize) {
        if self.window.len() == capacity {
            if let Some(old) = self.window.pop_front() {
                self.counts[old as usize] -= 1;
            }
        }
        self.window.push_back(bucket as u16);
        self.counts[bucket] += 1;
    }

    fn psi(&self) -> f64 {
        let n = self.window.len().max(1) as f64;
        self.expected
            .iter()
            .zip(&self.counts)
            .map(|(e, c)| {
                let (e, a) = (e.max(EPSILON), (*c as f64 / n).max(EPSILON));
                (a - e) * (a / e).ln()
            })
            .sum()
    }
}

/// Drift state of one model version.
pub struct DriftMonitor {
    /// A std mutex: held for one request's bucket updates, never across an await.
    features: Mutex<Vec<Watched>>,
    capacity: usize,
}

impl DriftMonitor {
    /// Reads `reference.json` next to `model_path`; `Ok(None)` when there is none.
    pub fn load(model_path: &Path, capacity: usize) -> Result<Option<DriftMonitor>, String> {
        let path = model_path.with_file_name("reference.json");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let profile: ReferenceProfile =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        DriftMonitor::new(&profile, capacity)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn new(profile: &ReferenceProfile, capacity: usize) -> Result<DriftMonitor, String> {
        let mut features = Vec::new();
        for (input, p) in &profile.inputs {
            for f in &p.features {
                let (edges, categories, expected) = if f.categories.is_empty() {
                    if f.proportions.len() != f.edges.len() + 1 {
                        return Err(format!(
                            "feature '{}': {} proportions for {} edges",
                            f.name,
                            f.proportions.len(),
                            f.edges.len()
                        ));
                    }
                    (f.edges.clone(), Vec::new(), f.proportions.clone())
                } else {
                    let categories: Vec<String> = f.categories.keys().cloned().collect();
                    let mut expected: Vec<f64> = f.categories.values().copied().collect();
                    expected.push((1.0 - expected.iter().sum::<f64>()).max(0.0));
                    (Vec::new(), categories, expected)
                };
                let buckets = expected.len();
                features.push(Watched {
                    input: input.clone(),
                    index: f.index,
                    name: f.name.clone(),
                    edges,
                    categories,
                    expected,
                    counts: vec![0; buckets],
                    window: VecDeque::with_capacity(capacity),
                });
            }
        }
        Ok(DriftMonitor {
            features: Mutex::new(features),
            capacity: capacity.max(1),
        })
    }

    /// Adds a request's rows to the window.
    pub fn observe(&self, inputs: &[Tensor]) {
        let mut features = self.features.lock().unwrap_or_else(PoisonError::into_inner);
        for w in features.iter_mut() {
            let Some(tensor) = inputs.iter().find(|t| t.name == w.input) else {
                continue;
            };
            let width = tensor.shape.last().copied().unwrap_or(1).max(1);
            if tensor.shape.len() < 2 && w.index > 0 {
                continue;
            }
            let capacity = self.capacity;
            macro_rules! numbers {
                ($v:expr) => {
                    for row in $v.chunks(width) {
                        if let Some(x) = row.get(w.index) {
                            let bucket = w.bucket_of_number(f64::from(*x));
                            w.push(bucket, capacity);
                        }
                    }
                };
            }
            match &tensor.data {
                TensorData::Fp32(v) => numbers!(v),
                TensorData::Fp64(v) => numbers!(v),
                TensorData::Int32(v) => numbers!(v),
                TensorData::Int64(v) => {
                    for row in v.chunks(width) {
                        if let Some(x) = row.get(w.index) {
                            let bucket = w.bucket_of_number(*x as f64);
                            w.push(bucket, capacity);
                        }
                    }
                }
                TensorData::Bytes(v) => {
                    for row in v.chunks(width) {
                        if let Some(s) = row.get(w.index) {
                            let bucket = w.bucket_of_string(s);
                            w.push(bucket, capacity);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// PSI per feature and overall for the current window.
    pub fn report(&self) -> DriftReport {
        let features = self.features.lock().unwrap_or_else(PoisonError::into_inner);
        let rows = features.iter().map(|w| w.window.len()).max().unwrap_or(0);
        let drifts: Vec<FeatureDrift> = features
            .iter()
            .filter(|w| !w.window.is_empty())
            .map(|w| FeatureDrift {
                input: w.input.clone(),
                feature: w.name.clone(),
                psi: w.psi(),
            })
            .collect();
        let overall = (!drifts.is_empty())
            .then(|| drifts.iter().map(|d| d.psi).sum::<f64>() / drifts.len() as f64);
        DriftReport {
            rows_in_window: rows,
            overall_psi: overall,
            features: drifts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> ReferenceProfile {
        serde_json::from_str(
            r#"{"inputs": {"x": {"kind": "numeric", "features": [
                {"index": 0, "name": "a", "edges": [0.25, 0.5, 0.75], "proportions": [0.25, 0.25, 0.25, 0.25]}]},
              "c": {"kind": "categorical", "features": [{"index": 0, "name": "c", "categories": {"n": 0.5, "s": 0.5}}]}}}"#,
        )
        .unwrap()
    }

    fn rows(values: &[f32]) -> Vec<Tensor> {
        vec![Tensor {
            name: "x".into(),
            shape: vec![values.len(), 1],
            data: TensorData::Fp32(values.to_vec()),
        }]
    }

    #[test]
    fn matching_traffic_has_low_psi_and_shifted_traffic_high() {
        let monitor = DriftMonitor::new(&profile(), 400).unwrap();
        let uniform: Vec<f32> = (0..400).map(|i| (i as f32 + 0.5) / 400.0).collect();
        monitor.observe(&rows(&uniform));
        let report = monitor.report();
        assert_eq!(report.rows_in_window, 400);
        assert!(report.overall_psi.unwrap() < 0.01, "{report:?}");
        // The window slides: 400 shifted rows replace the matching ones.
        let shifted: Vec<f32> = uniform.iter().map(|x| x + 0.6).collect();
        monitor.observe(&rows(&shifted));
        assert!(monitor.report().overall_psi.unwrap() > 1.0);
    }

    #[test]
    fn categories_and_unknown_values() {
        let monitor = DriftMonitor::new(&profile(), 100).unwrap();
        let strings = |v: Vec<&str>| {
            vec![Tensor {
                name: "c".into(),
                shape: vec![v.len(), 1],
                data: TensorData::Bytes(v.into_iter().map(String::from).collect()),
            }]
        };
        monitor.observe(&strings(["n", "s"].repeat(50)));
        let psi = |m: &DriftMonitor| {
            m.report()
                .features
                .iter()
                .find(|f| f.feature == "c")
                .unwrap()
                .psi
        };
        assert!(psi(&monitor) < 0.01);
        monitor.observe(&strings(vec!["new"; 100]));
        assert!(psi(&monitor) > 1.0);
    }
}
