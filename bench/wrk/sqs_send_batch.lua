-- SQS SendMessageBatch over the JSON 1.0 protocol: WQ_BATCH (10) messages of WQ_BODY_BYTES
-- (200) bytes to WQ_QUEUE_URL, constant body. Messages = entries answered as Successful.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(dir .. "common.lua")

local url = os.getenv("WQ_QUEUE_URL")
-- A SigV4-shaped Authorization header (not a valid signature: neither WonderQ nor moto
-- checks it, but moto routes a request to SQS by the service named in it).
local auth = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/sqs/aws4_request, " ..
   "SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=" .. string.rep("0", 64)
local entries = {}
for i = 1, common.batch do
   entries[i] = '{"Id":"m' .. i .. '","MessageBody":"' .. common.body(common.body_bytes) .. '"}'
end
wrk.headers["Authorization"] = auth
wrk.method = "POST"
wrk.path = "/"
wrk.headers["Content-Type"] = "application/x-amz-json-1.0"
wrk.headers["X-Amz-Target"] = "AmazonSQS.SendMessageBatch"
wrk.body = '{"QueueUrl":"' .. url .. '","Entries":[' .. table.concat(entries, ",") .. ']}'
wq_messages, wq_empty, wq_bad = 0, 0, 0

local find = string.find
function response(status, headers, body)
   if status ~= 200 then
      wq_bad = wq_bad + 1
      return
   end
   local n, pos = 0, 1
   while true do
      local _, e = find(body, '"MD5OfMessageBody"', pos, true)
      if not e then break end
      n = n + 1
      pos = e + 1
   end
   wq_messages = wq_messages + n
   if n ~= common.batch then wq_bad = wq_bad + 1 end
end

setup = common.setup
done = common.done_factory("sqs_send_batch", common.batch)
