-- Publish one 200-byte message per request: POST /v1/publish (WQ_BODY_BYTES to change the size).
-- A static request (no request()/response() in Lua), so wrk spends the least time per request.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(dir .. "common.lua")

wrk.method = "POST"
wrk.path = os.getenv("WQ_PATH") or "/v1/publish"
wrk.body = common.body(common.body_bytes)
wrk.headers["Content-Type"] = "text/plain; charset=utf-8"

setup = common.setup
done = common.done_factory("publish", 1)
