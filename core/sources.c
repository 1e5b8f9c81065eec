/* Built-in data sources: idx (MNIST-style files), npy, csv, text (character language
 * modelling), textpairs (seq2seq TSV), series (synthetic next-value regression) and copy
 * (synthetic seq2seq). Each `load` fills one split into `out` (overwritten; left empty on
 * failure); views, shuffling and batching are data.c's. Files are never trusted: every count a
 * header claims is checked against what the file really holds. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "internal.h"

#define MAX_TEXT_BYTES ((size_t)1 << 30)

/* Specials at the start of every seq2seq vocabulary. */
enum { TOK_PAD = 0, TOK_BOS = 1, TOK_EOS = 2, TOK_UNK = 3, TOK_FIRST = 4 };
static const char *const specials[TOK_FIRST] = {"<pad>", "<bos>", "<eos>", "<unk>"};

#define SPEC_END {NULL, 0, NULL, 0, 0, NULL, NULL}

/* ------------------------------------------------------------------ helpers */

/* All y values are integers >= 0? Sets *max to the largest. */
static bool labels_integral(const float *y, int64_t n, int64_t *max)
{
	int64_t m = -1;
	for (int64_t i = 0; i < n; i++) {
		float v = y[i];
		if (!(v >= 0.0f && v < 1e9f) || v != floorf(v))
			return false;
		if ((int64_t)v > m)
			m = (int64_t)v;
	}
	*max = m;
	return true;
}

static int set_class_names(struct px_dataset *ds, const char *const *names, int64_t n,
			   struct px_error *err)
{
	char **v = calloc((size_t)n, sizeof *v);
	if (!v)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	for (int64_t i = 0; i < n; i++) {
		v[i] = px_strdup(names[i]);
		if (!v[i]) {
			while (i-- > 0)
				free(v[i]);
			free(v);
			return px_error_set(err, PX_ERR_NOMEM, "out of memory");
		}
	}
	ds->class_names = v;
	return 0;
}

/* `range: [a, b]` with 0 <= a < b <= 1. */
static int get_range(const struct px_config *cfg, double *a, double *b, struct px_error *err)
{
	const double *r;
	int n = px_config_floats(cfg, "range", &r);
	if (n != 2 || !(r[0] < r[1]))
		return px_config_error(cfg, err, PX_ERR_INVALID, "range",
				       "'range' must be [a, b] with 0 <= a < b <= 1 (fractions of the file)");
	*a = r[0];
	*b = r[1];
	return 0;
}

/* Split a NUL-free buffer into lines in place ('\n' and a trailing '\r' become NUL). */
static int split_lines(const char *path, char *buf, size_t len, char ***lines, int64_t *n,
		       struct px_error *err)
{
	*lines = NULL;
	*n = 0;
	if (memchr(buf, 0, len))
		return px_error_set(err, PX_ERR_PARSE, "%s: holds a NUL byte (not a text file?)", path);
	int64_t count = 1;
	for (size_t i = 0; i < len; i++)
		count += buf[i] == '\n';
	char **v = malloc((size_t)count * sizeof *v);
	if (!v)
		return px_error_set(err, PX_ERR_NOMEM, "%s: out of memory", path);
	int64_t k = 0;
	char *p = buf, *end = buf + len;
	while (p <= end && k < count) {
		char *nl = memchr(p, '\n', (size_t)(end - p));
		char *e = nl ? nl : end;
		if (e > p && e[-1] == '\r')
			e[-1] = 0;
		*e = 0;
		v[k++] = p;
		if (!nl)
			break;
		p = nl + 1;
	}
	/* a final newline does not start another line */
	if (k > 0 && len > 0 && buf[len - 1] == 0 && v[k - 1] == end)
		k--;
	*lines = v;
	*n = k;
	return 0;
}

static bool blank(const char *s)
{
	for (; *s; s++)
		if (*s != ' ' && *s != '\t')
			return false;
	return true;
}

/* ------------------------------------------------------------------ idx (MNIST format) */

static const struct px_param_spec idx_schema[] = {
	{"images", PX_T_STRING, NULL, 0, 0, NULL, "idx3 images file, plain or .gz (magic 0x00000803)"},
	{"labels", PX_T_STRING, NULL, 0, 0, NULL, "idx1 labels file, plain or .gz (magic 0x00000801)"},
	{"class_names", PX_T_ENUM, "none", 0, 0, "none|digits|fashion-mnist",
	 "names of the 10 classes, for reports"},
	SPEC_END,
};

static const char *const fashion_names[10] = {
	"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
	"Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
};
static const char *const digit_names[10] = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};

/* " (gzip: why)" when zlib recorded an error on g (a damaged or cut stream), else "". */
static const char *gz_why(gzFile g, const char *path, char *buf, size_t n)
{
	int zerr;
	const char *msg = gzerror(g, &zerr);
	size_t pl = strlen(path);
	if (!strncmp(msg, path, pl) && !strncmp(msg + pl, ": ", 2))
		msg += pl + 2;   /* zlib puts the path in front */
	buf[0] = 0;
	if (zerr != Z_OK && zerr != Z_STREAM_END)
		snprintf(buf, n, " (gzip: %s)", zerr == Z_ERRNO ? strerror(errno) : msg);
	return buf;
}

