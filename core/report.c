/* Run reports.
 *
 * - The figure pass and the host's figure services (ABI 1.1): after training one batch runs
 *   in evaluation mode while host->figure_batch is non-NULL; layers hand images, heat maps
 *   and series to the host, which stores them in run_dir/figures/ (PNG, or JSON data) with an
 *   index. The backward of that batch collects the per-step series layers report through
 *   px_bwd.report (the recurrent layers' gradient norms) as figures too.
 * - run_dir/summary.json: the model summary and the final metrics, written with the figures.
 * - report.html: one self-contained page (inline SVG and CSS, PNGs as data: URIs, no script,
 *   no network) rendered only from the run directory's files, so `plexus report` rebuilds it
 *   later, and overlays the curves of several runs. Every text from a pipeline, a data set,
 *   a plugin or a file is escaped; the files are read as untrusted (sizes capped, names
 *   checked, JSON parsed strictly). */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "internal.h"

#define FIG_MAX 64                 /* figures per run */
#define FIG_EXAMPLES 16            /* examples in the figure pass's batch */
#define FIG_MAX_SIDE 4096
#define FIG_MAX_CELLS 16384
#define FIG_MAX_POINTS 100000
#define FIG_TEXT_MAX 300           /* bytes of a node name or title kept */
#define FILE_MAX_BYTES (64u << 20) /* metrics.csv, pipeline.yaml, JSON files */
#define PNG_MAX_BYTES (16u << 20)
#define CSV_MAX_COLS 64
#define MAX_COLLECTED 16           /* per-step series collected from px_bwd.report */

/* ================================================================ figure services */
struct px_figure_sink {
	char dir[4200];              /* run_dir/figures */
	int n;                       /* figures written */
	struct px_sbuf index;        /* the figures' JSON objects, comma separated */
	struct px_sbuf notes;        /* JSON strings, comma separated */
	bool full_noted;
	int images;                  /* figure_image calls that wrote a picture */
	struct px_figure_batch batch;
};

static struct px_figure_sink *sink_of(const struct px_host *h)
{
	const struct px_registry *r = h ? h->priv : NULL;
	return r ? r->figures : NULL;
}

