//! The on-disk model repository: `<root>/<model>/<version>/model.onnx` with integer versions (Triton's layout)
//! and an optional `<root>/<model>/model.toml` of per-model settings.
//!
//! Owns scanning and `model.toml` parsing. Knows nothing about sessions: it only says what is on disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::config::LoadMode;
use crate::model::{BatchSettings, SessionSettings, VersionSettings, WarmupSettings};

/// The contents of `model.toml`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Free text about the model.
    pub description: Option<String>,
    /// Which versions are loaded (default: the latest one).
    #[serde(default)]
    pub version_policy: VersionPolicy,
    /// Pins the default version (the rollback line); otherwise the newest compatible loaded version.
    pub default_version: Option<u64>,
    /// Lets a version whose signature is incompatible with the current default become the default.
    #[serde(default)]
    pub force: bool,
    #[serde(default)]
    pub session: SessionSettings,
    /// Dynamic batching (opt-in).
    pub batching: Option<BatchSettings>,
    /// The run each version makes before it takes traffic.
    #[serde(default)]
    pub warmup: WarmupSettings,
    /// Prediction logging: sample rate and redaction.
    #[serde(default)]
    pub payload_log: PayloadPolicy,
    /// Outcome feedback: which outputs hold the prediction, so delayed ground truth can be scored against it.
    pub feedback: Option<FeedbackPolicy>,
    /// When its versions load: at once (`eager`) or on the first request (`lazy`); unset: `models.default_load`.
    pub load: Option<LoadMode>,
}

impl ModelConfig {
    /// What a version's load takes from this file.
    pub fn version_settings(&self) -> VersionSettings {
        VersionSettings {
            session: self.session.clone(),
            batching: self.batching.clone(),
            warmup: self.warmup.clone(),
        }
    }
}

/// Which versions of a model are loaded (`model.toml` `version_policy`, as in Triton).
///
/// ```toml
/// version_policy = { latest = 2 }      # the 2 highest versions (default: latest 1)
/// version_policy = "all"
/// version_policy = { specific = [1, 3] }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionPolicy {
    Latest(usize),
    All,
    Specific(Vec<u64>),
}

impl Default for VersionPolicy {
    fn default() -> Self {
        VersionPolicy::Latest(1)
    }
}

/// A model's payload-logging policy (`[payload_log]` in `model.toml`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayloadPolicy {
    /// Share of requests logged, 0 to 1.
    #[serde(default)]
    pub sample_rate: f64,
    /// Inputs left out of the log entirely.
    #[serde(default)]
    pub remove: Vec<String>,
    /// Inputs whose every element is replaced by its sha256 (joinable, not readable).
    #[serde(default)]
    pub hash: Vec<String>,
    /// Feature columns (indexes into an input's last dimension) replaced by null.
    #[serde(default)]
    pub remove_features: BTreeMap<String, Vec<usize>>,
}

/// A model's outcome-feedback policy (`[feedback]` in `model.toml`): what its predictions are and where they are in
/// the outputs, so that ground truth posted later can be scored against them.
///
/// ```toml
/// [feedback]
/// task = "classification"
/// label_output = "label"            # the predicted class of each row
/// score_output = "probabilities"    # optional: a row of class probabilities, in `classes` order
/// classes = [0, 1, 2]               # optional: the class labels (default 0 .. columns of score_output)
/// [feedback.retrain]
/// metric = "accuracy"
/// threshold = 0.9
/// sustained_windows = 3
/// new_data_rows = 5000
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackPolicy {
    pub task: FeedbackTask,
    /// The output with the predicted label (classification) or value (regression), one per row.
    pub label_output: String,
    /// The output with each row's class probabilities (classification only).
    pub score_output: Option<String>,
    /// The class labels, in the order of `score_output`'s columns.
    pub classes: Option<Vec<ClassLabel>>,
    /// When to call the retraining webhook.
    pub retrain: Option<RetrainRule>,
}

