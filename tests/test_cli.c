/* The plexus command end to end: pipeline errors, determinism, resume, checkpoints, predict,
 * plugin refusals, and a quickstart run that learns. Runs from the source root. */
#include <check.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli_util.h"

/* Every malformed pipeline exits 2 with exactly its expected file:line:col message. */
START_TEST(test_malformed_pipelines_exit_2_with_their_place_and_message)
{
	FILE *f = fopen("tests/pipelines/bad/expected.tsv", "r");
	ck_assert_ptr_nonnull(f);
	unsetenv("PLEXUS_PLUGIN_PATH");  /* messages list the loaded kinds: the core's only */
	char line[4096];
	int n = 0;
	while (fgets(line, sizeof line, f)) {
		if (line[0] == '#')
			continue;
		line[strcspn(line, "\n")] = 0;
		char *tab = strchr(line, '\t');
		ck_assert_ptr_nonnull(tab);
		*tab = 0;
		char path[512], want[4200], got[4200];
		snprintf(path, sizeof path, "tests/pipelines/bad/%s", line);
		snprintf(want, sizeof want, "%s:%s", path, tab + 1);
		struct run r;
		run_plexus(&r, "validate", path, NULL);
		ck_assert_msg(r.code == 2, "%s: exit %d, stderr %s", path, r.code, r.err);
		ck_assert_str_eq(first_line(r.err, got, sizeof got), want);
		n++;
	}
	fclose(f);
	/* every file of the corpus has its line */
	int files = 0;
	DIR *d = opendir("tests/pipelines/bad");
	ck_assert_ptr_nonnull(d);
	for (struct dirent *e; (e = readdir(d));)
		files += strlen(e->d_name) > 5 && !strcmp(e->d_name + strlen(e->d_name) - 5, ".yaml");
	closedir(d);
	ck_assert_int_eq(n, files);
	ck_assert_int_ge(n, 50);
}
END_TEST

START_TEST(test_usage_errors_exit_2)
{
	struct run r;
	ck_assert_int_eq(run_plexus(&r, "trian", NULL), 2);
	ck_assert_ptr_nonnull(strstr(r.err, "unknown command 'trian'"));
	ck_assert_int_eq(run_plexus(&r, "train", NULL), 2);
	ck_assert_int_eq(run_plexus(&r, "train", "tests/pipelines/tiny.yaml", "--bogus", NULL), 2);
	ck_assert_ptr_nonnull(strstr(r.err, "unknown option '--bogus'"));
	ck_assert_int_eq(run_plexus(&r, "eval", "tests/pipelines/tiny.yaml", NULL), 2);
	ck_assert_int_eq(run_plexus(&r, "validate", "tests/pipelines/missing.yaml", NULL), 2);
	ck_assert_int_eq(run_plexus(&r, "explain", "no_such_kind", NULL), 2);
	ck_assert_int_eq(run_plexus(&r, "explain", "linear", NULL), 0);
	ck_assert_ptr_nonnull(strstr(r.out, "units"));
}
END_TEST

/* metrics.csv without the timing columns */
static void losses_of(const char *dir, char *buf, size_t n)
{
	char p[512];
	snprintf(p, sizeof p, "%s/metrics.csv", dir);
	FILE *f = fopen(p, "r");
	ck_assert_ptr_nonnull(f);
	char line[2048];
	size_t used = 0;
	buf[0] = 0;
	while (fgets(line, sizeof line, f)) {
		/* drop the last two columns (seconds, items_per_s) */
		for (int k = 0; k < 2; k++) {
			char *c = strrchr(line, ',');
			if (c)
				*c = 0;
		}
		used += (size_t)snprintf(buf + used, n - used, "%s\n", line);
	}
	fclose(f);
}

