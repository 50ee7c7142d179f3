//! Keeps the local cache equal to the bucket: list, plan, download, check, install; then the repository manager
//! reconciles the cache as it would a directory.
//!
//! Nothing is installed that did not arrive whole: each file is streamed into the staging area and must end at the
//! listed size with the listed ETag, and a version whose `card.toml` names a sha256 must match it. A failure leaves
//! the installed unit (and so the version that serves) as it was, and the unit is tried again after a back-off
//! that doubles per failure, at once if the bucket's copy changes. A listing that fails changes nothing in the
//! cache; it is retried with its own back-off, counted, and reported through the registry's source status until a
//! listing succeeds again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::cache::Cache;
use super::layout::{self, Files, Unit};
use super::remote::Remote;
use super::StoreError;
use crate::metrics::{Metrics, StoreOperation};
use crate::registry::{Registry, RepositoryManager, SourceStatus};

/// How long a download may go without receiving a byte before it is cut.
const STALL: Duration = Duration::from_secs(30);
/// How long one listing (every page of it) may take before the store counts as unreachable.
const LIST_TIMEOUT: Duration = Duration::from_secs(30);
/// The first wait after a failure; each further failure doubles it, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How a mirror runs.
#[derive(Debug, Clone, Copy)]
pub struct MirrorSettings {
    /// Between listings while the store answers.
    pub poll_interval: Duration,
    /// A unit whose newest object is younger than this is still being uploaded.
    pub settle: Duration,
    /// Most bytes the copy may hold (`models.cache_max_bytes`); 0: no cap. A unit that would pass it is not
    /// downloaded (what serves stays) and is reported.
    pub max_bytes: u64,
}

/// Why one unit could not be installed.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("{file}: {message}")]
    Store { file: String, message: String },
    #[error("{file}: no data for {}s", STALL.as_secs())]
    Stalled { file: String },
    #[error("{file}: {got} bytes arrived, the listing says {expected}")]
    Incomplete {
        file: String,
        expected: u64,
        got: u64,
    },
    #[error("{file}: changed while it was downloaded")]
    Changed { file: String },
    #[error("{0}")]
    Checksum(String),
    #[error("the local copy would hold {needed} bytes, over models.cache_max_bytes = {max}")]
    CacheFull { needed: u64, max: u64 },
    #[error("local cache: {0}")]
    Io(#[from] std::io::Error),
}

impl FetchError {
    fn operation(&self) -> StoreOperation {
        match self {
            FetchError::Store { .. }
            | FetchError::Stalled { .. }
            | FetchError::Changed { .. }
            | FetchError::Io(_) => StoreOperation::Download,
            FetchError::Incomplete { .. } | FetchError::Checksum(_) => StoreOperation::Verify,
            FetchError::CacheFull { .. } => StoreOperation::CacheFull,
        }
    }
}

/// A unit that failed: not tried again before `retry_at` unless the bucket's copy changes.
struct Failure {
    files: Files,
    /// It failed for want of room in the copy: tried again as soon as something leaves it.
    cache_full: bool,
    attempts: u32,
    retry_at: Instant,
    message: String,
}

/// What one sync did.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct SyncReport {
    /// Something was installed or removed: the repository needs a reconcile.
    pub changed: bool,
    /// Something is still uploading or waiting for a retry: sync again soon.
    pub waiting: bool,
    /// Something is still uploading (younger than the settle time).
    pub uploading: bool,
}

pub struct Mirror {
    remote: Box<dyn Remote>,
    cache: Cache,
    settings: MirrorSettings,
    metrics: Arc<Metrics>,
    registry: Arc<Registry>,
    failures: BTreeMap<Unit, Failure>,
    /// Consecutive failed listings, and since when.
    list_failures: u32,
    unreachable_since: Option<SystemTime>,
}

