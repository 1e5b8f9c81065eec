/* Fuzz target: .npy files read as float32 (px_npy_read) and as int32 (px_npy_read_i32, the
 * lengths files); every element of an accepted array is read. */
#include <stdlib.h>

#include "fuzz.h"
#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *path = fuzz_file(0, data, size);
	struct px_error err;
	int ndim;
	int64_t shape[PX_MAX_DIMS];
	volatile float sink = 0;
	float *x;
	if (px_npy_read(path, &ndim, shape, &x, &err) == 0) {
		int64_t n = 1;
		for (int k = 0; k < ndim; k++)
			n *= shape[k];
		for (int64_t k = 0; k < n; k++)
			sink += x[k];
		free(x);
	}
	int32_t *l;
	if (px_npy_read_i32(path, &ndim, shape, &l, &err) == 0) {
		int64_t n = 1;
		for (int k = 0; k < ndim; k++)
			n *= shape[k];
		for (int64_t k = 0; k < n; k++)
			sink += (float)l[k];
		free(l);
	}
	(void)sink;
	return 0;
}
