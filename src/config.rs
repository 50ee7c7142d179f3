//! Server settings: embedded defaults, then an optional file, then `SLUICE__SECTION__KEY` environment variables,
//! then the main CLI flags, merged with the `config` crate.
//!
//! Owns [`Settings`] and its validation. Every key sluice understands appears in the embedded defaults
//! (`sluice.default.toml`), so a key that is not there is reported as unknown, with its full dotted name. Knows
//! nothing about HTTP.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat, Map, Value, ValueKind};
use serde::Deserialize;

/// The embedded defaults, also the list of every known key.
pub const DEFAULTS: &str = include_str!("sluice.default.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub models: ModelsSettings,
    pub runtime: RuntimeSettings,
    pub limits: Limits,
    pub log: LogSettings,
    pub admin: AdminSettings,
    pub routing: RoutingSettings,
    pub auth: AuthSettings,
    pub monitoring: MonitoringSettings,
    pub payload_log: PayloadLogSettings,
    pub tracing: TracingSettings,
    pub feedback: FeedbackSettings,
}

/// Outcome feedback: the store of predictions awaiting their truth, the quality window, the retraining webhook.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackSettings {
    pub max_pending: usize,
    pub max_age_s: u64,
    pub window: usize,
    pub max_classes: usize,
    pub webhook: String,
    pub webhook_min_interval_s: u64,
}

/// Distributed tracing: OTLP export of a span per request and its phases.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingSettings {
    pub enabled: bool,
    /// The collector's OTLP endpoint; empty: the standard `OTEL_EXPORTER_OTLP_*` variables, else the protocol's
    /// default on localhost.
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    /// Share of new traces recorded; a caller's sampling decision (its `traceparent`) is followed.
    pub sample_ratio: f64,
    /// `service.name`; empty: `OTEL_SERVICE_NAME`, else "sluice".
    pub service_name: String,
    /// More resource attributes, `key=value,key=value` (as `OTEL_RESOURCE_ATTRIBUTES`, which also applies).
    pub resource_attributes: String,
    /// Spans waiting for export; beyond it new spans are dropped and counted.
    pub queue_capacity: usize,
    pub batch_size: usize,
    pub export_interval_ms: u64,
    pub export_timeout_ms: u64,
}

impl TracingSettings {
    /// `resource_attributes` as (key, value) pairs, or the pair that is not `key=value`.
    pub fn resource_pairs(&self) -> Result<Vec<(String, String)>, String> {
        self.resource_attributes
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|pair| match pair.split_once('=') {
                Some((key, value)) if !key.trim().is_empty() => {
                    Ok((key.trim().to_owned(), value.trim().to_owned()))
                }
                _ => Err(pair.to_owned()),
            })
            .collect()
    }
}

