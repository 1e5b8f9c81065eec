/* Run reports: the chart writer (axes, "nice" ticks, NaN-free paths, escaping), the host's
 * figure services of ABI 1.1, report.html of real runs through the plexus command, the
 * plugins' figures, `plexus report` (rebuild, comparison, hostile run directories), and the
 * page rendered in headless Chromium. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli_util.h"
#include "internal.h"

/* ---------------------------------------------------------------- helpers */
static char *read_all(const char *path, size_t *len)
{
	char *d = NULL;
	size_t n = 0;
	struct px_error e;
	if (px_read_file(path, 64u << 20, &d, &n, &e))
		return NULL;
	if (len)
		*len = n;
	return d;
}

static void write_all(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	fclose(f);
}

static struct px_json *read_json_file(const char *path)
{
	size_t n;
	char *t = read_all(path, &n);
	ck_assert_msg(t != NULL, "cannot read %s", path);
	struct px_json *j = NULL;
	struct px_error e;
	int rc = px_json_parse(t, n, path, &j, &e);
	free(t);
	ck_assert_msg(rc == 0, "%s: %s", path, e.msg);
	return j;
}

static bool contains_ci(const char *hay, const char *needle)
{
	return strcasestr(hay, needle) != NULL;
}

/* Every number of every path's d="..." and every circle's cx/cy lies in [0, w] x [0, h];
 * returns the number of coordinates checked. */
static int check_coordinates(const char *svg, double w, double h)
{
	int count = 0;
	for (const char *p = strstr(svg, " d=\""); p; p = strstr(p, " d=\"")) {
		p += 4;
		int k = 0;
		while (*p && *p != '"') {
			if (*p == 'M' || *p == 'L' || *p == ' ') {
				p++;
				continue;
			}
			char *end;
			double v = strtod(p, &end);
			ck_assert_msg(end != p, "unexpected path text: %.20s", p);
			ck_assert_msg(isfinite(v), "non-finite coordinate");
			ck_assert_msg(v >= -0.01 && v <= (k % 2 ? h : w) + 0.01,
				      "coordinate %g outside the %gx%g chart", v, w, h);
			k++;
			count++;
			p = end;
		}
	}
	static const char *const attrs[2] = {" cx=\"", " cy=\""};
	for (int a = 0; a < 2; a++)
		for (const char *p = strstr(svg, attrs[a]); p; p = strstr(p + 1, attrs[a])) {
			double v = strtod(p + 5, NULL);
			ck_assert(isfinite(v) && v >= 0 && v <= (a ? h : w));
			count++;
		}
	return count;
}

/* ---------------------------------------------------------------- axes */
START_TEST(test_axis_ticks_are_nice_steps_covering_known_ranges)
{
	static const struct {
		double dmin, dmax;
		int max;
		bool integer;
		double lo, hi, step;
		int n;
	} cases[] = {
		{0, 1, 6, false, 0, 1, 0.2, 6},
		{0.13, 0.87, 6, false, 0, 1, 0.2, 6},
		{3, 97, 6, false, 0, 100, 20, 6},
		{-0.7, 0.3, 6, false, -1, 0.5, 0.5, 4},
		{1, 6, 8, true, 1, 6, 1, 6},          /* six epochs: every epoch */
		{1, 1, 8, true, 0, 2, 1, 3},          /* one epoch */
		{1, 100, 8, true, 0, 100, 20, 6},
		{2.5e-4, 9.1e-4, 6, false, 2e-4, 1e-3, 2e-4, 5},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct px_axis ax;
		px_axis_nice(cases[i].dmin, cases[i].dmax, cases[i].max, cases[i].integer, &ax);
		ck_assert_msg(fabs(ax.lo - cases[i].lo) < 1e-12 && fabs(ax.hi - cases[i].hi) < 1e-12 &&
			      fabs(ax.step - cases[i].step) < 1e-12 && ax.n_ticks == cases[i].n,
			      "case %zu [%g, %g]: got lo %g hi %g step %g n %d", i, cases[i].dmin,
			      cases[i].dmax, ax.lo, ax.hi, ax.step, ax.n_ticks);
	}
}
END_TEST

START_TEST(test_axis_ticks_cover_any_range_with_distinct_labels)
{
	struct px_rng r;
	px_rng_seed(&r, 8);
	for (int it = 0; it < 20000; it++) {
		double e = px_rng_uniform(&r) * 500 - 250;   /* magnitudes 1e-250 .. 1e250 */
		double a = (px_rng_uniform(&r) * 2 - 1) * pow(10, e);
		double b = a + px_rng_uniform(&r) * pow(10, e - px_rng_uniform(&r) * 6);
		int max = 3 + (int)(px_rng_uniform(&r) * 10);
		bool integer = it % 7 == 0;
		struct px_axis ax;
		px_axis_nice(a, b, max, integer, &ax);
		ck_assert(isfinite(ax.lo) && isfinite(ax.hi) && isfinite(ax.step) && ax.step > 0);
		ck_assert_msg(ax.lo <= a + 1e-250 && ax.hi >= b - 1e-250,
			      "[%g, %g] not covered by [%g, %g]", a, b, ax.lo, ax.hi);
		ck_assert_msg(ax.n_ticks >= 2 && ax.n_ticks <= max, "%d ticks for at most %d",
			      ax.n_ticks, max);
		double m = ax.step / pow(10, floor(log10(ax.step) + 1e-9));
		ck_assert_msg(fabs(m - 1) < 1e-6 || fabs(m - 2) < 1e-6 || fabs(m - 5) < 1e-6,
			      "step %g is not 1, 2 or 5 times a power of ten", ax.step);
		ck_assert(!integer || ax.step >= 1);
		/* not too wide (values below 1e-250 count as 0, PX_CHART_MAX's counterpart) */
		if (b - a > 1e-9 * fmax(fabs(a), fabs(b)) && !integer && fmax(fabs(a), fabs(b)) > 1e-240)
			ck_assert_msg(ax.hi - ax.lo <= 10 * (b - a), "axis [%g, %g] for data [%g, %g]",
				      ax.lo, ax.hi, a, b);
		char prev[64] = "", lab[64];
		for (int t = 0; t < ax.n_ticks; t++) {
			px_axis_label(&ax, px_axis_tick(&ax, t), lab, sizeof lab);
			ck_assert_msg(strcmp(lab, prev), "tick labels repeat ('%s') on [%g, %g] step %g", lab,
				      ax.lo, ax.hi, ax.step);
			ck_assert(!contains_ci(lab, "nan") && !contains_ci(lab, "inf"));
			snprintf(prev, sizeof prev, "%s", lab);
		}
	}
}
END_TEST

