#!lua flags=allow-oom
-- The sweeper's lease: take it if free, keep it if ours. KEYS: lock. ARGV: holder, ttl_ms.
-- Returns 1 if the caller holds it now.
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if cur then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
