#!/usr/bin/env bash
# What tracing costs (#28): the small model (iris GBT, 1×4 FP32, 2 sessions × 1 thread, as scripts/perf/bench.sh) at
# c = 8, served by three sluice processes: tracing off, on with 1 % sampling, on with 100 % sampling, driven with
# the headers Python's requests sends (Accept-Encoding: gzip, deflate; Content-Type: application/json) and no
# traceparent, so the ratio decides. The spans go to an OTLP/HTTP endpoint where nothing listens, so no collector
# competes for the two cores: each batch is encoded and its send fails (the exporter retries it for about a second),
# and at 100 % the queue is full and drops most spans, counted. BENCH_BLOCKS blocks (default 6) each start the three afresh (the order
# rotating) and run BENCH_ROUNDS rounds (default 5) that drive each in turn with `wrk -t2 -c8` for BENCH_SECONDS
# (default 3). Prints requests/s and the server's CPU time per request per round, the spans each dropped, and the
# ratios to tracing off (scripts/perf/small-model-load.sh, ab_report).
#   scripts/perf/tracing.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
# shellcheck source=scripts/perf/small-model-load.sh
source scripts/perf/small-model-load.sh
ab_prepare 18900

collector="http://127.0.0.1:9/v1/traces"
ab_server off "$work/repo"
ab_server ratio_1 "$work/repo" SLUICE__TRACING__ENABLED=true SLUICE__TRACING__ENDPOINT="$collector" \
  SLUICE__TRACING__SAMPLE_RATIO=0.01
ab_server ratio_100 "$work/repo" SLUICE__TRACING__ENABLED=true SLUICE__TRACING__ENDPOINT="$collector" \
  SLUICE__TRACING__SAMPLE_RATIO=1
ab_block_end() {
  local name dropped
  for name in "${ab_names[@]}"; do
    dropped=$(curl -s "http://127.0.0.1:${server_port[$name]}/metrics" |
      awk '/^sluice_trace_spans_dropped_total/ {s += $2} END {print s + 0}')
    echo "$name: dropped spans $dropped"
  done
}
ab_blocks "${BENCH_BLOCKS:-6}" "${BENCH_ROUNDS:-5}" "${BENCH_SECONDS:-3}"
ab_report
