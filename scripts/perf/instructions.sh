#!/usr/bin/env bash
# Instructions a request costs the server, counted by valgrind's callgrind: a count, not a time, so it comes out the
# same on every run whatever else the machine is doing. The small model (scripts/perf/small-model-load.sh's
# fixture), release builds. Each server first answers 2,000 requests uncounted, then BENCH_REQUESTS (default 3,000)
# counted, one after another on one keep-alive connection (HTTP with the headers Python's requests sends; gRPC as
# ModelInfer calls with the input as raw_input_contents, as Triton's clients send it, from h2load). Prints the
# instructions a request for each, against the first. Every thread of the server counts (the span exporter's too).
#   scripts/perf/instructions.sh [costs]   sluice as it is; with outcome feedback on (#29: a [feedback] table, label
#       and probabilities kept, feedback.max_pending = 1,000 so that every counted request also pushes the oldest
#       prediction out; the part spent keeping the prediction, AnswerObserver::answered, is shown); with tracing on
#       at 1 % and at 100 % sampling (#28, spans sent where nothing listens, as scripts/perf/tracing.sh).
#   scripts/perf/instructions.sh transports   each transport against its floor: sluice's V2 JSON route and the bare
#       axum handler (benches/load/bare.rs), sluice's gRPC ModelInfer and the bare tonic handler
#       (benches/load/bare_grpc.rs), the floors built as the load benchmark builds them but without the profile.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
# shellcheck source=scripts/perf/small-model-load.sh
source scripts/perf/small-model-load.sh
scripts/fetch-onnxruntime.sh
scripts/lib/debian-install.sh valgrind=valgrind
export ORT_DYLIB_PATH="$PWD/.ort/libonnxruntime.so.1.32.0" LC_ALL=C.UTF-8
set_name="${1:-costs}"
case "$set_name" in
  costs) cargo build --quiet --release --bin sluice ;;
  transports)
    scripts/lib/debian-install.sh h2load=nghttp2-client
    cargo build --quiet --release --bin sluice --example bare --example bare_grpc
    ;;
  *) echo "usage: $0 [costs|transports]" >&2; exit 64 ;;
esac
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
port, n, body, path = int(sys.argv[1]), int(sys.argv[2]), open(sys.argv[3], "rb").read(), sys.argv[4]
headers = {"Content-Type": "application/json", "Accept-Encoding": "gzip, deflate", "Accept": "*/*",
           "User-Agent": "python-requests/2.32.3", "Connection": "keep-alive"}
c = http.client.HTTPConnection("127.0.0.1", port)
for _ in range(n):
    c.request("POST", path, body, headers)
    r = c.getresponse()
    answer = r.read()
    if r.status != 200:
        sys.exit(f"status {r.status}: {answer!r}")
PY

# ModelInfer for the fixture's model as a gRPC frame (a 0 byte, the length as 4 big-endian bytes, the protobuf
# message: model_name = 1, inputs = 5 with name = 1, datatype = 2, shape = 3; raw_input_contents = 7).
python3 - "$work" <<'PY'
import struct, sys
work = sys.argv[1]
def field(number, payload):
    return bytes([number << 3 | 2, len(payload)]) + payload
tensor = field(1, b"float_input") + field(2, b"FP32") + field(3, bytes([1, 4]))
message = field(1, b"m") + field(5, tensor) + field(7, open(f"{work}/raw.body", "rb").read())
open(f"{work}/grpc.body", "wb").write(b"\0" + struct.pack(">I", len(message)) + message)
PY

port=18989
baseline=""
# Sends <n> requests of <load> (json: the V2 JSON route; raw: the bare axum handler's; grpc: ModelInfer) to <port>.
load() { # <load> <port> <n>
  case "$1" in
    json) python3 "$work/client.py" "$2" "$3" "$work/json.body" /v2/models/m/infer ;;
    raw) python3 "$work/client.py" "$2" "$3" "$work/raw.body" /infer ;;
    grpc)
      h2load -c1 -m1 -t1 -n "$3" -d "$work/grpc.body" -H 'content-type: application/grpc' -H 'te: trailers' \
        "http://127.0.0.1:$2/inference.GRPCInferenceService/ModelInfer" > "$work/h2load.out"
      grep -q "$3 succeeded" "$work/h2load.out" || { cat "$work/h2load.out" >&2; exit 1; }
      ;;
  esac
}

