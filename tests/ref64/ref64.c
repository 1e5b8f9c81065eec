/* float64 reference layers and losses: see ref64.h. Every formula is written out per element
 * from its definition; nothing here shares code with the float32 kernels. */
#include "ref64.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ tensors */
struct r64 *r64_new(int ndim, const int64_t *shape)
{
	struct r64 *t = calloc(1, sizeof *t);
	int64_t n = 1;
	if (!t)
		abort();
	t->ndim = ndim;
	for (int d = 0; d < ndim; d++) {
		t->shape[d] = shape[d];
		n *= shape[d];
	}
	t->d = calloc((size_t)(n ? n : 1), sizeof *t->d);
	if (!t->d)
		abort();
	return t;
}

struct r64 *r64_like(const struct r64 *t)
{
	struct r64 *r = r64_new(t->ndim, t->shape);
	r->lengths = t->lengths;
	return r;
}

void r64_free(struct r64 *t)
{
	if (t) {
		free(t->d);
		free(t);
	}
}

int64_t r64_numel(const struct r64 *t)
{
	int64_t n = 1;
	for (int d = 0; d < t->ndim; d++)
		n *= t->shape[d];
	return n;
}

int64_t r64_len(const struct r64 *t, int64_t b)
{
	return t->lengths ? t->lengths[b] : t->shape[1];
}

bool r64_valid(const struct r64 *t, int64_t i)
{
	if (!t->lengths || t->ndim < 2 || t->shape[0] == 0)
		return true;
	int64_t per_ex = r64_numel(t) / t->shape[0];
	int64_t per_step = per_ex / t->shape[1];
	return (i % per_ex) / per_step < t->lengths[i / per_ex];
}

void ref_layer_free(struct ref_layer *l)
{
	for (int k = 0; k < l->n_params; k++) {
		r64_free(l->param[k]);
		r64_free(l->grad[k]);
	}
	if (l->cache_free)
		l->cache_free(l);
	free(l->cache);
	memset(l, 0, sizeof *l);
}

/* the shape of t with the last dim replaced */
static struct r64 *new_last(const struct r64 *t, int64_t last)
{
	int64_t s[R64_MAX_DIMS];
	memcpy(s, t->shape, sizeof s);
	s[t->ndim - 1] = last;
	struct r64 *r = r64_new(t->ndim, s);
	r->lengths = t->lengths;
	return r;
}

/* row r (of width w, the last dim) of t is in a valid step; `ragged` selects lengths at all */
static bool row_valid(const struct r64 *t, int64_t r, int64_t w, bool ragged)
{
	return !ragged || r64_valid(t, r * w);
}

/* ------------------------------------------------------------------ linear */
/* y[r,u] = sum_f x[r,f] W[u,f] + b[u] on valid rows (ragged: rank >= 3 with lengths) */
static void linear_fwd(struct ref_layer *l, int n_in, struct r64 *const *in, struct r64 **out)
{
	(void)n_in;
	const struct r64 *x = in[0], *w = l->param[0], *b = l->opt[0] ? l->param[1] : NULL;
	int64_t F = x->shape[x->ndim - 1], U = w->shape[0], rows = r64_numel(x) / F;
	bool ragged = x->lengths && x->ndim >= 3;
	struct r64 *y = out[0] = new_last(x, U);
	for (int64_t r = 0; r < rows; r++) {
		if (!row_valid(x, r, F, ragged))
			continue;
		for (int64_t u = 0; u < U; u++) {
			double s = b ? b->d[u] : 0;
			for (int64_t f = 0; f < F; f++)
				s += x->d[r * F + f] * w->d[u * F + f];
			y->d[r * U + u] = s;
		}
	}
}

/* dx[r,f] += sum_u dy[r,u] W[u,f]; dW[u,f] += sum_r dy[r,u] x[r,f]; db[u] += sum_r dy[r,u] */
static void linear_bwd(struct ref_layer *l, int n_in, struct r64 *const *in,
		       struct r64 *const *out, struct r64 *const *d_out, struct r64 **d_in)
{
	(void)n_in;
	(void)out;
	const struct r64 *x = in[0], *w = l->param[0], *dy = d_out[0];
	int64_t F = x->shape[x->ndim - 1], U = w->shape[0], rows = r64_numel(x) / F;
	bool ragged = x->lengths && x->ndim >= 3;
	for (int64_t r = 0; r < rows; r++) {
		if (!row_valid(x, r, F, ragged))
			continue;
		for (int64_t u = 0; u < U; u++) {
			double g = dy->d[r * U + u];
			for (int64_t f = 0; f < F; f++) {
				if (d_in[0])
					d_in[0]->d[r * F + f] += g * w->d[u * F + f];
				l->grad[0]->d[u * F + f] += g * x->d[r * F + f];
			}
			if (l->opt[0])
				l->grad[1]->d[u] += g;
		}
	}
}

void ref_linear(struct ref_layer *l, bool bias)
{
	l->kind = "linear";
	l->n_out = 1;
	l->opt[0] = bias;
	l->forward = linear_fwd;
	l->backward = linear_bwd;
}

/* ------------------------------------------------------------------ activations */
enum act { ACT_RELU, ACT_TANH, ACT_SIGMOID };

static double act(int a, double x)
{
	switch (a) {
	case ACT_RELU: return x > 0 ? x : 0;
	case ACT_TANH: return tanh(x);
	default: return 1.0 / (1.0 + exp(-x));
	}
}

/* f'(x) */
static double act_d(int a, double x)
{
	switch (a) {
	case ACT_RELU: return x > 0 ? 1 : 0;
	case ACT_TANH: return 1 - tanh(x) * tanh(x);
	default: {
		double s = 1.0 / (1.0 + exp(-x));
		return s * (1 - s);
	}
	}
}

/* y = f(x) on valid elements */
static void act_fwd(struct ref_layer *l, int n_in, struct r64 *const *in, struct r64 **out)
{
	(void)n_in;
	const struct r64 *x = in[0];
	struct r64 *y = out[0] = r64_like(x);
	for (int64_t i = 0; i < r64_numel(x); i++)
		if (r64_valid(x, i))
			y->d[i] = act((int)l->opt[0], x->d[i]);
}

/* dx += dy f'(x) */
static void act_bwd(struct ref_layer *l, int n_in, struct r64 *const *in, struct r64 *const *out,
		    struct r64 *const *d_out, struct r64 **d_in)
{
	(void)n_in;
	(void)out;
	const struct r64 *x = in[0];
	if (!d_in[0])
		return;
	for (int64_t i = 0; i < r64_numel(x); i++)
		if (r64_valid(x, i))
			d_in[0]->d[i] += d_out[0]->d[i] * act_d((int)l->opt[0], x->d[i]);
}

static void ref_act(struct ref_layer *l, const char *kind, int a)
{
	l->kind = kind;
	l->n_out = 1;
	l->opt[0] = a;
	l->forward = act_fwd;
	l->backward = act_bwd;
}

void ref_relu(struct ref_layer *l)
{
	ref_act(l, "relu", ACT_RELU);
}

void ref_tanh(struct ref_layer *l)
{
	ref_act(l, "tanh", ACT_TANH);
}

void ref_sigmoid(struct ref_layer *l)
{
	ref_act(l, "sigmoid", ACT_SIGMOID);
}

/* ------------------------------------------------------------------ softmax */
/* Rows: the last dim; for a ragged [B,T]: the valid steps of each example (masked softmax). */
static void softmax_rows(const struct r64 *x, int64_t *n_rows, int64_t *starts, int64_t *widths)
{
	int64_t n = 0;
	if (x->ndim == 2 && x->lengths) {
		for (int64_t b = 0; b < x->shape[0]; b++) {
			starts[n] = b * x->shape[1];
			widths[n++] = x->lengths[b];
		}
	} else {
		int64_t w = x->shape[x->ndim - 1];
		for (int64_t r = 0; r < r64_numel(x) / w; r++)
			if (r64_valid(x, r * w)) {
				starts[n] = r * w;
				widths[n++] = w;
			}
	}
	*n_rows = n;
}

/* y_j = exp(x_j) / sum_k exp(x_k) */
static void softmax_fwd(struct ref_layer *l, int n_in, struct r64 *const *in, struct r64 **out)
{
	(void)l;
	(void)n_in;
	const struct r64 *x = in[0];
	struct r64 *y = out[0] = r64_like(x);
	int64_t *st = calloc((size_t)r64_numel(x) + 1, sizeof *st);
	int64_t *wd = calloc((size_t)r64_numel(x) + 1, sizeof *wd), n;
	softmax_rows(x, &n, st, wd);
	for (int64_t r = 0; r < n; r++) {
		double z = 0;
		for (int64_t j = 0; j < wd[r]; j++)
			z += exp(x->d[st[r] + j]);
		for (int64_t j = 0; j < wd[r]; j++)
			y->d[st[r] + j] = exp(x->d[st[r] + j]) / z;
	}
	free(st);
	free(wd);
}

