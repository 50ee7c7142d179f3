//! Distributed tracing with OpenTelemetry: a server span per request that continues the caller's W3C trace context
//! (`traceparent`, `tracestate`), a child span per phase, and OTLP export (HTTP/protobuf or gRPC) off the request
//! path ([`export`]).
//!
//! [`Tracing`] is built once from `[tracing]` and handed to the front ends. Each request gets a [`RequestTrace`]:
//! its server span's ids (inside the caller's trace, or in a new trace) and, when it is recorded, the SDK's span.
//! Whether it is recorded is decided before any span is built (the caller's sampled flag, else the ratio over the
//! new trace id), so an unrecorded request pays for two random ids, one sampling decision and its response's
//! `traceparent`, and never enters the SDK. Phase spans are written after the fact from the instants the pipeline
//! measures anyway, and only for recorded requests: a phase is over when it is written, so its span data goes
//! straight to the export queue. The server span is kept the same way: its name and attributes wait in the request's
//! trace until it finishes, then its span data goes to the queue. The SDK's live-span machinery (tracer, sampler,
//! processors) is never on the request path; what sluice takes from it is the span data type, the id generator, the
//! ratio sampler and the exporters.
//!
//! Spans are made with the OpenTelemetry API directly rather than through `tracing` spans: a `tracing` span costs
//! its subscriber work whether or not the trace is sampled, on every phase of every request.

pub mod export;
mod route;

use std::borrow::Cow;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use http::HeaderMap;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    Link, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceState,
};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, Sampler, SamplingDecision, ShouldSample, SpanData, SpanEvents,
    SpanLinks,
};
use opentelemetry_sdk::Resource;

use self::export::{ExportPlan, QueuedExport};
use self::route::route_and_name;
use crate::config::{OtlpProtocol, TracingSettings};
use crate::metrics::TraceMetrics;

/// Settings are checked when they are read (`config`); what is left is the exporter itself.
#[derive(Debug, thiserror::Error)]
pub enum TracingError {
    #[error("the OTLP exporter cannot be built: {0}")]
    Exporter(String),
}

/// The process's tracer, its exporter and the trace-context propagator. Cheap to clone.
#[derive(Clone)]
pub struct Tracing {
    inner: Arc<Inner>,
}

struct Inner {
    propagator: TraceContextPropagator,
    export: Arc<QueuedExport>,
    /// The ratio that decides whether a new trace is recorded.
    ratio: Sampler,
    ids: RandomIdGenerator,
    /// The instrumentation scope of every span sluice writes.
    scope: InstrumentationScope,
}

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tracing")
    }
}

impl Tracing {
    /// Builds the tracer from `[tracing]` (`None` when it is off). Starts the export task: call within a Tokio
    /// runtime.
    pub fn start(
        settings: &TracingSettings,
        metrics: TraceMetrics,
    ) -> Result<Option<Tracing>, TracingError> {
        if !settings.enabled {
            return Ok(None);
        }
        let resource = resource(settings);
        let timeout = Duration::from_millis(settings.export_timeout_ms.max(1));
        let mut exporter = match settings.protocol {
            OtlpProtocol::HttpProtobuf => {
                let builder = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_timeout(timeout);
                let builder = match settings.endpoint.as_str() {
                    "" => builder,
                    endpoint => builder.with_endpoint(endpoint),
                };
                builder.build()
            }
            OtlpProtocol::Grpc => {
                let builder = opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_timeout(timeout);
                match settings.endpoint.as_str() {
                    "" => builder,
                    endpoint => builder.with_endpoint(endpoint),
                }
                .build()
            }
        }
        .map_err(|e| TracingError::Exporter(e.to_string()))?;
        opentelemetry_sdk::trace::SpanExporter::set_resource(&mut exporter, &resource);
        let plan = ExportPlan {
            queue_capacity: settings.queue_capacity,
            batch_size: settings.batch_size.max(1),
            interval: Duration::from_millis(settings.export_interval_ms.max(1)),
            timeout,
        };
        let export = Arc::new(QueuedExport::start(exporter, plan, metrics));
        Ok(Some(Tracing {
            inner: Arc::new(Inner {
                propagator: TraceContextPropagator::new(),
                export,
                ratio: Sampler::TraceIdRatioBased(settings.sample_ratio),
                ids: RandomIdGenerator::default(),
                scope: InstrumentationScope::builder(SCOPE).build(),
            }),
        }))
    }

