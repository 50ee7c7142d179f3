//! The retraining trigger of `[feedback.retrain]`: a CloudEvent (`io.sluice.feedback.retrain`, structured mode,
//! `application/cloudevents+json`) POSTed to `feedback.webhook` when a served version's metric was past its
//! threshold for `sustained_windows` windows in a row (reason `metric`), or when `new_data_rows` labels came since
//! the model's last `new_data` trigger (reason `new_data`). At most one of each reason per model per
//! `feedback.webhook_min_interval_s`: a trigger due within it waits for the next window or post. Every trigger is
//! counted and logged, with a webhook or without.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;

use crate::config::FeedbackSettings;
use crate::metrics::Metrics;
use crate::repository::RetrainRule;

/// The CloudEvents `type` of a retraining trigger.
pub const EVENT_TYPE: &str = "io.sluice.feedback.retrain";

/// Why a trigger fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    /// A served version's metric stayed past its threshold.
    Metric,
    /// Enough labels came since the last trigger.
    NewData,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Metric => "metric",
            Reason::NewData => "new_data",
        }
    }
}

#[derive(Default)]
struct ModelState {
    last_metric: Option<Instant>,
    last_new_data: Option<Instant>,
    labels_since: u64,
}

pub struct Trigger {
    webhook: Option<String>,
    min_interval: Duration,
    client: reqwest::Client,
    metrics: Arc<Metrics>,
    state: Mutex<HashMap<String, ModelState>>,
}

impl Trigger {
    pub fn new(settings: &FeedbackSettings, metrics: Arc<Metrics>) -> Trigger {
        Trigger {
            webhook: Some(settings.webhook.clone()).filter(|w| !w.is_empty()),
            min_interval: Duration::from_secs(settings.webhook_min_interval_s),
            client: reqwest::Client::new(),
            metrics,
            state: Mutex::default(),
        }
    }

    pub fn labels_accepted(&self, model: &str, n: usize) {
        if n > 0 {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.entry(model.to_owned()).or_default().labels_since += n as u64;
        }
    }

    /// A served series was past its threshold for `windows` windows in a row; true when the trigger went out
    /// (the streak starts again), false while debounced.
    pub fn metric_past(
        &self,
        model: &str,
        rule: &RetrainRule,
        version: u64,
        variant: &str,
        value: Option<f64>,
        windows: u32,
    ) -> bool {
        let data = json!({
            "reason": Reason::Metric.as_str(),
            "model": model,
            "version": version.to_string(),
            "variant": variant,
            "metric": rule.metric.as_str(),
            "value": value,
            "threshold": rule.threshold,
            "windows": windows,
        });
        self.fire(model, Reason::Metric, data)
    }

    /// Fires the `new_data` trigger when enough labels came since the last trigger.
    pub fn new_data(&self, model: &str, rule: &RetrainRule) {
        let Some(rows) = rule.new_data_rows else {
            return;
        };
        let since = {
            let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.get(model).map_or(0, |s| s.labels_since)
        };
        if since >= rows.max(1) {
            let data = json!({
                "reason": Reason::NewData.as_str(),
                "model": model,
                "labels_since_last_trigger": since,
                "new_data_rows": rows,
            });
            self.fire(model, Reason::NewData, data);
        }
    }

    /// Sends the event unless the model's last trigger is too recent; true when sent.
    fn fire(&self, model: &str, reason: Reason, data: serde_json::Value) -> bool {
        {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let s = state.entry(model.to_owned()).or_default();
            let last = match reason {
                Reason::NewData => &mut s.last_new_data,
                Reason::Metric => &mut s.last_metric,
            };
            if last.is_some_and(|t| t.elapsed() < self.min_interval) {
                return false;
            }
            *last = Some(Instant::now());
            if reason == Reason::NewData {
                s.labels_since = 0;
            }
        }
        self.metrics
            .feedback
            .retrain_trigger(model, reason.as_str());
        tracing::warn!(model, reason = reason.as_str(), %data, "retraining trigger");
        let Some(url) = &self.webhook else {
            return true;
        };
        let event = json!({
            "specversion": "1.0",
            "type": EVENT_TYPE,
            "source": format!("/sluice/models/{model}"),
            "id": uuid::Uuid::new_v4().to_string(),
            "time": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            "subject": model,
            "datacontenttype": "application/json",
            "data": data,
        });
        let request = self
            .client
            .post(url)
            .header("content-type", "application/cloudevents+json")
            .body(event.to_string())
            .timeout(Duration::from_secs(10));
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(e) = request.send().await.and_then(|r| r.error_for_status()) {
                        tracing::warn!(error = %e, "retraining webhook failed");
                    }
                });
            }
            Err(_) => tracing::warn!("retraining webhook not called: no runtime"),
        }
        true
    }
}
