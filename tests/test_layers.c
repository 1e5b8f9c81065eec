/* The core's built-in layers: gradients by finite differences, ragged sequences, dropout,
 * embedding, shape errors. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static const struct px_layer_ops *layer(const char *kind)
{
	for (const struct px_layer_ops *const *l = px_builtin_layers; *l; l++)
		if (!strcmp((*l)->kind, kind))
			return *l;
	ck_abort_msg("no built-in layer '%s'", kind);
	return NULL;
}

/* A tensor from `a` filled with U(lo, hi). */
static struct px_tensor *rnd(struct px_arena *a, struct px_rng *r, int ndim, const int64_t *shape,
			     float lo, float hi)
{
	struct px_tensor *t = px_tensor_new(a, ndim, shape);
	ck_assert_ptr_nonnull(t);
	px_rng_fill_uniform(r, t->data, px_tensor_numel(t), lo, hi);
	return t;
}

/* Values in +-[0.1, 1]: away from relu's kink. */
static void push_from_zero(struct px_tensor *t)
{
	for (int64_t i = 0; i < px_tensor_numel(t); i++)
		t->data[i] = t->data[i] >= 0 ? 0.1f + t->data[i] : -0.1f + t->data[i];
}

static struct px_layer_inst *make(const char *kind, const char *opts, int n_in,
				  struct px_tensor *const *in)
{
	struct px_shape shapes[8];
	bool ragged[8];
	for (int i = 0; i < n_in; i++) {
		px_tensor_shape(in[i], &shapes[i]);
		ragged[i] = in[i]->lengths != NULL;
	}
	struct px_layer_inst *li;
	struct px_error err;
	int rc = px_layer_inst_new(layer(kind), opts, n_in, shapes, ragged, 42, NULL, &li, &err);
	ck_assert_msg(rc == 0, "%s: %s", kind, err.msg);
	return li;
}

static void expect_grad_ok(const char *what, struct px_layer_inst *li,
			   struct px_tensor *const *in, bool train)
{
	struct px_gradcheck_opts o;
	struct px_gradcheck_result res;
	struct px_error err;
	px_gradcheck_defaults(&o);
	o.train = train;
	int rc = px_gradcheck_layer(li, (const struct px_tensor *const *)in, &o, &res, &err);
	ck_assert_msg(rc == 0, "%s: %s", what, err.msg);
	printf("%-32s checked %4lld  max abs err %.2e  max rel err %.2e\n", what,
	       (long long)res.checked, res.max_abs_err, res.max_rel_err);
	ck_assert_msg(res.checked > 0, "%s: nothing checked", what);
	ck_assert_msg(res.failed == 0, "%s: %lld of %lld elements off, worst %s", what,
		      (long long)res.failed, (long long)res.checked, res.worst);
}

static const int32_t lens3[3] = {4, 2, 1};

/* A [3,4,F] ragged tensor whose padded steps hold garbage (so layers must ignore them). */
static struct px_tensor *ragged_input(struct px_arena *a, struct px_rng *r, int64_t f)
{
	int64_t s[3] = {3, 4, f};
	struct px_tensor *t = rnd(a, r, 3, s, -1, 1);
	t->lengths = lens3;
	return t;
}

static void expect_padding_zero(const struct px_tensor *t)
{
	int64_t per_step = px_tensor_numel(t) / (t->shape[0] * t->shape[1]);
	for (int64_t b = 0; b < t->shape[0]; b++)
		for (int64_t s = t->lengths[b]; s < t->shape[1]; s++)
			for (int64_t j = 0; j < per_step; j++)
				ck_assert_float_eq(t->data[(b * t->shape[1] + s) * per_step + j], 0.0f);
}

