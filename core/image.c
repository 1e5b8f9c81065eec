/* Pictures a person can look at: PNG (libpng) and SVG heat maps. */
#include <errno.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

int px_write_file_atomic(const char *path, const void *data, size_t n, struct px_error *err)
{
	char tmp[4200];
	snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
	FILE *f = fopen(tmp, "wb");
	if (!f)
		return px_error_set(err, PX_ERR_IO, "%s: cannot write: %s", tmp, strerror(errno));
	bool ok = fwrite(data, 1, n, f) == n;
	ok &= fflush(f) == 0 && fsync(fileno(f)) == 0;
	ok &= fclose(f) == 0;
	if (!ok || rename(tmp, path) != 0) {
		int e = errno;
		unlink(tmp);
		return px_error_set(err, PX_ERR_IO, "%s: cannot write: %s", path, strerror(e));
	}
	return 0;
}

struct png_mem {
	unsigned char *buf;
	size_t len, cap;
	bool oom;
};

static void png_mem_write(png_structp p, png_bytep data, size_t n)
{
	struct png_mem *m = png_get_io_ptr(p);
	if (m->oom)
		return;
	if (m->len + n > m->cap) {
		size_t cap = 2 * (m->len + n);
		unsigned char *nb = realloc(m->buf, cap);
		if (!nb) {
			m->oom = true;
			return;
		}
		m->buf = nb;
		m->cap = cap;
	}
	memcpy(m->buf + m->len, data, n);
	m->len += n;
}

static void png_mem_flush(png_structp p)
{
	(void)p;
}

int px_png_write(const char *path, int width, int height, int channels,
		 const unsigned char *pixels, struct px_error *err)
{
	if (width <= 0 || height <= 0 || (channels != 1 && channels != 3))
		return px_error_set(err, PX_ERR_INVALID, "%s: bad image size %dx%dx%d", path, width,
				    height, channels);
	png_structp p = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
	png_infop info = p ? png_create_info_struct(p) : NULL;
	struct png_mem mem = {0};
	png_bytep *rows = calloc((size_t)height, sizeof *rows);
	if (!p || !info || !rows) {
		png_destroy_write_struct(&p, &info);
		free(rows);
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	}
	if (setjmp(png_jmpbuf(p))) {
		png_destroy_write_struct(&p, &info);
		free(rows);
		free(mem.buf);
		return px_error_set(err, PX_ERR_IO, "%s: libpng failed", path);
	}
	png_set_write_fn(p, &mem, png_mem_write, png_mem_flush);
	png_set_IHDR(p, info, (png_uint_32)width, (png_uint_32)height, 8,
		     channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
		     PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
	for (int y = 0; y < height; y++)
		rows[y] = (png_bytep)(pixels + (size_t)y * (size_t)width * (size_t)channels);
	png_set_rows(p, info, rows);
	png_write_png(p, info, PNG_TRANSFORM_IDENTITY, NULL);
	png_destroy_write_struct(&p, &info);
	free(rows);
	int rc = mem.oom ? px_error_set(err, PX_ERR_NOMEM, "out of memory")
			 : px_write_file_atomic(path, mem.buf, mem.len, err);
	free(mem.buf);
	return rc;
}

unsigned char *px_picture_grid(const float *const *rows, int n_rows, int64_t n, int64_t per,
			       int channels, int64_t h, int64_t w, bool stretch, int64_t max_side,
			       int *W, int *H)
{
	const int64_t gap = 2, C = channels, gw = n * (w + gap) + gap, gh = n_rows * (h + gap) + gap;
	if (n < 1 || gw > max_side || gh > max_side)
		return NULL;
	unsigned char *px = malloc((size_t)(gw * gh * C));
	if (!px)
		return NULL;
	memset(px, 128, (size_t)(gw * gh * C));
	for (int r = 0; r < n_rows; r++)
		for (int64_t b = 0; b < n; b++) {
			const float *v = rows[r] + b * per;   /* [C][h][w] */
			double lo = 0, hi = 1;
			for (int64_t i = 0; stretch && i < C * h * w; i++) {
				lo = isfinite(v[i]) && v[i] < lo ? v[i] : lo;
				hi = isfinite(v[i]) && v[i] > hi ? v[i] : hi;
			}
			for (int64_t c = 0; c < C; c++)
				for (int64_t i = 0; i < h * w; i++) {
					/* pixel = 255 (v - lo) / (hi - lo), clamped to [0, 255] */
					double t = v[c * h * w + i];
					t = isfinite(t) ? (t - lo) / (hi - lo) : 0.0;
					t = t < 0 ? 0 : t > 1 ? 1 : t;
					int64_t y = gap + r * (h + gap) + i / w, x = gap + b * (w + gap) + i % w;
					px[(y * gw + x) * C + c] = (unsigned char)lround(255 * t);
				}
		}
	*W = (int)gw;
	*H = (int)gh;
	return px;
}

void px_colormap(double v, unsigned char rgb[3])
{
	/* viridis, 9 stops, linear between them */
	static const double stops[9][3] = {
		{68, 1, 84}, {71, 44, 122}, {59, 81, 139}, {44, 113, 142}, {33, 144, 141},
		{39, 173, 129}, {92, 200, 99}, {170, 220, 50}, {253, 231, 37},
	};
	if (!(v >= 0))
		v = 0;
	if (v > 1)
		v = 1;
	double x = v * 8;
	int i = (int)x;
	if (i >= 8)
		i = 7;
	double t = x - i;
	for (int c = 0; c < 3; c++)
		rgb[c] = (unsigned char)lround(stops[i][c] * (1 - t) + stops[i + 1][c] * t);
}

char *px_xml_escape(const char *s)
{
	struct px_sbuf b = {0};
	px_sbuf_add(&b, "");
	for (const char *p = s ? s : ""; *p; p++) {
		switch (*p) {
		case '&': px_sbuf_add(&b, "&amp;"); break;
		case '<': px_sbuf_add(&b, "&lt;"); break;
		case '>': px_sbuf_add(&b, "&gt;"); break;
		case '"': px_sbuf_add(&b, "&quot;"); break;
		case '\'': px_sbuf_add(&b, "&#39;"); break;
		default:
			if ((unsigned char)*p < 0x20 && *p != '\n' && *p != '\t')
				px_sbuf_add(&b, "?");  /* not representable in XML 1.0 */
			else
				px_sbuf_addn(&b, p, 1);
		}
	}
	if (b.oom) {
		px_sbuf_free(&b);
		return NULL;
	}
	return b.s;
}

static void add_text(struct px_sbuf *b, double x, double y, const char *anchor, double rot,
		     int size, const char *text)
{
	char *e = px_xml_escape(text);
	if (rot != 0)
		px_sbuf_addf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"%d\" text-anchor=\"%s\" "
			     "transform=\"rotate(%.0f %.1f %.1f)\">%s</text>\n", x, y, size, anchor, rot,
			     x, y, e ? e : "");
	else
		px_sbuf_addf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"%d\" text-anchor=\"%s\">%s</text>\n",
			     x, y, size, anchor, e ? e : "");
	free(e);
}

