/* The rnn, lstm and gru plugins: golden values from PyTorch, finite-difference gradients,
 * ragged batches, readouts, stateful streams with truncated BPTT, cells, errors. */
#include <check.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <plexus/harness.h>
#include <plexus/plugin.h>

#include "fixture.h"
#include "plugin_util.h"

static const struct px_layer_ops *ops_of(const char *kind)
{
	static const struct px_layer_ops *cache[3];
	static const char *kinds[3] = {"rnn", "lstm", "gru"};
	for (int i = 0; i < 3; i++)
		if (!strcmp(kind, kinds[i])) {
			if (!cache[i])
				cache[i] = tp_layer(kind, kind);
			return cache[i];
		}
	abort();
}

static const struct px_cell_ops *cell_of(const char *kind)
{
	tp_plugin(kind);  /* registers it with tp_find_cell */
	struct px_error err;
	const struct px_cell_ops *c = tp_host.find_cell(&tp_host, kind, &err);
	ck_assert_msg(c, "%s", err.msg);
	return c;
}

static int n_state_of(const char *kind)
{
	return strcmp(kind, "lstm") ? 1 : 2;
}

/* A layer with input x [B,T,F] (+ h0, c0 [B,LD,H] when with_init) */
static struct px_layer_inst *make_layer(const char *kind, const char *opts, int64_t B, int64_t T,
					int64_t F, int64_t LD, int64_t H, bool with_init,
					uint64_t seed)
{
	struct px_shape in[3] = {{3, {B, T, F}}};
	int n_in = 1;
	if (with_init) {
		n_in = 1 + n_state_of(kind);
		for (int i = 1; i < n_in; i++)
			in[i] = (struct px_shape){3, {B, LD, H}};
	}
	bool ragged[3] = {true, false, false};
	struct px_layer_inst *li = NULL;
	struct px_error err = {0};
	int rc = px_layer_inst_new(ops_of(kind), opts, n_in, in, ragged, seed, &tp_host, &li, &err);
	ck_assert_msg(rc == 0, "%s {%s}: %s", kind, opts, err.msg);
	return li;
}

static struct px_tensor *tensor3(struct px_layer_inst *li, int64_t a, int64_t b, int64_t c)
{
	int64_t s[3] = {a, b, c};
	struct px_tensor *t = px_layer_inst_tensor(li, 3, s);
	ck_assert(t);
	return t;
}

static void fill_random(struct px_tensor *t, uint64_t seed)
{
	struct px_rng r;
	px_rng_seed(&r, seed);
	px_rng_fill_uniform(&r, t->data, px_tensor_numel(t), -1.0f, 1.0f);
}

static void forward_ok(struct px_layer_inst *li, const struct px_tensor *const *in, bool train)
{
	struct px_error err = {0};
	int rc = px_layer_inst_forward(li, in, train, &err);
	ck_assert_msg(rc == 0, "forward: %s", err.msg);
}

static void backward_ok(struct px_layer_inst *li, const struct px_tensor *const *d_out,
			struct px_tensor *const *d_in)
{
	struct px_error err = {0};
	int rc = px_layer_inst_backward(li, d_out, d_in, &err);
	ck_assert_msg(rc == 0, "backward: %s", err.msg);
}

static struct px_param *param_named(struct px_layer_inst *li, const char *name)
{
	for (int i = 0; i < px_layer_inst_n_params(li); i++)
		if (!strcmp(px_layer_inst_param(li, i)->name, name))
			return px_layer_inst_param(li, i);
	return NULL;
}

static double max_abs_diff_t(const struct px_tensor *a, const struct px_tensor *b)
{
	ck_assert_int_eq(px_tensor_numel(a), px_tensor_numel(b));
	return fixture_max_abs_diff(a->data, b->data, px_tensor_numel(a));
}

/* ------------------------------------------------------------------ golden values */

static const int32_t golden_lengths[3] = {5, 2, 4};
static double golden_fwd_max, golden_grad_max;

static double cmp_fixture(struct fixture *fx, const char *name, const float *got, int64_t n)
{
	struct fixture_tensor *ft = fixture_get(fx, name);
	ck_assert_msg(ft, "fixture lacks %s", name);
	ck_assert_int_eq(ft->numel, n);
	return fixture_max_abs_diff(ft->data, got, n);
}

static struct px_tensor *from_fixture(struct px_layer_inst *li, struct fixture *fx, const char *name)
{
	struct fixture_tensor *ft = fixture_get(fx, name);
	ck_assert_msg(ft, "fixture lacks %s", name);
	struct px_tensor *t = px_layer_inst_tensor(li, ft->ndim, ft->shape);
	ck_assert(t);
	memcpy(t->data, ft->data, (size_t)ft->numel * sizeof(float));
	return t;
}

/* Loads tests/fixtures/recurrent/<file>, copies the PyTorch weights into the layer by name,
 * runs forward and backward and compares everything; returns the worst errors. */
static void check_golden(const char *kind, int layers, bool bi, bool ragged, const char *extra)
{
	char file[128], opts[160];
	snprintf(file, sizeof file, "recurrent/%s%s_l%d_%s_%s.txt", kind, *extra ? "_relu" : "",
		 layers, bi ? "bi" : "uni", ragged ? "ragged" : "full");
	struct fixture *fx = fixture_load(file);
	ck_assert_msg(fx, "cannot load %s", file);
	struct fixture_tensor *xs = fixture_get(fx, "x");
	int64_t B = xs->shape[0], T = xs->shape[1], F = xs->shape[2];
	int64_t H = fixture_get(fx, "weight_hh_l0")->shape[1], D = bi ? 2 : 1, LD = layers * D;
	int ns = n_state_of(kind);
	snprintf(opts, sizeof opts, "hidden: %lld, layers: %d, bidirectional: %s%s", (long long)H,
		 layers, bi ? "true" : "false", extra);
	struct px_layer_inst *li = make_layer(kind, opts, B, T, F, LD, H, ragged, 1);
	int np = px_layer_inst_n_params(li);
	ck_assert_int_eq(np, 4 * (int)LD);
	for (int i = 0; i < np; i++) {
		struct px_param *p = px_layer_inst_param(li, i);
		struct fixture_tensor *ft = fixture_get(fx, p->name);
		ck_assert_msg(ft, "%s: PyTorch has no parameter %s", file, p->name);
		ck_assert_int_eq(ft->numel, px_tensor_numel(p->value));
		memcpy(p->value->data, ft->data, (size_t)ft->numel * sizeof(float));
	}
	const struct px_tensor *in[3] = {from_fixture(li, fx, "x")};
	if (ragged) {
		((struct px_tensor *)in[0])->lengths = golden_lengths;
		in[1] = from_fixture(li, fx, "h0");
		if (ns > 1)
			in[2] = from_fixture(li, fx, "c0");
	}
	forward_ok(li, in, false);
	const char *outs[4] = {NULL, "seq", "state", "cell"};
	double fe = 0, ge = 0;
	for (int k = 1; k <= ns + 1; k++) {
		const struct px_tensor *o = px_layer_inst_out(li, k);
		fe = fmax(fe, cmp_fixture(fx, outs[k], o->data, px_tensor_numel(o)));
	}
	const struct px_tensor *d_out[4] = {NULL, from_fixture(li, fx, "w_seq"),
					    from_fixture(li, fx, "w_state"),
					    ns > 1 ? from_fixture(li, fx, "w_cell") : NULL};
	struct px_tensor *d_in[3] = {tensor3(li, B, T, F)};
	if (ragged)
		for (int i = 1; i <= ns; i++)
			d_in[i] = tensor3(li, B, LD, H);
	backward_ok(li, d_out, d_in);
	char gname[160];
	for (int i = 0; i < np; i++) {
		struct px_param *p = px_layer_inst_param(li, i);
		snprintf(gname, sizeof gname, "grad_%s", p->name);
		ge = fmax(ge, cmp_fixture(fx, gname, p->grad->data, px_tensor_numel(p->grad)));
	}
	ge = fmax(ge, cmp_fixture(fx, "grad_x", d_in[0]->data, px_tensor_numel(d_in[0])));
	if (ragged) {
		ge = fmax(ge, cmp_fixture(fx, "grad_h0", d_in[1]->data, px_tensor_numel(d_in[1])));
		if (ns > 1)
			ge = fmax(ge, cmp_fixture(fx, "grad_c0", d_in[2]->data, px_tensor_numel(d_in[2])));
	}
	ck_assert_msg(fe <= 1e-4, "%s: forward max abs error %g > 1e-4", file, fe);
	ck_assert_msg(ge <= 1e-3, "%s: gradient max abs error %g > 1e-3", file, ge);
	golden_fwd_max = fmax(golden_fwd_max, fe);
	golden_grad_max = fmax(golden_grad_max, ge);
	px_layer_inst_free(li);
	fixture_free(fx);
}

