//! [`ApiError`]: every error the HTTP API returns, mapped to a status code by one exhaustive `match` and written
//! in the V2 shape `{"error": "<message>"}`.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::inference::InferenceError;
use crate::memory::MemoryError;
use crate::model::InferError;
use crate::monitoring::feedback::FeedbackError;
use crate::registry::{ManageError, RegistryError};
use crate::routing::RoutingError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Inference(#[from] InferenceError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("request body too large: more than {limit} bytes (server.max_body_bytes)")]
    BodyTooLarge { limit: usize },
    #[error("request body could not be read: {0}")]
    BodyUnreadable(String),
    /// The memory budget could not hold the request's body.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error("invalid path: {0}")]
    Path(#[from] PathRejection),
    #[error(transparent)]
    Manage(#[from] ManageError),
    #[error(transparent)]
    Routing(#[from] RoutingError),
    #[error(transparent)]
    Feedback(#[from] FeedbackError),
    #[error("missing or wrong admin token (send 'Authorization: Bearer <token>')")]
    Unauthorized,
    #[error("missing or wrong API key (send 'Authorization: Bearer <key>' or 'x-api-key: <key>')")]
    MissingApiKey,
    #[error(
        "the management API is disabled: set admin.token (or SLUICE__ADMIN__TOKEN) to enable it"
    )]
    ManagementDisabled,
    #[error("{0}")]
    BadRequest(String),
    #[error("no route for {0}")]
    RouteNotFound(String),
    #[error("method {method} is not allowed for {path}")]
    MethodNotAllowed { method: String, path: String },
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Inference(e) => match e.cause() {
                InferenceError::Registry(r) => registry_status(r),
                InferenceError::Decode(_) | InferenceError::Validation(_) => {
                    StatusCode::BAD_REQUEST
                }
                InferenceError::Infer(InferError::Overloaded { .. }) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                InferenceError::Infer(
                    InferError::Input { .. }
                    | InferError::Runtime(_)
                    | InferError::Output { .. }
                    | InferError::Internal(_),
                ) => StatusCode::INTERNAL_SERVER_ERROR,
                InferenceError::Memory(m) => memory_status(m),
                // `cause` never returns the wrapper.
                InferenceError::Served { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::Registry(r) => registry_status(r),
            ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyUnreadable(_) => StatusCode::BAD_REQUEST,
            ApiError::Memory(m) => memory_status(m),
            ApiError::Path(_) | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Feedback(e) => match e {
                FeedbackError::NotEnabled(_) => StatusCode::BAD_REQUEST,
            },
            ApiError::Manage(e) => match e {
                ManageError::UnknownModel(_) | ManageError::NotInRepository(_) => {
                    StatusCode::NOT_FOUND
                }
                ManageError::LoadFailed { .. } | ManageError::VersionNotLoaded { .. } => {
                    StatusCode::BAD_REQUEST
                }
                ManageError::Repository(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::Routing(e) => match e {
                RoutingError::Invalid { .. } => StatusCode::BAD_REQUEST,
                RoutingError::UnknownVariant { .. } => StatusCode::NOT_FOUND,
                RoutingError::File { .. } => StatusCode::INTERNAL_SERVER_ERROR,
                RoutingError::Refused { .. } => StatusCode::BAD_REQUEST,
            },
            ApiError::Unauthorized | ApiError::MissingApiKey => StatusCode::UNAUTHORIZED,
            ApiError::ManagementDisabled => StatusCode::FORBIDDEN,
            ApiError::RouteNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
        }
    }
}

/// A request that could never fit is too large (413); one that did not fit now may be retried (503).
fn memory_status(e: &MemoryError) -> StatusCode {
    match e {
        MemoryError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        MemoryError::Exhausted { .. } => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn registry_status(e: &RegistryError) -> StatusCode {
    match e {
        RegistryError::ModelNotFound { .. } | RegistryError::VersionNotFound { .. } => {
            StatusCode::NOT_FOUND
        }
        RegistryError::NotReady { .. }
        | RegistryError::ServerNotReady { .. }
        | RegistryError::ModelsNotReady { .. }
        | RegistryError::ShuttingDown
        | RegistryError::Unloaded { .. }
        | RegistryError::LoadTimedOut { .. } => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// What went wrong, attached to an error response for the request log (`middleware::access` writes it with the
/// request's id, method and path).
#[derive(Debug, Clone)]
pub struct Failure(pub Arc<str>);

impl From<crate::routing::ApplyError> for ApiError {
    fn from(e: crate::routing::ApplyError) -> Self {
        match e {
            crate::routing::ApplyError::Manage(e) => ApiError::Manage(e),
            crate::routing::ApplyError::Routing(e) => ApiError::Routing(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = self.to_string();
        // Logged with the request's context by the access layer, once the response is final.
        let failure = Failure(Arc::from(message.as_str()));
        let mut response =
            (status, Json(super::schema::ErrorBody { error: message })).into_response();
        response.extensions_mut().insert(failure);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        // An inference error names the version and variant that answered, as a success does.
        if let ApiError::Inference(e) = &self {
            if let Some((version, variant)) = e.served_by() {
                let headers = response.headers_mut();
                headers.insert(crate::api::MODEL_VERSION, HeaderValue::from(version));
                if let Ok(variant) = HeaderValue::from_str(variant) {
                    headers.insert(crate::api::VARIANT, variant);
                }
            }
        }
        let realm = match self {
            ApiError::Unauthorized => Some("Bearer realm=\"sluice-admin\""),
            ApiError::MissingApiKey => Some("Bearer realm=\"sluice\""),
            _ => None,
        };
        if let Some(challenge) = realm {
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        response
    }
}
