/* The training loop, evaluation and checkpoints. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "comm.h"
#include "internal.h"

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static const struct px_loss_ops *loss_ops(const struct px_session *s)
{
	return s->loss_entry->ops;
}

static const struct px_optim_ops *optim_ops(const struct px_session *s)
{
	return s->optim_entry->ops;
}

void px_metrics_add(struct px_metrics *m, const char *name, double value)
{
	if (m->n_extra >= 16)
		return;
	snprintf(m->extra_name[m->n_extra], sizeof m->extra_name[0], "%s", name);
	m->extra[m->n_extra++] = value;
}

/* ---------------------------------------------------------------- checkpoints */
static char *plugins_json(const struct px_session *s)
{
	struct px_sbuf b = {0};
	px_sbuf_add(&b, "{");
	for (int i = 0; i < s->model->n_nodes; i++) {
		const struct px_node *n = &s->model->nodes[i];
		const struct px_plugin_rec *pr = n->entry->plugin;
		px_sbuf_addf(&b, "%s", i ? ", " : "");
		px_sbuf_add_json_str(&b, n->name);
		px_sbuf_add(&b, ": {\"kind\": ");
		px_sbuf_add_json_str(&b, n->ops->kind);
		px_sbuf_add(&b, ", \"plugin\": ");
		px_sbuf_add_json_str(&b, pr->desc->name);
		px_sbuf_add(&b, ", \"version\": ");
		px_sbuf_add_json_str(&b, pr->desc->version);
		px_sbuf_add(&b, "}");
	}
	px_sbuf_add(&b, "}");
	if (b.oom) {
		px_sbuf_free(&b);
		return NULL;
	}
	return b.s;
}

int px_save_checkpoint(struct px_session *s, const char *path, int64_t epoch, int64_t step,
		       struct px_error *err)
{
	struct px_model *m = s->model;
	struct px_st_entry *e = calloc((size_t)(m->n_params ? m->n_params : 1), sizeof *e);
	char *plugins = plugins_json(s);
	char ep[32], st[32];
	snprintf(ep, sizeof ep, "%lld", (long long)epoch);
	snprintf(st, sizeof st, "%lld", (long long)step);
	int rc;
	if (!e || !plugins) {
		rc = px_error_set(err, PX_ERR_NOMEM, "out of memory");
		goto done;
	}
	for (int i = 0; i < m->n_params; i++)
		e[i] = (struct px_st_entry){m->param_names[i], m->params[i]->value->ndim,
					    m->params[i]->value->shape, m->params[i]->value->data};
	const char *keys[] = {"format", "plexus.version", "plexus.pipeline", "plexus.name",
			      "plexus.nodes", "plexus.epoch", "plexus.step"};
	const char *vals[] = {"pt", PX_VERSION, s->pl->text ? s->pl->text : "", s->pl->name,
			      plugins, ep, st};
	rc = px_st_write(path, e, m->n_params, keys, vals, 7, err);
done:
	free(e);
	free(plugins);
	return rc;
}

int px_load_params(struct px_session *s, const char *path, struct px_error *err)
{
	struct px_st_file *f;
	int rc = px_st_open(path, &f, err);
	if (rc)
		return rc;
	struct px_model *m = s->model;
	struct px_sbuf missing = {0}, shape = {0}, unexpected = {0};
	for (int i = 0; i < m->n_params; i++) {
		int k = px_st_find(f, m->param_names[i]);
		if (k < 0) {
			px_sbuf_addf(&missing, "%s%s", missing.len ? ", " : "", m->param_names[i]);
			continue;
		}
		int nd;
		int64_t sh[PX_MAX_DIMS];
		const float *d = px_st_data(f, k, &nd, sh);
		const struct px_tensor *v = m->params[i]->value;
		bool same = nd == v->ndim;
		for (int j = 0; same && j < nd; j++)
			same = sh[j] == v->shape[j];
		if (!same) {
			struct px_shape a = {.ndim = nd}, b;
			memcpy(a.dim, sh, sizeof(int64_t) * (size_t)nd);
			px_tensor_shape(v, &b);
			char sa[64], sb[64];
			px_sbuf_addf(&shape, "%s%s is %s in the file, %s in the model", shape.len ? "; " : "",
				     m->param_names[i], px_shape_str(&a, sa, sizeof sa), px_shape_str(&b, sb, sizeof sb));
			continue;
		}
		memcpy(v->data, d, (size_t)px_tensor_numel(v) * sizeof(float));
	}
	for (int k = 0; k < px_st_count(f); k++) {
		bool known = false;
		for (int i = 0; !known && i < m->n_params; i++)
			known = !strcmp(px_st_name(f, k), m->param_names[i]);
		if (!known)
			px_sbuf_addf(&unexpected, "%s%s", unexpected.len ? ", " : "", px_st_name(f, k));
	}
	if (missing.len || shape.len || unexpected.len) {
		rc = px_error_set(err, PX_ERR_CORRUPT, "%s does not fit this model:%s%s%s%s%s%s", path,
				  missing.len ? " missing tensors: " : "", missing.len ? missing.s : "",
				  unexpected.len ? "; unexpected tensors: " : "", unexpected.len ? unexpected.s : "",
				  shape.len ? "; wrong shapes: " : "", shape.len ? shape.s : "");
	}
	px_sbuf_free(&missing);
	px_sbuf_free(&shape);
	px_sbuf_free(&unexpected);
	px_st_close(f);
	return rc;
}

/* Where a run stands, kept in state.safetensors ("plexus.position") so that --resume after a
 * kill continues exactly as if it had never stopped: the epoch in progress, whether its end
 * (validation, metrics line, schedule, early stopping) is done, the epoch's running sums so
 * far and the length of metrics.csv when the state was saved (later lines are dropped). */
struct run_pos {
	int64_t epoch;        /* 0: unknown (a state file of an older plexus) */
	int64_t epoch_done;
	double sum, count, correct, gnorm_sum;
	int64_t seen, nsteps, has_correct;
	int64_t csv_bytes;    /* -1: unknown */
};

/* Parameters, buffers, optimizer slots, counters and schedule state: everything --resume needs,
 * in ONE file, written atomically. The parameters are here as well as in model.safetensors
 * because the two files are renamed one after the other: a kill between the renames must not
 * pair the parameters of one step with the optimizer state of another. */
