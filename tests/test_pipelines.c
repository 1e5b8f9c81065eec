/* Every example pipeline, trained on a reduced size through the plexus command, learns what it
 * is meant to: thresholds are asserted on held-out data. Runs from the source root with the
 * build tree's plugins. Full-size numbers are in the docs; these runs take seconds. */
#include <check.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli_util.h"

/* value of `"key": number` in a JSON line, or NAN */
static double json_num(const char *s, const char *key)
{
	char pat[64];
	snprintf(pat, sizeof pat, "\"%s\": ", key);
	const char *p = strstr(s, pat);
	return p ? atof(p + strlen(pat)) : NAN;
}

/* PLEXUS_TEST_SMOKE=1 (scripts/test-valgrind.sh): every training run stops after 3 steps of
 * one epoch, so that each pipeline's commands (train, eval, report and figures, sample,
 * attention, reconstruct, score) run under memcheck in minutes rather than hours; what the
 * models learn is then not asserted (ck_learned). The normal run asserts all of it. */
static bool smoke(void)
{
	return getenv("PLEXUS_TEST_SMOKE") != NULL;
}

#define ck_learned(cond, ...)                          \
	do {                                           \
		if (!smoke())                          \
			ck_assert_msg(cond, __VA_ARGS__); \
	} while (0)

static bool have_fashion(void)
{
	if (access("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz", R_OK) == 0)
		return true;
	printf("SKIP: Debian's dataset-fashion-mnist is not installed\n");
	return false;
}

/* train PIPELINE into a temp dir with --set overrides, then eval --json; returns the JSON */
static const char *train_eval(const char *pipeline, char *dir, size_t dn, const char *const *sets,
			      int n_sets, struct run *r)
{
	temp_dir(dir, dn);
	char ck[256];
	snprintf(ck, sizeof ck, "%s/model.safetensors", dir);
	const char *argv[48] = {"train", pipeline, "--run-dir", dir};
	int argc = 4;
	for (int i = 0; i < n_sets && argc < 44; i++) {
		argv[argc++] = "--set";
		argv[argc++] = sets[i];
	}
	const int n_train = argc;
	if (smoke()) {
		const char *tiny[] = {"--set", "train.epochs=1", "--set", "train.steps_per_epoch=3"};
		for (int i = 0; i < 4; i++)
			argv[argc++] = tiny[i];
	}
	argv[argc] = NULL;
	run_plexus_argv(r, argv);
	ck_assert_msg(r->code == 0, "%s: train exit %d: %s", pipeline, r->code, r->err);
	argc = n_train;
	/* eval: same overrides, the checkpoint instead of the run dir */
	argv[0] = "eval";
	argv[2] = "--checkpoint";
	argv[3] = ck;
	argv[argc++] = "--json";
	argv[argc] = NULL;
	run_plexus_argv(r, argv);
	ck_assert_msg(r->code == 0, "%s: eval exit %d: %s", pipeline, r->code, r->err);
	printf("%s %s", pipeline, r->out);
	return r->out;
}

START_TEST(test_fashion_rows_lstm_learns)
{
	if (!have_fashion())
		return;
	const char *sets[] = {"data.train.limit=4000", "data.test.limit=2000", "train.epochs=2",
			      "model.enc.hidden=32", "model.enc.layers=1"};
	char d[64];
	struct run r;
	double acc = json_num(train_eval("pipelines/fashion-rows-lstm.yaml", d, sizeof d, sets, 5, &r), "accuracy");
	ck_learned(acc >= 0.55, "test accuracy %g", acc);
}
END_TEST

START_TEST(test_fashion_rows_attention_learns_and_draws_its_weights)
{
	if (!have_fashion())
		return;
	const char *sets[] = {"data.train.limit=4000", "data.test.limit=2000", "train.epochs=2",
			      "model.enc.hidden=32"};
	char d[64], ck[128], svg[128];
	struct run r;
	double acc = json_num(train_eval("pipelines/fashion-rows-attention.yaml", d, sizeof d, sets, 4, &r), "accuracy");
	ck_learned(acc >= 0.55, "test accuracy %g", acc);
	snprintf(ck, sizeof ck, "%s/model.safetensors", d);
	snprintf(svg, sizeof svg, "%s/pool.svg", d);
	ck_assert_int_eq(run_plexus(&r, "attention", "pipelines/fashion-rows-attention.yaml", "--checkpoint",
				    ck, "--index", "3", "--out", svg, "--set", "model.enc.hidden=32", NULL), 0);
	ck_assert_ptr_nonnull(strstr(r.out, "(1 x 28)"));
}
END_TEST

