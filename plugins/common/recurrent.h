/* plexus plugins — the sequence driver shared by the rnn, lstm and gru plugins (compiled into
 * each of their .so files; hidden, never exported).
 *
 * A cell kind supplies its gate math as two per-step functions (forward and backward of one
 * step for one layer and direction, recurrent GEMM included); this driver does everything
 * around them: options and parameters (PyTorch's names and layouts), the input projection of
 * all steps in one GEMM, stacking, both directions, dropout between layers, ragged lengths,
 * initial/final states, readouts, stateful streams with truncated BPTT, and the weight
 * gradients as one GEMM over all steps.
 *
 * Internally every sequence is time-major, [T][B][...], so the rows of one step are
 * contiguous: step t's gate block is a plain [B, G*H] matrix and the state written by step t
 * is the GEMM operand of the next step without a copy. */
#ifndef PX_PLUGINS_RECURRENT_H
#define PX_PLUGINS_RECURRENT_H

#include <stdbool.h>
#include <stdint.h>

#include <plexus/layer.h>

/* Options of one layer (or cell) that the gate math needs. */
struct px_rec_cfg {
	const struct px_rec_kind *kind;
	int64_t hidden;      /* H */
	bool relu;           /* rnn: nonlinearity relu instead of tanh */
	bool reset_after;    /* gru: r multiplies (W_hn h + b_hn) (true) or h (false) */
};

/* One step of one layer and direction. Rows b with len && t >= len[b] are padding: their state
 * is carried unchanged, their output is zero, their gradients are zero (and the gradient of
 * the carried state passes through unchanged). All [B, n] blocks have row stride n unless a
 * leading dimension is given. */
struct px_rec_step {
	const struct px_rec_cfg *cfg;
	int64_t batch, t;
	const int32_t *len;        /* NULL: every row is valid */
	const float *w_hh;         /* [G*H, H] */
	const float *b_hh;         /* [G*H] (the parts not folded into the input projection) */
	/* forward */
	float *g;                  /* [B, G*H]: in: input projection plus folded biases;
				    * out: the activated gates (kept for backward) */
	float *gh;                 /* [B, G*H] gru (reset_after): W_hh h + b_hh, kept */
	float *aux;                /* [B, H] lstm: tanh(c); gru (reset_after false): r*h */
	const float *h_prev, *c_prev;
	float *h, *c;              /* the new state */
	float *out;                /* NULL, or [B, ldo]: h at valid rows, 0 at padded rows */
	int64_t ldo;
	/* backward (g, gh, aux, h_prev, c_prev, h, c as left by forward) */
	const float *dy;           /* NULL, or [B, ldy]: dLoss/dout of this step */
	int64_t ldy;
	const float *dh, *dc;      /* dLoss/d(state after this step), from later steps */
	float *dh_prev, *dc_prev;  /* WRITTEN: dLoss/d(state before); NULL: not needed */
	float *dg;                 /* WRITTEN [B, G*H]: dLoss/d(gate pre-activations), input side */
	float *dgh;                /* WRITTEN [B, G*H] gru (reset_after): hidden side; else NULL */
	double *sq;                /* NULL, or += sum of squares of dLoss/dh_t (diagnostics) */
	float *tmp;                /* [B, H] scratch for the step's own use */
};

static inline bool px_rec_valid(const struct px_rec_step *s, int64_t b)
{
	return !s->len || s->t < s->len[b];
}

/* A cell kind: what differs between rnn, lstm and gru. */
struct px_rec_kind {
	const char *name;      /* "lstm" */
	int gates;             /* G: weight_ih is [G*H, in] */
	int n_state;           /* 1 (h) or 2 (h, c) */
	/* which per-step buffers the math keeps (see struct px_rec_step) */
	bool (*uses_gh)(const struct px_rec_cfg *c);
	bool (*uses_aux)(const struct px_rec_cfg *c);
	/* Rows [0, n) of b_hh that add straight onto the gate pre-activations, so the driver folds
	 * them into the input projection; the step adds the rest itself. */
	int64_t (*folded_hh_bias)(const struct px_rec_cfg *c);
	/* Rows [r, G*H) of weight_hh act on aux (gru reset_after false: r*h) instead of h_prev;
	 * G*H when all act on h_prev. */
	int64_t (*hh_aux_rows)(const struct px_rec_cfg *c);
	void (*step)(const struct px_rec_step *s);
	void (*step_backward)(const struct px_rec_step *s);
	/* Optional: read the kind's own options (rnn nonlinearity, gru reset_after). */
	void (*configure)(const struct px_config *opts, struct px_rec_cfg *c);
	/* Optional: adjust the initial biases after the uniform init (lstm forget_bias). */
	void (*init_bias)(const struct px_config *opts, int64_t hidden, float *b_ih);
};

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

/* Gate nonlinearities (accurate to a few ulp; the same everywhere so that forward and the
 * derivatives taken from its outputs agree). */
float px_rec_tanh(float x);
static inline float px_rec_sigmoid(float x)
{
	return 0.5f + 0.5f * px_rec_tanh(0.5f * x);
}

#endif
