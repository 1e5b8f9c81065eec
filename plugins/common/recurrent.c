/* The sequence driver shared by the rnn, lstm and gru plugins (see recurrent.h). */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define PX_REC_X86 1
#endif

#include "recurrent.h"

enum readout { RO_SEQUENCE, RO_LAST, RO_MEAN, RO_MAX };
enum { IN_X, IN_H0, IN_C0 };
enum { OUT_OUT, OUT_SEQ, OUT_STATE, OUT_CELL };

static int64_t round_lanes(int64_t b)
{
	return (b + PX_REC_LANES - 1) / PX_REC_LANES * PX_REC_LANES;
}

static int64_t acc_floats(const struct px_rec_kind *k, int64_t P)
{
	return (int64_t)(k->gates > 1 ? k->gates : 1) * PX_REC_TILE * P;
}

/* ------------------------------------------------------------------ step kernels */

/* acc[i][:] (+)= sum_k w[i][k*ws] v[k][:] in plain C for any CPU: blocks of 4 rows x 16 lanes
 * whose sums stay in registers once the lane loop is vectorized */
PX_REC_SIMD static void mm_generic(int64_t rows, const float *const *w, int64_t ws, int64_t K,
				   const float *v, int64_t ldv, int64_t P, float *acc, bool add)
{
	for (int64_t i0 = 0; i0 < rows; i0 += 4) {
		int64_t nr = rows - i0 < 4 ? rows - i0 : 4;
		const float *w0 = w[i0], *w1 = w[i0 + (nr > 1)], *w2 = w[i0 + (nr > 2) * 2];
		const float *w3 = w[i0 + (nr > 3) * 3];  /* missing rows repeat row 0, unused */
		for (int64_t p0 = 0; p0 < P; p0 += 16) {
			float a[4][16] = {{0}};
			const float *vk = v + p0;
			for (int64_t k = 0, o = 0; k < K; k++, o += ws, vk += ldv) {
				float b0 = w0[o], b1 = w1[o], b2 = w2[o], b3 = w3[o];
				for (int q = 0; q < 16; q++) {
					a[0][q] += b0 * vk[q];
					a[1][q] += b1 * vk[q];
					a[2][q] += b2 * vk[q];
					a[3][q] += b3 * vk[q];
				}
			}
			for (int64_t i = 0; i < nr; i++)
				for (int q = 0; q < 16; q++) {
					float *d = acc + (i0 + i) * P + p0 + q;
					*d = add ? *d + a[i][q] : a[i][q];
				}
		}
	}
}

#ifdef PX_REC_X86
#define FMA16(n, x) a##n = _mm512_fmadd_ps(b, x, a##n)
/* 8 rows x 32 lanes in 16 zmm accumulators; a 16-lane tail in 8 */
__attribute__((target("avx512f"))) static void mm8_avx512(const float *const *w, int64_t ws,
							  int64_t K, const float *v, int64_t ldv,
							  int64_t P, float *acc, bool add)
{
	const float *w0 = w[0], *w1 = w[1], *w2 = w[2], *w3 = w[3];
	const float *w4 = w[4], *w5 = w[5], *w6 = w[6], *w7 = w[7];
	int64_t p0 = 0;
	for (; p0 + 32 <= P; p0 += 32) {
		__m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0;
		__m512 a6 = a0, a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0, a12 = a0, a13 = a0;
		__m512 a14 = a0, a15 = a0;
		const float *vk = v + p0;
		for (int64_t k = 0, o = 0; k < K; k++, o += ws, vk += ldv) {
			__m512 x = _mm512_loadu_ps(vk), y = _mm512_loadu_ps(vk + 16), b;
			b = _mm512_set1_ps(w0[o]);
			FMA16(0, x);
			FMA16(1, y);
			b = _mm512_set1_ps(w1[o]);
			FMA16(2, x);
			FMA16(3, y);
			b = _mm512_set1_ps(w2[o]);
			FMA16(4, x);
			FMA16(5, y);
			b = _mm512_set1_ps(w3[o]);
			FMA16(6, x);
			FMA16(7, y);
			b = _mm512_set1_ps(w4[o]);
			FMA16(8, x);
			FMA16(9, y);
			b = _mm512_set1_ps(w5[o]);
			FMA16(10, x);
			FMA16(11, y);
			b = _mm512_set1_ps(w6[o]);
			FMA16(12, x);
			FMA16(13, y);
			b = _mm512_set1_ps(w7[o]);
			FMA16(14, x);
			FMA16(15, y);
		}
		__m512 r[16] = {a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15};
		for (int i = 0; i < 8; i++)
			for (int h = 0; h < 2; h++) {
				float *d = acc + i * P + p0 + 16 * h;
				_mm512_storeu_ps(d, add ? _mm512_add_ps(_mm512_loadu_ps(d), r[2 * i + h])
							: r[2 * i + h]);
			}
	}
	if (p0 < P) {  /* 16 lanes */
		__m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0;
		__m512 a6 = a0, a7 = a0;
		const float *vk = v + p0;
		for (int64_t k = 0, o = 0; k < K; k++, o += ws, vk += ldv) {
			__m512 x = _mm512_loadu_ps(vk), b;
			b = _mm512_set1_ps(w0[o]);
			FMA16(0, x);
			b = _mm512_set1_ps(w1[o]);
			FMA16(1, x);
			b = _mm512_set1_ps(w2[o]);
			FMA16(2, x);
			b = _mm512_set1_ps(w3[o]);
			FMA16(3, x);
			b = _mm512_set1_ps(w4[o]);
			FMA16(4, x);
			b = _mm512_set1_ps(w5[o]);
			FMA16(5, x);
			b = _mm512_set1_ps(w6[o]);
			FMA16(6, x);
			b = _mm512_set1_ps(w7[o]);
			FMA16(7, x);
		}
		__m512 r[8] = {a0, a1, a2, a3, a4, a5, a6, a7};
		for (int i = 0; i < 8; i++) {
			float *d = acc + i * P + p0;
			_mm512_storeu_ps(d, add ? _mm512_add_ps(_mm512_loadu_ps(d), r[i]) : r[i]);
		}
	}
}
#undef FMA16

#define FMA8(n, x) a##n = _mm256_fmadd_ps(b, x, a##n)
/* 4 rows x 16 lanes in 8 ymm accumulators */
__attribute__((target("avx2,fma"))) static void mm4_avx2(const float *const *w, int64_t ws,
							 int64_t K, const float *v, int64_t ldv,
							 int64_t P, float *acc, bool add)
{
	const float *w0 = w[0], *w1 = w[1], *w2 = w[2], *w3 = w[3];
	for (int64_t p0 = 0; p0 < P; p0 += 16) {
		__m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0;
		__m256 a6 = a0, a7 = a0;
		const float *vk = v + p0;
		for (int64_t k = 0, o = 0; k < K; k++, o += ws, vk += ldv) {
			__m256 x = _mm256_loadu_ps(vk), y = _mm256_loadu_ps(vk + 8), b;
			b = _mm256_broadcast_ss(w0 + o);
			FMA8(0, x);
			FMA8(1, y);
			b = _mm256_broadcast_ss(w1 + o);
			FMA8(2, x);
			FMA8(3, y);
			b = _mm256_broadcast_ss(w2 + o);
			FMA8(4, x);
			FMA8(5, y);
			b = _mm256_broadcast_ss(w3 + o);
			FMA8(6, x);
			FMA8(7, y);
		}
		__m256 r[8] = {a0, a1, a2, a3, a4, a5, a6, a7};
		for (int i = 0; i < 4; i++)
			for (int h = 0; h < 2; h++) {
				float *d = acc + i * P + p0 + 8 * h;
				_mm256_storeu_ps(d, add ? _mm256_add_ps(_mm256_loadu_ps(d), r[2 * i + h])
							: r[2 * i + h]);
			}
	}
}
#undef FMA8
#endif

