#!/usr/bin/env bash
# Installs Triton's perf_analyzer (it ships in the tritonclient 2.51 wheel, under bin/) into .venv-perf, with the
# CUDA runtime library it loads even for CPU use (the nvidia-cuda-runtime-cu12 wheel) and libb64 from Debian, and
# prints a command that runs it: perf_analyzer with LD_LIBRARY_PATH set.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="$root/.venv-perf"
packages=(tritonclient==2.51.0 nvidia-cuda-runtime-cu12==12.9.79)
want="$(printf '%s\n' "${packages[@]}" | sha256sum | cut -d' ' -f1)"
if [ ! -x "$venv/bin/perf_analyzer" ] || [ "$(cat "$venv/.packages.sha256" 2>/dev/null)" != "$want" ]; then
  echo "installing perf_analyzer into $venv ..." >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  # The binary and the library only: the Python client's dependencies are not needed to run it.
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps "${packages[@]}"
  echo "$want" > "$venv/.packages.sha256"
fi
if ! ldconfig -p | grep -q 'libb64.so.0d'; then
  echo "installing from Debian: libb64-0d ..." >&2
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends libb64-0d >/dev/null
fi
cudart="$(dirname "$(find "$venv" -name 'libcudart.so.12' | head -1)")"
cat > "$venv/run-perf-analyzer" <<SH
#!/usr/bin/env bash
LD_LIBRARY_PATH="$cudart\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$venv/bin/perf_analyzer" "\$@"
SH
chmod +x "$venv/run-perf-analyzer"
echo "$venv/run-perf-analyzer"
