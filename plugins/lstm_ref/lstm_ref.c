/* plexus plugin: lstm_ref — a plain reference LSTM, one timestep at a time, for cross-checking.
 *
 * It provides the kinds "lstm" (layer) and "lstm" (cell) like plugins/lstm, with the same
 * options, ports, parameter names, layouts and initialisation (PyTorch's nn.LSTM and
 * LSTMCell), so checkpoints move between the two. It is written to be read, not to be fast:
 * batch-first buffers, one px_gemm per weight matrix and step, libm's tanhf/expf, no threads.
 * Select it per node with `impl: lstm_ref` or for a whole run with `--prefer lstm=lstm_ref`;
 * without a choice a pipeline gets the plugin named after the kind, `lstm` (docs/plugins.md).
 *
 *   gates = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh, split in i, f, g, o (PyTorch's order)
 *   i, f, o = sigmoid(.), g = tanh(.)
 *   c_t = f*c_{t-1} + i*g
 *   h_t = o*tanh(c_t)
 *
 * One difference: between stacked layers dropout masks are drawn in another order than
 * plugins/lstm draws them, so with dropout > 0 the two agree in distribution, not bit for bit. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <plexus/plugin.h>
#include <plexus/tensor.h>

enum readout { RO_SEQUENCE, RO_LAST, RO_MEAN, RO_MAX };
enum { IN_X, IN_H0, IN_C0 };
enum { OUT_OUT, OUT_SEQ, OUT_STATE, OUT_CELL };

struct ref {
	int64_t in, H, L, D;         /* input features, hidden, layers, directions */
	float dropout;
	enum readout readout;
	bool stateful;
	int64_t tbptt;
	struct px_param **w_ih, **w_hh, **b_ih, **b_hh;   /* [L*D], owned by the model */
	/* the last forward (pointers into the step arena; the arrays malloc'ed in create) */
	int64_t B, T;
	const int32_t *len;
	float **xin;    /* [L]: input of layer l, [B][T][F_l] */
	float **y;      /* [L]: output of layer l before dropout, [B][T][D*H] */
	float **drop;   /* [L]: dropout mask on y[l], or NULL */
	float **gates;  /* [L*D]: activated gates i,f,g,o per time, [T][B][4H] */
	float **tc;     /* [L*D]: tanh(c_t), [T][B][H] */
	float **hs, **cs;  /* [L*D]: states by processing step, [T+1][B][H]; [0] the initial */
	int32_t *argmax;   /* readout max: [B][D*H] */
	/* stateful: final states [2][L*D][B][H] (malloc'ed), carry_batch 0 = nothing carried */
	float *carry;
	int64_t carry_batch, carry_cap;
};

static float sigm(float x)
{
	return 1.0f / (1.0f + expf(-x));
}

/* The time of processing step s of direction d. */
static int64_t time_of(const struct ref *r, int64_t d, int64_t s)
{
	return d ? r->T - 1 - s : s;
}

static bool valid(const struct ref *r, int64_t b, int64_t t)
{
	return t < (r->len ? (int64_t)r->len[b] : r->T);
}

static float *floats(struct px_arena *a, int64_t n)
{
	return px_arena_zalloc(a, (size_t)(n > 0 ? n : 1) * sizeof(float));
}

/* ------------------------------------------------------------------ schema and ports */
static const struct px_param_spec ref_schema[] = {
	{"hidden", PX_T_INT, NULL, 1, 1 << 20, NULL, "units of the state h"},
	{"layers", PX_T_INT, "1", 1, 64, NULL, "stacked layers"},
	{"bidirectional", PX_T_BOOL, "false", 0, 0, NULL,
	 "also run backwards; outputs are forward||backward per step"},
	{"dropout", PX_T_FLOAT, "0", 0, 1, NULL,
	 "dropout on the outputs of every layer but the last (training only)"},
	{"readout", PX_T_ENUM, "sequence", 0, 0, "sequence|last|mean|max",
	 "out: every step [B,T,D*H], or the last valid step / mean / max over valid steps"},
	{"stateful", PX_T_BOOL, "false", 0, 0, NULL,
	 "carry the final state into the next batch of a stream (detached)"},
	{"tbptt", PX_T_INT, "0", 0, 1e9, NULL,
	 "truncate backprop through time to chunks of this many steps (0: full BPTT)"},
	{"forget_bias", PX_T_FLOAT, "0", -PX_UNBOUNDED, PX_UNBOUNDED, NULL,
	 "added to the forget gate's input bias at initialisation (1 is a common choice)"},
	{NULL, 0, NULL, 0, 0, NULL, NULL},
};

static const struct px_port_spec ref_inputs[] = {
	{"x", 0, "sequence [B,T,F] (lengths honoured)"},
	{"h0", PX_PORT_OPTIONAL, "initial h [B, layers*directions, H] (default zeros)"},
	{"c0", PX_PORT_OPTIONAL, "initial c [B, layers*directions, H] (default zeros)"},
	{NULL, 0, NULL},
};

