-- SQS SendMessage over the JSON 1.0 protocol: POST / with a constant body of one message of
-- WQ_BODY_BYTES (200) bytes to WQ_QUEUE_URL. Every 200 counts one message.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(dir .. "common.lua")

local url = os.getenv("WQ_QUEUE_URL")
wrk.method = "POST"
wrk.path = "/"
wrk.headers["Content-Type"] = "application/x-amz-json-1.0"
wrk.headers["X-Amz-Target"] = "AmazonSQS.SendMessage"
wrk.body = '{"QueueUrl":"' .. url .. '","MessageBody":"' .. common.body(common.body_bytes) .. '"}'

setup = common.setup
done = common.done_factory("sqs_send", 1)