static int save_state(struct px_session *s, const char *path, int64_t epoch, int64_t step,
		      const struct px_schedule *sc, double best, int64_t bad,
		      const struct run_pos *pos, struct px_error *err)
{
	const struct px_optim_ops *ops = optim_ops(s);
	struct px_model *m = s->model;
	int n_slots = 0;
	while (ops->slots && ops->slots[n_slots])
		n_slots++;
	int n = m->n_trainable * n_slots + m->n_params;
	struct px_st_entry *e = calloc((size_t)(n ? n : 1), sizeof *e);
	char **names = calloc((size_t)(n ? n : 1), sizeof *names);
	int rc = 0;
	if (!e || !names) {
		rc = px_error_set(err, PX_ERR_NOMEM, "out of memory");
		goto done;
	}
	int k = 0;
	for (int i = 0; i < m->n_params; i++, k++) {
		const struct px_tensor *v = m->params[i]->value;
		names[k] = px_asprintf("params/%s", m->param_names[i]);
		if (!names[k]) {
			rc = px_error_set(err, PX_ERR_NOMEM, "out of memory");
			goto done;
		}
		e[k] = (struct px_st_entry){names[k], v->ndim, v->shape, v->data};
	}
	for (int i = 0, t = 0; i < m->n_params; i++) {
		if (!m->params[i]->trainable)
			continue;
		for (int j = 0; j < n_slots; j++, k++) {
			names[k] = px_asprintf("%s.%s", m->param_names[i], ops->slots[j]);
			const struct px_tensor *v = m->params[i]->value;
			e[k] = (struct px_st_entry){names[k], v->ndim, v->shape, ops->slot(s->optim, t, j)};
		}
		t++;
	}
	char ep[32], st[32], lr[64], bs[64], bd[32], hash[32], ps[400];
	snprintf(ps, sizeof ps, "%lld %lld %.17g %.17g %.17g %.17g %lld %lld %lld %lld",
		 (long long)pos->epoch, (long long)pos->epoch_done, pos->sum, pos->count, pos->correct,
		 pos->gnorm_sum, (long long)pos->seen, (long long)pos->nsteps,
		 (long long)pos->has_correct, (long long)pos->csv_bytes);
	snprintf(ep, sizeof ep, "%lld", (long long)epoch);
	snprintf(st, sizeof st, "%lld", (long long)step);
	snprintf(lr, sizeof lr, "%.17g", sc->lr);
	snprintf(bs, sizeof bs, "%.17g", sc->best);
	snprintf(bd, sizeof bd, "%lld/%.17g", (long long)sc->bad_epochs, best);
	snprintf(hash, sizeof hash, "%lld", (long long)bad);
	const char *keys[] = {"plexus.epoch", "plexus.step", "plexus.sched_lr", "plexus.sched_best",
			      "plexus.sched_bad_and_best", "plexus.early_bad", "plexus.optimizer",
			      "plexus.position"};
	const char *vals[] = {ep, st, lr, bs, bd, hash, ops->kind, ps};
	rc = px_st_write(path, e, k, keys, vals, 8, err);
done:
	for (int i = 0; names && i < n; i++)
		free(names[i]);
	free(names);
	free(e);
	return rc;
}

/* *params_loaded: the state held the parameters (else load them from model.safetensors). */
static int load_state(struct px_session *s, const char *path, int64_t *epoch, int64_t *step,
		      struct px_schedule *sc, double *best, int64_t *bad, struct run_pos *pos,
		      bool *params_loaded, struct px_error *err)
{
	*pos = (struct run_pos){.csv_bytes = -1};
	*params_loaded = false;
	struct px_st_file *f;
	int rc = px_st_open(path, &f, err);
	if (rc)
		return rc;
	const struct px_optim_ops *ops = optim_ops(s);
	struct px_model *m = s->model;
	const char *ep = px_st_meta(f, "plexus.epoch"), *st = px_st_meta(f, "plexus.step");
	const char *lr = px_st_meta(f, "plexus.sched_lr"), *bs = px_st_meta(f, "plexus.sched_best");
	const char *bb = px_st_meta(f, "plexus.sched_bad_and_best"), *eb = px_st_meta(f, "plexus.early_bad");
	const char *ok = px_st_meta(f, "plexus.optimizer");
	long long sb = 0;
	if (!ep || !st || !lr || !bs || !bb || !eb || !px_parse_int(ep, epoch) ||
	    !px_parse_int(st, step) || !px_parse_int(eb, bad) || sscanf(bb, "%lld/%lf", &sb, best) != 2 ||
	    sscanf(lr, "%lf", &sc->lr) != 1 || sscanf(bs, "%lf", &sc->best) != 1) {
		rc = px_error_set(err, PX_ERR_CORRUPT, "%s: training state metadata missing or malformed", path);
		goto done;
	}
	sc->bad_epochs = sb;
	const char *ps = px_st_meta(f, "plexus.position");
	long long pe, pd, pse, pn, ph, pc;
	if (ps && (sscanf(ps, "%lld %lld %lf %lf %lf %lf %lld %lld %lld %lld", &pe, &pd, &pos->sum,
			  &pos->count, &pos->correct, &pos->gnorm_sum, &pse, &pn, &ph, &pc) != 10 ||
		   pe < 1 || pe != *epoch || pd < 0 || pd > 1 || pc < 0)) {
		rc = px_error_set(err, PX_ERR_CORRUPT, "%s: training position metadata malformed", path);
		goto done;
	}
	if (ps)
		*pos = (struct run_pos){pe, pd, pos->sum, pos->count, pos->correct, pos->gnorm_sum, pse,
					pn, ph, pc};
	if (!ok || strcmp(ok, ops->kind)) {
		rc = px_error_set(err, PX_ERR_CORRUPT, "%s: state of optimizer '%s', the pipeline uses '%s'",
				  path, ok ? ok : "?", ops->kind);
		goto done;
	}
	for (int i = 0, t = 0; i < m->n_params && !rc; i++) {
		if (!m->params[i]->trainable)
			continue;
		for (int j = 0; ops->slots && ops->slots[j] && !rc; j++) {
			char name[512];
			snprintf(name, sizeof name, "%s.%s", m->param_names[i], ops->slots[j]);
			int k = px_st_find(f, name);
			int nd;
			int64_t sh[PX_MAX_DIMS];
			const float *d = k >= 0 ? px_st_data(f, k, &nd, sh) : NULL;
			int64_t numel = 1;
			for (int q = 0; d && q < nd; q++)
				numel *= sh[q];
			if (!d || numel != px_tensor_numel(m->params[i]->value)) {
				rc = px_error_set(err, PX_ERR_CORRUPT, "%s: optimizer state '%s' missing or mis-shaped",
						  path, name);
				break;
			}
			memcpy(ops->slot(s->optim, t, j), d, (size_t)numel * sizeof(float));
		}
		t++;
	}
	/* the parameters of the same step (absent in state files of older versions) */
	for (int i = 0; i < m->n_params && !rc; i++) {
		char name[512];
		snprintf(name, sizeof name, "params/%s", m->param_names[i]);
		int k = px_st_find(f, name);
		if (k < 0) {
			if (i == 0)
				break;
			rc = px_error_set(err, PX_ERR_CORRUPT, "%s: parameter '%s' missing", path, name);
			break;
		}
		int nd;
		int64_t sh[PX_MAX_DIMS];
		const float *d = px_st_data(f, k, &nd, sh);
		const struct px_tensor *v = m->params[i]->value;
		bool same = nd == v->ndim;
		for (int q = 0; same && q < nd; q++)
			same = sh[q] == v->shape[q];
		if (!same) {
			rc = px_error_set(err, PX_ERR_CORRUPT, "%s: parameter '%s' has another shape than "
					  "in the model", path, name);
			break;
		}
		memcpy(v->data, d, (size_t)px_tensor_numel(v) * sizeof(float));
		*params_loaded = i == m->n_params - 1;
	}
done:
	px_st_close(f);
	return rc;
}

