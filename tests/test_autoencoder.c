/* The autoencoder plugin: the noise layers of denoising autoencoders and the dense
 * `autoencoder` node, loaded from the build tree and driven through the harness. Golden values
 * come from PyTorch (tests/gen_conv.py writes them under tests/fixtures/conv/ae_*). */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <plexus/harness.h>

#include "golden_layer.h"
#include "plugin_util.h"

static const struct px_layer_ops *layer(const char *kind)
{
	return tp_layer("autoencoder", kind);
}

/* A layer with one input of `shape` (real batch), filled with U(lo, hi) from `seed`. */
static struct px_layer_inst *make(const char *kind, const char *options, struct px_shape shape,
				  uint64_t seed, float lo, float hi, struct px_tensor **x)
{
	struct px_layer_inst *li;
	struct px_error err = {0};
	int rc = px_layer_inst_new(layer(kind), options, 1, &shape, NULL, seed, NULL, &li, &err);
	ck_assert_msg(rc == 0, "%s {%s}: %s", kind, options, err.msg);
	*x = px_layer_inst_tensor(li, shape.ndim, shape.dim);
	struct px_rng r;
	px_rng_seed(&r, seed + 100);
	px_rng_fill_uniform(&r, (*x)->data, px_tensor_numel(*x), lo, hi);
	return li;
}

static const struct px_tensor *forward(struct px_layer_inst *li, const struct px_tensor *x,
				       bool train)
{
	struct px_error err = {0};
	const struct px_tensor *in[1] = {x};
	ck_assert_msg(px_layer_inst_forward(li, in, train, &err) == 0, "%s", err.msg);
	return px_layer_inst_out(li, 0);
}

static void gradcheck(struct px_layer_inst *li, struct px_tensor *x, bool train, const char *what)
{
	struct px_gradcheck_opts o;
	struct px_gradcheck_result res;
	struct px_error err = {0};
	px_gradcheck_defaults(&o);
	o.train = train;
	const struct px_tensor *in[1] = {x};
	ck_assert_msg(px_gradcheck_layer(li, in, &o, &res, &err) == 0, "%s: %s", what, err.msg);
	printf("%-56s gradcheck %lld elements, max abs err %.2e\n", what, (long long)res.checked,
	       res.max_abs_err);
	ck_assert_msg(res.checked > 0 && res.failed == 0, "%s: %lld of %lld differ, worst %s", what,
		      (long long)res.failed, (long long)res.checked, res.worst);
}

static struct px_shape shape2(int64_t b, int64_t f)
{
	return (struct px_shape){.ndim = 2, .dim = {b, f}};
}

/* ------------------------------------------------------------------ autoencoder */
static const struct {
	const char *fixture, *options;
} golden[] = {
	{"ae_relu_untied", "sizes: [12, 8, 4]"},
	{"ae_tanh_tied_image", "sizes: [12, 7, 5, 3], activation: tanh, output_activation: none, "
			       "tied: true"},
	{"ae_sigmoid_deep", "sizes: [10, 8, 6, 4, 2], activation: sigmoid"},
};

START_TEST(test_autoencoder_matches_pytorch_recon_code_and_all_gradients)
{
	char rel[160];
	snprintf(rel, sizeof rel, "conv/%s.txt", golden[_i].fixture);
	double e = golden_layer_check(layer("autoencoder"), rel, golden[_i].options, true);
	ck_assert_msg(e <= 1e-4, "%s: max abs error %g vs PyTorch", golden[_i].fixture, e);
}
END_TEST

START_TEST(test_autoencoder_grads_match_finite_differences)
{
	static const char *const opts[] = {
		"sizes: [9, 6, 4], activation: tanh",
		"sizes: [9, 6, 4], activation: tanh, output_activation: none, tied: true",
		"sizes: [8, 7, 5, 2], activation: sigmoid, tied: true",
	};
	for (int i = 0; i < 3; i++) {
		struct px_tensor *x;
		struct px_layer_inst *li = make("autoencoder", opts[i], shape2(3, i == 2 ? 8 : 9),
						(uint64_t)i + 1, 0, 1, &x);
		gradcheck(li, x, true, opts[i]);
		px_layer_inst_free(li);
	}
}
END_TEST

