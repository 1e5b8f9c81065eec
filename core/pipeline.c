/* Pipeline files: YAML (libyaml document API) into struct px_pipeline, with every error at
 * file:line:col. Options of kinds stay raw here; they are validated against each kind's schema
 * once the registry and the data are known (px_config_from_raw). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "internal.h"

const char *const px_split_names[3] = {"train", "val", "test"};

struct ctx {
	const char *file;
	yaml_document_t *doc;
	struct px_error *err;
};

#define LINE(n) ((int)(n)->start_mark.line + 1)
#define COL(n) ((int)(n)->start_mark.column + 1)

static int fail_at(struct ctx *c, yaml_node_t *n, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int fail_at(struct ctx *c, yaml_node_t *n, const char *fmt, ...)
{
	char body[PX_ERROR_MSG_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(body, sizeof body, fmt, ap);
	va_end(ap);
	return px_error_at(c->err, PX_ERR_PARSE, c->file, n ? LINE(n) : 0, n ? COL(n) : 0, "%s",
			   body);
}

static yaml_node_t *node(struct ctx *c, int idx)
{
	return yaml_document_get_node(c->doc, idx);
}

static const char *scalar(yaml_node_t *n)
{
	return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

static int need_scalar(struct ctx *c, yaml_node_t *n, const char *what, const char **out)
{
	*out = scalar(n);
	if (!*out)
		return fail_at(c, n, "%s must be a single value", what);
	return 0;
}

static int need_mapping(struct ctx *c, yaml_node_t *n, const char *what)
{
	if (!n || n->type != YAML_MAPPING_NODE)
		return fail_at(c, n, "%s must be a mapping of key: value", what);
	return 0;
}

/* Iterate a mapping's pairs with key checks: keys are scalars, no duplicates. */
#define FOR_PAIRS(c, map, k, v, rc)                                                      \
	for (yaml_node_pair_t *pr_ = (map)->data.mapping.pairs.start;                    \
	     !(rc) && pr_ < (map)->data.mapping.pairs.top; pr_++)                        \
		if (((rc) = pair_check((c), (map), pr_, &(k), &(v))) == 0)

static int pair_check(struct ctx *c, yaml_node_t *map, yaml_node_pair_t *pr, const char **k,
		      yaml_node_t **v)
{
	yaml_node_t *kn = node(c, pr->key);
	*k = scalar(kn);
	*v = node(c, pr->value);
	if (!*k)
		return fail_at(c, kn, "keys must be plain names, not %s",
			       kn && kn->type == YAML_SEQUENCE_NODE ? "lists" : "mappings");
	for (yaml_node_pair_t *q = map->data.mapping.pairs.start; q < pr; q++) {
		const char *prev = scalar(node(c, q->key));
		if (prev && !strcmp(prev, *k))
			return fail_at(c, kn, "duplicate key '%s' (first at line %d)", *k,
				       LINE(node(c, q->key)));
	}
	return 0;
}

static int unknown_key(struct ctx *c, yaml_node_t *kn_or_v, const char *k, const char *where,
		       const char *valid)
{
	return fail_at(c, kn_or_v, "unknown key '%s' in %s (valid keys: %s)", k, where, valid);
}

/* the key node of the pair whose value is v (for error places) */
static yaml_node_t *key_of(struct ctx *c, yaml_node_t *map, yaml_node_t *v)
{
	for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++)
		if (node(c, p->value) == v)
			return node(c, p->key);
	return v;
}

static void raw_free(struct px_raw_map *m)
{
	for (int i = 0; i < m->n; i++) {
		free(m->opts[i].key);
		for (int j = 0; j < m->opts[i].n; j++)
			free(m->opts[i].texts[j]);
		free(m->opts[i].texts);
	}
	free(m->opts);
	memset(m, 0, sizeof *m);
}