char *px_svg_heatmap(const float *m, int rows, int cols, const char *const *row_labels,
		     const char *const *col_labels, const char *title, const char *x_title,
		     const char *y_title)
{
	int cell = cols > 60 ? 8 : 18;
	double left = 90, top = 50, w = cols * cell, h = rows * cell;
	double width = left + w + 80, height = top + h + 70;
	struct px_sbuf b = {0};
	px_sbuf_addf(&b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
		     "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\">\n", width, height, width, height);
	px_sbuf_add(&b, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n");
	add_text(&b, width / 2, 20, "middle", 0, 14, title ? title : "");
	for (int r = 0; r < rows; r++)
		for (int c = 0; c < cols; c++) {
			unsigned char rgb[3];
			float v = m[(size_t)r * (size_t)cols + (size_t)c];
			px_colormap(v, rgb);
			px_sbuf_addf(&b, "<rect x=\"%.0f\" y=\"%.0f\" width=\"%d\" height=\"%d\" "
				     "fill=\"#%02x%02x%02x\"><title>%.3f</title></rect>\n",
				     left + c * cell, top + r * cell, cell, cell, rgb[0], rgb[1], rgb[2],
				     isfinite(v) ? v : 0.0);
		}
	for (int r = 0; row_labels && r < rows; r++)
		add_text(&b, left - 4, top + r * cell + cell * 0.7, "end", 0, 11, row_labels[r]);
	for (int c = 0; col_labels && c < cols; c++)
		add_text(&b, left + c * cell + cell * 0.6, top + h + 6, "end", -90, 11, col_labels[c]);
	add_text(&b, left + w / 2, height - 8, "middle", 0, 12, x_title ? x_title : "");
	add_text(&b, 14, top + h / 2, "middle", -90, 12, y_title ? y_title : "");
	/* colour scale */
	for (int i = 0; i < 10; i++) {
		unsigned char rgb[3];
		px_colormap(1.0 - i / 9.0, rgb);
		px_sbuf_addf(&b, "<rect x=\"%.0f\" y=\"%.0f\" width=\"14\" height=\"%.1f\" fill=\"#%02x%02x%02x\"/>\n",
			     left + w + 20, top + i * h / 10.0, h / 10.0 + 0.5, rgb[0], rgb[1], rgb[2]);
	}
	add_text(&b, left + w + 38, top + 10, "start", 0, 10, "1");
	add_text(&b, left + w + 38, top + h, "start", 0, 10, "0");
	px_sbuf_add(&b, "</svg>\n");
	if (b.oom) {
		px_sbuf_free(&b);
		return NULL;
	}
	return b.s;
}

int px_png_heatmap(const char *path, const float *m, int rows, int cols, int cell,
		   struct px_error *err)
{
	int w = cols * cell, h = rows * cell;
	unsigned char *px = malloc((size_t)w * (size_t)h * 3);
	if (!px)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	for (int y = 0; y < h; y++)
		for (int x = 0; x < w; x++)
			px_colormap(m[(size_t)(y / cell) * (size_t)cols + (size_t)(x / cell)],
				    px + ((size_t)y * (size_t)w + (size_t)x) * 3);
	int rc = px_png_write(path, w, h, 3, px, err);
	free(px);
	return rc;
}
