//! Start-up and the serving loop: ONNX Runtime, state, listener, connection settings, background model loading,
//! graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use ort::environment::Environment;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::api::{AppState, Shared};
use crate::config::{AdminAccess, Settings};
use crate::idle;
use crate::inference::{self, AnswerObserver, InferenceService};
use crate::linger::{self, Lingering};
use crate::memory::{self, MemoryBudget};
use crate::metrics::Metrics;
use crate::middleware::{ApiKeys, App, Overload};
use crate::model::LoadOptions;
use crate::monitoring::feedback::{Feedback, QualityObserver};
use crate::monitoring::payload::PayloadLog;
use crate::registry::manager::Residency;
use crate::registry::watch::{self, WatchSettings};
use crate::registry::{PinnedVersions, Registry, RepositoryManager};
use crate::routing::shadow::ShadowMirror;
use crate::routing::RoutingTable;
use crate::runtime::{self, RuntimeError};
use crate::store::mirror::Mirror;
use crate::store::{RemoteRepository, StoreError, Writeback};

/// Why the server could not start; each maps to its own exit code in `main`.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Store(#[from] StoreError),
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
    /// The checked TLS configuration, when `server.tls_cert` and `server.tls_key` are set.
    tls: Option<Arc<rustls::ServerConfig>>,
    /// The gRPC listener (`server.grpc_port`, unless 0).
    grpc: Option<TcpListener>,
    /// For a bucket repository: what keeps the local copy the registry loads from.
    mirror: Option<Mirror>,
}

impl Server {
    /// Loads ONNX Runtime, checks the repository and binds the listener. Models load later, in [`Server::run`].
    pub async fn bind(settings: Settings) -> Result<Server, StartError> {
        // The object store's HTTPS client takes the process's rustls provider; ours is ring, as for serving TLS.
        // Installing fails only when one is already installed, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (path, env) = runtime::load(settings.runtime_library())?;
        tracing::info!(library = %path.display(), "ONNX Runtime loaded");
        Self::bind_with(settings, env).await
    }