static void sink_note(struct px_figure_sink *fs, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void sink_note(struct px_figure_sink *fs, const char *fmt, ...)
{
	char msg[1200];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (fs->notes.len)
		px_sbuf_add(&fs->notes, ",\n    ");
	px_sbuf_add_json_str(&fs->notes, msg);
}

/* A text cut to FIG_TEXT_MAX bytes (on a UTF-8 boundary). */
static void cut_text(const char *s, char *buf, size_t n)
{
	size_t len = strlen(s ? s : ""), max = n - 1 < FIG_TEXT_MAX ? n - 1 : FIG_TEXT_MAX;
	if (len > max) {
		len = max;
		while (len > 0 && ((unsigned char)s[len] & 0xc0) == 0x80)
			len--;
	}
	memcpy(buf, s ? s : "", len);
	buf[len] = 0;
}

/* The next figure file name, or PX_ERR_INVALID past FIG_MAX. */
static int sink_slot(struct px_figure_sink *fs, const char *node, const char *ext, char *file,
		     size_t n)
{
	if (fs->n >= FIG_MAX) {
		if (!fs->full_noted)
			sink_note(fs, "only the first %d figures are kept (node '%s' drew more)",
				  FIG_MAX, node);
		fs->full_noted = true;
		return PX_ERR_INVALID;
	}
	snprintf(file, n, "fig-%03d.%s", fs->n, ext);
	return 0;
}

static void sink_add(struct px_figure_sink *fs, const char *node, const char *type,
		     const char *title, const char *file)
{
	char nb[FIG_TEXT_MAX + 1], tb[FIG_TEXT_MAX + 1];
	cut_text(node, nb, sizeof nb);
	cut_text(title, tb, sizeof tb);
	if (fs->index.len)
		px_sbuf_add(&fs->index, ",\n    ");
	px_sbuf_add(&fs->index, "{\"node\": ");
	px_sbuf_add_json_str(&fs->index, nb);
	px_sbuf_addf(&fs->index, ", \"type\": \"%s\", \"title\": ", type);
	px_sbuf_add_json_str(&fs->index, tb);
	px_sbuf_addf(&fs->index, ", \"file\": \"%s\"}", file);
	fs->n++;
}

static void add_json_num(struct px_sbuf *b, double v)
{
	if (isfinite(v))
		px_sbuf_addf(b, "%.7g", v);
	else
		px_sbuf_add(b, "null");
}

static void add_json_text(struct px_sbuf *b, const char *s)
{
	char t[FIG_TEXT_MAX + 1];
	cut_text(s, t, sizeof t);
	px_sbuf_add_json_str(b, t);
}

static int sink_write_json(struct px_figure_sink *fs, const char *node, const char *type,
			   const char *title, struct px_sbuf *b)
{
	char file[32], path[4300];
	if (sink_slot(fs, node, "json", file, sizeof file))
		return PX_ERR_INVALID;
	if (b->oom)
		return PX_ERR_NOMEM;
	snprintf(path, sizeof path, "%s/%s", fs->dir, file);
	struct px_error e;
	int rc = px_write_file_atomic(path, b->s, b->len, &e);
	if (rc) {
		sink_note(fs, "node '%s': %s", node, e.msg);
		return rc;
	}
	sink_add(fs, node, type, title, file);
	return 0;
}

const struct px_figure_batch *px_host_figure_batch(const struct px_host *h)
{
	struct px_figure_sink *fs = sink_of(h);
	return fs ? &fs->batch : NULL;
}

int px_host_figure_image(const struct px_host *h, const char *node, const char *title,
			 int width, int height, int channels, const unsigned char *pixels)
{
	struct px_figure_sink *fs = sink_of(h);
	if (!fs)
		return PX_ERR_INVALID;
	if (!node || !pixels || width < 1 || height < 1 || width > FIG_MAX_SIDE ||
	    height > FIG_MAX_SIDE || (channels != 1 && channels != 3)) {
		sink_note(fs, "node '%s': figure_image refused: %dx%d pixels with %d channels "
			  "(1..%d a side, 1 or 3 channels)", node ? node : "?", width, height,
			  channels, FIG_MAX_SIDE);
		return PX_ERR_INVALID;
	}
	char file[32], path[4300];
	if (sink_slot(fs, node, "png", file, sizeof file))
		return PX_ERR_INVALID;
	snprintf(path, sizeof path, "%s/%s", fs->dir, file);
	struct px_error e;
	int rc = px_png_write(path, width, height, channels, pixels, &e);
	if (rc) {
		sink_note(fs, "node '%s': %s", node, e.msg);
		return rc;
	}
	sink_add(fs, node, "image", title, file);
	fs->images++;
	return 0;
}

static void add_labels(struct px_sbuf *b, const char *key, const char *const *labels, int n)
{
	px_sbuf_addf(b, ",\n \"%s\": ", key);
	if (!labels) {
		px_sbuf_add(b, "null");
		return;
	}
	px_sbuf_add(b, "[");
	for (int i = 0; i < n; i++) {
		if (i)
			px_sbuf_add(b, ", ");
		add_json_text(b, labels[i] ? labels[i] : "");
	}
	px_sbuf_add(b, "]");
}

int px_host_figure_heatmap(const struct px_host *h, const char *node, const char *title,
			   const float *m, int rows, int cols, const char *const *row_labels,
			   const char *const *col_labels, const char *x_title, const char *y_title)
{
	struct px_figure_sink *fs = sink_of(h);
	if (!fs)
		return PX_ERR_INVALID;
	if (!node || !m || rows < 1 || cols < 1 || (int64_t)rows * cols > FIG_MAX_CELLS) {
		sink_note(fs, "node '%s': figure_heatmap refused: %d x %d cells (at most %d)",
			  node ? node : "?", rows, cols, FIG_MAX_CELLS);
		return PX_ERR_INVALID;
	}
	struct px_sbuf b = {0};
	px_sbuf_addf(&b, "{\"rows\": %d, \"cols\": %d,\n \"title\": ", rows, cols);
	add_json_text(&b, title);
	px_sbuf_add(&b, ", \"x_title\": ");
	add_json_text(&b, x_title);
	px_sbuf_add(&b, ", \"y_title\": ");
	add_json_text(&b, y_title);
	add_labels(&b, "row_labels", row_labels, rows);
	add_labels(&b, "col_labels", col_labels, cols);
	px_sbuf_add(&b, ",\n \"values\": [");
	for (int64_t i = 0; i < (int64_t)rows * cols; i++) {
		px_sbuf_add(&b, i ? (i % cols ? ", " : ",\n  ") : "");
		add_json_num(&b, m[i]);
	}
	px_sbuf_add(&b, "]}\n");
	int rc = sink_write_json(fs, node, "heatmap", title, &b);
	px_sbuf_free(&b);
	return rc;
}

int px_host_figure_series(const struct px_host *h, const char *node, const char *title,
			  const char *x_title, const char *y_title, const double *y, int n)
{
	struct px_figure_sink *fs = sink_of(h);
	if (!fs)
		return PX_ERR_INVALID;
	if (!node || !y || n < 1 || n > FIG_MAX_POINTS) {
		sink_note(fs, "node '%s': figure_series refused: %d points (1..%d)",
			  node ? node : "?", n, FIG_MAX_POINTS);
		return PX_ERR_INVALID;
	}
	struct px_sbuf b = {0};
	px_sbuf_add(&b, "{\"title\": ");
	add_json_text(&b, title);
	px_sbuf_add(&b, ", \"x_title\": ");
	add_json_text(&b, x_title);
	px_sbuf_add(&b, ", \"y_title\": ");
	add_json_text(&b, y_title);
	px_sbuf_add(&b, ",\n \"values\": [");
	for (int i = 0; i < n; i++) {
		px_sbuf_add(&b, i ? (i % 10 ? ", " : ",\n  ") : "");
		add_json_num(&b, y[i]);
	}
	px_sbuf_add(&b, "]}\n");
	int rc = sink_write_json(fs, node, "series", title, &b);
	px_sbuf_free(&b);
	return rc;
}

/* ================================================================ the figure pass */
struct collected {
	char node[64], name[32];
	int n, cap;
	int64_t *t;
	double *v;
};

struct collector {
	struct collected s[MAX_COLLECTED];
	int n;
};

/* px_model.report during the figure pass's backward: (node, series, step, value). */
static void collect_step(void *ctx, const char *node, const char *series, int64_t step,
			 double value)
{
	struct collector *c = ctx;
	if (step < 0 || step >= FIG_MAX_POINTS)
		return;
	struct collected *s = NULL;
	for (int i = 0; i < c->n && !s; i++)
		if (!strcmp(c->s[i].node, node) && !strcmp(c->s[i].name, series))
			s = &c->s[i];
	if (!s) {
		if (c->n == MAX_COLLECTED)
			return;
		s = &c->s[c->n++];
		snprintf(s->node, sizeof s->node, "%s", node);
		snprintf(s->name, sizeof s->name, "%s", series);
	}
	if (s->n == s->cap) {
		int cap = s->cap ? 2 * s->cap : 64;
		int64_t *nt = realloc(s->t, (size_t)cap * sizeof *nt);
		if (nt)
			s->t = nt;
		double *nv = nt ? realloc(s->v, (size_t)cap * sizeof *nv) : NULL;
		if (!nv)
			return;   /* a figure is lost, nothing else */
		s->v = nv;
		s->cap = cap;
	}
	s->t[s->n] = step;
	s->v[s->n++] = value;
}

/* Each collected series as one figure over steps 0..max: gaps where no value came. */
static void emit_collected(const struct px_host *h, struct collector *c)
{
	for (int i = 0; i < c->n; i++) {
		struct collected *s = &c->s[i];
		int64_t T = 0;
		for (int k = 0; k < s->n; k++)
			T = s->t[k] + 1 > T ? s->t[k] + 1 : T;
		double *y = T > 0 ? malloc((size_t)T * sizeof *y) : NULL;
		if (y) {
			for (int64_t t = 0; t < T; t++)
				y[t] = NAN;
			for (int k = 0; k < s->n; k++)
				y[s->t[k]] = s->v[k];
			bool gn = !strcmp(s->name, "grad_norm");
			px_host_figure_series(h, s->node,
					      gn ? "gradient norm over time, ||dLoss/dh_t||" : s->name,
					      gn ? "time step t" : "step", gn ? "||dLoss/dh_t||" : s->name,
					      y, (int)T);
		}
		free(y);
		free(s->t);
		free(s->v);
	}
	c->n = 0;
}

static int pick_split(const struct px_session *s)
{
	if (s->have[PX_SPLIT_TEST] && s->ds[PX_SPLIT_TEST].n > 0)
		return PX_SPLIT_TEST;
	if (s->have[PX_SPLIT_VAL] && s->ds[PX_SPLIT_VAL].n > 0)
		return PX_SPLIT_VAL;
	return PX_SPLIT_TRAIN;
}

/* One batch forward (evaluation mode) and backward with the figure services on. Problems
 * become notes in the index; only running out of memory is an error. The model's state,
 * step counter and gradients are as before afterwards. */
/* An autoencoder's reconstructions, when no plugin drew a picture of its own (a model of
 * core and conv layers): the loss compares a node's output with the input images
 * [B,C,H,W] (C 1 or 3) or [B,H,W]; up to 10 examples, the input above its reconstruction,
 * each picture stretched to its own range unless it lies in [0, 1]. */
static void recon_figure(struct px_session *s, struct px_figure_sink *fs,
			 const struct px_tensor *x, const struct px_tensor *out)
{
	if (fs->images || s->loss_target.node != -1 || s->loss_target.port != 0 ||
	    s->loss_in.node < 0 || !out || px_tensor_numel(out) != px_tensor_numel(x) ||
	    (x->ndim != 4 && x->ndim != 3) || (x->ndim == 4 && x->shape[1] != 1 && x->shape[1] != 3))
		return;
	int64_t B = x->shape[0], C = x->ndim == 4 ? x->shape[1] : 1;
	int64_t ph = x->shape[x->ndim - 2], pw = x->shape[x->ndim - 1];
	const float *rows[2] = {x->data, out->data};
	int W, H;
	unsigned char *px = px_picture_grid(rows, 2, B < 10 ? B : 10, C * ph * pw, (int)C, ph, pw,
					    true, FIG_MAX_SIDE, &W, &H);
	if (!px)
		return;
	const struct px_host *h = &s->reg->host;
	h->figure_image(h, s->model->nodes[s->loss_in.node].spec->name,
			"reconstructions: input (top), output (bottom)", W, H, (int)C, px);
	free(px);
}

static int figure_pass(struct px_session *s, struct px_figure_sink *fs, struct px_error *err)
{
	struct px_model *m = s->model;
	int split = pick_split(s);
	const struct px_dataset *ds = &s->ds[split];
	int64_t n = ds->n < FIG_EXAMPLES ? ds->n : FIG_EXAMPLES;
	if (n <= 0)
		return 0;
	struct px_arena *a = px_arena_new(1 << 20);
	int64_t idx[FIG_EXAMPLES];
	struct px_tensor *x = NULL, *y = NULL;
	struct px_error e = {0};
	struct collector col = {0};
	int rc = 0;
	if (!a)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	for (int64_t i = 0; i < n; i++)
		idx[i] = i;
	if ((rc = px_dataset_gather(ds, idx, n, a, &x, &y, &e))) {
		sink_note(fs, "no figure pass: %s", e.msg);
		rc = rc == PX_ERR_NOMEM ? px_error_set(err, rc, "%s", e.msg) : 0;
		goto done;
	}
	fs->batch = (struct px_figure_batch){
		.struct_size = sizeof fs->batch, .split = px_split_names[split], .x = x, .y = y,
		.n_classes = ds->n_classes, .class_names = (const char *const *)ds->class_names,
		.x_vocab = (const char *const *)ds->x_vocab, .x_vocab_n = ds->x_vocab_n,
		.y_vocab = (const char *const *)ds->y_vocab, .y_vocab_n = ds->y_vocab_n,
	};
	int64_t step = m->step;
	px_model_reset_state(m);
	s->reg->figures = fs;
	if ((rc = px_model_forward(m, x, y, false, &e))) {
		sink_note(fs, "the figure batch's forward failed: %s", e.msg);
	} else {
		const struct px_loss_ops *lo = s->loss_entry->ops;
		struct px_loss_result lr = {0};
		struct px_tensor *d = px_model_grad_buffer(m, s->loss_in);
		rc = lo->forward(s->loss, px_model_output(m, s->loss_in),
				 px_model_output(m, s->loss_target), &lr, d, 1.0f, &e);
		if (!rc && d && lr.count > 0)
			px_scal(px_tensor_numel(d), (float)(1.0 / lr.count), d->data);
		recon_figure(s, fs, x, px_model_output(m, s->loss_in));
		m->report = collect_step;
		m->report_ctx = &col;
		px_model_zero_grad(m);
		if (!rc && d)
			rc = px_model_backward(m, &e);
		m->report = NULL;
		m->report_ctx = NULL;
		px_model_zero_grad(m);
		if (rc)
			sink_note(fs, "no per-step series: the figure batch's backward failed: %s", e.msg);
		emit_collected(&s->reg->host, &col);
	}
	rc = 0;
	s->reg->figures = NULL;
	m->step = step;
	px_model_reset_state(m);
done:
	px_arena_free(a);
	return rc;
}

/* Remove what an earlier figure pass left in dir (fig-* and index.json); create dir. */
static int figures_reset(const char *dir, struct px_error *err)
{
	DIR *d = opendir(dir);
	if (d) {
		struct dirent *de;
		while ((de = readdir(d))) {
			if (strncmp(de->d_name, "fig-", 4) && strcmp(de->d_name, "index.json"))
				continue;
			char p[4400];
			snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
			unlink(p);
		}
		closedir(d);
		return 0;
	}
	if (mkdir(dir, 0755) != 0 && errno != EEXIST)
		return px_error_set(err, PX_ERR_IO, "%s: cannot create: %s", dir, strerror(errno));
	return 0;
}

static int figures_index_write(struct px_figure_sink *fs, const char *split, struct px_error *err)
{
	struct px_sbuf b = {0};
	px_sbuf_add(&b, "{\"format\": \"plexus-figures\", \"version\": 1, \"split\": ");
	if (split)
		px_sbuf_add_json_str(&b, split);
	else
		px_sbuf_add(&b, "null");
	px_sbuf_addf(&b, ",\n  \"figures\": [\n    %s],\n  \"notes\": [\n    %s]}\n",
		     fs->index.s ? fs->index.s : "", fs->notes.s ? fs->notes.s : "");
	char path[4300];
	snprintf(path, sizeof path, "%s/index.json", fs->dir);
	int rc = b.oom || fs->index.oom || fs->notes.oom
			 ? px_error_set(err, PX_ERR_NOMEM, "out of memory")
			 : px_write_file_atomic(path, b.s, b.len, err);
	px_sbuf_free(&b);
	return rc;
}

/* ================================================================ summary.json */
static void src_ref(const struct px_model *m, struct px_src src, char *buf, size_t n)
{
	if (src.node == -1)
		snprintf(buf, n, "%s", src.port == 0 ? "input" : "label");
	else if (src.node < 0)
		snprintf(buf, n, "(not connected)");
	else if (src.port == 0)
		snprintf(buf, n, "%s", m->nodes[src.node].name);
	else
		snprintf(buf, n, "%s.%s", m->nodes[src.node].name,
			 m->nodes[src.node].ops->outputs[src.port].name);
}

static char *summary_json(const struct px_session *s, int train_rc, const char *error,
			  const struct px_metrics *fin, int fin_split)
{
	const struct px_model *m = s->model;
	struct px_sbuf b = {0};
	char sh[160], when[64];
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
	px_sbuf_add(&b, "{\"format\": \"plexus-run-summary\", \"version\": 1,\n \"name\": ");
	px_sbuf_add_json_str(&b, s->pl->name ? s->pl->name : "");
	px_sbuf_add(&b, ", \"plexus\": ");
	px_sbuf_add_json_str(&b, PX_VERSION);
	px_sbuf_addf(&b, ", \"status\": \"%s\", \"error\": ", train_rc ? "failed" : "completed");
	if (train_rc)
		px_sbuf_add_json_str(&b, error && *error ? error : px_status_name(train_rc));
	else
		px_sbuf_add(&b, "null");
	px_sbuf_addf(&b, ",\n \"finished\": \"%s\", \"pipeline_file\": ", when);
	px_sbuf_add_json_str(&b, s->pl->file ? s->pl->file : "");
	px_sbuf_add(&b, ", \"loss\": ");
	px_sbuf_add_json_str(&b, s->pl->loss_kind ? s->pl->loss_kind : "");
	px_sbuf_add(&b, ", \"optimizer\": ");
	px_sbuf_add_json_str(&b, s->optim_entry ? s->optim_entry->kind : "");
	px_sbuf_add(&b, ",\n \"data\": {\"x\": ");
	px_sbuf_add_json_str(&b, px_shape_str(&s->info.x, sh, sizeof sh));
	px_sbuf_add(&b, ", \"y\": ");
	px_sbuf_add_json_str(&b, px_shape_str(&s->info.y, sh, sizeof sh));
	for (int i = 0; i < 3; i++)
		if (s->have[i])
			px_sbuf_addf(&b, ", \"%s\": %lld", px_split_names[i], (long long)s->ds[i].n);
	px_sbuf_add(&b, "},\n \"nodes\": [");
	int64_t total = 0;
	for (int i = 0; i < m->n_nodes; i++) {
		const struct px_node *n = &m->nodes[i];
		const struct px_plugin_rec *pr = n->entry->plugin;
		int64_t pc = px_model_param_count(m, i);
		total += pc;
		px_sbuf_add(&b, i ? ",\n  {\"name\": " : "\n  {\"name\": ");
		px_sbuf_add_json_str(&b, n->name);
		px_sbuf_add(&b, ", \"kind\": ");
		px_sbuf_add_json_str(&b, n->ops->kind);
		px_sbuf_add(&b, ", \"plugin\": ");
		px_sbuf_add_json_str(&b, pr->desc->name);
		px_sbuf_add(&b, ", \"version\": ");
		px_sbuf_add_json_str(&b, pr->desc->version ? pr->desc->version : "");
		px_sbuf_add(&b, ", \"file\": ");
		px_sbuf_add_json_str(&b, pr->path);
		px_sbuf_add(&b, ", \"impl\": ");
		if (n->spec && n->spec->impl)
			px_sbuf_add_json_str(&b, n->spec->impl);
		else
			px_sbuf_add(&b, "null");
		px_sbuf_add(&b, ",\n   \"inputs\": [");
		int np = 0;
		while (n->ops->inputs[np].name)
			np++;
		for (int k = 0; k < n->n_in; k++) {
			char ref[200];
			src_ref(m, n->in[k], ref, sizeof ref);
			px_sbuf_add(&b, k ? ", {\"port\": " : "{\"port\": ");
			px_sbuf_add_json_str(&b, n->ops->inputs[k < np ? k : np - 1].name);
			px_sbuf_add(&b, ", \"from\": ");
			px_sbuf_add_json_str(&b, ref);
			px_sbuf_add(&b, "}");
		}
		px_sbuf_add(&b, "], \"outputs\": [");
		for (int k = 0; k < n->n_out; k++) {
			px_sbuf_add(&b, k ? ", {\"port\": " : "{\"port\": ");
			px_sbuf_add_json_str(&b, n->ops->outputs[k].name);
			px_sbuf_add(&b, ", \"shape\": ");
			px_sbuf_add_json_str(&b, px_shape_str(&n->out_shape[k], sh, sizeof sh));
			px_sbuf_add(&b, "}");
		}
		px_sbuf_addf(&b, "], \"params\": %lld}", (long long)pc);
	}
	px_sbuf_addf(&b, "],\n \"total_params\": %lld,\n \"final\": ", (long long)total);
	if (fin) {
		px_sbuf_addf(&b, "{\"split\": \"%s\", \"examples\": %lld, \"loss\": ",
			     px_split_names[fin_split], (long long)fin->examples);
		add_json_num(&b, fin->loss);
		px_sbuf_add(&b, ", \"accuracy\": ");
		add_json_num(&b, fin->accuracy);
		px_sbuf_add(&b, ", \"metrics\": {");
		for (int i = 0; i < fin->n_extra; i++) {
			px_sbuf_add(&b, i ? ", " : "");
			px_sbuf_add_json_str(&b, fin->extra_name[i]);
			px_sbuf_add(&b, ": ");
			add_json_num(&b, fin->extra[i]);
		}
		px_sbuf_add(&b, "}}");
	} else {
		px_sbuf_add(&b, "null");
	}
	px_sbuf_add(&b, "\n}\n");
	if (b.oom) {
		px_sbuf_free(&b);
		return NULL;
	}
	return b.s;
}

int px_report_train_end(struct px_session *s, const char *run_dir, int train_rc,
			struct px_error *err)
{
	struct px_figure_sink fs = {0};
	struct px_error e = {0};
	struct px_metrics fin;
	int fin_split = -1, rc = 0;
	char *summary = NULL;
	char path[4300];
	snprintf(fs.dir, sizeof fs.dir, "%s/figures", run_dir);
	if ((rc = figures_reset(fs.dir, &e)))
		goto done;
	if (!train_rc) {
		fin_split = s->have[PX_SPLIT_TEST] ? PX_SPLIT_TEST
			    : s->have[PX_SPLIT_VAL] ? PX_SPLIT_VAL : -1;
		if (fin_split >= 0 && (rc = px_evaluate(s, fin_split, &fin, &e)))
			goto done;
		s->final_split = fin_split;
		s->final = fin;
		if ((rc = figure_pass(s, &fs, &e)))
			goto done;
	} else {
		sink_note(&fs, "no figures: training did not complete");
	}
	if ((rc = figures_index_write(&fs, train_rc ? NULL : px_split_names[pick_split(s)], &e)))
		goto done;
	summary = summary_json(s, train_rc, err ? err->msg : NULL, fin_split >= 0 ? &fin : NULL,
			       fin_split);
	snprintf(path, sizeof path, "%s/summary.json", run_dir);
	if (!summary)
		rc = px_error_set(&e, PX_ERR_NOMEM, "out of memory");
	else
		rc = px_write_file_atomic(path, summary, strlen(summary), &e);
	if (!rc) {
		const char *dirs[1] = {run_dir};
		rc = px_report_write(dirs, 1, NULL, &e);
	}
	if (!rc)
		fprintf(stderr, "report: %s/report.html\n", run_dir);
done:
	free(summary);
	px_sbuf_free(&fs.index);
	px_sbuf_free(&fs.notes);
	if (train_rc) {
		if (rc)
			fprintf(stderr, "plexus: could not write the report: %s\n", e.msg);
		return train_rc;
	}
	if (rc && err)
		*err = e;
	return rc;
}

/* ================================================================ reading a run */
struct csv {
	int n_cols, n_rows;
	char *names[CSV_MAX_COLS];
	double *v;   /* [n_rows][n_cols] */
};

static int csv_col(const struct csv *c, const char *name)
{
	for (int k = 0; k < c->n_cols; k++)
		if (!strcmp(c->names[k], name))
			return k;
	return -1;
}

static double csv_at(const struct csv *c, int r, int k)
{
	return c->v[(size_t)r * (size_t)c->n_cols + (size_t)k];
}

static void csv_free(struct csv *c)
{
	for (int k = 0; k < c->n_cols; k++)
		free(c->names[k]);
	free(c->v);
	memset(c, 0, sizeof *c);
}

/* The next line of [*p, end) without its \r\n; advances *p. */
static bool next_line(const char **p, const char *end, const char **ls, size_t *ll)
{
	if (*p >= end)
		return false;
	const char *q = memchr(*p, '\n', (size_t)(end - *p));
	const char *e = q ? q : end;
	*ls = *p;
	*ll = (size_t)(e - *p);
	if (*ll && (*ls)[*ll - 1] == '\r')
		(*ll)--;
	*p = q ? q + 1 : end;
	return true;
}

static double parse_field(const char *s, size_t n)
{
	char buf[64];
	while (n && (*s == ' ' || *s == '\t')) {
		s++;
		n--;
	}
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		n--;
	if (n == 0 || n >= sizeof buf)
		return NAN;
	memcpy(buf, s, n);
	buf[n] = 0;
	char *e;
	double v = strtod(buf, &e);
	return *e ? NAN : v;
}

/* metrics.csv: a header, then one row per epoch; empty and malformed fields read as NaN. A
 * row whose epoch is not after the previous row's (a resumed run repeating epochs) replaces
 * the rows from that epoch on. */
static int csv_parse(const char *text, size_t len, const char *path, struct csv *c,
		     struct px_error *err)
{
	const char *p = text, *end = text + len, *ls;
	size_t ll;
	memset(c, 0, sizeof *c);
	if (len == 0)
		return 0;   /* training stopped before its first epoch ended */
	if (!next_line(&p, end, &ls, &ll) || ll == 0)
		return px_error_set(err, PX_ERR_CORRUPT, "%s: no header line", path);
	for (size_t i = 0; i <= ll && c->n_cols < CSV_MAX_COLS;) {
		size_t j = i;
		while (j < ll && ls[j] != ',')
			j++;
		char *name = malloc(j - i + 1);
		if (!name) {
			csv_free(c);
			return px_error_set(err, PX_ERR_NOMEM, "out of memory");
		}
		memcpy(name, ls + i, j - i);
		name[j - i] = 0;
		c->names[c->n_cols++] = name;
		i = j + 1;
	}
	size_t lines = 1;
	for (const char *q = p; q < end; q++)
		lines += *q == '\n';
	c->v = malloc(lines * (size_t)c->n_cols * sizeof *c->v);
	if (!c->v) {
		csv_free(c);
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	}
	int ec = csv_col(c, "epoch");
	double row[CSV_MAX_COLS];
	while (next_line(&p, end, &ls, &ll)) {
		if (ll == 0)
			continue;
		int k = 0;
		for (size_t i = 0; i <= ll && k < c->n_cols;) {
			size_t j = i;
			while (j < ll && ls[j] != ',')
				j++;
			row[k++] = parse_field(ls + i, j - i);
			i = j + 1;
		}
		while (k < c->n_cols)
			row[k++] = NAN;
		if (ec >= 0 && isfinite(row[ec]))
			while (c->n_rows > 0 && csv_at(c, c->n_rows - 1, ec) >= row[ec])
				c->n_rows--;
		memcpy(c->v + (size_t)c->n_rows * (size_t)c->n_cols, row,
		       (size_t)c->n_cols * sizeof *row);
		c->n_rows++;
	}
	return 0;
}

struct run {
	const char *dir;       /* borrowed */
	char *name, *label;    /* owned */
	struct csv csv;
	bool have_csv;
	struct px_json *sum;   /* summary.json, or NULL */
	struct px_json *figs;  /* figures/index.json, or NULL */
	char *pipeline;        /* pipeline.yaml text, or NULL */
	struct px_sbuf problems;
};

static const char *jstr(const struct px_json *o, const char *key)
{
	const struct px_json *v = px_json_get(o, key);
	return v && v->type == PX_JSON_STRING ? v->s : NULL;
}

static double jnum(const struct px_json *o, const char *key)
{
	const struct px_json *v = px_json_get(o, key);
	return v && (v->type == PX_JSON_INT || v->type == PX_JSON_FLOAT) ? v->f : NAN;
}

static const struct px_json *jarr(const struct px_json *o, const char *key)
{
	const struct px_json *v = px_json_get(o, key);
	return v && v->type == PX_JSON_ARRAY ? v : NULL;
}

static int read_json(const char *path, struct px_json **out, struct px_error *err)
{
	char *text;
	size_t len;
	*out = NULL;
	int rc = px_read_file(path, FILE_MAX_BYTES, &text, &len, err);
	if (rc)
		return rc;
	rc = px_json_parse(text, len, path, out, err);
	free(text);
	if (!rc && (*out)->type != PX_JSON_OBJECT) {
		px_json_free(*out);
		*out = NULL;
		rc = px_error_set(err, PX_ERR_CORRUPT, "%s: not a JSON object", path);
	}
	return rc;
}

static void run_free(struct run *r)
{
	free(r->name);
	free(r->label);
	csv_free(&r->csv);
	px_json_free(r->sum);
	px_json_free(r->figs);
	free(r->pipeline);
	px_sbuf_free(&r->problems);
}

static void run_problem(struct run *r, const struct px_error *e)
{
	px_sbuf_addf(&r->problems, "%s%s", r->problems.len ? "\n" : "", e->msg);
}

/* The `name:` line of a pipeline's text, or NULL. */
static char *pipeline_name(const char *text)
{
	for (const char *p = text; p && *p;) {
		if (!strncmp(p, "name:", 5)) {
			p += 5;
			while (*p == ' ' || *p == '\t')
				p++;
			size_t n = strcspn(p, "#\r\n");
			while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
				n--;
			char *s = malloc(n + 1);
			if (s) {
				memcpy(s, p, n);
				s[n] = 0;
			}
			return s;
		}
		p = strchr(p, '\n');
		p = p ? p + 1 : NULL;
	}
	return NULL;
}

static bool file_exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0;
}

