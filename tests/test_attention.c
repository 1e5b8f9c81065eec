/* The attention plugin: attention_pool, attention_decoder (Bahdanau, Luong dot/general/concat,
 * teacher forcing, greedy and beam-search decoding) with the real lstm and gru cells of the
 * build tree, and the dates source. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <plexus/harness.h>
#include <plexus/plugin.h>

#include "fixture.h"
#include "plugin_util.h"

static const struct px_layer_ops *pool_ops, *dec_ops;
static const struct px_source_ops *dates_ops;
static struct px_arena *arena;   /* the tests' inputs */

/* A host like the core's: finds cells in the loaded plugins; the error lists the loaded ones. */
static const struct px_cell_ops *find_cell(const struct px_host *h, const char *kind,
					   struct px_error *err)
{
	(void)h;
	char loaded[256] = "";
	size_t used = 0;
	for (int i = 0; i < tp_n; i++)
		for (const struct px_cell_ops *const *c = tp_loaded[i]->cells; c && *c; c++) {
			if (!strcmp((*c)->kind, kind))
				return *c;
			used += (size_t)snprintf(loaded + used, sizeof loaded - used, "%s%s",
						 used ? ", " : "", (*c)->kind);
		}
	px_error_set(err, PX_ERR_NOTFOUND, "unknown cell kind '%s' (loaded: %s)", kind,
		     used ? loaded : "none");
	return NULL;
}

static const struct px_host host = {
	.struct_size = sizeof(struct px_host),
	.abi_major = PX_ABI_MAJOR,
	.abi_minor = PX_ABI_MINOR,
	.version = "test",
	.find_cell = find_cell,
};

static void setup(void)
{
	if (!pool_ops) {
		pool_ops = tp_layer("attention", "attention_pool");
		dec_ops = tp_layer("attention", "attention_decoder");
		dates_ops = tp_source("attention", "dates");
		tp_plugin("lstm");   /* the real cells; rnn stays unloaded (see the error test) */
		tp_plugin("gru");
	}
	arena = px_arena_new(1 << 20);
}

static void teardown(void)
{
	px_arena_free(arena);
}

/* ------------------------------------------------------------------ helpers */
static struct px_tensor *tensor(int ndim, int64_t d0, int64_t d1, int64_t d2)
{
	int64_t shape[3] = {d0, d1, d2};
	struct px_tensor *t = px_tensor_new(arena, ndim, shape);
	ck_assert_ptr_nonnull(t);
	return t;
}

static struct px_tensor *rand_tensor(struct px_rng *r, int ndim, int64_t d0, int64_t d1,
				     int64_t d2)
{
	struct px_tensor *t = tensor(ndim, d0, d1, d2);
	px_rng_fill_uniform(r, t->data, px_tensor_numel(t), -1.0f, 1.0f);
	return t;
}

static const int32_t *lengths(int64_t n, const int32_t *v)
{
	int32_t *l = px_arena_alloc(arena, (size_t)n * sizeof *l);
	memcpy(l, v, (size_t)n * sizeof *l);
	return l;
}

/* Zero the padded steps of a [B,T,...] tensor (upstream layers leave padding at 0). */
static void zero_pad(struct px_tensor *t)
{
	int64_t per_step = px_tensor_numel(t) / (t->shape[0] * t->shape[1]);
	for (int64_t b = 0; b < t->shape[0]; b++)
		for (int64_t i = px_tensor_len(t, b); i < t->shape[1]; i++)
			memset(t->data + (b * t->shape[1] + i) * per_step, 0,
			       (size_t)per_step * sizeof(float));
}

static struct px_param *param_named(struct px_layer_inst *li, const char *name)
{
	for (int i = 0; i < px_layer_inst_n_params(li); i++)
		if (!strcmp(px_layer_inst_param(li, i)->name, name))
			return px_layer_inst_param(li, i);
	return NULL;
}

/* A decoder: targets [B,T_out] (T_out 0: unconnected), memory [B,T_in,D], init and
 * init_cell [B,slots,feat] when slots > 0 (init_cell only with `with_c`). */
static int dec_new(const char *opts, int64_t T_out, int64_t T_in, int64_t D, int64_t slots,
		   int64_t feat, bool with_c, struct px_layer_inst **li, struct px_error *err)
{
	struct px_shape in[4] = {
		{.ndim = T_out ? 2 : 0, .dim = {-1, T_out}},
		{.ndim = 3, .dim = {-1, T_in, D}},
		{.ndim = slots ? 3 : 0, .dim = {-1, slots, feat}},
		{.ndim = slots && with_c ? 3 : 0, .dim = {-1, slots, feat}},
	};
	bool ragged[4] = {true, true, false, false};
	return px_layer_inst_new(dec_ops, opts, 4, in, ragged, 42, &host, li, err);
}

/* Random target ids in [3, V) with lengths; padding 0. */
static struct px_tensor *targets(struct px_rng *r, int64_t B, int64_t T, int64_t V,
				 const int32_t *len)
{
	struct px_tensor *y = tensor(2, B, T, 0);
	y->lengths = lengths(B, len);
	for (int64_t b = 0; b < B; b++)
		for (int64_t i = 0; i < len[b]; i++)
			y->data[b * T + i] = (float)(3 + px_rng_below(r, (uint64_t)(V - 3)));
	return y;
}

/* ------------------------------------------------------------------ attention_pool */
START_TEST(test_attention_pool_grad_matches_finite_difference)
{
	struct px_rng r;
	px_rng_seed(&r, 1);
	struct px_shape in = {.ndim = 3, .dim = {-1, 5, 4}};
	bool ragged = true;
	struct px_layer_inst *li;
	struct px_error err;
	ck_assert_int_eq(px_layer_inst_new(pool_ops, "units: 6", 1, &in, &ragged, 7, &host, &li,
					   &err), 0);
	struct px_tensor *x = rand_tensor(&r, 3, 3, 5, 4);
	x->lengths = lengths(3, (int32_t[]){5, 2, 3});
	zero_pad(x);
	const struct px_tensor *ins[1] = {x};
	struct px_gradcheck_opts o;
	struct px_gradcheck_result res;
	px_gradcheck_defaults(&o);
	ck_assert_int_eq(px_gradcheck_layer(li, ins, &o, &res, &err), 0);
	ck_assert_msg(res.failed == 0, "%lld of %lld failed, worst %s", (long long)res.failed,
		      (long long)res.checked, res.worst);
	ck_assert_int_eq(res.checked, 60 + 24 + 6 + 6);
	px_layer_inst_free(li);
}
END_TEST

