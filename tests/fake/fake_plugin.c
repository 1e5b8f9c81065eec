/* Fake plugins for the loader tests: one source, built once per FAKE_* mode (tests/fake/
 * meson.build). FAKE_GOOD is a correct plugin: its layer `fake_scale` computes y = 2x and
 * fails in create when its option `fail` is true. FAKE_NAN_FORWARD and FAKE_NAN_BACKWARD
 * provide `fake_nan`, a layer that emits a NaN in its second training step (NaN tests). */
#include <math.h>
#include <stdlib.h>

#include <plexus/plugin.h>

static int scale_create(struct px_build *b, void **self, struct px_shape *out,
			struct px_error *err)
{
	if (px_config_bool(b->cfg, "fail"))
		return px_build_error(b, err, PX_ERR_INVALID, "create failed on purpose");
	*self = NULL;
	out[0] = b->in[0];
	return 0;
}

/* y = 2x */
static int scale_forward(void *self, struct px_fwd *f, struct px_error *err)
{
	(void)self;
	struct px_tensor *y = px_tensor_like(f->arena, f->in[0]);
	if (!y)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	for (int64_t i = 0; i < px_tensor_numel(y); i++)
		y->data[i] = 2 * f->in[0]->data[i];
	f->out[0] = y;
	return 0;
}

/* dx += 2 dy */
static int scale_backward(void *self, struct px_bwd *b, struct px_error *err)
{
	(void)self;
	(void)err;
	if (b->d_in[0] && b->d_out[0])
		for (int64_t i = 0; i < px_tensor_numel(b->d_in[0]); i++)
			b->d_in[0]->data[i] += 2 * b->d_out[0]->data[i];
	return 0;
}

static void scale_destroy(void *self)
{
	(void)self;
}

static const struct px_param_spec schema[] = {
	{"fail", PX_T_BOOL, "false", 0, 0, NULL, "fail in create"},
	{NULL, 0, NULL, 0, 0, NULL, NULL},
};
static const struct px_port_spec in_ports[] = {{"x", 0, "input"}, {NULL, 0, NULL}};
static const struct px_port_spec out_ports[] = {{"out", 0, "2x"}, {NULL, 0, NULL}};

static const struct px_layer_ops scale = {
	.struct_size = sizeof(struct px_layer_ops),
	.kind = "fake_scale",
	.doc = "y = 2x (a test plugin)",
	.schema = schema,
	.inputs = in_ports,
	.outputs = out_ports,
	.create = scale_create,
#ifndef FAKE_NOCB
	.forward = scale_forward,
#endif
	.backward = scale_backward,
	.destroy = scale_destroy,
};

#if defined(FAKE_NAN_FORWARD) || defined(FAKE_NAN_BACKWARD)
/* fake_nan: y = w x with one parameter w (initialised to 1) that goes wrong on purpose in
 * the second training step: FAKE_NAN_FORWARD puts a NaN in its output, FAKE_NAN_BACKWARD a
 * NaN in its own parameter gradient. Steps are counted by training-mode forward calls. */
struct fake_nan {
	struct px_param *w;
	int64_t train_steps;
};

static int nan_create(struct px_build *b, void **self, struct px_shape *out, struct px_error *err)
{
	struct fake_nan *n = calloc(1, sizeof *n);
	if (!n)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	int64_t one = 1;
	n->w = px_build_param(b, "weight", 1, &one, err);
	if (!n->w) {
		free(n);
		return err->code;
	}
	px_init_fill(n->w->value, 1.0f);
	*self = n;
	out[0] = b->in[0];
	return 0;
}

/* y = w x (NaN in y[0] at the second training step with FAKE_NAN_FORWARD) */
static int nan_forward(void *self, struct px_fwd *f, struct px_error *err)
{
	struct fake_nan *n = self;
	struct px_tensor *y = px_tensor_like(f->arena, f->in[0]);
	if (!y)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	float w = n->w->value->data[0];
	for (int64_t i = 0; i < px_tensor_numel(y); i++)
		y->data[i] = w * f->in[0]->data[i];
	if (f->train)
		n->train_steps++;
#ifdef FAKE_NAN_FORWARD
	if (f->train && n->train_steps == 2)
		y->data[0] = NAN;
#endif
	f->out[0] = y;
	return 0;
}

