/* The training loop, evaluation and checkpoints. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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

/* Optimizer slots, counters and schedule state, for --resume. */
static int save_state(struct px_session *s, const char *path, int64_t epoch, int64_t step,
		      const struct px_schedule *sc, double best, int64_t bad, struct px_error *err)
{
	const struct px_optim_ops *ops = optim_ops(s);
	struct px_model *m = s->model;
	int n_slots = 0;
	while (ops->slots && ops->slots[n_slots])
		n_slots++;
	int n = m->n_trainable * n_slots;
	struct px_st_entry *e = calloc((size_t)(n ? n : 1), sizeof *e);
	char **names = calloc((size_t)(n ? n : 1), sizeof *names);
	int rc = 0;
	if (!e || !names) {
		rc = px_error_set(err, PX_ERR_NOMEM, "out of memory");
		goto done;
	}
	int k = 0;
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
	char ep[32], st[32], lr[64], bs[64], bd[32], hash[32];
	snprintf(ep, sizeof ep, "%lld", (long long)epoch);
	snprintf(st, sizeof st, "%lld", (long long)step);
	snprintf(lr, sizeof lr, "%.17g", sc->lr);
	snprintf(bs, sizeof bs, "%.17g", sc->best);
	snprintf(bd, sizeof bd, "%lld/%.17g", (long long)sc->bad_epochs, best);
	snprintf(hash, sizeof hash, "%lld", (long long)bad);
	const char *keys[] = {"plexus.epoch", "plexus.step", "plexus.sched_lr", "plexus.sched_best",
			      "plexus.sched_bad_and_best", "plexus.early_bad", "plexus.optimizer"};
	const char *vals[] = {ep, st, lr, bs, bd, hash, ops->kind};
	rc = px_st_write(path, e, k, keys, vals, 7, err);
done:
	for (int i = 0; names && i < n; i++)
		free(names[i]);
	free(names);
	free(e);
	return rc;
}

static int load_state(struct px_session *s, const char *path, int64_t *epoch, int64_t *step,
		      struct px_schedule *sc, double *best, int64_t *bad, struct px_error *err)
{
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
done:
	px_st_close(f);
	return rc;
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

	char model_path[4200], state_path[4200], csv_path[4200], yaml_path[4200];
	snprintf(model_path, sizeof model_path, "%s/model.safetensors", run_dir);
	snprintf(state_path, sizeof state_path, "%s/state.safetensors", run_dir);
	snprintf(csv_path, sizeof csv_path, "%s/metrics.csv", run_dir);
	snprintf(yaml_path, sizeof yaml_path, "%s/pipeline.yaml", run_dir);
	int rc = mkdir_p(run_dir, err);
	if (rc)
		return rc;

	struct px_schedule sched;
	double base_lr = px_config_float(s->optim_cfg, "lr");
	if ((rc = px_schedule_init(&sched, s->sched_cfg, base_lr, epochs, err)))
		return rc;
	int64_t start_epoch = 1, step = 0, skip_in_epoch = 0, bad = 0;
	double best = monitor_acc ? -INFINITY : INFINITY;
	if (resume) {
		int64_t done_epoch;
		if ((rc = px_load_params(s, model_path, err)))
			return rc;
		if ((rc = load_state(s, state_path, &done_epoch, &step, &sched, &best, &bad, err)))
			return rc;
		/* a checkpoint at step k of epoch e (steps counted globally) */
		start_epoch = step / steps_per_epoch + 1;
		skip_in_epoch = step % steps_per_epoch;
		(void)done_epoch;
		fprintf(stderr, "resuming %s at epoch %lld, step %lld\n", run_dir, (long long)start_epoch,
			(long long)step);
	} else if ((rc = write_text(yaml_path, s->pl->text ? s->pl->text : "", err))) {
		return rc;
	}
	FILE *csv = fopen(csv_path, resume ? "a" : "w");
	if (!csv)
		return px_error_set(err, PX_ERR_IO, "%s: cannot write: %s", csv_path, strerror(errno));
	bool header_done = resume;

