/* The attention plugin's attention_decoder against its float64 reference
 * (tests/ref64/ref64_attention.c), with the real rnn, lstm and gru cells of the build tree.
 *
 * Teacher forcing (check64): vocab 7, embed 3, hidden 4, memory [3,5,D] with lengths {5,2,4}
 * (one configuration {5,0,4}: an empty memory) and garbage on the padded steps, targets [3,4]
 * with lengths {4,2,3} (one configuration {4,0,3}: an empty target; garbage ids past them).
 * Bahdanau with lstm, gru and rnn cells; Luong dot, general and concat, with and without input
 * feeding; the initial state unconnected, taken as is (dirs*F == hidden) and through the
 * bridges (bidirectional encoder states of 1 and 2 layers, init_dirs auto, 2 and 1), init and
 * init_cell also as 2-D [B,F] tensors (as is and through the bridges); bos 4 / eos 0 as well as
 * the defaults 1 / 2. The reference's gradients by central differences in
 * double (eps 1e-6, |a-n| <= 1e-5 + 1e-3|n|, every element of memory, init, init_cell and
 * every parameter; L projects logits and weights) and the float32 kernel against the
 * reference (normalised MSE <= 1e-7 of logits, weights and tokens, and of every gradient).
 * Kinks: none inside teacher forcing (tanh, sigmoid, exp; the masked softmax's max shift does
 * not change its value). The `tokens` output is an argmax of the logits: it is left out of L
 * (check64's no_project) and compared exactly, and the reference's smallest gap between the
 * best and second-best logit of a valid step is asserted >= 1e-4 (float32 logits are within
 * ~1e-6), so the kernel cannot pick another token by rounding.
 *
 * Free running (targets unconnected; not differentiable), 16 examples per configuration,
 * max_len 6: greedy decoding and beam search (beam 1 with search: beam, 2, 3, 4; length_norm
 * 0, 1, 3; the greedy hypothesis competing; bos 4 / eos 0 once; memory lengths b % 6, some
 * empty, in a greedy and a beam configuration) must give exactly the reference's tokens and
 * lengths, and the kernel's logits and weights (those of the chosen tokens) match the
 * reference's at nMSE <= 1e-7. out.weight is scaled by 3 and out.bias[eos] raised (0.4, 0.8)
 * so that the decodes vary. Ties (the decisions' kink) are avoided by construction: the seeds
 * are chosen so that the reference's smallest gap of a comparison that decided a result
 * (argmax, adjacent beam ranks, finished scores, beam vs greedy) is >= 1e-4, asserted and
 * printed. Not vacuous, asserted: in every configuration some example runs past step 0 and
 * some stops at <eos> before max_len; over the beam configurations, some example decodes
 * otherwise than greedy, and the greedy hypothesis winning, a winner kept alive from the
 * ranks K..2K-1 and the length normalisation each decided some example. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check64.h"
#include "plugin_util.h"
#include "ref64_attention.h"

#define MARGIN 1e-4   /* decisions (argmax, beam ranks) at least this far from a tie */

enum { B = 3, T_OUT = 4, T_IN = 5, V = 7, E = 3, H = 4 };

static const struct px_layer_ops *dec_ops;

static void load(void)
{
	if (!dec_ops) {
		dec_ops = tp_layer("attention", "attention_decoder");
		tp_plugin("rnn");   /* the cells the decoder finds through tp_host */
		tp_plugin("lstm");
		tp_plugin("gru");
	}
}

/* One configuration: kernel options (hidden, vocab, embed added), the reference's options,
 * memory features D, init [B,slots,F] (slots 0: unconnected) and init_cell with with_c. */
struct cfg {
	const char *name;
	const char *opts;
	struct ref_attdec_opts ro;
	int64_t D, slots, F;
	bool with_c;
	unsigned flags;      /* EMPTY_MEMORY, EMPTY_TARGET, INIT_2D */
};

