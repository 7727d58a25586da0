/*
 * html.c - greylistctl report --html: the report as a page to look at
 *
 *	One self-contained HTML file: inline SVG charts and an inline style
 *	sheet, no script, nothing fetched (no element has a src or href, and
 *	a Content-Security-Policy of default-src 'none' tells the browser to
 *	fetch nothing even so). For the period of the log read it shows:
 *	  - the text report's summary line, and its figures large;
 *	  - the triplets first deferred in each hour, stacked by what became
 *	    of them (passed later, never retried, pending); a day a bar, or
 *	    whole weeks, when the period is longer (BARS_MAX); each bar's
 *	    figures in its tooltip and in a table under the chart;
 *	  - the delays of those passed later, in the buckets of the metrics'
 *	    histogram (stats.c);
 *	  - the client networks and recipients most often never retried.
 *	Strings from the log are escaped as the text report escapes them
 *	(bytes outside "!".."~" as \xHH), then for HTML. Times are UTC, as
 *	in the text report.
 */

#define _GNU_SOURCE

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "greylist.h"
#include "greylistctl.h"

/* Bars of the chart of deferrals. An hour a bar while the period has at
 * most this many hours (4 days: 9 px a bar at the chart's width, enough
 * to see one and to point at it); else a day a bar while that makes at
 * most this many; else as many whole weeks a bar as keep to it. So a
 * month of log is 30 bars of 30 px, a year 53, and no log, however long
 * (its times are anyone's to write), makes more than BARS_MAX + 1. */
#define BARS_MAX	96
#define HOUR		3600LL
#define WEEK		(7 * DAY)

/* The charts' drawing, in the SVG's own units (the page scales it to its
 * width): the plot and the margins that hold the axes' labels. */
#define CHART_W		960
#define CHART_H		260
#define PAD_L		64
#define PAD_R		10
#define PAD_T		12
#define PAD_B		40
#define PLOT_W		(CHART_W - PAD_L - PAD_R)
#define PLOT_H		(CHART_H - PAD_T - PAD_B)
/* x labels are this far apart at the least (a label is up to 6 chars) */
#define LABEL_GAP	60
/* at most this many steps on the y axis */
#define Y_STEPS		6

/* The tops shown when --top does not say. */
#define HTML_TOP	10

/* The colours of the fates, in the order the bars stack them (bottom
 * first), and what the page calls each (fate_names for the figures). */
static const struct {
	enum fate fate;
	const char *colour, *label;
} series[NFATES] = {
	{ FATE_PASSED, "#1b9e77", "passed later" },
	{ FATE_LOST, "#d95f02", "never retried" },
	{ FATE_PENDING, "#a0a0a0", "pending" },
};
#define DELAY_COLOUR	"#7570b3"

/* The bars: their width, where the first starts, and each one's counts
 * by fate. */
struct bins {
	long long width, t0;
	size_t n;
	size_t (*count)[NFATES];
	size_t max;			/* the tallest bar */
};

/* put - a string from the log: escaped as the text report does, then
 * for HTML */
static void put(FILE *f, const char *s)
{
	unsigned char c;

	if (!*s)
		(void)fputs("&lt;&gt;", f);
	for (; (c = (unsigned char)*s); s++) {
		if (c < '!' || c > '~' || c == '\\' || c == '<' || c == '>')
			(void)fprintf(f, "\\x%02x", c);
		else if (c == '&')
			(void)fputs("&amp;", f);
		else if (c == '"')
			(void)fputs("&quot;", f);
		else if (c == '\'')
			(void)fputs("&#39;", f);
		else
			(void)putc(c, f);
	}
}

/* The ways the page shows a time: parts of the text report's own
 * (format_time, TS_UTC: "2026-11-29T10:03:36Z"), its T a space. */
