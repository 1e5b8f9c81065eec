/* The conv plugin: conv2d, conv_transpose2d, maxpool2d, avgpool2d, maxunpool2d, upsample2d,
 * batchnorm2d and the `shapes` source, loaded from the build tree and driven through the
 * harness. Golden values come from PyTorch (tests/gen_conv.py). */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <plexus/harness.h>

#include "golden_layer.h"
#include "plugin_util.h"

static const struct px_layer_ops *layer(const char *kind)
{
	return tp_layer("conv", kind);
}

/* ------------------------------------------------------------------ PyTorch golden values */
struct golden_case {
	const char *fixture;  /* tests/fixtures/conv/<fixture>.txt; options as in gen_conv.py */
	const char *kind;
	const char *options;
	bool train;
};

static const struct golden_case golden[] = {
	{"conv2d_basic", "conv2d", "out_channels: 4, kernel: 3", true},
	{"conv2d_stride2_pad1", "conv2d", "out_channels: 5, kernel: 3, stride: 2, padding: 1", true},
	{"conv2d_dilation2_pad2", "conv2d", "out_channels: 3, kernel: 3, padding: 2, dilation: 2", true},
	{"conv2d_groups2", "conv2d", "out_channels: 6, kernel: 3, padding: 1, groups: 2", true},
	{"conv2d_depthwise_rect_nobias", "conv2d",
	 "out_channels: 3, kernel: [2, 3], stride: [2, 1], padding: [1, 0], groups: 3, bias: false",
	 true},
	{"conv2d_1x1_stride3", "conv2d", "out_channels: 2, kernel: 1, stride: 3", true},
	{"convt_basic", "conv_transpose2d", "out_channels: 2, kernel: 3", true},
	{"convt_s2_p1_op1", "conv_transpose2d",
	 "out_channels: 3, kernel: 3, stride: 2, padding: 1, output_padding: 1", true},
	{"convt_k2_s2", "conv_transpose2d", "out_channels: 2, kernel: 2, stride: 2", true},
	{"convt_k4_s3_p1_op2", "conv_transpose2d",
	 "out_channels: 3, kernel: 4, stride: 3, padding: 1, output_padding: 2", true},
	{"convt_d2_p1_op1", "conv_transpose2d",
	 "out_channels: 2, kernel: 3, padding: 1, output_padding: 1, dilation: 2", true},
	{"convt_groups2_s2", "conv_transpose2d",
	 "out_channels: 6, kernel: 3, stride: 2, padding: 1, output_padding: 1, groups: 2", true},
	{"convt_rect_nobias", "conv_transpose2d",
	 "out_channels: 2, kernel: [3, 2], stride: [2, 1], padding: [1, 0], output_padding: [1, 0], "
	 "bias: false", true},
	{"maxpool_k2_odd", "maxpool2d", "kernel: 2", true},
	{"maxpool_k3_s2_p1", "maxpool2d", "kernel: 3, stride: 2, padding: 1", true},
	{"maxpool_rect", "maxpool2d", "kernel: [2, 3], stride: [1, 2], padding: [1, 1]", true},
	{"avgpool_k3_s2_p1_incl", "avgpool2d", "kernel: 3, stride: 2, padding: 1", true},
	{"avgpool_k3_s2_p1_excl", "avgpool2d",
	 "kernel: 3, stride: 2, padding: 1, count_include_pad: false", true},
	{"avgpool_k2", "avgpool2d", "kernel: 2", true},
	{"maxunpool_k2_odd", "maxunpool2d", "output_size: [7, 7]", true},
	{"maxunpool_k3_s2_p1", "maxunpool2d", "output_size: [8, 9]", true},
	{"upsample_nearest_2", "upsample2d", "scale: 2", true},
	{"upsample_nearest_3", "upsample2d", "scale: 3, mode: nearest", true},
	{"upsample_bilinear_2", "upsample2d", "scale: 2, mode: bilinear", true},
	{"upsample_bilinear_3", "upsample2d", "scale: 3, mode: bilinear", true},
	{"batchnorm_train", "batchnorm2d", "", true},
	{"batchnorm_eval", "batchnorm2d", "", false},
};

START_TEST(test_conv_layers_match_pytorch_forward_and_all_gradients)
{
	const struct golden_case *gc = &golden[_i];
	char rel[160];
	snprintf(rel, sizeof rel, "conv/%s.txt", gc->fixture);
	double e = golden_layer_check(layer(gc->kind), rel, gc->options, gc->train);
	ck_assert_msg(e <= 1e-4, "%s: max abs error %g vs PyTorch", gc->fixture, e);
}
END_TEST

/* ------------------------------------------------------------------ helpers */
struct inst {
	struct px_layer_inst *li;
	struct px_tensor *in[2];
};