START_TEST(test_charlm_gru_beats_uniform_and_samples_text)
{
	const char *sets[] = {"train.epochs=2", "model.rnn.hidden=128"};
	char d[64], ck[128];
	struct run r;
	double bpc = json_num(train_eval("pipelines/charlm-gru.yaml", d, sizeof d, sets, 2, &r), "bpc");
	ck_learned(bpc < 3.8, "held-out bits per character %g (uniform over the vocabulary: ~6.2)", bpc);
	snprintf(ck, sizeof ck, "%s/model.safetensors", d);
	ck_assert_int_eq(run_plexus(&r, "sample", "pipelines/charlm-gru.yaml", "--checkpoint", ck,
				    "--prompt", "the Program", "--length", "40", "--temperature", "0.5",
				    "--set", "model.rnn.hidden=128", NULL), 0);
	ck_assert_int_eq(strlen(r.out), strlen("the Program") + 40 + 1);
	ck_assert(!strncmp(r.out, "the Program", 11));
}
END_TEST

START_TEST(test_series_rnn_beats_the_naive_last_value_baseline)
{
	const char *sets[] = {"data.train.n=600", "train.epochs=6"};
	char d[64];
	struct run r;
	const char *j = train_eval("pipelines/series-rnn.yaml", d, sizeof d, sets, 2, &r);
	double loss = json_num(j, "loss"), naive = json_num(j, "naive_loss");
	ck_learned(loss < 0.5 * naive, "mse %g vs naive %g", loss, naive);
}
END_TEST

START_TEST(test_grad_norm_diagnostic_works_for_every_recurrent_kind)
{
	const char *kinds[] = {"model.rnn.kind=rnn", "model.rnn.kind=lstm", "model.rnn.kind=gru"};
	for (int i = 0; i < 3; i++) {
		struct run r;
		ck_assert_int_eq(run_plexus(&r, "diagnose", "pipelines/series-rnn.yaml", "--grad-norms",
					    "--set", kinds[i], NULL), 0);
		ck_assert_ptr_nonnull(strstr(r.out, "rnn\t0\t"));
		ck_assert_ptr_nonnull(strstr(r.out, "rnn\t49\t"));
		ck_assert_ptr_nonnull(strstr(r.out, "# rnn: ||dL/dh_0|| / ||dL/dh_49||"));
	}
	struct run r;
	ck_assert_int_eq(run_plexus(&r, "diagnose", "pipelines/quickstart.yaml", "--grad-norms",
				    "--set", "data.train.limit=100", NULL), 2);
	ck_assert_ptr_nonnull(strstr(r.err, "no layer of this model reports per-step gradient norms"));
}
END_TEST

START_TEST(test_fashion_dae_reconstructs_scores_and_draws)
{
	if (!have_fashion())
		return;
	const char *sets[] = {"data.train.limit=10000", "data.test.limit=1000", "train.epochs=3",
			      "train.batch=32"};
	char d[64], ck[128], png[128], x[128], sc[128];
	struct run r;
	const char *j = train_eval("pipelines/fashion-dae.yaml", d, sizeof d, sets, 4, &r);
	double loss = json_num(j, "loss"), pca = json_num(j, "pca_loss");
	ck_learned(loss < 12 && pca > 0 && pca < 12, "loss %g, pca %g", loss, pca);
	snprintf(ck, sizeof ck, "%s/model.safetensors", d);
	snprintf(png, sizeof png, "%s/grid.png", d);
	ck_assert_int_eq(run_plexus(&r, "reconstruct", "pipelines/fashion-dae.yaml", "--checkpoint", ck,
				    "--grid", png, "--count", "6", NULL), 0);
	FILE *f = fopen(png, "rb");
	unsigned char sig[8] = {0};
	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(fread(sig, 1, 8, f), 8);
	fclose(f);
	ck_assert(!memcmp(sig, "\x89PNG\r\n\x1a\n", 8));
	/* score: 3 examples of 784 zeros -> 3 scores */
	snprintf(x, sizeof x, "%s/x.npy", d);
	snprintf(sc, sizeof sc, "%s/s.npy", d);
	f = fopen(x, "wb");
	const char *dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 784), }";
	char hdr[118];
	memset(hdr, ' ', sizeof hdr);
	memcpy(hdr, dict, strlen(dict));
	hdr[117] = '\n';
	unsigned short hl = 118;
	fwrite("\x93NUMPY\x01\x00", 1, 8, f);
	fwrite(&hl, 2, 1, f);
	fwrite(hdr, 1, 118, f);
	float zeros[784] = {0};
	for (int i = 0; i < 3; i++)
		fwrite(zeros, sizeof zeros, 1, f);
	fclose(f);
	ck_assert_int_eq(run_plexus(&r, "score", "pipelines/fashion-dae.yaml", "--checkpoint", ck,
				    "--input", x, "--output", sc, NULL), 0);
	ck_assert_ptr_nonnull(strstr(r.out, "wrote 3 scores"));
}
END_TEST