static void check_golden_kind(const char *kind)
{
	golden_fwd_max = golden_grad_max = 0;
	for (int layers = 1; layers <= 2; layers++)
		for (int bi = 0; bi < 2; bi++)
			for (int ragged = 0; ragged < 2; ragged++)
				check_golden(kind, layers, bi, ragged, "");
	printf("%s vs PyTorch (8 configurations): max abs error forward %.3g, gradients %.3g\n",
	       kind, golden_fwd_max, golden_grad_max);
}

START_TEST(test_rnn_matches_pytorch_outputs_states_and_all_gradients)
{
	check_golden_kind("rnn");
	check_golden("rnn", 2, true, true, ", nonlinearity: relu");
}
END_TEST

START_TEST(test_lstm_matches_pytorch_outputs_states_and_all_gradients)
{
	check_golden_kind("lstm");
}
END_TEST

START_TEST(test_gru_matches_pytorch_outputs_states_and_all_gradients)
{
	check_golden_kind("gru");
}
END_TEST

/* ------------------------------------------------------------------ finite differences */

static const int32_t fd_lengths[3] = {4, 2, 3};

/* B=3, T=4, F=3, H=4, lengths {4,2,3}, h0 (and c0) connected, every output projected */
static void gradcheck_config_eps(const char *kind, int layers, bool bi, const char *extra,
				 bool train, double eps)
{
	int64_t B = 3, T = 4, F = 3, H = 4, LD = layers * (bi ? 2 : 1);
	char opts[200];
	snprintf(opts, sizeof opts, "hidden: %lld, layers: %d, bidirectional: %s%s", (long long)H,
		 layers, bi ? "true" : "false", extra);
	struct px_layer_inst *li = make_layer(kind, opts, B, T, F, LD, H, true, 7);
	struct px_tensor *x = tensor3(li, B, T, F);
	fill_random(x, 11);
	x->lengths = fd_lengths;
	const struct px_tensor *in[3] = {x};
	for (int i = 1; i <= n_state_of(kind); i++) {
		struct px_tensor *s = tensor3(li, B, LD, H);
		fill_random(s, 20 + (uint64_t)i);
		in[i] = s;
	}
	struct px_gradcheck_opts o;
	px_gradcheck_defaults(&o);
	o.train = train;
	if (eps > 0)
		o.eps = eps;
	struct px_gradcheck_result res;
	struct px_error err = {0};
	int rc = px_gradcheck_layer(li, in, &o, &res, &err);
	ck_assert_msg(rc == 0, "%s", err.msg);
	ck_assert_msg(res.failed == 0, "%s {%s}: %lld of %lld elements differ; worst %s", kind,
		      opts, (long long)res.failed, (long long)res.checked, res.worst);
	ck_assert_int_gt(res.checked, 80);
	px_layer_inst_free(li);
}

static void gradcheck_config(const char *kind, int layers, bool bi, const char *extra,
			     bool train)
{
	gradcheck_config_eps(kind, layers, bi, extra, train, 0);
}

static void gradcheck_kind(const char *kind)
{
	for (int layers = 1; layers <= 2; layers++)
		for (int bi = 0; bi < 2; bi++)
			gradcheck_config(kind, layers, bi, "", false);
}

START_TEST(test_rnn_grad_matches_finite_difference_ragged_stacked_bidirectional)
{
	gradcheck_kind("rnn");
}
END_TEST

START_TEST(test_lstm_grad_matches_finite_difference_ragged_stacked_bidirectional)
{
	gradcheck_kind("lstm");
}
END_TEST

START_TEST(test_gru_grad_matches_finite_difference_ragged_stacked_bidirectional)
{
	gradcheck_kind("gru");
	gradcheck_config("gru", 2, true, ", reset_after: false", false);
}
END_TEST

START_TEST(test_readouts_last_mean_max_grad_matches_finite_difference)
{
	gradcheck_config("lstm", 1, true, ", readout: last", false);
	gradcheck_config("gru", 1, true, ", readout: mean", false);
	/* max is not differentiable where two steps tie: small steps keep clear of ties */
	gradcheck_config_eps("rnn", 2, true, ", readout: max", false, 1e-3);
	gradcheck_config_eps("lstm", 1, false, ", readout: max", false, 1e-3);
}
END_TEST

START_TEST(test_dropout_between_layers_grad_matches_finite_difference_in_training)
{
	gradcheck_config("lstm", 2, true, ", dropout: 0.5", true);
}
END_TEST

/* ------------------------------------------------------------------ gru reset_after false */

static float sigm(float v)
{
	return 1.0f / (1.0f + expf(-v));
}

