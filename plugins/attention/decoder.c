/* plexus plugin attention: attention_decoder, the decoder of an encoder-decoder.
 *
 * It drives a single-step recurrent cell found at create time through host->find_cell
 * (whichever plugin provides "lstm", "gru" or "rnn"; never compiled in) and attends over an
 * encoder's sequence `memory` [B,T_in,D] whose lengths are the attention mask.
 *
 *   bahdanau: e_ij = v^T tanh(W s_{i-1} + U h_j); a = softmax_j e; c_i = sum_j a_ij h_j;
 *             s_i = cell([emb(y_{i-1}); c_i], s_{i-1}); logits_i = W_out [s_i; c_i] + b
 *   luong:    s_i = cell([emb(y_{i-1}); h~_{i-1} if input feeding], s_{i-1});
 *             score dot s^T h_j | general s^T W_a h_j | concat v^T tanh(W_a [s; h_j]);
 *             c_i = sum_j a_ij h_j; h~_i = tanh(W_c [c_i; s_i]); logits_i = W_out h~_i + b
 *
 * With `targets` connected the decoder runs teacher forcing (step i consumes y_{i-1}, <bos>
 * first) and has a backward pass. With targets NULL it decodes free-running from <bos>:
 * greedy, or beam search with GNMT length normalisation; inference only.
 *
 * Memory layout: rows r of a step are examples (beam search: example r / K, hypothesis
 * r % K); the cell state is [n_state][rows][H] (h, then c for lstm). Everything a forward
 * keeps for backward comes from the step arena, sized before the step loop. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <plexus/plugin.h>

enum { ATT_BAHDANAU, ATT_LUONG };
enum { SC_DOT, SC_GENERAL, SC_CONCAT, SC_ADDITIVE };

enum { IN_TARGETS, IN_MEMORY, IN_INIT, IN_INIT_CELL, N_IN };
enum { OUT_LOGITS, OUT_WEIGHTS, OUT_TOKENS };

/* The memory of one forward, as the attention sees it. */
struct mem {
	int64_t B, T;          /* examples, memory steps */
	const float *h;        /* [B][T][D] the encoder's sequence (borrowed) */
	int32_t *len;          /* [B] valid steps, clamped to [0, T] */
	const float *keys;     /* [B][T][KD]: h (dot), W_a h (general), U h (additive) */
	float *keys_buf;       /* keys when computed here */
};

/* One step's buffers for rows r < R. */
struct slot {
	int32_t *y;            /* [R] previous token */
	float *x;              /* [R][Xin] cell input [emb(y); c | h~_prev] */
	float *s;              /* [n_state][R][H] state after the step */
	float *cache;          /* the cell's cache */
	float *alpha;          /* [R][T_in] attention */
	float *ctx;            /* [R][D] context */
	float *q;              /* [R][A] additive: W s (query projection) */
	float *cat;            /* [R][D+H] luong: [c; s.h] */
};

/* What a teacher-forced forward keeps for backward (step arena). */
struct tf_cache {
	bool valid;            /* the last forward was teacher forcing */
	int64_t B, T;          /* examples, output steps */
	struct mem m;
	int32_t *tlen;         /* [B] valid output steps, clamped */
	float *s;              /* [T+1][n_state][B][H], s[0] = initial state */
	struct slot *sl;       /* [T] */
	float *feat;           /* [B][T][O]: [s.h; c] (bahdanau) or h~ (luong) */
	float *x0[2];          /* [B][S] gathered top-layer init h (0) and c (1), or NULL */
};

struct dec {
	int64_t V, E, H, D, A, O, Xin, ns, KD;
	int attn, score;
	bool feed, always_beam;
	int64_t bos, eos, max_len, beam;
	double lnorm;
	const struct px_cell_ops *cell;
	void *cs;
	/* init bridge: top `dirs` slots of init [B, slots, F] -> [B, S = dirs*F] */
	bool has_init[2];
	int64_t slots[2], dirs[2], fe[2], S[2];
	struct px_param *emb, *wq, *wk, *v, *wa, *wc, *ow, *ob, *bw[2], *bb[2];
	/* additive attention: query and key matrices (parts of attn.W_a for concat) */
	float *Wq, *Wk, *dWq, *dWk;
	int64_t ldq, ldk;
	struct tf_cache tf;
	const struct px_host *host;
	char node[128];        /* for figures */
};

static int nomem(struct px_error *err)
{
	return px_error_set(err, PX_ERR_NOMEM, "attention_decoder: out of memory");
}

static void *arena_floats(struct px_arena *a, int64_t n)
{
	return px_arena_zalloc(a, (size_t)(n > 0 ? n : 1) * sizeof(float));
}

/* alpha[0..len) = softmax(e[0..len)) (in place allowed), alpha[len..n) = 0 */
static void masked_softmax(const float *e, float *alpha, int64_t len, int64_t n)
{
	float m = -INFINITY;
	for (int64_t t = 0; t < len; t++)
		m = e[t] > m ? e[t] : m;
	double z = 0;
	for (int64_t t = 0; t < len; t++) {
		alpha[t] = expf(e[t] - m);
		z += alpha[t];
	}
	for (int64_t t = 0; t < len; t++)
		alpha[t] = (float)(alpha[t] / z);
	for (int64_t t = len; t < n; t++)
		alpha[t] = 0.0f;
}

/* log sum_v exp(l_v), in double */
static double log_sum_exp(const float *l, int64_t n)
{
	float m = l[0];
	for (int64_t v = 1; v < n; v++)
		m = l[v] > m ? l[v] : m;
	double z = 0;
	for (int64_t v = 0; v < n; v++)
		z += exp((double)l[v] - m);
	return m + log(z);
}

/* GNMT length penalty: ((5 + len) / 6)^alpha */
static double length_penalty(double alpha, int64_t len)
{
	return alpha > 0 ? pow((5.0 + (double)len) / 6.0, alpha) : 1.0;
}

/* ================================================================== attention */
/* e_rj = score(query_r, key_j of example r/K) on valid j; alpha = masked softmax;
 * ctx_r = sum_j alpha_rj h_j */
static void attend(const struct dec *d, const struct mem *m, int64_t R, int64_t K,
		   const float *query, float *q, float *alpha, float *ctx)
{
	int64_t T = m->T, D = d->D, H = d->H, A = d->A, KD = d->KD;
	const float *v = d->v ? d->v->value->data : NULL;
	if (d->score >= SC_CONCAT)   /* q[R,A] = query W^T */
		px_gemm(false, true, R, A, H, 1.0f, query, H, d->Wq, d->ldq, 0.0f, q, A);
	for (int64_t r = 0; r < R; r++) {
		int64_t ex = r / K, len = m->len[ex];
		const float *keys = m->keys + ex * T * KD;
		float *al = alpha + r * T;
		if (d->score >= SC_CONCAT) {
			const float *qr = q + r * A;
			for (int64_t j = 0; j < len; j++) {
				const float *k = keys + j * KD;
				float e = 0.0f;
				for (int64_t a = 0; a < A; a++)
					e += v[a] * tanhf(qr[a] + k[a]);
				al[j] = e;
			}
		} else if (len > 0) {   /* e[1,len] = query_r keys^T */
			px_gemm(false, true, 1, len, H, 1.0f, query + r * H, H, keys, KD, 0.0f, al,
				len);
		}
		masked_softmax(al, al, len, T);
		if (len > 0)   /* ctx_r[1,D] = alpha[1,len] h[len,D] */
			px_gemm(false, false, 1, D, len, 1.0f, al, len, m->h + ex * T * D, D, 0.0f,
				ctx + r * D, D);
		else
			memset(ctx + r * D, 0, (size_t)D * sizeof(float));
	}
}

