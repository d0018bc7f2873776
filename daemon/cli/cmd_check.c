/* `distilld check`: parse a net (and optionally weights and a solver), print a per-layer summary
 * and the lints of core/net_check.c. Exit status 0 clean, 1 warnings only, 2 errors. Files in old
 * Caffe forms are upgraded while they are read (core/format/upgrade.c): check says which forms it
 * found, and `--upgrade OUT` writes the current form. */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format/caffe_io.h"
#include "format/fileio.h"
#include "format/textformat.h"
#include "devices/devices.h"
#include "cli/cli.h"
#include "common/cli_util.h"
#include "base/dd_error.h"
#include "train/job.h"
#include "net/net_check.h"
#include "train/solver_check.h"

/* Prints one diagnostic; continuation lines of the message are indented under it. */
static void print_diag(const dd_diag *d) {
  static const char *const lv[] = {"note", "warning", "error"};
  fprintf(stderr, "%s: ", lv[d->level]);
  if (d->where) fprintf(stderr, "%s: ", d->where);
  for (const char *p = d->msg; *p; p++) {
    fputc(*p, stderr);
    if (*p == '\n') fputs("  ", stderr);
  }
  fputc('\n', stderr);
}

static void print_rules(const Caffe__NetStateRule *r, const char *kind) {
  printf(" %s{", kind);
  if (r->has_phase) printf(" phase %s", dd_phase_name(r->phase));
  if (r->has_min_level) printf(" min_level %d", r->min_level);
  if (r->has_max_level) printf(" max_level %d", r->max_level);
  for (size_t i = 0; i < r->n_stage; i++) printf(" stage \"%s\"", r->stage[i]);
  for (size_t i = 0; i < r->n_not_stage; i++) printf(" not_stage \"%s\"", r->not_stage[i]);
  printf(" }");
}

/* The weights' blobs for a layer name, across all --weights files (the last file that has the
 * layer wins, as Caffe applies them in order). */
typedef struct {
  const char *path;
  dd_weight_layer *layers;
  size_t n;
} weights_file;

static const dd_weight_layer *find_weights(const weights_file *wf, size_t nwf, const char *name) {
  const dd_weight_layer *found = NULL;
  for (size_t f = 0; f < nwf; f++)
    for (size_t i = 0; i < wf[f].n; i++)
      if (wf[f].layers[i].name && name && !strcmp(wf[f].layers[i].name, name)) found = &wf[f].layers[i];
  return found;
}

static void print_summary(const Caffe__NetParameter *net, const char *path, const dd_net_graph *g,
                          const weights_file *wf, size_t nwf, int quiet) {
  int64_t total = 0, learning = 0;
  int unknown = 0;
  for (size_t i = 0; i < g->n_layers; i++)
    for (int p = 0; p < g->layers[i].n_params; p++) {
      int64_t c = dd_shape_count(&g->layers[i].param_shape[p]);
      if (c < 0) {
        unknown = 1;
        continue;
      }
      total += c;
      if (g->layers[i].param_learns[p]) learning += c;
    }
  printf("net \"%s\" (%s), phase %s: %zu of %zu layers, %lld parameters%s (%lld learn)\n",
         net->name ? net->name : "", path, dd_phase_name(g->phase), g->n_layers, net->n_layer,
         (long long)total, unknown ? "+" : "", (long long)learning);
  if (quiet) return;
  char s[96];
  for (size_t i = 0; i < g->n_layers; i++) {
    const dd_glayer *l = &g->layers[i];
    const Caffe__LayerParameter *lp = l->lp;
    printf("[%zu] %s (%s) ", i, lp->name ? lp->name : "(unnamed)", lp->type ? lp->type : "?");
    for (size_t b = 0; b < lp->n_bottom; b++) printf("%s%s", b ? ", " : "", lp->bottom[b]);
    printf(" -> ");
    for (size_t t = 0; t < lp->n_top; t++) printf("%s%s", t ? ", " : "", lp->top[t]);
    for (size_t r = 0; r < lp->n_include; r++) print_rules(lp->include[r], "include ");
    for (size_t r = 0; r < lp->n_exclude; r++) print_rules(lp->exclude[r], "exclude ");
    printf("\n");
    if (l->nt) {
      printf("    tops:");
      for (int t = 0; t < l->nt; t++) {
        printf(" %s %s", lp->top[t], dd_shape_str(&g->blobs[l->top[t]].shape, s, sizeof s));
        if (l->loss_weight[t] != 0 || (t == 0 && l->ops && l->ops->is_loss) || lp->n_loss_weight)
          printf(" (loss_weight %g)", l->loss_weight[t]);
        printf("%s", t + 1 < l->nt ? "," : "");
      }
      printf("\n");
    }
    if (l->n_params) {
      printf("    params:");
      for (int p = 0; p < l->n_params; p++)
        printf(" %s lr_mult %g decay_mult %g%s%s", dd_shape_str(&l->param_shape[p], s, sizeof s),
               l->lr_mult[p], l->decay_mult[p], l->param_learns[p] ? " (learns)" : " (frozen)",
               p + 1 < l->n_params ? ";" : "");
      printf("\n");
    }
    if (nwf) {
      const dd_weight_layer *w = find_weights(wf, nwf, lp->name);
      if (w && w->n_blobs) {
        printf("    weights:");
        for (size_t b = 0; b < w->n_blobs; b++)
          printf(" %s%s", dd_blob_proto_shape_str(w->blobs[b], s, sizeof s), b + 1 < w->n_blobs ? "," : "");
        printf("\n");
      } else if (l->n_params) {
        printf("    weights: none (filler values)\n");
      }
    }
    if (l->bn_moves_stats) printf("    statistics: batch (updated by every forward)\n");
    printf("    backward: %s", l->need_backward ? "yes" : "no");
    if (lp->n_propagate_down) {
      printf(" (propagate_down:");
      for (size_t b = 0; b < lp->n_propagate_down; b++) printf(" %s", lp->propagate_down[b] ? "true" : "false");
      printf(")");
    }
    printf("\n");
  }
}

