// The dashboard of `distilld web` in a real browser: Debian's chromium, headless, driven by
// playwright-core (tests/web/package-lock.json). tests/test_web.c starts redis-server, a daemon
// running a long job and two `distilld web` servers (one read-only, one with --allow-cancel), then
// runs this script:
//
//   node dashboard.test.mjs --rw URL --ro URL --job ID --weird ID --redis-cli PATH --port N --prefix P
//                           [--screenshot FILE] [--chromium PATH]
//
// It checks, against Redis (read with redis-cli):
//   1. read-only: the failed job --weird (a name and an error full of quotes, backslashes, markup,
//      a tab and UTF-8) shows both as Redis holds them, as text (no element made of them), in its
//      panel and in the jobs table; the running job's state is shown, the cancel button is absent,
//      and a POST from the page gets 403;
//   2. with --allow-cancel: the iteration shown lies between Redis's before and after a poll, the
//      state is Redis's, the workers and jobs tables list the worker and the job, the loss curve
//      grows (#loss-chart's data-points between two reads), the accuracy chart draws the teacher's
//      accuracy (the hash's teacher_acc) as a constant series; a screenshot of the page; a click
//      on the cancel button ends the job as `cancelled` in Redis and on the page.
// Prints "ok: ..." per check; exits 1 at the first failure, with what it saw.
import { chromium } from "playwright-core";
import { execFileSync } from "node:child_process";

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, "")] = process.argv[i + 1];
const need = ["rw", "ro", "job", "weird", "redis-cli", "port", "prefix"];
for (const k of need) if (!args[k]) { console.error(`dashboard.test.mjs: --${k} is missing`); process.exit(2); }

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// One command through redis-cli --raw: the reply's bytes as they are, less the last newline.
function redis(...cmd) {
  return execFileSync(args["redis-cli"], ["-p", args.port, "--raw", ...cmd], { encoding: "utf8" }).replace(/\n$/, "");
}
const hgetOf = (id, field) => redis("HGET", `${args.prefix}:job:${id}`, field);
const hget = (field) => hgetOf(args.job, field);
function fail(msg) { throw new Error(msg); }
function ok(msg) { console.log("ok: " + msg); }

async function waitFor(what, fn, timeoutMs) {
  const end = Date.now() + timeoutMs;
  let last;
  while (Date.now() < end) {
    last = await fn();
    if (last && last.ok) return last;
    await sleep(200);
  }
  fail(`${what}: not within ${timeoutMs} ms (last: ${JSON.stringify(last)})`);
}

const text = (page, sel) => page.locator(sel).textContent();

async function weirdText(page) {
  await page.goto(`${args.ro}#job=${encodeURIComponent(args.weird)}`);
  const name = hgetOf(args.weird, "name"), error = hgetOf(args.weird, "error");
  await waitFor("the failed job's error shown", async () => {
    const e = await text(page, "#job-error");
    return { ok: e === error && (await text(page, "#job-state")) === "failed", e };
  }, 20000);
  const shown = await text(page, "#job-name");
  if (shown !== name) fail(`the name shown is ${JSON.stringify(shown)}, Redis has ${JSON.stringify(name)}`);
  const row = page.locator(`#jobs tbody tr[data-job="${args.weird}"] td`);
  if ((await row.nth(1).textContent()) !== name) fail("the jobs table shows another name");
  const made = await page.evaluate(() => document.querySelectorAll("main b, main script").length);
  if (made !== 0) fail(`the page holds ${made} elements made of job text`);
  ok(`the name ${JSON.stringify(name)} and the error shown as Redis holds them, as text`);
}

async function readOnly(browser) {
  const page = await browser.newPage();
  await weirdText(page);
  await page.goto(`${args.ro}#job=${encodeURIComponent(args.job)}`);
  await waitFor("read-only: the job's state shown", async () => {
    const s = await text(page, "#job-state");
    return { ok: s === hget("state"), s };
  }, 20000);
  const name = await text(page, "#job-name");
  if (name !== hget("name")) fail(`read-only: the name shown is ${JSON.stringify(name)}, Redis has ${JSON.stringify(hget("name"))}`);
  if ((await page.locator("#job-name *").count()) !== 0) fail("read-only: the job's name made elements");
  ok(`read-only: state ${await text(page, "#job-state")} and the name ${JSON.stringify(name)} shown as text`);
  if (await page.locator("#cancel-button").isVisible()) fail("read-only: the cancel button is visible");
  if ((await text(page, "#mode")) !== "read-only") fail("read-only: the badge does not say read-only");
  const status = await page.evaluate(async (id) => {
    const r = await fetch(`/api/job/${encodeURIComponent(id)}/cancel`, { method: "POST", headers: { "X-Distilld": "cancel" } });
    return r.status;
  }, args.job);
  if (status !== 403) fail(`read-only: POST cancel from the page: ${status}`);
  if (hget("cancel") !== "") fail("read-only: the job's cancel field is set");
  ok("read-only: no cancel button, POST /api/job/ID/cancel answers 403, the job untouched");
  await page.close();
}

