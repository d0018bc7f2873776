#!/usr/bin/env python3
"""Writes deploy/grafana/distilld-prometheus-dashboard.json: the Grafana dashboard over the
Prometheus endpoint's series (docs/monitoring.md), for Grafana's standard Prometheus data source.
The JSON is generated so that its panels, queries and layout are written once, here; run it again
after a change (check_prometheus_dashboard.py checks the result). Python 3 standard library only."""
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
W, J = 'worker=~"$worker"', 'job_id=~"$job"'


def target(ref, expr, legend):
    return {"refId": ref, "datasource": DS, "expr": expr, "legendFormat": legend, "range": True}


def panel(pid, kind, title, desc, pos, targets, unit="short", extra=None):
    p = {"id": pid, "type": kind, "title": title, "description": desc, "datasource": DS,
         "gridPos": dict(zip("xywh", pos)), "targets": [target(chr(65 + i), e, l) for i, (e, l) in enumerate(targets)],
         "fieldConfig": {"defaults": {"unit": unit}, "overrides": []}, "options": {}}
    if kind == "timeseries":
        p["options"] = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                        "tooltip": {"mode": "multi", "sort": "none"}}
    if kind in ("stat", "bargauge"):
        p["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "orientation": "horizontal", "textMode": "auto", "colorMode": "value"}
    if extra:
        extra(p)
    return p


def dashed_teacher(p):
    p["fieldConfig"]["overrides"].append({
        "matcher": {"id": "byRegexp", "options": "teacher.*"},
        "properties": [{"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}}]})
    p["fieldConfig"]["defaults"]["min"] = 0
    p["fieldConfig"]["defaults"]["max"] = 1


def progress_max(p):
    p["fieldConfig"]["defaults"]["min"] = 0
    p["fieldConfig"]["defaults"]["max"] = 1


panels = [
    panel(1, "stat", "Workers up", "distilld_worker_up: workers whose endpoint answered the last scrape with 1",
          (0, 0, 4, 4), [(f"sum(distilld_worker_up{{{W}}})", "up")]),
    panel(2, "stat", "Jobs running", "distilld_jobs_running, summed over the chosen workers",
          (4, 0, 4, 4), [(f"sum(distilld_jobs_running{{{W}}})", "running")]),
    panel(3, "stat", "Jobs ended in the last hour, by state", "increase of distilld_jobs_total over 1 h",
          (8, 0, 10, 4), [(f"sum by (state) (increase(distilld_jobs_total{{{W}}}[1h]))", "{{state}}")]),
    panel(4, "stat", "Draining workers", "distilld_worker_draining: 1 after SIGTERM",
          (18, 0, 6, 4), [(f"sum(distilld_worker_draining{{{W}}})", "draining")]),
    panel(5, "bargauge", "Progress", "iteration / max iteration of each running job",
          (0, 4, 12, 6), [(f"distilld_job_iteration{{{J}}} / distilld_job_max_iteration{{{J}}}", "{{job_id}} {{job_name}}")],
          unit="percentunit", extra=progress_max),
    panel(6, "stat", "ETA", "distilld_job_eta_seconds: the time each job still needs at its current speed",
          (12, 4, 12, 6), [(f"distilld_job_eta_seconds{{{J}}}", "{{job_id}}")], unit="s"),
    panel(7, "timeseries", "Loss terms", "distilld_job_loss, one series per job and term (loss, ce_loss, kd_loss, hints)",
          (0, 10, 12, 8), [(f"distilld_job_loss{{{J}}}", "{{job_id}} {{term}}")]),
    panel(8, "timeseries", "Test accuracy, the teacher's as a dashed line",
          "distilld_job_test_accuracy at each test; distilld_job_teacher_accuracy, measured once at start",
          (12, 10, 12, 8), [(f"distilld_job_test_accuracy{{{J}}}", "student {{job_id}}"),
                            (f"distilld_job_teacher_accuracy{{{J}}}", "teacher {{job_id}}")],
          unit="percentunit", extra=dashed_teacher),
    panel(9, "timeseries", "Images per second", "distilld_job_images_per_second over the last display interval",
          (0, 18, 8, 7), [(f"distilld_job_images_per_second{{{J}}}", "{{job_id}} ({{device}})")]),
    panel(10, "timeseries", "Data wait per iteration", "distilld_job_data_wait_seconds: time each step waited for its batch",
          (8, 18, 8, 7), [(f"distilld_job_data_wait_seconds{{{J}}}", "{{job_id}}")], unit="s"),
    panel(11, "timeseries", "Data errors and lease renewals (per 5 min)",
          "increase of distilld_job_data_errors_total (images skipped) and distilld_job_lease_renewals_total",
          (16, 18, 8, 7), [(f"increase(distilld_job_data_errors_total{{{J}}}[5m])", "data errors {{job_id}}"),
                           (f"increase(distilld_job_lease_renewals_total{{{J}}}[5m])", "lease renewals {{job_id}}")]),
    panel(12, "timeseries", "The daemons' Redis and ring",
          "distilld_redis_connected, reconnects per hour, the ring's depth and drops per 5 min",
          (0, 25, 24, 7), [(f"distilld_redis_connected{{{W}}}", "connected {{worker}}"),
                           (f"increase(distilld_redis_reconnects_total{{{W}}}[1h])", "reconnects/h {{worker}}"),
                           (f"distilld_ring_depth{{{W}}}", "ring depth {{worker}}"),
                           (f"increase(distilld_ring_dropped_total{{{W}}}[5m])", "ring drops/5m {{worker}}")]),
]


def variable(name, label, query, desc):
    return {"name": name, "label": label, "description": desc, "type": "query", "datasource": DS,
            "query": {"query": query, "refId": name}, "definition": query, "refresh": 2, "sort": 1, "regex": "",
            "hide": 0, "multi": True, "includeAll": True, "allValue": ".*", "skipUrlSync": False, "options": [],
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]}}


dashboard = {
    "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "description": "The Prometheus that scrapes the "
                  "workers' metrics_listen endpoints (docs/monitoring.md)", "type": "datasource",
                  "pluginId": "prometheus", "pluginName": "Prometheus"}],
    "__requires": [{"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.0.0"},
                   {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
                   {"type": "panel", "id": "stat", "name": "Stat", "version": ""},
                   {"type": "panel", "id": "bargauge", "name": "Bar gauge", "version": ""},
                   {"type": "panel", "id": "timeseries", "name": "Time series", "version": ""}],
    "annotations": {"list": []},
    "description": "distilld workers and jobs from the workers' Prometheus endpoints (docs/monitoring.md)",
    "editable": True, "graphTooltip": 1, "id": None, "links": [], "liveNow": False, "panels": panels,
    "refresh": "10s", "schemaVersion": 38, "tags": ["distilld"],
    "templating": {"list": [
        variable("worker", "worker", "label_values(distilld_worker_up, worker)", "Workers that Prometheus scrapes"),
        variable("job", "job", 'label_values(distilld_job_iteration{worker=~"$worker"}, job_id)',
                 "Jobs running on the chosen workers")]},
    "time": {"from": "now-6h", "to": "now"}, "timepicker": {}, "timezone": "", "title": "distilld (Prometheus)",
    "uid": "distilld-prometheus", "version": 1, "weekStart": ""}

if __name__ == "__main__":
    with open(os.path.join(HERE, "distilld-prometheus-dashboard.json"), "w") as f:
        json.dump(dashboard, f, indent=2)
        f.write("\n")
