/* plexus plugin: conv — 2-D convolution, transposed convolution and batch normalisation
 * (NCHW, PyTorch's names, layouts, defaults and initialisation). Pooling, unpooling,
 * upsampling and the `shapes` data source are in pool.c.
 *
 * Convolutions run as im2col + GEMM over a chunk of the batch at once: the columns of nb
 * examples sit side by side ([K, nb*P], K = channels*kh*kw of a group, P = output pixels), so
 * one GEMM per group covers the chunk. conv_transpose2d is the adjoint of conv2d: its forward
 * is conv2d's input gradient (GEMM + col2im), its input gradient is conv2d's forward. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <plexus/plugin.h>

/* Column buffers of one chunk hold at most this many floats (16 MiB). */
#define COL_FLOATS ((int64_t)1 << 22)

/* ------------------------------------------------------------------ shared with pool.c */
int conv_pair(const struct px_config *cfg, const char *key, int64_t dflt, int64_t v[2],
	      struct px_error *err);
int conv_check_input(const struct px_tensor *x, int64_t C, int64_t H, int64_t W,
		     struct px_error *err);
extern const struct px_layer_ops px_maxpool2d_ops, px_avgpool2d_ops, px_maxunpool2d_ops,
	px_upsample2d_ops;
extern const struct px_source_ops px_shapes_source;

/* An option written as one integer or as [h, w]; an empty list (the default "[]") gives
 * `dflt` twice. */
int conv_pair(const struct px_config *cfg, const char *key, int64_t dflt, int64_t v[2],
	      struct px_error *err)
{
	const int64_t *p;
	int n = px_config_ints(cfg, key, &p);
	if (n == 0) {
		v[0] = v[1] = dflt;
	} else if (n == 1) {
		v[0] = v[1] = p[0];
	} else if (n == 2) {
		v[0] = p[0];
		v[1] = p[1];
	} else {
		return px_config_error(cfg, err, PX_ERR_INVALID, key,
				       "'%s' must be one integer or [h, w], got %d values", key, n);
	}
	return 0;
}

/* ------------------------------------------------------------------ im2col / col2im */
/* One sweep of a kh x kw window (stride s, padding p, dilation d) over a "big" plane h x w,
 * giving a "small" plane oh x ow: conv2d's input and output, conv_transpose2d's output and
 * input. `c` channels of one group. */
struct win {
	int64_t c, h, w, oh, ow;
	int64_t kh, kw, sh, sw, ph, pw, dh, dw;
};

/* Output columns ox whose input column ox*s + off falls inside [0, w): [*lo, *hi). */
static void win_range(int64_t ow, int64_t w, int64_t s, int64_t off, int64_t *lo, int64_t *hi)
{
	int64_t a = off >= 0 ? 0 : (-off + s - 1) / s;
	int64_t b = w - 1 - off < 0 ? 0 : (w - 1 - off) / s + 1;
	*lo = a < ow ? a : ow;
	*hi = b < ow ? b : ow;
	if (*hi < *lo)
		*hi = *lo;
}

/* col[(c*kh + i)*kw + j][n*oh*ow + oy*ow + ox] = x_n[c][oy*sh - ph + i*dh][ox*sw - pw + j*dw]
 * (0 outside), for the nb images x_n = x + n*xs. */
static void im2col(const struct win *g, const float *x, int64_t xs, int64_t nb, float *col)
{
	int64_t P = g->oh * g->ow, ld = nb * P;
	for (int64_t c = 0; c < g->c; c++)
		for (int64_t i = 0; i < g->kh; i++)
			for (int64_t j = 0; j < g->kw; j++) {
				float *row = col + ((c * g->kh + i) * g->kw + j) * ld;
				int64_t off = j * g->dw - g->pw, lo, hi;
				win_range(g->ow, g->w, g->sw, off, &lo, &hi);
				for (int64_t n = 0; n < nb; n++) {
					const float *xp = x + n * xs + c * g->h * g->w;
					for (int64_t oy = 0; oy < g->oh; oy++) {
						float *d = row + n * P + oy * g->ow;
						int64_t iy = oy * g->sh - g->ph + i * g->dh;
						if (iy < 0 || iy >= g->h) {
							memset(d, 0, (size_t)g->ow * sizeof *d);
							continue;
						}
						const float *xr = xp + iy * g->w + off;
						memset(d, 0, (size_t)lo * sizeof *d);
						if (g->sw == 1)
							memcpy(d + lo, xr + lo, (size_t)(hi - lo) * sizeof *d);
						else
							for (int64_t ox = lo; ox < hi; ox++)
								d[ox] = xr[ox * g->sw];
						memset(d + hi, 0, (size_t)(g->ow - hi) * sizeof *d);
					}
				}
			}
}

