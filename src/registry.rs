//! The live set of models and versions that requests are served from.
//!
//! Owns [`Registry`]: a map behind an atomic pointer swap, so lookups on the request path take no lock and a
//! request keeps the `Arc<ModelVersion>` it resolved until it finishes. Owns start-up loading of the repository;
//! a version that fails to load is recorded with its reason and does not stop the others. Knows nothing about HTTP.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use ort::environment::Environment;

use crate::metrics::Metrics;
use crate::model::ModelVersion;
use crate::repository::{self, ModelDir, RepositoryError};

/// Models by name.
pub type ModelMap = BTreeMap<String, ModelEntry>;

#[derive(Debug, Default)]
pub struct ModelEntry {
    pub description: Option<String>,
    /// Every version found on disk, loaded or not.
    pub versions: BTreeMap<u64, VersionState>,
}

#[derive(Debug, Clone)]
pub enum VersionState {
    Ready(Arc<ModelVersion>),
    /// The load failed; the reason is shown in logs, metadata and readiness errors.
    Failed(String),
}

impl ModelEntry {
    /// The newest ready version (the default target when a request names none).
    pub fn newest_ready(&self) -> Option<&Arc<ModelVersion>> {
        self.versions.values().rev().find_map(|v| match v {
            VersionState::Ready(m) => Some(m),
            VersionState::Failed(_) => None,
        })
    }

    /// Why the model has no ready version, for error messages.
    pub fn failure_summary(&self) -> String {
        if self.versions.is_empty() {
            return "no version directories with a model.onnx were found".into();
        }
        self.versions
            .iter()
            .filter_map(|(v, s)| match s {
                VersionState::Failed(reason) => Some(format!("version {v}: {reason}")),
                VersionState::Ready(_) => None,
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RegistryError {
    #[error("model '{model}' not found")]
    ModelNotFound { model: String },
    #[error("model '{model}' has no version '{version}'; versions: {available}")]
    VersionNotFound {
        model: String,
        version: String,
        available: String,
    },
    #[error("model '{model}' is not ready: {reason}")]
    NotReady { model: String, reason: String },
    #[error("the server is still loading models")]
    ServerNotReady,
}

pub struct Registry {
    /// The current map. `ArcSwap` makes a swap atomic and lookups lock-free: a loader never blocks a request.
    models: ArcSwap<ModelMap>,
    /// False until start-up loading finished; `/v2/health/ready` reports it.
    ready: AtomicBool,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            models: ArcSwap::from_pointee(ModelMap::new()),
            ready: AtomicBool::new(false),
        }
    }
}

impl Registry {
    pub fn snapshot(&self) -> Arc<ModelMap> {
        self.models.load_full()
    }

    /// Replaces the whole map atomically. In-flight requests keep the versions they hold.
    pub fn install(&self, map: ModelMap) {
        self.models.store(Arc::new(map));
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Finds the version a request targets: the one named, or the newest ready one.
    pub fn resolve(
        &self,
        model: &str,
        version: Option<&str>,
    ) -> Result<Arc<ModelVersion>, RegistryError> {
        let map = self.models.load();
        let Some(entry) = map.get(model) else {
            return Err(if self.is_ready() {
                RegistryError::ModelNotFound {
                    model: model.to_owned(),
                }
            } else {
                RegistryError::ServerNotReady
            });
        };
        let Some(version) = version else {
            return entry
                .newest_ready()
                .cloned()
                .ok_or_else(|| RegistryError::NotReady {
                    model: model.to_owned(),
                    reason: entry.failure_summary(),
                });
        };
        let state = version
            .parse::<u64>()
            .ok()
            .and_then(|v| entry.versions.get(&v));
        match state {
            Some(VersionState::Ready(m)) => Ok(Arc::clone(m)),
            Some(VersionState::Failed(reason)) => Err(RegistryError::NotReady {
                model: model.to_owned(),
                reason: format!("version {version} failed to load: {reason}"),
            }),
            None => Err(RegistryError::VersionNotFound {
                model: model.to_owned(),
                version: version.to_owned(),
                available: entry
                    .versions
                    .keys()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }
}

/// Loads every version of every model under `root` (blocking). Failures are logged, counted and recorded.
pub fn load_repository(
    env: &Environment,
    root: &Path,
    metrics: &Metrics,
) -> Result<ModelMap, RepositoryError> {
    let mut map = ModelMap::new();
    for dir in repository::scan(root)? {
        let name = dir.name.clone();
        map.insert(name, load_model(env, dir, metrics));
    }
    Ok(map)
}

fn load_model(env: &Environment, dir: ModelDir, metrics: &Metrics) -> ModelEntry {
    let ModelDir {
        name,
        config,
        versions,
    } = dir;
    let mut entry = ModelEntry::default();
    if versions.is_empty() {
        tracing::warn!(model = %name, "model directory has no integer version directories");
        metrics.model_load_failed(&name, "");
    }
    let config = match config {
        Ok(config) => config,
        Err(reason) => {
            for v in versions {
                tracing::error!(model = %name, version = v.version, %reason, "invalid model.toml");
                metrics.model_load_failed(&name, &v.version.to_string());
                entry.versions.insert(
                    v.version,
                    VersionState::Failed(format!("invalid model.toml: {reason}")),
                );
            }
            return entry;
        }
    };
    entry.description = config.description.clone();
    for v in versions {
        let started = Instant::now();
        let label = v.version.to_string();
        let state = if !v.model_path.is_file() {
            Err(format!("{} does not exist", v.model_path.display()))
        } else {
            ModelVersion::load(env, &name, v.version, &v.model_path, &config.session)
        };
        match state {
            Ok(model) => {
                let seconds = started.elapsed().as_secs_f64();
                tracing::info!(model = %name, version = v.version, seconds, "model version loaded");
                metrics.model_loaded(&name, &label, seconds);
                entry
                    .versions
                    .insert(v.version, VersionState::Ready(Arc::new(model)));
            }
            Err(reason) => {
                tracing::error!(model = %name, version = v.version, %reason, "model version failed to load");
                metrics.model_load_failed(&name, &label);
                entry
                    .versions
                    .insert(v.version, VersionState::Failed(reason));
            }
        }
    }
    entry
}
