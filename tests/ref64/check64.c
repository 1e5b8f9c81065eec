/* See check64.h. */
#include "check64.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

double check64_nmse(const float *a, const double *r, int64_t n)
{
	double e = 0, s = 0;
	for (int64_t i = 0; i < n; i++) {
		e += ((double)a[i] - r[i]) * ((double)a[i] - r[i]);
		s += r[i] * r[i];
	}
	return s > 0 ? e / s : e;
}

const char *check64_verdict(const struct check64_result *r, char *buf, size_t n)
{
	if (r->fd_checked <= 0)
		snprintf(buf, n, "nothing checked");
	else if (r->fd_failed)
		snprintf(buf, n, "%lld of %lld float64 Jacobian elements off, worst %s",
			 (long long)r->fd_failed, (long long)r->fd_checked, r->fd_worst);
	else if (!(r->fwd_nmse <= CHECK64_NMSE))
		snprintf(buf, n, "forward nMSE %g", r->fwd_nmse);
	else if (!(r->bwd_nmse <= CHECK64_NMSE))
		snprintf(buf, n, "backward nMSE %g (%s)", r->bwd_nmse, r->bwd_worst);
	else
		return NULL;
	return buf;
}

static struct r64 *r64_from(const struct px_tensor *t)
{
	struct r64 *r = r64_new(t->ndim, t->shape);
	for (int64_t i = 0; i < r64_numel(r); i++)
		r->d[i] = t->data[i];
	r->lengths = t->lengths;
	return r;
}

/* L = sum_k <w_k, out_k> of a fresh reference forward */
static double ref_loss(struct ref_layer *ref, int n_in, struct r64 *const *in,
		       struct r64 *const *w)
{
	struct r64 *out[8] = {0};
	ref->forward(ref, n_in, in, out);
	double s = 0;
	for (int k = 0; k < ref->n_out; k++) {
		for (int64_t i = 0; i < r64_numel(out[k]); i++)
			s += w[k]->d[i] * out[k]->d[i];
		r64_free(out[k]);
	}
	return s;
}

/* central differences of L in x[i], against the analytic a */
static void fd_one(struct ref_layer *ref, int n_in, struct r64 *const *in, struct r64 *const *w,
		   double *x, double a, const char *what, int64_t i, struct check64_result *res)
{
	double keep = *x;
	*x = keep + CHECK64_EPS;
	double lp = ref_loss(ref, n_in, in, w);
	*x = keep - CHECK64_EPS;
	double lm = ref_loss(ref, n_in, in, w);
	*x = keep;
	double n = (lp - lm) / (2 * CHECK64_EPS), e = fabs(a - n);
	double rel = e / fmax(fabs(n), CHECK64_ATOL);
	res->fd_checked++;
	if (e > CHECK64_ATOL + CHECK64_RTOL * fabs(n))
		res->fd_failed++;
	if (e > res->fd_max_abs) {
		res->fd_max_abs = e;
		snprintf(res->fd_worst, sizeof res->fd_worst, "%s[%lld]: analytic %.9g numeric %.9g",
			 what, (long long)i, a, n);
	}
	res->fd_max_rel = fmax(res->fd_max_rel, rel);
}

/* fd_one on every element of x[0..n) (analytic gradient a), or on `max` of them (> 0) drawn
 * from `pick` without replacement (a partial Fisher-Yates shuffle of the indices) */
static void fd_tensor(struct ref_layer *ref, int n_in, struct r64 *const *in,
		      struct r64 *const *w, double *x, const double *a, int64_t n,
		      const char *what, int max, struct px_rng *pick, struct check64_result *res)
{
	if (max <= 0 || n <= max) {
		for (int64_t e = 0; e < n; e++)
			fd_one(ref, n_in, in, w, &x[e], a[e], what, e, res);
		return;
	}
	int64_t *idx = malloc((size_t)n * sizeof *idx);
	if (!idx)
		abort();
	for (int64_t e = 0; e < n; e++)
		idx[e] = e;
	for (int64_t k = 0; k < max; k++) {
		int64_t j = k + (int64_t)px_rng_below(pick, (uint64_t)(n - k)), e = idx[j];
		idx[j] = idx[k];
		idx[k] = e;
		fd_one(ref, n_in, in, w, &x[e], a[e], what, e, res);
	}
	res->fd_skipped += n - max;
	free(idx);
}

