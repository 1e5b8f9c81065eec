/* The plexus command line. Exit codes: 0 success, 1 runtime failure, 2 usage or pipeline
 * error. Every error is one line on stderr. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "plexus/pipeline.h"
#include "cli.h"
#include "comm.h"

static const char usage_text[] =
	"usage: plexus COMMAND [options]\n"
	"\n"
	"commands:\n"
	"  train PIPELINE [--run-dir DIR] [--resume] [--set key.path=value ...]\n"
	"  eval PIPELINE --checkpoint FILE [--split test|val|train] [--json]\n"
	"  predict PIPELINE --checkpoint FILE --input X.npy [--lengths L.npy] --output Y.npy [--node NAME[.PORT]]\n"
	"  validate PIPELINE            per-node output shapes and parameter counts\n"
	"  plugins [--json]             loaded plugins, their kinds and refusals\n"
	"  explain KIND                 options of a layer, loss, optimizer or data source\n"
	"  inspect FILE.safetensors     tensors and metadata of a checkpoint\n"
	"  diagnose PIPELINE --grad-norms [--checkpoint FILE]   ||dLoss/dh_t|| per step of recurrent layers\n"
	"  sample PIPELINE --checkpoint FILE [--prompt TEXT] [--length N] [--temperature T]\n"
	"  score PIPELINE --checkpoint FILE --input X.npy --output S.npy   reconstruction error per example\n"
	"  reconstruct PIPELINE --checkpoint FILE --grid OUT.png [--count N]\n"
	"  translate PIPELINE --checkpoint FILE [--beam K]      decode lines from stdin\n"
	"  attention PIPELINE --checkpoint FILE (--input TEXT | --index N) --out MAP.svg|.png|.csv\n"
	"  report RUN_DIR [RUN_DIR ...] [--out FILE]   rebuild report.html; several runs: overlay\n"
	"  plugin-check FILE.so [KIND] [--set key=value] [--input-shape '3,4,5@4,2,3; -']   conformance checks (docs/plugins.md)\n"
	"\n"
	"common options: --plugin-path DIR|FILE, --prefer KIND=PLUGIN, --set key.path=value\n";

int px_cli_usage_error(const char *fmt, const char *a)
{
	fprintf(stderr, "plexus: ");
	fprintf(stderr, fmt, a);
	fprintf(stderr, "\n(run 'plexus --help' for the commands)\n");
	return EXIT_USAGE;
}

/* Pipeline-shaped failures are the user's to fix: exit 2. Data/IO/numeric: exit 1. */
static int exit_code_for(int rc)
{
	switch (rc) {
	case PX_ERR_PARSE:
	case PX_ERR_INVALID:
	case PX_ERR_NOTFOUND:
	case PX_ERR_SHAPE:
		return EXIT_USAGE;
	default:
		return EXIT_RUNTIME;
	}
}

int px_cli_fail(const struct px_error *err, int rc)
{
	fprintf(stderr, "%s\n", err->msg[0] ? err->msg : px_status_name(rc));
	return exit_code_for(rc);
}

int px_cli_open_session(struct cli *c, bool want_test, bool no_optim, struct px_session **s,
			struct px_error *err)
{
	struct px_session_opts o = {
		.plugin_paths = c->plugin_paths, .n_plugin_paths = c->n_plugin_paths,
		.prefer = c->prefer, .n_prefer = c->n_prefer, .overrides = c->sets,
		.n_overrides = c->n_sets, .want_test = want_test, .no_optimizer = no_optim,
	};
	return px_session_open(c->pipeline, &o, s, err);
}

static void print_metrics(const char *split, const struct px_metrics *m, bool json)
{
	if (json) {
		printf("{\"split\": \"%s\", \"examples\": %lld, \"loss\": %.6g", split,
		       (long long)m->examples, m->loss);
		if (!isnan(m->accuracy))
			printf(", \"accuracy\": %.6g", m->accuracy);
		for (int i = 0; i < m->n_extra; i++)
			if (isnan(m->extra[i]))
				printf(", \"%s\": null", m->extra_name[i]);
			else
				printf(", \"%s\": %.6g", m->extra_name[i], m->extra[i]);
		printf("}\n");
		return;
	}
	printf("%s: %lld examples, loss %.6g", split, (long long)m->examples, m->loss);
	if (!isnan(m->accuracy))
		printf(", accuracy %.4f", m->accuracy);
	for (int i = 0; i < m->n_extra; i++)
		printf(", %s %.4f", m->extra_name[i], m->extra[i]);
	printf("\n");
}

