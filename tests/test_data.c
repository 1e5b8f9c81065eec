/* Datasets, views, splits, gathering, .npy files and the built-in data sources. Input files
 * are generated into a temporary directory by each test. */
#include <check.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "internal.h"

#define FASHION "/usr/share/datasets/fashion-mnist/"
#define GPL3 "/usr/share/common-licenses/GPL-3"

/* ------------------------------------------------------------------ helpers */

static char tmpdir[256];

static void tmp_setup(void)
{
	snprintf(tmpdir, sizeof tmpdir, "/tmp/px_test_data_XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(p);
}

static void tmp_teardown(void)
{
	if (tmpdir[0])
		nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	tmpdir[0] = 0;
}

/* tmpdir/name; a few rotating static buffers */
static const char *tp(const char *name)
{
	static char buf[8][512];
	static int k;
	char *b = buf[k++ % 8];
	snprintf(b, 512, "%s/%s", tmpdir, name);
	return b;
}

static void write_bytes(const char *path, const void *data, size_t n)
{
	FILE *f = fopen(path, "wb");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(data, 1, n, f), n);
	fclose(f);
}

static void write_text(const char *path, const char *s)
{
	write_bytes(path, s, strlen(s));
}

static void write_gz(const char *path, const void *data, size_t n)
{
	gzFile g = gzopen(path, "wb");
	ck_assert_ptr_nonnull(g);
	ck_assert_int_eq(gzwrite(g, data, (unsigned)n), (int)n);
	gzclose(g);
}

static const struct px_source_ops *source(const char *kind)
{
	for (int i = 0; px_builtin_sources[i]; i++)
		if (!strcmp(px_builtin_sources[i]->kind, kind))
			return px_builtin_sources[i];
	ck_abort_msg("no built-in source '%s'", kind);
	return NULL;
}

/* Load a built-in source with inline options ("path: /x, seq_len: 4"). */
static int load(const char *kind, const char *opts, const char *split, uint64_t seed,
		struct px_dataset *ds, struct px_error *err)
{
	const struct px_source_ops *ops = source(kind);
	struct px_config *cfg;
	struct px_error perr;
	int rc = px_config_parse(ops->schema, opts, &cfg, &perr);
	ck_assert_msg(rc == 0, "options '%s': %s", opts, perr.msg);
	rc = ops->load(cfg, split, seed, ds, err);
	px_config_free(cfg);
	return rc;
}

static struct px_config *view(const char *opts)
{
	struct px_config *cfg;
	struct px_error err;
	ck_assert_msg(px_config_parse(px_view_schema, opts, &cfg, &err) == 0, "%s", err.msg);
	return cfg;
}

static void put_be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

/* An idx3 file of n images rows x cols, pixel (i,r,c) = (i*31 + r*7 + c) % 256; `data_n`
 * images of data really follow (to make short files). */
static size_t idx3(unsigned char *buf, uint32_t n, uint32_t rows, uint32_t cols, uint32_t data_n)
{
	put_be32(buf, 0x803);
	put_be32(buf + 4, n);
	put_be32(buf + 8, rows);
	put_be32(buf + 12, cols);
	size_t k = 16;
	for (uint32_t i = 0; i < data_n; i++)
		for (uint32_t r = 0; r < rows; r++)
			for (uint32_t c = 0; c < cols; c++)
				buf[k++] = (unsigned char)((i * 31 + r * 7 + c) % 256);
	return k;
}

static size_t idx1(unsigned char *buf, uint32_t n, const unsigned char *labels, uint32_t data_n)
{
	put_be32(buf, 0x801);
	put_be32(buf + 4, n);
	memcpy(buf + 8, labels, data_n);
	return 8 + data_n;
}

/* An .npy file with a hand-written header (version 1.0 unless `major` says otherwise). */
static void npy_raw(const char *path, int major, const char *header, const void *data,
		    size_t n)
{
	unsigned char buf[1 << 16];
	size_t hl = strlen(header), off = major == 1 ? 10 : 12;
	memcpy(buf, "\x93NUMPY", 6);
	buf[6] = (unsigned char)major;
	buf[7] = 0;
	buf[8] = (unsigned char)(hl & 0xff);
	buf[9] = (unsigned char)(hl >> 8);
	if (major != 1) {
		buf[10] = (unsigned char)(hl >> 16);
		buf[11] = (unsigned char)(hl >> 24);
	}
	memcpy(buf + off, header, hl);
	memcpy(buf + off + hl, data, n);
	write_bytes(path, buf, off + hl + n);
}

/* ------------------------------------------------------------------ dataset basics */

START_TEST(test_dataset_alloc_is_zeroed_and_refuses_overflowing_or_mismatched_shapes)
{
	struct px_dataset ds;
	struct px_error err;
	int64_t x[3] = {4, 3, 2}, y[1] = {4};
	ck_assert_int_eq(px_dataset_alloc(&ds, 3, x, true, 1, y, false, &err), 0);
	ck_assert_int_eq(ds.n, 4);
	ck_assert_int_eq(ds.x.ndim, 3);
	for (int i = 0; i < 24; i++)
		ck_assert_float_eq(ds.x_data[i], 0.0f);
	ck_assert_ptr_nonnull(ds.x_len);
	ck_assert_ptr_null(ds.y_len);
	const char *tok[2] = {"a", "b"};
	ck_assert_int_eq(px_dataset_set_vocab(&ds, 'x', tok, 2, &err), 0);
	ck_assert_str_eq(ds.x_vocab[1], "b");
	ck_assert_ptr_ne(ds.x_vocab[1], tok[1]);
	ck_assert_int_eq(px_dataset_set_vocab(&ds, 'z', tok, 2, &err), PX_ERR_INVALID);
	px_dataset_free(&ds);
	ck_assert_ptr_null(ds.x_data);

	int64_t huge[3] = {(int64_t)1 << 40, (int64_t)1 << 40, 2};
	ck_assert_int_eq(px_dataset_alloc(&ds, 3, huge, false, 1, huge, false, &err), PX_ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "too large"), "%s", err.msg);
	int64_t y5[1] = {5};
	ck_assert_int_eq(px_dataset_alloc(&ds, 3, x, false, 1, y5, false, &err), PX_ERR_SHAPE);
	ck_assert_msg(strstr(err.msg, "[4,3,2]") && strstr(err.msg, "[5]"), "%s", err.msg);
	int64_t neg[2] = {3, -1};
	ck_assert_int_eq(px_dataset_alloc(&ds, 2, neg, false, 0, NULL, false, &err), PX_ERR_INVALID);
}
END_TEST

START_TEST(test_source_schemas_avoid_the_keys_the_pipeline_reserves)
{
	const char *reserved[] = {"source", "only_classes", "limit", "scale", "shift", "as"};
	int n = 0;
	for (int i = 0; px_builtin_sources[i]; i++, n++) {
		const struct px_source_ops *s = px_builtin_sources[i];
		ck_assert_uint_eq(s->struct_size, sizeof(struct px_source_ops));
		ck_assert(s->load != NULL);
		for (const struct px_param_spec *p = s->schema; p->key; p++)
			for (size_t k = 0; k < sizeof reserved / sizeof *reserved; k++)
				ck_assert_msg(strcmp(p->key, reserved[k]), "source %s uses reserved key %s",
					      s->kind, p->key);
	}
	ck_assert_int_eq(n, 7);
	/* the view schema holds exactly the reserved view keys */
	int m = 0;
	for (const struct px_param_spec *p = px_view_schema; p->key; p++, m++)
		ck_assert_str_eq(p->key, reserved[m + 1]);
	ck_assert_int_eq(m, 5);
}
END_TEST

/* ------------------------------------------------------------------ idx */

