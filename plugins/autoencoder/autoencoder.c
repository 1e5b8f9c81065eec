/* plexus plugin: autoencoder — the corruption layers of a denoising autoencoder
 * (gaussian_noise, masking_noise, salt_pepper_noise: active in training only, identity in
 * evaluation, drawn from the node's per-step stream) and `autoencoder`, a dense
 * encoder/decoder in one node with outputs `recon` and `code`. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <plexus/plugin.h>

/* ------------------------------------------------------------------ noise layers */
/* Any input shape. A ragged sequence [B,T,...] keeps its padded steps at zero, with zero
 * gradient; the output carries the input's lengths. */
enum noise_kind { NOISE_GAUSSIAN, NOISE_MASKING, NOISE_SALT_PEPPER };

struct noise {
	enum noise_kind kind;
	double std, fraction;
	float low, high;
	const float *keep;   /* [numel] 1 kept / 0 corrupted, from the step arena; NULL: all kept */
	const struct px_host *host;
};

/* A run report's figure pass is running (ABI 1.1)? The noise layers then corrupt as in
 * training, so that the report's pictures show what the autoencoder learned to undo. */
static bool figure_pass(const struct px_host *h)
{
	return PX_HOST_HAS(h, figure_batch) && h->figure_batch(h) != NULL;
}

static const struct px_param_spec gaussian_schema[] = {
	{"std", PX_T_FLOAT, "0.1", 0, PX_UNBOUNDED, NULL, "standard deviation of the added noise"},
	{NULL, 0, NULL, 0, 0, NULL, NULL},
};

static const struct px_param_spec masking_schema[] = {
	{"fraction", PX_T_FLOAT, "0.25", 0, 1, NULL, "fraction of the inputs set to zero"},
	{NULL, 0, NULL, 0, 0, NULL, NULL},
};

static const struct px_param_spec salt_pepper_schema[] = {
	{"fraction", PX_T_FLOAT, "0.1", 0, 1, NULL,
	 "fraction of the inputs corrupted: half set to low, half to high"},
	{"low", PX_T_FLOAT, "0", -PX_UNBOUNDED, PX_UNBOUNDED, NULL, "pepper value"},
	{"high", PX_T_FLOAT, "1", -PX_UNBOUNDED, PX_UNBOUNDED, NULL, "salt value"},
	{NULL, 0, NULL, 0, 0, NULL, NULL},
};

static const struct px_port_spec any_in[] = {
	{"x", 0, "any tensor"},
	{NULL, 0, NULL},
};

static const struct px_port_spec any_out[] = {
	{"out", 0, "the corrupted tensor (training) or the input (evaluation)"},
	{NULL, 0, NULL},
};

static int noise_create(struct px_build *b, void **self, struct px_shape *out,
			struct px_error *err, enum noise_kind kind)
{
	struct noise *n = calloc(1, sizeof *n);
	if (!n)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	*self = n;
	if (b->n_in < 1 || b->in[0].ndim < 1)
		return px_build_error(b, err, PX_ERR_SHAPE, "needs an input");
	n->kind = kind;
	n->host = b->host;
	if (kind == NOISE_GAUSSIAN) {
		n->std = px_config_float(b->cfg, "std");
	} else {
		n->fraction = px_config_float(b->cfg, "fraction");
		if (kind == NOISE_SALT_PEPPER) {
			n->low = (float)px_config_float(b->cfg, "low");
			n->high = (float)px_config_float(b->cfg, "high");
		}
	}
	*out = b->in[0];
	out->dim[0] = -1;
	return 0;
}

static int gaussian_create(struct px_build *b, void **self, struct px_shape *out,
			   struct px_error *err)
{
	return noise_create(b, self, out, err, NOISE_GAUSSIAN);
}

static int masking_create(struct px_build *b, void **self, struct px_shape *out,
			  struct px_error *err)
{
	return noise_create(b, self, out, err, NOISE_MASKING);
}

static int salt_pepper_create(struct px_build *b, void **self, struct px_shape *out,
			      struct px_error *err)
{
	return noise_create(b, self, out, err, NOISE_SALT_PEPPER);
}

/* Steps per example and floats per step: padded steps (t >= lengths[b]) are skipped. */
static void step_layout(const struct px_tensor *x, int64_t *steps, int64_t *feat)
{
	int64_t B = x->shape[0], numel = px_tensor_numel(x);
	*steps = x->lengths && x->ndim >= 2 ? x->shape[1] : 1;
	*feat = B && *steps ? numel / (B * *steps) : 0;
}

