/* Built-in layers: linear, relu, tanh, sigmoid, softmax, dropout, embedding, flatten, reshape,
 * concat, add.
 *
 * Sequences: a tensor of rank >= 2 may carry lengths along dim 1. Elementwise layers work on
 * the valid steps only (see span_get), so padded steps of their outputs stay zero and get no
 * gradient; outputs that are still sequences carry the input's lengths pointer on. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ------------------------------------------------------------------ helpers */

static bool has_steps(const struct px_tensor *t)
{
	return t->lengths && t->ndim >= 2;
}

/* The valid elements of t as contiguous spans: all of t, or the first lengths[b] steps of
 * each example b when t carries lengths. */
static int64_t span_count(const struct px_tensor *t)
{
	return has_steps(t) ? t->shape[0] : 1;
}

static void span_get(const struct px_tensor *t, int64_t i, int64_t *off, int64_t *n)
{
	if (!has_steps(t)) {
		*off = 0;
		*n = px_tensor_numel(t);
		return;
	}
	int64_t steps = t->shape[1];
	int64_t per_ex = t->shape[0] ? px_tensor_numel(t) / t->shape[0] : 0;
	int64_t per_step = steps ? per_ex / steps : 0;
	int64_t len = t->lengths[i];
	len = len < 0 ? 0 : (len > steps ? steps : len);
	*off = i * per_ex;
	*n = len * per_step;
}

/* Zero the padded steps of t (no-op without lengths). */
static void zero_padding(struct px_tensor *t)
{
	if (!has_steps(t))
		return;
	int64_t per_ex = t->shape[0] ? px_tensor_numel(t) / t->shape[0] : 0;
	for (int64_t b = 0; b < t->shape[0]; b++) {
		int64_t off, n;
		span_get(t, b, &off, &n);
		memset(t->data + off + n, 0, (size_t)(per_ex - n) * sizeof(float));
	}
}

/* dst += src on the valid elements of `geom` (dst, src and geom have the same layout). */
static void add_valid(float *dst, const float *src, const struct px_tensor *geom)
{
	int64_t ns = span_count(geom);
	for (int64_t s = 0; s < ns; s++) {
		int64_t off, n;
		span_get(geom, s, &off, &n);
		for (int64_t i = off; i < off + n; i++)
			dst[i] += src[i];
	}
}

/* x itself, or when it carries lengths a copy whose padded steps are zero: a view of x must
 * not pass padding garbage on. NULL when out of memory. */
static const struct px_tensor *clean_input(struct px_arena *a, const struct px_tensor *x)
{
	if (!has_steps(x))
		return x;
	struct px_tensor *c = px_tensor_like(a, x);
	if (c)
		add_valid(c->data, x->data, x);
	return c;
}

static bool same_lengths(const struct px_tensor *a, const struct px_tensor *b)
{
	if (a->lengths == b->lengths)
		return true;
	if (!a->lengths || !b->lengths || a->shape[0] != b->shape[0])
		return false;
	return !memcmp(a->lengths, b->lengths, (size_t)a->shape[0] * sizeof(int32_t));
}

static void tensor_str(const struct px_tensor *t, char *buf, size_t n)
{
	struct px_shape s;
	px_tensor_shape(t, &s);
	px_shape_str(&s, buf, n);
}

static struct px_tensor *new_shape(struct px_arena *a, const struct px_tensor *like, int64_t last)
{
	int64_t shape[PX_MAX_DIMS];
	memcpy(shape, like->shape, sizeof shape);
	shape[like->ndim - 1] = last;
	return px_tensor_new(a, like->ndim, shape);
}

static int nomem(struct px_error *err, const char *kind)
{
	return px_error_set(err, PX_ERR_NOMEM, "%s: out of memory", kind);
}

static void nothing_destroy(void *self)
{
	free(self);
}

static const struct px_port_spec port_input[] = {
	{"input", 0, "tensor of any shape"},
	{NULL, 0, NULL},
};
static const struct px_port_spec port_output[] = {
	{"output", 0, "same shape as the input"},
	{NULL, 0, NULL},
};
static const struct px_param_spec schema_none[] = {
	{NULL, 0, NULL, 0, 0, NULL, NULL},
};

/* Layers with one input whose output has the input's shape. */
static int same_shape_create(struct px_build *b, void **self, struct px_shape *out,
			     struct px_error *err)
{
	*self = NULL;
	if (b->n_in != 1 || b->in[0].ndim < 1)
		return px_build_error(b, err, PX_ERR_SHAPE, "needs exactly one input");
	out[0] = b->in[0];
	return 0;
}

/* ------------------------------------------------------------------ linear */
/* y = x W^T + b over the last dim */
struct linear {
	int64_t in, out;
	struct px_param *w, *b;
};

static const struct px_param_spec linear_schema[] = {
	{"units", PX_T_INT, NULL, 1, 1e9, NULL, "output features"},
	{"bias", PX_T_BOOL, "true", 0, 0, NULL, "add a learned bias"},
	{NULL, 0, NULL, 0, 0, NULL, NULL},
};

static const struct px_port_spec linear_in[] = {
	{"input", 0, "[B,F] or [B,T,F] (any rank >= 2): features on the last dim"},
	{NULL, 0, NULL},
};
static const struct px_port_spec linear_out[] = {
	{"output", 0, "the input's shape with the last dim = units"},
	{NULL, 0, NULL},
};