START_TEST(test_fashion_anomaly_separates_the_other_classes)
{
	if (!have_fashion())
		return;
	const char *sets[] = {"train.epochs=3", "data.test.limit=3000"};
	char d[64];
	struct run r;
	double auc = json_num(train_eval("pipelines/fashion-anomaly.yaml", d, sizeof d, sets, 2, &r), "roc_auc");
	ck_learned(auc >= 0.80, "ROC AUC %g", auc);
}
END_TEST

START_TEST(test_fashion_cae_learns_to_reconstruct)
{
	if (!have_fashion())
		return;
	const char *sets[] = {"data.train.limit=4000", "data.test.limit=1000", "train.epochs=2",
			      "train.batch=32"};
	char d[64];
	struct run r;
	double loss = json_num(train_eval("pipelines/fashion-cae.yaml", d, sizeof d, sets, 4, &r), "loss");
	/* an untrained model scores ~35 per image (1/2 sum of squares); PCA with 64 components ~4 */
	ck_learned(loss < 8, "test reconstruction loss %g", loss);
	/* the report shows inputs over reconstructions, drawn by the core (no plugin draws them) */
	char p[128], idx[4096];
	snprintf(p, sizeof p, "%s/figures/index.json", d);
	slurp(p, idx, sizeof idx);
	ck_assert_msg(strstr(idx, "\"node\": \"recon\", \"type\": \"image\", \"title\": "
			     "\"reconstructions: input (top), output (bottom)\"") != NULL,
		      "no reconstruction grid in %s", idx);
	snprintf(p, sizeof p, "%s/figures/fig-000.png", d);
	ck_assert_msg(access(p, R_OK) == 0, "%s missing", p);
}
END_TEST

START_TEST(test_dates_luong_translates_and_attends_to_the_year)
{
	const char *sets[] = {"data.train.n=4000", "data.test.n=300", "train.epochs=3"};
	char d[64], ck[128], csv[128];
	struct run r;
	double em = json_num(train_eval("pipelines/dates-luong.yaml", d, sizeof d, sets, 3, &r), "exact_match");
	ck_learned(em >= 0.85, "exact match %g", em);
	snprintf(ck, sizeof ck, "%s/model.safetensors", d);
	snprintf(csv, sizeof csv, "%s/a.csv", d);
	ck_assert_int_eq(run_plexus(&r, "attention", "pipelines/dates-luong.yaml", "--checkpoint", ck,
				    "--input", "28 november 2026", "--out", csv, NULL), 0);
	/* rows: output characters (the year first); columns: the 16 input characters, the year
	 * being the last four. Each year digit must put most of its weight on the year. */
	FILE *f = fopen(csv, "r");
	char line[4096];
	ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
	for (int row = 0; row < 4; row++) {
		ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
		double w[16], year = 0;
		char *p = strchr(line, ',');
		for (int k = 0; k < 16 && p; k++) {
			w[k] = atof(p + 1);
			p = strchr(p + 1, ',');
		}
		for (int k = 12; k < 16; k++)
			year += w[k];
		ck_learned(year > 0.5, "output %d puts %.3f of its attention on the year", row, year);
	}
	fclose(f);
}
END_TEST

START_TEST(test_dates_bahdanau_beam_translates)
{
	const char *sets[] = {"data.train.n=4000", "data.test.n=300", "train.epochs=3"};
	char d[64], ck[128];
	struct run r;
	double em = json_num(train_eval("pipelines/dates-bahdanau.yaml", d, sizeof d, sets, 3, &r), "exact_match");
	ck_learned(em >= 0.8, "exact match %g", em);
	(void)ck;
}
END_TEST

int main(void)
{
	Suite *s = suite_create("pipelines");
	TCase *tc = tcase_create("pipelines");
	tcase_set_timeout(tc, 900);
	tcase_add_test(tc, test_fashion_rows_lstm_learns);
	tcase_add_test(tc, test_fashion_rows_attention_learns_and_draws_its_weights);
	tcase_add_test(tc, test_charlm_gru_beats_uniform_and_samples_text);
	tcase_add_test(tc, test_series_rnn_beats_the_naive_last_value_baseline);
	tcase_add_test(tc, test_grad_norm_diagnostic_works_for_every_recurrent_kind);
	tcase_add_test(tc, test_fashion_dae_reconstructs_scores_and_draws);
	tcase_add_test(tc, test_fashion_anomaly_separates_the_other_classes);
	tcase_add_test(tc, test_fashion_cae_learns_to_reconstruct);
	tcase_add_test(tc, test_dates_luong_translates_and_attends_to_the_year);
	tcase_add_test(tc, test_dates_bahdanau_beam_translates);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
