/* Built-in optimizers (sgd, adam, adamw, rmsprop, adagrad) with PyTorch's update rules and
 * defaults, gradient clipping, and learning-rate schedules.
 *
 * State lives in named slots, one float per parameter element each, so checkpoints can save
 * and restore it. Every slot of a kind is allocated (zero-filled) whatever the options, so a
 * checkpoint always finds them. The update arithmetic is float32 in PyTorch's order, with the
 * scalar factors (bias corrections, step sizes) in double as Python computes them. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define MAX_SLOTS 3

enum optim_kind { K_SGD, K_ADAM, K_ADAMW, K_RMSPROP, K_ADAGRAD };

struct optim {
	enum optim_kind kind;
	int n;
	struct px_param **params;   /* copy of the caller's list; the params are borrowed */
	int n_slots;
	float **slot;               /* [n_slots * n]: slot s of param p at slot[s * n + p] */
	float *state;               /* the storage behind slot[] */
	/* hyperparameters (lr comes with each step) */
	float momentum, dampening, weight_decay, eps, alpha, lr_decay;
	double beta1, beta2;
	bool nesterov, amsgrad, centered;
};

static void optim_destroy(void *self)
{
	struct optim *o = self;
	if (!o)
		return;
	free(o->params);
	free(o->slot);
	free(o->state);
	free(o);
}

static int count_slots(const char *const *names)
{
	int n = 0;
	while (names[n])
		n++;
	return n;
}

/* The common part of create: copy the parameter list and allocate the slots. */
static int optim_new(enum optim_kind kind, const char *const *slot_names,
		     struct px_param *const *params, int n_params, struct optim **out,
		     struct px_error *err)
{
	struct optim *o = calloc(1, sizeof *o);
	if (!o)
		goto nomem;
	o->kind = kind;
	o->n = n_params;
	o->n_slots = count_slots(slot_names);
	o->params = calloc((size_t)(n_params ? n_params : 1), sizeof *o->params);
	o->slot = calloc((size_t)(o->n_slots * n_params + 1), sizeof *o->slot);
	if (!o->params || !o->slot)
		goto nomem;
	size_t total = 0;
	for (int p = 0; p < n_params; p++) {
		o->params[p] = params[p];
		total += (size_t)px_tensor_numel(params[p]->value);
	}
	o->state = calloc(total * (size_t)o->n_slots + 1, sizeof(float));
	if (!o->state)
		goto nomem;
	float *at = o->state;
	for (int s = 0; s < o->n_slots; s++)
		for (int p = 0; p < n_params; p++) {
			o->slot[s * n_params + p] = at;
			at += px_tensor_numel(params[p]->value);
		}
	*out = o;
	return 0;
nomem:
	optim_destroy(o);
	return px_error_set(err, PX_ERR_NOMEM, "optimizer: out of memory for its state");
}

static float *optim_slot(void *self, int param, int slot)
{
	struct optim *o = self;
	if (param < 0 || param >= o->n || slot < 0 || slot >= o->n_slots)
		return NULL;
	return o->slot[slot * o->n + param];
}

static float *slot_of(struct optim *o, int slot, int param)
{
	return o->slot[slot * o->n + param];
}

/* ------------------------------------------------------------------ sgd */
static const struct px_param_spec sgd_schema[] = {
	{"lr", PX_T_FLOAT, "0.01", 0, PX_UNBOUNDED, NULL, "learning rate"},
	{"momentum", PX_T_FLOAT, "0", 0, PX_UNBOUNDED, NULL, "momentum factor"},
	{"dampening", PX_T_FLOAT, "0", 0, 1, NULL, "dampening of the momentum"},
	{"nesterov", PX_T_BOOL, "false", 0, 0, NULL, "Nesterov momentum (needs momentum > 0, dampening 0)"},
	{"weight_decay", PX_T_FLOAT, "0", 0, PX_UNBOUNDED, NULL, "L2 penalty added to the gradient"},
	{NULL, 0, NULL, 0, 0, NULL, NULL},
};
static const char *const sgd_slots[] = {"momentum_buffer", NULL};

