//! Automatic rollbacks written back to a routing file that lives in the bucket, so they hold fleet-wide.
//!
//! A replica that switches a failing variant off (routing's `auto_rollback`) sends the rollback here; the file is
//! read, the variant's weight set to 0 (only while it still points at the version that failed; the rest of the file,
//! comments included, is left as it was), and written back with a conditional write (`If-Match` the ETag read), so
//! a concurrent edit is never overwritten: on a conflict the file is read again and the change made again. Every
//! replica's mirror then brings the new file within one poll, and a restarted replica reads it from the bucket,
//! so neither a scale-up nor a restart brings the failing variant back.

use std::sync::Arc;

use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use tokio::sync::mpsc;

use super::Rollback;

/// Attempts per rollback when the file keeps changing under it.
const ATTEMPTS: usize = 5;

/// Writes each rollback received on `rollbacks` to the routing file at `key`, until the sending side closes.
pub fn spawn(
    store: Arc<dyn ObjectStore>,
    key: object_store::path::Path,
    mut rollbacks: mpsc::Receiver<Rollback>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(rollback) = rollbacks.recv().await {
            match write(store.as_ref(), &key, &rollback).await {
                Ok(true) => tracing::warn!(
                    model = %rollback.model, variant = %rollback.variant, file = %key,
                    "automatic rollback written to the routing file in the bucket"
                ),
                Ok(false) => {}
                Err(e) => tracing::error!(
                    model = %rollback.model, variant = %rollback.variant, file = %key, error = %e,
                    "automatic rollback not written to the bucket; it holds on this replica only"
                ),
            }
        }
    })
}

/// Sets the variant's weight to 0 in the file, conditionally; `Ok(false)` when there was nothing to change.
async fn write(
    store: &dyn ObjectStore,
    key: &object_store::path::Path,
    rollback: &Rollback,
) -> Result<bool, String> {
    for _ in 0..ATTEMPTS {
        let current = store.get(key).await.map_err(|e| e.to_string())?;
        let e_tag = current.meta.e_tag.clone();
        let bytes = current.bytes().await.map_err(|e| e.to_string())?;
        let text = std::str::from_utf8(&bytes).map_err(|e| e.to_string())?;
        let Some(edited) = switch_off(text, rollback)? else {
            return Ok(false);
        };
        let options = PutOptions {
            mode: PutMode::Update(UpdateVersion {
                e_tag,
                version: None,
            }),
            ..PutOptions::default()
        };
        match store
            .put_opts(key, PutPayload::from(edited.into_bytes()), options)
            .await
        {
            Ok(_) => return Ok(true),
            Err(object_store::Error::Precondition { .. }) => continue,
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(format!(
        "the file changed {ATTEMPTS} times while it was written"
    ))
}

/// The routing file with the rolled-back variant at weight 0, or `None` when it is already off or no longer points
/// at the version that failed.
fn switch_off(text: &str, rollback: &Rollback) -> Result<Option<String>, String> {
    let mut document: toml_edit::DocumentMut = text.parse().map_err(|e| format!("{e}"))?;
    let Some(variants) = document
        .get_mut(&rollback.model)
        .and_then(|model| model.get_mut("variants"))
    else {
        return Ok(None);
    };
    let matches = |name: Option<&str>, version: Option<i64>, weight: Option<f64>| {
        name == Some(rollback.variant.as_str())
            && version == i64::try_from(rollback.version).ok()
            && weight != Some(0.0)
    };
    let number = |v: Option<&toml_edit::Value>| {
        v.and_then(|v| v.as_float().or(v.as_integer().map(|i| i as f64)))
    };
    let mut changed = false;
    if let Some(array) = variants.as_array_mut() {
        for table in array.iter_mut().filter_map(|v| v.as_inline_table_mut()) {
            if matches(
                table.get("name").and_then(|v| v.as_str()),
                table.get("version").and_then(|v| v.as_integer()),
                number(table.get("weight")),
            ) {
                table.insert("weight", 0.0.into());
                changed = true;
            }
        }
    } else if let Some(tables) = variants.as_array_of_tables_mut() {
        for table in tables.iter_mut() {
            if matches(
                table.get("name").and_then(|v| v.as_str()),
                table.get("version").and_then(|v| v.as_integer()),
                number(table.get("weight").and_then(|i| i.as_value())),
            ) {
                table.insert("weight", toml_edit::value(0.0));
                changed = true;
            }
        }
    }
    Ok(changed.then(|| document.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollback(version: u64) -> Rollback {
        Rollback {
            model: "m".into(),
            variant: "canary".into(),
            version,
            reason: "error rate 9/10".into(),
        }
    }

    #[test]
    fn the_variant_is_switched_off_and_the_rest_kept() {
        let text = "# owned by the ML team\n[m]\nstable = 1\nvariants = [{ name = \"canary\", version = 2, weight = 50 }, { name = \"b\", version = 3, weight = 10.0 }]\n\n[other]\nstable = 4\n";
        let edited = switch_off(text, &rollback(2)).unwrap().unwrap();
        assert!(
            edited.starts_with("# owned by the ML team\n[m]\nstable = 1\n"),
            "{edited}"
        );
        assert!(
            edited.contains("{ name = \"canary\", version = 2, weight = 0.0 }"),
            "{edited}"
        );
        assert!(
            edited.contains("{ name = \"b\", version = 3, weight = 10.0 }"),
            "{edited}"
        );
        assert!(edited.ends_with("[other]\nstable = 4\n"), "{edited}");
        // Already off, or pointed at another version since: nothing to write.
        assert_eq!(switch_off(&edited, &rollback(2)).unwrap(), None);
        assert_eq!(switch_off(text, &rollback(5)).unwrap(), None);
    }

    #[test]
    fn arrays_of_tables_are_edited_too() {
        let text =
            "[m]\nstable = 1\n[[m.variants]]\nname = \"canary\"\nversion = 2\nweight = 20.0\n";
        let edited = switch_off(text, &rollback(2)).unwrap().unwrap();
        assert!(edited.contains("weight = 0.0"), "{edited}");
    }

    #[tokio::test]
    async fn the_write_is_made_once() {
        let store = object_store::memory::InMemory::new();
        let key = object_store::path::Path::from("routing.toml");
        let text =
            "[m]\nstable = 1\nvariants = [{ name = \"canary\", version = 2, weight = 50.0 }]\n";
        store
            .put(&key, PutPayload::from(text.as_bytes().to_vec()))
            .await
            .unwrap();
        assert!(write(&store, &key, &rollback(2)).await.unwrap());
        let stored = store.get(&key).await.unwrap().bytes().await.unwrap();
        assert!(std::str::from_utf8(&stored)
            .unwrap()
            .contains("weight = 0.0"));
        assert!(!write(&store, &key, &rollback(2)).await.unwrap());
    }
}
