/* The Lua scripts the daemon runs on Redis. Every one checks the job hash's `owner` before it
 * writes, so only the worker that holds a job's claim changes it (docs/redis.md, "Exactly once").
 * The loop (service/loop.c) sends them with EVAL; a ring item names FINISH or HANDBACK by a
 * SCRIPT_REF_* string, which the loop replaces with the script's text (script_text). */
#ifndef DD_SCRIPTS_H
#define DD_SCRIPTS_H

/* Claims a job entry: makes this worker the owner, bumps the attempt; refuses a duplicate entry
 * of a job (acknowledged, deleted, a 'duplicate' event); past max_attempts ends the job failed. */
extern const char LUA_CLAIM[];
/* Applies one ring item (progress, test, snapshot, log) once, while the caller owns the job. */
extern const char LUA_APPLY[];
/* Adds a resumed attempt's backfilled metrics entries once, in iteration order, while the caller
 * owns the job. */
extern const char LUA_BACKFILL[];
/* Renews a running job's entry (XCLAIM resets its idle time) while the caller owns it. */
extern const char LUA_RENEW[];
/* Ends a job: its final state, XACK of the entry, retention TTLs. */
extern const char LUA_FINISH[];
/* Hands a job back to the queue: XACK + a fresh entry with the same spec. */
extern const char LUA_HANDBACK[];
/* Takes a join entry (node K of a multi-node job). */
extern const char LUA_JOIN[];
/* Drops members of the workers set whose worker hash expired. */
extern const char LUA_PRUNE_WORKERS[];

/* Ring items name a script by one of these; the loop sends the script's text in its place. */
#define SCRIPT_REF_FINISH "\001finish"
#define SCRIPT_REF_HANDBACK "\001handback"

/* The script a SCRIPT_REF_* argument names, or `arg` itself when it names none. */
const char *script_text(const char *arg);

#endif
