//! [`RepositoryManager`]: the one writer of the registry. It brings the live map in line with the repository on
//! disk (start-up, file changes, polling) and carries out management calls (load, unload, default version).
//!
//! Every change runs under one async mutex, so reconciles and management calls never interleave; request lookups
//! never take it. A model never goes dark because of its files: the version policy chooses among versions that
//! load (a corrupt, half-written or failing version is reported and skipped), a version leaving the selection
//! serves until its successor is ready, and the default keeps serving from memory when its files are removed and
//! nothing can replace it. Only removing the model's directory, or an operator's unload, takes a model away.
//!
//! Loads (with their warmup) and the release of retired versions run on blocking threads, at most
//! `models.load_concurrency` at a time. A version whose file did not change is never reloaded; a file that failed
//! is not retried until it changes (or an operator asks); a file still being written (modified less than
//! `settle` ago) is left alone until it is stable.

mod assemble;
mod load;
mod residency;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ort::environment::Environment;
use tokio::sync::{Mutex, Semaphore};

use super::policy::{choose_default, incompatibility, Candidate, VersionState};
use super::LoadOverride;
use super::{ModelEntry, ModelMap, PinnedVersions, Registry, VersionSlot};
use crate::config::LoadMode;
use crate::memory::{MemoryBudget, Reservation};
use crate::metrics::{LoadCause, Metrics, VersionGauges};
use crate::model::{LoadOptions, ModelVersion, VersionSettings};
use crate::repository::{self, ModelConfig, ModelDir, RepositoryError};

use self::load::{judge, Fingerprint, WAITING};
pub use self::residency::Residency;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ManageError {
    // Worded as Triton words them: its clients and scripts match on "Request for unknown model" and "failed to
    // load".
    #[error("Request for unknown model: '{0}' is not found")]
    UnknownModel(String),
    #[error("failed to load '{0}': there is no such model in the repository")]
    NotInRepository(String),
    #[error("failed to load '{model}': {reason}")]
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

/// The outcome of one reconcile.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reconciled {
    /// Some file was still being written: reconcile again once it has settled.
    pub pending: bool,
}

type Key = (String, u64);

#[derive(Default)]
struct ManagerState {
    /// Fingerprint of the file each loaded version came from.
    loaded: HashMap<Key, Fingerprint>,
    /// Fingerprint of the last failed attempt, not retried until the file or settings change, and why it failed.
    failed: HashMap<Key, (Fingerprint, String)>,
    /// The last `model.toml` applied per model; a change clears operator overrides of the default.
    configs: HashMap<String, ModelConfig>,
    /// Models an operator unloaded: left unloaded until an operator loads them again.
    unloaded: HashSet<String>,
    /// Default versions set by a management call (rollback), until the model's `model.toml` changes.
    default_override: HashMap<String, u64>,
    /// Models whose next load skips the schema guard (the load call's `force`).
    force_once: HashSet<String>,
    /// Configuration overrides of the last load call per model (Triton's `parameters.config`).
    overrides: HashMap<String, LoadOverride>,
    /// Versions that left the map in this change, released once the new map is installed.
    retired: Vec<Arc<ModelVersion>>,
    /// Versions of lazy models requested since they were last unloaded, with when (Unix ms): resident like eager
    /// ones until evicted.
    demanded: HashMap<Key, u64>,
    /// Versions of lazy models evicted (least recently used), until they are requested again.
    evicted: HashSet<Key>,
    /// Signatures read from lazy versions' files, by the fingerprint they were read at.
    declared: HashMap<Key, (Fingerprint, Arc<crate::model::Signature>)>,
    /// What the loads of the change under way are counted as.
    cause: LoadCause,
}