/* dx_i += sum_j dy_j dy_j/dx_i = sum_j dy_j y_j ([i = j] - y_i) */
static void softmax_bwd(struct ref_layer *l, int n_in, struct r64 *const *in,
			struct r64 *const *out, struct r64 *const *d_out, struct r64 **d_in)
{
	(void)l;
	(void)n_in;
	const struct r64 *x = in[0], *y = out[0], *dy = d_out[0];
	if (!d_in[0])
		return;
	int64_t *st = calloc((size_t)r64_numel(x) + 1, sizeof *st);
	int64_t *wd = calloc((size_t)r64_numel(x) + 1, sizeof *wd), n;
	softmax_rows(x, &n, st, wd);
	for (int64_t r = 0; r < n; r++)
		for (int64_t i = 0; i < wd[r]; i++) {
			double g = 0;
			for (int64_t j = 0; j < wd[r]; j++)
				g += dy->d[st[r] + j] * y->d[st[r] + j] * ((i == j) - y->d[st[r] + i]);
			d_in[0]->d[st[r] + i] += g;
		}
	free(st);
	free(wd);
}

void ref_softmax(struct ref_layer *l)
{
	l->kind = "softmax";
	l->n_out = 1;
	l->forward = softmax_fwd;
	l->backward = softmax_bwd;
}

/* ------------------------------------------------------------------ views */
/* y = x (padding zeroed) under a new per-example shape: flatten, reshape, dropout in eval */
static void identity_fwd(struct ref_layer *l, int n_in, struct r64 *const *in, struct r64 **out)
{
	(void)n_in;
	const struct r64 *x = in[0];
	int64_t s[R64_MAX_DIMS] = {x->shape[0]};
	for (int d = 1; d < l->opt[0]; d++)
		s[d] = l->opt[d];
	if (l->opt[0] == 0) {   /* same shape */
		out[0] = r64_like(x);
	} else {
		out[0] = r64_new((int)l->opt[0], s);
		out[0]->lengths = l->opt[0] >= 2 && s[1] == x->shape[1] ? x->lengths : NULL;
	}
	for (int64_t i = 0; i < r64_numel(x); i++)
		out[0]->d[i] = r64_valid(x, i) ? x->d[i] : 0;
}

/* dx += dy on valid elements */
static void identity_bwd(struct ref_layer *l, int n_in, struct r64 *const *in,
			 struct r64 *const *out, struct r64 *const *d_out, struct r64 **d_in)
{
	(void)l;
	(void)n_in;
	(void)out;
	if (!d_in[0])
		return;
	for (int64_t i = 0; i < r64_numel(in[0]); i++)
		if (r64_valid(in[0], i))
			d_in[0]->d[i] += d_out[0]->d[i];
}

void ref_identity(struct ref_layer *l, int out_ndim, const int64_t *out_per_example)
{
	l->kind = "identity";
	l->n_out = 1;
	l->opt[0] = out_ndim;   /* 0: the input's shape */
	for (int d = 1; d < out_ndim && d < 8; d++)
		l->opt[d] = out_per_example[d - 1];
	l->forward = identity_fwd;
	l->backward = identity_bwd;
}

/* ------------------------------------------------------------------ embedding */
/* y[b,t,:] = W[id[b,t], :] on valid steps. The padding_idx row is frozen at zero (PyTorch:
 * zero-initialised, never updated), so its output is written as zero here: the row is then
 * no variable of the reference, and its zero gradient below is the true derivative. */
static void embedding_fwd(struct ref_layer *l, int n_in, struct r64 *const *in, struct r64 **out)
{
	(void)n_in;
	const struct r64 *x = in[0], *w = l->param[0];
	int64_t D = w->shape[1], s[R64_MAX_DIMS];
	memcpy(s, x->shape, sizeof s);
	s[x->ndim] = D;
	struct r64 *y = out[0] = r64_new(x->ndim + 1, s);
	y->lengths = x->lengths;
	for (int64_t i = 0; i < r64_numel(x); i++)
		if (r64_valid(x, i) && (int64_t)x->d[i] != l->opt[0])
			memcpy(y->d + i * D, w->d + (int64_t)x->d[i] * D, (size_t)D * sizeof(double));
}

/* dW[id] += dy (not for padding_idx, nor padded steps) */
static void embedding_bwd(struct ref_layer *l, int n_in, struct r64 *const *in,
			  struct r64 *const *out, struct r64 *const *d_out, struct r64 **d_in)
{
	(void)n_in;
	(void)out;
	(void)d_in;
	const struct r64 *x = in[0];
	int64_t D = l->param[0]->shape[1];
	for (int64_t i = 0; i < r64_numel(x); i++) {
		int64_t id = (int64_t)x->d[i];
		if (!r64_valid(x, i) || id == l->opt[0])
			continue;
		for (int64_t j = 0; j < D; j++)
			l->grad[0]->d[id * D + j] += d_out[0]->d[i * D + j];
	}
}

void ref_embedding(struct ref_layer *l, int64_t padding_idx)
{
	l->kind = "embedding";
	l->n_out = 1;
	l->opt[0] = padding_idx;
	l->forward = embedding_fwd;
	l->backward = embedding_bwd;
}

/* ------------------------------------------------------------------ concat, add */
static const int32_t *first_lengths(int n_in, struct r64 *const *in)
{
	for (int i = 0; i < n_in; i++)
		if (in[i]->lengths)
			return in[i]->lengths;
	return NULL;
}

/* y = [x_1, x_2, ...] along the last dim, valid rows */
static void concat_fwd(struct ref_layer *l, int n_in, struct r64 *const *in, struct r64 **out)
{
	(void)l;
	int64_t total = 0;
	for (int i = 0; i < n_in; i++)
		total += in[i]->shape[in[i]->ndim - 1];
	struct r64 *y = out[0] = new_last(in[0], total);
	y->lengths = first_lengths(n_in, in);
	int64_t rows = r64_numel(y) / total;
	for (int64_t r = 0; r < rows; r++) {
		if (!r64_valid(y, r * total))
			continue;
		int64_t c = 0;
		for (int i = 0; i < n_in; i++) {
			int64_t w = in[i]->shape[in[i]->ndim - 1];
			for (int64_t j = 0; j < w; j++)
				y->d[r * total + c + j] = in[i]->d[r * w + j];
			c += w;
		}
	}
}

/* dx_i += dy[..., columns of x_i] on valid rows */
static void concat_bwd(struct ref_layer *l, int n_in, struct r64 *const *in,
		       struct r64 *const *out, struct r64 *const *d_out, struct r64 **d_in)
{
	(void)l;
	const struct r64 *y = out[0];
	int64_t total = y->shape[y->ndim - 1], rows = r64_numel(y) / total;
	for (int64_t r = 0; r < rows; r++) {
		if (!r64_valid(y, r * total))
			continue;
		int64_t c = 0;
		for (int i = 0; i < n_in; i++) {
			int64_t w = in[i]->shape[in[i]->ndim - 1];
			for (int64_t j = 0; d_in[i] && j < w; j++)
				d_in[i]->d[r * w + j] += d_out[0]->d[r * total + c + j];
			c += w;
		}
	}
}

void ref_concat(struct ref_layer *l)
{
	l->kind = "concat";
	l->n_out = 1;
	l->forward = concat_fwd;
	l->backward = concat_bwd;
}

/* y = x_1 + x_2 + ... on valid elements */
static void add_fwd(struct ref_layer *l, int n_in, struct r64 *const *in, struct r64 **out)
{
	(void)l;
	struct r64 *y = out[0] = r64_like(in[0]);
	y->lengths = first_lengths(n_in, in);
	for (int64_t e = 0; e < r64_numel(y); e++)
		if (r64_valid(y, e))
			for (int i = 0; i < n_in; i++)
				y->d[e] += in[i]->d[e];
}

/* dx_i += dy on valid elements */
static void add_bwd(struct ref_layer *l, int n_in, struct r64 *const *in, struct r64 *const *out,
		    struct r64 *const *d_out, struct r64 **d_in)
{
	(void)l;
	(void)in;
	for (int64_t e = 0; e < r64_numel(out[0]); e++)
		if (r64_valid(out[0], e))
			for (int i = 0; i < n_in; i++)
				if (d_in[i])
					d_in[i]->d[e] += d_out[0]->d[e];
}

void ref_add(struct ref_layer *l)
{
	l->kind = "add";
	l->n_out = 1;
	l->forward = add_fwd;
	l->backward = add_bwd;
}

/* ------------------------------------------------------------------ recurrent */
/* Per layer and direction, per example, per valid step t (in processing order) the cache keeps
 * the cell's input x_t, the previous state and the gate values. Options: opt[0] kind, [1] H,
 * [2] layers, [3] directions, [4] readout, [5] gru reset_after. */
struct rec_cache {
	int64_t B, T, F;
	/* per (layer l, direction d): h[(l*D+d)][b][t][H] the state after step t (valid steps), c
	 * likewise (lstm), gates[(l*D+d)][b][t][G*H] the activated gates; n_pre for the gru's
	 * W_hn h + b_hn (reset after) */
	double *h, *c, *gates, *hn;
	double *layer_in;   /* [layers][B][T][max(F, D*H)] the input of each layer */
	int64_t width;      /* max(F, D*H) */
};

static int gates_of(int64_t kind)
{
	return kind == REF_LSTM ? 4 : kind == REF_GRU ? 3 : 1;
}

static double sigm(double x)
{
	return 1.0 / (1.0 + exp(-x));
}

#define RC_IDX(cc, l, D, d, b, t, H) (((((l) * (D) + (d)) * (cc)->B + (b)) * (cc)->T + (t)) * (H))

