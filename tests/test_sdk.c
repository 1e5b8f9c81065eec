/* The plugin SDK end to end (docs/plugins.md): `plexus plugin-check` passes every plugin of
 * this repository and fails broken ones on the right check; the reference lstm (lstm_ref)
 * computes what the fast lstm computes, trains to the same losses and swaps checkpoints with
 * it; a kind from two plugins is chosen with impl:/--prefer; plugins export one symbol and
 * libplexus only its API; an installed plexus builds examples/plugin-template out of tree
 * with pkg-config alone and trains its pipeline. Runs from the source root. */
#include <check.h>
#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <plexus/harness.h>
#include <plexus/plugin.h>

#include "cli_util.h"
#include "plugin_util.h"

/* ------------------------------------------------------------------ helpers */

static const char *env(const char *name)
{
	const char *v = getenv(name);
	ck_assert_msg(v && *v, "$%s is not set (run through meson test)", name);
	return v;
}

/* Run a shell command (stdout and stderr into out); returns its exit status. */
static int sh(char *out, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int sh(char *out, size_t n, const char *fmt, ...)
{
	char cmd[8192];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof cmd, fmt, ap);
	va_end(ap);
	char full[8300];
	snprintf(full, sizeof full, "(%s) 2>&1", cmd);
	FILE *p = popen(full, "r");
	ck_assert_ptr_nonnull(p);
	size_t got = 0, k;
	while (got + 1 < n && (k = fread(out + got, 1, n - 1 - got, p)) > 0)
		got += k;
	out[got] = 0;
	char sink[4096];
	while (fread(sink, 1, sizeof sink, p) > 0)   /* the rest, unread */
		;
	int st = pclose(p);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void path_of(char *buf, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void path_of(char *buf, size_t n, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, n, fmt, ap);
	va_end(ap);
}

/* The plugin files of the build tree, $PLEXUS_BUILD/plugins/<name>/px-<name>.so. */
static int build_plugins(char files[][1024], int max)
{
	char dir[1024];
	path_of(dir, sizeof dir, "%s/plugins", env("PLEXUS_BUILD"));
	DIR *d = opendir(dir);
	ck_assert_ptr_nonnull(d);
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)) && n < max) {
		if (e->d_name[0] == '.')
			continue;
		path_of(files[n], 1024, "%s/%s/px-%s.so", dir, e->d_name, e->d_name);
		if (access(files[n], R_OK) == 0)
			n++;
	}
	closedir(d);
	return n;
}

static const char *sdk_module(char *buf, size_t n, const char *name)
{
	path_of(buf, n, "%s/%s.so", env("PLEXUS_SDK_DIR"), name);
	return buf;
}

/* ------------------------------------------------------------------ plugin-check */

START_TEST(test_every_plugin_in_this_repository_passes_plugin_check)
{
	char files[32][1024];
	int n = build_plugins(files, 32);
	ck_assert_int_ge(n, 7);
	/* kinds that need special inputs must really be exercised, not skipped */
	const char *must[] = {
		"PASS attention_decoder grad (eval)", "PASS attention_pool padding",
		"PASS maxunpool2d grad (eval)", "PASS autoencoder grad (train)",
		"PASS batchnorm2d checkpoint", "PASS lstm padding", "PASS lstm (cell) grad (eval)",
		"PASS gru (cell) checkpoint", "PASS conv2d threads",
	};
	bool seen[sizeof must / sizeof must[0]] = {0};
	static struct run r;
	int passes = 0;
	for (int i = 0; i < n; i++) {
		run_plexus(&r, "plugin-check", files[i], NULL);
		ck_assert_msg(r.code == 0 && !strstr(r.out, "FAIL "), "plugin-check %s exits %d:\n%s%s",
			      files[i], r.code, r.out, r.err);
		ck_assert_ptr_nonnull(strstr(r.out, " 0 failed"));
		for (size_t k = 0; k < sizeof must / sizeof must[0]; k++)
			seen[k] |= strstr(r.out, must[k]) != NULL;
		for (const char *p = r.out; (p = strstr(p, "PASS ")); p++)
			passes++;
	}
	for (size_t k = 0; k < sizeof must / sizeof must[0]; k++)
		ck_assert_msg(seen[k], "no line '%s'", must[k]);
	printf("plugin-check: %d plugins, %d checks passed\n", n, passes);
}
END_TEST

