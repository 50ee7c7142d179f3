//! Residency: lazy models, listed with the signatures their files declare and loaded on their first request, and
//! the cap on resident models (`models.max_loaded_models`), kept by unloading the least recently used lazy model
//! that nothing pins.
//!
//! A lazy model is resident while it is in `demanded`: a request ([`RepositoryManager::demand`], through the
//! registry's [`OnDemand`] hook) or a load call puts it there, and the next reconcile loads it as it would an eager
//! model. Requests that arrive during the load wait on the manager's lock and find it resident. Eviction takes a
//! model out of `demanded`; the reconcile that follows retires its versions, which are released once their
//! requests in flight end.

use super::*;
use crate::model::{declared, Signature};
use crate::registry::OnDemand;

const LAZY: &str = "lazy: loads on its first request";
const EVICTED: &str =
    "evicted (least recently used, models.max_loaded_models); loads on its next request";

impl RepositoryManager {
    /// The entry of a lazy model that is not resident: every version listed with its declared signature, none
    /// loaded; the default is the version a request without one would load.
    pub(super) fn lazy_entry(
        &self,
        state: &mut ManagerState,
        name: &str,
        versions: Vec<repository::VersionDir>,
        config: &ModelConfig,
        pinned: Option<u64>,
    ) -> ModelEntry {
        let why = if state.evicted.contains(name) {
            EVICTED
        } else {
            LAZY
        };
        let settings = config.version_settings();
        let mut slots = BTreeMap::new();
        for v in versions {
            let declared = self.declared(state, name, v.version, &v.model_path, &settings);
            let slot = match declared {
                Ok(signature) => VersionSlot {
                    reason: Some(why.into()),
                    declared: Some(signature),
                    ..Default::default()
                },
                Err(reason) => VersionSlot {
                    reason: Some(reason),
                    ..Default::default()
                },
            };
            slots.insert(v.version, slot);
        }
        let loadable: Vec<u64> = slots
            .iter()
            .filter(|(_, s)| s.declared.is_some())
            .map(|(v, _)| *v)
            .collect();
        let states: BTreeMap<u64, VersionState> = loadable
            .iter()
            .map(|v| (*v, VersionState::Loadable))
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
            operator_unloaded: false,
            lazy: default.is_some(),
        }
    }

    /// The signature `path` declares, read once per file version.
    fn declared(
        &self,
        state: &mut ManagerState,
        name: &str,
        version: u64,
        path: &Path,
        settings: &VersionSettings,
    ) -> Result<Arc<Signature>, String> {
        let Some(fingerprint) = load::fingerprint(path, settings) else {
            return Err(format!("{} does not exist", path.display()));
        };
        let key = (name.to_owned(), version);
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

    /// Makes the lazy `model` resident (evicting to stay within the cap), or says why it has no ready version.
    pub async fn demand(&self, model: &str) -> Result<(), String> {
        loop {
            let mut state = self.state.lock().await;
            let resident = self
                .registry
                .snapshot()
                .get(model)
                .map(|e| !e.lazy && e.default_model().is_some());
            match resident {
                // Loaded by a request that came first.
                Some(true) => return Ok(()),
                Some(false) => {}
                None => return Err("it is not in the repository".into()),
            }
            if !state.demanded.contains_key(model) {
                state.demanded.insert(model.to_owned(), now_ms());
                state.evicted.remove(model);
                self.evict_for(&mut state, model);
            }
            state.cause = LoadCause::Lazy;
            let result = self.reconcile_locked(&mut state).await;
            state.cause = LoadCause::Change;
            let report = result.map_err(|e| e.to_string())?;
            let map = self.registry.snapshot();
            match map.get(model) {
                Some(entry) if entry.default_model().is_some() => return Ok(()),
                // Its file is still being written: wait for it to settle (the caller's timeout bounds this).
                Some(entry)
                    if report.pending
                        && entry
                            .versions
                            .values()
                            .any(|s| s.reason.as_deref() == Some(load::WAITING)) =>
                {
                    drop(state);
                    tokio::time::sleep(self.settle.max(Duration::from_millis(10))).await;
                }
                Some(entry) => return Err(entry.failure_summary()),
                None => return Err("it is not in the repository".into()),
            }
        }
    }

    /// Before `model` loads: when the cap is reached, takes the least recently used resident lazy models that
    /// nothing pins (routing, `default_version`) out of `demanded`, so the reconcile retires them.
    fn evict_for(&self, state: &mut ManagerState, model: &str) {
        if self.max_loaded_models == 0 {
            return;
        }
        let map = self.registry.snapshot();
        // Resident, or on the way: loaded models and lazy ones asked for (a load may still wait for its file).
        let resident: HashSet<&str> = map
            .iter()
            .filter(|(_, e)| e.default_model().is_some())
            .map(|(name, _)| name.as_str())
            .chain(state.demanded.keys().map(String::as_str))
            .filter(|name| *name != model)
            .collect();
        let resident = resident.len();
        if resident < self.max_loaded_models {
            return;
        }
        // Only lazy models leave, and not those routing or a default_version pins.
        let pinned = |name: &str| {
            self.pins
                .as_ref()
                .is_some_and(|p| !p.pinned(name).is_empty())
                || state.configs.get(name).is_none_or(|c| {
                    c.default_version.is_some()
                        || c.load.unwrap_or(self.default_load) == LoadMode::Eager
                })
        };
        // Last used: its last inference, or when it was asked for (a model just loaded has served nothing yet).
        let mut candidates: Vec<(u64, String)> = state
            .demanded
            .iter()
            .filter(|(name, _)| name.as_str() != model && !pinned(name))
            .map(|(name, asked)| {
                let last_inference = map
                    .get(name)
                    .into_iter()
                    .flat_map(|entry| entry.versions.values())
                    .filter_map(|s| s.model.as_ref())
                    .map(|m| m.stats.read().last_inference)
                    .max()
                    .unwrap_or(0);
                (last_inference.max(*asked), name.clone())
            })
            .collect();
        candidates.sort();
        for (_, name) in candidates
            .into_iter()
            .take(resident + 1 - self.max_loaded_models)
        {
            tracing::info!(model = %name, for_model = model, "lazy model evicted (least recently used)");
            self.metrics.models.evicted(&name);
            state.demanded.remove(&name);
            state.evicted.insert(name);
        }
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
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move { RepositoryManager::demand(self, &model).await })
    }
}
