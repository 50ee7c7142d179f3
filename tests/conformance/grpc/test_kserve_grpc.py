"""KServe's gRPC client (InferenceGRPCClient from the kserve package, unmodified) and its generated stub against the
running binary's gRPC port: health, metadata, and inference equal to Python onnxruntime's results
(tests/fixtures/reference.json). In a process of its own (see test_triton_grpc.py)."""

import asyncio

import grpc as grpcio
import pytest
from kserve import InferenceGRPCClient, InferInput, InferRequest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

from tensors import as_array, assert_same


def test_kserve_grpc_client_health_and_inference_match_python_onnxruntime(grpc, reference):
    async def run():
        client = InferenceGRPCClient(grpc, timeout=30, retries=0)
        try:
            assert await client.is_server_live()
            assert await client.is_server_ready()
            assert await client.is_model_ready("iris")
            for case in reference:
                infer_inputs = []
                for t in case["inputs"]:
                    inp = InferInput(name=t["name"], shape=t["shape"], datatype=t["datatype"])
                    inp.set_data_from_numpy(as_array(t), binary_data=True)
                    infer_inputs.append(inp)
                request = InferRequest(model_name=case["model"], model_version=case["version"],
                                       infer_inputs=infer_inputs, request_id="kserve-grpc-1")
                response = await client.infer(request)
                assert response.model_name == case["model"]
                assert response.model_version == case["version"]
                assert response.id == "kserve-grpc-1"
                got = {o.name: o for o in response.outputs}
                for tensor in case["outputs"]:
                    assert got[tensor["name"]].datatype == tensor["datatype"]
                    assert_same(got[tensor["name"]].as_numpy(), as_array(tensor))
        finally:
            await client.close()

    asyncio.run(run())


def test_kserve_stub_metadata_and_not_found(grpc):
    stub = pb_grpc.GRPCInferenceServiceStub(grpcio.insecure_channel(grpc))
    assert stub.ServerLive(pb.ServerLiveRequest()).live
    server = stub.ServerMetadata(pb.ServerMetadataRequest())
    assert server.name == "sluice" and "model_repository" in server.extensions
    meta = stub.ModelMetadata(pb.ModelMetadataRequest(name="tumor_risk"))
    assert [(i.name, i.datatype) for i in meta.inputs][:1] == [("mean_radius", "FP32")]
    assert meta.platform == "onnxruntime_onnx"
    with pytest.raises(grpcio.RpcError) as unknown:
        stub.ModelMetadata(pb.ModelMetadataRequest(name="nope"))
    assert unknown.value.code() == grpcio.StatusCode.NOT_FOUND
    assert "Request for unknown model: 'nope' is not found" in unknown.value.details()
