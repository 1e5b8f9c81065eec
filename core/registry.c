/* Plugin loader and registry: dlopen, two-way ABI check, table validation, kind lookup. */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"

#ifndef PX_PLUGINSDIR
#define PX_PLUGINSDIR "/usr/local/lib/plexus/plugins"
#endif

const struct px_plugin px_core_plugin = {
	.struct_size = sizeof(struct px_plugin),
	.abi_major = PX_ABI_MAJOR,
	.abi_minor = PX_ABI_MINOR,
	.name = "core",
	.version = PX_VERSION,
	.doc = "built-in layers, losses, optimizers and data sources",
	.layers = px_builtin_layers,
	.losses = px_builtin_losses,
	.optims = px_builtin_optims,
	.sources = px_builtin_sources,
};

const char *px_entry_type_name(enum px_entry_type t)
{
	static const char *const names[] = {"layer", "cell", "loss", "optimizer", "data source"};
	return t < PX_E_COUNT ? names[t] : "?";
}

static const struct px_cell_ops *host_find_cell(const struct px_host *h, const char *kind,
						struct px_error *err)
{
	struct px_registry *r = h->priv;
	const struct px_entry *e = px_registry_find(r, PX_E_CELL, kind, NULL, err);
	return e ? e->ops : NULL;
}

struct px_registry *px_registry_new(void)
{
	struct px_registry *r = calloc(1, sizeof *r);
	if (!r)
		return NULL;
	r->host.struct_size = sizeof r->host;
	r->host.abi_major = PX_ABI_MAJOR;
	r->host.abi_minor = PX_ABI_MINOR;
	r->host.version = PX_VERSION;
	r->host.find_cell = host_find_cell;
	r->host.priv = r;
	r->host.figure_batch = px_host_figure_batch;     /* ABI 1.1, report.c */
	r->host.figure_image = px_host_figure_image;
	r->host.figure_heatmap = px_host_figure_heatmap;
	r->host.figure_series = px_host_figure_series;
	struct px_error err;
	if (px_registry_load_file(r, NULL, &err)) {  /* the built-ins */
		px_registry_free(r);
		return NULL;
	}
	return r;
}

void px_registry_free(struct px_registry *r)
{
	if (!r)
		return;
	/* Plugins are never dlclose'd: their tables may still be referenced, and sanitizer and
	 * valgrind reports stay symbolised. */
	for (int i = 0; i < r->n_plugins; i++) {
		free(r->plugins[i]->path);
		free(r->plugins[i]);
	}
	free(r->plugins);
	free(r->entries);
	for (int i = 0; i < r->n_prefer; i++)
		free(r->prefer[i]);
	free(r->prefer);
	for (int i = 0; i < r->n_refusals; i++)
		free(r->refusals[i]);
	free(r->refusals);
	free(r);
}

static int refuse(struct px_registry *r, struct px_error *err, int code, const char *path,
		  const char *fmt, const char *a, const char *b)
{
	char why[600];
	snprintf(why, sizeof why, fmt, a ? a : "", b ? b : "");
	px_error_set(err, code, "%s: %s", path, why);
	char **nr = realloc(r->refusals, (size_t)(r->n_refusals + 1) * sizeof *nr);
	if (nr) {
		r->refusals = nr;
		r->refusals[r->n_refusals] = px_strdup(err->msg);
		if (r->refusals[r->n_refusals])
			r->n_refusals++;
	}
	return code;
}

/* Count a NULL-terminated table; -1 when an entry is malformed. */
#define TABLE_LEN(tbl, n) do { n = 0; while ((tbl) && (tbl)[n]) n++; } while (0)

/* A schema that does not satisfy itself (a default outside its range, an enum without
 * choices) is refused at load time instead of failing when a pipeline uses the kind. */
static const char *schema_why(const char *kind, const struct px_param_spec *schema)
{
	static char why[PX_ERROR_MSG_MAX];
	struct px_error e;
	if (!schema || !px_schema_check(schema, &e))
		return NULL;
	snprintf(why, sizeof why, "bad schema of kind '%s': %s", kind, e.msg);
	return why;
}