/* Open an idx file and read its magic and `ndims` big-endian dims. */
static int idx_open(const char *path, uint32_t magic, int ndims, gzFile *out, uint32_t *dims,
		    struct px_error *err)
{
	unsigned char h[16] = {0};
	int want = 4 + 4 * ndims;
	*out = NULL;
	errno = 0;
	gzFile g = gzopen(path, "rb");
	if (!g)
		return px_error_set(err, PX_ERR_IO, "%s: cannot open: %s", path,
				    errno ? strerror(errno) : "out of memory");
	int got = gzread(g, h, (unsigned)want);
	if (got < 0) {
		int zerr;
		const char *msg = gzerror(g, &zerr);
		int rc = px_error_set(err, PX_ERR_IO, "%s: read error: %s", path,
				      zerr == Z_ERRNO ? strerror(errno) : msg);
		gzclose(g);
		return rc;
	}
	uint32_t m = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
	char why[128];
	int rc = 0;
	if (got < 4)
		rc = px_error_set(err, PX_ERR_CORRUPT, "%s: too short for an idx file (%d bytes)%s",
				  path, got, gz_why(g, path, why, sizeof why));
	else if (m != magic)
		rc = px_error_set(err, PX_ERR_CORRUPT,
				  "%s: not an idx%d file (magic 0x%08x, expected 0x%08x)", path, ndims,
				  (unsigned)m, (unsigned)magic);
	else if (got < want)
		rc = px_error_set(err, PX_ERR_CORRUPT, "%s: too short for an idx header (%d of %d bytes)%s",
				  path, got, want, gz_why(g, path, why, sizeof why));
	if (rc) {
		gzclose(g);
		return rc;
	}
	for (int i = 0; i < ndims; i++) {
		const unsigned char *p = h + 4 + 4 * i;
		dims[i] = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
		if (dims[i] == 0) {
			gzclose(g);
			return px_error_set(err, PX_ERR_CORRUPT, "%s: idx header has a zero dimension",
					    path);
		}
	}
	*out = g;
	return 0;
}

/* Read exactly `want` body bytes. The buffer grows as data arrives, so a header that lies about
 * its counts costs no more memory than the file really holds. Nothing may follow. */
static int idx_read_body(gzFile g, const char *path, uint64_t want, const char *what,
			 unsigned char **out, struct px_error *err)
{
	size_t cap = 0, got = 0;
	unsigned char *buf = NULL;
	int rc = 0, r;
	*out = NULL;
	while (got < want) {
		if (got == cap) {
			size_t ncap = cap ? cap * 2 : (size_t)1 << 20;
			if (ncap > want)
				ncap = (size_t)want;
			unsigned char *nb = realloc(buf, ncap);
			if (!nb) {
				rc = px_error_set(err, PX_ERR_NOMEM, "%s: out of memory", path);
				goto fail;
			}
			buf = nb;
			cap = ncap;
		}
		size_t chunk = cap - got > (1u << 30) ? (1u << 30) : cap - got;
		r = gzread(g, buf + got, (unsigned)chunk);
		if (r < 0) {
			int zerr;
			const char *msg = gzerror(g, &zerr);
			rc = px_error_set(err, PX_ERR_IO, "%s: read error: %s", path,
					  zerr == Z_ERRNO ? strerror(errno) : msg);
			goto fail;
		}
		if (r == 0) {
			char why[128];
			rc = px_error_set(err, PX_ERR_CORRUPT,
					  "%s: file is short: its header claims %s (%llu bytes) but only "
					  "%zu bytes follow%s", path, what, (unsigned long long)want, got,
					  gz_why(g, path, why, sizeof why));
			goto fail;
		}
		got += (size_t)r;
	}
	unsigned char extra;
	r = gzread(g, &extra, 1);
	if (r != 0) {
		rc = px_error_set(err, PX_ERR_CORRUPT,
				  "%s: %s after the %s its header claims", path,
				  r > 0 ? "more data follows" : "read error", what);
		goto fail;
	}
	*out = buf;
	return 0;
fail:
	free(buf);
	return rc;
}

static int idx_load(const struct px_config *cfg, const char *split, uint64_t seed,
		    struct px_dataset *out, struct px_error *err)
{
	const char *ipath = px_config_str(cfg, "images"), *lpath = px_config_str(cfg, "labels");
	const char *names = px_config_str(cfg, "class_names");
	gzFile gi = NULL, gl = NULL;
	unsigned char *pix = NULL, *lab = NULL;
	uint32_t idim[3], ldim[1];
	char what[96];
	int rc;

	(void)split;
	(void)seed;
	memset(out, 0, sizeof *out);
	if (!ipath || !lpath)
		return px_config_error(cfg, err, PX_ERR_INVALID, NULL, "idx needs 'images' and 'labels'");
	if ((rc = idx_open(ipath, 0x00000803, 3, &gi, idim, err)))
		goto fail;
	if ((rc = idx_open(lpath, 0x00000801, 1, &gl, ldim, err)))
		goto fail;
	if (idim[0] != ldim[0]) {
		rc = px_error_set(err, PX_ERR_CORRUPT, "%s holds %u images but %s holds %u labels",
				  ipath, (unsigned)idim[0], lpath, (unsigned)ldim[0]);
		goto fail;
	}
	uint64_t n = idim[0], per = (uint64_t)idim[1] * idim[2];  /* < 2^64: both < 2^32 */
	if (per > (uint64_t)1 << 30 || n > (SIZE_MAX / sizeof(float) / 2) / per) {
		rc = px_error_set(err, PX_ERR_CORRUPT, "%s: header claims %u images of %ux%u: too large",
				  ipath, (unsigned)idim[0], (unsigned)idim[1], (unsigned)idim[2]);
		goto fail;
	}
	snprintf(what, sizeof what, "%u images of %ux%u", (unsigned)idim[0], (unsigned)idim[1],
		 (unsigned)idim[2]);
	if ((rc = idx_read_body(gi, ipath, n * per, what, &pix, err)))
		goto fail;
	snprintf(what, sizeof what, "%u labels", (unsigned)ldim[0]);
	if ((rc = idx_read_body(gl, lpath, n, what, &lab, err)))
		goto fail;

