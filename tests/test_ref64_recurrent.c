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
 * The kernels' own code paths (plugins/common/recurrent.c): batches of 20 and 40 examples,
 * padded to 32 and 48 lanes, over lengths from 0 to 5 (several lane blocks, and both blocks of
 * the AVX-512 matrix kernel); the step team on 2 threads (PLEXUS_REC_THREADS, its workers
 * counted, see test_step_team_matches_float64_reference); and, through the registrations
 * test_ref64_recurrent_generic and _avx2 in tests/meson.build, the other instruction sets'
 * matrix kernels (PLEXUS_REC_ISA). PLEXUS_REF64_MAX_FD=n caps the finite differences at n
 * elements per tensor (those registrations: the reference does not depend on the kernel).
 *
 * Kinks, and how they are avoided: relu at pre-activation 0, and the max readout where the
 * winning step ties with the runner-up. The reference records the smallest |pre-activation| of
 * every relu at a valid step and the smallest gap between the max and the runner-up (over
 * examples with >= 2 valid steps: one of length 0 or 1 has no runner-up), over the checked point
 * and every finite-difference point; the test asserts both are at least REC_MARGIN, 1000 times
 * the finite-difference step, and prints them. The inputs are fixed (seed 11, U(-1, 1); the wide
 * max configuration seed 13, the widest of the smallest gaps over seeds 11..18, which ranged
 * from 4.8e-4 to 7.3e-3) and the parameters are the kernels' initialisation from CHECK64_SEED,
 * so the margins are the same on every run; relu and max are never combined (a relu unit at 0
 * on two steps would tie the max). Dropout's masks are constants given the seed; tbptt's
 * boundary states are constants by definition. */
#include <check.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check64.h"
#include "plugin_util.h"

#define REC_MARGIN 1e-3   /* smallest distance from a kink: 1000 finite-difference steps */

static const int32_t lens[3] = {5, 3, 1};
static const int32_t prelude_lens[3] = {2, 5, 4};   /* the stateful batch before */
static const int32_t lens0[3] = {4, 0, 2};          /* an empty example */
/* wide batches (B 20 or 40, the first B): empty, full and every length between */
static const int32_t lens_wide[40] = {5, 0, 3, 1, 5, 2, 4, 0, 5, 3, 1, 2, 5, 4, 0, 3, 5, 1, 2, 4,
				      3, 5, 0, 2, 4, 1, 5, 3, 0, 5, 2, 1, 4, 5, 3, 0, 2, 5, 1, 4};
static const int32_t prelude_wide[40] = {2, 5, 4, 5, 0, 3, 1, 5, 2, 4, 5, 3, 0, 1, 5, 2, 4, 5, 3, 1,
					 5, 1, 2, 4, 0, 5, 3, 2, 5, 4, 1, 0, 3, 5, 2, 4, 5, 1, 3, 2};

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
	const int32_t *lengths;   /* NULL: lens (B 3) or lens_wide */
	int64_t batch;         /* 0: 3 */
	int threads;           /* > 0: PLEXUS_REC_THREADS while the kernel runs */
	int max_fd;            /* check64's max_fd_per_tensor (0: every element) */
	uint64_t seed;         /* of the input x: 0 = 11 */
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

/* Threads of the recurrent kernels' step team alive in this process: plugins/common/recurrent.c
 * names each worker "px-rec-team" (pthread_setname_np), and a team of n threads is the caller
 * and n - 1 workers; -1: /proc/self/task cannot be read. */
static int team_workers(void)
{
	DIR *d = opendir("/proc/self/task");
	if (!d)
		return -1;
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		char path[300], comm[32] = "";
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
		FILE *f = fopen(path, "r");
		if (!f)
			continue;
		if (fgets(comm, sizeof comm, f) && !strcmp(comm, "px-rec-team\n"))
			n++;
		fclose(f);
	}
	closedir(d);
	return n;
}

/* team_workers() once it is 0, or after a second: a joined thread's task can stay listed in
 * /proc for a moment after pthread_join returns (its tid is cleared before it is reaped), but a
 * team that outlives its layer stays */
static int team_workers_settled(void)
{
	int n = team_workers();
	for (int i = 0; n > 0 && i < 1000; i++) {
		nanosleep(&(struct timespec){0, 1000000}, NULL);
		n = team_workers();
	}
	return n;
}

/* The reference's forward, wrapped to count the team's workers once: check64 runs the kernel's
 * forward (the prelude's or the checked one) before the reference's first, and the kernel
 * instance lives until check64 returns, so the count is that of the kernel's step team. */
static void (*ref_forward_inner)(struct ref_layer *, int, struct r64 *const *, struct r64 **);
static int workers_seen;   /* -2: not counted yet */

static void ref_forward_counting(struct ref_layer *l, int n_in, struct r64 *const *in,
				 struct r64 **out)
{
	if (workers_seen == -2)
		workers_seen = team_workers();
	ref_forward_inner(l, n_in, in, out);
}