static const char *check_layer(const struct px_layer_ops *o)
{
	if (o->struct_size < sizeof *o)
		return "layer table smaller than this host's (struct_size)";
	if (!o->kind || !*o->kind)
		return "a layer without a kind";
	if (!o->create || !o->forward || !o->backward || !o->destroy)
		return "missing required callback (create, forward, backward or destroy)";
	if (!o->inputs || !o->inputs[0].name || !o->outputs || !o->outputs[0].name)
		return "a layer without input or output ports";
	return schema_why(o->kind, o->schema);
}

static const char *check_cell(const struct px_cell_ops *o)
{
	if (o->struct_size < sizeof *o)
		return "cell table smaller than this host's (struct_size)";
	if (!o->kind || !o->create || !o->cache_floats || !o->step || !o->step_backward || !o->destroy)
		return "cell missing a kind or a required callback";
	if (o->n_state < 1 || o->n_state > 2)
		return "cell n_state must be 1 or 2";
	return NULL;
}

static const char *check_loss(const struct px_loss_ops *o)
{
	if (o->struct_size < sizeof *o)
		return "loss table smaller than this host's (struct_size)";
	if (!o->kind || !o->create || !o->forward || !o->destroy)
		return "loss missing a kind or a required callback";
	return schema_why(o->kind, o->schema);
}

static const char *check_optim(const struct px_optim_ops *o)
{
	if (o->struct_size < sizeof *o)
		return "optimizer table smaller than this host's (struct_size)";
	if (!o->kind || !o->create || !o->step || !o->destroy || (o->slots && o->slots[0] && !o->slot))
		return "optimizer missing a kind or a required callback";
	bool has_lr = false;
	for (const struct px_param_spec *s = o->schema; s && s->key; s++)
		has_lr |= !strcmp(s->key, "lr") && s->type == PX_T_FLOAT;
	return has_lr ? schema_why(o->kind, o->schema) : "optimizer schema has no float 'lr'";
}

static const char *check_source(const struct px_source_ops *o)
{
	if (o->struct_size < sizeof *o)
		return "data source table smaller than this host's (struct_size)";
	return o->kind && o->load ? schema_why(o->kind, o->schema) : "data source missing a kind or load";
}

static int add_entry(struct px_registry *r, enum px_entry_type t, const char *kind,
		     const void *ops, struct px_plugin_rec *pr)
{
	struct px_entry *ne = realloc(r->entries, (size_t)(r->n_entries + 1) * sizeof *ne);
	if (!ne)
		return PX_ERR_NOMEM;
	r->entries = ne;
	r->entries[r->n_entries++] = (struct px_entry){t, kind, ops, pr};
	return 0;
}

/* Validate every table of a plugin; NULL when fine, else the reason. `dup` gets a kind that
 * appears twice inside the same plugin. */
static const char *validate(const struct px_plugin *p, const char **dup)
{
	const char *why;
	const char *kinds[256];
	enum px_entry_type types[256];
	int nk = 0;
#define CHECK_TABLE(tbl, T, fn)                                                  \
	for (int i = 0; (tbl) && (tbl)[i]; i++) {                                \
		if ((why = fn((tbl)[i])))                                        \
			return why;                                              \
		for (int j = 0; j < nk; j++)                                     \
			if (types[j] == T && !strcmp(kinds[j], (tbl)[i]->kind)) {  \
				*dup = (tbl)[i]->kind;                           \
				return "duplicate kind";                         \
			}                                                        \
		if (nk < 256) {                                                  \
			kinds[nk] = (tbl)[i]->kind;                              \
			types[nk++] = T;                                         \
		}                                                                \
	}
	CHECK_TABLE(p->layers, PX_E_LAYER, check_layer)
	CHECK_TABLE(p->cells, PX_E_CELL, check_cell)
	CHECK_TABLE(p->losses, PX_E_LOSS, check_loss)
	CHECK_TABLE(p->optims, PX_E_OPTIM, check_optim)
	CHECK_TABLE(p->sources, PX_E_SOURCE, check_source)
#undef CHECK_TABLE
	return NULL;
}