/* relu has a kink at 0: the check is only meaningful when no pre-activation lies within reach
 * of a finite-difference step. With one encoder layer the only relu is the code, whose
 * pre-activations x W^T + b this test computes itself: it takes the first seed whose
 * pre-activations all lie >= 0.05 from 0, on both sides (a step of 1e-2 moves one by at most
 * 1e-2 * max|w| < 0.01). */
static bool relu_code_clear_of_kink(struct px_layer_inst *li, const struct px_tensor *x)
{
	const struct px_param *w = px_layer_inst_param(li, 0), *b = px_layer_inst_param(li, 1);
	ck_assert_str_eq(w->name, "enc0.weight");
	int positive = 0;
	for (int64_t n = 0; n < 4; n++)
		for (int64_t j = 0; j < 3; j++) {
			double z = b->value->data[j];
			for (int64_t i = 0; i < 6; i++)
				z += (double)x->data[n * 6 + i] * w->value->data[j * 6 + i];
			if (fabs(z) < 0.05)
				return false;
			positive += z > 0;
		}
	return positive > 0 && positive < 12;
}

START_TEST(test_autoencoder_relu_grads_match_finite_differences_away_from_the_kink)
{
	for (uint64_t seed = 1; seed < 100; seed++) {
		struct px_tensor *x;
		struct px_layer_inst *li = make("autoencoder", "sizes: [6, 3]", shape2(4, 6), seed, 0,
						1, &x);
		if (relu_code_clear_of_kink(li, x)) {
			gradcheck(li, x, true, "autoencoder {sizes: [6, 3]} relu");
			px_layer_inst_free(li);
			return;
		}
		px_layer_inst_free(li);
	}
	ck_abort_msg("no seed below 100 keeps the pre-activations clear of the kink");
}
END_TEST

START_TEST(test_autoencoder_code_gradient_alone_equals_code_gradient_with_zero_recon)
{
	struct px_tensor *x;
	struct px_layer_inst *li = make("autoencoder", "sizes: [8, 5, 3], activation: tanh",
					shape2(2, 8), 4, 0, 1, &x);
	forward(li, x, true);
	struct px_tensor *g = px_layer_inst_tensor(li, 2, (int64_t[]){2, 3});
	struct px_tensor *zero = px_layer_inst_tensor(li, 2, (int64_t[]){2, 8});
	struct px_tensor *dx1 = px_layer_inst_tensor(li, 2, (int64_t[]){2, 8});
	struct px_tensor *dx2 = px_layer_inst_tensor(li, 2, (int64_t[]){2, 8});
	struct px_rng r;
	px_rng_seed(&r, 3);
	px_rng_fill_uniform(&r, g->data, 6, -1, 1);
	struct px_error err = {0};
	const struct px_tensor *d_code_only[2] = {NULL, g}, *d_both[2] = {zero, g};
	struct px_tensor *d1[1] = {dx1}, *d2[1] = {dx2};
	ck_assert_int_eq(px_layer_inst_backward(li, d_code_only, d1, &err), 0);
	ck_assert_int_eq(px_layer_inst_backward(li, d_both, d2, &err), 0);
	double nz = 0;
	for (int i = 0; i < 16; i++) {
		ck_assert_double_eq_tol(dx1->data[i], dx2->data[i], 1e-6);
		nz += fabs(dx1->data[i]);
	}
	ck_assert(nz > 0);
	px_layer_inst_free(li);
}
END_TEST