/* A layer on inputs of the given shapes (real batch in dim 0), filled from `seed` with
 * U(-1, 1) — or, when `distinct`, with distinct values 0.05 apart (shuffled), so that no max
 * pooling window has a tie and no finite-difference step of 1e-2 reorders two values. */
static struct inst make(const char *kind, const char *options, int n_in,
			const struct px_shape *shapes, uint64_t seed, bool distinct)
{
	struct inst t = {0};
	struct px_error err = {0};
	int rc = px_layer_inst_new(layer(kind), options, n_in, shapes, NULL, seed, NULL, &t.li, &err);
	ck_assert_msg(rc == 0, "%s {%s}: %s", kind, options, err.msg);
	struct px_rng r;
	px_rng_seed(&r, seed * 7 + 1);
	for (int i = 0; i < n_in; i++) {
		t.in[i] = px_layer_inst_tensor(t.li, shapes[i].ndim, shapes[i].dim);
		int64_t n = px_tensor_numel(t.in[i]);
		if (!distinct) {
			px_rng_fill_uniform(&r, t.in[i]->data, n, -1, 1);
			continue;
		}
		for (int64_t j = 0; j < n; j++)
			t.in[i]->data[j] = 0.05f * (float)(j - n / 2);
		for (int64_t j = n - 1; j > 0; j--) {  /* Fisher-Yates */
			int64_t k = (int64_t)px_rng_below(&r, (uint64_t)j + 1);
			float v = t.in[i]->data[j];
			t.in[i]->data[j] = t.in[i]->data[k];
			t.in[i]->data[k] = v;
		}
	}
	return t;
}

static struct px_shape shape4(int64_t b, int64_t c, int64_t h, int64_t w)
{
	return (struct px_shape){.ndim = 4, .dim = {b, c, h, w}};
}

static void gradcheck(struct inst *t, bool train, const char *what)
{
	struct px_gradcheck_opts o;
	struct px_gradcheck_result res;
	struct px_error err = {0};
	px_gradcheck_defaults(&o);
	o.train = train;
	int rc = px_gradcheck_layer(t->li, (const struct px_tensor *const *)t->in, &o, &res, &err);
	ck_assert_msg(rc == 0, "%s: %s", what, err.msg);
	printf("%-48s gradcheck %lld elements, max abs err %.2e\n", what, (long long)res.checked,
	       res.max_abs_err);
	ck_assert_msg(res.checked > 0, "%s: nothing checked", what);
	ck_assert_msg(res.failed == 0, "%s: %lld of %lld elements differ, worst %s", what,
		      (long long)res.failed, (long long)res.checked, res.worst);
}

/* ------------------------------------------------------------------ finite differences */
struct fd_case {
	const char *kind, *options;
	struct px_shape in;
	bool distinct, train;
};

static const struct fd_case fd[] = {
	{"conv2d", "out_channels: 3, kernel: 3, stride: 2, padding: 1", {4, {2, 2, 5, 6}}, false, true},
	{"conv2d", "out_channels: 4, kernel: [3, 2], dilation: 2, padding: [2, 1], groups: 2",
	 {4, {2, 4, 6, 5}}, false, true},
	{"conv_transpose2d", "out_channels: 2, kernel: 3, stride: 2, padding: 1, output_padding: 1",
	 {4, {2, 3, 3, 4}}, false, true},
	{"conv_transpose2d", "out_channels: 4, kernel: 2, dilation: 2, output_padding: 1, groups: 2",
	 {4, {2, 2, 3, 3}}, false, true},
	{"maxpool2d", "kernel: 3, stride: 2, padding: 1", {4, {2, 2, 6, 5}}, true, true},
	{"maxpool2d", "kernel: 2", {4, {2, 2, 5, 5}}, true, true},
	{"avgpool2d", "kernel: 3, stride: 2, padding: 1, count_include_pad: false",
	 {4, {2, 2, 5, 6}}, false, true},
	{"upsample2d", "scale: 2, mode: nearest", {4, {2, 2, 3, 4}}, false, true},
	{"upsample2d", "scale: 3, mode: bilinear", {4, {2, 2, 3, 4}}, false, true},
	{"batchnorm2d", "", {4, {3, 2, 3, 4}}, false, true},
	{"batchnorm2d", "", {4, {3, 2, 3, 4}}, false, false},
	{"batchnorm2d", "affine: false", {4, {3, 2, 3, 4}}, false, true},
};

START_TEST(test_conv_layer_grads_match_finite_differences)
{
	const struct fd_case *c = &fd[_i];
	struct inst t = make(c->kind, c->options, 1, &c->in, 11 + (uint64_t)_i, c->distinct);
	char what[160];
	snprintf(what, sizeof what, "%s {%s}%s", c->kind, c->options, c->train ? "" : " eval");
	gradcheck(&t, c->train, what);
	px_layer_inst_free(t.li);
}
END_TEST

