/*
 * report.c - greylistctl report: which mail did greylisting cost?
 *
 *	postgreyreport's report, under postgreyreport's options: it reads a
 *	mail log (stdin, files, or the systemd journal), finds the triplets
 *	that were deferred and did not try again within --delay (postgrey-
 *	report's name; --window is ours for the same), and prints one line
 *	for each: CLIENT_IP CLIENT_NAME SENDER RECIPIENT, sorted by address,
 *	so that the greylisting guide's pipelines work unchanged:
 *
 *	  greylistctl report --delay=300 < /var/log/mail.log \
 *	      | awk '{print $1}' | sort | uniq -c | sort -nr | head -n20
 *
 *	--show_time and --show_tries add columns in front, --tab separates
 *	with tabs, --separate_by_subnet and --separate_by_ip print a line
 *	between groups, --skip_clients and --match_clients take files in
 *	postgrey's client whitelist format. A header line and the summary go
 *	to stderr, where no pipeline reads them; --top N adds the most hit
 *	client networks and recipients after the lines. --html=FILE also
 *	writes the same findings as a page to look at (html.c).
 *
 *	Deferrals are greylistd's own decision lines and Postfix's reject
 *	lines (which hold the defer text: its part before the first
 *	placeholder marks greylisting, as postgreyreport's --greylist-text).
 *	A later pass is greylistd's "triplet found" line, Postfix's log of
 *	the accepted message (client=, from=, then to= of its queue id), or
 *	the database's record; a report that cannot read the database says
 *	so and uses the log alone.
 *
 *	The log is untrusted (anyone can put a line in syslog): fields are
 *	bounded, escaped on output, and counted in a balanced tree (tsearch),
 *	which no choice of keys can degrade.
 */

#define _GNU_SOURCE

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <systemd/sd-journal.h>
#include <time.h>
#include <unistd.h>

#include "greylist.h"
#include "greylistctl.h"

static long long window, top, since, show_time, show_tries, tab;
static long long skip_pool, use_journal_opt;
static const char *marker_opt, *sep_subnet, *sep_ip, *html_path;
static struct wl_list skip_files, match_files;

/* report's own options: postgreyreport's names, then ours */
const struct option_spec report_options[] = {
	{ "delay", OPT_DURATION, 1, 365 * DAY, 1, &window,
	  "report: deferred triplets not retried within this are lost"
	  " (postgreyreport's name; greylistd's --delay)" },
	{ "window", OPT_DURATION, 1, 365 * DAY, 1, &window,
	  "report: the same as --delay" },
	{ "greylist-text", OPT_STRING, 0, 0, 0, &marker_opt,
	  "report: the text that marks Postfix's greylisting lines" },
	{ "return_string", OPT_STRING, 0, 0, 0, &marker_opt,
	  "report: the same as --greylist-text" },
	{ "show_time", OPT_FLAG, 0, 1, 0, &show_time,
	  "report: the time of the first deferral, in front" },
	{ "show_tries", OPT_FLAG, 0, 1, 0, &show_tries,
	  "report: the number of deferrals, in front" },
	{ "tab", OPT_FLAG, 0, 1, 0, &tab, "report: separate fields by tabs" },
	{ "separate_by_subnet", OPT_STRING, 0, 0, 0, &sep_subnet,
	  "report: print this (\\n: newline) before each new /24" },
	{ "separate_by_ip", OPT_STRING, 0, 0, 0, &sep_ip,
	  "report: print this before each new client address" },
	{ "skip_clients", OPT_FILES, 0, 0, WLF_CLIENTS, &skip_files,
	  "report: leave out these clients (postgrey's client list format)" },
	{ "match_clients", OPT_FILES, 0, 0, WLF_CLIENTS, &match_files,
	  "report: only these clients" },
	{ "skip_pool", OPT_FLAG, 0, 1, 0, &skip_pool,
	  "report: leave out clients whose name holds their last two octets" },
	{ "since", OPT_DURATION, 1, 3650 * DAY, 1, &since,
	  "report: only this recent part of the log (all of it)" },
	{ "top", OPT_NUMBER, 0, 1000000, 0, &top,
	  "report: also the N client networks and recipients most hit" },
	{ "journal", OPT_FLAG, 0, 1, 0, &use_journal_opt,
	  "report: read the systemd journal (the default on a terminal)" },
	{ "html", OPT_STRING, 0, 0, 0, &html_path,
	  "report: also write this page: charts and tops (html.c)" },
};
const size_t nreport_options = sizeof(report_options) / sizeof(report_options[0]);