static int sgd_create(const struct px_config *cfg, struct px_param *const *params, int n_params,
		      void **self, struct px_error *err)
{
	struct optim *o;
	bool nesterov = px_config_bool(cfg, "nesterov");
	double momentum = px_config_float(cfg, "momentum");
	double dampening = px_config_float(cfg, "dampening");
	if (nesterov && (momentum <= 0 || dampening != 0))
		return px_config_error(cfg, err, PX_ERR_INVALID, "nesterov",
				       "nesterov momentum requires a momentum and zero dampening");
	int rc = optim_new(K_SGD, sgd_slots, params, n_params, &o, err);
	if (rc)
		return rc;
	o->momentum = (float)momentum;
	o->dampening = (float)dampening;
	o->nesterov = nesterov;
	o->weight_decay = (float)px_config_float(cfg, "weight_decay");
	*self = o;
	return 0;
}

/* g = grad + wd p;  b = g (first step) or mu b + (1 - dampening) g;
 * d = g + mu b (nesterov) or b;  p -= lr d */
static void sgd_step(void *self, float lr, int64_t step)
{
	struct optim *o = self;
	for (int p = 0; p < o->n; p++) {
		struct px_param *prm = o->params[p];
		if (!prm->grad)
			continue;
		float *w = prm->value->data;
		const float *grad = prm->grad->data;
		float *buf = slot_of(o, 0, p);
		int64_t n = px_tensor_numel(prm->value);
		if (o->weight_decay == 0.0f && o->momentum == 0.0f) {
			px_axpy(n, -lr, grad, w);   /* plain SGD: w += -lr g, a loop without branches */
			continue;
		}
		for (int64_t i = 0; i < n; i++) {
			float g = grad[i];
			if (o->weight_decay != 0.0f)
				g = g + o->weight_decay * w[i];
			if (o->momentum != 0.0f) {
				if (step <= 1)
					buf[i] = g;
				else
					buf[i] = buf[i] * o->momentum + (1.0f - o->dampening) * g;
				g = o->nesterov ? g + o->momentum * buf[i] : buf[i];
			}
			w[i] = w[i] + -lr * g;
		}
	}
}

/* ------------------------------------------------------------------ adam, adamw */
static const struct px_param_spec adam_schema[] = {
	{"lr", PX_T_FLOAT, "1e-3", 0, PX_UNBOUNDED, NULL, "learning rate"},
	{"betas", PX_T_FLOATS, "[0.9, 0.999]", 0, 1, NULL,
	 "decay rates of the gradient's running mean and of its square, each in [0, 1)"},
	{"eps", PX_T_FLOAT, "1e-8", 0, PX_UNBOUNDED, NULL, "added to the denominator"},
	{"weight_decay", PX_T_FLOAT, "0", 0, PX_UNBOUNDED, NULL, "L2 penalty added to the gradient"},
	{"amsgrad", PX_T_BOOL, "false", 0, 0, NULL, "use the maximum of past squared averages (AMSGrad)"},
	{NULL, 0, NULL, 0, 0, NULL, NULL},
};
static const struct px_param_spec adamw_schema[] = {
	{"lr", PX_T_FLOAT, "1e-3", 0, PX_UNBOUNDED, NULL, "learning rate"},
	{"betas", PX_T_FLOATS, "[0.9, 0.999]", 0, 1, NULL,
	 "decay rates of the gradient's running mean and of its square, each in [0, 1)"},
	{"eps", PX_T_FLOAT, "1e-8", 0, PX_UNBOUNDED, NULL, "added to the denominator"},
	{"weight_decay", PX_T_FLOAT, "1e-2", 0, PX_UNBOUNDED, NULL,
	 "decoupled weight decay: p *= 1 - lr * weight_decay each step"},
	{"amsgrad", PX_T_BOOL, "false", 0, 0, NULL, "use the maximum of past squared averages (AMSGrad)"},
	{NULL, 0, NULL, 0, 0, NULL, NULL},
};
static const char *const adam_slots[] = {"exp_avg", "exp_avg_sq", "max_exp_avg_sq", NULL};

static int adam_create_kind(enum optim_kind kind, const struct px_config *cfg,
			    struct px_param *const *params, int n_params, void **self,
			    struct px_error *err)
{
	const double *betas;
	int nb = px_config_floats(cfg, "betas", &betas);
	if (nb != 2 || betas[0] >= 1.0 || betas[1] >= 1.0)
		return px_config_error(cfg, err, PX_ERR_INVALID, "betas",
				       "betas must be two numbers in [0, 1)");
	struct optim *o;
	int rc = optim_new(kind, adam_slots, params, n_params, &o, err);
	if (rc)
		return rc;
	o->beta1 = betas[0];
	o->beta2 = betas[1];
	o->eps = (float)px_config_float(cfg, "eps");
	o->weight_decay = (float)px_config_float(cfg, "weight_decay");
	o->amsgrad = px_config_bool(cfg, "amsgrad");
	*self = o;
	return 0;
}