/* n = tanh(W_in x + b_in + W_hn (r*h) + b_hn): a direct transcription of Cho et al. */
START_TEST(test_gru_reset_before_matches_handwritten_reference)
{
	int64_t B = 2, T = 3, F = 3, H = 4;
	struct px_layer_inst *li = make_layer("gru", "hidden: 4, reset_after: false", B, T, F, 1, H,
					      true, 5);
	struct px_tensor *x = tensor3(li, B, T, F), *h0 = tensor3(li, B, 1, H);
	fill_random(x, 1);
	fill_random(h0, 2);
	const struct px_tensor *in[2] = {x, h0};
	forward_ok(li, in, false);
	const float *wi = param_named(li, "weight_ih_l0")->value->data;
	const float *wh = param_named(li, "weight_hh_l0")->value->data;
	const float *bi = param_named(li, "bias_ih_l0")->value->data;
	const float *bh = param_named(li, "bias_hh_l0")->value->data;
	const struct px_tensor *seq = px_layer_inst_out(li, 1);
	double worst = 0;
	for (int64_t b = 0; b < B; b++) {
		float h[4], r[4], z[4], n[4], rh[4];
		memcpy(h, h0->data + b * H, sizeof h);
		for (int64_t t = 0; t < T; t++) {
			const float *xt = x->data + (b * T + t) * F;
			for (int64_t j = 0; j < H; j++) {
				float ar = bi[j] + bh[j], az = bi[H + j] + bh[H + j];
				for (int64_t k = 0; k < F; k++) {
					ar += wi[j * F + k] * xt[k];
					az += wi[(H + j) * F + k] * xt[k];
				}
				for (int64_t k = 0; k < H; k++) {
					ar += wh[j * H + k] * h[k];
					az += wh[(H + j) * H + k] * h[k];
				}
				r[j] = sigm(ar);
				z[j] = sigm(az);
			}
			for (int64_t k = 0; k < H; k++)
				rh[k] = r[k] * h[k];
			for (int64_t j = 0; j < H; j++) {
				float an = bi[2 * H + j] + bh[2 * H + j];
				for (int64_t k = 0; k < F; k++)
					an += wi[(2 * H + j) * F + k] * xt[k];
				for (int64_t k = 0; k < H; k++)
					an += wh[(2 * H + j) * H + k] * rh[k];
				n[j] = tanhf(an);
			}
			for (int64_t j = 0; j < H; j++) {
				h[j] = (1 - z[j]) * n[j] + z[j] * h[j];
				worst = fmax(worst, fabs(h[j] - seq->data[(b * T + t) * H + j]));
			}
		}
	}
	ck_assert_msg(worst < 1e-5, "reset_after false differs from the reference by %g", worst);
	/* and it is a different function from the default form */
	struct px_layer_inst *la = make_layer("gru", "hidden: 4", B, T, F, 1, H, true, 5);
	forward_ok(la, in, false);
	ck_assert_double_gt(max_abs_diff_t(px_layer_inst_out(la, 1), seq), 1e-4);
	px_layer_inst_free(la);
	px_layer_inst_free(li);
}
END_TEST

/* ------------------------------------------------------------------ ragged batches */

START_TEST(test_padded_steps_get_zero_output_zero_gradient_and_never_leak)
{
	const char *kinds[3] = {"rnn", "lstm", "gru"};
	int64_t B = 3, T = 4, F = 3, H = 4;
	for (int k = 0; k < 3; k++) {
		struct px_layer_inst *li = make_layer(kinds[k], "hidden: 4, layers: 2, "
						      "bidirectional: true", B, T, F, 4, H, false, 3);
		struct px_tensor *x = tensor3(li, B, T, F);
		fill_random(x, 4);
		x->lengths = fd_lengths;
		const struct px_tensor *in[1] = {x};
		forward_ok(li, in, false);
		const struct px_tensor *seq = px_layer_inst_out(li, 1);
		ck_assert_ptr_eq(seq->lengths, fd_lengths);
		struct px_tensor *seq1 = tensor3(li, B, T, 2 * H), *st1 = tensor3(li, B, 4, H);
		memcpy(seq1->data, seq->data, sizeof(float) * (size_t)px_tensor_numel(seq));
		memcpy(st1->data, px_layer_inst_out(li, 2)->data, sizeof(float) * 4 * B * H);
		for (int64_t b = 0; b < B; b++)
			for (int64_t t = fd_lengths[b]; t < T; t++)
				for (int64_t j = 0; j < 2 * H; j++)
					ck_assert_float_eq(seq->data[(b * T + t) * 2 * H + j], 0.0f);
		/* gradient everywhere, padded positions included: still zero at padded inputs */
		struct px_tensor *w = tensor3(li, B, T, 2 * H), *dx = tensor3(li, B, T, F);
		fill_random(w, 9);
		const struct px_tensor *d_out[4] = {w, w};
		struct px_tensor *d_in[1] = {dx};
		backward_ok(li, d_out, d_in);
		for (int64_t b = 0; b < B; b++)
			for (int64_t t = 0; t < T; t++)
				for (int64_t j = 0; j < F; j++) {
					float g = dx->data[(b * T + t) * F + j];
					if (t >= fd_lengths[b])
						ck_assert_float_eq(g, 0.0f);
					else
						ck_assert(g != 0.0f);
				}
		/* garbage in the padding changes nothing (neither direction nor the states) */
		for (int64_t b = 0; b < B; b++)
			for (int64_t t = fd_lengths[b]; t < T; t++)
				for (int64_t j = 0; j < F; j++)
					x->data[(b * T + t) * F + j] = 1e3f;
		forward_ok(li, in, false);
		ck_assert_double_eq(max_abs_diff_t(px_layer_inst_out(li, 1), seq1), 0);
		ck_assert_double_eq(max_abs_diff_t(px_layer_inst_out(li, 2), st1), 0);
		px_layer_inst_free(li);
	}
}
END_TEST

/* ------------------------------------------------------------------ readouts */

START_TEST(test_readouts_last_mean_max_are_taken_over_valid_steps)
{
	int64_t B = 3, T = 4, F = 3, H = 4, DH = 8;
	const char *ro[3] = {"last", "mean", "max"};
	struct px_layer_inst *ls = make_layer("gru", "hidden: 4, bidirectional: true", B, T, F, 2,
					      H, false, 8);
	struct px_tensor *x = tensor3(ls, B, T, F);
	fill_random(x, 6);
	x->lengths = fd_lengths;
	const struct px_tensor *in[1] = {x};
	forward_ok(ls, in, false);
	const float *seq = px_layer_inst_out(ls, 1)->data;
	const float *state = px_layer_inst_out(ls, 2)->data;
	for (int r = 0; r < 3; r++) {
		char opts[96];
		snprintf(opts, sizeof opts, "hidden: 4, bidirectional: true, readout: %s", ro[r]);
		struct px_layer_inst *li = make_layer("gru", opts, B, T, F, 2, H, false, 8);
		forward_ok(li, in, false);
		const struct px_tensor *out = px_layer_inst_out(li, 0);
		ck_assert_int_eq(out->ndim, 2);
		ck_assert_int_eq(out->shape[1], DH);
		for (int64_t b = 0; b < B; b++)
			for (int64_t j = 0; j < DH; j++) {
				int64_t n = fd_lengths[b];
				float want;
				if (r == 0) { /* forward at the last valid step, backward at step 0 */
					want = seq[(b * T + (j < H ? n - 1 : 0)) * DH + j];
					/* which is also the final state of each direction */
					ck_assert_float_eq_tol(want, state[(b * 2 + j / H) * H + j % H], 1e-6);
				} else {
					double s = 0, m = -1e30;
					for (int64_t t = 0; t < n; t++) {
						s += seq[(b * T + t) * DH + j];
						m = fmax(m, seq[(b * T + t) * DH + j]);
					}
					want = r == 1 ? (float)(s / n) : (float)m;
				}
				ck_assert_float_eq_tol(out->data[b * DH + j], want, 1e-6);
			}
		px_layer_inst_free(li);
	}
	px_layer_inst_free(ls);
}
END_TEST