/* One step of the cell for example b: s_prev (h, c) -> h, c; stores gates. */
static void cell_step(struct ref_layer *L, int64_t ld, const double *x, int64_t in_w,
		      const double *h_prev, const double *c_prev, double *h, double *c,
		      double *gates, double *hn)
{
	int64_t kind = L->opt[0], H = L->opt[1], G = gates_of(kind);
	const struct r64 *wih = L->param[ld * 4], *whh = L->param[ld * 4 + 1];
	const struct r64 *bih = L->param[ld * 4 + 2], *bhh = L->param[ld * 4 + 3];
	double *a = calloc((size_t)(G * H), sizeof *a), *r = calloc((size_t)(G * H), sizeof *r);
	for (int64_t g = 0; g < G * H; g++) {   /* a = W_ih x + b_ih, r = W_hh h + b_hh */
		a[g] = bih->d[g];
		r[g] = bhh->d[g];
		for (int64_t k = 0; k < in_w; k++)
			a[g] += wih->d[g * in_w + k] * x[k];
		for (int64_t k = 0; k < H; k++)
			r[g] += whh->d[g * H + k] * h_prev[k];
	}
	for (int64_t j = 0; kind == REF_GRU && j < H; j++) {   /* r and z first: n needs all of r */
		gates[j] = sigm(a[j] + r[j]);
		gates[H + j] = sigm(a[H + j] + r[H + j]);
	}
	for (int64_t j = 0; j < H; j++) {
		if (kind == REF_RNN_TANH) {   /* h' = tanh(W_ih x + b_ih + W_hh h + b_hh) */
			h[j] = tanh(a[j] + r[j]);
			gates[j] = h[j];
		} else if (kind == REF_LSTM) {   /* i f g o; c' = f*c + i*g; h' = o*tanh(c') */
			double i = sigm(a[j] + r[j]), f = sigm(a[H + j] + r[H + j]);
			double gg = tanh(a[2 * H + j] + r[2 * H + j]), o = sigm(a[3 * H + j] + r[3 * H + j]);
			c[j] = f * c_prev[j] + i * gg;
			h[j] = o * tanh(c[j]);
			gates[j] = i;
			gates[H + j] = f;
			gates[2 * H + j] = gg;
			gates[3 * H + j] = o;
		} else {   /* r z n; n = tanh(a_n + r*(W_hn h + b_hn)); h' = (1-z)*n + z*h */
			double rr = gates[j], z = gates[H + j], n;
			if (L->opt[5]) {
				n = tanh(a[2 * H + j] + rr * r[2 * H + j]);
				hn[j] = r[2 * H + j];
			} else {   /* reset before the matmul: n = tanh(a_n + W_hn (r*h) + b_hn) */
				double s = bhh->d[2 * H + j];
				for (int64_t k = 0; k < H; k++)
					s += whh->d[(2 * H + j) * H + k] * gates[k] * h_prev[k];
				n = tanh(a[2 * H + j] + s);
				hn[j] = s;
			}
			h[j] = (1 - z) * n + z * h_prev[j];
			gates[2 * H + j] = n;
		}
	}
	free(a);
	free(r);
}

/* Backward of one step: given dh (and dc), ADD into dx, dh_prev (dc_prev) and the grads. */
static void cell_step_bwd(struct ref_layer *L, int64_t ld, const double *x, int64_t in_w,
			  const double *h_prev, const double *c_prev, const double *c,
			  const double *gates, const double *hn, const double *dh, const double *dc,
			  double *dx, double *dh_prev, double *dc_prev)
{
	int64_t kind = L->opt[0], H = L->opt[1], G = gates_of(kind);
	const struct r64 *wih = L->param[ld * 4], *whh = L->param[ld * 4 + 1];
	struct r64 *gwih = L->grad[ld * 4], *gwhh = L->grad[ld * 4 + 1];
	struct r64 *gbih = L->grad[ld * 4 + 2], *gbhh = L->grad[ld * 4 + 3];
	/* da: d loss / d (W_ih x + b_ih), dr: d loss / d (W_hh h + b_hh), per gate row */
	double *da = calloc((size_t)(G * H), sizeof *da), *dr = calloc((size_t)(G * H), sizeof *dr);
	double *dhr = calloc((size_t)H, sizeof *dhr);   /* gru reset-before: d loss / d (r*h) */
	for (int64_t j = 0; j < H; j++) {
		if (kind == REF_RNN_TANH) {
			da[j] = dr[j] = dh[j] * (1 - gates[j] * gates[j]);
		} else if (kind == REF_LSTM) {
			double i = gates[j], f = gates[H + j], gg = gates[2 * H + j], o = gates[3 * H + j];
			double tc = tanh(c[j]);
			double dcc = dc[j] + dh[j] * o * (1 - tc * tc);
			da[j] = dcc * gg * i * (1 - i);
			da[H + j] = dcc * c_prev[j] * f * (1 - f);
			da[2 * H + j] = dcc * i * (1 - gg * gg);
			da[3 * H + j] = dh[j] * tc * o * (1 - o);
			for (int g = 0; g < 4; g++)
				dr[g * H + j] = da[g * H + j];
			dc_prev[j] += dcc * f;
		} else {
			double rr = gates[j], z = gates[H + j], n = gates[2 * H + j];
			double dn = dh[j] * (1 - z) * (1 - n * n);
			da[H + j] = dr[H + j] = dh[j] * (h_prev[j] - n) * z * (1 - z);
			dh_prev[j] += dh[j] * z;
			da[2 * H + j] = dn;
			if (L->opt[5]) {   /* n = tanh(a_n + r * hn) */
				dr[2 * H + j] = dn * rr;
				da[j] = dr[j] = dn * hn[j] * rr * (1 - rr);
			} else {   /* n = tanh(a_n + W_hn (r*h) + b_hn) */
				gbhh->d[2 * H + j] += dn;
				for (int64_t k = 0; k < H; k++) {
					gwhh->d[(2 * H + j) * H + k] += dn * gates[k] * h_prev[k];
					dhr[k] += dn * whh->d[(2 * H + j) * H + k];
				}
			}
		}
	}
	if (kind == REF_GRU && !L->opt[5])   /* r*h: dr_gate = dhr * h, dh_prev += dhr * r */
		for (int64_t k = 0; k < H; k++) {
			double rr = gates[k];
			da[k] = dr[k] = dhr[k] * h_prev[k] * rr * (1 - rr);
			dh_prev[k] += dhr[k] * rr;
		}
	for (int64_t g = 0; g < G * H; g++) {
		bool skip_hh = kind == REF_GRU && !L->opt[5] && g >= 2 * H;   /* done above */
		gbih->d[g] += da[g];
		for (int64_t k = 0; k < in_w; k++) {
			gwih->d[g * in_w + k] += da[g] * x[k];
			if (dx)
				dx[k] += da[g] * wih->d[g * in_w + k];
		}
		if (skip_hh)
			continue;
		gbhh->d[g] += dr[g];
		for (int64_t k = 0; k < H; k++) {
			gwhh->d[g * H + k] += dr[g] * h_prev[k];
			dh_prev[k] += dr[g] * whh->d[g * H + k];
		}
	}
	free(da);
	free(dr);
	free(dhr);
}

static void rec_cache_free(struct ref_layer *L);

static void rec_fwd(struct ref_layer *L, int n_in, struct r64 *const *in, struct r64 **out)
{
	(void)n_in;
	const struct r64 *x = in[0];
	int64_t kind = L->opt[0], H = L->opt[1], NL = L->opt[2], D = L->opt[3], G = gates_of(kind);
	int64_t B = x->shape[0], T = x->shape[1], F = x->shape[2], DH = D * H;
	if (L->cache_free)
		L->cache_free(L);
	free(L->cache);
	struct rec_cache *cc = L->cache = calloc(1, sizeof *cc);
	cc->B = B;
	cc->T = T;
	cc->F = F;
	cc->width = F > DH ? F : DH;
	size_t hs = (size_t)(NL * D * B * T * H);
	cc->h = calloc(hs, sizeof(double));
	cc->c = calloc(hs, sizeof(double));
	cc->hn = calloc(hs, sizeof(double));
	cc->gates = calloc(hs * (size_t)G, sizeof(double));
	cc->layer_in = calloc((size_t)(NL * B * T * cc->width), sizeof(double));
	double *zero = calloc((size_t)H, sizeof(double));
	for (int64_t b = 0; b < B; b++)
		for (int64_t t = 0; t < T; t++)
			memcpy(cc->layer_in + (b * T + t) * cc->width, x->d + (b * T + t) * F,
			       (size_t)F * sizeof(double));
	int64_t so[3] = {B, T, DH}, ss[3] = {B, NL * D, H};
	struct r64 *seq = r64_new(3, so), *state = r64_new(3, ss), *cell = r64_new(3, ss);
	seq->lengths = x->lengths;
	for (int64_t l = 0; l < NL; l++) {
		int64_t in_w = l == 0 ? F : DH;
		double *lin = cc->layer_in + l * B * T * cc->width;
		for (int64_t d = 0; d < D; d++)
			for (int64_t b = 0; b < B; b++) {
				int64_t n = r64_len(x, b);
				const double *hp = zero, *cp = zero;
				for (int64_t k = 0; k < n; k++) {
					int64_t t = d ? n - 1 - k : k;
					size_t at = (size_t)RC_IDX(cc, l, D, d, b, t, H);
					cell_step(L, l * D + d, lin + (b * T + t) * cc->width, in_w, hp, cp,
						  cc->h + at, cc->c + at, cc->gates + at * (size_t)G,
						  cc->hn + at);
					hp = cc->h + at;
					cp = cc->c + at;
				}
				memcpy(state->d + (b * NL * D + l * D + d) * H, hp, (size_t)H * sizeof(double));
				memcpy(cell->d + (b * NL * D + l * D + d) * H, cp, (size_t)H * sizeof(double));
			}
		/* this layer's outputs: the next layer's input, or seq */
		for (int64_t b = 0; b < B; b++)
			for (int64_t t = 0; t < r64_len(x, b); t++)
				for (int64_t d = 0; d < D; d++) {
					const double *h = cc->h + RC_IDX(cc, l, D, d, b, t, H);
					if (l + 1 < NL)
						memcpy(cc->layer_in + ((l + 1) * B * T + b * T + t) * cc->width + d * H,
						       h, (size_t)H * sizeof(double));
					else
						memcpy(seq->d + (b * T + t) * DH + d * H, h, (size_t)H * sizeof(double));
				}
	}
	struct r64 *o;
	if (L->opt[4] == REF_SEQUENCE) {
		o = r64_like(seq);
		memcpy(o->d, seq->d, (size_t)r64_numel(seq) * sizeof(double));
	} else {
		int64_t s2[2] = {B, DH};
		o = r64_new(2, s2);
		for (int64_t b = 0; b < B; b++) {
			int64_t n = r64_len(x, b);
			for (int64_t j = 0; n > 0 && j < DH; j++) {
				if (L->opt[4] == REF_LAST) {   /* forward at n-1, backward at 0 */
					o->d[b * DH + j] = seq->d[(b * T + (j < H ? n - 1 : 0)) * DH + j];
				} else {
					for (int64_t t = 0; t < n; t++)
						o->d[b * DH + j] += seq->d[(b * T + t) * DH + j] / (double)n;
				}
			}
		}
	}
	out[0] = o;
	out[1] = seq;
	out[2] = state;
	if (kind == REF_LSTM)
		out[3] = cell;
	else
		r64_free(cell);
	free(zero);
}