START_TEST(test_all_builtin_layers_are_exported_with_complete_tables)
{
	const char *kinds[] = {"linear", "relu", "tanh", "sigmoid", "softmax", "dropout",
			       "embedding", "flatten", "reshape", "concat", "add"};
	for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++) {
		const struct px_layer_ops *l = layer(kinds[i]);
		ck_assert_uint_eq(l->struct_size, sizeof(struct px_layer_ops));
		ck_assert_ptr_nonnull(l->schema);
		ck_assert_ptr_nonnull(l->inputs[0].name);
		ck_assert_ptr_nonnull(l->outputs[0].name);
		ck_assert_ptr_nonnull(l->doc);
		ck_assert(l->create && l->forward && l->backward && l->destroy);
	}
}
END_TEST

START_TEST(test_linear_forward_is_xwt_plus_b_with_pytorch_init_bounds)
{
	struct px_arena *a = px_arena_new(1 << 16);
	struct px_rng r;
	px_rng_seed(&r, 1);
	int64_t s[2] = {3, 16};
	struct px_tensor *x = rnd(a, &r, 2, s, -1, 1);
	struct px_layer_inst *li = make("linear", "units: 5", 1, &x);
	ck_assert_int_eq(px_layer_inst_n_params(li), 2);
	struct px_param *w = px_layer_inst_param(li, 0), *b = px_layer_inst_param(li, 1);
	ck_assert_str_eq(w->name, "weight");
	ck_assert_str_eq(b->name, "bias");
	ck_assert_int_eq(w->value->shape[0], 5);
	ck_assert_int_eq(w->value->shape[1], 16);
	float maxw = 0;
	for (int i = 0; i < 80; i++)
		maxw = fmaxf(maxw, fabsf(w->value->data[i]));
	ck_assert(maxw <= 0.25f && maxw > 0.2f);  /* U(-1/sqrt(16), 1/sqrt(16)) */
	struct px_error err;
	ck_assert_int_eq(px_layer_inst_forward(li, (const struct px_tensor *const *)&x, false, &err), 0);
	const struct px_tensor *y = px_layer_inst_out(li, 0);
	ck_assert_int_eq(y->shape[0], 3);
	ck_assert_int_eq(y->shape[1], 5);
	double worst = 0;
	for (int i = 0; i < 3; i++)
		for (int o = 0; o < 5; o++) {
			double e = b->value->data[o];
			for (int k = 0; k < 16; k++)
				e += (double)x->data[i * 16 + k] * w->value->data[o * 16 + k];
			worst = fmax(worst, fabs(e - y->data[i * 5 + o]));
		}
	ck_assert_msg(worst < 1e-5, "linear forward off by %g", worst);
	px_layer_inst_free(li);
	struct px_layer_inst *nb = make("linear", "units: 2, bias: false", 1, &x);
	ck_assert_int_eq(px_layer_inst_n_params(nb), 1);
	px_layer_inst_free(nb);
	px_arena_free(a);
}
END_TEST

START_TEST(test_linear_grad_matches_finite_difference)
{
	struct px_arena *a = px_arena_new(1 << 16);
	struct px_rng r;
	px_rng_seed(&r, 2);
	int64_t s[2] = {4, 6};
	struct px_tensor *x = rnd(a, &r, 2, s, -1, 1);
	struct px_layer_inst *li = make("linear", "units: 3", 1, &x);
	expect_grad_ok("linear [4,6]", li, &x, false);
	px_layer_inst_free(li);
	px_arena_free(a);
}
END_TEST

START_TEST(test_linear_on_ragged_sequence_zeroes_padding_and_grad_matches_finite_difference)
{
	struct px_arena *a = px_arena_new(1 << 16);
	struct px_rng r;
	px_rng_seed(&r, 3);
	struct px_tensor *x = ragged_input(a, &r, 5);
	struct px_layer_inst *li = make("linear", "units: 3", 1, &x);
	struct px_error err;
	ck_assert_int_eq(px_layer_inst_forward(li, (const struct px_tensor *const *)&x, true, &err), 0);
	const struct px_tensor *y = px_layer_inst_out(li, 0);
	ck_assert_int_eq(y->ndim, 3);
	ck_assert_int_eq(y->shape[2], 3);
	ck_assert_ptr_eq(y->lengths, lens3);
	expect_padding_zero(y);
	/* padded inputs hold garbage: their numeric gradient is 0 and so must the analytic be */
	expect_grad_ok("linear ragged [3,4,5]", li, &x, false);
	px_layer_inst_free(li);
	px_arena_free(a);
}
END_TEST

