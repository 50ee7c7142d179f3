"""A batch-friendly model for the dynamic-batching benchmark: a wide multi-layer perceptron (64 → 1024 → 1024 → 10)
trained on scikit-learn's digits (ships with scikit-learn, no download), exported with skl2onnx.

A single-row run of it is a matrix-vector product over ~4 MB of weights; a batch turns that into a matrix-matrix
product over the same weights, which is what dynamic batching exists for. (The example digits MLP, 128 → 64, is too
small for that: its runs cost a few µs, less than a request's protocol work.) Fixed seed.

    python wide_mlp.py <out.onnx>
"""
import sys
import warnings

import numpy as np
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

x, y = load_digits(return_X_y=True)
x = (x / 16.0).astype(np.float32)
with warnings.catch_warnings():
    # A few epochs are enough for a benchmark model (it is still an accurate classifier, checked below).
    warnings.simplefilter("ignore", ConvergenceWarning)
    mlp = MLPClassifier(hidden_layer_sizes=(1024, 1024), max_iter=20, random_state=7).fit(x, y)
accuracy = mlp.score(x, y)
assert accuracy > 0.9, accuracy
onx = to_onnx(mlp, initial_types=[("float_input", FloatTensorType([None, 64]))],
              target_opset={"": 17, "ai.onnx.ml": 3}, options={"zipmap": False})
data = onx.SerializeToString()
with open(sys.argv[1], "wb") as f:
    f.write(data)
print(f"wide MLP: training accuracy {accuracy:.3f}, {len(data)} bytes")
