/* The deployment files under deploy/ that need no server, checked with the real tools (every
 * process bounded, every child killed at exit; tests/test_deploy_redis.c runs Redis and the daemons):
 *
 * 1. deploy/distilld.service: `systemd-analyze verify` on a copy whose ExecStart names the built
 *    binary (verify refuses an ExecStart that does not exist; the shipped path, /usr/local/bin,
 *    is checked as text), no warning naming the unit, `systemd-analyze security --offline` under a
 *    threshold, and its settings against deploy/distilld.prototxt (the credential path, the output
 *    root, a stop timeout longer than the drain). verify does not resolve User= (it accepts a
 *    user that does not exist), so deploy/distilld.sysusers.conf is run through
 *    `systemd-sysusers --root=SCRATCH` instead and must create that user. Skipped without systemd's
 *    tools.
 * 4. deploy/check_containerfile.py passes deploy/Containerfile and fails broken copies of it.
 *    Skipped without python3.
 *
 * DD_KEEP_TMP=1 keeps the scratch folder. */
#define _GNU_SOURCE
#include <string.h>
#include <sys/stat.h>

#define TEST_PROC_NAME "test_deploy"
#include "test_deploy.h"

/* ---- 1. the systemd unit and the sysusers snippet -------------------------------------------------- */

/* The value of the first "Key=" line of a unit file (malloc'd), or NULL. */
static char *unit_get(const char *text, const char *key) {
  size_t kl = strlen(key);
  for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
    if (!strncmp(p, key, kl) && p[kl] == '=') {
      const char *v = p + kl + 1;
      return strndup(v, strcspn(v, "\n"));
    }
  }
  return NULL;
}

/* A quoted prototxt string field's value (malloc'd), or NULL. */
static char *proto_get(const char *text, const char *key) {
  char pat[80];
  snprintf(pat, sizeof pat, "\n%s: \"", key);
  const char *p = strstr(text, pat);
  if (!p) return NULL;
  p += strlen(pat);
  return strndup(p, strcspn(p, "\""));
}

static long proto_get_int(const char *text, const char *key, long dflt) {
  char pat[80];
  snprintf(pat, sizeof pat, "\n%s: ", key);
  const char *p = strstr(text, pat);
  return p ? strtol(p + strlen(pat), NULL, 10) : dflt;
}

