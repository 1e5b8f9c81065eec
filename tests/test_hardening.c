/* Hostile and unlucky conditions through the plexus command: pipelines nested 100,000 deep or
 * over the size cap, plugin files others can write to or named relatively, a trainer killed
 * with SIGKILL at random moments while it checkpoints every step, and layers that emit NaN in
 * forward or backward. Runs from the source root; the
 * checkpoints are checked with the core's own reader. */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli_util.h"
#include "internal.h"

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ------------------------------------------------------------------ nesting and size */
/* `validate` of a generated file: exit 2, the expected first line, in well under a second. */
static double validate_time(const char *path, const char *want_suffix)
{
	struct run r;
	char got[4096];
	double t0 = now_s();
	int code = run_plexus(&r, "validate", path, NULL);
	double t = now_s() - t0;
	ck_assert_msg(code == 2, "%s: exit %d: %s", path, code, r.err);
	first_line(r.err, got, sizeof got);
	ck_assert_msg(strncmp(got, path, strlen(path)) == 0 && strstr(got, want_suffix),
		      "%s: got '%s', want '%s...%s'", path, got, path, want_suffix);
	return t;
}

START_TEST(test_100000_deep_nesting_is_rejected_in_milliseconds)
{
	char d[64], flow[128], map[128], block[128];
	temp_dir(d, sizeof d);
	snprintf(flow, sizeof flow, "%s/deep-flow.yaml", d);
	snprintf(map, sizeof map, "%s/deep-map.yaml", d);
	snprintf(block, sizeof block, "%s/deep-block.yaml", d);
	enum { DEPTH = 100000 };
	FILE *f = fopen(flow, "w");
	fputs("name: deep\nmodel: ", f);
	for (int i = 0; i < DEPTH; i++)
		fputc('[', f);
	for (int i = 0; i < DEPTH; i++)
		fputc(']', f);
	fputc('\n', f);
	fclose(f);
	f = fopen(map, "w");
	fputs("name: deep\neval: ", f);
	for (int i = 0; i < DEPTH; i++)
		fputs("{a: ", f);
	fputc('1', f);
	for (int i = 0; i < DEPTH; i++)
		fputc('}', f);
	fputc('\n', f);
	fclose(f);
	f = fopen(block, "w");   /* "- - - - ...": block sequences, one level per two bytes */
	fputs("name: deep\nmodel:\n  ", f);
	for (int i = 0; i < DEPTH; i++)
		fputs("- ", f);
	fputs("x\n", f);
	fclose(f);
	/* depth 33 is reached at byte 32 of the nesting: the rest is never parsed */
	double tf = validate_time(flow, ":2:39: nesting deeper than 32 levels");
	double tm = validate_time(map, ":2:131: nesting deeper than 32 levels");
	double tb = validate_time(block, ":3:65: nesting deeper than 32 levels");
	printf("100,000-deep nesting rejected by plexus validate in %.1f ms (flow sequences), "
	       "%.1f ms (flow mappings), %.1f ms (block sequences), process start included\n",
	       1e3 * tf, 1e3 * tm, 1e3 * tb);
	/* the loader itself, in this process: CPU time, so a busy machine does not count */
	const char *files[] = {flow, map, block};
	for (int i = 0; i < 3; i++) {
		struct timespec a, b;
		struct px_pipeline *p;
		struct px_error err;
		clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &a);
		int rc = px_pipeline_load(files[i], NULL, 0, &p, &err);
		clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &b);
		double cpu = (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
		ck_assert_int_eq(rc, PX_ERR_PARSE);
		ck_assert_ptr_nonnull(strstr(err.msg, "nesting deeper than 32 levels"));
		printf("  px_pipeline_load(%s): %.3f ms of CPU time\n", strrchr(files[i], '/') + 1,
		       1e3 * cpu);
		ck_assert_msg(cpu < 1.0, "%s: %.3f s", files[i], cpu);
	}
	ck_assert_msg(tf < 10 && tm < 10 && tb < 10, "%.3f %.3f %.3f s", tf, tm, tb);
}
END_TEST

