/* The core's built-in layers and losses against the float64 reference (tests/ref64): the
 * reference's gradients by central differences in double (eps 1e-6, |a-n| <= 1e-5 + 1e-3|n|
 * for every element), and the float32 kernels against the reference (normalised MSE <= 1e-7,
 * forward and backward). Non-smooth points are avoided by construction: relu inputs are at
 * least 0.1 away from its kink (eps is 1e-6); ids (embedding) get no finite differences.
 * Dropout is checked in evaluation (the identity) and in training, where the reference
 * reproduces the kernel's mask: both draw from px_rng_seed_label(CHECK64_SEED, "forward"),
 * seeded afresh for every forward, in the kernel's order (ref64_random.c); the test asserts
 * that the fraction dropped is plausible for p. Given the mask, dropout is linear (no kink). */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check64.h"
#include "internal.h"

static const struct px_layer_ops *layer(const char *kind)
{
	for (const struct px_layer_ops *const *l = px_builtin_layers; *l; l++)
		if (!strcmp((*l)->kind, kind))
			return *l;
	ck_abort_msg("no built-in layer '%s'", kind);
	return NULL;
}

static struct px_arena *arena;
static struct px_rng rng;

static void setup(void)
{
	arena = px_arena_new(1 << 20);
	px_rng_seed(&rng, 2024);
}

static void teardown(void)
{
	px_arena_free(arena);
}

/* U(lo, hi) */
static struct px_tensor *rnd(int ndim, const int64_t *shape, float lo, float hi)
{
	struct px_tensor *t = px_tensor_new(arena, ndim, shape);
	ck_assert_ptr_nonnull(t);
	px_rng_fill_uniform(&rng, t->data, px_tensor_numel(t), lo, hi);
	return t;
}

static const int32_t lens3[3] = {4, 2, 1};   /* the padded steps hold garbage */

static void expect(const char *name, const struct px_layer_ops *ops, const char *opts, int n_in,
		   struct px_tensor *const *in, const bool *no_grad, struct ref_layer *ref)
{
	struct check64_result r;
	ck_assert_msg(check64_layer(name, ops, opts, n_in, in, no_grad, ref, NULL, NULL, &r) == 0,
		      "%s did not run", name);
	CHECK64_ASSERT_PASSED(name, &r);
}

START_TEST(test_linear_matches_float64_reference_and_its_gradient)
{
	struct ref_layer ref = {0};
	int64_t s[2] = {4, 6}, sr[3] = {3, 4, 5};
	struct px_tensor *x = rnd(2, s, -1, 1), *xr = rnd(3, sr, -1, 1);
	xr->lengths = lens3;
	ref_linear(&ref, true);
	expect("linear [4,6] -> 5", layer("linear"), "units: 5", 1, &x, NULL, &ref);
	ref_linear(&ref, false);
	expect("linear no bias [4,6] -> 3", layer("linear"), "units: 3, bias: false", 1, &x, NULL, &ref);
	ref_linear(&ref, true);
	expect("linear ragged [3,4,5] -> 4", layer("linear"), "units: 4", 1, &xr, NULL, &ref);
}
END_TEST

START_TEST(test_activations_match_float64_reference_and_their_gradients)
{
	struct ref_layer ref = {0};
	int64_t s[2] = {3, 5}, sr[3] = {3, 4, 3};
	struct px_tensor *x = rnd(2, s, -2, 2), *xr = rnd(3, sr, -2, 2);
	xr->lengths = lens3;
	for (int64_t i = 0; i < px_tensor_numel(x); i++)   /* relu: 0.1 or more from the kink */
		x->data[i] += x->data[i] >= 0 ? 0.1f : -0.1f;
	for (int64_t i = 0; i < px_tensor_numel(xr); i++)
		xr->data[i] += xr->data[i] >= 0 ? 0.1f : -0.1f;
	ref_relu(&ref);
	expect("relu [3,5]", layer("relu"), "", 1, &x, NULL, &ref);
	ref_relu(&ref);
	expect("relu ragged [3,4,3]", layer("relu"), "", 1, &xr, NULL, &ref);
	ref_tanh(&ref);
	expect("tanh [3,5]", layer("tanh"), "", 1, &x, NULL, &ref);
	ref_tanh(&ref);
	expect("tanh ragged [3,4,3]", layer("tanh"), "", 1, &xr, NULL, &ref);
	ref_sigmoid(&ref);
	expect("sigmoid [3,5]", layer("sigmoid"), "", 1, &x, NULL, &ref);
	ref_sigmoid(&ref);
	expect("sigmoid ragged [3,4,3]", layer("sigmoid"), "", 1, &xr, NULL, &ref);
}
END_TEST