	int64_t xd[3] = {(int64_t)n, idim[1], idim[2]}, yd[1] = {(int64_t)n};
	if ((rc = px_dataset_alloc(out, 3, xd, false, 1, yd, false, err)))
		goto fail;
	for (uint64_t i = 0; i < n * per; i++)
		out->x_data[i] = pix[i];   /* raw 0..255; `scale: 1/255` is a view */
	int maxlab = 0;
	for (uint64_t i = 0; i < n; i++) {
		out->y_data[i] = lab[i];
		if (lab[i] > maxlab)
			maxlab = lab[i];
	}
	out->n_classes = maxlab + 1 > 10 ? maxlab + 1 : 10;
	if (strcmp(names, "none")) {
		if (out->n_classes != 10) {
			rc = px_config_error(cfg, err, PX_ERR_INVALID, "class_names",
					     "class_names %s needs 10 classes, %s has %lld", names,
					     lpath, (long long)out->n_classes);
			goto fail;
		}
		rc = set_class_names(out, strcmp(names, "digits") ? fashion_names : digit_names, 10, err);
		if (rc)
			goto fail;
	}
	free(pix);
	free(lab);
	gzclose(gi);
	gzclose(gl);
	return 0;
fail:
	free(pix);
	free(lab);
	if (gi)
		gzclose(gi);
	if (gl)
		gzclose(gl);
	px_dataset_free(out);
	return rc;
}

static const struct px_source_ops idx_source = {
	.struct_size = sizeof(struct px_source_ops),
	.kind = "idx",
	.doc = "MNIST-format idx files (images [n,rows,cols] as raw 0..255, labels [n]); plain or gzip",
	.schema = idx_schema,
	.load = idx_load,
};

/* ------------------------------------------------------------------ npy */

static const struct px_param_spec npy_schema[] = {
	{"x", PX_T_STRING, NULL, 0, 0, NULL, "inputs: an .npy array [n, ...]"},
	{"y", PX_T_STRING, "", 0, 0, NULL, "targets: an .npy array [n, ...] (empty: none)"},
	{"lengths", PX_T_STRING, "", 0, 0, NULL,
	 "valid steps of each x along dim 1: an integer .npy [n] (empty: all steps)"},
	{"y_lengths", PX_T_STRING, "", 0, 0, NULL,
	 "valid steps of each y along dim 1: an integer .npy [n] (empty: all steps)"},
	{"classes", PX_T_INT, "0", 0, 1e9, NULL,
	 "classes of integer y (0: max+1 when y holds non-negative integers, else regression)"},
	SPEC_END,
};

static int npy_lengths(const char *path, const struct px_shape *s, int32_t **out,
		       struct px_error *err)
{
	int nd;
	int64_t sh[PX_MAX_DIMS];
	char b[96];
	int rc = px_npy_read_i32(path, &nd, sh, out, err);
	if (rc)
		return rc;
	if (s->ndim < 2 || nd != 1 || sh[0] != s->dim[0]) {
		rc = px_error_set(err, PX_ERR_SHAPE,
				  "%s: lengths must be [n] for a sequence [n,T,...]; the data is %s", path,
				  px_shape_str(s, b, sizeof b));
		goto fail;
	}
	for (int64_t i = 0; i < sh[0]; i++) {
		if ((*out)[i] < 1 || (*out)[i] > s->dim[1]) {
			rc = px_error_set(err, PX_ERR_INVALID,
					  "%s: length %d of example %lld is not between 1 and T = %lld",
					  path, (*out)[i], (long long)i, (long long)s->dim[1]);
			goto fail;
		}
	}
	return 0;
fail:
	free(*out);
	*out = NULL;
	return rc;
}

static int npy_load(const struct px_config *cfg, const char *split, uint64_t seed,
		    struct px_dataset *out, struct px_error *err)
{
	const char *xp = px_config_str(cfg, "x"), *yp = px_config_str(cfg, "y");
	const char *lp = px_config_str(cfg, "lengths"), *ylp = px_config_str(cfg, "y_lengths");
	int64_t classes = px_config_int(cfg, "classes");
	int nd;
	char b1[96], b2[96];
	int rc;

	(void)split;
	(void)seed;
	memset(out, 0, sizeof *out);
	if (!xp)
		return px_config_error(cfg, err, PX_ERR_INVALID, NULL, "npy needs 'x'");
	/* the arrays become the dataset's own (both sides malloc/free) */
	if ((rc = px_npy_read(xp, &nd, out->x.dim, &out->x_data, err)))
		goto fail;
	if (nd < 1) {
		rc = px_error_set(err, PX_ERR_SHAPE, "%s: x must have at least one dim (examples)", xp);
		goto fail;
	}
	out->x.ndim = nd;
	if (nd == 1) {  /* [n] scalars: [n,1] */
		out->x.ndim = 2;
		out->x.dim[1] = 1;
	}
	out->n = out->x.dim[0];
	if (out->n == 0) {
		rc = px_error_set(err, PX_ERR_SHAPE, "%s: x holds no examples", xp);
		goto fail;
	}
	if (*yp) {
		if ((rc = px_npy_read(yp, &nd, out->y.dim, &out->y_data, err)))
			goto fail;
		out->y.ndim = nd;
		if (nd < 1 || out->y.dim[0] != out->n) {
			rc = px_error_set(err, PX_ERR_SHAPE, "%s: y %s does not match x %s of %s", yp,
					  px_shape_str(&out->y, b1, sizeof b1),
					  px_shape_str(&out->x, b2, sizeof b2), xp);
			goto fail;
		}
	}
	if (*lp && (rc = npy_lengths(lp, &out->x, &out->x_len, err)))
		goto fail;
	if (*ylp) {
		if (!out->y_data) {
			rc = px_config_error(cfg, err, PX_ERR_INVALID, "y_lengths", "y_lengths without y");
			goto fail;
		}
		if ((rc = npy_lengths(ylp, &out->y, &out->y_len, err)))
			goto fail;
	}
	int64_t ny = out->y_data ? px_shape_numel(&out->y) * out->n : 0, max;
	if (classes > 0) {
		if (!out->y_data) {
			rc = px_config_error(cfg, err, PX_ERR_INVALID, "classes", "classes without y");
			goto fail;
		}
		if (!labels_integral(out->y_data, ny, &max) || max >= classes) {
			rc = px_error_set(err, PX_ERR_INVALID,
					  "%s: y must hold integer classes 0..%lld", yp,
					  (long long)classes - 1);
			goto fail;
		}
		out->n_classes = classes;
	} else if (out->y_data && ny > 0 && labels_integral(out->y_data, ny, &max)) {
		out->n_classes = max + 1;
	}
	return 0;
fail:
	px_dataset_free(out);
	return rc;
}

