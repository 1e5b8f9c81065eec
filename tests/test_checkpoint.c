/* safetensors checkpoints and the JSON reader behind them: round trips, the exact file layout,
 * agreement with an independent Python writer, and hostile files (truncations, bit flips, a
 * corpus of lying headers) that must be refused with a precise message and never read out of
 * bounds (run under -Db_sanitize=address,undefined too). */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

/* ------------------------------------------------------------------ helpers */
static char *make_dir(void)
{
	const char *t = getenv("TMPDIR");
	char *d = px_asprintf("%s/px-ckpt-XXXXXX", t && *t ? t : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(d));
	return d;
}

/* Remove the files directly in d (and empty subdirectories), then d. */
static void remove_dir(char *d)
{
	chmod(d, 0700);
	DIR *dir = opendir(d);
	if (dir) {
		struct dirent *e;
		while ((e = readdir(dir))) {
			if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
				continue;
			char *p = px_asprintf("%s/%s", d, e->d_name);
			if (unlink(p) != 0)
				rmdir(p);
			free(p);
		}
		closedir(dir);
	}
	rmdir(d);
	free(d);
}

static int str_cmp(const void *a, const void *b)
{
	return strcmp(a, b);
}

/* Names in directory d, sorted, joined with ' '. */
static void list_dir(const char *d, char *out, size_t n)
{
	char names[32][256];
	int k = 0;
	DIR *dir = opendir(d);
	ck_assert_ptr_nonnull(dir);
	struct dirent *e;
	while ((e = readdir(dir)) && k < 32)
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			snprintf(names[k++], sizeof names[0], "%s", e->d_name);
	closedir(dir);
	qsort(names, (size_t)k, sizeof names[0], str_cmp);
	out[0] = 0;
	for (int i = 0; i < k; i++)
		snprintf(out + strlen(out), n - strlen(out), "%s%s", i ? " " : "", names[i]);
}

/* Always a new file: rewriting a truncated one makes ext4 flush it on close (auto_da_alloc),
 * which turns the loops over thousands of corrupted files into seconds of disk waits. */
static void write_bytes(const char *path, const void *b, size_t n)
{
	unlink(path);
	FILE *f = fopen(path, "wb");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(b, 1, n, f), n);
	ck_assert_int_eq(fclose(f), 0);
}

static char *read_bytes(const char *path, size_t *n)
{
	char *b;
	struct px_error err;
	ck_assert_msg(px_read_file(path, 1 << 30, &b, n, &err) == 0, "%s", err.msg);
	return b;
}

static char *fixture_path(const char *name)
{
	const char *src = getenv("PLEXUS_SRC");
	return px_asprintf("%s/tests/fixtures/checkpoint/%s", src ? src : ".", name);
}

/* The tensors of tests/gen_checkpoint.py (tensors(), METADATA), computed the same way. */
struct ref {
	float w[12], bias[5], scalar, two[2];
	int64_t sw[2], sb[1], se[2], s2[1];
	struct px_st_entry e[5];
};

static const char *const meta_k[] = {"format", "pipeline", "step"};
static const char *const meta_v[] = {
	"pt", "name: x\n\"quoted\" \\ tab\t \xc3\xbc \xe2\x82\xac \x01 \x7f end", "42",
};

static void expected_tensors(struct ref *r)
{
	for (int i = 0; i < 12; i++)
		r->w[i] = ((float)i - 5.5f) / 3.0f;
	float denorm;
	uint32_t bits = 1;   /* the smallest subnormal */
	memcpy(&denorm, &bits, 4);
	const float b[5] = {0.0f, -0.0f, denorm, 3.4028234663852886e38f, -1.0f / 3.0f};
	memcpy(r->bias, b, sizeof b);
	r->scalar = 2.5f;
	r->two[0] = 1;
	r->two[1] = 2;
	r->sw[0] = 4, r->sw[1] = 3;
	r->sb[0] = 5;
	r->se[0] = 0, r->se[1] = 3;
	r->s2[0] = 2;
	r->e[0] = (struct px_st_entry){"enc.weight_ih_l0", 2, r->sw, r->w};
	r->e[1] = (struct px_st_entry){"head.bias", 1, r->sb, r->bias};
	r->e[2] = (struct px_st_entry){"scalar", 0, NULL, &r->scalar};
	r->e[3] = (struct px_st_entry){"empty", 2, r->se, NULL};
	r->e[4] = (struct px_st_entry){"d\xc3\xa9.\xc3\xbcn\xc3\xaf" "code", 1, r->s2, r->two};
}

/* f holds exactly the reference tensors and metadata, bit for bit. */
static void assert_matches_reference(const struct px_st_file *f)
{
	struct ref r;
	expected_tensors(&r);
	ck_assert_int_eq(px_st_count(f), 5);
	for (int i = 0; i < 5; i++) {
		int k = px_st_find(f, r.e[i].name);
		ck_assert_msg(k >= 0, "tensor %s missing", r.e[i].name);
		ck_assert_str_eq(px_st_name(f, k), r.e[i].name);
		int ndim;
		int64_t shape[PX_MAX_DIMS];
		const float *d = px_st_data(f, k, &ndim, shape);
		ck_assert_ptr_nonnull(d);
		ck_assert_int_eq(ndim, r.e[i].ndim);
		int64_t numel = 1;
		for (int j = 0; j < ndim; j++) {
			ck_assert_int_eq(shape[j], r.e[i].shape[j]);
			numel *= shape[j];
		}
		ck_assert_uint_eq((uintptr_t)d % 4, 0);
		if (numel)
			ck_assert_msg(!memcmp(d, r.e[i].data, (size_t)numel * 4),
				      "values of %s differ", r.e[i].name);
	}
	ck_assert_int_eq(px_st_find(f, "nope"), -1);
	ck_assert_int_eq(px_st_meta_count(f), 3);
	for (int i = 0; i < 3; i++)
		ck_assert_str_eq(px_st_meta(f, meta_k[i]), meta_v[i]);
	ck_assert_ptr_null(px_st_meta(f, "absent"));
}

