-- SQS ReceiveMessage (MaxNumberOfMessages WQ_BATCH = 10) then DeleteMessageBatch of every
-- receipt handle received, over the JSON 1.0 protocol, on WQ_QUEUE_URL (filled beforehand).
-- Messages = entries the delete answers report under Successful.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(dir .. "common.lua")

local url = os.getenv("WQ_QUEUE_URL")
-- A SigV4-shaped Authorization header (not a valid signature: neither WonderQ nor moto
-- checks it, but moto routes a request to SQS by the service named in it).
local auth = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/sqs/aws4_request, " ..
   "SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=" .. string.rep("0", 64)
local headers_recv = {
   ["Content-Type"] = "application/x-amz-json-1.0",
   ["X-Amz-Target"] = "AmazonSQS.ReceiveMessage",
   ["Authorization"] = auth,
}
local headers_del = {
   ["Content-Type"] = "application/x-amz-json-1.0",
   ["X-Amz-Target"] = "AmazonSQS.DeleteMessageBatch",
   ["Authorization"] = auth,
}
local recv_body = '{"QueueUrl":"' .. url .. '","MaxNumberOfMessages":' .. common.batch ..
   ',"VisibilityTimeout":' .. common.visibility .. '}'
local pending, head, tail = {}, 1, 0
wq_messages, wq_empty, wq_bad = 0, 0, 0

function request()
   if head <= tail then
      local entries = pending[head]
      pending[head] = nil
      head = head + 1
      return wrk.format("POST", "/", headers_del,
         '{"QueueUrl":"' .. url .. '","Entries":[' .. entries .. ']}')
   end
   return wrk.format("POST", "/", headers_recv, recv_body)
end

local find, sub, concat = string.find, string.sub, table.concat
function response(status, headers, body)
   if status ~= 200 then
      wq_bad = wq_bad + 1
      return
   end
   if find(body, '"Successful"', 1, true) then
      local n, pos = 0, 1
      local s = find(body, '"Successful"', 1, true)
      local f = find(body, '"Failed"', 1, true) or #body
      pos = s
      while true do
         local _, e = find(body, '"Id"', pos, true)
         if not e or e > f then break end
         n = n + 1
         pos = e + 1
      end
      wq_messages = wq_messages + n
      return
   end
   local entries, n, pos = {}, 0, 1
   while true do
      local _, e = find(body, '"ReceiptHandle":"', pos, true)
      if not e then break end
      local close = find(body, '"', e + 1, true)
      n = n + 1
      entries[n] = '{"Id":"e' .. n .. '","ReceiptHandle":"' .. sub(body, e + 1, close - 1) .. '"}'
      pos = close + common.body_bytes
   end
   if n == 0 then
      wq_empty = wq_empty + 1
   else
      tail = tail + 1
      pending[tail] = concat(entries, ",")
   end
end

setup = common.setup
done = common.done_factory("sqs_recv_delete", 1)