static void rec_bwd(struct ref_layer *L, int n_in, struct r64 *const *in, struct r64 *const *out,
		    struct r64 *const *d_out, struct r64 **d_in)
{
	(void)n_in;
	(void)out;
	const struct r64 *x = in[0];
	struct rec_cache *cc = L->cache;
	int64_t kind = L->opt[0], H = L->opt[1], NL = L->opt[2], D = L->opt[3], G = gates_of(kind);
	int64_t B = cc->B, T = cc->T, F = cc->F, DH = D * H, W = cc->width;
	/* d of every layer's outputs h_t [B][T][DH] (top: from out and seq) */
	double *dseq = calloc((size_t)(B * T * DH), sizeof(double));
	double *dlin = calloc((size_t)(B * T * W), sizeof(double));
	for (int64_t b = 0; b < B; b++) {
		int64_t n = r64_len(x, b);
		for (int64_t t = 0; t < n; t++)
			for (int64_t j = 0; j < DH; j++) {
				double g = d_out[1] ? d_out[1]->d[(b * T + t) * DH + j] : 0;
				if (d_out[0] && L->opt[4] == REF_SEQUENCE)
					g += d_out[0]->d[(b * T + t) * DH + j];
				else if (d_out[0] && L->opt[4] == REF_MEAN)
					g += d_out[0]->d[b * DH + j] / (double)n;
				else if (d_out[0] && t == (j < H ? n - 1 : 0))
					g += d_out[0]->d[b * DH + j];
				dseq[(b * T + t) * DH + j] = g;
			}
	}
	double *dh = calloc((size_t)H, sizeof(double)), *dc = calloc((size_t)H, sizeof(double));
	double *dhp = calloc((size_t)H, sizeof(double)), *dcp = calloc((size_t)H, sizeof(double));
	double *zero = calloc((size_t)H, sizeof(double));
	for (int64_t l = NL - 1; l >= 0; l--) {
		int64_t in_w = l == 0 ? F : DH;
		double *lin = cc->layer_in + l * B * T * W;
		memset(dlin, 0, (size_t)(B * T * W) * sizeof(double));
		for (int64_t d = 0; d < D; d++)
			for (int64_t b = 0; b < B; b++) {
				int64_t n = r64_len(x, b), sidx = (b * NL * D + l * D + d) * H;
				for (int64_t j = 0; j < H; j++) {   /* from state (h_n) and cell (c_n) */
					dh[j] = d_out[2] ? d_out[2]->d[sidx + j] : 0;
					dc[j] = kind == REF_LSTM && d_out[3] ? d_out[3]->d[sidx + j] : 0;
				}
				for (int64_t k = n - 1; k >= 0; k--) {
					int64_t t = d ? n - 1 - k : k;
					int64_t tp = d ? t + 1 : t - 1;   /* the step processed before */
					size_t at = (size_t)RC_IDX(cc, l, D, d, b, t, H);
					const double *hp = k ? cc->h + RC_IDX(cc, l, D, d, b, tp, H) : zero;
					const double *cp = k ? cc->c + RC_IDX(cc, l, D, d, b, tp, H) : zero;
					for (int64_t j = 0; j < H; j++)
						dh[j] += dseq[(b * T + t) * DH + d * H + j];
					memset(dhp, 0, (size_t)H * sizeof(double));
					memset(dcp, 0, (size_t)H * sizeof(double));
					cell_step_bwd(L, l * D + d, lin + (b * T + t) * W, in_w, hp, cp,
						      cc->c + at, cc->gates + at * (size_t)G, cc->hn + at, dh, dc,
						      dlin + (b * T + t) * W, dhp, dcp);
					memcpy(dh, dhp, (size_t)H * sizeof(double));
					memcpy(dc, dcp, (size_t)H * sizeof(double));
				}
			}
		if (l > 0) {   /* the layer below's outputs get dlin */
			for (int64_t i = 0; i < B * T; i++)
				memcpy(dseq + i * DH, dlin + i * W, (size_t)DH * sizeof(double));
		}
	}
	if (d_in[0])
		for (int64_t i = 0; i < B * T; i++)
			for (int64_t k = 0; k < F; k++)
				d_in[0]->d[i * F + k] += dlin[i * W + k];
	free(dseq);
	free(dlin);
	free(dh);
	free(dc);
	free(dhp);
	free(dcp);
	free(zero);
}

static void rec_cache_free(struct ref_layer *L)
{
	struct rec_cache *cc = L->cache;
	if (cc) {
		free(cc->h);
		free(cc->c);
		free(cc->hn);
		free(cc->gates);
		free(cc->layer_in);
		memset(cc, 0, sizeof *cc);
	}
}

void ref_recurrent(struct ref_layer *l, enum ref_rec_kind kind, int64_t hidden, int64_t layers,
		   bool bidirectional, enum ref_readout readout, bool gru_reset_after)
{
	l->kind = kind == REF_LSTM ? "lstm" : kind == REF_GRU ? "gru" : "rnn";
	l->n_out = kind == REF_LSTM ? 4 : 3;
	l->opt[0] = kind;
	l->opt[1] = hidden;
	l->opt[2] = layers;
	l->opt[3] = bidirectional ? 2 : 1;
	l->opt[4] = readout;
	l->opt[5] = gru_reset_after;
	l->forward = rec_fwd;
	l->backward = rec_bwd;
	l->cache_free = rec_cache_free;
}

/* ------------------------------------------------------------------ losses */
/* items of a [B,T,...] tensor: valid steps only */
static bool item_valid(const struct r64 *pred, const struct r64 *target, int64_t i)
{
	if (pred->ndim < 2)
		return true;
	const int32_t *len = pred->lengths ? pred->lengths : target->lengths;
	if (!len)
		return true;
	struct r64 v = *pred;
	v.lengths = len;
	return r64_valid(&v, i);
}

/* sum = 1/2 sum_i (p_i - t_i)^2; count = batch */
double ref_mse(const struct r64 *pred, const struct r64 *target, struct r64 *d_pred, double *count)
{
	double s = 0;
	for (int64_t i = 0; i < r64_numel(pred); i++) {
		double d = item_valid(pred, target, i) ? pred->d[i] - target->d[i] : 0;
		s += 0.5 * d * d;
		if (d_pred)
			d_pred->d[i] = d;
	}
	*count = (double)pred->shape[0];
	return s;
}

/* per item: (1-e) (lse(z) - z_y) + e/C sum_c (lse(z) - z_c); [B,C], [B,T,C] or [B,C,...] */
double ref_cross_entropy(const struct r64 *pred, const struct r64 *target, int64_t ignore_index,
			 double smoothing, struct r64 *d_pred, double *count)
{
	int64_t outer, C, inner = 1, steps = 0;
	if (pred->ndim == 3) {
		outer = pred->shape[0] * pred->shape[1];
		C = pred->shape[2];
		steps = pred->shape[1];
	} else {
		outer = pred->shape[0];
		C = pred->shape[1];
		for (int d = 2; d < pred->ndim; d++)
			inner *= pred->shape[d];
	}
	const int32_t *len = steps ? (pred->lengths ? pred->lengths : target->lengths) : NULL;
	double s = 0, e = smoothing;
	*count = 0;
	if (d_pred)
		memset(d_pred->d, 0, (size_t)r64_numel(d_pred) * sizeof(double));
	for (int64_t o = 0; o < outer; o++) {
		if (len && o % steps >= len[o / steps])
			continue;
		for (int64_t k = 0; k < inner; k++) {
			double tv = target->d[o * inner + k];
			if (tv == (double)ignore_index)
				continue;
			int64_t y = (int64_t)tv;
			const double *z = pred->d + o * C * inner + k;
			double se = 0;
			for (int64_t j = 0; j < C; j++)
				se += exp(z[j * inner]);
			double lse = log(se);
			s += (1 - e) * (lse - z[y * inner]);
			for (int64_t j = 0; j < C; j++)
				s += e / (double)C * (lse - z[j * inner]);
			*count += 1;
			for (int64_t j = 0; d_pred && j < C; j++)
				d_pred->d[o * C * inner + k + j * inner] =
					exp(z[j * inner]) / se - e / (double)C - (j == y ? 1 - e : 0);
		}
	}
	return s;
}

