/* Test helper: run one layer through the harness against a PyTorch golden fixture written by
 * tests/gen_conv.py, for loss = sum_k <dout_k, out_k>. A fixture holds the inputs in0, in1 ...,
 * every parameter and buffer as param:NAME, the outputs out0 ..., the loss weights dout0 ...,
 * the gradients din0 ... and dparam:NAME, and buffers after the forward as after:NAME.
 * Header-only; needs Check, fixture.h and the harness. */
#ifndef PX_TEST_GOLDEN_LAYER_H
#define PX_TEST_GOLDEN_LAYER_H

#include <check.h>
#include <stdio.h>
#include <string.h>

#include <plexus/harness.h>

#include "fixture.h"

/* The tensor called `name`, or NULL (silently: absence is information here). */
static struct fixture_tensor *gl_find(struct fixture *fx, const char *name)
{
	for (int i = 0; i < fx->n; i++)
		if (!strcmp(fx->t[i].name, name))
			return &fx->t[i];
	return NULL;
}

static void gl_view(struct px_tensor *t, struct fixture_tensor *f)
{
	memset(t, 0, sizeof *t);
	t->data = f->data;
	t->ndim = f->ndim;
	memcpy(t->shape, f->shape, sizeof t->shape);
}

/* |a - f| over all elements, after checking that the shapes agree. */
static double gl_compare(const char *what, const struct px_tensor *a, const struct fixture_tensor *f)
{
	ck_assert_msg(a && a->ndim == f->ndim, "%s: rank %d, PyTorch has %d", what,
		      a ? a->ndim : -1, f->ndim);
	for (int d = 0; d < f->ndim; d++)
		ck_assert_msg(a->shape[d] == f->shape[d], "%s: dim %d is %lld, PyTorch has %lld", what,
			      d, (long long)a->shape[d], (long long)f->shape[d]);
	return fixture_max_abs_diff(a->data, f->data, f->numel);
}

/* Largest |plexus - PyTorch| over every output, input and parameter gradient and updated
 * buffer of the case in tests/fixtures/<rel>. Fails the test if anything is missing. */
static double golden_layer_check(const struct px_layer_ops *ops, const char *rel,
				 const char *options, bool train)
{
	struct fixture *fx = fixture_load(rel);
	ck_assert_msg(fx, "cannot load fixture %s", rel);
	char name[160];
	struct px_tensor in_t[8], dout_t[8];
	const struct px_tensor *in[8] = {0}, *d_out[8] = {0};
	struct px_tensor *d_in[8] = {0};
	struct px_shape shapes[8];
	int n_in = 0;
	for (; n_in < 8; n_in++) {
		snprintf(name, sizeof name, "in%d", n_in);
		struct fixture_tensor *f = gl_find(fx, name);
		if (!f)
			break;
		gl_view(&in_t[n_in], f);
		in[n_in] = &in_t[n_in];
		px_tensor_shape(&in_t[n_in], &shapes[n_in]);
	}
	struct px_error err = {0};
	struct px_layer_inst *li;
	int rc = px_layer_inst_new(ops, options, n_in, shapes, NULL, 1, NULL, &li, &err);
	ck_assert_msg(rc == 0, "%s: %s", rel, err.msg);
	/* load every parameter and buffer by name; the fixture must hold exactly these */
	int n_fx_params = 0;
	for (int i = 0; i < fx->n; i++)
		n_fx_params += !strncmp(fx->t[i].name, "param:", 6);
	ck_assert_msg(px_layer_inst_n_params(li) == n_fx_params, "%s: layer has %d params, fixture %d",
		      rel, px_layer_inst_n_params(li), n_fx_params);
	for (int p = 0; p < px_layer_inst_n_params(li); p++) {
		struct px_param *prm = px_layer_inst_param(li, p);
		snprintf(name, sizeof name, "param:%s", prm->name);
		struct fixture_tensor *f = gl_find(fx, name);
		ck_assert_msg(f, "%s: no %s", rel, name);
		gl_compare(name, prm->value, f);
		memcpy(prm->value->data, f->data, (size_t)f->numel * sizeof(float));
	}
	rc = px_layer_inst_forward(li, in, train, &err);
	ck_assert_msg(rc == 0, "%s: %s", rel, err.msg);
	double worst = 0;
	for (int k = 0; k < px_layer_inst_n_out(li); k++) {
		snprintf(name, sizeof name, "out%d", k);
		struct fixture_tensor *f = gl_find(fx, name);
		ck_assert_msg(f, "%s: no %s", rel, name);
		double e = gl_compare(name, px_layer_inst_out(li, k), f);
		worst = e > worst ? e : worst;
		snprintf(name, sizeof name, "dout%d", k);
		if ((f = gl_find(fx, name))) {
			gl_view(&dout_t[k], f);
			d_out[k] = &dout_t[k];
		}
	}
	for (int i = 0; i < n_in; i++) {
		snprintf(name, sizeof name, "din%d", i);
		if (gl_find(fx, name))
			d_in[i] = px_layer_inst_tensor(li, in[i]->ndim, in[i]->shape);
		else
			ck_assert_msg(ops->inputs[i].flags & PX_PORT_NO_GRAD, "%s: no %s", rel, name);
	}
	rc = px_layer_inst_backward(li, d_out, d_in, &err);
	ck_assert_msg(rc == 0, "%s: %s", rel, err.msg);
	for (int i = 0; i < n_in; i++) {
		snprintf(name, sizeof name, "din%d", i);
		if (d_in[i]) {
			double e = gl_compare(name, d_in[i], gl_find(fx, name));
			worst = e > worst ? e : worst;
		}
	}
	for (int p = 0; p < px_layer_inst_n_params(li); p++) {
		struct px_param *prm = px_layer_inst_param(li, p);
		struct fixture_tensor *f;
		snprintf(name, sizeof name, prm->trainable ? "dparam:%s" : "after:%s", prm->name);
		if (!(f = gl_find(fx, name))) {
			ck_assert_msg(!prm->trainable, "%s: no %s", rel, name);
			continue;
		}
		double e = gl_compare(name, prm->trainable ? prm->grad : prm->value, f);
		worst = e > worst ? e : worst;
	}
	printf("%-32s max |plexus - torch| = %.2e\n", rel, worst);
	px_layer_inst_free(li);
	fixture_free(fx);
	return worst;
}

#endif