    /// As [`Server::bind`] with an existing ONNX Runtime environment (one per process).
    pub async fn bind_with(settings: Settings, env: Environment) -> Result<Server, StartError> {
        let (settings, bucket) = crate::store::locate(settings)?;
        // A TLS setup that cannot serve is refused before anything listens.
        let tls = settings
            .tls_files()
            .map(|(cert, key)| tls_config(cert, key))
            .transpose()?;
        let addr = format!("{}:{}", settings.server.host, settings.server.port);
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        // Bound here, so a port in use fails start-up; its address is logged after the main one.
        let grpc = match settings.server.grpc_port {
            0 => None,
            port => {
                let addr = format!("{}:{port}", settings.server.host);
                Some(
                    TcpListener::bind(&addr)
                        .await
                        .map_err(|source| StartError::Bind { addr, source })?,
                )
            }
        };
        let state = build_state_with(&settings, env, bucket.is_none())?;
        let mirror = bucket
            .map(|RemoteRepository { remote, cache_dir, timing, writeback }| {
                if let Some(writeback) = writeback {
                    let (sink, rollbacks) = tokio::sync::mpsc::channel(16);
                    state.routing.send_rollbacks_to(sink);
                    match writeback {
                        // To the bucket's routing file, so every replica follows them.
                        Writeback::RoutingFile(store, key) => {
                            crate::routing::writeback::spawn(store, key, rollbacks)
                        }
                        // As tags on the version, so the registry shows why it lost its traffic.
                        Writeback::VersionTags(api) => {
                            crate::store::mlflow::tags::spawn(api, rollbacks)
                        }
                    };
                }
                tracing::info!(repository = %remote.url(), cache = %cache_dir.display(), "model repository copied from a remote store");
                Mirror::new(
                    remote,
                    &cache_dir,
                    timing,
                    Arc::clone(&state.metrics),
                    Arc::clone(&state.registry),
                )
            })
            .transpose()?;
        Ok(Server {
            state,
            listener,
            settings,
            tls,
            grpc,
            mirror,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then drains (see [`drain`]). The repository loads in the background
    /// (ready when done) and is then watched for changes.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let Server {
            state,
            listener,
            settings,
            tls,
            grpc,
            mirror,
        } = self;
        let addr = listener.local_addr().map_err(StartError::Serve)?;
        tracing::info!(address = %addr, tls = tls.is_some(), "listening");
        self::start_background(&state, &settings, mirror);
        let api_keys = settings
            .api_keys()
            .map_err(|e| StartError::Config(e.to_string()))?;
        let api_keys = ApiKeys::new(api_keys, settings.server.max_body_bytes);
        // One admission for both transports: they share the slots and the queue.
        let admission = Overload::from_settings(&settings, Arc::clone(&state.metrics));
        let app = crate::middleware::app::<hyper::body::Incoming>(
            state.clone(),
            &settings,
            api_keys.clone(),
            admission.clone(),
        );
        if settings.server.metrics_port != 0 {
            let listener = bind_side(
                &settings.server.host,
                settings.server.metrics_port,
                "metrics",
            )
            .await?;
            let metrics_app = crate::middleware::metrics_app(state.clone());
            tokio::spawn(async move { axum::serve(listener, metrics_app).await });
        }
        if settings.admin.port != 0 {
            let host = if settings.admin.host.is_empty() {
                &settings.server.host
            } else {
                &settings.admin.host
            };
            let listener = bind_side(host, settings.admin.port, "management API").await?;
            let admin_app =
                crate::middleware::admin_app::<axum::body::Body>(state.clone(), &settings);
            let make = axum::ServiceExt::<axum::extract::Request>::into_make_service(admin_app);
            tokio::spawn(async move { axum::serve(listener, make).await });
        }
        let timings = Drain {
            delay: Duration::from_millis(settings.server.shutdown_delay_ms),
            grace: Duration::from_millis(settings.server.shutdown_grace_ms),
        };
        let registry = Arc::clone(&state.registry);
        let (closing_tx, closing_rx) = tokio::sync::watch::channel(false);
        let stop_accepting = drain(shutdown, registry, timings.delay, closing_tx);
        let http = HttpSettings {
            idle_timeout: Some(Duration::from_millis(settings.server.idle_timeout_ms))
                .filter(|t| !t.is_zero()),
        };
        let grpc_served = grpc.map(|listener| {
            if let Ok(address) = listener.local_addr() {
                tracing::info!(%address, "gRPC listening");
            }
            let router = crate::grpc::router(
                state.clone(),
                api_keys,
                admission,
                settings.server.max_body_bytes,
                settings.log.access,
            );
            // The gRPC listener closes with the HTTP one, and its calls get the same grace.
            let mut closing = closing_rx.clone();
            let stop = async move {
                let _ = closing.wait_for(|closed| *closed).await;
            };
            let tls = tls.clone();
            tokio::spawn(async move {
                let served = match tls {
                    Some(config) => serve_tls(listener, router, http, config, stop).await,
                    None => serve_http(listener, router, http, stop).await,
                };
                if let Err(e) = served {
                    tracing::error!(error = %e, "the gRPC server stopped");
                }
            })
        });
        let serve = async {
            let served = match tls {
                Some(config) => serve_tls(listener, app, http, config, stop_accepting).await,
                None => serve_http(listener, app, http, stop_accepting).await,
            };
            // In-flight gRPC calls finish too (within the same grace).
            if let Some(grpc) = grpc_served {
                let _ = grpc.await;
            }
            served
        };
        let result = tokio::select! {
            result = serve => result,
            () = grace_expired(closing_rx, timings.grace) => {
                tracing::warn!("shutdown grace period over; exiting with requests still in flight");
                Ok(())
            }
        };
        // The last requests' spans go out before the process does (bounded: a collector that is down costs 2 s).
        if let Some(tracing) = &state.tracing {
            tracing.flush(Duration::from_secs(2)).await;
        }
        result
    }
}

/// How long shutdown keeps accepting, and how long in-flight requests then get.
struct Drain {
    delay: Duration,
    grace: Duration,
}

/// Graceful shutdown: when `signal` fires, readiness turns false at once (load balancers stop sending), the listener
/// keeps accepting for `delay` (requests already routed here are served), then this future completes: the server
/// stops accepting and in-flight requests finish.
async fn drain(
    signal: impl Future<Output = ()> + Send + 'static,
    registry: Arc<Registry>,
    delay: Duration,
    closing: tokio::sync::watch::Sender<bool>,
) {
    signal.await;
    registry.start_draining();
    tracing::info!(
        delay_ms = delay.as_millis() as u64,
        "draining: readiness is false, still accepting"
    );
    tokio::time::sleep(delay).await;
    tracing::info!("no longer accepting connections; waiting for in-flight requests");
    let _ = closing.send(true);
}

/// Completes `grace` after the listener closed.
async fn grace_expired(mut closing: tokio::sync::watch::Receiver<bool>, grace: Duration) {
    if closing.wait_for(|closed| *closed).await.is_err() {
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(grace).await;
}

/// How connections are served.
#[derive(Debug, Clone, Copy)]
struct HttpSettings {
    /// How long a connection may stall or idle (`None`: no limit). Plain HTTP enforces it with one watchdog per
    /// connection (`idle`); HTTPS, served by axum-server, with hyper's header read timeout, a timer per request.
    idle_timeout: Option<Duration>,
}

impl HttpSettings {
    /// For HTTPS: hyper's header read timeout.
    fn apply(
        self,
        builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    ) {
        if let Some(timeout) = self.idle_timeout {
            builder
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(timeout);
        }
    }
}

/// Binds the listener of a side port (`what`: metrics, the management API) and logs its address.
async fn bind_side(host: &str, port: u16, what: &'static str) -> Result<TcpListener, StartError> {
    let addr = format!("{host}:{port}");
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let address = listener.local_addr().map_err(StartError::Serve)?;
    tracing::info!(%address, "{what} listening");
    Ok(listener)
}

/// Serves plain HTTP (HTTP/1.1 and h2c) until `stop_accepting` completes, then closes the listener first and gives
/// connections accepted just before a moment to deliver their request, so a request whose connection was accepted is
/// answered rather than reset; then every connection is shut down gracefully (in-flight requests finish).
async fn serve_http(
    listener: TcpListener,
    app: impl App<hyper::body::Incoming>,
    http: HttpSettings,
    stop_accepting: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let connections = Connections {
        builder: Builder::new(TokioExecutor::new()),
        graceful: hyper_util::server::graceful::GracefulShutdown::new(),
        idle_timeout: http.idle_timeout,
        app,
        lingering: TaskTracker::new(),
    };
    tokio::pin!(stop_accepting);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => connections.serve(stream),
                Err(e) => {
                    // Out of file descriptors and similar: back off briefly, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = &mut stop_accepting => break,
        }
    }
    // Connections the kernel already completed (the accept backlog) would be reset when the listener closes: take
    // what is waiting (bounded), then close.
    let backlog_deadline = tokio::time::Instant::now() + Duration::from_millis(100);
    while tokio::time::Instant::now() < backlog_deadline {
        match tokio::time::timeout(Duration::from_millis(5), listener.accept()).await {
            Ok(Ok((stream, _))) => connections.serve(stream),
            _ => break,
        }
    }
    drop(listener);
    tokio::time::sleep(Duration::from_millis(250)).await;
    connections.graceful.shutdown().await;
    // Closed connections finish closing (see `linger`) before the process exits.
    connections.lingering.close();
    let _ = tokio::time::timeout(linger::LINGER, connections.lingering.wait()).await;
    Ok(())
}

/// Serves accepted plain-HTTP connections (HTTP/1.1 or h2c) with `app`, each on its own task, watched for graceful
/// shutdown and, with an idle timeout, closed when it stalls or idles.
struct Connections<A> {
    builder: Builder<TokioExecutor>,
    graceful: hyper_util::server::graceful::GracefulShutdown,
    idle_timeout: Option<Duration>,
    app: A,
    /// The closing of every connection served (`linger`).
    lingering: TaskTracker,
}

impl<A: App<hyper::body::Incoming>> Connections<A> {
    fn serve(&self, stream: tokio::net::TcpStream) {
        let _ = stream.set_nodelay(true);
        let stream = Lingering::new(stream, self.lingering.clone());
        let Some(limit) = self.idle_timeout else {
            let service = TowerToHyperService::new(self.app.clone());
            let connection = self
                .builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            let connection = self.graceful.watch(connection);
            tokio::spawn(async move { connection_ended(connection.await) });
            return;
        };
        let activity = Arc::new(idle::Activity::default());
        let service =
            TowerToHyperService::new(idle::Counted::new(self.app.clone(), Arc::clone(&activity)));
        let io = TokioIo::new(idle::Watched::new(stream, Arc::clone(&activity)));
        let connection = self
            .builder
            .serve_connection_with_upgrades(io, service)
            .into_owned();
        let connection = self.graceful.watch(connection);
        tokio::spawn(async move {
            tokio::select! {
                biased;
                result = connection => connection_ended(result),
                () = activity.idle_for(limit) => tracing::debug!("closed a stalled or idle connection"),
            }
        });
    }
}

fn connection_ended(result: Result<(), Box<dyn std::error::Error + Send + Sync>>) {
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// The TLS configuration (rustls, ring provider) from PEM files, checked: each file holds what it should, and the key
/// belongs to the certificate. Every error names the file and what is wrong with it.
fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, StartError> {
    use rustls::pki_types::pem::{self, PemObject};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let error = |setting: &str, file: &Path, what: String| {
        StartError::Config(format!("server.{setting} = {}: {what}", file.display()))
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| error("tls_cert", cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(error(
            "tls_cert",
            cert,
            "no PEM certificate (BEGIN CERTIFICATE) in the file".into(),
        ));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        let what = match e {
            pem::Error::NoItemsFound => {
                "no PEM private key (BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY) in the file; is it the \
                 certificate?"
                    .to_owned()
            }
            other => other.to_string(),
        };
        error("tls_key", key, what)
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key_der))
        .map_err(|e| {
            StartError::Config(format!(
                "server.tls_cert = {} and server.tls_key = {} do not make a TLS identity: {e}",
                cert.display(),
                key.display()
            ))
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves HTTPS with `config`, with the same graceful shutdown.
async fn serve_tls(
    listener: TcpListener,
    app: impl App<hyper::body::Incoming>,
    http: HttpSettings,
    config: Arc<rustls::ServerConfig>,
    stop_accepting: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let tls = axum_server::tls_rustls::RustlsConfig::from_config(config);
    let handle = axum_server::Handle::new();
    let on_stop = handle.clone();
    tokio::spawn(async move {
        stop_accepting.await;
        // In-flight requests are bounded by the grace watchdog in `run`.
        on_stop.graceful_shutdown(None);
    });
    let std_listener = listener.into_std().map_err(StartError::Serve)?;
    let mut server = axum_server::from_tcp_rustls(std_listener, tls).handle(handle);
    http.apply(server.http_builder());
    server
        .serve(tower::make::Shared::new(app))
        .await
        .map_err(StartError::Serve)
}

/// Starts the background work: the start-up load (ready when done), then the repository and routing watchers.
/// With a bucket, the first copy comes before the start-up load, and the mirror replaces the file watcher.
fn start_background(state: &AppState, settings: &Settings, mirror: Option<Mirror>) {
    let manager = Arc::clone(&state.manager);
    let routing = Arc::clone(&state.routing);
    let root = settings.models.repository.clone();
    let watch_settings = WatchSettings {
        notify: settings.models.watch,
        poll_interval: Duration::from_millis(settings.models.poll_interval_ms),
        debounce: Duration::from_millis(settings.models.settle_ms.min(250)),
        settle: Duration::from_millis(settings.models.settle_ms.max(50)),
    };
    crate::monitoring::watch::spawn(
        Arc::clone(&state.registry),
        Arc::clone(&state.metrics),
        settings.monitoring.clone(),
    );
    tokio::spawn(async move {
        let mirror = match mirror {
            Some(mirror) => {
                let mirror = mirror.first_copy().await;
                if let Err(e) = routing.reload_file() {
                    tracing::error!(error = %e, "routing file from the bucket not applied; retried as it changes");
                }
                Some(mirror)
            }
            None => None,
        };
        initial_load(&manager, watch_settings.settle).await;
        manager.registry().set_ready(true);
        crate::routing::warn_unready(&routing, manager.registry());
        spawn_routing_watch(
            routing,
            Arc::clone(&manager),
            watch_settings.poll_interval.min(Duration::from_secs(1)),
        );
        match mirror {
            Some(mirror) => drop(mirror.spawn(manager)),
            None => drop(watch::spawn(manager, &root, watch_settings)),
        }
    });
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
    build_state_with(settings, env, true)
}

/// As [`build_state`]; `read_routing` false leaves the routing file to be read after the bucket's first copy
/// (the file comes with it).
fn build_state_with(
    settings: &Settings,
    env: Environment,
    read_routing: bool,
) -> Result<AppState, StartError> {
    let registry = Arc::new(Registry::new(settings.models.strict_readiness));
    let metrics = Arc::new(Metrics::new()?);
    let (memory, budget) = memory_budget(settings, &metrics)?;
    let routing = Arc::new(RoutingTable::new(
        settings.routing.file().map(Path::to_path_buf),
        Arc::clone(&metrics),
    ));
    if read_routing {
        routing
            .reload_file()
            .map_err(|e| StartError::Config(e.to_string()))?;
    }
    let feedback = Feedback::new(
        settings.feedback.clone(),
        Arc::clone(&registry),
        Arc::clone(&metrics),
    );
    // Routing's quality rollback judges variants on the served quality each truth post reports.
    feedback.observe_with(Arc::clone(&routing) as Arc<dyn QualityObserver>);
    let mirror = ShadowMirror::start(
        Arc::clone(&registry),
        Arc::clone(&metrics),
        feedback.clone(),
        settings.routing.shadow_queue_capacity,
        Duration::from_millis(settings.routing.shadow_delay_ms),
    );
    let core = InferenceService::new(
        Arc::clone(&registry),
        Arc::clone(&metrics),
        settings.limits,
        Some(Arc::new(feedback.clone()) as Arc<dyn AnswerObserver>),
    );
    let payload_log = PayloadLog::start(&settings.payload_log, Arc::clone(&metrics))
        .map_err(StartError::Config)?;
    let pipeline = inference::pipeline(core, Arc::clone(&routing), mirror.clone(), payload_log);
    let manager = Arc::new(repository_manager(
        settings, env, &registry, &metrics, &routing, &memory, &budget,
    ));
    // Lazy models load through the registry, which holds the manager weakly (the manager holds the registry).
    let on_demand = Arc::downgrade(&manager) as std::sync::Weak<dyn crate::registry::OnDemand>;
    registry.set_on_demand(on_demand, settings.models.lazy_load_timeout_ms);
    let admin = settings
        .admin_access()
        .map_err(|e| StartError::Config(e.to_string()))?;
    let tracing = crate::otel::Tracing::start(&settings.tracing, metrics.traces.clone())
        .map_err(|e| StartError::Config(e.to_string()))?;
    if admin == AdminAccess::Open {
        tracing::warn!(
            port = settings.admin.port,
            "the management API needs no token on admin.port (admin.require_token = false)"
        );
    }
    Ok(AppState::new(Shared {
        registry,
        metrics,
        pipeline,
        routing,
        mirror,
        feedback,
        manager,
        admin,
        max_body_bytes: settings.server.max_body_bytes,
        memory: budget,
        memory_wait: Duration::from_millis(settings.limits.memory_wait_ms),
        tracing,
    }))
}

/// The memory budget for work in flight, sized from the configuration and the cgroup limit, and exported.
fn memory_budget(
    settings: &Settings,
    metrics: &Metrics,
) -> Result<(memory::MemoryPlan, MemoryBudget), StartError> {
    let memory = memory::plan(
        settings.limits.max_inflight_bytes,
        memory::limit::cgroup_limit(),
        memory::limit::resident_bytes().unwrap_or(0),
    );
    let budget = MemoryBudget::new(memory.capacity);
    metrics.watch_memory(budget.clone(), memory.limit)?;
    let mib = |n: u64| n >> 20;
    tracing::info!(
        budget_mib = mib(memory.capacity as u64),
        limit_mib = memory.limit.map(mib),
        loads_counted = memory.counts_loads,
        "memory budget for requests in flight"
    );
    Ok((memory, budget))
}

/// The repository's one writer, keeping routing's versions loaded and, under a memory limit, counting loads.
fn repository_manager(
    settings: &Settings,
    env: Environment,
    registry: &Arc<Registry>,
    metrics: &Arc<Metrics>,
    routing: &Arc<RoutingTable>,
    memory: &memory::MemoryPlan,
    budget: &MemoryBudget,
) -> RepositoryManager {
    RepositoryManager::new(
        Arc::clone(registry),
        Arc::clone(metrics),
        env,
        settings.models.repository.clone(),
        Duration::from_millis(settings.models.settle_ms),
    )
    .with_pins(Arc::clone(routing) as Arc<dyn PinnedVersions>)
    .with_residency(Residency {
        default_load: settings.models.default_load,
        max_models: settings.models.max_loaded_models,
        max_bytes: settings.models.max_loaded_bytes,
    })
    .with_load_concurrency(settings.models.load_concurrency)
    .with_memory(
        memory.counts_loads.then(|| budget.clone()),
        Duration::from_millis(settings.limits.memory_wait_ms),
    )
    .with_load_options(LoadOptions {
        max_waiting: settings.limits.max_queue_per_version,
        drift_window: settings.monitoring.drift_window,
        metrics: Some(Arc::clone(metrics)),
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
                        tracing::error!(error = %e, "routing change not applied; the previous policy stays");
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
