-- wrk script for `make bench-api`: POST /v1/tasks with a bearer token; on exit print one JSON
-- line with the latency percentiles (ms) and the status counts.
local token = os.getenv("BENCH_TOKEN")
local counter = 0
local threads = {}

-- Per thread (globals, so that done() can read them with thread:get).
accepted = 0
refused = 0

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. token

function setup(thread)
  table.insert(threads, thread)
end

request = function()
  counter = counter + 1
  return wrk.format(nil, "/v1/tasks", nil, '{"kind":"checksum","payload":{"n":' .. counter .. '}}')
end

response = function(status, headers, body)
  if status == 202 then
    accepted = accepted + 1
  elseif status == 503 then
    refused = refused + 1
  end
end

done = function(summary, latency, requests)
  local total_accepted, total_refused = 0, 0
  for _, thread in ipairs(threads) do
    total_accepted = total_accepted + thread:get("accepted")
    total_refused = total_refused + thread:get("refused")
  end
  local p = function(q) return latency:percentile(q) / 1000 end
  io.write(string.format('BENCH_JSON {"requests":%d,"duration_s":%.3f,"errors":%d,"non2xx":%d,' ..
    '"accepted":%d,"refused":%d,"p50_ms":%.2f,"p95_ms":%.2f,"p99_ms":%.2f}\n',
    summary.requests, summary.duration / 1e6,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, total_accepted, total_refused, p(50), p(95), p(99)))
end
