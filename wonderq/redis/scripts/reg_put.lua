#!lua flags=allow-oom
-- Create or update a queue in the registry (wq:{reg}:*, one slot), which serialises every
-- change of attributes and counts dead-letter references (so a queue in use as one cannot
-- be deleted: 409). The caller checked each value; the checks that need other queues are
-- here, in the engine's order. Attributes are packed 'vis|delay|maxr|dlq|mmb|ret|version'
-- ('' = null), then '|meta' when a face keeps extras ('=' before the text; '' = null).
-- KEYS: queues, refs, version counter. ARGV: name, max queues, defaults (packed without
-- version), then field/value pairs to set. Returns {created, packed}.
local Q, REFS, VER = KEYS[1], KEYS[2], KEYS[3]
local name = ARGV[1]
local FIELDS = {'vis', 'delay', 'maxr', 'dlq', 'mmb', 'ret', 'ver'}
-- The seven fields, then (after a seventh '|') the meta, which may hold '|' itself.
local function unpack_attrs(packed)
  local out, pos = {meta = ''}, 1
  for i = 1, #FIELDS do
    local bar = string.find(packed, '|', pos, true)
    if not bar then
      out[FIELDS[i]] = string.sub(packed, pos)
      return out
    end
    out[FIELDS[i]] = string.sub(packed, pos, bar - 1)
    pos = bar + 1
  end
  out.meta = string.sub(packed, pos)
  return out
end
local function bad(msg)
  return redis.error_reply('WQ invalid_attribute ' .. msg)
end
local cur = redis.call('HGET', Q, name)
local created = cur == false or cur == nil
local a = unpack_attrs(created and ARGV[3] or cur)
local old_dlq = (not created) and a.dlq or ''
for i = 4, #ARGV, 2 do a[ARGV[i]] = ARGV[i + 1] end
if a.dlq ~= '' then
  if a.dlq == name then return bad('dead_letter_queue cannot be the queue itself') end
  if redis.call('HEXISTS', Q, a.dlq) == 0 then
    return bad("dead_letter_queue '" .. a.dlq .. "' does not exist")
  end
end
if a.maxr ~= '' and a.dlq == '' then return bad('max_receives requires a dead_letter_queue') end
if created and redis.call('HLEN', Q) >= tonumber(ARGV[2]) then
  return redis.error_reply('WQ too_many_queues at most ' .. ARGV[2] .. ' queues')
end
if old_dlq ~= '' then redis.call('HINCRBY', REFS, old_dlq, -1) end
if a.dlq ~= '' then redis.call('HINCRBY', REFS, a.dlq, 1) end
local ver = redis.call('INCR', VER)
local packed = table.concat({a.vis, a.delay, a.maxr, a.dlq, a.mmb, a.ret, ver}, '|')
if a.meta ~= '' then packed = packed .. '|' .. a.meta end
redis.call('HSET', Q, name, packed)
return {created and 1 or 0, packed}
