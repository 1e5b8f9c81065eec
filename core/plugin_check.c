/* `plexus plugin-check FILE.so [KIND]`: the conformance harness for plugin authors.
 *
 * It loads the file through the registry (so every ABI and table refusal of a real run
 * applies), checks what the registry does not (schemas, ports, exported symbols), and then
 * exercises every layer kind and recurrent cell of the plugin (or only KIND) on small inputs:
 * create, output shapes, padding of ragged sequences, finite-difference gradients in
 * evaluation and training mode, += accumulation, determinism across runs and BLAS thread
 * counts, and a checkpoint round trip. Each check prints one line, PASS/FAIL/SKIP, with what
 * it measured; the exit status is 1 when any check failed. docs/plugins.md describes the
 * checks, the input heuristic and the --input-shape syntax. Leaks are not checked here: run
 * the command under valgrind or in an ASan build (the test suite does). */
#include <elf.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "internal.h"

#define PC_MAX_IN 8
#define PC_GRAD_SAMPLES 200   /* finite differences per tensor at most (random elements) */

struct pc {
	int passed, failed, skipped;
	const struct px_host *host;
	const char *const *sets;    /* --set key=value */
	int n_sets;
	char tmpdir[64];
};

enum { PASS, FAIL, SKIP };

static void line(struct pc *pc, int st, const char *what, const char *check, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
static void line(struct pc *pc, int st, const char *what, const char *check, const char *fmt, ...)
{
	static const char *const tag[] = {"PASS", "FAIL", "SKIP"};
	*(st == PASS ? &pc->passed : st == FAIL ? &pc->failed : &pc->skipped) += 1;
	printf("%s %s %s: ", tag[st], what, check);
	va_list ap;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

/* ------------------------------------------------------------------ exported symbols */

/* The names of the symbols `path` exports (defined, global or weak, default visibility),
 * ", "-separated into buf; returns their count, or -1 (buf: why) when the file is not a
 * readable 64-bit ELF. */
static int elf_exports(const char *path, char *buf, size_t n)
{
	char *img = NULL;
	size_t len = 0;
	struct px_error e;
	int count = 0;
	buf[0] = 0;
	if (px_read_file(path, 512u << 20, &img, &len, &e)) {
		snprintf(buf, n, "%s", e.msg);
		return -1;
	}
	const Elf64_Ehdr *eh = (const Elf64_Ehdr *)img;
	if (len < sizeof *eh || memcmp(eh->e_ident, ELFMAG, SELFMAG) ||
	    eh->e_ident[EI_CLASS] != ELFCLASS64 || eh->e_shentsize != sizeof(Elf64_Shdr) ||
	    eh->e_shoff > len || (size_t)eh->e_shnum * sizeof(Elf64_Shdr) > len - eh->e_shoff) {
		snprintf(buf, n, "not a 64-bit ELF file with section headers");
		count = -1;
		goto done;
	}
	const Elf64_Shdr *sh = (const Elf64_Shdr *)(img + eh->e_shoff);
	for (int i = 0; i < eh->e_shnum; i++) {
		if (sh[i].sh_type != SHT_DYNSYM)
			continue;
		const Elf64_Shdr *strs = sh[i].sh_link < eh->e_shnum ? &sh[sh[i].sh_link] : NULL;
		if (!strs || sh[i].sh_offset > len || sh[i].sh_size > len - sh[i].sh_offset ||
		    strs->sh_offset > len || strs->sh_size > len - strs->sh_offset ||
		    sh[i].sh_entsize != sizeof(Elf64_Sym)) {
			snprintf(buf, n, "malformed dynamic symbol table");
			count = -1;
			goto done;
		}
		const Elf64_Sym *sym = (const Elf64_Sym *)(img + sh[i].sh_offset);
		const char *str = img + strs->sh_offset;
		size_t nsym = sh[i].sh_size / sizeof *sym, used = 0;
		for (size_t k = 1; k < nsym; k++) {
			int bind = ELF64_ST_BIND(sym[k].st_info);
			if (sym[k].st_shndx == SHN_UNDEF || (bind != STB_GLOBAL && bind != STB_WEAK) ||
			    ELF64_ST_VISIBILITY(sym[k].st_other) != STV_DEFAULT ||
			    sym[k].st_name >= strs->sh_size ||
			    !memchr(str + sym[k].st_name, 0, strs->sh_size - sym[k].st_name))
				continue;
			const char *name = str + sym[k].st_name;
			/* linker-defined markers some toolchains export */
			if (sym[k].st_shndx == SHN_ABS && (!strcmp(name, "_edata") ||
			    !strcmp(name, "_end") || !strcmp(name, "__bss_start")))
				continue;
			if (used < n)
				used += (size_t)snprintf(buf + used, n - used, "%s%s", count ? ", " : "",
							 name);
			count++;
		}
	}
done:
	free(img);
	return count;
}

/* ------------------------------------------------------------------ tables */

/* Problems of one schema ("" when none) into why. */
static void check_schema(const struct px_param_spec *schema, char *why, size_t n)
{
	why[0] = 0;
	int count = 0;
	while (schema && schema[count].key)
		count++;
	if (!count)
		return;
	struct px_param_spec *copy = calloc((size_t)count + 1, sizeof *copy);
	if (!copy) {
		snprintf(why, n, "out of memory");
		return;
	}
	for (int i = 0; i < count; i++) {
		copy[i] = schema[i];
		copy[i].def = NULL;   /* validated one by one below, not by px_config_new */
	}
	struct px_config *c = px_config_new(copy, NULL, "schema");
	for (int i = 0; c && i < count && !why[0]; i++) {
		const struct px_param_spec *s = &schema[i];
		for (int j = 0; j < i; j++)
			if (!strcmp(schema[j].key, s->key))
				snprintf(why, n, "option '%s' appears twice", s->key);
		if (!why[0] && (s->type < PX_T_INT || s->type > PX_T_FLOATS))
			snprintf(why, n, "option '%s' has an unknown type %d", s->key, (int)s->type);
		else if (!why[0] && s->type == PX_T_ENUM && (!s->choices || !*s->choices))
			snprintf(why, n, "enum option '%s' has no choices", s->key);
		else if (!why[0] && s->min > s->max && s->type != PX_T_BOOL && s->type != PX_T_ENUM &&
			 s->type != PX_T_STRING)
			snprintf(why, n, "option '%s' has min %g > max %g", s->key, s->min, s->max);
		else if (!why[0] && (!s->doc || !*s->doc))
			snprintf(why, n, "option '%s' has no doc line", s->key);
		if (why[0] || !s->def)
			continue;
		/* the default must pass the option's own validation (as px_config_new needs) */
		char tmp[256];
		snprintf(tmp, sizeof tmp, "%s", s->def);
		const char *texts[32];
		int k = 0;
		bool list = s->type == PX_T_INTS || s->type == PX_T_FLOATS;
		char *save = NULL;
		if (list)
			for (char *t = strtok_r(tmp, "[], ", &save); t && k < 32; t = strtok_r(NULL, "[], ", &save))
				texts[k++] = t;
		else
			texts[k++] = tmp;
		struct px_error e;
		if (px_config_set(c, s->key, texts, k, list, 0, 0, &e))
			snprintf(why, n, "default of '%s' (%s) is invalid: %s", s->key, s->def, e.msg);
	}
	if (!c)
		snprintf(why, n, "out of memory");
	px_config_free(c);
	free(copy);
}

static void check_ports(const struct px_port_spec *p, bool inputs, char *why, size_t n)
{
	why[0] = 0;
	int count = 0;
	while (p && p[count].name)
		count++;
	for (int i = 0; i < count && !why[0]; i++) {
		for (int j = 0; j < i; j++)
			if (!strcmp(p[i].name, p[j].name))
				snprintf(why, n, "port '%s' appears twice", p[i].name);
		if (!why[0] && (p[i].flags & ~7u))
			snprintf(why, n, "port '%s' has unknown flags 0x%x", p[i].name, p[i].flags);
		else if (!why[0] && (p[i].flags & PX_PORT_VARIADIC) && (!inputs || i != count - 1))
			snprintf(why, n, "port '%s': only the last input port may be variadic", p[i].name);
		else if (!why[0] && !inputs && (p[i].flags & (PX_PORT_OPTIONAL | PX_PORT_VARIADIC)))
			snprintf(why, n, "output port '%s' is optional or variadic", p[i].name);
	}
	if (!why[0] && count > PX_MAX_PORTS)
		snprintf(why, n, "%d ports, at most %d", count, PX_MAX_PORTS);
}

/* Tables the registry does not look into: schemas, ports, docs. Returns problems found;
 * bad_layer[i] is set for layer i when its table is broken (it is not exercised then: an
 * invalid schema default would stop the process in px_config_new). */
static int check_tables(struct pc *pc, const struct px_plugin *p, bool *bad_layer)
{
	char why[1200], w2[1024];
	int bad = 0, n = 0;
#define SCHEMAS(tbl, what)                                                                   \
	for (int i = 0; (tbl) && (tbl)[i]; i++, n++) {                                       \
		check_schema((tbl)[i]->schema, w2, sizeof w2);                               \
		if (w2[0]) {                                                                 \
			snprintf(why, sizeof why, "%s '%s': %s", what, (tbl)[i]->kind, w2); \
			line(pc, FAIL, p->name, "tables", "%s", why);                        \
			bad++;                                                               \
		}                                                                            \
	}
	for (int i = 0; p->layers && p->layers[i]; i++, n++) {
		check_schema(p->layers[i]->schema, w2, sizeof w2);
		if (w2[0]) {
			line(pc, FAIL, p->name, "tables", "layer '%s': %s", p->layers[i]->kind, w2);
			bad_layer[i] = true;
			bad++;
		}
	}
	SCHEMAS(p->losses, "loss")
	SCHEMAS(p->optims, "optimizer")
	SCHEMAS(p->sources, "data source")
#undef SCHEMAS
	for (int i = 0; p->layers && p->layers[i]; i++) {
		const struct px_layer_ops *o = p->layers[i];
		check_ports(o->inputs, true, w2, sizeof w2);
		if (!w2[0])
			check_ports(o->outputs, false, w2, sizeof w2);
		if (!w2[0] && (o->flags & ~7u))
			snprintf(w2, sizeof w2, "unknown flags 0x%x", o->flags);
		if (!w2[0] && (!o->doc || !*o->doc))
			snprintf(w2, sizeof w2, "no doc line");
		if (!w2[0] && (o->flags & PX_LAYER_STATEFUL) && !o->reset_state)
			snprintf(w2, sizeof w2, "PX_LAYER_STATEFUL without reset_state");
		if (w2[0]) {
			line(pc, FAIL, p->name, "tables", "layer '%s': %s", o->kind, w2);
			bad_layer[i] = true;
			bad++;
		}
	}
	int nl = 0;
	while (p->layers && p->layers[nl])
		nl++;
	if (!bad)
		line(pc, PASS, p->name, "tables", "%d schema%s with valid defaults; ports, flags and "
		     "docs of %d layer kind%s well-formed", n, n == 1 ? "" : "s", nl, nl == 1 ? "" : "s");
	return bad;
}

/* ------------------------------------------------------------------ inputs */

/* One input port's test data, parsed from "-" (unconnected) or
 * [ids[N]: | idx:] D,D,... [@L,L,...] [/H,W]   e.g. "3,4,5@4,2,3", "ids6:3,5@5,3,4",
 * "idx:3,2,3,3/6,6" (maxpool2d indices into a 6x6 plane). dim 0 is the batch. */
enum in_type { IN_FLOAT, IN_IDS, IN_IDX };

struct in_spec {
	bool none;
	enum in_type type;
	int64_t vocab;            /* IN_IDS: ids in [0, vocab); 0: the kind's vocab option or 4 */
	struct px_shape shape;    /* dims past ndim: build-time extras (IN_IDX: pre-pool H, W) */
	int n_len;                /* lengths given (== dim 0) */
	int32_t len[16];
};

static bool parse_ints(const char **s, int64_t *v, int max, int *n)
{
	*n = 0;
	for (;;) {
		char *end;
		long long x = strtoll(*s, &end, 10);
		if (end == *s || *n >= max || x < 0 || x > 1000000)
			return false;
		v[(*n)++] = x;
		*s = end;
		if (**s != ',')
			return true;
		(*s)++;
	}
}

static int parse_port(const char *s, struct in_spec *o, char *why, size_t n)
{
	memset(o, 0, sizeof *o);
	while (*s == ' ')
		s++;
	if (!strcmp(s, "-")) {
		o->none = true;
		return 0;
	}
	if (!strncmp(s, "idx:", 4)) {
		o->type = IN_IDX;
		s += 4;
	} else if (!strncmp(s, "ids", 3)) {
		o->type = IN_IDS;
		char *end;
		o->vocab = strtoll(s + 3, &end, 10);
		if (*end != ':' || o->vocab < 0) {
			snprintf(why, n, "'%s': expected ids[N]:DIMS", s);
			return PX_ERR_INVALID;
		}
		s = end + 1;
	}
	int64_t v[16];
	int k;
	if (!parse_ints(&s, v, PX_MAX_DIMS, &k) || v[0] < 1) {
		snprintf(why, n, "'%s': expected dimensions like 3,4,5 (at most %d, batch first)", s,
			 PX_MAX_DIMS);
		return PX_ERR_INVALID;
	}
	o->shape.ndim = k;
	memcpy(o->shape.dim, v, (size_t)k * sizeof *v);
	if (*s == '@') {
		s++;
		if (!parse_ints(&s, v, 16, &k) || k != o->shape.dim[0] || o->shape.ndim < 2) {
			snprintf(why, n, "lengths: one per example (%lld) of a [B,T,...] input",
				 (long long)o->shape.dim[0]);
			return PX_ERR_INVALID;
		}
		for (int i = 0; i < k; i++) {
			if (v[i] > o->shape.dim[1]) {
				snprintf(why, n, "length %lld is longer than T = %lld", (long long)v[i],
					 (long long)o->shape.dim[1]);
				return PX_ERR_INVALID;
			}
			o->len[i] = (int32_t)v[i];
		}
		o->n_len = k;
	}
	if (*s == '/') {
		s++;
		if (!parse_ints(&s, v, 2, &k) || k != 2 || o->shape.ndim != 4) {
			snprintf(why, n, "'/H,W' (the plane the indices point into) needs a rank-4 input");
			return PX_ERR_INVALID;
		}
		o->shape.dim[4] = v[0];
		o->shape.dim[5] = v[1];
	}
	if (*s) {
		snprintf(why, n, "unexpected '%s'", s);
		return PX_ERR_INVALID;
	}
	if (o->type == IN_IDX && (o->shape.ndim != 4 || o->shape.dim[4] < o->shape.dim[2] ||
				  o->shape.dim[5] < o->shape.dim[3])) {
		snprintf(why, n, "idx: needs [B,C,h,w]/H,W with H >= h, W >= w");
		return PX_ERR_INVALID;
	}
	return 0;
}

/* "3,4,5@4,2,3; -; -" into specs; returns the count or a negative status. */
static int parse_inputs(const char *text, struct in_spec *specs, char *why, size_t n)
{
	char buf[512];
	snprintf(buf, sizeof buf, "%s", text);
	int k = 0;
	char *save = NULL;
	for (char *t = strtok_r(buf, ";", &save); t; t = strtok_r(NULL, ";", &save)) {
		if (k >= PC_MAX_IN) {
			snprintf(why, n, "at most %d inputs", PC_MAX_IN);
			return PX_ERR_INVALID;
		}
		char *e = t + strlen(t);
		while (e > t && e[-1] == ' ')
			*--e = 0;
		int rc = parse_port(t, &specs[k++], why, n);
		if (rc)
			return rc;
	}
	if (!k) {
		snprintf(why, n, "no inputs");
		return PX_ERR_INVALID;
	}
	return k;
}

static void spec_str(const struct in_spec *s, char *buf, size_t n)
{
	if (s->none) {
		snprintf(buf, n, "-");
		return;
	}
	size_t u = (size_t)snprintf(buf, n, "%s", s->type == IN_IDS ? "ids " : s->type == IN_IDX ?
				    "idx " : "");
	u += (size_t)snprintf(buf + u, u < n ? n - u : 0, "[");
	for (int i = 0; i < s->shape.ndim; i++)
		u += (size_t)snprintf(buf + u, u < n ? n - u : 0, "%s%lld", i ? "," : "",
				      (long long)s->shape.dim[i]);
	u += (size_t)snprintf(buf + u, u < n ? n - u : 0, "]");
	for (int i = 0; i < s->n_len; i++)
		u += (size_t)snprintf(buf + u, u < n ? n - u : 0, "%s%d%s", i ? "," : " lengths {",
				      s->len[i], i == s->n_len - 1 ? "}" : "");
}

/* Test tensors built from specs (malloc'ed; freed by inputs_free). */
struct inputs {
	int n;
	struct in_spec spec[PC_MAX_IN];
	struct px_tensor t[PC_MAX_IN];
	const struct px_tensor *p[PC_MAX_IN];   /* NULL for unconnected ports */
	struct px_shape shape[PC_MAX_IN];       /* for create: ndim 0 when unconnected */
	bool ragged[PC_MAX_IN];
};

static void inputs_free(struct inputs *in)
{
	for (int i = 0; i < in->n; i++) {
		free(in->t[i].data);
		free((void *)in->t[i].lengths);
		in->t[i].data = NULL;
		in->t[i].lengths = NULL;
	}
	in->n = 0;
}

/* Fill from the specs with values from `seed`: floats U(-1, 1); ids U{0..vocab-1}; indices
 * one position per pooling window of the recorded plane (distinct, as maxpool2d makes them). */
static int inputs_make(struct inputs *in, const struct in_spec *specs, int n, int64_t vocab,
		       uint64_t seed)
{
	struct px_rng r;
	px_rng_seed(&r, seed);
	memset(in, 0, sizeof *in);
	in->n = n;
	for (int i = 0; i < n; i++) {
		const struct in_spec *s = &specs[i];
		in->spec[i] = *s;
		if (s->none)
			continue;
		struct px_tensor *t = &in->t[i];
		t->ndim = s->shape.ndim;
		memcpy(t->shape, s->shape.dim, sizeof t->shape);
		for (int k = s->shape.ndim; k < PX_MAX_DIMS; k++)
			t->shape[k] = 0;
		int64_t ne = px_tensor_numel(t);
		t->data = calloc((size_t)(ne ? ne : 1), sizeof(float));
		if (!t->data)
			return PX_ERR_NOMEM;
		if (s->n_len) {
			int32_t *l = malloc((size_t)s->n_len * sizeof *l);
			if (!l)
				return PX_ERR_NOMEM;
			memcpy(l, s->len, (size_t)s->n_len * sizeof *l);
			t->lengths = l;
			in->ragged[i] = true;
		}
		int64_t v = s->vocab ? s->vocab : vocab;
		if (s->type == IN_FLOAT) {
			px_rng_fill_uniform(&r, t->data, ne, -1.0f, 1.0f);
		} else if (s->type == IN_IDS) {
			for (int64_t k = 0; k < ne; k++)
				t->data[k] = (float)px_rng_below(&r, (uint64_t)v);
		} else {  /* IN_IDX: [B,C,h,w] into H x W planes, window (kh, kw) = (H/h, W/w) */
			int64_t h = s->shape.dim[2], w = s->shape.dim[3];
			int64_t H = s->shape.dim[4], W = s->shape.dim[5], kh = H / h, kw = W / w;
			for (int64_t k = 0; k < ne; k++) {
				int64_t y = k / w % h, x = k % w;
				int64_t py = y * kh + (int64_t)px_rng_below(&r, (uint64_t)kh);
				int64_t px = x * kw + (int64_t)px_rng_below(&r, (uint64_t)kw);
				t->data[k] = (float)(py * W + px);
			}
		}
		in->p[i] = t;
		in->shape[i] = s->shape;
	}
	return 0;
}

/* Overwrite the padded steps (t >= length) of every ragged input with garbage. Returns how
 * many values changed. */
static int64_t inputs_garble_padding(struct inputs *in, int64_t vocab)
{
	int64_t changed = 0;
	for (int i = 0; i < in->n; i++) {
		struct px_tensor *t = &in->t[i];
		if (!in->p[i] || !t->lengths || in->spec[i].type == IN_IDX)
			continue;
		int64_t B = t->shape[0], T = t->shape[1], F = px_tensor_numel(t) / (B * T);
		int64_t v = in->spec[i].vocab ? in->spec[i].vocab : vocab;
		for (int64_t b = 0; b < B; b++)
			for (int64_t k = t->lengths[b] * F; k < T * F; k++, changed++) {
				float *x = &t->data[b * T * F + k];
				*x = in->spec[i].type == IN_IDS ? (float)(v - 1 - (int64_t)*x) : 3.0f + *x;
			}
	}
	return changed;
}

/* ------------------------------------------------------------------ cells as layers */

/* A cell is exercised through a one-step layer: inputs x [B,input] and s [n_state,B,H]
 * (the cell's state layout), output s' [n_state,B,H]. The cell under test is handed to
 * create through this variable (the command is single-threaded). */
static const struct px_cell_ops *adapter_cell;

struct adapter {
	const struct px_cell_ops *ops;
	void *cs;
	float *cache;   /* the last step's (step arena) */
};

static const struct px_param_spec adapter_schema[] = {
	{"hidden", PX_T_INT, "3", 1, 1 << 20, NULL, "hidden units of the cell"},
	{NULL, 0, NULL, 0, 0, NULL, NULL},
};
static const struct px_port_spec adapter_in[] = {
	{"x", 0, "input [B, input]"},
	{"s", 0, "state [n_state, B, H]"},
	{NULL, 0, NULL},
};
static const struct px_port_spec adapter_out[] = {{"s_next", 0, "state [n_state, B, H]"}, {NULL, 0, NULL}};

static void adapter_destroy(void *self)
{
	struct adapter *a = self;
	if (a && a->cs)
		a->ops->destroy(a->cs);
	free(a);
}

static int adapter_create(struct px_build *b, void **self, struct px_shape *out,
			  struct px_error *err)
{
	struct adapter *a = calloc(1, sizeof *a);
	if (!a)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	a->ops = adapter_cell;
	int64_t H = px_config_int(b->cfg, "hidden");
	if (b->in[0].ndim != 2 || b->in[1].ndim != 3 || b->in[1].dim[2] != H) {
		adapter_destroy(a);
		return px_error_set(err, PX_ERR_SHAPE, "cell check: inputs must be x [B,input] and "
				    "s [n_state,B,%lld]", (long long)H);
	}
	int rc = a->ops->create(b, "cell.", b->in[0].dim[1], H, &a->cs, err);
	if (rc) {
		adapter_destroy(a);
		return rc;
	}
	out[0] = b->in[1];
	*self = a;
	return 0;
}

/* s' = cell(x, s) */
static int adapter_forward(void *self, struct px_fwd *f, struct px_error *err)
{
	struct adapter *a = self;
	const struct px_tensor *x = f->in[0], *s = f->in[1];
	int64_t B = x->shape[0];
	struct px_tensor *sn = px_tensor_like(f->arena, s);
	a->cache = px_arena_zalloc(f->arena, a->ops->cache_floats(a->cs, B) * sizeof(float) + 64);
	if (!sn || !a->cache)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	a->ops->step(a->cs, B, x->data, s->data, sn->data, a->cache);
	f->out[0] = sn;
	return 0;
}

static int adapter_backward(void *self, struct px_bwd *bw, struct px_error *err)
{
	struct adapter *a = self;
	const struct px_tensor *x = bw->in[0], *s = bw->in[1];
	if (!bw->d_out[0])
		return 0;
	float *ds = bw->d_in[1] ? bw->d_in[1]->data
				: px_arena_zalloc(bw->arena, (size_t)px_tensor_numel(s) * sizeof(float));
	if (!ds)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	a->ops->step_backward(a->cs, x->shape[0], x->data, s->data, a->cache, bw->d_out[0]->data,
			      bw->d_in[0] ? bw->d_in[0]->data : NULL, ds);
	return 0;
}

static const struct px_layer_ops adapter_ops = {
	.struct_size = sizeof(struct px_layer_ops),
	.kind = "cell",
	.doc = "one step of a recurrent cell (plugin-check)",
	.schema = adapter_schema,
	.inputs = adapter_in,
	.outputs = adapter_out,
	.create = adapter_create,
	.forward = adapter_forward,
	.backward = adapter_backward,
	.destroy = adapter_destroy,
};

/* ------------------------------------------------------------------ running a layer */

/* Create ops directly (batch -1, as a model does), to learn the declared output shapes. */
static int trial_create(const struct pc *pc, const struct px_layer_ops *ops, const char *opts,
			const struct inputs *in, struct px_shape *out, struct px_error *err)
{
	struct px_config *cfg = NULL;
	int rc = px_config_parse(ops->schema, opts, &cfg, err);
	if (rc)
		return rc;
	struct px_build_priv bp = {.arena = px_arena_new(1 << 16), .owner = ops->kind};
	struct px_shape sh[PC_MAX_IN];
	for (int i = 0; i < in->n; i++) {
		sh[i] = in->shape[i];
		if (sh[i].ndim)
			sh[i].dim[0] = -1;
	}
	struct px_rng rng;
	px_rng_seed(&rng, 1);
	struct px_build b = {
		.struct_size = sizeof b, .node = "layer", .cfg = cfg, .n_in = in->n, .in = sh,
		.in_ragged = in->ragged, .rng = &rng, .host = pc->host, .priv = &bp,
	};
	void *self = NULL;
	memset(out, 0, sizeof(struct px_shape) * PX_MAX_PORTS);
	if (!bp.arena)
		rc = px_error_set(err, PX_ERR_NOMEM, "out of memory");
	else
		rc = ops->create(&b, &self, out, err);
	if (self && ops->destroy)   /* as the core does, also after a failed create */
		ops->destroy(self);
	px_build_priv_free(&bp);
	px_arena_free(bp.arena);
	px_config_free(cfg);
	return rc;
}

static bool differentiable_input(const struct px_layer_ops *ops, int i)
{
	int np = 0;
	while (ops->inputs[np].name)
		np++;
	int port = i < np ? i : np - 1;
	return !(ops->inputs[port].flags & PX_PORT_NO_GRAD) &&
	       !(i == 0 && (ops->flags & PX_LAYER_IDS_INPUT));
}

/* Everything one forward + backward produces, concatenated: the outputs, then the input
 * gradients (for a fixed random d_out), then the parameter gradients. Caller frees. */
struct result {
	float *v;
	int64_t n;
	int64_t n_out;   /* of which the outputs */
};

static int collect(struct px_layer_inst *li, const struct inputs *in, bool train,
		   struct result *res, struct px_error *err)
{
	const struct px_layer_ops *ops = px_layer_inst_ops(li);
	memset(res, 0, sizeof *res);
	int rc = px_layer_inst_forward(li, in->p, train, err);
	if (rc)
		return rc;
	int no = px_layer_inst_n_out(li), np = px_layer_inst_n_params(li);
	const struct px_tensor *d_out[PX_MAX_PORTS] = {0};
	struct px_tensor *d_in[PC_MAX_IN] = {0};
	struct px_rng r;
	px_rng_seed(&r, 99);
	int64_t total = 0;
	for (int k = 0; k < no; k++) {
		const struct px_tensor *o = px_layer_inst_out(li, k);
		total += px_tensor_numel(o);
		if (ops->outputs[k].flags & PX_PORT_NO_GRAD)
			continue;
		struct px_tensor *d = px_layer_inst_tensor(li, o->ndim, o->shape);
		if (!d)
			return px_error_set(err, PX_ERR_NOMEM, "out of memory");
		px_rng_fill_uniform(&r, d->data, px_tensor_numel(d), -1.0f, 1.0f);
		d_out[k] = d;
	}
	res->n_out = total;
	for (int i = 0; i < in->n; i++) {
		if (!in->p[i] || !differentiable_input(ops, i))
			continue;
		d_in[i] = px_layer_inst_tensor(li, in->p[i]->ndim, in->p[i]->shape);
		if (!d_in[i])
			return px_error_set(err, PX_ERR_NOMEM, "out of memory");
		total += px_tensor_numel(d_in[i]);
	}
	for (int p = 0; p < np; p++) {
		struct px_param *prm = px_layer_inst_param(li, p);
		if (prm->trainable && prm->grad)
			total += px_tensor_numel(prm->grad);
	}
	/* outputs are copied before backward: a layer may reuse nothing of them, but be safe */
	res->v = malloc((size_t)(total ? total : 1) * sizeof(float));
	if (!res->v)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	for (int k = 0; k < no; k++) {
		const struct px_tensor *o = px_layer_inst_out(li, k);
		memcpy(res->v + res->n, o->data, (size_t)px_tensor_numel(o) * sizeof(float));
		res->n += px_tensor_numel(o);
	}
	if ((rc = px_layer_inst_backward(li, d_out, d_in, err)))
		return rc;
	for (int i = 0; i < in->n; i++)
		if (d_in[i]) {
			memcpy(res->v + res->n, d_in[i]->data,
			       (size_t)px_tensor_numel(d_in[i]) * sizeof(float));
			res->n += px_tensor_numel(d_in[i]);
		}
	for (int p = 0; p < np; p++) {
		struct px_param *prm = px_layer_inst_param(li, p);
		if (!prm->trainable || !prm->grad)
			continue;
		memcpy(res->v + res->n, prm->grad->data,
		       (size_t)px_tensor_numel(prm->grad) * sizeof(float));
		res->n += px_tensor_numel(prm->grad);
	}
	return 0;
}

/* Max |a - b| over the results; INFINITY when their sizes differ or a NaN differs. Sets
 * *bitwise when every value has the same bits. */
static double result_diff(const struct result *a, const struct result *b, int64_t upto,
			  bool *bitwise)
{
	*bitwise = a->n == b->n;
	if (a->n != b->n)
		return INFINITY;
	int64_t n = upto > 0 && upto < a->n ? upto : a->n;
	double m = 0;
	for (int64_t i = 0; i < n; i++) {
		if (memcmp(&a->v[i], &b->v[i], sizeof(float)))
			*bitwise = false;
		double d = fabs((double)a->v[i] - b->v[i]);
		if (isnan(d))
			d = isnan(a->v[i]) && isnan(b->v[i]) ? 0 : INFINITY;
		m = d > m ? d : m;
	}
	return m;
}

static double result_scale(const struct result *a)
{
	double m = 0;
	for (int64_t i = 0; i < a->n; i++)
		m = fabs(a->v[i]) > m ? fabs(a->v[i]) : m;
	return m;
}

/* ------------------------------------------------------------------ options and inputs */

/* Per-kind recipes for kinds of this repository that need more than the heuristic. */
static const struct recipe {
	const char *kind;
	const char *options;   /* flow-style, "" for none */
	const char *inputs;    /* --input-shape syntax, NULL: the heuristic */
} recipes[] = {
	/* indices as a 2x2 maxpool2d over a 6x6 plane makes them */
	{"maxunpool2d", "", "3,2,3,3; idx:3,2,3,3/6,6"},
	/* sizes[0] must be the input's features */
	{"autoencoder", "sizes: [5, 4, 3]", "3,5"},
};

static const struct recipe *find_recipe(const char *kind)
{
	for (size_t i = 0; i < sizeof recipes / sizeof recipes[0]; i++)
		if (!strcmp(recipes[i].kind, kind))
			return &recipes[i];
	return NULL;
}

static bool opts_has(const char *opts, const char *key)
{
	size_t kl = strlen(key);
	for (const char *p = opts; (p = strstr(p, key)); p += kl)
		if ((p == opts || p[-1] == ' ' || p[-1] == ',') && p[kl] == ':')
			return true;
	return false;
}

/* The options of a kind: --set values (keys of its schema only), then the recipe's, then a
 * small value for every other required key: ints 3 (within range), floats 0.5, the first
 * enum choice, lists of one such value, "" for strings. */
static void kind_options(const struct pc *pc, const struct px_param_spec *schema,
			 const struct recipe *rc, char *buf, size_t n)
{
	size_t u = 0;
	buf[0] = 0;
	for (int i = 0; i < pc->n_sets; i++) {
		const char *eq = strchr(pc->sets[i], '=');
		if (!eq)
			continue;
		bool known = false;
		for (const struct px_param_spec *s = schema; s && s->key; s++)
			known |= strlen(s->key) == (size_t)(eq - pc->sets[i]) &&
				 !strncmp(s->key, pc->sets[i], (size_t)(eq - pc->sets[i]));
		if (known && u < n)
			u += (size_t)snprintf(buf + u, n - u, "%s%.*s: %s", u ? ", " : "",
					      (int)(eq - pc->sets[i]), pc->sets[i], eq + 1);
	}
	if (rc && rc->options[0]) {
		char tmp[256];
		snprintf(tmp, sizeof tmp, "%s", rc->options);
		char *save = NULL;
		for (char *t = strtok_r(tmp, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
			while (*t == ' ')
				t++;
			char key[64];
			/* a list value "[5, 4, 3]" was split: glue its pieces back */
			if (strchr(t, '[') && !strchr(t, ']')) {
				char *more;
				while (!strchr(t, ']') && (more = strtok_r(NULL, ",", &save)))
					t[strlen(t)] = ',';
			}
			if (sscanf(t, "%63[^:]", key) == 1 && !opts_has(buf, key) && u < n)
				u += (size_t)snprintf(buf + u, n - u, "%s%s", u ? ", " : "", t);
		}
	}
	for (const struct px_param_spec *s = schema; s && s->key; s++) {
		if (s->def || opts_has(buf, s->key) || u >= n)
			continue;
		double x = s->type == PX_T_INT || s->type == PX_T_INTS ? 3 : 0.5;
		x = x < s->min ? s->min : x > s->max ? s->max : x;
		char v[128];
		if (s->type == PX_T_INT || s->type == PX_T_FLOAT)
			snprintf(v, sizeof v, "%g", x);
		else if (s->type == PX_T_INTS || s->type == PX_T_FLOATS)
			snprintf(v, sizeof v, "[%g]", x);
		else if (s->type == PX_T_BOOL)
			snprintf(v, sizeof v, "false");
		else if (s->type == PX_T_ENUM)
			snprintf(v, sizeof v, "%.*s", (int)strcspn(s->choices, "|"), s->choices);
		else
			snprintf(v, sizeof v, "\"\"");
		u += (size_t)snprintf(buf + u, n - u, "%s%s: %s", u ? ", " : "", s->key, v);
	}
}

/* ids inputs draw from [0, vocab): the kind's int option named "vocab" when it has one */
static int64_t kind_vocab(const struct px_layer_ops *ops, const char *opts)
{
	bool has = false;
	for (const struct px_param_spec *s = ops->schema; s && s->key; s++)
		has |= !strcmp(s->key, "vocab") && s->type == PX_T_INT;
	struct px_config *c = NULL;
	struct px_error e;
	int64_t v = 4;
	if (has && !px_config_parse(ops->schema, opts, &c, &e))
		v = px_config_int(c, "vocab");
	px_config_free(c);
	return v > 0 ? v : 4;
}

/* Pick the inputs: --input-shape, the recipe, or the first combination of candidate shapes
 * that create accepts. Candidates for a port: ids [3,5] with lengths {5,3,4} for an
 * IDS_INPUT kind's first port; else a ragged sequence [3,4,5] lengths {4,2,3} (so that every
 * kind that takes sequences is checked on a ragged one), a matrix [3,5], images [3,2,6,6].
 * Optional ports after the first stay unconnected; a variadic last port gets two tensors. */
static int choose_inputs(const struct pc *pc, const struct px_layer_ops *ops, const char *opts,
			 const char *given, struct in_spec *specs, int64_t vocab,
			 struct px_shape *declared, char *why, size_t n)
{
	struct px_error err = {0};
	struct inputs in;
	int count;
	if (given) {
		count = parse_inputs(given, specs, why, n);
		if (count < 0)
			return count;
		if (inputs_make(&in, specs, count, vocab, 7))
			return px_error_set(&err, PX_ERR_NOMEM, "out of memory");
		int rc = trial_create(pc, ops, opts, &in, declared, &err);
		inputs_free(&in);
		if (rc)
			snprintf(why, n, "%s", err.msg);
		return rc ? rc : count;
	}
	static const char *const seq = "3,4,5@4,2,3", *mat = "3,5", *img = "3,2,6,6";
	const char *cand[PC_MAX_IN][3];
	int nc[PC_MAX_IN], ports = 0;
	while (ops->inputs[ports].name && ports < PC_MAX_IN)
		ports++;
	int slots = 0;
	for (int p = 0; p < ports && slots < PC_MAX_IN; p++) {
		unsigned fl = ops->inputs[p].flags;
		int reps = (fl & PX_PORT_VARIADIC) && slots + 1 < PC_MAX_IN ? 2 : 1;
		for (int r = 0; r < reps; r++, slots++) {
			if (p == 0 && (ops->flags & PX_LAYER_IDS_INPUT)) {
				cand[slots][0] = "ids0:3,5@5,3,4";
				nc[slots] = 1;
			} else if (p > 0 && (fl & PX_PORT_OPTIONAL)) {
				cand[slots][0] = "-";
				nc[slots] = 1;
			} else {
				cand[slots][0] = seq, cand[slots][1] = mat, cand[slots][2] = img;
				nc[slots] = 3;
			}
		}
	}
	int pick[PC_MAX_IN] = {0};
	for (;;) {
		for (int i = 0; i < slots; i++)
			if (parse_port(cand[i][pick[i]], &specs[i], why, n))
				return PX_ERR_INVALID;
		if (inputs_make(&in, specs, slots, vocab, 7))
			return px_error_set(&err, PX_ERR_NOMEM, "out of memory");
		int rc = trial_create(pc, ops, opts, &in, declared, &err);
		inputs_free(&in);
		if (!rc)
			return slots;
		snprintf(why, n, "%s", err.msg);
		int i = slots - 1;   /* next combination; the first port varies slowest */
		while (i >= 0 && ++pick[i] == nc[i])
			pick[i--] = 0;
		if (i < 0)
			return rc;
	}
}

/* ------------------------------------------------------------------ the checks of one kind */

static void param_summary(struct px_layer_inst *li, char *buf, size_t n)
{
	int np = px_layer_inst_n_params(li);
	int64_t vals = 0;
	for (int p = 0; p < np; p++)
		vals += px_tensor_numel(px_layer_inst_param(li, p)->value);
	snprintf(buf, n, "%d parameter tensor%s (%lld values)", np, np == 1 ? "" : "s",
		 (long long)vals);
}

/* Output shapes against what create declared (dim 0: the batch; -1: any). */
static bool check_shapes(struct px_layer_inst *li, const struct px_shape *declared,
			 int64_t batch, char *buf, size_t n)
{
	const struct px_layer_ops *ops = px_layer_inst_ops(li);
	size_t u = 0;
	bool ok = true;
	buf[0] = 0;
	for (int k = 0; k < px_layer_inst_n_out(li); k++) {
		const struct px_tensor *o = px_layer_inst_out(li, k);
		struct px_shape got;
		px_tensor_shape(o, &got);
		bool same = got.ndim == declared[k].ndim && got.dim[0] == batch;
		for (int d = 1; same && d < got.ndim; d++)
			same = declared[k].dim[d] < 0 || declared[k].dim[d] == got.dim[d];
		bool finite = true;
		for (int64_t i = 0; i < px_tensor_numel(o); i++)
			finite &= isfinite(o->data[i]) != 0;
		char g[96], w[96];
		px_shape_str(&got, g, sizeof g);
		px_shape_str(&declared[k], w, sizeof w);
		if (u < n)
			u += (size_t)snprintf(buf + u, n - u, "%s%s %s%s%s%s", k ? ", " : "",
					      ops->outputs[k].name, g, same ? "" : " but create declared ",
					      same ? "" : w, finite ? "" : " with NaN/Inf");
		ok &= same && finite;
	}
	return ok;
}

/* Padded steps: outputs that carry lengths are zero there, and garbage in the padded steps
 * of the inputs changes nothing (outputs, input gradients, parameter gradients). */
static void check_padding(struct pc *pc, const char *what, struct px_layer_inst *li,
			  const struct inputs *in, int64_t vocab, const struct result *base)
{
	bool any = false;
	for (int i = 0; i < in->n; i++)
		any |= in->p[i] && in->p[i]->lengths;
	if (!any) {
		line(pc, SKIP, what, "padding", "no ragged input");
		return;
	}
	struct px_error err = {0};
	double out_pad = 0;
	int with_len = 0;
	int rc = px_layer_inst_forward(li, in->p, false, &err);
	for (int k = 0; !rc && k < px_layer_inst_n_out(li); k++) {
		const struct px_tensor *o = px_layer_inst_out(li, k);
		if (!o->lengths || o->ndim < 2)
			continue;
		with_len++;
		int64_t B = o->shape[0], T = o->shape[1], F = px_tensor_numel(o) / (B * T);
		for (int64_t b = 0; b < B; b++)
			for (int64_t x = o->lengths[b] * F; x < T * F; x++)
				out_pad = fmax(out_pad, fabs(o->data[b * T * F + x]));
	}
	struct inputs g;
	struct result r2 = {0};
	int64_t changed = 0;
	if (!rc) {
		rc = inputs_make(&g, in->spec, in->n, vocab, 7) ? PX_ERR_NOMEM : 0;
		changed = rc ? 0 : inputs_garble_padding(&g, vocab);
		if (!rc)
			rc = collect(li, &g, false, &r2, &err);
		inputs_free(&g);
	}
	if (rc) {
		line(pc, FAIL, what, "padding", "%s", err.msg);
		free(r2.v);
		return;
	}
	bool bitwise;
	double d = result_diff(base, &r2, 0, &bitwise);
	bool ok = out_pad == 0 && d == 0;
	line(pc, ok ? PASS : FAIL, what, "padding", "%d output%s with lengths, max |y| at padded "
	     "steps %.3g; %lld padded input values changed: max change of outputs and gradients "
	     "%.3g", with_len, with_len == 1 ? "" : "s", out_pad, (long long)changed, d);
	free(r2.v);
}

static void check_grad(struct pc *pc, const char *what, struct px_layer_inst *li,
		       const struct inputs *in, bool train)
{
	struct px_gradcheck_opts o;
	px_gradcheck_defaults(&o);
	o.train = train;
	o.max_per_tensor = PC_GRAD_SAMPLES;
	struct px_gradcheck_result r, r0;
	struct px_error err = {0};
	const char *name = train ? "grad (train)" : "grad (eval)";
	if (px_gradcheck_layer(li, in->p, &o, &r, &err)) {
		line(pc, FAIL, what, name, "%s", err.msg);
		return;
	}
	if (!r.checked) {
		line(pc, SKIP, what, name, "nothing to differentiate (no parameters, no float inputs)");
		return;
	}
	/* A step of eps can cross the kink of a piecewise-linear op (relu, max) near the
	 * evaluation point; a correct gradient then still matches with a ten times smaller step,
	 * a wrong one does not. */
	char retry[256] = "";
	if (r.failed) {
		r0 = r;
		o.eps /= 10;
		if (px_gradcheck_layer(li, in->p, &o, &r, &err)) {
			line(pc, FAIL, what, name, "%s", err.msg);
			return;
		}
		snprintf(retry, sizeof retry, " at eps %g (at eps %g %lld elements were beyond, max "
			 "abs err %.2e: a kink within the step)", o.eps, o.eps * 10,
			 (long long)r0.failed, r0.max_abs_err);
	}
	line(pc, r.failed ? FAIL : PASS, what, name, "%lld elements, %lld beyond |a-n| <= %g + %g|n|;"
	     " max abs err %.2e, max rel err %.2e%s%s%s%s", (long long)r.checked,
	     (long long)r.failed, o.atol, o.rtol, r.max_abs_err, r.max_rel_err,
	     r.worst[0] ? " (worst: " : "", r.worst, r.worst[0] ? ")" : "", retry);
}

/* backward ADDS into d_in: d_in pre-filled with 1 must come back as 1 + the gradient. */
static void check_accumulate(struct pc *pc, const char *what, struct px_layer_inst *li,
			     const struct inputs *in)
{
	const struct px_layer_ops *ops = px_layer_inst_ops(li);
	struct px_error err = {0};
	const struct px_tensor *d_out[PX_MAX_PORTS] = {0};
	struct px_tensor *d0[PC_MAX_IN] = {0}, *d1[PC_MAX_IN] = {0};
	struct px_rng r;
	px_rng_seed(&r, 5);
	int rc = px_layer_inst_forward(li, in->p, false, &err), checked = 0;
	for (int k = 0; !rc && k < px_layer_inst_n_out(li); k++) {
		const struct px_tensor *o = px_layer_inst_out(li, k);
		if (ops->outputs[k].flags & PX_PORT_NO_GRAD)
			continue;
		struct px_tensor *d = px_layer_inst_tensor(li, o->ndim, o->shape);
		if (!d) {
			rc = px_error_set(&err, PX_ERR_NOMEM, "out of memory");
			break;
		}
		px_rng_fill_uniform(&r, d->data, px_tensor_numel(d), -1.0f, 1.0f);
		d_out[k] = d;
	}
	for (int i = 0; !rc && i < in->n; i++) {
		if (!in->p[i] || !differentiable_input(ops, i))
			continue;
		d0[i] = px_layer_inst_tensor(li, in->p[i]->ndim, in->p[i]->shape);
		d1[i] = px_layer_inst_tensor(li, in->p[i]->ndim, in->p[i]->shape);
		if (!d0[i] || !d1[i]) {
			rc = px_error_set(&err, PX_ERR_NOMEM, "out of memory");
			break;
		}
		px_init_fill(d1[i], 1.0f);
		checked++;
	}
	if (!rc && !checked) {
		line(pc, SKIP, what, "accumulate", "no differentiable input");
		return;
	}
	if (!rc)
		rc = px_layer_inst_backward(li, d_out, d0, &err);
	if (!rc)
		rc = px_layer_inst_backward(li, d_out, d1, &err);
	/* and a backward with no input gradients wanted and only the first output's gradient */
	const struct px_tensor *first[PX_MAX_PORTS] = {0};
	for (int k = 0; k < PX_MAX_PORTS && !first[0]; k++)
		first[k] = d_out[k];
	if (!rc)
		rc = px_layer_inst_backward(li, first, NULL, &err);
	if (rc) {
		line(pc, FAIL, what, "accumulate", "%s", err.msg);
		return;
	}
	double m = 0;
	for (int i = 0; i < in->n; i++)
		for (int64_t k = 0; d0[i] && k < px_tensor_numel(d0[i]); k++)
			m = fmax(m, fabs((double)d1[i]->data[k] - 1.0 - d0[i]->data[k]) /
					    (1.0 + fabs(d0[i]->data[k])));
	line(pc, m <= 1e-6 ? PASS : FAIL, what, "accumulate", "d_in pre-filled with 1 comes back "
	     "as 1 + gradient (max rel err %.2e); backward with only one output gradient and no "
	     "input gradients runs", m);
}

static void check_determinism(struct pc *pc, const char *what, const struct px_layer_ops *ops,
			      const char *opts, const struct inputs *in, struct px_layer_inst *li,
			      const struct result *base)
{
	struct px_error err = {0};
	struct result once = {0}, again = {0}, other = {0}, threads = {0};
	struct px_layer_inst *l2 = NULL;
	/* li has run training-mode steps by now (which may update buffers such as running
	 * statistics): compare it with itself, and `base` (its first run) with a new instance */
	int rc = collect(li, in, false, &once, &err);
	if (!rc)
		rc = collect(li, in, false, &again, &err);
	if (!rc)
		rc = px_layer_inst_new(ops, opts, in->n, in->shape, in->ragged, 1, pc->host, &l2, &err);
	if (!rc)
		rc = collect(l2, in, false, &other, &err);
	if (rc) {
		line(pc, FAIL, what, "determinism", "%s", err.msg);
		goto done;
	}
	bool b1, b2;
	double d1 = result_diff(&once, &again, 0, &b1), d2 = result_diff(base, &other, 0, &b2);
	line(pc, b1 && b2 ? PASS : FAIL, what, "determinism", "the same instance twice: max diff "
	     "%.3g%s; a second instance of the same seed: max diff %.3g%s", d1,
	     b1 ? " (bitwise)" : "", d2, b2 ? " (bitwise)" : "");
	/* BLAS threads: OpenBLAS may split reductions differently; allow float rounding */
	int t0 = px_get_threads();
	px_set_threads(2);
	rc = collect(l2, in, false, &threads, &err);
	px_set_threads(t0);
	if (rc) {
		line(pc, FAIL, what, "threads", "%s", err.msg);
		goto done;
	}
	bool b3;
	double d3 = result_diff(&other, &threads, 0, &b3), tol = 1e-5 * (1.0 + result_scale(base));
	line(pc, d3 <= tol ? PASS : FAIL, what, "threads", "BLAS threads 1 vs 2: max diff %.3g%s "
	     "(tolerance %.2g)", d3, b3 ? " (bitwise)" : "", tol);
done:
	free(once.v);
	free(again.v);
	free(other.v);
	free(threads.v);
	px_layer_inst_free(l2);
}

/* Save the parameters (and buffers) as a safetensors checkpoint, load them into an instance
 * initialised from another seed, and compare everything the two compute. */
static void check_checkpoint(struct pc *pc, const char *what, const struct px_layer_ops *ops,
			     const char *opts, const struct inputs *in, struct px_layer_inst *li)
{
	struct px_error err = {0};
	int np = px_layer_inst_n_params(li);
	if (!np) {
		line(pc, SKIP, what, "checkpoint", "no parameters");
		return;
	}
	struct px_st_entry *e = calloc((size_t)np, sizeof *e);
	char **names = calloc((size_t)np, sizeof *names);
	struct px_layer_inst *l2 = NULL;
	struct px_st_file *f = NULL;
	struct result res = {0}, now = {0};
	char path[128], dup[256] = "";
	snprintf(path, sizeof path, "%s/layer.safetensors", pc->tmpdir);
	int rc = e && names ? 0 : px_error_set(&err, PX_ERR_NOMEM, "out of memory");
	struct px_rng rng;
	px_rng_seed(&rng, 11);
	for (int p = 0; !rc && p < np; p++) {
		struct px_param *prm = px_layer_inst_param(li, p);
		/* move every value off its initial one (so that a layer whose init ignores the
		 * seed is checked too): v(1 + u) for buffers (variances stay positive), and + u'
		 * for trainable parameters (biases start at zero) */
		for (int64_t k = 0; k < px_tensor_numel(prm->value); k++)
			prm->value->data[k] = prm->value->data[k] * (1.0f + px_rng_uniform_range(&rng, -0.1f, 0.1f)) +
					      (prm->trainable ? px_rng_uniform_range(&rng, -0.1f, 0.1f) : 0.0f);
		for (int q = 0; q < p && !dup[0]; q++)
			if (!strcmp(prm->name, px_layer_inst_param(li, q)->name))
				snprintf(dup, sizeof dup, "parameter name '%s' is declared twice", prm->name);
		if (!prm->name[0] || strchr(prm->name, ' '))
			snprintf(dup, sizeof dup, "parameter name '%s' is empty or has spaces", prm->name);
		names[p] = px_asprintf("layer.%s", prm->name);
		if (!names[p])
			rc = px_error_set(&err, PX_ERR_NOMEM, "out of memory");
		else
			e[p] = (struct px_st_entry){names[p], prm->value->ndim, prm->value->shape,
						    prm->value->data};
	}
	if (!rc && dup[0])
		rc = px_error_set(&err, PX_ERR_INVALID, "%s", dup);
	if (!rc)
		rc = px_st_write(path, e, np, NULL, NULL, 0, &err);
	if (!rc)
		rc = px_st_open(path, &f, &err);
	if (!rc)
		rc = px_layer_inst_new(ops, opts, in->n, in->shape, in->ragged, 2, pc->host, &l2, &err);
	bool differ = false;
	for (int p = 0; !rc && p < np; p++) {
		struct px_param *prm = px_layer_inst_param(l2, p);
		int idx = px_st_find(f, names[p]), nd;
		int64_t sh[PX_MAX_DIMS];
		const float *d = idx >= 0 ? px_st_data(f, idx, &nd, sh) : NULL;
		if (!d || nd != prm->value->ndim ||
		    memcmp(sh, prm->value->shape, (size_t)nd * sizeof *sh)) {
			rc = px_error_set(&err, PX_ERR_CORRUPT, "tensor %s is missing or has another "
					  "shape in the fresh instance", names[p]);
			break;
		}
		int64_t ne = px_tensor_numel(prm->value);
		differ |= memcmp(prm->value->data, d, (size_t)ne * sizeof(float)) != 0;
		memcpy(prm->value->data, d, (size_t)ne * sizeof(float));
	}
	if (!rc)
		rc = collect(l2, in, false, &res, &err);
	if (!rc)
		rc = collect(li, in, false, &now, &err);
	if (rc) {
		line(pc, FAIL, what, "checkpoint", "%s", err.msg);
	} else {
		bool bitwise;
		double d = result_diff(&now, &res, 0, &bitwise);
		line(pc, bitwise && differ ? PASS : FAIL, what, "checkpoint", "%d tensors (perturbed) "
		     "saved and loaded into an instance of another seed: %s; outputs and gradients "
		     "max diff %.3g%s", np, differ ? "every tensor found, with its shape" :
		     "but its values were already equal (the load did nothing?)", d,
		     bitwise ? " (bitwise)" : "");
	}
	px_st_close(f);
	unlink(path);
	px_layer_inst_free(l2);
	free(res.v);
	free(now.v);
	for (int p = 0; names && p < np; p++)
		free(names[p]);
	free(names);
	free(e);
}

/* All checks of one layer kind (or a cell through the adapter: cell != NULL). */
static void check_kind(struct pc *pc, const struct px_layer_ops *ops, const struct px_cell_ops *cell,
		       const char *given_inputs)
{
	char what[160], opts[1024], why[1024], desc[1024];
	snprintf(what, sizeof what, "%s%s", cell ? cell->kind : ops->kind, cell ? " (cell)" : "");
	const struct recipe *rcp = cell ? NULL : find_recipe(ops->kind);
	kind_options(pc, ops->schema, rcp, opts, sizeof opts);
	int64_t vocab = kind_vocab(ops, opts);
	struct in_spec specs[PC_MAX_IN];
	struct px_shape declared[PX_MAX_PORTS];
	char cell_in[64];
	if (cell) {
		struct px_config *c = NULL;
		struct px_error e;
		int64_t H = px_config_parse(adapter_schema, opts, &c, &e) ? 3 : px_config_int(c, "hidden");
		px_config_free(c);
		snprintf(cell_in, sizeof cell_in, "3,5; %d,3,%lld", cell->n_state, (long long)H);
		if (!given_inputs)
			given_inputs = cell_in;
	} else if (!given_inputs && rcp) {
		given_inputs = rcp->inputs;
	}
	int n = choose_inputs(pc, ops, opts, given_inputs, specs, vocab, declared, why, sizeof why);
	if (n < 0) {
		line(pc, FAIL, what, "create", "options {%s}: no input shapes found that create "
		     "accepts (last error: %s); give them with --input-shape", opts, why);
		return;
	}
	size_t u = 0;
	for (int i = 0, np = 0; i < n; i++) {
		char s[128];
		spec_str(&specs[i], s, sizeof s);
		while (ops->inputs[np + 1].name && np < i)
			np++;
		u += (size_t)snprintf(desc + u, u < sizeof desc ? sizeof desc - u : 0, "%s%s %s",
				      i ? "; " : "", ops->inputs[np].name, s);
	}
	struct inputs in;
	struct px_layer_inst *li = NULL;
	struct px_error err = {0};
	struct result base = {0};
	int rc = inputs_make(&in, specs, n, vocab, 7) ? px_error_set(&err, PX_ERR_NOMEM, "out of memory") : 0;
	if (!rc)
		rc = px_layer_inst_new(ops, opts, n, in.shape, in.ragged, 1, pc->host, &li, &err);
	if (rc) {
		line(pc, FAIL, what, "create", "options {%s}, inputs %s: %s", opts, desc, err.msg);
		goto done;
	}
	char ps[128];
	param_summary(li, ps, sizeof ps);
	line(pc, PASS, what, "create", "options {%s}, inputs %s: %s", opts, desc, ps);
	if ((rc = collect(li, &in, false, &base, &err))) {
		line(pc, FAIL, what, "forward/backward", "%s", err.msg);
		goto done;
	}
	if (!cell) {
		/* collect ran backward last: run forward again for the outputs */
		rc = px_layer_inst_forward(li, in.p, false, &err);
		int64_t batch = 0;
		for (int i = 0; i < n && !batch; i++)
			batch = in.p[i] ? in.p[i]->shape[0] : 0;
		bool ok = !rc && check_shapes(li, declared, batch, why, sizeof why);
		line(pc, ok ? PASS : FAIL, what, "shapes", "%s", rc ? err.msg : why);
		check_padding(pc, what, li, &in, vocab, &base);
	}
	check_grad(pc, what, li, &in, false);
	check_grad(pc, what, li, &in, true);
	check_accumulate(pc, what, li, &in);
	check_determinism(pc, what, ops, opts, &in, li, &base);
	check_checkpoint(pc, what, ops, opts, &in, li);
done:
	free(base.v);
	px_layer_inst_free(li);
	inputs_free(&in);
}

/* ------------------------------------------------------------------ the command */

int px_cmd_plugin_check(struct cli *c)
{
	if (c->n_args < 1)
		return px_cli_usage_error("plugin-check needs a plugin FILE.so%s", "");
	const char *path = c->args[0], *only = c->n_args > 1 ? c->args[1] : NULL;
	struct pc pc = {.sets = c->sets, .n_sets = c->n_sets};
	for (int i = 0; i < c->n_sets; i++)
		if (!strchr(c->sets[i], '=') || strchr(c->sets[i], '.'))
			return px_cli_usage_error("plugin-check: --set takes KEY=VALUE (an option of "
						  "the kind), got '%s'", c->sets[i]);
	struct px_registry *r = px_registry_new();
	if (!r) {
		fprintf(stderr, "plexus: out of memory\n");
		return EXIT_RUNTIME;
	}
	struct px_error err = {0};
	printf("plugin-check %s\n", path);
	if (px_registry_load_file(r, path, &err)) {
		line(&pc, FAIL, "plugin", "load", "%s", err.msg);
		px_registry_free(r);
		return EXIT_RUNTIME;
	}
	const struct px_plugin *p = r->plugins[r->n_plugins - 1]->desc;
	/* the rest of the search path, for cells other plugins provide (find_cell) */
	px_registry_load_default(r, c->plugin_paths, c->n_plugin_paths, &err);
	for (int i = 0; i < c->n_prefer; i++)
		if (px_registry_prefer(r, c->prefer[i], &err)) {
			px_registry_free(r);
			return px_cli_fail(&err, err.code);
		}
	pc.host = &r->host;
	int nl = 0, ncl = 0, nother = 0;
	while (p->layers && p->layers[nl])
		nl++;
	while (p->cells && p->cells[ncl])
		ncl++;
	for (int i = 0; p->losses && p->losses[i]; i++)
		nother++;
	for (int i = 0; p->optims && p->optims[i]; i++)
		nother++;
	for (int i = 0; p->sources && p->sources[i]; i++)
		nother++;
	line(&pc, PASS, p->name, "load", "version %s, ABI %d.%d (host %d.%d), %d layer%s, %d cell%s,"
	     " %d other kind%s; struct sizes and required callbacks accepted", p->version,
	     p->abi_major, p->abi_minor, PX_ABI_MAJOR, PX_ABI_MINOR, nl, nl == 1 ? "" : "s", ncl,
	     ncl == 1 ? "" : "s", nother, nother == 1 ? "" : "s");
	char exp[1024];
	int ne = elf_exports(path, exp, sizeof exp);
	if (ne < 0)
		line(&pc, SKIP, p->name, "exports", "%s", exp);
	else
		line(&pc, ne == 1 && !strcmp(exp, "px_plugin_entry") ? PASS : FAIL, p->name, "exports",
		     "%d symbol%s exported: %s%s", ne, ne == 1 ? "" : "s", exp,
		     ne == 1 && !strcmp(exp, "px_plugin_entry") ? "" : " (only px_plugin_entry may be: "
		     "build with -fvisibility=hidden)");
	bool *bad_layer = calloc((size_t)nl + 1, sizeof *bad_layer);
	if (!bad_layer) {
		px_registry_free(r);
		fprintf(stderr, "plexus: out of memory\n");
		return EXIT_RUNTIME;
	}
	check_tables(&pc, p, bad_layer);

	snprintf(pc.tmpdir, sizeof pc.tmpdir, "/tmp/plexus-check-XXXXXX");
	if (!mkdtemp(pc.tmpdir)) {
		fprintf(stderr, "plexus: cannot create a temporary directory in /tmp\n");
		px_registry_free(r);
		return EXIT_RUNTIME;
	}
	int found = 0;
	for (int i = 0; i < nl; i++)
		if (!only || !strcmp(only, p->layers[i]->kind)) {
			found++;
			if (bad_layer[i])
				line(&pc, FAIL, p->layers[i]->kind, "create", "not exercised: its table "
				     "is broken (above)");
			else
				check_kind(&pc, p->layers[i], NULL, c->input_shape);
		}
	for (int i = 0; i < ncl; i++)
		if (!only || !strcmp(only, p->cells[i]->kind)) {
			found++;
			adapter_cell = p->cells[i];
			check_kind(&pc, &adapter_ops, p->cells[i], NULL);   /* x [3,5], s [n,3,H] */
		}
#define OTHERS(tbl, what)                                                                     \
	for (int i = 0; (tbl) && (tbl)[i]; i++)                                                \
		if (!only || !strcmp(only, (tbl)[i]->kind)) {                                  \
			found++;                                                               \
			line(&pc, SKIP, (tbl)[i]->kind, what, "only layers and cells are exercised; " \
			     "its table was checked above");                                     \
		}
	OTHERS(p->losses, "(loss)")
	OTHERS(p->optims, "(optimizer)")
	OTHERS(p->sources, "(data source)")
#undef OTHERS
	rmdir(pc.tmpdir);
	free(bad_layer);
	px_registry_free(r);
	if (only && !found) {
		fprintf(stderr, "plexus: plugin '%s' provides no kind '%s'\n", p->name, only);
		return EXIT_USAGE;
	}
	printf("%d passed, %d failed, %d skipped\n", pc.passed, pc.failed, pc.skipped);
	return pc.failed ? EXIT_RUNTIME : 0;
}
