//! The inference stack's assembly: the layers around the core, outermost first. (Outcome feedback has no layer: the
//! core tells it of each answer, before the shadow layer queues the mirrored run, whose prediction the shadow worker
//! adds to the primary's.)

use std::sync::Arc;

use tower::ServiceBuilder;

use super::core::InferenceService;
use crate::monitoring::payload::{PayloadLog, PayloadLogLayer, PayloadLogging};
use crate::routing::shadow::{Shadow, ShadowLayer, ShadowMirror};
use crate::routing::{Routing, RoutingLayer, RoutingTable};

/// The whole inference stack, as its concrete type: a clone is a few reference counts. (Boxed as a
/// `BoxCloneSyncService`, every request's clone allocated a copy of the stack, and every future was boxed again.)
pub type Pipeline = Routing<Shadow<PayloadLogging<InferenceService>>>;

/// Builds the stack. Order matters and reads top to bottom (outermost first).
pub fn pipeline(
    core: InferenceService,
    routing: Arc<RoutingTable>,
    mirror: ShadowMirror,
    payload_log: PayloadLog,
) -> Pipeline {
    let registry = Arc::clone(core.registry());
    ServiceBuilder::new()
        // Routing first: it turns "no version" into an explicit version and variant, so everything below (shadow
        // sampling, metrics) sees which variant a request belongs to, and its outcome feeds automatic rollback.
        .layer(RoutingLayer::new(
            Arc::clone(&routing),
            Arc::clone(&registry),
        ))
        // Shadow inside routing: it mirrors what the primary actually served, after the primary answered, so the
        // client's response never waits for the shadow.
        .layer(ShadowLayer::new(routing, mirror))
        // Innermost: it asks the core for the validated inputs of sampled requests and logs them with the outputs
        // once the response is ready (after routing decided the variant; before the shadow takes the inputs).
        .layer(PayloadLogLayer::new(Arc::clone(&registry), payload_log))
        .service(core)
}
