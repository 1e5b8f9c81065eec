/* plexus — the plugin entry point and the host's table of services.
 *
 * A plugin is a shared object (px-<name>.so) that exports exactly one symbol:
 *
 *     const struct px_plugin *px_plugin_entry(const struct px_host *host);
 *
 * It returns a pointer to its own `static const struct px_plugin` (or NULL to refuse the host).
 * Versioning (both sides check):
 * - the plugin MUST return NULL when host->abi_major != PX_ABI_MAJOR (use PX_PLUGIN_ENTRY);
 * - the host refuses a plugin whose abi_major differs from its own or whose abi_minor is
 *   newer than its own, naming the file and both versions;
 * - every table starts with struct_size; the host reads no field beyond it. The host table
 *   only grows at the end: a minor version may append fields, a major version is needed for
 *   anything else.
 * Plugins link libplexus for tensors, BLAS glue and the build/config helpers. */
#ifndef PLEXUS_PLUGIN_H
#define PLEXUS_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#include "plexus/data.h"
#include "plexus/error.h"
#include "plexus/layer.h"
#include "plexus/optim.h"
#include "plexus/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PX_ABI_MAJOR 1
#define PX_ABI_MINOR 0

/* Services the host offers plugins. Append-only. */
struct px_host {
	size_t struct_size;
	int abi_major;
	int abi_minor;
	const char *version;  /* plexus version string */
	/* The preferred recurrent cell of a kind ("lstm"), from whichever plugin provides it;
	 * NULL (and err filled, listing the cells that are loaded) when none does. */
	const struct px_cell_ops *(*find_cell)(const struct px_host *host, const char *kind,
					       struct px_error *err);
	void *priv;  /* the host's */
};

struct px_plugin {
	size_t struct_size;                   /* sizeof(struct px_plugin) */
	int abi_major;                        /* PX_ABI_MAJOR the plugin was built with */
	int abi_minor;                        /* PX_ABI_MINOR the plugin was built with */
	const char *name;                     /* "lstm" */
	const char *version;                  /* the plugin's own version, "1.0.0" */
	const char *doc;
	const struct px_layer_ops *const *layers;   /* NULL-terminated (may be NULL) */
	const struct px_cell_ops *const *cells;
	const struct px_loss_ops *const *losses;
	const struct px_optim_ops *const *optims;
	const struct px_source_ops *const *sources;
};

#if defined(__GNUC__)
#define PX_EXPORT __attribute__((visibility("default")))
#else
#define PX_EXPORT
#endif

/* Defines the entry point returning `desc` (a struct px_plugin) to hosts of the same major. */
#define PX_PLUGIN_ENTRY(desc)                                                         \
	PX_EXPORT const struct px_plugin *px_plugin_entry(const struct px_host *host);    \
	PX_EXPORT const struct px_plugin *px_plugin_entry(const struct px_host *host)     \
	{                                                                             \
		if (!host || host->abi_major != PX_ABI_MAJOR)                         \
			return NULL;                                                  \
		return &(desc);                                                       \
	}

#ifdef __cplusplus
}
#endif
#endif