impl FeedbackPolicy {
    /// Checks what serde cannot: the class list and the rule fit the task.
    pub fn validate(&self) -> Result<(), String> {
        if self.task == FeedbackTask::Regression
            && (self.score_output.is_some() || self.classes.is_some())
        {
            return Err(
                "[feedback]: score_output and classes are for task = \"classification\"".into(),
            );
        }
        if let Some(classes) = &self.classes {
            let distinct: std::collections::BTreeSet<String> =
                classes.iter().map(ClassLabel::text).collect();
            if classes.is_empty() || distinct.len() != classes.len() {
                return Err(
                    "[feedback] classes: must be a non-empty list of distinct labels".into(),
                );
            }
        }
        if let Some(rule) = &self.retrain {
            if !rule.metric.fits(self.task) {
                return Err(format!(
                    "[feedback.retrain] metric '{}' is not a {:?} metric",
                    rule.metric.as_str(),
                    self.task
                ));
            }
            if rule.metric.per_score() && self.score_output.is_none() {
                return Err(format!(
                    "[feedback.retrain] metric '{}' needs score_output",
                    rule.metric.as_str()
                ));
            }
            if !rule.threshold.is_finite() || rule.sustained_windows == 0 {
                return Err(
                    "[feedback.retrain]: threshold must be finite and sustained_windows at least 1"
                        .into(),
                );
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeedbackTask {
    Classification,
    Regression,
}

/// A class label as `model.toml` writes it: an integer or a string.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ClassLabel {
    Int(i64),
    Text(String),
}

impl ClassLabel {
    /// The label as predictions and truths are compared: its text.
    pub fn text(&self) -> String {
        match self {
            ClassLabel::Int(i) => i.to_string(),
            ClassLabel::Text(s) => s.clone(),
        }
    }
}

/// A quality metric over a window of labelled predictions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QualityMetric {
    Accuracy,
    LogLoss,
    Brier,
    Ece,
    Mae,
    Rmse,
}

impl QualityMetric {
    pub const ALL: [QualityMetric; 6] = [
        QualityMetric::Accuracy,
        QualityMetric::LogLoss,
        QualityMetric::Brier,
        QualityMetric::Ece,
        QualityMetric::Mae,
        QualityMetric::Rmse,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            QualityMetric::Accuracy => "accuracy",
            QualityMetric::LogLoss => "log_loss",
            QualityMetric::Brier => "brier",
            QualityMetric::Ece => "ece",
            QualityMetric::Mae => "mae",
            QualityMetric::Rmse => "rmse",
        }
    }

    /// Larger is better (accuracy); every other metric is an error or a loss.
    pub fn higher_is_better(self) -> bool {
        self == QualityMetric::Accuracy
    }

    /// Computed from class probabilities.
    pub fn per_score(self) -> bool {
        matches!(
            self,
            QualityMetric::LogLoss | QualityMetric::Brier | QualityMetric::Ece
        )
    }

    pub fn fits(self, task: FeedbackTask) -> bool {
        match self {
            QualityMetric::Accuracy
            | QualityMetric::LogLoss
            | QualityMetric::Brier
            | QualityMetric::Ece => task == FeedbackTask::Classification,
            QualityMetric::Mae | QualityMetric::Rmse => task == FeedbackTask::Regression,
        }
    }
}

/// The retraining trigger of `[feedback.retrain]`: the metric past `threshold` (below it for accuracy, above it for
/// the losses and errors) for `sustained_windows` windows in a row, or `new_data_rows` labels since the last trigger.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrainRule {
    pub metric: QualityMetric,
    pub threshold: f64,
    #[serde(default = "default_sustained_windows")]
    pub sustained_windows: u32,
    pub new_data_rows: Option<u64>,
}

fn default_sustained_windows() -> u32 {
    3
}

/// One model directory as found on disk.
#[derive(Debug)]
pub struct ModelDir {
    pub name: String,
    /// The parsed `model.toml` (default when absent), or why it could not be read.
    pub config: Result<ModelConfig, String>,
    /// Integer-named version directories, ascending.
    pub versions: Vec<VersionDir>,
}

