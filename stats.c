/*
 * stats.c - greylistctl stats: the database's figures, as key=value lines
 * or in the OpenMetrics text format
 *
 *	Every figure is derived from the records of a private copy of the
 *	database (greylistctl.c, snap_take): nothing on the serving path
 *	counts anything, so a request costs what it cost before. What the
 *	records tell, besides how many there are of each kind:
 *	  - the triplets first deferred in the last day (FIRST), and what
 *	    became of each: passed (PASSED set), never retried (still
 *	    pending a window after it: greylistd's --delay, the report's
 *	    default window), or pending (deferred less than that ago);
 *	  - the greylisting delay (PASSED - FIRST) of every triplet that
 *	    first passed in the last day;
 *	  - the last expiry and reorganization (the notes).
 *	What they cannot tell: early retries, the later passes of a known
 *	triplet, whitelisted and auto-whitelisted passes, fail-opens and bad
 *	requests write nothing, so they are counted only in the log
 *	(greylistctl report, or journalctl GREYLISTD_REASON=...). Counting
 *	them here would put a write on the reader path.
 *
 *	--openmetrics writes OpenMetrics 1.0 that is also Prometheus's text
 *	format 0.0.4, which node_exporter's textfile collector reads: gauges
 *	and one histogram only (a counter's sample names differ between the
 *	two), "# EOF" at the end (a comment to Prometheus). Help texts and
 *	label values are constants, so nothing needs escaping. --output=FILE
 *	replaces FILE whole or not at all.
 */

#define _GNU_SOURCE

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "greylist.h"
#include "greylistctl.h"

/* The "last day" of the figures that look back. */
#define LOOKBACK	DAY

/* The buckets of the greylisting delay, in seconds. Postfix retries a
 * deferred message after 300 s, then at doubling intervals up to 4000 s
 * (minimal_backoff_time, maximal_backoff_time); other MTAs after 15 or
 * 30 minutes (RFC 5321 asks for 30 or more), some after hours; the retry
 * window (2 days by default) ends it. The metrics' histogram and the
 * HTML report's chart use the same buckets, so that they compare (the
 * compiler holds NDELAY_BUCKETS, in greylistctl.h, to this table). */
const long long delay_buckets[] = {
	60, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, DAY, 2 * DAY,
};

/* What became of a deferred triplet, as the report's summary line and
 * the metrics' labels name it. */
const char *const fate_names[NFATES] = {
	[FATE_PASSED] = "passed_later", [FATE_LOST] = "never_retried",
	[FATE_PENDING] = "pending",
};

struct stats {
	long long n[128];		/* records of each kind */
	long long pending, passed, awl;
	long long oldest, newest, last_expiry, last_reorganize;
	char keys[16];
	long long now, window;
	long long fate[NFATES];		/* of the last day's deferrals */
	long long delays[NDELAY_BUCKETS + 1];	/* the last day's passes, by bucket */
	long long delay_sum;
};

/* format_span - a duration as a short word: "90s", "5m", "2h", "2d" */
const char *format_span(char *buf, size_t size, long long s)
{
	if (s % DAY == 0 && s)
		snprintf(buf, size, "%lldd", s / DAY);
	else if (s % 3600 == 0 && s)
		snprintf(buf, size, "%lldh", s / 3600);
	else if (s % 60 == 0 && s)
		snprintf(buf, size, "%lldm", s / 60);
	else
		snprintf(buf, size, "%llds", s);
	return buf;
}

/* count_triplet - a triplet's share of the figures */
static void count_triplet(struct stats *st, const long long *f)
{
	long long age = st->now - f[T_FIRST];
	size_t b;

	st->pending += f[T_PASSED] == 0;
	st->passed += f[T_PASSED] != 0;
	if (!st->oldest || f[T_FIRST] < st->oldest)
		st->oldest = f[T_FIRST];
	if (age >= 0 && age < LOOKBACK)
		st->fate[f[T_PASSED] ? FATE_PASSED : age >= st->window
			 ? FATE_LOST : FATE_PENDING]++;
	if (f[T_PASSED] && st->now - f[T_PASSED] < LOOKBACK
	    && f[T_PASSED] <= st->now) {
		for (b = 0; b < NDELAY_BUCKETS && f[T_PASSED] - f[T_FIRST]
		     > delay_buckets[b]; b++)
			;
		st->delays[b]++;
		st->delay_sum += f[T_PASSED] - f[T_FIRST];
	}
}