/* A small checkpoint for the corruption tests; returns its bytes. */
static char *small_checkpoint(const char *dir, size_t *n)
{
	float a[6] = {1, 2, 3, 4, 5, 6}, b[2] = {-1, 0.5f};
	int64_t sa[2] = {2, 3}, sb[1] = {2};
	struct px_st_entry e[2] = {{"a.weight", 2, sa, a}, {"b", 1, sb, b}};
	const char *k[] = {"step"}, *v[] = {"7"};
	char *p = px_asprintf("%s/small.safetensors", dir);
	struct px_error err;
	ck_assert_msg(px_st_write(p, e, 2, k, v, 1, &err) == 0, "%s", err.msg);
	char *bytes = read_bytes(p, n);
	unlink(p);
	free(p);
	return bytes;
}

/* ------------------------------------------------------------------ JSON */
START_TEST(test_json_parses_values_and_decodes_escapes_and_surrogate_pairs)
{
	const char *t = "{\"a\": [1, -9223372036854775808, 2.5e3, true, false, null],\n"
			" \"s\": \"\\u00e9\\ud83d\\ude00\\n\\\"\\/\", \"o\": {}}";
	struct px_json *j;
	struct px_error err;
	ck_assert_msg(px_json_parse(t, strlen(t), "t.json", &j, &err) == 0, "%s", err.msg);
	ck_assert_int_eq(j->type, PX_JSON_OBJECT);
	ck_assert_int_eq(j->n, 3);
	const struct px_json *a = px_json_get(j, "a");
	ck_assert_int_eq(a->type, PX_JSON_ARRAY);
	ck_assert_int_eq(a->n, 6);
	ck_assert_int_eq(a->v[0].i, 1);
	ck_assert(a->v[1].type == PX_JSON_INT && a->v[1].i == INT64_MIN);
	ck_assert(a->v[2].type == PX_JSON_FLOAT && a->v[2].f == 2500.0);
	ck_assert(a->v[3].type == PX_JSON_BOOL && a->v[3].b);
	ck_assert(a->v[4].type == PX_JSON_BOOL && !a->v[4].b);
	ck_assert_int_eq(a->v[5].type, PX_JSON_NULL);
	const struct px_json *s = px_json_get(j, "s");
	ck_assert_str_eq(s->s, "\xc3\xa9\xf0\x9f\x98\x80\n\"/");
	ck_assert_uint_eq(s->len, 9);
	ck_assert_int_eq(s->line, 2);
	ck_assert_int_eq(s->col, 7);
	ck_assert_int_eq(px_json_get(j, "o")->n, 0);
	ck_assert_ptr_null(px_json_get(j, "missing"));
	px_json_free(j);
}
END_TEST

START_TEST(test_json_rejects_malformed_text_with_line_and_column)
{
	static const struct { const char *text, *msg; } bad[] = {
		{"", "x.json:1:1: unexpected end of input, expected a value"},
		{"{\"a\":1,}", "x.json:1:8: expected a string key, got '}'"},
		{"{\"a\" 1}", "x.json:1:6: expected ':' after an object key, got '1'"},
		{"[1 2]", "x.json:1:4: expected ',' or ']' in an array, got '2'"},
		{"{\"a\":1\n \"b\":2}", "x.json:2:2: expected ',' or '}' in an object, got '\"'"},
		{"[01]", "x.json:1:2: invalid number (leading zero)"},
		{"[1.]", "x.json:1:2: invalid number (digit expected after '.')"},
		{"[1e+]", "x.json:1:2: invalid number (digit expected in the exponent)"},
		{"[-]", "x.json:1:2: invalid number"},
		{"9223372036854775808", "x.json:1:1: integer 9223372036854775808 does not fit in 64 bits"},
		{"-9223372036854775809", "x.json:1:1: integer -9223372036854775809 does not fit in 64 bits"},
		{"1e999", "x.json:1:1: number 1e999 is out of range"},
		{"[tru]", "x.json:1:2: invalid literal (expected true, false or null)"},
		{"\"abc", "x.json:1:1: unterminated string"},
		{"\"a\tb\"", "x.json:1:3: control character 0x09 in a string (must be escaped)"},
		{"\"\\x\"", "x.json:1:2: invalid escape '\\x'"},
		{"\"\\u12g4\"", "x.json:1:2: invalid \\u escape (needs 4 hex digits)"},
		{"\"\\ud800x\"", "x.json:1:2: unpaired high surrogate \\ud800"},
		{"\"\\udc00\"", "x.json:1:2: unpaired low surrogate \\udc00"},
		{"\"\\u0000\"", "x.json:1:2: \\u0000 is not allowed in a string"},
		{"\"\xff\"", "x.json:1:2: invalid UTF-8 (byte 0xff) in a string"},
		{"\"\xc0\xaf\"", "x.json:1:2: invalid UTF-8 (byte 0xc0) in a string"},
		{"\"\xed\xa0\x80\"", "x.json:1:2: invalid UTF-8 (byte 0xed) in a string"},
		{"\"\xf4\x90\x80\x80\"", "x.json:1:2: invalid UTF-8 (byte 0xf4) in a string"},
		{"\"\xe2\x82\"", "x.json:1:2: invalid UTF-8 (byte 0xe2) in a string"},
		{"{} x", "x.json:1:4: unexpected 'x' after the JSON value"},
		{"\xef\xbb\xbf{}", "x.json:1:1: unexpected byte 0xef, expected a value"},
		{"{\"k\":1,\n\"j\":2,\n  \"k\":3}", "x.json:3:3: duplicate key \"k\""},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct px_json *j = (void *)1;
		struct px_error err;
		int rc = px_json_parse(bad[i].text, strlen(bad[i].text), "x.json", &j, &err);
		ck_assert_msg(rc == PX_ERR_PARSE, "accepted: %s", bad[i].text);
		ck_assert_ptr_null(j);
		ck_assert_str_eq(err.msg, bad[i].msg);
	}
}
END_TEST