START_TEST(test_attention_pool_weights_are_zero_on_padding_and_sum_to_one)
{
	struct px_rng r;
	px_rng_seed(&r, 2);
	struct px_shape in = {.ndim = 3, .dim = {-1, 6, 3}};
	struct px_layer_inst *li;
	struct px_error err;
	ck_assert_int_eq(px_layer_inst_new(pool_ops, "", 1, &in, NULL, 7, &host, &li, &err), 0);
	struct px_tensor *x = rand_tensor(&r, 3, 4, 6, 3);
	const int32_t len[4] = {6, 1, 3, 0};
	x->lengths = lengths(4, len);
	/* garbage in the padding must not leak into the output */
	for (int64_t b = 0; b < 4; b++)
		for (int64_t i = len[b]; i < 6; i++)
			for (int k = 0; k < 3; k++)
				x->data[(b * 6 + i) * 3 + k] = 1e3f;
	const struct px_tensor *ins[1] = {x};
	ck_assert_int_eq(px_layer_inst_forward(li, ins, false, &err), 0);
	const struct px_tensor *c = px_layer_inst_out(li, 0), *w = px_layer_inst_out(li, 1);
	ck_assert_int_eq(w->shape[1], 6);
	for (int64_t b = 0; b < 4; b++) {
		double s = 0, ref[3] = {0, 0, 0};
		for (int64_t i = 0; i < 6; i++) {
			float a = w->data[b * 6 + i];
			if (i >= len[b])
				ck_assert_msg(a == 0.0f, "weight on padded step %lld of %lld: %g",
					      (long long)i, (long long)b, (double)a);
			ck_assert(a >= 0.0f);
			s += a;
			for (int k = 0; k < 3; k++)
				ref[k] += (double)a * x->data[(b * 6 + i) * 3 + k];
		}
		ck_assert_double_eq_tol(s, len[b] ? 1.0 : 0.0, 1e-6);
		for (int k = 0; k < 3; k++)
			ck_assert_double_eq_tol(c->data[b * 3 + k], ref[k], 1e-5);
	}
	px_layer_inst_free(li);
}
END_TEST

/* ------------------------------------------------------------------ against PyTorch */
/* The options a fixture was generated with: its first line, "# <kind> <options>". */
static void fixture_options(const char *rel, char *buf, size_t n)
{
	char path[1024], line[512] = "";
	const char *src = getenv("PLEXUS_SRC");
	snprintf(path, sizeof path, "%s/tests/fixtures/%s", src ? src : ".", rel);
	FILE *f = fopen(path, "r");
	ck_assert_msg(f != NULL, "cannot open %s", path);
	ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
	fclose(f);
	line[strcspn(line, "\n")] = 0;
	const char *o = strchr(line + 2, ' ');
	snprintf(buf, n, "%s", o ? o + 1 : "");
}

static struct fixture_tensor *fx_get(struct fixture *fx, const char *name)
{
	struct fixture_tensor *t = fixture_get(fx, name);
	ck_assert_msg(t != NULL, "fixture tensor '%s' missing", name);
	return t;
}

/* An arena tensor holding a fixture tensor (lengths from "<name>_len" when present). */
static struct px_tensor *fx_tensor(struct fixture *fx, const char *name)
{
	struct fixture_tensor *ft = fx_get(fx, name);
	struct px_tensor *t = px_tensor_new(arena, ft->ndim, ft->shape);
	ck_assert_ptr_nonnull(t);
	memcpy(t->data, ft->data, (size_t)ft->numel * sizeof(float));
	char ln[160];
	snprintf(ln, sizeof ln, "%s_len", name);
	for (int i = 0; i < fx->n; i++)
		if (!strcmp(fx->t[i].name, ln)) {
			int32_t *l = px_arena_alloc(arena, (size_t)fx->t[i].numel * sizeof *l);
			for (int64_t b = 0; b < fx->t[i].numel; b++)
				l[b] = (int32_t)fx->t[i].data[b];
			t->lengths = l;
		}
	return t;
}

static bool fx_has(struct fixture *fx, const char *name)
{
	for (int i = 0; i < fx->n; i++)
		if (!strcmp(fx->t[i].name, name))
			return true;
	return false;
}

/* Copy every parameter of li from the fixture, by name; the fixture has no others. */
static void fx_load_params(struct fixture *fx, struct px_layer_inst *li, const char *const *inputs)
{
	for (int p = 0; p < px_layer_inst_n_params(li); p++) {
		struct px_param *prm = px_layer_inst_param(li, p);
		struct fixture_tensor *ft = fx_get(fx, prm->name);
		ck_assert_int_eq(ft->numel, px_tensor_numel(prm->value));
		memcpy(prm->value->data, ft->data, (size_t)ft->numel * sizeof(float));
	}
	for (int i = 0; i < fx->n; i++) {
		const char *n = fx->t[i].name;
		if (strncmp(n, "grad_", 5))
			continue;
		bool input = false;
		for (const char *const *in = inputs; *in; in++)
			input |= !strcmp(n + 5, *in);
		ck_assert_msg(input || param_named(li, n + 5), "PyTorch has '%s', the layer does not",
			      n + 5);
	}
}

/* max |a - ref| / max(1, max |ref|) */
static double rel_err(const float *a, const struct fixture_tensor *ref)
{
	double scale = 1.0;
	for (int64_t i = 0; i < ref->numel; i++)
		scale = fabs(ref->data[i]) > scale ? fabs(ref->data[i]) : scale;
	return fixture_max_abs_diff(a, ref->data, ref->numel) / scale;
}

START_TEST(test_attention_pool_matches_pytorch)
{
	struct fixture *fx = fixture_load("attention/pool.txt");
	ck_assert_ptr_nonnull(fx);
	char opts[256];
	fixture_options("attention/pool.txt", opts, sizeof opts);
	struct px_tensor *x = fx_tensor(fx, "x");
	struct px_shape in = {.ndim = 3, .dim = {-1, x->shape[1], x->shape[2]}};
	bool ragged = true;
	struct px_layer_inst *li;
	struct px_error err;
	ck_assert_int_eq(px_layer_inst_new(pool_ops, opts, 1, &in, &ragged, 1, &host, &li, &err), 0);
	static const char *const inputs[] = {"x", NULL};
	fx_load_params(fx, li, inputs);
	const struct px_tensor *ins[1] = {x};
	ck_assert_int_eq(px_layer_inst_forward(li, ins, true, &err), 0);
	double e_out = rel_err(px_layer_inst_out(li, 0)->data, fx_get(fx, "out"));
	double e_w = rel_err(px_layer_inst_out(li, 1)->data, fx_get(fx, "weights"));
	struct px_tensor *dx = px_tensor_like(arena, x);
	const struct px_tensor *dout[2] = {fx_tensor(fx, "w_out"), fx_tensor(fx, "w_weights")};
	struct px_tensor *din[1] = {dx};
	ck_assert_int_eq(px_layer_inst_backward(li, dout, din, &err), 0);
	double e_g = rel_err(dx->data, fx_get(fx, "grad_x"));
	for (int p = 0; p < px_layer_inst_n_params(li); p++) {
		struct px_param *prm = px_layer_inst_param(li, p);
		char gn[160];
		snprintf(gn, sizeof gn, "grad_%s", prm->name);
		double e = rel_err(prm->grad->data, fx_get(fx, gn));
		e_g = e > e_g ? e : e_g;
	}
	printf("attention_pool vs PyTorch: out %.2g, weights %.2g, grads %.2g\n", e_out, e_w, e_g);
	ck_assert(e_out < 1e-5 && e_w < 1e-5 && e_g < 1e-5);
	px_layer_inst_free(li);
	fixture_free(fx);
}
END_TEST