/* maxunpool2d: the gradient with respect to the values (indices carry none), at indices made
 * by a real max pooling of distinct values. Non-overlapping windows: overlapping ones can
 * name one position twice, and then only the value written last reaches the output (PyTorch
 * does the same, and its backward, like this one, still hands each value dy at its index). */
START_TEST(test_maxunpool_grad_matches_finite_difference)
{
	struct px_shape xs = shape4(2, 3, 8, 7);
	struct inst pool = make("maxpool2d", "kernel: 2", 1, &xs, 5, true);
	struct px_error err = {0};
	ck_assert_int_eq(px_layer_inst_forward(pool.li, (const struct px_tensor *const *)pool.in,
					       false, &err), 0);
	const struct px_tensor *ix = px_layer_inst_out(pool.li, 1);
	struct px_shape ps[2] = {shape4(2, 3, 4, 3), shape4(2, 3, 4, 3)};
	struct inst up = make("maxunpool2d", "output_size: [8, 7]", 2, ps, 6, false);
	memcpy(up.in[1]->data, ix->data, (size_t)px_tensor_numel(ix) * sizeof(float));
	gradcheck(&up, true, "maxunpool2d {output_size: [8, 7]}");
	px_layer_inst_free(up.li);
	px_layer_inst_free(pool.li);
}
END_TEST

/* ------------------------------------------------------------------ unpooling */
/* maxpool2d's create, called directly (it declares no parameters, so the build needs no
 * builder state): the shapes of its output ports. */
static void maxpool_port_shapes(const char *options, struct px_shape in, struct px_shape out[2])
{
	const struct px_layer_ops *ops = layer("maxpool2d");
	struct px_config *cfg;
	struct px_error err = {0};
	ck_assert_int_eq(px_config_parse(ops->schema, options, &cfg, &err), 0);
	struct px_rng r;
	px_rng_seed(&r, 1);
	in.dim[0] = -1;
	bool ragged = false;
	struct px_build b = {.struct_size = sizeof b, .node = "pool1", .cfg = cfg, .n_in = 1,
			     .in = &in, .in_ragged = &ragged, .rng = &r};
	void *self = NULL;
	memset(out, 0, 2 * sizeof *out);
	ck_assert_msg(ops->create(&b, &self, out, &err) == 0, "%s", err.msg);
	ops->destroy(self);
	px_config_free(cfg);
}

START_TEST(test_maxunpool_restores_the_recorded_prepool_size_without_options)
{
	/* 7x7 -> 3x3 by a 2x2 pool: PyTorch's default unpool size would be 6x6 */
	struct px_shape ports[2];
	maxpool_port_shapes("kernel: 2", shape4(2, 3, 7, 7), ports);
	ck_assert_int_eq(ports[1].ndim, 4);
	ck_assert_int_eq(ports[1].dim[2], 3);
	struct px_layer_inst *li;
	struct px_error err = {0};
	ck_assert_msg(px_layer_inst_new(layer("maxunpool2d"), "", 2, ports, NULL, 1, NULL, &li,
					&err) == 0, "%s", err.msg);
	struct px_tensor *x = px_layer_inst_tensor(li, 4, (int64_t[]){2, 3, 3, 3});
	struct px_tensor *ix = px_layer_inst_tensor(li, 4, (int64_t[]){2, 3, 3, 3});
	for (int64_t i = 0; i < 54; i++)
		ix->data[i] = 48;  /* the last pixel of the 7x7 plane: valid only if 7x7 */
	const struct px_tensor *in[2] = {x, ix};
	ck_assert_msg(px_layer_inst_forward(li, in, true, &err) == 0, "%s", err.msg);
	const struct px_tensor *y = px_layer_inst_out(li, 0);
	ck_assert_int_eq(y->shape[2], 7);
	ck_assert_int_eq(y->shape[3], 7);
	px_layer_inst_free(li);
}
END_TEST

/* unpool(pool(x)) keeps exactly the window maxima, at their positions, and zeros elsewhere;
 * pooling that again gives pool(x). x > 0 (distinct), so the zeros never win a window. */
