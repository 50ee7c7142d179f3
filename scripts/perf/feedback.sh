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
rounds="${BENCH_ROUNDS:-6}"
seconds="${BENCH_SECONDS:-5}"
ab_prepare 18950
cp -r "$work/repo" "$work/repo_on"
printf '[feedback]\ntask = "classification"\nlabel_output = "label"\nscore_output = "probabilities"\n' \
  >> "$work/repo_on/m/model.toml"

serve_as off "$work/repo"
serve_as on "$work/repo_on"
ab_rounds "$rounds" "$seconds" off on
curl -s "http://127.0.0.1:${server_port[on]}/metrics" | grep '^sluice_feedback_predictions' || true
python3 - "${rps_of[off]}" "${rps_of[on]}" "${cpu_of[off]}" "${cpu_of[on]}" <<'PY'
import statistics, sys
off, on, c_off, c_on = ([float(x) for x in arg.split()] for arg in sys.argv[1:])
m = statistics.median
print(f"median requests/s: off {m(off):.0f}, on {m(on):.0f} ({m(on) / m(off):.3f}x)")
# Each round measures both servers back to back: the ratio within a round is free of the machine's slower drift.
paired = [b / a for a, b in zip(off, on)]
print(f"median of the rounds' on/off ratios: {m(paired):.3f}x")
print(f"median CPU µs/request: off {m(c_off):.2f}, on {m(c_on):.2f}")
PY