START_TEST(test_idx_reads_plain_and_gzip_files_with_raw_pixels_and_labels)
{
	tmp_setup();
	unsigned char img[16 + 3 * 8], lab[8 + 3];
	const unsigned char labels[3] = {1, 0, 12};
	size_t ni = idx3(img, 3, 2, 4, 3), nl = idx1(lab, 3, labels, 3);
	write_bytes(tp("img"), img, ni);
	write_bytes(tp("lab"), lab, nl);
	write_gz(tp("img.gz"), img, ni);
	write_gz(tp("lab.gz"), lab, nl);
	const char *opts[2] = {"images: %s/img, labels: %s/lab", "images: %s/img.gz, labels: %s/lab.gz"};
	for (int k = 0; k < 2; k++) {
		char o[1200];
		snprintf(o, sizeof o, opts[k], tmpdir, tmpdir);
		struct px_dataset ds;
		struct px_error err;
		ck_assert_msg(load("idx", o, "train", 1, &ds, &err) == 0, "%s", err.msg);
		ck_assert_int_eq(ds.n, 3);
		ck_assert_int_eq(ds.x.ndim, 3);
		ck_assert_int_eq(ds.x.dim[1], 2);
		ck_assert_int_eq(ds.x.dim[2], 4);
		ck_assert_int_eq(ds.y.ndim, 1);
		for (int i = 0; i < 3; i++)
			for (int j = 0; j < 8; j++)
				ck_assert_float_eq(ds.x_data[i * 8 + j], (float)((i * 31 + (j / 4) * 7 + j % 4) % 256));
		ck_assert_float_eq(ds.y_data[2], 12.0f);
		ck_assert_int_eq(ds.n_classes, 13);   /* labels need more than 10 */
		ck_assert_ptr_null(ds.class_names);
		px_dataset_free(&ds);
	}
	tmp_teardown();
}
END_TEST

START_TEST(test_idx_rejects_truncated_and_lying_files_with_messages)
{
	tmp_setup();
	unsigned char img[16 + 4 * 8], lab[8 + 4];
	const unsigned char labels[4] = {1, 0, 2, 3};
	struct px_dataset ds;
	struct px_error err;
	char o[1200];
	write_bytes(tp("lab3"), lab, idx1(lab, 3, labels, 3));
	write_bytes(tp("lab2"), lab, idx1(lab, 2, labels, 2));

	struct idx_case {
		const char *name, *labels, *msg;
	} cases[5];
	int nc = 0;
	/* header claims 3 images, 2 follow */
	write_bytes(tp("short"), img, idx3(img, 3, 2, 4, 2));
	cases[nc++] = (struct idx_case){"short", "lab3", "file is short: its header claims 3 images of 2x4 (24 bytes) but only 16 bytes follow"};
	/* 3 images with 2 labels */
	write_bytes(tp("three"), img, idx3(img, 3, 2, 4, 3));
	cases[nc++] = (struct idx_case){"three", "lab2", "holds 3 images but"};
	/* more data than claimed */
	write_bytes(tp("long"), img, idx3(img, 3, 2, 4, 4));
	cases[nc++] = (struct idx_case){"long", "lab3", "more data follows after the 3 images of 2x4"};
	/* a labels file where images are expected */
	cases[nc++] = (struct idx_case){"lab3", "lab3", "not an idx3 file (magic 0x00000801, expected 0x00000803)"};
	/* a header cut inside */
	write_bytes(tp("stub"), img, 9);
	cases[nc++] = (struct idx_case){"stub", "lab3", "too short for an idx header (9 of 16 bytes)"};
	for (int k = 0; k < nc; k++) {
		snprintf(o, sizeof o, "images: %s/%s, labels: %s/%s", tmpdir, cases[k].name, tmpdir,
			 cases[k].labels);
		ck_assert_int_ne(load("idx", o, "train", 1, &ds, &err), 0);
		ck_assert_msg(strstr(err.msg, cases[k].msg), "case %s: got '%s'", cases[k].name, err.msg);
		ck_assert_msg(strstr(err.msg, tmpdir), "message names the file: %s", err.msg);
		ck_assert_ptr_null(ds.x_data);
	}

	/* a header claiming 4e9 images of 65535x65535 is refused before any allocation */
	idx3(img, 0xffffffffu, 0xffff, 0xffff, 0);
	write_bytes(tp("huge"), img, 16);
	unsigned char lab_huge[8];
	idx1(lab_huge, 0xffffffffu, labels, 0);
	write_bytes(tp("labhuge"), lab_huge, 8);
	snprintf(o, sizeof o, "images: %s/huge, labels: %s/labhuge", tmpdir, tmpdir);
	ck_assert_int_eq(load("idx", o, "train", 1, &ds, &err), PX_ERR_CORRUPT);
	ck_assert_msg(strstr(err.msg, "too large"), "%s", err.msg);
	/* a gzip stream cut in the middle */
	unsigned char big[16 + 50 * 64];
	size_t nb = idx3(big, 50, 8, 8, 50);
	write_gz(tp("cut.gz"), big, nb);
	struct stat st;
	ck_assert_int_eq(stat(tp("cut.gz"), &st), 0);
	FILE *f = fopen(tp("cut.gz"), "rb");
	unsigned char gz[8192];
	size_t gl = fread(gz, 1, sizeof gz, f);
	fclose(f);
	write_bytes(tp("cut.gz"), gz, gl / 2);
	write_bytes(tp("lab50"), big, idx1(big, 50, big + 100, 50));
	snprintf(o, sizeof o, "images: %s/cut.gz, labels: %s/lab50", tmpdir, tmpdir);
	ck_assert_int_eq(load("idx", o, "train", 1, &ds, &err), PX_ERR_CORRUPT);
	ck_assert_msg(strstr(err.msg, "cut.gz: file is short: its header claims 50 images of 8x8"),
		      "%s", err.msg);
	/* a missing file */
	snprintf(o, sizeof o, "images: %s/none, labels: %s/lab3", tmpdir, tmpdir);
	ck_assert_int_eq(load("idx", o, "train", 1, &ds, &err), PX_ERR_IO);
	ck_assert_msg(strstr(err.msg, "none: cannot open"), "%s", err.msg);
	tmp_teardown();
}
END_TEST

START_TEST(test_fashion_mnist_test_set_loads_10000_images_of_28x28_with_labels_0_to_9)
{
	if (access(FASHION "t10k-images-idx3-ubyte.gz", R_OK)) {
		printf("skipped: %s is not installed (Debian package dataset-fashion-mnist)\n",
		       FASHION "t10k-images-idx3-ubyte.gz");
		return;
	}
	struct px_dataset ds;
	struct px_error err;
	ck_assert_msg(load("idx", "images: " FASHION "t10k-images-idx3-ubyte.gz, labels: " FASHION
			   "t10k-labels-idx1-ubyte.gz, class_names: fashion-mnist", "test", 1, &ds,
			   &err) == 0, "%s", err.msg);
	ck_assert_int_eq(ds.n, 10000);
	ck_assert_int_eq(ds.x.ndim, 3);
	ck_assert_int_eq(ds.x.dim[1], 28);
	ck_assert_int_eq(ds.x.dim[2], 28);
	ck_assert_int_eq(ds.n_classes, 10);
	int count[10] = {0};
	for (int64_t i = 0; i < ds.n; i++) {
		float v = ds.y_data[i];
		ck_assert(v >= 0 && v <= 9 && v == floorf(v));
		count[(int)v]++;
	}
	for (int c = 0; c < 10; c++)
		ck_assert_int_eq(count[c], 1000);   /* the test set is balanced */
	float lo = 1e9f, hi = -1e9f;
	for (int64_t i = 0; i < ds.n * 784; i++) {
		lo = fminf(lo, ds.x_data[i]);
		hi = fmaxf(hi, ds.x_data[i]);
	}
	ck_assert_float_eq(lo, 0.0f);
	ck_assert_float_eq(hi, 255.0f);
	ck_assert_str_eq(ds.class_names[9], "Ankle boot");
	/* the first test image is an ankle boot */
	ck_assert_float_eq(ds.y_data[0], 9.0f);
	/* as: sequence with scale 1/255: 28 steps of 28 features in [0, 1] */
	struct px_config *v = view("scale: 1/255, as: sequence, limit: 100");
	ck_assert_int_eq(px_dataset_apply_view(&ds, v, &err), 0);
	ck_assert_int_eq(ds.n, 100);
	ck_assert_int_eq(ds.x.dim[1], 28);
	for (int64_t i = 0; i < ds.n * 784; i++)
		ck_assert(ds.x_data[i] >= 0.0f && ds.x_data[i] <= 1.0f);
	px_config_free(v);
	px_dataset_free(&ds);
}
END_TEST

