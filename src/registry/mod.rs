//! The live set of models and versions that requests are served from, and how it changes.
//!
//! Owns [`Registry`]: a map behind an atomic pointer swap, so lookups on the request path take no lock and a
//! request keeps the `Arc<ModelVersion>` it resolved until it finishes (a replaced or unloaded version's sessions
//! are freed when its last request ends). [`manager`] changes the map (start-up load, reloads, management calls),
//! [`watch`] triggers it on file changes, [`policy`] holds the pure decisions. Knows nothing about HTTP.

pub mod manager;
pub mod overrides;
pub mod policy;
pub mod watch;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Serialize;

pub use self::manager::{ManageError, RepositoryManager};
pub use self::overrides::LoadOverride;
use crate::model::ModelVersion;

/// Versions that something outside the registry refers to (routing's stable, variants, shadow): they stay loaded
/// whatever the version policy says.
pub trait PinnedVersions: Send + Sync {
    fn pinned(&self, model: &str) -> std::collections::BTreeSet<u64>;
}

/// Models by name.
pub type ModelMap = BTreeMap<String, ModelEntry>;

#[derive(Debug, Default, Clone)]
pub struct ModelEntry {
    /// Every version found on disk, loaded or not.
    pub versions: BTreeMap<u64, VersionSlot>,
    /// The version that serves requests that name none.
    pub default: Option<u64>,
    /// Why the whole model is unavailable or degraded (invalid `model.toml`, unloaded by an operator).
    pub reason: Option<String>,
    /// Prediction logging policy from `model.toml`, read by the payload-log layer on each request.
    pub payload_log: Arc<crate::repository::PayloadPolicy>,
    /// Outcome-feedback policy from `model.toml`: which outputs outcome feedback keeps predictions of.
    pub feedback: Option<Arc<crate::repository::FeedbackPolicy>>,
    /// An operator unloaded it: it is not expected to be ready.
    pub operator_unloaded: bool,
    /// Lazy (`load = "lazy"`): its versions load on their first request and may be evicted; readiness does not
    /// wait for it.
    pub lazy: bool,
}

#[derive(Debug, Default, Clone)]
pub struct VersionSlot {
    /// The loaded version, if any. After a failed reload this is still the previous, working load.
    pub model: Option<Arc<ModelVersion>>,
    /// Why the version is not loaded, or why its last reload failed.
    pub reason: Option<String>,
    /// The schema guard's verdict against the current default (never set on the default itself): such a version
    /// does not become the default by itself.
    pub incompatible: Option<String>,
    /// Its files were removed, but it keeps serving from memory because no other version is ready to replace it.
    pub files_removed: bool,
    /// For a version of a lazy model that is not resident but loads on its next request: the signature its file
    /// declares (read without a session).
    pub declared: Option<Arc<crate::model::Signature>>,
}

impl VersionSlot {
    /// Not resident, and its next request loads it.
    pub fn loads_on_demand(&self) -> bool {
        self.model.is_none() && self.declared.is_some()
    }
}

impl ModelEntry {
    /// The loaded default version.
    pub fn default_model(&self) -> Option<&Arc<ModelVersion>> {
        self.versions.get(&self.default?)?.model.as_ref()
    }