/* ---------------------------------------------------------------- commands */
/* Under mpirun every rank runs `plexus train`. An error that every rank reached together
 * (a NaN, disagreeing pipelines) is reported once by rank 0 and every rank exits with it; an
 * error of one rank alone ends the whole job (MPI_Abort), so no rank waits in a collective. */
static int train_fail(struct px_comm *comm, const struct px_error *err, int code)
{
	if (comm->size > 1 && !comm->agreed_failure) {
		fprintf(stderr, "rank %d of %d (%s): %s\n", comm->rank, comm->size, comm->host, err->msg);
		px_comm_abort(comm, code);
	}
	if (comm->rank == 0)
		fprintf(stderr, "%s\n", err->msg);
	px_comm_close(comm);
	return code;
}

/* Did every rank open the pipeline? Failing ranks other than 0 name themselves when rank 0
 * did not fail the same way. Returns the exit code for all of them (0: every rank opened). */
static int train_open_agree(struct px_comm *comm, const struct px_error *err, int rc)
{
	int32_t mine = rc ? exit_code_for(rc) : 0;
	int32_t *all = calloc((size_t)comm->size, sizeof *all);
	struct px_error e;
	if (!all || px_comm_allgather(comm, &mine, all, sizeof mine, &e)) {
		free(all);
		return train_fail(comm, rc ? err : &e, mine ? mine : EXIT_RUNTIME);
	}
	int code = 0;
	for (int r = 0; r < comm->size; r++)
		code = all[r] > code ? all[r] : code;
	bool same_as_0 = all[0] == mine;
	free(all);
	if (!code)
		return 0;
	if (mine && comm->rank == 0)
		fprintf(stderr, "%s\n", err->msg);
	else if (mine && !same_as_0)
		fprintf(stderr, "rank %d of %d (%s): %s\n", comm->rank, comm->size, comm->host, err->msg);
	px_comm_close(comm);
	return code;
}

static int cmd_train(struct cli *c)
{
	struct px_error err = {0};
	struct px_comm *comm;
	struct px_session *s = NULL;
	int rc = px_comm_open(&comm, &err);
	if (rc)
		return px_cli_fail(&err, rc);
	rc = px_cli_open_session(c, true, false, &s, &err);
	if (comm->size == 1 && rc) {
		rc = px_cli_fail(&err, rc);
		px_comm_close(comm);
		return rc;
	}
	if (comm->size > 1 && (rc = train_open_agree(comm, &err, rc))) {
		px_session_free(s);
		return rc;
	}
	s->comm = comm;
	char dir[4096];
	if (c->run_dir)
		snprintf(dir, sizeof dir, "%s", c->run_dir);
	else
		snprintf(dir, sizeof dir, "runs/%s", s->pl->name);
	rc = px_train(s, dir, c->resume, &err);
	if (!rc && s->have[PX_SPLIT_TEST] && comm->rank == 0) {
		struct px_metrics m = s->final;   /* the report's evaluation, else a fresh one */
		if (s->final_split != PX_SPLIT_TEST)
			rc = px_evaluate(s, PX_SPLIT_TEST, &m, &err);
		if (!rc)
			print_metrics("test", &m, false);
	}
	if (!rc && comm->rank == 0)
		printf("results: %s/ (model.safetensors, metrics.csv, pipeline.yaml)\n", dir);
	px_session_free(s);
	if (rc)
		return train_fail(comm, &err, EXIT_RUNTIME);
	px_comm_close(comm);
	return 0;
}

static int split_index(const char *name)
{
	for (int i = 0; i < 3; i++)
		if (!strcmp(name, px_split_names[i]))
			return i;
	return -1;
}

