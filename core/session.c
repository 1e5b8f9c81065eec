/* Opening a pipeline: plugins, data, model, loss and optimizer, with file:line:col errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

const struct px_param_spec px_train_schema[] = {
	{"epochs", PX_T_INT, "10", 0, 1e6, NULL, "passes over the training data"},
	{"batch", PX_T_INT, "32", 1, 1e6, NULL, "examples per optimizer step"},
	{"eval_batch", PX_T_INT, "256", 1, 1e6, NULL, "examples per step when evaluating"},
	{"threads", PX_T_INT, "0", 0, 1024, NULL, "OpenBLAS threads (0: all cores)"},
	{"shuffle", PX_T_BOOL, "true", 0, 0, NULL, "reshuffle the training data every epoch (seeded)"},
	{"steps_per_epoch", PX_T_INT, "0", 0, 1e9, NULL, "cap on steps per epoch (0: the whole split)"},
	{"clip_grad_norm", PX_T_FLOAT, "0", 0, PX_UNBOUNDED, NULL, "clip the global gradient L2 norm to this (0: off)"},
	{"clip_grad_value", PX_T_FLOAT, "0", 0, PX_UNBOUNDED, NULL, "clip every gradient element to [-v, v] (0: off)"},
	{"log_every", PX_T_INT, "100", 1, 1e9, NULL, "steps between log lines when not on a terminal"},
	{"checkpoint.every", PX_T_STRING, "epoch", 0, 0, NULL, "'epoch', or a number of steps between checkpoints"},
	{"checkpoint.keep", PX_T_INT, "1", 1, 1000, NULL, "epoch checkpoints to keep under checkpoints/ (the latest is always model.safetensors)"},
	{"early_stopping.patience", PX_T_INT, "0", 0, 1e6, NULL, "stop after this many epochs without improvement (0: off)"},
	{"early_stopping.monitor", PX_T_ENUM, "val_loss", 0, 0, "val_loss|val_accuracy", "what early stopping watches"},
	{"early_stopping.min_delta", PX_T_FLOAT, "0", 0, PX_UNBOUNDED, NULL, "smallest change that counts as an improvement"},
	{"nan_check", PX_T_BOOL, "true", 0, 0, NULL, "stop on NaN/Inf in the loss or gradients, naming the node"},
	{NULL, 0, NULL, 0, 0, NULL, NULL},
};

const struct px_param_spec px_eval_schema[] = {
	{"split", PX_T_ENUM, "test", 0, 0, "test|val|train", "split that `plexus eval` reports"},
	{"bpc", PX_T_BOOL, "false", 0, 0, NULL, "also report bits per character (cross-entropy / ln 2)"},
	{"anomaly_class", PX_T_INT, "-1", -1, 1e9, NULL, "report ROC AUC of the reconstruction error separating this class (normal) from the others"},
	{"iou", PX_T_BOOL, "false", 0, 0, NULL, "report per-class and mean IoU of the loss input's argmax (segmentation)"},
	{"generate", PX_T_STRING, "", 0, 0, NULL, "node.port of decoded tokens: report exact match and token accuracy of free-running decoding"},
	{"naive_baseline", PX_T_BOOL, "false", 0, 0, NULL, "also report the MSE of predicting the last input value (series)"},
	{"pca_baseline", PX_T_INT, "0", 0, 1e6, NULL, "also report the reconstruction MSE of PCA with this many components"},
	{NULL, 0, NULL, 0, 0, NULL, NULL},
};

static bool in_schema(const struct px_param_spec *s, const char *key)
{
	for (; s && s->key; s++)
		if (!strcmp(s->key, key))
			return true;
	return false;
}

static bool not_source_key(const char *key, void *ctx)
{
	return !in_schema(ctx, key);
}

static bool not_view_key(const char *key, void *ctx)
{
	(void)ctx;
	return !in_schema(px_view_schema, key);
}

static int load_split(struct px_session *s, int sp, struct px_error *err)
{
	struct px_pipeline *pl = s->pl;
	struct px_split_spec *ss = &pl->split[sp];
	struct px_error e;
	const struct px_entry *src = px_registry_find(s->reg, PX_E_SOURCE, ss->source, NULL, &e);
	if (!src)
		return px_error_at(err, e.code, pl->file, ss->line, ss->col, "data.%s: %s",
				   px_split_names[sp], e.msg);
	const struct px_source_ops *ops = src->ops;
	char owner[64];
	snprintf(owner, sizeof owner, "data.%s (%s)", px_split_names[sp], ss->source);
	/* keys that are neither the source's nor a view's */
	for (int i = 0; i < ss->opts.n; i++) {
		const char *k = ss->opts.opts[i].key;
		if (!in_schema(ops->schema, k) && !in_schema(px_view_schema, k)) {
			char a[400], b[400];
			px_schema_keys(ops->schema, a, sizeof a);
			px_schema_keys(px_view_schema, b, sizeof b);
			return px_error_at(err, PX_ERR_INVALID, pl->file, ss->opts.opts[i].line,
					   ss->opts.opts[i].col, "%s: unknown key '%s' (valid keys: source, %s%s%s)",
					   owner, k, a, *a ? ", " : "", b);
		}
	}
	struct px_config *scfg = NULL, *vcfg = NULL;
	int rc = px_config_from_raw(ops->schema, &ss->opts, pl->file, owner, not_source_key,
				    (void *)ops->schema, NULL, &scfg, err);
	if (rc)
		return rc;
	/* view: data-level defaults, then the split's own keys */
	rc = px_config_from_raw(px_view_schema, &pl->data_defaults, pl->file, "data", NULL, NULL,
				NULL, &vcfg, err);
	for (int i = 0; !rc && i < ss->opts.n; i++) {
		const struct px_raw_opt *o = &ss->opts.opts[i];
		if (in_schema(px_view_schema, o->key))
			rc = px_config_set(vcfg, o->key, (const char *const *)o->texts, o->n, o->is_list,
					   o->line, o->col, err);
	}
	(void)not_view_key;
	if (!rc) {
		rc = ops->load(scfg, px_split_names[sp], pl->seed, &s->ds[sp], err);
		/* a file that cannot be opened is the pipeline's fault (exit 2); a corrupt one is not */
		if (rc == PX_ERR_IO)
			rc = PX_ERR_INVALID;
		if (rc && !err->line)
			px_error_at(err, rc, pl->file, ss->line, ss->col, "%s: %s", owner, err->msg);
	}
	if (!rc) {
		rc = px_dataset_apply_view(&s->ds[sp], vcfg, err);
		if (rc && !err->line)
			px_error_at(err, rc, pl->file, ss->line, ss->col, "%s: %s", owner, err->msg);
	}
	if (!rc && s->ds[sp].n == 0)
		rc = px_error_at(err, PX_ERR_INVALID, pl->file, ss->line, ss->col,
				 "%s: no examples left after the view", owner);
	px_config_free(scfg);
	px_config_free(vcfg);
	if (!rc)
		s->have[sp] = true;
	return rc;
}

