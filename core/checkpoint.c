/* checkpoint.c — safetensors files: atomic writes, and reads that never trust the file.
 *
 * Format (https://github.com/huggingface/safetensors):
 *     u64 little-endian N | N bytes of JSON header | data buffer
 *     header: {"__metadata__": {"k": "v", ...},
 *              "name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...}
 * Offsets are relative to the start of the data buffer; the tensors tile the buffer exactly
 * (no overlap, no hole, nothing after the last one). plexus stores float32 only. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "checkpoint.c writes float data as it is in memory: little-endian hosts only"
#endif

#define PX_ST_MAX_HEADER 100000000u   /* as the reference implementation */

struct px_st_tensor {
	char *name;                   /* owned */
	int ndim;
	int64_t shape[PX_MAX_DIMS];
	uint64_t begin, end;          /* byte offsets in the data buffer */
	const float *data;            /* into px_st_file.blob */
};

struct px_st_file {
	char *blob;                   /* the whole file; data moved to a 4-byte aligned place */
	int n;
	struct px_st_tensor *t;
	int *by_name;                 /* tensor indices sorted by name, for px_st_find */
	int n_meta;
	char **meta_k, **meta_v;      /* owned */
};

/* A name for messages: JSON-escaped (a hostile name cannot put control characters on the
 * terminal) and cut at about 60 bytes. */
static const char *shown(const char *s, char buf[80])
{
	char *e = px_json_escape(s);
	if (!e)
		return "?";
	size_t n = strlen(e);
	if (n > 60) {
		size_t cut = 57;
		while (cut > 0 && ((unsigned char)e[cut] & 0xc0) == 0x80)
			cut--;            /* do not split a UTF-8 sequence */
		memcpy(buf, e, cut);
		memcpy(buf + cut, "...", 4);
	} else {
		memcpy(buf, e, n + 1);
	}
	free(e);
	return buf;
}

/* "an integer", "a string", ... for messages */
static const char *a_type(enum px_json_type t)
{
	switch (t) {
	case PX_JSON_NULL: return "null";
	case PX_JSON_BOOL: return "a boolean";
	case PX_JSON_INT: return "an integer";
	case PX_JSON_FLOAT: return "a number";
	case PX_JSON_STRING: return "a string";
	case PX_JSON_ARRAY: return "an array";
	case PX_JSON_OBJECT: return "an object";
	}
	return "?";
}

static void shape_str(const int64_t *shape, int ndim, char *buf, size_t n)
{
	size_t o = (size_t)snprintf(buf, n, "[");
	for (int d = 0; d < ndim && o < n; d++)
		o += (size_t)snprintf(buf + o, n - o, "%s%lld", d ? ", " : "", (long long)shape[d]);
	if (o < n)
		snprintf(buf + o, n - o, "]");
}

/* ------------------------------------------------------------------ writing */
static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* First name occurring twice, NULL if none (or out of memory: *oom). */
static const char *first_duplicate(const char *const *names, int n, bool *oom)
{
	*oom = false;
	if (n < 2)
		return NULL;
	const char **s = malloc((size_t)n * sizeof *s);
	if (!s) {
		*oom = true;
		return NULL;
	}
	memcpy(s, names, (size_t)n * sizeof *s);
	qsort(s, (size_t)n, sizeof *s, name_cmp);
	const char *dup = NULL;
	for (int i = 1; i < n && !dup; i++)
		if (!strcmp(s[i - 1], s[i]))
			dup = s[i];
	free(s);
	return dup;
}