START_TEST(test_a_pipeline_over_the_size_cap_is_refused_without_reading_it)
{
	char d[64], big[128], want[256];
	temp_dir(d, sizeof d);
	snprintf(big, sizeof big, "%s/big.yaml", d);
	FILE *f = fopen(big, "w");
	fputs("name: big\n", f);
	char line[1025];
	memset(line, '#', 1023);
	line[1023] = '\n';
	line[1024] = 0;
	long n = 10;
	while (n <= (long)PX_PIPELINE_MAX_BYTES) {   /* comments: valid YAML, only too much of it */
		fputs(line, f);
		n += 1024;
	}
	fclose(f);
	snprintf(want, sizeof want, ": file is %ld bytes, more than the %u allowed", n,
		 PX_PIPELINE_MAX_BYTES);
	double t = validate_time(big, want);
	printf("a %ld-byte pipeline refused in %.1f ms\n", n, 1e3 * t);
}
END_TEST

/* ------------------------------------------------------------------ SIGKILL while saving */
/* metrics.csv without the timing columns (seconds, items_per_s) */
static void losses_of(const char *dir, char *buf, size_t n)
{
	char p[512], line[2048];
	snprintf(p, sizeof p, "%s/metrics.csv", dir);
	FILE *f = fopen(p, "r");
	ck_assert_msg(f != NULL, "%s: %s", p, strerror(errno));
	size_t used = 0;
	buf[0] = 0;
	while (fgets(line, sizeof line, f)) {
		for (int k = 0; k < 2; k++) {
			char *c = strrchr(line, ',');
			if (c)
				*c = 0;
		}
		used += (size_t)snprintf(buf + used, n - used, "%s\n", line);
	}
	fclose(f);
}

static uint64_t file_hash(const char *path)
{
	char *data;
	size_t len;
	struct px_error err;
	if (px_read_file(path, 1u << 30, &data, &len, &err))
		return 0;
	uint64_t h = px_hash64(data, len, 0);
	free(data);
	return h;
}

/* The step a checkpoint was saved at, read with the core's full validation; -1 when the file
 * does not exist. A file that exists but does not load fails the test. */
static int64_t ckpt_step(const char *dir, const char *name)
{
	char p[512];
	snprintf(p, sizeof p, "%s/%s", dir, name);
	if (access(p, F_OK) != 0)
		return -1;
	struct px_st_file *f;
	struct px_error err;
	ck_assert_msg(px_st_open(p, &f, &err) == 0, "a torn checkpoint: %s", err.msg);
	const char *s = px_st_meta(f, "plexus.step");
	int64_t step = -1;
	ck_assert_msg(s && px_parse_int(s, &step), "%s: no plexus.step", p);
	for (int i = 0; i < px_st_count(f); i++) {
		int nd;
		int64_t sh[PX_MAX_DIMS], numel = 1;
		const float *d = px_st_data(f, i, &nd, sh);
		for (int k = 0; k < nd; k++)
			numel *= sh[k];
		for (int64_t k = 0; k < numel; k++)
			ck_assert_msg(isfinite(d[k]), "%s: %s[%lld] is not finite", p, px_st_name(f, i),
				      (long long)k);
	}
	px_st_close(f);
	return step;
}

static int count_temps(const char *dir)
{
	DIR *d = opendir(dir);
	int n = 0;
	for (struct dirent *e; d && (e = readdir(d));)
		n += strstr(e->d_name, ".tmp") != NULL;
	if (d)
		closedir(d);
	return n;
}

/* The last global step a trainer's stderr announced as done ("epoch E/N step k/S"), or -1. */
static int64_t last_step_logged(const char *log)
{
	FILE *f = fopen(log, "r");
	char line[512];
	int64_t last = -1;
	while (f && fgets(line, sizeof line, f)) {
		long long e, k, spe;
		if (sscanf(line, "epoch %lld/%*d step %lld/%lld", &e, &k, &spe) == 3)
			last = (e - 1) * spe + k;
	}
	if (f)
		fclose(f);
	return last;
}