/* gaussian: y = x + std N(0,1); masking: y = x keep, keep ~ Bernoulli(1 - fraction);
 * salt & pepper: y = keep ? x : (coin ? high : low) */
static int noise_forward(void *self, struct px_fwd *f, struct px_error *err)
{
	struct noise *n = self;
	const struct px_tensor *x = f->in[0];
	struct px_tensor *y = px_tensor_like(f->arena, x);
	if (!y)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	int64_t B = x->shape[0], T, F;
	step_layout(x, &T, &F);
	bool active = (f->train || figure_pass(n->host)) &&
		      (n->kind == NOISE_GAUSSIAN ? n->std > 0 : n->fraction > 0);
	float *keep = NULL;
	n->keep = NULL;
	if (active && n->kind != NOISE_GAUSSIAN) {
		keep = px_arena_alloc(f->arena, (size_t)px_tensor_numel(x) * sizeof *keep);
		if (!keep)
			return px_error_set(err, PX_ERR_NOMEM, "out of memory");
		n->keep = keep;
	}
	for (int64_t b = 0; b < B; b++)
		for (int64_t t = 0; t < T; t++) {
			int64_t o = (b * T + t) * F;
			const float *xs = x->data + o;
			float *ys = y->data + o;
			if (x->lengths && t >= px_tensor_len(x, b)) {
				if (keep)
					memset(keep + o, 0, (size_t)F * sizeof *keep);
				continue;  /* padded step: zero output */
			}
			if (!active) {
				memcpy(ys, xs, (size_t)F * sizeof *ys);
				continue;
			}
			for (int64_t i = 0; i < F; i++) {
				if (n->kind == NOISE_GAUSSIAN) {
					ys[i] = xs[i] + (float)(n->std * px_rng_normal(f->rng));
					continue;
				}
				bool hit = px_rng_uniform(f->rng) < n->fraction;
				keep[o + i] = hit ? 0.0f : 1.0f;
				if (!hit)
					ys[i] = xs[i];
				else if (n->kind == NOISE_MASKING)
					ys[i] = 0.0f;
				else
					ys[i] = px_rng_uniform(f->rng) < 0.5 ? n->low : n->high;
			}
		}
	f->out[0] = y;
	return 0;
}

/* dx += dy on kept inputs (all valid steps for gaussian noise and in evaluation) */
static int noise_backward(void *self, struct px_bwd *bw, struct px_error *err)
{
	struct noise *n = self;
	const struct px_tensor *x = bw->in[0], *dy = bw->d_out[0];
	(void)err;
	if (!dy || !bw->d_in[0])
		return 0;
	float *dx = bw->d_in[0]->data;
	int64_t B = x->shape[0], T, F;
	step_layout(x, &T, &F);
	for (int64_t b = 0; b < B; b++)
		for (int64_t t = 0; t < T; t++) {
			int64_t o = (b * T + t) * F;
			if (x->lengths && t >= px_tensor_len(x, b))
				continue;
			if (!n->keep) {
				px_axpy(F, 1.0f, dy->data + o, dx + o);
				continue;
			}
			for (int64_t i = 0; i < F; i++)
				dx[o + i] += n->keep[o + i] * dy->data[o + i];
		}
	return 0;
}

static void noise_destroy(void *self)
{
	free(self);
}

static const struct px_layer_ops gaussian_noise_ops = {
	.struct_size = sizeof(struct px_layer_ops),
	.kind = "gaussian_noise",
	.doc = "adds N(0, std^2) noise in training; identity in evaluation",
	.schema = gaussian_schema,
	.inputs = any_in,
	.outputs = any_out,
	.create = gaussian_create,
	.forward = noise_forward,
	.backward = noise_backward,
	.destroy = noise_destroy,
};

static const struct px_layer_ops masking_noise_ops = {
	.struct_size = sizeof(struct px_layer_ops),
	.kind = "masking_noise",
	.doc = "zeroes a random fraction of the inputs in training; identity in evaluation",
	.schema = masking_schema,
	.inputs = any_in,
	.outputs = any_out,
	.create = masking_create,
	.forward = noise_forward,
	.backward = noise_backward,
	.destroy = noise_destroy,
};