START_TEST(test_activation_grads_match_finite_difference)
{
	const char *kinds[] = {"relu", "tanh", "sigmoid", "softmax"};
	struct px_arena *a = px_arena_new(1 << 16);
	struct px_rng r;
	px_rng_seed(&r, 4);
	for (size_t k = 0; k < 4; k++) {
		char what[64];
		int64_t s[2] = {3, 5};
		struct px_tensor *x = rnd(a, &r, 2, s, -2, 2);
		push_from_zero(x);
		struct px_layer_inst *li = make(kinds[k], "", 1, &x);
		snprintf(what, sizeof what, "%s [3,5]", kinds[k]);
		expect_grad_ok(what, li, &x, false);
		px_layer_inst_free(li);

		struct px_tensor *xs = ragged_input(a, &r, 3);
		push_from_zero(xs);
		li = make(kinds[k], "", 1, &xs);
		struct px_error err;
		ck_assert_int_eq(px_layer_inst_forward(li, (const struct px_tensor *const *)&xs, false,
						       &err), 0);
		ck_assert_ptr_eq(px_layer_inst_out(li, 0)->lengths, lens3);
		expect_padding_zero(px_layer_inst_out(li, 0));
		snprintf(what, sizeof what, "%s ragged [3,4,3]", kinds[k]);
		expect_grad_ok(what, li, &xs, false);
		px_layer_inst_free(li);
	}
	px_arena_free(a);
}
END_TEST

START_TEST(test_softmax_rows_sum_to_one_and_ragged_rows_mask_padding)
{
	struct px_arena *a = px_arena_new(1 << 16);
	struct px_rng r;
	px_rng_seed(&r, 5);
	int64_t s[2] = {3, 4};
	struct px_tensor *x = rnd(a, &r, 2, s, -3, 3);
	x->data[0] = 100.0f;  /* no overflow */
	struct px_layer_inst *li = make("softmax", "", 1, &x);
	struct px_error err;
	ck_assert_int_eq(px_layer_inst_forward(li, (const struct px_tensor *const *)&x, false, &err), 0);
	const struct px_tensor *y = px_layer_inst_out(li, 0);
	for (int i = 0; i < 3; i++) {
		double sum = 0;
		for (int j = 0; j < 4; j++)
			sum += y->data[i * 4 + j];
		ck_assert_double_eq_tol(sum, 1.0, 1e-6);
	}
	ck_assert_float_eq_tol(y->data[0], 1.0f, 1e-6f);
	px_layer_inst_free(li);
	/* a ragged [B,T] row is a softmax over its valid steps (masked softmax) */
	x->lengths = (const int32_t[]){4, 2, 1};
	li = make("softmax", "", 1, &x);
	ck_assert_int_eq(px_layer_inst_forward(li, (const struct px_tensor *const *)&x, false, &err), 0);
	y = px_layer_inst_out(li, 0);
	ck_assert_float_eq_tol(y->data[4] + y->data[5], 1.0f, 1e-6f);
	ck_assert_float_eq(y->data[6], 0.0f);
	ck_assert_float_eq_tol(y->data[8], 1.0f, 1e-6f);
	expect_grad_ok("softmax masked [3,4]", li, &x, false);
	px_layer_inst_free(li);
	px_arena_free(a);
}
END_TEST