static pid_t spawn_train(const char *dir, bool resume, const char *log)
{
	const char *exe = getenv("PLEXUS_EXE");
	/* emptied here, not in the child: a child killed before it opens the log must not leave
	 * the previous run's lines in it */
	int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	ck_assert_int_ge(fd, 0);
	close(fd);
	pid_t pid = fork();
	if (pid == 0) {
		fd = open(log, O_WRONLY | O_APPEND);
		int nul = open("/dev/null", O_WRONLY);
		dup2(nul, 1);
		dup2(fd, 2);
		const char *argv[] = {exe ? exe : "plexus", "train", "tests/pipelines/tiny.yaml",
				      "--run-dir", dir, "--set", "train.checkpoint.every=1", "--set",
				      "train.log_every=1", resume ? "--resume" : NULL, NULL};
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	return pid;
}

/* plexus train with checkpoint.every: 1 (steps) is killed with SIGKILL at random moments. After
 * each kill: model.safetensors and state.safetensors load with full validation (never torn);
 * a model of step s is byte for byte the one every other run saves at step s (the old or the
 * new file, nothing in between); the state is at the model's step or one ahead (it is written
 * first); at most one step of progress is lost; at most one temporary file is left. A run is
 * then resumed (--resume) and killed again, until it finishes: its losses and final model
 * are identical to an uninterrupted run's. */
START_TEST(test_sigkill_while_checkpointing_never_tears_and_resume_is_exact)
{
	const char *env = getenv("PLEXUS_TEST_KILLS");
	int want_kills = env ? atoi(env) : 100;
	/* on a machine much busier than CI, stop killing after this long (at least 20 kills) */
	env = getenv("PLEXUS_TEST_KILL_SECONDS");
	double budget = env ? atof(env) : 150;
	char ref[64], ref_losses[16384], got_losses[16384];
	temp_dir(ref, sizeof ref);
	struct run r;
	double t0 = now_s();
	ck_assert_int_eq(run_plexus(&r, "train", "tests/pipelines/tiny.yaml", "--run-dir", ref,
				    "--set", "train.checkpoint.every=1", "--set", "train.log_every=1",
				    NULL), 0);   /* as spawn_train: the overrides are in the metadata */
	double t_ref = now_s() - t0;
	losses_of(ref, ref_losses, sizeof ref_losses);
	int64_t final_step = ckpt_step(ref, "model.safetensors");
	ck_assert_int_gt(final_step, 10);
	uint64_t *hash_at = calloc((size_t)final_step + 1, sizeof *hash_at);
	char p[512];
	snprintf(p, sizeof p, "%s/model.safetensors", ref);
	hash_at[final_step] = file_hash(p);

	unsigned seed = (unsigned)time(NULL);
	srand(seed);
	/* kill within the first third of a whole run's time: several kills per run */
	long window_us = (long)(t_ref * 1e6 / 3);
	if (window_us < 20000)
		window_us = 20000;
	char dir[64] = "", log[128];
	snprintf(log, sizeof log, "/tmp/px-kill-log-%d", (int)getpid());
	int kills = 0, runs_done = 0, kills_mid_write = 0, max_temps = 0;
	int64_t prev_model = -1, lost_max = 0;
	t0 = now_s();
	while (kills < want_kills || dir[0]) {
		if (kills >= 20 && kills < want_kills && now_s() - t0 > budget) {
			printf("SIGKILL test: time budget of %.0f s spent after %d kills\n", budget, kills);
			want_kills = kills;
		}
		if (!dir[0]) {
			temp_dir(dir, sizeof dir);
			prev_model = -1;
		}
		snprintf(p, sizeof p, "%s/state.safetensors", dir);
		bool resume = access(p, F_OK) == 0;
		pid_t pid = spawn_train(dir, resume, log);
		if (kills < want_kills) {   /* else enough kills: let this one finish */
			usleep((useconds_t)(rand() % window_us));
			kill(pid, SIGKILL);
		}
		int st;
		waitpid(pid, &st, 0);
		if (WIFEXITED(st)) {   /* finished before the kill */
			ck_assert_msg(WEXITSTATUS(st) == 0, "train exit %d, see %s", WEXITSTATUS(st), log);
			losses_of(dir, got_losses, sizeof got_losses);
			ck_assert_str_eq(got_losses, ref_losses);
			snprintf(p, sizeof p, "%s/model.safetensors", dir);
			ck_assert_msg(file_hash(p) == hash_at[final_step], "%s differs from the "
				      "uninterrupted run's", p);
			runs_done++;
			dir[0] = 0;
			continue;
		}
		ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "train died otherwise");
		kills++;
		int temps = count_temps(dir);
		if (temps > 1) {
			char cmd[600];
			snprintf(cmd, sizeof cmd, "ls -la %s; cat %s", dir, log);
			if (system(cmd) != 0)
				printf("(cannot list %s)\n", dir);
		}
		ck_assert_msg(temps <= 1, "%d temporary files in %s", temps, dir);
		kills_mid_write += temps;
		max_temps = temps > max_temps ? temps : max_temps;
		int64_t m = ckpt_step(dir, "model.safetensors");
		int64_t s = ckpt_step(dir, "state.safetensors");
		int64_t logged = last_step_logged(log);
		if (s >= 0)   /* no model yet (m == -1): the state of step 1 may be there */
			ck_assert_msg(s == m || s == (m < 0 ? 1 : m + 1), "state at step %lld, model "
				      "at %lld", (long long)s, (long long)m);
		ck_assert_msg(m >= prev_model, "model went back from step %lld to %lld",
			      (long long)prev_model, (long long)m);
		if (logged >= 0) {   /* the step announced may still be in its checkpoint write */
			int64_t have = m < 0 ? 0 : m;   /* no model yet: the initial one, step 0 */
			if (have < logged - 1) {
				char cmd[600];
				snprintf(cmd, sizeof cmd, "ls -la %s; cat %s", dir, log);
				if (system(cmd) != 0)
					printf("(cannot list %s)\n", dir);
			}
			ck_assert_msg(have >= logged - 1, "step %lld was done, the model is at %lld, "
				      "the state at %lld", (long long)logged, (long long)m, (long long)s);
			lost_max = logged - have > lost_max ? logged - have : lost_max;
		}
		if (m >= 0) {
			ck_assert_int_le(m, final_step);
			snprintf(p, sizeof p, "%s/model.safetensors", dir);
			uint64_t h = file_hash(p);
			if (hash_at[m])
				ck_assert_msg(hash_at[m] == h, "two different models of step %lld",
					      (long long)m);
			hash_at[m] = h;
		}
		if (kills % 10 == 0 && m >= 0) {   /* and black-box, as a user would */
			snprintf(p, sizeof p, "%s/model.safetensors", dir);
			ck_assert_int_eq(run_plexus(&r, "inspect", p, NULL), 0);
			ck_assert_int_eq(run_plexus(&r, "eval", "tests/pipelines/tiny.yaml",
						    "--checkpoint", p, "--split", "val", NULL), 0);
		}
		prev_model = m;
	}
	unlink(log);
	double t = now_s() - t0;
	printf("SIGKILL test (seed %u): %d kills in %.1f s (uninterrupted run %.2f s, kill window "
	       "%.0f ms); %d kills left a temporary file (killed mid-write), at most %d at once; "
	       "at most %lld step(s) lost; %d killed runs resumed to the end with identical losses "
	       "and model\n", seed, kills, t, t_ref, window_us / 1e3, kills_mid_write, max_temps,
	       (long long)lost_max, runs_done);
	ck_assert_int_ge(runs_done, 1);
	free(hash_at);
}
END_TEST

