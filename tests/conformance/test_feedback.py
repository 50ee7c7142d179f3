"""Outcome feedback on real data: the digits test split (rows digits_mlp never saw) sent through a canary split and a
shadow, its true labels posted afterwards; every metric sluice reports must equal the same metric computed here,
offline, from the very outputs the clients received. The worse digits version (trained on 3 images a digit) trips the
retraining trigger and the quality rollback; unknown, late, duplicate and invalid truths are counted."""

import json
import math
import re
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest
import requests

from conftest import ROOT, sluice as run


def sluice(settings, prepare):
    """A sluice of its own, without gRPC (the session's server holds the default gRPC port)."""
    return run({"SLUICE__SERVER__GRPC_PORT": "0", **settings}, prepare)

FIXTURES = ROOT / "tests" / "fixtures" / "feedback"
DIGITS = json.loads((FIXTURES / "digits_heldout.json").read_text())
DIABETES = json.loads((FIXTURES / "diabetes_heldout.json").read_text())


def with_weak_version(extra="", default=1):
    """digits_mlp with the weak model as version 2; version `default` is the default."""
    def prepare(repo):
        (repo / "digits_mlp" / "2").mkdir()
        shutil.copy(FIXTURES / "digits_weak.onnx", repo / "digits_mlp" / "2" / "model.onnx")
        toml = (repo / "digits_mlp" / "model.toml").read_text()
        assert "[feedback]" in toml, "models/digits_mlp keeps its predictions for feedback"
        (repo / "digits_mlp" / "model.toml").write_text(
            f'version_policy = "all"\ndefault_version = {default}\n' + toml + extra)
        (repo / "diabetes" / "1").mkdir(parents=True)
        shutil.copy(FIXTURES / "diabetes.onnx", repo / "diabetes" / "1" / "model.onnx")
        (repo / "diabetes" / "model.toml").write_text(
            '[feedback]\ntask = "regression"\nlabel_output = "variable"\n')
    return prepare