static const struct px_source_ops npy_source = {
	.struct_size = sizeof(struct px_source_ops),
	.kind = "npy",
	.doc = "NumPy .npy arrays: x [n,...], optional y [n,...] and lengths [n]",
	.schema = npy_schema,
	.load = npy_load,
};

/* ------------------------------------------------------------------ csv */

static const struct px_param_spec csv_schema[] = {
	{"path", PX_T_STRING, NULL, 0, 0, NULL, "CSV file of numbers, one example per line"},
	{"label_column", PX_T_INT, "-1", -1e6, 1e6, NULL,
	 "column of the target, 0-based (negative counts from the end; -1: last)"},
	{"header", PX_T_BOOL, "false", 0, 0, NULL, "skip the first line"},
	{"delimiter", PX_T_STRING, ",", 0, 0, NULL, "one character between fields ('tab' for tabs)"},
	{"task", PX_T_ENUM, "class", 0, 0, "class|regression",
	 "class: integer labels (n_classes = max+1); regression: real targets"},
	SPEC_END,
};

static int count_fields(const char *s, char delim)
{
	int n = 1;
	for (; *s; s++)
		n += *s == delim;
	return n;
}

/* Parse the number in [s, e) (spaces around allowed). */
static bool parse_field(const char *s, const char *e, double *v)
{
	while (s < e && (*s == ' ' || *s == '\t'))
		s++;
	while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
		e--;
	if (s == e)
		return false;
	char tmp[64];
	if ((size_t)(e - s) >= sizeof tmp)
		return false;
	memcpy(tmp, s, (size_t)(e - s));
	tmp[e - s] = 0;
	char *end;
	errno = 0;
	*v = strtod(tmp, &end);
	return !*end && errno != ERANGE && isfinite(*v);
}

static int csv_load(const struct px_config *cfg, const char *split, uint64_t seed,
		    struct px_dataset *out, struct px_error *err)
{
	const char *path = px_config_str(cfg, "path"), *d = px_config_str(cfg, "delimiter");
	bool header = px_config_bool(cfg, "header");
	bool classes = !strcmp(px_config_str(cfg, "task"), "class");
	int64_t lc = px_config_int(cfg, "label_column");
	char *buf = NULL, **lines = NULL;
	size_t len;
	int64_t nl, first = -1, n = 0;
	int cols = 0, rc;
	char delim;

	(void)split;
	(void)seed;
	memset(out, 0, sizeof *out);
	if (!path)
		return px_config_error(cfg, err, PX_ERR_INVALID, NULL, "csv needs 'path'");
	if (!strcmp(d, "tab") || !strcmp(d, "\\t"))
		delim = '\t';
	else if (strlen(d) == 1 && !strchr("0123456789.+-eE \r\n", d[0]))
		delim = d[0];
	else
		return px_config_error(cfg, err, PX_ERR_INVALID, "delimiter",
				       "'delimiter' must be one character that cannot be part of a number, got '%s'", d);
	if ((rc = px_read_file(path, MAX_TEXT_BYTES, &buf, &len, err)))
		return rc;
	if ((rc = split_lines(path, buf, len, &lines, &nl, err)))
		goto fail;
	for (int64_t i = header ? 1 : 0; i < nl; i++) {
		if (blank(lines[i]))
			continue;
		if (first < 0) {
			first = i;
			cols = count_fields(lines[i], delim);
		}
		n++;
	}
	if (n == 0) {
		rc = px_error_set(err, PX_ERR_PARSE, "%s: no data rows", path);
		goto fail;
	}
	if (cols < 2) {
		rc = px_error_set(err, PX_ERR_PARSE,
				  "%s:%lld: a row needs features and a label, found 1 column "
				  "(delimiter '%c')", path, (long long)first + 1, delim);
		goto fail;
	}
	if (lc < 0)
		lc += cols;
	if (lc < 0 || lc >= cols) {
		rc = px_config_error(cfg, err, PX_ERR_INVALID, "label_column",
				     "label_column %lld is outside the %d columns of %s",
				     (long long)px_config_int(cfg, "label_column"), cols, path);
		goto fail;
	}
	int64_t xd[2] = {n, cols - 1}, yd[1] = {n};
	if ((rc = px_dataset_alloc(out, 2, xd, false, 1, yd, false, err)))
		goto fail;
	int64_t row = 0, max = -1;
	for (int64_t i = first; i < nl; i++) {
		char *s = lines[i];
		if (blank(s))
			continue;
		int nf = count_fields(s, delim);
		if (nf != cols) {
			rc = px_error_set(err, PX_ERR_PARSE, "%s:%lld: %d fields, expected %d (as on line %lld)",
					  path, (long long)i + 1, nf, cols, (long long)first + 1);
			goto fail;
		}
		float *x = out->x_data + row * (cols - 1);
		for (int c = 0; c < cols; c++) {
			char *e = strchr(s, delim);
			if (!e)
				e = s + strlen(s);
			double v;
			if (!parse_field(s, e, &v)) {
				rc = px_error_set(err, PX_ERR_PARSE, "%s:%lld: field %d '%.*s' is not a number",
						  path, (long long)i + 1, c + 1, (int)(e - s > 40 ? 40 : e - s), s);
				goto fail;
			}
			if (c == lc) {
				if (classes && (v < 0 || v > 1e9 || v != floor(v))) {
					rc = px_error_set(err, PX_ERR_PARSE,
							  "%s:%lld: label %g is not a class (a non-negative "
							  "integer); use task: regression for real targets",
							  path, (long long)i + 1, v);
					goto fail;
				}
				out->y_data[row] = (float)v;
				if (classes && (int64_t)v > max)
					max = (int64_t)v;
			} else {
				*x++ = (float)v;
			}
			s = *e ? e + 1 : e;
		}
		row++;
	}
	out->n_classes = classes ? max + 1 : 0;
	free(lines);
	free(buf);
	return 0;
fail:
	free(lines);
	free(buf);
	px_dataset_free(out);
	return rc;
}

