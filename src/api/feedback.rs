//! Outcome feedback endpoints: ground truth in (`POST /v2/models/{m}/feedback`) and live quality out
//! (`GET /v2/models/{m}/quality`).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::schema;
use super::{ApiError, AppState, V2Path};
use crate::monitoring::feedback::{ModelQuality, PostReply, TruthRecord};
use crate::registry::RegistryError;

/// A post: one record, or a batch of them.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum FeedbackBody {
    Batch { records: Vec<TruthRecord> },
    One(TruthRecord),
}

#[utoipa::path(
    post,
    path = "/v2/models/{model}/feedback",
    tag = "monitoring",
    params(("model" = String, Path, description = "Model name")),
    request_body = FeedbackBody,
    security((), ("api_key" = [])),
    responses(
        (status = 200, description = "What became of each record: accepted, or counted as unknown, late, duplicate or invalid, with why", body = PostReply),
        (status = 400, description = "Not JSON of this shape, or the model has no [feedback] policy", body = schema::ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = schema::ErrorBody),
        (status = 404, description = "Unknown model", body = schema::ErrorBody),
        (status = 413, description = "Body over 1 MiB", body = schema::ErrorBody)
    )
)]
pub async fn post(
    State(state): State<AppState>,
    V2Path(model): V2Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    known(&state, &model)?;
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::BodyTooLarge { limit: 1 << 20 },
        _ => ApiError::BodyUnreadable(e.body_text()),
    })?;
    let records = match serde_json::from_slice::<FeedbackBody>(&body) {
        Ok(FeedbackBody::Batch { records }) => records,
        Ok(FeedbackBody::One(record)) => vec![record],
        Err(e) => {
            return Err(ApiError::BadRequest(format!(
                "feedback body: {e}; expected {{\"id\": \"…\", \"truth\": …}} or {{\"records\": [{{\"id\": \"…\", \"truth\": …}}, …]}}"
            )))
        }
    };
    Ok(Json(state.feedback.post(&model, &records)?).into_response())
}

#[utoipa::path(
    get,
    path = "/v2/models/{model}/quality",
    tag = "monitoring",
    params(("model" = String, Path, description = "Model name")),
    security((), ("api_key" = [])),
    responses(
        (status = 200, description = "Quality per version, variant and set over the last feedback.window labels", body = ModelQuality),
        (status = 400, description = "The model has no [feedback] policy", body = schema::ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = schema::ErrorBody),
        (status = 404, description = "Unknown model", body = schema::ErrorBody)
    )
)]
pub async fn quality(
    State(state): State<AppState>,
    V2Path(model): V2Path<String>,
) -> Result<Response, ApiError> {
    known(&state, &model)?;
    Ok(Json(state.feedback.report(&model)?).into_response())
}

fn known(state: &AppState, model: &str) -> Result<(), ApiError> {
    if state.registry.snapshot().contains_key(model) {
        Ok(())
    } else {
        Err(RegistryError::ModelNotFound {
            model: model.to_owned(),
        }
        .into())
    }
}