void px_rec_mm(const struct px_rec_run *r, int64_t rows, const float *const *w, int64_t ws,
	       int64_t K, const float *v, int64_t ldv, float *acc, bool add)
{
	int64_t i = 0, P = r->P;
#ifdef PX_REC_X86
	if (r->isa == PX_REC_AVX512)
		for (; i + 8 <= rows; i += 8)
			mm8_avx512(w + i, ws, K, v, ldv, P, acc + i * P, add);
	if (r->isa >= PX_REC_AVX2)
		for (; i + 4 <= rows; i += 4)
			mm4_avx2(w + i, ws, K, v, ldv, P, acc + i * P, add);
#endif
	if (i < rows)
		mm_generic(rows - i, w + i, ws, K, v, ldv, P, acc + i * P, add);
}

/* The best kernel this CPU runs, or PLEXUS_REC_ISA=generic|avx2|avx512 (for tests). */
static enum px_rec_isa pick_isa(void)
{
	enum px_rec_isa best = PX_REC_GENERIC;
#ifdef PX_REC_X86
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
		best = PX_REC_AVX2;
	if (__builtin_cpu_supports("avx512f"))
		best = PX_REC_AVX512;
#endif
	const char *e = getenv("PLEXUS_REC_ISA");
	if (e && !strcmp(e, "generic"))
		return PX_REC_GENERIC;
	if (e && !strcmp(e, "avx2") && best >= PX_REC_AVX2)
		return PX_REC_AVX2;
	return best;
}

/* ------------------------------------------------------------------ thread team */

/* Threads 1..n-1 sleep until a job starts; all n run it (see struct sched). */
struct px_rec_team {
	int n;
	pthread_t th[PX_REC_MAX_THREADS];
	pthread_mutex_t mu;
	pthread_cond_t start, done;
	uint64_t gen;
	int busy;
	bool quit;
	void (*fn)(void *ctx, int tid);
	void *ctx;
};

struct team_start {
	struct px_rec_team *tm;
	int tid;
};

static void *team_worker(void *arg)
{
	struct px_rec_team *tm = ((struct team_start *)arg)->tm;
	int tid = ((struct team_start *)arg)->tid;
	free(arg);
	uint64_t seen = 0;
	pthread_mutex_lock(&tm->mu);
	for (;;) {
		while (tm->gen == seen && !tm->quit)
			pthread_cond_wait(&tm->start, &tm->mu);
		if (tm->quit)
			break;
		seen = tm->gen;
		pthread_mutex_unlock(&tm->mu);
		tm->fn(tm->ctx, tid);
		pthread_mutex_lock(&tm->mu);
		if (--tm->busy == 0)
			pthread_cond_signal(&tm->done);
	}
	pthread_mutex_unlock(&tm->mu);
	return NULL;
}

static void team_free(struct px_rec_team *tm)
{
	if (!tm)
		return;
	pthread_mutex_lock(&tm->mu);
	tm->quit = true;
	pthread_cond_broadcast(&tm->start);
	pthread_mutex_unlock(&tm->mu);
	for (int i = 1; i < tm->n; i++)
		pthread_join(tm->th[i], NULL);
	pthread_mutex_destroy(&tm->mu);
	pthread_cond_destroy(&tm->start);
	pthread_cond_destroy(&tm->done);
	free(tm);
}

/* A team of n threads (the caller is thread 0); NULL when threads cannot be started. */
static struct px_rec_team *team_new(int n)
{
	struct px_rec_team *tm = calloc(1, sizeof *tm);
	if (!tm)
		return NULL;
	pthread_mutex_init(&tm->mu, NULL);
	pthread_cond_init(&tm->start, NULL);
	pthread_cond_init(&tm->done, NULL);
	tm->n = 1;
	for (int i = 1; i < n; i++) {
		struct team_start *s = malloc(sizeof *s);
		if (!s)
			break;
		s->tm = tm;
		s->tid = i;
		if (pthread_create(&tm->th[i], NULL, team_worker, s)) {
			free(s);
			break;
		}
		pthread_setname_np(tm->th[i], "px-rec-team");
		tm->n++;
	}
	if (tm->n < n) {
		team_free(tm);
		return NULL;
	}
	return tm;
}

/* Runs fn(ctx, tid) on every thread of the team, the caller as thread 0; returns when all
 * are done. */
static void team_run(struct px_rec_team *tm, void (*fn)(void *, int), void *ctx)
{
	pthread_mutex_lock(&tm->mu);
	tm->fn = fn;
	tm->ctx = ctx;
	tm->busy = tm->n - 1;
	tm->gen++;
	pthread_cond_broadcast(&tm->start);
	pthread_mutex_unlock(&tm->mu);
	fn(ctx, 0);
	pthread_mutex_lock(&tm->mu);
	while (tm->busy)
		pthread_cond_wait(&tm->done, &tm->mu);
	pthread_mutex_unlock(&tm->mu);
}

int64_t px_rec_hh_cols(const struct px_rec_run *r, int64_t j0, int64_t n, int64_t n0,
		       const float **w)
{
	int64_t GH = r->cfg->kind->gates * r->H;
	for (int64_t u = 0; u < n; u++)
		w[u] = r->wt ? r->wt + (j0 + u) * GH + n0 : r->w_hh + n0 * r->H + j0 + u;
	return r->wt ? 1 : r->H;
}

/* Threads for a step: OpenBLAS's count when a step is worth splitting, or exactly
 * PLEXUS_REC_THREADS (at most one per two tiles of units). */
static int threads_for(const struct px_rec_cfg *c, int64_t P)
{
	int64_t H = c->hidden, work = (int64_t)c->kind->gates * H * H * P;
	int64_t tiles = (H + PX_REC_TILE - 1) / PX_REC_TILE;
	const char *e = getenv("PLEXUS_REC_THREADS");
	int n = e && atoi(e) > 0 ? atoi(e) : px_get_threads();
	/* below ~4M multiply-adds a step, one barrier per step costs more than it saves (rnn
	 * H=256 B=32 ran 2x slower on 2 threads next to OpenBLAS's own spinning thread) */
	if (!(e && atoi(e) > 0) && work < ((int64_t)1 << 22))
		n = 1;
	if (n > PX_REC_MAX_THREADS)
		n = PX_REC_MAX_THREADS;
	if (n > tiles / 2)
		n = (int)(tiles / 2);
	return n < 1 ? 1 : n;
}

/* ------------------------------------------------------------------ small helpers */

/* dst[c*ldd + r] (+)= src[r*lds + c] for r < rows, c < cols (in 16x16 blocks) */
static void transpose(const float *src, int64_t rows, int64_t cols, int64_t lds, float *dst,
		      int64_t ldd, bool add)
{
	for (int64_t r0 = 0; r0 < rows; r0 += 16)
		for (int64_t c0 = 0; c0 < cols; c0 += 16) {
			int64_t r1 = r0 + 16 < rows ? r0 + 16 : rows, c1 = c0 + 16 < cols ? c0 + 16 : cols;
			for (int64_t c = c0; c < c1; c++)
				for (int64_t r = r0; r < r1; r++) {
					float v = src[r * lds + c];
					dst[c * ldd + r] = add ? dst[c * ldd + r] + v : v;
				}
		}
}

/* s[i] += sum of row i of a [rows][n] (row stride lda) */
PX_REC_SIMD static void row_sums(const float *a, int64_t rows, int64_t n, int64_t lda, float *s)
{
	for (int64_t i = 0; i < rows; i++) {
		const float *ai = a + i * lda;
		float part[16] = {0};
		int64_t j = 0;
		for (; j + 16 <= n; j += 16)
			for (int k = 0; k < 16; k++)
				part[k] += ai[j + k];
		float t = 0;
		for (int k = 0; k < 16; k++)
			t += part[k];
		for (; j < n; j++)
			t += ai[j];
		s[i] += t;
	}
}

