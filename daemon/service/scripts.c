/* The Lua scripts (service/scripts.h). The consumer group and the events stream's cap come from
 * common/keys.h. */
#include "service/scripts.h"

#include <string.h>

#include "common/keys.h"

/* Who holds a job the caller no longer owns, for the caller's log: {'lost', why}. The hash gone
 * (Redis lost it: restarted without persistence, or it expired) is told apart from another owner. */
#define LUA_LOST_FN \
  "local function lost()\n" \
  "  local h = redis.call('HMGET', KEYS[1], 'state', 'worker', 'attempt')\n" \
  "  if not h[1] then return {'lost', 'the job is gone from Redis (its hash does not exist: Redis lost it, e.g. a restart" \
  " without persistence, or it expired)'} end\n" \
  "  return {'lost', 'worker ' .. (h[2] or '?') .. ' holds it now (attempt ' .. (h[3] or '?') .. ', ' .. h[1] .. ')'}\n" \
  "end\n"

#define LUA_XADD_EVENTS "redis.call('XADD', KEYS[3], 'MAXLEN', '~', '" DD_KEYS_STR(DD_EVENTS_MAXLEN) "', '*', "

/* KEYS: hash jobs events index state:queued state:running state:cancelled state:failed metrics.
 * ARGV: entry id owner worker now spec retention lease_s max_attempts
 *
 * Refuses (XACK + XDEL + a 'duplicate' event, the running attempt untouched) an entry whose job's
 * hash names another entry that is still in the stream, is final, or runs under an owner that
 * renewed within lease_s: so a second XADD of a job, or a retried one, never runs it twice. A
 * takeover (XAUTOCLAIM hands over the hash's own entry) and a hand-back's new entry (recorded in
 * the hash) are the job's own entry. A claim past max_attempts ends the job failed with how the
 * last attempt ended (a takeover: its worker stopped renewing; a hand-back: `last_error`).
 * Returns {'run', attempt, the iter of the metrics stream's last entry (-1: none), the worker of
 * the attempt before ('' for the first)} (the new attempt's backfill starts after that iter),
 * {'duplicate', why}, {'final', state} or {'exhausted', error}. */
