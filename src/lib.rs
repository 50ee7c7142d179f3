//! sluice: a model server for ONNX models speaking the Open Inference Protocol (V2 REST).
//!
//! The path of one inference request, one module per step (data moves forward only):
//!
//! - [`middleware`]: the tower stack (request ids, the request log, a debug-level span per request).
//! - [`api`]: thin axum handlers; every error becomes a V2 `{"error": …}` body via [`api::ApiError`].
//! - [`inference`]: the transport-agnostic pipeline that the handler calls, a tower stack:
//!   - [`routing`] picks the version and variant (canary, sticky A/B) and mirrors a sample to a shadow version,
//!   - [`registry`] resolves the model version (lock-free lookup in an atomically swapped map),
//!   - [`tensor::json`] decodes the V2 JSON body straight into typed buffers ([`tensor`]),
//!   - [`validate`] checks the request against the version's [`model::Signature`],
//!   - [`model`] runs it on a session from the version's pool (inline when the run is predicted short, else on a
//!     blocking thread),
//!   - and the handler encodes the typed outputs as a V2 response.
//!
//! `sluice check` ([`check`]) validates a repository offline. Around it: [`config`] (defaults → file → env → flags), [`runtime`] (finding the ONNX Runtime library),
//! [`repository`] (the on-disk layout), [`metrics`] (a Prometheus registry of our own), [`telemetry`] (logging),
//! [`shutdown`] (signals) and [`server`] (start-up and the serving loop).
#![deny(unsafe_code)]

pub mod api;
pub mod check;
pub mod config;
pub mod grpc;
pub mod idle;
pub mod inference;
pub mod linger;
pub mod memory;
pub mod metrics;
pub mod middleware;
pub mod model;
pub mod monitoring;
pub mod otel;
pub mod proto;
pub mod registry;
pub mod repository;
pub mod routing;
pub mod runtime;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod tensor;
pub mod validate;
