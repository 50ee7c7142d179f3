//! The HTTP middleware stack, assembled in one place so the order reads as written. `ServiceBuilder` layers run
//! top to bottom: the first layer listed sees the request first and the response last.

mod access;
mod auth;
mod compress;
mod decompress;
mod errors;
mod limits;
mod overload;

use std::convert::Infallible;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::DefaultBodyLimit;
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderName, HeaderValue, Request};
use axum::response::Response;
use axum::{BoxError, Router};
use tower::{Layer, Service, ServiceBuilder};
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use self::access::AccessLayer;
pub use self::auth::ApiKeys;
use self::compress::CompressLayer;
use self::decompress::DecompressWhenEncodedLayer;
use self::limits::RefuseOversizedLayer;
pub use self::overload::Overload;
use crate::api::{self, AppState};
use crate::config::Settings;
use crate::otel::Tracing;

/// The largest body the management API reads: its requests are a few hundred bytes of JSON.
const MANAGEMENT_BODY_BYTES: usize = 1 << 20;

const API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// The application: every route with its middleware. `/metrics` and the management API are included unless they
/// have their own ports.
/// `admission` is shared with the gRPC front end, so the two transports draw on the same slots.
pub fn app<B>(
    state: AppState,
    settings: &Settings,
    api_keys: ApiKeys,
    admission: Overload,
) -> impl App<B>
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError> + Send + Sync,
{
    let mut protected = api::model_routes();
    // Per route, after routing: unknown paths get 404, not 401. Without keys there is nothing to check, and the
    // layer is left out rather than run on every request.
    let open = api_keys.is_empty();
    if !open {
        protected = protected.route_layer(axum::middleware::from_fn_with_state(
            api_keys,
            auth::require_key,
        ));
    }
    let mut routes = protected
        .merge(api::health_routes())
        .merge(api::openapi_routes());
    if settings.admin.port == 0 {
        routes = routes.merge(api::admin_routes());
    }
    if settings.server.metrics_port == 0 {
        routes = routes.merge(api::metrics_routes());
    }
    // The router's body extractors (the management API's small JSON bodies) read their limit from a request
    // extension; the inference handlers (V2 and V1) read theirs within `server.max_body_bytes` and the memory budget
    // themselves, so the inference path is spared that extension.
    let routes = DefaultBodyLimit::max(settings.server.max_body_bytes.min(MANAGEMENT_BODY_BYTES))
        .layer(api::with_fallbacks(routes).with_state(state.clone()));
    // The inference routes ahead of the router, unless keys must be checked (the router does that per route).
    let tracing = state.tracing.clone();
    let routes = api::InferRoutes::new(state, routes, open);
    with_common_layers(admission.layer(routes), settings, tracing)
}

/// What [`app`] and [`with_common_layers`] build: a service for requests with bodies of type `B` (hyper's for the
/// server, axum's in tests).
pub trait App<B>:
    Service<Request<B>, Response = Response, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + 'static
{
}

impl<T, B> App<B> for T where
    T: Service<Request<B>, Response = Response, Error = Infallible, Future: Send + 'static>
        + Clone
        + Send
        + 'static
{
}

/// The management API alone, for `admin.port`: with the layers every route shares, and its small-body limit.
pub fn admin_app<B>(state: AppState, settings: &Settings) -> impl App<B>
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError> + Send + Sync,
{
    let tracing = state.tracing.clone();
    let routes = DefaultBodyLimit::max(MANAGEMENT_BODY_BYTES)
        .layer(api::with_fallbacks(api::admin_routes()).with_state(state));
    with_common_layers(routes, settings, tracing)
}

/// A router serving only `/metrics`, for `server.metrics_port`.
pub fn metrics_app(state: AppState) -> Router {
    api::with_fallbacks(api::metrics_routes()).with_state(state)
}

/// Wraps `inner` (the router, with admission) in the layers every route shares (request id, request log, V2 errors,
/// panics, CORS, compression, the declared-size body limit): one concrete stack of tower layers around the whole
/// router, served as it is (no outer router). `Router::layer` would box every route once per layer and clone that
/// box on every request, and axum's middleware functions box their future and the rest of the stack on every
/// request; on a small model those cost more than the inference itself. Only API-key checking,
/// which runs only when keys are configured, is such a function. With `tracing`, every request gets a server span.
pub fn with_common_layers<S, B>(
    inner: S,
    settings: &Settings,
    tracing: Option<Tracing>,
) -> impl App<B>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError> + Send + Sync,
{
    let cors = cors(&settings.server.cors_allowed_origins);
    let stack = ServiceBuilder::new()
        // First: credentials marked sensitive (so nothing inside ever logs them), the request id (the caller's
        // x-request-id or a new one, echoed on the response), the request span (debug level), the request log,
        // panics turned into 500s and bare error statuses (timeout, decompression, oversized body) given V2 bodies;
        // outside everything that can fail, so every response carries its id, is logged and leaves in the V2
        // shape, and a panic anywhere inside leaves the connection and the process serving.
        .layer(AccessLayer {
            every_request: settings.log.access,
            tracing,
        })
        // CORS before authentication, so preflight requests are answered without credentials.
        .option_layer(cors)
        // Compress responses for clients that accept it, where it pays.
        .layer(CompressLayer {
            min_bytes: settings.server.compress_min_bytes,
        })
        // A declared body over the limit is refused before decompression or any handler.
        .layer(RefuseOversizedLayer {
            max_body_bytes: settings.server.max_body_bytes,
        })
        // Inflate gzip/deflate request bodies (requests without Content-Encoding skip it); the body limits inside
        // (the inference handlers' own and `DefaultBodyLimit` around the router) count the inflated bytes.
        .layer(DecompressWhenEncodedLayer);
    stack.service(inner)
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
            .allow_headers([AUTHORIZATION, API_KEY, axum::http::header::CONTENT_TYPE]),
    )
}

/// A response with any body as one with axum's `Body` (a no-op for `Body` itself): the conditional layers' branches
/// must agree on one response type.
fn into_axum_body<B>(result: Result<Response<B>, Infallible>) -> Result<Response, Infallible>
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    result.map(|response| response.map(Body::new))
}

/// Sends `request` through `service` and returns the response's head and its whole body (the layers' unit tests).
#[cfg(test)]
async fn respond<S>(service: S, request: Request<Body>) -> (Response, Bytes)
where
    S: Service<Request<Body>, Response = Response, Error = Infallible>,
{
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let (parts, body) = service.oneshot(request).await.unwrap().into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (Response::from_parts(parts, Body::empty()), bytes)
}