/* ------------------------------------------------------------------ npy */

START_TEST(test_npy_round_trip_preserves_shape_values_and_64_byte_header_alignment)
{
	tmp_setup();
	struct px_error err;
	float v[24];
	for (int i = 0; i < 24; i++)
		v[i] = (float)i * 0.5f - 3.25f;
	int64_t shape[3] = {2, 3, 4};
	ck_assert_int_eq(px_npy_write(tp("a.npy"), 3, shape, v, &err), 0);
	FILE *f = fopen(tp("a.npy"), "rb");
	unsigned char head[256];
	size_t got = fread(head, 1, sizeof head, f);
	fclose(f);
	ck_assert_uint_ge(got, 128);
	ck_assert(!memcmp(head, "\x93NUMPY\x01\x00", 8));
	size_t hl = head[8] | (size_t)head[9] << 8;
	ck_assert_uint_eq((10 + hl) % 64, 0);
	ck_assert_int_eq(head[10 + hl - 1], '\n');
	ck_assert(!memcmp(head + 10, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 4), }", 62));
	struct stat st;
	ck_assert_int_eq(stat(tp("a.npy"), &st), 0);
	ck_assert_int_eq(st.st_size, (off_t)(10 + hl + 24 * 4));

	int nd;
	int64_t s[PX_MAX_DIMS];
	float *d;
	ck_assert_msg(px_npy_read(tp("a.npy"), &nd, s, &d, &err) == 0, "%s", err.msg);
	ck_assert_int_eq(nd, 3);
	ck_assert_int_eq(s[0], 2);
	ck_assert_int_eq(s[2], 4);
	for (int i = 0; i < 24; i++)
		ck_assert_float_eq(d[i], v[i]);
	free(d);

	/* one dim is written as (5,) */
	int64_t s1[1] = {5};
	ck_assert_int_eq(px_npy_write(tp("b.npy"), 1, s1, v, &err), 0);
	f = fopen(tp("b.npy"), "rb");
	got = fread(head, 1, sizeof head, f);
	fclose(f);
	ck_assert_ptr_nonnull(strstr((char *)head + 10, "'shape': (5,), }"));
	ck_assert_int_eq(px_npy_read(tp("b.npy"), &nd, s, &d, &err), 0);
	ck_assert_int_eq(nd, 1);
	ck_assert_int_eq(s[0], 5);
	free(d);
	tmp_teardown();
}
END_TEST

START_TEST(test_npy_reads_every_supported_dtype_and_versions_2_and_3)
{
	tmp_setup();
	struct px_error err;
	int nd;
	int64_t s[PX_MAX_DIMS];
	float *d;
	int32_t *l;
	const double f8[3] = {1.5, -2.25, 1e10};
	const int64_t i8[3] = {-5, 7, 1 << 20};
	const int32_t i4[3] = {-1, 2, 2147483647};
	const int16_t i2[3] = {-32768, 0, 32767};
	const uint16_t u2[3] = {65535, 1, 0};
	const unsigned char u1[3] = {255, 0, 128};
	const signed char i1[3] = {-128, 5, 127};
	struct {
		const char *descr;
		const void *data;
		size_t size;
		float want[3];
	} c[] = {
		{"<f8", f8, 8, {1.5f, -2.25f, 1e10f}},
		{"<i8", i8, 8, {-5, 7, 1 << 20}},
		{"<i4", i4, 4, {-1, 2, 2147483647.0f}},
		{"<i2", i2, 2, {-32768, 0, 32767}},
		{"<u2", u2, 2, {65535, 1, 0}},
		{"|u1", u1, 1, {255, 0, 128}},
		{"|i1", i1, 1, {-128, 5, 127}},
	};
	for (size_t k = 0; k < sizeof c / sizeof c[0]; k++) {
		char h[128];
		snprintf(h, sizeof h, "{'descr': '%s', 'fortran_order': False, 'shape': (3,), }\n",
			 c[k].descr);
		npy_raw(tp("t.npy"), 1 + (int)(k % 3), h, c[k].data, 3 * c[k].size);
		ck_assert_msg(px_npy_read(tp("t.npy"), &nd, s, &d, &err) == 0, "%s: %s", c[k].descr, err.msg);
		ck_assert_int_eq(nd, 1);
		for (int i = 0; i < 3; i++)
			ck_assert_msg(d[i] == c[k].want[i], "%s[%d] = %g", c[k].descr, i, d[i]);
		free(d);
	}
	/* lengths: integer dtypes in int32 range only */
	const int64_t lens[3] = {3, 1, 2};
	npy_raw(tp("l.npy"), 1, "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }\n", lens, 24);
	ck_assert_int_eq(px_npy_read_i32(tp("l.npy"), &nd, s, &l, &err), 0);
	ck_assert_int_eq(l[0], 3);
	ck_assert_int_eq(l[2], 2);
	free(l);
	npy_raw(tp("l.npy"), 1, "{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }\n", i4, 12);
	ck_assert_int_eq(px_npy_read_i32(tp("l.npy"), &nd, s, &l, &err), PX_ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "element 0 (-1) is not a valid length"), "%s", err.msg);
	npy_raw(tp("l.npy"), 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }\n", f8, 24);
	ck_assert_int_eq(px_npy_read_i32(tp("l.npy"), &nd, s, &l, &err), PX_ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "integer dtype, not '<f8'"), "%s", err.msg);
	tmp_teardown();
}
END_TEST

/* tests/fixtures/data/<name> (written by tests/gen_data.py with NumPy) */
static const char *fixture(const char *name)
{
	static char buf[1024];
	const char *src = getenv("PLEXUS_SRC");
	snprintf(buf, sizeof buf, "%s/tests/fixtures/data/%s", src ? src : ".", name);
	return buf;
}

START_TEST(test_npy_reads_the_files_numpy_writes)
{
	struct px_error err;
	int nd;
	int64_t s[PX_MAX_DIMS];
	float *d;
	int32_t *l;
	ck_assert_msg(px_npy_read(fixture("np_f4_2x3x4.npy"), &nd, s, &d, &err) == 0, "%s", err.msg);
	ck_assert_int_eq(nd, 3);
	ck_assert_int_eq(s[0], 2);
	ck_assert_int_eq(s[1], 3);
	ck_assert_int_eq(s[2], 4);
	for (int i = 0; i < 24; i++)
		ck_assert_float_eq(d[i], ((float)i - 7.5f) / 4);
	free(d);
	ck_assert_int_eq(px_npy_read(fixture("np_f8_3.npy"), &nd, s, &d, &err), 0);
	ck_assert_float_eq(d[0], 0.5f);
	ck_assert_float_eq(d[1], -1e-3f);
	ck_assert_float_eq(d[2], 3e38f);
	free(d);
	ck_assert_int_eq(px_npy_read(fixture("np_u1_2x2.npy"), &nd, s, &d, &err), 0);
	ck_assert_int_eq(nd, 2);
	ck_assert_float_eq(d[1], 255.0f);
	ck_assert_float_eq(d[3], 128.0f);
	free(d);
	ck_assert_int_eq(px_npy_read(fixture("np_v2_i2.npy"), &nd, s, &d, &err), 0);
	ck_assert_float_eq(d[0], -3.0f);
	ck_assert_float_eq(d[2], 32767.0f);
	free(d);
	ck_assert_int_eq(px_npy_read(fixture("np_v3_f4.npy"), &nd, s, &d, &err), 0);
	ck_assert_int_eq(nd, 2);
	ck_assert_float_eq(d[0], 1.25f);
	free(d);
	ck_assert_int_eq(px_npy_read_i32(fixture("np_i8_lengths.npy"), &nd, s, &l, &err), 0);
	ck_assert_int_eq(s[0], 4);
	ck_assert_int_eq(l[3], 4);
	free(l);
	ck_assert_int_eq(px_npy_read(fixture("np_fortran.npy"), &nd, s, &d, &err), PX_ERR_UNSUPPORTED);
	ck_assert_msg(strstr(err.msg, "np_fortran.npy: fortran_order True arrays are not supported"),
		      "%s", err.msg);
}
END_TEST

