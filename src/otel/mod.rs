//! Distributed tracing with OpenTelemetry: a server span per request that continues the caller's W3C trace context
//! (`traceparent`, `tracestate`), a child span per phase, and OTLP export (HTTP/protobuf or gRPC) off the request
//! path ([`export`]).
//!
//! [`Tracing`] is built once from `[tracing]` and handed to the front ends. Each request gets a [`RequestTrace`]:
//! its context (the server span inside the caller's trace, or a new trace) and whether the sampler chose to record
//! it. Phase spans are written after the fact from the instants the pipeline measures anyway, and only for sampled
//! requests, so an unsampled request pays for one sampling decision and its response's `traceparent`.
//!
//! Spans are made with the OpenTelemetry API directly rather than through `tracing` spans: a `tracing` span costs
//! its subscriber work whether or not the trace is sampled, on every phase of every request.

pub mod export;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::HeaderMap;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    Link, Span as _, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

use self::export::{ExportPlan, QueuedExport};
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
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
    export: Arc<QueuedExport>,
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
        let provider = SdkTracerProvider::builder()
            .with_span_processor(SharedExport(Arc::clone(&export)))
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                settings.sample_ratio,
            ))))
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("sluice");
        Ok(Some(Tracing {
            inner: Arc::new(Inner {
                provider,
                tracer,
                propagator: TraceContextPropagator::new(),
                export,
            }),
        }))
    }

    /// Starts an HTTP request's server span: inside the trace `headers` carry (`traceparent`, `tracestate`), else in
    /// a new one. Its name becomes `{method} {route}` once the route is known ([`RequestTrace::finish`]).
    pub fn request(&self, headers: &HeaderMap, method: &http::Method) -> RequestTrace {
        // The common methods' names are static: nothing is allocated for a span that will not be recorded.
        let name: Cow<'static, str> = match *method {
            http::Method::POST => Cow::Borrowed("POST"),
            http::Method::GET => Cow::Borrowed("GET"),
            ref other => Cow::Owned(other.as_str().to_owned()),
        };
        let attributes = vec![KeyValue::new("http.request.method", name.clone())];
        self.server_span(headers, name, attributes)
    }

    /// Starts a gRPC call's server span (`service/method`), inside the trace its metadata carries.
    pub fn call(
        &self,
        metadata: &HeaderMap,
        service: &'static str,
        method: &'static str,
    ) -> RequestTrace {
        let attributes = vec![
            KeyValue::new("rpc.system", "grpc"),
            KeyValue::new("rpc.service", service),
            KeyValue::new("rpc.method", method),
        ];
        self.server_span(
            metadata,
            Cow::Owned(format!("{service}/{method}")),
            attributes,
        )
    }

    fn server_span(
        &self,
        headers: &HeaderMap,
        name: Cow<'static, str>,
        attributes: Vec<KeyValue>,
    ) -> RequestTrace {
        let parent = self.inner.propagator.extract(&HeaderExtractor(headers));
        let anchor = (Instant::now(), SystemTime::now());
        let span = self
            .inner
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_start_time(anchor.1)
            .with_attributes(attributes)
            .start_with_context(&self.inner.tracer, &parent);
        let sampled = span.span_context().is_sampled();
        RequestTrace {
            cx: parent.with_span(span),
            sampled,
            tracing: self.clone(),
            anchor,
        }
    }

    /// Sends the spans still queued (at shutdown), waiting at most `wait`.
    pub async fn flush(&self, wait: Duration) {
        self.inner.export.flush(wait).await;
        let _ = self.inner.provider.force_flush();
    }
}

/// The provider owns its processors; the export handle is shared with [`Tracing::flush`].
#[derive(Debug)]
struct SharedExport(Arc<QueuedExport>);

impl opentelemetry_sdk::trace::SpanProcessor for SharedExport {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &Context) {
        self.0.on_start(span, cx);
    }

    fn on_end(&self, span: opentelemetry_sdk::trace::SpanData) {
        self.0.on_end(span);
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
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
    /// The caller's context with the request's server span in it.
    cx: Context,
    /// The sampler chose to record this request: its phases are written as spans.
    sampled: bool,
    tracing: Tracing,
    /// The server span's start, on both clocks: phases measured with `Instant`s are placed on the wall clock by it.
    anchor: (Instant, SystemTime),
}

