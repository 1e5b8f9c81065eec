/* plexus — the layer ABI: parameter schemas, option values, building, forward and backward.
 *
 * A layer kind is one `static const struct px_layer_ops` table inside a plugin. The core
 * validates the YAML options of a node against `schema`, calls `create` once with the input
 * shapes, then `forward` and `backward` once per step.
 *
 * Rules a layer MUST follow:
 * - Parameters are declared in `create` with px_build_param(); the model owns their memory and
 *   names them "<node>.<name>" in checkpoints (use PyTorch's names and layouts).
 * - `forward` allocates its outputs from `f->arena` (the per-step arena). Anything it keeps
 *   for backward MUST also come from that arena (it stays valid until the step ends) or from
 *   memory the layer allocated in `create` — never malloc in forward/backward.
 * - `backward` ADDS (+=) into `b->d_in[i]` (when non-NULL) and into its parameters' `grad`.
 *   A NULL d_in[i] means nobody needs that gradient: skip the work.
 * - Sequence inputs may carry lengths: padded steps MUST produce zero outputs, MUST NOT change
 *   recurrent state and MUST get zero input gradient. Outputs that are sequences carry the
 *   input's lengths pointer on.
 * - Never call exit(); fail by returning a negative PX_ERR_* and filling `err`. */
#ifndef PLEXUS_LAYER_H
#define PLEXUS_LAYER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "plexus/error.h"
#include "plexus/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

struct px_host;

/* ---------------------------------------------------------------- schemas */
enum px_type {
	PX_T_INT = 1,  /* int64 */
	PX_T_FLOAT,    /* double; YAML may also write 1/255 */
	PX_T_BOOL,
	PX_T_ENUM,     /* one of `choices`, "a|b|c" */
	PX_T_STRING,
	PX_T_INTS,     /* list of int64 */
	PX_T_FLOATS    /* list of double */
};

#define PX_UNBOUNDED 1e300

/* One option of a kind. A table of these ends with an entry whose key is NULL. */
struct px_param_spec {
	const char *key;
	enum px_type type;
	const char *def;      /* default, written as in YAML ("128", "true", "[784, 64]"); NULL: required */
	double min, max;      /* inclusive range of numbers (and of list elements) */
	const char *choices;  /* PX_T_ENUM only: "tanh|relu" */
	const char *doc;      /* one line, shown by `plexus explain` */
};

enum {
	PX_PORT_OPTIONAL = 1u << 0, /* may be left unconnected (in[i] == NULL, shape ndim == 0) */
	PX_PORT_VARIADIC = 1u << 1, /* last input port only: takes one or more tensors */
	PX_PORT_NO_GRAD = 1u << 2   /* integer-like data (indices, ids): never differentiated */
};

/* An input or output port. A table of these ends with an entry whose name is NULL.
 * In YAML the first input port is set by `input:` (or `inputs: [...]`), any port also by its
 * own name (`indices: pool1.indices`). The first output port is the node's default output. */
struct px_port_spec {
	const char *name;
	unsigned flags;
	const char *doc;
};

/* ---------------------------------------------------------------- options */
/* The validated options of one node (defaults filled in). Borrowed during create. Getters of a
 * key that is not in the schema, or of another type, abort: that is a programmer error. */
