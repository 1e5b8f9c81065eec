/* Datasets: allocation, views (only_classes, limit, scale/shift, as), seeded validation splits
 * and batch gathering into arena tensors.
 *
 * A dataset owns malloc'ed arrays (x_data, y_data, x_len, y_len, the vocabularies and
 * class_names, which holds n_classes strings when set); px_dataset_free releases them. Core
 * sources may fill these fields directly with malloc'ed memory; plugins use px_dataset_alloc
 * and px_dataset_set_vocab. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ------------------------------------------------------------------ allocation */

/* Product of all dims, refusing negative dims and anything whose bytes overflow. */
static bool dims_numel(int ndim, const int64_t *dims, int64_t *numel)
{
	if (ndim < 1 || ndim > PX_MAX_DIMS)
		return false;
	int64_t n = 1;
	for (int i = 0; i < ndim; i++) {
		if (dims[i] < 0)
			return false;
		if (dims[i] && n > (int64_t)(SIZE_MAX / sizeof(float) / 2) / dims[i])
			return false;
		n *= dims[i];
	}
	*numel = n;
	return true;
}

/* Floats per example: product of dims 1.. (1 for a [n] shape). */
static int64_t row_numel(const struct px_shape *s)
{
	int64_t n = 1;
	for (int i = 1; i < s->ndim; i++)
		n *= s->dim[i];
	return n;
}

static void shape_set(struct px_shape *s, int ndim, const int64_t *dims)
{
	memset(s, 0, sizeof *s);
	s->ndim = ndim;
	for (int i = 0; i < ndim; i++)
		s->dim[i] = dims[i];
}

static const char *dims_str(int ndim, const int64_t *dims, char *buf, size_t n)
{
	struct px_shape s;
	if (ndim < 0 || ndim > PX_MAX_DIMS) {
		snprintf(buf, n, "(%d dims)", ndim);
		return buf;
	}
	shape_set(&s, ndim, dims);
	return px_shape_str(&s, buf, n);
}

int px_dataset_alloc(struct px_dataset *ds, int x_ndim, const int64_t *x_dims, bool x_lengths,
		     int y_ndim, const int64_t *y_dims, bool y_lengths, struct px_error *err)
{
	char b1[128], b2[128];
	int64_t xn, yn = 0;

	memset(ds, 0, sizeof *ds);
	if (!dims_numel(x_ndim, x_dims, &xn))
		return px_error_set(err, PX_ERR_INVALID, "dataset: x shape %s is invalid or too large",
				    dims_str(x_ndim, x_dims, b1, sizeof b1));
	if (y_ndim != 0 && !dims_numel(y_ndim, y_dims, &yn))
		return px_error_set(err, PX_ERR_INVALID, "dataset: y shape %s is invalid or too large",
				    dims_str(y_ndim, y_dims, b1, sizeof b1));
	if (y_ndim != 0 && y_dims[0] != x_dims[0])
		return px_error_set(err, PX_ERR_SHAPE, "dataset: x %s and y %s differ in examples",
				    dims_str(x_ndim, x_dims, b1, sizeof b1),
				    dims_str(y_ndim, y_dims, b2, sizeof b2));
	if ((x_lengths && x_ndim < 2) || (y_lengths && y_ndim < 2))
		return px_error_set(err, PX_ERR_SHAPE, "dataset: lengths need a sequence dim (x %s, y %s)",
				    dims_str(x_ndim, x_dims, b1, sizeof b1),
				    dims_str(y_ndim, y_dims, b2, sizeof b2));

	int64_t n = x_dims[0];
	size_t nlen = (size_t)(n ? n : 1);
	ds->x_data = calloc((size_t)(xn ? xn : 1), sizeof(float));
	if (y_ndim)
		ds->y_data = calloc((size_t)(yn ? yn : 1), sizeof(float));
	if (x_lengths)
		ds->x_len = calloc(nlen, sizeof(int32_t));
	if (y_lengths)
		ds->y_len = calloc(nlen, sizeof(int32_t));
	if (!ds->x_data || (y_ndim && !ds->y_data) || (x_lengths && !ds->x_len) ||
	    (y_lengths && !ds->y_len)) {
		px_dataset_free(ds);
		return px_error_set(err, PX_ERR_NOMEM, "dataset: out of memory for x %s",
				    dims_str(x_ndim, x_dims, b1, sizeof b1));
	}
	ds->n = n;
	shape_set(&ds->x, x_ndim, x_dims);
	if (y_ndim)
		shape_set(&ds->y, y_ndim, y_dims);
	return 0;
}