static int adam_create(const struct px_config *cfg, struct px_param *const *params,
		       int n_params, void **self, struct px_error *err)
{
	return adam_create_kind(K_ADAM, cfg, params, n_params, self, err);
}

static int adamw_create(const struct px_config *cfg, struct px_param *const *params,
			int n_params, void **self, struct px_error *err)
{
	return adam_create_kind(K_ADAMW, cfg, params, n_params, self, err);
}

/* adamw: p *= 1 - lr wd;  adam: g = grad + wd p;
 * m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  v_max = max(v_max, v) (amsgrad);
 * p -= lr/(1-b1^t) * m / (sqrt(v or v_max)/sqrt(1-b2^t) + eps) */
static void adam_step(void *self, float lr, int64_t step)
{
	struct optim *o = self;
	double t = (double)(step < 1 ? 1 : step);
	double bc1 = 1.0 - pow(o->beta1, t);
	double bc2_sqrt = sqrt(1.0 - pow(o->beta2, t));
	float step_size = (float)((double)lr / bc1);
	float b1 = (float)o->beta1, b2 = (float)o->beta2;
	float a1 = (float)(1.0 - o->beta1), a2 = (float)(1.0 - o->beta2);
	float bc2s = (float)bc2_sqrt;
	bool decoupled = o->kind == K_ADAMW;
	float decay = (float)(1.0 - (double)lr * o->weight_decay);
	for (int p = 0; p < o->n; p++) {
		struct px_param *prm = o->params[p];
		if (!prm->grad)
			continue;
		float *w = prm->value->data;
		const float *grad = prm->grad->data;
		float *m = slot_of(o, 0, p), *v = slot_of(o, 1, p), *vmax = slot_of(o, 2, p);
		int64_t n = px_tensor_numel(prm->value);
		for (int64_t i = 0; i < n; i++) {
			float g = grad[i];
			if (decoupled)
				w[i] = w[i] * decay;
			else if (o->weight_decay != 0.0f)
				g = g + o->weight_decay * w[i];
			m[i] = m[i] * b1 + a1 * g;
			v[i] = v[i] * b2 + a2 * g * g;
			float sq = v[i];
			if (o->amsgrad) {
				vmax[i] = vmax[i] > v[i] ? vmax[i] : v[i];
				sq = vmax[i];
			}
			float denom = sqrtf(sq) / bc2s + o->eps;
			w[i] = w[i] + -step_size * (m[i] / denom);
		}
	}
}

/* ------------------------------------------------------------------ rmsprop */
static const struct px_param_spec rmsprop_schema[] = {
	{"lr", PX_T_FLOAT, "1e-2", 0, PX_UNBOUNDED, NULL, "learning rate"},
	{"alpha", PX_T_FLOAT, "0.99", 0, 1, NULL, "decay rate of the squared-gradient average"},
	{"eps", PX_T_FLOAT, "1e-8", 0, PX_UNBOUNDED, NULL, "added to the denominator"},
	{"weight_decay", PX_T_FLOAT, "0", 0, PX_UNBOUNDED, NULL, "L2 penalty added to the gradient"},
	{"momentum", PX_T_FLOAT, "0", 0, PX_UNBOUNDED, NULL, "momentum factor"},
	{"centered", PX_T_BOOL, "false", 0, 0, NULL,
	 "normalise by the gradient's estimated variance instead of its second moment"},
	{NULL, 0, NULL, 0, 0, NULL, NULL},
};
static const char *const rmsprop_slots[] = {"square_avg", "momentum_buffer", "grad_avg", NULL};

static int rmsprop_create(const struct px_config *cfg, struct px_param *const *params,
			  int n_params, void **self, struct px_error *err)
{
	struct optim *o;
	int rc = optim_new(K_RMSPROP, rmsprop_slots, params, n_params, &o, err);
	if (rc)
		return rc;
	o->alpha = (float)px_config_float(cfg, "alpha");
	o->eps = (float)px_config_float(cfg, "eps");
	o->weight_decay = (float)px_config_float(cfg, "weight_decay");
	o->momentum = (float)px_config_float(cfg, "momentum");
	o->centered = px_config_bool(cfg, "centered");
	*self = o;
	return 0;
}

/* g = grad + wd p;  s = a s + (1-a) g^2;  c = a c + (1-a) g (centered);
 * avg = sqrt(s - c^2 or s) + eps;  b = mu b + g/avg, p -= lr b  (or p -= lr g/avg) */