/* The adjoint of im2col: x_n[c][iy][ix] += every column entry that im2col read from there. */
static void col2im(const struct win *g, const float *col, int64_t nb, float *x, int64_t xs)
{
	int64_t P = g->oh * g->ow, ld = nb * P;
	for (int64_t c = 0; c < g->c; c++)
		for (int64_t i = 0; i < g->kh; i++)
			for (int64_t j = 0; j < g->kw; j++) {
				const float *row = col + ((c * g->kh + i) * g->kw + j) * ld;
				int64_t off = j * g->dw - g->pw, lo, hi;
				win_range(g->ow, g->w, g->sw, off, &lo, &hi);
				for (int64_t n = 0; n < nb; n++) {
					float *xp = x + n * xs + c * g->h * g->w;
					for (int64_t oy = 0; oy < g->oh; oy++) {
						int64_t iy = oy * g->sh - g->ph + i * g->dh;
						if (iy < 0 || iy >= g->h)
							continue;
						const float *d = row + n * P + oy * g->ow;
						float *xr = xp + iy * g->w + off;
						for (int64_t ox = lo; ox < hi; ox++)
							xr[ox * g->sw] += d[ox];
					}
				}
			}
}

/* t[c][n*P + p] = x[b0 + n][c][p]: a chunk of NCHW images as channel rows. */
static void nchw_to_rows(const float *x, int64_t b0, int64_t nb, int64_t C, int64_t P, float *t)
{
	for (int64_t n = 0; n < nb; n++)
		for (int64_t c = 0; c < C; c++)
			memcpy(t + c * nb * P + n * P, x + ((b0 + n) * C + c) * P,
			       (size_t)P * sizeof *t);
}

/* x[b0 + n][c][p] += t[c][n*P + p] */
static void rows_add_to_nchw(const float *t, int64_t b0, int64_t nb, int64_t C, int64_t P,
			     float *x)
{
	for (int64_t n = 0; n < nb; n++)
		for (int64_t c = 0; c < C; c++)
			px_axpy(P, 1.0f, t + c * nb * P + n * P, x + ((b0 + n) * C + c) * P);
}

/* Examples per chunk so that a [rows, nb*P] buffer stays under COL_FLOATS. */
static int64_t chunk_examples(int64_t B, int64_t rows, int64_t P)
{
	int64_t nb = COL_FLOATS / (rows * P > 0 ? rows * P : 1);
	return nb < 1 ? 1 : nb > B ? B : nb;
}

/* ------------------------------------------------------------------ conv2d and conv_transpose2d */
struct conv {
	int64_t cin, cout, groups;
	int64_t h, w, oh, ow;            /* input and output planes */
	struct win g;                    /* one group's window sweep (big side = image side) */
	struct px_param *weight, *bias;  /* bias NULL when `bias: false` */
	const struct px_host *host;
	char node[128];                  /* for figures */
};

static const struct px_param_spec conv2d_schema[] = {
	{"out_channels", PX_T_INT, NULL, 1, 1e9, NULL, "output channels"},
	{"kernel", PX_T_INTS, NULL, 1, 1e6, NULL, "kernel size: k or [kh, kw]"},
	{"stride", PX_T_INTS, "1", 1, 1e6, NULL, "stride: s or [sh, sw]"},
	{"padding", PX_T_INTS, "0", 0, 1e6, NULL, "zero padding on each side: p or [ph, pw]"},
	{"dilation", PX_T_INTS, "1", 1, 1e6, NULL, "spacing of kernel taps: d or [dh, dw]"},
	{"groups", PX_T_INT, "1", 1, 1e9, NULL, "channel groups (must divide in and out channels)"},
	{"bias", PX_T_BOOL, "true", 0, 0, NULL, "learn an additive bias per output channel"},
	{NULL, 0, NULL, 0, 0, NULL, NULL},
};

static const struct px_param_spec conv_transpose2d_schema[] = {
	{"out_channels", PX_T_INT, NULL, 1, 1e9, NULL, "output channels"},
	{"kernel", PX_T_INTS, NULL, 1, 1e6, NULL, "kernel size: k or [kh, kw]"},
	{"stride", PX_T_INTS, "1", 1, 1e6, NULL, "stride: s or [sh, sw]"},
	{"padding", PX_T_INTS, "0", 0, 1e6, NULL,
	 "padding of the equivalent conv2d: trims p rows/columns off each side (docs/conv.md)"},
	{"output_padding", PX_T_INTS, "0", 0, 1e6, NULL,
	 "extra rows/columns on one side of the output (< stride or < dilation)"},
	{"dilation", PX_T_INTS, "1", 1, 1e6, NULL, "spacing of kernel taps: d or [dh, dw]"},
	{"groups", PX_T_INT, "1", 1, 1e9, NULL, "channel groups (must divide in and out channels)"},
	{"bias", PX_T_BOOL, "true", 0, 0, NULL, "learn an additive bias per output channel"},
	{NULL, 0, NULL, 0, 0, NULL, NULL},
};

static const struct px_port_spec image_in[] = {
	{"x", 0, "images [B,C,H,W]"},
	{NULL, 0, NULL},
};