static int run_load(const char *dir, struct run *r, struct px_error *err)
{
	char path[4300];
	struct px_error e = {0};
	memset(r, 0, sizeof *r);
	r->dir = dir;
	struct stat st;
	if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
		return px_error_set(err, PX_ERR_IO, "%s: not a directory", dir);
	snprintf(path, sizeof path, "%s/metrics.csv", dir);
	bool have_csv = file_exists(path);
	if (have_csv) {
		char *text;
		size_t len;
		int rc = px_read_file(path, FILE_MAX_BYTES, &text, &len, err);
		if (rc)
			return rc;
		rc = csv_parse(text, len, path, &r->csv, err);
		free(text);
		if (rc)
			return rc;
		r->have_csv = true;
	}
	snprintf(path, sizeof path, "%s/summary.json", dir);
	if (file_exists(path) && read_json(path, &r->sum, &e))
		run_problem(r, &e);
	if (!have_csv && !r->sum)
		return px_error_set(err, PX_ERR_NOTFOUND,
				    "%s: not a plexus run directory (no metrics.csv or summary.json)", dir);
	snprintf(path, sizeof path, "%s/figures/index.json", dir);
	if (file_exists(path) && read_json(path, &r->figs, &e))
		run_problem(r, &e);
	snprintf(path, sizeof path, "%s/pipeline.yaml", dir);
	size_t len;
	if (file_exists(path) && px_read_file(path, FILE_MAX_BYTES, &r->pipeline, &len, &e))
		run_problem(r, &e);
	const char *n = r->sum ? jstr(r->sum, "name") : NULL;
	if (n)
		r->name = px_strdup(n);
	else if (r->pipeline)
		r->name = pipeline_name(r->pipeline);
	if (!r->name) {
		const char *slash = strrchr(dir, '/');
		r->name = px_strdup(slash && slash[1] ? slash + 1 : dir);
	}
	if (!r->name)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	return 0;
}

