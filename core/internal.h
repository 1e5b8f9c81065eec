/* plexus core — interfaces shared by the core's own files. Not installed; plugins never see it. */
#ifndef PLEXUS_INTERNAL_H
#define PLEXUS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "plexus/data.h"
#include "plexus/error.h"
#include "plexus/harness.h"
#include "plexus/layer.h"
#include "plexus/optim.h"
#include "plexus/plugin.h"
#include "plexus/tensor.h"

#define PX_VERSION "0.1.0"

/* ------------------------------------------------------------------ config.c */
struct px_value {
	int64_t i;
	double f;
	bool b;
	char *s;          /* ENUM / STRING, owned */
	int n;            /* list length */
	int64_t *ints;    /* owned */
	double *floats;   /* owned */
};

struct px_config_entry {
	const struct px_param_spec *spec;
	struct px_value v;
	bool set;         /* given by the user */
	int line, col;    /* where (1-based), 0 when defaulted */
};

struct px_config {
	char *file;       /* pipeline file for messages (owned, may be NULL) */
	char *owner;      /* "node 'enc' (lstm)" or "optimizer", for messages (owned) */
	int n;
	struct px_config_entry *e;
	int line, col;    /* the mapping's own place */
};

/* A config holding the schema's defaults (required keys unset). NULL on out of memory. */
struct px_config *px_config_new(const struct px_param_spec *schema, const char *file,
				const char *owner);
struct px_config_entry *px_config_find(struct px_config *c, const char *key);
/* Set `key` from YAML text: one scalar (is_list false, n == 1) or a list of n scalars.
 * Validates type, range and choices; errors at line:col name the valid choices. */
int px_config_set(struct px_config *c, const char *key, const char *const *texts, int n,
		  bool is_list, int line, int col, struct px_error *err);
/* Every required key is set? Error at the mapping's place names the first missing one. */
int px_config_check_required(const struct px_config *c, struct px_error *err);
/* Is a schema well formed (types, choices, defaults satisfying their own ranges, unique keys)?
 * The loader refuses plugins whose schemas are not. */
int px_schema_check(const struct px_param_spec *schema, struct px_error *err);
/* "key1, key2, ..." of a schema, for "valid keys are ..." messages. */
void px_schema_keys(const struct px_param_spec *schema, char *buf, size_t n);
/* Parse a number the way pipelines may write it: 1e-3, 0.5, 1/255. */
bool px_parse_double(const char *s, double *out);
bool px_parse_int(const char *s, int64_t *out);

/* ------------------------------------------------------------------ registry.c (loader) */
enum px_entry_type { PX_E_LAYER, PX_E_CELL, PX_E_LOSS, PX_E_OPTIM, PX_E_SOURCE, PX_E_COUNT };

struct px_plugin_rec {
	char *path;                      /* absolute file, or "(built-in)" */
	void *handle;                    /* dlopen handle; NULL for the core */
	const struct px_plugin *desc;
};

struct px_entry {
	enum px_entry_type type;
	const char *kind;
	const void *ops;                 /* px_layer_ops / px_cell_ops / ... */
	struct px_plugin_rec *plugin;
};

struct px_registry {
	struct px_plugin_rec **plugins;
	int n_plugins;
	struct px_entry *entries;
	int n_entries;
	char **prefer;                   /* "kind=plugin" preferences */
	int n_prefer;
	struct px_host host;
	char **refusals;                 /* one line per refused plugin file */
	int n_refusals;
	struct px_figure_sink *figures;  /* report.c: non-NULL during a report's figure pass */
};

/* ------------------------------------------------------------------ builtins */
extern const struct px_plugin px_core_plugin;    /* layers, losses, optimizers, sources */
extern const struct px_layer_ops *const px_builtin_layers[];
extern const struct px_loss_ops *const px_builtin_losses[];
extern const struct px_optim_ops *const px_builtin_optims[];
extern const struct px_source_ops *const px_builtin_sources[];

/* ------------------------------------------------------------------ optim.c extras */
/* Global L2 norm of all grads; scales them to max_norm when above (max_norm > 0).
 * Returns the norm before clipping. */