static int raw_add(struct ctx *c, struct px_raw_map *m, const char *key, yaml_node_t *v,
		   const char *where)
{
	struct px_raw_opt *no = realloc(m->opts, (size_t)(m->n + 1) * sizeof *no);
	if (!no)
		return px_error_set(c->err, PX_ERR_NOMEM, "out of memory");
	m->opts = no;
	struct px_raw_opt *o = &m->opts[m->n];
	memset(o, 0, sizeof *o);
	o->line = LINE(v);
	o->col = COL(v);
	if (v->type == YAML_SCALAR_NODE) {
		o->texts = malloc(sizeof *o->texts);
		if (!o->texts)
			return px_error_set(c->err, PX_ERR_NOMEM, "out of memory");
		o->texts[0] = px_strdup(scalar(v));
		o->n = 1;
	} else if (v->type == YAML_SEQUENCE_NODE) {
		int n = (int)(v->data.sequence.items.top - v->data.sequence.items.start);
		o->texts = calloc((size_t)(n ? n : 1), sizeof *o->texts);
		if (!o->texts)
			return px_error_set(c->err, PX_ERR_NOMEM, "out of memory");
		o->is_list = true;
		for (int i = 0; i < n; i++) {
			yaml_node_t *it = node(c, v->data.sequence.items.start[i]);
			if (!scalar(it)) {
				for (int j = 0; j < o->n; j++)
					free(o->texts[j]);
				free(o->texts);
				o->texts = NULL;
				o->n = 0;
				return fail_at(c, it, "%s: '%s' must be a list of plain values", where, key);
			}
			o->texts[i] = px_strdup(scalar(it));
			o->n++;
		}
	} else {
		return fail_at(c, v, "%s: '%s' must be a value or a list, not a mapping", where, key);
	}
	o->key = px_strdup(key);
	m->n++;
	return 0;
}

static int capture(struct ctx *c, yaml_node_t *map, struct px_raw_map *m, const char *where)
{
	int rc = need_mapping(c, map, where);
	if (rc)
		return rc;
	m->line = LINE(map);
	m->col = COL(map);
	const char *k;
	yaml_node_t *v;
	FOR_PAIRS(c, map, k, v, rc)
		rc = raw_add(c, m, k, v, where);
	return rc;
}

static char *dup_scalar(struct ctx *c, yaml_node_t *v, const char *what, int *rc)
{
	const char *s;
	*rc = need_scalar(c, v, what, &s);
	if (*rc)
		return NULL;
	if (!*s) {
		*rc = fail_at(c, v, "%s must not be empty", what);
		return NULL;
	}
	char *d = px_strdup(s);
	if (!d)
		*rc = px_error_set(c->err, PX_ERR_NOMEM, "out of memory");
	return d;
}

static int set_ref(struct ctx *c, struct px_input_ref *r, const char *port, yaml_node_t *v,
		   const char *what)
{
	int rc;
	r->ref = dup_scalar(c, v, what, &rc);
	if (rc)
		return rc;
	r->port = px_strdup(port);
	r->line = LINE(v);
	r->col = COL(v);
	return r->port ? 0 : px_error_set(c->err, PX_ERR_NOMEM, "out of memory");
}

/* ---------------------------------------------------------------- sections */
static int parse_plugins(struct ctx *c, struct px_pipeline *p, yaml_node_t *map)
{
	int rc = need_mapping(c, map, "plugins");
	const char *k;
	yaml_node_t *v;
	FOR_PAIRS(c, map, k, v, rc) {
		if (!strcmp(k, "path")) {
			yaml_node_t *items[64];
			int n = 0;
			if (v->type == YAML_SCALAR_NODE) {
				items[n++] = v;
			} else if (v->type == YAML_SEQUENCE_NODE) {
				for (yaml_node_item_t *it = v->data.sequence.items.start;
				     it < v->data.sequence.items.top && n < 64; it++)
					items[n++] = node(c, *it);
			} else {
				return fail_at(c, v, "plugins.path must be a directory or a list of them");
			}
			p->plugin_paths = calloc((size_t)(n ? n : 1), sizeof *p->plugin_paths);
			if (!p->plugin_paths)
				return px_error_set(c->err, PX_ERR_NOMEM, "out of memory");
			for (int i = 0; !rc && i < n; i++) {
				p->plugin_paths[i] = dup_scalar(c, items[i], "plugins.path entry", &rc);
				if (p->plugin_paths[i])   /* counted as soon as owned: freed with p */
					p->n_plugin_paths++;
				if (!rc && p->plugin_paths[i][0] != '/')
					rc = fail_at(c, items[i],
						     "plugins.path entries must be absolute paths, got '%s'",
						     p->plugin_paths[i]);
			}
		} else if (!strcmp(k, "prefer")) {
			if ((rc = need_mapping(c, v, "plugins.prefer")))
				return rc;
			const char *kind;
			yaml_node_t *pv;
			int n = (int)(v->data.mapping.pairs.top - v->data.mapping.pairs.start);
			p->prefer = calloc((size_t)(n ? n : 1), sizeof *p->prefer);
			if (!p->prefer)
				return px_error_set(c->err, PX_ERR_NOMEM, "out of memory");
			FOR_PAIRS(c, v, kind, pv, rc) {
				const char *plug;
				rc = need_scalar(c, pv, "plugins.prefer value", &plug);
				if (!rc)
					p->prefer[p->n_prefer++] = px_asprintf("%s=%s", kind, plug);
			}
		} else {
			rc = unknown_key(c, key_of(c, map, v), k, "plugins", "path, prefer");
		}
	}
	return rc;
}

