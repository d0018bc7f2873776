#!/usr/bin/env python3
"""Checks deploy/grafana/distilld-prometheus-dashboard.json against the Prometheus endpoint.

  check_prometheus_dashboard.py [--promtool PATH]     # static, and PromQL syntax through promtool
  check_prometheus_dashboard.py --prometheus URL --job ID
                                                     # also runs every query on a live Prometheus

Static: the JSON parses; its one data source input is a Prometheus one, which every panel, query
and variable uses; every metric a query names is one docs/monitoring.md documents, with labels it
documents; the variables a query uses are defined. With promtool (Debian's prometheus package):
every query, variables replaced by ".*", is valid PromQL (`promtool check rules` on a rules file
made of them). Live: every query runs on the Prometheus at URL without an error, and those of the
job's progress (iteration, loss terms, speed, ETA) return series of job ID.
Exit status: 0 all good, 1 a check failed (each printed), 2 usage. Python 3 standard library only.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
LABELS = {"worker", "job_id", "job_name", "device", "term", "state", "le", "quantile"}
problems = []


def bad(msg):
    problems.append(msg)
    print("FAIL: " + msg)


def documented_metrics():
    names = set()
    with open(os.path.join(ROOT, "docs", "monitoring.md")) as f:
        for line in f:
            m = re.match(r"\|\s*`(distilld_[a-z0-9_]+)`", line)
            if m:
                names.add(m.group(1))
    return names


def queries(d):
    for p in d.get("panels", []):
        for t in p.get("targets", []):
            yield p, t


def substitute(expr):
    return expr.replace("$worker", ".*").replace("$job", ".*")


def static_checks(d):
    inputs = d.get("__inputs", [])
    if [i.get("pluginId") for i in inputs] != ["prometheus"]:
        bad("__inputs: want exactly one Prometheus data source input, got %r" % [i.get("pluginId") for i in inputs])
    ds = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    variables = {v["name"] for v in d.get("templating", {}).get("list", [])}
    for v in d.get("templating", {}).get("list", []):
        if v.get("datasource") != ds:
            bad("variable %s: data source %r" % (v["name"], v.get("datasource")))
    known = documented_metrics()
    if not known:
        bad("docs/monitoring.md documents no distilld_ metric")
    n = 0
    for p, t in queries(d):
        n += 1
        where = "panel %r query %s" % (p.get("title"), t.get("refId"))
        if p.get("datasource") != ds or t.get("datasource") != ds:
            bad(where + ": not on the Prometheus data source")
        expr = t.get("expr", "")
        for m in re.findall(r"\bdistilld_[a-z0-9_]+", expr):
            if m not in known:
                bad(where + ": %s is not a metric docs/monitoring.md documents" % m)
        for lab in re.findall(r"([a-z_]+)\s*(?:=~|!~|!=|=)\s*\"", expr) + \
                [x.strip() for g in re.findall(r"\bby\s*\(([^)]*)\)", expr) for x in g.split(",")]:
            if lab not in LABELS:
                bad(where + ": label %r is not one the endpoint sets" % lab)
        for var in re.findall(r"\$([a-z_]+)", expr):
            if var not in variables:
                bad(where + ": variable $%s is not defined" % var)
    if n == 0:
        bad("no queries")
    return n


def promtool_check(d, promtool):
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": "dashboard:q%d" % i, "expr": substitute(t["expr"])} for i, (_, t) in enumerate(queries(d))]}]}
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        json.dump(rules, f)  # JSON is YAML
        path = f.name
    try:
        r = subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True)
        if r.returncode != 0:
            bad("promtool check rules: " + (r.stdout + r.stderr).strip())
        else:
            print("promtool: every query is valid PromQL (%d)" % len(rules["groups"][0]["rules"]))
    finally:
        os.unlink(path)


def live_checks(d, url, job):
    must = ("distilld_job_iteration", "distilld_job_loss", "distilld_job_images_per_second", "distilld_job_eta_seconds")
    for p, t in queries(d):
        expr = t["expr"].replace("$worker", ".*").replace("$job", re.escape(job))
        q = url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(q, timeout=10) as resp:
                ans = json.load(resp)
        except Exception as e:  # an HTTP error status is a failed query too
            bad("query %r: %s" % (expr, e))
            continue
        if ans.get("status") != "success":
            bad("query %r: %s" % (expr, ans.get("error")))
            continue
        series = ans.get("data", {}).get("result", [])
        if any(m in expr for m in must) and not any(s.get("metric", {}).get("job_id") == job for s in series):
            bad("query %r: no series of job %s" % (expr, job))
    print("live: every query ran on %s" % url)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dashboard", default=os.path.join(HERE, "distilld-prometheus-dashboard.json"))
    ap.add_argument("--promtool", help="promtool's path, or 'auto' (PATH); without it no PromQL check")
    ap.add_argument("--prometheus", help="a live Prometheus's URL (http://127.0.0.1:9090)")
    ap.add_argument("--job", help="with --prometheus: a job the Prometheus has scraped while it ran")
    a = ap.parse_args()
    if a.prometheus and not a.job:
        ap.error("--prometheus needs --job")
    try:
        with open(a.dashboard) as f:
            d = json.load(f)
    except (OSError, ValueError) as e:
        print("FAIL: %s: %s" % (a.dashboard, e))
        return 1
    n = static_checks(d)
    print("static: %d queries" % n)
    if a.promtool:
        tool = shutil.which("promtool") if a.promtool == "auto" else a.promtool
        if not tool:
            bad("promtool not found")
        else:
            promtool_check(d, tool)
    if a.prometheus:
        live_checks(d, a.prometheus, a.job)
    print("%s: %s" % (os.path.basename(a.dashboard), "ok" if not problems else "%d problem(s)" % len(problems)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
