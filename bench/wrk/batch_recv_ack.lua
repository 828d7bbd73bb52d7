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

local find, match, concat = string.find, string.match, table.concat
-- After an id, the next one is at least a message body further on: skip that far. The bodies
-- are ours (WQ_BODY_BYTES of plain ASCII), so this is exact, and it keeps wrk's one core from
-- scanning 20 KB of bodies per answer with a Lua pattern.
local skip = common.body_bytes

function response(status, headers, body)
   if status ~= 200 then
      wq_bad = wq_bad + 1
      return
   end
   local deleted = match(body, '^{%s*"deleted"%s*:%s*%[([^%]]*)%]')
   if deleted then
      if find(deleted, "%d") then
         local _, commas = deleted:gsub(",", "")
         wq_messages = wq_messages + commas + 1
      end
      if not find(body, '"failed"%s*:%s*%[%s*%]') then wq_bad = wq_bad + 1 end
      return
   end
   if find(body, '"messages"', 1, true) then
      local ids, n, pos = {}, 0, 1
      while true do
         local _, e = find(body, '"id":', pos, true)
         if not e then break end
         local id = match(body, "^%s*(%d+)", e + 1)
         if id then
            n = n + 1
            ids[n] = id
         end
         pos = e + skip
      end
      if n == 0 then
         wq_empty = wq_empty + 1
      else
         tail = tail + 1
         pending[tail] = concat(ids, ",")
      end
   elseif not find(body, "ok", 1, true) then
      wq_bad = wq_bad + 1
   end
end

setup = common.setup
done = common.done_factory("batch_recv_ack", 1)
