/* plexus commands for looking inside models: diagnose, sample, score, reconstruct, translate,
 * attention. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static int runtime_fail(const struct px_error *err)
{
	fprintf(stderr, "%s\n", err->msg);
	return EXIT_RUNTIME;
}

/* The first node with an output port called `port`. */
static bool find_port(const struct px_model *m, const char *port, struct px_src *out)
{
	for (int i = 0; i < m->n_nodes; i++)
		for (int k = 0; k < m->nodes[i].n_out; k++)
			if (!strcmp(m->nodes[i].ops->outputs[k].name, port)) {
				*out = (struct px_src){i, k};
				return true;
			}
	return false;
}

static int open_with_checkpoint(struct cli *c, bool want_test, struct px_session **s,
				struct px_error *err)
{
	int rc = px_cli_open_session(c, want_test, true, s, err);
	if (rc)
		return px_cli_fail(err, rc);
	if (c->checkpoint && (rc = px_load_params(*s, c->checkpoint, err))) {
		px_session_free(*s);
		return runtime_fail(err);
	}
	return 0;
}

/* ---------------------------------------------------------------- diagnose */
struct series {
	int n, cap;
	struct {
		char node[64];
		int64_t step;
		double value;
	} *v;
};

static void collect(void *ctx, const char *node, const char *name, int64_t step, double value)
{
	struct series *s = ctx;
	if (strcmp(name, "grad_norm"))
		return;
	if (s->n == s->cap) {
		int cap = s->cap ? 2 * s->cap : 256;
		void *nv = realloc(s->v, (size_t)cap * sizeof *s->v);
		if (!nv)
			return;
		s->v = nv;
		s->cap = cap;
	}
	snprintf(s->v[s->n].node, sizeof s->v[s->n].node, "%s", node);
	s->v[s->n].step = step;
	s->v[s->n].value = value;
	s->n++;
}

int px_cmd_diagnose(struct cli *c)
{
	if (!c->grad_norms)
		return px_cli_usage_error("diagnose needs --grad-norms (the only diagnostic so far)%s", "");
	struct px_error err = {0};
	struct px_session *s;
	int rc = open_with_checkpoint(c, false, &s, &err);
	if (rc)
		return rc;
	struct px_model *m = s->model;
	const struct px_dataset *ds = &s->ds[PX_SPLIT_TRAIN];
	int64_t n = px_config_int(s->train_cfg, "batch");
	if (n > ds->n)
		n = ds->n;
	struct px_arena *a = px_arena_new(1 << 20);
	int64_t *idx = malloc((size_t)n * sizeof *idx);
	struct series ser = {0};
	for (int64_t i = 0; idx && i < n; i++)
		idx[i] = i;
	struct px_tensor *x, *y;
	if (!a || !idx)
		rc = px_error_set(&err, PX_ERR_NOMEM, "out of memory");
	if (!rc)
		rc = px_dataset_gather(ds, idx, n, a, &x, &y, &err);
	if (!rc)
		rc = px_model_forward(m, x, y, false, &err);
	if (!rc) {
		const struct px_loss_ops *lo = s->loss_entry->ops;
		struct px_loss_result lr;
		struct px_tensor *d = px_model_grad_buffer(m, s->loss_in);
		rc = lo->forward(s->loss, px_model_output(m, s->loss_in), px_model_output(m, s->loss_target),
				 &lr, d, 1.0f, &err);
		if (!rc && d)
			px_scal(px_tensor_numel(d), (float)(1.0 / lr.count), d->data);
		m->report = collect;
		m->report_ctx = &ser;
		px_model_zero_grad(m);
		if (!rc)
			rc = px_model_backward(m, &err);
		m->report = NULL;
	}
	if (!rc && ser.n == 0)
		rc = px_error_set(&err, PX_ERR_INVALID,
				  "no layer of this model reports per-step gradient norms (the recurrent layers do)");
	if (!rc) {
		printf("# ||dLoss/dh_t|| per step t (batch of %lld training examples, %s)\n", (long long)n,
		       c->checkpoint ? c->checkpoint : "initial parameters");
		printf("node\tstep\tgrad_norm\n");
		for (int i = 0; i < ser.n; i++)
			printf("%s\t%lld\t%.6e\n", ser.v[i].node, (long long)ser.v[i].step, ser.v[i].value);
		/* the first step over the last: how much survives the trip back through time */
		for (int i = 0; i < ser.n; i++) {
			bool first = true;
			for (int j = 0; j < i; j++)
				first &= strcmp(ser.v[j].node, ser.v[i].node) != 0;
			if (!first)
				continue;
			double g0 = NAN, gl = NAN;
			int64_t t0 = INT64_MAX, tl = -1;
			for (int j = 0; j < ser.n; j++) {
				if (strcmp(ser.v[j].node, ser.v[i].node))
					continue;
				if (ser.v[j].step < t0) {
					t0 = ser.v[j].step;
					g0 = ser.v[j].value;
				}
				if (ser.v[j].step > tl) {
					tl = ser.v[j].step;
					gl = ser.v[j].value;
				}
			}
			printf("# %s: ||dL/dh_%lld|| / ||dL/dh_%lld|| = %.3e\n", ser.v[i].node, (long long)t0,
			       (long long)tl, gl > 0 ? g0 / gl : NAN);
		}
	}
	free(ser.v);
	free(idx);
	px_arena_free(a);
	px_session_free(s);
	return rc ? px_cli_fail(&err, rc) : 0;
}

