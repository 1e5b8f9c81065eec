/* .npy files (NumPy format 1.0, 2.0, 3.0): read as float32 (or int32 for lengths), written as
 * float32 '<f4'. Nothing in a file is trusted: the header is parsed strictly (magic, version,
 * length, dict syntax, keys, dtype, shape) and the file size is checked against the shape,
 * with overflow checks, before anything is allocated. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"

#define NPY_MAX_HEADER 65536   /* numpy itself refuses headers over 10000 bytes by default */

enum npy_kind { NPY_FLOAT, NPY_INT, NPY_UINT };

struct npy_dtype {
	const char *descr;
	enum npy_kind kind;
	int size;
};

static const struct npy_dtype npy_dtypes[] = {
	{"<f4", NPY_FLOAT, 4}, {"<f8", NPY_FLOAT, 8}, {"<i4", NPY_INT, 4}, {"<i8", NPY_INT, 8},
	{"|u1", NPY_UINT, 1},  {"|i1", NPY_INT, 1},   {"<i2", NPY_INT, 2}, {"<u2", NPY_UINT, 2},
};
#define NPY_DTYPES_TEXT "<f4 <f8 <i4 <i8 |u1 |i1 <i2 <u2"

struct npy_info {
	const struct npy_dtype *dt;
	int ndim;
	int64_t shape[PX_MAX_DIMS];
	int64_t numel;
	long data_off;
};

/* ------------------------------------------------------------------ header parsing */

struct npy_lex {
	const char *path;
	const char *s, *p, *end;
	struct px_error *err;
};

static int lex_fail(struct npy_lex *l, const char *what)
{
	return px_error_set(l->err, PX_ERR_PARSE,
			    "%s: npy header is not a valid dict: %s at header offset %ld",
			    l->path, what, (long)(l->p - l->s));
}

static void lex_ws(struct npy_lex *l)
{
	while (l->p < l->end && (*l->p == ' ' || *l->p == '\t' || *l->p == '\n' || *l->p == '\r'))
		l->p++;
}

static bool lex_eat(struct npy_lex *l, char c)
{
	lex_ws(l);
	if (l->p < l->end && *l->p == c) {
		l->p++;
		return true;
	}
	return false;
}

/* A Python string literal without escapes: 'abc' or "abc". */
static int lex_string(struct npy_lex *l, char *buf, size_t n)
{
	lex_ws(l);
	if (l->p >= l->end || (*l->p != '\'' && *l->p != '"'))
		return lex_fail(l, "expected a quoted string");
	char q = *l->p++;
	size_t k = 0;
	while (l->p < l->end && *l->p != q) {
		if (*l->p == '\\' || k + 1 >= n)
			return lex_fail(l, "unsupported or overlong string");
		buf[k++] = *l->p++;
	}
	if (l->p >= l->end)
		return lex_fail(l, "unterminated string");
	l->p++;
	buf[k] = 0;
	return 0;
}

static bool lex_word(struct npy_lex *l, const char *w)
{
	lex_ws(l);
	size_t n = strlen(w);
	if ((size_t)(l->end - l->p) >= n && !strncmp(l->p, w, n)) {
		l->p += n;
		return true;
	}
	return false;
}

/* (), (3,), (3, 4) or (3, 4,) ; Python 2 files may write 3L. */
static int lex_shape(struct npy_lex *l, struct npy_info *info)
{
	if (!lex_eat(l, '('))
		return lex_fail(l, "expected '(' starting the shape");
	info->ndim = 0;
	bool comma = false;  /* (3) is an int in Python, not a shape: (3,) */
	for (;;) {
		if (lex_eat(l, ')'))
			break;
		lex_ws(l);
		if (l->p >= l->end || *l->p < '0' || *l->p > '9')
			return lex_fail(l, "expected a non-negative integer in the shape");
		int64_t v = 0;
		while (l->p < l->end && *l->p >= '0' && *l->p <= '9') {
			int d = *l->p++ - '0';
			if (v > (INT64_MAX - d) / 10)
				return px_error_set(l->err, PX_ERR_CORRUPT,
						    "%s: npy shape has a dimension that overflows 64 bits",
						    l->path);
			v = v * 10 + d;
		}
		if (l->p < l->end && *l->p == 'L')
			l->p++;
		if (info->ndim == PX_MAX_DIMS)
			return px_error_set(l->err, PX_ERR_UNSUPPORTED,
					    "%s: npy shape has more than the %d dims plexus supports",
					    l->path, PX_MAX_DIMS);
		info->shape[info->ndim++] = v;
		comma = false;
		if (lex_eat(l, ')'))
			break;
		if (!lex_eat(l, ','))
			return lex_fail(l, "expected ',' or ')' in the shape");
		comma = true;
	}
	if (info->ndim == 1 && !comma)
		return lex_fail(l, "a one-dimensional shape needs a trailing comma, (n,)");
	return 0;
}