START_TEST(test_npy_rejects_hostile_headers_each_with_its_own_message)
{
	tmp_setup();
	const float data[4] = {1, 2, 3, 4};
	struct {
		const char *header;   /* NULL: raw bytes below */
		int major;
		const char *msg;
	} c[] = {
		{"{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, 1099511627776), }\n", 1,
		 "too large (its element count overflows)"},
		{"{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 100000), }\n", 1,
		 "npy shape (100000, 100000) of <f4 needs 40000000000 data bytes but the file holds 16"},
		{"{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }\n", 1,
		 "npy shape (5,) of <f4 needs 20 data bytes but the file holds 16"},
		{"{'descr': '<f4', 'fortran_order': True, 'shape': (4,), }\n", 1,
		 "fortran_order True arrays are not supported"},
		{"{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }\n", 1,
		 "npy dtype '<c8' is not supported"},
		{"{'descr': '>f4', 'fortran_order': False, 'shape': (4,), }\n", 1,
		 "npy dtype '>f4' is not supported"},
		{"{'descr': '<f4' 'fortran_order': False, 'shape': (4,), }\n", 1,
		 "not a valid dict: expected ',' or '}'"},
		{"{'descr': '<f4', 'fortran_order': False, }\n", 1, "lacks the key 'shape'"},
		{"{'descr': '<f4', 'fortran_order': False, 'shape': (4,), 'x': 1}\n", 1,
		 "unexpected or repeated key 'x'"},
		{"{'descr': '<f4', 'fortran_order': False, 'shape': (4), }\n", 1,
		 "one-dimensional shape needs a trailing comma"},
		{"{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,4), }\n", 1,
		 "more than the 6 dims"},
		{"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }\n", 1,
		 "dimension that overflows 64 bits"},
		{"{'descr': '<f4', 'fortran_order': maybe, 'shape': (4,), }\n", 1,
		 "fortran_order must be True or False"},
		{"{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }\n", 4,
		 "npy format version 4.0 is not supported"},
		{"{'descr': '<f4', 'fortran_order': False, 'shape': (4,), } junk\n", 1,
		 "unexpected text after '}'"},
	};
	size_t nc = sizeof c / sizeof c[0];
	struct px_error err;
	char msgs[24][PX_ERROR_MSG_MAX];
	int nd;
	int64_t s[PX_MAX_DIMS];
	float *d;
	for (size_t k = 0; k < nc; k++) {
		npy_raw(tp("h.npy"), c[k].major, c[k].header, data, sizeof data);
		ck_assert_int_ne(px_npy_read(tp("h.npy"), &nd, s, &d, &err), 0);
		ck_assert_msg(strstr(err.msg, c[k].msg), "case %zu: got '%s'", k, err.msg);
		ck_assert_msg(strstr(err.msg, "h.npy"), "names the file: %s", err.msg);
		snprintf(msgs[k], sizeof msgs[k], "%s", err.msg);
	}
	/* raw damage: bad magic, a header length past the end, an absurd v2 header length */
	unsigned char raw[64];
	memcpy(raw, "\x93NUMPX\x01\x00\x10\x00", 10);
	write_bytes(tp("h.npy"), raw, 10);
	ck_assert_int_eq(px_npy_read(tp("h.npy"), &nd, s, &d, &err), PX_ERR_PARSE);
	ck_assert_msg(strstr(err.msg, "not an npy file (bad magic)"), "%s", err.msg);
	snprintf(msgs[nc++], PX_ERROR_MSG_MAX, "%s", err.msg);
	memcpy(raw, "\x93NUMPY\x01\x00\x00\x01{'descr'", 17);
	write_bytes(tp("h.npy"), raw, 17);
	ck_assert_int_eq(px_npy_read(tp("h.npy"), &nd, s, &d, &err), PX_ERR_CORRUPT);
	ck_assert_msg(strstr(err.msg, "header length 256 runs past the end of the 17-byte file"), "%s", err.msg);
	snprintf(msgs[nc++], PX_ERROR_MSG_MAX, "%s", err.msg);
	memcpy(raw, "\x93NUMPY\x02\x00\x00\x00\x00\x40", 12);
	write_bytes(tp("h.npy"), raw, 12);
	ck_assert_int_eq(px_npy_read(tp("h.npy"), &nd, s, &d, &err), PX_ERR_CORRUPT);
	ck_assert_msg(strstr(err.msg, "header length 1073741824 is more than the 65536 bytes allowed"), "%s", err.msg);
	snprintf(msgs[nc++], PX_ERROR_MSG_MAX, "%s", err.msg);
	for (size_t i = 0; i < nc; i++)
		for (size_t j = i + 1; j < nc; j++)
			ck_assert_msg(strcmp(msgs[i], msgs[j]), "cases %zu and %zu say the same: %s", i, j, msgs[i]);
	tmp_teardown();
}
END_TEST

START_TEST(test_npy_source_loads_x_y_lengths_and_infers_classes)
{
	tmp_setup();
	struct px_dataset ds;
	struct px_error err;
	char o[1200];
	float x[24];
	for (int i = 0; i < 24; i++)
		x[i] = (float)i;
	int64_t xs[3] = {4, 3, 2}, ys[1] = {4};
	const float y[4] = {0, 2, 1, 2}, yr[4] = {0.5f, 1, 2, 3};
	const int32_t len[4] = {3, 1, 2, 3}, badlen[4] = {3, 4, 1, 1};
	ck_assert_int_eq(px_npy_write(tp("x.npy"), 3, xs, x, &err), 0);
	ck_assert_int_eq(px_npy_write(tp("y.npy"), 1, ys, y, &err), 0);
	ck_assert_int_eq(px_npy_write(tp("yr.npy"), 1, ys, yr, &err), 0);
	npy_raw(tp("len.npy"), 1, "{'descr': '<i4', 'fortran_order': False, 'shape': (4,), }\n", len, 16);
	npy_raw(tp("bad.npy"), 1, "{'descr': '<i4', 'fortran_order': False, 'shape': (4,), }\n", badlen, 16);

	snprintf(o, sizeof o, "x: %s/x.npy, y: %s/y.npy, lengths: %s/len.npy", tmpdir, tmpdir, tmpdir);
	ck_assert_msg(load("npy", o, "train", 1, &ds, &err) == 0, "%s", err.msg);
	ck_assert_int_eq(ds.n, 4);
	ck_assert_int_eq(ds.x.ndim, 3);
	ck_assert_float_eq(ds.x_data[23], 23.0f);
	ck_assert_int_eq(ds.n_classes, 3);
	ck_assert_int_eq(ds.x_len[1], 1);
	px_dataset_free(&ds);

	snprintf(o, sizeof o, "x: %s/x.npy, y: %s/yr.npy", tmpdir, tmpdir);
	ck_assert_int_eq(load("npy", o, "train", 1, &ds, &err), 0);
	ck_assert_int_eq(ds.n_classes, 0);   /* real-valued: regression */
	ck_assert_ptr_null(ds.x_len);
	px_dataset_free(&ds);

	snprintf(o, sizeof o, "x: %s/x.npy, y: %s/y.npy, classes: 5", tmpdir, tmpdir);
	ck_assert_int_eq(load("npy", o, "train", 1, &ds, &err), 0);
	ck_assert_int_eq(ds.n_classes, 5);
	px_dataset_free(&ds);
	snprintf(o, sizeof o, "x: %s/x.npy, y: %s/y.npy, classes: 2", tmpdir, tmpdir);
	ck_assert_int_eq(load("npy", o, "train", 1, &ds, &err), PX_ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "y must hold integer classes 0..1"), "%s", err.msg);

	snprintf(o, sizeof o, "x: %s/x.npy, lengths: %s/bad.npy", tmpdir, tmpdir);
	ck_assert_int_eq(load("npy", o, "train", 1, &ds, &err), PX_ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "length 4 of example 1 is not between 1 and T = 3"), "%s", err.msg);
	ck_assert_ptr_null(ds.x_data);
	ck_assert_int_eq(px_npy_write(tp("y3.npy"), 1, (int64_t[]){3}, y, &err), 0);
	snprintf(o, sizeof o, "x: %s/x.npy, y: %s/y3.npy", tmpdir, tmpdir);
	ck_assert_int_eq(load("npy", o, "train", 1, &ds, &err), PX_ERR_SHAPE);
	ck_assert_msg(strstr(err.msg, "y [3] does not match x [4,3,2]"), "%s", err.msg);
	tmp_teardown();
}
END_TEST

