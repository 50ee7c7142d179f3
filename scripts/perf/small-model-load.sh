# Shared by scripts/perf/cpu-per-request.sh, scripts/perf/ab.sh, scripts/perf/bench-registry.sh, scripts/perf/tracing.sh,
# scripts/perf/feedback.sh, scripts/perf/aa.sh and scripts/build-release.sh
# (sourced, not run): the tools a CPU-per-request measurement needs, the small-model fixture of scripts/perf/bench.sh
# (iris GBT, 1×4 FP32, 2 sessions × 1 intra-op thread), and the A/B loop of the cost measurements.

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

# A/B runs of several sluice processes on the small model (scripts/perf/tracing.sh, scripts/perf/feedback.sh,
# scripts/perf/aa.sh).
declare -A server_port server_pid server_repo server_env rps_of cpu_of
ab_names=()

# Installs the load tools, builds the pgo binary (`bin`), writes the small-model fixture into a fresh `work`
# directory with the headers of Python's requests in json.lua, and stops the servers and removes `work` on exit.
# Servers take the ports after <first port - 1>.
ab_prepare() { # <first port - 1>
  install_load_tools
  export ORT_DYLIB_PATH="$PWD/.ort/libonnxruntime.so.1.32.0"
  cargo build --quiet --profile pgo --bin sluice
  bin="$PWD/target/pgo/sluice"
  port="$1"
  work="$(mktemp -d)"
  trap 'stop_servers; rm -rf "$work"' EXIT
  small_model_fixture "$work"
  printf 'wrk.headers["Accept-Encoding"] = "gzip, deflate"\n' >> "$work/json.lua"
}

# Starts sluice as <name> on the next port, serving <repo>, with the environment <env...>; waits until ready.
serve_as() { # <name> <repo> [env...]
  local name="$1" repo="$2"
  shift 2
  port=$((port + 1))
  env "$@" SLUICE__SERVER__GRPC_PORT=0 SLUICE__LOG__LEVEL=warn "$bin" --models "$repo" --host 127.0.0.1 \
    --port "$port" > "$work/$name.log" 2>&1 &
  until curl -sf "http://127.0.0.1:$port/v2/health/ready" >/dev/null; do
    kill -0 $! 2>/dev/null || { cat "$work/$name.log" >&2; exit 1; }
    sleep 0.05
  done
  server_port[$name]=$port
  server_pid[$name]=$!
}

# Stops the servers and waits for them to leave.
stop_servers() {
  kill "${server_pid[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  server_pid=()
}

# Names a server for ab_blocks: <name> serves <repo> with the environment <env...> (words without spaces).
ab_server() { # <name> <repo> [env...]
  local name="$1"
  server_repo[$name]="$2"
  shift 2
  server_env[$name]="$*"
  ab_names+=("$name")
}

# <rounds> rounds of `wrk -t2 -c8` for <seconds> against each named server in turn, the requests' headers of
# Python's requests (json.lua), each round starting with the next server. Prints each round; appends each run's
# requests/s to rps_of[name] and the server's CPU µs a request to cpu_of[name].
ab_rounds() { # <rounds> <seconds> <name...>
  local rounds="$1" seconds="$2" r name before after out rps total us line
  shift 2
  local names=("$@") n=$#
  local tick_us=$((1000000 / $(getconf CLK_TCK)))
  for r in $(seq 1 "$rounds"); do
    line="round $r:"
    local order=("${names[@]:$((r % n))}" "${names[@]:0:$((r % n))}")
    for name in "${order[@]}"; do
      before=$(awk '{print $14 + $15}' "/proc/${server_pid[$name]}/stat")
      out=$(wrk -t2 -c8 -d"${seconds}s" -s "$work/json.lua" "http://127.0.0.1:${server_port[$name]}/v2/models/m/infer")
      after=$(awk '{print $14 + $15}' "/proc/${server_pid[$name]}/stat")
      rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
      total=$(awk '/requests in/ {print $1}' <<<"$out")
      us=$(python3 -c "print(f'{($after - $before) * $tick_us / $total:.2f}')")
      rps_of[$name]+="$rps "
      cpu_of[$name]+="$us "
      line+=" $name $rps req/s ${us} µs CPU/req;"
    done
    echo "$line"
  done
}

