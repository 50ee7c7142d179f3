//! Residency: lazy models, listed with the signatures their files declare and loaded version by version on their
//! first request, and the caps on what is resident (`models.max_loaded_models`, `models.max_loaded_bytes`), kept by
//! unloading the least recently used versions that nothing pins.
//!
//! A version of a lazy model is resident while it is in `demanded`: a request ([`RepositoryManager::demand`],
//! through the registry's [`OnDemand`] hook) or a load call puts it there, and a reconcile of that model alone loads
//! it as it would an eager version. Requests that arrive during the load wait on the manager's lock and find it
//! resident. Eviction takes versions out of `demanded`; the reconcile that follows retires them, and they are
//! released once their requests in flight end. Eager models count towards the caps but never leave.

use super::*;
use crate::model::{declared, Signature};
use crate::registry::OnDemand;

const LAZY: &str = "lazy: loads on its first request";
const EVICTED: &str =
    "evicted (least recently used, models.max_loaded_models or models.max_loaded_bytes); loads on its next request";

/// What the caps hold back.
#[derive(Debug, Clone, Copy, Default)]
pub struct Residency {
    /// When models without a `load` in `model.toml` load.
    pub default_load: LoadMode,
    /// Most models with a resident version (0: no cap).
    pub max_models: usize,
    /// Most estimated bytes of resident versions ([`ModelVersion::resident_bytes`]; 0: no cap).
    pub max_bytes: u64,
}

/// A resident version that may be evicted.
struct Candidate {
    key: Key,
    /// Its last inference, or when it was asked for if later (a version just loaded has served nothing yet).
    last_used: u64,
    bytes: u64,
}

impl RepositoryManager {
    /// Whether `config` makes its model lazy.
    pub(super) fn is_lazy(&self, config: &ModelConfig) -> bool {
        config.load.unwrap_or(self.residency.default_load) == LoadMode::Lazy
    }

    /// The entry of a lazy model with nothing resident: every version listed with its declared signature (or why
    /// it failed to load), none loaded; the default is the version a request without one would load.
    pub(super) fn lazy_entry(
        &self,
        state: &mut ManagerState,
        name: &str,
        versions: Vec<repository::VersionDir>,
        config: &ModelConfig,
        pinned: Option<u64>,
    ) -> ModelEntry {
        let settings = config.version_settings();
        let mut slots = BTreeMap::new();
        for v in versions {
            let slot = self.lazy_slot(state, name, v.version, &v.model_path, &settings);
            slots.insert(v.version, slot);
        }
        let states: BTreeMap<u64, VersionState> = slots
            .iter()
            .filter(|(_, s)| s.declared.is_some())
            .map(|(v, _)| (*v, VersionState::Loadable))
            .collect();
        let keep: BTreeSet<u64> = pinned.into_iter().collect();
        let selected = config.version_policy.select(&states, &keep);
        let default = pinned
            .filter(|p| selected.contains(p))
            .or_else(|| selected.iter().max().copied());
        ModelEntry {
            versions: slots,
            default,
            reason: None,
            payload_log: Arc::new(config.payload_log.clone()),
            feedback: config.feedback.clone().map(Arc::new),
            operator_unloaded: false,
            lazy: true,
        }
    }

    /// The slot of a lazy version that is not resident: loads on its next request, with the signature its file
    /// declares; or why it cannot (its last load failed and the file has not changed since, or it cannot be read).
    pub(super) fn lazy_slot(
        &self,
        state: &mut ManagerState,
        name: &str,
        version: u64,
        path: &Path,
        settings: &VersionSettings,
    ) -> VersionSlot {
        let key = (name.to_owned(), version);
        let Some(fingerprint) = load::fingerprint(path, settings) else {
            return VersionSlot {
                reason: Some(format!("{} does not exist", path.display())),
                ..Default::default()
            };
        };
        if let Some((_, reason)) = state.failed.get(&key).filter(|(f, _)| *f == fingerprint) {
            return VersionSlot {
                reason: Some(format!("failed to load: {reason}")),
                ..Default::default()
            };
        }
        let why = if state.evicted.contains(&key) {
            EVICTED
        } else {
            LAZY
        };
        match self.declared(state, key, fingerprint, path) {
            Ok(signature) => VersionSlot {
                reason: Some(why.into()),
                declared: Some(signature),
                ..Default::default()
            },
            Err(reason) => VersionSlot {
                reason: Some(reason),
                ..Default::default()
            },
        }
    }

    /// The signature `path` declares, read once per file version.
    fn declared(
        &self,
        state: &mut ManagerState,
        key: Key,
        fingerprint: Fingerprint,
        path: &Path,
    ) -> Result<Arc<Signature>, String> {
        if let Some((seen, signature)) = state.declared.get(&key) {
            if *seen == fingerprint {
                return Ok(Arc::clone(signature));
            }
        }
        let signature = Arc::new(declared::read(path)?);
        state
            .declared
            .insert(key, (fingerprint, Arc::clone(&signature)));
        Ok(signature)
    }