	struct px_arena *batch = px_arena_new(1 << 20);
	int64_t *perm = malloc((size_t)ds->n * sizeof *perm);
	if (!batch || !perm) {
		rc = px_error_set(err, PX_ERR_NOMEM, "out of memory");
		goto done;
	}
	struct progress pg = {isatty(2), px_config_int(tc, "log_every"), 0};
	const struct px_optim_ops *oo = optim_ops(s);
	const struct px_loss_ops *lo = loss_ops(s);
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
		pg.t0 = now_s();
		for (int64_t k = skip_in_epoch; k < steps_per_epoch; k++) {
			int64_t b0 = k * bs, n = ds->n - b0 < bs ? ds->n - b0 : bs;
			px_arena_reset(batch);
			struct px_tensor *x, *y;
			if ((rc = px_dataset_gather(ds, perm + b0, n, batch, &x, &y, err)))
				goto done;
			m->step = step;
			if ((rc = px_model_forward(m, x, y, true, err)))
				goto done;
			struct px_loss_result lr = {0};
			const struct px_tensor *pred = px_model_output(m, s->loss_in);
			const struct px_tensor *tgt = px_model_output(m, s->loss_target);
			struct px_tensor *dpred = px_model_grad_buffer(m, s->loss_in);
			/* the loss writes d(sum)/d(pred); scaled to the mean below */
			if ((rc = lo->forward(s->loss, pred, tgt, &lr, dpred, 1.0f, err)))
				goto done;
			if (nan_check && !isfinite(lr.sum)) {
				const char *where = px_model_find_nonfinite_output(m);
				rc = px_error_set(err, PX_ERR_NUMERIC,
						  "NaN/Inf in the forward pass at step %lld (epoch %lld), first in node '%s'; "
						  "the last checkpoint (%s) is intact", (long long)step + 1,
						  (long long)epoch, where ? where : s->pl->loss_kind, model_path);
				goto done;
			}
			if (dpred && lr.count > 0)
				px_scal(px_tensor_numel(dpred), (float)(1.0 / lr.count), dpred->data);
			px_model_zero_grad(m);
			if ((rc = px_model_backward(m, err)))
				goto done;
			double gn = px_clip_grad_norm(m->trainable, m->n_trainable, clip_norm);
			if (nan_check && !isfinite(gn)) {
				const char *where = px_model_find_nonfinite_grad(m);
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
			progress_step(&pg, epoch, epochs, k + 1, steps_per_epoch, sum / count,
				      has_correct ? correct / count : NAN, el > 0 ? (double)seen / el : 0);
			if (ckpt_steps > 0 && step % ckpt_steps == 0) {
				if ((rc = save_state(s, state_path, epoch, step, &sched, best, bad, err)) ||
				    (rc = px_save_checkpoint(s, model_path, epoch, step, err)))
					goto done;
			}
		}
		skip_in_epoch = 0;
		if (pg.tty)
			fprintf(stderr, "\n");
		double secs = now_s() - pg.t0;
		struct px_metrics val = {.loss = NAN, .accuracy = NAN};
		if (s->have[PX_SPLIT_VAL] && (rc = px_evaluate(s, PX_SPLIT_VAL, &val, err)))
			goto done;
		double lr_now = px_schedule_lr(&sched, step);
		if (!header_done) {
			metrics_header(csv, &val);
			header_done = true;
		}
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
		if ((rc = save_state(s, state_path, epoch, step, &sched, best, bad, err)) ||
		    (rc = px_save_checkpoint(s, model_path, epoch, step, err)))
			goto done;
		if (keep > 1) {
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
			fprintf(stderr, "early stopping: no improvement for %lld epochs\n", (long long)patience);
			break;
		}
	}
	fprintf(stderr, "trained in %.1fs\n", now_s() - t_run);
done:
	free(perm);
	px_arena_free(batch);
	fclose(csv);
	return rc;
}
