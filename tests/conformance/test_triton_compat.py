"""Triton's own Python client library used as its users write code: the async client (aiohttp, which always asks for
gzip), BYTES with NUL bytes, statistics, model control with load configurations, and the error wording clients match
on. Model control goes to the management API's own port, open without a token (admin.require_token = false)."""

import asyncio
import json

import numpy as np
import pytest
import tritonclient.http as triton
import tritonclient.http.aio as triton_aio
from tritonclient.utils import InferenceServerException

NUL_ELEMENTS = np.array([[b"he\x00llo", b"\x00\x01\x02\x03", b""]], dtype=np.object_)


def echo_inputs(bytes_value, binary):
    """Every input of the echo fixture (one Identity per datatype), with `bytes_value` as in_bytes."""
    values = {
        "in_bool": np.array([[True, False, True]]), "in_uint8": np.array([[1, 2, 3]], np.uint8),
        "in_uint16": np.array([[1, 2, 3]], np.uint16), "in_uint32": np.array([[1, 2, 3]], np.uint32),
        "in_uint64": np.array([[1, 2, 3]], np.uint64), "in_int8": np.array([[1, -2, 3]], np.int8),
        "in_int16": np.array([[1, -2, 3]], np.int16), "in_int32": np.array([[1, -2, 3]], np.int32),
        "in_int64": np.array([[1, -2, 3]], np.int64), "in_fp16": np.array([[1, 2, 3]], np.float16),
        "in_fp32": np.array([[1, 2, 3]], np.float32), "in_fp64": np.array([[1, 2, 3]], np.float64),
        "in_bytes": bytes_value,
    }
    inputs = []
    for name, value in values.items():
        datatype = "BYTES" if value.dtype == np.object_ else triton_dtype(value.dtype)
        inp = triton.InferInput(name, list(value.shape), datatype)
        inp.set_data_from_numpy(value, binary_data=binary)
        inputs.append(inp)
    return inputs


def triton_dtype(dtype):
    from tritonclient.utils import np_to_triton_dtype
    return np_to_triton_dtype(dtype)


# ---- 1. the async client reads metadata, errors and compressed inference results ---------------------------------

def test_async_client_metadata_errors_and_large_results(server):
    async def run():
        client = triton_aio.InferenceServerClient(url=server)
        try:
            assert await client.is_server_live()
            meta = await client.get_server_metadata()
            assert meta["name"] == "sluice"
            assert "statistics" in meta["extensions"]
            assert (await client.get_model_metadata("iris"))["platform"] == "onnxruntime_onnx"
            assert (await client.get_model_config("iris"))["input"][0]["data_type"] == "TYPE_FP32"
            with pytest.raises(InferenceServerException, match="Request for unknown model: 'nope' is not found"):
                await client.get_model_metadata("nope")
            inp = triton_aio.InferInput("float_input", [1, 3], "FP32")
            inp.set_data_from_numpy(np.zeros((1, 3), np.float32), binary_data=False)
            with pytest.raises(InferenceServerException, match="dimension 1 must be 4"):
                await client.infer("iris", [inp])
            # 500 rows: a JSON answer large enough to be gzipped, which the async client inflates itself.
            rows = np.tile(np.array([[5.1, 3.5, 1.4, 0.2]], np.float32), (500, 1))
            inp = triton_aio.InferInput("float_input", list(rows.shape), "FP32")
            inp.set_data_from_numpy(rows, binary_data=False)
            out = triton_aio.InferRequestedOutput("label", binary_data=False)
            result = await client.infer("iris", [inp], outputs=[out])
            assert result.as_numpy("label").shape == (500,)
            stats = await client.get_inference_statistics("iris")
            assert stats["model_stats"][0]["name"] == "iris"
        finally:
            await client.close()

    asyncio.run(run())


# ---- 2. BYTES elements with NUL bytes come back as they went ------------------------------------------------------

@pytest.mark.parametrize("binary", [True, False])
def test_bytes_with_nul_bytes_round_trip(server, binary):
    client = triton.InferenceServerClient(url=server)
    out = triton.InferRequestedOutput("out_bytes", binary_data=binary)
    result = client.infer("echo", echo_inputs(NUL_ELEMENTS, binary), outputs=[out])
    got = result.as_numpy("out_bytes")
    got = [g if isinstance(g, bytes) else g.encode() for g in got.ravel()]
    assert got == list(NUL_ELEMENTS.ravel())


# ---- 3. statistics ------------------------------------------------------------------------------------------------

def test_inference_statistics_count_what_was_served(server):
    client = triton.InferenceServerClient(url=server)

    def counts():
        stats = client.get_inference_statistics("tumor_risk", "1")["model_stats"][0]
        return stats["inference_count"], stats["inference_stats"]["success"]["count"]

    before = counts()
    case = {"mean_radius": ("FP32", [14.1]), "mean_texture": ("FP32", [19.3]), "lymph_nodes": ("INT64", [2]),
            "clinic": ("BYTES", ["north"])}
    inputs = []
    for name, (datatype, data) in case.items():
        inp = triton.InferInput(name, [1, 1], datatype)
        dtype = np.object_ if datatype == "BYTES" else (np.float32 if datatype == "FP32" else np.int64)
        inp.set_data_from_numpy(np.array([data], dtype=dtype), binary_data=False)
        inputs.append(inp)
    for _ in range(2):
        client.infer("tumor_risk", inputs, model_version="1")
    assert counts() == (before[0] + 2, before[1] + 2)
    everything = client.get_inference_statistics()["model_stats"]
    assert {"iris", "tumor_risk", "echo"} <= {s["name"] for s in everything}
    with pytest.raises(InferenceServerException, match="Request for unknown model"):
        client.get_inference_statistics("nope")


# ---- 4, 5, 6. model control from tooling that sends no token: load configurations, error wording ------------------

def test_model_control_with_load_configuration(admin, server):
    control = triton.InferenceServerClient(url=admin)
    client = triton.InferenceServerClient(url=server)
    assert {"name": "digits_mlp", "version": "1", "state": "READY"}.items() <= next(
        m for m in control.get_model_repository_index() if m["name"] == "digits_mlp").items()
    config = {"max_batch_size": 8, "dynamic_batching": {"max_queue_delay_microseconds": 200},
              "instance_group": [{"count": 3, "kind": "KIND_CPU"}]}
    control.load_model("digits_mlp", config=json.dumps(config))
    try:
        assert client.get_model_config("digits_mlp")["instance_group"][0]["count"] == 3
        with pytest.raises(InferenceServerException, match="config.optimization is not supported"):
            control.load_model("digits_mlp", config=json.dumps({"optimization": {}}))
        with pytest.raises(InferenceServerException, match="not valid JSON"):
            control.load_model("digits_mlp", config="{")
        with pytest.raises(InferenceServerException, match="loads models only from its repository"):
            control.load_model("digits_mlp", config="{}", files={"file:1/model.onnx": b"\x08\x01"})
    finally:
        control.load_model("digits_mlp")
    assert client.get_model_config("digits_mlp")["instance_group"][0]["count"] == 2
    with pytest.raises(InferenceServerException, match="failed to load 'nope'"):
        control.load_model("nope")
    with pytest.raises(InferenceServerException, match="Request for unknown model: 'nope'"):
        control.unload_model("nope")