static bool plugin_name_taken(const struct px_registry *r, const char *name)
{
	for (int i = 0; i < r->n_plugins; i++)
		if (!strcmp(r->plugins[i]->desc->name, name))
			return true;
	return false;
}

/* path NULL: register the core's built-ins */
int px_registry_load_file(struct px_registry *r, const char *path, struct px_error *err)
{
	const struct px_plugin *p = &px_core_plugin;
	void *h = NULL;
	char abs[PATH_MAX];
	if (path) {
		if (!realpath(path, abs))
			return refuse(r, err, PX_ERR_PLUGIN, path, "cannot open: %s", strerror(errno), NULL);
		for (int i = 0; i < r->n_plugins; i++)
			if (!strcmp(r->plugins[i]->path, abs))
				return 0;  /* already loaded */
		struct stat st;
		if (stat(abs, &st) != 0 || !S_ISREG(st.st_mode))
			return refuse(r, err, PX_ERR_PLUGIN, abs, "not a regular file", NULL, NULL);
		if (st.st_mode & (S_IWGRP | S_IWOTH))
			return refuse(r, err, PX_ERR_PLUGIN, abs,
				      "refused: the file is writable by group or others", NULL, NULL);
		/* as for searched directories: one that others may write to could swap the file */
		char dir[PATH_MAX];
		snprintf(dir, sizeof dir, "%s", abs);
		*(strrchr(dir, '/') == dir ? dir + 1 : strrchr(dir, '/')) = 0;
		if (stat(dir, &st) != 0 || (st.st_mode & S_IWOTH))
			return refuse(r, err, PX_ERR_PLUGIN, abs,
				      "refused: its directory is writable by others", NULL, NULL);
		h = dlopen(abs, RTLD_NOW | RTLD_LOCAL);
		if (!h)
			return refuse(r, err, PX_ERR_PLUGIN, abs, "dlopen failed: %s", dlerror(), NULL);
		const struct px_plugin *(*entry)(const struct px_host *);
		*(void **)&entry = dlsym(h, "px_plugin_entry");
		if (!entry)
			return refuse(r, err, PX_ERR_PLUGIN, abs,
				      "not a plexus plugin (no px_plugin_entry symbol)", NULL, NULL);
		p = entry(&r->host);
		if (!p) {
			char v[32];
			snprintf(v, sizeof v, "%d.%d", PX_ABI_MAJOR, PX_ABI_MINOR);
			return refuse(r, err, PX_ERR_ABI, abs,
				      "px_plugin_entry returned NULL (the plugin refused host ABI %s)", v, NULL);
		}
		if (p->struct_size < sizeof *p)
			return refuse(r, err, PX_ERR_PLUGIN, abs,
				      "plugin table smaller than this host's (struct_size)", NULL, NULL);
		if (p->abi_major != PX_ABI_MAJOR || p->abi_minor > PX_ABI_MINOR) {
			char pv[32], hv[32];
			snprintf(pv, sizeof pv, "%d.%d", p->abi_major, p->abi_minor);
			snprintf(hv, sizeof hv, "%d.%d", PX_ABI_MAJOR, PX_ABI_MINOR);
			return refuse(r, err, PX_ERR_ABI, abs, "plugin ABI %s vs host ABI %s", pv, hv);
		}
		if (!p->name || !*p->name)
			return refuse(r, err, PX_ERR_PLUGIN, abs, "plugin has no name", NULL, NULL);
		if (plugin_name_taken(r, p->name))
			return refuse(r, err, PX_ERR_PLUGIN, abs,
				      "a plugin named '%s' is already loaded", p->name, NULL);
	}
	const char *dup = NULL;
	const char *why = validate(p, &dup);
	if (why)
		return refuse(r, err, PX_ERR_PLUGIN, path ? abs : "(built-in)",
			      dup ? "%s '%s' in one plugin" : "%s", why, dup);
	struct px_plugin_rec *pr = calloc(1, sizeof *pr);
	struct px_plugin_rec **np = realloc(r->plugins, (size_t)(r->n_plugins + 1) * sizeof *np);
	if (!pr || !np) {
		free(pr);
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	}
	r->plugins = np;
	pr->path = px_strdup(path ? abs : "(built-in)");
	pr->handle = h;
	pr->desc = p;
	r->plugins[r->n_plugins++] = pr;
	int rc = 0;
	for (int i = 0; !rc && p->layers && p->layers[i]; i++)
		rc = add_entry(r, PX_E_LAYER, p->layers[i]->kind, p->layers[i], pr);
	for (int i = 0; !rc && p->cells && p->cells[i]; i++)
		rc = add_entry(r, PX_E_CELL, p->cells[i]->kind, p->cells[i], pr);
	for (int i = 0; !rc && p->losses && p->losses[i]; i++)
		rc = add_entry(r, PX_E_LOSS, p->losses[i]->kind, p->losses[i], pr);
	for (int i = 0; !rc && p->optims && p->optims[i]; i++)
		rc = add_entry(r, PX_E_OPTIM, p->optims[i]->kind, p->optims[i], pr);
	for (int i = 0; !rc && p->sources && p->sources[i]; i++)
		rc = add_entry(r, PX_E_SOURCE, p->sources[i]->kind, p->sources[i], pr);
	return rc ? px_error_set(err, rc, "out of memory") : 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int px_registry_load_dir(struct px_registry *r, const char *dir, struct px_error *err)
{
	(void)err;
	if (dir[0] != '/') {
		struct px_error e;
		refuse(r, &e, PX_ERR_PLUGIN, dir,
		       "plugin directory ignored: only absolute paths are searched", NULL, NULL);
		return 0;
	}
	struct stat st;
	if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
		return 0;
	if (st.st_mode & S_IWOTH) {
		struct px_error e;
		refuse(r, &e, PX_ERR_PLUGIN, dir, "plugin directory refused: writable by others",
		       NULL, NULL);
		return 0;
	}
	DIR *d = opendir(dir);
	if (!d)
		return 0;
	char **names = NULL;
	int n = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		size_t len = strlen(de->d_name);
		if (len < 4 || strcmp(de->d_name + len - 3, ".so"))
			continue;
		char **nn = realloc(names, (size_t)(n + 1) * sizeof *nn);
		if (!nn)
			break;
		names = nn;
		names[n] = px_asprintf("%s/%s", dir, de->d_name);
		if (names[n])
			n++;
	}
	closedir(d);
	qsort(names, (size_t)n, sizeof *names, cmp_str);
	for (int i = 0; i < n; i++) {
		struct px_error e;
		px_registry_load_file(r, names[i], &e);  /* refusals are recorded */
		free(names[i]);
	}
	free(names);
	return 0;
}

