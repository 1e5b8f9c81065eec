/* json.c — a strict JSON reader for untrusted text (safetensors headers) and writer helpers.
 *
 * Recursive descent with a depth cap, so a hostile "[[[[..." cannot exhaust the stack; a
 * value count cap bounds memory; every string is checked to be UTF-8. See internal.h. */
#include <locale.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct jp {
	const char *p, *end, *start;
	const char *line_start;
	int line;
	int depth;
	long values;
	const char *source;
	struct px_error *err;
};

static int jp_fail_at(struct jp *jp, const char *at, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int jp_fail_at(struct jp *jp, const char *at, const char *fmt, ...)
{
	char body[PX_ERROR_MSG_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(body, sizeof body, fmt, ap);
	va_end(ap);
	/* `at` is on the current line: newlines only occur in whitespace, which we have
	 * consumed up to `at` when it is ahead of line_start. */
	int col = at >= jp->line_start ? (int)(at - jp->line_start) + 1 : 1;
	return px_error_at(jp->err, PX_ERR_PARSE, jp->source, jp->line, col, "%s", body);
}

/* A printable rendering of the byte at p for messages: 'x' or byte 0xff. */
static const char *show_byte(const char *p, const char *end, char buf[16])
{
	if (p >= end)
		return "end of input";
	unsigned char c = (unsigned char)*p;
	if (c > 0x20 && c < 0x7f)
		snprintf(buf, 16, "'%c'", c);
	else
		snprintf(buf, 16, "byte 0x%02x", c);
	return buf;
}

static void jp_skip_ws(struct jp *jp)
{
	while (jp->p < jp->end) {
		char c = *jp->p;
		if (c == '\n') {
			jp->line++;
			jp->line_start = jp->p + 1;
		} else if (c != ' ' && c != '\t' && c != '\r') {
			break;
		}
		jp->p++;
	}
}

/* Length of the UTF-8 sequence at s[0..n) if valid (1..4), else 0. Strict: no overlongs,
 * no surrogates (U+D800..DFFF), nothing above U+10FFFF. */
static int utf8_seq(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];
	if (c < 0x80)
		return 1;
	int len;
	unsigned char lo = 0x80, hi = 0xbf;   /* allowed range of the second byte */
	if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		if (c == 0xe0)
			lo = 0xa0;                 /* overlong */
		else if (c == 0xed)
			hi = 0x9f;                 /* surrogates */
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		if (c == 0xf0)
			lo = 0x90;                 /* overlong */
		else if (c == 0xf4)
			hi = 0x8f;                 /* > U+10FFFF */
	} else {
		return 0;                          /* continuation byte, 0xc0/0xc1, 0xf5.. */
	}
	if (n < (size_t)len || s[1] < lo || s[1] > hi)
		return 0;
	for (int i = 2; i < len; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	return len;
}

bool px_utf8_valid(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;
	while (i < n) {
		int k = utf8_seq(p + i, n - i);
		if (!k)
			return false;
		i += (size_t)k;
	}
	return true;
}

static size_t utf8_put(char *out, uint32_t cp)
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xc0 | (cp >> 6));
		out[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xe0 | (cp >> 12));
		out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		out[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	out[0] = (char)(0xf0 | (cp >> 18));
	out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	out[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

static int hex4(const char *p, const char *end, uint32_t *out)
{
	uint32_t v = 0;
	if (end - p < 4)
		return -1;
	for (int i = 0; i < 4; i++) {
		char c = p[i];
		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= (uint32_t)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v |= (uint32_t)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			v |= (uint32_t)(c - 'A' + 10);
		else
			return -1;
	}
	*out = v;
	return 0;
}

/* Parse a string at jp->p (the opening quote). The decoded text is never longer than the
 * encoded one (an escape of k bytes yields at most k bytes), so one allocation suffices. */
static int jp_string(struct jp *jp, char **out, size_t *out_len)
{
	const char *q = jp->p + 1;
	const char *close = q;
	/* find the closing quote first to size the buffer */
	while (close < jp->end && *close != '"')
		close += (*close == '\\' && close + 1 < jp->end) ? 2 : 1;
	if (close >= jp->end)
		return jp_fail_at(jp, jp->p, "unterminated string");
	char *s = malloc((size_t)(close - q) + 1);
	if (!s)
		return px_error_set(jp->err, PX_ERR_NOMEM, "out of memory parsing JSON");
	size_t n = 0;
	while (q < close) {
		unsigned char c = (unsigned char)*q;
		if (c < 0x20) {
			jp_fail_at(jp, q, "control character 0x%02x in a string (must be escaped)", c);
			goto fail;
		}
		if (c >= 0x80) {
			int k = utf8_seq((const unsigned char *)q, (size_t)(close - q));
			if (!k) {
				jp_fail_at(jp, q, "invalid UTF-8 (byte 0x%02x) in a string", c);
				goto fail;
			}
			memcpy(s + n, q, (size_t)k);
			n += (size_t)k;
			q += k;
			continue;
		}
		if (c != '\\') {
			s[n++] = (char)c;
			q++;
			continue;
		}
		char e = q[1];   /* q + 1 < close: the scan above skipped escaped quotes */
		const char *esc = q;
		q += 2;
		switch (e) {
		case '"': s[n++] = '"'; break;
		case '\\': s[n++] = '\\'; break;
		case '/': s[n++] = '/'; break;
		case 'b': s[n++] = '\b'; break;
		case 'f': s[n++] = '\f'; break;
		case 'n': s[n++] = '\n'; break;
		case 'r': s[n++] = '\r'; break;
		case 't': s[n++] = '\t'; break;
		case 'u': {
			uint32_t cp;
			if (hex4(q, close, &cp)) {
				jp_fail_at(jp, esc, "invalid \\u escape (needs 4 hex digits)");
				goto fail;
			}
			q += 4;
			if (cp >= 0xdc00 && cp <= 0xdfff) {
				jp_fail_at(jp, esc, "unpaired low surrogate \\u%04x", (unsigned)cp);
				goto fail;
			}
			if (cp >= 0xd800 && cp <= 0xdbff) {
				uint32_t lo;
				if (close - q < 6 || q[0] != '\\' || q[1] != 'u' || hex4(q + 2, close, &lo) ||
				    lo < 0xdc00 || lo > 0xdfff) {
					jp_fail_at(jp, esc, "unpaired high surrogate \\u%04x", (unsigned)cp);
					goto fail;
				}
				q += 6;
				cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
			}
			if (cp == 0) {
				jp_fail_at(jp, esc, "\\u0000 is not allowed in a string");
				goto fail;
			}
			n += utf8_put(s + n, cp);
			break;
		}
		default:
			if ((unsigned char)e < 0x20 || (unsigned char)e >= 0x7f)
				jp_fail_at(jp, esc, "invalid escape: backslash before byte 0x%02x",
					   (unsigned char)e);
			else
				jp_fail_at(jp, esc, "invalid escape '\\%c'", e);
			goto fail;
		}
	}
	s[n] = 0;
	jp->p = close + 1;
	*out = s;
	*out_len = n;
	return 0;
fail:
	free(s);
	return PX_ERR_PARSE;   /* every failure above is a jp_fail_at */
}

/* Copy [p, p+n) to buf as a C-locale number string for strtod: replace '.' by the locale's
 * decimal point when it differs (setlocale(LC_NUMERIC, "de_DE") must not change JSON). */
static double parse_double(const char *p, size_t n)
{
	char buf[512];
	const char *dp = localeconv()->decimal_point;
	size_t dpl = dp ? strlen(dp) : 1;
	size_t o = 0;
	for (size_t i = 0; i < n && o + dpl + 1 < sizeof buf; i++) {
		if (p[i] == '.' && dp && strcmp(dp, ".") != 0) {
			memcpy(buf + o, dp, dpl);
			o += dpl;
		} else {
			buf[o++] = p[i];
		}
	}
	buf[o] = 0;
	return strtod(buf, NULL);
}

static int jp_number(struct jp *jp, struct px_json *v)
{
	const char *s = jp->p, *q = s;
	bool neg = false, is_int = true;
	if (q < jp->end && *q == '-') {
		neg = true;
		q++;
	}
	if (q >= jp->end || *q < '0' || *q > '9')
		return jp_fail_at(jp, s, "invalid number");
	if (*q == '0' && q + 1 < jp->end && q[1] >= '0' && q[1] <= '9')
		return jp_fail_at(jp, s, "invalid number (leading zero)");
	uint64_t mag = 0;
	bool overflow = false;
	const uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
	while (q < jp->end && *q >= '0' && *q <= '9') {
		unsigned d = (unsigned)(*q - '0');
		if (mag > (limit - d) / 10)
			overflow = true;
		else
			mag = mag * 10 + d;
		q++;
	}
	if (q < jp->end && *q == '.') {
		is_int = false;
		q++;
		if (q >= jp->end || *q < '0' || *q > '9')
			return jp_fail_at(jp, s, "invalid number (digit expected after '.')");
		while (q < jp->end && *q >= '0' && *q <= '9')
			q++;
	}
	if (q < jp->end && (*q == 'e' || *q == 'E')) {
		is_int = false;
		q++;
		if (q < jp->end && (*q == '+' || *q == '-'))
			q++;
		if (q >= jp->end || *q < '0' || *q > '9')
			return jp_fail_at(jp, s, "invalid number (digit expected in the exponent)");
		while (q < jp->end && *q >= '0' && *q <= '9')
			q++;
	}
	if ((size_t)(q - s) > 400)
		return jp_fail_at(jp, s, "number too long (%zu characters)", (size_t)(q - s));
	if (is_int) {
		if (overflow)
			return jp_fail_at(jp, s, "integer %.*s does not fit in 64 bits",
					  (int)(q - s), s);
		v->type = PX_JSON_INT;
		/* -(2^63) is representable: negate in unsigned arithmetic */
		v->i = neg ? (int64_t)(0 - mag) : (int64_t)mag;
		v->f = (double)v->i;
	} else {
		double d = parse_double(s, (size_t)(q - s));
		if (d - d != 0)   /* inf (NaN cannot come out of the grammar) */
			return jp_fail_at(jp, s, "number %.*s is out of range", (int)(q - s), s);
		v->type = PX_JSON_FLOAT;
		v->f = d;
	}
	jp->p = q;
	return 0;
}

static int jp_value(struct jp *jp, struct px_json *v);

static int grow(void **arr, int *cap, int need, size_t elem)
{
	if (need <= *cap)
		return 0;
	int nc = *cap ? *cap * 2 : 4;
	while (nc < need)
		nc *= 2;
	void *p = realloc(*arr, (size_t)nc * elem);
	if (!p)
		return -1;
	*arr = p;
	*cap = nc;
	return 0;
}

struct keyref {
	const char *key;
	int idx;
};

static int keyref_cmp(const void *a, const void *b)
{
	const struct keyref *x = a, *y = b;
	int c = strcmp(x->key, y->key);
	return c ? c : (x->idx > y->idx) - (x->idx < y->idx);
}

/* First duplicate key of an object (the later occurrence), -1 if none. O(n log n). */
static int find_duplicate(char **keys, int n)
{
	if (n < 2)
		return -1;
	if (n <= 8) {
		for (int j = 1; j < n; j++)
			for (int i = 0; i < j; i++)
				if (!strcmp(keys[i], keys[j]))
					return j;
		return -1;
	}
	struct keyref *r = malloc((size_t)n * sizeof *r);
	if (!r)
		return -2;
	for (int i = 0; i < n; i++)
		r[i] = (struct keyref){keys[i], i};
	qsort(r, (size_t)n, sizeof *r, keyref_cmp);
	int dup = -1;
	for (int i = 1; i < n; i++)
		if (!strcmp(r[i - 1].key, r[i].key) && (dup < 0 || r[i].idx < dup))
			dup = r[i].idx;
	free(r);
	return dup;
}

static int jp_object(struct jp *jp, struct px_json *v)
{
	int cap = 0, kcap = 0, pcap = 0;
	const char **kpos = NULL;   /* where each key starts and its line, for duplicate */
	int *klines = NULL, lcap = 0;   /* key messages */
	int rc;
	v->type = PX_JSON_OBJECT;
	jp->p++;   /* '{' */
	jp_skip_ws(jp);
	if (jp->p < jp->end && *jp->p == '}') {
		jp->p++;
		return 0;
	}
	for (;;) {
		char b[16];
		jp_skip_ws(jp);
		if (jp->p >= jp->end || *jp->p != '"') {
			rc = jp_fail_at(jp, jp->p, "expected a string key, got %s",
					show_byte(jp->p, jp->end, b));
			goto fail;
		}
		if (grow((void **)&v->v, &cap, v->n + 1, sizeof *v->v) ||
		    grow((void **)&v->k, &kcap, v->n + 1, sizeof *v->k) ||
		    grow((void **)&kpos, &pcap, v->n + 1, sizeof *kpos) ||
		    grow((void **)&klines, &lcap, v->n + 1, sizeof *klines)) {
			rc = px_error_set(jp->err, PX_ERR_NOMEM, "out of memory parsing JSON");
			goto fail;
		}
		kpos[v->n] = jp->p;
		klines[v->n] = jp->line;
		size_t klen;
		rc = jp_string(jp, &v->k[v->n], &klen);
		if (rc)
			goto fail;
		memset(&v->v[v->n], 0, sizeof v->v[v->n]);
		v->n++;   /* key owned now; value zeroed, safe to free */
		jp_skip_ws(jp);
		if (jp->p >= jp->end || *jp->p != ':') {
			rc = jp_fail_at(jp, jp->p, "expected ':' after an object key, got %s",
					show_byte(jp->p, jp->end, b));
			goto fail;
		}
		jp->p++;
		jp_skip_ws(jp);
		rc = jp_value(jp, &v->v[v->n - 1]);
		if (rc)
			goto fail;
		jp_skip_ws(jp);
		if (jp->p < jp->end && *jp->p == ',') {
			jp->p++;
			continue;
		}
		if (jp->p < jp->end && *jp->p == '}') {
			jp->p++;
			break;
		}
		rc = jp_fail_at(jp, jp->p, "expected ',' or '}' in an object, got %s",
				show_byte(jp->p, jp->end, b));
		goto fail;
	}
	int dup = find_duplicate(v->k, v->n);
	if (dup == -2) {
		rc = px_error_set(jp->err, PX_ERR_NOMEM, "out of memory parsing JSON");
		goto fail;
	}
	if (dup >= 0) {
		char shown[96];
		char *e = px_json_escape(v->k[dup]);
		snprintf(shown, sizeof shown, "%s", e ? e : "?");
		if (e && strlen(e) >= sizeof shown)
			memcpy(shown + sizeof shown - 4, "...", 4);
		free(e);
		/* the key may be on an earlier line than the parser is now */
		const char *ls = kpos[dup];
		while (ls > jp->start && ls[-1] != '\n')
			ls--;
		rc = px_error_at(jp->err, PX_ERR_PARSE, jp->source, klines[dup],
				 (int)(kpos[dup] - ls) + 1, "duplicate key \"%s\"", shown);
		goto fail;
	}
	free(kpos);
	free(klines);
	return 0;
fail:
	free(kpos);
	free(klines);
	return rc;
}

static int jp_array(struct jp *jp, struct px_json *v)
{
	int cap = 0;
	v->type = PX_JSON_ARRAY;
	jp->p++;   /* '[' */
	jp_skip_ws(jp);
	if (jp->p < jp->end && *jp->p == ']') {
		jp->p++;
		return 0;
	}
	for (;;) {
		char b[16];
		jp_skip_ws(jp);
		if (grow((void **)&v->v, &cap, v->n + 1, sizeof *v->v))
			return px_error_set(jp->err, PX_ERR_NOMEM, "out of memory parsing JSON");
		memset(&v->v[v->n], 0, sizeof v->v[v->n]);
		v->n++;
		int rc = jp_value(jp, &v->v[v->n - 1]);
		if (rc)
			return rc;
		jp_skip_ws(jp);
		if (jp->p < jp->end && *jp->p == ',') {
			jp->p++;
			continue;
		}
		if (jp->p < jp->end && *jp->p == ']') {
			jp->p++;
			return 0;
		}
		return jp_fail_at(jp, jp->p, "expected ',' or ']' in an array, got %s",
				  show_byte(jp->p, jp->end, b));
	}
}

static bool has_word(const struct jp *jp, const char *w)
{
	size_t n = strlen(w);
	return (size_t)(jp->end - jp->p) >= n && !memcmp(jp->p, w, n);
}

/* Parse one value at jp->p (whitespace already skipped) into the zeroed *v. On failure *v
 * may hold partial children: the caller frees it. */
static int jp_value(struct jp *jp, struct px_json *v)
{
	char b[16];
	v->line = jp->line;
	v->col = (int)(jp->p - jp->line_start) + 1;
	if (++jp->values > PX_JSON_MAX_VALUES)
		return jp_fail_at(jp, jp->p, "more than %d values", PX_JSON_MAX_VALUES);
	if (jp->p >= jp->end)
		return jp_fail_at(jp, jp->p, "unexpected end of input, expected a value");
	switch (*jp->p) {
	case '{':
	case '[': {
		if (jp->depth >= PX_JSON_MAX_DEPTH)
			return jp_fail_at(jp, jp->p, "nesting deeper than %d levels",
					  PX_JSON_MAX_DEPTH);
		jp->depth++;
		int rc = *jp->p == '{' ? jp_object(jp, v) : jp_array(jp, v);
		jp->depth--;
		return rc;
	}
	case '"':
		v->type = PX_JSON_STRING;
		return jp_string(jp, &v->s, &v->len);
	case 't':
	case 'f':
	case 'n':
		if (has_word(jp, "true")) {
			v->type = PX_JSON_BOOL;
			v->b = true;
			jp->p += 4;
		} else if (has_word(jp, "false")) {
			v->type = PX_JSON_BOOL;
			jp->p += 5;
		} else if (has_word(jp, "null")) {
			v->type = PX_JSON_NULL;
			jp->p += 4;
		} else {
			return jp_fail_at(jp, jp->p, "invalid literal (expected true, false or null)");
		}
		return 0;
	default:
		if (*jp->p == '-' || (*jp->p >= '0' && *jp->p <= '9'))
			return jp_number(jp, v);
		return jp_fail_at(jp, jp->p, "unexpected %s, expected a value",
				  show_byte(jp->p, jp->end, b));
	}
}

static void json_free_members(struct px_json *j)
{
	free(j->s);
	for (int i = 0; i < j->n; i++) {
		json_free_members(&j->v[i]);
		if (j->k)
			free(j->k[i]);
	}
	free(j->v);
	free(j->k);
}

void px_json_free(struct px_json *j)
{
	if (!j)
		return;
	json_free_members(j);
	free(j);
}

int px_json_parse(const char *text, size_t len, const char *source, struct px_json **out,
		  struct px_error *err)
{
	*out = NULL;
	if (len > PX_JSON_MAX_BYTES)
		return px_error_at(err, PX_ERR_PARSE, source, 0, 0,
				   "JSON text is %zu bytes, more than the %u allowed", len,
				   PX_JSON_MAX_BYTES);
	struct jp jp = {
		.p = text, .end = text + len, .start = text, .line_start = text, .line = 1,
		.source = source, .err = err,
	};
	struct px_json *root = calloc(1, sizeof *root);
	if (!root)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory parsing JSON");
	jp_skip_ws(&jp);
	int rc = jp_value(&jp, root);
	if (rc)
		goto fail;
	jp_skip_ws(&jp);
	if (jp.p < jp.end) {
		char b[16];
		rc = jp_fail_at(&jp, jp.p, "unexpected %s after the JSON value",
				show_byte(jp.p, jp.end, b));
		goto fail;
	}
	*out = root;
	return 0;
fail:
	px_json_free(root);
	return rc;
}

const struct px_json *px_json_get(const struct px_json *obj, const char *key)
{
	if (!obj || obj->type != PX_JSON_OBJECT)
		return NULL;
	for (int i = 0; i < obj->n; i++)
		if (!strcmp(obj->k[i], key))
			return &obj->v[i];
	return NULL;
}

const char *px_json_type_name(enum px_json_type t)
{
	switch (t) {
	case PX_JSON_NULL: return "null";
	case PX_JSON_BOOL: return "boolean";
	case PX_JSON_INT: return "integer";
	case PX_JSON_FLOAT: return "number";
	case PX_JSON_STRING: return "string";
	case PX_JSON_ARRAY: return "array";
	case PX_JSON_OBJECT: return "object";
	}
	return "?";
}

/* ------------------------------------------------------------------ writing */
static bool sbuf_reserve(struct px_sbuf *b, size_t extra)
{
	if (b->oom)
		return false;
	if (extra > SIZE_MAX / 2 - b->len) {
		b->oom = true;
		return false;
	}
	size_t need = b->len + extra + 1;
	if (need <= b->cap)
		return true;
	size_t nc = b->cap ? b->cap : 64;
	while (nc < need)
		nc *= 2;
	char *s = realloc(b->s, nc);
	if (!s) {
		b->oom = true;
		return false;
	}
	b->s = s;
	b->cap = nc;
	b->s[b->len] = 0;
	return true;
}

void px_sbuf_addn(struct px_sbuf *b, const char *s, size_t n)
{
	if (!sbuf_reserve(b, n))
		return;
	memcpy(b->s + b->len, s, n);
	b->len += n;
	b->s[b->len] = 0;
}

void px_sbuf_add(struct px_sbuf *b, const char *s)
{
	px_sbuf_addn(b, s, strlen(s));
}

void px_sbuf_addf(struct px_sbuf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || !sbuf_reserve(b, (size_t)n))
		return;
	va_start(ap, fmt);
	vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

/* Escaped form of s appended to b (no quotes). */
static void sbuf_escape(struct px_sbuf *b, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = strlen(s);
	size_t i = 0;
	while (i < n) {
		size_t run = i;   /* copy runs of bytes that need no escaping at once */
		while (run < n && p[run] >= 0x20 && p[run] < 0x80 && p[run] != '"' && p[run] != '\\')
			run++;
		if (run > i) {
			px_sbuf_addn(b, s + i, run - i);
			i = run;
			continue;
		}
		unsigned char c = p[i];
		if (c >= 0x80) {
			int k = utf8_seq(p + i, n - i);
			if (k) {
				px_sbuf_addn(b, s + i, (size_t)k);
				i += (size_t)k;
			} else {
				px_sbuf_add(b, "\xef\xbf\xbd");   /* U+FFFD */
				i++;
			}
			continue;
		}
		switch (c) {
		case '"': px_sbuf_add(b, "\\\""); break;
		case '\\': px_sbuf_add(b, "\\\\"); break;
		case '\b': px_sbuf_add(b, "\\b"); break;
		case '\f': px_sbuf_add(b, "\\f"); break;
		case '\n': px_sbuf_add(b, "\\n"); break;
		case '\r': px_sbuf_add(b, "\\r"); break;
		case '\t': px_sbuf_add(b, "\\t"); break;
		default: px_sbuf_addf(b, "\\u%04x", c); break;
		}
		i++;
	}
}

void px_sbuf_add_json_str(struct px_sbuf *b, const char *s)
{
	px_sbuf_add(b, "\"");
	sbuf_escape(b, s);
	px_sbuf_add(b, "\"");
}

void px_sbuf_free(struct px_sbuf *b)
{
	free(b->s);
	*b = (struct px_sbuf){0};
}

char *px_json_escape(const char *s)
{
	struct px_sbuf b = {0};
	sbuf_reserve(&b, strlen(s));
	sbuf_escape(&b, s);
	if (b.oom) {
		px_sbuf_free(&b);
		return NULL;
	}
	return b.s;
}
