//! [`RepositoryManager`]: the one writer of the registry. It brings the live map in line with the repository on
//! disk (start-up, file changes, polling) and carries out management calls (load, unload, default version).
//!
//! Every change runs under one async mutex, so reconciles and management calls never interleave; request lookups
//! never take it. Loads run on blocking threads. A version whose file did not change is never reloaded; a file that
//! failed to load is not retried until it changes (or an operator asks); a file still being written (modified
//! less than `settle` ago) is left alone until it is stable.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ort::environment::Environment;
use tokio::sync::Mutex;

use super::policy::{choose_default, incompatibility, Candidate};
use super::{ModelEntry, ModelMap, PinnedVersions, Registry, VersionSlot};
use crate::metrics::Metrics;
use crate::model::{BatchSettings, LoadOptions, ModelVersion, SessionSettings};
use crate::repository::{self, ModelConfig, ModelDir, RepositoryError};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ManageError {
    #[error("model '{0}' is not in the repository")]
    UnknownModel(String),
    #[error("model '{model}' did not load: {reason}")]
    LoadFailed { model: String, reason: String },
    #[error("model '{model}' version {version} is not loaded, so it cannot be the default")]
    VersionNotLoaded { model: String, version: u64 },
    #[error("{0}")]
    Repository(String),
}

impl From<RepositoryError> for ManageError {
    fn from(e: RepositoryError) -> Self {
        ManageError::Repository(e.to_string())
    }
}

/// What a version's load depends on: the file (size, modification time) and the session settings.
#[derive(Debug, Clone, PartialEq)]
struct Fingerprint {
    len: u64,
    modified: Option<SystemTime>,
    settings: SessionSettings,
    batching: Option<BatchSettings>,
}

/// The outcome of one reconcile.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reconciled {
    /// Some file was still being written: reconcile again once it has settled.
    pub pending: bool,
}

#[derive(Default)]
struct ManagerState {
    /// Fingerprint of the file each loaded version came from.
    loaded: HashMap<(String, u64), Fingerprint>,
    /// Fingerprint of the last failed attempt, not retried until the file or settings change.
    failed: HashMap<(String, u64), Fingerprint>,
    /// The last `model.toml` applied per model; a change clears operator overrides of the default.
    configs: HashMap<String, ModelConfig>,
    /// Models an operator unloaded: left unloaded until an operator loads them again.
    unloaded: HashSet<String>,
    /// Default versions set by a management call (rollback), until the model's `model.toml` changes.
    default_override: HashMap<String, u64>,
    /// Models whose next load skips the schema guard (the load call's `force`).
    force_once: HashSet<String>,
}

pub struct RepositoryManager {
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    env: Environment,
    root: PathBuf,
    /// A file modified more recently than this is treated as still being written.
    settle: Duration,
    /// A `tokio` mutex: it is held across awaited (blocking-pool) model loads. Only writers take it.
    state: Mutex<ManagerState>,
    /// Versions routing refers to; kept loaded whatever the version policy says.
    pins: Option<Arc<dyn PinnedVersions>>,
    /// Server-wide load options (queue bound per version, drift window).
    load_options: LoadOptions,
}

impl RepositoryManager {
    pub fn new(
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        env: Environment,
        root: PathBuf,
        settle: Duration,
    ) -> RepositoryManager {
        RepositoryManager {
            registry,
            metrics,
            env,
            root,
            settle,
            state: Mutex::new(ManagerState::default()),
            pins: None,
            load_options: LoadOptions::default(),
        }
    }

    /// Sets the server-wide load options.
    pub fn with_load_options(mut self, options: LoadOptions) -> RepositoryManager {
        self.load_options = options;
        self
    }

