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
 * the dense node (tanh or sigmoid hidden activations, tied or not) and the noise layers in
 * evaluation (the identity). Attention: attention_pool over the ragged steps (both outputs). */
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
	ck_assert_msg(res.fd_checked > 0, "%s: nothing checked", name);
	ck_assert_msg(res.fd_failed == 0, "%s: %lld of %lld float64 Jacobian elements off, worst %s",
		      name, (long long)res.fd_failed, (long long)res.fd_checked, res.fd_worst);
	ck_assert_msg(res.fwd_nmse <= CHECK64_NMSE, "%s: forward nMSE %g", name, res.fwd_nmse);
	ck_assert_msg(res.bwd_nmse <= CHECK64_NMSE, "%s: backward nMSE %g (%s)", name, res.bwd_nmse,
		      res.bwd_worst);
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
		ck_assert_msg(res.fd_failed == 0 && res.fd_checked > 0, "maxunpool2d: %s", res.fd_worst);
		ck_assert_msg(res.fwd_nmse <= CHECK64_NMSE && res.bwd_nmse <= CHECK64_NMSE,
			      "maxunpool2d: nMSE %g %g", res.fwd_nmse, res.bwd_nmse);
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
static void expect_dense(const char *name, const char *kind, const char *opts, int ndim,
			 const int64_t *shape, struct ref_layer *ref)
{
	struct px_arena *a = px_arena_new(1 << 16);
	struct px_rng r;
	px_rng_seed(&r, 19);
	struct px_tensor *x = px_tensor_new(a, ndim, shape);
	px_rng_fill_uniform(&r, x->data, px_tensor_numel(x), -1, 1);
	struct check64_result res;
	ck_assert_msg(check64_layer(name, tp_layer("autoencoder", kind), opts, 1, &x, NULL, ref,
				    &tp_host, NULL, &res) == 0, "%s did not run", name);
	px_arena_free(a);
	ck_assert_msg(res.fd_checked > 0, "%s: nothing checked", name);
	ck_assert_msg(res.fd_failed == 0, "%s: %lld of %lld float64 Jacobian elements off, worst %s",
		      name, (long long)res.fd_failed, (long long)res.fd_checked, res.fd_worst);
	ck_assert_msg(res.fwd_nmse <= CHECK64_NMSE, "%s: forward nMSE %g", name, res.fwd_nmse);
	ck_assert_msg(res.bwd_nmse <= CHECK64_NMSE, "%s: backward nMSE %g (%s)", name, res.bwd_nmse,
		      res.bwd_worst);
}

/* the dense autoencoder with smooth activations (relu's kink is not covered), tied and untied;
 * the noise layers in evaluation, where they are the identity (their noise is random) */
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
	ck_assert_msg(res.fd_failed == 0 && res.fd_checked > 0, "attention_pool: %lld off, %s",
		      (long long)res.fd_failed, res.fd_worst);
	ck_assert_msg(res.fwd_nmse <= CHECK64_NMSE, "attention_pool: forward nMSE %g", res.fwd_nmse);
	ck_assert_msg(res.bwd_nmse <= CHECK64_NMSE, "attention_pool: backward nMSE %g (%s)",
		      res.bwd_nmse, res.bwd_worst);
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
	tcase_add_test(tc, test_attention_pool_matches_float64_reference_over_ragged_steps);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
