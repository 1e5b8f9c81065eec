/* plexus plugin: lstm — long short-term memory layer and cell (PyTorch's nn.LSTM / LSTMCell).
 *
 *   gates = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh, split in i, f, g, o (PyTorch's order)
 *   i, f, o = sigmoid(.), g = tanh(.)
 *   c_t = f*c_{t-1} + i*g
 *   h_t = o*tanh(c_t)
 * The sequence driver (stacking, directions, ragged lengths, readouts, stateful streams) is
 * plugins/common/recurrent.c; this file holds the math of one step. */
#include <string.h>

#include <plexus/plugin.h>
#include <plexus/tensor.h>

#include "../common/recurrent.h"

static bool lstm_uses_aux(const struct px_rec_cfg *c)
{
	(void)c;
	return true;  /* tanh(c_t) */
}

static bool lstm_no_dgh(const struct px_rec_cfg *c)
{
	(void)c;
	return false;
}

static int64_t lstm_all_rows(const struct px_rec_cfg *c)
{
	return 4 * c->hidden;
}

/* One unit over P lanes: c = f*c_prev + i*g, h = o*tanh(c). a: the unit's 4 rows of
 * W_hh h_prev; gi..go: W_ih x in, activated gates out; padding lanes keep the state. */
PX_REC_SIMD static void lstm_lanes(int64_t P, const float *restrict a, float *restrict gi,
				   float *restrict gf, float *restrict gg, float *restrict go,
				   float bi, float bf, float bg, float bo, const float *restrict m,
				   const float *restrict hp, const float *restrict cp,
				   float *restrict hn, float *restrict cn, float *restrict tc,
				   float *restrict y)
{
	for (int64_t p = 0; p < P; p++) {
		float i = px_rec_sigmoid(a[p] + gi[p] + bi);
		float f = px_rec_sigmoid(a[P + p] + gf[p] + bf);
		float g = px_rec_tanh(a[2 * P + p] + gg[p] + bg);
		float o = px_rec_sigmoid(a[3 * P + p] + go[p] + bo);
		float c = f * cp[p] + i * g, t = px_rec_tanh(c), h = o * t;
		bool v = m[p] != 0.0f;
		gi[p] = i;
		gf[p] = f;
		gg[p] = g;
		go[p] = o;
		tc[p] = t;
		cn[p] = v ? c : cp[p];
		hn[p] = v ? h : hp[p];
		y[p] = v ? h : 0.0f;
	}
}

/* dh = carry + W_hh path + dy; dc' = dc + dh*o*(1-tanh²c); di = dc'*g; df = dc'*c_prev;
 * dg = dc'*i; do = dh*tanh(c); carries: dh_prev (less W_hh path) = 0, dc_prev = dc'*f.
 * dh: in: the W_hh path, out: dLoss/dh_t. Padding lanes pass the carries through. The gate
 * gradients go to the sequence matrix (di..dgo) and to the step block (bi..bo). */
PX_REC_SIMD static void lstm_lanes_backward(int64_t P, float *restrict dh,
					    const float *restrict gi, const float *restrict gf,
					    const float *restrict gg, const float *restrict go,
					    const float *restrict cp, const float *restrict tc,
					    const float *restrict m, const float *restrict dy,
					    float *restrict ch, float *restrict cc, float *restrict di,
					    float *restrict df, float *restrict dgg, float *restrict dgo,
					    float *restrict bi, float *restrict bf, float *restrict bg,
					    float *restrict bo)
{
	for (int64_t p = 0; p < P; p++) {
		bool v = m[p] != 0.0f;
		float i = gi[p], f = gf[p], g = gg[p], o = go[p], t = tc[p];
		float d = ch[p] + dh[p] + (v ? dy[p] : 0.0f);
		float dc = cc[p] + d * o * (1.0f - t * t);
		di[p] = bi[p] = v ? dc * g * i * (1.0f - i) : 0.0f;
		df[p] = bf[p] = v ? dc * cp[p] * f * (1.0f - f) : 0.0f;
		dgg[p] = bg[p] = v ? dc * i * (1.0f - g * g) : 0.0f;
		dgo[p] = bo[p] = v ? d * t * o * (1.0f - o) : 0.0f;
		ch[p] = v ? 0.0f : d;
		cc[p] = v ? dc * f : cc[p];
		dh[p] = d;
	}
}