static void rmsprop_step(void *self, float lr, int64_t step)
{
	struct optim *o = self;
	(void)step;
	float a1 = 1.0f - o->alpha;
	for (int p = 0; p < o->n; p++) {
		struct px_param *prm = o->params[p];
		if (!prm->grad)
			continue;
		float *w = prm->value->data;
		const float *grad = prm->grad->data;
		float *sq = slot_of(o, 0, p), *buf = slot_of(o, 1, p), *ga = slot_of(o, 2, p);
		int64_t n = px_tensor_numel(prm->value);
		for (int64_t i = 0; i < n; i++) {
			float g = grad[i];
			if (o->weight_decay != 0.0f)
				g = g + o->weight_decay * w[i];
			sq[i] = sq[i] * o->alpha + a1 * g * g;
			float avg;
			if (o->centered) {
				ga[i] = ga[i] * o->alpha + a1 * g;
				avg = sqrtf(sq[i] + -1.0f * ga[i] * ga[i]);
			} else {
				avg = sqrtf(sq[i]);
			}
			avg = avg + o->eps;
			if (o->momentum > 0.0f) {
				buf[i] = buf[i] * o->momentum + g / avg;
				w[i] = w[i] + -lr * buf[i];
			} else {
				w[i] = w[i] + -lr * (g / avg);
			}
		}
	}
}

/* ------------------------------------------------------------------ adagrad */
static const struct px_param_spec adagrad_schema[] = {
	{"lr", PX_T_FLOAT, "1e-2", 0, PX_UNBOUNDED, NULL, "learning rate"},
	{"lr_decay", PX_T_FLOAT, "0", 0, PX_UNBOUNDED, NULL,
	 "the step size is lr / (1 + (step - 1) lr_decay)"},
	{"weight_decay", PX_T_FLOAT, "0", 0, PX_UNBOUNDED, NULL, "L2 penalty added to the gradient"},
	{"initial_accumulator_value", PX_T_FLOAT, "0", 0, PX_UNBOUNDED, NULL,
	 "starting value of the sum of squared gradients"},
	{"eps", PX_T_FLOAT, "1e-10", 0, PX_UNBOUNDED, NULL, "added to the denominator"},
	{NULL, 0, NULL, 0, 0, NULL, NULL},
};
static const char *const adagrad_slots[] = {"sum", NULL};

static int adagrad_create(const struct px_config *cfg, struct px_param *const *params,
			  int n_params, void **self, struct px_error *err)
{
	struct optim *o;
	int rc = optim_new(K_ADAGRAD, adagrad_slots, params, n_params, &o, err);
	if (rc)
		return rc;
	o->lr_decay = (float)px_config_float(cfg, "lr_decay");
	o->weight_decay = (float)px_config_float(cfg, "weight_decay");
	o->eps = (float)px_config_float(cfg, "eps");
	float init = (float)px_config_float(cfg, "initial_accumulator_value");
	for (int p = 0; p < n_params; p++) {
		float *sum = slot_of(o, 0, p);
		for (int64_t i = 0, n = px_tensor_numel(params[p]->value); i < n; i++)
			sum[i] = init;
	}
	*self = o;
	return 0;
}

/* g = grad + wd p;  s += g^2;  p -= lr / (1 + (t-1) lr_decay) * g / (sqrt(s) + eps) */
static void adagrad_step(void *self, float lr, int64_t step)
{
	struct optim *o = self;
	double t = (double)(step < 1 ? 1 : step);
	float clr = (float)((double)lr / (1.0 + (t - 1.0) * (double)o->lr_decay));
	for (int p = 0; p < o->n; p++) {
		struct px_param *prm = o->params[p];
		if (!prm->grad)
			continue;
		float *w = prm->value->data;
		const float *grad = prm->grad->data;
		float *sum = slot_of(o, 0, p);
		int64_t n = px_tensor_numel(prm->value);
		for (int64_t i = 0; i < n; i++) {
			float g = grad[i];
			if (o->weight_decay != 0.0f)
				g = g + o->weight_decay * w[i];
			sum[i] = sum[i] + g * g;
			float std = sqrtf(sum[i]) + o->eps;
			w[i] = w[i] + -clr * (g / std);
		}
	}
}

