/* The sequence driver shared by the rnn, lstm and gru plugins (see recurrent.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recurrent.h"

enum readout { RO_SEQUENCE, RO_LAST, RO_MEAN, RO_MAX };
enum { IN_X, IN_H0, IN_C0 };
enum { OUT_OUT, OUT_SEQ, OUT_STATE, OUT_CELL };

/* What one layer and direction kept from the last forward (step arena). */
struct lane {
	float *g;     /* [T][B][G*H] activated gates */
	float *gh;    /* [T][B][G*H] gru hidden projections, or NULL */
	float *aux;   /* [T][B][H] lstm tanh(c) / gru r*h, or NULL */
	float *h, *c; /* [T+1][B][H] states; the state before step t is at row block t (forward)
		       * or t+1 (reverse): see state_before() */
};

struct px_rec {
	struct px_rec_cfg cfg;
	int64_t input, hidden, gates, layers, dirs;
	float dropout;
	enum readout readout;
	bool stateful;
	int64_t tbptt;
	int n_state;
	struct px_param **w_ih, **w_hh, **b_ih, **b_hh;  /* [layers*dirs] */
	struct lane *lanes;                               /* [layers*dirs] */
	float **x;      /* [layers]: time-major input of each layer, [T][B][F_l] */
	float **mask;   /* [layers]: dropout mask applied to layer l's output, or NULL */
	float *y;       /* time-major output of the top layer, [T][B][D*H] */
	int32_t *argmax;/* readout max: [B][D*H] */
	int64_t batch, steps;
	const int32_t *len;
	/* stateful: [n_state][layers*dirs][B][H], malloc'ed; carry_batch 0 = nothing carried */
	float *carry;
	int64_t carry_batch, carry_cap;
};

/* ------------------------------------------------------------------ math helpers */

/* tanh(x) as a [13/6] rational function, accurate to a few ulp in float (Eigen's ptanh). */
float px_rec_tanh(float x)
{
	const float lim = 7.90531110763549805f;
	float v = x < -lim ? -lim : (x > lim ? lim : x);
	float x2 = v * v;
	float p = -2.76076847742355e-16f;
	p = p * x2 + 2.00018790482477e-13f;
	p = p * x2 + -8.60467152213735e-11f;
	p = p * x2 + 5.12229709037114e-08f;
	p = p * x2 + 1.48572235717979e-05f;
	p = p * x2 + 6.37261928875436e-04f;
	p = p * x2 + 4.89352455891786e-03f;
	p = p * v;
	float q = 1.19825839466702e-06f;
	q = q * x2 + 1.18534705686654e-04f;
	q = q * x2 + 2.26843463243900e-03f;
	q = q * x2 + 4.89352518554385e-03f;
	return fabsf(x) < 4e-4f ? x : p / q;
}

/* cs[j] += sum over rows of a[rows][n] */
static void colsum_add(const float *a, int64_t rows, int64_t n, float *cs)
{
	for (int64_t r = 0; r < rows; r++)
		for (int64_t j = 0; j < n; j++)
			cs[j] += a[r * n + j];
}

/* [A][Bd][n] -> [Bd][A][n] (add: += instead of =) */
static void transpose01(const float *src, int64_t a, int64_t bd, int64_t n, float *dst, bool add)
{
	for (int64_t i = 0; i < a; i++)
		for (int64_t k = 0; k < bd; k++) {
			const float *s = src + (i * bd + k) * n;
			float *d = dst + (k * a + i) * n;
			if (add)
				for (int64_t j = 0; j < n; j++)
					d[j] += s[j];
			else
				memcpy(d, s, (size_t)n * sizeof(float));
		}
}

static float *arena_floats(struct px_arena *a, int64_t n)
{
	return px_arena_alloc(a, (size_t)(n > 0 ? n : 1) * sizeof(float));
}

static float *arena_zfloats(struct px_arena *a, int64_t n)
{
	return px_arena_zalloc(a, (size_t)(n > 0 ? n : 1) * sizeof(float));
}

/* ------------------------------------------------------------------ create */

static int declare(struct px_build *b, const char *name, int64_t rows, int64_t cols,
		   float bound, struct px_param **out, struct px_error *err)
{
	int64_t shape[2] = {rows, cols};
	*out = px_build_param(b, name, cols ? 2 : 1, shape, err);
	if (!*out)
		return err->code ? err->code : PX_ERR_NOMEM;
	px_init_uniform((*out)->value, b->rng, bound);
	return 0;
}

/* "lstm: h0 must be [B,2,8] (layers*directions, hidden), got [B,3,8]" */
static int check_state_port(struct px_rec *r, struct px_build *b, int port, const char *name,
			    struct px_error *err)
{
	if (b->n_in <= port || b->in[port].ndim == 0)
		return 0;
	const struct px_shape *s = &b->in[port];
	struct px_shape want = {3, {-1, r->layers * r->dirs, r->hidden}};
	if (s->ndim == 3 && s->dim[1] == want.dim[1] && s->dim[2] == want.dim[2])
		return 1;
	char a[64], w[64];
	return px_build_error(b, err, PX_ERR_SHAPE,
			      "%s must be %s (batch, layers*directions, hidden), got %s", name,
			      px_shape_str(&want, w, sizeof w), px_shape_str(s, a, sizeof a));
}