static int check_write_args(const char *path, const struct px_st_entry *e, int n,
			    const char *const *mk, const char *const *mv, int n_meta,
			    int64_t *total, struct px_error *err)
{
	char b1[80];
	*total = 0;
	if (n < 0 || n_meta < 0 || (n && !e) || (n_meta && (!mk || !mv)))
		return px_error_set(err, PX_ERR_INVALID, "%s: bad tensor or metadata list", path);
	for (int i = 0; i < n; i++) {
		const char *nm = e[i].name;
		if (!nm || !*nm)
			return px_error_set(err, PX_ERR_INVALID, "%s: tensor %d has no name", path, i);
		if (!px_utf8_valid(nm, strlen(nm)))
			return px_error_set(err, PX_ERR_INVALID, "%s: tensor name '%s' is not valid UTF-8",
					    path, shown(nm, b1));
		if (!strcmp(nm, "__metadata__"))
			return px_error_set(err, PX_ERR_INVALID,
					    "%s: '__metadata__' is reserved, not a tensor name", path);
		if (e[i].ndim < 0 || e[i].ndim > PX_MAX_DIMS || (e[i].ndim && !e[i].shape))
			return px_error_set(err, PX_ERR_INVALID, "%s: tensor '%s' has %d dimensions",
					    path, shown(nm, b1), e[i].ndim);
		int64_t numel = 1;
		for (int d = 0; d < e[i].ndim; d++) {
			int64_t dim = e[i].shape[d];
			if (dim < 0 || (dim && numel > INT64_MAX / 4 / dim))
				return px_error_set(err, PX_ERR_INVALID,
						    "%s: tensor '%s' has a bad dimension %lld", path,
						    shown(nm, b1), (long long)dim);
			numel *= dim;
		}
		if (numel && !e[i].data)
			return px_error_set(err, PX_ERR_INVALID, "%s: tensor '%s' has no data", path,
					    shown(nm, b1));
		if (numel * 4 > INT64_MAX - *total)
			return px_error_set(err, PX_ERR_INVALID, "%s: tensors too large", path);
		*total += numel * 4;
	}
	for (int i = 0; i < n_meta; i++) {
		if (!mk[i] || !mv[i])
			return px_error_set(err, PX_ERR_INVALID, "%s: metadata entry %d is NULL", path, i);
		if (!px_utf8_valid(mk[i], strlen(mk[i])))
			return px_error_set(err, PX_ERR_INVALID, "%s: metadata key '%s' is not valid UTF-8",
					    path, shown(mk[i], b1));
		if (!px_utf8_valid(mv[i], strlen(mv[i])))
			return px_error_set(err, PX_ERR_INVALID,
					    "%s: metadata value of '%s' is not valid UTF-8", path,
					    shown(mk[i], b1));
	}
	bool oom;
	const char **names = malloc(((size_t)n + 1) * sizeof *names);
	if (!names)
		return px_error_set(err, PX_ERR_NOMEM, "%s: out of memory", path);
	for (int i = 0; i < n; i++)
		names[i] = e[i].name;
	const char *dup = first_duplicate(names, n, &oom);
	free(names);
	if (!oom && dup)
		return px_error_set(err, PX_ERR_INVALID, "%s: duplicate tensor name '%s'", path,
				    shown(dup, b1));
	if (!oom && (dup = first_duplicate(mk, n_meta, &oom)))
		return px_error_set(err, PX_ERR_INVALID, "%s: duplicate metadata key '%s'", path,
				    shown(dup, b1));
	if (oom)
		return px_error_set(err, PX_ERR_NOMEM, "%s: out of memory", path);
	return 0;
}

/* The header JSON, compact, __metadata__ first, tensors in order, padded with spaces so the
 * data buffer starts 8-byte aligned in the file. */
static char *build_header(const struct px_st_entry *e, int n, const char *const *mk,
			  const char *const *mv, int n_meta, size_t *len)
{
	struct px_sbuf b = {0};
	px_sbuf_add(&b, "{");
	if (n_meta) {
		px_sbuf_add(&b, "\"__metadata__\":{");
		for (int i = 0; i < n_meta; i++) {
			px_sbuf_add(&b, i ? "," : "");
			px_sbuf_add_json_str(&b, mk[i]);
			px_sbuf_add(&b, ":");
			px_sbuf_add_json_str(&b, mv[i]);
		}
		px_sbuf_add(&b, n ? "}," : "}");
	}
	int64_t off = 0;
	for (int i = 0; i < n; i++) {
		int64_t numel = 1;
		px_sbuf_add(&b, i ? "," : "");
		px_sbuf_add_json_str(&b, e[i].name);
		px_sbuf_add(&b, ":{\"dtype\":\"F32\",\"shape\":[");
		for (int d = 0; d < e[i].ndim; d++) {
			px_sbuf_addf(&b, "%s%lld", d ? "," : "", (long long)e[i].shape[d]);
			numel *= e[i].shape[d];
		}
		px_sbuf_addf(&b, "],\"data_offsets\":[%lld,%lld]}", (long long)off,
			     (long long)(off + numel * 4));
		off += numel * 4;
	}
	px_sbuf_add(&b, "}");
	while (!b.oom && b.len % 8)
		px_sbuf_add(&b, " ");
	if (b.oom) {
		px_sbuf_free(&b);
		return NULL;
	}
	*len = b.len;
	return b.s;
}