/* ------------------------------------------------------------------ tables */
static const struct px_optim_ops sgd_ops = {
	.struct_size = sizeof(struct px_optim_ops),
	.kind = "sgd",
	.doc = "stochastic gradient descent with optional (Nesterov) momentum (torch.optim.SGD)",
	.schema = sgd_schema,
	.slots = sgd_slots,
	.create = sgd_create,
	.step = sgd_step,
	.slot = optim_slot,
	.destroy = optim_destroy,
};

static const struct px_optim_ops adam_ops = {
	.struct_size = sizeof(struct px_optim_ops),
	.kind = "adam",
	.doc = "Adam with L2 weight decay in the gradient (torch.optim.Adam)",
	.schema = adam_schema,
	.slots = adam_slots,
	.create = adam_create,
	.step = adam_step,
	.slot = optim_slot,
	.destroy = optim_destroy,
};

static const struct px_optim_ops adamw_ops = {
	.struct_size = sizeof(struct px_optim_ops),
	.kind = "adamw",
	.doc = "Adam with decoupled weight decay (torch.optim.AdamW)",
	.schema = adamw_schema,
	.slots = adam_slots,
	.create = adamw_create,
	.step = adam_step,
	.slot = optim_slot,
	.destroy = optim_destroy,
};

static const struct px_optim_ops rmsprop_ops = {
	.struct_size = sizeof(struct px_optim_ops),
	.kind = "rmsprop",
	.doc = "RMSprop, optionally centered and with momentum (torch.optim.RMSprop)",
	.schema = rmsprop_schema,
	.slots = rmsprop_slots,
	.create = rmsprop_create,
	.step = rmsprop_step,
	.slot = optim_slot,
	.destroy = optim_destroy,
};

static const struct px_optim_ops adagrad_ops = {
	.struct_size = sizeof(struct px_optim_ops),
	.kind = "adagrad",
	.doc = "Adagrad (torch.optim.Adagrad)",
	.schema = adagrad_schema,
	.slots = adagrad_slots,
	.create = adagrad_create,
	.step = adagrad_step,
	.slot = optim_slot,
	.destroy = optim_destroy,
};

const struct px_optim_ops *const px_builtin_optims[] = {
	&sgd_ops, &adam_ops, &adamw_ops, &rmsprop_ops, &adagrad_ops, NULL,
};

/* ------------------------------------------------------------------ clipping */
/* norm = sqrt(sum of all g^2) in double; g *= max_norm / (norm + 1e-6) when that is < 1
 * (torch.nn.utils.clip_grad_norm_). A non-finite norm leaves the grads alone. */
double px_clip_grad_norm(struct px_param *const *params, int n, double max_norm)
{
	double ss = 0;
	for (int p = 0; p < n; p++) {
		if (!params[p]->grad)
			continue;
		const float *g = params[p]->grad->data;
		for (int64_t i = 0, m = px_tensor_numel(params[p]->grad); i < m; i++)
			ss += (double)g[i] * g[i];
	}
	double norm = sqrt(ss);
	if (max_norm <= 0 || !isfinite(norm))
		return norm;
	double coef = max_norm / (norm + 1e-6);
	if (coef >= 1.0)
		return norm;
	for (int p = 0; p < n; p++)
		if (params[p]->grad)
			px_scal(px_tensor_numel(params[p]->grad), (float)coef, params[p]->grad->data);
	return norm;
}

/* g = min(max(g, -clip), clip) */
void px_clip_grad_value(struct px_param *const *params, int n, double clip)
{
	float c = (float)clip;
	for (int p = 0; p < n; p++) {
		if (!params[p]->grad)
			continue;
		float *g = params[p]->grad->data;
		for (int64_t i = 0, m = px_tensor_numel(params[p]->grad); i < m; i++)
			g[i] = g[i] > c ? c : (g[i] < -c ? -c : g[i]);
	}
}

