//! The gRPC front end (`server.grpc_port`): the Open Inference Protocol's `inference.GRPCInferenceService` with
//! Triton's additions (`service.rs`), the standard `grpc.health.v1.Health` service (`health.rs`) and server
//! reflection, so `grpcurl` and Kubernetes gRPC probes work. Requests go through the same inference stack, registry
//! and repository manager as REST, and draw on the same admission slots; errors map to gRPC codes in `error.rs`.
//! The server loop (plain or TLS, graceful shutdown with GOAWAY) is the HTTP one, in `server.rs`.

mod config;
mod error;
mod health;
mod service;

use std::time::Duration;

use http::HeaderMap;

pub use self::error::GrpcError;
pub use self::service::Inference;
use crate::api::AppState;
use crate::middleware::{ApiKeys, Overload};
use crate::proto::grpc_inference_service_server::GrpcInferenceServiceServer;

/// Response metadata: the version that served the request.
pub const MODEL_VERSION: &str = "x-model-version";
/// Response metadata: the routing variant that served the request.
pub const VARIANT: &str = "x-sluice-variant";
/// Request and response metadata: the request's id (generated when the client sent none).
pub const REQUEST_ID: &str = "x-request-id";

/// The gRPC services as one router: inference (messages up to `max_message_bytes`; every call logged with
/// `log_every_request`, else failures only), health and reflection.
pub fn router(
    state: AppState,
    api_keys: ApiKeys,
    admission: Overload,
    max_message_bytes: usize,
    log_every_request: bool,
) -> axum::Router {
    let registry = std::sync::Arc::clone(&state.registry);
    let inference = GrpcInferenceServiceServer::new(Inference::new(
        state,
        api_keys,
        admission,
        log_every_request,
    ))
    .max_decoding_message_size(max_message_bytes)
    .max_encoding_message_size(usize::MAX);
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let mut routes = tonic::service::Routes::new(inference)
        .add_service(health::service(registry))
        .add_service(
            reflection()
                .build_v1()
                .expect("the embedded descriptor sets are valid"),
        )
        // grpcurl and older tools ask the v1alpha service.
        .add_service(
            reflection()
                .build_v1alpha()
                .expect("the embedded descriptor sets are valid"),
        );
    routes = routes.prepare();
    routes
        .into_axum_router()
        .layer(axum::middleware::map_response(
            over_size_is_resource_exhausted,
        ))
}

/// tonic answers a message over the decoding limit with OUT_OF_RANGE; gRPC's own implementations, whose clients
/// expect it, answer RESOURCE_EXHAUSTED. A unary call's error is in the response headers (trailers-only response).
async fn over_size_is_resource_exhausted(
    mut response: axum::response::Response,
) -> axum::response::Response {
    let headers = response.headers_mut();
    let over_size = headers.get("grpc-status").is_some_and(|s| s == "11")
        && headers
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .is_some_and(is_over_size);
    if over_size {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    response
}

/// The deadline the client set (`grpc-timeout`), when it set a valid one.
fn deadline(headers: &HeaderMap) -> Option<Duration> {
    parse_timeout(headers.get("grpc-timeout")?.to_str().ok()?)
}

/// Whether tonic's message (plain or percent-encoded) says a message was over the decoding limit.
fn is_over_size(message: &str) -> bool {
    message.contains("message length too large") || message.contains("length%20too%20large")
}

/// How long the client gives the call: its `grpc-timeout` header (an integer and a unit: H, M, S, m, u or n).
fn parse_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_as_the_protocol_writes_them() {
        let ms = Duration::from_millis;
        assert_eq!(parse_timeout("20m"), Some(ms(20)));
        assert_eq!(parse_timeout("1S"), Some(ms(1000)));
        assert_eq!(parse_timeout("2M"), Some(ms(120_000)));
        assert_eq!(parse_timeout("1H"), Some(ms(3_600_000)));
        assert_eq!(parse_timeout("1500u"), Some(Duration::from_micros(1500)));
        assert_eq!(
            parse_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        // At most 8 digits, a known unit, nothing else.
        for bad in ["", "m", "123456789m", "10x", "-1S", "1.5S", "S1"] {
            assert_eq!(parse_timeout(bad), None, "{bad}");
        }
    }
}
