/* The conv, autoencoder and attention plugins' layers against the float64 reference
 * (tests/ref64; the recurrent plugins are in test_ref64_recurrent.c). The
 * reference's gradients by central differences in double (eps 1e-6, |a-n| <= 1e-5 + 1e-3|n|
 * for every input and parameter element) and the float32 kernels against the reference
 * (normalised MSE <= 1e-7, forward and backward). Image layers
 * (conv): conv2d and conv_transpose2d with strides, padding, dilation, groups and output
 * padding, max pooling (its ties avoided by construction: the inputs are distinct multiples of
 * 0.05), max unpooling (to distinct positions), average pooling with and without the padding
 * counted, nearest and bilinear
 * upsampling, and batchnorm2d in training (batch statistics) and evaluation mode. Autoencoder:
 * the dense node (relu, tanh or sigmoid hidden activations, tied or not; relu's kinks avoided
 * by construction, the margin asserted) and the noise layers in evaluation (the identity) and
 * in training (the kernel's draws reproduced). Attention: attention_pool over the ragged steps
 * (both outputs). */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check64.h"
#include "plugin_util.h"

static const int32_t lens[3] = {5, 3, 1};

/* ------------------------------------------------------------------ conv plugin */
/* x [B,C,H,W]: distinct values, multiples of 0.05 in random order (no max-pool ties within
 * the finite-difference step, so the max is smooth where it is checked) */
static void expect_image(const char *name, const char *kind, const char *opts, int64_t B,
			 int64_t C, int64_t H, int64_t W, const struct check64_opts *o,
			 struct ref_layer *ref)
{
	struct px_arena *a = px_arena_new(1 << 16);
	struct px_rng r;
	px_rng_seed(&r, 13);
	int64_t s[4] = {B, C, H, W}, n = B * C * H * W;
	struct px_tensor *x = px_tensor_new(a, 4, s);
	for (int64_t i = 0; i < n; i++)
		x->data[i] = (float)(0.05 * (double)i - 0.025 * (double)n);
	for (int64_t i = n - 1; i > 0; i--) {   /* shuffle */
		int64_t j = (int64_t)px_rng_below(&r, (uint64_t)i + 1);
		float t = x->data[i];
		x->data[i] = x->data[j];
		x->data[j] = t;
	}
	struct check64_result res;
	ck_assert_msg(check64_layer(name, tp_layer("conv", kind), opts, 1, &x, NULL, ref, &tp_host, o,
				    &res) == 0, "%s did not run", name);
	px_arena_free(a);
	CHECK64_ASSERT_PASSED(name, &res);
}

START_TEST(test_conv2d_and_conv_transpose2d_match_float64_reference)
{
	struct ref_layer ref = {0};
	struct ref_conv c = {.out_channels = 4, .kh = 3, .kw = 3, .sh = 1, .sw = 1, .ph = 1, .pw = 1,
			     .dh = 1, .dw = 1, .groups = 1, .bias = true};
	ref_conv2d(&ref, &c);
	expect_image("conv2d 3->4 k3 p1", "conv2d", "out_channels: 4, kernel: 3, padding: 1", 2, 3,
		     5, 5, NULL, &ref);
	c = (struct ref_conv){.out_channels = 6, .kh = 3, .kw = 2, .sh = 2, .sw = 1, .ph = 1,
			      .pw = 0, .dh = 1, .dw = 2, .groups = 2, .bias = true};
	ref_conv2d(&ref, &c);
	expect_image("conv2d 4->6 k3x2 s2x1 d1x2 g2", "conv2d", "out_channels: 6, kernel: [3, 2], "
		     "stride: [2, 1], padding: [1, 0], dilation: [1, 2], groups: 2", 2, 4, 6, 6, NULL,
		     &ref);
	c = (struct ref_conv){.out_channels = 6, .kh = 3, .kw = 3, .sh = 2, .sw = 2, .ph = 1,
			      .pw = 1, .dh = 1, .dw = 1, .oph = 1, .opw = 1, .groups = 2, .bias = true};
	ref_conv_transpose2d(&ref, &c);
	expect_image("conv_transpose2d 4->6 k3 s2 op1 g2", "conv_transpose2d", "out_channels: 6, "
		     "kernel: 3, stride: 2, padding: 1, output_padding: 1, groups: 2", 2, 4, 3, 3, NULL,
		     &ref);
	c = (struct ref_conv){.out_channels = 2, .kh = 2, .kw = 3, .sh = 1, .sw = 2, .ph = 0,
			      .pw = 1, .dh = 2, .dw = 1, .groups = 1, .bias = false};
	ref_conv_transpose2d(&ref, &c);
	expect_image("conv_transpose2d 3->2 d2x1 no bias", "conv_transpose2d", "out_channels: 2, "
		     "kernel: [2, 3], stride: [1, 2], padding: [0, 1], dilation: [2, 1], bias: false",
		     2, 3, 3, 4, NULL, &ref);
}
END_TEST