double px_clip_grad_norm(struct px_param *const *params, int n, double max_norm);
void px_clip_grad_value(struct px_param *const *params, int n, double clip);

/* Learning-rate schedules (PyTorch semantics). `step`/`epoch` counters from the trainer. */
struct px_schedule {
	char kind[16];        /* none|step|exponential|cosine|plateau */
	double base_lr;
	double gamma;         /* step, exponential, plateau factor */
	int64_t step_size;    /* step: epochs per decay */
	int64_t t_max;        /* cosine: epochs (0: the run's epochs) */
	double eta_min;       /* cosine floor, plateau min_lr */
	int64_t patience;     /* plateau */
	double threshold;     /* plateau: relative improvement needed (PyTorch default 1e-4) */
	int64_t warmup;       /* linear warmup over this many optimizer steps */
	/* state */
	double lr;            /* current epoch lr before warmup */
	double best;
	int64_t bad_epochs;
};
extern const struct px_param_spec px_schedule_schema[];
int px_schedule_init(struct px_schedule *s, const struct px_config *cfg, double base_lr,
		     int64_t epochs, struct px_error *err);
/* lr to use for optimizer step `step` (1-based) — applies warmup. */
double px_schedule_lr(const struct px_schedule *s, int64_t step);
/* Advance at the end of epoch `epoch` (1-based) given the validation loss. */
void px_schedule_epoch_end(struct px_schedule *s, int64_t epoch, double val_loss);

/* ------------------------------------------------------------------ data.c */
extern const struct px_param_spec px_view_schema[];   /* keys of a split besides the source's */
/* Apply the view options of a split (as, scale, limit, only_classes ...) in place. */
int px_dataset_apply_view(struct px_dataset *ds, const struct px_config *view,
			  struct px_error *err);
/* Move a seeded random fraction of `ds` into `val` (both owned by caller). */
int px_dataset_split(struct px_dataset *ds, double fraction, uint64_t seed,
		     struct px_dataset *val, struct px_error *err);
/* Gather examples idx[0..n) into tensors from the arena: x [n, ...] (with lengths when the
 * dataset has them), y likewise. */
int px_dataset_gather(const struct px_dataset *ds, const int64_t *idx, int64_t n,
		      struct px_arena *a, struct px_tensor **x, struct px_tensor **y,
		      struct px_error *err);

/* npy files: float32/float64/int32/int64/uint8 read as float32; written as float32 ('<f4').
 * Reading validates the header and the file size before allocating. Caller frees *data. */
int px_npy_read(const char *path, int *ndim, int64_t *shape, float **data,
		struct px_error *err);
int px_npy_read_i32(const char *path, int *ndim, int64_t *shape, int32_t **data,
		    struct px_error *err);
int px_npy_write(const char *path, int ndim, const int64_t *shape, const float *data,
		 struct px_error *err);

/* ------------------------------------------------------------------ checkpoint.c */
struct px_st_entry {
	const char *name;
	int ndim;
	const int64_t *shape;
	const float *data;
};
/* Write a safetensors file atomically (temp file, fsync, rename, fsync dir).
 * meta: n_meta key/value pairs stored in "__metadata__" (strings). */
int px_st_write(const char *path, const struct px_st_entry *e, int n,
		const char *const *meta_keys, const char *const *meta_vals, int n_meta,
		struct px_error *err);
struct px_st_file;
/* Read and fully validate (offsets, dtypes F32 only, shapes, sizes, names). */
int px_st_open(const char *path, struct px_st_file **out, struct px_error *err);
int px_st_count(const struct px_st_file *f);
const char *px_st_name(const struct px_st_file *f, int i);
int px_st_find(const struct px_st_file *f, const char *name);   /* index or -1 */
const float *px_st_data(const struct px_st_file *f, int i, int *ndim, int64_t *shape);
const char *px_st_meta(const struct px_st_file *f, const char *key);  /* NULL if absent */
int px_st_meta_count(const struct px_st_file *f);
const char *px_st_meta_key(const struct px_st_file *f, int i);
void px_st_close(struct px_st_file *f);

