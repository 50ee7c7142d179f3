-- The training load of the profile-guided build (scripts/build-release.sh): a wrk script that sends, in turn, the
-- requests a model server sees in production, against sluice serving the example models in models/: V2 JSON
-- inference on every model (one row and several, the default version and a pinned one, FP32, INT64 and BYTES inputs),
-- the binary tensor extension, metadata, health probes, /metrics, and client errors (a wrong shape, an unknown model,
-- malformed JSON). The mix, not the benchmark, decides what the compiler treats as hot.
--
-- Every request carries its expected status in its x-request-id, which sluice echoes: each response's status is checked
-- against it, and `done` fails the run on any other.

local function json_infer(path, inputs, status)
  return { "POST", path, { ["Content-Type"] = "application/json" }, '{"inputs":[' .. inputs .. "]}", status or 200 }
end

local function fp32(name, rows, cols, value)
  local data = {}
  for i = 1, rows * cols do
    data[i] = string.format("%.4f", value + (i % 7) * 0.0625)
  end
  return string.format('{"name":"%s","datatype":"FP32","shape":[%d,%d],"data":[%s]}', name, rows, cols,
    table.concat(data, ","))
end

-- 1.0, 0.5, 2.0 and 0.25 as little-endian FP32.
local iris_row = string.char(0, 0, 128, 63, 0, 0, 0, 63, 0, 0, 0, 64, 0, 0, 128, 62)
local binary_header = '{"inputs":[{"name":"float_input","datatype":"FP32","shape":[1,4],'
  .. '"parameters":{"binary_data_size":16}}],"parameters":{"binary_data_output":true}}'

local tumor = '{"name":"mean_radius","datatype":"FP32","shape":[2,1],"data":[14.1,20.3]},'
  .. '{"name":"mean_texture","datatype":"FP32","shape":[2,1],"data":[19.3,25.1]},'
  .. '{"name":"lymph_nodes","datatype":"INT64","shape":[2,1],"data":[3,5]},'
  .. '{"name":"clinic","datatype":"BYTES","shape":[2,1],"data":["north","west"]}'

-- { method, path, headers, body, expected status }; the small iris request, the commonest, appears more than once.
local mix = {
  json_infer("/v2/models/iris/infer", fp32("float_input", 1, 4, 5.1)),
  json_infer("/v2/models/iris/infer", fp32("float_input", 3, 4, 4.9)),
  json_infer("/v2/models/iris/versions/1/infer", fp32("float_input", 1, 4, 6.2)),
  json_infer("/v2/models/digits_mlp/infer", fp32("float_input", 1, 64, 3.0)),
  json_infer("/v2/models/iris/infer", fp32("float_input", 1, 4, 5.8)),
  json_infer("/v2/models/digits_mlp_int8/infer", fp32("float_input", 2, 64, 1.0)),
  json_infer("/v2/models/tumor_risk/infer", tumor),
  { "POST", "/v2/models/iris/infer",
    { ["Content-Type"] = "application/octet-stream", ["Inference-Header-Content-Length"] = tostring(#binary_header) },
    binary_header .. iris_row, 200 },
  json_infer("/v2/models/iris/infer", fp32("float_input", 1, 4, 6.7)),
  { "GET", "/v2/models/iris", {}, nil, 200 },
  { "GET", "/v2/health/ready", {}, nil, 200 },
  json_infer("/v2/models/iris/infer", fp32("float_input", 1, 5, 5.1), 400), -- five columns where the model takes four
  { "POST", "/v2/models/nonexistent/infer", { ["Content-Type"] = "application/json" }, '{"inputs":[]}', 404 },
  { "POST", "/v2/models/iris/infer", { ["Content-Type"] = "application/json" }, '{"inputs":[{"name":', 400 },
  json_infer("/v2/models/iris/infer", fp32("float_input", 2, 4, 5.5)),
}
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

local function format(i, r)
  local headers = { ["x-request-id"] = string.format("pgo-train-%s-expect-%d", i, r[5]) }
  for k, v in pairs(r[3]) do
    headers[k] = v
  end
  return wrk.format(r[1], r[2], headers, r[4])
end

function init(args)
  requests = {}
  for i, r in ipairs(mix) do
    requests[i] = format(i, r)
  end
  metrics = format("metrics", { "GET", "/metrics", {}, nil, 200 })
  count, unexpected = 0, 0
end

-- /metrics once per 200 requests, the mix in turn.
function request()
  count = count + 1
  if count % 200 == 0 then
    return metrics
  end
  return requests[count % #requests + 1]
end

function response(status, headers, body)
  local want = tonumber(string.match(headers["x-request-id"] or "", "expect%-(%d+)$"))
  if status ~= want then
    unexpected = unexpected + 1
    if unexpected <= 3 then
      io.stderr:write(string.format("pgo-train: status %d where %s was expected: %s\n", status, tostring(want),
        string.sub(body or "", 1, 200)))
    end
  end
end

function done(summary, latency, requests)
  local bad = 0
  for _, thread in ipairs(threads) do
    bad = bad + thread:get("unexpected")
  end
  io.write(string.format("pgo-train: %d responses, %d with an unexpected status\n", summary.requests, bad))
  if bad > 0 then
    os.exit(1)
  end
end
