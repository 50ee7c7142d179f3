#!/usr/bin/env python3
"""Registry benchmarks, run by scripts/perf/bench-registry.sh (standard library only, plus wrk):

1. Loading never starves serving: the small model's latency (wrk -t2 -c8, --latency) while the compute-heavy CNN's
   file is replaced every 2 s (each replacement is a load with its warmup), against the same load with no reloads,
   rounds interleaved. Failed requests are counted.
2. Warmup: the latency of the first and second request after a new CNN version took over, with warmup on and off,
   sent at once (while the previous version is released) and half a second later.

Usage: registry.py <sluice binary> <fixture dir of scripts/perf/small-model-load.sh> <cnn.onnx> <seconds per run> <rounds>
Prints a Markdown section.
"""
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

SLUICE, FIXTURE, CNN = sys.argv[1], sys.argv[2], sys.argv[3]
SECONDS, ROUNDS = int(sys.argv[4]), int(sys.argv[5])
CNN_TOML = "[session]\npool_size = 1\nintra_op_threads = 2\n"


def place(root, model, version, source):
    """Copies `source` to <root>/<model>/<version>/model.onnx atomically (written aside, renamed into place)."""
    target = os.path.join(root, model, str(version))
    staging = os.path.join(root, f".staging-{model}-{version}")
    os.makedirs(staging, exist_ok=True)
    shutil.copyfile(source, os.path.join(staging, "model.onnx"))
    if os.path.isdir(target):
        os.replace(os.path.join(staging, "model.onnx"), os.path.join(target, "model.onnx"))
        os.rmdir(staging)
    else:
        os.replace(staging, target)


