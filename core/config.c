/* Option values of one node (or optimizer, loss, data split), validated against a schema. */
#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "internal.h"

static const char *type_name(enum px_type t)
{
	switch (t) {
	case PX_T_INT: return "an integer";
	case PX_T_FLOAT: return "a number";
	case PX_T_BOOL: return "true or false";
	case PX_T_ENUM: return "one of the choices";
	case PX_T_STRING: return "a string";
	case PX_T_INTS: return "a list of integers";
	case PX_T_FLOATS: return "a list of numbers";
	}
	return "?";
}

bool px_parse_int(const char *s, int64_t *out)
{
	if (!s || !*s)
		return false;
	errno = 0;
	char *end;
	long long v = strtoll(s, &end, 10);
	if (errno || *end)
		return false;
	*out = v;
	return true;
}

bool px_parse_double(const char *s, double *out)
{
	if (!s || !*s)
		return false;
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno == ERANGE || end == s)
		return false;
	if (*end == '/') {  /* a ratio such as 1/255 */
		char *end2;
		double d = strtod(end + 1, &end2);
		if (end2 == end + 1 || *end2 || d == 0.0)
			return false;
		v /= d;
		end = end2;
	}
	if (*end || !isfinite(v))
		return false;
	*out = v;
	return true;
}

static bool parse_bool(const char *s, bool *out)
{
	if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "yes") || !strcmp(s, "on")) {
		*out = true;
		return true;
	}
	if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "no") || !strcmp(s, "off")) {
		*out = false;
		return true;
	}
	return false;
}

static bool enum_has(const char *choices, const char *s)
{
	size_t n = strlen(s);
	const char *p = choices;
	while (p && *p) {
		const char *bar = strchr(p, '|');
		size_t len = bar ? (size_t)(bar - p) : strlen(p);
		if (len == n && !strncmp(p, s, n))
			return true;
		p = bar ? bar + 1 : NULL;
	}
	return false;
}

/* "a, b or c" from "a|b|c" */
static void choices_text(const char *choices, char *buf, size_t n)
{
	size_t used = 0;
	const char *p = choices;
	buf[0] = 0;
	int count = 0;
	for (const char *q = choices; *q; q++)
		count += *q == '|';
	int i = 0;
	while (p && *p && used < n) {
		const char *bar = strchr(p, '|');
		int len = bar ? (int)(bar - p) : (int)strlen(p);
		const char *sep = i == 0 ? "" : (i == count ? " or " : ", ");
		used += (size_t)snprintf(buf + used, n - used, "%s%.*s", sep, len, p);
		p = bar ? bar + 1 : NULL;
		i++;
	}
}

void px_schema_keys(const struct px_param_spec *schema, char *buf, size_t n)
{
	size_t used = 0;
	buf[0] = 0;
	for (const struct px_param_spec *s = schema; s && s->key && used < n; s++)
		used += (size_t)snprintf(buf + used, n - used, "%s%s", s == schema ? "" : ", ",
					 s->key);
}

static void value_free(struct px_value *v)
{
	free(v->s);
	free(v->ints);
	free(v->floats);
	memset(v, 0, sizeof *v);
}

static int range_error(struct px_config *c, const struct px_param_spec *sp, int line, int col,
		       struct px_error *err, double v)
{
	char lo[32] = "", hi[32] = "";
	if (sp->min > -PX_UNBOUNDED)
		snprintf(lo, sizeof lo, "%g", sp->min);
	if (sp->max < PX_UNBOUNDED)
		snprintf(hi, sizeof hi, "%g", sp->max);
	if (*lo && *hi)
		return px_error_at(err, PX_ERR_INVALID, c->file, line, col,
				   "%s: '%s' is %g, must be between %s and %s", c->owner, sp->key, v,
				   lo, hi);
	if (*lo)
		return px_error_at(err, PX_ERR_INVALID, c->file, line, col,
				   "%s: '%s' is %g, must be at least %s", c->owner, sp->key, v, lo);
	return px_error_at(err, PX_ERR_INVALID, c->file, line, col,
			   "%s: '%s' is %g, must be at most %s", c->owner, sp->key, v, hi);
}

static bool in_range(const struct px_param_spec *sp, double v)
{
	return v >= sp->min && v <= sp->max;
}

