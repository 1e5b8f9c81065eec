/* The core's built-in losses against PyTorch (tests/gen_core.py -> fixtures/core/losses.txt)
 * and against finite differences. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"
#include "internal.h"

static const struct px_loss_ops *loss(const char *kind)
{
	for (const struct px_loss_ops *const *l = px_builtin_losses; *l; l++)
		if (!strcmp((*l)->kind, kind))
			return *l;
	ck_abort_msg("no built-in loss '%s'", kind);
	return NULL;
}

enum lengths_on { LEN_NONE, LEN_PRED, LEN_TARGET };

/* Mirrors the cases of tests/gen_core.py. */
static const struct loss_case {
	const char *name, *fixture, *kind, *options;
	enum lengths_on lengths;
} cases[] = {
	{"mse_2d", "mse_2d", "mse", "", LEN_NONE},
	{"mse_seq", "mse_seq", "mse", "", LEN_PRED},
	{"ce_2d", "ce_2d", "cross_entropy", "", LEN_NONE},
	{"ce_ignore", "ce_ignore", "cross_entropy", "", LEN_NONE},
	{"ce_smooth", "ce_smooth", "cross_entropy", "label_smoothing: 0.1", LEN_NONE},
	{"ce_ignore_smooth", "ce_ignore_smooth", "cross_entropy",
	 "ignore_index: 1, label_smoothing: 0.2", LEN_NONE},
	{"ce_large", "ce_large", "cross_entropy", "", LEN_NONE},
	{"ce_seq (pred lengths)", "ce_seq", "cross_entropy", "", LEN_PRED},
	{"ce_seq (target lengths)", "ce_seq", "cross_entropy", "", LEN_TARGET},
	{"ce_img", "ce_img", "cross_entropy", "", LEN_NONE},
	{"bce", "bce", "bce", "", LEN_NONE},
	{"bce_pos", "bce_pos", "bce", "pos_weight: 2.5", LEN_NONE},
};

static struct fixture *fx;

static void setup(void)
{
	fx = fixture_load("core/losses.txt");
	ck_assert_ptr_nonnull(fx);
}

static void teardown(void)
{
	fixture_free(fx);
}

static struct fixture_tensor *get(const char *name, const char *what)
{
	char key[160];
	snprintf(key, sizeof key, "%s.%s", name, what);
	struct fixture_tensor *t = fixture_get(fx, key);
	ck_assert_msg(t != NULL, "fixture lacks %s", key);
	return t;
}

static struct px_tensor view(struct fixture_tensor *f)
{
	struct px_tensor t;
	memset(&t, 0, sizeof t);
	t.data = f->data;
	t.ndim = f->ndim;
	memcpy(t.shape, f->shape, sizeof t.shape);
	return t;
}

static void *create(const struct loss_case *c, const struct px_tensor *pred,
		    const struct px_tensor *target, struct px_config **cfg)
{
	struct px_error err;
	const struct px_loss_ops *ops = loss(c->kind);
	ck_assert_msg(px_config_parse(ops->schema, c->options, cfg, &err) == 0, "%s", err.msg);
	struct px_shape ps, ts;
	px_tensor_shape(pred, &ps);
	px_tensor_shape(target, &ts);
	ps.dim[0] = ts.dim[0] = -1;
	void *self;
	ck_assert_msg(ops->create(*cfg, &ps, &ts, &self, &err) == 0, "%s: %s", c->name, err.msg);
	return self;
}

