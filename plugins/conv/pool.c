/* plexus plugin: conv — pooling, unpooling, upsampling (NCHW, PyTorch semantics) and the
 * seeded synthetic segmentation source `shapes`.
 *
 * How maxunpool2d learns the pre-pool size: maxpool2d records its input plane H x W in the
 * build-time shape of its `indices` port, in the two slots past the rank
 * (dim[4] = H, dim[5] = W of a rank-4 shape). The core hands a producer's port shape on to
 * its consumers whole, so maxunpool2d, wired with `indices: pool1.indices`, reads the size
 * back in create. The runtime tensor is a plain [B,C,Ho,Wo]; `output_size` overrides. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <plexus/plugin.h>

int conv_pair(const struct px_config *cfg, const char *key, int64_t dflt, int64_t v[2],
	      struct px_error *err);
int conv_check_input(const struct px_tensor *x, int64_t C, int64_t H, int64_t W,
		     struct px_error *err);

/* Slots of a rank-4 `indices` port shape that carry the pre-pool H and W. */
#define REC_H 4
#define REC_W 5

static const struct px_port_spec image_in[] = {
	{"x", 0, "images [B,C,H,W]"},
	{NULL, 0, NULL},
};

static const struct px_port_spec image_out[] = {
	{"out", 0, "images [B,C,H',W']"},
	{NULL, 0, NULL},
};

static int need_rank4(struct px_build *b, int i, const char *what, struct px_error *err)
{
	char s[96];
	if (i < b->n_in && b->in[i].ndim == 4)
		return 0;
	return px_build_error(b, err, PX_ERR_SHAPE, "expects %s [B,C,H,W] (rank 4), got %s (rank %d)",
			      what, i < b->n_in ? px_shape_str(&b->in[i], s, sizeof s) : "nothing",
			      i < b->n_in ? b->in[i].ndim : 0);
}

/* ------------------------------------------------------------------ maxpool2d, avgpool2d */
struct pool {
	int64_t c, h, w, oh, ow;
	int64_t kh, kw, sh, sw, ph, pw;
	bool count_include_pad;
};

static const struct px_param_spec maxpool2d_schema[] = {
	{"kernel", PX_T_INTS, NULL, 1, 1e6, NULL, "window size: k or [kh, kw]"},
	{"stride", PX_T_INTS, "[]", 1, 1e6, NULL, "stride: s or [sh, sw] (default: the kernel)"},
	{"padding", PX_T_INTS, "0", 0, 1e6, NULL, "implicit -inf padding, at most kernel/2"},
	{NULL, 0, NULL, 0, 0, NULL, NULL},
};

static const struct px_param_spec avgpool2d_schema[] = {
	{"kernel", PX_T_INTS, NULL, 1, 1e6, NULL, "window size: k or [kh, kw]"},
	{"stride", PX_T_INTS, "[]", 1, 1e6, NULL, "stride: s or [sh, sw] (default: the kernel)"},
	{"padding", PX_T_INTS, "0", 0, 1e6, NULL, "implicit zero padding, at most kernel/2"},
	{"count_include_pad", PX_T_BOOL, "true", 0, 0, NULL, "padding zeros count in the average"},
	{NULL, 0, NULL, 0, 0, NULL, NULL},
};

static int pool_setup(struct px_build *b, struct pool *p, struct px_error *err)
{
	int64_t k[2], s[2], pd[2];
	char buf[96];
	int rc = need_rank4(b, 0, "an input", err);
	if (rc || (rc = conv_pair(b->cfg, "kernel", 1, k, err)) ||
	    (rc = conv_pair(b->cfg, "stride", 0, s, err)) ||
	    (rc = conv_pair(b->cfg, "padding", 0, pd, err)))
		return rc;
	p->kh = k[0], p->kw = k[1];
	p->sh = s[0] ? s[0] : k[0], p->sw = s[1] ? s[1] : k[1];
	p->ph = pd[0], p->pw = pd[1];
	if (2 * p->ph > p->kh || 2 * p->pw > p->kw)
		return px_config_error(b->cfg, err, PX_ERR_INVALID, "padding",
				       "padding [%lld,%lld] must be at most half the kernel [%lld,%lld]",
				       (long long)p->ph, (long long)p->pw, (long long)p->kh,
				       (long long)p->kw);
	p->c = b->in[0].dim[1], p->h = b->in[0].dim[2], p->w = b->in[0].dim[3];
	if (p->h + 2 * p->ph < p->kh || p->w + 2 * p->pw < p->kw)
		return px_build_error(b, err, PX_ERR_SHAPE,
				      "input %s is smaller than the window %lldx%lld (padding [%lld,%lld])",
				      px_shape_str(&b->in[0], buf, sizeof buf), (long long)p->kh,
				      (long long)p->kw, (long long)p->ph, (long long)p->pw);
	/* out = floor((in + 2p - k) / s) + 1 */
	p->oh = (p->h + 2 * p->ph - p->kh) / p->sh + 1;
	p->ow = (p->w + 2 * p->pw - p->kw) / p->sw + 1;
	return 0;
}

