/* plexus plugin: attention.
 *
 * - attention_pool: feed-forward attention over a sequence (Raffel & Ellis 2015), for
 *   many-to-one models; its `weights` port exposes the attention over time.
 * - attention_decoder (decoder.c): the decoder of an encoder-decoder with Bahdanau or Luong
 *   attention over an encoder's sequence, teacher forcing, greedy and beam-search decoding.
 * - dates: a seeded synthetic source of date-format translation pairs
 *   ("28 November 2026" -> "2026-11-28").
 *
 * Ragged sequences: padded steps get the score -inf, hence weight exactly 0, and no
 * gradient. */
#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <plexus/plugin.h>

extern const struct px_layer_ops px_attention_decoder_ops;   /* decoder.c */

static int nomem(struct px_error *err, const char *what)
{
	return px_error_set(err, PX_ERR_NOMEM, "%s: out of memory", what);
}

/* Valid steps of example b of a [B,T,...] tensor, clamped to [0, T]. */
static int64_t seq_len(const struct px_tensor *x, int64_t b)
{
	int64_t len = px_tensor_len(x, b);
	return len < 0 ? 0 : (len > x->shape[1] ? x->shape[1] : len);
}

/* ================================================================== attention_pool */
/* e_t = v^T tanh(W h_t + b);  alpha = softmax(e) over valid t;  c = sum_t alpha_t h_t */
struct pool {
	int64_t F, U;
	struct px_param *w, *b, *v;
	float *a;          /* tanh(W h_t + b) [B*T, U] of the last forward (step arena) */
	const struct px_host *host;
	char node[128];    /* for figures */
};

static const struct px_param_spec pool_schema[] = {
	{"units", PX_T_INT, "64", 1, 1e9, NULL, "attention hidden size (rows of W)"},
	{NULL, 0, NULL, 0, 0, NULL, NULL},
};

static const struct px_port_spec pool_in[] = {
	{"input", 0, "sequence [B,T,F] (lengths honoured)"},
	{NULL, 0, NULL},
};

static const struct px_port_spec pool_out[] = {
	{"out", 0, "[B,F] attention-weighted sum of the steps"},
	{"weights", 0, "[B,T] attention weights (0 on padded steps, rows sum to 1)"},
	{NULL, 0, NULL},
};

static int pool_create(struct px_build *b, void **self, struct px_shape *out,
		       struct px_error *err)
{
	char s[96];
	if (b->n_in != 1 || b->in[0].ndim != 3 || b->in[0].dim[2] < 1)
		return px_build_error(b, err, PX_ERR_SHAPE,
				      "input must be a sequence [B,T,F], got %s",
				      px_shape_str(&b->in[0], s, sizeof s));
	struct pool *p = calloc(1, sizeof *p);
	if (!p)
		return nomem(err, "attention_pool");
	p->F = b->in[0].dim[2];
	p->U = px_config_int(b->cfg, "units");
	p->host = b->host;
	snprintf(p->node, sizeof p->node, "%s", b->node);
	int64_t wshape[2] = {p->U, p->F}, vshape[2] = {1, p->U};
	if (!(p->w = px_build_param(b, "weight", 2, wshape, err)) ||
	    !(p->b = px_build_param(b, "bias", 1, &p->U, err)) ||
	    !(p->v = px_build_param(b, "v", 2, vshape, err))) {
		free(p);
		return err->code;
	}
	float bw = 1.0f / sqrtf((float)p->F), bv = 1.0f / sqrtf((float)p->U);
	px_init_uniform(p->w->value, b->rng, bw);   /* nn.Linear's init */
	px_init_uniform(p->b->value, b->rng, bw);
	px_init_uniform(p->v->value, b->rng, bv);
	out[0] = (struct px_shape){.ndim = 2, .dim = {-1, p->F}};
	out[1] = (struct px_shape){.ndim = 2, .dim = {-1, b->in[0].dim[1]}};
	*self = p;
	return 0;
}