static const struct px_layer_ops salt_pepper_noise_ops = {
	.struct_size = sizeof(struct px_layer_ops),
	.kind = "salt_pepper_noise",
	.doc = "sets a random fraction of the inputs to low or high (half each) in training",
	.schema = salt_pepper_schema,
	.inputs = any_in,
	.outputs = any_out,
	.create = salt_pepper_create,
	.forward = noise_forward,
	.backward = noise_backward,
	.destroy = noise_destroy,
};

/* ------------------------------------------------------------------ autoencoder */
/* sizes [s0, s1, ..., sL]: encoder layers k = 0..L-1 map s_k -> s_{k+1}; decoder layers
 * k = 0..L-1 map s_{L-k} -> s_{L-k-1}. Network layer m = 0..2L-1 is encoder m, then
 * decoder m - L. Tied: decoder k uses enc{L-1-k}.weight transposed. */
enum act { ACT_NONE, ACT_RELU, ACT_TANH, ACT_SIGMOID };

#define AE_MAX_LAYERS 16   /* network layers (2L) */

struct ae {
	int L;                          /* encoder layers */
	int64_t size[AE_MAX_LAYERS / 2 + 1];
	int64_t in_dim[AE_MAX_LAYERS], out_dim[AE_MAX_LAYERS];
	enum act act, out_act;
	bool tied;
	int64_t features;               /* s0 */
	struct px_param *w[AE_MAX_LAYERS], *b[AE_MAX_LAYERS];  /* tied decoder: w = encoder's */
	bool transposed[AE_MAX_LAYERS]; /* the layer computes h @ W instead of h @ W^T */
	float *h[AE_MAX_LAYERS + 1];    /* activations of the last forward (step arena) */
	int64_t batch;
	const struct px_host *host;
	char node[128];                 /* for figures */
};

static const struct px_param_spec ae_schema[] = {
	{"sizes", PX_T_INTS, NULL, 1, 1e9, NULL,
	 "[input, hidden..., code]: encoder layer sizes, mirrored by the decoder"},
	{"activation", PX_T_ENUM, "relu", 0, 0, "relu|tanh|sigmoid", "after every hidden layer"},
	{"output_activation", PX_T_ENUM, "sigmoid", 0, 0, "none|sigmoid", "on the reconstruction"},
	{"tied", PX_T_BOOL, "false", 0, 0, NULL,
	 "decoder weights are the encoder's transposed (only decoder biases are learned)"},
	{NULL, 0, NULL, 0, 0, NULL, NULL},
};

static const struct px_port_spec ae_in[] = {
	{"x", 0, "examples [B, F...] (flattened to F = sizes[0] features)"},
	{NULL, 0, NULL},
};

static const struct px_port_spec ae_out[] = {
	{"recon", 0, "the reconstruction, shaped like the input"},
	{"code", 0, "the bottleneck activations [B, code]"},
	{NULL, 0, NULL},
};

static enum act act_of(const char *s)
{
	return !strcmp(s, "relu") ? ACT_RELU : !strcmp(s, "tanh") ? ACT_TANH :
	       !strcmp(s, "sigmoid") ? ACT_SIGMOID : ACT_NONE;
}

static int ae_param(struct px_build *b, struct px_param **p, const char *fmt, int k,
		    int ndim, const int64_t *shape, float bound, struct px_error *err)
{
	char name[64];
	snprintf(name, sizeof name, fmt, k);
	*p = px_build_param(b, name, ndim, shape, err);
	if (!*p)
		return err->code ? err->code : PX_ERR_NOMEM;
	px_init_uniform((*p)->value, b->rng, bound);
	return 0;
}

