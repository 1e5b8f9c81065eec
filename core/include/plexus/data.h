/* plexus — datasets and data sources. A source (core built-in or plugin) loads one split into a
 * px_dataset; the core then applies views (sequence, flatten, scale), shuffles and batches. */
#ifndef PLEXUS_DATA_H
#define PLEXUS_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "plexus/error.h"
#include "plexus/layer.h"
#include "plexus/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One split in memory. Owned by the core: fill it only through px_dataset_alloc and
 * px_dataset_set_vocab, free it with px_dataset_free. */
struct px_dataset {
	int64_t n;               /* examples */
	struct px_shape x;       /* x.dim[0] == n; e.g. [n,28,28] or [n,T] token ids */
	float *x_data;
	int32_t *x_len;          /* NULL or [n]: valid steps of each x along dim 1 */
	struct px_shape y;       /* y.dim[0] == n; [n] labels, [n,F] targets, [n,T] tokens ... */
	float *y_data;
	int32_t *y_len;          /* NULL or [n] */
	int64_t n_classes;       /* classes of integer targets; 0 for real-valued targets */
	char **x_vocab;          /* NULL or [x_vocab_n] token strings, id = index */
	int64_t x_vocab_n;
	char **y_vocab;
	int64_t y_vocab_n;
	char **class_names;      /* NULL or [n_classes] */
};

/* Allocate x [x_ndim dims] and y (y_ndim may be 1 for [n]); lengths when asked. Shapes
 * include dim 0 == n. Overflow-checked. Data is zero-filled. */
PX_API int px_dataset_alloc(struct px_dataset *ds, int x_ndim, const int64_t *x_dims, bool x_lengths,
		     int y_ndim, const int64_t *y_dims, bool y_lengths, struct px_error *err);
/* Copies the strings. which: 'x' or 'y'. */
PX_API int px_dataset_set_vocab(struct px_dataset *ds, char which, const char *const *tokens,
			 int64_t n, struct px_error *err);
PX_API void px_dataset_free(struct px_dataset *ds);

struct px_source_ops {
	size_t struct_size;
	const char *kind;       /* `source:` in the pipeline's data section */
	const char *doc;
	const struct px_param_spec *schema;
	/* Load split `split` ("train", "val", "test"); `seed` is the pipeline seed. */
	int (*load)(const struct px_config *cfg, const char *split, uint64_t seed,
		    struct px_dataset *out, struct px_error *err);
};

#ifdef __cplusplus
}
#endif
#endif