static int linear_create(struct px_build *b, void **self, struct px_shape *out,
			 struct px_error *err)
{
	char s[96];
	if (b->n_in != 1 || b->in[0].ndim < 2)
		return px_build_error(b, err, PX_ERR_SHAPE,
				      "input must be [B,F] or [B,T,F] (rank >= 2), got %s",
				      px_shape_str(&b->in[0], s, sizeof s));
	int64_t in = b->in[0].dim[b->in[0].ndim - 1];
	if (in < 1)
		return px_build_error(b, err, PX_ERR_SHAPE, "input %s has no features",
				      px_shape_str(&b->in[0], s, sizeof s));
	struct linear *l = calloc(1, sizeof *l);
	if (!l)
		return nomem(err, "linear");
	l->in = in;
	l->out = px_config_int(b->cfg, "units");
	int64_t wshape[2] = {l->out, l->in};
	l->w = px_build_param(b, "weight", 2, wshape, err);
	if (!l->w)
		goto fail;
	float bound = 1.0f / sqrtf((float)in);  /* nn.Linear: U(-1/sqrt(in), 1/sqrt(in)) */
	px_init_uniform(l->w->value, b->rng, bound);
	if (px_config_bool(b->cfg, "bias")) {
		l->b = px_build_param(b, "bias", 1, &l->out, err);
		if (!l->b)
			goto fail;
		px_init_uniform(l->b->value, b->rng, bound);
	}
	out[0] = b->in[0];
	out[0].dim[out[0].ndim - 1] = l->out;
	*self = l;
	return 0;
fail:
	free(l);
	return err ? err->code : PX_ERR_NOMEM;
}

/* Rows of a [..., F] tensor that are padded steps get zeroed: only rank >= 3 is a sequence
 * for linear (a [B,F] input is not, whatever it carries). */
static bool linear_seq(const struct px_tensor *x)
{
	return x->lengths && x->ndim >= 3;
}

static int linear_forward(void *self, struct px_fwd *f, struct px_error *err)
{
	struct linear *l = self;
	const struct px_tensor *x = f->in[0];
	if (x->ndim < 2 || x->shape[x->ndim - 1] != l->in) {
		char s[96];
		tensor_str(x, s, sizeof s);
		return px_error_set(err, PX_ERR_SHAPE, "linear: input %s, expected %lld features",
				    s, (long long)l->in);
	}
	struct px_tensor *y = new_shape(f->arena, x, l->out);
	if (!y)
		return nomem(err, "linear");
	int64_t rows = px_tensor_numel(x) / l->in;
	float beta = 0.0f;
	if (l->b) {
		for (int64_t r = 0; r < rows; r++)
			memcpy(y->data + r * l->out, l->b->value->data, (size_t)l->out * sizeof(float));
		beta = 1.0f;
	}
	/* y[rows,out] = x[rows,in] W^T + y */
	px_gemm(false, true, rows, l->out, l->in, 1.0f, x->data, l->in, l->w->value->data, l->in,
		beta, y->data, l->out);
	if (linear_seq(x)) {
		y->lengths = x->lengths;
		zero_padding(y);
	}
	f->out[0] = y;
	return 0;
}

static int linear_backward(void *self, struct px_bwd *b, struct px_error *err)
{
	struct linear *l = self;
	const struct px_tensor *x = b->in[0], *dy_t = b->d_out[0];
	if (!dy_t)
		return 0;
	int64_t rows = px_tensor_numel(x) / l->in;
	const float *dy = dy_t->data;
	if (linear_seq(x)) {  /* padded outputs are constant: their gradient is dropped */
		struct px_tensor *m = px_tensor_like(b->arena, b->out[0]);
		if (!m)
			return nomem(err, "linear");
		add_valid(m->data, dy, m);
		dy = m->data;
	}
	/* dW += dy^T x */
	px_gemm(true, false, l->out, l->in, rows, 1.0f, dy, l->out, x->data, l->in, 1.0f,
		l->w->grad->data, l->in);
	/* db += sum over rows of dy */
	if (l->b) {
		float *db = l->b->grad->data;
		for (int64_t r = 0; r < rows; r++)
			for (int64_t j = 0; j < l->out; j++)
				db[j] += dy[r * l->out + j];
	}
	/* dx += dy W */
	if (b->d_in[0])
		px_gemm(false, false, rows, l->in, l->out, 1.0f, dy, l->out, l->w->value->data,
			l->in, 1.0f, b->d_in[0]->data, l->in);
	return 0;
}

static const struct px_layer_ops linear_ops = {
	.struct_size = sizeof(struct px_layer_ops),
	.kind = "linear",
	.doc = "fully connected: y = x W^T + b on the last dim (PyTorch nn.Linear)",
	.schema = linear_schema,
	.inputs = linear_in,
	.outputs = linear_out,
	.create = linear_create,
	.forward = linear_forward,
	.backward = linear_backward,
	.destroy = free,
};

/* ------------------------------------------------------------------ elementwise activations */
/* Forward: y = g(x) on the valid spans (padding stays zero); out keeps the lengths. */
static struct px_tensor *act_out(struct px_fwd *f)
{
	struct px_tensor *y = px_tensor_like(f->arena, f->in[0]);
	f->out[0] = y;
	return y;
}