/* One deferred (or passed) triplet seen in the log. */
struct seen {
	char *key;			/* net \n sender \n recipient, normalised */
	char *addr, *name, *sender, *recipient;	/* as logged, for the report */
	long long first, last, passed;	/* first defer, last try, first pass */
	unsigned defers[2];		/* counted in greylistd's, Postfix's lines */
	unsigned learned;		/* --learn: "would greylist" lines */
};

/* A message Postfix accepted: its client and sender, by queue id. */
struct message {
	char *qid, *addr, *sender;
};

static struct {
	void *seen, *messages;		/* tsearch trees */
	struct seen **all;		/* every entry of "seen", in order made */
	size_t n, cap;
	long long start, end;		/* the first and last time read */
	long long lines;		/* log lines read */
	char marker[MAX_TEXT + 1];
	struct wl_set skip, match;
} rep;

/* cmp_seen, cmp_message - the trees' orders */
static int cmp_seen(const void *a, const void *b)
{
	return strcmp(((const struct seen *)a)->key,
		      ((const struct seen *)b)->key);
}

static int cmp_message(const void *a, const void *b)
{
	return strcmp(((const struct message *)a)->qid,
		      ((const struct message *)b)->qid);
}

/* gcc 12's analyzer loses what is stored into an array on the heap or
 * kept by tsearch, and reports it leaked when the function returns: the
 * entries live in rep.all and the trees until the program ends, the
 * messages until message_drop. Its other checks stay on here. */
ANALYZER_LEAK_OFF

/* seen_get - the triplet's entry, made on first sight; NULL without memory */
static struct seen *seen_get(const char *key, const char *addr,
			     const char *name, const char *sender,
			     const char *rcpt)
{
	struct seen probe = { .key = (char *)(uintptr_t)key }, *s, **found, **list;

	found = tfind(&probe, &rep.seen, cmp_seen);
	if (found)
		return *found;
	list = grow(rep.all, &rep.cap, rep.n + 1, sizeof(struct seen *));
	if (!list)
		return NULL;		/* the report says memory ran out */
	rep.all = list;
	s = calloc(1, sizeof(*s));
	if (!s || !(s->key = strdup(key)) || !(s->addr = strdup(addr))
	    || !(s->name = strdup(name)) || !(s->sender = strdup(sender))
	    || !(s->recipient = strdup(rcpt)) || !tsearch(s, &rep.seen, cmp_seen)) {
		if (s) {
			free(s->key);
			free(s->addr);
			free(s->name);
			free(s->sender);
			free(s->recipient);
		}
		free(s);
		return NULL;
	}
	rep.all[rep.n++] = s;
	return s;
}

/* An event of the report's input. */
enum event { EV_DEFER_GL, EV_DEFER_PF, EV_PASS, EV_LEARN };

/* note_event - count one defer or pass of a triplet at time t */
static int note_event(enum event ev, long long t, const char *addr,
		      const char *name, const char *sender, const char *rcpt)
{
	static struct triplet tr;
	static char key[MAX_KEY];
	const char *parts[] = { tr.net, tr.sender, tr.recipient };
	struct seen *s;
	datum k;

	if (strlen(sender) > MAX_LINE || strlen(rcpt) > MAX_LINE
	    || make_triplet(addr, sender, rcpt, &tr) != 0
	    || record_key('T', parts, 3, NULL, key, sizeof(key), &k) != 0)
		return 0;		/* not a triplet greylistd keeps */
	if (!(s = seen_get(key + 2, addr, name, sender, rcpt)))
		return -1;
	if (ev == EV_PASS) {
		if (!s->passed || t < s->passed)
			s->passed = t;
	} else if (ev == EV_LEARN) {
		s->learned++;
		if (!s->first || t < s->first)
			s->first = t;
	} else {
		s->defers[ev == EV_DEFER_PF]++;
		if (!s->first || t < s->first)
			s->first = t;
	}
	if (t > s->last)
		s->last = t;
	return 0;
}
ANALYZER_LEAK_ON

/* parse_iso - "2026-11-29T11:03:36[.123][Z|+01:00|+0100]" (greylistd's
 * --log-file, rsyslog's high-precision format); the rest, or NULL */