static int cmd_eval(struct cli *c)
{
	if (!c->checkpoint)
		return px_cli_usage_error("eval needs --checkpoint FILE%s", "");
	struct px_error err = {0};
	struct px_session *s;
	int rc = px_cli_open_session(c, true, true, &s, &err);
	if (rc)
		return px_cli_fail(&err, rc);
	const char *split = c->split ? c->split : px_config_str(s->eval_cfg, "split");
	int sp = split_index(split);
	if (sp < 0) {
		px_session_free(s);
		return px_cli_usage_error("--split must be train, val or test, got '%s'", split);
	}
	rc = px_load_params(s, c->checkpoint, &err);
	struct px_metrics m;
	if (!rc)
		rc = px_evaluate(s, sp, &m, &err);
	if (!rc)
		print_metrics(split, &m, c->json);
	px_session_free(s);
	if (rc) {
		fprintf(stderr, "%s\n", err.msg);
		return EXIT_RUNTIME;
	}
	return 0;
}

static int cmd_predict(struct cli *c)
{
	if (!c->checkpoint || !c->input || !c->output)
		return px_cli_usage_error("predict needs --checkpoint FILE --input X.npy --output Y.npy%s", "");
	struct px_error err = {0};
	struct px_session *s;
	int rc = px_cli_open_session(c, false, true, &s, &err);
	if (rc)
		return px_cli_fail(&err, rc);
	float *x = NULL, *y = NULL;
	int32_t *len = NULL;
	struct px_arena *a = px_arena_new(1 << 20);
	int nd = 0;
	int64_t shape[PX_MAX_DIMS];
	struct px_src out;
	rc = px_load_params(s, c->checkpoint, &err);
	if (!rc)
		rc = px_npy_read(c->input, &nd, shape, &x, &err);
	if (!rc && c->lengths) {
		int lnd;
		int64_t lsh[PX_MAX_DIMS];
		rc = px_npy_read_i32(c->lengths, &lnd, lsh, &len, &err);
		if (!rc && (lnd != 1 || lsh[0] != shape[0]))
			rc = px_error_set(&err, PX_ERR_SHAPE, "%s: lengths must be [%lld], one per example",
					  c->lengths, (long long)shape[0]);
		for (int64_t i = 0; !rc && nd > 1 && i < shape[0]; i++)
			if (len[i] < 1 || len[i] > shape[1])
				rc = px_error_set(&err, PX_ERR_INVALID, "%s: length %d of example %lld is outside 1..%lld",
						  c->lengths, len[i], (long long)i, (long long)shape[1]);
	}
	if (!rc) {  /* the input must look like the training data */
		const struct px_shape *want = &s->info.x;
		bool ok = nd == want->ndim;
		for (int i = 1; ok && i < nd; i++)
			ok = shape[i] == want->dim[i] || (i == 1 && want->ndim == 3);
		if (!ok) {
			struct px_shape got = {.ndim = nd};
			memcpy(got.dim, shape, sizeof(int64_t) * (size_t)nd);
			char g[64], w[64];
			rc = px_error_set(&err, PX_ERR_SHAPE, "%s: input is %s, the model takes %s", c->input,
					  px_shape_str(&got, g, sizeof g), px_shape_str(want, w, sizeof w));
		}
	}
	if (!rc) {
		if (c->node)
			rc = px_model_resolve(s->model, c->node, s->model->n_nodes, &out, &err);
		else
			out = s->loss_in;
	}
	if (!rc && a) {
		struct px_tensor xt = {.data = x, .ndim = nd, .lengths = len};
		memcpy(xt.shape, shape, sizeof(int64_t) * (size_t)nd);
		rc = px_model_forward(s->model, &xt, NULL, false, &err);
		if (!rc) {
			const struct px_tensor *o = px_model_output(s->model, out);
			rc = px_npy_write(c->output, o->ndim, o->shape, o->data, &err);
			if (!rc)
				printf("wrote %s\n", c->output);
		}
	}
	free(x);
	free(y);
	free(len);
	px_arena_free(a);
	px_session_free(s);
	if (rc) {
		fprintf(stderr, "%s\n", err.msg);
		return rc == PX_ERR_SHAPE || rc == PX_ERR_NOTFOUND || rc == PX_ERR_INVALID ? EXIT_USAGE : EXIT_RUNTIME;
	}
	return 0;
}

