-- Shared by the WonderQ wrk scripts: settings from the environment, per-thread counters, and a
-- done() that prints one machine-readable line for bench/run.py:
--   WRKJSON {"requests":..,"duration_s":..,"latency_ms":{"p50":..,"p99":..},"messages":..}
--
-- Counters are globals of each thread's Lua state (wrk gives every thread its own state);
-- done() runs in the main state and collects them with thread:get().
--   wq_messages  messages that went through (published, or deleted by a successful ack)
--   wq_empty     receives that returned no message (the queue was dry at that moment)
--   wq_bad       answers that were not what the workload expects (false ack, 4xx/5xx body)
-- Scripts without a response() function leave them nil; done() then counts
-- (requests - non-2xx/3xx answers) * messages_per_request.

local M = {}

M.queue = os.getenv("WQ_QUEUE") or "default"
M.body_bytes = tonumber(os.getenv("WQ_BODY_BYTES") or "200")
M.batch = tonumber(os.getenv("WQ_BATCH") or "100")
M.pipeline = tonumber(os.getenv("WQ_PIPELINE") or "16")
M.visibility = os.getenv("WQ_VISIBILITY") or "60"

M.threads = {}

-- WQ_AUTHORIZATION: sent on every request (bench/security.py: "Bearer <token>"). Scripts that
-- build requests with wrk.format() and no headers of their own send wrk.headers too.
if os.getenv("WQ_AUTHORIZATION") then
   wrk.headers["Authorization"] = os.getenv("WQ_AUTHORIZATION")
end

-- A message body of exactly `n` bytes, plain ASCII so it needs no JSON escaping.
function M.body(n)
   return string.rep("x", n)
end

-- Called by wrk once per thread, in the main state, before the thread starts.
function M.setup(thread)
   table.insert(M.threads, thread)
   thread:set("thread_index", #M.threads)
end

-- Consumer id of this thread: one consumer per wrk thread, so a lease and its ack always
-- travel with the same cid whatever connection carries them.
function M.cid()
   return tostring(1000 + (thread_index or 0))
end

local function sum(name)
   local total = 0
   for _, t in ipairs(M.threads) do
      total = total + (tonumber(t:get(name)) or 0)
   end
   return total
end

-- Percentiles of wrk's latency histogram, in milliseconds.
-- wrk's latency:percentile() ranks among all samples, including those its coordinated-omission
-- correction adds below the smallest measured value, but only walks the buckets from min to
-- max: with pipelining (where the correction assumes one answer per round trip, not 16) it
-- returns 0 for p99. So: find by bisection the share `frac` of samples that lie between min and
-- max (the largest p for which percentile(p) is not 0), then rank within them with
-- percentile(p * frac). Without pipelining frac is 1 and the figures are wrk --latency's own.
-- (Walking the buckets from Lua with latency(i) is quadratic in wrk 4.1: far too slow.)
function M.percentiles_ms(latency)
   local frac = 1.0
   if latency:percentile(100) == 0 then
      local lo, hi = 0.0, 100.0
      for _ = 1, 60 do
         local mid = (lo + hi) / 2
         if latency:percentile(mid) ~= 0 then lo = mid else hi = mid end
      end
      frac = lo / 100.0
   end
   return function(p)
      if p >= 100 then return latency.max / 1000.0 end
      local v = latency:percentile(p * frac)
      if v == 0 then v = latency.max end
      return v / 1000.0
   end
end

local function num(x)
   if x ~= x or x == math.huge or x == -math.huge then return "null" end
   return string.format("%.6g", x)
end

-- Returns a done() for wrk. `name` labels the workload; `per_request` is the number of
-- messages one successful request carries when the script does not count them itself.
function M.done_factory(name, per_request)
   return function(summary, latency, requests)
      local e = summary.errors
      local ok = summary.requests - e.status
      local messages = sum("wq_messages")
      local counted = false
      for _, t in ipairs(M.threads) do
         if t:get("wq_messages") ~= nil then counted = true end
      end
      if not counted then messages = ok * (per_request or 1) end
      local ms = M.percentiles_ms(latency)
      io.write(string.format(
         'WRKJSON {"script":"%s","requests":%d,"duration_s":%s,"messages":%d,' ..
         '"empty":%d,"bad":%d,"pipeline":%d,' ..
         '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
         '"latency_ms":{"p50":%s,"p90":%s,"p99":%s,"p999":%s,"max":%s,"mean":%s}}\n',
         name, summary.requests, num(summary.duration / 1e6), messages,
         sum("wq_empty"), sum("wq_bad"), M.pipeline_depth or 1,
         e.connect, e.read, e.write, e.status, e.timeout,
         num(ms(50)), num(ms(90)), num(ms(99)), num(ms(99.9)),
         num(latency.max / 1000.0), num(latency.mean / 1000.0)))
   end
end

return M
