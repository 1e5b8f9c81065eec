/* Small helpers shared by the core. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"

char *px_strdup(const char *s)
{
	if (!s)
		return NULL;
	size_t n = strlen(s) + 1;
	char *d = malloc(n);
	if (d)
		memcpy(d, s, n);
	return d;
}

char *px_asprintf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return NULL;
	char *s = malloc((size_t)n + 1);
	if (!s)
		return NULL;
	va_start(ap, fmt);
	vsnprintf(s, (size_t)n + 1, fmt, ap);
	va_end(ap);
	return s;
}

int px_read_file(const char *path, size_t max_bytes, char **data, size_t *len,
		 struct px_error *err)
{
	*data = NULL;
	*len = 0;
	FILE *f = fopen(path, "rb");
	if (!f)
		return px_error_set(err, PX_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
	struct stat st;
	if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
		fclose(f);
		return px_error_set(err, PX_ERR_IO, "%s: not a regular file", path);
	}
	if ((uint64_t)st.st_size > max_bytes) {
		fclose(f);
		return px_error_set(err, PX_ERR_IO, "%s: file is %lld bytes, more than the %zu allowed",
				    path, (long long)st.st_size, max_bytes);
	}
	size_t n = (size_t)st.st_size;
	char *buf = malloc(n + 1);
	if (!buf) {
		fclose(f);
		return px_error_set(err, PX_ERR_NOMEM, "%s: out of memory reading %zu bytes", path, n);
	}
	size_t got = fread(buf, 1, n, f);
	fclose(f);
	if (got != n) {
		free(buf);
		return px_error_set(err, PX_ERR_IO, "%s: short read (%zu of %zu bytes)", path, got, n);
	}
	buf[n] = 0;
	*data = buf;
	*len = n;
	return 0;
}

uint64_t px_hash64(const void *data, size_t n, uint64_t seed)
{
	const unsigned char *p = data;
	uint64_t h = 1469598103934665603ull ^ seed;  /* FNV-1a, 64-bit */
	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 1099511628211ull;
	}
	return h;
}