enum {
	EMPTY_MEMORY = 1,   /* memory lengths {5,0,4} (free running: b % 6, some 0) */
	EMPTY_TARGET = 2,   /* target lengths {4,0,3} instead of {4,2,3} */
	INIT_2D = 4,        /* init given as [B,F] (one slot), not [B,slots,F] */
};

/* the kernel's defaults (bos 1, eos 2); decoding cases set max_len, beam and length_norm */
#define RO_BE(bos_, eos_, ...) {.vocab = V, .embed = E, .hidden = H, .bos = bos_, .eos = eos_, \
				__VA_ARGS__}
#define RO(...) RO_BE(1, 2, __VA_ARGS__)

static const struct cfg tf_cases[] = {
	{"bahdanau lstm", "attention: bahdanau, cell: lstm",
	 RO(.cell = REF_LSTM, .attention = REF_BAHDANAU), 4, 0, 0, false, 0},
	{"bahdanau gru A3 bridge bidir", "attention: bahdanau, cell: gru, attn_units: 3",
	 RO(.cell = REF_GRU, .attention = REF_BAHDANAU, .attn_units = 3), 6, 2, 3, false, 0},
	{"bahdanau rnn init as is", "attention: bahdanau, cell: rnn",
	 RO(.cell = REF_RNN_TANH, .attention = REF_BAHDANAU), 4, 1, 4, false, 0},
	{"luong dot lstm init+cell as is", "attention: luong, score: dot, cell: lstm",
	 RO(.cell = REF_LSTM, .attention = REF_LUONG, .score = REF_SCORE_DOT), 4, 1, 4, true,
	 false},
	{"luong general lstm feed bridges 2L", "attention: luong, score: general, cell: lstm, "
	 "input_feeding: true, init_dirs: 2",
	 RO(.cell = REF_LSTM, .attention = REF_LUONG, .score = REF_SCORE_GENERAL,
	    .input_feeding = true, .init_dirs = 2), 6, 4, 3, true, 0},
	{"luong general gru init_dirs 1", "attention: luong, score: general, cell: gru, "
	 "init_dirs: 1",
	 RO(.cell = REF_GRU, .attention = REF_LUONG, .score = REF_SCORE_GENERAL, .init_dirs = 1),
	 4, 2, 4, false, 0},
	{"luong concat gru A5 feed", "attention: luong, score: concat, cell: gru, attn_units: 5, "
	 "input_feeding: true",
	 RO(.cell = REF_GRU, .attention = REF_LUONG, .score = REF_SCORE_CONCAT, .attn_units = 5,
	    .input_feeding = true), 4, 0, 0, false, 0},
	{"luong concat lstm bridges bidir", "attention: luong, score: concat, cell: lstm",
	 RO(.cell = REF_LSTM, .attention = REF_LUONG, .score = REF_SCORE_CONCAT), 6, 2, 3, true,
	 false},
	{"luong dot rnn feed empty memory", "attention: luong, score: dot, cell: rnn, "
	 "input_feeding: true",
	 RO(.cell = REF_RNN_TANH, .attention = REF_LUONG, .score = REF_SCORE_DOT,
	    .input_feeding = true), 4, 0, 0, false, EMPTY_MEMORY},
	{"bahdanau gru bos 4 eos 0", "attention: bahdanau, cell: gru, bos: 4, eos: 0",
	 RO_BE(4, 0, .cell = REF_GRU, .attention = REF_BAHDANAU), 4, 0, 0, false, 0},
	{"luong general lstm empty target", "attention: luong, score: general, cell: lstm, "
	 "input_feeding: true",
	 RO(.cell = REF_LSTM, .attention = REF_LUONG, .score = REF_SCORE_GENERAL,
	    .input_feeding = true), 4, 1, 4, true, EMPTY_TARGET},
	{"bahdanau rnn init [B,F] as is", "attention: bahdanau, cell: rnn",
	 RO(.cell = REF_RNN_TANH, .attention = REF_BAHDANAU), 4, 1, 4, false, INIT_2D},
	{"luong concat lstm init+cell [B,F] bridges", "attention: luong, score: concat, cell: lstm",
	 RO(.cell = REF_LSTM, .attention = REF_LUONG, .score = REF_SCORE_CONCAT), 4, 1, 3, true,
	 INIT_2D},
};