static int maxpool2d_create(struct px_build *b, void **self, struct px_shape *out,
			    struct px_error *err)
{
	struct pool *p = calloc(1, sizeof *p);
	if (!p)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	*self = p;
	int rc = pool_setup(b, p, err);
	if (rc)
		return rc;
	out[0] = (struct px_shape){.ndim = 4, .dim = {-1, p->c, p->oh, p->ow}};
	/* indices: [B,C,Ho,Wo], with the pre-pool plane recorded for maxunpool2d */
	out[1] = out[0];
	out[1].dim[REC_H] = p->h;
	out[1].dim[REC_W] = p->w;
	return 0;
}

/* y = max over the window; indices = iy*W + ix of that max (the first one on ties, scanning
 * rows then columns; NaN counts as the max, as in PyTorch) */
static int maxpool2d_forward(void *self, struct px_fwd *f, struct px_error *err)
{
	struct pool *p = self;
	const struct px_tensor *x = f->in[0];
	int rc = conv_check_input(x, p->c, p->h, p->w, err);
	if (rc)
		return rc;
	int64_t shape[4] = {x->shape[0], p->c, p->oh, p->ow};
	struct px_tensor *y = px_tensor_new(f->arena, 4, shape);
	struct px_tensor *ix = px_tensor_new(f->arena, 4, shape);
	if (!y || !ix)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	int64_t planes = x->shape[0] * p->c;
	for (int64_t q = 0; q < planes; q++) {
		const float *xp = x->data + q * p->h * p->w;
		float *yp = y->data + q * p->oh * p->ow, *ip = ix->data + q * p->oh * p->ow;
		for (int64_t oy = 0; oy < p->oh; oy++) {
			int64_t y0 = oy * p->sh - p->ph, y1 = y0 + p->kh;
			y0 = y0 < 0 ? 0 : y0;
			y1 = y1 > p->h ? p->h : y1;
			for (int64_t ox = 0; ox < p->ow; ox++) {
				int64_t x0 = ox * p->sw - p->pw, x1 = x0 + p->kw;
				x0 = x0 < 0 ? 0 : x0;
				x1 = x1 > p->w ? p->w : x1;
				float best = -INFINITY;
				int64_t at = y0 * p->w + x0;
				for (int64_t iy = y0; iy < y1; iy++)
					for (int64_t jx = x0; jx < x1; jx++) {
						float v = xp[iy * p->w + jx];
						if (v > best || isnan(v)) {
							best = v;
							at = iy * p->w + jx;
						}
					}
				yp[oy * p->ow + ox] = best;
				ip[oy * p->ow + ox] = (float)at;
			}
		}
	}
	f->out[0] = y;
	f->out[1] = ix;
	return 0;
}

/* dx[indices] += dy */
static int maxpool2d_backward(void *self, struct px_bwd *bw, struct px_error *err)
{
	struct pool *p = self;
	const struct px_tensor *dy = bw->d_out[0], *ix = bw->out[1];
	(void)err;
	if (!dy || !bw->d_in[0])
		return 0;
	int64_t planes = dy->shape[0] * p->c, P = p->oh * p->ow;
	float *dx = bw->d_in[0]->data;
	for (int64_t q = 0; q < planes; q++)
		for (int64_t i = 0; i < P; i++)
			dx[q * p->h * p->w + (int64_t)ix->data[q * P + i]] += dy->data[q * P + i];
	return 0;
}