/* ------------------------------------------------------------------ csv */

START_TEST(test_csv_with_header_parses_and_bad_rows_name_file_and_line)
{
	tmp_setup();
	struct px_dataset ds;
	struct px_error err;
	char o[1200];
	write_text(tp("a.csv"), "f1,f2,label\r\n1,2,0\r\n3, 4.5 ,1\n\n-5e-1,6,2\n");
	snprintf(o, sizeof o, "path: %s/a.csv, header: true", tmpdir);
	ck_assert_msg(load("csv", o, "train", 1, &ds, &err) == 0, "%s", err.msg);
	ck_assert_int_eq(ds.n, 3);
	ck_assert_int_eq(ds.x.ndim, 2);
	ck_assert_int_eq(ds.x.dim[1], 2);
	ck_assert_float_eq(ds.x_data[3], 4.5f);
	ck_assert_float_eq(ds.x_data[4], -0.5f);
	ck_assert_float_eq(ds.y_data[2], 2.0f);
	ck_assert_int_eq(ds.n_classes, 3);
	px_dataset_free(&ds);

	/* label in column 0, ';' between fields, regression */
	write_text(tp("b.csv"), "0.25;1;2\n1.5;3;4\n");
	snprintf(o, sizeof o, "path: %s/b.csv, label_column: 0, delimiter: ';', task: regression", tmpdir);
	ck_assert_msg(load("csv", o, "train", 1, &ds, &err) == 0, "%s", err.msg);
	ck_assert_float_eq(ds.y_data[0], 0.25f);
	ck_assert_float_eq(ds.x_data[3], 4.0f);
	ck_assert_int_eq(ds.n_classes, 0);
	px_dataset_free(&ds);

	struct {
		const char *text, *opts, *msg;
	} c[] = {
		{"1,2,0\n3,4\n", "", "bad.csv:2: 2 fields, expected 3 (as on line 1)"},
		{"h\n1,2,0\n3,x,1\n", ", header: true", "bad.csv:3: field 2 'x' is not a number"},
		{"1,2,0\n3,,1\n", "", "bad.csv:2: field 2 '' is not a number"},
		{"1,2,0.5\n", "", "bad.csv:1: label 0.5 is not a class"},
		{"1,nan,0\n", "", "bad.csv:1: field 2 'nan' is not a number"},
		{"1\n2\n", "", "bad.csv:1: a row needs features and a label, found 1 column"},
		{"h1,h2\n", ", header: true", "bad.csv: no data rows"},
		{"1,2,3\n", ", label_column: 3", "label_column 3 is outside the 3 columns"},
		{"1,2,3\n", ", delimiter: '--'", "'delimiter' must be one character"},
	};
	for (size_t k = 0; k < sizeof c / sizeof c[0]; k++) {
		write_text(tp("bad.csv"), c[k].text);
		snprintf(o, sizeof o, "path: %s/bad.csv%s", tmpdir, c[k].opts);
		ck_assert_int_ne(load("csv", o, "train", 1, &ds, &err), 0);
		ck_assert_msg(strstr(err.msg, c[k].msg), "case %zu: got '%s'", k, err.msg);
		ck_assert_ptr_null(ds.x_data);
	}
	tmp_teardown();
}
END_TEST

/* ------------------------------------------------------------------ text */

START_TEST(test_text_windows_hold_next_bytes_and_two_ranges_share_the_vocabulary)
{
	tmp_setup();
	/* 80 bytes of 'a'/'b', then 20 of 'x'/'y'/'z': the first range never sees x, y, z */
	char text[101];
	for (int i = 0; i < 100; i++)
		text[i] = i < 80 ? "ab"[i % 3 == 0] : "xyz"[i % 3];
	text[100] = 0;
	write_text(tp("t.txt"), text);
	struct px_dataset tr, te;
	struct px_error err;
	char o[1200];
	snprintf(o, sizeof o, "path: %s/t.txt, seq_len: 8, stride: 3, range: [0, 0.8]", tmpdir);
	ck_assert_msg(load("text", o, "train", 1, &tr, &err) == 0, "%s", err.msg);
	snprintf(o, sizeof o, "path: %s/t.txt, seq_len: 8, range: [0.8, 1]", tmpdir);
	ck_assert_msg(load("text", o, "test", 1, &te, &err) == 0, "%s", err.msg);
	ck_assert_int_eq(tr.n, (80 - 9) / 3 + 1);   /* windows of T+1 bytes every 3 bytes */
	ck_assert_int_eq(te.n, (20 - 9) / 8 + 1);
	ck_assert_int_eq(tr.x.dim[1], 8);
	ck_assert_int_eq(tr.y.dim[1], 8);
	ck_assert_int_eq(tr.n_classes, 5);
	ck_assert_int_eq(tr.x_vocab_n, 5);
	ck_assert_int_eq(te.x_vocab_n, 5);
	for (int i = 0; i < 5; i++) {
		ck_assert_str_eq(tr.x_vocab[i], te.x_vocab[i]);
		ck_assert_str_eq(tr.y_vocab[i], tr.x_vocab[i]);
	}
	ck_assert_str_eq(tr.x_vocab[0], "a");
	ck_assert_str_eq(tr.x_vocab[4], "z");
	/* decoding the ids gives the file's bytes; y is x shifted by one */
	for (int64_t i = 0; i < tr.n; i++)
		for (int t = 0; t < 8; t++) {
			ck_assert_int_eq(tr.x_vocab[(int)tr.x_data[i * 8 + t]][0], text[i * 3 + t]);
			ck_assert_int_eq(tr.y_vocab[(int)tr.y_data[i * 8 + t]][0], text[i * 3 + t + 1]);
		}
	for (int t = 0; t < 8; t++)
		ck_assert_int_eq(te.x_vocab[(int)te.x_data[8 + t]][0], text[80 + 8 + t]);
	px_dataset_free(&tr);
	px_dataset_free(&te);

	snprintf(o, sizeof o, "path: %s/t.txt, seq_len: 30, range: [0.9, 1]", tmpdir);
	ck_assert_int_eq(load("text", o, "test", 1, &te, &err), PX_ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "holds 10 bytes, fewer than seq_len+1 = 31"), "%s", err.msg);
	snprintf(o, sizeof o, "path: %s/t.txt, range: [0.5, 0.5]", tmpdir);
	ck_assert_int_eq(load("text", o, "test", 1, &te, &err), PX_ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "'range' must be [a, b]"), "%s", err.msg);

	/* a real text: the GPL, 90% / 10% */
	if (access(GPL3, R_OK)) {
		printf("skipped the GPL-3 part: %s is absent\n", GPL3);
	} else {
		ck_assert_msg(load("text", "path: " GPL3 ", seq_len: 64, range: [0, 0.9]", "train", 1,
				   &tr, &err) == 0, "%s", err.msg);
		ck_assert_int_eq(load("text", "path: " GPL3 ", seq_len: 64, range: [0.9, 1]", "test",
				      1, &te, &err), 0);
		ck_assert_int_gt(tr.n, 400);
		ck_assert_int_gt(te.n, 40);
		ck_assert_int_eq(tr.n_classes, te.n_classes);
		ck_assert_int_gt(tr.n_classes, 60);
		for (int64_t i = 0; i < tr.x_vocab_n; i++)
			ck_assert_str_eq(tr.x_vocab[i], te.x_vocab[i]);
		px_dataset_free(&tr);
		px_dataset_free(&te);
	}
	tmp_teardown();
}
END_TEST

