//! API-key authentication for inference and metadata routes (health, model readiness included, and metrics stay open
//! for probes and scrapers). Keys come from `Authorization: Bearer <key>` (any case of the scheme) or `x-api-key`,
//! compared in constant time.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::api::ApiError;

/// The accepted keys; empty means no key is required.
#[derive(Clone)]
pub struct ApiKeys {
    keys: Arc<[String]>,
    /// A refused request's body is read up to this size before answering (see `api::drain_body`).
    max_body_bytes: usize,
}

impl ApiKeys {
    pub fn new(keys: Vec<String>, max_body_bytes: usize) -> ApiKeys {
        ApiKeys {
            keys: keys.into(),
            max_body_bytes,
        }
    }

    /// Whether no key is configured (authentication off).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether `headers` carry one of the keys. Every key is compared, in constant time, so neither which key
    /// matched nor how much of a guess matched shows in the timing.
    pub fn accepts(&self, headers: &HeaderMap) -> bool {
        let bearer = crate::api::bearer_token(headers);
        let header = headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim);
        let Some(given) = bearer.or(header) else {
            return false;
        };
        self.keys
            .iter()
            .fold(subtle::Choice::from(0), |found, key| {
                found | given.as_bytes().ct_eq(key.as_bytes())
            })
            .into()
    }
}

pub async fn require_key(State(keys): State<ApiKeys>, request: Request, next: Next) -> Response {
    if keys.accepts(request.headers()) {
        next.run(request).await
    } else {
        crate::api::drain_body(request.into_body(), keys.max_body_bytes).await;
        ApiError::MissingApiKey.into_response()
    }
}