START_TEST(test_pooling_upsampling_and_batchnorm_match_float64_reference)
{
	struct ref_layer ref = {0};
	ref_maxpool2d(&ref, 3, 2, 1);
	expect_image("maxpool2d k3 s2 p1 (no ties)", "maxpool2d", "kernel: 3, stride: 2, padding: 1",
		     2, 3, 5, 5, NULL, &ref);
	ref_maxpool2d(&ref, 2, 2, 0);
	expect_image("maxpool2d k2 (no ties)", "maxpool2d", "kernel: 2", 2, 2, 4, 6, NULL, &ref);
	ref_avgpool2d(&ref, 3, 2, 1, true);
	expect_image("avgpool2d k3 s2 p1", "avgpool2d", "kernel: 3, stride: 2, padding: 1", 2, 3, 5,
		     5, NULL, &ref);
	ref_avgpool2d(&ref, 3, 2, 1, false);
	expect_image("avgpool2d k3 s2 p1 exclude pad", "avgpool2d", "kernel: 3, stride: 2, "
		     "padding: 1, count_include_pad: false", 2, 3, 5, 5, NULL, &ref);
	ref_upsample2d(&ref, 2, false);
	expect_image("upsample2d x2 nearest", "upsample2d", "scale: 2", 2, 2, 3, 4, NULL, &ref);
	ref_upsample2d(&ref, 3, true);
	expect_image("upsample2d x3 bilinear", "upsample2d", "scale: 3, mode: bilinear", 2, 2, 3, 4,
		     NULL, &ref);
	/* maxunpool2d: the indices of a 2x2 pooling of a 4x6 plane, one distinct position in each
	 * window (positions never collide, so the scatter is a plain linear map) */
	{
		struct px_arena *a = px_arena_new(1 << 16);
		struct px_rng r;
		px_rng_seed(&r, 17);
		int64_t s[4] = {2, 3, 2, 3};
		struct px_tensor *in[2] = {px_tensor_new(a, 4, s), px_tensor_new(a, 4, s)};
		px_rng_fill_uniform(&r, in[0]->data, 36, -1, 1);
		for (int64_t q = 0; q < 6; q++)
			for (int64_t i = 0; i < 2; i++)
				for (int64_t j = 0; j < 3; j++) {
					int64_t dy = (int64_t)px_rng_below(&r, 2), dx = (int64_t)px_rng_below(&r, 2);
					in[1]->data[q * 6 + i * 3 + j] = (float)((2 * i + dy) * 6 + 2 * j + dx);
				}
		bool no_grad[2] = {false, true};
		struct check64_result res;
		ref_maxunpool2d(&ref, 4, 6);
		ck_assert_int_eq(check64_layer("maxunpool2d 2x3 -> 4x6", tp_layer("conv", "maxunpool2d"),
					       "output_size: [4, 6]", 2, in, no_grad, &ref, &tp_host,
					       NULL, &res), 0);
		px_arena_free(a);
		CHECK64_ASSERT_PASSED("maxunpool2d", &res);
	}
	const struct check64_opts train = {.train = true, .random_params = true};
	const struct check64_opts eval = {.train = false, .random_params = true};
	ref_batchnorm2d(&ref, 1e-5, true, true);
	expect_image("batchnorm2d train (batch stats)", "batchnorm2d", "", 3, 2, 3, 3, &train, &ref);
	ref_batchnorm2d(&ref, 1e-5, false, true);
	expect_image("batchnorm2d eval (running stats)", "batchnorm2d", "", 3, 2, 3, 3, &eval, &ref);
}
END_TEST

