"""Triton's gRPC client (tritonclient[grpc], unmodified) against the running binary's gRPC port: health, metadata,
configuration, statistics, inference with every datatype (raw tensors, as the client sends them, and typed contents
through the client's own generated stubs), requested outputs, pinned versions, streaming, the repository calls under
the admin token, reflection, and the error codes. Results must equal what Python onnxruntime gave
(tests/fixtures/reference.json).

Runs in a process of its own (scripts/test.sh): tritonclient's and KServe's generated modules both declare the
`inference` protobuf package and cannot be imported into one process."""

import queue

import grpc as grpcio
import numpy as np
import pytest
import tritonclient.grpc as triton
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from conftest import free_port, sluice
from tensors import NUMPY, as_array, assert_same

# The typed `contents` field of each datatype (FP16 has none).
CONTENTS = {
    "BOOL": "bool_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}

TOKEN = "grpc-admin-token"


def code_of(error):
    return error.status() if isinstance(error, InferenceServerException) else None


@pytest.fixture(scope="module")
def client(grpc):
    return triton.InferenceServerClient(url=grpc)


@pytest.fixture(scope="module")
def admin_grpc():
    """A second server whose management API takes an admin token (over gRPC too)."""
    port = free_port()
    yield from (f"127.0.0.1:{port}" for _ in sluice({
        "SLUICE__ADMIN__TOKEN": TOKEN,
        "SLUICE__SERVER__GRPC_PORT": str(port),
    }))


def test_health_metadata_and_configuration(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("iris")
    assert client.is_model_ready("iris", model_version="1")
    assert client.get_server_metadata().name == "sluice"
    meta = client.get_model_metadata("tumor_risk")
    assert [i.datatype for i in meta.inputs] == ["FP32", "FP32", "INT64", "BYTES"]
    assert meta.platform == "onnxruntime_onnx"
    assert client.get_model_metadata("iris", model_version="1").versions == ["1"]
    config = client.get_model_config("iris").config
    assert config.input[0].data_type == triton.model_config_pb2.TYPE_FP32
    assert list(config.input[0].dims) == [-1, 4]
    assert config.max_batch_size == 0
    assert config.instance_group[0].kind == triton.model_config_pb2.ModelInstanceGroup.KIND_CPU


def test_inference_matches_python_onnxruntime_for_every_datatype(client, reference):
    for case in reference:
        inputs = []
        for tensor in case["inputs"]:
            inp = triton.InferInput(tensor["name"], tensor["shape"], tensor["datatype"])
            inp.set_data_from_numpy(as_array(tensor))
            inputs.append(inp)
        result = client.infer(case["model"], inputs, model_version=case["version"], request_id="grpc-1")
        response = result.get_response()
        assert response.model_version == case["version"]
        assert response.id == "grpc-1"
        assert len(response.raw_output_contents) == len(response.outputs)
        for tensor in case["outputs"]:
            assert_same(result.as_numpy(tensor["name"]), as_array(tensor))


def test_typed_contents_in_and_out(grpc, reference):
    """The client's generated stub, with inputs as typed `contents` and outputs asked for as typed contents."""
    stub = service_pb2_grpc.GRPCInferenceServiceStub(grpcio.insecure_channel(grpc))
    for case in reference:
        request = service_pb2.ModelInferRequest(model_name=case["model"], model_version=case["version"])
        request.parameters["binary_data_output"].bool_param = False
        raw = any(t["datatype"] == "FP16" for t in case["inputs"])
        for tensor in case["inputs"]:
            inp = request.inputs.add(name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"])
            values = as_array(tensor)
            if raw:
                if tensor["datatype"] == "BYTES":
                    request.raw_input_contents.append(b"".join(
                        len(v).to_bytes(4, "little") + v for v in values.ravel()))
                else:
                    request.raw_input_contents.append(values.tobytes())
            else:
                getattr(inp.contents, CONTENTS[tensor["datatype"]]).extend(values.ravel().tolist())
        response = stub.ModelInfer(request)
        fp16_out = any(o.datatype == "FP16" for o in response.outputs)
        # The protocol allows no mix of raw and typed outputs: with an FP16 output, all are raw.
        assert len(response.raw_output_contents) == (len(response.outputs) if fp16_out else 0)
        if fp16_out:
            continue
        for output, tensor in zip(response.outputs, sorted(case["outputs"], key=lambda t: t["name"])):
            want = {t["name"]: t for t in case["outputs"]}[output.name]
            got = list(getattr(output.contents, CONTENTS[output.datatype]))
            assert_same(np.array(got, dtype=NUMPY[output.datatype]).reshape(list(output.shape)), as_array(want))


def test_requested_outputs_and_a_pinned_version(client):
    inp = triton.InferInput("float_input", [1, 4], "FP32")
    inp.set_data_from_numpy(np.array([[5.1, 3.5, 1.4, 0.2]], np.float32))
    result = client.infer("iris", [inp], model_version="2",
                          outputs=[triton.InferRequestedOutput("probabilities")])
    response = result.get_response()
    assert [o.name for o in response.outputs] == ["probabilities"]
    assert response.model_version == "2"
    assert result.as_numpy("probabilities").shape == (1, 3)


def test_statistics_count_what_was_served(client):
    before = client.get_inference_statistics("iris", model_version="2").model_stats[0].inference_count
    inp = triton.InferInput("float_input", [1, 4], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 4), np.float32))
    for _ in range(3):
        client.infer("iris", [inp], model_version="2")
    stats = client.get_inference_statistics("iris", model_version="2").model_stats
    assert [(s.name, s.version) for s in stats] == [("iris", "2")]
    assert stats[0].inference_count == before + 3
    assert stats[0].inference_stats.success.count >= 3
    assert {"iris", "echo"} <= {s.name for s in client.get_inference_statistics().model_stats}


def test_streaming_answers_every_request_in_order_errors_included(client):
    answers = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for i, width in enumerate([4, 3, 4]):
            inp = triton.InferInput("float_input", [1, width], "FP32")
            inp.set_data_from_numpy(np.full((1, width), 0.5, np.float32))
            client.async_stream_infer("iris", [inp], request_id=f"s{i}")
        got = [answers.get(timeout=30) for _ in range(3)]
    finally:
        client.stop_stream()
    assert got[0][1] is None and got[0][0].get_response().id == "s0"
    assert got[1][0] is None and "dimension 1 must be 4" in str(got[1][1])
    assert got[2][1] is None and got[2][0].as_numpy("probabilities").shape == (1, 3)


def test_error_codes_and_messages_match_rest(client):
    inp = triton.InferInput("float_input", [1, 3], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 3), np.float32))
    with pytest.raises(InferenceServerException, match="dimension 1 must be 4") as bad:
        client.infer("iris", [inp])
    assert code_of(bad.value) == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(InferenceServerException, match="Request for unknown model: 'nope' is not found") as unknown:
        client.get_model_metadata("nope")
    assert code_of(unknown.value) == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException, match="version 9 is not found") as version:
        client.infer("iris", [inp], model_version="9")
    assert code_of(version.value) == "StatusCode.NOT_FOUND"
    wrong_type = triton.InferInput("float_input", [1, 4], "INT32")
    wrong_type.set_data_from_numpy(np.zeros((1, 4), np.int32))
    with pytest.raises(InferenceServerException) as dtype:
        client.infer("iris", [wrong_type])
    assert code_of(dtype.value) == "StatusCode.INVALID_ARGUMENT"
    # Repository calls: the management API is open without a token on admin.port only, not over gRPC.
    with pytest.raises(InferenceServerException, match="admin.port only") as denied:
        client.get_model_repository_index()
    assert code_of(denied.value) == "StatusCode.PERMISSION_DENIED"