    /// Why the model has no default version, for error messages.
    pub fn failure_summary(&self) -> String {
        if let Some(reason) = &self.reason {
            return reason.clone();
        }
        if self.versions.is_empty() {
            return "no version directories with a model.onnx were found".into();
        }
        self.versions
            .iter()
            .filter_map(|(v, s)| s.reason.as_ref().map(|r| format!("version {v}: {r}")))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RegistryError {
    // Worded as Triton words it: its clients and scripts match on "Request for unknown model".
    #[error("Request for unknown model: '{model}' is not found")]
    ModelNotFound { model: String },
    #[error("Request for unknown model: '{model}' version {version} is not found; versions: {available}")]
    VersionNotFound {
        model: String,
        version: String,
        available: String,
    },
    #[error("model '{model}' is not ready: {reason}")]
    NotReady { model: String, reason: String },
    #[error("the server is still loading models{}", .detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    ServerNotReady { detail: Option<String> },
    #[error("not every model has a ready version: {reasons}")]
    ModelsNotReady { reasons: String },
    #[error("the server is shutting down")]
    ShuttingDown,
    /// A version of a lazy model that is not resident: its first request loads it ([`Registry::demand`]).
    #[error("model '{model}' version {version} is not loaded: {reason}")]
    Unloaded {
        model: String,
        version: u64,
        reason: String,
    },
    #[error("model '{model}' did not load within {waited_ms} ms; it is still loading, retry")]
    LoadTimedOut { model: String, waited_ms: u64 },
}

/// Loads a version of a lazy model on demand: the repository manager, reached through the registry so the request
/// path needs nothing else. `Ok` once the version is resident; `Err` says why it is not.
pub trait OnDemand: Send + Sync {
    fn demand(
        &self,
        model: String,
        version: u64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + '_>>;
}

/// What the repository's source reports beyond its files: for a bucket, that it cannot be read now, and the
/// versions it holds that the local copy does not have yet. The index and readiness show it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SourceStatus {
    /// Why the source cannot be read now; what is loaded keeps serving.
    pub problem: Option<String>,
    /// Per model: what the source holds that is not loadable here yet, and why (still uploading, a download that
    /// failed and is retried).
    pub pending: BTreeMap<String, Vec<String>>,
}

/// One row of the repository index (`POST /v2/repository/index`), as Triton and MLServer report it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct IndexEntry {
    pub name: String,
    pub version: String,
    /// `READY` or `UNAVAILABLE`.
    pub state: &'static str,
    pub reason: String,
    /// Whether this version serves requests that name none.
    pub default: bool,
}

pub struct Registry {
    /// The current map. `ArcSwap` makes a swap atomic and lookups lock-free: a loader never blocks a request.
    models: ArcSwap<ModelMap>,
    /// False until start-up loading finished; `/v2/health/ready` reports it.
    ready: AtomicBool,
    /// Set when shutdown begins: readiness is false for good, whatever loading does.
    draining: AtomicBool,
    /// Readiness also needs every model that should be loaded to have a ready version (`models.strict_readiness`).
    strict: bool,
    /// What the source says (a bucket's reachability, versions not yet copied).
    source: ArcSwap<SourceStatus>,
    /// Loads lazy models (set once, by the repository manager); weak, as the manager holds the registry.
    on_demand: std::sync::OnceLock<std::sync::Weak<dyn OnDemand>>,
    /// How long a request waits for a lazy load.
    lazy_timeout: std::sync::atomic::AtomicU64,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new(true)
    }
}

impl Registry {
    /// An empty registry; `strict`: readiness waits for every model to have a ready version.
    pub fn new(strict: bool) -> Registry {
        Registry {
            models: ArcSwap::from_pointee(ModelMap::new()),
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            strict,
            source: ArcSwap::from_pointee(SourceStatus::default()),
            on_demand: std::sync::OnceLock::new(),
            lazy_timeout: std::sync::atomic::AtomicU64::new(30_000),
        }
    }

    pub fn snapshot(&self) -> Arc<ModelMap> {
        self.models.load_full()
    }

    /// Replaces the whole map atomically. In-flight requests keep the versions they hold.
    pub fn install(&self, map: ModelMap) {
        self.models.store(Arc::new(map));
    }

    /// Who loads lazy models, and how long a request waits for it (ms).
    pub fn set_on_demand(&self, loader: std::sync::Weak<dyn OnDemand>, timeout_ms: u64) {
        let _ = self.on_demand.set(loader);
        self.lazy_timeout.store(timeout_ms, Ordering::Relaxed);
    }

