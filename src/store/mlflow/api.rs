//! The part of the MLflow tracking server's REST API (`/api/2.0/mlflow/…`, `/api/2.0/mlflow-artifacts/…`) a model
//! repository needs: registered models with their aliases and tags, their versions, where each version's files
//! are, those files, the metrics of the run that made a version, and tags written back on a version.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// How long one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Page size of the search calls.
const PAGE: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{what}: {source}")]
    Transport {
        what: String,
        source: reqwest::Error,
    },
    #[error("{what}: HTTP {status}: {body}")]
    Status {
        what: String,
        status: u16,
        body: String,
    },
    #[error("{what}: unexpected answer: {source}")]
    Body {
        what: String,
        source: serde_json::Error,
    },
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Tag {
    pub key: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Alias {
    pub alias: String,
    pub version: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct RegisteredModel {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub tags: Vec<Tag>,
    #[serde(default)]
    pub aliases: Vec<Alias>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ModelVersion {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub run_id: Option<String>,
    /// `READY` once its files are in place (`PENDING_REGISTRATION`, `FAILED_REGISTRATION` before or instead).
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub tags: Vec<Tag>,
    #[serde(default)]
    pub last_updated_timestamp: i64,
}

/// One entry of an artifact listing.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct FileInfo {
    pub path: String,
    #[serde(default)]
    pub is_dir: bool,
    #[serde(default)]
    pub file_size: Option<u64>,
}

/// Where a version's files are, from its download URI.
#[derive(Debug, Clone, PartialEq)]
pub enum ArtifactLocation {
    /// `mlflow-artifacts:/<path>`: served by the tracking server itself (its proxied artifact store).
    Proxied(String),
    /// `file:///…` or a bare path: a directory this machine sees.
    File(std::path::PathBuf),
    /// Any other scheme (`s3://`, `gs://`, …): an object store.
    Store(String),
}

impl ArtifactLocation {
    pub fn parse(uri: &str) -> ArtifactLocation {
        if let Some(rest) = uri.strip_prefix("mlflow-artifacts:") {
            // `mlflow-artifacts:/0/<run>/artifacts/model`, or with an authority: `mlflow-artifacts://host:port/0/…`.
            let path = match rest.strip_prefix("//") {
                Some(with_host) => with_host.split_once('/').map_or("", |(_, p)| p),
                None => rest,
            };
            return ArtifactLocation::Proxied(path.trim_matches('/').to_owned());
        }
        if let Some(path) = uri.strip_prefix("file://") {
            return ArtifactLocation::File(path.into());
        }
        if !uri.contains("://") {
            return ArtifactLocation::File(uri.into());
        }
        ArtifactLocation::Store(uri.trim_end_matches('/').to_owned())
    }
}

/// A client of one tracking server.
#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct ModelsPage {
    #[serde(default)]
    registered_models: Vec<RegisteredModel>,
    #[serde(default)]
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
struct VersionsPage {
    #[serde(default)]
    model_versions: Vec<ModelVersion>,
    #[serde(default)]
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
struct DownloadUri {
    artifact_uri: String,
}

#[derive(Deserialize)]
struct Files {
    #[serde(default)]
    files: Vec<FileInfo>,
}

#[derive(Deserialize)]
struct RunReply {
    run: Run,
}

#[derive(Deserialize)]
struct Run {
    #[serde(default)]
    data: RunData,
}

#[derive(Deserialize, Default)]
struct RunData {
    #[serde(default)]
    metrics: Vec<Metric>,
}

#[derive(Deserialize)]
struct Metric {
    key: String,
    value: f64,
}

impl Api {
    /// A client of the tracking server at `base` (`http://host:port`, `https://…`, with or without a path prefix).
    pub fn new(base: &str) -> Api {
        Api {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, ApiError> {
        let response = self
            .http
            .get(format!("{}/api/2.0/{path}", self.base))
            .query(query)
            .timeout(CALL_TIMEOUT)
            .send()
            .await
            .map_err(|source| ApiError::Transport {
                what: what.to_owned(),
                source,
            })?;
        decode(what, response).await
    }

    /// Every registered model, with its tags and aliases.
    pub async fn registered_models(&self) -> Result<Vec<RegisteredModel>, ApiError> {
        let mut models = Vec::new();
        let mut token: Option<String> = None;
        let page = PAGE.to_string();
        loop {
            let mut query = vec![("max_results", page.as_str())];
            if let Some(t) = &token {
                query.push(("page_token", t));
            }
            let reply: ModelsPage = self
                .get(
                    "listing registered models",
                    "mlflow/registered-models/search",
                    &query,
                )
                .await?;
            models.extend(reply.registered_models);
            match reply.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t),
                None => return Ok(models),
            }
        }
    }

    /// Every version of a registered model.
    pub async fn versions(&self, model: &str) -> Result<Vec<ModelVersion>, ApiError> {
        let filter = format!("name='{}'", model.replace('\'', "\\'"));
        let what = format!("listing the versions of '{model}'");
        let mut versions = Vec::new();
        let mut token: Option<String> = None;
        let page = PAGE.to_string();
        loop {
            let mut query = vec![("filter", filter.as_str()), ("max_results", page.as_str())];
            if let Some(t) = &token {
                query.push(("page_token", t));
            }
            let reply: VersionsPage = self
                .get(&what, "mlflow/model-versions/search", &query)
                .await?;
            versions.extend(reply.model_versions);
            match reply.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t),
                None => return Ok(versions),
            }
        }
    }

    /// Where a version's files are.
    pub async fn location(&self, model: &str, version: &str) -> Result<ArtifactLocation, ApiError> {
        let reply: DownloadUri = self
            .get(
                &format!("locating '{model}' version {version}"),
                "mlflow/model-versions/get-download-uri",
                &[("name", model), ("version", version)],
            )
            .await?;
        Ok(ArtifactLocation::parse(&reply.artifact_uri))
    }

    /// The files directly under a path of the proxied artifact store.
    pub async fn list_proxied(&self, path: &str) -> Result<Vec<FileInfo>, ApiError> {
        let reply: Files = self
            .get(
                &format!("listing artifacts {path}"),
                "mlflow-artifacts/artifacts",
                &[("path", path)],
            )
            .await?;
        Ok(reply.files)
    }

    /// Starts downloading a file of the proxied artifact store; the caller streams the body.
    pub async fn download_proxied(&self, path: &str) -> Result<reqwest::Response, ApiError> {
        let what = format!("downloading artifact {path}");
        let response = self
            .http
            .get(format!(
                "{}/api/2.0/mlflow-artifacts/artifacts/{path}",
                self.base
            ))
            .send()
            .await
            .map_err(|source| ApiError::Transport {
                what: what.clone(),
                source,
            })?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(status_error(what, response).await)
        }
    }

    /// The latest value of each metric the run logged.
    pub async fn run_metrics(&self, run_id: &str) -> Result<BTreeMap<String, f64>, ApiError> {
        let reply: RunReply = self
            .get(
                &format!("reading run {run_id}"),
                "mlflow/runs/get",
                &[("run_id", run_id)],
            )
            .await?;
        Ok(reply
            .run
            .data
            .metrics
            .into_iter()
            .map(|m| (m.key, m.value))
            .collect())
    }

    /// Sets a tag on a version (how sluice's verdicts show in the registry).
    pub async fn set_version_tag(
        &self,
        model: &str,
        version: &str,
        key: &str,
        value: &str,
    ) -> Result<(), ApiError> {
        let what = format!("tagging '{model}' version {version}");
        let response = self
            .http
            .post(format!(
                "{}/api/2.0/mlflow/model-versions/set-tag",
                self.base
            ))
            .json(&serde_json::json!({
                "name": model, "version": version, "key": key, "value": value,
            }))
            .timeout(CALL_TIMEOUT)
            .send()
            .await
            .map_err(|source| ApiError::Transport {
                what: what.clone(),
                source,
            })?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(status_error(what, response).await)
        }
    }
}