/* ------------------------------------------------------------------ diagnostics */

/* A probe wraps a real layer kind: it records the layer instance (for reset_state) and the
 * diagnostics the layer reports in backward. */
static const struct px_layer_ops *probe_inner;
static void *probe_self;
static double probe_norm[16];
static int probe_count;

static int probe_create(struct px_build *b, void **self, struct px_shape *out, struct px_error *err)
{
	int rc = probe_inner->create(b, self, out, err);
	probe_self = *self;
	return rc;
}

static void probe_record(void *ctx, const char *series, int64_t step, double value)
{
	(void)ctx;
	ck_assert_str_eq(series, "grad_norm");
	ck_assert(step >= 0 && step < 16);
	probe_norm[step] = value;
	probe_count++;
}

static int probe_backward(void *self, struct px_bwd *b, struct px_error *err)
{
	b->report = probe_record;
	b->report_ctx = NULL;
	return probe_inner->backward(self, b, err);
}

/* ops: a copy of the kind's table with the probe's hooks */
static struct px_layer_inst *make_probe(const char *kind, struct px_layer_ops *ops,
					const char *opts, int64_t B, int64_t T, int64_t F)
{
	probe_inner = ops_of(kind);
	*ops = *probe_inner;
	ops->create = probe_create;
	ops->backward = probe_backward;
	struct px_shape shp[1] = {{3, {B, T, F}}};
	struct px_layer_inst *li = NULL;
	struct px_error err = {0};
	ck_assert_msg(px_layer_inst_new(ops, opts, 1, shp, NULL, 3, &tp_host, &li, &err) == 0,
		      "%s", err.msg);
	return li;
}

/* ------------------------------------------------------------------ stateful, tbptt */

START_TEST(test_stateful_second_batch_starts_from_the_first_final_state)
{
	int64_t B = 2, T = 3, F = 3, H = 4;
	struct px_layer_ops pops;
	struct px_layer_inst *sf = make_probe("lstm", &pops, "hidden: 4, layers: 2, stateful: true",
					      B, T, F);
	struct px_layer_inst *ref = make_layer("lstm", "hidden: 4, layers: 2", B, T, F, 2, H, true, 3);
	struct px_layer_inst *fresh = make_layer("lstm", "hidden: 4, layers: 2", B, T, F, 2, H,
						 false, 3);
	struct px_tensor *x1 = tensor3(sf, B, T, F), *x2 = tensor3(sf, B, T, F);
	fill_random(x1, 1);
	fill_random(x2, 2);
	struct px_tensor *h = tensor3(ref, B, 2, H), *c = tensor3(ref, B, 2, H);
	const struct px_tensor *in1[1] = {x1}, *in2[1] = {x2};
	forward_ok(sf, in1, true);
	memcpy(h->data, px_layer_inst_out(sf, 2)->data, sizeof(float) * 2 * B * H);
	memcpy(c->data, px_layer_inst_out(sf, 3)->data, sizeof(float) * 2 * B * H);
	forward_ok(sf, in2, true);
	const struct px_tensor *rin[3] = {x2, h, c};
	forward_ok(ref, rin, true);
	forward_ok(fresh, in2, true);
	const struct px_tensor *seq = px_layer_inst_out(sf, 1);
	ck_assert_double_lt(max_abs_diff_t(seq, px_layer_inst_out(ref, 1)), 1e-6);
	ck_assert_double_gt(max_abs_diff_t(seq, px_layer_inst_out(fresh, 1)), 1e-4);
	/* the carried state is detached: the gradient equals the one from a constant h0, c0 */
	struct px_tensor *w = tensor3(sf, B, T, H), *dx = tensor3(sf, B, T, F);
	struct px_tensor *dxr = tensor3(sf, B, T, F);
	fill_random(w, 3);
	const struct px_tensor *d_out[4] = {NULL, w};
	struct px_tensor *d_in[1] = {dx}, *d_inr[3] = {dxr};
	backward_ok(sf, d_out, d_in);
	backward_ok(ref, d_out, d_inr);
	ck_assert_double_lt(max_abs_diff_t(dx, dxr), 1e-6);
	/* reset_state starts a new stream from zeros */
	pops.reset_state(probe_self);
	forward_ok(sf, in2, true);
	ck_assert_double_eq(max_abs_diff_t(px_layer_inst_out(sf, 1), px_layer_inst_out(fresh, 1)), 0);
	/* so does a change of batch size */
	struct px_tensor *x3 = tensor3(sf, B + 1, T, F);
	fill_random(x3, 4);
	const struct px_tensor *in3[1] = {x3};
	forward_ok(sf, in3, true);
	forward_ok(sf, in2, true);
	ck_assert_double_eq(max_abs_diff_t(px_layer_inst_out(sf, 1), px_layer_inst_out(fresh, 1)), 0);
	px_layer_inst_free(fresh);
	px_layer_inst_free(ref);
	px_layer_inst_free(sf);
}
END_TEST

/* dLoss/dx_0 where the loss is <w, seq[:, t]> only */
static double grad_x0_from_step(struct px_layer_inst *li, const struct px_tensor *x, int64_t t)
{
	int64_t B = x->shape[0], T = x->shape[1], F = x->shape[2];
	const struct px_tensor *seq = px_layer_inst_out(li, 1);
	int64_t DH = seq->shape[2];
	struct px_tensor *w = tensor3(li, B, T, DH), *dx = tensor3(li, B, T, F);
	for (int64_t b = 0; b < B; b++)
		for (int64_t j = 0; j < DH; j++)
			w->data[(b * T + t) * DH + j] = 1.0f;
	const struct px_tensor *d_out[4] = {NULL, w};
	struct px_tensor *d_in[1] = {dx};
	backward_ok(li, d_out, d_in);
	double s = 0;
	for (int64_t b = 0; b < B; b++)
		for (int64_t j = 0; j < F; j++)
			s += fabs(dx->data[(b * T) * F + j]);
	return s;
}

