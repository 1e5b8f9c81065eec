/* The recurrent plugins' layers (rnn, lstm, lstm_ref, gru) against the float64 reference
 * (tests/ref64): PyTorch's equations written out per element in double, run over 5 steps with
 * ragged lengths {5, 3, 1} or {4, 0, 2} (an empty example; padded steps hold garbage), with
 * every output (out, seq, state, cell) projected. The reference's gradients by central
 * differences in double (eps 1e-6, |a-n| <= 1e-5 + 1e-3|n| for every input and parameter
 * element) and the float32 kernels against the reference (normalised MSE <= 1e-7, forward and
 * backward).
 *
 * Covered: stacked and bidirectional layers; the readouts sequence, last, mean and max; rnn's
 * nonlinearity tanh and relu; gru with reset_after true and false; lstm's forget_bias; the
 * initial states h0 (and c0) as inputs, their gradients checked; stateful (a prelude batch of
 * other lengths runs first, and its final states are the checked batch's initial states:
 * constants); tbptt K (K = 1, 2 and 3, none dividing T = 5; the reference computes the function
 * whose states crossing steps K, 2K, ... are constants, so its finite differences check the
 * truncated gradient itself); inter-layer dropout in training mode (the reference draws the
 * kernel's masks from the same generator in the kernel's order); and the lstm_ref plugin on
 * every lstm configuration.
 *
 * Kinks, and how they are avoided: relu at pre-activation 0, and the max readout where the
 * winning step ties with the runner-up. The reference records the smallest |pre-activation| of
 * every relu at a valid step and the smallest gap between the max and the runner-up (over
 * examples with >= 2 valid steps: one of length 0 or 1 has no runner-up), over the checked point
 * and every finite-difference point; the test asserts both are at least REC_MARGIN, 1000 times
 * the finite-difference step, and prints them. The inputs are fixed (seed 11, U(-1, 1)) and
 * the parameters are the kernels' initialisation from CHECK64_SEED, so the margins are the
 * same on every run; relu and max are never combined (a relu unit at 0 on two steps would tie
 * the max). Dropout's masks are constants given the seed; tbptt's boundary states are
 * constants by definition. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check64.h"
#include "plugin_util.h"

#define REC_MARGIN 1e-3   /* smallest distance from a kink: 1000 finite-difference steps */

static const int32_t lens[3] = {5, 3, 1};
static const int32_t prelude_lens[3] = {2, 5, 4};   /* the stateful batch before */
static const int32_t lens0[3] = {4, 0, 2};          /* an empty example */

/* One configuration: the kernel's options are built from the same fields as the reference. */
struct rec_cfg {
	enum ref_rec_kind kind;
	int64_t hidden, layers;
	bool bidir;
	enum ref_readout readout;
	bool reset_before;     /* gru reset_after: false */
	int states;            /* inputs after x: 0, 1 (h0) or 2 (h0 and c0), [B, layers*dirs, H] */
	bool stateful;         /* a prelude batch carries its final states in */
	int64_t tbptt;
	double dropout;        /* > 0: training mode */
	const char *extra;     /* more kernel options that the reference does not need */
	const int32_t *lengths;   /* NULL: lens */
};

static const char *const readout_names[] = {"sequence", "last", "mean", "max"};

static struct px_tensor *uniform(struct px_arena *a, int64_t d0, int64_t d1, int64_t d2,
				 uint64_t seed)
{
	struct px_rng r;
	px_rng_seed(&r, seed);
	int64_t s[3] = {d0, d1, d2};
	struct px_tensor *t = px_tensor_new(a, 3, s);
	px_rng_fill_uniform(&r, t->data, px_tensor_numel(t), -1, 1);
	return t;
}