/// How spans are sent to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum OtlpProtocol {
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    #[serde(rename = "grpc")]
    Grpc,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayloadLogSettings {
    pub sink: String,
    pub path: PathBuf,
    pub max_file_bytes: u64,
    pub max_files: usize,
    pub url: String,
    pub buffer: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitoringSettings {
    pub drift_window: usize,
    pub drift_min_rows: usize,
    pub drift_warn: f64,
    pub drift_alert: f64,
    pub drift_webhook: String,
    pub webhook_min_interval_s: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingSettings {
    /// Empty means "no routing file".
    pub file: PathBuf,
    pub shadow_queue_capacity: usize,
    pub shadow_delay_ms: u64,
}

impl RoutingSettings {
    pub fn file(&self) -> Option<&Path> {
        Some(self.file.as_path()).filter(|p| !p.as_os_str().is_empty())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    pub max_body_bytes: usize,
    pub request_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub shutdown_delay_ms: u64,
    pub shutdown_grace_ms: u64,
    pub metrics_port: u16,
    pub grpc_port: u16,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub cors_allowed_origins: Vec<String>,
    pub compress_min_bytes: usize,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub api_keys: Vec<String>,
    pub api_keys_file: PathBuf,
}

impl std::fmt::Debug for AuthSettings {
    /// Never prints a key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field(
                "api_keys",
                &format_args!("<{} redacted>", self.api_keys.len()),
            )
            .field("api_keys_file", &self.api_keys_file)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelsSettings {
    /// A directory, or a bucket URL (`s3://`, `gs://`, `az://`).
    pub repository: PathBuf,
    /// Where a bucket repository is copied to; empty: under the temporary directory.
    pub cache_dir: PathBuf,
    /// Most bytes the copy of a bucket may hold; 0: no cap.
    pub cache_max_bytes: u64,
    pub storage: StorageSettings,
    pub watch: bool,
    pub poll_interval_ms: u64,
    pub settle_ms: u64,
    pub strict_readiness: bool,
    pub load_concurrency: usize,
    /// When models without a `load` in `model.toml` load.
    pub default_load: LoadMode,
    /// Most models resident at once; beyond it the least recently used lazy model is unloaded. 0: no cap.
    pub max_loaded_models: usize,
    /// Most estimated bytes of resident versions; beyond it the least recently used lazy versions are unloaded.
    /// 0: no cap.
    pub max_loaded_bytes: u64,
    /// How long a request waits for its lazy model to load before 503.
    pub lazy_load_timeout_ms: u64,
}

/// `[models.storage]`: the object store of a bucket repository, beyond what the provider's environment says.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    /// The store's URL (MinIO, SeaweedFS, Ceph, an S3 or Azure emulator); empty: the provider's (or
    /// `AWS_ENDPOINT_URL`).
    pub endpoint: String,
    /// The bucket's region (S3); empty: `AWS_REGION` / `AWS_DEFAULT_REGION`, else us-east-1.
    pub region: String,
    /// Allow plain `http://` endpoints (also `AWS_ALLOW_HTTP=true`).
    pub allow_http: bool,
}

/// When a model's versions load (`load` in `model.toml`, `models.default_load`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadMode {
    /// At start-up and on every change, as files arrive.
    #[default]
    Eager,
    /// Listed and described at once, loaded on its first request; may be evicted when `models.max_loaded_models`
    /// is reached.
    Lazy,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    pub token: String,
    pub token_file: PathBuf,
    pub port: u16,
    /// The address of the `admin.port` listener; empty: `server.host`.
    pub host: String,
    /// `false` opens the management API on `admin.port` without a token, for trusted tooling (Triton's) that sends
    /// none; refused unless `admin.port` is set, so the inference port never serves it open.
    pub require_token: bool,
}

/// Who may call the management API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminAccess {
    /// No token configured: the API answers 403.
    Disabled,
    /// Callers present this bearer token.
    Token(std::sync::Arc<str>),
    /// Open, on `admin.port` only (`admin.require_token = false`).
    Open,
}

impl std::fmt::Debug for AdminSettings {
    /// Never prints the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSettings")
            .field(
                "token",
                &if self.token.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .field("token_file", &self.token_file)
            .field("port", &self.port)
            .field("host", &self.host)
            .field("require_token", &self.require_token)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSettings {
    /// Empty means "not configured".
    pub library: PathBuf,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_tensor_elements: usize,
    pub max_json_depth: usize,
    pub max_concurrent_requests: usize,
    pub max_queued_requests: usize,
    pub max_queue_per_version: usize,
    /// Bytes requests in flight may hold together; 0: sized from the memory limit (`memory::plan`).
    pub max_inflight_bytes: usize,
    /// How long a request waits for memory before it is refused with 503.
    pub memory_wait_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
    /// An INFO line for every request (failures are logged either way).
    pub access: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum LogFormat {
    Text,
    Json,
}

impl TryFrom<String> for LogFormat {
    type Error = String;

    fn try_from(value: String) -> Result<LogFormat, String> {
        match value.as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("'{other}' is not a log format; use text or json")),
        }
    }
}

/// Values given on the command line; each overrides the same key from every other source.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub models: Option<PathBuf>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub onnxruntime: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown configuration key `{key}` (from {origin})")]
    UnknownKey { key: String, origin: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("invalid configuration: `{key}`: {message}")]
    InvalidValue { key: &'static str, message: String },
}

/// A configuration file that is not valid TOML, reported on one line with the place of the first error.
fn check_toml_syntax(path: &Path) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::Invalid(format!(
            "cannot read the configuration file {}: {e}",
            path.display()
        ))
    })?;
    let Err(e) = toml::from_str::<toml::Table>(&text) else {
        return Ok(());
    };
    let place = e.span().map_or_else(String::new, |span| {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        format!(" line {line}, column {column}")
    });
    Err(ConfigError::Invalid(format!(
        "{}{place}: {}",
        path.display(),
        e.message().trim().replace('\n', "; ")
    )))
}