static int parse_phase(const char *s, Caffe__Phase *out) {
  if (!strcmp(s, "TRAIN") || !strcmp(s, "train")) *out = CAFFE__PHASE__TRAIN;
  else if (!strcmp(s, "TEST") || !strcmp(s, "test")) *out = CAFFE__PHASE__TEST;
  else return -1;
  return 0;
}

/* `distilld check --job JOB`: parses and validates a job, then checks its student (and teacher)
 * nets. */
static int check_job(const char *path) {
  char err[2048];
  Distilld__DistillJob *job = NULL;
  if (dd_job_read(&job, path, err, sizeof err)) {
    fprintf(stderr, "error: %s\n", err);
    return 2;
  }
  int status = 0;
  if (dd_job_validate(job, NULL, dd_devices_builtin(), err, sizeof err)) {
    fprintf(stderr, "error: %s: %s\n", path, err);
    status = 2;
  } else {
    printf("job \"%s\" (%s): %s\n", job->name, path, job->teacher ? "distillation" : "training without a teacher");
    char *args[4] = {job->student->net, NULL};
    int st = dd_cmd_check(1, args);
    if (st > status) status = st;
    if (job->teacher) {
      char *targs[4] = {job->teacher->net, "--phase", "TEST", NULL};
      st = dd_cmd_check(3, targs);
      if (st > status) status = st;
    }
  }
  distilld__distill_job__free_unpacked(job, NULL);
  return status;
}

/* Says which old forms `what` (a file) was upgraded from, and adds Caffe's dropped fields as
 * warnings. */
static void report_upgrade(const char *what, const dd_upgrade_report *rep, dd_diags *diags) {
  if (!rep->forms) return;
  char forms[256];
  dd_upgrade_forms_str(rep->forms, forms, sizeof forms);
  printf("upgraded: %s is in old Caffe forms (%s); read as the current form, as Caffe reads it\n", what, forms);
  for (const char *p = rep->notes; *p;) {
    const char *e = strchr(p, '\n');
    size_t n = e ? (size_t)(e - p) : strlen(p);
    dd_diags_add(diags, DD_DIAG_WARNING, what, "%.*s", (int)n, p);
    p += n + (e != NULL);
  }
}

/* Writes `m` in text format to `path` (atomically). */
static int write_upgraded(const ProtobufCMessage *m, const char *path) {
  char err[1024];
  char *text = dd_text_print(m);
  if (!text) {
    fprintf(stderr, "error: out of memory printing the upgraded form\n");
    return -1;
  }
  int r = dd_write_file_atomic(path, text, strlen(text), err, sizeof err);
  free(text);
  if (r) {
    fprintf(stderr, "error: %s\n", err);
    return -1;
  }
  printf("wrote the current form to %s\n", path);
  return 0;
}

/* Reads the comma-separated weights files of `arg` (the list copied into *wlist, which the
 * caller frees; the paths point into it) into wf / wnets (16 at most, *nwf of them filled).
 * Returns 0, or -1 after printing the error. */