enum stamp_style { ST_DATE, ST_MONTH_DAY, ST_HOUR, ST_DATE_HOUR, ST_MINUTE };
static const struct {
	int from, len;
	const char *then;
} stamps[] = {
	[ST_DATE] = { 0, 10, "" },		/* 2026-11-29 */
	[ST_MONTH_DAY] = { 5, 5, "" },		/* 11-29 */
	[ST_HOUR] = { 11, 2, ":00" },		/* 10:00 */
	[ST_DATE_HOUR] = { 0, 13, ":00" },	/* 2026-11-29 10:00 */
	[ST_MINUTE] = { 0, 16, "" },		/* 2026-11-29 10:03 */
};

/* stamp - a time in UTC, in one of the page's styles */
static const char *stamp(char *buf, size_t size, enum stamp_style st,
			 long long t)
{
	size_t from = (size_t)stamps[st].from, n = (size_t)stamps[st].len;
	size_t m = strlen(stamps[st].then);
	char full[32];

	format_time(full, sizeof(full), TS_UTC, (time_t)t);
	full[10] = ' ';
	if (strlen(full) < from + n || n + m >= size) {
		snprintf(buf, size, "%lld", t);	/* a year past 9999 */
		return buf;
	}
	memcpy(buf, full + from, n);
	memcpy(buf + n, stamps[st].then, m + 1);
	return buf;
}

/* grouped - a count with thousands separated: 430,896 */
static const char *grouped(char *buf, size_t size, size_t n)
{
	char digits[32];
	size_t len, i, o = 0;

	len = (size_t)snprintf(digits, sizeof(digits), "%zu", n);
	for (i = 0; i < len && o + 2 < size; i++) {
		if (i && (len - i) % 3 == 0)
			buf[o++] = ',';
		buf[o++] = digits[i];
	}
	buf[o] = 0;
	return buf;
}

/* bins_make - the bars for the period read, and each deferral counted
 * in its bar; -1 without memory */
static int bins_make(const struct report_view *v, struct bins *b)
{
	static const long long widths[] = { HOUR, DAY, WEEK };
	long long span = v->end - v->start, t;
	size_t i, k, total;

	b->width = 0;
	for (i = 0; i < sizeof(widths) / sizeof(widths[0]) && !b->width; i++)
		if (span / widths[i] < BARS_MAX)
			b->width = widths[i];
	if (!b->width)
		b->width = WEEK * (span / WEEK / BARS_MAX + 1);
	b->t0 = v->start - ((v->start % b->width) + b->width) % b->width;
	b->n = (size_t)((v->end - b->t0) / b->width) + 1;
	b->max = 0;
	if (!(b->count = calloc(b->n, sizeof(*b->count))))
		return -1;
	for (i = 0; i < v->n; i++) {
		t = v->judged[i].first;
		if (t >= b->t0 && (size_t)((t - b->t0) / b->width) < b->n)
			b->count[(t - b->t0) / b->width][v->judged[i].fate]++;
	}
	for (i = 0; i < b->n; i++) {
		for (total = 0, k = 0; k < NFATES; k++)
			total += b->count[i][k];
		if (total > b->max)
			b->max = total;
	}
	return 0;
}

/* bar_unit - what one bar counts: "hour", "day", "week" or "N weeks" */
static const char *bar_unit(char *buf, size_t size, const struct bins *b)
{
	if (b->width == HOUR || b->width == DAY || b->width == WEEK)
		snprintf(buf, size, "%s", b->width == HOUR ? "hour"
			 : b->width == DAY ? "day" : "week");
	else
		snprintf(buf, size, "%lld weeks", b->width / WEEK);
	return buf;
}

/* y_scale - a round top for the y axis, and its step (1, 2 or 5 times a
 * power of ten), for counts up to max */
static size_t y_scale(size_t max, size_t *step)
{
	size_t mag = 1;

	for (*step = 1; *step * Y_STEPS < max;) {
		if (*step == mag)
			*step = 2 * mag;
		else if (*step == 2 * mag)
			*step = 5 * mag;
		else
			*step = mag *= 10;
	}
	return max ? (max + *step - 1) / *step * *step : *step;
}