impl Settings {
    /// Loads settings from every source, reading environment variables from the process.
    pub fn load(overrides: &Overrides) -> Result<Settings, ConfigError> {
        Self::load_with_env(overrides, None)
    }

    /// As [`Settings::load`], with the environment given explicitly (for tests) when `env` is `Some`.
    pub fn load_with_env(
        overrides: &Overrides,
        env: Option<Map<String, String>>,
    ) -> Result<Settings, ConfigError> {
        let defaults = Config::builder()
            .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
            .build()
            .map_err(|e| ConfigError::Invalid(format!("embedded defaults: {e}")))?;
        let known = leaf_keys(&defaults.cache);

        let mut builder = Config::builder().add_source(defaults);
        if let Some(path) = &overrides.config_file {
            check_toml_syntax(path)?;
            builder = builder.add_source(File::from(path.as_path()).format(FileFormat::Toml));
        }
        let mut environment = Environment::with_prefix("SLUICE")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .list_separator(",")
            .with_list_parse_key("auth.api_keys")
            .with_list_parse_key("server.cors_allowed_origins");
        if let Some(vars) = env {
            environment = environment.source(Some(vars));
        }
        builder = builder.add_source(environment);
        builder = apply_overrides(builder, overrides)?;
        let merged = builder
            .build()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;

        if let Some((key, origin)) = first_unknown_key(&merged.cache, &known) {
            return Err(ConfigError::UnknownKey { key, origin });
        }
        let settings: Settings = merged
            .try_deserialize()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.limits.max_tensor_elements == 0 {
            return Err(ConfigError::InvalidValue {
                key: "limits.max_tensor_elements",
                message: "must be at least 1".into(),
            });
        }
        for (key, value) in [
            ("feedback.max_pending", self.feedback.max_pending),
            ("feedback.window", self.feedback.window),
        ] {
            if value == 0 {
                return Err(ConfigError::InvalidValue {
                    key,
                    message: "must be at least 1".into(),
                });
            }
        }
        if !self.feedback.webhook.is_empty() && !self.feedback.webhook.starts_with("http") {
            return Err(ConfigError::InvalidValue {
                key: "feedback.webhook",
                message: format!(
                    "'{}' is not an http:// or https:// URL",
                    self.feedback.webhook
                ),
            });
        }
        if self.server.max_body_bytes == 0 {
            return Err(ConfigError::InvalidValue {
                key: "server.max_body_bytes",
                message: "must be at least 1".into(),
            });
        }
        let (cert, key) = (&self.server.tls_cert, &self.server.tls_key);
        if cert.as_os_str().is_empty() != key.as_os_str().is_empty() {
            let (set, missing) = if key.as_os_str().is_empty() {
                ("server.tls_cert", "server.tls_key")
            } else {
                ("server.tls_key", "server.tls_cert")
            };
            return Err(ConfigError::InvalidValue {
                key: missing,
                message: format!(
                    "is empty while {set} is set; TLS needs both the certificate and the key (or neither, for plain HTTP)"
                ),
            });
        }
        if self.server.metrics_port != 0 && self.server.metrics_port == self.server.port {
            return Err(ConfigError::InvalidValue {
                key: "server.metrics_port",
                message: format!(
                    "{} is also server.port; give /metrics another port, or 0 to serve it on the main port",
                    self.server.metrics_port
                ),
            });
        }
        if self.admin.port != 0
            && (self.admin.port == self.server.port || self.admin.port == self.server.metrics_port)
        {
            return Err(ConfigError::InvalidValue {
                key: "admin.port",
                message: format!(
                    "{} is also server.port or server.metrics_port; give the management API a port of its own, or 0 \
                     to serve it on the main port",
                    self.admin.port
                ),
            });
        }
        let grpc = self.server.grpc_port;
        if grpc != 0
            && [self.server.port, self.server.metrics_port, self.admin.port].contains(&grpc)
        {
            return Err(ConfigError::InvalidValue {
                key: "server.grpc_port",
                message: format!(
                    "{grpc} is also server.port, server.metrics_port or admin.port; give gRPC a port of its own, or 0 \
                     to turn it off"
                ),
            });
        }
        if self.models.load_concurrency == 0 {
            return Err(ConfigError::InvalidValue {
                key: "models.load_concurrency",
                message: "must be at least 1".into(),
            });
        }
        if !(0.0..=1.0).contains(&self.tracing.sample_ratio) {
            return Err(ConfigError::InvalidValue {
                key: "tracing.sample_ratio",
                message: format!(
                    "{} is not a share between 0 and 1",
                    self.tracing.sample_ratio
                ),
            });
        }
        if let Err(pair) = self.tracing.resource_pairs() {
            return Err(ConfigError::InvalidValue {
                key: "tracing.resource_attributes",
                message: format!("'{pair}' is not key=value"),
            });
        }
        if self
            .log
            .level
            .parse::<tracing_subscriber::EnvFilter>()
            .is_err()
        {
            return Err(ConfigError::InvalidValue {
                key: "log.level",
                message: format!("'{}' is not a tracing filter", self.log.level),
            });
        }
        Ok(())
    }