/* ------------------------------------------------------------------ plugin files */
/* a copy of the good fake plugin as dir/x.so with mode `mode` */
static void plugin_copy(const char *dir, mode_t mode)
{
	char src[512], dst[512];
	snprintf(src, sizeof src, "%s/fake-good.so", getenv("PLEXUS_FAKE_DIR"));
	snprintf(dst, sizeof dst, "%s/x.so", dir);
	char *data;
	size_t len;
	struct px_error err;
	ck_assert_msg(px_read_file(src, 1u << 26, &data, &len, &err) == 0, "%s", err.msg);
	FILE *f = fopen(dst, "wb");
	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(fwrite(data, 1, len, f), len);
	fclose(f);
	free(data);
	ck_assert_int_eq(chmod(dst, mode), 0);
}

START_TEST(test_plugin_files_or_directories_others_can_write_are_refused)
{
	char d[64], so[128];
	struct run r;
	temp_dir(d, sizeof d);
	snprintf(so, sizeof so, "%s/x.so", d);
	plugin_copy(d, 0644);   /* the control: it loads */
	ck_assert_int_eq(run_plexus(&r, "plugins", "--plugin-path", d, NULL), 0);
	ck_assert_msg(strstr(r.out, "fake-good 0.0.1") && !strstr(r.out, "refused"), "%s", r.out);
	ck_assert_int_eq(chmod(so, 0664), 0);   /* group-writable file */
	ck_assert_int_eq(run_plexus(&r, "plugins", "--plugin-path", d, NULL), 0);
	ck_assert_msg(strstr(r.out, "x.so: refused: the file is writable by group or others") &&
		      !strstr(r.out, "fake-good 0.0.1"), "%s", r.out);
	ck_assert_int_eq(chmod(so, 0646), 0);   /* world-writable file */
	ck_assert_int_eq(run_plexus(&r, "plugins", "--plugin-path", so, NULL), 0);
	ck_assert_msg(strstr(r.out, "x.so: refused: the file is writable by group or others"), "%s", r.out);
	ck_assert_int_eq(chmod(so, 0644), 0);
	ck_assert_int_eq(chmod(d, 0777), 0);    /* world-writable directory: searched or named */
	ck_assert_int_eq(run_plexus(&r, "plugins", "--plugin-path", d, NULL), 0);
	ck_assert_msg(strstr(r.out, "plugin directory refused: writable by others") &&
		      !strstr(r.out, "fake-good 0.0.1"), "%s", r.out);
	ck_assert_int_eq(run_plexus(&r, "plugins", "--plugin-path", so, NULL), 0);
	ck_assert_msg(strstr(r.out, "x.so: refused: its directory is writable by others") &&
		      !strstr(r.out, "fake-good 0.0.1"), "%s", r.out);
	chmod(d, 0700);
}
END_TEST

