//! The model's new entry after a reconcile: which loaded versions serve (with the schema guard's verdicts), which
//! default whose files are gone keeps serving from memory, and the retirement and release of the rest.

use super::*;
use crate::memory::Trimmer;

/// What [`RepositoryManager::assemble`] decided about a loaded version that serves.
pub(super) struct Serving<'a> {
    pub(super) name: &'a str,
    pub(super) version: u64,
    /// The schema guard's verdict against the default.
    pub(super) incompatible: Option<String>,
    /// Selected by the version policy (else it serves as the default only).
    pub(super) selected: bool,
    /// Newer than a default that is not pinned: an incompatibility here holds back an upgrade.
    pub(super) newer_than_default: bool,
}

/// Why a version on disk does not serve.
pub(super) fn unserved_reason(state: VersionState, reason: Option<String>) -> String {
    match state {
        VersionState::Ready | VersionState::Incompatible | VersionState::Loadable => {
            "not selected by the version policy".into()
        }
        _ => reason.unwrap_or_default(),
    }
}

/// Drops a version's sessions on a blocking thread, within a load slot, and has freed memory returned soon after.
pub(super) async fn release_now(slots: &Semaphore, trimmer: &Arc<Trimmer>, version: ModelVersion) {
    let _permit = slots.acquire().await;
    let (model, number) = (version.name.clone(), version.version);
    let _ = tokio::task::spawn_blocking(move || drop(version)).await;
    trimmer.soon();
    tracing::debug!(model, version = number, "retired model version released");
}

pub(super) const ORPHANED: &str =
    "files removed; serving from memory until another version of the model is ready";

impl RepositoryManager {
    /// The model's new entry: selected versions and the default serve; every other loaded version is retired,
    /// except a default whose files are gone, which serves from memory until something replaces it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn assemble(
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
            feedback: config.feedback.clone().map(Arc::new),
            operator_unloaded: false,
            lazy: false,
        }
    }

    /// The slot of a loaded version that serves: the guard's verdict (logged when it changed), and why it serves
    /// although the policy did not select it, or that its files are gone.
    pub(super) fn serving_slot(
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
            declared: None,
        }
    }

    /// Versions whose directories are gone: the default stays (from memory) until it is replaced, the others go.
    pub(super) fn keep_orphaned_default(
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
                    declared: None,
                };
                slots.insert(version, slot);
            } else {
                state.loaded.remove(&(name.to_owned(), version));
                self.retire(state, model);
            }
        }
    }

    /// Logs, once, that `version` serves from memory although its files were removed.
    pub(super) fn orphaned(&self, model: &str, version: u64, old: &ModelEntry) {
        if !old.versions.get(&version).is_some_and(|s| s.files_removed) {
            tracing::warn!(model, version, "{ORPHANED}");
        }
    }

    /// Every loaded version of `model` goes (operator unload, directory removed).
    pub(super) fn retire_all(&self, state: &mut ManagerState, model: &str, old: &ModelEntry) {
        state.loaded.retain(|(m, _), _| m != model);
        for slot in old.versions.values() {
            if let Some(version) = slot.model.clone() {
                self.retire(state, version);
            }
        }
    }

    /// Marks a version that leaves the registry for release once the new map is installed.
    pub(super) fn retire(&self, state: &mut ManagerState, version: Arc<ModelVersion>) {
        tracing::info!(model = %version.name, version = version.version, "model version retired");
        state.retired.push(version);
    }

    /// Releases retired versions: at once when nothing else holds them, else once their last request finished;
    /// either way on a blocking thread within the load slots, so freeing sessions never happens on a request's
    /// thread, and before the next load where it can, so the two do not add up.
    pub(super) async fn release(&self, retired: Vec<Arc<ModelVersion>>) {
        for version in retired {
            match Arc::try_unwrap(version) {
                Ok(version) => release_now(&self.load_slots, &self.trimmer, version).await,
                Err(version) => {
                    let slots = Arc::clone(&self.load_slots);
                    let trimmer = Arc::clone(&self.trimmer);
                    tokio::spawn(async move {
                        let mut version = version;
                        loop {
                            match Arc::try_unwrap(version) {
                                Ok(unique) => break release_now(&slots, &trimmer, unique).await,
                                Err(shared) => version = shared,
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    });
                }
            }
        }
    }
}
