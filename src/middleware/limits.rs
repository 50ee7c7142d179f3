//! Refuses a body whose declared `Content-Length` is over `server.max_body_bytes` with 413 before any handler
//! runs. The body is read and discarded (bounded), so the client receives the 413 instead of a reset connection.
//! Bodies without a length (chunked, or compressed and inflating past the limit) are stopped by the body
//! extractors' `DefaultBodyLimit`.

use axum::extract::{Request, State};
use axum::http::header::CONTENT_LENGTH;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// Declared bodies up to this many times the limit are drained before answering; larger ones are cut off.
const DRAIN_FACTOR: usize = 8;

pub async fn refuse_oversized(
    State(max_body_bytes): State<usize>,
    request: Request,
    next: Next,
) -> Response {
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let encoded = request
        .headers()
        .contains_key(axum::http::header::CONTENT_ENCODING);
    match declared {
        // A compressed body's length says nothing about its inflated size; the extractor limit handles it.
        Some(length) if length > max_body_bytes && !encoded => {
            super::overload::drain_body(request, max_body_bytes.saturating_mul(DRAIN_FACTOR)).await;
            let message = format!("request body of {length} bytes is over the limit of {max_body_bytes} (server.max_body_bytes)");
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                Json(serde_json::json!({ "error": message })),
            )
                .into_response()
        }
        _ => next.run(request).await,
    }
}