class Server:
    def __init__(self, repo, port):
        env = dict(os.environ)
        env.update({
            "SLUICE__LOG__LEVEL": "warn",
            "SLUICE__MODELS__SETTLE_MS": "200",
            "SLUICE__MODELS__POLL_INTERVAL_MS": "200",
            "SLUICE__LIMITS__MAX_CONCURRENT_REQUESTS": "1024",
            "SLUICE__SERVER__SHUTDOWN_DELAY_MS": "0",
            "SLUICE__SERVER__GRPC_PORT": "0",
        })
        self.base = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [SLUICE, "--models", repo, "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.get("/v2/health/ready")[0] == 200:
                return
            time.sleep(0.05)
        raise SystemExit("sluice did not become ready")

    def get(self, path):
        try:
            with urllib.request.urlopen(self.base + path, timeout=30) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except OSError:
            return 0, b""

    def post(self, path, body):
        request = urllib.request.Request(self.base + path, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, r.read()

    def loads(self, model):
        text = self.get("/metrics")[1].decode()
        match = re.search(r'^sluice_model_load_duration_seconds_count\{model="%s"\} (\d+)' % model, text, re.M)
        return int(match.group(1)) if match else 0

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def wrk(url):
    out = subprocess.run(
        ["wrk", "-t2", "-c8", f"-d{SECONDS}s", "--latency", "-s", os.path.join(FIXTURE, "json.lua"), url],
        capture_output=True, text=True, check=True).stdout
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[p99.group(2)]
    failed = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "p99_ms": float(p99.group(1)) * scale,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "failed": (int(failed.group(1)) if failed else 0) + (sum(map(int, errors.groups())) if errors else 0),
    }


def reload_under_load(tmp):
    repo = os.path.join(tmp, "reload")
    shutil.copytree(os.path.join(FIXTURE, "repo"), repo)
    os.makedirs(os.path.join(repo, "cnn"))
    with open(os.path.join(repo, "cnn", "model.toml"), "w") as f:
        f.write(CNN_TOML)
    place(repo, "cnn", 1, CNN)
    server = Server(repo, 18471)
    url = server.base + "/v2/models/m/infer"
    steady, reloading, reloads = [], [], []
    try:
        wrk(url)  # warm-up run, not counted
        for _ in range(ROUNDS):
            steady.append(wrk(url))
            stop = threading.Event()

            def replace_every_2s():
                while not stop.wait(2.0):
                    place(repo, "cnn", 1, CNN)

            before = server.loads("cnn")
            thread = threading.Thread(target=replace_every_2s)
            thread.start()
            reloading.append(wrk(url))
            stop.set()
            thread.join()
            time.sleep(1.0)
            reloads.append(server.loads("cnn") - before)
    finally:
        server.stop()
    return steady, reloading, reloads


def first_requests(tmp, warmup, pause, swaps=8):
    """First and second request after each swap; `pause` seconds after the new version took over (0: at once, while
    the previous version is being released)."""
    repo = os.path.join(tmp, f"swap-{warmup}-{pause}")
    os.makedirs(os.path.join(repo, "cnn"))
    with open(os.path.join(repo, "cnn", "model.toml"), "w") as f:
        f.write(CNN_TOML + ("" if warmup else "[warmup]\nenabled = false\n"))
    place(repo, "cnn", 1, CNN)
    server = Server(repo, 18472 + int(warmup) + 2 * int(pause > 0))
    body = json.dumps({"inputs": [{"name": "input:0", "datatype": "FP32", "shape": [1, 224, 224, 3],
                                   "data": [0.5] * (224 * 224 * 3)}]}).encode()
    first, second = [], []
    try:
        server.post("/v2/models/cnn/infer", body)
        for version in range(2, 2 + swaps):
            place(repo, "cnn", version, CNN)
            while True:
                status, reply = server.get("/v2/models/cnn/ready")
                if status == 200 and json.loads(reply)["version"] == str(version):
                    break
                time.sleep(0.002)
            time.sleep(pause)
            for times in (first, second):
                started = time.perf_counter()
                status, _ = server.post("/v2/models/cnn/infer", body)
                times.append((time.perf_counter() - started) * 1e3)
                assert status == 200
    finally:
        server.stop()
    return first, second


def main():
    with tempfile.TemporaryDirectory() as tmp:
        steady, reloading, reloads = reload_under_load(tmp)
        swaps = {(w, p): first_requests(tmp, w, p) for p in (0.0, 0.5) for w in (True, False)}
    med = lambda runs, key: statistics.median(r[key] for r in runs)
    print(f"### Small-model latency while the CNN reloads every 2 s ({ROUNDS} interleaved rounds of {SECONDS} s)\n")
    print("| load | p99 per round (ms) | median p99 (ms) | median requests/s | failed requests |")
    print("|---|---|---:|---:|---:|")
    for name, runs in (("steady", steady), ("CNN reloaded every 2 s", reloading)):
        rounds = ", ".join(f"{r['p99_ms']:.2f}" for r in runs)
        failed = sum(r["failed"] for r in runs)
        print(f"| {name} | {rounds} | {med(runs, 'p99_ms'):.2f} | {med(runs, 'rps'):,.0f} | {failed} |")
    ratio = med(reloading, "p99_ms") / med(steady, "p99_ms")
    print(f"\np99 with reloads / steady p99: **{ratio:.2f}** (goal ≤ 2). CNN loads per reloading round: "
          f"{', '.join(map(str, reloads))}; small-model requests: "
          f"{sum(r['requests'] for r in steady + reloading):,}.\n")
    print("### First requests after a CNN version took over (8 swaps each)\n")
    print("| warmup | first request sent | first request, median (ms) | each swap (ms) | second request, median (ms) |")
    print("|---|---|---:|---|---:|")
    for (warmup, pause), (first, second) in swaps.items():
        each = ", ".join(f"{t:.0f}" for t in first)
        when = "at once" if pause == 0 else f"{pause:.1f} s later"
        print(f"| {'on' if warmup else 'off'} | {when} | {statistics.median(first):.1f} | {each} | "
              f"{statistics.median(second):.1f} |")


if __name__ == "__main__":
    main()