/* inputs: targets, memory, init, init_cell (when connected); returns n_in */
static int make_inputs(struct px_arena *a, const struct cfg *c, uint64_t seed, bool targets,
		       int64_t batch, struct px_tensor **in)
{
	static const int32_t tlen[B] = {4, 2, 3}, tlen0[B] = {4, 0, 3};
	static const int32_t mlen[B] = {5, 2, 4}, mlen0[B] = {5, 0, 4};
	const bool empty_mem = c->flags & EMPTY_MEMORY;
	struct px_rng r;
	px_rng_seed(&r, seed);
	int32_t *ml = px_arena_alloc(a, (size_t)batch * sizeof *ml);
	int32_t *tl = px_arena_alloc(a, (size_t)batch * sizeof *tl);
	for (int64_t b = 0; b < batch; b++) {
		if (batch == B)
			ml[b] = (empty_mem ? mlen0 : mlen)[b];
		else
			ml[b] = empty_mem ? (int32_t)(b % (T_IN + 1)) : (int32_t)(1 + b % T_IN);
		tl[b] = (c->flags & EMPTY_TARGET ? tlen0 : tlen)[b % B];
	}
	in[0] = NULL;
	if (targets) {   /* ids in [0, V); garbage ids past the lengths */
		in[0] = px_tensor_new2(a, batch, T_OUT);
		for (int64_t b = 0; b < batch; b++)
			for (int64_t i = 0; i < T_OUT; i++)
				in[0]->data[b * T_OUT + i] = i < tl[b] ? (float)px_rng_below(&r, V) : 6.0f;
		in[0]->lengths = tl;
	}
	in[1] = px_tensor_new3(a, batch, T_IN, c->D);   /* the padded steps hold garbage too */
	px_rng_fill_uniform(&r, in[1]->data, px_tensor_numel(in[1]), -1, 1);
	in[1]->lengths = ml;
	int n_in = 2;
	const bool flat = c->flags & INIT_2D;   /* [B,F]: one slot */
	if (c->slots) {
		in[n_in] = flat ? px_tensor_new2(a, batch, c->F)
				: px_tensor_new3(a, batch, c->slots, c->F);
		px_rng_fill_uniform(&r, in[n_in]->data, px_tensor_numel(in[n_in]), -1, 1);
		n_in++;
	}
	if (c->with_c) {
		in[n_in] = flat ? px_tensor_new2(a, batch, c->F)
				: px_tensor_new3(a, batch, c->slots, c->F);
		px_rng_fill_uniform(&r, in[n_in]->data, px_tensor_numel(in[n_in]), -1, 1);
		n_in++;
	}
	return n_in;
}

static void options(const struct cfg *c, const char *extra, char *buf, size_t n)
{
	snprintf(buf, n, "%s, hidden: %d, vocab: %d, embed: %d%s%s", c->opts, H, V, E,
		 extra ? ", " : "", extra ? extra : "");
}

static struct px_layer_inst *kernel(const struct cfg *c, const char *opts, int n_in,
				    struct px_tensor *const *in, bool targets)
{
	struct px_shape s[4] = {{0}};
	bool ragged[4] = {true, true, false, false};
	for (int i = 0; i < n_in; i++)
		if (in[i])
			px_tensor_shape(in[i], &s[i]);
	s[0].dim[0] = -1;
	if (!targets)
		s[0] = (struct px_shape){0};
	struct px_layer_inst *li;
	struct px_error err;
	ck_assert_msg(px_layer_inst_new(dec_ops, opts, n_in, s, ragged, CHECK64_SEED, &tp_host, &li,
					&err) == 0, "%s: %s", c->name, err.msg);
	return li;
}

