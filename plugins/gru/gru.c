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

static bool gru_uses_aux(const struct px_rec_cfg *c)
{
	(void)c;
	return true;  /* reset_after: W_hn h + b_hn; else r*h, the input of W_hn */
}

static bool gru_uses_dgh(const struct px_rec_cfg *c)
{
	return c->reset_after;  /* the gradient of W_hn h + b_hn differs from that of n */
}

/* reset_after: b_hn sits inside r*(...), so only the r and z rows of b_hh fold */
static int64_t gru_folded_hh_bias(const struct px_rec_cfg *c)
{
	return (c->reset_after ? 2 : 3) * c->hidden;
}

/* ---- reset_after: true (PyTorch) ---- */

/* One unit over P lanes: r, z = sigmoid(.), q = W_hn h + b_hn, n = tanh(W_in x + b_in + r*q),
 * h = (1-z)*n + z*h_prev. a: the unit's 3 rows of W_hh h_prev. */
PX_REC_SIMD static void gru_lanes(int64_t P, const float *restrict a, float *restrict gr,
				  float *restrict gz, float *restrict gn, float br, float bz,
				  float bn, float bhn, const float *restrict m,
				  const float *restrict hp, float *restrict hn,
				  float *restrict q, float *restrict y)
{
	for (int64_t p = 0; p < P; p++) {
		float r = px_rec_sigmoid(a[p] + gr[p] + br);
		float z = px_rec_sigmoid(a[P + p] + gz[p] + bz);
		float qn = a[2 * P + p] + bhn;
		float n = px_rec_tanh(gn[p] + bn + r * qn);
		float h = (1.0f - z) * n + z * hp[p];
		bool v = m[p] != 0.0f;
		gr[p] = r;
		gz[p] = z;
		gn[p] = n;
		q[p] = qn;
		hn[p] = v ? h : hp[p];
		y[p] = v ? h : 0.0f;
	}
}

/* dn' = dh(1-z)(1-n²); dz' = dh(h_prev-n)z(1-z); dq = dn'*r; dr' = dn'*q*r(1-r);
 * carry (less the W_hh path) = dh*z. dh: in: the W_hh path, out: dLoss/dh_t. The hidden-side
 * gradients dr', dz', dq also go to the step block (br, bz, bq). */
PX_REC_SIMD static void gru_lanes_backward(int64_t P, float *restrict dh,
					   const float *restrict gr, const float *restrict gz,
					   const float *restrict gn, const float *restrict q,
					   const float *restrict hp, const float *restrict m,
					   const float *restrict dy, float *restrict ch,
					   float *restrict dr, float *restrict dz, float *restrict dn,
					   float *restrict dq, float *restrict br, float *restrict bz,
					   float *restrict bq)
{
	for (int64_t p = 0; p < P; p++) {
		bool v = m[p] != 0.0f;
		float r = gr[p], z = gz[p], n = gn[p];
		float d = ch[p] + dh[p] + (v ? dy[p] : 0.0f);
		float dnp = d * (1.0f - z) * (1.0f - n * n);
		dn[p] = v ? dnp : 0.0f;
		dz[p] = bz[p] = v ? d * (hp[p] - n) * z * (1.0f - z) : 0.0f;
		dq[p] = bq[p] = v ? dnp * r : 0.0f;
		dr[p] = br[p] = v ? dnp * q[p] * r * (1.0f - r) : 0.0f;
		ch[p] = v ? d * z : d;
		dh[p] = d;
	}
}

/* ---- reset_after: false (Cho et al.): n = tanh(W_in x + b_in + W_hn (r*h) + b_hn) ---- */

/* r, z = sigmoid(.), u = r*h_prev (0 at padding): the input of W_hn */
PX_REC_SIMD static void gru0_lanes_rz(int64_t P, const float *restrict a, float *restrict gr,
				      float *restrict gz, float br, float bz,
				      const float *restrict m, const float *restrict hp,
				      float *restrict u)
{
	for (int64_t p = 0; p < P; p++) {
		float r = px_rec_sigmoid(a[p] + gr[p] + br);
		gr[p] = r;
		gz[p] = px_rec_sigmoid(a[P + p] + gz[p] + bz);
		u[p] = m[p] != 0.0f ? r * hp[p] : 0.0f;
	}
}

/* n = tanh(W_in x + W_hn u + b_in + b_hn), h = (1-z)*n + z*h_prev */
PX_REC_SIMD static void gru0_lanes_n(int64_t P, const float *restrict a, const float *restrict gz,
				     float *restrict gn, float bn, const float *restrict m,
				     const float *restrict hp, float *restrict hn, float *restrict y)
{
	for (int64_t p = 0; p < P; p++) {
		float z = gz[p], n = px_rec_tanh(a[p] + gn[p] + bn);
		float h = (1.0f - z) * n + z * hp[p];
		bool v = m[p] != 0.0f;
		gn[p] = n;
		hn[p] = v ? h : hp[p];
		y[p] = v ? h : 0.0f;
	}
}

