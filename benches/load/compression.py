"""Where response compression pays: for iris responses of growing size, the server's CPU per request with and without
`Accept-Encoding: gzip` (wrk at c=8 for each, interleaved, the median of ROUNDS runs) and the bytes on the wire. Prints a
Markdown table with, per size, the link speed below which gzip saves more time sending than it costs in CPU.

usage: compression.py BIN [--rows 1,16,32,64,128,512,4096] [--rounds 3] [--seconds 3]

One sluice (BIN) on a repository holding iris GBT (2 sessions x 1 intra-op thread, as scripts/perf/bench.sh), with
`server.compress_min_bytes = 0` so every answer to a client that asks is compressed. Needs wrk (scripts/perf/ab.sh
installs it) and ORT_DYLIB_PATH.
"""

import argparse
import gzip
import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def body(rows):
    """Rows spread over iris's measurements (fixed seed), so the answers vary as real ones do."""
    rng = random.Random(7)
    data = [round(rng.uniform(low, high), 1) for _ in range(rows)
            for low, high in ((4.3, 7.9), (2.0, 4.4), (1.0, 6.9), (0.1, 2.5))]
    return json.dumps({"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [rows, 4], "data": data}]})


def response_bytes(url, payload, encoding):
    request = urllib.request.Request(url, data=payload.encode(), headers={
        "Content-Type": "application/json", "Accept-Encoding": encoding})
    with urllib.request.urlopen(request) as r:
        data = r.read()
        coded = r.headers.get("Content-Encoding")
    if encoding == "gzip":
        assert coded == "gzip", coded
        return len(data), len(gzip.decompress(data))
    return len(data), len(data)


def run_wrk(url, script, pid, seconds):
    """Requests/s and server CPU µs per request of one wrk run."""
    before = cpu_seconds(pid)
    out = subprocess.run(["wrk", "-t2", "-c8", f"-d{seconds}s", "-s", script, url],
                         capture_output=True, text=True, check=True).stdout
    used = cpu_seconds(pid) - before
    if "Non-2xx" in out or "Socket errors" in out:
        sys.exit("errors in the load run:\n" + out)
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    return requests / seconds, used * 1e6 / requests


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("bin")
    parser.add_argument("--rows", default="1,16,32,64,128,512,4096")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=3)
    args = parser.parse_args()
    work = tempfile.mkdtemp()
    os.makedirs(f"{work}/repo/m/1")
    shutil.copy(f"{ROOT}/models/iris/2/model.onnx", f"{work}/repo/m/1/")
    with open(f"{work}/repo/m/model.toml", "w") as f:
        f.write("[session]\npool_size = 2\nintra_op_threads = 1\n")
    port = free_port()
    env = dict(os.environ, SLUICE__LOG__LEVEL="warn", SLUICE__SERVER__COMPRESS_MIN_BYTES="0",
               SLUICE__LIMITS__MAX_CONCURRENT_REQUESTS="1024", SLUICE__SERVER__SHUTDOWN_DELAY_MS="0",
               SLUICE__SERVER__GRPC_PORT="0")
    server = subprocess.Popen([args.bin, "--models", f"{work}/repo", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v2/models/m/infer"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready")
                break
            except OSError:
                time.sleep(0.1)
        print("| rows | JSON bytes | gzip bytes | requests/s plain | gzip | CPU µs/request plain | gzip | gzip costs µs "
              "| saves bytes | pays below (Mbit/s) |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for rows in [int(r) for r in args.rows.split(",")]:
            payload = body(rows)
            with open(f"{work}/body.json", "w") as f:
                f.write(payload)
            scripts = {}
            for name, headers in (("plain", ""), ("gzip", 'wrk.headers["Accept-Encoding"] = "gzip, deflate"\n')):
                scripts[name] = f"{work}/{name}.lua"
                with open(scripts[name], "w") as f:
                    f.write(f'wrk.method = "POST"\nlocal f = io.open("{work}/body.json", "rb")\n'
                            f'wrk.body = f:read("*all")\nf:close()\n'
                            f'wrk.headers["Content-Type"] = "application/json"\n{headers}')
            plain_bytes, _ = response_bytes(url, payload, "identity")
            gzip_bytes, inflated = response_bytes(url, payload, "gzip")
            assert inflated == plain_bytes
            run_wrk(url, scripts["plain"], server.pid, 1)
            results = {"plain": [], "gzip": []}
            for r in range(args.rounds):
                order = ("plain", "gzip") if r % 2 == 0 else ("gzip", "plain")
                for name in order:
                    results[name].append(run_wrk(url, scripts[name], server.pid, args.seconds))
            rps = {k: statistics.median(x[0] for x in v) for k, v in results.items()}
            cpu = {k: statistics.median(x[1] for x in v) for k, v in results.items()}
            extra = cpu["gzip"] - cpu["plain"]
            saved = plain_bytes - gzip_bytes
            # Sending `saved` bytes at B Mbit/s takes saved * 8 / B µs: gzip pays when that exceeds its CPU cost.
            pays = f"{saved * 8 / extra:,.0f}" if extra > 0 and saved > 0 else ("always" if saved > 0 else "never")
            print(f"| {rows} | {plain_bytes:,} | {gzip_bytes:,} | {rps['plain']:,.0f} | {rps['gzip']:,.0f} "
                  f"| {cpu['plain']:.1f} | {cpu['gzip']:.1f} | {extra:.1f} | {saved:,} | {pays} |", flush=True)
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
