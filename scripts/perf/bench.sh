#!/usr/bin/env bash
# The load benchmark (benches/load/bench.py): builds sluice and the reference programs (bare axum and tonic handlers,
# ONNX Runtime in-process) the way sluice ships, profile-guided (scripts/build-release.sh --examples), installs wrk and
# h2load (Debian) and the Python peers (FastAPI, KServe) in .venv-bench, fetches the open-nsfw CNN (scripts/lib/fetch-cnn.sh),
# trains the wide MLP used for the dynamic-batching rows (benches/load/wide_mlp.py), runs every server on loopback
# (runs interleaved) and writes benches/RESULTS.md. Takes about 25 minutes on 2 cores. BENCH_SECONDS sets
# the time per run (5), BENCH_REPEATS the runs per point (3).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

scripts/fetch-onnxruntime.sh
# Installs wrk (and llvm-profdata) from Debian when missing.
scripts/build-release.sh --examples

venv="$root/.venv-bench"
want="$(sha256sum benches/load/requirements.txt | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r benches/load/requirements.txt
  echo "$want" > "$venv/.requirements.sha256"
fi

cnn="$(scripts/lib/fetch-cnn.sh)"

# The batch-friendly model for the dynamic-batching rows, trained here (fixed seed, a few seconds).
wide="$root/.bench/wide-mlp.onnx"
if [ ! -f "$wide" ] || [ benches/load/wide_mlp.py -nt "$wide" ]; then
  mkdir -p "$root/.bench"
  "$venv/bin/python" benches/load/wide_mlp.py "$wide"
fi

"$venv/bin/python" benches/load/bench.py "$cnn" "$wide"
