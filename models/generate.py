#!/usr/bin/env python3
"""Generates sluice's example model repository (`models/`) and the test fixtures.

Seeds are fixed and the datasets ship with scikit-learn, so a run reproduces the same models on the same machine;
on another CPU the last bits of trained floating-point weights (logistic regression, the MLPs) can differ. The generated `.onnx` files are committed: running sluice needs no Python ML stack, only this script's
maintainers do. Pinned tools: `models/requirements.txt`.

    python3 -m venv .venv-gen && .venv-gen/bin/pip install -r models/requirements.txt
    .venv-gen/bin/python models/generate.py

Outputs:
- models/iris/{1,2,3}/model.onnx      iris classifier: v1 logistic regression (skl2onnx's default ZipMap output),
                                      v2 gradient-boosted trees (plain tensor outputs), v3 a retrained v2
- models/digits_mlp/1/model.onnx      8x8 digit MLP in FP32
- models/digits_mlp_int8/1/model.onnx the same MLP, int8 weights (onnxruntime quantize_dynamic)
- models/tumor_risk/1/model.onnx      several inputs of different dtypes: FP32, INT64 and a string (BYTES)
- tests/fixtures/models/echo/1        one Identity per ONNX datatype, for round-trip tests
- tests/fixtures/models/reshape/1     fails inside ONNX Runtime unless given 4 elements (server-error path)
- tests/fixtures/models/misdeclared/1 declares output shape [1] but returns the input's shape
- tests/fixtures/models/slow/1        200 chained MatMul+Tanh: requests that stay in flight
- tests/fixtures/reference.json       V2 requests and the outputs Python onnxruntime gives for them
- tests/fixtures/feedback/            labelled held-out sets (digits, diabetes), a deliberately weak digits MLP
                                      (same signature as digits_mlp, trained on 3 images a digit) and a diabetes
                                      regressor, for the outcome-feedback tests
"""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
from onnx import TensorProto, helper
from onnxruntime.quantization import QuantType, quantize_dynamic
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_iris
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
FIXTURES = ROOT / "tests" / "fixtures"
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
SEED = 7

V2_TYPES = {
    np.dtype("bool"): "BOOL",
    np.dtype("uint8"): "UINT8",
    np.dtype("uint16"): "UINT16",
    np.dtype("uint32"): "UINT32",
    np.dtype("uint64"): "UINT64",
    np.dtype("int8"): "INT8",
    np.dtype("int16"): "INT16",
    np.dtype("int32"): "INT32",
    np.dtype("int64"): "INT64",
    np.dtype("float16"): "FP16",
    np.dtype("float32"): "FP32",
    np.dtype("float64"): "FP64",
}


def save(model: onnx.ModelProto, name: str, version: int, root: Path = MODELS) -> Path:
    path = root / name / str(version) / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    model.producer_name = "sluice models/generate.py"
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def v2_tensor(name: str, array: np.ndarray) -> dict:
    """A V2 JSON tensor (flat data, row-major)."""
    if array.dtype.kind in ("U", "O", "S"):
        datatype, data = "BYTES", [str(x) for x in array.ravel()]
    else:
        datatype = V2_TYPES[array.dtype]
        data = array.ravel().tolist()
    return {"name": name, "datatype": datatype, "shape": list(array.shape), "data": data}


