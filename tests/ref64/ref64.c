/* float64 reference layers and losses: see ref64.h. Every formula is written out per element
 * from its definition; nothing here shares code with the float32 kernels. */
#include "ref64.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <plexus/tensor.h>

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
/* Every layer and direction runs per example over its valid steps only, as PyTorch runs a
 * packed sequence (padded steps neither exist nor change anything); the reverse direction from
 * the last valid step down. Options: opt[0] kind, [1] H, [2] layers, [3] directions, [4]
 * readout, [5] gru reset_after; the rest (struct ref_rec_opts) in struct rec_state, which
 * l->cache holds from the constructor to ref_layer_free, with the stateful carry and the
 * tbptt constants.
 *
 * Initial states: the h0/c0 inputs (in[1], in[2], [B, layers*dirs, H] like PyTorch's h_0
 * transposed), else the stateful carry (the final states of the forward before the last
 * commit: a constant, detached), else zeros.
 *
 * tbptt K: the truncated gradient is the exact gradient of the function in which the state
 * crossing each chunk boundary, at the absolute steps tau = K, 2K, ... < T (between steps tau-1
 * and tau, in both directions), is a constant (a stop-gradient, PyTorch's detach). This
 * reference computes that function: the first forward after the constructor or commit (the
 * check's forward at the unperturbed point) stores the states that cross boundaries, and every
 * later forward (the finite differences) uses the stored values there, so the central
 * differences check the very function whose gradient backward computes. A padded step keeps
 * the state, so a boundary within an example's padding [n, T-1] detaches the state that
 * crosses the padding: the final state (forward direction) or the initial state (reverse).
 *
 * dropout p between layers (the reference is then one of training mode): layer l's outputs
 * (l < layers-1) at every step are multiplied by m in {0, 1/(1-p)}, m = 0 iff u < p for a
 * u = px_rng_uniform of a generator seeded px_rng_seed_label(seed, "forward") afresh for every
 * forward, as core/harness.c seeds the kernel's, so the masks are the kernel's, provided the
 * draws are made in the kernel's documented order (enum ref_drop_order): all of layer 0's
 * mask, then layer 1's, ...; plugins/common/recurrent.c draws each mask over its feature-major
 * layout with the batch padded to lanes, element (feature j, step t, lane p) at
 * (j*T + t)*P + p, P = B rounded up to a multiple of 16 (PX_REC_LANES), drawing for padded
 * steps and lanes p >= B too; plugins/lstm_ref draws over [B][T][D*H]. p is compared as the
 * float both kernels hold; the kept value is 1/(1-p) exactly. */
#define REC_LANES 16

struct rec_state {
	struct ref_rec_opts o;
	int64_t B, T, F, width;   /* of the last forward; width = max(F, D*H) */
	/* per lane ld = l*D + d, example b, valid step t at RC_IDX: the state entering the step
	 * as used (hp, cp), the state after it (h, c), the activated gates and the gru's
	 * pre-product of the n gate (hn) */
	double *hp, *cp, *h, *c, *gates, *hn;
	double *layer_in;   /* [layers][B][T][width]: each layer's input (after dropout) */
	double *mask;       /* [layers-1][B][T][D*H]: the dropout masks, or NULL */
	int64_t *argmax;    /* [B][D*H]: the step of the max readout */
	double *fin_h, *fin_c;       /* [B][layers*D][H]: the last forward's final states */
	double *carry_h, *carry_c;   /* stateful: the committed final states, same layout */
	int64_t carry_b;             /* their batch size; 0: nothing carried */
	double *bnd_h, *bnd_c;       /* tbptt: [layers*D][B][T+1][H] the states crossing a
				      * boundary (slot t: entering step t; slot T: the final state) */
	int64_t bnd_b, bnd_t;
	bool bnd_ready;              /* stored: later forwards use them */
	double *work;                /* cell_step's and cell_step_bwd's scratch */
	int64_t work_n;
};

static int gates_of(int64_t kind)
{
	return kind == REF_LSTM ? 4 : kind == REF_GRU ? 3 : 1;
}