START_TEST(test_plugin_check_fails_each_broken_plugin_on_its_broken_check)
{
	static const struct {
		const char *module, *line;
	} cases[] = {
		{"sdk-bad-grad", "FAIL sdk_scale grad (eval): "},
		{"sdk-bad-accum", "FAIL sdk_scale accumulate: "},
		{"sdk-bad-padding", "FAIL sdk_scale padding: "},
		{"sdk-bad-nondet", "FAIL sdk_scale determinism: "},
		{"sdk-bad-export", "FAIL sdk-bad-export exports: 2 symbols exported: "},
		/* the loader itself refuses a schema whose default does not satisfy it */
		{"sdk-bad-schema", "FAIL plugin load: "},
	};
	static struct run r;
	char so[1024];
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		run_plexus(&r, "plugin-check", sdk_module(so, sizeof so, cases[i].module), NULL);
		ck_assert_msg(r.code == 1 && strstr(r.out, cases[i].line),
			      "%s: exit %d, expected a line '%s' in:\n%s%s", cases[i].module, r.code,
			      cases[i].line, r.out, r.err);
		char first[256];
		first_line(strstr(r.out, cases[i].line), first, sizeof first);
		printf("%s: %s\n", cases[i].module, first);
	}
	ck_assert_ptr_nonnull(strstr(r.out, "bad schema of kind 'sdk_scale': schema: 'gain' must be a number, got 'lots'"));
	/* the same plugin without the flaw passes, padding included */
	ck_assert_int_eq(run_plexus(&r, "plugin-check", sdk_module(so, sizeof so, "sdk-a"), NULL), 0);
	ck_assert_ptr_nonnull(strstr(r.out, "PASS sdk_scale padding: "));
	ck_assert_ptr_nonnull(strstr(r.out, "PASS sdk-a exports: 1 symbol exported: px_plugin_entry"));
}
END_TEST

START_TEST(test_plugin_check_reports_refused_files_and_bad_arguments)
{
	static struct run r;
	char lib[1024];
	path_of(lib, sizeof lib, "%s/core/libplexus.so", env("PLEXUS_BUILD"));
	ck_assert_int_eq(run_plexus(&r, "plugin-check", lib, NULL), 1);
	ck_assert_ptr_nonnull(strstr(r.out, "FAIL plugin load: "));
	ck_assert_ptr_nonnull(strstr(r.out, "not a plexus plugin (no px_plugin_entry symbol)"));
	ck_assert_int_eq(run_plexus(&r, "plugin-check", "/nonexistent/px-x.so", NULL), 1);
	ck_assert_ptr_nonnull(strstr(r.out, "cannot open"));
	char so[1024];
	ck_assert_int_eq(run_plexus(&r, "plugin-check", sdk_module(so, sizeof so, "sdk-a"),
				    "no_such_kind", NULL), 2);
	ck_assert_ptr_nonnull(strstr(r.err, "plugin 'sdk-a' provides no kind 'no_such_kind'"));
	ck_assert_int_eq(run_plexus(&r, "plugin-check", NULL), 2);
	ck_assert_int_eq(run_plexus(&r, "plugin-check", so, "--set", "model.x.y=1", NULL), 2);
	/* an --input-shape the kind cannot take is a failed create that says so */
	ck_assert_int_eq(run_plexus(&r, "plugin-check", so, "--input-shape", "3", NULL), 1);
	ck_assert_ptr_nonnull(strstr(r.out, "FAIL sdk_scale create: "));
	ck_assert_int_eq(run_plexus(&r, "plugin-check", so, "--input-shape", "3,x", NULL), 1);
	ck_assert_ptr_nonnull(strstr(r.out, "expected dimensions"));
}
END_TEST

START_TEST(test_plugin_check_takes_options_and_input_shapes_for_every_port)
{
	static struct run r;
	char so[1024];
	path_of(so, sizeof so, "%s/plugins/lstm_ref/px-lstm_ref.so", env("PLEXUS_BUILD"));
	ck_assert_int_eq(run_plexus(&r, "plugin-check", so, "lstm", "--set", "hidden=2", "--set",
				    "bidirectional=true", "--set", "readout=max", "--input-shape",
				    "2,5,3@5,2; 2,2,2; 2,2,2", NULL), 0);
	ck_assert_ptr_nonnull(strstr(r.out, "PASS lstm create: options {hidden: 2, bidirectional: "
					    "true, readout: max}, inputs x [2,5,3] lengths {5,2}; h0 [2,2,2]; c0 [2,2,2]"));
	ck_assert_ptr_nonnull(strstr(r.out, "PASS lstm grad (eval): "));
	ck_assert_ptr_nonnull(strstr(r.out, "PASS lstm (cell) grad (eval): "));
}
END_TEST

START_TEST(test_plugin_check_runs_clean_under_valgrind)
{
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SDK_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(SDK_ASAN)
	printf("SKIP: an ASan build (valgrind cannot run it); LeakSanitizer checks every run instead\n");
	return;
#endif
	char out[65536];
	if (sh(out, sizeof out, "command -v valgrind") != 0) {
		printf("SKIP: valgrind is not installed\n");
		return;
	}
	char so[1024];
	path_of(so, sizeof so, "%s/plugins/lstm_ref/px-lstm_ref.so", env("PLEXUS_BUILD"));
	/* OPENBLAS_CORETYPE: valgrind does not emulate AVX-512 (scripts/test-valgrind.sh) */
	int code = sh(out, sizeof out, "PLEXUS_PLUGIN_PATH= OPENBLAS_CORETYPE=Haswell valgrind -q --leak-check=full "
		      "--errors-for-leak-kinds=definite,indirect --error-exitcode=99 '%s' plugin-check '%s'",
		      env("PLEXUS_EXE"), so);
	ck_assert_msg(code == 0 && strstr(out, " 0 failed"), "valgrind exit %d:\n%s", code, out);
	ck_assert_ptr_null(strstr(out, "=="));   /* no valgrind report at all */
	printf("valgrind: plugin-check %s: no errors, no leaks\n", so);
}
END_TEST