static const struct px_port_spec image_out[] = {
	{"out", 0, "images [B,C',H',W']"},
	{NULL, 0, NULL},
};

/* Reads the options common to both convolutions and checks the input. */
static int conv_setup(struct px_build *b, struct conv *c, struct px_error *err)
{
	const struct px_config *cfg = b->cfg;
	char s[96];
	int64_t k[2], st[2], pd[2], dl[2];
	int rc;
	if (b->n_in < 1 || b->in[0].ndim != 4)
		return px_build_error(b, err, PX_ERR_SHAPE,
				      "expects an input [B,C,H,W] (rank 4), got %s (rank %d)",
				      px_shape_str(&b->in[0], s, sizeof s), b->in[0].ndim);
	if ((rc = conv_pair(cfg, "kernel", 1, k, err)) || (rc = conv_pair(cfg, "stride", 1, st, err)) ||
	    (rc = conv_pair(cfg, "padding", 0, pd, err)) ||
	    (rc = conv_pair(cfg, "dilation", 1, dl, err)))
		return rc;
	c->host = b->host;
	snprintf(c->node, sizeof c->node, "%s", b->node);
	c->cin = b->in[0].dim[1];
	c->h = b->in[0].dim[2];
	c->w = b->in[0].dim[3];
	c->cout = px_config_int(cfg, "out_channels");
	c->groups = px_config_int(cfg, "groups");
	if (c->cin % c->groups || c->cout % c->groups)
		return px_config_error(cfg, err, PX_ERR_INVALID, "groups",
				       "groups %lld must divide both the input channels %lld (input %s) "
				       "and out_channels %lld",
				       (long long)c->groups, (long long)c->cin,
				       px_shape_str(&b->in[0], s, sizeof s), (long long)c->cout);
	struct win *g = &c->g;
	g->kh = k[0], g->kw = k[1], g->sh = st[0], g->sw = st[1];
	g->ph = pd[0], g->pw = pd[1], g->dh = dl[0], g->dw = dl[1];
	return 0;
}

/* PyTorch's default: kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in)), bias too. */
static int conv_params(struct px_build *b, struct conv *c, const int64_t wshape[4], int64_t fan_in,
		       struct px_error *err)
{
	float bound = 1.0f / sqrtf((float)fan_in);
	c->weight = px_build_param(b, "weight", 4, wshape, err);
	if (!c->weight)
		return err->code ? err->code : PX_ERR_NOMEM;
	px_init_uniform(c->weight->value, b->rng, bound);
	if (px_config_bool(b->cfg, "bias")) {
		c->bias = px_build_param(b, "bias", 1, &c->cout, err);
		if (!c->bias)
			return err->code ? err->code : PX_ERR_NOMEM;
		px_init_uniform(c->bias->value, b->rng, bound);
	}
	return 0;
}

static int conv2d_create(struct px_build *b, void **self, struct px_shape *out,
			 struct px_error *err)
{
	struct conv *c = calloc(1, sizeof *c);
	char s[96];
	if (!c)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	*self = c;
	int rc = conv_setup(b, c, err);
	if (rc)
		return rc;
	struct win *g = &c->g;
	/* out = floor((in + 2p - d(k-1) - 1) / s) + 1 */
	int64_t eh = g->dh * (g->kh - 1) + 1, ew = g->dw * (g->kw - 1) + 1;
	if (c->h + 2 * g->ph < eh || c->w + 2 * g->pw < ew)
		return px_build_error(b, err, PX_ERR_SHAPE,
				      "input %s is smaller than the kernel: %lldx%lld with padding "
				      "[%lld,%lld] and dilation [%lld,%lld] spans %lldx%lld",
				      px_shape_str(&b->in[0], s, sizeof s), (long long)g->kh,
				      (long long)g->kw, (long long)g->ph, (long long)g->pw,
				      (long long)g->dh, (long long)g->dw, (long long)eh, (long long)ew);
	c->oh = (c->h + 2 * g->ph - eh) / g->sh + 1;
	c->ow = (c->w + 2 * g->pw - ew) / g->sw + 1;
	g->c = c->cin / c->groups;
	g->h = c->h, g->w = c->w, g->oh = c->oh, g->ow = c->ow;
	int64_t ws[4] = {c->cout, g->c, g->kh, g->kw};
	rc = conv_params(b, c, ws, g->c * g->kh * g->kw, err);
	if (rc)
		return rc;
	*out = (struct px_shape){.ndim = 4, .dim = {-1, c->cout, c->oh, c->ow}};
	return 0;
}

/* The runtime input against the built [B,C,H,W]; the error names both shapes. */
int conv_check_input(const struct px_tensor *x, int64_t C, int64_t H, int64_t W,
		     struct px_error *err)
{
	if (x->ndim == 4 && x->shape[1] == C && x->shape[2] == H && x->shape[3] == W)
		return 0;
	struct px_shape s;
	char buf[96];
	px_tensor_shape(x, &s);
	return px_error_set(err, PX_ERR_SHAPE, "input %s does not match the built [B,%lld,%lld,%lld]",
			    px_shape_str(&s, buf, sizeof buf), (long long)C, (long long)H,
			    (long long)W);
}