static const struct px_port_spec ref_outputs[] = {
	{"out", 0, "the readout: [B,T,D*H] (sequence) or [B,D*H] (last, mean, max)"},
	{"seq", 0, "the top layer's outputs at every step [B,T,D*H]"},
	{"state", 0, "final h [B, layers*directions, H], ordered like PyTorch's h_n"},
	{"cell", 0, "final c [B, layers*directions, H], ordered like PyTorch's c_n"},
	{NULL, 0, NULL},
};

/* ------------------------------------------------------------------ create */
static void ref_destroy(void *self)
{
	struct ref *r = self;
	if (!r)
		return;
	free(r->w_ih);
	free(r->w_hh);
	free(r->b_ih);
	free(r->b_hh);
	free(r->xin);
	free(r->y);
	free(r->drop);
	free(r->gates);
	free(r->tc);
	free(r->hs);
	free(r->cs);
	free(r->carry);
	free(r);
}

/* A [rows, cols] (cols 0: [rows]) parameter, U(-bound, bound) like PyTorch. */
static struct px_param *declare(struct px_build *b, const char *name, int64_t rows, int64_t cols,
				float bound, struct px_error *err)
{
	int64_t shape[2] = {rows, cols};
	struct px_param *p = px_build_param(b, name, cols ? 2 : 1, shape, err);
	if (p)
		px_init_uniform(p->value, b->rng, bound);
	return p;
}

static int check_state_port(const struct ref *r, struct px_build *b, int port, const char *name,
			    struct px_error *err)
{
	if (b->n_in <= port || b->in[port].ndim == 0)
		return 0;
	const struct px_shape *s = &b->in[port];
	if (s->ndim == 3 && s->dim[1] == r->L * r->D && s->dim[2] == r->H)
		return 1;
	char got[64];
	return px_build_error(b, err, PX_ERR_SHAPE,
			      "%s must be [B,%lld,%lld] (batch, layers*directions, hidden), got %s",
			      name, (long long)(r->L * r->D), (long long)r->H,
			      px_shape_str(s, got, sizeof got));
}

static int ref_create(struct px_build *b, void **self, struct px_shape *out, struct px_error *err)
{
	const struct px_config *c = b->cfg;
	const struct px_shape *x = &b->in[IN_X];
	char buf[64];
	int rc;
	*self = NULL;
	if (x->ndim != 3 || x->dim[2] < 1)
		return px_build_error(b, err, PX_ERR_SHAPE, "lstm expects a sequence [B,T,F], got %s",
				      px_shape_str(x, buf, sizeof buf));
	struct ref *r = calloc(1, sizeof *r);
	if (!r)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	r->in = x->dim[2];
	r->H = px_config_int(c, "hidden");
	r->L = px_config_int(c, "layers");
	r->D = px_config_bool(c, "bidirectional") ? 2 : 1;
	r->dropout = (float)px_config_float(c, "dropout");
	const char *ro = px_config_str(c, "readout");
	r->readout = !strcmp(ro, "last") ? RO_LAST : !strcmp(ro, "mean") ? RO_MEAN
		   : !strcmp(ro, "max") ? RO_MAX : RO_SEQUENCE;
	r->stateful = px_config_bool(c, "stateful");
	r->tbptt = px_config_int(c, "tbptt");
	int has_h0 = check_state_port(r, b, IN_H0, "h0", err);
	int has_c0 = has_h0 >= 0 ? check_state_port(r, b, IN_C0, "c0", err) : 0;
	if (has_h0 < 0 || has_c0 < 0) {
		rc = has_h0 < 0 ? has_h0 : has_c0;
		goto fail;
	}
	if (r->stateful && (has_h0 || has_c0)) {
		rc = px_build_error(b, err, PX_ERR_INVALID,
				    "stateful carries its own initial state: connect no %s input",
				    has_h0 ? "h0" : "c0");
		goto fail;
	}
	size_t nl = (size_t)(r->L * r->D), L = (size_t)r->L;
	r->w_ih = calloc(nl, sizeof *r->w_ih);
	r->w_hh = calloc(nl, sizeof *r->w_hh);
	r->b_ih = calloc(nl, sizeof *r->b_ih);
	r->b_hh = calloc(nl, sizeof *r->b_hh);
	r->gates = calloc(nl, sizeof *r->gates);
	r->tc = calloc(nl, sizeof *r->tc);
	r->hs = calloc(nl, sizeof *r->hs);
	r->cs = calloc(nl, sizeof *r->cs);
	r->xin = calloc(L, sizeof *r->xin);
	r->y = calloc(L, sizeof *r->y);
	r->drop = calloc(L, sizeof *r->drop);
	if (!r->w_ih || !r->w_hh || !r->b_ih || !r->b_hh || !r->gates || !r->tc || !r->hs ||
	    !r->cs || !r->xin || !r->y || !r->drop) {
		rc = px_error_set(err, PX_ERR_NOMEM, "out of memory");
		goto fail;
	}
	/* PyTorch's names and order, every tensor U(-1/sqrt(H), 1/sqrt(H)) */
	float bound = 1.0f / sqrtf((float)r->H), fb = (float)px_config_float(c, "forget_bias");
	int64_t G = 4 * r->H;
	for (int64_t l = 0; l < r->L; l++) {
		int64_t in = l == 0 ? r->in : r->D * r->H;
		for (int64_t d = 0; d < r->D; d++) {
			int64_t ld = l * r->D + d;
			const char *sfx = d ? "_reverse" : "";
			char nm[64];
			snprintf(nm, sizeof nm, "weight_ih_l%lld%s", (long long)l, sfx);
			r->w_ih[ld] = declare(b, nm, G, in, bound, err);
			snprintf(nm, sizeof nm, "weight_hh_l%lld%s", (long long)l, sfx);
			r->w_hh[ld] = r->w_ih[ld] ? declare(b, nm, G, r->H, bound, err) : NULL;
			snprintf(nm, sizeof nm, "bias_ih_l%lld%s", (long long)l, sfx);
			r->b_ih[ld] = r->w_hh[ld] ? declare(b, nm, G, 0, bound, err) : NULL;
			snprintf(nm, sizeof nm, "bias_hh_l%lld%s", (long long)l, sfx);
			r->b_hh[ld] = r->b_ih[ld] ? declare(b, nm, G, 0, bound, err) : NULL;
			if (!r->b_hh[ld]) {
				rc = err->code ? err->code : PX_ERR_NOMEM;
				goto fail;
			}
			for (int64_t j = 0; j < r->H; j++)  /* forget_bias on the f slice of b_ih */
				r->b_ih[ld]->value->data[r->H + j] += fb;
		}
	}
	int64_t DH = r->D * r->H;
	out[OUT_OUT] = r->readout == RO_SEQUENCE ? (struct px_shape){3, {-1, x->dim[1], DH}}
						 : (struct px_shape){2, {-1, DH}};
	out[OUT_SEQ] = (struct px_shape){3, {-1, x->dim[1], DH}};
	out[OUT_STATE] = (struct px_shape){3, {-1, r->L * r->D, r->H}};
	out[OUT_CELL] = out[OUT_STATE];
	*self = r;
	return 0;
fail:
	ref_destroy(r);
	return rc;
}

