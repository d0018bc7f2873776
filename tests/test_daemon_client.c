/* The daemon end to end (the harness: tests/test_daemon.h): what a job may name, and the CLI.
 *
 * 8. Paths outside the data roots / output root (.., absolute, symlinks) are refused.
 * 9. The client verbs (submit, status, cancel, list, watch) against a live daemon; durations read
 *    "5m22s" (common/cli_util.h), losses 4 significant digits. */
#define _GNU_SOURCE
#define TEST_PROC_NAME "test_daemon_client"
#include "test_daemon.h"

#include <ctype.h>
#include <regex.h>

/* ---- 8. paths outside the roots are refused ------------------------------------------------------------ */

DTEST(test_path_escapes) {
  REQUIRE(begin("t8", 0));
  char p[512], q[512];
  /* outside the data root (tmp), next to it in root */
  snprintf(p, sizeof p, "%s/outside.prototxt", root);
  path_in(q, sizeof q, "student.prototxt");
  CHECK(test_copy_file(q, p));
  path_in(q, sizeof q, "img/im_00.png");
  snprintf(p, sizeof p, "%s/outside.png", root);
  CHECK(test_copy_file(q, p));
  path_in(q, sizeof q, "train.txt");
  snprintf(p, sizeof p, "%s/outside_list.txt", root);
  CHECK(test_copy_file(q, p));
  snprintf(p, sizeof p, "%s/outside.prototxt", root);
  /* symlinks inside the data root that lead out: a net, a list file, an image */
  path_in(q, sizeof q, "link_net.prototxt");
  CHECK(symlink(p, q) == 0);
  snprintf(p, sizeof p, "%s/outside_list.txt", root);
  path_in(q, sizeof q, "link_list.txt");
  CHECK(symlink(p, q) == 0);
  write_student("student_link_list.prototxt", "student", "link_list.txt");
  snprintf(p, sizeof p, "%s/outside.png", root);
  path_in(q, sizeof q, "img/evil.png");
  CHECK(symlink(p, q) == 0);
  path_in(q, sizeof q, "evil_list.txt");
  wfile(q, "im_00.png 0\nevil.png 1\nim_01.png 1\n");
  write_student("student_evil_img.prototxt", "student", "evil_list.txt");
  /* a mean file named in image_data_param (the data layer's fallback) outside the roots */
  {
    path_in(q, sizeof q, "student.prototxt");
    FILE *f = fopen(q, "rb");
    char buf[16384];
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = '\0';
    char *at = strstr(buf, "image_data_param {");
    REQUIRE(at);
    at += strlen("image_data_param {");
    path_in(q, sizeof q, "student_mean.prototxt");
    wfile(q, "%.*s mean_file: '/etc/passwd' %s", (int)(at - buf), buf, at);
  }
  char abs_out[300];
  snprintf(abs_out, sizeof abs_out, "%s/abs_out", root);

  dmn *d = daemon_start("w8", 1, 10, 1);
  REQUIRE(d);
  REQUIRE(daemon_wait_up(d, 15));
  job_opts base = {.max_iter = 2, .display = 1};
  struct {
    const char *id;
    job_opts o;
    const char *field;
  } cases[] = {
      {"p_up", {.max_iter = 2, .display = 1, .student = "../outside.prototxt"}, "student.net"},
      {"p_abs", {.max_iter = 2, .display = 1, .teacher = 1, .teacher_weights = "/etc/passwd"}, "teacher.weights"},
      {"p_link_net", {.max_iter = 2, .display = 1, .student = "link_net.prototxt"}, "student.net"},
      {"p_link_list", {.max_iter = 2, .display = 1, .student = "student_link_list.prototxt"}, "link_list.txt"},
      {"p_link_img", {.max_iter = 2, .display = 1, .student = "student_evil_img.prototxt"}, "evil.png"},
      {"p_mean", {.max_iter = 2, .display = 1, .student = "student_mean.prototxt"}, "image_data_param.mean_file"},
      {"p_out_up", {.max_iter = 2, .display = 1, .output_dir = "../x"}, "output_dir"},
      {"p_out_abs", {.max_iter = 2, .display = 1, .output_dir = abs_out}, "output_dir"},
      {"p_out_root", {.max_iter = 2, .display = 1, .output_dir = "out"}, "output_dir"},
      {"p_out_dotdot", {.max_iter = 2, .display = 1, .output_dir = "out/../../x"}, "output_dir"},
  };
  size_t n_cases = sizeof cases / sizeof cases[0];
  for (size_t i = 0; i < n_cases; i++) REQUIRE(submit_job(cases[i].id, &cases[i].o));
  REQUIRE(submit_job("p_good", &base)); /* the same daemon still runs a job that stays inside */
  for (size_t i = 0; i < n_cases; i++) {
    char *st = wait_final(cases[i].id, 30);
    CHECKF(st && !strcmp(st, "failed"), "%s: state %s", cases[i].id, test__str(st));
    free(st);
    char *er = hget(K("job:%s", cases[i].id), "error");
    CHECKF(test__contains(er, "refused") && test__contains(er, cases[i].field), "%s: error \"%s\" (want \"refused\" and \"%s\")",
           cases[i].id, test__str(er), cases[i].field);
    free(er);
    CHECK(hget_ll(K("job:%s", cases[i].id), "iter", 0) == 0);
  }
  char *st = wait_final("p_good", 30);
  CHECKF(st && !strcmp(st, "succeeded"), "p_good: %s", test__str(st));
  free(st);
  snprintf(p, sizeof p, "%s/x", root);
  CHECK(access(p, F_OK) != 0);
  CHECK(access(abs_out, F_OK) != 0);
}

