/* A float64 reference implementation of plexus layers and losses, written independently of
 * the float32 kernels from their formulas (PyTorch semantics), for gradient checking in double
 * precision (tests/ref64/check64.c). Forward and backward of each reference are plain loops
 * over every element: slow, obvious, and easy to check by central differences in double. */
#ifndef PX_REF64_H
#define PX_REF64_H

#include <stdbool.h>
#include <stdint.h>

#define R64_MAX_DIMS 6

/* A float64 tensor: row-major, shape[0] the batch; `lengths` (borrowed, may be NULL) marks the
 * valid steps along dim 1 as in struct px_tensor. */
struct r64 {
	int ndim;
	int64_t shape[R64_MAX_DIMS];
	double *d;
	const int32_t *lengths;
};

struct r64 *r64_new(int ndim, const int64_t *shape);   /* zero-filled; aborts on OOM */
struct r64 *r64_like(const struct r64 *t);             /* same shape and lengths, zeros */
void r64_free(struct r64 *t);
int64_t r64_numel(const struct r64 *t);
/* valid steps of example b (lengths, or shape[1]) */
int64_t r64_len(const struct r64 *t, int64_t b);
/* is flat element i of t in a valid step (always true without lengths or for rank < 2) */
bool r64_valid(const struct r64 *t, int64_t i);

/* A reference layer. Parameters are in the kernel's order with the kernel's names and layouts;
 * forward allocates every output; backward ADDS into d_in[i] (NULL: not needed) and grad[k]. */
#define REF_MAX_PARAMS 32
struct ref_layer {
	const char *kind;
	int n_out;
	int n_params;
	struct r64 *param[REF_MAX_PARAMS], *grad[REF_MAX_PARAMS];
	int64_t opt[8];    /* kind-specific options (see each constructor) */
	double fopt[4];
	void (*forward)(struct ref_layer *l, int n_in, struct r64 *const *in, struct r64 **out);
	void (*backward)(struct ref_layer *l, int n_in, struct r64 *const *in,
			 struct r64 *const *out, struct r64 *const *d_out, struct r64 **d_in);
	void *cache;       /* forward state kept for backward (freed by ref_layer_free) */
	void (*cache_free)(struct ref_layer *l);   /* frees what cache points to; may be NULL */
	/* Between batches (may be NULL): a stateful layer keeps the last forward's final states
	 * as the next forward's initial states (constants), and the next forward is the new
	 * point of reference (see ref_recurrent_opts). */
	void (*commit)(struct ref_layer *l);
};
void ref_layer_free(struct ref_layer *l);

/* Core layers (core/layers.c). The parameters are allocated by check64 from the kernel's. */
void ref_linear(struct ref_layer *l, bool bias);
void ref_relu(struct ref_layer *l);
void ref_tanh(struct ref_layer *l);
void ref_sigmoid(struct ref_layer *l);
void ref_softmax(struct ref_layer *l);
void ref_identity(struct ref_layer *l, int out_ndim, const int64_t *out_per_example);
void ref_embedding(struct ref_layer *l, int64_t padding_idx);
void ref_concat(struct ref_layer *l);
void ref_add(struct ref_layer *l);

/* Recurrent layers (plugins rnn, lstm, lstm_ref, gru): PyTorch's equations, gate orders and
 * h_n layout, ragged batches as packed sequences; outputs out, seq, state (, cell). REF_MAX:
 * the elementwise max over the valid steps (the gradient to the step that holds it). */
enum ref_rec_kind { REF_RNN_TANH, REF_LSTM, REF_GRU, REF_RNN_RELU };
enum ref_readout { REF_SEQUENCE, REF_LAST, REF_MEAN, REF_MAX };
void ref_recurrent(struct ref_layer *l, enum ref_rec_kind kind, int64_t hidden, int64_t layers,
		   bool bidirectional, enum ref_readout readout, bool gru_reset_after);

/* The kernels' orders of drawing the dropout masks between layers (see ref64.c):
 * plugins/common/recurrent.c over its feature-major layout with the batch padded to 16 lanes,
 * plugins/lstm_ref over [B][T][D*H]. */
enum ref_drop_order { REF_DROP_LANES, REF_DROP_BATCH_FIRST };

/* Distances from the kinks, the smallest over every forward since the constructor or the last
 * commit (the checked point and every finite-difference point); INFINITY: none met. relu: the
 * smallest |pre-activation| of a relu at a valid step; max_gap: the smallest gap between the
 * max readout's winner and its runner-up (examples with at least 2 valid steps). */
struct ref_rec_margins {
	double relu, max_gap;
};

struct ref_rec_opts {
	bool h0, c0;         /* inputs in[1] = h0, in[2] = c0 (lstm): [B, layers*dirs, H] */
	bool stateful;       /* no h0/c0: start from the states kept by commit (constants) */
	int64_t tbptt;       /* K > 0: the states crossing steps K, 2K, ... are constants: their
			      * values in the first forward after the constructor or commit */
	double dropout;      /* p > 0: inverted dropout between layers (training mode) */
	enum ref_drop_order drop_order;
	uint64_t seed;       /* dropout: draws from px_rng_seed_label(seed, "forward") */
	struct ref_rec_margins *margins;   /* borrowed, may be NULL: filled by every forward */
};
void ref_recurrent_opts(struct ref_layer *l, enum ref_rec_kind kind, int64_t hidden,
			int64_t layers, bool bidirectional, enum ref_readout readout,
			bool gru_reset_after, const struct ref_rec_opts *o);