/* ---------------------------------------------------------------- tokens */
static bool vocab_is_chars(char **v, int64_t n)
{
	for (int64_t i = 4; i < n; i++)
		if (strlen(v[i]) != 1)
			return false;
	return true;
}

/* Map a line to ids with vocabulary v (chars or whitespace-separated words); specials first
 * when `specials` (then unknown tokens map to <unk> = 3), else unknown is an error. */
static int64_t tokenize(const char *line, char **v, int64_t n, bool specials, float *ids,
			int64_t max, struct px_error *err)
{
	bool chars = vocab_is_chars(v, n);
	int64_t k = 0;
	char buf[1024];
	snprintf(buf, sizeof buf, "%s", line);
	char *save = NULL;
	char *tok = chars ? NULL : strtok_r(buf, " \t", &save);
	for (size_t i = 0; chars ? buf[i] != 0 : tok != NULL; i++) {
		char one[2] = {chars ? buf[i] : 0, 0};
		const char *t = chars ? one : tok;
		int64_t id = -1;
		for (int64_t j = specials ? 4 : 0; j < n && id < 0; j++)
			if (!strcmp(v[j], t))
				id = j;
		if (id < 0) {
			if (!specials) {
				px_error_set(err, PX_ERR_INVALID, "'%s' is not in the model's vocabulary", t);
				return -1;
			}
			id = 3;
		}
		if (k < max)
			ids[k++] = (float)id;
		if (!chars)
			tok = strtok_r(NULL, " \t", &save);
	}
	return k;
}

static void detokenize(const float *ids, int64_t len, char **v, int64_t n, char *out, size_t cap)
{
	bool chars = vocab_is_chars(v, n);
	size_t u = 0;
	out[0] = 0;
	for (int64_t t = 0; t < len && u < cap; t++) {
		int64_t id = (int64_t)ids[t];
		if (id == 2)  /* <eos> */
			break;
		if (id < 4 || id >= n)
			continue;
		u += (size_t)snprintf(out + u, cap - u, "%s%s", !chars && u ? " " : "", v[id]);
	}
}

