//! Traffic management between model versions: canary weights, sticky A/B assignment and shadow mirroring.
//!
//! Owns [`RoutingPolicy`] (a plain value with a pure selection function, in [`policy`]), the [`RoutingTable`] of
//! active policies (file + management overrides, automatic rollback, in [`table`]; rollbacks written back to a
//! routing file in a bucket by [`writeback`]), and the tower layers that apply
//! them in the inference stack: [`RoutingLayer`] here and [`shadow::ShadowLayer`]. Knows nothing about ONNX.

pub mod policy;
pub mod shadow;
pub mod table;
pub mod writeback;

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::task::{Context, Poll};

use opentelemetry::KeyValue;
use rand::Rng;
use tower::{Layer, Service};

pub use self::policy::RoutingPolicy;
pub use self::table::{Rollback, RoutingChange, RoutingError, RoutingTable, Staged};
use crate::inference::{InferCall, InferFuture, InferenceError, Inferred};
use crate::metrics::{Outcome, PINNED, STABLE};
use crate::model::Signature;
use crate::otel::PhaseEnd;
use crate::registry::policy::incompatibility;
use crate::registry::{ManageError, Registry, RepositoryManager};

/// Why a routing change was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Manage(#[from] ManageError),
    #[error(transparent)]
    Routing(#[from] RoutingError),
}

/// Applies a staged routing change safely: reconcile first (the staged policy's versions are pinned, so they load),
/// then make it active. Requests never reach a version before it is loaded. A policy whose shadow cannot take its
/// primaries' requests is refused, and the previous policy stays.
pub async fn apply_staged(
    table: &RoutingTable,
    manager: &RepositoryManager,
    staged: Staged,
) -> Result<RoutingPolicy, ApplyError> {
    manager.reconcile().await?;
    let refusal = staged_policies(&staged).find_map(|(model, policy)| {
        let problems = shadow_problems(policy, manager.registry(), model);
        (!problems.is_empty()).then(|| RoutingError::Refused {
            model: model.to_owned(),
            reason: problems.join("; "),
        })
    });
    if let Some(refusal) = refusal {
        table.discard(staged);
        manager.reconcile().await?;
        return Err(refusal.into());
    }
    let policy = table.commit(staged);
    // Versions only the previous policy referred to may now be unloaded.
    manager.reconcile().await?;
    warn_unready(table, manager.registry());
    Ok(policy)
}

fn staged_policies(staged: &Staged) -> Box<dyn Iterator<Item = (&str, &RoutingPolicy)> + '_> {
    match staged {
        Staged::File { policies, .. } => Box::new(policies.iter().map(|(m, p)| (m.as_str(), p))),
        Staged::Override { model, policy } => Box::new(std::iter::once((model.as_str(), policy))),
    }
}

/// The versions `policy` sends traffic to that cannot serve now, each with its role and why (their traffic goes to
/// stable, or to the model's default), and a shadow that cannot take its primaries' requests.
pub fn unready_versions(policy: &RoutingPolicy, registry: &Registry, model: &str) -> Vec<String> {
    let mut problems: Vec<String> = policy
        .roles()
        .into_iter()
        .filter_map(|(role, version)| {
            let error = registry.resolve(model, Some(&version.to_string())).err()?;
            Some(format!("{role} (version {version}): {error}"))
        })
        .collect();
    problems.extend(shadow_problems(policy, registry, model));
    problems
}

/// Why the shadow version of `policy` cannot run the requests its primaries (stable, or the default, and each
/// variant) answer, on the live registry: see [`shadow_incompatibilities`]. Empty when it can, or when the versions
/// are not loaded (reported as not ready instead).
pub fn shadow_problems(policy: &RoutingPolicy, registry: &Registry, model: &str) -> Vec<String> {
    let default = registry.resolve(model, None).ok().map(|m| m.version);
    shadow_incompatibilities(policy, default, |v| {
        let version = registry.resolve(model, Some(&v.to_string())).ok()?;
        Some(version.signature.clone())
    })
}

/// Why `policy`'s shadow cannot take the requests of its primaries: the stable version (or `default` when none is
/// set) and each variant. The shadow must take their inputs and produce their outputs, which the schema guard
/// checks. `signature` gives a version's signature when it is loaded; versions without one are skipped.
pub fn shadow_incompatibilities(
    policy: &RoutingPolicy,
    default: Option<u64>,
    signature: impl Fn(u64) -> Option<Signature>,
) -> Vec<String> {
    let Some(shadow) = policy.shadow.as_ref().map(|s| s.version) else {
        return Vec::new();
    };
    let Some(target) = signature(shadow) else {
        return Vec::new();
    };
    let primaries: BTreeSet<u64> = policy
        .stable
        .or(default)
        .into_iter()
        .chain(policy.variants.iter().map(|v| v.version))
        .filter(|v| *v != shadow)
        .collect();
    primaries
        .into_iter()
        .filter_map(|primary| {
            let why = incompatibility(&signature(primary)?, &target)?;
            Some(format!(
                "shadow (version {shadow}) cannot take the requests of version {primary}: {why}"
            ))
        })
        .collect()
}

