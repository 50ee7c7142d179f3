//! The inference pipeline, independent of the transport, as a tower stack:
//!
//! ```text
//! RoutingLayer  (picks the version and variant when the request names none)
//!   ShadowLayer (samples requests to mirror to a shadow version, after the primary answered)
//!     PayloadLogLayer (samples requests to log, redacted, through a bounded buffer)
//!       InferenceService: resolve the version → decode → validate → run → outputs
//! ```
//!
//! [`call`] holds what flows through the stack (the layers import it), [`core`] the innermost service, [`stack`]
//! the assembly (it imports the layers). The REST front end calls the same [`Pipeline`] a gRPC one would.

pub mod call;
pub mod core;
pub mod stack;

pub use self::call::{
    AnswerObserver, InferCall, InferFuture, InferenceError, Inferred, Metadata, Payload,
};
pub use self::core::{InferenceService, OFF_WORKER_BYTES};
pub use self::stack::{pipeline, Pipeline};
