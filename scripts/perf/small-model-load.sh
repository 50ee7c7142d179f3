# Shared by scripts/perf/cpu-per-request.sh, scripts/perf/ab.sh, scripts/perf/bench-registry.sh and scripts/build-release.sh
# (sourced, not run): the tools a CPU-per-request measurement needs, and the small-model fixture of scripts/perf/bench.sh
# (iris GBT, 1×4 FP32, 2 sessions × 1 intra-op thread).

# Fetches ONNX Runtime and installs wrk and perf from Debian when missing.
install_load_tools() {
  scripts/fetch-onnxruntime.sh
  scripts/lib/debian-install.sh wrk=wrk perf=linux-perf
}

# Writes into $1: the repository `repo` (model `m`), the V2 JSON body `json.body`, the same input as raw
# little-endian FP32 `raw.body` (for the bare handler), and a wrk script for each (`json.lua`, `raw.lua`).
small_model_fixture() {
  local dir="$1" kind
  mkdir -p "$dir/repo/m/1"
  cp models/iris/2/model.onnx "$dir/repo/m/1/"
  printf '[session]\npool_size = 2\nintra_op_threads = 1\n' > "$dir/repo/m/model.toml"
  printf '{"inputs":[{"name":"float_input","datatype":"FP32","shape":[1,4],"data":[0.0,0.4375,0.875,0.25]}]}' \
    > "$dir/json.body"
  python3 -c "import struct, sys; sys.stdout.buffer.write(struct.pack('<4f', 0.0, 0.4375, 0.875, 0.25))" \
    > "$dir/raw.body"
  for kind in json raw; do
    printf 'wrk.method = "POST"\nlocal f = io.open("%s/%s.body", "rb")\nwrk.body = f:read("*all")\nf:close()\nwrk.headers["Content-Type"] = "application/%s"\n' \
      "$dir" "$kind" "$([ "$kind" = json ] && echo json || echo octet-stream)" > "$dir/$kind.lua"
  done
}