static const char *const torch_cases[] = {
	"luong_general_feed_lstm_bi", "luong_dot_lstm", "luong_concat_feed_gru", "bahdanau_gru",
	"bahdanau_lstm_bi",
};

START_TEST(test_decoder_matches_pytorch)
{
	char rel[128], opts[512];
	snprintf(rel, sizeof rel, "attention/%s.txt", torch_cases[_i]);
	struct fixture *fx = fixture_load(rel);
	ck_assert_ptr_nonnull(fx);
	fixture_options(rel, opts, sizeof opts);
	struct px_tensor *y = fx_tensor(fx, "targets"), *mem = fx_tensor(fx, "memory");
	struct px_tensor *init = fx_has(fx, "init") ? fx_tensor(fx, "init") : NULL;
	struct px_tensor *initc = fx_has(fx, "init_cell") ? fx_tensor(fx, "init_cell") : NULL;
	struct px_layer_inst *li;
	struct px_error err;
	ck_assert_msg(dec_new(opts, y->shape[1], mem->shape[1], mem->shape[2],
			      init ? init->shape[1] : 0, init ? init->shape[2] : 0, initc != NULL,
			      &li, &err) == 0, "%s", err.msg);
	static const char *const inputs[] = {"memory", "init", "init_cell", NULL};
	fx_load_params(fx, li, inputs);
	const struct px_tensor *ins[4] = {y, mem, init, initc};
	ck_assert_int_eq(px_layer_inst_forward(li, ins, true, &err), 0);
	double e_out = rel_err(px_layer_inst_out(li, 0)->data, fx_get(fx, "out"));
	double e_w = rel_err(px_layer_inst_out(li, 1)->data, fx_get(fx, "weights"));
	struct px_tensor *din[4] = {NULL, px_tensor_like(arena, mem),
				    init ? px_tensor_like(arena, init) : NULL,
				    initc ? px_tensor_like(arena, initc) : NULL};
	const struct px_tensor *dout[3] = {fx_tensor(fx, "w_out"), fx_tensor(fx, "w_weights"), NULL};
	ck_assert_int_eq(px_layer_inst_backward(li, dout, din, &err), 0);
	double e_g = 0;
	const char *worst = "";
	for (int k = 1; k < 4; k++) {
		if (!din[k])
			continue;
		char gn[64];
		snprintf(gn, sizeof gn, "grad_%s", inputs[k - 1]);
		double e = rel_err(din[k]->data, fx_get(fx, gn));
		if (e >= e_g) {
			e_g = e;
			worst = inputs[k - 1];
		}
	}
	for (int p = 0; p < px_layer_inst_n_params(li); p++) {
		struct px_param *prm = px_layer_inst_param(li, p);
		char gn[160];
		snprintf(gn, sizeof gn, "grad_%s", prm->name);
		double e = rel_err(prm->grad->data, fx_get(fx, gn));
		if (e >= e_g) {
			e_g = e;
			worst = prm->name;
		}
	}
	/* greedy decoding (targets NULL) decodes what PyTorch decodes */
	ins[0] = NULL;
	ck_assert_int_eq(px_layer_inst_forward(li, ins, false, &err), 0);
	const struct px_tensor *tok = px_layer_inst_out(li, 2);
	struct fixture_tensor *gt = fx_get(fx, "greedy_tokens"), *gl = fx_get(fx, "greedy_len");
	ck_assert_int_eq(px_tensor_numel(tok), gt->numel);
	for (int64_t b = 0; b < gl->numel; b++)
		ck_assert_int_eq(tok->lengths[b], (int32_t)gl->data[b]);
	for (int64_t i = 0; i < gt->numel; i++)
		ck_assert_msg(tok->data[i] == gt->data[i], "%s: greedy token %lld: %g, PyTorch %g",
			      torch_cases[_i], (long long)i, (double)tok->data[i], (double)gt->data[i]);
	printf("%s vs PyTorch: logits %.2g, weights %.2g, grads %.2g (worst %s)\n", torch_cases[_i],
	       e_out, e_w, e_g, worst);
	ck_assert_msg(e_out < 1e-5 && e_w < 1e-5 && e_g < 1e-5,
		      "%s: logits %g weights %g grads %g (worst %s)", torch_cases[_i], e_out, e_w, e_g,
		      worst);
	px_layer_inst_free(li);
	fixture_free(fx);
}
END_TEST

/* ------------------------------------------------------------------ decoder gradients */
struct grad_case {
	const char *opts;
	int64_t D;          /* memory features (H is 4) */
	int64_t slots, feat;  /* init [B,slots,feat]; 0: unconnected */
	bool with_c;        /* init_cell too (lstm) */
};

static const struct grad_case grad_cases[] = {
	{"attention: bahdanau, cell: lstm", 4, 1, 4, true},
	{"attention: bahdanau, cell: gru, attn_units: 3", 4, 2, 4, false},
	{"attention: luong, score: dot, cell: lstm", 4, 1, 4, true},
	{"attention: luong, score: dot, cell: gru, input_feeding: true", 4, 1, 4, false},
	{"attention: luong, score: general, cell: lstm, input_feeding: true", 4, 2, 4, true},
	{"attention: luong, score: general, cell: gru", 4, 0, 0, false},
	{"attention: luong, score: concat, cell: lstm", 4, 1, 4, false},
	{"attention: luong, score: concat, cell: gru, input_feeding: true, attn_units: 5", 4, 1, 4,
	 false},
	/* a bidirectional encoder: memory 2x3 features, init [B,2 layers*2 dirs,3] -> bridge */
	{"attention: luong, score: general, cell: lstm, input_feeding: true", 6, 4, 3, true},
	{"attention: bahdanau, cell: gru", 6, 2, 3, false},
};