START_TEST(test_loss_value_count_accuracy_and_grad_match_pytorch)
{
	const struct loss_case *c = &cases[_i];
	const struct px_loss_ops *ops = loss(c->kind);
	struct px_tensor pred = view(get(c->fixture, "pred"));
	struct px_tensor target = view(get(c->fixture, "target"));
	int32_t lengths[16];
	if (c->lengths != LEN_NONE) {
		struct fixture_tensor *l = get(c->fixture, "lengths");
		for (int64_t b = 0; b < l->numel; b++)
			lengths[b] = (int32_t)l->data[b];
		if (c->lengths == LEN_PRED)
			pred.lengths = lengths;
		else
			target.lengths = lengths;
	}
	struct px_config *cfg;
	void *self = create(c, &pred, &target, &cfg);
	double want_sum = get(c->fixture, "sum")->data[0];
	double want_count = get(c->fixture, "count")->data[0];
	double want_correct = get(c->fixture, "correct")->data[0];
	struct fixture_tensor *want_grad = get(c->fixture, "grad");
	struct px_tensor d = pred;
	d.lengths = NULL;
	d.data = malloc((size_t)want_grad->numel * sizeof(float));
	for (int64_t i = 0; i < want_grad->numel; i++)
		d.data[i] = 1234.0f;  /* the loss must overwrite every element */
	struct px_loss_result res;
	struct px_error err;
	ck_assert_msg(ops->forward(self, &pred, &target, &res, &d, (float)(1.0 / want_count), &err) == 0,
		      "%s", err.msg);
	double grad_err = fixture_max_abs_diff(d.data, want_grad->data, want_grad->numel);
	printf("%-26s sum %.7g (torch %.7g)  count %g  correct %g  max grad err %.2e\n", c->name,
	       res.sum, want_sum, res.count, res.correct, grad_err);
	ck_assert_msg(fabs(res.sum - want_sum) <= 2e-6 * fmax(1.0, fabs(want_sum)),
		      "%s: sum %.9g, torch %.9g", c->name, res.sum, want_sum);
	ck_assert_double_eq(res.count, want_count);
	ck_assert_double_eq(res.correct, want_correct);
	ck_assert_msg(grad_err <= 1e-6, "%s: grad off by %g", c->name, grad_err);

	/* d(sum)/d(pred) by central differences, the sum accumulated in double */
	struct px_tensor d1 = d;
	d1.data = malloc((size_t)want_grad->numel * sizeof(float));
	ck_assert_int_eq(ops->forward(self, &pred, &target, &res, &d1, 1.0f, &err), 0);
	double worst = 0;
	for (int64_t i = 0; i < want_grad->numel; i++) {
		float orig = pred.data[i];
		struct px_loss_result rp, rm;
		pred.data[i] = orig + 1e-2f;
		double hp = (double)pred.data[i] - orig;
		ck_assert_int_eq(ops->forward(self, &pred, &target, &rp, NULL, 1.0f, &err), 0);
		pred.data[i] = orig - 1e-2f;
		double hm = (double)orig - pred.data[i];
		ck_assert_int_eq(ops->forward(self, &pred, &target, &rm, NULL, 1.0f, &err), 0);
		pred.data[i] = orig;
		double num = (rp.sum - rm.sum) / (hp + hm);
		double e = fabs(num - d1.data[i]);
		worst = fmax(worst, e);
		ck_assert_msg(e <= 1e-3 + 1e-3 * fabs(num), "%s: d/dpred[%lld] analytic %g numeric %g",
			      c->name, (long long)i, d1.data[i], num);
	}
	printf("%-26s finite-difference max err %.2e\n", c->name, worst);
	free(d.data);
	free(d1.data);
	ops->destroy(self);
	px_config_free(cfg);
}
END_TEST

START_TEST(test_loss_shape_errors_name_both_shapes)
{
	struct px_config *cfg;
	struct px_error err;
	void *self;
	struct px_shape p = {2, {-1, 5}}, t = {2, {-1, 3}};
	const struct px_loss_ops *ce = loss("cross_entropy");
	ck_assert_int_eq(px_config_parse(ce->schema, "", &cfg, &err), 0);
	ck_assert_int_eq(ce->create(cfg, &p, &t, &self, &err), PX_ERR_SHAPE);
	ck_assert_ptr_nonnull(strstr(err.msg, "[B,5]"));
	ck_assert_ptr_nonnull(strstr(err.msg, "[B,3]"));
	struct px_shape img = {4, {-1, 4, 3, 3}}, bad = {3, {-1, 3, 2}};
	ck_assert_int_eq(ce->create(cfg, &img, &bad, &self, &err), PX_ERR_SHAPE);
	ck_assert_ptr_nonnull(strstr(err.msg, "[B,4,3,3]"));
	ck_assert_ptr_nonnull(strstr(err.msg, "[B,3,2]"));
	px_config_free(cfg);
	const struct px_loss_ops *mse = loss("mse");
	ck_assert_int_eq(px_config_parse(mse->schema, "", &cfg, &err), 0);
	ck_assert_int_eq(mse->create(cfg, &p, &t, &self, &err), PX_ERR_SHAPE);
	ck_assert_ptr_nonnull(strstr(err.msg, "[B,5]"));
	ck_assert_ptr_nonnull(strstr(err.msg, "[B,3]"));
	px_config_free(cfg);
}
END_TEST

START_TEST(test_cross_entropy_target_outside_classes_is_an_error_naming_it)
{
	const struct loss_case c = {"ce", "ce_2d", "cross_entropy", "", LEN_NONE};
	struct px_tensor pred = view(get("ce_2d", "pred"));
	struct px_tensor target = view(get("ce_2d", "target"));
	struct px_config *cfg;
	void *self = create(&c, &pred, &target, &cfg);
	float saved = target.data[3];
	target.data[3] = 5;  /* 5 classes: 0..4 */
	struct px_loss_result res;
	struct px_error err;
	ck_assert_int_eq(loss("cross_entropy")->forward(self, &pred, &target, &res, NULL, 1.0f, &err),
			 PX_ERR_INVALID);
	ck_assert_str_eq(err.msg, "cross_entropy: target 5 is not a class in 0..4 (nor ignore_index -100)");
	target.data[3] = -100;  /* the default ignore_index is fine */
	ck_assert_int_eq(loss("cross_entropy")->forward(self, &pred, &target, &res, NULL, 1.0f, &err), 0);
	ck_assert_double_eq(res.count, 5);
	target.data[3] = saved;
	loss("cross_entropy")->destroy(self);
	px_config_free(cfg);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("losses");
	TCase *tc = tcase_create("core");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_loop_test(tc, test_loss_value_count_accuracy_and_grad_match_pytorch, 0,
			    (int)(sizeof cases / sizeof *cases));
	tcase_add_test(tc, test_loss_shape_errors_name_both_shapes);
	tcase_add_test(tc, test_cross_entropy_target_outside_classes_is_an_error_naming_it);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
