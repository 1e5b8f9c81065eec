/* plexus plugin: rnn — the Elman recurrent layer and cell (PyTorch's nn.RNN / RNNCell).
 *
 *   h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)     (nonlinearity: tanh | relu)
 * The sequence driver is plugins/common/recurrent.c; this file holds the math of one step. */
#include <string.h>

#include <plexus/plugin.h>
#include <plexus/tensor.h>

#include "../common/recurrent.h"

static bool rnn_no(const struct px_rec_cfg *c)
{
	(void)c;
	return false;
}

static int64_t rnn_all_rows(const struct px_rec_cfg *c)
{
	return c->hidden;
}

/* One unit over P lanes: h = act(W_hh h_prev + W_ih x + b), left in g too. */
PX_REC_SIMD static void rnn_lanes(int64_t P, bool relu, const float *restrict a,
				  float *restrict g, float b, const float *restrict m,
				  const float *restrict hp, float *restrict hn, float *restrict y)
{
	float k = relu ? 1.0f : 0.0f;  /* a blend, not a branch, so the loop vectorizes */
	for (int64_t p = 0; p < P; p++) {
		float s = a[p] + g[p] + b, th = px_rec_tanh(s), rl = s > 0.0f ? s : 0.0f;
		float h = k * rl + (1.0f - k) * th;
		bool v = m[p] != 0.0f;
		g[p] = h;
		hn[p] = v ? h : hp[p];
		y[p] = v ? h : 0.0f;
	}
}

/* dh = carry + W_hh path + dy; dg = dh * act'(h) (tanh: 1-h², relu: h > 0); the carry
 * (less the W_hh path) is 0, or dh at padding. dh: in: the W_hh path, out: dLoss/dh_t. */
PX_REC_SIMD static void rnn_lanes_backward(int64_t P, bool relu, float *restrict dh,
					   const float *restrict g, const float *restrict m,
					   const float *restrict dy, float *restrict ch,
					   float *restrict dg, float *restrict blk)
{
	float k = relu ? 1.0f : 0.0f;
	for (int64_t p = 0; p < P; p++) {
		bool v = m[p] != 0.0f;
		float d = ch[p] + dh[p] + (v ? dy[p] : 0.0f), h = g[p];
		float da = k * (h > 0.0f ? 1.0f : 0.0f) + (1.0f - k) * (1.0f - h * h);
		dg[p] = blk[p] = v ? d * da : 0.0f;
		ch[p] = v ? 0.0f : d;
		dh[p] = d;
	}
}

static int rnn_phases(const struct px_rec_cfg *c)
{
	(void)c;
	return 1;
}

/* h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh) for units a .. a+n */
static void rnn_step(const struct px_rec_run *r, int64_t t, int ph, int64_t a, int64_t n,
		     float *acc)
{
	int64_t H = r->H, P = r->P, ld = r->ld, lds = r->lds;
	const float *hp = r->h + px_rec_prev(r, t) * P;
	float *hn = r->h + px_rec_next(r, t) * P;
	const float *w[PX_REC_TILE] = {NULL};
	(void)ph;
	for (int64_t u = 0; u < n; u++)
		w[u] = r->w_hh + (a + u) * H;
	px_rec_mm(r, n, w, 1, H, hp, lds, acc, false);
	for (int64_t u = 0, j = a; u < n; u++, j++)
		rnn_lanes(P, r->cfg->relu, acc + u * P, r->g + j * ld + t * P, r->bias[j],
			  r->mask + t * P, hp + j * lds, hn + j * lds, r->y + j * ld + t * P);
}

/* acc[u] = sum_n W_hh[n][j0+u] dg_t[n]: the W_hh path into the state before step t */
static void rnn_grad_state(const struct px_rec_run *r, int64_t t, int64_t j0, int64_t n,
			   float *acc)
{
	const float *w[PX_REC_TILE] = {NULL};
	int64_t ws = px_rec_hh_cols(r, j0, n, 0, w);
	px_rec_mm(r, n, w, ws, r->H, r->blk[t & 1], r->P, acc, false);
}

