//! Loading: where each version on disk stands (its fingerprint, whether its file settled, whether it failed
//! before), and the loads themselves, on blocking threads within the load slots and the memory budget.

use super::*;

/// What a version's load depends on: the file (size, modification time) and the model's settings.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Fingerprint {
    pub(super) len: u64,
    pub(super) modified: Option<SystemTime>,
    pub(super) settings: VersionSettings,
}

/// Why a load did not produce a version.
pub(super) struct LoadFailure {
    pub(super) reason: String,
    /// Tried again at the next reconcile (it was refused for memory); otherwise only once its files change.
    pub(super) retry: bool,
}

pub(super) fn fingerprint(path: &Path, settings: &VersionSettings) -> Option<Fingerprint> {
    let meta = std::fs::metadata(path).ok().filter(|m| m.is_file())?;
    Some(Fingerprint {
        len: meta.len(),
        modified: meta.modified().ok(),
        settings: settings.clone(),
    })
}

pub(super) const WAITING: &str = "waiting for the file to stop changing";

/// Marks loaded versions incompatible with `baseline` (none when forced, or without a baseline yet).
pub(super) fn judge(work: &mut BTreeMap<u64, Work>, baseline: Option<&ModelVersion>, force: bool) {
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

impl RepositoryManager {
    /// Where one version on disk stands before this reconcile loads anything.
    pub(super) fn classify(
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
        let failed = state
            .failed
            .get(&key)
            .filter(|(seen, _)| *seen == fingerprint)
            .map(|(_, reason)| reason.clone());
        let failed_reason = failed.clone();
        let failed = failed.is_some();
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
                work.reason = failed_reason;
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
    pub(super) async fn load_versions(
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
                    self.metrics.models.loaded(state.cause);
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
                        state.failed.insert(key, (fingerprint, reason.clone()));
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

    pub(super) fn settled(&self, fingerprint: &Fingerprint) -> bool {
        match fingerprint.modified.map(|m| m.elapsed()) {
            Some(Ok(age)) => age >= self.settle,
            // No time or a time in the future: waiting would not help.
            _ => true,
        }
    }

    /// The memory a load of `path` is estimated to need, reserved from the budget when loads count; a refusal is
    /// tried again at the next reconcile.
    pub(super) async fn reserve_load(
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

    pub(super) async fn load_version(
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
}