/* svg_open - a chart's SVG, its title for screen readers, and its y
 * axis: grid lines and labels from 0 to top */
static void svg_open(FILE *f, const char *title, size_t top, size_t step)
{
	char num[32];
	size_t y;
	double py;

	(void)fprintf(f, "<svg viewBox=\"0 0 %d %d\" role=\"img\">"
		      "<title>%s</title>\n", CHART_W, CHART_H, title);
	for (y = 0; y <= top; y += step) {
		py = PAD_T + PLOT_H - (double)y * PLOT_H / (double)top;
		(void)fprintf(f, "<line class=\"grid\" x1=\"%d\" x2=\"%d\" "
			      "y1=\"%.1f\" y2=\"%.1f\"/><text class=\"y\" x=\"%d\" "
			      "y=\"%.1f\">%s</text>\n", PAD_L, CHART_W - PAD_R,
			      py, py, PAD_L - 6, py + 4, grouped(num, sizeof(num), y));
	}
	(void)fprintf(f, "<line class=\"axis\" x1=\"%d\" x2=\"%d\" y1=\"%d\" "
		      "y2=\"%d\"/>\n", PAD_L, CHART_W - PAD_R, PAD_T + PLOT_H,
		      PAD_T + PLOT_H);
}

/* bar_label - the x label under bar i (every "every"-th bar): the hour
 * and, where a day begins, the date; or the date */
static void bar_label(FILE *f, const struct bins *b, size_t i, double x)
{
	long long t = b->t0 + (long long)i * b->width;
	char a[32], d[32];

	if (b->width == HOUR)
		(void)fprintf(f, "<text class=\"x\" x=\"%.1f\" y=\"%d\">%s</text>",
			      x, CHART_H - PAD_B + 16, stamp(a, sizeof(a), ST_HOUR, t));
	if (b->width != HOUR || t % DAY < HOUR || i == 0)
		(void)fprintf(f, "<text class=\"x\" x=\"%.1f\" y=\"%d\">%s</text>",
			      x, CHART_H - PAD_B + (b->width == HOUR ? 32 : 16),
			      stamp(d, sizeof(d), ST_MONTH_DAY, t));
	(void)putc('\n', f);
}

/* bar - one stacked bar, its figures in a tooltip */
static void bar(FILE *f, const struct bins *b, size_t i, size_t top)
{
	double slot = (double)PLOT_W / (double)b->n, x = PAD_L + slot * (double)i;
	double w = slot > 3 ? slot * 0.8 : slot, y = PAD_T + PLOT_H, h;
	const size_t *c = b->count[i];
	char from[40], unit[32];
	size_t k;

	(void)fprintf(f, "<g><title>%s UTC, a %s: %zu deferred: %zu passed"
		      " later, %zu never retried, %zu pending</title>",
		      stamp(from, sizeof(from), b->width == HOUR ? ST_DATE_HOUR
			    : ST_DATE, b->t0 + (long long)i * b->width),
		      bar_unit(unit, sizeof(unit), b), c[0] + c[1] + c[2],
		      c[FATE_PASSED], c[FATE_LOST], c[FATE_PENDING]);
	for (k = 0; k < NFATES; k++) {
		h = (double)c[series[k].fate] * PLOT_H / (double)top;
		y -= h;
		if (h > 0)
			(void)fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\""
				      " height=\"%.1f\" fill=\"%s\"/>", x, y, w, h,
				      series[k].colour);
	}
	(void)fputs("</g>\n", f);
}

/* chart_deferrals - the bars of the period, with their axes */
static void chart_deferrals(FILE *f, const struct bins *b)
{
	double slot = (double)PLOT_W / (double)b->n;
	size_t i, step, top = y_scale(b->max, &step);
	size_t every = (size_t)(LABEL_GAP / slot) + 1;

	if (b->width == HOUR && every > 1)	/* on whole hours of the day */
		every = every <= 2 ? 2 : every <= 3 ? 3 : every <= 6 ? 6 : 12;
	svg_open(f, "Triplets first deferred, by what became of them", top,
		 step);
	for (i = 0; i < b->n; i++) {
		bar(f, b, i, top);
		if ((b->t0 / b->width + (long long)i) % (long long)every == 0)
			bar_label(f, b, i, PAD_L + slot * ((double)i + 0.4));
	}
	(void)fputs("</svg>\n", f);
}

