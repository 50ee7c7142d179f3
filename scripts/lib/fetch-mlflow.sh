#!/usr/bin/env bash
# Installs MLflow (its tracking server and client, with boto3 for artifacts in S3; pinned) into a venv and prints
# the venv's python. The MLflow repository tests (tests/conformance/test_mlflow.py) start `mlflow server` from it on
# a loopback port and register models with its client. The venv is large (~850 MB), so it lives in the user's cache, keyed by the pinned
# packages: a clean clone installs it once, later runs reuse it.
set -euo pipefail
packages=(mlflow==3.17.2 boto3==1.44.18)
want="$(printf '%s\n' "${packages[@]}" | sha256sum | cut -d' ' -f1)"
venv="${XDG_CACHE_HOME:-$HOME/.cache}/sluice/venv-mlflow-${want:0:16}"
if [ ! -x "$venv/bin/mlflow" ] || [ "$(cat "$venv/.packages.sha256" 2>/dev/null)" != "$want" ]; then
  echo "installing MLflow into $venv ..." >&2
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${packages[@]}"
  echo "$want" > "$venv/.packages.sha256"
fi
echo "$venv/bin/python"
