-- Pipelined publish: each connection writes WQ_PIPELINE (16) requests at once and waits for all
-- 16 answers before writing again. wrk records one latency sample per batch of 16.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(dir .. "common.lua")
common.pipeline_depth = common.pipeline

local path = os.getenv("WQ_PATH") or "/v1/publish"
local batch = nil

function init(args)
   local body = common.body(common.body_bytes)
   local headers = { ["Content-Type"] = "text/plain; charset=utf-8" }
   local parts = {}
   for i = 1, common.pipeline do
      parts[i] = wrk.format("POST", path, headers, body)
   end
   batch = table.concat(parts)
end

function request()
   return batch
end

setup = common.setup
done = common.done_factory("pipeline_publish", 1)