static void ref_reset_state(void *self)
{
	((struct ref *)self)->carry_batch = 0;
}

/* ------------------------------------------------------------------ forward */

/* One step of one direction at time t: G [B][4H] holds x_t W_ih^T on entry. */
static void lstm_step(const struct ref *r, int64_t ld, int64_t t, float *G, const float *hp,
		      const float *cp, float *hn, float *cn, float *tc, float *y, int64_t ldy)
{
	int64_t H = r->H, B = r->B;
	const float *b_ih = r->b_ih[ld]->value->data, *b_hh = r->b_hh[ld]->value->data;
	/* G += h_{t-1} W_hh^T */
	px_gemm(false, true, B, 4 * H, H, 1.0f, hp, H, r->w_hh[ld]->value->data, H, 1.0f, G, 4 * H);
	for (int64_t b = 0; b < B; b++) {
		float *g = G + b * 4 * H;
		bool v = valid(r, b, t);
		for (int64_t j = 0; j < H; j++) {
			float gi = sigm(g[j] + b_ih[j] + b_hh[j]);
			float gf = sigm(g[H + j] + b_ih[H + j] + b_hh[H + j]);
			float gg = tanhf(g[2 * H + j] + b_ih[2 * H + j] + b_hh[2 * H + j]);
			float go = sigm(g[3 * H + j] + b_ih[3 * H + j] + b_hh[3 * H + j]);
			float c = gf * cp[b * H + j] + gi * gg;   /* c' = f*c + i*g */
			float th = tanhf(c);
			g[j] = gi, g[H + j] = gf, g[2 * H + j] = gg, g[3 * H + j] = go;
			tc[b * H + j] = th;
			/* padded steps keep the state and output zero */
			cn[b * H + j] = v ? c : cp[b * H + j];
			hn[b * H + j] = v ? go * th : hp[b * H + j];   /* h' = o*tanh(c') */
			y[b * ldy + j] = v ? go * th : 0.0f;
		}
	}
}

/* The initial state s (0: h, 1: c) of lane ld into S [B][H]: h0/c0, the carry, or zeros. */
static void initial_state(const struct ref *r, const struct px_tensor *in, int s, int64_t ld,
			  float *S)
{
	int64_t B = r->B, H = r->H, nl = r->L * r->D;
	for (int64_t b = 0; b < B; b++) {
		float *dst = S + b * H;
		if (in)
			memcpy(dst, in->data + (b * nl + ld) * H, (size_t)H * sizeof(float));
		else if (r->stateful && r->carry_batch == B)
			memcpy(dst, r->carry + ((s * nl + ld) * B + b) * H, (size_t)H * sizeof(float));
		else
			memset(dst, 0, (size_t)H * sizeof(float));
	}
}

