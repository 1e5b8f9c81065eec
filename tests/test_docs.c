/* docs/pipelines.md stays in sync with the code: every option of every built-in layer, loss,
 * optimizer and data source, and every train, eval, schedule and data-view key, has a row in
 * the reference, and every documented row names a key the code has (with the code's type and
 * default).
 *
 * The document is read as markdown: "## " starts a chapter, "### " a section, and a table row
 * whose first cell is a backticked word (| `units` | int | required | ... |) documents that
 * key, with its type in the second cell and its default in the third ("required", or the
 * default in backticks). Fenced code blocks are skipped. */
#include <check.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define DOC_PATH "docs/pipelines.md"

/* ------------------------------------------------------------------ the parsed document */
struct doc_key {
	char *key;
	char *type;      /* second cell, trimmed ("" when absent) */
	char *def;       /* third cell, trimmed ("" when absent) */
	int line;
};

struct doc_section {
	char *chapter;   /* text of the "## " heading ("" before the first) */
	char *heading;   /* text of the "### " heading ("" for a chapter's own text) */
	int line;        /* of the heading */
	struct doc_key *keys;
	int n, cap;
};

struct doc {
	struct doc_section *s;
	int n, cap;
};

static char *dup_trim(const char *s, size_t n)
{
	while (n && (*s == ' ' || *s == '\t')) {
		s++;
		n--;
	}
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
		n--;
	char *d = malloc(n + 1);
	ck_assert(d);
	memcpy(d, s, n);
	d[n] = 0;
	return d;
}

/* A heading's text without backticks around it: "### `linear`" and "### linear" agree. */
static char *heading_text(const char *s, size_t n)
{
	char *t = dup_trim(s, n);
	size_t len = strlen(t);
	if (len >= 2 && t[0] == '`' && t[len - 1] == '`') {
		memmove(t, t + 1, len - 2);
		t[len - 2] = 0;
	}
	return t;
}

static void doc_add_section(struct doc *d, const char *chapter, char *heading, int line)
{
	if (d->n == d->cap) {
		d->cap = d->cap ? 2 * d->cap : 32;
		d->s = realloc(d->s, (size_t)d->cap * sizeof *d->s);
		ck_assert(d->s);
	}
	struct doc_section *s = &d->s[d->n++];
	memset(s, 0, sizeof *s);
	s->chapter = px_strdup(chapter);
	s->heading = heading;
	s->line = line;
	ck_assert(s->chapter);
}

/* Cells of a table row "| a | b \| c | d |": up to max cells, "\|" kept as a literal '|'. */
static int split_row(const char *line, size_t n, char **cells, int max)
{
	int nc = 0;
	size_t i = 0;
	while (i < n && (line[i] == ' ' || line[i] == '\t'))
		i++;
	i++;  /* the leading '|' */
	char buf[4096];
	size_t b = 0;
	for (; i < n && nc < max; i++) {
		if (line[i] == '\\' && i + 1 < n && line[i + 1] == '|') {
			if (b < sizeof buf - 1)
				buf[b++] = '|';
			i++;
		} else if (line[i] == '|') {
			cells[nc++] = dup_trim(buf, b);
			b = 0;
		} else if (b < sizeof buf - 1) {
			buf[b++] = line[i];
		}
	}
	return nc;
}

/* The key a first cell documents: "`units`" -> "units"; NULL for anything else. */
static char *cell_key(const char *cell)
{
	size_t n = strlen(cell);
	if (n < 3 || cell[0] != '`' || cell[n - 1] != '`')
		return NULL;
	for (size_t i = 1; i < n - 1; i++)
		if (cell[i] == '`' || cell[i] == ' ')
			return NULL;
	return dup_trim(cell + 1, n - 2);
}