static void set_info(struct px_session *s)
{
	const struct px_dataset *d = &s->ds[PX_SPLIT_TRAIN];
	struct px_data_info *in = &s->info;
	in->x = d->x;
	in->x.dim[0] = -1;
	in->y = d->y;
	in->y.dim[0] = -1;
	in->x_ragged = d->x_len != NULL;
	in->y_ragged = d->y_len != NULL;
	struct px_vars *v = &in->vars;
	v->n = 0;
#define VAR(nm, val) (v->names[v->n] = (nm), v->values[v->n++] = (val))
	VAR("classes", d->n_classes);
	VAR("x_vocab", d->x_vocab_n);
	VAR("y_vocab", d->y_vocab_n);
	VAR("features", d->x.dim[d->x.ndim - 1]);
	VAR("steps", d->x.ndim > 1 ? d->x.dim[1] : 1);
#undef VAR
}

static int open_loss(struct px_session *s, struct px_error *err)
{
	struct px_pipeline *pl = s->pl;
	struct px_error e;
	s->loss_entry = px_registry_find(s->reg, PX_E_LOSS, pl->loss_kind, NULL, &e);
	if (!s->loss_entry)
		return px_error_at(err, e.code, pl->file, pl->loss_line, pl->loss_col, "loss: %s", e.msg);
	const struct px_loss_ops *ops = s->loss_entry->ops;
	struct px_model *m = s->model;
	int rc;
	if (pl->loss_input.ref)
		rc = px_model_resolve(m, pl->loss_input.ref, m->n_nodes, &s->loss_in, &e);
	else
		rc = (s->loss_in = (struct px_src){m->n_nodes - 1, 0}, 0);
	if (!rc)
		rc = px_model_resolve(m, pl->loss_target.ref ? pl->loss_target.ref : "label",
				      m->n_nodes, &s->loss_target, &e);
	if (rc)
		return px_error_at(err, rc, pl->file,
				   pl->loss_input.line ? pl->loss_input.line : pl->loss_line,
				   pl->loss_input.line ? pl->loss_input.col : pl->loss_col, "loss: %s", e.msg);
	char owner[64];
	snprintf(owner, sizeof owner, "loss (%s)", pl->loss_kind);
	rc = px_config_from_raw(ops->schema, &pl->loss_opts, pl->file, owner, NULL, NULL,
				&s->info.vars, &s->loss_cfg, err);
	if (rc)
		return rc;
	struct px_shape ps, ts;
	bool r;
	ps = s->loss_in.node >= 0 ? m->nodes[s->loss_in.node].out_shape[s->loss_in.port] : s->info.x;
	if (s->loss_target.node >= 0)
		ts = m->nodes[s->loss_target.node].out_shape[s->loss_target.port];
	else
		ts = s->loss_target.port == 0 ? s->info.x : s->info.y;
	(void)r;
	rc = ops->create(s->loss_cfg, &ps, &ts, &s->loss, err);
	if (rc && !err->line)
		px_error_at(err, rc, pl->file, pl->loss_line, pl->loss_col, "%s: %s", owner, err->msg);
	return rc;
}

