//! Where the model repository comes from: a local directory, a bucket (`s3://`, `gs://`, `az://`) or an MLflow Model
//! Registry (`mlflow+http://`, [`mlflow`]), the last two copied into a local cache that the registry loads from as
//! it loads a directory.
//!
//! [`Source::parse`] reads `models.repository`. For a bucket, [`Bucket::open`] builds the `object_store` client
//! (credentials from the provider's usual environment and instance or workload identity chains, plus the
//! `[models.storage]` table), and [`mirror::Mirror`] keeps the cache ([`cache`]) equal to what the bucket holds,
//! unit by unit ([`layout`]): every `models.poll_interval_ms` it lists the prefix, downloads what changed, checks it
//! (size, ETag, the model card's sha256) and installs each version in one step, then asks the repository manager
//! to reconcile. So everything the registry guarantees for a directory (no failed request across a swap, the schema
//! guard, the rollback line) holds for a bucket, and a store that stops answering leaves what is loaded serving.

pub mod cache;
pub mod layout;
pub mod mirror;
pub mod mlflow;
pub mod remote;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::{ClientConfigKey, ObjectStore, RetryConfig};

use self::mirror::MirrorSettings;
use crate::config::{Settings, StorageSettings};

/// Where `models.repository` points.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A directory on this machine.
    Local(PathBuf),
    /// A bucket URL (`s3://bucket/prefix`, `gs://…`, `az://container/prefix`).
    Bucket(String),
    /// An MLflow tracking server (`mlflow+http://host:port`, `mlflow+https://…`).
    Mlflow(String),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("model repository {0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("routing.file {file}: a URL must lie under models.repository ({url}/…)")]
    RoutingOutside { file: String, url: String },
    #[error("models.repository {0}: unsupported scheme (use a directory, s3://, gs://, az://, mlflow+http:// or mlflow+https://)")]
    Scheme(String),
    #[error("models.repository {url}: {message}")]
    Client { url: String, message: String },
    #[error("model cache {path}: {source}")]
    Cache {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Source {
    /// Reads `models.repository`: a URL with a scheme is a bucket (`file://` a directory), anything else a path.
    pub fn parse(repository: &Path) -> Result<Source, StoreError> {
        let text = repository.to_string_lossy();
        let Some((scheme, rest)) = text.split_once("://") else {
            return Ok(Source::Local(repository.to_path_buf()));
        };
        match scheme {
            "file" => Ok(Source::Local(PathBuf::from(rest))),
            "s3" | "s3a" | "gs" | "az" | "azure" | "abfs" | "abfss" => {
                Ok(Source::Bucket(text.trim_end_matches('/').to_owned()))
            }
            "mlflow+http" | "mlflow+https" => {
                Ok(Source::Mlflow(text.trim_end_matches('/').to_owned()))
            }
            _ => Err(StoreError::Scheme(text.into_owned())),
        }
    }
}

/// An opened bucket repository: its client and the prefix the repository lives under.
pub struct Bucket {
    pub url: String,
    pub store: Arc<dyn ObjectStore>,
    pub prefix: object_store::path::Path,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket").field("url", &self.url).finish()
    }
}

impl Bucket {
    /// The object at `key` (relative to the repository, `/`-separated) in the store.
    pub fn location(&self, key: &str) -> object_store::path::Path {
        key.split('/')
            .fold(self.prefix.clone(), |path, part| path.join(part))
    }

    /// Builds the client for `url`. Requests give up quickly (a few retries within 10 s) so an outage is reported
    /// and retried by the mirror's own back-off rather than hidden in one call; a download has no overall deadline
    /// (a large model takes what it takes) but stalls are cut by the mirror.
    pub fn open(url: &str, settings: &StorageSettings) -> Result<Bucket, StoreError> {
        let client_error = |e: object_store::Error| StoreError::Client {
            url: url.to_owned(),
            message: e.to_string(),
        };
        let parsed = url::Url::parse(url).map_err(|e| StoreError::Client {
            url: url.to_owned(),
            message: e.to_string(),
        })?;
        // Set key by key: client options from the environment (AWS_ALLOW_HTTP, proxies, ...) stay.
        let client = [
            (ClientConfigKey::ConnectTimeout, "5s"),
            // No overall deadline: a large model takes what it takes; the mirror cuts stalls and slow listings.
            (ClientConfigKey::Timeout, "1h"),
        ];
        let retry = RetryConfig {
            max_retries: 2,
            retry_timeout: Duration::from_secs(10),
            ..RetryConfig::default()
        };
        let store: Arc<dyn ObjectStore> = match parsed.scheme() {
            "s3" | "s3a" => {
                let mut builder = AmazonS3Builder::from_env().with_url(url).with_retry(retry);
                for (key, value) in client {
                    builder = builder.with_config(AmazonS3ConfigKey::Client(key), value);
                }
                if settings.allow_http {
                    builder = builder.with_allow_http(true);
                }
                if !settings.endpoint.is_empty() {
                    builder = builder.with_endpoint(&settings.endpoint);
                }
                if !settings.region.is_empty() {
                    builder = builder.with_region(&settings.region);
                }
                Arc::new(builder.build().map_err(client_error)?)
            }
            "gs" => {
                let mut builder = GoogleCloudStorageBuilder::from_env()
                    .with_url(url)
                    .with_retry(retry);
                for (key, value) in client {
                    builder = builder.with_config(GoogleConfigKey::Client(key), value);
                }
                if settings.allow_http {
                    builder = builder
                        .with_config(GoogleConfigKey::Client(ClientConfigKey::AllowHttp), "true");
                }
                Arc::new(builder.build().map_err(client_error)?)
            }
            _ => {
                let mut builder = MicrosoftAzureBuilder::from_env()
                    .with_url(url)
                    .with_retry(retry);
                for (key, value) in client {
                    builder = builder.with_config(AzureConfigKey::Client(key), value);
                }
                if settings.allow_http {
                    builder = builder.with_allow_http(true);
                }
                if !settings.endpoint.is_empty() {
                    builder = builder.with_endpoint(settings.endpoint.clone());
                }
                Arc::new(builder.build().map_err(client_error)?)
            }
        };
        // The bucket (or container) is the URL's host; the prefix is its path.
        let prefix = object_store::path::Path::from(parsed.path().trim_matches('/'));
        Ok(Bucket {
            url: url.to_owned(),
            store,
            prefix,
        })
    }
}

/// A repository that is copied: where from, where to, and how often.
pub struct RemoteRepository {
    pub remote: Box<dyn remote::Remote>,
    pub cache_dir: PathBuf,
    pub timing: MirrorSettings,
    /// Where automatic rollbacks are written back.
    pub writeback: Option<Writeback>,
}

/// Where automatic rollbacks are written back, so they hold on every replica or show where the models live.
pub enum Writeback {
    /// The routing file in the bucket.
    RoutingFile(Arc<dyn ObjectStore>, object_store::path::Path),
    /// Tags on the MLflow versions switched off.
    VersionTags(mlflow::api::Api),
}

/// Where the registry loads from: a local repository as configured, or for a bucket its cache directory's tree,
/// with `routing.file` given as a URL under the bucket's prefix taken from that tree too. Returns the settings
/// pointing there, and the bucket to copy with its cache directory and timing. The settle time applies to the
/// bucket's uploads; the copy is installed whole, so the registry need not wait on it.
pub fn locate(mut settings: Settings) -> Result<(Settings, Option<RemoteRepository>), StoreError> {
    let (url, bucket) = match Source::parse(&settings.models.repository)? {
        Source::Local(path) => {
            if !path.is_dir() {
                return Err(StoreError::NotADirectory(path));
            }
            settings.models.repository = path;
            return Ok((settings, None));
        }
        Source::Bucket(url) => {
            let bucket = Bucket::open(&url, &settings.models.storage)?;
            (url, Some(bucket))
        }
        Source::Mlflow(url) => (url, None),
    };
    let cache_dir = cache_dir(&settings.models.cache_dir, &url);
    let tree = cache::Cache::tree(&cache_dir);
    let mut routing_key = None;
    if let Some(file) = settings.routing.file() {
        let file = file.to_string_lossy().into_owned();
        if file.contains("://") {
            if bucket.is_none() {
                return Err(StoreError::RoutingOutside { file, url });
            }
            let Some(key) = file.strip_prefix(&format!("{url}/")) else {
                return Err(StoreError::RoutingOutside { file, url });
            };
            settings.routing.file = tree.join(key);
            routing_key = Some(key.to_owned());
        }
    }
    let timing = MirrorSettings {
        poll_interval: Duration::from_millis(settings.models.poll_interval_ms),
        settle: Duration::from_millis(settings.models.settle_ms),
        max_bytes: settings.models.cache_max_bytes,
    };
    settings.models.repository = tree.clone();
    settings.models.settle_ms = 0;
    let (remote, writeback): (Box<dyn remote::Remote>, _) = match bucket {
        Some(bucket) => {
            let writeback = routing_key.map(|key| {
                Writeback::RoutingFile(Arc::clone(&bucket.store), bucket.location(&key))
            });
            (Box::new(bucket), writeback)
        }
        None => {
            // The operator's routing file names aliases; the one sluice reads is made from it in the copy.
            let template = settings.routing.file().map(Path::to_path_buf);
            if template.is_some() {
                settings.routing.file = tree.join(mlflow::ROUTING_FILE);
            }
            let registry = mlflow::Mlflow::new(&url, &settings.models.storage, template);
            let tags = Writeback::VersionTags(registry.api().clone());
            (Box::new(registry), Some(tags))
        }
    };
    Ok((
        settings,
        Some(RemoteRepository {
            remote,
            cache_dir,
            timing,
            writeback,
        }),
    ))
}

/// The cache directory for `url`: `models.cache_dir`, or one under the system's temporary directory named after
/// the URL.
pub fn cache_dir(configured: &Path, url: &str) -> PathBuf {
    if !configured.as_os_str().is_empty() {
        return configured.to_path_buf();
    }
    let name: String = url
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    std::env::temp_dir().join("sluice-cache").join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_parse_as_paths_or_buckets() {
        let parse = |s: &str| Source::parse(Path::new(s));
        assert_eq!(parse("models").unwrap(), Source::Local("models".into()));
        assert_eq!(
            parse("file:///srv/models").unwrap(),
            Source::Local("/srv/models".into())
        );
        assert_eq!(
            parse("s3://bucket/team/models/").unwrap(),
            Source::Bucket("s3://bucket/team/models".into())
        );
        assert_eq!(parse("gs://b").unwrap(), Source::Bucket("gs://b".into()));
        let error = parse("ftp://host/models").unwrap_err().to_string();
        assert!(error.contains("unsupported scheme"), "{error}");
    }

    #[test]
    fn s3_urls_open_with_the_storage_table() {
        let settings = StorageSettings {
            endpoint: "http://127.0.0.1:9".into(),
            region: "eu-west-1".into(),
            allow_http: true,
        };
        let bucket = Bucket::open("s3://models/team/a", &settings).unwrap();
        assert_eq!(bucket.prefix.as_ref(), "team/a");
        assert_eq!(
            cache_dir(Path::new(""), "s3://models/team/a"),
            std::env::temp_dir().join("sluice-cache/s3___models_team_a")
        );
    }
}
