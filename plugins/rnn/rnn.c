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

/* h_t = act(g + W_hh h_{t-1}); the activation is left in g */
static void rnn_step(const struct px_rec_step *s)
{
	int64_t B = s->batch, H = s->cfg->hidden;
	bool relu = s->cfg->relu;
	px_gemm(false, true, B, H, H, 1.0f, s->h_prev, H, s->w_hh, H, 1.0f, s->g, H);
	for (int64_t b = 0; b < B; b++) {
		const float *hp = s->h_prev + b * H;
		float *g = s->g + b * H, *h = s->h + b * H;
		float *out = s->out ? s->out + b * s->ldo : NULL;
		if (!px_rec_valid(s, b)) {  /* padding: carry the state, output 0 */
			memcpy(h, hp, (size_t)H * sizeof(float));
			if (out)
				memset(out, 0, (size_t)H * sizeof(float));
			continue;
		}
		for (int64_t j = 0; j < H; j++) {
			float v = relu ? (g[j] > 0.0f ? g[j] : 0.0f) : px_rec_tanh(g[j]);
			g[j] = v;
			h[j] = v;
			if (out)
				out[j] = v;
		}
	}
}

/* dg = dh * act'(g) (tanh: 1-h², relu: h > 0); dh_{t-1} = dg W_hh */
static void rnn_step_backward(const struct px_rec_step *s)
{
	int64_t B = s->batch, H = s->cfg->hidden;
	bool relu = s->cfg->relu;
	for (int64_t b = 0; b < B; b++) {
		const float *g = s->g + b * H, *dh = s->dh + b * H;
		const float *dy = s->dy ? s->dy + b * s->ldy : NULL;
		float *dg = s->dg + b * H;
		float *dhp = s->dh_prev ? s->dh_prev + b * H : NULL;
		bool valid = px_rec_valid(s, b);
		double sq = 0;
		for (int64_t j = 0; j < H; j++) {
			float dht = dh[j] + (valid && dy ? dy[j] : 0.0f);
			sq += (double)dht * dht;
			if (!valid) {  /* padding: the state's gradient passes through */
				dg[j] = 0.0f;
				if (dhp)
					dhp[j] = dht;
				continue;
			}
			dg[j] = dht * (relu ? (g[j] > 0.0f ? 1.0f : 0.0f) : 1.0f - g[j] * g[j]);
			if (dhp)
				dhp[j] = 0.0f;
		}
		if (s->sq)
			s->sq[s->t] += sq;
	}
	if (s->dh_prev)
		px_gemm(false, false, B, H, H, 1.0f, s->dg, H, s->w_hh, H, 1.0f, s->dh_prev, H);
}

static void rnn_configure(const struct px_config *opts, struct px_rec_cfg *c)
{
	c->relu = !strcmp(px_config_str(opts, "nonlinearity"), "relu");
}

static const struct px_rec_kind rnn_kind = {
	.name = "rnn",
	.gates = 1,
	.n_state = 1,
	.uses_gh = rnn_no,
	.uses_aux = rnn_no,
	.folded_hh_bias = rnn_all_rows,
	.hh_aux_rows = rnn_all_rows,
	.step = rnn_step,
	.step_backward = rnn_step_backward,
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
