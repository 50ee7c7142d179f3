//! [`RoutingTable`]: the active routing policy of every model, read lock-free on each request.
//!
//! The routing file (`routing.file`, e.g. a mounted Kubernetes ConfigMap) is the source of truth and is re-read when
//! it changes; management calls can override a model's policy on this replica until the file next changes (the
//! latest change wins). Also owns automatic rollback: per-variant error windows that switch a failing canary off.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use serde::Serialize;

use super::policy::RoutingPolicy;
use crate::metrics::Metrics;
use crate::metrics::STABLE;
use crate::monitoring::feedback::{QualityObserver, SeriesQuality};
use crate::registry::PinnedVersions;

/// Where a model's active policy came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    File,
    Management,
}

#[derive(Debug, Clone, Serialize)]
pub struct ActiveRouting {
    pub policy: RoutingPolicy,
    pub source: Source,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RoutingError {
    #[error("invalid routing policy for model '{model}': {message}")]
    Invalid { model: String, message: String },
    #[error("model '{model}' has no variant '{variant}'")]
    UnknownVariant { model: String, variant: String },
    #[error("routing file {path}: {message}")]
    File { path: String, message: String },
    #[error("routing policy for model '{model}' refused: {reason}")]
    Refused { model: String, reason: String },
}

/// A change an operator asks for through the management API.
#[derive(Debug, Clone)]
pub enum RoutingChange {
    Replace(RoutingPolicy),
    SetWeight {
        variant: String,
        weight: f64,
    },
    /// The variant's version becomes stable and the variant is removed.
    Promote {
        variant: String,
    },
    /// Back to stable only: variants and shadow removed.
    Rollback,
}

#[derive(Default)]
struct Sources {
    /// The file's text when last applied, to notice changes.
    file_text: Option<String>,
    /// The file's text when it was last refused (an incompatible shadow), not staged again until it changes.
    refused_text: Option<String>,
    file: BTreeMap<String, RoutingPolicy>,
    overrides: BTreeMap<String, RoutingPolicy>,
}

/// An automatic rollback: `variant` of `model`, at `version`, was switched off.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollback {
    pub model: String,
    pub variant: String,
    pub version: u64,
    /// Why, as the log line says it.
    pub reason: String,
}

pub struct RoutingTable {
    /// Where automatic rollbacks are also sent (to be written to a routing file in a bucket); set once at start-up.
    rollbacks: std::sync::OnceLock<tokio::sync::mpsc::Sender<Rollback>>,
    /// The effective policy per model. `ArcSwap`: every request reads it, writers replace it whole.
    active: ArcSwap<BTreeMap<String, Arc<ActiveRouting>>>,
    file: Option<PathBuf>,
    /// Held by writers only (file reloads, management calls); a std mutex because no await happens under it.
    sources: Mutex<Sources>,
    /// Versions of staged (not yet active) policies: pinned so they load before traffic is sent to them.
    pending: Mutex<BTreeMap<String, BTreeSet<u64>>>,
    /// Error windows of variants under automatic rollback, by (model, variant, version): a variant pointed at another
    /// version starts a new window.
    windows: Mutex<HashMap<(String, String, u64), ErrorWindow>>,
    metrics: Arc<Metrics>,
}

