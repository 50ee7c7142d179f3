"""The memory burst: N concurrent large V2 JSON requests to iris (ROWS x 4 FP32 each, about 15 bytes a row) while a
small client sends one-row requests, against a sluice binary on the example models; optionally inside a cgroup
memory limit. Prints one Markdown row: idle RSS, peak RSS (VmHWM), RSS 30 s after the burst, the cgroup's peak
usage, and the answers of both clients.

usage: memory.py BIN MODELS [--concurrency 24] [--rows 3000000] [--limit-mib 0] [--label text] [--env K=V ...]

Stdlib only. The cgroup (v1 memory controller or v2 memory.max) needs root; the group is removed afterwards.
"""

import argparse
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cgroup:
    """A child memory cgroup with a hard limit: v2 (memory.max) if mounted, else v1 (memory.limit_in_bytes)."""

    def __init__(self, limit_bytes):
        name = f"sluice-bench-{os.getpid()}"
        v2 = "/sys/fs/cgroup/cgroup.controllers"
        if os.path.exists(v2) and "memory" in open(v2).read().split():
            self.path = f"/sys/fs/cgroup/{name}"
            self.limit_file, self.peak_file = "memory.max", "memory.peak"
        else:
            self.path = f"/sys/fs/cgroup/memory/{name}"
            self.limit_file, self.peak_file = "memory.limit_in_bytes", "memory.max_usage_in_bytes"
        os.mkdir(self.path)
        self.write(self.limit_file, str(limit_bytes))
        if self.limit_file == "memory.limit_in_bytes":
            self.write("memory.memsw.limit_in_bytes", str(limit_bytes), optional=True)

    def write(self, name, value, optional=False):
        try:
            with open(os.path.join(self.path, name), "w") as f:
                f.write(value)
        except OSError:
            if not optional:
                raise

    def read(self, name):
        try:
            with open(os.path.join(self.path, name)) as f:
                return f.read()
        except OSError:
            return ""

    def enter(self):
        """Run in the child before exec: move it into the group."""
        self.write("cgroup.procs", str(os.getpid()))

    def peak(self):
        value = self.read(self.peak_file).strip()
        return int(value) if value else None

    def oom_kills(self):
        for line in self.read("memory.events").splitlines() + self.read("memory.oom_control").splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def remove(self):
        for _ in range(50):
            try:
                os.rmdir(self.path)
                return
            except OSError:
                time.sleep(0.1)


def rss_kib(pid, field="VmRSS"):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def post(port, path, body, timeout=120):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        # What Python's requests sends.
        conn.request("POST", path, body=body, headers={
            "Content-Type": "application/json", "Accept-Encoding": "gzip, deflate", "Accept": "*/*"})
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException) as e:
        return type(e).__name__
    finally:
        conn.close()


def large_body(rows):
    rng = random.Random(7)
    values = ",".join(f"{rng.uniform(0.1, 7.9):.1f}" for _ in range(rows * 4))
    return ('{"inputs":[{"name":"float_input","datatype":"FP32","shape":[%d,4],"data":[%s]}]}' % (rows, values)).encode()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("bin")
    parser.add_argument("models")
    parser.add_argument("--concurrency", type=int, default=24)
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--limit-mib", type=int, default=0)
    parser.add_argument("--label", default="")
    parser.add_argument("--env", action="append", default=[])
    args = parser.parse_args()

    body = large_body(args.rows)
    small = json.dumps({"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1, 4],
                                    "data": [5.1, 3.5, 1.4, 0.2]}]}).encode()
    port = free_port()
    env = dict(os.environ, SLUICE__SERVER__PORT=str(port), SLUICE__MODELS__REPOSITORY=args.models,
               SLUICE__MODELS__WATCH="false", RUST_LOG="warn",
               SLUICE__SERVER__GRPC_PORT="0")
    for pair in args.env:
        key, _, value = pair.partition("=")
        env[key] = value
    cgroup = Cgroup(args.limit_mib << 20) if args.limit_mib else None
    try:
        server = subprocess.Popen([args.bin], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  preexec_fn=cgroup.enter if cgroup else None)
        deadline = time.time() + 60
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/v2/health/ready")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline or server.poll() is not None:
                sys.exit("sluice did not become ready")
            time.sleep(0.1)
        for _ in range(20):
            post(port, "/v2/models/iris/infer", small)
        time.sleep(2)
        idle = rss_kib(server.pid)

        stop = threading.Event()
        small_statuses = []

        def small_client():
            while not stop.is_set():
                small_statuses.append(post(port, "/v2/models/iris/infer", small, timeout=60))
                time.sleep(0.01)

        samples = []

        def sampler():
            while not stop.is_set():
                value = rss_kib(server.pid)
                if value:
                    samples.append(value)
                time.sleep(0.02)

        statuses = [None] * args.concurrency

        def large_client(i):
            statuses[i] = post(port, "/v2/models/iris/infer", body)

        helpers = [threading.Thread(target=small_client), threading.Thread(target=sampler)]
        for t in helpers:
            t.start()
        started = time.time()
        burst = [threading.Thread(target=large_client, args=(i,)) for i in range(args.concurrency)]
        for t in burst:
            t.start()
        for t in burst:
            t.join()
        took = time.time() - started
        time.sleep(0.5)
        stop.set()
        for t in helpers:
            t.join()
        alive = server.poll() is None
        peak = rss_kib(server.pid, "VmHWM") if alive else max(samples, default=0)
        after = {}
        ended = started + took
        if alive:
            for at in (1, 5, 10, 30):
                time.sleep(max(0.0, ended + at - time.time()))
                after[at] = rss_kib(server.pid)
        cg_peak = cgroup.peak() if cgroup else None
        oom = cgroup.oom_kills() if cgroup else 0
        server.terminate()
        server.wait(timeout=30)
    finally:
        if cgroup:
            try:
                server.kill()
                server.wait()
            except Exception:
                pass
            cgroup.remove()

    def count(values):
        out = {}
        for v in values:
            out[v] = out.get(v, 0) + 1
        return ", ".join(f"{k}: {n}" for k, n in sorted(out.items(), key=lambda kv: str(kv[0])))

    mib = lambda kib: f"{kib / 1024:.0f}" if kib else "-"
    print("| build | limit | body | idle RSS MiB | peak RSS MiB | cgroup peak MiB | RSS +1 s | +10 s | +30 s "
          "| large answers | small answers | alive | OOM kills | burst s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|---:|---:|")
    print(f"| {args.label} | {args.limit_mib or 'none'} MiB | {len(body) / 1e6:.0f} MB | {mib(idle)} | {mib(peak)} "
          f"| {f'{cg_peak / 2**20:.0f}' if cg_peak else '-'} | {mib(after.get(1))} | {mib(after.get(10))} "
          f"| {mib(after.get(30))} | {count(statuses)} | {count(small_statuses)} | {'yes' if alive else 'NO'} "
          f"| {oom} | {took:.1f} |")


if __name__ == "__main__":
    main()