/* per element: -p y log s(x) - (1-y) log(1 - s(x)), p = pos_weight (PyTorch's) */
double ref_bce(const struct r64 *pred, const struct r64 *target, double pos_weight,
	       struct r64 *d_pred, double *count)
{
	double s = 0;
	*count = 0;
	for (int64_t i = 0; i < r64_numel(pred); i++) {
		if (d_pred)
			d_pred->d[i] = 0;
		if (!item_valid(pred, target, i))
			continue;
		double x = pred->d[i], y = target->d[i], p = pos_weight;
		double sx = 1.0 / (1.0 + exp(-x));
		s += -p * y * log(sx) - (1 - y) * log(1 - sx);
		*count += 1;
		if (d_pred)   /* d/dx = -p y (1 - s) + (1 - y) s */
			d_pred->d[i] = -p * y * (1 - sx) + (1 - y) * sx;
	}
	return s;
}

/* ------------------------------------------------------------------ conv */
#define AT4(t, b, c, i, j) ((t)->d[(((b) * (t)->shape[1] + (c)) * (t)->shape[2] + (i)) * (t)->shape[3] + (j)])

/* opt[0..7]: out_channels kh kw sh sw ph pw dh; the rest in struct conv_extra (the cache) */
#define C_OUT l->opt[0]
#define C_KH l->opt[1]
#define C_KW l->opt[2]
#define C_SH l->opt[3]
#define C_SW l->opt[4]
#define C_PH l->opt[5]
#define C_PW l->opt[6]
#define C_DH l->opt[7]

struct conv_extra {
	int64_t dw, oph, opw, groups;
	bool bias;
};

/* y[b,o,i,j] = bias[o] + sum_{c in o's group, p, q} W[o, c', p, q] x[b, c, i sh - ph + p dh,
 * j sw - pw + q dw] (zero outside) */
static void conv_fwd(struct ref_layer *l, int n_in, struct r64 *const *in, struct r64 **out)
{
	(void)n_in;
	const struct conv_extra *e = l->cache;
	const struct r64 *x = in[0], *w = l->param[0];
	int64_t B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
	int64_t O = C_OUT, G = e->groups, Cg = C / G, Og = O / G;
	int64_t Ho = (H + 2 * C_PH - C_DH * (C_KH - 1) - 1) / C_SH + 1;
	int64_t Wo = (W + 2 * C_PW - e->dw * (C_KW - 1) - 1) / C_SW + 1;
	int64_t s[4] = {B, O, Ho, Wo};
	struct r64 *y = out[0] = r64_new(4, s);
	for (int64_t b = 0; b < B; b++)
		for (int64_t o = 0; o < O; o++)
			for (int64_t i = 0; i < Ho; i++)
				for (int64_t j = 0; j < Wo; j++) {
					double acc = e->bias ? l->param[1]->d[o] : 0;
					for (int64_t c = 0; c < Cg; c++)
						for (int64_t p = 0; p < C_KH; p++)
							for (int64_t q = 0; q < C_KW; q++) {
								int64_t yi = i * C_SH - C_PH + p * C_DH;
								int64_t xj = j * C_SW - C_PW + q * e->dw;
								if (yi < 0 || yi >= H || xj < 0 || xj >= W)
									continue;
								acc += AT4(w, o, c, p, q) *
								       AT4(x, b, (o / Og) * Cg + c, yi, xj);
							}
					AT4(y, b, o, i, j) = acc;
				}
}

/* the same sum, differentiated: dx += W dy, dW += x dy, db += dy */
static void conv_bwd(struct ref_layer *l, int n_in, struct r64 *const *in, struct r64 *const *out,
		     struct r64 *const *d_out, struct r64 **d_in)
{
	(void)n_in;
	const struct conv_extra *e = l->cache;
	const struct r64 *x = in[0], *w = l->param[0], *dy = d_out[0];
	int64_t B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
	int64_t O = C_OUT, G = e->groups, Cg = C / G, Og = O / G;
	int64_t Ho = out[0]->shape[2], Wo = out[0]->shape[3];
	for (int64_t b = 0; b < B; b++)
		for (int64_t o = 0; o < O; o++)
			for (int64_t i = 0; i < Ho; i++)
				for (int64_t j = 0; j < Wo; j++) {
					double g = AT4(dy, b, o, i, j);
					if (e->bias)
						l->grad[1]->d[o] += g;
					for (int64_t c = 0; c < Cg; c++)
						for (int64_t p = 0; p < C_KH; p++)
							for (int64_t q = 0; q < C_KW; q++) {
								int64_t yi = i * C_SH - C_PH + p * C_DH;
								int64_t xj = j * C_SW - C_PW + q * e->dw;
								int64_t ci = (o / Og) * Cg + c;
								if (yi < 0 || yi >= H || xj < 0 || xj >= W)
									continue;
								AT4(l->grad[0], o, c, p, q) += g * AT4(x, b, ci, yi, xj);
								if (d_in[0])
									AT4(d_in[0], b, ci, yi, xj) += g * AT4(w, o, c, p, q);
							}
				}
}

static void conv_setup(struct ref_layer *l, const struct ref_conv *c)
{
	const int64_t v[8] = {c->out_channels, c->kh, c->kw, c->sh, c->sw, c->ph, c->pw, c->dh};
	memcpy(l->opt, v, sizeof v);
	struct conv_extra *e = calloc(1, sizeof *e);
	if (!e)
		abort();
	*e = (struct conv_extra){c->dw, c->oph, c->opw, c->groups, c->bias};
	l->cache = e;
	l->n_out = 1;
}

void ref_conv2d(struct ref_layer *l, const struct ref_conv *c)
{
	conv_setup(l, c);
	l->kind = "conv2d";
	l->forward = conv_fwd;
	l->backward = conv_bwd;
}

/* y[b, o, i sh - ph + p dh, j sw - pw + q dw] += x[b,c,i,j] W[c, o', p, q] (+ bias[o]) */
static void convt_fwd(struct ref_layer *l, int n_in, struct r64 *const *in, struct r64 **out)
{
	(void)n_in;
	const struct conv_extra *e = l->cache;
	const struct r64 *x = in[0], *w = l->param[0];
	int64_t B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
	int64_t O = C_OUT, G = e->groups, Cg = C / G, Og = O / G;
	int64_t Ho = (H - 1) * C_SH - 2 * C_PH + C_DH * (C_KH - 1) + e->oph + 1;
	int64_t Wo = (W - 1) * C_SW - 2 * C_PW + e->dw * (C_KW - 1) + e->opw + 1;
	int64_t s[4] = {B, O, Ho, Wo};
	struct r64 *y = out[0] = r64_new(4, s);
	for (int64_t b = 0; b < B; b++) {
		for (int64_t o = 0; e->bias && o < O; o++)
			for (int64_t i = 0; i < Ho * Wo; i++)
				y->d[(b * O + o) * Ho * Wo + i] = l->param[1]->d[o];
		for (int64_t c = 0; c < C; c++)
			for (int64_t i = 0; i < H; i++)
				for (int64_t j = 0; j < W; j++)
					for (int64_t oo = 0; oo < Og; oo++)
						for (int64_t p = 0; p < C_KH; p++)
							for (int64_t q = 0; q < C_KW; q++) {
								int64_t yi = i * C_SH - C_PH + p * C_DH;
								int64_t yj = j * C_SW - C_PW + q * e->dw;
								if (yi < 0 || yi >= Ho || yj < 0 || yj >= Wo)
									continue;
								AT4(y, b, (c / Cg) * Og + oo, yi, yj) +=
									AT4(x, b, c, i, j) * AT4(w, c, oo, p, q);
							}
	}
}

static void convt_bwd(struct ref_layer *l, int n_in, struct r64 *const *in,
		      struct r64 *const *out, struct r64 *const *d_out, struct r64 **d_in)
{
	(void)n_in;
	const struct conv_extra *e = l->cache;
	const struct r64 *x = in[0], *w = l->param[0], *dy = d_out[0];
	int64_t B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
	int64_t O = C_OUT, G = e->groups, Cg = C / G, Og = O / G;
	int64_t Ho = out[0]->shape[2], Wo = out[0]->shape[3];
	for (int64_t b = 0; b < B; b++) {
		for (int64_t o = 0; e->bias && o < O; o++)
			for (int64_t i = 0; i < Ho * Wo; i++)
				l->grad[1]->d[o] += dy->d[(b * O + o) * Ho * Wo + i];
		for (int64_t c = 0; c < C; c++)
			for (int64_t i = 0; i < H; i++)
				for (int64_t j = 0; j < W; j++)
					for (int64_t oo = 0; oo < Og; oo++)
						for (int64_t p = 0; p < C_KH; p++)
							for (int64_t q = 0; q < C_KW; q++) {
								int64_t yi = i * C_SH - C_PH + p * C_DH;
								int64_t yj = j * C_SW - C_PW + q * e->dw;
								if (yi < 0 || yi >= Ho || yj < 0 || yj >= Wo)
									continue;
								double g = AT4(dy, b, (c / Cg) * Og + oo, yi, yj);
								AT4(l->grad[0], c, oo, p, q) += g * AT4(x, b, c, i, j);
								if (d_in[0])
									AT4(d_in[0], b, c, i, j) += g * AT4(w, c, oo, p, q);
							}
	}
}