    /// Starts an HTTP request's server span: inside the trace `headers` carry (`traceparent`, `tracestate`), else in
    /// a new one. Its name becomes `{method} {route}` once the route is known ([`RequestTrace::finish`]).
    pub fn request(&self, headers: &HeaderMap, method: &http::Method) -> RequestTrace {
        self.server_span(headers, || {
            let name: Cow<'static, str> = match *method {
                http::Method::POST => Cow::Borrowed("POST"),
                http::Method::GET => Cow::Borrowed("GET"),
                ref other => Cow::Owned(other.as_str().to_owned()),
            };
            let attributes = vec![KeyValue::new("http.request.method", name.clone())];
            (name, attributes)
        })
    }

    /// Starts a gRPC call's server span (`service/method`), inside the trace its metadata carries.
    pub fn call(
        &self,
        metadata: &HeaderMap,
        service: &'static str,
        method: &'static str,
    ) -> RequestTrace {
        self.server_span(metadata, || {
            let attributes = vec![
                KeyValue::new("rpc.system", "grpc"),
                KeyValue::new("rpc.service", service),
                KeyValue::new("rpc.method", method),
            ];
            (Cow::Owned(format!("{service}/{method}")), attributes)
        })
    }

    /// The request's place in its trace. Whether it is recorded is decided first — by the caller's sampled flag
    /// when its `traceparent` is valid, else by the ratio over the new trace's id — and only a recorded request
    /// goes through the SDK (`span` names and describes it then); an unrecorded one is just its ids.
    fn server_span(
        &self,
        headers: &HeaderMap,
        span: impl FnOnce() -> (Cow<'static, str>, Vec<KeyValue>),
    ) -> RequestTrace {
        let inner = &*self.inner;
        let parent = headers
            .contains_key(TRACEPARENT)
            .then(|| inner.propagator.extract(&HeaderExtractor(headers)))
            .filter(|cx| cx.span().span_context().is_valid());
        // The request's trace and whether it is recorded: the caller's, else a new trace the ratio decides on.
        let (trace_id, trace_state, recorded) = match &parent {
            Some(cx) => {
                let caller = cx.span();
                let caller = caller.span_context();
                (
                    caller.trace_id(),
                    caller.trace_state().clone(),
                    caller.is_sampled(),
                )
            }
            None => {
                let trace_id = inner.ids.new_trace_id();
                let decision = inner
                    .ratio
                    .should_sample(None, trace_id, "", &SpanKind::Server, &[], &[])
                    .decision;
                (
                    trace_id,
                    TraceState::default(),
                    decision != SamplingDecision::Drop,
                )
            }
        };
        if !recorded {
            return RequestTrace {
                context: SpanContext::new(
                    trace_id,
                    inner.ids.new_span_id(),
                    TraceFlags::default(),
                    false,
                    trace_state,
                ),
                recorded: None,
            };
        }
        let (name, attributes) = span();
        let (parent_span_id, parent_is_remote) =
            parent.as_ref().map_or((SpanId::INVALID, false), |cx| {
                let caller = cx.span();
                let caller = caller.span_context();
                (caller.span_id(), caller.is_remote())
            });
        let context = SpanContext::new(
            trace_id,
            inner.ids.new_span_id(),
            TraceFlags::SAMPLED,
            false,
            trace_state,
        );
        RequestTrace {
            context: context.clone(),
            recorded: Some(Arc::new(ServerSpan {
                context,
                parent_span_id,
                parent_is_remote,
                open: Mutex::new(Some(OpenSpan {
                    name,
                    attributes,
                    status: Status::Unset,
                })),
                tracing: self.clone(),
                anchor: (Instant::now(), SystemTime::now()),
            })),
        }
    }

    /// Sends the spans still queued (at shutdown), waiting at most `wait`.
    pub async fn flush(&self, wait: Duration) {
        self.inner.export.flush(wait).await;
    }
}

