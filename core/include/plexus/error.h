/* plexus — error reporting.
 *
 * Functions that can fail return 0 (PX_OK) or a negative PX_ERR_* status and fill a
 * caller-supplied struct px_error. The struct is a fixed buffer: no heap memory crosses a
 * plugin boundary. `msg` holds the complete one-line message, already prefixed with
 * "file:line:col: " when a place is known (line/col are then also set, 1-based). */
#ifndef PLEXUS_ERROR_H
#define PLEXUS_ERROR_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Marks the public API: libplexus is built with hidden visibility and exports only these. */
#if defined(__GNUC__)
#define PX_API __attribute__((visibility("default")))
#else
#define PX_API
#endif

enum px_status {
	PX_OK = 0,
	PX_ERR_NOMEM = -1,      /* allocation failed */
	PX_ERR_INVALID = -2,    /* bad argument or option value */
	PX_ERR_SHAPE = -3,      /* shapes do not fit */
	PX_ERR_IO = -4,         /* file could not be read or written */
	PX_ERR_PARSE = -5,      /* malformed pipeline or file */
	PX_ERR_PLUGIN = -6,     /* a plugin was refused */
	PX_ERR_ABI = -7,        /* ABI version mismatch */
	PX_ERR_NOTFOUND = -8,   /* unknown kind, node, tensor or key */
	PX_ERR_NUMERIC = -9,    /* NaN or Inf */
	PX_ERR_CORRUPT = -10,   /* a checkpoint or data file lies about itself */
	PX_ERR_UNSUPPORTED = -11
};

#define PX_ERROR_MSG_MAX 1024

struct px_error {
	int code;  /* the px_status returned alongside, 0 if none */
	int line;  /* 1-based, 0 when unknown */
	int col;   /* 1-based, 0 when unknown */
	char msg[PX_ERROR_MSG_MAX];
};

/* Fill `err` (may be NULL) with a printf-style message; returns `code` so callers can write
 * `return px_error_set(err, PX_ERR_SHAPE, "...")`. */
PX_API int px_error_set(struct px_error *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Same, prefixed with "file:line:col: " (line/col 1-based; file may be NULL). */
PX_API int px_error_at(struct px_error *err, int code, const char *file, int line, int col,
		const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* Prefix an existing message with context: "ctx: old message". */
PX_API int px_error_prefix(struct px_error *err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

PX_API void px_error_clear(struct px_error *err);

PX_API const char *px_status_name(int code);

#ifdef __cplusplus
}
#endif
#endif