/* ------------------------------------------------------------------ autoencoder plugin */
/* check64_layer frees the reference when done: this forward hook keeps what the reference saw
 * over all its forwards (the one the kernel is compared with, then every finite-difference
 * one): the smallest relu margin, the range of active relus, and the first forward's draws */
static void (*watched_fwd)(struct ref_layer *, int, struct r64 *const *, struct r64 **);
static struct {
	int64_t forwards, relus, active_min, active_max;
	double relu_margin;
	struct ref_draws drawn;
} seen;

static void watch_fwd(struct ref_layer *l, int n_in, struct r64 *const *in, struct r64 **out)
{
	watched_fwd(l, n_in, in, out);
	if (!strcmp(l->kind, "autoencoder")) {
		int64_t active;
		seen.relu_margin = fmin(seen.relu_margin, ref_autoencoder_relu_margin(l, &seen.relus,
										      &active));
		seen.active_min = seen.forwards ? (active < seen.active_min ? active : seen.active_min)
						: active;
		seen.active_max = active > seen.active_max ? active : seen.active_max;
	} else if (seen.forwards == 0) {
		ref_random_draws(l, &seen.drawn);
	}
	seen.forwards++;
}

static void assert_checked(const char *name, const struct check64_result *res)
{
	CHECK64_ASSERT_PASSED(name, res);
}

/* x ~ U(-1, 1) (seed 19 + x_seed), ragged when lengths is not NULL: ref against the kernel
 * (what the reference saw is in `seen`; the caller asserts *res) */
static void run_dense(const char *name, const char *kind, const char *opts, int ndim,
		      const int64_t *shape, const int32_t *lengths, uint64_t x_seed,
		      const struct check64_opts *o, struct ref_layer *ref, struct check64_result *res)
{
	struct px_arena *a = px_arena_new(1 << 16);
	struct px_rng r;
	px_rng_seed(&r, 19 + x_seed);
	struct px_tensor *x = px_tensor_new(a, ndim, shape);
	px_rng_fill_uniform(&r, x->data, px_tensor_numel(x), -1, 1);
	x->lengths = lengths;
	memset(&seen, 0, sizeof seen);
	seen.relu_margin = INFINITY;
	watched_fwd = ref->forward;
	ref->forward = watch_fwd;
	ck_assert_msg(check64_layer(name, tp_layer("autoencoder", kind), opts, 1, &x, NULL, ref,
				    &tp_host, o, res) == 0, "%s did not run", name);
	px_arena_free(a);
}

static void expect_dense(const char *name, const char *kind, const char *opts, int ndim,
			 const int64_t *shape, struct ref_layer *ref)
{
	struct check64_result res;
	run_dense(name, kind, opts, ndim, shape, NULL, 0, NULL, ref, &res);
	assert_checked(name, &res);
}

/* The dense node with smooth activations (tanh, sigmoid), tied and untied; the noise layers in
 * evaluation, where they are the identity */