/* Backward of attend for the rows with valid[r] (step < tlen[r]):
 * dalpha_j = dctx . h_j + dw_j;  de_j = alpha_j (dalpha_j - sum_k alpha_k dalpha_k);
 * dh_j += alpha_j dctx;  then through the score into dquery (+=), dkeys (+=), v and W. */
static void attend_backward(struct dec *d, const struct mem *m, int64_t R, int64_t step,
			    const int32_t *tlen, const float *query, const float *q,
			    const float *alpha, const float *dctx, const float *dw, int64_t dw_ld,
			    float *de, float *dq, float *dquery, float *dmem, float *dkeys)
{
	int64_t T = m->T, D = d->D, H = d->H, A = d->A, KD = d->KD;
	bool additive = d->score >= SC_CONCAT;
	const float *v = additive ? d->v->value->data : NULL;
	float *dv = additive ? d->v->grad->data : NULL;
	if (additive)
		memset(dq, 0, (size_t)(R * A) * sizeof(float));
	for (int64_t r = 0; r < R; r++) {
		int64_t len = m->len[r];
		if (step >= tlen[r] || len == 0)
			continue;
		const float *al = alpha + r * T, *h = m->h + r * T * D, *dc = dctx + r * D;
		for (int64_t j = 0; j < len; j++)
			de[j] = px_dot(D, dc, h + j * D) + (dw ? dw[r * dw_ld + j] : 0.0f);
		double s = 0;
		for (int64_t j = 0; j < len; j++)
			s += (double)al[j] * de[j];
		for (int64_t j = 0; j < len; j++)
			de[j] = al[j] * (de[j] - (float)s);
		if (dmem)   /* dh[len,D] += alpha^T dctx_r */
			px_gemm(true, false, len, D, 1, 1.0f, al, len, dc, D, 1.0f, dmem + r * T * D,
				D);
		const float *keys = m->keys + r * T * KD;
		if (!additive) {   /* e_j = query . key_j */
			px_gemm(false, false, 1, H, len, 1.0f, de, len, keys, KD, 1.0f,
				dquery + r * H, H);
			if (dkeys)
				px_gemm(true, false, len, H, 1, 1.0f, de, len, query + r * H, H,
					1.0f, dkeys + r * T * KD, KD);
			continue;
		}
		const float *qr = q + r * A;   /* e_j = v . tanh(q + key_j) */
		float *dqr = dq + r * A;
		for (int64_t j = 0; j < len; j++) {
			const float *k = keys + j * KD;
			float *dk = dkeys + (r * T + j) * KD;
			for (int64_t a = 0; a < A; a++) {
				float z = tanhf(qr[a] + k[a]);
				float g = de[j] * v[a] * (1.0f - z * z);
				dqr[a] += g;
				dk[a] += g;
				dv[a] += de[j] * z;
			}
		}
	}
	if (additive) {   /* q = query W^T: dquery += dq W; dW += dq^T query */
		px_gemm(false, false, R, H, A, 1.0f, dq, A, d->Wq, d->ldq, 1.0f, dquery, H);
		px_gemm(true, false, A, H, R, 1.0f, dq, A, query, H, 1.0f, d->dWq, d->ldq);
	}
}

/* ================================================================== one decoder step */
/* bahdanau: c = attend(s_prev.h); s = cell([emb(y); c], s_prev); feat = [s.h; c]
 * luong:    s = cell([emb(y); h~_prev], s_prev); c = attend(s.h); feat = h~ = tanh(W_c [c; s.h]) */
static void dec_step(const struct dec *d, const struct mem *m, int64_t R, int64_t K,
		     const struct slot *sl, const float *s_prev, const float *feed, int64_t feed_ld,
		     float *feat, int64_t feat_ld)
{
	int64_t E = d->E, H = d->H, D = d->D, Xin = d->Xin;
	const float *emb = d->emb->value->data;
	for (int64_t r = 0; r < R; r++)
		memcpy(sl->x + r * Xin, emb + (int64_t)sl->y[r] * E, (size_t)E * sizeof(float));
	if (d->attn == ATT_BAHDANAU) {
		attend(d, m, R, K, s_prev, sl->q, sl->alpha, sl->ctx);
		for (int64_t r = 0; r < R; r++)
			memcpy(sl->x + r * Xin + E, sl->ctx + r * D, (size_t)D * sizeof(float));
		d->cell->step(d->cs, R, sl->x, s_prev, sl->s, sl->cache);
		for (int64_t r = 0; r < R; r++) {
			memcpy(feat + r * feat_ld, sl->s + r * H, (size_t)H * sizeof(float));
			memcpy(feat + r * feat_ld + H, sl->ctx + r * D, (size_t)D * sizeof(float));
		}
		return;
	}
	if (d->feed)
		for (int64_t r = 0; r < R; r++) {
			float *xf = sl->x + r * Xin + E;
			if (feed)
				memcpy(xf, feed + r * feed_ld, (size_t)H * sizeof(float));
			else
				memset(xf, 0, (size_t)H * sizeof(float));
		}
	d->cell->step(d->cs, R, sl->x, s_prev, sl->s, sl->cache);
	attend(d, m, R, K, sl->s, sl->q, sl->alpha, sl->ctx);
	for (int64_t r = 0; r < R; r++) {
		memcpy(sl->cat + r * (D + H), sl->ctx + r * D, (size_t)D * sizeof(float));
		memcpy(sl->cat + r * (D + H) + D, sl->s + r * H, (size_t)H * sizeof(float));
	}
	px_gemm(false, true, R, H, D + H, 1.0f, sl->cat, D + H, d->wc->value->data, D + H, 0.0f,
		feat, feat_ld);
	for (int64_t r = 0; r < R; r++)
		for (int64_t k = 0; k < H; k++)
			feat[r * feat_ld + k] = tanhf(feat[r * feat_ld + k]);
}

/* Buffers of one step for R rows; NULL on out of memory. */
static int slot_alloc(const struct dec *d, struct px_arena *a, int64_t R, int64_t T,
		      struct slot *sl)
{
	sl->y = px_arena_zalloc(a, (size_t)R * sizeof(int32_t));
	sl->x = arena_floats(a, R * d->Xin);
	sl->s = arena_floats(a, d->ns * R * d->H);
	sl->cache = arena_floats(a, (int64_t)d->cell->cache_floats(d->cs, R));
	sl->alpha = arena_floats(a, R * T);
	sl->ctx = arena_floats(a, R * d->D);
	sl->q = arena_floats(a, R * d->A);
	sl->cat = arena_floats(a, R * (d->D + d->H));
	return sl->y && sl->x && sl->s && sl->cache && sl->alpha && sl->ctx && sl->q && sl->cat;
}

/* logits[R,V] = feat[R,O] W_out^T + b (rows of feat ld feat_ld, of logits ld V) */
static void out_proj(const struct dec *d, int64_t R, const float *feat, int64_t feat_ld,
		     float *logits)
{
	for (int64_t r = 0; r < R; r++)
		memcpy(logits + r * d->V, d->ob->value->data, (size_t)d->V * sizeof(float));
	px_gemm(false, true, R, d->V, d->O, 1.0f, feat, feat_ld, d->ow->value->data, d->O, 1.0f,
		logits, d->V);
}