/* ================================================================ HTML */
static const char css[] =
	"body{font-family:'DejaVu Sans',Verdana,system-ui,sans-serif;margin:0;background:#f3f4f6;"
	"color:#1c2024;font-size:14px}\n"
	"header{background:#1f2d3a;color:#fff;padding:18px 32px 16px}\n"
	"header h1{margin:0 0 6px;font-size:26px}\n"
	"header p{margin:0;color:#c5d0da;font-size:13px}\n"
	"main{padding:4px 32px 24px;max-width:1180px}\n"
	"section{background:#fff;border:1px solid #dce0e5;border-radius:6px;padding:10px 18px 14px;"
	"margin:14px 0}\n"
	"h2{font-size:18px;margin:6px 0 10px}\n"
	"h3{font-size:15px;margin:12px 0 4px}\n"
	"table{border-collapse:collapse;font-size:13px}\n"
	"th,td{border-bottom:1px solid #e5e8eb;padding:4px 10px;text-align:left;vertical-align:top}\n"
	"th{background:#f6f8fa}\n"
	"td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}\n"
	".cards{display:flex;flex-wrap:wrap;gap:10px;margin-bottom:10px}\n"
	".card{background:#f6f8fa;border:1px solid #e1e5e9;border-radius:6px;padding:8px 14px;"
	"min-width:120px}\n"
	".card .k{font-size:12px;color:#56616b}\n"
	".card .v{font-size:20px;font-weight:bold;margin-top:2px}\n"
	".charts{display:flex;flex-wrap:wrap;gap:10px}\n"
	".charts svg{border:1px solid #e5e8eb;border-radius:4px}\n"
	"figure{display:inline-block;vertical-align:top;margin:6px 14px 10px 0}\n"
	"figcaption{font-size:13px;color:#3d464f;margin-top:4px}\n"
	"figure img{image-rendering:pixelated;border:1px solid #e5e8eb}\n"
	"pre{background:#f6f8fa;border:1px solid #e1e5e9;padding:10px;overflow:auto;font-size:12px;"
	"white-space:pre-wrap}\n"
	".error{background:#fdecea;border:1px solid #f1b8b4;color:#86181d;padding:10px 14px;"
	"border-radius:6px;margin-top:14px}\n"
	".muted{color:#66707a}\n"
	"code{font-size:12px}\n";