/* ---- 9. the client verbs against a live daemon ----------------------------------------------------------- */

/* The word after `label` (the first place it stands, then spaces) in `out`, into w; "" if absent. */
static void word_after(char *w, size_t len, const char *out, const char *label) {
  const char *p = out ? strstr(out, label) : NULL;
  w[0] = '\0';
  if (!p) return;
  p += strlen(label);
  p += strspn(p, " ");
  size_t n = strcspn(p, " \n)");
  snprintf(w, len, "%.*s", (int)(n < len ? n : len - 1), p);
}

/* 1 when `w` is a duration as dd_cli_fmt_duration writes it. */
static int is_duration(const char *w) {
  regex_t re;
  if (regcomp(&re, "^([0-9]\\.[0-9]s|[0-9]+s|[0-9]+m[0-5][0-9]s|[0-9]+h[0-5][0-9]m|[0-9]+d[0-2][0-9]h)$", REG_EXTENDED))
    return 0;
  int ok = regexec(&re, w, 0, NULL, 0) == 0;
  regfree(&re);
  return ok;
}

/* The significant digits of a number as %g writes it (its mantissa's digits, leading zeros aside). */
static int sig_digits(const char *w) {
  int n = 0, lead = 1;
  for (const char *p = w; *p && *p != 'e'; p++) {
    if (!isdigit((unsigned char)*p)) continue;
    if (lead && *p == '0') continue;
    lead = 0;
    n++;
  }
  return n;
}

/* Every " loss X" in `out` (status and watch lines) has at most 4 significant digits; at least one. */
static void check_losses(const char *out) {
  int seen = 0;
  for (const char *p = out; p && (p = strstr(p, " loss ")); p += 6) {
    char w[64];
    word_after(w, sizeof w, p, " loss ");
    if (!w[0] || !(isdigit((unsigned char)w[0]) || w[0] == '-')) continue;
    seen++;
    CHECKF(sig_digits(w) <= 4, "loss \"%s\" has more than 4 significant digits", w);
  }
  CHECKF(seen > 0, "no loss shown: %s", test__str(out));
}