def infer(address, model, rows, ids, version=None):
    """One request a row; returns the outputs as numpy arrays (FP32 kept as float32) and the version that served."""
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    answers = []
    for row, rid in zip(rows, ids):
        body = {"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1, len(row)], "data": row}]}
        if rid is not None:
            body["id"] = rid
        r = requests.post(f"http://{address}{path}", json=body, timeout=10)
        assert r.status_code == 200, r.text
        reply = r.json()
        outputs = {}
        for o in reply["outputs"]:
            dtype = np.float32 if o["datatype"] == "FP32" else np.int64
            outputs[o["name"]] = np.array(o["data"], dtype=dtype).reshape(o["shape"])
        answers.append((reply["model_version"], r.headers.get("x-sluice-variant"), outputs))
    return answers


def offline(rows):
    """The metrics of (predicted label, true label, probabilities) rows, computed with numpy as sluice defines them."""
    pred = np.array([p for p, _, _ in rows])
    truth = np.array([t for _, t, _ in rows])
    probs = np.array([s for _, _, s in rows], dtype=np.float32).astype(np.float64)
    n = len(rows)
    pt = np.clip(probs[np.arange(n), truth], 1e-15, 1 - 1e-15)
    onehot = np.eye(probs.shape[1])[truth]
    conf = probs.max(axis=1)
    top = probs.argmax(axis=1)
    bins = np.clip(np.ceil(conf * 10).astype(int) - 1, 0, 9)
    ece = 0.0
    for b in range(10):
        inside = bins == b
        if inside.any():
            ece += inside.sum() / n * abs((top[inside] == truth[inside]).mean() - conf[inside].mean())
    classes = sorted(set(pred.tolist()) | set(truth.tolist()))
    per_class = {}
    for c in classes:
        predicted, actual = (pred == c), (truth == c)
        both = (predicted & actual).sum()
        per_class[str(c)] = (both / predicted.sum() if predicted.sum() else None,
                             both / actual.sum() if actual.sum() else None)
    return {
        "labels": n,
        "accuracy": (pred == truth).mean(),
        "log_loss": -np.log(pt).mean(),
        "brier": ((probs - onehot) ** 2).sum(axis=1).mean(),
        "ece": ece,
        "classes": per_class,
    }


def assert_same(reported, expected):
    assert reported["labels"] == expected["labels"]
    assert reported["accuracy"] == expected["accuracy"]
    for metric in ("log_loss", "brier", "ece"):
        assert math.isclose(reported[metric], expected[metric], rel_tol=1e-9, abs_tol=1e-12), metric
    got = {c["class"]: (c["precision"], c["recall"]) for c in reported["classes"]}
    assert got.keys() == expected["classes"].keys()
    for c, (p, r) in expected["classes"].items():
        for a, b in zip(got[c], (p, r)):
            assert (a is None and b is None) or math.isclose(a, b, rel_tol=1e-12), c


def metrics(address):
    return requests.get(f"http://{address}/metrics", timeout=10).text


def metric(text, name, **labels):
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """A server with the weak version as a 50 % canary and as the shadow of stable, every stable request mirrored."""
    routing = tmp_path_factory.mktemp("routing") / "routing.toml"
    routing.write_text('[digits_mlp]\nstable = 1\nvariants = [{ name = "canary", version = 2, weight = 50.0 }]\n'
                       'shadow = { version = 2, sample_rate = 1.0 }\n')
    yield from sluice({"SLUICE__ROUTING__FILE": str(routing)}, with_weak_version())


def test_quality_equals_the_offline_metrics_for_every_variant_and_the_paired_shadow(split):
    ids = [f"digit-{i}" for i in range(len(DIGITS["labels"]))]
    answers = infer(split, "digits_mlp", DIGITS["inputs"], ids)
    served = {version for version, _, _ in answers}
    assert served == {"1", "2"}, "both variants got traffic"
    # The shadow's own predictions for the mirrored rows, asked of version 2 directly (pinned: not kept).
    stable_rows = [i for i, (v, _, _) in enumerate(answers) if v == "1"]
    shadow = infer(split, "digits_mlp", [DIGITS["inputs"][i] for i in stable_rows], [None] * len(stable_rows), version=2)
    # Wait until the shadow worker has answered every mirrored request.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done = metric(metrics(split), "sluice_shadow_requests_total", model="digits_mlp", outcome="compared") or 0
        if done >= len(stable_rows):
            break
        time.sleep(0.1)
    records = [{"id": rid, "truth": int(y)} for rid, y in zip(ids, DIGITS["labels"])]
    r = requests.post(f"http://{split}/v2/models/digits_mlp/feedback", json={"records": records}, timeout=30)
    assert r.status_code == 200, r.text
    reply = r.json()
    assert (reply["accepted"], reply["unknown"], reply["errors"]) == (len(records), 0, [])

    quality = requests.get(f"http://{split}/v2/models/digits_mlp/quality", timeout=10).json()
    series = {(s["version"], s["variant"], s["set"]): s for s in quality["series"]}
    # Every labelled prediction left the store; what waits are the pinned requests made above, which had no id and
    # were kept under their x-request-id.
    assert quality["pending"] == len(stable_rows)

    def rows_of(indices, outputs):
        return [(int(o["label"].reshape(-1)[0]), DIGITS["labels"][i], o["probabilities"].reshape(-1))
                for i, o in zip(indices, outputs)]

    canary_rows = [i for i, (v, _, _) in enumerate(answers) if v == "2"]
    expected = {
        ("1", "stable", "served"): offline(rows_of(stable_rows, [answers[i][2] for i in stable_rows])),
        ("2", "canary", "served"): offline(rows_of(canary_rows, [answers[i][2] for i in canary_rows])),
        ("1", "stable", "mirrored"): offline(rows_of(stable_rows, [answers[i][2] for i in stable_rows])),
        ("2", "shadow", "mirrored"): offline(rows_of(stable_rows, [o for _, _, o in shadow])),
    }
    assert set(series) == set(expected)
    for key, want in expected.items():
        assert_same(series[key], want)
    # The weak version is worse, on the same rows.
    assert expected[("2", "shadow", "mirrored")]["accuracy"] < expected[("1", "stable", "mirrored")]["accuracy"]
    # Prometheus shows the same figures.
    text = metrics(split)
    for (version, variant, set_), want in expected.items():
        labels = dict(model="digits_mlp", version=version, variant=variant, set=set_)
        assert metric(text, "sluice_model_quality", metric="accuracy", **labels) == want["accuracy"]
        assert math.isclose(metric(text, "sluice_model_quality", metric="log_loss", **labels), want["log_loss"],
                            rel_tol=1e-9)
        assert metric(text, "sluice_model_quality_labels", **labels) == want["labels"]
    labels = dict(model="digits_mlp", version="1", variant="stable", set="served", metric="recall", **{"class": "3"})
    assert math.isclose(metric(text, "sluice_model_class_quality", **labels),
                        expected[("1", "stable", "served")]["classes"]["3"][1], rel_tol=1e-12)
    assert metric(text, "sluice_feedback_labels_total", model="digits_mlp", outcome="accepted") == len(records)


def test_unknown_duplicate_and_invalid_truths_are_counted_and_reported(split):
    infer(split, "digits_mlp", DIGITS["inputs"][:2], ["again-0", "again-1"])
    records = [
        {"id": "again-0", "truth": DIGITS["labels"][0]},
        {"id": "again-0", "truth": DIGITS["labels"][0]},
        {"id": "never-sent", "truth": 1},
        {"id": "again-1", "truth": "eleven"},
        {"id": "again-1", "truth": [1, 2]},
    ]
    reply = requests.post(f"http://{split}/v2/models/digits_mlp/feedback", json={"records": records}, timeout=10).json()
    assert (reply["accepted"], reply["duplicate"], reply["unknown"], reply["invalid"]) == (1, 1, 1, 2)
    assert [e["index"] for e in reply["errors"]] == [1, 2, 3, 4]
    assert "not one of the model's classes" in reply["errors"][2]["error"]
    # An invalid truth leaves the prediction waiting for a valid one.
    reply = requests.post(f"http://{split}/v2/models/digits_mlp/feedback",
                          json={"id": "again-1", "truth": DIGITS["labels"][1]}, timeout=10).json()
    assert reply["accepted"] == 1
    text = metrics(split)
    for outcome, count in (("duplicate", 1), ("unknown", 1), ("invalid", 2)):
        assert metric(text, "sluice_feedback_labels_total", model="digits_mlp", outcome=outcome) == count
    # Bad bodies and models without a policy are clear 4xx errors.
    r = requests.post(f"http://{split}/v2/models/digits_mlp/feedback", data="{", timeout=10)
    assert r.status_code == 400 and "feedback body" in r.json()["error"]
    r = requests.post(f"http://{split}/v2/models/iris/feedback", json={"id": "a", "truth": 1}, timeout=10)
    assert r.status_code == 400 and "[feedback]" in r.json()["error"]
    r = requests.post(f"http://{split}/v2/models/nope/feedback", json={"id": "a", "truth": 1}, timeout=10)
    assert r.status_code == 404


def test_regression_quality_equals_mae_and_rmse_offline(split):
    ids = [f"diabetes-{i}" for i in range(len(DIABETES["labels"]))]
    answers = infer(split, "diabetes", DIABETES["inputs"], ids)
    predicted = np.array([o["variable"].reshape(-1)[0] for _, _, o in answers], dtype=np.float32).astype(np.float64)
    truth = np.array(DIABETES["labels"])
    records = [{"id": rid, "truth": y} for rid, y in zip(ids, DIABETES["labels"])]
    assert requests.post(f"http://{split}/v2/models/diabetes/feedback", json={"records": records},
                         timeout=10).json()["accepted"] == len(ids)
    (series,) = requests.get(f"http://{split}/v2/models/diabetes/quality", timeout=10).json()["series"]
    assert series["labels"] == len(ids)
    assert math.isclose(series["mae"], np.abs(predicted - truth).mean(), rel_tol=1e-9)
    assert math.isclose(series["rmse"], math.sqrt(((predicted - truth) ** 2).mean()), rel_tol=1e-9)


class Receiver(BaseHTTPRequestHandler):
    events = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        Receiver.events.append((self.headers["content-type"], json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_the_weak_version_trips_the_retraining_trigger():
    """The weak version serves alone; its truths come in four posts of 90, and each full window of 100 labels is
    judged against accuracy 0.93 (it scores about 0.84)."""
    Receiver.events = []
    hook = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    retrain = '\n[feedback.retrain]\nmetric = "accuracy"\nthreshold = 0.93\nsustained_windows = 2\nnew_data_rows = 300\n'
    settings = {
        "SLUICE__FEEDBACK__WINDOW": "100",
        "SLUICE__FEEDBACK__WEBHOOK": f"http://127.0.0.1:{hook.server_port}/retrain",
    }
    for address in sluice(settings, with_weak_version(retrain, default=2)):
        ids = [f"w-{i}" for i in range(len(DIGITS["labels"]))]
        infer(address, "digits_mlp", DIGITS["inputs"], ids)
        records = [{"id": rid, "truth": int(y)} for rid, y in zip(ids, DIGITS["labels"])]
        for start in range(0, len(records), 90):
            part = records[start:start + 90]
            assert requests.post(f"http://{address}/v2/models/digits_mlp/feedback", json={"records": part},
                                 timeout=30).json()["accepted"] == len(part)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(Receiver.events) < 2:
            time.sleep(0.05)
        time.sleep(0.2)
        reasons = sorted(e["data"]["reason"] for _, e in Receiver.events)
        assert reasons == ["metric", "new_data"], Receiver.events
        content_type, event = next(e for e in Receiver.events if e[1]["data"]["reason"] == "metric")
        assert content_type == "application/cloudevents+json"
        assert (event["specversion"], event["type"]) == ("1.0", "io.sluice.feedback.retrain")
        assert event["data"]["version"] == "2" and event["data"]["value"] < 0.93 and event["data"]["windows"] == 2
        _, event = next(e for e in Receiver.events if e[1]["data"]["reason"] == "new_data")
        assert event["data"]["labels_since_last_trigger"] >= 300
        text = metrics(address)
        for reason in ("metric", "new_data"):
            assert metric(text, "sluice_feedback_retrain_triggers_total", model="digits_mlp", reason=reason) == 1
    hook.shutdown()


def test_the_weak_canary_is_switched_off_by_the_quality_rollback(tmp_path):
    routing = tmp_path / "routing.toml"
    routing.write_text('[digits_mlp]\nstable = 1\nvariants = [{ name = "canary", version = 2, weight = 50.0 }]\n'
                       'quality_rollback = { max_accuracy_drop = 0.05, min_labels = 100 }\n')
    for address in sluice({"SLUICE__ROUTING__FILE": str(routing)}, with_weak_version()):
        ids = [f"c-{i}" for i in range(len(DIGITS["labels"]))]
        answers = infer(address, "digits_mlp", DIGITS["inputs"], ids)
        assert sum(1 for v, _, _ in answers if v == "2") >= 100, "enough canary traffic to judge"
        records = [{"id": rid, "truth": int(y)} for rid, y in zip(ids, DIGITS["labels"])]
        assert requests.post(f"http://{address}/v2/models/digits_mlp/feedback", json={"records": records},
                             timeout=30).json()["accepted"] == len(records)
        state = requests.get(f"http://{address}/v2/models/digits_mlp/routing", timeout=10).json()
        weights = {v["name"]: v["weight"] for v in state["policy"]["variants"]}
        assert weights["canary"] == 0.0, state
        assert metric(metrics(address), "sluice_routing_auto_rollbacks_total", model="digits_mlp",
                      variant="canary") == 1
        # After the rollback, every request goes to stable.
        assert {v for v, _, _ in infer(address, "digits_mlp", DIGITS["inputs"][:20], [None] * 20)} == {"1"}


def test_predictions_pushed_out_or_too_old_make_their_truth_late():
    settings = {"SLUICE__FEEDBACK__MAX_PENDING": "3", "SLUICE__FEEDBACK__MAX_AGE_S": "2"}
    for address in sluice(settings, with_weak_version()):
        infer(address, "digits_mlp", DIGITS["inputs"][:5], [f"l-{i}" for i in range(5)])
        reply = requests.post(f"http://{address}/v2/models/digits_mlp/feedback",
                              json={"id": "l-0", "truth": DIGITS["labels"][0]}, timeout=10).json()
        assert reply["late"] == 1, reply
        time.sleep(2.2)
        reply = requests.post(f"http://{address}/v2/models/digits_mlp/feedback",
                              json={"id": "l-4", "truth": DIGITS["labels"][4]}, timeout=10).json()
        assert reply["late"] == 1, reply
        text = metrics(address)
        assert metric(text, "sluice_feedback_predictions_dropped_total", model="digits_mlp", reason="capacity") == 2
        assert metric(text, "sluice_feedback_predictions_dropped_total", model="digits_mlp", reason="expired") == 3