static int cmd_validate(struct cli *c)
{
	struct px_error err = {0};
	struct px_session *s;
	int rc = px_cli_open_session(c, false, false, &s, &err);
	if (rc)
		return px_cli_fail(&err, rc);
	struct px_model *m = s->model;
	char sh[128];
	printf("%s: ok\n", s->pl->file);
	printf("data: x %s", px_shape_str(&s->info.x, sh, sizeof sh));
	printf(", y %s, %lld training examples\n", px_shape_str(&s->info.y, sh, sizeof sh),
	       (long long)s->ds[PX_SPLIT_TRAIN].n);
	printf("%-14s %-18s %-14s %-22s %12s\n", "node", "kind", "plugin", "output", "params");
	int64_t total = 0;
	for (int i = 0; i < m->n_nodes; i++) {
		const struct px_node *n = &m->nodes[i];
		int64_t pc = px_model_param_count(m, i);
		total += pc;
		printf("%-14s %-18s %-14s %-22s %12lld\n", n->name, n->ops->kind,
		       n->entry->plugin->desc->name, px_shape_str(&n->out_shape[0], sh, sizeof sh),
		       (long long)pc);
		for (int k = 1; k < n->n_out; k++) {
			char port[160];
			snprintf(port, sizeof port, "%s.%s", n->name, n->ops->outputs[k].name);
			printf("  %-47s %-22s\n", port, px_shape_str(&n->out_shape[k], sh, sizeof sh));
		}
	}
	printf("total trainable parameters: %lld\n", (long long)total);
	px_session_free(s);
	return 0;
}

static struct px_registry *open_registry(struct cli *c, struct px_error *err)
{
	struct px_registry *r = px_registry_new();
	if (!r) {
		px_error_set(err, PX_ERR_NOMEM, "out of memory");
		return NULL;
	}
	px_registry_load_default(r, c->plugin_paths, c->n_plugin_paths, err);
	for (int i = 0; i < c->n_prefer; i++)
		if (px_registry_prefer(r, c->prefer[i], err)) {
			px_registry_free(r);
			return NULL;
		}
	return r;
}

static void kinds_of(const struct px_plugin *p, struct px_sbuf *b, bool json)
{
	const char *sep = "";
#define KINDS(tbl, T)                                                              \
	for (int i = 0; (tbl) && (tbl)[i]; i++) {                                      \
		if (json) {                                                            \
			px_sbuf_add(b, sep);                                           \
			px_sbuf_add_json_str(b, (tbl)[i]->kind);                       \
		} else {                                                               \
			px_sbuf_addf(b, "%s%s%s", sep, (tbl)[i]->kind, T);             \
		}                                                                      \
		sep = ", ";                                                            \
	}
	KINDS(p->layers, "")
	KINDS(p->cells, " (cell)")
	KINDS(p->losses, " (loss)")
	KINDS(p->optims, " (optimizer)")
	KINDS(p->sources, " (source)")
#undef KINDS
}