static void rnn_step_backward(const struct px_rec_run *r, int64_t t, int ph, bool first,
			      bool cut, int64_t a, int64_t n, float *acc, double *sq)
{
	int64_t P = r->P, ld = r->ld;
	(void)ph;
	if (first || cut)
		memset(acc, 0, (size_t)(n * P) * sizeof(float));
	else
		rnn_grad_state(r, px_rec_later(r, t), a, n, acc);
	if (cut)
		memset(r->ch + a * P, 0, (size_t)(n * P) * sizeof(float));
	for (int64_t u = 0, j = a; u < n; u++, j++)
		rnn_lanes_backward(P, r->cfg->relu, acc + u * P, r->g + j * ld + t * P,
				   r->mask + t * P, r->dy + j * ld + t * P, r->ch + j * P,
				   r->dg + j * ld + t * P, r->blk[t & 1] + j * P);
	for (int64_t i = 0; sq && i < n * P; i++)
		*sq += (double)acc[i] * acc[i];
}

static void rnn_configure(const struct px_config *opts, struct px_rec_cfg *c)
{
	c->relu = !strcmp(px_config_str(opts, "nonlinearity"), "relu");
}

static const struct px_rec_kind rnn_kind = {
	.name = "rnn",
	.gates = 1,
	.n_state = 1,
	.uses_aux = rnn_no,
	.uses_dgh = rnn_no,
	.folded_hh_bias = rnn_all_rows,
	.phases = rnn_phases,
	.step = rnn_step,
	.step_backward = rnn_step_backward,
	.grad_state = rnn_grad_state,
	.grad_hh = px_rec_grad_hh_plain,
	.configure = rnn_configure,
};

/* ------------------------------------------------------------------ layer and cell tables */
static const struct px_param_spec rnn_schema[] = {
	PX_REC_COMMON_SCHEMA,
	{"nonlinearity", PX_T_ENUM, "tanh", 0, 0, "tanh|relu", "the activation of h"},
	{NULL, 0, NULL, 0, 0, NULL, NULL},
};

static const struct px_port_spec rnn_inputs[] = {
	{"x", 0, "sequence [B,T,F] (lengths honoured)"},
	{"h0", PX_PORT_OPTIONAL, "initial h [B, layers*directions, H] (default zeros)"},
	{NULL, 0, NULL},
};

static const struct px_port_spec rnn_outputs[] = {
	{"out", 0, "the readout: [B,T,D*H] (sequence) or [B,D*H] (last, mean, max)"},
	{"seq", 0, "the top layer's outputs at every step [B,T,D*H]"},
	{"state", 0, "final h [B, layers*directions, H], ordered like PyTorch's h_n"},
	{NULL, 0, NULL},
};

static int rnn_create(struct px_build *b, void **self, struct px_shape *out, struct px_error *err)
{
	return px_rec_create(&rnn_kind, b, self, out, err);
}

static const struct px_layer_ops rnn_layer = {
	.struct_size = sizeof(struct px_layer_ops),
	.kind = "rnn",
	.doc = "Elman RNN over a sequence: stacked, bidirectional, ragged, PyTorch-compatible",
	.schema = rnn_schema,
	.inputs = rnn_inputs,
	.outputs = rnn_outputs,
	.flags = PX_LAYER_SEQUENCE | PX_LAYER_STATEFUL,
	.create = rnn_create,
	.forward = px_rec_forward,
	.backward = px_rec_backward,
	.reset_state = px_rec_reset_state,
	.destroy = px_rec_destroy,
};

static int rnn_cell_create(struct px_build *b, const char *prefix, int64_t input, int64_t hidden,
			   void **self, struct px_error *err)
{
	return px_rec_cell_create(&rnn_kind, b, prefix, input, hidden, self, err);
}

static const struct px_cell_ops rnn_cell = {
	.struct_size = sizeof(struct px_cell_ops),
	.kind = "rnn",
	.n_state = 1,
	.create = rnn_cell_create,
	.cache_floats = px_rec_cell_cache_floats,
	.step = px_rec_cell_step,
	.step_backward = px_rec_cell_step_backward,
	.destroy = px_rec_cell_destroy,
};

static const struct px_layer_ops *const layers[] = {&rnn_layer, NULL};
static const struct px_cell_ops *const cells[] = {&rnn_cell, NULL};

static const struct px_plugin plugin = {
	.struct_size = sizeof(struct px_plugin),
	.abi_major = PX_ABI_MAJOR,
	.abi_minor = PX_ABI_MINOR,
	.name = "rnn",
	.version = "1.0.0",
	.doc = "Elman RNN layer and cell",
	.layers = layers,
	.cells = cells,
};

PX_PLUGIN_ENTRY(plugin)
