/* plexus example plugin: layernorm — layer normalisation over the last dimension, like
 * PyTorch's nn.LayerNorm(F) (parameters `weight` [F] and `bias` [F], biased variance).
 *
 *   mean = sum_j x_j / F,   var = sum_j (x_j - mean)^2 / F
 *   xhat = (x - mean) / sqrt(var + eps)
 *   y    = xhat * weight + bias                 (y = xhat when affine is false)
 *
 * It normalises every row (every position of every dim but the last) on its own, so it takes
 * [B,F], [B,T,F] or any other rank. A [B,T,F] sequence may carry lengths: padded steps give
 * zero output and get zero gradient. This file is the whole plugin: copy the folder, rename
 * the kind, and build it with its meson.build against an installed plexus (README.md). */
#include <math.h>
#include <stdlib.h>

#include <plexus/plugin.h>

struct layernorm {
	int64_t F;             /* features: the last dim */
	float eps;
	struct px_param *weight, *bias;   /* owned by the model; NULL when affine is false */
	/* kept by forward for backward (step arena: valid until the step ends) */
	float *xhat;           /* [rows][F] */
	float *rstd;           /* [rows]: 1 / sqrt(var + eps) */
};

/* ------------------------------------------------------------------ schema and ports */
static const struct px_param_spec layernorm_schema[] = {
	{"eps", PX_T_FLOAT, "1e-5", 0, PX_UNBOUNDED, NULL, "added to the variance"},
	{"affine", PX_T_BOOL, "true", 0, 0, NULL,
	 "learn a per-feature scale `weight` (starts at 1) and shift `bias` (starts at 0)"},
	{NULL, 0, NULL, 0, 0, NULL, NULL},
};

static const struct px_port_spec layernorm_inputs[] = {
	{"x", 0, "[B,...,F]; the lengths of a [B,T,F] sequence are honoured"},
	{NULL, 0, NULL},
};

static const struct px_port_spec layernorm_outputs[] = {
	{"out", 0, "the input's shape (and lengths), normalised over the last dim"},
	{NULL, 0, NULL},
};

/* ------------------------------------------------------------------ create */
static void layernorm_destroy(void *self)
{
	free(self);
}

static int layernorm_create(struct px_build *b, void **self, struct px_shape *out,
			    struct px_error *err)
{
	const struct px_shape *x = &b->in[0];
	char buf[64];
	if (x->ndim < 2 || x->dim[x->ndim - 1] < 1)
		return px_build_error(b, err, PX_ERR_SHAPE, "layernorm needs [B,...,F], got %s",
				      px_shape_str(x, buf, sizeof buf));
	struct layernorm *ln = calloc(1, sizeof *ln);
	if (!ln)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	ln->F = x->dim[x->ndim - 1];
	ln->eps = (float)px_config_float(b->cfg, "eps");
	if (px_config_bool(b->cfg, "affine")) {
		ln->weight = px_build_param(b, "weight", 1, &ln->F, err);
		ln->bias = ln->weight ? px_build_param(b, "bias", 1, &ln->F, err) : NULL;
		if (!ln->bias) {
			layernorm_destroy(ln);
			return err->code ? err->code : PX_ERR_NOMEM;
		}
		px_init_fill(ln->weight->value, 1.0f);   /* bias stays zero, as in PyTorch */
	}
	*out = *x;   /* same shape; dim 0 stays -1 (the batch) */
	*self = ln;
	return 0;
}

/* ------------------------------------------------------------------ forward */

/* Is row r of x a padded step? Rows of a [B,T,...,F] tensor run over B, then T, then the
 * rest; only tensors of rank >= 3 with lengths have padding. */
static bool padded(const struct px_tensor *x, int64_t rows, int64_t r)
{
	if (!x->lengths || x->ndim < 3)
		return false;
	int64_t per_b = rows / x->shape[0], per_t = per_b / x->shape[1];
	return (r % per_b) / per_t >= x->lengths[r / per_b];
}

