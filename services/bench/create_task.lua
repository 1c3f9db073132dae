-- wrk script for `make bench-api` (and `make bench-logs`): POST /v1/tasks with a bearer token;
-- on exit print one JSON line with the latency percentiles (ms) and the status counts.
-- BENCH_TOKEN: one token, or several separated by commas, used in turn (one tenant each: a
-- tenant's requests per minute are limited, the load of many tenants is not).
local tokens = {}
for t in string.gmatch(os.getenv("BENCH_TOKEN"), "[^,]+") do table.insert(tokens, t) end
local counter = 0
local threads = {}

-- Per thread (globals, so that done() can read them with thread:get).
accepted = 0
refused = 0

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

function setup(thread)
  table.insert(threads, thread)
end

request = function()
  counter = counter + 1
  -- wrk.format takes these instead of wrk.headers, not on top of them.
  local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. tokens[counter % #tokens + 1]}
  return wrk.format(nil, "/v1/tasks", headers, '{"kind":"checksum","payload":{"n":' .. counter .. '}}')
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
