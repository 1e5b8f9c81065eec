/* The core's built-in optimizers, gradient clipping and learning-rate schedules against
 * PyTorch (tests/gen_core.py -> fixtures/core/optim.txt). */
#include <check.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"
#include "internal.h"

#define STEPS 5
#define NP 2

static const struct px_optim_ops *optim(const char *kind)
{
	for (const struct px_optim_ops *const *o = px_builtin_optims; *o; o++)
		if (!strcmp((*o)->kind, kind))
			return *o;
	ck_abort_msg("no built-in optimizer '%s'", kind);
	return NULL;
}

/* Mirrors OPTIM_CASES of tests/gen_core.py. */
static const struct optim_case {
	const char *name, *kind, *options;
} cases[] = {
	{"sgd", "sgd", "lr: 0.1"},
	{"sgd_momentum", "sgd", "lr: 0.05, momentum: 0.9, dampening: 0.1, weight_decay: 0.01"},
	{"sgd_nesterov", "sgd", "lr: 0.05, momentum: 0.8, nesterov: true, weight_decay: 0.1"},
	{"adam", "adam", ""},
	{"adam_wd_amsgrad", "adam", "lr: 0.01, betas: [0.8, 0.9], weight_decay: 0.1, amsgrad: true"},
	{"adamw", "adamw", "lr: 0.01"},
	{"adamw_amsgrad", "adamw", "lr: 0.02, weight_decay: 0.5, amsgrad: true, eps: 1e-6"},
	{"rmsprop", "rmsprop", ""},
	{"rmsprop_centered", "rmsprop",
	 "lr: 0.01, alpha: 0.9, momentum: 0.9, centered: true, weight_decay: 0.1"},
	{"adagrad", "adagrad", ""},
	{"adagrad_decay", "adagrad",
	 "lr: 0.1, lr_decay: 0.1, weight_decay: 0.1, initial_accumulator_value: 0.1"},
	{"adam_lr_vary", "adam", ""},
};

static struct fixture *fx;
static struct px_arena *arena;

static void setup(void)
{
	fx = fixture_load("core/optim.txt");
	ck_assert_ptr_nonnull(fx);
	arena = px_arena_new(1 << 16);
}

static void teardown(void)
{
	fixture_free(fx);
	px_arena_free(arena);
}

