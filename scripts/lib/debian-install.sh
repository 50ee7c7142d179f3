#!/usr/bin/env bash
# Installs from Debian the packages whose commands are missing. Each argument is `command=package`, e.g.
# `scripts/lib/debian-install.sh wrk=wrk perf=linux-perf`; nothing happens when every command is there. Uses sudo when not
# run as root.
set -euo pipefail
need=()
for pair in "$@"; do
  command -v "${pair%%=*}" >/dev/null 2>&1 || need+=("${pair#*=}")
done
[ "${#need[@]}" -eq 0 ] && exit 0
echo "installing from Debian: ${need[*]} ..." >&2
sudo_cmd=""
[ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
$sudo_cmd apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