    /// The versions of the lazy `name` to hold resident: those asked for and those routing refers to.
    pub(super) fn resident_set(&self, state: &ManagerState, name: &str) -> BTreeSet<u64> {
        let mut set: BTreeSet<u64> = state
            .demanded
            .keys()
            .filter(|(m, _)| m == name)
            .map(|(_, v)| *v)
            .collect();
        set.extend(
            self.pins
                .as_ref()
                .map(|p| p.pinned(name))
                .unwrap_or_default(),
        );
        set
    }

    /// A lazy model's loaded versions that are no longer asked for (evicted) leave; they load again on their next
    /// request.
    pub(super) fn leave_unasked(
        &self,
        state: &mut ManagerState,
        name: &str,
        work: &mut BTreeMap<u64, Work>,
        resident: &BTreeSet<u64>,
    ) {
        for (version, w) in work.iter_mut().filter(|(v, _)| !resident.contains(v)) {
            if let Some(model) = w.model.take() {
                state.loaded.remove(&(name.to_owned(), *version));
                self.retire(state, model);
            }
            if matches!(w.state, VersionState::Ready | VersionState::Incompatible) {
                w.state = VersionState::Loadable;
                w.reason = None;
            }
        }
    }

    /// Makes `version` of the lazy `model` resident (evicting to stay within the caps), or says why it is not.
    pub async fn demand(&self, model: &str, version: u64) -> Result<(), String> {
        let key = (model.to_owned(), version);
        loop {
            let mut state = self.state.lock().await;
            match self
                .registry
                .snapshot()
                .get(model)
                .map(|e| e.versions.get(&version))
            {
                // Loaded by a request that came first.
                Some(Some(slot)) if slot.model.is_some() => return Ok(()),
                Some(Some(_)) => {}
                Some(None) => return Err(format!("version {version} is not in the repository")),
                None => return Err("it is not in the repository".into()),
            }
            let mut scope = BTreeSet::from([model.to_owned()]);
            if !state.demanded.contains_key(&key) {
                scope.extend(self.evict_for(&mut state, &key)?);
                state.demanded.insert(key.clone(), now_ms());
                state.evicted.remove(&key);
            }
            state.cause = LoadCause::Lazy;
            let result = self.reconcile_scope(&mut state, Some(scope)).await;
            state.cause = LoadCause::Change;
            let report = result.map_err(|e| e.to_string())?;
            let map = self.registry.snapshot();
            let slot = map.get(model).and_then(|e| e.versions.get(&version));
            match slot {
                Some(slot) if slot.model.is_some() => return Ok(()),
                // Its file is still being written: wait for it to settle (the caller's timeout bounds this).
                Some(slot) if report.pending && slot.reason.as_deref() == Some(load::WAITING) => {
                    drop(state);
                    tokio::time::sleep(self.settle.max(Duration::from_millis(10))).await;
                }
                // Not resident (the reconcile took it out of `demanded`).
                Some(slot) => {
                    return Err(format!(
                        "version {version}: {}",
                        slot.reason.as_deref().unwrap_or("not loaded")
                    ));
                }
                None => return Err("it is not in the repository".into()),
            }
        }
    }

    /// A load call on the lazy `model`: makes its default version resident, within the caps. Returns the models
    /// whose versions were evicted for it.
    pub(super) fn demand_default(
        &self,
        state: &mut ManagerState,
        model: &str,
    ) -> Result<Vec<String>, String> {
        let Some(version) = self.registry.snapshot().get(model).and_then(|e| e.default) else {
            return Ok(Vec::new());
        };
        let key = (model.to_owned(), version);
        if state.demanded.contains_key(&key) {
            return Ok(Vec::new());
        }
        let evicted = self.evict_for(state, &key)?;
        state.demanded.insert(key.clone(), now_ms());
        state.evicted.remove(&key);
        Ok(evicted)
    }