START_TEST(test_unpool_of_pool_keeps_exactly_the_maxima_and_pools_back_the_same)
{
	static const char *const opts[] = {"kernel: 2", "kernel: 3, stride: 2, padding: 1"};
	for (int v = 0; v < 2; v++) {
		struct px_shape xs = shape4(2, 3, 7, 8), ports[2];
		struct inst pool = make("maxpool2d", opts[v], 1, &xs, 21, true);
		int64_t n = px_tensor_numel(pool.in[0]);
		for (int64_t i = 0; i < n; i++)
			pool.in[0]->data[i] += 0.05f * (float)n;  /* all positive */
		maxpool_port_shapes(opts[v], xs, ports);
		struct px_layer_inst *un;
		struct px_error err = {0};
		ck_assert_int_eq(px_layer_inst_new(layer("maxunpool2d"), "", 2, ports, NULL, 1, NULL,
						   &un, &err), 0);
		ck_assert_int_eq(px_layer_inst_forward(pool.li, (const struct px_tensor *const *)pool.in,
						       true, &err), 0);
		const struct px_tensor *pv = px_layer_inst_out(pool.li, 0);
		const struct px_tensor *pi = px_layer_inst_out(pool.li, 1);
		const struct px_tensor *uin[2] = {pv, pi};
		ck_assert_msg(px_layer_inst_forward(un, uin, true, &err) == 0, "%s", err.msg);
		const struct px_tensor *u = px_layer_inst_out(un, 0);
		ck_assert_int_eq(px_tensor_numel(u), n);
		const float *x = pool.in[0]->data;
		int64_t P = pv->shape[2] * pv->shape[3], HW = 7 * 8, kept = 0, wrong = 0;
		for (int64_t q = 0; q < 6; q++) {
			char is_max[56] = {0};
			for (int64_t i = 0; i < P; i++) {
				int64_t at = (int64_t)pi->data[q * P + i];
				wrong += x[q * HW + at] != pv->data[q * P + i];
				is_max[at] = 1;
			}
			for (int64_t j = 0; j < HW; j++) {
				float want = is_max[j] ? x[q * HW + j] : 0.0f;
				wrong += u->data[q * HW + j] != want;
				kept += is_max[j];
			}
		}
		ck_assert_int_eq(wrong, 0);
		ck_assert_int_gt(kept, 0);
		/* pool the unpooled planes: the same values and positions */
		struct px_layer_inst *pool2;
		ck_assert_int_eq(px_layer_inst_new(layer("maxpool2d"), opts[v], 1, &xs, NULL, 1, NULL,
						   &pool2, &err), 0);
		const struct px_tensor *pin[1] = {u};
		ck_assert_int_eq(px_layer_inst_forward(pool2, pin, true, &err), 0);
		const struct px_tensor *pv2 = px_layer_inst_out(pool2, 0);
		const struct px_tensor *pi2 = px_layer_inst_out(pool2, 1);
		for (int64_t i = 0; i < px_tensor_numel(pv); i++)
			wrong += pv2->data[i] != pv->data[i] || pi2->data[i] != pi->data[i];
		ck_assert_int_eq(wrong, 0);
		px_layer_inst_free(pool2);
		px_layer_inst_free(un);
		px_layer_inst_free(pool.li);
	}
}
END_TEST

START_TEST(test_maxpool_ties_go_to_the_first_max_in_row_major_order)
{
	struct px_shape xs = shape4(1, 1, 2, 2);
	struct px_layer_inst *li;
	struct px_error err = {0};
	ck_assert_int_eq(px_layer_inst_new(layer("maxpool2d"), "kernel: 2", 1, &xs, NULL, 1, NULL,
					   &li, &err), 0);
	struct px_tensor *x = px_layer_inst_tensor(li, 4, xs.dim);
	x->data[0] = 1, x->data[1] = 3, x->data[2] = 3, x->data[3] = 2;
	const struct px_tensor *in[1] = {x};
	ck_assert_int_eq(px_layer_inst_forward(li, in, true, &err), 0);
	ck_assert_float_eq(px_layer_inst_out(li, 0)->data[0], 3);
	ck_assert_float_eq(px_layer_inst_out(li, 1)->data[0], 1);
	px_layer_inst_free(li);
}
END_TEST

