-- Batch receive + batch ack: GET /v1/queues/{q}/messages?cid=C&limit=WQ_BATCH (100), then
-- POST /v1/queues/{q}/ack with {"cid": C, "ids": [...]} for every id received. The queue must
-- be filled beforehand. Messages = ids the server reports under "deleted".
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(dir .. "common.lua")

local recv_path, ack_path, ack_prefix
local headers = { ["Content-Type"] = "application/json" }
local pending, head, tail = {}, 1, 0
wq_messages, wq_empty, wq_bad = 0, 0, 0

function init(args)
   local cid = common.cid()
   local q = "/v1/queues/" .. common.queue
   recv_path = q .. "/messages?cid=" .. cid .. "&limit=" .. common.batch ..
      "&visibility=" .. common.visibility
   ack_path = q .. "/ack"
   ack_prefix = '{"cid":' .. cid .. ',"ids":['
end

function request()
   if head <= tail then
      local ids = pending[head]
      pending[head] = nil
      head = head + 1
      return wrk.format("POST", ack_path, headers, ack_prefix .. ids .. "]}")
   end
   return wrk.format("GET", recv_path)
end

local gmatch, concat = string.gmatch, table.concat

function response(status, headers, body)
   if status ~= 200 then
      wq_bad = wq_bad + 1
      return
   end
   local deleted = body:match('^{%s*"deleted"%s*:%s*%[([^%]]*)%]')
   if deleted then
      if deleted:find("%d") then
         local _, commas = deleted:gsub(",", "")
         wq_messages = wq_messages + commas + 1
      end
      if not body:find('"failed"%s*:%s*%[%s*%]') then wq_bad = wq_bad + 1 end
      return
   end
   if body:find('"messages"', 1, true) then
      local ids, n = {}, 0
      for id in gmatch(body, '"id"%s*:%s*(%d+)') do
         n = n + 1
         ids[n] = id
      end
      if n == 0 then
         wq_empty = wq_empty + 1
      else
         tail = tail + 1
         pending[tail] = concat(ids, ",")
      end
   elseif not body:find("ok", 1, true) then
      wq_bad = wq_bad + 1
   end
end

setup = common.setup
done = common.done_factory("batch_recv_ack", 1)