static int lstm_phases(const struct px_rec_cfg *c)
{
	(void)c;
	return 1;
}

/* gates += W_hh h_{t-1} for units a .. a+n, then their gate math */
static void lstm_step(const struct px_rec_run *r, int64_t t, int ph, int64_t a, int64_t n,
		      float *acc)
{
	int64_t H = r->H, P = r->P, ld = r->ld, lds = r->lds;
	float *g = r->g + t * P;
	const float *hp = r->h + px_rec_prev(r, t) * P, *cp = r->c + px_rec_prev(r, t) * P;
	float *hn = r->h + px_rec_next(r, t) * P, *cn = r->c + px_rec_next(r, t) * P;
	const float *w[4 * PX_REC_TILE] = {NULL};
	(void)ph;
	for (int64_t u = 0; u < n; u++)
		for (int64_t k = 0; k < 4; k++)
			w[u * 4 + k] = r->w_hh + (k * H + a + u) * H;
	px_rec_mm(r, 4 * n, w, 1, H, hp, lds, acc, false);
	for (int64_t u = 0, j = a; u < n; u++, j++)
		lstm_lanes(P, acc + 4 * u * P, g + j * ld, g + (H + j) * ld, g + (2 * H + j) * ld,
			   g + (3 * H + j) * ld, r->bias[j], r->bias[H + j], r->bias[2 * H + j],
			   r->bias[3 * H + j], r->mask + t * P, hp + j * lds, cp + j * lds,
			   hn + j * lds, cn + j * lds, r->aux + j * ld + t * P, r->y + j * ld + t * P);
}

/* acc[u] = sum_n W_hh[n][j0+u] dgates_t[n]: the W_hh path into the state before step t */
static void lstm_grad_state(const struct px_rec_run *r, int64_t t, int64_t j0, int64_t n,
			    float *acc)
{
	const float *w[PX_REC_TILE] = {NULL};
	int64_t ws = px_rec_hh_cols(r, j0, n, 0, w);
	px_rec_mm(r, n, w, ws, 4 * r->H, r->blk[t & 1], r->P, acc, false);
}

static void lstm_step_backward(const struct px_rec_run *r, int64_t t, int ph, bool first,
			       bool cut, int64_t a, int64_t n, float *acc, double *sq)
{
	int64_t H = r->H, P = r->P, ld = r->ld;
	float *dg = r->dg + t * P, *blk = r->blk[t & 1];
	const float *g = r->g + t * P, *cp = r->c + px_rec_prev(r, t) * P;
	(void)ph;
	if (first || cut)
		memset(acc, 0, (size_t)(n * P) * sizeof(float));
	else
		lstm_grad_state(r, px_rec_later(r, t), a, n, acc);
	if (cut) {
		memset(r->ch + a * P, 0, (size_t)(n * P) * sizeof(float));
		memset(r->cc + a * P, 0, (size_t)(n * P) * sizeof(float));
	}
	for (int64_t u = 0, j = a; u < n; u++, j++)
		lstm_lanes_backward(P, acc + u * P, g + j * ld, g + (H + j) * ld, g + (2 * H + j) * ld,
				    g + (3 * H + j) * ld, cp + j * r->lds, r->aux + j * ld + t * P,
				    r->mask + t * P, r->dy + j * ld + t * P, r->ch + j * P,
				    r->cc + j * P, dg + j * ld, dg + (H + j) * ld, dg + (2 * H + j) * ld,
				    dg + (3 * H + j) * ld, blk + j * P, blk + (H + j) * P,
				    blk + (2 * H + j) * P, blk + (3 * H + j) * P);
	for (int64_t i = 0; sq && i < n * P; i++)
		*sq += (double)acc[i] * acc[i];
}