static void fmt_g(char *buf, size_t n, double v, int prec)
{
	if (isfinite(v))
		snprintf(buf, n, "%.*g", prec, v);
	else
		snprintf(buf, n, "\xe2\x80\x93");   /* en dash */
}

/* Like fmt_g, but whole numbers from 10,000 on with thousands separators ("332,112"). */
static void fmt_big(char *buf, size_t n, double v, int prec)
{
	if (!isfinite(v) || fabs(v) < 1e4 || fabs(v) >= 1e15) {
		fmt_g(buf, n, v, prec);
		return;
	}
	char digits[32];
	snprintf(digits, sizeof digits, "%.0f", fabs(v));
	size_t len = strlen(digits), o = 0;
	if (v < 0 && o + 1 < n)
		buf[o++] = '-';
	for (size_t i = 0; i < len && o + 2 < n; i++) {
		if (i && (len - i) % 3 == 0)
			buf[o++] = ',';
		buf[o++] = digits[i];
	}
	buf[o] = 0;
}

static void fmt_duration(char *buf, size_t n, double s)
{
	if (!isfinite(s))
		snprintf(buf, n, "\xe2\x80\x93");
	else if (s < 60)
		snprintf(buf, n, "%.3g s", s);
	else if (s < 3600)
		snprintf(buf, n, "%d min %02d s", (int)(s / 60), (int)fmod(s, 60));
	else
		snprintf(buf, n, "%d h %02d min", (int)(s / 3600), (int)fmod(s / 60, 60));
}

static void add_card(struct px_sbuf *b, const char *key, const char *value)
{
	px_sbuf_add(b, "<div class=\"card\"><div class=\"k\">");
	px_sbuf_add_html(b, key);
	px_sbuf_add(b, "</div><div class=\"v\">");
	px_sbuf_add_html(b, value);
	px_sbuf_add(b, "</div></div>\n");
}

static void add_td(struct px_sbuf *b, const char *cls, const char *text)
{
	px_sbuf_add(b, cls ? "<td class=\"num\">" : "<td>");
	px_sbuf_add_html(b, text);
	px_sbuf_add(b, "</td>");
}

/* Column k of a run's metrics as a new array (NaN where empty); NULL when absent. */
static double *column(const struct run *r, const char *name)
{
	int k = r->have_csv ? csv_col(&r->csv, name) : -1;
	if (k < 0 || r->csv.n_rows == 0)
		return NULL;
	double *v = malloc((size_t)r->csv.n_rows * sizeof *v);
	bool any = false;
	for (int i = 0; v && i < r->csv.n_rows; i++) {
		v[i] = csv_at(&r->csv, i, k);
		any |= isfinite(v[i]);
	}
	if (!any) {
		free(v);
		return NULL;
	}
	return v;
}

/* Sum of seconds and of items (items_per_s x seconds) over the epochs. */
static void run_times(const struct run *r, double *secs, double *items, int *epochs)
{
	*secs = 0;
	*items = 0;
	*epochs = r->have_csv ? r->csv.n_rows : 0;
	int ks = r->have_csv ? csv_col(&r->csv, "seconds") : -1;
	int ki = r->have_csv ? csv_col(&r->csv, "items_per_s") : -1;
	for (int i = 0; ks >= 0 && i < r->csv.n_rows; i++) {
		double s = csv_at(&r->csv, i, ks), ips = ki >= 0 ? csv_at(&r->csv, i, ki) : NAN;
		if (isfinite(s)) {
			*secs += s;
			if (isfinite(ips))
				*items += ips * s;
		}
	}
	if (ks < 0)
		*secs = NAN;
}

#define MAX_CURVES 64

/* A chart of columns cols[0..n_cols) (labels names[]) of every run against the epoch. One
 * run: a colour per column. Several: a colour per run, the first column dashed. log_auto:
 * a log y axis when every value is positive and they span three decades. */
static void chart(struct px_sbuf *b, const struct run *runs, int n_runs, const char *title,
		  const char *y_title, const char *const *cols, const char *const *names, int n_cols,
		  bool log_auto)
{
	struct px_series se[MAX_CURVES];
	double *mem[2 * MAX_CURVES];
	char *labels[MAX_CURVES];
	int ns = 0, nm = 0;
	double lo = INFINITY, hi = -INFINITY;
	bool positive = true;
	for (int r = 0; r < n_runs; r++) {
		double *x = column(&runs[r], "epoch");
		if (x)
			mem[nm++] = x;
		for (int j = 0; j < n_cols && ns < MAX_CURVES; j++) {
			double *y = column(&runs[r], cols[j]);
			if (!y)
				continue;
			mem[nm++] = y;
			for (int i = 0; i < runs[r].csv.n_rows; i++)
				if (isfinite(y[i])) {
					lo = fmin(lo, y[i]);
					hi = fmax(hi, y[i]);
					positive &= y[i] > 0;
				}
			labels[ns] = n_runs == 1 ? px_strdup(names[j])
				     : px_asprintf("%s: %s", runs[r].label, names[j]);
			se[ns] = (struct px_series){
				.name = labels[ns], .x = x, .y = y, .n = runs[r].csv.n_rows,
				.color = n_runs == 1 ? j : r, .dashed = n_runs > 1 && n_cols > 1 && j == 0,
			};
			ns++;
		}
	}
	if (ns > 0) {
		struct px_line_chart c = {
			.title = title, .x_title = "epoch", .y_title = y_title, .width = 520,
			.height = 300, .log_y = log_auto && positive && hi >= 1000 * lo,
			.x_integer = true, .series = se, .n_series = ns,
		};
		char *svg = px_chart_line_svg(&c);
		if (svg)
			px_sbuf_add(b, svg);
		else
			b->oom = true;
		free(svg);
	}
	for (int i = 0; i < ns; i++)
		free(labels[i]);
	for (int i = 0; i < nm; i++)
		free(mem[i]);
}

/* The validation metrics beyond loss and accuracy in the runs' metrics.csv. */
static int extra_metrics(const struct run *runs, int n_runs, const char **out, int max)
{
	int n = 0;
	for (int r = 0; r < n_runs; r++)
		for (int k = 0; runs[r].have_csv && k < runs[r].csv.n_cols; k++) {
			const char *c = runs[r].csv.names[k];
			if (strncmp(c, "val_", 4) || !strcmp(c, "val_loss") || !strcmp(c, "val_accuracy"))
				continue;
			bool seen = false;
			for (int i = 0; i < n; i++)
				seen |= !strcmp(out[i], c);
			if (!seen && n < max)
				out[n++] = c;
		}
	return n;
}

static void charts(struct px_sbuf *b, const struct run *runs, int n)
{
	static const char *const tv[2] = {"train", "validation"};
	px_sbuf_add(b, "<section id=\"curves\"><h2>Training curves</h2>\n<div class=\"charts\">\n");
	const char *loss_cols[2] = {"train_loss", "val_loss"};
	chart(b, runs, n, "loss per epoch", "loss", loss_cols, tv, 2, false);
	const char *acc_cols[2] = {"train_accuracy", "val_accuracy"};
	chart(b, runs, n, "accuracy per epoch", "accuracy", acc_cols, tv, 2, false);
	const char *extra[CSV_MAX_COLS];
	int ne = extra_metrics(runs, n, extra, CSV_MAX_COLS);
	if (n == 1 && ne > 0 && ne <= 10) {   /* one chart of all, named without "val_" */
		const char *names[CSV_MAX_COLS];
		for (int i = 0; i < ne; i++)
			names[i] = extra[i] + 4;
		chart(b, runs, n, "validation metrics per epoch", "value", extra, names, ne, false);
	} else {
		for (int i = 0; i < ne; i++) {
			char t[160];
			snprintf(t, sizeof t, "validation %s per epoch", extra[i] + 4);
			const char *names[1] = {extra[i] + 4};
			chart(b, runs, n, t, extra[i] + 4, &extra[i], names, 1, false);
		}
	}
	const char *lr[1] = {"lr"}, *lrn[1] = {"learning rate"};
	chart(b, runs, n, "learning rate (end of epoch)", "learning rate", lr, lrn, 1, true);
	const char *gn[1] = {"grad_norm"}, *gnn[1] = {"mean gradient norm"};
	chart(b, runs, n, "gradient norm (mean over the epoch's steps, before clipping)",
	      "||gradient||", gn, gnn, 1, true);
	const char *ips[1] = {"items_per_s"}, *ipsn[1] = {"items/s"};
	chart(b, runs, n, "throughput (training examples per second)", "items/s", ips, ipsn, 1,
	      false);
	const char *sec[1] = {"seconds"}, *secn[1] = {"seconds"};
	chart(b, runs, n, "wall time per epoch (training)", "seconds", sec, secn, 1, false);
	px_sbuf_add(b, "</div></section>\n");
}

