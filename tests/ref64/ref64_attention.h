/* A float64 reference of the attention plugin's attention_decoder (plugins/attention/decoder.c,
 * docs/attention.md), written from the definitions, per element, in double precision:
 *
 *   bahdanau: e_ij = v^T tanh(W s_{i-1} + U h_j); a = softmax_j e; c_i = sum_j a_ij h_j;
 *             s_i = cell([emb(y_{i-1}); c_i], s_{i-1}); logits_i = W_out [s_i; c_i] + b
 *   luong:    s_i = cell([emb(y_{i-1}); h~_{i-1} if input feeding], s_{i-1});
 *             score dot s^T h_j | general s^T W_a h_j | concat v^T tanh(W_a [s; h_j]);
 *             c_i = sum_j a_ij h_j; h~_i = tanh(W_c [c_i; s_i]); logits_i = W_out h~_i + b
 *
 * with its own cells (PyTorch's RNNCell (tanh), LSTMCell (gates i,f,g,o), GRUCell (gates
 * r,z,n, b_hn inside r*(...))), the softmax over each example's valid memory steps, and the
 * initial state from the encoder's top layer (the last `dirs` slots of init / init_cell,
 * concatenated; through the bridge tanh(W_b x0 + b_b) when dirs*F != hidden).
 *
 * As a struct ref_layer (ref64.h): inputs targets [B,T] (ids, with lengths; no gradient),
 * memory [B,T_in,D] (lengths: the mask), and optionally init and init_cell [B,slots,F];
 * outputs logits [B,T,V], weights [B,T,T_in] (teacher forcing: step i consumes y_{i-1},
 * <bos> first; zero past each target length) and tokens [B,T] (the argmax of each valid step).
 * Backward: memory, init, init_cell and every parameter. The parameters are the kernel's, in
 * its order (ref_attdec_param_names). */
#ifndef PX_REF64_ATTENTION_H
#define PX_REF64_ATTENTION_H

#include <stdbool.h>
#include <stdint.h>

#include "ref64.h"

enum ref_attdec_attn { REF_BAHDANAU, REF_LUONG };
enum ref_attdec_score { REF_SCORE_DOT, REF_SCORE_GENERAL, REF_SCORE_CONCAT };

struct ref_attdec_opts {
	enum ref_rec_kind cell;      /* REF_RNN_TANH, REF_LSTM or REF_GRU (reset after) */
	enum ref_attdec_attn attention;
	enum ref_attdec_score score; /* luong only */
	bool input_feeding;          /* luong only */
	int64_t vocab, embed, hidden;
	int64_t attn_units;          /* additive attention units; 0 = hidden */
	int64_t bos, eos, max_len;
	int64_t beam;                /* free running: 1 greedy (unless search_beam) */
	bool search_beam;            /* the beam search even for beam 1 */
	double length_norm;          /* GNMT alpha */
	int64_t init_dirs;           /* 0: 2 when slots are even and D == 2F, else 1 */
	/* When non-NULL, every teacher-forced forward lowers *argmax_margin to the smallest gap
	 * between the best and the second-best logit of a valid step (the `tokens` output is an
	 * argmax: a test asserts the float32 kernel cannot pick another token). */
	double *argmax_margin;
};

/* o is copied. The layer's parameters are set by the caller (check64 copies the kernel's). */
void ref_attention_decoder(struct ref_layer *l, const struct ref_attdec_opts *o);

/* The names of the parameters the decoder has for these options and inputs (memory features
 * D; init_slots/init_feat[w] the shape [B,slots,F] of init (w 0) and init_cell (w 1), slots 0
 * when unconnected), in the kernel's order. Returns the count (<= REF_MAX_PARAMS). */
int ref_attdec_param_names(const struct ref_attdec_opts *o, int64_t D, const int64_t *init_slots,
			   const int64_t *init_feat, const char **names);

/* What decided a free-running decode. */
struct ref_attdec_stats {
	/* the smallest gap of a comparison that decided the result (greedy: best vs second-best
	 * logit; beam: adjacent candidate scores up to the last one used, a finished score vs the
	 * best so far, beam vs greedy when they differ): a test asserts it is far above float32
	 * rounding, so the kernel's decisions are the reference's */
	double margin;
	/* examples where the result is not the greedy sequence and needed: */
	int greedy_won;     /* greedy competing: the greedy hypothesis beat the beam's */
	int deep_win;       /* the ranks K..2K-1: the beam winner was kept alive from one */
	int norm_decided;   /* the length normalisation: the winner is not the best unnormalised */
};

/* Free-running decoding (targets unconnected) with the layer's parameters, on inputs in[1..n_in)
 * (in[0] is ignored): greedy, or beam search when beam > 1 or search_beam (the greedy result
 * competes when beam > 1). tok [B][max_len] (0 past each length) and len [B] are the decoded
 * ids and lengths (<eos> included); *logits [B,max_len,V] and *weights [B,max_len,T_in] (caller
 * frees) those of a teacher-forced pass over the chosen tokens. */
void ref_attdec_decode(struct ref_layer *l, int n_in, struct r64 *const *in, int32_t *tok,
		       int32_t *len, struct r64 **logits, struct r64 **weights,
		       struct ref_attdec_stats *st);

#endif