/* ------------------------------------------------------------------ json.c */
/* A small strict JSON reader (RFC 8259) and writer helpers, for safetensors headers and the
 * metadata stored in them. The reader never trusts its input:
 *   - at most PX_JSON_MAX_BYTES of text and PX_JSON_MAX_VALUES values, nesting at most
 *     PX_JSON_MAX_DEPTH arrays/objects deep (so hostile input bounds memory and stack);
 *   - strings must be valid UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF);
 *     \u escapes are decoded, surrogate pairs combined, lone surrogates and \u0000 refused
 *     (strings are NUL-terminated C strings);
 *   - integers (no fraction, no exponent) must fit int64_t; other numbers are parsed as
 *     double (locale-independent) and must be finite; numbers over 400 characters are refused;
 *   - duplicate keys in an object are an error; trailing text after the value is an error.
 * Errors: PX_ERR_PARSE, message "source:line:col: what" (just "what" when source is NULL;
 * err->line/col are set either way, 1-based, col counted in bytes). */
#define PX_JSON_MAX_DEPTH 64
#define PX_JSON_MAX_BYTES 100000000u
#define PX_JSON_MAX_VALUES (1 << 20)   /* ~130k tensor entries; bounds memory to ~100 MB */

enum px_json_type {
	PX_JSON_NULL, PX_JSON_BOOL, PX_JSON_INT, PX_JSON_FLOAT, PX_JSON_STRING, PX_JSON_ARRAY,
	PX_JSON_OBJECT
};

struct px_json {
	enum px_json_type type;
	int line, col;            /* where the value starts in the text (1-based) */
	bool b;                   /* BOOL */
	int64_t i;                /* INT */
	double f;                 /* FLOAT; also set for INT (converted) */
	char *s;                  /* STRING: NUL-terminated UTF-8, owned */
	size_t len;               /* STRING: bytes, without the NUL */
	int n;                    /* ARRAY / OBJECT: members */
	struct px_json *v;        /* ARRAY items / OBJECT values, n of them, owned */
	char **k;                 /* OBJECT keys in document order, n of them, owned */
};

/* Parse text[0..len) (need not be NUL-terminated). *out is the root; free with
 * px_json_free. `source` names the text in messages (borrowed; may be NULL). */
int px_json_parse(const char *text, size_t len, const char *source, struct px_json **out,
		  struct px_error *err);
void px_json_free(struct px_json *j);
/* Member `key` of an object, NULL when absent or when `obj` is not an object. O(n). */
const struct px_json *px_json_get(const struct px_json *obj, const char *key);
/* "null", "boolean", "integer", "number", "string", "array", "object". */
const char *px_json_type_name(enum px_json_type t);
/* Is s[0..n) valid UTF-8 (strict, as above; NUL bytes allowed)? */
bool px_utf8_valid(const char *s, size_t n);

/* Escape a NUL-terminated string for use between JSON quotes (quotes not added): '"' and
 * '\\' get a backslash, \b \f \n \r \t their short forms, other bytes below 0x20
 * \u00xx; valid UTF-8 passes through unchanged (as Python's json.dumps(ensure_ascii=False)
 * writes it), each invalid byte becomes U+FFFD. Caller frees; NULL when out of memory. */
char *px_json_escape(const char *s);

/* A growable NUL-terminated string. Zero-initialise; after an allocation failure `oom` is
 * set and further appends do nothing; take `s` (malloc'ed, caller frees) or px_sbuf_free. */
