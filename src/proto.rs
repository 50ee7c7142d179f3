//! The gRPC API's messages and service traits, generated at build time from `src/grpc/proto/inference.proto` (see
//! `build.rs`), and its encoded descriptor set, which the reflection service serves.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("inference");

/// `inference.proto` as an encoded `FileDescriptorSet`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("inference_descriptor");