START_TEST(test_json_caps_nesting_depth_and_finds_duplicates_among_many_keys)
{
	char deep[2 * (PX_JSON_MAX_DEPTH + 1) + 1];
	int d = PX_JSON_MAX_DEPTH;
	for (int i = 0; i < d; i++)
		deep[i] = '[', deep[2 * d - 1 - i] = ']';
	deep[2 * d] = 0;
	struct px_json *j;
	struct px_error err;
	ck_assert_msg(px_json_parse(deep, strlen(deep), NULL, &j, &err) == 0, "%s", err.msg);
	px_json_free(j);
	d++;
	for (int i = 0; i < d; i++)
		deep[i] = '[', deep[2 * d - 1 - i] = ']';
	deep[2 * d] = 0;
	ck_assert_int_eq(px_json_parse(deep, strlen(deep), NULL, &j, &err), PX_ERR_PARSE);
	ck_assert_str_eq(err.msg, "nesting deeper than 64 levels");
	ck_assert_int_eq(err.col, 65);

	/* a flat array of more values than allowed is refused (memory stays bounded) */
	struct px_sbuf big = {0};
	px_sbuf_add(&big, "[");
	for (int i = 0; i < PX_JSON_MAX_VALUES; i++)
		px_sbuf_add(&big, "0,");
	px_sbuf_add(&big, "0]");
	ck_assert(!big.oom);
	ck_assert_int_eq(px_json_parse(big.s, big.len, NULL, &j, &err), PX_ERR_PARSE);
	ck_assert_str_eq(err.msg, "more than 1048576 values");
	ck_assert_int_eq(err.col, 2 * PX_JSON_MAX_VALUES);
	px_sbuf_free(&big);

	/* 200 keys, the duplicate far apart: found by the sorted check */
	struct px_sbuf b = {0};
	px_sbuf_add(&b, "{");
	for (int i = 0; i < 200; i++)
		px_sbuf_addf(&b, "%s\"k%d\":%d", i ? "," : "", i == 150 ? 3 : i, i);
	px_sbuf_add(&b, "}");
	ck_assert(!b.oom);
	ck_assert_int_eq(px_json_parse(b.s, b.len, NULL, &j, &err), PX_ERR_PARSE);
	ck_assert_str_eq(err.msg, "duplicate key \"k3\"");
	ck_assert_int_eq(err.col, (int)(strstr(b.s, ",\"k3\":150") - b.s) + 2);
	px_sbuf_free(&b);
}
END_TEST

START_TEST(test_json_escape_matches_python_json_dumps)
{
	/* json.dumps(s, ensure_ascii=False)[1:-1] for the same strings */
	char *e = px_json_escape("a\"b\\c\n\t\r\b\f\x01\x1f\x7f \xc3\xbc\xe2\x82\xac/");
	ck_assert_str_eq(e, "a\\\"b\\\\c\\n\\t\\r\\b\\f\\u0001\\u001f\x7f \xc3\xbc\xe2\x82\xac/");
	free(e);
	e = px_json_escape("bad \xff utf8 \xc0\xaf");
	ck_assert_str_eq(e, "bad \xef\xbf\xbd utf8 \xef\xbf\xbd\xef\xbf\xbd");
	free(e);
	e = px_json_escape("");
	ck_assert_str_eq(e, "");
	free(e);
	/* what the escaper writes, the parser reads back */
	const char *s = "tab\there \"q\" \\ \x02 \xf0\x9f\x98\x80";
	struct px_sbuf b = {0};
	px_sbuf_add_json_str(&b, s);
	struct px_json *j;
	struct px_error err;
	ck_assert_msg(px_json_parse(b.s, b.len, NULL, &j, &err) == 0, "%s", err.msg);
	ck_assert_str_eq(j->s, s);
	px_json_free(j);
	px_sbuf_free(&b);
	ck_assert(px_utf8_valid("\xf4\x8f\xbf\xbf", 4));
	ck_assert(!px_utf8_valid("\xf4\x90\x80\x80", 4));
	ck_assert(!px_utf8_valid("\xe0\x80\x80", 3));
}
END_TEST