/* y = max(x, 0) */
static int relu_forward(void *self, struct px_fwd *f, struct px_error *err)
{
	(void)self;
	const struct px_tensor *x = f->in[0];
	struct px_tensor *y = act_out(f);
	if (!y)
		return nomem(err, "relu");
	for (int64_t s = 0, ns = span_count(x); s < ns; s++) {
		int64_t off, n;
		span_get(x, s, &off, &n);
		for (int64_t i = off; i < off + n; i++)
			y->data[i] = x->data[i] > 0.0f ? x->data[i] : 0.0f;
	}
	return 0;
}

/* dx += dy * [x > 0] */
static int relu_backward(void *self, struct px_bwd *b, struct px_error *err)
{
	(void)self;
	(void)err;
	const struct px_tensor *x = b->in[0];
	if (!b->d_out[0] || !b->d_in[0])
		return 0;
	const float *dy = b->d_out[0]->data;
	float *dx = b->d_in[0]->data;
	for (int64_t s = 0, ns = span_count(x); s < ns; s++) {
		int64_t off, n;
		span_get(x, s, &off, &n);
		for (int64_t i = off; i < off + n; i++)
			dx[i] += x->data[i] > 0.0f ? dy[i] : 0.0f;
	}
	return 0;
}

/* y = tanh(x) */
static int tanh_forward(void *self, struct px_fwd *f, struct px_error *err)
{
	(void)self;
	const struct px_tensor *x = f->in[0];
	struct px_tensor *y = act_out(f);
	if (!y)
		return nomem(err, "tanh");
	for (int64_t s = 0, ns = span_count(x); s < ns; s++) {
		int64_t off, n;
		span_get(x, s, &off, &n);
		for (int64_t i = off; i < off + n; i++)
			y->data[i] = tanhf(x->data[i]);
	}
	return 0;
}

/* dx += dy * (1 - y^2) */
static int tanh_backward(void *self, struct px_bwd *b, struct px_error *err)
{
	(void)self;
	(void)err;
	const struct px_tensor *y = b->out[0];
	if (!b->d_out[0] || !b->d_in[0])
		return 0;
	const float *dy = b->d_out[0]->data;
	float *dx = b->d_in[0]->data;
	for (int64_t s = 0, ns = span_count(y); s < ns; s++) {
		int64_t off, n;
		span_get(y, s, &off, &n);
		for (int64_t i = off; i < off + n; i++)
			dx[i] += dy[i] * (1.0f - y->data[i] * y->data[i]);
	}
	return 0;
}

/* y = 1 / (1 + exp(-x)) */
static int sigmoid_forward(void *self, struct px_fwd *f, struct px_error *err)
{
	(void)self;
	const struct px_tensor *x = f->in[0];
	struct px_tensor *y = act_out(f);
	if (!y)
		return nomem(err, "sigmoid");
	for (int64_t s = 0, ns = span_count(x); s < ns; s++) {
		int64_t off, n;
		span_get(x, s, &off, &n);
		for (int64_t i = off; i < off + n; i++)
			y->data[i] = 1.0f / (1.0f + expf(-x->data[i]));
	}
	return 0;
}

/* dx += dy * y (1 - y) */
static int sigmoid_backward(void *self, struct px_bwd *b, struct px_error *err)
{
	(void)self;
	(void)err;
	const struct px_tensor *y = b->out[0];
	if (!b->d_out[0] || !b->d_in[0])
		return 0;
	const float *dy = b->d_out[0]->data;
	float *dx = b->d_in[0]->data;
	for (int64_t s = 0, ns = span_count(y); s < ns; s++) {
		int64_t off, n;
		span_get(y, s, &off, &n);
		for (int64_t i = off; i < off + n; i++)
			dx[i] += dy[i] * y->data[i] * (1.0f - y->data[i]);
	}
	return 0;
}

/* Softmax rows: the last dim, or for a ragged [B,T] tensor the valid steps of each row
 * (a masked softmax). Each span is a whole number of rows of this width. */
static int64_t softmax_width(const struct px_tensor *t, int64_t span_n)
{
	return (t->ndim == 2 && t->lengths) ? span_n : t->shape[t->ndim - 1];
}

/* y_j = exp(x_j - max x) / sum_k exp(x_k - max x) */
static int softmax_forward(void *self, struct px_fwd *f, struct px_error *err)
{
	(void)self;
	const struct px_tensor *x = f->in[0];
	struct px_tensor *y = act_out(f);
	if (!y)
		return nomem(err, "softmax");
	for (int64_t s = 0, ns = span_count(x); s < ns; s++) {
		int64_t off, n;
		span_get(x, s, &off, &n);
		int64_t w = softmax_width(x, n);
		for (int64_t r = off; w > 0 && r < off + n; r += w) {
			const float *xr = x->data + r;
			float *yr = y->data + r;
			float m = xr[0];
			for (int64_t j = 1; j < w; j++)
				m = xr[j] > m ? xr[j] : m;
			double z = 0;
			for (int64_t j = 0; j < w; j++) {
				yr[j] = expf(xr[j] - m);
				z += yr[j];
			}
			float inv = (float)(1.0 / z);
			for (int64_t j = 0; j < w; j++)
				yr[j] *= inv;
		}
	}
	return 0;
}

