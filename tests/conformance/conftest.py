"""Starts the real sluice binary on a loopback port for the conformance tests."""

import json
import os
import re
import shutil
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


@pytest.fixture(scope="session")
def server():
    """Base URL (host:port) of a sluice serving models/ plus the echo fixture."""
    repo = Path(tempfile.mkdtemp(prefix="sluice-conformance-"))
    for source in list((ROOT / "models").iterdir()) + [ROOT / "tests" / "fixtures" / "models" / "echo"]:
        if source.is_dir():
            shutil.copytree(source, repo / source.name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE__")}
    proc = subprocess.Popen(
        [str(BINARY), "--models", str(repo), "--host", "127.0.0.1", "--port", "0"],
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
        match = re.search(r"listening.*?(127\.0\.0\.1:\d+)", line)
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
