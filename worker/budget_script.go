package worker

import "github.com/redis/go-redis/v9"

// The budget's Redis keys. They all carry the hash tag {budget}, so every script below
// touches a single slot and runs unchanged on Redis Cluster.
const (
	budgetKeyPrefix   = "livenessq:{budget}:"
	budgetKeyGCRA     = budgetKeyPrefix + "gcra"     // string: theoretical arrival time, µs since the epoch
	budgetKeyLeases   = budgetKeyPrefix + "leases"   // zset: lease id → expiry, µs since the epoch
	budgetKeyCooldown = budgetKeyPrefix + "cooldown" // hash: until, length, streak, since, last (µs)
	budgetKeyProbe    = budgetKeyPrefix + "probe"    // string: id of the lease making the probe call, PX = lease TTL
	budgetKeyPaused   = budgetKeyPrefix + "paused"   // hash: reason, at, since
	budgetKeyQuota    = budgetKeyPrefix + "quota"    // hash: period_end (µs), used
	budgetKeyConfig   = budgetKeyPrefix + "config"   // hash: the configuration last written by a budget
	budgetKeySent     = budgetKeyPrefix + "sent"     // zset: lease id → when its call left, µs (the last calls)
)

// Codes returned by budgetAcquireScript.
const (
	budgetAdmitted    = 0 // a lease was granted
	budgetDeniedRate  = 1 // the GCRA has no room yet; wait is exact
	budgetDeniedConc  = 2 // MaxInFlight leases are held
	budgetDeniedCool  = 3 // the usage-limit cooldown is open; wait is until it ends
	budgetDeniedProbe = 4 // the cooldown has ended and another caller is probing
	budgetDeniedQuota = 5 // the quota of the period is used up; wait is until it resets
)

// Events returned by budgetReleaseScript.
const (
	budgetEventNone     = 0
	budgetEventOpened   = 1 // a 403 opened a cooldown
	budgetEventExtended = 2 // a 403 from a non-probe call while a cooldown was open
	budgetEventRearmed  = 3 // the probe got a 403: the cooldown doubled
	budgetEventClosed   = 4 // the probe succeeded: the cooldown is over for everyone
)

// All times are integer microseconds from Redis TIME, so every process shares one
// clock. Times are written with string.format so that no digit is lost to Lua's
// default number formatting.
const budgetLuaNow = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function fmt(x) return string.format('%.3f', x) end
`

// budgetAcquireScript checks, in one atomic step: the cooldown (and takes the probe lock
// when the cooldown has ended), the quota of the period, the rate and the lease count;
// it grants a lease only when all of them admit, and changes nothing otherwise.
//
// The rate is two limits. A GCRA spaces turns at the rate (quota-paced, with the burst
// tolerance). The send log (a zset of when the last calls left) keeps any n+1 of them
// at least span apart: a turn is no earlier than the n-th latest entry plus span. Since
// every entry in a span is in the log, any window of length span holds at most n.
//
// KEYS: gcra, leases, cooldown, probe, quota, sent.
// ARGV: lease id, max in flight (0 = no cap), lease TTL µs, rate (calls/s, 0 = no rate
// limit), burst tolerance µs, quota (0 = none), quota period µs, quota anchor µs,
// concurrency poll µs, probe poll µs, reservation horizon µs, n (0 = no log), span µs.
// Returns {code, wait µs, now µs, probe 0|1}. For a grant, wait is how long the caller
// sleeps before its call (its reserved turn, at most the horizon ahead).
var budgetAcquireScript = redis.NewScript(budgetLuaNow + `
local id = ARGV[1]
local maxin = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local pace = tonumber(ARGV[4])
local tol = tonumber(ARGV[5])
local quota = tonumber(ARGV[6])
local qperiod = tonumber(ARGV[7])
local qanchor = tonumber(ARGV[8])

local probe = 0
local cd = redis.call('HGET', KEYS[3], 'until')
if cd then
  local untilv = tonumber(cd)
  if now < untilv then return {3, math.ceil(untilv - now), now, 0} end
  if redis.call('EXISTS', KEYS[4]) == 1 then return {4, tonumber(ARGV[10]), now, 0} end
  probe = 1
end

