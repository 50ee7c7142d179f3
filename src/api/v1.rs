//! KServe's V1 protocol for simple tabular clients: `POST /v1/models/{m}:predict` with `instances` (or `inputs`)
//! → `predictions`, and `GET /v1/models/{m}`. A V1 request is translated into a V2 request (datatypes and names
//! from the model's signature) and runs through the same inference stack, routing included.

use axum::body::Bytes;
use axum::extract::Request;
use axum::extract::State;
use axum::http::HeaderName;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use tower::ServiceExt;

use super::schema::{self, V1Response, V1Status};
use super::{ApiError, AppState, V2Path, MODEL_VERSION};
use crate::inference::{InferCall, Payload};
use crate::model::Signature;
use crate::tensor::Tensor;

#[utoipa::path(
    get,
    path = "/v1/models/{model}",
    tag = "v1",
    params(("model" = String, Path, description = "Model name")),
    security((), ("api_key" = [])),
    responses((status = 200, description = "Model status", body = schema::V1Status), (status = 400, description = "Invalid path", body = schema::ErrorBody), (status = 401, description = "Missing or wrong API key", body = schema::ErrorBody), (status = 404, description = "Unknown model or version", body = schema::ErrorBody), (status = 503, description = "Not ready", body = schema::ErrorBody))
)]
pub async fn status(
    State(state): State<AppState>,
    V2Path(model): V2Path<String>,
) -> Result<Response, ApiError> {
    let target = state.registry.resolve(&model, None)?;
    Ok(Json(V1Status {
        name: &target.name,
        ready: true,
    })
    .into_response())
}

#[utoipa::path(
    post,
    path = "/v1/models/{model}:predict",
    tag = "v1",
    params(("model" = String, Path, description = "Model name")),
    request_body(content = schema::V1Request, content_type = "application/json"),
    security((), ("api_key" = [])),
    responses((status = 200, description = "Predictions", body = schema::V1Response), (status = 400, description = "Malformed or invalid request", body = schema::ErrorBody), (status = 401, description = "Missing or wrong API key", body = schema::ErrorBody), (status = 404, description = "Unknown model or version", body = schema::ErrorBody), (status = 413, description = "Body too large", body = schema::ErrorBody), (status = 500, description = "ONNX Runtime failed", body = schema::ErrorBody), (status = 503, description = "Not ready or overloaded", body = schema::ErrorBody), (status = 504, description = "Timed out", body = schema::ErrorBody))
)]
/// `POST /v1/models/{m}:predict` (axum sees `{m}:predict` as one path segment).
pub async fn predict(
    State(state): State<AppState>,
    V2Path(target): V2Path<String>,
    request: Request,
) -> Result<([(HeaderName, String); 1], Json<V1Response>), ApiError> {
    let Some(model) = target.strip_suffix(":predict") else {
        return Err(ApiError::RouteNotFound(format!("/v1/models/{target}")));
    };
    // A JSON tree takes many times its text.
    let (headers, body, memory, trace) =
        super::infer::read_reserved(&state, model, None, request, Some(V1_BYTES_PER_BODY_BYTE))
            .await?;
    let request: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("malformed V1 request: {e}")))?;
    let instances = request
        .get("instances")
        .or_else(|| request.get("inputs"))
        .and_then(Value::as_array)
        .ok_or_else(|| {
            ApiError::BadRequest("a V1 request needs \"instances\": [...] (or \"inputs\")".into())
        })?;
    let signature = state.registry.resolve(model, None)?.signature.clone();
    let v2 = to_v2(&signature, instances)?;
    let payload = Payload::Json {
        body: Bytes::from(v2.to_string()),
        binary_header_len: None,
    };
    let mut call = InferCall::new(model.to_owned(), None, headers.into(), payload);
    call.memory = memory;
    call.trace = trace;
    let done = state.pipeline.clone().oneshot(call).await?;
    let encoding = std::time::Instant::now();
    let body = V1Response {
        predictions: predictions(&done.outputs, instances.len()),
    };
    done.model.stats.output(encoding.elapsed());
    // The served version, as on V2 responses (it also marks the answer as an inference result, for compression).
    Ok((
        [(MODEL_VERSION, done.model.version.to_string())],
        Json(body),
    ))
}

/// What a V1 request holds per body byte at most: its JSON tree (a `Value` per number), the V2 text made from it,
/// and the tensors and outputs of the V2 request.
const V1_BYTES_PER_BODY_BYTE: usize = 24;

/// Builds the V2 request: one input per signature input, each instance contributing one row.
fn to_v2(signature: &Signature, instances: &[Value]) -> Result<Value, ApiError> {
    let bad = |m: String| ApiError::BadRequest(m);
    if instances.is_empty() {
        return Err(bad("\"instances\" is empty".into()));
    }
    let mut inputs = Vec::new();
    for spec in &signature.inputs {
        let (datatype, _) = spec
            .tensor()
            .ok_or_else(|| bad(format!("input '{}' is not a tensor", spec.name)))?;
        let rows: Vec<&Value> = if signature.inputs.len() == 1 && !instances[0].is_object() {
            instances.iter().collect()
        } else {
            instances
                .iter()
                .map(|i| {
                    i.get(&spec.name)
                        .ok_or_else(|| bad(format!("an instance lacks input '{}'", spec.name)))
                })
                .collect::<Result<_, _>>()?
        };
        let mut shape = vec![rows.len()];
        let mut probe = rows[0];
        while let Some(inner) = probe.as_array() {
            shape.push(inner.len());
            match inner.first() {
                Some(first) => probe = first,
                None => break,
            }
        }
        inputs.push(json!({ "name": spec.name, "datatype": datatype.as_str(), "shape": shape, "data": rows }));
    }
    Ok(json!({ "inputs": inputs }))
}

/// One prediction per instance: the row of the single output, or an object of every output's row.
fn predictions(outputs: &[Tensor], instances: usize) -> Vec<Value> {
    let rows: Vec<(&str, Vec<Value>)> = outputs
        .iter()
        .map(|t| (t.name.as_str(), split_rows(t, instances)))
        .collect();
    (0..instances)
        .map(|i| match rows.as_slice() {
            [(_, only)] => only.get(i).cloned().unwrap_or(Value::Null),
            many => Value::Object(
                many.iter()
                    .map(|(name, r)| ((*name).to_owned(), r.get(i).cloned().unwrap_or(Value::Null)))
                    .collect::<Map<_, _>>(),
            ),
        })
        .collect()
}

/// Splits a tensor along dimension 0 into nested JSON rows.
fn split_rows(tensor: &Tensor, instances: usize) -> Vec<Value> {
    let flat = serde_json::to_value(&tensor.data).unwrap_or(Value::Null);
    let Value::Array(flat) = flat else {
        return Vec::new();
    };
    let inner: &[usize] = tensor.shape.get(1..).unwrap_or(&[]);
    let per_row: usize = inner.iter().product();
    if tensor.shape.first() != Some(&instances) {
        return vec![Value::Array(flat)];
    }
    flat.chunks(per_row.max(1))
        .map(|chunk| nest(chunk, inner))
        .collect()
}

fn nest(values: &[Value], shape: &[usize]) -> Value {
    match shape {
        [] => values.first().cloned().unwrap_or(Value::Null),
        [_] => Value::Array(values.to_vec()),
        [_, rest @ ..] => {
            let step: usize = rest.iter().product::<usize>().max(1);
            Value::Array(values.chunks(step).map(|c| nest(c, rest)).collect())
        }
    }
}
