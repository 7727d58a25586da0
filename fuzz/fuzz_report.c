/*
 * fuzz_report - greylistctl report's log reader and its printing
 * (report.c) under libFuzzer.
 *
 * The bytes (after a one-byte header) are a log file (a memfd) read by
 * report_file(): parse_stamp() (parse_iso, syslog's stamp), then
 * report_line() with greylistd's decision lines (log_field), Postfix's
 * reject lines (copy_span, angle) and Postfix's lines of an accepted
 * message (queue_id; client=, from=, to=, removed: message_get,
 * message_drop), each deferral or pass counted by note_event()
 * (make_triplet, record_key, seen_get). Then, as cmd_report does without
 * the database, the triplets are gathered (twalk) and report_print()
 * prints them to stdout (a memfd), its header and summary to stderr
 * (another memfd, for the call only). The trees are emptied between
 * inputs, so memory stays bounded. Invariants:
 *   - parse_stamp returns NULL or a pointer into the line, and reads an
 *     ISO 8601 stamp ("2026-11-29T11:03:36.5+01:00", "...Z", "...+0100",
 *     "...+01") as the time an independent model says it names;
 *   - report_file reads every line without failing;
 *   - the report adds up: deferred = passed_later + never_retried +
 *     pending, at most one deferred triplet per triplet seen, one listed
 *     line per never-retried triplet and per triplet that --learn's
 *     lines say enforcing would have deferred (would_delay=, printed
 *     with them), and no delay is negative (a pass counts only after a
 *     deferral);
 *   - every line on stdout is printable ASCII (a field of a crafted log
 *     line cannot reach the admin's terminal): the listed lines hold the
 *     columns asked for, none empty, separated by one space or one tab;
 *     the tops are "# top ..." titles and "COUNT VALUE" lines.
 *
 * Header: h & 3: --top; h & 4: --window=30s (else --delay's 300 s);
 * h & 0x18 == 0x18: the report is printed (else only read); h & 32:
 * --since=1h; h & 64: --show_time and --show_tries; h & 128: --tab,
 * --separate_by_subnet and --separate_by_ip (lines "-- ..."), and
 * --skip_pool.
 */

#include "fuzz.h"

#include "report.c"

static int log_in = -1, out_fd = -1, err_fd = -1;
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
 * YYYY-MM-DDTHH:MM:SS, optional fraction, then Z, +HH:MM, +HHMM or +HH,
 * not followed by more of a zone's characters; 0 when s starts with one,
 * -1 when not (the model has no opinion) */
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
	    || (s[*used] && strchr("+-:0123456789", s[*used])))
		return -1;		/* report.c's zone runs on: no opinion */
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

/* free_seen, free_message - tdestroy's release of one node */
static void free_seen(void *p)
{
	struct seen *s = p;

	free(s->key);
	free(s->addr);
	free(s->name);
	free(s->sender);
	free(s->recipient);
	free(s);
}

static void free_message(void *p)
{
	struct message *m = p;

	free(m->qid);
	free(m->addr);
	free(m->sender);
	free(m);
}

/* rep_reset - forget every triplet and message, as a new report */
static void rep_reset(void)
{
	tdestroy(rep.seen, free_seen);
	tdestroy(rep.messages, free_message);
	rep.seen = rep.messages = NULL;
	rep.n = 0;
	rep.end = 0;
	rep.lines = 0;
	free(rep.all);			/* the entries went with rep.seen */
	rep.all = NULL;
	rep.cap = 0;
	all.s = NULL;
	all.n = 0;
}

/* check_listed - one listed line: the columns asked for, each non-empty
 * and printable, separated by exactly one separator */
static void check_listed(const char *line, size_t len)
{
	size_t want = 4 + (show_time ? 1 : 0) + (show_tries ? 1 : 0), n = 1, i;
	char sep = tab ? '\t' : ' ';

	CHECK(len > 0 && line[0] != sep && line[len - 1] != sep,
	      "a listed line with an empty column: %.*s", (int)len, line);
	for (i = 0; i < len; i++) {
		if (line[i] == sep) {
			CHECK(line[i + 1] != sep, "an empty column: %.*s",
			      (int)len, line);
			n++;
			continue;
		}
		CHECK(line[i] > 32 && line[i] < 127, "a non-printable byte"
		      " 0x%02x in a listed line: %.*s", (unsigned char)line[i],
		      (int)len, line);
	}
	CHECK(n == want, "%zu columns, not %zu: %.*s", n, want, (int)len, line);
}