START_TEST(test_decoder_grad_matches_finite_difference)
{
	const struct grad_case *gc = &grad_cases[_i];
	char opts[256];
	snprintf(opts, sizeof opts, "%s, hidden: 4, vocab: 6, embed: 3", gc->opts);
	struct px_layer_inst *li;
	struct px_error err;
	ck_assert_msg(dec_new(opts, 3, 4, gc->D, gc->slots, gc->feat, gc->with_c, &li, &err) == 0,
		      "%s: %s", opts, err.msg);
	struct px_rng r;
	px_rng_seed(&r, 100 + (uint64_t)_i);
	const struct px_tensor *ins[4] = {0};
	ins[0] = targets(&r, 3, 3, 6, (int32_t[]){3, 1, 2});
	struct px_tensor *mem = rand_tensor(&r, 3, 3, 4, gc->D);
	mem->lengths = lengths(3, (int32_t[]){4, 2, 3});
	zero_pad(mem);
	ins[1] = mem;
	if (gc->slots) {
		ins[2] = rand_tensor(&r, 3, 3, gc->slots, gc->feat);
		if (gc->with_c)
			ins[3] = rand_tensor(&r, 3, 3, gc->slots, gc->feat);
	}
	if (gc->D == 6)   /* the bridge exists */
		ck_assert_ptr_nonnull(param_named(li, "bridge.weight"));
	struct px_gradcheck_opts o;
	struct px_gradcheck_result res;
	px_gradcheck_defaults(&o);
	o.max_per_tensor = 24;
	ck_assert_msg(px_gradcheck_layer(li, ins, &o, &res, &err) == 0, "%s", err.msg);
	ck_assert_msg(res.failed == 0, "%s: %lld of %lld failed, max abs err %g, worst %s", opts,
		      (long long)res.failed, (long long)res.checked, res.max_abs_err, res.worst);
	ck_assert_int_gt(res.checked, 100);
	px_layer_inst_free(li);
}
END_TEST

/* ------------------------------------------------------------------ masking */
static void check_alignment(const struct px_tensor *w, const int32_t *mlen,
			    const int32_t *olen)
{
	int64_t B = w->shape[0], T = w->shape[1], TI = w->shape[2];
	for (int64_t b = 0; b < B; b++)
		for (int64_t i = 0; i < T; i++) {
			double s = 0;
			for (int64_t j = 0; j < TI; j++) {
				float a = w->data[(b * T + i) * TI + j];
				if (j >= mlen[b] || i >= olen[b])
					ck_assert_msg(a == 0.0f, "weight [%lld,%lld,%lld] = %g is padding",
						      (long long)b, (long long)i, (long long)j, (double)a);
				s += a;
			}
			if (i < olen[b])
				ck_assert_msg(fabs(s - 1.0) <= 1e-6, "row [%lld,%lld] sums to %.9g",
					      (long long)b, (long long)i, s);
		}
}

START_TEST(test_decoder_weights_are_zero_on_padding_and_rows_sum_to_one)
{
	static const char *const opts[] = {
		"attention: bahdanau, hidden: 6, vocab: 7",
		"attention: luong, score: dot, hidden: 5, vocab: 7, input_feeding: true",
		"attention: luong, score: concat, cell: gru, hidden: 6, vocab: 7",
	};
	for (int k = 0; k < 3; k++) {
		struct px_layer_inst *li;
		struct px_error err;
		int64_t D = k == 1 ? 5 : 3;
		ck_assert_msg(dec_new(opts[k], 4, 5, D, 0, 0, false, &li, &err) == 0, "%s", err.msg);
		struct px_rng r;
		px_rng_seed(&r, 9);
		const int32_t mlen[4] = {5, 1, 3, 4}, tlen[4] = {4, 2, 1, 3};
		struct px_tensor *mem = rand_tensor(&r, 3, 4, 5, D);
		mem->lengths = lengths(4, mlen);
		for (int64_t i = 0; i < 4 * 5 * D; i++)   /* garbage in the padding */
			if ((i / D) % 5 >= mlen[i / (5 * D)])
				mem->data[i] = 1e4f;
		const struct px_tensor *ins[4] = {targets(&r, 4, 4, 7, tlen), mem, NULL, NULL};
		ck_assert_int_eq(px_layer_inst_forward(li, ins, true, &err), 0);
		check_alignment(px_layer_inst_out(li, 1), mlen, tlen);
		const struct px_tensor *lg = px_layer_inst_out(li, 0);
		ck_assert_ptr_eq(lg->lengths, ins[0]->lengths);
		for (int64_t b = 0; b < 4; b++)
			for (int64_t i = 0; i < 4 * 7; i++) {
				float v = lg->data[b * 4 * 7 + i];
				ck_assert(isfinite(v));
				if (i / 7 >= tlen[b])
					ck_assert(v == 0.0f);
			}
		/* free-running: rows past each decoded length are zero too */
		ins[0] = NULL;
		ck_assert_int_eq(px_layer_inst_forward(li, ins, false, &err), 0);
		const struct px_tensor *tok = px_layer_inst_out(li, 2);
		ck_assert_int_eq(tok->shape[1], 32);
		check_alignment(px_layer_inst_out(li, 1), mlen, tok->lengths);
		px_layer_inst_free(li);
	}
}
END_TEST

/* ------------------------------------------------------------------ decoding */
/* sum_i log softmax(logits_i)[tok_i] / ((5+len)/6)^alpha of example b */
static double hyp_score(const struct px_tensor *logits, const struct px_tensor *tok, int64_t b,
			double alpha)
{
	int64_t T = logits->shape[1], V = logits->shape[2], len = tok->lengths[b];
	double s = 0;
	for (int64_t i = 0; i < len; i++) {
		const float *l = logits->data + (b * T + i) * V;
		double m = l[0], z = 0;
		for (int64_t v = 1; v < V; v++)
			m = l[v] > m ? l[v] : m;
		for (int64_t v = 0; v < V; v++)
			z += exp(l[v] - m);
		s += l[(int64_t)tok->data[b * T + i]] - m - log(z);
	}
	return s / pow((5.0 + (double)len) / 6.0, alpha);
}

/* Free-running decode of a random model: B examples, memory [B,5,6]. */
static struct px_layer_inst *decode(const char *opts, int64_t B, struct px_error *err)
{
	struct px_layer_inst *li;
	bool lstm = !strstr(opts, "cell: gru");
	ck_assert_msg(dec_new(opts, 0, 5, 6, 2, 6, lstm, &li, err) == 0, "%s", err->msg);
	struct px_rng r;
	px_rng_seed(&r, 77);
	struct px_tensor *mem = rand_tensor(&r, 3, B, 5, 6);
	int32_t len[64];
	for (int64_t b = 0; b < B; b++)
		len[b] = (int32_t)(1 + b % 5);
	mem->lengths = lengths(B, len);
	zero_pad(mem);
	const struct px_tensor *ins[4] = {NULL, mem, rand_tensor(&r, 3, B, 2, 6),
					  lstm ? rand_tensor(&r, 3, B, 2, 6) : NULL};
	ck_assert_msg(px_layer_inst_forward(li, ins, false, err) == 0, "%s", err->msg);
	return li;
}

