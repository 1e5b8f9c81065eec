/* plexus — loss and optimizer ABIs. Built-ins live in the core and register through these
 * same tables, so a plugin can add or replace one. */
#ifndef PLEXUS_OPTIM_H
#define PLEXUS_OPTIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "plexus/error.h"
#include "plexus/layer.h"
#include "plexus/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- losses */
struct px_loss_result {
	double sum;      /* sum of the per-item losses of this batch */
	double count;    /* items the loss is averaged over (examples, or valid tokens) */
	double correct;  /* items predicted right, for accuracy; -1 when it does not apply */
};

struct px_loss_ops {
	size_t struct_size;
	const char *kind;
	const char *doc;
	const struct px_param_spec *schema;
	/* Check prediction/target shapes (per-example, dim[0] == -1) at build time. */
	int (*create)(const struct px_config *cfg, const struct px_shape *pred,
		      const struct px_shape *target, void **self, struct px_error *err);
	/* Loss of pred against target. When d_pred is non-NULL, WRITE (=) scale * d(sum)/d(pred)
	 * into it (the core passes scale = 1/count for a mean). Honours pred->lengths. */
	int (*forward)(void *self, const struct px_tensor *pred, const struct px_tensor *target,
		       struct px_loss_result *res, struct px_tensor *d_pred, float scale,
		       struct px_error *err);
	void (*destroy)(void *self);
};

/* ---------------------------------------------------------------- optimizers */
struct px_optim_ops {
	size_t struct_size;
	const char *kind;
	const char *doc;
	const struct px_param_spec *schema;  /* MUST contain "lr" (the schedules scale it) */
	const char *const *slots;            /* NULL-terminated names of per-parameter state */
	/* params: the trainable parameters, borrowed for the optimizer's lifetime. */
	int (*create)(const struct px_config *cfg, struct px_param *const *params, int n_params,
		      void **self, struct px_error *err);
	/* One update at learning rate lr; `step` counts updates from 1. */
	void (*step)(void *self, float lr, int64_t step);
	/* State slot `slot` of parameter `param`: numel floats, owned by the optimizer (saved and
	 * restored by checkpoints). */
	float *(*slot)(void *self, int param, int slot);
	void (*destroy)(void *self);
};

#ifdef __cplusplus
}
#endif
#endif