void px_rec_grad_rows(const struct px_rec_run *r, int64_t rows, int64_t cols, const float *a,
		      const float *b, int64_t ldb, float *w, int64_t ldw, float *db)
{
	int64_t n = r->T * r->P;
	px_gemm(false, true, rows, cols, n, 1.0f, a, r->ld, b, ldb, 1.0f, w, ldw);
	if (db)
		row_sums(a, rows, n, r->ld, db);
}

void px_rec_grad_hh_plain(const struct px_rec_run *r, float *dw_hh, float *db_hh)
{
	int64_t GH = r->cfg->kind->gates * r->H;
	px_rec_grad_rows(r, GH, r->H, r->dg, r->h + (r->rev ? r->P : 0), r->lds, dw_hh, r->H,
			 db_hh);
}

static float *arena_floats(struct px_arena *a, int64_t n)
{
	return px_arena_alloc(a, (size_t)(n > 0 ? n : 1) * sizeof(float));
}

static float *arena_zfloats(struct px_arena *a, int64_t n)
{
	return px_arena_zalloc(a, (size_t)(n > 0 ? n : 1) * sizeof(float));
}

/* Zeros lanes [B, P) of every step of a [rows][T*P] matrix. */
static void zero_padding(float *m, int64_t rows, int64_t T, int64_t P, int64_t B)
{
	for (int64_t i = 0; B < P && i < rows * T; i++)
		memset(m + i * P + B, 0, (size_t)(P - B) * sizeof(float));
}

/* A tensor whose data the caller fills completely (px_tensor_new would zero it first). */
static struct px_tensor *tensor_raw(struct px_arena *a, int ndim, const int64_t *shape)
{
	struct px_tensor *t = px_arena_alloc(a, sizeof *t);
	int64_t n = 1;
	for (int i = 0; i < ndim; i++)
		n *= shape[i];
	if (!t || !(t->data = arena_floats(a, n)))
		return NULL;
	t->ndim = ndim;
	t->lengths = NULL;
	for (int i = 0; i < PX_MAX_DIMS; i++)
		t->shape[i] = i < ndim ? shape[i] : 0;
	return t;
}

/* ------------------------------------------------------------------ running a lane */

/* Work sharing over the unit tiles of a row of stages (the steps of a sequence, or their
 * phases): stage s+1 starts once every tile of stage s is done. Each thread has a range of
 * tiles it takes first (so its part of W_hh stays in its cache); then it helps with the other
 * ranges. A thread that is not running holds no tile, so nobody waits for it: at most for the
 * one tile a thread was descheduled in the middle of. */
struct sched {
	int n;                        /* threads */
	int64_t tiles, stages;
	int64_t start[PX_REC_MAX_THREADS + 1];   /* range of thread i: [start[i], start[i+1]) */
	struct {
		_Alignas(64) atomic_llong claimed;    /* tiles of this range claimed, all stages */
	} range[PX_REC_MAX_THREADS];
	_Alignas(64) atomic_llong done;         /* tiles completed, all stages (added per stage) */
	void (*work)(void *ctx, int64_t stage, int64_t j0, int64_t n, int tid);
	void *ctx;
	int64_t H;
};

static void sched_init(struct sched *s, int n, int64_t H, int64_t stages,
		       void (*work)(void *, int64_t, int64_t, int64_t, int), void *ctx)
{
	s->n = n;
	s->H = H;
	s->tiles = (H + PX_REC_TILE - 1) / PX_REC_TILE;
	s->stages = stages;
	for (int i = 0; i <= n; i++)
		s->start[i] = s->tiles * i / n;
	for (int i = 0; i < n; i++)
		atomic_init(&s->range[i].claimed, 0);
	atomic_init(&s->done, 0);
	s->work = work;
	s->ctx = ctx;
}

/* The next tile of range i in this stage, or -1 */
static int64_t sched_claim(struct sched *s, int i, int64_t stage)
{
	int64_t len = s->start[i + 1] - s->start[i];
	long long k = atomic_load(&s->range[i].claimed);
	while (k < (stage + 1) * len)
		if (atomic_compare_exchange_weak(&s->range[i].claimed, &k, k + 1))
			return s->start[i] + k - stage * len;
	return -1;
}

static void sched_wait(struct sched *s, int64_t target)
{
	for (unsigned spin = 0; atomic_load(&s->done) < target; spin++) {
		if (spin < 4096) {
#ifdef PX_REC_X86
			_mm_pause();
#endif
		} else {
			sched_yield();  /* a loaded machine: let the others run */
		}
	}
}

static void sched_job(void *ctx, int tid)
{
	struct sched *s = ctx;
	for (int64_t st = 0; st < s->stages; st++) {
		int64_t did = 0, tile;
		for (int i = 0; i < s->n; i++) {
			int range = (tid + i) % s->n;
			while ((tile = sched_claim(s, range, st)) >= 0) {
				int64_t j0 = tile * PX_REC_TILE;
				s->work(s->ctx, st, j0, s->H - j0 < PX_REC_TILE ? s->H - j0 : PX_REC_TILE,
					tid);
				did++;
			}
		}
		atomic_fetch_add(&s->done, did);  /* once per stage: the counter is shared */
		sched_wait(s, (st + 1) * s->tiles);
	}
}

/* Runs `stages` stages of work over the unit tiles of r, on r's team or on the caller. */
static void run_stages(const struct px_rec_run *r, int64_t stages,
		       void (*work)(void *, int64_t, int64_t, int64_t, int), void *ctx)
{
	struct sched s;
	int n = r->threads > 1 && r->team ? r->threads : 1;
	sched_init(&s, n, r->H, stages, work, ctx);
	if (n > 1)
		team_run(r->team, sched_job, &s);
	else
		sched_job(&s, 0);
}

/* forward: stage = step (in the order the direction runs) x phase */
static void fwd_work(void *ctx, int64_t stage, int64_t j0, int64_t n, int tid)
{
	const struct px_rec_run *r = ctx;
	int ph = r->cfg->kind->phases(r->cfg);
	int64_t s = stage / ph, t = r->rev ? r->T - 1 - s : s;
	r->cfg->kind->step(r, t, (int)(stage % ph), j0, n, r->acc + tid * r->acc_floats);
}

static void lane_forward_steps(const struct px_rec_run *r)
{
	run_stages(r, r->T * r->cfg->kind->phases(r->cfg), fwd_work, (void *)r);
}

struct bwd_job {
	const struct px_rec_run *r;
	int64_t tbptt;
	bool want_init;    /* also the W_hh path into the initial state (added into ch) */
};

/* No gradient flows from later(t) into t across a tbptt chunk boundary (times % K == 0). */
static bool tbptt_cut(const struct bwd_job *j, int64_t t)
{
	return j->tbptt > 0 && (j->r->rev ? t : t + 1) % j->tbptt == 0;
}

/* backward: stage 0 packs W_hh^T, then step (in reverse order of forward) x phase, then (when
 * wanted) the W_hh path into the initial state */
static void bwd_work(void *ctx, int64_t stage, int64_t j0, int64_t n, int tid)
{
	const struct bwd_job *j = ctx;
	const struct px_rec_run *r = j->r;
	const struct px_rec_kind *k = r->cfg->kind;
	int64_t T = r->T, P = r->P, GH = k->gates * r->H;
	int ph = k->phases(r->cfg);
	float *acc = r->acc + tid * r->acc_floats;
	if (stage == 0) {  /* W_hh^T rows of these units */
		transpose(r->w_hh + j0, GH, n, r->H, r->wt + j0 * GH, GH, false);
		return;
	}
	int64_t s = T - 1 - (stage - 1) / ph, t = r->rev ? T - 1 - s : s;
	if (s < 0) {  /* after the last step: + the W_hh path of the initial state */
		t = r->rev ? T - 1 : 0;
		k->grad_state(r, t, j0, n, acc);
		for (int64_t i = 0; i < n * P; i++)
			r->ch[j0 * P + i] += acc[i];
		return;
	}
	bool first = s == T - 1;
	k->step_backward(r, t, (int)((stage - 1) % ph), first, !first && tbptt_cut(j, t), j0, n, acc,
			 r->sq ? r->sq + tid * T + t : NULL);
}