/* ------------------------------------------------------------------ round trips, layout */
START_TEST(test_round_trip_keeps_names_shapes_values_and_metadata_bit_exact)
{
	char *dir = make_dir();
	char *p = px_asprintf("%s/model.safetensors", dir);
	struct ref r;
	expected_tensors(&r);
	struct px_error err;
	ck_assert_msg(px_st_write(p, r.e, 5, meta_k, meta_v, 3, &err) == 0, "%s", err.msg);
	struct px_st_file *f;
	ck_assert_msg(px_st_open(p, &f, &err) == 0, "%s", err.msg);
	assert_matches_reference(f);
	for (int i = 0; i < 5; i++)   /* the writer's order is kept */
		ck_assert_str_eq(px_st_name(f, i), r.e[i].name);
	ck_assert_str_eq(px_st_meta_key(f, 1), "pipeline");
	px_st_close(f);

	/* many tensors: px_st_find by binary search must find each one */
	enum { N = 300 };
	struct px_st_entry many[N];
	char names[N][16];
	float vals[N];
	int64_t one = 1;
	for (int i = 0; i < N; i++) {
		snprintf(names[i], sizeof names[i], "t%d", (i * 7919) % N);
		vals[i] = (float)i;
		many[i] = (struct px_st_entry){names[i], 1, &one, &vals[i]};
	}
	ck_assert_msg(px_st_write(p, many, N, NULL, NULL, 0, &err) == 0, "%s", err.msg);
	ck_assert_msg(px_st_open(p, &f, &err) == 0, "%s", err.msg);
	ck_assert_int_eq(px_st_meta_count(f), 0);
	for (int i = 0; i < N; i++) {
		int k = px_st_find(f, names[i]);
		ck_assert_int_eq(k, i);
		ck_assert_float_eq(px_st_data(f, k, NULL, NULL)[0], (float)i);
	}
	px_st_close(f);

	/* no tensors at all is a valid file: "{}" padded */
	ck_assert_int_eq(px_st_write(p, NULL, 0, NULL, NULL, 0, &err), 0);
	size_t n;
	char *bytes = read_bytes(p, &n);
	ck_assert_uint_eq(n, 16);
	ck_assert(!memcmp(bytes, "\x08\0\0\0\0\0\0\0{}      ", 16));
	free(bytes);
	ck_assert_int_eq(px_st_open(p, &f, &err), 0);
	ck_assert_int_eq(px_st_count(f), 0);
	px_st_close(f);
	unlink(p);
	free(p);
	remove_dir(dir);
}
END_TEST

START_TEST(test_written_file_has_the_safetensors_layout)
{
	char *dir = make_dir();
	char *p = px_asprintf("%s/l.safetensors", dir);
	float a[3] = {1.0f, -2.0f, 0.25f}, b[1] = {7.0f};
	int64_t sa[1] = {3}, sb[2] = {1, 1};
	struct px_st_entry e[2] = {{"w", 1, sa, a}, {"v", 2, sb, b}};
	const char *k[] = {"q\"k"}, *v[] = {"line\nnext"};
	struct px_error err;
	ck_assert_msg(px_st_write(p, e, 2, k, v, 1, &err) == 0, "%s", err.msg);
	size_t n;
	unsigned char *f = (unsigned char *)read_bytes(p, &n);
	const char *json = "{\"__metadata__\":{\"q\\\"k\":\"line\\nnext\"},"
			   "\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]},"
			   "\"v\":{\"dtype\":\"F32\",\"shape\":[1,1],\"data_offsets\":[12,16]}}";
	size_t jl = strlen(json), hl = (jl + 7) / 8 * 8;
	uint64_t len = 0;
	for (int i = 0; i < 8; i++)
		len |= (uint64_t)f[i] << (8 * i);
	ck_assert_uint_eq(len, hl);                     /* little-endian u64 header length */
	ck_assert_uint_eq((8 + len) % 8, 0);            /* data starts 8-byte aligned */
	ck_assert(!memcmp(f + 8, json, jl));            /* compact JSON, writer's order */
	for (size_t i = jl; i < hl; i++)
		ck_assert_int_eq(f[8 + i], ' ');        /* padded with spaces */
	ck_assert_uint_eq(n, 8 + hl + 16);              /* nothing after the data */
	const unsigned char data[16] = {0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0, 0, 0, 0x80, 0x3e,
					0, 0, 0xe0, 0x40};  /* 1, -2, 0.25, 7 as LE float32 */
	ck_assert(!memcmp(f + 8 + hl, data, 16));
	free(f);
	unlink(p);
	free(p);
	remove_dir(dir);
}
END_TEST

START_TEST(test_writer_output_equals_the_python_reference_file)
{
	char *dir = make_dir();
	char *p = px_asprintf("%s/c.safetensors", dir);
	char *ref = fixture_path("python_written.safetensors");
	struct ref r;
	expected_tensors(&r);
	struct px_error err;
	ck_assert_msg(px_st_write(p, r.e, 5, meta_k, meta_v, 3, &err) == 0, "%s", err.msg);
	size_t n1, n2;
	char *a = read_bytes(p, &n1), *b = read_bytes(ref, &n2);
	ck_assert_uint_eq(n1, n2);
	ck_assert_msg(!memcmp(a, b, n1), "px_st_write differs from gen_checkpoint.py's writer");
	free(a);
	free(b);
	free(ref);
	unlink(p);
	free(p);
	remove_dir(dir);
}
END_TEST