START_TEST(test_autoencoder_matches_float64_reference)
{
	struct ref_layer ref = {0};
	int64_t s2[2] = {3, 6}, s3[3] = {3, 2, 3};
	int64_t a[3] = {6, 4, 3}, b[3] = {6, 4, 2};
	ref_autoencoder(&ref, a, 3, 1, 1, false);
	expect_dense("autoencoder 6-4-3 tanh, sigmoid out", "autoencoder", "sizes: [6, 4, 3], "
		     "activation: tanh", 2, s2, &ref);
	ref_autoencoder(&ref, b, 3, 2, 0, true);
	expect_dense("autoencoder 6-4-2 tied sigmoid [3,2,3]", "autoencoder", "sizes: [6, 4, 2], "
		     "activation: sigmoid, output_activation: none, tied: true", 3, s3, &ref);
	const char *noise[] = {"gaussian_noise", "masking_noise", "salt_pepper_noise"};
	for (int i = 0; i < 3; i++) {
		char name[64];
		snprintf(name, sizeof name, "%s (evaluation)", noise[i]);
		ref_identity(&ref, 0, NULL);
		expect_dense(name, noise[i], "", 2, s2, &ref);
	}
}
END_TEST

/* The dense node with relu, its default activation, after every hidden layer and the code.
 * relu has a kink at z = 0; it is avoided by construction: with these inputs (U(-1, 1), seed
 * 22, chosen for the margin) and the kernel's initial parameters (seed CHECK64_SEED), every
 * relu pre-activation z of every forward the check runs (the compared one and each
 * finite-difference one, eps 1e-6) is at least RELU_MARGIN = 1e-3 from 0 (in fact 1.1e-2 or
 * more) — asserted and printed here, so a change that brings a kink close fails instead of
 * passing by luck. The kernel's float32 z is within ~1e-7 of the reference's, so it takes the
 * same side of every kink. Both sides of the kink are exercised: some relus are active and
 * some are not in every forward (asserted). Tied and untied, output sigmoid and none. */
#define RELU_MARGIN 1e-3

static void expect_relu(const char *name, const char *opts, const int64_t *sizes, int n,
			bool sigmoid_out, bool tied, int ndim, const int64_t *shape)
{
	struct ref_layer ref = {0};
	ref_autoencoder(&ref, sizes, n, 3, sigmoid_out, tied);
	struct check64_result res;
	run_dense(name, "autoencoder", opts, ndim, shape, NULL, 3, NULL, &ref, &res);
	printf("%-34s relu: smallest |z| %.2e over %lld forwards; %lld-%lld of %lld active\n", name,
	       seen.relu_margin, (long long)seen.forwards, (long long)seen.active_min,
	       (long long)seen.active_max, (long long)seen.relus);
	ck_assert_msg(seen.relus > 0 && seen.relu_margin >= RELU_MARGIN,
		      "%s: a relu pre-activation %.3g from its kink (margin %g)", name,
		      seen.relu_margin, RELU_MARGIN);
	ck_assert_msg(seen.active_min > 0 && seen.active_max < seen.relus,
		      "%s: %lld-%lld of %lld relus active: one side of the kink is not exercised",
		      name, (long long)seen.active_min, (long long)seen.active_max,
		      (long long)seen.relus);
	assert_checked(name, &res);
}

START_TEST(test_autoencoder_with_relu_matches_float64_reference_away_from_kinks)
{
	int64_t a[3] = {6, 4, 3}, b[3] = {6, 4, 2}, c[4] = {8, 6, 4, 2}, d[3] = {8, 5, 3};
	int64_t s46[2] = {4, 6}, s323[3] = {3, 2, 3}, s38[2] = {3, 8}, s48[2] = {4, 8};
	expect_relu("autoencoder 6-4-3 relu, sigmoid out", "sizes: [6, 4, 3], activation: relu",
		    a, 3, true, false, 2, s46);
	expect_relu("autoencoder 6-4-2 tied relu [3,2,3]", "sizes: [6, 4, 2], activation: relu, "
		    "output_activation: none, tied: true", b, 3, false, true, 3, s323);
	expect_relu("autoencoder 8-6-4-2 defaults (relu)", "sizes: [8, 6, 4, 2]", c, 4, true,
		    false, 2, s38);
	expect_relu("autoencoder 8-5-3 tied relu, sigmoid", "sizes: [8, 5, 3], tied: true", d, 3,
		    true, true, 2, s48);
	expect_relu("autoencoder 8-5-3 relu, no out act", "sizes: [8, 5, 3], "
		    "output_activation: none", d, 3, false, false, 2, s48);
}
END_TEST

