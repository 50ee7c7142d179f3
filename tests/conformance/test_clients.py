"""Unmodified standard V2 clients against the running binary: Triton's tritonclient[http] (JSON mode) and
KServe's InferenceRESTClient (protocol v2). Results must equal what Python onnxruntime gave (tests/fixtures)."""

import asyncio
import subprocess
import urllib.request

import numpy as np
import pytest
import tritonclient.http as triton
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from tritonclient.utils import InferenceServerException

NUMPY = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_,
}


def as_array(tensor):
    return np.array(tensor["data"], dtype=NUMPY[tensor["datatype"]]).reshape(tensor["shape"])


def assert_same(got, want):
    got = np.asarray(got)
    if want.dtype == np.object_:
        got = np.array([g.decode() if isinstance(g, bytes) else g for g in got.ravel()], dtype=object).reshape(got.shape)
        assert got.tolist() == want.tolist()
    elif np.issubdtype(want.dtype, np.floating):
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_array_equal(got, want)
    assert got.shape == want.shape


# ---- tritonclient[http] -------------------------------------------------------------------------------------------

def test_triton_health_and_metadata(server):
    client = triton.InferenceServerClient(url=server)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.get_server_metadata()["name"] == "sluice"
    assert client.is_model_ready("iris")
    assert client.is_model_ready("iris", model_version="1")
    assert not client.is_model_ready("no_such_model")
    meta = client.get_model_metadata("tumor_risk")
    assert [i["datatype"] for i in meta["inputs"]] == ["FP32", "FP32", "INT64", "BYTES"]
    assert meta["platform"] == "onnxruntime_onnx"
    config = client.get_model_config("iris")
    assert config["input"][0]["data_type"] == "TYPE_FP32"
    assert config["input"][0]["dims"] == [-1, 4]


def test_triton_inference_matches_python_onnxruntime(server, reference):
    client = triton.InferenceServerClient(url=server)
    for case in reference:
        inputs = []
        for tensor in case["inputs"]:
            inp = triton.InferInput(tensor["name"], tensor["shape"], tensor["datatype"])
            inp.set_data_from_numpy(as_array(tensor), binary_data=False)
            inputs.append(inp)
        outputs = [triton.InferRequestedOutput(t["name"], binary_data=False) for t in case["outputs"]]
        result = client.infer(case["model"], inputs, model_version=case["version"], outputs=outputs,
                              request_id="conformance-1")
        response = result.get_response()
        assert response["model_version"] == case["version"]
        assert response["id"] == "conformance-1"
        for tensor in case["outputs"]:
            assert_same(result.as_numpy(tensor["name"]), as_array(tensor))


def test_triton_sees_v2_error_messages(server):
    client = triton.InferenceServerClient(url=server)
    inp = triton.InferInput("float_input", [1, 3], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 3), np.float32), binary_data=False)
    with pytest.raises(InferenceServerException, match="dimension 1 must be 4"):
        client.infer("iris", [inp])
    with pytest.raises(InferenceServerException, match="Request for unknown model: 'nope' is not found"):
        client.get_model_metadata("nope")


# ---- KServe InferenceRESTClient (v2) ------------------------------------------------------------------------------

def test_kserve_health_and_inference_match_python_onnxruntime(server, reference):
    async def run():
        base = f"http://{server}"
        client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=30))
        try:
            assert await client.is_server_live(base)
            assert await client.is_server_ready(base)
            assert await client.is_model_ready(base, "iris")
            assert not await client.is_model_ready(base, "no_such_model")
            for case in reference:
                if case["model"] == "iris" and case["version"] != "2":
                    continue  # KServe's client cannot name a version; iris's default version is 2 (pinned)
                if case["model"] == "echo":
                    continue  # KServe's client refuses FP16 in JSON mode (client-side); tritonclient covers echo
                infer_inputs = [
                    InferInput(name=t["name"], shape=t["shape"], datatype=t["datatype"], data=t["data"])
                    for t in case["inputs"]
                ]
                request = InferRequest(model_name=case["model"], infer_inputs=infer_inputs, request_id="kserve-1")
                response = await client.infer(base, request, model_name=case["model"])
                assert response.model_name == case["model"]
                assert response.id == "kserve-1"
                got = {o.name: o for o in response.outputs}
                for tensor in case["outputs"]:
                    assert got[tensor["name"]].datatype == tensor["datatype"]
                    assert_same(got[tensor["name"]].as_numpy(), as_array(tensor))
        finally:
            await client.close()

    asyncio.run(run())


# ---- Prometheus exposition -----------------------------------------------------------------------------------------

def test_live_metrics_pass_promtool(server):
    """`promtool check metrics` (installed by scripts/lib/lint-deploy.sh) accepts the live /metrics after traffic."""
    client = triton.InferenceServerClient(url=server)
    inp = triton.InferInput("float_input", [1, 4], "FP32")
    inp.set_data_from_numpy(np.ones((1, 4), np.float32), binary_data=False)
    client.infer("iris", [inp])
    with urllib.request.urlopen(f"http://{server}/metrics") as r:
        text = r.read()
    result = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


# ---- OpenAPI ------------------------------------------------------------------------------------------------------

def test_schemathesis_finds_no_server_errors_or_schema_violations(server, tmp_path):
    """Schemathesis generates requests for every operation in /openapi.json: no 5xx, every response as documented."""
    import os
    import sys
    cli = os.path.join(os.path.dirname(sys.executable), "schemathesis")
    result = subprocess.run(
        [cli, "run", f"http://{server}/openapi.json",
         "--checks", "not_a_server_error,response_schema_conformance,content_type_conformance",
         "--max-examples", "40", "--generation-deterministic", "--request-timeout", "30"],
        capture_output=True, text=True, cwd=tmp_path, timeout=900,
    )
    summary = result.stdout[-3000:]
    assert result.returncode == 0, summary + result.stderr[-2000:]
    assert "20/20" in result.stdout or "Tested: 2" in result.stdout, summary


def test_triton_binary_tensor_data_matches_python_onnxruntime(server, reference):
    """tritonclient's default binary mode (Triton's binary_tensor_data extension) for inputs and outputs."""
    client = triton.InferenceServerClient(url=server)
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    for case in reference:
        inputs = []
        for tensor in case["inputs"]:
            inp = triton.InferInput(tensor["name"], tensor["shape"], tensor["datatype"])
            inp.set_data_from_numpy(as_array(tensor), binary_data=True)
            inputs.append(inp)
        outputs = [triton.InferRequestedOutput(t["name"], binary_data=True) for t in case["outputs"]]
        result = client.infer(case["model"], inputs, model_version=case["version"], outputs=outputs)
        for tensor in case["outputs"]:
            assert_same(result.as_numpy(tensor["name"]), as_array(tensor))
    # Mixed: binary inputs, JSON outputs (no outputs named: tritonclient then asks for all outputs in binary).
    case = next(c for c in reference if c["model"] == "tumor_risk")
    inputs = []
    for tensor in case["inputs"]:
        inp = triton.InferInput(tensor["name"], tensor["shape"], tensor["datatype"])
        inp.set_data_from_numpy(as_array(tensor), binary_data=True)
        inputs.append(inp)
    result = client.infer("tumor_risk", inputs)
    assert_same(result.as_numpy("label"), as_array(case["outputs"][0]))