static int cmd_plugins(struct cli *c)
{
	struct px_error err = {0};
	struct px_registry *r = open_registry(c, &err);
	if (!r)
		return px_cli_fail(&err, PX_ERR_INVALID);
	if (c->json)
		printf("{\"plugins\": [");
	for (int i = 0; i < r->n_plugins; i++) {
		const struct px_plugin_rec *pr = r->plugins[i];
		struct px_sbuf b = {0};
		kinds_of(pr->desc, &b, c->json);
		if (c->json) {
			struct px_sbuf j = {0};
			px_sbuf_add(&j, "{\"name\": ");
			px_sbuf_add_json_str(&j, pr->desc->name);
			px_sbuf_add(&j, ", \"version\": ");
			px_sbuf_add_json_str(&j, pr->desc->version);
			px_sbuf_add(&j, ", \"file\": ");
			px_sbuf_add_json_str(&j, pr->path);
			px_sbuf_addf(&j, ", \"abi\": \"%d.%d\", \"kinds\": [%s]}", pr->desc->abi_major,
				     pr->desc->abi_minor, b.s ? b.s : "");
			printf("%s%s", i ? ", " : "", j.s ? j.s : "");
			px_sbuf_free(&j);
		} else {
			printf("%s %s (ABI %d.%d) %s\n  kinds: %s\n", pr->desc->name, pr->desc->version,
			       pr->desc->abi_major, pr->desc->abi_minor, pr->path, b.s ? b.s : "none");
		}
		px_sbuf_free(&b);
	}
	if (c->json) {
		printf("], \"refused\": [");
		for (int i = 0; i < r->n_refusals; i++) {
			struct px_sbuf j = {0};
			px_sbuf_add_json_str(&j, r->refusals[i]);
			printf("%s%s", i ? ", " : "", j.s ? j.s : "");
			px_sbuf_free(&j);
		}
		printf("]}\n");
	} else {
		/* kinds provided more than once, and which implementation is preferred */
		for (int i = 0; i < r->n_entries; i++) {
			const struct px_entry *e = &r->entries[i];
			int count = 0;
			for (int j = 0; j < r->n_entries; j++)
				count += r->entries[j].type == e->type && !strcmp(r->entries[j].kind, e->kind);
			bool first = true;
			for (int j = 0; j < i; j++)
				first &= !(r->entries[j].type == e->type && !strcmp(r->entries[j].kind, e->kind));
			if (count > 1 && first) {
				struct px_error fe;
				const struct px_entry *pref = px_registry_find(r, e->type, e->kind, NULL, &fe);
				printf("%s '%s': %d implementations, preferred: %s\n", px_entry_type_name(e->type),
				       e->kind, count, pref ? pref->plugin->desc->name : "none (choose with impl: or --prefer)");
			}
		}
		for (int i = 0; i < r->n_refusals; i++)
			printf("refused: %s\n", r->refusals[i]);
	}
	px_registry_free(r);
	return 0;
}

static void explain_schema(const struct px_param_spec *s)
{
	if (!s || !s->key) {
		printf("  (no options)\n");
		return;
	}
	static const char *const tn[] = {"", "int", "float", "bool", "enum", "string", "ints", "floats"};
	for (; s->key; s++) {
		char range[96] = "";
		if ((s->type == PX_T_INT || s->type == PX_T_FLOAT || s->type == PX_T_INTS ||
		     s->type == PX_T_FLOATS) && (s->min > -PX_UNBOUNDED || s->max < PX_UNBOUNDED)) {
			char lo[32] = "", hi[32] = "";
			if (s->min > -PX_UNBOUNDED)
				snprintf(lo, sizeof lo, "%g", s->min);
			if (s->max < PX_UNBOUNDED)
				snprintf(hi, sizeof hi, "%g", s->max);
			snprintf(range, sizeof range, " [%s..%s]", lo, hi);
		}
		printf("  %-18s %-6s %-12s %s%s%s%s\n", s->key, tn[s->type],
		       s->def ? s->def : "(required)", s->doc ? s->doc : "", range,
		       s->choices ? " one of: " : "", s->choices ? s->choices : "");
	}
}

static void explain_ports(const char *what, const struct px_port_spec *p)
{
	printf("%s:", what);
	for (int i = 0; p && p[i].name; i++)
		printf("%s %s%s%s", i ? "," : "", p[i].name,
		       (p[i].flags & PX_PORT_OPTIONAL) ? " (optional)" : "",
		       (p[i].flags & PX_PORT_VARIADIC) ? " (one or more)" : "");
	printf("\n");
}

