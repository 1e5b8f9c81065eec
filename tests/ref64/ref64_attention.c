/* float64 reference of the attention_decoder: see ref64_attention.h. Every formula is written
 * out per element from its definition (docs/attention.md); nothing here shares code with the
 * float32 kernel (plugins/attention/decoder.c), which was read only for its documented
 * semantics: parameter order and layouts, the teacher-forcing schedule, <eos> handling and the
 * beam search's candidate rules. */
#include "ref64_attention.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* parameters, in the kernel's order when present */
enum {
	P_EMB, P_WIH, P_WHH, P_BIH, P_BHH,   /* embed.weight, cell.* */
	P_AW, P_AU, P_WA, P_AV, P_WC,        /* attn.W, attn.U, attn.W_a, attn.v, attn.W_c */
	P_OW, P_OB,                          /* out.weight, out.bias */
	P_BW0, P_BB0, P_BW1, P_BB1,          /* bridge.*, bridge_cell.* */
	P_N
};

static const char *const p_names[P_N] = {
	"embed.weight", "cell.weight_ih", "cell.weight_hh", "cell.bias_ih", "cell.bias_hh",
	"attn.W", "attn.U", "attn.W_a", "attn.v", "attn.W_c", "out.weight", "out.bias",
	"bridge.weight", "bridge.bias", "bridge_cell.weight", "bridge_cell.bias",
};

/* The decoder: options (for the layer's life), the geometry and parameter pointers of the
 * current forward, and what a teacher-forced forward keeps for backward. */
struct adec {
	struct ref_attdec_opts o;
	int64_t V, E, H, A, D, O, Xin, G, ns;   /* G gates, ns state parts (h; c) */
	int64_t B, T, TI;
	bool init[2], bridge[2];
	int64_t slots[2], F[2], dirs[2], S[2];
	int idx[P_N];                            /* index into l->param, -1: absent */
	const double *p[P_N];                    /* values */
	double *g[P_N];                          /* grads */
	/* teacher forcing, per example b and step i < T */
	int32_t *tlen, *mlen;                    /* [B] clamped lengths */
	int64_t *y;                              /* [B][T] token consumed by step i */
	double *x;                               /* [B][T][Xin] cell input */
	double *s;                               /* [B][T+1][ns*H]: s[b][0] = s0 */
	double *alpha, *ctx, *feat;              /* [B][T][TI], [B][T][D], [B][T][O] */
	double *x0[2];                           /* [B][S]: the gathered init (top layer) */
	/* scratch of one step */
	double *gi, *gh, *dai, *dah, *e, *dx, *ds, *dsp, *dq, *dfeed, *dctx, *dfeat, *dcat, *du;
};

static void *xcalloc(int64_t n, size_t size)
{
	void *p = calloc((size_t)(n > 0 ? n : 1), size);
	if (!p)
		abort();
	return p;
}

static void bufs_free(struct adec *d)
{
	double **f[] = {&d->x, &d->s, &d->alpha, &d->ctx, &d->feat, &d->x0[0], &d->x0[1], &d->gi,
			&d->gh, &d->dai, &d->dah, &d->e, &d->dx, &d->ds, &d->dsp, &d->dq, &d->dfeed,
			&d->dctx, &d->dfeat, &d->dcat, &d->du};
	for (size_t k = 0; k < sizeof f / sizeof f[0]; k++) {
		free(*f[k]);
		*f[k] = NULL;
	}
	free(d->tlen);
	free(d->mlen);
	free(d->y);
	d->tlen = d->mlen = NULL;
	d->y = NULL;
}

static void adec_cache_free(struct ref_layer *l)
{
	if (l->cache)
		bufs_free(l->cache);
}

/* ------------------------------------------------------------------ layout */
static int64_t dirs_of(const struct ref_attdec_opts *o, int64_t slots, int64_t F, int64_t D)
{
	return o->init_dirs ? o->init_dirs : (slots % 2 == 0 && D == 2 * F) ? 2 : 1;
}

/* idx[k]: the kernel's index of parameter k (-1 absent); returns the count */
static int layout(const struct ref_attdec_opts *o, const bool *bridge, int *idx)
{
	int n = 0;
	for (int k = 0; k < P_N; k++)
		idx[k] = -1;
	for (int k = P_EMB; k <= P_BHH; k++)
		idx[k] = n++;
	if (o->attention == REF_BAHDANAU) {
		idx[P_AW] = n++;
		idx[P_AU] = n++;
		idx[P_AV] = n++;
	} else {
		if (o->score != REF_SCORE_DOT)
			idx[P_WA] = n++;
		if (o->score == REF_SCORE_CONCAT)
			idx[P_AV] = n++;
		idx[P_WC] = n++;
	}
	idx[P_OW] = n++;
	idx[P_OB] = n++;
	for (int w = 0; w < 2; w++)
		if (bridge[w]) {
			idx[P_BW0 + 2 * w] = n++;
			idx[P_BB0 + 2 * w] = n++;
		}
	return n;
}

int ref_attdec_param_names(const struct ref_attdec_opts *o, int64_t D, const int64_t *init_slots,
			   const int64_t *init_feat, const char **names)
{
	bool bridge[2];
	int idx[P_N];
	for (int w = 0; w < 2; w++)
		bridge[w] = init_slots[w] > 0 &&
			    dirs_of(o, init_slots[w], init_feat[w], D) * init_feat[w] != o->hidden;
	int n = layout(o, bridge, idx);
	for (int k = 0; k < P_N; k++)
		if (idx[k] >= 0)
			names[idx[k]] = p_names[k];
	return n;
}