/* The kernel's parameters are the reference's, by name and in order. */
static void expect_same_params(const struct cfg *c, const struct ref_attdec_opts *ro,
			       struct px_layer_inst *li)
{
	const char *names[REF_MAX_PARAMS];
	int64_t slots[2] = {c->slots, c->with_c ? c->slots : 0}, feat[2] = {c->F, c->F};
	int n = ref_attdec_param_names(ro, c->D, slots, feat, names);
	ck_assert_int_eq(px_layer_inst_n_params(li), n);
	for (int k = 0; k < n; k++)
		ck_assert_msg(!strcmp(px_layer_inst_param(li, k)->name, names[k]),
			      "%s: parameter %d is %s, the reference expects %s", c->name, k,
			      px_layer_inst_param(li, k)->name, names[k]);
}

/* ------------------------------------------------------------------ teacher forcing */
static int64_t tf_checked;
static double tf_max_abs, tf_fwd, tf_bwd, tf_margin = INFINITY;

static void expect_teacher_forcing(const struct cfg *c, uint64_t seed)
{
	load();
	struct px_arena *a = px_arena_new(1 << 16);
	struct px_tensor *in[4];
	int n_in = make_inputs(a, c, seed, true, B, in);
	char opts[256];
	options(c, NULL, opts, sizeof opts);
	struct px_layer_inst *li = kernel(c, opts, n_in, in, true);
	expect_same_params(c, &c->ro, li);
	px_layer_inst_free(li);

	double margin = INFINITY;
	struct ref_attdec_opts ro = c->ro;
	ro.argmax_margin = &margin;
	struct ref_layer ref = {0};
	ref_attention_decoder(&ref, &ro);
	const bool no_grad[4] = {true, false, false, false};
	const struct check64_opts o = {.no_project = 1u << 2};   /* tokens: ids */
	struct check64_result res;
	char name[96];
	snprintf(name, sizeof name, "decoder %s", c->name);
	ck_assert_msg(check64_layer(name, dec_ops, opts, n_in, in, no_grad, &ref, &tp_host, &o,
				    &res) == 0, "%s did not run", name);
	printf("%-34s argmax margin %.2e\n", "", margin);
	px_arena_free(a);
	CHECK64_ASSERT_PASSED(name, &res);
	ck_assert_msg(margin >= MARGIN, "%s: two logits within %g of the best (a near tie)", name,
		      margin);
	tf_checked += res.fd_checked;
	tf_max_abs = fmax(tf_max_abs, res.fd_max_abs);
	tf_fwd = fmax(tf_fwd, res.fwd_nmse);
	tf_bwd = fmax(tf_bwd, res.bwd_nmse);
	tf_margin = fmin(tf_margin, margin);
}

START_TEST(test_decoder_teacher_forcing_matches_float64_reference)
{
	expect_teacher_forcing(&tf_cases[_i], 31 + (uint64_t)_i);
}
END_TEST

/* ------------------------------------------------------------------ free running */
struct dcase {
	struct cfg c;
	const char *extra;   /* decoding options */
	float eos_bias;      /* added to out.bias[eos]: some examples stop at <eos>, not all */
	uint64_t seed;       /* of memory and init: every decision clear of a tie (asserted) */
};

#define OUT_SCALE 3.0f   /* out.weight x 3: sharper choices than at initialisation */
#define DRO(...) RO(.max_len = 6, __VA_ARGS__)
#define DRO_BE(bos_, eos_, ...) RO_BE(bos_, eos_, .max_len = 6, __VA_ARGS__)


