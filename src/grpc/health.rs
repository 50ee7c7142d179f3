//! `grpc.health.v1.Health`, answered from the registry: the server (service `""`) and the inference service
//! (`inference.GRPCInferenceService`) are SERVING when the server is ready (`/v2/health/ready`), `liveness` is
//! SERVING while the process answers; other names are NOT_FOUND. `Watch` sends the status, then each change.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::registry::Registry;

/// How often `Watch` looks at readiness again.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);

pub fn service(registry: Arc<Registry>) -> HealthServer<Probes> {
    HealthServer::new(Probes { registry })
}

pub struct Probes {
    registry: Arc<Registry>,
}

impl Probes {
    fn status(&self, service: &str) -> Result<ServingStatus, Status> {
        match service {
            "" | "inference.GRPCInferenceService" => Ok(if self.registry.readiness().is_ok() {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            }),
            "liveness" => Ok(ServingStatus::Serving),
            other => Err(Status::not_found(format!(
                "unknown service '{other}': ask for '', 'inference.GRPCInferenceService' or 'liveness'"
            ))),
        }
    }
}

type Statuses = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for Probes {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let status = self.status(&request.into_inner().service)?;
        Ok(Response::new(HealthCheckResponse {
            status: status.into(),
        }))
    }

    type WatchStream = Statuses;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Statuses>, Status> {
        let service = request.into_inner().service;
        let first = self.status(&service)?;
        let probes = Probes {
            registry: Arc::clone(&self.registry),
        };
        let changes = futures_util::stream::unfold(
            (probes, service, None::<ServingStatus>, first),
            |(probes, service, sent, mut now)| async move {
                while sent == Some(now) {
                    tokio::time::sleep(WATCH_INTERVAL).await;
                    now = probes.status(&service).ok()?;
                }
                let reply = HealthCheckResponse { status: now.into() };
                Some((Ok(reply), (probes, service, Some(now), now)))
            },
        );
        Ok(Response::new(Box::pin(changes)))
    }
}
