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
 *     double (locale-independent) and must be finite;
 *   - duplicate keys in an object are an error; trailing text after the value is an error.
 * Errors: PX_ERR_PARSE, message "source:line:col: what" (just "what" when source is NULL;
 * err->line/col are set either way, 1-based, col counted in bytes). */
#define PX_JSON_MAX_DEPTH 64
#define PX_JSON_MAX_BYTES 100000000u
#define PX_JSON_MAX_VALUES (1 << 22)

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

#endif
