#!/usr/bin/env bash
# What outcome feedback costs (#29): the small model (iris GBT, 1×4 FP32, 2 sessions × 1 thread, as
# scripts/perf/bench.sh) at c = 8, served by two sluice processes: its model.toml without and with a [feedback] table
# (label + probabilities kept for every request, under the x-request-id sluice generates, in a store capped at
# feedback.max_pending = 100,000, so the run also exercises eviction). BENCH_BLOCKS blocks (default 6) each start
# both afresh (the order rotating), fill the store, then run BENCH_ROUNDS rounds (default 5) that drive each in turn
# with `wrk -t2 -c8` for BENCH_SECONDS (default 3) with the headers Python's requests sends (Accept-Encoding: gzip,
# deflate; Content-Type: application/json). Prints requests/s and the server's CPU time per request per round, and
# the ratios (scripts/perf/small-model-load.sh, ab_report). scripts/perf/aa.sh measures the same method with two
# identical servers.
#   scripts/perf/feedback.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
# shellcheck source=scripts/perf/small-model-load.sh
source scripts/perf/small-model-load.sh
ab_prepare 18950
cp -r "$work/repo" "$work/repo_on"
printf '[feedback]\ntask = "classification"\nlabel_output = "label"\nscore_output = "probabilities"\n' \
  >> "$work/repo_on/m/model.toml"

ab_server off "$work/repo"
ab_server on "$work/repo_on"
ab_block_end() {
  curl -s "http://127.0.0.1:${server_port[on]}/metrics" | grep '^sluice_feedback_predictions' || true
}
ab_blocks "${BENCH_BLOCKS:-6}" "${BENCH_ROUNDS:-5}" "${BENCH_SECONDS:-3}"
ab_report