static int open_optim(struct px_session *s, struct px_error *err)
{
	struct px_pipeline *pl = s->pl;
	struct px_error e;
	s->optim_entry = px_registry_find(s->reg, PX_E_OPTIM, pl->optim_kind, NULL, &e);
	if (!s->optim_entry)
		return px_error_at(err, e.code, pl->file, pl->optim_line, pl->optim_col,
				   "train.optimizer: %s", e.msg);
	const struct px_optim_ops *ops = s->optim_entry->ops;
	char owner[64];
	snprintf(owner, sizeof owner, "optimizer (%s)", pl->optim_kind);
	int rc = px_config_from_raw(ops->schema, &pl->optim_opts, pl->file, owner, NULL, NULL,
				    NULL, &s->optim_cfg, err);
	if (!rc)
		rc = ops->create(s->optim_cfg, s->model->trainable, s->model->n_trainable, &s->optim, err);
	return rc;
}

int px_session_open(const char *path, const struct px_session_opts *o, struct px_session **out,
		    struct px_error *err)
{
	*out = NULL;
	struct px_session *s = calloc(1, sizeof *s);
	if (!s)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	s->final_split = -1;
	int rc = px_pipeline_load(path, o->overrides, o->n_overrides, &s->pl, err);
	if (rc)
		goto fail;
	struct px_pipeline *pl = s->pl;
	s->reg = px_registry_new();
	if (!s->reg) {
		rc = px_error_set(err, PX_ERR_NOMEM, "out of memory");
		goto fail;
	}
	/* search order: --plugin-path, pipeline plugins.path, $PLEXUS_PLUGIN_PATH, installed */
	const char *extra[64];
	int ne = 0;
	for (int i = 0; i < o->n_plugin_paths && ne < 64; i++)
		extra[ne++] = o->plugin_paths[i];
	for (int i = 0; i < pl->n_plugin_paths && ne < 64; i++)
		extra[ne++] = pl->plugin_paths[i];
	px_registry_load_default(s->reg, extra, ne, err);
	for (int i = 0; !rc && i < pl->n_prefer; i++)
		rc = px_registry_prefer(s->reg, pl->prefer[i], err);
	for (int i = 0; !rc && i < o->n_prefer; i++)
		rc = px_registry_prefer(s->reg, o->prefer[i], err);
	if (rc)
		goto fail;
	rc = px_config_from_raw(px_train_schema, &pl->train, pl->file, "train", NULL, NULL, NULL,
				&s->train_cfg, err);
	if (!rc)
		rc = px_config_from_raw(px_eval_schema, &pl->eval, pl->file, "eval", NULL, NULL, NULL,
					&s->eval_cfg, err);
	if (!rc)
		rc = px_config_from_raw(px_schedule_schema, &pl->schedule, pl->file, "train.schedule",
					NULL, NULL, NULL, &s->sched_cfg, err);
	if (rc)
		goto fail;
	const char *every = px_config_str(s->train_cfg, "checkpoint.every");
	int64_t steps;
	if (strcmp(every, "epoch") && (!px_parse_int(every, &steps) || steps < 1)) {
		rc = px_config_error(s->train_cfg, err, PX_ERR_INVALID, "checkpoint.every",
				     "'checkpoint.every' must be 'epoch' or a positive number of steps, got '%s'", every);
		goto fail;
	}
	s->threads = (int)px_config_int(s->train_cfg, "threads");
	px_set_threads(s->threads);
	if ((rc = load_split(s, PX_SPLIT_TRAIN, err)))
		goto fail;
	if (pl->split[PX_SPLIT_VAL].present) {
		if ((rc = load_split(s, PX_SPLIT_VAL, err)))
			goto fail;
	} else if (pl->val_split > 0) {
		rc = px_dataset_split(&s->ds[PX_SPLIT_TRAIN], pl->val_split, pl->seed,
				      &s->ds[PX_SPLIT_VAL], err);
		if (rc)
			goto fail;
		s->have[PX_SPLIT_VAL] = s->ds[PX_SPLIT_VAL].n > 0;
	}
	if (o->want_test && pl->split[PX_SPLIT_TEST].present && (rc = load_split(s, PX_SPLIT_TEST, err)))
		goto fail;
	set_info(s);
	rc = px_model_build(s->reg, pl, &s->info, pl->seed, &s->model, err);
	if (!rc)
		rc = open_loss(s, err);
	if (!rc && !o->no_optimizer)
		rc = open_optim(s, err);
	if (rc)
		goto fail;
	*out = s;
	return 0;
fail:
	px_session_free(s);
	return rc;
}

void px_session_free(struct px_session *s)
{
	if (!s)
		return;
	if (s->optim && s->optim_entry)
		((const struct px_optim_ops *)s->optim_entry->ops)->destroy(s->optim);
	if (s->loss && s->loss_entry)
		((const struct px_loss_ops *)s->loss_entry->ops)->destroy(s->loss);
	px_config_free(s->optim_cfg);
	px_config_free(s->loss_cfg);
	px_config_free(s->train_cfg);
	px_config_free(s->eval_cfg);
	px_config_free(s->sched_cfg);
	px_model_free(s->model);
	for (int i = 0; i < 3; i++)
		px_dataset_free(&s->ds[i]);
	px_registry_free(s->reg);
	px_pipeline_free(s->pl);
	free(s);
}

int px_session_batch(struct px_session *s, int split, const int64_t *idx, int64_t n,
		     struct px_arena *a, struct px_tensor **x, struct px_tensor **y,
		     struct px_error *err)
{
	return px_dataset_gather(&s->ds[split], idx, n, a, x, y, err);
}