static int cmd_explain(struct cli *c)
{
	if (c->n_args < 1)
		return px_cli_usage_error("explain needs a KIND%s", "");
	const char *kind = c->args[0];
	struct px_error err = {0};
	struct px_registry *r = open_registry(c, &err);
	if (!r)
		return px_cli_fail(&err, PX_ERR_INVALID);
	int found = 0;
	for (int i = 0; i < r->n_entries; i++) {
		const struct px_entry *e = &r->entries[i];
		if (strcmp(e->kind, kind))
			continue;
		found++;
		printf("%s %s (plugin %s, %s)\n", px_entry_type_name(e->type), kind,
		       e->plugin->desc->name, e->plugin->path);
		switch (e->type) {
		case PX_E_LAYER: {
			const struct px_layer_ops *o = e->ops;
			printf("  %s\n", o->doc ? o->doc : "");
			explain_ports("inputs", o->inputs);
			explain_ports("outputs", o->outputs);
			explain_schema(o->schema);
			break;
		}
		case PX_E_LOSS: {
			const struct px_loss_ops *o = e->ops;
			printf("  %s\n", o->doc ? o->doc : "");
			explain_schema(o->schema);
			break;
		}
		case PX_E_OPTIM: {
			const struct px_optim_ops *o = e->ops;
			printf("  %s\n", o->doc ? o->doc : "");
			explain_schema(o->schema);
			break;
		}
		case PX_E_SOURCE: {
			const struct px_source_ops *o = e->ops;
			printf("  %s\n", o->doc ? o->doc : "");
			explain_schema(o->schema);
			break;
		}
		case PX_E_CELL:
			printf("  a single-step recurrent cell (%d state vector%s)\n",
			       ((const struct px_cell_ops *)e->ops)->n_state,
			       ((const struct px_cell_ops *)e->ops)->n_state > 1 ? "s" : "");
			break;
		default:
			break;
		}
	}
	if (!found) {
		char kinds[2048];
		px_registry_kinds(r, PX_E_LAYER, kinds, sizeof kinds);
		fprintf(stderr, "plexus: unknown kind '%s' (layers: %s)\n", kind, kinds);
	}
	px_registry_free(r);
	return found ? 0 : EXIT_USAGE;
}

static int cmd_inspect(struct cli *c)
{
	if (c->n_args < 1)
		return px_cli_usage_error("inspect needs a FILE.safetensors%s", "");
	struct px_error err = {0};
	struct px_st_file *f;
	int rc = px_st_open(c->args[0], &f, &err);
	if (rc) {
		fprintf(stderr, "%s\n", err.msg);
		return EXIT_RUNTIME;
	}
	int64_t total = 0;
	for (int i = 0; i < px_st_count(f); i++) {
		int nd;
		int64_t sh[PX_MAX_DIMS];
		const float *d = px_st_data(f, i, &nd, sh);
		struct px_shape s = {.ndim = nd};
		memcpy(s.dim, sh, sizeof(int64_t) * (size_t)nd);
		int64_t n = 1;
		for (int k = 0; k < nd; k++)
			n *= sh[k];
		double sum = 0, sq = 0;
		for (int64_t k = 0; k < n; k++) {
			sum += d[k];
			sq += (double)d[k] * d[k];
		}
		char b[64];
		printf("%-36s F32 %-20s mean %+.4g std %.4g\n", px_st_name(f, i), px_shape_str(&s, b, sizeof b),
		       n ? sum / (double)n : 0.0, n ? sqrt(fmax(0, sq / (double)n - (sum / (double)n) * (sum / (double)n))) : 0.0);
		total += n;
	}
	printf("%d tensors, %lld values\n", px_st_count(f), (long long)total);
	for (int i = 0; i < px_st_meta_count(f); i++) {
		const char *k = px_st_meta_key(f, i), *v = px_st_meta(f, k);
		if (!strcmp(k, "plexus.pipeline"))
			printf("metadata %s: (%zu bytes of YAML)\n", k, strlen(v));
		else
			printf("metadata %s: %s\n", k, v);
	}
	px_st_close(f);
	return 0;
}

/* ---------------------------------------------------------------- dispatch */
struct command {
	const char *name;
	int (*fn)(struct cli *c);
	bool needs_pipeline;
};

static const struct command commands[] = {
	{"train", cmd_train, true},
	{"eval", cmd_eval, true},
	{"predict", cmd_predict, true},
	{"validate", cmd_validate, true},
	{"plugins", cmd_plugins, false},
	{"explain", cmd_explain, false},
	{"inspect", cmd_inspect, false},
	{"diagnose", px_cmd_diagnose, true},
	{"sample", px_cmd_sample, true},
	{"score", px_cmd_score, true},
	{"reconstruct", px_cmd_reconstruct, true},
	{"translate", px_cmd_translate, true},
	{"attention", px_cmd_attention, true},
	{"report", px_cmd_report, false},
	{"plugin-check", px_cmd_plugin_check, false},
};

