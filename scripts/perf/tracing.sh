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
rounds="${BENCH_ROUNDS:-5}"
seconds="${BENCH_SECONDS:-5}"
ab_prepare 18900

collector="http://127.0.0.1:9/v1/traces"
serve_as off "$work/repo"
serve_as ratio_1 "$work/repo" SLUICE__TRACING__ENABLED=true SLUICE__TRACING__ENDPOINT="$collector" \
  SLUICE__TRACING__SAMPLE_RATIO=0.01
serve_as ratio_100 "$work/repo" SLUICE__TRACING__ENABLED=true SLUICE__TRACING__ENDPOINT="$collector" \
  SLUICE__TRACING__SAMPLE_RATIO=1

names=(off ratio_1 ratio_100)
ab_rounds "$rounds" "$seconds" "${names[@]}"
for name in "${names[@]}"; do
  dropped=$(curl -s "http://127.0.0.1:${server_port[$name]}/metrics" | awk '/^sluice_trace_spans_dropped_total/ {s += $2} END {print s + 0}')
  echo "$name: dropped spans $dropped"
done
python3 - "${rps_of[off]}" "${rps_of[ratio_1]}" "${rps_of[ratio_100]}" "${cpu_of[off]}" "${cpu_of[ratio_1]}" "${cpu_of[ratio_100]}" <<'EOF'
import statistics, sys
off, one, full, c_off, c_one, c_full = ([float(x) for x in arg.split()] for arg in sys.argv[1:])
m = statistics.median
print(f"median requests/s: off {m(off):.0f}, 1 % {m(one):.0f} ({m(one) / m(off):.3f}x), "
      f"100 % {m(full):.0f} ({m(full) / m(off):.3f}x)")
print(f"median CPU µs/request: off {m(c_off):.2f}, 1 % {m(c_one):.2f} ({m(c_off) / m(c_one):.3f}x the requests per "
      f"CPU second), 100 % {m(c_full):.2f} ({m(c_off) / m(c_full):.3f}x)")
EOF