static int parse_split(struct ctx *c, struct px_split_spec *s, yaml_node_t *map, const char *name)
{
	char where[32];
	snprintf(where, sizeof where, "data.%s", name);
	int rc = need_mapping(c, map, where);
	if (rc)
		return rc;
	s->present = true;
	s->line = LINE(map);
	s->col = COL(map);
	s->opts.line = s->line;
	s->opts.col = s->col;
	const char *k;
	yaml_node_t *v;
	FOR_PAIRS(c, map, k, v, rc) {
		if (!strcmp(k, "source"))
			s->source = dup_scalar(c, v, "source", &rc);
		else
			rc = raw_add(c, &s->opts, k, v, where);
	}
	if (!rc && !s->source)
		rc = fail_at(c, map, "%s: missing required key 'source' (the kind of data source)", where);
	return rc;
}

static int parse_data(struct ctx *c, struct px_pipeline *p, yaml_node_t *map)
{
	int rc = need_mapping(c, map, "data");
	const char *k;
	yaml_node_t *v;
	p->data_defaults.line = map ? LINE(map) : 0;
	p->data_defaults.col = map ? COL(map) : 0;
	FOR_PAIRS(c, map, k, v, rc) {
		int s = -1;
		for (int i = 0; i < 3; i++)
			if (!strcmp(k, px_split_names[i]))
				s = i;
		if (s >= 0) {
			rc = parse_split(c, &p->split[s], v, k);
		} else if (!strcmp(k, "val_split")) {
			const char *t;
			rc = need_scalar(c, v, "data.val_split", &t);
			if (!rc && (!px_parse_double(t, &p->val_split) || p->val_split < 0 ||
				    p->val_split >= 1))
				rc = fail_at(c, v, "data: 'val_split' must be a number in [0, 1), got '%s'", t);
			p->val_split_line = LINE(v);
			p->val_split_col = COL(v);
		} else {
			bool view = false;
			for (const struct px_param_spec *sp = px_view_schema; sp->key; sp++)
				view |= !strcmp(sp->key, k);
			if (view) {
				rc = raw_add(c, &p->data_defaults, k, v, "data");
			} else {
				char valid[512];
				char keys[400];
				px_schema_keys(px_view_schema, keys, sizeof keys);
				snprintf(valid, sizeof valid, "train, val, test, val_split, %s", keys);
				rc = unknown_key(c, key_of(c, map, v), k, "data", valid);
			}
		}
	}
	if (!rc && !p->split[PX_SPLIT_TRAIN].present)
		rc = fail_at(c, map, "data: missing required key 'train'");
	return rc;
}

static int parse_node(struct ctx *c, struct px_node_spec *ns, yaml_node_t *map, int index)
{
	char where[64];
	snprintf(where, sizeof where, "model node %d", index + 1);
	int rc = need_mapping(c, map, where);
	if (rc)
		return rc;
	ns->line = LINE(map);
	ns->col = COL(map);
	ns->opts.line = ns->line;
	ns->opts.col = ns->col;
	const char *k;
	yaml_node_t *v;
	FOR_PAIRS(c, map, k, v, rc) {
		if (!strcmp(k, "name")) {
			ns->name = dup_scalar(c, v, "name", &rc);
		} else if (!strcmp(k, "kind")) {
			ns->kind = dup_scalar(c, v, "kind", &rc);
		} else if (!strcmp(k, "impl")) {
			ns->impl = dup_scalar(c, v, "impl", &rc);
		} else if (!strcmp(k, "input")) {
			if (ns->n_inputs)
				rc = fail_at(c, v, "use either 'input' or 'inputs', not both");
			else
				rc = set_ref(c, &ns->inputs[ns->n_inputs++], "", v, "input");
		} else if (!strcmp(k, "inputs")) {
			if (v->type != YAML_SEQUENCE_NODE)
				rc = fail_at(c, v, "'inputs' must be a list of node names");
			else if (ns->n_inputs)
				rc = fail_at(c, v, "use either 'input' or 'inputs', not both");
			for (yaml_node_item_t *it = v->data.sequence.items.start;
			     !rc && it < v->data.sequence.items.top; it++) {
				if (ns->n_inputs >= PX_MAX_PORTS)
					rc = fail_at(c, v, "at most %d inputs", PX_MAX_PORTS);
				else
					rc = set_ref(c, &ns->inputs[ns->n_inputs++], "", node(c, *it), "inputs entry");
			}
		} else {
			rc = raw_add(c, &ns->opts, k, v, where);
		}
	}
	if (!rc && !ns->name)
		rc = fail_at(c, map, "%s: missing required key 'name'", where);
	if (!rc && !ns->kind)
		rc = fail_at(c, map, "node '%s': missing required key 'kind'", ns->name);
	if (!rc && (strchr(ns->name, '.') || !strcmp(ns->name, "input") || !strcmp(ns->name, "label")))
		rc = fail_at(c, map, "node name '%s' is reserved or contains a '.'", ns->name);
	return rc;
}