START_TEST(test_axis_widens_constant_empty_and_nonfinite_ranges)
{
	struct px_axis ax;
	px_axis_nice(0, 0, 6, false, &ax);
	ck_assert(ax.lo < 0 && ax.hi > 0);
	px_axis_nice(5, 5, 6, false, &ax);
	ck_assert(ax.lo < 5 && ax.hi > 5 && ax.hi - ax.lo < 5);
	px_axis_nice(-3e-7, -3e-7, 6, false, &ax);
	ck_assert(ax.lo < -3e-7 && ax.hi > -3e-7);
	px_axis_nice(NAN, INFINITY, 6, false, &ax);
	ck_assert(isfinite(ax.lo) && isfinite(ax.hi) && ax.lo < ax.hi);
	px_axis_nice(-1e308, 1e308, 6, false, &ax);   /* clamped to +-1e300 */
	ck_assert(isfinite(ax.lo) && isfinite(ax.hi) && isfinite(ax.hi - ax.lo));
}
END_TEST

START_TEST(test_tick_labels_show_the_decimals_the_step_needs)
{
	struct px_axis ax;
	char lab[64];
	px_axis_nice(0, 1, 6, false, &ax);
	const char *want[6] = {"0", "0.2", "0.4", "0.6", "0.8", "1.0"};
	for (int t = 0; t < ax.n_ticks; t++) {
		px_axis_label(&ax, px_axis_tick(&ax, t), lab, sizeof lab);
		ck_assert_str_eq(lab, want[t]);
	}
	px_axis_nice(0, 2.5e7, 6, false, &ax);   /* thousands, millions: SI suffixes */
	px_axis_label(&ax, px_axis_tick(&ax, 1), lab, sizeof lab);
	ck_assert_str_eq(lab, "5M");
	px_axis_nice(0, 7e5, 6, false, &ax);
	px_axis_label(&ax, px_axis_tick(&ax, 1), lab, sizeof lab);
	ck_assert_str_eq(lab, "200k");
	px_axis_nice(0, 1.5e6, 6, false, &ax);
	px_axis_label(&ax, px_axis_tick(&ax, 1), lab, sizeof lab);
	ck_assert_str_eq(lab, "0.5M");
	px_axis_nice(0, 2.2e-7, 6, false, &ax);   /* the same mantissa digits on every tick */
	px_axis_label(&ax, px_axis_tick(&ax, 1), lab, sizeof lab);
	ck_assert_str_eq(lab, "5.0e-08");
	px_axis_label(&ax, px_axis_tick(&ax, 4), lab, sizeof lab);
	ck_assert_str_eq(lab, "2.0e-07");
	ax.log = true;
	px_axis_label(&ax, -3, lab, sizeof lab);
	ck_assert_str_eq(lab, "0.001");
	px_axis_label(&ax, -6, lab, sizeof lab);
	ck_assert_str_eq(lab, "1e-6");
	px_axis_label(&ax, 2, lab, sizeof lab);
	ck_assert_str_eq(lab, "100");
}
END_TEST

/* ---------------------------------------------------------------- line charts */
START_TEST(test_line_chart_paths_are_finite_for_any_series)
{
	static const double constant[5] = {0.5, 0.5, 0.5, 0.5, 0.5};
	static const double one[1] = {3.25};
	static const double huge[4] = {1e300, -1e300, 1e308, -1e308};
	static const double tiny[3] = {1e-300, 2e-300, -5e-310};
	const double gaps[6] = {1, NAN, 2, INFINITY, -INFINITY, 3};
	const double nothing[3] = {NAN, NAN, NAN};
	const double xs[4] = {1, 2, NAN, 4};
	double rnd[200];
	struct px_rng r;
	px_rng_seed(&r, 3);
	for (int i = 0; i < 200; i++)
		rnd[i] = px_rng_normal(&r) * pow(10, px_rng_uniform(&r) * 40 - 20);
	const struct px_series set[][2] = {
		{{"constant", NULL, constant, 5, 0, false}, {NULL, NULL, NULL, 0, 1, false}},
		{{"one point", NULL, one, 1, 0, false}, {NULL, NULL, NULL, 0, 1, false}},
		{{"huge", NULL, huge, 4, 0, false}, {"tiny", NULL, tiny, 3, 1, true}},
		{{"gaps", NULL, gaps, 6, 0, false}, {"x gaps", xs, constant, 4, 1, false}},
		{{"nothing", NULL, nothing, 3, 0, false}, {"empty", NULL, NULL, 0, 1, false}},
		{{"random", NULL, rnd, 200, 0, false}, {"one", NULL, one, 1, 1, false}},
	};
	for (size_t k = 0; k < sizeof set / sizeof set[0]; k++)
		for (int log_y = 0; log_y < 2; log_y++) {
			struct px_line_chart c = {
				.title = "a chart", .x_title = "epoch", .y_title = "loss", .width = 500,
				.height = 280, .log_y = log_y, .x_integer = k == 0, .series = set[k],
				.n_series = set[k][1].name ? 2 : 1,
			};
			char *svg = px_chart_line_svg(&c);
			ck_assert_ptr_nonnull(svg);
			ck_assert_msg(!contains_ci(svg, "nan") && !contains_ci(svg, "inf"),
				      "set %zu (log %d) wrote a non-finite number:\n%s", k, log_y, svg);
			check_coordinates(svg, 500, 280);
			if (k == 1 || (k == 0 && !log_y))   /* a lone point is drawn, not lost */
				ck_assert_ptr_nonnull(strstr(svg, "<circle"));
			if (k == 4)
				ck_assert_ptr_nonnull(strstr(svg, "no finite values to plot"));
			free(svg);
		}
}
END_TEST

