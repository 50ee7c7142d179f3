//! The model store's family, for a repository in a bucket: whether the store answers, what syncing with it failed,
//! what was downloaded, and what the local cache holds.

use prometheus::{IntCounter, IntCounterVec, IntGauge};

use super::labels::StoreOperation;
use super::Registrar;

pub struct StoreMetrics {
    up: IntGauge,
    failures: IntCounterVec,
    downloaded: IntCounter,
    cache_bytes: IntGauge,
    last_sync: IntGauge,
}

impl StoreMetrics {
    pub(super) fn new(add: &Registrar) -> prometheus::Result<Self> {
        let metrics = StoreMetrics {
            up: add.int_gauge(
                "sluice_store_up",
                "1 when the last listing of the model bucket succeeded, 0 when it failed (what is loaded keeps serving); 1 for a local repository.",
            )?,
            failures: add.counters(
                "sluice_store_failures_total",
                "Failed operations against the model bucket, by operation (list, download, verify, cache_full).",
                &["operation"],
            )?,
            downloaded: add.counter(
                "sluice_store_downloaded_bytes_total",
                "Bytes downloaded from the model bucket into the local cache.",
            )?,
            cache_bytes: add.int_gauge(
                "sluice_store_cache_bytes",
                "Bytes of model files the local cache holds.",
            )?,
            last_sync: add.int_gauge(
                "sluice_store_last_sync_timestamp_seconds",
                "Unix time of the last complete sync with the model bucket.",
            )?,
        };
        metrics.up.set(1);
        for operation in StoreOperation::ALL {
            metrics.failures.with_label_values(&[operation.label()]);
        }
        Ok(metrics)
    }

    /// Records the result of one listing.
    pub fn set_up(&self, up: bool) {
        self.up.set(i64::from(up));
    }

    pub fn failed(&self, operation: StoreOperation) {
        self.failures.with_label_values(&[operation.label()]).inc();
    }

    pub fn downloaded(&self, bytes: u64) {
        self.downloaded.inc_by(bytes);
    }

    /// After a complete sync: the cache's size, and now as the time of the last sync.
    pub fn synced(&self, cache_bytes: u64, unix_seconds: u64) {
        self.cache_bytes
            .set(i64::try_from(cache_bytes).unwrap_or(i64::MAX));
        self.last_sync
            .set(i64::try_from(unix_seconds).unwrap_or(i64::MAX));
    }
}