START_TEST(test_dropout_is_identity_in_eval_and_zeroes_about_p_scaled_in_train)
{
	struct px_arena *a = px_arena_new(1 << 16);
	int64_t s[2] = {50, 100};
	struct px_tensor *x = px_tensor_new(a, 2, s);
	px_init_fill(x, 2.0f);
	struct px_layer_inst *li = make("dropout", "p: 0.3", 1, &x);
	struct px_error err;
	ck_assert_int_eq(px_layer_inst_forward(li, (const struct px_tensor *const *)&x, false, &err), 0);
	const struct px_tensor *y = px_layer_inst_out(li, 0);
	for (int i = 0; i < 5000; i++)
		ck_assert_float_eq(y->data[i], 2.0f);
	ck_assert_int_eq(px_layer_inst_forward(li, (const struct px_tensor *const *)&x, true, &err), 0);
	y = px_layer_inst_out(li, 0);
	int zeros = 0;
	for (int i = 0; i < 5000; i++) {
		if (y->data[i] == 0.0f)
			zeros++;
		else
			ck_assert_float_eq_tol(y->data[i], 2.0f / 0.7f, 1e-6f);
	}
	double frac = zeros / 5000.0;
	printf("dropout p=0.3: %.4f of units zeroed\n", frac);
	ck_assert_msg(fabs(frac - 0.3) < 0.03, "dropped %.3f, expected about 0.3", frac);
	px_layer_inst_free(li);
	px_arena_free(a);
}
END_TEST

START_TEST(test_dropout_grad_uses_the_forward_mask)
{
	struct px_arena *a = px_arena_new(1 << 16);
	struct px_rng r;
	px_rng_seed(&r, 6);
	struct px_tensor *x = ragged_input(a, &r, 6);
	struct px_layer_inst *li = make("dropout", "p: 0.5", 1, &x);
	/* the harness draws the same mask at every forward, so train mode is checkable */
	expect_grad_ok("dropout train ragged [3,4,6]", li, &x, true);
	expect_grad_ok("dropout eval ragged [3,4,6]", li, &x, false);
	struct px_error err;
	ck_assert_int_eq(px_layer_inst_forward(li, (const struct px_tensor *const *)&x, true, &err), 0);
	expect_padding_zero(px_layer_inst_out(li, 0));
	px_layer_inst_free(li);
	px_arena_free(a);
}
END_TEST

START_TEST(test_embedding_grad_matches_finite_difference)
{
	struct px_arena *a = px_arena_new(1 << 16);
	int64_t s[2] = {3, 4};
	struct px_tensor *ids = px_tensor_new(a, 2, s);
	const float v[12] = {1, 4, 4, 0, 6, 2, 9, 9, 3, 1, 9, 9};  /* 9s are padding garbage */
	memcpy(ids->data, v, sizeof v);
	ids->lengths = (const int32_t[]){4, 2, 2};
	struct px_layer_inst *li = make("embedding", "vocab: 7, dim: 3", 1, &ids);
	expect_grad_ok("embedding ragged [3,4] ids", li, &ids, false);
	struct px_error err;
	ck_assert_int_eq(px_layer_inst_forward(li, (const struct px_tensor *const *)&ids, false, &err), 0);
	const struct px_tensor *y = px_layer_inst_out(li, 0);
	ck_assert_int_eq(y->ndim, 3);
	ck_assert_int_eq(y->shape[2], 3);
	ck_assert_ptr_eq(y->lengths, ids->lengths);
	expect_padding_zero(y);
	const struct px_tensor *w = px_layer_inst_param(li, 0)->value;
	for (int j = 0; j < 3; j++) {
		ck_assert_float_eq(y->data[1 * 3 + j], w->data[4 * 3 + j]);
		ck_assert_float_eq(y->data[5 * 3 + j], w->data[2 * 3 + j]);
	}
	px_layer_inst_free(li);
	px_arena_free(a);
}
END_TEST