START_TEST(test_line_chart_maps_points_onto_the_axes)
{
	/* y = 0, 1, 2 at x = 1, 2, 3: the path rises by equal steps from the bottom left */
	static const double y[3] = {0, 1, 2};
	struct px_series s = {"s", NULL, y, 3, 0, false};
	struct px_line_chart c = {.title = "t", .width = 400, .height = 300, .series = &s,
				  .n_series = 1, .x_integer = true};
	char *svg = px_chart_line_svg(&c);
	const char *d = strstr(svg, " d=\"");
	ck_assert_ptr_nonnull(d);
	double px[3], py[3];
	ck_assert_int_eq(sscanf(d + 4, " M%lf %lf L%lf %lf L%lf %lf", &px[0], &py[0], &px[1], &py[1],
				&px[2], &py[2]), 6);
	ck_assert_double_eq_tol(px[1] - px[0], px[2] - px[1], 0.02);
	ck_assert_double_eq_tol(py[0] - py[1], py[1] - py[2], 0.02);
	ck_assert(py[0] > py[2] && px[0] < px[2]);
	ck_assert_ptr_nonnull(strstr(svg, ">2.0</text>"));   /* the top y tick */
	free(svg);
}
END_TEST

/* ---------------------------------------------------------------- escaping */
START_TEST(test_every_text_from_a_pipeline_or_data_is_escaped)
{
	const char *evil = "<script>alert(1)</script> & \"q\" 'x' \x01\xff\xfe";
	static const double y[2] = {1, 2};
	struct px_series s = {evil, NULL, y, 2, 0, false};
	struct px_line_chart c = {.title = evil, .x_title = evil, .y_title = evil, .series = &s,
				  .n_series = 1};
	char *svg = px_chart_line_svg(&c);
	const float m[4] = {0.1f, 0.2f, 0.3f, 0.4f};
	const char *labels[2] = {"<script>", "a&b"};
	char *hm = px_chart_heatmap_svg(m, 2, 2, labels, labels, evil, evil, evil);
	char *html = px_html_escape(evil);
	const char *out[3] = {svg, hm, html};
	for (int i = 0; i < 3; i++) {
		ck_assert_ptr_nonnull(out[i]);
		ck_assert_msg(!strstr(out[i], "<script") && !strstr(out[i], "</script"),
			      "raw markup in output %d", i);
		ck_assert_ptr_nonnull(strstr(out[i], "&lt;script&gt;"));
		ck_assert(px_utf8_valid(out[i], strlen(out[i])));
		ck_assert_ptr_null(strchr(out[i], '\x01'));
	}
	ck_assert_str_eq(html, "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;q&quot; &#39;x&#39; "
			       "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
	ck_assert_ptr_nonnull(strstr(hm, "a&amp;b"));
	free(svg);
	free(hm);
	free(html);
}
END_TEST

START_TEST(test_heatmap_greys_nonfinite_cells_and_scales_over_the_rest)
{
	const float m[6] = {0.0f, 0.5f, NAN, 1.0f, INFINITY, 0.25f};
	char *svg = px_chart_heatmap_svg(m, 2, 3, NULL, NULL, "w", "x", "y");
	ck_assert_ptr_nonnull(svg);
	ck_assert(!contains_ci(svg, "nan") && !contains_ci(svg, ">inf"));
	ck_assert_ptr_nonnull(strstr(svg, "fill=\"#cccccc\""));   /* the NaN and Inf cells */
	unsigned char lo[3], hi[3];
	px_colormap(0, lo);
	px_colormap(1, hi);
	char want[32];
	snprintf(want, sizeof want, "fill=\"#%02x%02x%02x\"><title>0<", lo[0], lo[1], lo[2]);
	ck_assert_msg(strstr(svg, want), "0 is not the bottom colour");
	snprintf(want, sizeof want, "fill=\"#%02x%02x%02x\"><title>1<", hi[0], hi[1], hi[2]);
	ck_assert_msg(strstr(svg, want), "1 is not the top colour");
	free(svg);
	ck_assert_ptr_null(px_chart_heatmap_svg(m, 0, 3, NULL, NULL, "", "", ""));
}
END_TEST

/* ---------------------------------------------------------------- the host ABI */
START_TEST(test_host_offers_the_figure_services_of_abi_1_1)
{
	struct px_registry *r = px_registry_new();
	ck_assert_ptr_nonnull(r);
	ck_assert_int_eq(r->host.abi_minor, 1);
	ck_assert(PX_HOST_HAS(&r->host, figure_batch) && PX_HOST_HAS(&r->host, figure_image) &&
		  PX_HOST_HAS(&r->host, figure_heatmap) && PX_HOST_HAS(&r->host, figure_series));
	/* outside a figure pass: no batch, and the services refuse */
	ck_assert_ptr_null(r->host.figure_batch(&r->host));
	unsigned char px[4] = {0};
	ck_assert_int_eq(r->host.figure_image(&r->host, "n", "t", 2, 2, 1, px), PX_ERR_INVALID);
	double y[2] = {1, 2};
	ck_assert_int_eq(r->host.figure_series(&r->host, "n", "t", "x", "y", y, 2), PX_ERR_INVALID);
	/* a host table of ABI 1.0 (shorter) has none of them, whatever lies past its end */
	struct px_host old = r->host;
	old.struct_size = offsetof(struct px_host, figure_batch);
	ck_assert(!PX_HOST_HAS(&old, figure_batch) && !PX_HOST_HAS(&old, figure_series));
	ck_assert(!PX_HOST_HAS((const struct px_host *)NULL, figure_batch));
	px_registry_free(r);
}
END_TEST

START_TEST(test_a_plugin_built_for_abi_1_0_loads_into_this_host)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/tests/fake-abi10.so", getenv("PLEXUS_BUILD"));
	struct px_registry *r = px_registry_new();
	struct px_error e = {0};
	ck_assert_msg(px_registry_load_file(r, path, &e) == 0, "%s", e.msg);
	ck_assert_int_eq(r->plugins[r->n_plugins - 1]->desc->abi_minor, 0);
	ck_assert_ptr_nonnull(px_registry_find(r, PX_E_LAYER, "fake_scale", NULL, &e));
	px_registry_free(r);
}
END_TEST

