/* SVG charts for run reports: line charts (axes, "nice" ticks, labels, legend) and heat maps.
 *
 * Every text that reaches the output goes through px_sbuf_add_html (escaped, valid UTF-8);
 * values are clamped to +-PX_CHART_MAX and non-finite points are gaps, so no coordinate is
 * ever "nan" or "inf". The SVGs are meant to be inlined in HTML and are standalone documents
 * too (they carry the SVG namespace). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ---------------------------------------------------------------- text */
/* Bytes of the UTF-8 sequence starting with lead byte c (0: not a lead byte). */
static size_t utf8_seq_len(unsigned char c)
{
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		return 2;
	if (c >= 0xe0 && c <= 0xef)
		return 3;
	if (c >= 0xf0 && c <= 0xf4)
		return 4;
	return 0;
}

void px_sbuf_add_html(struct px_sbuf *b, const char *s)
{
	static const char fffd[] = "\xef\xbf\xbd";  /* U+FFFD, the replacement character */
	const unsigned char *p = (const unsigned char *)(s ? s : "");
	while (*p) {
		const char *rep = NULL;
		switch (*p) {
		case '&': rep = "&amp;"; break;
		case '<': rep = "&lt;"; break;
		case '>': rep = "&gt;"; break;
		case '"': rep = "&quot;"; break;
		case '\'': rep = "&#39;"; break;
		case '\r': rep = ""; break;   /* CRLF files read as LF */
		default: break;
		}
		if (rep) {
			px_sbuf_add(b, rep);
			p++;
			continue;
		}
		if ((*p < 0x20 && *p != '\n' && *p != '\t') || *p == 0x7f) {
			px_sbuf_add(b, fffd);   /* not allowed in HTML text */
			p++;
			continue;
		}
		size_t n = utf8_seq_len(*p), have = 1;
		while (have < n && p[have])
			have++;
		if (n == 0 || have < n || !px_utf8_valid((const char *)p, n)) {
			px_sbuf_add(b, fffd);
			p++;
			continue;
		}
		px_sbuf_addn(b, (const char *)p, n);
		p += n;
	}
}

char *px_html_escape(const char *s)
{
	struct px_sbuf b = {0};
	px_sbuf_add(&b, "");
	px_sbuf_add_html(&b, s);
	if (b.oom) {
		px_sbuf_free(&b);
		return NULL;
	}
	return b.s;
}

/* Tableau's ten colours: distinct, and readable on white. */
const char *px_chart_color(int i)
{
	static const char *const palette[10] = {
		"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
		"#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
	};
	return palette[(i < 0 ? -i : i) % 10];
}

/* ---------------------------------------------------------------- axes */
/* v clamped into [-PX_CHART_MAX, PX_CHART_MAX]; magnitudes below 1e-250 read as 0, so that
 * spans and steps stay normal doubles. NaN stays NaN. */
static double clampv(double v)
{
	if (v > PX_CHART_MAX)
		return PX_CHART_MAX;
	if (v < -PX_CHART_MAX)
		return -PX_CHART_MAX;
	if (fabs(v) < 1e-250)
		return 0;
	return v;
}

void px_axis_nice(double dmin, double dmax, int max_ticks, bool integer, struct px_axis *ax)
{
	if (max_ticks < 3)
		max_ticks = 3;   /* with 2 a range straddling a step multiple never fits */
	if (max_ticks > PX_AXIS_MAX_TICKS)
		max_ticks = PX_AXIS_MAX_TICKS;
	dmin = isfinite(dmin) ? clampv(dmin) : 0;
	dmax = isfinite(dmax) ? clampv(dmax) : 0;
	if (dmin > dmax) {
		double t = dmin;
		dmin = dmax;
		dmax = t;
	}
	double mag = fmax(fabs(dmin), fabs(dmax));
	if (dmax - dmin <= mag * 1e-12) {   /* constant: widen around the value */
		double d = mag > 0 ? mag * 0.1 : 1;
		if (integer && d < 1)
			d = 1;
		dmin -= d;
		dmax += d;
	}
	/* step = m 10^k, m in {1, 2, 5}: the smallest giving at most max_ticks ticks */
	static const double mult[3] = {1, 2, 5};
	double raw = (dmax - dmin) / (max_ticks - 1);
	double p = pow(10, floor(log10(raw)));
	if (integer && p < 1)
		p = 1;
	int k = 0;
	double step = p, lo = dmin, hi = dmax;
	int n = 2;
	for (int iter = 0; iter < 4000; iter++) {
		step = mult[k] * p;
		lo = floor(dmin / step + 1e-9) * step;   /* the slack absorbs rounding ... */
		hi = ceil(dmax / step - 1e-9) * step;
		if (lo > dmin)                           /* ... but never uncovers data */
			lo -= step;
		if (hi < dmax)
			hi += step;
		n = (int)llround((hi - lo) / step) + 1;
		if (n <= max_ticks)
			break;
		if (++k == 3) {
			k = 0;
			p *= 10;
		}
	}
	ax->lo = lo;
	ax->hi = hi;
	ax->step = step;
	ax->n_ticks = n;
	ax->log = false;
}

