"""A real OTLP trace receiver for the tracing tests, over HTTP/protobuf and over gRPC, decoding what it receives with
the official OpenTelemetry protocol definitions (the `opentelemetry-proto` package)."""

import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from conftest import free_port


class Collector:
    """Keeps every span it receives with its resource's attributes; `delay` makes each export slow."""

    def __init__(self, delay=0.0):
        self.delay = delay
        self.lock = threading.Lock()
        self.spans = []
        self.exports = 0

    def receive(self, request):
        if self.delay:
            time.sleep(self.delay)
        with self.lock:
            self.exports += 1
            for resource_spans in request.resource_spans:
                resource = {a.key: value_of(a.value) for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.spans.append((resource, span))

    def wait_for(self, predicate, timeout=10.0):
        """The spans received, once `predicate(spans)` holds (AssertionError after `timeout`)."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                spans = [span for _, span in self.spans]
            if predicate(spans):
                return spans
            if time.monotonic() > deadline:
                raise AssertionError(f"the collector did not get the spans expected; it has {[s.name for s in spans]}")
            time.sleep(0.05)

    def resources(self):
        with self.lock:
            return [resource for resource, _ in self.spans]


def value_of(any_value):
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def attributes(span):
    return {a.key: value_of(a.value) for a in span.attributes}


def http_collector(collector):
    """Serves `collector` as an OTLP/HTTP receiver on a free loopback port; returns (endpoint URL, stop)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path != "/v1/traces" or self.headers["Content-Type"] != "application/x-protobuf":
                self.send_response(400)
                self.end_headers()
                return
            request = trace_service_pb2.ExportTraceServiceRequest()
            request.ParseFromString(body)
            collector.receive(request)
            reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/v1/traces", server.shutdown


def grpc_collector(collector):
    """Serves `collector` as an OTLP/gRPC receiver on a free loopback port; returns (endpoint URL, stop)."""

    class Service(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):
            collector.receive(request)
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return f"http://127.0.0.1:{port}", lambda: server.stop(0)