/* The step a checkpoint was saved at, -1 when it cannot be read. */
static int64_t model_step(const char *path)
{
	struct px_st_file *f;
	struct px_error e;
	int64_t step = -1;
	if (px_st_open(path, &f, &e))
		return -1;
	const char *v = px_st_meta(f, "plexus.step");
	if (!v || !px_parse_int(v, &step))
		step = -1;
	px_st_close(f);
	return step;
}

/* Bytes written to metrics.csv so far (flushed), or -1. */
static int64_t csv_bytes(FILE *csv)
{
	struct stat st;
	if (!csv || fflush(csv) != 0 || fstat(fileno(csv), &st) != 0)
		return -1;
	return (int64_t)st.st_size;
}

/* A kill during an atomic write leaves its temporary file "NAME.tmp.<pid>" (px_st_write,
 * px_write_file_atomic): remove those of earlier runs from this run directory. */
static void remove_stale_temps_in(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	for (struct dirent *e; (e = readdir(d));) {
		const char *t = strstr(e->d_name, ".tmp.");
		if (!t || t == e->d_name || !t[5] || strspn(t + 5, "0123456789") != strlen(t + 5))
			continue;
		char p[4400];
		snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
		unlink(p);
	}
	closedir(d);
}

static void remove_stale_temps(const char *run_dir)
{
	char sub[4300];
	remove_stale_temps_in(run_dir);
	snprintf(sub, sizeof sub, "%s/checkpoints", run_dir);
	remove_stale_temps_in(sub);
	snprintf(sub, sizeof sub, "%s/figures", run_dir);
	remove_stale_temps_in(sub);
}

/* ---------------------------------------------------------------- evaluation */
int px_evaluate(struct px_session *s, int split, struct px_metrics *out, struct px_error *err)
{
	memset(out, 0, sizeof *out);
	out->accuracy = NAN;
	if (!s->have[split])
		return px_error_set(err, PX_ERR_INVALID, "the pipeline has no %s data", px_split_names[split]);
	const struct px_dataset *ds = &s->ds[split];
	int64_t bs = px_config_int(s->train_cfg, "eval_batch");
	struct px_arena *batch = px_arena_new(1 << 20);
	int64_t *idx = malloc((size_t)bs * sizeof *idx);
	struct px_metric_acc *acc = NULL;
	int rc = 0;
	if (!batch || !idx) {
		rc = px_error_set(err, PX_ERR_NOMEM, "out of memory");
		goto done;
	}
	if ((rc = px_metrics_begin(s, split, &acc, err)))
		goto done;
	double sum = 0, count = 0, correct = 0;
	bool has_correct = true;
	for (int64_t b0 = 0; b0 < ds->n; b0 += bs) {
		int64_t n = ds->n - b0 < bs ? ds->n - b0 : bs;
		for (int64_t i = 0; i < n; i++)
			idx[i] = b0 + i;
		px_arena_reset(batch);
		struct px_tensor *x, *y;
		if ((rc = px_dataset_gather(ds, idx, n, batch, &x, &y, err)))
			goto done;
		if ((rc = px_model_forward(s->model, x, y, false, err)))
			goto done;
		struct px_loss_result lr = {0};
		const struct px_tensor *pred = px_model_output(s->model, s->loss_in);
		const struct px_tensor *tgt = px_model_output(s->model, s->loss_target);
		if ((rc = loss_ops(s)->forward(s->loss, pred, tgt, &lr, NULL, 1.0f, err)))
			goto done;
		sum += lr.sum;
		count += lr.count;
		if (lr.correct < 0)
			has_correct = false;
		else
			correct += lr.correct;
		if ((rc = px_metrics_batch(s, acc, x, y, err)))
			goto done;
	}
	out->loss = count > 0 ? sum / count : NAN;
	out->accuracy = has_correct && count > 0 ? correct / count : NAN;
	out->examples = ds->n;
	rc = px_metrics_end(s, acc, out, err);
	acc = NULL;
done:
	if (acc) {
		struct px_metrics junk;
		struct px_error e;
		px_metrics_end(s, acc, &junk, &e);
	}
	free(idx);
	px_arena_free(batch);
	return rc;
}

/* ---------------------------------------------------------------- progress */
struct progress {
	bool tty;
	int64_t log_every;
	double t0;
};