static void strings_free(char **v, int64_t n)
{
	for (int64_t i = 0; v && i < n; i++)
		free(v[i]);
	free(v);
}

/* A malloc'ed copy of n strings; NULL on out of memory. */
static char **strings_dup(const char *const *s, int64_t n)
{
	char **v = calloc((size_t)(n ? n : 1), sizeof *v);
	if (!v)
		return NULL;
	for (int64_t i = 0; i < n; i++) {
		v[i] = px_strdup(s[i] ? s[i] : "");
		if (!v[i]) {
			strings_free(v, i);
			return NULL;
		}
	}
	return v;
}

int px_dataset_set_vocab(struct px_dataset *ds, char which, const char *const *tokens,
			 int64_t n, struct px_error *err)
{
	if ((which != 'x' && which != 'y') || n < 0 || (n > 0 && !tokens))
		return px_error_set(err, PX_ERR_INVALID, "dataset: bad vocabulary (which '%c', %lld tokens)",
				    which, (long long)n);
	char **v = strings_dup(tokens, n);
	if (!v)
		return px_error_set(err, PX_ERR_NOMEM, "dataset: out of memory for a vocabulary of %lld",
				    (long long)n);
	if (which == 'x') {
		strings_free(ds->x_vocab, ds->x_vocab_n);
		ds->x_vocab = v;
		ds->x_vocab_n = n;
	} else {
		strings_free(ds->y_vocab, ds->y_vocab_n);
		ds->y_vocab = v;
		ds->y_vocab_n = n;
	}
	return 0;
}

void px_dataset_free(struct px_dataset *ds)
{
	if (!ds)
		return;
	free(ds->x_data);
	free(ds->y_data);
	free(ds->x_len);
	free(ds->y_len);
	strings_free(ds->x_vocab, ds->x_vocab_n);
	strings_free(ds->y_vocab, ds->y_vocab_n);
	strings_free(ds->class_names, ds->n_classes);
	memset(ds, 0, sizeof *ds);
}

/* Copy n_classes, vocabularies and class names of src into dst. */
static int meta_copy(const struct px_dataset *src, struct px_dataset *dst, struct px_error *err)
{
	int rc;
	dst->n_classes = src->n_classes;
	if (src->x_vocab && (rc = px_dataset_set_vocab(dst, 'x', (const char *const *)src->x_vocab,
						       src->x_vocab_n, err)))
		return rc;
	if (src->y_vocab && (rc = px_dataset_set_vocab(dst, 'y', (const char *const *)src->y_vocab,
						       src->y_vocab_n, err)))
		return rc;
	if (src->class_names) {
		dst->class_names = strings_dup((const char *const *)src->class_names, src->n_classes);
		if (!dst->class_names)
			return px_error_set(err, PX_ERR_NOMEM, "dataset: out of memory");
	}
	return 0;
}

/* ------------------------------------------------------------------ selecting examples */

/* Keep the first m examples; shrinks the arrays (a failed shrink keeps the old block). */
static void dataset_truncate(struct px_dataset *ds, int64_t m)
{
	int64_t xr = row_numel(&ds->x), yr = ds->y.ndim ? row_numel(&ds->y) : 0;
	size_t keep = (size_t)(m ? m : 1);
	float *p;
	int32_t *q;

	ds->n = m;
	ds->x.dim[0] = m;
	if (ds->y.ndim)
		ds->y.dim[0] = m;
	if ((p = realloc(ds->x_data, keep * (size_t)(xr ? xr : 1) * sizeof(float))))
		ds->x_data = p;
	if (ds->y_data && (p = realloc(ds->y_data, keep * (size_t)(yr ? yr : 1) * sizeof(float))))
		ds->y_data = p;
	if (ds->x_len && (q = realloc(ds->x_len, keep * sizeof(int32_t))))
		ds->x_len = q;
	if (ds->y_len && (q = realloc(ds->y_len, keep * sizeof(int32_t))))
		ds->y_len = q;
}