START_TEST(test_autoencoder_params_have_linear_names_and_layouts)
{
	struct px_tensor *x;
	struct px_layer_inst *li = make("autoencoder", "sizes: [784, 256, 64]", shape2(2, 784), 1,
					0, 1, &x);
	static const char *const names[] = {"enc0.weight", "enc0.bias", "enc1.weight", "enc1.bias",
					    "dec0.weight", "dec0.bias", "dec1.weight", "dec1.bias"};
	static const int64_t rows[] = {256, 256, 64, 64, 256, 256, 784, 784};
	static const int64_t cols[] = {784, 0, 256, 0, 64, 0, 256, 0};
	ck_assert_int_eq(px_layer_inst_n_params(li), 8);
	for (int p = 0; p < 8; p++) {
		struct px_param *prm = px_layer_inst_param(li, p);
		ck_assert_str_eq(prm->name, names[p]);
		ck_assert_int_eq(prm->value->shape[0], rows[p]);
		if (cols[p])
			ck_assert_int_eq(prm->value->shape[1], cols[p]);
	}
	/* nn.Linear's init: U(-1/sqrt(in), 1/sqrt(in)) */
	const struct px_tensor *w = px_layer_inst_param(li, 0)->value;
	double mx = 0;
	for (int64_t i = 0; i < px_tensor_numel(w); i++)
		mx = fmax(mx, fabs(w->data[i]));
	ck_assert(mx <= 1 / sqrt(784.0) && mx > 0.99 / sqrt(784.0));
	forward(li, x, true);
	ck_assert_int_eq(px_layer_inst_out(li, 1)->shape[1], 64);
	px_layer_inst_free(li);
	/* tied: no decoder weights */
	li = make("autoencoder", "sizes: [784, 256, 64], tied: true", shape2(2, 784), 1, 0, 1, &x);
	ck_assert_int_eq(px_layer_inst_n_params(li), 6);
	for (int p = 0; p < 6; p++)
		ck_assert(!strstr(px_layer_inst_param(li, p)->name, "dec") ||
			  strstr(px_layer_inst_param(li, p)->name, "bias"));
	px_layer_inst_free(li);
}
END_TEST

static void expect_create_error(const char *options, struct px_shape in, const char *const *want)
{
	struct px_layer_inst *li = NULL;
	struct px_error err = {0};
	int rc = px_layer_inst_new(layer("autoencoder"), options, 1, &in, NULL, 1, NULL, &li, &err);
	ck_assert_msg(rc == PX_ERR_SHAPE, "{%s}: got %s (%s)", options, px_status_name(rc), err.msg);
	ck_assert_ptr_null(li);
	for (; *want; want++)
		ck_assert_msg(strstr(err.msg, *want), "message \"%s\" lacks \"%s\"", err.msg, *want);
}

START_TEST(test_autoencoder_bottleneck_must_be_smaller_than_the_input)
{
	expect_create_error("sizes: [784, 800]", shape2(-1, 784),
			    (const char *[]){"code size 800 must be smaller than the input 784", NULL});
	expect_create_error("sizes: [784, 1024, 784]", shape2(-1, 784),
			    (const char *[]){"code size 784", NULL});
}
END_TEST

START_TEST(test_autoencoder_first_size_must_be_the_input_features)
{
	struct px_shape img = {4, {-1, 1, 28, 28}};
	expect_create_error("sizes: [700, 64]", img,
			    (const char *[]){"sizes[0] is 700", "[B,1,28,28]", "784 features", NULL});
}
END_TEST

/* ------------------------------------------------------------------ noise layers */
static const char *const noise_kinds[] = {"gaussian_noise", "masking_noise", "salt_pepper_noise"};