int px_rec_create(const struct px_rec_kind *kind, struct px_build *b, void **self,
		  struct px_shape *out, struct px_error *err)
{
	const struct px_config *opt = b->cfg;
	const struct px_shape *x = &b->in[IN_X];
	char buf[64];
	int rc;
	*self = NULL;
	if (x->ndim != 3)
		return px_build_error(b, err, PX_ERR_SHAPE, "%s expects a sequence [B,T,F], got %s",
				      kind->name, px_shape_str(x, buf, sizeof buf));
	struct px_rec *r = calloc(1, sizeof *r);
	if (!r)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	r->cfg.kind = kind;
	r->cfg.hidden = r->hidden = px_config_int(opt, "hidden");
	if (kind->configure)
		kind->configure(opt, &r->cfg);
	r->input = x->dim[2];
	r->gates = kind->gates;
	r->n_state = kind->n_state;
	r->layers = px_config_int(opt, "layers");
	r->dirs = px_config_bool(opt, "bidirectional") ? 2 : 1;
	r->dropout = (float)px_config_float(opt, "dropout");
	const char *ro = px_config_str(opt, "readout");
	r->readout = !strcmp(ro, "last") ? RO_LAST : !strcmp(ro, "mean") ? RO_MEAN
		   : !strcmp(ro, "max") ? RO_MAX : RO_SEQUENCE;
	r->stateful = px_config_bool(opt, "stateful");
	r->tbptt = px_config_int(opt, "tbptt");
	int has_h0 = check_state_port(r, b, IN_H0, "h0", err);
	int has_c0 = kind->n_state > 1 ? check_state_port(r, b, IN_C0, "c0", err) : 0;
	if (has_h0 < 0 || has_c0 < 0) {
		rc = has_h0 < 0 ? has_h0 : has_c0;
		goto fail;
	}
	if (r->stateful && (has_h0 || has_c0)) {
		rc = px_build_error(b, err, PX_ERR_INVALID,
				    "stateful carries its own initial state: connect no %s input",
				    has_h0 ? "h0" : "c0");
		goto fail;
	}
	if (r->input < 1) {
		rc = px_build_error(b, err, PX_ERR_SHAPE, "input has no features: %s",
				    px_shape_str(x, buf, sizeof buf));
		goto fail;
	}

	int64_t nl = r->layers * r->dirs, gh = r->gates * r->hidden;
	r->w_ih = calloc((size_t)nl, sizeof *r->w_ih);
	r->w_hh = calloc((size_t)nl, sizeof *r->w_hh);
	r->b_ih = calloc((size_t)nl, sizeof *r->b_ih);
	r->b_hh = calloc((size_t)nl, sizeof *r->b_hh);
	r->lanes = calloc((size_t)nl, sizeof *r->lanes);
	r->x = calloc((size_t)r->layers, sizeof *r->x);
	r->mask = calloc((size_t)r->layers, sizeof *r->mask);
	if (!r->w_ih || !r->w_hh || !r->b_ih || !r->b_hh || !r->lanes || !r->x || !r->mask) {
		rc = px_error_set(err, PX_ERR_NOMEM, "out of memory");
		goto fail;
	}
	/* PyTorch's names, order and init: U(-1/sqrt(H), 1/sqrt(H)) for every tensor */
	float bound = 1.0f / sqrtf((float)r->hidden);
	for (int64_t l = 0; l < r->layers; l++) {
		int64_t in = l == 0 ? r->input : r->dirs * r->hidden;
		for (int64_t d = 0; d < r->dirs; d++) {
			int64_t ld = l * r->dirs + d;
			const char *sfx = d ? "_reverse" : "";
			char nm[64];
			snprintf(nm, sizeof nm, "weight_ih_l%lld%s", (long long)l, sfx);
			if ((rc = declare(b, nm, gh, in, bound, &r->w_ih[ld], err)))
				goto fail;
			snprintf(nm, sizeof nm, "weight_hh_l%lld%s", (long long)l, sfx);
			if ((rc = declare(b, nm, gh, r->hidden, bound, &r->w_hh[ld], err)))
				goto fail;
			snprintf(nm, sizeof nm, "bias_ih_l%lld%s", (long long)l, sfx);
			if ((rc = declare(b, nm, gh, 0, bound, &r->b_ih[ld], err)))
				goto fail;
			snprintf(nm, sizeof nm, "bias_hh_l%lld%s", (long long)l, sfx);
			if ((rc = declare(b, nm, gh, 0, bound, &r->b_hh[ld], err)))
				goto fail;
			if (kind->init_bias)
				kind->init_bias(opt, r->hidden, r->b_ih[ld]->value->data);
		}
	}