/* Keep the examples with keep[i] set, in order, in place. */
static void dataset_compact(struct px_dataset *ds, const unsigned char *keep)
{
	int64_t xr = row_numel(&ds->x), yr = ds->y.ndim ? row_numel(&ds->y) : 0, m = 0;

	for (int64_t i = 0; i < ds->n; i++) {
		if (!keep[i])
			continue;
		if (m != i) {  /* rows m < i never overlap */
			memcpy(ds->x_data + m * xr, ds->x_data + i * xr, (size_t)xr * sizeof(float));
			if (ds->y_data)
				memcpy(ds->y_data + m * yr, ds->y_data + i * yr,
				       (size_t)yr * sizeof(float));
			if (ds->x_len)
				ds->x_len[m] = ds->x_len[i];
			if (ds->y_len)
				ds->y_len[m] = ds->y_len[i];
		}
		m++;
	}
	dataset_truncate(ds, m);
}

/* A new dataset `out` holding copies of examples idx[0..m) of ds. */
static int dataset_subset(const struct px_dataset *ds, const int64_t *idx, int64_t m,
			  struct px_dataset *out, struct px_error *err)
{
	int64_t xd[PX_MAX_DIMS], yd[PX_MAX_DIMS];
	memcpy(xd, ds->x.dim, sizeof xd);
	memcpy(yd, ds->y.dim, sizeof yd);
	xd[0] = yd[0] = m;
	int rc = px_dataset_alloc(out, ds->x.ndim, xd, ds->x_len != NULL, ds->y.ndim, yd,
				  ds->y_len != NULL, err);
	if (rc)
		return rc;
	int64_t xr = row_numel(&ds->x), yr = ds->y.ndim ? row_numel(&ds->y) : 0;
	for (int64_t j = 0; j < m; j++) {
		int64_t i = idx[j];
		memcpy(out->x_data + j * xr, ds->x_data + i * xr, (size_t)xr * sizeof(float));
		if (ds->y_data)
			memcpy(out->y_data + j * yr, ds->y_data + i * yr, (size_t)yr * sizeof(float));
		if (ds->x_len)
			out->x_len[j] = ds->x_len[i];
		if (ds->y_len)
			out->y_len[j] = ds->y_len[i];
	}
	rc = meta_copy(ds, out, err);
	if (rc)
		px_dataset_free(out);
	return rc;
}

/* ------------------------------------------------------------------ views */

const struct px_param_spec px_view_schema[] = {
	{"only_classes", PX_T_INTS, "[]", 0, 1e9, NULL,
	 "keep only examples whose integer label is listed (default: all), e.g. one class for an anomaly detector"},
	{"limit", PX_T_INT, "0", 0, 1e15, NULL, "keep the first N examples (0: all), for reduced runs"},
	{"scale", PX_T_FLOAT, "1", -PX_UNBOUNDED, PX_UNBOUNDED, NULL, "x = x*scale + shift, e.g. 1/255"},
	{"shift", PX_T_FLOAT, "0", -PX_UNBOUNDED, PX_UNBOUNDED, NULL, "x = x*scale + shift"},
	{"as", PX_T_ENUM, "none", 0, 0, "none|sequence|image|flat",
	 "reshape x: sequence [n,T,F] (an image's rows are steps), image [n,C,H,W], flat [n,features]"},
	{NULL, 0, NULL, 0, 0, NULL, NULL},
};

static int view_only_classes(struct px_dataset *ds, const struct px_config *view,
			     const int64_t *cls, int ncls, struct px_error *err)
{
	char b[128];
	if (!ds->y_data || ds->y.ndim > 2 || row_numel(&ds->y) != 1)
		return px_config_error(view, err, PX_ERR_SHAPE, "only_classes",
				       "only_classes needs one integer label per example, y is %s",
				       ds->y.ndim ? px_shape_str(&ds->y, b, sizeof b) : "absent");
	unsigned char *keep = calloc((size_t)(ds->n ? ds->n : 1), 1);
	if (!keep)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	int64_t kept = 0;
	for (int64_t i = 0; i < ds->n; i++) {
		float v = ds->y_data[i];
		for (int k = 0; k < ncls; k++) {
			if (v == (float)cls[k]) {
				keep[i] = 1;
				kept++;
				break;
			}
		}
	}
	if (kept == 0) {
		free(keep);
		return px_config_error(view, err, PX_ERR_INVALID, "only_classes",
				       "only_classes keeps none of the %lld examples (n_classes %lld)",
				       (long long)ds->n, (long long)ds->n_classes);
	}
	dataset_compact(ds, keep);
	free(keep);
	return 0;
}