static int parse_one(struct px_config *c, const struct px_param_spec *sp, const char *text,
		     int line, int col, struct px_value *v, int idx, struct px_error *err)
{
	if (!*text && sp->type != PX_T_STRING) {   /* `units:` with nothing after it */
		char ch[256];
		if (sp->type == PX_T_ENUM)
			choices_text(sp->choices, ch, sizeof ch);
		return px_error_at(err, PX_ERR_INVALID, c->file, line, col,
				   "%s: '%s' has no value (it must be %s)", c->owner, sp->key,
				   sp->type == PX_T_ENUM ? ch : type_name(sp->type));
	}
	switch (sp->type) {
	case PX_T_INT:
	case PX_T_INTS: {
		int64_t x;
		if (!px_parse_int(text, &x))
			return px_error_at(err, PX_ERR_INVALID, c->file, line, col,
					   "%s: '%s' must be %s, got '%s'", c->owner, sp->key,
					   sp->type == PX_T_INT ? "an integer" : "a list of integers", text);
		if (!in_range(sp, (double)x))
			return range_error(c, sp, line, col, err, (double)x);
		if (sp->type == PX_T_INT)
			v->i = x;
		else
			v->ints[idx] = x;
		return 0;
	}
	case PX_T_FLOAT:
	case PX_T_FLOATS: {
		double x;
		if (!px_parse_double(text, &x))
			return px_error_at(err, PX_ERR_INVALID, c->file, line, col,
					   "%s: '%s' must be %s, got '%s'", c->owner, sp->key,
					   sp->type == PX_T_FLOAT ? "a number" : "a list of numbers", text);
		if (!in_range(sp, x))
			return range_error(c, sp, line, col, err, x);
		if (sp->type == PX_T_FLOAT)
			v->f = x;
		else
			v->floats[idx] = x;
		return 0;
	}
	case PX_T_BOOL:
		if (!parse_bool(text, &v->b))
			return px_error_at(err, PX_ERR_INVALID, c->file, line, col,
					   "%s: '%s' must be true or false, got '%s'", c->owner,
					   sp->key, text);
		return 0;
	case PX_T_ENUM:
		if (!enum_has(sp->choices, text)) {
			char ch[256];
			choices_text(sp->choices, ch, sizeof ch);
			return px_error_at(err, PX_ERR_INVALID, c->file, line, col,
					   "%s: '%s' must be %s, got '%s'", c->owner, sp->key, ch, text);
		}
		/* fall through */
	case PX_T_STRING:
		v->s = px_strdup(text);
		return v->s ? 0 : px_error_set(err, PX_ERR_NOMEM, "out of memory");
	}
	return px_error_set(err, PX_ERR_INVALID, "bad schema type");
}

static bool is_list_type(enum px_type t)
{
	return t == PX_T_INTS || t == PX_T_FLOATS;
}

int px_config_set(struct px_config *c, const char *key, const char *const *texts, int n,
		  bool is_list, int line, int col, struct px_error *err)
{
	struct px_config_entry *e = px_config_find(c, key);
	if (!e) {
		char keys[512];
		px_schema_keys(c->n ? c->e[0].spec : NULL, keys, sizeof keys);
		return px_error_at(err, PX_ERR_INVALID, c->file, line, col,
				   "%s: unknown key '%s' (valid keys: %s)", c->owner, key,
				   c->n ? keys : "none");
	}
	const struct px_param_spec *sp = e->spec;
	if (is_list != is_list_type(sp->type)) {
		/* a single number where a list is expected is a list of one */
		if (!(is_list_type(sp->type) && n == 1)) {
			char ch[256];
			if (sp->type == PX_T_ENUM)
				choices_text(sp->choices, ch, sizeof ch);
			return px_error_at(err, PX_ERR_INVALID, c->file, line, col,
					   "%s: '%s' must be %s, not %s", c->owner, key,
					   sp->type == PX_T_ENUM ? ch : type_name(sp->type),
					   is_list ? "a list" : "a single value");
		}
	}
	struct px_value v;
	memset(&v, 0, sizeof v);
	if (is_list_type(sp->type)) {
		v.n = n;
		if (sp->type == PX_T_INTS)
			v.ints = calloc((size_t)(n ? n : 1), sizeof *v.ints);
		else
			v.floats = calloc((size_t)(n ? n : 1), sizeof *v.floats);
		if (!v.ints && !v.floats)
			return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	}
	for (int i = 0; i < n; i++) {
		int rc = parse_one(c, sp, texts[i], line, col, &v, i, err);
		if (rc) {
			value_free(&v);
			return rc;
		}
	}
	value_free(&e->v);
	e->v = v;
	e->set = true;
	e->line = line;
	e->col = col;
	return 0;
}