/* o->prelude through the kernel and the reference, then ref->commit */
static int run_prelude(const char *name, struct px_layer_inst *li, struct ref_layer *ref,
		       int n_in, const struct check64_opts *o)
{
	struct px_error err;
	struct r64 *in[8] = {0}, *out[8] = {0};
	if (px_layer_inst_forward(li, o->prelude, o->train, &err)) {
		fprintf(stderr, "%s: prelude forward: %s\n", name, err.msg);
		return -1;
	}
	for (int i = 0; i < n_in; i++)
		in[i] = r64_from(o->prelude[i]);
	ref->forward(ref, n_in, in, out);
	for (int k = 0; k < ref->n_out; k++)
		r64_free(out[k]);
	for (int i = 0; i < n_in; i++)
		r64_free(in[i]);
	if (ref->commit)
		ref->commit(ref);
	return 0;
}

int check64_layer(const char *name, const struct px_layer_ops *ops, const char *opts, int n_in,
		  struct px_tensor *const *in, const bool *no_grad, struct ref_layer *ref,
		  const struct px_host *host, const struct check64_opts *o,
		  struct check64_result *res)
{
	const struct check64_opts defaults = {0};
	if (!o)
		o = &defaults;
	memset(res, 0, sizeof *res);
	struct px_shape shapes[8];
	bool ragged[8];
	for (int i = 0; i < n_in; i++) {
		px_tensor_shape(in[i], &shapes[i]);
		ragged[i] = in[i]->lengths != NULL;
	}
	struct px_layer_inst *li;
	struct px_error err;
	if (px_layer_inst_new(ops, opts, n_in, shapes, ragged, CHECK64_SEED, host, &li, &err)) {
		fprintf(stderr, "%s: %s\n", name, err.msg);
		return -1;
	}
	/* the kernel's parameters, as initialised, into the reference */
	int np = px_layer_inst_n_params(li);
	if (np > REF_MAX_PARAMS) {
		fprintf(stderr, "%s: %d parameters\n", name, np);
		return -1;
	}
	ref->n_params = np;
	struct px_rng rng;
	px_rng_seed(&rng, 99);
	for (int k = 0; k < np; k++) {
		struct px_param *p = px_layer_inst_param(li, k);
		if (o->random_params && p->grad)
			px_rng_fill_uniform(&rng, p->value->data, px_tensor_numel(p->value), -0.5f, 0.5f);
		ref->param[k] = r64_from(p->value);
		ref->grad[k] = r64_like(ref->param[k]);
	}
	if (o->prelude && run_prelude(name, li, ref, n_in, o))
		return -1;
	struct r64 *din[8] = {0}, *rout[8] = {0}, *w[8] = {0}, *rdin[8] = {0};
	for (int i = 0; i < n_in; i++)
		din[i] = r64_from(in[i]);

