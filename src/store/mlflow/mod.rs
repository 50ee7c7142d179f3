//! A model repository in an MLflow Model Registry (`models.repository = "mlflow+http://host:5000"`, or
//! `mlflow+https://…`), read through the tracking server's REST API ([`api`]) and presented to the
//! [`Mirror`](super::mirror::Mirror) in the repository layout, as a bucket would be:
//!
//! - every registered model is a model; each of its versions in status `READY` is a version with MLflow's number,
//!   holding `model.onnx` (the version's artifact directory's `model.onnx`, as the `onnx` flavor writes it, or its
//!   only `.onnx` file) and a `card.toml` made from the registry (description, the `owner` tag, the source run, the
//!   run's metrics, and a `sha256` tag, which the copy is then checked against);
//! - a registered model's tag `sluice.model_toml` is its `model.toml` (version policy, `[feedback]`, …);
//! - the files come from where MLflow keeps them: its proxied artifact store (`mlflow-artifacts:`), a directory this
//!   machine sees (`file:`), or an object store (`s3://`, `gs://`, …, opened as a bucket repository is).
//!
//! A version without an ONNX file is reported (the index and readiness body say why) and skipped. What a version's
//! files are is asked once per version and update time, so a poll of an unchanged registry costs one search of the
//! models and one of each model's versions.

pub mod aliases;
pub mod api;
pub mod tags;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{StreamExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt};

use self::api::{Api, ArtifactLocation, ModelVersion, RegisteredModel};
use super::layout::Listed;
use super::remote::{describe, relative, Listing, Opened, Remote};
use super::Bucket;
use crate::config::StorageSettings;
use crate::model::card::ModelCard;

/// Where one version's ONNX file is.
#[derive(Clone)]
enum ModelFile {
    Proxied(String),
    Local(PathBuf),
    Stored {
        store: Arc<dyn ObjectStore>,
        location: object_store::path::Path,
    },
}

/// What a version's files were found to be, for one update time of the version.
#[derive(Clone)]
struct Resolved {
    updated: i64,
    found: Result<(ModelFile, u64), String>,
    /// The metrics the version's run logged, for its card.
    metrics: BTreeMap<String, f64>,
}

/// The registered model's tag whose value is the model's `model.toml`.
pub const MODEL_TOML_TAG: &str = "sluice.model_toml";

/// The routing file sluice reads, made from the operator's ([`aliases`]).
pub const ROUTING_FILE: &str = "routing.toml";

pub struct Mlflow {
    /// As configured (`mlflow+http://…`).
    url: String,
    api: Api,
    storage: StorageSettings,
    /// The operator's routing file, whose aliases are resolved into [`ROUTING_FILE`].
    routing: Option<PathBuf>,
    /// The last routing file made (kept while the operator's does not parse).
    routed: Mutex<Option<Bytes>>,
    resolved: Mutex<HashMap<(String, u64), Resolved>>,
    /// The last listing's files by key: where each model file is, and the generated cards.
    files: Mutex<HashMap<String, Served>>,
}

#[derive(Clone)]
enum Served {
    Model(ModelFile),
    Generated(Bytes),
}

impl Mlflow {
    /// The registry behind `url` (`mlflow+http://host:port[/prefix]`). Artifacts in object stores are opened with
    /// the `[models.storage]` table.
    /// The tracking server's client (for the tags sluice writes back).
    pub fn api(&self) -> &Api {
        &self.api
    }

    pub fn new(url: &str, storage: &StorageSettings, routing: Option<PathBuf>) -> Mlflow {
        let base = url.strip_prefix("mlflow+").unwrap_or(url);
        Mlflow {
            url: url.to_owned(),
            api: Api::new(base),
            storage: storage.clone(),
            routing,
            routed: Mutex::default(),
            resolved: Mutex::default(),
            files: Mutex::default(),
        }
    }