/* A single-step cell (struct px_cell_ops of the rnn, lstm and gru plugins) as a reference
 * layer: inputs x [B, input] and s_prev [S, B, H], output s_next [S, B, H] (S = 2 for lstm:
 * h then c; 1 otherwise), parameters weight_ih [G*H, input], weight_hh [G*H, H], bias_ih,
 * bias_hh [G*H] (PyTorch's RNNCell / LSTMCell / GRUCell); one step of the equations above.
 * margins (may be NULL): the relu kink, as in ref_recurrent_opts. */
void ref_rec_cell(struct ref_layer *l, enum ref_rec_kind kind, int64_t hidden,
		  bool gru_reset_after, struct ref_rec_margins *margins);

/* Image layers (plugin conv), on [B,C,H,W]: PyTorch's Conv2d / ConvTranspose2d (weight
 * [out, in/groups, kh, kw] / [in, out/groups, kh, kw], bias [out]), MaxPool2d (out, indices
 * iy*W + ix), AvgPool2d, Upsample (nearest; bilinear with align_corners false) and
 * BatchNorm2d (train: batch statistics; eval: running ones). */
struct ref_conv {
	int64_t out_channels, kh, kw, sh, sw, ph, pw, dh, dw, oph, opw, groups;
	bool bias;
};
void ref_conv2d(struct ref_layer *l, const struct ref_conv *c);
void ref_conv_transpose2d(struct ref_layer *l, const struct ref_conv *c);
void ref_maxpool2d(struct ref_layer *l, int64_t k, int64_t stride, int64_t pad);
void ref_avgpool2d(struct ref_layer *l, int64_t k, int64_t stride, int64_t pad,
		   bool count_include_pad);
void ref_upsample2d(struct ref_layer *l, int64_t scale, bool bilinear);
/* inputs x and indices (ids: no gradient); y[plane, indices] = x over an out_h x out_w plane */
void ref_maxunpool2d(struct ref_layer *l, int64_t out_h, int64_t out_w);
void ref_batchnorm2d(struct ref_layer *l, double eps, bool train, bool affine);

/* The autoencoder plugin's dense `autoencoder` node: sizes[0..n) mirrored (encoder sizes[k] ->
 * sizes[k+1], decoder back), `act` after every layer but the last (the code included), `out_act`
 * on the reconstruction (0 none, 1 sigmoid); tied: the decoder uses the encoder's weights
 * transposed. act: 1 tanh, 2 sigmoid. Outputs recon (the input's shape) and code. */
void ref_autoencoder(struct ref_layer *l, const int64_t *sizes, int n, int act, int out_act,
		     bool tied);

/* The example plugin's layernorm (examples/plugin-template/layernorm.c) over the last dim of
 * every valid row; parameters weight, bias when affine. */
void ref_layernorm(struct ref_layer *l, bool affine, double eps);

/* The attention plugin's attention_pool on [B,T,F] (ragged): e_t = v^T tanh(W h_t + b),
 * alpha = softmax over the valid steps, out = sum_t alpha_t h_t; outputs out and weights. */
void ref_attention_pool(struct ref_layer *l);

/* Losses (core/losses.c): the summed loss; d_pred (may be NULL) gets d(sum)/d(pred) WRITTEN.
 * *count is what the core averages over. */
double ref_mse(const struct r64 *pred, const struct r64 *target, struct r64 *d_pred,
	       double *count);
double ref_cross_entropy(const struct r64 *pred, const struct r64 *target, int64_t ignore_index,
			 double smoothing, struct r64 *d_pred, double *count);
double ref_bce(const struct r64 *pred, const struct r64 *target, double pos_weight,
	       struct r64 *d_pred, double *count);

/* ------------------------------------------------------------------ random layers, relu */
/* Random layers in training (tests/ref64/ref64_random.c): the core's dropout (inverted: y = x m,
 * m = 0 with probability p, else 1/(1-p)) and the autoencoder plugin's gaussian_noise
 * (y = x + std N(0,1)), masking_noise (y = 0 with probability fraction, else x) and
 * salt_pepper_noise (corrupted with probability fraction: low or high, half each). Every forward
 * draws from px_rng_seed_label(seed, "forward"), the stream the harness gives the kernel for
 * every forward (pass CHECK64_SEED), in the kernel's documented order, so both draw the same
 * mask. Ragged inputs: padded steps draw nothing and give zero outputs and gradients. For
 * evaluation (the identity) use ref_identity. */
void ref_dropout(struct ref_layer *l, double p, uint64_t seed);
void ref_gaussian_noise(struct ref_layer *l, double std, uint64_t seed);
void ref_masking_noise(struct ref_layer *l, double fraction, uint64_t seed);
void ref_salt_pepper_noise(struct ref_layer *l, double fraction, double low, double high,
			   uint64_t seed);

/* What the last forward of a random layer drew, so that a test can see the randomness at work
 * (a kernel and a reference that both never drop must not pass). */
struct ref_draws {
	int64_t valid;        /* valid elements, one draw each (a salt & pepper hit: two) */
	int64_t hit;          /* dropped, zeroed or corrupted (gaussian: 0) */
	int64_t high;         /* salt & pepper hits set to high (salt) */
	int64_t changed;      /* valid elements whose output differs from the input */
	double sq_change;     /* sum over the valid elements of (y - x)^2 */
};
void ref_random_draws(const struct ref_layer *l, struct ref_draws *d);

/* ref_autoencoder's act may also be 3: relu, whose kink at z = 0 a finite-difference check must
 * stay away from. Of the last forward: the smallest |z| before a relu (INFINITY without relu),
 * which a test asserts is a clear margin larger than the finite-difference step; *relus: how
 * many relus it evaluated (every example, every unit), *active: how many had z > 0. */
double ref_autoencoder_relu_margin(const struct ref_layer *l, int64_t *relus, int64_t *active);

#endif