/* ------------------------------------------------------------------ lstm vs lstm_ref */

/* A layer that runs one step of a cell (handed over in `wrap_cell`): x [B,in], s [2,B,H]. */
static const struct px_cell_ops *wrap_cell;
struct wrap {
	void *cs;
	float *cache;
};
static const struct px_param_spec wrap_schema[] = {{NULL, 0, NULL, 0, 0, NULL, NULL}};
static const struct px_port_spec wrap_in[] = {{"x", 0, "x"}, {"s", 0, "state"}, {NULL, 0, NULL}};
static const struct px_port_spec wrap_out[] = {{"s_next", 0, "state"}, {NULL, 0, NULL}};

static void wrap_destroy(void *self)
{
	struct wrap *w = self;
	if (w && w->cs)
		wrap_cell->destroy(w->cs);
	free(w);
}

static int wrap_create(struct px_build *b, void **self, struct px_shape *out, struct px_error *err)
{
	struct wrap *w = calloc(1, sizeof *w);
	int rc = wrap_cell->create(b, "cell.", b->in[0].dim[1], b->in[1].dim[2], &w->cs, err);
	if (rc) {
		wrap_destroy(w);
		return rc;
	}
	out[0] = b->in[1];
	*self = w;
	return 0;
}

static int wrap_forward(void *self, struct px_fwd *f, struct px_error *err)
{
	struct wrap *w = self;
	(void)err;
	int64_t B = f->in[0]->shape[0];
	struct px_tensor *sn = px_tensor_like(f->arena, f->in[1]);
	w->cache = px_arena_zalloc(f->arena, wrap_cell->cache_floats(w->cs, B) * sizeof(float));
	wrap_cell->step(w->cs, B, f->in[0]->data, f->in[1]->data, sn->data, w->cache);
	f->out[0] = sn;
	return 0;
}

static int wrap_backward(void *self, struct px_bwd *b, struct px_error *err)
{
	struct wrap *w = self;
	(void)err;
	wrap_cell->step_backward(w->cs, b->in[0]->shape[0], b->in[0]->data, b->in[1]->data, w->cache,
				 b->d_out[0]->data, b->d_in[0]->data, b->d_in[1]->data);
	return 0;
}

static const struct px_layer_ops wrap_ops = {
	.struct_size = sizeof(struct px_layer_ops), .kind = "wrap", .doc = "cell step",
	.schema = wrap_schema, .inputs = wrap_in, .outputs = wrap_out, .create = wrap_create,
	.forward = wrap_forward, .backward = wrap_backward, .destroy = wrap_destroy,
};

/* Outputs, input gradients and parameter gradients of one forward + backward, and the
 * parameters themselves, concatenated. */
static int64_t run_all(struct px_layer_inst *li, const struct px_tensor *const *in, int n_in,
		       int passes, float *out, int64_t cap)
{
	struct px_error err;
	int64_t n = 0;
	for (int pass = 0; pass < passes; pass++) {   /* stateful: the last pass counts */
		n = 0;
		ck_assert_msg(px_layer_inst_forward(li, in, false, &err) == 0, "%s", err.msg);
		struct px_rng r;
		px_rng_seed(&r, 4);
		const struct px_tensor *d_out[8] = {0};
		struct px_tensor *d_in[8] = {0};
		for (int k = 0; k < px_layer_inst_n_out(li); k++) {
			const struct px_tensor *o = px_layer_inst_out(li, k);
			struct px_tensor *d = px_layer_inst_tensor(li, o->ndim, o->shape);
			px_rng_fill_uniform(&r, d->data, px_tensor_numel(d), -1, 1);
			d_out[k] = d;
			for (int64_t i = 0; i < px_tensor_numel(o) && n < cap; i++)
				out[n++] = o->data[i];
		}
		for (int i = 0; i < n_in; i++)
			d_in[i] = in[i] ? px_layer_inst_tensor(li, in[i]->ndim, in[i]->shape) : NULL;
		ck_assert_msg(px_layer_inst_backward(li, d_out, d_in, &err) == 0, "%s", err.msg);
		for (int i = 0; i < n_in; i++)
			for (int64_t k = 0; d_in[i] && k < px_tensor_numel(d_in[i]) && n < cap; k++)
				out[n++] = d_in[i]->data[k];
		for (int p = 0; p < px_layer_inst_n_params(li); p++) {
			struct px_param *prm = px_layer_inst_param(li, p);
			for (int64_t k = 0; k < px_tensor_numel(prm->value) && n < cap; k++) {
				out[n++] = prm->value->data[k];
				out[n++] = prm->grad->data[k];
			}
		}
	}
	ck_assert_int_lt(n, cap);
	return n;
}

