/* Fuzz target: MNIST idx files (images idx3 + labels idx1, plain or gzip) through the idx data
 * source. Input: a 2-byte little-endian length n, then n bytes of images file, then the labels
 * file. An accepted dataset is read whole. */
#include <string.h>

#include "fuzz.h"
#include "internal.h"

static const struct px_source_ops *idx_ops(void)
{
	for (int i = 0; px_builtin_sources[i]; i++)
		if (!strcmp(px_builtin_sources[i]->kind, "idx"))
			return px_builtin_sources[i];
	__builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	size_t n = (size_t)data[0] | (size_t)data[1] << 8;
	data += 2;
	size -= 2;
	if (n > size)
		n = size;
	const char *images = fuzz_file(0, data, n), *labels = fuzz_file(1, data + n, size - n);
	char opts[128];
	snprintf(opts, sizeof opts, "images: %s, labels: %s", images, labels);
	const struct px_source_ops *ops = idx_ops();
	struct px_config *cfg;
	struct px_error err;
	if (px_config_parse(ops->schema, opts, &cfg, &err))
		__builtin_trap();
	struct px_dataset ds;
	if (ops->load(cfg, "train", 1, &ds, &err) == 0) {
		volatile float sink = 0;
		int64_t per = px_shape_numel(&ds.x);
		for (int64_t i = 0; i < ds.n * per; i++)
			sink += ds.x_data[i];
		for (int64_t i = 0; i < ds.n; i++)
			sink += ds.y_data[i];
		(void)sink;
		px_dataset_free(&ds);
	}
	px_config_free(cfg);
	return 0;
}