/// `service.name` (the setting, else `OTEL_SERVICE_NAME`, else "sluice"), the configured attributes and the
/// standard `OTEL_RESOURCE_ATTRIBUTES`.
fn resource(settings: &TracingSettings) -> Resource {
    // Checked when the settings were read.
    let attributes = settings
        .resource_pairs()
        .unwrap_or_default()
        .into_iter()
        .map(|(key, value)| KeyValue::new(key, value));
    let builder = Resource::builder().with_attributes(attributes);
    let name = match settings.service_name.as_str() {
        "" if std::env::var_os("OTEL_SERVICE_NAME").is_some() => None,
        "" => Some("sluice".to_owned()),
        name => Some(name.to_owned()),
    };
    match name {
        Some(name) => builder.with_service_name(name),
        None => builder,
    }
    .build()
}

/// One request's place in its trace.
#[derive(Clone)]
pub struct RequestTrace {
    /// The server span's ids, flags and trace state.
    context: SpanContext,
    /// The server span of a request the sampler chose to record, shared by the trace's clones: its phases are
    /// written as spans.
    recorded: Option<Arc<ServerSpan>>,
}

/// A recorded server span: its ids and start are fixed; name, attributes and status change until it ends.
struct ServerSpan {
    context: SpanContext,
    parent_span_id: SpanId,
    parent_is_remote: bool,
    /// `None` once ended (a span ends once).
    open: Mutex<Option<OpenSpan>>,
    tracing: Tracing,
    /// The span's start, on both clocks: phases measured with `Instant`s are placed on the wall clock by it.
    anchor: (Instant, SystemTime),
}

struct OpenSpan {
    name: Cow<'static, str>,
    attributes: Vec<KeyValue>,
    status: Status,
}

impl ServerSpan {
    /// Changes the span while it is open.
    fn update(&self, change: impl FnOnce(&mut OpenSpan)) {
        if let Some(open) = self
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            change(open);
        }
    }

    /// Ends the span now (once) and queues its span data for export.
    fn end(&self) {
        let Some(open) = self
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return;
        };
        let inner = &*self.tracing.inner;
        inner.export.queue(SpanData {
            span_context: self.context.clone(),
            parent_span_id: self.parent_span_id,
            parent_span_is_remote: self.parent_is_remote,
            span_kind: SpanKind::Server,
            name: open.name,
            start_time: self.anchor.1,
            end_time: self.wall(Instant::now()),
            attributes: open.attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: open.status,
            instrumentation_scope: inner.scope.clone(),
        });
    }

    fn wall(&self, at: Instant) -> SystemTime {
        self.anchor.1 + at.saturating_duration_since(self.anchor.0)
    }

    /// Writes a phase as a child of the server span. A phase is over when it is written, so its span data is
    /// made here and handed to the export queue: none of the SDK's live-span machinery (sampler, span, processors)
    /// is needed for it.
    fn child(
        &self,
        name: &'static str,
        (start, end): (Instant, Instant),
        attributes: Vec<KeyValue>,
        links: Vec<Link>,
        outcome: PhaseEnd<'_>,
    ) {
        let server = &self.context;
        let inner = &*self.tracing.inner;
        let status = match outcome {
            PhaseEnd::Ok => Status::Unset,
            PhaseEnd::Failed(message) => Status::error(message.to_owned()),
        };
        let mut span_links = SpanLinks::default();
        span_links.links = links;
        inner.export.queue(SpanData {
            span_context: SpanContext::new(
                server.trace_id(),
                inner.ids.new_span_id(),
                TraceFlags::SAMPLED,
                false,
                server.trace_state().clone(),
            ),
            parent_span_id: server.span_id(),
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: Cow::Borrowed(name),
            start_time: self.wall(start),
            end_time: self.wall(end),
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: span_links,
            status,
            instrumentation_scope: inner.scope.clone(),
        });
    }
}

/// A request whose trace is dropped before it finished (its connection closed) still ends its server span.
impl Drop for ServerSpan {
    fn drop(&mut self) {
        self.end();
    }
}

impl std::fmt::Debug for RequestTrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestTrace")
            .field("trace_id", &self.trace_id())
            .field("sampled", &self.sampled())
            .finish()
    }
}

/// How a phase ended.
pub enum PhaseEnd<'a> {
    Ok,
    Failed(&'a str),
}

impl RequestTrace {
    pub fn sampled(&self) -> bool {
        self.recorded.is_some()
    }

    /// The server span's context (for links).
    pub fn span_context(&self) -> SpanContext {
        self.context.clone()
    }

    /// The trace's id, as 32 hex digits.
    pub fn trace_id(&self) -> String {
        self.context.trace_id().to_string()
    }