/* x = x*scale + shift on the valid steps (padding stays zero). */
static void view_affine(struct px_dataset *ds, double scale, double shift)
{
	int64_t xr = row_numel(&ds->x);
	int64_t step = ds->x.ndim > 1 ? xr / (ds->x.dim[1] ? ds->x.dim[1] : 1) : 1;
	for (int64_t i = 0; i < ds->n; i++) {
		float *row = ds->x_data + i * xr;
		int64_t m = ds->x_len ? (int64_t)ds->x_len[i] * step : xr;
		for (int64_t j = 0; j < m; j++)
			row[j] = (float)(row[j] * scale + shift);
	}
}

static int view_reshape(struct px_dataset *ds, const struct px_config *view, const char *as,
			struct px_error *err)
{
	struct px_shape *s = &ds->x;
	char b[128];
	px_shape_str(s, b, sizeof b);

	if (!strcmp(as, "sequence")) {
		/* [n,T,F] stays; [n,1,H,W] -> [n,H,W]; [n,T] -> [n,T,1] */
		if (s->ndim == 3)
			return 0;
		if (s->ndim == 4 && s->dim[1] == 1 && !ds->x_len) {
			int64_t d[3] = {s->dim[0], s->dim[2], s->dim[3]};
			shape_set(s, 3, d);
			return 0;
		}
		if (s->ndim == 2) {
			int64_t d[3] = {s->dim[0], s->dim[1], 1};
			shape_set(s, 3, d);
			return 0;
		}
		return px_config_error(view, err, PX_ERR_SHAPE, "as",
				       "'as: sequence' needs x of shape [n,T,F], [n,T] or [n,1,H,W], got %s", b);
	}
	if (!strcmp(as, "image")) {
		/* [n,H,W] -> [n,1,H,W]; [n,C,H,W] stays */
		if (s->ndim == 4 && !ds->x_len)
			return 0;
		if (s->ndim == 3 && !ds->x_len) {
			int64_t d[4] = {s->dim[0], 1, s->dim[1], s->dim[2]};
			shape_set(s, 4, d);
			return 0;
		}
		return px_config_error(view, err, PX_ERR_SHAPE, "as",
				       "'as: image' needs x of shape [n,H,W] or [n,C,H,W] without lengths, got %s%s",
				       b, ds->x_len ? " with lengths" : "");
	}
	if (!strcmp(as, "flat")) {
		/* [n, ...] -> [n, prod] */
		if (s->ndim > 2 && ds->x_len)
			return px_config_error(view, err, PX_ERR_SHAPE, "as",
					       "'as: flat' cannot flatten ragged sequences %s (x has lengths)", b);
		int64_t d[2] = {s->dim[0], row_numel(s)};
		shape_set(s, 2, d);
		return 0;
	}
	return 0;  /* none */
}

int px_dataset_apply_view(struct px_dataset *ds, const struct px_config *view,
			  struct px_error *err)
{
	if (!view)
		return 0;
	const int64_t *cls;
	int ncls = px_config_ints(view, "only_classes", &cls);
	if (ncls > 0) {
		int rc = view_only_classes(ds, view, cls, ncls, err);
		if (rc)
			return rc;
	}
	int64_t limit = px_config_int(view, "limit");
	if (limit > 0 && limit < ds->n)
		dataset_truncate(ds, limit);
	double scale = px_config_float(view, "scale"), shift = px_config_float(view, "shift");
	if (scale != 1.0 || shift != 0.0)
		view_affine(ds, scale, shift);
	return view_reshape(ds, view, px_config_str(view, "as"), err);
}

/* ------------------------------------------------------------------ split and gather */

