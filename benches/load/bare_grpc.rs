//! The gRPC floor of the load benchmark: a bare tonic `ModelInfer` around the same ONNX Runtime sessions as sluice,
//! with no work beyond the protocol's (the first input's raw bytes in, each output's raw bytes out, nothing checked),
//! served by tonic's own server. Every other call of the service answers UNIMPLEMENTED. The run happens where sluice
//! would do it, as in `bare.rs`.
//!
//! `cargo run --release --example bare_grpc -- <model.onnx> <port> <shape,comma,separated> <sessions>
//! <intra_threads> <inline|blocking>`

#[path = "pool.rs"]
mod pool;

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use sluice::proto::grpc_inference_service_server::{
    GrpcInferenceService, GrpcInferenceServiceServer,
};
use sluice::proto::model_infer_response::InferOutputTensor;
use sluice::proto::*;
use tonic::{Request, Response, Status, Streaming};

use self::pool::Pool;

struct Bare(Arc<Pool>);

type Reply<T> = Result<Response<T>, Status>;

fn unimplemented<T>() -> Reply<T> {
    Err(Status::unimplemented(
        "the bare handler serves ModelInfer only",
    ))
}

#[tonic::async_trait]
impl GrpcInferenceService for Bare {
    async fn model_infer(&self, request: Request<ModelInferRequest>) -> Reply<ModelInferResponse> {
        let request = request.into_inner();
        let pool = Arc::clone(&self.0);
        let input = request
            .raw_input_contents
            .into_iter()
            .next()
            .unwrap_or_default();
        let run = move || pool.run(&input);
        let outputs = if self.0.inline {
            run()
        } else {
            tokio::task::spawn_blocking(run).await.unwrap()
        };
        Ok(Response::new(ModelInferResponse {
            model_name: request.model_name,
            outputs: (0..outputs.len())
                .map(|i| InferOutputTensor {
                    name: format!("output{i}"),
                    ..Default::default()
                })
                .collect(),
            raw_output_contents: outputs.into_iter().map(Into::into).collect(),
            ..Default::default()
        }))
    }

    async fn server_live(&self, _: Request<ServerLiveRequest>) -> Reply<ServerLiveResponse> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }
    async fn server_ready(&self, _: Request<ServerReadyRequest>) -> Reply<ServerReadyResponse> {
        unimplemented()
    }
    async fn model_ready(&self, _: Request<ModelReadyRequest>) -> Reply<ModelReadyResponse> {
        unimplemented()
    }
    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Reply<ServerMetadataResponse> {
        unimplemented()
    }
    async fn model_metadata(
        &self,
        _: Request<ModelMetadataRequest>,
    ) -> Reply<ModelMetadataResponse> {
        unimplemented()
    }
    type ModelStreamInferStream =
        Pin<Box<dyn Stream<Item = Result<ModelStreamInferResponse, Status>> + Send>>;
    async fn model_stream_infer(
        &self,
        _: Request<Streaming<ModelInferRequest>>,
    ) -> Reply<Self::ModelStreamInferStream> {
        unimplemented()
    }
    async fn model_config(&self, _: Request<ModelConfigRequest>) -> Reply<ModelConfigResponse> {
        unimplemented()
    }
    async fn model_statistics(
        &self,
        _: Request<ModelStatisticsRequest>,
    ) -> Reply<ModelStatisticsResponse> {
        unimplemented()
    }
    async fn repository_index(
        &self,
        _: Request<RepositoryIndexRequest>,
    ) -> Reply<RepositoryIndexResponse> {
        unimplemented()
    }
    async fn repository_model_load(
        &self,
        _: Request<RepositoryModelLoadRequest>,
    ) -> Reply<RepositoryModelLoadResponse> {
        unimplemented()
    }
    async fn repository_model_unload(
        &self,
        _: Request<RepositoryModelUnloadRequest>,
    ) -> Reply<RepositoryModelUnloadResponse> {
        unimplemented()
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let pool = Arc::new(Pool::from_args(
        &args[1], &args[3], &args[4], &args[5], &args[6],
    ));
    let addr = format!("127.0.0.1:{}", args[2]).parse().unwrap();
    // Ends on SIGINT or SIGTERM, returning from `main` (so that a profiling build writes its profile).
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(GrpcInferenceServiceServer::new(Bare(pool)))
        .serve_with_shutdown(addr, sluice::shutdown::signal())
        .await
        .unwrap();
}