START_TEST(test_softmax_matches_float64_reference_and_its_gradient)
{
	struct ref_layer ref = {0};
	int64_t s[2] = {3, 5}, s2[2] = {3, 4}, sr[3] = {3, 4, 3};
	struct px_tensor *x = rnd(2, s, -2, 2), *m = rnd(2, s2, -2, 2), *xr = rnd(3, sr, -2, 2);
	m->lengths = lens3;
	xr->lengths = lens3;
	ref_softmax(&ref);
	expect("softmax [3,5]", layer("softmax"), "", 1, &x, NULL, &ref);
	ref_softmax(&ref);
	expect("softmax masked ragged [3,4]", layer("softmax"), "", 1, &m, NULL, &ref);
	ref_softmax(&ref);
	expect("softmax ragged [3,4,3]", layer("softmax"), "", 1, &xr, NULL, &ref);
}
END_TEST

START_TEST(test_views_and_dropout_in_eval_match_float64_reference)
{
	struct ref_layer ref = {0};
	int64_t sr[3] = {3, 4, 5}, s[2] = {3, 12};
	struct px_tensor *xr = rnd(3, sr, -1, 1), *x = rnd(2, s, -1, 1);
	xr->lengths = lens3;
	int64_t flat[1] = {20}, resh[2] = {3, 4};
	ref_identity(&ref, 2, flat);
	expect("flatten ragged [3,4,5]", layer("flatten"), "", 1, &xr, NULL, &ref);
	ref_identity(&ref, 3, resh);
	expect("reshape [3,12] -> [3,3,4]", layer("reshape"), "shape: [3, 4]", 1, &x, NULL, &ref);
	ref_identity(&ref, 0, NULL);
	expect("dropout eval ragged [3,4,5]", layer("dropout"), "p: 0.5", 1, &xr, NULL, &ref);
}
END_TEST

/* check64_layer frees the reference when done: this forward hook keeps what the reference's
 * first forward (the one the kernel is compared with) drew */
static void (*watched_fwd)(struct ref_layer *, int, struct r64 *const *, struct r64 **);
static struct ref_draws drawn;
static int64_t forwards;

static void watch_fwd(struct ref_layer *l, int n_in, struct r64 *const *in, struct r64 **out)
{
	watched_fwd(l, n_in, in, out);
	if (forwards++ == 0)
		ref_random_draws(l, &drawn);
}

/* dropout in training: the kernel's mask, reproduced; d = the fraction dropped must lie within
 * 3 standard deviations of p (Binomial), with at least one element dropped and one kept */
static void expect_dropout(const char *name, double p, struct px_tensor *x)
{
	struct ref_layer ref = {0};
	const struct check64_opts train = {.train = true};
	char opts[32];
	snprintf(opts, sizeof opts, "p: %g", p);
	ref_dropout(&ref, p, CHECK64_SEED);
	watched_fwd = ref.forward;
	ref.forward = watch_fwd;
	forwards = 0;
	struct check64_result r;
	ck_assert_msg(check64_layer(name, layer("dropout"), opts, 1, &x, NULL, &ref, NULL, &train,
				    &r) == 0, "%s did not run", name);
	double n = (double)drawn.valid, d = (double)drawn.hit / n, sd = sqrt(p * (1 - p) / n);
	printf("%-34s dropped %lld of %lld valid elements (%.3f, p %.2f +- %.3f)\n", name,
	       (long long)drawn.hit, (long long)drawn.valid, d, p, 3 * sd);
	ck_assert_msg(r.fd_checked > 0, "%s: nothing checked", name);
	ck_assert_msg(drawn.hit > 0 && drawn.hit < drawn.valid && fabs(d - p) <= 3 * sd,
		      "%s: dropped %lld of %lld, implausible for p = %g", name,
		      (long long)drawn.hit, (long long)drawn.valid, p);
	CHECK64_ASSERT_PASSED(name, &r);
}

START_TEST(test_dropout_in_training_reproduces_kernel_mask_and_matches_float64_reference)
{
	int64_t s[2] = {8, 10}, sr[3] = {3, 4, 5};
	struct px_tensor *x = rnd(2, s, -1, 1), *xr = rnd(3, sr, -1, 1);
	xr->lengths = lens3;   /* 35 valid elements of 60 */
	expect_dropout("dropout train p 0.3 [8,10]", 0.3, x);
	expect_dropout("dropout train p 0.5 [8,10]", 0.5, x);
	expect_dropout("dropout train p 0.3 ragged [3,4,5]", 0.3, xr);
	expect_dropout("dropout train p 0.5 ragged [3,4,5]", 0.5, xr);
}
END_TEST