def reference(path: Path, model: str, version: int, inputs: dict) -> dict:
    """Runs Python onnxruntime on `inputs` and records request and tensor outputs."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs() if o.type.startswith("tensor")]
    results = session.run(names, inputs)
    return {
        "model": model,
        "version": str(version),
        "inputs": [v2_tensor(k, v) for k, v in inputs.items()],
        "outputs": [v2_tensor(n, np.asarray(r)) for n, r in zip(names, results)],
    }


def numeric_profile(x: np.ndarray, names: list) -> dict:
    """Drift reference for a numeric input [n, k]: per feature, 10 quantile bins (deduplicated edges) and the share
    of training rows in each bin (len(edges) + 1 buckets: below the first edge ... above the last)."""
    features = []
    for j, name in enumerate(names):
        column = x[:, j].astype(np.float64)
        edges = sorted(set(np.quantile(column, np.linspace(0.1, 0.9, 9)).round(6).tolist()))
        counts = np.bincount(np.searchsorted(edges, column, side="right"), minlength=len(edges) + 1)
        features.append({"index": j, "name": name, "edges": edges, "proportions": (counts / len(column)).round(6).tolist()})
    return {"kind": "numeric", "features": features}


def categorical_profile(values: list, name: str) -> dict:
    """Drift reference for a string input [n, 1]: the share of each category in training data."""
    unique, counts = np.unique(np.asarray(values, dtype=str), return_counts=True)
    categories = {str(u): round(float(c) / len(values), 6) for u, c in zip(unique, counts)}
    return {"kind": "categorical", "features": [{"index": 0, "name": name, "categories": categories}]}


def write_version_files(name: str, version: int, profile: dict, card: dict) -> None:
    """reference.json (drift profile) and card.toml (model card with the file's sha256) next to model.onnx."""
    directory = MODELS / name / str(version)
    (directory / "reference.json").write_text(json.dumps({"inputs": profile}, indent=1) + "\n")
    card = dict(card, sha256=hashlib.sha256((directory / "model.onnx").read_bytes()).hexdigest())
    lines = []
    for key, value in card.items():
        if isinstance(value, dict):
            continue
        lines.append(f"{key} = {json.dumps(value, ensure_ascii=False)}")
    for key, value in card.items():
        if isinstance(value, dict):
            lines.append(f"\n[{key}]")
            lines.extend(f"{k} = {json.dumps(v)}" for k, v in value.items())
    (directory / "card.toml").write_text("\n".join(lines) + "\n")


CARD_COMMON = {
    "owner": "sluice maintainers",
    "source": "models/generate.py (seed 7)",
}


def float_input(width: int) -> list:
    return [("float_input", FloatTensorType([None, width]))]


def onnx_accuracy(path: Path, inputs: dict, y: np.ndarray) -> float:
    """Accuracy of the exported model itself (first output is the label), measured with onnxruntime."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    labels = session.run([session.get_outputs()[0].name], inputs)[0]
    return float(np.mean(np.asarray(labels).ravel() == y))


def iris() -> list:
    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=SEED, stratify=y)
    sample = x[[0, 60, 120, 149]]
    refs = []
    lr = LogisticRegression(max_iter=500, random_state=SEED).fit(x_train, y_train)
    path = save(to_onnx(lr, initial_types=float_input(4), target_opset=TARGET_OPSET), "iris", 1)
    refs.append(reference(path, "iris", 1, {"float_input": sample}))
    acc1 = onnx_accuracy(path, {"float_input": x_test}, y_test)
    gbt = GradientBoostingClassifier(n_estimators=40, max_depth=3, random_state=SEED).fit(x_train, y_train)
    onx = to_onnx(gbt, initial_types=float_input(4), target_opset=TARGET_OPSET, options={"zipmap": False})
    path = save(onx, "iris", 2)
    refs.append(reference(path, "iris", 2, {"float_input": sample}))
    acc2 = onnx_accuracy(path, {"float_input": x_test}, y_test)
    # v3: a retrained candidate with v2's signature, the canary of the Kubernetes canary overlay.
    gbt3 = GradientBoostingClassifier(n_estimators=80, max_depth=2, random_state=SEED).fit(x_train, y_train)
    onx = to_onnx(gbt3, initial_types=float_input(4), target_opset=TARGET_OPSET, options={"zipmap": False})
    path = save(onx, "iris", 3)
    refs.append(reference(path, "iris", 3, {"float_input": sample}))
    acc3 = onnx_accuracy(path, {"float_input": x_test}, y_test)
    iris_profile = {"float_input": numeric_profile(x_train, ["sepal_length", "sepal_width", "petal_length", "petal_width"])}
    kinds = {
        1: ("LogisticRegression", acc1),
        2: ("GradientBoostingClassifier", acc2),
        3: ("GradientBoostingClassifier, 80 trees of depth 2", acc3),
    }
    for version, (kind, acc) in kinds.items():
        write_version_files("iris", version, iris_profile, dict(CARD_COMMON,
            description=f"Iris species classifier ({kind}).",
            intended_use="Examples and tests of sluice; classifying iris flowers from four measurements in cm.",
            limitations="Toy dataset; only meaningful for measurements in the ranges of the training data.",
            training_data="scikit-learn iris, stratified 70/30 split, seed 7 (105 training rows).",
            metrics={"test_accuracy": round(acc, 4)}))
    card(
        "iris",
        "Iris species classifier (setosa=0, versicolor=1, virginica=2) from four flower measurements in cm.",
        inputs="`float_input` FP32 `[-1, 4]`: sepal length, sepal width, petal length, petal width.",
        outputs="v1: `output_label` INT64 `[-1]` and `output_probability`, scikit-learn's ZipMap "
        "(a sequence of maps, not a tensor: listed in metadata, not returnable over V2). "
        "v2 and v3: `label` INT64 `[-1]` and `probabilities` FP32 `[-1, 3]`.",
        training="scikit-learn's bundled iris dataset (150 rows), stratified 70/30 split, seed 7.",
        versions=[
            f"1: LogisticRegression; test accuracy {acc1:.3f} (45 rows)",
            f"2: GradientBoostingClassifier (40 trees, depth 3); test accuracy {acc2:.3f} (45 rows)",
            f"3: GradientBoostingClassifier (80 trees, depth 2), v2's signature; test accuracy {acc3:.3f} (45 rows)",
        ],
        limitations="Toy dataset; only meaningful for measurements in the ranges of the training data.",
        policy='\n# Load every version (the default policy loads only the latest).\nversion_policy = "all"\n'
        "# v2 renamed v1's outputs; the default is pinned to v2, and v3 (same signature) is its canary.\n"
        "# Rolling back is this one line: default_version = 1\ndefault_version = 2\n",
    )
    return refs


def digits() -> list:
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=SEED)
    mlp = MLPClassifier(hidden_layer_sizes=(128, 64), max_iter=300, random_state=SEED).fit(x_train, y_train)
    onx = to_onnx(mlp, initial_types=float_input(64), target_opset=TARGET_OPSET, options={"zipmap": False})
    fp32 = save(onx, "digits_mlp", 1)
    int8 = MODELS / "digits_mlp_int8" / "1" / "model.onnx"
    int8.parent.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    quantized = onnx.load(str(int8))
    save(quantized, "digits_mlp_int8", 1)
    sample = x_test[:3]
    acc_fp32 = onnx_accuracy(fp32, {"float_input": x_test}, y_test)
    acc_int8 = onnx_accuracy(int8, {"float_input": x_test}, y_test)
    digits_profile = {"float_input": numeric_profile(x_train, [f"pixel_{i}" for i in range(64)])}
    for model_name, kind, acc in [("digits_mlp", "FP32", acc_fp32), ("digits_mlp_int8", "int8 dynamic quantisation", acc_int8)]:
        write_version_files(model_name, 1, digits_profile, dict(CARD_COMMON,
            description=f"8x8 handwritten digit MLP ({kind}).",
            intended_use="Examples, tests and shadow comparisons (FP32 vs int8) in sluice.",
            limitations="8x8 images scaled to 0..1 only; not a general handwriting recogniser.",
            training_data="scikit-learn digits, 80/20 split, seed 7 (1437 training images).",
            metrics={"test_accuracy": round(acc, 4)}))
    common = dict(
        session="\n# Session settings (all optional): sessions per version, ONNX Runtime threads, graph optimisation.\n"
        "[session]\npool_size = 2\nintra_op_threads = 1\ninter_op_threads = 1\noptimization_level = \"all\"\n",
        inputs="`float_input` FP32 `[-1, 64]`: an 8x8 grey-scale digit, row-major, pixel values scaled to 0..1.",
        outputs="`label` INT64 `[-1]` (the digit) and `probabilities` FP32 `[-1, 10]`.",
        training="scikit-learn's bundled digits dataset (1797 images), 80/20 split, seed 7; "
        "MLPClassifier with hidden layers (128, 64).",
        limitations="8x8 images only, scaled like the training data; not a general handwriting recogniser.",
    )
    card("digits_mlp", "Handwritten digit classifier, FP32 multi-layer perceptron.",
         versions=[f"1: FP32 weights ({fp32.stat().st_size} bytes); test accuracy {acc_fp32:.3f} (360 images)"],
         policy="\n# Outcome feedback (docs/feedback.md): predictions are kept for their ground truth, posted to\n"
         "# /v2/models/digits_mlp/feedback; quality is at /v2/models/digits_mlp/quality and in /metrics.\n"
         '[feedback]\ntask = "classification"\nlabel_output = "label"\nscore_output = "probabilities"\n',
         **common)
    card("digits_mlp_int8", "The digits_mlp network with int8 weights (onnxruntime quantize_dynamic).",
         versions=[f"1: int8 dynamic quantisation of digits_mlp v1 ({int8.stat().st_size} bytes); "
                   f"test accuracy {acc_int8:.3f} (360 images)"],
         **common)
    return [
        reference(fp32, "digits_mlp", 1, {"float_input": sample}),
        reference(int8, "digits_mlp_int8", 1, {"float_input": sample}),
    ]


def tumor_risk() -> list:
    """Three inputs of different dtypes: FP32 measurements, an INT64 count and a string category."""
    data = load_breast_cancer()
    rng = np.random.default_rng(SEED)
    frame = pd.DataFrame(
        {
            "mean_radius": data.data[:, 0].astype(np.float32),
            "mean_texture": data.data[:, 1].astype(np.float32),
            "lymph_nodes": (data.data[:, 20] // 5).astype(np.int64),
            "clinic": rng.choice(["north", "south", "east", "west"], size=len(data.target)),
        }
    )
    pre = ColumnTransformer(
        [
            ("num", StandardScaler(), ["mean_radius", "mean_texture"]),
            ("count", StandardScaler(), ["lymph_nodes"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["clinic"]),
        ]
    )
    model = Pipeline([("pre", pre), ("clf", LogisticRegression(max_iter=1000, random_state=SEED))])
    train, test = train_test_split(frame.index, test_size=0.25, random_state=SEED, stratify=data.target)
    model.fit(frame.loc[train], data.target[train])
    types = [
        ("mean_radius", FloatTensorType([None, 1])),
        ("mean_texture", FloatTensorType([None, 1])),
        ("lymph_nodes", Int64TensorType([None, 1])),
        ("clinic", StringTensorType([None, 1])),
    ]
    onx = to_onnx(model, initial_types=types, target_opset=TARGET_OPSET, options={"zipmap": False})
    path = save(onx, "tumor_risk", 1)
    rows = frame.iloc[[0, 19, 300]]
    inputs = {
        "mean_radius": rows[["mean_radius"]].to_numpy(np.float32),
        "mean_texture": rows[["mean_texture"]].to_numpy(np.float32),
        "lymph_nodes": rows[["lymph_nodes"]].to_numpy(np.int64),
        "clinic": rows[["clinic"]].to_numpy(object),
    }
    held_out = frame.loc[test]
    acc = onnx_accuracy(path, {
        "mean_radius": held_out[["mean_radius"]].to_numpy(np.float32),
        "mean_texture": held_out[["mean_texture"]].to_numpy(np.float32),
        "lymph_nodes": held_out[["lymph_nodes"]].to_numpy(np.int64),
        "clinic": held_out[["clinic"]].to_numpy(object),
    }, data.target[test])
    train_frame = frame.loc[train]
    write_version_files("tumor_risk", 1, {
        "mean_radius": numeric_profile(train_frame[["mean_radius"]].to_numpy(np.float64), ["mean_radius"]),
        "mean_texture": numeric_profile(train_frame[["mean_texture"]].to_numpy(np.float64), ["mean_texture"]),
        "lymph_nodes": numeric_profile(train_frame[["lymph_nodes"]].to_numpy(np.float64), ["lymph_nodes"]),
        "clinic": categorical_profile(train_frame["clinic"].tolist(), "clinic"),
    }, dict(CARD_COMMON,
        description="Benign/malignant tumour classifier over FP32, INT64 and string inputs.",
        intended_use="Examples and tests of multi-input, mixed-datatype models in sluice.",
        limitations="A demonstration, not a medical device: never use it on patients.",
        training_data="scikit-learn breast cancer, stratified 75/25 split, seed 7; clinic is synthetic.",
        metrics={"test_accuracy": round(acc, 4)}))
    card(
        "tumor_risk",
        "Benign (1) / malignant (0) tumour classifier over inputs of several datatypes: the example of a "
        "multi-input model with FP32, INT64 and string (BYTES) inputs.",
        inputs="`mean_radius` FP32 `[-1, 1]`, `mean_texture` FP32 `[-1, 1]`, `lymph_nodes` INT64 `[-1, 1]` "
        "(worst radius // 5, an integer stand-in), `clinic` BYTES `[-1, 1]` (one of north, south, east, west; "
        "synthetic, random, so uninformative by construction; unknown values are ignored).",
        outputs="`label` INT64 `[-1]` and `probabilities` FP32 `[-1, 2]`.",
        training="scikit-learn's bundled breast cancer dataset (569 rows), stratified 75/25 split, seed 7; "
        "ColumnTransformer (StandardScaler, OneHotEncoder) then LogisticRegression.",
        versions=[f"1: test accuracy {acc:.3f} ({len(test)} rows)"],
        limitations="A demonstration of mixed input types, not a medical device: never use it on patients.",
    )
    return [reference(path, "tumor_risk", 1, inputs)]


def card(name: str, description: str, *, inputs: str, outputs: str, training: str, versions: list,
         limitations: str, session: str = "", policy: str = "") -> None:
    """Writes the model card (README.md) and model.toml next to the model's versions."""
    lines = [f"# {name}", "", description, "", "## Inputs", "", inputs, "", "## Outputs", "", outputs, "",
             "## Training data", "", training, "", "## Versions and evaluation", ""]
    lines += [f"- {v}" for v in versions]
    lines += ["", "## Intended use and limitations", "", limitations, "",
              "Owner: the sluice maintainers. Source: `models/generate.py` (regenerate, do not edit by hand).", ""]
    (MODELS / name / "README.md").write_text("\n".join(lines))
    toml = f'description = "{description}"\n' + policy + session
    (MODELS / name / "model.toml").write_text(toml)


ECHO_TYPES = [
    ("bool", TensorProto.BOOL, np.array([True, False, True])),
    ("uint8", TensorProto.UINT8, np.array([0, 7, 255], np.uint8)),
    ("uint16", TensorProto.UINT16, np.array([0, 7, 65535], np.uint16)),
    ("uint32", TensorProto.UINT32, np.array([0, 7, 4294967295], np.uint32)),
    ("uint64", TensorProto.UINT64, np.array([0, 7, 18446744073709551615], np.uint64)),
    ("int8", TensorProto.INT8, np.array([-128, 0, 127], np.int8)),
    ("int16", TensorProto.INT16, np.array([-32768, 0, 32767], np.int16)),
    ("int32", TensorProto.INT32, np.array([-2147483648, 0, 2147483647], np.int32)),
    ("int64", TensorProto.INT64, np.array([-9223372036854775808, 0, 9223372036854775807], np.int64)),
    ("fp16", TensorProto.FLOAT16, np.array([-1.5, 0.0, 65504.0], np.float16)),
    ("fp32", TensorProto.FLOAT, np.array([-1.5, 0.25, 3.4e38], np.float32)),
    ("fp64", TensorProto.DOUBLE, np.array([-1.5, 0.1, 1.7e308], np.float64)),
    ("bytes", TensorProto.STRING, np.array(["a", "", "héllo ✓"], object)),
]


def echo() -> list:
    """Test fixture: for each ONNX datatype, input `in_<t>` of shape [-1, -1] comes back as `out_<t>`."""
    inputs = [helper.make_tensor_value_info(f"in_{n}", t, ["batch", "n"]) for n, t, _ in ECHO_TYPES]
    outputs = [helper.make_tensor_value_info(f"out_{n}", t, ["batch", "n"]) for n, t, _ in ECHO_TYPES]
    nodes = [helper.make_node("Identity", [f"in_{n}"], [f"out_{n}"]) for n, _, _ in ECHO_TYPES]
    graph = helper.make_graph(nodes, "echo", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = save(model, "echo", 1, FIXTURES / "models")
    return [reference(path, "echo", 1, {f"in_{n}": values.reshape(1, 3) for n, _, values in ECHO_TYPES})]


def edge_cases() -> None:
    """Test fixtures for server-side behaviour: an ONNX Runtime failure at run time, and a wrongly declared shape."""
    # `reshape`: x FP32 [-1] reshaped to [2, 2]; any input of other than 4 elements fails inside ONNX Runtime.
    shape = helper.make_tensor("target", TensorProto.INT64, [2], [2, 2])
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "target"], ["y"])],
        "reshape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])],
        initializer=[shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, "reshape", 1, FIXTURES / "models")
    # `misdeclared`: Identity whose output claims shape [1]; the real output has the input's shape.
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "misdeclared",
        [helper.make_tensor_value_info("x", TensorProto.INT64, ["n"])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, "misdeclared", 1, FIXTURES / "models")
    # `slow`: x FP32 [-1, 256] through 200 chained 256x256 MatMul+Tanh; run time grows with the rows sent
    # (about 26 MFLOP a row), for tests that need requests in flight.
    rng = np.random.default_rng(SEED)
    weight = helper.make_tensor("w", TensorProto.FLOAT, [256, 256], (rng.standard_normal((256, 256)) / 16).astype(np.float32).ravel())
    nodes, current = [], "x"
    for i in range(200):
        nodes.append(helper.make_node("MatMul", [current, "w"], [f"m{i}"]))
        nodes.append(helper.make_node("Tanh", [f"m{i}"], [f"t{i}"]))
        current = f"t{i}"
    nodes.append(helper.make_node("Identity", [current], ["y"]))
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 256])],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, "slow", 1, FIXTURES / "models")