static int ae_create(struct px_build *b, void **self, struct px_shape *out, struct px_error *err)
{
	struct ae *a = calloc(1, sizeof *a);
	char s[96];
	if (!a)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	*self = a;
	a->host = b->host;
	snprintf(a->node, sizeof a->node, "%s", b->node);
	const struct px_shape *in = &b->in[0];
	if (b->n_in < 1 || in->ndim < 2)
		return px_build_error(b, err, PX_ERR_SHAPE, "expects an input [B,F...], got %s",
				      b->n_in ? px_shape_str(in, s, sizeof s) : "nothing");
	a->features = px_shape_numel(in);
	const int64_t *sz;
	int n = px_config_ints(b->cfg, "sizes", &sz);
	if (n < 2 || n > AE_MAX_LAYERS / 2 + 1)
		return px_config_error(b->cfg, err, PX_ERR_INVALID, "sizes",
				       "'sizes' needs 2 to %d entries ([input, ..., code]), got %d",
				       AE_MAX_LAYERS / 2 + 1, n);
	if (sz[0] != a->features)
		return px_config_error(b->cfg, err, PX_ERR_SHAPE, "sizes",
				       "sizes[0] is %lld but the input %s has %lld features",
				       (long long)sz[0], px_shape_str(in, s, sizeof s),
				       (long long)a->features);
	if (sz[n - 1] >= sz[0])
		return px_config_error(b->cfg, err, PX_ERR_SHAPE, "sizes",
				       "code size %lld must be smaller than the input %lld",
				       (long long)sz[n - 1], (long long)sz[0]);
	a->L = n - 1;
	memcpy(a->size, sz, (size_t)n * sizeof *sz);
	a->act = act_of(px_config_str(b->cfg, "activation"));
	a->out_act = act_of(px_config_str(b->cfg, "output_activation"));
	a->tied = px_config_bool(b->cfg, "tied");
	int L = a->L, rc;
	/* nn.Linear: weight [out, in], bias [out], both U(-1/sqrt(in), 1/sqrt(in)) */
	for (int k = 0; k < L; k++) {
		int64_t ws[2] = {sz[k + 1], sz[k]};
		float bound = 1.0f / sqrtf((float)sz[k]);
		a->in_dim[k] = sz[k], a->out_dim[k] = sz[k + 1];
		if ((rc = ae_param(b, &a->w[k], "enc%d.weight", k, 2, ws, bound, err)) ||
		    (rc = ae_param(b, &a->b[k], "enc%d.bias", k, 1, &ws[0], bound, err)))
			return rc;
	}
	for (int k = 0; k < L; k++) {
		int m = L + k;
		int64_t ws[2] = {sz[L - k - 1], sz[L - k]};
		float bound = 1.0f / sqrtf((float)sz[L - k]);
		a->in_dim[m] = sz[L - k], a->out_dim[m] = sz[L - k - 1];
		if (a->tied) {
			a->w[m] = a->w[L - 1 - k];
			a->transposed[m] = true;
		} else if ((rc = ae_param(b, &a->w[m], "dec%d.weight", k, 2, ws, bound, err))) {
			return rc;
		}
		if ((rc = ae_param(b, &a->b[m], "dec%d.bias", k, 1, &ws[0], bound, err)))
			return rc;
	}
	out[0] = *in;
	out[0].dim[0] = -1;
	out[1] = (struct px_shape){.ndim = 2, .dim = {-1, sz[L]}};
	return 0;
}

/* h = act(z) in place */
static void act_forward(enum act f, float *z, int64_t n)
{
	switch (f) {
	case ACT_RELU:
		for (int64_t i = 0; i < n; i++)
			z[i] = z[i] > 0 ? z[i] : 0;
		break;
	case ACT_TANH:
		for (int64_t i = 0; i < n; i++)
			z[i] = tanhf(z[i]);
		break;
	case ACT_SIGMOID:
		for (int64_t i = 0; i < n; i++)
			z[i] = 1.0f / (1.0f + expf(-z[i]));
		break;
	case ACT_NONE:
		break;
	}
}

/* dz = dh * act'(z), written from the activation h: relu h > 0, tanh 1 - h^2, sigmoid h(1-h) */
static void act_backward(enum act f, const float *h, float *d, int64_t n)
{
	switch (f) {
	case ACT_RELU:
		for (int64_t i = 0; i < n; i++)
			d[i] = h[i] > 0 ? d[i] : 0;
		break;
	case ACT_TANH:
		for (int64_t i = 0; i < n; i++)
			d[i] *= 1.0f - h[i] * h[i];
		break;
	case ACT_SIGMOID:
		for (int64_t i = 0; i < n; i++)
			d[i] *= h[i] * (1.0f - h[i]);
		break;
	case ACT_NONE:
		break;
	}
}

/* Report figure (ABI 1.1, a report's figure pass only): one example per column; rows: the
 * data's input, this node's input where it differs (corrupted by a noise layer), the
 * reconstruction. A picture is the data's last two dims (first channel), else a square. */