/* Checks `plugin`'s layer `kind` on configuration c; returns the Jacobian elements checked. */
static int64_t expect_rec(const char *plugin, const char *kind, const struct rec_cfg *c)
{
	char opts[256], name[128];
	int64_t dirs = c->bidir ? 2 : 1, nl = c->layers * dirs;
	snprintf(opts, sizeof opts, "hidden: %lld, layers: %lld, bidirectional: %s, readout: %s, "
		 "stateful: %s, tbptt: %lld, dropout: %g%s%s%s%s", (long long)c->hidden,
		 (long long)c->layers, c->bidir ? "true" : "false", readout_names[c->readout],
		 c->stateful ? "true" : "false", (long long)c->tbptt, c->dropout,
		 c->kind == REF_RNN_RELU ? ", nonlinearity: relu" : "",
		 c->kind == REF_GRU && c->reset_before ? ", reset_after: false" : "",
		 c->extra ? ", " : "", c->extra ? c->extra : "");
	snprintf(name, sizeof name, "%s H%lld%s%s %s%s%s%s%s", plugin, (long long)c->hidden,
		 c->layers > 1 ? " L2" : "", c->bidir ? " bidir" : "", readout_names[c->readout],
		 c->kind == REF_RNN_RELU ? " relu" : "", c->reset_before ? " reset-before" : "",
		 c->states == 2 ? " h0 c0" : c->states ? " h0" : "", c->stateful ? " stateful" : "");
	size_t nn = strlen(name);
	if (c->tbptt)
		nn += (size_t)snprintf(name + nn, sizeof name - nn, " tbptt %lld", (long long)c->tbptt);
	if (c->dropout > 0)
		nn += (size_t)snprintf(name + nn, sizeof name - nn, " dropout %g", c->dropout);
	if (c->extra)
		nn += (size_t)snprintf(name + nn, sizeof name - nn, " %s", c->extra);
	if (c->lengths)
		snprintf(name + nn, sizeof name - nn, " len {%d,%d,%d}", c->lengths[0], c->lengths[1],
			 c->lengths[2]);

	struct ref_rec_margins m;
	struct ref_rec_opts ro = {
		.h0 = c->states >= 1, .c0 = c->states >= 2, .stateful = c->stateful, .tbptt = c->tbptt,
		.dropout = c->dropout, .seed = CHECK64_SEED, .margins = &m,
		.drop_order = !strcmp(plugin, "lstm_ref") ? REF_DROP_BATCH_FIRST : REF_DROP_LANES,
	};
	struct ref_layer ref = {0};
	ref_recurrent_opts(&ref, c->kind, c->hidden, c->layers, c->bidir, c->readout,
			   !c->reset_before, &ro);

	struct px_arena *a = px_arena_new(1 << 16);
	struct px_tensor *in[3] = {uniform(a, 3, 5, 3, 11)};
	in[0]->lengths = c->lengths ? c->lengths : lens;
	for (int s = 0; s < c->states; s++)
		in[1 + s] = uniform(a, 3, nl, c->hidden, 12 + (uint64_t)s);
	struct px_tensor *pre = uniform(a, 3, 5, 3, 21);
	pre->lengths = prelude_lens;
	const struct px_tensor *prelude[1] = {pre};
	struct check64_opts o = {.train = c->dropout > 0, .prelude = c->stateful ? prelude : NULL};
	struct check64_result res;
	ck_assert_msg(check64_layer(name, tp_layer(plugin, kind), opts, 1 + c->states, in, NULL,
				    &ref, &tp_host, &o, &res) == 0, "%s did not run", name);
	px_arena_free(a);
	ck_assert_msg(res.fd_checked > 0, "%s: nothing checked", name);
	ck_assert_msg(res.fd_failed == 0, "%s: %lld of %lld float64 Jacobian elements off, worst %s",
		      name, (long long)res.fd_failed, (long long)res.fd_checked, res.fd_worst);
	ck_assert_msg(res.fwd_nmse <= CHECK64_NMSE, "%s: forward nMSE %g", name, res.fwd_nmse);
	ck_assert_msg(res.bwd_nmse <= CHECK64_NMSE, "%s: backward nMSE %g (%s)", name, res.bwd_nmse,
		      res.bwd_worst);
	if (c->kind == REF_RNN_RELU) {
		printf("    relu: smallest |pre-activation| at a valid step %.2e\n", m.relu);
		ck_assert_msg(isfinite(m.relu), "%s: no relu pre-activation recorded", name);
		ck_assert_msg(m.relu >= REC_MARGIN, "%s: a relu pre-activation %g from its kink", name,
			      m.relu);
	}
	if (c->readout == REF_MAX) {
		printf("    max readout: smallest gap winner - runner-up %.2e (none in an example with "
		       "< 2 valid steps)\n", m.max_gap);
		ck_assert_msg(isfinite(m.max_gap), "%s: no max readout gap recorded", name);
		ck_assert_msg(m.max_gap >= REC_MARGIN, "%s: max readout winner %g from its runner-up",
			      name, m.max_gap);
	}
	return res.fd_checked;
}