	int64_t dh = r->dirs * r->hidden;
	out[OUT_OUT] = r->readout == RO_SEQUENCE ? (struct px_shape){3, {-1, x->dim[1], dh}}
						 : (struct px_shape){2, {-1, dh}};
	out[OUT_SEQ] = (struct px_shape){3, {-1, x->dim[1], dh}};
	out[OUT_STATE] = (struct px_shape){3, {-1, nl, r->hidden}};
	if (r->n_state > 1)
		out[OUT_CELL] = out[OUT_STATE];
	*self = r;
	return 0;
fail:
	px_rec_destroy(r);
	return rc;
}

void px_rec_destroy(void *self)
{
	struct px_rec *r = self;
	if (!r)
		return;
	free(r->w_ih);
	free(r->w_hh);
	free(r->b_ih);
	free(r->b_hh);
	free(r->lanes);
	free(r->x);
	free(r->mask);
	free(r->carry);
	free(r);
}

void px_rec_reset_state(void *self)
{
	struct px_rec *r = self;
	r->carry_batch = 0;
}

/* ------------------------------------------------------------------ forward */

static int64_t state_before(const struct px_rec *r, int64_t d, int64_t t)
{
	(void)r;
	return d ? t + 1 : t;
}

static int64_t state_after(const struct px_rec *r, int64_t d, int64_t t)
{
	(void)r;
	return d ? t : t + 1;
}

/* Where a lane's initial state comes from: the h0/c0 input [B, L*D, H], the stateful carry,
 * or zeros. Copies it into dst [B][H]. */
static void initial_state(const struct px_rec *r, const struct px_tensor *in, int s, int64_t ld,
			  float *dst)
{
	int64_t B = r->batch, H = r->hidden, nl = r->layers * r->dirs;
	if (in) {
		for (int64_t b = 0; b < B; b++)
			memcpy(dst + b * H, in->data + (b * nl + ld) * H, (size_t)H * sizeof(float));
	} else if (r->stateful && r->carry_batch == B) {
		memcpy(dst, r->carry + ((int64_t)s * nl + ld) * B * H, (size_t)(B * H) * sizeof(float));
	} else {
		memset(dst, 0, (size_t)(B * H) * sizeof(float));
	}
}

/* Runs one layer and direction over all steps: X [T][B][F] -> Y[:, :, d*H:(d+1)*H]. */
static int lane_forward(struct px_rec *r, int64_t l, int64_t d, const float *X, int64_t F,
			float *Y, const struct px_tensor *h0, const struct px_tensor *c0,
			struct px_arena *a)
{
	const struct px_rec_kind *k = r->cfg.kind;
	int64_t B = r->batch, T = r->steps, H = r->hidden, GH = r->gates * H, ld = l * r->dirs + d;
	int64_t BH = B * H, DH = r->dirs * H;
	struct lane *ln = &r->lanes[ld];
	ln->g = arena_floats(a, T * B * GH);
	ln->gh = k->uses_gh(&r->cfg) ? arena_floats(a, T * B * GH) : NULL;
	ln->aux = k->uses_aux(&r->cfg) ? arena_floats(a, T * BH) : NULL;
	ln->h = arena_floats(a, (T + 1) * BH);
	ln->c = r->n_state > 1 ? arena_floats(a, (T + 1) * BH) : NULL;
	float *bias = arena_floats(a, GH);
	if (!ln->g || (k->uses_gh(&r->cfg) && !ln->gh) || (k->uses_aux(&r->cfg) && !ln->aux) ||
	    !ln->h || (r->n_state > 1 && !ln->c) || !bias)
		return PX_ERR_NOMEM;

	/* g = X W_ih^T + b_ih + b_hh[0:folded], all steps in one GEMM */
	const float *b_ih = r->b_ih[ld]->value->data, *b_hh = r->b_hh[ld]->value->data;
	int64_t fold = k->folded_hh_bias(&r->cfg);
	for (int64_t j = 0; j < GH; j++)
		bias[j] = b_ih[j] + (j < fold ? b_hh[j] : 0.0f);
	for (int64_t row = 0; row < T * B; row++)
		memcpy(ln->g + row * GH, bias, (size_t)GH * sizeof(float));
	px_gemm(false, true, T * B, GH, F, 1.0f, X, F, r->w_ih[ld]->value->data, F, 1.0f, ln->g, GH);

	int64_t first = d ? T : 0;  /* row block of the initial state */
	initial_state(r, h0, 0, ld, ln->h + first * BH);
	if (ln->c)
		initial_state(r, c0, 1, ld, ln->c + first * BH);
	struct px_rec_step s = {
		.cfg = &r->cfg, .batch = B, .len = r->len, .w_hh = r->w_hh[ld]->value->data,
		.b_hh = b_hh, .ldo = DH,
	};
	for (int64_t i = 0; i < T; i++) {
		int64_t t = d ? T - 1 - i : i;
		s.t = t;
		s.g = ln->g + t * B * GH;
		s.gh = ln->gh ? ln->gh + t * B * GH : NULL;
		s.aux = ln->aux ? ln->aux + t * BH : NULL;
		s.h_prev = ln->h + state_before(r, d, t) * BH;
		s.h = ln->h + state_after(r, d, t) * BH;
		if (ln->c) {
			s.c_prev = ln->c + state_before(r, d, t) * BH;
			s.c = ln->c + state_after(r, d, t) * BH;
		}
		s.out = Y + t * B * DH + d * H;
		k->step(&s);
	}
	return 0;
}