    /// The server span's id, as 16 hex digits.
    pub fn span_id(&self) -> String {
        self.context.span_id().to_string()
    }

    /// Records a phase of the request, from `start` to `end`, as a child of the server span (only when sampled;
    /// `attributes` is called only then).
    pub fn phase(
        &self,
        name: &'static str,
        span: (Instant, Instant),
        attributes: impl FnOnce() -> Vec<KeyValue>,
        outcome: PhaseEnd<'_>,
    ) {
        if let Some(recorded) = &self.recorded {
            recorded.child(name, span, attributes(), Vec::new(), outcome);
        }
    }

    /// Records a phase (sampled requests only) that links to other requests' server spans: a batched run that
    /// served them all.
    pub fn linked_phase(
        &self,
        name: &'static str,
        span: (Instant, Instant),
        attributes: Vec<KeyValue>,
        links: &[SpanContext],
    ) {
        if let Some(recorded) = &self.recorded {
            let links = links.iter().cloned().map(Link::with_context).collect();
            recorded.child(name, span, attributes, links, PhaseEnd::Ok);
        }
    }

    /// Records work done for the request after it was answered, off its critical path (a shadow run): a span in
    /// the request's trace that starts after the server span ended, and links to it.
    pub fn follow_up(
        &self,
        name: &'static str,
        span: (Instant, Instant),
        attributes: Vec<KeyValue>,
        outcome: PhaseEnd<'_>,
    ) {
        if let Some(recorded) = &self.recorded {
            let link = Link::with_context(self.span_context());
            recorded.child(name, span, attributes, vec![link], outcome);
        }
    }

    /// Ends the server span: its name becomes `{method} {route}`, with the route template of `path` and the status.
    pub fn finish(&self, method: &str, path: &str, status: u16, error: Option<&str>) {
        if let Some(recorded) = &self.recorded {
            let (route, name) = route_and_name(method, path);
            recorded.update(|span| {
                span.name = name;
                span.attributes.push(KeyValue::new("http.route", route));
                span.attributes.push(KeyValue::new(
                    "http.response.status_code",
                    i64::from(status),
                ));
                if let Some(message) = error {
                    span.attributes
                        .push(KeyValue::new("error.type", status.to_string()));
                    span.status = Status::error(message.to_owned());
                }
            });
            recorded.end();
        }
    }

    /// Ends a gRPC call's server span with its status code (`tonic::Code` as a number).
    pub fn finish_call(&self, code: i32, error: Option<&str>) {
        if let Some(recorded) = &self.recorded {
            recorded.update(|span| {
                span.attributes
                    .push(KeyValue::new("rpc.grpc.status_code", i64::from(code)));
                if let Some(message) = error {
                    span.status = Status::error(message.to_owned());
                }
            });
            recorded.end();
        }
    }

    /// Sets the span's attribute (when sampled).
    pub fn set_attribute(&self, attribute: impl FnOnce() -> KeyValue) {
        if let Some(recorded) = &self.recorded {
            recorded.update(|span| span.attributes.push(attribute()));
        }
    }

    /// Writes `traceparent` (and `tracestate`) for this request's server span into `headers`, so a caller without
    /// tracing of its own can find the trace.
    pub fn inject(&self, headers: &mut HeaderMap) {
        let context = &self.context;
        if context.trace_state().header().is_empty() {
            // The common case, written straight into the header (what the propagator writes, without its
            // intermediate strings): version 00, trace id, span id, flags.
            let mut value = [0u8; 55];
            value[..3].copy_from_slice(b"00-");
            hex(&context.trace_id().to_bytes(), &mut value[3..35]);
            value[35] = b'-';
            hex(&context.span_id().to_bytes(), &mut value[36..52]);
            value[52] = b'-';
            hex(&[context.trace_flags().to_u8()], &mut value[53..55]);
            if let Ok(value) = http::HeaderValue::from_bytes(&value) {
                headers.insert(TRACEPARENT, value);
            }
            return;
        }
        let cx = Context::new().with_remote_span_context(context.clone());
        TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
    }
}

/// The instrumentation scope of every span sluice writes.
const SCOPE: &str = "sluice";

const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// Lower-case hex digits of `bytes` into `out` (twice as long), a byte's two digits at a time.
fn hex(bytes: &[u8], out: &mut [u8]) {
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(*b)]);
    }
}

