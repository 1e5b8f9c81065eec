/* plexus plugins — the sequence driver shared by the rnn, lstm and gru plugins (compiled into
 * each of their .so files; hidden, never exported).
 *
 * A cell kind supplies the math of one step (forward and backward, for a range of hidden
 * units); this driver does everything around it: options and parameters (PyTorch's names and
 * layouts), the input projection of all steps in one GEMM, stacking, both directions, dropout
 * between layers, ragged lengths, initial/final states, readouts, stateful streams with
 * truncated BPTT, the weight gradients as one GEMM over all steps, and the cells.
 *
 * Layout. Inside a layer every sequence is feature-major: a matrix [rows][T*P] whose column
 * t*P + b is example b at step t, with the batch padded to P lanes (a multiple of 16). So one
 * step of one unit is P contiguous floats: the gate math runs down SIMD lanes over the batch,
 * and the recurrent product of a step, gates[n][:] += sum_k W_hh[n][k] h[k][:], reads W_hh
 * straight from the parameter with the batch as the vector dimension (backward packs W_hh^T
 * once per sequence and keeps each step's gate gradients in one block). States are
 * [H][(T+1)*P]: the state before step t is column block t (forward) or t+1 (reverse), so the
 * states before all steps form one [H][T*P] matrix for the dW_hh GEMM.
 *
 * Threads. One step needs the whole state of the step before, so the hidden units of a step
 * are cut into tiles of 8 units that a small team of threads shares, step after step; a thread
 * takes the tiles of its own range first (its part of W_hh stays in its cache) and then helps
 * with the others', so a thread the OS has descheduled (next to OpenBLAS's own spinning
 * threads, or on a busy machine) holds up at most the tile it is on. The team sleeps between
 * sequences, when the big GEMMs run in OpenBLAS. */
#ifndef PX_PLUGINS_RECURRENT_H
#define PX_PLUGINS_RECURRENT_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>

#include <plexus/layer.h>

#define PX_REC_LANES 16   /* P is a multiple of this */
#define PX_REC_TILE 8     /* hidden units per tile of the step kernels */
#define PX_REC_MAX_THREADS 8

/* Options of one layer (or cell) that the gate math needs. */
struct px_rec_cfg {
	const struct px_rec_kind *kind;
	int64_t hidden;      /* H */
	bool relu;           /* rnn: nonlinearity relu instead of tanh */
	bool reset_after;    /* gru: r multiplies (W_hn h + b_hn) (true) or h (false) */
};

enum px_rec_isa { PX_REC_GENERIC, PX_REC_AVX2, PX_REC_AVX512 };

struct px_rec_team;

/* One layer and direction over one batch (or one cell step): what a kind's step functions
 * read and write. Matrices are row-major with the row strides given. */
struct px_rec_run {
	const struct px_rec_cfg *cfg;
	int64_t T, P, H;            /* steps, lanes per step, hidden units */
	int64_t ld;                 /* row stride of the [rows][T*P] sequence matrices */
	int64_t lds;                /* row stride of the [H][(T+1)*P] state matrices */
	bool rev;                   /* the reverse direction: steps run T-1 .. 0 */
	const float *mask;          /* [T][P]: 1 at valid lanes, 0 at padding */
	const float *w_hh, *b_hh;   /* [G*H][H], [G*H] */
	const float *bias;          /* [G*H]: b_ih plus the rows of b_hh that fold in */
	/* forward */
	float *g;      /* [G*H] rows: in: W_ih x; out: the activated gates (kept for backward) */
	float *aux;    /* [H] rows the kind keeps (lstm tanh c, gru W_hn h + b_hn or r*h) */
	float *h, *c;  /* [H] rows of states (c: lstm) */
	float *y;      /* [H] rows of outputs: h at valid lanes, 0 at padding; may be NULL */
	/* backward */
	const float *dy; /* [H] rows: dLoss/dy, or NULL */
	float *dg;     /* [G*H] rows: dLoss/d(gate pre-activations), input side */
	float *dgh;    /* [H] rows, gru (reset_after): dLoss/d(W_hn h + b_hn) */
	float *blk[2]; /* [G*H][P] each: the hidden-side gate gradients of step t in blk[t & 1],
			* contiguous for the next step's kernel (lstm, rnn: dg; gru: dr, dz, dq or
			* dr, dz, dn') */
	float *wt;     /* [H][G*H]: W_hh transposed for the backward kernels, or NULL */
	float *ch, *cc;/* [H][P]: the gradient of the state after the step being processed that
			* does not come through W_hh (final-state gradients, padding pass-through,
			* gru's z*dh); each backward step turns it into the one before the step */
	double *sq;    /* [threads][T] sums of squares of dLoss/dh_t, or NULL */
	/* execution */
	enum px_rec_isa isa;
	int threads;
	struct px_rec_team *team;
	float *acc;    /* [threads][acc_floats] step-kernel scratch */
	int64_t acc_floats;
};