def test_repository_index_load_and_unload_under_the_admin_token(admin_grpc):
    client = triton.InferenceServerClient(url=admin_grpc)
    with pytest.raises(InferenceServerException) as missing:
        client.get_model_repository_index()
    assert code_of(missing.value) == "StatusCode.UNAUTHENTICATED"
    auth = {"authorization": f"Bearer {TOKEN}"}
    index = client.get_model_repository_index(headers=auth).models
    assert ("iris", "3", "READY") in {(m.name, m.version, m.state) for m in index}
    client.unload_model("tumor_risk", headers=auth)
    assert not client.is_model_ready("tumor_risk")
    inp = [triton.InferInput(n, [1, 1], t) for n, t in
           [("mean_radius", "FP32"), ("mean_texture", "FP32"), ("lymph_nodes", "INT64"), ("clinic", "BYTES")]]
    for i, value in zip(inp, [np.zeros((1, 1), np.float32), np.zeros((1, 1), np.float32),
                              np.zeros((1, 1), np.int64), np.array([[b"north"]], dtype=np.object_)]):
        i.set_data_from_numpy(value)
    with pytest.raises(InferenceServerException) as unloaded:
        client.infer("tumor_risk", inp)
    assert code_of(unloaded.value) == "StatusCode.UNAVAILABLE"
    client.load_model("tumor_risk", headers=auth)
    assert client.is_model_ready("tumor_risk")
    with pytest.raises(InferenceServerException, match="loads models only from its repository") as files:
        client.load_model("tumor_risk", headers=auth, files={"file:1/model.onnx": b"onnx"},
                          config="{}")
    assert code_of(files.value) == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(InferenceServerException) as unknown:
        client.load_model("no_such_model", headers=auth)
    assert code_of(unknown.value) == "StatusCode.NOT_FOUND"