START_TEST(test_python_written_files_load_including_a_misaligned_data_buffer)
{
	const char *names[] = {"python_written.safetensors", "python_unaligned.safetensors"};
	for (int i = 0; i < 2; i++) {
		char *p = fixture_path(names[i]);
		struct px_st_file *f;
		struct px_error err;
		ck_assert_msg(px_st_open(p, &f, &err) == 0, "%s", err.msg);
		assert_matches_reference(f);
		px_st_close(f);
		if (i == 1) {   /* the fixture must really exercise the realignment */
			size_t n;
			char *b = read_bytes(p, &n);
			uint64_t len = 0;
			for (int k = 0; k < 8; k++)
				len |= (uint64_t)(unsigned char)b[k] << (8 * k);
			ck_assert_uint_ne((8 + len) % 4, 0);
			free(b);
		}
		free(p);
	}
}
END_TEST

/* ------------------------------------------------------------------ hostile files */
START_TEST(test_every_truncation_of_a_checkpoint_is_rejected)
{
	char *dir = make_dir();
	size_t n;
	char *full = small_checkpoint(dir, &n);
	char *p = px_asprintf("%s/t.safetensors", dir);
	for (size_t len = 0; len < n; len++) {
		write_bytes(p, full, len);
		struct px_st_file *f = NULL;
		struct px_error err;
		int rc = px_st_open(p, &f, &err);
		ck_assert_msg(rc == PX_ERR_CORRUPT, "prefix of %zu bytes: rc %d", len, rc);
		ck_assert_ptr_null(f);
		ck_assert(!strncmp(err.msg, p, strlen(p)));
	}
	write_bytes(p, full, n);
	struct px_st_file *f;
	struct px_error err;
	ck_assert_msg(px_st_open(p, &f, &err) == 0, "%s", err.msg);
	px_st_close(f);
	printf("truncation: all %zu prefixes rejected\n", n);
	free(full);
	unlink(p);
	free(p);
	remove_dir(dir);
}
END_TEST

START_TEST(test_every_header_bit_flip_is_rejected_or_read_in_bounds)
{
	char *dir = make_dir();
	size_t n;
	char *full = small_checkpoint(dir, &n);
	uint64_t hlen = 0;
	for (int i = 0; i < 8; i++)
		hlen |= (uint64_t)(unsigned char)full[i] << (8 * i);
	char *p = px_asprintf("%s/f.safetensors", dir);
	char *buf = malloc(n);
	int accepted = 0, rejected = 0;
	for (size_t byte = 0; byte < 8 + hlen; byte++) {
		for (int bit = 0; bit < 8; bit++) {
			memcpy(buf, full, n);
			buf[byte] ^= (char)(1 << bit);
			write_bytes(p, buf, n);
			struct px_st_file *f = NULL;
			struct px_error err;
			int rc = px_st_open(p, &f, &err);
			if (rc) {
				ck_assert_ptr_null(f);
				ck_assert(!strncmp(err.msg, p, strlen(p)));
				rejected++;
				continue;
			}
			/* accepted: every tensor lies inside the file and reads back */
			accepted++;
			int64_t bytes = 0;
			for (int i = 0; i < px_st_count(f); i++) {
				int ndim;
				int64_t shape[PX_MAX_DIMS], numel = 1;
				const float *d = px_st_data(f, i, &ndim, shape);
				for (int k = 0; k < ndim; k++)
					numel *= shape[k];
				bytes += numel * 4;
				volatile float sink = 0;
				for (int64_t k = 0; k < numel; k++)
					sink += d[k];   /* ASan reports any read out of bounds */
				(void)sink;
				ck_assert_int_eq(px_st_find(f, px_st_name(f, i)), i);
			}
			ck_assert_int_le(bytes, (int64_t)(n - 8));
			px_st_close(f);
		}
	}
	printf("bit flips in the %llu header bytes: %d rejected, %d still valid\n",
	       (unsigned long long)(8 + hlen), rejected, accepted);
	ck_assert_int_gt(rejected, accepted);
	free(buf);
	free(full);
	unlink(p);
	free(p);
	remove_dir(dir);
}
END_TEST

/* A file of the 8-byte length `hlen` (which may lie), the header text and `data` zero bytes. */
static void hostile_file(const char *p, uint64_t hlen, const char *hdr, size_t data)
{
	size_t hl = strlen(hdr);
	size_t n = 8 + hl + data;
	unsigned char *b = calloc(1, n);
	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)(hlen >> (8 * i));
	memcpy(b + 8, hdr, hl);
	write_bytes(p, b, n);
	free(b);
}

#define F32(name, shape, a, b) \
	"\"" name "\":{\"dtype\":\"F32\",\"shape\":" shape ",\"data_offsets\":[" #a "," #b "]}"