#[derive(Debug)]
pub struct VersionDir {
    pub version: u64,
    /// `<version>/model.onnx`, which may be missing.
    pub model_path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    #[error("model repository {path} cannot be read: {message}")]
    Unreadable { path: PathBuf, message: String },
}

/// Lists the models under `root`, sorted by name. Entries that are not directories are skipped.
pub fn scan(root: &Path) -> Result<Vec<ModelDir>, RepositoryError> {
    let unreadable = |e: std::io::Error| RepositoryError::Unreadable {
        path: root.to_path_buf(),
        message: e.to_string(),
    };
    let mut models = Vec::new();
    for entry in std::fs::read_dir(root).map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !path.is_dir() || name.starts_with('.') {
            continue;
        }
        models.push(ModelDir {
            config: read_config(&path),
            versions: versions(&path),
            name,
        });
    }
    models.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(models)
}

/// The named models under `root` that exist there, sorted by name (one model's reconcile reads only its own
/// directory). A name that is not a plain directory name is skipped.
pub fn scan_models<'a>(root: &Path, names: impl IntoIterator<Item = &'a str>) -> Vec<ModelDir> {
    let mut models: Vec<ModelDir> = names
        .into_iter()
        .filter(|name| !name.is_empty() && !name.starts_with('.') && !name.contains('/'))
        .map(|name| (name, root.join(name)))
        .filter(|(_, path)| path.is_dir())
        .map(|(name, path)| ModelDir {
            config: read_config(&path),
            versions: versions(&path),
            name: name.to_owned(),
        })
        .collect();
    models.sort_by(|a, b| a.name.cmp(&b.name));
    models
}

fn read_config(dir: &Path) -> Result<ModelConfig, String> {
    let path = dir.join("model.toml");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let config: ModelConfig = toml::from_str(&text)
                .map_err(|e| format!("{}: {}", path.display(), e.message()))?;
            if let Some(feedback) = &config.feedback {
                feedback
                    .validate()
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
            Ok(config)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ModelConfig::default()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn versions(dir: &Path) -> Vec<VersionDir> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<VersionDir> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u64>().ok()?;
            Some(VersionDir {
                version,
                model_path: e.path().join("model.onnx"),
            })
        })
        .collect();
    out.sort_by_key(|v| v.version);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_parses_from_toml() {
        let p = |s: &str| toml::from_str::<ModelConfig>(s).map(|t| t.version_policy);
        assert_eq!(p("version_policy = \"all\"").unwrap(), VersionPolicy::All);
        assert_eq!(
            p("version_policy = { latest = 3 }").unwrap(),
            VersionPolicy::Latest(3)
        );
        assert_eq!(
            p("[version_policy]\nspecific = [1, 2]").unwrap(),
            VersionPolicy::Specific(vec![1, 2])
        );
        assert!(p("version_policy = \"newest\"").is_err());
    }

    #[test]
    fn scans_the_triton_layout() {
        let root = tempfile::tempdir().unwrap();
        let make = |p: &str| std::fs::create_dir_all(root.path().join(p)).unwrap();
        make("b/10");
        make("b/2");
        make("b/notes");
        make("a/1");
        make(".hidden/1");
        std::fs::write(root.path().join("README.md"), "x").unwrap();
        std::fs::write(
            root.path().join("a/model.toml"),
            "description = \"A\"\n[session]\npool_size = 3\n",
        )
        .unwrap();
        std::fs::write(root.path().join("b/model.toml"), "pool = 3\n").unwrap();
        let models = scan(root.path()).unwrap();
        let names: Vec<_> = models.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        let a = models[0].config.as_ref().unwrap();
        assert_eq!(
            (a.description.as_deref(), a.session.pool_size),
            (Some("A"), Some(3))
        );
        assert!(models[1]
            .config
            .as_ref()
            .unwrap_err()
            .contains("unknown field `pool`"));
        let versions: Vec<_> = models[1].versions.iter().map(|v| v.version).collect();
        assert_eq!(versions, [2, 10]);
    }

    #[test]
    fn a_missing_root_is_an_error() {
        assert!(scan(Path::new("/nonexistent/sluice-models")).is_err());
    }
}
