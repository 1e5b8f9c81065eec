/* A test plugin for tests/test_sdk.c, built once per mode (tests/meson.build): a correct one
 * under two plugin names (two providers of one kind, neither named after it), and broken ones
 * that `plexus plugin-check` must fail, each in one way.
 *
 * Kind `sdk_scale`: y = x * w over the last dim ([B,...,F], w [F] starts at 1 + U(-0.5, 0.5));
 * the padded steps of a [B,T,F] sequence give zero output and zero gradient. */
#include <stdlib.h>

#include <plexus/plugin.h>

#ifndef SDK_NAME
#define SDK_NAME "sdk"
#endif

struct scale {
	int64_t F;
	struct px_param *w;
};

static const struct px_param_spec schema[] = {
#ifdef SDK_BAD_SCHEMA
	{"gain", PX_T_FLOAT, "lots", 0, 10, NULL, "a default that is no number"},
#else
	{"gain", PX_T_FLOAT, "1", 0, 10, NULL, "multiplies the initial weights"},
#endif
	{NULL, 0, NULL, 0, 0, NULL, NULL},
};
static const struct px_port_spec in_ports[] = {{"x", 0, "[B,...,F]"}, {NULL, 0, NULL}};
static const struct px_port_spec out_ports[] = {{"out", 0, "x * w"}, {NULL, 0, NULL}};

static int scale_create(struct px_build *b, void **self, struct px_shape *out,
			struct px_error *err)
{
	if (b->in[0].ndim < 2)
		return px_build_error(b, err, PX_ERR_SHAPE, "needs [B,...,F]");
	struct scale *s = calloc(1, sizeof *s);
	if (!s)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	s->F = b->in[0].dim[b->in[0].ndim - 1];
	s->w = px_build_param(b, "weight", 1, &s->F, err);
	if (!s->w) {
		free(s);
		return err->code;
	}
	px_init_uniform(s->w->value, b->rng, 0.5f);
	for (int64_t j = 0; j < s->F; j++)
		s->w->value->data[j] = (float)px_config_float(b->cfg, "gain") * (1.0f + s->w->value->data[j]);
	*self = s;
	out[0] = b->in[0];
	return 0;
}

static bool padded(const struct px_tensor *x, int64_t rows, int64_t r)
{
#ifdef SDK_BAD_PADDING
	(void)x, (void)rows, (void)r;
	return false;
#else
	if (!x->lengths || x->ndim < 3)
		return false;
	int64_t per_b = rows / x->shape[0], per_t = per_b / x->shape[1];
	return (r % per_b) / per_t >= x->lengths[r / per_b];
#endif
}

/* y = x * w */
static int scale_forward(void *self, struct px_fwd *f, struct px_error *err)
{
	struct scale *s = self;
	const struct px_tensor *x = f->in[0];
	struct px_tensor *y = px_tensor_like(f->arena, x);
	if (!y)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	int64_t rows = px_tensor_numel(x) / s->F;
#ifdef SDK_BAD_NONDET
	static int calls;
	float drift = 1e-3f * (float)(calls++ % 2);
#else
	float drift = 0;
#endif
	for (int64_t r = 0; r < rows; r++)
		for (int64_t j = 0; !padded(x, rows, r) && j < s->F; j++)
			y->data[r * s->F + j] = x->data[r * s->F + j] * s->w->value->data[j] + drift;
	f->out[0] = y;
	return 0;
}

/* dx += dy * w, dw += sum dy * x */
static int scale_backward(void *self, struct px_bwd *b, struct px_error *err)
{
	struct scale *s = self;
	(void)err;
	const struct px_tensor *x = b->in[0], *dy = b->d_out[0];
	if (!dy)
		return 0;
	int64_t rows = px_tensor_numel(x) / s->F;
	for (int64_t r = 0; r < rows; r++)
		for (int64_t j = 0; !padded(x, rows, r) && j < s->F; j++) {
			int64_t k = r * s->F + j;
#ifdef SDK_BAD_GRAD
			s->w->grad->data[j] += dy->data[k];   /* forgets the factor x */
#else
			s->w->grad->data[j] += dy->data[k] * x->data[k];
#endif
			if (!b->d_in[0])
				continue;
#ifdef SDK_BAD_ACCUM
			b->d_in[0]->data[k] = dy->data[k] * s->w->value->data[j];   /* = instead of += */
#else
			b->d_in[0]->data[k] += dy->data[k] * s->w->value->data[j];
#endif
		}
	return 0;
}

static void scale_destroy(void *self)
{
	free(self);
}

static const struct px_layer_ops scale = {
	.struct_size = sizeof(struct px_layer_ops),
	.kind = "sdk_scale",
	.doc = "y = x * w on the last dim (a test plugin)",
	.schema = schema,
	.inputs = in_ports,
	.outputs = out_ports,
	.create = scale_create,
	.forward = scale_forward,
	.backward = scale_backward,
	.destroy = scale_destroy,
};

static const struct px_layer_ops *const layers[] = {&scale, NULL};

static const struct px_plugin plugin = {
	.struct_size = sizeof(struct px_plugin),
	.abi_major = PX_ABI_MAJOR,
	.abi_minor = PX_ABI_MINOR,
	.name = SDK_NAME,
	.version = "0.0.1",
	.doc = "test plugin for plugin-check and implementation choice",
	.layers = layers,
};

PX_PLUGIN_ENTRY(plugin)

#ifdef SDK_BAD_EXPORT
/* a helper someone forgot to hide */
PX_EXPORT int sdk_helper(void);
PX_EXPORT int sdk_helper(void)
{
	return 42;
}
#endif