    /// Loads `version` of the lazy `model` (concurrent callers share one load), waiting at most the lazy-load
    /// timeout.
    pub async fn demand(&self, model: &str, version: u64) -> Result<(), RegistryError> {
        let loader = self.on_demand.get().and_then(std::sync::Weak::upgrade);
        let Some(loader) = loader else {
            return Err(RegistryError::NotReady {
                model: model.to_owned(),
                reason: "not loaded, and nothing loads it on demand".into(),
            });
        };
        let waited_ms = self.lazy_timeout.load(Ordering::Relaxed);
        // Spawned: a request that gives up leaves the load running for the next one.
        let name = model.to_owned();
        let load = tokio::spawn(async move { loader.demand(name, version).await });
        match tokio::time::timeout(std::time::Duration::from_millis(waited_ms), load).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(reason))) => Err(RegistryError::NotReady {
                model: model.to_owned(),
                reason,
            }),
            Ok(Err(join)) => Err(RegistryError::NotReady {
                model: model.to_owned(),
                reason: join.to_string(),
            }),
            Err(_) => Err(RegistryError::LoadTimedOut {
                model: model.to_owned(),
                waited_ms,
            }),
        }
    }

    /// Replaces what the source reports.
    pub fn set_source_status(&self, status: SourceStatus) {
        if **self.source.load() != status {
            self.source.store(Arc::new(status));
        }
    }

    pub fn source_status(&self) -> Arc<SourceStatus> {
        self.source.load_full()
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Start-up loading finished and shutdown has not begun.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.is_draining()
    }

    /// What `/v2/health/ready` answers: start-up loading finished, no shutdown, and in strict mode every model that
    /// should be loaded (all but those an operator unloaded) has a ready version; otherwise why not.
    pub fn readiness(&self) -> Result<(), RegistryError> {
        if !self.is_ready() {
            return Err(self.not_ready_error());
        }
        if !self.strict {
            return Ok(());
        }
        let map = self.models.load();
        let reasons: Vec<String> = map
            .iter()
            .filter(|(_, entry)| {
                entry.default_model().is_none() && !entry.operator_unloaded && !entry.lazy
            })
            .map(|(name, entry)| format!("model '{name}': {}", entry.failure_summary()))
            .collect();
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(RegistryError::ModelsNotReady {
                reasons: reasons.join("; "),
            })
        }
    }

    /// Marks the start of shutdown: readiness is false from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Why the server is not ready.
    pub fn not_ready_error(&self) -> RegistryError {
        if self.is_draining() {
            RegistryError::ShuttingDown
        } else {
            RegistryError::ServerNotReady {
                detail: self.source.load().problem.clone(),
            }
        }
    }

    /// The model's outcome-feedback policy, when its `model.toml` has one.
    pub fn feedback_policy(&self, model: &str) -> Option<Arc<crate::repository::FeedbackPolicy>> {
        self.models.load().get(model)?.feedback.clone()
    }

    /// Runs `f` on the model's feedback policy, when it has one, without taking a reference to it.
    pub fn with_feedback_policy<R>(
        &self,
        model: &str,
        f: impl FnOnce(&crate::repository::FeedbackPolicy) -> R,
    ) -> Option<R> {
        self.models.load().get(model)?.feedback.as_deref().map(f)
    }

    /// Finds the version a request targets: the one named, or the model's default.
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
                self.not_ready_error()
            });
        };
        let not_ready = |reason: String| RegistryError::NotReady {
            model: model.to_owned(),
            reason,
        };
        if entry.lazy {
            let target = match version {
                Some(v) => v.parse::<u64>().ok(),
                None => entry.default,
            };
            if let Some((v, slot)) = target.and_then(|v| Some((v, entry.versions.get(&v)?))) {
                if slot.loads_on_demand() {
                    return Err(RegistryError::Unloaded {
                        model: model.to_owned(),
                        version: v,
                        reason: slot.reason.clone().unwrap_or_default(),
                    });
                }
            }
        }
        let Some(version) = version else {
            return entry
                .default_model()
                .cloned()
                .ok_or_else(|| not_ready(entry.failure_summary()));
        };
        match version
            .parse::<u64>()
            .ok()
            .and_then(|v| entry.versions.get(&v))
        {
            Some(VersionSlot { model: Some(m), .. }) => Ok(Arc::clone(m)),
            Some(slot) => Err(not_ready(format!(
                "version {version}: {}",
                slot.reason
                    .as_deref()
                    .or(entry.reason.as_deref())
                    .unwrap_or("not loaded")
            ))),
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

    /// For a version of a lazy model that is not resident (`version`, else the default): that version and the
    /// signature its file declares.
    pub fn declared(
        &self,
        model: &str,
        version: Option<&str>,
    ) -> Option<(u64, Arc<crate::model::Signature>)> {
        let map = self.models.load();
        let entry = map.get(model).filter(|e| e.lazy)?;
        let version = match version {
            Some(v) => v.parse::<u64>().ok()?,
            None => entry.default?,
        };
        let slot = entry.versions.get(&version).filter(|s| s.model.is_none())?;
        Some((version, slot.declared.clone()?))
    }

    /// The loaded versions a statistics request names: every model's (`None`), one model's, or one version (which
    /// must be loaded).
    /// The versions of `model` loaded now, as strings (empty for an unknown model).
    pub fn loaded_versions(&self, model: &str) -> Vec<String> {
        self.models
            .load()
            .get(model)
            .map(|entry| {
                entry
                    .versions
                    .iter()
                    .filter(|(_, s)| s.model.is_some())
                    .map(|(v, _)| v.to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn loaded(
        &self,
        model: Option<&str>,
        version: Option<&str>,
    ) -> Result<Vec<Arc<ModelVersion>>, RegistryError> {
        let map = self.models.load();
        let Some(model) = model else {
            return Ok(map
                .values()
                .flat_map(|entry| entry.versions.values())
                .filter_map(|slot| slot.model.clone())
                .collect());
        };
        if version.is_some() {
            return self.resolve(model, version).map(|m| vec![m]);
        }
        let entry = map.get(model).ok_or_else(|| RegistryError::ModelNotFound {
            model: model.to_owned(),
        })?;
        Ok(entry
            .versions
            .values()
            .filter_map(|slot| slot.model.clone())
            .collect())
    }

    /// The repository index: every model and version known, with its state and reason.
    pub fn index(&self) -> Vec<IndexEntry> {
        let map = self.models.load();
        let source = self.source.load();
        let mut rows = Vec::new();
        for (name, entry) in map.iter() {
            if entry.versions.is_empty() {
                rows.push(IndexEntry {
                    name: name.clone(),
                    version: String::new(),
                    state: "UNAVAILABLE",
                    reason: entry.failure_summary(),
                    default: false,
                });
            }
            for (version, slot) in &entry.versions {
                let mut reasons: Vec<&str> = Vec::new();
                reasons.extend(slot.reason.as_deref());
                if entry.reason != slot.reason {
                    reasons.extend(entry.reason.as_deref());
                }
                let incompatible = slot
                    .incompatible
                    .as_ref()
                    .map(|i| format!("incompatible: {i}"));
                reasons.extend(incompatible.as_deref());
                reasons.extend(source.problem.as_deref());
                let pending = source.pending.get(name).map(|p| p.join("; "));
                reasons.extend(pending.as_deref());
                rows.push(IndexEntry {
                    name: name.clone(),
                    version: version.to_string(),
                    state: match (&slot.model, entry.lazy) {
                        (Some(_), _) => "READY",
                        (None, true) => "UNLOADED",
                        (None, false) => "UNAVAILABLE",
                    },
                    reason: reasons.join("; "),
                    default: entry.default == Some(*version),
                });
            }
        }
        // Models the source holds that have nothing loadable here yet (their first version still copying).
        for (name, pending) in &source.pending {
            if !map.contains_key(name) {
                rows.push(IndexEntry {
                    name: name.clone(),
                    version: String::new(),
                    state: "UNAVAILABLE",
                    reason: pending.join("; "),
                    default: false,
                });
            }
        }
        rows
    }
}