START_TEST(test_hostile_headers_are_refused_with_distinct_messages)
{
	static const struct {
		const char *hdr;      /* JSON header */
		size_t data;          /* data buffer bytes */
		int code;
		const char *msg;      /* after "<path>: " */
	} cases[] = {
		{"{" F32("a", "[4294967296,4294967296]", 0, 4) "}", 4, PX_ERR_CORRUPT,
		 "shape [4294967296, 4294967296] of tensor 'a' has too many elements (overflow)"},
		{"{" F32("a", "[2]", 0, 8) "," F32("b", "[2]", 4, 12) "}", 12, PX_ERR_CORRUPT,
		 "tensors 'a' [0, 8] and 'b' [4, 12] overlap"},
		{"{" F32("a", "[4]", 0, 16) "}", 8, PX_ERR_CORRUPT,
		 "data_offsets [0, 16] of tensor 'a' run past the end of the data buffer (8 bytes)"},
		{"{" F32("a", "[1]", 0, 4) "," F32("b", "[1]", 8, 12) "}", 12, PX_ERR_CORRUPT,
		 "hole in the data buffer: bytes [4, 8) belong to no tensor"},
		{"{" F32("a", "[1]", 0, 4) "}", 8, PX_ERR_CORRUPT,
		 "4 bytes after the last tensor: the data buffer is 8 bytes, the tensors end at 4"},
		{"{\"x\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4,
		 PX_ERR_UNSUPPORTED, "unsupported dtype 'F16' for tensor 'x' (plexus stores float32 only)"},
		{"{\"x\":{\"dtype\":\"Q7\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4,
		 PX_ERR_CORRUPT, "unknown dtype 'Q7' for tensor 'x'"},
		{"{" F32("a", "[1]", 0, 4) "," F32("a", "[1]", 4, 8) "}", 8, PX_ERR_CORRUPT,
		 "bad JSON header at line 1, column 55: duplicate key \"a\""},
		{"{" F32("a", "[-2,2]", 0, 16) "}", 16, PX_ERR_CORRUPT,
		 "negative dimension -2 in the shape of tensor 'a'"},
		{"{" F32("\xff", "[1]", 0, 4) "}", 4, PX_ERR_CORRUPT,
		 "bad JSON header at line 1, column 3: invalid UTF-8 (byte 0xff) in a string"},
		{"{\"__metadata__\":{\"step\":3}," F32("a", "[1]", 0, 4) "}", 4, PX_ERR_CORRUPT,
		 "__metadata__ value of 'step' is an integer, not a string"},
		{"{\"__metadata__\":[]}", 0, PX_ERR_CORRUPT, "__metadata__ is an array, not an object"},
		{"{" F32("a", "[2,3]", 0, 20) "}", 20, PX_ERR_CORRUPT,
		 "tensor 'a' of shape [2, 3] needs 24 bytes, its data_offsets [0, 20] hold 20"},
		{"{" F32("a", "[1]", 8, 4) "}", 8, PX_ERR_CORRUPT,
		 "data_offsets [8, 4] of tensor 'a' are reversed"},
		{"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, PX_ERR_CORRUPT,
		 "data_offsets of tensor 'a' are not two non-negative integers"},
		{"{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, PX_ERR_CORRUPT,
		 "tensor 'a' has no 'data_offsets'"},
		{"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", 4,
		 PX_ERR_CORRUPT, "unknown key 'x' in the entry of tensor 'a'"},
		{"{" F32("a", "[1,1,1,1,1,1,1]", 0, 4) "}", 4, PX_ERR_CORRUPT,
		 "tensor 'a' has 7 dimensions, more than 6"},
		{"{" F32("a", "[1.5]", 0, 4) "}", 4, PX_ERR_CORRUPT,
		 "dimension 0 of tensor 'a' is a number, not an integer"},
		{"{\"a\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, PX_ERR_CORRUPT,
		 "dtype of tensor 'a' is an integer, not a string"},
		{"{\"a\":{\"dtype\":\"F32\",\"shape\":1,\"data_offsets\":[0,4]}}", 4, PX_ERR_CORRUPT,
		 "shape of tensor 'a' is an integer, not an array"},
		{"{" F32("", "[1]", 0, 4) "}", 4, PX_ERR_CORRUPT, "empty tensor name"},
		{"{\"a\":[]}", 0, PX_ERR_CORRUPT, "entry of tensor 'a' is an array, not an object"},
		{"[]", 0, PX_ERR_CORRUPT, "header is an array, not a JSON object"},
		{"{} x", 0, PX_ERR_CORRUPT,
		 "bad JSON header at line 1, column 4: unexpected 'x' after the JSON value"},
		/* a name made to mess up a terminal is shown escaped */
		{"{\"\\u001b[2J\":{\"dtype\":\"BF16\",\"shape\":[],\"data_offsets\":[0,2]}}", 2,
		 PX_ERR_UNSUPPORTED,
		 "unsupported dtype 'BF16' for tensor '\\u001b[2J' (plexus stores float32 only)"},
	};
	enum { NC = sizeof cases / sizeof cases[0] };
	char *dir = make_dir();
	char *p = px_asprintf("%s/h.safetensors", dir);
	const char *seen[NC + 8];
	int n_seen = 0;
	struct px_st_file *f;
	struct px_error err;
	for (int i = 0; i < NC; i++) {
		hostile_file(p, strlen(cases[i].hdr), cases[i].hdr, cases[i].data);
		int rc = px_st_open(p, &f, &err);
		ck_assert_msg(rc == cases[i].code, "case %d: rc %d (%s)", i, rc, rc ? err.msg : "");
		char *want = px_asprintf("%s: %s", p, cases[i].msg);
		ck_assert_str_eq(err.msg, want);
		free(want);
		seen[n_seen++] = cases[i].msg;
	}

	/* the header length itself lies */
	hostile_file(p, UINT64_MAX, "{}", 6);
	ck_assert_int_eq(px_st_open(p, &f, &err), PX_ERR_CORRUPT);
	char *want = px_asprintf("%s: header length 18446744073709551615 exceeds the file size 16", p);
	ck_assert_str_eq(err.msg, want);
	free(want);
	hostile_file(p, 100, "{}", 6);
	ck_assert_int_eq(px_st_open(p, &f, &err), PX_ERR_CORRUPT);
	want = px_asprintf("%s: header length 100 exceeds the file size 16", p);
	ck_assert_str_eq(err.msg, want);
	free(want);
	write_bytes(p, "\x02\0\0\0\0", 5);
	ck_assert_int_eq(px_st_open(p, &f, &err), PX_ERR_CORRUPT);
	want = px_asprintf("%s: file is 5 bytes, too short for the 8-byte header length", p);
	ck_assert_str_eq(err.msg, want);
	free(want);

	/* a nesting bomb inside a valid-looking header */
	struct px_sbuf b = {0};
	px_sbuf_add(&b, "{\"__metadata__\":{\"x\":");
	for (int i = 0; i < 10000; i++)
		px_sbuf_add(&b, "[");
	hostile_file(p, b.len, b.s, 0);
	px_sbuf_free(&b);
	ck_assert_int_eq(px_st_open(p, &f, &err), PX_ERR_CORRUPT);
	want = px_asprintf("%s: bad JSON header at line 1, column 84: nesting deeper than 64 levels", p);
	ck_assert_str_eq(err.msg, want);
	free(want);

	/* a missing file */
	char *missing = px_asprintf("%s/none.safetensors", dir);
	ck_assert_int_eq(px_st_open(missing, &f, &err), PX_ERR_IO);
	want = px_asprintf("%s: cannot open: No such file or directory", missing);
	ck_assert_str_eq(err.msg, want);
	free(want);
	free(missing);

	/* every problem has its own message, not just other numbers and names in it (the last
	 * case repeats "unsupported dtype" on purpose) */
	char skel[NC][256];
	for (int i = 0; i < n_seen - 1; i++) {
		int o = 0;
		for (const char *c = seen[i]; *c && o < 255; c++)
			if (!(*c >= '0' && *c <= '9'))
				skel[i][o++] = *c;
		skel[i][o] = 0;
		for (int j = 0; j < i; j++)
			ck_assert_msg(strcmp(skel[i], skel[j]) != 0, "same message twice: %s", seen[i]);
	}
	unlink(p);
	free(p);
	remove_dir(dir);
}
END_TEST