async fn decode<T: serde::de::DeserializeOwned>(
    what: &str,
    response: reqwest::Response,
) -> Result<T, ApiError> {
    if !response.status().is_success() {
        return Err(status_error(what.to_owned(), response).await);
    }
    let bytes = response
        .bytes()
        .await
        .map_err(|source| ApiError::Transport {
            what: what.to_owned(),
            source,
        })?;
    serde_json::from_slice(&bytes).map_err(|source| ApiError::Body {
        what: what.to_owned(),
        source,
    })
}

async fn status_error(what: String, response: reqwest::Response) -> ApiError {
    let status = response.status().as_u16();
    let mut body = response.text().await.unwrap_or_default();
    body.truncate(300);
    ApiError::Status { what, status, body }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_uris_name_where_the_files_are() {
        let proxied = |p: &str| ArtifactLocation::Proxied(p.into());
        let file = |p: &str| ArtifactLocation::File(p.into());
        let cases = [
            (
                "mlflow-artifacts:/0/0689/artifacts/model",
                proxied("0/0689/artifacts/model"),
            ),
            (
                "mlflow-artifacts://mlflow:5000/0/0689/artifacts/model/",
                proxied("0/0689/artifacts/model"),
            ),
            (
                "file:///srv/mlruns/0/0689/artifacts/model",
                file("/srv/mlruns/0/0689/artifacts/model"),
            ),
            ("/srv/mlruns/0/x", file("/srv/mlruns/0/x")),
            (
                "s3://bucket/mlruns/0/x/",
                ArtifactLocation::Store("s3://bucket/mlruns/0/x".into()),
            ),
        ];
        for (uri, expected) in cases {
            assert_eq!(ArtifactLocation::parse(uri), expected, "{uri}");
        }
    }

    /// A registered model as `mlflow server` 3.17 answers it.
    #[test]
    fn registered_models_read_with_aliases_and_tags() {
        let page: ModelsPage = serde_json::from_str(
            r#"{"registered_models": [{"name": "iris2", "creation_timestamp": 1796596950817,
                "description": "Iris classifier", "latest_versions": [],
                "tags": [{"key": "owner", "value": "team-a"}],
                "aliases": [{"alias": "champion", "version": "1"}]},
               {"name": "bare", "creation_timestamp": 1}]}"#,
        )
        .unwrap();
        assert_eq!(page.registered_models.len(), 2);
        let m = &page.registered_models[0];
        assert_eq!(m.aliases[0].alias, "champion");
        assert_eq!(m.aliases[0].version, "1");
        assert_eq!(m.tags[0].value, "team-a");
        assert!(page.registered_models[1].aliases.is_empty());
        assert!(page.next_page_token.is_none());
    }
}