START_TEST(test_greedy_decode_equals_beam_search_with_one_beam)
{
	static const char *const base[] = {
		"attention: luong, score: general, hidden: 6, vocab: 9, max_len: 12, input_feeding: true",
		"attention: bahdanau, cell: gru, hidden: 6, vocab: 9, max_len: 12",
	};
	for (int k = 0; k < 2; k++) {
		char o1[256], o2[256];
		snprintf(o1, sizeof o1, "%s", base[k]);
		snprintf(o2, sizeof o2, "%s, search: beam", base[k]);
		struct px_error err;
		struct px_layer_inst *g = decode(o1, 40, &err), *bm = decode(o2, 40, &err);
		const struct px_tensor *tg = px_layer_inst_out(g, 2), *tb = px_layer_inst_out(bm, 2);
		int lengths_seen = 0;
		for (int64_t b = 0; b < 40; b++) {
			ck_assert_int_eq(tg->lengths[b], tb->lengths[b]);
			lengths_seen |= 1 << (tg->lengths[b] == 12);
			for (int64_t i = 0; i < 12; i++)
				ck_assert_msg(tg->data[b * 12 + i] == tb->data[b * 12 + i],
					      "example %lld step %lld: greedy %g, beam %g", (long long)b,
					      (long long)i, (double)tg->data[b * 12 + i],
					      (double)tb->data[b * 12 + i]);
		}
		ck_assert_int_eq(lengths_seen, 3);   /* some stopped at <eos>, some at max_len */
		px_layer_inst_free(g);
		px_layer_inst_free(bm);
	}
}
END_TEST

START_TEST(test_beam_search_never_scores_below_greedy)
{
	static const char *const base[] = {
		"attention: luong, score: concat, hidden: 6, vocab: 9, max_len: 10",
		"attention: bahdanau, hidden: 6, vocab: 9, max_len: 10, length_norm: 0",
		"attention: luong, score: dot, cell: gru, hidden: 6, vocab: 9, max_len: 10, "
		"length_norm: 1.0",
	};
	for (int k = 0; k < 3; k++) {
		char o2[256];
		snprintf(o2, sizeof o2, "%s, beam: 4", base[k]);
		double alpha = k == 0 ? 0.6 : k == 1 ? 0.0 : 1.0;
		struct px_error err;
		struct px_layer_inst *g = decode(base[k], 48, &err), *bm = decode(o2, 48, &err);
		int better = 0;
		for (int64_t b = 0; b < 48; b++) {
			double sg = hyp_score(px_layer_inst_out(g, 0), px_layer_inst_out(g, 2), b, alpha);
			double sb = hyp_score(px_layer_inst_out(bm, 0), px_layer_inst_out(bm, 2), b, alpha);
			ck_assert_msg(sb >= sg - 1e-5, "%s example %lld: beam %.6f < greedy %.6f", o2,
				      (long long)b, sb, sg);
			better += sb > sg + 1e-4;
		}
		ck_assert_msg(better > 0, "%s: beam search never beat greedy", o2);
		px_layer_inst_free(g);
		px_layer_inst_free(bm);
	}
}
END_TEST

START_TEST(test_free_running_decoding_stops_at_eos)
{
	const char *opts = "attention: luong, hidden: 6, vocab: 9, max_len: 10, eos: 2";
	for (int beam = 1; beam <= 3; beam += 2) {
		char o[256];
		snprintf(o, sizeof o, "%s, beam: %d", opts, beam);
		struct px_layer_inst *li;
		struct px_error err;
		ck_assert_int_eq(dec_new(o, 0, 5, 6, 2, 6, true, &li, &err), 0);
		struct px_param *bias = param_named(li, "out.bias");
		ck_assert_ptr_nonnull(bias);
		struct px_rng r;
		px_rng_seed(&r, 5);
		struct px_tensor *mem = rand_tensor(&r, 3, 30, 5, 6);
		const struct px_tensor *ins[4] = {NULL, mem, rand_tensor(&r, 3, 30, 2, 6),
						  rand_tensor(&r, 3, 30, 2, 6)};
		/* raise the <eos> logit step by step: rows stop at <eos>, never past or before it */
		int midway = 0;
		for (int k = 0; k < 12; k++, bias->value->data[2] += 0.125f) {
			ck_assert_int_eq(px_layer_inst_forward(li, ins, false, &err), 0);
			const struct px_tensor *tok = px_layer_inst_out(li, 2);
			const struct px_tensor *lg = px_layer_inst_out(li, 0);
			for (int64_t b = 0; b < 30; b++) {
				int64_t len = tok->lengths[b];
				ck_assert(len >= 1 && len <= 10);
				for (int64_t i = 0; i < 10; i++) {
					float t = tok->data[b * 10 + i];
					if (i < len - 1)
						ck_assert_msg(t != 2.0f, "<eos> inside example %lld", (long long)b);
					if (i >= len)
						ck_assert(t == 0.0f && lg->data[(b * 10 + i) * 9] == 0.0f);
				}
				if (len < 10)
					ck_assert_msg(tok->data[b * 10 + len - 1] == 2.0f,
						      "example %lld stopped at %lld without <eos>", (long long)b,
						      (long long)len);
				midway += len > 1 && len < 10;
			}
		}
		ck_assert_msg(midway > 0, "beam %d: no example stopped after a few steps", beam);
		bias->value->data[2] += 100.0f;   /* <eos> first everywhere */
		ck_assert_int_eq(px_layer_inst_forward(li, ins, false, &err), 0);
		const struct px_tensor *tok = px_layer_inst_out(li, 2);
		for (int64_t b = 0; b < 30; b++) {
			ck_assert_int_eq(tok->lengths[b], 1);
			ck_assert(tok->data[b * 10] == 2.0f);
		}
		/* decoding has no backward */
		ck_assert_int_eq(px_layer_inst_backward(li, (const struct px_tensor *[3]){0}, NULL, &err),
				 PX_ERR_UNSUPPORTED);
		px_layer_inst_free(li);
	}
}
END_TEST

/* ------------------------------------------------------------------ a tiny task */
/* Reverse: x = 3..5 symbols of {3,4,5}, y = reversed x + <eos>. The memory comes from a fixed random
 * "encoder" h_j = tanh(R[x_j] + P[j]); the decoder learns with Adam until greedy decoding
 * of all 351 sequences is exact. */