/* alpha = softmax(e[0..len)), alpha[len..n) = 0 (a masked softmax; all zero when len == 0) */
static void masked_softmax(const float *e, float *alpha, int64_t len, int64_t n)
{
	float m = -INFINITY;
	for (int64_t t = 0; t < len; t++)
		m = e[t] > m ? e[t] : m;
	double z = 0;
	for (int64_t t = 0; t < len; t++) {
		alpha[t] = expf(e[t] - m);
		z += alpha[t];
	}
	for (int64_t t = 0; t < len; t++)
		alpha[t] = (float)(alpha[t] / z);
	for (int64_t t = len < 0 ? 0 : len; t < n; t++)
		alpha[t] = 0.0f;
}

/* Report figure (ABI 1.1, a report's figure pass only): the weights [B,T] as a heat map, one
 * row per example (labelled with its class when the data has class names). */
static void pool_figure(const struct pool *p, struct px_arena *a, const struct px_tensor *w)
{
	const struct px_host *h = p->host;
	const struct px_figure_batch *fb = PX_HOST_HAS(h, figure_batch) ? h->figure_batch(h) : NULL;
	int64_t B = w->shape[0], T = w->shape[1], rows = B < 16 ? B : 16;
	if (!fb || !PX_HOST_HAS(h, figure_heatmap) || rows < 1 || T < 1 || rows * T > 16384)
		return;
	char *text = px_arena_alloc(a, (size_t)(rows + T) * 48);
	const char **lab = px_arena_alloc(a, (size_t)(rows + T) * sizeof *lab);
	if (!text || !lab)
		return;
	const struct px_tensor *y = fb->y && fb->y->ndim == 1 && fb->y->shape[0] == B ? fb->y : NULL;
	for (int64_t r = 0; r < rows + T; r++) {
		int64_t c = r < rows && y && fb->class_names ? (int64_t)y->data[r] : -1;
		if (r >= rows)
			snprintf(text + r * 48, 48, "%lld", (long long)(r - rows));
		else if (c >= 0 && c < fb->n_classes)
			snprintf(text + r * 48, 48, "%lld: %s", (long long)r, fb->class_names[c]);
		else
			snprintf(text + r * 48, 48, "example %lld", (long long)r);
		lab[r] = text + r * 48;
	}
	h->figure_heatmap(h, p->node, "attention weights over time (one row per example)", w->data,
			  (int)rows, (int)T, lab, lab + rows, "time step", "example");
}

/* e_t = v^T tanh(W h_t + b); alpha = masked softmax(e); c = sum_t alpha_t h_t */
static int pool_forward(void *self, struct px_fwd *f, struct px_error *err)
{
	struct pool *p = self;
	const struct px_tensor *x = f->in[0];
	if (x->ndim != 3 || x->shape[2] != p->F)
		return px_error_set(err, PX_ERR_SHAPE,
				    "attention_pool: input must be [B,T,%lld]", (long long)p->F);
	int64_t B = x->shape[0], T = x->shape[1], U = p->U, F = p->F, BT = B * T;
	struct px_tensor *c = px_tensor_new2(f->arena, B, F), *w = px_tensor_new2(f->arena, B, T);
	float *a = px_arena_alloc(f->arena, (size_t)(BT * U + BT) * sizeof(float));
	if (!c || !w || !a)
		return nomem(err, "attention_pool");
	float *e = a + BT * U;
	for (int64_t r = 0; r < BT; r++)
		memcpy(a + r * U, p->b->value->data, (size_t)U * sizeof(float));
	px_gemm(false, true, BT, U, F, 1.0f, x->data, F, p->w->value->data, F, 1.0f, a, U);
	for (int64_t i = 0; i < BT * U; i++)
		a[i] = tanhf(a[i]);
	px_gemm(false, true, BT, 1, U, 1.0f, a, U, p->v->value->data, U, 0.0f, e, 1);
	for (int64_t bi = 0; bi < B; bi++) {
		int64_t len = seq_len(x, bi);
		float *al = w->data + bi * T;
		masked_softmax(e + bi * T, al, len, T);
		if (len > 0)   /* c_b[1,F] = alpha_b[1,len] h_b[len,F] */
			px_gemm(false, false, 1, F, len, 1.0f, al, len, x->data + bi * T * F, F,
				0.0f, c->data + bi * F, F);
	}
	w->lengths = x->lengths;
	p->a = a;
	f->out[0] = c;
	f->out[1] = w;
	if (!f->train)
		pool_figure(p, f->arena, w);
	return 0;
}