static void lane_backward_steps(const struct px_rec_run *r, int64_t tbptt, bool want_init)
{
	struct bwd_job j = {.r = r, .tbptt = tbptt, .want_init = want_init};
	int64_t stages = 1 + r->T * r->cfg->kind->phases(r->cfg) + (want_init && r->T > 0);
	run_stages(r, stages, bwd_work, &j);
}

/* ------------------------------------------------------------------ the layer */

/* What one layer and direction kept from the last forward (step arena). */
struct lane {
	float *g, *aux, *h, *c;
};

struct px_rec {
	struct px_rec_cfg cfg;
	int64_t input, hidden, gates, layers, dirs;
	float dropout;
	enum readout readout;
	bool stateful;
	int64_t tbptt;
	int n_state;
	enum px_rec_isa isa;
	struct px_param **w_ih, **w_hh, **b_ih, **b_hh;  /* [layers*dirs] */
	struct lane *lanes;                               /* [layers*dirs] */
	float **x;      /* [layers]: input of each layer, [F_l][T*P] */
	float **drop;   /* [layers]: dropout mask on layer l's output, or NULL */
	float *mask;    /* [T][P] valid lanes */
	float *bias;    /* [layers*dirs][G*H] folded biases of this forward */
	float *acc;     /* step-kernel scratch of this forward */
	int threads;
	struct px_rec_team *team;
	int64_t batch, steps, P;
	const int32_t *len;
	int32_t *argmax;/* readout max: [B][D*H] */
	/* stateful: [n_state][layers*dirs][B][H], malloc'ed; carry_batch 0 = nothing carried */
	float *carry;
	int64_t carry_batch, carry_cap;
};

static int declare(struct px_build *b, const char *name, int64_t rows, int64_t cols,
		   float bound, struct px_param **out, struct px_error *err)
{
	int64_t shape[2] = {rows, cols};
	*out = px_build_param(b, name, cols ? 2 : 1, shape, err);
	if (!*out)
		return err->code ? err->code : PX_ERR_NOMEM;
	px_init_uniform((*out)->value, b->rng, bound);
	return 0;
}

/* "h0 must be [B,2,8] (batch, layers*directions, hidden), got [B,3,8]" */
static int check_state_port(struct px_rec *r, struct px_build *b, int port, const char *name,
			    struct px_error *err)
{
	if (b->n_in <= port || b->in[port].ndim == 0)
		return 0;
	const struct px_shape *s = &b->in[port];
	struct px_shape want = {3, {-1, r->layers * r->dirs, r->hidden}};
	if (s->ndim == 3 && s->dim[1] == want.dim[1] && s->dim[2] == want.dim[2])
		return 1;
	char a[64], w[64];
	return px_build_error(b, err, PX_ERR_SHAPE,
			      "%s must be %s (batch, layers*directions, hidden), got %s", name,
			      px_shape_str(&want, w, sizeof w), px_shape_str(s, a, sizeof a));
}

int px_rec_create(const struct px_rec_kind *kind, struct px_build *b, void **self,
		  struct px_shape *out, struct px_error *err)
{
	const struct px_config *opt = b->cfg;
	const struct px_shape *x = &b->in[IN_X];
	char buf[64];
	int rc;
	*self = NULL;
	if (x->ndim != 3)
		return px_build_error(b, err, PX_ERR_SHAPE, "%s expects a sequence [B,T,F], got %s",
				      kind->name, px_shape_str(x, buf, sizeof buf));
	if (x->dim[2] < 1)
		return px_build_error(b, err, PX_ERR_SHAPE, "input has no features: %s",
				      px_shape_str(x, buf, sizeof buf));
	struct px_rec *r = calloc(1, sizeof *r);
	if (!r)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	r->cfg.kind = kind;
	r->cfg.hidden = r->hidden = px_config_int(opt, "hidden");
	if (kind->configure)
		kind->configure(opt, &r->cfg);
	r->input = x->dim[2];
	r->gates = kind->gates;
	r->n_state = kind->n_state;
	r->layers = px_config_int(opt, "layers");
	r->dirs = px_config_bool(opt, "bidirectional") ? 2 : 1;
	r->dropout = (float)px_config_float(opt, "dropout");
	const char *ro = px_config_str(opt, "readout");
	r->readout = !strcmp(ro, "last") ? RO_LAST : !strcmp(ro, "mean") ? RO_MEAN
		   : !strcmp(ro, "max") ? RO_MAX : RO_SEQUENCE;
	r->stateful = px_config_bool(opt, "stateful");
	r->tbptt = px_config_int(opt, "tbptt");
	r->isa = pick_isa();
	int has_h0 = check_state_port(r, b, IN_H0, "h0", err);
	int has_c0 = kind->n_state > 1 ? check_state_port(r, b, IN_C0, "c0", err) : 0;
	if (has_h0 < 0 || has_c0 < 0) {
		rc = has_h0 < 0 ? has_h0 : has_c0;
		goto fail;
	}
	if (r->stateful && (has_h0 || has_c0)) {
		rc = px_build_error(b, err, PX_ERR_INVALID,
				    "stateful carries its own initial state: connect no %s input",
				    has_h0 ? "h0" : "c0");
		goto fail;
	}

	int64_t nl = r->layers * r->dirs, gh = r->gates * r->hidden;
	r->w_ih = calloc((size_t)nl, sizeof *r->w_ih);
	r->w_hh = calloc((size_t)nl, sizeof *r->w_hh);
	r->b_ih = calloc((size_t)nl, sizeof *r->b_ih);
	r->b_hh = calloc((size_t)nl, sizeof *r->b_hh);
	r->lanes = calloc((size_t)nl, sizeof *r->lanes);
	r->x = calloc((size_t)r->layers, sizeof *r->x);
	r->drop = calloc((size_t)r->layers, sizeof *r->drop);
	if (!r->w_ih || !r->w_hh || !r->b_ih || !r->b_hh || !r->lanes || !r->x || !r->drop) {
		rc = px_error_set(err, PX_ERR_NOMEM, "out of memory");
		goto fail;
	}
	/* PyTorch's names, order and init: U(-1/sqrt(H), 1/sqrt(H)) for every tensor */
	float bound = 1.0f / sqrtf((float)r->hidden);
	for (int64_t l = 0; l < r->layers; l++) {
		int64_t in = l == 0 ? r->input : r->dirs * r->hidden;
		for (int64_t d = 0; d < r->dirs; d++) {
			int64_t ld = l * r->dirs + d;
			const char *sfx = d ? "_reverse" : "";
			char nm[64];
			snprintf(nm, sizeof nm, "weight_ih_l%lld%s", (long long)l, sfx);
			if ((rc = declare(b, nm, gh, in, bound, &r->w_ih[ld], err)))
				goto fail;
			snprintf(nm, sizeof nm, "weight_hh_l%lld%s", (long long)l, sfx);
			if ((rc = declare(b, nm, gh, r->hidden, bound, &r->w_hh[ld], err)))
				goto fail;
			snprintf(nm, sizeof nm, "bias_ih_l%lld%s", (long long)l, sfx);
			if ((rc = declare(b, nm, gh, 0, bound, &r->b_ih[ld], err)))
				goto fail;
			snprintf(nm, sizeof nm, "bias_hh_l%lld%s", (long long)l, sfx);
			if ((rc = declare(b, nm, gh, 0, bound, &r->b_hh[ld], err)))
				goto fail;
			if (kind->init_bias)
				kind->init_bias(opt, r->hidden, r->b_ih[ld]->value->data);
		}
	}