/* Geometry of this forward from the inputs, parameter pointers (shapes checked), buffers. */
static void bind(struct ref_layer *l, int n_in, struct r64 *const *in)
{
	struct adec *d = l->cache;
	const struct ref_attdec_opts *o = &d->o;
	const struct r64 *y = in[0], *mem = in[1];
	bufs_free(d);
	d->V = o->vocab;
	d->E = o->embed;
	d->H = o->hidden;
	d->A = o->attn_units ? o->attn_units : o->hidden;
	d->D = mem->shape[2];
	d->G = o->cell == REF_LSTM ? 4 : o->cell == REF_GRU ? 3 : 1;
	d->ns = o->cell == REF_LSTM ? 2 : 1;
	d->B = mem->shape[0];
	d->TI = mem->shape[1];
	d->T = y ? y->shape[1] : o->max_len;
	bool luong = o->attention == REF_LUONG;
	d->O = luong ? d->H : d->H + d->D;
	d->Xin = d->E + (luong ? (o->input_feeding ? d->H : 0) : d->D);
	for (int w = 0; w < 2; w++) {
		const struct r64 *t = n_in > 2 + w ? in[2 + w] : NULL;
		d->init[w] = t != NULL;
		d->bridge[w] = false;
		if (!t)
			continue;
		d->slots[w] = t->ndim == 3 ? t->shape[1] : 1;
		d->F[w] = t->shape[t->ndim - 1];
		d->dirs[w] = dirs_of(o, d->slots[w], d->F[w], d->D);
		d->S[w] = d->dirs[w] * d->F[w];
		d->bridge[w] = d->S[w] != d->H;
	}
	int n = layout(o, d->bridge, d->idx);
	if (n != l->n_params) {
		fprintf(stderr, "ref attention_decoder: %d parameters, expected %d\n", l->n_params, n);
		abort();
	}
	int64_t H = d->H, GH = d->G * d->H, A = d->A, D = d->D;
	int64_t numel[P_N] = {
		[P_EMB] = d->V * d->E, [P_WIH] = GH * d->Xin, [P_WHH] = GH * H, [P_BIH] = GH,
		[P_BHH] = GH, [P_AW] = A * H, [P_AU] = A * D, [P_AV] = A,
		[P_WA] = o->score == REF_SCORE_CONCAT ? A * (H + D) : H * D, [P_WC] = H * (D + H),
		[P_OW] = d->V * d->O, [P_OB] = d->V, [P_BW0] = H * d->S[0], [P_BB0] = H,
		[P_BW1] = H * d->S[1], [P_BB1] = H,
	};
	for (int k = 0; k < P_N; k++) {
		d->p[k] = NULL;
		d->g[k] = NULL;
		if (d->idx[k] < 0)
			continue;
		struct r64 *v = l->param[d->idx[k]];
		if (r64_numel(v) != numel[k]) {
			fprintf(stderr, "ref attention_decoder: %s has %lld values, expected %lld\n",
				p_names[k], (long long)r64_numel(v), (long long)numel[k]);
			abort();
		}
		d->p[k] = v->d;
		d->g[k] = l->grad[d->idx[k]]->d;
	}
	int64_t B = d->B, T = d->T, SS = d->ns * H;
	d->tlen = xcalloc(B, sizeof *d->tlen);
	d->mlen = xcalloc(B, sizeof *d->mlen);
	d->y = xcalloc(B * T, sizeof *d->y);
	d->x = xcalloc(B * T * d->Xin, sizeof(double));
	d->s = xcalloc(B * (T + 1) * SS, sizeof(double));
	d->alpha = xcalloc(B * T * d->TI, sizeof(double));
	d->ctx = xcalloc(B * T * D, sizeof(double));
	d->feat = xcalloc(B * T * d->O, sizeof(double));
	for (int w = 0; w < 2; w++)
		d->x0[w] = d->init[w] ? xcalloc(B * d->S[w], sizeof(double)) : NULL;
	d->gi = xcalloc(GH, sizeof(double));
	d->gh = xcalloc(GH, sizeof(double));
	d->dai = xcalloc(GH, sizeof(double));
	d->dah = xcalloc(GH, sizeof(double));
	d->e = xcalloc(d->TI, sizeof(double));
	d->dx = xcalloc(d->Xin, sizeof(double));
	d->ds = xcalloc(SS, sizeof(double));
	d->dsp = xcalloc(SS, sizeof(double));
	d->dq = xcalloc(H, sizeof(double));
	d->dfeed = xcalloc(H, sizeof(double));
	d->dctx = xcalloc(D, sizeof(double));
	d->dfeat = xcalloc(d->O, sizeof(double));
	d->dcat = xcalloc(D + H, sizeof(double));
	d->du = xcalloc(H, sizeof(double));
	for (int64_t b = 0; b < B; b++) {
		int64_t tl = y ? r64_len(y, b) : 0, ml = r64_len(mem, b);
		d->tlen[b] = (int32_t)(tl < 0 ? 0 : tl > T ? T : tl);
		d->mlen[b] = (int32_t)(ml < 0 ? 0 : ml > d->TI ? d->TI : ml);
	}
}

/* ------------------------------------------------------------------ cells */
static double sigm(double x)
{
	return 1.0 / (1.0 + exp(-x));
}

/* gi = W_ih x + b_ih, gh = W_hh h + b_hh (all G*H gate rows) */
static void cell_pre(const struct adec *d, const double *x, const double *h)
{
	int64_t GH = d->G * d->H;
	for (int64_t r = 0; r < GH; r++) {
		double a = d->p[P_BIH][r], c = d->p[P_BHH][r];
		for (int64_t j = 0; j < d->Xin; j++)
			a += d->p[P_WIH][r * d->Xin + j] * x[j];
		for (int64_t j = 0; j < d->H; j++)
			c += d->p[P_WHH][r * d->H + j] * h[j];
		d->gi[r] = a;
		d->gh[r] = c;
	}
}