/* ---------------------------------------------------------------- sample */
int px_cmd_sample(struct cli *c)
{
	if (!c->checkpoint)
		return px_cli_usage_error("sample needs --checkpoint FILE%s", "");
	struct px_error err = {0};
	struct px_session *s;
	int rc = open_with_checkpoint(c, false, &s, &err);
	if (rc)
		return rc;
	const struct px_dataset *ds = &s->ds[PX_SPLIT_TRAIN];
	if (!ds->x_vocab || ds->x.ndim != 2) {
		px_session_free(s);
		fprintf(stderr, "plexus: sample needs a language model on token ids (a text source)\n");
		return EXIT_USAGE;
	}
	int64_t T = ds->x.dim[1], V = ds->x_vocab_n, length = c->length ? c->length : 200;
	double temp = c->temperature > 0 ? c->temperature : 1.0;
	const char *prompt = c->prompt ? c->prompt : "The ";
	size_t cap = strlen(prompt) + (size_t)length + 1;
	float *ctx = malloc(cap * sizeof *ctx);
	double *p = malloc((size_t)V * sizeof *p);
	char *text = malloc(cap + 1);
	if (!ctx || !p || !text) {
		rc = px_error_set(&err, PX_ERR_NOMEM, "out of memory");
		goto done;
	}
	int64_t n = tokenize(prompt, ds->x_vocab, V, false, ctx, (int64_t)cap, &err);
	if (n <= 0) {
		rc = n < 0 ? PX_ERR_INVALID : px_error_set(&err, PX_ERR_INVALID, "the prompt is empty");
		goto done;
	}
	snprintf(text, cap + 1, "%s", prompt);
	size_t tl = strlen(text);
	struct px_rng rng;
	px_rng_seed_label(&rng, s->pl->seed, "sample");
	for (int64_t i = 0; i < length; i++) {
		int64_t L = n < T ? n : T;
		struct px_tensor x = {.data = ctx + n - L, .ndim = 2, .shape = {1, L}};
		if ((rc = px_model_forward(s->model, &x, NULL, false, &err)))
			goto done;
		const struct px_tensor *o = px_model_output(s->model, s->loss_in);
		const float *logits = o->data + (L - 1) * V;
		double mx = -INFINITY, z = 0;
		for (int64_t v = 0; v < V; v++)
			mx = fmax(mx, logits[v] / temp);
		for (int64_t v = 0; v < V; v++)
			z += p[v] = exp(logits[v] / temp - mx);  /* p ∝ exp(logit / T) */
		double u = px_rng_uniform(&rng) * z;
		int64_t pick = V - 1;
		for (int64_t v = 0; v < V; v++)
			if ((u -= p[v]) <= 0) {
				pick = v;
				break;
			}
		ctx[n++] = (float)pick;
		if (tl < cap)
			text[tl++] = ds->x_vocab[pick][0];
		text[tl] = 0;
	}
	printf("%s\n", text);
done:
	free(ctx);
	free(p);
	free(text);
	px_session_free(s);
	return rc ? px_cli_fail(&err, rc) : 0;
}

