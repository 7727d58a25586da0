/*
 * explain.c - greylistctl explain: why a request gets its answer
 *
 *	greylistctl explain --client-address=A [--client-name=N]
 *	    --sender=S --recipient=R
 *
 *	prints, and writes nothing: the triplet as greylistd normalises it
 *	and its keys; the whitelist entry that matched (FILE:LINE) or that
 *	none did; the client's auto-whitelist record; the stored triplet
 *	record; the answer the next request would get, in the words of
 *	greylistd's decision line, and what it would write; then, with no
 *	other request between, from when that answer changes.
 *
 *	It asks what the server asks, with the server's own code: the
 *	triplet and its keys (triplet.c), the whitelist match (wl_match),
 *	the records as rule.c validates them, decide() and the log's words
 *	(verdict_reason). The times at which the answer changes are found by
 *	asking decide() at every time where a record's time plus one of the
 *	rule's durations is crossed, so that there is no second statement
 *	of the rule here. The file is read under its shared lock, as a
 *	serving reader reads it.
 */

#define _GNU_SOURCE

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "greylist.h"
#include "greylistctl.h"

static const char *ex_addr, *ex_name, *ex_sender, *ex_rcpt;

/* explain's own options: the request's attributes, as Postfix names them */
const struct option_spec explain_options[NEXPLAIN_OPTIONS] = {
	{ "client-address", OPT_STRING, 0, 0, 0, &ex_addr,
	  "explain: the client's address (client_address)" },
	{ "client-name", OPT_STRING, 0, 0, 0, &ex_name,
	  "explain: its verified name (client_name; unknown)" },
	{ "sender", OPT_STRING, 0, 0, 0, &ex_sender,
	  "explain: the sender (--sender= for the null sender)" },
	{ "recipient", OPT_STRING, 0, 0, 0, &ex_rcpt,
	  "explain: the recipient" },
};

/* What explain found: the request's records and whether they were there. */
struct found {
	struct triplet t;
	struct keys k;
	struct key_kind kk;
	int file, kind_known;		/* a file; its key kind known */
	long long trec[T_FIELDS], crec[C_FIELDS];
	const long long *tp, *cp;	/* NULL: absent or of another shape */
	int t_there, c_there;		/* a value, of any shape */
};

/* show_time - "2026-12-01T18:00:00Z (300s ago)", or "-" for 0 */
static void show_time(long long t, long long now)
{
	char buf[32];

	if (t <= 0) {
		(void)fputs("-", stdout);
		return;
	}
	printf("%s (%llds %s)", format_time(buf, sizeof(buf), TS_UTC, (time_t)t),
	       t <= now ? now - t : t - now, t <= now ? "ago" : "from now");
}

/* show_times - a triplet record's three times, and the line's end */
static void show_times(const long long *rec, long long now)
{
	printf("first ");
	show_time(rec[T_FIRST], now);
	printf(", last ");
	show_time(rec[T_LAST], now);
	printf(", passed ");
	show_time(rec[T_PASSED], now);
	putchar('\n');
}

/* check_value - a value Postfix could send: at most MAX_LINE bytes, no
 * newline; -1 (said) otherwise */
static int check_value(const char *name, const char *v)
{
	if (strlen(v) <= MAX_LINE && !strchr(v, '\n'))
		return 0;
	say("--%s: longer than %d bytes or holding a newline: Postfix sends no"
	    " such value", name, MAX_LINE);
	return -1;
}

/* read_records - the request's records, read as a serving reader reads
 * them: under the shared lock, in the file's key kind; -1 (said) when
 * the server would fail open instead */
static int read_records(struct found *f)
{
	struct timespec deadline = deadline_in(cfg.wait);
	datum tv = { NULL, 0 }, cv = { NULL, 0 };
	struct db db;
	int present = 0, rc = -1;

	switch (db_open(&db, 0, &deadline)) {
	case DB_ABSENT:
		f->kind_known = !cfg.privacy;	/* a new file's secret is new */
		return key_kind_new(&f->kk, 0);
	case DB_DAMAGED:
		say("%s is damaged: the server fails open (DUNNO) and repairs"
		    " it", cfg.db_path);
		db_close(&db);
		return -1;
	case DB_FAULT:
		say("%s: the server fails open (DUNNO)", db.why);
		return -1;
	case DB_OK:
		break;
	}
	f->file = 1;
	if (key_kind_read(&db, &f->kk, &present) != 0)
		say("%s: the server fails open (DUNNO)", db.why);
	else if (present && f->kk.hashed != (cfg.privacy != 0))
		say("%s holds %s keys but privacy is %s: the server fails open"
		    " (DUNNO)", cfg.db_path, f->kk.hashed ? "hashed" : "plain",
		    cfg.privacy ? "on" : "off");
	else
		rc = 0;
	f->kind_known = rc == 0 && (present || !cfg.privacy);
	if (rc == 0) {
		triplet_keys(&f->t, &f->kk, &f->k);
		if ((f->k.ckey.dptr && db_fetch(&db, f->k.ckey, &cv) != 0)
		    || db_fetch(&db, f->k.tkey, &tv) != 0) {
			say("%s: the server fails open (DUNNO)", db.why);
			rc = -1;
		}
	}
	f->t_there = tv.dptr != NULL;
	f->c_there = cv.dptr != NULL;
	f->tp = triplet_record(tv, f->trec);
	f->cp = client_record(cv, f->crec);
	free(tv.dptr);
	free(cv.dptr);
	db_close(&db);
	return rc;
}