/* dalpha_t = dw_t + dc . h_t;  de_t = alpha_t (dalpha_t - sum_s alpha_s dalpha_s);
 * dh_t += alpha_t dc + W^T (de_t v * (1 - a_t^2)) */
static int pool_backward(void *self, struct px_bwd *b, struct px_error *err)
{
	struct pool *p = self;
	const struct px_tensor *x = b->in[0], *alpha = b->out[1];
	const struct px_tensor *dc = b->d_out[0], *dw = b->d_out[1];
	int64_t B = x->shape[0], T = x->shape[1], U = p->U, F = p->F, BT = B * T;
	if (!dc && !dw)
		return 0;
	float *da = px_arena_zalloc(b->arena, (size_t)(BT * U + BT) * sizeof(float));
	if (!da)
		return nomem(err, "attention_pool");
	float *de = da + BT * U;
	const float *v = p->v->value->data;
	for (int64_t bi = 0; bi < B; bi++) {
		int64_t len = seq_len(x, bi);
		const float *al = alpha->data + bi * T;
		float *deb = de + bi * T;
		for (int64_t t = 0; t < len; t++) {
			const float *h = x->data + (bi * T + t) * F;
			deb[t] = (dw ? dw->data[bi * T + t] : 0.0f) +
				 (dc ? px_dot(F, dc->data + bi * F, h) : 0.0f);
		}
		double s = 0;
		for (int64_t t = 0; t < len; t++)
			s += (double)al[t] * deb[t];
		for (int64_t t = 0; t < len; t++) {
			deb[t] = al[t] * (deb[t] - (float)s);
			const float *at = p->a + (bi * T + t) * U;
			float *dat = da + (bi * T + t) * U;
			for (int64_t u = 0; u < U; u++)
				dat[u] = deb[t] * v[u] * (1.0f - at[u] * at[u]);
		}
		if (dc && b->d_in[0] && len > 0)   /* dh_b[len,F] += alpha_b^T dc_b */
			px_gemm(true, false, len, F, 1, 1.0f, al, len, dc->data + bi * F, F, 1.0f,
				b->d_in[0]->data + bi * T * F, F);
	}
	/* dv += de^T a;  dW += da^T x;  db += sum_rows da;  dx += da W */
	px_gemm(true, false, 1, U, BT, 1.0f, de, 1, p->a, U, 1.0f, p->v->grad->data, U);
	px_gemm(true, false, U, F, BT, 1.0f, da, U, x->data, F, 1.0f, p->w->grad->data, F);
	float *db = p->b->grad->data;
	for (int64_t r = 0; r < BT; r++)
		for (int64_t u = 0; u < U; u++)
			db[u] += da[r * U + u];
	if (b->d_in[0])
		px_gemm(false, false, BT, F, U, 1.0f, da, U, p->w->value->data, F, 1.0f,
			b->d_in[0]->data, F);
	return 0;
}

static const struct px_layer_ops pool_ops = {
	.struct_size = sizeof(struct px_layer_ops),
	.kind = "attention_pool",
	.doc = "feed-forward attention pooling over time: "
	       "c = sum_t softmax(v^T tanh(W h_t + b)) h_t",
	.schema = pool_schema,
	.inputs = pool_in,
	.outputs = pool_out,
	.flags = PX_LAYER_SEQUENCE,
	.create = pool_create,
	.forward = pool_forward,
	.backward = pool_backward,
	.destroy = free,
};