/* ---------------------------------------------------------------- score */
int px_cmd_score(struct cli *c)
{
	if (!c->checkpoint || !c->input || !c->output)
		return px_cli_usage_error("score needs --checkpoint FILE --input X.npy --output S.npy%s", "");
	struct px_error err = {0};
	struct px_session *s;
	int rc = open_with_checkpoint(c, false, &s, &err);
	if (rc)
		return rc;
	int nd;
	int64_t shape[PX_MAX_DIMS];
	float *x = NULL, *score = NULL;
	if (s->loss_target.node != -1 || s->loss_target.port != 0) {
		rc = px_error_set(&err, PX_ERR_INVALID,
				  "score needs a reconstruction pipeline (loss target: input)");
		goto done;
	}
	if ((rc = px_npy_read(c->input, &nd, shape, &x, &err)))
		goto done;
	bool fits = nd == s->info.x.ndim;
	for (int i = 1; fits && i < nd; i++)
		fits = shape[i] == s->info.x.dim[i];
	if (!fits) {
		struct px_shape g = {.ndim = nd};
		memcpy(g.dim, shape, sizeof(int64_t) * (size_t)nd);
		char a[64], b[64];
		rc = px_error_set(&err, PX_ERR_SHAPE, "%s: input is %s, the model takes %s", c->input,
				  px_shape_str(&g, a, sizeof a), px_shape_str(&s->info.x, b, sizeof b));
		goto done;
	}
	score = malloc((size_t)shape[0] * sizeof *score);
	if (!score) {
		rc = px_error_set(&err, PX_ERR_NOMEM, "out of memory");
		goto done;
	}
	int64_t per = 1, bs = 256;
	for (int i = 1; i < nd; i++)
		per *= shape[i];
	for (int64_t b0 = 0; b0 < shape[0]; b0 += bs) {
		int64_t n = shape[0] - b0 < bs ? shape[0] - b0 : bs;
		struct px_tensor xt = {.data = x + b0 * per, .ndim = nd};
		memcpy(xt.shape, shape, sizeof(int64_t) * (size_t)nd);
		xt.shape[0] = n;
		if ((rc = px_model_forward(s->model, &xt, NULL, false, &err)))
			goto done;
		const struct px_tensor *r = px_model_output(s->model, s->loss_in);
		bool logits = !strcmp(s->pl->loss_kind, "bce");
		for (int64_t b = 0; b < n; b++) {
			double e = 0;
			for (int64_t i = 0; i < per; i++) {
				double v = r->data[b * per + i];
				if (logits)
					v = 1.0 / (1.0 + exp(-v));
				double d = v - xt.data[b * per + i];
				e += d * d;
			}
			score[b0 + b] = (float)(e / (double)per);  /* mean squared reconstruction error */
		}
	}
	int64_t sshape[1] = {shape[0]};
	rc = px_npy_write(c->output, 1, sshape, score, &err);
	if (!rc)
		printf("wrote %lld scores to %s\n", (long long)shape[0], c->output);
done:
	free(x);
	free(score);
	px_session_free(s);
	return rc ? px_cli_fail(&err, rc) : 0;
}

/* ---------------------------------------------------------------- reconstruct */
static void image_dims(const struct px_shape *x, int64_t *h, int64_t *w)
{
	int64_t per = px_shape_numel(x);
	if (x->ndim >= 3) {
		*h = x->dim[x->ndim - 2];
		*w = x->dim[x->ndim - 1];
		return;
	}
	int64_t r = (int64_t)llround(sqrt((double)per));
	if (r * r == per) {
		*h = *w = r;
	} else {
		*h = 1;
		*w = per;
	}
}

