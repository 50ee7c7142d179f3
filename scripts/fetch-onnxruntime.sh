#!/usr/bin/env bash
# Fetches the ONNX Runtime shared library that sluice loads at run time.
#
# The library comes from the official PyPI wheel `onnxruntime==1.32.0` (pinned by version and sha256) and is
# extracted into `.ort/` at the project root (git-ignored). Does nothing when the library is already there.
# Needs only Python 3 with pip (no ML stack): pip downloads the wheel, Python's zipfile extracts one member.
set -euo pipefail

VERSION=1.32.0
WHEEL="onnxruntime-${VERSION}-cp311-cp311-manylinux_2_28_x86_64.whl"
WHEEL_SHA256=5a34fc4dfeb5a7b4a74c95dcba1e773d722abda720b474edf1b0c419dc6d163d
LIB="libonnxruntime.so.${VERSION}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${SLUICE_ORT_DIR:-$root/.ort}"

if [ -f "$dest/$LIB" ]; then
  exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "fetching onnxruntime==${VERSION} from PyPI ..." >&2
python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version 3.11 --implementation cp --abi cp311 --platform manylinux_2_28_x86_64 \
  "onnxruntime==${VERSION}" -d "$tmp"

echo "${WHEEL_SHA256}  ${tmp}/${WHEEL}" | sha256sum --check --quiet -

mkdir -p "$dest"
python3 - "$tmp/$WHEEL" "$dest" "$LIB" <<'PY'
import os, sys, zipfile
wheel, dest, lib = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    data = z.read(f"onnxruntime/capi/{lib}")
tmp = os.path.join(dest, lib + ".part")
with open(tmp, "wb") as f:
    f.write(data)
os.replace(tmp, os.path.join(dest, lib))
PY
echo "ONNX Runtime ${VERSION} installed at $dest/$LIB" >&2