int px_cli_main(int argc, char **argv)
{
	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		fputs(usage_text, argc < 2 ? stderr : stdout);
		return argc < 2 ? EXIT_USAGE : 0;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("plexus %s (ABI %d.%d)\n", PX_VERSION, PX_ABI_MAJOR, PX_ABI_MINOR);
		return 0;
	}
	const struct command *cmd = NULL;
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
		if (!strcmp(argv[1], commands[i].name))
			cmd = &commands[i];
	if (!cmd)
		return px_cli_usage_error("unknown command '%s'", argv[1]);
	struct cli c = {.cmd = cmd->name, .index = -1};  /* --index 0 is a real index */
	static const struct option opts[] = {
		{"run-dir", required_argument, 0, 'r'}, {"resume", no_argument, 0, 'R'},
		{"set", required_argument, 0, 's'}, {"checkpoint", required_argument, 0, 'c'},
		{"json", no_argument, 0, 'j'}, {"input", required_argument, 0, 'i'},
		{"output", required_argument, 0, 'o'}, {"lengths", required_argument, 0, 'l'},
		{"node", required_argument, 0, 'n'}, {"split", required_argument, 0, 'S'},
		{"plugin-path", required_argument, 0, 'p'}, {"prefer", required_argument, 0, 'P'},
		{"prompt", required_argument, 0, 'm'}, {"length", required_argument, 0, 'L'},
		{"temperature", required_argument, 0, 't'}, {"grid", required_argument, 0, 'g'},
		{"count", required_argument, 0, 'k'}, {"beam", required_argument, 0, 'b'},
		{"out", required_argument, 0, 'O'}, {"index", required_argument, 0, 'x'},
		{"grad-norms", no_argument, 0, 'G'},
		{"input-shape", required_argument, 0, 'I'},
		{0, 0, 0, 0},
	};
	optind = 1;
	opterr = 0;
	int ch;
	/* GNU getopt permutes: options may come before or after the positional arguments */
	while ((ch = getopt_long(argc - 1, argv + 1, ":", opts, NULL)) != -1) {
		switch (ch) {
		case 'r': c.run_dir = optarg; break;
		case 'R': c.resume = true; break;
		case 'c': c.checkpoint = optarg; break;
		case 'j': c.json = true; break;
		case 'i': c.input = optarg; break;
		case 'o': c.output = optarg; break;
		case 'l': c.lengths = optarg; break;
		case 'n': c.node = optarg; break;
		case 'S': c.split = optarg; break;
		case 'm': c.prompt = optarg; break;
		case 'g': c.grid = optarg; break;
		case 'O': c.out = optarg; break;
		case 'G': c.grad_norms = true; break;
		case 'I': c.input_shape = optarg; break;
		case 'L':
		case 'k':
		case 'b':
		case 'x': {
			int64_t v;
			if (!px_parse_int(optarg, &v) || v < 0)
				return px_cli_usage_error("expected a non-negative integer, got '%s'", optarg);
			*(ch == 'L' ? &c.length : ch == 'k' ? &c.count : ch == 'b' ? &c.beam : &c.index) = v;
			break;
		}
		case 't':
			if (!px_parse_double(optarg, &c.temperature) || c.temperature <= 0)
				return px_cli_usage_error("--temperature must be a positive number, got '%s'", optarg);
			break;
		case 's':
			if (c.n_sets >= 64)
				return px_cli_usage_error("too many --set options%s", "");
			c.sets[c.n_sets++] = optarg;
			break;
		case 'p':
			if (c.n_plugin_paths >= 32)
				return px_cli_usage_error("too many --plugin-path options%s", "");
			c.plugin_paths[c.n_plugin_paths++] = optarg;
			break;
		case 'P':
			if (c.n_prefer >= 32)
				return px_cli_usage_error("too many --prefer options%s", "");
			c.prefer[c.n_prefer++] = optarg;
			break;
		case ':':
			return px_cli_usage_error("option '%s' needs a value", argv[optind]);
		default:
			return px_cli_usage_error("unknown option '%s'", argv[optind]);
		}
	}
	for (int i = optind + 1; i < argc; i++) {
		if (c.n_args >= 8)
			return px_cli_usage_error("too many arguments%s", "");
		c.args[c.n_args++] = argv[i];
	}
	if (cmd->needs_pipeline) {
		if (c.n_args < 1)
			return px_cli_usage_error("%s needs a PIPELINE file", cmd->name);
		c.pipeline = c.args[0];
	}
	return cmd->fn(&c);
}