def feedback_fixtures() -> None:
    """Labelled data for the outcome-feedback tests: the digits test split (the rows digits_mlp never saw) with its
    labels, a worse digits model of the same signature (trained on 3 images of each digit), and a diabetes regressor with its own
    held-out split."""
    out = FIXTURES / "feedback"
    out.mkdir(parents=True, exist_ok=True)
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=SEED)
    few = np.concatenate([np.flatnonzero(y_train == c)[:3] for c in range(10)])  # 3 images of each digit
    weak = MLPClassifier(hidden_layer_sizes=(128, 64), max_iter=300, random_state=SEED).fit(x_train[few], y_train[few])
    onx = to_onnx(weak, initial_types=float_input(64), target_opset=TARGET_OPSET, options={"zipmap": False})
    (out / "digits_weak.onnx").write_bytes(onx.SerializeToString())
    (out / "digits_heldout.json").write_text(json.dumps(
        {"inputs": [[float(v) for v in row] for row in x_test], "labels": [int(v) for v in y_test]}) + "\n")
    x, y = load_diabetes(return_X_y=True)
    x = x.astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=SEED)
    reg = LinearRegression().fit(x_train, y_train)
    onx = to_onnx(reg, initial_types=float_input(10), target_opset=TARGET_OPSET)
    (out / "diabetes.onnx").write_bytes(onx.SerializeToString())
    (out / "diabetes_heldout.json").write_text(json.dumps(
        {"inputs": [[float(v) for v in row] for row in x_test], "labels": [float(v) for v in y_test]}) + "\n")


def main() -> None:
    for name in ("iris", "digits_mlp", "digits_mlp_int8", "tumor_risk"):
        for version_dir in (MODELS / name).glob("[0-9]*"):
            shutil.rmtree(version_dir)
    refs = iris() + digits() + tumor_risk() + echo()
    edge_cases()
    feedback_fixtures()
    FIXTURES.mkdir(parents=True, exist_ok=True)
    (FIXTURES / "reference.json").write_text(json.dumps(refs, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {len(refs)} reference cases to {FIXTURES / 'reference.json'}")


if __name__ == "__main__":
    main()