START_TEST(test_tbptt_stops_gradient_at_chunk_boundaries)
{
	const char *kinds[3] = {"rnn", "lstm", "gru"};
	int64_t B = 2, T = 6, F = 3, H = 4;
	for (int k = 0; k < 3; k++) {
		struct px_layer_inst *li = make_layer(kinds[k], "hidden: 4, tbptt: 2", B, T, F, 1, H,
						      false, 2);
		struct px_layer_inst *full = make_layer(kinds[k], "hidden: 4", B, T, F, 1, H, false, 2);
		struct px_tensor *x = tensor3(li, B, T, F);
		fill_random(x, 5);
		const struct px_tensor *in[1] = {x};
		forward_ok(li, in, true);
		forward_ok(full, in, true);
		ck_assert_double_gt(grad_x0_from_step(li, x, 0), 0);
		ck_assert_double_gt(grad_x0_from_step(li, x, 1), 0);  /* same chunk */
		for (int64_t t = 2; t < T; t++) {
			ck_assert_double_eq(grad_x0_from_step(li, x, t), 0);  /* beyond K steps */
			ck_assert_double_gt(grad_x0_from_step(full, x, t), 0);
		}
		px_layer_inst_free(full);
		px_layer_inst_free(li);
	}
	/* the reverse direction: its output at step 0 sees x_0 .. x_{K-1} only */
	struct px_layer_inst *bi = make_layer("lstm", "hidden: 4, tbptt: 2, bidirectional: true",
					      B, T, F, 2, H, false, 2);
	struct px_tensor *x = tensor3(bi, B, T, F), *w = tensor3(bi, B, T, 2 * H);
	struct px_tensor *dx = tensor3(bi, B, T, F);
	fill_random(x, 5);
	for (int64_t b = 0; b < B; b++)
		for (int64_t j = H; j < 2 * H; j++)
			w->data[b * T * 2 * H + j] = 1.0f;
	const struct px_tensor *in[1] = {x}, *d_out[4] = {NULL, w};
	struct px_tensor *d_in[1] = {dx};
	forward_ok(bi, in, true);
	backward_ok(bi, d_out, d_in);
	for (int64_t t = 0; t < T; t++) {
		double g = 0;
		for (int64_t b = 0; b < B; b++)
			for (int64_t j = 0; j < F; j++)
				g += fabs(dx->data[(b * T + t) * F + j]);
		if (t < 2)
			ck_assert_double_gt(g, 0);
		else
			ck_assert_double_eq(g, 0);
	}
	px_layer_inst_free(bi);
}
END_TEST

/* ||dLoss/dh_t|| = ||w_t + dLoss_{>t}/dh_t||, the second term measured as the h0 gradient of
 * the same layer run on the steps after t from the state at t */
START_TEST(test_grad_norm_report_is_the_full_gradient_of_each_state)
{
	const char *kinds[2] = {"gru", "lstm"};
	int64_t B = 2, T = 5, F = 3, H = 4;
	for (int k = 0; k < 2; k++) {
		struct px_layer_ops pops;
		struct px_layer_inst *li = make_probe(kinds[k], &pops, "hidden: 4", B, T, F);
		int ns = n_state_of(kinds[k]);
		struct px_tensor *x = tensor3(li, B, T, F), *w = tensor3(li, B, T, H);
		fill_random(x, 1);
		fill_random(w, 2);
		const struct px_tensor *in[1] = {x};
		forward_ok(li, in, true);
		const struct px_tensor *d_out[4] = {NULL, w};
		probe_count = 0;
		backward_ok(li, d_out, NULL);
		ck_assert_int_eq(probe_count, T);
		float states[2][2 * 4];  /* state at t = 1: rerun steps 0..1, then 2..T-1 */
		for (int64_t t = 1; t < T - 1; t++) {
			struct px_layer_inst *head = make_layer(kinds[k], "hidden: 4", B, t + 1, F, 1, H,
								false, 3);
			struct px_tensor *xh = tensor3(head, B, t + 1, F);
			for (int64_t b = 0; b < B; b++)
				memcpy(xh->data + b * (t + 1) * F, x->data + b * T * F,
				       sizeof(float) * (size_t)((t + 1) * F));
			const struct px_tensor *hin[1] = {xh};
			forward_ok(head, hin, true);
			for (int s = 0; s < ns; s++)
				memcpy(states[s], px_layer_inst_out(head, 2 + s)->data, sizeof(float) * 2 * 4);
			int64_t Tt = T - 1 - t;
			struct px_layer_inst *tail = make_layer(kinds[k], "hidden: 4", B, Tt, F, 1, H,
								true, 3);
			struct px_tensor *xt = tensor3(tail, B, Tt, F), *wt = tensor3(tail, B, Tt, H);
			for (int64_t b = 0; b < B; b++) {
				memcpy(xt->data + b * Tt * F, x->data + (b * T + t + 1) * F,
				       sizeof(float) * (size_t)(Tt * F));
				memcpy(wt->data + b * Tt * H, w->data + (b * T + t + 1) * H,
				       sizeof(float) * (size_t)(Tt * H));
			}
			const struct px_tensor *tin[3] = {xt};
			struct px_tensor *dtin[3] = {NULL};
			for (int s = 0; s < ns; s++) {
				struct px_tensor *st = tensor3(tail, B, 1, H);
				memcpy(st->data, states[s], sizeof(float) * 2 * 4);
				tin[1 + s] = st;
				dtin[1 + s] = tensor3(tail, B, 1, H);
			}
			forward_ok(tail, tin, true);
			const struct px_tensor *dt_out[4] = {NULL, wt};
			backward_ok(tail, dt_out, dtin);
			double sq = 0;
			for (int64_t b = 0; b < B; b++)
				for (int64_t j = 0; j < H; j++) {
					double g = w->data[(b * T + t) * H + j] + dtin[1]->data[b * H + j];
					sq += g * g;
				}
			ck_assert_double_eq_tol(probe_norm[t], sqrt(sq), 1e-5);
			px_layer_inst_free(tail);
			px_layer_inst_free(head);
		}
		/* the last step has only its own output's gradient */
		double sq = 0;
		for (int64_t b = 0; b < B; b++)
			for (int64_t j = 0; j < H; j++)
				sq += (double)w->data[(b * T + T - 1) * H + j] * w->data[(b * T + T - 1) * H + j];
		ck_assert_double_eq_tol(probe_norm[T - 1], sqrt(sq), 1e-6);
		px_layer_inst_free(li);
	}
}
END_TEST

/* ------------------------------------------------------------------ cells */

/* A test layer that drives a cell over a sequence one step at a time:
 * x [B,T,F] -> seq [B,T,H], state [B, n_state, H]; zero initial state. */
static const struct px_cell_ops *loop_cell;

struct cell_loop {
	void *cell;
	int64_t F, H, B, T;
	size_t cache;
	float *xt, *states, *caches;   /* step arena */
};

static const struct px_param_spec loop_schema[] = {
	{"hidden", PX_T_INT, NULL, 1, 1e6, NULL, "units"},
	{NULL, 0, NULL, 0, 0, NULL, NULL},
};
static const struct px_port_spec loop_in[] = {{"x", 0, ""}, {NULL, 0, NULL}};
static const struct px_port_spec loop_out[] = {{"seq", 0, ""}, {"state", 0, ""}, {NULL, 0, NULL}};