	int64_t dh = r->dirs * r->hidden;
	out[OUT_OUT] = r->readout == RO_SEQUENCE ? (struct px_shape){3, {-1, x->dim[1], dh}}
						 : (struct px_shape){2, {-1, dh}};
	out[OUT_SEQ] = (struct px_shape){3, {-1, x->dim[1], dh}};
	out[OUT_STATE] = (struct px_shape){3, {-1, nl, r->hidden}};
	if (r->n_state > 1)
		out[OUT_CELL] = out[OUT_STATE];
	*self = r;
	return 0;
fail:
	px_rec_destroy(r);
	return rc;
}

void px_rec_destroy(void *self)
{
	struct px_rec *r = self;
	if (!r)
		return;
	team_free(r->team);
	free(r->w_ih);
	free(r->w_hh);
	free(r->b_ih);
	free(r->b_hh);
	free(r->lanes);
	free(r->x);
	free(r->drop);
	free(r->carry);
	free(r);
}

void px_rec_reset_state(void *self)
{
	struct px_rec *r = self;
	r->carry_batch = 0;
}

/* The run of lane (l, d) over the last forward's buffers. */
static void lane_run(const struct px_rec *r, int64_t l, int64_t d, struct px_rec_run *run)
{
	int64_t ld = l * r->dirs + d, GH = r->gates * r->hidden;
	const struct lane *ln = &r->lanes[ld];
	*run = (struct px_rec_run){
		.cfg = &r->cfg, .T = r->steps, .P = r->P, .H = r->hidden, .ld = r->steps * r->P,
		.lds = (r->steps + 1) * r->P, .rev = d == 1, .mask = r->mask,
		.w_hh = r->w_hh[ld]->value->data, .b_hh = r->b_hh[ld]->value->data,
		.bias = r->bias + ld * GH, .g = ln->g, .aux = ln->aux, .h = ln->h, .c = ln->c,
		.isa = r->isa, .threads = r->threads, .team = r->team, .acc = r->acc,
		.acc_floats = acc_floats(r->cfg.kind, r->P),
	};
}

/* Copies a lane's initial state into column block `col` of S [H][(T+1)*P]: from the h0/c0
 * input [B, L*D, H], the stateful carry, or zeros. */
static void initial_state(const struct px_rec *r, const struct px_tensor *in, int s, int64_t ld,
			  float *S, int64_t col)
{
	int64_t B = r->batch, H = r->hidden, P = r->P, nl = r->layers * r->dirs;
	int64_t lds = (r->steps + 1) * P;
	for (int64_t j = 0; j < H; j++)
		memset(S + j * lds + col * P, 0, (size_t)P * sizeof(float));
	if (in)
		transpose(in->data + ld * H, B, H, nl * H, S + col * P, lds, false);
	else if (r->stateful && r->carry_batch == B)
		transpose(r->carry + ((int64_t)s * nl + ld) * B * H, B, H, H, S + col * P, lds, false);
}

static int lane_forward(struct px_rec *r, int64_t l, int64_t d, int64_t F, float *Y,
			const struct px_tensor *h0, const struct px_tensor *c0, struct px_arena *a)
{
	const struct px_rec_kind *k = r->cfg.kind;
	int64_t T = r->steps, P = r->P, H = r->hidden, GH = r->gates * H, ld = l * r->dirs + d;
	struct lane *ln = &r->lanes[ld];
	ln->g = arena_floats(a, GH * T * P);
	ln->aux = k->uses_aux(&r->cfg) ? arena_floats(a, H * T * P) : NULL;
	ln->h = arena_floats(a, H * (T + 1) * P);
	ln->c = r->n_state > 1 ? arena_floats(a, H * (T + 1) * P) : NULL;
	if (!ln->g || (k->uses_aux(&r->cfg) && !ln->aux) || !ln->h || (r->n_state > 1 && !ln->c))
		return PX_ERR_NOMEM;
	float *bias = r->bias + ld * GH;
	const float *b_ih = r->b_ih[ld]->value->data, *b_hh = r->b_hh[ld]->value->data;
	int64_t fold = k->folded_hh_bias(&r->cfg);
	for (int64_t j = 0; j < GH; j++)
		bias[j] = b_ih[j] + (j < fold ? b_hh[j] : 0.0f);
	/* g = W_ih x for all steps in one GEMM */
	px_gemm(false, false, GH, T * P, F, 1.0f, r->w_ih[ld]->value->data, F, r->x[l], T * P, 0.0f,
		ln->g, T * P);
	initial_state(r, h0, 0, ld, ln->h, d ? T : 0);
	if (ln->c)
		initial_state(r, c0, 1, ld, ln->c, d ? T : 0);
	struct px_rec_run run;
	lane_run(r, l, d, &run);
	run.y = Y + d * H * T * P;
	lane_forward_steps(&run);
	return 0;
}

/* The final state of lane ld (after its last step): column block of S. */
static int64_t final_col(const struct px_rec *r, int64_t ld)
{
	return ld % r->dirs ? 0 : r->steps;
}

/* out = readout of the sequence output seq [B][T][D*H] (not RO_SEQUENCE) */
static void readout_forward(struct px_rec *r, const float *seq, float *out)
{
	int64_t B = r->batch, T = r->steps, H = r->hidden, DH = r->dirs * H;
	memset(out, 0, (size_t)(B * DH) * sizeof(float));
	for (int64_t b = 0; b < B; b++) {
		int64_t n = r->len ? r->len[b] : T;
		const float *sb = seq + b * T * DH;
		float *o = out + b * DH;
		if (n == 0)
			continue;
		switch (r->readout) {
		case RO_LAST:  /* forward state at the last valid step, backward state at step 0 */
			memcpy(o, sb + (n - 1) * DH, (size_t)H * sizeof(float));
			if (r->dirs > 1)
				memcpy(o + H, sb + H, (size_t)H * sizeof(float));
			break;
		case RO_MEAN:  /* mean over valid steps */
			for (int64_t t = 0; t < n; t++)
				for (int64_t j = 0; j < DH; j++)
					o[j] += sb[t * DH + j];
			for (int64_t j = 0; j < DH; j++)
				o[j] /= (float)n;
			break;
		case RO_MAX: {  /* max over valid steps, argmax kept for backward */
			int32_t *am = r->argmax + b * DH;
			for (int64_t j = 0; j < DH; j++) {
				o[j] = sb[j];
				am[j] = 0;
			}
			for (int64_t t = 1; t < n; t++)
				for (int64_t j = 0; j < DH; j++)
					if (sb[t * DH + j] > o[j]) {
						o[j] = sb[t * DH + j];
						am[j] = (int32_t)t;
					}
			break;
		}
		case RO_SEQUENCE:
			break;
		}
	}
}

static int check_inputs(const struct px_rec *r, const struct px_tensor *x,
			const struct px_tensor *h0, const struct px_tensor *c0,
			struct px_error *err)
{
	const char *kn = r->cfg.kind->name;
	int64_t H = r->hidden, nl = r->layers * r->dirs;
	if (x->ndim != 3 || x->shape[2] != r->input)
		return px_error_set(err, PX_ERR_SHAPE, "%s expects a sequence [B,T,%lld], got %d dims "
				    "with %lld features", kn, (long long)r->input, x->ndim,
				    (long long)(x->ndim > 2 ? x->shape[2] : 0));
	int64_t B = x->shape[0], T = x->shape[1];
	for (int s = 0; s < 2; s++) {
		const struct px_tensor *st = s ? c0 : h0;
		if (st && (st->ndim != 3 || st->shape[0] != B || st->shape[1] != nl ||
			   st->shape[2] != H)) {
			struct px_shape want = {3, {B, nl, H}}, got;
			char a[64], w[64];
			px_tensor_shape(st, &got);
			return px_error_set(err, PX_ERR_SHAPE, "%s: %s must be %s, got %s", kn,
					    s ? "c0" : "h0", px_shape_str(&want, w, sizeof w),
					    px_shape_str(&got, a, sizeof a));
		}
	}
	for (int64_t b = 0; x->lengths && b < B; b++)
		if (x->lengths[b] < 0 || x->lengths[b] > T)
			return px_error_set(err, PX_ERR_SHAPE, "%s: example %lld has length %d, "
					    "outside [0, %lld]", kn, (long long)b, x->lengths[b],
					    (long long)T);
	return 0;
}

