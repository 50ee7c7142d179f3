#!/usr/bin/env bash
# What tracing costs (#28): the small model (iris GBT, 1×4 FP32, 2 sessions × 1 thread, as scripts/perf/bench.sh) at
# c = 8, served by three sluice processes at once: tracing off, on with 1 % sampling, on with 100 % sampling. Each
# round drives each in turn with `wrk -t2 -c8` for BENCH_SECONDS (default 5) with the headers Python's requests
# sends (Accept-Encoding: gzip, deflate; Content-Type: application/json) and no traceparent, so the ratio decides.
# The spans go to an OTLP/HTTP endpoint where nothing listens: each export is built and sent and fails at once, so
# the figures are sluice's own cost (spans, queue, protobuf encoding) without a collector competing for the two
# cores. Prints requests/s and the server's CPU time per request (utime + stime from /proc) per round, and the
# medians' ratios to tracing off. The order rotates from round to round.
#   scripts/perf/tracing.sh            # BENCH_ROUNDS (default 5) rounds
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
# shellcheck source=scripts/perf/small-model-load.sh
source scripts/perf/small-model-load.sh
install_load_tools
export ORT_DYLIB_PATH="$root/.ort/libonnxruntime.so.1.32.0"
cargo build --quiet --profile pgo --bin sluice
bin="$root/target/pgo/sluice"
rounds="${BENCH_ROUNDS:-5}"
seconds="${BENCH_SECONDS:-5}"

work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
small_model_fixture "$work"
printf 'wrk.headers["Accept-Encoding"] = "gzip, deflate"\n' >> "$work/json.lua"

port=18900
declare -A ports pids
serve() { # <name> <env...>
  local name="$1"; shift
  port=$((port + 1))
  env "$@" SLUICE__SERVER__GRPC_PORT=0 SLUICE__LOG__LEVEL=warn "$bin" --models "$work/repo" --host 127.0.0.1 \
    --port "$port" > "$work/$name.log" 2>&1 &
  until curl -sf "http://127.0.0.1:$port/v2/health/ready" >/dev/null; do
    kill -0 $! 2>/dev/null || { cat "$work/$name.log" >&2; exit 1; }
    sleep 0.05
  done
  ports[$name]=$port
  pids[$name]=$!
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tick_us=$((1000000 / $(getconf CLK_TCK)))
collector="http://127.0.0.1:9/v1/traces"
serve off
serve ratio_1 SLUICE__TRACING__ENABLED=true SLUICE__TRACING__ENDPOINT="$collector" SLUICE__TRACING__SAMPLE_RATIO=0.01
serve ratio_100 SLUICE__TRACING__ENABLED=true SLUICE__TRACING__ENDPOINT="$collector" SLUICE__TRACING__SAMPLE_RATIO=1

names=(off ratio_1 ratio_100)
declare -A results cpu
for r in $(seq 1 "$rounds"); do
  line="round $r:"
  # Each round starts with the next configuration: the slot a server is measured in biases it by a few per cent.
  order=("${names[@]:$((r % 3))}" "${names[@]:0:$((r % 3))}")
  for name in "${order[@]}"; do
    url="http://127.0.0.1:${ports[$name]}/v2/models/m/infer"
    before=$(cpu_ticks "${pids[$name]}")
    out=$(wrk -t2 -c8 -d"${seconds}s" -s "$work/json.lua" "$url")
    after=$(cpu_ticks "${pids[$name]}")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    total=$(awk '/requests in/ {print $1}' <<<"$out")
    us=$(python3 -c "print(f'{($after - $before) * $tick_us / $total:.2f}')")
    results[$name]+="$rps "
    cpu[$name]+="$us "
    line+=" $name $rps req/s ${us} µs CPU/req;"
  done
  echo "$line"
done
for name in "${names[@]}"; do
  dropped=$(curl -s "http://127.0.0.1:${ports[$name]}/metrics" | awk '/^sluice_trace_spans_dropped_total/ {s += $2} END {print s + 0}')
  echo "$name: dropped spans $dropped"
done
python3 - "${results[off]}" "${results[ratio_1]}" "${results[ratio_100]}" "${cpu[off]}" "${cpu[ratio_1]}" "${cpu[ratio_100]}" <<'EOF'
import statistics, sys
off, one, full, c_off, c_one, c_full = ([float(x) for x in arg.split()] for arg in sys.argv[1:])
m = statistics.median
print(f"median requests/s: off {m(off):.0f}, 1 % {m(one):.0f} ({m(one) / m(off):.3f}x), "
      f"100 % {m(full):.0f} ({m(full) / m(off):.3f}x)")
print(f"median CPU µs/request: off {m(c_off):.2f}, 1 % {m(c_one):.2f} ({m(c_off) / m(c_one):.3f}x the requests per "
      f"CPU second), 100 % {m(c_full):.2f} ({m(c_off) / m(c_full):.3f}x)")
EOF