static int parse_header(const char *path, const char *h, size_t n, struct npy_info *info,
			struct px_error *err)
{
	struct npy_lex l = {path, h, h, h + n, err};
	char key[32], descr[32] = "";
	bool have_descr = false, have_fortran = false, have_shape = false, fortran = false;
	int rc;

	if (!lex_eat(&l, '{'))
		return lex_fail(&l, "expected '{'");
	for (;;) {
		if (lex_eat(&l, '}'))
			break;
		if ((rc = lex_string(&l, key, sizeof key)))
			return rc;
		if (!lex_eat(&l, ':'))
			return lex_fail(&l, "expected ':' after a key");
		if (!strcmp(key, "descr") && !have_descr) {
			if ((rc = lex_string(&l, descr, sizeof descr)))
				return rc;
			have_descr = true;
		} else if (!strcmp(key, "fortran_order") && !have_fortran) {
			if (lex_word(&l, "True"))
				fortran = true;
			else if (lex_word(&l, "False"))
				fortran = false;
			else
				return lex_fail(&l, "fortran_order must be True or False");
			have_fortran = true;
		} else if (!strcmp(key, "shape") && !have_shape) {
			if ((rc = lex_shape(&l, info)))
				return rc;
			have_shape = true;
		} else {
			return px_error_set(err, PX_ERR_PARSE,
					    "%s: npy header has an unexpected or repeated key '%s'",
					    path, key);
		}
		if (lex_eat(&l, '}'))
			break;
		if (!lex_eat(&l, ','))
			return lex_fail(&l, "expected ',' or '}'");
	}
	lex_ws(&l);
	if (l.p != l.end)
		return lex_fail(&l, "unexpected text after '}'");
	if (!have_descr || !have_fortran || !have_shape)
		return px_error_set(err, PX_ERR_PARSE, "%s: npy header lacks the key '%s'", path,
				    !have_descr ? "descr" : !have_fortran ? "fortran_order" : "shape");
	if (fortran)
		return px_error_set(err, PX_ERR_UNSUPPORTED,
				    "%s: fortran_order True arrays are not supported; save a C-order "
				    "array (np.ascontiguousarray)", path);
	info->dt = NULL;
	for (size_t i = 0; i < sizeof npy_dtypes / sizeof npy_dtypes[0]; i++)
		if (!strcmp(descr, npy_dtypes[i].descr))
			info->dt = &npy_dtypes[i];
	if (!info->dt)
		return px_error_set(err, PX_ERR_UNSUPPORTED,
				    "%s: npy dtype '%s' is not supported (supported: " NPY_DTYPES_TEXT ")",
				    path, descr);
	return 0;
}

static const char *shape_text(const struct npy_info *info, char *buf, size_t n)
{
	size_t used = (size_t)snprintf(buf, n, "(");
	for (int i = 0; i < info->ndim && used < n; i++)
		used += (size_t)snprintf(buf + used, n - used, "%s%lld", i ? ", " : "",
					 (long long)info->shape[i]);
	if (used < n)
		snprintf(buf + used, n - used, "%s)", info->ndim == 1 ? "," : "");
	return buf;
}

