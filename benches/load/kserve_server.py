"""KServe's Python model server with an onnxruntime model (V2 protocol, REST on <port> and gRPC on <port> + 1), as
KServe users deploy custom models.

    python kserve_server.py <model.onnx> <port> <intra_threads>
"""
import sys

import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer

model_path, port, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])


class OnnxModel(Model):
    def __init__(self, name: str):
        super().__init__(name)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
        self.ready = True

    def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        feeds = {i.name: i.as_numpy().astype(np.float32) for i in payload.inputs}
        names = [o.name for o in self.session.get_outputs()]
        results = self.session.run(names, feeds)
        outputs = []
        for n, r in zip(names, results):
            out = InferOutput(name=n, shape=list(r.shape), datatype="FP32" if r.dtype == np.float32 else "INT64")
            out.set_data_from_numpy(r, binary_data=False)
            outputs.append(out)
        return InferResponse(model_name=self.name, infer_outputs=outputs, response_id=payload.id or "bench")


if __name__ == "__main__":
    ModelServer(http_port=port, grpc_port=port + 1, workers=1, enable_grpc=True).start([OnnxModel("model")])
