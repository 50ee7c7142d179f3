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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ort::environment::Environment;
use tokio::sync::{Mutex, Semaphore};

use super::policy::{choose_default, incompatibility, Candidate, VersionState};
use super::LoadOverride;
use super::{ModelEntry, ModelMap, PinnedVersions, Registry, VersionSlot};
use crate::memory::{MemoryBudget, Reservation};
use crate::metrics::{Metrics, VersionGauges};
use crate::model::{LoadOptions, ModelVersion, VersionSettings};
use crate::repository::{self, ModelConfig, ModelDir, RepositoryError};

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

/// What a version's load depends on: the file (size, modification time) and the model's settings.
#[derive(Debug, Clone, PartialEq)]
struct Fingerprint {
    len: u64,
    modified: Option<SystemTime>,
    settings: VersionSettings,
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
    /// Fingerprint of the last failed attempt, not retried until the file or settings change.
    failed: HashMap<Key, Fingerprint>,
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

/// What [`RepositoryManager::assemble`] decided about a loaded version that serves.
struct Serving<'a> {
    name: &'a str,
    version: u64,
    /// The schema guard's verdict against the default.
    incompatible: Option<String>,
    /// Selected by the version policy (else it serves as the default only).
    selected: bool,
    /// Newer than a default that is not pinned: an incompatibility here holds back an upgrade.
    newer_than_default: bool,
}

/// Why a version on disk does not serve.
fn unserved_reason(state: VersionState, reason: Option<String>) -> String {
    match state {
        VersionState::Ready | VersionState::Incompatible | VersionState::Loadable => {
            "not selected by the version policy".into()
        }
        _ => reason.unwrap_or_default(),
    }
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
}

