//! The inference pipeline, independent of HTTP: resolve the version → decode → validate → run → respond.
//!
//! Owns [`InferenceError`], which joins the errors of each stage, and the per-request metrics. A future gRPC front
//! end would call [`InferenceService::infer`] exactly as the REST handler does.

use std::sync::Arc;
use std::time::Instant;

use crate::config::Limits;
use crate::metrics::{Metrics, Outcome};
use crate::model::{InferError, ModelVersion};
use crate::registry::{Registry, RegistryError};
use crate::tensor::json::{decode_request, DecodeError};
use crate::tensor::Tensor;
use crate::validate::{validate, ValidationError};

#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Validation(#[from] ValidationError),
    #[error(transparent)]
    Infer(#[from] InferError),
}

impl InferenceError {
    fn outcome(&self) -> Outcome {
        match self {
            InferenceError::Registry(_)
            | InferenceError::Decode(_)
            | InferenceError::Validation(_) => Outcome::ClientError,
            InferenceError::Infer(_) => Outcome::ServerError,
        }
    }
}

/// A finished inference: the version that served it and its outputs.
#[derive(Debug)]
pub struct Inferred {
    pub model: Arc<ModelVersion>,
    pub id: Option<String>,
    pub outputs: Vec<Tensor>,
}

pub struct InferenceService {
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    limits: Limits,
}

impl InferenceService {
    pub fn new(registry: Arc<Registry>, metrics: Arc<Metrics>, limits: Limits) -> InferenceService {
        InferenceService {
            registry,
            metrics,
            limits,
        }
    }

    /// Runs one V2 JSON request body against `model` (and `version`, when the client chose one).
    pub async fn infer(
        &self,
        model: &str,
        version: Option<&str>,
        body: &[u8],
    ) -> Result<Inferred, InferenceError> {
        let started = Instant::now();
        let target = self.registry.resolve(model, version)?;
        let version_label = target.version.to_string();
        let span = tracing::Span::current();
        span.record("model", model);
        span.record("version", version_label.as_str());
        let _in_flight = self.metrics.in_flight(model, &version_label);

        let result = self.run(&target, body).await;
        let outcome = match &result {
            Ok(_) => Outcome::Success,
            Err(e) => e.outcome(),
        };
        self.metrics.observe_request(
            model,
            &version_label,
            outcome,
            started.elapsed().as_secs_f64(),
        );
        let (id, outputs) = result?;
        Ok(Inferred {
            model: target,
            id,
            outputs,
        })
    }

    async fn run(
        &self,
        target: &ModelVersion,
        body: &[u8],
    ) -> Result<(Option<String>, Vec<Tensor>), InferenceError> {
        let request = decode_request(body, self.limits.max_tensor_elements)?;
        let outputs = validate(&target.signature, &request)?;
        let started = Instant::now();
        let result = target.infer(request.inputs, outputs).await;
        self.metrics.observe_inference(
            &target.name,
            &target.version.to_string(),
            started.elapsed().as_secs_f64(),
        );
        Ok((request.id, result?))
    }
}
