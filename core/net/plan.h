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
  DD_STEP_BN_SCALE_RELU, /* BatchNorm, Scale, and a ReLU when `relu` */
  /* inference in the blocked layout (dd_plan_build_blocked; forward only) */
  DD_STEP_BLK_CONV,     /* a Convolution [+ its in-place ReLU]: blocked out; in blocked when x_blocked */
  DD_STEP_BLK_RELU,     /* a ReLU on blocked activations */
  DD_STEP_BLK_SCALE,    /* a per-channel Scale [+ its in-place ReLU] on blocked activations */
  DD_STEP_BLK_SUM,      /* an Eltwise SUM of blocked bottoms [+ its in-place ReLU] */
  DD_STEP_BLK_SPLIT,    /* a Split whose tops share the bottom's memory: nothing to run */
  DD_STEP_BLK_EXIT      /* no layer: `blob` back from blocked to NCHW FP32 */
} dd_step_kind;

typedef struct {
  int kind;      /* dd_step_kind */
  int first;     /* its layers: [first, first + n_layers) */
  int n_layers;
  int relu;      /* DD_STEP_BN_SCALE_RELU: a ReLU is the third layer */
  float slope;   /* its negative_slope */
  float *mean, *inv_std; /* backend memory, C floats each: the batch statistics for backward */
  int x_blocked;         /* DD_STEP_BLK_CONV: its input is blocked (else NCHW FP32);
                            DD_STEP_BN_SCALE_RELU: it runs on blocked activations (a training plan) */
  struct dd_tensor *blob; /* DD_STEP_BLK_EXIT: the blob converted */
} dd_plan_step;

typedef struct dd_plan {
  dd_plan_step *steps;
  size_t n_steps;
  size_t n_fused; /* steps that are not DD_STEP_LAYER */
  double *fwd_s, *bwd_s; /* per step, seconds accumulated while profiling (dd_plan_profile); else NULL */
  size_t n_blocked;      /* layers run on blocked activations (dd_plan_build_blocked) */
  int blk_bf16;          /* the blocked activations are bf16 (else FP32) */
  void *blk_scratch;     /* backend memory for DD_STEP_BLK_EXIT: the largest blocked blob it converts */
  int blk_train;         /* a training plan (dd_plan_build_blocked_train): its steps run backward too */
} dd_plan;

/* Builds n->plan: fused (where the rules above allow and `fuse` is set, and DD_FUSE is not "0")
 * or one step per layer. Replaces a plan the net had. Returns 0 or DD_ENOMEM. */
int dd_plan_build(dd_net *n, int fuse);
void dd_plan_free(dd_net *n);

/* Inference in the blocked layout, for a frozen net (no layer needs a backward: a teacher):
 * rebuilds the plan so that activations stay in oneDNN's blocked layout (backend.h), in bf16 where
 * the net's convolutions run in bf16 (dd_net_set_precision), else in FP32, from the first
 * convolution that can write them to the first layer that cannot read them: Convolutions (their
 * in-place ReLU fused in), ReLUs, per-channel Scales and Eltwise SUMs (their ReLU fused in) and
 * Splits that share memory run blocked; a DD_STEP_BLK_EXIT step converts a blob back to NCHW
 * FP32 before any other layer reads it, and, after the last step, every blob the net exposes:
 * those no layer reads (its outputs) and the `keep` blobs (n_keep names, say a hint's teacher
 * blob), so that what the net leaves in its blobs after a forward is NCHW FP32 as always (in bf16,
 * with bf16 rounding in it). Blobs that stay inside hold blocked data afterwards.
 * Does nothing (returns 0, n->plan.n_blocked 0) where the net has a backward, the backend lacks
 * the operations for the net's precision, or no convolution can write blocked activations;
 * DD_FUSE=0 turns it off with the fused steps. Returns 0, or DD_ENOMEM (the plan is then the
 * one before). */
int dd_plan_build_blocked(dd_net *n, const char *const *keep, int n_keep);
/* Training in the blocked layout, for a net that learns (a student): rebuilds the plan so that
 * activations stay blocked (bf16 where the net's convolutions run in bf16, else FP32) from the first
 * convolution to the first layer that cannot take them, forward and backward, their gradients in
 * the same layout: Convolutions (oneDNN reads and writes the blocked activations and gradients:
 * conv_blk_train), BatchNorm -> Scale [-> ReLU] runs (the fused step on blocked data), Eltwise SUMs
 * and Splits that share memory. A DD_STEP_BLK_EXIT step converts a blob back to NCHW FP32 in place
 * where another layer reads it, and in backward converts its data back (exact: the values came
 * from the layout) and the NCHW gradients of the blobs sharing its memory into the layout. What the
 * net exposes (outputs no layer reads, and the `n_keep` names in `keep`) is NCHW FP32 after a
 * forward, as in the inference plan, and blocked again after a backward (its producer's backward
 * reads it blocked). Does nothing (returns 0, n_blocked 0, the plan as before) where the net has no
 * backward, the backend lacks the operations, no convolution takes blocked activations, and under
 * DD_FUSE=0 or DD_BLOCKED_TRAIN=0. Blobs inside hold blocked data and gradients after a step;
 * parameters, their gradients, BatchNorm statistics and losses stay FP32. Returns 0 or DD_ENOMEM
 * (the plan is then the plain one). */
int dd_plan_build_blocked_train(dd_net *n, const char *const *keep, int n_keep);
/* Runs a DD_STEP_BLK_* step forward or backward (plan_blocked.c; the net's loops call them for
 * those steps, dd_plan_step_forward / _backward for the others). */
void dd_plan_blk_forward(dd_net *n, const dd_plan_step *s);
void dd_plan_blk_backward(dd_net *n, const dd_plan_step *s);
/* Runs run(n, s), timed into acc[s's index] when acc is not NULL (profiling: dd_plan_profile). */
void dd_plan_timed(dd_net *n, const dd_plan_step *s, double *acc, void (*run)(dd_net *, const dd_plan_step *));

/* Whether layers i, i + 1 (and i + 2 when *relu comes back 1, with its negative slope) are a
 * BatchNorm -> Scale [-> ReLU] run the fused step computes exactly (see above). */
int dd_plan_match_bn_scale(const dd_net *n, size_t i, int *relu, float *slope);

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
/* The seconds profiled so far, every step forward and backward (0 when not profiling). */
double dd_plan_profile_total(const dd_net *n);

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
 * of convolutions that run in bf16 and of convolutions in all. A blocked plan
 * (dd_plan_build_blocked) goes back to the plain one: build it again afterwards. */
int dd_net_set_precision(dd_net *n, int precision, int *n_bf16, int *n_convs, char *err, size_t errlen);

#endif