static uint64_t le_u(const unsigned char *p, int n)
{
	uint64_t v = 0;
	for (int i = n - 1; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

/* Opens `path`, validates its header and size; leaves f positioned at the data. */
static int npy_open(const char *path, FILE **fp, struct npy_info *info, struct px_error *err)
{
	unsigned char pre[12];
	char *h = NULL;
	char sb[160];
	int rc;

	memset(info, 0, sizeof *info);
	*fp = NULL;
	FILE *f = fopen(path, "rb");
	if (!f)
		return px_error_set(err, PX_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
	struct stat st;
	if (fstat(fileno(f), &st) || !S_ISREG(st.st_mode)) {
		rc = px_error_set(err, PX_ERR_IO, "%s: not a regular file", path);
		goto fail;
	}
	uint64_t fsize = (uint64_t)st.st_size;
	if (fsize < 10 || fread(pre, 1, 10, f) != 10 || memcmp(pre, "\x93NUMPY", 6)) {
		rc = px_error_set(err, PX_ERR_PARSE, "%s: not an npy file (bad magic)", path);
		goto fail;
	}
	int major = pre[6], minor = pre[7];
	if (!((major == 1 || major == 2 || major == 3) && minor == 0)) {
		rc = px_error_set(err, PX_ERR_UNSUPPORTED,
				  "%s: npy format version %d.%d is not supported (1.0, 2.0 and 3.0 are)",
				  path, major, minor);
		goto fail;
	}
	uint64_t hlen, hoff;
	if (major == 1) {
		hlen = le_u(pre + 8, 2);
		hoff = 10;
	} else {
		if (fsize < 12 || fread(pre + 10, 1, 2, f) != 2) {
			rc = px_error_set(err, PX_ERR_CORRUPT, "%s: npy file ends inside its preamble", path);
			goto fail;
		}
		hlen = le_u(pre + 8, 4);
		hoff = 12;
	}
	if (hlen > NPY_MAX_HEADER) {
		rc = px_error_set(err, PX_ERR_CORRUPT,
				  "%s: npy header length %llu is more than the %d bytes allowed", path,
				  (unsigned long long)hlen, NPY_MAX_HEADER);
		goto fail;
	}
	if (hoff + hlen > fsize) {
		rc = px_error_set(err, PX_ERR_CORRUPT,
				  "%s: npy header length %llu runs past the end of the %llu-byte file",
				  path, (unsigned long long)hlen, (unsigned long long)fsize);
		goto fail;
	}
	h = malloc(hlen + 1);
	if (!h) {
		rc = px_error_set(err, PX_ERR_NOMEM, "out of memory");
		goto fail;
	}
	if (fread(h, 1, hlen, f) != hlen) {
		rc = px_error_set(err, PX_ERR_IO, "%s: short read in the npy header", path);
		goto fail;
	}
	h[hlen] = 0;
	if (memchr(h, 0, hlen)) {
		rc = px_error_set(err, PX_ERR_PARSE, "%s: npy header holds a NUL byte", path);
		goto fail;
	}
	if ((rc = parse_header(path, h, hlen, info, err)))
		goto fail;

	/* element count and bytes, overflow-checked, then the file size */
	uint64_t numel = 1, limit = (uint64_t)INT64_MAX / 8;
	for (int i = 0; i < info->ndim; i++) {
		uint64_t d = (uint64_t)info->shape[i];
		if (d && numel > limit / d) {
			rc = px_error_set(err, PX_ERR_CORRUPT,
					  "%s: npy shape %s is too large (its element count overflows)",
					  path, shape_text(info, sb, sizeof sb));
			goto fail;
		}
		numel *= d;
	}
	uint64_t need = numel * (uint64_t)info->dt->size, have = fsize - hoff - hlen;
	if (need != have) {
		rc = px_error_set(err, PX_ERR_CORRUPT,
				  "%s: npy shape %s of %s needs %llu data bytes but the file holds %llu",
				  path, shape_text(info, sb, sizeof sb), info->dt->descr,
				  (unsigned long long)need, (unsigned long long)have);
		goto fail;
	}
	if (numel > SIZE_MAX / sizeof(float)) {
		rc = px_error_set(err, PX_ERR_NOMEM, "%s: npy array too large for memory", path);
		goto fail;
	}
	info->numel = (int64_t)numel;
	info->data_off = (long)(hoff + hlen);
	free(h);
	*fp = f;
	return 0;
fail:
	free(h);
	fclose(f);
	return rc;
}

static double npy_value(const unsigned char *p, const struct npy_dtype *dt)
{
	uint64_t u = le_u(p, dt->size);
	switch (dt->kind) {
	case NPY_FLOAT:
		if (dt->size == 4) {
			uint32_t b = (uint32_t)u;
			float f;
			memcpy(&f, &b, 4);
			return f;
		} else {
			double d;
			memcpy(&d, &u, 8);
			return d;
		}
	case NPY_INT: {
		int bits = dt->size * 8;
		if (bits < 64 && (u >> (bits - 1)) & 1)
			u |= ~(uint64_t)0 << bits;  /* sign-extend */
		return (double)(int64_t)u;
	}
	case NPY_UINT:
		return (double)u;
	}
	return 0;
}

/* Reads the data of an opened file, calling put(dst, i, value) for each element. */
static int npy_read_data(FILE *f, const char *path, const struct npy_info *info,
			 int (*put)(void *dst, int64_t i, double v), void *dst, struct px_error *err)
{
	unsigned char buf[1 << 16];
	int64_t per = (int64_t)sizeof buf / info->dt->size, done = 0;
	while (done < info->numel) {
		int64_t m = info->numel - done < per ? info->numel - done : per;
		if (fread(buf, (size_t)info->dt->size, (size_t)m, f) != (size_t)m)
			return px_error_set(err, PX_ERR_IO, "%s: short read in the npy data", path);
		for (int64_t k = 0; k < m; k++)
			if (put(dst, done + k, npy_value(buf + k * info->dt->size, info->dt)))
				return px_error_set(err, PX_ERR_INVALID,
						    "%s: element %lld (%g) is not a valid length "
						    "(an integer between 0 and 2^31-1)", path,
						    (long long)(done + k),
						    npy_value(buf + k * info->dt->size, info->dt));
		done += m;
	}
	return 0;
}

static int put_f32(void *dst, int64_t i, double v)
{
	((float *)dst)[i] = (float)v;
	return 0;
}

static int put_i32(void *dst, int64_t i, double v)
{
	if (!(v >= 0 && v <= INT32_MAX) || v != (double)(int64_t)v)
		return -1;
	((int32_t *)dst)[i] = (int32_t)v;
	return 0;
}

static int npy_read_as(const char *path, int *ndim, int64_t *shape, void **data, size_t elsize,
		       bool ints, struct px_error *err)
{
	struct npy_info info;
	FILE *f;
	*data = NULL;
	int rc = npy_open(path, &f, &info, err);
	if (rc)
		return rc;
	if (ints && info.dt->kind == NPY_FLOAT) {
		fclose(f);
		return px_error_set(err, PX_ERR_INVALID,
				    "%s: lengths must have an integer dtype, not '%s'", path,
				    info.dt->descr);
	}
	void *d = malloc((size_t)(info.numel ? info.numel : 1) * elsize);
	if (!d) {
		fclose(f);
		return px_error_set(err, PX_ERR_NOMEM, "%s: out of memory for %lld elements", path,
				    (long long)info.numel);
	}
	rc = npy_read_data(f, path, &info, ints ? put_i32 : put_f32, d, err);
	fclose(f);
	if (rc) {
		free(d);
		return rc;
	}
	*ndim = info.ndim;
	for (int i = 0; i < info.ndim; i++)
		shape[i] = info.shape[i];
	*data = d;
	return 0;
}

int px_npy_read(const char *path, int *ndim, int64_t *shape, float **data,
		struct px_error *err)
{
	void *d;
	int rc = npy_read_as(path, ndim, shape, &d, sizeof(float), false, err);
	*data = d;
	return rc;
}

int px_npy_read_i32(const char *path, int *ndim, int64_t *shape, int32_t **data,
		    struct px_error *err)
{
	void *d;
	int rc = npy_read_as(path, ndim, shape, &d, sizeof(int32_t), true, err);
	*data = d;
	return rc;
}

/* ------------------------------------------------------------------ writing */

int px_npy_write(const char *path, int ndim, const int64_t *shape, const float *data,
		 struct px_error *err)
{
	char h[512];
	int64_t numel = 1;

	if (ndim < 0 || ndim > PX_MAX_DIMS)
		return px_error_set(err, PX_ERR_INVALID, "%s: cannot write %d dims", path, ndim);
	int n = snprintf(h, sizeof h, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
	for (int i = 0; i < ndim; i++) {
		if (shape[i] < 0)
			return px_error_set(err, PX_ERR_INVALID, "%s: negative dimension", path);
		numel *= shape[i];
		n += snprintf(h + n, sizeof h - (size_t)n, "%s%lld", i ? ", " : "",
			      (long long)shape[i]);
	}
	n += snprintf(h + n, sizeof h - (size_t)n, "%s), }", ndim == 1 ? "," : "");
	/* pad with spaces so that magic + version + length + header + '\n' is a multiple of 64 */
	while ((10 + n + 1) % 64)
		h[n++] = ' ';
	h[n++] = '\n';

	unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0,
				 (unsigned char)(n & 0xff), (unsigned char)(n >> 8)};
	FILE *f = fopen(path, "wb");
	if (!f)
		return px_error_set(err, PX_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
	bool ok = fwrite(pre, 1, 10, f) == 10 && fwrite(h, 1, (size_t)n, f) == (size_t)n;
	unsigned char buf[4096];
	for (int64_t i = 0; ok && i < numel; i += 1024) {
		int64_t m = numel - i < 1024 ? numel - i : 1024;
		for (int64_t k = 0; k < m; k++) {  /* little-endian on any host */
			uint32_t b;
			memcpy(&b, &data[i + k], 4);
			for (int j = 0; j < 4; j++)
				buf[k * 4 + j] = (unsigned char)(b >> (8 * j));
		}
		ok = fwrite(buf, 4, (size_t)m, f) == (size_t)m;
	}
	if (fclose(f) != 0)
		ok = false;
	if (!ok)
		return px_error_set(err, PX_ERR_IO, "%s: write failed: %s", path, strerror(errno));
	return 0;
}