START_TEST(test_header_length_over_the_limit_is_refused_without_reading_the_file)
{
	char *dir = make_dir();
	char *p = px_asprintf("%s/big.safetensors", dir);
	uint64_t hlen = 100000001;
	unsigned char le[8];
	for (int i = 0; i < 8; i++)
		le[i] = (unsigned char)(hlen >> (8 * i));
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, le, 8), 8);
	ck_assert_int_eq(ftruncate(fd, (off_t)(8 + hlen + 8)), 0);   /* sparse */
	close(fd);
	struct px_st_file *f;
	struct px_error err;
	ck_assert_int_eq(px_st_open(p, &f, &err), PX_ERR_CORRUPT);
	char *want = px_asprintf("%s: header length 100000001 is over the limit of 100000000 bytes", p);
	ck_assert_str_eq(err.msg, want);
	free(want);
	unlink(p);
	free(p);
	remove_dir(dir);
}
END_TEST

/* ------------------------------------------------------------------ atomic writes */
START_TEST(test_failed_writes_leave_the_old_checkpoint_and_no_temp_file)
{
	char *dir = make_dir();
	char *p = px_asprintf("%s/ckpt.safetensors", dir);
	size_t n_old;
	char *old = small_checkpoint(dir, &n_old);
	write_bytes(p, old, n_old);
	struct px_error err;
	char listing[1024];

	/* 1. the disk "fills up" half way (RLIMIT_FSIZE: works for root too) */
	enum { BIG = 1 << 16 };
	float *big = calloc(BIG, sizeof *big);
	int64_t shape[1] = {BIG};
	struct px_st_entry e = {"big", 1, shape, big};
	struct rlimit old_lim, lim = {4096, 4096};
	ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old_lim), 0);
	lim.rlim_max = old_lim.rlim_max;
	signal(SIGXFSZ, SIG_IGN);
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
	int rc = px_st_write(p, &e, 1, NULL, NULL, 0, &err);
	setrlimit(RLIMIT_FSIZE, &old_lim);
	ck_assert_int_eq(rc, PX_ERR_IO);
	ck_assert_msg(strstr(err.msg, p) == err.msg && strstr(err.msg, strerror(EFBIG)), "%s",
		      err.msg);
	size_t n_now;
	char *now = read_bytes(p, &n_now);
	ck_assert(n_now == n_old && !memcmp(now, old, n_old));
	free(now);
	list_dir(dir, listing, sizeof listing);
	ck_assert_str_eq(listing, "ckpt.safetensors");

	/* 2. the rename fails late (the target is a non-empty directory) */
	char *sub = px_asprintf("%s/sub", dir), *subf = px_asprintf("%s/sub/keep", dir);
	ck_assert_int_eq(mkdir(sub, 0755), 0);
	write_bytes(subf, "x", 1);
	rc = px_st_write(sub, &e, 1, NULL, NULL, 0, &err);
	ck_assert_int_eq(rc, PX_ERR_IO);
	ck_assert_msg(strstr(err.msg, "cannot rename"), "%s", err.msg);
	list_dir(dir, listing, sizeof listing);
	ck_assert_str_eq(listing, "ckpt.safetensors sub");
	list_dir(sub, listing, sizeof listing);
	ck_assert_str_eq(listing, "keep");
	unlink(subf);
	rmdir(sub);
	free(sub);
	free(subf);

	/* 3. the directory does not exist */
	char *nodir = px_asprintf("%s/no/such.safetensors", dir);
	ck_assert_int_eq(px_st_write(nodir, &e, 1, NULL, NULL, 0, &err), PX_ERR_IO);
	char *want = px_asprintf("%s: cannot create temporary file '%s.tmp.%ld': No such file or "
				 "directory", nodir, nodir, (long)getpid());
	ck_assert_str_eq(err.msg, want);
	free(want);
	free(nodir);

	/* a successful write replaces the file and leaves no temp file either */
	ck_assert_msg(px_st_write(p, &e, 1, NULL, NULL, 0, &err) == 0, "%s", err.msg);
	list_dir(dir, listing, sizeof listing);
	ck_assert_str_eq(listing, "ckpt.safetensors");
	struct px_st_file *f;
	ck_assert_int_eq(px_st_open(p, &f, &err), 0);
	ck_assert_int_eq(px_st_find(f, "big"), 0);
	px_st_close(f);
	free(big);
	free(old);
	unlink(p);
	free(p);
	remove_dir(dir);
}
END_TEST

