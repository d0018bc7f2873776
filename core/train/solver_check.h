/* Lints for a SolverParameter: settings Caffe would refuse (an unknown lr_policy or solver type,
 * a step policy without its steps) and settings that are legal but rarely meant (base_lr 0, no
 * max_iter). */
#ifndef DD_SOLVER_CHECK_H
#define DD_SOLVER_CHECK_H

#include "caffe.pb-c.h"
#include "base/diag.h"
#include "net/net.h"

void dd_solver_check(const Caffe__SolverParameter *s, dd_diags *diags);

/* The values no solver can run with: max_iter < 0, base_lr negative or not finite, a momentum,
 * decay, gamma, power, delta or clip_gradients that is not finite. Returns 0, or DD_EINVAL with
 * "PREFIXfield: ..." in err (prefix: "solver." for a job's inline solver, "" otherwise). The
 * solver refuses them at creation; dd_solver_check reports them as errors. */
int dd_solver_check_values(const Caffe__SolverParameter *s, const char *prefix, char *err, size_t errlen);

/* Divergence, checked after each iteration's backward, before the update: 1 when `loss` is not
 * finite, 2 when the gradient of the learnable parameters is not (NaN weights still give
 * SoftmaxWithLoss's clamped loss of 87.34, so the loss alone misses them), 0 otherwise. Costs one
 * dot product over the gradients. When it returns non-zero, msg gets "diverged at iteration ITER:
 * loss L, gradient norm G, NAME VALUE..." with the values of the `n_out` output tensors. */
int dd_solver_diverged(const dd_net *net, double loss, int iter, int n_out, dd_tensor *const *out,
                       const char *const *names, char *msg, size_t len);

#endif
