/* Extra evaluation metrics, chosen in the pipeline's eval: section. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct px_metric_acc {
	int split;
	/* iou */
	int64_t n_cls;
	double *inter, *uni;
	/* anomaly: per-example score and whether it is an anomaly */
	double *score;
	bool *anomaly;
	int64_t n_score, cap_score;
	/* generate */
	struct px_src gen;
	bool has_gen;
	int64_t exact, examples, tok_ok, tok_n;
	/* naive baseline */
	double naive_sum, naive_count;
	/* pca baseline: mean [D], components [K][D] */
	int64_t pca_k, pca_d;
	float *pca_mean, *pca_v;
	double pca_sum, pca_count;
};

/* LAPACK (from OpenBLAS): eigen-decomposition of a symmetric matrix */
void ssyev_(const char *jobz, const char *uplo, const int *n, float *a, const int *lda, float *w,
	    float *work, const int *lwork, int *info);

/* The top-k principal directions of the training inputs (flattened), by the eigenvectors of
 * their covariance C = Xc^T Xc / n. */
static int pca_fit(struct px_session *s, struct px_metric_acc *a, int64_t k, struct px_error *err)
{
	const struct px_dataset *ds = &s->ds[PX_SPLIT_TRAIN];
	int64_t n = ds->n, d = px_shape_numel(&ds->x);
	if (k >= d || d > 4096)
		return px_config_error(s->eval_cfg, err, PX_ERR_INVALID, "pca_baseline",
				       "pca_baseline needs fewer components (%lld) than features (%lld, at most 4096)",
				       (long long)k, (long long)d);
	float *xc = malloc((size_t)(n * d) * sizeof *xc), *cov = malloc((size_t)(d * d) * sizeof *cov);
	float *w = malloc((size_t)d * sizeof *w);
	a->pca_mean = calloc((size_t)d, sizeof *a->pca_mean);
	a->pca_v = malloc((size_t)(k * d) * sizeof *a->pca_v);
	int rc = 0;
	if (!xc || !cov || !w || !a->pca_mean || !a->pca_v) {
		rc = px_error_set(err, PX_ERR_NOMEM, "out of memory for the PCA baseline");
		goto done;
	}
	for (int64_t i = 0; i < n; i++)
		for (int64_t j = 0; j < d; j++)
			a->pca_mean[j] += ds->x_data[i * d + j] / (float)n;
	for (int64_t i = 0; i < n; i++)
		for (int64_t j = 0; j < d; j++)
			xc[i * d + j] = ds->x_data[i * d + j] - a->pca_mean[j];
	px_gemm(true, false, d, d, n, 1.0f / (float)n, xc, d, xc, d, 0.0f, cov, d);  /* C = Xc^T Xc / n */
	int nd = (int)d, info = 0, lwork = -1;
	float q;
	ssyev_("V", "U", &nd, cov, &nd, w, &q, &lwork, &info);
	lwork = (int)q;
	float *work = malloc((size_t)lwork * sizeof *work);
	if (!work) {
		rc = px_error_set(err, PX_ERR_NOMEM, "out of memory for the PCA baseline");
		goto done;
	}
	ssyev_("V", "U", &nd, cov, &nd, w, work, &lwork, &info);
	free(work);
	if (info != 0) {
		rc = px_error_set(err, PX_ERR_NUMERIC, "PCA baseline: eigen-decomposition failed (info %d)", info);
		goto done;
	}
	/* ascending eigenvalues; column-major eigenvectors = rows of cov here: take the last k */
	for (int64_t c = 0; c < k; c++)
		memcpy(a->pca_v + c * d, cov + (d - 1 - c) * d, (size_t)d * sizeof(float));
	a->pca_k = k;
	a->pca_d = d;
done:
	free(xc);
	free(cov);
	free(w);
	return rc;
}

int px_metrics_begin(struct px_session *s, int split, struct px_metric_acc **out,
		     struct px_error *err)
{
	struct px_metric_acc *a = calloc(1, sizeof *a);
	if (!a)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	a->split = split;
	const struct px_config *ec = s->eval_cfg;
	if (px_config_bool(ec, "iou")) {
		a->n_cls = s->ds[PX_SPLIT_TRAIN].n_classes;
		if (a->n_cls <= 0) {
			free(a);
			return px_config_error(ec, err, PX_ERR_INVALID, "iou",
					       "iou needs class labels (the data has none)");
		}
		a->inter = calloc((size_t)a->n_cls, sizeof *a->inter);
		a->uni = calloc((size_t)a->n_cls, sizeof *a->uni);
	}
	const char *g = px_config_str(ec, "generate");
	if (g && *g) {
		int rc = px_model_resolve(s->model, g, s->model->n_nodes, &a->gen, err);
		if (rc) {
			px_config_error(ec, err, rc, "generate", "%s", err->msg);
			free(a->inter);
			free(a->uni);
			free(a);
			return rc;
		}
		a->has_gen = true;
	}
	int64_t k = px_config_int(ec, "pca_baseline");
	if (k > 0) {
		int rc = pca_fit(s, a, k, err);
		if (rc) {
			free(a->pca_mean);
			free(a->pca_v);
			free(a->inter);
			free(a->uni);
			free(a);
			return rc;
		}
	}
	*out = a;
	return 0;
}