# <blocks> blocks of <rounds> rounds (ab_rounds, <seconds> a run) over the servers named with ab_server. Each block
# starts fresh processes, in an order that rotates from block to block, warms each for 2 s and stops them at its
# end: a process's own luck (its memory layout, where its threads settle, being started last) then varies between
# blocks instead of favouring one configuration for the whole run. Calls `ab_block_end <block>` (when defined)
# before the servers stop.
ab_blocks() { # <blocks> <rounds> <seconds>
  local blocks="$1" rounds="$2" seconds="$3" b name n=${#ab_names[@]}
  ab_block_rounds="$rounds"
  for b in $(seq 1 "$blocks"); do
    local order=("${ab_names[@]:$((b % n))}" "${ab_names[@]:0:$((b % n))}")
    for name in "${order[@]}"; do
      # shellcheck disable=SC2086 # the environment is a list of words
      serve_as "$name" "${server_repo[$name]}" ${server_env[$name]}
    done
    for name in "${order[@]}"; do
      wrk -t2 -c8 -d2s -s "$work/json.lua" "http://127.0.0.1:${server_port[$name]}/v2/models/m/infer" > /dev/null
    done
    echo "block $b (started ${order[*]}):"
    ab_rounds "$rounds" "$seconds" "${ab_names[@]}"
    if declare -F ab_block_end > /dev/null; then ab_block_end "$b"; fi
    stop_servers
  done
}

# Prints, for each server after the first named with ab_server, its requests/s and CPU µs a request against the
# first's: the ratio of the medians, and the median and geometric mean of the rounds' own ratios (each round
# measures all back to back, so its ratio is free of the machine's slower drift) with a 95 % bootstrap interval that
# resamples whole blocks (rounds of one block share their processes' luck, so they are not independent).
ab_report() {
  local args=("${ab_block_rounds:-1}") name
  for name in "${ab_names[@]}"; do args+=("$name" "${rps_of[$name]}" "${cpu_of[$name]}"); done
  python3 - "${args[@]}" <<'PY'
import math, random, statistics, sys
block, a = int(sys.argv[1]), sys.argv[2:]
runs = {a[i]: ([float(x) for x in a[i + 1].split()], [float(x) for x in a[i + 2].split()]) for i in range(0, len(a), 3)}
names = list(runs)
base, (b_rps, b_cpu) = names[0], runs[names[0]]
m = statistics.median
rng = random.Random(1)
print(f"{base}: median {m(b_rps):.0f} requests/s, {m(b_cpu):.2f} CPU µs/request over {len(b_rps)} runs")
def paired(xs, ys):
    """The geometric mean of the rounds' ratios x/y and its 95 % interval, resampling blocks of rounds."""
    logs = [math.log(x / y) for x, y in zip(xs, ys)]
    blocks = [logs[i:i + block] for i in range(0, len(logs), block)]
    means = sorted(statistics.fmean([v for b in rng.choices(blocks, k=len(blocks)) for v in b]) for _ in range(2000))
    return math.exp(statistics.fmean(logs)), math.exp(means[50]), math.exp(means[1949])
for name in names[1:]:
    rps, cpu = runs[name]
    g, lo, hi = paired(rps, b_rps)
    cg, clo, chi = paired(cpu, b_cpu)
    print(f"{name}: median {m(rps):.0f} requests/s ({m(rps) / m(b_rps):.3f}x {base}); rounds' ratios: median "
          f"{m([x / y for x, y in zip(rps, b_rps)]):.3f}x, geometric mean {g:.3f}x (95 % interval {lo:.3f}-{hi:.3f}); "
          f"CPU µs/request {m(cpu):.2f}, rounds' ratios {cg:.3f}x (95 % interval {clo:.3f}-{chi:.3f})")
PY
}