void ref_conv_transpose2d(struct ref_layer *l, const struct ref_conv *c)
{
	conv_setup(l, c);
	l->kind = "conv_transpose2d";
	l->forward = convt_fwd;
	l->backward = convt_bwd;
}

/* ------------------------------------------------------------------ pooling */
/* opt: [0] k, [1] stride, [2] pad, [3] count_include_pad (avg) */
static void pool_dims(const struct ref_layer *l, const struct r64 *x, int64_t *ho, int64_t *wo)
{
	*ho = (x->shape[2] + 2 * l->opt[2] - l->opt[0]) / l->opt[1] + 1;
	*wo = (x->shape[3] + 2 * l->opt[2] - l->opt[0]) / l->opt[1] + 1;
}

/* y = max over the window (padding: -inf), indices = iy*W + ix of the first max */
static void maxpool_fwd(struct ref_layer *l, int n_in, struct r64 *const *in, struct r64 **out)
{
	(void)n_in;
	const struct r64 *x = in[0];
	int64_t B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3], Ho, Wo;
	pool_dims(l, x, &Ho, &Wo);
	int64_t s[4] = {B, C, Ho, Wo};
	struct r64 *y = out[0] = r64_new(4, s), *ix = out[1] = r64_new(4, s);
	for (int64_t b = 0; b < B; b++)
		for (int64_t c = 0; c < C; c++)
			for (int64_t i = 0; i < Ho; i++)
				for (int64_t j = 0; j < Wo; j++) {
					double m = -INFINITY;
					int64_t at = -1;
					for (int64_t p = 0; p < l->opt[0]; p++)
						for (int64_t q = 0; q < l->opt[0]; q++) {
							int64_t yi = i * l->opt[1] - l->opt[2] + p;
							int64_t xj = j * l->opt[1] - l->opt[2] + q;
							if (yi < 0 || yi >= H || xj < 0 || xj >= W)
								continue;
							if (AT4(x, b, c, yi, xj) > m) {
								m = AT4(x, b, c, yi, xj);
								at = yi * W + xj;
							}
						}
					AT4(y, b, c, i, j) = m;
					AT4(ix, b, c, i, j) = (double)at;
				}
}

/* dx[max] += dy */
static void maxpool_bwd(struct ref_layer *l, int n_in, struct r64 *const *in,
			struct r64 *const *out, struct r64 *const *d_out, struct r64 **d_in)
{
	(void)l;
	(void)n_in;
	const struct r64 *x = in[0], *ix = out[1];
	int64_t HW = x->shape[2] * x->shape[3], plane = out[0]->shape[2] * out[0]->shape[3];
	if (!d_in[0])
		return;
	for (int64_t bc = 0; bc < x->shape[0] * x->shape[1]; bc++)
		for (int64_t k = 0; k < plane; k++)
			d_in[0]->d[bc * HW + (int64_t)ix->d[bc * plane + k]] += d_out[0]->d[bc * plane + k];
}

void ref_maxpool2d(struct ref_layer *l, int64_t k, int64_t stride, int64_t pad)
{
	l->kind = "maxpool2d";
	l->n_out = 2;
	l->opt[0] = k;
	l->opt[1] = stride;
	l->opt[2] = pad;
	l->forward = maxpool_fwd;
	l->backward = maxpool_bwd;
}

/* y = sum over the window / (k*k, or the in-bounds count) */
static double avg_count(const struct ref_layer *l, int64_t i, int64_t j, int64_t H, int64_t W)
{
	if (l->opt[3])
		return (double)(l->opt[0] * l->opt[0]);
	int64_t n = 0;
	for (int64_t p = 0; p < l->opt[0]; p++)
		for (int64_t q = 0; q < l->opt[0]; q++) {
			int64_t yi = i * l->opt[1] - l->opt[2] + p, xj = j * l->opt[1] - l->opt[2] + q;
			n += yi >= 0 && yi < H && xj >= 0 && xj < W;
		}
	return (double)n;
}

static void avgpool_fwd(struct ref_layer *l, int n_in, struct r64 *const *in, struct r64 **out)
{
	(void)n_in;
	const struct r64 *x = in[0];
	int64_t B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3], Ho, Wo;
	pool_dims(l, x, &Ho, &Wo);
	int64_t s[4] = {B, C, Ho, Wo};
	struct r64 *y = out[0] = r64_new(4, s);
	for (int64_t b = 0; b < B; b++)
		for (int64_t c = 0; c < C; c++)
			for (int64_t i = 0; i < Ho; i++)
				for (int64_t j = 0; j < Wo; j++) {
					double acc = 0;
					for (int64_t p = 0; p < l->opt[0]; p++)
						for (int64_t q = 0; q < l->opt[0]; q++) {
							int64_t yi = i * l->opt[1] - l->opt[2] + p;
							int64_t xj = j * l->opt[1] - l->opt[2] + q;
							if (yi >= 0 && yi < H && xj >= 0 && xj < W)
								acc += AT4(x, b, c, yi, xj);
						}
					AT4(y, b, c, i, j) = acc / avg_count(l, i, j, H, W);
				}
}

static void avgpool_bwd(struct ref_layer *l, int n_in, struct r64 *const *in,
			struct r64 *const *out, struct r64 *const *d_out, struct r64 **d_in)
{
	(void)n_in;
	const struct r64 *x = in[0];
	int64_t B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
	int64_t Ho = out[0]->shape[2], Wo = out[0]->shape[3];
	if (!d_in[0])
		return;
	for (int64_t b = 0; b < B; b++)
		for (int64_t c = 0; c < C; c++)
			for (int64_t i = 0; i < Ho; i++)
				for (int64_t j = 0; j < Wo; j++) {
					double g = AT4(d_out[0], b, c, i, j) / avg_count(l, i, j, H, W);
					for (int64_t p = 0; p < l->opt[0]; p++)
						for (int64_t q = 0; q < l->opt[0]; q++) {
							int64_t yi = i * l->opt[1] - l->opt[2] + p;
							int64_t xj = j * l->opt[1] - l->opt[2] + q;
							if (yi >= 0 && yi < H && xj >= 0 && xj < W)
								AT4(d_in[0], b, c, yi, xj) += g;
						}
				}
}

void ref_avgpool2d(struct ref_layer *l, int64_t k, int64_t stride, int64_t pad,
		   bool count_include_pad)
{
	l->kind = "avgpool2d";
	l->n_out = 1;
	l->opt[0] = k;
	l->opt[1] = stride;
	l->opt[2] = pad;
	l->opt[3] = count_include_pad;
	l->forward = avgpool_fwd;
	l->backward = avgpool_bwd;
}

/* ------------------------------------------------------------------ upsample */
/* source taps of output row/column o of n (scale s): nearest o/s; bilinear (align_corners
 * false) src = (o + 0.5)/s - 0.5 clamped at 0, taps i0 = floor(src), i1 = min(i0 + 1, n - 1) */
static void taps(bool bilinear, int64_t o, int64_t s, int64_t n, int64_t *i0, int64_t *i1,
		 double *f1)
{
	if (!bilinear) {
		*i0 = *i1 = o / s;
		*f1 = 0;
		return;
	}
	double src = ((double)o + 0.5) / (double)s - 0.5;
	if (src < 0)
		src = 0;
	*i0 = (int64_t)floor(src);
	*i1 = *i0 + 1 < n ? *i0 + 1 : n - 1;
	*f1 = src - (double)*i0;
}

/* y[i,j] = sum over the taps of weight * x[tap] (linear in x) */
static void upsample_fwd(struct ref_layer *l, int n_in, struct r64 *const *in, struct r64 **out)
{
	(void)n_in;
	const struct r64 *x = in[0];
	int64_t s = l->opt[0], H = x->shape[2], W = x->shape[3];
	int64_t sh[4] = {x->shape[0], x->shape[1], H * s, W * s};
	struct r64 *y = out[0] = r64_new(4, sh);
	for (int64_t bc = 0; bc < x->shape[0] * x->shape[1]; bc++)
		for (int64_t i = 0; i < H * s; i++)
			for (int64_t j = 0; j < W * s; j++) {
				int64_t a0, a1, b0, b1;
				double fa, fb;
				taps(l->opt[1], i, s, H, &a0, &a1, &fa);
				taps(l->opt[1], j, s, W, &b0, &b1, &fb);
				const double *p = x->d + bc * H * W;
				y->d[(bc * H * s + i) * W * s + j] =
					(1 - fa) * ((1 - fb) * p[a0 * W + b0] + fb * p[a0 * W + b1]) +
					fa * ((1 - fb) * p[a1 * W + b0] + fb * p[a1 * W + b1]);
			}
}

