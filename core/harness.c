/* One layer on its own, outside a model: for unit tests and `plexus plugin-check`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct px_layer_inst {
	const struct px_layer_ops *ops;
	void *self;
	struct px_config *cfg;
	struct px_arena *param_arena;    /* parameters (owned) */
	struct px_arena *step_arena;     /* forward/backward activations, reset per forward */
	struct px_arena *scratch_arena;  /* px_layer_inst_tensor */
	struct px_build_priv bp;
	int n_in, n_out;
	struct px_shape in_shape[8], out_shape[8];
	const struct px_tensor *in[8];
	struct px_tensor *out[8];
	uint64_t seed;
	bool forwarded;
};

static int count_ports(const struct px_port_spec *p)
{
	int n = 0;
	while (p && p[n].name)
		n++;
	return n;
}

int px_layer_inst_new(const struct px_layer_ops *ops, const char *options, int n_in,
		      const struct px_shape *in, const bool *ragged, uint64_t seed,
		      const struct px_host *host, struct px_layer_inst **out, struct px_error *err)
{
	*out = NULL;
	struct px_layer_inst *li = calloc(1, sizeof *li);
	if (!li)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	li->ops = ops;
	li->seed = seed;
	li->n_out = count_ports(ops->outputs);
	li->n_in = n_in;
	int rc;
	if (n_in > 8 || li->n_out > 8 || li->n_out < 1) {
		rc = px_error_set(err, PX_ERR_INVALID, "%s: too many ports", ops->kind);
		goto fail;
	}
	rc = px_config_parse(ops->schema, options, &li->cfg, err);
	if (rc)
		goto fail;
	li->param_arena = px_arena_new(1 << 20);
	li->step_arena = px_arena_new(1 << 20);
	li->scratch_arena = px_arena_new(1 << 16);
	if (!li->param_arena || !li->step_arena || !li->scratch_arena) {
		rc = px_error_set(err, PX_ERR_NOMEM, "out of memory");
		goto fail;
	}
	bool rag[8] = {0};
	for (int i = 0; i < n_in; i++) {
		li->in_shape[i] = in[i];
		li->in_shape[i].dim[0] = in[i].ndim ? -1 : 0;
		rag[i] = ragged ? ragged[i] : false;
	}
	li->bp.arena = li->param_arena;
	li->bp.owner = ops->kind;
	struct px_rng rng;
	px_rng_seed_label(&rng, seed, "layer");
	struct px_build b = {
		.struct_size = sizeof b, .node = "layer", .cfg = li->cfg, .n_in = n_in,
		.in = li->in_shape, .in_ragged = rag, .rng = &rng, .host = host, .priv = &li->bp,
	};
	rc = ops->create(&b, &li->self, li->out_shape, err);
	if (rc)
		goto fail;
	*out = li;
	return 0;
fail:
	px_layer_inst_free(li);
	return rc ? rc : PX_ERR_INVALID;
}

int px_layer_inst_forward(struct px_layer_inst *li, const struct px_tensor *const *in,
			  bool train, struct px_error *err)
{
	px_arena_reset(li->step_arena);
	struct px_rng rng;
	px_rng_seed_label(&rng, li->seed, "forward");
	for (int i = 0; i < li->n_in; i++)
		li->in[i] = in[i];
	for (int k = 0; k < li->n_out; k++)
		li->out[k] = NULL;
	struct px_fwd f = {
		.n_in = li->n_in, .in = li->in, .out = li->out, .arena = li->step_arena,
		.rng = &rng, .train = train,
	};
	li->forwarded = false;
	int rc = li->ops->forward(li->self, &f, err);
	if (rc)
		return rc;
	for (int k = 0; k < li->n_out; k++)
		if (!li->out[k])
			return px_error_set(err, PX_ERR_INVALID, "%s: forward left output '%s' unset",
					    li->ops->kind, li->ops->outputs[k].name);
	li->forwarded = true;
	return 0;
}

int px_layer_inst_n_out(const struct px_layer_inst *li)
{
	return li->n_out;
}

const struct px_tensor *px_layer_inst_out(const struct px_layer_inst *li, int k)
{
	return k >= 0 && k < li->n_out ? li->out[k] : NULL;
}

int px_layer_inst_backward(struct px_layer_inst *li, const struct px_tensor *const *d_out,
			   struct px_tensor *const *d_in, struct px_error *err)
{
	if (!li->forwarded)
		return px_error_set(err, PX_ERR_INVALID, "backward without forward");
	for (int i = 0; i < li->bp.n_params; i++) {
		struct px_param *p = li->bp.params[i];
		if (p->grad)
			memset(p->grad->data, 0, (size_t)px_tensor_numel(p->grad) * sizeof(float));
	}
	struct px_tensor *din[8] = {0};
	for (int i = 0; i < li->n_in; i++)
		din[i] = d_in ? d_in[i] : NULL;
	struct px_bwd b = {
		.n_in = li->n_in, .in = li->in, .out = (const struct px_tensor *const *)li->out,
		.d_out = d_out, .d_in = din, .arena = li->step_arena,
	};
	return li->ops->backward(li->self, &b, err);
}

int px_layer_inst_n_params(const struct px_layer_inst *li)
{
	return li->bp.n_params;
}

struct px_param *px_layer_inst_param(struct px_layer_inst *li, int i)
{
	return i >= 0 && i < li->bp.n_params ? li->bp.params[i] : NULL;
}

struct px_tensor *px_layer_inst_tensor(struct px_layer_inst *li, int ndim, const int64_t *shape)
{
	return px_tensor_new(li->scratch_arena, ndim, shape);
}

void px_layer_inst_free(struct px_layer_inst *li)
{
	if (!li)
		return;
	if (li->self && li->ops->destroy)
		li->ops->destroy(li->self);
	px_config_free(li->cfg);
	px_build_priv_free(&li->bp);
	px_arena_free(li->param_arena);
	px_arena_free(li->step_arena);
	px_arena_free(li->scratch_arena);
	free(li);
}

const struct px_layer_ops *px_layer_inst_ops(const struct px_layer_inst *li)
{
	return li->ops;
}

int px_layer_inst_n_in(const struct px_layer_inst *li)
{
	return li->n_in;
}