/* ---------------------------------------------------------------- runs */
static void path_in(char *buf, size_t n, const char *dir, const char *file)
{
	snprintf(buf, n, "%s/%s", dir, file);
}

static char *report_of(const char *dir)
{
	char p[256];
	path_in(p, sizeof p, dir, "report.html");
	char *html = read_all(p, NULL);
	ck_assert_msg(html != NULL, "no %s", p);
	return html;
}

/* The final metric `key` of a run's summary.json formatted as the report shows it. */
static void final_metric(const char *dir, const char *key, char *buf, size_t n)
{
	char p[256];
	path_in(p, sizeof p, dir, "summary.json");
	struct px_json *j = read_json_file(p);
	const struct px_json *f = px_json_get(j, "final");
	ck_assert_ptr_nonnull(f);
	const struct px_json *v = px_json_get(f, key);
	ck_assert_msg(v && (v->type == PX_JSON_FLOAT || v->type == PX_JSON_INT), "no final %s", key);
	snprintf(buf, n, "%.6g", v->f);
	px_json_free(j);
}

START_TEST(test_training_writes_a_self_contained_report_of_the_run)
{
	char d[64], p[256], loss[64];
	temp_dir(d, sizeof d);
	struct run r;
	ck_assert_int_eq(run_plexus(&r, "train", "tests/pipelines/tiny.yaml", "--run-dir", d, NULL), 0);
	ck_assert_ptr_nonnull(strstr(r.err, "report.html"));
	char *html = report_of(d);
	/* the run, its curves, the model summary and the final metrics */
	ck_assert_ptr_nonnull(strstr(html, "<h1>tiny</h1>"));
	static const char *const want[] = {
		"loss per epoch", "accuracy per epoch", "learning rate", "gradient norm",
		"throughput", "wall time per epoch", "<td>hidden</td>", "<td>act</td>", "<td>drop</td>",
		"<td>head</td>", "<td>linear</td>", "[B,16]", "[B,3]", ">131<", "Final metrics",
		"name: tiny", "val_loss",
	};
	for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
		ck_assert_msg(strstr(html, want[i]), "report.html lacks '%s'", want[i]);
	final_metric(d, "loss", loss, sizeof loss);
	char cell[96];
	snprintf(cell, sizeof cell, ">%s<", loss);
	ck_assert_msg(strstr(html, cell), "the final validation loss %s is not shown", loss);
	/* self-contained: no script, no external resource, a policy that forbids both */
	ck_assert(!contains_ci(html, "<script") && !contains_ci(html, "href=") &&
		  !contains_ci(html, "src=\"http") && !contains_ci(html, "url("));
	ck_assert_ptr_nonnull(strstr(html, "Content-Security-Policy"));
	ck_assert_ptr_nonnull(strstr(html, "<svg"));
	ck_assert(!contains_ci(html, "nan") || !strstr(html, "\"nan"));
	ck_assert(px_utf8_valid(html, strlen(html)));
	free(html);
	/* the model summary the report was made from */
	path_in(p, sizeof p, d, "summary.json");
	struct px_json *j = read_json_file(p);
	ck_assert_str_eq(px_json_get(j, "status")->s, "completed");
	ck_assert_int_eq(px_json_get(j, "nodes")->n, 4);
	ck_assert_int_eq(px_json_get(j, "total_params")->i, 131);
	ck_assert_str_eq(px_json_get(px_json_get(j, "final"), "split")->s, "val");
	px_json_free(j);
	path_in(p, sizeof p, d, "figures/index.json");
	j = read_json_file(p);
	ck_assert_int_eq(px_json_get(j, "figures")->n, 0);   /* built-in layers draw nothing */
	px_json_free(j);
}
END_TEST

START_TEST(test_markup_in_a_pipeline_shows_as_text)
{
	char d[64], p[256];
	temp_dir(d, sizeof d);
	path_in(p, sizeof p, d, "evil.yaml");
	write_all(p, "name: \"tiny <b>&amp;</b>\"\nseed: 1\n"
		     "data:\n  train: {source: csv, path: tests/data/tiny.csv, header: true}\n"
		     "  val_split: 0.2\n"
		     "model:\n  - {name: \"<script>\", kind: linear, units: 4}\n"
		     "  - {name: head, kind: linear, units: 3}\n"
		     "loss: {kind: cross_entropy, input: head, target: label}\n"
		     "train: {epochs: 1, batch: 8, optimizer: {kind: adam, lr: 0.01}}\n");
	struct run r;
	ck_assert_msg(run_plexus(&r, "train", p, "--run-dir", d, NULL) == 0, "%s", r.err);
	char *html = report_of(d);
	ck_assert_msg(!contains_ci(html, "<script") && !strstr(html, "<b>&amp;"),
		      "markup from the pipeline reached the page");
	ck_assert_ptr_nonnull(strstr(html, "<td>&lt;script&gt;</td>"));
	ck_assert_ptr_nonnull(strstr(html, "<h1>tiny &lt;b&gt;&amp;amp;&lt;/b&gt;</h1>"));
	ck_assert_ptr_nonnull(strstr(html, "input \xe2\x86\x90 &lt;script&gt;"));   /* head's input */
	ck_assert_ptr_nonnull(strstr(html, "name: &quot;tiny &lt;b&gt;&amp;amp;&lt;/b&gt;&quot;"));
	free(html);
}
END_TEST