int px_cmd_reconstruct(struct cli *c)
{
	if (!c->checkpoint || !c->grid)
		return px_cli_usage_error("reconstruct needs --checkpoint FILE --grid OUT.png%s", "");
	struct px_error err = {0};
	struct px_session *s;
	int rc = open_with_checkpoint(c, true, &s, &err);
	if (rc)
		return rc;
	int sp = s->have[PX_SPLIT_TEST] ? PX_SPLIT_TEST : PX_SPLIT_TRAIN;
	const struct px_dataset *ds = &s->ds[sp];
	int64_t n = c->count ? c->count : 8;
	if (n > ds->n)
		n = ds->n;
	int64_t h, w;
	image_dims(&s->info.x, &h, &w);
	int64_t per = px_shape_numel(&s->info.x);
	struct px_arena *a = px_arena_new(1 << 20);
	int64_t *idx = malloc((size_t)n * sizeof *idx);
	unsigned char *px = NULL;
	struct px_tensor *x, *y;
	if (!a || !idx) {
		rc = px_error_set(&err, PX_ERR_NOMEM, "out of memory");
		goto done;
	}
	for (int64_t i = 0; i < n; i++)
		idx[i] = i;
	if ((rc = px_dataset_gather(ds, idx, n, a, &x, &y, &err)))
		goto done;
	/* train mode: the noise nodes corrupt the input, as in training */
	if ((rc = px_model_forward(s->model, x, y, true, &err)))
		goto done;
	const struct px_tensor *noisy = x;
	for (int i = 0; i < s->model->n_nodes; i++) {
		const char *k = s->model->nodes[i].ops->kind;
		size_t kl = strlen(k);
		if (kl > 6 && !strcmp(k + kl - 6, "_noise")) {
			noisy = s->model->nodes[i].out_t[0];
			break;
		}
	}
	const struct px_tensor *rec = px_model_output(s->model, s->loss_in);
	bool logits = !strcmp(s->pl->loss_kind, "bce");
	if (px_tensor_numel(rec) != n * per) {
		rc = px_error_set(&err, PX_ERR_SHAPE, "the loss input is not shaped like the data: no reconstruction to draw");
		goto done;
	}
	const float *rows[3] = {x->data, noisy->data, rec->data};
	if (logits) {   /* bce scores logits: show sigmoid(l) */
		float *p = px_arena_alloc(a, (size_t)(n * per) * sizeof *p);
		if (!p) {
			rc = px_error_set(&err, PX_ERR_NOMEM, "out of memory");
			goto done;
		}
		for (int64_t i = 0; i < n * per; i++)
			p[i] = (float)(1.0 / (1.0 + exp(-(double)rec->data[i])));
		rows[2] = p;
	}
	int W, H;
	px = px_picture_grid(rows, 3, n, per, 1, h, w, false, INT32_MAX, &W, &H);
	rc = px ? px_png_write(c->grid, W, H, 1, px, &err)
		: px_error_set(&err, PX_ERR_NOMEM, "out of memory");
	if (!rc)
		printf("wrote %s: rows are inputs, corrupted inputs, reconstructions (%lld examples)\n",
		       c->grid, (long long)n);
done:
	free(px);
	free(idx);
	px_arena_free(a);
	px_session_free(s);
	return rc ? px_cli_fail(&err, rc) : 0;
}

/* ---------------------------------------------------------------- translate, attention */
/* The decoder's tokens port (eval.generate) or the first `tokens` port. */
static bool generate_port(struct px_session *s, struct px_src *out)
{
	const char *g = px_config_str(s->eval_cfg, "generate");
	struct px_error e;
	if (g && *g && !px_model_resolve(s->model, g, s->model->n_nodes, out, &e))
		return true;
	return find_port(s->model, "tokens", out);
}

/* Encode lines (borrowed) into x [n, T] with lengths, in arena a. */
static int encode_lines(struct px_session *s, char **lines, int64_t n, struct px_arena *a,
			struct px_tensor **out, struct px_error *err)
{
	const struct px_dataset *ds = &s->ds[PX_SPLIT_TRAIN];
	int64_t T = 1;
	for (int64_t i = 0; i < n; i++)
		T = fmax(T, (double)strlen(lines[i]));
	struct px_tensor *x = px_tensor_new2(a, n, T);
	int32_t *len = px_arena_alloc(a, (size_t)n * sizeof *len);
	if (!x || !len)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	int64_t tmax = 1;
	for (int64_t i = 0; i < n; i++) {
		int64_t k = tokenize(lines[i], ds->x_vocab, ds->x_vocab_n, true, x->data + i * T, T, err);
		if (k < 0)
			return PX_ERR_INVALID;
		len[i] = (int32_t)(k ? k : 1);
		if (k > tmax)
			tmax = k;
	}
	/* keep the padded width tight */
	if (tmax < T) {
		for (int64_t i = 0; i < n; i++)
			memmove(x->data + i * tmax, x->data + i * T, (size_t)tmax * sizeof(float));
		x->shape[1] = tmax;
	}
	x->lengths = len;
	*out = x;
	return 0;
}