static double compare(const struct px_layer_ops *a, const struct px_layer_ops *b,
		      const char *opts, int n_in, const struct px_tensor *const *in, int passes)
{
	struct px_shape sh[3] = {{0}};
	bool rag[3] = {0};
	for (int i = 0; i < n_in; i++)
		if (in[i]) {
			px_tensor_shape(in[i], &sh[i]);
			rag[i] = in[i]->lengths != NULL;
		}
	struct px_layer_inst *la, *lb;
	struct px_error err;
	ck_assert_msg(px_layer_inst_new(a, opts, n_in, sh, rag, 9, &tp_host, &la, &err) == 0, "%s", err.msg);
	ck_assert_msg(px_layer_inst_new(b, opts, n_in, sh, rag, 9, &tp_host, &lb, &err) == 0, "%s", err.msg);
	ck_assert_int_eq(px_layer_inst_n_params(la), px_layer_inst_n_params(lb));
	for (int p = 0; p < px_layer_inst_n_params(la); p++) {  /* same names, layouts, init */
		struct px_param *pa = px_layer_inst_param(la, p), *pb = px_layer_inst_param(lb, p);
		ck_assert_str_eq(pa->name, pb->name);
		ck_assert_int_eq(px_tensor_numel(pa->value), px_tensor_numel(pb->value));
		ck_assert_msg(!memcmp(pa->value->data, pb->value->data,
				      (size_t)px_tensor_numel(pa->value) * sizeof(float)),
			      "%s: initial values differ", pa->name);
	}
	static float va[1 << 16], vb[1 << 16];
	int64_t na = run_all(la, in, n_in, passes, va, 1 << 16);
	int64_t nb = run_all(lb, in, n_in, passes, vb, 1 << 16);
	ck_assert_int_eq(na, nb);
	double m = 0;
	for (int64_t i = 0; i < na; i++)
		m = fmax(m, fabs((double)va[i] - vb[i]));
	px_layer_inst_free(la);
	px_layer_inst_free(lb);
	return m;
}

static struct px_tensor *tensor(int ndim, const int64_t *shape, const int32_t *len, uint64_t seed)
{
	struct px_tensor *t = calloc(1, sizeof *t);
	t->ndim = ndim;
	memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
	int64_t n = px_tensor_numel(t);
	t->data = malloc((size_t)n * sizeof(float));
	struct px_rng r;
	px_rng_seed(&r, seed);
	px_rng_fill_uniform(&r, t->data, n, -1, 1);
	t->lengths = len;
	return t;
}

static void tensor_free(struct px_tensor *t)
{
	if (t)
		free(t->data);
	free(t);
}

START_TEST(test_lstm_ref_matches_lstm_layer_and_cell_on_ragged_stacked_bidirectional_input)
{
	const struct px_layer_ops *fast = tp_layer("lstm", "lstm"), *ref = tp_layer("lstm_ref", "lstm");
	static const int32_t len[5] = {6, 1, 4, 0, 5};
	struct px_tensor *x = tensor(3, (int64_t[]){5, 6, 3}, len, 1);
	struct px_tensor *h0 = tensor(3, (int64_t[]){5, 4, 3}, NULL, 2);
	struct px_tensor *c0 = tensor(3, (int64_t[]){5, 4, 3}, NULL, 3);
	static const struct {
		const char *opts;
		bool states;
		int passes;
	} cases[] = {
		{"hidden: 4, layers: 2, bidirectional: true", false, 1},
		{"hidden: 3, layers: 2, bidirectional: true, forget_bias: 1, tbptt: 2", true, 1},
		{"hidden: 3, bidirectional: true, readout: last", false, 1},
		{"hidden: 3, layers: 2, readout: mean", false, 1},
		{"hidden: 3, bidirectional: true, readout: max", false, 1},
		{"hidden: 3, layers: 2, stateful: true", false, 2},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		/* h0/c0 only fit [B, layers*dirs, H] = [5,4,3] */
		const struct px_tensor *in[3] = {x, cases[i].states ? h0 : NULL, cases[i].states ? c0 : NULL};
		double m = compare(fast, ref, cases[i].opts, 3, in, cases[i].passes);
		printf("lstm vs lstm_ref {%s}%s: max |diff| of outputs, states and all gradients %.2e\n",
		       cases[i].opts, cases[i].states ? " with h0, c0" : "", m);
		ck_assert_msg(m <= 2e-5, "{%s}: max diff %g", cases[i].opts, m);
	}
	/* the cells, one step */
	struct px_tensor *cx = tensor(2, (int64_t[]){37, 5}, NULL, 4);
	struct px_tensor *cs = tensor(3, (int64_t[]){2, 37, 6}, NULL, 5);
	const struct px_tensor *cin[2] = {cx, cs};
	const struct px_cell_ops *cf = tp_cell("lstm", "lstm"), *cr = tp_cell("lstm_ref", "lstm");
	/* hand each create its cell through wrap_cell */
	struct px_shape sh[2];
	px_tensor_shape(cx, &sh[0]);
	px_tensor_shape(cs, &sh[1]);
	struct px_layer_inst *la, *lb;
	struct px_error err;
	wrap_cell = cf;
	ck_assert_msg(px_layer_inst_new(&wrap_ops, "", 2, sh, NULL, 9, &tp_host, &la, &err) == 0, "%s", err.msg);
	static float va[1 << 14], vb[1 << 14];
	int64_t na = run_all(la, cin, 2, 1, va, 1 << 14);
	px_layer_inst_free(la);
	wrap_cell = cr;
	ck_assert_msg(px_layer_inst_new(&wrap_ops, "", 2, sh, NULL, 9, &tp_host, &lb, &err) == 0, "%s", err.msg);
	int64_t nb = run_all(lb, cin, 2, 1, vb, 1 << 14);
	px_layer_inst_free(lb);
	ck_assert_int_eq(na, nb);
	double m = 0;
	for (int64_t i = 0; i < na; i++)
		m = fmax(m, fabs((double)va[i] - vb[i]));
	printf("lstm cell vs lstm_ref cell (B 37, in 5, H 6): max |diff| %.2e\n", m);
	ck_assert(m <= 2e-5);
	tensor_free(x);
	tensor_free(h0);
	tensor_free(c0);
	tensor_free(cx);
	tensor_free(cs);
}
END_TEST