	/* forward */
	if (px_layer_inst_forward(li, (const struct px_tensor *const *)in, o->train, &err)) {
		fprintf(stderr, "%s: forward: %s\n", name, err.msg);
		return -1;
	}
	ref->forward(ref, n_in, din, rout);
	int n_out = px_layer_inst_n_out(li);
	if (n_out != ref->n_out) {
		fprintf(stderr, "%s: %d outputs, the reference has %d\n", name, n_out, ref->n_out);
		return -1;
	}
	const struct px_tensor *d_out[8];
	const unsigned no_project = o->no_project;
	for (int k = 0; k < n_out; k++) {
		const struct px_tensor *o = px_layer_inst_out(li, k);
		if (px_tensor_numel(o) != r64_numel(rout[k])) {
			fprintf(stderr, "%s: output %d has %lld values, the reference %lld\n", name, k,
				(long long)px_tensor_numel(o), (long long)r64_numel(rout[k]));
			return -1;
		}
		res->fwd_nmse = fmax(res->fwd_nmse, check64_nmse(o->data, rout[k]->d, r64_numel(rout[k])));
		struct px_tensor *wf = px_layer_inst_tensor(li, o->ndim, o->shape);
		px_rng_fill_uniform(&rng, wf->data, px_tensor_numel(wf), -1, 1);
		d_out[k] = wf;
		if (no_project & (1u << k)) {   /* left out of L */
			memset(wf->data, 0, (size_t)px_tensor_numel(wf) * sizeof(float));
			d_out[k] = NULL;
		}
		w[k] = r64_from(wf);
	}

	/* backward: kernel and reference */
	struct px_tensor *d_in[8] = {0};
	for (int i = 0; i < n_in; i++)
		if (!no_grad || !no_grad[i]) {
			d_in[i] = px_layer_inst_tensor(li, in[i]->ndim, in[i]->shape);
			rdin[i] = r64_like(din[i]);
		}
	if (px_layer_inst_backward(li, d_out, d_in, &err)) {
		fprintf(stderr, "%s: backward: %s\n", name, err.msg);
		return -1;
	}
	ref->backward(ref, n_in, din, rout, w, rdin);
	for (int i = 0; i < n_in; i++) {
		if (!d_in[i])
			continue;
		double e = check64_nmse(d_in[i]->data, rdin[i]->d, r64_numel(rdin[i]));
		if (e >= res->bwd_nmse) {
			res->bwd_nmse = e;
			snprintf(res->bwd_worst, sizeof res->bwd_worst, "input %d", i);
		}
	}
	for (int k = 0; k < np; k++) {
		struct px_param *p = px_layer_inst_param(li, k);
		if (!p->grad)
			continue;
		double e = check64_nmse(p->grad->data, ref->grad[k]->d, r64_numel(ref->grad[k]));
		if (e >= res->bwd_nmse) {
			res->bwd_nmse = e;
			snprintf(res->bwd_worst, sizeof res->bwd_worst, "%s", p->name);
		}
	}

	/* the reference's gradient by central differences in double */
	struct px_rng pick;   /* the subsets of max_fd_per_tensor */
	px_rng_seed_label(&pick, CHECK64_SEED, "fd subset");
	for (int i = 0; i < n_in; i++) {
		if (!rdin[i])
			continue;
		char what[32];
		snprintf(what, sizeof what, "input %d", i);
		fd_tensor(ref, n_in, din, w, din[i]->d, rdin[i]->d, r64_numel(din[i]), what,
			  o->max_fd_per_tensor, &pick, res);
	}
	for (int k = 0; k < np; k++)   /* trainable ones: buffers are constants of the layer */
		if (px_layer_inst_param(li, k)->grad)
			fd_tensor(ref, n_in, din, w, ref->param[k]->d, ref->grad[k]->d,
				  r64_numel(ref->param[k]), px_layer_inst_param(li, k)->name,
				  o->max_fd_per_tensor, &pick, res);

	printf("%-34s fwd nMSE %8.1e  bwd nMSE %8.1e  FD64 %5lld checked, max |a-n| %.1e, "
	       "max rel %.1e", name, res->fwd_nmse, res->bwd_nmse, (long long)res->fd_checked,
	       res->fd_max_abs, res->fd_max_rel);
	if (res->fd_skipped)
		printf(" (at most %d per tensor: %lld left out)", o->max_fd_per_tensor,
		       (long long)res->fd_skipped);
	printf("\n");
	for (int i = 0; i < n_in; i++) {
		r64_free(din[i]);
		r64_free(rdin[i]);
	}
	for (int k = 0; k < n_out; k++) {
		r64_free(rout[k]);
		r64_free(w[k]);
	}
	ref_layer_free(ref);
	px_layer_inst_free(li);
	return 0;
}
