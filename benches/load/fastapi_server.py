"""A Python V2 server of the kind teams run today: FastAPI + onnxruntime, JSON in and out.

    python fastapi_server.py <model.onnx> <port> <intra_threads>
"""
import sys

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI, Request

model_path, port, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
options = ort.SessionOptions()
options.intra_op_num_threads = threads
options.inter_op_num_threads = 1
session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
app = FastAPI()


@app.post("/v2/models/{name}/infer")
async def infer(name: str, request: Request):
    body = await request.json()
    feeds = {i["name"]: np.asarray(i["data"], dtype=np.float32).reshape(i["shape"]) for i in body["inputs"]}
    names = [o.name for o in session.get_outputs()]
    results = session.run(names, feeds)
    return {
        "model_name": name,
        "outputs": [
            {"name": n, "datatype": "FP32" if r.dtype == np.float32 else "INT64", "shape": list(r.shape), "data": r.ravel().tolist()}
            for n, r in zip(names, results)
        ],
    }


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