/* ------------------------------------------------------------------ swapping implementations */

/* The train_loss and val_loss columns of a run's metrics.csv: n epochs into v[2n]. */
static int read_losses(const char *dir, double *v, int max)
{
	char p[1100], line[1024];
	path_of(p, sizeof p, "%s/metrics.csv", dir);
	FILE *f = fopen(p, "r");
	ck_assert_ptr_nonnull(f);
	int n = 0;
	ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
	ck_assert_ptr_nonnull(strstr(line, "epoch,step,train_loss,train_accuracy,val_loss"));
	while (n < max && fgets(line, sizeof line, f)) {
		double ep, st, tl, vl;
		ck_assert_int_eq(sscanf(line, "%lf,%lf,%lf,,%lf", &ep, &st, &tl, &vl), 4);
		v[2 * n] = tl;
		v[2 * n + 1] = vl;
		n++;
	}
	fclose(f);
	return n;
}

static double test_loss(const struct run *r)
{
	const char *p = strstr(r->out, "test: ");
	ck_assert_msg(p, "no test line in:\n%s%s", r->out, r->err);
	p = strstr(p, "loss ");
	ck_assert_ptr_nonnull(p);
	return atof(p + 5);
}

START_TEST(test_either_lstm_implementation_trains_to_the_same_losses_and_loads_the_others_checkpoint)
{
	const char *yaml = "tests/pipelines/swap-lstm.yaml";
	char d[3][64];
	static struct run r;
	for (int i = 0; i < 3; i++)
		ck_assert_ptr_nonnull(temp_dir(d[i], sizeof d[i]));
	/* the same pipeline, no rebuild in between: the default (plugin lstm), impl: per node,
	 * and a global preference */
	ck_assert_msg(run_plexus(&r, "train", yaml, "--run-dir", d[0], NULL) == 0, "%s", r.err);
	double t0 = test_loss(&r);
	ck_assert_msg(run_plexus(&r, "train", yaml, "--run-dir", d[1], "--set",
				 "model.enc.impl=lstm_ref", NULL) == 0, "%s", r.err);
	double t1 = test_loss(&r);
	ck_assert_msg(run_plexus(&r, "train", yaml, "--run-dir", d[2], "--prefer", "lstm=lstm_ref",
				 NULL) == 0, "%s", r.err);
	double t2 = test_loss(&r);
	double l[3][16], worst = 0;
	int n = read_losses(d[0], l[0], 8);
	ck_assert_int_eq(n, 3);
	for (int k = 1; k < 3; k++) {
		ck_assert_int_eq(read_losses(d[k], l[k], 8), n);
		for (int i = 0; i < 2 * n; i++)
			worst = fmax(worst, fabs(l[k][i] - l[0][i]) / fabs(l[0][i]));
	}
	printf("swap-lstm: train/val losses per epoch of lstm vs lstm_ref (impl: and --prefer): "
	       "max relative difference %.2e; test loss %.6g / %.6g / %.6g\n", worst, t0, t1, t2);
	ck_assert(worst <= 1e-4);
	ck_assert(fabs(t1 - t0) <= 1e-4 * t0 && fabs(t2 - t0) <= 1e-4 * t0);
	ck_assert(l[0][0] != l[0][2 * n - 2]);   /* it did train */

	/* the checkpoint records the implementation ... */
	char ck[2][128];
	path_of(ck[0], sizeof ck[0], "%s/model.safetensors", d[0]);
	path_of(ck[1], sizeof ck[1], "%s/model.safetensors", d[1]);
	ck_assert_int_eq(run_plexus(&r, "inspect", ck[1], NULL), 0);
	ck_assert_ptr_nonnull(strstr(r.out, "\"enc\": {\"kind\": \"lstm\", \"plugin\": \"lstm_ref\""));
	ck_assert_int_eq(run_plexus(&r, "inspect", ck[0], NULL), 0);
	ck_assert_ptr_nonnull(strstr(r.out, "\"enc\": {\"kind\": \"lstm\", \"plugin\": \"lstm\""));
	/* ... and the other implementation loads it (same names and layouts), to the same metrics */
	for (int k = 0; k < 2; k++) {
		ck_assert_int_eq(run_plexus(&r, "eval", yaml, "--checkpoint", ck[k], "--split", "test",
					    NULL), 0);
		double same = test_loss(&r);
		ck_assert_int_eq(run_plexus(&r, "eval", yaml, "--checkpoint", ck[k], "--split", "test",
					    "--prefer", "lstm=lstm_ref", NULL), 0);
		double other = test_loss(&r);
		printf("checkpoint of %s: test loss %.6g with lstm, %.6g with lstm_ref\n",
		       k ? "lstm_ref" : "lstm", same, other);
		ck_assert(fabs(same - other) <= 1e-5 * same);
	}
	/* and the per-step gradient norms of `plexus diagnose` agree */
	static struct run g;
	ck_assert_int_eq(run_plexus(&r, "diagnose", yaml, "--grad-norms", NULL), 0);
	ck_assert_int_eq(run_plexus(&g, "diagnose", yaml, "--grad-norms", "--prefer", "lstm=lstm_ref",
				    NULL), 0);
	int steps = 0;
	double gworst = 0;
	for (const char *p = r.out, *q = g.out; (p = strstr(p, "\nenc\t")) && (q = strstr(q, "\nenc\t"));
	     p++, q++, steps++) {
		double a = atof(strchr(p + 5, '\t') + 1), b = atof(strchr(q + 5, '\t') + 1);
		gworst = fmax(gworst, fabs(a - b) / fabs(a));
	}
	printf("diagnose --grad-norms: %d steps, max relative difference %.2e\n", steps, gworst);
	ck_assert_int_eq(steps, 12);
	ck_assert(gworst <= 1e-5);
	char cmd[512], out[256];
	for (int i = 0; i < 3; i++) {
		snprintf(cmd, sizeof cmd, "rm -rf '%s'", d[i]);
		ck_assert_int_eq(sh(out, sizeof out, "%s", cmd), 0);
	}
}
END_TEST

