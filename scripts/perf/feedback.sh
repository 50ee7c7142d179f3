#!/usr/bin/env bash
# What outcome feedback costs (#29): the small model (iris GBT, 1×4 FP32, 2 sessions × 1 thread, as
# scripts/perf/bench.sh) at c = 8, served by two sluice processes at once: its model.toml without and with a
# [feedback] table (label + probabilities kept for every request, under the x-request-id sluice generates, in a store
# capped at feedback.max_pending = 100,000, so the run also exercises eviction). Each round drives each in turn with
# `wrk -t2 -c8` for BENCH_SECONDS (default 5) with the headers Python's requests sends (Accept-Encoding: gzip,
# deflate; Content-Type: application/json). Prints requests/s and the server's CPU time per request per round, and
# the medians' ratios. The order alternates from round to round.
#   scripts/perf/feedback.sh            # BENCH_ROUNDS (default 6) rounds
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
# shellcheck source=scripts/perf/small-model-load.sh
source scripts/perf/small-model-load.sh
install_load_tools
export ORT_DYLIB_PATH="$root/.ort/libonnxruntime.so.1.32.0"
cargo build --quiet --profile pgo --bin sluice
bin="$root/target/pgo/sluice"
rounds="${BENCH_ROUNDS:-6}"
seconds="${BENCH_SECONDS:-5}"

work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
small_model_fixture "$work"
printf 'wrk.headers["Accept-Encoding"] = "gzip, deflate"\n' >> "$work/json.lua"
cp -r "$work/repo" "$work/repo_on"
printf '[feedback]\ntask = "classification"\nlabel_output = "label"\nscore_output = "probabilities"\n' \
  >> "$work/repo_on/m/model.toml"

port=18950
declare -A ports pids
serve() { # <name> <repo>
  local name="$1"
  port=$((port + 1))
  SLUICE__SERVER__GRPC_PORT=0 SLUICE__LOG__LEVEL=warn "$bin" --models "$2" --host 127.0.0.1 --port "$port" \
    > "$work/$name.log" 2>&1 &
  until curl -sf "http://127.0.0.1:$port/v2/health/ready" >/dev/null; do
    kill -0 $! 2>/dev/null || { cat "$work/$name.log" >&2; exit 1; }
    sleep 0.05
  done
  ports[$name]=$port
  pids[$name]=$!
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tick_us=$((1000000 / $(getconf CLK_TCK)))
serve off "$work/repo"
serve on "$work/repo_on"

names=(off on)
declare -A results cpu
for r in $(seq 1 "$rounds"); do
  line="round $r:"
  order=("${names[@]:$((r % 2))}" "${names[@]:0:$((r % 2))}")
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
curl -s "http://127.0.0.1:${ports[on]}/metrics" | grep '^sluice_feedback_predictions' || true
python3 - "${results[off]}" "${results[on]}" "${cpu[off]}" "${cpu[on]}" <<'PY'
import statistics, sys
off, on, c_off, c_on = ([float(x) for x in arg.split()] for arg in sys.argv[1:])
m = statistics.median
print(f"median requests/s: off {m(off):.0f}, on {m(on):.0f} ({m(on) / m(off):.3f}x)")
print(f"median CPU µs/request: off {m(c_off):.2f}, on {m(c_on):.2f}")
PY
