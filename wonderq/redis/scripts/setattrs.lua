#!lua flags=allow-oom
-- Write the registry's attributes into the queue's own slot (the copy data scripts read),
-- unless a newer version is already there. A queue created anew starts empty, whatever an
-- interrupted delete left. ARGV: slot, created, version, vis, delay, maxr, dlq, mmb, ret,
-- meta ('' = null).
local ver = tonumber(ARGV[3])
local cur = tonumber(CALL('HGET', A, 'ver') or '0')
if ver <= cur then return 0 end
if ARGV[2] == '1' then CALL('UNLINK', R, L, D, B, S, T, O, I, W, X) end
CALL('HSET', A, 'ver', ARGV[3], 'vis', ARGV[4], 'delay', ARGV[5], 'maxr', ARGV[6],
     'dlq', ARGV[7], 'mmb', ARGV[8], 'ret', ARGV[9], 'meta', ARGV[10] or '')
return 1