static const char *parse_iso(const char *line, long long *t)
{
	struct tm tm;
	const char *p;
	char zone[8];
	size_t n;
	long off;

	memset(&tm, 0, sizeof(tm));
	if (!(p = strptime(line, "%Y-%m-%dT%H:%M:%S", &tm)))
		return NULL;
	if (*p == '.')
		p += 1 + strspn(p + 1, "0123456789");
	n = *p == 'Z' ? 1 : strspn(p, "+-:0123456789");
	if (n == 0 || n >= sizeof(zone))
		return NULL;
	memcpy(zone, p, n);
	zone[n] = 0;
	if (strcmp(zone, "Z") != 0 && (!strptime(zone, "%z", &tm)))
		return NULL;
	off = tm.tm_gmtoff;		/* timegm() sets it to 0 */
	*t = (long long)timegm(&tm) - off;
	return p + n;
}

/* parse_stamp - the time at the start of a log line: ISO 8601 with a
 * zone, or syslog's "Nov 29 11:03:36" (local time, this year unless that
 * is in the future). The rest of the line, or NULL. */
static const char *parse_stamp(const char *line, long long *t)
{
	struct tm tm, here;
	const char *p;
	time_t now = time(NULL);

	if ((p = parse_iso(line, t)))
		return p;
	memset(&tm, 0, sizeof(tm));
	if (!(p = strptime(line, "%b %d %H:%M:%S", &tm))
	    || !localtime_r(&now, &here))
		return NULL;
	tm.tm_year = here.tm_year;
	tm.tm_isdst = -1;
	*t = (long long)mktime(&tm);
	if (*t > (long long)now + 86400) {
		tm.tm_year--;
		tm.tm_isdst = -1;
		*t = (long long)mktime(&tm);
	}
	return p;
}

/* report_greylistd - a greylistd decision line (after "greylistd[PID]: ") */
static int report_greylistd(const char *msg, long long t)
{
	static char addr[64], name[MAX_LINE], sender[MAX_LINE], rcpt[MAX_LINE];
	const char *a;
	enum event ev;

	if ((a = strstr(msg, "action=greylist, reason=")))
		ev = EV_DEFER_GL;
	else if ((a = strstr(msg, "action=pass, reason=learning (would"
			     " greylist: ")))
		ev = EV_LEARN;
	else if ((a = strstr(msg, "action=pass, reason=triplet found")))
		ev = EV_PASS;
	else
		return 0;
	if (!log_field(a, "client_address", addr, sizeof(addr))
	    || !log_field(a, "recipient", rcpt, sizeof(rcpt)))
		return 0;
	if (!log_field(a, "client_name", name, sizeof(name)))
		name[0] = 0;
	if (!log_field(a, "sender", sender, sizeof(sender)))
		sender[0] = 0;		/* left out when empty: the null sender */
	return note_event(ev, t, addr, name, sender, rcpt);
}

/* copy_span - [p, q) into buf as a string; NULL when it does not fit */
static const char *copy_span(const char *p, const char *q, char *buf,
			     size_t size)
{
	if (!p || !q || q < p || (size_t)(q - p) >= size)
		return NULL;
	memcpy(buf, p, (size_t)(q - p));
	buf[q - p] = 0;
	return buf;
}

/* angle - the text of "<...>" after "tag" in msg, into buf */
static const char *angle(const char *msg, const char *tag, char *buf,
			 size_t size)
{
	const char *p = strstr(msg, tag);

	return p ? copy_span(p + strlen(tag), strchr(p + strlen(tag), '>'),
			     buf, size) : NULL;
}

/* report_reject - a Postfix reject line: "reject: RCPT from NAME[ADDR]:
 * 4NN ...MARKER...; from=<SENDER> to=<RCPT> ..." */
static int report_reject(const char *msg, long long t)
{
	static char name[MAX_LINE], addr[64], sender[MAX_LINE], rcpt[MAX_LINE];
	const char *p = strstr(msg, "reject: RCPT from "), *lb, *rb;

	if (!p)
		return 0;
	p += strlen("reject: RCPT from ");
	lb = strchr(p, '[');
	rb = lb ? strstr(lb, "]: ") : NULL;
	if (!rb || !copy_span(p, lb, name, sizeof(name))
	    || !copy_span(lb + 1, rb, addr, sizeof(addr)))
		return 0;
	p = rb + 3;
	if (p[0] != '4' || !isdigit((unsigned char)p[1])
	    || !isdigit((unsigned char)p[2]) || p[3] != ' '
	    || !strstr(p, rep.marker)
	    || !angle(p, "; from=<", sender, sizeof(sender))
	    || !angle(p, " to=<", rcpt, sizeof(rcpt)))
		return 0;
	return note_event(EV_DEFER_PF, t, addr, strcmp(name, "unknown") == 0
			  ? "" : name, sender, rcpt);
}