/* Report figure (ABI 1.1, a report's figure pass only), when this conv2d scores every pixel
 * for the label's classes (output [B, classes, H, W] over labels [B, H, W]): one example per
 * column; rows: the image, the true mask over it, the predicted (argmax) mask over it. Class
 * 0 (background) is left untinted. */
static void seg_figure(const struct conv *c, struct px_arena *a, const struct px_tensor *y)
{
	static const unsigned char pal[7][3] = {
		{230, 25, 75}, {60, 180, 75}, {0, 130, 200}, {245, 130, 48}, {145, 30, 180},
		{70, 240, 240}, {240, 50, 230},
	};
	const struct px_host *h = c->host;
	const struct px_figure_batch *fb = PX_HOST_HAS(h, figure_batch) ? h->figure_batch(h) : NULL;
	const struct px_tensor *lab = fb ? fb->y : NULL, *img = fb ? fb->x : NULL;
	int64_t B = y->shape[0], C = c->cout, H = c->oh, W = c->ow, n = B < 6 ? B : 6, gap = 2;
	if (!lab || !img || !PX_HOST_HAS(h, figure_image) || fb->n_classes != C || C < 2 ||
	    lab->ndim != 3 || lab->shape[0] != B || lab->shape[1] != H || lab->shape[2] != W ||
	    img->ndim < 3 || img->shape[0] != B || img->shape[img->ndim - 2] != H ||
	    img->shape[img->ndim - 1] != W || n < 1)
		return;
	int64_t IW = n * (W + gap) + gap, IH = 3 * (H + gap) + gap, per = px_tensor_numel(img) / B;
	unsigned char *px = IW <= 4096 && IH <= 4096 ? px_arena_alloc(a, (size_t)(IW * IH * 3)) : NULL;
	if (!px)
		return;
	memset(px, 255, (size_t)(IW * IH * 3));
	for (int64_t b = 0; b < n; b++) {
		const float *v = img->data + b * per;   /* the first channel, stretched */
		float lo = v[0], hi = v[0];
		for (int64_t i = 0; i < H * W; i++) {
			lo = v[i] < lo ? v[i] : lo;
			hi = v[i] > hi ? v[i] : hi;
		}
		for (int r = 0; r < 3; r++)
			for (int64_t i = 0; i < H * W; i++) {
				int64_t k = 0;   /* r = 1: the label; r = 2: argmax_k y[b, k, i] */
				if (r == 1)
					k = (int64_t)lab->data[b * H * W + i];
				for (int64_t q = 1; r == 2 && q < C; q++)
					if (y->data[(b * C + q) * H * W + i] > y->data[(b * C + k) * H * W + i])
						k = q;
				float g = hi > lo ? 255.0f * (v[i] - lo) / (hi - lo) : 0.0f;
				unsigned char *o = px + ((gap + r * (H + gap) + i / W) * IW + gap +
							 b * (W + gap) + i % W) * 3;
				for (int ch = 0; ch < 3; ch++)   /* 45% image, 55% class colour */
					o[ch] = (unsigned char)lroundf(k > 0 && k < C ?
						0.45f * g + 0.55f * pal[(k - 1) % 7][ch] : g);
			}
	}
	h->figure_image(h, c->node, "segmentation: images, true masks, predicted masks (rows), "
			"one example per column", (int)IW, (int)IH, 3, px);
}

/* y[b] = W (*) x[b] + bias: per chunk, Yt[O, nb*P] = W_g[Og, K] @ col_g[K, nb*P] */
static int conv2d_forward(void *self, struct px_fwd *f, struct px_error *err)
{
	struct conv *c = self;
	const struct px_tensor *x = f->in[0];
	int rc = conv_check_input(x, c->cin, c->h, c->w, err);
	if (rc)
		return rc;
	int64_t B = x->shape[0], P = c->oh * c->ow, G = c->groups, Og = c->cout / G;
	int64_t K = c->g.c * c->g.kh * c->g.kw, xs = c->cin * c->h * c->w;
	int64_t shape[4] = {B, c->cout, c->oh, c->ow};
	struct px_tensor *y = px_tensor_new(f->arena, 4, shape);
	int64_t nb = chunk_examples(B, K > c->cout ? K : c->cout, P);
	float *col = px_arena_alloc(f->arena, (size_t)(K * nb * P) * sizeof(float));
	float *yt = px_arena_alloc(f->arena, (size_t)(c->cout * nb * P) * sizeof(float));
	if (!y || !col || !yt)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	const float *wt = c->weight->value->data;
	for (int64_t b0 = 0; b0 < B; b0 += nb) {
		int64_t n = B - b0 < nb ? B - b0 : nb, ld = n * P;
		for (int64_t g = 0; g < G; g++) {
			im2col(&c->g, x->data + b0 * xs + g * c->g.c * c->h * c->w, xs, n, col);
			px_gemm(false, false, Og, ld, K, 1.0f, wt + g * Og * K, K, col, ld, 0.0f,
				yt + g * Og * ld, ld);
		}
		for (int64_t o = 0; o < c->cout; o++) {
			float bo = c->bias ? c->bias->value->data[o] : 0.0f;
			for (int64_t i = 0; i < n; i++) {
				float *dst = y->data + ((b0 + i) * c->cout + o) * P;
				const float *src = yt + o * ld + i * P;
				for (int64_t p = 0; p < P; p++)
					dst[p] = src[p] + bo;
			}
		}
	}
	f->out[0] = y;
	if (!f->train)
		seg_figure(c, f->arena, y);
	return 0;
}