static int avgpool2d_create(struct px_build *b, void **self, struct px_shape *out,
			    struct px_error *err)
{
	struct pool *p = calloc(1, sizeof *p);
	if (!p)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	*self = p;
	int rc = pool_setup(b, p, err);
	if (rc)
		return rc;
	p->count_include_pad = px_config_bool(b->cfg, "count_include_pad");
	*out = (struct px_shape){.ndim = 4, .dim = {-1, p->c, p->oh, p->ow}};
	return 0;
}

/* The window of output (oy, ox) clipped to the image, and its divisor (PyTorch's rule). */
static float avg_window(const struct pool *p, int64_t oy, int64_t ox, int64_t *y0, int64_t *y1,
			int64_t *x0, int64_t *x1)
{
	int64_t ya = oy * p->sh - p->ph, xa = ox * p->sw - p->pw;
	int64_t yb = ya + p->kh < p->h + p->ph ? ya + p->kh : p->h + p->ph;
	int64_t xb = xa + p->kw < p->w + p->pw ? xa + p->kw : p->w + p->pw;
	int64_t padded = (yb - ya) * (xb - xa);
	*y0 = ya < 0 ? 0 : ya;
	*x0 = xa < 0 ? 0 : xa;
	*y1 = yb > p->h ? p->h : yb;
	*x1 = xb > p->w ? p->w : xb;
	return (float)(p->count_include_pad ? padded : (*y1 - *y0) * (*x1 - *x0));
}

/* y = sum over the window / divisor */
static int avgpool2d_forward(void *self, struct px_fwd *f, struct px_error *err)
{
	struct pool *p = self;
	const struct px_tensor *x = f->in[0];
	int rc = conv_check_input(x, p->c, p->h, p->w, err);
	if (rc)
		return rc;
	int64_t shape[4] = {x->shape[0], p->c, p->oh, p->ow};
	struct px_tensor *y = px_tensor_new(f->arena, 4, shape);
	if (!y)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	int64_t planes = x->shape[0] * p->c;
	for (int64_t q = 0; q < planes; q++) {
		const float *xp = x->data + q * p->h * p->w;
		float *yp = y->data + q * p->oh * p->ow;
		for (int64_t oy = 0; oy < p->oh; oy++)
			for (int64_t ox = 0; ox < p->ow; ox++) {
				int64_t y0, y1, x0, x1;
				float div = avg_window(p, oy, ox, &y0, &y1, &x0, &x1), s = 0;
				for (int64_t iy = y0; iy < y1; iy++)
					for (int64_t jx = x0; jx < x1; jx++)
						s += xp[iy * p->w + jx];
				yp[oy * p->ow + ox] = s / div;
			}
	}
	f->out[0] = y;
	return 0;
}

/* dx[window] += dy / divisor */
static int avgpool2d_backward(void *self, struct px_bwd *bw, struct px_error *err)
{
	struct pool *p = self;
	const struct px_tensor *dy = bw->d_out[0];
	(void)err;
	if (!dy || !bw->d_in[0])
		return 0;
	int64_t planes = dy->shape[0] * p->c;
	for (int64_t q = 0; q < planes; q++) {
		float *dx = bw->d_in[0]->data + q * p->h * p->w;
		const float *g = dy->data + q * p->oh * p->ow;
		for (int64_t oy = 0; oy < p->oh; oy++)
			for (int64_t ox = 0; ox < p->ow; ox++) {
				int64_t y0, y1, x0, x1;
				float d = g[oy * p->ow + ox] / avg_window(p, oy, ox, &y0, &y1, &x0, &x1);
				for (int64_t iy = y0; iy < y1; iy++)
					for (int64_t jx = x0; jx < x1; jx++)
						dx[iy * p->w + jx] += d;
			}
	}
	return 0;
}

static void plain_destroy(void *self)
{
	free(self);
}

static const struct px_port_spec maxpool_out[] = {
	{"out", 0, "pooled images [B,C,Ho,Wo]"},
	{"indices", PX_PORT_NO_GRAD,
	 "flat index iy*W + ix of each max within its HxW input plane (as floats); records H, W "
	 "for maxunpool2d"},
	{NULL, 0, NULL},
};

const struct px_layer_ops px_maxpool2d_ops = {
	.struct_size = sizeof(struct px_layer_ops),
	.kind = "maxpool2d",
	.doc = "2-D max pooling; `indices` feeds maxunpool2d (ties: the first max wins)",
	.schema = maxpool2d_schema,
	.inputs = image_in,
	.outputs = maxpool_out,
	.create = maxpool2d_create,
	.forward = maxpool2d_forward,
	.backward = maxpool2d_backward,
	.destroy = plain_destroy,
};

