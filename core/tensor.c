/* Arenas, tensors, random numbers and the BLAS glue. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

/* ------------------------------------------------------------------ arenas */
struct px_block {
	struct px_block *next;
	size_t size, used;
	unsigned char *mem;  /* 64-byte aligned */
};

struct px_arena {
	struct px_block *head;  /* current block first */
	size_t block_bytes;
	size_t total;           /* bytes handed out since the last reset */
	size_t peak;            /* most ever handed out between resets */
};

static struct px_block *block_new(size_t size)
{
	struct px_block *b = malloc(sizeof *b);
	if (!b)
		return NULL;
	size = (size + 63) & ~(size_t)63;
	b->mem = aligned_alloc(64, size);
	if (!b->mem) {
		free(b);
		return NULL;
	}
	b->size = size;
	b->used = 0;
	b->next = NULL;
	return b;
}

struct px_arena *px_arena_new(size_t block_bytes)
{
	struct px_arena *a = calloc(1, sizeof *a);
	if (!a)
		return NULL;
	a->block_bytes = block_bytes ? block_bytes : (size_t)1 << 20;
	return a;
}

void *px_arena_alloc(struct px_arena *a, size_t bytes)
{
	if (bytes > SIZE_MAX - 64)
		return NULL;
	size_t need = (bytes + 63) & ~(size_t)63;
	if (need == 0)
		need = 64;
	struct px_block *b = a->head;
	if (!b || b->size - b->used < need) {
		/* look for a later block (kept from before a reset) with room */
		struct px_block *prev = b, *it = b ? b->next : NULL;
		while (it && it->size - it->used < need) {
			prev = it;
			it = it->next;
		}
		if (it) {  /* move it to the front */
			prev->next = it->next;
			it->next = a->head;
			a->head = it;
			b = it;
		} else {
			size_t sz = need > a->block_bytes ? need : a->block_bytes;
			b = block_new(sz);
			if (!b)
				return NULL;
			b->next = a->head;
			a->head = b;
		}
	}
	void *p = b->mem + b->used;
	b->used += need;
	a->total += need;
	if (a->total > a->peak)
		a->peak = a->total;
	return p;
}

void *px_arena_zalloc(struct px_arena *a, size_t bytes)
{
	void *p = px_arena_alloc(a, bytes);
	if (p)
		memset(p, 0, bytes);
	return p;
}

void px_arena_reset(struct px_arena *a)
{
	if (!a)
		return;
	/* More than one block in use: replace them by one block of the peak size, so the next
	 * step (same shapes) allocates nothing. */
	if (a->head && a->head->next) {
		size_t peak = a->peak;
		struct px_block *b = a->head;
		while (b) {
			struct px_block *n = b->next;
			free(b->mem);
			free(b);
			b = n;
		}
		a->head = block_new(peak > a->block_bytes ? peak : a->block_bytes);
	} else if (a->head) {
		a->head->used = 0;
	}
	a->total = 0;
}

void px_arena_free(struct px_arena *a)
{
	if (!a)
		return;
	struct px_block *b = a->head;
	while (b) {
		struct px_block *n = b->next;
		free(b->mem);
		free(b);
		b = n;
	}
	free(a);
}

size_t px_arena_used(const struct px_arena *a)
{
	return a ? a->total : 0;
}

/* ------------------------------------------------------------------ tensors */
static bool numel_ok(int ndim, const int64_t *shape, int64_t *numel)
{
	int64_t n = 1;
	if (ndim < 0 || ndim > PX_MAX_DIMS)
		return false;
	for (int i = 0; i < ndim; i++) {
		if (shape[i] < 0)
			return false;
		if (shape[i] && n > INT64_MAX / 4 / shape[i])
			return false;
		n *= shape[i];
	}
	*numel = n;
	return true;
}

struct px_tensor *px_tensor_new(struct px_arena *a, int ndim, const int64_t *shape)
{
	int64_t n;
	if (!numel_ok(ndim, shape, &n) || (uint64_t)n > SIZE_MAX / sizeof(float))
		return NULL;
	struct px_tensor *t = px_arena_alloc(a, sizeof *t);
	if (!t)
		return NULL;
	memset(t, 0, sizeof *t);
	t->data = px_arena_zalloc(a, (size_t)n * sizeof(float));
	if (!t->data)
		return NULL;
	t->ndim = ndim;
	for (int i = 0; i < ndim; i++)
		t->shape[i] = shape[i];
	return t;
}

struct px_tensor *px_tensor_new2(struct px_arena *a, int64_t d0, int64_t d1)
{
	int64_t s[2] = {d0, d1};
	return px_tensor_new(a, 2, s);
}

struct px_tensor *px_tensor_new3(struct px_arena *a, int64_t d0, int64_t d1, int64_t d2)
{
	int64_t s[3] = {d0, d1, d2};
	return px_tensor_new(a, 3, s);
}

struct px_tensor *px_tensor_from_shape(struct px_arena *a, const struct px_shape *s)
{
	return px_tensor_new(a, s->ndim, s->dim);
}