static void epoch_table(struct px_sbuf *b, const struct run *r)
{
	if (!r->have_csv || r->csv.n_rows == 0)
		return;
	px_sbuf_add(b, "<section id=\"epochs\"><h2>Per epoch (metrics.csv)</h2>\n<table><tr>");
	for (int k = 0; k < r->csv.n_cols; k++) {
		px_sbuf_add(b, "<th class=\"num\">");
		px_sbuf_add_html(b, r->csv.names[k]);
		px_sbuf_add(b, "</th>");
	}
	px_sbuf_add(b, "</tr>\n");
	int first = r->csv.n_rows > 200 ? r->csv.n_rows - 200 : 0;
	for (int i = first; i < r->csv.n_rows; i++) {
		px_sbuf_add(b, "<tr>");
		for (int k = 0; k < r->csv.n_cols; k++) {
			char v[64];
			fmt_g(v, sizeof v, csv_at(&r->csv, i, k), 6);
			add_td(b, "num", v);
		}
		px_sbuf_add(b, "</tr>\n");
	}
	px_sbuf_add(b, "</table>\n");
	if (first)
		px_sbuf_addf(b, "<p class=\"muted\">the last 200 of %d epochs</p>\n", r->csv.n_rows);
	px_sbuf_add(b, "</section>\n");
}

/* The final metrics of summary.json as (name, value) pairs: loss, accuracy, extras. */
static int final_metrics(const struct run *r, const char **names, double *vals, int max)
{
	const struct px_json *f = r->sum ? px_json_get(r->sum, "final") : NULL;
	if (!f || f->type != PX_JSON_OBJECT)
		return 0;
	int n = 0;
	names[n] = "loss";
	vals[n++] = jnum(f, "loss");
	if (isfinite(jnum(f, "accuracy"))) {
		names[n] = "accuracy";
		vals[n++] = jnum(f, "accuracy");
	}
	const struct px_json *m = px_json_get(f, "metrics");
	for (int i = 0; m && m->type == PX_JSON_OBJECT && i < m->n && n < max; i++) {
		names[n] = m->k[i];
		vals[n++] = m->v[i].type == PX_JSON_INT || m->v[i].type == PX_JSON_FLOAT ? m->v[i].f : NAN;
	}
	return n;
}

static void model_table(struct px_sbuf *b, const struct run *r)
{
	const struct px_json *nodes = r->sum ? jarr(r->sum, "nodes") : NULL;
	if (!nodes) {
		px_sbuf_add(b, "<p class=\"muted\">no model summary (summary.json is missing)</p>\n");
		return;
	}
	const struct px_json *d = px_json_get(r->sum, "data");
	if (d && d->type == PX_JSON_OBJECT) {
		px_sbuf_add(b, "<p>data: inputs <code>");
		px_sbuf_add_html(b, jstr(d, "x"));
		px_sbuf_add(b, "</code>, targets <code>");
		px_sbuf_add_html(b, jstr(d, "y"));
		px_sbuf_add(b, "</code>");
		for (int i = 0; i < 3; i++)
			if (isfinite(jnum(d, px_split_names[i])))
				px_sbuf_addf(b, ", %s: %.0f examples", px_split_names[i],
					     jnum(d, px_split_names[i]));
		px_sbuf_add(b, "; loss <code>");
		px_sbuf_add_html(b, jstr(r->sum, "loss"));
		px_sbuf_add(b, "</code>, optimizer <code>");
		px_sbuf_add_html(b, jstr(r->sum, "optimizer"));
		px_sbuf_add(b, "</code></p>\n");
	}
	px_sbuf_add(b, "<table><tr><th>node</th><th>kind</th><th>plugin</th>"
		    "<th>implementation</th><th>inputs</th><th>outputs</th>"
		    "<th class=\"num\">parameters</th></tr>\n");
	for (int i = 0; i < nodes->n; i++) {
		const struct px_json *n = &nodes->v[i];
		if (n->type != PX_JSON_OBJECT)
			continue;
		char pc[64];
		px_sbuf_add(b, "<tr>");
		add_td(b, NULL, jstr(n, "name"));
		add_td(b, NULL, jstr(n, "kind"));
		char plug[400];
		snprintf(plug, sizeof plug, "%s %s", jstr(n, "plugin") ? jstr(n, "plugin") : "?",
			 jstr(n, "version") ? jstr(n, "version") : "");
		add_td(b, NULL, plug);
		px_sbuf_add(b, "<td><code>");
		px_sbuf_add_html(b, jstr(n, "file"));
		px_sbuf_add(b, "</code>");
		if (jstr(n, "impl")) {
			px_sbuf_add(b, " (impl: ");
			px_sbuf_add_html(b, jstr(n, "impl"));
			px_sbuf_add(b, ")");
		}
		px_sbuf_add(b, "</td><td>");
		const struct px_json *ins = jarr(n, "inputs"), *outs = jarr(n, "outputs");
		for (int k = 0; ins && k < ins->n; k++) {
			px_sbuf_add(b, k ? "<br>" : "");
			px_sbuf_add_html(b, jstr(&ins->v[k], "port"));
			px_sbuf_add(b, " \xe2\x86\x90 ");   /* ← */
			px_sbuf_add_html(b, jstr(&ins->v[k], "from"));
		}
		px_sbuf_add(b, "</td><td>");
		for (int k = 0; outs && k < outs->n; k++) {
			px_sbuf_add(b, k ? "<br>" : "");
			px_sbuf_add_html(b, jstr(&outs->v[k], "port"));
			px_sbuf_add(b, " <code>");
			px_sbuf_add_html(b, jstr(&outs->v[k], "shape"));
			px_sbuf_add(b, "</code>");
		}
		px_sbuf_add(b, "</td>");
		snprintf(pc, sizeof pc, "%.0f", jnum(n, "params"));
		add_td(b, "num", isfinite(jnum(n, "params")) ? pc : "?");
		px_sbuf_add(b, "</tr>\n");
	}
	char tot[64];
	snprintf(tot, sizeof tot, "%.0f", jnum(r->sum, "total_params"));
	px_sbuf_add(b, "<tr><th colspan=\"6\">total trainable parameters</th>");
	add_td(b, "num", isfinite(jnum(r->sum, "total_params")) ? tot : "?");
	px_sbuf_add(b, "</tr></table>\n");
}

