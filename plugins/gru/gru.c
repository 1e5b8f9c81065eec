/* plexus plugin: gru — gated recurrent unit layer and cell (PyTorch's nn.GRU / GRUCell).
 *
 *   r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)      gates in PyTorch's order r, z, n
 *   z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
 *   n = tanh(W_in x + b_in + r*(W_hn h + b_hn))     reset_after: true (PyTorch, cuDNN)
 *   n = tanh(W_in x + b_in + W_hn (r*h) + b_hn)     reset_after: false (Cho et al. 2014)
 *   h_t = (1-z)*n + z*h_{t-1}
 * The sequence driver is plugins/common/recurrent.c; this file holds the math of one step. */
#include <string.h>

#include <plexus/plugin.h>
#include <plexus/tensor.h>

#include "../common/recurrent.h"

static bool gru_uses_gh(const struct px_rec_cfg *c)
{
	return c->reset_after;  /* W_hh h + b_hh, whose n slice r multiplies */
}

static bool gru_uses_aux(const struct px_rec_cfg *c)
{
	return !c->reset_after;  /* r*h, the input of W_hn */
}

/* reset_after: b_hn sits inside r*(...), so only the r and z rows of b_hh fold */
static int64_t gru_folded_hh_bias(const struct px_rec_cfg *c)
{
	return (c->reset_after ? 2 : 3) * c->hidden;
}

/* reset_after false: the n rows of W_hh act on r*h */
static int64_t gru_hh_aux_rows(const struct px_rec_cfg *c)
{
	return (c->reset_after ? 3 : 2) * c->hidden;
}

/* padding: carry the state, output 0 */
static void gru_carry(const struct px_rec_step *s, int64_t b)
{
	int64_t H = s->cfg->hidden;
	memcpy(s->h + b * H, s->h_prev + b * H, (size_t)H * sizeof(float));
	if (s->out)
		memset(s->out + b * s->ldo, 0, (size_t)H * sizeof(float));
}

/* h_t = (1-z)*n + z*h_{t-1}; gates r, z, n left activated in g */
static void gru_step(const struct px_rec_step *s)
{
	int64_t B = s->batch, H = s->cfg->hidden, G = 3 * H;
	if (s->cfg->reset_after) {
		/* gh = W_hh h + b_hh; n = tanh(gx_n + r*gh_n) */
		px_gemm(false, true, B, G, H, 1.0f, s->h_prev, H, s->w_hh, H, 0.0f, s->gh, G);
		for (int64_t b = 0; b < B; b++) {
			if (!px_rec_valid(s, b)) {
				gru_carry(s, b);
				continue;
			}
			const float *hp = s->h_prev + b * H, *bn = s->b_hh + 2 * H;
			float *g = s->g + b * G, *gh = s->gh + b * G, *h = s->h + b * H;
			float *out = s->out ? s->out + b * s->ldo : NULL;
			for (int64_t j = 0; j < H; j++) {
				float r = px_rec_sigmoid(g[j] + gh[j]);
				float z = px_rec_sigmoid(g[H + j] + gh[H + j]);
				float hn = gh[2 * H + j] + bn[j];
				float n = px_rec_tanh(g[2 * H + j] + r * hn);
				float hv = (1.0f - z) * n + z * hp[j];
				g[j] = r;
				g[H + j] = z;
				g[2 * H + j] = n;
				gh[2 * H + j] = hn;
				h[j] = hv;
				if (out)
					out[j] = hv;
			}
		}
		return;
	}
	/* reset_after false: r, z first, then n = tanh(gx_n + (r*h) W_hn^T) (b_hn folded in gx) */
	px_gemm(false, true, B, 2 * H, H, 1.0f, s->h_prev, H, s->w_hh, H, 1.0f, s->g, G);
	for (int64_t b = 0; b < B; b++) {
		const float *hp = s->h_prev + b * H;
		float *g = s->g + b * G, *u = s->aux + b * H;
		bool valid = px_rec_valid(s, b);
		for (int64_t j = 0; j < H; j++) {
			g[j] = px_rec_sigmoid(g[j]);
			g[H + j] = px_rec_sigmoid(g[H + j]);
			u[j] = valid ? g[j] * hp[j] : 0.0f;
		}
	}
	px_gemm(false, true, B, H, H, 1.0f, s->aux, H, s->w_hh + 2 * H * H, H, 1.0f, s->g + 2 * H, G);
	for (int64_t b = 0; b < B; b++) {
		if (!px_rec_valid(s, b)) {
			gru_carry(s, b);
			continue;
		}
		const float *hp = s->h_prev + b * H;
		float *g = s->g + b * G, *h = s->h + b * H;
		float *out = s->out ? s->out + b * s->ldo : NULL;
		for (int64_t j = 0; j < H; j++) {
			float z = g[H + j], n = px_rec_tanh(g[2 * H + j]);
			float hv = (1.0f - z) * n + z * hp[j];
			g[2 * H + j] = n;
			h[j] = hv;
			if (out)
				out[j] = hv;
		}
	}
}