START_TEST(test_same_seed_gives_bitwise_identical_losses)
{
	char a[64], b[64], la[16384], lb[16384];
	temp_dir(a, sizeof a);
	temp_dir(b, sizeof b);
	struct run r;
	ck_assert_int_eq(run_plexus(&r, "train", "tests/pipelines/tiny.yaml", "--run-dir", a, NULL), 0);
	ck_assert_int_eq(run_plexus(&r, "train", "tests/pipelines/tiny.yaml", "--run-dir", b, NULL), 0);
	losses_of(a, la, sizeof la);
	losses_of(b, lb, sizeof lb);
	ck_assert_str_eq(la, lb);
	ck_assert_ptr_nonnull(strstr(la, "\n6,"));  /* six epochs were recorded */
}
END_TEST

START_TEST(test_resume_equals_uninterrupted_run)
{
	char full[64], part[64], lf[16384], lp[16384];
	temp_dir(full, sizeof full);
	temp_dir(part, sizeof part);
	struct run r;
	ck_assert_int_eq(run_plexus(&r, "train", "tests/pipelines/tiny.yaml", "--run-dir", full, NULL), 0);
	ck_assert_int_eq(run_plexus(&r, "train", "tests/pipelines/tiny.yaml", "--run-dir", part,
				    "--set", "train.epochs=3", NULL), 0);
	ck_assert_int_eq(run_plexus(&r, "train", "tests/pipelines/tiny.yaml", "--run-dir", part,
				    "--resume", NULL), 0);
	ck_assert_ptr_nonnull(strstr(r.err, "resuming"));
	losses_of(full, lf, sizeof lf);
	losses_of(part, lp, sizeof lp);
	ck_assert_str_eq(lf, lp);
}
END_TEST

START_TEST(test_training_learns_the_tiny_task_and_eval_reports_it)
{
	char d[64], ck[128];
	temp_dir(d, sizeof d);
	struct run r;
	ck_assert_int_eq(run_plexus(&r, "train", "tests/pipelines/tiny.yaml", "--run-dir", d,
				    "--set", "train.epochs=15", NULL), 0);
	snprintf(ck, sizeof ck, "%s/model.safetensors", d);
	ck_assert_int_eq(run_plexus(&r, "eval", "tests/pipelines/tiny.yaml", "--checkpoint", ck,
				    "--split", "val", "--json", NULL), 0);
	double acc = 0;
	char *p = strstr(r.out, "\"accuracy\": ");
	ck_assert_ptr_nonnull(p);
	acc = atof(p + 12);
	ck_assert_msg(acc >= 0.9, "validation accuracy %g (three well separated classes)", acc);
}
END_TEST

START_TEST(test_truncated_or_mismatched_checkpoints_are_rejected_by_name)
{
	char d[64], ck[128], bad[128];
	temp_dir(d, sizeof d);
	struct run r;
	ck_assert_int_eq(run_plexus(&r, "train", "tests/pipelines/tiny.yaml", "--run-dir", d,
				    "--set", "train.epochs=1", NULL), 0);
	snprintf(ck, sizeof ck, "%s/model.safetensors", d);
	snprintf(bad, sizeof bad, "%s/truncated.safetensors", d);
	struct stat st;
	ck_assert_int_eq(stat(ck, &st), 0);
	ck_assert_int_eq(truncate(ck, st.st_size) == 0, 1);
	FILE *in = fopen(ck, "rb"), *out = fopen(bad, "wb");
	char buf[1 << 16];
	size_t n = fread(buf, 1, sizeof buf, in);
	fwrite(buf, 1, n / 2, out);
	fclose(in);
	fclose(out);
	ck_assert_int_eq(run_plexus(&r, "eval", "tests/pipelines/tiny.yaml", "--checkpoint", bad, NULL), 1);
	ck_assert_ptr_nonnull(strstr(r.err, bad));
	/* a checkpoint of another shape: every mis-shaped tensor is named */
	ck_assert_int_eq(run_plexus(&r, "eval", "tests/pipelines/tiny.yaml", "--checkpoint", ck,
				    "--set", "model.hidden.units=7", NULL), 1);
	ck_assert_ptr_nonnull(strstr(r.err, "hidden.weight is [16,4] in the file, [7,4] in the model"));
}
END_TEST