/* queue_id - the "QUEUEID: " a Postfix message line starts with (hex or
 * the long form's letters and digits), into buf; the rest, or NULL */
static const char *queue_id(const char *msg, char *buf, size_t size)
{
	size_t n = strspn(msg, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
			  "bcdfghjklmnpqrstvwxyz");

	if (n < 5 || n >= size || msg[n] != ':' || msg[n + 1] != ' ')
		return NULL;
	memcpy(buf, msg, n);
	buf[n] = 0;
	return msg + n + 2;
}

ANALYZER_LEAK_OFF	/* the reason is at seen_get */

/* message_get - the accepted message of a queue id, made if "make" */
static struct message *message_get(const char *qid, int make)
{
	struct message probe = { .qid = (char *)(uintptr_t)qid }, *m, **found;

	if ((found = tfind(&probe, &rep.messages, cmp_message)) || !make)
		return found ? *found : NULL;
	if (!(m = calloc(1, sizeof(*m))) || !(m->qid = strdup(qid))
	    || !tsearch(m, &rep.messages, cmp_message)) {
		if (m)
			free(m->qid);
		free(m);
		return NULL;
	}
	return m;
}

/* message_drop - forget a message Postfix removed from its queue */
static void message_drop(const char *qid)
{
	struct message *m = message_get(qid, 0);

	if (!m)
		return;
	tdelete(m, &rep.messages, cmp_message);
	free(m->qid);
	free(m->addr);
	free(m->sender);
	free(m);
}

/* report_accepted - Postfix's log of an accepted message: smtpd's
 * "QID: client=NAME[ADDR]", qmgr's "QID: from=<S>, ...", each delivery's
 * "QID: to=<R>, [orig_to=<R0>,] ..." (a recipient that was accepted:
 * a pass of its triplet) and qmgr's "QID: removed" */
static int report_accepted(const char *msg, long long t)
{
	static char qid[64], buf[MAX_LINE], rcpt[MAX_LINE];
	const char *p = queue_id(msg, qid, sizeof(qid)), *lb;
	struct message *m;

	if (!p)
		return 0;
	if (strcmp(p, "removed") == 0) {
		message_drop(qid);
		return 0;
	}
	if (strncmp(p, "client=", 7) == 0 && (lb = strrchr(p, '['))
	    && copy_span(lb + 1, strchr(lb, ']'), buf, sizeof(buf))) {
		if (!(m = message_get(qid, 1)))
			return -1;
		free(m->addr);
		return (m->addr = strdup(buf)) ? 0 : -1;
	}
	if ((m = message_get(qid, 0)) && strncmp(p, "from=<", 6) == 0
	    && angle(p, "from=<", buf, sizeof(buf))) {
		free(m->sender);
		return (m->sender = strdup(buf)) ? 0 : -1;
	}
	if (!m || !m->addr || !m->sender || strncmp(p, "to=<", 4) != 0
	    || !(angle(p, "orig_to=<", rcpt, sizeof(rcpt))
		 || angle(p, "to=<", rcpt, sizeof(rcpt))))
		return 0;
	return note_event(EV_PASS, t, m->addr, "", m->sender, rcpt);
}
ANALYZER_LEAK_ON

/* report_line - one message of the input, at time t, from greylistd or
 * from another program (Postfix) */
static int report_line(int ours, const char *msg, long long t)
{
	rep.lines++;
	if (since && t < (long long)time(NULL) - since)
		return 0;
	if (t > rep.end)
		rep.end = t;		/* the log reaches this far */
	if (!rep.start || t < rep.start)
		rep.start = t;
	if (ours)
		return report_greylistd(msg, t);
	return strstr(msg, "reject: RCPT from ") ? report_reject(msg, t)
		: report_accepted(msg, t);
}

/* report_stream - every line of a log. After the time comes "HOST
 * PROGRAM[PID]: MESSAGE" (syslog) or "greylistd[PID]: MESSAGE"
 * (--log-file). */