START_TEST(test_plugins_command_shows_the_preferred_implementation_of_each_kind)
{
	static struct run r;
	ck_assert_int_eq(run_plexus(&r, "plugins", NULL), 0);
	ck_assert_ptr_nonnull(strstr(r.out, "lstm_ref 1.0.0 (ABI "));
	ck_assert_ptr_nonnull(strstr(r.out, "layer 'lstm': 2 implementations, preferred: lstm\n"));
	ck_assert_ptr_nonnull(strstr(r.out, "cell 'lstm': 2 implementations, preferred: lstm\n"));
	ck_assert_int_eq(run_plexus(&r, "plugins", "--prefer", "lstm=lstm_ref", NULL), 0);
	ck_assert_ptr_nonnull(strstr(r.out, "layer 'lstm': 2 implementations, preferred: lstm_ref\n"));
	ck_assert_ptr_nonnull(strstr(r.out, "cell 'lstm': 2 implementations, preferred: lstm_ref\n"));
	/* a pipeline that names no implementation gets the plugin named after the kind */
	ck_assert_int_eq(run_plexus(&r, "validate", "tests/pipelines/swap-lstm.yaml", NULL), 0);
	ck_assert_ptr_nonnull(strstr(r.out, "enc            lstm               lstm "));
	ck_assert_int_eq(run_plexus(&r, "validate", "tests/pipelines/swap-lstm.yaml", "--set",
				    "model.enc.impl=lstm_ref", NULL), 0);
	ck_assert_ptr_nonnull(strstr(r.out, "enc            lstm               lstm_ref "));
}
END_TEST

START_TEST(test_a_kind_from_two_plugins_not_named_after_it_must_be_chosen)
{
	static struct run r;
	char a[1024], b[1024];
	sdk_module(a, sizeof a, "sdk-a");
	sdk_module(b, sizeof b, "sdk-b");
	const char *yaml = "tests/pipelines/sdk-scale.yaml";
	ck_assert_int_eq(run_plexus(&r, "validate", yaml, "--plugin-path", a, "--plugin-path", b,
				    NULL), 2);
	ck_assert_ptr_nonnull(strstr(r.err, "layer kind 'sdk_scale' is provided by 2 plugins: sdk-a ("));
	ck_assert_ptr_nonnull(strstr(r.err, "), sdk-b ("));
	ck_assert_ptr_nonnull(strstr(r.err, "choose one with impl: or --prefer sdk_scale=PLUGIN"));
	ck_assert_int_eq(run_plexus(&r, "validate", yaml, "--plugin-path", a, "--plugin-path", b,
				    "--prefer", "sdk_scale=sdk-b", NULL), 0);
	ck_assert_ptr_nonnull(strstr(r.out, "sdk_scale          sdk-b "));
	ck_assert_int_eq(run_plexus(&r, "validate", yaml, "--plugin-path", a, "--plugin-path", b,
				    "--set", "model.s.impl=sdk-a", NULL), 0);
	ck_assert_ptr_nonnull(strstr(r.out, "sdk_scale          sdk-a "));
	char set[1100];
	path_of(set, sizeof set, "model.s.impl=%s", b);   /* a plugin file as impl: */
	ck_assert_int_eq(run_plexus(&r, "validate", yaml, "--plugin-path", a, "--set", set, NULL), 0);
	ck_assert_ptr_nonnull(strstr(r.out, "sdk_scale          sdk-b "));
	ck_assert_int_eq(run_plexus(&r, "validate", yaml, "--plugin-path", a, "--plugin-path", b,
				    "--prefer", "sdk_scale=nosuch", NULL), 2);
	ck_assert_ptr_nonnull(strstr(r.err, "no plugin 'nosuch' provides layer kind 'sdk_scale'"));
}
END_TEST