static int parse_model(struct ctx *c, struct px_pipeline *p, yaml_node_t *seq)
{
	if (!seq || seq->type != YAML_SEQUENCE_NODE)
		return fail_at(c, seq, "model must be a list of nodes ({name: ..., kind: ...})");
	int n = (int)(seq->data.sequence.items.top - seq->data.sequence.items.start);
	if (n == 0)
		return fail_at(c, seq, "model has no nodes");
	p->nodes = calloc((size_t)n, sizeof *p->nodes);
	if (!p->nodes)
		return px_error_set(c->err, PX_ERR_NOMEM, "out of memory");
	int rc = 0;
	for (int i = 0; !rc && i < n; i++) {
		yaml_node_t *item = node(c, seq->data.sequence.items.start[i]);
		rc = parse_node(c, &p->nodes[i], item, i);
		p->n_nodes = i + 1;
		for (int j = 0; !rc && j < i; j++)
			if (!strcmp(p->nodes[j].name, p->nodes[i].name))
				rc = fail_at(c, item, "duplicate node name '%s' (first at line %d)",
					     p->nodes[i].name, p->nodes[j].line);
	}
	return rc;
}

static int parse_loss(struct ctx *c, struct px_pipeline *p, yaml_node_t *map)
{
	int rc = need_mapping(c, map, "loss");
	if (rc)
		return rc;
	p->loss_line = LINE(map);
	p->loss_col = COL(map);
	p->loss_opts.line = p->loss_line;
	p->loss_opts.col = p->loss_col;
	const char *k;
	yaml_node_t *v;
	FOR_PAIRS(c, map, k, v, rc) {
		if (!strcmp(k, "kind"))
			p->loss_kind = dup_scalar(c, v, "loss kind", &rc);
		else if (!strcmp(k, "input"))
			rc = set_ref(c, &p->loss_input, "", v, "loss input");
		else if (!strcmp(k, "target"))
			rc = set_ref(c, &p->loss_target, "", v, "loss target");
		else
			rc = raw_add(c, &p->loss_opts, k, v, "loss");
	}
	if (!rc && !p->loss_kind)
		rc = fail_at(c, map, "loss: missing required key 'kind'");
	return rc;
}

static int parse_train(struct ctx *c, struct px_pipeline *p, yaml_node_t *map)
{
	int rc = need_mapping(c, map, "train");
	if (rc)
		return rc;
	p->train.line = LINE(map);
	p->train.col = COL(map);
	const char *k;
	yaml_node_t *v;
	FOR_PAIRS(c, map, k, v, rc) {
		if (!strcmp(k, "optimizer")) {
			rc = need_mapping(c, v, "train.optimizer");
			p->optim_line = LINE(v);
			p->optim_col = COL(v);
			p->optim_opts.line = p->optim_line;
			p->optim_opts.col = p->optim_col;
			const char *ok;
			yaml_node_t *ov;
			FOR_PAIRS(c, v, ok, ov, rc) {
				if (!strcmp(ok, "kind"))
					p->optim_kind = dup_scalar(c, ov, "optimizer kind", &rc);
				else
					rc = raw_add(c, &p->optim_opts, ok, ov, "train.optimizer");
			}
			if (!rc && !p->optim_kind)
				rc = fail_at(c, v, "train.optimizer: missing required key 'kind'");
		} else if (!strcmp(k, "schedule")) {
			rc = capture(c, v, &p->schedule, "train.schedule");
		} else if (!strcmp(k, "checkpoint") || !strcmp(k, "early_stopping")) {
			/* flattened into train keys: checkpoint: {every: 5} -> checkpoint.every */
			rc = need_mapping(c, v, k);
			const char *ck;
			yaml_node_t *cv;
			FOR_PAIRS(c, v, ck, cv, rc) {
				char flat[96];
				snprintf(flat, sizeof flat, "%s.%s", k, ck);
				rc = raw_add(c, &p->train, flat, cv, "train");
			}
		} else {
			rc = raw_add(c, &p->train, k, v, "train");
		}
	}
	return rc;
}