/* The noise layers in training, plain and ragged: the reference reproduces the kernel's noise,
 * both drawing from px_rng_seed_label(CHECK64_SEED, "forward"), seeded afresh for every forward,
 * in the kernel's order (ref64_random.c). Given the draws each layer is linear in x (no kink).
 * The noise must be real: elements changed; masking and salt & pepper corrupt a fraction
 * within 3 standard deviations of `fraction` (at least one element hit and one kept), salt and
 * pepper both appear; gaussian changes every valid element, with mean (y - x)^2 / std^2 within
 * 3 standard deviations of 1. */
static bool plausible(double rate, double expect, double sd)
{
	return fabs(rate - expect) <= 3 * sd;
}

static void expect_noise(const char *name, const char *kind, const char *opts, int ndim,
			 const int64_t *shape, const int32_t *lengths, double a,
			 struct ref_layer *ref)
{
	const struct check64_opts train = {.train = true};
	struct check64_result res;
	run_dense(name, kind, opts, ndim, shape, lengths, 0, &train, ref, &res);
	const struct ref_draws *d = &seen.drawn;
	double n = (double)d->valid;
	printf("%-34s %lld valid: %lld hit (%lld high), %lld changed, mean (y-x)^2 %.3g\n", name,
	       (long long)d->valid, (long long)d->hit, (long long)d->high, (long long)d->changed,
	       d->sq_change / n);
	ck_assert_msg(d->valid > 0 && d->changed > 0, "%s: no element changed", name);
	if (!strcmp(kind, "gaussian_noise")) {
		ck_assert_msg(d->changed == d->valid, "%s: %lld of %lld changed", name,
			      (long long)d->changed, (long long)d->valid);
		ck_assert_msg(plausible(d->sq_change / n / (a * a), 1, sqrt(2 / n)),
			      "%s: mean (y-x)^2 %g, std^2 %g", name, d->sq_change / n, a * a);
	} else {
		ck_assert_msg(d->hit > 0 && d->hit < d->valid &&
			      plausible((double)d->hit / n, a, sqrt(a * (1 - a) / n)),
			      "%s: %lld of %lld hit, implausible for %g", name, (long long)d->hit,
			      (long long)d->valid, a);
	}
	if (!strcmp(kind, "salt_pepper_noise"))
		ck_assert_msg(d->high > 0 && d->high < d->hit, "%s: %lld of %lld hits salt", name,
			      (long long)d->high, (long long)d->hit);
	assert_checked(name, &res);
}

START_TEST(test_noise_layers_in_training_reproduce_kernel_noise_and_match_float64_reference)
{
	struct ref_layer ref = {0};
	int64_t s[2] = {6, 10}, sr[3] = {3, 5, 4};   /* ragged: lengths 5, 3, 1: 36 of 60 valid */
	for (int rag = 0; rag < 2; rag++) {
		const int64_t *sh = rag ? sr : s;
		int nd = rag ? 3 : 2;
		const int32_t *ln = rag ? lens : NULL;
		char name[64];
		snprintf(name, sizeof name, "gaussian_noise std 0.3 train%s", rag ? " ragged" : "");
		ref_gaussian_noise(&ref, 0.3, CHECK64_SEED);
		expect_noise(name, "gaussian_noise", "std: 0.3", nd, sh, ln, 0.3, &ref);
		snprintf(name, sizeof name, "masking_noise 0.3 train%s", rag ? " ragged" : "");
		ref_masking_noise(&ref, 0.3, CHECK64_SEED);
		expect_noise(name, "masking_noise", "fraction: 0.3", nd, sh, ln, 0.3, &ref);
		snprintf(name, sizeof name, "salt_pepper 0.4 train%s", rag ? " ragged" : "");
		ref_salt_pepper_noise(&ref, 0.4, -0.5, 1.5, CHECK64_SEED);
		expect_noise(name, "salt_pepper_noise", "fraction: 0.4, low: -0.5, high: 1.5", nd,
			     sh, ln, 0.4, &ref);
	}
}
END_TEST

