"""sluice serving from a real MLflow Model Registry: `mlflow server` (SQLite backend store, proxied local artifact
store) started once for the module on a loopback port, models registered with MLflow's own client
(mlflow_registry.py, in the MLflow venv of scripts/lib/fetch-mlflow.sh)."""

import hashlib
import json
import os
import random
import socket
import shutil
import subprocess
import tempfile
import threading
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


class Registry:
    """A running MLflow tracking server (SQLite backend store, proxied local artifact store) and MLflow's client."""

    def __init__(self):
        self.python = mlflow_python()
        self.home = Path(tempfile.mkdtemp(prefix="sluice-mlflow-"))
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.server = None
        self.start()

    def start(self):
        log = open(self.home / "server.log", "a")
        self.server = subprocess.Popen(
            [self.python, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--backend-store-uri", f"sqlite:///{self.home}/mlflow.db",
             "--artifacts-destination", str(self.home / "artifacts"), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.home, start_new_session=True)
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if self.server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("mlflow server did not start:\n" + (self.home / "server.log").read_text()[-3000:])
            time.sleep(0.5)

    def stop(self):
        os.killpg(self.server.pid, 15)
        self.server.wait(timeout=30)

    def __call__(self, *args):
        """Runs mlflow_registry.py with MLflow's client; returns its JSON answer."""
        done = subprocess.run([self.python, str(HELPER), self.uri, *map(str, args)], capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def registry():
    registry = Registry()
    yield registry
    registry.stop()
    shutil.rmtree(registry.home, ignore_errors=True)


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
    client = registry
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
    for address in sluice(settings, models=f"mlflow+{registry.uri}"):
        # MLflow's version numbers; the newest ONNX version serves (the default version policy).
        assert served_version(address, "iris") == "2"
        rows = [row for row in index(address) if row["name"] == "iris"]
        assert {row["version"]: row["state"] for row in rows}.get("2") == "READY", rows
        card = requests.get(f"http://{address}/v2/models/iris/versions/2/card", timeout=10).json()["card"]
        assert card["metrics"] == {"accuracy": 0.95}, card
        assert second["run_id"] in card["source"], card
        # MLflow keeps no checksum: the card names the sha256 of the file served.
        assert card["sha256"] == sha256(IRIS / "2" / "model.onnx"), card
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

        # The registered model's sluice.model_toml tag is its model.toml: with every version loaded, v1 answers.
        assert requests.post(f"http://{address}/v2/models/iris/versions/1/infer", json=ROW,
                             timeout=10).status_code != 200
        client("model-tag", "iris", "sluice.model_toml", 'version_policy = "all"\ndefault_version = 4\n')
        wait_for("version 1 to load", lambda: requests.post(
            f"http://{address}/v2/models/iris/versions/1/infer", json=ROW, timeout=10).status_code == 200)
        assert served_version(address, "iris") == "4"


class Load:
    """Clients sending requests in a loop until stopped; counts answers and keeps every failure."""

    def __init__(self, address, model, clients=4):
        self.url = f"http://{address}/v2/models/{model}/infer"
        self.running = True
        self.answered = 0
        self.failures = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(clients)]
        for t in self.threads:
            t.start()

    def run(self):
        session = requests.Session()
        while self.running:
            try:
                r = session.post(self.url, json=ROW, timeout=10)
                failure = None if r.status_code == 200 else f"{r.status_code} {r.text[:200]}"
            except requests.RequestException as e:
                failure = str(e)
            with self.lock:
                self.answered += failure is None
                if failure:
                    self.failures.append(failure)

    def stop(self):
        self.running = False
        for t in self.threads:
            t.join(timeout=30)
        return self.answered, self.failures


def routing(address, model):
    return requests.get(f"http://{address}/v2/models/{model}/routing", timeout=10).json()


def ready_body(address):
    r = requests.get(f"http://{address}/v2/health/ready", timeout=10)
    return r.status_code, r.text


def test_aliases_drive_the_traffic_and_rollbacks_are_tagged(registry, tmp_path):
    client = registry
    for source in ["1", "2", "3"]:
        client("register", "flower", IRIS / source)
    # Version 4 expects other inputs: every request routed to it fails.
    misdeclared = tmp_path / "misdeclared"
    shutil.copytree(ROOT / "tests" / "fixtures" / "models" / "misdeclared" / "1", misdeclared)
    assert client("register", "flower", misdeclared)["version"] == 4
    client("alias", "flower", "champion", 1)
    policy = tmp_path / "routing.toml"
    policy.write_text("# the team's policy: MLflow's aliases say which versions\n[flower]\n"
                      'stable = "@champion"\n'
                      'variants = [{ name = "canary", version = "@challenger", weight = 30.0 }]\n'
                      "auto_rollback = { max_error_rate = 0.5, window_seconds = 60, min_requests = 20 }\n")
    settings = {"SLUICE__SERVER__GRPC_PORT": "0", "SLUICE__MODELS__POLL_INTERVAL_MS": "300",
                "SLUICE__ADMIN__TOKEN": TOKEN, "SLUICE__MODELS__CACHE_DIR": str(tmp_path / "cache"),
                "SLUICE__ROUTING__FILE": str(policy)}
    for address in sluice(settings, models=f"mlflow+{registry.uri}"):
        # @challenger is not set: no canary, and the index says why.
        assert routing(address, "flower")["policy"]["stable"] == 1
        assert routing(address, "flower")["policy"]["variants"] == []
        assert "@challenger is not set" in " ".join(
            row.get("reason", "") for row in index(address) if row["name"] == "flower")
        assert {served_version(address, "flower") for _ in range(20)} == {"1"}

        # Setting the alias starts the canary at the file's weight.
        client("alias", "flower", "challenger", 2)
        wait_for("the canary", lambda: routing(address, "flower")["policy"]["variants"][:1] == [
            {"name": "canary", "version": 2, "weight": 30.0}])
        served = [served_version(address, "flower") for _ in range(400)]
        assert set(served) == {"1", "2"}
        assert 0.2 < served.count("2") / len(served) < 0.4, served.count("2")

        # Moving the champion under load: version 3 takes the stable share on both replicas, no request fails.
        replica = {**settings, "SLUICE__MODELS__CACHE_DIR": str(tmp_path / "cache-b")}
        other = sluice(replica, models=f"mlflow+{registry.uri}")
        second = next(other)
        assert routing(second, "flower")["policy"]["stable"] == 1
        load = Load(address, "flower")
        client("alias", "flower", "champion", 3)
        for replica_address in (address, second):
            wait_for("the new champion", lambda: routing(replica_address, "flower")["policy"]["stable"] == 3)
        wait_for("version 3 to serve", lambda: served_version(address, "flower") == "3")
        next(other, None)  # stops replica b

        # MLflow stopped for 10 s under load: everything loaded keeps serving; readiness says why.
        registry.stop()
        wait_for("the outage to show", lambda: "unreachable" in ready_body(address)[1], timeout=30)
        assert ready_body(address)[0] == 200
        time.sleep(10)
        registry.start()
        wait_for("the registry to be reachable again", lambda: "unreachable" not in ready_body(address)[1])
        answered, failures = load.stop()
        assert failures == [] and answered > 100, (answered, failures[:5])

        # A broken challenger: routed requests fail, the canary is switched off, and the version is tagged.
        client("alias", "flower", "challenger", 4)
        wait_for("the broken canary", lambda: routing(address, "flower")["policy"]["variants"][0]["version"] == 4)
        for _ in range(200):
            requests.post(f"http://{address}/v2/models/flower/infer", json=ROW, timeout=10)
        assert routing(address, "flower")["policy"]["variants"][0]["weight"] == 0.0
        wait_for("the rollback tag", lambda: "sluice.rollback" in client("tags", "flower", 4))
        tag = client("tags", "flower", 4)["sluice.rollback"]
        assert "variant canary switched off" in tag and "error rate" in tag, tag
        # The aliases stay where people put them.
        assert client("tags", "flower", 3).get("sluice.rollback") is None


def test_artifacts_in_a_local_directory_are_read_from_it(registry, tmp_path):
    """An experiment whose artifacts MLflow keeps in a directory (`file:`) rather than behind its proxy: sluice reads
    the version's file from that directory."""
    artifacts = tmp_path / "artifacts"
    version = registry("register", "petal", IRIS / "2", "--artifacts", artifacts.as_uri())
    assert version["version"] == 1
    assert list(artifacts.rglob("model.onnx")), "MLflow's client wrote the artifacts to the directory"
    settings = {"SLUICE__SERVER__GRPC_PORT": "0", "SLUICE__MODELS__POLL_INTERVAL_MS": "300",
                "SLUICE__MODELS__CACHE_DIR": str(tmp_path / "cache")}
    for address in sluice(settings, models=f"mlflow+{registry.uri}"):
        assert served_version(address, "petal") == "1"
        assert (tmp_path / "cache" / "repository" / "petal" / "1" / "model.onnx").read_bytes() == \
            (IRIS / "2" / "model.onnx").read_bytes()
        card = requests.get(f"http://{address}/v2/models/petal/versions/1/card", timeout=10).json()["card"]
        assert str(artifacts) in card["source"], card


def weed_port():
    """A loopback port below 55000 whose +10000 (SeaweedFS's gRPC port) is free too."""
    while True:
        port = random.randint(20000, 44000)
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue


@pytest.fixture
def s3(tmp_path):
    """A real S3-compatible store (SeaweedFS, scripts/lib/fetch-seaweedfs.sh) with one identity; yields its
    endpoint and the credentials."""
    weed = os.environ.get("SLUICE_WEED") or subprocess.run(
        [str(ROOT / "scripts" / "lib" / "fetch-seaweedfs.sh")], check=True, capture_output=True, text=True
    ).stdout.strip()
    keys = {"AWS_ACCESS_KEY_ID": "mlflow-test", "AWS_SECRET_ACCESS_KEY": "mlflow-test-secret"}
    config = tmp_path / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "mlflow", "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        "credentials": [{"accessKey": keys["AWS_ACCESS_KEY_ID"], "secretKey": keys["AWS_SECRET_ACCESS_KEY"]}]}]}))
    (tmp_path / "weed").mkdir()
    master, volume, filer, port = weed_port(), weed_port(), weed_port(), weed_port()
    server = subprocess.Popen(
        [weed, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={tmp_path / 'weed'}",
         f"-master.port={master}", f"-volume.port={volume}", "-filer", f"-filer.port={filer}",
         "-master.volumeSizeLimitMB=64", "-volume.max=100", "-s3", f"-s3.port={port}",
         "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={config}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            assert time.monotonic() < deadline and server.poll() is None, "SeaweedFS did not start"
            time.sleep(0.2)
    yield endpoint, keys
    os.killpg(server.pid, 15)
    server.wait(timeout=30)


def test_artifacts_in_s3_are_read_through_the_object_store_client(registry, s3, tmp_path):
    """An experiment whose artifacts MLflow's client writes straight to S3 (SeaweedFS): sluice reads the version's
    file from the bucket with its own object-store client, the credentials from the environment."""
    endpoint, keys = s3
    env = {**keys, "MLFLOW_S3_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "us-east-1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        version = registry("register", "sepal", IRIS / "3", "--artifacts", "s3://mlflow-artifacts/experiments")
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k)
            else:
                os.environ[k] = v
    assert version["version"] == 1
    settings = {"SLUICE__SERVER__GRPC_PORT": "0", "SLUICE__MODELS__POLL_INTERVAL_MS": "300",
                "SLUICE__MODELS__CACHE_DIR": str(tmp_path / "cache"),
                "SLUICE__MODELS__STORAGE__ENDPOINT": endpoint, "SLUICE__MODELS__STORAGE__ALLOW_HTTP": "true",
                "SLUICE__MODELS__STORAGE__REGION": "us-east-1", **keys}
    for address in sluice(settings, models=f"mlflow+{registry.uri}"):
        assert served_version(address, "sepal") == "1"
        assert (tmp_path / "cache" / "repository" / "sepal" / "1" / "model.onnx").read_bytes() == \
            (IRIS / "3" / "model.onnx").read_bytes()
        card = requests.get(f"http://{address}/v2/models/sepal/versions/1/card", timeout=10).json()["card"]
        assert "s3://mlflow-artifacts/experiments" in card["source"], card