/* per-example squared error of recon vs target (both [B, ...]) */
static int add_scores(struct px_metric_acc *a, const struct px_tensor *p,
		      const struct px_tensor *t, const struct px_tensor *y, int64_t normal)
{
	int64_t B = p->shape[0], per = px_tensor_numel(p) / (B ? B : 1);
	if (a->n_score + B > a->cap_score) {
		int64_t cap = 2 * (a->n_score + B);
		double *ns = realloc(a->score, (size_t)cap * sizeof *ns);
		if (ns)
			a->score = ns;
		bool *na = realloc(a->anomaly, (size_t)cap * sizeof *na);
		if (na)
			a->anomaly = na;
		if (!ns || !na)
			return PX_ERR_NOMEM;
		a->cap_score = cap;
	}
	for (int64_t b = 0; b < B; b++) {
		double e = 0;
		for (int64_t i = 0; i < per; i++) {
			double d = (double)p->data[b * per + i] - t->data[b * per + i];
			e += d * d;
		}
		a->score[a->n_score] = e / (double)per;
		a->anomaly[a->n_score++] = (int64_t)y->data[b] != normal;
	}
	return 0;
}

int px_metrics_batch(struct px_session *s, struct px_metric_acc *a, const struct px_tensor *x,
		     const struct px_tensor *y, struct px_error *err)
{
	struct px_model *m = s->model;
	const struct px_config *ec = s->eval_cfg;
	const struct px_tensor *pred = px_model_output(m, s->loss_in);
	const struct px_tensor *tgt = px_model_output(m, s->loss_target);
	if (a->inter) {  /* pred [B,C,H,W] or [B,T,C] / [B,C]; labels y-shaped */
		int64_t B = pred->shape[0], C = a->n_cls;
		bool chw = pred->ndim == 4;
		int64_t inner = chw ? pred->shape[2] * pred->shape[3] : px_tensor_numel(pred) / B / C;
		for (int64_t b = 0; b < B; b++)
			for (int64_t i = 0; i < inner; i++) {
				int64_t best = 0;
				float bv = -INFINITY;
				for (int64_t c = 0; c < C; c++) {
					float v = chw ? pred->data[(b * C + c) * inner + i]
						      : pred->data[(b * inner + i) * C + c];
					if (v > bv) {
						bv = v;
						best = c;
					}
				}
				int64_t lab = (int64_t)tgt->data[b * inner + i];
				if (lab < 0 || lab >= C)
					continue;
				if (lab == best)
					a->inter[lab] += 1;
				a->uni[lab] += 1;
				if (best != lab)
					a->uni[best] += 1;
			}
	}
	int64_t normal = px_config_int(ec, "anomaly_class");
	if (normal >= 0 && add_scores(a, pred, tgt, y, normal))
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	if (px_config_bool(ec, "naive_baseline")) {  /* predict the last input value */
		struct px_loss_result lr;
		const struct px_loss_ops *lo = s->loss_entry->ops;
		int rc = lo->forward(s->loss, x, y, &lr, NULL, 1.0f, err);
		if (rc)
			return px_error_prefix(err, "naive baseline"), rc;
		a->naive_sum += lr.sum;
		a->naive_count += lr.count;
	}
	if (a->pca_k) {  /* x_hat = mean + V^T V (x - mean), scored with the pipeline's loss */
		int64_t B = x->shape[0], d = a->pca_d, k = a->pca_k;
		struct px_tensor *xc = px_tensor_like(m->step_arena, pred);
		struct px_tensor *z = px_tensor_new2(m->step_arena, B, k);
		if (!xc || !z || px_tensor_numel(pred) != B * d)
			return px_error_set(err, PX_ERR_SHAPE, "pca_baseline: the loss input must be shaped like the data");
		for (int64_t i = 0; i < B * d; i++)
			xc->data[i] = x->data[i] - a->pca_mean[i % d];
		px_gemm(false, true, B, k, d, 1.0f, xc->data, d, a->pca_v, d, 0.0f, z->data, k);
		px_gemm(false, false, B, d, k, 1.0f, z->data, k, a->pca_v, d, 0.0f, xc->data, d);
		for (int64_t i = 0; i < B * d; i++)
			xc->data[i] += a->pca_mean[i % d];
		struct px_loss_result lr;
		const struct px_loss_ops *lo = s->loss_entry->ops;
		int rc = lo->forward(s->loss, xc, tgt, &lr, NULL, 1.0f, err);
		if (rc)
			return px_error_prefix(err, "pca baseline"), rc;
		a->pca_sum += lr.sum;
		a->pca_count += lr.count;
	}
	if (a->has_gen && y) {  /* free-running decoding: the model again, without the label */
		int rc = px_model_forward(m, x, NULL, false, err);
		if (rc)
			return rc;
		const struct px_tensor *tok = px_model_output(m, a->gen);
		int64_t B = y->shape[0], Ty = y->ndim > 1 ? y->shape[1] : 1, Tt = tok->shape[1];
		for (int64_t b = 0; b < B; b++) {
			int64_t ly = px_tensor_len(y, b), lt = px_tensor_len(tok, b);
			bool same = ly == lt;
			for (int64_t t = 0; t < ly; t++) {
				bool ok = t < lt && t < Tt && tok->data[b * Tt + t] == y->data[b * Ty + t];
				a->tok_ok += ok;
				same &= ok;
			}
			a->tok_n += ly;
			a->exact += same;
			a->examples++;
		}
	}
	return 0;
}