const struct px_layer_ops px_avgpool2d_ops = {
	.struct_size = sizeof(struct px_layer_ops),
	.kind = "avgpool2d",
	.doc = "2-D average pooling",
	.schema = avgpool2d_schema,
	.inputs = image_in,
	.outputs = image_out,
	.create = avgpool2d_create,
	.forward = avgpool2d_forward,
	.backward = avgpool2d_backward,
	.destroy = plain_destroy,
};

/* ------------------------------------------------------------------ maxunpool2d */
struct unpool {
	int64_t c, h, w;    /* pooled plane (input) */
	int64_t uh, uw;     /* restored plane (output) */
};

static const struct px_param_spec maxunpool2d_schema[] = {
	{"output_size", PX_T_INTS, "[]", 1, 1e9, NULL,
	 "[H, W] of the output (default: the input size recorded by the maxpool2d)"},
	{NULL, 0, NULL, 0, 0, NULL, NULL},
};

static const struct px_port_spec unpool_in[] = {
	{"x", 0, "pooled values [B,C,Ho,Wo]"},
	{"indices", PX_PORT_NO_GRAD, "a maxpool2d's indices output (pool1.indices)"},
	{NULL, 0, NULL},
};

static int maxunpool2d_create(struct px_build *b, void **self, struct px_shape *out,
			      struct px_error *err)
{
	struct unpool *u = calloc(1, sizeof *u);
	char s1[96], s2[96];
	if (!u)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	*self = u;
	int rc = need_rank4(b, 0, "an input", err);
	if (rc || (rc = need_rank4(b, 1, "`indices` (a maxpool2d's indices output)", err)))
		return rc;
	const struct px_shape *x = &b->in[0], *ix = &b->in[1];
	if (x->dim[1] != ix->dim[1] || x->dim[2] != ix->dim[2] || x->dim[3] != ix->dim[3])
		return px_build_error(b, err, PX_ERR_SHAPE, "input %s and indices %s differ",
				      px_shape_str(x, s1, sizeof s1), px_shape_str(ix, s2, sizeof s2));
	u->c = x->dim[1], u->h = x->dim[2], u->w = x->dim[3];
	if (px_config_is_set(b->cfg, "output_size")) {
		int64_t v[2];
		if ((rc = conv_pair(b->cfg, "output_size", 0, v, err)))
			return rc;
		u->uh = v[0], u->uw = v[1];
	} else {
		u->uh = ix->dim[REC_H], u->uw = ix->dim[REC_W];
		if (u->uh <= 0 || u->uw <= 0)
			return px_build_error(b, err, PX_ERR_SHAPE,
					      "indices %s carry no pre-pool size: connect `indices` "
					      "to a maxpool2d's indices output or set output_size",
					      px_shape_str(ix, s2, sizeof s2));
	}
	if (u->uh < u->h || u->uw < u->w)
		return px_build_error(b, err, PX_ERR_SHAPE,
				      "output size %lldx%lld is smaller than the input %s",
				      (long long)u->uh, (long long)u->uw, px_shape_str(x, s1, sizeof s1));
	*out = (struct px_shape){.ndim = 4, .dim = {-1, u->c, u->uh, u->uw}};
	return 0;
}

/* y = 0; y[indices] = x (every value back at the position of its max) */
static int maxunpool2d_forward(void *self, struct px_fwd *f, struct px_error *err)
{
	struct unpool *u = self;
	const struct px_tensor *x = f->in[0], *ix = f->in[1];
	int rc = conv_check_input(x, u->c, u->h, u->w, err);
	if (rc || (rc = conv_check_input(ix, u->c, u->h, u->w, err)))
		return rc;
	if (ix->shape[0] != x->shape[0])
		return px_error_set(err, PX_ERR_SHAPE, "batch of x (%lld) and indices (%lld) differ",
				    (long long)x->shape[0], (long long)ix->shape[0]);
	int64_t shape[4] = {x->shape[0], u->c, u->uh, u->uw};
	struct px_tensor *y = px_tensor_new(f->arena, 4, shape);
	if (!y)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	int64_t planes = x->shape[0] * u->c, P = u->h * u->w, U = u->uh * u->uw;
	for (int64_t q = 0; q < planes; q++)
		for (int64_t i = 0; i < P; i++) {
			float at = ix->data[q * P + i];
			if (!(at >= 0 && at < (float)U) || at != floorf(at))
				return px_error_set(err, PX_ERR_INVALID,
						    "index %g is outside the %lldx%lld output plane",
						    (double)at, (long long)u->uh, (long long)u->uw);
			y->data[q * U + (int64_t)at] = x->data[q * P + i];
		}
	f->out[0] = y;
	return 0;
}

