#!/usr/bin/env bash
# The registry benchmarks (benches/load/registry.py): the small model's p99 while the open-nsfw CNN is reloaded every
# 2 s against the same load without reloads, and the first requests after a CNN swap with and without warmup. Uses
# the build that ships (scripts/build-release.sh; SLUICE_BIN overrides it), wrk (Debian) and the CNN
# (scripts/lib/fetch-cnn.sh); BENCH_SECONDS sets the time per wrk run (15), BENCH_ROUNDS the rounds (3). Prints Markdown
# for benches/RESULTS.md. Takes about 3 minutes after the build.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

# shellcheck source=scripts/perf/small-model-load.sh
source scripts/perf/small-model-load.sh
install_load_tools
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$root/.ort/libonnxruntime.so.1.32.0}"
bin="${SLUICE_BIN:-}"
if [ -z "$bin" ]; then
  scripts/build-release.sh
  bin="$root/target/pgo/sluice"
fi
cnn="$(scripts/lib/fetch-cnn.sh)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
small_model_fixture "$work"
python3 benches/load/registry.py "$bin" "$work" "$cnn" "${BENCH_SECONDS:-15}" "${BENCH_ROUNDS:-3}"
