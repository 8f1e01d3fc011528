-- wrk script for llm-proxy load tests (used by loadtest/compare_nginx.sh).
--
-- Sends the same small non-streaming chat completion request on every
-- keep-alive connection and, when the run is over, prints one
-- machine-readable line:
--
--   WRK_RESULT requests=N errors=N non2xx=N socket_errors=N timeouts=N
--              p50_us=N p90_us=N p99_us=N max_us=N mean_us=N
--              duration_us=N rps=N bytes=N
--
-- (on a single line).  `errors` = non-2xx responses + socket errors
-- (connect/read/write) + timeouts.  Latencies are in microseconds, as wrk
-- records them.
--
-- Usage:
--   wrk -t1 -c32 -d10s -s loadtest/chat.lua http://127.0.0.1:19002/v1/chat/completions -- [API_KEY [BODY [HEADER...]]]
--
-- API_KEY defaults to "sk-bench" (the key the proxy expects from clients);
-- pass "sk-upstream" to talk to the mock upstream directly.  BODY replaces
-- the JSON body ("" keeps the default), and every further argument is an
-- extra request header "Name: value" (other gateways need their own model
-- name or routing headers).

local threads = {}

wrk.method = "POST"
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"

-- Runs in the main Lua state once per wrk thread: keep the thread handles so
-- done() can collect the per-thread counters.
function setup(thread)
   table.insert(threads, thread)
end

-- Runs in each thread's own Lua state before the first request.
function init(args)
   if args[1] ~= nil and args[1] ~= "" then
      wrk.headers["Authorization"] = "Bearer " .. args[1]
   end
   if args[2] ~= nil and args[2] ~= "" then
      wrk.body = args[2]
   end
   for i = 3, #args do
      local name, value = string.match(args[i], "^([^:]+):%s*(.*)$")
      if name == nil then
         error("header argument must look like 'Name: value', got '" .. args[i] .. "'")
      end
      wrk.headers[name] = value
   end
   non2xx = 0
   first_bad_status = 0
end

-- wrk itself only counts status > 399 as an error; count every non-2xx.
function response(status, headers, body)
   if status < 200 or status > 299 then
      non2xx = non2xx + 1
      if first_bad_status == 0 then
         first_bad_status = status
      end
   end
end

function done(summary, latency, requests)
   local non2xx_total = 0
   local bad_status = 0
   for _, thread in ipairs(threads) do
      non2xx_total = non2xx_total + (thread:get("non2xx") or 0)
      local s = thread:get("first_bad_status") or 0
      if bad_status == 0 and s ~= 0 then
         bad_status = s
      end
   end
   local e = summary.errors
   local socket_errors = e.connect + e.read + e.write
   -- e.status (>399) is a subset of non2xx; use whichever is larger in case
   -- a thread state could not be read.
   local status_errors = math.max(non2xx_total, e.status)
   local errors = status_errors + socket_errors + e.timeout
   local secs = summary.duration / 1e6
   local rps = 0
   if secs > 0 then
      rps = summary.requests / secs
   end
   io.write(string.format(
      "WRK_RESULT requests=%d errors=%d non2xx=%d first_bad_status=%d socket_errors=%d timeouts=%d " ..
      "p50_us=%d p90_us=%d p99_us=%d max_us=%d mean_us=%.1f duration_us=%d rps=%.1f bytes=%d\n",
      summary.requests, errors, status_errors, bad_status, socket_errors, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, latency.mean, summary.duration, rps, summary.bytes))
end
