/* The recurrent cells (struct px_cell_ops: the single steps that the rnn, lstm, gru and
 * lstm_ref plugins export, and that the attention decoder drives) against the float64
 * reference's cell step (ref_rec_cell: PyTorch's RNNCell, LSTMCell with gates i, f, g, o, and
 * GRUCell with gates r, z, n and the reset after the matmul, n = tanh(W_in x + b_in +
 * r*(W_hn h + b_hn)), as the cells implement: they use the layers' defaults, tanh, forget_bias
 * 0 and reset_after true). One step, forward and backward, through tests/ref64/check64_cell.c:
 * the reference's gradients of x, s_prev and the four parameters by central differences in
 * double (eps 1e-6, |a-n| <= 1e-5 + 1e-3|n|, a random projection of all of s_next), and the
 * float32 cell against the reference (normalised MSE <= 1e-7 of s_next, d_x, d_s_prev and the
 * parameter gradients). The test layer around the cell also hands it a NaN-filled cache and
 * prefilled d_x and d_s_prev, so a cell that needs zeroed memory or overwrites instead of
 * adding fails here.
 *
 * Covered per kernel cell (plugins/common/recurrent.c, which runs 32 batch rows at a time in
 * 8-unit tiles): batch 3 with 3 units; 9 units (a full tile of 8, whose W_hh rows use the
 * widest matrix kernel, and a tile of 1); batch 35 (a full chunk of 32 rows and one of 3); each
 * under the matrix kernels of every instruction set (PLEXUS_REC_ISA unset: the best this CPU
 * has; avx2; generic: the CPU is printed first; a CPU without AVX2 runs generic for avx2, see
 * pick_isa; the gate math's lane loops are target_clones that follow the CPU, not this
 * variable); and once with d_x = NULL. The lstm_ref cell on the same shapes.
 *
 * No kinks: every cell here is smooth (tanh and sigmoid; the cells have no relu option). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check64_cell.h"
#include "plugin_util.h"

struct cell_cfg {
	int64_t batch, input, hidden;
	bool no_dx;
};

static const struct cell_cfg shapes[] = {
	{.batch = 3, .input = 4, .hidden = 3},
	{.batch = 3, .input = 3, .hidden = 9},
	{.batch = 35, .input = 3, .hidden = 4},
};
static const struct cell_cfg no_dx = {.batch = 3, .input = 4, .hidden = 3, .no_dx = true};

/* PLEXUS_REC_ISA values; NULL: unset (the CPU's best) */
static const char *const isas[] = {NULL, "avx2", "generic"};

/* Checks plugin's cell `kind` on c with PLEXUS_REC_ISA = isa (read when the cell is created);
 * returns the Jacobian elements checked */
static int64_t expect_cell(const char *plugin, const char *kind, enum ref_rec_kind rk,
			   const struct cell_cfg *c, const char *isa)
{
	char name[128];
	snprintf(name, sizeof name, "%s cell B%lld I%lld H%lld%s%s%s", plugin, (long long)c->batch,
		 (long long)c->input, (long long)c->hidden, c->no_dx ? " d_x NULL" : "",
		 isa ? " isa " : "", isa ? isa : "");
	if (isa)
		setenv("PLEXUS_REC_ISA", isa, 1);
	else
		unsetenv("PLEXUS_REC_ISA");
	struct ref_layer ref = {0};
	ref_rec_cell(&ref, rk, c->hidden, true, NULL);
	struct check64_cell_opts o = {.no_dx = c->no_dx};
	struct check64_result res;
	ck_assert_msg(check64_cell(name, tp_cell(plugin, kind), c->batch, c->input, c->hidden, &ref,
				   &tp_host, &o, &res) == 0, "%s did not run", name);
	unsetenv("PLEXUS_REC_ISA");
	CHECK64_ASSERT_PASSED(name, &res);
	return res.fd_checked;
}

/* every shape under every ISA, and d_x NULL */
static void expect_kernel_cell(const char *plugin, enum ref_rec_kind rk)
{
	int64_t total = 0;
	int n = 0;
	for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
		for (size_t i = 0; i < sizeof isas / sizeof isas[0]; i++, n++)
			total += expect_cell(plugin, plugin, rk, &shapes[s], isas[i]);
	total += expect_cell(plugin, plugin, rk, &no_dx, NULL);
	printf("%s cell: %d configurations, %lld Jacobian elements\n", plugin, n + 1,
	       (long long)total);
}

START_TEST(test_rnn_cell_matches_float64_reference)
{
	expect_kernel_cell("rnn", REF_RNN_TANH);
}
END_TEST

START_TEST(test_lstm_cell_matches_float64_reference)
{
	expect_kernel_cell("lstm", REF_LSTM);
}
END_TEST

START_TEST(test_gru_cell_matches_float64_reference)
{
	expect_kernel_cell("gru", REF_GRU);
}
END_TEST

START_TEST(test_lstm_ref_cell_matches_float64_reference)
{
	int64_t total = 0;
	for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
		total += expect_cell("lstm_ref", "lstm", REF_LSTM, &shapes[s], NULL);
	total += expect_cell("lstm_ref", "lstm", REF_LSTM, &no_dx, NULL);
	printf("lstm_ref cell: 4 configurations, %lld Jacobian elements\n", (long long)total);
}
END_TEST

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
#if defined(__x86_64__) && defined(__GNUC__)
	__builtin_cpu_init();
	printf("CPU: avx2+fma %s, avx512f %s\n",
	       __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? "yes" : "no",
	       __builtin_cpu_supports("avx512f") ? "yes" : "no");
#endif
	Suite *s = suite_create("ref64_cells");
	TCase *tc = tcase_create("ref64_cells");
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_rnn_cell_matches_float64_reference);
	tcase_add_test(tc, test_lstm_cell_matches_float64_reference);
	tcase_add_test(tc, test_gru_cell_matches_float64_reference);
	tcase_add_test(tc, test_lstm_ref_cell_matches_float64_reference);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
