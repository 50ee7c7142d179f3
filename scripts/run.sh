#!/usr/bin/env bash
# Runs sluice (release build) on the example models in models/, fetching ONNX Runtime first if needed.
# Extra arguments go to sluice, e.g. `scripts/run.sh --port 9000`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/fetch-onnxruntime.sh
exec cargo run --locked --release --bin sluice -- --models models "$@"