START_TEST(test_embedding_matches_float64_reference_and_its_gradient)
{
	struct ref_layer ref = {0};
	int64_t s[2] = {3, 4};
	struct px_tensor *ids = px_tensor_new(arena, 2, s);
	for (int64_t i = 0; i < 12; i++)   /* repeated ids (gradients add up), id 0 the padding */
		ids->data[i] = (float)(px_rng_u64(&rng) % 6);
	ids->data[0] = 0;
	ids->data[1] = 3;
	ids->data[2] = 3;
	ids->lengths = lens3;
	bool no_grad[1] = {true};
	ref_embedding(&ref, 0);
	expect("embedding ragged [3,4] vocab 6", layer("embedding"), "vocab: 6, dim: 3, padding_idx: 0",
	       1, &ids, no_grad, &ref);
}
END_TEST

START_TEST(test_concat_and_add_match_float64_reference_and_their_gradients)
{
	struct ref_layer ref = {0};
	int64_t a[3] = {3, 4, 2}, b[3] = {3, 4, 3};
	struct px_tensor *in[3] = {rnd(3, a, -1, 1), rnd(3, b, -1, 1), rnd(3, a, -1, 1)};
	in[0]->lengths = in[1]->lengths = in[2]->lengths = lens3;
	ref_concat(&ref);
	expect("concat ragged [3,4,2]+[3,4,3]", layer("concat"), "", 2, in, NULL, &ref);
	struct px_tensor *sum[3] = {in[0], in[2], rnd(3, a, -1, 1)};
	sum[2]->lengths = lens3;
	ref_add(&ref);
	expect("add ragged 3 x [3,4,2]", layer("add"), "", 3, sum, NULL, &ref);
}
END_TEST

/* ------------------------------------------------------------------ losses */
enum which { MSE, CE, BCE };

static const struct px_loss_ops *loss_ops(const char *kind)
{
	for (const struct px_loss_ops *const *l = px_builtin_losses; *l; l++)
		if (!strcmp((*l)->kind, kind))
			return *l;
	ck_abort_msg("no built-in loss '%s'", kind);
	return NULL;
}

static double ref_loss(enum which w, const struct r64 *p, const struct r64 *t, double a, double b,
		       struct r64 *d, double *count)
{
	switch (w) {
	case MSE: return ref_mse(p, t, d, count);
	case CE: return ref_cross_entropy(p, t, (int64_t)a, b, d, count);
	default: return ref_bce(p, t, a, d, count);
	}
}

static void loss_case(const char *name, enum which w, const char *opts, double a, double b,
		      struct px_tensor *pred, struct px_tensor *target)
{
	const char *kind = w == MSE ? "mse" : w == CE ? "cross_entropy" : "bce";
	const struct px_loss_ops *ops = loss_ops(kind);
	struct px_config *cfg;
	struct px_error err;
	ck_assert_msg(px_config_parse(ops->schema, opts, &cfg, &err) == 0, "%s", err.msg);
	struct px_shape sp, st;
	px_tensor_shape(pred, &sp);
	px_tensor_shape(target, &st);
	sp.dim[0] = st.dim[0] = -1;
	void *self;
	ck_assert_msg(ops->create(cfg, &sp, &st, &self, &err) == 0, "%s: %s", name, err.msg);
	struct px_tensor *d = px_tensor_like(arena, pred);
	struct px_loss_result res;
	ck_assert_msg(ops->forward(self, pred, target, &res, d, 1.0f, &err) == 0, "%s: %s", name,
		      err.msg);
	ops->destroy(self);
	px_config_free(cfg);

