/* Fuzz target: safetensors checkpoints (px_st_open), then every accessor over what it
 * accepted: names, lookups by name, shapes, all data (so ASan sees any bad offset), metadata. */
#include <string.h>

#include "fuzz.h"
#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct px_st_file *f;
	struct px_error err;
	if (px_st_open(fuzz_file(0, data, size), &f, &err))
		return 0;
	volatile float sink = 0;
	for (int i = 0; i < px_st_count(f); i++) {
		const char *name = px_st_name(f, i);
		if (px_st_find(f, name) != i)
			__builtin_trap();   /* names are unique: the lookup finds this very tensor */
		int nd;
		int64_t sh[PX_MAX_DIMS], n = 1;
		const float *d = px_st_data(f, i, &nd, sh);
		for (int k = 0; k < nd; k++)
			n *= sh[k];
		for (int64_t k = 0; k < n; k++)
			sink += d[k];
	}
	for (int i = 0; i < px_st_meta_count(f); i++) {
		const char *k = px_st_meta_key(f, i);
		sink += (float)strlen(px_st_meta(f, k));
	}
	(void)sink;
	px_st_close(f);
	return 0;
}