struct px_sbuf {
	char *s;
	size_t len, cap;
	bool oom;
};
void px_sbuf_add(struct px_sbuf *b, const char *s);
void px_sbuf_addn(struct px_sbuf *b, const char *s, size_t n);
void px_sbuf_addf(struct px_sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append s as a JSON string, quotes included (escaped as px_json_escape does). */
void px_sbuf_add_json_str(struct px_sbuf *b, const char *s);
void px_sbuf_free(struct px_sbuf *b);

/* ------------------------------------------------------------------ build.c */
/* What px_build_param needs from whoever builds (a model or a harness). */
struct px_build_priv {
	struct px_arena *arena;         /* parameters live here (owned by the builder) */
	struct px_param **params;       /* growable list, malloc'ed, owned by the builder */
	int n_params, cap_params;
	const char *file;               /* for error places */
	int line, col;
	const char *owner;              /* "node 'enc' (lstm)" */
};
void px_build_priv_free(struct px_build_priv *p);   /* frees the list, not the arena */

/* ------------------------------------------------------------------ util */
char *px_strdup(const char *s);
char *px_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Read a whole file (max_bytes cap); caller frees. */
int px_read_file(const char *path, size_t max_bytes, char **data, size_t *len,
		 struct px_error *err);
uint64_t px_hash64(const void *data, size_t n, uint64_t seed);   /* FNV-1a style, stable */


/* ------------------------------------------------------------------ registry.c */
/* A registry with the core's built-ins. NULL on out of memory. */
struct px_registry *px_registry_new(void);
void px_registry_free(struct px_registry *r);
/* Load one plugin file. A refusal returns PX_ERR_PLUGIN / PX_ERR_ABI with a one-line message
 * naming the file and the reason; it is also recorded in r->refusals. */
int px_registry_load_file(struct px_registry *r, const char *path, struct px_error *err);
/* Load every *.so in a directory (sorted by name); refusals are recorded, not fatal. A missing
 * directory is not an error. */
int px_registry_load_dir(struct px_registry *r, const char *dir, struct px_error *err);
/* Load each directory of a ':'-separated list. */
int px_registry_load_path(struct px_registry *r, const char *path_list, struct px_error *err);
/* The standard search: extra dirs (--plugin-path, pipeline plugins.path), then
 * $PLEXUS_PLUGIN_PATH, then the installed plugins dir. */
int px_registry_load_default(struct px_registry *r, const char *const *extra, int n_extra,
			     struct px_error *err);
/* "kind=plugin" */
int px_registry_prefer(struct px_registry *r, const char *kind_eq_plugin, struct px_error *err);
/* Find the implementation of `kind`. impl: NULL, a plugin name, or a plugin file path. With
 * several candidates and no choice (impl or preference), the plugin named like the kind wins;
 * when there is none, an error lists the candidates. */
const struct px_entry *px_registry_find(struct px_registry *r, enum px_entry_type type,
					const char *kind, const char *impl, struct px_error *err);
/* "a, b, c" of the kinds of a type that are loaded. */
void px_registry_kinds(const struct px_registry *r, enum px_entry_type type, char *buf,
		       size_t n);
const char *px_entry_type_name(enum px_entry_type t);

/* ------------------------------------------------------------------ pipeline.c */
#define PX_MAX_PORTS 16
#define PX_PIPELINE_MAX_BYTES (4u << 20)   /* pipeline files larger than this are refused */
#define PX_PIPELINE_MAX_DEPTH 32           /* YAML nesting deeper than this is refused */

/* A key: value as written in the YAML, validated later against a schema. */
struct px_raw_opt {
	char *key;
	char **texts;    /* n scalars */
	int n;
	bool is_list;
	int line, col;
};

struct px_raw_map {
	struct px_raw_opt *opts;
	int n;
	int line, col;   /* the mapping itself */
};

struct px_input_ref {
	char *port;      /* "" for positional (input:/inputs:), else a port name */
	char *ref;       /* "enc", "enc.seq", "input", "label" */
	int line, col;
};

struct px_node_spec {
	char *name, *kind, *impl;
	struct px_input_ref inputs[PX_MAX_PORTS];
	int n_inputs;
	struct px_raw_map opts;      /* everything else: the kind's options (and ports) */
	int line, col;
};

struct px_split_spec {
	bool present;
	char *source;
	struct px_raw_map opts;      /* source + view keys */
	int line, col;
};

struct px_pipeline {
	char *file;
	char *name;
	uint64_t seed;
	char **plugin_paths;
	int n_plugin_paths;
	char **prefer;               /* "kind=plugin" */
	int n_prefer;
	struct px_raw_map data_defaults;  /* view keys given under data: apply to every split */
	struct px_split_spec split[3];    /* train, val, test */
	double val_split;
	int val_split_line, val_split_col;
	struct px_node_spec *nodes;
	int n_nodes;
	char *loss_kind;
	struct px_input_ref loss_input, loss_target;
	struct px_raw_map loss_opts;
	int loss_line, loss_col;
	struct px_raw_map train;     /* core train keys (validated against px_train_schema) */
	char *optim_kind;
	struct px_raw_map optim_opts;
	int optim_line, optim_col;
	struct px_raw_map schedule;
	struct px_raw_map eval;
	char *text;                  /* the (overridden) source text, for the run dir */
};
enum { PX_SPLIT_TRAIN, PX_SPLIT_VAL, PX_SPLIT_TEST };
extern const char *const px_split_names[3];

/* Parse and check the structure of a pipeline file. overrides: "key.path=value" (--set).
 * Errors are "file:line:col: message". Caller frees with px_pipeline_free. */
int px_pipeline_load(const char *path, const char *const *overrides, int n_overrides,
		     struct px_pipeline **out, struct px_error *err);
void px_pipeline_free(struct px_pipeline *p);
/* Build a validated config from raw options (only the keys in `schema`; keys for which
 * `skip(key, ctx)` is true are left alone). `vars` substitutes "$name" values. */
struct px_vars {
	const char *names[8];
	int64_t values[8];
	int n;
};
int px_config_from_raw(const struct px_param_spec *schema, const struct px_raw_map *m,
		       const char *file, const char *owner,
		       bool (*skip)(const char *key, void *ctx), void *ctx,
		       const struct px_vars *vars, struct px_config **out, struct px_error *err);

/* ------------------------------------------------------------------ model.c */
struct px_src {
	int node;   /* producing node, or -1 for the data: port 0 = x ("input"), 1 = y ("label") */
	int port;
};

struct px_node {
	const struct px_node_spec *spec;       /* borrowed from the pipeline */
	const char *name;
	const struct px_entry *entry;          /* which plugin provides the kind */
	const struct px_layer_ops *ops;
	void *self;
	struct px_config *cfg;
	char *owner;                           /* "node 'enc' (lstm)" for messages */
	int n_in;                              /* connected slots (variadic ports expand) */
	struct px_src in[PX_MAX_PORTS];        /* .node == -2: unconnected optional port */
	struct px_shape in_shape[PX_MAX_PORTS];
	int n_out;
	struct px_shape out_shape[PX_MAX_PORTS];
	int param_begin, n_params;             /* range in model->params */
	bool needs_grad;                       /* has params upstream or itself */
	bool label_needed;                     /* takes the data's label through a required port */
	uint64_t rng_salt;                     /* hash of the name: per-node random streams */
	/* per step (step arena) */
	const struct px_tensor *in_t[PX_MAX_PORTS];
	struct px_tensor *out_t[PX_MAX_PORTS];
	struct px_tensor *d_out_t[PX_MAX_PORTS];
};

struct px_data_info {
	struct px_shape x, y;         /* dim[0] == -1 */
	bool x_ragged, y_ragged;
	struct px_vars vars;          /* $classes, $x_vocab, $y_vocab, $features, $steps */
};

struct px_model {
	struct px_registry *reg;      /* borrowed */
	const struct px_pipeline *pl; /* borrowed */
	struct px_node *nodes;
	int n_nodes;
	struct px_arena *param_arena;
	struct px_arena *step_arena;
	struct px_param **params;     /* all params and buffers, node order */
	char **param_names;           /* "<node>.<param>" */
	int n_params;
	struct px_param **trainable;  /* the trainable subset, same order */
	int n_trainable;
	struct px_data_info data;
	uint64_t seed;
	int64_t step;                 /* forward calls so far: seeds per-step rngs */
	struct px_tensor *x, *y;      /* the current batch (step arena) */
	void (*report)(void *ctx, const char *node, const char *series, int64_t step, double value);
	void *report_ctx;
};

int px_model_build(struct px_registry *reg, const struct px_pipeline *pl,
		   const struct px_data_info *data, uint64_t seed, struct px_model **out,
		   struct px_error *err);
void px_model_free(struct px_model *m);
/* Resolve "node" or "node.port" (or "input"/"label") to a source. */
int px_model_resolve(const struct px_model *m, const char *ref, int before, struct px_src *out,
		     struct px_error *err);
/* Run every node. x, y: the batch (y may be NULL when no node uses the label). Resets the
 * step arena first (x and y must not live in it). */
int px_model_forward(struct px_model *m, const struct px_tensor *x, const struct px_tensor *y,
		     bool train, struct px_error *err);
const struct px_tensor *px_model_output(const struct px_model *m, struct px_src s);
/* The gradient buffer of an output (zeroed, allocated on first use), for the loss to write. */
struct px_tensor *px_model_grad_buffer(struct px_model *m, struct px_src s);
/* Backward through all nodes in reverse order; parameter grads are ADDED to. */
int px_model_backward(struct px_model *m, struct px_error *err);
void px_model_zero_grad(struct px_model *m);
/* Name of the first node whose output holds NaN/Inf (forward order), or NULL. */
const char *px_model_find_nonfinite_output(const struct px_model *m);
/* Name of the first node, walking backward from the loss, whose parameter grads or output
 * grads hold NaN/Inf, or NULL. */
const char *px_model_find_nonfinite_grad(const struct px_model *m);
void px_model_reset_state(struct px_model *m);
int64_t px_model_param_count(const struct px_model *m, int node);  /* trainable elements */

/* ------------------------------------------------------------------ session.c */
struct px_comm;
/* Everything a command needs: pipeline, plugins, data, model, loss, optimizer. */
struct px_session_opts {
	const char *const *plugin_paths;   /* --plugin-path (dirs or files) */
	int n_plugin_paths;
	const char *const *prefer;         /* --prefer kind=plugin */
	int n_prefer;
	const char *const *overrides;      /* --set key.path=value */
	int n_overrides;
	bool want_test;                    /* load data.test too */
	bool no_optimizer;                 /* eval/predict: skip the optimizer */
};

struct px_metrics {
	double loss;         /* mean */
	double accuracy;     /* NAN when it does not apply */
	int64_t examples;
	int n_extra;
	char extra_name[16][32];
	double extra[16];
};

struct px_session {
	struct px_pipeline *pl;
	struct px_registry *reg;
	struct px_dataset ds[3];           /* train, val, test */
	bool have[3];
	struct px_data_info info;
	struct px_model *model;
	const struct px_entry *loss_entry;
	void *loss;
	struct px_config *loss_cfg;
	struct px_src loss_in, loss_target;
	const struct px_entry *optim_entry;
	struct px_config *optim_cfg;
	void *optim;
	struct px_config *train_cfg;       /* px_train_schema */
	struct px_config *eval_cfg;        /* px_eval_schema */
	struct px_config *sched_cfg;       /* px_schedule_schema */
	int threads;
	/* data-parallel training (core/comm.h): the ranks px_train trains with, borrowed;
	 * NULL: this process alone */
	struct px_comm *comm;
	/* the evaluation px_train's report made after training (split PX_SPLIT_*, -1: none), so
	 * that `plexus train` prints it without evaluating the split again */
	int final_split;
	struct px_metrics final;
};
extern const struct px_param_spec px_train_schema[];
extern const struct px_param_spec px_eval_schema[];

/* Errors in the pipeline (syntax, keys, kinds, shapes) return PX_ERR_PARSE/INVALID/NOTFOUND/
 * SHAPE; data that cannot be read returns PX_ERR_IO/CORRUPT. */
int px_session_open(const char *pipeline, const struct px_session_opts *o,
		    struct px_session **out, struct px_error *err);
void px_session_free(struct px_session *s);
/* Batch of examples idx[0..n) of split `split` into the model's... caller arena. */
int px_session_batch(struct px_session *s, int split, const int64_t *idx, int64_t n,
		     struct px_arena *a, struct px_tensor **x, struct px_tensor **y,
		     struct px_error *err);

/* ------------------------------------------------------------------ train.c */
/* Train from scratch or resume; writes run_dir/{model.safetensors,state.safetensors,
 * metrics.csv,pipeline.yaml}. */
int px_train(struct px_session *s, const char *run_dir, bool resume, struct px_error *err);
/* Evaluate a split (PX_SPLIT_*) with the current parameters. */
int px_evaluate(struct px_session *s, int split, struct px_metrics *out, struct px_error *err);
/* Load parameters (and buffers) from a checkpoint: every missing, unexpected or mis-shaped
 * tensor is named. */
int px_load_params(struct px_session *s, const char *path, struct px_error *err);
int px_save_checkpoint(struct px_session *s, const char *path, int64_t epoch, int64_t step,
		       struct px_error *err);

/* ------------------------------------------------------------------ metrics.c */
/* Extra evaluation metrics (eval: section), accumulated batch by batch. */
struct px_metric_acc;
int px_metrics_begin(struct px_session *s, int split, struct px_metric_acc **out,
		     struct px_error *err);
/* After the model's forward (train=false) on batch (x, y). */
int px_metrics_batch(struct px_session *s, struct px_metric_acc *a, const struct px_tensor *x,
		     const struct px_tensor *y, struct px_error *err);
/* Adds the extra metrics to m and frees a. */
int px_metrics_end(struct px_session *s, struct px_metric_acc *a, struct px_metrics *m,
		   struct px_error *err);
void px_metrics_add(struct px_metrics *m, const char *name, double value);

/* ------------------------------------------------------------------ image.c */
/* 8-bit PNG (libpng), written atomically. channels 1 (gray) or 3 (RGB); rows top first. */
int px_png_write(const char *path, int width, int height, int channels,
		 const unsigned char *pixels, struct px_error *err);
/* A grid of pictures (run-report figures, `plexus reconstruct --grid`): one example per
 * column, one source per row; rows[r] + b * per holds example b as [channels][h][w] (per >= its
 * channels * h * w). Pictures are 2 gray (128) pixels apart. Values are clamped to [0, 1], or
 * with `stretch` mapped from [min(0, lo), max(1, hi)] of each picture's finite values;
 * non-finite values are 0. Returns malloc'ed pixels [H][W][channels] (caller frees) with *W,
 * *H set; NULL when out of memory or either side exceeds max_side. */
unsigned char *px_picture_grid(const float *const *rows, int n_rows, int64_t n, int64_t per,
			       int channels, int64_t h, int64_t w, bool stretch, int64_t max_side,
			       int *W, int *H);
/* A value in [0,1] to a perceptual colour map (viridis-like), RGB bytes. */
void px_colormap(double v, unsigned char rgb[3]);
/* Heat map of m[rows][cols] (values in [0,1] are expected; others are clamped), with labels
 * (may be NULL), as a self-contained SVG document (text escaped). Caller frees. */
char *px_svg_heatmap(const float *m, int rows, int cols, const char *const *row_labels,
		     const char *const *col_labels, const char *title, const char *x_title,
		     const char *y_title);
/* The same as a PNG (cells of `cell` pixels, no text). */
int px_png_heatmap(const char *path, const float *m, int rows, int cols, int cell,
		   struct px_error *err);
/* XML-escape s (&, <, >, ", ') into a new string. Caller frees. */
char *px_xml_escape(const char *s);
int px_write_file_atomic(const char *path, const void *data, size_t n, struct px_error *err);

/* ------------------------------------------------------------------ chart.c (reports) */
/* SVG charts for run reports. Every text is escaped with px_sbuf_add_html; values are clamped
 * to +-PX_CHART_MAX and non-finite points are gaps, so no coordinate is ever NaN or Inf. The
 * SVGs are meant to be inlined in HTML (and are standalone documents too). Caller frees;
 * NULL when out of memory. */
#define PX_CHART_MAX 1e300
#define PX_AXIS_MAX_TICKS 12

struct px_axis {
	double lo, hi;   /* the axis range: whole multiples of step */
	double step;     /* 1, 2 or 5 x 10^k */
	int n_ticks;     /* ticks at lo, lo + step, ..., hi */
	bool log;        /* the values are log10 of the data (labels show 10^v) */
};
/* A "nice" axis covering [dmin, dmax] with at most max_ticks (3..PX_AXIS_MAX_TICKS) ticks;
 * integer: steps of at least 1. An empty or constant range is widened around its value. */
void px_axis_nice(double dmin, double dmax, int max_ticks, bool integer, struct px_axis *ax);
double px_axis_tick(const struct px_axis *ax, int i);   /* tick i (exactly 0 near 0) */
/* The text of tick value v: as many decimals as the step needs ("0.25", "3", "2.0e+07"). */
void px_axis_label(const struct px_axis *ax, double v, char *buf, size_t n);

struct px_series {
	const char *name;   /* legend text, NULL: not in the legend */
	const double *x;    /* NULL: 1, 2, ..., n */
	const double *y;
	int n;
	int color;          /* palette index (px_chart_color) */
	bool dashed;
};

struct px_line_chart {
	const char *title, *x_title, *y_title;
	int width, height;  /* 0: 560 x 300 */
	bool log_y;         /* log10 y axis: values <= 0 become gaps */
	bool x_integer;     /* x ticks at whole numbers (epochs) */
	const struct px_series *series;
	int n_series;
};
char *px_chart_line_svg(const struct px_line_chart *c);
/* Heat map of m[rows][cols] with a colour bar over the finite values (anchored at 0 when none
 * is negative); labels NULL or one per row / column; non-finite cells are grey. */
char *px_chart_heatmap_svg(const float *m, int rows, int cols, const char *const *row_labels,
			   const char *const *col_labels, const char *title, const char *x_title,
			   const char *y_title);
/* Append s (NULL: nothing) escaped for HTML text and attribute values: & < > " ' as
 * entities, invalid UTF-8 and control characters other than \n and \t as U+FFFD, \r dropped. */
void px_sbuf_add_html(struct px_sbuf *b, const char *s);
char *px_html_escape(const char *s);   /* the same into a new string; caller frees */
const char *px_chart_color(int i);     /* "#1f77b4", ... (ten colours, cycling) */

/* ------------------------------------------------------------------ report.c */
/* The host services of ABI 1.1 (plugin.h), filled into struct px_host by px_registry_new.
 * They act only while the registry's figure pass runs (r->figures != NULL). */
const struct px_figure_batch *px_host_figure_batch(const struct px_host *h);
int px_host_figure_image(const struct px_host *h, const char *node, const char *title,
			 int width, int height, int channels, const unsigned char *pixels);
int px_host_figure_heatmap(const struct px_host *h, const char *node, const char *title,
			   const float *m, int rows, int cols, const char *const *row_labels,
			   const char *const *col_labels, const char *x_title, const char *y_title);
int px_host_figure_series(const struct px_host *h, const char *node, const char *title,
			  const char *x_title, const char *y_title, const double *y, int n);

/* The end of px_train. train_rc == 0: evaluates the final metrics (test split, else val),
 * runs the figure pass (one batch in evaluation mode with the figure services on, then its
 * backward for the per-step series layers report), and writes run_dir/summary.json,
 * run_dir/figures/ and run_dir/report.html; returns 0 or the failure. train_rc != 0: writes
 * summary.json and report.html showing err's message (best effort) and returns train_rc with
 * err untouched. */
int px_report_train_end(struct px_session *s, const char *run_dir, int train_rc,
			struct px_error *err);
/* Render report.html from run directories (metrics.csv, summary.json, pipeline.yaml,
 * figures/): one run, or n > 1 runs with their curves overlaid. out NULL: the first run's
 * report.html. */
int px_report_write(const char *const *run_dirs, int n, const char *out, struct px_error *err);

#endif