START_TEST(test_report_command_rebuilds_the_same_page_from_the_run_files)
{
	char d[64], p[256];
	temp_dir(d, sizeof d);
	struct run r;
	ck_assert_int_eq(run_plexus(&r, "train", "tests/pipelines/tiny.yaml", "--run-dir", d,
				    "--set", "train.epochs=2", NULL), 0);
	char *before = report_of(d);
	path_in(p, sizeof p, d, "report.html");
	ck_assert_int_eq(unlink(p), 0);
	ck_assert_int_eq(run_plexus(&r, "report", d, NULL), 0);
	ck_assert_ptr_nonnull(strstr(r.out, "report.html"));
	char *after = report_of(d);
	ck_assert_str_eq(before, after);
	free(before);
	free(after);
	/* usage and missing directories */
	ck_assert_int_eq(run_plexus(&r, "report", NULL), 2);
	ck_assert_int_eq(run_plexus(&r, "report", "/nonexistent-run", NULL), 1);
	ck_assert_ptr_nonnull(strstr(r.err, "/nonexistent-run: not a directory"));
	char empty[64];
	temp_dir(empty, sizeof empty);
	ck_assert_int_eq(run_plexus(&r, "report", empty, NULL), 2);
	ck_assert_ptr_nonnull(strstr(r.err, "not a plexus run directory"));
}
END_TEST

static int count(const char *hay, const char *needle)
{
	int n = 0;
	for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
		n++;
	return n;
}

START_TEST(test_report_overlays_the_curves_of_two_runs)
{
	char a[64], b[64], out[128];
	temp_dir(a, sizeof a);
	temp_dir(b, sizeof b);
	struct run r;
	ck_assert_int_eq(run_plexus(&r, "train", "tests/pipelines/tiny.yaml", "--run-dir", a,
				    "--set", "train.epochs=3", NULL), 0);
	ck_assert_int_eq(run_plexus(&r, "train", "tests/pipelines/tiny.yaml", "--run-dir", b,
				    "--set", "train.epochs=4", "--set", "train.optimizer.lr=0.001", NULL), 0);
	snprintf(out, sizeof out, "%s/compare.html", a);
	ck_assert_int_eq(run_plexus(&r, "report", a, b, "--out", out, NULL), 0);
	char *html = read_all(out, NULL);
	ck_assert_ptr_nonnull(html);
	ck_assert_ptr_nonnull(strstr(html, "tiny #1 vs tiny #2"));
	ck_assert_ptr_nonnull(strstr(html, "tiny #1: train"));
	ck_assert_ptr_nonnull(strstr(html, "tiny #2: validation"));
	/* the loss chart: two runs x (train dashed, validation solid) */
	const char *loss = strstr(html, "<title>loss per epoch</title>");
	ck_assert_ptr_nonnull(loss);
	const char *end = strstr(loss, "</svg>");
	char *chart = strndup(loss, (size_t)(end - loss));
	ck_assert_int_eq(count(chart, "<path "), 4);
	ck_assert_int_eq(count(chart, "stroke-dasharray=\"6 4\" d="), 2);
	free(chart);
	char la[64], lb[64], cell[80];
	final_metric(a, "loss", la, sizeof la);
	final_metric(b, "loss", lb, sizeof lb);
	snprintf(cell, sizeof cell, ">%s<", la);
	ck_assert(strstr(html, cell));
	snprintf(cell, sizeof cell, ">%s<", lb);
	ck_assert(strstr(html, cell));
	free(html);
}
END_TEST

START_TEST(test_report_of_a_stopped_run_shows_why)
{
	char d[64];
	temp_dir(d, sizeof d);
	struct run r;
	ck_assert_int_eq(run_plexus(&r, "train", "tests/pipelines/tiny.yaml", "--run-dir", d,
				    "--set", "train.optimizer.kind=sgd", "--set", "train.optimizer.lr=1e300",
				    NULL), 1);
	char *html = report_of(d);
	ck_assert_ptr_nonnull(strstr(html, "Training stopped:"));
	ck_assert_ptr_nonnull(strstr(html, "NaN/Inf in the"));
	ck_assert_ptr_nonnull(strstr(html, "no figures: training did not complete"));
	free(html);
}
END_TEST

START_TEST(test_report_treats_run_files_as_untrusted)
{
	char d[64], p[256];
	temp_dir(d, sizeof d);
	path_in(p, sizeof p, d, "metrics.csv");
	write_all(p, "epoch,<script>x</script>,val_loss,train_loss\n1,abc,nan,1e999\n"
		     "2,,0.5,\n1,3,0.25,0.5\n\n");
	path_in(p, sizeof p, d, "summary.json");
	write_all(p, "{\"name\": \"<script>alert(1)</script>\", \"status\": \"completed\", "
		     "\"nodes\": [{\"name\": \"<script>\", \"kind\": \"<img src=x>\", \"params\": 3}, 7], "
		     "\"final\": {\"split\": \"test\", \"loss\": 0.125, \"metrics\": {\"<b>\": 1}}}");
	path_in(p, sizeof p, d, "pipeline.yaml");
	write_all(p, "name: x\n# </pre><script>alert(2)</script>\n");
	path_in(p, sizeof p, d, "figures");
	mkdir(p, 0755);
	path_in(p, sizeof p, d, "figures/fig-001.json");
	write_all(p, "{\"rows\": 100000, \"cols\": 100000, \"values\": []}");
	path_in(p, sizeof p, d, "figures/index.json");
	write_all(p, "{\"figures\": [{\"node\": \"<script>\", \"type\": \"image\", "
		     "\"title\": \"t\", \"file\": \"../../../../etc/passwd\"}, "
		     "{\"node\": \"n\", \"type\": \"heatmap\", \"title\": \"t\", \"file\": \"fig-001.json\"}, "
		     "{\"node\": \"n\", \"type\": \"series\", \"title\": \"t\", \"file\": \"fig-002.json\"}], "
		     "\"notes\": [\"<script>\"]}");
	struct run r;
	ck_assert_msg(run_plexus(&r, "report", d, NULL) == 0, "%s", r.err);
	char *html = report_of(d);
	ck_assert_msg(!contains_ci(html, "<script") && !contains_ci(html, "<img src=x") &&
		      !strstr(html, "<b>"), "markup from the run's files reached the page");
	ck_assert_ptr_nonnull(strstr(html, "&lt;script&gt;alert(1)&lt;/script&gt;"));
	ck_assert_int_eq(count(html, "figure file missing or malformed"), 3);
	ck_assert_ptr_null(strstr(html, "root:"));
	/* the repeated epoch 1 replaced the rows before it: one row left, epoch 1 */
	ck_assert_int_eq(count(html, "<tr><td class=\"num\">1</td>"), 1);
	ck_assert_int_eq(count(html, "<tr><td class=\"num\">2</td>"), 0);
	ck_assert(!contains_ci(html, ">nan<") && !contains_ci(html, ">inf<"));
	ck_assert(px_utf8_valid(html, strlen(html)));
	free(html);
}
END_TEST