static int report_stream(FILE *f, const char *name)
{
	static char line[4 * MAX_LINE];
	const char *rest, *colon, *tag;
	long long t;
	int rc = 0;

	while (rc == 0 && fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = 0;
		if (!(rest = parse_stamp(line, &t)) || !(colon = strstr(rest, ": ")))
			continue;
		for (tag = colon; tag > rest && tag[-1] != ' '; tag--)
			;
		rc = report_line(strncmp(tag, "greylistd[", 10) == 0,
				 colon + 2, t);
	}
	if (ferror(f)) {
		say("%s: %s", name, strerror(errno));
		rc = -1;
	}
	if (rc > 0)
		rc = 0;
	return rc;
}

/* report_file - a named log ("-": stdin) */
static int report_file(const char *path)
{
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
	int rc;

	if (!f) {
		say("%s: %s", path, strerror(errno));
		return -1;
	}
	rc = report_stream(f, path);
	if (f != stdin)
		(void)fclose(f);	/* read only: nothing to lose */
	return rc;
}

/* journal_field - a field of the current journal entry, as a string */
static const char *journal_field(sd_journal *j, const char *name, char *buf,
				 size_t size)
{
	const void *data;
	size_t len, skip = strlen(name) + 1;

	if (sd_journal_get_data(j, name, &data, &len) < 0 || len < skip
	    || len - skip >= size)
		return NULL;
	memcpy(buf, (const char *)data + skip, len - skip);
	buf[len - skip] = 0;
	return buf;
}

/* report_journal - the mail facility's messages in the systemd journal */
static int report_journal(void)
{
	static char msg[4 * MAX_LINE];
	char ident[64];
	sd_journal *j = NULL;
	uint64_t usec;
	int rc = 0;

	if (sd_journal_open(&j, SD_JOURNAL_LOCAL_ONLY) < 0
	    || sd_journal_add_match(j, "SYSLOG_FACILITY=2", 0) < 0
	    || (since && sd_journal_seek_realtime_usec(j,
			(uint64_t)((long long)time(NULL) - since) * 1000000ULL)
		< 0)) {
		say("the systemd journal cannot be read here: name a log"
		    " file, or give the log on stdin");
		sd_journal_close(j);
		return -1;
	}
	while (rc == 0 && sd_journal_next(j) > 0) {
		if (!journal_field(j, "MESSAGE", msg, sizeof(msg))
		    || sd_journal_get_realtime_usec(j, &usec) < 0)
			continue;
		rc = report_line(journal_field(j, "SYSLOG_IDENTIFIER", ident,
					       sizeof(ident))
				 && strcmp(ident, "greylistd") == 0,
				 msg, (long long)(usec / 1000000));
	}
	sd_journal_close(j);
	if (rep.end < (long long)time(NULL))
		rep.end = (long long)time(NULL);	/* the journal is live */
	return rc < 0 ? -1 : 0;
}

/* The triplets gathered for printing. */
static struct {
	struct seen **s;
	size_t n;
	struct key_kind kk;
	GDBM_FILE dbf;
} all;

/* confirm_one - the database knows of a pass the log does not show
 * (rotated away, or logged elsewhere) */
static void confirm_one(struct seen *s)
{
	static char key[MAX_KEY + 4];
	const char *parts[1] = { s->key };
	long long f[T_FIELDS];
	datum k, v;

	if ((s->passed && s->passed >= s->first)
	    || record_key('T', parts, 1, &all.kk, key, sizeof(key), &k) != 0)
		return;
	v = gdbm_fetch(all.dbf, k);
	if (triplet_record(v, f) && f[T_PASSED] && f[T_PASSED] >= s->first)
		s->passed = f[T_PASSED];
	free(v.dptr);
}

/* confirm_passes - ask the database about each deferred triplet without
 * a pass; say so when it cannot be read */
static void confirm_passes(void)
{
	struct db db = { 0 };
	struct snap sn;
	int present;
	size_t i;

	if (snap_take(&sn) != SNAP_OK) {
		say("the database %s could not be read: passes are taken from"
		    " the log alone", store_name());
		snap_free(&sn);
		return;
	}
	db.dbf = all.dbf = sn.dbf;
	if (key_kind_read(&db, &all.kk, &present) == 0)
		for (i = 0; i < all.n; i++)
			confirm_one(all.s[i]);
	else
		say("%s: its keys cannot be read: passes are taken from the"
		    " log alone", store_name());
	snap_free(&sn);
}

/* addr_of - a logged address as family and bytes, for sorting */
static void addr_of(const char *text, unsigned char out[17])
{
	int family;

	memset(out, 0, 17);
	if (parse_address(text, &family, out + 1) == 0)
		out[0] = family == AF_INET ? 4 : 6;
}