/* ------------------------------------------------------------------ attention plugin */
START_TEST(test_attention_pool_matches_float64_reference_over_ragged_steps)
{
	struct ref_layer ref = {0};
	struct px_arena *a = px_arena_new(1 << 16);
	struct px_rng r;
	px_rng_seed(&r, 23);
	int64_t s[3] = {3, 5, 3};
	struct px_tensor *x = px_tensor_new(a, 3, s);
	px_rng_fill_uniform(&r, x->data, px_tensor_numel(x), -1, 1);
	x->lengths = lens;
	struct check64_result res;
	ref_attention_pool(&ref);
	ck_assert_int_eq(check64_layer("attention_pool U4 ragged [3,5,3]",
				       tp_layer("attention", "attention_pool"), "units: 4", 1, &x, NULL,
				       &ref, &tp_host, NULL, &res), 0);
	px_arena_free(a);
	CHECK64_ASSERT_PASSED("attention_pool", &res);
}
END_TEST

/* ------------------------------------------------------------------ the example plugin */
/* examples/plugin-template's layernorm (built in tree as tests/px-layernorm.so): plain, ragged
 * (padded rows garbage in, zeros out) and without affine parameters. Smooth everywhere: the
 * variance is at least eps > 0. random_params: the initial weight 1 and bias 0 would hide a
 * swapped or missing parameter. */
START_TEST(test_example_layernorm_matches_float64_reference)
{
	char path[1024];
	const char *b = getenv("PLEXUS_BUILD");
	snprintf(path, sizeof path, "%s/tests/px-layernorm.so", b ? b : "build");
	const struct px_plugin *p = tp_plugin_file(path);
	ck_assert_ptr_nonnull(p->layers[0]);
	ck_assert_str_eq(p->layers[0]->kind, "layernorm");
	const struct check64_opts rp = {.random_params = true};
	struct px_arena *a = px_arena_new(1 << 16);
	struct px_rng r;
	px_rng_seed(&r, 29);
	int64_t s2[2] = {4, 6}, s3[3] = {3, 5, 4};
	struct px_tensor *x2 = px_tensor_new(a, 2, s2), *x3 = px_tensor_new(a, 3, s3);
	px_rng_fill_uniform(&r, x2->data, px_tensor_numel(x2), -1, 1);
	px_rng_fill_uniform(&r, x3->data, px_tensor_numel(x3), -2, 2);
	x3->lengths = lens;
	const struct {
		const char *name, *opts;
		struct px_tensor *x;
		bool affine;
	} cases[] = {
		{"layernorm (example) [4,6]", "", x2, true},
		{"layernorm (example) ragged [3,5,4]", "eps: 1e-3", x3, true},
		{"layernorm (example) no affine", "affine: false", x3, false},
	};
	for (int i = 0; i < 3; i++) {
		struct ref_layer ref = {0};
		struct check64_result res;
		ref_layernorm(&ref, cases[i].affine, i == 1 ? 1e-3 : 1e-5);
		ck_assert_int_eq(check64_layer(cases[i].name, p->layers[0], cases[i].opts, 1,
					       &cases[i].x, NULL, &ref, &tp_host, &rp, &res), 0);
		CHECK64_ASSERT_PASSED(cases[i].name, &res);
	}
	px_arena_free(a);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("ref64_plugins");
	TCase *tc = tcase_create("ref64_plugins");
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_conv2d_and_conv_transpose2d_match_float64_reference);
	tcase_add_test(tc, test_pooling_upsampling_and_batchnorm_match_float64_reference);
	tcase_add_test(tc, test_autoencoder_matches_float64_reference);
	tcase_add_test(tc, test_autoencoder_with_relu_matches_float64_reference_away_from_kinks);
	tcase_add_test(tc, test_noise_layers_in_training_reproduce_kernel_noise_and_match_float64_reference);
	tcase_add_test(tc, test_attention_pool_matches_float64_reference_over_ragged_steps);
	tcase_add_test(tc, test_example_layernorm_matches_float64_reference);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