static int layernorm_forward(void *self, struct px_fwd *f, struct px_error *err)
{
	struct layernorm *ln = self;
	const struct px_tensor *x = f->in[0];
	int64_t F = ln->F, rows = px_tensor_numel(x) / F;
	if (x->shape[x->ndim - 1] != F)
		return px_error_set(err, PX_ERR_SHAPE, "layernorm: built for %lld features, got %lld",
				    (long long)F, (long long)x->shape[x->ndim - 1]);
	struct px_tensor *y = px_tensor_like(f->arena, x);   /* zeros, x's shape and lengths */
	ln->xhat = px_arena_zalloc(f->arena, (size_t)(rows * F) * sizeof(float));
	ln->rstd = px_arena_zalloc(f->arena, (size_t)rows * sizeof(float));
	if (!y || !ln->xhat || !ln->rstd)
		return px_error_set(err, PX_ERR_NOMEM, "layernorm: out of memory");
	const float *w = ln->weight ? ln->weight->value->data : NULL;
	const float *bias = ln->bias ? ln->bias->value->data : NULL;
	for (int64_t r = 0; r < rows; r++) {
		if (padded(x, rows, r))
			continue;   /* padded steps: zero output */
		const float *xr = x->data + r * F;
		float *xh = ln->xhat + r * F, *yr = y->data + r * F;
		double mean = 0, var = 0;
		for (int64_t j = 0; j < F; j++)
			mean += xr[j];
		mean /= (double)F;
		for (int64_t j = 0; j < F; j++)
			var += (xr[j] - mean) * (xr[j] - mean);
		var /= (double)F;
		float rstd = (float)(1.0 / sqrt(var + ln->eps));   /* 1/sqrt(var + eps) */
		ln->rstd[r] = rstd;
		for (int64_t j = 0; j < F; j++) {
			xh[j] = (float)(xr[j] - mean) * rstd;          /* xhat = (x - mean) * rstd */
			yr[j] = w ? xh[j] * w[j] + bias[j] : xh[j];    /* y = xhat * weight + bias */
		}
	}
	f->out[0] = y;
	return 0;
}

/* ------------------------------------------------------------------ backward */

/* With g = dy * weight (or dy):
 *   dx = rstd * (g - mean_j(g) - xhat * mean_j(g * xhat))
 *   dweight += sum over rows of dy * xhat,   dbias += sum over rows of dy
 * Everything is ADDED (+=): d_in may hold gradients from other consumers of x. */
static int layernorm_backward(void *self, struct px_bwd *b, struct px_error *err)
{
	struct layernorm *ln = self;
	(void)err;
	const struct px_tensor *x = b->in[0], *dy = b->d_out[0];
	struct px_tensor *dx = b->d_in[0];
	if (!dy)
		return 0;   /* nobody used the output */
	int64_t F = ln->F, rows = px_tensor_numel(x) / F;
	const float *w = ln->weight ? ln->weight->value->data : NULL;
	float *dw = ln->weight ? ln->weight->grad->data : NULL;
	float *db = ln->bias ? ln->bias->grad->data : NULL;
	for (int64_t r = 0; r < rows; r++) {
		if (padded(x, rows, r))
			continue;   /* padded steps: zero gradient */
		const float *dyr = dy->data + r * F, *xh = ln->xhat + r * F;
		double mg = 0, mgx = 0;
		for (int64_t j = 0; j < F; j++) {
			float g = w ? dyr[j] * w[j] : dyr[j];
			mg += g;
			mgx += (double)g * xh[j];
			if (dw) {
				dw[j] += dyr[j] * xh[j];
				db[j] += dyr[j];
			}
		}
		mg /= (double)F;
		mgx /= (double)F;
		if (!dx)
			continue;
		float *dxr = dx->data + r * F;
		for (int64_t j = 0; j < F; j++) {
			float g = w ? dyr[j] * w[j] : dyr[j];
			dxr[j] += ln->rstd[r] * (float)(g - mg - xh[j] * mgx);
		}
	}
	return 0;
}

/* ------------------------------------------------------------------ the plugin */
static const struct px_layer_ops layernorm_layer = {
	.struct_size = sizeof(struct px_layer_ops),
	.kind = "layernorm",
	.doc = "layer normalisation over the last dim (PyTorch nn.LayerNorm): "
	       "y = (x - mean) / sqrt(var + eps) * weight + bias",
	.schema = layernorm_schema,
	.inputs = layernorm_inputs,
	.outputs = layernorm_outputs,
	.flags = 0,
	.create = layernorm_create,
	.forward = layernorm_forward,
	.backward = layernorm_backward,
	.destroy = layernorm_destroy,
};

static const struct px_layer_ops *const layers[] = {&layernorm_layer, NULL};

static const struct px_plugin plugin = {
	.struct_size = sizeof(struct px_plugin),
	.abi_major = PX_ABI_MAJOR,
	.abi_minor = PX_ABI_MINOR,
	.name = "layernorm",
	.version = "0.1.0",
	.doc = "example out-of-tree plugin: layer normalisation",
	.layers = layers,
};

PX_PLUGIN_ENTRY(plugin)