START_TEST(test_nan_stops_training_naming_the_node)
{
	char d[64];
	temp_dir(d, sizeof d);
	struct run r;
	ck_assert_int_eq(run_plexus(&r, "train", "tests/pipelines/tiny.yaml", "--run-dir", d,
				    "--set", "train.optimizer.kind=sgd", "--set", "train.optimizer.lr=1e300",
				    NULL), 1);
	ck_assert_msg(strstr(r.err, "NaN/Inf in the") && strstr(r.err, "first in node '"),
		      "stderr: %s", r.err);
}
END_TEST

START_TEST(test_predict_writes_the_head_output_as_npy)
{
	char d[64], ck[128], x[128], y[128];
	temp_dir(d, sizeof d);
	struct run r;
	ck_assert_int_eq(run_plexus(&r, "train", "tests/pipelines/tiny.yaml", "--run-dir", d,
				    "--set", "train.epochs=1", NULL), 0);
	snprintf(ck, sizeof ck, "%s/model.safetensors", d);
	snprintf(x, sizeof x, "%s/x.npy", d);
	snprintf(y, sizeof y, "%s/y.npy", d);
	/* a float32 [2,4] npy written by hand */
	FILE *f = fopen(x, "wb");
	char hdr[128];
	const char *dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 4), }";
	int len = snprintf(hdr, sizeof hdr, "%s", dict);
	int pad = 128 - 10 - len - 1;
	fwrite("\x93NUMPY\x01\x00", 1, 8, f);
	unsigned short hl = (unsigned short)(len + pad + 1);
	fwrite(&hl, 2, 1, f);
	fwrite(hdr, 1, (size_t)len, f);
	for (int i = 0; i < pad; i++)
		fputc(' ', f);
	fputc('\n', f);
	float v[8] = {0, 0, 0, 0, 2, 2, 0, 1};
	fwrite(v, sizeof v, 1, f);
	fclose(f);
	ck_assert_int_eq(run_plexus(&r, "predict", "tests/pipelines/tiny.yaml", "--checkpoint", ck,
				    "--input", x, "--output", y, NULL), 0);
	struct stat st;
	ck_assert_int_eq(stat(y, &st), 0);
	ck_assert_int_eq(st.st_size, 128 + 2 * 3 * 4);  /* header + [2,3] float32 */
	/* the wrong feature count is a clear error */
	ck_assert_int_eq(run_plexus(&r, "predict", "tests/pipelines/tiny.yaml", "--checkpoint", ck,
				    "--input", y, "--output", x, NULL), 2);
	ck_assert_ptr_nonnull(strstr(r.err, "input is [2,3], the model takes [B,4]"));
}
END_TEST

START_TEST(test_plugin_refusals_name_the_file_and_reason_and_the_rest_load)
{
	const char *dir = getenv("PLEXUS_FAKE_DIR");
	ck_assert_ptr_nonnull(dir);
	char junk[512];
	snprintf(junk, sizeof junk, "%s/fake-junk.so", dir);
	FILE *f = fopen(junk, "w");
	fputs("not an ELF file\n", f);
	fclose(f);
	chmod(junk, 0644);
	struct run r;
	/* the host's ABI version, as the refusals name it */
	ck_assert_int_eq(run_plexus(&r, "--version", NULL), 0);
	int maj = 0, min = 0;
	ck_assert_int_eq(sscanf(strstr(r.out, "(ABI "), "(ABI %d.%d)", &maj, &min), 2);
	char w0[128], w1[128], w2[160];
	snprintf(w0, sizeof w0, "fake-major.so: plugin ABI 99.%d vs host ABI %d.%d", min, maj, min);
	snprintf(w1, sizeof w1, "fake-minor.so: plugin ABI %d.99 vs host ABI %d.%d", maj, maj, min);
	snprintf(w2, sizeof w2, "fake-null.so: px_plugin_entry returned NULL (the plugin refused host ABI %d.%d)", maj, min);
	ck_assert_int_eq(run_plexus(&r, "plugins", "--plugin-path", dir, NULL), 0);
	const char *want[] = {
		w0,
		w1,
		w2,
		"fake-nosym.so: not a plexus plugin (no px_plugin_entry symbol)",
		"fake-dup.so: duplicate kind 'fake_scale' in one plugin",
		"fake-nocb.so: missing required callback (create, forward, backward or destroy)",
		"fake-small.so: layer table smaller than this host's (struct_size)",
		"fake-junk.so: dlopen failed:",
	};
	for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
		ck_assert_msg(strstr(r.out, want[i]), "missing refusal '%s' in:\n%s", want[i], r.out);
	ck_assert_ptr_nonnull(strstr(r.out, "fake-good 0.0.1"));
	ck_assert_ptr_nonnull(strstr(r.out, "kinds: fake_scale"));
	unlink(junk);
}
END_TEST

