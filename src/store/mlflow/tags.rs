//! Automatic rollbacks written back to the MLflow registry as tags on the version switched off, so the registry shows
//! why a challenger lost its traffic. Aliases are never moved: promoting and demoting stay a person's decision.

use tokio::sync::mpsc;

use super::api::Api;
use crate::routing::Rollback;

/// The tag a rollback sets on the version.
pub const ROLLBACK_TAG: &str = "sluice.rollback";

/// Tags each rollback received on `rollbacks`, until the sending side closes.
pub fn spawn(api: Api, mut rollbacks: mpsc::Receiver<Rollback>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(rollback) = rollbacks.recv().await {
            let value = format!(
                "variant {} switched off at {}: {}",
                rollback.variant,
                humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
                rollback.reason
            );
            let version = rollback.version.to_string();
            match api
                .set_version_tag(&rollback.model, &version, ROLLBACK_TAG, &value)
                .await
            {
                Ok(()) => tracing::warn!(
                    model = %rollback.model, version = rollback.version, tag = ROLLBACK_TAG,
                    "automatic rollback written to the MLflow registry"
                ),
                Err(e) => tracing::error!(
                    model = %rollback.model, version = rollback.version, error = %e,
                    "automatic rollback not written to the MLflow registry"
                ),
            }
        }
    })
}
