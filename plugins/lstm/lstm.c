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

static bool lstm_uses_gh(const struct px_rec_cfg *c)
{
	(void)c;
	return false;
}

static bool lstm_uses_aux(const struct px_rec_cfg *c)
{
	(void)c;
	return true;  /* tanh(c_t) */
}

static int64_t lstm_all_rows(const struct px_rec_cfg *c)
{
	return 4 * c->hidden;
}

/* c_t = f*c_{t-1} + i*g, h_t = o*tanh(c_t); gates left activated in g, tanh(c_t) in aux */
static void lstm_step(const struct px_rec_step *s)
{
	int64_t B = s->batch, H = s->cfg->hidden, G = 4 * H;
	px_gemm(false, true, B, G, H, 1.0f, s->h_prev, H, s->w_hh, H, 1.0f, s->g, G);
	for (int64_t b = 0; b < B; b++) {
		const float *hp = s->h_prev + b * H, *cp = s->c_prev + b * H;
		float *g = s->g + b * G, *h = s->h + b * H, *c = s->c + b * H, *tc = s->aux + b * H;
		float *out = s->out ? s->out + b * s->ldo : NULL;
		if (!px_rec_valid(s, b)) {  /* padding: carry the state, output 0 */
			memcpy(h, hp, (size_t)H * sizeof(float));
			memcpy(c, cp, (size_t)H * sizeof(float));
			memset(tc, 0, (size_t)H * sizeof(float));
			if (out)
				memset(out, 0, (size_t)H * sizeof(float));
			continue;
		}
		for (int64_t j = 0; j < H; j++) {
			float gi = px_rec_sigmoid(g[j]), gf = px_rec_sigmoid(g[H + j]);
			float gg = px_rec_tanh(g[2 * H + j]), go = px_rec_sigmoid(g[3 * H + j]);
			float cn = gf * cp[j] + gi * gg, t = px_rec_tanh(cn);
			g[j] = gi;
			g[H + j] = gf;
			g[2 * H + j] = gg;
			g[3 * H + j] = go;
			c[j] = cn;
			tc[j] = t;
			h[j] = go * t;
			if (out)
				out[j] = go * t;
		}
	}
}

/* dc' = dc + dh*o*(1-tanh²c); di = dc'*g; df = dc'*c_{t-1}; dg = dc'*i; do = dh*tanh(c);
 * dc_{t-1} = dc'*f; dh_{t-1} = dgates W_hh */
static void lstm_step_backward(const struct px_rec_step *s)
{
	int64_t B = s->batch, H = s->cfg->hidden, G = 4 * H;
	for (int64_t b = 0; b < B; b++) {
		const float *g = s->g + b * G, *cp = s->c_prev + b * H, *tc = s->aux + b * H;
		const float *dh = s->dh + b * H, *dc = s->dc + b * H;
		const float *dy = s->dy ? s->dy + b * s->ldy : NULL;
		float *dg = s->dg + b * G;
		float *dhp = s->dh_prev ? s->dh_prev + b * H : NULL;
		float *dcp = s->dc_prev ? s->dc_prev + b * H : NULL;
		bool valid = px_rec_valid(s, b);
		double sq = 0;
		if (!valid) {  /* padding: the state's gradient passes through */
			memset(dg, 0, (size_t)G * sizeof(float));
			for (int64_t j = 0; j < H; j++) {
				sq += (double)dh[j] * dh[j];
				if (dhp) {
					dhp[j] = dh[j];
					dcp[j] = dc[j];
				}
			}
		} else {
			for (int64_t j = 0; j < H; j++) {
				float gi = g[j], gf = g[H + j], gg = g[2 * H + j], go = g[3 * H + j];
				float dht = dh[j] + (dy ? dy[j] : 0.0f);
				float dct = dc[j] + dht * go * (1.0f - tc[j] * tc[j]);
				sq += (double)dht * dht;
				dg[j] = dct * gg * gi * (1.0f - gi);
				dg[H + j] = dct * cp[j] * gf * (1.0f - gf);
				dg[2 * H + j] = dct * gi * (1.0f - gg * gg);
				dg[3 * H + j] = dht * tc[j] * go * (1.0f - go);
				if (dhp) {
					dhp[j] = 0.0f;
					dcp[j] = dct * gf;
				}
			}
		}
		if (s->sq)
			s->sq[s->t] += sq;
	}
	if (s->dh_prev)
		px_gemm(false, false, B, H, G, 1.0f, s->dg, G, s->w_hh, H, 1.0f, s->dh_prev, H);
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
	.uses_gh = lstm_uses_gh,
	.uses_aux = lstm_uses_aux,
	.folded_hh_bias = lstm_all_rows,
	.hh_aux_rows = lstm_all_rows,
	.step = lstm_step,
	.step_backward = lstm_step_backward,
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