/* ---------------------------------------------------------------- overrides */
static int add_scalar(yaml_document_t *d, const char *text)
{
	return yaml_document_add_scalar(d, NULL, (yaml_char_t *)text, (int)strlen(text),
					YAML_ANY_SCALAR_STYLE);
}

/* "[a, b]" -> a sequence node, else a scalar */
static int value_node(yaml_document_t *d, const char *val)
{
	size_t n = strlen(val);
	if (n >= 2 && val[0] == '[' && val[n - 1] == ']') {
		int seq = yaml_document_add_sequence(d, NULL, YAML_FLOW_SEQUENCE_STYLE);
		char *copy = px_strdup(val + 1), *save = NULL;
		if (!copy || !seq)
			return 0;
		copy[n - 2] = 0;
		for (char *t = strtok_r(copy, ", ", &save); t; t = strtok_r(NULL, ", ", &save))
			yaml_document_append_sequence_item(d, seq, add_scalar(d, t));
		free(copy);
		return seq;
	}
	return add_scalar(d, val);
}

static int apply_override(struct ctx *c, const char *spec)
{
	const char *eq = strchr(spec, '=');
	if (!eq || eq == spec)
		return px_error_set(c->err, PX_ERR_INVALID, "--set expects key.path=value, got '%s'", spec);
	char *path = strndup(spec, (size_t)(eq - spec));
	const char *val = eq + 1;
	if (!path)
		return px_error_set(c->err, PX_ERR_NOMEM, "out of memory");
	int cur = 1;  /* root */
	int rc = 0;
	char *save = NULL;
	char *seg = strtok_r(path, ".", &save);
	while (seg && !rc) {
		char *next = strtok_r(NULL, ".", &save);
		yaml_node_t *n = node(c, cur);
		if (n->type == YAML_SEQUENCE_NODE) {  /* model list: select by name */
			int found = 0;
			for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++) {
				yaml_node_t *m = node(c, *it);
				if (m->type != YAML_MAPPING_NODE)
					continue;
				for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
					const char *k = scalar(node(c, p->key)), *v = scalar(node(c, p->value));
					if (k && v && !strcmp(k, "name") && !strcmp(v, seg))
						found = *it;
				}
			}
			if (!found) {
				rc = px_error_set(c->err, PX_ERR_INVALID, "--set %s: no model node named '%s'", spec, seg);
				break;
			}
			cur = found;
		} else if (n->type == YAML_MAPPING_NODE) {
			int found = 0;
			ptrdiff_t hit = -1;
			for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
				const char *k = scalar(node(c, p->key));
				if (k && !strcmp(k, seg))
					hit = p - n->data.mapping.pairs.start;
			}
			if (hit >= 0) {
				/* adding a node may move the node array: look the pair up again after */
				int v = next ? 0 : value_node(c->doc, val);
				yaml_node_pair_t *p = node(c, cur)->data.mapping.pairs.start + hit;
				if (!next)
					p->value = v;
				found = p->value;
			}
			if (!found) {
				int v = next ? yaml_document_add_mapping(c->doc, NULL, YAML_BLOCK_MAPPING_STYLE)
					     : value_node(c->doc, val);
				yaml_document_append_mapping_pair(c->doc, cur, add_scalar(c->doc, seg), v);
				found = v;
			}
			cur = found;
		} else {
			rc = px_error_set(c->err, PX_ERR_INVALID, "--set %s: '%s' is a value, not a section", spec, seg);
		}
		seg = next;
	}
	free(path);
	return rc;
}

/* ---------------------------------------------------------------- loading */
/* Byte offset of (line, column) (0-based, columns in characters as libyaml counts them), or
 * len when past the end. */