	struct r64 *p = r64_new(pred->ndim, pred->shape), *t = r64_new(target->ndim, target->shape);
	for (int64_t i = 0; i < r64_numel(p); i++)
		p->d[i] = pred->data[i];
	for (int64_t i = 0; i < r64_numel(t); i++)
		t->d[i] = target->data[i];
	p->lengths = pred->lengths;
	t->lengths = target->lengths;
	struct r64 *rd = r64_like(p);
	double count, sum = ref_loss(w, p, t, a, b, rd, &count);
	double fwd = (res.sum - sum) * (res.sum - sum) / (sum * sum);
	double bwd = check64_nmse(d->data, rd->d, r64_numel(rd));
	/* the reference's gradient by central differences in double */
	int64_t checked = 0, failed = 0;
	double worst = 0;
	for (int64_t i = 0; i < r64_numel(p); i++) {
		double keep = p->d[i], c2;
		p->d[i] = keep + CHECK64_EPS;
		double lp = ref_loss(w, p, t, a, b, NULL, &c2);
		p->d[i] = keep - CHECK64_EPS;
		double lm = ref_loss(w, p, t, a, b, NULL, &c2);
		p->d[i] = keep;
		double n = (lp - lm) / (2 * CHECK64_EPS), e = fabs(rd->d[i] - n);
		checked++;
		failed += e > CHECK64_ATOL + CHECK64_RTOL * fabs(n);
		worst = fmax(worst, e);
	}
	printf("%-34s fwd nMSE %8.1e  bwd nMSE %8.1e  FD64 %5lld checked, max |a-n| %.1e\n", name,
	       fwd, bwd, (long long)checked, worst);
	ck_assert_msg(res.count == count, "%s: count %g, reference %g", name, res.count, count);
	ck_assert_msg(failed == 0, "%s: %lld of %lld float64 gradient elements off", name,
		      (long long)failed, (long long)checked);
	ck_assert_msg(fwd <= CHECK64_NMSE, "%s: loss %.9g, reference %.9g", name, res.sum, sum);
	ck_assert_msg(bwd <= CHECK64_NMSE, "%s: gradient nMSE %g", name, bwd);
	r64_free(p);
	r64_free(t);
	r64_free(rd);
}

static struct px_tensor *classes(int ndim, const int64_t *shape, int64_t n)
{
	struct px_tensor *t = px_tensor_new(arena, ndim, shape);
	for (int64_t i = 0; i < px_tensor_numel(t); i++)
		t->data[i] = (float)(px_rng_u64(&rng) % (uint64_t)n);
	return t;
}

START_TEST(test_losses_match_float64_reference_and_their_gradients)
{
	int64_t s2[2] = {4, 3}, s3[3] = {3, 4, 2}, c2[2] = {5, 4}, y1[1] = {5};
	int64_t c3[3] = {3, 4, 5}, y2[2] = {3, 4}, c4[4] = {2, 3, 2, 2}, y3[3] = {2, 2, 2};
	loss_case("mse [4,3]", MSE, "", 0, 0, rnd(2, s2, -1, 1), rnd(2, s2, -1, 1));
	struct px_tensor *p = rnd(3, s3, -1, 1);
	p->lengths = lens3;
	loss_case("mse ragged [3,4,2]", MSE, "", 0, 0, p, rnd(3, s3, -1, 1));
	loss_case("cross_entropy [5,4]", CE, "", -100, 0, rnd(2, c2, -2, 2), classes(1, y1, 4));
	struct px_tensor *t = classes(1, y1, 4);
	t->data[2] = 7;   /* ignored */
	loss_case("cross_entropy smoothing, ignore", CE, "label_smoothing: 0.1, ignore_index: 7", 7,
		  0.1, rnd(2, c2, -2, 2), t);
	p = rnd(3, c3, -2, 2);
	p->lengths = lens3;
	loss_case("cross_entropy ragged [3,4,5]", CE, "", -100, 0, p, classes(2, y2, 5));
	loss_case("cross_entropy [2,3,2,2] per pixel", CE, "", -100, 0, rnd(4, c4, -2, 2),
		  classes(3, y3, 3));
	loss_case("bce [4,3] 0/1 targets", BCE, "", 1, 0, rnd(2, s2, -3, 3), classes(2, s2, 2));
	loss_case("bce pos_weight 2.5, soft targets", BCE, "pos_weight: 2.5", 2.5, 0,
		  rnd(2, s2, -3, 3), rnd(2, s2, 0, 1));
	p = rnd(3, s3, -3, 3);
	p->lengths = lens3;
	loss_case("bce ragged [3,4,2]", BCE, "", 1, 0, p, classes(3, s3, 2));
}
END_TEST

int main(void)
{
	Suite *s = suite_create("ref64_core");
	TCase *tc = tcase_create("ref64_core");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_linear_matches_float64_reference_and_its_gradient);
	tcase_add_test(tc, test_activations_match_float64_reference_and_their_gradients);
	tcase_add_test(tc, test_softmax_matches_float64_reference_and_its_gradient);
	tcase_add_test(tc, test_views_and_dropout_in_eval_match_float64_reference);
	tcase_add_test(tc, test_dropout_in_training_reproduces_kernel_mask_and_matches_float64_reference);
	tcase_add_test(tc, test_embedding_matches_float64_reference_and_its_gradient);
	tcase_add_test(tc, test_concat_and_add_match_float64_reference_and_their_gradients);
	tcase_add_test(tc, test_losses_match_float64_reference_and_their_gradients);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