/* ================================================================== memory and init */
/* keys: h (dot), h W_a^T (general), h W_k^T (additive) */
static int mem_setup(const struct dec *d, struct px_arena *a, const struct px_tensor *h,
		     struct mem *m)
{
	m->B = h->shape[0];
	m->T = h->shape[1];
	m->h = h->data;
	m->len = px_arena_alloc(a, (size_t)(m->B ? m->B : 1) * sizeof(int32_t));
	if (!m->len)
		return -1;
	for (int64_t b = 0; b < m->B; b++) {
		int64_t len = px_tensor_len(h, b);
		m->len[b] = (int32_t)(len < 0 ? 0 : len > m->T ? m->T : len);
	}
	int64_t BT = m->B * m->T;
	m->keys_buf = NULL;
	if (d->score == SC_DOT) {
		m->keys = h->data;
		return 0;
	}
	if (!(m->keys_buf = arena_floats(a, BT * d->KD)))
		return -1;
	if (d->score == SC_GENERAL)
		px_gemm(false, true, BT, d->H, d->D, 1.0f, h->data, d->D, d->wa->value->data, d->D,
			0.0f, m->keys_buf, d->H);
	else
		px_gemm(false, true, BT, d->A, d->D, 1.0f, h->data, d->D, d->Wk, d->ldk, 0.0f,
			m->keys_buf, d->A);
	m->keys = m->keys_buf;
	return 0;
}

/* x0[B,S] = the top layer's slots of init [B, slots, F] (forward and backward concatenated) */
static void init_gather(const struct dec *d, int w, const struct px_tensor *t, float *x0)
{
	int64_t B = t->shape[0], slots = d->slots[w], dirs = d->dirs[w], F = d->fe[w];
	for (int64_t b = 0; b < B; b++)
		for (int64_t k = 0; k < dirs; k++)
			memcpy(x0 + b * dirs * F + k * F,
			       t->data + (b * slots + slots - dirs + k) * F, (size_t)F * sizeof(float));
}

/* s0[w] = tanh(x0 W_b^T + b_b) when S != H (the bridge), x0 when S == H, 0 unconnected */
static int init_state(struct dec *d, struct px_arena *a, const struct px_tensor *const *in,
		      int64_t B, float *s0, float **x0_out)
{
	int64_t H = d->H;
	for (int w = 0; w < d->ns; w++) {
		const struct px_tensor *t = in[IN_INIT + w];
		x0_out[w] = NULL;
		if (!d->has_init[w] || !t)
			continue;
		int64_t S = d->S[w];
		float *x0 = arena_floats(a, B * S), *s = s0 + w * B * H;
		if (!x0)
			return -1;
		init_gather(d, w, t, x0);
		x0_out[w] = x0;
		if (!d->bw[w]) {
			memcpy(s, x0, (size_t)(B * H) * sizeof(float));
			continue;
		}
		for (int64_t b = 0; b < B; b++)
			memcpy(s + b * H, d->bb[w]->value->data, (size_t)H * sizeof(float));
		px_gemm(false, true, B, H, S, 1.0f, x0, S, d->bw[w]->value->data, S, 1.0f, s, H);
		for (int64_t i = 0; i < B * H; i++)
			s[i] = tanhf(s[i]);
	}
	return 0;
}

/* d x0 = W_b^T (ds0 * (1 - s0^2)) (bridge) or ds0; scattered into the init slots (+=) */
static int init_backward(struct dec *d, struct px_arena *a, const float *s0, const float *ds0,
			 struct px_tensor *const *d_in)
{
	int64_t B = d->tf.B, H = d->H;
	for (int w = 0; w < d->ns; w++) {
		struct px_tensor *dt = d_in[IN_INIT + w];
		const float *x0 = d->tf.x0[w];
		if (!x0)
			continue;
		int64_t S = d->S[w], slots = d->slots[w], dirs = d->dirs[w], F = d->fe[w];
		const float *dsw = ds0 + w * B * H, *sw = s0 + w * B * H;
		float *dx0 = arena_floats(a, B * S);
		if (!dx0)
			return -1;
		if (d->bw[w]) {
			float *du = arena_floats(a, B * H);
			if (!du)
				return -1;
			for (int64_t i = 0; i < B * H; i++)
				du[i] = dsw[i] * (1.0f - sw[i] * sw[i]);
			px_gemm(true, false, H, S, B, 1.0f, du, H, x0, S, 1.0f, d->bw[w]->grad->data,
				S);
			for (int64_t i = 0; i < B * H; i++)
				d->bb[w]->grad->data[i % H] += du[i];
			px_gemm(false, false, B, S, H, 1.0f, du, H, d->bw[w]->value->data, S, 0.0f,
				dx0, S);
		} else {
			memcpy(dx0, dsw, (size_t)(B * H) * sizeof(float));
		}
		if (!dt)
			continue;
		for (int64_t b = 0; b < B; b++)
			for (int64_t k = 0; k < dirs; k++)
				px_axpy(F, 1.0f, dx0 + b * S + k * F,
					dt->data + (b * slots + slots - dirs + k) * F);
	}
	return 0;
}

/* ================================================================== teacher forcing */
/* Step i consumes y_{i-1} (<bos> at i = 0) for i < T; fills logits, weights and (when
 * non-NULL) tokens = argmax of each valid step; keeps what backward needs in d->tf. */
static int run_teacher(struct dec *d, struct px_arena *a, const struct mem *m, float *s0,
		       const float *y, int64_t T, const int32_t *tlen, struct px_tensor *logits,
		       struct px_tensor *weights, struct px_tensor *tokens, struct px_error *err)
{
	struct tf_cache *tf = &d->tf;
	int64_t B = m->B, TI = m->T, O = d->O, V = d->V, SS = d->ns * B * d->H;
	tf->B = B;
	tf->T = T;
	tf->m = *m;
	tf->tlen = (int32_t *)tlen;
	tf->s = s0;
	tf->feat = arena_floats(a, B * T * O);
	tf->sl = px_arena_zalloc(a, (size_t)(T ? T : 1) * sizeof *tf->sl);
	if (!tf->feat || !tf->sl)
		return nomem(err);
	for (int64_t i = 0; i < T; i++) {
		struct slot *sl = &tf->sl[i];
		if (!slot_alloc(d, a, B, TI, sl))
			return nomem(err);
		sl->s = s0 + (i + 1) * SS;   /* states are contiguous: s0 was sized [T+1] */
	}
	for (int64_t i = 0; i < T; i++) {   /* the ids: y_{i-1}, pad (0) past the length */
		int32_t *yi = tf->sl[i].y;
		for (int64_t b = 0; b < B; b++) {
			if (i == 0 || i - 1 >= tlen[b]) {
				yi[b] = i == 0 ? (int32_t)d->bos : 0;
				continue;
			}
			float id = y[b * T + i - 1];
			if (!(id >= 0 && id < (float)V))
				return px_error_set(
					err, PX_ERR_INVALID, "attention_decoder: target id %g at "
					"[%lld,%lld] is outside the vocabulary 0..%lld", (double)id,
					(long long)b, (long long)(i - 1), (long long)(V - 1));
			yi[b] = (int32_t)id;
		}
	}
	for (int64_t i = 0; i < T; i++) {
		const float *feed = d->feed && i > 0 ? tf->feat + (i - 1) * O : NULL;
		dec_step(d, m, B, 1, &tf->sl[i], s0 + i * SS, feed, T * O, tf->feat + i * O, T * O);
	}
	out_proj(d, B * T, tf->feat, O, logits->data);
	for (int64_t b = 0; b < B; b++)
		for (int64_t i = 0; i < T; i++) {
			float *lr = logits->data + (b * T + i) * V;
			if (i >= tlen[b]) {
				memset(lr, 0, (size_t)V * sizeof(float));
				continue;
			}
			memcpy(weights->data + (b * T + i) * TI, tf->sl[i].alpha + b * TI,
			       (size_t)TI * sizeof(float));
			if (tokens) {
				int64_t best = 0;
				for (int64_t v = 1; v < V; v++)
					best = lr[v] > lr[best] ? v : best;
				tokens->data[b * T + i] = (float)best;
			}
		}
	tf->valid = true;
	return 0;
}

