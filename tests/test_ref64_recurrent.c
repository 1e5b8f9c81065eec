/* The recurrent plugins' layers (rnn, lstm, gru) against the float64 reference (tests/ref64):
 * PyTorch's equations written out per element in double, run over 5 steps with ragged lengths
 * {5, 3, 1} (padded steps hold garbage), stacked and bidirectional, with the readouts
 * sequence, last and mean, and every output (out, seq, state, cell) projected. The
 * reference's gradients by central differences in double (eps 1e-6, |a-n| <= 1e-5 + 1e-3|n|
 * for every input and parameter element) and the float32 kernels against the reference
 * (normalised MSE <= 1e-7, forward and backward). */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check64.h"
#include "plugin_util.h"

static const int32_t lens[3] = {5, 3, 1};

static void expect(const char *name, const char *plugin, const char *opts, struct ref_layer *ref)
{
	struct px_arena *a = px_arena_new(1 << 16);
	struct px_rng r;
	px_rng_seed(&r, 11);
	int64_t s[3] = {3, 5, 3};
	struct px_tensor *x = px_tensor_new(a, 3, s);
	px_rng_fill_uniform(&r, x->data, px_tensor_numel(x), -1, 1);
	x->lengths = lens;
	struct check64_result res;
	ck_assert_msg(check64_layer(name, tp_layer(plugin, plugin), opts, 1, &x, NULL, ref, &tp_host,
				    NULL, &res) == 0, "%s did not run", name);
	px_arena_free(a);
	ck_assert_msg(res.fd_checked > 0, "%s: nothing checked", name);
	ck_assert_msg(res.fd_failed == 0, "%s: %lld of %lld float64 Jacobian elements off, worst %s",
		      name, (long long)res.fd_failed, (long long)res.fd_checked, res.fd_worst);
	ck_assert_msg(res.fwd_nmse <= CHECK64_NMSE, "%s: forward nMSE %g", name, res.fwd_nmse);
	ck_assert_msg(res.bwd_nmse <= CHECK64_NMSE, "%s: backward nMSE %g (%s)", name, res.bwd_nmse,
		      res.bwd_worst);
}

START_TEST(test_rnn_matches_float64_reference_over_ragged_steps)
{
	struct ref_layer ref = {0};
	ref_recurrent(&ref, REF_RNN_TANH, 4, 1, false, REF_SEQUENCE, false);
	expect("rnn H4 sequence", "rnn", "hidden: 4", &ref);
	ref_recurrent(&ref, REF_RNN_TANH, 3, 2, true, REF_LAST, false);
	expect("rnn H3 2 layers bidir last", "rnn", "hidden: 3, layers: 2, bidirectional: true, "
	       "readout: last", &ref);
}
END_TEST

START_TEST(test_lstm_matches_float64_reference_over_ragged_steps)
{
	struct ref_layer ref = {0};
	ref_recurrent(&ref, REF_LSTM, 4, 1, false, REF_SEQUENCE, false);
	expect("lstm H4 sequence", "lstm", "hidden: 4", &ref);
	ref_recurrent(&ref, REF_LSTM, 3, 2, true, REF_MEAN, false);
	expect("lstm H3 2 layers bidir mean", "lstm", "hidden: 3, layers: 2, bidirectional: true, "
	       "readout: mean", &ref);
	ref_recurrent(&ref, REF_LSTM, 3, 1, true, REF_LAST, false);
	expect("lstm H3 bidir last forget_bias 1", "lstm", "hidden: 3, bidirectional: true, "
	       "readout: last, forget_bias: 1", &ref);
}
END_TEST

START_TEST(test_gru_matches_float64_reference_over_ragged_steps)
{
	struct ref_layer ref = {0};
	ref_recurrent(&ref, REF_GRU, 4, 1, false, REF_SEQUENCE, true);
	expect("gru H4 sequence (reset after)", "gru", "hidden: 4", &ref);
	ref_recurrent(&ref, REF_GRU, 3, 2, true, REF_LAST, true);
	expect("gru H3 2 layers bidir last", "gru", "hidden: 3, layers: 2, bidirectional: true, "
	       "readout: last", &ref);
	ref_recurrent(&ref, REF_GRU, 4, 1, true, REF_MEAN, false);
	expect("gru H4 bidir mean reset before", "gru", "hidden: 4, bidirectional: true, "
	       "readout: mean, reset_after: false", &ref);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("ref64_recurrent");
	TCase *tc = tcase_create("ref64_recurrent");
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_rnn_matches_float64_reference_over_ragged_steps);
	tcase_add_test(tc, test_lstm_matches_float64_reference_over_ragged_steps);
	tcase_add_test(tc, test_gru_matches_float64_reference_over_ragged_steps);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