/* ------------------------------------------------------------------ schedules */
const struct px_param_spec px_schedule_schema[] = {
	{"kind", PX_T_ENUM, "none", 0, 0, "none|step|exponential|cosine|plateau",
	 "how the learning rate changes once per epoch"},
	{"step_size", PX_T_INT, "10", 1, 1e12, NULL,
	 "step: epochs between decays (StepLR step_size)"},
	{"gamma", PX_T_FLOAT, "0.1", 0, PX_UNBOUNDED, NULL,
	 "step, exponential: factor applied at each decay (StepLR/ExponentialLR gamma)"},
	{"t_max", PX_T_INT, "0", 0, 1e12, NULL,
	 "cosine: epochs from lr to eta_min (CosineAnnealingLR T_max; 0: train.epochs)"},
	{"eta_min", PX_T_FLOAT, "0", 0, PX_UNBOUNDED, NULL, "cosine: the lowest learning rate"},
	{"factor", PX_T_FLOAT, "0.1", 0, 1, NULL,
	 "plateau: lr *= factor when the validation loss stalls (ReduceLROnPlateau factor)"},
	{"patience", PX_T_INT, "10", 0, 1e12, NULL,
	 "plateau: epochs without improvement tolerated before a decay"},
	{"threshold", PX_T_FLOAT, "1e-4", 0, 1, NULL,
	 "plateau: relative improvement that counts (loss < best * (1 - threshold))"},
	{"min_lr", PX_T_FLOAT, "0", 0, PX_UNBOUNDED, NULL, "plateau: the lowest learning rate"},
	{"warmup", PX_T_INT, "0", 0, 1e12, NULL,
	 "linear warmup over this many optimizer steps: lr * step / warmup"},
	{NULL, 0, NULL, 0, 0, NULL, NULL},
};

int px_schedule_init(struct px_schedule *s, const struct px_config *cfg, double base_lr,
		     int64_t epochs, struct px_error *err)
{
	memset(s, 0, sizeof *s);
	snprintf(s->kind, sizeof s->kind, "none");
	s->base_lr = base_lr;
	s->lr = base_lr;
	s->best = INFINITY;
	if (!cfg)
		return 0;
	snprintf(s->kind, sizeof s->kind, "%s", px_config_str(cfg, "kind"));
	s->step_size = px_config_int(cfg, "step_size");
	s->t_max = px_config_int(cfg, "t_max");
	s->patience = px_config_int(cfg, "patience");
	s->threshold = px_config_float(cfg, "threshold");
	s->warmup = px_config_int(cfg, "warmup");
	if (!strcmp(s->kind, "plateau")) {
		s->gamma = px_config_float(cfg, "factor");
		s->eta_min = px_config_float(cfg, "min_lr");
		if (s->gamma >= 1.0)
			return px_config_error(cfg, err, PX_ERR_INVALID, "factor",
					       "factor must be below 1");
	} else {
		s->gamma = px_config_float(cfg, "gamma");
		s->eta_min = px_config_float(cfg, "eta_min");
	}
	if (!strcmp(s->kind, "cosine")) {
		if (s->t_max == 0)
			s->t_max = epochs;
		if (s->t_max < 1)
			return px_config_error(cfg, err, PX_ERR_INVALID, "t_max",
					       "a cosine schedule needs t_max or the number of epochs");
	}
	return 0;
}

/* warmup: lr * step / warmup while step <= warmup */
double px_schedule_lr(const struct px_schedule *s, int64_t step)
{
	if (s->warmup > 0 && step <= s->warmup)
		return s->lr * (double)(step < 0 ? 0 : step) / (double)s->warmup;
	return s->lr;
}

/* The lr of epoch `epoch` + 1, given the one just finished (PyTorch's schedulers after
 * `epoch` calls of scheduler.step()). */
void px_schedule_epoch_end(struct px_schedule *s, int64_t epoch, double val_loss)
{
	const char *k = s->kind;
	if (!strcmp(k, "step")) {
		/* lr = base * gamma^floor(epoch / step_size) */
		s->lr = s->base_lr * pow(s->gamma, (double)(epoch / s->step_size));
	} else if (!strcmp(k, "exponential")) {
		/* lr = base * gamma^epoch */
		s->lr = s->base_lr * pow(s->gamma, (double)epoch);
	} else if (!strcmp(k, "cosine")) {
		/* lr = eta_min + (base - eta_min) (1 + cos(pi epoch / t_max)) / 2 */
		s->lr = s->eta_min + (s->base_lr - s->eta_min) *
			(1.0 + cos(M_PI * (double)epoch / (double)s->t_max)) / 2.0;
	} else if (!strcmp(k, "plateau")) {
		/* better: loss < best (1 - threshold); after more than `patience` epochs that are
		 * not, lr = max(lr * factor, min_lr) */
		if (val_loss < s->best * (1.0 - s->threshold)) {
			s->best = val_loss;
			s->bad_epochs = 0;
		} else {
			s->bad_epochs++;
		}
		if (s->bad_epochs > s->patience) {
			double lr = fmax(s->lr * s->gamma, s->eta_min);
			if (s->lr - lr > 1e-8)
				s->lr = lr;
			s->bad_epochs = 0;
		}
	}
}
