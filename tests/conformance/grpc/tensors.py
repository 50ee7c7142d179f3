"""The reference cases' tensors as numpy arrays, and the comparison of results with them, for the gRPC clients' tests
(tests/fixtures/reference.json; BYTES as Python bytes, as the gRPC clients return them)."""

import numpy as np

NUMPY = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_,
}


def as_array(tensor):
    data = tensor["data"]
    if tensor["datatype"] == "BYTES":
        data = [d.encode() for d in data]
    return np.array(data, dtype=NUMPY[tensor["datatype"]]).reshape(tensor["shape"])


def assert_same(got, want):
    got = np.asarray(got)
    if np.issubdtype(want.dtype, np.floating):
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=1e-5, atol=1e-6)
    else:
        assert got.tolist() == want.tolist()
    assert got.shape == want.shape
