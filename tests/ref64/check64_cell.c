/* See check64_cell.h. */
#include "check64_cell.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The cell the test layer's create builds (set by check64_cell for that call). */
static const struct px_cell_ops *cell_under_test;

struct cell_layer {
	const struct px_cell_ops *ops;
	void *cs;
	float *cache;   /* of the last forward (step arena) */
};

static const struct px_param_spec cell_schema[] = {{NULL, 0, NULL, 0, 0, NULL, NULL}};
static const struct px_port_spec cell_inputs[] = {
	{"x", 0, "x [B, input]"},
	{"s", 0, "s_prev [S, B, H]"},
	{NULL, 0, NULL},
};
static const struct px_port_spec cell_outputs[] = {{"s_next", 0, "[S, B, H]"}, {NULL, 0, NULL}};

static void cell_layer_destroy(void *self)
{
	struct cell_layer *c = self;
	if (c && c->cs)
		c->ops->destroy(c->cs);
	free(c);
}

static int cell_layer_create(struct px_build *b, void **self, struct px_shape *out,
			     struct px_error *err)
{
	struct cell_layer *c = calloc(1, sizeof *c);
	if (!c)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	c->ops = cell_under_test;
	int rc = c->ops->create(b, "cell.", b->in[0].dim[1], b->in[1].dim[2], &c->cs, err);
	if (rc) {
		cell_layer_destroy(c);
		return rc;
	}
	out[0] = b->in[1];
	*self = c;
	return 0;
}

/* s_next = cell(x, s_prev), the cache handed over full of NaN */
static int cell_layer_forward(void *self, struct px_fwd *f, struct px_error *err)
{
	struct cell_layer *c = self;
	const struct px_tensor *x = f->in[0], *s = f->in[1];
	size_t n = c->ops->cache_floats(c->cs, x->shape[0]);
	struct px_tensor *sn = px_tensor_like(f->arena, s);
	c->cache = px_arena_alloc(f->arena, (n ? n : 1) * sizeof(float));
	if (!sn || !c->cache)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	for (size_t i = 0; i < n; i++)
		c->cache[i] = NAN;
	c->ops->step(c->cs, x->shape[0], x->data, s->data, sn->data, c->cache);
	f->out[0] = sn;
	return 0;
}

/* a buffer of n floats holding CHECK64_CELL_PREFILL */
static float *prefilled(struct px_arena *a, int64_t n)
{
	float *p = px_arena_alloc(a, (size_t)(n ? n : 1) * sizeof(float));
	for (int64_t i = 0; p && i < n; i++)
		p[i] = CHECK64_CELL_PREFILL;
	return p;
}

/* step_backward into prefilled d_x, d_s_prev; what it added goes into d_in */
static int cell_layer_backward(void *self, struct px_bwd *b, struct px_error *err)
{
	struct cell_layer *c = self;
	const struct px_tensor *x = b->in[0], *s = b->in[1];
	int64_t nx = px_tensor_numel(x), ns = px_tensor_numel(s);
	float *dx = b->d_in[0] ? prefilled(b->arena, nx) : NULL, *ds = prefilled(b->arena, ns);
	float *dsn = b->d_out[0] ? b->d_out[0]->data
				 : px_arena_alloc(b->arena, (size_t)ns * sizeof(float));
	if ((b->d_in[0] && !dx) || !ds || !dsn)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	if (!b->d_out[0])
		memset(dsn, 0, (size_t)ns * sizeof(float));
	c->ops->step_backward(c->cs, x->shape[0], x->data, s->data, c->cache, dsn, dx, ds);
	for (int64_t i = 0; dx && i < nx; i++)
		b->d_in[0]->data[i] += dx[i] - CHECK64_CELL_PREFILL;
	for (int64_t i = 0; b->d_in[1] && i < ns; i++)
		b->d_in[1]->data[i] += ds[i] - CHECK64_CELL_PREFILL;
	return 0;
}

static const struct px_layer_ops cell_layer_ops = {
	.struct_size = sizeof(struct px_layer_ops),
	.kind = "cell_step",
	.doc = "one step of a px_cell_ops (test)",
	.schema = cell_schema,
	.inputs = cell_inputs,
	.outputs = cell_outputs,
	.create = cell_layer_create,
	.forward = cell_layer_forward,
	.backward = cell_layer_backward,
	.destroy = cell_layer_destroy,
};

int check64_cell(const char *name, const struct px_cell_ops *cell, int64_t batch, int64_t input,
		 int64_t hidden, struct ref_layer *ref, const struct px_host *host,
		 const struct check64_cell_opts *o, struct check64_result *res)
{
	const struct check64_cell_opts defaults = {0};
	if (!o)
		o = &defaults;
	struct px_arena *a = px_arena_new(1 << 16);
	int64_t xs[2] = {batch, input}, ss[3] = {cell->n_state, batch, hidden};
	struct px_tensor *x = a ? px_tensor_new(a, 2, xs) : NULL;
	struct px_tensor *s = a ? px_tensor_new(a, 3, ss) : NULL;
	if (!x || !s) {
		fprintf(stderr, "%s: out of memory\n", name);
		px_arena_free(a);
		return -1;
	}
	struct px_rng rng;
	px_rng_seed(&rng, o->seed ? o->seed : 11);
	px_rng_fill_uniform(&rng, x->data, px_tensor_numel(x), -1, 1);
	px_rng_fill_uniform(&rng, s->data, px_tensor_numel(s), -1, 1);
	struct px_tensor *in[2] = {x, s};
	const bool no_grad[2] = {o->no_dx, false};
	cell_under_test = cell;
	int rc = check64_layer(name, &cell_layer_ops, "", 2, in, no_grad, ref, host, NULL, res);
	cell_under_test = NULL;
	px_arena_free(a);
	return rc;
}