START_TEST(test_unwritable_directory_leaves_the_old_checkpoint_intact)
{
	if (geteuid() == 0) {
		printf("test_unwritable_directory_leaves_the_old_checkpoint_intact: SKIPPED, running "
		       "as root (directory permissions do not apply to root)\n");
		return;
	}
	char *dir = make_dir();
	char *p = px_asprintf("%s/ckpt.safetensors", dir);
	size_t n_old;
	char *old = small_checkpoint(dir, &n_old);
	write_bytes(p, old, n_old);
	ck_assert_int_eq(chmod(dir, 0555), 0);
	float x = 1;
	int64_t one = 1;
	struct px_st_entry e = {"x", 1, &one, &x};
	struct px_error err;
	ck_assert_int_eq(px_st_write(p, &e, 1, NULL, NULL, 0, &err), PX_ERR_IO);
	char *want = px_asprintf("%s: cannot create temporary file '%s.tmp.%ld': Permission denied",
				 p, p, (long)getpid());
	ck_assert_str_eq(err.msg, want);
	free(want);
	size_t n_now;
	char *now = read_bytes(p, &n_now);
	ck_assert(n_now == n_old && !memcmp(now, old, n_old));
	char listing[256];
	list_dir(dir, listing, sizeof listing);
	ck_assert_str_eq(listing, "ckpt.safetensors");
	free(now);
	free(old);
	chmod(dir, 0700);
	unlink(p);
	free(p);
	remove_dir(dir);
}
END_TEST

START_TEST(test_writer_refuses_names_it_could_not_read_back)
{
	char *dir = make_dir();
	char *p = px_asprintf("%s/w.safetensors", dir);
	float x[2] = {1, 2};
	int64_t one = 1, neg = -1;
	struct px_error err;
	static const struct { const char *a, *b, *msg; } bad[] = {
		{"w", "w", "duplicate tensor name 'w'"},
		{"w", "__metadata__", "'__metadata__' is reserved, not a tensor name"},
		{"w", "", "tensor 1 has no name"},
		{"w", "bad\xff", "tensor name 'bad\xef\xbf\xbd' is not valid UTF-8"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct px_st_entry e[2] = {{bad[i].a, 1, &one, &x[0]}, {bad[i].b, 1, &one, &x[1]}};
		ck_assert_int_eq(px_st_write(p, e, 2, NULL, NULL, 0, &err), PX_ERR_INVALID);
		char *want = px_asprintf("%s: %s", p, bad[i].msg);
		ck_assert_str_eq(err.msg, want);
		free(want);
	}
	struct px_st_entry e = {"w", 1, &neg, x};
	ck_assert_int_eq(px_st_write(p, &e, 1, NULL, NULL, 0, &err), PX_ERR_INVALID);
	const char *k[] = {"a", "a"}, *v[] = {"1", "2"};
	e.shape = &one;
	ck_assert_int_eq(px_st_write(p, &e, 1, k, v, 2, &err), PX_ERR_INVALID);
	char *want = px_asprintf("%s: duplicate metadata key 'a'", p);
	ck_assert_str_eq(err.msg, want);
	free(want);
	ck_assert_int_eq(access(p, F_OK), -1);   /* nothing was written */
	free(p);
	remove_dir(dir);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("checkpoint");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_json_parses_values_and_decodes_escapes_and_surrogate_pairs);
	tcase_add_test(tc, test_json_rejects_malformed_text_with_line_and_column);
	tcase_add_test(tc, test_json_caps_nesting_depth_and_finds_duplicates_among_many_keys);
	tcase_add_test(tc, test_json_escape_matches_python_json_dumps);
	tcase_add_test(tc, test_round_trip_keeps_names_shapes_values_and_metadata_bit_exact);
	tcase_add_test(tc, test_written_file_has_the_safetensors_layout);
	tcase_add_test(tc, test_writer_output_equals_the_python_reference_file);
	tcase_add_test(tc, test_python_written_files_load_including_a_misaligned_data_buffer);
	tcase_add_test(tc, test_every_truncation_of_a_checkpoint_is_rejected);
	tcase_add_test(tc, test_every_header_bit_flip_is_rejected_or_read_in_bounds);
	tcase_add_test(tc, test_hostile_headers_are_refused_with_distinct_messages);
	tcase_add_test(tc, test_header_length_over_the_limit_is_refused_without_reading_the_file);
	tcase_add_test(tc, test_failed_writes_leave_the_old_checkpoint_and_no_temp_file);
	tcase_add_test(tc, test_unwritable_directory_leaves_the_old_checkpoint_intact);
	tcase_add_test(tc, test_writer_refuses_names_it_could_not_read_back);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
