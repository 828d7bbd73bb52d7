-- The depth-sweep workload: publish, receive and delete in a steady cycle, so the queue keeps
-- the depth it was filled to. request() sends a delete whenever this thread holds a received
-- id, else alternately a publish (POST /v1/publish) and a receive (GET /v1/consumer).
-- Receives take the lowest ids first, i.e. the pre-filled messages: the engine works at depth.
-- Messages = deletes answered true (each one a full publish -> receive -> delete life).
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(dir .. "common.lua")

local recv_path, del_prefix, publish_req
local pending, head, tail = {}, 1, 0
local turn = 0
wq_messages, wq_empty, wq_bad, wq_published = 0, 0, 0, 0

function init(args)
   local cid = common.cid()
   recv_path = "/v1/consumer?cid=" .. cid .. "&limit=1&visibility=" .. common.visibility
   del_prefix = "/v1/consumer?cid=" .. cid .. "&id="
   publish_req = wrk.format("POST", "/v1/publish",
      { ["Content-Type"] = "text/plain; charset=utf-8",
        ["Authorization"] = os.getenv("WQ_AUTHORIZATION") },  -- nil: no such header
      common.body(common.body_bytes))
end

function request()
   if head <= tail then
      local id = pending[head]
      pending[head] = nil
      head = head + 1
      return wrk.format("DELETE", del_prefix .. id)
   end
   turn = 1 - turn
   if turn == 1 then return publish_req end
   return wrk.format("GET", recv_path)
end

function response(status, headers, body)
   local c = body:byte(1)
   if c == 116 then
      wq_messages = wq_messages + 1
   elseif status == 201 then
      wq_published = wq_published + 1
   elseif status == 200 and c == 123 and body:find('"messages"', 1, true) then
      local id = body:match('"id"%s*:%s*(%d+)')
      if id then
         tail = tail + 1
         pending[tail] = id
      else
         wq_empty = wq_empty + 1
      end
   else
      wq_bad = wq_bad + 1
   end
end

setup = common.setup
done = common.done_factory("publish_recv_delete", 1)