struct px_tensor *px_tensor_like(struct px_arena *a, const struct px_tensor *like)
{
	struct px_tensor *t = px_tensor_new(a, like->ndim, like->shape);
	if (t)
		t->lengths = like->lengths;
	return t;
}

struct px_tensor *px_tensor_view(struct px_arena *a, const struct px_tensor *src, int ndim,
				 const int64_t *shape)
{
	int64_t n;
	if (!numel_ok(ndim, shape, &n) || n != px_tensor_numel(src))
		return NULL;
	struct px_tensor *t = px_arena_alloc(a, sizeof *t);
	if (!t)
		return NULL;
	memset(t, 0, sizeof *t);
	t->data = src->data;
	t->ndim = ndim;
	for (int i = 0; i < ndim; i++)
		t->shape[i] = shape[i];
	return t;
}

int64_t px_tensor_numel(const struct px_tensor *t)
{
	int64_t n = 1;
	for (int i = 0; i < t->ndim; i++)
		n *= t->shape[i];
	return n;
}

int64_t px_shape_numel(const struct px_shape *s)
{
	int64_t n = 1;
	for (int i = 1; i < s->ndim; i++)
		n *= s->dim[i];
	return n;
}

void px_tensor_shape(const struct px_tensor *t, struct px_shape *out)
{
	memset(out, 0, sizeof *out);
	out->ndim = t->ndim;
	for (int i = 0; i < t->ndim; i++)
		out->dim[i] = t->shape[i];
}

const char *px_shape_str(const struct px_shape *s, char *buf, size_t n)
{
	size_t used = 0;
	if (n == 0)
		return buf;
	buf[0] = 0;
	used += (size_t)snprintf(buf, n, "[");
	for (int i = 0; i < s->ndim && used < n; i++) {
		if (s->dim[i] < 0)
			used += (size_t)snprintf(buf + used, n - used, "%sB", i ? "," : "");
		else
			used += (size_t)snprintf(buf + used, n - used, "%s%lld", i ? "," : "",
						 (long long)s->dim[i]);
	}
	if (used < n)
		snprintf(buf + used, n - used, "]");
	return buf;
}

/* ------------------------------------------------------------------ rng */
static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

void px_rng_seed(struct px_rng *r, uint64_t seed)
{
	uint64_t x = seed;
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&x);
}

void px_rng_seed_label(struct px_rng *r, uint64_t seed, const char *label)
{
	px_rng_seed(r, seed ^ px_hash64(label, strlen(label), 0x5eed));
}

static inline uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

uint64_t px_rng_u64(struct px_rng *r)
{
	uint64_t *s = r->s;
	uint64_t res = rotl(s[1] * 5, 7) * 9;  /* xoshiro256** */
	uint64_t t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return res;
}

double px_rng_uniform(struct px_rng *r)
{
	return (double)(px_rng_u64(r) >> 11) * 0x1.0p-53;
}

float px_rng_uniform_range(struct px_rng *r, float lo, float hi)
{
	return lo + (hi - lo) * (float)px_rng_uniform(r);
}

double px_rng_normal(struct px_rng *r)
{
	/* Box-Muller; u1 in (0,1] so log is finite */
	double u1 = 1.0 - px_rng_uniform(r), u2 = px_rng_uniform(r);
	return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

uint64_t px_rng_below(struct px_rng *r, uint64_t n)
{
	if (n == 0)
		return 0;
	uint64_t lim = UINT64_MAX - UINT64_MAX % n;  /* rejection: no modulo bias */
	uint64_t x;
	do
		x = px_rng_u64(r);
	while (x >= lim);
	return x % n;
}

void px_rng_fill_uniform(struct px_rng *r, float *x, int64_t n, float lo, float hi)
{
	for (int64_t i = 0; i < n; i++)
		x[i] = px_rng_uniform_range(r, lo, hi);
}

/* ------------------------------------------------------------------ blas */
void px_gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
	     const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
	     int64_t ldc)
{
	if (m <= 0 || n <= 0)
		return;
	if (k <= 0) {  /* C = beta C */
		for (int64_t i = 0; i < m; i++)
			for (int64_t j = 0; j < n; j++)
				c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
		return;
	}
	cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
		    trans_b ? CblasTrans : CblasNoTrans, (blasint)m, (blasint)n, (blasint)k, alpha,
		    a, (blasint)lda, b, (blasint)ldb, beta, c, (blasint)ldc);
}

void px_axpy(int64_t n, float alpha, const float *x, float *y)
{
	for (int64_t i = 0; i < n; i++)
		y[i] += alpha * x[i];
}

void px_scal(int64_t n, float alpha, float *x)
{
	for (int64_t i = 0; i < n; i++)
		x[i] *= alpha;
}

float px_dot(int64_t n, const float *x, const float *y)
{
	double s = 0;
	for (int64_t i = 0; i < n; i++)
		s += (double)x[i] * y[i];
	return (float)s;
}

void px_set_threads(int n)
{
	if (n <= 0) {
		long c = sysconf(_SC_NPROCESSORS_ONLN);
		n = c > 0 ? (int)c : 1;
	}
	openblas_set_num_threads(n);
}

int px_get_threads(void)
{
	return openblas_get_num_threads();
}
