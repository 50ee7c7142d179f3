#!/usr/bin/env bash
# Fuzzes the V2 JSON decoder and validator (fuzz/fuzz_targets/decode.rs) with libFuzzer for N seconds (default 60).
# cargo-fuzz needs nightly features; the stable toolchain provides them with RUSTC_BOOTSTRAP=1 (no other toolchain
# can be installed here). Installs cargo-fuzz when it is missing.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
seconds="${1:-60}"
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz --version 0.13.2
fi
cd "$root/fuzz"
RUSTC_BOOTSTRAP=1 cargo fuzz run decode --fuzz-dir . -- -max_total_time="$seconds"
