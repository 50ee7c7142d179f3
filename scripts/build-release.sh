#!/usr/bin/env bash
# The optimised build of sluice, the one the Dockerfile ships and scripts/perf/bench.sh measures: profile-guided.
#
#   scripts/build-release.sh              # target/pgo/sluice
#   scripts/build-release.sh --examples   # also the load benchmark's reference programs, target/pgo/examples/
#
# 1. Builds sluice with instrumentation (cargo profile `pgo`, -Cprofile-generate) into target/pgo-train.
# 2. Trains it: serves the example models in models/ on 127.0.0.1 under scripts/perf/pgo-train.lua, a mix of the requests
#    a model server sees (V2 JSON on every model, binary tensors, metadata, health, /metrics, client errors), driven
#    by wrk for PGO_TRAIN_SECONDS (15) seconds; a response with an unexpected status fails the build. At the same time
#    h2load sends gRPC ModelInfer calls (scripts/perf/pgo-train-grpc.sh); a failed one fails the build. With
#    --examples, the bare axum and tonic handlers and ONNX Runtime in-process are trained on their own benchmark loads too, so
#    every Rust program in the benchmark's table is built the same way.
# 3. Merges the profiles with llvm-profdata of rustc's LLVM and rebuilds with them (-Cprofile-use).
#
# Why: on the small model at concurrency 8 this build serves more requests per CPU second than the fat-LTO build of
# `cargo build --release` (measured in benches/RESULTS.md); `cargo build --release` remains the plain build.
# Needs wrk, h2load and llvm-profdata-<rustc's LLVM major> (Debian llvm-<major>); installs what is missing from Debian.
# Uses ORT_DYLIB_PATH when set, else fetches ONNX Runtime (scripts/fetch-onnxruntime.sh). PGO_TRAIN_PORT (18479) is
# the training server's port, PGO_TRAIN_GRPC_PORT (the next one) its gRPC port.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

examples=false
case "${1:-}" in
  --examples) examples=true ;;
  "") ;;
  *) echo "usage: scripts/build-release.sh [--examples]" >&2; exit 64 ;;
esac

llvm_major="$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')"
profdata="llvm-profdata-$llvm_major"
scripts/lib/debian-install.sh wrk=wrk h2load=nghttp2-client "$profdata=llvm-$llvm_major"
if [ -z "${ORT_DYLIB_PATH:-}" ]; then
  scripts/fetch-onnxruntime.sh
  export ORT_DYLIB_PATH="$root/.ort/libonnxruntime.so.1.32.0"
fi

targets=(--bin sluice)
$examples && targets+=(--example bare --example bare_grpc --example inprocess)
train="$root/target/pgo-train"
profiles="$train/profiles"
rm -rf "$profiles"
mkdir -p "$profiles"

echo "build-release: instrumented build" >&2
# Build scripts and proc macros are instrumented too (RUSTFLAGS reaches them); their profiles land apart.
RUSTFLAGS="-Cprofile-generate=$train/build-scripts" \
  cargo build --locked --profile pgo --target-dir "$train" "${targets[@]}"
bin="$train/pgo"

port="${PGO_TRAIN_PORT:-18479}"
grpc_port="${PGO_TRAIN_GRPC_PORT:-$((port + 1))}"
pid=""
work="$(mktemp -d)"
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT

# Whether something accepts connections on the training port.
listening() {
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}

# Another server on the port would answer the training load in place of the instrumented build.
if listening; then
  echo "build-release: 127.0.0.1:$port is in use; set PGO_TRAIN_PORT to a free port" >&2
  exit 1
fi