/* The final state of lane ld (after its last step): [B][H]. */
static const float *final_state(const struct px_rec *r, int64_t ld, int s)
{
	const struct lane *ln = &r->lanes[ld];
	int64_t d = ld % r->dirs, row = d ? 0 : r->steps;
	return (s ? ln->c : ln->h) + row * r->batch * r->hidden;
}

/* out = readout of the top layer's output Y [T][B][D*H] (not RO_SEQUENCE) */
static void readout_forward(struct px_rec *r, float *out)
{
	int64_t B = r->batch, T = r->steps, H = r->hidden, DH = r->dirs * H;
	const float *Y = r->y;
	memset(out, 0, (size_t)(B * DH) * sizeof(float));
	for (int64_t b = 0; b < B; b++) {
		int64_t n = r->len ? r->len[b] : T;
		float *o = out + b * DH;
		if (n == 0)
			continue;
		switch (r->readout) {
		case RO_LAST:  /* forward state at the last valid step, backward state at step 0 */
			memcpy(o, Y + ((n - 1) * B + b) * DH, (size_t)H * sizeof(float));
			if (r->dirs > 1)
				memcpy(o + H, Y + b * DH + H, (size_t)H * sizeof(float));
			break;
		case RO_MEAN:  /* mean over valid steps */
			for (int64_t t = 0; t < n; t++)
				for (int64_t j = 0; j < DH; j++)
					o[j] += Y[(t * B + b) * DH + j];
			for (int64_t j = 0; j < DH; j++)
				o[j] /= (float)n;
			break;
		case RO_MAX: {  /* max over valid steps, argmax kept for backward */
			int32_t *am = r->argmax + b * DH;
			for (int64_t j = 0; j < DH; j++) {
				o[j] = Y[b * DH + j];
				am[j] = 0;
			}
			for (int64_t t = 1; t < n; t++)
				for (int64_t j = 0; j < DH; j++) {
					float v = Y[(t * B + b) * DH + j];
					if (v > o[j]) {
						o[j] = v;
						am[j] = (int32_t)t;
					}
				}
			break;
		}
		case RO_SEQUENCE:
			break;
		}
	}
}