START_TEST(test_reverse_task_trains_to_full_accuracy)
{
	enum { TI = 5, TO = 6, D = 16, B = 32, N = 351 };
	struct px_layer_inst *li;
	struct px_error err;
	ck_assert_int_eq(dec_new("attention: luong, score: general, input_feeding: true, hidden: 32, "
				 "vocab: 6, embed: 8, max_len: 6", TO, TI, D, 0, 0, false, &li, &err), 0);
	struct px_rng r;
	px_rng_seed(&r, 3);
	float R[6][D], P[TI][D];
	px_rng_fill_uniform(&r, &R[0][0], 6 * D, -1.5f, 1.5f);
	px_rng_fill_uniform(&r, &P[0][0], TI * D, -1.5f, 1.5f);
	/* all sequences */
	static int32_t seq[N][TI], slen[N];
	int n = 0;
	for (int L = 3; L <= 5; L++)
		for (int code = 0; code < (L == 3 ? 27 : L == 4 ? 81 : 243); code++, n++) {
			slen[n] = L;
			for (int j = 0, c = code; j < L; j++, c /= 3)
				seq[n][j] = 3 + c % 3;
		}
	ck_assert_int_eq(n, N);
	struct px_tensor *mem = tensor(3, N, TI, D), *y = tensor(2, N, TO, 0);
	int32_t *ml = px_arena_alloc(arena, N * sizeof *ml);
	int32_t *yl = px_arena_alloc(arena, N * sizeof *yl);
	for (int i = 0; i < N; i++) {
		ml[i] = slen[i];
		yl[i] = slen[i] + 1;
		for (int j = 0; j < slen[i]; j++) {
			for (int k = 0; k < D; k++)
				mem->data[(i * TI + j) * D + k] = tanhf(R[seq[i][j]][k] + P[j][k]);
			y->data[i * TO + j] = (float)seq[i][slen[i] - 1 - j];
		}
		y->data[i * TO + slen[i]] = 2.0f;
	}
	mem->lengths = ml;
	y->lengths = yl;
	/* a batch: views of B random examples */
	struct px_tensor *bm = tensor(3, B, TI, D), *by = tensor(2, B, TO, 0);
	int32_t *bml = px_arena_alloc(arena, B * sizeof *bml);
	int32_t *byl = px_arena_alloc(arena, B * sizeof *byl);
	bm->lengths = bml;
	by->lengths = byl;
	struct px_tensor *dl = tensor(3, B, TO, 6);
	/* Adam state */
	int np = px_layer_inst_n_params(li);
	float *mom[64], *vel[64];
	ck_assert_int_le(np, 64);
	for (int p = 0; p < np; p++) {
		int64_t cnt = px_tensor_numel(px_layer_inst_param(li, p)->value);
		mom[p] = px_arena_zalloc(arena, (size_t)cnt * sizeof(float));
		vel[p] = px_arena_zalloc(arena, (size_t)cnt * sizeof(float));
	}
	double acc = 0;
	int step;
	for (step = 1; step <= 3000 && acc < 1.0; step++) {
		for (int b = 0; b < B; b++) {
			int i = (int)px_rng_below(&r, N);
			memcpy(bm->data + b * TI * D, mem->data + i * TI * D, TI * D * sizeof(float));
			memcpy(by->data + b * TO, y->data + i * TO, TO * sizeof(float));
			bml[b] = ml[i];
			byl[b] = yl[i];
		}
		const struct px_tensor *ins[4] = {by, bm, NULL, NULL};
		ck_assert_int_eq(px_layer_inst_forward(li, ins, true, &err), 0);
		/* mean cross-entropy over valid tokens: d logits = (softmax - onehot) / count */
		const struct px_tensor *lg = px_layer_inst_out(li, 0);
		memset(dl->data, 0, sizeof(float) * B * TO * 6);
		double count = 0;
		for (int b = 0; b < B; b++)
			count += byl[b];
		for (int b = 0; b < B; b++)
			for (int i = 0; i < byl[b]; i++) {
				const float *l = lg->data + (b * TO + i) * 6;
				float *d = dl->data + (b * TO + i) * 6;
				float m = l[0];
				for (int v = 1; v < 6; v++)
					m = l[v] > m ? l[v] : m;
				double z = 0;
				for (int v = 0; v < 6; v++)
					z += exp(l[v] - m);
				int want = (int)by->data[b * TO + i];
				for (int v = 0; v < 6; v++)
					d[v] = (float)((exp(l[v] - m) / z - (v == want)) / count);
			}
		const struct px_tensor *dout[3] = {dl, NULL, NULL};
		ck_assert_int_eq(px_layer_inst_backward(li, dout, NULL, &err), 0);
		for (int p = 0; p < np; p++) {   /* Adam, lr 1e-2 */
			struct px_param *prm = px_layer_inst_param(li, p);
			int64_t cnt = px_tensor_numel(prm->value);
			double c1 = 1 - pow(0.9, step), c2 = 1 - pow(0.999, step);
			for (int64_t k = 0; k < cnt; k++) {
				float g = prm->grad->data[k];
				mom[p][k] = 0.9f * mom[p][k] + 0.1f * g;
				vel[p][k] = 0.999f * vel[p][k] + 0.001f * g * g;
				prm->value->data[k] -= (float)(1e-2 * (mom[p][k] / c1) /
							       (sqrt(vel[p][k] / c2) + 1e-8));
			}
		}
		if (step % 50)
			continue;
		const struct px_tensor *eval[4] = {NULL, mem, NULL, NULL};   /* greedy decoding */
		ck_assert_int_eq(px_layer_inst_forward(li, eval, false, &err), 0);
		const struct px_tensor *tok = px_layer_inst_out(li, 2);
		int exact = 0;
		for (int i = 0; i < N; i++) {
			bool ok = tok->lengths[i] == yl[i];
			for (int j = 0; ok && j < yl[i]; j++)
				ok = tok->data[i * TO + j] == y->data[i * TO + j];
			exact += ok;
		}
		acc = (double)exact / N;
	}
	ck_assert_msg(acc == 1.0, "exact match %.3f after %d steps", acc, step - 1);
	px_layer_inst_free(li);
}
END_TEST