static int read_weights(const char *arg, char **wlist, weights_file wf[16], Caffe__NetParameter *wnets[16], size_t *nwf,
                        dd_diags *diags) {
  char err[2048];
  if (!(*wlist = strdup(arg))) return -1;
  char *save = NULL;
  for (char *w = strtok_r(*wlist, ",", &save); w; w = strtok_r(NULL, ",", &save)) {
    if (*nwf == 16) {
      fprintf(stderr, "error: at most %zu weights files\n", *nwf);
      return -1;
    }
    dd_upgrade_report rep = {0};
    if (dd_caffemodel_read_report(&wnets[*nwf], w, &rep, err, sizeof err)) {
      fprintf(stderr, "error: %s\n", err);
      return -1;
    }
    report_upgrade(w, &rep, diags);
    wf[*nwf].path = w;
    if (dd_weight_layers(&wf[*nwf].layers, &wf[*nwf].n, wnets[*nwf], err, sizeof err)) {
      fprintf(stderr, "error: %s: %s\n", w, err);
      caffe__net_parameter__free_unpacked(wnets[*nwf], NULL);
      wnets[*nwf] = NULL;
      return -1;
    }
    (*nwf)++;
  }
  return 0;
}

/* The NetState: --stage/--level replace the net's own (Caffe's command line); else the solver's
 * state for the phase is merged into it (Caffe's Solver). A changed net goes to a copy in
 * *staged, and *netp points to it. Returns 0 or DD_ENOMEM. */
static int apply_state(Caffe__NetParameter **staged, const Caffe__NetParameter **netp,
                       const Caffe__SolverParameter *solver, Caffe__Phase phase, int has_level, int level,
                       const char *const *stages, size_t n_stages) {
  const Caffe__NetState *sst = !solver ? NULL : phase == CAFFE__PHASE__TRAIN ? solver->train_state
                               : solver->n_test_state ? solver->test_state[0] : NULL;
  if (!n_stages && !has_level && !(sst && (sst->has_level || sst->n_stage))) return 0;
  if (!(*staged = (Caffe__NetParameter *)dd_proto_copy(&(*netp)->base))) return DD_ENOMEM;
  *netp = *staged;
  if (n_stages || has_level) return dd_net_set_state(*staged, has_level, level, stages, n_stages, 1);
  return dd_net_set_state(*staged, sst->has_level, sst->level, (const char *const *)sst->stage, sst->n_stage, 0);
}

/* --stage S (at most 16) or --level N into the NetState being built. Returns 0, or -1 with the
 * error printed. */
static int state_option(const char *opt, const char *val, const char **stages, size_t *n_stages, int *has_level,
                        int *level) {
  if (!strcmp(opt, "--stage")) {
    if (*n_stages == 16) {
      dd_cli_error("check: at most 16 --stage options");
      return -1;
    }
    stages[(*n_stages)++] = val;
    return 0;
  }
  if (dd_cli_parse_int(val, INT32_MIN, INT32_MAX, level)) {
    dd_cli_error("check: --level takes an integer, not \"%s\"", val);
    return -1;
  }
  *has_level = 1;
  return 0;
}