    async fn listing(&self) -> Result<Listing, String> {
        let models = self
            .api
            .registered_models()
            .await
            .map_err(|e| e.to_string())?;
        let mut listing = Listing::default();
        let mut files = HashMap::new();
        let mut seen = std::collections::HashSet::new();
        for model in &models {
            if !usable_name(&model.name) {
                listing.skipped.push((
                    model.name.clone(),
                    "model".into(),
                    "its name cannot be a model name here (use letters, digits, '-', '_' and '.')"
                        .into(),
                ));
                continue;
            }
            let versions = self
                .api
                .versions(&model.name)
                .await
                .map_err(|e| e.to_string())?;
            for version in versions.iter().filter(|v| v.status == "READY") {
                let Ok(number) = version.version.parse::<u64>() else {
                    continue;
                };
                seen.insert((model.name.clone(), number));
                let resolved = self.resolve(&model.name, number, version).await?;
                let (file, size) = match resolved.found {
                    Ok(found) => found,
                    Err(why) => {
                        listing.skipped.push((
                            model.name.clone(),
                            format!("version {number}"),
                            why,
                        ));
                        continue;
                    }
                };
                let card = card(model, version, &resolved.metrics);
                let dir = format!("{}/{number}", model.name);
                // MLflow has no content tag: a version's files change only with its update time.
                listing.objects.push(Listed {
                    key: format!("{dir}/model.onnx"),
                    size,
                    e_tag: Some(format!("mlflow:{}:{size}", version.last_updated_timestamp)),
                    modified: SystemTime::UNIX_EPOCH,
                });
                files.insert(format!("{dir}/model.onnx"), Served::Model(file));
                generated(&mut listing, &mut files, format!("{dir}/card.toml"), card);
            }
            // The model's model.toml (version policy, [feedback], …), from the registered model's tag.
            if let Some(config) = model.tags.iter().find(|t| t.key == MODEL_TOML_TAG) {
                let key = format!("{}/model.toml", model.name);
                generated(
                    &mut listing,
                    &mut files,
                    key,
                    Bytes::from(config.value.clone()),
                );
            }
        }
        if let Some(routing) = self.routing(&models, &mut listing) {
            generated(&mut listing, &mut files, ROUTING_FILE.to_owned(), routing);
        }
        *self.files.lock().unwrap_or_else(PoisonError::into_inner) = files;
        // Versions no longer in the registry are forgotten.
        self.resolved
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|key, _| seen.contains(key));
        Ok(listing)
    }

    /// The operator's routing file with the registry's aliases resolved; while it cannot be read or parsed, the
    /// last one made (the routing stays as it was).
    fn routing(&self, models: &[RegisteredModel], listing: &mut Listing) -> Option<Bytes> {
        let path = self.routing.as_ref()?;
        let mut all = aliases::Aliases::new();
        for model in models {
            let versions = model
                .aliases
                .iter()
                .filter_map(|a| Some((a.alias.clone(), a.version.parse().ok()?)));
            all.entry(model.name.clone()).or_default().extend(versions);
        }
        let made = std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|template| aliases::resolve(&template, &all));
        let mut routed = self.routed.lock().unwrap_or_else(PoisonError::into_inner);
        match made {
            Ok((text, unresolved)) => {
                for (model, message) in unresolved {
                    listing.skipped.push((model, "routing".into(), message));
                }
                *routed = Some(Bytes::from(text));
            }
            Err(e) => tracing::warn!(
                file = %path.display(), error = %e,
                "routing file not read; the routing made from it last stays"
            ),
        }
        routed.clone()
    }

    /// Where a version's ONNX file is (asked again only when the version was updated). `Err`: MLflow could not be
    /// asked; a version without an ONNX file is `Ok` with the reason in `found`.
    async fn resolve(
        &self,
        model: &str,
        number: u64,
        version: &ModelVersion,
    ) -> Result<Resolved, String> {
        let key = (model.to_owned(), number);
        if let Some(known) = self
            .resolved
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .filter(|r| r.updated == version.last_updated_timestamp)
        {
            return Ok(known.clone());
        }
        let location = self
            .api
            .location(model, &version.version)
            .await
            .map_err(|e| e.to_string())?;
        let found = match self.find_onnx(&location).await {
            Ok(found) => found,
            Err(Unreachable(e)) => return Err(e),
        };
        // A run that cannot be read leaves the card without metrics, and the version is looked at again next poll.
        let run = version.run_id.as_deref().filter(|r| !r.is_empty());
        let metrics = match run {
            Some(run) => self.api.run_metrics(run).await.ok(),
            None => Some(BTreeMap::new()),
        };
        let resolved = Resolved {
            updated: version.last_updated_timestamp,
            found,
            metrics: metrics.clone().unwrap_or_default(),
        };
        if metrics.is_some() {
            self.resolved
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(key, resolved.clone());
        }
        Ok(resolved)
    }

    /// The ONNX file in a version's artifact directory: `model.onnx`, else its only `.onnx` file.
    async fn find_onnx(
        &self,
        location: &ArtifactLocation,
    ) -> Result<Result<(ModelFile, u64), String>, Unreachable> {
        // An object store is opened once: to list the directory and to read the file found.
        let dir = match location {
            ArtifactLocation::Proxied(dir) => Dir::Proxied(dir),
            ArtifactLocation::File(dir) => Dir::Local(dir),
            ArtifactLocation::Store(url) => Dir::Bucket(
                Bucket::open(url, &self.storage).map_err(|e| Unreachable(e.to_string()))?,
            ),
        };
        let files: Vec<(String, u64)> = match &dir {
            Dir::Proxied(dir) => self
                .api
                .list_proxied(dir)
                .await
                .map_err(|e| Unreachable(e.to_string()))?
                .into_iter()
                .filter(|f| !f.is_dir)
                .map(|f| {
                    let name = f.path.rsplit('/').next().unwrap_or(&f.path).to_owned();
                    (name, f.file_size.unwrap_or(0))
                })
                .collect(),
            Dir::Local(dir) => match std::fs::read_dir(dir) {
                Ok(entries) => entries
                    .flatten()
                    .filter_map(|e| {
                        let meta = e.metadata().ok().filter(|m| m.is_file())?;
                        Some((e.file_name().to_string_lossy().into_owned(), meta.len()))
                    })
                    .collect(),
                Err(e) => return Ok(Err(format!("{}: {e}", dir.display()))),
            },
            Dir::Bucket(bucket) => bucket
                .store
                .list_with_delimiter(Some(&bucket.prefix))
                .await
                .map_err(|e| Unreachable(describe(&e)))?
                .objects
                .into_iter()
                .filter_map(|o| Some((relative(&bucket.prefix, &o.location)?, o.size)))
                .collect(),
        };
        let onnx: Vec<&(String, u64)> =
            files.iter().filter(|(n, _)| n.ends_with(".onnx")).collect();
        let chosen = files
            .iter()
            .find(|(n, _)| n == "model.onnx")
            .or(match onnx.as_slice() {
                [only] => Some(*only),
                _ => None,
            });
        let Some((name, size)) = chosen else {
            let what = match location {
                ArtifactLocation::Proxied(dir) => format!("mlflow-artifacts:/{dir}"),
                ArtifactLocation::File(dir) => dir.display().to_string(),
                ArtifactLocation::Store(url) => url.clone(),
            };
            return Ok(Err(if onnx.is_empty() {
                format!("no ONNX file in its artifacts ({what}): not an ONNX model")
            } else {
                format!("several ONNX files in its artifacts ({what}) and none is model.onnx")
            }));
        };
        let file = match dir {
            Dir::Proxied(dir) => ModelFile::Proxied(format!("{dir}/{name}")),
            Dir::Local(dir) => ModelFile::Local(dir.join(name)),
            Dir::Bucket(bucket) => ModelFile::Stored {
                location: bucket.location(name),
                store: bucket.store,
            },
        };
        Ok(Ok((file, *size)))
    }
}