START_TEST(test_embedding_grad_accumulates_repeated_ids_and_skips_padding_idx)
{
	struct px_arena *a = px_arena_new(1 << 16);
	int64_t s[1] = {5};
	struct px_tensor *ids = px_tensor_new(a, 1, s);
	const float v[5] = {1, 1, 3, 1, 0};
	memcpy(ids->data, v, sizeof v);
	struct px_layer_inst *li = make("embedding", "vocab: 4, dim: 2, padding_idx: 3", 1, &ids);
	struct px_error err;
	ck_assert_int_eq(px_layer_inst_forward(li, (const struct px_tensor *const *)&ids, true, &err), 0);
	const struct px_tensor *y = px_layer_inst_out(li, 0);
	ck_assert_int_eq(y->shape[1], 2);
	ck_assert_float_eq(y->data[2 * 2], 0.0f);  /* the padding_idx row starts at zero */
	ck_assert_float_eq(y->data[2 * 2 + 1], 0.0f);
	ck_assert_float_eq(y->data[0], px_layer_inst_param(li, 0)->value->data[2]);
	int64_t os[2] = {5, 2};
	struct px_tensor *dy = px_tensor_new(a, 2, os);
	px_init_fill(dy, 1.0f);
	dy->data[0] = 10.0f;  /* example 0, id 1 */
	ck_assert_int_eq(px_layer_inst_backward(li, (const struct px_tensor *const *)&dy, NULL, &err), 0);
	const float *g = px_layer_inst_param(li, 0)->grad->data;
	ck_assert_float_eq(g[0], 1.0f);     /* id 0 once */
	ck_assert_float_eq(g[2], 12.0f);    /* id 1 three times: 10 + 1 + 1 */
	ck_assert_float_eq(g[3], 3.0f);
	ck_assert_float_eq(g[4], 0.0f);     /* id 2 never */
	ck_assert_float_eq(g[6], 0.0f);     /* id 3 is padding_idx */
	ck_assert_float_eq(g[7], 0.0f);
	px_layer_inst_free(li);
	px_arena_free(a);
}
END_TEST

START_TEST(test_embedding_init_is_standard_normal_and_bad_ids_are_errors)
{
	struct px_arena *a = px_arena_new(1 << 16);
	int64_t s[1] = {2};
	struct px_tensor *ids = px_tensor_new(a, 1, s);
	struct px_layer_inst *li = make("embedding", "vocab: 100, dim: 50", 1, &ids);
	const struct px_tensor *w = px_layer_inst_param(li, 0)->value;
	double m = 0, ss = 0;
	for (int i = 0; i < 5000; i++) {
		m += w->data[i];
		ss += (double)w->data[i] * w->data[i];
	}
	m /= 5000;
	double sd = sqrt(ss / 5000 - m * m);
	ck_assert_msg(fabs(m) < 0.05 && fabs(sd - 1) < 0.05, "mean %g sd %g", m, sd);
	struct px_error err;
	ids->data[1] = 100;
	ck_assert_int_eq(px_layer_inst_forward(li, (const struct px_tensor *const *)&ids, false, &err),
			 PX_ERR_INVALID);
	ck_assert_str_eq(err.msg, "embedding: id 100 is out of range: vocab is 100 (ids 0..99)");
	ids->data[1] = -1;
	ck_assert_int_eq(px_layer_inst_forward(li, (const struct px_tensor *const *)&ids, false, &err),
			 PX_ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "id -1 "));
	px_layer_inst_free(li);
	px_arena_free(a);
}
END_TEST

START_TEST(test_flatten_and_reshape_grads_match_finite_difference)
{
	struct px_arena *a = px_arena_new(1 << 16);
	struct px_rng r;
	px_rng_seed(&r, 7);
	int64_t s[4] = {2, 3, 2, 2};
	struct px_tensor *x = rnd(a, &r, 4, s, -1, 1);
	struct px_layer_inst *li = make("flatten", "", 1, &x);
	struct px_error err;
	ck_assert_int_eq(px_layer_inst_forward(li, (const struct px_tensor *const *)&x, false, &err), 0);
	const struct px_tensor *y = px_layer_inst_out(li, 0);
	ck_assert_int_eq(y->ndim, 2);
	ck_assert_int_eq(y->shape[1], 12);
	ck_assert_float_eq(y->data[13], x->data[13]);
	expect_grad_ok("flatten [2,3,2,2]", li, &x, false);
	px_layer_inst_free(li);

	li = make("reshape", "shape: [-1, 6]", 1, &x);
	ck_assert_int_eq(px_layer_inst_forward(li, (const struct px_tensor *const *)&x, false, &err), 0);
	y = px_layer_inst_out(li, 0);
	ck_assert_int_eq(y->ndim, 3);
	ck_assert_int_eq(y->shape[0], 2);
	ck_assert_int_eq(y->shape[1], 2);
	ck_assert_int_eq(y->shape[2], 6);
	expect_grad_ok("reshape [2,3,2,2] -> [2,2,6]", li, &x, false);
	px_layer_inst_free(li);

	/* a ragged [B,T,F] reshaped per step keeps its lengths and its padding gets no grad */
	struct px_tensor *xs = ragged_input(a, &r, 4);
	li = make("reshape", "shape: [4, 2, 2]", 1, &xs);
	ck_assert_int_eq(px_layer_inst_forward(li, (const struct px_tensor *const *)&xs, false, &err), 0);
	ck_assert_ptr_eq(px_layer_inst_out(li, 0)->lengths, lens3);
	expect_grad_ok("reshape ragged [3,4,4] -> [3,4,2,2]", li, &xs, false);
	px_layer_inst_free(li);
	px_arena_free(a);
}
END_TEST