/* dx = dy[indices] */
static int maxunpool2d_backward(void *self, struct px_bwd *bw, struct px_error *err)
{
	struct unpool *u = self;
	const struct px_tensor *dy = bw->d_out[0], *ix = bw->in[1];
	(void)err;
	if (!dy || !bw->d_in[0])
		return 0;
	int64_t planes = dy->shape[0] * u->c, P = u->h * u->w, U = u->uh * u->uw;
	float *dx = bw->d_in[0]->data;
	for (int64_t q = 0; q < planes; q++)
		for (int64_t i = 0; i < P; i++)
			dx[q * P + i] += dy->data[q * U + (int64_t)ix->data[q * P + i]];
	return 0;
}

const struct px_layer_ops px_maxunpool2d_ops = {
	.struct_size = sizeof(struct px_layer_ops),
	.kind = "maxunpool2d",
	.doc = "puts each value back where its maxpool2d found the max, zeros elsewhere",
	.schema = maxunpool2d_schema,
	.inputs = unpool_in,
	.outputs = image_out,
	.create = maxunpool2d_create,
	.forward = maxunpool2d_forward,
	.backward = maxunpool2d_backward,
	.destroy = plain_destroy,
};

/* ------------------------------------------------------------------ upsample2d */
struct upsample {
	int64_t c, h, w, oh, ow, scale;
	bool bilinear;
	/* per output row / column: source rows y0, y1 and the weight ly of y1 (nearest: y0) */
	int64_t *y0, *y1, *x0, *x1;
	float *ly, *lx;
};

static const struct px_param_spec upsample2d_schema[] = {
	{"scale", PX_T_INT, "2", 1, 1e4, NULL, "integer scale factor of height and width"},
	{"mode", PX_T_ENUM, "nearest", 0, 0, "nearest|bilinear",
	 "interpolation (bilinear: align_corners false, like PyTorch)"},
	{NULL, 0, NULL, 0, 0, NULL, NULL},
};

/* Source taps of n_out positions from n_in: nearest src = dst / scale; bilinear
 * src = max(0, (dst + 0.5) / scale - 0.5), between floor(src) and the next (clamped). */
static void upsample_taps(int64_t n_in, int64_t n_out, int64_t scale, bool bilinear, int64_t *a,
			  int64_t *b, float *l)
{
	float r = 1.0f / (float)scale;
	for (int64_t i = 0; i < n_out; i++) {
		if (!bilinear) {
			a[i] = b[i] = i / scale;
			l[i] = 0;
			continue;
		}
		float src = r * ((float)i + 0.5f) - 0.5f;
		src = src < 0 ? 0 : src;
		a[i] = (int64_t)src;
		b[i] = a[i] + (a[i] < n_in - 1 ? 1 : 0);
		l[i] = src - (float)a[i];
	}
}

static void upsample2d_destroy(void *self)
{
	struct upsample *u = self;
	if (!u)
		return;
	free(u->y0);
	free(u);
}

static int upsample2d_create(struct px_build *b, void **self, struct px_shape *out,
			     struct px_error *err)
{
	struct upsample *u = calloc(1, sizeof *u);
	if (!u)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	*self = u;
	int rc = need_rank4(b, 0, "an input", err);
	if (rc)
		return rc;
	u->c = b->in[0].dim[1], u->h = b->in[0].dim[2], u->w = b->in[0].dim[3];
	u->scale = px_config_int(b->cfg, "scale");
	u->bilinear = !strcmp(px_config_str(b->cfg, "mode"), "bilinear");
	u->oh = u->h * u->scale, u->ow = u->w * u->scale;
	/* one block: y0 y1 x0 x1 (int64), then ly lx (float) */
	int64_t n = 2 * (u->oh + u->ow);
	u->y0 = malloc((size_t)n * sizeof(int64_t) + (size_t)(u->oh + u->ow) * sizeof(float));
	if (!u->y0)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	u->y1 = u->y0 + u->oh;
	u->x0 = u->y1 + u->oh;
	u->x1 = u->x0 + u->ow;
	u->ly = (float *)(u->x1 + u->ow);
	u->lx = u->ly + u->oh;
	upsample_taps(u->h, u->oh, u->scale, u->bilinear, u->y0, u->y1, u->ly);
	upsample_taps(u->w, u->ow, u->scale, u->bilinear, u->x0, u->x1, u->lx);
	*out = (struct px_shape){.ndim = 4, .dim = {-1, u->c, u->oh, u->ow}};
	return 0;
}