static void upsample_bwd(struct ref_layer *l, int n_in, struct r64 *const *in,
			 struct r64 *const *out, struct r64 *const *d_out, struct r64 **d_in)
{
	(void)n_in;
	(void)out;
	const struct r64 *x = in[0];
	int64_t s = l->opt[0], H = x->shape[2], W = x->shape[3];
	if (!d_in[0])
		return;
	for (int64_t bc = 0; bc < x->shape[0] * x->shape[1]; bc++)
		for (int64_t i = 0; i < H * s; i++)
			for (int64_t j = 0; j < W * s; j++) {
				int64_t a0, a1, b0, b1;
				double fa, fb, g = d_out[0]->d[(bc * H * s + i) * W * s + j];
				taps(l->opt[1], i, s, H, &a0, &a1, &fa);
				taps(l->opt[1], j, s, W, &b0, &b1, &fb);
				double *p = d_in[0]->d + bc * H * W;
				p[a0 * W + b0] += g * (1 - fa) * (1 - fb);
				p[a0 * W + b1] += g * (1 - fa) * fb;
				p[a1 * W + b0] += g * fa * (1 - fb);
				p[a1 * W + b1] += g * fa * fb;
			}
}

void ref_upsample2d(struct ref_layer *l, int64_t scale, bool bilinear)
{
	l->kind = "upsample2d";
	l->n_out = 1;
	l->opt[0] = scale;
	l->opt[1] = bilinear;
	l->forward = upsample_fwd;
	l->backward = upsample_bwd;
}

/* ------------------------------------------------------------------ batchnorm2d */
/* train: y = (x - mean_c) / sqrt(var_c + eps) w_c + b_c over (B, H, W) (biased variance);
 * eval: the running mean and variance instead. Parameters: weight, bias (affine), then the
 * buffers running_mean, running_var, num_batches_tracked. */
static void bn_stats(const struct ref_layer *l, const struct r64 *x, int64_t c, double *mean,
		     double *invstd)
{
	int64_t B = x->shape[0], HW = x->shape[2] * x->shape[3], k = l->opt[1] ? 2 : 0;
	if (!l->opt[0]) {
		*mean = l->param[k]->d[c];
		*invstd = 1 / sqrt(l->param[k + 1]->d[c] + l->fopt[0]);
		return;
	}
	double s = 0, q = 0;
	for (int64_t b = 0; b < B; b++)
		for (int64_t i = 0; i < HW; i++)
			s += x->d[(b * x->shape[1] + c) * HW + i];
	*mean = s / (double)(B * HW);
	for (int64_t b = 0; b < B; b++)
		for (int64_t i = 0; i < HW; i++) {
			double d = x->d[(b * x->shape[1] + c) * HW + i] - *mean;
			q += d * d;
		}
	*invstd = 1 / sqrt(q / (double)(B * HW) + l->fopt[0]);
}

static void bn_fwd(struct ref_layer *l, int n_in, struct r64 *const *in, struct r64 **out)
{
	(void)n_in;
	const struct r64 *x = in[0];
	int64_t B = x->shape[0], C = x->shape[1], HW = x->shape[2] * x->shape[3];
	struct r64 *y = out[0] = r64_like(x);
	for (int64_t c = 0; c < C; c++) {
		double m, is, w = l->opt[1] ? l->param[0]->d[c] : 1, b = l->opt[1] ? l->param[1]->d[c] : 0;
		bn_stats(l, x, c, &m, &is);
		for (int64_t n = 0; n < B; n++)
			for (int64_t i = 0; i < HW; i++)
				y->d[(n * C + c) * HW + i] = (x->d[(n * C + c) * HW + i] - m) * is * w + b;
	}
}

/* train: dx = w invstd / N (N dy - sum dy - xhat sum(dy xhat)); eval: dx = w invstd dy;
 * dw += sum dy xhat; db += sum dy */
static void bn_bwd(struct ref_layer *l, int n_in, struct r64 *const *in, struct r64 *const *out,
		   struct r64 *const *d_out, struct r64 **d_in)
{
	(void)n_in;
	(void)out;
	const struct r64 *x = in[0], *dy = d_out[0];
	int64_t B = x->shape[0], C = x->shape[1], HW = x->shape[2] * x->shape[3];
	double N = (double)(B * HW);
	for (int64_t c = 0; c < C; c++) {
		double m, is, w = l->opt[1] ? l->param[0]->d[c] : 1, sdy = 0, sdyx = 0;
		bn_stats(l, x, c, &m, &is);
		for (int64_t n = 0; n < B; n++)
			for (int64_t i = 0; i < HW; i++) {
				int64_t at = (n * C + c) * HW + i;
				sdy += dy->d[at];
				sdyx += dy->d[at] * (x->d[at] - m) * is;
			}
		if (l->opt[1]) {
			l->grad[0]->d[c] += sdyx;
			l->grad[1]->d[c] += sdy;
		}
		for (int64_t n = 0; d_in[0] && n < B; n++)
			for (int64_t i = 0; i < HW; i++) {
				int64_t at = (n * C + c) * HW + i;
				double xh = (x->d[at] - m) * is;
				d_in[0]->d[at] += l->opt[0] ? w * is / N * (N * dy->d[at] - sdy - xh * sdyx)
							    : w * is * dy->d[at];
			}
	}
}

void ref_batchnorm2d(struct ref_layer *l, double eps, bool train, bool affine)
{
	l->kind = "batchnorm2d";
	l->n_out = 1;
	l->opt[0] = train;
	l->opt[1] = affine;
	l->fopt[0] = eps;
	l->forward = bn_fwd;
	l->backward = bn_bwd;
}

/* ------------------------------------------------------------------ maxunpool2d */
/* y = 0; y[b, c, indices[b,c,i,j]] = x[b,c,i,j] */
static void unpool_fwd(struct ref_layer *l, int n_in, struct r64 *const *in, struct r64 **out)
{
	(void)n_in;
	const struct r64 *x = in[0], *ix = in[1];
	int64_t s[4] = {x->shape[0], x->shape[1], l->opt[0], l->opt[1]};
	int64_t P = x->shape[2] * x->shape[3], U = l->opt[0] * l->opt[1];
	struct r64 *y = out[0] = r64_new(4, s);
	for (int64_t q = 0; q < x->shape[0] * x->shape[1]; q++)
		for (int64_t i = 0; i < P; i++)
			y->d[q * U + (int64_t)ix->d[q * P + i]] = x->d[q * P + i];
}

/* dx = dy[indices] */
static void unpool_bwd(struct ref_layer *l, int n_in, struct r64 *const *in,
		       struct r64 *const *out, struct r64 *const *d_out, struct r64 **d_in)
{
	(void)n_in;
	(void)out;
	const struct r64 *x = in[0], *ix = in[1];
	int64_t P = x->shape[2] * x->shape[3], U = l->opt[0] * l->opt[1];
	for (int64_t q = 0; d_in[0] && q < x->shape[0] * x->shape[1]; q++)
		for (int64_t i = 0; i < P; i++)
			d_in[0]->d[q * P + i] += d_out[0]->d[q * U + (int64_t)ix->d[q * P + i]];
}

void ref_maxunpool2d(struct ref_layer *l, int64_t out_h, int64_t out_w)
{
	l->kind = "maxunpool2d";
	l->n_out = 1;
	l->opt[0] = out_h;
	l->opt[1] = out_w;
	l->forward = unpool_fwd;
	l->backward = unpool_bwd;
}

/* ------------------------------------------------------------------ autoencoder */
/* opt: [0] L (layers each way), [1] act, [2] out_act, [3] tied, [4..] sizes (at most 4);
 * fopt: the last forward's relus: [0] the smallest |z| before one, [1] how many, [2] active */
enum ae_act_kind { AE_NONE, AE_TANH, AE_SIGMOID, AE_RELU };

/* h = f(z): tanh, sigmoid 1/(1+e^-z), relu max(z, 0), or z */
static double ae_act(int a, double z)
{
	switch (a) {
	case AE_TANH: return tanh(z);
	case AE_SIGMOID: return 1 / (1 + exp(-z));
	case AE_RELU: return z > 0 ? z : 0;
	default: return z;
	}
}

/* f'(z) from h = f(z) (relu: h > 0 iff z > 0; its kink at z = 0 is the test's to avoid) */
static double ae_act_d(int a, double h)
{
	switch (a) {
	case AE_TANH: return 1 - h * h;
	case AE_SIGMOID: return h * (1 - h);
	case AE_RELU: return h > 0 ? 1 : 0;
	default: return 1;
	}
}

/* layer m: in/out sizes and where its weight and bias are in l->param (the weight is [out,in],
 * or for a tied decoder the encoder's [in,out] used transposed) */
static void ae_layer(const struct ref_layer *l, int64_t m, int64_t *in, int64_t *out,
		     int *wi, int *bi, bool *transposed)
{
	int64_t L = l->opt[0];
	const int64_t *sz = l->opt + 4;
	if (m < L) {
		*in = sz[m];
		*out = sz[m + 1];
		*wi = (int)(2 * m);
		*bi = (int)(2 * m + 1);
		*transposed = false;
		return;
	}
	int64_t k = m - L;
	*in = sz[L - k];
	*out = sz[L - k - 1];
	*transposed = l->opt[3];
	if (l->opt[3]) {
		*wi = (int)(2 * (L - 1 - k));
		*bi = (int)(2 * L + k);
	} else {
		*wi = (int)(2 * L + 2 * k);
		*bi = (int)(2 * L + 2 * k + 1);
	}
}