static const struct dcase dec_cases[] = {
	{{"greedy bahdanau lstm bridges", "attention: bahdanau, cell: lstm",
	  DRO(.cell = REF_LSTM, .attention = REF_BAHDANAU, .beam = 1), 6, 2, 3, true, 0},
	 "max_len: 6", 0.4f, 72},
	{{"greedy luong general gru feed", "attention: luong, score: general, cell: gru, "
	  "input_feeding: true",
	  DRO(.cell = REF_GRU, .attention = REF_LUONG, .score = REF_SCORE_GENERAL,
	      .input_feeding = true, .beam = 1), 4, 0, 0, false, 0},
	 "max_len: 6", 0.4f, 53},
	{{"greedy luong dot rnn", "attention: luong, score: dot, cell: rnn",
	  DRO(.cell = REF_RNN_TANH, .attention = REF_LUONG, .score = REF_SCORE_DOT, .beam = 1), 4,
	  1, 4, false, 0},
	 "max_len: 6", 0.4f, 53},
	{{"beam 1 (search: beam) luong feed", "attention: luong, score: general, cell: lstm, "
	  "input_feeding: true",
	  DRO(.cell = REF_LSTM, .attention = REF_LUONG, .score = REF_SCORE_GENERAL,
	      .input_feeding = true, .search_beam = true, .beam = 1, .length_norm = 0.6), 4, 1, 4,
	  true, 0},
	 "max_len: 6, search: beam", 0.4f, 53},
	{{"beam 3 luong concat lstm bridges norm 3", "attention: luong, score: concat, cell: lstm",
	  DRO(.cell = REF_LSTM, .attention = REF_LUONG, .score = REF_SCORE_CONCAT, .beam = 3,
	      .length_norm = 3), 6, 2, 3, true, 0},
	 "max_len: 6, beam: 3, length_norm: 3", 0.8f, 76},
	{{"beam 2 bahdanau gru norm 0", "attention: bahdanau, cell: gru",
	  DRO(.cell = REF_GRU, .attention = REF_BAHDANAU, .beam = 2, .length_norm = 0), 4, 0, 0,
	  false, 0},
	 "max_len: 6, beam: 2, length_norm: 0", 0.4f, 56},
	{{"beam 4 luong dot gru feed norm 1", "attention: luong, score: dot, cell: gru, "
	  "input_feeding: true",
	  DRO(.cell = REF_GRU, .attention = REF_LUONG, .score = REF_SCORE_DOT, .beam = 4,
	      .length_norm = 1.0, .input_feeding = true), 4, 1, 4, false, 0},
	 "max_len: 6, beam: 4, length_norm: 1.0", 0.4f, 55},
	{{"beam 3 bahdanau rnn bridge norm 3", "attention: bahdanau, cell: rnn",
	  DRO(.cell = REF_RNN_TANH, .attention = REF_BAHDANAU, .beam = 3, .length_norm = 3), 6,
	  2, 3, false, 0},
	 "max_len: 6, beam: 3, length_norm: 3", 0.8f, 68},
	{{"beam 3 bahdanau lstm bos 4 eos 0 norm 1", "attention: bahdanau, cell: lstm",
	  DRO_BE(4, 0, .cell = REF_LSTM, .attention = REF_BAHDANAU, .beam = 3, .length_norm = 1),
	  4, 0, 0, false, 0},
	 "max_len: 6, beam: 3, length_norm: 1, bos: 4, eos: 0", 0.4f, 53},
	{{"greedy luong dot gru empty memory", "attention: luong, score: dot, cell: gru",
	  DRO(.cell = REF_GRU, .attention = REF_LUONG, .score = REF_SCORE_DOT, .beam = 1), 4, 1,
	  4, false, EMPTY_MEMORY},
	 "max_len: 6", 0.4f, 53},
	{{"beam 2 bahdanau gru empty memory norm 1", "attention: bahdanau, cell: gru",
	  DRO(.cell = REF_GRU, .attention = REF_BAHDANAU, .beam = 2, .length_norm = 1), 4, 0, 0,
	  false, EMPTY_MEMORY},
	 "max_len: 6, beam: 2, length_norm: 1", 0.4f, 53},
};

enum { DB = 16 };   /* examples decoded per configuration */