static const struct px_source_ops csv_source = {
	.struct_size = sizeof(struct px_source_ops),
	.kind = "csv",
	.doc = "CSV of numbers: x [n,features], y [n] from the label column",
	.schema = csv_schema,
	.load = csv_load,
};

/* ------------------------------------------------------------------ text (char LM) */

static const struct px_param_spec text_schema[] = {
	{"path", PX_T_STRING, NULL, 0, 0, NULL, "text file; its bytes are the tokens"},
	{"seq_len", PX_T_INT, "64", 1, 1e6, NULL, "T: steps per example"},
	{"stride", PX_T_INT, "0", 0, 1e9, NULL, "steps between window starts (0: seq_len)"},
	{"range", PX_T_FLOATS, "[0, 1]", 0, 1, NULL,
	 "[a, b]: the fraction of the file this split reads (vocabulary: the whole file)"},
	SPEC_END,
};

static int text_load(const struct px_config *cfg, const char *split, uint64_t seed,
		     struct px_dataset *out, struct px_error *err)
{
	const char *path = px_config_str(cfg, "path");
	int64_t T = px_config_int(cfg, "seq_len"), stride = px_config_int(cfg, "stride");
	char *buf = NULL;
	size_t len;
	double a, b;
	int rc;

	(void)split;
	(void)seed;
	memset(out, 0, sizeof *out);
	if (!path)
		return px_config_error(cfg, err, PX_ERR_INVALID, NULL, "text needs 'path'");
	if ((rc = get_range(cfg, &a, &b, err)))
		return rc;
	if (stride == 0)
		stride = T;
	if ((rc = px_read_file(path, MAX_TEXT_BYTES, &buf, &len, err)))
		return rc;

	/* vocabulary: the sorted set of bytes of the whole file, so every range agrees */
	int id[256], nv = 0;
	bool seen[256] = {false};
	for (size_t i = 0; i < len; i++)
		seen[(unsigned char)buf[i]] = true;
	char tok[256][2];
	const char *toks[256];
	for (int c = 0; c < 256; c++) {
		id[c] = -1;
		if (!seen[c])
			continue;
		tok[nv][0] = (char)c;
		tok[nv][1] = 0;
		toks[nv] = c ? tok[nv] : "\\0";
		id[c] = nv++;
	}
	size_t lo = (size_t)floor(a * (double)len), hi = (size_t)floor(b * (double)len);
	if (hi > len)
		hi = len;
	int64_t span = (int64_t)(hi - lo);
	if (span < T + 1) {
		rc = px_config_error(cfg, err, PX_ERR_INVALID, "range",
				     "range [%g, %g] of %s holds %lld bytes, fewer than seq_len+1 = %lld",
				     a, b, path, (long long)span, (long long)T + 1);
		goto fail;
	}
	int64_t n = (span - T - 1) / stride + 1;  /* windows s = 0, stride, ... with s+T+1 <= span */
	int64_t d[2] = {n, T};
	if ((rc = px_dataset_alloc(out, 2, d, false, 2, d, false, err)))
		goto fail;
	const unsigned char *p = (const unsigned char *)buf + lo;
	for (int64_t i = 0; i < n; i++) {
		const unsigned char *w = p + i * stride;
		for (int64_t t = 0; t < T; t++) {
			out->x_data[i * T + t] = (float)id[w[t]];       /* x_t = byte t */
			out->y_data[i * T + t] = (float)id[w[t + 1]];   /* y_t = byte t+1 */
		}
	}
	out->n_classes = nv;
	if ((rc = px_dataset_set_vocab(out, 'x', toks, nv, err)) ||
	    (rc = px_dataset_set_vocab(out, 'y', toks, nv, err)))
		goto fail;
	free(buf);
	return 0;
fail:
	free(buf);
	px_dataset_free(out);
	return rc;
}

static const struct px_source_ops text_source = {
	.struct_size = sizeof(struct px_source_ops),
	.kind = "text",
	.doc = "character-level language modelling: windows x [n,T] of byte ids, y [n,T] the next bytes",
	.schema = text_schema,
	.load = text_load,
};

/* ------------------------------------------------------------------ textpairs (seq2seq TSV) */

static const struct px_param_spec textpairs_schema[] = {
	{"path", PX_T_STRING, NULL, 0, 0, NULL,
	 "TSV file, one 'source<TAB>target' pair per line (further columns are ignored)"},
	{"tokens", PX_T_ENUM, "char", 0, 0, "char|word",
	 "char: UTF-8 characters; word: runs of non-space characters"},
	{"range", PX_T_FLOATS, "[0, 1]", 0, 1, NULL,
	 "[a, b]: the fraction of the pairs this split reads (vocabularies: the whole file)"},
	{"max_len", PX_T_INT, "0", 0, 1e6, NULL,
	 "most tokens of a source or target (0: no cap); longer pairs are errors unless truncate"},
	{"truncate", PX_T_BOOL, "false", 0, 0, NULL, "cut pairs longer than max_len instead of failing"},
	SPEC_END,
};