/* The worked example of docs/conv.md (numbers from PyTorch's F.conv_transpose2d). */
START_TEST(test_conv_transpose2d_reproduces_the_worked_example_in_the_docs)
{
	static const float w[9] = {1, 2, 0, 0, 1, 0, -1, 0, 1};
	static const float want_p1[16] = {1, 0, 2, 0, 6, 3, 8, 2, 3, 0, 4, 0, 0, -1, 0, 4};
	static const float want_p0[25] = {1, 2, 2, 4, 0, 0, 1, 0, 2, 0, 2, 6, 3, 8, 2,
					  0, 3, 0, 4, 0, -3, 0, -1, 0, 4};
	static const char *const opts[2] = {
		"out_channels: 1, kernel: 3, stride: 2, padding: 1, output_padding: 1, bias: false",
		"out_channels: 1, kernel: 3, stride: 2, bias: false"};
	struct px_shape xs = shape4(1, 1, 2, 2);
	for (int v = 0; v < 2; v++) {
		struct px_layer_inst *li;
		struct px_error err = {0};
		ck_assert_int_eq(px_layer_inst_new(layer("conv_transpose2d"), opts[v], 1, &xs, NULL, 1,
						   NULL, &li, &err), 0);
		memcpy(px_layer_inst_param(li, 0)->value->data, w, sizeof w);
		struct px_tensor *x = px_layer_inst_tensor(li, 4, xs.dim);
		for (int i = 0; i < 4; i++)
			x->data[i] = (float)(i + 1);
		const struct px_tensor *in[1] = {x};
		ck_assert_int_eq(px_layer_inst_forward(li, in, true, &err), 0);
		const struct px_tensor *y = px_layer_inst_out(li, 0);
		int64_t n = v ? 25 : 16;
		ck_assert_int_eq(px_tensor_numel(y), n);
		ck_assert(!memcmp(y->data, v ? want_p0 : want_p1, (size_t)n * sizeof(float)));
		px_layer_inst_free(li);
	}
}
END_TEST

/* ------------------------------------------------------------------ errors */
/* create must fail with `code` and a message containing every one of the `want` strings. */
static void expect_create_error(const char *kind, const char *options, int n_in,
				const struct px_shape *in, int code, const char *const *want)
{
	struct px_layer_inst *li = NULL;
	struct px_error err = {0};
	int rc = px_layer_inst_new(layer(kind), options, n_in, in, NULL, 1, NULL, &li, &err);
	ck_assert_msg(rc == code, "%s {%s}: expected %s, got %s (%s)", kind, options,
		      px_status_name(code), px_status_name(rc), err.msg);
	ck_assert_ptr_null(li);
	for (; *want; want++)
		ck_assert_msg(strstr(err.msg, *want), "message \"%s\" lacks \"%s\"", err.msg, *want);
}

START_TEST(test_conv2d_on_a_rank3_input_names_both_shapes)
{
	struct px_shape in = {3, {-1, 3, 32}};
	expect_create_error("conv2d", "out_channels: 8, kernel: 3", 1, &in, PX_ERR_SHAPE,
			    (const char *[]){"conv2d", "[B,C,H,W]", "[B,3,32]", NULL});
}
END_TEST

START_TEST(test_conv2d_groups_must_divide_the_channels)
{
	struct px_shape in = shape4(-1, 6, 8, 8);
	expect_create_error("conv2d", "out_channels: 8, kernel: 3, groups: 4", 1, &in,
			    PX_ERR_INVALID,
			    (const char *[]){"groups 4", "input channels 6", "[B,6,8,8]",
					     "out_channels 8", NULL});
	expect_create_error("conv_transpose2d", "out_channels: 3, kernel: 3, groups: 2", 1, &in,
			    PX_ERR_INVALID, (const char *[]){"groups 2", "out_channels 3", NULL});
}
END_TEST

START_TEST(test_conv2d_kernel_larger_than_the_input_is_refused)
{
	struct px_shape in = shape4(-1, 1, 2, 5);
	expect_create_error("conv2d", "out_channels: 2, kernel: 3", 1, &in, PX_ERR_SHAPE,
			    (const char *[]){"[B,1,2,5]", "3x3", NULL});
	expect_create_error("conv2d", "out_channels: 2, kernel: [1, 2, 3]", 1, &in, PX_ERR_INVALID,
			    (const char *[]){"'kernel' must be one integer or [h, w]", NULL});
}
END_TEST

START_TEST(test_conv_transpose2d_output_padding_must_be_below_stride_or_dilation)
{
	struct px_shape in = shape4(-1, 2, 4, 4);
	expect_create_error("conv_transpose2d",
			    "out_channels: 2, kernel: 3, stride: 2, output_padding: 2", 1, &in,
			    PX_ERR_INVALID,
			    (const char *[]){"output_padding 2", "stride 2", "dilation 1", NULL});
	/* allowed: smaller than the dilation though not the stride (as in PyTorch) */
	struct px_layer_inst *li;
	struct px_error err = {0};
	ck_assert_msg(px_layer_inst_new(layer("conv_transpose2d"),
					"out_channels: 2, kernel: 3, dilation: 2, output_padding: 1",
					1, &in, NULL, 1, NULL, &li, &err) == 0, "%s", err.msg);
	px_layer_inst_free(li);
}
END_TEST