START_TEST(test_noise_layers_are_the_identity_in_eval)
{
	struct px_tensor *x;
	struct px_layer_inst *li = make(noise_kinds[_i], "", shape2(8, 50), 2, -1, 1, &x);
	const struct px_tensor *y = forward(li, x, false);
	ck_assert(!memcmp(y->data, x->data, 400 * sizeof(float)));
	struct px_tensor *g = px_layer_inst_tensor(li, 2, x->shape);
	struct px_tensor *dx = px_layer_inst_tensor(li, 2, x->shape);
	struct px_rng r;
	px_rng_seed(&r, 8);
	px_rng_fill_uniform(&r, g->data, 400, -1, 1);
	const struct px_tensor *d_out[1] = {g};
	struct px_tensor *d_in[1] = {dx};
	struct px_error err = {0};
	ck_assert_int_eq(px_layer_inst_backward(li, d_out, d_in, &err), 0);
	ck_assert(!memcmp(dx->data, g->data, 400 * sizeof(float)));
	px_layer_inst_free(li);
}
END_TEST

START_TEST(test_noise_layers_are_reproducible_per_seed_in_training)
{
	struct px_tensor *x1, *x2, *x3;
	struct px_layer_inst *a = make(noise_kinds[_i], "", shape2(8, 50), 5, -1, 1, &x1);
	struct px_layer_inst *b = make(noise_kinds[_i], "", shape2(8, 50), 5, -1, 1, &x2);
	struct px_layer_inst *c = make(noise_kinds[_i], "", shape2(8, 50), 6, -1, 1, &x3);
	memcpy(x3->data, x1->data, 400 * sizeof(float));
	const struct px_tensor *ya = forward(a, x1, true), *yb = forward(b, x2, true);
	const struct px_tensor *yc = forward(c, x3, true);
	ck_assert(!memcmp(ya->data, yb->data, 400 * sizeof(float)));
	ck_assert(memcmp(ya->data, yc->data, 400 * sizeof(float)));
	ck_assert(memcmp(ya->data, x1->data, 400 * sizeof(float)));  /* and it is noise */
	px_layer_inst_free(a);
	px_layer_inst_free(b);
	px_layer_inst_free(c);
}
END_TEST

START_TEST(test_noise_layers_corrupt_the_configured_amount)
{
	const int64_t n = 20000;
	struct px_tensor *x;
	/* gaussian: y - x ~ N(0, 0.3^2) */
	struct px_layer_inst *li = make("gaussian_noise", "std: 0.3", shape2(20, 1000), 1, 0.2f,
					0.8f, &x);
	const struct px_tensor *y = forward(li, x, true);
	double s = 0, ss = 0;
	for (int64_t i = 0; i < n; i++) {
		double d = y->data[i] - x->data[i];
		s += d;
		ss += d * d;
	}
	ck_assert_double_eq_tol(s / n, 0, 0.01);
	ck_assert_double_eq_tol(sqrt(ss / n), 0.3, 0.01);
	px_layer_inst_free(li);
	/* masking: a fraction 0.25 zeroed, the rest untouched (inputs are never 0) */
	li = make("masking_noise", "", shape2(20, 1000), 1, 0.2f, 0.8f, &x);
	y = forward(li, x, true);
	int64_t zero = 0, other = 0;
	for (int64_t i = 0; i < n; i++) {
		zero += y->data[i] == 0;
		other += y->data[i] != 0 && y->data[i] != x->data[i];
	}
	ck_assert_int_eq(other, 0);
	ck_assert_double_eq_tol((double)zero / n, 0.25, 0.015);
	px_layer_inst_free(li);
	/* salt and pepper: 0.2 corrupted, half to low, half to high */
	li = make("salt_pepper_noise", "fraction: 0.2, low: -1, high: 2", shape2(20, 1000), 1, 0.2f,
		  0.8f, &x);
	y = forward(li, x, true);
	int64_t lo = 0, hi = 0;
	for (int64_t i = 0; i < n; i++) {
		lo += y->data[i] == -1;
		hi += y->data[i] == 2;
		other += y->data[i] != -1 && y->data[i] != 2 && y->data[i] != x->data[i];
	}
	ck_assert_int_eq(other, 0);
	ck_assert_double_eq_tol((double)lo / n, 0.1, 0.012);
	ck_assert_double_eq_tol((double)hi / n, 0.1, 0.012);
	px_layer_inst_free(li);
}
END_TEST

