"""sluice serving from a real MLflow Model Registry: `mlflow server` (SQLite backend store, proxied local artifact
store) started once for the module on a loopback port, models registered with MLflow's own client
(mlflow_registry.py, in the MLflow venv of scripts/lib/fetch-mlflow.sh)."""

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest
import requests

from conftest import ROOT, free_port, sluice

HELPER = Path(__file__).with_name("mlflow_registry.py")
IRIS = ROOT / "models" / "iris"
TOKEN = "mlflow-test-admin"
ROW = {"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]}


def mlflow_python():
    python = os.environ.get("SLUICE_MLFLOW_PYTHON")
    if not python:
        python = subprocess.run([str(ROOT / "scripts" / "lib" / "fetch-mlflow.sh")], check=True,
                                capture_output=True, text=True).stdout.strip()
    return python


@pytest.fixture(scope="module")
def registry():
    """A running MLflow tracking server with a model registry; yields its URI and a client to drive it."""
    python = mlflow_python()
    home = Path(tempfile.mkdtemp(prefix="sluice-mlflow-"))
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    log = open(home / "server.log", "w")
    server = subprocess.Popen(
        [python, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{home}/mlflow.db", "--artifacts-destination", str(home / "artifacts"),
         "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, cwd=home, start_new_session=True)
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("mlflow server did not start:\n" + (home / "server.log").read_text()[-3000:])
        time.sleep(0.5)

    def client(*args):
        done = subprocess.run([python, str(HELPER), uri, *map(str, args)], capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    yield uri, client
    os.killpg(server.pid, 15)
    server.wait(timeout=30)
    shutil.rmtree(home, ignore_errors=True)


def wait_for(what, check, timeout=60):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def served_version(address, model):
    r = requests.post(f"http://{address}/v2/models/{model}/infer", json=ROW, timeout=10)
    return r.json().get("model_version") if r.status_code == 200 else None


def index(address):
    r = requests.post(f"http://{address}/v2/repository/index", json={}, timeout=10,
                      headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    return r.json()


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_registered_versions_serve_with_cards_from_the_registry(registry, tmp_path):
    uri, client = registry
    first = client("register", "iris", IRIS / "1", "--owner", "team-iris", "--metric", "accuracy=0.9",
                   "--description", "gradient boosting, first cut", "--tag", f"sha256={sha256(IRIS / '1' / 'model.onnx')}")
    second = client("register", "iris", IRIS / "2", "--metric", "accuracy=0.95")
    assert (first["version"], second["version"]) == (1, 2)
    # Not ONNX: registered, reported, never served.
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "model.pkl").write_bytes(b"\x80\x04not onnx")
    assert client("register", "iris", pickled)["version"] == 3

    settings = {"SLUICE__SERVER__GRPC_PORT": "0", "SLUICE__MODELS__POLL_INTERVAL_MS": "300",
                "SLUICE__ADMIN__TOKEN": TOKEN,
                "SLUICE__MODELS__CACHE_DIR": str(tmp_path / "cache")}
    for address in sluice(settings, models=f"mlflow+{uri}"):
        # MLflow's version numbers; the newest ONNX version serves (the default version policy).
        assert served_version(address, "iris") == "2"
        rows = [row for row in index(address) if row["name"] == "iris"]
        assert {row["version"]: row["state"] for row in rows}.get("2") == "READY", rows
        card = requests.get(f"http://{address}/v2/models/iris/versions/2/card", timeout=10).json()["card"]
        assert card["metrics"] == {"accuracy": 0.95}, card
        assert second["run_id"] in card["source"], card
        reasons = " ".join(row.get("reason", "") for row in rows)
        assert "version 3" in reasons and "no ONNX file" in reasons, rows

        # A version registered while serving takes over within a few polls.
        fourth = client("register", "iris", IRIS / "3", "--owner", "team-iris")
        assert fourth["version"] == 4
        wait_for("version 4 to serve", lambda: served_version(address, "iris") == "4")
        card = requests.get(f"http://{address}/v2/models/iris/versions/4/card", timeout=10).json()["card"]
        assert card["owner"] == "team-iris" and fourth["run_id"] in card["source"], card
        assert (tmp_path / "cache" / "repository" / "iris" / "4" / "model.onnx").read_bytes() == \
            (IRIS / "3" / "model.onnx").read_bytes()
        # Every ONNX version is copied (the version policy decides what loads), its card made from the registry.
        card = tomllib.loads((tmp_path / "cache" / "repository" / "iris" / "1" / "card.toml").read_text())
        assert card["owner"] == "team-iris" and card["description"] == "gradient boosting, first cut", card
        assert card["sha256"] == sha256(IRIS / "1" / "model.onnx") and card["metrics"] == {"accuracy": 0.9}, card

        # A sha256 tag the file does not match: never installed, reported; version 4 keeps serving.
        assert client("register", "iris", IRIS / "2", "--tag", "sha256=" + "0" * 64)["version"] == 5
        wait_for("the checksum failure", lambda: "checksum mismatch" in " ".join(
            row.get("reason", "") for row in index(address) if row["name"] == "iris"))
        assert served_version(address, "iris") == "4"
        assert not (tmp_path / "cache" / "repository" / "iris" / "5").exists()