static void ref_params_from(struct ref_layer *ref, struct px_layer_inst *li)
{
	ref->n_params = px_layer_inst_n_params(li);
	for (int k = 0; k < ref->n_params; k++) {
		const struct px_tensor *v = px_layer_inst_param(li, k)->value;
		ref->param[k] = r64_new(v->ndim, v->shape);
		ref->grad[k] = r64_new(v->ndim, v->shape);
		for (int64_t i = 0; i < px_tensor_numel(v); i++)
			ref->param[k]->d[i] = v->data[i];
	}
}

/* over the beam configurations, examples where beam search returned another sequence than
 * greedy, where the greedy hypothesis won, where the winner was kept from a rank >= K, and
 * where the length normalisation changed the winner: each path decided something */
static int beam_differs, greedy_won, deep_win, norm_decided;

START_TEST(test_decoder_free_running_matches_float64_reference)
{
	load();
	const struct dcase *dc = &dec_cases[_i];
	const struct cfg *c = &dc->c;
	const struct ref_attdec_opts *ro = &c->ro;
	int64_t L = ro->max_len;
	struct px_arena *a = px_arena_new(1 << 16);
	struct px_tensor *in[4];
	int n_in = make_inputs(a, c, dc->seed, false, DB, in);
	char opts[256];
	options(c, dc->extra, opts, sizeof opts);
	struct px_layer_inst *li = kernel(c, opts, n_in, in, false);
	expect_same_params(c, ro, li);
	for (int k = 0; k < px_layer_inst_n_params(li); k++)
		if (!strcmp(px_layer_inst_param(li, k)->name, "out.bias"))
			px_layer_inst_param(li, k)->value->data[ro->eos] += dc->eos_bias;
		else if (!strcmp(px_layer_inst_param(li, k)->name, "out.weight"))
			px_scal(px_tensor_numel(px_layer_inst_param(li, k)->value), OUT_SCALE,
				px_layer_inst_param(li, k)->value->data);
	struct px_error err;
	ck_assert_msg(px_layer_inst_forward(li, (const struct px_tensor *const *)in, false, &err) == 0,
		      "%s: %s", c->name, err.msg);
	const struct px_tensor *lg = px_layer_inst_out(li, 0), *wt = px_layer_inst_out(li, 1);
	const struct px_tensor *tk = px_layer_inst_out(li, 2);
	ck_assert_int_eq(tk->shape[1], L);

	/* the reference, with the kernel's parameters, on the same inputs */
	struct ref_layer ref = {0}, gref = {0};
	struct r64 *din[4] = {0};
	for (int i = 1; i < n_in; i++) {
		din[i] = r64_new(in[i]->ndim, in[i]->shape);
		for (int64_t k = 0; k < px_tensor_numel(in[i]); k++)
			din[i]->d[k] = in[i]->data[k];
		din[i]->lengths = in[i]->lengths;
	}
	ref_attention_decoder(&ref, ro);
	ref_params_from(&ref, li);
	ck_assert_int_eq(L, 6);
	int32_t tok[DB * 6], len[DB], gtok[DB * 6], glen[DB];
	struct r64 *rl, *rw, *gl, *gw;
	struct ref_attdec_stats st, gst;
	ref_attdec_decode(&ref, n_in, din, tok, len, &rl, &rw, &st);
	/* the greedy result of the same model, to see beam search at work */
	struct ref_attdec_opts go = *ro;
	go.beam = 1;
	go.search_beam = false;
	ref_attention_decoder(&gref, &go);
	ref_params_from(&gref, li);
	ref_attdec_decode(&gref, n_in, din, gtok, glen, &gl, &gw, &gst);

	int past_first = 0, at_eos = 0, differ = 0;
	for (int64_t b = 0; b < DB; b++) {
		ck_assert_msg(tk->lengths[b] == len[b], "%s example %lld: length %d, reference %d",
			      c->name, (long long)b, tk->lengths[b], len[b]);
		for (int64_t i = 0; i < L; i++)
			ck_assert_msg(tk->data[b * L + i] == (float)tok[b * L + i],
				      "%s example %lld step %lld: token %g, reference %d", c->name,
				      (long long)b, (long long)i, (double)tk->data[b * L + i],
				      tok[b * L + i]);
		past_first += len[b] > 1;
		at_eos += len[b] < L && tok[b * L + len[b] - 1] == ro->eos;
		differ += len[b] != glen[b] ||
			  memcmp(tok + b * L, gtok + b * L, (size_t)L * sizeof *tok) != 0;
	}
	double e_l = check64_nmse(lg->data, rl->d, r64_numel(rl));
	double e_w = check64_nmse(wt->data, rw->d, r64_numel(rw));
	printf("decoder %-34s tokens equal (%d examples, lengths", c->name, DB);
	for (int64_t b = 0; b < DB; b++)
		printf(" %d", len[b]);
	printf("), logits nMSE %.1e, weights nMSE %.1e, decision margin %.2e, %d differ from "
	       "greedy (greedy won %d, ranks K..2K-1 %d, length norm decided %d)\n", e_l, e_w,
	       st.margin, differ, st.greedy_won, st.deep_win, st.norm_decided);
	ck_assert_msg(e_l <= CHECK64_NMSE && e_w <= CHECK64_NMSE, "%s: nMSE logits %g weights %g",
		      c->name, e_l, e_w);
	ck_assert_msg(st.margin >= MARGIN, "%s: a decision within %g of a tie", c->name, st.margin);
	ck_assert_msg(past_first > 0, "%s: every example stopped at step 0", c->name);
	ck_assert_msg(at_eos > 0, "%s: no example stopped at <eos> before max_len", c->name);
	if (ro->beam == 1)
		ck_assert_msg(differ == 0, "%s: beam 1 is not greedy", c->name);
	else
		beam_differs += differ;
	greedy_won += st.greedy_won;
	deep_win += st.deep_win;
	norm_decided += st.norm_decided;
	r64_free(rl);
	r64_free(rw);
	r64_free(gl);
	r64_free(gw);
	for (int i = 0; i < n_in; i++)
		r64_free(din[i]);
	ref_layer_free(&ref);
	ref_layer_free(&gref);
	px_layer_inst_free(li);
	px_arena_free(a);
}
END_TEST

