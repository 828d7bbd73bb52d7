-- Batch publish: POST /v1/queues/{q}/batch with a JSON array of WQ_BATCH (100) strings of
-- WQ_BODY_BYTES (200) bytes. Static request; every 201 counts WQ_BATCH messages.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(dir .. "common.lua")

local item = '"' .. common.body(common.body_bytes) .. '"'
local items = {}
for i = 1, common.batch do items[i] = item end

wrk.method = "POST"
wrk.path = "/v1/queues/" .. common.queue .. "/batch"
wrk.body = "[" .. table.concat(items, ",") .. "]"
wrk.headers["Content-Type"] = "application/json"

setup = common.setup
done = common.done_factory("batch_publish", common.batch)
