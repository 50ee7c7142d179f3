//! Outcome feedback: live model quality from ground truth that arrives after the answer.
//!
//! For a model whose `model.toml` has a `[feedback]` table, the core tells [`Feedback`] (an [`AnswerObserver`]) of each
//! answered request, and it keeps the prediction in a
//! bounded [`store`] under the request's V2 `id` (else its `x-request-id`), with its version and variant; the shadow
//! worker adds the shadow's prediction for a mirrored request. A truth posted later ([`Feedback::post`]) is scored
//! against them into sliding [`quality`] windows per model × version × variant, in two sets: `served` (what the
//! clients got) and `mirrored` (the mirrored requests only, primary and shadow side by side, so the comparison is
//! paired). Each post exports the windows' figures, judges the retraining rule ([`retrain`]) and hands the served
//! figures to a [`QualityObserver`] (routing's quality rollback). Knows nothing about HTTP.

pub mod prediction;
pub mod quality;
pub mod retrain;
mod scoring;
pub mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use self::prediction::{Label, Truth};
use self::quality::{Quality, Scored, Window};
use self::scoring::{score, scored_rows};
use self::store::{Dropped, Entry, Keys, Lookup, ModelId, SeriesId, Served, ShadowState, Store};
use crate::config::FeedbackSettings;
use crate::inference::{AnswerObserver, Inferred};
use crate::metrics::{LabelOutcome, Metrics, PredictionCounters, QualitySeries};
use crate::registry::Registry;
use crate::repository::FeedbackPolicy;
use crate::tensor::Tensor;

/// The variant label of a shadow's series.
pub const SHADOW: &str = "shadow";

/// Which requests a quality series covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Set {
    /// Every labelled request, scored on the prediction its client got.
    Served,
    /// Labelled requests that were mirrored to the shadow and answered by it: the primary's and the shadow's
    /// predictions of exactly the same requests.
    Mirrored,
}

impl Set {
    pub fn label(self) -> &'static str {
        match self {
            Set::Served => "served",
            Set::Mirrored => "mirrored",
        }
    }
}

/// One series: a model's version in a variant, in a set.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct SeriesKey {
    model: Arc<str>,
    version: u64,
    variant: String,
    set: Set,
}

struct Series {
    window: Window,
    /// Windows in a row judged past the retraining threshold.
    streak: u32,
    /// The per-class series exported last, to remove when they change.
    exported_classes: Vec<String>,
}

/// A series' quality, as the quality endpoint and the observer see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SeriesQuality {
    pub version: String,
    pub variant: String,
    pub set: Set,
    /// Labels ever scored in this series (the window holds the last `feedback.window` of them).
    pub labels_total: u64,
    #[serde(flatten)]
    pub quality: Quality,
}

/// Told the served quality of a model's versions after each post (routing's quality rollback).
pub trait QualityObserver: Send + Sync {
    fn observe(&self, model: &str, served: &[SeriesQuality]);
}

/// Why a post of truths failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum FeedbackError {
    #[error("model '{0}' has no [feedback] table in its model.toml: its predictions are not kept")]
    NotEnabled(String),
}

/// One record of a post: the request id and its truth.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TruthRecord {
    /// The request's V2 `id`, else the `x-request-id` it was answered with.
    pub id: String,
    /// The true class (classification) or value (regression); an array of one a row for a request of several rows.
    #[schema(value_type = Object)]
    pub truth: Value,
}

/// What became of a post's records.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct PostReply {
    pub accepted: usize,
    /// No prediction was kept under the id (never seen, or of another model).
    pub unknown: usize,
    /// The prediction left the store before its truth came (`feedback.max_age_s`, `feedback.max_pending`).
    pub late: usize,
    /// The id was labelled already.
    pub duplicate: usize,
    /// The truth does not fit the prediction (type, rows, class).
    pub invalid: usize,
    /// Every record not accepted, with why.
    pub errors: Vec<RecordError>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecordError {
    pub index: usize,
    pub id: String,
    pub error: String,
}