int px_rec_forward(void *self, struct px_fwd *f, struct px_error *err)
{
	struct px_rec *r = self;
	const struct px_rec_kind *k = r->cfg.kind;
	const struct px_tensor *x = f->in[IN_X];
	const struct px_tensor *h0 = f->n_in > IN_H0 ? f->in[IN_H0] : NULL;
	const struct px_tensor *c0 = r->n_state > 1 && f->n_in > IN_C0 ? f->in[IN_C0] : NULL;
	struct px_arena *a = f->arena;
	int64_t H = r->hidden, nl = r->layers * r->dirs, DH = r->dirs * H;
	if (x->ndim != 3 || x->shape[2] != r->input)
		return px_error_set(err, PX_ERR_SHAPE, "%s expects a sequence [B,T,%lld], got %d dims "
				    "with %lld features", k->name, (long long)r->input, x->ndim,
				    (long long)(x->ndim > 2 ? x->shape[2] : 0));
	int64_t B = x->shape[0], T = x->shape[1];
	for (int s = 0; s < 2; s++) {
		const struct px_tensor *st = s ? c0 : h0;
		if (st && (st->ndim != 3 || st->shape[0] != B || st->shape[1] != nl ||
			   st->shape[2] != H))
			return px_error_set(err, PX_ERR_SHAPE,
					    "%s: %s must be [%lld,%lld,%lld], got %lld elements in %d dims",
					    k->name, s ? "c0" : "h0", (long long)B, (long long)nl,
					    (long long)H, (long long)px_tensor_numel(st), st->ndim);
	}
	for (int64_t b = 0; x->lengths && b < B; b++)
		if (x->lengths[b] < 0 || x->lengths[b] > T)
			return px_error_set(err, PX_ERR_SHAPE, "%s: example %lld has length %d, "
					    "outside [0, %lld]", k->name, (long long)b,
					    x->lengths[b], (long long)T);
	r->batch = B;
	r->steps = T;
	r->len = x->lengths;
	if (r->stateful && r->carry_batch != B)
		r->carry_batch = 0;  /* a new batch size starts a new stream */

	r->x[0] = arena_floats(a, T * B * r->input);
	if (!r->x[0])
		goto nomem;
	transpose01(x->data, B, T, r->input, r->x[0], false);
	for (int64_t l = 0; l < r->layers; l++) {
		int64_t F = l == 0 ? r->input : DH;
		float *Y = arena_floats(a, T * B * DH);
		if (!Y)
			goto nomem;
		for (int64_t d = 0; d < r->dirs; d++)
			if (lane_forward(r, l, d, r->x[l], F, Y, h0, c0, a))
				goto nomem;
		r->mask[l] = NULL;
		if (l == r->layers - 1) {
			r->y = Y;
			break;
		}
		if (f->train && r->dropout > 0) {  /* inverted dropout: y * mask, mask in {0, 1/(1-p)} */
			float *m = arena_floats(a, T * B * DH);
			if (!m)
				goto nomem;
			float keep = r->dropout < 1 ? 1.0f / (1.0f - r->dropout) : 0.0f;
			for (int64_t i = 0; i < T * B * DH; i++) {
				m[i] = px_rng_uniform(f->rng) < r->dropout ? 0.0f : keep;
				Y[i] *= m[i];
			}
			r->mask[l] = m;
		}
		r->x[l + 1] = Y;
	}

	struct px_tensor *seq = px_tensor_new3(a, B, T, DH);
	struct px_tensor *state = px_tensor_new3(a, B, nl, H);
	struct px_tensor *cell = r->n_state > 1 ? px_tensor_new3(a, B, nl, H) : NULL;
	if (!seq || !state || (r->n_state > 1 && !cell))
		goto nomem;
	seq->lengths = x->lengths;
	transpose01(r->y, T, B, DH, seq->data, false);
	struct px_tensor *out;
	if (r->readout == RO_SEQUENCE) {
		out = px_tensor_view(a, seq, 3, seq->shape);
		if (!out)
			goto nomem;
		out->lengths = x->lengths;
	} else {
		out = px_tensor_new2(a, B, DH);
		r->argmax = r->readout == RO_MAX ? px_arena_alloc(a, (size_t)(B * DH) * sizeof(int32_t))
						 : NULL;
		if (!out || (r->readout == RO_MAX && !r->argmax))
			goto nomem;
		readout_forward(r, out->data);
	}
	for (int s = 0; s < r->n_state; s++) {
		struct px_tensor *dst = s ? cell : state;
		for (int64_t ld = 0; ld < nl; ld++) {
			const float *src = final_state(r, ld, s);
			for (int64_t b = 0; b < B; b++)
				memcpy(dst->data + (b * nl + ld) * H, src + b * H, (size_t)H * sizeof(float));
		}
	}
	if (r->stateful) {  /* keep the final states for the next batch (detached) */
		int64_t need = r->n_state * nl * B * H;
		if (need > r->carry_cap) {  /* only when the batch size grows */
			float *c = realloc(r->carry, (size_t)need * sizeof(float));
			if (!c)
				return px_error_set(err, PX_ERR_NOMEM, "out of memory");
			r->carry = c;
			r->carry_cap = need;
		}
		for (int s = 0; s < r->n_state; s++)
			for (int64_t ld = 0; ld < nl; ld++)
				memcpy(r->carry + (s * nl + ld) * B * H, final_state(r, ld, s),
				       (size_t)(B * H) * sizeof(float));
		r->carry_batch = B;
	}
	f->out[OUT_OUT] = out;
	f->out[OUT_SEQ] = seq;
	f->out[OUT_STATE] = state;
	if (r->n_state > 1)
		f->out[OUT_CELL] = cell;
	return 0;
nomem:
	return px_error_set(err, PX_ERR_NOMEM, "%s: out of memory in the step arena", k->name);
}

/* ------------------------------------------------------------------ backward */

/* dY [T][B][D*H] += gradient of the readout output */
static void readout_backward(const struct px_rec *r, const float *dout, float *dY)
{
	int64_t B = r->batch, T = r->steps, H = r->hidden, DH = r->dirs * H;
	for (int64_t b = 0; b < B; b++) {
		int64_t n = r->len ? r->len[b] : T;
		const float *g = dout + b * DH;
		if (n == 0)
			continue;
		switch (r->readout) {
		case RO_LAST: {
			float *dst = dY + ((n - 1) * B + b) * DH;
			for (int64_t j = 0; j < H; j++)
				dst[j] += g[j];
			for (int64_t j = H; j < DH; j++)
				dY[b * DH + j] += g[j];
			break;
		}
		case RO_MEAN:
			for (int64_t t = 0; t < n; t++)
				for (int64_t j = 0; j < DH; j++)
					dY[(t * B + b) * DH + j] += g[j] / (float)n;
			break;
		case RO_MAX:
			for (int64_t j = 0; j < DH; j++)
				dY[((int64_t)r->argmax[b * DH + j] * B + b) * DH + j] += g[j];
			break;
		case RO_SEQUENCE:
			break;
		}
	}
}

/* True when no gradient may flow from step t into the step before it (in processing order):
 * the boundary of a tbptt chunk, at absolute times that are multiples of K. */
static bool tbptt_cut(const struct px_rec *r, int64_t d, int64_t t)
{
	int64_t K = r->tbptt;
	if (K <= 0)
		return false;
	return d ? (t + 1) % K == 0 && t + 1 < r->steps : t % K == 0 && t > 0;
}

/* Backward of one layer and direction. dY [T][B][D*H] is dLoss/d(output); adds dLoss/dX into
 * dX [T][B][F] (when non-NULL), into the parameter grads, and into the h0/c0 grads. */