static size_t offset_of(const char *text, size_t len, size_t line, size_t col)
{
	size_t i = 0;
	if (len >= 3 && !memcmp(text, "\xef\xbb\xbf", 3))
		i = 3;   /* a UTF-8 BOM is not a column */
	for (size_t l = 0; l < line && i < len; i++)
		if (text[i] == '\n')
			l++;
	for (size_t c = 0; c < col && i < len; c++)
		for (i++; i < len && ((unsigned char)text[i] & 0xc0) == 0x80; i++)
			;
	return i;
}

/* One line for a libyaml error at the right place. Reader errors (bad UTF-8, control
 * characters) carry a byte offset instead of a mark: turn it into line:col here. */
static int syntax_error(const char *file, const char *text, size_t len, const yaml_parser_t *ps,
			struct px_error *err)
{
	const char *problem = ps->problem ? ps->problem : "malformed";
	if (ps->error == YAML_READER_ERROR) {
		size_t off = ps->problem_offset < len ? ps->problem_offset : len;
		int line = 1, col = 1;
		size_t start = len >= 3 && !memcmp(text, "\xef\xbb\xbf", 3) && off >= 3 ? 3 : 0;
		for (size_t i = start; i < off; i++) {
			if (text[i] == '\n') {
				line++;
				col = 1;
			} else if (((unsigned char)text[i] & 0xc0) != 0x80) {
				col++;
			}
		}
		if (!strcmp(problem, "control characters are not allowed"))
			return px_error_at(err, PX_ERR_PARSE, file, line, col,
					   "control character 0x%02x is not allowed (a pipeline is UTF-8 "
					   "text)", (unsigned)ps->problem_value & 0xff);
		if (ps->problem_value >= 0)
			return px_error_at(err, PX_ERR_PARSE, file, line, col,
					   "not valid UTF-8 text: %s (0x%02x)", problem,
					   (unsigned)ps->problem_value & 0xff);
		return px_error_at(err, PX_ERR_PARSE, file, line, col, "not valid UTF-8 text: %s",
				   problem);
	}
	const yaml_mark_t *m = &ps->problem_mark, *cm = &ps->context_mark;
	size_t at = offset_of(text, len, m->line, m->column);
	if (at < len && text[at] == '\t')
		return px_error_at(err, PX_ERR_PARSE, file, (int)m->line + 1, (int)m->column + 1,
				   "YAML syntax error: a tab character here (YAML indents with spaces "
				   "only)");
	if (ps->context && (cm->line != m->line || cm->column != m->column))
		return px_error_at(err, PX_ERR_PARSE, file, (int)m->line + 1, (int)m->column + 1,
				   "YAML syntax error: %s %s that starts at %d:%d", problem, ps->context,
				   (int)cm->line + 1, (int)cm->column + 1);
	return px_error_at(err, PX_ERR_PARSE, file, (int)m->line + 1, (int)m->column + 1,
			   "YAML syntax error: %s%s%s", problem, ps->context ? " " : "",
			   ps->context ? ps->context : "");
}

/* Bound the nesting and refuse aliases before building the document (cheap event pass). */
static int prescan(const char *file, const char *text, size_t len, struct px_error *err)
{
	yaml_parser_t ps;
	yaml_event_t ev;
	if (!yaml_parser_initialize(&ps))
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	yaml_parser_set_input_string(&ps, (const unsigned char *)text, len);
	int depth = 0, rc = 0, docs = 0;
	for (;;) {
		if (!yaml_parser_parse(&ps, &ev)) {
			rc = ps.error == YAML_MEMORY_ERROR ? px_error_set(err, PX_ERR_NOMEM, "out of memory")
							   : syntax_error(file, text, len, &ps, err);
			break;
		}
		yaml_event_type_t t = ev.type;
		int line = (int)ev.start_mark.line + 1, col = (int)ev.start_mark.column + 1;
		yaml_event_delete(&ev);
		if (t == YAML_SEQUENCE_START_EVENT || t == YAML_MAPPING_START_EVENT) {
			if (++depth > PX_PIPELINE_MAX_DEPTH) {
				rc = px_error_at(err, PX_ERR_PARSE, file, line, col,
						 "nesting deeper than %d levels", PX_PIPELINE_MAX_DEPTH);
				break;
			}
		} else if (t == YAML_SEQUENCE_END_EVENT || t == YAML_MAPPING_END_EVENT) {
			depth--;
		} else if (t == YAML_ALIAS_EVENT) {
			rc = px_error_at(err, PX_ERR_PARSE, file, line, col,
					 "YAML aliases (*name) are not supported in pipelines");
			break;
		} else if (t == YAML_DOCUMENT_START_EVENT) {
			if (++docs > 1) {
				rc = px_error_at(err, PX_ERR_PARSE, file, line, col,
						 "a pipeline file holds one YAML document");
				break;
			}
		} else if (t == YAML_STREAM_END_EVENT) {
			break;
		}
	}
	yaml_parser_delete(&ps);
	return rc;
}