const char LUA_CLAIM[] =
    "local st = redis.call('HGET', KEYS[1], 'state')\n"
    "local cur = redis.call('HGET', KEYS[1], 'entry')\n"
    "local now = tonumber(ARGV[5])\n"
    "local function ack() redis.call('XACK', KEYS[2], '" DD_GROUP "', ARGV[1]) redis.call('XDEL', KEYS[2], ARGV[1]) end\n"
    "local final = st == 'succeeded' or st == 'failed' or st == 'cancelled'\n"
    "if cur and cur ~= ARGV[1] then\n"
    "  local why = nil\n"
    "  local w = redis.call('HGET', KEYS[1], 'worker') or '?'\n"
    "  local a = redis.call('HGET', KEYS[1], 'attempt') or '0'\n"
    "  if final then why = 'the job is ' .. st .. ' already (its entry was ' .. cur .. '): an id names one job'\n"
    "  elseif st == 'running' and now - tonumber(redis.call('HGET', KEYS[1], 'renewed_at') or '0') < tonumber(ARGV[8]) then\n"
    "    why = 'the job is running on worker ' .. w .. ' (entry ' .. cur .. ', attempt ' .. a .. ')'\n"
    "  elseif #redis.call('XREVRANGE', KEYS[2], cur, cur, 'COUNT', 1) > 0 then\n"
    "    why = 'the job is ' .. (st or 'queued') .. ' under its entry ' .. cur\n"
    "  end\n"
    "  if why then\n"
    "    ack()\n"
    "    " LUA_XADD_EVENTS "'type', 'duplicate', 'entry', ARGV[1], 'worker', ARGV[4], 'reason', why)\n"
    "    return {'duplicate', why}\n"
    "  end\n"
    "end\n"
    "if final then ack() return {'final', st} end\n"
    "if redis.call('HGET', KEYS[1], 'cancel') == '1' then\n"
    "  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'finished_at', ARGV[5], 'updated_at', ARGV[5])\n"
    "  ack()\n"
    "  redis.call('EXPIRE', KEYS[1], ARGV[7]) redis.call('EXPIRE', KEYS[3], ARGV[7])\n"
    "  redis.call('ZREM', KEYS[5], ARGV[2]) redis.call('ZADD', KEYS[7], ARGV[5], ARGV[2])\n"
    "  " LUA_XADD_EVENTS "'type', 'state', 'state', 'cancelled', 'worker', ARGV[4], 'reason', 'cancel requested before it started')\n"
    "  return {'final', 'cancelled'} end\n"
    "if not st then\n"
    "  redis.call('HSET', KEYS[1], 'id', ARGV[2], 'submitted_at', ARGV[5])\n"
    "  redis.call('ZADD', KEYS[4], ARGV[5], ARGV[2]) end\n"
    "if not redis.call('HGET', KEYS[1], 'spec') then redis.call('HSET', KEYS[1], 'spec', ARGV[6]) end\n"
    "local prev = tonumber(redis.call('HGET', KEYS[1], 'attempt') or '0')\n"
    "local last = nil\n"
    "if st == 'running' then\n"
    "  last = 'attempt ' .. prev .. ' on worker ' .. (redis.call('HGET', KEYS[1], 'worker') or '?') .. ' stopped renewing its lease"
    " at iteration ' .. (redis.call('HGET', KEYS[1], 'iter') or '0') .. ' (the worker died, hung or lost Redis)'\n"
    "  redis.call('HSET', KEYS[1], 'last_error', last)\n"
    "elseif prev > 0 then last = redis.call('HGET', KEYS[1], 'last_error') or ('attempt ' .. prev .. ' ended') end\n"
    "if prev >= tonumber(ARGV[9]) then\n"
    "  local err = 'gave up after ' .. prev .. ' attempts (max_attempts ' .. ARGV[9] .. '); the last: ' .. last\n"
    "  redis.call('HSET', KEYS[1], 'state', 'failed', 'error', err, 'finished_at', ARGV[5], 'updated_at', ARGV[5])\n"
    "  ack()\n"
    "  " LUA_XADD_EVENTS "'type', 'state', 'state', 'failed', 'worker', ARGV[4], 'error', err)\n"
    "  redis.call('EXPIRE', KEYS[1], ARGV[7]) redis.call('EXPIRE', KEYS[3], ARGV[7]) redis.call('EXPIRE', KEYS[9], ARGV[7])\n"
    "  redis.call('ZREM', KEYS[5], ARGV[2]) redis.call('ZREM', KEYS[6], ARGV[2]) redis.call('ZADD', KEYS[8], ARGV[5], ARGV[2])\n"
    "  return {'exhausted', err}\n"
    "end\n"
    "local pw = redis.call('HGET', KEYS[1], 'worker') or ''\n"
    "local li = -1\n"
    "local lm = redis.call('XREVRANGE', KEYS[9], '+', '-', 'COUNT', 1)\n"
    "if #lm > 0 then local f = lm[1][2] for k = 1, #f - 1, 2 do if f[k] == 'iter' then li = tonumber(f[k + 1]) or -1 end end end\n"
    "local a = redis.call('HINCRBY', KEYS[1], 'attempt', 1)\n"
    "redis.call('HSET', KEYS[1], 'state', 'running', 'owner', ARGV[3], 'worker', ARGV[4], 'entry', ARGV[1],"
    " 'started_at', ARGV[5], 'updated_at', ARGV[5], 'renewed_at', ARGV[5], 'seq', 0)\n"
    "redis.call('HDEL', KEYS[1], 'error', 'finished_at')\n"
    "redis.call('ZREM', KEYS[5], ARGV[2]) redis.call('ZADD', KEYS[6], ARGV[5], ARGV[2])\n"
    "local ev = {'type', 'state', 'state', 'running', 'worker', ARGV[4], 'attempt', a}\n"
    "if last then ev[#ev+1] = 'previous' ev[#ev+1] = last end\n"
    LUA_XADD_EVENTS "unpack(ev))\n"
    "return {'run', tostring(a), tostring(li), pw}\n";

/* Every progress, test, snapshot and log item of a job goes through this: it writes only while the
 * caller owns the job, and only once (a per-attempt sequence number; an item sent again after a
 * reconnect, which Redis may already have applied, is skipped). KEYS: hash. ARGV: owner seq ncmds,
 * then per command its argument count and arguments. */
const char LUA_APPLY[] =
    "if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return -1 end\n"
    "local seq = tonumber(ARGV[2])\n"
    "if seq <= tonumber(redis.call('HGET', KEYS[1], 'seq') or '0') then return 0 end\n"
    "local i = 4\n"
    "for c = 1, tonumber(ARGV[3]) do\n"
    "  local n = tonumber(ARGV[i])\n"
    "  redis.call(unpack(ARGV, i + 1, i + n))\n"
    "  i = i + n + 1\n"
    "end\n"
    "redis.call('HSET', KEYS[1], 'seq', ARGV[2])\n"
    "return 1\n";