/* Checks `plugin`'s layer `kind` on configuration c; returns the Jacobian elements checked. */
static int64_t expect_rec(const char *plugin, const char *kind, const struct rec_cfg *c)
{
	char opts[256], name[160];
	int64_t dirs = c->bidir ? 2 : 1, nl = c->layers * dirs, B = c->batch ? c->batch : 3;
	const int32_t *lengths = c->lengths ? c->lengths : B == 3 ? lens : lens_wide;
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
	if (c->lengths && B == 3)
		nn += (size_t)snprintf(name + nn, sizeof name - nn, " len {%d,%d,%d}", c->lengths[0],
				       c->lengths[1], c->lengths[2]);
	if (B != 3)   /* the kernel pads the batch to P lanes, a multiple of 16 */
		nn += (size_t)snprintf(name + nn, sizeof name - nn, " B%lld (P %lld)", (long long)B,
				       (long long)((B + 15) / 16 * 16));
	if (c->threads)
		nn += (size_t)snprintf(name + nn, sizeof name - nn, " threads %d", c->threads);
	if (c->seed)
		snprintf(name + nn, sizeof name - nn, " x seed %llu", (unsigned long long)c->seed);

	struct ref_rec_margins m;
	struct ref_rec_opts ro = {
		.h0 = c->states >= 1, .c0 = c->states >= 2, .stateful = c->stateful, .tbptt = c->tbptt,
		.dropout = c->dropout, .seed = CHECK64_SEED, .margins = &m,
		.drop_order = !strcmp(plugin, "lstm_ref") ? REF_DROP_BATCH_FIRST : REF_DROP_LANES,
	};
	struct ref_layer ref = {0};
	ref_recurrent_opts(&ref, c->kind, c->hidden, c->layers, c->bidir, c->readout,
			   !c->reset_before, &ro);
	ref_forward_inner = ref.forward;
	ref.forward = ref_forward_counting;
	workers_seen = -2;

	struct px_arena *a = px_arena_new(1 << 16);
	struct px_tensor *in[3] = {uniform(a, B, 5, 3, c->seed ? c->seed : 11)};
	in[0]->lengths = lengths;
	for (int s = 0; s < c->states; s++)
		in[1 + s] = uniform(a, B, nl, c->hidden, 12 + (uint64_t)s);
	struct px_tensor *pre = uniform(a, B, 5, 3, 21);
	pre->lengths = B == 3 ? prelude_lens : prelude_wide;
	const struct px_tensor *prelude[1] = {pre};
	struct check64_opts o = {.train = c->dropout > 0, .prelude = c->stateful ? prelude : NULL,
				 .max_fd_per_tensor = c->max_fd};
	const char *fd_env = getenv("PLEXUS_REF64_MAX_FD");   /* a smaller subset (meson.build) */
	if (fd_env && atoi(fd_env) > 0 && (!c->max_fd || atoi(fd_env) < c->max_fd))
		o.max_fd_per_tensor = atoi(fd_env);
	struct check64_result res;
	ck_assert_msg(team_workers_settled() == 0, "%s: a step team is alive before the layer exists",
		      name);
	if (c->threads) {
		char v[16];
		snprintf(v, sizeof v, "%d", c->threads);
		setenv("PLEXUS_REC_THREADS", v, 1);
	}
	int rc = check64_layer(name, tp_layer(plugin, kind), opts, 1 + c->states, in, NULL, &ref,
			       &tp_host, &o, &res);
	unsetenv("PLEXUS_REC_THREADS");
	ck_assert_msg(rc == 0, "%s did not run", name);
	px_arena_free(a);
	CHECK64_ASSERT_PASSED(name, &res);
	/* the step ran on c->threads threads (else on the caller alone) */
	ck_assert_msg(workers_seen >= 0, "%s: cannot read /proc/self/task", name);
	ck_assert_msg(workers_seen == (c->threads ? c->threads - 1 : 0),
		      "%s: %d step-team workers alive during the check, want %d", name, workers_seen,
		      c->threads ? c->threads - 1 : 0);
	ck_assert_msg(team_workers_settled() == 0, "%s: the step team outlived its layer", name);
	if (c->threads)
		printf("    threads: PLEXUS_REC_THREADS=%d, %lld units in %lld tiles of 8: %d px-rec-team "
		       "worker(s) alive during the check, none after\n", c->threads,
		       (long long)c->hidden, (long long)((c->hidden + 7) / 8), workers_seen);
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
	/* wide batches (see test_wide_batches_match_float64_reference_over_lane_blocks) */
	{.kind = REF_LSTM, .hidden = 3, .layers = 2, .bidir = true, .readout = REF_LAST,
	 .dropout = 0.25, .batch = 20, .max_fd = 12},
	{.kind = REF_LSTM, .hidden = 3, .layers = 1, .bidir = true, .readout = REF_MEAN,
	 .states = 2, .tbptt = 2, .batch = 20, .max_fd = 12},
	{.kind = REF_LSTM, .hidden = 3, .layers = 1, .stateful = true, .batch = 20,
	 .max_fd = 12},
	{.kind = REF_LSTM, .hidden = 9, .layers = 1, .readout = REF_LAST, .states = 2, .batch = 40,
	 .max_fd = 12},
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

/* Batches wider than 16 examples: the kernels pad the batch to P lanes, a multiple of 16, and
 * run every lane block: B 20 (P 32: two blocks of 16; the AVX-512 matrix kernel's 32-lane
 * block; the max readout once, its winner margin asserted as in the narrow ones) and B 40
 * (P 48: its 32-lane block and its 16-lane tail; 9 units: a full tile of 8 and one of 1), over
 * lens_wide (empty, full and every length between). The lstm and lstm_ref ones are in
 * lstm_cfgs. The reference runs every example on its own, so finite differences over a wide
 * batch would check nothing that the narrow ones do not: they take a fixed random 12 elements
 * of each input and parameter tensor; the float32 kernel is compared with the reference on
 * every element. */
START_TEST(test_wide_batches_match_float64_reference_over_lane_blocks)
{
	static const struct rec_cfg rnn[] = {
		{.kind = REF_RNN_TANH, .hidden = 4, .layers = 1, .bidir = true, .readout = REF_MEAN,
		 .states = 1, .batch = 20, .max_fd = 12},
		{.kind = REF_RNN_RELU, .hidden = 3, .layers = 2, .readout = REF_LAST, .batch = 20,
		 .max_fd = 12},
		{.kind = REF_RNN_TANH, .hidden = 9, .layers = 1, .bidir = true, .tbptt = 3, .batch = 40,
		 .max_fd = 12},
		{.kind = REF_RNN_TANH, .hidden = 3, .layers = 1, .bidir = true, .readout = REF_MAX,
		 .states = 1, .batch = 20, .max_fd = 12, .seed = 13},
	};
	static const struct rec_cfg gru[] = {
		{.kind = REF_GRU, .hidden = 3, .layers = 1, .bidir = true, .readout = REF_MEAN,
		 .states = 1, .reset_before = true, .batch = 20, .max_fd = 12},
		{.kind = REF_GRU, .hidden = 3, .layers = 2, .bidir = true, .dropout = 0.25, .tbptt = 2,
		 .batch = 20, .max_fd = 12},
		{.kind = REF_GRU, .hidden = 4, .layers = 1, .readout = REF_LAST, .stateful = true,
		 .batch = 20, .max_fd = 12},
		{.kind = REF_GRU, .hidden = 9, .layers = 1, .readout = REF_MEAN, .states = 1,
		 .batch = 40, .max_fd = 12},
	};
	expect_all("rnn", "rnn", rnn, N_OF(rnn));
	expect_all("gru", "gru", gru, N_OF(gru));
}
END_TEST

/* The step team (plugins/common/recurrent.c). threads_for gives a layer exactly
 * PLEXUS_REC_THREADS threads when that is set (otherwise OpenBLAS's count, and only for steps of
 * at least 4M multiply-adds), but at most one per two tiles of 8 units: with
 * PLEXUS_REC_THREADS=2, 25 units (4 tiles: 3 of 8 and one of 1) is the smallest layer whose steps
 * run on 2 threads, on any machine (the count is not capped by the cores). The variable is read
 * at every forward and stays set for the whole check. That it ran so: forward_setup starts a
 * team of that many threads, the caller and workers named px-rec-team (or, when threads cannot
 * be started, none: the caller runs alone), keeps it until the layer is destroyed, and
 * run_stages hands every stage of forward and backward to it; expect_rec counts the workers
 * after the kernel's first forward, while its instance is alive: 1 here, 0 in every other
 * configuration, and 0 again once the layer is freed. Which tiles the worker takes in a step is
 * left to the work sharing, so this shows that the team ran the steps, not which thread
 * computed which unit. These are finite-differenced on a fixed random 40 elements per tensor
 * (24 for the batch of 20; of their 1,700 to 4,500 elements); the float32 kernel is compared
 * with the reference on every element. */
START_TEST(test_step_team_matches_float64_reference)
{
	static const struct rec_cfg rnn[] = {
		{.kind = REF_RNN_TANH, .hidden = 25, .layers = 1, .bidir = true, .readout = REF_LAST,
		 .states = 1, .tbptt = 2, .threads = 2, .max_fd = 40},
	};
	static const struct rec_cfg lstm[] = {
		{.kind = REF_LSTM, .hidden = 25, .layers = 1, .readout = REF_MEAN, .states = 2,
		 .threads = 2, .max_fd = 40},
	};
	static const struct rec_cfg gru[] = {
		{.kind = REF_GRU, .hidden = 25, .layers = 1, .bidir = true, .reset_before = true,
		 .stateful = true, .threads = 2, .max_fd = 40},
		{.kind = REF_GRU, .hidden = 25, .layers = 1, .readout = REF_LAST, .tbptt = 3,
		 .batch = 20, .threads = 2, .max_fd = 24},
	};
	expect_all("rnn", "rnn", rnn, N_OF(rnn));
	expect_all("lstm", "lstm", lstm, N_OF(lstm));
	expect_all("gru", "gru", gru, N_OF(gru));
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
	tcase_add_test(tc, test_wide_batches_match_float64_reference_over_lane_blocks);
	tcase_add_test(tc, test_step_team_matches_float64_reference);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