/* is_note - the key is the note n's */
static int is_note(datum key, enum note n)
{
	datum k = note_key(n);

	return key.dsize == k.dsize
		&& memcmp(key.dptr, k.dptr, (size_t)key.dsize) == 0;
}

/* count_record - add one record to the figures */
static void count_record(datum key, datum value, void *arg)
{
	struct stats *st = arg;
	struct key_kind kk;
	struct rec r;
	long long v;

	rec_split(key, value, &r);
	st->n[(unsigned char)r.kind]++;
	if (r.kind == 'T')
		count_triplet(st, r.f);
	if (r.kind == 'C')
		st->awl += cfg.awl && r.f[C_COUNT] >= cfg.awl;
	if ((r.kind == 'T' || r.kind == 'C')
	    && r.f[r.kind == 'T' ? T_LAST : C_LAST] > st->newest)
		st->newest = r.f[r.kind == 'T' ? T_LAST : C_LAST];
	if (r.kind == 'M' && is_note(key, NOTE_EXPIRE)
	    && record_decode(value, &v, 1) == 0)
		st->last_expiry = v;
	if (r.kind == 'M' && is_note(key, NOTE_REORGANIZE)
	    && record_decode(value, &v, 1) == 0)
		st->last_reorganize = v;
	if (r.kind == 'M' && is_note(key, NOTE_KEYS))
		snprintf(st->keys, sizeof(st->keys), "%s",
			 key_kind_parse(value, &kk) != 0 ? "unknown" : kk.hashed
			 ? "hmac-sha256" : "plain");
}

/* print_stat_time - "key=2026-11-29T11:03:36Z", or "key=none" */
static void print_stat_time(FILE *f, const char *name, long long t)
{
	char buf[32];

	(void)fprintf(f, "%s=%s\n", name, t <= 0 ? "none"
		      : format_time(buf, sizeof(buf), TS_UTC, (time_t)t));
}

/* print_text - one "key=value" per line */
static void print_text(FILE *f, const struct stats *st, long long total,
		       long long size)
{
	/* errors of these writes are seen once, by output_close() */
	(void)fprintf(f, redis_in_use() ? "store=%s\nused_memory=%lld\n"
		      : "file=%s\nfile_size=%lld\n", store_name(), size);
	(void)fprintf(f, "keys=%s\nrecords=%lld\ntriplets=%lld\npending=%lld\n"
		      "passed=%lld\nclients=%lld\nauto_whitelisted=%lld\n"
		      "unknown=%lld\n", st->keys, total, st->n['T'], st->pending,
		      st->passed, st->n['C'], st->awl, st->n['X']);
	print_stat_time(f, "oldest", st->oldest);
	print_stat_time(f, "newest", st->newest);
	print_stat_time(f, "last_expiry", st->last_expiry);
	print_stat_time(f, "last_reorganize", st->last_reorganize);
}

/* om_family - a metric family's metadata: type, unit (or NULL), help */
static void om_family(FILE *f, const char *name, const char *type,
		      const char *unit, const char *help)
{
	(void)fprintf(f, "# TYPE %s %s\n", name, type);
	if (unit)
		(void)fprintf(f, "# UNIT %s %s\n", name, unit);
	(void)fprintf(f, "# HELP %s %s\n", name, help);
}

/* A gauge of one value, or of one value per label. */
struct sample {
	const char *label;		/* NULL: the family's only sample */
	long long value;
};

/* om_gauge - a gauge family and its samples, labelled "key" */
static void om_gauge(FILE *f, const char *name, const char *unit,
		     const char *help, const char *key,
		     const struct sample *s, size_t n)
{
	size_t i;

	om_family(f, name, "gauge", unit, help);
	for (i = 0; i < n; i++)
		if (s[i].label)
			(void)fprintf(f, "%s{%s=\"%s\"} %lld\n", name, key,
				      s[i].label, s[i].value);
		else
			(void)fprintf(f, "%s %lld\n", name, s[i].value);
}

/* om_delays - the last day's delays, a cumulative histogram; "le" in
 * OpenMetrics' canonical form (60.0) */
