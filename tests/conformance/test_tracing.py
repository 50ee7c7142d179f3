"""Distributed tracing as a traced caller and its collector see it: a request sent with a `traceparent` by the
Python OpenTelemetry SDK is continued by sluice's server span, whose children are the request's phases; spans reach a
real OTLP receiver (HTTP/protobuf and gRPC, decoded with the official protocol definitions); sampling follows the
caller; a collector that is slow or down costs no request anything, and what it misses is counted."""

import json
import re
import urllib.error
import urllib.request

import pytest
from opentelemetry import propagate
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.trace import TracerProvider

from collector import Collector, attributes, grpc_collector, http_collector
from conftest import sluice

IRIS = {"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]}
PHASES = {"route", "decode", "validate", "queue", "run", "encode"}


def traced(settings, collector_endpoint, prepare=None):
    env = {
        "SLUICE__TRACING__ENABLED": "true",
        "SLUICE__TRACING__ENDPOINT": collector_endpoint,
        "SLUICE__TRACING__EXPORT_INTERVAL_MS": "50",
        "SLUICE__SERVER__GRPC_PORT": "0",
    }
    env.update(settings)
    return sluice(env, prepare)


@pytest.fixture(scope="module")
def collector():
    received = Collector()
    endpoint, stop = http_collector(received)
    received.endpoint = endpoint
    yield received
    stop()


@pytest.fixture(scope="module")
def server(collector):
    yield from traced({
        "SLUICE__TRACING__SERVICE_NAME": "sluice-under-test",
        "SLUICE__TRACING__RESOURCE_ATTRIBUTES": "deployment.environment=conformance",
        "SLUICE__TRACING__SAMPLE_RATIO": "0",
    }, collector.endpoint)


def post(address, path, body, headers=None):
    request = urllib.request.Request(
        f"http://{address}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


def client_call(address, path, body):
    """Sends the request inside a span of the Python SDK's tracer, with the headers its propagator writes."""
    tracer = TracerProvider().get_tracer("conformance-client")
    with tracer.start_as_current_span("client call") as span:
        headers = {}
        propagate.inject(headers)
        assert int(headers["traceparent"][-2:], 16) & 1, "the client samples"
        status, response_headers, answer = post(address, path, body, headers)
    context = span.get_span_context()
    return status, response_headers, answer, context.trace_id, context.span_id


def of_trace(spans, trace_id):
    return [s for s in spans if int.from_bytes(s.trace_id, "big") == trace_id]


def test_the_callers_trace_is_continued_with_a_span_per_phase(server, collector):
    status, headers, _, trace_id, client_span = client_call(server, "/v2/models/iris/infer", IRIS)
    assert status == 200
    spans = collector.wait_for(lambda s: len(of_trace(s, trace_id)) >= 1 + len(PHASES))
    mine = of_trace(spans, trace_id)
    (root,) = [s for s in mine if s.kind == trace_pb2.Span.SPAN_KIND_SERVER]
    assert int.from_bytes(root.parent_span_id, "big") == client_span
    assert root.name == "POST /v2/models/{model}/infer"
    attrs = attributes(root)
    assert attrs["http.route"] == "/v2/models/{model}/infer"
    assert attrs["http.request.method"] == "POST"
    assert attrs["http.response.status_code"] == 200
    assert root.status.code != trace_pb2.Status.STATUS_CODE_ERROR
    children = [s for s in mine if s.parent_span_id == root.span_id]
    assert {s.name for s in children} == PHASES
    for child in children:
        assert root.start_time_unix_nano <= child.start_time_unix_nano <= child.end_time_unix_nano
        assert child.end_time_unix_nano <= root.end_time_unix_nano
    (run,) = [s for s in children if s.name == "run"]
    assert attributes(run)["sluice.model"] == "iris"
    assert attributes(run)["sluice.model.version"] == "2"
    # The response names the trace and the server span, for callers without tracing of their own.
    assert headers["traceparent"][:-2] == f"00-{trace_id:032x}-{root.span_id.hex()}-"
    assert int(headers["traceparent"][-2:], 16) & 1
    resource = collector.resources()[-1]
    assert resource["service.name"] == "sluice-under-test"
    assert resource["deployment.environment"] == "conformance"


def test_a_failed_request_marks_its_span_and_the_phase_that_failed(server, collector):
    bad = {"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1, 3], "data": [5.1, 3.5, 1.4]}]}
    status, _, answer, trace_id, _ = client_call(server, "/v2/models/iris/infer", bad)
    assert status == 400
    spans = collector.wait_for(lambda s: any(x.name == "validate" for x in of_trace(s, trace_id))
                               and any(x.kind == trace_pb2.Span.SPAN_KIND_SERVER for x in of_trace(s, trace_id)))
    mine = of_trace(spans, trace_id)
    (root,) = [s for s in mine if s.kind == trace_pb2.Span.SPAN_KIND_SERVER]
    assert root.status.code == trace_pb2.Status.STATUS_CODE_ERROR
    assert root.status.message == answer["error"]
    assert attributes(root)["http.response.status_code"] == 400
    (validate,) = [s for s in mine if s.name == "validate"]
    assert validate.status.code == trace_pb2.Status.STATUS_CODE_ERROR
    assert "run" not in {s.name for s in mine}


def test_sampling_follows_the_caller_and_the_ratio(server, collector):
    # sample_ratio = 0: a request without a traceparent starts a trace that is not recorded, but is still named.
    status, headers, _ = post(server, "/v2/models/iris/infer", IRIS)
    assert status == 200
    match = re.fullmatch(r"00-([0-9a-f]{32})-([0-9a-f]{16})-00", headers["traceparent"])
    assert match, headers["traceparent"]
    # A caller that did not sample is followed too.
    unsampled = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-00"
    status, headers, _ = post(server, "/v2/models/iris/infer", IRIS, {"traceparent": unsampled})
    assert status == 200
    assert headers["traceparent"].startswith("00-" + "ab" * 16 + "-")
    assert headers["traceparent"].endswith("-00")
    # A sampled caller's request is recorded whatever the ratio (the other tests rely on it); these two never are.
    status, _, _, trace_id, _ = client_call(server, "/v2/models/iris/infer", IRIS)
    spans = collector.wait_for(lambda s: len(of_trace(s, trace_id)) >= 1 + len(PHASES))
    for unrecorded in (int(match.group(1), 16), int("ab" * 16, 16)):
        assert not of_trace(spans, unrecorded)


def test_spans_reach_an_otlp_grpc_collector():
    received = Collector()
    endpoint, stop = grpc_collector(received)
    try:
        for address in traced({"SLUICE__TRACING__PROTOCOL": "grpc"}, endpoint):
            status, _, _, trace_id, _ = client_call(address, "/v2/models/iris/infer", IRIS)
            assert status == 200
            spans = received.wait_for(lambda s: len(of_trace(s, trace_id)) >= 1 + len(PHASES))
            names = {s.name for s in of_trace(spans, trace_id)}
            assert names == PHASES | {"POST /v2/models/{model}/infer"}
            assert received.resources()[-1]["service.name"] == "sluice"
    finally:
        stop()


def metric(address, name):
    with urllib.request.urlopen(f"http://{address}/metrics") as r:
        text = r.read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


@pytest.mark.parametrize("collector_state", ["slow", "down"])
def test_a_slow_or_absent_collector_costs_no_request_anything(collector_state):
    received = Collector(delay=2.0)
    if collector_state == "slow":
        endpoint, stop = http_collector(received)
    else:
        endpoint, stop = "http://127.0.0.1:9/v1/traces", lambda: None
    try:
        for address in traced({
            "SLUICE__TRACING__QUEUE_CAPACITY": "8",
            "SLUICE__TRACING__BATCH_SIZE": "4",
            "SLUICE__TRACING__EXPORT_TIMEOUT_MS": "300",
        }, endpoint):
            statuses = [post(address, "/v2/models/iris/infer", IRIS)[0] for _ in range(100)]
            assert statuses == [200] * 100
            assert metric(address, 'sluice_trace_spans_dropped_total{reason="queue_full"}') > 0
            deadline = 50
            while metric(address, 'sluice_trace_spans_dropped_total{reason="export_failed"}') == 0 and deadline:
                import time
                time.sleep(0.1)
                deadline -= 1
            assert metric(address, 'sluice_trace_spans_dropped_total{reason="export_failed"}') > 0
            assert metric(address, "sluice_trace_spans_exported_total") == 0
    finally:
        stop()


def test_a_batched_run_links_to_every_request_it_served_and_a_shadow_run_follows_its_primary(tmp_path):
    """iris batches (a 200 ms queue delay gathers concurrent requests) and mirrors every request to version 3: the
    batch is one span, linked to the server span of each traced request it served; the shadow run is a span of the
    primary's trace, after its answer, linked to its server span."""
    received = Collector()
    endpoint, stop = http_collector(received)
    routing = tmp_path / "routing.toml"
    routing.write_text("[iris]\nshadow = { version = 3, sample_rate = 1.0 }\n")

    def batching(repo):
        with open(repo / "iris" / "model.toml", "a") as f:
            f.write("\n[batching]\nmax_batch_size = 8\nmax_queue_delay_us = 200000\n")

    try:
        for address in traced({"SLUICE__ROUTING__FILE": str(routing)}, endpoint, prepare=batching):
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(4) as pool:
                calls = list(pool.map(lambda _: client_call(address, "/v2/models/iris/infer", IRIS), range(4)))
            assert [c[0] for c in calls] == [200] * 4
            traces = {c[3] for c in calls}

            def ours(spans):
                return [s for s in spans if int.from_bytes(s.trace_id, "big") in traces]

            spans = ours(received.wait_for(lambda s: sum(x.name == "shadow" for x in ours(s)) == 4
                                           and any(x.name == "batch" for x in ours(s))))
            servers = {s.span_id: s for s in spans if s.kind == trace_pb2.Span.SPAN_KIND_SERVER}
            assert len(servers) == 4
            batches = [s for s in spans if s.name == "batch"]
            linked = [bytes(link.span_id) for b in batches for link in b.links]
            assert sorted(linked) == sorted(servers), "each request is linked from the batch that served it"
            for batch in batches:
                assert attributes(batch)["sluice.batch.requests"] == len(batch.links)
            assert any(len(b.links) > 1 for b in batches), "concurrent requests shared a run"
            for shadow in (s for s in spans if s.name == "shadow"):
                primary = servers[shadow.parent_span_id]
                assert [bytes(link.span_id) for link in shadow.links] == [primary.span_id]
                assert shadow.start_time_unix_nano >= primary.end_time_unix_nano, "off the critical path"
                assert attributes(shadow)["sluice.model.version"] == "3"
    finally:
        stop()