    /// Who may call the management API: open (`admin.require_token = false`, on `admin.port` only), else the
    /// bearer token `admin.token` or the contents of `admin.token_file`, else nobody (the API is disabled).
    pub fn admin_access(&self) -> Result<AdminAccess, ConfigError> {
        let has_token =
            !self.admin.token.is_empty() || !self.admin.token_file.as_os_str().is_empty();
        if !self.admin.require_token {
            if self.admin.port == 0 {
                return Err(ConfigError::InvalidValue {
                    key: "admin.require_token",
                    message: "is false while admin.port is 0: the management API would be open on the inference \
                              port; give it a port of its own (admin.port, outside the Service) to open it"
                        .into(),
                });
            }
            if has_token {
                return Err(ConfigError::InvalidValue {
                    key: "admin.require_token",
                    message: "is false while admin.token or admin.token_file is set; keep the token (and \
                              require_token = true) or remove it"
                        .into(),
                });
            }
            return Ok(AdminAccess::Open);
        }
        Ok(match self.admin_token()? {
            Some(token) => AdminAccess::Token(token.into()),
            None => AdminAccess::Disabled,
        })
    }

    /// The management API's bearer token: `admin.token`, else the contents of `admin.token_file`, else `None`.
    fn admin_token(&self) -> Result<Option<String>, ConfigError> {
        if !self.admin.token.is_empty() {
            return Ok(Some(self.admin.token.clone()));
        }
        if self.admin.token_file.as_os_str().is_empty() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&self.admin.token_file).map_err(|e| {
            ConfigError::InvalidValue {
                key: "admin.token_file",
                message: format!("{}: {e}", self.admin.token_file.display()),
            }
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(ConfigError::InvalidValue {
                key: "admin.token_file",
                message: "the file is empty".into(),
            });
        }
        Ok(Some(token.to_owned()))
    }

    /// Every API key: `auth.api_keys` plus the non-empty lines of `auth.api_keys_file`. Empty: no key required.
    pub fn api_keys(&self) -> Result<Vec<String>, ConfigError> {
        let mut keys: Vec<String> = self
            .auth
            .api_keys
            .iter()
            .map(|k| k.trim())
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect();
        if !self.auth.api_keys_file.as_os_str().is_empty() {
            let text = std::fs::read_to_string(&self.auth.api_keys_file).map_err(|e| {
                ConfigError::InvalidValue {
                    key: "auth.api_keys_file",
                    message: format!("{}: {e}", self.auth.api_keys_file.display()),
                }
            })?;
            keys.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned),
            );
        }
        Ok(keys)
    }

    /// TLS certificate and key files, when both are set.
    pub fn tls_files(&self) -> Option<(&Path, &Path)> {
        let (cert, key) = (&self.server.tls_cert, &self.server.tls_key);
        (!cert.as_os_str().is_empty() && !key.as_os_str().is_empty())
            .then_some((cert.as_path(), key.as_path()))
    }

    /// The configured ONNX Runtime library, if any.
    pub fn runtime_library(&self) -> Option<&Path> {
        Some(self.runtime.library.as_path()).filter(|p| !p.as_os_str().is_empty())
    }
}

fn apply_overrides(
    mut builder: config::ConfigBuilder<config::builder::DefaultState>,
    o: &Overrides,
) -> Result<config::ConfigBuilder<config::builder::DefaultState>, ConfigError> {
    let set = |b: config::ConfigBuilder<_>, key: &str, value: Value| {
        b.set_override(key, value)
            .map_err(|e| ConfigError::Invalid(e.to_string()))
    };
    if let Some(models) = &o.models {
        builder = set(
            builder,
            "models.repository",
            models.to_string_lossy().into_owned().into(),
        )?;
    }
    if let Some(host) = &o.host {
        builder = set(builder, "server.host", host.clone().into())?;
    }
    if let Some(port) = o.port {
        builder = set(builder, "server.port", i64::from(port).into())?;
    }
    if let Some(lib) = &o.onnxruntime {
        builder = set(
            builder,
            "runtime.library",
            lib.to_string_lossy().into_owned().into(),
        )?;
    }
    Ok(builder)
}