/* legend - the colours of the fates */
static void legend(FILE *f)
{
	size_t k;

	(void)fputs("<p class=\"legend\">", f);
	for (k = 0; k < NFATES; k++)
		(void)fprintf(f, "<span><i style=\"background:%s\"></i>%s</span>",
			      series[k].colour, series[k].label);
	(void)fputs("</p>\n", f);
}

/* bins_table - each bar's figures, under the chart (folded) */
static void bins_table(FILE *f, const struct bins *b)
{
	char from[40], unit[32];
	size_t i, k;

	(void)fprintf(f, "<details><summary>The figures, a row a %s</summary>\n"
		      "<table class=\"bins\"><tr><th>from (UTC)</th>"
		      "<th>deferred</th>", bar_unit(unit, sizeof(unit), b));
	for (k = 0; k < NFATES; k++)
		(void)fprintf(f, "<th>%s</th>", series[k].label);
	(void)fputs("</tr>\n", f);
	for (i = 0; i < b->n; i++) {
		(void)fprintf(f, "<tr><td>%s</td><td>%zu</td>", stamp(from,
			      sizeof(from), b->width == HOUR ? ST_DATE_HOUR
			      : ST_DATE, b->t0 + (long long)i * b->width),
			      b->count[i][0] + b->count[i][1] + b->count[i][2]);
		for (k = 0; k < NFATES; k++)
			(void)fprintf(f, "<td>%zu</td>",
				      b->count[i][series[k].fate]);
		(void)fputs("</tr>\n", f);
	}
	(void)fputs("</table></details>\n", f);
}

/* chart_delays - how long the triplets passed later waited, in the
 * metrics' buckets */
static void chart_delays(FILE *f, const struct report_view *v)
{
	size_t n = NDELAY_BUCKETS + 1, c[NDELAY_BUCKETS + 1] = { 0 };
	size_t i, b, max = 0, step, top;
	double slot = (double)PLOT_W / (double)n, h;
	char span[16], num[32];

	for (i = 0; i < v->ndelays; i++) {
		for (b = 0; b < NDELAY_BUCKETS && v->delays[i] > delay_buckets[b];
		     b++)
			;
		if (++c[b] > max)
			max = c[b];
	}
	top = y_scale(max + max / 10, &step);	/* room for the values */
	svg_open(f, "Delays of the triplets passed later", top, step);
	for (b = 0; b < n; b++) {
		h = (double)c[b] * PLOT_H / (double)top;
		(void)fprintf(f, "<g><title>%s%s: %zu</title><rect x=\"%.1f\" "
			      "y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\""
			      DELAY_COLOUR "\"/>", b < NDELAY_BUCKETS ? "up to "
			      : "over ", format_span(span, sizeof(span),
			      delay_buckets[b < NDELAY_BUCKETS ? b : b - 1]), c[b],
			      PAD_L + slot * ((double)b + 0.15), PAD_T + PLOT_H - h,
			      slot * 0.7, h);
		(void)fprintf(f, "<text class=\"v\" x=\"%.1f\" y=\"%.1f\">%s"
			      "</text><text class=\"x\" x=\"%.1f\" y=\"%d\">%s%s"
			      "</text></g>\n", PAD_L + slot * ((double)b + 0.5),
			      PAD_T + PLOT_H - h - 4, grouped(num, sizeof(num), c[b]),
			      PAD_L + slot
			      * ((double)b + 0.5), CHART_H - PAD_B + 16,
			      b < NDELAY_BUCKETS ? "\xe2\x89\xa4" : "&gt;", span);
	}
	(void)fputs("</svg>\n", f);
}