static int loop_create(struct px_build *b, void **self, struct px_shape *out, struct px_error *err)
{
	struct cell_loop *L = calloc(1, sizeof *L);
	L->F = b->in[0].dim[2];
	L->H = px_config_int(b->cfg, "hidden");
	int rc = loop_cell->create(b, "cell.", L->F, L->H, &L->cell, err);
	if (rc) {
		free(L);
		return rc;
	}
	out[0] = (struct px_shape){3, {-1, b->in[0].dim[1], L->H}};
	out[1] = (struct px_shape){3, {-1, loop_cell->n_state, L->H}};
	*self = L;
	return 0;
}

static int loop_forward(void *self, struct px_fwd *f, struct px_error *err)
{
	struct cell_loop *L = self;
	const struct px_tensor *x = f->in[0];
	int64_t B = x->shape[0], T = x->shape[1], F = L->F, H = L->H, S = loop_cell->n_state;
	L->B = B;
	L->T = T;
	L->cache = loop_cell->cache_floats(L->cell, B);
	L->xt = px_arena_alloc(f->arena, sizeof(float) * (size_t)(T * B * F));
	L->states = px_arena_zalloc(f->arena, sizeof(float) * (size_t)((T + 1) * S * B * H));
	L->caches = px_arena_alloc(f->arena, sizeof(float) * (size_t)T * L->cache);
	struct px_tensor *seq = px_tensor_new3(f->arena, B, T, H);
	struct px_tensor *st = px_tensor_new3(f->arena, B, S, H);
	if (!L->xt || !L->states || !L->caches || !seq || !st)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	for (int64_t t = 0; t < T; t++)
		for (int64_t b = 0; b < B; b++)
			memcpy(L->xt + (t * B + b) * F, x->data + (b * T + t) * F, sizeof(float) * (size_t)F);
	for (int64_t t = 0; t < T; t++) {
		float *sp = L->states + t * S * B * H, *sn = sp + S * B * H;
		loop_cell->step(L->cell, B, L->xt + t * B * F, sp, sn, L->caches + (size_t)t * L->cache);
		for (int64_t b = 0; b < B; b++)
			memcpy(seq->data + (b * T + t) * H, sn + b * H, sizeof(float) * (size_t)H);
	}
	const float *fin = L->states + T * S * B * H;
	for (int64_t s = 0; s < S; s++)
		for (int64_t b = 0; b < B; b++)
			memcpy(st->data + (b * S + s) * H, fin + (s * B + b) * H, sizeof(float) * (size_t)H);
	f->out[0] = seq;
	f->out[1] = st;
	return 0;
}

static int loop_backward(void *self, struct px_bwd *bw, struct px_error *err)
{
	struct cell_loop *L = self;
	int64_t B = L->B, T = L->T, F = L->F, H = L->H, S = loop_cell->n_state;
	float *ds = px_arena_zalloc(bw->arena, sizeof(float) * (size_t)(S * B * H));
	float *dp = px_arena_alloc(bw->arena, sizeof(float) * (size_t)(S * B * H));
	float *dx = px_arena_alloc(bw->arena, sizeof(float) * (size_t)(B * F));
	if (!ds || !dp || !dx)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	const struct px_tensor *dseq = bw->d_out[0], *dst = bw->d_out[1];
	for (int64_t s = 0; dst && s < S; s++)
		for (int64_t b = 0; b < B; b++)
			memcpy(ds + (s * B + b) * H, dst->data + (b * S + s) * H, sizeof(float) * (size_t)H);
	for (int64_t t = T - 1; t >= 0; t--) {
		for (int64_t b = 0; dseq && b < B; b++)
			for (int64_t j = 0; j < H; j++)
				ds[b * H + j] += dseq->data[(b * T + t) * H + j];
		memset(dp, 0, sizeof(float) * (size_t)(S * B * H));
		memset(dx, 0, sizeof(float) * (size_t)(B * F));
		loop_cell->step_backward(L->cell, B, L->xt + t * B * F, L->states + t * S * B * H,
					 L->caches + (size_t)t * L->cache, ds, dx, dp);
		for (int64_t b = 0; bw->d_in[0] && b < B; b++)
			for (int64_t j = 0; j < F; j++)
				bw->d_in[0]->data[(b * T + t) * F + j] += dx[b * F + j];
		memcpy(ds, dp, sizeof(float) * (size_t)(S * B * H));
	}
	return 0;
}

static void loop_destroy(void *self)
{
	struct cell_loop *L = self;
	loop_cell->destroy(L->cell);
	free(L);
}

static const struct px_layer_ops loop_ops = {
	.struct_size = sizeof(struct px_layer_ops), .kind = "cell_loop", .doc = "test",
	.schema = loop_schema, .inputs = loop_in, .outputs = loop_out,
	.create = loop_create, .forward = loop_forward, .backward = loop_backward,
	.destroy = loop_destroy,
};

static struct px_layer_inst *make_loop(const char *kind, int64_t B, int64_t T, int64_t F)
{
	loop_cell = cell_of(kind);
	struct px_shape in[1] = {{3, {B, T, F}}};
	struct px_layer_inst *li;
	struct px_error err = {0};
	ck_assert_msg(px_layer_inst_new(&loop_ops, "hidden: 4", 1, in, NULL, 6, &tp_host, &li,
					&err) == 0, "%s", err.msg);
	return li;
}

/* A cell driven over a sequence gives the layer's outputs and gradients; batch 40 takes two
 * chunks of 32 lanes in the cell. */
START_TEST(test_cell_steps_equal_the_layer_steps)
{
	const char *kinds[3] = {"rnn", "lstm", "gru"};
	const char *names[4] = {"weight_ih", "weight_hh", "bias_ih", "bias_hh"};
	int64_t T = 4, F = 3, H = 4, batches[2] = {3, 40};
	for (int k = 0; k < 3; k++)
		for (int bi = 0; bi < 2; bi++) {
			int64_t B = batches[bi];
			struct px_layer_inst *lc = make_loop(kinds[k], B, T, F);
			struct px_layer_inst *ll = make_layer(kinds[k], "hidden: 4", B, T, F, 1, H,
							      false, 9);
			ck_assert_int_eq(px_layer_inst_n_params(lc), 4);
			struct px_param *pc[4], *pl[4];
			for (int i = 0; i < 4; i++) {
				char cn[32], ln[32];
				snprintf(cn, sizeof cn, "cell.%s", names[i]);
				snprintf(ln, sizeof ln, "%s_l0", names[i]);
				pc[i] = param_named(lc, cn);
				pl[i] = param_named(ll, ln);
				ck_assert_msg(pc[i] && pl[i], "%s: cell parameter %s", kinds[k], cn);
				ck_assert_int_eq(px_tensor_numel(pc[i]->value), px_tensor_numel(pl[i]->value));
				memcpy(pl[i]->value->data, pc[i]->value->data,
				       sizeof(float) * (size_t)px_tensor_numel(pc[i]->value));
			}
			struct px_tensor *x = tensor3(lc, B, T, F), *w = tensor3(lc, B, T, H);
			struct px_tensor *dxc = tensor3(lc, B, T, F), *dxl = tensor3(lc, B, T, F);
			fill_random(x, 3);
			fill_random(w, 4);
			const struct px_tensor *in[1] = {x};
			forward_ok(lc, in, false);
			forward_ok(ll, in, false);
			ck_assert_double_lt(max_abs_diff_t(px_layer_inst_out(lc, 0),
							   px_layer_inst_out(ll, 1)), 1e-5);
			const struct px_tensor *dc[2] = {w, NULL}, *dl[4] = {NULL, w};
			struct px_tensor *dic[1] = {dxc}, *dil[1] = {dxl};
			backward_ok(lc, dc, dic);
			backward_ok(ll, dl, dil);
			ck_assert_double_lt(max_abs_diff_t(dxc, dxl), 1e-5);
			for (int i = 0; i < 4; i++)
				ck_assert_msg(max_abs_diff_t(pc[i]->grad, pl[i]->grad) < 1e-4,
					      "%s B=%lld: cell gradient of %s differs by %g", kinds[k],
					      (long long)B, names[i], max_abs_diff_t(pc[i]->grad, pl[i]->grad));
			px_layer_inst_free(ll);
			px_layer_inst_free(lc);
		}
}
END_TEST

