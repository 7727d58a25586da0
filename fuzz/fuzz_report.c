/*
 * fuzz_report - `greylistd report`'s log reader under libFuzzer.
 *
 * The bytes (after a one-byte header) are a log file (a memfd) read by
 * report_file(): parse_stamp(), then report_line() with greylistd's
 * decision lines and Postfix's reject lines (field, unlog, copy_span,
 * note_event, client_net, normalise_sender, seen_get). Some inputs end
 * with report_print() into a memfd stdout. The table of triplets is
 * emptied between inputs, so memory stays bounded. Invariants:
 *   - parse_stamp returns NULL or a pointer into the line, and reads an
 *     ISO 8601 stamp ("2026-11-29T11:03:36.5+01:00", "...Z", "...+0100",
 *     "...+01")
 *     as the time it names;
 *   - report_file reads every line without failing;
 *   - report_print's summary adds up: deferred = passed_later +
 *     never_retried + pending, one listed line per never-retried triplet,
 *     and no delay is negative (a pass counts only after a deferral).
 *
 * Header: h & 3 = --top; h & 4: --window=30s (else --delay); h & 8,
 * with h & 16 too, report_print() at the end (its walk of the 65536
 * buckets is slow under coverage instrumentation); h & 32: --since=1h.
 */

#include "fuzz.h"

#define main greylistd_main
#ifdef GREYLISTD_SRC
#include GREYLISTD_SRC
#else
#include "../greylistd.c"
#endif
#undef main

static int log_in = -1, out_fd = -1;
static char log_path[64];

/* digits - n decimal digits at p, or -1 */
static long long digits(const char *p, int n)
{
	long long v = 0;
	int i;

	for (i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return -1;
		v = v * 10 + (p[i] - '0');
	}
	return v;
}

