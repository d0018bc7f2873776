/* The Lua scripts (service/scripts.h). The consumer group and the events stream's cap come from
 * common/keys.h. */
#include "service/scripts.h"

#include <string.h>

#include "common/keys.h"

/* KEYS: hash jobs events index state:queued state:running state:cancelled.
 * ARGV: entry id owner worker now spec retention */
const char LUA_CLAIM[] =
    "local st = redis.call('HGET', KEYS[1], 'state')\n"
    "if st == 'succeeded' or st == 'failed' or st == 'cancelled' then\n"
    "  redis.call('XACK', KEYS[2], '" DD_GROUP "', ARGV[1]) redis.call('XDEL', KEYS[2], ARGV[1]) return {'final', st} end\n"
    "if redis.call('HGET', KEYS[1], 'cancel') == '1' then\n"
    "  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'finished_at', ARGV[5], 'updated_at', ARGV[5])\n"
    "  redis.call('XACK', KEYS[2], '" DD_GROUP "', ARGV[1]) redis.call('XDEL', KEYS[2], ARGV[1])\n"
    "  redis.call('EXPIRE', KEYS[1], ARGV[7]) redis.call('EXPIRE', KEYS[3], ARGV[7])\n"
    "  redis.call('ZREM', KEYS[5], ARGV[2]) redis.call('ZADD', KEYS[7], ARGV[5], ARGV[2])\n"
    "  redis.call('XADD', KEYS[3], 'MAXLEN', '~', '" DD_KEYS_STR(DD_EVENTS_MAXLEN) "', '*', 'type', 'state', 'state', 'cancelled', 'worker', ARGV[4],"
    " 'reason', 'cancel requested before it started')\n"
    "  return {'final', 'cancelled'} end\n"
    "if not st then\n"
    "  redis.call('HSET', KEYS[1], 'id', ARGV[2], 'submitted_at', ARGV[5])\n"
    "  redis.call('ZADD', KEYS[4], ARGV[5], ARGV[2]) end\n"
    "if not redis.call('HGET', KEYS[1], 'spec') then redis.call('HSET', KEYS[1], 'spec', ARGV[6]) end\n"
    "local a = redis.call('HINCRBY', KEYS[1], 'attempt', 1)\n"
    "redis.call('HSET', KEYS[1], 'state', 'running', 'owner', ARGV[3], 'worker', ARGV[4], 'entry', ARGV[1],"
    " 'started_at', ARGV[5], 'updated_at', ARGV[5], 'seq', 0)\n"
    "redis.call('HDEL', KEYS[1], 'error', 'finished_at')\n"
    "redis.call('ZREM', KEYS[5], ARGV[2]) redis.call('ZADD', KEYS[6], ARGV[5], ARGV[2])\n"
    "redis.call('XADD', KEYS[3], 'MAXLEN', '~', '" DD_KEYS_STR(DD_EVENTS_MAXLEN) "', '*', 'type', 'state', 'state', 'running', 'worker', ARGV[4],"
    " 'attempt', a)\n"
    "return {'run', tostring(a)}\n";

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

/* KEYS: hash jobs. ARGV: owner entry consumer */
const char LUA_RENEW[] =
    "if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end\n"
    "redis.call('XCLAIM', KEYS[2], '" DD_GROUP "', ARGV[3], 0, ARGV[2], 'JUSTID')\n"
    "return 1\n";

/* KEYS: hash jobs events metrics index state:running state:<final>.
 * ARGV: owner entry state error now retention worker iter id */
const char LUA_FINISH[] =
    "if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end\n"
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

/* KEYS: hash jobs events state:running state:queued. ARGV: owner entry id now worker iter */
const char LUA_HANDBACK[] =
    "local o = redis.call('HGET', KEYS[1], 'owner')\n"
    "if o == 'handback:' .. ARGV[1] then return 'again' end\n"
    "if o ~= ARGV[1] then return 0 end\n"
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


const char *script_text(const char *arg) {
  if (arg[0] != '\001') return arg;
  if (!strcmp(arg, SCRIPT_REF_FINISH)) return LUA_FINISH;
  if (!strcmp(arg, SCRIPT_REF_HANDBACK)) return LUA_HANDBACK;
  return arg;
}