/* ---------------------------------------------------------------- plugins' figures */
/* The run's name and a node's name carry markup, which must show as text. */
static const char dates_yaml[] =
	"name: \"dates <mini> & co\"\nseed: 3\n"
	"data:\n  train: {source: dates, n: 256}\n  test:  {source: dates, n: 32}\n"
	"model:\n"
	"  - {name: \"<src>\", kind: embedding, vocab: $x_vocab, dim: 16}\n"
	"  - {name: enc, kind: lstm, hidden: 16, bidirectional: true}\n"
	"  - {name: dec, kind: attention_decoder, targets: label, memory: enc.seq, init: enc.state,\n"
	"     init_cell: enc.cell, cell: lstm, hidden: 32, vocab: $y_vocab,\n"
	"     attention: luong, score: general, max_len: 12}\n"
	"loss: {kind: cross_entropy, input: dec, target: label}\n"
	"train: {epochs: 2, batch: 64, optimizer: {kind: adam, lr: 3e-3}}\n"
	"eval: {generate: dec.tokens}\n";

static const char seg_yaml[] =
	"name: seg-mini\nseed: 21\n"
	"data:\n  train: {source: shapes, n: 64, size: 16, max_shapes: 2, noise: 0.1}\n"
	"  test:  {source: shapes, n: 16, size: 16, max_shapes: 2, noise: 0.1}\n"
	"model:\n"
	"  - {name: e1, kind: conv2d, out_channels: 8, kernel: 3, padding: 1}\n"
	"  - {name: r1, kind: relu}\n"
	"  - {name: scores, kind: conv2d, out_channels: $classes, kernel: 1}\n"
	"loss: {kind: cross_entropy, input: scores, target: label}\n"
	"train: {epochs: 1, batch: 16, optimizer: {kind: adam, lr: 3e-3}}\n";

static const char dae_yaml[] =
	"name: dae-mini\nseed: 3\n"
	"data:\n  train: {source: shapes, n: 64, size: 16, max_shapes: 2, noise: 0.0}\n"
	"  test:  {source: shapes, n: 16, size: 16, max_shapes: 2, noise: 0.0}\n  as: flat\n"
	"model:\n"
	"  - {name: noise, kind: masking_noise, fraction: 0.3}\n"
	"  - {name: ae, kind: autoencoder, sizes: [256, 32]}\n"
	"loss: {kind: mse, input: ae.recon, target: input}\n"
	"train: {epochs: 1, batch: 16, optimizer: {kind: adam, lr: 1e-3}}\n";

static const char pool_yaml[] =
	"name: pool-mini\nseed: 5\n"
	"data:\n"
	"  train: {source: idx, images: /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz,\n"
	"          labels: /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz, limit: 128}\n"
	"  test: {source: idx, images: /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz,\n"
	"         labels: /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz, limit: 32}\n"
	"  scale: 1/255\n  as: sequence\n"
	"model:\n"
	"  - {name: enc, kind: lstm, hidden: 8}\n"
	"  - {name: pool, kind: attention_pool, input: enc.seq, units: 8}\n"
	"  - {name: head, kind: linear, units: $classes}\n"
	"loss: {kind: cross_entropy, input: head, target: label}\n"
	"train: {epochs: 1, batch: 32, optimizer: {kind: adam, lr: 3e-3}}\n";

static struct run last_train;   /* the output of train_figures' plexus train */

/* Train `yaml` into a new run directory dir; returns the parsed figures/index.json. */
static struct px_json *train_figures(const char *yaml, char *dir, size_t n)
{
	char p[256];
	temp_dir(dir, n);
	path_in(p, sizeof p, dir, "pipeline-in.yaml");
	write_all(p, yaml);
	struct run *r = &last_train;
	ck_assert_msg(run_plexus(r, "train", p, "--run-dir", dir, NULL) == 0, "%s", r->err);
	path_in(p, sizeof p, dir, "figures/index.json");
	struct px_json *j = read_json_file(p);
	const struct px_json *notes = px_json_get(j, "notes");
	ck_assert_msg(notes && notes->n == 0, "notes: %s", notes && notes->n ? notes->v[0].s : "?");
	return j;
}

/* Figure k of an index: its node, type and file. */
static const struct px_json *figure(const struct px_json *index, int k, const char *node,
				    const char *type)
{
	const struct px_json *f = px_json_get(index, "figures");
	ck_assert_msg(f && k < f->n, "figure %d missing", k);
	ck_assert_str_eq(px_json_get(&f->v[k], "node")->s, node);
	ck_assert_str_eq(px_json_get(&f->v[k], "type")->s, type);
	return &f->v[k];
}

static struct px_json *figure_data(const char *dir, const struct px_json *fig)
{
	char p[256];
	snprintf(p, sizeof p, "%s/figures/%s", dir, px_json_get(fig, "file")->s);
	return read_json_file(p);
}

/* Width and height of a PNG from its header. */
static void png_size(const char *dir, const struct px_json *fig, unsigned *w, unsigned *h)
{
	char p[256];
	snprintf(p, sizeof p, "%s/figures/%s", dir, px_json_get(fig, "file")->s);
	size_t n;
	unsigned char *d = (unsigned char *)read_all(p, &n);
	ck_assert(d && n > 24 && !memcmp(d, "\x89PNG", 4));
	*w = (unsigned)d[16] << 24 | (unsigned)d[17] << 16 | (unsigned)d[18] << 8 | d[19];
	*h = (unsigned)d[20] << 24 | (unsigned)d[21] << 16 | (unsigned)d[22] << 8 | d[23];
	free(d);
}

