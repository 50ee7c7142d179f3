//! What flows through the inference stack, whatever the front end: [`InferCall`] down, [`Inferred`] or
//! [`InferenceError`] back up. Every layer of the stack and both front ends import these types; they import no layer.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;

use crate::memory::{MemoryError, Reservation};
use crate::metrics::{Outcome, Protocol, PINNED};
use crate::model::{InferError, ModelVersion};
use crate::otel::RequestTrace;
use crate::proto::ModelInferRequest;
use crate::registry::RegistryError;
use crate::tensor::json::{BinaryOutputs, DecodeError};
use crate::tensor::Tensor;
use crate::validate::ValidationError;

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
    /// The memory budget could not hold the request.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// An error of a request that reached a version: which version and variant it was, so the response and the
    /// log line can say who answered.
    #[error("{source}")]
    Served {
        version: u64,
        variant: Cow<'static, str>,
        source: Box<InferenceError>,
    },
}

impl InferenceError {
    pub fn outcome(&self) -> Outcome {
        match self {
            InferenceError::Registry(_)
            | InferenceError::Decode(_)
            | InferenceError::Validation(_) => Outcome::ClientError,
            InferenceError::Infer(_) | InferenceError::Memory(_) => Outcome::ServerError,
            InferenceError::Served { source, .. } => source.outcome(),
        }
    }

    /// The error itself, without the version and variant it was attributed to.
    pub fn cause(&self) -> &InferenceError {
        match self {
            InferenceError::Served { source, .. } => source.cause(),
            other => other,
        }
    }

    /// The version and variant that answered, when the request reached a version.
    pub fn served_by(&self) -> Option<(u64, &str)> {
        match self {
            InferenceError::Served {
                version, variant, ..
            } => Some((*version, variant)),
            _ => None,
        }
    }
}

/// One inference request on its way down the stack, as any front end hands it over.
#[derive(Debug)]
pub struct InferCall {
    pub model: String,
    /// The version the client named, or (after routing) the one routing chose.
    pub version: Option<String>,
    /// The request's metadata: the model's routing key and the request id are read from it.
    pub metadata: Metadata,
    /// The request's tensors, still in their wire form.
    pub payload: Payload,
    /// The variant label: `pinned` when the client named a version, else set by routing (borrowed for `pinned` and
    /// `stable`, so most requests carry no copy of it).
    pub variant: Cow<'static, str>,
    /// Set by the shadow layer: keep a copy of the validated inputs for the shadow run.
    pub capture_inputs: bool,
    /// The memory reserved for the request (empty when the front end reserved none: the core reserves the version's
    /// estimate then, waiting for it if need be).
    pub memory: Reservation,
    /// The request's place in its trace, when tracing is on: the stages record their phases on it.
    pub trace: Option<RequestTrace>,
}

impl InferCall {
    pub fn new(
        model: String,
        version: Option<String>,
        metadata: Metadata,
        payload: Payload,
    ) -> InferCall {
        InferCall {
            model,
            variant: Cow::Borrowed(if version.is_some() { PINNED } else { "" }),
            version,
            metadata,
            payload,
            capture_inputs: false,
            memory: Reservation::none(),
            trace: None,
        }
    }
}

/// A request's tensors as its front end received them; the core decodes them (off the async workers when large).
#[derive(Debug)]
pub enum Payload {
    /// A V2 JSON request; with Triton's binary extension, the JSON header is the first `binary_header_len` bytes and
    /// raw tensor data follows.
    Json {
        body: Bytes,
        binary_header_len: Option<usize>,
    },
    /// A gRPC `ModelInferRequest`, as the front end received it; `wire_len` is its encoded size.
    Proto {
        request: Box<ModelInferRequest>,
        wire_len: usize,
    },
}

impl Payload {
    /// The transport the payload came by.
    pub fn protocol(&self) -> Protocol {
        match self {
            Payload::Json { .. } => Protocol::Http,
            Payload::Proto { .. } => Protocol::Grpc,
        }
    }

    /// The request's size on the wire, which a version's memory footprint is learned per byte of.
    pub fn wire_len(&self) -> usize {
        match self {
            Payload::Json { body, .. } => body.len(),
            Payload::Proto { wire_len, .. } => *wire_len,
        }
    }
}

/// Request metadata, by lower-case name: HTTP headers, or gRPC metadata (both are an `http::HeaderMap`).
#[derive(Debug, Default)]
pub struct Metadata(HeaderMap);

impl Metadata {
    /// The value of `name`, when present and printable.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(|v| v.to_str().ok())
    }

    /// The request's id (`x-request-id`, which the front end sets when the client sent none).
    pub fn request_id(&self) -> Option<&str> {
        self.get("x-request-id")
    }
}

impl From<HeaderMap> for Metadata {
    fn from(headers: HeaderMap) -> Metadata {
        Metadata(headers)
    }
}

/// A finished inference: the version that served it, its outputs and the variant it was routed to.
#[derive(Debug)]
pub struct Inferred {
    pub model: Arc<ModelVersion>,
    pub id: Option<String>,
    pub outputs: Vec<Tensor>,
    pub variant: Cow<'static, str>,
    /// The validated inputs, when the shadow layer asked for them.
    pub captured_inputs: Option<Vec<Tensor>>,
    /// Outputs the client asked to receive as binary data.
    pub binary_outputs: BinaryOutputs,
    /// The request's memory, to hold until its response is sent; it holds at least [`Inferred::held`].
    pub memory: Reservation,
    /// The most the request held at once so far (body and tensors; the front end adds its encoding).
    pub held: usize,
    /// The request's size on the wire, which the version's footprint is learned per byte of.
    pub wire_len: usize,
}

/// The future every service of the inference stack returns.
/// Told of each answered request by the core, before the answer goes back up the stack (outcome feedback keeps the
/// predictions of its models this way, with no layer of its own).
pub trait AnswerObserver: Send + Sync {
    /// `request_id`: the request's `x-request-id`; `mirrored`: the shadow layer sends it to the shadow too.
    fn answered(&self, done: &Inferred, request_id: Option<&str>, mirrored: bool);
}

pub type InferFuture = Pin<Box<dyn Future<Output = Result<Inferred, InferenceError>> + Send>>;