static void ae_figure(const struct ae *a, struct px_arena *ar, const struct px_tensor *x,
		      const struct px_tensor *recon)
{
	const struct px_host *h = a->host;
	const struct px_figure_batch *fb = PX_HOST_HAS(h, figure_batch) ? h->figure_batch(h) : NULL;
	if (!fb || !PX_HOST_HAS(h, figure_image))
		return;
	int64_t B = x->shape[0], F = a->features, n = B < 10 ? B : 10, ph, pw;
	const struct px_tensor *in = fb->x;
	bool have_in = in && in->ndim >= 2 && in->shape[0] == B && px_tensor_numel(in) == B * F;
	int64_t side = (int64_t)llround(sqrt((double)F));
	if (have_in && in->ndim >= 3 && F % (in->shape[in->ndim - 2] * in->shape[in->ndim - 1]) == 0) {
		ph = in->shape[in->ndim - 2];
		pw = in->shape[in->ndim - 1];
	} else if (side * side == F) {
		ph = pw = side;
	} else {
		ph = 1;
		pw = F;
	}
	const float *rows[3];
	int nr = 0;
	if (have_in)
		rows[nr++] = in->data;
	if (!have_in || memcmp(in->data, x->data, (size_t)(B * F) * sizeof(float)))
		rows[nr++] = x->data;
	rows[nr++] = recon->data;
	int64_t gap = 2, W = n * (pw + gap) + gap, H = nr * (ph + gap) + gap;
	unsigned char *px = n > 0 && W <= 4096 && H <= 4096 ? px_arena_alloc(ar, (size_t)(W * H)) : NULL;
	if (!px)
		return;
	memset(px, 128, (size_t)(W * H));
	for (int r = 0; r < nr; r++)
		for (int64_t b = 0; b < n; b++) {
			const float *v = rows[r] + b * F;   /* [0,1] as is, else stretched per picture */
			float lo = 0, hi = 1;
			for (int64_t i = 0; i < ph * pw; i++) {
				lo = v[i] < lo ? v[i] : lo;
				hi = v[i] > hi ? v[i] : hi;
			}
			for (int64_t i = 0; i < ph * pw; i++) {
				float t = isfinite(v[i]) ? (v[i] - lo) / (hi - lo) : 0.0f;
				px[(gap + r * (ph + gap) + i / pw) * W + gap + b * (pw + gap) + i % pw] =
					(unsigned char)lroundf(255.0f * t);
			}
		}
	h->figure_image(h, a->node, nr == 3 ? "inputs, corrupted inputs and reconstructions (rows), "
				      "one example per column"
				    : "inputs and reconstructions (rows), one example per column",
			(int)W, (int)H, 1, px);
}

/* h_{m+1} = act(h_m W_m^T + b_m) (tied decoder: h_m W_m + b_m), output activation last */
static int ae_forward(void *self, struct px_fwd *f, struct px_error *err)
{
	struct ae *a = self;
	const struct px_tensor *x = f->in[0];
	int64_t B = x->shape[0];
	if (px_tensor_numel(x) != B * a->features)
		return px_error_set(err, PX_ERR_SHAPE, "input has %lld features per example, built "
				    "for %lld", (long long)(B ? px_tensor_numel(x) / B : 0),
				    (long long)a->features);
	int L = a->L;
	struct px_tensor *recon = px_tensor_like(f->arena, x);
	struct px_tensor *code = px_tensor_new2(f->arena, B, a->size[L]);
	if (!recon || !code)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	recon->lengths = NULL;
	a->batch = B;
	a->h[0] = x->data;
	for (int m = 0; m < 2 * L; m++) {
		int64_t in = a->in_dim[m], o = a->out_dim[m];
		float *z = m == L - 1 ? code->data : m == 2 * L - 1 ? recon->data :
			   px_arena_alloc(f->arena, (size_t)(B * o) * sizeof(float));
		if (!z)
			return px_error_set(err, PX_ERR_NOMEM, "out of memory");
		const float *bias = a->b[m]->value->data;
		for (int64_t i = 0; i < B; i++)
			memcpy(z + i * o, bias, (size_t)o * sizeof *z);
		if (a->transposed[m])
			px_gemm(false, false, B, o, in, 1.0f, a->h[m], in, a->w[m]->value->data, o,
				1.0f, z, o);
		else
			px_gemm(false, true, B, o, in, 1.0f, a->h[m], in, a->w[m]->value->data, in,
				1.0f, z, o);
		act_forward(m == 2 * L - 1 ? a->out_act : a->act, z, B * o);
		a->h[m + 1] = z;
	}
	f->out[0] = recon;
	f->out[1] = code;
	if (!f->train)
		ae_figure(a, f->arena, x, recon);
	return 0;
}

