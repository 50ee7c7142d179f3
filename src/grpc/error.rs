//! [`GrpcError`]: every error the gRPC service returns, mapped to a status code by one exhaustive `match`. Messages
//! are the REST API's, so a client sees the same words on either transport.

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::inference::InferenceError;
use crate::memory::MemoryError;
use crate::model::InferError;
use crate::registry::{ManageError, RegistryError};

#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    #[error(transparent)]
    Inference(#[from] InferenceError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Manage(#[from] ManageError),
    #[error("missing or wrong API key (send 'authorization: Bearer <key>' or 'x-api-key: <key>' metadata)")]
    MissingApiKey,
    #[error("missing or wrong admin token (send 'authorization: Bearer <token>' metadata)")]
    Unauthorized,
    #[error(
        "the management API is disabled: set admin.token (or SLUICE__ADMIN__TOKEN) to enable it"
    )]
    ManagementDisabled,
    #[error(
        "the management API is open without a token on admin.port only; repository calls over gRPC need admin.token"
    )]
    AdminPortOnly,
    #[error("server overloaded: too many requests in flight and queued; retry later")]
    Shed,
    #[error("the request did not finish within its deadline of {ms} ms")]
    Deadline { ms: u128 },
    #[error("{0}")]
    InvalidArgument(String),
}

impl GrpcError {
    /// The version that answered, when the request reached one.
    pub fn served_by_version(&self) -> Option<u64> {
        match self {
            GrpcError::Inference(e) => e.served_by().map(|(version, _)| version),
            _ => None,
        }
    }

    pub fn code(&self) -> Code {
        match self {
            GrpcError::Inference(e) => match e.cause() {
                InferenceError::Registry(r) => registry_code(r),
                InferenceError::Decode(_) | InferenceError::Validation(_) => Code::InvalidArgument,
                InferenceError::Infer(InferError::Overloaded { .. }) => Code::ResourceExhausted,
                InferenceError::Infer(
                    InferError::Input { .. }
                    | InferError::Runtime(_)
                    | InferError::Output { .. }
                    | InferError::Internal(_),
                ) => Code::Internal,
                InferenceError::Memory(
                    MemoryError::TooLarge { .. } | MemoryError::Exhausted { .. },
                ) => Code::ResourceExhausted,
                // `cause` never returns the wrapper.
                InferenceError::Served { .. } => Code::Internal,
            },
            GrpcError::Registry(r) => registry_code(r),
            GrpcError::Manage(e) => match e {
                ManageError::UnknownModel(_) | ManageError::NotInRepository(_) => Code::NotFound,
                ManageError::LoadFailed { .. } | ManageError::VersionNotLoaded { .. } => {
                    Code::InvalidArgument
                }
                ManageError::Repository(_) => Code::Internal,
            },
            GrpcError::MissingApiKey | GrpcError::Unauthorized => Code::Unauthenticated,
            GrpcError::ManagementDisabled | GrpcError::AdminPortOnly => Code::PermissionDenied,
            GrpcError::Shed => Code::ResourceExhausted,
            GrpcError::Deadline { .. } => Code::DeadlineExceeded,
            GrpcError::InvalidArgument(_) => Code::InvalidArgument,
        }
    }
}

fn registry_code(e: &RegistryError) -> Code {
    match e {
        RegistryError::ModelNotFound { .. } | RegistryError::VersionNotFound { .. } => {
            Code::NotFound
        }
        RegistryError::NotReady { .. }
        | RegistryError::ServerNotReady { .. }
        | RegistryError::ModelsNotReady { .. }
        | RegistryError::ShuttingDown
        | RegistryError::Unloaded { .. }
        | RegistryError::LoadTimedOut { .. } => Code::Unavailable,
    }
}

impl From<GrpcError> for Status {
    fn from(e: GrpcError) -> Status {
        let mut status = Status::new(e.code(), e.to_string());
        // An inference error names the version and variant that answered, as a success does.
        if let GrpcError::Inference(e) = &e {
            if let Some((version, variant)) = e.served_by() {
                let metadata = status.metadata_mut();
                metadata.insert(super::MODEL_VERSION, MetadataValue::from(version));
                if let Ok(variant) = variant.parse() {
                    metadata.insert(super::VARIANT, variant);
                }
            }
        }
        status
    }
}