/// Every dotted leaf key of a table, e.g. `server.port`.
fn leaf_keys(value: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    walk(value, "", &mut |key, _| {
        out.insert(key.to_owned());
    });
    out
}

fn first_unknown_key(value: &Value, known: &BTreeSet<String>) -> Option<(String, String)> {
    let mut found = None;
    walk(value, "", &mut |key, v| {
        let is_known = known.contains(key);
        if found.is_none() && !is_known {
            let origin = v.origin().unwrap_or("the environment").to_owned();
            found = Some((key.to_owned(), origin));
        }
    });
    found
}

fn walk(value: &Value, prefix: &str, visit: &mut dyn FnMut(&str, &Value)) {
    match &value.kind {
        ValueKind::Table(table) => {
            for (k, v) in table {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                walk(v, &key, visit);
            }
        }
        _ => visit(prefix, value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Option<Map<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn embedded_defaults_parse_and_validate() {
        let s = Settings::load_with_env(&Overrides::default(), env(&[])).unwrap();
        assert_eq!(s.server.port, 8000);
        assert_eq!(s.models.repository, PathBuf::from("models"));
        assert_eq!(s.log.format, LogFormat::Text);
        assert!(s.runtime_library().is_none());
    }

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sluice.toml");
        std::fs::write(
            &file,
            "[server]\nport = 9000\nhost = \"127.0.0.1\"\n[log]\nformat = \"json\"\n",
        )
        .unwrap();
        let mut o = Overrides {
            config_file: Some(file),
            ..Default::default()
        };
        let s = Settings::load_with_env(&o, env(&[])).unwrap();
        assert_eq!(
            (s.server.port, s.server.host.as_str(), s.log.format),
            (9000, "127.0.0.1", LogFormat::Json)
        );

        let vars = env(&[
            ("SLUICE__SERVER__PORT", "9100"),
            ("SLUICE__LIMITS__MAX_TENSOR_ELEMENTS", "10"),
        ]);
        let s = Settings::load_with_env(&o, vars.clone()).unwrap();
        assert_eq!((s.server.port, s.limits.max_tensor_elements), (9100, 10));

        o.port = Some(9200);
        o.models = Some(PathBuf::from("/srv/models"));
        let s = Settings::load_with_env(&o, vars).unwrap();
        assert_eq!(s.server.port, 9200);
        assert_eq!(s.models.repository, PathBuf::from("/srv/models"));
    }

    #[test]
    fn the_kubernetes_config_is_valid() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s/base/sluice.toml");
        let o = Overrides {
            config_file: Some(file),
            ..Default::default()
        };
        let s = Settings::load_with_env(&o, env(&[])).unwrap();
        assert_eq!(
            (s.server.metrics_port, s.routing.file()),
            (9090, Some(Path::new("/etc/sluice/routing/routing.toml")))
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let err =
            Settings::load_with_env(&Overrides::default(), env(&[("SLUICE__SERVER__PROT", "1")]))
                .unwrap_err();
        assert!(err.to_string().contains("`server.prot`"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sluice.toml");
        std::fs::write(&file, "[limits]\nmax_elements = 3\n").unwrap();
        let o = Overrides {
            config_file: Some(file),
            ..Default::default()
        };
        let err = Settings::load_with_env(&o, env(&[])).unwrap_err();
        assert!(err.to_string().contains("`limits.max_elements`"), "{err}");
    }

    #[test]
    fn invalid_values_are_named() {
        let err = Settings::load_with_env(
            &Overrides::default(),
            env(&[("SLUICE__SERVER__PORT", "high")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("server.port"), "{err}");
        let err = Settings::load_with_env(
            &Overrides::default(),
            env(&[("SLUICE__LOG__FORMAT", "xml")]),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("log.format") || err.to_string().contains("xml"),
            "{err}"
        );
        let err = Settings::load_with_env(
            &Overrides::default(),
            env(&[("SLUICE__LIMITS__MAX_TENSOR_ELEMENTS", "0")]),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("limits.max_tensor_elements"),
            "{err}"
        );
    }
}