START_TEST(test_cell_grad_matches_finite_difference)
{
	const char *kinds[3] = {"rnn", "lstm", "gru"};
	for (int k = 0; k < 3; k++) {
		struct px_layer_inst *li = make_loop(kinds[k], 3, 3, 3);
		struct px_tensor *x = tensor3(li, 3, 3, 3);
		fill_random(x, 12);
		const struct px_tensor *in[1] = {x};
		struct px_gradcheck_opts o;
		px_gradcheck_defaults(&o);
		struct px_gradcheck_result res;
		struct px_error err = {0};
		ck_assert_int_eq(px_gradcheck_layer(li, in, &o, &res, &err), 0);
		ck_assert_msg(res.failed == 0, "%s cell: %lld bad; worst %s", kinds[k],
			      (long long)res.failed, res.worst);
		ck_assert_int_gt(res.checked, 50);
		px_layer_inst_free(li);
	}
}
END_TEST

/* ------------------------------------------------------------------ kernels and threads */

/* threads of this process named px-rec-team (the recurrent layers' step teams) */
static int team_threads(void)
{
	int n = 0;
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	while (d && (e = readdir(d))) {
		char path[300], name[64] = "";
		snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
		FILE *f = fopen(path, "r");
		if (f && fgets(name, sizeof name, f) && !strcmp(name, "px-rec-team\n"))
			n++;
		if (f)
			fclose(f);
	}
	if (d)
		closedir(d);
	return n;
}

/* Outputs, input gradient and parameter gradients of one forward/backward, concatenated
 * (caller frees), with a step team of `threads` (PLEXUS_REC_THREADS). H = 44 makes 6 tiles of
 * 8 units (the last one short) that split unevenly; B = 20 pads to 32 lanes. */
static float *run_everything(const char *kind, const char *extra, int threads, int64_t *n)
{
	int64_t H = 44;
	int64_t B = 20, T = 3, F = 3;
	static int32_t lens[20];
	for (int b = 0; b < 20; b++)
		lens[b] = 1 + b % 3;
	char opts[128];
	snprintf(opts, sizeof opts, "hidden: %lld, bidirectional: true%s", (long long)H, extra);
	char nt[8];
	snprintf(nt, sizeof nt, "%d", threads);
	setenv("PLEXUS_REC_THREADS", nt, 1);
	struct px_layer_inst *li = make_layer(kind, opts, B, T, F, 2, H, false, 21);
	struct px_tensor *x = tensor3(li, B, T, F), *w = tensor3(li, B, T, 2 * H);
	struct px_tensor *dx = tensor3(li, B, T, F);
	fill_random(x, 1);
	fill_random(w, 2);
	x->lengths = lens;
	const struct px_tensor *in[1] = {x};
	forward_ok(li, in, true);
	const struct px_tensor *d_out[4] = {NULL, w};
	struct px_tensor *d_in[1] = {dx};
	backward_ok(li, d_out, d_in);
	ck_assert_int_eq(team_threads(), threads - 1);  /* the steps really ran on a team */
	const struct px_tensor *seq = px_layer_inst_out(li, 1);
	int64_t total = px_tensor_numel(seq) + px_tensor_numel(dx);
	for (int i = 0; i < px_layer_inst_n_params(li); i++)
		total += px_tensor_numel(px_layer_inst_param(li, i)->grad);
	float *all = malloc(sizeof(float) * (size_t)total), *p = all;
	memcpy(p, seq->data, sizeof(float) * (size_t)px_tensor_numel(seq));
	p += px_tensor_numel(seq);
	memcpy(p, dx->data, sizeof(float) * (size_t)px_tensor_numel(dx));
	p += px_tensor_numel(dx);
	for (int i = 0; i < px_layer_inst_n_params(li); i++) {
		const struct px_tensor *g = px_layer_inst_param(li, i)->grad;
		memcpy(p, g->data, sizeof(float) * (size_t)px_tensor_numel(g));
		p += px_tensor_numel(g);
	}
	px_layer_inst_free(li);
	unsetenv("PLEXUS_REC_THREADS");
	*n = total;
	return all;
}

START_TEST(test_threads_and_every_step_kernel_give_the_same_results)
{
	const char *kinds[4] = {"rnn", "lstm", "gru", "gru"};
	const char *extra[4] = {"", "", "", ", reset_after: false"};
	const char *isas[2] = {"generic", "avx2"};
	for (int k = 0; k < 4; k++) {
		int64_t n, n2;
		unsetenv("PLEXUS_REC_ISA");
		float *ref = run_everything(kinds[k], extra[k], 1, &n);
		/* threads split the units of a step: the same arithmetic, so the same bits */
		for (int t = 2; t <= 3; t++) {
			float *thr = run_everything(kinds[k], extra[k], t, &n2);
			ck_assert_int_eq(n, n2);
			ck_assert_msg(memcmp(ref, thr, sizeof(float) * (size_t)n) == 0,
				      "%s%s: %d threads differ from 1", kinds[k], extra[k], t);
			free(thr);
		}
		for (int i = 0; i < 2; i++) {  /* other kernels: rounding differs (fma or not) */
			setenv("PLEXUS_REC_ISA", isas[i], 1);
			float *alt = run_everything(kinds[k], extra[k], 1, &n2);
			double d = fixture_max_abs_diff(ref, alt, n);
			ck_assert_msg(d < 1e-4, "%s%s: %s kernel differs by %g", kinds[k], extra[k],
				      isas[i], d);
			free(alt);
		}
		unsetenv("PLEXUS_REC_ISA");
		free(ref);
	}
}
END_TEST

/* ------------------------------------------------------------------ errors and shapes */

static void expect_error(const char *kind, const char *opts, struct px_shape x, const char *want)
{
	struct px_layer_inst *li = NULL;
	struct px_error err = {0};
	int rc = px_layer_inst_new(ops_of(kind), opts, 1, &x, NULL, 1, &tp_host, &li, &err);
	ck_assert_msg(rc != 0, "%s {%s} was accepted", kind, opts);
	ck_assert_ptr_null(li);
	ck_assert_msg(strstr(err.msg, want), "%s {%s}: message '%s' lacks '%s'", kind, opts,
		      err.msg, want);
}