/* ------------------------------------------------------------------ textpairs */

static int vocab_id(const struct px_dataset *ds, char which, const char *tok)
{
	char **v = which == 'x' ? ds->x_vocab : ds->y_vocab;
	int64_t n = which == 'x' ? ds->x_vocab_n : ds->y_vocab_n;
	for (int64_t i = 0; i < n; i++)
		if (!strcmp(v[i], tok))
			return (int)i;
	return -1;
}

START_TEST(test_textpairs_vocab_starts_with_specials_and_targets_end_in_eos)
{
	tmp_setup();
	struct px_dataset ds;
	struct px_error err;
	char o[1200];
	write_text(tp("p.tsv"), "ab\txyz\tCC-BY attribution\nb\tx\n\nabc\tzz zz\n\xc3\xa9t\xc3\xa9\tsummer\n");
	snprintf(o, sizeof o, "path: %s/p.tsv", tmpdir);
	ck_assert_msg(load("textpairs", o, "train", 1, &ds, &err) == 0, "%s", err.msg);
	const char *sp[4] = {"<pad>", "<bos>", "<eos>", "<unk>"};
	for (int i = 0; i < 4; i++) {
		ck_assert_str_eq(ds.x_vocab[i], sp[i]);
		ck_assert_str_eq(ds.y_vocab[i], sp[i]);
	}
	/* sources: a b c t é (UTF-8 'é' is one token); targets: ' ' e m r s u x y z */
	ck_assert_int_eq(ds.x_vocab_n, 4 + 5);
	ck_assert_str_eq(ds.x_vocab[4], "a");
	ck_assert_str_eq(ds.x_vocab[8], "\xc3\xa9");
	ck_assert_int_eq(ds.y_vocab_n, 4 + 9);
	ck_assert_str_eq(ds.y_vocab[4], " ");
	ck_assert_int_eq(ds.n_classes, ds.y_vocab_n);
	ck_assert_int_eq(ds.n, 4);
	ck_assert_int_eq(ds.x.dim[1], 3);         /* longest source: "abc", "été" */
	ck_assert_int_eq(ds.y.dim[1], 6 + 1);     /* longest target "summer" + <eos> */
	ck_assert_int_eq(ds.x_len[0], 2);
	ck_assert_int_eq(ds.x_len[3], 3);
	ck_assert_int_eq(ds.y_len[0], 4);
	ck_assert_int_eq(ds.y_len[2], 6);
	/* y[0] = x y z <eos> <pad> ... */
	ck_assert_float_eq(ds.y_data[0], (float)vocab_id(&ds, 'y', "x"));
	ck_assert_float_eq(ds.y_data[2], (float)vocab_id(&ds, 'y', "z"));
	ck_assert_float_eq(ds.y_data[3], 2.0f);
	ck_assert_float_eq(ds.y_data[4], 0.0f);
	ck_assert_float_eq(ds.x_data[0], (float)vocab_id(&ds, 'x', "a"));
	ck_assert_float_eq(ds.x_data[2], 0.0f);   /* padding */
	ck_assert_float_eq(ds.x_data[3 * 3 + 1], (float)vocab_id(&ds, 'x', "t"));
	px_dataset_free(&ds);

	/* words; the second half of the pairs still sees the whole file's vocabulary */
	snprintf(o, sizeof o, "path: %s/p.tsv, tokens: word, range: [0.5, 1]", tmpdir);
	ck_assert_msg(load("textpairs", o, "test", 1, &ds, &err) == 0, "%s", err.msg);
	ck_assert_int_eq(ds.n, 2);
	ck_assert_int_gt(vocab_id(&ds, 'x', "ab"), 3);   /* only in the first half */
	ck_assert_int_eq(ds.x_vocab_n, 4 + 4);           /* ab b abc été */
	ck_assert_int_eq(ds.y_len[0], 3);                /* zz zz <eos> */
	ck_assert_float_eq(ds.y_data[0], (float)vocab_id(&ds, 'y', "zz"));
	ck_assert_float_eq(ds.y_data[1], (float)vocab_id(&ds, 'y', "zz"));
	px_dataset_free(&ds);

	/* max_len: an error naming the line, or truncation */
	snprintf(o, sizeof o, "path: %s/p.tsv, max_len: 2", tmpdir);
	ck_assert_int_eq(load("textpairs", o, "train", 1, &ds, &err), PX_ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "p.tsv:1: the target has 3 tokens, more than max_len 2"), "%s", err.msg);
	snprintf(o, sizeof o, "path: %s/p.tsv, max_len: 2, truncate: true", tmpdir);
	ck_assert_int_eq(load("textpairs", o, "train", 1, &ds, &err), 0);
	ck_assert_int_eq(ds.x.dim[1], 2);
	ck_assert_int_eq(ds.y.dim[1], 3);
	ck_assert_int_eq(ds.y_len[0], 3);
	ck_assert_float_eq(ds.y_data[2], 2.0f);
	px_dataset_free(&ds);

	write_text(tp("bad.tsv"), "a\tb\nno tab here\n");
	snprintf(o, sizeof o, "path: %s/bad.tsv", tmpdir);
	ck_assert_int_eq(load("textpairs", o, "train", 1, &ds, &err), PX_ERR_PARSE);
	ck_assert_msg(strstr(err.msg, "bad.tsv:2: expected 'source<TAB>target'"), "%s", err.msg);
	write_text(tp("bad.tsv"), "a\tb\nc\t\n");
	ck_assert_int_eq(load("textpairs", o, "train", 1, &ds, &err), PX_ERR_PARSE);
	ck_assert_msg(strstr(err.msg, "bad.tsv:2: empty target"), "%s", err.msg);
	tmp_teardown();
}
END_TEST

/* ------------------------------------------------------------------ synthetic sources */

static bool same_data(const struct px_dataset *a, const struct px_dataset *b)
{
	int64_t nx = a->n * px_shape_numel(&a->x), ny = a->n * px_shape_numel(&a->y);
	return a->n == b->n && !memcmp(a->x_data, b->x_data, (size_t)nx * sizeof(float)) &&
	       !memcmp(a->y_data, b->y_data, (size_t)ny * sizeof(float));
}