impl std::fmt::Debug for RequestTrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestTrace")
            .field("trace_id", &self.trace_id())
            .field("sampled", &self.sampled)
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
        self.sampled
    }

    /// The server span's context (for links).
    pub fn span_context(&self) -> opentelemetry::trace::SpanContext {
        self.cx.span().span_context().clone()
    }

    /// The trace's id, as 32 hex digits.
    pub fn trace_id(&self) -> String {
        self.cx.span().span_context().trace_id().to_string()
    }

    /// The server span's id, as 16 hex digits.
    pub fn span_id(&self) -> String {
        self.cx.span().span_context().span_id().to_string()
    }

    fn wall(&self, at: Instant) -> SystemTime {
        self.anchor.1 + at.saturating_duration_since(self.anchor.0)
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
        if self.sampled {
            self.child(name, span, attributes(), Vec::new(), outcome);
        }
    }

    /// Records a phase (sampled requests only) that links to other requests' server spans: a batched run that
    /// served them all.
    pub fn linked_phase(
        &self,
        name: &'static str,
        span: (Instant, Instant),
        attributes: Vec<KeyValue>,
        links: &[opentelemetry::trace::SpanContext],
    ) {
        if self.sampled {
            let links = links.iter().cloned().map(Link::with_context).collect();
            self.child(name, span, attributes, links, PhaseEnd::Ok);
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
        if self.sampled {
            let link = Link::with_context(self.span_context());
            self.child(name, span, attributes, vec![link], outcome);
        }
    }

    fn child(
        &self,
        name: &'static str,
        (start, end): (Instant, Instant),
        attributes: Vec<KeyValue>,
        links: Vec<Link>,
        outcome: PhaseEnd<'_>,
    ) {
        let tracer = &self.tracing.inner.tracer;
        let mut span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Internal)
            .with_start_time(self.wall(start))
            .with_attributes(attributes)
            .with_links(links)
            .start_with_context(tracer, &self.cx);
        if let PhaseEnd::Failed(message) = outcome {
            span.set_status(Status::error(message.to_owned()));
        }
        span.end_with_timestamp(self.wall(end));
    }

    /// Ends the server span: its name becomes `{method} {route}`, with the route template of `path` and the status.
    pub fn finish(&self, method: &str, path: &str, status: u16, error: Option<&str>) {
        let span = self.cx.span();
        if self.sampled {
            let route = route_template(path);
            span.update_name(Cow::Owned(format!("{method} {route}")));
            span.set_attribute(KeyValue::new("http.route", route));
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
            if let Some(message) = error {
                span.set_attribute(KeyValue::new("error.type", status.to_string()));
                span.set_status(Status::error(message.to_owned()));
            }
        }
        span.end();
    }

    /// Ends a gRPC call's server span with its status code (`tonic::Code` as a number).
    pub fn finish_call(&self, code: i32, error: Option<&str>) {
        let span = self.cx.span();
        if self.sampled {
            span.set_attribute(KeyValue::new("rpc.grpc.status_code", i64::from(code)));
            if let Some(message) = error {
                span.set_status(Status::error(message.to_owned()));
            }
        }
        span.end();
    }

    /// Sets the span's attribute (when sampled).
    pub fn set_attribute(&self, attribute: impl FnOnce() -> KeyValue) {
        if self.sampled {
            self.cx.span().set_attribute(attribute());
        }
    }

    /// Writes `traceparent` (and `tracestate`) for this request's server span into `headers`, so a caller without
    /// tracing of its own can find the trace.
    pub fn inject(&self, headers: &mut HeaderMap) {
        let span = self.cx.span();
        let context = span.span_context();
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
        self.tracing
            .inner
            .propagator
            .inject_context(&self.cx, &mut HeaderInjector(headers));
    }
}

const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// Lower-case hex digits of `bytes` into `out` (twice as long).
fn hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
    }
}

/// The route template of a path: the segments after `models` and `versions` become `{model}` and `{version}`, so
/// a span's name never holds an id.
pub fn route_template(path: &str) -> String {
    let mut route = String::with_capacity(path.len());
    let mut previous = "";
    for segment in path.split('/').skip(1) {
        route.push('/');
        match previous {
            "models" => route.push_str("{model}"),
            "versions" => route.push_str("{version}"),
            _ => route.push_str(segment),
        }
        previous = segment;
    }
    if route.is_empty() {
        route.push('/');
    }
    route
}

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
                tracing
                    .inner
                    .propagator
                    .inject_context(&trace.cx, &mut HeaderInjector(&mut propagated));
                assert_eq!(
                    fast["traceparent"], propagated["traceparent"],
                    "{ratio} {caller:?}"
                );
                trace.finish("POST", "/v2/models/m/infer", 200, None);
            }
        }
    }

    #[test]
    fn routes_hold_no_ids() {
        assert_eq!(
            route_template("/v2/models/iris/versions/3/infer"),
            "/v2/models/{model}/versions/{version}/infer"
        );
        assert_eq!(route_template("/v2/models/iris"), "/v2/models/{model}");
        assert_eq!(route_template("/v2/health/ready"), "/v2/health/ready");
        assert_eq!(
            route_template("/v2/repository/models/iris/load"),
            "/v2/repository/models/{model}/load"
        );
        assert_eq!(route_template("/"), "/");
    }
}