static void fmt_eta(double s, char *buf, size_t n)
{
	if (!isfinite(s) || s < 0)
		s = 0;
	int64_t t = (int64_t)(s + 0.5);
	snprintf(buf, n, "%lld:%02lld", (long long)(t / 60), (long long)(t % 60));
}

static void progress_step(struct progress *p, int64_t epoch, int64_t epochs, int64_t i,
			  int64_t n, double loss, double acc, double items_s)
{
	char eta[32];
	double frac = n ? (double)i / (double)n : 1;
	double rem = frac > 0 ? (now_s() - p->t0) * (1 - frac) / frac : 0;
	fmt_eta(rem, eta, sizeof eta);
	if (p->tty) {
		char bar[32];
		int w = 20, full = (int)(frac * w);
		for (int k = 0; k < w; k++)
			bar[k] = k < full ? '#' : '.';
		bar[w] = 0;
		char a[32] = "";
		if (!isnan(acc))
			snprintf(a, sizeof a, " acc %.4f", acc);
		fprintf(stderr, "\repoch %lld/%lld [%s] %lld/%lld loss %.4f%s %.0f items/s ETA %s ",
			(long long)epoch, (long long)epochs, bar, (long long)i, (long long)n, loss, a,
			items_s, eta);
		fflush(stderr);
	} else if (i % p->log_every == 0 || i == n) {
		fprintf(stderr, "epoch %lld/%lld step %lld/%lld loss %.4f", (long long)epoch,
			(long long)epochs, (long long)i, (long long)n, loss);
		if (!isnan(acc))
			fprintf(stderr, " acc %.4f", acc);
		fprintf(stderr, " %.0f items/s ETA %s\n", items_s, eta);
	}
}

/* ---------------------------------------------------------------- training */
static int mkdir_p(const char *dir, struct px_error *err)
{
	char buf[4096];
	snprintf(buf, sizeof buf, "%s", dir);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(buf, 0755) != 0 && errno != EEXIST)
			return px_error_set(err, PX_ERR_IO, "%s: cannot create: %s", buf, strerror(errno));
		*p = '/';
	}
	if (mkdir(buf, 0755) != 0 && errno != EEXIST)
		return px_error_set(err, PX_ERR_IO, "%s: cannot create: %s", buf, strerror(errno));
	return 0;
}