/* dW_g += dYt_g @ col_g^T;  dcol_g = W_g^T @ dYt_g, col2im into dx;  dbias += sum dy */
static int conv2d_backward(void *self, struct px_bwd *bw, struct px_error *err)
{
	struct conv *c = self;
	const struct px_tensor *x = bw->in[0], *dy = bw->d_out[0];
	if (!dy)
		return 0;
	int64_t B = x->shape[0], P = c->oh * c->ow, G = c->groups, Og = c->cout / G;
	int64_t K = c->g.c * c->g.kh * c->g.kw, xs = c->cin * c->h * c->w;
	float *dx = bw->d_in[0] ? bw->d_in[0]->data : NULL;
	int64_t nb = chunk_examples(B, K > c->cout ? K : c->cout, P);
	float *col = px_arena_alloc(bw->arena, (size_t)(K * nb * P) * sizeof(float));
	float *dyt = px_arena_alloc(bw->arena, (size_t)(c->cout * nb * P) * sizeof(float));
	if (!col || !dyt)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	const float *wt = c->weight->value->data;
	float *dw = c->weight->grad->data;
	for (int64_t b0 = 0; b0 < B; b0 += nb) {
		int64_t n = B - b0 < nb ? B - b0 : nb, ld = n * P;
		nchw_to_rows(dy->data, b0, n, c->cout, P, dyt);
		if (c->bias)
			for (int64_t o = 0; o < c->cout; o++) {
				double s = 0;
				for (int64_t p = 0; p < ld; p++)
					s += dyt[o * ld + p];
				c->bias->grad->data[o] += (float)s;
			}
		for (int64_t g = 0; g < G; g++) {
			const float *xg = x->data + b0 * xs + g * c->g.c * c->h * c->w;
			im2col(&c->g, xg, xs, n, col);
			px_gemm(false, true, Og, K, ld, 1.0f, dyt + g * Og * ld, ld, col, ld, 1.0f,
				dw + g * Og * K, K);
			if (!dx)
				continue;
			px_gemm(true, false, K, ld, Og, 1.0f, wt + g * Og * K, K, dyt + g * Og * ld,
				ld, 0.0f, col, ld);
			col2im(&c->g, col, n, dx + b0 * xs + g * c->g.c * c->h * c->w, xs);
		}
	}
	return 0;
}

static int conv_transpose2d_create(struct px_build *b, void **self, struct px_shape *out,
				   struct px_error *err)
{
	struct conv *c = calloc(1, sizeof *c);
	if (!c)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	*self = c;
	int rc = conv_setup(b, c, err);
	if (rc)
		return rc;
	struct win *g = &c->g;
	int64_t op[2];
	if ((rc = conv_pair(b->cfg, "output_padding", 0, op, err)))
		return rc;
	for (int d = 0; d < 2; d++) {
		int64_t s = d ? g->sw : g->sh, dl = d ? g->dw : g->dh;
		if (op[d] >= s && op[d] >= dl)
			return px_config_error(b->cfg, err, PX_ERR_INVALID, "output_padding",
					       "output_padding %lld must be smaller than the stride "
					       "%lld or the dilation %lld (%s)",
					       (long long)op[d], (long long)s, (long long)dl,
					       d ? "width" : "height");
	}
	/* out = (in - 1) s - 2p + d(k - 1) + output_padding + 1 */
	c->oh = (c->h - 1) * g->sh - 2 * g->ph + g->dh * (g->kh - 1) + op[0] + 1;
	c->ow = (c->w - 1) * g->sw - 2 * g->pw + g->dw * (g->kw - 1) + op[1] + 1;
	if (c->oh < 1 || c->ow < 1) {
		char s[96];
		return px_build_error(b, err, PX_ERR_SHAPE,
				      "input %s gives an empty output %lldx%lld: padding [%lld,%lld] "
				      "is too large", px_shape_str(&b->in[0], s, sizeof s),
				      (long long)c->oh, (long long)c->ow, (long long)g->ph,
				      (long long)g->pw);
	}
	g->c = c->cout / c->groups;
	g->h = c->oh, g->w = c->ow, g->oh = c->h, g->ow = c->w;
	int64_t ws[4] = {c->cin, g->c, g->kh, g->kw};
	rc = conv_params(b, c, ws, g->c * g->kh * g->kw, err);
	if (rc)
		return rc;
	*out = (struct px_shape){.ndim = 4, .dim = {-1, c->cout, c->oh, c->ow}};
	return 0;
}