/* sn = cell(x, s): s = [h] or [h; c] */
static void cell_fwd(const struct adec *d, const double *x, const double *s, double *sn)
{
	int64_t H = d->H;
	const double *gi = d->gi, *gh = d->gh;
	cell_pre(d, x, s);
	for (int64_t k = 0; k < H; k++) {
		if (d->o.cell == REF_RNN_TANH) {   /* h' = tanh(W_ih x + b_ih + W_hh h + b_hh) */
			sn[k] = tanh(gi[k] + gh[k]);
		} else if (d->o.cell == REF_LSTM) {   /* c' = f*c + i*g; h' = o*tanh(c') */
			double i = sigm(gi[k] + gh[k]), f = sigm(gi[H + k] + gh[H + k]);
			double g = tanh(gi[2 * H + k] + gh[2 * H + k]);
			double o = sigm(gi[3 * H + k] + gh[3 * H + k]);
			sn[H + k] = f * s[H + k] + i * g;
			sn[k] = o * tanh(sn[H + k]);
		} else {   /* n = tanh(W_in x + b_in + r*(W_hn h + b_hn)); h' = (1-z)*n + z*h */
			double r = sigm(gi[k] + gh[k]), z = sigm(gi[H + k] + gh[H + k]);
			double n = tanh(gi[2 * H + k] + r * gh[2 * H + k]);
			sn[k] = (1.0 - z) * n + z * s[k];
		}
	}
}

/* From dsn = dL/ds' (h'; c'): ADDS dL/dx into dx, dL/ds into ds and the cell's parameter
 * grads. Recomputes the gates from x and s. */
static void cell_bwd(const struct adec *d, const double *x, const double *s, const double *dsn,
		     double *dx, double *ds)
{
	int64_t H = d->H, GH = d->G * H, X = d->Xin;
	const double *gi = d->gi, *gh = d->gh;
	double *dai = d->dai, *dah = d->dah;   /* dL/d(W_ih x + b_ih), dL/d(W_hh h + b_hh) */
	cell_pre(d, x, s);
	for (int64_t k = 0; k < H; k++) {
		if (d->o.cell == REF_RNN_TANH) {
			double h = tanh(gi[k] + gh[k]);
			dai[k] = dah[k] = dsn[k] * (1.0 - h * h);
		} else if (d->o.cell == REF_LSTM) {
			double i = sigm(gi[k] + gh[k]), f = sigm(gi[H + k] + gh[H + k]);
			double g = tanh(gi[2 * H + k] + gh[2 * H + k]);
			double o = sigm(gi[3 * H + k] + gh[3 * H + k]);
			double c = f * s[H + k] + i * g, tc = tanh(c);
			double dc = dsn[H + k] + dsn[k] * o * (1.0 - tc * tc);
			dai[k] = dc * g * i * (1.0 - i);
			dai[H + k] = dc * s[H + k] * f * (1.0 - f);
			dai[2 * H + k] = dc * i * (1.0 - g * g);
			dai[3 * H + k] = dsn[k] * tc * o * (1.0 - o);
			for (int q = 0; q < 4; q++)
				dah[q * H + k] = dai[q * H + k];
			ds[H + k] += dc * f;
		} else {
			double r = sigm(gi[k] + gh[k]), z = sigm(gi[H + k] + gh[H + k]);
			double n = tanh(gi[2 * H + k] + r * gh[2 * H + k]);
			double dn = dsn[k] * (1.0 - z) * (1.0 - n * n);   /* through n's tanh */
			double dr = dn * gh[2 * H + k] * r * (1.0 - r);
			double dz = dsn[k] * (s[k] - n) * z * (1.0 - z);
			ds[k] += dsn[k] * z;
			dai[k] = dah[k] = dr;
			dai[H + k] = dah[H + k] = dz;
			dai[2 * H + k] = dn;
			dah[2 * H + k] = dn * r;
		}
	}
	for (int64_t r = 0; r < GH; r++) {
		d->g[P_BIH][r] += dai[r];
		d->g[P_BHH][r] += dah[r];
		for (int64_t j = 0; j < X; j++) {
			d->g[P_WIH][r * X + j] += dai[r] * x[j];
			if (dx)
				dx[j] += d->p[P_WIH][r * X + j] * dai[r];
		}
		for (int64_t j = 0; j < H; j++) {
			d->g[P_WHH][r * H + j] += dah[r] * s[j];
			ds[j] += d->p[P_WHH][r * H + j] * dah[r];
		}
	}
}

/* ------------------------------------------------------------------ attention */
/* bahdanau and luong concat score with v^T tanh(.) */
static bool additive(const struct adec *d)
{
	return d->o.attention == REF_BAHDANAU || d->o.score == REF_SCORE_CONCAT;
}

/* the additive score's matrices: W_q [A, ldq] on the query, W_k [A, ldk] on the memory step,
 * and their grads */
struct addmats {
	const double *wq, *wk;
	double *dwq, *dwk;
	int64_t ldq, ldk;
};

static struct addmats additive_mats(const struct adec *d)
{
	if (d->o.attention == REF_BAHDANAU)   /* attn.W [A,H], attn.U [A,D] */
		return (struct addmats){d->p[P_AW], d->p[P_AU], d->g[P_AW], d->g[P_AU], d->H, d->D};
	/* attn.W_a [A, H+D] on [s; h_j] */
	return (struct addmats){d->p[P_WA], d->p[P_WA] + d->H, d->g[P_WA], d->g[P_WA] + d->H,
				d->H + d->D, d->H + d->D};
}

/* z_a = (W q + U m)_a of the additive score */
static double additive_z(const struct adec *d, const struct addmats *w, int64_t a, const double *q,
			 const double *m)
{
	double z = 0;
	for (int64_t k = 0; k < d->H; k++)
		z += w->wq[a * w->ldq + k] * q[k];
	for (int64_t k = 0; k < d->D; k++)
		z += w->wk[a * w->ldk + k] * m[k];
	return z;
}

