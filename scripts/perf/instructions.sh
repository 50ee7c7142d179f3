#!/usr/bin/env bash
# Instructions a request costs the server, counted by valgrind's callgrind: a count, not a time, so it comes out the
# same on every run whatever else the machine is doing. The small model (scripts/perf/small-model-load.sh's
# fixture) served by sluice's release build as it is; with outcome feedback on (#29: a [feedback] table, label and
# probabilities kept, feedback.max_pending = 1,000 so that every counted request also pushes the oldest prediction
# out); with tracing on at 1 % and at 100 % sampling (#28, spans sent where nothing listens, as
# scripts/perf/tracing.sh). Each server first answers 2,000 requests uncounted, then BENCH_REQUESTS (default 3,000)
# counted, one after another on one keep-alive connection with the headers Python's requests sends. Prints the
# instructions a request for each, against the first, and with feedback on the part spent keeping the prediction
# (AnswerObserver::answered). Every thread of the server counts (the span exporter's too).
#   scripts/perf/instructions.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
# shellcheck source=scripts/perf/small-model-load.sh
source scripts/perf/small-model-load.sh
scripts/fetch-onnxruntime.sh
scripts/lib/debian-install.sh valgrind=valgrind
export ORT_DYLIB_PATH="$PWD/.ort/libonnxruntime.so.1.32.0" LC_ALL=C.UTF-8
cargo build --quiet --release --bin sluice
requests="${BENCH_REQUESTS:-3000}"
work="$(mktemp -d)"
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT
small_model_fixture "$work"
cp -r "$work/repo" "$work/repo_on"
printf '[feedback]\ntask = "classification"\nlabel_output = "label"\nscore_output = "probabilities"\n' \
  >> "$work/repo_on/m/model.toml"
cat > "$work/client.py" <<'PY'
import http.client, sys
port, n, body = int(sys.argv[1]), int(sys.argv[2]), open(sys.argv[3], "rb").read()
headers = {"Content-Type": "application/json", "Accept-Encoding": "gzip, deflate", "Accept": "*/*",
           "User-Agent": "python-requests/2.32.3", "Connection": "keep-alive"}
c = http.client.HTTPConnection("127.0.0.1", port)
for _ in range(n):
    c.request("POST", "/v2/models/m/infer", body, headers)
    r = c.getresponse()
    answer = r.read()
    if r.status != 200:
        sys.exit(f"status {r.status}: {answer!r}")
PY

port=18989
baseline=""
# Counts <requests> requests to the server of <repo> started with the environment <env...>; prints the instructions
# a request.
count() { # <name> <repo> [env...]
  local name="$1" repo="$2" out
  shift 2
  port=$((port + 1))
  out="$work/$port.callgrind"
  env "$@" SLUICE__SERVER__GRPC_PORT=0 SLUICE__LOG__LEVEL=warn SLUICE__FEEDBACK__MAX_PENDING=1000 \
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" target/release/sluice \
    --models "$repo" --host 127.0.0.1 --port "$port" > "$work/$port.log" 2>&1 &
  pid=$!
  until curl -sf "http://127.0.0.1:$port/v2/health/ready" > /dev/null; do
    kill -0 "$pid" 2>/dev/null || { cat "$work/$port.log" >&2; exit 1; }
    sleep 0.5
  done
  python3 "$work/client.py" "$port" 2000 "$work/json.body"
  callgrind_control -i on "$pid" > /dev/null 2>&1
  python3 "$work/client.py" "$port" "$requests" "$work/json.body"
  callgrind_control -i off "$pid" > /dev/null 2>&1
  callgrind_control -d "$pid" > /dev/null 2>&1
  kill "$pid"
  wait "$pid" || true
  pid=""
  local dump
  dump="$(ls "$out".* | tail -1)"
  local per_request
  per_request="$(callgrind_annotate --inclusive=yes "$dump" 2> /dev/null | python3 -c '
import re, sys
name, n, baseline = sys.argv[1], int(sys.argv[2]), sys.argv[3]
total = keep = 0
for line in sys.stdin:
    m = re.match(r"\s*([\d,]+) \(", line)
    if not m:
        continue
    ir = int(m.group(1).replace(",", ""))
    if "PROGRAM TOTALS" in line:
        total = ir
    elif "AnswerObserver>::answered" in line and "=>" not in line and not keep:
        keep = ir
against = f" ({total / n / float(baseline):.4f}× the first)" if baseline else ""
kept = f", of which keeping the prediction {keep / n:,.0f}" if keep else ""
print(f"{total / n:.0f}")
print(f"{name}: {total / n:,.0f} instructions a request{against}{kept}", file=sys.stderr)
' "$name" "$requests" "$baseline")"
  baseline="${baseline:-$per_request}"
}

collector="http://127.0.0.1:9/v1/traces"
count "off" "$work/repo"
count "feedback on" "$work/repo_on"
count "tracing, 1 % sampled" "$work/repo" SLUICE__TRACING__ENABLED=true SLUICE__TRACING__ENDPOINT="$collector" \
  SLUICE__TRACING__SAMPLE_RATIO=0.01
count "tracing, 100 % sampled" "$work/repo" SLUICE__TRACING__ENABLED=true SLUICE__TRACING__ENDPOINT="$collector" \
  SLUICE__TRACING__SAMPLE_RATIO=1
