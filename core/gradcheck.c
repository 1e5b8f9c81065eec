/* Finite-difference gradient check of one layer against a random output projection. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

void px_gradcheck_defaults(struct px_gradcheck_opts *o)
{
	memset(o, 0, sizeof *o);
	o->eps = 1e-2;
	o->atol = 2e-3;
	o->rtol = 2e-2;
	o->max_per_tensor = 0;
	o->seed = 1234;
	o->train = false;
}

struct proj {
	int n_out;
	float *w[8];   /* NULL for outputs that are not differentiated */
	int64_t n[8];
};

/* loss = sum_k <w_k, out_k>, in double */
static int proj_loss(struct px_layer_inst *li, const struct px_tensor *const *in,
		     const struct px_gradcheck_opts *o, const struct proj *pj, double *loss,
		     struct px_error *err)
{
	int rc = px_layer_inst_forward(li, in, o->train, err);
	if (rc)
		return rc;
	double s = 0;
	for (int k = 0; k < pj->n_out; k++) {
		const struct px_tensor *t = px_layer_inst_out(li, k);
		if (!pj->w[k])
			continue;
		for (int64_t i = 0; i < pj->n[k]; i++)
			s += (double)pj->w[k][i] * t->data[i];
	}
	*loss = s;
	return 0;
}

static void note(struct px_gradcheck_result *res, const struct px_gradcheck_opts *o,
		 double a, double n, const char *what, int64_t idx)
{
	double d = fabs(a - n);
	double rel = d / fmax(fabs(n), o->atol);
	res->checked++;
	bool bad = !(d <= o->atol + o->rtol * fabs(n));
	if (bad)
		res->failed++;
	if (d > res->max_abs_err || (bad && res->failed == 1) || isnan(d)) {
		if (d > res->max_abs_err || isnan(d))
			res->max_abs_err = isnan(d) ? INFINITY : d;
		snprintf(res->worst, sizeof res->worst, "%s[%lld] analytic %.6g numeric %.6g", what,
			 (long long)idx, a, n);
	}
	if (rel > res->max_rel_err || isnan(rel))
		res->max_rel_err = isnan(rel) ? INFINITY : rel;
}

/* Check the elements of x (numel n) against analytic gradient g. */
static int check_tensor(struct px_layer_inst *li, const struct px_tensor *const *in,
			const struct px_gradcheck_opts *o, const struct proj *pj, float *x,
			const float *g, int64_t n, const char *what, struct px_rng *pick,
			struct px_gradcheck_result *res, struct px_error *err)
{
	int64_t count = (o->max_per_tensor > 0 && n > o->max_per_tensor) ? o->max_per_tensor : n;
	for (int64_t c = 0; c < count; c++) {
		int64_t i = count == n ? c : (int64_t)px_rng_below(pick, (uint64_t)n);
		float orig = x[i];
		double lp, lm;
		x[i] = orig + (float)o->eps;
		double hp = (double)x[i] - orig;
		int rc = proj_loss(li, in, o, pj, &lp, err);
		x[i] = orig - (float)o->eps;
		double hm = (double)orig - x[i];
		if (!rc)
			rc = proj_loss(li, in, o, pj, &lm, err);
		x[i] = orig;
		if (rc)
			return rc;
		note(res, o, g[i], (lp - lm) / (hp + hm), what, i);
	}
	return 0;
}

int px_gradcheck_layer(struct px_layer_inst *li, const struct px_tensor *const *in,
		       const struct px_gradcheck_opts *o, struct px_gradcheck_result *res,
		       struct px_error *err)
{
	memset(res, 0, sizeof *res);
	const struct px_layer_ops *ops = NULL;
	struct proj pj;
	memset(&pj, 0, sizeof pj);
	int rc = px_layer_inst_forward(li, in, o->train, err);
	if (rc)
		return rc;
	ops = px_layer_inst_ops(li);
	struct px_rng rng;
	px_rng_seed(&rng, o->seed);
	pj.n_out = px_layer_inst_n_out(li);
	const struct px_tensor *d_out[8] = {0};
	for (int k = 0; k < pj.n_out; k++) {
		const struct px_tensor *t = px_layer_inst_out(li, k);
		if (ops->outputs[k].flags & PX_PORT_NO_GRAD)
			continue;
		struct px_tensor *w = px_layer_inst_tensor(li, t->ndim, t->shape);
		if (!w)
			return px_error_set(err, PX_ERR_NOMEM, "out of memory");
		pj.n[k] = px_tensor_numel(t);
		px_rng_fill_uniform(&rng, w->data, pj.n[k], -1.0f, 1.0f);
		pj.w[k] = w->data;
		d_out[k] = w;
	}
	/* analytic gradients */
	struct px_tensor *d_in[8] = {0};
	int n_in_ports = 0;
	while (ops->inputs[n_in_ports].name)
		n_in_ports++;
	int n_in = px_layer_inst_n_in(li);
	for (int i = 0; i < n_in; i++) {
		int port = i < n_in_ports ? i : n_in_ports - 1;  /* variadic tail */
		bool ids = (ops->flags & PX_LAYER_IDS_INPUT) && i == 0;
		if (!in[i] || (ops->inputs[port].flags & PX_PORT_NO_GRAD) || ids)
			continue;
		d_in[i] = px_layer_inst_tensor(li, in[i]->ndim, in[i]->shape);
		if (!d_in[i])
			return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	}
	rc = px_layer_inst_backward(li, d_out, d_in, err);
	if (rc)
		return rc;
	struct px_rng pick;
	px_rng_seed(&pick, o->seed ^ 0xabcdef);
	char what[96];
	for (int i = 0; i < n_in; i++) {
		if (!d_in[i])
			continue;
		snprintf(what, sizeof what, "input %d", i);
		rc = check_tensor(li, in, o, &pj, in[i]->data, d_in[i]->data,
				  px_tensor_numel(in[i]), what, &pick, res, err);
		if (rc)
			return rc;
	}
	int np = px_layer_inst_n_params(li);
	for (int p = 0; p < np; p++) {
		struct px_param *prm = px_layer_inst_param(li, p);
		if (!prm->trainable)
			continue;
		int64_t n = px_tensor_numel(prm->value);
		struct px_tensor *g = px_layer_inst_tensor(li, prm->grad->ndim, prm->grad->shape);
		if (!g)
			return px_error_set(err, PX_ERR_NOMEM, "out of memory");
		memcpy(g->data, prm->grad->data, (size_t)n * sizeof(float));
		snprintf(what, sizeof what, "param %s", prm->name);
		rc = check_tensor(li, in, o, &pj, prm->value->data, g->data, n, what, &pick, res, err);
		if (rc)
			return rc;
	}
	return 0;
}