static int lane_backward(struct px_rec *r, int64_t l, int64_t d, const float *dY, int64_t F,
			 float *dX, const struct px_bwd *bw, double *sq, struct px_arena *a)
{
	const struct px_rec_kind *k = r->cfg.kind;
	int64_t B = r->batch, T = r->steps, H = r->hidden, GH = r->gates * H, ld = l * r->dirs + d;
	int64_t BH = B * H, DH = r->dirs * H, nl = r->layers * r->dirs;
	struct lane *ln = &r->lanes[ld];
	bool two = ln->gh != NULL;   /* separate hidden-side gate gradients (gru) */
	float *dg = arena_floats(a, T * B * GH);
	float *dgh = two ? arena_floats(a, T * B * GH) : dg;
	float *dh[2] = {arena_zfloats(a, BH), arena_zfloats(a, BH)};
	float *tmp = arena_floats(a, BH);
	float *dc[2] = {NULL, NULL};
	if (r->n_state > 1) {
		dc[0] = arena_zfloats(a, BH);
		dc[1] = arena_zfloats(a, BH);
	}
	if (!dg || !dgh || !dh[0] || !dh[1] || !tmp || (r->n_state > 1 && (!dc[0] || !dc[1])))
		return PX_ERR_NOMEM;

	/* the final states' gradients start the recurrence */
	for (int s = 0; s < r->n_state; s++) {
		const struct px_tensor *g = bw->d_out[s ? OUT_CELL : OUT_STATE];
		float *dst = s ? dc[0] : dh[0];
		if (g)
			for (int64_t b = 0; b < B; b++)
				memcpy(dst + b * H, g->data + (b * nl + ld) * H, (size_t)H * sizeof(float));
	}
	struct px_tensor *d_h0 = bw->n_in > IN_H0 ? bw->d_in[IN_H0] : NULL;
	struct px_tensor *d_c0 = r->n_state > 1 && bw->n_in > IN_C0 ? bw->d_in[IN_C0] : NULL;
	bool want_init = d_h0 || d_c0;
	struct px_rec_step s = {
		.cfg = &r->cfg, .batch = B, .len = r->len, .w_hh = r->w_hh[ld]->value->data,
		.b_hh = r->b_hh[ld]->value->data, .ldy = DH, .sq = sq, .tmp = tmp,
	};
	int cur = 0;
	for (int64_t i = T - 1; i >= 0; i--) {
		int64_t t = d ? T - 1 - i : i;
		s.t = t;
		s.g = ln->g + t * B * GH;
		s.gh = two ? ln->gh + t * B * GH : NULL;
		s.aux = ln->aux ? ln->aux + t * BH : NULL;
		s.h_prev = ln->h + state_before(r, d, t) * BH;
		s.h = ln->h + state_after(r, d, t) * BH;
		if (ln->c) {
			s.c_prev = ln->c + state_before(r, d, t) * BH;
			s.c = ln->c + state_after(r, d, t) * BH;
		}
		s.dy = dY + t * B * DH + d * H;
		s.dh = dh[cur];
		s.dc = dc[cur];
		bool cut = tbptt_cut(r, d, t);
		bool need_prev = !cut && (i > 0 || want_init);
		s.dh_prev = need_prev ? dh[!cur] : NULL;
		s.dc_prev = need_prev ? dc[!cur] : NULL;
		s.dg = dg + t * B * GH;
		s.dgh = two ? dgh + t * B * GH : NULL;
		k->step_backward(&s);
		if (!need_prev) {
			memset(dh[!cur], 0, (size_t)BH * sizeof(float));
			if (dc[!cur])
				memset(dc[!cur], 0, (size_t)BH * sizeof(float));
		}
		cur = !cur;
	}
	/* dh[cur] is now dLoss/d(initial state) */
	for (int st = 0; st < r->n_state; st++) {
		struct px_tensor *g = st ? d_c0 : d_h0;
		const float *src = st ? dc[cur] : dh[cur];
		for (int64_t b = 0; g && b < B; b++)
			for (int64_t j = 0; j < H; j++)
				g->data[(b * nl + ld) * H + j] += src[b * H + j];
	}

	/* weight gradients: one GEMM over all steps each */
	const float *X = r->x[l];
	float *Hprev = ln->h + (d ? BH : 0);  /* [T][B][H] in time order: state before step t */
	px_gemm(true, false, GH, F, T * B, 1.0f, dg, GH, X, F, 1.0f, r->w_ih[ld]->grad->data, F);
	int64_t split = k->hh_aux_rows(&r->cfg);
	float *gw_hh = r->w_hh[ld]->grad->data;
	px_gemm(true, false, split, H, T * B, 1.0f, dgh, GH, Hprev, H, 1.0f, gw_hh, H);
	if (split < GH)  /* gru (reset_after false): W_hn acts on r*h */
		px_gemm(true, false, GH - split, H, T * B, 1.0f, dgh + split, GH, ln->aux, H, 1.0f,
			gw_hh + split * H, H);
	colsum_add(dg, T * B, GH, r->b_ih[ld]->grad->data);
	colsum_add(dgh, T * B, GH, r->b_hh[ld]->grad->data);
	if (dX)
		px_gemm(false, false, T * B, F, GH, 1.0f, dg, GH, r->w_ih[ld]->value->data, F, 1.0f,
			dX, F);
	return 0;
}

