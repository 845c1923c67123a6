-- Shared by the bench wrk scripts: counts responses and prints key=value
-- lines from done(). `ok_pattern` (a plain substring) marks a good body.
local threads = {}
local counter = 0

function setup(thread)
  thread:set("thread_index", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function count_response(status, body, ok_pattern)
  responses = responses + 1
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    if status == 429 then limited = limited + 1 end
  elseif body and string.find(body, ok_pattern, 1, true) then
    good = good + 1
  end
end

function reset_counters()
  responses, non2xx, good, limited = 0, 0, 0, 0
end

function done(summary, latency, requests)
  local non, ok, resp, lim = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    non = non + t:get("non2xx")
    ok = ok + t:get("good")
    resp = resp + t:get("responses")
    lim = lim + t:get("limited")
  end
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format("wrk_duration_s=%.3f\n", secs))
  io.write(string.format("wrk_requests=%d\n", summary.requests))
  io.write(string.format("wrk_responses=%d\n", resp))
  io.write(string.format("wrk_p50_ms=%.2f\n", latency:percentile(50) / 1000))
  io.write(string.format("wrk_p90_ms=%.2f\n", latency:percentile(90) / 1000))
  io.write(string.format("wrk_p99_ms=%.2f\n", latency:percentile(99) / 1000))
  io.write(string.format("wrk_max_ms=%.2f\n", latency.max / 1000))
  io.write(string.format("wrk_non2xx=%d\n", non))
  io.write(string.format("wrk_status_429=%d\n", lim))
  io.write(string.format("wrk_socket_errors=%d\n", e.connect + e.read + e.write + e.timeout))
  io.write(string.format("wrk_good=%d\n", ok))
  io.write(string.format("wrk_good_per_s=%.1f\n", ok / secs))
end

-- Lines of a file as a table (assertions, Basic headers).
function read_lines(path)
  local lines = {}
  local f = assert(io.open(path, "r"))
  for line in f:lines() do
    if #line > 0 then table.insert(lines, line) end
  end
  f:close()
  return lines
end