/* Each row of a heat map (its finite values) sums to 1, as attention weights do. */
static void rows_sum_to_one(const struct px_json *hm)
{
	int rows = (int)px_json_get(hm, "rows")->i, cols = (int)px_json_get(hm, "cols")->i;
	const struct px_json *v = px_json_get(hm, "values");
	ck_assert_int_eq(v->n, rows * cols);
	for (int r = 0; r < rows; r++) {
		double s = 0;
		for (int c = 0; c < cols; c++)
			s += v->v[r * cols + c].f;
		ck_assert_msg(fabs(s - 1) < 1e-4, "row %d sums to %g", r, s);
	}
}

START_TEST(test_attention_decoder_draws_alignments_with_token_labels)
{
	char d[64];
	struct px_json *j = train_figures(dates_yaml, d, sizeof d);
	for (int k = 0; k < 3; k++) {
		struct px_json *hm = figure_data(d, figure(j, k, "dec", "heatmap"));
		rows_sum_to_one(hm);
		const struct px_json *rl = px_json_get(hm, "row_labels"), *cl = px_json_get(hm, "col_labels");
		ck_assert(rl && rl->n >= 2 && cl && cl->n >= 4);
		/* rows are the target tokens ("2026-11-28" then <eos>), columns the source text */
		ck_assert_str_eq(rl->v[rl->n - 1].s, "<eos>");
		ck_assert_str_eq(rl->v[4].s, "-");
		int letters = 0;
		for (int c = 0; c < cl->n; c++)
			letters += strlen(cl->v[c].s) >= 1 && !strchr("0123456789", cl->v[c].s[0]);
		ck_assert_msg(letters > 0 || cl->n >= 6, "source labels are not tokens");
		px_json_free(hm);
	}
	/* the encoder's gradient norm per source step, through px_bwd.report */
	struct px_json *s = figure_data(d, figure(j, 3, "enc", "series"));
	const struct px_json *v = px_json_get(s, "values");
	ck_assert_int_eq(v->n, 29);   /* T_in of the dates source */
	for (int t = 0; t < v->n; t++)
		ck_assert(v->v[t].type == PX_JSON_FLOAT && v->v[t].f >= 0);
	px_json_free(s);
	px_json_free(j);
	char *html = report_of(d);
	ck_assert_ptr_nonnull(strstr(html, "attention alignment, example 2"));
	ck_assert_ptr_nonnull(strstr(html, "&lt;eos&gt;"));
	ck_assert_ptr_nonnull(strstr(html, "gradient norm over time"));
	free(html);
}
END_TEST

START_TEST(test_attention_pool_draws_weights_over_time_per_example)
{
	char d[64];
	struct px_json *j = train_figures(pool_yaml, d, sizeof d);
	struct px_json *hm = figure_data(d, figure(j, 0, "pool", "heatmap"));
	ck_assert_int_eq(px_json_get(hm, "rows")->i, 16);
	ck_assert_int_eq(px_json_get(hm, "cols")->i, 28);
	rows_sum_to_one(hm);
	/* rows named by example and class (Fashion-MNIST's class names) */
	const char *r0 = px_json_get(hm, "row_labels")->v[0].s;
	ck_assert_msg(!strncmp(r0, "0: ", 3) || !strcmp(r0, "example 0"), "row label '%s'", r0);
	px_json_free(hm);
	figure(j, 1, "enc", "series");
	px_json_free(j);
}
END_TEST

START_TEST(test_autoencoder_draws_inputs_corrupted_inputs_and_reconstructions)
{
	char d[64];
	struct px_json *j = train_figures(dae_yaml, d, sizeof d);
	const struct px_json *f = figure(j, 0, "ae", "image");
	ck_assert_ptr_nonnull(strstr(px_json_get(f, "title")->s, "corrupted"));
	unsigned w, h;
	png_size(d, f, &w, &h);
	ck_assert_uint_eq(w, 10 * (16 + 2) + 2);   /* ten 16x16 examples */
	ck_assert_uint_eq(h, 3 * (16 + 2) + 2);    /* three rows */
	ck_assert_int_eq(px_json_get(j, "figures")->n, 1);
	px_json_free(j);
	char *html = report_of(d);
	ck_assert_ptr_nonnull(strstr(html, "src=\"data:image/png;base64,iVBORw0KGgo"));
	free(html);
}
END_TEST

START_TEST(test_conv_draws_segmentation_masks_over_the_images)
{
	char d[64];
	struct px_json *j = train_figures(seg_yaml, d, sizeof d);
	const struct px_json *f = figure(j, 0, "scores", "image");
	unsigned w, h;
	png_size(d, f, &w, &h);
	ck_assert_uint_eq(w, 6 * (16 + 2) + 2);
	ck_assert_uint_eq(h, 3 * (16 + 2) + 2);
	ck_assert_int_eq(px_json_get(j, "figures")->n, 1);   /* e1 (8 channels) draws nothing */
	px_json_free(j);
}
END_TEST

/* ---------------------------------------------------------------- Chromium */
static bool find_chromium(char *buf, size_t n)
{
	const char *path = getenv("PATH");
	char *copy = strdup(path ? path : "/usr/bin:/bin"), *save = NULL;
	bool found = false;
	for (char *d = strtok_r(copy, ":", &save); d && !found; d = strtok_r(NULL, ":", &save)) {
		snprintf(buf, n, "%s/chromium", d);
		found = access(buf, X_OK) == 0;
	}
	free(copy);
	return found;
}

