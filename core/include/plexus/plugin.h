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
 * Plugins link libplexus for tensors, BLAS glue and the build/config helpers.
 *
 * ABI history: 1.0 the first; 1.1 appends the figure services (figure_batch, figure_image,
 * figure_heatmap, figure_series) to struct px_host and struct px_figure_batch. A 1.0 plugin
 * loads into a 1.1 host unchanged; a plugin that uses 1.1 services checks them with
 * PX_HOST_HAS, so it also runs where a host table lacks them (test harnesses). */
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
#define PX_ABI_MINOR 1

/* The batch of a run report's figure pass (ABI 1.1), as host->figure_batch returns it while
 * the pass runs. Everything is borrowed and valid during that pass only. */
struct px_figure_batch {
	size_t struct_size;
	const char *split;               /* "test", "val" or "train": where the examples come from */
	const struct px_tensor *x;       /* the model's input batch (lengths when ragged) */
	const struct px_tensor *y;       /* its labels or targets; NULL when the data has none */
	int64_t n_classes;               /* classes of integer targets, 0 for real-valued ones */
	const char *const *class_names;  /* NULL or [n_classes] */
	const char *const *x_vocab;      /* NULL or [x_vocab_n]: the text of input token ids */
	int64_t x_vocab_n;
	const char *const *y_vocab;      /* NULL or [y_vocab_n]: the text of target token ids */
	int64_t y_vocab_n;
};

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

	/* ---- ABI 1.1: figures for the run report (docs/reports.md). Test with PX_HOST_HAS.
	 * After training the host runs one batch in evaluation mode (train == false) and then
	 * its backward: the figure pass. A layer MAY draw figures then, from forward or
	 * backward; it MUST NOT fail its step because a figure service returned an error, and
	 * SHOULD do no figure work at all when figure_batch returns NULL (every other step).
	 * `node` is the layer's node name (copy px_build.node in create); texts are shown
	 * escaped, never interpreted. The services return 0 or a negative PX_ERR_*
	 * (PX_ERR_INVALID outside the figure pass, for bad sizes, or past 64 figures a run).
	 * Series a layer reports through px_bwd.report in the pass's backward (the recurrent
	 * layers' ||dLoss/dh_t||) become figures as well, without any call here. */
	/* The figure pass's batch, or NULL when no figure pass is running. */
	const struct px_figure_batch *(*figure_batch)(const struct px_host *host);
	/* An 8-bit image, rows top first: channels 1 (gray) or 3 (RGB), 1..4096 pixels a side.
	 * Copied before the call returns. */
	int (*figure_image)(const struct px_host *host, const char *node, const char *title,
			    int width, int height, int channels, const unsigned char *pixels);
	/* A heat map m[rows][cols] (row-major, at most 16384 cells), coloured over its finite
	 * values; row_labels / col_labels NULL or one string per row / column. */
	int (*figure_heatmap)(const struct px_host *host, const char *node, const char *title,
			      const float *m, int rows, int cols, const char *const *row_labels,
			      const char *const *col_labels, const char *x_title,
			      const char *y_title);
	/* A series y[0..n) over steps 0..n-1 (n <= 100000; non-finite values are gaps). */
	int (*figure_series)(const struct px_host *host, const char *node, const char *title,
			     const char *x_title, const char *y_title, const double *y, int n);
};

/* Does `host` (may be NULL) offer the service `field`? True only when its table is long
 * enough to hold the field and the field is set: a plugin MUST test a service of a minor
 * version above 1.0 this way before calling it. */
#define PX_HOST_HAS(host, field)                                                       \
	((host) != NULL &&                                                             \
	 (host)->struct_size >= offsetof(struct px_host, field) + sizeof((host)->field) && \
	 (host)->field != NULL)

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