/* cmp_addr - postgreyreport's order: by client address, then sender and
 * recipient */
static int cmp_addr(const void *a, const void *b)
{
	const struct seen *x = *(struct seen *const *)a;
	const struct seen *y = *(struct seen *const *)b;
	unsigned char p[17], q[17];
	int c;

	addr_of(x->addr, p);
	addr_of(y->addr, q);
	if ((c = memcmp(p, q, sizeof(p))))
		return c;
	return strcmp(x->key, y->key);
}

/* separator - postgreyreport's --separate_by_* text, with "\n" */
static void separator(const char *text)
{
	for (; *text; text++)
		if (text[0] == '\\' && text[1] == 'n') {
			putchar('\n');
			text++;
		} else {
			putchar(*text);
		}
}

/* print_line - one never-retried triplet, postgreyreport's columns */
static void print_line(const struct seen *s)
{
	const char *sep = tab ? "\t" : " ", *name = *s->name ? s->name
		: "unknown";
	char stamp[32];

	if (show_time)
		printf("%s%s", format_time(stamp, sizeof(stamp), TS_UTC,
					   (time_t)s->first), sep);
	if (show_tries)
		printf("%u%s", s->defers[0] > s->defers[1] ? s->defers[0]
		       : s->defers[1] > s->learned ? s->defers[1] : s->learned,
		       sep);
	/* errors of these writes are seen once, by flush_stdout() */
	print_escaped(s->addr, strlen(s->addr));
	(void)fputs(sep, stdout);
	print_escaped(name, strlen(name));
	(void)fputs(sep, stdout);
	print_escaped(s->sender, strlen(s->sender));
	(void)fputs(sep, stdout);
	print_escaped(s->recipient, strlen(s->recipient));
	putchar('\n');
}

/* pool - postgreyreport's --skip_pool: an IPv4 client whose name holds
 * its last two octets (a provider's pool of dial-up addresses) */
static int pool(const struct seen *s)
{
	unsigned char a[16];
	char x[8], y[8];
	int family;

	if (parse_address(s->addr, &family, a) != 0 || family != AF_INET)
		return 0;
	snprintf(x, sizeof(x), "%d", a[2]);
	snprintf(y, sizeof(y), "%d", a[3]);
	return strstr(s->name, x) && strstr(s->name, y);
}

/* wanted - the client is not left out by --skip_clients, --match_clients
 * or --skip_pool */
static int wanted(const struct seen *s)
{
	static char name[MAX_LINE + 1];
	unsigned char a[16];
	int family;

	if (parse_address(s->addr, &family, a) != 0)
		return 0;
	lower(name, s->name);
	if (skip_pool && pool(s))
		return 0;
	if (rep.skip.n && wl_client(&rep.skip, family, a, name))
		return 0;
	return !match_files.n || wl_client(&rep.match, family, a, name);
}

/* The report's figures. */
struct tally {
	size_t deferred, passed, fatal, pending, would;
	long long *delays;
	struct seen **lost;
	struct judged *judged;		/* each deferred triplet, for --html */
};

/* classify - each deferred triplet: passed later (with its delay),
 * never retried within the window (the log reaches past it), or still
 * pending; and each triplet a learning greylistd would have deferred
 * (printed with the lost ones: mail that enforcing would have delayed) */
static void classify(struct tally *t)
{
	long long w = window ? window : cfg.delay;
	enum fate fate;
	struct seen *s;
	size_t i;

	for (i = 0; i < all.n; i++) {
		s = all.s[i];
		if (!s->defers[0] && !s->defers[1] && s->learned && wanted(s)) {
			t->lost[t->fatal++] = s;
			t->would++;
		}
		if ((!s->defers[0] && !s->defers[1]) || !wanted(s))
			continue;	/* only seen passing, or left out */
		fate = FATE_PENDING;
		if (s->passed && s->passed >= s->first) {
			t->delays[t->passed++] = s->passed - s->first;
			fate = FATE_PASSED;
		} else if (s->last - s->first < w && rep.end - s->first >= w) {
			t->lost[t->fatal++] = s;
			fate = FATE_LOST;
		} else {
			t->pending++;
		}
		t->judged[t->deferred++] = (struct judged){ s->first,
			fate == FATE_PASSED ? s->passed : 0, fate };
	}
}

