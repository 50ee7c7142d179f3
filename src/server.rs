//! Start-up and the serving loop: ONNX Runtime, state, listener, background model loading, graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ort::environment::Environment;
use tokio::net::TcpListener;

use crate::api::{self, AppState};
use crate::config::Settings;
use crate::inference::InferenceService;
use crate::metrics::Metrics;
use crate::registry::{self, Registry};
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
    env: Environment,
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
        let registry = Arc::new(Registry::default());
        let metrics = Arc::new(Metrics::new()?);
        let inference = Arc::new(InferenceService::new(
            Arc::clone(&registry),
            Arc::clone(&metrics),
            settings.limits,
        ));
        let state = AppState {
            registry,
            metrics,
            inference,
        };
        Ok(Server {
            state,
            listener,
            settings,
            env,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, loading the repository in the background (ready when done).
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let Server {
            state,
            listener,
            settings,
            env,
        } = self;
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(address = %addr, "listening");
        }
        let loader = (
            Arc::clone(&state.registry),
            Arc::clone(&state.metrics),
            settings.models.repository.clone(),
        );
        tokio::spawn(async move {
            let (registry, metrics, root) = loader;
            let loaded = {
                let metrics = Arc::clone(&metrics);
                tokio::task::spawn_blocking(move || {
                    registry::load_repository(&env, &root, &metrics)
                })
                .await
            };
            match loaded {
                Ok(Ok(map)) => {
                    tracing::info!(models = map.len(), "model repository loaded");
                    registry.install(map);
                }
                Ok(Err(e)) => tracing::error!(error = %e, "model repository could not be loaded"),
                Err(e) => tracing::error!(error = %e, "model loading task failed"),
            }
            registry.set_ready(true);
        });
        let app = crate::middleware::apply(api::router(state, settings.server.max_body_bytes));
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(StartError::Serve)
    }
}