/* Layer l, direction d over all steps; writes its half of Y [B][T][D*H]. */
static int lane_forward(struct ref *r, int64_t l, int64_t d, const struct px_tensor *h0,
			const struct px_tensor *c0, struct px_arena *a)
{
	int64_t B = r->B, T = r->T, H = r->H, G = 4 * H, ld = l * r->D + d;
	int64_t F = l == 0 ? r->in : r->D * H, DH = r->D * H;
	r->gates[ld] = floats(a, T * B * G);
	r->tc[ld] = floats(a, T * B * H);
	r->hs[ld] = floats(a, (T + 1) * B * H);
	r->cs[ld] = floats(a, (T + 1) * B * H);
	if (!r->gates[ld] || !r->tc[ld] || !r->hs[ld] || !r->cs[ld])
		return PX_ERR_NOMEM;
	initial_state(r, h0, 0, ld, r->hs[ld]);
	initial_state(r, c0, 1, ld, r->cs[ld]);
	for (int64_t s = 0; s < T; s++) {
		int64_t t = time_of(r, d, s);
		float *Gt = r->gates[ld] + t * B * G;
		/* G = x_t W_ih^T (x_t: rows of x [B][T][F] at step t) */
		px_gemm(false, true, B, G, F, 1.0f, r->xin[l] + t * F, T * F,
			r->w_ih[ld]->value->data, F, 0.0f, Gt, G);
		lstm_step(r, ld, t, Gt, r->hs[ld] + s * B * H, r->cs[ld] + s * B * H,
			  r->hs[ld] + (s + 1) * B * H, r->cs[ld] + (s + 1) * B * H,
			  r->tc[ld] + t * B * H, r->y[l] + t * DH + d * H, T * DH);
	}
	return 0;
}

/* out [B][D*H] = the readout of seq [B][T][D*H] over each example's valid steps */
static void readout_forward(struct ref *r, const float *seq, float *out)
{
	int64_t B = r->B, T = r->T, H = r->H, DH = r->D * H;
	for (int64_t b = 0; b < B; b++) {
		int64_t n = r->len ? r->len[b] : T;
		const float *sb = seq + b * T * DH;
		float *o = out + b * DH;
		if (n == 0)
			continue;
		if (r->readout == RO_LAST) {  /* forward h at the last valid step, backward h at 0 */
			memcpy(o, sb + (n - 1) * DH, (size_t)H * sizeof(float));
			if (r->D > 1)
				memcpy(o + H, sb + H, (size_t)H * sizeof(float));
		} else if (r->readout == RO_MEAN) {
			for (int64_t t = 0; t < n; t++)
				for (int64_t j = 0; j < DH; j++)
					o[j] += sb[t * DH + j] / (float)n;
		} else if (r->readout == RO_MAX) {  /* the first maximum wins */
			int32_t *am = r->argmax + b * DH;
			for (int64_t j = 0; j < DH; j++) {
				o[j] = sb[j];
				am[j] = 0;
				for (int64_t t = 1; t < n; t++)
					if (sb[t * DH + j] > o[j]) {
						o[j] = sb[t * DH + j];
						am[j] = (int32_t)t;
					}
			}
		}
	}
}

static int check_inputs(const struct ref *r, const struct px_tensor *x,
			const struct px_tensor *const *st, struct px_error *err)
{
	if (x->ndim != 3 || x->shape[2] != r->in)
		return px_error_set(err, PX_ERR_SHAPE, "lstm expects a sequence [B,T,%lld], got %d "
				    "dims with %lld features", (long long)r->in, x->ndim,
				    (long long)(x->ndim > 2 ? x->shape[2] : 0));
	for (int s = 0; s < 2; s++)
		if (st[s] && (st[s]->ndim != 3 || st[s]->shape[0] != x->shape[0] ||
			      st[s]->shape[1] != r->L * r->D || st[s]->shape[2] != r->H))
			return px_error_set(err, PX_ERR_SHAPE, "lstm: %s must be [%lld,%lld,%lld]",
					    s ? "c0" : "h0", (long long)x->shape[0],
					    (long long)(r->L * r->D), (long long)r->H);
	for (int64_t b = 0; x->lengths && b < x->shape[0]; b++)
		if (x->lengths[b] < 0 || x->lengths[b] > x->shape[1])
			return px_error_set(err, PX_ERR_SHAPE, "lstm: example %lld has length %d, "
					    "outside [0, %lld]", (long long)b, x->lengths[b],
					    (long long)x->shape[1]);
	return 0;
}