/* Per-forward buffers shared by the lanes, and the thread team. */
static int forward_setup(struct px_rec *r, const struct px_tensor *x, struct px_arena *a)
{
	int64_t B = x->shape[0], T = x->shape[1], P = round_lanes(B);
	r->batch = B;
	r->steps = T;
	r->P = P;
	r->len = x->lengths;
	r->threads = threads_for(&r->cfg, P);
	if (r->threads > 1 && (!r->team || r->team->n != r->threads)) {
		team_free(r->team);
		r->team = team_new(r->threads);
		if (!r->team)
			r->threads = 1;  /* no threads to be had: run on the caller */
	}
	r->mask = arena_zfloats(a, T * P);
	r->bias = arena_floats(a, r->layers * r->dirs * r->gates * r->hidden);
	r->acc = arena_floats(a, r->threads * acc_floats(r->cfg.kind, P));
	r->x[0] = arena_floats(a, r->input * T * P);
	if (!r->mask || !r->bias || !r->acc || !r->x[0])
		return PX_ERR_NOMEM;
	for (int64_t t = 0; t < T; t++)
		for (int64_t b = 0; b < B; b++)
			r->mask[t * P + b] = t < (x->lengths ? x->lengths[b] : T) ? 1.0f : 0.0f;
	for (int64_t t = 0; t < T; t++)  /* x [B][T][F] -> [F][T*P] */
		transpose(x->data + t * r->input, B, r->input, T * r->input, r->x[0] + t * P, T * P,
			  false);
	zero_padding(r->x[0], r->input, T, P, B);
	return 0;
}

int px_rec_forward(void *self, struct px_fwd *f, struct px_error *err)
{
	struct px_rec *r = self;
	const struct px_rec_kind *k = r->cfg.kind;
	const struct px_tensor *x = f->in[IN_X];
	const struct px_tensor *h0 = f->n_in > IN_H0 ? f->in[IN_H0] : NULL;
	const struct px_tensor *c0 = r->n_state > 1 && f->n_in > IN_C0 ? f->in[IN_C0] : NULL;
	struct px_arena *a = f->arena;
	int64_t H = r->hidden, nl = r->layers * r->dirs, DH = r->dirs * H;
	int rc = check_inputs(r, x, h0, c0, err);
	if (rc)
		return rc;
	if (r->stateful && r->carry_batch != x->shape[0])
		r->carry_batch = 0;  /* a new batch size starts a new stream */
	if (forward_setup(r, x, a))
		goto nomem;
	int64_t B = r->batch, T = r->steps, P = r->P;
	float *Y = NULL;
	for (int64_t l = 0; l < r->layers; l++) {
		int64_t F = l == 0 ? r->input : DH;
		Y = arena_floats(a, DH * T * P);
		if (!Y)
			goto nomem;
		for (int64_t d = 0; d < r->dirs; d++)
			if (lane_forward(r, l, d, F, Y, h0, c0, a))
				goto nomem;
		r->drop[l] = NULL;
		if (l == r->layers - 1)
			break;
		if (f->train && r->dropout > 0) {  /* inverted dropout: y * m, m in {0, 1/(1-p)} */
			float *m = arena_floats(a, DH * T * P);
			if (!m)
				goto nomem;
			float keep = r->dropout < 1 ? 1.0f / (1.0f - r->dropout) : 0.0f;
			for (int64_t i = 0; i < DH * T * P; i++) {
				m[i] = px_rng_uniform(f->rng) < r->dropout ? 0.0f : keep;
				Y[i] *= m[i];
			}
			r->drop[l] = m;
		}
		r->x[l + 1] = Y;
	}

	struct px_tensor *seq = tensor_raw(a, 3, (int64_t[]){B, T, DH});
	struct px_tensor *state = px_tensor_new3(a, B, nl, H);
	struct px_tensor *cell = r->n_state > 1 ? px_tensor_new3(a, B, nl, H) : NULL;
	if (!seq || !state || (r->n_state > 1 && !cell))
		goto nomem;
	seq->lengths = x->lengths;
	for (int64_t t = 0; t < T; t++)  /* [DH][T*P] -> [B][T][DH] */
		transpose(Y + t * P, DH, B, T * P, seq->data + t * DH, T * DH, false);
	struct px_tensor *out;
	if (r->readout == RO_SEQUENCE) {
		out = px_tensor_view(a, seq, 3, seq->shape);
		if (!out)
			goto nomem;
		out->lengths = x->lengths;
	} else {
		out = px_tensor_new2(a, B, DH);
		r->argmax = r->readout == RO_MAX ? px_arena_alloc(a, (size_t)(B * DH) * sizeof(int32_t))
						 : NULL;
		if (!out || (r->readout == RO_MAX && !r->argmax))
			goto nomem;
		readout_forward(r, seq->data, out->data);
	}
	for (int s = 0; s < r->n_state; s++) {
		struct px_tensor *dst = s ? cell : state;
		for (int64_t ld = 0; ld < nl; ld++) {
			const float *S = s ? r->lanes[ld].c : r->lanes[ld].h;
			transpose(S + final_col(r, ld) * P, H, B, (T + 1) * P, dst->data + ld * H,
				  nl * H, false);
		}
	}
	if (r->stateful) {  /* keep the final states for the next batch (detached) */
		int64_t need = r->n_state * nl * B * H;
		if (need > r->carry_cap) {  /* only when the batch size grows */
			float *c = realloc(r->carry, (size_t)need * sizeof(float));
			if (!c)
				goto nomem;
			r->carry = c;
			r->carry_cap = need;
		}
		for (int s = 0; s < r->n_state; s++)
			for (int64_t ld = 0; ld < nl; ld++)
				for (int64_t b = 0; b < B; b++)
					memcpy(r->carry + ((s * nl + ld) * B + b) * H,
					       (s ? cell : state)->data + (b * nl + ld) * H,
					       (size_t)H * sizeof(float));
		r->carry_batch = B;
	}
	f->out[OUT_OUT] = out;
	f->out[OUT_SEQ] = seq;
	f->out[OUT_STATE] = state;
	if (r->n_state > 1)
		f->out[OUT_CELL] = cell;
	return 0;
nomem:
	return px_error_set(err, PX_ERR_NOMEM, "%s: out of memory", k->name);
}

/* ------------------------------------------------------------------ backward */

/* dseq [B][T][D*H] += gradient of the readout output */
static void readout_backward(const struct px_rec *r, const float *dout, float *dseq)
{
	int64_t B = r->batch, T = r->steps, H = r->hidden, DH = r->dirs * H;
	for (int64_t b = 0; b < B; b++) {
		int64_t n = r->len ? r->len[b] : T;
		const float *g = dout + b * DH;
		float *db = dseq + b * T * DH;
		if (n == 0)
			continue;
		switch (r->readout) {
		case RO_LAST:
			for (int64_t j = 0; j < H; j++)
				db[(n - 1) * DH + j] += g[j];
			for (int64_t j = H; j < DH; j++)
				db[j] += g[j];
			break;
		case RO_MEAN:
			for (int64_t t = 0; t < n; t++)
				for (int64_t j = 0; j < DH; j++)
					db[t * DH + j] += g[j] / (float)n;
			break;
		case RO_MAX:
			for (int64_t j = 0; j < DH; j++)
				db[(int64_t)r->argmax[b * DH + j] * DH + j] += g[j];
			break;
		case RO_SEQUENCE:
			break;
		}
	}
}

/* Backward of lane (l, d): dY [D*H][T*P] is dLoss/d(output); adds dLoss/dX into dX
 * [F][T*P] (when non-NULL), into the parameter grads and into the h0/c0 grads. */