/* dx_j += y_j (dy_j - sum_k dy_k y_k) */
static int softmax_backward(void *self, struct px_bwd *b, struct px_error *err)
{
	(void)self;
	(void)err;
	const struct px_tensor *y = b->out[0];
	if (!b->d_out[0] || !b->d_in[0])
		return 0;
	const float *dy = b->d_out[0]->data;
	float *dx = b->d_in[0]->data;
	for (int64_t s = 0, ns = span_count(y); s < ns; s++) {
		int64_t off, n;
		span_get(y, s, &off, &n);
		int64_t w = softmax_width(y, n);
		for (int64_t r = off; w > 0 && r < off + n; r += w) {
			double dot = 0;
			for (int64_t j = 0; j < w; j++)
				dot += (double)dy[r + j] * y->data[r + j];
			for (int64_t j = 0; j < w; j++)
				dx[r + j] += y->data[r + j] * (dy[r + j] - (float)dot);
		}
	}
	return 0;
}

#define ACTIVATION_OPS(name, docline)                                                   \
	static const struct px_layer_ops name##_ops = {                                \
		.struct_size = sizeof(struct px_layer_ops),                             \
		.kind = #name,                                                          \
		.doc = docline,                                                         \
		.schema = schema_none,                                                  \
		.inputs = port_input,                                                   \
		.outputs = port_output,                                                 \
		.create = same_shape_create,                                            \
		.forward = name##_forward,                                              \
		.backward = name##_backward,                                            \
		.destroy = nothing_destroy,                                             \
	}

ACTIVATION_OPS(relu, "y = max(x, 0), elementwise");
ACTIVATION_OPS(tanh, "y = tanh(x), elementwise");
ACTIVATION_OPS(sigmoid, "y = 1 / (1 + exp(-x)), elementwise");
ACTIVATION_OPS(softmax, "softmax over the last dim (a ragged [B,T] input: over its valid steps)");

/* ------------------------------------------------------------------ dropout */
/* train: y = x * m, m = 0 with probability p, else 1/(1-p) (inverted dropout); eval: y = x */
struct dropout {
	float p;
	float *mask;   /* this step's mask (step arena), NULL when inactive */
};

static const struct px_param_spec dropout_schema[] = {
	{"p", PX_T_FLOAT, "0.5", 0, 1, NULL, "probability of zeroing a unit while training"},
	{NULL, 0, NULL, 0, 0, NULL, NULL},
};

static int dropout_create(struct px_build *b, void **self, struct px_shape *out,
			  struct px_error *err)
{
	int rc = same_shape_create(b, self, out, err);
	if (rc)
		return rc;
	struct dropout *d = calloc(1, sizeof *d);
	if (!d)
		return nomem(err, "dropout");
	d->p = (float)px_config_float(b->cfg, "p");
	*self = d;
	return 0;
}

static int dropout_forward(void *self, struct px_fwd *f, struct px_error *err)
{
	struct dropout *d = self;
	const struct px_tensor *x = f->in[0];
	d->mask = NULL;
	if (!f->train || d->p == 0.0f) {  /* identity: a view of the input */
		const struct px_tensor *src = clean_input(f->arena, x);
		struct px_tensor *y = src ? px_tensor_view(f->arena, src, x->ndim, x->shape) : NULL;
		if (!y)
			return nomem(err, "dropout");
		y->lengths = x->lengths;
		f->out[0] = y;
		return 0;
	}
	struct px_tensor *y = act_out(f);
	int64_t numel = px_tensor_numel(x);
	float *m = px_arena_zalloc(f->arena, (size_t)(numel ? numel : 1) * sizeof(float));
	if (!y || !m)
		return nomem(err, "dropout");
	float scale = d->p < 1.0f ? 1.0f / (1.0f - d->p) : 0.0f;
	for (int64_t s = 0, ns = span_count(x); s < ns; s++) {
		int64_t off, n;
		span_get(x, s, &off, &n);
		for (int64_t i = off; i < off + n; i++) {
			m[i] = px_rng_uniform(f->rng) < d->p ? 0.0f : scale;
			y->data[i] = x->data[i] * m[i];
		}
	}
	d->mask = m;
	return 0;
}

/* dx += dy * m */
static int dropout_backward(void *self, struct px_bwd *b, struct px_error *err)
{
	struct dropout *d = self;
	(void)err;
	if (!b->d_out[0] || !b->d_in[0])
		return 0;
	const struct px_tensor *x = b->in[0];
	const float *dy = b->d_out[0]->data;
	float *dx = b->d_in[0]->data;
	if (!d->mask) {
		add_valid(dx, dy, x);
		return 0;
	}
	for (int64_t s = 0, ns = span_count(x); s < ns; s++) {
		int64_t off, n;
		span_get(x, s, &off, &n);
		for (int64_t i = off; i < off + n; i++)
			dx[i] += dy[i] * d->mask[i];
	}
	return 0;
}

static const struct px_layer_ops dropout_ops = {
	.struct_size = sizeof(struct px_layer_ops),
	.kind = "dropout",
	.doc = "inverted dropout while training (PyTorch nn.Dropout); identity in evaluation",
	.schema = dropout_schema,
	.inputs = port_input,
	.outputs = port_output,
	.create = dropout_create,
	.forward = dropout_forward,
	.backward = dropout_backward,
	.destroy = free,
};