/* Quiet lookup: NULL when absent. */
static struct fixture_tensor *find(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static struct fixture_tensor *find(const char *fmt, ...)
{
	char key[160];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(key, sizeof key, fmt, ap);
	va_end(ap);
	for (int i = 0; i < fx->n; i++)
		if (!strcmp(fx->t[i].name, key))
			return &fx->t[i];
	return NULL;
}

static struct fixture_tensor *need(struct fixture_tensor *t)
{
	ck_assert_msg(t != NULL, "fixture tensor missing");
	return t;
}

/* Parameters with values from fixture "<prefix>.p<j>" (grads zero). */
static void make_params(struct px_param *params, struct px_param **ptrs, const char *prefix)
{
	for (int j = 0; j < NP; j++) {
		struct fixture_tensor *f = need(find("%s.p%d", prefix, j));
		memset(&params[j], 0, sizeof params[j]);
		params[j].name = j ? "bias" : "weight";
		params[j].value = px_tensor_new(arena, f->ndim, f->shape);
		params[j].grad = px_tensor_new(arena, f->ndim, f->shape);
		params[j].trainable = true;
		memcpy(params[j].value->data, f->data, (size_t)f->numel * sizeof(float));
		ptrs[j] = &params[j];
	}
}

static void set_grads(struct px_param *params, const char *prefix)
{
	for (int j = 0; j < NP; j++) {
		struct fixture_tensor *f = need(find("%s.p%d", prefix, j));
		memcpy(params[j].grad->data, f->data, (size_t)f->numel * sizeof(float));
	}
}

/* max |a - b| / max(1, |b|) */
static double rel_err(const float *a, const float *b, int64_t n)
{
	double m = 0;
	for (int64_t i = 0; i < n; i++) {
		double e = fabs((double)a[i] - b[i]) / fmax(1.0, fabs(b[i]));
		m = (e > m || e != e) ? (e != e ? 1e30 : e) : m;
	}
	return m;
}

START_TEST(test_optimizer_params_after_each_step_match_pytorch)
{
	const struct optim_case *c = &cases[_i];
	const struct px_optim_ops *ops = optim(c->kind);
	struct px_config *cfg;
	struct px_error err;
	ck_assert_msg(px_config_parse(ops->schema, c->options, &cfg, &err) == 0, "%s", err.msg);
	struct fixture_tensor *lrs = need(find("%s.lr", c->name));
	/* the schema's lr (default or given) is PyTorch's */
	ck_assert_double_eq_tol(px_config_float(cfg, "lr"), lrs->data[0], 1e-7 * lrs->data[0]);
	struct px_param params[NP], *ptrs[NP];
	make_params(params, ptrs, "init");
	void *self;
	ck_assert_msg(ops->create(cfg, ptrs, NP, &self, &err) == 0, "%s", err.msg);
	double worst = 0;
	for (int k = 1; k <= STEPS; k++) {
		char g[32];
		snprintf(g, sizeof g, "grad%d", k);
		set_grads(params, g);
		ops->step(self, lrs->data[k - 1], k);
		for (int j = 0; j < NP; j++) {
			struct fixture_tensor *want = need(find("%s.step%d.p%d", c->name, k, j));
			double e = rel_err(params[j].value->data, want->data, want->numel);
			worst = fmax(worst, e);
			ck_assert_msg(e <= 2e-6, "%s step %d param %d: off by %g", c->name, k, j, e);
		}
	}
	/* the state slots hold what PyTorch's optimizer state holds under the same names */
	int n_state = 0;
	double worst_state = 0;
	for (int s = 0; ops->slots[s]; s++)
		for (int j = 0; j < NP; j++) {
			struct fixture_tensor *want = find("%s.state.%s.p%d", c->name, ops->slots[s], j);
			float *have = ops->slot(self, j, s);
			ck_assert_ptr_nonnull(have);
			if (!want)
				continue;
			double e = rel_err(have, want->data, want->numel);
			worst_state = fmax(worst_state, e);
			ck_assert_msg(e <= 2e-6, "%s slot %s param %d: off by %g", c->name,
				      ops->slots[s], j, e);
			n_state++;
		}
	bool stateful = strcmp(c->name, "sgd") != 0;
	ck_assert_msg(!stateful || n_state > 0, "%s: no state compared", c->name);
	printf("%-18s max rel err over %d steps %.2e, state (%d tensors) %.2e\n", c->name, STEPS,
	       worst, n_state, worst_state);
	ops->destroy(self);
	px_config_free(cfg);
}
END_TEST

START_TEST(test_every_optimizer_has_lr_and_pytorch_slot_names)
{
	const char *kinds[] = {"sgd", "adam", "adamw", "rmsprop", "adagrad"};
	const double lr[] = {0.01, 1e-3, 1e-3, 1e-2, 1e-2};
	for (int i = 0; i < 5; i++) {
		const struct px_optim_ops *ops = optim(kinds[i]);
		struct px_config *cfg;
		struct px_error err;
		ck_assert_int_eq(px_config_parse(ops->schema, "", &cfg, &err), 0);
		ck_assert_double_eq(px_config_float(cfg, "lr"), lr[i]);
		px_config_free(cfg);
		ck_assert_ptr_nonnull(ops->slots[0]);
	}
	ck_assert_str_eq(optim("adam")->slots[0], "exp_avg");
	ck_assert_str_eq(optim("adam")->slots[1], "exp_avg_sq");
	ck_assert_str_eq(optim("sgd")->slots[0], "momentum_buffer");
	ck_assert_str_eq(optim("rmsprop")->slots[0], "square_avg");
	ck_assert_str_eq(optim("adagrad")->slots[0], "sum");
	struct px_config *cfg;
	struct px_error err;
	ck_assert_int_eq(px_config_parse(optim("adamw")->schema, "", &cfg, &err), 0);
	ck_assert_double_eq(px_config_float(cfg, "weight_decay"), 1e-2);
	px_config_free(cfg);
}
END_TEST

START_TEST(test_bad_optimizer_options_are_refused)
{
	struct px_config *cfg;
	struct px_error err;
	void *self;
	const struct px_optim_ops *adam = optim("adam");
	ck_assert_int_eq(px_config_parse(adam->schema, "betas: [0.9]", &cfg, &err), 0);
	ck_assert_int_eq(adam->create(cfg, NULL, 0, &self, &err), PX_ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "betas"));
	px_config_free(cfg);
	ck_assert_int_eq(px_config_parse(adam->schema, "betas: [0.9, 1]", &cfg, &err), 0);
	ck_assert_int_eq(adam->create(cfg, NULL, 0, &self, &err), PX_ERR_INVALID);
	px_config_free(cfg);
	const struct px_optim_ops *sgd = optim("sgd");
	ck_assert_int_eq(px_config_parse(sgd->schema, "nesterov: true", &cfg, &err), 0);
	ck_assert_int_eq(sgd->create(cfg, NULL, 0, &self, &err), PX_ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "nesterov"));
	px_config_free(cfg);
}
END_TEST

START_TEST(test_clip_grad_norm_and_value_match_pytorch)
{
	const char *names[] = {"clip_norm", "clip_norm_noop"};
	const double max_norm[] = {1.0, 100.0};
	for (int c = 0; c < 2; c++) {
		struct px_param params[NP], *ptrs[NP];
		char pre[64];
		snprintf(pre, sizeof pre, "%s.in", names[c]);
		make_params(params, ptrs, "init");
		set_grads(params, pre);
		double norm = px_clip_grad_norm(ptrs, NP, max_norm[c]);
		double want = need(find("%s.norm", names[c]))->data[0];
		double worst = 0;
		for (int j = 0; j < NP; j++) {
			struct fixture_tensor *o = need(find("%s.out.p%d", names[c], j));
			worst = fmax(worst, fixture_max_abs_diff(params[j].grad->data, o->data, o->numel));
		}
		printf("%-16s norm %.9g (torch %.9g), max grad err %.2e\n", names[c], norm, want, worst);
		ck_assert_double_eq_tol(norm, want, 1e-6 * want);
		ck_assert_msg(worst <= 1e-7, "%s: grads off by %g", names[c], worst);
	}
	struct px_param params[NP], *ptrs[NP];
	make_params(params, ptrs, "init");
	set_grads(params, "clip_value.in");
	px_clip_grad_value(ptrs, NP, 0.3);
	for (int j = 0; j < NP; j++) {
		struct fixture_tensor *o = need(find("clip_value.out.p%d", j));
		ck_assert_double_eq(fixture_max_abs_diff(params[j].grad->data, o->data, o->numel), 0);
	}
}
END_TEST