/* h_{m+1} = act(h_m W_m^T + b_m) (tied decoder: h_m W_m + b_m); the cache keeps every h */
static void ae_fwd(struct ref_layer *l, int n_in, struct r64 *const *in, struct r64 **out)
{
	(void)n_in;
	const struct r64 *x = in[0];
	int64_t L = l->opt[0], B = x->shape[0];
	double **h = calloc((size_t)(2 * L + 1), sizeof *h);
	if (l->cache_free)
		l->cache_free(l);
	free(l->cache);
	l->cache = h;
	h[0] = calloc((size_t)r64_numel(x), sizeof(double));
	memcpy(h[0], x->d, (size_t)r64_numel(x) * sizeof(double));
	l->fopt[0] = INFINITY;
	l->fopt[1] = l->fopt[2] = 0;
	for (int64_t m = 0; m < 2 * L; m++) {
		int64_t ni, no;
		int wi, bi;
		bool tr;
		ae_layer(l, m, &ni, &no, &wi, &bi, &tr);
		const double *w = l->param[wi]->d, *b = l->param[bi]->d;
		h[m + 1] = calloc((size_t)(B * no), sizeof(double));
		int a = m == 2 * L - 1 ? (l->opt[2] ? AE_SIGMOID : AE_NONE) : (int)l->opt[1];
		for (int64_t i = 0; i < B; i++)
			for (int64_t o = 0; o < no; o++) {
				double z = b[o];
				for (int64_t k = 0; k < ni; k++)
					z += h[m][i * ni + k] * (tr ? w[k * no + o] : w[o * ni + k]);
				h[m + 1][i * no + o] = ae_act(a, z);
				if (a == AE_RELU) {
					l->fopt[0] = fmin(l->fopt[0], fabs(z));
					l->fopt[1]++;
					l->fopt[2] += z > 0;
				}
			}
	}
	out[0] = r64_like(x);
	out[0]->lengths = NULL;
	memcpy(out[0]->d, h[2 * L], (size_t)r64_numel(x) * sizeof(double));
	int64_t cs[2] = {B, l->opt[4 + L]};
	out[1] = r64_new(2, cs);
	memcpy(out[1]->d, h[L], (size_t)(B * cs[1]) * sizeof(double));
}

/* dz = dh act'; dW += dz^T h (tied: h^T dz); db += sum dz; dh_prev = dz W (tied: dz W^T);
 * the code's own gradient joins at h_L */
static void ae_bwd(struct ref_layer *l, int n_in, struct r64 *const *in, struct r64 *const *out,
		   struct r64 *const *d_out, struct r64 **d_in)
{
	(void)n_in;
	(void)out;
	double **h = l->cache;
	int64_t L = l->opt[0], B = in[0]->shape[0], F = l->opt[4];
	double *dh = calloc((size_t)(B * F), sizeof(double));
	memcpy(dh, d_out[0]->d, (size_t)(B * F) * sizeof(double));
	for (int64_t m = 2 * L - 1; m >= 0; m--) {
		int64_t ni, no;
		int wi, bi;
		bool tr;
		ae_layer(l, m, &ni, &no, &wi, &bi, &tr);
		if (m == L - 1)
			for (int64_t i = 0; i < B * no; i++)
				dh[i] += d_out[1]->d[i];
		int a = m == 2 * L - 1 ? (l->opt[2] ? AE_SIGMOID : AE_NONE) : (int)l->opt[1];
		const double *w = l->param[wi]->d;
		double *gw = l->grad[wi]->d, *gb = l->grad[bi]->d;
		double *dprev = calloc((size_t)(B * ni), sizeof(double));
		for (int64_t i = 0; i < B; i++)
			for (int64_t o = 0; o < no; o++) {
				double dz = dh[i * no + o] * ae_act_d(a, h[m + 1][i * no + o]);
				gb[o] += dz;
				for (int64_t k = 0; k < ni; k++) {
					gw[tr ? k * no + o : o * ni + k] += dz * h[m][i * ni + k];
					dprev[i * ni + k] += dz * (tr ? w[k * no + o] : w[o * ni + k]);
				}
			}
		free(dh);
		dh = dprev;
	}
	if (d_in[0])
		for (int64_t i = 0; i < B * F; i++)
			d_in[0]->d[i] += dh[i];
	free(dh);
}

static void ae_cache_free(struct ref_layer *l)
{
	double **h = l->cache;
	for (int64_t m = 0; h && m <= 2 * l->opt[0]; m++)
		free(h[m]);
}

void ref_autoencoder(struct ref_layer *l, const int64_t *sizes, int n, int act, int out_act,
		     bool tied)
{
	l->kind = "autoencoder";
	l->n_out = 2;
	l->opt[0] = n - 1;
	l->opt[1] = act;
	l->opt[2] = out_act;
	l->opt[3] = tied;
	for (int i = 0; i < n && i < 4; i++)
		l->opt[4 + i] = sizes[i];
	l->fopt[0] = INFINITY;
	l->forward = ae_fwd;
	l->backward = ae_bwd;
	l->cache_free = ae_cache_free;
}

double ref_autoencoder_relu_margin(const struct ref_layer *l, int64_t *relus,
				   int64_t *active)
{
	*relus = (int64_t)l->fopt[1];
	*active = (int64_t)l->fopt[2];
	return l->fopt[0];
}

/* ------------------------------------------------------------------ attention_pool */
/* a_t = tanh(W h_t + b); e_t = v . a_t; alpha = softmax(e over t < len); c = sum alpha_t h_t */
static void attn_fwd(struct ref_layer *l, int n_in, struct r64 *const *in, struct r64 **out)
{
	(void)n_in;
	const struct r64 *x = in[0], *w = l->param[0], *bb = l->param[1], *v = l->param[2];
	int64_t B = x->shape[0], T = x->shape[1], F = x->shape[2], U = w->shape[0];
	int64_t sc[2] = {B, F}, sw[2] = {B, T};
	struct r64 *c = out[0] = r64_new(2, sc), *al = out[1] = r64_new(2, sw);
	double *e = calloc((size_t)T, sizeof *e);
	for (int64_t b = 0; b < B; b++) {
		int64_t n = r64_len(x, b);
		double z = 0;
		for (int64_t t = 0; t < n; t++) {
			e[t] = 0;
			for (int64_t u = 0; u < U; u++) {
				double s = bb->d[u];
				for (int64_t f = 0; f < F; f++)
					s += w->d[u * F + f] * x->d[(b * T + t) * F + f];
				e[t] += v->d[u] * tanh(s);
			}
			z += exp(e[t]);
		}
		for (int64_t t = 0; t < n; t++) {
			al->d[b * T + t] = exp(e[t]) / z;
			for (int64_t f = 0; f < F; f++)
				c->d[b * F + f] += al->d[b * T + t] * x->d[(b * T + t) * F + f];
		}
	}
	free(e);
}

static void attn_bwd(struct ref_layer *l, int n_in, struct r64 *const *in, struct r64 *const *out,
		     struct r64 *const *d_out, struct r64 **d_in)
{
	(void)n_in;
	const struct r64 *x = in[0], *w = l->param[0], *bb = l->param[1], *v = l->param[2];
	const struct r64 *al = out[1];
	int64_t B = x->shape[0], T = x->shape[1], F = x->shape[2], U = w->shape[0];
	double *da = calloc((size_t)T, sizeof *da), *a = calloc((size_t)U, sizeof *a);
	for (int64_t b = 0; b < B; b++) {
		int64_t n = r64_len(x, b);
		double dot = 0;
		for (int64_t t = 0; t < n; t++) {   /* d alpha_t: from weights and from c */
			const double *h = x->d + (b * T + t) * F;
			da[t] = d_out[1] ? d_out[1]->d[b * T + t] : 0;
			for (int64_t f = 0; d_out[0] && f < F; f++) {
				da[t] += d_out[0]->d[b * F + f] * h[f];
				if (d_in[0])   /* dh_t += alpha_t dc */
					d_in[0]->d[(b * T + t) * F + f] += al->d[b * T + t] * d_out[0]->d[b * F + f];
			}
			dot += al->d[b * T + t] * da[t];
		}
		for (int64_t t = 0; t < n; t++) {
			const double *h = x->d + (b * T + t) * F;
			double de = al->d[b * T + t] * (da[t] - dot);   /* softmax */
			for (int64_t u = 0; u < U; u++) {
				double s = bb->d[u];
				for (int64_t f = 0; f < F; f++)
					s += w->d[u * F + f] * h[f];
				a[u] = tanh(s);
				l->grad[2]->d[u] += de * a[u];             /* dv += de a */
				double dz = de * v->d[u] * (1 - a[u] * a[u]);
				l->grad[1]->d[u] += dz;                    /* db += dz */
				for (int64_t f = 0; f < F; f++) {
					l->grad[0]->d[u * F + f] += dz * h[f];   /* dW += dz h^T */
					if (d_in[0])                             /* dh += W^T dz */
						d_in[0]->d[(b * T + t) * F + f] += dz * w->d[u * F + f];
				}
			}
		}
	}
	free(da);
	free(a);
}

void ref_attention_pool(struct ref_layer *l)
{
	l->kind = "attention_pool";
	l->n_out = 2;
	l->forward = attn_fwd;
	l->backward = attn_bwd;
}