/* ================================================================== greedy decoding */
/* y_i = argmax_v log p(v | y_<i); stops a row at <eos> or max_len. Writes tok [B][max_len],
 * len [B], score [B] = sum of the chosen log-probabilities; and the outputs when non-NULL. */
static int run_greedy(struct dec *d, struct px_arena *a, const struct mem *m, const float *s0,
		      int32_t *tok, int32_t *len, double *score, struct px_tensor *logits,
		      struct px_tensor *weights, struct px_error *err)
{
	int64_t B = m->B, TI = m->T, O = d->O, V = d->V, L = d->max_len, SS = d->ns * B * d->H;
	struct slot sl;
	float *s[2] = {arena_floats(a, SS), NULL}, *feat[2] = {arena_floats(a, B * O),
							       arena_floats(a, B * O)};
	float *lg = arena_floats(a, B * V);
	if (!slot_alloc(d, a, B, TI, &sl) || !s[0] || !feat[0] || !feat[1] || !lg)
		return nomem(err);
	s[1] = sl.s;
	memcpy(s[0], s0, (size_t)SS * sizeof(float));
	int64_t live = B;
	for (int64_t b = 0; b < B; b++) {
		len[b] = 0;
		score[b] = 0;
	}
	for (int64_t i = 0; i < L && live > 0; i++) {
		for (int64_t b = 0; b < B; b++)
			sl.y[b] = (int32_t)(i == 0 ? d->bos : tok[b * L + i - 1]);
		sl.s = s[(i + 1) & 1];
		const float *feed = i ? feat[(i - 1) & 1] : NULL;
		dec_step(d, m, B, 1, &sl, s[i & 1], feed, O, feat[i & 1], O);
		out_proj(d, B, feat[i & 1], O, lg);
		for (int64_t b = 0; b < B; b++) {
			if (len[b])
				continue;   /* finished: its outputs stay zero */
			const float *lr = lg + b * V;
			int64_t best = 0;
			for (int64_t v = 1; v < V; v++)
				best = lr[v] > lr[best] ? v : best;
			score[b] += (double)lr[best] - log_sum_exp(lr, V);
			tok[b * L + i] = (int32_t)best;
			if (best == d->eos || i == L - 1) {
				len[b] = (int32_t)(i + 1);
				live--;
			}
			if (logits)
				memcpy(logits->data + (b * L + i) * V, lr,
				       (size_t)V * sizeof(float));
			if (weights)
				memcpy(weights->data + (b * L + i) * TI, sl.alpha + b * TI,
				       (size_t)TI * sizeof(float));
		}
	}
	return 0;
}

/* ================================================================== beam search */
struct cand {
	double score;
	int32_t parent, token;
};

/* Keep the n best of cands[0..*nc) sorted by score (stable: earlier wins ties). */
static void cand_insert(struct cand *c, int *nc, int cap, struct cand x)
{
	int pos = *nc;
	while (pos > 0 && x.score > c[pos - 1].score)
		pos--;
	if (pos >= cap)
		return;
	int last = *nc < cap ? *nc : cap - 1;
	for (int k = last; k > pos; k--)
		c[k] = c[k - 1];
	c[pos] = x;
	if (*nc < cap)
		(*nc)++;
}

/* Beam search with K hypotheses per example: each step extends the live hypotheses, keeps
 * the 2K best extensions, finishes those ending in <eos> among the K best, and keeps the K
 * best others alive; an example is done when K hypotheses finished (all are finished at
 * max_len). The result is the finished hypothesis of highest score / ((5+len)/6)^alpha.
 * Writes tok [B][max_len], len [B], best [B] (that normalised score). */
static int run_beam(struct dec *d, struct px_arena *a, const struct mem *m, const float *s0,
		    int32_t *tok, int32_t *len, double *best, struct px_error *err)
{
	int64_t B = m->B, K = d->beam, R = B * K, TI = m->T, O = d->O, V = d->V, H = d->H;
	int64_t L = d->max_len, ns = d->ns;
	struct slot sl;
	/* s_live: the live hypotheses' states (rows reordered after each step); sl.s: the
	 * cell's output before reordering. htok/hs: tokens and scores, double-buffered. */
	float *s_live = arena_floats(a, ns * R * H), *feat = arena_floats(a, R * O);
	float *feed = arena_floats(a, R * O), *lg = arena_floats(a, R * V);
	int32_t *htok[2] = {px_arena_zalloc(a, (size_t)(R * L) * sizeof(int32_t)),
			    px_arena_zalloc(a, (size_t)(R * L) * sizeof(int32_t))};
	double *hs[2] = {px_arena_alloc(a, (size_t)R * sizeof(double)),
			 px_arena_alloc(a, (size_t)R * sizeof(double))};
	int32_t *nfin = px_arena_zalloc(a, (size_t)(B ? B : 1) * sizeof(int32_t));
	struct cand *c = px_arena_alloc(a, (size_t)(2 * K) * sizeof *c);
	if (!slot_alloc(d, a, R, TI, &sl) || !s_live || !feat || !feed || !lg || !htok[0] ||
	    !htok[1] || !hs[0] || !hs[1] || !nfin || !c)
		return nomem(err);
	for (int64_t r = 0; r < R; r++) {   /* every hypothesis starts from its example's s0 */
		for (int64_t w = 0; w < ns; w++)
			memcpy(s_live + (w * R + r) * H, s0 + (w * B + r / K) * H,
			       (size_t)H * sizeof(float));
		hs[0][r] = r % K ? -INFINITY : 0.0;   /* one live hypothesis at first */
	}
	for (int64_t b = 0; b < B; b++) {
		best[b] = -INFINITY;
		len[b] = 0;
	}
	int64_t done = 0;
	for (int64_t i = 0, cur = 0; i < L && done < B; i++, cur ^= 1) {
		int64_t nxt = cur ^ 1;
		for (int64_t r = 0; r < R; r++)
			sl.y[r] = (int32_t)(i == 0 ? d->bos : htok[cur][r * L + i - 1]);
		dec_step(d, m, R, K, &sl, s_live, i ? feed : NULL, O, feat, O);
		out_proj(d, R, feat, O, lg);
		for (int64_t b = 0; b < B; b++) {
			if (nfin[b] >= K)
				continue;
			int nc = 0;
			for (int64_t r = b * K; r < (b + 1) * K; r++) {
				if (hs[cur][r] == -INFINITY)
					continue;
				const float *lr = lg + r * V;
				double lse = log_sum_exp(lr, V);
				for (int64_t v = 0; v < V; v++)
					cand_insert(c, &nc, (int)(2 * K), (struct cand){
						hs[cur][r] + ((double)lr[v] - lse), (int32_t)r,
						(int32_t)v});
			}
			int64_t alive = 0;
			for (int rank = 0; rank < nc; rank++) {
				const struct cand *x = &c[rank];
				const int32_t *parent = htok[cur] + x->parent * L;
				bool eos = x->token == d->eos;
				if (eos ? rank >= K : alive == K)
					continue;
				if (eos || i == L - 1) {   /* finished: keep it if it is the best */
					double norm = x->score / length_penalty(d->lnorm, i + 1);
					alive += !eos;
					nfin[b]++;
					if (!(norm > best[b]))
						continue;
					best[b] = norm;
					len[b] = (int32_t)(i + 1);
					memcpy(tok + b * L, parent, (size_t)i * sizeof(int32_t));
					tok[b * L + i] = x->token;
					continue;
				}
				/* alive: copy the parent's tokens and state */
				int64_t r = b * K + alive++;
				memcpy(htok[nxt] + r * L, parent, (size_t)i * sizeof(int32_t));
				htok[nxt][r * L + i] = x->token;
				hs[nxt][r] = x->score;
				for (int64_t w = 0; w < ns; w++)
					memcpy(s_live + (w * R + r) * H,
					       sl.s + (w * R + x->parent) * H, (size_t)H * sizeof(float));
				memcpy(feed + r * O, feat + x->parent * O,
				       (size_t)O * sizeof(float));
			}
			for (int64_t r = b * K + (i == L - 1 ? 0 : alive); r < (b + 1) * K; r++)
				hs[nxt][r] = -INFINITY;
			if (nfin[b] >= K || i == L - 1)
				done++;
		}
	}
	return 0;
}