/* ------------------------------------------------------------------ embedding */
/* y[b,t,:] = W[id[b,t], :] */
struct embedding {
	int64_t vocab, dim, padding_idx;
	struct px_param *w;
};

static const struct px_param_spec embedding_schema[] = {
	{"vocab", PX_T_INT, NULL, 1, 1e10, NULL, "number of ids (rows of the table)"},
	{"dim", PX_T_INT, NULL, 1, 1e9, NULL, "size of each embedding vector"},
	{"padding_idx", PX_T_INT, "-1", -1, 1e10, NULL,
	 "id whose row starts at zero and is never trained (-1: none)"},
	{NULL, 0, NULL, 0, 0, NULL, NULL},
};

static const struct px_port_spec embedding_in[] = {
	{"ids", PX_PORT_NO_GRAD, "token ids [B] or [B,T], floats holding integers"},
	{NULL, 0, NULL},
};
static const struct px_port_spec embedding_out[] = {
	{"output", 0, "[B,dim] or [B,T,dim]"},
	{NULL, 0, NULL},
};

static int embedding_create(struct px_build *b, void **self, struct px_shape *out,
			    struct px_error *err)
{
	char s[96];
	if (b->n_in != 1 || b->in[0].ndim < 1 || b->in[0].ndim > 2)
		return px_build_error(b, err, PX_ERR_SHAPE, "ids must be [B] or [B,T], got %s",
				      px_shape_str(&b->in[0], s, sizeof s));
	struct embedding *e = calloc(1, sizeof *e);
	if (!e)
		return nomem(err, "embedding");
	e->vocab = px_config_int(b->cfg, "vocab");
	e->dim = px_config_int(b->cfg, "dim");
	e->padding_idx = px_config_int(b->cfg, "padding_idx");
	if (e->padding_idx >= e->vocab) {
		px_config_error(b->cfg, err, PX_ERR_INVALID, "padding_idx",
				"padding_idx %lld is not below vocab %lld",
				(long long)e->padding_idx, (long long)e->vocab);
		goto fail;
	}
	int64_t wshape[2] = {e->vocab, e->dim};
	e->w = px_build_param(b, "weight", 2, wshape, err);
	if (!e->w)
		goto fail;
	px_init_normal(e->w->value, b->rng, 1.0f);  /* nn.Embedding: N(0, 1) */
	if (e->padding_idx >= 0)
		memset(e->w->value->data + e->padding_idx * e->dim, 0,
		       (size_t)e->dim * sizeof(float));
	out[0] = b->in[0];
	out[0].dim[out[0].ndim++] = e->dim;
	*self = e;
	return 0;
fail:
	free(e);
	return err ? err->code : PX_ERR_INVALID;
}

static int embedding_forward(void *self, struct px_fwd *f, struct px_error *err)
{
	struct embedding *e = self;
	const struct px_tensor *x = f->in[0];
	if (x->ndim < 1 || x->ndim > 2) {
		char s[96];
		tensor_str(x, s, sizeof s);
		return px_error_set(err, PX_ERR_SHAPE, "embedding: ids must be [B] or [B,T], got %s", s);
	}
	int64_t shape[3] = {x->shape[0], x->ndim == 2 ? x->shape[1] : e->dim, e->dim};
	struct px_tensor *y = px_tensor_new(f->arena, x->ndim + 1, shape);
	if (!y)
		return nomem(err, "embedding");
	y->lengths = x->lengths;
	for (int64_t s = 0, ns = span_count(x); s < ns; s++) {
		int64_t off, n;
		span_get(x, s, &off, &n);
		for (int64_t i = off; i < off + n; i++) {
			float v = x->data[i];
			if (!(v >= 0.0f && v < (float)e->vocab) || (float)(int64_t)v != v)
				return px_error_set(err, PX_ERR_INVALID,
						    "embedding: id %g is out of range: vocab is "
						    "%lld (ids 0..%lld)", v, (long long)e->vocab,
						    (long long)e->vocab - 1);
			int64_t id = (int64_t)v;
			memcpy(y->data + i * e->dim, e->w->value->data + id * e->dim,
			       (size_t)e->dim * sizeof(float));
		}
	}
	f->out[0] = y;
	return 0;
}

/* dW[id] += dy[b,t]  (not for padding_idx, nor padded steps) */
static int embedding_backward(void *self, struct px_bwd *b, struct px_error *err)
{
	struct embedding *e = self;
	(void)err;
	const struct px_tensor *x = b->in[0];
	if (!b->d_out[0])
		return 0;
	const float *dy = b->d_out[0]->data;
	float *dw = e->w->grad->data;
	for (int64_t s = 0, ns = span_count(x); s < ns; s++) {
		int64_t off, n;
		span_get(x, s, &off, &n);
		for (int64_t i = off; i < off + n; i++) {
			int64_t id = (int64_t)x->data[i];  /* validated by forward */
			if (id == e->padding_idx)
				continue;
			px_axpy(e->dim, 1.0f, dy + i * e->dim, dw + id * e->dim);
		}
	}
	return 0;
}

static const struct px_layer_ops embedding_ops = {
	.struct_size = sizeof(struct px_layer_ops),
	.kind = "embedding",
	.doc = "lookup table of vectors indexed by integer ids (PyTorch nn.Embedding)",
	.schema = embedding_schema,
	.inputs = embedding_in,
	.outputs = embedding_out,
	.flags = PX_LAYER_IDS_INPUT,
	.create = embedding_create,
	.forward = embedding_forward,
	.backward = embedding_backward,
	.destroy = free,
};