struct px_config;
PX_API int64_t px_config_int(const struct px_config *c, const char *key);
PX_API double px_config_float(const struct px_config *c, const char *key);
PX_API bool px_config_bool(const struct px_config *c, const char *key);
PX_API const char *px_config_str(const struct px_config *c, const char *key);   /* ENUM and STRING */
/* Lists: returns the count; *out points into the config (borrowed). */
PX_API int px_config_ints(const struct px_config *c, const char *key, const int64_t **out);
PX_API int px_config_floats(const struct px_config *c, const char *key, const double **out);
PX_API bool px_config_is_set(const struct px_config *c, const char *key);     /* given in the YAML */
/* An error placed at the key's value in the pipeline file ("file:line:col: ..."). */
PX_API int px_config_error(const struct px_config *c, struct px_error *err, int code, const char *key,
		    const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* ---------------------------------------------------------------- building */
struct px_param {
	const char *name;          /* "weight_ih_l0" (the node prefix is added in checkpoints) */
	struct px_tensor *value;   /* owned by the model arena */
	struct px_tensor *grad;    /* same shape; NULL for buffers */
	bool trainable;            /* false: a buffer saved in checkpoints (running statistics) */
};

/* Given to create; borrowed for that call only. */
struct px_build {
	size_t struct_size;
	const char *node;               /* node name */
	const struct px_config *cfg;    /* validated options */
	int n_in;
	const struct px_shape *in;      /* input shapes; dim[0] == -1 (batch); unconnected: ndim 0 */
	const bool *in_ragged;          /* [n_in]: the input may carry lengths */
	struct px_rng *rng;             /* parameter initialisation stream */
	const struct px_host *host;
	void *priv;                     /* the core's */
};

/* Declare a trainable parameter (zero-filled) named `name`. Owned by the model. */
PX_API struct px_param *px_build_param(struct px_build *b, const char *name, int ndim,
				const int64_t *shape, struct px_error *err);
/* Declare a buffer: saved in checkpoints, not trained. */
PX_API struct px_param *px_build_buffer(struct px_build *b, const char *name, int ndim,
				 const int64_t *shape, struct px_error *err);
/* Build-time error at the node ("file:line:col: node 'enc' (lstm): ..."). */
PX_API int px_build_error(struct px_build *b, struct px_error *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Initialisers. */
PX_API void px_init_uniform(struct px_tensor *t, struct px_rng *r, float bound);   /* U(-bound, bound) */
PX_API void px_init_normal(struct px_tensor *t, struct px_rng *r, float std);
PX_API void px_init_fill(struct px_tensor *t, float value);

/* ---------------------------------------------------------------- running */
struct px_fwd {
	int n_in;
	const struct px_tensor *const *in;  /* borrowed; NULL for an unconnected optional port */
	struct px_tensor **out;             /* set out[k] for every output port */
	struct px_arena *arena;             /* per-step arena */
	struct px_rng *rng;                 /* per-step stream of this node (dropout, noise) */
	bool train;                         /* training (dropout/noise active) or evaluation */
};

struct px_bwd {
	int n_in;
	const struct px_tensor *const *in;     /* as in forward */
	const struct px_tensor *const *out;    /* the outputs forward produced */
	const struct px_tensor *const *d_out;  /* dLoss/dout[k]; NULL when output k is unused */
	struct px_tensor *const *d_in;         /* ADD dLoss/din[i] here; NULL: not needed */
	struct px_arena *arena;
	/* Optional diagnostics sink (may be NULL): a layer reports per-step series, e.g.
	 * report(ctx, "grad_norm", t, ||dLoss/dh_t||) for `plexus diagnose --grad-norms`. */
	void (*report)(void *ctx, const char *series, int64_t step, double value);
	void *report_ctx;
};

enum {
	PX_LAYER_SEQUENCE = 1u << 0,  /* first input is [B,T,F] and honours lengths */
	PX_LAYER_STATEFUL = 1u << 1,  /* keeps state across steps; reset_state clears it */
	PX_LAYER_IDS_INPUT = 1u << 2  /* first input holds integer ids (embedding, decoders) */
};

struct px_layer_ops {
	size_t struct_size;                   /* sizeof(struct px_layer_ops) */
	const char *kind;                     /* YAML and checkpoint identity, e.g. "lstm" */
	const char *doc;                      /* one line */
	const struct px_param_spec *schema;   /* options, NULL-key terminated */
	const struct px_port_spec *inputs;    /* NULL-name terminated; at least one */
	const struct px_port_spec *outputs;   /* NULL-name terminated; at least one */
	unsigned flags;                       /* PX_LAYER_* */
	/* Check the input shapes, declare parameters, fill out[k] for every output port
	 * (dim[0] = -1). *self is freed by destroy. */
	int (*create)(struct px_build *b, void **self, struct px_shape *out, struct px_error *err);
	int (*forward)(void *self, struct px_fwd *f, struct px_error *err);
	int (*backward)(void *self, struct px_bwd *b, struct px_error *err);
	void (*reset_state)(void *self);      /* optional (NULL) */
	void (*destroy)(void *self);
};

/* ---------------------------------------------------------------- recurrent cells */
/* A single-step cell another plugin can drive without compiling against it (the attention
 * decoder looks one up with host->find_cell). State layout: [n_state][B][hidden]
 * (h first, then c for lstm). */
struct px_cell_ops {
	size_t struct_size;
	const char *kind;   /* "lstm", "gru", "rnn" */
	int n_state;        /* 1 (h) or 2 (h, c) */
	/* Declares parameters "<prefix>weight_ih", "<prefix>weight_hh", "<prefix>bias_ih",
	 * "<prefix>bias_hh" (PyTorch's LSTMCell/GRUCell/RNNCell names) through b. */
	int (*create)(struct px_build *b, const char *prefix, int64_t input, int64_t hidden,
		      void **self, struct px_error *err);
	size_t (*cache_floats)(void *self, int64_t batch);  /* floats per step kept for backward */
	/* s_next = cell(x [B,input], s_prev); fills cache */
	void (*step)(void *self, int64_t batch, const float *x, const float *s_prev, float *s_next,
		     float *cache);
	/* Adds into d_x (may be NULL), d_s_prev and the parameter grads. */
	void (*step_backward)(void *self, int64_t batch, const float *x, const float *s_prev,
			      const float *cache, const float *d_s_next, float *d_x, float *d_s_prev);
	void (*destroy)(void *self);
};

#ifdef __cplusplus
}
#endif
#endif