/* ================================================================== forward */
static struct px_tensor *new3(struct px_arena *a, int64_t d0, int64_t d1, int64_t d2,
			      const int32_t *lengths)
{
	struct px_tensor *t = px_tensor_new3(a, d0, d1, d2);
	if (t)
		t->lengths = lengths;
	return t;
}

static int check_inputs(const struct dec *d, const struct px_tensor *const *in, int n_in,
			struct px_error *err)
{
	const struct px_tensor *mem = in[IN_MEMORY], *y = in[IN_TARGETS];
	if (!mem || mem->ndim != 3 || mem->shape[2] != d->D)
		return px_error_set(err, PX_ERR_SHAPE,
				    "attention_decoder: memory must be a sequence [B,T,%lld]",
				    (long long)d->D);
	int64_t B = mem->shape[0];
	if (y && (y->ndim != 2 || y->shape[0] != B))
		return px_error_set(err, PX_ERR_SHAPE, "attention_decoder: targets must be ids "
				    "[%lld,T]", (long long)B);
	for (int w = 0; w < 2; w++) {
		const struct px_tensor *t = IN_INIT + w < n_in ? in[IN_INIT + w] : NULL;
		if (!t || !d->has_init[w])
			continue;
		int64_t slots = t->ndim == 3 ? t->shape[1] : 1;
		if (t->shape[0] != B || slots != d->slots[w] || t->shape[t->ndim - 1] != d->fe[w])
			return px_error_set(err, PX_ERR_SHAPE,
					    "attention_decoder: %s must be [%lld,%lld,%lld]",
					    w ? "init_cell" : "init", (long long)B,
					    (long long)d->slots[w], (long long)d->fe[w]);
	}
	return 0;
}

/* The text of token `id` of vocabulary v[0..n) (a space shown as U+2423), else the id. */
static void token_label(const char *const *v, int64_t n, float id, char *out, size_t cap)
{
	int64_t i = (int64_t)id;
	if (v && i >= 0 && i < n && v[i])
		snprintf(out, cap, "%s", strcmp(v[i], " ") ? v[i] : "\xe2\x90\xa3");
	else
		snprintf(out, cap, "%lld", (long long)i);
}

/* Report figure (ABI 1.1, a report's figure pass only): the alignment weights w [B,T,T_in] of
 * the first examples, rows labelled with the output tokens rows_tok [B,T], columns with the
 * source tokens when the model's input is token ids. */
static void dec_figure(const struct dec *d, struct px_arena *a, const struct px_tensor *mem,
		       const struct px_tensor *w, const struct px_tensor *rows_tok)
{
	const struct px_host *h = d->host;
	const struct px_figure_batch *fb = PX_HOST_HAS(h, figure_batch) ? h->figure_batch(h) : NULL;
	if (!fb || !PX_HOST_HAS(h, figure_heatmap))
		return;
	int64_t B = w->shape[0], T = w->shape[1], TI = w->shape[2];
	const struct px_tensor *src = fb->x && fb->x->ndim == 2 && fb->x->shape[0] == B &&
				      fb->x->shape[1] == TI ? fb->x : NULL;
	for (int64_t b = 0; b < B && b < 3; b++) {
		int64_t rows = px_tensor_len(w, b), cols = px_tensor_len(mem, b);
		rows = rows > T ? T : rows;
		cols = cols > TI ? TI : cols;
		if (rows < 1 || cols < 1 || rows * cols > 16384)
			continue;
		float *m = px_arena_alloc(a, (size_t)(rows * cols) * sizeof *m);
		char *text = px_arena_alloc(a, (size_t)(rows + cols) * 32);
		const char **lab = px_arena_alloc(a, (size_t)(rows + cols) * sizeof *lab);
		if (!m || !text || !lab)
			return;
		for (int64_t i = 0; i < rows; i++) {
			memcpy(m + i * cols, w->data + (b * T + i) * TI, (size_t)cols * sizeof *m);
			token_label(fb->y_vocab, fb->y_vocab_n, rows_tok->data[b * T + i], text + i * 32, 32);
		}
		for (int64_t j = 0; j < cols; j++) {
			char *t = text + (rows + j) * 32;
			if (src)
				token_label(fb->x_vocab, fb->x_vocab_n, src->data[b * TI + j], t, 32);
			else
				snprintf(t, 32, "%lld", (long long)j);
		}
		for (int64_t k = 0; k < rows + cols; k++)
			lab[k] = text + k * 32;
		char title[64];
		snprintf(title, sizeof title, "attention alignment, example %lld", (long long)b);
		h->figure_heatmap(h, d->node, title, m, (int)rows, (int)cols, lab, lab + rows,
				  "source", "output");
	}
}

/* teacher forcing when targets are given, else greedy or beam-search decoding */
static int dec_forward(void *self, struct px_fwd *f, struct px_error *err)
{
	struct dec *d = self;
	const struct px_tensor *in[N_IN] = {0};
	for (int i = 0; i < f->n_in && i < N_IN; i++)
		in[i] = f->in[i];
	d->tf.valid = false;
	int rc = check_inputs(d, in, f->n_in, err);
	if (rc)
		return rc;
	struct px_arena *a = f->arena;
	const struct px_tensor *y = in[IN_TARGETS];
	int64_t B = in[IN_MEMORY]->shape[0], TI = in[IN_MEMORY]->shape[1], V = d->V;
	int64_t T = y ? y->shape[1] : d->max_len, SS = d->ns * B * d->H;
	struct mem m;
	bool beam = !y && (d->beam > 1 || d->always_beam);
	/* states [T+1][n_state][B][H] for teacher forcing (beam search ends with it) */
	float *s0 = arena_floats(a, (y || beam ? T + 1 : 1) * SS);
	int32_t *tlen = px_arena_alloc(a, (size_t)(B ? B : 1) * sizeof(int32_t));
	if (!s0 || !tlen || mem_setup(d, a, in[IN_MEMORY], &m) ||
	    init_state(d, a, in, B, s0, d->tf.x0))
		return nomem(err);
	const int32_t *out_len = y ? y->lengths : tlen;
	struct px_tensor *logits = new3(a, B, T, V, out_len), *weights = new3(a, B, T, TI, out_len);
	struct px_tensor *tokens = px_tensor_new2(a, B, T);
	if (!logits || !weights || !tokens)
		return nomem(err);
	tokens->lengths = out_len;
	f->out[OUT_LOGITS] = logits;
	f->out[OUT_WEIGHTS] = weights;
	f->out[OUT_TOKENS] = tokens;
	if (y) {
		for (int64_t b = 0; b < B; b++) {
			int64_t len = px_tensor_len(y, b);
			tlen[b] = (int32_t)(len < 0 ? 0 : len > T ? T : len);
		}
		rc = run_teacher(d, a, &m, s0, y->data, T, tlen, logits, weights, tokens, err);
		if (!rc && !f->train)
			dec_figure(d, a, in[IN_MEMORY], weights, y);
		return rc;
	}
	int32_t *tok = px_arena_zalloc(a, (size_t)(B * T + 1) * sizeof(int32_t));
	double *score = px_arena_alloc(a, (size_t)(B + 1) * sizeof(double));
	if (!tok || !score)
		return nomem(err);
	rc = run_greedy(d, a, &m, s0, tok, tlen, score, beam ? NULL : logits, beam ? NULL : weights,
			err);
	if (!rc && beam) {
		/* beam search alone is not monotone in K: for K > 1 the greedy hypothesis competes
		 * too, so beam search never returns a lower normalised score than greedy */
		int32_t *btok = px_arena_zalloc(a, (size_t)(B * T + 1) * sizeof(int32_t));
		int32_t *blen = px_arena_alloc(a, (size_t)(B + 1) * sizeof(int32_t));
		double *bscore = px_arena_alloc(a, (size_t)(B + 1) * sizeof(double));
		float *yf = arena_floats(a, B * T);
		if (!btok || !blen || !bscore || !yf)
			return nomem(err);
		rc = run_beam(d, a, &m, s0, btok, blen, bscore, err);
		for (int64_t b = 0; !rc && b < B; b++) {
			double g = score[b] / length_penalty(d->lnorm, tlen[b]);
			if (d->beam == 1 || bscore[b] >= g) {
				memcpy(tok + b * T, btok + b * T, (size_t)T * sizeof(int32_t));
				tlen[b] = blen[b];
			}
		}
		for (int64_t i = 0; i < B * T; i++)
			yf[i] = (float)tok[i];
		/* the outputs of the chosen hypotheses: a teacher-forced pass over them */
		if (!rc)
			rc = run_teacher(d, a, &m, s0, yf, T, tlen, logits, weights, NULL, err);
		d->tf.valid = false;
	}
	if (rc)
		return rc;
	for (int64_t b = 0; b < B; b++)
		for (int64_t i = 0; i < tlen[b]; i++)
			tokens->data[b * T + i] = (float)tok[b * T + i];
	if (!f->train)
		dec_figure(d, a, in[IN_MEMORY], weights, tokens);
	return 0;
}