struct span {
	const char *p;
	size_t n;
};

static int span_cmp(const void *a, const void *b)
{
	const struct span *x = a, *y = b;
	size_t m = x->n < y->n ? x->n : y->n;
	int c = memcmp(x->p, y->p, m);
	return c ? c : (x->n > y->n) - (x->n < y->n);
}

/* Tokens of s[0..n) appended to *v (grown); returns the count or -1 on out of memory. */
static int64_t tokenize(const char *s, size_t n, bool words, struct span **v, int64_t *len,
			int64_t *cap)
{
	int64_t count = 0;
	size_t i = 0;
	while (i < n) {
		size_t j;
		if (words) {
			if (s[i] == ' ' || s[i] == '\t' || s[i] == '\v' || s[i] == '\f') {
				i++;
				continue;
			}
			for (j = i; j < n && s[j] != ' ' && s[j] != '\t' && s[j] != '\v' && s[j] != '\f';
			     j++)
				;
		} else {  /* one UTF-8 character: a lead byte and its continuation bytes */
			unsigned char c = (unsigned char)s[i];
			size_t want = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
			for (j = i + 1; j < n && j < i + want && ((unsigned char)s[j] & 0xc0) == 0x80; j++)
				;
		}
		if (*len == *cap) {
			int64_t nc = *cap ? *cap * 2 : 4096;
			struct span *nv = realloc(*v, (size_t)nc * sizeof *nv);
			if (!nv)
				return -1;
			*v = nv;
			*cap = nc;
		}
		(*v)[(*len)++] = (struct span){s + i, j - i};
		count++;
		i = j;
	}
	return count;
}

/* Sorted unique tokens of v[0..n) (sorts v); the vocabulary is specials + these. */
static int build_vocab(struct span *v, int64_t n, struct span **uniq, int64_t *nu,
		       char ***vocab, int64_t *nvocab)
{
	qsort(v, (size_t)n, sizeof *v, span_cmp);
	int64_t m = 0;
	for (int64_t i = 0; i < n; i++)
		if (m == 0 || span_cmp(&v[m - 1], &v[i]))
			v[m++] = v[i];
	*uniq = v;
	*nu = m;
	char **s = calloc((size_t)(m + TOK_FIRST), sizeof *s);
	if (!s)
		return PX_ERR_NOMEM;
	for (int64_t i = 0; i < m + TOK_FIRST; i++) {
		const char *src = i < TOK_FIRST ? specials[i] : v[i - TOK_FIRST].p;
		size_t len = i < TOK_FIRST ? strlen(src) : v[i - TOK_FIRST].n;
		s[i] = malloc(len + 1);
		if (!s[i]) {
			while (i-- > 0)
				free(s[i]);
			free(s);
			return PX_ERR_NOMEM;
		}
		memcpy(s[i], src, len);
		s[i][len] = 0;
	}
	*vocab = s;
	*nvocab = m + TOK_FIRST;
	return 0;
}

static float token_id(const struct span *uniq, int64_t nu, const struct span *t)
{
	const struct span *f = bsearch(t, uniq, (size_t)nu, sizeof *uniq, span_cmp);
	return f ? (float)(f - uniq + TOK_FIRST) : (float)TOK_UNK;
}

struct pair {
	int64_t line;
	int64_t s0, sn, t0, tn;   /* token ranges in the source / target span lists */
};

static int textpairs_load(const struct px_config *cfg, const char *split, uint64_t seed,
			  struct px_dataset *out, struct px_error *err)
{
	const char *path = px_config_str(cfg, "path");
	bool words = !strcmp(px_config_str(cfg, "tokens"), "word");
	bool trunc = px_config_bool(cfg, "truncate");
	int64_t max_len = px_config_int(cfg, "max_len");
	char *buf = NULL, **lines = NULL;
	struct span *st = NULL, *tt = NULL, *su = NULL, *tu = NULL;
	struct pair *pairs = NULL;
	int64_t nl, ns = 0, cs = 0, nt = 0, ct = 0, np = 0, nsu, ntu;
	size_t len;
	double a, b;
	int rc;