/* show_triplet - the triplet as greylistd normalises it */
static void show_triplet(const struct triplet *t)
{
	printf("%-12snetwork %s, sender ", "triplet", t->net);
	print_escaped(t->sender, strlen(t->sender));
	printf(", recipient ");
	print_escaped(t->recipient, strlen(t->recipient));
	putchar('\n');
}

/* show_key - a key as dump shows its parts, or why it cannot be shown */
static void show_key(const char *label, datum key, const struct found *f)
{
	printf("%-12s", label);
	if (!f->kind_known)
		(void)fputs("an HMAC-SHA-256 digest under the secret of a file"
			    " not made yet", stdout);
	else
		print_escaped(key.dptr, (size_t)key.dsize);
	putchar('\n');
}

/* show_entry - the whitelist entry that matched, as FILE:LINE: and its
 * kind and value */
static void show_entry(const struct wl_entry *e)
{
	static const char *const kinds[] = {
		[WL_NET] = "client", [WL_HOST] = "client",
		[WL_CLIENT_RE] = "client", [WL_USER] = "recipient",
		[WL_ADDRESS] = "recipient", [WL_DOMAIN] = "recipient",
		[WL_RCPT_RE] = "recipient",
	};
	char net[INET6_ADDRSTRLEN];

	printf("%-12s%s", "whitelist", e->file);
	if (e->line)
		printf(":%u", e->line);
	printf(": %s ", kinds[e->kind]);
	if (e->kind == WL_NET)
		printf("%s/%lld", inet_ntop(e->family, e->net, net,
					    sizeof(net)) ? net : "?", e->bits);
	else
		printf("%s%s", e->text ? e->text : "?",
		       e->kind == WL_USER ? "@" : "");
	putchar('\n');
}

/* show_records - the client's auto-whitelist record and the triplet's */
static void show_records(const struct found *f, long long now)
{
	printf("%-12s", "awl");
	if (!cfg.awl)
		printf("off (auto-whitelist-clients = 0)");
	else if (!f->cp)
		printf("client %s: %s (%lld passes make it whitelisted)",
		       f->t.client, f->c_there ? "a record of no known shape,"
		       " taken as none" : "no record", cfg.awl);
	else {
		printf("client %s: %lld passes counted, %lld make it"
		       " whitelisted; last counted ", f->t.client,
		       f->crec[C_COUNT], cfg.awl);
		show_time(f->crec[C_LAST], now);
	}
	printf("\n%-12s", "record");
	if (!f->tp) {
		printf("%s\n", f->t_there ? "of no known shape, taken as none"
		       " (and rewritten)" : "none");
		return;
	}
	show_times(f->trec, now);
}

/* show_answer - a verdict in the words of greylistd's decision line,
 * after a label */
static void show_answer(const char *label, const struct outcome *o)
{
	char reason[300];

	printf("%s%*saction=%s, reason=%s", label, 12 - (int)strlen(label) > 0
	       ? 12 - (int)strlen(label) : 1, "", verdicts[o->v].action,
	       verdict_reason(o, reason, sizeof(reason)));
	if (o->v == V_PASS_FIRST)
		printf(", delay=%lld", o->seconds);
	putchar('\n');
}

/* show_reply - what the reply is, and what the request writes */
static void show_reply(const struct outcome *o, long long now)
{
	printf("%-12s", "reply");
	if (verdicts[o->v].defer)
		printf("%s with --greylist-text (%lld seconds)%s\n",
		       cfg.greylist_action, o->seconds, cfg.defer_at_data
		       ? "; with defer-at = data: DUNNO at RCPT, and the"
		       " message deferred at DATA" : "");
	else
		printf("%s\n", o->v == V_PASS_FIRST && *cfg.header
		       ? "PREPEND the X-Greylist header (the message's first"
		       " pass), else DUNNO" : "DUNNO");
	if (!o->store_t && !o->store_c)
		printf("%-12snothing\n", "writes");
	if (o->store_t) {
		printf("%-12sthe triplet: ", "writes");
		show_times(o->t, now);
	}
	if (o->store_c)
		printf("%-12sthe client: its count becomes %lld\n", "writes",
		       o->c[C_COUNT]);
}