int px_registry_load_path(struct px_registry *r, const char *list, struct px_error *err)
{
	if (!list)
		return 0;
	char *copy = px_strdup(list), *save = NULL;
	if (!copy)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	for (char *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save))
		if (*d)
			px_registry_load_dir(r, d, err);
	free(copy);
	return 0;
}

int px_registry_load_default(struct px_registry *r, const char *const *extra, int n_extra,
			     struct px_error *err)
{
	for (int i = 0; i < n_extra; i++) {
		struct stat st;
		if (stat(extra[i], &st) == 0 && S_ISREG(st.st_mode)) {
			struct px_error e;
			px_registry_load_file(r, extra[i], &e);
		} else {
			px_registry_load_path(r, extra[i], err);
		}
	}
	px_registry_load_path(r, getenv("PLEXUS_PLUGIN_PATH"), err);
	/* the installed plugins dir; PLEXUS_PLUGINSDIR relocates it (tests set it empty) */
	const char *inst = getenv("PLEXUS_PLUGINSDIR");
	if (!inst)
		inst = PX_PLUGINSDIR;
	if (*inst)
		px_registry_load_dir(r, inst, err);
	return 0;
}

int px_registry_prefer(struct px_registry *r, const char *kv, struct px_error *err)
{
	const char *eq = strchr(kv, '=');
	if (!eq || eq == kv || !eq[1])
		return px_error_set(err, PX_ERR_INVALID, "--prefer expects KIND=PLUGIN, got '%s'", kv);
	char **np = realloc(r->prefer, (size_t)(r->n_prefer + 1) * sizeof *np);
	if (!np)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	r->prefer = np;
	r->prefer[r->n_prefer] = px_strdup(kv);
	if (!r->prefer[r->n_prefer])
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	r->n_prefer++;
	return 0;
}

