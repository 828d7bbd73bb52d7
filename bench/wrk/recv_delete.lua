-- Receive one message, then delete it: GET /v1/consumer?cid=C&limit=1 and
-- DELETE /v1/consumer?cid=C&id=I, alternating. The queue must be filled beforehand
-- (bench/run.py does); a receive that finds it empty counts in "empty".
--
-- request() sends a delete whenever this thread holds a received id, else a receive;
-- response() tells the two answers apart by their body ("{"messages"..." or true/false) and
-- queues the received id. With one thread and 64 connections that settles into
-- receive, delete, receive, delete... across the connections. Messages = deletes answered true.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(dir .. "common.lua")

local recv_path, del_prefix
local pending, head, tail = {}, 1, 0
wq_messages, wq_empty, wq_bad = 0, 0, 0

function init(args)
   local cid = common.cid()
   recv_path = os.getenv("WQ_RECV_PATH") or
      ("/v1/consumer?cid=" .. cid .. "&limit=1&visibility=" .. common.visibility)
   del_prefix = os.getenv("WQ_DELETE_PREFIX") or ("/v1/consumer?cid=" .. cid .. "&id=")
end

function request()
   if head <= tail then
      local id = pending[head]
      pending[head] = nil
      head = head + 1
      return wrk.format("DELETE", del_prefix .. id)
   end
   return wrk.format("GET", recv_path)
end

function response(status, headers, body)
   local c = body:byte(1)
   if c == 116 then            -- "true": a delete that went through
      wq_messages = wq_messages + 1
   elseif status == 200 and c == 123 and body:find('"messages"', 1, true) then
      local id = body:match('"id"%s*:%s*(%d+)')
      if id then
         tail = tail + 1
         pending[tail] = id
      else
         wq_empty = wq_empty + 1
      end
   elseif status == 200 and body:find("ok", 1, true) then
      -- a ceiling's fixed answer: nothing to track
   else
      wq_bad = wq_bad + 1
   end
end

setup = common.setup
done = common.done_factory("recv_delete", 1)