/* top_table - the most often lost networks or recipients */
static void top_table(FILE *f, const char *title, const struct count *c,
		      size_t n, size_t top)
{
	size_t i;

	(void)fprintf(f, "<div><h3>%s</h3>\n", title);
	if (!n)
		(void)fputs("<p>none</p>\n", f);
	else
		(void)fputs("<table class=\"top\">\n", f);
	for (i = 0; i < n && i < top; i++) {
		(void)fprintf(f, "<tr><td class=\"n\">%zu</td><td class=\"bar\">"
			      "<i style=\"width:%.0f%%\"></i></td><td class=\"w\">",
			      c[i].n, 100.0 * (double)c[i].n / (double)c[0].n);
		put(f, c[i].what);
		(void)fputs("</td></tr>\n", f);
	}
	(void)fputs(n ? "</table></div>\n" : "</div>\n", f);
}

/* page_head - the document's head: no script, nothing to fetch */
static void page_head(FILE *f, const struct report_view *v)
{
	char a[32], b[32];

	(void)fprintf(f, "<!DOCTYPE html>\n<html lang=\"en\"><head>"
		      "<meta charset=\"utf-8\">\n<meta http-equiv=\""
		      "Content-Security-Policy\" content=\"default-src 'none';"
		      " style-src 'unsafe-inline'\">\n<meta name=\"viewport\" "
		      "content=\"width=device-width\">\n<title>greylistd report"
		      " %s to %s</title>\n", stamp(a, sizeof(a), ST_DATE,
		      v->start), stamp(b, sizeof(b), ST_DATE, v->end));
	(void)fputs("<style>\n"
		"body{font:15px/1.4 system-ui,\"DejaVu Sans\",sans-serif;"
		"color:#222;background:#fff;max-width:1000px;margin:20px auto;"
		"padding:0 16px}\n"
		"h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;"
		"margin:26px 0 6px}h3{font-size:15px;margin:0 0 6px}\n"
		".period{color:#555;margin:0 0 14px}\n"
		".tiles{display:flex;gap:12px;flex-wrap:wrap}.tile{border:1px "
		"solid #ddd;border-radius:6px;padding:6px 14px;min-width:110px}"
		".tile b{display:block;font-size:26px}\n"
		"code{background:#f3f3f3;padding:2px 6px;border-radius:4px}\n"
		"svg{width:100%;height:auto;display:block}svg text{font-size:"
		"12px;fill:#333}svg text.y{text-anchor:end}svg text.x,svg text.v"
		"{text-anchor:middle}.grid{stroke:#e8e8e8}.axis{stroke:#888}\n"
		".legend{margin:4px 0}.legend span{margin-right:18px}.legend i"
		"{display:inline-block;width:12px;height:12px;margin-right:6px;"
		"vertical-align:-1px}\n"
		".tops{display:flex;gap:32px;flex-wrap:wrap}.tops>div{flex:1;"
		"min-width:300px}table{border-collapse:collapse}\n"
		"table.top{width:100%}table.top td{padding:2px 6px}td.n{text-"
		"align:right;width:4em}td.bar{width:30%}td.bar i{display:block;"
		"height:10px;background:#d95f02}td.w{font-family:monospace;"
		"overflow-wrap:anywhere}\n"
		"table.bins{font-size:13px}table.bins td,table.bins th{padding:"
		"1px 10px;text-align:right;border-bottom:1px solid #eee}\n"
		"footer{color:#777;font-size:12px;margin-top:28px}\n"
		"</style></head><body>\n", f);
}

/* human_span - a duration for people: "45 s", "6 min 12 s", "3 h 5 min",
 * "2 d 4 h" */
static const char *human_span(char *buf, size_t size, long long s)
{
	if (s < 60)
		snprintf(buf, size, "%lld s", s);
	else if (s < HOUR)
		snprintf(buf, size, "%lld min %lld s", s / 60, s % 60);
	else if (s < DAY)
		snprintf(buf, size, "%lld h %lld min", s / HOUR, s % HOUR / 60);
	else
		snprintf(buf, size, "%lld d %lld h", s / DAY, s % DAY / HOUR);
	return buf;
}