/* fsync the directory holding `path` so the rename is durable. */
static int sync_dir(const char *path, struct px_error *err)
{
	char *dir = px_strdup(path);
	if (!dir)
		return px_error_set(err, PX_ERR_NOMEM, "%s: out of memory", path);
	char *slash = strrchr(dir, '/');
	if (!slash)
		strcpy(dir, ".");
	else if (slash == dir)
		dir[1] = 0;
	else
		*slash = 0;
	int rc = 0;
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		/* a directory we may write but not read: the rename is done, durability is
		 * best-effort there */
		if (errno != EACCES)
			rc = px_error_set(err, PX_ERR_IO, "%s: cannot open directory '%s' to sync it: %s",
					  path, dir, strerror(errno));
	} else {
		if (fsync(fd) != 0 && errno != EINVAL && errno != ENOTSUP)
			rc = px_error_set(err, PX_ERR_IO, "%s: fsync of directory '%s' failed: %s",
					  path, dir, strerror(errno));
		close(fd);
	}
	free(dir);
	return rc;
}

int px_st_write(const char *path, const struct px_st_entry *e, int n,
		const char *const *meta_keys, const char *const *meta_vals, int n_meta,
		struct px_error *err)
{
	int64_t total;
	int rc = check_write_args(path, e, n, meta_keys, meta_vals, n_meta, &total, err);
	if (rc)
		return rc;
	size_t hlen;
	char *hdr = build_header(e, n, meta_keys, meta_vals, n_meta, &hlen);
	char *tmp = px_asprintf("%s.tmp.%ld", path, (long)getpid());
	FILE *f = NULL;
	bool created = false;
	if (!hdr || !tmp) {
		rc = px_error_set(err, PX_ERR_NOMEM, "%s: out of memory", path);
		goto fail;
	}
	/* O_EXCL: never write through a symlink or into someone else's file; a leftover temp
	 * file of ours (same pid, an earlier crash) is removed first. */
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
	if (fd < 0 && errno == EEXIST && unlink(tmp) == 0)
		fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
	if (fd < 0) {
		rc = px_error_set(err, PX_ERR_IO, "%s: cannot create temporary file '%s': %s", path,
				  tmp, strerror(errno));
		goto fail;
	}
	created = true;
	f = fdopen(fd, "wb");
	if (!f) {
		rc = px_error_set(err, PX_ERR_IO, "%s: %s", path, strerror(errno));
		close(fd);
		goto fail;
	}
	unsigned char le[8];
	for (int i = 0; i < 8; i++)
		le[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
	errno = 0;
	bool ok = fwrite(le, 1, 8, f) == 8 && fwrite(hdr, 1, hlen, f) == hlen;
	for (int i = 0; ok && i < n; i++) {
		size_t numel = 1;
		for (int d = 0; d < e[i].ndim; d++)
			numel *= (size_t)e[i].shape[d];
		if (numel)   /* an empty tensor may have data == NULL */
			ok = fwrite(e[i].data, sizeof(float), numel, f) == numel;
	}
	if (!ok || fflush(f) != 0) {
		rc = px_error_set(err, PX_ERR_IO, "%s: cannot write '%s': %s", path, tmp,
				  strerror(errno ? errno : EIO));
		goto fail;
	}
	if (fsync(fileno(f)) != 0) {
		rc = px_error_set(err, PX_ERR_IO, "%s: fsync of '%s' failed: %s", path, tmp,
				  strerror(errno));
		goto fail;
	}
	int closed = fclose(f);
	f = NULL;
	if (closed != 0) {
		rc = px_error_set(err, PX_ERR_IO, "%s: cannot close '%s': %s", path, tmp,
				  strerror(errno));
		goto fail;
	}
	if (rename(tmp, path) != 0) {
		rc = px_error_set(err, PX_ERR_IO, "%s: cannot rename '%s' over it: %s", path, tmp,
				  strerror(errno));
		goto fail;
	}
	created = false;
	rc = sync_dir(path, err);
	free(hdr);
	free(tmp);
	return rc;
fail:
	if (f)
		fclose(f);
	if (created)
		unlink(tmp);
	free(hdr);
	free(tmp);
	return rc;
}

/* ------------------------------------------------------------------ reading */
void px_st_close(struct px_st_file *f)
{
	if (!f)
		return;
	for (int i = 0; i < f->n; i++)
		free(f->t[i].name);
	for (int i = 0; i < f->n_meta; i++) {
		free(f->meta_k[i]);
		free(f->meta_v[i]);
	}
	free(f->t);
	free(f->by_name);
	free(f->meta_k);
	free(f->meta_v);
	free(f->blob);
	free(f);
}

static int read_all(int fd, char *buf, size_t n, const char *path, struct px_error *err)
{
	size_t got = 0;
	while (got < n) {
		ssize_t r = pread(fd, buf + got, n - got, (off_t)got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return px_error_set(err, PX_ERR_IO, "%s: read failed: %s", path, strerror(errno));
		if (r == 0)
			return px_error_set(err, PX_ERR_IO, "%s: short read (%zu of %zu bytes)", path,
					    got, n);
		got += (size_t)r;
	}
	return 0;
}

/* safetensors dtypes other than F32: known, but not something plexus loads. */
static bool known_dtype(const char *s)
{
	static const char *const known[] = {
		"BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2",
		"I16", "U16", "F16", "BF16", "I32", "U32", "F64", "I64", "U64", "C64", NULL,
	};
	for (int i = 0; known[i]; i++)
		if (!strcmp(s, known[i]))
			return true;
	return false;
}

/* Validate one tensor entry `j` named `name` against a data buffer of `dlen` bytes. */
static int parse_entry(const char *path, const char *name, const struct px_json *j,
		       uint64_t dlen, struct px_st_tensor *t, struct px_error *err)
{
	char b1[80], sh[200];
	const char *nm = shown(name, b1);
	if (!*name)
		return px_error_set(err, PX_ERR_CORRUPT, "%s: empty tensor name", path);
	if (j->type != PX_JSON_OBJECT)
		return px_error_set(err, PX_ERR_CORRUPT, "%s: entry of tensor '%s' is %s, not an object",
				    path, nm, a_type(j->type));
	for (int i = 0; i < j->n; i++)
		if (strcmp(j->k[i], "dtype") && strcmp(j->k[i], "shape") &&
		    strcmp(j->k[i], "data_offsets")) {
			char b2[80];
			return px_error_set(err, PX_ERR_CORRUPT,
					    "%s: unknown key '%s' in the entry of tensor '%s'", path,
					    shown(j->k[i], b2), nm);
		}
	const struct px_json *dt = px_json_get(j, "dtype");
	const struct px_json *sp = px_json_get(j, "shape");
	const struct px_json *of = px_json_get(j, "data_offsets");
	if (!dt || !sp || !of)
		return px_error_set(err, PX_ERR_CORRUPT, "%s: tensor '%s' has no '%s'", path, nm,
				    !dt ? "dtype" : !sp ? "shape" : "data_offsets");
	if (dt->type != PX_JSON_STRING)
		return px_error_set(err, PX_ERR_CORRUPT, "%s: dtype of tensor '%s' is %s, not a string",
				    path, nm, a_type(dt->type));
	if (strcmp(dt->s, "F32")) {
		char b2[80];
		if (known_dtype(dt->s))
			return px_error_set(err, PX_ERR_UNSUPPORTED,
					    "%s: unsupported dtype '%s' for tensor '%s' (plexus stores "
					    "float32 only)", path, dt->s, nm);
		return px_error_set(err, PX_ERR_CORRUPT, "%s: unknown dtype '%s' for tensor '%s'",
				    path, shown(dt->s, b2), nm);
	}
	if (sp->type != PX_JSON_ARRAY)
		return px_error_set(err, PX_ERR_CORRUPT, "%s: shape of tensor '%s' is %s, not an array",
				    path, nm, a_type(sp->type));
	if (sp->n > PX_MAX_DIMS)
		return px_error_set(err, PX_ERR_CORRUPT,
				    "%s: tensor '%s' has %d dimensions, more than %d", path, nm, sp->n,
				    PX_MAX_DIMS);
	uint64_t numel = 1;
	bool overflow = false;
	t->ndim = sp->n;
	for (int d = 0; d < sp->n; d++) {
		const struct px_json *x = &sp->v[d];
		if (x->type != PX_JSON_INT)
			return px_error_set(err, PX_ERR_CORRUPT,
					    "%s: dimension %d of tensor '%s' is %s, not an integer",
					    path, d, nm, a_type(x->type));
		if (x->i < 0)
			return px_error_set(err, PX_ERR_CORRUPT,
					    "%s: negative dimension %lld in the shape of tensor '%s'", path,
					    (long long)x->i, nm);
		t->shape[d] = x->i;
		/* bytes (numel * 4) must fit in 63 bits */
		if (x->i && numel > (uint64_t)INT64_MAX / 4 / (uint64_t)x->i)
			overflow = true;
		else
			numel *= (uint64_t)x->i;
	}
	shape_str(t->shape, t->ndim, sh, sizeof sh);
	if (overflow)
		return px_error_set(err, PX_ERR_CORRUPT,
				    "%s: shape %s of tensor '%s' has too many elements (overflow)", path,
				    sh, nm);
	if (of->type != PX_JSON_ARRAY || of->n != 2 || of->v[0].type != PX_JSON_INT ||
	    of->v[1].type != PX_JSON_INT || of->v[0].i < 0 || of->v[1].i < 0)
		return px_error_set(err, PX_ERR_CORRUPT,
				    "%s: data_offsets of tensor '%s' are not two non-negative integers",
				    path, nm);
	t->begin = (uint64_t)of->v[0].i;
	t->end = (uint64_t)of->v[1].i;
	if (t->begin > t->end)
		return px_error_set(err, PX_ERR_CORRUPT,
				    "%s: data_offsets [%llu, %llu] of tensor '%s' are reversed", path,
				    (unsigned long long)t->begin, (unsigned long long)t->end, nm);
	if (t->end > dlen)
		return px_error_set(err, PX_ERR_CORRUPT,
				    "%s: data_offsets [%llu, %llu] of tensor '%s' run past the end of "
				    "the data buffer (%llu bytes)", path, (unsigned long long)t->begin,
				    (unsigned long long)t->end, nm, (unsigned long long)dlen);
	if (t->end - t->begin != numel * 4)
		return px_error_set(err, PX_ERR_CORRUPT,
				    "%s: tensor '%s' of shape %s needs %llu bytes, its data_offsets "
				    "[%llu, %llu] hold %llu", path, nm, sh,
				    (unsigned long long)(numel * 4), (unsigned long long)t->begin,
				    (unsigned long long)t->end,
				    (unsigned long long)(t->end - t->begin));
	return 0;
}

static int parse_meta(const char *path, struct px_json *m, struct px_st_file *f,
		      struct px_error *err)
{
	if (m->type != PX_JSON_OBJECT)
		return px_error_set(err, PX_ERR_CORRUPT, "%s: __metadata__ is %s, not an object",
				    path, a_type(m->type));
	for (int i = 0; i < m->n; i++)
		if (m->v[i].type != PX_JSON_STRING) {
			char b1[80];
			return px_error_set(err, PX_ERR_CORRUPT,
					    "%s: __metadata__ value of '%s' is %s, not a string", path,
					    shown(m->k[i], b1), a_type(m->v[i].type));
		}
	f->meta_k = calloc((size_t)m->n + 1, sizeof *f->meta_k);
	f->meta_v = calloc((size_t)m->n + 1, sizeof *f->meta_v);
	if (!f->meta_k || !f->meta_v)
		return px_error_set(err, PX_ERR_NOMEM, "%s: out of memory", path);
	for (int i = 0; i < m->n; i++) {   /* take the strings from the JSON tree */
		f->meta_k[i] = m->k[i];
		f->meta_v[i] = m->v[i].s;
		m->k[i] = NULL;
		m->v[i].s = NULL;
		f->n_meta++;
	}
	return 0;
}

struct span {
	uint64_t begin, end;
	int idx;
};

static int span_cmp(const void *a, const void *b)
{
	const struct span *x = a, *y = b;
	if (x->begin != y->begin)
		return x->begin < y->begin ? -1 : 1;
	return (x->end > y->end) - (x->end < y->end);
}

struct nameref {
	const char *name;
	int idx;
};

static int nameref_cmp(const void *a, const void *b)
{
	return strcmp(((const struct nameref *)a)->name, ((const struct nameref *)b)->name);
}

/* The tensors must tile [0, dlen) exactly: sorted by offset, each begins where the one
 * before ends, and the last ends at dlen. */
static int check_tiling(const char *path, const struct px_st_file *f, uint64_t dlen,
			struct px_error *err)
{
	struct span *sp = malloc(((size_t)f->n + 1) * sizeof *sp);
	if (!sp)
		return px_error_set(err, PX_ERR_NOMEM, "%s: out of memory", path);
	for (int i = 0; i < f->n; i++)
		sp[i] = (struct span){f->t[i].begin, f->t[i].end, i};
	qsort(sp, (size_t)f->n, sizeof *sp, span_cmp);
	uint64_t cur = 0;
	int rc = 0;
	for (int i = 0; i < f->n && !rc; i++) {
		char b1[80], b2[80];
		const struct px_st_tensor *t = &f->t[sp[i].idx];
		if (t->begin < cur) {
			const struct px_st_tensor *p = &f->t[sp[i - 1].idx];
			rc = px_error_set(err, PX_ERR_CORRUPT,
					  "%s: tensors '%s' [%llu, %llu] and '%s' [%llu, %llu] overlap",
					  path, shown(p->name, b1), (unsigned long long)p->begin,
					  (unsigned long long)p->end, shown(t->name, b2),
					  (unsigned long long)t->begin, (unsigned long long)t->end);
		} else if (t->begin > cur) {
			rc = px_error_set(err, PX_ERR_CORRUPT,
					  "%s: hole in the data buffer: bytes [%llu, %llu) belong to no "
					  "tensor", path, (unsigned long long)cur,
					  (unsigned long long)t->begin);
		}
		cur = t->end;
	}
	free(sp);
	if (!rc && cur != dlen)
		rc = px_error_set(err, PX_ERR_CORRUPT,
				  "%s: %llu bytes after the last tensor: the data buffer is %llu "
				  "bytes, the tensors end at %llu", path,
				  (unsigned long long)(dlen - cur), (unsigned long long)dlen,
				  (unsigned long long)cur);
	return rc;
}

int px_st_open(const char *path, struct px_st_file **out, struct px_error *err)
{
	*out = NULL;
	struct px_json *root = NULL;
	struct px_st_file *f = NULL;
	int rc;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return px_error_set(err, PX_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
	struct stat st;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		rc = px_error_set(err, PX_ERR_IO, "%s: not a regular file", path);
		goto fail;
	}
	uint64_t size = (uint64_t)st.st_size;
	if (size < 8) {
		rc = px_error_set(err, PX_ERR_CORRUPT,
				  "%s: file is %llu bytes, too short for the 8-byte header length",
				  path, (unsigned long long)size);
		goto fail;
	}
	if (size > SIZE_MAX - 16) {
		rc = px_error_set(err, PX_ERR_IO, "%s: file too large", path);
		goto fail;
	}
	unsigned char le[8];
	rc = read_all(fd, (char *)le, 8, path, err);
	if (rc)
		goto fail;
	uint64_t hlen = 0;
	for (int i = 0; i < 8; i++)
		hlen |= (uint64_t)le[i] << (8 * i);
	/* never hlen + 8: it may overflow */
	if (hlen > size - 8) {
		rc = px_error_set(err, PX_ERR_CORRUPT, "%s: header length %llu exceeds the file size %llu",
				  path, (unsigned long long)hlen, (unsigned long long)size);
		goto fail;
	}
	if (hlen > PX_ST_MAX_HEADER) {
		rc = px_error_set(err, PX_ERR_CORRUPT,
				  "%s: header length %llu is over the limit of %u bytes", path,
				  (unsigned long long)hlen, PX_ST_MAX_HEADER);
		goto fail;
	}
	f = calloc(1, sizeof *f);
	if (!f || !(f->blob = malloc((size_t)size))) {
		rc = px_error_set(err, PX_ERR_NOMEM, "%s: out of memory reading %llu bytes", path,
				  (unsigned long long)size);
		goto fail;
	}
	rc = read_all(fd, f->blob, (size_t)size, path, err);
	if (rc)
		goto fail;
	close(fd);
	fd = -1;

	const char *hdr = f->blob + 8;
	uint64_t dlen = size - 8 - hlen;
	rc = px_json_parse(hdr, (size_t)hlen, NULL, &root, err);
	if (rc) {
		if (rc != PX_ERR_NOMEM) {
			char msg[PX_ERROR_MSG_MAX];
			memcpy(msg, err->msg, sizeof msg);
			rc = px_error_set(err, PX_ERR_CORRUPT, "%s: bad JSON header at line %d, column %d: %s",
					  path, err->line, err->col, msg);
		}
		goto fail;
	}
	if (root->type != PX_JSON_OBJECT) {
		rc = px_error_set(err, PX_ERR_CORRUPT, "%s: header is %s, not a JSON object", path,
				  a_type(root->type));
		goto fail;
	}
	f->t = calloc((size_t)root->n + 1, sizeof *f->t);
	f->by_name = calloc((size_t)root->n + 1, sizeof *f->by_name);
	if (!f->t || !f->by_name) {
		rc = px_error_set(err, PX_ERR_NOMEM, "%s: out of memory", path);
		goto fail;
	}
	for (int i = 0; i < root->n; i++) {
		if (!strcmp(root->k[i], "__metadata__")) {
			rc = parse_meta(path, &root->v[i], f, err);
			if (rc)
				goto fail;
			continue;
		}
		struct px_st_tensor *t = &f->t[f->n];
		rc = parse_entry(path, root->k[i], &root->v[i], dlen, t, err);
		if (rc)
			goto fail;
		t->name = root->k[i];   /* take it from the JSON tree */
		root->k[i] = NULL;
		f->n++;
	}
	rc = check_tiling(path, f, dlen, err);
	if (rc)
		goto fail;
	px_json_free(root);
	root = NULL;

	/* float access needs 4-byte alignment; malloc's block is aligned, so move the data
	 * down over the (parsed, no longer needed) header when 8 + hlen is not a multiple */
	size_t dstart = 8 + (size_t)hlen;
	size_t aligned = dstart & ~(size_t)3;
	if (aligned != dstart)
		memmove(f->blob + aligned, f->blob + dstart, (size_t)dlen);
	for (int i = 0; i < f->n; i++)
		f->t[i].data = (const float *)(void *)(f->blob + aligned + f->t[i].begin);

	struct nameref *nr = malloc(((size_t)f->n + 1) * sizeof *nr);
	if (!nr) {
		rc = px_error_set(err, PX_ERR_NOMEM, "%s: out of memory", path);
		goto fail;
	}
	for (int i = 0; i < f->n; i++)
		nr[i] = (struct nameref){f->t[i].name, i};
	qsort(nr, (size_t)f->n, sizeof *nr, nameref_cmp);
	for (int i = 0; i < f->n; i++)
		f->by_name[i] = nr[i].idx;
	free(nr);
	*out = f;
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	px_json_free(root);
	px_st_close(f);
	return rc;
}

int px_st_count(const struct px_st_file *f)
{
	return f->n;
}

const char *px_st_name(const struct px_st_file *f, int i)
{
	if (i < 0 || i >= f->n)
		return NULL;
	return f->t[i].name;
}

int px_st_find(const struct px_st_file *f, const char *name)
{
	int lo = 0, hi = f->n - 1;
	while (lo <= hi) {   /* binary search over the names in sorted order */
		int mid = lo + (hi - lo) / 2;
		int c = strcmp(f->t[f->by_name[mid]].name, name);
		if (!c)
			return f->by_name[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return -1;
}

const float *px_st_data(const struct px_st_file *f, int i, int *ndim, int64_t *shape)
{
	if (i < 0 || i >= f->n)
		return NULL;
	const struct px_st_tensor *t = &f->t[i];
	if (ndim)
		*ndim = t->ndim;
	if (shape)
		memcpy(shape, t->shape, (size_t)t->ndim * sizeof *shape);
	return t->data;
}

const char *px_st_meta(const struct px_st_file *f, const char *key)
{
	for (int i = 0; i < f->n_meta; i++)
		if (!strcmp(f->meta_k[i], key))
			return f->meta_v[i];
	return NULL;
}

int px_st_meta_count(const struct px_st_file *f)
{
	return f->n_meta;
}

const char *px_st_meta_key(const struct px_st_file *f, int i)
{
	if (i < 0 || i >= f->n_meta)
		return NULL;
	return f->meta_k[i];
}
