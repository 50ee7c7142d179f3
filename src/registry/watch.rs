//! Watches the model repository and asks the [`RepositoryManager`] to reconcile when something changes.
//!
//! Filesystem notifications (inotify via `notify`) trigger a reconcile after a short debounce; a periodic poll
//! catches what notifications miss (network filesystems, a watcher that could not start). A reconcile that saw a
//! file still being written asks to be run again once it has had time to settle. Watching never stops after a
//! failure: the next change or poll tries again.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use notify::{Event, EventKind, RecursiveMode, Watcher};
use tokio::sync::Notify;

use super::RepositoryManager;

/// How a watch loop runs.
#[derive(Debug, Clone, Copy)]
pub struct WatchSettings {
    /// Use filesystem notifications (polling runs either way).
    pub notify: bool,
    pub poll_interval: Duration,
    /// Quiet time after a notification before reconciling, so a burst of events causes one reconcile.
    pub debounce: Duration,
    /// How soon to look again when a file was still being written.
    pub settle: Duration,
}

/// Starts the watch loop as a background task. It runs until the runtime shuts down.
pub fn spawn(
    manager: Arc<RepositoryManager>,
    root: &Path,
    settings: WatchSettings,
) -> tokio::task::JoinHandle<()> {
    let trigger = Arc::new(Notify::new());
    let watcher = settings
        .notify
        .then(|| start_watcher(root, Arc::clone(&trigger)))
        .flatten();
    tokio::spawn(async move {
        // Kept alive for as long as the loop runs; dropping it stops the notifications.
        let _watcher = watcher;
        let mut pending = false;
        loop {
            let wait = if pending {
                settings.settle
            } else {
                settings.poll_interval
            };
            tokio::select! {
                () = trigger.notified() => tokio::time::sleep(settings.debounce).await,
                () = tokio::time::sleep(wait) => {}
            }
            match manager.reconcile().await {
                Ok(report) => pending = report.pending,
                Err(e) => tracing::warn!(error = %e, "repository reconcile failed; will retry"),
            }
        }
    })
}

fn start_watcher(root: &Path, trigger: Arc<Notify>) -> Option<notify::RecommendedWatcher> {
    let handler = move |event: notify::Result<Event>| match event {
        // Reads (including our own loads) change nothing.
        Ok(Event {
            kind: EventKind::Access(_),
            ..
        }) => {}
        Ok(_) => trigger.notify_one(),
        Err(e) => tracing::warn!(error = %e, "repository watch error"),
    };
    let started = notify::recommended_watcher(handler)
        .and_then(|mut w| w.watch(root, RecursiveMode::Recursive).map(|()| w));
    match started {
        Ok(watcher) => Some(watcher),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the model repository; relying on polling");
            None
        }
    }
}