/// The two lower-case hex digits of each byte.
static HEX_PAIRS: [[u8; 2]; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0u8; 2]; 256];
    let mut b = 0;
    while b < 256 {
        pairs[b] = [DIGITS[b >> 4], DIGITS[b & 0xf]];
        b += 1;
    }
    pairs
};

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(ratio: f64) -> TracingSettings {
        TracingSettings {
            enabled: true,
            endpoint: "http://127.0.0.1:9/v1/traces".into(),
            protocol: OtlpProtocol::HttpProtobuf,
            sample_ratio: ratio,
            service_name: String::new(),
            resource_attributes: String::new(),
            queue_capacity: 16,
            batch_size: 4,
            export_interval_ms: 1000,
            export_timeout_ms: 100,
        }
    }

    /// The traceparent written straight into the response is the one the propagator writes, sampled or not.
    #[tokio::test]
    async fn the_written_traceparent_is_the_propagators() {
        let metrics = crate::metrics::Metrics::new().unwrap();
        for ratio in [0.0, 1.0] {
            let tracing = Tracing::start(&settings(ratio), metrics.traces.clone())
                .unwrap()
                .unwrap();
            for caller in [
                None,
                Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
            ] {
                let mut headers = HeaderMap::new();
                if let Some(caller) = caller {
                    headers.insert("traceparent", caller.parse().unwrap());
                }
                let trace = tracing.request(&headers, &http::Method::POST);
                let (mut fast, mut propagated) = (HeaderMap::new(), HeaderMap::new());
                trace.inject(&mut fast);
                tracing.inner.propagator.inject_context(
                    &Context::new().with_remote_span_context(trace.span_context()),
                    &mut HeaderInjector(&mut propagated),
                );
                assert_eq!(
                    fast["traceparent"], propagated["traceparent"],
                    "{ratio} {caller:?}"
                );
                trace.finish("POST", "/v2/models/m/infer", 200, None);
            }
        }
    }

    /// Roots follow the ratio; a caller's valid traceparent decides for its request (its trace id and trace state
    /// kept); an invalid one counts as none.
    #[tokio::test]
    async fn the_caller_decides_else_the_ratio() {
        let metrics = crate::metrics::Metrics::new().unwrap();
        let sampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        for (ratio, caller, state, recorded) in [
            (0.0, None, None, false),
            (1.0, None, None, true),
            (0.0, Some(sampled), None, true),
            (1.0, Some(unsampled), Some("vendor=x"), false),
            (0.0, Some("00-zz-00f067aa0ba902b7-01"), None, false),
            (1.0, Some("00-zz-00f067aa0ba902b7-01"), None, true),
        ] {
            let tracing = Tracing::start(&settings(ratio), metrics.traces.clone())
                .unwrap()
                .unwrap();
            let mut headers = HeaderMap::new();
            if let Some(caller) = caller {
                headers.insert("traceparent", caller.parse().unwrap());
            }
            if let Some(state) = state {
                headers.insert("tracestate", state.parse().unwrap());
            }
            let trace = tracing.request(&headers, &http::Method::POST);
            let case = format!("{ratio} {caller:?}");
            assert_eq!(trace.sampled(), recorded, "{case}");
            assert_eq!(trace.span_context().is_sampled(), recorded, "{case}");
            assert!(trace.span_context().is_valid(), "{case}");
            assert_ne!(trace.span_id(), "00f067aa0ba902b7", "{case}");
            if caller.is_some_and(|c| !c.contains("zz")) {
                assert_eq!(
                    trace.trace_id(),
                    "4bf92f3577b34da6a3ce929d0e0e4736",
                    "{case}"
                );
            }
            let mut response = HeaderMap::new();
            trace.inject(&mut response);
            let flags = if recorded { "-01" } else { "-00" };
            assert!(
                response["traceparent"].to_str().unwrap().ends_with(flags),
                "{case}"
            );
            if let Some(state) = state {
                assert_eq!(response["tracestate"], state, "{case}");
            }
            trace.finish("POST", "/v2/models/m/infer", 200, None);
        }
    }

    #[test]
    fn hex_writes_lower_case_digit_pairs() {
        let mut out = [0u8; 8];
        hex(&[0x00, 0x9f, 0xa0, 0xff], &mut out);
        assert_eq!(&out, b"009fa0ff");
    }
}
