//! The tower middleware stack, built in one place so the order reads as written (top = outermost).

use axum::http::Request;
use axum::Router;
use tower::ServiceBuilder;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

/// Wraps the API router with the server's middleware.
pub fn apply(router: Router) -> Router {
    let stack = ServiceBuilder::new()
        // Outermost: one span per request, opened before anything else runs so every later log line (including
        // errors from inner layers and handlers) carries it. `model` and `version` start empty and are recorded
        // by the inference service once it has resolved the version.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<_>| {
                    tracing::info_span!(
                        "request",
                        method = %req.method(),
                        path = %req.uri().path(),
                        model = tracing::field::Empty,
                        version = tracing::field::Empty,
                        variant = tracing::field::Empty,
                    )
                })
                .on_response(DefaultOnResponse::new().level(Level::INFO))
                // Failures are logged where they are understood (`ApiError`), not again as a bare status.
                .on_failure(()),
        );
    router.layer(stack)
}
