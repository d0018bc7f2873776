/* Lints for a SolverParameter: settings Caffe would refuse (an unknown lr_policy or solver type,
 * a step policy without its steps) and settings that are legal but rarely meant (base_lr 0, no
 * max_iter). */
#ifndef DD_SOLVER_CHECK_H
#define DD_SOLVER_CHECK_H

#include "caffe.pb-c.h"
#include "base/diag.h"

void dd_solver_check(const Caffe__SolverParameter *s, dd_diags *diags);

#endif