static int ref_forward(void *self, struct px_fwd *f, struct px_error *err)
{
	struct ref *r = self;
	const struct px_tensor *x = f->in[IN_X];
	const struct px_tensor *st[2] = {f->n_in > IN_H0 ? f->in[IN_H0] : NULL,
					 f->n_in > IN_C0 ? f->in[IN_C0] : NULL};
	struct px_arena *a = f->arena;
	int rc = check_inputs(r, x, st, err);
	if (rc)
		return rc;
	r->B = x->shape[0];
	r->T = x->shape[1];
	r->len = x->lengths;
	int64_t B = r->B, T = r->T, H = r->H, nl = r->L * r->D, DH = r->D * H;
	if (r->stateful && r->carry_batch != B)
		r->carry_batch = 0;  /* a new batch size starts a new stream */
	r->xin[0] = x->data;
	for (int64_t l = 0; l < r->L; l++) {
		r->y[l] = floats(a, B * T * DH);
		r->drop[l] = NULL;
		if (!r->y[l])
			goto nomem;
		for (int64_t d = 0; d < r->D; d++)
			if (lane_forward(r, l, d, st[0], st[1], a))
				goto nomem;
		if (l == r->L - 1)
			break;
		r->xin[l + 1] = r->y[l];
		if (f->train && r->dropout > 0) {  /* inverted dropout: y * m, m in {0, 1/(1-p)} */
			float *m = floats(a, B * T * DH), *xn = floats(a, B * T * DH);
			if (!m || !xn)
				goto nomem;
			float keep = r->dropout < 1 ? 1.0f / (1.0f - r->dropout) : 0.0f;
			for (int64_t i = 0; i < B * T * DH; i++) {
				m[i] = px_rng_uniform(f->rng) < r->dropout ? 0.0f : keep;
				xn[i] = r->y[l][i] * m[i];
			}
			r->drop[l] = m;
			r->xin[l + 1] = xn;
		}
	}
	struct px_tensor *seq = px_tensor_new3(a, B, T, DH);
	struct px_tensor *state = px_tensor_new3(a, B, nl, H);
	struct px_tensor *cell = px_tensor_new3(a, B, nl, H);
	if (!seq || !state || !cell)
		goto nomem;
	memcpy(seq->data, r->y[r->L - 1], (size_t)(B * T * DH) * sizeof(float));
	seq->lengths = x->lengths;
	struct px_tensor *out = seq;
	if (r->readout != RO_SEQUENCE) {
		out = px_tensor_new2(a, B, DH);
		r->argmax = r->readout == RO_MAX ? px_arena_alloc(a, (size_t)(B * DH) * sizeof(int32_t))
						 : NULL;
		if (!out || (r->readout == RO_MAX && !r->argmax))
			goto nomem;
		readout_forward(r, seq->data, out->data);
	} else {
		out = px_tensor_view(a, seq, 3, seq->shape);
		if (!out)
			goto nomem;
		out->lengths = x->lengths;
	}
	for (int64_t ld = 0; ld < nl; ld++)  /* final states: after the last processing step */
		for (int64_t b = 0; b < B; b++) {
			memcpy(state->data + (b * nl + ld) * H, r->hs[ld] + (T * B + b) * H,
			       (size_t)H * sizeof(float));
			memcpy(cell->data + (b * nl + ld) * H, r->cs[ld] + (T * B + b) * H,
			       (size_t)H * sizeof(float));
		}
	if (r->stateful) {  /* keep the final states for the next batch (detached) */
		int64_t need = 2 * nl * B * H;
		if (need > r->carry_cap) {
			float *c = realloc(r->carry, (size_t)need * sizeof(float));
			if (!c)
				goto nomem;
			r->carry = c;
			r->carry_cap = need;
		}
		for (int s = 0; s < 2; s++)
			for (int64_t ld = 0; ld < nl; ld++)
				for (int64_t b = 0; b < B; b++)
					memcpy(r->carry + ((s * nl + ld) * B + b) * H,
					       (s ? cell : state)->data + (b * nl + ld) * H,
					       (size_t)H * sizeof(float));
		r->carry_batch = B;
	}
	f->out[OUT_OUT] = out;
	f->out[OUT_SEQ] = seq;
	f->out[OUT_STATE] = state;
	f->out[OUT_CELL] = cell;
	return 0;
nomem:
	return px_error_set(err, PX_ERR_NOMEM, "lstm: out of memory");
}

/* ------------------------------------------------------------------ backward */

/* dseq [B][T][D*H] += the gradient of the readout output dout [B][D*H] */
static void readout_backward(const struct ref *r, const float *dout, float *dseq)
{
	int64_t B = r->B, T = r->T, H = r->H, DH = r->D * H;
	for (int64_t b = 0; b < B; b++) {
		int64_t n = r->len ? r->len[b] : T;
		const float *g = dout + b * DH;
		float *db = dseq + b * T * DH;
		if (n == 0)
			continue;
		for (int64_t j = 0; j < DH; j++) {
			if (r->readout == RO_LAST)
				db[(j < H ? n - 1 : 0) * DH + j] += g[j];
			else if (r->readout == RO_MEAN)
				for (int64_t t = 0; t < n; t++)
					db[t * DH + j] += g[j] / (float)n;
			else if (r->readout == RO_MAX)
				db[(int64_t)r->argmax[b * DH + j] * DH + j] += g[j];
		}
	}
}

