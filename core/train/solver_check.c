/* Solver lints (see solver_check.h). */
#include "train/solver_check.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "base/dd_error.h"

static int one_of(const char *s, const char *const *list) {
  for (; *list; list++)
    if (strcmp(s, *list) == 0) return 1;
  return 0;
}

int dd_solver_check_values(const Caffe__SolverParameter *s, const char *prefix, char *err, size_t errlen) {
  if (s->max_iter < 0)
    return dd_errorf(DD_EINVAL, err, errlen, "%smax_iter must be >= 0, got %d", prefix, s->max_iter);
  if (!isfinite(s->base_lr) || s->base_lr < 0)
    return dd_errorf(DD_EINVAL, err, errlen, "%sbase_lr must be a finite number >= 0, got %g", prefix, s->base_lr);
  const struct {
    const char *name;
    float v;
  } f[] = {{"momentum", s->momentum}, {"momentum2", s->momentum2}, {"delta", s->delta},
           {"rms_decay", s->rms_decay}, {"weight_decay", s->weight_decay}, {"gamma", s->gamma},
           {"power", s->power}, {"clip_gradients", s->clip_gradients}};
  for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
    if (!isfinite(f[i].v))
      return dd_errorf(DD_EINVAL, err, errlen, "%s%s must be a finite number, got %g", prefix, f[i].name, f[i].v);
  return 0;
}

void dd_solver_check(const Caffe__SolverParameter *s, dd_diags *d) {
  char bad[256];
  if (dd_solver_check_values(s, "", bad, sizeof bad)) {
    char field[32];
    snprintf(field, sizeof field, "%.*s", (int)strcspn(bad, ":"), bad);
    dd_diags_add(d, DD_DIAG_ERROR, field, "%s", bad + strcspn(bad, ":") + (bad[strcspn(bad, ":")] ? 2 : 0));
  }
  static const char *const policies[] = {"fixed", "step", "exp", "inv", "multistep",
                                         "poly", "sigmoid", "cosine", NULL};
  static const char *const types[] = {"SGD", "Nesterov", "Adam", "AdaGrad", "RMSProp", NULL};
  const char *policy = s->lr_policy ? s->lr_policy : "";
  if (!policy[0])
    dd_diags_add(d, DD_DIAG_ERROR, "lr_policy",
                 "lr_policy is not set (Caffe refuses that too): one of fixed, step, exp, inv, "
                 "multistep, poly, sigmoid, cosine");
  else if (!one_of(policy, policies))
    dd_diags_add(d, DD_DIAG_ERROR, "lr_policy",
                 "unknown lr_policy \"%s\": one of fixed, step, exp, inv, multistep, poly, sigmoid, cosine",
                 policy);
  if (!strcmp(policy, "step") && s->stepsize <= 0)
    dd_diags_add(d, DD_DIAG_ERROR, "stepsize", "lr_policy \"step\" needs stepsize > 0");
  if (!strcmp(policy, "multistep") && s->n_stepvalue == 0)
    dd_diags_add(d, DD_DIAG_ERROR, "stepvalue", "lr_policy \"multistep\" needs at least one stepvalue");
  for (size_t i = 1; i < s->n_stepvalue; i++)
    if (s->stepvalue[i] <= s->stepvalue[i - 1])
      dd_diags_add(d, DD_DIAG_ERROR, "stepvalue", "stepvalue must increase (%d after %d)",
                   s->stepvalue[i], s->stepvalue[i - 1]);
  if ((!strcmp(policy, "poly") || !strcmp(policy, "cosine")) && s->max_iter <= 0)
    dd_diags_add(d, DD_DIAG_ERROR, "max_iter", "lr_policy \"%s\" needs max_iter > 0", policy);
  const char *type = s->type ? s->type : "SGD";
  if (s->has_solver_type && !s->type) {
    /* the deprecated enum names the type when `type` is absent */
  } else if (!one_of(type, types)) {
    dd_diags_add(d, DD_DIAG_ERROR, "type",
                 "unknown solver type \"%s\": one of SGD, Nesterov, Adam, AdaGrad, RMSProp", type);
  }
  if (s->regularization_type && strcmp(s->regularization_type, "L2") && strcmp(s->regularization_type, "L1"))
    dd_diags_add(d, DD_DIAG_ERROR, "regularization_type", "regularization_type must be \"L1\" or \"L2\", not \"%s\"",
                 s->regularization_type);
  if (s->iter_size < 1) dd_diags_add(d, DD_DIAG_ERROR, "iter_size", "iter_size must be >= 1");
  if (s->max_iter == 0)
    dd_diags_add(d, DD_DIAG_WARNING, "max_iter", "max_iter is %d: training would stop before the first iteration",
                 s->max_iter);
  if (s->has_base_lr && s->base_lr == 0)
    dd_diags_add(d, DD_DIAG_WARNING, "base_lr",
                 "base_lr is 0: no parameter changes, but BatchNorm layers that use batch statistics "
                 "still update theirs in every TRAIN forward (use_global_stats: true freezes them)");
  if (s->n_test_iter == 0 && s->test_interval > 0)
    dd_diags_add(d, DD_DIAG_WARNING, "test_iter", "test_interval is %d but test_iter is not set: no test pass will run",
                 s->test_interval);
  if (s->n_test_iter > 1)
    dd_diags_add(d, DD_DIAG_WARNING, "test_iter",
                 "%zu test_iter values given; distilld runs one test net (the TEST phase of the net) and uses the first",
                 s->n_test_iter);
  if (s->n_test_state > 1)
    dd_diags_add(d, DD_DIAG_WARNING, "test_state",
                 "%zu test_state values given; distilld runs one test net, with the first (its stages: those of the "
                 "net's own state and the first test_state's)", s->n_test_state);
  if (s->snapshot > 0 && (!s->snapshot_prefix || !s->snapshot_prefix[0]))
    dd_diags_add(d, DD_DIAG_NOTE, "snapshot_prefix", "snapshot_prefix is not set: snapshots are named after the net");
  if (s->has_snapshot_format && s->snapshot_format == CAFFE__SOLVER_PARAMETER__SNAPSHOT_FORMAT__HDF5)
    dd_diags_add(d, DD_DIAG_WARNING, "snapshot_format", "HDF5 snapshots are not supported; distilld writes BINARYPROTO");
  if (s->clip_gradients == 0)
    dd_diags_add(d, DD_DIAG_WARNING, "clip_gradients", "clip_gradients 0 scales every gradient to zero; use -1 to disable clipping");
}

int dd_solver_diverged(const dd_net *net, double loss, int iter, int n_out, dd_tensor *const *out,
                       const char *const *names, char *msg, size_t len) {
  double sumsq = 0;
  for (size_t p = 0; p < net->n_params; p++)
    if (net->params[p].lr_mult != 0)
      sumsq += net->be->ops->dot(net->be, net->params[p].t->count, net->params[p].t->diff, net->params[p].t->diff);
  if (isfinite(loss) && isfinite(sumsq)) return 0;
  size_t used = (size_t)snprintf(msg, len, "diverged at iteration %d: loss %g, gradient norm %g", iter, loss, sqrt(sumsq));
  for (int k = 0; k < n_out && used < len; k++) {
    float v;
    out[k]->be->ops->download(out[k]->be, &v, out[k]->data, sizeof v);
    used += (size_t)snprintf(msg + used, len - used, ", %s %g", names[k], v);
  }
  return isfinite(sumsq) ? 1 : 2;
}
