"""The Lua scripts that keep one key's limits in Redis, each run atomically by the server.

One API key's state lives under five Redis keys sharing the hash tag ``{name}`` (one slot, so one script
may touch them all)::

    P:{name}:a   hash   month (YYYY-MM), spent (USD this month), reserved (USD held), tokens (in the window)
    P:{name}:r   zset   reservation id -> when it expires (ms): a reservation nobody settles is released then
    P:{name}:ru  hash   reservation id -> USD it holds
    P:{name}:w   zset   reservation id -> when it was admitted (ms): the sliding minute of the rate limits
    P:{name}:wt  hash   reservation id -> tokens it counts in that minute (the estimate, then the real figure)
    P:{name}:s   zset   settlement id -> when it was applied (ms), for SETTLED_KEEP_MS: a settlement sent again
                        (its reply was lost: Redis hung or the network cut) is applied once

Time is the Redis server's (``TIME``), so replicas with skewed clocks share one minute and one month.
Amounts are decimal strings (Lua numbers are doubles; a reply's numbers would be truncated to integers).
"""

from __future__ import annotations

__all__ = ["KEEP_S", "MONTH_OF", "RESERVE", "SEED", "SETTLE", "SETTLED_KEEP_MS", "WINDOW_MS", "key_names"]

WINDOW_MS = 60_000
#: An account nobody touches for this long is dropped; the next request re-reads its spend from the ledger.
KEEP_S = 40 * 86_400
#: How long an applied settlement is remembered, so that one sent again is not counted twice.
SETTLED_KEEP_MS = 15 * 60_000


def key_names(prefix: str, name: str) -> list[str]:
    base = f"{prefix}:{{{name}}}"
    return [f"{base}:a", f"{base}:r", f"{base}:ru", f"{base}:w", f"{base}:wt", f"{base}:s"]


#: ``month_of(seconds)``: the UTC calendar month of a POSIX time, as "YYYY-MM" (days to civil date, after
#: Howard Hinnant's algorithm: Lua in Redis has no os.date).
MONTH_OF = """
local function month_of(secs)
  local z = math.floor(secs / 86400) + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return string.format('%04d-%02d', y, m)
end
"""

# Drops the members of a zset scored at or below ``upto`` with their entries in the companion hash, and
# returns the sum of those entries. In slices, so that the unpacked arguments stay few.
_DROP = """
local function drop(zset, hash, upto)
  local total = 0
  while true do
    local ids = redis.call('ZRANGEBYSCORE', zset, '-inf', upto, 'LIMIT', 0, 256)
    if #ids == 0 then return total end
    local values = redis.call('HMGET', hash, unpack(ids))
    for _, v in ipairs(values) do total = total + (tonumber(v) or 0) end
    redis.call('ZREM', zset, unpack(ids))
    redis.call('HDEL', hash, unpack(ids))
    if #ids < 256 then return total end
  end
end
"""

