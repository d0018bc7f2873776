/* Solver lints (see solver_check.h). */
#include "train/solver_check.h"

#include <string.h>

static int one_of(const char *s, const char *const *list) {
  for (; *list; list++)
    if (strcmp(s, *list) == 0) return 1;
  return 0;
}

void dd_solver_check(const Caffe__SolverParameter *s, dd_diags *d) {
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
  if (s->max_iter <= 0)
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
  if (s->snapshot > 0 && (!s->snapshot_prefix || !s->snapshot_prefix[0]))
    dd_diags_add(d, DD_DIAG_NOTE, "snapshot_prefix", "snapshot_prefix is not set: snapshots are named after the net");
  if (s->has_snapshot_format && s->snapshot_format == CAFFE__SOLVER_PARAMETER__SNAPSHOT_FORMAT__HDF5)
    dd_diags_add(d, DD_DIAG_WARNING, "snapshot_format", "HDF5 snapshots are not supported; distilld writes BINARYPROTO");
  if (s->clip_gradients == 0)
    dd_diags_add(d, DD_DIAG_WARNING, "clip_gradients", "clip_gradients 0 scales every gradient to zero; use -1 to disable clipping");
}