impl RoutingTable {
    pub fn new(file: Option<PathBuf>, metrics: Arc<Metrics>) -> RoutingTable {
        RoutingTable {
            rollbacks: std::sync::OnceLock::new(),
            active: ArcSwap::from_pointee(BTreeMap::new()),
            file,
            sources: Mutex::new(Sources::default()),
            pending: Mutex::new(BTreeMap::new()),
            windows: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// Also sends every automatic rollback to `sink` (at most once per table; later calls are ignored).
    pub fn send_rollbacks_to(&self, sink: tokio::sync::mpsc::Sender<Rollback>) {
        let _ = self.rollbacks.set(sink);
    }

    pub fn get(&self, model: &str) -> Option<Arc<ActiveRouting>> {
        self.active.load().get(model).cloned()
    }

    /// The models with an active policy.
    pub fn models(&self) -> Vec<String> {
        self.active.load().keys().cloned().collect()
    }

    /// Re-reads the routing file and applies it at once; `Ok(true)` when it changed. An invalid file changes
    /// nothing. (At start-up; later changes go through [`RoutingTable::stage_file`] so versions load first.)
    pub fn reload_file(&self) -> Result<bool, RoutingError> {
        let staged = self.stage_file()?;
        let changed = staged.is_some();
        if let Some(staged) = staged {
            self.commit(staged);
        }
        Ok(changed)
    }

    /// Reads the routing file; when it changed, returns it staged: its versions are pinned (so a reconcile loads
    /// them) but requests keep the current policy until [`RoutingTable::commit`].
    pub fn stage_file(&self) -> Result<Option<Staged>, RoutingError> {
        let Some(path) = &self.file else {
            return Ok(None);
        };
        let file_error = |message: String| RoutingError::File {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
        {
            let sources = self.lock_sources();
            if sources.file_text.as_deref() == Some(text.as_str())
                || sources.refused_text.as_deref() == Some(text.as_str())
            {
                return Ok(None);
            }
        }
        let policies: BTreeMap<String, RoutingPolicy> =
            toml::from_str(&text).map_err(|e| file_error(e.message().to_owned()))?;
        for (model, policy) in &policies {
            policy
                .validate()
                .map_err(|message| file_error(format!("model '{model}': {message}")))?;
        }
        self.pin_pending(policies.iter().map(|(m, p)| (m.clone(), p.versions())));
        Ok(Some(Staged::File { text, policies }))
    }

    /// Computes a management change to one model's policy and stages it (see [`RoutingTable::stage_file`]).
    pub fn stage_change(&self, model: &str, change: RoutingChange) -> Result<Staged, RoutingError> {
        let current = {
            let sources = self.lock_sources();
            sources
                .overrides
                .get(model)
                .or_else(|| sources.file.get(model))
                .cloned()
                .unwrap_or_default()
        };
        let next = apply(model, current, change)?;
        next.validate().map_err(|message| RoutingError::Invalid {
            model: model.to_owned(),
            message,
        })?;
        self.pin_pending([(model.to_owned(), next.versions())]);
        Ok(Staged::Override {
            model: model.to_owned(),
            policy: next,
        })
    }

    /// Applies a management change at once (no staging), returning the new policy.
    pub fn change(
        &self,
        model: &str,
        change: RoutingChange,
    ) -> Result<RoutingPolicy, RoutingError> {
        let staged = self.stage_change(model, change)?;
        Ok(self.commit(staged))
    }

    /// Drops a staged change that was refused: its pins are released, and a refused file is not staged again until
    /// it changes.
    pub fn discard(&self, staged: Staged) {
        if let Staged::File { text, .. } = staged {
            self.lock_sources().refused_text = Some(text);
        }
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Makes a staged change the active policy and releases its pins. Returns the model's (or, for a file, the
    /// first model's) new policy.
    pub fn commit(&self, staged: Staged) -> RoutingPolicy {
        let mut sources = self.lock_sources();
        let result = match staged {
            Staged::File { text, policies } => {
                let first = policies.values().next().cloned().unwrap_or_default();
                // The file is the source of truth: a change to a model's section ends that model's management
                // override (an automatic rollback included); models whose section is unchanged keep theirs.
                let old = std::mem::replace(&mut sources.file, policies);
                let changed: Vec<String> = old
                    .keys()
                    .chain(sources.file.keys())
                    .filter(|m| old.get(*m) != sources.file.get(*m))
                    .cloned()
                    .collect();
                for model in &changed {
                    sources.overrides.remove(model);
                }
                sources.file_text = Some(text);
                tracing::info!(changed = ?changed, "routing file applied");
                first
            }
            Staged::Override { model, policy } => {
                tracing::info!(model, policy = ?policy, "routing policy changed by an operator");
                sources.overrides.insert(model, policy.clone());
                policy
            }
        };
        self.publish(&sources);
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        result
    }

    fn pin_pending(&self, pins: impl IntoIterator<Item = (String, BTreeSet<u64>)>) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        for (model, versions) in pins {
            pending.entry(model).or_default().extend(versions);
        }
    }

    fn lock_sources(&self) -> std::sync::MutexGuard<'_, Sources> {
        self.sources.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, sources: &Sources) {
        let mut active = BTreeMap::new();
        for (model, policy) in &sources.file {
            active.insert(
                model.clone(),
                Arc::new(ActiveRouting {
                    policy: policy.clone(),
                    source: Source::File,
                }),
            );
        }
        for (model, policy) in &sources.overrides {
            active.insert(
                model.clone(),
                Arc::new(ActiveRouting {
                    policy: policy.clone(),
                    source: Source::Management,
                }),
            );
        }
        self.active.store(Arc::new(active));
    }

    /// Records one routed request's outcome; may switch the variant off (automatic rollback).
    pub fn record(&self, model: &str, variant: &str, ok: bool) {
        if variant == STABLE {
            return;
        }
        let Some(active) = self.get(model) else {
            return;
        };
        let Some(rule) = &active.policy.auto_rollback else {
            return;
        };
        let Some(version) = active
            .policy
            .variants
            .iter()
            .find(|v| v.name == variant)
            .map(|v| v.version)
        else {
            return;
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let trip = {
            let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
            // Windows of versions a variant no longer serves are dropped as they are noticed.
            windows.retain(|(m, v, n), _| m != model || v != variant || *n == version);
            let window = windows
                .entry((model.to_owned(), variant.to_owned(), version))
                .or_default();
            window.add(now, rule.window_seconds, ok);
            let (requests, errors) = window.totals();
            let tripped = requests >= rule.min_requests.max(1)
                && errors as f64 / requests as f64 > rule.max_error_rate;
            if tripped {
                window.clear();
            }
            tripped.then_some((requests, errors))
        };
        if let Some((requests, errors)) = trip {
            let reason = format!(
                "error rate {errors}/{requests} over {} s, above max_error_rate {}",
                rule.window_seconds, rule.max_error_rate
            );
            if self.switch_off(model, variant, version, reason) {
                tracing::warn!(
                    model,
                    variant,
                    requests,
                    errors,
                    "automatic rollback: variant error rate over threshold, weight set to 0"
                );
            }
        }
    }

    /// Sets a variant's weight to 0 (an automatic rollback): counted, and sent to the rollback sink. False when the
    /// change could not be made.
    fn switch_off(&self, model: &str, variant: &str, version: u64, reason: String) -> bool {
        let change = RoutingChange::SetWeight {
            variant: variant.to_owned(),
            weight: 0.0,
        };
        if self.change(model, change).is_err() {
            return false;
        }
        self.metrics.routing.auto_rollback(model, variant);
        if let Some(sink) = self.rollbacks.get() {
            // Full (a burst of rollbacks): this replica's override holds regardless.
            let _ = sink.try_send(Rollback {
                model: model.to_owned(),
                variant: variant.to_owned(),
                version,
                reason,
            });
        }
        true
    }
}

impl QualityObserver for RoutingTable {
    /// The quality rule of automatic rollback: a variant with weight whose served accuracy trails stable's by more
    /// than the margin, both over at least `min_labels` labels, is switched off.
    fn observe(&self, model: &str, served: &[SeriesQuality]) {
        let Some(active) = self.get(model) else {
            return;
        };
        let Some(rule) = &active.policy.quality_rollback else {
            return;
        };
        let accuracy = |variant: &str, version: u64| {
            served
                .iter()
                .find(|s| s.variant == variant && s.version == version.to_string())
                .filter(|s| s.quality.labels as u64 >= rule.min_labels.max(1))
                .and_then(|s| s.quality.accuracy)
        };
        // Stable's series: the version the policy names, else whichever version served as stable.
        let stable = served
            .iter()
            .filter(|s| s.variant == STABLE)
            .filter(|s| {
                active
                    .policy
                    .stable
                    .is_none_or(|v| s.version == v.to_string())
            })
            .filter(|s| s.quality.labels as u64 >= rule.min_labels.max(1))
            .find_map(|s| s.quality.accuracy);
        let Some(stable) = stable else {
            return;
        };
        for v in active.policy.variants.iter().filter(|v| v.weight > 0.0) {
            let Some(variant) = accuracy(&v.name, v.version) else {
                continue;
            };
            if stable - variant > rule.max_accuracy_drop
                && self.switch_off(
                    model,
                    &v.name,
                    v.version,
                    format!(
                        "accuracy {variant:.4} against stable's {stable:.4}, more than max_accuracy_drop {} below",
                        rule.max_accuracy_drop
                    ),
                )
            {
                tracing::warn!(
                    model,
                    variant = %v.name,
                    accuracy = variant,
                    stable_accuracy = stable,
                    max_accuracy_drop = rule.max_accuracy_drop,
                    "automatic rollback: variant accuracy below stable's by more than the margin, weight set to 0"
                );
            }
        }
    }
}

impl PinnedVersions for RoutingTable {
    /// The active policy's versions and those of any staged change.
    fn pinned(&self, model: &str) -> BTreeSet<u64> {
        let mut versions = self
            .get(model)
            .map(|a| a.policy.versions())
            .unwrap_or_default();
        let pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        versions.extend(pending.get(model).into_iter().flatten());
        versions
    }
}

/// A routing change that has been validated but is not active yet.
#[derive(Debug)]
pub enum Staged {
    File {
        text: String,
        policies: BTreeMap<String, RoutingPolicy>,
    },
    Override {
        model: String,
        policy: RoutingPolicy,
    },
}

fn apply(
    model: &str,
    mut policy: RoutingPolicy,
    change: RoutingChange,
) -> Result<RoutingPolicy, RoutingError> {
    let unknown = |variant: &str| RoutingError::UnknownVariant {
        model: model.to_owned(),
        variant: variant.to_owned(),
    };
    match change {
        RoutingChange::Replace(new) => return Ok(new),
        RoutingChange::SetWeight { variant, weight } => {
            let v = policy
                .variants
                .iter_mut()
                .find(|v| v.name == variant)
                .ok_or_else(|| unknown(&variant))?;
            v.weight = weight;
        }
        RoutingChange::Promote { variant } => {
            let index = policy
                .variants
                .iter()
                .position(|v| v.name == variant)
                .ok_or_else(|| unknown(&variant))?;
            let promoted = policy.variants.remove(index);
            policy.stable = Some(promoted.version);
        }
        RoutingChange::Rollback => {
            policy.variants.clear();
            policy.shadow = None;
        }
    }
    Ok(policy)
}

/// Requests and errors per second over a sliding window.
#[derive(Debug, Default)]
struct ErrorWindow {
    /// (unix second, requests, errors), oldest first.
    seconds: VecDeque<(u64, u64, u64)>,
}

impl ErrorWindow {
    fn add(&mut self, now: u64, window: u64, ok: bool) {
        while self
            .seconds
            .front()
            .is_some_and(|(s, _, _)| s + window <= now)
        {
            self.seconds.pop_front();
        }
        match self.seconds.back_mut() {
            Some((s, requests, errors)) if *s == now => {
                *requests += 1;
                *errors += u64::from(!ok);
            }
            _ => self.seconds.push_back((now, 1, u64::from(!ok))),
        }
    }

    fn totals(&self) -> (u64, u64) {
        self.seconds
            .iter()
            .fold((0, 0), |(r, e), (_, req, err)| (r + req, e + err))
    }

    fn clear(&mut self) {
        self.seconds.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::policy::{AutoRollback, ShadowPolicy, Variant};

    fn table_with(text: &str) -> (tempfile::TempDir, RoutingTable) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("routing.toml");
        std::fs::write(&file, text).unwrap();
        let table = RoutingTable::new(Some(file), Arc::new(Metrics::new().unwrap()));
        (dir, table)
    }

    const FILE: &str = r#"
[iris]
stable = 1
key_header = "x-user"
variants = [{ name = "canary", version = 2, weight = 10.0 }]
shadow = { version = 3, sample_rate = 0.5 }
"#;

    #[test]
    fn the_file_is_read_and_changes_are_noticed() {
        let (dir, table) = table_with(FILE);
        assert!(table.reload_file().unwrap());
        assert!(!table.reload_file().unwrap(), "unchanged file");
        let active = table.get("iris").unwrap();
        assert_eq!(active.source, Source::File);
        assert_eq!(
            active.policy.variants[0],
            Variant {
                name: "canary".into(),
                version: 2,
                weight: 10.0
            }
        );
        assert_eq!(
            active.policy.shadow,
            Some(ShadowPolicy {
                version: 3,
                sample_rate: 0.5
            })
        );
        assert_eq!(table.pinned("iris"), [1, 2, 3].into_iter().collect());

        std::fs::write(
            dir.path().join("routing.toml"),
            "[iris]\nvariants = [{ name = \"canary\", version = 2, weight = 150.0 }]\n",
        )
        .unwrap();
        let err = table.reload_file().unwrap_err();
        assert!(
            err.to_string().contains("more than 100")
                || err.to_string().contains("between 0 and 100"),
            "{err}"
        );
        assert_eq!(
            table.get("iris").unwrap().policy.stable,
            Some(1),
            "an invalid file changes nothing"
        );
    }

    #[test]
    fn management_changes_override_until_the_file_changes() {
        let (dir, table) = table_with(FILE);
        table.reload_file().unwrap();
        table
            .change(
                "iris",
                RoutingChange::SetWeight {
                    variant: "canary".into(),
                    weight: 20.0,
                },
            )
            .unwrap();
        assert_eq!(table.get("iris").unwrap().policy.variants[0].weight, 20.0);
        assert_eq!(table.get("iris").unwrap().source, Source::Management);
        let promoted = table
            .change(
                "iris",
                RoutingChange::Promote {
                    variant: "canary".into(),
                },
            )
            .unwrap();
        assert_eq!((promoted.stable, promoted.variants.len()), (Some(2), 0));
        assert!(matches!(
            table.change(
                "iris",
                RoutingChange::Promote {
                    variant: "nope".into()
                }
            ),
            Err(RoutingError::UnknownVariant { .. })
        ));
        let back = table.change("iris", RoutingChange::Rollback).unwrap();
        assert!(back.variants.is_empty() && back.shadow.is_none());

        // An edit to another model's section leaves this model's override alone.
        std::fs::write(
            dir.path().join("routing.toml"),
            format!("{FILE}\n[digits]\nstable = 1\n"),
        )
        .unwrap();
        assert!(table.reload_file().unwrap());
        let active = table.get("iris").unwrap();
        assert_eq!(
            (active.source, active.policy.variants.len()),
            (Source::Management, 0)
        );
        // An edit to its own section ends it.
        std::fs::write(
            dir.path().join("routing.toml"),
            format!("{}\n[digits]\nstable = 1\n", FILE.replace("10.0", "15.0")),
        )
        .unwrap();
        assert!(table.reload_file().unwrap());
        let active = table.get("iris").unwrap();
        assert_eq!(
            (active.source, active.policy.variants[0].weight),
            (Source::File, 15.0)
        );
    }

    #[test]
    fn automatic_rollback_switches_a_failing_variant_off() {
        let (_dir, table) = table_with(FILE);
        table.reload_file().unwrap();
        let mut policy = table.get("iris").unwrap().policy.clone();
        policy.auto_rollback = Some(AutoRollback {
            max_error_rate: 0.2,
            window_seconds: 60,
            min_requests: 10,
        });
        table
            .change("iris", RoutingChange::Replace(policy))
            .unwrap();
        for _ in 0..8 {
            table.record("iris", "canary", false);
        }
        assert_eq!(
            table.get("iris").unwrap().policy.variants[0].weight,
            10.0,
            "below min_requests: no decision"
        );
        for _ in 0..2 {
            table.record("iris", "canary", true);
        }
        assert_eq!(table.get("iris").unwrap().policy.variants[0].weight, 0.0);
    }

    #[test]
    fn a_variant_pointed_at_another_version_starts_a_new_error_window() {
        let (_dir, table) = table_with(FILE);
        table.reload_file().unwrap();
        let mut policy = table.get("iris").unwrap().policy.clone();
        policy.auto_rollback = Some(AutoRollback {
            max_error_rate: 0.5,
            window_seconds: 600,
            min_requests: 10,
        });
        table
            .change("iris", RoutingChange::Replace(policy.clone()))
            .unwrap();
        // Version 2 served well under the name `canary`.
        for _ in 0..30 {
            table.record("iris", "canary", true);
        }
        policy.variants[0].version = 3;
        table
            .change("iris", RoutingChange::Replace(policy))
            .unwrap();
        // Version 3 fails: its errors are not diluted by version 2's successes.
        for _ in 0..10 {
            table.record("iris", "canary", false);
        }
        let active = table.get("iris").unwrap();
        assert_eq!(
            (
                active.policy.variants[0].version,
                active.policy.variants[0].weight
            ),
            (3, 0.0)
        );
    }

    #[test]
    fn error_windows_slide() {
        let mut w = ErrorWindow::default();
        w.add(100, 10, false);
        w.add(100, 10, true);
        w.add(105, 10, true);
        assert_eq!(w.totals(), (3, 1));
        w.add(111, 10, true);
        assert_eq!(w.totals(), (2, 0));
    }
}