impl Mirror {
    /// Opens the cache directory (locked for this process) for `remote`.
    pub fn new(
        remote: Box<dyn Remote>,
        cache_dir: &Path,
        settings: MirrorSettings,
        metrics: Arc<Metrics>,
        registry: Arc<Registry>,
    ) -> Result<Mirror, StoreError> {
        let cache = Cache::open(cache_dir).map_err(|source| StoreError::Cache {
            path: cache_dir.to_path_buf(),
            source,
        })?;
        Ok(Mirror {
            remote,
            cache,
            settings,
            metrics,
            registry,
            failures: BTreeMap::new(),
            list_failures: 0,
            unreachable_since: None,
        })
    }

    /// The directory the registry loads from.
    pub fn repository(&self) -> PathBuf {
        self.cache.repository()
    }

    /// Whether the cache holds anything (from this run or an earlier one).
    pub fn has_copy(&self) -> bool {
        !self.cache.held().is_empty()
    }

    /// One pass: list the bucket and bring the cache to it. `Err` is a listing that failed (nothing changed).
    pub async fn sync(&mut self) -> Result<SyncReport, String> {
        let listed = tokio::time::timeout(LIST_TIMEOUT, self.remote.list()).await;
        let listed =
            listed.unwrap_or_else(|_| Err(format!("no answer in {}s", LIST_TIMEOUT.as_secs())));
        let listing = match listed {
            Ok(listing) => {
                self.store_answered();
                listing
            }
            Err(message) => {
                self.store_failed(&message);
                return Err(message);
            }
        };
        let wanted = layout::group(&listing.objects);
        let plan = layout::plan(
            &wanted,
            self.cache.held(),
            SystemTime::now(),
            self.settings.settle,
        );
        let mut report = SyncReport {
            waiting: !plan.waiting.is_empty(),
            uploading: !plan.waiting.is_empty(),
            ..SyncReport::default()
        };
        let mut pending: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for unit in &plan.waiting {
            note(&mut pending, unit, "still uploading".into());
        }
        for (model, what, why) in listing.skipped {
            pending
                .entry(model)
                .or_default()
                .push(format!("{what}: {why}"));
        }
        self.failures.retain(|unit, _| wanted.contains_key(unit));
        // Removals first: they make room for what comes.
        for unit in plan.remove {
            match self.cache.remove(&unit) {
                Ok(()) => {
                    report.changed = true;
                    tracing::info!(remote = %self.remote.url(), unit = %unit, "removed: no longer in the bucket");
                }
                Err(e) => {
                    tracing::warn!(unit = %unit, error = %e, "cannot remove from the model cache")
                }
            }
        }
        if report.changed {
            self.failures.retain(|_, failure| !failure.cache_full);
        }
        for (unit, files) in plan.fetch {
            if let Some(failure) = self.failures.get(&unit) {
                if failure.files == files && failure.retry_at > Instant::now() {
                    report.waiting = true;
                    note(&mut pending, &unit, failure.message.clone());
                    continue;
                }
            }
            match self.fetch(&unit, &files).await {
                Ok(()) => {
                    self.failures.remove(&unit);
                    report.changed = true;
                    tracing::info!(remote = %self.remote.url(), unit = %unit, "downloaded");
                }
                Err(e) => {
                    report.waiting = true;
                    self.metrics.store.failed(e.operation());
                    let message = self.record_failure(&unit, files, &e);
                    note(&mut pending, &unit, message);
                }
            }
        }
        self.registry.set_source_status(SourceStatus {
            problem: None,
            pending,
        });
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        self.metrics.store.synced(self.cache.bytes(), now.as_secs());
        Ok(report)
    }