double px_axis_tick(const struct px_axis *ax, int i)
{
	double v = ax->lo + i * ax->step;
	if (fabs(v) < ax->step * 1e-9)
		v = 0;   /* not -2.7e-17 */
	return v;
}

void px_axis_label(const struct px_axis *ax, double v, char *buf, size_t n)
{
	if (ax->log) {   /* v is an exponent */
		int e = (int)llround(v);
		if (e >= -3 && e <= 4)
			snprintf(buf, n, "%g", pow(10, e));
		else
			snprintf(buf, n, "1e%d", e);
		return;
	}
	if (v == 0) {
		snprintf(buf, n, "0");
		return;
	}
	int k = (int)floor(log10(ax->step) + 1e-9);   /* step = m 10^k */
	double big = fmax(fabs(ax->lo), fabs(ax->hi));
	if (big < 1e4 && k >= -5) {   /* "0.25", "3", "1200" */
		snprintf(buf, n, "%.*f", k < 0 ? -k : 0, v);
		return;
	}
	if (big < 1e15 && k >= 0) {   /* "200k", "1.5M": thousands, millions, ... */
		static const char *const unit[5] = {"", "k", "M", "G", "T"};
		int ue = 3 * (int)floor(log10(big) / 3 + 1e-9);
		ue = ue < 3 ? 3 : ue > 12 ? 12 : ue;
		snprintf(buf, n, "%.*f%s", ue - k > 0 ? ue - k : 0, v / pow(10, ue), unit[ue / 3]);
		return;
	}
	if (big < 1e6 && k >= -5) {
		snprintf(buf, n, "%.*f", k < 0 ? -k : 0, v);
		return;
	}
	int digits = (int)floor(log10(big) + 1e-9) - k;   /* the same for every tick */
	snprintf(buf, n, "%.*e", digits < 0 ? 0 : digits > 15 ? 15 : digits, v);
}

/* ---------------------------------------------------------------- line charts */
static void text_at(struct px_sbuf *b, double x, double y, const char *anchor, const char *attrs,
		    const char *text)
{
	px_sbuf_addf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\"%s>", x, y, anchor, attrs);
	px_sbuf_add_html(b, text);
	px_sbuf_add(b, "</text>\n");
}

/* Point i of series s in data space (log applied), false when it is a gap. */
static bool point(const struct px_series *s, int i, bool log_y, double *x, double *y)
{
	double xv = s->x ? s->x[i] : (double)(i + 1), yv = s->y[i];
	if (!isfinite(xv) || !isfinite(yv))
		return false;
	if (log_y) {
		if (!(yv > 0))
			return false;
		yv = log10(yv);
	}
	*x = clampv(xv);
	*y = clampv(yv);
	return true;
}

/* Width in pixels of a legend entry, roughly (11px sans-serif). */
static double legend_width(const char *name)
{
	return 28 + 6.2 * (double)strlen(name ? name : "");
}