/* ================================================================== backward */
/* Reverse over the steps of the last teacher-forced forward:
 * d feat = d logits W_out (valid steps); then per step i, from the state gradient ds_i:
 *   luong:    du = (d h~_i + d h~ fed to step i+1) * (1 - h~_i^2); d[c; h] = du W_c;
 *             attention backward (query s_i.h); cell backward -> ds_{i-1}, d emb, d h~_{i-1}
 *   bahdanau: ds_i.h += d feat.h; cell backward -> ds_{i-1}, d emb, d c_i;
 *             attention backward (query s_{i-1}.h) into ds_{i-1}.h
 * and finally the keys' gradients into memory and W, the initial state's into init. */
static int dec_backward(void *self, struct px_bwd *bw, struct px_error *err)
{
	struct dec *d = self;
	struct tf_cache *tf = &d->tf;
	if (!tf->valid)
		return px_error_set(err, PX_ERR_UNSUPPORTED,
				    "attention_decoder: backward needs teacher forcing (targets "
				    "connected); free-running decoding is inference only");
	const struct px_tensor *dlog = bw->d_out[OUT_LOGITS], *dwts = bw->d_out[OUT_WEIGHTS];
	struct px_tensor *dmem_t = bw->n_in > IN_MEMORY ? bw->d_in[IN_MEMORY] : NULL;
	struct px_tensor *d_in[N_IN] = {0};
	for (int i = 0; i < bw->n_in && i < N_IN; i++)
		d_in[i] = bw->d_in[i];
	struct px_arena *a = bw->arena;
	const struct mem *m = &tf->m;
	int64_t B = tf->B, T = tf->T, TI = m->T, H = d->H, D = d->D, O = d->O, V = d->V;
	int64_t E = d->E, Xin = d->Xin, SS = d->ns * B * H, KD = d->KD;
	float *dfeat = arena_floats(a, B * T * O), *ds = arena_floats(a, SS);
	float *dsp = arena_floats(a, SS), *dx = arena_floats(a, B * Xin);
	float *dfeed = arena_floats(a, B * H), *dctx = arena_floats(a, B * D);
	float *dq = arena_floats(a, B * d->A), *du = arena_floats(a, B * H);
	float *dcat = arena_floats(a, B * (D + H)), *de = arena_floats(a, TI);
	float *dkeys = d->score == SC_DOT ? NULL : arena_floats(a, B * TI * KD);
	float *dl = dlog ? arena_floats(a, B * T * V) : NULL;
	if (!dfeat || !ds || !dsp || !dx || !dfeed || !dctx || !dq || !du || !dcat || !de ||
	    (d->score != SC_DOT && !dkeys) || (dlog && !dl))
		return nomem(err);
	float *dmem = dmem_t ? dmem_t->data : NULL;
	if (d->score == SC_DOT)
		dkeys = dmem;
	if (dlog) {   /* dl = d logits of the valid steps */
		for (int64_t b = 0; b < B; b++)
			memcpy(dl + b * T * V, dlog->data + b * T * V,
			       (size_t)(tf->tlen[b] * V) * sizeof(float));
		/* dW_out += dl^T feat; db += sum dl; dfeat = dl W_out */
		px_gemm(true, false, V, O, B * T, 1.0f, dl, V, tf->feat, O, 1.0f,
			d->ow->grad->data, O);
		for (int64_t r = 0; r < B * T; r++)
			px_axpy(V, 1.0f, dl + r * V, d->ob->grad->data);
		px_gemm(false, false, B * T, O, V, 1.0f, dl, V, d->ow->value->data, O, 0.0f,
			dfeat, O);
	}
	float *demb = d->emb->grad->data;
	for (int64_t i = T - 1; i >= 0; i--) {
		const struct slot *sl = &tf->sl[i];
		const float *s_prev = tf->s + i * SS, *dw = dwts ? dwts->data + i * TI : NULL;
		if (d->attn == ATT_LUONG) {
			for (int64_t b = 0; b < B; b++) {
				const float *ht = tf->feat + (b * T + i) * O;
				const float *dh = dfeat + (b * T + i) * O, *df = dfeed + b * H;
				for (int64_t k = 0; k < H; k++)
					du[b * H + k] = (dh[k] + df[k]) * (1.0f - ht[k] * ht[k]);
			}
			px_gemm(true, false, H, D + H, B, 1.0f, du, H, sl->cat, D + H, 1.0f,
				d->wc->grad->data, D + H);
			px_gemm(false, false, B, D + H, H, 1.0f, du, H, d->wc->value->data, D + H,
				0.0f, dcat, D + H);
			for (int64_t b = 0; b < B; b++) {
				memcpy(dctx + b * D, dcat + b * (D + H), (size_t)D * sizeof(float));
				px_axpy(H, 1.0f, dcat + b * (D + H) + D, ds + b * H);
			}
			attend_backward(d, m, B, i, tf->tlen, sl->s, sl->q, sl->alpha, dctx, dw,
					T * TI, de, dq, ds, dmem, dkeys);
		} else {
			for (int64_t b = 0; b < B; b++) {
				px_axpy(H, 1.0f, dfeat + (b * T + i) * O, ds + b * H);
				memcpy(dctx + b * D, dfeat + (b * T + i) * O + H,
				       (size_t)D * sizeof(float));
			}
		}
		memset(dx, 0, (size_t)(B * Xin) * sizeof(float));
		memset(dsp, 0, (size_t)SS * sizeof(float));
		d->cell->step_backward(d->cs, B, sl->x, s_prev, sl->cache, ds, dx, dsp);
		for (int64_t b = 0; b < B; b++) {
			if (i >= tf->tlen[b])
				continue;
			px_axpy(E, 1.0f, dx + b * Xin, demb + (int64_t)sl->y[b] * E);
			if (d->attn == ATT_LUONG && d->feed)
				memcpy(dfeed + b * H, dx + b * Xin + E, (size_t)H * sizeof(float));
			else if (d->attn == ATT_BAHDANAU)
				px_axpy(D, 1.0f, dx + b * Xin + E, dctx + b * D);
		}
		if (d->attn == ATT_BAHDANAU)
			attend_backward(d, m, B, i, tf->tlen, s_prev, sl->q, sl->alpha, dctx, dw,
					T * TI, de, dq, dsp, dmem, dkeys);
		float *t = ds;
		ds = dsp;
		dsp = t;
	}
	int64_t BT = B * TI;
	if (d->score == SC_GENERAL) {   /* keys = h W_a^T: dh += dK W_a; dW_a += dK^T h */
		if (dmem)
			px_gemm(false, false, BT, D, H, 1.0f, dkeys, H, d->wa->value->data, D, 1.0f,
				dmem, D);
		px_gemm(true, false, H, D, BT, 1.0f, dkeys, H, m->h, D, 1.0f, d->wa->grad->data, D);
	} else if (d->score >= SC_CONCAT) {   /* keys = h W_k^T */
		if (dmem)
			px_gemm(false, false, BT, D, d->A, 1.0f, dkeys, d->A, d->Wk, d->ldk, 1.0f,
				dmem, D);
		px_gemm(true, false, d->A, D, BT, 1.0f, dkeys, d->A, m->h, D, 1.0f, d->dWk, d->ldk);
	}
	if (init_backward(d, a, tf->s, ds, d_in))
		return nomem(err);
	return 0;
}