/* y = (1-ly) ((1-lx) x[y0,x0] + lx x[y0,x1]) + ly ((1-lx) x[y1,x0] + lx x[y1,x1]);
 * nearest: y = x[y0,x0] */
static int upsample2d_forward(void *self, struct px_fwd *f, struct px_error *err)
{
	struct upsample *u = self;
	const struct px_tensor *x = f->in[0];
	int rc = conv_check_input(x, u->c, u->h, u->w, err);
	if (rc)
		return rc;
	int64_t shape[4] = {x->shape[0], u->c, u->oh, u->ow};
	struct px_tensor *y = px_tensor_new(f->arena, 4, shape);
	if (!y)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	int64_t planes = x->shape[0] * u->c;
	for (int64_t q = 0; q < planes; q++) {
		const float *xp = x->data + q * u->h * u->w;
		float *yp = y->data + q * u->oh * u->ow;
		for (int64_t i = 0; i < u->oh; i++) {
			const float *r0 = xp + u->y0[i] * u->w, *r1 = xp + u->y1[i] * u->w;
			float *d = yp + i * u->ow;
			if (!u->bilinear) {
				for (int64_t j = 0; j < u->ow; j++)
					d[j] = r0[u->x0[j]];
				continue;
			}
			float h1 = u->ly[i], h0 = 1.0f - h1;
			for (int64_t j = 0; j < u->ow; j++) {
				float w1 = u->lx[j], w0 = 1.0f - w1;
				d[j] = h0 * (w0 * r0[u->x0[j]] + w1 * r0[u->x1[j]]) +
				       h1 * (w0 * r1[u->x0[j]] + w1 * r1[u->x1[j]]);
			}
		}
	}
	f->out[0] = y;
	return 0;
}

/* each input tap += its interpolation weight * dy */
static int upsample2d_backward(void *self, struct px_bwd *bw, struct px_error *err)
{
	struct upsample *u = self;
	const struct px_tensor *dy = bw->d_out[0];
	(void)err;
	if (!dy || !bw->d_in[0])
		return 0;
	int64_t planes = dy->shape[0] * u->c;
	for (int64_t q = 0; q < planes; q++) {
		float *dx = bw->d_in[0]->data + q * u->h * u->w;
		const float *g = dy->data + q * u->oh * u->ow;
		for (int64_t i = 0; i < u->oh; i++) {
			float *r0 = dx + u->y0[i] * u->w, *r1 = dx + u->y1[i] * u->w;
			const float *d = g + i * u->ow;
			if (!u->bilinear) {
				for (int64_t j = 0; j < u->ow; j++)
					r0[u->x0[j]] += d[j];
				continue;
			}
			float h1 = u->ly[i], h0 = 1.0f - h1;
			for (int64_t j = 0; j < u->ow; j++) {
				float w1 = u->lx[j], w0 = 1.0f - w1;
				r0[u->x0[j]] += h0 * w0 * d[j];
				r0[u->x1[j]] += h0 * w1 * d[j];
				r1[u->x0[j]] += h1 * w0 * d[j];
				r1[u->x1[j]] += h1 * w1 * d[j];
			}
		}
	}
	return 0;
}

const struct px_layer_ops px_upsample2d_ops = {
	.struct_size = sizeof(struct px_layer_ops),
	.kind = "upsample2d",
	.doc = "upsamples height and width by an integer factor (nearest or bilinear)",
	.schema = upsample2d_schema,
	.inputs = image_in,
	.outputs = image_out,
	.create = upsample2d_create,
	.forward = upsample2d_forward,
	.backward = upsample2d_backward,
	.destroy = upsample2d_destroy,
};

