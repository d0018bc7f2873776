#!/usr/bin/env python3
"""Checks deploy/grafana/distilld-dashboard.json against the schema it reads.

  check_dashboard.py                       # static: the JSON, keys.txt, fields.txt, docs/redis.md
  check_dashboard.py --redis HOST:PORT --job ID [--worker NAME] [--user U --password-env VAR]
                                           # also runs every query against a live Redis

Static checks: the JSON parses; every Redis key a query or a template variable names starts with
"distilld:" and uses only the variables $job and $worker; the key patterns (variables as *) are
exactly the lines of keys.txt; each is documented in docs/redis.md (as P:job:<id>, ...); every
query has its line in fields.txt, HMGET fields match, and every field listed there is documented;
no other text in the JSON holds "distilld:" (a test extracts the keys from it).
Live checks: each query of fields.txt, run with redis-cli the way the Redis plugin runs it, returns
data holding every field not marked optional ("?"). The password reaches redis-cli as
REDISCLI_AUTH. Exit status: 0 all good, 1 a check failed (each printed), 2 usage.
Python 3 standard library only.
"""
import argparse
import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PREFIX = "distilld:"
DELIM = "\x1f"
ENTRY_ID = re.compile(r"^\d+-\d+$")

problems = []


def bad(msg):
    problems.append(msg)
    print("FAIL: " + msg)


def walk_panels(panels):
    for p in panels:
        yield p
        yield from walk_panels(p.get("panels", []))


def queries(dash):
    """[(title, COMMAND, key, hmget fields or None)] of the targets and the query variables."""
    out = []
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            words = str(v.get("query", "")).split()
            out.append(("variable " + v["name"], words[0].upper() if words else "", words[1] if len(words) > 1 else "", None))
    for p in walk_panels(dash.get("panels", [])):
        for t in p.get("targets", []):
            if t.get("query"):
                words = t["query"].split()
                out.append((p["title"], words[0].upper(), words[1] if len(words) > 1 else "", None))
            elif t.get("command"):
                f = t.get("field", "").split() if t["command"] == "hmget" else None
                out.append((p["title"], t["command"].upper(), t.get("keyName", ""), f))
    return out


def pattern(key):
    return key.replace("$job", "*").replace("$worker", "*")


def doc_name(key):
    return "P:" + key[len(PREFIX):].replace("$job", "<id>").replace("$worker", "<name>")


def load_fields():
    rows = []
    with open(os.path.join(HERE, "fields.txt")) as f:
        for n, line in enumerate(f, 1):
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 4:
                bad("fields.txt:%d: want 4 tab-separated columns" % n)
                continue
            rows.append((parts[0], parts[1], parts[2], [x for x in parts[3].split() if x != "-"]))
    return rows


def static_checks():
    path = os.path.join(HERE, "distilld-dashboard.json")
    with open(path) as f:
        text = f.read()
    try:
        dash = json.loads(text)
    except json.JSONDecodeError as e:
        bad("%s: not JSON: %s" % (path, e))
        return None, []
    with open(os.path.join(ROOT, "docs", "redis.md")) as f:
        doc = f.read()
    qs = queries(dash)
    used = set()
    for title, cmd, key, _ in qs:
        if not key.startswith(PREFIX):
            bad("%s: %s key %r does not start with %r" % (title, cmd, key, PREFIX))
            continue
        if re.search(r"\$(?!job\b|worker\b)", key) or "${" in key:
            bad("%s: key %r: the only variables allowed are $job and $worker" % (title, key))
        used.add(pattern(key))
        if "`%s`" % doc_name(key) not in doc:
            bad("%s: key %s (%s) is not in docs/redis.md" % (title, key, doc_name(key)))
    with open(os.path.join(HERE, "keys.txt")) as f:
        listed = [x.strip() for x in f if x.strip()]
    if sorted(listed) != sorted(used):
        bad("keys.txt %s != the dashboard's keys %s" % (sorted(listed), sorted(used)))
    stray = set(re.findall(r"distilld:[^\s\"\\`]*", text)) - {k for _, _, k, _ in qs}
    if stray:
        bad("text holding 'distilld:' outside the queries: %s" % sorted(stray))
    rows = load_fields()
    for title, cmd, key, hf in qs:
        match = [r for r in rows if r[0] == title and r[1] == pattern(key) and r[2] == cmd]
        if len(match) != 1:
            bad("fields.txt: want one line for %r %s %s, found %d" % (title, pattern(key), cmd, len(match)))
        elif hf is not None and sorted(hf) != sorted(x.rstrip("?") for x in match[0][3]):
            bad("fields.txt: %r reads %s, the dashboard %s" % (title, match[0][3], hf))
    if len(rows) != len(qs):
        bad("fields.txt has %d query lines, the dashboard %d queries" % (len(rows), len(qs)))
    for title, _, _, fields in rows:
        for fld in fields:
            name = fld.rstrip("?").replace("hintN_", "hint0_")
            if "`%s`" % name not in doc:
                bad("fields.txt: %r reads %s, which docs/redis.md does not document" % (title, name))
    return dash, rows


