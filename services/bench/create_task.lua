-- wrk script for `make bench-api`: POST /v1/tasks with a bearer token; on exit print one JSON
-- line with the latency percentiles (ms) and the status counts.
local token = os.getenv("BENCH_TOKEN")
local counter = 0
local statuses = {}

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. token

request = function()
  counter = counter + 1
  return wrk.format(nil, "/v1/tasks", nil, '{"kind":"checksum","payload":{"n":' .. counter .. '}}')
end

response = function(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

done = function(summary, latency, requests)
  local p = function(q) return latency:percentile(q) / 1000 end
  io.write(string.format('BENCH_JSON {"requests":%d,"duration_s":%.3f,"errors":%d,"non2xx":%d,' ..
    '"p50_ms":%.2f,"p95_ms":%.2f,"p99_ms":%.2f}\n',
    summary.requests, summary.duration / 1e6,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, p(50), p(95), p(99)))
end