int px_rec_backward(void *self, struct px_bwd *bw, struct px_error *err)
{
	struct px_rec *r = self;
	const struct px_rec_kind *k = r->cfg.kind;
	struct px_arena *a = bw->arena;
	int64_t B = r->batch, T = r->steps, H = r->hidden, DH = r->dirs * H;
	float *dY = arena_zfloats(a, T * B * DH);
	double *sq = bw->report ? px_arena_zalloc(a, (size_t)(T > 0 ? T : 1) * sizeof(double)) : NULL;
	if (!dY || (bw->report && !sq))
		goto nomem;
	const struct px_tensor *d_seq = bw->d_out[OUT_SEQ], *d_out = bw->d_out[OUT_OUT];
	if (d_seq)
		transpose01(d_seq->data, B, T, DH, dY, true);
	if (d_out && r->readout == RO_SEQUENCE)
		transpose01(d_out->data, B, T, DH, dY, true);
	else if (d_out)
		readout_backward(r, d_out->data, dY);

	struct px_tensor *d_x = bw->d_in[IN_X];
	for (int64_t l = r->layers - 1; l >= 0; l--) {
		int64_t F = l == 0 ? r->input : DH;
		float *dX = NULL;
		if (l > 0 || d_x) {
			dX = arena_zfloats(a, T * B * F);
			if (!dX)
				goto nomem;
		}
		for (int64_t d = 0; d < r->dirs; d++)
			if (lane_backward(r, l, d, dY, F, dX, bw, l == r->layers - 1 ? sq : NULL, a))
				goto nomem;
		if (l > 0 && r->mask[l - 1])
			for (int64_t i = 0; i < T * B * F; i++)
				dX[i] *= r->mask[l - 1][i];
		dY = dX;
	}
	if (d_x)
		transpose01(dY, T, B, r->input, d_x->data, true);
	for (int64_t t = 0; sq && t < T; t++)
		bw->report(bw->report_ctx, "grad_norm", t, sqrt(sq[t]));
	return 0;
nomem:
	return px_error_set(err, PX_ERR_NOMEM, "%s: out of memory in the step arena", k->name);
}

/* ------------------------------------------------------------------ cells */

struct px_rec_cell {
	struct px_rec_cfg cfg;
	int64_t input;
	struct px_param *w_ih, *w_hh, *b_ih, *b_hh;
	float *scratch;       /* backward: dg, dgh, dh_prev, dc_prev, tmp for `rows` rows */
	int64_t rows;
};

int px_rec_cell_create(const struct px_rec_kind *kind, struct px_build *b, const char *prefix,
		       int64_t input, int64_t hidden, void **self, struct px_error *err)
{
	*self = NULL;
	if (input < 1 || hidden < 1)
		return px_build_error(b, err, PX_ERR_INVALID, "%s cell needs input >= 1 and hidden "
				      ">= 1, got %lld and %lld", kind->name, (long long)input,
				      (long long)hidden);
	struct px_rec_cell *c = calloc(1, sizeof *c);
	if (!c)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	/* cells use the defaults: tanh, forget_bias 0, reset_after true */
	c->cfg = (struct px_rec_cfg){.kind = kind, .hidden = hidden, .reset_after = true};
	c->input = input;
	int64_t gh = kind->gates * hidden;
	float bound = 1.0f / sqrtf((float)hidden);
	const char *names[4] = {"weight_ih", "weight_hh", "bias_ih", "bias_hh"};
	struct px_param **dst[4] = {&c->w_ih, &c->w_hh, &c->b_ih, &c->b_hh};
	int64_t cols[4] = {input, hidden, 0, 0};
	int rc;
	for (int i = 0; i < 4; i++) {
		char nm[256];
		snprintf(nm, sizeof nm, "%s%s", prefix ? prefix : "", names[i]);
		if ((rc = declare(b, nm, gh, cols[i], bound, dst[i], err)))
			goto fail;
	}
	c->rows = 1;  /* grows to the batch in step_backward when memory allows */
	c->scratch = malloc((size_t)(2 * gh + 3 * hidden) * sizeof(float));
	if (!c->scratch) {
		rc = px_error_set(err, PX_ERR_NOMEM, "out of memory");
		goto fail;
	}
	*self = c;
	return 0;
fail:
	px_rec_cell_destroy(c);
	return rc;
}

void px_rec_cell_destroy(void *self)
{
	struct px_rec_cell *c = self;
	if (!c)
		return;
	free(c->scratch);
	free(c);
}

/* cache: g [B][G*H], then gh [B][G*H] (gru), then aux [B][H] (lstm) */
size_t px_rec_cell_cache_floats(void *self, int64_t batch)
{
	struct px_rec_cell *c = self;
	const struct px_rec_kind *k = c->cfg.kind;
	int64_t H = c->cfg.hidden, GH = k->gates * H;
	return (size_t)(batch * (GH + (k->uses_gh(&c->cfg) ? GH : 0) + (k->uses_aux(&c->cfg) ? H : 0)));
}