/* ---------------------------------------------------------------- figures */
static void add_base64(struct px_sbuf *b, const unsigned char *d, size_t n)
{
	static const char tbl[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	char out[4096];
	size_t o = 0;
	for (size_t i = 0; i < n; i += 3) {
		unsigned v = (unsigned)d[i] << 16 | (i + 1 < n ? (unsigned)d[i + 1] << 8 : 0) |
			     (i + 2 < n ? d[i + 2] : 0);
		out[o++] = tbl[v >> 18 & 63];
		out[o++] = tbl[v >> 12 & 63];
		out[o++] = i + 1 < n ? tbl[v >> 6 & 63] : '=';
		out[o++] = i + 2 < n ? tbl[v & 63] : '=';
		if (o + 4 > sizeof out) {
			px_sbuf_addn(b, out, o);
			o = 0;
		}
	}
	px_sbuf_addn(b, out, o);
}

/* fig-NNN.png or fig-NNN.json, nothing else (the index is not trusted). */
static bool figure_file_ok(const char *f, const char *ext)
{
	size_t n = f ? strlen(f) : 0, el = strlen(ext);
	if (n < 5 + 1 + el || n > 24 || strncmp(f, "fig-", 4) || f[n - el - 1] != '.' ||
	    strcmp(f + n - el, ext))
		return false;
	for (size_t i = 4; i < n - el - 1; i++)
		if (f[i] < '0' || f[i] > '9')
			return false;
	return true;
}

static bool render_image(struct px_sbuf *b, const char *path, const char *title)
{
	char *d;
	size_t n;
	struct px_error e;
	if (px_read_file(path, PNG_MAX_BYTES, &d, &n, &e))
		return false;
	const unsigned char *u = (const unsigned char *)d;
	bool ok = n > 24 && !memcmp(u, "\x89PNG\r\n\x1a\n", 8) && !memcmp(u + 12, "IHDR", 4);
	unsigned w = ok ? (unsigned)u[16] << 24 | (unsigned)u[17] << 16 | (unsigned)u[18] << 8 | u[19] : 0;
	unsigned h = ok ? (unsigned)u[20] << 24 | (unsigned)u[21] << 16 | (unsigned)u[22] << 8 | u[23] : 0;
	ok &= w >= 1 && h >= 1 && w <= FIG_MAX_SIDE && h <= FIG_MAX_SIDE;
	if (ok) {
		/* small pictures scaled up by a whole factor, pixels kept sharp */
		unsigned s = 720 / w < 520 / h ? 720 / w : 520 / h;
		s = s < 1 ? 1 : s > 8 ? 8 : s;
		px_sbuf_addf(b, "<img width=\"%u\" height=\"%u\" alt=\"", w * s, h * s);
		px_sbuf_add_html(b, title);
		px_sbuf_add(b, "\" src=\"data:image/png;base64,");
		add_base64(b, u, n);
		px_sbuf_add(b, "\">");
	}
	free(d);
	return ok;
}

/* Labels of a heat-map file: NULL (absent), or n strings borrowed from the JSON. */
static bool json_labels(const struct px_json *o, const char *key, int n, const char **out,
			bool *have)
{
	const struct px_json *v = px_json_get(o, key);
	*have = false;
	if (!v || v->type == PX_JSON_NULL)
		return true;
	if (v->type != PX_JSON_ARRAY || v->n != n)
		return false;
	for (int i = 0; i < n; i++) {
		if (v->v[i].type != PX_JSON_STRING)
			return false;
		out[i] = v->v[i].s;
	}
	*have = true;
	return true;
}

static bool render_heatmap(struct px_sbuf *b, const char *path)
{
	struct px_json *j;
	struct px_error e;
	if (read_json(path, &j, &e))
		return false;
	double rd = jnum(j, "rows"), cd = jnum(j, "cols");
	const struct px_json *vals = jarr(j, "values");
	bool ok = rd >= 1 && cd >= 1 && rd * cd <= FIG_MAX_CELLS && vals && vals->n == (int)(rd * cd);
	int rows = ok ? (int)rd : 0, cols = ok ? (int)cd : 0;
	float *m = ok ? malloc((size_t)rows * (size_t)cols * sizeof *m) : NULL;
	const char **rl = ok ? calloc((size_t)rows, sizeof *rl) : NULL;
	const char **cl = ok ? calloc((size_t)cols, sizeof *cl) : NULL;
	bool hr = false, hc = false;
	ok = ok && m && rl && cl && json_labels(j, "row_labels", rows, rl, &hr) &&
	     json_labels(j, "col_labels", cols, cl, &hc);
	for (int i = 0; ok && i < rows * cols; i++) {
		const struct px_json *v = &vals->v[i];
		m[i] = v->type == PX_JSON_INT || v->type == PX_JSON_FLOAT ? (float)v->f : NAN;
	}
	char *svg = ok ? px_chart_heatmap_svg(m, rows, cols, hr ? rl : NULL, hc ? cl : NULL,
					      jstr(j, "title"), jstr(j, "x_title"), jstr(j, "y_title"))
		       : NULL;
	if (svg)
		px_sbuf_add(b, svg);
	free(svg);
	free(m);
	free(rl);
	free(cl);
	px_json_free(j);
	return svg != NULL;
}

static bool render_series(struct px_sbuf *b, const char *path)
{
	struct px_json *j;
	struct px_error e;
	if (read_json(path, &j, &e))
		return false;
	const struct px_json *vals = jarr(j, "values");
	int n = vals && vals->n <= FIG_MAX_POINTS ? vals->n : 0;
	double *x = n ? malloc((size_t)n * sizeof *x) : NULL;
	double *y = n ? malloc((size_t)n * sizeof *y) : NULL;
	double lo = INFINITY, hi = -INFINITY;
	bool positive = true;
	for (int i = 0; x && y && i < n; i++) {
		const struct px_json *v = &vals->v[i];
		x[i] = i;
		y[i] = v->type == PX_JSON_INT || v->type == PX_JSON_FLOAT ? v->f : NAN;
		if (isfinite(y[i])) {
			lo = fmin(lo, y[i]);
			hi = fmax(hi, y[i]);
			positive &= y[i] > 0;
		}
	}
	char *svg = NULL;
	if (x && y) {
		struct px_series se = {.name = NULL, .x = x, .y = y, .n = n, .color = 0};
		struct px_line_chart c = {
			.title = jstr(j, "title"), .x_title = jstr(j, "x_title"),
			.y_title = jstr(j, "y_title"), .width = 520, .height = 300,
			.log_y = positive && hi >= 100 * lo, .x_integer = true, .series = &se,
			.n_series = 1,
		};
		svg = px_chart_line_svg(&c);
	}
	if (svg)
		px_sbuf_add(b, svg);
	free(svg);
	free(x);
	free(y);
	px_json_free(j);
	return svg != NULL;
}

static void figures_section(struct px_sbuf *b, const struct run *r)
{
	const struct px_json *list = r->figs ? jarr(r->figs, "figures") : NULL;
	const struct px_json *notes = r->figs ? jarr(r->figs, "notes") : NULL;
	if ((!list || list->n == 0) && (!notes || notes->n == 0))
		return;
	px_sbuf_add(b, "<section id=\"figures\"><h2>Figures from the model's layers</h2>\n");
	if (jstr(r->figs, "split")) {
		px_sbuf_add(b, "<p class=\"muted\">drawn by the plugins on the first examples of the ");
		px_sbuf_add_html(b, jstr(r->figs, "split"));
		px_sbuf_add(b, " split, in evaluation mode, with the final parameters</p>\n");
	}
	const char *prev = NULL;
	for (int i = 0; list && i < list->n; i++) {
		const struct px_json *f = &list->v[i];
		const char *node = jstr(f, "node"), *type = jstr(f, "type"), *file = jstr(f, "file");
		const char *title = jstr(f, "title");
		if (!node || !type || !file)
			continue;
		if (!prev || strcmp(prev, node)) {
			px_sbuf_add(b, "<h3>node ");
			px_sbuf_add_html(b, node);
			px_sbuf_add(b, "</h3>\n");
		}
		prev = node;
		char path[4400];
		bool image = !strcmp(type, "image");
		bool ok = figure_file_ok(file, image ? "png" : "json");
		snprintf(path, sizeof path, "%s/figures/%s", r->dir, ok ? file : "");
		px_sbuf_add(b, "<figure>");
		if (ok && image)
			ok = render_image(b, path, title);
		else if (ok && !strcmp(type, "heatmap"))
			ok = render_heatmap(b, path);
		else if (ok && !strcmp(type, "series"))
			ok = render_series(b, path);
		else
			ok = false;
		if (!ok) {
			px_sbuf_add(b, "<p class=\"muted\">figure file missing or malformed: ");
			px_sbuf_add_html(b, file);
			px_sbuf_add(b, "</p>");
		}
		if (image) {   /* the SVGs carry their title */
			px_sbuf_add(b, "<figcaption>");
			px_sbuf_add_html(b, title);
			px_sbuf_add(b, "</figcaption>");
		}
		px_sbuf_add(b, "</figure>\n");
	}
	for (int i = 0; notes && i < notes->n; i++)
		if (notes->v[i].type == PX_JSON_STRING) {
			px_sbuf_add(b, "<p class=\"muted\">note: ");
			px_sbuf_add_html(b, notes->v[i].s);
			px_sbuf_add(b, "</p>\n");
		}
	px_sbuf_add(b, "</section>\n");
}

/* ---------------------------------------------------------------- pages */
static void page_head(struct px_sbuf *b, const char *title)
{
	px_sbuf_add(b, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
		    "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
		    "img-src data:; style-src 'unsafe-inline'\">\n"
		    "<meta name=\"generator\" content=\"plexus " PX_VERSION "\">\n<title>");
	px_sbuf_add_html(b, title);
	px_sbuf_addf(b, "</title>\n<style>\n%s</style>\n</head>\n<body>\n", css);
}

static void summary_section(struct px_sbuf *b, const struct run *r)
{
	const char *names[40];
	double vals[40];
	int nf = final_metrics(r, names, vals, 40);
	const struct px_json *f = r->sum ? px_json_get(r->sum, "final") : NULL;
	const char *split = f ? jstr(f, "split") : NULL;
	double secs, items;
	int epochs;
	run_times(r, &secs, &items, &epochs);
	char k[200], v[64];
	px_sbuf_add(b, "<section id=\"summary\"><h2>Summary</h2>\n<div class=\"cards\">\n");
	for (int i = 0; i < nf; i++) {
		snprintf(k, sizeof k, "%s %s", split ? split : "final", names[i]);
		fmt_g(v, sizeof v, vals[i], 4);
		add_card(b, k, v);
	}
	snprintf(v, sizeof v, "%d", epochs);
	add_card(b, "epochs", v);
	fmt_duration(v, sizeof v, secs);
	add_card(b, "training wall time", v);
	fmt_big(v, sizeof v, secs > 0 ? items / secs : NAN, 4);
	add_card(b, "items/s (mean)", v);
	if (r->sum && isfinite(jnum(r->sum, "total_params"))) {
		snprintf(v, sizeof v, "%.0f", jnum(r->sum, "total_params"));
		add_card(b, "trainable parameters", v);
	}
	px_sbuf_add(b, "</div>\n");
	if (nf > 0) {
		px_sbuf_add(b, "<h3>Final metrics</h3>\n<table><tr><th>split</th>"
			    "<th class=\"num\">examples</th>");
		for (int i = 0; i < nf; i++) {
			px_sbuf_add(b, "<th class=\"num\">");
			px_sbuf_add_html(b, names[i]);
			px_sbuf_add(b, "</th>");
		}
		px_sbuf_add(b, "</tr>\n<tr>");
		add_td(b, NULL, split ? split : "?");
		fmt_g(v, sizeof v, jnum(f, "examples"), 12);
		add_td(b, "num", v);
		for (int i = 0; i < nf; i++) {
			fmt_g(v, sizeof v, vals[i], 6);
			add_td(b, "num", v);
		}
		px_sbuf_add(b, "</tr></table>\n");
	} else {
		px_sbuf_add(b, "<p class=\"muted\">no final metrics (no test or validation split, or "
			    "training did not complete)</p>\n");
	}
	px_sbuf_add(b, "</section>\n");
}

static void run_header(struct px_sbuf *b, const struct run *r)
{
	px_sbuf_add(b, "<header><h1>");
	px_sbuf_add_html(b, r->name);
	px_sbuf_add(b, "</h1><p>run directory <code>");
	px_sbuf_add_html(b, r->dir);
	px_sbuf_add(b, "</code>");
	if (r->sum) {
		px_sbuf_add(b, " \xc2\xb7 plexus ");
		px_sbuf_add_html(b, jstr(r->sum, "plexus"));
		px_sbuf_add(b, " \xc2\xb7 ");
		px_sbuf_add_html(b, jstr(r->sum, "status"));
		px_sbuf_add(b, " ");
		px_sbuf_add_html(b, jstr(r->sum, "finished"));
	}
	px_sbuf_add(b, "</p></header>\n<main>\n");
	const char *error = r->sum ? jstr(r->sum, "error") : NULL;
	if (error) {
		px_sbuf_add(b, "<div class=\"error\"><b>Training stopped:</b> ");
		px_sbuf_add_html(b, error);
		px_sbuf_add(b, "</div>\n");
	}
	if (r->problems.len) {
		px_sbuf_add(b, "<div class=\"error\">Some files of the run could not be read:<pre>");
		px_sbuf_add_html(b, r->problems.s);
		px_sbuf_add(b, "</pre></div>\n");
	}
}

static void pipeline_section(struct px_sbuf *b, const struct run *r)
{
	if (!r->pipeline)
		return;
	px_sbuf_add(b, "<section id=\"pipeline\"><h2>Pipeline (resolved, pipeline.yaml)</h2>\n<pre>");
	px_sbuf_add_html(b, r->pipeline);
	px_sbuf_add(b, "</pre></section>\n");
}

static void page_single(struct px_sbuf *b, const struct run *r)
{
	char title[600];
	snprintf(title, sizeof title, "%s \xe2\x80\x94 plexus run report", r->name);
	page_head(b, title);
	run_header(b, r);
	summary_section(b, r);
	charts(b, r, 1);
	px_sbuf_add(b, "<section id=\"model\"><h2>Model</h2>\n");
	model_table(b, r);
	px_sbuf_add(b, "</section>\n");
	figures_section(b, r);
	epoch_table(b, r);
	pipeline_section(b, r);
	px_sbuf_add(b, "</main>\n</body>\n</html>\n");
}

static void page_compare(struct px_sbuf *b, const struct run *runs, int n)
{
	struct px_sbuf t = {0};
	for (int i = 0; i < n; i++)
		px_sbuf_addf(&t, "%s%s", i ? " vs " : "", runs[i].label);
	page_head(b, t.s ? t.s : "comparison");
	px_sbuf_add(b, "<header><h1>");
	px_sbuf_add_html(b, t.s);
	px_sbuf_addf(b, "</h1><p>comparison of %d plexus runs</p></header>\n<main>\n", n);
	px_sbuf_free(&t);
	/* one row per run: where, how long, final metrics (the union of the runs' names) */
	const char *mnames[64];
	int nm = 0;
	for (int r = 0; r < n; r++) {
		const char *names[40];
		double vals[40];
		int nf = final_metrics(&runs[r], names, vals, 40);
		for (int i = 0; i < nf; i++) {
			bool seen = false;
			for (int j = 0; j < nm; j++)
				seen |= !strcmp(mnames[j], names[i]);
			if (!seen && nm < 64)
				mnames[nm++] = names[i];
		}
	}
	px_sbuf_add(b, "<section id=\"summary\"><h2>Runs</h2>\n<table><tr><th>run</th>"
		    "<th>directory</th><th>status</th><th class=\"num\">epochs</th>"
		    "<th class=\"num\">wall time</th><th class=\"num\">items/s</th>"
		    "<th class=\"num\">parameters</th><th>final split</th>");
	for (int j = 0; j < nm; j++) {
		px_sbuf_add(b, "<th class=\"num\">");
		px_sbuf_add_html(b, mnames[j]);
		px_sbuf_add(b, "</th>");
	}
	px_sbuf_add(b, "</tr>\n");
	for (int r = 0; r < n; r++) {
		const struct run *ru = &runs[r];
		double secs, items;
		int epochs;
		char v[64];
		run_times(ru, &secs, &items, &epochs);
		px_sbuf_addf(b, "<tr><td><span style=\"color:%s\">\xe2\x96\xa0</span> ",
			     px_chart_color(r));
		px_sbuf_add_html(b, ru->label);
		px_sbuf_add(b, "</td>");
		add_td(b, NULL, ru->dir);
		add_td(b, NULL, ru->sum && jstr(ru->sum, "status") ? jstr(ru->sum, "status") : "?");
		snprintf(v, sizeof v, "%d", epochs);
		add_td(b, "num", v);
		fmt_duration(v, sizeof v, secs);
		add_td(b, "num", v);
		fmt_big(v, sizeof v, secs > 0 ? items / secs : NAN, 4);
		add_td(b, "num", v);
		fmt_g(v, sizeof v, ru->sum ? jnum(ru->sum, "total_params") : NAN, 12);
		add_td(b, "num", v);
		const struct px_json *f = ru->sum ? px_json_get(ru->sum, "final") : NULL;
		add_td(b, NULL, f && jstr(f, "split") ? jstr(f, "split") : "\xe2\x80\x93");
		const char *names[40];
		double vals[40];
		int nf = final_metrics(ru, names, vals, 40);
		for (int j = 0; j < nm; j++) {
			double x = NAN;
			for (int i = 0; i < nf; i++)
				if (!strcmp(names[i], mnames[j]))
					x = vals[i];
			fmt_g(v, sizeof v, x, 6);
			add_td(b, "num", v);
		}
		px_sbuf_add(b, "</tr>\n");
	}
	px_sbuf_add(b, "</table>\n");
	for (int r = 0; r < n; r++)
		if (runs[r].sum && jstr(runs[r].sum, "error")) {
			px_sbuf_add(b, "<div class=\"error\"><b>");
			px_sbuf_add_html(b, runs[r].label);
			px_sbuf_add(b, " stopped:</b> ");
			px_sbuf_add_html(b, jstr(runs[r].sum, "error"));
			px_sbuf_add(b, "</div>\n");
		}
	px_sbuf_add(b, "<p class=\"muted\">curves: one colour per run; dashed lines are training, "
		    "solid lines validation</p></section>\n");
	charts(b, runs, n);
	for (int r = 0; r < n; r++) {
		px_sbuf_add(b, "<section><h2>");
		px_sbuf_add_html(b, runs[r].label);
		px_sbuf_add(b, ": model and pipeline</h2>\n");
		model_table(b, &runs[r]);
		if (runs[r].pipeline) {
			px_sbuf_add(b, "<details><summary>pipeline.yaml</summary><pre>");
			px_sbuf_add_html(b, runs[r].pipeline);
			px_sbuf_add(b, "</pre></details>\n");
		}
		px_sbuf_add(b, "</section>\n");
	}
	px_sbuf_add(b, "</main>\n</body>\n</html>\n");
}

int px_report_write(const char *const *run_dirs, int n, const char *out, struct px_error *err)
{
	if (n < 1 || n > 8)
		return px_error_set(err, PX_ERR_INVALID, "a report covers 1 to 8 runs, not %d", n);
	struct run runs[8];
	struct px_sbuf b = {0};
	int loaded = 0, rc = 0;
	for (; loaded < n; loaded++)
		if ((rc = run_load(run_dirs[loaded], &runs[loaded], err))) {
			run_free(&runs[loaded]);
			goto done;
		}
	/* legend labels: the run names, numbered where two runs share one */
	for (int i = 0; i < n; i++) {
		int same = 0, before = 0;
		for (int j = 0; j < n; j++)
			if (!strcmp(runs[j].name, runs[i].name)) {
				same++;
				before += j < i;
			}
		runs[i].label = same > 1 ? px_asprintf("%s #%d", runs[i].name, before + 1)
			       : px_strdup(runs[i].name);
		if (!runs[i].label) {
			rc = px_error_set(err, PX_ERR_NOMEM, "out of memory");
			goto done;
		}
	}
	if (n == 1)
		page_single(&b, &runs[0]);
	else
		page_compare(&b, runs, n);
	if (b.oom) {
		rc = px_error_set(err, PX_ERR_NOMEM, "out of memory");
		goto done;
	}
	char path[4300];
	if (out)
		snprintf(path, sizeof path, "%s", out);
	else
		snprintf(path, sizeof path, "%s/report.html", run_dirs[0]);
	rc = px_write_file_atomic(path, b.s, b.len, err);
done:
	for (int i = 0; i < loaded; i++)
		run_free(&runs[i]);
	px_sbuf_free(&b);
	return rc;
}

/* ================================================================ plexus report */
int px_cmd_report(struct cli *c)
{
	if (c->n_args < 1)
		return px_cli_usage_error("report needs a RUN_DIR (the --run-dir of a training run)%s", "");
	const char *out = c->out;
	if (!out && c->n_args > 1)
		out = "compare.html";
	struct px_error err = {0};
	int rc = px_report_write(c->args, c->n_args, out, &err);
	if (rc)
		return px_cli_fail(&err, rc);
	if (out)
		printf("wrote %s\n", out);
	else
		printf("wrote %s/report.html\n", c->args[0]);
	return 0;
}
