-- Shared by every data script (prepended at load time, after the script's shebang line).
-- The keys of one queue q, all tagged {q} so they live in one cluster slot:
local A, R, L, D = KEYS[1], KEYS[2], KEYS[3], KEYS[4]   -- attributes, ready, leased, delayed
local B, S, T, O = KEYS[5], KEYS[6], KEYS[7], KEYS[8]   -- bodies, state, totals, DLQ outbox
local I, W, V = KEYS[9], KEYS[10], KEYS[11]            -- imports, waiters flag, slot id counter
local X = KEYS[12]                                      -- SQS extras (see has_extras)
local SLOT = tonumber(ARGV[1])                          -- the slot number in every id
local CH = string.sub(A, 1, -2) .. 'ch'                -- the queue's shard channel
local CALL = redis.call
-- Members are ids as 19-digit zero-padded decimals: order by bytes = order by id, exact to
-- 63 bits (Lua numbers and ZSET scores are doubles). Ready messages all score 0.
local EPOCH = 1735689600000                             -- 2025-01-01, ms
local MOVES = 0                                         -- dead-letter moves into the outbox

local function fail(code, msg)
  error({err = 'WQ ' .. code .. ' ' .. msg})
end

--@clock: replaced by the store: Redis's own TIME, or a test's clock key.
local function clock()
  local t = CALL('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function exists()
  if CALL('EXISTS', A) == 0 then
    fail('queue_not_found', "queue '" .. string.match(A, '{(.*)}') .. "' does not exist")
  end
end

-- id = slot * 2^49 + v, as 19 decimal digits (2^49 = 56294 * 10^10 + 9953421312).
local function idstr(v)
  local lo = SLOT * 9953421312 + v % 10000000000
  local hi = SLOT * 56294 + math.floor(v / 10000000000) + math.floor(lo / 10000000000)
  return string.format('%09d%010d', hi, lo % 10000000000)
end

-- A count as text: a Lua number given to redis.call or string.format costs ~2,000 Redis
-- instructions (snprintf), the receive counts are nearly always one digit.
local function num(n)
  if n >= 0 and n < 10 then return string.sub('0123456789', n + 1, n + 1) end
  return string.format('%d', n)
end

local function plain(id)  -- the id as JSON writes it
  return string.match(id, '^0*(%d+)$')
end

-- A stored body is 'sent_ms|escaped body': its publish time travels with it (dead letters
-- too), so retention counts from the publish, exactly.
local function sent_of(v)
  return tonumber(string.sub(v, 1, string.find(v, '|', 1, true) - 1))
end

local function body_of(v)
  return string.sub(v, string.find(v, '|', 1, true) + 1)
end

local function passed(v, now, ret)
  return ret ~= nil and v ~= nil and v ~= false and now >= sent_of(v) + ret
end

-- redis.call with many arguments, 1000 at a time (Lua's unpack has a stack limit).
local function many(cmd, key, list, width)
  local step = 1000 * width
  for i = 1, #list, step do
    CALL(cmd, key, unpack(list, i, math.min(i + step - 1, #list)))
  end
end

local ATTRS = nil
local function attrs()
  if ATTRS == nil then
    local a = CALL('HMGET', A, 'maxr', 'dlq', 'ret', 'vis', 'delay', 'mmb')
    ATTRS = {maxr = tonumber(a[1]), dlq = a[2] or '', ret = tonumber(a[3]),
             vis = tonumber(a[4]), delay = tonumber(a[5]), mmb = tonumber(a[6])}
  end
  return ATTRS
end

local function receives_of(state)
  if not state then return 0 end
  return tonumber(string.match(state, '^(%d+)'))
end

-- The SQS extras of a message, kept apart so a plain message costs nothing more: field id =
-- its attribute blob (only when it has one), field id .. 'f' = its first SQS receive (epoch
-- ms). Whether the queue has any is asked once per script (the writers set it).
local HASX = nil
local function has_extras()
  if HASX == nil then HASX = CALL('EXISTS', X) == 1 end
  return HASX
end

local function drop(id)
  CALL('HDEL', B, id)
  CALL('HDEL', S, id)
  if has_extras() then CALL('HDEL', X, id, id .. 'f') end
end

-- drop() for many ids at once: one command per hash, not per id.
local function drop_all(ids)
  many('HDEL', B, ids, 1)
  many('HDEL', S, ids, 1)
  if has_extras() then
    local fields = {}
    for i = 1, #ids do
      fields[2 * i - 1] = ids[i]
      fields[2 * i] = ids[i] .. 'f'
    end
    many('HDEL', X, fields, 2)
  end
end

-- redis.call(cmd, key, list...) for a reply per element, 1000 elements at a time.
local function fetch(cmd, key, list)
  if #list <= 1000 then return CALL(cmd, key, unpack(list)) end
  local out = {}
  for i = 1, #list, 1000 do
    local part = CALL(cmd, key, unpack(list, i, math.min(i + 999, #list)))
    for j = 1, #part do out[#out + 1] = part[j] end
  end
  return out
end

-- Ids for n new messages: at least the clock (x512 per ms) so a failover that lost the
-- counter's last writes does not hand their ids out again (research/scaleout.md section 5).
-- Returns the first counter value (idstr makes ids of it).
-- One SET ... GET when the clock is ahead of the counter (the usual case), a second SET when
-- the counter was ahead.
local function new_ids(now, n)
  local floor = (now - EPOCH) * 512
  local old = tonumber(CALL('SET', V, string.format('%.0f', floor + n - 1), 'GET') or '0')
  if old + 1 > floor then
    CALL('SET', V, string.format('%.0f', old + n))
    return old + 1
  end
  return floor
end

local function count_retention(n)
  if n > 0 then CALL('HINCRBY', T, 'expired_retention', n) end
end

-- A lease ended (expired, or released): the message is available again with its receive
-- count, or moves to the outbox of the dead-letter queue (count back to 0, same id), or is
-- dropped if its retention has passed meanwhile.
local function end_leases(ids, now, expired)
  if #ids == 0 then return end
  local a = attrs()
  local states = fetch('HMGET', S, ids)
  local values = fetch('HMGET', B, ids)
  local ready, dead, old, back = {}, 0, 0, 0
  for i = 1, #ids do
    local id, rc, v = ids[i], receives_of(states[i]), values[i]
    if not v then
      CALL('HDEL', S, id)
    elseif a.maxr and a.dlq ~= '' and rc >= a.maxr then
      local entry = a.dlq .. '\n' .. string.format('%d', now) .. '\n' .. v
      if has_extras() then  -- the extras travel last: the first receive, then the blob
        local ex = CALL('HMGET', X, id, id .. 'f')
        if ex[1] or ex[2] then entry = entry .. '\n' .. (ex[2] or '') .. '\n' .. (ex[1] or '') end
      end
      drop(id)
      CALL('HSET', O, id, entry)
      dead = dead + 1
    elseif passed(v, now, a.ret) then
      drop(id)
      old = old + 1
    else
      CALL('HSET', S, id, rc)
      ready[#ready + 1] = '0'
      ready[#ready + 1] = id
      back = back + 1
    end
  end
  if #ready > 0 then many('ZADD', R, ready, 2) end
  if dead > 0 then
    CALL('HINCRBY', T, 'dead_lettered', dead)
    MOVES = MOVES + dead
  end
  count_retention(old)
  if expired and back + old > 0 then CALL('HINCRBY', T, 'expired', back + old) end
end

-- Lazy expiry: up to k due leases and ended delays become available. Returns how many.
local function promote(now, k)
  local nows = string.format('%d', now)
  local due = CALL('ZRANGEBYSCORE', L, '-inf', nows, 'LIMIT', '0', k == 1000 and '1000' or num(k))
  if #due > 0 then
    many('ZREM', L, due, 1)
    end_leases(due, now, true)
  end
  local n = #due
  if n < k then
    local dd = CALL('ZRANGEBYSCORE', D, '-inf', nows, 'LIMIT', '0', n == 0 and k == 1000 and '1000' or num(k - n))
    if #dd > 0 then
      many('ZREM', D, dd, 1)
      local ret = attrs().ret
      local values = {}
      if ret ~= nil then values = fetch('HMGET', B, dd) end
      local z, old = {}, 0
      for i = 1, #dd do
        if ret ~= nil and passed(values[i], now, ret) then
          drop(dd[i])
          old = old + 1
        else
          z[#z + 1] = '0'
          z[#z + 1] = dd[i]
        end
      end
      if #z > 0 then many('ZADD', R, z, 2) end
      count_retention(old)
      n = n + #dd
    end
  end
  return n
end

-- Retention at the head of ready: the oldest messages leave once their retention has passed
-- (exact where ids follow publish order, as within one slot; a message imported from
-- another slot is checked when a receive or peek meets it). Returns how many left.
local function trim_head(now)
  local ret = attrs().ret
  if ret == nil then return 0 end
  local gone = 0
  for _ = 1, 20 do
    local head = CALL('ZRANGE', R, 0, 49)
    if #head == 0 then break end
    local values = CALL('HMGET', B, unpack(head))
    local young = false
    for i = 1, #head do
      if passed(values[i], now, ret) or not values[i] then
        CALL('ZREM', R, head[i])
        drop(head[i])
        gone = gone + 1
      else
        young = true
        break
      end
    end
    if young then break end
  end
  count_retention(gone)
  return gone
end

-- Take up to limit ready messages, lowest ids first, dropping those past retention (or
-- gone) where the receive meets them. Returns ids and stored values.
local function take_ready(now, limit, a)
  local ids, values, old = {}, {}, 0
  while #ids < limit do
    local popped = CALL('ZPOPMIN', R, limit - #ids)
    if #popped == 0 then break end
    local got = {}
    for i = 1, #popped, 2 do got[#got + 1] = popped[i] end
    local vs = fetch('HMGET', B, got)
    for i = 1, #got do
      if passed(vs[i], now, a.ret) or not vs[i] then
        drop(got[i])  -- past its retention: dropped where a receive meets it
        if vs[i] then old = old + 1 end
      else
        ids[#ids + 1] = got[i]
        values[#values + 1] = vs[i]
      end
    end
  end
  count_retention(old)
  return ids, values
end

-- Lease ids to cid until deadline, one more receive each. Returns the receive counts, and
-- the same as text. cid and deadline may also be tables, one entry per id (a turn's
-- receives at once: the deadline as text there).
local function lease_to(ids, cid, deadline)
  local states = fetch('HMGET', S, ids)
  local counts, texts, hs, zl = {}, {}, {}, {}
  local per = type(cid) == 'table'
  local dl, tail
  if not per then
    dl = string.format('%d', deadline)
    tail = ':' .. cid
  end
  for i = 1, #ids do
    local rc = receives_of(states[i]) + 1
    local text = num(rc)
    counts[i] = rc
    texts[i] = text
    if per then
      tail = ':' .. cid[i]
      dl = deadline[i]
    end
    hs[2 * i - 1] = ids[i]
    hs[2 * i] = text .. tail
    zl[2 * i - 1] = dl
    zl[2 * i] = ids[i]
  end
  many('HSET', S, hs, 2)
  many('ZADD', L, zl, 2)
  CALL('HINCRBY', T, 'delivered', #ids)
  return counts, texts
end

local function wake()
  if CALL('EXISTS', W) == 1 then CALL('SPUBLISH', CH, '1') end
end

-- The JSON answer of receive and peek: {"messages":[{"id","body","receives"},...]}.
-- Bodies are stored already JSON-escaped (after their publish time).
local function answer(ids, values, counts, texts)
  local parts = {}
  for i = 1, #ids do
    parts[i] = '{"id":' .. plain(ids[i]) .. ',"body":"' .. body_of(values[i]) ..
               '","receives":' .. (texts and texts[i] or num(counts[i])) .. '}'
  end
  return '{"messages":[' .. table.concat(parts, ',') .. ']}'
end