/* e = score(q [H], m [D]):
 * bahdanau v^T tanh(W q + U m) | dot q^T m | general q^T W_a m | concat v^T tanh(W_a [q; m]) */
static double score(const struct adec *d, const double *q, const double *m)
{
	int64_t H = d->H, D = d->D;
	double e = 0;
	if (additive(d)) {
		struct addmats w = additive_mats(d);
		for (int64_t a = 0; a < d->A; a++) {
			double z = additive_z(d, &w, a, q, m);
			e += d->p[P_AV][a] * tanh(z);
		}
	} else if (d->o.score == REF_SCORE_DOT) {
		for (int64_t k = 0; k < H; k++)
			e += q[k] * m[k];
	} else {
		for (int64_t k = 0; k < H; k++)
			for (int64_t j = 0; j < D; j++)
				e += q[k] * d->p[P_WA][k * D + j] * m[j];
	}
	return e;
}

/* de = dL/de: ADDS into dq, dm (may be NULL) and the attention's parameter grads */
static void score_bwd(const struct adec *d, const double *q, const double *m, double de,
		      double *dq, double *dm)
{
	int64_t H = d->H, D = d->D;
	if (additive(d)) {
		struct addmats w = additive_mats(d);
		for (int64_t a = 0; a < d->A; a++) {
			double z = additive_z(d, &w, a, q, m);
			double t = tanh(z), dz = de * d->p[P_AV][a] * (1.0 - t * t);
			d->g[P_AV][a] += de * t;   /* e = v . t, t = tanh(z) */
			for (int64_t k = 0; k < H; k++) {
				w.dwq[a * w.ldq + k] += dz * q[k];
				dq[k] += dz * w.wq[a * w.ldq + k];
			}
			for (int64_t k = 0; k < D; k++) {
				w.dwk[a * w.ldk + k] += dz * m[k];
				if (dm)
					dm[k] += dz * w.wk[a * w.ldk + k];
			}
		}
	} else if (d->o.score == REF_SCORE_DOT) {
		for (int64_t k = 0; k < H; k++) {
			dq[k] += de * m[k];
			if (dm)
				dm[k] += de * q[k];
		}
	} else {
		for (int64_t k = 0; k < H; k++)
			for (int64_t j = 0; j < D; j++) {
				double w = d->p[P_WA][k * D + j];
				d->g[P_WA][k * D + j] += de * q[k] * m[j];
				dq[k] += de * w * m[j];
				if (dm)
					dm[j] += de * q[k] * w;
			}
	}
}

/* alpha_j = softmax_{j < len} score(q, m_j), 0 for j >= len (all 0 when len is 0);
 * ctx = sum_j alpha_j m_j. mem: [T_in][D] of one example. */
static void attend(const struct adec *d, const double *mem, int64_t len, const double *q,
		   double *alpha, double *ctx)
{
	double mx = -INFINITY, z = 0;
	for (int64_t j = 0; j < len; j++) {
		d->e[j] = score(d, q, mem + j * d->D);
		mx = fmax(mx, d->e[j]);
	}
	for (int64_t j = 0; j < len; j++)
		z += exp(d->e[j] - mx);
	for (int64_t j = 0; j < d->TI; j++)
		alpha[j] = j < len ? exp(d->e[j] - mx) / z : 0.0;
	for (int64_t k = 0; k < d->D; k++) {
		ctx[k] = 0;
		for (int64_t j = 0; j < len; j++)
			ctx[k] += alpha[j] * mem[j * d->D + k];
	}
}

/* dalpha_j = dctx . m_j + dw_j; de_j = alpha_j (dalpha_j - sum_k alpha_k dalpha_k);
 * dm_j += alpha_j dctx; then through the score. ADDS into dq, dmem (may be NULL), params. */
static void attend_bwd(const struct adec *d, const double *mem, int64_t len, const double *q,
		       const double *alpha, const double *dctx, const double *dw, double *dq,
		       double *dmem)
{
	int64_t D = d->D;
	double sum = 0;
	for (int64_t j = 0; j < len; j++) {
		double g = dw ? dw[j] : 0.0;
		for (int64_t k = 0; k < D; k++)
			g += dctx[k] * mem[j * D + k];
		d->e[j] = g;
		sum += alpha[j] * g;
	}
	for (int64_t j = 0; j < len; j++) {
		double de = alpha[j] * (d->e[j] - sum);
		if (dmem)
			for (int64_t k = 0; k < D; k++)
				dmem[j * D + k] += alpha[j] * dctx[k];
		score_bwd(d, q, mem + j * D, de, dq, dmem ? dmem + j * D : NULL);
	}
}

/* ------------------------------------------------------------------ one output step */
/* From token y and state s (and h~ of the step before, luong input feeding; NULL: zeros):
 * the cell input x, the new state sn, alpha, ctx, feat ([s'.h; c] or h~) and the logits
 * (NULL: not needed). mem: [T_in][D] of the example, len its valid steps. */
