/* Built-in losses: mse, cross_entropy (from logits), bce (from logits).
 *
 * Each forward returns the SUM of the per-item losses and the count the core divides by, and
 * writes scale * d(sum)/d(pred) into d_pred (zero for padded steps and ignored items). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ------------------------------------------------------------------ helpers */

/* Dims match, a -1 (unknown at build time) matching anything. */
static bool dims_match(int64_t a, int64_t b)
{
	return a == b || a < 0 || b < 0;
}

static bool shapes_match(const struct px_shape *a, const struct px_shape *b)
{
	if (a->ndim != b->ndim)
		return false;
	for (int d = 0; d < a->ndim; d++)
		if (!dims_match(a->dim[d], b->dim[d]))
			return false;
	return true;
}

static int shape_error(struct px_error *err, const char *kind, const struct px_shape *pred,
		       const struct px_shape *target, const char *need)
{
	char sp[96], st[96];
	return px_error_set(err, PX_ERR_SHAPE, "%s: prediction %s and target %s do not fit: %s",
			    kind, px_shape_str(pred, sp, sizeof sp),
			    px_shape_str(target, st, sizeof st), need);
}

static int tensor_shape_error(struct px_error *err, const char *kind,
			      const struct px_tensor *pred, const struct px_tensor *target,
			      const char *need)
{
	struct px_shape sp, st;
	px_tensor_shape(pred, &sp);
	px_tensor_shape(target, &st);
	return shape_error(err, kind, &sp, &st, need);
}

static bool same_shape(const struct px_tensor *a, const struct px_tensor *b)
{
	if (a->ndim != b->ndim)
		return false;
	for (int d = 0; d < a->ndim; d++)
		if (a->shape[d] != b->shape[d])
			return false;
	return true;
}

/* Valid steps of example b of a [B,T,...] tensor with `lengths` (NULL: all). */
static int64_t valid_steps(const int32_t *lengths, int64_t steps, int64_t b)
{
	if (!lengths)
		return steps;
	int64_t len = lengths[b];
	return len < 0 ? 0 : (len > steps ? steps : len);
}

/* The lengths a loss honours: the prediction's, or else the target's. */
static const int32_t *loss_lengths(const struct px_tensor *pred, const struct px_tensor *target)
{
	if (pred->ndim < 2)
		return NULL;
	return pred->lengths ? pred->lengths : target->lengths;
}

static void zero_grad(struct px_tensor *d)
{
	if (d)
		memset(d->data, 0, (size_t)px_tensor_numel(d) * sizeof(float));
}

struct loss_nothing {
	int unused;
};

static int nothing_create(void **self, struct px_error *err)
{
	*self = calloc(1, sizeof(struct loss_nothing));
	return *self ? 0 : px_error_set(err, PX_ERR_NOMEM, "out of memory");
}

/* ------------------------------------------------------------------ mse */
/* sum = 1/2 sum_i (x_hat_i - x_i)^2 over valid steps; count = batch; d = x_hat - x */
static const struct px_param_spec mse_schema[] = {
	{NULL, 0, NULL, 0, 0, NULL, NULL},
};

static int mse_create(const struct px_config *cfg, const struct px_shape *pred,
		      const struct px_shape *target, void **self, struct px_error *err)
{
	(void)cfg;
	if (!shapes_match(pred, target))
		return shape_error(err, "mse", pred, target, "they must be the same");
	return nothing_create(self, err);
}

static int mse_forward(void *self, const struct px_tensor *pred, const struct px_tensor *target,
		       struct px_loss_result *res, struct px_tensor *d_pred, float scale,
		       struct px_error *err)
{
	(void)self;
	if (!same_shape(pred, target))
		return tensor_shape_error(err, "mse", pred, target, "they must be the same");
	zero_grad(d_pred);
	int64_t batch = pred->shape[0];
	int64_t per_ex = batch ? px_tensor_numel(pred) / batch : 0;
	const int32_t *lengths = loss_lengths(pred, target);
	int64_t steps = pred->ndim >= 2 ? pred->shape[1] : 1;
	int64_t per_step = steps ? per_ex / steps : 0;
	double sum = 0;
	for (int64_t b = 0; b < batch; b++) {
		int64_t off = b * per_ex;
		int64_t n = lengths ? valid_steps(lengths, steps, b) * per_step : per_ex;
		for (int64_t i = off; i < off + n; i++) {
			float d = pred->data[i] - target->data[i];
			sum += 0.5 * (double)d * d;
			if (d_pred)
				d_pred->data[i] = scale * d;
		}
	}
	res->sum = sum;
	res->count = (double)batch;
	res->correct = -1;
	return 0;
}

static const struct px_loss_ops mse_ops = {
	.struct_size = sizeof(struct px_loss_ops),
	.kind = "mse",
	.doc = "1/2 ||x_hat - x||^2 per example (valid steps only), averaged over the batch",
	.schema = mse_schema,
	.create = mse_create,
	.forward = mse_forward,
	.destroy = free,
};