/* ================================================================== schema and create */
static const struct px_param_spec dec_schema[] = {
	{"cell", PX_T_ENUM, "lstm", 0, 0, "lstm|gru|rnn",
	 "recurrent cell (from whichever plugin provides it)"},
	{"hidden", PX_T_INT, NULL, 1, 1e6, NULL, "decoder state size"},
	{"vocab", PX_T_INT, NULL, 2, 1e8, NULL, "output vocabulary size (usually $y_vocab)"},
	{"embed", PX_T_INT, "64", 1, 1e6, NULL, "target embedding size"},
	{"attention", PX_T_ENUM, "luong", 0, 0, "bahdanau|luong", "attention mechanism"},
	{"score", PX_T_ENUM, "general", 0, 0, "dot|general|concat", "luong score function"},
	{"attn_units", PX_T_INT, "0", 0, 1e6, NULL,
	 "units of additive attention (bahdanau, concat); 0 = hidden"},
	{"input_feeding", PX_T_BOOL, "false", 0, 0, NULL, "luong: feed h~_{i-1} into the cell"},
	{"bos", PX_T_INT, "1", 0, 1e8, NULL, "begin-of-sequence token id"},
	{"eos", PX_T_INT, "2", 0, 1e8, NULL, "end-of-sequence token id"},
	{"max_len", PX_T_INT, "32", 1, 1e6, NULL, "longest free-running decode"},
	{"beam", PX_T_INT, "1", 1, 1000, NULL, "beam width (1 = greedy)"},
	{"length_norm", PX_T_FLOAT, "0.6", 0, 10, NULL,
	 "beam score / ((5+len)/6)^alpha (GNMT); 0 = none"},
	{"search", PX_T_ENUM, "auto", 0, 0, "auto|beam",
	 "auto: greedy when beam is 1; beam: the beam-search code even for beam 1"},
	{"init_dirs", PX_T_INT, "0", 0, 2, NULL,
	 "directions of the encoder state in init (0 = 2 when memory has 2x its features)"},
	{NULL, 0, NULL, 0, 0, NULL, NULL},
};

static const struct px_port_spec dec_in[] = {
	{"targets", PX_PORT_OPTIONAL | PX_PORT_NO_GRAD,
	 "target ids [B,T_out] ending in <eos> (teacher forcing); unconnected/NULL: decode"},
	{"memory", 0, "the encoder's sequence [B,T_in,D]; its lengths mask the attention"},
	{"init", PX_PORT_OPTIONAL, "the encoder's final h [B,layers*dirs,H_enc]"},
	{"init_cell", PX_PORT_OPTIONAL, "the encoder's final c [B,layers*dirs,H_enc] (lstm)"},
	{NULL, 0, NULL},
};

static const struct px_port_spec dec_out[] = {
	{"out", 0, "logits [B,T_out,vocab] with lengths"},
	{"weights", 0, "alignment [B,T_out,T_in]: valid rows sum to 1, 0 on padding"},
	{"tokens", PX_PORT_NO_GRAD, "decoded ids [B,T_out] (teacher forcing: argmax per step)"},
	{NULL, 0, NULL},
};

static void dec_destroy(void *self)
{
	struct dec *d = self;
	if (!d)
		return;
	if (d->cs)
		d->cell->destroy(d->cs);
	free(d);
}

/* A parameter initialised U(-bound, bound) (nn.Linear's init with bound 1/sqrt(fan_in)). */
static struct px_param *param(struct px_build *b, const char *name, int64_t rows, int64_t cols,
			      float bound, struct px_error *err)
{
	int64_t shape[2] = {rows, cols};
	struct px_param *p = px_build_param(b, name, cols ? 2 : 1, shape, err);
	if (p)
		px_init_uniform(p->value, b->rng, bound);
	return p;
}

static int init_port(struct px_build *b, struct dec *d, int w, int64_t dirs_opt,
		     struct px_error *err)
{
	const struct px_shape *s = &b->in[IN_INIT + w];
	char buf[96];
	if (s->ndim == 0)
		return 0;
	const char *port = w ? "init_cell" : "init";
	if (s->ndim != 2 && s->ndim != 3)
		return px_build_error(b, err, PX_ERR_SHAPE,
				      "port '%s' must be an encoder state [B,layers*dirs,H], "
				      "got %s", port, px_shape_str(s, buf, sizeof buf));
	if (w && d->ns < 2)
		return px_build_error(b, err, PX_ERR_INVALID,
				      "port 'init_cell' needs an lstm cell (cell: %s has no c)",
				      d->cell->kind);
	d->has_init[w] = true;
	d->slots[w] = s->ndim == 3 ? s->dim[1] : 1;
	d->fe[w] = s->dim[s->ndim - 1];
	d->dirs[w] = dirs_opt ? dirs_opt :
		     (d->slots[w] % 2 == 0 && d->D == 2 * d->fe[w]) ? 2 : 1;
	if (d->slots[w] % d->dirs[w])
		return px_build_error(b, err, PX_ERR_SHAPE,
				      "port '%s' %s: %lld slots are not layers x %lld directions",
				      port, px_shape_str(s, buf, sizeof buf),
				      (long long)d->slots[w], (long long)d->dirs[w]);
	d->S[w] = d->dirs[w] * d->fe[w];
	if (d->S[w] == d->H)
		return 0;
	float bound = 1.0f / sqrtf((float)d->S[w]);
	d->bw[w] = param(b, w ? "bridge_cell.weight" : "bridge.weight", d->H, d->S[w], bound, err);
	d->bb[w] = d->bw[w] ? param(b, w ? "bridge_cell.bias" : "bridge.bias", d->H, 0, bound, err)
			    : NULL;
	return d->bb[w] ? 0 : err->code;
}