/* A resumed attempt's backfill (service/backfill.c): metrics entries of iterations an earlier
 * attempt trained but never got into Redis, read from the output directory's metrics.jsonl. Like
 * LUA_APPLY it writes only while the caller owns the job and only once per sequence number; and
 * each record is added only when its iter is above the iter of the stream's last entry, so a
 * record already in the stream (sent again, or by an attempt before) never appears twice and the
 * stream stays in iteration order. KEYS: hash metrics. ARGV: owner seq nrecords, then per record
 * its argument count and its field/value pairs (the first pair is iter). Returns how many records
 * it added (-1: not the owner). */
const char LUA_BACKFILL[] =
    "if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return -1 end\n"
    "local seq = tonumber(ARGV[2])\n"
    "if seq <= tonumber(redis.call('HGET', KEYS[1], 'seq') or '0') then return 0 end\n"
    "local last = -1\n"
    "local lm = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)\n"
    "if #lm > 0 then local f = lm[1][2] for k = 1, #f - 1, 2 do if f[k] == 'iter' then last = tonumber(f[k + 1]) or -1 end end end\n"
    "local i, added = 4, 0\n"
    "for c = 1, tonumber(ARGV[3]) do\n"
    "  local n = tonumber(ARGV[i])\n"
    "  local it = tonumber(ARGV[i + 2])\n"
    "  if ARGV[i + 1] == 'iter' and it and it > last then\n"
    "    redis.call('XADD', KEYS[2], 'MAXLEN', '~', '" DD_KEYS_STR(DD_METRICS_MAXLEN) "', '*', unpack(ARGV, i + 1, i + n))\n"
    "    last = it\n"
    "    added = added + 1\n"
    "  end\n"
    "  i = i + n + 1\n"
    "end\n"
    "redis.call('HSET', KEYS[1], 'seq', ARGV[2])\n"
    "return added\n";

/* KEYS: hash jobs. ARGV: owner entry consumer now. Returns 1, or {'lost', why}. */
const char LUA_RENEW[] =
    LUA_LOST_FN
    "if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return lost() end\n"
    "redis.call('XCLAIM', KEYS[2], '" DD_GROUP "', ARGV[3], 0, ARGV[2], 'JUSTID')\n"
    "redis.call('HSET', KEYS[1], 'renewed_at', ARGV[4])\n"
    "return 1\n";

/* KEYS: hash jobs events metrics index state:running state:<final>.
 * ARGV: owner entry state error now retention worker iter id dropped. Returns 1, or {'lost', why}. */
const char LUA_FINISH[] =
    LUA_LOST_FN
    "if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return lost() end\n"
    "if tonumber(ARGV[10]) > 0 then redis.call('HINCRBY', KEYS[1], 'metrics_dropped', ARGV[10]) end\n"
    "local st = redis.call('HGET', KEYS[1], 'state')\n"
    "if st == 'succeeded' or st == 'failed' or st == 'cancelled' then return 1 end\n"
    "redis.call('HSET', KEYS[1], 'state', ARGV[3], 'finished_at', ARGV[5], 'updated_at', ARGV[5], 'iter', ARGV[8])\n"
    "local ev = {'type', 'state', 'state', ARGV[3], 'worker', ARGV[7], 'iter', ARGV[8]}\n"
    "if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[4]) ev[#ev+1] = 'error' ev[#ev+1] = ARGV[4] end\n"
    "redis.call('XACK', KEYS[2], '" DD_GROUP "', ARGV[2]) redis.call('XDEL', KEYS[2], ARGV[2])\n"
    "redis.call('XADD', KEYS[3], 'MAXLEN', '~', '" DD_KEYS_STR(DD_EVENTS_MAXLEN) "', '*', unpack(ev))\n"
    "redis.call('EXPIRE', KEYS[1], ARGV[6]) redis.call('EXPIRE', KEYS[3], ARGV[6]) redis.call('EXPIRE', KEYS[4], ARGV[6])\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', tonumber(ARGV[5]) - tonumber(ARGV[6]))\n"
    "redis.call('ZREM', KEYS[6], ARGV[9]) redis.call('ZADD', KEYS[7], ARGV[5], ARGV[9])\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', tonumber(ARGV[5]) - tonumber(ARGV[6]))\n"
    "return 1\n";

/* KEYS: hash jobs events state:running state:queued. ARGV: owner entry id now worker iter dropped
 * reason (how this attempt ended, for the claim that may give up: `last_error`). Returns the new
 * entry, 'again' (applied before), or {'lost', why}. */