/* Runs after the loops: each rule of the beam search decided some example, so a kernel
 * without it would have decoded another sequence there (the decisions are clear of ties). */
START_TEST(test_beam_search_rules_each_decided_some_example)
{
	printf("beam configurations: %d examples decoded otherwise than greedy, the greedy "
	       "hypothesis won %d, a winner kept from ranks K..2K-1 %d, the length normalisation "
	       "changed the winner %d\n", beam_differs, greedy_won, deep_win, norm_decided);
	ck_assert_msg(beam_differs > 0, "beam search always returned the greedy sequence");
	ck_assert_msg(greedy_won > 0, "the greedy hypothesis never beat the beam's");
	ck_assert_msg(deep_win > 0, "no winner needed the candidates of ranks K..2K-1");
	ck_assert_msg(norm_decided > 0, "the length normalisation never changed the winner");
	printf("teacher forcing: %lld Jacobian elements, max |a-n| %.1e, nMSE forward %.1e "
	       "backward %.1e, argmax margin %.2e\n", (long long)tf_checked, tf_max_abs, tf_fwd,
	       tf_bwd, tf_margin);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("ref64_attention");
	TCase *tc = tcase_create("ref64_attention");
	tcase_set_timeout(tc, 300);
	tcase_add_loop_test(tc, test_decoder_teacher_forcing_matches_float64_reference, 0,
			    (int)(sizeof tf_cases / sizeof tf_cases[0]));
	tcase_add_loop_test(tc, test_decoder_free_running_matches_float64_reference, 0,
			    (int)(sizeof dec_cases / sizeof dec_cases[0]));
	tcase_add_test(tc, test_beam_search_rules_each_decided_some_example);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_set_fork_status(sr, CK_NOFORK);   /* the totals add up across the tests */
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