# Waits until http://127.0.0.1:$port$1 answers 200 (bash's /dev/tcp: the build image has no curl), at most 60 s.
wait_for() {
  local status
  for _ in $(seq 600); do
    if { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null; then
      printf 'GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' "$1" >&3
      read -r _ status _ <&3 || true
      exec 3>&-
      [ "$status" = 200 ] && return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "build-release: the training server exited:" >&2
      cat "$work/server.log" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "build-release: the training server was not ready in 60 s" >&2
  return 1
}

# Stops the training server with SIGTERM; it writes its profile as it exits.
stop() {
  kill -TERM "$pid"
  wait "$pid"
  pid=""
}

echo "build-release: training sluice on models/ (${PGO_TRAIN_SECONDS:-15} s)" >&2
# shellcheck source=scripts/perf/pgo-train-grpc.sh
source scripts/perf/pgo-train-grpc.sh
grpc_training_bodies "$work"
LLVM_PROFILE_FILE="$profiles/sluice-%p.profraw" SLUICE__SERVER__SHUTDOWN_DELAY_MS=0 \
  SLUICE__SERVER__GRPC_PORT="$grpc_port" \
  "$bin/sluice" --models models --host 127.0.0.1 --port "$port" >"$work/server.log" 2>&1 &
pid=$!
wait_for /v2/health/ready
grpc_training_load "$grpc_port" "${PGO_TRAIN_SECONDS:-15}" &
grpc_load=$!
wrk -t2 -c4 -d"${PGO_TRAIN_SECONDS:-15}s" -s scripts/perf/pgo-train.lua "http://127.0.0.1:$port" >"$work/wrk.out" \
  || { cat "$work/wrk.out" >&2; exit 1; }
grep '^pgo-train:' "$work/wrk.out" >&2
wait "$grpc_load"
# h2load sees HTTP statuses only; sluice's own counts say whether the gRPC calls succeeded.
{ exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null
printf 'GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3
grep 'protocol="grpc"' <&3 | grep '^sluice_requests_total' >"$work/grpc.counts" || true
exec 3>&-
if ! grep -q 'outcome="success"' "$work/grpc.counts" || grep -v 'outcome="success"' "$work/grpc.counts" | grep -q .; then
  echo "build-release: the gRPC training calls did not all succeed:" >&2
  cat "$work/grpc.counts" "$work"/grpc-*.out >&2
  exit 1
fi
echo "pgo-train: gRPC $(awk '{s += $2} END {print s}' "$work/grpc.counts") calls" >&2
stop

if $examples; then
  # shellcheck source=scripts/perf/small-model-load.sh
  source scripts/perf/small-model-load.sh
  small_model_fixture "$work"
  echo "build-release: training the bare handler and ONNX Runtime in-process (small model)" >&2
  LLVM_PROFILE_FILE="$profiles/bare-%p.profraw" \
    "$bin/examples/bare" models/iris/2/model.onnx "$port" 1,4 2 1 inline >"$work/server.log" 2>&1 &
  pid=$!
  # The bare handler has no readiness route: a connection means it is listening.
  for _ in $(seq 600); do listening && break; sleep 0.1; done
  wrk -t2 -c8 -d10s -s "$work/raw.lua" "http://127.0.0.1:$port/infer" >/dev/null
  stop
  LLVM_PROFILE_FILE="$profiles/bare-grpc-%p.profraw" \
    "$bin/examples/bare_grpc" models/iris/2/model.onnx "$port" 1,4 2 1 inline >"$work/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do listening && break; sleep 0.1; done
  h2load -c8 -m1 -t2 -D 10 -d "$work/grpc-iris.body" -H 'content-type: application/grpc' -H 'te: trailers' \
    "http://127.0.0.1:$port/inference.GRPCInferenceService/ModelInfer" >/dev/null
  stop
  LLVM_PROFILE_FILE="$profiles/inprocess-%p.profraw" "$bin/examples/inprocess" models/iris/2/model.onnx 1,4 2 1 8 5 \
    >/dev/null
fi

"$profdata" merge -o "$train/merged.profdata" "$profiles"/*.profraw
echo "build-release: optimised build with the merged profile" >&2
RUSTFLAGS="-Cprofile-use=$train/merged.profdata -Cllvm-args=-pgo-warn-missing-function=false" \
  cargo build --locked --profile pgo "${targets[@]}"
echo "build-release: built $root/target/pgo/sluice" >&2