const char LUA_HANDBACK[] =
    LUA_LOST_FN
    "local o = redis.call('HGET', KEYS[1], 'owner')\n"
    "if o == 'handback:' .. ARGV[1] then return 'again' end\n"
    "if o ~= ARGV[1] then return lost() end\n"
    "if tonumber(ARGV[7]) > 0 then redis.call('HINCRBY', KEYS[1], 'metrics_dropped', ARGV[7]) end\n"
    "redis.call('HSET', KEYS[1], 'last_error', 'attempt ' .. (redis.call('HGET', KEYS[1], 'attempt') or '?') .. ': ' .. ARGV[8])\n"
    "local spec = redis.call('HGET', KEYS[1], 'spec')\n"
    "redis.call('XACK', KEYS[2], '" DD_GROUP "', ARGV[2]) redis.call('XDEL', KEYS[2], ARGV[2])\n"
    "local e = redis.call('XADD', KEYS[2], '*', 'id', ARGV[3], 'job', spec)\n"
    "redis.call('HSET', KEYS[1], 'state', 'queued', 'owner', 'handback:' .. ARGV[1], 'entry', e, 'updated_at', ARGV[4])\n"
    "redis.call('XADD', KEYS[3], 'MAXLEN', '~', '" DD_KEYS_STR(DD_EVENTS_MAXLEN) "', '*', 'type', 'state', 'state', 'queued', 'worker', ARGV[5],"
    " 'iter', ARGV[6], 'reason', 'handed back by ' .. ARGV[5])\n"
    "redis.call('ZREM', KEYS[4], ARGV[3]) redis.call('ZADD', KEYS[5], ARGV[4], ARGV[3])\n"
    "return e\n";

/* A worker takes a join entry (node K of a multi-node job whose node 0 runs elsewhere). The entry
 * is acknowledged and deleted at once: a joiner that dies is not replaced, node 0 fails the attempt
 * and the job's own retry brings it back. A worker that already runs a node of the job leaves the
 * entry pending with an idle time past the lease, so the next XAUTOCLAIM of any worker (within
 * poll_ms) takes it; it does not look again itself until its next tick. KEYS: hash jobs.
 * ARGV: entry attempt node worker idle_ms */
const char LUA_JOIN[] =
    "local st = redis.call('HGET', KEYS[1], 'state')\n"
    "local a = redis.call('HGET', KEYS[1], 'attempt')\n"
    "if st == 'running' and a == ARGV[2] then\n"
    "  local k = redis.call('HGET', KEYS[1], 'joined:' .. ARGV[4] .. '/' .. a)\n"
    "  if redis.call('HGET', KEYS[1], 'worker') == ARGV[4] then k = '0' end\n"
    "  if k then\n"
    "    redis.call('XCLAIM', KEYS[2], '" DD_GROUP "', ARGV[4], 0, ARGV[1], 'IDLE', ARGV[5], 'JUSTID')\n"
    "    return {'mine', k}\n"
    "  end\n"
    "end\n"
    "redis.call('XACK', KEYS[2], '" DD_GROUP "', ARGV[1]) redis.call('XDEL', KEYS[2], ARGV[1])\n"
    "if st ~= 'running' or a ~= ARGV[2] then return {'stale', (st or 'gone') .. ', attempt ' .. (a or '-')} end\n"
    "redis.call('HSET', KEYS[1], 'node:' .. ARGV[3], ARGV[4], 'joined:' .. ARGV[4] .. '/' .. a, ARGV[3])\n"
    "return {'join', redis.call('HGET', KEYS[1], 'spec')}\n";

/* Drops the members of the workers set whose hash expired (a worker killed -9 never leaves it).
 * KEYS: workers. ARGV: the worker hashes' key prefix ("P:worker:"). Returns how many it dropped. */
const char LUA_PRUNE_WORKERS[] =
    "local n = 0\n"
    "for _, m in ipairs(redis.call('SMEMBERS', KEYS[1])) do\n"
    "  if redis.call('EXISTS', ARGV[1] .. m) == 0 then redis.call('SREM', KEYS[1], m) n = n + 1 end\n"
    "end\n"
    "return n\n";


const char *script_text(const char *arg) {
  if (arg[0] != '\001') return arg;
  if (!strcmp(arg, SCRIPT_REF_FINISH)) return LUA_FINISH;
  if (!strcmp(arg, SCRIPT_REF_HANDBACK)) return LUA_HANDBACK;
  return arg;
}