START_TEST(test_bad_options_and_shapes_give_clear_errors)
{
	struct px_shape seq = {3, {-1, 5, 3}};
	expect_error("lstm", "hidden: 0", seq, "'hidden' is 0, must be between 1");
	expect_error("gru", "hidden: 4, layers: -1", seq, "'layers' is -1, must be between 1");
	expect_error("rnn", "hidden: 4, readout: bogus", seq,
		     "'readout' must be sequence, last, mean or max, got 'bogus'");
	expect_error("rnn", "hidden: 4, nonlinearity: sigmoid", seq, "'nonlinearity' must be tanh or relu");
	expect_error("lstm", "layers: 2", seq, "missing required key 'hidden'");
	expect_error("lstm", "hidden: 4", (struct px_shape){2, {-1, 784}},
		     "lstm expects a sequence [B,T,F], got [B,784]");
	/* an initial state of the wrong shape names both shapes */
	struct px_shape in[2] = {seq, {3, {-1, 3, 4}}};
	struct px_layer_inst *li = NULL;
	struct px_error err = {0};
	ck_assert_int_ne(px_layer_inst_new(ops_of("gru"), "hidden: 4, layers: 2", 2, in, NULL, 1,
					   &tp_host, &li, &err), 0);
	ck_assert_msg(strstr(err.msg, "h0 must be [B,2,4]") && strstr(err.msg, "got [B,3,4]"),
		      "%s", err.msg);
	/* and at run time, an initial state whose batch differs from x's */
	li = make_layer("gru", "hidden: 4, layers: 2", 3, 5, 3, 2, 4, true, 1);
	struct px_tensor *x = tensor3(li, 3, 5, 3), *h0 = tensor3(li, 2, 2, 4);
	const struct px_tensor *run_in[2] = {x, h0};
	ck_assert_int_eq(px_layer_inst_forward(li, run_in, false, &err), PX_ERR_SHAPE);
	ck_assert_msg(strstr(err.msg, "h0 must be [3,2,4], got [2,2,4]"), "%s", err.msg);
	px_layer_inst_free(li);
}
END_TEST

START_TEST(test_output_shapes_follow_readout_and_directions)
{
	struct px_layer_inst *li = make_layer("lstm", "hidden: 4, layers: 3, bidirectional: true, "
					      "readout: mean", 2, 5, 3, 6, 4, false, 1);
	struct px_tensor *x = tensor3(li, 2, 5, 3);
	const struct px_tensor *in[1] = {x};
	forward_ok(li, in, false);
	const struct px_tensor *o = px_layer_inst_out(li, 0), *s = px_layer_inst_out(li, 1);
	const struct px_tensor *h = px_layer_inst_out(li, 2), *c = px_layer_inst_out(li, 3);
	ck_assert(o->ndim == 2 && o->shape[0] == 2 && o->shape[1] == 8);
	ck_assert(s->ndim == 3 && s->shape[1] == 5 && s->shape[2] == 8);
	ck_assert(h->ndim == 3 && h->shape[1] == 6 && h->shape[2] == 4);
	ck_assert(c->ndim == 3 && c->shape[1] == 6 && c->shape[2] == 4);
	/* PyTorch's parameter names, layer-major, forward before reverse */
	ck_assert_str_eq(px_layer_inst_param(li, 0)->name, "weight_ih_l0");
	ck_assert_str_eq(px_layer_inst_param(li, 4)->name, "weight_ih_l0_reverse");
	ck_assert_str_eq(px_layer_inst_param(li, 11)->name, "bias_hh_l1");
	ck_assert_str_eq(px_layer_inst_param(li, 15)->name, "bias_hh_l1_reverse");
	ck_assert_int_eq(param_named(li, "weight_ih_l1")->value->shape[1], 8);
	px_layer_inst_free(li);
}
END_TEST

START_TEST(test_init_is_uniform_in_one_over_sqrt_hidden_and_forget_bias_is_added)
{
	struct px_layer_inst *li = make_layer("lstm", "hidden: 16, forget_bias: 1", 2, 3, 3, 1, 16,
					      false, 1);
	double lim = 1.0 / 4.0, worst = 0, mean_f = 0;
	for (int i = 0; i < px_layer_inst_n_params(li); i++) {
		struct px_param *p = px_layer_inst_param(li, i);
		bool bih = !strcmp(p->name, "bias_ih_l0");
		for (int64_t k = 0; k < px_tensor_numel(p->value); k++) {
			double v = p->value->data[k];
			if (bih && k >= 16 && k < 32) {
				mean_f += v / 16;
				v -= 1;
			}
			worst = fmax(worst, fabs(v));
		}
	}
	ck_assert_double_le(worst, lim);
	ck_assert_double_gt(worst, 0.8 * lim);
	ck_assert_double_gt(mean_f, 0.75);
	px_layer_inst_free(li);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("recurrent");
	TCase *tc = tcase_create("recurrent");
	tcase_add_test(tc, test_rnn_matches_pytorch_outputs_states_and_all_gradients);
	tcase_add_test(tc, test_lstm_matches_pytorch_outputs_states_and_all_gradients);
	tcase_add_test(tc, test_gru_matches_pytorch_outputs_states_and_all_gradients);
	tcase_add_test(tc, test_rnn_grad_matches_finite_difference_ragged_stacked_bidirectional);
	tcase_add_test(tc, test_lstm_grad_matches_finite_difference_ragged_stacked_bidirectional);
	tcase_add_test(tc, test_gru_grad_matches_finite_difference_ragged_stacked_bidirectional);
	tcase_add_test(tc, test_readouts_last_mean_max_grad_matches_finite_difference);
	tcase_add_test(tc, test_dropout_between_layers_grad_matches_finite_difference_in_training);
	tcase_add_test(tc, test_gru_reset_before_matches_handwritten_reference);
	tcase_add_test(tc, test_padded_steps_get_zero_output_zero_gradient_and_never_leak);
	tcase_add_test(tc, test_readouts_last_mean_max_are_taken_over_valid_steps);
	tcase_add_test(tc, test_stateful_second_batch_starts_from_the_first_final_state);
	tcase_add_test(tc, test_tbptt_stops_gradient_at_chunk_boundaries);
	tcase_add_test(tc, test_grad_norm_report_is_the_full_gradient_of_each_state);
	tcase_add_test(tc, test_cell_steps_equal_the_layer_steps);
	tcase_add_test(tc, test_cell_grad_matches_finite_difference);
	tcase_add_test(tc, test_threads_and_every_step_kernel_give_the_same_results);
	tcase_add_test(tc, test_bad_options_and_shapes_give_clear_errors);
	tcase_add_test(tc, test_output_shapes_follow_readout_and_directions);
	tcase_add_test(tc, test_init_is_uniform_in_one_over_sqrt_hidden_and_forget_bias_is_added);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