/* Candidate times: every record time plus each of the rule's durations,
 * and one second after (a rule's bound is ">" or ">="). */
#define MAX_CANDIDATES	(2 * (T_FIELDS + C_FIELDS) * 6)

static int cmp_time(const void *a, const void *b)
{
	long long x = *(const long long *)a, y = *(const long long *)b;

	return (x > y) - (x < y);
}

/* show_changes - with the records as the next request leaves them and
 * no request between, each time from which decide() answers otherwise */
static void show_changes(const struct outcome *next, const long long *t,
			 const long long *c, long long now)
{
	const long long durations[] = { 0, cfg.delay, cfg.retry_window,
		cfg.max_age, touch_interval(), AWL_INTERVAL };
	long long when[MAX_CANDIDATES], fields[T_FIELDS + C_FIELDS];
	size_t nf = 0, n = 0, i, j;
	struct outcome o, last = *next;
	char stamp[32], label[48];
	int shown = 0;

	for (i = 0; t && i < T_FIELDS; i++)
		fields[nf++] = t[i];
	for (i = 0; c && i < C_FIELDS; i++)
		fields[nf++] = c[i];
	for (i = 0; i < nf; i++)
		for (j = 0; j < 2 * sizeof(durations) / sizeof(durations[0]); j++)
			if (fields[i] > 0
			    && fields[i] + durations[j / 2] + (long long)(j % 2) > now)
				when[n++] = fields[i] + durations[j / 2]
					+ (long long)(j % 2);
	qsort(when, n, sizeof(when[0]), cmp_time);
	for (i = 0; i < n; i++) {
		if (i > 0 && when[i] == when[i - 1])
			continue;
		memset(&o, 0, sizeof(o));
		decide(t, c, when[i], &o);
		if (o.v == last.v && (o.v != V_LEARN || o.learned == last.learned))
			continue;
		if (!shown++)
			printf("then, with no other request between:\n");
		snprintf(label, sizeof(label), "  from %s:", format_time(stamp,
			 sizeof(stamp), TS_UTC, (time_t)when[i]));
		show_answer(label, &o);
		last = o;
	}
	if (!shown)
		printf("then        the same answer, however long no request"
		       " comes\n");
}

/* cmd_explain - the request's triplet, keys, whitelist entry, records,
 * answer and the answer's changes; 1 when it cannot say (the server
 * would fail open) */
int cmd_explain(void)
{
	static struct found f;
	struct wl_set set = { 0 };
	const struct wl_entry *e;
	struct outcome o;
	long long now;
	int bad;

	if (!ex_addr || !ex_sender || !ex_rcpt) {
		say("explain needs --client-address, --sender and --recipient"
		    " (--sender= for the null sender)");
		return 64;
	}
	if (!ex_name)
		ex_name = "unknown";
	if (check_value("client-address", ex_addr) || check_value("client-name",
		ex_name) || check_value("sender", ex_sender)
	    || check_value("recipient", ex_rcpt))
		return 64;
	memset(&o, 0, sizeof(o));
	if (make_triplet(ex_addr, ex_sender, ex_rcpt, &f.t) != 0) {
		o.v = V_BAD_REQUEST;
		snprintf(o.why, sizeof(o.why), "bad request (client_address is"
			 " not an IP address)");
		show_answer("answer", &o);
		return flush_stdout();
	}
	show_triplet(&f.t);
	bad = wl_load(&set, &cfg.whitelists, WLR_COUNT, 1);
	if (read_records(&f) != 0) {
		wl_free(&set);
		return 1;
	}
	if (!f.file)
		triplet_keys(&f.t, &f.kk, &f.k);
	show_key("key", f.k.tkey, &f);
	if (f.k.ckey.dptr)
		show_key("client key", f.k.ckey, &f);
	e = wl_match(&set, &f.t, ex_name, &o.v);
	if (e)
		show_entry(e);
	else
		printf("%-12snone matched%s\n", "whitelist", bad ? " (bad lines"
		       " skipped: greylistctl check lists them)" : "");
	now = (long long)time(NULL);
	show_records(&f, now);
	if (!e)
		decide(f.tp, f.cp, now, &o);
	show_answer("answer", &o);
	show_reply(&o, now);
	if (!e)
		show_changes(&o, o.store_t ? o.t : f.tp, o.store_c ? o.c : f.cp,
			     now);
	else
		printf("then        the same answer while the entry is there\n");
	wl_free(&set);
	return flush_stdout();
}