/* dn' = dh(1-z)(1-n²), dz' = dh(h_prev-n)z(1-z), carry = dh*z */
PX_REC_SIMD static void gru0_lanes_backward_zn(int64_t P, float *restrict dh,
					       const float *restrict gz, const float *restrict gn,
					       const float *restrict hp, const float *restrict m,
					       const float *restrict dy, float *restrict ch,
					       float *restrict dz, float *restrict dn,
					       float *restrict bz, float *restrict bn)
{
	for (int64_t p = 0; p < P; p++) {
		bool v = m[p] != 0.0f;
		float z = gz[p], n = gn[p];
		float d = ch[p] + dh[p] + (v ? dy[p] : 0.0f);
		dn[p] = bn[p] = v ? d * (1.0f - z) * (1.0f - n * n) : 0.0f;
		dz[p] = bz[p] = v ? d * (hp[p] - n) * z * (1.0f - z) : 0.0f;
		ch[p] = v ? d * z : d;
		dh[p] = d;
	}
}

/* du = W_hn^T dn' (in a): dr' = du*h_prev*r(1-r), carry += du*r */
PX_REC_SIMD static void gru0_lanes_backward_r(int64_t P, const float *restrict a,
					      const float *restrict gr, const float *restrict hp,
					      const float *restrict m, float *restrict ch,
					      float *restrict dr, float *restrict br)
{
	for (int64_t p = 0; p < P; p++) {
		bool v = m[p] != 0.0f;
		float r = gr[p];
		dr[p] = br[p] = v ? a[p] * hp[p] * r * (1.0f - r) : 0.0f;
		ch[p] += v ? a[p] * r : 0.0f;
	}
}

/* rows of W_hh for gates k0 .. k0+nk of units j0 .. j0+n, unit-major */
static void gate_rows(const struct px_rec_run *r, int64_t j0, int64_t n, int64_t k0, int64_t nk,
		      const float **w)
{
	for (int64_t u = 0; u < n; u++)
		for (int64_t k = 0; k < nk; k++)
			w[u * nk + k] = r->w_hh + ((k0 + k) * r->H + j0 + u) * r->H;
}

/* reset_after false needs r*h of every unit before any n: two phases */
static int gru_phases(const struct px_rec_cfg *c)
{
	return c->reset_after ? 1 : 2;
}

static void gru_step(const struct px_rec_run *r, int64_t t, int ph, int64_t a, int64_t n,
		     float *acc)
{
	int64_t H = r->H, P = r->P, ld = r->ld, lds = r->lds;
	float *g = r->g + t * P, *aux = r->aux + t * P, *y = r->y + t * P;
	const float *hp = r->h + px_rec_prev(r, t) * P, *m = r->mask + t * P, *bias = r->bias;
	float *hn = r->h + px_rec_next(r, t) * P;
	const float *w[3 * PX_REC_TILE] = {NULL};
	if (r->cfg->reset_after) {
		gate_rows(r, a, n, 0, 3, w);
		px_rec_mm(r, 3 * n, w, 1, H, hp, lds, acc, false);
		for (int64_t u = 0, j = a; u < n; u++, j++)
			gru_lanes(P, acc + 3 * u * P, g + j * ld, g + (H + j) * ld, g + (2 * H + j) * ld,
				  bias[j], bias[H + j], bias[2 * H + j], r->b_hh[2 * H + j], m,
				  hp + j * lds, hn + j * lds, aux + j * ld, y + j * ld);
	} else if (ph == 0) {  /* r, z and u = r*h */
		gate_rows(r, a, n, 0, 2, w);
		px_rec_mm(r, 2 * n, w, 1, H, hp, lds, acc, false);
		for (int64_t u = 0, j = a; u < n; u++, j++)
			gru0_lanes_rz(P, acc + 2 * u * P, g + j * ld, g + (H + j) * ld, bias[j],
				      bias[H + j], m, hp + j * lds, aux + j * ld);
	} else {  /* n from every unit's u */
		gate_rows(r, a, n, 2, 1, w);
		px_rec_mm(r, n, w, 1, H, aux, ld, acc, false);
		for (int64_t u = 0, j = a; u < n; u++, j++)
			gru0_lanes_n(P, acc + u * P, g + (H + j) * ld, g + (2 * H + j) * ld,
				     bias[2 * H + j], m, hp + j * lds, hn + j * lds, y + j * ld);
	}
}