static int reopen_with_beam(struct cli *c, struct px_session **s, struct px_error *err)
{
	if (!c->beam)
		return 0;
	struct px_src g;
	if (!generate_port(*s, &g)) {
		fprintf(stderr, "plexus: this pipeline has no decoder (no 'tokens' output)\n");
		return EXIT_USAGE;
	}
	static char set[160];
	snprintf(set, sizeof set, "model.%s.beam=%lld", (*s)->model->nodes[g.node].name, (long long)c->beam);
	px_session_free(*s);
	*s = NULL;
	if (c->n_sets >= 64)
		return px_cli_usage_error("too many --set options%s", "");
	c->sets[c->n_sets++] = set;
	return open_with_checkpoint(c, false, s, err);
}

int px_cmd_translate(struct cli *c)
{
	if (!c->checkpoint)
		return px_cli_usage_error("translate needs --checkpoint FILE%s", "");
	struct px_error err = {0};
	struct px_session *s;
	int rc = open_with_checkpoint(c, false, &s, &err);
	if (rc || (rc = reopen_with_beam(c, &s, &err)))
		return rc;
	struct px_src g;
	const struct px_dataset *ds = &s->ds[PX_SPLIT_TRAIN];
	if (!generate_port(s, &g) || !ds->x_vocab || !ds->y_vocab) {
		px_session_free(s);
		fprintf(stderr, "plexus: translate needs a sequence-to-sequence pipeline with a decoder and vocabularies\n");
		return EXIT_USAGE;
	}
	struct px_arena *a = px_arena_new(1 << 20);
	char line[1024];
	while (!rc && fgets(line, sizeof line, stdin)) {
		line[strcspn(line, "\r\n")] = 0;
		char *lines[1] = {line};
		struct px_tensor *x;
		px_arena_reset(a);
		if ((rc = encode_lines(s, lines, 1, a, &x, &err)))
			break;
		if ((rc = px_model_forward(s->model, x, NULL, false, &err)))
			break;
		const struct px_tensor *tok = px_model_output(s->model, g);
		char out[2048];
		detokenize(tok->data, px_tensor_len(tok, 0), ds->y_vocab, ds->y_vocab_n, out, sizeof out);
		printf("%s\n", out);
		fflush(stdout);
	}
	px_arena_free(a);
	px_session_free(s);
	return rc ? px_cli_fail(&err, rc) : 0;
}

