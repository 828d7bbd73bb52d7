-- SQS SendMessage over the JSON 1.0 protocol: POST / with a constant body of one message of
-- WQ_BODY_BYTES (200) bytes to WQ_QUEUE_URL. Every SendMessage answer counts one message.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(dir .. "common.lua")

local url = os.getenv("WQ_QUEUE_URL")
-- A SigV4-shaped Authorization header (not a valid signature: neither WonderQ nor moto
-- checks it, but moto routes a request to SQS by the service named in it).
local auth = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/sqs/aws4_request, " ..
   "SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=" .. string.rep("0", 64)
wrk.headers["Authorization"] = auth
wrk.method = "POST"
wrk.path = "/"
wrk.headers["Content-Type"] = "application/x-amz-json-1.0"
wrk.headers["X-Amz-Target"] = "AmazonSQS.SendMessage"
wrk.body = '{"QueueUrl":"' .. url .. '","MessageBody":"' .. common.body(common.body_bytes) .. '"}'

wq_messages, wq_empty, wq_bad = 0, 0, 0
local find = string.find
function response(status, headers, body)
   -- Counted only when the answer is SendMessage's (a 200 from another service is not).
   if status == 200 and find(body, '"MD5OfMessageBody"', 1, true) then
      wq_messages = wq_messages + 1
   else
      wq_bad = wq_bad + 1
   end
end

setup = common.setup
done = common.done_factory("sqs_send", 1)