/* ------------------------------------------------------------------ errors */
START_TEST(test_decoder_errors_are_clear)
{
	struct px_layer_inst *li = NULL;
	struct px_error err;
	struct px_shape in[4] = {{.ndim = 2, .dim = {-1, 3}}, {.ndim = 2, .dim = {-1, 8}}};
	ck_assert_int_eq(px_layer_inst_new(dec_ops, "hidden: 4, vocab: 6", 4, in, NULL, 1, &host,
					   &li, &err), PX_ERR_SHAPE);
	ck_assert_msg(strstr(err.msg, "'memory' must be a sequence [B,T,F]") &&
		      strstr(err.msg, "[B,8]"), "%s", err.msg);

	ck_assert_int_eq(dec_new("hidden: 4, vocab: 6, cell: rnn", 3, 4, 4, 0, 0, false, &li, &err),
			 PX_ERR_NOTFOUND);
	ck_assert_msg(strstr(err.msg, "cell 'rnn'") && strstr(err.msg, "loaded: lstm, gru"), "%s",
		      err.msg);

	ck_assert_int_eq(dec_new("hidden: 4, vocab: 6, score: cosine", 3, 4, 4, 0, 0, false, &li,
				 &err), PX_ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "'score' must be") && strstr(err.msg, "dot") &&
		      strstr(err.msg, "concat") && strstr(err.msg, "cosine"), "%s", err.msg);

	ck_assert_int_eq(dec_new("hidden: 4, vocab: 6, score: dot", 3, 4, 6, 0, 0, false, &li, &err),
			 PX_ERR_SHAPE);
	ck_assert_msg(strstr(err.msg, "'dot' needs memory features (6) == hidden (4)"), "%s",
		      err.msg);

	ck_assert_int_eq(dec_new("hidden: 4, vocab: 6, cell: gru", 3, 4, 4, 1, 4, true, &li, &err),
			 PX_ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "init_cell") && strstr(err.msg, "lstm"), "%s", err.msg);

	ck_assert_int_eq(dec_new("hidden: 4, vocab: 6, attention: bahdanau, score: dot", 3, 4, 4, 0,
				 0, false, &li, &err), PX_ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "luong"), "%s", err.msg);

	/* a target id outside the vocabulary is refused at forward */
	ck_assert_int_eq(dec_new("hidden: 4, vocab: 6", 2, 4, 4, 0, 0, false, &li, &err), 0);
	struct px_rng r;
	px_rng_seed(&r, 1);
	struct px_tensor *y = tensor(2, 1, 2, 0);
	y->data[0] = 9;
	const struct px_tensor *ins[4] = {y, rand_tensor(&r, 3, 1, 4, 4), NULL, NULL};
	ck_assert_int_eq(px_layer_inst_forward(li, ins, true, &err), PX_ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "outside the vocabulary"), "%s", err.msg);
	px_layer_inst_free(li);
}
END_TEST

/* ------------------------------------------------------------------ dates */
static const char *const months[12] = {"january", "february", "march", "april", "may", "june",
				       "july", "august", "september", "october", "november",
				       "december"};
static const char *const wdays[7] = {"monday", "tuesday", "wednesday", "thursday", "friday",
				     "saturday", "sunday"};