DTEST(test_client_verbs) {
  REQUIRE(begin("t9", 0));
  char p[512], *out = NULL, id_long[80], id_queued[80], id_short[80];
  job_opts lo = {.max_iter = 200000, .display = 10}, sh = {.max_iter = 6, .display = 2, .test_interval = 6, .snapshot = 3};
  char text[4096];
  job_text(text, sizeof text, "v_long", &lo);
  path_in(p, sizeof p, "v_long.job");
  wfile(p, "%s", text);
  job_text(text, sizeof text, "v_queued", &sh);
  path_in(p, sizeof p, "v_queued.job");
  wfile(p, "%s", text);
  job_text(text, sizeof text, "v_short", &sh);
  path_in(p, sizeof p, "v_short.job");
  wfile(p, "%s", text);
  /* submit three while no daemon runs */
  int st = client(&out, "submit v_long.job");
  CHECKF(st == 0, "submit: exit %d: %s", st, test__str(out));
  test_first_line(out, id_long, sizeof id_long);
  free(out);
  st = client(&out, "submit v_queued.job");
  CHECK(st == 0);
  test_first_line(out, id_queued, sizeof id_queued);
  free(out);
  st = client(&out, "submit v_short.job --id my-short.1");
  CHECK(st == 0);
  test_first_line(out, id_short, sizeof id_short);
  free(out);
  CHECKF(!strcmp(id_long, "j1") && !strcmp(id_queued, "j2") && !strcmp(id_short, "my-short.1"), "ids %s %s %s", id_long,
         id_queued, id_short);
  st = client(&out, "submit v_short.job --id my-short.1");
  CHECKF(st != 0, "an id used twice was accepted: %s", test__str(out));
  free(out);
  char *s = hget(K("job:%s", id_long), "state");
  CHECK(s && !strcmp(s, "queued"));
  free(s);
  st = client(&out, "status %s", id_long);
  CHECKF(st == 0, "status: exit %d", st);
  CHECK_CONTAINS(out, id_long);
  CHECK_CONTAINS(out, "queued");
  free(out);
  /* a queued job cancelled: never runs */
  st = client(&out, "cancel %s", id_queued);
  CHECK(st == 0);
  CHECK_CONTAINS(out, "cancelled (it was queued)");
  free(out);
  /* the daemon takes j1 first */
  dmn *d = daemon_start("w9", 1, 10, 1);
  REQUIRE(d);
  REQUIRE(daemon_wait_up(d, 15));
  REQUIRE(wait_field_at_least(id_long, "iter", 20, 30));
  st = client(&out, "status %s", id_long);
  CHECK(st == 0);
  CHECK_CONTAINS(out, "running");
  CHECK_CONTAINS(out, "w9");
  {
    char eta[64], elapsed[64], ago[64];
    word_after(eta, sizeof eta, out, "\n  eta");
    word_after(elapsed, sizeof elapsed, out, "(elapsed");
    CHECKF(is_duration(eta) && is_duration(elapsed), "eta \"%s\", elapsed \"%s\": %s", eta, elapsed, out);
    const char *open = strstr(out, "\n  started ");
    open = open ? strchr(open, '(') : NULL;
    word_after(ago, sizeof ago, open, "(");
    CHECKF(is_duration(ago), "started \"%s\" ago: %s", ago, out);
  }
  check_losses(out);
  free(out);
  st = client(&out, "list");
  CHECK(st == 0);
  CHECK_CONTAINS(out, id_long);
  CHECK_CONTAINS(out, id_queued);
  CHECK_CONTAINS(out, id_short);
  CHECK_CONTAINS(out, "running");
  CHECK_CONTAINS(out, "cancelled");
  free(out);
  st = client(&out, "cancel %s", id_long);
  CHECK(st == 0);
  CHECK_CONTAINS(out, "cancel requested");
  free(out);
  char *fin = wait_final(id_long, 30);
  CHECKF(fin && !strcmp(fin, "cancelled"), "%s: %s", id_long, test__str(fin));
  free(fin);
  fin = wait_final(id_short, 30);
  CHECKF(fin && !strcmp(fin, "succeeded"), "%s: %s", id_short, test__str(fin));
  free(fin);
  s = hget(K("job:%s", id_queued), "state");
  CHECK(s && !strcmp(s, "cancelled"));
  free(s);
  CHECK(count_events(id_queued, "state", "running") == 0);
  char *w = hget(K("job:%s", id_queued), "worker");
  CHECKF(!w, "the cancelled queued job ran on %s", w);
  free(w);
  st = client(&out, "status %s --json", id_short);
  CHECK(st == 0);
  CHECK_CONTAINS(out, "\"state\":\"succeeded\"");
  CHECK_CONTAINS(out, "\"test_acc\":");
  free(out);
  st = client(&out, "watch %s --count 1 --interval 0.1", id_short);
  CHECKF(st == 0, "watch: exit %d: %s", st, test__str(out));
  CHECK_CONTAINS(out, id_short);
  CHECK_CONTAINS(out, "succeeded");
  CHECK_CONTAINS(out, "METRICS");
  check_losses(out);
  {
    char elapsed[64];
    word_after(elapsed, sizeof elapsed, out, "\n  elapsed");
    CHECKF(is_duration(elapsed), "elapsed \"%s\": %s", elapsed, out);
  }
  free(out);
  st = client(&out, "watch --count 1");
  CHECK(st == 0);
  CHECK_CONTAINS(out, "WORKERS");
  CHECK_CONTAINS(out, "w9");
  free(out);
  st = client(&out, "list");
  CHECK(st == 0);
  CHECK_CONTAINS(out, "succeeded");
  free(out);
  st = client(&out, "cancel %s", id_short);
  CHECK(st == 0);
  CHECK_CONTAINS(out, "already succeeded");
  free(out);
  st = client(&out, "status nope");
  CHECK(st == 1);
  free(out);
}

int main(void) {
  if (daemon_main_begin()) return 1;
  RUN(test_setup);
  RUN(test_path_escapes);
  RUN(test_client_verbs);
  return daemon_main_end();
}
