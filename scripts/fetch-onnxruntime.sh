#!/usr/bin/env bash
# Fetches the ONNX Runtime shared library that sluice loads at run time.
#
# The library comes from the official PyPI wheel `onnxruntime==1.32.0` (pinned by version and wheel sha256) and is
# extracted into `.ort/` at the project root (git-ignored). Does nothing when the library is already there.
# Needs only Python 3 with pip (no ML stack): pip downloads the wheel, Python's zipfile extracts one member.
#
#   scripts/fetch-onnxruntime.sh            # the pinned 1.32.0 into .ort/
#   scripts/fetch-onnxruntime.sh --old      # 1.20.1 into .ort/old/ (the test suite checks that it is refused)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

case "${1:-}" in
  "")
    VERSION=1.32.0
    WHEEL="onnxruntime-1.32.0-cp311-cp311-manylinux_2_28_x86_64.whl"
    WHEEL_SHA256=5a34fc4dfeb5a7b4a74c95dcba1e773d722abda720b474edf1b0c419dc6d163d
    dest="${SLUICE_ORT_DIR:-$root/.ort}"
    ;;
  --old)
    VERSION=1.20.1
    WHEEL="onnxruntime-1.20.1-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl"
    WHEEL_SHA256=5eec64c0269dcdb8d9a9a53dc4d64f87b9e0c19801d9321246a53b7eb5a7d1bc
    dest="$root/.ort/old"
    ;;
  *)
    echo "usage: $0 [--old]" >&2
    exit 64
    ;;
esac
LIB="libonnxruntime.so.${VERSION}"

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