char *px_chart_line_svg(const struct px_line_chart *c)
{
	int W = c->width > 0 ? c->width : 560, H = c->height > 0 ? c->height : 300;
	double ML = 70, MR = 20, MB = 46;
	/* legend rows, left to right under the title */
	int legend_rows = 0;
	double lx = ML;
	for (int s = 0; s < c->n_series; s++) {
		if (!c->series[s].name)
			continue;
		double w = legend_width(c->series[s].name);
		if (legend_rows == 0 || lx + w > W - MR) {
			legend_rows++;
			lx = ML;
		}
		lx += w;
	}
	double MT = 34 + 16.0 * legend_rows;
	double x0 = ML, x1 = W - MR, y0 = MT, y1 = H - MB;
	if (y1 - y0 < 40) {   /* many legend rows: grow rather than squash the plot */
		y1 = y0 + 40;
		H = (int)(y1 + MB);
	}

	/* data ranges over the finite points */
	double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
	for (int s = 0; s < c->n_series; s++)
		for (int i = 0; i < c->series[s].n; i++) {
			double x, y;
			if (!point(&c->series[s], i, c->log_y, &x, &y))
				continue;
			xmin = fmin(xmin, x);
			xmax = fmax(xmax, x);
			ymin = fmin(ymin, y);
			ymax = fmax(ymax, y);
		}
	bool empty = !(xmin <= xmax);
	struct px_axis ax, ay;
	px_axis_nice(empty ? 0 : xmin, empty ? 1 : xmax, 8, c->x_integer, &ax);
	px_axis_nice(empty ? 0 : ymin, empty ? 1 : ymax, 6, c->log_y, &ay);
	ay.log = c->log_y;

	struct px_sbuf b = {0};
	px_sbuf_addf(&b, "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" width=\"%d\" "
		     "height=\"%d\" viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"11\" "
		     "role=\"img\">\n", W, H, W, H);
	px_sbuf_add(&b, "<title>");
	px_sbuf_add_html(&b, c->title);
	px_sbuf_add(&b, "</title>\n<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n");
	text_at(&b, x0, 18, "start", " font-size=\"14\" font-weight=\"bold\"", c->title);
	/* legend */
	int row = -1;
	lx = ML;
	for (int s = 0; s < c->n_series; s++) {
		const struct px_series *se = &c->series[s];
		if (!se->name)
			continue;
		double w = legend_width(se->name);
		if (row < 0 || lx + w > W - MR) {
			row++;
			lx = ML;
		}
		double ly = 34 + 16.0 * row - 4;
		px_sbuf_addf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
			     "stroke-width=\"2.5\"%s/>\n", lx, ly - 4, lx + 20, ly - 4,
			     px_chart_color(se->color), se->dashed ? " stroke-dasharray=\"5 3\"" : "");
		text_at(&b, lx + 24, ly, "start", "", se->name);
		lx += w;
	}
	/* grid, ticks and labels */
	double sx = (x1 - x0) / (ax.hi - ax.lo), sy = (y1 - y0) / (ay.hi - ay.lo);
	char lab[64];
	for (int i = 0; i < ay.n_ticks; i++) {
		double v = px_axis_tick(&ay, i), py = y1 - (v - ay.lo) * sy;
		px_sbuf_addf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e3e3e3\"/>\n",
			     x0, py, x1, py);
		px_axis_label(&ay, v, lab, sizeof lab);
		text_at(&b, x0 - 6, py + 4, "end", "", lab);
	}
	for (int i = 0; i < ax.n_ticks; i++) {
		double v = px_axis_tick(&ax, i), px = x0 + (v - ax.lo) * sx;
		px_sbuf_addf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#efefef\"/>\n"
			     "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#555555\"/>\n",
			     px, y0, px, y1, px, y1, px, y1 + 4);
		px_axis_label(&ax, v, lab, sizeof lab);
		text_at(&b, px, y1 + 16, "middle", "", lab);
	}
	px_sbuf_addf(&b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
		     "stroke=\"#888888\"/>\n", x0, y0, x1 - x0, y1 - y0);
	text_at(&b, (x0 + x1) / 2, H - 8, "middle", " font-size=\"12\"", c->x_title);
	px_sbuf_addf(&b, "<text x=\"14\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"12\" "
		     "transform=\"rotate(-90 14 %.1f)\">", (y0 + y1) / 2, (y0 + y1) / 2);
	px_sbuf_add_html(&b, c->y_title);
	px_sbuf_add(&b, "</text>\n");
	if (empty)
		text_at(&b, (x0 + x1) / 2, (y0 + y1) / 2, "middle", " fill=\"#888888\"",
			"no finite values to plot");
	/* the series: a path that restarts after each gap; lone points and short series get
	 * markers so that a single value is visible */
	for (int s = 0; s < c->n_series; s++) {
		const struct px_series *se = &c->series[s];
		const char *col = px_chart_color(se->color);
		bool markers = se->n <= 40;
		px_sbuf_addf(&b, "<path fill=\"none\" stroke=\"%s\" stroke-width=\"2\" "
			     "stroke-linejoin=\"round\"%s d=\"", col,
			     se->dashed ? " stroke-dasharray=\"6 4\"" : "");
		bool pen = false;
		for (int i = 0; i < se->n; i++) {
			double x, y;
			if (!point(se, i, c->log_y, &x, &y)) {
				pen = false;
				continue;
			}
			px_sbuf_addf(&b, "%s%.2f %.2f", pen ? " L" : " M", x0 + (x - ax.lo) * sx,
				     y1 - (y - ay.lo) * sy);
			pen = true;
		}
		px_sbuf_add(&b, "\"/>\n");
		for (int i = 0; i < se->n; i++) {
			double x, y, xp, yp, xn, yn;
			if (!point(se, i, c->log_y, &x, &y))
				continue;
			bool lone = (i == 0 || !point(se, i - 1, c->log_y, &xp, &yp)) &&
				    (i == se->n - 1 || !point(se, i + 1, c->log_y, &xn, &yn));
			if (markers || lone)
				px_sbuf_addf(&b, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"%.1f\" fill=\"%s\"/>\n",
					     x0 + (x - ax.lo) * sx, y1 - (y - ay.lo) * sy, lone ? 3.5 : 2.5,
					     col);
		}
	}
	px_sbuf_add(&b, "</svg>\n");
	if (b.oom) {
		px_sbuf_free(&b);
		return NULL;
	}
	return b.s;
}