static void doc_parse(struct doc *d, const char *text)
{
	memset(d, 0, sizeof *d);
	char *chapter = px_strdup("");
	ck_assert(chapter);
	doc_add_section(d, chapter, px_strdup(""), 1);
	bool fenced = false;
	int line = 0;
	for (const char *p = text; *p;) {
		const char *e = strchr(p, '\n');
		size_t n = e ? (size_t)(e - p) : strlen(p);
		line++;
		const char *q = p;
		while (q < p + n && (*q == ' ' || *q == '\t'))
			q++;
		if (!strncmp(q, "```", 3) || !strncmp(q, "~~~", 3)) {
			fenced = !fenced;
		} else if (fenced) {
			/* code: no headings, no tables */
		} else if (n >= 3 && !strncmp(p, "## ", 3)) {
			free(chapter);
			chapter = heading_text(p + 3, n - 3);
			doc_add_section(d, chapter, px_strdup(""), line);
		} else if (n >= 4 && !strncmp(p, "### ", 4)) {
			doc_add_section(d, chapter, heading_text(p + 4, n - 4), line);
		} else if (q < p + n && *q == '|') {
			char *cells[3] = {NULL, NULL, NULL};
			int nc = split_row(p, n, cells, 3);
			char *key = nc ? cell_key(cells[0]) : NULL;
			if (key) {
				struct doc_section *s = &d->s[d->n - 1];
				if (s->n == s->cap) {
					s->cap = s->cap ? 2 * s->cap : 8;
					s->keys = realloc(s->keys, (size_t)s->cap * sizeof *s->keys);
					ck_assert(s->keys);
				}
				s->keys[s->n++] = (struct doc_key){
					key, px_strdup(nc > 1 ? cells[1] : ""), px_strdup(nc > 2 ? cells[2] : ""),
					line,
				};
			}
			for (int i = 0; i < nc; i++)
				free(cells[i]);
		}
		p += n;
		if (*p == '\n')
			p++;
	}
	free(chapter);
}

static void doc_free(struct doc *d)
{
	for (int i = 0; i < d->n; i++) {
		struct doc_section *s = &d->s[i];
		for (int k = 0; k < s->n; k++) {
			free(s->keys[k].key);
			free(s->keys[k].type);
			free(s->keys[k].def);
		}
		free(s->keys);
		free(s->chapter);
		free(s->heading);
	}
	free(d->s);
	memset(d, 0, sizeof *d);
}

static void doc_load(struct doc *d)
{
	const char *src = getenv("PLEXUS_SRC");
	char path[4096];
	snprintf(path, sizeof path, "%s/%s", src ? src : ".", DOC_PATH);
	char *text;
	size_t len;
	struct px_error err;
	int rc = px_read_file(path, 1u << 24, &text, &len, &err);
	ck_assert_msg(rc == 0, "cannot read the pipeline reference: %s", err.msg);
	doc_parse(d, text);
	free(text);
}

/* ------------------------------------------------------------------ comparing with schemas */
/* Every difference found, one line each. */
struct report {
	struct px_sbuf text;
	int n;
};