#: KEYS: key_names(); ARGV: id, usd, tokens, rpm, tpm, budget, fallback usd (-1: none for every limit), reservation
#: TTL ms. Replies {'ok', usd held, downgraded 0|1} | {'unseeded'} | {'rpm', retry ms, requests} |
#: {'tpm', retry ms, tokens used} | {'budget', spent, reserved}. The checks are those of ``Budgets.admit``:
#: rate limits first (never downgraded), then the budget, then the reservation is recorded.
RESERVE = (
    MONTH_OF
    + _DROP
    + """
local acct, res, resu, win, wint = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local rid, usd, tokens = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local rpm, tpm, budget, fallback = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local ttl = tonumber(ARGV[8])
if redis.call('EXISTS', acct) == 0 then return {'unseeded'} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local month = month_of(tonumber(t[1]))
local state = redis.call('HMGET', acct, 'month', 'spent', 'reserved', 'tokens')
local spent, reserved, used = tonumber(state[2]) or 0, tonumber(state[3]) or 0, tonumber(state[4]) or 0
if state[1] ~= month then
  spent = 0
  redis.call('HSET', acct, 'month', month, 'spent', '0')
end
reserved = math.max(0, reserved - drop(res, resu, now))
used = math.max(0, used - drop(win, wint, now - """
    + str(WINDOW_MS)
    + """))
local function save()
  redis.call('HSET', acct, 'reserved', tostring(reserved), 'tokens', tostring(used))
  redis.call('EXPIRE', acct, """
    + str(KEEP_S)
    + """)
end
local function retry()
  local first = redis.call('ZRANGE', win, 0, 0, 'WITHSCORES')
  if #first == 0 then return '0' end
  return tostring(tonumber(first[2]) + """
    + str(WINDOW_MS)
    + """ - now)
end
if rpm >= 0 then
  local n = redis.call('ZCARD', win)
  if n >= rpm then save(); return {'rpm', retry(), tostring(n)} end
end
if tpm >= 0 and used + tokens > tpm then save(); return {'tpm', retry(), tostring(used)} end
local downgraded = 0
if budget >= 0 and spent + reserved + usd > budget then
  if fallback < 0 then save(); return {'budget', tostring(spent), tostring(reserved)} end
  usd, downgraded = fallback, 1
end
reserved = reserved + usd
redis.call('ZADD', res, now + ttl, rid)
redis.call('HSET', resu, rid, tostring(usd))
redis.call('PEXPIRE', res, ttl + 1000)
redis.call('PEXPIRE', resu, ttl + 1000)
if rpm >= 0 or tpm >= 0 then
  used = used + tokens
  redis.call('ZADD', win, now, rid)
  redis.call('HSET', wint, rid, tokens)
  redis.call('PEXPIRE', win, """
    + str(WINDOW_MS + 1000)
    + """)
  redis.call('PEXPIRE', wint, """
    + str(WINDOW_MS + 1000)
    + """)
end
save()
return {'ok', tostring(usd), downgraded}
"""
)

#: KEYS: key_names(); ARGV: settlement id, reservation id ('' for a request admitted without Redis), usd, tokens
#: (-1: not in the window). Releases the reservation (if it is still held), replaces its estimated tokens in the
#: window by the real ones, and adds the real cost to this month's spend, once per settlement id (2: already
#: applied). Returns 0 where the account is gone (Redis lost its data): the spend is then re-read from the
#: ledger, where this request's row is.
SETTLE = (
    MONTH_OF
    + """
local acct, res, resu, win, wint, done = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local sid, rid, usd, tokens = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
if redis.call('EXISTS', acct) == 0 then return 0 end
if redis.call('ZSCORE', done, sid) then return 2 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local month = month_of(tonumber(t[1]))
if redis.call('HGET', acct, 'month') ~= month then redis.call('HSET', acct, 'month', month, 'spent', '0') end
if rid ~= '' then
  local held = redis.call('HGET', resu, rid)
  if held then
    redis.call('HDEL', resu, rid)
    redis.call('ZREM', res, rid)
    local r = (tonumber(redis.call('HGET', acct, 'reserved')) or 0) - tonumber(held)
    redis.call('HSET', acct, 'reserved', tostring(math.max(0, r)))
  end
  local was = redis.call('HGET', wint, rid)
  if was and tokens >= 0 then
    redis.call('HSET', wint, rid, tokens)
    local u = (tonumber(redis.call('HGET', acct, 'tokens')) or 0) - tonumber(was) + tokens
    redis.call('HSET', acct, 'tokens', tostring(math.max(0, u)))
  end
end
if usd > 0 then redis.call('HINCRBYFLOAT', acct, 'spent', tostring(usd)) end
redis.call('ZADD', done, now, sid)
redis.call('ZREMRANGEBYSCORE', done, '-inf', now - """
    + str(SETTLED_KEEP_MS)
    + """)
redis.call('PEXPIRE', done, """
    + str(SETTLED_KEEP_MS)
    + """)
redis.call('EXPIRE', acct, """
    + str(KEEP_S)
    + """)
return 1
"""
)

#: KEYS: key_names(); ARGV: month (YYYY-MM), spent so far this month (from the ledger). Creates the account
#: only where none exists (another replica may have seeded it first); a fresh account starts with nothing held.
SEED = (
    """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
redis.call('HSET', KEYS[1], 'month', ARGV[1], 'spent', ARGV[2], 'reserved', '0', 'tokens', '0')
redis.call('EXPIRE', KEYS[1], """
    + str(KEEP_S)
    + """)
return 1
"""
)