/* Split a default like "[784, 64]" or "3" into texts. */
static int set_default(struct px_config *c, struct px_config_entry *e, struct px_error *err)
{
	const char *d = e->spec->def;
	if (!d)
		return 0;
	if (!is_list_type(e->spec->type)) {
		int rc = px_config_set(c, e->spec->key, &d, 1, false, 0, 0, err);
		e->set = false;
		return rc;
	}
	char buf[256];
	snprintf(buf, sizeof buf, "%s", d);
	const char *texts[32];
	int n = 0;
	char *save = NULL;
	for (char *tok = strtok_r(buf, "[], ", &save); tok && n < 32;
	     tok = strtok_r(NULL, "[], ", &save))
		texts[n++] = tok;
	int rc = px_config_set(c, e->spec->key, texts, n, true, 0, 0, err);
	e->set = false;
	return rc;
}

/* Defaults applied; NULL on out of memory, or (with err filled) on a default that does not
 * satisfy its own schema. */
static struct px_config *config_new(const struct px_param_spec *schema, const char *file,
				    const char *owner, struct px_error *err)
{
	struct px_config *c = calloc(1, sizeof *c);
	if (!c)
		return NULL;
	int n = 0;
	while (schema && schema[n].key)
		n++;
	c->e = calloc((size_t)(n ? n : 1), sizeof *c->e);
	c->file = px_strdup(file);
	c->owner = px_strdup(owner ? owner : "options");
	if (!c->e || (file && !c->file) || !c->owner) {
		px_config_free(c);
		px_error_set(err, PX_ERR_NOMEM, "out of memory");
		return NULL;
	}
	c->n = n;
	for (int i = 0; i < n; i++)
		c->e[i].spec = &schema[i];
	for (int i = 0; i < n; i++) {
		bool typed = schema[i].type >= PX_T_INT && schema[i].type <= PX_T_FLOATS;
		if (!typed || (schema[i].type == PX_T_ENUM && !schema[i].choices)) {
			px_error_set(err, PX_ERR_INVALID, "option '%s' has no valid type%s", schema[i].key,
				     typed ? " (an enum without choices)" : "");
			px_config_free(c);
			return NULL;
		}
		if (set_default(c, &c->e[i], err)) {
			px_config_free(c);
			return NULL;
		}
	}
	return c;
}

struct px_config *px_config_new(const struct px_param_spec *schema, const char *file,
				const char *owner)
{
	struct px_error err = {0};
	struct px_config *c = config_new(schema, file, owner, &err);
	/* schemas are checked when their plugin loads (px_schema_check): a bad one here is a
	 * programmer error in the core's own tables */
	if (!c && err.code != PX_ERR_NOMEM && err.code) {
		fprintf(stderr, "plexus: bad schema: %s\n", err.msg);
		assert(!"schema invalid");
	}
	return c;
}

int px_schema_check(const struct px_param_spec *schema, struct px_error *err)
{
	struct px_error e = {0};
	struct px_config *c = config_new(schema, NULL, "schema", &e);
	if (!c)
		return px_error_set(err, e.code ? e.code : PX_ERR_NOMEM, "%s", e.msg);
	for (int i = 0; i < c->n; i++)
		for (int j = 0; j < i; j++)
			if (!strcmp(c->e[i].spec->key, c->e[j].spec->key)) {
				px_config_free(c);
				return px_error_set(err, PX_ERR_INVALID, "option '%s' declared twice",
						    schema[i].key);
			}
	px_config_free(c);
	return 0;
}

void px_config_free(struct px_config *c)
{
	if (!c)
		return;
	for (int i = 0; i < c->n; i++)
		value_free(&c->e[i].v);
	free(c->e);
	free(c->file);
	free(c->owner);
	free(c);
}

struct px_config_entry *px_config_find(struct px_config *c, const char *key)
{
	for (int i = 0; i < c->n; i++)
		if (!strcmp(c->e[i].spec->key, key))
			return &c->e[i];
	return NULL;
}

int px_config_check_required(const struct px_config *c, struct px_error *err)
{
	for (int i = 0; i < c->n; i++) {
		if (!c->e[i].spec->def && !c->e[i].set)
			return px_error_at(err, PX_ERR_INVALID, c->file, c->line, c->col,
					   "%s: missing required key '%s' (%s)", c->owner,
					   c->e[i].spec->key, c->e[i].spec->doc ? c->e[i].spec->doc : "");
	}
	return 0;
}

static const struct px_config_entry *get(const struct px_config *c, const char *key,
					 enum px_type t)
{
	for (int i = 0; i < c->n; i++) {
		if (!strcmp(c->e[i].spec->key, key)) {
			if (c->e[i].spec->type != t && !(t == PX_T_STRING && c->e[i].spec->type == PX_T_ENUM)) {
				fprintf(stderr, "plexus: option '%s' read as the wrong type\n", key);
				abort();
			}
			return &c->e[i];
		}
	}
	fprintf(stderr, "plexus: option '%s' is not in the schema of %s\n", key, c->owner);
	abort();
}