/* days_from_civil - days since 1970-01-01 of a proleptic Gregorian date */
static long long days_from_civil(long long y, long long m, long long d)
{
	long long era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

/* iso_model - the time of a strict ISO 8601 stamp at the start of s:
 * YYYY-MM-DDTHH:MM:SS, optional fraction, then Z, +HH:MM, +HHMM or +HH; 0
 * when s starts with one, -1 when not (the model has no opinion) */
static int iso_model(const char *s, long long *t, size_t *used)
{
	long long y = digits(s, 4), mo = digits(s + 5, 2), d = digits(s + 8, 2);
	long long h = digits(s + 11, 2), mi = digits(s + 14, 2);
	long long se = digits(s + 17, 2), oh, om;
	size_t p = 19;
	int sign;

	if (strlen(s) < 20 || y < 1970 || s[4] != '-' || s[7] != '-'
	    || s[10] != 'T' || s[13] != ':' || s[16] != ':' || mo < 1
	    || mo > 12 || d < 1 || d > 31 || h < 0 || h > 23 || mi < 0
	    || mi > 59 || se < 0 || se > 59)
		return -1;
	if (s[p] == '.') {
		p++;
		if (s[p] < '0' || s[p] > '9')
			return -1;
		while (s[p] >= '0' && s[p] <= '9')
			p++;
	}
	*t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se;
	if (s[p] == 'Z') {
		*used = p + 1;
		return 0;
	}
	if (s[p] != '+' && s[p] != '-')
		return -1;
	sign = s[p] == '-' ? -1 : 1;
	oh = digits(s + p + 1, 2);
	if (s[p + 3] == ':') {
		om = digits(s + p + 4, 2);
		*used = p + 6;
	} else if (s[p + 3] >= '0' && s[p + 3] <= '9') {
		om = digits(s + p + 3, 2);
		*used = p + 5;
	} else {
		om = 0;			/* +HH, ISO 8601's hours-only zone */
		*used = p + 3;
	}
	if (oh < 0 || oh > 14 || om < 0 || om > 59
	    || (s[*used] >= '0' && s[*used] <= '9'))
		return -1;
	*t -= sign * (oh * 3600 + om * 60);
	return 0;
}

/* check_stamps - parse_stamp on every line, as report_file cuts them */
static void check_stamps(const uint8_t *data, size_t size)
{
	static char line[4 * MAX_LINE];
	size_t i = 0, n, used;
	const char *rest;
	long long t, want;

	while (i < size) {
		n = 0;
		while (i < size && n < sizeof(line) - 1) {
			line[n++] = (char)data[i++];
			if (line[n - 1] == '\n')
				break;
		}
		line[n] = 0;
		line[strcspn(line, "\n")] = 0;
		t = 0;
		rest = parse_stamp(line, &t);
		CHECK(!rest || (rest >= line && rest <= line + strlen(line)),
		      "parse_stamp returned a pointer outside the line");
		if (iso_model(line, &want, &used) == 0)
			CHECK(rest == line + used && t == want,
			      "parse_stamp read \"%.40s\" as %lld, up to %td;"
			      " it is %lld, up to %zu", line, t,
			      rest ? rest - line : -1, want, used);
	}
}

/* rep_reset - forget every triplet, as a new `greylistd report`. Its
 * walk of all SEEN_BUCKETS is not instrumented: it would dominate. */
__attribute__((no_sanitize("coverage")))
static void rep_reset(void)
{
	struct seen *s, *next;
	size_t b;

	if (rep.n)
		for (b = 0; b < SEEN_BUCKETS; b++) {
			for (s = rep.bucket[b]; s; s = next) {
				next = s->next;
				free(s->key);
				free(s->addr);
				free(s->name);
				free(s->sender);
				free(s->recipient);
				free(s);
			}
			rep.bucket[b] = NULL;
		}
	rep.n = 0;
	rep.end = 0;
}

/* check_print - report_print's output adds up */
static void check_print(void)
{
	size_t len, listed = 0, deferred, passed, never, pending;
	long long median;
	char *out, *last, *p;

	CHECK(report_print() == 0, "report_print failed");
	out = fz_take(out_fd, &len);
	CHECK(len > 0 && out[len - 1] == '\n', "no summary line");
	out[len - 1] = 0;
	last = strrchr(out, '\n');
	last = last ? last + 1 : out;
	CHECK(sscanf(last, "# deferred=%zu passed_later=%zu never_retried=%zu"
		     " pending=%zu median_delay=%llds", &deferred, &passed,
		     &never, &pending, &median) == 5, "summary: %s", last);
	CHECK(deferred == passed + never + pending && deferred <= rep.n,
	      "the summary does not add up: %s (%zu triplets)", last, rep.n);
	CHECK(median >= 0, "a negative delay: %s", last);
	for (p = out; p < last && *p != '#'; p = strchr(p, '\n') + 1)
		listed++;
	CHECK(listed == never, "%zu lines listed, never_retried=%zu", listed,
	      never);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static char marker[MAX_TEXT + 1];

	(void)argc;
	(void)argv;
	setenv("TZ", "UTC", 1);
	tzset();
	log_in = fz_memfd("maillog");
	fz_path(log_in, log_path, sizeof(log_path));
	out_fd = fz_memfd("stdout");
	if (dup2(out_fd, 1) != 1)
		abort();
	snprintf(marker, sizeof(marker), "%s", cfg.greylist_text);
	marker[strcspn(marker, "%")] = 0;
	rep.marker = marker;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t len;

	if (size < 1 || size > 1 << 20)
		return 0;
	cfg.top = data[0] & 3;
	cfg.window = data[0] & 4 ? 30 : 0;
	cfg.since = data[0] & 0x20 ? 3600 : 0;
	check_stamps(data + 1, size - 1);
	fz_set(log_in, data + 1, size - 1);
	CHECK(report_file(log_path) == 0, "report_file failed");
	if ((data[0] & 0x18) == 0x18)
		check_print();
	fz_take(out_fd, &len);
	rep_reset();
	return 0;
}