local qused, qend = 0, 0
if quota > 0 then
  qend = qanchor + (math.floor((now - qanchor) / qperiod) + 1) * qperiod
  local q = redis.call('HMGET', KEYS[5], 'period_end', 'used')
  if q[1] and tonumber(q[1]) == qend then qused = tonumber(q[2]) or 0 end
  if qused >= quota then return {5, math.ceil(qend - now), now, 0} end
  local qpace = (quota - qused) * 1000000 / (qend - now)
  if pace == 0 or qpace < pace then pace = qpace end
end

local tat = now
local goat = now
local ratewait = 0
local logn, span = tonumber(ARGV[12]), tonumber(ARGV[13])
if pace > 0 then
  local g = redis.call('GET', KEYS[1])
  if g then tat = math.max(tonumber(g), now) end
  -- The call may go tol (the burst allowance) ahead of its even-paced turn, and is
  -- granted up to the horizon (ARGV[11]) before that moment: the caller sleeps until goat, so the
  -- round trip to Redis is not part of the schedule.
  goat = math.max(now, tat - tol)
  if logn > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', '(' .. fmt(now - 2 * span))
    local e = redis.call('ZREVRANGE', KEYS[6], logn - 1, logn - 1, 'WITHSCORES')
    if e[2] then goat = math.max(goat, tonumber(e[2]) + span) end
  end
  if goat - now > tonumber(ARGV[11]) then ratewait = goat - tonumber(ARGV[11]) - now end
end

redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', fmt(now))
if maxin > 0 and redis.call('ZCARD', KEYS[2]) >= maxin then
  return {2, math.ceil(math.max(ratewait, tonumber(ARGV[9]))), now, 0}
end
if ratewait > 0 then return {1, math.ceil(ratewait), now, 0} end

if pace > 0 then
  -- The GCRA's schedule does not follow a turn the log put later (a late call moved
  -- there): the calls after it keep their own turns rather than queue behind it.
  local newtat = tat + 1000000 / pace
  redis.call('SET', KEYS[1], fmt(newtat), 'PX', math.ceil((newtat - now) / 1000) + 1000)
  if logn > 0 then
    redis.call('ZADD', KEYS[6], fmt(goat), id)
    redis.call('PEXPIRE', KEYS[6], math.ceil(2 * span / 1000) + 1000)
  end
end
redis.call('ZADD', KEYS[2], fmt(now + ttl), id)
if quota > 0 then
  redis.call('HSET', KEYS[5], 'period_end', fmt(qend), 'used', qused + 1)
  redis.call('PEXPIRE', KEYS[5], math.ceil((qend - now) / 1000) + 60000)
end
if probe == 1 then
  redis.call('SET', KEYS[4], id, 'PX', math.ceil(ttl / 1000))
end
return {0, math.floor(goat - now), now, probe}
`)

// budgetMoveScript moves a late lease's entry in the send log to at = now + delay (the
// caller sleeps until then, so that the call leaves when the log says, whatever the
// answer's trip took), if at is at most max late after the old turn and the log still
// keeps any n+1 entries at least span apart with the entry there: for every run of n+1
// consecutive entries containing at, made of the m lowest entries above at and the n−m
// highest at or below it (m = 0, 1, …), the run's last minus its first is at least
// span. Entries before at − span are in no such run.
//
// Otherwise the turn is given up: its entry is removed and the GCRA gets its interval
// back, so the next turn comes that much sooner and the rate is not lost.
//
// KEYS: sent, gcra. ARGV: lease id, n, span µs, max late µs, GCRA interval µs, delay µs.
// Returns {1 moved | 0 given up, now µs, at µs}.
var budgetMoveScript = redis.NewScript(budgetLuaNow + `
local id = ARGV[1]
local n, span = tonumber(ARGV[2]), tonumber(ARGV[3])
local at = now + tonumber(ARGV[6])
local old = redis.call('ZSCORE', KEYS[1], id)
if not old then return {0, now, at} end
redis.call('ZREM', KEYS[1], id)
local function giveup()
  local tat = redis.call('GET', KEYS[2])
  if tat then redis.call('SET', KEYS[2], fmt(tonumber(tat) - tonumber(ARGV[5])), 'KEEPTTL') end
  return {0, now, at}
end
if at - tonumber(old) > tonumber(ARGV[4]) then return giveup() end
local above = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. fmt(at), '+inf', 'WITHSCORES', 'LIMIT', 0, n - 1)
local a = #above / 2
-- the (n-a)-th to the n-th highest at or below at, highest first
local below = redis.call('ZREVRANGEBYSCORE', KEYS[1], fmt(at), '-inf', 'WITHSCORES', 'LIMIT', n - 1 - a, a + 1)
for m = 0, a do
  local j = a - m + 1 -- below[j] is the (n-m)-th highest at or below at
  if below[2 * j] then
    local last = at
    if m > 0 then last = tonumber(above[2 * m]) end
    if last - tonumber(below[2 * j]) < span then return giveup() end
  end