/* ------------------------------------------------------------------ symbols and install */

/* Install the build tree into $PLEXUS_BUILD/tests/sdk-install (meson install --destdir) once
 * per run; prefix: the installed prefix inside it (found through plexus.pc). */
static void ensure_installed(char *root, size_t rn, char *pcdir, size_t pn)
{
	static char out[65536];
	path_of(root, rn, "%s/tests/sdk-install", env("PLEXUS_BUILD"));
	char done[1100];
	path_of(done, sizeof done, "%s/.installed", root);
	if (access(done, F_OK) != 0) {
		int code = sh(out, sizeof out, "rm -rf '%s' && meson install -C '%s' --destdir '%s' "
			      "--no-rebuild --quiet && touch '%s'", root, env("PLEXUS_BUILD"), root, done);
		ck_assert_msg(code == 0, "meson install failed (%d):\n%s", code, out);
	}
	ck_assert_int_eq(sh(out, sizeof out, "find '%s' -name plexus.pc", root), 0);
	char *nl = strrchr(out, '/');
	ck_assert_ptr_nonnull(nl);
	*nl = 0;
	snprintf(pcdir, pn, "%s", out);
}

static void words(const char *text, void (*fn)(const char *w, void *ctx), void *ctx)
{
	char w[256];
	for (const char *p = text; *p;) {
		const char *e = p + strcspn(p, "\n");
		size_t n = (size_t)(e - p) < sizeof w - 1 ? (size_t)(e - p) : sizeof w - 1;
		memcpy(w, p, n);
		w[n] = 0;
		if (n)
			fn(w, ctx);
		p = *e ? e + 1 : e;
	}
}

struct sym_ctx {
	const char *headers;   /* all installed headers, concatenated */
	int count;
	char bad[4096];
};

static void check_api_symbol(const char *sym, void *ctx)
{
	struct sym_ctx *c = ctx;
	c->count++;
	char decl[300];
	snprintf(decl, sizeof decl, " %s(", sym);
	bool declared = strstr(c->headers, decl) != NULL;
	snprintf(decl, sizeof decl, "*%s(", sym);
	declared |= strstr(c->headers, decl) != NULL;
	if (strncmp(sym, "px_", 3) || !declared)
		snprintf(c->bad + strlen(c->bad), sizeof c->bad - strlen(c->bad), " %s", sym);
}

START_TEST(test_plugins_export_only_the_entry_point_and_libplexus_only_its_installed_api)
{
	static char out[1 << 18];
	char files[40][1024];
	int n = build_plugins(files, 32);
	char so[1024];
	const char *mods[] = {"sdk-a", "sdk-bad-export"};
	for (int i = 0; i < 2; i++)
		snprintf(files[n++], 1024, "%s", sdk_module(so, sizeof so, mods[i]));
	for (int i = 0; i < n; i++) {
		ck_assert_int_eq(sh(out, sizeof out, "nm -D --defined-only '%s' | awk '{print $3}'",
				    files[i]), 0);
		bool bad = strstr(files[i], "sdk-bad-export") != NULL;
		ck_assert_msg(bad ? strcmp(out, "px_plugin_entry\n") != 0 : strcmp(out, "px_plugin_entry\n") == 0,
			      "%s exports:\n%s", files[i], out);
	}
	printf("%d plugins export px_plugin_entry only (and the test's broken one does not)\n", n - 1);
	/* libplexus: every exported symbol is px_* and declared in an installed header */
	char root[1024], pcdir[1024];
	ensure_installed(root, sizeof root, pcdir, sizeof pcdir);
	static char headers[1 << 20];
	ck_assert_int_eq(sh(headers, sizeof headers, "cat '%s'/../../../include/plexus/*.h", pcdir), 0);
	ck_assert_ptr_nonnull(strstr(headers, "px_plugin_entry"));
	char lib[1100];
	path_of(lib, sizeof lib, "%s/core/libplexus.so", env("PLEXUS_BUILD"));
	ck_assert_int_eq(sh(out, sizeof out, "nm -D --defined-only '%s' | awk '{print $3}'", lib), 0);
	static struct sym_ctx c;
	c.headers = headers;
	words(out, check_api_symbol, &c);
	ck_assert_msg(!c.bad[0], "libplexus exports symbols outside its installed API:%s", c.bad);
	ck_assert_int_ge(c.count, 40);
	printf("libplexus exports %d symbols, each px_* and declared in an installed header\n", c.count);
}
END_TEST