/* dn = dh(1-z); dz = dh(h_{t-1}-n); dn' = dn(1-n²); dz' = dz z(1-z);
 * reset_after: dgh_n = dn'*r, dr = dn'*gh_n; else du = dn' W_hn, dr = du*h_{t-1};
 * dr' = dr r(1-r); dh_{t-1} = dh*z [+ du*r] + dgates_h W_hh */
static void gru_step_backward(const struct px_rec_step *s)
{
	int64_t B = s->batch, H = s->cfg->hidden, G = 3 * H;
	bool after = s->cfg->reset_after;
	for (int64_t b = 0; b < B; b++) {
		const float *g = s->g + b * G, *hp = s->h_prev + b * H, *dh = s->dh + b * H;
		const float *dy = s->dy ? s->dy + b * s->ldy : NULL;
		float *dg = s->dg + b * G, *dgh = after ? s->dgh + b * G : NULL;
		float *dhp = s->dh_prev ? s->dh_prev + b * H : NULL;
		double sq = 0;
		if (!px_rec_valid(s, b)) {  /* padding: the state's gradient passes through */
			memset(dg, 0, (size_t)G * sizeof(float));
			if (dgh)
				memset(dgh, 0, (size_t)G * sizeof(float));
			for (int64_t j = 0; j < H; j++) {
				sq += (double)dh[j] * dh[j];
				if (dhp)
					dhp[j] = dh[j];
			}
		} else {
			for (int64_t j = 0; j < H; j++) {
				float r = g[j], z = g[H + j], n = g[2 * H + j];
				float dht = dh[j] + (dy ? dy[j] : 0.0f);
				float dn = dht * (1.0f - z) * (1.0f - n * n);
				sq += (double)dht * dht;
				dg[H + j] = dht * (hp[j] - n) * z * (1.0f - z);
				dg[2 * H + j] = dn;
				if (after) {
					float hn = s->gh[b * G + 2 * H + j];
					dg[j] = dn * hn * r * (1.0f - r);
					dgh[j] = dg[j];
					dgh[H + j] = dg[H + j];
					dgh[2 * H + j] = dn * r;
				}
				if (dhp)
					dhp[j] = dht * z;
			}
		}
		if (s->sq)
			s->sq[s->t] += sq;
	}
	if (after) {
		if (s->dh_prev)
			px_gemm(false, false, B, H, G, 1.0f, s->dgh, G, s->w_hh, H, 1.0f, s->dh_prev, H);
		return;
	}
	/* reset_after false: du = dn' W_hn gives dr; then dh_{t-1} += du*r + d[r,z]' W_h[r,z] */
	float *du = s->tmp;
	px_gemm(false, false, B, H, H, 1.0f, s->dg + 2 * H, G, s->w_hh + 2 * H * H, H, 0.0f, du, H);
	for (int64_t b = 0; b < B; b++) {
		if (!px_rec_valid(s, b))
			continue;
		const float *g = s->g + b * G, *hp = s->h_prev + b * H, *dub = du + b * H;
		float *dg = s->dg + b * G;
		float *dhp = s->dh_prev ? s->dh_prev + b * H : NULL;
		for (int64_t j = 0; j < H; j++) {
			float r = g[j];
			dg[j] = dub[j] * hp[j] * r * (1.0f - r);
			if (dhp)
				dhp[j] += dub[j] * r;
		}
	}
	if (s->dh_prev)
		px_gemm(false, false, B, H, 2 * H, 1.0f, s->dg, G, s->w_hh, H, 1.0f, s->dh_prev, H);
}