/* ------------------------------------------------------------------ flatten, reshape */
/* Views of the input; backward passes the gradient through (padded steps excluded). */
static int view_backward(void *self, struct px_bwd *b, struct px_error *err)
{
	(void)self;
	(void)err;
	if (b->d_out[0] && b->d_in[0])
		add_valid(b->d_in[0]->data, b->d_out[0]->data, b->in[0]);
	return 0;
}

/* y[B, prod(dims)] = x[B, ...] */
static const struct px_port_spec flatten_out[] = {
	{"output", 0, "[B, product of the other dims]"},
	{NULL, 0, NULL},
};

static int flatten_create(struct px_build *b, void **self, struct px_shape *out,
			  struct px_error *err)
{
	int rc = same_shape_create(b, self, out, err);
	if (rc)
		return rc;
	out[0].ndim = 2;
	out[0].dim[1] = px_shape_numel(&b->in[0]);
	return 0;
}

static int flatten_forward(void *self, struct px_fwd *f, struct px_error *err)
{
	(void)self;
	const struct px_tensor *x = f->in[0];
	int64_t shape[2] = {x->shape[0], x->shape[0] ? px_tensor_numel(x) / x->shape[0] : 0};
	const struct px_tensor *src = clean_input(f->arena, x);
	f->out[0] = src ? px_tensor_view(f->arena, src, 2, shape) : NULL;
	return f->out[0] ? 0 : nomem(err, "flatten");
}

static const struct px_layer_ops flatten_ops = {
	.struct_size = sizeof(struct px_layer_ops),
	.kind = "flatten",
	.doc = "[B, ...] -> [B, product of the other dims] (a view)",
	.schema = schema_none,
	.inputs = port_input,
	.outputs = flatten_out,
	.create = flatten_create,
	.forward = flatten_forward,
	.backward = view_backward,
	.destroy = nothing_destroy,
};

/* y[B, shape...] = x[B, ...], same element count per example */
struct reshape {
	int n;                          /* per-example dims */
	int64_t dim[PX_MAX_DIMS - 1];   /* may hold one -1 */
};

static const struct px_param_spec reshape_schema[] = {
	{"shape", PX_T_INTS, NULL, -1, 1e12, NULL,
	 "per-example dims, batch excluded; one may be -1 (inferred)"},
	{NULL, 0, NULL, 0, 0, NULL, NULL},
};

static const struct px_port_spec reshape_out[] = {
	{"output", 0, "[B, shape...]"},
	{NULL, 0, NULL},
};

/* Resolve the -1 for `count` elements per example; false when the counts cannot agree. */
static bool reshape_resolve(const struct reshape *r, int64_t count, int64_t *dims)
{
	int64_t known = 1;
	int free_at = -1;
	for (int i = 0; i < r->n; i++) {
		dims[i] = r->dim[i];
		if (r->dim[i] == -1)
			free_at = i;
		else
			known *= r->dim[i];
	}
	if (free_at >= 0) {
		if (known == 0 || count % known)
			return false;
		dims[free_at] = count / known;
		return true;
	}
	return known == count;
}

static void reshape_str(const struct reshape *r, char *buf, size_t n)
{
	size_t used = (size_t)snprintf(buf, n, "[B");
	for (int i = 0; i < r->n && used < n; i++)
		used += (size_t)snprintf(buf + used, n - used, ",%lld", (long long)r->dim[i]);
	if (used < n)
		snprintf(buf + used, n - used, "]");
}

static int reshape_create(struct px_build *b, void **self, struct px_shape *out,
			  struct px_error *err)
{
	int rc = same_shape_create(b, self, out, err);
	if (rc)
		return rc;
	const int64_t *dims;
	int n = px_config_ints(b->cfg, "shape", &dims);
	if (n < 1 || n > PX_MAX_DIMS - 1)
		return px_config_error(b->cfg, err, PX_ERR_INVALID, "shape",
				       "shape needs 1 to %d dims, got %d", PX_MAX_DIMS - 1, n);
	int n_free = 0;
	for (int i = 0; i < n; i++) {
		n_free += dims[i] == -1;
		if (dims[i] == 0)
			return px_config_error(b->cfg, err, PX_ERR_INVALID, "shape",
					       "shape dims must be positive or -1");
	}
	if (n_free > 1)
		return px_config_error(b->cfg, err, PX_ERR_INVALID, "shape",
				       "shape may hold only one -1");
	struct reshape *r = calloc(1, sizeof *r);
	if (!r)
		return nomem(err, "reshape");
	r->n = n;
	memcpy(r->dim, dims, (size_t)n * sizeof *dims);
	int64_t resolved[PX_MAX_DIMS];
	if (!reshape_resolve(r, px_shape_numel(&b->in[0]), resolved)) {
		char s_in[96], s_out[96];
		reshape_str(r, s_out, sizeof s_out);
		rc = px_build_error(b, err, PX_ERR_SHAPE,
				    "cannot reshape %s (%lld values per example) to %s",
				    px_shape_str(&b->in[0], s_in, sizeof s_in),
				    (long long)px_shape_numel(&b->in[0]), s_out);
		free(r);
		return rc;
	}
	out[0].ndim = n + 1;
	out[0].dim[0] = -1;
	memcpy(out[0].dim + 1, resolved, (size_t)n * sizeof *resolved);
	*self = r;
	return 0;
}