/* ------------------------------------------------------------------ cross_entropy */
/* loss = (1-e) (lse(z) - z_y) + e/C sum_c (lse(z) - z_c); d = softmax(z) - (1-e) 1[c=y] - e/C */
struct ce {
	int64_t ignore_index;
	double smoothing;
};

static const struct px_param_spec ce_schema[] = {
	{"ignore_index", PX_T_INT, "-100", -1e18, 1e18, NULL,
	 "target value that is skipped (no loss, no gradient, not counted)"},
	{"label_smoothing", PX_T_FLOAT, "0", 0, 1, NULL,
	 "mix the one-hot target with the uniform distribution by this much"},
	{NULL, 0, NULL, 0, 0, NULL, NULL},
};

/* Item layout: logits of item (o, k) at pred[(o*C + c)*inner + k], its class at
 * target[o*inner + k]. [B,C]/[B]: outer B, inner 1. [B,T,C]/[B,T]: outer B*T, inner 1,
 * step t = o % T. [B,C,d1..]/[B,d1..]: outer B, inner d1*... (PyTorch's layout). */
struct ce_layout {
	int64_t outer, classes, inner;
	int64_t steps;  /* > 0 for the sequence layout */
};

static const char ce_need[] =
	"need [B,C] with [B], [B,T,C] with [B,T], or [B,C,H,W] with [B,H,W]";

static bool ce_shapes_fit(const struct px_shape *p, const struct px_shape *t)
{
	if (p->ndim < 2 || t->ndim != p->ndim - 1 || !dims_match(p->dim[0], t->dim[0]))
		return false;
	if (p->ndim == 3)  /* [B,T,C] with [B,T] */
		return dims_match(p->dim[1], t->dim[1]);
	for (int d = 2; d < p->ndim; d++)  /* [B,C,...] with [B,...] */
		if (!dims_match(p->dim[d], t->dim[d - 1]))
			return false;
	return true;
}

static int ce_create(const struct px_config *cfg, const struct px_shape *pred,
		     const struct px_shape *target, void **self, struct px_error *err)
{
	if (!ce_shapes_fit(pred, target))
		return shape_error(err, "cross_entropy", pred, target, ce_need);
	int64_t classes = pred->ndim == 3 ? pred->dim[2] : pred->dim[1];
	if (classes == 0) {
		char sp[96];
		return px_error_set(err, PX_ERR_SHAPE, "cross_entropy: prediction %s has no classes",
				    px_shape_str(pred, sp, sizeof sp));
	}
	struct ce *c = calloc(1, sizeof *c);
	if (!c)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	c->ignore_index = px_config_int(cfg, "ignore_index");
	c->smoothing = px_config_float(cfg, "label_smoothing");
	*self = c;
	return 0;
}

static int ce_forward(void *self, const struct px_tensor *pred, const struct px_tensor *target,
		      struct px_loss_result *res, struct px_tensor *d_pred, float scale,
		      struct px_error *err)
{
	struct ce *c = self;
	struct px_shape sp, st;
	px_tensor_shape(pred, &sp);
	px_tensor_shape(target, &st);
	bool ok = ce_shapes_fit(&sp, &st);
	for (int d = 0; ok && d < st.ndim; d++)  /* concrete shapes: no -1 left */
		ok = st.dim[d] == (d == 0 ? sp.dim[0] : sp.dim[sp.ndim == 3 ? d : d + 1]);
	if (!ok)
		return shape_error(err, "cross_entropy", &sp, &st, ce_need);
	struct ce_layout l;
	if (pred->ndim == 3) {
		l = (struct ce_layout){pred->shape[0] * pred->shape[1], pred->shape[2], 1,
				       pred->shape[1]};
	} else {
		l = (struct ce_layout){pred->shape[0], pred->shape[1], 1, 0};
		for (int d = 2; d < pred->ndim; d++)
			l.inner *= pred->shape[d];
	}
	const int32_t *lengths = l.steps ? loss_lengths(pred, target) : NULL;
	zero_grad(d_pred);
	double eps = c->smoothing, sum = 0, count = 0, correct = 0;
	double nc = (double)l.classes;
	for (int64_t o = 0; o < l.outer; o++) {
		if (lengths && o % l.steps >= valid_steps(lengths, l.steps, o / l.steps))
			continue;  /* padded step */
		for (int64_t k = 0; k < l.inner; k++) {
			float tv = target->data[o * l.inner + k];
			if (tv == (float)c->ignore_index)
				continue;
			if (!(tv >= 0.0f && tv < (float)l.classes) || (float)(int64_t)tv != tv)
				return px_error_set(err, PX_ERR_INVALID,
						    "cross_entropy: target %g is not a class in "
						    "0..%lld (nor ignore_index %lld)", tv,
						    (long long)l.classes - 1,
						    (long long)c->ignore_index);
			int64_t y = (int64_t)tv;
			const float *z = pred->data + o * l.classes * l.inner + k;
			int64_t arg = 0;
			float m = z[0];
			double zsum = 0;
			for (int64_t j = 0; j < l.classes; j++) {
				float v = z[j * l.inner];
				zsum += v;
				if (v > m) {
					m = v;
					arg = j;
				}
			}
			double se = 0;
			for (int64_t j = 0; j < l.classes; j++)
				se += exp((double)z[j * l.inner] - m);
			double lse = m + log(se);
			sum += (1.0 - eps) * (lse - z[y * l.inner]) + eps / nc * (nc * lse - zsum);
			count += 1;
			correct += arg == y;
			if (!d_pred)
				continue;
			float *d = d_pred->data + o * l.classes * l.inner + k;
			for (int64_t j = 0; j < l.classes; j++) {
				double p = exp((double)z[j * l.inner] - lse);
				double g = p - eps / nc - (j == y ? 1.0 - eps : 0.0);
				d[j * l.inner] = (float)(scale * g);
			}
		}
	}
	res->sum = sum;
	res->count = count;
	res->correct = correct;
	return 0;
}