static void om_delays(FILE *f, const struct stats *st)
{
	const char *name = "greylistd_pass_delay_seconds";
	long long below = 0;
	size_t b;

	om_family(f, name, "histogram", "seconds", "Greylisting delay"
		  " (first try to first pass) of the triplets that first"
		  " passed in the last 24 hours. A window that moves, not a"
		  " counter: use histogram_quantile() on the buckets"
		  " themselves, not on their rate().");
	for (b = 0; b <= NDELAY_BUCKETS; b++) {
		below += st->delays[b];
		if (b < NDELAY_BUCKETS)
			(void)fprintf(f, "%s_bucket{le=\"%lld.0\"} %lld\n", name,
				      delay_buckets[b], below);
		else
			(void)fprintf(f, "%s_bucket{le=\"+Inf\"} %lld\n", name,
				      below);
	}
	(void)fprintf(f, "%s_sum %lld\n%s_count %lld\n", name, st->delay_sum,
		      name, below);
}

/* print_openmetrics - the figures as metrics, for node_exporter */
static void print_openmetrics(FILE *f, const struct stats *st,
			      long long total, long long size)
{
	const struct sample kinds[] = {
		{ "pending", st->pending }, { "passed", st->passed },
		{ "client", st->n['C'] },
		{ "note", total - st->n['T'] - st->n['C'] - st->n['X'] },
		{ "unknown", st->n['X'] },
	}, fates[NFATES] = {
		{ fate_names[FATE_PASSED], st->fate[FATE_PASSED] },
		{ fate_names[FATE_LOST], st->fate[FATE_LOST] },
		{ fate_names[FATE_PENDING], st->fate[FATE_PENDING] },
	};

	om_gauge(f, "greylistd_records", NULL, "Records in the database, by"
		 " kind: triplets pending and passed, auto-whitelist clients,"
		 " greylistd's notes, records of no known shape.", "kind",
		 kinds, sizeof(kinds) / sizeof(kinds[0]));
	om_gauge(f, "greylistd_auto_whitelisted_clients", NULL, "Clients"
		 " passed often enough not to be greylisted.", NULL,
		 &(struct sample){ NULL, st->awl }, 1);
	if (redis_in_use()) {	/* Redis expires records itself (TTLs) */
		om_gauge(f, "greylistd_redis_used_memory_bytes", "bytes", "The"
			 " Redis server's used memory, all of its keys.", NULL,
			 &(struct sample){ NULL, size }, 1);
	} else {
		om_gauge(f, "greylistd_database_size_bytes", "bytes", "The size"
			 " of the database file.", NULL,
			 &(struct sample){ NULL, size }, 1);
		om_gauge(f, "greylistd_last_expiry_timestamp_seconds", "seconds",
			 "When the last expiry began, in Unix time; 0: never.",
			 NULL, &(struct sample){ NULL, st->last_expiry }, 1);
		om_gauge(f, "greylistd_last_reorganization_timestamp_seconds",
			 "seconds", "When expiry last reorganized the file, in"
			 " Unix time; 0: never.", NULL,
			 &(struct sample){ NULL, st->last_reorganize }, 1);
	}
	om_gauge(f, "greylistd_deferred_last_day", NULL, "Triplets first"
		 " deferred in the last 24 hours, by what became of them:"
		 " passed later, never retried (not passed within greylistd's"
		 " delay), pending (deferred less than the delay ago).",
		 "outcome", fates, NFATES);
	om_delays(f, st);
	(void)fputs("# EOF\n", f);
}

/* store_size - the file's size, or the Redis server's used memory; -1
 * (said) when it cannot be had */
static int store_size(long long *size)
{
	struct timespec deadline = deadline_in(cfg.wait);
	struct stat sb;

	*size = redis_in_use() ? redis_memory(&deadline)
		: stat(cfg.db_path, &sb) == 0 ? (long long)sb.st_size : -1;
	if (*size >= 0)
		return 0;
	say("%s: %s", store_name(), redis_in_use() ? redis_why()
	    : strerror(errno));
	return -1;
}

/* stats - the database's figures, as "key=value" lines or metrics, on
 * stdout or into the file "path" (whole or not at all) */
int stats(int openmetrics, const char *path)
{
	struct output out;
	struct stats st;
	struct snap s;
	long long total, size;

	if (snap_need(&s) != 0)
		return 1;
	memset(&st, 0, sizeof(st));
	snprintf(st.keys, sizeof(st.keys), "plain");
	st.now = (long long)time(NULL);
	st.window = cfg.delay;
	total = walk_said(s.dbf, count_record, &st);
	snap_free(&s);
	if (total < 0 || store_size(&size) != 0
	    || output_open(&out, path) != 0)
		return 1;
	if (openmetrics)
		print_openmetrics(out.f, &st, total, size);
	else
		print_text(out.f, &st, total, size);
	return output_close(&out, 1);
}