/* No gradient flows into time t from the step after it across a tbptt chunk boundary. */
static bool tbptt_cut(const struct ref *r, int64_t d, int64_t t)
{
	return r->tbptt > 0 && (d ? t : t + 1) % r->tbptt == 0;
}

/* Backward of layer l, direction d. dY [B][T][D*H]: dLoss/d(layer output); adds dLoss/dx into
 * dX [B][T][F] (when non-NULL), into the parameter grads and into d_h0/d_c0. `sq` [T] (or
 * NULL) gets ||dLoss/dh_t||^2 added. */
static int lane_backward(struct ref *r, int64_t l, int64_t d, const float *dY, float *dX,
			 const struct px_bwd *bw, double *sq, struct px_arena *a)
{
	int64_t B = r->B, T = r->T, H = r->H, G = 4 * H, ld = l * r->D + d, nl = r->L * r->D;
	int64_t F = l == 0 ? r->in : r->D * H, DH = r->D * H;
	float *dh = floats(a, B * H), *dc = floats(a, B * H), *dG = floats(a, B * G);
	if (!dh || !dc || !dG)
		return PX_ERR_NOMEM;
	const struct px_tensor *gs = bw->d_out[OUT_STATE], *gc = bw->d_out[OUT_CELL];
	for (int64_t b = 0; b < B; b++) {  /* the final states' gradients start the recurrence */
		if (gs)
			memcpy(dh + b * H, gs->data + (b * nl + ld) * H, (size_t)H * sizeof(float));
		if (gc)
			memcpy(dc + b * H, gc->data + (b * nl + ld) * H, (size_t)H * sizeof(float));
	}
	const float *W_ih = r->w_ih[ld]->value->data, *W_hh = r->w_hh[ld]->value->data;
	float *dW_ih = r->w_ih[ld]->grad->data, *dW_hh = r->w_hh[ld]->grad->data;
	float *db_ih = r->b_ih[ld]->grad->data, *db_hh = r->b_hh[ld]->grad->data;
	for (int64_t s = T - 1; s >= 0; s--) {
		int64_t t = time_of(r, d, s);
		if (s < T - 1 && tbptt_cut(r, d, t)) {
			memset(dh, 0, (size_t)(B * H) * sizeof(float));
			memset(dc, 0, (size_t)(B * H) * sizeof(float));
		}
		const float *g = r->gates[ld] + t * B * G, *tc = r->tc[ld] + t * B * H;
		const float *cp = r->cs[ld] + s * B * H, *hp = r->hs[ld] + s * B * H;
		memset(dG, 0, (size_t)(B * G) * sizeof(float));
		for (int64_t b = 0; b < B; b++) {
			bool v = valid(r, b, t);
			for (int64_t j = 0; sq && j < H; j++) {
				float dt = dh[b * H + j] + (v ? dY[(b * T + t) * DH + d * H + j] : 0.0f);
				sq[t] += (double)dt * dt;
			}
			if (!v)
				continue;  /* padding: the carries pass through, no gate gradient */
			for (int64_t j = 0; j < H; j++) {
				const float *gb = g + b * G;
				float i = gb[j], f = gb[H + j], gg = gb[2 * H + j], o = gb[3 * H + j];
				float th = tc[b * H + j];
				float dht = dh[b * H + j] + dY[(b * T + t) * DH + d * H + j];
				/* dc' = dc + dh*o*(1 - tanh^2 c'); di = dc'*g; df = dc'*c; dg = dc'*i; do = dh*tanh c' */
				float dcn = dc[b * H + j] + dht * o * (1.0f - th * th);
				float *dgb = dG + b * G;
				dgb[j] = dcn * gg * i * (1.0f - i);
				dgb[H + j] = dcn * cp[b * H + j] * f * (1.0f - f);
				dgb[2 * H + j] = dcn * i * (1.0f - gg * gg);
				dgb[3 * H + j] = dht * th * o * (1.0f - o);
				dc[b * H + j] = dcn * f;   /* dc_{t-1} = dc'*f */
				dh[b * H + j] = 0.0f;      /* replaced by the W_hh path below */
			}
		}
		const float *xt = r->xin[l] + t * F;
		/* dW_ih += dG^T x_t, dW_hh += dG^T h_{t-1}, db += column sums of dG */
		px_gemm(true, false, G, F, B, 1.0f, dG, G, xt, T * F, 1.0f, dW_ih, F);
		px_gemm(true, false, G, H, B, 1.0f, dG, G, hp, H, 1.0f, dW_hh, H);
		for (int64_t b = 0; b < B; b++)
			for (int64_t k = 0; k < G; k++) {
				db_ih[k] += dG[b * G + k];
				db_hh[k] += dG[b * G + k];
			}
		/* dx_t += dG W_ih; dh_{t-1} += dG W_hh */
		if (dX)
			px_gemm(false, false, B, F, G, 1.0f, dG, G, W_ih, F, 1.0f, dX + t * F, T * F);
		px_gemm(false, false, B, H, G, 1.0f, dG, G, W_hh, H, 1.0f, dh, H);
	}
	for (int s = 0; s < 2; s++) {  /* what is left is dLoss/d(initial state) */
		struct px_tensor *g0 = bw->n_in > IN_H0 + s ? bw->d_in[IN_H0 + s] : NULL;
		for (int64_t b = 0; g0 && b < B; b++)
			for (int64_t j = 0; j < H; j++)
				g0->data[(b * nl + ld) * H + j] += (s ? dc : dh)[b * H + j];
	}
	return 0;
}