static int reshape_forward(void *self, struct px_fwd *f, struct px_error *err)
{
	struct reshape *r = self;
	const struct px_tensor *x = f->in[0];
	int64_t shape[PX_MAX_DIMS];
	shape[0] = x->shape[0];
	int64_t per_ex = x->shape[0] ? px_tensor_numel(x) / x->shape[0] : 0;
	if (!reshape_resolve(r, per_ex, shape + 1)) {
		char s_in[96], s_out[96];
		tensor_str(x, s_in, sizeof s_in);
		reshape_str(r, s_out, sizeof s_out);
		return px_error_set(err, PX_ERR_SHAPE,
				    "reshape: cannot reshape %s (%lld values per example) to %s",
				    s_in, (long long)per_ex, s_out);
	}
	const struct px_tensor *src = clean_input(f->arena, x);
	struct px_tensor *y = src ? px_tensor_view(f->arena, src, r->n + 1, shape) : NULL;
	if (!y)
		return nomem(err, "reshape");
	/* still the same steps: keep the lengths */
	if (x->lengths && x->ndim >= 2 && y->ndim >= 2 && y->shape[1] == x->shape[1])
		y->lengths = x->lengths;
	f->out[0] = y;
	return 0;
}

static const struct px_layer_ops reshape_ops = {
	.struct_size = sizeof(struct px_layer_ops),
	.kind = "reshape",
	.doc = "[B, ...] -> [B, shape...] with the same values per example (a view)",
	.schema = reshape_schema,
	.inputs = port_input,
	.outputs = reshape_out,
	.create = reshape_create,
	.forward = reshape_forward,
	.backward = view_backward,
	.destroy = free,
};

/* ------------------------------------------------------------------ concat, add */
static const struct px_port_spec multi_in[] = {
	{"inputs", PX_PORT_VARIADIC, "one or more tensors"},
	{NULL, 0, NULL},
};

/* The lengths of the first input that has some; error when two inputs disagree. */
static int multi_lengths(const char *kind, struct px_fwd *f, const int32_t **out,
			 struct px_error *err)
{
	const struct px_tensor *with = NULL;
	for (int i = 0; i < f->n_in; i++) {
		if (!f->in[i]->lengths)
			continue;
		if (with && !same_lengths(with, f->in[i]))
			return px_error_set(err, PX_ERR_SHAPE,
					    "%s: inputs 0 and %d have different sequence lengths",
					    kind, i);
		if (!with)
			with = f->in[i];
	}
	*out = with ? with->lengths : NULL;
	return 0;
}

/* y = [x_1, x_2, ...] along the last dim */
static const struct px_port_spec concat_out[] = {
	{"output", 0, "the inputs side by side on the last dim"},
	{NULL, 0, NULL},
};

static int concat_create(struct px_build *b, void **self, struct px_shape *out,
			 struct px_error *err)
{
	char s0[96], s1[96];
	*self = NULL;
	if (b->n_in < 1)
		return px_build_error(b, err, PX_ERR_SHAPE, "needs at least one input");
	const struct px_shape *a = &b->in[0];
	if (a->ndim < 2)
		return px_build_error(b, err, PX_ERR_SHAPE, "inputs must have rank >= 2, got %s",
				      px_shape_str(a, s0, sizeof s0));
	out[0] = *a;
	for (int i = 1; i < b->n_in; i++) {
		const struct px_shape *c = &b->in[i];
		bool ok = c->ndim == a->ndim;
		for (int d = 1; ok && d < a->ndim - 1; d++)
			ok = c->dim[d] == a->dim[d];
		if (!ok)
			return px_build_error(b, err, PX_ERR_SHAPE,
					      "input %d has shape %s, input 0 has %s: all dims but "
					      "the last must match", i, px_shape_str(c, s1, sizeof s1),
					      px_shape_str(a, s0, sizeof s0));
		out[0].dim[a->ndim - 1] += c->dim[a->ndim - 1];
	}
	return 0;
}

static int concat_forward(void *self, struct px_fwd *f, struct px_error *err)
{
	(void)self;
	const struct px_tensor *a = f->in[0];
	int nd = a->ndim;
	int64_t width = 0;
	for (int i = 0; i < f->n_in; i++) {
		const struct px_tensor *c = f->in[i];
		bool ok = c->ndim == nd;
		for (int d = 0; ok && d < nd - 1; d++)
			ok = c->shape[d] == a->shape[d];
		if (!ok) {
			char s0[96], s1[96];
			tensor_str(a, s0, sizeof s0);
			tensor_str(c, s1, sizeof s1);
			return px_error_set(err, PX_ERR_SHAPE,
					    "concat: input %d has shape %s, input 0 has %s: all dims "
					    "but the last must match", i, s1, s0);
		}
		width += c->shape[nd - 1];
	}
	const int32_t *lengths;
	int rc = multi_lengths("concat", f, &lengths, err);
	if (rc)
		return rc;
	struct px_tensor *y = new_shape(f->arena, a, width);
	if (!y)
		return nomem(err, "concat");
	int64_t rows = width ? px_tensor_numel(y) / width : 0;
	int64_t col = 0;
	for (int i = 0; i < f->n_in; i++) {
		int64_t w = f->in[i]->shape[nd - 1];
		for (int64_t r = 0; r < rows; r++)
			memcpy(y->data + r * width + col, f->in[i]->data + r * w,
			       (size_t)w * sizeof(float));
		col += w;
	}
	y->lengths = lengths;
	zero_padding(y);
	f->out[0] = y;
	return 0;
}