/* ================================================================== dates source */
/* Human-written dates -> ISO 8601, e.g. "saturday 28/11/2026" -> "2026-11-28". Dates are
 * uniform over 1950-01-01 .. 2049-12-31, so a two-digit year yy is unambiguous (50..99 ->
 * 19yy, 00..49 -> 20yy). Numeric formats are unambiguous too: day-first slashes always come
 * after a weekday, US month-first slashes never do. */
#define DATES_T_IN 29    /* longest source: "wednesday, september 28, 2026" */
#define DATES_T_OUT 11   /* "2026-11-28" + <eos> */
#define DATES_N_FORMATS 19

static const char *const month_name[12] = {
	"january", "february", "march", "april", "may", "june", "july", "august", "september",
	"october", "november", "december",
};
static const char *const weekday_name[7] = {
	"monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday",
};

/* Fixed vocabularies (the same for every split and option): ids 0..3 are special. */
static const char dates_x_chars[] = " ,-./0123456789abcdefghijklmnopqrstuvwxyz"
				    "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
static const char dates_y_chars[] = "-0123456789";
static const char *const special_tokens[4] = {"<pad>", "<bos>", "<eos>", "<unk>"};

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, int64_t m, int64_t d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int *y, int *m, int *d)
{
	z += 719468;
	int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	int64_t doe = z - era * 146097;
	int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	int64_t mp = (5 * doy + 2) / 153;
	*d = (int)(doy - (153 * mp + 2) / 5 + 1);
	*m = (int)(mp < 10 ? mp + 3 : mp - 9);
	*y = (int)(yoe + era * 400 + (*m <= 2));
}

static const char *ordinal(int d)
{
	if (d % 100 >= 11 && d % 100 <= 13)
		return "th";
	return d % 10 == 1 ? "st" : d % 10 == 2 ? "nd" : d % 10 == 3 ? "rd" : "th";
}

/* Writes date (y, m, d), weekday wd (0 = monday), in format `fmt` into buf (lowercase). */
static void date_format(char *buf, size_t n, int fmt, int y, int m, int d, int wd)
{
	const char *mon = month_name[m - 1], *day = weekday_name[wd];
	char mab[4], dab[4];
	snprintf(mab, sizeof mab, "%.3s", mon);
	snprintf(dab, sizeof dab, "%.3s", day);
	int yy = y % 100;
	switch (fmt) {
	case 0: /* 28 november 2026 */
		snprintf(buf, n, "%d %s %04d", d, mon, y);
		break;
	case 1: /* nov 28, 26 */
		snprintf(buf, n, "%s %d, %02d", mab, d, yy);
		break;
	case 2: /* saturday 28/11/2026 */
		snprintf(buf, n, "%s %02d/%02d/%04d", day, d, m, y);
		break;
	case 3: /* 2026.11.28 */
		snprintf(buf, n, "%04d.%02d.%02d", y, m, d);
		break;
	case 4: /* 28.11.2026 */
		snprintf(buf, n, "%02d.%02d.%04d", d, m, y);
		break;
	case 5: /* november 28th 2026 */
		snprintf(buf, n, "%s %d%s %04d", mon, d, ordinal(d), y);
		break;
	case 6: /* 11/28/26 (US) */
		snprintf(buf, n, "%d/%d/%02d", m, d, yy);
		break;
	case 7: /* 28 nov 2026 */
		snprintf(buf, n, "%d %s %04d", d, mab, y);
		break;
	case 8: /* saturday, november 28, 2026 */
		snprintf(buf, n, "%s, %s %d, %04d", day, mon, d, y);
		break;
	case 9: /* 28-11-2026 */
		snprintf(buf, n, "%02d-%02d-%04d", d, m, y);
		break;
	case 10: /* 2026/11/28 */
		snprintf(buf, n, "%04d/%02d/%02d", y, m, d);
		break;
	case 11: /* sat 28 nov 2026 */
		snprintf(buf, n, "%s %d %s %04d", dab, d, mab, y);
		break;
	case 12:
		snprintf(buf, n, "the %d%s of %s %04d", d, ordinal(d), mon, y);
		break;
	case 13: /* 11/28/2026 (US) */
		snprintf(buf, n, "%02d/%02d/%04d", m, d, y);
		break;
	case 14: /* 28 nov 26 */
		snprintf(buf, n, "%d %s %02d", d, mab, yy);
		break;
	case 15: /* nov 28 2026 */
		snprintf(buf, n, "%s %d %04d", mab, d, y);
		break;
	case 16: /* 20261128 */
		snprintf(buf, n, "%04d%02d%02d", y, m, d);
		break;
	case 17: /* 28th november, 2026 */
		snprintf(buf, n, "%d%s %s, %04d", d, ordinal(d), mon, y);
		break;
	default: /* saturday, 28 november 2026 */
		snprintf(buf, n, "%s, %d %s %04d", day, d, mon, y);
		break;
	}
}