static int lane_backward(struct px_rec *r, int64_t l, int64_t d, const float *dY, int64_t F,
			 float *dX, const struct px_bwd *bw, double *sq, struct px_arena *a)
{
	const struct px_rec_kind *k = r->cfg.kind;
	int64_t B = r->batch, T = r->steps, P = r->P, H = r->hidden, GH = r->gates * H;
	int64_t ld = l * r->dirs + d, nl = r->layers * r->dirs;
	struct px_rec_run run;
	lane_run(r, l, d, &run);
	run.dy = dY + d * H * T * P;
	run.dg = arena_floats(a, GH * T * P);
	run.dgh = k->uses_dgh(&r->cfg) ? arena_floats(a, H * T * P) : NULL;
	run.ch = arena_zfloats(a, H * P);
	run.cc = r->n_state > 1 ? arena_zfloats(a, H * P) : NULL;
	run.blk[0] = arena_floats(a, GH * P);
	run.blk[1] = arena_floats(a, GH * P);
	run.wt = arena_floats(a, H * GH);
	run.sq = sq;
	if (!run.dg || (k->uses_dgh(&r->cfg) && !run.dgh) || !run.ch || (r->n_state > 1 && !run.cc) ||
	    !run.blk[0] || !run.blk[1] || !run.wt)
		return PX_ERR_NOMEM;
	/* the final states' gradients start the recurrence */
	for (int s = 0; s < r->n_state; s++) {
		const struct px_tensor *g = bw->d_out[s ? OUT_CELL : OUT_STATE];
		if (g)
			transpose(g->data + ld * H, B, H, nl * H, s ? run.cc : run.ch, P, false);
	}
	struct px_tensor *d_h0 = bw->n_in > IN_H0 ? bw->d_in[IN_H0] : NULL;
	struct px_tensor *d_c0 = r->n_state > 1 && bw->n_in > IN_C0 ? bw->d_in[IN_C0] : NULL;
	lane_backward_steps(&run, r->tbptt, d_h0 || d_c0);
	/* ch, cc now hold dLoss/d(initial state) */
	for (int s = 0; s < r->n_state; s++) {
		struct px_tensor *g = s ? d_c0 : d_h0;
		if (g)
			transpose(s ? run.cc : run.ch, H, B, P, g->data + ld * H, nl * H, true);
	}
	/* weight gradients: one GEMM over all steps each */
	px_rec_grad_rows(&run, GH, F, run.dg, r->x[l], T * P, r->w_ih[ld]->grad->data, F,
			 r->b_ih[ld]->grad->data);
	k->grad_hh(&run, r->w_hh[ld]->grad->data, r->b_hh[ld]->grad->data);
	if (dX)
		px_gemm(true, false, F, T * P, GH, 1.0f, r->w_ih[ld]->value->data, F, run.dg, T * P,
			d ? 1.0f : 0.0f, dX, T * P);
	return 0;
}

int px_rec_backward(void *self, struct px_bwd *bw, struct px_error *err)
{
	struct px_rec *r = self;
	const struct px_rec_kind *k = r->cfg.kind;
	struct px_arena *a = bw->arena;
	int64_t B = r->batch, T = r->steps, P = r->P, H = r->hidden, DH = r->dirs * H;
	float *dY = arena_floats(a, DH * T * P);
	double *sq = bw->report ? px_arena_zalloc(a, (size_t)(r->threads * (T ? T : 1)) *
						   sizeof(double)) : NULL;
	if (!dY || (bw->report && !sq))
		goto nomem;
	/* dLoss/d(top output) from seq and out, batch-first, then feature-major */
	const struct px_tensor *d_seq = bw->d_out[OUT_SEQ], *d_out = bw->d_out[OUT_OUT];
	const float *top = d_seq ? d_seq->data : NULL;
	if (d_out) {
		float *sum = arena_floats(a, B * T * DH);
		if (!sum)
			goto nomem;
		if (d_seq)
			memcpy(sum, d_seq->data, (size_t)(B * T * DH) * sizeof(float));
		else
			memset(sum, 0, (size_t)(B * T * DH) * sizeof(float));
		if (r->readout == RO_SEQUENCE)
			for (int64_t i = 0; i < B * T * DH; i++)
				sum[i] += d_out->data[i];
		else
			readout_backward(r, d_out->data, sum);
		top = sum;
	}
	for (int64_t t = 0; top && t < T; t++)
		transpose(top + t * DH, B, DH, T * DH, dY + t * P, T * P, false);
	if (top)
		zero_padding(dY, DH, T, P, B);
	else
		memset(dY, 0, (size_t)(DH * T * P) * sizeof(float));

	struct px_tensor *d_x = bw->d_in[IN_X];
	for (int64_t l = r->layers - 1; l >= 0; l--) {
		int64_t F = l == 0 ? r->input : DH;
		float *dX = NULL;
		if (l > 0 || d_x) {
			dX = arena_floats(a, F * T * P);  /* the first direction sets it */
			if (!dX)
				goto nomem;
		}
		for (int64_t d = 0; d < r->dirs; d++)
			if (lane_backward(r, l, d, dY, F, dX, bw, l == r->layers - 1 ? sq : NULL, a))
				goto nomem;
		if (l > 0 && r->drop[l - 1])
			for (int64_t i = 0; i < F * T * P; i++)
				dX[i] *= r->drop[l - 1][i];
		dY = dX;
	}
	for (int64_t t = 0; d_x && t < T; t++)  /* [F][T*P] -> [B][T][F] */
		transpose(dY + t * P, r->input, B, T * P, d_x->data + t * r->input, T * r->input, true);
	for (int64_t t = 0; sq && t < T; t++) {
		double s = 0;
		for (int i = 0; i < r->threads; i++)
			s += sq[i * T + t];
		bw->report(bw->report_ctx, "grad_norm", t, sqrt(s));
	}
	return 0;
nomem:
	return px_error_set(err, PX_ERR_NOMEM, "%s: out of memory", k->name);
}

/* ------------------------------------------------------------------ cells */

/* A cell runs the layer's step functions on one step, 32 lanes (batch rows) at a time. */
#define CELL_LANES 32

struct px_rec_cell {
	struct px_rec_cfg cfg;
	int64_t input;
	enum px_rec_isa isa;
	struct px_param *w_ih, *w_hh, *b_ih, *b_hh;
	/* scratch for CELL_LANES lanes (malloc'ed at create): */
	float *buf, *bias, *xt, *s, *c, *y, *dy, *mask, *dg, *dgh, *ch, *cc, *acc, *blk;
};

int px_rec_cell_create(const struct px_rec_kind *kind, struct px_build *b, const char *prefix,
		       int64_t input, int64_t hidden, void **self, struct px_error *err)
{
	*self = NULL;
	if (input < 1 || hidden < 1)
		return px_build_error(b, err, PX_ERR_INVALID, "%s cell needs input >= 1 and hidden "
				      ">= 1, got %lld and %lld", kind->name, (long long)input,
				      (long long)hidden);
	struct px_rec_cell *c = calloc(1, sizeof *c);
	if (!c)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	/* cells use the defaults: tanh, forget_bias 0, reset_after true */
	c->cfg = (struct px_rec_cfg){.kind = kind, .hidden = hidden, .reset_after = true};
	c->input = input;
	c->isa = pick_isa();
	int64_t H = hidden, GH = kind->gates * hidden, L = CELL_LANES;
	float bound = 1.0f / sqrtf((float)hidden);
	const char *names[4] = {"weight_ih", "weight_hh", "bias_ih", "bias_hh"};
	struct px_param **dst[4] = {&c->w_ih, &c->w_hh, &c->b_ih, &c->b_hh};
	int64_t cols[4] = {input, hidden, 0, 0};
	int rc;
	for (int i = 0; i < 4; i++) {
		char nm[256];
		snprintf(nm, sizeof nm, "%s%s", prefix ? prefix : "", names[i]);
		if ((rc = declare(b, nm, GH, cols[i], bound, dst[i], err)))
			goto fail;
	}
	int64_t sizes[13] = {GH, input * L, 2 * H * L, 2 * H * L, H * L, H * L, L, GH * L,
			     H * L, H * L, H * L, acc_floats(kind, L), GH * L};
	float **ptrs[13] = {&c->bias, &c->xt, &c->s, &c->c, &c->y, &c->dy, &c->mask, &c->dg,
			    &c->dgh, &c->ch, &c->cc, &c->acc, &c->blk};
	int64_t total = 0;
	for (int i = 0; i < 13; i++)
		total += (sizes[i] + 15) / 16 * 16;
	c->buf = calloc((size_t)total, sizeof(float));
	if (!c->buf) {
		rc = px_error_set(err, PX_ERR_NOMEM, "out of memory");
		goto fail;
	}
	for (int64_t i = 0, o = 0; i < 13; o += (sizes[i] + 15) / 16 * 16, i++)
		*ptrs[i] = c->buf + o;
	*self = c;
	return 0;
fail:
	px_rec_cell_destroy(c);
	return rc;
}