/// One version on disk while a model is reconciled.
struct Work {
    state: VersionState,
    path: PathBuf,
    fingerprint: Option<Fingerprint>,
    /// The loaded version: unchanged, freshly loaded, or the previous load after a failed reload.
    model: Option<Arc<ModelVersion>>,
    reason: Option<String>,
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
    /// Loads and releases running at once (`models.load_concurrency`).
    load_slots: Arc<Semaphore>,
    /// The budget a load reserves its estimated memory from, when loads count (`memory::plan`).
    memory: Option<(MemoryBudget, Duration)>,
    /// When models load (`models.default_load`) and what may be resident (`models.max_loaded_models`,
    /// `models.max_loaded_bytes`).
    residency: Residency,
    /// Returns the memory of released versions to the system, once per burst of releases.
    trimmer: Arc<crate::memory::Trimmer>,
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
            load_slots: Arc::new(Semaphore::new(1)),
            memory: None,
            residency: Residency::default(),
            trimmer: Arc::default(),
        }
    }

    /// Models without a `load` in `model.toml` load as `default_load`; the caps on what is resident are kept by
    /// evicting lazy versions, least recently used first.
    pub fn with_residency(mut self, residency: Residency) -> Self {
        self.residency = residency;
        self
    }

    /// Makes each load reserve its estimated memory from `budget` (waiting at most `wait`) and hold it while the
    /// version is loaded; a load that does not fit fails, and is tried again at the next reconcile.
    /// `None`: loads are not counted.
    pub fn with_memory(
        mut self,
        budget: Option<MemoryBudget>,
        wait: Duration,
    ) -> RepositoryManager {
        self.memory = budget.map(|b| (b, wait));
        self
    }

    /// Sets the server-wide load options.
    pub fn with_load_options(mut self, options: LoadOptions) -> RepositoryManager {
        self.load_options = options;
        self
    }

    /// Runs at most `n` loads (and releases of retired versions) at once.
    pub fn with_load_concurrency(mut self, n: usize) -> RepositoryManager {
        self.load_slots = Arc::new(Semaphore::new(n.max(1)));
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
        state.cause = if self.registry.is_ready() {
            LoadCause::Change
        } else {
            LoadCause::Startup
        };
        self.reconcile_locked(&mut state).await
    }

    /// Loads (or reloads) a model now, retrying files that failed before; `force` skips the schema guard once.
    /// `config` overrides part of its `model.toml` until the next load call (which sets another or none).
    pub async fn load(
        &self,
        model: &str,
        force: bool,
        config: Option<LoadOverride>,
    ) -> Result<(), ManageError> {
        let mut state = self.state.lock().await;
        let root = self.root.clone();
        let on_disk = tokio::task::spawn_blocking(move || repository::scan(&root))
            .await
            .map_err(|e| ManageError::Repository(e.to_string()))??;
        if !on_disk.iter().any(|d| d.name == model) {
            return Err(ManageError::NotInRepository(model.to_owned()));
        }
        state.unloaded.remove(model);
        state.failed.retain(|(m, _), _| m != model);
        let overridden = config.is_some();
        match config {
            Some(config) => state.overrides.insert(model.to_owned(), config),
            None => state.overrides.remove(model),
        };
        if force {
            state.force_once.insert(model.to_owned());
        }
        // A load call makes a lazy model's default version resident, as its first request would.
        if state.configs.get(model).is_some_and(|c| self.is_lazy(c)) {
            self.demand_default(&mut state, model)
                .map_err(|reason| ManageError::LoadFailed {
                    model: model.to_owned(),
                    reason,
                })?;
        }
        state.cause = LoadCause::LoadCall;
        let result = self.reconcile_locked(&mut state).await;
        state.force_once.remove(model);
        result?;
        if overridden && state.failed.keys().any(|(m, _)| m == model) {
            // The versions that served keep serving as they were: the override goes, and nothing is reloaded.
            let reason = self
                .registry
                .snapshot()
                .get(model)
                .map(ModelEntry::failure_summary)
                .unwrap_or_default();
            state.overrides.remove(model);
            state.failed.retain(|(m, _), _| m != model);
            self.reconcile_locked(&mut state).await?;
            return Err(ManageError::LoadFailed {
                model: model.to_owned(),
                reason,
            });
        }
        match self.registry.snapshot().get(model) {
            Some(entry) if entry.default_model().is_some() => Ok(()),
            Some(entry) => Err(ManageError::LoadFailed {
                model: model.to_owned(),
                reason: entry.failure_summary(),
            }),
            None => Err(ManageError::NotInRepository(model.to_owned())),
        }
    }

    /// Unloads every version of a model; in-flight requests finish on the versions they hold.
    pub async fn unload(&self, model: &str) -> Result<(), ManageError> {
        let mut state = self.state.lock().await;
        if !self.registry.snapshot().contains_key(model) {
            return Err(ManageError::UnknownModel(model.to_owned()));
        }
        state.unloaded.insert(model.to_owned());
        state.demanded.retain(|(m, _), _| m != model);
        self.reconcile_locked(&mut state).await.map(|_| ())
    }

    /// Makes a loaded version the default at once (rollback), with no reload of anything unchanged.
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
        drop(current);
        state.default_override.insert(model.to_owned(), version);
        tracing::info!(model, version, "default version set by an operator");
        // A reconcile with the override as the pinned default: nothing unchanged is reloaded, and the schema guard's
        // verdicts are recomputed against the new default.
        self.reconcile_locked(&mut state).await.map(|_| ())
    }

    async fn reconcile_locked(&self, state: &mut ManagerState) -> Result<Reconciled, ManageError> {
        self.reconcile_scope(state, None).await
    }

    /// Reconciles the models named in `only` (their directories alone are read; the rest of the map stays as it
    /// is), or the whole repository.
    async fn reconcile_scope(
        &self,
        state: &mut ManagerState,
        only: Option<BTreeSet<String>>,
    ) -> Result<Reconciled, ManageError> {
        let root = self.root.clone();
        let current = self.registry.snapshot();
        let (dirs, mut next) = match &only {
            None => {
                let dirs = tokio::task::spawn_blocking(move || repository::scan(&root))
                    .await
                    .map_err(|e| ManageError::Repository(e.to_string()))??;
                (dirs, ModelMap::new())
            }
            Some(names) => {
                let names = names.clone();
                let dirs = tokio::task::spawn_blocking(move || {
                    repository::scan_models(&root, names.iter().map(String::as_str))
                })
                .await
                .map_err(|e| ManageError::Repository(e.to_string()))?;
                let mut next = (*current).clone();
                next.retain(|name, _| !only.as_ref().is_some_and(|o| o.contains(name)));
                (dirs, next)
            }
        };
        let mut report = Reconciled::default();
        for dir in dirs {
            let name = dir.name.clone();
            let old = current.get(&name).cloned().unwrap_or_default();
            let entry = if state.unloaded.contains(&name) {
                self.retire_all(state, &name, &old);
                unloaded_entry(old, &dir)
            } else {
                self.reconcile_model(state, dir, old, &mut report).await
            };
            next.insert(name, entry);
        }
        // A model whose directory was removed is unloaded: an explicit intent.
        for (name, old) in current.iter().filter(|(n, _)| !next.contains_key(*n)) {
            state.demanded.retain(|(m, _), _| m != name);
            tracing::info!(model = %name, "model directory removed; unloading the model");
            self.retire_all(state, name, old);
        }
        let names: HashSet<&String> = next.keys().collect();
        state.loaded.retain(|(m, _), _| names.contains(m));
        state.failed.retain(|(m, _), _| names.contains(m));
        state.configs.retain(|m, _| names.contains(m));
        state.overrides.retain(|m, _| names.contains(m));
        state.declared.retain(|(m, _), _| names.contains(m));
        // A version asked for that did not load (failed, or its file still settling) holds no place under the caps;
        // its next request asks again.
        state.demanded.retain(|(m, v), _| {
            next.get(m)
                .and_then(|e| e.versions.get(v))
                .is_some_and(|s| s.model.is_some())
        });
        self.install(next);
        drop(current);
        self.release(std::mem::take(&mut state.retired)).await;
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
            Ok(config) => self.effective_config(state, &name, config),
            Err(reason) => {
                return invalid_config_entry(old, &name, &versions, reason, &self.metrics)
            }
        };
        let pinned = state
            .default_override
            .get(&name)
            .copied()
            .or(config.default_version);
        let mut keep: BTreeSet<u64> = pinned.into_iter().collect();
        keep.extend(
            self.pins
                .as_ref()
                .map(|p| p.pinned(&name))
                .unwrap_or_default(),
        );
        let force = config.force || state.force_once.contains(&name);
        let settings = config.version_settings();
        // A lazy model holds resident only the versions asked for and those routing refers to; with none, it is
        // listed, not loaded.
        let lazy = self.is_lazy(&config);
        let resident = lazy.then(|| self.resident_set(state, &name));
        if resident.as_ref().is_some_and(BTreeSet::is_empty) {
            self.retire_all(state, &name, &old);
            return self.lazy_entry(state, &name, versions, &config, pinned);
        }

        let mut work: BTreeMap<u64, Work> = versions
            .into_iter()
            .map(|v| {
                let slot = old.versions.get(&v.version);
                let work = self.classify(state, &name, v.version, v.model_path, &settings, slot);
                report.pending |=
                    work.state == VersionState::Waiting || work.reason.as_deref() == Some(WAITING);
                (v.version, work)
            })
            .collect();
        if let Some(resident) = &resident {
            self.leave_unasked(state, &name, &mut work, resident);
        }
        self.load_selected(
            state,
            &name,
            &mut work,
            &config,
            &keep,
            resident.as_ref(),
            pinned,
            &old,
            force,
        )
        .await;
        let wanted = config.version_policy.select(&states(&work), &keep);
        let candidates: Vec<Candidate> = wanted
            .iter()
            .filter(|v| work[v].model.is_some())
            .map(|v| Candidate {
                version: *v,
                incompatible: work[v].state == VersionState::Incompatible,
            })
            .collect();
        // Successor before retirement: when nothing selected can be the default, the default that served stays.
        let mut default = choose_default(&candidates, pinned)
            .or(old.default.filter(|_| old.default_model().is_some()));
        if lazy {
            // The version a request without one loads, when it is not resident.
            let policy_default = pinned
                .filter(|p| wanted.contains(p))
                .or_else(|| wanted.iter().max().copied());
            if let Some(d) = policy_default.filter(|d| work[d].model.is_none()) {
                default = Some(d);
            }
        }
        // Versions of a lazy model that are not resident load on their next request.
        let on_demand: Vec<(u64, PathBuf)> = work
            .iter()
            .filter(|(v, w)| {
                lazy && w.model.is_none()
                    && (w.state == VersionState::Failed
                        || (w.state == VersionState::Loadable && wanted.contains(v)))
            })
            .map(|(v, w)| (*v, w.path.clone()))
            .collect();
        let mut entry = self.assemble(state, &name, work, &wanted, default, old, force, &config);
        for (version, path) in on_demand {
            let slot = self.lazy_slot(state, &name, version, &path, &settings);
            entry.versions.insert(version, slot);
        }
        entry.lazy = lazy;
        entry
    }

    /// The model's `model.toml` with the load call's override applied; a changed configuration drops a default set
    /// by a call.
    fn effective_config(
        &self,
        state: &mut ManagerState,
        name: &str,
        config: ModelConfig,
    ) -> ModelConfig {
        let config = match state.overrides.get(name) {
            Some(o) => o.apply(config),
            None => config,
        };
        if state.configs.get(name).is_some_and(|c| c != &config) {
            state.default_override.remove(name);
        }
        state.configs.insert(name.to_owned(), config.clone());
        config
    }

    /// Loads what the version policy selects until nothing selected is left to load (a failed load makes the
    /// policy pick again), judging each load with the schema guard: against the default that serves now, or, on a
    /// first load, against the pinned or newest version that loads.
    /// `only` (a lazy model's resident versions) limits what loads.
    #[allow(clippy::too_many_arguments)]
    async fn load_selected(
        &self,
        state: &mut ManagerState,
        name: &str,
        work: &mut BTreeMap<u64, Work>,
        config: &ModelConfig,
        keep: &BTreeSet<u64>,
        only: Option<&BTreeSet<u64>>,
        pinned: Option<u64>,
        old: &ModelEntry,
        force: bool,
    ) {
        let mut baseline = old.default_model().cloned();
        judge(work, baseline.as_deref(), force);
        loop {
            let wanted = config.version_policy.select(&states(work), keep);
            let to_load: Vec<u64> = wanted
                .iter()
                .copied()
                .filter(|v| work[v].state == VersionState::Loadable)
                .filter(|v| only.is_none_or(|o| o.contains(v)))
                .collect();
            if to_load.is_empty() {
                return;
            }
            self.load_versions(state, name, work, &to_load).await;
            if baseline.is_none() {
                baseline = pinned
                    .and_then(|p| work.get(&p)?.model.clone())
                    .or_else(|| work.values().rev().find_map(|w| w.model.clone()));
            }
            judge(work, baseline.as_deref(), force);
        }
    }

    fn install(&self, map: ModelMap) {
        let states = map.iter().flat_map(|(name, entry)| {
            entry.versions.iter().map(move |(v, slot)| VersionGauges {
                model: name.as_str(),
                version: *v,
                ready: slot.model.is_some(),
                files_removed: slot.files_removed,
                bytes: slot.model.as_ref().map_or(0, |m| m.resident_bytes as u64),
                card: slot.model.as_ref().map(|m| {
                    let card = m.card.as_ref();
                    let field = |f: fn(&crate::model::ModelCard) -> &Option<String>| {
                        card.and_then(|c| f(c).clone()).unwrap_or_default()
                    };
                    [
                        field(|c| &c.owner),
                        field(|c| &c.source),
                        field(|c| &c.sha256),
                    ]
                }),
            })
        });
        self.metrics.set_model_states(states);
        self.registry.install(map);
    }
}

fn states(work: &BTreeMap<u64, Work>) -> BTreeMap<u64, VersionState> {
    work.iter().map(|(v, w)| (*v, w.state)).collect()
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
        feedback: old.feedback,
        operator_unloaded: true,
        lazy: false,
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
            metrics.models.load_failed(name);
            slot.reason = Some(reason.clone());
        }
    }
    old.versions
        .retain(|v, _| versions.iter().any(|d| d.version == *v));
    old.reason = Some(reason);
    old
}

#[cfg(test)]
mod tests;