/// One WARN per model whose active policy refers to versions that cannot serve: said once when a policy is applied
/// (and shown by `GET /v2/models/{m}/routing`), not on every request routed around them.
pub fn warn_unready(table: &RoutingTable, registry: &Registry) {
    for model in table.models() {
        let Some(active) = table.get(&model) else {
            continue;
        };
        let problems = unready_versions(&active.policy, registry, &model);
        if !problems.is_empty() {
            tracing::warn!(model, problems = %problems.join("; "), "routing policy refers to versions that cannot serve; their traffic goes to stable");
        }
    }
}

/// Adds routing to an inference service.
#[derive(Clone)]
pub struct RoutingLayer {
    table: Arc<RoutingTable>,
    registry: Arc<Registry>,
}

impl RoutingLayer {
    pub fn new(table: Arc<RoutingTable>, registry: Arc<Registry>) -> RoutingLayer {
        RoutingLayer { table, registry }
    }
}

impl<S> Layer<S> for RoutingLayer {
    type Service = Routing<S>;
    fn layer(&self, inner: S) -> Routing<S> {
        Routing {
            inner,
            table: Arc::clone(&self.table),
            registry: Arc::clone(&self.registry),
        }
    }
}

/// Chooses the version (and variant label) of requests that did not name one.
#[derive(Clone)]
pub struct Routing<S> {
    inner: S,
    table: Arc<RoutingTable>,
    registry: Arc<Registry>,
}

impl<S> Routing<S> {
    /// Fills in `call.version` and `call.variant` from the model's policy.
    fn route(&self, call: &mut InferCall) {
        if call.version.is_some() {
            return;
        }
        let Some(active) = self.table.get(&call.model) else {
            call.variant = Cow::Borrowed(STABLE);
            return;
        };
        let policy = &active.policy;
        let key = policy
            .key_header
            .as_deref()
            .and_then(|h| call.metadata.get(h));
        let bucket = match key {
            Some(key) => policy::bucket_for_key(&call.model, key),
            None => rand::rng().random_range(0..policy::BUCKETS),
        };
        if let Some(variant) = policy.choose(bucket) {
            let version = variant.version.to_string();
            // A variant whose version is not ready must not fail requests: they go to stable instead.
            if self.registry.resolve(&call.model, Some(&version)).is_ok() {
                call.version = Some(version);
                call.variant = Cow::Owned(variant.name.clone());
                return;
            }
            // Reported once when the policy was applied (`warn_unready`) and in `GET /v2/models/{m}/routing`.
            tracing::debug!(model = %call.model, variant = %variant.name, "variant version not ready; routed to stable");
        }
        // A stable version that is not ready falls back to the model's default rather than failing.
        call.version = policy
            .stable
            .map(|v| v.to_string())
            .filter(|v| self.registry.resolve(&call.model, Some(v)).is_ok());
        call.variant = Cow::Borrowed(STABLE);
    }
}

impl<S> Service<InferCall> for Routing<S>
where
    S: Service<InferCall, Response = Inferred, Error = InferenceError, Future = InferFuture>
        + Clone
        + Send
        + 'static,
{
    type Response = Inferred;
    type Error = InferenceError;
    type Future = InferFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), InferenceError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut call: InferCall) -> Self::Future {
        let started = std::time::Instant::now();
        self.route(&mut call);
        if let Some(trace) = call.trace.as_ref().filter(|t| t.sampled()) {
            let attributes = || {
                let mut kv = vec![KeyValue::new("sluice.variant", call.variant.to_string())];
                kv.extend(
                    call.version
                        .clone()
                        .map(|v| KeyValue::new("sluice.model.version", v)),
                );
                kv
            };
            trace.phase(
                "route",
                (started, std::time::Instant::now()),
                attributes,
                PhaseEnd::Ok,
            );
        }
        // Only a routed variant's outcomes are recorded (automatic rollback); other requests need nothing after
        // the run, so their future is passed on as it is.
        if call.variant == PINNED || call.variant == STABLE {
            return self.inner.call(call);
        }
        let (model, variant) = (call.model.clone(), call.variant.clone());
        let table = Arc::clone(&self.table);
        let future = self.inner.call(call);
        Box::pin(async move {
            let result = future.await;
            let ok = !matches!(&result, Err(e) if e.outcome() != Outcome::Success);
            table.record(&model, &variant, ok);
            result
        })
    }
}