static int emit_handler(void *data, unsigned char *buf, size_t size)
{
	char **s = data;
	size_t old = *s ? strlen(*s) : 0;
	char *n = realloc(*s, old + size + 1);
	if (!n)
		return 0;
	memcpy(n + old, buf, size);
	n[old + size] = 0;
	*s = n;
	return 1;
}

int px_pipeline_load(const char *path, const char *const *overrides, int n_overrides,
		     struct px_pipeline **out, struct px_error *err)
{
	*out = NULL;
	char *text = NULL;
	size_t len = 0;
	int rc = px_read_file(path, PX_PIPELINE_MAX_BYTES, &text, &len, err);
	if (rc)
		return rc == PX_ERR_NOMEM ? rc : PX_ERR_PARSE;
	rc = prescan(path, text, len, err);
	if (rc) {
		free(text);
		return rc;
	}
	struct px_pipeline *p = calloc(1, sizeof *p);
	yaml_parser_t ps;
	yaml_document_t doc;
	if (!p || !yaml_parser_initialize(&ps)) {
		free(p);
		free(text);
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	}
	p->file = px_strdup(path);
	p->val_split = 0.0;
	yaml_parser_set_input_string(&ps, (const unsigned char *)text, len);
	if (!yaml_parser_load(&ps, &doc)) {
		rc = ps.error == YAML_MEMORY_ERROR ? px_error_set(err, PX_ERR_NOMEM, "out of memory")
						   : syntax_error(path, text, len, &ps, err);
		yaml_parser_delete(&ps);
		free(text);
		px_pipeline_free(p);
		return rc;
	}
	yaml_parser_delete(&ps);
	free(text);
	struct ctx c = {path, &doc, err};
	yaml_node_t *root = yaml_document_get_root_node(&doc);
	if (!root) {
		rc = px_error_at(err, PX_ERR_PARSE, path, 1, 1, "empty pipeline file");
		goto done;
	}
	if ((rc = need_mapping(&c, root, "a pipeline")))
		goto done;
	for (int i = 0; !rc && i < n_overrides; i++)
		rc = apply_override(&c, overrides[i]);
	if (rc) {
		rc = PX_ERR_PARSE;
		goto done;
	}
	root = yaml_document_get_root_node(&doc);  /* overrides may have moved the node array */
	const char *k;
	yaml_node_t *v;
	bool has_model = false, has_loss = false;
	FOR_PAIRS(&c, root, k, v, rc) {
		if (!strcmp(k, "name")) {
			p->name = dup_scalar(&c, v, "name", &rc);
		} else if (!strcmp(k, "description")) {
			const char *s;
			rc = need_scalar(&c, v, "description", &s);
		} else if (!strcmp(k, "seed")) {
			const char *s;
			int64_t seed = 0;
			rc = need_scalar(&c, v, "seed", &s);
			if (!rc && (!px_parse_int(s, &seed) || seed < 0))
				rc = fail_at(&c, v, "'seed' must be a non-negative integer, got '%s'", s);
			p->seed = (uint64_t)seed;
		} else if (!strcmp(k, "plugins")) {
			rc = parse_plugins(&c, p, v);
		} else if (!strcmp(k, "data")) {
			rc = parse_data(&c, p, v);
		} else if (!strcmp(k, "model")) {
			rc = parse_model(&c, p, v);
			has_model = true;
		} else if (!strcmp(k, "loss")) {
			rc = parse_loss(&c, p, v);
			has_loss = true;
		} else if (!strcmp(k, "train")) {
			rc = parse_train(&c, p, v);
		} else if (!strcmp(k, "eval")) {
			rc = capture(&c, v, &p->eval, "eval");
		} else {
			rc = unknown_key(&c, key_of(&c, root, v), k, "the pipeline",
					 "name, description, seed, plugins, data, model, loss, train, eval");
		}
	}
	if (!rc && !p->name)
		rc = fail_at(&c, root, "missing required key 'name'");
	if (!rc && !p->split[PX_SPLIT_TRAIN].present)
		rc = fail_at(&c, root, "missing required key 'data' (with at least data.train)");
	if (!rc && !has_model)
		rc = fail_at(&c, root, "missing required key 'model'");
	if (!rc && !has_loss)
		rc = fail_at(&c, root, "missing required key 'loss'");
	if (!rc && !p->optim_kind)
		p->optim_kind = px_strdup("adam");
	if (!rc) {  /* the resolved text, for the run directory */
		yaml_emitter_t em;
		if (yaml_emitter_initialize(&em)) {
			yaml_emitter_set_output(&em, emit_handler, &p->text);
			yaml_emitter_set_unicode(&em, 1);
			yaml_emitter_open(&em);
			yaml_emitter_dump(&em, &doc);  /* deletes the document */
			yaml_emitter_close(&em);
			yaml_emitter_delete(&em);
			*out = p;
			return 0;
		}
	}
done:
	yaml_document_delete(&doc);
	if (rc) {
		if (rc != PX_ERR_NOMEM)
			rc = PX_ERR_PARSE;
		px_pipeline_free(p);
		return rc;
	}
	*out = p;
	return 0;
}