/* dw += sum(dy x), dx += w dy (dw = NaN at the second training step with FAKE_NAN_BACKWARD) */
static int nan_backward(void *self, struct px_bwd *b, struct px_error *err)
{
	struct fake_nan *n = self;
	(void)err;
	if (!b->d_out[0])
		return 0;
	const float *x = b->in[0]->data, *dy = b->d_out[0]->data;
	float w = n->w->value->data[0];
	double dw = 0;
	for (int64_t i = 0; i < px_tensor_numel(b->d_out[0]); i++) {
		dw += (double)dy[i] * x[i];
		if (b->d_in[0])
			b->d_in[0]->data[i] += w * dy[i];
	}
#ifdef FAKE_NAN_BACKWARD
	if (n->train_steps == 2)
		dw = NAN;
#endif
	n->w->grad->data[0] += (float)dw;
	return 0;
}

static void nan_destroy(void *self)
{
	free(self);
}

static const struct px_param_spec nan_schema[] = {{NULL, 0, NULL, 0, 0, NULL, NULL}};

static const struct px_layer_ops nan_layer = {
	.struct_size = sizeof(struct px_layer_ops),
	.kind = "fake_nan",
	.doc = "y = w x, NaN in the second training step (a test plugin)",
	.schema = nan_schema,
	.inputs = in_ports,
	.outputs = out_ports,
	.create = nan_create,
	.forward = nan_forward,
	.backward = nan_backward,
	.destroy = nan_destroy,
};
static const struct px_layer_ops *const layers[] = {&nan_layer, NULL};
#elif defined(FAKE_SMALL)
static const struct px_layer_ops small = {
	.struct_size = 16, .kind = "fake_small", .schema = schema, .inputs = in_ports,
	.outputs = out_ports, .create = scale_create, .forward = scale_forward,
	.backward = scale_backward, .destroy = scale_destroy,
};
static const struct px_layer_ops *const layers[] = {&small, NULL};
#elif defined(FAKE_DUP)
static const struct px_layer_ops *const layers[] = {&scale, &scale, NULL};
#else
static const struct px_layer_ops *const layers[] = {&scale, NULL};
#endif

#ifndef FAKE_NAME
#define FAKE_NAME "fake"
#endif
#ifndef FAKE_MAJOR
#define FAKE_MAJOR PX_ABI_MAJOR
#endif
#ifndef FAKE_MINOR
#define FAKE_MINOR PX_ABI_MINOR
#endif

static const struct px_plugin plugin = {
	.struct_size = sizeof(struct px_plugin),
	.abi_major = FAKE_MAJOR,
	.abi_minor = FAKE_MINOR,
	.name = FAKE_NAME,
	.version = "0.0.1",
	.doc = "a fake plugin for loader tests",
	.layers = layers,
};

#if defined(FAKE_NOSYM)
PX_EXPORT const struct px_plugin *not_the_entry(void);
PX_EXPORT const struct px_plugin *not_the_entry(void)
{
	return &plugin;
}
#elif defined(FAKE_NULL)
PX_EXPORT const struct px_plugin *px_plugin_entry(const struct px_host *host);
PX_EXPORT const struct px_plugin *px_plugin_entry(const struct px_host *host)
{
	(void)host;
	(void)plugin;
	return NULL;
}
#else
/* returns the table whatever the host's version: the host must do its own check */
PX_EXPORT const struct px_plugin *px_plugin_entry(const struct px_host *host);
PX_EXPORT const struct px_plugin *px_plugin_entry(const struct px_host *host)
{
	(void)host;
	return &plugin;
}
#endif