START_TEST(test_maxunpool_needs_a_pool_size_and_matching_indices)
{
	struct px_shape plain[2] = {shape4(-1, 3, 4, 4), shape4(-1, 3, 4, 4)};
	expect_create_error("maxunpool2d", "", 2, plain, PX_ERR_SHAPE,
			    (const char *[]){"no pre-pool size", "output_size", NULL});
	struct px_shape odd[2] = {shape4(-1, 3, 4, 4), shape4(-1, 3, 4, 5)};
	expect_create_error("maxunpool2d", "output_size: 8", 2, odd, PX_ERR_SHAPE,
			    (const char *[]){"[B,3,4,4]", "[B,3,4,5]", NULL});
	struct px_shape one[1] = {shape4(-1, 3, 4, 4)};
	expect_create_error("maxunpool2d", "output_size: 8", 1, one, PX_ERR_SHAPE,
			    (const char *[]){"indices", NULL});
}
END_TEST

START_TEST(test_maxunpool_refuses_an_index_outside_the_plane)
{
	struct px_shape s[2] = {shape4(1, 1, 2, 2), shape4(1, 1, 2, 2)};
	struct inst t = make("maxunpool2d", "output_size: 4", 2, s, 3, false);
	memset(t.in[1]->data, 0, 4 * sizeof(float));
	t.in[1]->data[2] = 16;
	struct px_error err = {0};
	ck_assert_int_eq(px_layer_inst_forward(t.li, (const struct px_tensor *const *)t.in, true, &err),
			 PX_ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "index 16") && strstr(err.msg, "4x4"), "%s", err.msg);
	px_layer_inst_free(t.li);
}
END_TEST

START_TEST(test_pool_padding_over_half_the_kernel_is_refused)
{
	struct px_shape in = shape4(-1, 1, 8, 8);
	expect_create_error("maxpool2d", "kernel: 2, padding: 2", 1, &in, PX_ERR_INVALID,
			    (const char *[]){"padding [2,2]", "half the kernel [2,2]", NULL});
}
END_TEST

/* ------------------------------------------------------------------ batchnorm2d */
START_TEST(test_batchnorm_running_stats_follow_pytorch_and_count_batches)
{
	/* the golden fixture covers one step; here several steps and the eval switch */
	struct px_shape s = shape4(4, 2, 3, 3);
	struct inst t = make("batchnorm2d", "momentum: 0.5", 1, &s, 9, false);
	struct px_error err = {0};
	struct px_param *rm = NULL, *rv = NULL, *nb = NULL;
	for (int p = 0; p < px_layer_inst_n_params(t.li); p++) {
		struct px_param *prm = px_layer_inst_param(t.li, p);
		if (!strcmp(prm->name, "running_mean"))
			rm = prm;
		else if (!strcmp(prm->name, "running_var"))
			rv = prm;
		else if (!strcmp(prm->name, "num_batches_tracked"))
			nb = prm;
	}
	ck_assert(rm && rv && nb && !rm->trainable && !rv->trainable && !nb->trainable);
	ck_assert_int_eq(nb->value->ndim, 0);
	/* channel 0: mean and unbiased variance by hand */
	double s1 = 0, s2 = 0;
	for (int64_t b = 0; b < 4; b++)
		for (int64_t p = 0; p < 9; p++)
			s1 += t.in[0]->data[b * 18 + p];
	double mean = s1 / 36;
	for (int64_t b = 0; b < 4; b++)
		for (int64_t p = 0; p < 9; p++)
			s2 += pow(t.in[0]->data[b * 18 + p] - mean, 2);
	double var_unbiased = s2 / 35;
	for (int step = 1; step <= 3; step++)
		ck_assert_int_eq(px_layer_inst_forward(t.li, (const struct px_tensor *const *)t.in, true,
						       &err), 0);
	/* r_n = (1 - m) r_{n-1} + m v, from r_0 = 0 (mean) and 1 (var), m = 1/2 */
	ck_assert_double_eq_tol(rm->value->data[0], mean * (1 - 0.125), 1e-5);
	ck_assert_double_eq_tol(rv->value->data[0], 0.125 + var_unbiased * (1 - 0.125), 1e-5);
	ck_assert_float_eq(nb->value->data[0], 3);
	/* eval uses the running statistics and leaves them alone */
	ck_assert_int_eq(px_layer_inst_forward(t.li, (const struct px_tensor *const *)t.in, false,
					       &err), 0);
	float x0 = t.in[0]->data[0], y0 = px_layer_inst_out(t.li, 0)->data[0];
	ck_assert_double_eq_tol(y0, (x0 - rm->value->data[0]) / sqrt(rv->value->data[0] + 1e-5), 1e-5);
	ck_assert_float_eq(nb->value->data[0], 3);
	px_layer_inst_free(t.li);
}
END_TEST