/* y = col2im(W_g^T @ Xt_g) + bias: conv2d's input gradient with x as the output gradient */
static int conv_transpose2d_forward(void *self, struct px_fwd *f, struct px_error *err)
{
	struct conv *c = self;
	const struct px_tensor *x = f->in[0];
	int rc = conv_check_input(x, c->cin, c->h, c->w, err);
	if (rc)
		return rc;
	int64_t B = x->shape[0], P = c->h * c->w, G = c->groups, Cg = c->cin / G;
	int64_t K = c->g.c * c->g.kh * c->g.kw, ys = c->cout * c->oh * c->ow;
	int64_t shape[4] = {B, c->cout, c->oh, c->ow};
	struct px_tensor *y = px_tensor_new(f->arena, 4, shape);
	int64_t nb = chunk_examples(B, K > c->cin ? K : c->cin, P);
	float *col = px_arena_alloc(f->arena, (size_t)(K * nb * P) * sizeof(float));
	float *xt = px_arena_alloc(f->arena, (size_t)(c->cin * nb * P) * sizeof(float));
	if (!y || !col || !xt)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	const float *wt = c->weight->value->data;
	for (int64_t b0 = 0; b0 < B; b0 += nb) {
		int64_t n = B - b0 < nb ? B - b0 : nb, ld = n * P;
		nchw_to_rows(x->data, b0, n, c->cin, P, xt);
		for (int64_t g = 0; g < G; g++) {
			px_gemm(true, false, K, ld, Cg, 1.0f, wt + g * Cg * K, K, xt + g * Cg * ld,
				ld, 0.0f, col, ld);
			col2im(&c->g, col, n, y->data + b0 * ys + g * c->g.c * c->oh * c->ow, ys);
		}
	}
	if (c->bias) {
		int64_t Po = c->oh * c->ow;
		for (int64_t i = 0; i < B * c->cout; i++) {
			float bo = c->bias->value->data[i % c->cout];
			float *dst = y->data + i * Po;
			for (int64_t p = 0; p < Po; p++)
				dst[p] += bo;
		}
	}
	f->out[0] = y;
	return 0;
}

/* dcol_g = im2col(dy_g);  dW_g += Xt_g @ dcol_g^T;  dXt_g = W_g @ dcol_g;  dbias += sum dy */
static int conv_transpose2d_backward(void *self, struct px_bwd *bw, struct px_error *err)
{
	struct conv *c = self;
	const struct px_tensor *x = bw->in[0], *dy = bw->d_out[0];
	if (!dy)
		return 0;
	int64_t B = x->shape[0], P = c->h * c->w, G = c->groups, Cg = c->cin / G;
	int64_t K = c->g.c * c->g.kh * c->g.kw, ys = c->cout * c->oh * c->ow;
	float *dx = bw->d_in[0] ? bw->d_in[0]->data : NULL;
	int64_t nb = chunk_examples(B, K > c->cin ? K : c->cin, P);
	float *col = px_arena_alloc(bw->arena, (size_t)(K * nb * P) * sizeof(float));
	float *xt = px_arena_alloc(bw->arena, (size_t)(c->cin * nb * P) * sizeof(float));
	float *dxt = px_arena_alloc(bw->arena, (size_t)(c->cin * nb * P) * sizeof(float));
	if (!col || !xt || !dxt)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	const float *wt = c->weight->value->data;
	float *dw = c->weight->grad->data;
	if (c->bias) {
		int64_t Po = c->oh * c->ow;
		for (int64_t i = 0; i < B * c->cout; i++) {
			double s = 0;
			const float *src = dy->data + i * Po;
			for (int64_t p = 0; p < Po; p++)
				s += src[p];
			c->bias->grad->data[i % c->cout] += (float)s;
		}
	}
	for (int64_t b0 = 0; b0 < B; b0 += nb) {
		int64_t n = B - b0 < nb ? B - b0 : nb, ld = n * P;
		nchw_to_rows(x->data, b0, n, c->cin, P, xt);
		for (int64_t g = 0; g < G; g++) {
			im2col(&c->g, dy->data + b0 * ys + g * c->g.c * c->oh * c->ow, ys, n, col);
			px_gemm(false, true, Cg, K, ld, 1.0f, xt + g * Cg * ld, ld, col, ld, 1.0f,
				dw + g * Cg * K, K);
			if (dx)
				px_gemm(false, false, Cg, ld, K, 1.0f, wt + g * Cg * K, K, col, ld, 0.0f,
					dxt + g * Cg * ld, ld);
		}
		if (dx)
			rows_add_to_nchw(dxt, b0, n, c->cin, P, dx);
	}
	return 0;
}

static void conv_destroy(void *self)
{
	free(self);
}