static void gru_configure(const struct px_config *opts, struct px_rec_cfg *c)
{
	c->reset_after = px_config_bool(opts, "reset_after");
}

static const struct px_rec_kind gru_kind = {
	.name = "gru",
	.gates = 3,
	.n_state = 1,
	.uses_gh = gru_uses_gh,
	.uses_aux = gru_uses_aux,
	.folded_hh_bias = gru_folded_hh_bias,
	.hh_aux_rows = gru_hh_aux_rows,
	.step = gru_step,
	.step_backward = gru_step_backward,
	.configure = gru_configure,
};

/* ------------------------------------------------------------------ layer and cell tables */
static const struct px_param_spec gru_schema[] = {
	PX_REC_COMMON_SCHEMA,
	{"reset_after", PX_T_BOOL, "true", 0, 0, NULL,
	 "true: n = tanh(W_in x + b_in + r*(W_hn h + b_hn)) (PyTorch); "
	 "false: n = tanh(W_in x + b_in + W_hn (r*h) + b_hn) (Cho et al.)"},
	{NULL, 0, NULL, 0, 0, NULL, NULL},
};

static const struct px_port_spec gru_inputs[] = {
	{"x", 0, "sequence [B,T,F] (lengths honoured)"},
	{"h0", PX_PORT_OPTIONAL, "initial h [B, layers*directions, H] (default zeros)"},
	{NULL, 0, NULL},
};

static const struct px_port_spec gru_outputs[] = {
	{"out", 0, "the readout: [B,T,D*H] (sequence) or [B,D*H] (last, mean, max)"},
	{"seq", 0, "the top layer's outputs at every step [B,T,D*H]"},
	{"state", 0, "final h [B, layers*directions, H], ordered like PyTorch's h_n"},
	{NULL, 0, NULL},
};

static int gru_create(struct px_build *b, void **self, struct px_shape *out, struct px_error *err)
{
	return px_rec_create(&gru_kind, b, self, out, err);
}

static const struct px_layer_ops gru_layer = {
	.struct_size = sizeof(struct px_layer_ops),
	.kind = "gru",
	.doc = "GRU over a sequence: stacked, bidirectional, ragged, PyTorch-compatible",
	.schema = gru_schema,
	.inputs = gru_inputs,
	.outputs = gru_outputs,
	.flags = PX_LAYER_SEQUENCE | PX_LAYER_STATEFUL,
	.create = gru_create,
	.forward = px_rec_forward,
	.backward = px_rec_backward,
	.reset_state = px_rec_reset_state,
	.destroy = px_rec_destroy,
};

static int gru_cell_create(struct px_build *b, const char *prefix, int64_t input, int64_t hidden,
			   void **self, struct px_error *err)
{
	return px_rec_cell_create(&gru_kind, b, prefix, input, hidden, self, err);
}

static const struct px_cell_ops gru_cell = {
	.struct_size = sizeof(struct px_cell_ops),
	.kind = "gru",
	.n_state = 1,
	.create = gru_cell_create,
	.cache_floats = px_rec_cell_cache_floats,
	.step = px_rec_cell_step,
	.step_backward = px_rec_cell_step_backward,
	.destroy = px_rec_cell_destroy,
};

static const struct px_layer_ops *const layers[] = {&gru_layer, NULL};
static const struct px_cell_ops *const cells[] = {&gru_cell, NULL};

static const struct px_plugin plugin = {
	.struct_size = sizeof(struct px_plugin),
	.abi_major = PX_ABI_MAJOR,
	.abi_minor = PX_ABI_MINOR,
	.name = "gru",
	.version = "1.0.0",
	.doc = "GRU layer and cell",
	.layers = layers,
	.cells = cells,
};

PX_PLUGIN_ENTRY(plugin)