	(void)split;
	(void)seed;
	memset(out, 0, sizeof *out);
	if (!path)
		return px_config_error(cfg, err, PX_ERR_INVALID, NULL, "textpairs needs 'path'");
	if ((rc = get_range(cfg, &a, &b, err)))
		return rc;
	if ((rc = px_read_file(path, MAX_TEXT_BYTES, &buf, &len, err)))
		return rc;
	if ((rc = split_lines(path, buf, len, &lines, &nl, err)))
		goto fail;
	pairs = malloc((size_t)(nl ? nl : 1) * sizeof *pairs);
	if (!pairs)
		goto nomem;
	for (int64_t i = 0; i < nl; i++) {
		char *s = lines[i];
		if (blank(s))
			continue;
		char *tab = strchr(s, '\t');
		if (!tab) {
			rc = px_error_set(err, PX_ERR_PARSE, "%s:%lld: expected 'source<TAB>target'",
					  path, (long long)i + 1);
			goto fail;
		}
		char *t = tab + 1, *tend = strchr(t, '\t');
		size_t tlen = tend ? (size_t)(tend - t) : strlen(t);
		struct pair *p = &pairs[np];
		p->line = i + 1;
		p->s0 = ns;
		p->t0 = nt;
		p->sn = tokenize(s, (size_t)(tab - s), words, &st, &ns, &cs);
		p->tn = tokenize(t, tlen, words, &tt, &nt, &ct);
		if (p->sn < 0 || p->tn < 0)
			goto nomem;
		if (p->sn == 0 || p->tn == 0) {
			rc = px_error_set(err, PX_ERR_PARSE, "%s:%lld: empty %s", path, (long long)i + 1,
					  p->sn == 0 ? "source" : "target");
			goto fail;
		}
		np++;
	}
	int64_t lo = (int64_t)floor(a * (double)np), hi = (int64_t)floor(b * (double)np);
	if (hi <= lo) {
		rc = px_config_error(cfg, err, PX_ERR_INVALID, "range",
				     "range [%g, %g] of %s holds no pairs (the file has %lld)", a, b, path,
				     (long long)np);
		goto fail;
	}
	/* shapes of this split: the longest source and target in range */
	int64_t tsrc = 0, ttgt = 0;
	for (int64_t k = lo; k < hi; k++) {
		struct pair *p = &pairs[k];
		if (max_len > 0 && (p->sn > max_len || p->tn > max_len)) {
			if (!trunc) {
				rc = px_error_set(err, PX_ERR_INVALID,
						  "%s:%lld: the %s has %lld tokens, more than max_len %lld "
						  "(or set truncate: true)", path, (long long)p->line,
						  p->sn > max_len ? "source" : "target",
						  (long long)(p->sn > max_len ? p->sn : p->tn),
						  (long long)max_len);
				goto fail;
			}
		}
		if (p->sn > tsrc)
			tsrc = p->sn;
		if (p->tn > ttgt)
			ttgt = p->tn;
	}
	if (max_len > 0 && tsrc > max_len)
		tsrc = max_len;
	if (max_len > 0 && ttgt > max_len)
		ttgt = max_len;

	/* token ids are looked up in copies (sorting reorders the span lists) */
	struct span *sc = malloc((size_t)(ns ? ns : 1) * sizeof *sc);
	struct span *tc = malloc((size_t)(nt ? nt : 1) * sizeof *tc);
	if (!sc || !tc) {
		free(sc);
		free(tc);
		goto nomem;
	}
	memcpy(sc, st, (size_t)ns * sizeof *sc);
	memcpy(tc, tt, (size_t)nt * sizeof *tc);
	char **xv = NULL, **yv = NULL;
	int64_t nxv = 0, nyv = 0;
	rc = build_vocab(sc, ns, &su, &nsu, &xv, &nxv);
	if (!rc)
		rc = build_vocab(tc, nt, &tu, &ntu, &yv, &nyv);
	if (rc) {
		if (xv) {
			for (int64_t i = 0; i < nxv; i++)
				free(xv[i]);
			free(xv);
		}
		free(sc);
		free(tc);
		goto nomem;
	}
	int64_t n = hi - lo, xd[2] = {n, tsrc}, yd[2] = {n, ttgt + 1};
	rc = px_dataset_alloc(out, 2, xd, true, 2, yd, true, err);
	/* vocabularies become the dataset's (freed by px_dataset_free) */
	if (!rc) {
		out->x_vocab = xv;
		out->x_vocab_n = nxv;
		out->y_vocab = yv;
		out->y_vocab_n = nyv;
	} else {
		for (int64_t i = 0; i < nxv; i++)
			free(xv[i]);
		free(xv);
		for (int64_t i = 0; i < nyv; i++)
			free(yv[i]);
		free(yv);
	}
	if (!rc) {
		for (int64_t k = lo; k < hi; k++) {
			struct pair *p = &pairs[k];
			int64_t i = k - lo, sn = p->sn < tsrc ? p->sn : tsrc, tn = p->tn < ttgt ? p->tn : ttgt;
			for (int64_t j = 0; j < sn; j++)
				out->x_data[i * tsrc + j] = token_id(su, nsu, &st[p->s0 + j]);
			for (int64_t j = 0; j < tn; j++)
				out->y_data[i * (ttgt + 1) + j] = token_id(tu, ntu, &tt[p->t0 + j]);
			out->y_data[i * (ttgt + 1) + tn] = TOK_EOS;   /* y = target, <eos>, <pad>... */
			out->x_len[i] = (int32_t)sn;
			out->y_len[i] = (int32_t)(tn + 1);
		}
		out->n_classes = nyv;
	}
	free(sc);
	free(tc);
	if (rc)
		goto fail;
	free(st);
	free(tt);
	free(pairs);
	free(lines);
	free(buf);
	return 0;
nomem:
	rc = px_error_set(err, PX_ERR_NOMEM, "%s: out of memory", path);
fail:
	free(st);
	free(tt);
	free(pairs);
	free(lines);
	free(buf);
	px_dataset_free(out);
	return rc;
}

static const struct px_source_ops textpairs_source = {
	.struct_size = sizeof(struct px_source_ops),
	.kind = "textpairs",
	.doc = "seq2seq pairs from a TSV file: x [n,Tsrc] ids + lengths, y [n,Ttgt+1] ids ending in <eos>",
	.schema = textpairs_schema,
	.load = textpairs_load,
};

/* ------------------------------------------------------------------ series (synthetic) */

static const struct px_param_spec series_schema[] = {
	{"n", PX_T_INT, "1000", 1, 1e8, NULL, "examples"},
	{"seq_len", PX_T_INT, "50", 1, 1e6, NULL, "T: steps per example"},
	{"period", PX_T_FLOAT, "20", 1e-3, 1e9, NULL, "period of the base frequency, in steps"},
	{"noise", PX_T_FLOAT, "0.1", 0, 1e6, NULL, "standard deviation of the added Gaussian noise"},
	{"harmonics", PX_T_INT, "2", 1, 64, NULL, "sine harmonics summed (the k-th has amplitude 1/k)"},
	SPEC_END,
};