static bool impl_matches(const struct px_entry *e, const char *impl)
{
	if (!strcmp(e->plugin->desc->name, impl))
		return true;
	if (strchr(impl, '/')) {
		char abs[PATH_MAX];
		if (realpath(impl, abs) && !strcmp(abs, e->plugin->path))
			return true;
	}
	return false;
}

const struct px_entry *px_registry_find(struct px_registry *r, enum px_entry_type type,
					const char *kind, const char *impl, struct px_error *err)
{
	if (impl && strchr(impl, '/')) {
		struct px_error e;
		if (impl[0] != '/') {   /* pipelines come from others: never the working directory */
			px_error_set(err, PX_ERR_INVALID, "impl: plugin file '%s' must be an absolute path",
				     impl);
			return NULL;
		}
		if (px_registry_load_file(r, impl, &e)) {
			*err = e;
			return NULL;
		}
	}
	const char *pref = NULL;
	size_t kl = strlen(kind);
	for (int i = r->n_prefer - 1; !impl && i >= 0; i--)
		if (!strncmp(r->prefer[i], kind, kl) && r->prefer[i][kl] == '=') {
			pref = r->prefer[i] + kl + 1;
			break;
		}
	const struct px_entry *found = NULL, *named = NULL;
	int count = 0;
	char cands[512] = "";
	size_t used = 0;
	for (int i = 0; i < r->n_entries; i++) {
		const struct px_entry *e = &r->entries[i];
		if (e->type != type || strcmp(e->kind, kind))
			continue;
		if (used < sizeof cands)
			used += (size_t)snprintf(cands + used, sizeof cands - used, "%s%s (%s)",
						 count ? ", " : "", e->plugin->desc->name, e->plugin->path);
		count++;
		if (!strcmp(e->plugin->desc->name, kind))
			named = e;
		const char *want = impl ? impl : pref;
		if (want ? impl_matches(e, want) : !found)
			found = e;
	}
	if (count == 0) {
		char kinds[1024];
		px_registry_kinds(r, type, kinds, sizeof kinds);
		px_error_set(err, PX_ERR_NOTFOUND, "unknown %s kind '%s' (loaded: %s)",
			     px_entry_type_name(type), kind, kinds);
		return NULL;
	}
	if ((impl || pref) && !found) {
		px_error_set(err, PX_ERR_NOTFOUND, "no plugin '%s' provides %s kind '%s' (candidates: %s)",
			     impl ? impl : pref, px_entry_type_name(type), kind, cands);
		return NULL;
	}
	/* No choice among several: the plugin named after the kind (plugin "lstm" for kind
	 * "lstm") is the default; alternatives (lstm_ref) are used only when chosen. */
	if (count > 1 && !impl && !pref && named)
		return named;
	if (count > 1 && !impl && !pref) {
		px_error_set(err, PX_ERR_INVALID,
			     "%s kind '%s' is provided by %d plugins: %s; choose one with impl: or --prefer %s=PLUGIN",
			     px_entry_type_name(type), kind, count, cands, kind);
		return NULL;
	}
	return found;
}

void px_registry_kinds(const struct px_registry *r, enum px_entry_type type, char *buf,
		       size_t n)
{
	size_t used = 0;
	buf[0] = 0;
	int shown = 0;
	for (int i = 0; i < r->n_entries && used < n; i++) {
		const struct px_entry *e = &r->entries[i];
		if (e->type != type)
			continue;
		bool seen = false;
		for (int j = 0; j < i; j++)
			seen |= r->entries[j].type == type && !strcmp(r->entries[j].kind, e->kind);
		if (seen)
			continue;
		used += (size_t)snprintf(buf + used, n - used, "%s%s", shown++ ? ", " : "", e->kind);
	}
	if (!shown)
		snprintf(buf, n, "none");
}
