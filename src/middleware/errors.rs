//! Gives every error response the V2 shape. Errors from our handlers already are `{"error": …}`; this rewrites the
//! bare ones that layers produce (the admission layer's timeout 504, decompression 415, the oversized-body 413 with
//! its reason attached as [`Failure`]) and answers for a panic. Both are applied by the edge layer
//! ([`super::access`]).

use std::sync::Arc;

use axum::body::Body;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;

use crate::api::Failure;

/// A 4xx/5xx without a JSON body gets one that names the problem.
pub fn v2_error_body<B>(response: Response<B>) -> Response
where
    B: http_body::Body<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let response = response.map(Body::new);
    let status = response.status();
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    // A reason attached by whoever answered (the oversized-body check), else one for the status.
    let attached = response
        .extensions()
        .get::<Failure>()
        .map(|f| f.0.to_string());
    let message = attached.unwrap_or_else(|| match status {
        StatusCode::GATEWAY_TIMEOUT | StatusCode::REQUEST_TIMEOUT => {
            "the request took longer than the server's request timeout (server.request_timeout_ms)"
                .to_owned()
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            "unsupported Content-Encoding: send identity, gzip or deflate".to_owned()
        }
        StatusCode::PAYLOAD_TOO_LARGE => {
            "request body too large (server.max_body_bytes)".to_owned()
        }
        other => other.canonical_reason().unwrap_or("error").to_lowercase(),
    });
    let (mut parts, _) = response.into_parts();
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    let body = serde_json::json!({ "error": message }).to_string();
    Response::from_parts(parts, Body::from(body))
}

/// The answer for a panic: a 500 with a V2 body; the process keeps serving.
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message");
    let failure = Failure(Arc::from(format!("a request handler panicked: {what}")));
    let body =
        serde_json::json!({ "error": "internal error: the request handler failed unexpectedly" })
            .to_string();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response.extensions_mut().insert(failure);
    response
}