START_TEST(test_report_renders_in_headless_chromium)
{
	char chromium[4096];
	if (!find_chromium(chromium, sizeof chromium)) {
		fprintf(stderr, "SKIP test_report_renders_in_headless_chromium: chromium is not "
				"installed (Debian package 'chromium'; scripts/setup.sh installs it)\n");
		return;
	}
	char d[64], profile[64], cmd[8192], shot[256], dom[256];
	struct px_json *j = train_figures(dates_yaml, d, sizeof d);
	px_json_free(j);
	temp_dir(profile, sizeof profile);
	path_in(shot, sizeof shot, d, "screenshot.png");
	path_in(dom, sizeof dom, d, "dom.html");
	char abs[4096];
	ck_assert_ptr_nonnull(realpath(d, abs));
	const char *flags = "--headless --no-sandbox --disable-gpu --disable-quic --no-first-run "
			    "--disable-background-networking --disable-component-update --disable-sync "
			    "--window-size=1200,2000";
	/* one run of the browser: the screenshot, and the DOM it parsed on stdout */
	snprintf(cmd, sizeof cmd, "timeout 120 '%s' %s --user-data-dir=%s --screenshot=%s --dump-dom "
		 "file://%s/report.html >%s 2>/dev/null", chromium, flags, profile, shot, abs, dom);
	ck_assert_msg(system(cmd) == 0, "chromium failed: %s", cmd);
	/* the screenshot: a PNG of the window's size, with a plausible amount of content */
	struct stat st;
	ck_assert_int_eq(stat(shot, &st), 0);
	ck_assert_msg(st.st_size > 40000 && st.st_size < 20000000, "screenshot of %lld bytes",
		      (long long)st.st_size);
	size_t n;
	unsigned char *png = (unsigned char *)read_all(shot, &n);
	ck_assert(png && !memcmp(png, "\x89PNG", 4));
	ck_assert_uint_eq((unsigned)png[18] << 8 | png[19], 1200);
	ck_assert_uint_eq((unsigned)png[22] << 8 | png[23], 2000);
	free(png);
	fprintf(stderr, "screenshot: %s\n", shot);
	/* the page as the browser parsed it: the run, every node, the final metrics */
	char *text = read_all(dom, NULL);
	ck_assert_ptr_nonnull(text);
	ck_assert_ptr_nonnull(strstr(text, "<h1>dates &lt;mini&gt; &amp; co</h1>"));
	ck_assert_msg(!contains_ci(text, "<script") && !strstr(text, "<mini>") && !strstr(text, "<src>"),
		      "the browser parsed markup from the pipeline as elements");
	static const char *const nodes[] = {"<td>&lt;src&gt;</td>", "<td>enc</td>", "<td>dec</td>"};
	for (int i = 0; i < 3; i++)
		ck_assert_msg(strstr(text, nodes[i]), "the DOM lacks node %s", nodes[i]);
	/* every final metric of summary.json, as the report formats it (%.6g) */
	char p[256];
	path_in(p, sizeof p, d, "summary.json");
	j = read_json_file(p);
	const struct px_json *f = px_json_get(j, "final"), *m = px_json_get(f, "metrics");
	ck_assert_str_eq(px_json_get(f, "split")->s, "test");
	ck_assert_int_ge(m->n, 2);   /* exact_match, token_accuracy */
	for (int i = -2; i < m->n; i++) {
		const struct px_json *v = i == -2 ? px_json_get(f, "loss")
					  : i == -1 ? px_json_get(f, "accuracy") : &m->v[i];
		char cell[80];
		snprintf(cell, sizeof cell, ">%.6g<", v->f);
		ck_assert_msg(strstr(text, cell), "the DOM lacks the final %s %s",
			      i < 0 ? (i == -2 ? "loss" : "accuracy") : m->k[i], cell);
	}
	px_json_free(j);
	/* and the test loss `plexus train` printed after training, from its own evaluation */
	const char *t = strstr(last_train.out, "test: ");
	const char *l = t ? strstr(t, ", loss ") : NULL;
	ck_assert_ptr_nonnull(l);
	char cell[80];
	snprintf(cell, sizeof cell, ">%.*s<", (int)strcspn(l + 7, ",\n"), l + 7);
	ck_assert_msg(strstr(text, cell), "the DOM lacks the printed test loss %s", cell);
	free(text);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("report");
	TCase *tc = tcase_create("report");
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_axis_ticks_are_nice_steps_covering_known_ranges);
	tcase_add_test(tc, test_axis_ticks_cover_any_range_with_distinct_labels);
	tcase_add_test(tc, test_axis_widens_constant_empty_and_nonfinite_ranges);
	tcase_add_test(tc, test_tick_labels_show_the_decimals_the_step_needs);
	tcase_add_test(tc, test_line_chart_paths_are_finite_for_any_series);
	tcase_add_test(tc, test_line_chart_maps_points_onto_the_axes);
	tcase_add_test(tc, test_every_text_from_a_pipeline_or_data_is_escaped);
	tcase_add_test(tc, test_heatmap_greys_nonfinite_cells_and_scales_over_the_rest);
	tcase_add_test(tc, test_host_offers_the_figure_services_of_abi_1_1);
	tcase_add_test(tc, test_a_plugin_built_for_abi_1_0_loads_into_this_host);
	tcase_add_test(tc, test_training_writes_a_self_contained_report_of_the_run);
	tcase_add_test(tc, test_markup_in_a_pipeline_shows_as_text);
	tcase_add_test(tc, test_report_command_rebuilds_the_same_page_from_the_run_files);
	tcase_add_test(tc, test_report_overlays_the_curves_of_two_runs);
	tcase_add_test(tc, test_report_of_a_stopped_run_shows_why);
	tcase_add_test(tc, test_report_treats_run_files_as_untrusted);
	tcase_add_test(tc, test_attention_decoder_draws_alignments_with_token_labels);
	tcase_add_test(tc, test_attention_pool_draws_weights_over_time_per_example);
	tcase_add_test(tc, test_autoencoder_draws_inputs_corrupted_inputs_and_reconstructions);
	tcase_add_test(tc, test_conv_draws_segmentation_masks_over_the_images);
	tcase_add_test(tc, test_report_renders_in_headless_chromium);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