/* ------------------------------------------------------------------ shapes data source */
/* Images [n,1,S,S]: Gaussian noise (std `noise`) over 1..max_shapes filled shapes of random
 * brightness in [0.5, 1]; labels [n,S,S]: 0 background, 1 circle, 2 square, 3 triangle, the
 * class of the topmost shape covering the pixel centre. Seeded from the pipeline seed and the
 * split name, so each split is a different, reproducible sample. */
static const struct px_param_spec shapes_schema[] = {
	{"n", PX_T_INT, "2000", 1, 1e8, NULL, "images in the split"},
	{"size", PX_T_INT, "32", 8, 4096, NULL, "image height and width"},
	{"max_shapes", PX_T_INT, "3", 1, 64, NULL, "shapes per image: uniform in 1..max_shapes"},
	{"noise", PX_T_FLOAT, "0.1", 0, 1e3, NULL, "standard deviation of the pixel noise"},
	{NULL, 0, NULL, 0, 0, NULL, NULL},
};

enum { SHAPE_CIRCLE = 1, SHAPE_SQUARE, SHAPE_TRIANGLE };

/* Is the pixel centre (px, py) inside a shape of class k centred at (cx, cy), half-size r?
 * Triangles point up: apex (cx, cy - r), base from (cx - r, cy + r) to (cx + r, cy + r). */
static bool shape_covers(int k, double cx, double cy, double r, double px, double py)
{
	double dx = px - cx, dy = py - cy;
	switch (k) {
	case SHAPE_CIRCLE:
		return dx * dx + dy * dy <= r * r;
	case SHAPE_SQUARE:
		return fabs(dx) <= r && fabs(dy) <= r;
	default:
		return dy >= -r && dy <= r && fabs(dx) <= (dy + r) / 2;
	}
}

static int shapes_load(const struct px_config *cfg, const char *split, uint64_t seed,
		       struct px_dataset *out, struct px_error *err)
{
	int64_t n = px_config_int(cfg, "n"), S = px_config_int(cfg, "size");
	int64_t max_shapes = px_config_int(cfg, "max_shapes");
	double noise = px_config_float(cfg, "noise");
	int64_t xd[4] = {n, 1, S, S}, yd[3] = {n, S, S};
	int rc = px_dataset_alloc(out, 4, xd, false, 3, yd, false, err);
	if (rc)
		return rc;
	out->n_classes = 4;
	char label[160];
	snprintf(label, sizeof label, "shapes/%s", split);
	struct px_rng r;
	px_rng_seed_label(&r, seed, label);
	for (int64_t e = 0; e < n; e++) {
		float *img = out->x_data + e * S * S, *lab = out->y_data + e * S * S;
		int64_t k = 1 + (int64_t)px_rng_below(&r, (uint64_t)max_shapes);
		for (int64_t s = 0; s < k; s++) {
			int cls = 1 + (int)px_rng_below(&r, 3);
			double rad = S / 10.0 + px_rng_uniform(&r) * (S / 4.0 - S / 10.0);
			double cx = rad + px_rng_uniform(&r) * (S - 2 * rad);
			double cy = rad + px_rng_uniform(&r) * (S - 2 * rad);
			float v = 0.5f + 0.5f * (float)px_rng_uniform(&r);
			int64_t ylo = (int64_t)(cy - rad), yhi = (int64_t)(cy + rad) + 1;
			int64_t xlo = (int64_t)(cx - rad), xhi = (int64_t)(cx + rad) + 1;
			for (int64_t py = ylo < 0 ? 0 : ylo; py < (yhi > S ? S : yhi); py++)
				for (int64_t px = xlo < 0 ? 0 : xlo; px < (xhi > S ? S : xhi); px++)
					if (shape_covers(cls, cx, cy, rad, px + 0.5, py + 0.5)) {
						img[py * S + px] = v;
						lab[py * S + px] = (float)cls;
					}
		}
		if (noise > 0)
			for (int64_t i = 0; i < S * S; i++)
				img[i] += (float)(noise * px_rng_normal(&r));
	}
	return 0;
}

const struct px_source_ops px_shapes_source = {
	.struct_size = sizeof(struct px_source_ops),
	.kind = "shapes",
	.doc = "synthetic segmentation: circles, squares and triangles on noise, labels per pixel",
	.schema = shapes_schema,
	.load = shapes_load,
};
