#!/usr/bin/env bash
# A/B of two builds of sluice on the small model (iris GBT, 1×4 FP32; 2 sessions × 1 intra-op thread, as in
# scripts/perf/bench.sh): which one serves the benchmark's c=8 load with fewer CPU microseconds per request, and faster.
#
#   scripts/perf/ab.sh <A> <B> [rounds]
#
# A and B are git revisions (each is built without LTO, the same way, in a worktree under target/ab) or paths to
# sluice binaries. Both servers are up at once; each round drives A, then B, with `wrk -t2 -c8` for 5 s while the
# server's CPU time is counted, in two placements: `shared` (server and wrk on both cores, as in scripts/perf/bench.sh) and
# `pinned` (server on CPU 0, wrk on CPU 1). The round's ratio is B/A. Rounds then run again with B measured first,
# because the slot a build is measured in biases a ratio by a few per cent on this machine (the same build against
# itself gave 1.02–1.04). Prints each round and the median ratio per placement and order.
# Needs wrk, perf (`linux-perf`) and taskset; installs what is missing from Debian. The worktrees stay for the next
# comparison; `git worktree remove target/ab/tree-<revision>` deletes one.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
[ $# -ge 2 ] || { echo "usage: scripts/perf/ab.sh <revision-or-binary A> <revision-or-binary B> [rounds]" >&2; exit 64; }
rounds="${3:-6}"

# shellcheck source=scripts/perf/small-model-load.sh
source scripts/perf/small-model-load.sh
install_load_tools
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$root/.ort/libonnxruntime.so.1.32.0}"

# A binary for a path or a revision (built without LTO, so that two builds differ only in their code).
binary() {
  if [ -x "$1" ]; then
    realpath "$1"
    return
  fi
  local rev tree
  rev="$(git rev-parse --short "$1^{commit}")"
  tree="$root/target/ab/tree-$rev"
  [ -d "$tree" ] || git worktree add --detach -f "$tree" "$rev" >/dev/null 2>&1
  CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_TARGET_DIR="$root/target/ab/build" \
    cargo build --release --locked --quiet --manifest-path "$tree/Cargo.toml" --bin sluice >&2
  mkdir -p "$root/target/ab/bin"
  cp "$root/target/ab/build/release/sluice" "$root/target/ab/bin/sluice-$rev"
  echo "$root/target/ab/bin/sluice-$rev"
}
a="$(binary "$1")"
b="$(binary "$2")"

work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
small_model_fixture "$work"

started=""
start() { # binary port placement: sets $started to the server's pid
  local pin=()
  [ "$3" = pinned ] && pin=(taskset -c 0)
  # No gRPC port (two builds run at once), for builds that have one (an older build refuses the unknown key).
  local grpc=()
  SLUICE__SERVER__GRPC_PORT=0 "$1" --check-config >/dev/null 2>&1 && grpc=(SLUICE__SERVER__GRPC_PORT=0)
  env "${grpc[@]}" SLUICE__LOG__LEVEL=warn SLUICE__LIMITS__MAX_CONCURRENT_REQUESTS=1024 SLUICE__LIMITS__MAX_QUEUE_PER_VERSION=1024 SLUICE__SERVER__SHUTDOWN_DELAY_MS=0 \
    "${pin[@]}" "$1" --models "$work/repo" --host 127.0.0.1 --port "$2" >/dev/null 2>&1 &
  started=$!
  pids+=("$started")
  for _ in $(seq 300); do curl -s -o /dev/null "http://127.0.0.1:$2/v2/health/ready" && return; sleep 0.1; done
  echo "the server on port $2 did not become ready" >&2
  exit 1
}

measure() { # port pid placement: prints "requests/s µs-per-request"
  local url="http://127.0.0.1:$1/v2/models/m/infer" load=(wrk -t2 -c8)
  [ "$3" = pinned ] && load=(taskset -c 1 wrk -t2 -c8)
  "${load[@]}" -d1s -s "$work/json.lua" "$url" >/dev/null
  "${load[@]}" -d5s -s "$work/json.lua" "$url" > "$work/wrk.out" &
  local w=$!
  sleep 0.5
  perf stat -e task-clock -x, -o "$work/stat.out" -p "$2" -- sleep 4
  wait "$w"
  python3 - "$work/wrk.out" "$work/stat.out" <<'EOF'
import re, sys
wrk, stat = (open(f).read() for f in sys.argv[1:3])
if "Non-2xx" in wrk or "Socket errors" in wrk:
    sys.exit("errors in the load run:\n" + wrk)
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", wrk).group(1))
ms = float(next(l.split(",")[0] for l in stat.splitlines() if "task-clock" in l))
print(f"{rps:.0f} {ms * 1000 / (rps * 4):.2f}")
EOF
}

for placement in shared pinned; do
  for order in "A B" "B A"; do
    start "$a" 18301 "$placement"
    pa=$started
    start "$b" 18302 "$placement"
    pb=$started
    rps_ratios=() cpu_ratios=()
    for round in $(seq "$rounds"); do
      declare -A rps=() cpu=()
      for who in $order; do
        if [ "$who" = A ]; then out="$(measure 18301 "$pa" "$placement")"
        else out="$(measure 18302 "$pb" "$placement")"; fi
        read -r r c <<< "$out"
        rps[$who]=$r cpu[$who]=$c
      done
      rr="$(python3 -c "print(f'{${rps[B]} / ${rps[A]}:.3f}')")"
      cr="$(python3 -c "print(f'{${cpu[B]} / ${cpu[A]}:.3f}')")"
      echo "$placement, ${order/ / then } round $round: A ${rps[A]} requests/s ${cpu[A]} µs/request," \
        "B ${rps[B]} requests/s ${cpu[B]} µs/request; B/A requests/s $rr, CPU $cr"
      rps_ratios+=("$rr") cpu_ratios+=("$cr")
    done
    echo "$placement, ${order/ / then }: median B/A requests/s" \
      "$(python3 -c "import statistics, sys; print(statistics.median(map(float, sys.argv[1:])))" "${rps_ratios[@]}")," \
      "CPU per request $(python3 -c "import statistics, sys; print(statistics.median(map(float, sys.argv[1:])))" "${cpu_ratios[@]}")"
    kill "$pa" "$pb"; wait "$pa" "$pb" 2>/dev/null || true
    pids=()
  done
done