void px_rec_cell_destroy(void *self)
{
	struct px_rec_cell *c = self;
	if (!c)
		return;
	free(c->buf);
	free(c);
}

static int64_t cell_chunk_floats(const struct px_rec_cell *c)
{
	const struct px_rec_kind *k = c->cfg.kind;
	return (k->gates + (k->uses_aux(&c->cfg) ? 1 : 0)) * c->cfg.hidden * CELL_LANES;
}

/* cache: per chunk of 32 batch rows, the gates [G*H][32] then aux [H][32] */
size_t px_rec_cell_cache_floats(void *self, int64_t batch)
{
	struct px_rec_cell *c = self;
	return (size_t)((batch + CELL_LANES - 1) / CELL_LANES * cell_chunk_floats(c));
}

/* The run of one step over rows [b0, b0+nb) of the batch; loads x and s_prev into it. */
static void cell_load(struct px_rec_cell *c, int64_t batch, int64_t b0, int64_t nb,
		      const float *x, const float *s_prev, float *cache, struct px_rec_run *run)
{
	const struct px_rec_kind *k = c->cfg.kind;
	int64_t H = c->cfg.hidden, GH = k->gates * H, L = CELL_LANES, in = c->input;
	float *chunk = cache + b0 / L * cell_chunk_floats(c);
	*run = (struct px_rec_run){
		.cfg = &c->cfg, .T = 1, .P = L, .H = H, .ld = L, .lds = 2 * L, .mask = c->mask,
		.w_hh = c->w_hh->value->data, .b_hh = c->b_hh->value->data, .bias = c->bias,
		.g = chunk, .aux = k->uses_aux(&c->cfg) ? chunk + GH * L : NULL, .h = c->s,
		.c = k->n_state > 1 ? c->c : NULL, .y = c->y, .dy = c->dy, .dg = c->dg,
		.dgh = c->dgh, .blk = {c->blk, c->blk}, .ch = c->ch,
		.cc = k->n_state > 1 ? c->cc : NULL, .isa = c->isa,
		.threads = 1, .acc = c->acc, .acc_floats = acc_floats(k, L),
	};
	int64_t fold = k->folded_hh_bias(&c->cfg);
	const float *b_ih = c->b_ih->value->data, *b_hh = c->b_hh->value->data;
	for (int64_t j = 0; j < GH; j++)
		c->bias[j] = b_ih[j] + (j < fold ? b_hh[j] : 0.0f);
	for (int64_t p = 0; p < L; p++)
		c->mask[p] = p < nb ? 1.0f : 0.0f;
	memset(c->xt, 0, (size_t)(in * L) * sizeof(float));
	memset(c->s, 0, (size_t)(2 * H * L) * sizeof(float));
	transpose(x + b0 * in, nb, in, in, c->xt, L, false);
	transpose(s_prev + b0 * H, nb, H, H, c->s, 2 * L, false);
	if (k->n_state > 1) {
		memset(c->c, 0, (size_t)(2 * H * L) * sizeof(float));
		transpose(s_prev + (batch + b0) * H, nb, H, H, c->c, 2 * L, false);
	}
}

void px_rec_cell_step(void *self, int64_t batch, const float *x, const float *s_prev,
		      float *s_next, float *cache)
{
	struct px_rec_cell *c = self;
	const struct px_rec_kind *k = c->cfg.kind;
	int64_t H = c->cfg.hidden, GH = k->gates * H, L = CELL_LANES;
	for (int64_t b0 = 0; b0 < batch; b0 += L) {
		int64_t nb = batch - b0 < L ? batch - b0 : L;
		struct px_rec_run run;
		cell_load(c, batch, b0, nb, x, s_prev, cache, &run);
		px_gemm(false, false, GH, L, c->input, 1.0f, c->w_ih->value->data, c->input, c->xt, L,
			0.0f, run.g, L);
		for (int ph = 0; ph < k->phases(&c->cfg); ph++)
			for (int64_t j0 = 0; j0 < H; j0 += PX_REC_TILE)
				k->step(&run, 0, ph, j0, H - j0 < PX_REC_TILE ? H - j0 : PX_REC_TILE,
					c->acc);
		transpose(c->s + L, H, nb, 2 * L, s_next + b0 * H, H, false);
		if (k->n_state > 1)
			transpose(c->c + L, H, nb, 2 * L, s_next + (batch + b0) * H, H, false);
	}
}

void px_rec_cell_step_backward(void *self, int64_t batch, const float *x, const float *s_prev,
			       const float *cache, const float *d_s_next, float *d_x,
			       float *d_s_prev)
{
	struct px_rec_cell *c = self;
	const struct px_rec_kind *k = c->cfg.kind;
	int64_t H = c->cfg.hidden, GH = k->gates * H, L = CELL_LANES, in = c->input;
	for (int64_t b0 = 0; b0 < batch; b0 += L) {
		int64_t nb = batch - b0 < L ? batch - b0 : L;
		struct px_rec_run run;
		/* backward reads the cache only; the run's pointers are not const */
		cell_load(c, batch, b0, nb, x, s_prev, (float *)cache, &run);
		memset(c->ch, 0, (size_t)(H * L) * sizeof(float));
		transpose(d_s_next + b0 * H, nb, H, H, c->ch, L, false);
		if (k->n_state > 1) {
			memset(c->cc, 0, (size_t)(H * L) * sizeof(float));
			transpose(d_s_next + (batch + b0) * H, nb, H, H, c->cc, L, false);
		}
		for (int ph = 0; ph < k->phases(&c->cfg); ph++)
			for (int64_t j0 = 0; j0 < H; j0 += PX_REC_TILE)
				k->step_backward(&run, 0, ph, true, false, j0,
						 H - j0 < PX_REC_TILE ? H - j0 : PX_REC_TILE, c->acc, NULL);
		for (int64_t j0 = 0; j0 < H; j0 += PX_REC_TILE) {  /* + the W_hh path */
			int64_t n = H - j0 < PX_REC_TILE ? H - j0 : PX_REC_TILE;
			k->grad_state(&run, 0, j0, n, c->acc);
			for (int64_t i = 0; i < n * L; i++)
				c->ch[j0 * L + i] += c->acc[i];
		}
		transpose(c->ch, H, nb, L, d_s_prev + b0 * H, H, true);
		if (k->n_state > 1)
			transpose(c->cc, H, nb, L, d_s_prev + (batch + b0) * H, H, true);
		px_rec_grad_rows(&run, GH, in, c->dg, c->xt, L, c->w_ih->grad->data, in,
				 c->b_ih->grad->data);
		k->grad_hh(&run, c->w_hh->grad->data, c->b_hh->grad->data);
		if (d_x) {  /* dx^T = W_ih^T dg, into xt (no longer needed) */
			px_gemm(true, false, in, L, GH, 1.0f, c->w_ih->value->data, in, c->dg, L, 0.0f,
				c->xt, L);
			transpose(c->xt, in, nb, L, d_x + b0 * in, in, true);
		}
	}
}