/// A version's artifact directory, ready to be listed.
enum Dir<'a> {
    Proxied(&'a str),
    Local(&'a std::path::Path),
    Bucket(Bucket),
}

/// A version's model card, from the registry.
fn card(model: &RegisteredModel, version: &ModelVersion, metrics: &BTreeMap<String, f64>) -> Bytes {
    let tag = |key: &str| {
        version
            .tags
            .iter()
            .chain(&model.tags)
            .find(|t| t.key == key)
            .map(|t| t.value.clone())
    };
    let nonempty = |text: &Option<String>| text.clone().filter(|d| !d.is_empty());
    let card = ModelCard {
        description: nonempty(&version.description).or_else(|| nonempty(&model.description)),
        owner: tag("owner"),
        source: Some(match version.run_id.as_deref().filter(|r| !r.is_empty()) {
            Some(run) => format!("mlflow run {run} ({})", version.source),
            None => version.source.clone(),
        }),
        metrics: metrics.clone(),
        sha256: tag("sha256"),
        ..ModelCard::default()
    };
    Bytes::from(toml::to_string(&card).unwrap_or_default())
}

/// Lists a file made here (tagged by its content) and keeps it to be served.
fn generated(
    listing: &mut Listing,
    files: &mut HashMap<String, Served>,
    key: String,
    bytes: Bytes,
) {
    listing.objects.push(Listed {
        key: key.clone(),
        size: bytes.len() as u64,
        e_tag: Some(crate::model::card::sha256_hex(&bytes)),
        modified: SystemTime::UNIX_EPOCH,
    });
    files.insert(key, Served::Generated(bytes));
}

/// MLflow did not answer: the listing fails as a whole.
struct Unreachable(String);

/// A registered model's name as a directory of the repository.
fn usable_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl Remote for Mlflow {
    fn url(&self) -> &str {
        &self.url
    }

    fn list(&self) -> BoxFuture<'_, Result<Listing, String>> {
        Box::pin(self.listing())
    }

    /// MLflow keeps no checksum: a card without a `sha256` tag gets the sha256 of the file downloaded.
    fn completes_cards(&self) -> bool {
        true
    }

    fn open<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Opened, String>> {
        Box::pin(async move {
            let served = self
                .files
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(key)
                .cloned()
                .ok_or_else(|| "no longer in the registry".to_owned())?;
            let body = match served {
                Served::Generated(bytes) => {
                    futures_util::stream::once(async move { Ok(bytes) }).boxed()
                }
                Served::Model(ModelFile::Proxied(path)) => self
                    .api
                    .download_proxied(&path)
                    .await
                    .map_err(|e| e.to_string())?
                    .bytes_stream()
                    .map_err(|e| describe(&e))
                    .boxed(),
                Served::Model(ModelFile::Local(path)) => {
                    let file = tokio::fs::File::open(&path)
                        .await
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    tokio_util::io::ReaderStream::new(file)
                        .map_err(|e| e.to_string())
                        .boxed()
                }
                Served::Model(ModelFile::Stored { store, location }) => store
                    .get(&location)
                    .await
                    .map_err(|e| describe(&e))?
                    .into_stream()
                    .map_err(|e| describe(&e))
                    .boxed(),
            };
            Ok(Opened { e_tag: None, body })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_names_that_cannot_be_directories_are_refused() {
        assert!(usable_name("iris-gbt_v2.1"));
        for bad in ["", ".hidden", "a/b", "../x", "naïve", "with space"] {
            assert!(!usable_name(bad), "{bad}");
        }
    }
}