/// The quality of a model, per series.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelQuality {
    pub model: String,
    /// Predictions of the model waiting for their truth.
    pub pending: usize,
    pub window: usize,
    pub series: Vec<SeriesQuality>,
}

/// The feedback service: a clone is a reference count.
#[derive(Clone)]
pub struct Feedback(Arc<Inner>);

struct Inner {
    settings: FeedbackSettings,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    keys: Keys,
    state: Mutex<State>,
    series: Mutex<BTreeMap<SeriesKey, Series>>,
    retrain: retrain::Trigger,
    observer: OnceLock<Arc<dyn QualityObserver>>,
}

impl Feedback {
    pub fn new(
        settings: FeedbackSettings,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
    ) -> Feedback {
        Feedback(Arc::new(Inner {
            keys: Keys::default(),
            state: Mutex::new(State {
                store: Store::new(
                    settings.max_pending,
                    Duration::from_secs(settings.max_age_s),
                ),
                counters: Vec::new(),
            }),
            series: Mutex::default(),
            retrain: retrain::Trigger::new(&settings, Arc::clone(&metrics)),
            observer: OnceLock::new(),
            settings,
            registry,
            metrics,
        }))
    }

    /// Hands every post's served quality to `observer` too (set once; later calls are ignored).
    pub fn observe_with(&self, observer: Arc<dyn QualityObserver>) {
        let _ = self.0.observer.set(observer);
    }

    /// The model's feedback policy, when it has one.
    pub fn policy(&self, model: &str) -> Option<Arc<FeedbackPolicy>> {
        self.0.registry.feedback_policy(model)
    }

    /// The id feedback keeps a request's prediction under: its V2 `id`, else its `x-request-id`.
    pub fn request_key<'a>(id: Option<&'a str>, request_id: Option<&'a str>) -> Option<&'a str> {
        id.filter(|s| !s.is_empty())
            .or(request_id)
            .filter(|s| !s.is_empty())
    }

