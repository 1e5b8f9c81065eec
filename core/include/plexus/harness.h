/* plexus — running one layer on its own: unit tests, `plexus plugin-check`, gradient checks.
 * Everything here is owned by the harness instance and freed by px_layer_inst_free. */
#ifndef PLEXUS_HARNESS_H
#define PLEXUS_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "plexus/error.h"
#include "plexus/layer.h"
#include "plexus/plugin.h"
#include "plexus/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

struct px_config;

/* Validate a flow-style option string ("hidden: 8, layers: 2, bidirectional: true"; "" for
 * all defaults) against a schema. Caller frees with px_config_free. Errors name the key. */
PX_API int px_config_parse(const struct px_param_spec *schema, const char *options,
		    struct px_config **out, struct px_error *err);
PX_API void px_config_free(struct px_config *c);

struct px_layer_inst;

/* Create one layer of `ops` named "layer" with `options`, input shapes `in` (dim[0] may be the
 * real batch or -1), `ragged[i]` telling whether input i may carry lengths (NULL: none), and
 * parameters initialised from `seed`. `host` may be NULL (then find_cell finds nothing). */
PX_API int px_layer_inst_new(const struct px_layer_ops *ops, const char *options, int n_in,
		      const struct px_shape *in, const bool *ragged, uint64_t seed,
		      const struct px_host *host, struct px_layer_inst **out, struct px_error *err);
/* Forward on caller-owned inputs (borrowed). The outputs stay valid until the next forward. */
PX_API int px_layer_inst_forward(struct px_layer_inst *li, const struct px_tensor *const *in,
			  bool train, struct px_error *err);
PX_API const struct px_layer_ops *px_layer_inst_ops(const struct px_layer_inst *li);
PX_API int px_layer_inst_n_in(const struct px_layer_inst *li);
PX_API int px_layer_inst_n_out(const struct px_layer_inst *li);
PX_API const struct px_tensor *px_layer_inst_out(const struct px_layer_inst *li, int k);
/* Backward of the last forward. d_out[k] may be NULL. d_in[i] (caller-owned, may be NULL) is
 * ADDED to. Parameter grads are zeroed first. */
PX_API int px_layer_inst_backward(struct px_layer_inst *li, const struct px_tensor *const *d_out,
			   struct px_tensor *const *d_in, struct px_error *err);
PX_API int px_layer_inst_n_params(const struct px_layer_inst *li);
PX_API struct px_param *px_layer_inst_param(struct px_layer_inst *li, int i);
/* Scratch tensors for callers (valid until px_layer_inst_free). */
PX_API struct px_tensor *px_layer_inst_tensor(struct px_layer_inst *li, int ndim, const int64_t *shape);
PX_API void px_layer_inst_free(struct px_layer_inst *li);

/* Finite-difference check of a layer: loss = sum_k <w_k, out_k> with fixed random w_k
 * (a random projection, never a plain sum), central differences of step `eps` in float32
 * with the loss accumulated in double, at the caller's inputs `in` (their lengths honoured).
 * Checks every input element (except NO_GRAD and IDS_INPUT ports) and every parameter element
 * (or `max_per_tensor` random ones when > 0). Passes iff |a - n| <= atol + rtol * |n| for all.
 * `train` selects the mode (dropout must be off for a check: use eval or p = 0). */
struct px_gradcheck_opts {
	double eps, atol, rtol;
	int max_per_tensor;
	uint64_t seed;
	bool train;
};
struct px_gradcheck_result {
	double max_abs_err;       /* worst |a - n| */
	double max_rel_err;       /* worst |a - n| / max(|n|, atol) */
	int64_t checked;
	int64_t failed;
	char worst[128];          /* where the worst element was, e.g. "param weight_ih_l0[17]" */
};
PX_API void px_gradcheck_defaults(struct px_gradcheck_opts *o);
PX_API int px_gradcheck_layer(struct px_layer_inst *li, const struct px_tensor *const *in,
		       const struct px_gradcheck_opts *o, struct px_gradcheck_result *res,
		       struct px_error *err);

#ifdef __cplusplus
}
#endif
#endif
