#!/usr/bin/env bash
# The A/B method's own error: scripts/perf/feedback.sh and scripts/perf/tracing.sh's loop (small-model-load.sh,
# ab_blocks) run on two identical sluice processes serving the small model (iris GBT, 1×4 FP32, 2 sessions × 1
# thread) at c = 8. A fair method reports b/a ≈ 1.000×; how far it strays, and the interval's width, is what an
# A/B ratio from the same settings can be trusted to.
#   scripts/perf/aa.sh        # BENCH_BLOCKS (default 6) × BENCH_ROUNDS (default 5) rounds of BENCH_SECONDS (3)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
# shellcheck source=scripts/perf/small-model-load.sh
source scripts/perf/small-model-load.sh
ab_prepare 18970
ab_server a "$work/repo"
ab_server b "$work/repo"
ab_blocks "${BENCH_BLOCKS:-6}" "${BENCH_ROUNDS:-5}" "${BENCH_SECONDS:-3}"
ab_report