/* check_print - report_print's output: printable, and it adds up */
static void check_print(void)
{
	size_t len, elen, listed = 0, deferred, passed, never, pending, i,
		would = 0;
	int saved = dup(2), tops = 0;
	long long median;
	char *out, *err, *line, *nl, *sum, *wd;

	all.s = rep.all;
	all.n = rep.n;
	CHECK(saved >= 0 && dup2(err_fd, 2) == 2, "stderr");
	i = (size_t)report_print();
	CHECK(dup2(saved, 2) == 2 && close(saved) == 0, "stderr");
	CHECK(i == 0, "report_print failed");
	err = fz_take(err_fd, &elen);
	CHECK(elen > 0 && err[elen - 1] == '\n', "no summary line: %s", err);
	err[elen - 1] = 0;
	sum = strrchr(err, '\n');
	sum = sum ? sum + 1 : err;
	CHECK(sscanf(sum, "# deferred=%zu passed_later=%zu never_retried=%zu"
		     " pending=%zu median_delay=%llds", &deferred, &passed,
		     &never, &pending, &median) == 5, "summary: %s", sum);
	CHECK(deferred == passed + never + pending && deferred <= rep.n,
	      "the summary does not add up: %s (%zu triplets)", sum, rep.n);
	CHECK(median >= 0, "a negative delay: %s", sum);
	wd = strstr(sum, " would_delay=");
	CHECK(!wd || (sscanf(wd, " would_delay=%zu", &would) == 1
		      && would > 0 && deferred + would <= rep.n),
	      "would_delay: %s (%zu triplets)", sum, rep.n);
	for (line = err; (nl = strchr(line, '\n')); line = nl + 1)
		CHECK(fz_printable(line, (size_t)(nl - line)),
		      "a non-printable byte on stderr: %.*s", (int)(nl - line),
		      line);
	out = fz_take(out_fd, &len);
	CHECK(len == 0 || out[len - 1] == '\n', "stdout ends inside a line");
	for (line = out; line < out + len; line = nl + 1) {
		nl = memchr(line, '\n', (size_t)(out + len - line));
		if (strncmp(line, "# top ", 6) == 0)
			tops++;
		if (tops || strncmp(line, "-- ", 3) == 0) {
			CHECK(fz_printable(line, (size_t)(nl - line)),
			      "a non-printable byte on stdout: %.*s",
			      (int)(nl - line), line);
		} else {
			check_listed(line, (size_t)(nl - line));
			listed++;
		}
	}
	CHECK(listed == never + would, "%zu lines listed, never_retried=%zu"
	      " would_delay=%zu", listed, never, would);
	CHECK(tops == (top ? 2 : 0), "%d tops printed, --top=%lld", tops, top);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	setenv("TZ", "UTC", 1);
	tzset();
	log_in = fz_memfd("maillog");
	fz_path(log_in, log_path, sizeof(log_path));
	err_fd = fz_memfd("stderr");
	out_fd = fz_memfd("stdout");
	if (dup2(out_fd, 1) != 1)
		abort();
	snprintf(rep.marker, sizeof(rep.marker), "%s", cfg.greylist_text);
	rep.marker[strcspn(rep.marker, "%")] = 0;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t len;

	if (size < 1 || size > 1 << 20)
		return 0;
	top = data[0] & 3;
	window = data[0] & 4 ? 30 : 0;
	since = data[0] & 0x20 ? 3600 : 0;
	show_time = show_tries = (data[0] & 0x40) != 0;
	tab = skip_pool = (data[0] & 0x80) != 0;
	sep_subnet = tab ? "-- net\\n" : NULL;
	sep_ip = tab ? "-- ip\\n" : NULL;
	check_stamps(data + 1, size - 1);
	fz_set(log_in, data + 1, size - 1);
	CHECK(report_file(log_path) == 0, "report_file failed");
	if ((data[0] & 0x18) == 0x18)
		check_print();
	CHECK(fflush(stdout) == 0, "stdout");
	fz_take(out_fd, &len);
	rep_reset();
	return 0;
}