static const struct px_layer_ops conv2d_ops = {
	.struct_size = sizeof(struct px_layer_ops),
	.kind = "conv2d",
	.doc = "2-D convolution over NCHW images (weight [out, in/groups, kh, kw])",
	.schema = conv2d_schema,
	.inputs = image_in,
	.outputs = image_out,
	.create = conv2d_create,
	.forward = conv2d_forward,
	.backward = conv2d_backward,
	.destroy = conv_destroy,
};

static const struct px_layer_ops conv_transpose2d_ops = {
	.struct_size = sizeof(struct px_layer_ops),
	.kind = "conv_transpose2d",
	.doc = "2-D transposed convolution, the adjoint of conv2d (weight [in, out/groups, kh, kw])",
	.schema = conv_transpose2d_schema,
	.inputs = image_in,
	.outputs = image_out,
	.create = conv_transpose2d_create,
	.forward = conv_transpose2d_forward,
	.backward = conv_transpose2d_backward,
	.destroy = conv_destroy,
};

/* ------------------------------------------------------------------ batchnorm2d */
struct bnorm {
	int64_t c, h, w;
	double eps, momentum;
	struct px_param *weight, *bias;               /* NULL when affine: false */
	struct px_param *running_mean, *running_var, *num_batches_tracked;
	float *mean, *invstd;                         /* [c] of the last forward (owned) */
	bool train;                                   /* mode of the last forward */
};

static const struct px_param_spec batchnorm2d_schema[] = {
	{"eps", PX_T_FLOAT, "1e-5", 0, PX_UNBOUNDED, NULL, "added to the variance"},
	{"momentum", PX_T_FLOAT, "0.1", 0, 1, NULL,
	 "running = (1 - momentum) running + momentum batch"},
	{"affine", PX_T_BOOL, "true", 0, 0, NULL, "learn a per-channel scale (weight) and shift (bias)"},
	{NULL, 0, NULL, 0, 0, NULL, NULL},
};

static int batchnorm2d_create(struct px_build *b, void **self, struct px_shape *out,
			      struct px_error *err)
{
	struct bnorm *n = calloc(1, sizeof *n);
	char s[96];
	if (!n)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	*self = n;
	if (b->n_in < 1 || b->in[0].ndim != 4)
		return px_build_error(b, err, PX_ERR_SHAPE,
				      "expects an input [B,C,H,W] (rank 4), got %s (rank %d)",
				      px_shape_str(&b->in[0], s, sizeof s), b->in[0].ndim);
	n->c = b->in[0].dim[1];
	n->h = b->in[0].dim[2];
	n->w = b->in[0].dim[3];
	n->eps = px_config_float(b->cfg, "eps");
	n->momentum = px_config_float(b->cfg, "momentum");
	n->mean = calloc((size_t)n->c, sizeof *n->mean);
	n->invstd = calloc((size_t)n->c, sizeof *n->invstd);
	if (!n->mean || !n->invstd)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	if (px_config_bool(b->cfg, "affine")) {
		n->weight = px_build_param(b, "weight", 1, &n->c, err);
		if (!n->weight || !(n->bias = px_build_param(b, "bias", 1, &n->c, err)))
			return err->code ? err->code : PX_ERR_NOMEM;
		px_init_fill(n->weight->value, 1.0f);
	}
	n->running_mean = px_build_buffer(b, "running_mean", 1, &n->c, err);
	n->running_var = n->running_mean ? px_build_buffer(b, "running_var", 1, &n->c, err) : NULL;
	n->num_batches_tracked = n->running_var ?
		px_build_buffer(b, "num_batches_tracked", 0, NULL, err) : NULL;
	if (!n->num_batches_tracked)
		return err->code ? err->code : PX_ERR_NOMEM;
	px_init_fill(n->running_var->value, 1.0f);
	*out = b->in[0];
	out->dim[0] = -1;
	return 0;
}

/* y = (x - mean) / sqrt(var + eps) * weight + bias; batch statistics in training (and
 * running = (1-m) running + m batch, with the unbiased variance), running ones in eval */