static double sigm(double x)
{
	return 1.0 / (1.0 + exp(-x));
}

/* n zeroed doubles of scratch, kept in st (one step at a time uses them; no malloc per step) */
static double *rec_work(struct rec_state *st, int64_t n)
{
	if (n > st->work_n) {
		free(st->work);
		st->work = malloc((size_t)n * sizeof(double));
		if (!st->work)
			abort();
		st->work_n = n;
	}
	memset(st->work, 0, (size_t)n * sizeof(double));
	return st->work;
}

#define RC_IDX(st, l, D, d, b, t, H) (((((l) * (D) + (d)) * (st)->B + (b)) * (st)->T + (t)) * (H))

/* One step of the cell for example b: (h_prev, c_prev) -> (h, c); stores the gates. */
static void cell_step(struct ref_layer *L, int64_t ld, const double *x, int64_t in_w,
		      const double *h_prev, const double *c_prev, double *h, double *c,
		      double *gates, double *hn)
{
	struct rec_state *st = L->cache;
	int64_t kind = L->opt[0], H = L->opt[1], G = gates_of(kind);
	const struct r64 *wih = L->param[ld * 4], *whh = L->param[ld * 4 + 1];
	const struct r64 *bih = L->param[ld * 4 + 2], *bhh = L->param[ld * 4 + 3];
	double *a = rec_work(st, 2 * G * H), *r = a + G * H;
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
		} else if (kind == REF_RNN_RELU) {   /* h' = max(0, W_ih x + b_ih + W_hh h + b_hh) */
			double s = a[j] + r[j];
			h[j] = s > 0 ? s : 0;
			gates[j] = h[j];
			if (st->o.margins)   /* the kink at s = 0 */
				st->o.margins->relu = fmin(st->o.margins->relu, fabs(s));
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
	double *da = rec_work(L->cache, 2 * G * H + H), *dr = da + G * H;
	double *dhr = dr + G * H;   /* gru reset-before: d loss / d (r*h) */
	for (int64_t j = 0; j < H; j++) {
		if (kind == REF_RNN_TANH) {
			da[j] = dr[j] = dh[j] * (1 - gates[j] * gates[j]);
		} else if (kind == REF_RNN_RELU) {   /* h > 0 iff s > 0 (s kept away from 0) */
			da[j] = dr[j] = gates[j] > 0 ? dh[j] : 0;
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
}

/* Is there a tbptt boundary tau (a multiple of K, 0 < tau < T) in [lo, hi]? */
static bool rec_cut(const struct rec_state *st, int64_t lo, int64_t hi)
{
	int64_t K = st->o.tbptt;
	if (K <= 0)
		return false;
	lo = lo < 1 ? 1 : lo;
	hi = hi > st->T - 1 ? st->T - 1 : hi;
	return (lo + K - 1) / K * K <= hi;
}

/* Is the state entering valid step t of direction d (example of length n) a constant?
 * Forward: it comes from step t-1 across tau = t (none for t = 0: the initial state). Reverse:
 * from step t+1 across tau = t+1, or for t = n-1 the initial state across the padding. */
static bool rec_cut_into(const struct rec_state *st, int64_t d, int64_t n, int64_t t)
{
	if (!d)
		return rec_cut(st, t, t);
	return t == n - 1 ? rec_cut(st, n, st->T - 1) : rec_cut(st, t + 1, t + 1);
}

/* Is the final state a constant? Forward: it crosses the padding [n, T-1] from step n-1.
 * Reverse: it leaves step 0 (no boundary), or with no valid step it is the initial state
 * that crossed all of [0, T-1]. */
static bool rec_cut_final(const struct rec_state *st, int64_t d, int64_t n)
{
	return (!d || n == 0) && rec_cut(st, n, st->T - 1);
}

/* The state (*h, *c) across a cut: the stored constant (stored first when recording). */
static void rec_bound(struct rec_state *st, bool record, int64_t ld, int64_t b, int64_t slot,
		      int64_t H, const double **h, const double **c)
{
	size_t at = (size_t)(((ld * st->B + b) * (st->T + 1) + slot) * H);
	if (record) {
		memcpy(st->bnd_h + at, *h, (size_t)H * sizeof(double));
		memcpy(st->bnd_c + at, *c, (size_t)H * sizeof(double));
	}
	*h = st->bnd_h + at;
	*c = st->bnd_c + at;
}

/* The dropout masks of one forward, [layers-1][B][T][DH], in the kernel's draw order. */
static void rec_masks(struct rec_state *st, int64_t NL, int64_t DH)
{
	int64_t B = st->B, T = st->T, P = (B + REC_LANES - 1) / REC_LANES * REC_LANES;
	double thr = (double)(float)st->o.dropout, keep = 1.0 / (1.0 - st->o.dropout);
	struct px_rng rng;
	px_rng_seed_label(&rng, st->o.seed, "forward");
	for (int64_t l = 0; l + 1 < NL; l++) {
		double *m = st->mask + l * B * T * DH;
		if (st->o.drop_order == REF_DROP_LANES) {
			for (int64_t j = 0; j < DH; j++)
				for (int64_t t = 0; t < T; t++)
					for (int64_t p = 0; p < P; p++) {
						double u = px_rng_uniform(&rng);
						if (p < B)
							m[(p * T + t) * DH + j] = u < thr ? 0 : keep;
					}
		} else {
			for (int64_t i = 0; i < B * T * DH; i++)
				m[i] = px_rng_uniform(&rng) < thr ? 0 : keep;
		}
	}
}

/* Frees what one forward allocated (not the carry, the tbptt constants or the options). */
static void rec_forward_free(struct rec_state *st)
{
	double **p[] = {&st->hp, &st->cp, &st->h, &st->c, &st->gates, &st->hn, &st->layer_in,
			&st->mask, &st->fin_h, &st->fin_c};
	for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) {
		free(*p[i]);
		*p[i] = NULL;
	}
	free(st->argmax);
	st->argmax = NULL;
}

static double *rec_zeros(int64_t n)
{
	double *p = calloc((size_t)(n > 0 ? n : 1), sizeof(double));
	if (!p)
		abort();
	return p;
}

/* out [B][DH] = the readout of seq [B][T][DH] over each example's valid steps */
static void rec_readout(struct ref_layer *L, struct rec_state *st, const struct r64 *x,
			const struct r64 *seq, struct r64 *o)
{
	int64_t H = L->opt[1], DH = L->opt[3] * H, T = st->T;
	for (int64_t b = 0; b < st->B; b++) {
		int64_t n = r64_len(x, b);
		for (int64_t j = 0; n > 0 && j < DH; j++) {
			const double *s = seq->d + b * T * DH + j;
			if (L->opt[4] == REF_LAST) {   /* forward at n-1, backward at 0 */
				o->d[b * DH + j] = s[(j < H ? n - 1 : 0) * DH];
			} else if (L->opt[4] == REF_MEAN) {
				for (int64_t t = 0; t < n; t++)
					o->d[b * DH + j] += s[t * DH] / (double)n;
			} else {   /* max over the valid steps; the gap to the runner-up is the margin */
				int64_t am = 0;
				for (int64_t t = 1; t < n; t++)
					if (s[t * DH] > s[am * DH])
						am = t;
				double second = -INFINITY;
				for (int64_t t = 0; t < n; t++)
					if (t != am)
						second = fmax(second, s[t * DH]);
				o->d[b * DH + j] = s[am * DH];
				st->argmax[b * DH + j] = am;
				if (n > 1 && st->o.margins)   /* one valid step: no runner-up */
					st->o.margins->max_gap = fmin(st->o.margins->max_gap,
								      s[am * DH] - second);
			}
		}
	}
}

static void rec_fwd(struct ref_layer *L, int n_in, struct r64 *const *in, struct r64 **out)
{
	struct rec_state *st = L->cache;
	const struct r64 *x = in[0];
	const struct r64 *h0 = st->o.h0 && n_in > 1 ? in[1] : NULL;
	const struct r64 *c0 = st->o.c0 && n_in > 2 ? in[2] : NULL;
	int64_t kind = L->opt[0], H = L->opt[1], NL = L->opt[2], D = L->opt[3], G = gates_of(kind);
	int64_t B = x->shape[0], T = x->shape[1], F = x->shape[2], DH = D * H, nl = NL * D;
	bool record = st->o.tbptt > 0 && !st->bnd_ready;
	rec_forward_free(st);
	st->B = B;
	st->T = T;
	st->F = F;
	st->width = F > DH ? F : DH;
	int64_t W = st->width, hs = nl * B * T * H;
	st->hp = rec_zeros(hs);
	st->cp = rec_zeros(hs);
	st->h = rec_zeros(hs);
	st->c = rec_zeros(hs);
	st->hn = rec_zeros(hs);
	st->gates = rec_zeros(hs * G);
	st->layer_in = rec_zeros(NL * B * T * W);
	st->fin_h = rec_zeros(B * nl * H);
	st->fin_c = rec_zeros(B * nl * H);
	st->argmax = calloc((size_t)(B * DH), sizeof *st->argmax);
	if (!st->argmax)
		abort();
	if (record) {
		free(st->bnd_h);
		free(st->bnd_c);
		st->bnd_h = rec_zeros(nl * B * (T + 1) * H);
		st->bnd_c = rec_zeros(nl * B * (T + 1) * H);
		st->bnd_b = B;
		st->bnd_t = T;
	} else if (st->o.tbptt > 0 && (st->bnd_b != B || st->bnd_t != T)) {
		fprintf(stderr, "ref_recurrent: tbptt constants of a [%lld,%lld] batch, now [%lld,%lld]"
			" (commit between batches)\n", (long long)st->bnd_b, (long long)st->bnd_t,
			(long long)B, (long long)T);
		abort();
	}
	if (st->o.dropout > 0 && NL > 1) {
		st->mask = rec_zeros((NL - 1) * B * T * DH);
		rec_masks(st, NL, DH);
	}
	double *zero = rec_zeros(H);
	for (int64_t b = 0; b < B; b++)
		for (int64_t t = 0; t < T; t++)
			memcpy(st->layer_in + (b * T + t) * W, x->d + (b * T + t) * F,
			       (size_t)F * sizeof(double));
	int64_t so[3] = {B, T, DH}, ss[3] = {B, nl, H};
	struct r64 *seq = r64_new(3, so), *state = r64_new(3, ss), *cell = r64_new(3, ss);
	seq->lengths = x->lengths;
	for (int64_t l = 0; l < NL; l++) {
		int64_t in_w = l == 0 ? F : DH;
		double *lin = st->layer_in + l * B * T * W;
		for (int64_t d = 0; d < D; d++)
			for (int64_t b = 0; b < B; b++) {
				int64_t n = r64_len(x, b), ld = l * D + d, s0 = (b * nl + ld) * H;
				bool carried = st->o.stateful && st->carry_b == B;
				const double *hp = h0 ? h0->d + s0 : carried ? st->carry_h + s0 : zero;
				const double *cp = c0 ? c0->d + s0 : carried ? st->carry_c + s0 : zero;
				for (int64_t k = 0; k < n; k++) {
					int64_t t = d ? n - 1 - k : k;
					size_t at = (size_t)RC_IDX(st, l, D, d, b, t, H);
					if (rec_cut_into(st, d, n, t))
						rec_bound(st, record, ld, b, t, H, &hp, &cp);
					memcpy(st->hp + at, hp, (size_t)H * sizeof(double));
					memcpy(st->cp + at, cp, (size_t)H * sizeof(double));
					cell_step(L, ld, lin + (b * T + t) * W, in_w, hp, cp, st->h + at,
						  st->c + at, st->gates + at * (size_t)G, st->hn + at);
					hp = st->h + at;
					cp = st->c + at;
				}
				if (rec_cut_final(st, d, n))
					rec_bound(st, record, ld, b, T, H, &hp, &cp);
				memcpy(st->fin_h + s0, hp, (size_t)H * sizeof(double));
				memcpy(st->fin_c + s0, cp, (size_t)H * sizeof(double));
			}
		/* this layer's outputs: the next layer's input (times the dropout mask), or seq */
		for (int64_t b = 0; b < B; b++)
			for (int64_t t = 0; t < r64_len(x, b); t++)
				for (int64_t d = 0; d < D; d++)
					for (int64_t j = 0; j < H; j++) {
						double h = st->h[RC_IDX(st, l, D, d, b, t, H) + j];
						int64_t e = (b * T + t) * DH + d * H + j;
						if (l + 1 == NL)
							seq->d[e] = h;
						else
							st->layer_in[((l + 1) * B * T + b * T + t) * W + d * H + j] =
								h * (st->mask ? st->mask[l * B * T * DH + e] : 1);
					}
	}
	memcpy(state->d, st->fin_h, (size_t)(B * nl * H) * sizeof(double));
	memcpy(cell->d, st->fin_c, (size_t)(B * nl * H) * sizeof(double));
	struct r64 *o;
	if (L->opt[4] == REF_SEQUENCE) {
		o = r64_like(seq);
		memcpy(o->d, seq->d, (size_t)r64_numel(seq) * sizeof(double));
	} else {
		int64_t s2[2] = {B, DH};
		o = r64_new(2, s2);
		rec_readout(L, st, x, seq, o);
	}
	out[0] = o;
	out[1] = seq;
	out[2] = state;
	if (kind == REF_LSTM)
		out[3] = cell;
	else
		r64_free(cell);
	st->bnd_ready = st->o.tbptt > 0;
	free(zero);
}

static void rec_bwd(struct ref_layer *L, int n_in, struct r64 *const *in, struct r64 *const *out,
		    struct r64 *const *d_out, struct r64 **d_in)
{
	(void)out;
	const struct r64 *x = in[0];
	struct rec_state *st = L->cache;
	int64_t kind = L->opt[0], H = L->opt[1], NL = L->opt[2], D = L->opt[3], G = gates_of(kind);
	int64_t B = st->B, T = st->T, F = st->F, DH = D * H, W = st->width, nl = NL * D;
	struct r64 *d_h0 = st->o.h0 && n_in > 1 ? d_in[1] : NULL;
	struct r64 *d_c0 = st->o.c0 && n_in > 2 ? d_in[2] : NULL;
	/* d of every layer's outputs h_t [B][T][DH] (top: from out and seq) */
	double *dseq = rec_zeros(B * T * DH), *dlin = rec_zeros(B * T * W);
	for (int64_t b = 0; b < B; b++) {
		int64_t n = r64_len(x, b);
		for (int64_t t = 0; t < n; t++)
			for (int64_t j = 0; j < DH; j++) {
				const struct r64 *go = d_out[0];
				int64_t ro = L->opt[4];
				double g = d_out[1] ? d_out[1]->d[(b * T + t) * DH + j] : 0;
				if (go && ro == REF_SEQUENCE)
					g += go->d[(b * T + t) * DH + j];
				else if (go && ro == REF_MEAN)
					g += go->d[b * DH + j] / (double)n;
				else if (go && ro == REF_MAX && t == st->argmax[b * DH + j])
					g += go->d[b * DH + j];
				else if (go && ro == REF_LAST && t == (j < H ? n - 1 : 0))
					g += go->d[b * DH + j];
				dseq[(b * T + t) * DH + j] = g;
			}
	}
	double *dh = rec_zeros(H), *dc = rec_zeros(H), *dhp = rec_zeros(H), *dcp = rec_zeros(H);
	for (int64_t l = NL - 1; l >= 0; l--) {
		int64_t in_w = l == 0 ? F : DH;
		double *lin = st->layer_in + l * B * T * W;
		memset(dlin, 0, (size_t)(B * T * W) * sizeof(double));
		for (int64_t d = 0; d < D; d++)
			for (int64_t b = 0; b < B; b++) {
				int64_t n = r64_len(x, b), ld = l * D + d, s0 = (b * nl + ld) * H;
				bool fin_cut = rec_cut_final(st, d, n);
				for (int64_t j = 0; j < H; j++) {   /* from state (h_n) and cell (c_n) */
					dh[j] = d_out[2] && !fin_cut ? d_out[2]->d[s0 + j] : 0;
					dc[j] = kind == REF_LSTM && d_out[3] && !fin_cut ? d_out[3]->d[s0 + j] : 0;
				}
				for (int64_t k = n - 1; k >= 0; k--) {
					int64_t t = d ? n - 1 - k : k;
					size_t at = (size_t)RC_IDX(st, l, D, d, b, t, H);
					for (int64_t j = 0; j < H; j++)
						dh[j] += dseq[(b * T + t) * DH + d * H + j];
					memset(dhp, 0, (size_t)H * sizeof(double));
					memset(dcp, 0, (size_t)H * sizeof(double));
					cell_step_bwd(L, ld, lin + (b * T + t) * W, in_w, st->hp + at, st->cp + at,
						      st->c + at, st->gates + at * (size_t)G, st->hn + at, dh, dc,
						      dlin + (b * T + t) * W, dhp, dcp);
					bool cut = rec_cut_into(st, d, n, t);   /* a constant: no gradient */
					for (int64_t j = 0; j < H; j++) {
						dh[j] = cut ? 0 : dhp[j];
						dc[j] = cut ? 0 : dcp[j];
					}
				}
				for (int64_t j = 0; j < H; j++) {   /* what is left: the initial state's */
					if (d_h0)
						d_h0->d[s0 + j] += dh[j];
					if (d_c0)
						d_c0->d[s0 + j] += dc[j];
				}
			}
		if (l > 0)   /* the layer below's outputs get dlin, through the dropout mask */
			for (int64_t i = 0; i < B * T; i++)
				for (int64_t j = 0; j < DH; j++)
					dseq[i * DH + j] = dlin[i * W + j] *
							   (st->mask ? st->mask[(l - 1) * B * T * DH + i * DH + j] : 1);
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
}

/* The last forward's final states become the next forward's initial states (stateful), and
 * the next forward the point whose boundary states tbptt keeps; the margins start afresh. */
static void rec_commit(struct ref_layer *L)
{
	struct rec_state *st = L->cache;
	if (st->o.stateful && st->fin_h) {
		int64_t n = st->B * L->opt[2] * L->opt[3] * L->opt[1];
		free(st->carry_h);
		free(st->carry_c);
		st->carry_h = rec_zeros(n);
		st->carry_c = rec_zeros(n);
		memcpy(st->carry_h, st->fin_h, (size_t)n * sizeof(double));
		memcpy(st->carry_c, st->fin_c, (size_t)n * sizeof(double));
		st->carry_b = st->B;
	}
	st->bnd_ready = false;
	if (st->o.margins)
		*st->o.margins = (struct ref_rec_margins){INFINITY, INFINITY};
}

static void rec_cache_free(struct ref_layer *L)
{
	struct rec_state *st = L->cache;
	if (st) {
		rec_forward_free(st);
		free(st->carry_h);
		free(st->carry_c);
		free(st->bnd_h);
		free(st->bnd_c);
		free(st->work);
		memset(st, 0, sizeof *st);
	}
}

void ref_recurrent_opts(struct ref_layer *l, enum ref_rec_kind kind, int64_t hidden,
			int64_t layers, bool bidirectional, enum ref_readout readout,
			bool gru_reset_after, const struct ref_rec_opts *o)
{
	struct rec_state *st = calloc(1, sizeof *st);
	if (!st)
		abort();
	if (o)
		st->o = *o;
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
	l->commit = rec_commit;
	l->cache = st;
	l->cache_free = rec_cache_free;
	if (st->o.margins)
		*st->o.margins = (struct ref_rec_margins){INFINITY, INFINITY};
}

void ref_recurrent(struct ref_layer *l, enum ref_rec_kind kind, int64_t hidden, int64_t layers,
		   bool bidirectional, enum ref_readout readout, bool gru_reset_after)
{
	ref_recurrent_opts(l, kind, hidden, layers, bidirectional, readout, gru_reset_after, NULL);
}

/* The cell on its own: one step of cell_step for every example. s_prev and s_next are
 * [S][B][H] (h, then c for lstm), as struct px_cell_ops keeps them; backward runs the step
 * again for its gates, then cell_step_bwd. */
static void rcell_fwd(struct ref_layer *L, int n_in, struct r64 *const *in, struct r64 **out)
{
	(void)n_in;
	const struct r64 *x = in[0], *s = in[1];
	int64_t H = L->opt[1], G = gates_of(L->opt[0]), B = x->shape[0], F = x->shape[1];
	int64_t S = s->shape[0], BH = B * H;
	struct r64 *o = r64_like(s);
	double *gates = rec_zeros(G * H), *hn = rec_zeros(H), *c = rec_zeros(H), *zero = rec_zeros(H);
	for (int64_t b = 0; b < B; b++)
		cell_step(L, 0, x->d + b * F, F, s->d + b * H, S > 1 ? s->d + BH + b * H : zero,
			  o->d + b * H, S > 1 ? o->d + BH + b * H : c, gates, hn);
	out[0] = o;
	free(gates);
	free(hn);
	free(c);
	free(zero);
}

static void rcell_bwd(struct ref_layer *L, int n_in, struct r64 *const *in,
		      struct r64 *const *out, struct r64 *const *d_out, struct r64 **d_in)
{
	(void)n_in;
	(void)out;
	const struct r64 *x = in[0], *s = in[1];
	int64_t H = L->opt[1], G = gates_of(L->opt[0]), B = x->shape[0], F = x->shape[1];
	int64_t S = s->shape[0], BH = B * H;
	double *gates = rec_zeros(G * H), *hn = rec_zeros(H), *h = rec_zeros(H), *c = rec_zeros(H);
	double *zero = rec_zeros(H), *dh = rec_zeros(H), *dc = rec_zeros(H);
	double *dhp = rec_zeros(H), *dcp = rec_zeros(H);
	for (int64_t b = 0; b < B; b++) {
		const double *cp = S > 1 ? s->d + BH + b * H : zero;
		cell_step(L, 0, x->d + b * F, F, s->d + b * H, cp, h, c, gates, hn);
		for (int64_t j = 0; j < H; j++) {
			dh[j] = d_out[0] ? d_out[0]->d[b * H + j] : 0;
			dc[j] = d_out[0] && S > 1 ? d_out[0]->d[BH + b * H + j] : 0;
		}
		memset(dhp, 0, (size_t)H * sizeof(double));
		memset(dcp, 0, (size_t)H * sizeof(double));
		cell_step_bwd(L, 0, x->d + b * F, F, s->d + b * H, cp, c, gates, hn, dh, dc,
			      d_in[0] ? d_in[0]->d + b * F : NULL, dhp, dcp);
		for (int64_t j = 0; d_in[1] && j < H; j++) {
			d_in[1]->d[b * H + j] += dhp[j];
			if (S > 1)
				d_in[1]->d[BH + b * H + j] += dcp[j];
		}
	}
	double *p[] = {gates, hn, h, c, zero, dh, dc, dhp, dcp};
	for (size_t i = 0; i < sizeof p / sizeof p[0]; i++)
		free(p[i]);
}

void ref_rec_cell(struct ref_layer *l, enum ref_rec_kind kind, int64_t hidden,
		  bool gru_reset_after, struct ref_rec_margins *margins)
{
	struct rec_state *st = calloc(1, sizeof *st);
	if (!st)
		abort();
	st->o.margins = margins;
	if (margins)
		*margins = (struct ref_rec_margins){INFINITY, INFINITY};
	l->kind = kind == REF_LSTM ? "lstm cell" : kind == REF_GRU ? "gru cell" : "rnn cell";
	l->n_out = 1;
	l->opt[0] = kind;
	l->opt[1] = hidden;
	l->opt[2] = 1;
	l->opt[3] = 1;
	l->opt[5] = gru_reset_after;
	l->forward = rcell_fwd;
	l->backward = rcell_bwd;
	l->cache = st;
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

/* ------------------------------------------------------------------ layernorm (example) */
/* The example plugin's layernorm (examples/plugin-template), over the last dim of each valid
 * row: mu = mean_j x_j, var = mean_j (x_j - mu)^2, y_j = (x_j - mu) / sqrt(var + eps) * w_j + b_j
 * (y = xhat without affine). Written by the chain rule through mu and var, not the kernel's
 * closed form. opt[0]: affine; fopt[0]: eps. */
static void ln_stats(const double *x, int64_t F, double eps, double *mu, double *s)
{
	double m = 0, v = 0;
	for (int64_t j = 0; j < F; j++)
		m += x[j];
	m /= (double)F;
	for (int64_t j = 0; j < F; j++)
		v += (x[j] - m) * (x[j] - m);
	*mu = m;
	*s = sqrt(v / (double)F + eps);   /* s = sqrt(var + eps) */
}

static void ln_fwd(struct ref_layer *l, int n_in, struct r64 *const *in, struct r64 **out)
{
	(void)n_in;
	const struct r64 *x = in[0];
	int64_t F = x->shape[x->ndim - 1], rows = r64_numel(x) / F;
	bool ragged = x->lengths && x->ndim >= 3;
	struct r64 *y = out[0] = r64_like(x);
	for (int64_t r = 0; r < rows; r++) {
		if (!row_valid(x, r, F, ragged))
			continue;
		double mu, sd;
		ln_stats(x->d + r * F, F, l->fopt[0], &mu, &sd);
		for (int64_t j = 0; j < F; j++) {
			double xh = (x->d[r * F + j] - mu) / sd;
			y->d[r * F + j] = l->opt[0] ? xh * l->param[0]->d[j] + l->param[1]->d[j] : xh;
		}
	}
}

/* g_j = dy_j w_j; dxhat -> dx_j = g_j / s + dvar 2 (x_j - mu) / F + dmu / F with
 * dvar = sum_k g_k (x_k - mu) (-1/2) s^-3 and dmu = -sum_k g_k / s (the dvar path through mu is
 * sum_k (x_k - mu) = 0); dw_j += dy_j xhat_j; db_j += dy_j */
static void ln_bwd(struct ref_layer *l, int n_in, struct r64 *const *in, struct r64 *const *out,
		   struct r64 *const *d_out, struct r64 **d_in)
{
	(void)n_in;
	(void)out;
	const struct r64 *x = in[0], *dy = d_out[0];
	int64_t F = x->shape[x->ndim - 1], rows = r64_numel(x) / F;
	bool ragged = x->lengths && x->ndim >= 3;
	for (int64_t r = 0; r < rows; r++) {
		if (!row_valid(x, r, F, ragged))
			continue;
		const double *xr = x->d + r * F, *dyr = dy->d + r * F;
		double mu, sd, dvar = 0, dmu = 0;
		ln_stats(xr, F, l->fopt[0], &mu, &sd);
		for (int64_t j = 0; j < F; j++) {
			double g = l->opt[0] ? dyr[j] * l->param[0]->d[j] : dyr[j];
			dvar += g * (xr[j] - mu) * -0.5 / (sd * sd * sd);
			dmu -= g / sd;
			if (l->opt[0]) {
				l->grad[0]->d[j] += dyr[j] * (xr[j] - mu) / sd;
				l->grad[1]->d[j] += dyr[j];
			}
		}
		for (int64_t j = 0; d_in[0] && j < F; j++) {
			double g = l->opt[0] ? dyr[j] * l->param[0]->d[j] : dyr[j];
			d_in[0]->d[r * F + j] += g / sd + dvar * 2 * (xr[j] - mu) / (double)F +
						 dmu / (double)F;
		}
	}
}

void ref_layernorm(struct ref_layer *l, bool affine, double eps)
{
	l->kind = "layernorm";
	l->n_out = 1;
	l->opt[0] = affine;
	l->fopt[0] = eps;
	l->forward = ln_fwd;
	l->backward = ln_bwd;
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