START_TEST(test_a_plugin_failing_in_create_is_a_pipeline_error_at_its_node)
{
	const char *dir = getenv("PLEXUS_FAKE_DIR");
	char good[512];
	snprintf(good, sizeof good, "%s/fake-good.so", dir);
	struct run r;
	ck_assert_int_eq(run_plexus(&r, "validate", "tests/pipelines/fake-scale.yaml", "--plugin-path",
				    good, NULL), 0);
	ck_assert_int_eq(run_plexus(&r, "validate", "tests/pipelines/fake-scale.yaml", "--plugin-path",
				    good, "--set", "model.twice.fail=true", NULL), 2);
	ck_assert_ptr_nonnull(strstr(r.err, "tests/pipelines/fake-scale.yaml:7:5: node 'twice' (fake_scale): create failed on purpose"));
}
END_TEST

START_TEST(test_quickstart_learns_fashion_mnist_above_chance)
{
	/* PLEXUS_TEST_SMOKE (scripts/test-valgrind.sh): 3 steps, what is learned not asserted */
	int smoke = getenv("PLEXUS_TEST_SMOKE") != NULL;
	if (access("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz", R_OK) != 0) {
		printf("SKIP: Debian's dataset-fashion-mnist is not installed\n");
		return;
	}
	char d[64];
	temp_dir(d, sizeof d);
	struct run r;
	ck_assert_int_eq(run_plexus(&r, "train", "pipelines/quickstart.yaml", "--run-dir", d,
				    "--set", "data.train.limit=12000", "--set", "train.epochs=2", "--set",
				    smoke ? "train.steps_per_epoch=3" : "train.steps_per_epoch=0", NULL), 0);
	char *p = strstr(r.out, "test: 10000 examples");
	ck_assert_ptr_nonnull(p);
	p = strstr(p, "accuracy ");
	ck_assert_ptr_nonnull(p);
	double acc = atof(p + 9);
	printf("quickstart (12000 training images, %s): test accuracy %.4f\n",
	       smoke ? "3 steps of smoke mode" : "2 epochs", acc);
	ck_assert_msg(smoke || acc >= 0.78, "test accuracy %g (chance is 0.10)", acc);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("cli");
	TCase *tc = tcase_create("cli");
	tcase_set_timeout(tc, 600);
	tcase_add_test(tc, test_malformed_pipelines_exit_2_with_their_place_and_message);
	tcase_add_test(tc, test_usage_errors_exit_2);
	tcase_add_test(tc, test_same_seed_gives_bitwise_identical_losses);
	tcase_add_test(tc, test_resume_equals_uninterrupted_run);
	tcase_add_test(tc, test_training_learns_the_tiny_task_and_eval_reports_it);
	tcase_add_test(tc, test_truncated_or_mismatched_checkpoints_are_rejected_by_name);
	tcase_add_test(tc, test_nan_stops_training_naming_the_node);
	tcase_add_test(tc, test_predict_writes_the_head_output_as_npy);
	tcase_add_test(tc, test_plugin_refusals_name_the_file_and_reason_and_the_rest_load);
	tcase_add_test(tc, test_a_plugin_failing_in_create_is_a_pipeline_error_at_its_node);
	tcase_add_test(tc, test_quickstart_learns_fashion_mnist_above_chance);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