static int series_load(const struct px_config *cfg, const char *split, uint64_t seed,
		       struct px_dataset *out, struct px_error *err)
{
	int64_t n = px_config_int(cfg, "n"), T = px_config_int(cfg, "seq_len");
	int64_t H = px_config_int(cfg, "harmonics");
	double period = px_config_float(cfg, "period"), noise = px_config_float(cfg, "noise");
	int64_t d[3] = {n, T, 1};
	char label[96];
	struct px_rng r;

	memset(out, 0, sizeof *out);
	int rc = px_dataset_alloc(out, 3, d, false, 3, d, false, err);
	if (rc)
		return rc;
	snprintf(label, sizeof label, "series/%s", split ? split : "");
	px_rng_seed_label(&r, seed, label);
	double w = 2.0 * M_PI / period;
	for (int64_t i = 0; i < n; i++) {
		double amp = 0.5 + px_rng_uniform(&r), phase = 2.0 * M_PI * px_rng_uniform(&r);
		for (int64_t t = 0; t <= T; t++) {
			/* v_t = A sum_k sin(k (w t + phase)) / k + noise e_t */
			double v = 0;
			for (int64_t k = 1; k <= H; k++)
				v += sin((double)k * (w * (double)t + phase)) / (double)k;
			float val = (float)(amp * v + noise * px_rng_normal(&r));
			if (t < T)
				out->x_data[i * T + t] = val;
			if (t > 0)
				out->y_data[i * T + t - 1] = val;   /* y_t = x_{t+1} */
		}
	}
	return 0;
}

static const struct px_source_ops series_source = {
	.struct_size = sizeof(struct px_source_ops),
	.kind = "series",
	.doc = "synthetic noisy periodic series for next-value regression: x [n,T,1], y [n,T,1]",
	.schema = series_schema,
	.load = series_load,
};

/* ------------------------------------------------------------------ copy (synthetic seq2seq) */

static const struct px_param_spec copy_schema[] = {
	{"n", PX_T_INT, "1000", 1, 1e8, NULL, "examples"},
	{"min_len", PX_T_INT, "3", 1, 1e5, NULL, "shortest string"},
	{"max_len", PX_T_INT, "8", 1, 1e5, NULL, "longest string"},
	{"symbols", PX_T_INT, "8", 1, 1e4, NULL, "distinct symbols: a, b, ... z, then s26, s27 ..."},
	{"task", PX_T_ENUM, "copy", 0, 0, "copy|reverse", "y is x copied or reversed, then <eos>"},
	SPEC_END,
};

static int copy_load(const struct px_config *cfg, const char *split, uint64_t seed,
		     struct px_dataset *out, struct px_error *err)
{
	int64_t n = px_config_int(cfg, "n"), lo = px_config_int(cfg, "min_len");
	int64_t hi = px_config_int(cfg, "max_len"), S = px_config_int(cfg, "symbols");
	bool rev = !strcmp(px_config_str(cfg, "task"), "reverse");
	char label[96];
	struct px_rng r;
	char **v = NULL;
	int rc;

	memset(out, 0, sizeof *out);
	if (lo > hi)
		return px_config_error(cfg, err, PX_ERR_INVALID, "min_len",
				       "min_len %lld is more than max_len %lld", (long long)lo,
				       (long long)hi);
	int64_t xd[2] = {n, hi}, yd[2] = {n, hi + 1};
	if ((rc = px_dataset_alloc(out, 2, xd, true, 2, yd, true, err)))
		return rc;
	snprintf(label, sizeof label, "copy/%s", split ? split : "");
	px_rng_seed_label(&r, seed, label);
	for (int64_t i = 0; i < n; i++) {
		int64_t L = lo + (int64_t)px_rng_below(&r, (uint64_t)(hi - lo + 1));
		float *x = out->x_data + i * hi, *y = out->y_data + i * (hi + 1);
		for (int64_t t = 0; t < L; t++)
			x[t] = (float)(TOK_FIRST + (int64_t)px_rng_below(&r, (uint64_t)S));
		for (int64_t t = 0; t < L; t++)
			y[t] = rev ? x[L - 1 - t] : x[t];   /* y = x or reverse(x), then <eos> */
		y[L] = TOK_EOS;
		out->x_len[i] = (int32_t)L;
		out->y_len[i] = (int32_t)(L + 1);
	}
	int64_t nv = TOK_FIRST + S;
	v = calloc((size_t)nv, sizeof *v);
	if (!v)
		goto nomem;
	for (int64_t k = 0; k < nv; k++) {
		if (k < TOK_FIRST)
			v[k] = px_strdup(specials[k]);
		else if (k - TOK_FIRST < 26)
			v[k] = px_asprintf("%c", (char)('a' + (k - TOK_FIRST)));
		else
			v[k] = px_asprintf("s%lld", (long long)(k - TOK_FIRST));
		if (!v[k])
			goto nomem;
	}
	if ((rc = px_dataset_set_vocab(out, 'x', (const char *const *)v, nv, err)) ||
	    (rc = px_dataset_set_vocab(out, 'y', (const char *const *)v, nv, err)))
		goto fail;
	out->n_classes = nv;
	for (int64_t k = 0; k < nv; k++)
		free(v[k]);
	free(v);
	return 0;
nomem:
	rc = px_error_set(err, PX_ERR_NOMEM, "copy: out of memory");
fail:
	for (int64_t k = 0; v && k < nv; k++)
		free(v[k]);
	free(v);
	px_dataset_free(out);
	return rc;
}

static const struct px_source_ops copy_source = {
	.struct_size = sizeof(struct px_source_ops),
	.kind = "copy",
	.doc = "synthetic seq2seq: random symbol strings x, y their copy or reversal then <eos>",
	.schema = copy_schema,
	.load = copy_load,
};

const struct px_source_ops *const px_builtin_sources[] = {
	&idx_source, &npy_source, &csv_source, &text_source, &textpairs_source, &series_source,
	&copy_source, NULL,
};
