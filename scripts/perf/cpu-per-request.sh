#!/usr/bin/env bash
# CPU time per request, sluice against the bare axum handler, on the small model (iris GBT, 1×4 FP32; 2 sessions × 1
# intra-op thread, as in scripts/perf/bench.sh). Each server runs on 127.0.0.1 in turn; wrk drives it for 5 s at
# concurrency 8 (or 1) while `perf stat` counts the server's task-clock and context switches and wrk's own
# task-clock; the script prints them per request. This is the figure the load benchmark's throughput follows when the
# machine is CPU-bound. Three set-ups: `shared` (server and wrk on both cores, as in scripts/perf/bench.sh), `pinned` (server on CPU
# 0, one wrk thread on CPU 1), which shows each server's own cost without the load generator on its cores, and `c=1`
# (one connection, cores shared), where the server idles between requests as in the benchmark's latency points.
# Measures the benchmark's builds (scripts/build-release.sh --examples, which it runs); installs wrk and perf from
# Debian.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

# shellcheck source=scripts/perf/small-model-load.sh
source scripts/perf/small-model-load.sh
install_load_tools
scripts/build-release.sh --examples

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
small_model_fixture "$work"

port=18097
measure() { # set-up name url lua pid
  local placement="$1" name="$2" url="$3" lua="$4" pid="$5" load=(wrk -t2 -c8)
  [ "$placement" = pinned ] && load=(taskset -c 1 wrk -t1 -c8)
  [ "$placement" = c=1 ] && load=(wrk -t1 -c1)
  for _ in $(seq 200); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
  "${load[@]}" -d2s -s "$lua" "$url" >/dev/null
  perf stat -e task-clock -o "$work/wrkstat.out" -- "${load[@]}" -d5s -s "$lua" "$url" > "$work/wrk.out" &
  local w=$!
  sleep 0.25
  perf stat -e task-clock,context-switches -p "$pid" -o "$work/stat.out" -- sleep 4.5
  wait "$w"
  python3 - "$placement" "$name" "$work/wrk.out" "$work/stat.out" "$work/wrkstat.out" <<'EOF'
import re, sys
placement, name = sys.argv[1], sys.argv[2]
wrk, stat, wrkstat = (open(f).read() for f in sys.argv[3:6])
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", wrk).group(1))
ms = float(re.search(r"([\d,.]+)\s+msec task-clock", stat).group(1).replace(",", ""))
cs = float(re.search(r"([\d,]+)\s+context-switches", stat).group(1).replace(",", ""))
wrk_ms = float(re.search(r"([\d,.]+)\s+msec task-clock", wrkstat).group(1).replace(",", ""))
n = rps * 4.5
print(f"{placement:7} {name:7} {rps:9.0f} requests/s   server {ms * 1000 / n:5.1f} µs CPU/request, "
      f"{cs / n:4.2f} context switches/request   wrk {wrk_ms * 1000 / (rps * 5):5.1f} µs CPU/request")
EOF
}

for placement in shared pinned c=1; do
  server=()
  [ "$placement" = pinned ] && server=(taskset -c 0)
  SLUICE__LOG__LEVEL=warn SLUICE__LIMITS__MAX_CONCURRENT_REQUESTS=1024 SLUICE__LIMITS__MAX_QUEUE_PER_VERSION=1024 SLUICE__SERVER__GRPC_PORT=0 \
    "${server[@]}" target/pgo/sluice --models "$work/repo" --host 127.0.0.1 --port "$port" >/dev/null 2>&1 &
  pid=$!
  measure "$placement" sluice "http://127.0.0.1:$port/v2/models/m/infer" "$work/json.lua" "$pid"
  kill "$pid"; wait "$pid" 2>/dev/null || true

  "${server[@]}" target/pgo/examples/bare models/iris/2/model.onnx "$port" 1,4 2 1 inline >/dev/null 2>&1 &
  pid=$!
  measure "$placement" bare "http://127.0.0.1:$port/infer" "$work/raw.lua" "$pid"
  kill "$pid"; wait "$pid" 2>/dev/null || true
done