START_TEST(test_installed_sdk_builds_the_template_out_of_tree_and_trains_its_pipeline)
{
	static char out[1 << 16];
	char root[1024], pcdir[1024];
	ensure_installed(root, sizeof root, pcdir, sizeof pcdir);
	/* only pkg-config knows where plexus is */
	ck_assert_int_eq(sh(out, sizeof out, "PKG_CONFIG_PATH='%s' pkg-config --variable=pluginsdir "
			    "plexus", pcdir), 0);
	char plugdir[2048];
	snprintf(plugdir, sizeof plugdir, "%.*s", (int)strcspn(out, "\n"), out);
	ck_assert_msg(!strncmp(plugdir, root, strlen(root)), "pluginsdir %s is outside %s", plugdir, root);
	char prefix[2048];
	ck_assert_int_eq(sh(out, sizeof out, "PKG_CONFIG_PATH='%s' pkg-config --variable=prefix plexus",
			    pcdir), 0);
	snprintf(prefix, sizeof prefix, "%.*s", (int)strcspn(out, "\n"), out);
	char tb[1100];
	path_of(tb, sizeof tb, "%s-template", root);
	int code = sh(out, sizeof out, "rm -rf '%s' && PKG_CONFIG_PATH='%s' meson setup '%s' "
		      "'%s/examples/plugin-template' && ninja -C '%s' && meson install -C '%s' --quiet",
		      tb, pcdir, tb, env("PLEXUS_SRC"), tb, tb);
	ck_assert_msg(code == 0, "building the template failed (%d):\n%s", code, out);
	/* installed into the prefix's pluginsdir, exporting one symbol */
	char so[2100];
	snprintf(so, sizeof so, "%s/px-layernorm.so", plugdir);
	ck_assert_msg(access(so, R_OK) == 0, "%s not installed", so);
	ck_assert_int_eq(sh(out, sizeof out, "nm -D --defined-only '%s' | awk '{print $3}'", so), 0);
	ck_assert_str_eq(out, "px_plugin_entry\n");
	/* the installed plexus loads it through PLEXUS_PLUGIN_PATH, checks it and trains with it */
	char run[64];
	ck_assert_ptr_nonnull(temp_dir(run, sizeof run));
	code = sh(out, sizeof out, "PLEXUS_PLUGIN_PATH='%s' '%s/bin/plexus' plugin-check '%s'",
		  plugdir, prefix, so);
	ck_assert_msg(code == 0 && strstr(out, "PASS layernorm padding: "), "%s", out);
	code = sh(out, sizeof out, "PLEXUS_PLUGIN_PATH='%s' '%s/bin/plexus' train "
		  "examples/plugin-template/layernorm.yaml --run-dir '%s'", plugdir, prefix, run);
	ck_assert_msg(code == 0, "training the template pipeline failed (%d):\n%s", code, out);
	char *acc = strstr(out, "val loss");
	for (char *p = acc; p && (p = strstr(p + 1, "val loss"));)
		acc = p;   /* the last epoch */
	ck_assert_ptr_nonnull(acc);
	acc = strstr(acc, " acc ");
	ck_assert_ptr_nonnull(acc);
	double a = atof(acc + 5);
	printf("template (layernorm, built against the installed SDK): val accuracy %.3f\n", a);
	ck_assert_msg(a >= 0.8, "val accuracy %g (chance 0.33)", a);
	ck_assert_int_eq(sh(out, sizeof out, "PLEXUS_PLUGIN_PATH='%s' '%s/bin/plexus' inspect "
			    "'%s/model.safetensors'", plugdir, prefix, run), 0);
	ck_assert_ptr_nonnull(strstr(out, "norm.weight"));
	ck_assert_ptr_nonnull(strstr(out, "\"norm\": {\"kind\": \"layernorm\", \"plugin\": \"layernorm\""));
	ck_assert_int_eq(sh(out, sizeof out, "rm -rf '%s' '%s'", run, tb), 0);
}
END_TEST

int main(void)
{
	const char *b = getenv("PLEXUS_BUILD");
	if (b && *b) {   /* a fresh install each run */
		char cmd[2048];
		snprintf(cmd, sizeof cmd, "rm -rf '%s/tests/sdk-install'", b);
		if (system(cmd) != 0)
			fprintf(stderr, "cannot remove %s/tests/sdk-install\n", b);
	}
	Suite *s = suite_create("sdk");
	TCase *tc = tcase_create("sdk");
	tcase_set_timeout(tc, 600);
	tcase_add_test(tc, test_every_plugin_in_this_repository_passes_plugin_check);
	tcase_add_test(tc, test_plugin_check_fails_each_broken_plugin_on_its_broken_check);
	tcase_add_test(tc, test_plugin_check_reports_refused_files_and_bad_arguments);
	tcase_add_test(tc, test_plugin_check_takes_options_and_input_shapes_for_every_port);
	tcase_add_test(tc, test_plugin_check_runs_clean_under_valgrind);
	tcase_add_test(tc, test_lstm_ref_matches_lstm_layer_and_cell_on_ragged_stacked_bidirectional_input);
	tcase_add_test(tc, test_either_lstm_implementation_trains_to_the_same_losses_and_loads_the_others_checkpoint);
	tcase_add_test(tc, test_plugins_command_shows_the_preferred_implementation_of_each_kind);
	tcase_add_test(tc, test_a_kind_from_two_plugins_not_named_after_it_must_be_chosen);
	tcase_add_test(tc, test_plugins_export_only_the_entry_point_and_libplexus_only_its_installed_api);
	tcase_add_test(tc, test_installed_sdk_builds_the_template_out_of_tree_and_trains_its_pipeline);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