    /// Before `key` loads: when a cap would be passed, takes the least recently used resident versions that
    /// nothing pins out of `demanded`, so the reconcile of their models retires them; returns those models. For the
    /// model cap whole models leave (every resident version of one), for the byte cap single versions. A load that
    /// cannot fit even so is refused, and nothing is evicted for it.
    fn evict_for(&self, state: &mut ManagerState, key: &Key) -> Result<Vec<String>, String> {
        let Residency {
            max_models,
            max_bytes,
            ..
        } = self.residency;
        if max_models == 0 && max_bytes == 0 {
            return Ok(Vec::new());
        }
        let map = self.registry.snapshot();
        let (model, version) = (key.0.as_str(), key.1);
        // Models with a loaded version (a version asked for is in `demanded` only while it is loaded).
        let models: HashSet<&str> = map
            .iter()
            .filter(|(_, e)| e.versions.values().any(|s| s.model.is_some()))
            .map(|(name, _)| name.as_str())
            .collect();
        let mut bytes: u64 = map
            .values()
            .flat_map(|e| e.versions.values())
            .filter_map(|s| s.model.as_ref())
            .map(|m| m.resident_bytes as u64)
            .sum();
        let needed = self.estimate(state, model, version);
        let candidates = self.candidates(state, &map, model);
        let models_needed = usize::from(!models.contains(model));

        // Whole models for the model cap: their versions all evictable, least recently used first.
        let mut by_model: BTreeMap<&str, (u64, Vec<&Candidate>)> = BTreeMap::new();
        for c in &candidates {
            let e = by_model.entry(c.key.0.as_str()).or_default();
            e.0 = e.0.max(c.last_used);
            e.1.push(c);
        }
        let resident_versions = |name: &str| {
            map.get(name).map_or(0, |e| {
                e.versions.values().filter(|s| s.model.is_some()).count()
            })
        };
        let mut leaving: Vec<&Candidate> = Vec::new();
        if max_models > 0 && models.len() + models_needed > max_models {
            let mut whole: Vec<(u64, &str)> = by_model
                .iter()
                .filter(|(name, (_, versions))| versions.len() == resident_versions(name))
                .map(|(name, (last, _))| (*last, *name))
                .collect();
            whole.sort();
            let over = models.len() + models_needed - max_models;
            if whole.len() < over {
                return Err(format!(
                    "{} models are resident and models.max_loaded_models is {max_models}; the others cannot be \
                     evicted (eager, or pinned by routing or default_version)",
                    models.len()
                ));
            }
            for (_, name) in whole.into_iter().take(over) {
                leaving.extend(by_model[name].1.iter().copied());
            }
        }
        bytes = bytes.saturating_sub(leaving.iter().map(|c| c.bytes).sum());
        if max_bytes > 0 && bytes + needed > max_bytes {
            let mut rest: Vec<&Candidate> = candidates
                .iter()
                .filter(|c| !leaving.iter().any(|l| l.key == c.key))
                .collect();
            rest.sort_by_key(|c| c.last_used);
            let evictable: u64 = rest.iter().map(|c| c.bytes).sum();
            if bytes + needed > max_bytes + evictable {
                return Err(format!(
                    "it needs about {} MiB; models.max_loaded_bytes is {} MiB and {} MiB are held by versions \
                     that cannot be evicted (eager, or pinned by routing or default_version)",
                    needed >> 20,
                    max_bytes >> 20,
                    bytes.saturating_sub(evictable) >> 20
                ));
            }
            for c in rest {
                if bytes + needed <= max_bytes {
                    break;
                }
                bytes -= c.bytes;
                leaving.push(c);
            }
        }
        let mut touched: Vec<String> = Vec::new();
        for c in leaving {
            let (name, v) = (&c.key.0, c.key.1);
            tracing::info!(model = %name, version = v, for_model = model, for_version = version,
                "lazy model version evicted (least recently used)");
            self.metrics.models.evicted(name);
            state.demanded.remove(&c.key);
            state.evicted.insert(c.key.clone());
            if !touched.contains(name) {
                touched.push(name.clone());
            }
        }
        Ok(touched)
    }

    /// Resident versions of lazy models, other than `model`'s, that nothing pins: not routing's, not a
    /// `default_version` or an operator's default.
    fn candidates(&self, state: &ManagerState, map: &ModelMap, model: &str) -> Vec<Candidate> {
        let mut out = Vec::new();
        for (name, entry) in map.iter().filter(|(n, e)| e.lazy && n.as_str() != model) {
            let config = state.configs.get(name);
            if config.is_none_or(|c| !self.is_lazy(c)) {
                continue;
            }
            let routed = self
                .pins
                .as_ref()
                .map(|p| p.pinned(name))
                .unwrap_or_default();
            let pinned = state
                .default_override
                .get(name)
                .copied()
                .or(config.and_then(|c| c.default_version));
            for (version, slot) in &entry.versions {
                let Some(loaded) = &slot.model else { continue };
                if routed.contains(version) || pinned == Some(*version) {
                    continue;
                }
                let key = (name.clone(), *version);
                let asked = state.demanded.get(&key).copied().unwrap_or(0);
                out.push(Candidate {
                    last_used: loaded.stats.read().last_inference.max(asked),
                    bytes: loaded.resident_bytes as u64,
                    key,
                });
            }
        }
        out
    }

    /// What loading `version` of `model` is estimated to hold, by its file and the model's settings.
    fn estimate(&self, state: &ManagerState, model: &str, version: u64) -> u64 {
        let path = self
            .root
            .join(model)
            .join(version.to_string())
            .join("model.onnx");
        let settings = state
            .configs
            .get(model)
            .map(ModelConfig::version_settings)
            .unwrap_or_default();
        ModelVersion::estimate_load(&path, &settings) as u64
    }
}

/// Now, in Unix milliseconds (the clock of Triton's `last_inference`).
pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl OnDemand for RepositoryManager {
    fn demand(
        &self,
        model: String,
        version: u64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move { RepositoryManager::demand(self, &model, version).await })
    }
}