int dd_cmd_check(int argc, char **argv) {
  const char *net_path = NULL, *weights_arg = NULL, *solver_path = NULL, *upgrade_out = NULL, *job_path = NULL;
  Caffe__Phase phase = CAFFE__PHASE__TRAIN;
  int quiet = 0, has_level = 0, level = 0, n_opts = 0;
  const char *stages[16];
  size_t n_stages = 0;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    const char *val = NULL;
    if (dd_cli_is_help(a)) return dd_cli_help("check");
    if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
      quiet = 1;
      n_opts++;
      continue;
    }
    if ((!strcmp(a, "--weights") || !strcmp(a, "--solver") || !strcmp(a, "--phase") || !strcmp(a, "--upgrade") ||
         !strcmp(a, "--stage") || !strcmp(a, "--level") || !strcmp(a, "--job"))) {
      if (i + 1 >= argc) {
        dd_cli_error("check: %s needs a value", a);
        return dd_cli_usage("check");
      }
      val = argv[++i];
      n_opts += strcmp(a, "--job") != 0;
    }
    if (!strcmp(a, "--job"))
      job_path = val;
    else if (!strcmp(a, "--weights"))
      weights_arg = val;
    else if (!strcmp(a, "--solver"))
      solver_path = val;
    else if (!strcmp(a, "--upgrade"))
      upgrade_out = val;
    else if (!strcmp(a, "--stage") || !strcmp(a, "--level")) {
      if (state_option(a, val, stages, &n_stages, &has_level, &level)) return 2;
    }
    else if (!strcmp(a, "--phase")) {
      if (parse_phase(val, &phase)) {
        dd_cli_error("check: --phase takes TRAIN or TEST, not \"%s\"", val);
        return 2;
      }
    } else if (a[0] == '-' && a[1]) {
      return dd_cli_bad_arg("check", a);
    } else if (!net_path)
      net_path = a;
    else {
      dd_cli_error("check: one net at a time (got \"%s\" and \"%s\")", net_path, a);
      return 2;
    }
  }
  if (job_path) {
    if (net_path || n_opts) {
      dd_cli_error("check: --job takes no other argument (its nets come from the job)");
      return dd_cli_usage("check");
    }
    return check_job(job_path);
  }
  if (!net_path && !solver_path) {
    dd_cli_error("check: give a net (NET.prototxt), --solver S.prototxt or --job JOB.prototxt");
    return dd_cli_usage("check");
  }

  int status = 2, r;
  char err[2048];
  dd_diags diags = {0};
  Caffe__SolverParameter *solver = NULL;
  Caffe__NetParameter *net = NULL, *staged = NULL;
  dd_net_graph *g = NULL;
  weights_file wf[16];
  size_t nwf = 0;
  Caffe__NetParameter *wnets[16] = {0};
  char *wlist = NULL;

  dd_upgrade_report rep = {0};
  if (solver_path) {
    if ((r = dd_solver_read_text_report(&solver, -1, solver_path, &rep, err, sizeof err))) {
      fprintf(stderr, "error: %s\n", err);
      goto done;
    }
    report_upgrade(solver_path, &rep, &diags);
    if (upgrade_out && !net_path && write_upgraded(&solver->base, upgrade_out)) goto done;
    dd_solver_check(solver, &diags);
    printf("solver %s: type %s, lr_policy %s, base_lr %g, max_iter %d\n", solver_path,
           solver->type ? solver->type : "SGD", solver->lr_policy ? solver->lr_policy : "(unset)",
           solver->base_lr, solver->max_iter);
  }
  const Caffe__NetParameter *netp = NULL;
  const char *net_name = net_path;
  if (net_path) {
    memset(&rep, 0, sizeof rep);
    if ((r = dd_net_read_text_report(&net, -1, net_path, &rep, err, sizeof err))) {
      fprintf(stderr, "error: %s\n", err);
      goto done;
    }
    report_upgrade(net_path, &rep, &diags);
    if (upgrade_out && write_upgraded(&net->base, upgrade_out)) goto done;
    netp = net;
  } else if (solver->net_param || solver->train_net_param) {
    netp = solver->net_param ? solver->net_param : solver->train_net_param;
    net_name = solver_path;
  } else if (solver->net || solver->train_net) {
    net_name = solver->net ? solver->net : solver->train_net;
    memset(&rep, 0, sizeof rep);
    if ((r = dd_net_read_text_report(&net, -1, net_name, &rep, err, sizeof err))) {
      fprintf(stderr, "error: %s (the net named by the solver %s)\n", err, solver_path);
      goto done;
    }
    report_upgrade(net_name, &rep, &diags);
    netp = net;
  } else {
    fprintf(stderr, "error: %s names no net (net, net_param, train_net or train_net_param) and none was given\n",
            solver_path);
    goto done;
  }

  if (weights_arg && read_weights(weights_arg, &wlist, wf, wnets, &nwf, &diags)) goto done;

  if (apply_state(&staged, &netp, solver, phase, has_level, level, stages, n_stages)) {
    fprintf(stderr, "error: out of memory\n");
    goto done;
  }
  if ((r = dd_net_check(&g, netp, phase, &diags))) {
    fprintf(stderr, "error: %s\n", dd_strerror(r));
    goto done;
  }
  for (size_t f = 0; f < nwf; f++)
    if ((r = dd_net_check_weights(g, wnets[f], wf[f].path, &diags))) {
      fprintf(stderr, "error: %s\n", dd_strerror(r));
      goto done;
    }
  print_summary(netp, net_name, g, wf, nwf, quiet);
  status = diags.n_errors ? 2 : diags.n_warnings ? 1 : 0;

done:
  fflush(stdout); /* the summary first, then the diagnostics, also when both go to one pipe */
  for (size_t k = 0; k < diags.n; k++) print_diag(&diags.v[k]);
  if (status != 2 || diags.n_errors)
    fprintf(stderr, "check: %d error(s), %d warning(s)\n", diags.n_errors, diags.n_warnings);
  dd_diags_free(&diags);
  dd_net_graph_free(g);
  for (size_t f = 0; f < nwf; f++) {
    free(wf[f].layers);
    caffe__net_parameter__free_unpacked(wnets[f], NULL);
  }
  free(wlist);
  if (net) caffe__net_parameter__free_unpacked(net, NULL);
  if (staged) caffe__net_parameter__free_unpacked(staged, NULL);
  if (solver) caffe__solver_parameter__free_unpacked(solver, NULL);
  return status;
}