/* ------------------------------------------------------------------ initialisation */
START_TEST(test_conv_weights_are_initialised_like_pytorch)
{
	/* U(-1/sqrt(fan_in), 1/sqrt(fan_in)); fan_in = in/groups*k*k (conv2d) and
	 * out/groups*k*k (conv_transpose2d, whose weight is [in, out/groups, k, k]) */
	struct px_shape in = shape4(-1, 8, 6, 6);
	static const struct {
		const char *kind, *options;
		int64_t w[4];
		double fan_in;
	} c[] = {
		{"conv2d", "out_channels: 16, kernel: 3, groups: 2", {16, 4, 3, 3}, 36},
		{"conv_transpose2d", "out_channels: 4, kernel: 3", {8, 4, 3, 3}, 36},
		{"conv_transpose2d", "out_channels: 32, kernel: 2, groups: 4", {8, 8, 2, 2}, 32},
	};
	for (size_t k = 0; k < sizeof c / sizeof c[0]; k++) {
		struct px_layer_inst *li;
		struct px_error err = {0};
		ck_assert_int_eq(px_layer_inst_new(layer(c[k].kind), c[k].options, 1, &in, NULL, 3,
						   NULL, &li, &err), 0);
		struct px_param *w = px_layer_inst_param(li, 0), *b = px_layer_inst_param(li, 1);
		ck_assert_str_eq(w->name, "weight");
		ck_assert_str_eq(b->name, "bias");
		for (int d = 0; d < 4; d++)
			ck_assert_int_eq(w->value->shape[d], c[k].w[d]);
		double bound = 1 / sqrt(c[k].fan_in), mx = 0;
		for (int64_t i = 0; i < px_tensor_numel(w->value); i++)
			mx = fmax(mx, fabs(w->value->data[i]));
		ck_assert_msg(mx <= bound && mx > 0.9 * bound, "%s: max |w| %g, bound %g", c[k].kind,
			      mx, bound);
		px_layer_inst_free(li);
	}
}
END_TEST

/* ------------------------------------------------------------------ the shapes source */
static void shapes_load(const char *options, const char *split, uint64_t seed,
			struct px_dataset *ds)
{
	const struct px_source_ops *src = tp_source("conv", "shapes");
	struct px_config *cfg;
	struct px_error err = {0};
	ck_assert_int_eq(px_config_parse(src->schema, options, &cfg, &err), 0);
	memset(ds, 0, sizeof *ds);
	ck_assert_msg(src->load(cfg, split, seed, ds, &err) == 0, "%s", err.msg);
	px_config_free(cfg);
}

START_TEST(test_shapes_source_is_deterministic_from_its_seed_and_split)
{
	struct px_dataset a, b, c, d;
	shapes_load("n: 50, size: 24", "train", 7, &a);
	shapes_load("n: 50, size: 24", "train", 7, &b);
	shapes_load("n: 50, size: 24", "test", 7, &c);
	shapes_load("n: 50, size: 24", "train", 8, &d);
	ck_assert_int_eq(a.x.ndim, 4);
	ck_assert_int_eq(a.x.dim[0], 50);
	ck_assert_int_eq(a.x.dim[1], 1);
	ck_assert_int_eq(a.x.dim[2], 24);
	ck_assert_int_eq(a.y.ndim, 3);
	ck_assert_int_eq(a.y.dim[2], 24);
	ck_assert_int_eq(a.n_classes, 4);
	size_t bytes = 50 * 24 * 24 * sizeof(float);
	ck_assert(!memcmp(a.x_data, b.x_data, bytes) && !memcmp(a.y_data, b.y_data, bytes));
	ck_assert(memcmp(a.x_data, c.x_data, bytes) && memcmp(a.y_data, c.y_data, bytes));
	ck_assert(memcmp(a.x_data, d.x_data, bytes) && memcmp(a.y_data, d.y_data, bytes));
	px_dataset_free(&a);
	px_dataset_free(&b);
	px_dataset_free(&c);
	px_dataset_free(&d);
}
END_TEST