START_TEST(test_reshape_with_wrong_element_count_names_both_shapes)
{
	struct px_shape in = {3, {-1, 6, 4}};
	struct px_layer_inst *li;
	struct px_error err;
	ck_assert_int_eq(px_layer_inst_new(layer("reshape"), "shape: [5, 5]", 1, &in, NULL, 1, NULL,
					   &li, &err), PX_ERR_SHAPE);
	ck_assert_ptr_nonnull(strstr(err.msg, "[B,6,4]"));
	ck_assert_ptr_nonnull(strstr(err.msg, "[B,5,5]"));
	ck_assert_int_eq(px_layer_inst_new(layer("reshape"), "shape: [-1, 5]", 1, &in, NULL, 1,
					   NULL, &li, &err), PX_ERR_SHAPE);
	ck_assert_int_eq(px_layer_inst_new(layer("reshape"), "shape: [-1, -1]", 1, &in, NULL, 1,
					   NULL, &li, &err), PX_ERR_INVALID);
}
END_TEST

START_TEST(test_concat_of_three_inputs_grad_matches_finite_difference)
{
	struct px_arena *a = px_arena_new(1 << 16);
	struct px_rng r;
	px_rng_seed(&r, 8);
	struct px_tensor *in[3];
	for (int i = 0; i < 3; i++) {
		int64_t s[3] = {2, 3, 1 + 2 * i};
		in[i] = rnd(a, &r, 3, s, -1, 1);
	}
	struct px_layer_inst *li = make("concat", "", 3, in);
	struct px_error err;
	ck_assert_int_eq(px_layer_inst_forward(li, (const struct px_tensor *const *)in, false, &err), 0);
	const struct px_tensor *y = px_layer_inst_out(li, 0);
	ck_assert_int_eq(y->shape[2], 9);
	/* row 4 (b 1, t 1): [in0 | in1 | in2] */
	ck_assert_float_eq(y->data[4 * 9 + 0], in[0]->data[4]);
	ck_assert_float_eq(y->data[4 * 9 + 3], in[1]->data[4 * 3 + 2]);
	ck_assert_float_eq(y->data[4 * 9 + 8], in[2]->data[4 * 5 + 4]);
	expect_grad_ok("concat 3 x [2,3,*]", li, in, false);
	px_layer_inst_free(li);

	struct px_tensor *rs[2] = {ragged_input(a, &r, 2), ragged_input(a, &r, 3)};
	li = make("concat", "", 2, rs);
	ck_assert_int_eq(px_layer_inst_forward(li, (const struct px_tensor *const *)rs, false, &err), 0);
	ck_assert_ptr_eq(px_layer_inst_out(li, 0)->lengths, lens3);
	expect_padding_zero(px_layer_inst_out(li, 0));
	expect_grad_ok("concat ragged 2 x [3,4,*]", li, rs, false);
	px_layer_inst_free(li);
	px_arena_free(a);
}
END_TEST