int px_cmd_attention(struct cli *c)
{
	if (!c->checkpoint || !c->out || (!c->input && c->index < 0 && !c->prompt))
		return px_cli_usage_error("attention needs --checkpoint FILE, --input TEXT (or --index N) and --out MAP.svg|.png|.csv%s", "");
	struct px_error err = {0};
	struct px_session *s;
	int rc = open_with_checkpoint(c, true, &s, &err);
	if (rc || (rc = reopen_with_beam(c, &s, &err)))
		return rc;
	struct px_src wsrc, g;
	const struct px_dataset *ds = &s->ds[PX_SPLIT_TRAIN];
	struct px_arena *a = px_arena_new(1 << 20);
	char **rl = NULL, **cl = NULL;
	int rows = 0, cols = 0;
	char *svg = NULL;
	if (!find_port(s->model, "weights", &wsrc)) {
		rc = px_error_set(&err, PX_ERR_INVALID, "this model has no attention weights (no 'weights' output)");
		goto done;
	}
	struct px_tensor *x, *y = NULL;
	const char *text = c->input ? c->input : c->prompt;
	if (text && ds->x_vocab) {
		char *lines[1] = {(char *)text};
		if ((rc = encode_lines(s, lines, 1, a, &x, &err)))
			goto done;
	} else {
		int sp = s->have[PX_SPLIT_TEST] ? PX_SPLIT_TEST : PX_SPLIT_TRAIN;
		int64_t i = c->index;
		if (i >= s->ds[sp].n) {
			rc = px_error_set(&err, PX_ERR_INVALID, "--index %lld: the %s split has %lld examples",
					  (long long)i, px_split_names[sp], (long long)s->ds[sp].n);
			goto done;
		}
		if ((rc = px_dataset_gather(&s->ds[sp], &i, 1, a, &x, &y, &err)))
			goto done;
	}
	if ((rc = px_model_forward(s->model, x, NULL, false, &err)))
		goto done;
	const struct px_tensor *w = px_model_output(s->model, wsrc);
	int64_t Tin = px_tensor_len(x, 0);
	bool seq2seq = w->ndim == 3;
	rows = seq2seq ? (int)px_tensor_len(w, 0) : 1;
	cols = (int)(seq2seq ? w->shape[2] : w->shape[1]);
	if (Tin < cols)
		cols = (int)Tin;
	float *mat = px_arena_alloc(a, (size_t)rows * (size_t)cols * sizeof *mat);
	rl = calloc((size_t)rows, sizeof *rl);
	cl = calloc((size_t)cols, sizeof *cl);
	if (!mat || !rl || !cl) {
		rc = px_error_set(&err, PX_ERR_NOMEM, "out of memory");
		goto done;
	}
	int64_t wcols = seq2seq ? w->shape[2] : w->shape[1];
	for (int r = 0; r < rows; r++)
		for (int k = 0; k < cols; k++)
			mat[r * cols + k] = w->data[(int64_t)r * wcols + k];
	bool have_tok = seq2seq && generate_port(s, &g) && ds->y_vocab;
	const struct px_tensor *tok = have_tok ? px_model_output(s->model, g) : NULL;
	for (int r = 0; r < rows; r++) {
		int64_t id = tok ? (int64_t)tok->data[r] : -1;
		rl[r] = tok ? px_strdup(id == 2 ? "<eos>" : (id >= 0 && id < ds->y_vocab_n ? ds->y_vocab[id] : "?"))
			    : px_asprintf("%s", seq2seq ? "?" : "weight");
	}
	for (int k = 0; k < cols; k++) {
		int64_t id = (int64_t)x->data[k];
		cl[k] = ds->x_vocab && x->ndim == 2 && id >= 0 && id < ds->x_vocab_n ? px_strdup(ds->x_vocab[id])
										       : px_asprintf("%d", k);
	}
	size_t ol = strlen(c->out);
	if (ol > 4 && !strcmp(c->out + ol - 4, ".csv")) {  /* numbers: a header of source tokens */
		struct px_sbuf b = {0};
		px_sbuf_add(&b, "output");
		for (int k = 0; k < cols; k++) {
			px_sbuf_add(&b, ",");
			px_sbuf_add_json_str(&b, cl[k]);
		}
		for (int r = 0; r < rows; r++) {
			px_sbuf_add(&b, "\n");
			px_sbuf_add_json_str(&b, rl[r]);
			for (int k = 0; k < cols; k++)
				px_sbuf_addf(&b, ",%.6f", mat[r * cols + k]);
		}
		px_sbuf_add(&b, "\n");
		rc = b.oom ? px_error_set(&err, PX_ERR_NOMEM, "out of memory")
			   : px_write_file_atomic(c->out, b.s, b.len, &err);
		px_sbuf_free(&b);
	} else if (ol > 4 && !strcmp(c->out + ol - 4, ".png")) {
		rc = px_png_heatmap(c->out, mat, rows, cols, 16, &err);
	} else {
		svg = px_svg_heatmap(mat, rows, cols, (const char *const *)rl, (const char *const *)cl,
				     seq2seq ? "attention alignment" : "attention weights over time",
				     seq2seq ? "source" : "time step", seq2seq ? "output" : "");
		rc = svg ? px_write_file_atomic(c->out, svg, strlen(svg), &err)
			 : px_error_set(&err, PX_ERR_NOMEM, "out of memory");
	}
	if (!rc)
		printf("wrote %s (%d x %d)\n", c->out, rows, cols);
done:
	for (int r = 0; rl && r < rows; r++)
		free(rl[r]);
	for (int k = 0; cl && k < cols; k++)
		free(cl[k]);
	free(rl);
	free(cl);
	free(svg);
	px_arena_free(a);
	px_session_free(s);
	return rc ? px_cli_fail(&err, rc) : 0;
}