/* Column block of the state before / after step t. */
static inline int64_t px_rec_prev(const struct px_rec_run *r, int64_t t)
{
	return r->rev ? t + 1 : t;
}

static inline int64_t px_rec_next(const struct px_rec_run *r, int64_t t)
{
	return r->rev ? t : t + 1;
}

/* The step processed after t (whose gradient flows back into step t). */
static inline int64_t px_rec_later(const struct px_rec_run *r, int64_t t)
{
	return r->rev ? t - 1 : t + 1;
}

/* Sets w[u] to the start of column j0+u of W_hh from gate row n0 on (for u < n); returns
 * the stride between its elements (1 when W_hh^T is packed in wt). */
int64_t px_rec_hh_cols(const struct px_rec_run *r, int64_t j0, int64_t n, int64_t n0,
		       const float **w);
/* acc[i][0:P] (+)= sum_k w[i][k*ws] * v[k*ldv + 0:P] for i < rows; P a multiple of 16. */
void px_rec_mm(const struct px_rec_run *r, int64_t rows, const float *const *w, int64_t ws,
	       int64_t K, const float *v, int64_t ldv, float *acc, bool add);

/* A cell kind: what differs between rnn, lstm and gru. */
struct px_rec_kind {
	const char *name;      /* "lstm" */
	int gates;             /* G: weight_ih is [G*H, in] */
	int n_state;           /* 1 (h) or 2 (h, c) */
	bool (*uses_aux)(const struct px_rec_cfg *c);
	bool (*uses_dgh)(const struct px_rec_cfg *c);
	/* Rows [0, n) of b_hh add straight onto the gate pre-activations (folded into bias). */
	int64_t (*folded_hh_bias)(const struct px_rec_cfg *c);
	/* Phases of one step: 1, or 2 when the second needs the first done for every unit (gru
	 * with reset_after false: W_hn acts on r*h). */
	int (*phases)(const struct px_rec_cfg *c);
	/* Phase ph of step t for units j0 .. j0+n (n <= PX_REC_TILE), all lanes; acc: scratch of
	 * acc_floats. */
	void (*step)(const struct px_rec_run *r, int64_t t, int ph, int64_t j0, int64_t n,
		     float *acc);
	/* Backward of phase ph of step t, same units: reads ch/cc (zero when cut) and the W_hh
	 * path from the later step (none when first or cut), writes dg (and dgh, blk) at t and
	 * turns ch/cc into the gradient of the state before t, less its W_hh path. Adds the sum
	 * of (dLoss/dh_t)^2 of these units into *sq (when sq is non-NULL). */
	void (*step_backward)(const struct px_rec_run *r, int64_t t, int ph, bool first, bool cut,
			      int64_t j0, int64_t n, float *acc, double *sq);
	/* acc[u][0:P] = the W_hh path of dLoss/d(state before step t), units j0 .. j0+n. */
	void (*grad_state)(const struct px_rec_run *r, int64_t t, int64_t j0, int64_t n, float *acc);
	/* dW_hh += and db_hh += over all steps of the run */
	void (*grad_hh)(const struct px_rec_run *r, float *dw_hh, float *db_hh);
	/* Optional: read the kind's own options (rnn nonlinearity, gru reset_after). */
	void (*configure)(const struct px_config *opts, struct px_rec_cfg *c);
	/* Optional: adjust the initial biases after the uniform init (lstm forget_bias). */
	void (*init_bias)(const struct px_config *opts, int64_t hidden, float *b_ih);
};