def test_reflection_lists_and_describes_the_services(grpc):
    stub = reflection_pb2_grpc.ServerReflectionStub(grpcio.insecure_channel(grpc))
    [listed] = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    services = {s.name for s in listed.list_services_response.service}
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= services
    [described] = stub.ServerReflectionInfo(iter([
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="inference.GRPCInferenceService")]))
    files = [descriptor_pb2.FileDescriptorProto.FromString(f)
             for f in described.file_descriptor_response.file_descriptor_proto]
    methods = {m.name for f in files for s in f.service for m in s.method}
    assert {"ModelInfer", "ModelStreamInfer", "ModelConfig", "RepositoryIndex"} <= methods


def test_standard_health_service_reports_readiness(grpc):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    stub = health_pb2_grpc.HealthStub(grpcio.insecure_channel(grpc))
    serving = health_pb2.HealthCheckResponse.SERVING
    assert stub.Check(health_pb2.HealthCheckRequest(service="")).status == serving
    assert stub.Check(health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService")).status == serving
    assert stub.Check(health_pb2.HealthCheckRequest(service="liveness")).status == serving
    with pytest.raises(grpcio.RpcError) as unknown:
        stub.Check(health_pb2.HealthCheckRequest(service="nope"))
    assert unknown.value.code() == grpcio.StatusCode.NOT_FOUND


def test_a_traced_call_continues_the_callers_trace():
    """`traceparent` in the call's metadata, written by the Python OpenTelemetry SDK: sluice's server span continues
    it, its phases are its children, and the answer's metadata names the trace."""
    from opentelemetry import propagate
    from opentelemetry.proto.trace.v1 import trace_pb2
    from opentelemetry.sdk.trace import TracerProvider

    from collector import Collector, attributes, http_collector

    received = Collector()
    endpoint, stop = http_collector(received)
    port = free_port()
    try:
        for _ in sluice({
            "SLUICE__SERVER__GRPC_PORT": str(port),
            "SLUICE__TRACING__ENABLED": "true",
            "SLUICE__TRACING__ENDPOINT": endpoint,
            "SLUICE__TRACING__EXPORT_INTERVAL_MS": "50",
        }):
            stub = service_pb2_grpc.GRPCInferenceServiceStub(grpcio.insecure_channel(f"127.0.0.1:{port}"))
            request = service_pb2.ModelInferRequest(model_name="iris")
            tensor = request.inputs.add(name="float_input", datatype="FP32", shape=[1, 4])
            tensor.contents.fp32_contents.extend([5.1, 3.5, 1.4, 0.2])
            with TracerProvider().get_tracer("conformance-client").start_as_current_span("client") as span:
                headers = {}
                propagate.inject(headers)
                _, call = stub.ModelInfer.with_call(request, metadata=list(headers.items()))
            trace_id = span.get_span_context().trace_id
            client_span = span.get_span_context().span_id
            answered = dict(call.initial_metadata())
            assert answered["traceparent"].startswith(f"00-{trace_id:032x}-")

            def mine(spans):
                return [s for s in spans if int.from_bytes(s.trace_id, "big") == trace_id]

            spans = mine(received.wait_for(lambda s: len(mine(s)) >= 7))
            (root,) = [s for s in spans if s.kind == trace_pb2.Span.SPAN_KIND_SERVER]
            assert root.name == "inference.GRPCInferenceService/ModelInfer"
            assert int.from_bytes(root.parent_span_id, "big") == client_span
            assert attributes(root)["rpc.system"] == "grpc"
            assert attributes(root)["rpc.grpc.status_code"] == 0
            assert answered["traceparent"].split("-")[2] == root.span_id.hex()
            children = {s.name for s in spans if s.parent_span_id == root.span_id}
            assert children == {"route", "decode", "validate", "queue", "run", "encode"}
    finally:
        stop()