    /// Keeps the versions `pins` names loaded (routing's references).
    pub fn with_pins(mut self, pins: Arc<dyn PinnedVersions>) -> RepositoryManager {
        self.pins = Some(pins);
        self
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Brings the registry in line with the repository on disk.
    pub async fn reconcile(&self) -> Result<Reconciled, ManageError> {
        let mut state = self.state.lock().await;
        self.reconcile_locked(&mut state).await
    }

    /// Loads (or reloads) a model now, retrying files that failed before; `force` skips the schema guard once.
    pub async fn load(&self, model: &str, force: bool) -> Result<(), ManageError> {
        let mut state = self.state.lock().await;
        let root = self.root.clone();
        let on_disk = tokio::task::spawn_blocking(move || repository::scan(&root))
            .await
            .map_err(|e| ManageError::Repository(e.to_string()))??;
        if !on_disk.iter().any(|d| d.name == model) {
            return Err(ManageError::UnknownModel(model.to_owned()));
        }
        state.unloaded.remove(model);
        state.failed.retain(|(m, _), _| m != model);
        if force {
            state.force_once.insert(model.to_owned());
        }
        let result = self.reconcile_locked(&mut state).await;
        state.force_once.remove(model);
        result?;
        match self.registry.snapshot().get(model) {
            Some(entry) if entry.default_model().is_some() => Ok(()),
            Some(entry) => Err(ManageError::LoadFailed {
                model: model.to_owned(),
                reason: entry.failure_summary(),
            }),
            None => Err(ManageError::UnknownModel(model.to_owned())),
        }
    }

    /// Unloads every version of a model; in-flight requests finish on the versions they hold.
    pub async fn unload(&self, model: &str) -> Result<(), ManageError> {
        let mut state = self.state.lock().await;
        if !self.registry.snapshot().contains_key(model) {
            return Err(ManageError::UnknownModel(model.to_owned()));
        }
        state.unloaded.insert(model.to_owned());
        self.reconcile_locked(&mut state).await.map(|_| ())
    }

    /// Makes a loaded version the default at once (rollback), with no reload.
    pub async fn set_default(&self, model: &str, version: u64) -> Result<(), ManageError> {
        let mut state = self.state.lock().await;
        let current = self.registry.snapshot();
        let Some(entry) = current.get(model) else {
            return Err(ManageError::UnknownModel(model.to_owned()));
        };
        if entry
            .versions
            .get(&version)
            .and_then(|s| s.model.as_ref())
            .is_none()
        {
            return Err(ManageError::VersionNotLoaded {
                model: model.to_owned(),
                version,
            });
        }
        state.default_override.insert(model.to_owned(), version);
        let mut next = (*current).clone();
        if let Some(entry) = next.get_mut(model) {
            entry.default = Some(version);
        }
        tracing::info!(model, version, "default version set by an operator");
        self.install(next);
        Ok(())
    }

    async fn reconcile_locked(&self, state: &mut ManagerState) -> Result<Reconciled, ManageError> {
        let root = self.root.clone();
        let dirs = tokio::task::spawn_blocking(move || repository::scan(&root))
            .await
            .map_err(|e| ManageError::Repository(e.to_string()))??;
        let current = self.registry.snapshot();
        let mut next = ModelMap::new();
        let mut report = Reconciled::default();
        for dir in dirs {
            let name = dir.name.clone();
            let old = current.get(&name).cloned().unwrap_or_default();
            let entry = if state.unloaded.contains(&name) {
                unloaded_entry(old, &dir)
            } else {
                self.reconcile_model(state, dir, old, &mut report).await
            };
            next.insert(name, entry);
        }
        let names: HashSet<&String> = next.keys().collect();
        state.loaded.retain(|(m, _), _| names.contains(m));
        state.configs.retain(|m, _| names.contains(m));
        self.install(next);
        Ok(report)
    }

    async fn reconcile_model(
        &self,
        state: &mut ManagerState,
        dir: ModelDir,
        old: ModelEntry,
        report: &mut Reconciled,
    ) -> ModelEntry {
        let ModelDir {
            name,
            config,
            versions,
        } = dir;
        let config = match config {
            Ok(config) => config,
            Err(reason) => {
                return invalid_config_entry(old, &name, &versions, reason, &self.metrics)
            }
        };
        if state.configs.get(&name).is_some_and(|c| c != &config) {
            state.default_override.remove(&name);
        }
        state.configs.insert(name.clone(), config.clone());
        let pinned = state
            .default_override
            .get(&name)
            .copied()
            .or(config.default_version);
        let on_disk: BTreeSet<u64> = versions.iter().map(|v| v.version).collect();
        let mut keep: BTreeSet<u64> = pinned.into_iter().collect();
        keep.extend(
            self.pins
                .as_ref()
                .map(|p| p.pinned(&name))
                .unwrap_or_default(),
        );
        let wanted = config.version_policy.select(&on_disk, &keep);
        let force = config.force || state.force_once.contains(&name);

        let mut slots: BTreeMap<u64, VersionSlot> = BTreeMap::new();
        // The guard compares a new version with the default as it stands when the version loads.
        let mut baseline = old.default_model().cloned();
        for v in versions {
            let key = (name.clone(), v.version);
            let old_slot = old.versions.get(&v.version).cloned().unwrap_or_default();
            let slot = if !wanted.contains(&v.version) {
                state.loaded.remove(&key);
                VersionSlot {
                    reason: Some("not selected by the version policy".into()),
                    ..Default::default()
                }
            } else {
                let fingerprint =
                    fingerprint(&v.model_path, &config.session, config.batching.as_ref());
                self.version_slot(
                    state,
                    &key,
                    &v.model_path,
                    fingerprint,
                    old_slot,
                    baseline.as_deref(),
                    force,
                    report,
                )
                .await
            };
            let slot = if force {
                VersionSlot {
                    incompatible: None,
                    ..slot
                }
            } else {
                slot
            };
            slots.insert(v.version, slot);
            if baseline.is_none() {
                baseline = default_of(&slots, pinned).and_then(|d| slots[&d].model.clone());
            }
        }
        let default = default_of(&slots, pinned);
        ModelEntry {
            versions: slots,
            default,
            reason: None,
            payload_log: Arc::new(config.payload_log),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn version_slot(
        &self,
        state: &mut ManagerState,
        key: &(String, u64),
        path: &Path,
        fingerprint: Option<Fingerprint>,
        old: VersionSlot,
        baseline: Option<&ModelVersion>,
        force: bool,
        report: &mut Reconciled,
    ) -> VersionSlot {
        let Some(fingerprint) = fingerprint else {
            state.loaded.remove(key);
            return VersionSlot {
                reason: Some(format!("{} does not exist", path.display())),
                ..Default::default()
            };
        };
        let unchanged = old.model.is_some() && state.loaded.get(key) == Some(&fingerprint);
        if unchanged || state.failed.get(key) == Some(&fingerprint) {
            return old;
        }
        if !self.settled(&fingerprint) {
            report.pending = true;
            let waiting = "waiting for the file to stop changing";
            return VersionSlot {
                reason: Some(waiting.into()),
                ..old
            };
        }
        let (model, version) = (key.0.clone(), key.1);
        match self
            .load_version(
                &model,
                version,
                path,
                &fingerprint.settings,
                fingerprint.batching.as_ref(),
            )
            .await
        {
            Ok(loaded) => {
                state.loaded.insert(key.clone(), fingerprint);
                state.failed.remove(key);
                let incompatible = baseline
                    .filter(|_| !force)
                    .and_then(|b| incompatibility(&b.signature, &loaded.signature));
                if let Some(why) = &incompatible {
                    tracing::warn!(model, version, reason = %why, "new version is incompatible with the default");
                }
                VersionSlot {
                    model: Some(Arc::new(loaded)),
                    reason: None,
                    incompatible,
                }
            }
            Err(reason) => {
                state.failed.insert(key.clone(), fingerprint);
                match old.model {
                    Some(previous) => VersionSlot {
                        reason: Some(format!(
                            "reload failed, the previous file keeps serving: {reason}"
                        )),
                        model: Some(previous),
                        incompatible: old.incompatible,
                    },
                    None => VersionSlot {
                        reason: Some(reason),
                        ..Default::default()
                    },
                }
            }
        }
    }

    fn settled(&self, fingerprint: &Fingerprint) -> bool {
        match fingerprint.modified.map(|m| m.elapsed()) {
            Some(Ok(age)) => age >= self.settle,
            // No time or a time in the future: waiting would not help.
            _ => true,
        }
    }

    async fn load_version(
        &self,
        model: &str,
        version: u64,
        path: &Path,
        settings: &SessionSettings,
        batching: Option<&BatchSettings>,
    ) -> Result<ModelVersion, String> {
        let started = Instant::now();
        let options = self.load_options.clone();
        let batching = batching.cloned();
        let (env, name, path_buf, settings) = (
            self.env.clone(),
            model.to_owned(),
            path.to_path_buf(),
            settings.clone(),
        );
        let result = tokio::task::spawn_blocking(move || {
            ModelVersion::load(
                &env,
                &name,
                version,
                &path_buf,
                &settings,
                batching.as_ref(),
                &options,
            )
        })
        .await
        .unwrap_or_else(|e| Err(format!("loading task failed: {e}")));
        let seconds = started.elapsed().as_secs_f64();
        match &result {
            Ok(_) => {
                tracing::info!(model, version, seconds, "model version loaded");
                self.metrics.observe_load(model, seconds);
            }
            Err(reason) => {
                tracing::error!(model, version, %reason, "model version failed to load");
                self.metrics.model_load_failed(model);
            }
        }
        result
    }

    fn install(&self, map: ModelMap) {
        let states = map.iter().flat_map(|(name, entry)| {
            entry
                .versions
                .iter()
                .map(move |(v, slot)| (name.as_str(), *v, slot.model.is_some()))
        });
        self.metrics.set_model_states(states);
        for (name, entry) in &map {
            for model in entry.versions.values().filter_map(|s| s.model.as_ref()) {
                let card = model.card.clone().unwrap_or_default();
                let field = |v: &Option<String>| v.clone().unwrap_or_default();
                self.metrics.set_model_info(
                    name,
                    model.version,
                    &field(&card.owner),
                    &field(&card.source),
                    &field(&card.sha256),
                );
            }
        }
        self.registry.install(map);
    }
}

fn fingerprint(
    path: &Path,
    settings: &SessionSettings,
    batching: Option<&BatchSettings>,
) -> Option<Fingerprint> {
    let meta = std::fs::metadata(path).ok().filter(|m| m.is_file())?;
    Some(Fingerprint {
        len: meta.len(),
        modified: meta.modified().ok(),
        settings: settings.clone(),
        batching: batching.cloned(),
    })
}

fn default_of(slots: &BTreeMap<u64, VersionSlot>, pinned: Option<u64>) -> Option<u64> {
    let loaded: Vec<Candidate> = slots
        .iter()
        .filter(|(_, s)| s.model.is_some())
        .map(|(v, s)| Candidate {
            version: *v,
            incompatible: s.incompatible.is_some(),
        })
        .collect();
    choose_default(&loaded, pinned)
}

/// An operator unloaded the model: every version is listed, none is loaded.
fn unloaded_entry(old: ModelEntry, dir: &ModelDir) -> ModelEntry {
    let versions = dir
        .versions
        .iter()
        .map(|v| {
            (
                v.version,
                VersionSlot {
                    reason: Some("unloaded by an operator".into()),
                    ..Default::default()
                },
            )
        })
        .collect();
    ModelEntry {
        versions,
        default: None,
        reason: Some("unloaded by an operator".into()),
        payload_log: old.payload_log,
    }
}

/// `model.toml` does not parse: loaded versions keep serving as they were; nothing new is loaded.
fn invalid_config_entry(
    mut old: ModelEntry,
    name: &str,
    versions: &[repository::VersionDir],
    reason: String,
    metrics: &Metrics,
) -> ModelEntry {
    tracing::error!(model = name, %reason, "invalid model.toml");
    let reason = format!("invalid model.toml: {reason}");
    for v in versions {
        let slot = old.versions.entry(v.version).or_default();
        if slot.model.is_none() && slot.reason.as_deref() != Some(reason.as_str()) {
            metrics.model_load_failed(name);
            slot.reason = Some(reason.clone());
        }
    }
    old.versions
        .retain(|v, _| versions.iter().any(|d| d.version == *v));
    old.reason = Some(reason);
    old
}