static void step_fwd(const struct adec *d, const double *mem, int64_t len, int64_t y,
		     const double *s, const double *hfeed, double *x, double *sn, double *alpha,
		     double *ctx, double *feat, double *logits)
{
	int64_t E = d->E, H = d->H, D = d->D, O = d->O;
	if (y < 0 || y >= d->V) {
		fprintf(stderr, "ref attention_decoder: token %lld\n", (long long)y);
		abort();
	}
	for (int64_t k = 0; k < E; k++)
		x[k] = d->p[P_EMB][y * E + k];
	if (d->o.attention == REF_BAHDANAU) {   /* c = attend(s.h); s' = cell([emb; c], s) */
		attend(d, mem, len, s, alpha, ctx);
		for (int64_t k = 0; k < D; k++)
			x[E + k] = ctx[k];
		cell_fwd(d, x, s, sn);
		for (int64_t k = 0; k < H; k++)
			feat[k] = sn[k];
		for (int64_t k = 0; k < D; k++)
			feat[H + k] = ctx[k];
	} else {   /* s' = cell([emb; h~_prev], s); c = attend(s'.h); h~ = tanh(W_c [c; s'.h]) */
		if (d->o.input_feeding)
			for (int64_t k = 0; k < H; k++)
				x[E + k] = hfeed ? hfeed[k] : 0.0;
		cell_fwd(d, x, s, sn);
		attend(d, mem, len, sn, alpha, ctx);
		for (int64_t r = 0; r < H; r++) {
			double z = 0;
			for (int64_t k = 0; k < D; k++)
				z += d->p[P_WC][r * (D + H) + k] * ctx[k];
			for (int64_t k = 0; k < H; k++)
				z += d->p[P_WC][r * (D + H) + D + k] * sn[k];
			feat[r] = tanh(z);
		}
	}
	if (!logits)
		return;
	for (int64_t v = 0; v < d->V; v++) {   /* logits = W_out feat + b */
		double z = d->p[P_OB][v];
		for (int64_t k = 0; k < O; k++)
			z += d->p[P_OW][v * O + k] * feat[k];
		logits[v] = z;
	}
}

/* s0 of example b: per state part w, the top layer's `dirs` slots of init_w concatenated
 * (x0 [S]), through tanh(W_b x0 + b_b) when S != H; zeros when unconnected */
static void init_fwd(struct adec *d, int n_in, struct r64 *const *in, int64_t b, double *s0)
{
	int64_t H = d->H;
	for (int w = 0; w < d->ns; w++) {
		double *s = s0 + w * H;
		for (int64_t k = 0; k < H; k++)
			s[k] = 0;
		if (!d->init[w] || 2 + w >= n_in)
			continue;
		const struct r64 *t = in[2 + w];
		int64_t S = d->S[w], F = d->F[w], slots = d->slots[w], dirs = d->dirs[w];
		double *x0 = d->x0[w] + b * S;
		for (int64_t k = 0; k < dirs; k++)
			for (int64_t f = 0; f < F; f++)
				x0[k * F + f] = t->d[(b * slots + slots - dirs + k) * F + f];
		if (!d->bridge[w]) {
			for (int64_t k = 0; k < H; k++)
				s[k] = x0[k];
			continue;
		}
		const double *W = d->p[P_BW0 + 2 * w], *bb = d->p[P_BB0 + 2 * w];
		for (int64_t r = 0; r < H; r++) {
			double z = bb[r];
			for (int64_t k = 0; k < S; k++)
				z += W[r * S + k] * x0[k];
			s[r] = tanh(z);
		}
	}
}

/* ds0 of example b into the bridge's grads and the init slots (+=) */
static void init_bwd(struct adec *d, int n_in, struct r64 **d_in, int64_t b, const double *s0,
		     const double *ds0)
{
	int64_t H = d->H;
	for (int w = 0; w < d->ns; w++) {
		if (!d->init[w] || 2 + w >= n_in)
			continue;
		int64_t S = d->S[w], F = d->F[w], slots = d->slots[w], dirs = d->dirs[w];
		const double *x0 = d->x0[w] + b * S, *ds = ds0 + w * H, *s = s0 + w * H;
		double *dx0 = xcalloc(S, sizeof(double));
		if (!d->bridge[w]) {
			for (int64_t k = 0; k < H; k++)
				dx0[k] = ds[k];
		} else {
			const double *W = d->p[P_BW0 + 2 * w];
			double *dW = d->g[P_BW0 + 2 * w], *db = d->g[P_BB0 + 2 * w];
			for (int64_t r = 0; r < H; r++) {
				double du = ds[r] * (1.0 - s[r] * s[r]);
				db[r] += du;
				for (int64_t k = 0; k < S; k++) {
					dW[r * S + k] += du * x0[k];
					dx0[k] += W[r * S + k] * du;
				}
			}
		}
		struct r64 *dt = d_in[2 + w];
		if (dt)
			for (int64_t k = 0; k < dirs; k++)
				for (int64_t f = 0; f < F; f++)
					dt->d[(b * slots + slots - dirs + k) * F + f] += dx0[k * F + f];
		free(dx0);
	}
}

/* ------------------------------------------------------------------ teacher forcing */
static double argmax_gap(const double *l, int64_t V, int64_t *best)
{
	int64_t k = 0;
	for (int64_t v = 1; v < V; v++)
		k = l[v] > l[k] ? v : k;
	double second = -INFINITY;
	for (int64_t v = 0; v < V; v++)
		if (v != k)
			second = fmax(second, l[v]);
	*best = k;
	return l[k] - second;
}

static void adec_fwd(struct ref_layer *l, int n_in, struct r64 *const *in, struct r64 **out)
{
	struct adec *d = l->cache;
	bind(l, n_in, in);
	const struct r64 *y = in[0], *mem = in[1];
	int64_t B = d->B, T = d->T, TI = d->TI, V = d->V, D = d->D, O = d->O, Xin = d->Xin;
	int64_t SS = d->ns * d->H;
	int64_t sl[3] = {B, T, V}, sw[3] = {B, T, TI}, st[2] = {B, T};
	out[0] = r64_new(3, sl);
	out[1] = r64_new(3, sw);
	out[2] = r64_new(2, st);
	for (int k = 0; k < 3; k++)
		out[k]->lengths = y->lengths;
	for (int64_t b = 0; b < B; b++) {
		const double *mb = mem->d + b * TI * D;
		double *s = d->s + b * (T + 1) * SS;
		init_fwd(d, n_in, in, b, s);
		for (int64_t i = 0; i < d->tlen[b]; i++) {   /* step i consumes y_{i-1}, <bos> first */
			int64_t bi = b * T + i;
			d->y[bi] = i == 0 ? d->o.bos : (int64_t)y->d[b * T + i - 1];
			const double *feed = i ? d->feat + (bi - 1) * O : NULL;   /* h~_{i-1} */
			step_fwd(d, mb, d->mlen[b], d->y[bi], s + i * SS, feed, d->x + bi * Xin,
				 s + (i + 1) * SS, d->alpha + bi * TI, d->ctx + bi * D, d->feat + bi * O,
				 out[0]->d + bi * V);
			for (int64_t j = 0; j < TI; j++)
				out[1]->d[bi * TI + j] = d->alpha[bi * TI + j];
			int64_t best;
			double gap = argmax_gap(out[0]->d + bi * V, V, &best);
			out[2]->d[bi] = (double)best;
			if (d->o.argmax_margin)
				*d->o.argmax_margin = fmin(*d->o.argmax_margin, gap);
		}
	}
}