/* plexus run with `dir` as the working directory and PLEXUS_PLUGIN_PATH=pp */
static int run_in(const char *dir, const char *pp, struct run *r, const char *const *args)
{
	int here = open(".", O_RDONLY | O_DIRECTORY);
	char *old = getenv("PLEXUS_PLUGIN_PATH") ? strdup(getenv("PLEXUS_PLUGIN_PATH")) : NULL;
	ck_assert_int_eq(chdir(dir), 0);
	setenv("PLEXUS_PLUGIN_PATH", pp, 1);
	int code = run_plexus_argv(r, args);
	ck_assert_int_eq(fchdir(here), 0);
	close(here);
	if (old)
		setenv("PLEXUS_PLUGIN_PATH", old, 1);
	else
		unsetenv("PLEXUS_PLUGIN_PATH");
	free(old);
	return code;
}

START_TEST(test_relative_plugin_paths_never_reach_the_working_directory)
{
	char d[64], yaml[128];
	struct run r;
	temp_dir(d, sizeof d);
	plugin_copy(d, 0644);   /* a plugin in the working directory */
	const char *src = getenv("PLEXUS_SRC");
	snprintf(yaml, sizeof yaml, "%s/p.yaml", d);
	const char *impls[] = {"./x.so", "x.so"};
	const char *want[] = {"impl: plugin file './x.so' must be an absolute path",
			      "unknown layer kind 'fake_scale'"};
	for (int i = 0; i < 2; i++) {
		FILE *f = fopen(yaml, "w");
		fprintf(f, "name: rel\ndata: {train: {source: csv, path: %s/tests/data/tiny.csv, "
			"header: true}}\nmodel:\n  - {name: s, kind: fake_scale, impl: %s}\n"
			"  - {name: head, kind: linear, units: 3}\nloss: {kind: cross_entropy}\n",
			src ? src : ".", impls[i]);
		fclose(f);
		const char *args[] = {"validate", yaml, NULL};
		ck_assert_int_eq(run_in(d, "", &r, args), 2);
		ck_assert_msg(strstr(r.err, want[i]), "impl: %s: %s", impls[i], r.err);
	}
	/* a relative directory in PLEXUS_PLUGIN_PATH is not searched */
	const char *args[] = {"plugins", NULL};
	ck_assert_int_eq(run_in(d, ".", &r, args), 0);
	ck_assert_msg(strstr(r.out, ".: plugin directory ignored: only absolute paths are searched") &&
		      !strstr(r.out, "fake-good"), "%s", r.out);
}
END_TEST