int px_dataset_split(struct px_dataset *ds, double fraction, uint64_t seed,
		     struct px_dataset *val, struct px_error *err)
{
	memset(val, 0, sizeof *val);
	if (!(fraction > 0.0 && fraction < 1.0))
		return px_error_set(err, PX_ERR_INVALID,
				    "validation fraction %g must be between 0 and 1 (exclusive)", fraction);
	int64_t n = ds->n, nv = (int64_t)llround(fraction * (double)n);
	if (nv < 1 || nv >= n)
		return px_error_set(err, PX_ERR_INVALID,
				    "cannot move a fraction %g of %lld examples to validation: "
				    "one of the splits would be empty", fraction, (long long)n);

	int64_t *perm = malloc((size_t)n * sizeof *perm);
	unsigned char *keep = malloc((size_t)n);
	int rc = 0;
	if (!perm || !keep) {
		rc = px_error_set(err, PX_ERR_NOMEM, "out of memory splitting %lld examples",
				  (long long)n);
		goto out;
	}
	/* partial Fisher-Yates: perm[0..nv) is a seeded random choice of nv examples */
	struct px_rng r;
	px_rng_seed_label(&r, seed, "validation-split");
	for (int64_t i = 0; i < n; i++)
		perm[i] = i;
	for (int64_t i = 0; i < nv; i++) {
		int64_t j = i + (int64_t)px_rng_below(&r, (uint64_t)(n - i));
		int64_t t = perm[i];
		perm[i] = perm[j];
		perm[j] = t;
	}
	memset(keep, 1, (size_t)n);
	for (int64_t i = 0; i < nv; i++)
		keep[perm[i]] = 0;
	int64_t m = 0;  /* validation indices in their original order */
	for (int64_t i = 0; i < n; i++)
		if (!keep[i])
			perm[m++] = i;
	rc = dataset_subset(ds, perm, nv, val, err);
	if (rc)
		goto out;
	dataset_compact(ds, keep);
out:
	free(perm);
	free(keep);
	return rc;
}

/* Gathers one tensor ([n, dims 1..] of data) and its lengths. */
static struct px_tensor *gather_one(const struct px_shape *s, const float *data,
				    const int32_t *len, const int64_t *idx, int64_t n,
				    struct px_arena *a)
{
	int64_t shape[PX_MAX_DIMS];
	memcpy(shape, s->dim, sizeof shape);
	shape[0] = n;
	struct px_tensor *t = px_tensor_new(a, s->ndim, shape);
	if (!t)
		return NULL;
	int64_t r = row_numel(s);
	for (int64_t j = 0; j < n; j++)
		memcpy(t->data + j * r, data + idx[j] * r, (size_t)r * sizeof(float));
	if (len) {
		int32_t *l = px_arena_alloc(a, (size_t)n * sizeof *l);
		if (!l)
			return NULL;
		for (int64_t j = 0; j < n; j++)
			l[j] = len[idx[j]];
		t->lengths = l;
	}
	return t;
}

int px_dataset_gather(const struct px_dataset *ds, const int64_t *idx, int64_t n,
		      struct px_arena *a, struct px_tensor **x, struct px_tensor **y,
		      struct px_error *err)
{
	*x = NULL;
	if (y)
		*y = NULL;
	if (n < 1)
		return px_error_set(err, PX_ERR_INVALID, "gather: %lld examples asked", (long long)n);
	for (int64_t j = 0; j < n; j++)
		if (idx[j] < 0 || idx[j] >= ds->n)
			return px_error_set(err, PX_ERR_INVALID,
					    "gather: example %lld is out of range (dataset has %lld)",
					    (long long)idx[j], (long long)ds->n);
	*x = gather_one(&ds->x, ds->x_data, ds->x_len, idx, n, a);
	if (!*x)
		return px_error_set(err, PX_ERR_NOMEM, "gather: out of memory for a batch of %lld",
				    (long long)n);
	if (y && ds->y.ndim) {
		*y = gather_one(&ds->y, ds->y_data, ds->y_len, idx, n, a);
		if (!*y)
			return px_error_set(err, PX_ERR_NOMEM, "gather: out of memory for a batch of %lld",
					    (long long)n);
	}
	return 0;
}