/* ---------------------------------------------------------------- heat maps */
static double label_px(const char *const *labels, int n, int every)
{
	size_t w = 0;
	for (int i = 0; labels && i < n; i += every)
		if (labels[i] && strlen(labels[i]) > w)
			w = strlen(labels[i]);
	if (w > 24)
		w = 24;
	return 6.5 * (double)w;
}

/* A label cut to 24 bytes (on a UTF-8 boundary), with an ellipsis when cut. */
static void short_label(const char *s, char *buf, size_t n)
{
	size_t len = strlen(s ? s : "");
	if (len <= 24) {
		snprintf(buf, n, "%s", s ? s : "");
		return;
	}
	size_t cut = 23;
	while (cut > 0 && ((unsigned char)s[cut] & 0xc0) == 0x80)
		cut--;
	snprintf(buf, n, "%.*s\xe2\x80\xa6", (int)cut, s);
}

char *px_chart_heatmap_svg(const float *m, int rows, int cols, const char *const *row_labels,
			   const char *const *col_labels, const char *title, const char *x_title,
			   const char *y_title)
{
	if (rows < 1 || cols < 1)
		return NULL;
	int cell = (int)fmin(560.0 / cols, 420.0 / rows);
	cell = cell < 4 ? 4 : cell > 28 ? 28 : cell;
	int every = cell >= 11 ? 1 : (11 + cell - 1) / cell;   /* label every k-th row/column */
	double left = ceil(28 + label_px(row_labels, rows, every)), top = 34;   /* whole pixels: no seams */
	double w = (double)cols * cell, h = (double)rows * cell;
	double bottom = 30 + (col_labels ? label_px(col_labels, cols, every) : 14);
	double W = left + w + 90, Hh = top + h + bottom;
	if (W < 260)
		W = 260;
	/* colour scale over the finite values; anchored at 0 when none is negative */
	double lo = INFINITY, hi = -INFINITY;
	for (int64_t i = 0; i < (int64_t)rows * cols; i++)
		if (isfinite(m[i])) {
			lo = fmin(lo, clampv(m[i]));
			hi = fmax(hi, clampv(m[i]));
		}
	if (!(lo <= hi)) {
		lo = 0;
		hi = 1;
	}
	if (lo > 0)
		lo = 0;
	if (hi - lo <= fmax(fabs(hi), fabs(lo)) * 1e-12)
		hi = lo + 1;
	struct px_sbuf b = {0};
	px_sbuf_addf(&b, "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"heatmap\" width=\"%.0f\" "
		     "height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" "
		     "font-size=\"10\" role=\"img\">\n", W, Hh, W, Hh);
	px_sbuf_add(&b, "<title>");
	px_sbuf_add_html(&b, title);
	px_sbuf_add(&b, "</title>\n<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n");
	text_at(&b, left, 18, "start", " font-size=\"13\" font-weight=\"bold\"", title);
	bool tips = (int64_t)rows * cols <= 4096;
	char lab[64];
	for (int r = 0; r < rows; r++)
		for (int k = 0; k < cols; k++) {
			float v = m[(size_t)r * (size_t)cols + (size_t)k];
			char fill[8] = "#cccccc";
			if (isfinite(v)) {
				unsigned char rgb[3];
				px_colormap((clampv(v) - lo) / (hi - lo), rgb);
				snprintf(fill, sizeof fill, "#%02x%02x%02x", rgb[0], rgb[1], rgb[2]);
			}
			px_sbuf_addf(&b, "<rect x=\"%.0f\" y=\"%.0f\" width=\"%d\" height=\"%d\" fill=\"%s\"",
				     left + k * cell, top + r * cell, cell, cell, fill);
			if (tips) {
				snprintf(lab, sizeof lab, isfinite(v) ? "%.4g" : "not finite", (double)v);
				px_sbuf_add(&b, "><title>");
				if (row_labels && row_labels[r]) {
					px_sbuf_add_html(&b, row_labels[r]);
					px_sbuf_add(&b, " / ");
				}
				if (col_labels && col_labels[k]) {
					px_sbuf_add_html(&b, col_labels[k]);
					px_sbuf_add(&b, ": ");
				}
				px_sbuf_add(&b, lab);
				px_sbuf_add(&b, "</title></rect>\n");
			} else {
				px_sbuf_add(&b, "/>\n");
			}
		}
	for (int r = 0; row_labels && r < rows; r += every) {
		short_label(row_labels[r], lab, sizeof lab);
		text_at(&b, left - 4, top + r * cell + cell / 2.0 + 3.5, "end", "", lab);
	}
	for (int k = 0; col_labels && k < cols; k += every) {
		double x = left + k * cell + cell / 2.0 + 3.5, y = top + h + 4;
		short_label(col_labels[k], lab, sizeof lab);
		px_sbuf_addf(&b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" "
			     "transform=\"rotate(-90 %.1f %.1f)\">", x, y, x, y);
		px_sbuf_add_html(&b, lab);
		px_sbuf_add(&b, "</text>\n");
	}
	text_at(&b, left + w / 2, Hh - 8, "middle", " font-size=\"11\"", x_title);
	px_sbuf_addf(&b, "<text x=\"12\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"11\" "
		     "transform=\"rotate(-90 12 %.1f)\">", top + h / 2, top + h / 2);
	px_sbuf_add_html(&b, y_title);
	px_sbuf_add(&b, "</text>\n");
	/* colour bar: hi at the top */
	double bx = left + w + 16, bh = h < 60 ? 60 : h;
	for (int i = 0; i < 16; i++) {
		unsigned char rgb[3];
		px_colormap(1.0 - i / 15.0, rgb);
		px_sbuf_addf(&b, "<rect x=\"%.1f\" y=\"%.2f\" width=\"12\" height=\"%.2f\" "
			     "fill=\"#%02x%02x%02x\"/>\n", bx, top + i * bh / 16, bh / 16 + 0.5, rgb[0],
			     rgb[1], rgb[2]);
	}
	snprintf(lab, sizeof lab, "%.3g", hi);
	text_at(&b, bx + 16, top + 8, "start", "", lab);
	snprintf(lab, sizeof lab, "%.3g", lo);
	text_at(&b, bx + 16, top + bh, "start", "", lab);
	px_sbuf_add(&b, "</svg>\n");
	if (b.oom) {
		px_sbuf_free(&b);
		return NULL;
	}
	return b.s;
}