static int ref_backward(void *self, struct px_bwd *bw, struct px_error *err)
{
	struct ref *r = self;
	struct px_arena *a = bw->arena;
	int64_t B = r->B, T = r->T, DH = r->D * r->H;
	float *dY = floats(a, B * T * DH);
	double *sq = bw->report ? px_arena_zalloc(a, (size_t)(T ? T : 1) * sizeof(double)) : NULL;
	if (!dY || (bw->report && !sq))
		goto nomem;
	const struct px_tensor *d_seq = bw->d_out[OUT_SEQ], *d_out = bw->d_out[OUT_OUT];
	if (d_seq)
		memcpy(dY, d_seq->data, (size_t)(B * T * DH) * sizeof(float));
	if (d_out && r->readout == RO_SEQUENCE)
		for (int64_t i = 0; i < B * T * DH; i++)
			dY[i] += d_out->data[i];
	else if (d_out)
		readout_backward(r, d_out->data, dY);
	struct px_tensor *d_x = bw->d_in[IN_X];
	for (int64_t l = r->L - 1; l >= 0; l--) {
		int64_t F = l == 0 ? r->in : DH;
		float *dX = l > 0 ? floats(a, B * T * F) : d_x ? d_x->data : NULL;
		if (l > 0 && !dX)
			goto nomem;
		for (int64_t d = 0; d < r->D; d++)
			if (lane_backward(r, l, d, dY, dX, bw, l == r->L - 1 ? sq : NULL, a))
				goto nomem;
		if (l > 0 && r->drop[l - 1])  /* through the dropout on layer l-1's output */
			for (int64_t i = 0; i < B * T * F; i++)
				dX[i] *= r->drop[l - 1][i];
		dY = dX;
	}
	for (int64_t t = 0; sq && t < T; t++)
		bw->report(bw->report_ctx, "grad_norm", t, sqrt(sq[t]));
	return 0;
nomem:
	return px_error_set(err, PX_ERR_NOMEM, "lstm: out of memory");
}

static const struct px_layer_ops ref_layer = {
	.struct_size = sizeof(struct px_layer_ops),
	.kind = "lstm",
	.doc = "LSTM over a sequence, plain reference implementation (one step at a time)",
	.schema = ref_schema,
	.inputs = ref_inputs,
	.outputs = ref_outputs,
	.flags = PX_LAYER_SEQUENCE | PX_LAYER_STATEFUL,
	.create = ref_create,
	.forward = ref_forward,
	.backward = ref_backward,
	.reset_state = ref_reset_state,
	.destroy = ref_destroy,
};

/* ------------------------------------------------------------------ the cell */
struct ref_cell {
	int64_t in, H;
	struct px_param *w_ih, *w_hh, *b_ih, *b_hh;
};

static void cell_destroy(void *self)
{
	free(self);
}

static int cell_create(struct px_build *b, const char *prefix, int64_t input, int64_t hidden,
		       void **self, struct px_error *err)
{
	*self = NULL;
	if (input < 1 || hidden < 1)
		return px_build_error(b, err, PX_ERR_INVALID, "lstm cell needs input >= 1 and "
				      "hidden >= 1, got %lld and %lld", (long long)input,
				      (long long)hidden);
	struct ref_cell *c = calloc(1, sizeof *c);
	if (!c)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	c->in = input;
	c->H = hidden;
	float bound = 1.0f / sqrtf((float)hidden);
	const char *names[4] = {"weight_ih", "weight_hh", "bias_ih", "bias_hh"};
	struct px_param **dst[4] = {&c->w_ih, &c->w_hh, &c->b_ih, &c->b_hh};
	int64_t cols[4] = {input, hidden, 0, 0};
	for (int i = 0; i < 4; i++) {
		char nm[256];
		snprintf(nm, sizeof nm, "%s%s", prefix ? prefix : "", names[i]);
		*dst[i] = declare(b, nm, 4 * hidden, cols[i], bound, err);
		if (!*dst[i]) {
			cell_destroy(c);
			return err->code ? err->code : PX_ERR_NOMEM;
		}
	}
	*self = c;
	return 0;
}

/* The cache holds per batch row (stride 9H): the activated gates i,f,g,o [4H], tanh(c') [H],
 * and [4H] that step_backward uses as scratch for the gate gradients (the cell ABI gives it
 * no arena, and it must not allocate). */