static int days_in_month(int y, int m)
{
	static const int dm[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
	return m == 2 && leap ? 29 : dm[m - 1];
}

/* 0 = monday (Sakamoto's method) */
static int weekday(int y, int m, int d)
{
	static const int t[12] = {0, 3, 2, 5, 0, 3, 5, 1, 4, 6, 2, 4};
	y -= m < 3;
	int w = (y + y / 4 - y / 100 + y / 400 + t[m - 1] + d) % 7;   /* 0 = sunday */
	return (w + 6) % 7;
}

static int full_year(const char *s)
{
	int v = atoi(s);
	return strlen(s) == 4 ? v : v >= 50 ? 1900 + v : 2000 + v;
}

/* Read a human-written date the way a person would; false when it is not one. */
static bool parse_date(const char *src, int *y, int *m, int *d)
{
	char s[64], *save = NULL;
	snprintf(s, sizeof s, "%s", src);
	for (char *p = s; *p; p++)
		*p = (char)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
	int wd = -1, nums = 0;
	char num[3][8];
	*y = *m = *d = 0;
	for (char *w = strtok_r(s, " ,", &save); w; w = strtok_r(NULL, " ,", &save)) {
		size_t n = strlen(w);
		if (!strcmp(w, "the") || !strcmp(w, "of"))
			continue;
		bool named = false;
		for (int k = 0; k < 12; k++)
			if (!strcmp(w, months[k]) || (n == 3 && !strncmp(w, months[k], 3))) {
				*m = k + 1;
				named = true;
			}
		for (int k = 0; k < 7; k++)
			if (!strcmp(w, wdays[k]) || (n == 3 && !strncmp(w, wdays[k], 3))) {
				wd = k;
				named = true;
			}
		if (named)
			continue;
		char sep = strchr(w, '/') ? '/' : strchr(w, '.') ? '.' : strchr(w, '-') ? '-' : 0;
		if (sep || n == 8) {   /* a numeric date */
			char p[3][8] = {"", "", ""};
			if (n == 8 && !sep) {
				snprintf(p[0], 8, "%.4s", w);
				snprintf(p[1], 8, "%.2s", w + 4);
				snprintf(p[2], 8, "%.2s", w + 6);
			} else if (sscanf(w, sep == '/' ? "%7[0-9]/%7[0-9]/%7[0-9]" :
					  sep == '.' ? "%7[0-9].%7[0-9].%7[0-9]" :
					  "%7[0-9]-%7[0-9]-%7[0-9]", p[0], p[1], p[2]) != 3) {
				return false;
			}
			if (strlen(p[0]) == 4) {
				*y = atoi(p[0]);
				*m = atoi(p[1]);
				*d = atoi(p[2]);
			} else if (sep == '/' && wd < 0) {   /* US */
				*m = atoi(p[0]);
				*d = atoi(p[1]);
				*y = full_year(p[2]);
			} else {
				*d = atoi(p[0]);
				*m = atoi(p[1]);
				*y = full_year(p[2]);
			}
			continue;
		}
		if (n > 2 && (!strcmp(w + n - 2, "st") || !strcmp(w + n - 2, "nd") ||
			      !strcmp(w + n - 2, "rd") || !strcmp(w + n - 2, "th")))
			w[n - 2] = 0;
		if (strspn(w, "0123456789") != strlen(w) || nums == 2)
			return false;
		snprintf(num[nums++], 8, "%s", w);
	}
	if (nums == 2) {   /* named month: the day comes before the year */
		*d = atoi(num[0]);
		*y = full_year(num[1]);
	} else if (nums) {
		return false;
	}
	if (*m < 1 || *m > 12 || *d < 1 || *d > days_in_month(*y, *m) || *y < 1950 || *y > 2049)
		return false;
	return wd < 0 || wd == weekday(*y, *m, *d);
}

static void load_dates(const char *opts, const char *split, uint64_t seed,
		       struct px_dataset *ds)
{
	struct px_config *cfg;
	struct px_error err;
	ck_assert_msg(px_config_parse(dates_ops->schema, opts, &cfg, &err) == 0, "%s", err.msg);
	ck_assert_msg(dates_ops->load(cfg, split, seed, ds, &err) == 0, "%s", err.msg);
	px_config_free(cfg);
}

static void decode_str(char *const *vocab, const float *ids, int64_t n, char *out)
{
	out[0] = 0;
	for (int64_t t = 0; t < n; t++)
		strcat(out, vocab[(int64_t)ids[t]]);
}

START_TEST(test_dates_are_deterministic_and_targets_are_the_parsed_dates)
{
	struct px_dataset a, b, c;
	load_dates("n: 3000", "train", 7, &a);
	load_dates("n: 3000", "train", 7, &b);
	load_dates("n: 3000", "test", 7, &c);
	ck_assert_int_eq(a.n, 3000);
	ck_assert_int_eq(a.x.dim[1], b.x.dim[1]);
	ck_assert(!memcmp(a.x_data, b.x_data, sizeof(float) * 3000 * (size_t)a.x.dim[1]));
	ck_assert(!memcmp(a.y_data, b.y_data, sizeof(float) * 3000 * (size_t)a.y.dim[1]));
	ck_assert(memcmp(a.x_data, c.x_data, sizeof(float) * 3000 * (size_t)a.x.dim[1]));
	/* fixed vocabularies: the splits agree */
	ck_assert_int_eq(a.x_vocab_n, c.x_vocab_n);
	ck_assert_int_eq(a.y_vocab_n, 15);
	ck_assert_int_eq(a.n_classes, a.y_vocab_n);
	ck_assert_str_eq(a.y_vocab[2], "<eos>");
	int same = 0, formats_seen = 0, years_lo = 0, years_hi = 0;
	char seen[40][8];
	for (int64_t i = 0; i < a.n; i++) {
		char src[64], iso[32];
		ck_assert(a.x_len[i] >= 6 && a.x_len[i] <= a.x.dim[1]);
		decode_str(a.x_vocab, a.x_data + i * a.x.dim[1], a.x_len[i], src);
		ck_assert_int_eq(a.y_len[i], 11);
		ck_assert(a.y_data[i * 11 + 10] == 2.0f);   /* <eos> */
		decode_str(a.y_vocab, a.y_data + i * 11, 10, iso);
		int y, m, d;
		ck_assert_msg(parse_date(src, &y, &m, &d), "cannot read '%s'", src);
		char want[32];
		snprintf(want, sizeof want, "%04d-%02d-%02d", y, m, d);
		ck_assert_msg(!strcmp(iso, want), "'%s' -> '%s', expected '%s'", src, iso, want);
		years_lo += y < 1960;
		years_hi += y >= 2040;
		/* the shape of the format: digits -> 9, letters -> a */
		char shape[8];
		snprintf(shape, sizeof shape, "%c%c%c%c", src[0] >= 'a' ? 'a' : src[0],
			 src[1] >= 'a' ? 'a' : src[1], src[2] >= 'a' ? 'a' : src[2],
			 src[3] >= 'a' ? 'a' : src[3]);
		for (char *p = shape; *p; p++)
			*p = (char)(*p >= '0' && *p <= '9' ? '9' : *p);
		int k;
		for (k = 0; k < formats_seen && strcmp(seen[k], shape); k++)
			;
		if (k == formats_seen && k < 40)
			snprintf(seen[formats_seen++], 8, "%s", shape);
		same += !memcmp(a.x_data + i * a.x.dim[1], c.x_data + i * a.x.dim[1],
				sizeof(float) * (size_t)a.x.dim[1]);
	}
	ck_assert_int_lt(same, 10);               /* train and test differ */
	ck_assert_int_ge(formats_seen, 8);        /* many formats */
	ck_assert(years_lo > 150 && years_hi > 150);   /* the whole range, about uniformly */
	px_dataset_free(&a);
	px_dataset_free(&b);
	px_dataset_free(&c);
}
END_TEST

START_TEST(test_dates_writes_the_pairs_as_tsv_and_mixes_case)
{
	char dir[] = "/tmp/px-dates-XXXXXX", path[256], opts[512];
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof path, "%s/dates.tsv", dir);
	snprintf(opts, sizeof opts, "n: 200, lowercase: false, path: \"%s\"", path);
	struct px_dataset a;
	load_dates(opts, "val", 3, &a);
	FILE *f = fopen(path, "r");
	ck_assert_ptr_nonnull(f);
	char line[128];
	int n = 0, upper = 0;
	while (fgets(line, sizeof line, f)) {
		char src[64], iso[32], *tab = strchr(line, '\t');
		ck_assert_ptr_nonnull(tab);
		decode_str(a.x_vocab, a.x_data + n * a.x.dim[1], a.x_len[n], src);
		decode_str(a.y_vocab, a.y_data + n * 11, 10, iso);
		*tab = 0;
		ck_assert_str_eq(line, src);
		tab[11] = 0;
		ck_assert_str_eq(tab + 1, iso);
		int y, m, d;
		ck_assert_msg(parse_date(src, &y, &m, &d), "cannot read '%s'", src);
		upper += strpbrk(src, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != NULL;
		n++;
	}
	fclose(f);
	ck_assert_int_eq(n, 200);
	ck_assert_int_gt(upper, 20);
	remove(path);
	remove(dir);
	px_dataset_free(&a);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("attention");
	TCase *tc = tcase_create("attention");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_attention_pool_grad_matches_finite_difference);
	tcase_add_test(tc, test_attention_pool_weights_are_zero_on_padding_and_sum_to_one);
	tcase_add_test(tc, test_attention_pool_matches_pytorch);
	tcase_add_loop_test(tc, test_decoder_matches_pytorch, 0,
			    (int)(sizeof torch_cases / sizeof torch_cases[0]));
	tcase_add_loop_test(tc, test_decoder_grad_matches_finite_difference, 0,
			    (int)(sizeof grad_cases / sizeof grad_cases[0]));
	tcase_add_test(tc, test_decoder_weights_are_zero_on_padding_and_rows_sum_to_one);
	tcase_add_test(tc, test_greedy_decode_equals_beam_search_with_one_beam);
	tcase_add_test(tc, test_beam_search_never_scores_below_greedy);
	tcase_add_test(tc, test_free_running_decoding_stops_at_eos);
	tcase_add_test(tc, test_reverse_task_trains_to_full_accuracy);
	tcase_add_test(tc, test_decoder_errors_are_clear);
	tcase_add_test(tc, test_dates_are_deterministic_and_targets_are_the_parsed_dates);
	tcase_add_test(tc, test_dates_writes_the_pairs_as_tsv_and_mixes_case);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