static void test_systemd_unit(void) {
  char sda[512], sysusers[512];
  char *unit = test_slurp(DEPLOY "/distilld.service"), *cfg = test_slurp(DEPLOY "/distilld.prototxt");
  REQUIRE(unit && cfg);
  /* the unit as shipped, read as text: what verify cannot see */
  char *exec = unit_get(unit, "ExecStart"), *user = unit_get(unit, "User"), *cred = unit_get(unit, "LoadCredential");
  char *rw = unit_get(unit, "ReadWritePaths"), *stop = unit_get(unit, "TimeoutStopSec");
  char *pwfile = proto_get(cfg, "redis_password_file"), *outroot = proto_get(cfg, "output_root");
  CHECKF(exec && !strcmp(exec, "/usr/local/bin/distilld --config /etc/distilld/distilld.prototxt"), "ExecStart=%s",
         test__str(exec));
  CHECK(user && !strcmp(user, "distilld"));
  /* LoadCredential=NAME:FILE is read by the daemon at /run/credentials/<unit>/NAME */
  char want_pw[256] = "";
  if (cred && strchr(cred, ':'))
    snprintf(want_pw, sizeof want_pw, "/run/credentials/distilld.service/%.*s", (int)(strchr(cred, ':') - cred), cred);
  CHECKF(pwfile && !strcmp(pwfile, want_pw), "the config's redis_password_file %s, the unit's credential %s",
         test__str(pwfile), test__str(cred));
  CHECKF(rw && outroot && strstr(rw, outroot), "ReadWritePaths=%s does not hold output_root %s", test__str(rw),
         test__str(outroot));
  long drain = proto_get_int(cfg, "drain_timeout_s", 30), stop_s = stop ? strtol(stop, NULL, 10) : 0;
  CHECKF(stop_s >= drain + 60, "TimeoutStopSec=%s leaves too little after drain_timeout_s %ld for the snapshots",
         test__str(stop), drain);
  CHECK_CONTAINS(unit, "\nStandardError=journal\n");
  CHECK_CONTAINS(unit, "\nDeviceAllow=/dev/nvidiactl rw\n");
  CHECK_CONTAINS(unit, "\nDeviceAllow=/dev/nvidia-uvm rw\n");
  CHECK(!strstr(unit, "\nPrivateDevices=yes") && !strstr(unit, "\nMemoryDenyWriteExecute=yes"));
  free(exec), free(user), free(cred), free(rw), free(stop), free(pwfile), free(outroot);

  if (!find_exe(sda, sizeof sda, "systemd-analyze")) {
    printf("SKIP: systemd-analyze is not on PATH: the unit was checked as text only (apt install systemd)\n");
  } else {
    /* verify wants ExecStart's binary to exist: a copy naming the one just built */
    char dir[256], path[300], *out = NULL, cmd[2048];
    snprintf(dir, sizeof dir, "%s/unit", root);
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/distilld.service", dir);
    int n = 0;
    char *copy = replace_all(unit, "ExecStart=/usr/local/bin/distilld ", "ExecStart=" DISTILLD_EXE " ", &n);
    REQUIRE(copy && n == 1);
    CHECK(wfile(path, "%s", copy));
    free(copy);
    snprintf(cmd, sizeof cmd, "'%s' verify '%s' 2>&1", sda, path);
    int st = test_capture(&out, cmd);
    int verify_ok = st == 0 && !test__contains(out, "distilld.service");
    CHECKF(verify_ok, "systemd-analyze verify: exit %d:\n%s", st, test__str(out));
    free(out);
    snprintf(cmd, sizeof cmd, "'%s' security --offline=yes --threshold=50 '%s' 2>&1", sda, path);
    st = test_capture(&out, cmd);
    const char *lvl = out ? strstr(out, "Overall exposure level") : NULL;
    printf("     systemd-analyze verify: %s; security: %.*s\n", verify_ok ? "clean" : "FAILED",
           lvl ? (int)strcspn(lvl, "\n") : 7, lvl ? lvl : "(none)");
    CHECKF(st == 0 && lvl, "systemd-analyze security over 5.0 (exit %d):\n%s", st, test__str(out));
    free(out);
  }

  if (!find_exe(sysusers, sizeof sysusers, "systemd-sysusers")) {
    printf("SKIP: systemd-sysusers is not on PATH: deploy/distilld.sysusers.conf not run\n");
  } else {
    char sysroot[256], etc[300], cmd[2048], passwd[320], *out = NULL;
    snprintf(sysroot, sizeof sysroot, "%s/sysroot", root);
    snprintf(etc, sizeof etc, "%s/etc", sysroot);
    mkdir(sysroot, 0755);
    mkdir(etc, 0755);
    snprintf(cmd, sizeof cmd, "'%s' --root='%s' '%s/distilld.sysusers.conf' 2>&1", sysusers, sysroot, DEPLOY);
    int st = test_capture(&out, cmd);
    CHECKF(st == 0, "systemd-sysusers: exit %d:\n%s", st, test__str(out));
    free(out);
    snprintf(passwd, sizeof passwd, "%s/passwd", etc);
    char *pw = test_slurp(passwd);
    CHECKF(pw && !strncmp(pw, "distilld:x:", 11) && strstr(pw, ":/srv/distilld:"), "passwd: %s", test__str(pw));
    free(pw);
  }
  free(unit);
  free(cfg);
}

/* ---- 4. the Containerfile checker ------------------------------------------------------------------ */