/* acc[u] = the W_hh path into the state before step t: sum over the rows of W_hh that act
 * on h (all three with reset_after, where the n rows carry dq; r and z otherwise) */
static void gru_grad_state(const struct px_rec_run *r, int64_t t, int64_t j0, int64_t n,
			   float *acc)
{
	const float *w[PX_REC_TILE] = {NULL};
	int64_t ws = px_rec_hh_cols(r, j0, n, 0, w);
	px_rec_mm(r, n, w, ws, (r->cfg->reset_after ? 3 : 2) * r->H, r->blk[t & 1], r->P, acc,
		  false);
}

static void gru_step_backward(const struct px_rec_run *r, int64_t t, int ph, bool first,
			      bool cut, int64_t a, int64_t n, float *acc, double *sq)
{
	int64_t H = r->H, P = r->P, ld = r->ld;
	float *dg = r->dg + t * P, *blk = r->blk[t & 1];
	const float *g = r->g + t * P, *aux = r->aux + t * P, *m = r->mask + t * P;
	const float *hp = r->h + px_rec_prev(r, t) * P, *dy = r->dy + t * P;
	if (ph == 1) {  /* reset_after false: du = W_hn^T dn' (every unit's dn' known now) */
		const float *w[PX_REC_TILE] = {NULL};
		int64_t ws = px_rec_hh_cols(r, a, n, 2 * H, w);
		px_rec_mm(r, n, w, ws, H, blk + 2 * H * P, P, acc, false);
		for (int64_t u = 0, j = a; u < n; u++, j++)
			gru0_lanes_backward_r(P, acc + u * P, g + j * ld, hp + j * r->lds, m,
					      r->ch + j * P, dg + j * ld, blk + j * P);
		return;
	}
	if (first || cut)
		memset(acc, 0, (size_t)(n * P) * sizeof(float));
	else
		gru_grad_state(r, px_rec_later(r, t), a, n, acc);
	if (cut)
		memset(r->ch + a * P, 0, (size_t)(n * P) * sizeof(float));
	for (int64_t u = 0, j = a; u < n; u++, j++) {
		if (r->cfg->reset_after)
			gru_lanes_backward(P, acc + u * P, g + j * ld, g + (H + j) * ld,
					   g + (2 * H + j) * ld, aux + j * ld, hp + j * r->lds, m,
					   dy + j * ld, r->ch + j * P, dg + j * ld, dg + (H + j) * ld,
					   dg + (2 * H + j) * ld, r->dgh + j * ld + t * P, blk + j * P,
					   blk + (H + j) * P, blk + (2 * H + j) * P);
		else
			gru0_lanes_backward_zn(P, acc + u * P, g + (H + j) * ld, g + (2 * H + j) * ld,
					       hp + j * r->lds, m, dy + j * ld, r->ch + j * P,
					       dg + (H + j) * ld, dg + (2 * H + j) * ld,
					       blk + (H + j) * P, blk + (2 * H + j) * P);
	}
	for (int64_t i = 0; sq && i < n * P; i++)
		*sq += (double)acc[i] * acc[i];
}

/* dW_hh, db_hh: the r, z rows from dg against h_prev; the n rows from dq against h_prev
 * (reset_after) or from dn' against r*h */
static void gru_grad_hh(const struct px_rec_run *r, float *dw_hh, float *db_hh)
{
	int64_t H = r->H;
	const float *hprev = r->h + (r->rev ? r->P : 0);
	px_rec_grad_rows(r, 2 * H, H, r->dg, hprev, r->lds, dw_hh, H, db_hh);
	if (r->cfg->reset_after)
		px_rec_grad_rows(r, H, H, r->dgh, hprev, r->lds, dw_hh + 2 * H * H, H, db_hh + 2 * H);
	else
		px_rec_grad_rows(r, H, H, r->dg + 2 * H * r->ld, r->aux, r->ld, dw_hh + 2 * H * H, H,
				 db_hh + 2 * H);
}

static void gru_configure(const struct px_config *opts, struct px_rec_cfg *c)
{
	c->reset_after = px_config_bool(opts, "reset_after");
}

static const struct px_rec_kind gru_kind = {
	.name = "gru",
	.gates = 3,
	.n_state = 1,
	.uses_aux = gru_uses_aux,
	.uses_dgh = gru_uses_dgh,
	.folded_hh_bias = gru_folded_hh_bias,
	.phases = gru_phases,
	.step = gru_step,
	.step_backward = gru_step_backward,
	.grad_state = gru_grad_state,
	.grad_hh = gru_grad_hh,
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