/* forget_bias: added to the f slice of b_ih at init */
static void lstm_init_bias(const struct px_config *opts, int64_t hidden, float *b_ih)
{
	float fb = (float)px_config_float(opts, "forget_bias");
	for (int64_t j = 0; j < hidden; j++)
		b_ih[hidden + j] += fb;
}

static const struct px_rec_kind lstm_kind = {
	.name = "lstm",
	.gates = 4,
	.n_state = 2,
	.uses_aux = lstm_uses_aux,
	.uses_dgh = lstm_no_dgh,
	.folded_hh_bias = lstm_all_rows,
	.phases = lstm_phases,
	.step = lstm_step,
	.step_backward = lstm_step_backward,
	.grad_state = lstm_grad_state,
	.grad_hh = px_rec_grad_hh_plain,
	.init_bias = lstm_init_bias,
};

/* ------------------------------------------------------------------ layer and cell tables */
static const struct px_param_spec lstm_schema[] = {
	PX_REC_COMMON_SCHEMA,
	{"forget_bias", PX_T_FLOAT, "0", -PX_UNBOUNDED, PX_UNBOUNDED, NULL,
	 "added to the forget gate's input bias at initialisation (1 is a common choice)"},
	{NULL, 0, NULL, 0, 0, NULL, NULL},
};

static const struct px_port_spec lstm_inputs[] = {
	{"x", 0, "sequence [B,T,F] (lengths honoured)"},
	{"h0", PX_PORT_OPTIONAL, "initial h [B, layers*directions, H] (default zeros)"},
	{"c0", PX_PORT_OPTIONAL, "initial c [B, layers*directions, H] (default zeros)"},
	{NULL, 0, NULL},
};

static const struct px_port_spec lstm_outputs[] = {
	{"out", 0, "the readout: [B,T,D*H] (sequence) or [B,D*H] (last, mean, max)"},
	{"seq", 0, "the top layer's outputs at every step [B,T,D*H]"},
	{"state", 0, "final h [B, layers*directions, H], ordered like PyTorch's h_n"},
	{"cell", 0, "final c [B, layers*directions, H], ordered like PyTorch's c_n"},
	{NULL, 0, NULL},
};

static int lstm_create(struct px_build *b, void **self, struct px_shape *out, struct px_error *err)
{
	return px_rec_create(&lstm_kind, b, self, out, err);
}

static const struct px_layer_ops lstm_layer = {
	.struct_size = sizeof(struct px_layer_ops),
	.kind = "lstm",
	.doc = "LSTM over a sequence: stacked, bidirectional, ragged, PyTorch-compatible",
	.schema = lstm_schema,
	.inputs = lstm_inputs,
	.outputs = lstm_outputs,
	.flags = PX_LAYER_SEQUENCE | PX_LAYER_STATEFUL,
	.create = lstm_create,
	.forward = px_rec_forward,
	.backward = px_rec_backward,
	.reset_state = px_rec_reset_state,
	.destroy = px_rec_destroy,
};

static int lstm_cell_create(struct px_build *b, const char *prefix, int64_t input, int64_t hidden,
			    void **self, struct px_error *err)
{
	return px_rec_cell_create(&lstm_kind, b, prefix, input, hidden, self, err);
}

static const struct px_cell_ops lstm_cell = {
	.struct_size = sizeof(struct px_cell_ops),
	.kind = "lstm",
	.n_state = 2,
	.create = lstm_cell_create,
	.cache_floats = px_rec_cell_cache_floats,
	.step = px_rec_cell_step,
	.step_backward = px_rec_cell_step_backward,
	.destroy = px_rec_cell_destroy,
};

static const struct px_layer_ops *const layers[] = {&lstm_layer, NULL};
static const struct px_cell_ops *const cells[] = {&lstm_cell, NULL};

static const struct px_plugin plugin = {
	.struct_size = sizeof(struct px_plugin),
	.abi_major = PX_ABI_MAJOR,
	.abi_minor = PX_ABI_MINOR,
	.name = "lstm",
	.version = "1.0.0",
	.doc = "LSTM layer and cell",
	.layers = layers,
	.cells = cells,
};

PX_PLUGIN_ENTRY(plugin)