/* cmp_ll, cmp_str, cmp_count - for the median and the tops */
static int cmp_ll(const void *a, const void *b)
{
	long long x = *(const long long *)a, y = *(const long long *)b;

	return (x > y) - (x < y);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int cmp_count(const void *a, const void *b)
{
	const struct count *x = a, *y = b;

	return x->n != y->n ? (x->n < y->n) - (x->n > y->n)
		: strcmp(x->what, y->what);
}

/* count_top - each distinct string of items and how often it comes, most
 * first, as "sort | uniq -c | sort -rn"; NULL without memory */
static struct count *count_top(const char **items, size_t n, size_t *m)
{
	struct count *c = calloc(n ? n : 1, sizeof(*c));
	size_t i;

	*m = 0;
	if (!c)
		return NULL;
	qsort(items, n, sizeof(*items), cmp_str);
	for (i = 0; i < n; i++) {
		if (*m && strcmp(c[*m - 1].what, items[i]) == 0)
			c[*m - 1].n++;
		else
			c[(*m)++] = (struct count){ items[i], 1 };
	}
	qsort(c, *m, sizeof(*c), cmp_count);
	return c;
}

/* The client networks (with their prefix length) and the recipients of
 * the triplets never retried, counted, most first. */
struct tops {
	struct count *c[2];		/* networks, recipients */
	size_t n[2];
	const char **items[2];
	char (*nets)[80];
};

/* tops_free - forget what tops_make made */
static void tops_free(struct tops *tp)
{
	free(tp->c[0]);
	free(tp->c[1]);
	free((void *)tp->items[0]);
	free((void *)tp->items[1]);
	free(tp->nets);
	memset(tp, 0, sizeof(*tp));
}

/* tops_make - count the networks and recipients of the lost triplets; -1
 * without memory */
static int tops_make(const struct tally *t, struct tops *tp)
{
	size_t i;
	int family, bits;
	unsigned char a[16];

	tp->items[0] = calloc(t->fatal + 1, sizeof(*tp->items[0]));
	tp->items[1] = calloc(t->fatal + 1, sizeof(*tp->items[1]));
	tp->nets = calloc(t->fatal + 1, sizeof(*tp->nets));
	for (i = 0; tp->items[0] && tp->items[1] && tp->nets && i < t->fatal;
	     i++) {
		if (parse_address(t->lost[i]->addr, &family, a) != 0)
			family = AF_INET;
		bits = (int)(cfg.lookup_by_host ? (family == AF_INET ? 32 : 128)
			     : family == AF_INET ? cfg.ipv4cidr : cfg.ipv6cidr);
		snprintf(tp->nets[i], sizeof(tp->nets[i]), "%.*s/%d",
			 (int)strcspn(t->lost[i]->key, "\n") & 63,
			 t->lost[i]->key, bits & 255);
		tp->items[0][i] = tp->nets[i];
		tp->items[1][i] = t->lost[i]->recipient;
	}
	if (!tp->items[0] || !tp->items[1] || !tp->nets
	    || !(tp->c[0] = count_top(tp->items[0], t->fatal, &tp->n[0]))
	    || !(tp->c[1] = count_top(tp->items[1], t->fatal, &tp->n[1]))) {
		tops_free(tp);
		return -1;
	}
	return 0;
}

/* print_tops - the --top most often lost networks and recipients, as
 * "uniq -c | sort -rn" prints them (the recipient escaped as in the
 * lines: it comes from the log) */
static void print_tops(const struct tops *tp)
{
	static const char *const title[2] = { "client networks", "recipients" };
	size_t k, i;

	for (k = 0; k < 2; k++) {
		printf("# top %s\n", title[k]);
		for (i = 0; i < tp->n[k] && i < (size_t)top; i++) {
			printf("%7zu ", tp->c[k][i].n);
			print_escaped(tp->c[k][i].what, strlen(tp->c[k][i].what));
			putchar('\n');
		}
	}
}

/* print_lost - the never-retried triplets, with --separate_by_* text
 * between groups */
static void print_lost(const struct tally *t)
{
	const char *last_net = NULL, *last_ip = NULL;
	size_t i, nl;

	for (i = 0; i < t->fatal; i++) {
		nl = strcspn(t->lost[i]->key, "\n");
		if (sep_subnet && (!last_net || strncmp(last_net,
				   t->lost[i]->key, nl + 1) != 0))
			separator(sep_subnet);
		else if (sep_ip && (!last_ip || strcmp(last_ip,
						       t->lost[i]->addr) != 0))
			separator(sep_ip);
		last_net = t->lost[i]->key;
		last_ip = t->lost[i]->addr;
		print_line(t->lost[i]);
	}
}

/* report_page - the page of --html (html.c): the summary line, each
 * deferred triplet's fate, the delays and the tops */
static int report_page(const struct tally *t, long long w,
		       const char *summary)
{
	struct tops tp = { 0 };
	struct report_view v;
	int rc;

	if (tops_make(t, &tp) != 0) {
		say("out of memory");
		return -1;
	}
	v = (struct report_view){
		.judged = t->judged, .n = t->deferred,
		.delays = t->delays, .ndelays = t->passed,
		.nets = tp.c[0], .nnets = tp.n[0],
		.rcpts = tp.c[1], .nrcpts = tp.n[1], .top = (size_t)top,
		.start = rep.start, .end = rep.end, .window = w,
		.summary = summary,
	};
	rc = html_write(html_path, &v);
	tops_free(&tp);
	return rc ? -1 : 0;
}

/* report_print - the lines on stdout; the header and the summary on
 * stderr, where pipelines do not read them; the page of --html */
static int report_print(void)
{
	struct tally t = { 0 };
	struct tops tp = { 0 };
	long long w = window ? window : cfg.delay;
	char summary[200];
	int rc = 0, n;

	t.delays = calloc(all.n + 1, sizeof(*t.delays));
	t.lost = calloc(all.n + 1, sizeof(struct seen *));
	t.judged = calloc(all.n + 1, sizeof(*t.judged));
	if (!t.delays || !t.lost || !t.judged) {
		say("out of memory");
		rc = -1;
	} else {
		classify(&t);
		qsort(t.lost, t.fatal, sizeof(struct seen *), cmp_addr);
		qsort(t.delays, t.passed, sizeof(*t.delays), cmp_ll);
		(void)fprintf(stderr, "# %s%sclient_address client_name sender"
			      " recipient: deferred, not retried within %llds\n",
			      show_time ? "first_deferred " : "",
			      show_tries ? "deferrals " : "", w);
		if (t.would)
			(void)fputs("# and, from --learn's lines, those enforcing"
				    " would have deferred\n", stderr);
		print_lost(&t);
		if (top && tops_make(&t, &tp) != 0) {
			say("out of memory");
			rc = -1;
		} else if (top) {
			print_tops(&tp);
		}
		tops_free(&tp);
		n = snprintf(summary, sizeof(summary), "deferred=%zu"
			     " passed_later=%zu never_retried=%zu pending=%zu"
			     " median_delay=%llds", t.deferred, t.passed,
			     t.fatal - t.would, t.pending, t.passed
			     ? t.delays[t.passed / 2] : 0LL);
		if (t.would && n > 0 && (size_t)n < sizeof(summary))
			snprintf(summary + n, sizeof(summary) - (size_t)n,
				 " would_delay=%zu", t.would);
		(void)fprintf(stderr, "# %s\n", summary);
		if (html_path && report_page(&t, w, summary) != 0)
			rc = -1;
	}
	free(t.delays);
	free(t.lost);
	free(t.judged);
	return rc || flush_stdout() ? 1 : 0;
}

/* report_read - the log: the named files, else stdin unless it is a
 * terminal, else (or with --journal) the journal; -1 on a failure */
static int report_read(const char *const *files, int nfiles)
{
	int i;

	if (use_journal_opt || (!nfiles && isatty(0)))
		return report_journal();
	if (!nfiles)
		return report_file("-");
	for (i = 0; i < nfiles; i++)
		if (report_file(files[i]) != 0)
			return -1;
	return 0;
}

/* cmd_report - read the log, confirm with the database, print */
int cmd_report(const char *const *files, int nfiles)
{
	struct wl_list none = { { 0 }, { 0 }, 0 };

	/* Postfix's line holds the defer text: its part before the first
	 * placeholder marks greylisting, as postgreyreport's --greylist-text */
	snprintf(rep.marker, sizeof(rep.marker), "%s", marker_opt ? marker_opt
		 : cfg.greylist_text);
	rep.marker[strcspn(rep.marker, "%")] = 0;
	if (wl_load(&rep.skip, &skip_files, WLR_PRINT, 0)
	    + wl_load(&rep.match, &match_files, WLR_PRINT, 0) > 0)
		return 1;
	(void)none;
	if (report_read(files, nfiles) != 0)
		return 1;
	if (rep.lines == 0) {
		say("nothing to read: no log lines in the input");
		return 1;
	}
	all.s = rep.all;
	all.n = rep.n;
	confirm_passes();
	return report_print();
}