/* dx_i += dy[..., cols of x_i]  (valid rows only) */
static int concat_backward(void *self, struct px_bwd *b, struct px_error *err)
{
	(void)self;
	(void)err;
	const struct px_tensor *y = b->out[0], *dy_t = b->d_out[0];
	if (!dy_t)
		return 0;
	int nd = y->ndim;
	int64_t width = y->shape[nd - 1];
	int64_t col = 0;
	for (int i = 0; i < b->n_in; i++) {
		int64_t w = b->in[i]->shape[nd - 1];
		if (b->d_in[i] && w > 0) {
			float *dx = b->d_in[i]->data;
			for (int64_t s = 0, ns = span_count(y); s < ns; s++) {
				int64_t off, n;
				span_get(y, s, &off, &n);
				for (int64_t r = off / width; r < (off + n) / width; r++)
					px_axpy(w, 1.0f, dy_t->data + r * width + col, dx + r * w);
			}
		}
		col += w;
	}
	return 0;
}

static const struct px_layer_ops concat_ops = {
	.struct_size = sizeof(struct px_layer_ops),
	.kind = "concat",
	.doc = "joins its inputs along the last dim; all other dims must match",
	.schema = schema_none,
	.inputs = multi_in,
	.outputs = concat_out,
	.create = concat_create,
	.forward = concat_forward,
	.backward = concat_backward,
	.destroy = nothing_destroy,
};

/* y = x_1 + x_2 + ... */
static bool shapes_equal(const struct px_shape *a, const struct px_shape *c)
{
	if (a->ndim != c->ndim)
		return false;
	for (int d = 1; d < a->ndim; d++)
		if (a->dim[d] != c->dim[d])
			return false;
	return true;
}

static int add_create(struct px_build *b, void **self, struct px_shape *out,
		      struct px_error *err)
{
	char s0[96], s1[96];
	*self = NULL;
	if (b->n_in < 1 || b->in[0].ndim < 1)
		return px_build_error(b, err, PX_ERR_SHAPE, "needs at least one input");
	for (int i = 1; i < b->n_in; i++)
		if (!shapes_equal(&b->in[0], &b->in[i]))
			return px_build_error(b, err, PX_ERR_SHAPE,
					      "input %d has shape %s, input 0 has %s: shapes must be "
					      "identical", i, px_shape_str(&b->in[i], s1, sizeof s1),
					      px_shape_str(&b->in[0], s0, sizeof s0));
	out[0] = b->in[0];
	return 0;
}

static int add_forward(void *self, struct px_fwd *f, struct px_error *err)
{
	(void)self;
	const struct px_tensor *a = f->in[0];
	for (int i = 1; i < f->n_in; i++) {
		const struct px_tensor *c = f->in[i];
		bool ok = c->ndim == a->ndim;
		for (int d = 0; ok && d < a->ndim; d++)
			ok = c->shape[d] == a->shape[d];
		if (!ok) {
			char s0[96], s1[96];
			tensor_str(a, s0, sizeof s0);
			tensor_str(c, s1, sizeof s1);
			return px_error_set(err, PX_ERR_SHAPE,
					    "add: input %d has shape %s, input 0 has %s: shapes must "
					    "be identical", i, s1, s0);
		}
	}
	const int32_t *lengths;
	int rc = multi_lengths("add", f, &lengths, err);
	if (rc)
		return rc;
	struct px_tensor *y = px_tensor_new(f->arena, a->ndim, a->shape);
	if (!y)
		return nomem(err, "add");
	int64_t n = px_tensor_numel(a);
	memcpy(y->data, a->data, (size_t)n * sizeof(float));
	for (int i = 1; i < f->n_in; i++)
		px_axpy(n, 1.0f, f->in[i]->data, y->data);
	y->lengths = lengths;
	zero_padding(y);
	f->out[0] = y;
	return 0;
}

/* dx_i += dy  (valid steps only) */
static int add_backward(void *self, struct px_bwd *b, struct px_error *err)
{
	(void)self;
	(void)err;
	if (!b->d_out[0])
		return 0;
	for (int i = 0; i < b->n_in; i++)
		if (b->d_in[i])
			add_valid(b->d_in[i]->data, b->d_out[0]->data, b->out[0]);
	return 0;
}

static const struct px_layer_ops add_ops = {
	.struct_size = sizeof(struct px_layer_ops),
	.kind = "add",
	.doc = "elementwise sum of its inputs (identical shapes), e.g. residual connections",
	.schema = schema_none,
	.inputs = multi_in,
	.outputs = port_output,
	.create = add_create,
	.forward = add_forward,
	.backward = add_backward,
	.destroy = nothing_destroy,
};

const struct px_layer_ops *const px_builtin_layers[] = {
	&linear_ops, &relu_ops, &tanh_ops, &sigmoid_ops, &softmax_ops, &dropout_ops,
	&embedding_ops, &flatten_ops, &reshape_ops, &concat_ops, &add_ops, NULL,
};