START_TEST(test_shapes_labels_match_the_pixels)
{
	/* without noise a pixel is 0 exactly where it is labelled background, and one shape's
	 * brightness (>= 0.5) where it is not */
	struct px_dataset ds;
	shapes_load("n: 200, size: 32, max_shapes: 3, noise: 0", "train", 3, &ds);
	int64_t count[4] = {0}, n = 200 * 32 * 32, wrong = 0;
	for (int64_t i = 0; i < n; i++) {
		float v = ds.x_data[i], lab = ds.y_data[i];
		if (lab != 0 && lab != 1 && lab != 2 && lab != 3) {
			wrong++;
			continue;
		}
		count[(int)lab]++;
		wrong += lab == 0 ? v != 0 : !(v >= 0.5f && v <= 1.0f);
	}
	ck_assert_int_eq(wrong, 0);
	for (int k = 1; k < 4; k++)  /* every class is common */
		ck_assert_msg(count[k] > n / 30, "class %d covers only %lld pixels", k, (long long)count[k]);
	ck_assert(count[0] > n / 3);
	px_dataset_free(&ds);
	/* one shape per image: its labels fill its bounding box like the shape it names (square
	 * 1, circle pi/4, triangle 1/2, give or take the pixel grid of small shapes) */
	shapes_load("n: 60, size: 32, max_shapes: 1, noise: 0", "val", 4, &ds);
	for (int64_t e = 0; e < 60; e++) {
		const float *lab = ds.y_data + e * 32 * 32;
		int64_t y0 = 32, y1 = -1, x0 = 32, x1 = -1, area = 0, cls = 0;
		for (int64_t i = 0; i < 32 * 32; i++)
			if (lab[i] != 0) {
				int64_t py = i / 32, px = i % 32;
				cls = (int64_t)lab[i];
				area++;
				y0 = py < y0 ? py : y0, y1 = py > y1 ? py : y1;
				x0 = px < x0 ? px : x0, x1 = px > x1 ? px : x1;
			}
		ck_assert_int_gt(area, 0);
		double fill = (double)area / (double)((y1 - y0 + 1) * (x1 - x0 + 1));
		static const double lo[4] = {0, 0.65, 1.0, 0.45}, hi[4] = {0, 0.95, 1.0, 0.70};
		ck_assert_msg(fill >= lo[cls] && fill <= hi[cls], "image %lld: class %lld fills %.2f "
			      "of its box", (long long)e, (long long)cls, fill);
	}
	px_dataset_free(&ds);
	/* with noise: background pixels average 0 with the configured spread */
	shapes_load("n: 100, size: 32, noise: 0.1", "train", 3, &ds);
	double s = 0, ss = 0;
	int64_t nb = 0;
	for (int64_t i = 0; i < 100 * 32 * 32; i++)
		if (ds.y_data[i] == 0) {
			s += ds.x_data[i];
			ss += (double)ds.x_data[i] * ds.x_data[i];
			nb++;
		}
	ck_assert_double_eq_tol(s / (double)nb, 0, 0.01);
	ck_assert_double_eq_tol(sqrt(ss / (double)nb), 0.1, 0.01);
	px_dataset_free(&ds);
}
END_TEST

START_TEST(test_plugin_lists_every_layer_and_the_source)
{
	static const char *const kinds[] = {"conv2d", "conv_transpose2d", "maxpool2d", "avgpool2d",
					    "maxunpool2d", "upsample2d", "batchnorm2d"};
	for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
		ck_assert_str_eq(layer(kinds[i])->kind, kinds[i]);
	ck_assert_str_eq(tp_source("conv", "shapes")->kind, "shapes");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("conv");
	TCase *tc = tcase_create("conv");
	tcase_set_timeout(tc, 120);
	tcase_add_loop_test(tc, test_conv_layers_match_pytorch_forward_and_all_gradients, 0,
			    (int)(sizeof golden / sizeof golden[0]));
	tcase_add_loop_test(tc, test_conv_layer_grads_match_finite_differences, 0,
			    (int)(sizeof fd / sizeof fd[0]));
	tcase_add_test(tc, test_maxunpool_grad_matches_finite_difference);
	tcase_add_test(tc, test_maxunpool_restores_the_recorded_prepool_size_without_options);
	tcase_add_test(tc, test_unpool_of_pool_keeps_exactly_the_maxima_and_pools_back_the_same);
	tcase_add_test(tc, test_maxpool_ties_go_to_the_first_max_in_row_major_order);
	tcase_add_test(tc, test_conv_transpose2d_reproduces_the_worked_example_in_the_docs);
	tcase_add_test(tc, test_conv2d_on_a_rank3_input_names_both_shapes);
	tcase_add_test(tc, test_conv2d_groups_must_divide_the_channels);
	tcase_add_test(tc, test_conv2d_kernel_larger_than_the_input_is_refused);
	tcase_add_test(tc, test_conv_transpose2d_output_padding_must_be_below_stride_or_dilation);
	tcase_add_test(tc, test_maxunpool_needs_a_pool_size_and_matching_indices);
	tcase_add_test(tc, test_maxunpool_refuses_an_index_outside_the_plane);
	tcase_add_test(tc, test_pool_padding_over_half_the_kernel_is_refused);
	tcase_add_test(tc, test_batchnorm_running_stats_follow_pytorch_and_count_batches);
	tcase_add_test(tc, test_conv_weights_are_initialised_like_pytorch);
	tcase_add_test(tc, test_shapes_source_is_deterministic_from_its_seed_and_split);
	tcase_add_test(tc, test_shapes_labels_match_the_pixels);
	tcase_add_test(tc, test_plugin_lists_every_layer_and_the_source);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