static int batchnorm2d_forward(void *self, struct px_fwd *f, struct px_error *err)
{
	struct bnorm *n = self;
	const struct px_tensor *x = f->in[0];
	int rc = conv_check_input(x, n->c, n->h, n->w, err);
	if (rc)
		return rc;
	int64_t B = x->shape[0], P = n->h * n->w, cnt = B * P;
	struct px_tensor *y = px_tensor_like(f->arena, x);
	if (!y)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	n->train = f->train;
	for (int64_t c = 0; c < n->c; c++) {
		double mean, var;
		if (f->train) {
			double s = 0, ss = 0;
			for (int64_t b = 0; b < B; b++) {
				const float *xp = x->data + (b * n->c + c) * P;
				for (int64_t p = 0; p < P; p++)
					s += xp[p];
			}
			mean = s / (double)cnt;
			for (int64_t b = 0; b < B; b++) {
				const float *xp = x->data + (b * n->c + c) * P;
				for (int64_t p = 0; p < P; p++)
					ss += (xp[p] - mean) * (xp[p] - mean);
			}
			var = ss / (double)cnt;
			float *rm = &n->running_mean->value->data[c], *rv = &n->running_var->value->data[c];
			double unbiased = cnt > 1 ? ss / (double)(cnt - 1) : var;
			*rm = (float)((1 - n->momentum) * *rm + n->momentum * mean);
			*rv = (float)((1 - n->momentum) * *rv + n->momentum * unbiased);
		} else {
			mean = n->running_mean->value->data[c];
			var = n->running_var->value->data[c];
		}
		n->mean[c] = (float)mean;
		n->invstd[c] = (float)(1.0 / sqrt(var + n->eps));
		float a = n->invstd[c] * (n->weight ? n->weight->value->data[c] : 1.0f);
		float sh = (n->bias ? n->bias->value->data[c] : 0.0f) - n->mean[c] * a;
		for (int64_t b = 0; b < B; b++) {
			const float *xp = x->data + (b * n->c + c) * P;
			float *yp = y->data + (b * n->c + c) * P;
			for (int64_t p = 0; p < P; p++)
				yp[p] = xp[p] * a + sh;
		}
	}
	if (f->train)
		n->num_batches_tracked->value->data[0] += 1.0f;
	f->out[0] = y;
	return 0;
}

/* training: dx = w invstd / N (N dy - sum dy - xhat sum(dy xhat)); eval: dx = w invstd dy;
 * dweight += sum(dy xhat), dbias += sum dy */
static int batchnorm2d_backward(void *self, struct px_bwd *bw, struct px_error *err)
{
	struct bnorm *n = self;
	const struct px_tensor *x = bw->in[0], *dy = bw->d_out[0];
	(void)err;
	if (!dy)
		return 0;
	int64_t B = x->shape[0], P = n->h * n->w;
	double cnt = (double)(B * P);
	float *dx = bw->d_in[0] ? bw->d_in[0]->data : NULL;
	for (int64_t c = 0; c < n->c; c++) {
		float mu = n->mean[c], is = n->invstd[c];
		double sdy = 0, sdyx = 0;
		for (int64_t b = 0; b < B; b++) {
			const float *xp = x->data + (b * n->c + c) * P, *g = dy->data + (b * n->c + c) * P;
			for (int64_t p = 0; p < P; p++) {
				sdy += g[p];
				sdyx += (double)g[p] * (xp[p] - mu) * is;
			}
		}
		if (n->weight) {
			n->weight->grad->data[c] += (float)sdyx;
			n->bias->grad->data[c] += (float)sdy;
		}
		if (!dx)
			continue;
		float a = is * (n->weight ? n->weight->value->data[c] : 1.0f);
		float mdy = n->train ? (float)(sdy / cnt) : 0.0f;
		float mdyx = n->train ? (float)(sdyx / cnt) : 0.0f;
		for (int64_t b = 0; b < B; b++) {
			const float *xp = x->data + (b * n->c + c) * P, *g = dy->data + (b * n->c + c) * P;
			float *d = dx + (b * n->c + c) * P;
			for (int64_t p = 0; p < P; p++)
				d[p] += a * (g[p] - mdy - (xp[p] - mu) * is * mdyx);
		}
	}
	return 0;
}

static void batchnorm2d_destroy(void *self)
{
	struct bnorm *n = self;
	if (!n)
		return;
	free(n->mean);
	free(n->invstd);
	free(n);
}

static const struct px_layer_ops batchnorm2d_ops = {
	.struct_size = sizeof(struct px_layer_ops),
	.kind = "batchnorm2d",
	.doc = "batch normalisation over N,H,W per channel (running statistics in eval)",
	.schema = batchnorm2d_schema,
	.inputs = image_in,
	.outputs = image_out,
	.create = batchnorm2d_create,
	.forward = batchnorm2d_forward,
	.backward = batchnorm2d_backward,
	.destroy = batchnorm2d_destroy,
};

/* ------------------------------------------------------------------ plugin */
static const struct px_layer_ops *const layers[] = {
	&conv2d_ops, &conv_transpose2d_ops, &px_maxpool2d_ops, &px_avgpool2d_ops,
	&px_maxunpool2d_ops, &px_upsample2d_ops, &batchnorm2d_ops, NULL,
};

static const struct px_source_ops *const sources[] = {&px_shapes_source, NULL};

static const struct px_plugin plugin = {
	.struct_size = sizeof(struct px_plugin),
	.abi_major = PX_ABI_MAJOR,
	.abi_minor = PX_ABI_MINOR,
	.name = "conv",
	.version = "0.1.0",
	.doc = "convolutional layers: conv2d, conv_transpose2d, pooling, unpooling, upsampling, "
	       "batchnorm2d; the `shapes` segmentation data source",
	.layers = layers,
	.sources = sources,
};

PX_PLUGIN_ENTRY(plugin)
