//! Start-up and the serving loop: ONNX Runtime, state, listener, background model loading, graceful shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ort::environment::Environment;
use tokio::net::TcpListener;

use crate::api::{self, AppState};
use crate::config::Settings;
use crate::inference::{self, InferenceService};
use crate::metrics::Metrics;
use crate::registry::watch::{self, WatchSettings};
use crate::registry::{PinnedVersions, Registry, RepositoryManager};
use crate::routing::shadow::ShadowMirror;
use crate::routing::RoutingTable;
use crate::runtime::{self, RuntimeError};

/// Why the server could not start; each maps to its own exit code in `main`.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("model repository {0} is not a directory")]
    Repository(PathBuf),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
    #[error("metrics registry: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("server error: {0}")]
    Serve(std::io::Error),
}

/// The pieces a running server is made of, before it listens.
pub struct Server {
    pub state: AppState,
    pub listener: TcpListener,
    settings: Settings,
}

impl Server {
    /// Loads ONNX Runtime, checks the repository and binds the listener. Models load later, in [`Server::run`].
    pub async fn bind(settings: Settings) -> Result<Server, StartError> {
        let (path, env) = runtime::load(settings.runtime_library())?;
        tracing::info!(library = %path.display(), "ONNX Runtime loaded");
        Self::bind_with(settings, env).await
    }

    /// As [`Server::bind`] with an existing ONNX Runtime environment (one per process).
    pub async fn bind_with(settings: Settings, env: Environment) -> Result<Server, StartError> {
        if !settings.models.repository.is_dir() {
            return Err(StartError::Repository(settings.models.repository.clone()));
        }
        let addr = format!("{}:{}", settings.server.host, settings.server.port);
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let state = build_state(&settings, env)?;
        Ok(Server {
            state,
            listener,
            settings,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes. The repository loads in the background (ready when done), then is
    /// watched for changes.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let Server {
            state,
            listener,
            settings,
        } = self;
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(address = %addr, "listening");
        }
        let manager = Arc::clone(&state.manager);
        let root = settings.models.repository.clone();
        let watch_settings = WatchSettings {
            notify: settings.models.watch,
            poll_interval: Duration::from_millis(settings.models.poll_interval_ms),
            debounce: Duration::from_millis(settings.models.settle_ms.min(250)),
            settle: Duration::from_millis(settings.models.settle_ms.max(50)),
        };
        let routing = Arc::clone(&state.routing);
        tokio::spawn(async move {
            initial_load(&manager, watch_settings.settle).await;
            manager.registry().set_ready(true);
            spawn_routing_watch(
                routing,
                Arc::clone(&manager),
                watch_settings.poll_interval.min(Duration::from_secs(1)),
            );
            watch::spawn(manager, &root, watch_settings);
        });
        let app = crate::middleware::apply(api::router(state, settings.server.max_body_bytes));
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(StartError::Serve)
    }
}

/// The start-up load: reconcile until no file is still being written, so readiness means "everything on disk at
/// start-up has been tried".
async fn initial_load(manager: &RepositoryManager, settle: Duration) {
    loop {
        match manager.reconcile().await {
            Ok(report) if report.pending => tokio::time::sleep(settle).await,
            Ok(_) => {
                let models = manager.registry().snapshot().len();
                tracing::info!(models, "model repository loaded");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "model repository could not be loaded");
                return;
            }
        }
    }
}

/// Builds the application state: registry, metrics, routing, the inference stack and the repository manager.
/// Reads the routing file once (an invalid one is a configuration error here; later it only logs).
pub fn build_state(settings: &Settings, env: Environment) -> Result<AppState, StartError> {
    let registry = Arc::new(Registry::default());
    let metrics = Arc::new(Metrics::new()?);
    let routing = Arc::new(RoutingTable::new(
        settings.routing.file().map(Path::to_path_buf),
        Arc::clone(&metrics),
    ));
    routing
        .reload_file()
        .map_err(|e| StartError::Config(e.to_string()))?;
    let mirror = ShadowMirror::start(
        Arc::clone(&registry),
        Arc::clone(&metrics),
        settings.routing.shadow_queue_capacity,
        Duration::from_millis(settings.routing.shadow_delay_ms),
    );
    let core = InferenceService::new(Arc::clone(&registry), Arc::clone(&metrics), settings.limits);
    let pipeline = inference::pipeline(core, Arc::clone(&routing), mirror.clone());
    let manager = RepositoryManager::new(
        Arc::clone(&registry),
        Arc::clone(&metrics),
        env,
        settings.models.repository.clone(),
        Duration::from_millis(settings.models.settle_ms),
    )
    .with_pins(Arc::clone(&routing) as Arc<dyn PinnedVersions>);
    let admin_token = settings
        .admin_token()
        .map_err(|e| StartError::Config(e.to_string()))?;
    Ok(AppState {
        registry,
        metrics,
        pipeline,
        routing,
        mirror,
        manager: Arc::new(manager),
        admin_token: admin_token.map(Arc::from),
    })
}

/// Re-reads the routing file every `interval`; a change is applied and the repository reconciled, so versions the
/// new policy refers to get loaded. An invalid file is logged and changes nothing.
fn spawn_routing_watch(
    routing: Arc<RoutingTable>,
    manager: Arc<RepositoryManager>,
    interval: Duration,
) {
    tokio::spawn(async move {
        let mut last_error = None;
        loop {
            tokio::time::sleep(interval).await;
            match routing.stage_file() {
                Ok(Some(staged)) => {
                    last_error = None;
                    if let Err(e) = crate::routing::apply_staged(&routing, &manager, staged).await {
                        tracing::warn!(error = %e, "reconcile after a routing change failed");
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    let message = e.to_string();
                    if last_error.as_ref() != Some(&message) {
                        tracing::error!(error = %message, "routing file not applied; the previous policy stays");
                        last_error = Some(message);
                    }
                }
            }
        }
    });
}