/* Reverse over each example's valid steps, from the logits' and weights' gradients:
 *   dfeat = W_out^T dl; luong: dh~ = dfeat + (dh~ fed to step i+1); du = dh~ (1 - h~^2);
 *     d[c; s'.h] = W_c^T du; attention backward (query s'.h); cell backward -> ds, dx
 *   bahdanau: ds'.h += dfeat.h; dc = dfeat.c; cell backward -> ds, dx; dc += dx.c;
 *     attention backward (query s.h) into ds.h
 * then the initial state's gradient into the bridge and init. */
static void adec_bwd(struct ref_layer *l, int n_in, struct r64 *const *in, struct r64 *const *out,
		     struct r64 *const *d_out, struct r64 **d_in)
{
	(void)out;
	struct adec *d = l->cache;
	const struct r64 *mem = in[1];
	int64_t B = d->B, T = d->T, TI = d->TI, V = d->V, D = d->D, O = d->O, H = d->H;
	int64_t E = d->E, Xin = d->Xin, SS = d->ns * H;
	bool luong = d->o.attention == REF_LUONG;
	for (int64_t b = 0; b < B; b++) {
		const double *mb = mem->d + b * TI * D, *s = d->s + b * (T + 1) * SS;
		double *dmem = n_in > 1 && d_in[1] ? d_in[1]->d + b * TI * D : NULL;
		int64_t len = d->mlen[b];
		for (int64_t k = 0; k < SS; k++)
			d->ds[k] = 0;
		for (int64_t k = 0; k < H; k++)
			d->dfeed[k] = 0;
		for (int64_t i = d->tlen[b] - 1; i >= 0; i--) {
			int64_t bi = b * T + i;
			const double *dl = d_out[0] ? d_out[0]->d + bi * V : NULL;
			const double *dw = d_out[1] ? d_out[1]->d + bi * TI : NULL;
			const double *feat = d->feat + bi * O, *ctx = d->ctx + bi * D;
			const double *x = d->x + bi * Xin, *sp = s + i * SS, *sn = s + (i + 1) * SS;
			for (int64_t k = 0; k < O; k++)
				d->dfeat[k] = 0;
			if (dl)
				for (int64_t v = 0; v < V; v++) {   /* logits = W_out feat + b */
					d->g[P_OB][v] += dl[v];
					for (int64_t k = 0; k < O; k++) {
						d->g[P_OW][v * O + k] += dl[v] * feat[k];
						d->dfeat[k] += d->p[P_OW][v * O + k] * dl[v];
					}
				}
			for (int64_t k = 0; k < SS; k++)
				d->dsp[k] = 0;
			for (int64_t k = 0; k < Xin; k++)
				d->dx[k] = 0;
			if (luong) {
				for (int64_t k = 0; k < D + H; k++)
					d->dcat[k] = 0;
				for (int64_t r = 0; r < H; r++) {   /* h~ = tanh(W_c [c; s'.h]) */
					double du = (d->dfeat[r] + d->dfeed[r]) * (1.0 - feat[r] * feat[r]);
					for (int64_t k = 0; k < D + H; k++) {
						double c = k < D ? ctx[k] : sn[k - D];
						d->g[P_WC][r * (D + H) + k] += du * c;
						d->dcat[k] += d->p[P_WC][r * (D + H) + k] * du;
					}
				}
				for (int64_t k = 0; k < H; k++)
					d->ds[k] += d->dcat[D + k];
				attend_bwd(d, mb, len, sn, d->alpha + bi * TI, d->dcat, dw, d->ds, dmem);
				cell_bwd(d, x, sp, d->ds, d->dx, d->dsp);
				for (int64_t k = 0; k < H; k++)
					d->dfeed[k] = d->o.input_feeding ? d->dx[E + k] : 0.0;
			} else {
				for (int64_t k = 0; k < H; k++)
					d->ds[k] += d->dfeat[k];
				for (int64_t k = 0; k < D; k++)
					d->dctx[k] = d->dfeat[H + k];
				cell_bwd(d, x, sp, d->ds, d->dx, d->dsp);
				for (int64_t k = 0; k < D; k++)
					d->dctx[k] += d->dx[E + k];
				attend_bwd(d, mb, len, sp, d->alpha + bi * TI, d->dctx, dw, d->dsp, dmem);
			}
			for (int64_t k = 0; k < E; k++)
				d->g[P_EMB][d->y[bi] * E + k] += d->dx[k];
			for (int64_t k = 0; k < SS; k++)
				d->ds[k] = d->dsp[k];
		}
		init_bwd(d, n_in, d_in, b, s, d->ds);
	}
}

void ref_attention_decoder(struct ref_layer *l, const struct ref_attdec_opts *o)
{
	struct adec *d = xcalloc(1, sizeof *d);
	d->o = *o;
	l->kind = "attention_decoder";
	l->n_out = 3;
	l->forward = adec_fwd;
	l->backward = adec_bwd;
	l->cache = d;
	l->cache_free = adec_cache_free;
}