/* tile - one figure, large, with its share of the deferred */
static void tile(FILE *f, const char *id, const char *label, size_t n,
		 size_t of)
{
	char num[32];

	(void)fprintf(f, "<div class=\"tile\"><b id=\"%s\">%s</b>%s", id,
		      grouped(num, sizeof(num), n), label);
	if (of)
		(void)fprintf(f, " (%.0f%%)", 100.0 * (double)n / (double)of);
	(void)fputs("</div>\n", f);
}

/* page_summary - the period, the figures, the text report's line */
static void page_summary(FILE *f, const struct report_view *v)
{
	size_t fate[NFATES] = { 0 }, i;
	char a[32], b[32], d[40];

	for (i = 0; i < v->n; i++)
		fate[v->judged[i].fate]++;
	(void)fprintf(f, "<h1>Greylisting: what it deferred, and what came"
		      " back</h1>\n<p class=\"period\">The log from %s to %s UTC"
		      " (%s). A triplet is never retried when it has not passed"
		      " within %lld s of its first deferral.</p>\n<div class=\""
		      "tiles\">\n", stamp(a, sizeof(a), ST_MINUTE, v->start),
		      stamp(b, sizeof(b), ST_MINUTE, v->end),
		      human_span(d, sizeof(d), v->end - v->start), v->window);
	tile(f, "deferred", "deferred", v->n, 0);
	for (i = 0; i < NFATES; i++)
		tile(f, fate_names[series[i].fate], series[i].label,
		     fate[series[i].fate], v->n);
	(void)fprintf(f, "<div class=\"tile\"><b id=\"median\">%s</b>median"
		      " delay</div>\n</div>\n", v->ndelays ? human_span(d,
		      sizeof(d), v->delays[v->ndelays / 2]) : "none");
	(void)fprintf(f, "<p>The text report's summary: <code class=\"summary"
		      "\">%s</code></p>\n", v->summary);
}

/* page_charts - the deferrals by bar, and the delays */
static void page_charts(FILE *f, const struct report_view *v,
			const struct bins *b)
{
	char unit[32];

	(void)fprintf(f, "<h2>Triplets first deferred, per %s</h2>\n",
		      bar_unit(unit, sizeof(unit), b));
	if (v->n) {
		legend(f);
		chart_deferrals(f, b);
		bins_table(f, b);
	} else {
		(void)fputs("<p>None in this period.</p>\n", f);
	}
	(void)fputs("<h2>How long the triplets passed later waited</h2>\n", f);
	if (v->ndelays)
		chart_delays(f, v);
	else
		(void)fputs("<p>None passed later.</p>\n", f);
}

/* html_write - the page, into path (whole or not at all); 0, or 1 (said) */
int html_write(const char *path, const struct report_view *v)
{
	size_t top = v->top ? v->top : HTML_TOP;
	struct bins b = { 0 };
	struct output out;
	char now[32];

	if (bins_make(v, &b) != 0) {
		say("out of memory");
		return 1;
	}
	if (output_open(&out, path) != 0) {
		free(b.count);
		return 1;
	}
	page_head(out.f, v);
	page_summary(out.f, v);
	page_charts(out.f, v, &b);
	(void)fputs("<h2>Never retried: the most often lost</h2>\n"
		    "<div class=\"tops\">\n", out.f);
	top_table(out.f, "Client networks", v->nets, v->nnets, top);
	top_table(out.f, "Recipients", v->rcpts, v->nrcpts, top);
	(void)fprintf(out.f, "</div>\n<footer>greylistctl report, greylistd %s,"
		      " %s UTC</footer>\n</body></html>\n", VERSION,
		      stamp(now, sizeof(now), ST_MINUTE, (long long)time(NULL)));
	free(b.count);
	return output_close(&out, 1);
}