def cli(a, password, *args):
    host, _, port = a.redis.rpartition(":")
    cmd = ["redis-cli", "-h", host or a.redis, "-p", port or "6379", "--raw", "-d", DELIM]
    if a.user:
        cmd += ["--user", a.user]
    env = dict(os.environ)
    if password is not None:
        env["REDISCLI_AUTH"] = password
    p = subprocess.run(cmd + list(args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    err = p.stderr.decode("utf-8", "replace").strip()
    if p.returncode or "AUTH failed" in err or "Could not connect" in err:
        raise RuntimeError("redis-cli %s: %s" % (" ".join(args), err or "exit %d" % p.returncode))
    out = p.stdout.decode("utf-8", "replace")
    out = out[:-1] if out.endswith("\n") else out
    return out.split(DELIM) if out else []


def stream_fields(elems):
    """The field names seen in a flat XRANGE reply."""
    seen, i = set(), 0
    while i < len(elems):
        if not ENTRY_ID.match(elems[i]):
            raise RuntimeError("not a stream reply: %s" % " ".join(elems)[:200])
        j = i + 1
        while j + 1 < len(elems) and not ENTRY_ID.match(elems[j]):
            seen.add(elems[j])
            j += 2
        i = j
    return seen


def live_checks(a, rows):
    password = os.environ.get(a.password_env) if a.password_env else None
    if a.password_env and password is None:
        bad("--password-env %s: not set" % a.password_env)
        return
    try:
        worker = a.worker or (cli(a, password, "SMEMBERS", PREFIX + "workers") or [""])[0]
        for title, pat, cmd, fields in rows:
            key = pat.replace("*", worker if pat.startswith(PREFIX + "worker:") else a.job)
            args = {"ZREVRANGE": [key, "0", "49"], "SMEMBERS": [key], "ZRANGE": [key, "-50", "-1", "WITHSCORES"],
                    "HGETALL": [key], "HMGET": [key] + [f.rstrip("?") for f in fields],
                    "XRANGE": [key, "-", "+"], "XREVRANGE": [key, "+", "-", "COUNT", "200"], "ZCARD": [key]}[cmd]
            r = cli(a, password, cmd, *args)
            if cmd == "ZCARD":
                # a state's set exists only while it has members: the count must be a number, and
                # the job must be in the set of the state its hash shows
                ok = len(r) == 1 and r[0].isdigit()
                if not ok:
                    bad("%s: ZCARD %s gave %r" % (title, key, r))
                print("%-44s %-9s %-28s %s" % (title[:44], cmd, key, "ok" if ok else "FAIL"))
                continue
            need = [f for f in fields if not f.endswith("?")]
            if cmd == "HMGET":
                got = {f.rstrip("?") for f, v in zip(fields, r) if v != ""}
            elif cmd == "HGETALL":
                got = set(r[0::2])
            elif cmd in ("XRANGE", "XREVRANGE"):
                got = stream_fields(r)
            else:
                got = set()
            if not r and (need or cmd != "HMGET"):
                bad("%s: %s %s returned nothing" % (title, cmd, key))
            elif cmd in ("ZREVRANGE", "ZRANGE") and a.job not in r:
                bad("%s: %s %s does not list job %s" % (title, cmd, key, a.job))
            missing = [f for f in need if f.replace("hintN_", "hint0_") not in got]
            if r and missing:
                bad("%s: %s %s lacks %s" % (title, cmd, key, " ".join(missing)))
            print("%-44s %-9s %-28s %s" % (title[:44], cmd, key, "ok" if (r or not need) and not missing else "FAIL"))
        if any(cmd == "ZCARD" for _, _, cmd, _ in rows):
            state = (cli(a, password, "HMGET", PREFIX + "job:" + a.job, "state") or [""])[0]
            score = cli(a, password, "ZSCORE", PREFIX + "state:" + state, a.job) if state else []
            if not score or not score[0]:
                bad("job %s (state %r) is not in %sstate:%s" % (a.job, state, PREFIX, state))
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        bad(str(e))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--redis", metavar="HOST:PORT")
    ap.add_argument("--job", metavar="ID", help="a job that ran (live checks)")
    ap.add_argument("--worker", metavar="NAME", help="a live worker (default: the first in the set)")
    ap.add_argument("--user")
    ap.add_argument("--password-env", metavar="VAR")
    a = ap.parse_args()
    if (a.redis is None) != (a.job is None):
        ap.error("--redis and --job go together")
    dash, rows = static_checks()
    if dash is not None and a.redis:
        live_checks(a, rows)
    print("check_dashboard: %s" % ("ok" if not problems else "%d problem(s)" % len(problems)))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