static int64_t expect_all(const char *plugin, const char *kind, const struct rec_cfg *c, int n)
{
	int64_t total = 0;
	for (int i = 0; i < n; i++)
		total += expect_rec(plugin, kind, &c[i]);
	printf("%s: %d configurations, %lld Jacobian elements\n", plugin, n, (long long)total);
	return total;
}

#define N_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

START_TEST(test_rnn_matches_float64_reference_over_ragged_steps)
{
	static const struct rec_cfg c[] = {
		{.kind = REF_RNN_TANH, .hidden = 4, .layers = 1},
		{.kind = REF_RNN_TANH, .hidden = 3, .layers = 2, .bidir = true, .readout = REF_LAST},
	};
	expect_all("rnn", "rnn", c, N_OF(c));
}
END_TEST

START_TEST(test_rnn_relu_matches_float64_reference_away_from_its_kink)
{
	static const struct rec_cfg c[] = {
		{.kind = REF_RNN_RELU, .hidden = 4, .layers = 1},
		{.kind = REF_RNN_RELU, .hidden = 3, .layers = 2, .bidir = true, .readout = REF_MEAN,
		 .states = 1},
		{.kind = REF_RNN_RELU, .hidden = 3, .layers = 1, .bidir = true, .readout = REF_LAST,
		 .tbptt = 2},
	};
	expect_all("rnn", "rnn", c, N_OF(c));
}
END_TEST

START_TEST(test_rnn_options_match_float64_reference)
{
	static const struct rec_cfg c[] = {
		{.kind = REF_RNN_TANH, .hidden = 3, .layers = 2, .bidir = true, .readout = REF_MAX,
		 .states = 1},
		{.kind = REF_RNN_TANH, .hidden = 3, .layers = 1, .bidir = true, .tbptt = 2},
		{.kind = REF_RNN_TANH, .hidden = 4, .layers = 1, .readout = REF_MEAN, .stateful = true,
		 .tbptt = 3},
		{.kind = REF_RNN_TANH, .hidden = 3, .layers = 2, .bidir = true, .dropout = 0.25},
		{.kind = REF_RNN_TANH, .hidden = 3, .layers = 1, .bidir = true, .readout = REF_MAX,
		 .states = 1, .tbptt = 1, .lengths = lens0},
	};
	expect_all("rnn", "rnn", c, N_OF(c));
}
END_TEST

