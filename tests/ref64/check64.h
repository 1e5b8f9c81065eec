/* Checks a float32 layer kernel against its float64 reference (ref64.h):
 *   1. the reference's own gradient, by central differences in double (eps 1e-6) of
 *      L = sum_k <w_k, out_k> with fixed random projections w_k, for every element of every
 *      differentiable input and every parameter: pass iff |a - n| <= 1e-5 + 1e-3 |n|;
 *   2. the kernel against the reference on the same inputs and parameters: normalised MSE
 *      sum (a - r)^2 / sum r^2 of every output (forward) and of every input gradient and
 *      parameter gradient (backward, d_out = w).
 * The kernel runs through the public harness (px_layer_inst_*); its parameters, as it
 * initialises them, are copied into the reference, and the inputs are float32 values read as
 * double, so both paths compute on the same numbers. */
#ifndef PX_CHECK64_H
#define PX_CHECK64_H

#include <plexus/harness.h>

#include "ref64.h"

#define CHECK64_EPS 1e-6
#define CHECK64_ATOL 1e-5
#define CHECK64_RTOL 1e-3
#define CHECK64_NMSE 1e-7
#define CHECK64_SEED 7   /* the kernel seed: parameters ("layer"), forward draws ("forward") */

struct check64_result {
	double fwd_nmse;          /* worst over the outputs */
	double bwd_nmse;          /* worst over input and parameter gradients */
	char bwd_worst[64];       /* which gradient */
	int64_t fd_checked, fd_failed;
	int64_t fd_skipped;       /* elements left out by max_fd_per_tensor */
	double fd_max_abs, fd_max_rel;
	char fd_worst[96];
};

struct check64_opts {
	bool train;            /* run both in training mode (batch statistics); default evaluation */
	bool random_params;    /* replace the kernel's initial trainable values by U(-0.5, 0.5) */
	/* n_in inputs of one earlier batch, or NULL: before the checked batch they run through
	 * the kernel's forward and the reference's (in the same mode), then ref->commit (when
	 * set): a stateful layer carries its final states into the checked batch. */
	const struct px_tensor *const *prelude;
	/* bit k set: output k is left out of L (w_k = 0; the kernel's d_out[k] is NULL, unused),
	 * e.g. an output of integer ids; its forward is still compared */
	unsigned no_project;
	/* > 0: central differences of at most this many elements of each input and parameter
	 * tensor, a fixed random subset (the same on every run); 0: every element. The nMSE
	 * comparisons of step 2 always cover every element. */
	int max_fd_per_tensor;
};

/* in[i]: float32 inputs (caller-owned, lengths honoured); no_grad[i] (NULL: none) marks id
 * inputs. ref: a reference constructed for the same options (its parameters are filled here,
 * and it is freed). o may be NULL (defaults). Prints one line named `name`; returns 0, or -1
 * with a message on stderr when something could not run (the caller fails the test). */
int check64_layer(const char *name, const struct px_layer_ops *ops, const char *opts, int n_in,
		  struct px_tensor *const *in, const bool *no_grad, struct ref_layer *ref,
		  const struct px_host *host, const struct check64_opts *o,
		  struct check64_result *res);

/* NULL when r passed every check (something was checked, no Jacobian element off, both nMSE
 * within CHECK64_NMSE); else what failed, written into buf. */
const char *check64_verdict(const struct check64_result *r, char *buf, size_t n);
/* In a Check test (check.h included): fail the test, naming the configuration, unless passed */
#define CHECK64_ASSERT_PASSED(name, res)                                          \
	do {                                                                      \
		char verdict_[256];                                               \
		const char *v_ = check64_verdict((res), verdict_, sizeof verdict_); \
		ck_assert_msg(v_ == NULL, "%s: %s", (name), v_ ? v_ : "");         \
	} while (0)

/* normalised MSE of a (float32) against r (float64), n elements */
double check64_nmse(const float *a, const double *r, int64_t n);

#endif
