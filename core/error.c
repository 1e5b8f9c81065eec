/* Error reporting: fixed-size messages, never heap. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

int px_error_set(struct px_error *err, int code, const char *fmt, ...)
{
	if (!err)
		return code;
	va_list ap;
	va_start(ap, fmt);
	err->code = code;
	err->line = 0;
	err->col = 0;
	vsnprintf(err->msg, sizeof err->msg, fmt, ap);
	va_end(ap);
	return code;
}

int px_error_at(struct px_error *err, int code, const char *file, int line, int col,
		const char *fmt, ...)
{
	if (!err)
		return code;
	char body[PX_ERROR_MSG_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(body, sizeof body, fmt, ap);
	va_end(ap);
	err->code = code;
	err->line = line;
	err->col = col;
	if (file && line > 0)
		snprintf(err->msg, sizeof err->msg, "%s:%d:%d: %s", file, line, col, body);
	else if (file)
		snprintf(err->msg, sizeof err->msg, "%s: %s", file, body);
	else
		snprintf(err->msg, sizeof err->msg, "%s", body);
	return code;
}

int px_error_prefix(struct px_error *err, const char *fmt, ...)
{
	if (!err)
		return 0;
	char pre[PX_ERROR_MSG_MAX], old[PX_ERROR_MSG_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(pre, sizeof pre, fmt, ap);
	va_end(ap);
	memcpy(old, err->msg, sizeof old);
	snprintf(err->msg, sizeof err->msg, "%s: %s", pre, old);
	return err->code;
}

void px_error_clear(struct px_error *err)
{
	if (err)
		memset(err, 0, sizeof *err);
}

const char *px_status_name(int code)
{
	switch (code) {
	case PX_OK: return "ok";
	case PX_ERR_NOMEM: return "out of memory";
	case PX_ERR_INVALID: return "invalid";
	case PX_ERR_SHAPE: return "shape mismatch";
	case PX_ERR_IO: return "i/o error";
	case PX_ERR_PARSE: return "parse error";
	case PX_ERR_PLUGIN: return "plugin refused";
	case PX_ERR_ABI: return "ABI mismatch";
	case PX_ERR_NOTFOUND: return "not found";
	case PX_ERR_NUMERIC: return "NaN or Inf";
	case PX_ERR_CORRUPT: return "corrupt file";
	case PX_ERR_UNSUPPORTED: return "unsupported";
	default: return "unknown error";
	}
}