end
redis.call('ZADD', KEYS[1], fmt(at), id)
return {1, now, at}
`)

// budgetReleaseScript frees a lease and applies the call's outcome to the cooldown.
//
// KEYS: leases, cooldown, probe, paused.
// ARGV: lease id, outcome (0 other, 1 ok, 2 usage limited), probe 0|1, cooldown µs,
// cooldown max µs, pause after µs (0 = never), retry-after µs, pause reason.
// Returns {event, paused now 0|1, now, until, length, streak, since}.
var budgetReleaseScript = redis.NewScript(budgetLuaNow + `
local id = ARGV[1]
local outcome = tonumber(ARGV[2])
local isprobe = ARGV[3] == '1'
redis.call('ZREM', KEYS[1], id)
if isprobe and redis.call('GET', KEYS[3]) == id then redis.call('DEL', KEYS[3]) end

local cd = redis.call('HMGET', KEYS[2], 'until', 'length', 'streak', 'since')
local open = cd[1] ~= false
if outcome == 1 and isprobe and open then
  redis.call('DEL', KEYS[2])
  return {4, 0, now, 0, 0, 0, 0}
end
if outcome ~= 2 then return {0, 0, now, 0, 0, 0, 0} end

local base, cmax = tonumber(ARGV[4]), tonumber(ARGV[5])
local ra = tonumber(ARGV[7])
local event, untilv, length, streak, since
if not open then
  event, streak, since = 1, 1, now
  length = math.min(math.max(base, ra), cmax)
  untilv = now + length
elseif isprobe then
  event, streak, since = 3, tonumber(cd[3]) + 1, tonumber(cd[4])
  length = math.min(math.max(tonumber(cd[2]) * 2, ra), cmax)
  untilv = now + length
else
  event, streak, since = 2, tonumber(cd[3]), tonumber(cd[4])
  length = tonumber(cd[2])
  untilv = math.max(tonumber(cd[1]), now + math.min(math.max(length, ra), cmax))
end
redis.call('HSET', KEYS[2], 'until', fmt(untilv), 'length', fmt(length), 'streak', streak,
  'since', fmt(since), 'last', fmt(now))

local paused = 0
local pa = tonumber(ARGV[6])
if pa > 0 and now - since >= pa and redis.call('EXISTS', KEYS[4]) == 0 then
  redis.call('HSET', KEYS[4], 'reason', ARGV[8], 'at', fmt(now), 'since', fmt(since))
  paused = 1
end
return {event, paused, now, untilv, length, streak, since}
`)

// budgetHeartbeatScript extends the leases a live process still holds, and its probe
// lock. A lease that is gone (it expired, its slot may be someone else's now) is not
// brought back: its id is returned.
//
// KEYS: leases, probe. ARGV: lease TTL µs, probe lease id or "", lease ids...
var budgetHeartbeatScript = redis.NewScript(budgetLuaNow + `
local ttl = tonumber(ARGV[1])
local lost = {}
for i = 3, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], 'XX', fmt(now + ttl), ARGV[i])
  else
    table.insert(lost, ARGV[i])
  end
end
if ARGV[2] ~= '' and redis.call('GET', KEYS[2]) == ARGV[2] then
  redis.call('PEXPIRE', KEYS[2], math.ceil(ttl / 1000))
end
return lost
`)

// budgetStateScript reads everything `livenessq status` shows, changing nothing.
//
// KEYS: config, leases, cooldown, probe, paused, quota.
// Returns {now, config fields..., in flight, cooldown fields..., probing, paused
// fields..., quota fields...} as flat lists of strings (see budgetReadState).
var budgetStateScript = redis.NewScript(budgetLuaNow + `
return {
  fmt(now),
  redis.call('HGETALL', KEYS[1]),
  redis.call('ZCOUNT', KEYS[2], '(' .. fmt(now), '+inf'),
  redis.call('HGETALL', KEYS[3]),
  redis.call('EXISTS', KEYS[4]),
  redis.call('HGETALL', KEYS[5]),
  redis.call('HGETALL', KEYS[6]),
}
`)
