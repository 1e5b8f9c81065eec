/* Test helper: load plugins from the build tree and find their tables by kind, without the
 * core's registry (so plugin tests depend only on the public ABI). Header-only. */
#ifndef PX_TEST_PLUGIN_UTIL_H
#define PX_TEST_PLUGIN_UTIL_H

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <plexus/plugin.h>

#define TP_MAX 16
static const struct px_plugin *tp_loaded[TP_MAX];
static int tp_n;

static inline const struct px_cell_ops *tp_find_cell(const struct px_host *h, const char *kind,
					      struct px_error *err)
{
	(void)h;
	for (int i = 0; i < tp_n; i++)
		for (const struct px_cell_ops *const *c = tp_loaded[i]->cells; c && *c; c++)
			if (!strcmp((*c)->kind, kind))
				return *c;
	px_error_set(err, PX_ERR_NOTFOUND, "no plugin provides the cell '%s'", kind);
	return NULL;
}

static struct px_host tp_host = {
	.struct_size = sizeof(struct px_host),
	.abi_major = PX_ABI_MAJOR,
	.abi_minor = PX_ABI_MINOR,
	.version = "test",
	.find_cell = tp_find_cell,
};

/* dlopen the plugin file at path (never unloaded). Aborts the test on failure: a missing
 * plugin is a broken build. */
static inline const struct px_plugin *tp_plugin_file(const char *path)
{
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		fprintf(stderr, "cannot load %s: %s\n", path, dlerror());
		abort();
	}
	const struct px_plugin *(*entry)(const struct px_host *);
	*(void **)&entry = dlsym(h, "px_plugin_entry");
	const struct px_plugin *p = entry ? entry(&tp_host) : NULL;
	if (!p) {
		fprintf(stderr, "%s: no plugin entry\n", path);
		abort();
	}
	if (tp_n < TP_MAX)
		tp_loaded[tp_n++] = p;
	return p;
}

/* $PLEXUS_BUILD/plugins/<name>/px-<name>.so */
static inline const struct px_plugin *tp_plugin(const char *name)
{
	char path[1024];
	const char *b = getenv("PLEXUS_BUILD");
	snprintf(path, sizeof path, "%s/plugins/%s/px-%s.so", b ? b : "build", name, name);
	return tp_plugin_file(path);
}

static inline const struct px_layer_ops *tp_layer(const char *plugin, const char *kind)
{
	const struct px_plugin *p = tp_plugin(plugin);
	for (const struct px_layer_ops *const *l = p->layers; l && *l; l++)
		if (!strcmp((*l)->kind, kind))
			return *l;
	fprintf(stderr, "plugin %s has no layer kind '%s'\n", plugin, kind);
	abort();
}

static inline const struct px_cell_ops *tp_cell(const char *plugin, const char *kind)
{
	const struct px_plugin *p = tp_plugin(plugin);
	for (const struct px_cell_ops *const *c = p->cells; c && *c; c++)
		if (!strcmp((*c)->kind, kind))
			return *c;
	fprintf(stderr, "plugin %s has no cell kind '%s'\n", plugin, kind);
	abort();
}

static inline const struct px_source_ops *tp_source(const char *plugin, const char *kind)
{
	const struct px_plugin *p = tp_plugin(plugin);
	for (const struct px_source_ops *const *s = p->sources; s && *s; s++)
		if (!strcmp((*s)->kind, kind))
			return *s;
	fprintf(stderr, "plugin %s has no source kind '%s'\n", plugin, kind);
	abort();
}

#endif