static void test_containerfile(void) {
  char py[512], cmd[4096], *out = NULL;
  if (!find_exe(py, sizeof py, "python3")) {
    printf("SKIP: python3 is not on PATH: deploy/check_containerfile.py not run\n");
    return;
  }
  snprintf(cmd, sizeof cmd,
           "'%s' '%s/check_containerfile.py' --deps '%s/scripts/install-deps.sh' '%s/Containerfile' 2>&1", py, DEPLOY,
           DD_SOURCE_DIR, DEPLOY);
  int st = test_capture(&out, cmd);
  CHECKF(st == 0 && test__contains(out, ": ok"), "check_containerfile.py: exit %d:\n%s", st, test__str(out));
  free(out);
  char *cf = test_slurp(DEPLOY "/Containerfile");
  REQUIRE(cf);
  /* broken copies, each with the message it must give */
  static const struct {
    const char *from, *to, *want;
  } bad[] = {
      {"\nCOPY cuda cuda\n", "\nCOPY cudax cuda\n", "'cudax' does not exist"},
      {"\nENTRYPOINT [\"distilld\", \"--config\", \"/etc/distilld/distilld.prototxt\"]",
       "\nENTRYPOINT distilld --config /etc/distilld/distilld.prototxt", "ENTRYPOINT is not in exec form"},
      {"\nSTOPSIGNAL ", "\nSTOPSIGNL ", "unknown instruction 'STOPSIGNL'"},
      {"\nUSER distilld\n", "\nUSER root\n", "runs as root"},
      {"libopenblas-dev \\\n", "libopenblas-dev \\ \n", "whitespace after the line continuation"},
      {"\nENTRYPOINT [\"distilld\", \"--config\", \"/etc/distilld/distilld.prototxt\"]",
       "\nENTRYPOINT [\"distilld\", \"--config\", \"/etc/distilld/distilld.prototxt\"]\nRUN true \\",
       "ends inside a line continuation"},
      {"\nCOPY tests tests\n", "\nCOPY ../outside outside\n", "leaves the build context"},
      {" redis-server ", " a-cache ", "installs redis-server"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int n = 0;
    char *b = replace_all(cf, bad[i].from, bad[i].to, &n);
    CHECKF(b && n >= 1, "case %zu: \"%s\" is not in deploy/Containerfile", i, bad[i].from);
    char path[300];
    snprintf(path, sizeof path, "%s/Containerfile.bad%zu", root, i);
    if (b) wfile(path, "%s", b);
    free(b);
    snprintf(cmd, sizeof cmd,
             "'%s' '%s/check_containerfile.py' --context '%s' --deps '%s/scripts/install-deps.sh' '%s' 2>&1", py,
             DEPLOY, DD_SOURCE_DIR, DD_SOURCE_DIR, path);
    st = test_capture(&out, cmd);
    CHECKF(st == 1 && test__contains(out, bad[i].want), "case %zu (%s): exit %d:\n%s", i, bad[i].want, st,
           test__str(out));
    free(out);
  }
  free(cf);
}

/* ---- 5. the Grafana dashboard over Prometheus --------------------------------------------------------- */

/* The generated JSON is what make_prometheus_dashboard.py writes; its queries name documented
 * metrics and labels and are valid PromQL (promtool, Debian's prometheus package); a broken copy
 * is caught. The live check (every query on a real Prometheus scraping a real daemon) is
 * tests/test_daemon_metrics.c's. */
static void test_prometheus_dashboard(void) {
  char py[512], cmd[4096], *out = NULL;
  if (!find_exe(py, sizeof py, "python3")) {
    printf("SKIP: python3 is not on PATH\n");
    return;
  }
  char promtool[512];
  int have_promtool = find_exe(promtool, sizeof promtool, "promtool");
  if (!have_promtool) printf("     promtool not on PATH: PromQL syntax not checked (scripts/install-deps.sh installs it)\n");
  snprintf(cmd, sizeof cmd, "'%s' '%s/grafana/check_prometheus_dashboard.py' %s%s%s 2>&1", py, DEPLOY,
           have_promtool ? "--promtool '" : "", have_promtool ? promtool : "", have_promtool ? "'" : "");
  int st = test_capture(&out, cmd);
  CHECKF(st == 0 && test__contains(out, ": ok") && (!have_promtool || test__contains(out, "valid PromQL")),
         "check_prometheus_dashboard.py: exit %d:\n%s", st, test__str(out));
  free(out);
  /* the JSON in the repository is the generator's */
  char gen[300];
  snprintf(gen, sizeof gen, "%s/gen", root);
  snprintf(cmd, sizeof cmd, "mkdir -p '%s' && cp '%s/grafana/make_prometheus_dashboard.py' '%s/' && '%s' '%s/make_prometheus_dashboard.py' && "
           "cmp '%s/distilld-prometheus-dashboard.json' '%s/grafana/distilld-prometheus-dashboard.json' 2>&1",
           gen, DEPLOY, gen, py, gen, gen, DEPLOY);
  st = test_capture(&out, cmd);
  CHECKF(st == 0, "the dashboard JSON is not what make_prometheus_dashboard.py writes (run it): %s", test__str(out));
  free(out);
  char *dj = test_slurp(DEPLOY "/grafana/distilld-prometheus-dashboard.json");
  REQUIRE(dj);
  static const struct {
    const char *from, *to, *want;
  } bad[] = {
      {"distilld_job_eta_seconds", "distilld_job_eta", "is not a metric docs/monitoring.md documents"},
      {"sum by (state)", "sum by (status)", "label 'status' is not one the endpoint sets"},
      {"\"pluginId\": \"prometheus\"", "\"pluginId\": \"redis-datasource\"", "want exactly one Prometheus"},
      {"[1h]))", "[1h])", "promtool check rules"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    if (i == 3 && !have_promtool) continue;
    int n = 0;
    char *b = replace_all(dj, bad[i].from, bad[i].to, &n);
    CHECKF(b && n >= 1, "case %zu: \"%s\" is not in the dashboard", i, bad[i].from);
    char path[300];
    snprintf(path, sizeof path, "%s/dash.bad%zu.json", root, i);
    if (b) wfile(path, "%s", b);
    free(b);
    snprintf(cmd, sizeof cmd, "'%s' '%s/grafana/check_prometheus_dashboard.py' --dashboard '%s' %s%s%s 2>&1", py, DEPLOY,
             path, have_promtool ? "--promtool '" : "", have_promtool ? promtool : "", have_promtool ? "'" : "");
    st = test_capture(&out, cmd);
    CHECKF(st == 1 && test__contains(out, bad[i].want), "case %zu (%s): exit %d:\n%s", i, bad[i].want, st,
           test__str(out));
    free(out);
  }
  free(dj);
}

int main(void) {
  if (deploy_main_begin()) return 1;
  RUN(test_systemd_unit);
  RUN(test_containerfile);
  RUN(test_prometheus_dashboard);
  return deploy_main_end();
}