    /// The store's key of a model's request id.
    pub fn key(&self, model: &str, id: &str) -> u64 {
        self.0.keys.key(model, id)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps an answered request's prediction under `key` ([`Feedback::key`]). `mirrored`: the shadow layer is
    /// sending it to the shadow too.
    pub fn record(&self, policy: &FeedbackPolicy, key: u64, done: &Inferred, mirrored: bool) {
        let kept = match prediction::keep(policy, &done.outputs) {
            Ok(k) => k,
            Err(reason) => {
                tracing::debug!(model = %done.model.name, %reason, "prediction not kept for feedback");
                self.0.metrics.feedback.not_recorded(&done.model.name);
                return;
            }
        };
        let mut state = self.state();
        let (model, series) = state.series(done, &self.0.metrics);
        let State { store, counters } = &mut *state;
        let entry = Entry::new(series, kept, mirrored);
        store.insert(key, entry, |model, why| {
            counters[model.index()].dropped(why)
        });
        counters[model.index()].recorded.inc();
    }

    /// An answered request of a feedback model with neither a V2 id nor an `x-request-id`: nothing to key it by.
    fn unkeyed(&self, model: &str) {
        self.0.metrics.feedback.not_recorded(model);
    }

    /// The shadow's answer (or failure) for a mirrored request: pairs it with the primary's prediction, and
    /// scores both if the truth is in already.
    pub fn shadow_done(
        &self,
        model: &str,
        key: &str,
        shadow_version: u64,
        outputs: Option<&[Tensor]>,
    ) {
        let Some(policy) = self.policy(model) else {
            return;
        };
        let predicted = outputs.and_then(|o| prediction::extract(&policy, o).ok());
        let key = self.key(model, key);
        let labelled = {
            let mut state = self.state();
            let store = &mut state.store;
            let Some(entry) = store.get_mut(key) else {
                return;
            };
            let Some(mirrored) = entry.shadow.as_mut() else {
                return;
            };
            mirrored.answer = match predicted {
                Some(p) => ShadowState::Done(shadow_version, p),
                None => ShadowState::Failed,
            };
            if mirrored.truth.is_some() {
                store.take(key)
            } else {
                None
            }
        };
        if let Some((mut entry, served)) = labelled {
            let truth = entry
                .shadow
                .as_mut()
                .and_then(|s| s.truth.take())
                .unwrap_or_default();
            let mut rows = Vec::new();
            self.pair(&policy, model, &entry, &served, &truth, &mut rows);
            self.absorb(model, &policy, rows);
        }
    }

    /// Scores posted truths. Each record is accepted or counted as unknown, late, duplicate or invalid.
    pub fn post(&self, model: &str, records: &[TruthRecord]) -> Result<PostReply, FeedbackError> {
        let policy = self
            .policy(model)
            .ok_or_else(|| FeedbackError::NotEnabled(model.to_owned()))?;
        let mut reply = PostReply::default();
        let mut rows: Vec<(SeriesKey, Scored)> = Vec::new();
        let mut taken = Vec::new();
        let name: Arc<str> = Arc::from(model);
        {
            let mut state = self.state();
            let State { store, counters } = &mut *state;
            for (index, record) in records.iter().enumerate() {
                let key = self.key(model, &record.id);
                let outcome = match store.lookup(key) {
                    Lookup::Unknown => Err((LabelOutcome::Unknown, "no prediction is kept under this id".to_owned())),
                    Lookup::Late => Err((LabelOutcome::Late, "its prediction left the store before the truth came (feedback.max_age_s, feedback.max_pending)".to_owned())),
                    Lookup::Duplicate => Err((LabelOutcome::Duplicate, "this id was labelled already".to_owned())),
                    Lookup::Waiting(entry, origin) => {
                        match score(&policy, &entry.predicted(), &record.truth) {
                            Err(e) => Err((LabelOutcome::Invalid, e)),
                            Ok((truth, scored)) => {
                                let served = SeriesKey {
                                    model: Arc::clone(&name),
                                    version: origin.version,
                                    variant: origin.variant.to_owned(),
                                    set: Set::Served,
                                };
                                rows.extend(scored.into_iter().map(|s| (served.clone(), s)));
                                if let Some(mirrored) = entry.shadow.as_mut().filter(|s| s.answer == ShadowState::Pending) {
                                    // The shadow's answer pairs with it when it comes.
                                    mirrored.truth = Some(truth);
                                } else {
                                    taken.push((store.take(key), truth));
                                }
                                Ok(())
                            }
                        }
                    }
                };
                match outcome {
                    Ok(()) => reply.accepted += 1,
                    Err((kind, error)) => {
                        match kind {
                            LabelOutcome::Unknown => reply.unknown += 1,
                            LabelOutcome::Late => reply.late += 1,
                            LabelOutcome::Duplicate => reply.duplicate += 1,
                            LabelOutcome::Invalid | LabelOutcome::Accepted => reply.invalid += 1,
                        }
                        self.0.metrics.feedback.label(model, kind);
                        reply.errors.push(RecordError {
                            index,
                            id: record.id.clone(),
                            error,
                        });
                    }
                }
            }
            store.expire_now(|model, why| counters[model.index()].dropped(why));
        }
        self.0
            .metrics
            .feedback
            .labels(model, LabelOutcome::Accepted, reply.accepted);
        let mut paired = Vec::new();
        for (entry, truth) in taken {
            if let Some((entry, served)) = entry {
                self.pair(&policy, model, &entry, &served, &truth, &mut paired);
            }
        }
        rows.extend(paired);
        self.0.retrain.labels_accepted(model, reply.accepted);
        self.absorb(model, &policy, rows);
        Ok(reply)
    }

    /// The rows of the mirrored set for a labelled entry whose shadow answered.
    fn pair(
        &self,
        policy: &FeedbackPolicy,
        model: &str,
        entry: &Entry,
        served: &Served<Arc<str>>,
        truth: &[Truth],
        rows: &mut Vec<(SeriesKey, Scored)>,
    ) {
        let Some(ShadowState::Done(shadow_version, shadow)) =
            entry.shadow.as_ref().map(|s| &s.answer)
        else {
            return;
        };
        let model: Arc<str> = Arc::from(model);
        let key = |version, variant: &str| SeriesKey {
            model: Arc::clone(&model),
            version,
            variant: variant.to_owned(),
            set: Set::Mirrored,
        };
        let (Ok(primary), Ok(mirror)) = (
            scored_rows(policy, &entry.predicted(), truth),
            scored_rows(policy, shadow, truth),
        ) else {
            return;
        };
        let primary_key = key(served.version, &served.variant);
        rows.extend(primary.into_iter().map(|s| (primary_key.clone(), s)));
        let shadow_key = key(*shadow_version, SHADOW);
        rows.extend(mirror.into_iter().map(|s| (shadow_key.clone(), s)));
    }

    /// Adds scored rows to their windows, exports the touched series, judges the retraining rule and tells the
    /// observer.
    fn absorb(&self, model: &str, policy: &FeedbackPolicy, rows: Vec<(SeriesKey, Scored)>) {
        // Per-class figures cover the policy's classes, else the labels seen.
        let classes = policy_classes(policy);
        let known = self.known_versions(model);
        let mut served = Vec::new();
        let mut judged = Vec::new();
        {
            let mut series = self.0.series.lock().unwrap_or_else(PoisonError::into_inner);
            let mut touched = BTreeSet::new();
            for (key, row) in rows {
                let s = series.entry(key.clone()).or_insert_with(|| Series {
                    window: Window::new(self.0.settings.window),
                    streak: 0,
                    exported_classes: Vec::new(),
                });
                s.window.push(row);
                touched.insert(key);
            }
            // Series of versions no longer in the registry go, with their exported figures.
            series.retain(|k, s| {
                let keep = &*k.model != model || known.contains(&k.version);
                if !keep {
                    self.0
                        .metrics
                        .feedback
                        .forget(&series_labels(k), &s.exported_classes);
                }
                keep
            });
            for (key, s) in series.iter_mut().filter(|(k, _)| &*k.model == model) {
                let q = s.window.quality(&classes, self.0.settings.max_classes);
                if touched.contains(key) {
                    let labels = series_labels(key);
                    let names: Vec<String> = q.classes.iter().map(|c| c.class.clone()).collect();
                    let stale: Vec<String> = s
                        .exported_classes
                        .iter()
                        .filter(|c| !names.contains(c))
                        .cloned()
                        .collect();
                    self.0.metrics.feedback.forget_classes(&labels, &stale);
                    self.0.metrics.feedback.set(&labels, &q);
                    s.exported_classes = names;
                    if key.set == Set::Served {
                        if let Some(rule) = &policy.retrain {
                            if s.window.since_judged >= self.0.settings.window {
                                s.window.since_judged -= self.0.settings.window;
                                let value = q.get(rule.metric);
                                let past = value.is_some_and(|v| {
                                    if rule.metric.higher_is_better() {
                                        v < rule.threshold
                                    } else {
                                        v > rule.threshold
                                    }
                                });
                                s.streak = if past { s.streak + 1 } else { 0 };
                                if s.streak >= rule.sustained_windows {
                                    judged.push((
                                        key.version,
                                        key.variant.clone(),
                                        value,
                                        s.streak,
                                    ));
                                }
                            }
                        }
                    }
                }
                if key.set == Set::Served {
                    served.push(SeriesQuality {
                        version: key.version.to_string(),
                        variant: key.variant.clone(),
                        set: key.set,
                        labels_total: s.window.total,
                        quality: q,
                    });
                }
            }
        }
        if let Some(rule) = &policy.retrain {
            for (version, variant, value, windows) in judged {
                if self
                    .0
                    .retrain
                    .metric_past(model, rule, version, &variant, value, windows)
                {
                    self.reset_streaks(model, version, &variant);
                }
            }
            self.0.retrain.new_data(model, rule);
        }
        if let Some(observer) = self.0.observer.get() {
            observer.observe(model, &served);
        }
    }

    fn reset_streaks(&self, model: &str, version: u64, variant: &str) {
        let mut series = self.0.series.lock().unwrap_or_else(PoisonError::into_inner);
        for (k, s) in series.iter_mut() {
            if &*k.model == model && k.version == version && k.variant == variant {
                s.streak = 0;
            }
        }
    }

    fn known_versions(&self, model: &str) -> Vec<u64> {
        self.0
            .registry
            .snapshot()
            .get(model)
            .map(|e| e.versions.keys().copied().collect())
            .unwrap_or_default()
    }

    /// The model's quality, every series.
    pub fn report(&self, model: &str) -> Result<ModelQuality, FeedbackError> {
        let policy = self
            .policy(model)
            .ok_or_else(|| FeedbackError::NotEnabled(model.to_owned()))?;
        let classes = policy_classes(&policy);
        let series = self.0.series.lock().unwrap_or_else(PoisonError::into_inner);
        let series = series
            .iter()
            .filter(|(k, _)| &*k.model == model)
            .map(|(k, s)| SeriesQuality {
                version: k.version.to_string(),
                variant: k.variant.clone(),
                set: k.set,
                labels_total: s.window.total,
                quality: s.window.quality(&classes, self.0.settings.max_classes),
            })
            .collect();
        let pending = self.state().store.pending(model);
        Ok(ModelQuality {
            model: model.to_owned(),
            pending,
            window: self.0.settings.window,
            series,
        })
    }
}

impl AnswerObserver for Feedback {
    fn answered(&self, done: &Inferred, request_id: Option<&str>, mirrored: bool) {
        let model = &done.model.name;
        self.0.registry.with_feedback_policy(model, |policy| {
            match Feedback::request_key(done.id.as_deref(), request_id) {
                Some(id) => self.record(policy, self.key(model, id), done, mirrored),
                None => self.unkeyed(model),
            }
        });
    }
}

/// The store and each of its models' counters (by [`ModelId`]), under one lock.
struct State {
    store: Store,
    counters: Vec<ModelCounters>,
}

impl State {
    /// The store's ids of an answer's model and series; a model's counters are resolved on its first answer.
    fn series(&mut self, done: &Inferred, metrics: &Metrics) -> (ModelId, SeriesId) {
        let name = &done.model.name;
        let (model, series) = self.store.series(name, done.model.version, &done.variant);
        if model.index() == self.counters.len() {
            self.counters
                .push(ModelCounters(metrics.feedback.prediction_counters(name)));
        }
        (model, series)
    }
}

struct ModelCounters(PredictionCounters);

impl ModelCounters {
    fn dropped(&self, why: Dropped) {
        match why {
            Dropped::Capacity => &self.0.capacity,
            Dropped::Expired => &self.0.expired,
            Dropped::Replaced => &self.0.replaced,
        }
        .inc();
    }
}

impl std::ops::Deref for ModelCounters {
    type Target = PredictionCounters;
    fn deref(&self) -> &PredictionCounters {
        &self.0
    }
}

/// The classes `[feedback]` names (none: per-class figures cover the labels seen).
fn policy_classes(policy: &FeedbackPolicy) -> Vec<Label> {
    policy.classes.iter().flatten().map(Label::from).collect()
}

fn series_labels(k: &SeriesKey) -> QualitySeries {
    QualitySeries {
        model: k.model.to_string(),
        version: k.version.to_string(),
        variant: k.variant.clone(),
        set: k.set.label(),
    }
}