static int dec_create(struct px_build *b, void **self, struct px_shape *out,
		      struct px_error *err)
{
	const struct px_config *cfg = b->cfg;
	struct px_shape none = {0};
	const struct px_shape *tgt = b->n_in > IN_TARGETS ? &b->in[IN_TARGETS] : &none;
	const struct px_shape *mem = b->n_in > IN_MEMORY ? &b->in[IN_MEMORY] : &none;
	char buf[96];
	if (b->n_in > N_IN)
		return px_build_error(b, err, PX_ERR_INVALID, "takes at most %d inputs", N_IN);
	if (mem->ndim != 3 || mem->dim[2] < 1)
		return px_build_error(b, err, PX_ERR_SHAPE,
				      "port 'memory' must be a sequence [B,T,F] (an encoder's seq "
				      "output, e.g. memory: enc.seq), got %s",
				      px_shape_str(mem, buf, sizeof buf));
	if (tgt->ndim != 0 && tgt->ndim != 2)
		return px_build_error(b, err, PX_ERR_SHAPE,
				      "port 'targets' must be token ids [B,T], got %s",
				      px_shape_str(tgt, buf, sizeof buf));
	struct dec *d = calloc(1, sizeof *d);
	if (!d)
		return nomem(err);
	d->host = b->host;
	snprintf(d->node, sizeof d->node, "%s", b->node);
	int rc;
	d->V = px_config_int(cfg, "vocab");
	d->E = px_config_int(cfg, "embed");
	d->H = px_config_int(cfg, "hidden");
	d->D = mem->dim[2];
	d->A = px_config_int(cfg, "attn_units") ? px_config_int(cfg, "attn_units") : d->H;
	d->attn = strcmp(px_config_str(cfg, "attention"), "luong") ? ATT_BAHDANAU : ATT_LUONG;
	const char *sc = px_config_str(cfg, "score");
	d->score = d->attn == ATT_BAHDANAU ? SC_ADDITIVE :
		   !strcmp(sc, "dot") ? SC_DOT : !strcmp(sc, "general") ? SC_GENERAL : SC_CONCAT;
	d->feed = px_config_bool(cfg, "input_feeding");
	d->bos = px_config_int(cfg, "bos");
	d->eos = px_config_int(cfg, "eos");
	d->max_len = px_config_int(cfg, "max_len");
	d->beam = px_config_int(cfg, "beam");
	d->always_beam = !strcmp(px_config_str(cfg, "search"), "beam");
	d->lnorm = px_config_float(cfg, "length_norm");
	if (d->bos >= d->V || d->eos >= d->V) {
		rc = px_config_error(cfg, err, PX_ERR_INVALID, d->bos >= d->V ? "bos" : "eos",
				     "token id %lld is outside the vocabulary 0..%lld",
				     (long long)(d->bos >= d->V ? d->bos : d->eos),
				     (long long)(d->V - 1));
		goto fail;
	}
	if (d->attn == ATT_BAHDANAU && (px_config_is_set(cfg, "score") || d->feed)) {
		rc = px_config_error(cfg, err, PX_ERR_INVALID,
				     d->feed ? "input_feeding" : "score",
				     "applies to attention: luong only (bahdanau has its own "
				     "score)");
		goto fail;
	}
	if (d->score == SC_DOT && d->D != d->H) {
		rc = px_config_error(cfg, err, PX_ERR_SHAPE, "score",
				     "'dot' needs memory features (%lld) == hidden (%lld); use "
				     "score: general or concat", (long long)d->D, (long long)d->H);
		goto fail;
	}
	const char *kind = px_config_str(cfg, "cell");
	struct px_error e = {0};
	d->cell = b->host && b->host->find_cell ? b->host->find_cell(b->host, kind, &e) : NULL;
	if (!d->cell) {
		rc = px_build_error(b, err, PX_ERR_NOTFOUND, "cell '%s': %s", kind,
				    e.msg[0] ? e.msg : "no host to find cells");
		goto fail;
	}
	d->ns = d->cell->n_state;
	d->Xin = d->E + (d->attn == ATT_BAHDANAU ? d->D : d->feed ? d->H : 0);
	d->O = d->attn == ATT_BAHDANAU ? d->H + d->D : d->H;
	d->KD = d->score == SC_DOT ? d->D : d->score == SC_GENERAL ? d->H : d->A;

	/* parameters: embedding, cell, attention, output, bridges */
	int64_t eshape[2] = {d->V, d->E};
	d->emb = px_build_param(b, "embed.weight", 2, eshape, err);
	if (!d->emb)
		goto fail_code;
	px_init_normal(d->emb->value, b->rng, 1.0f);   /* nn.Embedding's N(0, 1) */
	if ((rc = d->cell->create(b, "cell.", d->Xin, d->H, &d->cs, err)))
		goto fail;
	int64_t H = d->H, D = d->D, A = d->A;
	if (d->score == SC_ADDITIVE) {
		if (!(d->wq = param(b, "attn.W", A, H, 1.0f / sqrtf((float)H), err)) ||
		    !(d->wk = param(b, "attn.U", A, D, 1.0f / sqrtf((float)D), err)))
			goto fail_code;
		d->Wq = d->wq->value->data;
		d->dWq = d->wq->grad->data;
		d->Wk = d->wk->value->data;
		d->dWk = d->wk->grad->data;
		d->ldq = H;
		d->ldk = D;
	} else if (d->score == SC_CONCAT) {   /* W_a [A, H+D] = [W_q | W_k] */
		if (!(d->wa = param(b, "attn.W_a", A, H + D, 1.0f / sqrtf((float)(H + D)), err)))
			goto fail_code;
		d->Wq = d->wa->value->data;
		d->dWq = d->wa->grad->data;
		d->Wk = d->Wq + H;
		d->dWk = d->dWq + H;
		d->ldq = d->ldk = H + D;
	} else if (d->score == SC_GENERAL) {
		if (!(d->wa = param(b, "attn.W_a", H, D, 1.0f / sqrtf((float)D), err)))
			goto fail_code;
	}
	if (d->score >= SC_CONCAT &&
	    !(d->v = param(b, "attn.v", 1, A, 1.0f / sqrtf((float)A), err)))
		goto fail_code;
	if (d->attn == ATT_LUONG &&
	    !(d->wc = param(b, "attn.W_c", H, D + H, 1.0f / sqrtf((float)(D + H)), err)))
		goto fail_code;
	float ob = 1.0f / sqrtf((float)d->O);
	if (!(d->ow = param(b, "out.weight", d->V, d->O, ob, err)) ||
	    !(d->ob = param(b, "out.bias", d->V, 0, ob, err)))
		goto fail_code;
	int64_t dirs = px_config_int(cfg, "init_dirs");
	for (int w = 0; w < 2 && IN_INIT + w < b->n_in; w++)
		if ((rc = init_port(b, d, w, dirs, err)))
			goto fail;

	int64_t T = tgt->ndim ? tgt->dim[1] : d->max_len;
	out[OUT_LOGITS] = (struct px_shape){.ndim = 3, .dim = {-1, T, d->V}};
	out[OUT_WEIGHTS] = (struct px_shape){.ndim = 3, .dim = {-1, T, mem->dim[1]}};
	out[OUT_TOKENS] = (struct px_shape){.ndim = 2, .dim = {-1, T}};
	*self = d;
	return 0;
fail_code:
	rc = err->code ? err->code : PX_ERR_NOMEM;
fail:
	dec_destroy(d);
	return rc;
}

const struct px_layer_ops px_attention_decoder_ops = {
	.struct_size = sizeof(struct px_layer_ops),
	.kind = "attention_decoder",
	.doc = "attention encoder-decoder's decoder (Bahdanau or Luong) over an encoder's "
	       "sequence: teacher forcing, greedy and beam-search decoding",
	.schema = dec_schema,
	.inputs = dec_in,
	.outputs = dec_out,
	.flags = PX_LAYER_IDS_INPUT,
	.create = dec_create,
	.forward = dec_forward,
	.backward = dec_backward,
	.destroy = dec_destroy,
};