/* ------------------------------------------------------------------ NaN / Inf */
static void nan_stops(const char *plugin, const char *what)
{
	const char *fake = getenv("PLEXUS_FAKE_DIR");
	ck_assert_ptr_nonnull(fake);
	char so[512], d[64], ck[128];
	snprintf(so, sizeof so, "%s/%s", fake, plugin);
	temp_dir(d, sizeof d);
	struct run r;
	ck_assert_int_eq(run_plexus(&r, "train", "tests/pipelines/fake-nan.yaml", "--plugin-path", so,
				    "--run-dir", d, NULL), 1);
	char want[256];
	snprintf(want, sizeof want, "NaN/Inf in the %s at step 2 (epoch 1), first in node 'bad'", what);
	ck_assert_msg(strstr(r.err, want), "want '%s' in: %s", want, r.err);
	/* the checkpoint of step 1 is intact and loads */
	ck_assert_int_eq(ckpt_step(d, "model.safetensors"), 1);
	ck_assert_int_eq(ckpt_step(d, "state.safetensors"), 1);
	snprintf(ck, sizeof ck, "%s/model.safetensors", d);
	ck_assert_int_eq(run_plexus(&r, "eval", "tests/pipelines/fake-nan.yaml", "--plugin-path", so,
				    "--checkpoint", ck, "--split", "train", NULL), 0);
	ck_assert_int_eq(count_temps(d), 0);
}

START_TEST(test_nan_in_a_forward_pass_stops_at_its_step_naming_the_node)
{
	nan_stops("fake-nan-forward.so", "forward pass");
}
END_TEST

START_TEST(test_nan_in_a_backward_pass_stops_at_its_step_naming_the_node)
{
	nan_stops("fake-nan-backward.so", "gradients");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("hardening");
	TCase *tc = tcase_create("hardening");
	tcase_set_timeout(tc, 900);
	tcase_add_test(tc, test_100000_deep_nesting_is_rejected_in_milliseconds);
	tcase_add_test(tc, test_a_pipeline_over_the_size_cap_is_refused_without_reading_it);
	tcase_add_test(tc, test_plugin_files_or_directories_others_can_write_are_refused);
	tcase_add_test(tc, test_relative_plugin_paths_never_reach_the_working_directory);
	tcase_add_test(tc, test_nan_in_a_forward_pass_stops_at_its_step_naming_the_node);
	tcase_add_test(tc, test_nan_in_a_backward_pass_stops_at_its_step_naming_the_node);
	tcase_add_test(tc, test_sigkill_while_checkpointing_never_tears_and_resume_is_exact);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