/* The lstm configurations, for both lstm plugins. */
static const struct rec_cfg lstm_cfgs[] = {
	{.kind = REF_LSTM, .hidden = 4, .layers = 1},
	{.kind = REF_LSTM, .hidden = 3, .layers = 2, .bidir = true, .readout = REF_MEAN},
	{.kind = REF_LSTM, .hidden = 3, .layers = 1, .bidir = true, .readout = REF_LAST,
	 .extra = "forget_bias: 1"},
	{.kind = REF_LSTM, .hidden = 3, .layers = 1, .readout = REF_MAX},
	{.kind = REF_LSTM, .hidden = 3, .layers = 2, .bidir = true, .readout = REF_MAX, .states = 2},
	{.kind = REF_LSTM, .hidden = 3, .layers = 1, .bidir = true, .readout = REF_LAST,
	 .states = 1},
	{.kind = REF_LSTM, .hidden = 3, .layers = 1, .stateful = true},
	{.kind = REF_LSTM, .hidden = 4, .layers = 1, .tbptt = 3},
	{.kind = REF_LSTM, .hidden = 3, .layers = 1, .bidir = true, .readout = REF_MEAN,
	 .states = 2, .tbptt = 2},
	{.kind = REF_LSTM, .hidden = 3, .layers = 2, .bidir = true, .readout = REF_LAST,
	 .stateful = true, .tbptt = 2},
	{.kind = REF_LSTM, .hidden = 3, .layers = 2, .bidir = true, .dropout = 0.25},
	{.kind = REF_LSTM, .hidden = 3, .layers = 2, .readout = REF_MEAN, .stateful = true,
	 .tbptt = 3, .dropout = 0.25},
	{.kind = REF_LSTM, .hidden = 3, .layers = 1, .bidir = true, .readout = REF_LAST,
	 .states = 2, .tbptt = 2, .lengths = lens0},
	{.kind = REF_LSTM, .hidden = 3, .layers = 1, .bidir = true, .readout = REF_MEAN,
	 .stateful = true, .lengths = lens0},
};

START_TEST(test_lstm_matches_float64_reference_over_ragged_steps)
{
	expect_all("lstm", "lstm", lstm_cfgs, N_OF(lstm_cfgs));
}
END_TEST

START_TEST(test_lstm_ref_matches_float64_reference_over_ragged_steps)
{
	expect_all("lstm_ref", "lstm", lstm_cfgs, N_OF(lstm_cfgs));
}
END_TEST

START_TEST(test_gru_matches_float64_reference_over_ragged_steps)
{
	static const struct rec_cfg c[] = {
		{.kind = REF_GRU, .hidden = 4, .layers = 1},
		{.kind = REF_GRU, .hidden = 3, .layers = 2, .bidir = true, .readout = REF_LAST},
		{.kind = REF_GRU, .hidden = 4, .layers = 1, .bidir = true, .readout = REF_MEAN,
		 .reset_before = true},
		{.kind = REF_GRU, .hidden = 3, .layers = 2, .bidir = true, .readout = REF_MAX,
		 .states = 1},
		{.kind = REF_GRU, .hidden = 3, .layers = 1, .bidir = true, .readout = REF_MAX,
		 .states = 1, .reset_before = true},
		{.kind = REF_GRU, .hidden = 3, .layers = 1, .bidir = true, .tbptt = 2,
		 .reset_before = true},
		{.kind = REF_GRU, .hidden = 3, .layers = 2, .readout = REF_LAST, .stateful = true,
		 .tbptt = 3},
		{.kind = REF_GRU, .hidden = 3, .layers = 1, .bidir = true, .stateful = true,
		 .reset_before = true},
		{.kind = REF_GRU, .hidden = 3, .layers = 2, .bidir = true, .dropout = 0.25},
		{.kind = REF_GRU, .hidden = 3, .layers = 2, .bidir = true, .readout = REF_MEAN,
		 .dropout = 0.25, .tbptt = 2, .reset_before = true},
		{.kind = REF_GRU, .hidden = 3, .layers = 1, .bidir = true, .readout = REF_MAX,
		 .states = 1, .tbptt = 1, .reset_before = true, .lengths = lens0},
	};
	expect_all("gru", "gru", c, N_OF(c));
}
END_TEST

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);   /* the lines of a failing test too */
	Suite *s = suite_create("ref64_recurrent");
	TCase *tc = tcase_create("ref64_recurrent");
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_rnn_matches_float64_reference_over_ragged_steps);
	tcase_add_test(tc, test_rnn_relu_matches_float64_reference_away_from_its_kink);
	tcase_add_test(tc, test_rnn_options_match_float64_reference);
	tcase_add_test(tc, test_lstm_matches_float64_reference_over_ragged_steps);
	tcase_add_test(tc, test_lstm_ref_matches_float64_reference_over_ragged_steps);
	tcase_add_test(tc, test_gru_matches_float64_reference_over_ragged_steps);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