/* Mirrors sched_cases of tests/gen_core.py: base lr 0.1, 12 epochs. */
static const struct sched_case {
	const char *name, *options;
} sched_cases[] = {
	{"sched_step", "kind: step, step_size: 3, gamma: 0.5"},
	{"sched_exponential", "kind: exponential, gamma: 0.8"},
	{"sched_cosine", "kind: cosine, t_max: 5, eta_min: 0.001"},
	{"sched_cosine_epochs", "kind: cosine"},
	{"sched_plateau", "kind: plateau, factor: 0.5, patience: 1, threshold: 0.01, min_lr: 0.03"},
};

START_TEST(test_schedule_lr_per_epoch_matches_pytorch)
{
	const struct sched_case *c = &sched_cases[_i];
	struct px_config *cfg;
	struct px_error err;
	ck_assert_msg(px_config_parse(px_schedule_schema, c->options, &cfg, &err) == 0, "%s", err.msg);
	struct px_schedule s;
	ck_assert_msg(px_schedule_init(&s, cfg, 0.1, 12, &err) == 0, "%s", err.msg);
	struct fixture_tensor *want = need(find("%s.lr", c->name));
	struct fixture_tensor *val = need(find("plateau.val_loss"));
	double worst = 0;
	for (int e = 1; e <= 12; e++) {
		double lr = px_schedule_lr(&s, 1000 * e);
		worst = fmax(worst, fabs(lr - want->data[e - 1]));
		ck_assert_msg(fabs(lr - want->data[e - 1]) <= 1e-8, "%s epoch %d: lr %.9g, torch %.9g",
			      c->name, e, lr, want->data[e - 1]);
		px_schedule_epoch_end(&s, e, val->data[e - 1]);
	}
	printf("%-20s max lr err over 12 epochs %.2e\n", c->name, worst);
	px_config_free(cfg);
}
END_TEST

START_TEST(test_warmup_ramps_lr_linearly_over_the_first_steps)
{
	struct px_config *cfg;
	struct px_error err;
	ck_assert_int_eq(px_config_parse(px_schedule_schema, "kind: step, step_size: 1, gamma: 0.5, "
					 "warmup: 4", &cfg, &err), 0);
	struct px_schedule s;
	ck_assert_int_eq(px_schedule_init(&s, cfg, 0.1, 3, &err), 0);
	ck_assert_double_eq_tol(px_schedule_lr(&s, 1), 0.025, 1e-15);
	ck_assert_double_eq_tol(px_schedule_lr(&s, 2), 0.05, 1e-15);
	ck_assert_double_eq_tol(px_schedule_lr(&s, 4), 0.1, 1e-15);
	ck_assert_double_eq_tol(px_schedule_lr(&s, 5), 0.1, 1e-15);
	px_schedule_epoch_end(&s, 1, 0);
	ck_assert_double_eq_tol(px_schedule_lr(&s, 2), 0.025, 1e-15);  /* warmup of the epoch lr */
	ck_assert_double_eq_tol(px_schedule_lr(&s, 9), 0.05, 1e-15);
	px_config_free(cfg);
	/* no schedule at all */
	ck_assert_int_eq(px_schedule_init(&s, NULL, 0.3, 3, &err), 0);
	px_schedule_epoch_end(&s, 1, 1.0);
	ck_assert_double_eq(px_schedule_lr(&s, 1), 0.3);
	/* cosine needs a period */
	ck_assert_int_eq(px_config_parse(px_schedule_schema, "kind: cosine", &cfg, &err), 0);
	ck_assert_int_eq(px_schedule_init(&s, cfg, 0.1, 0, &err), PX_ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "t_max"));
	px_config_free(cfg);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("optim");
	TCase *tc = tcase_create("core");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_loop_test(tc, test_optimizer_params_after_each_step_match_pytorch, 0,
			    (int)(sizeof cases / sizeof *cases));
	tcase_add_test(tc, test_every_optimizer_has_lr_and_pytorch_slot_names);
	tcase_add_test(tc, test_bad_optimizer_options_are_refused);
	tcase_add_test(tc, test_clip_grad_norm_and_value_match_pytorch);
	tcase_add_loop_test(tc, test_schedule_lr_per_epoch_matches_pytorch, 0,
			    (int)(sizeof sched_cases / sizeof *sched_cases));
	tcase_add_test(tc, test_warmup_ramps_lr_linearly_over_the_first_steps);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