static void cell_bind(struct px_rec_cell *c, int64_t batch, float *cache, struct px_rec_step *s)
{
	const struct px_rec_kind *k = c->cfg.kind;
	int64_t H = c->cfg.hidden, GH = k->gates * H;
	*s = (struct px_rec_step){
		.cfg = &c->cfg, .batch = batch, .w_hh = c->w_hh->value->data,
		.b_hh = c->b_hh->value->data, .g = cache,
	};
	float *p = cache + batch * GH;
	if (k->uses_gh(&c->cfg)) {
		s->gh = p;
		p += batch * GH;
	}
	if (k->uses_aux(&c->cfg))
		s->aux = p;
}

void px_rec_cell_step(void *self, int64_t batch, const float *x, const float *s_prev,
		      float *s_next, float *cache)
{
	struct px_rec_cell *c = self;
	const struct px_rec_kind *k = c->cfg.kind;
	int64_t H = c->cfg.hidden, GH = k->gates * H, fold = k->folded_hh_bias(&c->cfg);
	struct px_rec_step s;
	cell_bind(c, batch, cache, &s);
	const float *b_ih = c->b_ih->value->data, *b_hh = c->b_hh->value->data;
	for (int64_t b = 0; b < batch; b++)
		for (int64_t j = 0; j < GH; j++)
			s.g[b * GH + j] = b_ih[j] + (j < fold ? b_hh[j] : 0.0f);
	px_gemm(false, true, batch, GH, c->input, 1.0f, x, c->input, c->w_ih->value->data,
		c->input, 1.0f, s.g, GH);
	s.h_prev = s_prev;
	s.h = s_next;
	if (k->n_state > 1) {
		s.c_prev = s_prev + batch * H;
		s.c = s_next + batch * H;
	}
	k->step(&s);
}

void px_rec_cell_step_backward(void *self, int64_t batch, const float *x, const float *s_prev,
			       const float *cache, const float *d_s_next, float *d_x,
			       float *d_s_prev)
{
	struct px_rec_cell *c = self;
	const struct px_rec_kind *k = c->cfg.kind;
	int64_t H = c->cfg.hidden, GH = k->gates * H, in = c->input;
	bool two = k->uses_gh(&c->cfg);
	if (c->rows < batch) {  /* first backward at this batch size: room for all rows */
		float *p = realloc(c->scratch, (size_t)(batch * (2 * GH + 3 * H)) * sizeof(float));
		if (p) {
			c->scratch = p;
			c->rows = batch;
		}
	}
	struct px_rec_step full;
	cell_bind(c, batch, (float *)cache, &full);  /* read only below */
	for (int64_t b0 = 0; b0 < batch; b0 += c->rows) {
		int64_t nb = batch - b0 < c->rows ? batch - b0 : c->rows;
		float *dg = c->scratch, *dgh = two ? dg + nb * GH : dg;
		float *dhp = dg + 2 * nb * GH, *dcp = dhp + nb * H, *tmp = dcp + nb * H;
		struct px_rec_step s = {
			.cfg = &c->cfg, .batch = nb, .w_hh = full.w_hh, .b_hh = full.b_hh,
			.g = full.g + b0 * GH, .gh = two ? full.gh + b0 * GH : NULL,
			.aux = full.aux ? full.aux + b0 * H : NULL,
			.h_prev = s_prev + b0 * H, .dh = d_s_next + b0 * H,
			.dh_prev = dhp, .dg = dg, .dgh = two ? dgh : NULL, .tmp = tmp,
		};
		if (k->n_state > 1) {
			s.c_prev = s_prev + batch * H + b0 * H;
			s.dc = d_s_next + batch * H + b0 * H;
			s.dc_prev = dcp;
		}
		k->step_backward(&s);
		for (int64_t i = 0; i < nb * H; i++)
			d_s_prev[b0 * H + i] += dhp[i];
		if (k->n_state > 1)
			for (int64_t i = 0; i < nb * H; i++)
				d_s_prev[batch * H + b0 * H + i] += dcp[i];
		const float *xb = x + b0 * in;
		px_gemm(true, false, GH, in, nb, 1.0f, dg, GH, xb, in, 1.0f, c->w_ih->grad->data, in);
		int64_t split = k->hh_aux_rows(&c->cfg);
		px_gemm(true, false, split, H, nb, 1.0f, dgh, GH, s.h_prev, H, 1.0f,
			c->w_hh->grad->data, H);
		if (split < GH)
			px_gemm(true, false, GH - split, H, nb, 1.0f, dgh + split, GH, s.aux, H, 1.0f,
				c->w_hh->grad->data + split * H, H);
		colsum_add(dg, nb, GH, c->b_ih->grad->data);
		colsum_add(dgh, nb, GH, c->b_hh->grad->data);
		if (d_x)
			px_gemm(false, false, nb, in, GH, 1.0f, dg, GH, c->w_ih->value->data, in, 1.0f,
				d_x + b0 * in, in);
	}
}