async function withCancel(browser) {
  const page = await browser.newPage({ viewport: { width: 1360, height: 1100 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(`${args.rw}#job=${encodeURIComponent(args.job)}`);
  await waitFor("the loss chart has points", async () => {
    const n = Number(await page.locator("#loss-chart").getAttribute("data-points"));
    return { ok: n > 0, n };
  }, 20000);
  // the iteration shown: after one more poll it lies between Redis's before and after
  const before = Number(hget("iter"));
  const polls = await page.evaluate(() => window.dashboard.polls);
  await page.waitForFunction((p) => window.dashboard.polls >= p + 2, polls, { timeout: 10000 });
  const shown = Number(await text(page, "#job-iter"));
  const after = Number(hget("iter"));
  if (!(before <= shown && shown <= after)) fail(`iteration shown ${shown}, Redis ${before} before and ${after} after`);
  const state = await text(page, "#job-state");
  if (state !== hget("state") || state !== "running") fail(`state shown ${state}, Redis ${hget("state")}`);
  if ((await text(page, "#job-max-iter")) !== hget("max_iter")) fail("max_iter differs");
  ok(`iteration ${shown} shown (Redis ${before} .. ${after}), state ${state}, max_iter ${hget("max_iter")}`);
  const worker = hget("worker");
  if ((await page.locator(`#workers tbody tr[data-worker="${worker}"]`).count()) !== 1) fail(`worker ${worker} not listed`);
  if ((await page.locator(`#jobs tbody tr[data-job="${args.job}"]`).count()) !== 1) fail("the job is not in the jobs table");
  if ((await text(page, "#count-running")) !== redis("ZCARD", `${args.prefix}:state:running`))
    fail("the running count differs from ZCARD state:running");
  ok(`worker ${worker} and the job listed; running count matches Redis`);
  // the loss curve grows
  const n1 = Number(await page.locator("#loss-chart").getAttribute("data-points"));
  const grown = await waitFor("the loss curve grows", async () => {
    const n = Number(await page.locator("#loss-chart").getAttribute("data-points"));
    return { ok: n > n1, n };
  }, 15000);
  const plotLen = await page.evaluate(() => window.dashboard.lossPlot.data[0].length);
  ok(`the loss curve grew from ${n1} to ${grown.n} points (uPlot holds ${plotLen})`);
  // the teacher's accuracy as a horizontal line
  const teacher = Number(hget("teacher_acc"));
  await waitFor("the accuracy chart draws the teacher", async () => {
    const d = await page.evaluate(() => {
      const p = window.dashboard.accPlot;
      return p ? { labels: p.series.map((s) => s.label), data: p.data } : null;
    });
    const line = d && d.data[2];
    return { ok: !!line && line.length >= 2 && line.every((v) => Math.abs(v - teacher) < 1e-9) && d.labels[2] === "teacher", d };
  }, 20000);
  ok(`the teacher's accuracy ${teacher} drawn as a horizontal line`);
  if (errors.length) fail("errors in the page: " + errors.join("; "));
  if (args.screenshot) {
    await page.screenshot({ path: args.screenshot, fullPage: true });
    ok(`screenshot ${args.screenshot}`);
  }
  // cancel
  const button = page.locator("#cancel-button");
  if (!(await button.isVisible())) fail("the cancel button is not visible with --allow-cancel");
  await button.click();
  await waitFor("the job cancelled in Redis", async () => ({ ok: hget("state") === "cancelled", state: hget("state") }), 60000);
  await waitFor("the job cancelled on the page", async () => {
    const s = await text(page, "#job-state");
    return { ok: s === "cancelled", s };
  }, 10000);
  if (await button.isVisible()) fail("the cancel button still shows for a cancelled job");
  ok(`cancel clicked: the job is cancelled in Redis and on the page (${await text(page, "#cancel-result")})`);
  if (errors.length) fail("errors in the page: " + errors.join("; "));
  await page.close();
}

const browser = await chromium.launch({
  executablePath: args.chromium || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
});
let rc = 0;
try {
  await readOnly(browser);
  await withCancel(browser);
} catch (e) {
  console.error("FAIL: " + e.message);
  rc = 1;
} finally {
  await browser.close();
}
process.exit(rc);