/* dz_m = dh_{m+1} act'; dW_m += dz_m^T h_m (tied: h_m^T dz_m); db_m += sum dz_m;
 * dh_m = dz_m W_m (tied: dz_m W_m^T); the code's own gradient joins at h_L */
static int ae_backward(void *self, struct px_bwd *bw, struct px_error *err)
{
	struct ae *a = self;
	const struct px_tensor *d_recon = bw->d_out[0], *d_code = bw->d_out[1];
	int L = a->L;
	int64_t B = a->batch, widest = 0;
	for (int k = 0; k <= L; k++)
		widest = a->size[k] > widest ? a->size[k] : widest;
	float *dh = px_arena_alloc(bw->arena, (size_t)(B * widest) * sizeof(float));
	float *dprev = px_arena_alloc(bw->arena, (size_t)(B * widest) * sizeof(float));
	if (!dh || !dprev)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	/* start at the top that has a gradient */
	int top;
	if (d_recon) {
		top = 2 * L - 1;
		memcpy(dh, d_recon->data, (size_t)(B * a->features) * sizeof *dh);
	} else if (d_code) {
		top = L - 1;
		memcpy(dh, d_code->data, (size_t)(B * a->size[L]) * sizeof *dh);
	} else {
		return 0;
	}
	float *dx = bw->d_in[0] ? bw->d_in[0]->data : NULL;
	for (int m = top; m >= 0; m--) {
		int64_t in = a->in_dim[m], o = a->out_dim[m];
		if (m == L - 1 && d_recon && d_code)  /* h_L is also the code output */
			px_axpy(B * o, 1.0f, d_code->data, dh);
		act_backward(m == 2 * L - 1 ? a->out_act : a->act, a->h[m + 1], dh, B * o);
		float *db = a->b[m]->grad->data, *dw = a->w[m]->grad->data;
		for (int64_t i = 0; i < B; i++)
			px_axpy(o, 1.0f, dh + i * o, db);
		if (a->transposed[m])
			px_gemm(true, false, in, o, B, 1.0f, a->h[m], in, dh, o, 1.0f, dw, o);
		else
			px_gemm(true, false, o, in, B, 1.0f, dh, o, a->h[m], in, 1.0f, dw, in);
		if (m == 0 && !dx)
			break;
		float *dst = m == 0 ? dx : dprev;
		float beta = m == 0 ? 1.0f : 0.0f;
		const float *w = a->w[m]->value->data;
		if (a->transposed[m])
			px_gemm(false, true, B, in, o, 1.0f, dh, o, w, o, beta, dst, in);
		else
			px_gemm(false, false, B, in, o, 1.0f, dh, o, w, in, beta, dst, in);
		float *t = dh;
		dh = dprev;
		dprev = t;
	}
	return 0;
}

static void ae_destroy(void *self)
{
	free(self);
}

static const struct px_layer_ops autoencoder_ops = {
	.struct_size = sizeof(struct px_layer_ops),
	.kind = "autoencoder",
	.doc = "dense encoder/decoder (sizes mirrored, optional tied weights); outputs recon, code",
	.schema = ae_schema,
	.inputs = ae_in,
	.outputs = ae_out,
	.create = ae_create,
	.forward = ae_forward,
	.backward = ae_backward,
	.destroy = ae_destroy,
};

/* ------------------------------------------------------------------ plugin */
static const struct px_layer_ops *const layers[] = {
	&gaussian_noise_ops, &masking_noise_ops, &salt_pepper_noise_ops, &autoencoder_ops, NULL,
};

static const struct px_plugin plugin = {
	.struct_size = sizeof(struct px_plugin),
	.abi_major = PX_ABI_MAJOR,
	.abi_minor = PX_ABI_MINOR,
	.name = "autoencoder",
	.version = "0.1.0",
	.doc = "dense autoencoders and the noise layers of denoising autoencoders",
	.layers = layers,
};

PX_PLUGIN_ENTRY(plugin)
