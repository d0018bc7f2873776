/* The dashboard of `distilld web` (docs/monitoring.md): polls /api/overview and, for the job
 * chosen (the page's #job=ID), /api/job/ID with the stream ids it has seen, every second, and
 * draws the curves with uPlot (served from this binary). Text from Redis (job names, errors,
 * events) goes into the page through textContent only, never as markup.
 *
 * For tests and the curious, window.dashboard holds the state: points (iter -> metrics entry),
 * tests (iter -> accuracy), events, polls; #loss-chart and #acc-chart carry data-points. */
"use strict";
(function () {
  const POLL_MS = 1000;
  const MAX_EVENTS_SHOWN = 200;
  const COLORS = ["#1a66c9", "#e67e22", "#16a085", "#8e44ad", "#c0392b", "#7f8c8d"];
  const $ = (id) => document.getElementById(id);

  const S = {
    overview: null, jobId: null, job: null, metricsSince: null, eventsSince: null,
    points: new Map(), tests: new Map(), events: [], lossPlot: null, lossTerms: "", accPlot: null, polls: 0,
  };
  window.dashboard = S;

  /* ---- formatting (the CLI's rules: common/cli_util.h) ---- */

  function fmtDuration(s) {
    s = Number(s);
    if (!isFinite(s) || s < 0 || s > 1e9) return "-";
    if (s < 9.95) return s.toFixed(1) + "s";
    if (s < 59.5) return Math.round(s) + "s";
    const two = (a, b, ua, ub, unit) => {
      let hi = Math.floor(a), lo = Math.round(b);
      if (lo >= unit) { hi += 1; lo -= unit; }
      return hi + ua + String(lo).padStart(2, "0") + ub;
    };
    if (s < 3599.5) return two(s / 60, s % 60, "m", "s", 60);
    if (s < 86370) return two(s / 3600, (s % 3600) / 60, "h", "m", 60);
    return two(s / 86400, (s % 86400) / 3600, "d", "h", 24);
  }

  function fmtNum(v, digits) {
    const x = Number(v);
    if (v === undefined || v === null || v === "" || !isFinite(x)) return "-";
    return Number.isInteger(x) ? String(x) : x.toPrecision(digits || 4);
  }

  function fmtAge(at, now) {
    const t = Number(at);
    return isFinite(t) && t > 0 ? fmtDuration(now - t) + " ago" : "-";
  }

  function setText(el, s) { el.textContent = s === undefined || s === null || s === "" ? "-" : String(s); }

  function cell(tr, s, cls) {
    const td = document.createElement("td");
    setText(td, s);
    if (cls) td.className = cls;
    td.title = td.textContent;
    tr.appendChild(td);
    return td;
  }

  async function getJSON(url, opts) {
    const r = await fetch(url, Object.assign({ cache: "no-store" }, opts || {}));
    let body = null;
    try { body = await r.json(); } catch (e) { body = null; }
    if (!r.ok) {
      const err = new Error((body && body.error) || ("HTTP " + r.status));
      err.status = r.status;
      throw err;
    }
    return body;
  }

  /* ---- the overview: counts, jobs, workers ---- */

  function renderOverview(o) {
    setText($("queue-length"), o.queue.length);
    for (const s of ["queued", "running", "succeeded", "failed", "cancelled"]) setText($("count-" + s), o.states[s]);
    setText($("mode"), o.allow_cancel ? "cancel allowed" : "read-only");
    const jobs = $("jobs").tBodies[0];
    jobs.replaceChildren();
    for (const j of o.jobs) {
      const tr = document.createElement("tr");
      tr.dataset.job = j.id;
      if (j.id === S.jobId) tr.className = "selected";
      cell(tr, j.id);
      cell(tr, j.name);
      cell(tr, j.state, "state " + (j.state || ""));
      cell(tr, j.iter !== undefined ? j.iter + " / " + (j.max_iter || "?") : "-");
      cell(tr, fmtNum(j.loss));
      cell(tr, fmtNum(j.test_acc));
      cell(tr, j.state === "running" ? fmtDuration(j.eta_s) : "-");
      cell(tr, j.worker);
      cell(tr, fmtAge(j.updated_at || j.submitted_at, o.now));
      tr.addEventListener("click", () => { location.hash = "job=" + encodeURIComponent(j.id); });
      jobs.appendChild(tr);
    }
    const workers = $("workers").tBodies[0];
    workers.replaceChildren();
    for (const w of o.workers) {
      const tr = document.createElement("tr");
      tr.dataset.worker = w.name;
      cell(tr, w.name);
      cell(tr, w.host);
      cell(tr, w.state);
      cell(tr, w.jobs || "idle");
      cell(tr, w.devices);
      cell(tr, w.heartbeat_age_s !== undefined ? fmtDuration(Math.max(0, w.heartbeat_age_s)) + " ago" : "-");
      workers.appendChild(tr);
    }
  }

  /* ---- one job ---- */

  function selectJob(id) {
    if (id === S.jobId) return;
    S.jobId = id;
    S.job = null;
    S.metricsSince = S.eventsSince = null;
    S.points = new Map();
    S.tests = new Map();
    S.events = [];
    for (const p of [S.lossPlot, S.accPlot]) if (p) p.destroy();
    S.lossPlot = S.accPlot = null;
    S.lossTerms = "";
    $("events").tBodies[0].replaceChildren();
    setText($("cancel-result"), "");
    $("cancel-result").textContent = "";
    $("job-panel").hidden = !id;
    $("job-panel").dataset.job = id || "";
  }

  function takeMetrics(list) {
    for (const m of list) {
      if (typeof m.iter !== "number") continue;
      const old = S.points.get(m.iter);
      /* after a takeover an iteration may come twice: the highest attempt's entry counts */
      if (!old || (m.attempt || 0) >= (old.attempt || 0)) S.points.set(m.iter, m);
    }
  }

  function takeEvents(list) {
    for (const e of list) {
      S.events.push(e);
      if (e.type === "test" && e.iter !== undefined && e.accuracy !== undefined) S.tests.set(Number(e.iter), Number(e.accuracy));
    }
  }

  async function pollJob() {
    const id = S.jobId;
    for (let round = 0; round < 50; round++) {
      let url = "/api/job/" + encodeURIComponent(id);
      const q = [];
      if (S.metricsSince) q.push("metrics_since=" + encodeURIComponent(S.metricsSince));
      if (S.eventsSince) q.push("events_since=" + encodeURIComponent(S.eventsSince));
      if (q.length) url += "?" + q.join("&");
      let r;
      try {
        r = await getJSON(url);
      } catch (e) {
        if (id !== S.jobId) return;
        if (e.status === 404) { showMissing(id, e.message); return; }
        throw e;
      }
      if (id !== S.jobId) return;
      S.job = r.job;
      takeMetrics(r.metrics);
      takeEvents(r.events);
      if (r.metrics_last) S.metricsSince = r.metrics_last;
      if (r.events_last) S.eventsSince = r.events_last;
      if (!r.metrics_more && !r.events_more) break;
    }
    renderJob();
  }

  function showMissing(id, msg) {
    setText($("job-id"), id);
    setText($("job-name"), "");
    setText($("job-state"), "gone");
    $("job-error").hidden = false;
    setText($("job-error"), msg);
    $("cancel-button").hidden = true;
  }

  function renderJob() {
    const j = S.job || {};
    setText($("job-id"), S.jobId);
    setText($("job-name"), j.name);
    const st = $("job-state");
    setText(st, j.state);
    st.className = "state " + (j.state || "");
    setText($("job-iter"), j.iter);
    setText($("job-max-iter"), j.max_iter);
    const frac = Number(j.iter) / Number(j.max_iter);
    $("job-progress").style.width = (isFinite(frac) ? Math.min(1, Math.max(0, frac)) * 100 : 0) + "%";
    setText($("job-eta"), j.state === "running" ? fmtDuration(j.eta_s) : "-");
    setText($("job-loss"), fmtNum(j.loss));
    setText($("job-test-acc"), fmtNum(j.test_acc));
    setText($("job-teacher-acc"), fmtNum(j.teacher_acc));
    setText($("job-worker"), j.worker);
    setText($("job-attempt"), j.attempt);
    $("job-error").hidden = !j.error;
    setText($("job-error"), j.error || "");
    const allow = S.overview && S.overview.allow_cancel;
    $("cancel-button").hidden = !(allow && (j.state === "queued" || j.state === "running"));
    renderEvents();
    renderCharts(j);
  }

  function renderEvents() {
    const body = $("events").tBodies[0];
    body.replaceChildren();
    const shown = S.events.slice(-MAX_EVENTS_SHOWN).reverse();
    for (const e of shown) {
      const tr = document.createElement("tr");
      const ms = Number(String(e.id).split("-")[0]);
      cell(tr, isFinite(ms) ? new Date(ms).toLocaleTimeString() : "-");
      cell(tr, e.type);
      cell(tr, e.worker);
      const rest = Object.keys(e).filter((k) => k !== "id" && k !== "type" && k !== "worker").map((k) => k + "=" + e[k]);
      cell(tr, rest.join("  "));
      body.appendChild(tr);
    }
  }

  /* ---- charts ---- */

  function chartWidth(el) { return Math.max(300, el.clientWidth || el.parentElement.clientWidth || 600); }

  function makePlot(el, labels, yLabel) {
    const series = [{ label: "iteration" }];
    labels.forEach((l, i) => series.push({ label: l, stroke: l === "teacher" ? "#555" : COLORS[i % COLORS.length], width: l === "teacher" ? 1 : 1.5,
      dash: l === "teacher" ? [6, 4] : undefined, spanGaps: true, points: { show: false } }));
    const opts = { width: chartWidth(el), height: 260, scales: { x: { time: false } }, series: series,
      axes: [{ label: "iteration" }, { label: yLabel }], legend: { show: true } };
    el.replaceChildren();
    return new uPlot(opts, [[]].concat(labels.map(() => [])), el);
  }

  function renderCharts(j) {
    const iters = Array.from(S.points.keys()).sort((a, b) => a - b);
    const terms = new Set();
    for (const it of iters) for (const k of Object.keys(S.points.get(it))) if (/loss$/.test(k)) terms.add(k);
    const labels = ["loss"].concat(Array.from(terms).filter((t) => t !== "loss").sort());
    const lossEl = $("loss-chart");
    if (!S.lossPlot || S.lossTerms !== labels.join(",")) {
      if (S.lossPlot) S.lossPlot.destroy();
      S.lossPlot = makePlot(lossEl, labels, "loss");
      S.lossTerms = labels.join(",");
    }
    const num = (v) => (typeof v === "number" ? v : null);
    S.lossPlot.setData([iters].concat(labels.map((l) => iters.map((it) => num(S.points.get(it)[l])))));
    lossEl.dataset.points = String(iters.length);

    const teacher = Number(j.teacher_acc);
    const hasTeacher = j.teacher_acc !== undefined && isFinite(teacher);
    const tIters = Array.from(S.tests.keys()).sort((a, b) => a - b);
    const xs = new Set(tIters);
    if (hasTeacher) { xs.add(0); if (iters.length) xs.add(iters[iters.length - 1]); }
    const ax = Array.from(xs).sort((a, b) => a - b);
    const accLabels = hasTeacher ? ["student", "teacher"] : ["student"];
    const accEl = $("acc-chart");
    if (!S.accPlot || S.accPlot.series.length !== accLabels.length + 1) {
      if (S.accPlot) S.accPlot.destroy();
      S.accPlot = makePlot(accEl, accLabels, "accuracy");
    }
    const data = [ax, ax.map((x) => (S.tests.has(x) ? S.tests.get(x) : null))];
    if (hasTeacher) data.push(ax.map(() => teacher));
    S.accPlot.setData(data);
    accEl.dataset.points = String(tIters.length);
  }

  /* ---- cancel ---- */

  async function cancelJob() {
    const id = S.jobId, btn = $("cancel-button");
    btn.disabled = true;
    try {
      const r = await getJSON("/api/job/" + encodeURIComponent(id) + "/cancel", { method: "POST", headers: { "X-Distilld": "cancel" } });
      setText($("cancel-result"), r.state === "cancelled" ? "cancelled" : "cancel requested: the job stops at its next iteration");
    } catch (e) {
      setText($("cancel-result"), "cancel failed: " + e.message);
    } finally {
      btn.disabled = false;
    }
  }

  /* ---- the loop ---- */

  function jobFromHash() {
    const m = /^#job=(.+)$/.exec(location.hash);
    let id = null;
    try { id = m ? decodeURIComponent(m[1]) : null; } catch (e) { id = null; }
    selectJob(id);
  }

  async function tick() {
    try {
      S.overview = await getJSON("/api/overview");
      renderOverview(S.overview);
      if (S.jobId) await pollJob();
      setText($("conn"), "Redis " + S.overview.redis + " · prefix " + S.overview.prefix + " · updated " + new Date().toLocaleTimeString());
      $("conn").className = "muted";
    } catch (e) {
      setText($("conn"), "cannot read the dashboard's data: " + e.message);
      $("conn").className = "error";
    } finally {
      S.polls++;
      document.body.dataset.polls = String(S.polls);
      setTimeout(tick, POLL_MS);
    }
  }

  $("cancel-button").addEventListener("click", cancelJob);
  window.addEventListener("hashchange", jobFromHash);
  jobFromHash();
  tick();
})();