/* backward in training: identity for gaussian noise, zero where masking/salt-pepper replaced
 * the input (checked by finite differences: the noise is the same in every forward of the
 * harness, which reseeds the node's stream) */
START_TEST(test_noise_layer_grads_match_finite_differences_in_training)
{
	struct px_tensor *x;
	struct px_layer_inst *li = make(noise_kinds[_i], "", shape2(4, 25), 3, -1, 1, &x);
	gradcheck(li, x, true, noise_kinds[_i]);
	px_layer_inst_free(li);
}
END_TEST

START_TEST(test_noise_keeps_padded_steps_of_ragged_sequences_at_zero)
{
	struct px_shape s = {3, {2, 5, 4}};
	struct px_layer_inst *li;
	struct px_error err = {0};
	bool ragged = true;
	static const char *const opts[] = {"std: 0.5", "fraction: 0.5", "fraction: 0.5"};
	ck_assert_int_eq(px_layer_inst_new(layer(noise_kinds[_i]), opts[_i], 1, &s, &ragged, 1,
					   NULL, &li, &err), 0);
	struct px_tensor *x = px_layer_inst_tensor(li, 3, s.dim);
	static const int32_t len[2] = {5, 2};
	x->lengths = len;
	for (int i = 0; i < 40; i++)
		x->data[i] = (i % 20) < len[i / 20] * 4 ? 0.5f : 0.0f;
	const struct px_tensor *y = forward(li, x, true);
	ck_assert_ptr_eq(y->lengths, len);
	for (int i = 28; i < 40; i++)  /* example 1, steps 2..4 */
		ck_assert_float_eq(y->data[i], 0);
	struct px_tensor *g = px_layer_inst_tensor(li, 3, s.dim);
	struct px_tensor *dx = px_layer_inst_tensor(li, 3, s.dim);
	for (int i = 0; i < 40; i++)
		g->data[i] = 1;
	const struct px_tensor *d_out[1] = {g};
	struct px_tensor *d_in[1] = {dx};
	ck_assert_int_eq(px_layer_inst_backward(li, d_out, d_in, &err), 0);
	for (int i = 28; i < 40; i++)
		ck_assert_float_eq(dx->data[i], 0);
	px_layer_inst_free(li);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("autoencoder");
	TCase *tc = tcase_create("autoencoder");
	tcase_set_timeout(tc, 120);
	tcase_add_loop_test(tc, test_autoencoder_matches_pytorch_recon_code_and_all_gradients, 0,
			    (int)(sizeof golden / sizeof golden[0]));
	tcase_add_test(tc, test_autoencoder_grads_match_finite_differences);
	tcase_add_test(tc, test_autoencoder_relu_grads_match_finite_differences_away_from_the_kink);
	tcase_add_test(tc, test_autoencoder_code_gradient_alone_equals_code_gradient_with_zero_recon);
	tcase_add_test(tc, test_autoencoder_params_have_linear_names_and_layouts);
	tcase_add_test(tc, test_autoencoder_bottleneck_must_be_smaller_than_the_input);
	tcase_add_test(tc, test_autoencoder_first_size_must_be_the_input_features);
	tcase_add_loop_test(tc, test_noise_layers_are_the_identity_in_eval, 0, 3);
	tcase_add_loop_test(tc, test_noise_layers_are_reproducible_per_seed_in_training, 0, 3);
	tcase_add_test(tc, test_noise_layers_corrupt_the_configured_amount);
	tcase_add_loop_test(tc, test_noise_layer_grads_match_finite_differences_in_training, 0, 3);
	tcase_add_loop_test(tc, test_noise_keeps_padded_steps_of_ragged_sequences_at_zero, 0, 3);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
