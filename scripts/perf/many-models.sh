#!/usr/bin/env bash
# The many-models benchmark (#27): 1,000 lazy models (hard links of the iris classifier, m0000…m0999) under
# models.max_loaded_models = 50, requests spread by Zipf (s = 1.1) at c = 8 (benches/load/zipf.rs): start-to-ready
# time, hit ratio, latencies of hits and of requests that waited for a load, resident memory against the cap. Then
# the hit path's cost: the 50 most requested models resident, lazy against the same 50 as a plain (eager)
# repository, interleaved runs of the same traffic.
#   scripts/perf/many-models.sh            # BENCH_REQUESTS (default 40000) per run, BENCH_REPEATS (3) rounds,
#                                          # BENCH_HIT_REQUESTS (200000) per hit-path run
#   BENCH_MAX_BYTES=268435456 scripts/perf/many-models.sh   # cap the 1,000 by models.max_loaded_bytes instead
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
scripts/fetch-onnxruntime.sh >/dev/null
export ORT_DYLIB_PATH="$root/.ort/libonnxruntime.so.1.32.0"
cargo build --quiet --profile pgo --bin sluice --example zipf
bin="$root/target/pgo/sluice"
zipf="$root/target/pgo/examples/zipf"
requests="${BENCH_REQUESTS:-40000}"
repeats="${BENCH_REPEATS:-3}"
hit_requests="${BENCH_HIT_REQUESTS:-200000}"
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

make_repo() { # <dir> <count>
  mkdir -p "$1"
  for i in $(seq 0 $(($2 - 1))); do
    d="$1/$(printf 'm%04d' "$i")/1"
    mkdir -p "$d"
    ln "$root/models/iris/2/model.onnx" "$d/model.onnx" 2>/dev/null || cp "$root/models/iris/2/model.onnx" "$d/model.onnx"
  done
}

port="${BENCH_PORT:-18700}"
serve() { # <repo> <extra env...>: starts sluice on the next port and waits until ready; sets pid and ready_ms
  local repo="$1"; shift
  port=$((port + 1))
  local started; started=$(date +%s%N)
  env "$@" SLUICE__SERVER__GRPC_PORT=0 SLUICE__LOG__LEVEL=warn "$bin" --models "$repo" --host 127.0.0.1 --port "$port" \
    > "$work/server-$port.log" 2>&1 &
  pid=$!
  until curl -sf "http://127.0.0.1:$port/v2/health/ready" >/dev/null; do
    kill -0 "$pid" 2>/dev/null || { cat "$work/server-$port.log" >&2; exit 1; }
    sleep 0.01
  done
  ready_ms=$(( ($(date +%s%N) - started) / 1000000 ))
}

rss_mib() { echo $(( $(awk '/VmRSS/ {print $2}' "/proc/$1/status") / 1024 )); }

make_repo "$work/many" 1000
make_repo "$work/fifty" 50

if [ -n "${BENCH_MAX_BYTES:-}" ]; then
  cap="SLUICE__MODELS__MAX_LOADED_BYTES=$BENCH_MAX_BYTES"
else
  cap="SLUICE__MODELS__MAX_LOADED_MODELS=50"
fi
echo "== 1,000 lazy models, ${cap#SLUICE__MODELS__}, Zipf s = 1.1, c = 8, $requests requests per run"
serve "$work/many" SLUICE__MODELS__DEFAULT_LOAD=lazy "$cap"
echo "start to ready: ${ready_ms} ms; RSS at ready: $(rss_mib "$pid") MiB"
for r in $(seq 1 "$repeats"); do
  "$zipf" "http://127.0.0.1:$port" 1000 8 "$requests" 1.1 "$r"
  echo "RSS: $(rss_mib "$pid") MiB; resident: $(curl -s "http://127.0.0.1:$port/metrics" | awk '/^sluice_models_resident /{print $2} /^sluice_models_resident_bytes /{print $2, "bytes"}' | paste -sd' ')"
done
kill "$pid"; wait "$pid" 2>/dev/null || true

echo "== hit path: 50 models resident, lazy vs eager, Zipf over the 50, c = 8, interleaved"
serve "$work/fifty" SLUICE__MODELS__DEFAULT_LOAD=lazy
lazy_port=$port
"$zipf" "http://127.0.0.1:$lazy_port" 50 8 2000 0.0 >/dev/null   # every model loaded once
serve "$work/fifty"
eager_port=$port
for r in $(seq 1 "$repeats"); do
  printf 'lazy  '; "$zipf" "http://127.0.0.1:$lazy_port" 50 8 "$hit_requests" 1.1 "$r"
  printf 'eager '; "$zipf" "http://127.0.0.1:$eager_port" 50 8 "$hit_requests" 1.1 "$r"
done
