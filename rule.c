/*
 * rule.c - the records and the greylisting rule
 *
 *	decide() is the one statement of the rule: given the stored triplet
 *	and client records (NULL when absent or of another shape) and the
 *	time, it says the verdict and which records must be written. It does
 *	no I/O, so every store (the GDBM file, Redis), greylistctl explain
 *	and the tests all use this same function. expired() says, by the
 *	same durations, when a record has outlived its use.
 *
 *	Records are validated on every read: a value that is not exactly
 *	"1" and the right count of decimal numbers in range, or whose times
 *	are out of order, is treated as absent (and so rewritten).
 */

#define _GNU_SOURCE

#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>

#include "greylist.h"

const char *const note_names[NOTE_COUNT] = {
	[NOTE_KEYS] = "keys",
	[NOTE_EXPIRE] = "expire",
	[NOTE_PEAK] = "peak",
	[NOTE_WHITELIST] = "whitelist",
	[NOTE_REORGANIZE] = "reorganize",
};

/* note_key - "M\n" and the note's name */
datum note_key(enum note n)
{
	static char keys[NOTE_COUNT][16];

	snprintf(keys[n], sizeof(keys[n]), "M\n%s", note_names[n]);
	return (datum){ keys[n], (int)strlen(keys[n]) };
}

/* parse_time - one decimal number in [0, MAX_TIME] ending at a space or
 * the end; no sign, no leading zeros but "0" itself */
static const char *parse_time(const char *p, const char *end, long long *v)
{
	long long n = 0;
	const char *start = p;

	while (p < end && *p >= '0' && *p <= '9') {
		n = n * 10 + (*p - '0');
		if (n > MAX_TIME)
			return NULL;
		p++;
	}
	if (p == start || (*start == '0' && p - start > 1))
		return NULL;
	*v = n;
	return p;
}

/* record_decode - "1 N N N": the version, then exactly n numbers; 0 when
 * the value has exactly this shape */
int record_decode(datum d, long long *f, int n)
{
	const char *p = d.dptr, *end;
	int i;

	if (!p || d.dsize < 2 || p[0] != '1')
		return -1;
	end = p + d.dsize;
	p++;
	for (i = 0; i < n; i++) {
		if (p >= end || *p != ' ')
			return -1;
		p = parse_time(p + 1, end, &f[i]);
		if (!p)
			return -1;
	}
	return p == end ? 0 : -1;
}

/* record_encode - the inverse of record_decode */
datum record_encode(char *buf, size_t size, const long long *f, int n)
{
	size_t o = 1;
	int i;

	buf[0] = '1';
	for (i = 0; i < n; i++)
		o += (size_t)snprintf(buf + o, size - o, " %lld", f[i]);
	return (datum){ buf, (int)o };
}

/* triplet_record - decode and check a T record; NULL if it is absent or
 * has any other shape, so that it is treated as new and rewritten */
const long long *triplet_record(datum d, long long *rec)
{
	if (!d.dptr || record_decode(d, rec, T_FIELDS) != 0
	    || rec[T_FIRST] > rec[T_LAST]
	    || (rec[T_PASSED] != 0 && (rec[T_PASSED] < rec[T_FIRST]
				       || rec[T_PASSED] > rec[T_LAST])))
		return NULL;
	return rec;
}

/* client_record - decode a C record; NULL if absent or of another shape */
const long long *client_record(datum d, long long *rec)
{
	if (!d.dptr || record_decode(d, rec, C_FIELDS) != 0)
		return NULL;
	return rec;
}

/* touch_interval - how stale a passed triplet's LAST may grow before a
 * pass refreshes it: TOUCH_INTERVAL, or max-age/100 when that is less */
long long touch_interval(void)
{
	long long t = cfg.max_age / 100;

	return t < TOUCH_INTERVAL ? t : TOUCH_INTERVAL;
}

/* decide_triplet - the greylisting rule for one triplet */
static void decide_triplet(const long long *t, long long now,
			   struct outcome *o)
{
	long long waited;

	if (t)
		memcpy(o->t, t, sizeof(o->t));
	if (!t || now - t[T_LAST] > cfg.max_age
	    || (t[T_PASSED] == 0 && (now - t[T_FIRST] > cfg.retry_window
				     || t[T_FIRST] > now))) {
		o->v = V_NEW;
		o->seconds = cfg.delay;
		o->t[T_FIRST] = o->t[T_LAST] = now;
		o->t[T_PASSED] = 0;
		o->store_t = 1;
		return;
	}
	waited = now - t[T_FIRST];
	if (t[T_PASSED] == 0 && waited < cfg.delay) {
		o->v = V_EARLY;
		o->seconds = cfg.delay - waited;
		return;
	}
	if (t[T_PASSED] == 0) {
		o->v = V_PASS_FIRST;
		o->seconds = waited;
		o->t[T_PASSED] = o->t[T_LAST] = now;
		o->store_t = 1;
		return;
	}
	o->v = V_PASS;
	if (now - t[T_LAST] >= touch_interval()) {
		o->t[T_LAST] = now;
		o->store_t = 1;
	}
}

/* learn - --learn: a triplet the rule would defer is answered DUNNO and
 * recorded as passed now, so that whoever wrote while greylistd learned
 * is not delayed once it enforces. The client is not counted towards the
 * auto-whitelist: that is earned by retrying, which learning cannot see
 * (a spam bot that sent for five hours would be whitelisted). */