static size_t cell_cache_floats(void *self, int64_t batch)
{
	struct ref_cell *c = self;
	return (size_t)(batch * 9 * c->H);
}

/* s = [h; c], each [B][H]: gates = x W_ih^T + b_ih + h W_hh^T + b_hh; c' = f*c + i*g;
 * h' = o*tanh(c') */
static void cell_step(void *self, int64_t B, const float *x, const float *s_prev, float *s_next,
		      float *cache)
{
	struct ref_cell *c = self;
	int64_t H = c->H, G = 4 * H, S = 9 * H;
	px_gemm(false, true, B, G, c->in, 1.0f, x, c->in, c->w_ih->value->data, c->in, 0.0f, cache,
		S);
	px_gemm(false, true, B, G, H, 1.0f, s_prev, H, c->w_hh->value->data, H, 1.0f, cache, S);
	const float *b_ih = c->b_ih->value->data, *b_hh = c->b_hh->value->data;
	for (int64_t b = 0; b < B; b++) {
		float *g = cache + b * S, *tc = g + G;
		for (int64_t j = 0; j < H; j++) {
			float gi = sigm(g[j] + b_ih[j] + b_hh[j]);
			float gf = sigm(g[H + j] + b_ih[H + j] + b_hh[H + j]);
			float gg = tanhf(g[2 * H + j] + b_ih[2 * H + j] + b_hh[2 * H + j]);
			float go = sigm(g[3 * H + j] + b_ih[3 * H + j] + b_hh[3 * H + j]);
			float cn = gf * s_prev[(B + b) * H + j] + gi * gg;
			g[j] = gi, g[H + j] = gf, g[2 * H + j] = gg, g[3 * H + j] = go;
			tc[j] = tanhf(cn);
			s_next[(B + b) * H + j] = cn;
			s_next[b * H + j] = go * tc[j];
		}
	}
}

/* Adds into d_x (may be NULL), d_s_prev and the parameter grads (formulas as in lane_backward). */
static void cell_step_backward(void *self, int64_t B, const float *x, const float *s_prev,
			       const float *cache, const float *d_s_next, float *d_x,
			       float *d_s_prev)
{
	struct ref_cell *c = self;
	int64_t H = c->H, G = 4 * H, S = 9 * H;
	float *dG = (float *)cache + 5 * H;   /* the scratch part of each row (see above) */
	for (int64_t b = 0; b < B; b++) {
		const float *g = cache + b * S, *tc = g + G;
		float *dg = dG + b * S;
		for (int64_t j = 0; j < H; j++) {
			float i = g[j], f = g[H + j], gg = g[2 * H + j], o = g[3 * H + j], th = tc[j];
			float dh = d_s_next[b * H + j];
			float dcn = d_s_next[(B + b) * H + j] + dh * o * (1.0f - th * th);
			dg[j] = dcn * gg * i * (1.0f - i);
			dg[H + j] = dcn * s_prev[(B + b) * H + j] * f * (1.0f - f);
			dg[2 * H + j] = dcn * i * (1.0f - gg * gg);
			dg[3 * H + j] = dh * th * o * (1.0f - o);
			d_s_prev[(B + b) * H + j] += dcn * f;
		}
	}
	px_gemm(true, false, G, c->in, B, 1.0f, dG, S, x, c->in, 1.0f, c->w_ih->grad->data, c->in);
	px_gemm(true, false, G, H, B, 1.0f, dG, S, s_prev, H, 1.0f, c->w_hh->grad->data, H);
	for (int64_t b = 0; b < B; b++)
		for (int64_t k = 0; k < G; k++) {
			c->b_ih->grad->data[k] += dG[b * S + k];
			c->b_hh->grad->data[k] += dG[b * S + k];
		}
	if (d_x)
		px_gemm(false, false, B, c->in, G, 1.0f, dG, S, c->w_ih->value->data, c->in, 1.0f,
			d_x, c->in);
	px_gemm(false, false, B, H, G, 1.0f, dG, S, c->w_hh->value->data, H, 1.0f, d_s_prev, H);
}

static const struct px_cell_ops ref_cell = {
	.struct_size = sizeof(struct px_cell_ops),
	.kind = "lstm",
	.n_state = 2,
	.create = cell_create,
	.cache_floats = cell_cache_floats,
	.step = cell_step,
	.step_backward = cell_step_backward,
	.destroy = cell_destroy,
};

static const struct px_layer_ops *const layers[] = {&ref_layer, NULL};
static const struct px_cell_ops *const cells[] = {&ref_cell, NULL};

static const struct px_plugin plugin = {
	.struct_size = sizeof(struct px_plugin),
	.abi_major = PX_ABI_MAJOR,
	.abi_minor = PX_ABI_MINOR,
	.name = "lstm_ref",
	.version = "1.0.0",
	.doc = "reference LSTM layer and cell (plain, one step at a time) for cross-checking",
	.layers = layers,
	.cells = cells,
};

PX_PLUGIN_ENTRY(plugin)