/* Case variants when not lowercased: 0 lower, 1 UPPER, 2 Title Case. */
static void apply_case(char *s, int variant)
{
	bool word_start = true;
	for (; *s; s++) {
		bool alpha = *s >= 'a' && *s <= 'z';
		if (alpha && (variant == 1 || (variant == 2 && word_start)))
			*s = (char)(*s - 'a' + 'A');
		word_start = !(alpha || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9'));
	}
}

static float char_id(const char *chars, char c)
{
	const char *p = c ? strchr(chars, c) : NULL;
	return p ? (float)(4 + (p - chars)) : 3.0f;   /* <unk> */
}

static const struct px_param_spec dates_schema[] = {
	{"n", PX_T_INT, "20000", 1, 1e8, NULL, "examples in this split"},
	{"path", PX_T_STRING, "", 0, 0, NULL,
	 "also write the pairs as a TSV 'source<TAB>target' file here (\"\" = don't)"},
	{"lowercase", PX_T_BOOL, "true", 0, 0, NULL,
	 "lowercase sources (false: mix lower, UPPER and Title case)"},
	{NULL, 0, NULL, 0, 0, NULL, NULL},
};

static int set_vocab(struct px_dataset *ds, char which, const char *chars, struct px_error *err)
{
	size_t nc = strlen(chars);
	const char *tok[4 + 96];
	char one[96][2];
	assert(nc <= 96);
	for (int i = 0; i < 4; i++)
		tok[i] = special_tokens[i];
	for (size_t i = 0; i < nc; i++) {
		one[i][0] = chars[i];
		one[i][1] = 0;
		tok[4 + i] = one[i];
	}
	return px_dataset_set_vocab(ds, which, tok, (int64_t)(4 + nc), err);
}

/* Write the pairs atomically: a temp file next to `path`, fsync, rename. */
static int write_tsv(const char *path, const struct px_dataset *ds, struct px_error *err)
{
	size_t len = strlen(path);
	char *tmp = malloc(len + 16);
	if (!tmp)
		return nomem(err, "dates");
	snprintf(tmp, len + 16, "%s.tmp.XXXXXX", path);
	int fd = mkstemp(tmp);
	FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
	if (!f) {
		int e = errno;
		if (fd >= 0) {
			close(fd);
			unlink(tmp);
		}
		free(tmp);
		return px_error_set(err, PX_ERR_IO, "dates: cannot write '%s': %s", path,
				    strerror(e));
	}
	int64_t tx = ds->x.dim[1], ty = ds->y.dim[1];
	for (int64_t i = 0; i < ds->n; i++) {
		for (int64_t t = 0; t < ds->x_len[i]; t++)
			fputs(ds->x_vocab[(int64_t)ds->x_data[i * tx + t]], f);
		fputc('\t', f);
		for (int64_t t = 0; t + 1 < ds->y_len[i]; t++)   /* the <eos> is not written */
			fputs(ds->y_vocab[(int64_t)ds->y_data[i * ty + t]], f);
		fputc('\n', f);
	}
	bool ok = !ferror(f) && fflush(f) == 0 && fsync(fileno(f)) == 0;
	int e = errno;
	ok = (fclose(f) == 0) && ok;
	if (ok && rename(tmp, path) != 0) {
		e = errno;
		ok = false;
	}
	if (!ok)
		unlink(tmp);
	free(tmp);
	return ok ? 0 : px_error_set(err, PX_ERR_IO, "dates: cannot write '%s': %s", path,
				     strerror(e));
}

/* x = source characters (ids), y = ISO date characters + <eos>; seeded by (seed, split). */
static int dates_load(const struct px_config *cfg, const char *split, uint64_t seed,
		      struct px_dataset *out, struct px_error *err)
{
	int64_t n = px_config_int(cfg, "n");
	bool lower = px_config_bool(cfg, "lowercase");
	const char *path = px_config_str(cfg, "path");
	int64_t xd[2] = {n, DATES_T_IN}, yd[2] = {n, DATES_T_OUT};
	int rc = px_dataset_alloc(out, 2, xd, true, 2, yd, true, err);
	if (rc)
		return rc;
	if ((rc = set_vocab(out, 'x', dates_x_chars, err)) ||
	    (rc = set_vocab(out, 'y', dates_y_chars, err)))
		goto fail;
	out->n_classes = out->y_vocab_n;
	char label[128];
	snprintf(label, sizeof label, "dates/%s", split);
	struct px_rng rng;
	px_rng_seed_label(&rng, seed, label);
	int64_t d0 = days_from_civil(1950, 1, 1), d1 = days_from_civil(2049, 12, 31);
	for (int64_t i = 0; i < n; i++) {
		int64_t z = d0 + (int64_t)px_rng_below(&rng, (uint64_t)(d1 - d0 + 1));
		int y, m, d;
		civil_from_days(z, &y, &m, &d);
		int wd = (int)(((z + 3) % 7 + 7) % 7);   /* 1970-01-01 was a thursday */
		char src[64], iso[16];
		date_format(src, sizeof src, (int)px_rng_below(&rng, DATES_N_FORMATS), y, m, d, wd);
		if (!lower)
			apply_case(src, (int)px_rng_below(&rng, 3));
		snprintf(iso, sizeof iso, "%04d-%02d-%02d", y, m, d);
		size_t len = strlen(src);
		assert(len <= DATES_T_IN);
		for (size_t t = 0; t < len; t++)
			out->x_data[i * DATES_T_IN + (int64_t)t] = char_id(dates_x_chars, src[t]);
		out->x_len[i] = (int32_t)len;
		for (int t = 0; t < 10; t++)
			out->y_data[i * DATES_T_OUT + t] = char_id(dates_y_chars, iso[t]);
		out->y_data[i * DATES_T_OUT + 10] = 2.0f;   /* <eos> */
		out->y_len[i] = DATES_T_OUT;
	}
	if (path[0] && (rc = write_tsv(path, out, err)))
		goto fail;
	return 0;
fail:
	px_dataset_free(out);
	return rc;
}

static const struct px_source_ops dates_ops = {
	.struct_size = sizeof(struct px_source_ops),
	.kind = "dates",
	.doc = "synthetic date-format translation pairs ('28 November 2026' -> '2026-11-28'), "
	       "character vocabularies",
	.schema = dates_schema,
	.load = dates_load,
};

/* ================================================================== plugin */
static const struct px_layer_ops *const layers[] = {&pool_ops, &px_attention_decoder_ops, NULL};
static const struct px_source_ops *const sources[] = {&dates_ops, NULL};

static const struct px_plugin plugin = {
	.struct_size = sizeof(struct px_plugin),
	.abi_major = PX_ABI_MAJOR,
	.abi_minor = PX_ABI_MINOR,
	.name = "attention",
	.version = "0.1.0",
	.doc = "attention pooling, attention encoder-decoder (Bahdanau, Luong), dates source",
	.layers = layers,
	.sources = sources,
};

PX_PLUGIN_ENTRY(plugin)