static void learn(long long now, struct outcome *o)
{
	o->learned = o->v;
	o->v = V_LEARN;
	o->t[T_PASSED] = o->t[T_LAST] = now;
	o->store_t = 1;
}

/* count_client - note a pass of the client, at most once per
 * AWL_INTERVAL, as postgrey counts; the count is the client's passes */
static void count_client(long long now, struct outcome *o)
{
	if (now - o->c[C_LAST] < AWL_INTERVAL && o->c[C_LAST] <= now)
		return;
	if (o->c[C_COUNT] < MAX_AWL_COUNT)
		o->c[C_COUNT]++;
	o->c[C_LAST] = now;
	o->store_c = 1;
}

/* decide - the verdict, given the stored triplet and client records
 * (NULL when absent or of another shape) and the time. An
 * auto-whitelisted client's record is refreshed too (count_client), so
 * that it stays whitelisted while it keeps sending. */
void decide(const long long *t, const long long *c, long long now,
	    struct outcome *o)
{
	o->store_t = o->store_c = o->awl_new = 0;
	o->seconds = 0;
	if (c && now - c[C_LAST] <= cfg.max_age)
		memcpy(o->c, c, sizeof(o->c));
	else
		memset(o->c, 0, sizeof(o->c));
	if (cfg.awl && o->c[C_COUNT] >= cfg.awl) {
		o->v = V_AWL;
		count_client(now, o);
		return;
	}
	decide_triplet(t, now, o);
	if (cfg.learn && verdicts[o->v].defer)
		learn(now, o);
	if (cfg.awl && o->v == V_PASS_FIRST) {
		count_client(now, o);
		o->awl_new = o->store_c && o->c[C_COUNT] == cfg.awl;
	}
}

/* The decision lines' words, and how each verdict is answered. */
const struct verdict_info verdicts[] = {
	[V_NEW] = { "greylist", "new", 1, LOG_INFO },
	[V_EARLY] = { "greylist", NULL, 1, LOG_INFO },
	[V_PASS_FIRST] = { "pass", "triplet found", 0, LOG_INFO },
	[V_PASS] = { "pass", "triplet found", 0, LOG_INFO },
	[V_AWL] = { "pass", "client AWL", 0, LOG_INFO },
	[V_WL_CLIENT] = { "pass", "client whitelist", 0, LOG_INFO },
	[V_WL_RCPT] = { "pass", "recipient whitelist", 0, LOG_INFO },
	[V_FAIL_OPEN] = { "pass", NULL, 0, LOG_WARNING },
	[V_NOT_RCPT] = { NULL, NULL, 0, 0 },
	[V_BAD_REQUEST] = { "pass", NULL, 0, LOG_WARNING },
	[V_LEARN] = { "pass", NULL, 0, LOG_INFO },
	[V_DATA] = { "greylist", NULL, 1, LOG_INFO },
};

/* verdict_reason - what a decision line gives as reason=...: the
 * verdict's word, the seconds an early retry misses, the outcome's own
 * text (a fault, a bad request), or with --learn "learning (would
 * greylist: REASON)" */
const char *verdict_reason(const struct outcome *o, char *buf, size_t size)
{
	enum verdict v = o->v == V_LEARN ? o->learned : o->v;
	const char *r = verdicts[v].reason ? verdicts[v].reason : o->why;
	char early[64];

	if (v == V_EARLY)
		snprintf(early, sizeof(early), "early-retry (%llds missing)",
			 o->seconds);
	if (o->v == V_LEARN)
		snprintf(buf, size, "learning (would greylist: %s)",
			 v == V_EARLY ? early : r);
	else
		snprintf(buf, size, "%s", v == V_EARLY ? early : r);
	return buf;
}

/* expiry_due - the last expiry (-1: never) was EXPIRE_INTERVAL ago or
 * more, or lies in the future (a clock stepped back) */
int expiry_due(long long last, long long now)
{
	return last < 0 || now - last >= EXPIRE_INTERVAL || last > now;
}

/* fail_open - an internal fault: the request will be answered DUNNO */
void fail_open(struct outcome *o, const char *why)
{
	o->v = V_FAIL_OPEN;
	o->store_t = o->store_c = o->awl_new = 0;
	snprintf(o->why, sizeof(o->why), "fail-open (%s)", why);
}

/* record_end - the last second a record is of use: a triplet or client
 * until max-age after it was last seen, a pending triplet no longer than
 * the retry window (its next try starts over anyway). expired() once the
 * time is past it, and the Redis store's TTL ends there. -1 for a T or C
 * record of another shape; LLONG_MAX for a note, which never expires. */
long long record_end(datum key, datum value)
{
	long long f[T_FIELDS], end;

	if (key.dsize < 2 || key.dptr[1] != '\n'
	    || (key.dptr[0] != 'T' && key.dptr[0] != 'C'))
		return LLONG_MAX;
	if (key.dptr[0] == 'C')
		return client_record(value, f) ? f[C_LAST] + cfg.max_age : -1;
	if (!triplet_record(value, f))
		return -1;
	end = f[T_LAST] + cfg.max_age;
	if (f[T_PASSED] == 0 && f[T_FIRST] + cfg.retry_window < end)
		end = f[T_FIRST] + cfg.retry_window;
	return end;
}

/* expired - the record has outlived its use, or has no known shape */
int expired(datum key, datum value, long long now)
{
	long long end = record_end(key, value);

	return end < 0 || now > end;
}
