-- A plain GET (WQ_PATH, default /), static. Used for quick checks of a server's bare rate.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(dir .. "common.lua")

wrk.method = "GET"
wrk.path = os.getenv("WQ_PATH") or "/"

setup = common.setup
done = common.done_factory("get", 1)