START_TEST(test_series_is_deterministic_per_seed_and_split_and_y_is_the_next_value)
{
	struct px_dataset a, b, c, d, e;
	struct px_error err;
	const char *o = "n: 50, seq_len: 30, period: 10, noise: 0.1";
	ck_assert_int_eq(load("series", o, "train", 7, &a, &err), 0);
	ck_assert_int_eq(load("series", o, "train", 7, &b, &err), 0);
	ck_assert_int_eq(load("series", o, "test", 7, &c, &err), 0);
	ck_assert_int_eq(load("series", o, "train", 8, &d, &err), 0);
	ck_assert_int_eq(a.x.ndim, 3);
	ck_assert_int_eq(a.x.dim[1], 30);
	ck_assert_int_eq(a.x.dim[2], 1);
	ck_assert_int_eq(a.y.dim[2], 1);
	ck_assert_int_eq(a.n_classes, 0);
	ck_assert(same_data(&a, &b));
	ck_assert(!same_data(&a, &c));
	ck_assert(!same_data(&a, &d));
	for (int64_t i = 0; i < a.n; i++)
		for (int t = 0; t + 1 < 30; t++)
			ck_assert_float_eq(a.y_data[i * 30 + t], a.x_data[i * 30 + t + 1]);
	/* without noise the series repeats with its period and is not constant */
	ck_assert_int_eq(load("series", "n: 5, seq_len: 40, period: 10, noise: 0", "train", 7, &e, &err), 0);
	double spread = 0;
	for (int64_t i = 0; i < e.n; i++)
		for (int t = 0; t + 10 < 40; t++) {
			ck_assert_float_eq_tol(e.x_data[i * 40 + t], e.x_data[i * 40 + t + 10], 1e-5);
			spread = fmax(spread, fabs(e.x_data[i * 40 + t] - e.x_data[i * 40]));
		}
	ck_assert(spread > 0.3);
	px_dataset_free(&a);
	px_dataset_free(&b);
	px_dataset_free(&c);
	px_dataset_free(&d);
	px_dataset_free(&e);
}
END_TEST

START_TEST(test_copy_is_deterministic_and_targets_copy_or_reverse_then_eos)
{
	struct px_dataset a, b, c;
	struct px_error err;
	const char *o = "n: 64, min_len: 2, max_len: 6, symbols: 5, task: reverse";
	ck_assert_int_eq(load("copy", o, "train", 3, &a, &err), 0);
	ck_assert_int_eq(load("copy", o, "train", 3, &b, &err), 0);
	ck_assert_int_eq(load("copy", o, "val", 3, &c, &err), 0);
	ck_assert(same_data(&a, &b));
	ck_assert(!same_data(&a, &c));
	ck_assert_int_eq(a.x.dim[1], 6);
	ck_assert_int_eq(a.y.dim[1], 7);
	ck_assert_int_eq(a.n_classes, 9);
	ck_assert_int_eq(a.x_vocab_n, 9);
	ck_assert_str_eq(a.x_vocab[2], "<eos>");
	ck_assert_str_eq(a.x_vocab[4], "a");
	ck_assert_str_eq(a.y_vocab[8], "e");
	int seen_len[7] = {0};
	for (int64_t i = 0; i < a.n; i++) {
		int L = a.x_len[i];
		ck_assert(L >= 2 && L <= 6);
		seen_len[L] = 1;
		ck_assert_int_eq(a.y_len[i], L + 1);
		for (int t = 0; t < L; t++) {
			ck_assert(a.x_data[i * 6 + t] >= 4 && a.x_data[i * 6 + t] <= 8);
			ck_assert_float_eq(a.y_data[i * 7 + t], a.x_data[i * 6 + L - 1 - t]);
		}
		ck_assert_float_eq(a.y_data[i * 7 + L], 2.0f);
		for (int t = L; t < 6; t++)
			ck_assert_float_eq(a.x_data[i * 6 + t], 0.0f);
	}
	for (int L = 2; L <= 6; L++)
		ck_assert_msg(seen_len[L], "length %d never drawn", L);
	px_dataset_free(&a);
	px_dataset_free(&b);
	px_dataset_free(&c);
	ck_assert_int_eq(load("copy", "n: 4, task: copy", "train", 3, &a, &err), 0);
	for (int t = 0; t < a.x_len[0]; t++)
		ck_assert_float_eq(a.y_data[t], a.x_data[t]);
	px_dataset_free(&a);
	ck_assert_int_eq(load("copy", "min_len: 9, max_len: 4", "train", 3, &a, &err), PX_ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "min_len 9 is more than max_len 4"), "%s", err.msg);
}
END_TEST

/* ------------------------------------------------------------------ views, split, gather */

/* n examples of [2,3]; x = 100*i + j, y = labels[i] */
static void small_dataset(struct px_dataset *ds, int64_t n, const float *labels, bool lengths)
{
	struct px_error err;
	int64_t xd[3] = {n, 2, 3}, yd[1] = {n};
	ck_assert_int_eq(px_dataset_alloc(ds, 3, xd, lengths, 1, yd, false, &err), 0);
	for (int64_t i = 0; i < n; i++) {
		for (int j = 0; j < 6; j++)
			ds->x_data[i * 6 + j] = (float)(100 * i + j);
		ds->y_data[i] = labels ? labels[i] : (float)(i % 3);
		if (lengths)
			ds->x_len[i] = (int32_t)(1 + i % 2);
	}
	ds->n_classes = 3;
}

START_TEST(test_views_apply_only_classes_limit_scale_and_reshape_in_order)
{
	struct px_dataset ds;
	struct px_error err;
	const float labels[6] = {0, 1, 2, 1, 0, 1};
	small_dataset(&ds, 6, labels, false);
	struct px_config *v = view("only_classes: [1], limit: 2, scale: 1/2, shift: 1, as: image");
	ck_assert_msg(px_dataset_apply_view(&ds, v, &err) == 0, "%s", err.msg);
	px_config_free(v);
	ck_assert_int_eq(ds.n, 2);   /* examples 1 and 3, then the limit drops 5 */
	ck_assert_int_eq(ds.x.ndim, 4);
	ck_assert_int_eq(ds.x.dim[0], 2);
	ck_assert_int_eq(ds.x.dim[1], 1);
	ck_assert_int_eq(ds.x.dim[2], 2);
	ck_assert_int_eq(ds.x.dim[3], 3);
	ck_assert_int_eq(ds.y.dim[0], 2);
	ck_assert_float_eq(ds.x_data[0], 100 * 0.5f + 1);
	ck_assert_float_eq(ds.x_data[6 + 5], 305 * 0.5f + 1);
	ck_assert_float_eq(ds.y_data[1], 1.0f);
	ck_assert_int_eq(ds.n_classes, 3);

	v = view("as: sequence");   /* [n,1,H,W] -> [n,H,W] */
	ck_assert_int_eq(px_dataset_apply_view(&ds, v, &err), 0);
	px_config_free(v);
	ck_assert_int_eq(ds.x.ndim, 3);
	ck_assert_int_eq(ds.x.dim[1], 2);
	v = view("as: flat");
	ck_assert_int_eq(px_dataset_apply_view(&ds, v, &err), 0);
	px_config_free(v);
	ck_assert_int_eq(ds.x.ndim, 2);
	ck_assert_int_eq(ds.x.dim[1], 6);
	v = view("as: image");
	ck_assert_int_eq(px_dataset_apply_view(&ds, v, &err), PX_ERR_SHAPE);
	ck_assert_msg(strstr(err.msg, "'as: image' needs x of shape [n,H,W] or [n,C,H,W]") &&
		      strstr(err.msg, "got [2,6]"), "%s", err.msg);
	px_config_free(v);
	v = view("as: sequence");   /* [n,T] -> [n,T,1] */
	ck_assert_int_eq(px_dataset_apply_view(&ds, v, &err), 0);
	ck_assert_int_eq(ds.x.ndim, 3);
	ck_assert_int_eq(ds.x.dim[2], 1);
	px_config_free(v);
	v = view("only_classes: [7]");
	ck_assert_int_eq(px_dataset_apply_view(&ds, v, &err), PX_ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "only_classes keeps none of the 2 examples"), "%s", err.msg);
	px_config_free(v);
	px_dataset_free(&ds);

	/* scale and shift touch only the valid steps: padding stays as it was */
	small_dataset(&ds, 2, NULL, true);
	v = view("shift: 5");
	ck_assert_int_eq(px_dataset_apply_view(&ds, v, &err), 0);
	px_config_free(v);
	ck_assert_float_eq(ds.x_data[2], 7.0f);   /* example 0: one valid step of 3 */
	ck_assert_float_eq(ds.x_data[3], 3.0f);
	ck_assert_float_eq(ds.x_data[6 + 5], 110.0f);   /* example 1: both steps */
	v = view("as: flat");
	ck_assert_int_eq(px_dataset_apply_view(&ds, v, &err), PX_ERR_SHAPE);
	ck_assert_msg(strstr(err.msg, "ragged"), "%s", err.msg);
	px_config_free(v);
	px_dataset_free(&ds);
}
END_TEST