void px_pipeline_free(struct px_pipeline *p)
{
	if (!p)
		return;
	free(p->file);
	free(p->name);
	for (int i = 0; i < p->n_plugin_paths; i++)
		free(p->plugin_paths[i]);
	free(p->plugin_paths);
	for (int i = 0; i < p->n_prefer; i++)
		free(p->prefer[i]);
	free(p->prefer);
	raw_free(&p->data_defaults);
	for (int s = 0; s < 3; s++) {
		free(p->split[s].source);
		raw_free(&p->split[s].opts);
	}
	for (int i = 0; i < p->n_nodes; i++) {
		struct px_node_spec *n = &p->nodes[i];
		free(n->name);
		free(n->kind);
		free(n->impl);
		for (int j = 0; j < n->n_inputs; j++) {
			free(n->inputs[j].port);
			free(n->inputs[j].ref);
		}
		raw_free(&n->opts);
	}
	free(p->nodes);
	free(p->loss_kind);
	free(p->loss_input.port);
	free(p->loss_input.ref);
	free(p->loss_target.port);
	free(p->loss_target.ref);
	raw_free(&p->loss_opts);
	raw_free(&p->train);
	free(p->optim_kind);
	raw_free(&p->optim_opts);
	raw_free(&p->schedule);
	raw_free(&p->eval);
	free(p->text);
	free(p);
}

/* ---------------------------------------------------------------- raw -> config */
int px_config_from_raw(const struct px_param_spec *schema, const struct px_raw_map *m,
		       const char *file, const char *owner,
		       bool (*skip)(const char *key, void *ctx), void *ctx,
		       const struct px_vars *vars, struct px_config **out, struct px_error *err)
{
	*out = NULL;
	struct px_config *c = px_config_new(schema, file, owner);
	if (!c)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	c->line = m ? m->line : 0;
	c->col = m ? m->col : 0;
	int rc = 0;
	for (int i = 0; m && !rc && i < m->n; i++) {
		const struct px_raw_opt *o = &m->opts[i];
		if (skip && skip(o->key, ctx))
			continue;
		const char *texts[64];
		char subst[64][32];
		int n = o->n < 64 ? o->n : 64;
		for (int j = 0; j < n; j++) {
			texts[j] = o->texts[j];
			if (texts[j][0] == '$') {
				bool found = false;
				for (int v = 0; vars && v < vars->n; v++)
					if (!strcmp(texts[j] + 1, vars->names[v])) {
						snprintf(subst[j], sizeof subst[j], "%lld", (long long)vars->values[v]);
						texts[j] = subst[j];
						found = true;
					}
				if (!found) {
					char names[256] = "";
					size_t u = 0;
					for (int v = 0; vars && v < vars->n && u < sizeof names; v++)
						u += (size_t)snprintf(names + u, sizeof names - u, "%s$%s", v ? ", " : "", vars->names[v]);
					rc = px_error_at(err, PX_ERR_INVALID, file, o->line, o->col,
							 "%s: unknown variable '%s' (known: %s)", owner, texts[j],
							 vars && vars->n ? names : "none");
					break;
				}
			}
		}
		if (!rc)
			rc = px_config_set(c, o->key, texts, n, o->is_list, o->line, o->col, err);
	}
	if (!rc)
		rc = px_config_check_required(c, err);
	if (rc) {
		px_config_free(c);
		return rc;
	}
	*out = c;
	return 0;
}
