/* plexus — tensors, arenas, random numbers and BLAS glue.
 *
 * A tensor is float32, row-major, contiguous, with up to PX_MAX_DIMS dims; shape[0] is the
 * batch. Sequence tensors are [B, T, F] and may carry a lengths vector (int32[B], the number of
 * valid steps of each example); steps t >= lengths[b] are padding. Token ids and class labels
 * are stored as floats holding exact integers.
 *
 * Tensors never own their memory: they live in an arena (the model's arena for parameters,
 * a per-step arena for activations, reset at the start of each step). */
#ifndef PLEXUS_TENSOR_H
#define PLEXUS_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "plexus/error.h"  /* PX_API */

#ifdef __cplusplus
extern "C" {
#endif

#define PX_MAX_DIMS 6

/* A shape. During model building dim[0] (the batch) is -1: unknown until data arrives.
 * The slots past ndim travel with an output port's shape to its consumers unchanged (the
 * core copies whole structs): a layer may record build-time facts there, e.g. maxpool2d keeps
 * the pre-pool H, W in dim[4], dim[5] of its rank-4 `indices` port for maxunpool2d. */
struct px_shape {
	int ndim;
	int64_t dim[PX_MAX_DIMS];
};

struct px_tensor {
	float *data;              /* owned by an arena */
	int ndim;
	int64_t shape[PX_MAX_DIMS];
	const int32_t *lengths;   /* NULL, or [shape[0]] valid steps along dim 1; owned by an arena */
};

/* ---- arenas: bump allocators; px_arena_reset keeps the blocks for reuse ---- */
struct px_arena;
PX_API struct px_arena *px_arena_new(size_t block_bytes);
/* 64-byte aligned, uninitialised; NULL when out of memory. Valid until reset/free. */
PX_API void *px_arena_alloc(struct px_arena *a, size_t bytes);
PX_API void *px_arena_zalloc(struct px_arena *a, size_t bytes);
PX_API void px_arena_reset(struct px_arena *a);
PX_API void px_arena_free(struct px_arena *a);
PX_API size_t px_arena_used(const struct px_arena *a);

/* ---- tensors (all allocated zero-filled from the arena; NULL when out of memory) ---- */
PX_API struct px_tensor *px_tensor_new(struct px_arena *a, int ndim, const int64_t *shape);
PX_API struct px_tensor *px_tensor_new2(struct px_arena *a, int64_t d0, int64_t d1);
PX_API struct px_tensor *px_tensor_new3(struct px_arena *a, int64_t d0, int64_t d1, int64_t d2);
PX_API struct px_tensor *px_tensor_from_shape(struct px_arena *a, const struct px_shape *s);
/* Same shape and lengths pointer as `like`, zero data. */
PX_API struct px_tensor *px_tensor_like(struct px_arena *a, const struct px_tensor *like);
/* A view: shares `src->data`, new shape with the same element count (NULL if it differs). */
PX_API struct px_tensor *px_tensor_view(struct px_arena *a, const struct px_tensor *src, int ndim,
				 const int64_t *shape);
PX_API int64_t px_tensor_numel(const struct px_tensor *t);
PX_API int64_t px_shape_numel(const struct px_shape *s);  /* ignores a -1 batch: product of dims 1.. */
PX_API void px_tensor_shape(const struct px_tensor *t, struct px_shape *out);
/* Formats "[B,T,F]" ("?" for -1) into buf; returns buf. */
PX_API const char *px_shape_str(const struct px_shape *s, char *buf, size_t n);
/* Number of valid steps of example b: lengths[b] or shape[1]. */
static inline int64_t px_tensor_len(const struct px_tensor *t, int64_t b)
{
	return t->lengths ? (int64_t)t->lengths[b] : t->shape[1];
}

/* ---- random numbers: xoshiro256**, seeded by splitmix64; deterministic everywhere ---- */
struct px_rng {
	uint64_t s[4];
};
PX_API void px_rng_seed(struct px_rng *r, uint64_t seed);
/* Independent stream derived from a seed and a label (e.g. a node name). */
PX_API void px_rng_seed_label(struct px_rng *r, uint64_t seed, const char *label);
PX_API uint64_t px_rng_u64(struct px_rng *r);
PX_API double px_rng_uniform(struct px_rng *r);                  /* [0,1) */
PX_API float px_rng_uniform_range(struct px_rng *r, float lo, float hi);
PX_API double px_rng_normal(struct px_rng *r);                   /* N(0,1) */
PX_API uint64_t px_rng_below(struct px_rng *r, uint64_t n);      /* uniform in [0,n) */
PX_API void px_rng_fill_uniform(struct px_rng *r, float *x, int64_t n, float lo, float hi);

/* ---- BLAS glue (OpenBLAS through cblas), row-major ---- */
/* C[M,N] = alpha * op(A)[M,K] @ op(B)[K,N] + beta * C */
PX_API void px_gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
	     const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
	     int64_t ldc);
PX_API void px_axpy(int64_t n, float alpha, const float *x, float *y);  /* y += alpha x */
PX_API void px_scal(int64_t n, float alpha, float *x);                  /* x *= alpha */
PX_API float px_dot(int64_t n, const float *x, const float *y);
PX_API void px_set_threads(int n);   /* OpenBLAS threads; n <= 0: all cores */
PX_API int px_get_threads(void);

#ifdef __cplusplus
}
#endif
#endif