# Counts <requests> requests of <load> (see `load`) to the server that <command...> starts, with the environment
# <VAR=value...>, on the port it is given as {port} (sluice: HTTP there, gRPC on the next); prints the instructions
# a request.
count() { # <name> <load> [VAR=value...] -- <command...>
  local name="$1" kind="$2" out environment=()
  shift 2
  while [ "$1" != -- ]; do
    environment+=("$1")
    shift
  done
  shift
  port=$((port + 2))
  out="$work/$port.callgrind"
  local command=("${@//\{port\}/$port}")
  env "${environment[@]}" SLUICE__SERVER__GRPC_PORT=$((port + 1)) SLUICE__LOG__LEVEL=warn \
    SLUICE__FEEDBACK__MAX_PENDING=1000 valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" "${command[@]}" \
    > "$work/$port.log" 2>&1 &
  pid=$!
  local target="$port"
  if [ "${command[0]}" = target/release/sluice ]; then
    [ "$kind" = grpc ] && target=$((port + 1))
    until curl -sf "http://127.0.0.1:$port/v2/health/ready" > /dev/null; do
      kill -0 "$pid" 2>/dev/null || { cat "$work/$port.log" >&2; exit 1; }
      sleep 0.5
    done
  else
    until (exec 3<>"/dev/tcp/127.0.0.1/$target") 2>/dev/null; do
      kill -0 "$pid" 2>/dev/null || { cat "$work/$port.log" >&2; exit 1; }
      sleep 0.5
    done
  fi
  if [ "$kind" = grpc ]; then
    # h2load sees HTTP statuses only: one call with curl, which shows the trailers, must succeed.
    curl -s --http2-prior-knowledge -D - -o /dev/null --data-binary "@$work/grpc.body" \
      -H 'content-type: application/grpc' -H 'te: trailers' \
      "http://127.0.0.1:$target/inference.GRPCInferenceService/ModelInfer" | grep -q 'grpc-status: 0' \
      || { echo "$name: the ModelInfer call failed" >&2; exit 1; }
  fi
  load "$kind" "$target" 2000
  callgrind_control -i on "$pid" > /dev/null 2>&1
  load "$kind" "$target" "$requests"
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

sluice=(target/release/sluice --host 127.0.0.1 --port "{port}" --models)
if [ "$set_name" = transports ]; then
  floor=(models/iris/2/model.onnx "{port}" 1,4 2 1 inline)
  count "sluice V2 JSON" json -- "${sluice[@]}" "$work/repo"
  count "bare axum handler" raw -- target/release/examples/bare "${floor[@]}"
  count "sluice gRPC ModelInfer" grpc -- "${sluice[@]}" "$work/repo"
  count "bare tonic handler" grpc -- target/release/examples/bare_grpc "${floor[@]}"
  exit 0
fi

collector="http://127.0.0.1:9/v1/traces"
count "off" json -- "${sluice[@]}" "$work/repo"
count "feedback on" json -- "${sluice[@]}" "$work/repo_on"
count "tracing, 1 % sampled" json SLUICE__TRACING__ENABLED=true SLUICE__TRACING__ENDPOINT="$collector" \
  SLUICE__TRACING__SAMPLE_RATIO=0.01 -- "${sluice[@]}" "$work/repo"
count "tracing, 100 % sampled" json SLUICE__TRACING__ENABLED=true SLUICE__TRACING__ENDPOINT="$collector" \
  SLUICE__TRACING__SAMPLE_RATIO=1 -- "${sluice[@]}" "$work/repo"
