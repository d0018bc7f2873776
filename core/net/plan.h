/* The execution plan of a net: the sequence of steps its forward and backward run, chosen once,
 * when the net is built. A step is one layer (its own forward and backward, the reference), or a
 * fused step that computes what a run of consecutive layers computes in fewer passes over
 * memory, through one of the backend's fused operations (backend.h, "fused steps"):
 *
 *   BatchNorm -> Scale (in place, per channel) [-> ReLU (in place)]  one pass of statistics and
 *                                                                    one of y = relu(a x + b),
 *                                                                    and a two-pass backward
 *
 * A run is fused only where the result is what the layers compute: the BatchNorm writes a new
 * blob (not in place) that the Scale and the ReLU update in place, the Scale covers the channel
 * axis, no top in the run is a loss, and the backend has the fused operation. Fusion changes the
 * values of no blob the net exposes after a forward (the in-place blob holds the ReLU's output
 * either way) and the parameters' gradients only by rounding (tests/test_plan.c states the
 * bounds); what differs is the diff left in the in-place blob after backward (fused: the ReLU's
 * top gradient; unfused: the BatchNorm's), which no other layer reads. `distilld forward --dump`
 * runs the unfused plan, the one Caffe's blobs are compared with.
 *
 * DD_FUSE=0 in the environment makes every net's plan unfused (the FP32 reference). */
#ifndef DD_PLAN_H
#define DD_PLAN_H

#include <stddef.h>

typedef struct dd_net dd_net;

typedef enum {
  DD_STEP_LAYER,         /* one layer */
  DD_STEP_BN_SCALE_RELU  /* BatchNorm, Scale, and a ReLU when `relu` */
} dd_step_kind;

typedef struct {
  int kind;      /* dd_step_kind */
  int first;     /* its layers: [first, first + n_layers) */
  int n_layers;
  int relu;      /* DD_STEP_BN_SCALE_RELU: a ReLU is the third layer */
  float slope;   /* its negative_slope */
  float *mean, *inv_std; /* backend memory, C floats each: the batch statistics for backward */
} dd_plan_step;

typedef struct dd_plan {
  dd_plan_step *steps;
  size_t n_steps;
  size_t n_fused; /* steps that are not DD_STEP_LAYER */
  double *fwd_s, *bwd_s; /* per step, seconds accumulated while profiling (dd_plan_profile); else NULL */
} dd_plan;

/* Builds n->plan: fused (where the rules above allow and `fuse` is set, and DD_FUSE is not "0")
 * or one step per layer. Replaces a plan the net had. Returns 0 or DD_ENOMEM. */
int dd_plan_build(dd_net *n, int fuse);
void dd_plan_free(dd_net *n);

/* One step's forward and backward (the net's loops call these). */
void dd_plan_step_forward(dd_net *n, const dd_plan_step *s);
void dd_plan_step_backward(dd_net *n, const dd_plan_step *s);
/* Whether step s runs a backward: any of its layers needs one. */
int dd_plan_step_needs_backward(const dd_net *n, const dd_plan_step *s);

/* Where a net's time goes, by step: dd_plan_profile(n, 1) zeroes (allocating, once) a forward and a
 * backward time per step, which every forward and backward from then on adds to, the backend
 * synchronized around each step (so profiling slows an asynchronous backend down); 0 stops it and
 * frees them. Returns 0 or DD_ENOMEM. dd_plan_profile_report writes one line per kind of step
 * ("Convolution bf16", "BatchNorm+Scale+ReLU", "ReLU", ...), the most expensive first: its
 * forward and backward ms per run (the totals divided by `runs`), how many steps of that kind,
 * and the share of the net's time; then the net's total per run. */
int dd_plan_profile(dd_net *n, int on);
void dd_plan_profile_report(const dd_net *n, int runs, char *buf, size_t len);

/* A one-line description of the plan for logs: "plan: 40 steps for 57 layers (17 fused:
 * BatchNorm+Scale[+ReLU]); convolutions: 12 oneDNN jit:avx2 f32, 1 im2col/sgemm" (the
 * convolutions' part where the backend says which kernels it runs). */
void dd_plan_describe(const dd_net *n, char *buf, size_t len);

/* Precisions a net runs its convolutions in. */
enum { DD_PRECISION_FP32 = 0, DD_PRECISION_BF16 = 1 };

/* Runs the net's convolutions (Convolution, Deconvolution) in `precision`: sets each one's
 * precision and sets it up again, so the backend prepares its kernels (bf16: bf16 inputs and
 * weights, FP32 accumulation, outputs and gradients, where the backend has a bf16 kernel for the
 * shape; FP32 where not). Everything else stays FP32. Returns 0 or the first layer's setup error
 * (DD_ENOMEM) with the message in err. *n_bf16 and *n_convs (either may be NULL) get the number
 * of convolutions that run in bf16 and of convolutions in all. */
int dd_net_set_precision(dd_net *n, int precision, int *n_bf16, int *n_convs, char *err, size_t errlen);

#endif
