//! The drift watcher: every few seconds, each loaded version's drift report is exported as gauges and checked
//! against the thresholds: above `drift_warn` a warning is logged, above `drift_alert` a warning plus (if configured)
//! a webhook POST, debounced per version (the retraining trigger). Until the window holds `drift_min_rows` rows only
//! its row count is exported: no PSI, no warning, no webhook.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::MonitoringSettings;
use crate::metrics::Metrics;
use crate::registry::Registry;

/// How often drift is evaluated.
const PERIOD: Duration = Duration::from_secs(2);

pub fn spawn(registry: Arc<Registry>, metrics: Arc<Metrics>, settings: MonitoringSettings) {
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        // Last warning / webhook per (model, version), for debouncing.
        let mut last_warned: HashMap<(String, u64), Instant> = HashMap::new();
        let mut last_called: HashMap<(String, u64), Instant> = HashMap::new();
        let min_interval = Duration::from_secs(settings.webhook_min_interval_s);
        loop {
            tokio::time::sleep(PERIOD).await;
            for (name, entry) in registry.snapshot().iter() {
                for slot in entry.versions.values() {
                    let Some(model) = &slot.model else { continue };
                    let Some(drift) = &model.drift else { continue };
                    let report = drift.report();
                    metrics
                        .monitoring
                        .set_drift_rows(name, model.version, report.rows_in_window);
                    // No verdict on a window too small to mean anything.
                    if report.rows_in_window < settings.drift_min_rows {
                        continue;
                    }
                    metrics.monitoring.set_drift(name, model.version, &report);
                    let Some(psi) = report.overall_psi else {
                        continue;
                    };
                    let key = (name.clone(), model.version);
                    let due = |map: &HashMap<(String, u64), Instant>| {
                        map.get(&key).is_none_or(|t| t.elapsed() >= min_interval)
                    };
                    if psi > settings.drift_warn && due(&last_warned) {
                        tracing::warn!(model = %name, version = model.version, psi, rows = report.rows_in_window, "input drift above drift_warn");
                        last_warned.insert(key.clone(), Instant::now());
                    }
                    if psi > settings.drift_alert
                        && !settings.drift_webhook.is_empty()
                        && due(&last_called)
                    {
                        last_called.insert(key.clone(), Instant::now());
                        metrics.monitoring.drift_alert(name, model.version);
                        let event = serde_json::json!({
                            "type": "sluice.drift.alert",
                            "source": "sluice",
                            "model": name,
                            "version": model.version.to_string(),
                            "overall_psi": psi,
                            "threshold": settings.drift_alert,
                            "rows_in_window": report.rows_in_window,
                            "features": report.features,
                        });
                        let request = client
                            .post(&settings.drift_webhook)
                            .json(&event)
                            .timeout(Duration::from_secs(10));
                        tokio::spawn(async move {
                            if let Err(e) = request.send().await.and_then(|r| r.error_for_status())
                            {
                                tracing::warn!(error = %e, "drift webhook failed");
                            }
                        });
                    }
                }
            }
        }
    });
}
