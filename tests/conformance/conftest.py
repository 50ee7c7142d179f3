"""Starts the real sluice binary on a loopback port for the conformance tests."""

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("SLUICE_BIN", ROOT / "target" / "debug" / "sluice"))


@pytest.fixture(scope="session")
def reference():
    return json.loads((ROOT / "tests" / "fixtures" / "reference.json").read_text())


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def admin_port():
    """The management API's own loopback port, open without a token (admin.require_token = false), as Triton's
    tooling expects it."""
    return free_port()


@pytest.fixture(scope="session")
def admin(server, admin_port):
    """Base URL (host:port) of the management API."""
    return f"127.0.0.1:{admin_port}"


@pytest.fixture(scope="session")
def grpc_port():
    """The gRPC port of the session's server."""
    return free_port()


@pytest.fixture(scope="session")
def grpc(server, grpc_port):
    """Address (host:port) of the session server's gRPC service."""
    return f"127.0.0.1:{grpc_port}"


@pytest.fixture(scope="session")
def server(admin_port, grpc_port):
    """Base URL (host:port) of a sluice serving models/ plus the echo fixture, its management API open on its own
    port."""
    yield from sluice({
        "SLUICE__ADMIN__PORT": str(admin_port),
        "SLUICE__ADMIN__HOST": "127.0.0.1",
        "SLUICE__ADMIN__REQUIRE_TOKEN": "false",
        "SLUICE__SERVER__GRPC_PORT": str(grpc_port),
    })


def sluice(settings, prepare=None, models=None):
    """Runs sluice on a copy of models/ plus the echo fixture with `settings` (environment variables); yields its
    HTTP address once it is ready, stops it afterwards. `prepare(repo)` may change the copy first. `models` (a
    repository URL) replaces the copy."""
    repo = Path(tempfile.mkdtemp(prefix="sluice-conformance-"))
    for source in list((ROOT / "models").iterdir()) + [ROOT / "tests" / "fixtures" / "models" / "echo"]:
        if source.is_dir() and models is None:
            shutil.copytree(source, repo / source.name)
    if prepare:
        prepare(repo)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE__")}
    env.update(settings)
    proc = subprocess.Popen(
        [str(BINARY), "--models", models or str(repo), "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    address = None
    lines = []
    deadline = time.monotonic() + 30
    while address is None and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        side = "management" in line or "gRPC" in line
        match = re.search(r"listening.*?(127\.0\.0\.1:\d+)", line) if not side else None
        if match:
            address = match.group(1)
    if address is None:
        proc.kill()
        raise RuntimeError("sluice did not start:\n" + "".join(lines))
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{address}/v2/health/ready") as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.05)
    yield address
    proc.terminate()
    proc.wait(timeout=30)
    shutil.rmtree(repo, ignore_errors=True)