START_TEST(test_split_is_seeded_deterministic_and_keeps_the_order)
{
	struct px_dataset a, va, b, vb, c, vc;
	struct px_error err;
	small_dataset(&a, 100, NULL, true);
	small_dataset(&b, 100, NULL, true);
	small_dataset(&c, 100, NULL, true);
	const char *tok[1] = {"t"};
	ck_assert_int_eq(px_dataset_set_vocab(&a, 'y', tok, 1, &err), 0);
	ck_assert_int_eq(px_dataset_split(&a, 0.2, 11, &va, &err), 0);
	ck_assert_int_eq(px_dataset_split(&b, 0.2, 11, &vb, &err), 0);
	ck_assert_int_eq(px_dataset_split(&c, 0.2, 12, &vc, &err), 0);
	ck_assert_int_eq(a.n, 80);
	ck_assert_int_eq(va.n, 20);
	ck_assert_int_eq(a.x.dim[0], 80);
	ck_assert_int_eq(va.y.dim[0], 20);
	ck_assert_int_eq(va.n_classes, 3);
	ck_assert_str_eq(va.y_vocab[0], "t");
	ck_assert(!memcmp(va.x_data, vb.x_data, 20 * 6 * sizeof(float)));
	ck_assert(memcmp(va.x_data, vc.x_data, 20 * 6 * sizeof(float)));
	/* every example lands in exactly one split, both in ascending order, rows intact */
	bool seen[100] = {false};
	const struct px_dataset *parts[2] = {&a, &va};
	for (int p = 0; p < 2; p++) {
		int64_t prev = -1;
		for (int64_t i = 0; i < parts[p]->n; i++) {
			int64_t orig = (int64_t)parts[p]->x_data[i * 6] / 100;
			ck_assert_int_gt(orig, prev);
			prev = orig;
			ck_assert(!seen[orig]);
			seen[orig] = true;
			ck_assert_float_eq(parts[p]->x_data[i * 6 + 5], (float)(100 * orig + 5));
			ck_assert_float_eq(parts[p]->y_data[i], (float)(orig % 3));
			ck_assert_int_eq(parts[p]->x_len[i], 1 + orig % 2);
		}
	}
	for (int i = 0; i < 100; i++)
		ck_assert(seen[i]);
	struct px_dataset vd;
	ck_assert_int_eq(px_dataset_split(&a, 1.0, 1, &vd, &err), PX_ERR_INVALID);
	ck_assert_int_eq(px_dataset_split(&a, 0.001, 1, &vd, &err), PX_ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "would be empty"), "%s", err.msg);
	px_dataset_free(&a);
	px_dataset_free(&b);
	px_dataset_free(&c);
	px_dataset_free(&va);
	px_dataset_free(&vb);
	px_dataset_free(&vc);
}
END_TEST

START_TEST(test_gather_copies_rows_and_lengths_into_the_arena)
{
	struct px_dataset ds;
	struct px_error err;
	ck_assert_int_eq(load("copy", "n: 10, min_len: 1, max_len: 5", "train", 1, &ds, &err), 0);
	struct px_arena *a = px_arena_new(0);
	const int64_t idx[3] = {7, 2, 7};
	struct px_tensor *x, *y;
	ck_assert_int_eq(px_dataset_gather(&ds, idx, 3, a, &x, &y, &err), 0);
	ck_assert_int_eq(x->ndim, 2);
	ck_assert_int_eq(x->shape[0], 3);
	ck_assert_int_eq(x->shape[1], 5);
	ck_assert_int_eq(y->shape[1], 6);
	ck_assert_ptr_nonnull(x->lengths);
	ck_assert_ptr_nonnull(y->lengths);
	for (int j = 0; j < 3; j++) {
		ck_assert_int_eq(x->lengths[j], ds.x_len[idx[j]]);
		ck_assert_int_eq(y->lengths[j], ds.y_len[idx[j]]);
		ck_assert_ptr_ne(x->lengths, ds.x_len);
		for (int t = 0; t < 5; t++)
			ck_assert_float_eq(x->data[j * 5 + t], ds.x_data[idx[j] * 5 + t]);
		for (int t = 0; t < 6; t++)
			ck_assert_float_eq(y->data[j * 6 + t], ds.y_data[idx[j] * 6 + t]);
	}
	/* a dataset without lengths gives tensors without them */
	struct px_dataset s;
	small_dataset(&s, 4, NULL, false);
	ck_assert_int_eq(px_dataset_gather(&s, idx + 1, 1, a, &x, &y, &err), 0);
	ck_assert_ptr_null(x->lengths);
	ck_assert_int_eq(x->ndim, 3);
	ck_assert_float_eq(x->data[4], 204.0f);
	ck_assert_float_eq(y->data[0], 2.0f);
	ck_assert_int_eq(px_dataset_gather(&s, idx, 1, a, &x, &y, &err), PX_ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "example 7 is out of range"), "%s", err.msg);
	px_arena_free(a);
	px_dataset_free(&ds);
	px_dataset_free(&s);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("data");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_dataset_alloc_is_zeroed_and_refuses_overflowing_or_mismatched_shapes);
	tcase_add_test(tc, test_source_schemas_avoid_the_keys_the_pipeline_reserves);
	tcase_add_test(tc, test_idx_reads_plain_and_gzip_files_with_raw_pixels_and_labels);
	tcase_add_test(tc, test_idx_rejects_truncated_and_lying_files_with_messages);
	tcase_add_test(tc, test_fashion_mnist_test_set_loads_10000_images_of_28x28_with_labels_0_to_9);
	tcase_add_test(tc, test_npy_round_trip_preserves_shape_values_and_64_byte_header_alignment);
	tcase_add_test(tc, test_npy_reads_every_supported_dtype_and_versions_2_and_3);
	tcase_add_test(tc, test_npy_reads_the_files_numpy_writes);
	tcase_add_test(tc, test_npy_rejects_hostile_headers_each_with_its_own_message);
	tcase_add_test(tc, test_npy_source_loads_x_y_lengths_and_infers_classes);
	tcase_add_test(tc, test_csv_with_header_parses_and_bad_rows_name_file_and_line);
	tcase_add_test(tc, test_text_windows_hold_next_bytes_and_two_ranges_share_the_vocabulary);
	tcase_add_test(tc, test_textpairs_vocab_starts_with_specials_and_targets_end_in_eos);
	tcase_add_test(tc, test_series_is_deterministic_per_seed_and_split_and_y_is_the_next_value);
	tcase_add_test(tc, test_copy_is_deterministic_and_targets_copy_or_reverse_then_eos);
	tcase_add_test(tc, test_views_apply_only_classes_limit_scale_and_reshape_in_order);
	tcase_add_test(tc, test_split_is_seeded_deterministic_and_keeps_the_order);
	tcase_add_test(tc, test_gather_copies_rows_and_lengths_into_the_arena);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