static int cmp_score(const void *x, const void *y, void *ctx)
{
	const double *s = ctx;
	double a = s[*(const int64_t *)x], b = s[*(const int64_t *)y];
	return a < b ? -1 : a > b;
}

/* ROC AUC = P(score of an anomaly > score of a normal), ties counted half (rank formula). */
static double roc_auc(const double *score, const bool *pos, int64_t n)
{
	int64_t *idx = malloc((size_t)n * sizeof *idx);
	if (!idx)
		return NAN;
	for (int64_t i = 0; i < n; i++)
		idx[i] = i;
	qsort_r(idx, (size_t)n, sizeof *idx, cmp_score, (void *)score);
	double rank_sum = 0, npos = 0;
	for (int64_t i = 0; i < n;) {
		int64_t j = i;
		while (j < n && score[idx[j]] == score[idx[i]])
			j++;
		double avg = (double)(i + j + 1) / 2.0;  /* 1-based average rank of the tie group */
		for (int64_t k = i; k < j; k++)
			if (pos[idx[k]]) {
				rank_sum += avg;
				npos++;
			}
		i = j;
	}
	free(idx);
	double nneg = (double)n - npos;
	if (npos == 0 || nneg == 0)
		return NAN;
	return (rank_sum - npos * (npos + 1) / 2) / (npos * nneg);
}

int px_metrics_end(struct px_session *s, struct px_metric_acc *a, struct px_metrics *m,
		   struct px_error *err)
{
	(void)err;
	const struct px_config *ec = s->eval_cfg;
	if (px_config_bool(ec, "bpc"))
		px_metrics_add(m, "bpc", m->loss / log(2.0));
	if (a->inter) {
		double sum = 0;
		int64_t k = 0;
		for (int64_t c = 0; c < a->n_cls; c++) {
			char name[32];
			double iou = a->uni[c] > 0 ? a->inter[c] / a->uni[c] : NAN;
			snprintf(name, sizeof name, "iou_%lld", (long long)c);
			px_metrics_add(m, name, iou);
			if (!isnan(iou)) {
				sum += iou;
				k++;
			}
		}
		px_metrics_add(m, "mean_iou", k ? sum / (double)k : NAN);
	}
	if (a->n_score)
		px_metrics_add(m, "roc_auc", roc_auc(a->score, a->anomaly, a->n_score));
	if (a->naive_count > 0)
		px_metrics_add(m, "naive_loss", a->naive_sum / a->naive_count);
	if (a->pca_count > 0)
		px_metrics_add(m, "pca_loss", a->pca_sum / a->pca_count);
	if (a->has_gen) {
		px_metrics_add(m, "exact_match", a->examples ? (double)a->exact / (double)a->examples : NAN);
		px_metrics_add(m, "token_accuracy", a->tok_n ? (double)a->tok_ok / (double)a->tok_n : NAN);
	}
	free(a->pca_mean);
	free(a->pca_v);
	free(a->inter);
	free(a->uni);
	free(a->score);
	free(a->anomaly);
	free(a);
	return 0;
}