/* dW_hh += dg * hprev^T, db_hh += row sums of dg over all steps (rnn, lstm). */
void px_rec_grad_hh_plain(const struct px_rec_run *r, float *dw_hh, float *db_hh);
/* W[rows][:] += A[rows][T*P] * B[cols][T*P]^T, with row strides; db (may be NULL) += row sums */
void px_rec_grad_rows(const struct px_rec_run *r, int64_t rows, int64_t cols, const float *a,
		      const float *b, int64_t ldb, float *w, int64_t ldw, float *db);

/* The options every recurrent layer has; a plugin's schema is these followed by its own. */
#define PX_REC_COMMON_SCHEMA                                                                   \
	{"hidden", PX_T_INT, NULL, 1, 1 << 20, NULL, "units of the state h"},                  \
	{"layers", PX_T_INT, "1", 1, 64, NULL, "stacked layers"},                              \
	{"bidirectional", PX_T_BOOL, "false", 0, 0, NULL,                                      \
	 "also run backwards; outputs are forward||backward per step"},                       \
	{"dropout", PX_T_FLOAT, "0", 0, 1, NULL,                                               \
	 "dropout on the outputs of every layer but the last (training only)"},               \
	{"readout", PX_T_ENUM, "sequence", 0, 0, "sequence|last|mean|max",                     \
	 "out: every step [B,T,D*H], or the last valid step / mean / max over valid steps"},  \
	{"stateful", PX_T_BOOL, "false", 0, 0, NULL,                                           \
	 "carry the final state into the next batch of a stream (detached)"},                 \
	{"tbptt", PX_T_INT, "0", 0, 1e9, NULL,                                                 \
	 "truncate backprop through time to chunks of this many steps (0: full BPTT)"}

/* Layer ops for a kind; each plugin's static const px_layer_ops points at these. */
int px_rec_create(const struct px_rec_kind *kind, struct px_build *b, void **self,
		  struct px_shape *out, struct px_error *err);
int px_rec_forward(void *self, struct px_fwd *f, struct px_error *err);
int px_rec_backward(void *self, struct px_bwd *b, struct px_error *err);
void px_rec_reset_state(void *self);
void px_rec_destroy(void *self);

/* Cell ops for a kind (struct px_cell_ops): the same step functions, one step at a time. */
int px_rec_cell_create(const struct px_rec_kind *kind, struct px_build *b, const char *prefix,
		       int64_t input, int64_t hidden, void **self, struct px_error *err);
size_t px_rec_cell_cache_floats(void *self, int64_t batch);
void px_rec_cell_step(void *self, int64_t batch, const float *x, const float *s_prev,
		      float *s_next, float *cache);
void px_rec_cell_step_backward(void *self, int64_t batch, const float *x, const float *s_prev,
			       const float *cache, const float *d_s_next, float *d_x,
			       float *d_s_prev);
void px_rec_cell_destroy(void *self);

/* Lane loops (the gate math over P lanes) are compiled for AVX-512, AVX2 and plain x86-64 and
 * picked at load time. */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define PX_REC_SIMD __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define PX_REC_SIMD
#endif

/* tanh(x) as a [13/6] rational function, accurate to a few ulp in float (Eigen's ptanh);
 * branch-free so that lane loops vectorize. */
static inline float px_rec_tanh(float x)
{
	const float lim = 7.90531110763549805f;
	float v = x < -lim ? -lim : (x > lim ? lim : x);
	float x2 = v * v;
	float p = -2.76076847742355e-16f;
	p = p * x2 + 2.00018790482477e-13f;
	p = p * x2 + -8.60467152213735e-11f;
	p = p * x2 + 5.12229709037114e-08f;
	p = p * x2 + 1.48572235717979e-05f;
	p = p * x2 + 6.37261928875436e-04f;
	p = p * x2 + 4.89352455891786e-03f;
	p = p * v;
	float q = 1.19825839466702e-06f;
	q = q * x2 + 1.18534705686654e-04f;
	q = q * x2 + 2.26843463243900e-03f;
	q = q * x2 + 4.89352518554385e-03f;
	float t = p / q;
	return fabsf(x) < 4e-4f ? x : t;
}

static inline float px_rec_sigmoid(float x)
{
	return 0.5f + 0.5f * px_rec_tanh(0.5f * x);
}

#endif