/* ------------------------------------------------------------------ free running */
static double log_sum_exp(const double *l, int64_t n)
{
	double m = -INFINITY, z = 0;
	for (int64_t v = 0; v < n; v++)
		m = fmax(m, l[v]);
	for (int64_t v = 0; v < n; v++)
		z += exp(l[v] - m);
	return m + log(z);
}

/* GNMT: ((5 + len) / 6)^alpha */
static double length_penalty(double alpha, int64_t len)
{
	return alpha > 0 ? pow((5.0 + (double)len) / 6.0, alpha) : 1.0;
}

/* per-step buffers of one hypothesis */
struct dstep {
	double *x, *alpha, *ctx, *logits;
};

/* Greedy decoding of example b from s0: y_i = argmax logits_i, until <eos> or max_len.
 * Returns the length; tok[0..len), *score = sum of log softmax at the chosen tokens. */
static int64_t greedy(const struct adec *d, const double *mem, int64_t len, const double *s0,
		      struct dstep *w, int32_t *tok, double *score, double *margin)
{
	int64_t L = d->o.max_len, SS = d->ns * d->H, O = d->O;
	double *s = xcalloc(SS, sizeof(double)), *sn = xcalloc(SS, sizeof(double));
	double *feat = xcalloc(O, sizeof(double)), *fprev = xcalloc(O, sizeof(double));
	int64_t n = L;
	memcpy(s, s0, (size_t)SS * sizeof(double));
	*score = 0;
	for (int64_t i = 0; i < L; i++) {
		step_fwd(d, mem, len, i ? tok[i - 1] : d->o.bos, s, i ? fprev : NULL, w->x, sn,
			 w->alpha, w->ctx, feat, w->logits);
		int64_t best;
		*margin = fmin(*margin, argmax_gap(w->logits, d->V, &best));
		*score += w->logits[best] - log_sum_exp(w->logits, d->V);
		tok[i] = (int32_t)best;
		memcpy(s, sn, (size_t)SS * sizeof(double));
		memcpy(fprev, feat, (size_t)O * sizeof(double));
		if (best == d->o.eos) {
			n = i + 1;
			break;
		}
	}
	free(s);
	free(sn);
	free(feat);
	free(fprev);
	return n;
}

struct cand {
	double score;
	int64_t parent, token;
};

/* One example's beam of K hypotheses (double-buffered: cur, nxt). */
struct beam {
	int64_t n;             /* live hypotheses */
	int32_t *tok;          /* [K][L] */
	double *score;         /* [K] sum of log-probabilities */
	bool *deep;            /* [K] an ancestor was kept from a rank >= K */
	double *s, *feat;      /* [K][ns*H], [K][O]: the state and h~ after the last token */
};

static void beam_alloc(struct beam *h, int64_t K, int64_t L, int64_t SS, int64_t O)
{
	h->n = 0;
	h->tok = xcalloc(K * L, sizeof(int32_t));
	h->score = xcalloc(K, sizeof(double));
	h->deep = xcalloc(K, sizeof(bool));
	h->s = xcalloc(K * SS, sizeof(double));
	h->feat = xcalloc(K * O, sizeof(double));
}

static void beam_free(struct beam *h)
{
	free(h->tok);
	free(h->score);
	free(h->deep);
	free(h->s);
	free(h->feat);
}

/* Beam search over example b (docs/attention.md): each step extends every live hypothesis by
 * every token and ranks the extensions by total log-probability (ties: the earlier hypothesis,
 * then the lower token); among the 2K best, those ending in <eos> at ranks < K finish, the
 * others stay alive until K are; at max_len the live ones finish too. Done when K finished.
 * The result is the finished one of highest score / ((5+len)/6)^alpha (the first on ties).
 * Returns its length; tok, *best its tokens and normalised score; lowers *margin to the
 * decisions' gaps; *deep: the winner was kept from a rank >= K; *normed: it is not the best
 * unnormalised one. */