START_TEST(test_add_of_three_inputs_grad_matches_finite_difference)
{
	struct px_arena *a = px_arena_new(1 << 16);
	struct px_rng r;
	px_rng_seed(&r, 9);
	struct px_tensor *in[3];
	int64_t s[2] = {3, 4};
	for (int i = 0; i < 3; i++)
		in[i] = rnd(a, &r, 2, s, -1, 1);
	struct px_layer_inst *li = make("add", "", 3, in);
	struct px_error err;
	ck_assert_int_eq(px_layer_inst_forward(li, (const struct px_tensor *const *)in, false, &err), 0);
	const struct px_tensor *y = px_layer_inst_out(li, 0);
	ck_assert_float_eq_tol(y->data[5], in[0]->data[5] + in[1]->data[5] + in[2]->data[5], 1e-6f);
	expect_grad_ok("add 3 x [3,4]", li, in, false);
	px_layer_inst_free(li);

	struct px_tensor *rs[2] = {ragged_input(a, &r, 2), ragged_input(a, &r, 2)};
	li = make("add", "", 2, rs);
	expect_grad_ok("add ragged 2 x [3,4,2]", li, rs, false);
	px_layer_inst_free(li);
	px_arena_free(a);
}
END_TEST

START_TEST(test_concat_and_add_shape_mismatch_errors_name_the_shapes)
{
	struct px_shape in[2] = {{3, {-1, 4, 3}}, {3, {-1, 5, 2}}};
	struct px_layer_inst *li;
	struct px_error err;
	ck_assert_int_eq(px_layer_inst_new(layer("concat"), "", 2, in, NULL, 1, NULL, &li, &err),
			 PX_ERR_SHAPE);
	ck_assert_ptr_nonnull(strstr(err.msg, "[B,4,3]"));
	ck_assert_ptr_nonnull(strstr(err.msg, "[B,5,2]"));
	in[1].dim[1] = 4;
	ck_assert_int_eq(px_layer_inst_new(layer("concat"), "", 2, in, NULL, 1, NULL, &li, &err), 0);
	px_layer_inst_free(li);
	ck_assert_int_eq(px_layer_inst_new(layer("add"), "", 2, in, NULL, 1, NULL, &li, &err),
			 PX_ERR_SHAPE);
	ck_assert_ptr_nonnull(strstr(err.msg, "[B,4,3]"));
	ck_assert_ptr_nonnull(strstr(err.msg, "[B,4,2]"));
}
END_TEST

int main(void)
{
	Suite *s = suite_create("layers");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_all_builtin_layers_are_exported_with_complete_tables);
	tcase_add_test(tc, test_linear_forward_is_xwt_plus_b_with_pytorch_init_bounds);
	tcase_add_test(tc, test_linear_grad_matches_finite_difference);
	tcase_add_test(tc, test_linear_on_ragged_sequence_zeroes_padding_and_grad_matches_finite_difference);
	tcase_add_test(tc, test_activation_grads_match_finite_difference);
	tcase_add_test(tc, test_softmax_rows_sum_to_one_and_ragged_rows_mask_padding);
	tcase_add_test(tc, test_dropout_is_identity_in_eval_and_zeroes_about_p_scaled_in_train);
	tcase_add_test(tc, test_dropout_grad_uses_the_forward_mask);
	tcase_add_test(tc, test_embedding_grad_matches_finite_difference);
	tcase_add_test(tc, test_embedding_grad_accumulates_repeated_ids_and_skips_padding_idx);
	tcase_add_test(tc, test_embedding_init_is_standard_normal_and_bad_ids_are_errors);
	tcase_add_test(tc, test_flatten_and_reshape_grads_match_finite_difference);
	tcase_add_test(tc, test_reshape_with_wrong_element_count_names_both_shapes);
	tcase_add_test(tc, test_concat_of_three_inputs_grad_matches_finite_difference);
	tcase_add_test(tc, test_add_of_three_inputs_grad_matches_finite_difference);
	tcase_add_test(tc, test_concat_and_add_shape_mismatch_errors_name_the_shapes);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