int64_t px_config_int(const struct px_config *c, const char *key)
{
	return get(c, key, PX_T_INT)->v.i;
}

double px_config_float(const struct px_config *c, const char *key)
{
	return get(c, key, PX_T_FLOAT)->v.f;
}

bool px_config_bool(const struct px_config *c, const char *key)
{
	return get(c, key, PX_T_BOOL)->v.b;
}

const char *px_config_str(const struct px_config *c, const char *key)
{
	return get(c, key, PX_T_STRING)->v.s;
}

int px_config_ints(const struct px_config *c, const char *key, const int64_t **out)
{
	const struct px_config_entry *e = get(c, key, PX_T_INTS);
	*out = e->v.ints;
	return e->v.n;
}

int px_config_floats(const struct px_config *c, const char *key, const double **out)
{
	const struct px_config_entry *e = get(c, key, PX_T_FLOATS);
	*out = e->v.floats;
	return e->v.n;
}

bool px_config_is_set(const struct px_config *c, const char *key)
{
	for (int i = 0; i < c->n; i++)
		if (!strcmp(c->e[i].spec->key, key))
			return c->e[i].set;
	return false;
}

int px_config_error(const struct px_config *c, struct px_error *err, int code, const char *key,
		    const char *fmt, ...)
{
	char body[PX_ERROR_MSG_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(body, sizeof body, fmt, ap);
	va_end(ap);
	int line = c->line, col = c->col;
	for (int i = 0; key && i < c->n; i++)
		if (!strcmp(c->e[i].spec->key, key) && c->e[i].line) {
			line = c->e[i].line;
			col = c->e[i].col;
		}
	return px_error_at(err, code, c->file, line, col, "%s: %s", c->owner, body);
}

/* ---- inline options for tests and plugin-check: "hidden: 8, layers: 2" ---- */
int px_config_parse(const struct px_param_spec *schema, const char *options,
		    struct px_config **out, struct px_error *err)
{
	*out = NULL;
	struct px_config *c = px_config_new(schema, NULL, "options");
	if (!c)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	char *text = px_asprintf("{%s}", options ? options : "");
	yaml_parser_t p;
	yaml_document_t doc;
	int rc = 0;
	if (!text || !yaml_parser_initialize(&p)) {
		free(text);
		px_config_free(c);
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	}
	yaml_parser_set_input_string(&p, (const unsigned char *)text, strlen(text));
	if (!yaml_parser_load(&p, &doc)) {
		rc = px_error_set(err, PX_ERR_PARSE, "options: %s", p.problem ? p.problem : "syntax error");
		goto done_parser;
	}
	yaml_node_t *root = yaml_document_get_root_node(&doc);
	if (!root || root->type != YAML_MAPPING_NODE) {
		rc = px_error_set(err, PX_ERR_PARSE, "options: not a mapping");
		goto done;
	}
	for (yaml_node_pair_t *pr = root->data.mapping.pairs.start;
	     pr < root->data.mapping.pairs.top; pr++) {
		yaml_node_t *k = yaml_document_get_node(&doc, pr->key);
		yaml_node_t *v = yaml_document_get_node(&doc, pr->value);
		if (k->type != YAML_SCALAR_NODE) {
			rc = px_error_set(err, PX_ERR_PARSE, "options: keys must be names");
			goto done;
		}
		const char *key = (const char *)k->data.scalar.value;
		if (v->type == YAML_SCALAR_NODE) {
			const char *t = (const char *)v->data.scalar.value;
			rc = px_config_set(c, key, &t, 1, false, 0, 0, err);
		} else if (v->type == YAML_SEQUENCE_NODE) {
			const char *texts[64];
			int n = 0;
			for (yaml_node_item_t *it = v->data.sequence.items.start;
			     it < v->data.sequence.items.top && n < 64; it++) {
				yaml_node_t *e = yaml_document_get_node(&doc, *it);
				texts[n++] = e->type == YAML_SCALAR_NODE ? (const char *)e->data.scalar.value : "";
			}
			rc = px_config_set(c, key, texts, n, true, 0, 0, err);
		} else {
			rc = px_error_set(err, PX_ERR_PARSE, "options: '%s' must be a value", key);
		}
		if (rc)
			goto done;
	}
	rc = px_config_check_required(c, err);
done:
	yaml_document_delete(&doc);
done_parser:
	yaml_parser_delete(&p);
	free(text);
	if (rc)
		px_config_free(c);
	else
		*out = c;
	return rc;
}