static void report_add(struct report *r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void report_add(struct report *r, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	px_sbuf_add(&r->text, r->n ? "\n" : "");
	px_sbuf_add(&r->text, line);
	r->n++;
}

static void report_check(struct report *r)
{
	ck_assert_msg(!r->text.oom, "out of memory");
	ck_assert_msg(r->n == 0, "%d difference%s between " DOC_PATH " and the code:\n%s", r->n,
		      r->n == 1 ? "" : "s", r->text.s);
	px_sbuf_free(&r->text);
}

static const char *type_word(enum px_type t)
{
	static const char *const names[] = {
		[PX_T_INT] = "int", [PX_T_FLOAT] = "float", [PX_T_BOOL] = "bool",
		[PX_T_ENUM] = "enum", [PX_T_STRING] = "string", [PX_T_INTS] = "ints",
		[PX_T_FLOATS] = "floats",
	};
	return (size_t)t < sizeof names / sizeof names[0] && names[t] ? names[t] : "?";
}

/* The documented default as the schema writes it: "required" -> NULL, "`1e-3`" -> "1e-3",
 * "`""`" -> "". Returns false when the cell is neither. */
static bool doc_default(const char *cell, char *buf, size_t n, bool *required)
{
	size_t len = strlen(cell);
	*required = !strcmp(cell, "required");
	if (*required)
		return true;
	if (len < 2 || cell[0] != '`' || cell[len - 1] != '`')
		return false;
	snprintf(buf, n, "%.*s", (int)(len - 2), cell + 1);
	if (!strcmp(buf, "\"\""))
		buf[0] = 0;
	return true;
}

/* How a schema key is spelled in the YAML (and so in the docs). */
typedef const char *(*yaml_name_fn)(const char *key, char *buf, size_t n);

static const char *same_name(const char *key, char *buf, size_t n)
{
	(void)buf;
	(void)n;
	return key;
}

/* train keys given nested in the YAML: checkpoint: {every: 5} is the schema's
 * checkpoint_every (or checkpoint.every). */
static const char *train_yaml_name(const char *key, char *buf, size_t n)
{
	static const char *const nested[] = {"checkpoint", "early_stopping"};
	for (size_t i = 0; i < sizeof nested / sizeof nested[0]; i++) {
		size_t l = strlen(nested[i]);
		if (!strncmp(key, nested[i], l) && key[l] == '_') {
			snprintf(buf, n, "%s.%s", nested[i], key + l + 1);
			return buf;
		}
	}
	return key;
}

/* The documented keys of `chapter`: of section `heading`, or of every section when heading is
 * NULL. Returns how many sections matched. */
static int gather(const struct doc *d, const char *chapter, const char *heading,
		  const struct doc_key **keys, int max, int *n)
{
	int found = 0;
	*n = 0;
	for (int i = 0; i < d->n; i++) {
		const struct doc_section *s = &d->s[i];
		if (strcmp(s->chapter, chapter) || (heading && strcmp(s->heading, heading)))
			continue;
		found++;
		for (int k = 0; k < s->n && *n < max; k++)
			keys[(*n)++] = &s->keys[k];
	}
	return found;
}

/* Compare the documented keys of one owner ("layer 'linear'", "train keys") with its schema,
 * both ways, and the type and default of each. */
static void check_keys(struct report *r, const char *owner, const char *place,
		       const struct doc_key *const *keys, int n, const struct px_param_spec *schema,
		       yaml_name_fn yaml_name)
{
	char buf[128], dbuf[256];
	for (const struct px_param_spec *sp = schema; sp && sp->key; sp++) {
		const char *name = yaml_name(sp->key, buf, sizeof buf);
		const struct doc_key *k = NULL;
		int count = 0;
		for (int i = 0; i < n; i++)
			if (!strcmp(keys[i]->key, name)) {
				k = k ? k : keys[i];
				count++;
			}
		if (!k) {
			report_add(r, DOC_PATH ": %s: key '%s' is in the code but not documented "
				   "(add a row | `%s` | %s | ... | under %s)", owner, name, name,
				   type_word(sp->type), place);
			continue;
		}
		if (count > 1)
			report_add(r, DOC_PATH ":%d: %s: key '%s' is documented %d times", k->line,
				   owner, name, count);
		if (strcmp(k->type, type_word(sp->type)))
			report_add(r, DOC_PATH ":%d: %s: key '%s' is documented as type '%s', the "
				   "code says '%s'", k->line, owner, name, k->type,
				   type_word(sp->type));
		bool required;
		if (!doc_default(k->def, dbuf, sizeof dbuf, &required))
			report_add(r, DOC_PATH ":%d: %s: key '%s': default '%s' must be 'required' "
				   "or a value in backticks", k->line, owner, name, k->def);
		else if (required != !sp->def || (sp->def && strcmp(dbuf, sp->def)))
			report_add(r, DOC_PATH ":%d: %s: key '%s' is documented with default %s, "
				   "the code says %s%s%s", k->line, owner, name, k->def,
				   sp->def ? "`" : "", sp->def ? sp->def : "required", sp->def ? "`" : "");
	}
	for (int i = 0; i < n; i++) {
		bool known = false;
		for (const struct px_param_spec *sp = schema; sp && sp->key && !known; sp++)
			known = !strcmp(keys[i]->key, yaml_name(sp->key, buf, sizeof buf));
		bool first = true;  /* report a stray key once */
		for (int j = 0; j < i && first; j++)
			first = strcmp(keys[j]->key, keys[i]->key) != 0;
		if (!known && first)
			report_add(r, DOC_PATH ":%d: %s: key '%s' is documented but the code has no "
				   "such key", keys[i]->line, owner, keys[i]->key);
	}
}

/* One "### kind" section per kind under "## chapter", its table matching the kind's schema;
 * and no section for a kind the code lacks. */
struct kind_ref {
	const char *kind;
	const struct px_param_spec *schema;
};

static void check_kinds(struct report *r, const struct doc *d, const char *chapter,
			const char *what, const struct kind_ref *kinds, int n_kinds)
{
	const struct doc_key *keys[256];
	int n;
	if (!gather(d, chapter, NULL, keys, 256, &n)) {
		report_add(r, DOC_PATH ": no chapter '## %s'", chapter);
		return;
	}
	for (int i = 0; i < n_kinds; i++) {
		char place[160];
		snprintf(place, sizeof place, "'### %s' in '## %s'", kinds[i].kind, chapter);
		int found = gather(d, chapter, kinds[i].kind, keys, 256, &n);
		if (!found) {
			report_add(r, DOC_PATH ": %s '%s' has no section '### %s' under '## %s'", what,
				   kinds[i].kind, kinds[i].kind, chapter);
			continue;
		}
		if (found > 1)
			report_add(r, DOC_PATH ": %s '%s' has %d sections under '## %s'", what,
				   kinds[i].kind, found, chapter);
		char owner[96];
		snprintf(owner, sizeof owner, "%s '%s'", what, kinds[i].kind);
		check_keys(r, owner, place, keys, n, kinds[i].schema, same_name);
	}
	for (int i = 0; i < d->n; i++) {
		const struct doc_section *s = &d->s[i];
		if (strcmp(s->chapter, chapter) || !*s->heading)
			continue;
		bool known = false;
		for (int k = 0; k < n_kinds && !known; k++)
			known = !strcmp(kinds[k].kind, s->heading);
		if (!known)
			report_add(r, DOC_PATH ":%d: '### %s' under '## %s' documents no built-in %s",
				   s->line, s->heading, chapter, what);
	}
}

/* The keys of a whole chapter (all its sections together) against one schema. */
static void check_chapter(struct report *r, const struct doc *d, const char *chapter,
			  const char *what, const struct px_param_spec *schema, yaml_name_fn yaml_name)
{
	const struct doc_key *keys[256];
	int n;
	char place[160];
	snprintf(place, sizeof place, "'## %s'", chapter);
	if (!gather(d, chapter, NULL, keys, 256, &n)) {
		report_add(r, DOC_PATH ": no chapter '## %s'", chapter);
		return;
	}
	char owner[96];
	snprintf(owner, sizeof owner, "%s keys", what);
	check_keys(r, owner, place, keys, n, schema, yaml_name);
}

/* ------------------------------------------------------------------ the checker itself */
static const char sample_md[] =
	"# title\n"
	"## Built-in layers\n"
	"intro | not a row\n"
	"### `dense`\n"
	"| key | type | default | range | doc |\n"
	"|---|---|---|---|---|\n"
	"| `units` | int | required | 1 .. | out \\| features |\n"
	"| `bias` | bool | `false` | | a bias |\n"
	"| `gone` | int | `3` | | removed from the code |\n"
	"```yaml\n"
	"## not a chapter\n"
	"| `fenced` | int | `1` |\n"
	"```\n"
	"### stale\n"
	"| `x` | int | `1` | | |\n"
	"## Losses\n"
	"| `top` | string | `\"\"` | | |\n";

static const struct px_param_spec sample_schema[] = {
	{"units", PX_T_INT, NULL, 1, 1e9, NULL, "units"},
	{"bias", PX_T_BOOL, "true", 0, 0, NULL, "bias"},
	{"act", PX_T_ENUM, "relu", 0, 0, "relu|tanh", "activation"},
	{NULL, 0, NULL, 0, 0, NULL, NULL},
};

START_TEST(test_parser_reads_chapters_sections_and_table_keys_outside_code)
{
	struct doc d;
	doc_parse(&d, sample_md);
	const struct doc_key *keys[16];
	int n;
	ck_assert_int_eq(gather(&d, "Built-in layers", "dense", keys, 16, &n), 1);
	ck_assert_int_eq(n, 3);
	ck_assert_str_eq(keys[0]->key, "units");
	ck_assert_str_eq(keys[0]->type, "int");
	ck_assert_str_eq(keys[0]->def, "required");
	ck_assert_int_eq(keys[0]->line, 7);
	ck_assert_str_eq(keys[1]->def, "`false`");
	ck_assert_str_eq(keys[2]->key, "gone");
	ck_assert_int_eq(gather(&d, "Built-in layers", "stale", keys, 16, &n), 1);
	ck_assert_int_eq(n, 1);  /* "fenced" is code, not a row */
	ck_assert_int_eq(gather(&d, "not a chapter", NULL, keys, 16, &n), 0);
	ck_assert_int_eq(gather(&d, "Losses", NULL, keys, 16, &n), 1);
	ck_assert_int_eq(n, 1);
	ck_assert_str_eq(keys[0]->key, "top");
	doc_free(&d);
}
END_TEST

static bool has_line(const struct report *r, const char *needle)
{
	return r->text.s && strstr(r->text.s, needle);
}

START_TEST(test_checker_names_the_kind_and_key_of_every_difference)
{
	struct doc d;
	doc_parse(&d, sample_md);
	struct report r = {0};
	const struct kind_ref kinds[] = {{"dense", sample_schema}};
	check_kinds(&r, &d, "Built-in layers", "layer", kinds, 1);
	/* act missing, gone extra, bias default wrong, section 'stale' for no kind */
	ck_assert_msg(r.n == 4, "%d: %s", r.n, r.text.s);
	ck_assert(has_line(&r, "layer 'dense': key 'act' is in the code but not documented"));
	ck_assert(has_line(&r, DOC_PATH ":9: layer 'dense': key 'gone' is documented but the code "
			   "has no such key"));
	ck_assert(has_line(&r, DOC_PATH ":8: layer 'dense': key 'bias' is documented with default "
			   "`false`, the code says `true`"));
	ck_assert(has_line(&r, DOC_PATH ":14: '### stale' under '## Built-in layers' documents no "
			   "built-in layer"));
	px_sbuf_free(&r.text);

	struct report r2 = {0};
	const struct kind_ref missing[] = {{"conv", sample_schema}};
	check_kinds(&r2, &d, "Losses", "loss", missing, 1);
	ck_assert(has_line(&r2, "loss 'conv' has no section '### conv' under '## Losses'"));
	px_sbuf_free(&r2.text);
	doc_free(&d);
}
END_TEST

START_TEST(test_train_keys_map_to_their_nested_yaml_names)
{
	char buf[64];
	ck_assert_str_eq(train_yaml_name("checkpoint_every", buf, sizeof buf), "checkpoint.every");
	ck_assert_str_eq(train_yaml_name("early_stopping_min_delta", buf, sizeof buf),
			 "early_stopping.min_delta");
	ck_assert_str_eq(train_yaml_name("checkpoint.keep", buf, sizeof buf), "checkpoint.keep");
	ck_assert_str_eq(train_yaml_name("clip_grad_norm", buf, sizeof buf), "clip_grad_norm");
}
END_TEST

/* ------------------------------------------------------------------ the reference itself */
#define KINDS(table, out, n)                                                         \
	do {                                                                          \
		n = 0;                                                                \
		for (int i_ = 0; (table)[i_] && n < 64; i_++)                         \
			out[n++] = (struct kind_ref){(table)[i_]->kind, (table)[i_]->schema}; \
	} while (0)

START_TEST(test_every_builtin_layer_option_is_documented)
{
	struct doc d;
	struct report r = {0};
	struct kind_ref kinds[64];
	int n;
	doc_load(&d);
	KINDS(px_builtin_layers, kinds, n);
	ck_assert_int_gt(n, 0);
	check_kinds(&r, &d, "Built-in layers", "layer", kinds, n);
	doc_free(&d);
	report_check(&r);
}
END_TEST

START_TEST(test_every_loss_option_is_documented)
{
	struct doc d;
	struct report r = {0};
	struct kind_ref kinds[64];
	int n;
	doc_load(&d);
	KINDS(px_builtin_losses, kinds, n);
	ck_assert_int_gt(n, 0);
	check_kinds(&r, &d, "Losses", "loss", kinds, n);
	doc_free(&d);
	report_check(&r);
}
END_TEST

START_TEST(test_every_optimizer_option_is_documented)
{
	struct doc d;
	struct report r = {0};
	struct kind_ref kinds[64];
	int n;
	doc_load(&d);
	KINDS(px_builtin_optims, kinds, n);
	ck_assert_int_gt(n, 0);
	check_kinds(&r, &d, "Optimizers", "optimizer", kinds, n);
	doc_free(&d);
	report_check(&r);
}
END_TEST

START_TEST(test_every_data_source_option_is_documented)
{
	struct doc d;
	struct report r = {0};
	struct kind_ref kinds[64];
	int n;
	doc_load(&d);
	KINDS(px_builtin_sources, kinds, n);
	ck_assert_int_gt(n, 0);
	check_kinds(&r, &d, "Data sources", "data source", kinds, n);
	doc_free(&d);
	report_check(&r);
}
END_TEST

START_TEST(test_every_train_key_is_documented_under_its_yaml_name)
{
	struct doc d;
	struct report r = {0};
	doc_load(&d);
	check_chapter(&r, &d, "Train keys", "train", px_train_schema, train_yaml_name);
	doc_free(&d);
	report_check(&r);
}
END_TEST

START_TEST(test_every_eval_key_is_documented)
{
	struct doc d;
	struct report r = {0};
	doc_load(&d);
	check_chapter(&r, &d, "Eval keys", "eval", px_eval_schema, same_name);
	doc_free(&d);
	report_check(&r);
}
END_TEST

START_TEST(test_every_data_view_key_is_documented)
{
	struct doc d;
	struct report r = {0};
	doc_load(&d);
	check_chapter(&r, &d, "Data views", "data view", px_view_schema, same_name);
	doc_free(&d);
	report_check(&r);
}
END_TEST

/* The schedule keys (anywhere in the chapter), and one "### kind" per choice of `kind`. */
START_TEST(test_every_schedule_key_and_kind_is_documented)
{
	struct doc d;
	struct report r = {0};
	doc_load(&d);
	check_chapter(&r, &d, "Schedules", "schedule", px_schedule_schema, same_name);
	const char *choices = NULL;
	for (const struct px_param_spec *sp = px_schedule_schema; sp->key; sp++)
		if (!strcmp(sp->key, "kind"))
			choices = sp->choices;
	ck_assert_msg(choices, "px_schedule_schema has no 'kind'");
	struct kind_ref kinds[32];
	char names[32][32];
	int n = 0;
	for (const char *p = choices; *p && n < 32;) {
		size_t len = strcspn(p, "|");
		snprintf(names[n], sizeof names[n], "%.*s", (int)len, p);
		kinds[n] = (struct kind_ref){names[n], NULL};
		n++;
		p += len;
		if (*p == '|')
			p++;
	}
	/* a schedule's section may hold the keys it uses; the chapter check above owns them */
	for (int i = 0; i < n; i++) {
		const struct doc_key *keys[64];
		int nk;
		if (!gather(&d, "Schedules", kinds[i].kind, keys, 64, &nk))
			report_add(&r, DOC_PATH ": schedule '%s' has no section '### %s' under "
				   "'## Schedules'", kinds[i].kind, kinds[i].kind);
	}
	for (int i = 0; i < d.n; i++) {
		const struct doc_section *s = &d.s[i];
		if (strcmp(s->chapter, "Schedules") || !*s->heading)
			continue;
		bool known = false;
		for (int k = 0; k < n && !known; k++)
			known = !strcmp(kinds[k].kind, s->heading);
		if (!known)
			report_add(&r, DOC_PATH ":%d: '### %s' under '## Schedules' is not a schedule "
				   "kind (%s)", s->line, s->heading, choices);
	}
	doc_free(&d);
	report_check(&r);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("docs");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_parser_reads_chapters_sections_and_table_keys_outside_code);
	tcase_add_test(tc, test_checker_names_the_kind_and_key_of_every_difference);
	tcase_add_test(tc, test_train_keys_map_to_their_nested_yaml_names);
	tcase_add_test(tc, test_every_builtin_layer_option_is_documented);
	tcase_add_test(tc, test_every_loss_option_is_documented);
	tcase_add_test(tc, test_every_optimizer_option_is_documented);
	tcase_add_test(tc, test_every_data_source_option_is_documented);
	tcase_add_test(tc, test_every_train_key_is_documented_under_its_yaml_name);
	tcase_add_test(tc, test_every_eval_key_is_documented);
	tcase_add_test(tc, test_every_data_view_key_is_documented);
	tcase_add_test(tc, test_every_schedule_key_and_kind_is_documented);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