    /// The first sync with the bucket. While the bucket cannot be listed, start-up waits (unready, the readiness body
    /// saying why), unless an earlier run left a copy: then that copy serves and the mirror catches up later. Versions
    /// still uploading are waited for (as the start-up load waits for files still being written); failed downloads
    /// are left to the mirror's retries.
    pub async fn first_copy(mut self) -> Mirror {
        let mut failures = 0u32;
        loop {
            match self.sync().await {
                Ok(report) if report.uploading => tokio::time::sleep(self.settings.settle).await,
                Ok(_) => return self,
                Err(_) if self.has_copy() => {
                    tracing::warn!(
                        "serving the cached copy of the model repository until the store answers"
                    );
                    return self;
                }
                Err(_) => {
                    failures += 1;
                    let wait =
                        Duration::from_millis(500 << failures.min(6)).min(Duration::from_secs(30));
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Syncs every poll interval (sooner while something waits, backing off while the store fails) and asks
    /// `manager` to reconcile after each change. Runs until the runtime stops.
    pub fn spawn(mut self, manager: Arc<RepositoryManager>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut reconcile_again = false;
            loop {
                let wait = match self.list_failures {
                    0 if reconcile_again => self.settings.settle.min(self.settings.poll_interval),
                    0 => self.settings.poll_interval,
                    n => backoff(n).min(self.settings.poll_interval.max(MAX_BACKOFF)),
                };
                tokio::time::sleep(wait).await;
                let report = self.sync().await.unwrap_or_default();
                if report.changed || reconcile_again {
                    match manager.reconcile().await {
                        Ok(r) => reconcile_again = r.pending,
                        Err(e) => {
                            tracing::warn!(error = %e, "repository reconcile failed; will retry")
                        }
                    }
                }
                reconcile_again |= report.waiting;
            }
        })
    }

    fn store_answered(&mut self) {
        if let Some(since) = self.unreachable_since.take() {
            let down = SystemTime::now().duration_since(since).unwrap_or_default();
            tracing::info!(remote = %self.remote.url(), down_s = down.as_secs(), "model store reachable again");
        }
        self.list_failures = 0;
        self.metrics.store.set_up(true);
    }

    fn store_failed(&mut self, message: &str) {
        self.list_failures += 1;
        self.metrics.store.set_up(false);
        self.metrics.store.failed(StoreOperation::List);
        let since = *self.unreachable_since.get_or_insert_with(SystemTime::now);
        if self.list_failures == 1 {
            tracing::warn!(remote = %self.remote.url(), error = %message, "model store unreachable; what is loaded keeps serving");
        }
        let ago = SystemTime::now().duration_since(since).unwrap_or_default();
        let previous = self.registry.source_status();
        self.registry.set_source_status(SourceStatus {
            problem: Some(format!(
                "model store {} unreachable for {}s ({} failed listings; retrying): {message}",
                self.remote.url(),
                ago.as_secs(),
                self.list_failures
            )),
            pending: previous.pending.clone(),
        });
    }

    fn record_failure(&mut self, unit: &Unit, files: Files, error: &FetchError) -> String {
        let attempts = self
            .failures
            .get(unit)
            .filter(|f| f.files == files)
            .map_or(1, |f| f.attempts + 1);
        let wait = backoff(attempts);
        let message = format!(
            "not copied from {}: {error} (attempt {attempts}, next in {}s)",
            self.remote.url(),
            wait.as_secs()
        );
        tracing::warn!(unit = %unit, error = %error, attempts, "model store download failed; what serves stays");
        self.failures.insert(
            unit.clone(),
            Failure {
                files,
                cache_full: matches!(error, FetchError::CacheFull { .. }),
                attempts,
                retry_at: Instant::now() + wait,
                message: message.clone(),
            },
        );
        message
    }

    /// Downloads `unit` into the staging area, checks it, and installs it.
    async fn fetch(&mut self, unit: &Unit, files: &Files) -> Result<(), FetchError> {
        let size = |files: &Files| files.values().map(|f| f.size).sum::<u64>();
        let replaced = self.cache.held().get(unit).map_or(0, size);
        let needed = self.cache.bytes() - replaced + size(files);
        let max = self.settings.max_bytes;
        if max > 0 && needed > max {
            return Err(FetchError::CacheFull { needed, max });
        }
        let staged = self.cache.staging_path();
        let result = self.stage(unit, files, &staged).await;
        if let Err(e) = result {
            let _ = tokio::fs::remove_dir_all(&staged).await;
            let _ = tokio::fs::remove_file(&staged).await;
            return Err(e);
        }
        self.cache.install(unit, &staged, files.clone())?;
        Ok(())
    }

    async fn stage(&self, unit: &Unit, files: &Files, staged: &Path) -> Result<(), FetchError> {
        let key = |name: &str| match name {
            "" => unit.relative(),
            name => format!("{}/{name}", unit.relative()),
        };
        if !matches!(unit, Unit::Version { .. }) {
            let tag = &files[""];
            return self.download(&key(""), tag, staged).await;
        }
        let held = self.cache.held().get(unit);
        let current = self.cache.path(unit);
        for (name, tag) in files {
            let target = staged.join(name);
            if let Some(parent) = target.parent() {
                tokio::fs::create_dir_all(parent).await?;
            }
            // A file that did not change is linked from the installed copy, not downloaded again (except a card
            // the copy completes: the installed one names the checksum of the file installed before).
            let completed = self.remote.completes_cards() && name == "card.toml";
            if !completed
                && held.and_then(|h| h.get(name)) == Some(tag)
                && std::fs::hard_link(current.join(name), &target).is_ok()
            {
                continue;
            }
            self.download(&key(name), tag, &target).await?;
        }
        let model = staged.join("model.onnx");
        let complete = self.remote.completes_cards();
        tokio::task::spawn_blocking(move || {
            if complete {
                crate::model::card::complete(&model)?;
            }
            crate::model::card::load(&model)
        })
        .await
        .map_err(|e| FetchError::Checksum(e.to_string()))?
        .map_err(FetchError::Checksum)?;
        Ok(())
    }

    /// Streams one object into `target`: it must end at the listed size, with the listed ETag.
    async fn download(
        &self,
        key: &str,
        expected: &layout::FileTag,
        target: &Path,
    ) -> Result<(), FetchError> {
        let store_error = |message| FetchError::Store {
            file: key.to_owned(),
            message,
        };
        let opened = tokio::time::timeout(STALL, self.remote.open(key))
            .await
            .map_err(|_| FetchError::Stalled { file: key.into() })?
            .map_err(store_error)?;
        if let Some(tag) = &opened.e_tag {
            if !expected.tag.starts_with("mtime:") && *tag != expected.tag {
                return Err(FetchError::Changed { file: key.into() });
            }
        }
        let mut file = tokio::fs::File::create(target).await?;
        let mut stream = opened.body;
        let mut got = 0u64;
        loop {
            let chunk = match tokio::time::timeout(STALL, stream.next()).await {
                Err(_) => return Err(FetchError::Stalled { file: key.into() }),
                Ok(None) => break,
                Ok(Some(chunk)) => chunk.map_err(store_error)?,
            };
            got += chunk.len() as u64;
            self.metrics.store.downloaded(chunk.len() as u64);
            if got > expected.size {
                break;
            }
            file.write_all(&chunk).await?;
        }
        file.sync_all().await?;
        if got != expected.size {
            return Err(FetchError::Incomplete {
                file: key.into(),
                expected: expected.size,
                got,
            });
        }
        Ok(())
    }
}

/// The wait after `attempts` consecutive failures: 1 s, 2 s, 4 s, … up to a minute.
fn backoff(attempts: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << attempts.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

fn note(pending: &mut BTreeMap<String, Vec<String>>, unit: &Unit, message: String) {
    let (model, what) = match unit {
        Unit::Version { model, version } => (model.clone(), format!("version {version}")),
        Unit::ModelConfig { model } => (model.clone(), "model.toml".to_owned()),
        // A file at the top (the routing file) belongs to no model: its failures are logged and counted.
        Unit::Root { .. } => return,
    };
    pending
        .entry(model)
        .or_default()
        .push(format!("{what}: {message}"));
}

#[cfg(test)]
mod tests;
