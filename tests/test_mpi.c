/* Data-parallel training under mpirun (built only with -Dmpi=enabled): parity with one process
 * at every step, identical bytes on every rank, failures ending the job, resume, refusals.
 * Needs $PLEXUS_EXE and $PLEXUS_MPIRUN; runs from the source root. `test_mpi nompi` runs only
 * the comparison with a build without MPI ($PLEXUS_NOMPI_EXE; exit 77, skipped, without it). */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define RTOL 1e-5

struct run {
	int code;        /* exit status, 128+signal, or -1 when killed for running too long */
	double secs;
	char err[1 << 16];
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void slurp(const char *path, char *buf, size_t n)
{
	FILE *f = fopen(path, "r");
	size_t got = f ? fread(buf, 1, n - 1, f) : 0;
	buf[got] = 0;
	if (f)
		fclose(f);
}

/* Run argv (NULL-terminated) with extra "NAME=value" settings (NULL-terminated, may be NULL)
 * in its own process group; stdout is dropped, stderr kept. Killed after limit_s. */
static int run_cmd(struct run *r, const char *const *argv, const char *const *env, int limit_s)
{
	char e[64];
	snprintf(e, sizeof e, "/tmp/px-mpi-err-%d", (int)getpid());
	double t0 = now_s();
	pid_t pid = fork();
	if (pid == 0) {
		setpgid(0, 0);
		int fo = open("/dev/null", O_WRONLY), fe = open(e, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		dup2(fo, 1);
		dup2(fe, 2);
		for (int i = 0; env && env[i]; i++)
			putenv((char *)env[i]);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	int st = 0;
	r->code = -1;
	for (;;) {
		pid_t w = waitpid(pid, &st, WNOHANG);
		if (w == pid) {
			r->code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
			break;
		}
		if (now_s() - t0 > limit_s) {
			kill(-pid, SIGKILL);
			waitpid(pid, &st, 0);
			break;
		}
		usleep(20000);
	}
	r->secs = now_s() - t0;
	slurp(e, r->err, sizeof r->err);
	unlink(e);
	return r->code;
}

static const char *exe(void)
{
	const char *p = getenv("PLEXUS_EXE");
	return p ? p : "plexus";
}

/* plexus train PIPELINE --run-dir DIR [extra...] under `mpirun -np np` (np 0: no mpirun). */
static int train(struct run *r, int np, const char *pipeline, const char *dir,
		 const char *const *extra, const char *const *env)
{
	const char *argv[64];
	int n = 0;
	char nps[16];
	if (np > 0) {
		snprintf(nps, sizeof nps, "%d", np);
		argv[n++] = getenv("PLEXUS_MPIRUN");
		argv[n++] = "-np";
		argv[n++] = nps;
		argv[n++] = "--bind-to";
		argv[n++] = "none";
	}
	argv[n++] = exe();
	argv[n++] = "train";
	argv[n++] = pipeline;
	argv[n++] = "--run-dir";
	argv[n++] = dir;
	for (int i = 0; extra && extra[i] && n < 62; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
	return run_cmd(r, argv, env, 300);
}

static const char *temp_dir(char *buf, size_t n)
{
	snprintf(buf, n, "/tmp/px-mpi-XXXXXX");
	return mkdtemp(buf);
}

/* The whole file; *n its length in bytes. Caller frees; NULL when it cannot be read. */
static unsigned char *read_bytes(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	*n = 0;
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	long len = ftell(f);
	fseek(f, 0, SEEK_SET);
	unsigned char *v = len >= 0 ? malloc((size_t)len + 4) : NULL;
	if (v && fread(v, 1, (size_t)len, f) == (size_t)len)
		*n = (size_t)len;
	fclose(f);
	return v;
}

static float *read_floats(const char *path, size_t *n)
{
	float *v = (float *)read_bytes(path, n);
	*n /= sizeof(float);
	return v;
}

static bool same_file(const char *a, const char *b)
{
	size_t na, nb;
	float *x = read_floats(a, &na), *y = read_floats(b, &nb);
	bool same = x && y && na == nb && na > 0 && !memcmp(x, y, na * sizeof(float));
	free(x);
	free(y);
	return same;
}

/* The tensor bytes of two safetensors files (everything after the JSON header, whose metadata
 * may hold timings) are the same, and there are some. */
static bool same_tensors(const char *a, const char *b)
{
	size_t na, nb;
	unsigned char *x = read_bytes(a, &na), *y = read_bytes(b, &nb);
	uint64_t ha = 0, hb = 0;
	if (x && y && na >= 8 && nb >= 8) {
		memcpy(&ha, x, 8);
		memcpy(&hb, y, 8);
	}
	bool same = ha > 0 && hb > 0 && ha < na - 8 && hb < nb - 8 && na - ha == nb - hb &&
		    !memcmp(x + 8 + ha, y + 8 + hb, na - 8 - ha);
	free(x);
	free(y);
	return same;
}

/* Largest |a-b| / |a| over the elements (a: one process), elements with |a| < 1e-3 counted
 * against 1e-3 so that a weight passing through zero is not a division by ~0. */
static double max_rel_err(const char *ref, const char *got, size_t *n_out)
{
	size_t na, nb;
	float *a = read_floats(ref, &na), *b = read_floats(got, &nb);
	double worst = (a && b && na == nb && na > 0) ? 0 : INFINITY;
	for (size_t i = 0; isfinite(worst) && i < na; i++) {
		double den = fabs(a[i]) > 1e-3 ? fabs(a[i]) : 1e-3;
		double e = fabs((double)a[i] - b[i]) / den;
		worst = e > worst || isnan(e) ? e : worst;
	}
	*n_out = na;
	free(a);
	free(b);
	return worst;
}

static int count_of(const char *s, const char *needle)
{
	int n = 0;
	for (const char *p = s; (p = strstr(p, needle)); p++)
		n++;
	return n;
}

/* One process, 2 ranks and 3 ranks (uneven: 3/3/2 and a last batch of 2 = 1/1/0) train the
 * same pipeline for five steps, dumping every parameter after every step. */
static void check_parity(const char *pipeline)
{
	char one[64], dir[64], dump[3][128], env[3][200];
	temp_dir(one, sizeof one);
	struct run r;
	for (int np = 1; np <= 3; np++) {
		snprintf(dump[np - 1], sizeof dump[0], "%s/dump-np%d", one, np);
		mkdir(dump[np - 1], 0755);
		snprintf(env[np - 1], sizeof env[0], "PLEXUS_DUMP_PARAMS_DIR=%s", dump[np - 1]);
		snprintf(dir, sizeof dir, "%s/run-np%d", one, np);
		const char *e[] = {env[np - 1], NULL};
		train(&r, np == 1 ? 0 : np, pipeline, dir, NULL, e);
		ck_assert_msg(r.code == 0, "%s with %d rank(s) exited %d: %s", pipeline, np, r.code, r.err);
		if (np > 1) {  /* rank 0 alone reports */
			ck_assert_int_eq(count_of(r.err, "epoch 1/1: train loss"), 1);
			ck_assert_int_eq(count_of(r.err, "ranks: communication"), 1);
		}
	}
	double worst = 0;
	for (int step = 1; step <= 5; step++) {
		char ref[256], got[256], r0[256];
		snprintf(ref, sizeof ref, "%s/rank0-step%d.f32", dump[0], step);
		for (int np = 2; np <= 3; np++) {
			snprintf(r0, sizeof r0, "%s/rank0-step%d.f32", dump[np - 1], step);
			size_t n;
			double e = max_rel_err(ref, r0, &n);
			ck_assert_msg(e <= RTOL, "%s step %d, %d ranks: relative error %g > %g over %zu values",
				      pipeline, step, np, e, RTOL, n);
			worst = e > worst ? e : worst;
			for (int rank = 1; rank < np; rank++) {
				snprintf(got, sizeof got, "%s/rank%d-step%d.f32", dump[np - 1], rank, step);
				ck_assert_msg(same_file(r0, got), "%s step %d: rank %d of %d holds other bytes than rank 0",
					      pipeline, step, rank, np);
			}
		}
		snprintf(got, sizeof got, "%s/rank0-step6.f32", dump[0]);
		ck_assert_msg(access(got, F_OK) != 0, "more than five steps");
	}
	printf("%s: 2 and 3 ranks vs one process, steps 1-5: max relative error %.3g\n", pipeline, worst);
}

START_TEST(test_lstm_two_and_three_ranks_match_one_process_at_every_step)
{
	check_parity("tests/pipelines/mpi-lstm.yaml");
}
END_TEST

START_TEST(test_conv_two_and_three_ranks_match_one_process_at_every_step)
{
	check_parity("tests/pipelines/mpi-conv.yaml");
}
END_TEST

/* A rank that fails mid-run (the PLEXUS_TEST_FAIL hook) while the others wait in the
 * allreduce: the whole job ends, non-zero, well within 60 s. Rank 1 of 3, then rank 0 of 2. */
START_TEST(test_a_rank_failing_at_step_2_ends_the_job_nonzero_within_60s)
{
	static const struct {
		int np;
		const char *hook, *says;
	} cases[] = {
		{3, "PLEXUS_TEST_FAIL=1:2", "rank 1 fails at step 2"},
		{2, "PLEXUS_TEST_FAIL=0:2", "rank 0 fails at step 2"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char d[64];
		temp_dir(d, sizeof d);
		struct run r;
		const char *e[] = {cases[i].hook, NULL};
		train(&r, cases[i].np, "tests/pipelines/mpi-lstm.yaml", d, NULL, e);
		ck_assert_msg(r.code != 0 && r.code != -1, "%s: exit %d", cases[i].hook, r.code);
		ck_assert_msg(r.secs < 60, "%s: the job took %.1f s to end", cases[i].hook, r.secs);
		ck_assert_msg(strstr(r.err, cases[i].says), "%s: stderr was %s", cases[i].hook, r.err);
		printf("%s with %d ranks: exit %d after %.2f s\n", cases[i].hook, cases[i].np, r.code, r.secs);
	}
}
END_TEST

static void losses_of_last_epoch(const char *dir, char *buf, size_t n)
{
	char p[256], csv[8192];
	snprintf(p, sizeof p, "%s/metrics.csv", dir);
	slurp(p, csv, sizeof csv);
	char *last = strstr(csv, "\n2,");  /* epoch 2: epoch,step,train_loss,train_acc,val_loss */
	buf[0] = 0;
	if (!last)
		return;
	int commas = 0;
	size_t i = 0;
	for (last++; last[i] && last[i] != '\n' && i + 1 < n && commas < 5; i++) {
		commas += last[i] == ',';
		buf[i] = last[i];
	}
	buf[i] = 0;
}

/* Two ranks run 2 epochs without a break; two other ranks checkpoint every 3 steps, lose
 * rank 1 at step 5 (the job dies), and resume from step 3: the parameters, the optimizer
 * state and the last epoch's losses are the same bytes. */
START_TEST(test_resume_under_two_ranks_equals_the_uninterrupted_run)
{
	char full[64], part[64], a[256], b[256], la[512], lb[512];
	temp_dir(full, sizeof full);
	temp_dir(part, sizeof part);
	const char *opts[] = {"--set", "train.epochs=2", "--set", "train.checkpoint.every=3", NULL};
	const char *resume[] = {"--set", "train.epochs=2", "--set", "train.checkpoint.every=3",
				"--resume", NULL};
	const char *crash[] = {"PLEXUS_TEST_FAIL=1:5", NULL};
	struct run r;
	ck_assert_msg(train(&r, 2, "tests/pipelines/mpi-lstm.yaml", full, opts, NULL) == 0, "%s", r.err);
	ck_assert_int_ne(train(&r, 2, "tests/pipelines/mpi-lstm.yaml", part, opts, crash), 0);
	ck_assert_msg(train(&r, 2, "tests/pipelines/mpi-lstm.yaml", part, resume, NULL) == 0, "%s", r.err);
	ck_assert_msg(strstr(r.err, "resuming") && strstr(r.err, "step 3"), "%s", r.err);
	for (int k = 0; k < 2; k++) {
		const char *f = k ? "state.safetensors" : "model.safetensors";
		snprintf(a, sizeof a, "%s/%s", full, f);
		snprintf(b, sizeof b, "%s/%s", part, f);
		ck_assert_msg(same_tensors(a, b), "the tensors of %s differ after resuming", f);
	}
	losses_of_last_epoch(full, la, sizeof la);
	losses_of_last_epoch(part, lb, sizeof lb);
	ck_assert_msg(la[0], "no epoch 2 in %s/metrics.csv", full);
	ck_assert_str_eq(la, lb);
}
END_TEST

/* mpirun MPMD: two ranks given different pipelines (another batch size) refuse to train, and
 * the message names the rank and what differs. */
START_TEST(test_ranks_with_different_pipelines_refuse_to_train)
{
	char d[64];
	temp_dir(d, sizeof d);
	const char *argv[] = {getenv("PLEXUS_MPIRUN"), "-np", "1", exe(), "train",
			      "tests/pipelines/mpi-lstm.yaml", "--run-dir", d, ":", "-np", "1", exe(), "train",
			      "tests/pipelines/mpi-lstm.yaml", "--run-dir", d, "--set", "train.batch=9", NULL};
	struct run r;
	run_cmd(&r, argv, NULL, 120);
	ck_assert_msg(r.code != 0 && r.code != -1, "exit %d", r.code);
	ck_assert_msg(strstr(r.err, "rank 1 (") && strstr(r.err, "disagree on the pipeline"), "%s", r.err);
	ck_assert_int_eq(count_of(r.err, "disagree on the pipeline"), 1);
}
END_TEST

static void expect_same_run(const char *a, const char *b, const char *what)
{
	static const char *const files[] = {"model.safetensors", "state.safetensors"};
	for (int k = 0; k < 2; k++) {
		char pa[256], pb[256];
		snprintf(pa, sizeof pa, "%s/%s", a, files[k]);
		snprintf(pb, sizeof pb, "%s/%s", b, files[k]);
		ck_assert_msg(same_tensors(pa, pb), "%s: the tensors of %s differ", what, files[k]);
	}
}

/* The MPI build without mpirun, and under `mpirun -np 1`, trains bit for bit as the build
 * without MPI ($PLEXUS_NOMPI_EXE). */
START_TEST(test_mpi_build_alone_equals_the_build_without_mpi_bit_for_bit)
{
	char base[64], a[128], b[128], c[128];
	temp_dir(base, sizeof base);
	snprintf(a, sizeof a, "%s/mpi-build", base);
	snprintf(b, sizeof b, "%s/nompi-build", base);
	snprintf(c, sizeof c, "%s/mpirun-np1", base);
	const char *opts[] = {"--set", "train.epochs=2", NULL};
	const char *pipes[] = {"tests/pipelines/mpi-lstm.yaml", "tests/pipelines/mpi-conv.yaml"};
	for (int k = 0; k < 2; k++) {
		struct run r;
		ck_assert_msg(train(&r, 0, pipes[k], a, opts, NULL) == 0, "%s", r.err);
		const char *argv[] = {getenv("PLEXUS_NOMPI_EXE"), "train", pipes[k], "--run-dir", b,
				      "--set", "train.epochs=2", NULL};
		ck_assert_msg(run_cmd(&r, argv, NULL, 300) == 0, "%s", r.err);
		ck_assert_msg(train(&r, 1, pipes[k], c, opts, NULL) == 0, "%s", r.err);
		expect_same_run(a, b, pipes[k]);
		expect_same_run(a, c, pipes[k]);
	}
}
END_TEST

int main(int argc, char **argv)
{
	Suite *s = suite_create("mpi");
	TCase *tc = tcase_create("mpi");
	tcase_set_timeout(tc, 600);
	if (argc > 1 && !strcmp(argv[1], "nompi")) {
		if (!getenv("PLEXUS_NOMPI_EXE") || !*getenv("PLEXUS_NOMPI_EXE")) {
			fprintf(stderr, "skipped: set PLEXUS_NOMPI_EXE to the plexus of a build without MPI "
				"(scripts/test-mpi.sh does)\n");
			return 77;
		}
		tcase_add_test(tc, test_mpi_build_alone_equals_the_build_without_mpi_bit_for_bit);
	} else {
		tcase_add_test(tc, test_lstm_two_and_three_ranks_match_one_process_at_every_step);
		tcase_add_test(tc, test_conv_two_and_three_ranks_match_one_process_at_every_step);
		tcase_add_test(tc, test_a_rank_failing_at_step_2_ends_the_job_nonzero_within_60s);
		tcase_add_test(tc, test_resume_under_two_ranks_equals_the_uninterrupted_run);
		tcase_add_test(tc, test_ranks_with_different_pipelines_refuse_to_train);
	}
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