static int write_text(const char *path, const char *text, struct px_error *err)
{
	char tmp[4200];
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	FILE *f = fopen(tmp, "w");
	if (!f)
		return px_error_set(err, PX_ERR_IO, "%s: cannot write: %s", tmp, strerror(errno));
	fputs(text, f);
	if (fclose(f) != 0 || rename(tmp, path) != 0)
		return px_error_set(err, PX_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
	return 0;
}

static int metrics_header(FILE *f, const struct px_metrics *val)
{
	fprintf(f, "epoch,step,train_loss,train_accuracy,val_loss,val_accuracy");
	for (int i = 0; val && i < val->n_extra; i++)
		fprintf(f, ",val_%s", val->extra_name[i]);
	return fprintf(f, ",lr,grad_norm,seconds,items_per_s\n");
}

static void fmt_num(FILE *f, double v)
{
	if (isnan(v))
		fprintf(f, ",");
	else
		fprintf(f, ",%.6g", v);
}

/* ---------------------------------------------------------------- data parallel
 * With several ranks (core/comm.h) every step's global batch is split into contiguous slices,
 * each rank back-propagates the SUM of its losses, and the gradients and counters are summed
 * over the ranks and divided by the global count. One process keeps the plain path: the mean
 * is back-propagated (d_pred scaled by 1/count before backward), bit for bit as always. */
#define BUCKET_FLOATS ((size_t)1 << 18)   /* 1 MiB of gradients per allreduce */

struct dist {
	struct px_comm *c;
	float *flat;        /* the trainable gradients packed in parameter order */
	size_t n_flat;
	int fail_rank;      /* test hook PLEXUS_TEST_FAIL=RANK:STEP, -1 when unset */
	int64_t fail_step;
	const char *dump_dir;   /* test hook PLEXUS_DUMP_PARAMS_DIR, NULL when unset */
	double wait_s;      /* in the counters' sum, the step's first collective: waiting for
			     * the slowest rank (comm->comm_s counts it too) */
};

/* Rank r's share of n examples: a contiguous slice; the first n % size ranks take one more. */
static void dist_slice(int64_t n, int rank, int size, int64_t *off, int64_t *mine)
{
	int64_t q = n / size, rem = n % size;
	*mine = q + (rank < rem);
	*off = rank * q + (rank < rem ? rank : rem);
}

static uint64_t data_hash(const struct px_dataset *ds)
{
	uint64_t h = px_hash64(&ds->n, sizeof ds->n, 0);
	h = px_hash64(&ds->x, sizeof ds->x, h);
	h = px_hash64(&ds->y, sizeof ds->y, h);
	int64_t xrow = 1, yrow = 1;
	for (int d = 1; d < ds->x.ndim; d++)
		xrow *= ds->x.dim[d];
	for (int d = 1; d < ds->y.ndim; d++)
		yrow *= ds->y.dim[d];
	for (int k = 0; k < 64 && ds->n > 0; k++) {  /* 64 examples spread over the split */
		int64_t i = ds->n * k / 64;
		h = px_hash64(ds->x_data + i * xrow, (size_t)xrow * sizeof(float), h);
		if (ds->y_data)
			h = px_hash64(ds->y_data + i * yrow, (size_t)yrow * sizeof(float), h);
	}
	return h;
}

/* Every rank must train the same pipeline with the same plugin versions on the same data. */
static int dist_check(struct px_session *s, struct px_comm *c, struct px_error *err)
{
	struct rank_id {
		uint64_t h[3];   /* pipeline text and plexus version, plugin versions, training data */
		char host[64];
	} me = {{0}, {0}}, *all = calloc((size_t)c->size, sizeof *all);
	static const char *const what[3] = {"pipeline", "plugins and their versions", "training data"};
	char *plugins = plugins_json(s);
	int rc = 0;
	if (!all || !plugins) {
		rc = px_error_set(err, PX_ERR_NOMEM, "out of memory");
		goto done;
	}
	const char *text = s->pl->text ? s->pl->text : "";
	me.h[0] = px_hash64(text, strlen(text), px_hash64(PX_VERSION, strlen(PX_VERSION), 0));
	me.h[1] = px_hash64(plugins, strlen(plugins), 0);
	me.h[2] = data_hash(&s->ds[PX_SPLIT_TRAIN]);
	snprintf(me.host, sizeof me.host, "%s", c->host);
	if ((rc = px_comm_allgather(c, &me, all, sizeof me, err)))
		goto done;
	for (int r = 1; r < c->size && !rc; r++)
		for (int k = 0; k < 3 && !rc; k++)
			if (all[r].h[k] != all[0].h[k]) {
				c->agreed_failure = true;  /* every rank sees the same table */
				rc = px_error_set(err, PX_ERR_INVALID,
						  "rank %d (%s) and rank 0 (%s) disagree on the %s (hash %016llx vs "
						  "%016llx): every rank must run the same pipeline with the same plugins and data",
						  r, all[r].host, all[0].host, what[k], (unsigned long long)all[r].h[k],
						  (unsigned long long)all[0].h[k]);
			}
done:
	free(plugins);
	free(all);
	return rc;
}

/* Rank 0's parameters, buffers, optimizer state and counters to every rank. */
static int dist_share_state(struct px_session *s, struct px_comm *c, int64_t *step,
			    struct px_schedule *sc, double *best, int64_t *bad, struct px_error *err)
{
	struct px_model *m = s->model;
	const struct px_optim_ops *ops = optim_ops(s);
	int rc = 0;
	for (int i = 0; i < m->n_params && !rc; i++) {
		const struct px_tensor *v = m->params[i]->value;
		rc = px_comm_bcast(c, v->data, (size_t)px_tensor_numel(v) * sizeof(float), 0, err);
	}
	for (int t = 0; t < m->n_trainable && !rc; t++)
		for (int j = 0; ops->slots && ops->slots[j] && !rc; j++)
			rc = px_comm_bcast(c, ops->slot(s->optim, t, j),
					   (size_t)px_tensor_numel(m->trainable[t]->value) * sizeof(float), 0, err);
	struct {
		int64_t step, bad;
		double best;
		struct px_schedule sched;
	} k = {*step, *bad, *best, *sc};
	if (!rc && !(rc = px_comm_bcast(c, &k, sizeof k, 0, err))) {
		*step = k.step;
		*bad = k.bad;
		*best = k.best;
		*sc = k.sched;
	}
	return rc;
}

/* Sum the counters and the gradients over the ranks, then divide the gradients by the
 * global count: afterwards every rank holds the same mean gradient, bit for bit. */
static int dist_reduce(struct dist *d, struct px_model *m, struct px_loss_result *lr,
		       struct px_error *err)
{
	double v[4] = {lr->sum, lr->count, lr->correct < 0 ? 0 : lr->correct, lr->correct < 0};
	double t0 = now_s();
	int rc = px_comm_sum_f64(d->c, v, 4, err);
	d->wait_s += now_s() - t0;
	if (rc)
		return rc;
	*lr = (struct px_loss_result){v[0], v[1], v[3] > 0 ? -1 : v[2]};
	size_t o = 0;
	for (int i = 0; i < m->n_trainable; i++) {
		const struct px_tensor *g = m->trainable[i]->grad;
		size_t n = (size_t)px_tensor_numel(g);
		memcpy(d->flat + o, g->data, n * sizeof(float));
		o += n;
	}
	/* buckets in a fixed order; see docs/distributed.md for why they do not overlap backward */
	for (size_t b = 0; b < d->n_flat && !rc; b += BUCKET_FLOATS)
		rc = px_comm_allreduce_sum_f32(d->c, d->flat + b,
					       d->n_flat - b < BUCKET_FLOATS ? d->n_flat - b : BUCKET_FLOATS, err);
	if (rc)
		return rc;
	float inv = lr->count > 0 ? (float)(1.0 / lr->count) : 0.0f;
	o = 0;
	for (int i = 0; i < m->n_trainable; i++) {  /* g = (sum over ranks) / count */
		struct px_tensor *g = m->trainable[i]->grad;
		int64_t n = px_tensor_numel(g);
		for (int64_t j = 0; j < n; j++)
			g->data[j] = d->flat[o + (size_t)j] * inv;
		o += (size_t)n;
	}
	return 0;
}

/* Buffers that layers update themselves (running statistics): rank 0's, as PyTorch's
 * DistributedDataParallel does, so every rank holds the same bytes after each step. */
static int dist_sync_buffers(struct px_comm *c, struct px_model *m, struct px_error *err)
{
	int rc = 0;
	for (int i = 0; i < m->n_params && !rc; i++)
		if (!m->params[i]->trainable)
			rc = px_comm_bcast(c, m->params[i]->value->data,
					   (size_t)px_tensor_numel(m->params[i]->value) * sizeof(float), 0, err);
	return rc;
}

/* The first node (forward order) with a NaN/Inf output on the first rank that has one. */
static const char *dist_nonfinite_output(struct px_model *m, struct px_comm *c, bool ran)
{
	const char *where = ran ? px_model_find_nonfinite_output(m) : NULL;
	if (c->size == 1)
		return where;
	int32_t mine = -1, *all = calloc((size_t)c->size, sizeof *all);
	for (int i = 0; where && i < m->n_nodes; i++)
		if (m->nodes[i].name == where)
			mine = i;
	struct px_error e;
	where = NULL;
	if (all && !px_comm_allgather(c, &mine, all, sizeof mine, &e))
		for (int r = 0; r < c->size && !where; r++)
			if (all[r] >= 0)
				where = m->nodes[all[r]].name;
	free(all);
	return where;
}

/* Test hook PLEXUS_DUMP_PARAMS_DIR: every parameter and buffer, float32 in model order, to
 * DIR/rank<r>-step<k>.f32 after each optimizer step. */
static int dump_params(const struct dist *d, const struct px_model *m, int64_t step,
		       struct px_error *err)
{
	char path[4200];
	snprintf(path, sizeof path, "%s/rank%d-step%lld.f32", d->dump_dir, d->c->rank, (long long)step);
	FILE *f = fopen(path, "wb");
	if (!f)
		return px_error_set(err, PX_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
	bool ok = true;
	for (int i = 0; i < m->n_params; i++) {
		const struct px_tensor *v = m->params[i]->value;
		size_t n = (size_t)px_tensor_numel(v);
		ok &= fwrite(v->data, sizeof(float), n, f) == n;
	}
	if (fclose(f) != 0 || !ok)
		return px_error_set(err, PX_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
	return 0;
}

static int dist_init(struct dist *d, struct px_session *s, struct px_error *err)
{
	struct px_comm *c = d->c;
	struct px_model *m = s->model;
	const char *fail = getenv("PLEXUS_TEST_FAIL");
	long long fs;
	d->fail_rank = -1;
	if (fail && *fail && sscanf(fail, "%d:%lld", &d->fail_rank, &fs) == 2)
		d->fail_step = fs;
	d->dump_dir = getenv("PLEXUS_DUMP_PARAMS_DIR");
	if (d->dump_dir && !*d->dump_dir)
		d->dump_dir = NULL;
	if (c->size == 1)
		return 0;
	for (int i = 0; i < m->n_trainable; i++)
		d->n_flat += (size_t)px_tensor_numel(m->trainable[i]->grad);
	d->flat = malloc((d->n_flat ? d->n_flat : 1) * sizeof *d->flat);
	if (!d->flat)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	if (s->threads == 0) {  /* 0: the cores of this machine shared among its ranks */
		const char *e = getenv("OPENBLAS_NUM_THREADS");
		long cores = sysconf(_SC_NPROCESSORS_ONLN);
		long t = e && atoi(e) > 0 ? atoi(e) : cores / c->local_size;
		px_set_threads(t > 0 ? (int)t : 1);
	}
	/* stochastic layers (dropout, noise) draw their own masks on each rank */
	if (c->rank > 0)
		m->seed = s->pl->seed ^ px_hash64(&c->rank, sizeof c->rank, 0x706c65787573ull);
	return dist_check(s, c, err);
}

/* Forward and backward of the examples idx[0..n) (n is 0 on a rank without a share of a
 * small last batch). mean: back-propagate the mean loss (one process), else the sum. */
static int step_grads(struct px_session *s, const struct px_dataset *ds, const int64_t *idx,
		      int64_t n, bool mean, struct px_arena *batch, struct px_loss_result *lr,
		      struct px_error *err)
{
	struct px_model *m = s->model;
	*lr = (struct px_loss_result){0};
	if (n == 0) {
		px_model_zero_grad(m);
		return 0;
	}
	px_arena_reset(batch);
	struct px_tensor *x, *y;
	int rc = px_dataset_gather(ds, idx, n, batch, &x, &y, err);
	if (rc || (rc = px_model_forward(m, x, y, true, err)))
		return rc;
	const struct px_tensor *pred = px_model_output(m, s->loss_in);
	const struct px_tensor *tgt = px_model_output(m, s->loss_target);
	struct px_tensor *dpred = px_model_grad_buffer(m, s->loss_in);
	/* the loss writes d(sum)/d(pred); one process scales it to the mean here */
	if ((rc = loss_ops(s)->forward(s->loss, pred, tgt, lr, dpred, 1.0f, err)))
		return rc;
	if (mean && dpred && lr->count > 0)
		px_scal(px_tensor_numel(dpred), (float)(1.0 / lr->count), dpred->data);
	px_model_zero_grad(m);
	return px_model_backward(m, err);
}

int px_train(struct px_session *s, const char *run_dir, bool resume, struct px_error *err)
{
	struct px_model *m = s->model;
	const struct px_dataset *ds = &s->ds[PX_SPLIT_TRAIN];
	const struct px_config *tc = s->train_cfg;
	int64_t epochs = px_config_int(tc, "epochs");
	int64_t bs = px_config_int(tc, "batch");
	int64_t cap = px_config_int(tc, "steps_per_epoch");
	double clip_norm = px_config_float(tc, "clip_grad_norm");
	double clip_value = px_config_float(tc, "clip_grad_value");
	bool shuffle = px_config_bool(tc, "shuffle"), nan_check = px_config_bool(tc, "nan_check");
	int64_t patience = px_config_int(tc, "early_stopping.patience");
	bool monitor_acc = !strcmp(px_config_str(tc, "early_stopping.monitor"), "val_accuracy");
	double min_delta = px_config_float(tc, "early_stopping.min_delta");
	int64_t ckpt_steps = 0;
	if (strcmp(px_config_str(tc, "checkpoint.every"), "epoch"))
		px_parse_int(px_config_str(tc, "checkpoint.every"), &ckpt_steps);
	int64_t keep = px_config_int(tc, "checkpoint.keep");
	int64_t steps_per_epoch = (ds->n + bs - 1) / bs;
	if (cap > 0 && cap < steps_per_epoch)
		steps_per_epoch = cap;
	/* data parallel: each step every rank takes its slice of the batch; only rank 0 (the
	 * writer) writes files and progress */
	struct dist d = {.c = s->comm ? s->comm : px_comm_local()};
	struct px_comm *c = d.c;
	bool writer = c->rank == 0, dist = c->size > 1;
	uint64_t seed = m->seed;

	char model_path[4200], state_path[4200], csv_path[4200], yaml_path[4200];
	snprintf(model_path, sizeof model_path, "%s/model.safetensors", run_dir);
	snprintf(state_path, sizeof state_path, "%s/state.safetensors", run_dir);
	snprintf(csv_path, sizeof csv_path, "%s/metrics.csv", run_dir);
	snprintf(yaml_path, sizeof yaml_path, "%s/pipeline.yaml", run_dir);
	FILE *csv = NULL;
	struct px_arena *batch = NULL;
	int64_t *perm = NULL;
	int rc = dist_init(&d, s, err);
	if (rc || (writer && (rc = mkdir_p(run_dir, err))))
		goto done;

	struct px_schedule sched;
	double base_lr = px_config_float(s->optim_cfg, "lr");
	if ((rc = px_schedule_init(&sched, s->sched_cfg, base_lr, epochs, err)))
		goto done;
	int64_t start_epoch = 1, step = 0, skip_in_epoch = 0, bad = 0;
	double best = monitor_acc ? -INFINITY : INFINITY;
	struct run_pos pos = {.csv_bytes = -1};
	if (writer)
		remove_stale_temps(run_dir);
	if (resume && writer) {
		int64_t done_epoch;
		bool have_params;
		if ((rc = load_state(s, state_path, &done_epoch, &step, &sched, &best, &bad, &pos,
				     &have_params, err)))
			goto done;
		if (!have_params && (rc = px_load_params(s, model_path, err)))
			goto done;
		/* killed between the state and the model: bring the model to the state's step */
		if (have_params && model_step(model_path) != step &&
		    (rc = px_save_checkpoint(s, model_path, done_epoch, step, err)))
			goto done;
	} else if (writer && (rc = write_text(yaml_path, s->pl->text ? s->pl->text : "", err))) {
		goto done;
	}
	if (dist && (rc = dist_share_state(s, c, &step, &sched, &best, &bad, err)))
		goto done;
	if (dist && (rc = px_comm_bcast(c, &pos, sizeof pos, 0, err)))
		goto done;
	if (resume && pos.epoch > 0) {  /* the state says where: in epoch e, or after its end */
		start_epoch = pos.epoch + pos.epoch_done;
		skip_in_epoch = pos.epoch_done ? 0 : step - (pos.epoch - 1) * steps_per_epoch;
		if (skip_in_epoch < 0 || skip_in_epoch > steps_per_epoch) {
			rc = px_error_set(err, PX_ERR_INVALID, "%s: step %lld of epoch %lld does not fit "
					  "%lld steps per epoch (were the data or the batch size changed?)",
					  state_path, (long long)step, (long long)pos.epoch,
					  (long long)steps_per_epoch);
			goto done;
		}
		if (writer)
			fprintf(stderr, "resuming %s at epoch %lld, step %lld\n", run_dir,
				(long long)start_epoch, (long long)step);
	} else if (resume) {  /* a checkpoint at step k of epoch e (steps counted globally) */
		start_epoch = step / steps_per_epoch + 1;
		skip_in_epoch = step % steps_per_epoch;
		if (writer)
			fprintf(stderr, "resuming %s at epoch %lld, step %lld\n", run_dir,
				(long long)start_epoch, (long long)step);
	}
	if (writer && resume && pos.csv_bytes >= 0) {
		/* lines written after the state was saved are written again */
		struct stat st;
		if (stat(csv_path, &st) == 0 && st.st_size > pos.csv_bytes &&
		    truncate(csv_path, (off_t)pos.csv_bytes) != 0) {
			rc = px_error_set(err, PX_ERR_IO, "%s: cannot truncate: %s", csv_path, strerror(errno));
			goto done;
		}
	}
	if (writer && !(csv = fopen(csv_path, resume ? "a" : "w"))) {
		rc = px_error_set(err, PX_ERR_IO, "%s: cannot write: %s", csv_path, strerror(errno));
		goto done;
	}
	bool header_done = resume && pos.csv_bytes != 0;

	batch = px_arena_new(1 << 20);
	perm = malloc((size_t)ds->n * sizeof *perm);
	if (!batch || !perm) {
		rc = px_error_set(err, PX_ERR_NOMEM, "out of memory");
		goto done;
	}
	struct progress pg = {isatty(2), px_config_int(tc, "log_every"), 0};
	const struct px_optim_ops *oo = optim_ops(s);
	double t_run = now_s();
	for (int64_t epoch = start_epoch; epoch <= epochs; epoch++) {
		for (int64_t i = 0; i < ds->n; i++)
			perm[i] = i;
		if (shuffle) {  /* Fisher-Yates from (seed, epoch): independent of history */
			struct px_rng r;
			char label[48];
			snprintf(label, sizeof label, "shuffle-%lld", (long long)epoch);
			px_rng_seed_label(&r, s->pl->seed, label);
			for (int64_t i = ds->n - 1; i > 0; i--) {
				int64_t j = (int64_t)px_rng_below(&r, (uint64_t)i + 1);
				int64_t t = perm[i];
				perm[i] = perm[j];
				perm[j] = t;
			}
		}
		px_model_reset_state(m);
		double sum = 0, count = 0, correct = 0, gnorm_sum = 0;
		bool has_correct = true;
		int64_t seen = 0, nsteps = 0;
		if (resume && epoch == pos.epoch && !pos.epoch_done) {  /* the epoch's sums so far */
			sum = pos.sum;
			count = pos.count;
			correct = pos.correct;
			gnorm_sum = pos.gnorm_sum;
			seen = pos.seen;
			nsteps = pos.nsteps;
			has_correct = pos.has_correct;
		}
		pg.t0 = now_s();
		c->comm_s = d.wait_s = 0;
		for (int64_t k = skip_in_epoch; k < steps_per_epoch; k++) {
			int64_t b0 = k * bs, n = ds->n - b0 < bs ? ds->n - b0 : bs;
			int64_t off = 0, mine = n;   /* this rank's slice perm[b0+off .. b0+off+mine) */
			if (dist)
				dist_slice(n, c->rank, c->size, &off, &mine);
			if (step + 1 == d.fail_step && c->rank == d.fail_rank) {
				rc = px_error_set(err, PX_ERR_IO, "PLEXUS_TEST_FAIL: rank %d fails at step %lld as asked",
						  c->rank, (long long)step + 1);
				goto done;
			}
			m->step = step;
			struct px_loss_result lr;
			if ((rc = step_grads(s, ds, perm + b0 + off, mine, !dist, batch, &lr, err)))
				goto done;
			if (dist && (rc = dist_reduce(&d, m, &lr, err)))
				goto done;
			/* from here on every rank holds the same numbers and decides the same */
			if (nan_check && !isfinite(lr.sum)) {
				const char *where = dist_nonfinite_output(m, c, mine > 0);
				c->agreed_failure = true;
				rc = px_error_set(err, PX_ERR_NUMERIC,
						  "NaN/Inf in the forward pass at step %lld (epoch %lld), first in node '%s'; "
						  "the last checkpoint (%s) is intact", (long long)step + 1,
						  (long long)epoch, where ? where : s->pl->loss_kind, model_path);
				goto done;
			}
			double gn = px_clip_grad_norm(m->trainable, m->n_trainable, clip_norm);
			if (nan_check && !isfinite(gn)) {
				const char *where = px_model_find_nonfinite_grad(m);
				c->agreed_failure = true;
				rc = px_error_set(err, PX_ERR_NUMERIC,
						  "NaN/Inf in the gradients at step %lld (epoch %lld), first in node '%s'; "
						  "the last checkpoint (%s) is intact", (long long)step + 1,
						  (long long)epoch, where ? where : "?", model_path);
				goto done;
			}
			if (clip_value > 0)
				px_clip_grad_value(m->trainable, m->n_trainable, clip_value);
			step++;
			oo->step(s->optim, (float)px_schedule_lr(&sched, step), step);
			if (dist && (rc = dist_sync_buffers(c, m, err)))
				goto done;
			if (d.dump_dir && (rc = dump_params(&d, m, step, err)))
				goto done;
			sum += lr.sum;
			count += lr.count;
			if (lr.correct < 0)
				has_correct = false;
			else
				correct += lr.correct;
			gnorm_sum += gn;
			seen += n;
			nsteps++;
			double el = now_s() - pg.t0;
			if (writer)
				progress_step(&pg, epoch, epochs, k + 1, steps_per_epoch, sum / count,
					      has_correct ? correct / count : NAN, el > 0 ? (double)seen / el : 0);
			if (writer && ckpt_steps > 0 && step % ckpt_steps == 0) {
				struct run_pos now = {epoch, 0, sum, count, correct, gnorm_sum, seen, nsteps,
						      has_correct, csv_bytes(csv)};
				if ((rc = save_state(s, state_path, epoch, step, &sched, best, bad, &now, err)) ||
				    (rc = px_save_checkpoint(s, model_path, epoch, step, err)))
					goto done;
			}
		}
		skip_in_epoch = 0;
		if (writer && pg.tty)
			fprintf(stderr, "\n");
		double secs = now_s() - pg.t0, comm_s = c->comm_s - d.wait_s, wait_s = d.wait_s;
		/* validation on rank 0 alone (every metric exactly as one process computes it); the
		 * other ranks wait for its numbers, which drive the schedule and early stopping */
		struct px_metrics val = {.loss = NAN, .accuracy = NAN};
		if (writer && s->have[PX_SPLIT_VAL] && (rc = px_evaluate(s, PX_SPLIT_VAL, &val, err)))
			goto done;
		if (dist && (rc = px_comm_bcast(c, &val, sizeof val, 0, err)))
			goto done;
		double lr_now = px_schedule_lr(&sched, step);
		if (writer && !header_done) {
			metrics_header(csv, &val);
			header_done = true;
		}
		if (writer) {
			fprintf(csv, "%lld,%lld", (long long)epoch, (long long)step);
			fmt_num(csv, count > 0 ? sum / count : NAN);
			fmt_num(csv, has_correct && count > 0 ? correct / count : NAN);
			fmt_num(csv, val.loss);
			fmt_num(csv, val.accuracy);
			for (int i = 0; i < val.n_extra; i++)
				fmt_num(csv, val.extra[i]);
			fmt_num(csv, lr_now);
			fmt_num(csv, nsteps ? gnorm_sum / (double)nsteps : NAN);
			fmt_num(csv, secs);
			fmt_num(csv, secs > 0 ? (double)seen / secs : NAN);
			fprintf(csv, "\n");
			fflush(csv);
			fprintf(stderr, "epoch %lld/%lld: train loss %.4f", (long long)epoch, (long long)epochs,
				count > 0 ? sum / count : NAN);
			if (has_correct && count > 0)
				fprintf(stderr, " acc %.4f", correct / count);
			if (!isnan(val.loss))
				fprintf(stderr, ", val loss %.4f", val.loss);
			if (!isnan(val.accuracy))
				fprintf(stderr, " acc %.4f", val.accuracy);
			fprintf(stderr, " (%.1fs, %.0f items/s)\n", secs, secs > 0 ? (double)seen / secs : 0.0);
			if (dist)  /* rank 0's view: its time in collectives, split in two */
				fprintf(stderr, "  %d ranks: communication %.2f ms/step (%.1f%% of the step time), "
					"waiting for the slowest rank %.2f ms/step\n", c->size,
					nsteps ? 1e3 * comm_s / (double)nsteps : 0.0,
					secs > 0 ? 100 * comm_s / secs : 0.0,
					nsteps ? 1e3 * wait_s / (double)nsteps : 0.0);
		}
		/* schedule and early stopping on the validation loss (train loss without val) */
		double watched = !isnan(val.loss) ? val.loss : (count > 0 ? sum / count : NAN);
		px_schedule_epoch_end(&sched, epoch, watched);
		bool stop = false;
		if (patience > 0) {
			double v = monitor_acc ? val.accuracy : watched;
			bool better = monitor_acc ? v > best + min_delta : v < best - min_delta;
			if (better) {
				best = v;
				bad = 0;
			} else if (++bad >= patience) {
				stop = true;
			}
		}
		struct run_pos now = {epoch, 1, 0, 0, 0, 0, 0, 0, 1, csv_bytes(csv)};
		if (writer && ((rc = save_state(s, state_path, epoch, step, &sched, best, bad, &now, err)) ||
			       (rc = px_save_checkpoint(s, model_path, epoch, step, err))))
			goto done;
		if (writer && keep > 1) {
			char dir[4200], p[4300];
			snprintf(dir, sizeof dir, "%s/checkpoints", run_dir);
			if ((rc = mkdir_p(dir, err)))
				goto done;
			snprintf(p, sizeof p, "%s/epoch-%lld.safetensors", dir, (long long)epoch);
			if ((rc = px_save_checkpoint(s, p, epoch, step, err)))
				goto done;
			snprintf(p, sizeof p, "%s/epoch-%lld.safetensors", dir, (long long)(epoch - keep));
			unlink(p);
		}
		if (stop) {
			if (writer)
				fprintf(stderr, "early stopping: no improvement for %lld epochs\n", (long long)patience);
			break;
		}
	}
	if (writer)
		fprintf(stderr, "trained in %.1fs\n", now_s() - t_run);
done:
	m->seed = seed;
	free(d.flat);
	free(perm);
	px_arena_free(batch);
	if (writer && csv)   /* training began: summary.json, figures/ and report.html (report.c) */
		rc = px_report_train_end(s, run_dir, rc, err);
	if (csv)
		fclose(csv);
	return rc;
}