/// Why a load did not produce a version.
struct LoadFailure {
    reason: String,
    /// Tried again at the next reconcile (it was refused for memory); otherwise only once its files change.
    retry: bool,
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
        }
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
                self.retire_all(state, &name, &old);
                unloaded_entry(old, &dir)
            } else {
                self.reconcile_model(state, dir, old, &mut report).await
            };
            next.insert(name, entry);
        }
        // A model whose directory was removed is unloaded: an explicit intent.
        for (name, old) in current.iter().filter(|(n, _)| !next.contains_key(*n)) {
            tracing::info!(model = %name, "model directory removed; unloading the model");
            self.retire_all(state, name, old);
        }
        let names: HashSet<&String> = next.keys().collect();
        state.loaded.retain(|(m, _), _| names.contains(m));
        state.failed.retain(|(m, _), _| names.contains(m));
        state.configs.retain(|m, _| names.contains(m));
        state.overrides.retain(|m, _| names.contains(m));
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
        self.load_selected(state, &name, &mut work, &config, &keep, pinned, &old, force)
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
        let default = choose_default(&candidates, pinned)
            .or(old.default.filter(|_| old.default_model().is_some()));
        self.assemble(state, &name, work, &wanted, default, old, force, &config)
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
    #[allow(clippy::too_many_arguments)]
    async fn load_selected(
        &self,
        state: &mut ManagerState,
        name: &str,
        work: &mut BTreeMap<u64, Work>,
        config: &ModelConfig,
        keep: &BTreeSet<u64>,
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

    /// Where one version on disk stands before this reconcile loads anything.
    fn classify(
        &self,
        state: &ManagerState,
        model: &str,
        version: u64,
        path: PathBuf,
        settings: &VersionSettings,
        old: Option<&VersionSlot>,
    ) -> Work {
        let key = (model.to_owned(), version);
        let previous = old.and_then(|s| s.model.clone());
        let fingerprint = fingerprint(&path, settings);
        let mut work = Work {
            state: VersionState::Loadable,
            path,
            fingerprint: fingerprint.clone(),
            model: previous.clone(),
            reason: None,
        };
        let Some(fingerprint) = fingerprint else {
            work.state = VersionState::Missing;
            work.reason = Some(format!("{} does not exist", work.path.display()));
            return work;
        };
        let failed = state.failed.get(&key) == Some(&fingerprint);
        match (previous, state.loaded.get(&key) == Some(&fingerprint)) {
            (Some(_), true) => work.state = VersionState::Ready,
            (Some(_), false) if failed => {
                work.state = VersionState::Ready;
                work.reason = old.and_then(|s| s.reason.clone());
            }
            (Some(_), false) if !self.settled(&fingerprint) => {
                work.state = VersionState::Ready;
                work.reason = Some(WAITING.into());
            }
            (None, _) if failed => {
                work.state = VersionState::Failed;
                work.reason = old.and_then(|s| s.reason.clone());
            }
            (None, _) if !self.settled(&fingerprint) => {
                work.state = VersionState::Waiting;
                work.reason = Some(WAITING.into());
            }
            _ => {}
        }
        work
    }

    /// Loads `versions` of `model`, at most `load_concurrency` at a time, and records each outcome.
    async fn load_versions(
        &self,
        state: &mut ManagerState,
        model: &str,
        work: &mut BTreeMap<u64, Work>,
        versions: &[u64],
    ) {
        // Only loadable versions are asked for, and a loadable version has a file (a fingerprint).
        let loads = versions.iter().filter_map(|v| {
            let w = &work[v];
            let (fingerprint, path, version) = (w.fingerprint.clone()?, w.path.clone(), *v);
            Some(async move {
                let result = self
                    .load_version(model, version, &path, &fingerprint.settings)
                    .await;
                (version, fingerprint, result)
            })
        });
        for (version, fingerprint, result) in futures_util::future::join_all(loads).await {
            let key = (model.to_owned(), version);
            let Some(w) = work.get_mut(&version) else {
                continue;
            };
            match result {
                Ok(loaded) => {
                    state.loaded.insert(key.clone(), fingerprint);
                    state.failed.remove(&key);
                    if let Some(previous) = w.model.replace(Arc::new(loaded)) {
                        state.retired.push(previous);
                    }
                    w.state = VersionState::Ready;
                    w.reason = None;
                }
                Err(LoadFailure { reason, retry }) => {
                    if !retry {
                        state.failed.insert(key, fingerprint);
                    }
                    if w.model.is_some() {
                        w.state = VersionState::Ready;
                        w.reason = Some(format!(
                            "reload failed, the previous file keeps serving: {reason}"
                        ));
                    } else {
                        w.state = VersionState::Failed;
                        w.reason = Some(reason);
                    }
                }
            }
        }
    }

    /// The model's new entry: selected versions and the default serve; every other loaded version is retired,
    /// except a default whose files are gone, which serves from memory until something replaces it.
    #[allow(clippy::too_many_arguments)]
    fn assemble(
        &self,
        state: &mut ManagerState,
        name: &str,
        work: BTreeMap<u64, Work>,
        wanted: &BTreeSet<u64>,
        default: Option<u64>,
        old: ModelEntry,
        force: bool,
        config: &ModelConfig,
    ) -> ModelEntry {
        let default_model = default.and_then(|d| {
            work.get(&d)
                .and_then(|w| w.model.clone())
                .or_else(|| old.versions.get(&d)?.model.clone())
        });
        let verdict = |m: &ModelVersion| {
            let base = default_model.as_deref()?;
            if force || base.version == m.version {
                return None;
            }
            incompatibility(&base.signature, &m.signature)
        };
        let mut slots = BTreeMap::new();
        for (version, mut w) in work {
            let serves = wanted.contains(&version) || default == Some(version);
            let slot = match w.model.take() {
                Some(model) if serves => {
                    let serving = Serving {
                        name,
                        version,
                        incompatible: verdict(&model),
                        selected: wanted.contains(&version),
                        newer_than_default: config.default_version.is_none()
                            && default < Some(version),
                    };
                    self.serving_slot(serving, model, w, &old)
                }
                model => {
                    if let Some(model) = model {
                        state.loaded.remove(&(name.to_owned(), version));
                        self.retire(state, model);
                    }
                    VersionSlot {
                        reason: Some(unserved_reason(w.state, w.reason)),
                        ..Default::default()
                    }
                }
            };
            slots.insert(version, slot);
        }
        self.keep_orphaned_default(state, name, default, &old, &mut slots);
        ModelEntry {
            versions: slots,
            default,
            reason: None,
            payload_log: Arc::new(config.payload_log.clone()),
            operator_unloaded: false,
        }
    }

    /// The slot of a loaded version that serves: the guard's verdict (logged when it changed), and why it serves
    /// although the policy did not select it, or that its files are gone.
    fn serving_slot(
        &self,
        serving: Serving,
        model: Arc<ModelVersion>,
        w: Work,
        old: &ModelEntry,
    ) -> VersionSlot {
        let Serving { name, version, .. } = serving;
        let was = old
            .versions
            .get(&version)
            .and_then(|s| s.incompatible.as_ref());
        if let Some(why) = serving
            .incompatible
            .as_ref()
            .filter(|why| was != Some(*why))
        {
            // Worth a warning when the guard holds back a newer version from becoming the default; a pinned
            // default or an older version is the operator's choice.
            if serving.newer_than_default {
                tracing::warn!(model = name, version, reason = %why, "new version is incompatible with the default; the default stays");
            } else {
                tracing::info!(model = name, version, reason = %why, "version is incompatible with the default");
            }
        }
        let files_removed = w.state == VersionState::Missing;
        let reason = if files_removed {
            self.orphaned(name, version, old);
            Some(ORPHANED.into())
        } else {
            w.reason.or_else(|| {
                (!serving.selected).then(|| {
                    "kept serving as the default until a version the policy selects is ready".into()
                })
            })
        };
        VersionSlot {
            model: Some(model),
            reason,
            incompatible: serving.incompatible,
            files_removed,
        }
    }

    /// Versions whose directories are gone: the default stays (from memory) until it is replaced, the others go.
    fn keep_orphaned_default(
        &self,
        state: &mut ManagerState,
        name: &str,
        default: Option<u64>,
        old: &ModelEntry,
        slots: &mut BTreeMap<u64, VersionSlot>,
    ) {
        let gone: Vec<(u64, Arc<ModelVersion>)> = old
            .versions
            .iter()
            .filter(|(v, _)| !slots.contains_key(*v))
            .filter_map(|(v, slot)| Some((*v, slot.model.clone()?)))
            .collect();
        for (version, model) in gone {
            if default == Some(version) {
                self.orphaned(name, version, old);
                let slot = VersionSlot {
                    model: Some(model),
                    reason: Some(ORPHANED.into()),
                    incompatible: None,
                    files_removed: true,
                };
                slots.insert(version, slot);
            } else {
                state.loaded.remove(&(name.to_owned(), version));
                self.retire(state, model);
            }
        }
    }

    /// Logs, once, that `version` serves from memory although its files were removed.
    fn orphaned(&self, model: &str, version: u64, old: &ModelEntry) {
        if !old.versions.get(&version).is_some_and(|s| s.files_removed) {
            tracing::warn!(model, version, "{ORPHANED}");
        }
    }

    /// Every loaded version of `model` goes (operator unload, directory removed).
    fn retire_all(&self, state: &mut ManagerState, model: &str, old: &ModelEntry) {
        state.loaded.retain(|(m, _), _| m != model);
        for slot in old.versions.values() {
            if let Some(version) = slot.model.clone() {
                self.retire(state, version);
            }
        }
    }

    /// Marks a version that leaves the registry for release once the new map is installed.
    fn retire(&self, state: &mut ManagerState, version: Arc<ModelVersion>) {
        tracing::info!(model = %version.name, version = version.version, "model version retired");
        state.retired.push(version);
    }

    /// Releases retired versions: at once when nothing else holds them, else once their last request finished;
    /// either way on a blocking thread within the load slots, so freeing sessions never happens on a request's
    /// thread, and before the next load where it can, so the two do not add up.
    async fn release(&self, retired: Vec<Arc<ModelVersion>>) {
        for version in retired {
            match Arc::try_unwrap(version) {
                Ok(version) => release_now(&self.load_slots, version).await,
                Err(version) => {
                    let slots = Arc::clone(&self.load_slots);
                    tokio::spawn(async move {
                        let mut version = version;
                        loop {
                            match Arc::try_unwrap(version) {
                                Ok(unique) => break release_now(&slots, unique).await,
                                Err(shared) => version = shared,
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    });
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

    /// The memory a load of `path` is estimated to need, reserved from the budget when loads count; a refusal is
    /// tried again at the next reconcile.
    async fn reserve_load(
        &self,
        model: &str,
        version: u64,
        path: &Path,
        settings: &VersionSettings,
    ) -> Result<Reservation, LoadFailure> {
        let Some((budget, wait)) = &self.memory else {
            return Ok(Reservation::none());
        };
        let estimate = ModelVersion::estimate_load(path, settings);
        budget.reserve(estimate, *wait).await.map_err(|e| {
            let reason = format!(
                "not enough memory to load it beside what is resident: its sessions need about {} MiB, \
                 {} of the memory budget's {} MiB are reserved (requests in flight and loaded versions); \
                 tried again at the next scan",
                estimate >> 20,
                budget.used() >> 20,
                budget.capacity() >> 20
            );
            tracing::warn!(model, version, error = %e, %reason, "model version not loaded");
            self.metrics.models.load_failed(model);
            LoadFailure {
                reason,
                retry: true,
            }
        })
    }

    async fn load_version(
        &self,
        model: &str,
        version: u64,
        path: &Path,
        settings: &VersionSettings,
    ) -> Result<ModelVersion, LoadFailure> {
        let Ok(_permit) = self.load_slots.acquire().await else {
            return Err(LoadFailure {
                reason: "the server is shutting down".into(),
                retry: false,
            });
        };
        let memory = self.reserve_load(model, version, path, settings).await?;
        let started = Instant::now();
        let warmup = match &settings.warmup {
            w if !w.enabled => "off",
            w if w.request.is_some() => "request",
            _ => "signature",
        };
        let options = self.load_options.clone();
        let (env, name, path_buf, settings) = (
            self.env.clone(),
            model.to_owned(),
            path.to_path_buf(),
            settings.clone(),
        );
        let result = tokio::task::spawn_blocking(move || {
            ModelVersion::load(&env, &name, version, &path_buf, &settings, &options)
        })
        .await
        .unwrap_or_else(|e| Err(format!("loading task failed: {e}")))
        .map(|loaded| loaded.hold(memory));
        let seconds = started.elapsed().as_secs_f64();
        match &result {
            Ok(_) => {
                tracing::info!(model, version, seconds, warmup, "model version loaded");
                self.metrics.models.observe_load(model, seconds);
            }
            Err(reason) => {
                tracing::error!(model, version, %reason, "model version failed to load");
                self.metrics.models.load_failed(model);
            }
        }
        result.map_err(|reason| LoadFailure {
            reason,
            retry: false,
        })
    }

    fn install(&self, map: ModelMap) {
        let states = map.iter().flat_map(|(name, entry)| {
            entry.versions.iter().map(move |(v, slot)| VersionGauges {
                model: name.as_str(),
                version: *v,
                ready: slot.model.is_some(),
                files_removed: slot.files_removed,
            })
        });
        self.metrics.set_model_states(states);
        for (name, entry) in &map {
            for model in entry.versions.values().filter_map(|s| s.model.as_ref()) {
                let card = model.card.clone().unwrap_or_default();
                let field = |v: &Option<String>| v.clone().unwrap_or_default();
                self.metrics.models.set_info(
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

const WAITING: &str = "waiting for the file to stop changing";
const ORPHANED: &str =
    "files removed; serving from memory until another version of the model is ready";

/// Drops a version's sessions on a blocking thread, within a load slot.
async fn release_now(slots: &Semaphore, version: ModelVersion) {
    let _permit = slots.acquire().await;
    let (model, number) = (version.name.clone(), version.version);
    let _ = tokio::task::spawn_blocking(move || {
        drop(version);
        crate::memory::trim();
    })
    .await;
    tracing::debug!(model, version = number, "retired model version released");
}

fn fingerprint(path: &Path, settings: &VersionSettings) -> Option<Fingerprint> {
    let meta = std::fs::metadata(path).ok().filter(|m| m.is_file())?;
    Some(Fingerprint {
        len: meta.len(),
        modified: meta.modified().ok(),
        settings: settings.clone(),
    })
}

fn states(work: &BTreeMap<u64, Work>) -> BTreeMap<u64, VersionState> {
    work.iter().map(|(v, w)| (*v, w.state)).collect()
}

/// Marks loaded versions incompatible with `baseline` (none when forced, or without a baseline yet).
fn judge(work: &mut BTreeMap<u64, Work>, baseline: Option<&ModelVersion>, force: bool) {
    for w in work.values_mut() {
        let (Some(model), Some(base)) = (&w.model, baseline) else {
            continue;
        };
        if !matches!(w.state, VersionState::Ready | VersionState::Incompatible) {
            continue;
        }
        let incompatible = !force
            && base.version != model.version
            && incompatibility(&base.signature, &model.signature).is_some();
        w.state = if incompatible {
            VersionState::Incompatible
        } else {
            VersionState::Ready
        };
    }
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
        operator_unloaded: true,
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
#[path = "manager_tests.rs"]
mod tests;