static int64_t beam_search(const struct adec *d, const double *mem, int64_t len, const double *s0,
			   struct dstep *w, int32_t *tok, double *best, double *margin, bool *deep,
			   bool *normed)
{
	int64_t K = d->o.beam, L = d->o.max_len, V = d->V, SS = d->ns * d->H, O = d->O;
	struct beam cur, nxt;
	beam_alloc(&cur, K, L, SS, O);
	beam_alloc(&nxt, K, L, SS, O);
	double *sn = xcalloc(K * SS, sizeof(double)), *feat = xcalloc(K * O, sizeof(double));
	struct cand *c = xcalloc(K * V, sizeof *c);
	int64_t nfin = 0, blen = 0;
	double best_raw = -INFINITY, win_raw = -INFINITY;   /* unnormalised: best, the winner's */
	*best = -INFINITY;
	*deep = false;
	cur.n = 1;   /* <bos> from s0, score 0 */
	cur.deep[0] = false;
	memcpy(cur.s, s0, (size_t)SS * sizeof(double));
	for (int64_t i = 0; i < L && nfin < K; i++) {
		int64_t nc = 0;
		for (int64_t h = 0; h < cur.n; h++) {
			step_fwd(d, mem, len, i ? cur.tok[h * L + i - 1] : d->o.bos, cur.s + h * SS,
				 i ? cur.feat + h * O : NULL, w->x, sn + h * SS, w->alpha, w->ctx,
				 feat + h * O, w->logits);
			double lse = log_sum_exp(w->logits, V);
			for (int64_t v = 0; v < V; v++) {   /* insert, after equal scores (stable) */
				struct cand x = {cur.score[h] + w->logits[v] - lse, h, v};
				int64_t p = nc++;
				while (p > 0 && c[p - 1].score < x.score) {
					c[p] = c[p - 1];
					p--;
				}
				c[p] = x;
			}
		}
		int64_t alive = 0, last = -1, top = nc < 2 * K ? nc : 2 * K;
		for (int64_t r = 0; r < top; r++) {
			bool eos = c[r].token == d->o.eos;
			if (eos ? r >= K : alive == K)
				continue;
			last = r;
			const int32_t *ptok = cur.tok + c[r].parent * L;
			bool dp = cur.deep[c[r].parent] || r >= K;
			if (eos || i == L - 1) {   /* finished */
				double norm = c[r].score / length_penalty(d->o.length_norm, i + 1);
				nfin++;
				alive += !eos;
				if (*best > -INFINITY)
					*margin = fmin(*margin, fabs(norm - *best));
				best_raw = fmax(best_raw, c[r].score);
				if (norm > *best) {
					*best = norm;
					win_raw = c[r].score;
					blen = i + 1;
					*deep = dp;
					memcpy(tok, ptok, (size_t)i * sizeof(int32_t));
					tok[i] = (int32_t)c[r].token;
				}
				continue;
			}
			int64_t h = alive++;   /* alive: the parent's tokens, state and h~ */
			memcpy(nxt.tok + h * L, ptok, (size_t)i * sizeof(int32_t));
			nxt.tok[h * L + i] = (int32_t)c[r].token;
			nxt.score[h] = c[r].score;
			nxt.deep[h] = dp;
			memcpy(nxt.s + h * SS, sn + c[r].parent * SS, (size_t)SS * sizeof(double));
			memcpy(nxt.feat + h * O, feat + c[r].parent * O, (size_t)O * sizeof(double));
		}
		/* the ranks that decided: every one up to the last used (and K-1), and the next */
		int64_t decided = last > K - 1 ? last : K - 1;
		for (int64_t r = 0; r <= decided && r + 1 < nc; r++)
			*margin = fmin(*margin, c[r].score - c[r + 1].score);
		nxt.n = alive;
		struct beam t = cur;
		cur = nxt;
		nxt = t;
	}
	beam_free(&cur);
	beam_free(&nxt);
	free(sn);
	free(feat);
	free(c);
	*normed = win_raw < best_raw;
	return blen;
}

void ref_attdec_decode(struct ref_layer *l, int n_in, struct r64 *const *in, int32_t *tok,
		       int32_t *len, struct r64 **logits, struct r64 **weights,
		       struct ref_attdec_stats *st)
{
	struct adec *d = l->cache;
	struct r64 *ins[4] = {NULL, in[1], n_in > 2 ? in[2] : NULL, n_in > 3 ? in[3] : NULL};
	bind(l, n_in, ins);
	int64_t B = d->B, L = d->o.max_len, SS = d->ns * d->H, TI = d->TI, D = d->D;
	bool beam = d->o.beam > 1 || d->o.search_beam;
	struct dstep w = {xcalloc(d->Xin, sizeof(double)), xcalloc(TI, sizeof(double)),
			  xcalloc(D, sizeof(double)), xcalloc(d->V, sizeof(double))};
	double *s0 = xcalloc(SS, sizeof(double));
	int32_t *gtok = xcalloc(L, sizeof(int32_t)), *btok = xcalloc(L, sizeof(int32_t));
	memset(st, 0, sizeof *st);
	st->margin = INFINITY;
	for (int64_t b = 0; b < B; b++) {
		const double *mb = in[1]->d + b * TI * D;
		init_fwd(d, n_in, ins, b, s0);
		memset(gtok, 0, (size_t)L * sizeof(int32_t));
		memset(btok, 0, (size_t)L * sizeof(int32_t));
		double gscore, bnorm, gm = INFINITY;
		int64_t glen = greedy(d, mb, d->mlen[b], s0, &w, gtok, &gscore, &gm);
		const int32_t *pick = gtok;
		int64_t plen = glen;
		if (!beam || d->o.beam > 1)   /* the greedy result is used */
			st->margin = fmin(st->margin, gm);
		if (beam) {   /* beam > 1: the greedy hypothesis competes */
			bool deep, normed;
			int64_t blen = beam_search(d, mb, d->mlen[b], s0, &w, btok, &bnorm, &st->margin,
						   &deep, &normed);
			double g = gscore / length_penalty(d->o.length_norm, glen);
			bool same = blen == glen &&
				    !memcmp(btok, gtok, (size_t)blen * sizeof(int32_t));
			if (d->o.beam > 1 && !same)
				st->margin = fmin(st->margin, fabs(bnorm - g));
			if (d->o.beam == 1 || bnorm >= g) {
				pick = btok;
				plen = blen;
				/* where greedy differs, the result needed 2K candidates / normalisation */
				st->deep_win += deep && (d->o.beam == 1 || !same);
				st->norm_decided += normed && (d->o.beam == 1 || !same);
			} else {
				st->greedy_won += !same;
			}
		}
		for (int64_t i = 0; i < L; i++)   /* 0 past the length */
			tok[b * L + i] = i < plen ? pick[i] : 0;
		len[b] = (int32_t)plen;
	}
	/* the outputs of the chosen tokens: a teacher-forced pass over them */
	int64_t ys[2] = {B, L};
	struct r64 *y = r64_new(2, ys), *out[3];
	for (int64_t k = 0; k < B * L; k++)
		y->d[k] = tok[k];
	y->lengths = len;
	ins[0] = y;
	double *keep = d->o.argmax_margin;
	d->o.argmax_margin = NULL;
	adec_fwd(l, n_in, ins, out);
	d->o.argmax_margin = keep;
	*logits = out[0];
	*weights = out[1];
	r64_free(out[2]);
	r64_free(y);
	free(w.x);
	free(w.alpha);
	free(w.ctx);
	free(w.logits);
	free(s0);
	free(gtok);
	free(btok);
}