static const struct px_loss_ops ce_ops = {
	.struct_size = sizeof(struct px_loss_ops),
	.kind = "cross_entropy",
	.doc = "softmax cross-entropy from logits against class indices (PyTorch's, mean over "
	       "counted items)",
	.schema = ce_schema,
	.create = ce_create,
	.forward = ce_forward,
	.destroy = free,
};

/* ------------------------------------------------------------------ bce */
/* loss = (1-y) x + w (log(1 + exp(-|x|)) + max(-x, 0)), w = 1 + (pos_weight-1) y
 * (= max(x,0) - x y + log(1 + exp(-|x|)) for pos_weight 1); d = (1-y) - w sigmoid(-x) */
struct bce {
	double pos_weight;
};

static const struct px_param_spec bce_schema[] = {
	{"pos_weight", PX_T_FLOAT, "1", 0, PX_UNBOUNDED, NULL,
	 "weight of the positive term (PyTorch BCEWithLogitsLoss pos_weight)"},
	{NULL, 0, NULL, 0, 0, NULL, NULL},
};

static int bce_create(const struct px_config *cfg, const struct px_shape *pred,
		      const struct px_shape *target, void **self, struct px_error *err)
{
	if (!shapes_match(pred, target))
		return shape_error(err, "bce", pred, target, "they must be the same");
	struct bce *c = calloc(1, sizeof *c);
	if (!c)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	c->pos_weight = px_config_float(cfg, "pos_weight");
	*self = c;
	return 0;
}

static int bce_forward(void *self, const struct px_tensor *pred, const struct px_tensor *target,
		       struct px_loss_result *res, struct px_tensor *d_pred, float scale,
		       struct px_error *err)
{
	struct bce *c = self;
	if (!same_shape(pred, target))
		return tensor_shape_error(err, "bce", pred, target, "they must be the same");
	zero_grad(d_pred);
	int64_t batch = pred->shape[0];
	int64_t per_ex = batch ? px_tensor_numel(pred) / batch : 0;
	const int32_t *lengths = loss_lengths(pred, target);
	int64_t steps = pred->ndim >= 2 ? pred->shape[1] : 1;
	int64_t per_step = steps ? per_ex / steps : 0;
	double sum = 0, count = 0, correct = 0;
	bool binary = true;
	for (int64_t b = 0; b < batch; b++) {
		int64_t off = b * per_ex;
		int64_t n = lengths ? valid_steps(lengths, steps, b) * per_step : per_ex;
		for (int64_t i = off; i < off + n; i++) {
			double x = pred->data[i], y = target->data[i];
			double w = 1.0 + (c->pos_weight - 1.0) * y;
			double e = exp(-fabs(x));
			sum += (1.0 - y) * x + w * (log1p(e) + fmax(-x, 0.0));
			count += 1;
			binary = binary && (y == 0.0 || y == 1.0);
			correct += (x > 0.0) == (y == 1.0);
			if (d_pred) {
				double sig_neg = x >= 0 ? e / (1.0 + e) : 1.0 / (1.0 + e);  /* sigmoid(-x) */
				d_pred->data[i] = (float)(scale * ((1.0 - y) - w * sig_neg));
			}
		}
	}
	res->sum = sum;
	res->count = count;
	res->correct = binary ? correct : -1;  /* accuracy only for 0/1 targets */
	return 0;
}

static const struct px_loss_ops bce_ops = {
	.struct_size = sizeof(struct px_loss_ops),
	.kind = "bce",
	.doc = "binary cross-entropy from logits, mean over elements (PyTorch BCEWithLogitsLoss)",
	.schema = bce_schema,
	.create = bce_create,
	.forward = bce_forward,
	.destroy = free,
};

const struct px_loss_ops *const px_builtin_losses[] = {&mse_ops, &ce_ops, &bce_ops, NULL};
