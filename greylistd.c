/*
 * greylistd - per-connection greylisting helper for Postfix, Sendmail
 * and Exim
 *
 * SYNOPSIS
 *	greylistd [--option=value ...]		Postfix policy protocol
 *	greylistd --milter [--option=value ...]	milter (Sendmail, Postfix)
 *	greylistd --greylistd-protocol [...]	Debian greylistd's (Exim)
 *
 * DESIGN
 *	One process per connection. systemd (greylistd.socket, Accept=yes),
 *	Postfix spawn(8) or inetd starts greylistd with the connection on
 *	stdin/stdout (or as a passed socket, fd 3, with LISTEN_FDS=1). It
 *	reads requests until EOF, answers each one, and exits. There is no
 *	daemon and no thread. A pipe works as well as a socket: printf '...'
 *	| greylistd answers. The connection speaks one of three protocols,
 *	chosen by the command line. By default, Postfix's SMTPD access
 *	policy protocol: name=value lines, an empty line ends a request, one
 *	action line answers. Beyond it (test.sh counts these lines):
 * PROTOCOL	--milter: the milter protocol, version 6, as Sendmail and
 *		Postfix's smtpd speak it: a new triplet's RCPT is answered 451
 *		(SMFIR_REPLYCODE), a passed message gets its X-Greylist header
 *		at end of message (SMFIR_INSHEADER); every other stage is
 *		switched off at option negotiation.
 * PROTOCOL	--greylistd-protocol: Debian greylistd's one line, "[update]
 *		--grey IP SENDER RCPT" (or "IP RCPT, RCPT..." for the null
 *		sender), answered "true" (defer) or "false", for Exim's
 *		${readsocket} ACLs written for that package; --white is the
 *		opposite answer, --black always "false".
 *	All three feed the same request (struct request) to the same
 *	judgement (judge()); only reading and answering differ.
 *
 *	Each RCPT request names a triplet: the client network (IPv4 /24,
 *	IPv6 /64 by default), the normalised sender and the recipient. A
 *	triplet seen for the first time is deferred and recorded; a retry
 *	after --delay and within --retry-window passes, and so does every
 *	later message of that triplet until it has been idle for --max-age.
 *	Whitelisted clients and recipients pass without a look-up; clients
 *	that have passed often enough (auto-whitelist) pass too. With
 *	--learn nothing is deferred: what would be is answered DUNNO and its
 *	triplet recorded as passed (rule.c). With --defer-at=data a RCPT
 *	deferral is held, per message, in the connection (struct held), and
 *	the message's DATA request deferred instead (at_data()).
 *
 *	This file is the helper and only the helper: the request reader, the
 *	answer, the decision log, the serving loop. What it shares with the
 *	operator's program greylistctl (the configuration, the triplet and
 *	its keys, the rule, the whitelists, the database) is in the modules
 *	greylist.h lists. The operator commands and all maintenance (expiry,
 *	reorganization, repair of a damaged file) are greylistctl's: after
 *	an answer has been sent, a serving process that found maintenance
 *	due starts "greylistctl maintain" in a child (maintain()), so no
 *	cron job is needed and no request waits for it.
 *
 *	Whitelist files are read at the first RCPT request, and their
 *	modification times are checked again at most once a minute
 *	(WL_RECHECK); a changed file is read again, so an edit reaches every
 *	open connection within a minute.
 *
 * TRUST BOUNDARY
 *	Network input (what the client sends) is handled by, in this file:
 *	  lines 183-429	Reading requests: bounded lines, attributes
 *	  lines 430-515	The request: attributes to triplet, whitelist, store
 *	  lines 516-766	Answering: the reply, the decision log line, held deferrals
 *	  lines 767-1141	The milter protocol: packets, macros, replies
 *	  lines 1142-1343	Debian greylistd's protocol: one line, one word
 *	and in triplet.c (the triplet and its keys), rule.c (the rule),
 *	whitelist.c (matching only: wl_match, wl_client, wl_recipient) and
 *	db.c (the look-up; the file's contents are checked as untrusted too).
 *	Only the admin's files reach, here: lines 1344-1557 (serving,
 *	maintenance, start-up), and config.c (the
 *	configuration) and whitelist.c (parsing the whitelist files).
 *	test.sh checks these line ranges against the section headings.
 *
 * LIBRARIES
 *	libc; libgdbm (the database); libpcre2-8 (postgrey's whitelists are
 *	Perl regular expressions, which PCRE2 compiles as Perl does, with a
 *	match limit); libsystemd and libnettle only through dlopen(3), when
 *	needed (a socket passed by systemd or the journal; the HMAC of
 *	--privacy), because linking them costs every process's start-up;
 *	libhiredis through dlopen(3) too, only with --redis (Redis's own
 *	client: its reply parser is Redis's, not one more of ours).
 *
 * LIMITS (reject, never truncate: a cut key could collide with another)
 *	MAX_LINE	one "name=value" line, 8192 + 256 bytes
 *	MAX_ATTRS	attributes in one request, 128
 *	MAX_REQUEST	one request, 64 KiB
 *	MILTER_MAX	one milter packet, 64 KiB less its length word
 *	GP_MAX_WORDS	words in a Debian greylistd protocol line, 64; each
 *			at most MAX_LINE, the line at most 64 KiB
 *	Each limit is explained where it is defined.
 *
 * FAILURE RULES
 *	There are exactly two ways to fail while serving:
 *	- protocol violation (bad request type, over-long line, NUL byte, a
 *	  CR not before LF, too many attributes, too large a request, line
 *	  without "=", attribute given twice, input ending or stalling inside
 *	  a request): one warning is logged, no reply is sent, the
 *	  connection is closed and greylistd exits 76 (violation()). Postfix
 *	  then applies its default_action. A milter packet of bad length, an
 *	  unknown command, a string without its NUL or a packet cut short is
 *	  a violation too; Sendmail and Postfix then apply the milter's
 *	  failure mode (F=T tempfails, default accepts).
 *	- internal fault (database unreadable or damaged, lock not had
 *	  within --lock-timeout, disk full, out of memory): one warning is
 *	  logged, the request is answered "action=DUNNO" and serving goes on,
 *	  so mail keeps flowing while greylistd is unwell (fail_open()). The
 *	  milter answers CONTINUE, the greylistd protocol passes ("false").
 *	Debian greylistd's protocol has no way to say "violation": a line it
 *	cannot parse, or past a limit, or one of that package's other
 *	commands, is logged and answered "false", the connection closed.
 *	A bad configuration is neither: greylistd logs why and exits 64
 *	without a reply, on every connection, until it is fixed.
 *	Nothing but replies is ever written to stdout or stderr while
 *	serving: under spawn(8) and inetd both are the client socket.
 *
 * EXIT CODES
 *	0 end of input or idle timeout; 64 bad configuration or command
 *	line; 74 the connection failed (read/write error, client gone);
 *	76 protocol violation.
 *
 * LOG FORMAT (syslog facility mail, ident greylistd; or --log-file)
 *	One line per RCPT decision, in postgrey's format so existing log
 *	tools keep working; empty values are left out, as postgrey does:
 *	  [QUEUEID: ]action=greylist, reason=new, client_name=N,
 *	      client_address=A, sender=S, recipient=R
 *	  action=greylist, reason=early-retry (123s missing), ...
 *	  action=pass, reason=triplet found, delay=312, ...
 *	  action=pass, reason=triplet found | client whitelist |
 *	      recipient whitelist | client AWL, ...
 *	  action=pass, reason=fail-open (WHY), ...	(internal fault)
 *	  action=pass, reason=bad request (WHY), ...
 *	  action=pass, reason=learning (would greylist: new), ...	(--learn)
 *	  action=greylist, reason=defer-at-data (1 of 3 recipients
 *	      greylisted), ... (--defer-at=data; no recipient=)
 *	Every other line starts with "whitelisted: " (postgrey's line when a
 *	client joins the auto-whitelist: whitelisted: NAME[ADDR]), "info: ",
 *	"warning: " or "error: "; greylistctl's lines too. Every value from
 *	the network passes through log_value(): at most LOG_VALUE_MAX bytes,
 *	control characters, bytes above 126, '\' and ',' written as \xHH.
 *	Under systemd the same line goes to the journal with the fields
 *	GREYLISTD_ACTION, GREYLISTD_REASON, GREYLISTD_CLIENT_ADDRESS, ...
 */

#define _GNU_SOURCE

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "greylist.h"

/* Postfix 3.7 sends about 35 attributes; twice that leaves room for
 * future versions while bounding the work per request. */
#define MAX_ATTRS	128

/* A Postfix request with every attribute filled is a few KiB. 64 KiB
 * admits several maximal values and bounds the input buffer. */
#define MAX_REQUEST	65536

/* A reply is one action line: a defer text or a header, both checked
 * at start-up to fit MAX_TEXT, plus a recipient domain (MAX_DOMAIN). */
#define MAX_REPLY	2048

/* The whitelist files' modification times are checked at most this
 * often (seconds): an edit reaches an open connection within a minute. */
#define WL_RECHECK	60

/*
 * Reading requests.
 */

enum attr_id {
	A_REQUEST, A_PROTOCOL_STATE, A_CLIENT_ADDRESS, A_CLIENT_NAME,
	A_SENDER, A_RECIPIENT, A_INSTANCE, A_QUEUE_ID, A_COUNT
};

/* The attributes greylistd reads; every other one is ignored. */
static const char *const attr_names[A_COUNT] = {
	"request", "protocol_state", "client_address", "client_name",
	"sender", "recipient", "instance", "queue_id",
};

struct request {
	const char *attr[A_COUNT];	/* NULL when absent */
};

/* --defer-at=data: the message whose deferrals are held until its DATA
 * request (Postfix's instance names it), and its recipients. */
struct held {
	char instance[MAX_LINE + 1];
	unsigned rcpts, deferred;
	long long seconds;		/* the longest wait of its deferrals */
	int data_seen, warned;		/* on this connection */
	struct request data;		/* the DATA request being answered */
	char rcpt[MAX_LINE + 1];	/* its first deferred recipient, for %r */
};

/* The connection: input is kept in one fixed buffer. A request is
 * parsed only once it is complete (ended by an empty line), so the
 * buffer may be compacted while a request is still arriving. */
struct conn {
	int in, out;
	int sock;			/* in and out are one socket */
	size_t start;			/* first byte of the current request */
	size_t scan;			/* next line to check */
	size_t end;			/* bytes in buf */
	char buf[MAX_REQUEST];
	char instance[MAX_LINE];	/* message that last got a header */
	struct held held;
};

enum read_status { RD_OK, RD_EOF, RD_IDLE, RD_VIOLATION, RD_IOERR };

/* wait_fd - wait until fd is ready for "events"; 0 ready, -1 timed out
 * (a hang-up or error counts as ready: the read or write then says so) */
static int wait_fd(int fd, short events, const struct timespec *deadline)
{
	struct pollfd p = { .fd = fd, .events = events };
	int rc;

	do {
		rc = poll(&p, 1, ms_left(deadline));
	} while (rc < 0 && errno == EINTR);
	return rc > 0 ? 0 : -1;
}

/* violation - log a protocol violation; the caller closes the connection */
static enum read_status violation(const char *why)
{
	msg_warn("protocol violation: %s; closing the connection", why);
	return RD_VIOLATION;
}

/* check_line - the line [p, p+len) (without its LF, and without a CR
 * just before it) is within bounds, free of NUL and CR, and empty or
 * "name=value" */
static enum read_status check_line(const char *p, size_t len)
{
	char why[80];

	if (len > MAX_LINE) {
		snprintf(why, sizeof(why), "line longer than %d bytes",
			 MAX_LINE);
		return violation(why);
	}
	if (memchr(p, 0, len))
		return violation("NUL byte in request (a milter client needs"
				 " --milter)");
	if (memchr(p, '\r', len))
		return violation("CR not followed by LF in request");
	if (len > 0 && (p[0] == '=' || !memchr(p, '=', len)))
		return violation("line is not name=value");
	return RD_OK;
}

/* find_request_end - check each complete line as it arrives; 1 when the
 * empty line that ends a request has been found, 0 when more input is
 * needed (or *st says why not) */
static int find_request_end(struct conn *c, enum read_status *st)
{
	char *line, *nl;
	size_t len;

	*st = RD_OK;
	while ((nl = memchr(c->buf + c->scan, '\n', c->end - c->scan))) {
		line = c->buf + c->scan;
		len = (size_t)(nl - line);
		c->scan += len + 1;
		if (len > 0 && line[len - 1] == '\r')
			len--;		/* telnet's CRLF */
		if ((*st = check_line(line, len)) != RD_OK)
			return 0;
		if (len == 0)
			return 1;
	}
	if (c->end - c->scan > MAX_LINE + 1
	    || memchr(c->buf + c->scan, 0, c->end - c->scan))
		*st = check_line(c->buf + c->scan, c->end - c->scan);
	return 0;
}

/* fill - read more input before the deadline */
static enum read_status fill(struct conn *c, const struct timespec *deadline)
{
	ssize_t n;

	if (c->end == sizeof(c->buf)) {
		char why[80];

		if (c->start == 0) {
			snprintf(why, sizeof(why),
				 "request larger than %d bytes", MAX_REQUEST);
			return violation(why);
		}
		memmove(c->buf, c->buf + c->start, c->end - c->start);
		c->end -= c->start;
		c->scan -= c->start;
		c->start = 0;
	}
	for (;;) {
		if (wait_fd(c->in, POLLIN, deadline) < 0)
			return RD_IDLE;
		n = c->sock ? recv(c->in, c->buf + c->end,
				   sizeof(c->buf) - c->end, MSG_DONTWAIT)
			: read(c->in, c->buf + c->end, sizeof(c->buf) - c->end);
		if (n > 0) {
			c->end += (size_t)n;
			return RD_OK;
		}
		if (n == 0)
			return RD_EOF;
		if (errno != EINTR && errno != EAGAIN) {
			msg_warn("reading the request: %m");
			return RD_IOERR;
		}
	}
}

/* parse_request - split a complete, checked request into its attributes */
static enum read_status parse_request(char *p, const char *end,
				      struct request *r)
{
	int nattrs = 0, i;
	char *nl, *eq, why[80];

	memset(r, 0, sizeof(*r));
	for (; p < end; p = nl + 1) {
		nl = memchr(p, '\n', (size_t)(end - p));
		if (nl > p && nl[-1] == '\r')
			nl[-1] = 0;
		if (*p == '\n' || !*p)
			break;		/* the empty line */
		if (++nattrs > MAX_ATTRS) {
			snprintf(why, sizeof(why),
				 "more than %d attributes", MAX_ATTRS);
			return violation(why);
		}
		eq = memchr(p, '=', (size_t)(nl - p));
		*eq = *nl = 0;
		for (i = 0; i < A_COUNT && strcmp(p, attr_names[i]) != 0; i++)
			;
		if (i < A_COUNT && r->attr[i]) {
			snprintf(why, sizeof(why), "attribute %s given twice", p);
			return violation(why);
		}
		if (i < A_COUNT)
			r->attr[i] = eq + 1;
	}
	if (!r->attr[A_REQUEST]
	    || strcmp(r->attr[A_REQUEST], "smtpd_access_policy") != 0)
		return violation("request is not smtpd_access_policy");
	return RD_OK;
}

/* read_request - the next complete request, before the idle deadline */
static enum read_status read_request(struct conn *c, struct request *r)
{
	struct timespec deadline = deadline_in(cfg.timeout);
	enum read_status st;
	char *begin;

	if (c->start == c->end)
		c->start = c->scan = c->end = 0;
	while (!find_request_end(c, &st)) {
		if (st != RD_OK)
			return st;
		st = fill(c, &deadline);
		if (st == RD_OK)
			continue;
		if (c->end == c->start)
			return st;
		if (st == RD_EOF)
			return violation("connection closed inside a request");
		if (st == RD_IDLE)
			return violation("request not completed before"
					 " the timeout");
		return st;
	}
	begin = c->buf + c->start;
	c->start = c->scan;
	return parse_request(begin, c->buf + c->scan, r);
}

/* write_all - send the whole reply before the deadline. Sockets are
 * written with MSG_DONTWAIT, pipes in PIPE_BUF pieces after POLLOUT, so
 * no write blocks and the descriptors' flags, which other processes may
 * share, are left alone. */
static int write_all(const struct conn *c, const char *p, size_t len)
{
	struct timespec deadline = deadline_in(cfg.timeout);
	ssize_t n;

	while (len > 0) {
		if (!c->sock && wait_fd(c->out, POLLOUT, &deadline) < 0)
			break;
		n = c->sock ? send(c->out, p, len, MSG_DONTWAIT | MSG_NOSIGNAL)
			: write(c->out, p, len < PIPE_BUF ? len : PIPE_BUF);
		if (n > 0) {
			p += n;
			len -= (size_t)n;
		} else if (n < 0 && errno == EAGAIN) {
			if (wait_fd(c->out, POLLOUT, &deadline) < 0)
				break;
		} else if (n < 0 && errno != EINTR) {
			msg_warn("writing the answer: %m");
			return -1;
		}
	}
	if (len == 0)
		return 0;
	msg_warn("client does not read its answers; closing the connection");
	return -1;
}

/*
 * The request: from its attributes to a verdict.
 */

/* What the look-ups of this process leave for maintenance. */
static struct lookup lookup = { .first = 1 };

/* The whitelists, loaded at the first RCPT request. */
static struct wl_set whitelists;

/* Bad whitelist lines were found: the maintenance logs them, once per
 * version of the files (the database keeps which version it logged). */
static int whitelist_problems;

/* wl_refresh - load the whitelists at the first RCPT request, and again
 * when a file has changed (checked at most every WL_RECHECK seconds) */
static void wl_refresh(void)
{
	static time_t checked;
	static long long sig;
	time_t now = time(NULL);

	if (whitelists.loaded && now >= checked && now - checked < WL_RECHECK)
		return;
	checked = now;
	if (whitelists.loaded && wl_signature(&cfg.whitelists) == sig)
		return;
	whitelist_problems = wl_load(&whitelists, &cfg.whitelists, WLR_COUNT,
				     1) > 0;
	sig = (long long)whitelists.sig;
}

/* bad_request - a request greylistd cannot judge: answer DUNNO */
static void bad_request(struct outcome *o, const char *why)
{
	o->v = V_BAD_REQUEST;
	snprintf(o->why, sizeof(o->why), "bad request (%s)", why);
}

/* missing - the first attribute a triplet needs that the request lacks */
static const char *missing(const struct request *r)
{
	static const enum attr_id needed[] =
		{ A_CLIENT_ADDRESS, A_SENDER, A_RECIPIENT };
	size_t i;

	for (i = 0; i < sizeof(needed) / sizeof(needed[0]); i++)
		if (!r->attr[needed[i]])
			return attr_names[needed[i]];
	return NULL;
}

/* policy - the verdict for one request */
static void policy(const struct request *r, struct outcome *o)
{
	static struct triplet t;
	const char *state = r->attr[A_PROTOCOL_STATE], *absent;
	char why[64], name[LOG_VALUE_MAX + 8];

	memset(o, 0, sizeof(*o));
	if (state && strcmp(state, "RCPT") != 0) {
		o->v = V_NOT_RCPT;
		return;
	}
	if ((absent = missing(r))) {
		snprintf(why, sizeof(why), "no %s", absent);
		bad_request(o, why);
		return;
	}
	if (make_triplet(r->attr[A_CLIENT_ADDRESS], r->attr[A_SENDER],
			 r->attr[A_RECIPIENT], &t) != 0) {
		bad_request(o, "client_address is not an IP address");
		return;
	}
	if (wl_match(&whitelists, &t, r->attr[A_CLIENT_NAME], &o->v))
		return;
	if (redis_in_use())
		redis_greylist(&t, o);
	else
		db_greylist(&t, &lookup, o);
	if (o->awl_new)
		msg_log(LOG_INFO, "whitelisted: %s[%s]", log_value(name,
			sizeof(name), r->attr[A_CLIENT_NAME]
			? r->attr[A_CLIENT_NAME] : ""), t.addr);
}

/*
 * Answering.
 */

/* expand - copy a template, replacing %X by vals[X] (%% is "%"); the
 * templates were checked at start-up (config_check) */
static void expand(char *dst, size_t size, const char *tpl,
		   const char *const vals[128])
{
	size_t o = 0;
	const char *v;

	for (; *tpl && o + 1 < size; tpl++) {
		if (*tpl != '%') {
			dst[o++] = *tpl;
			continue;
		}
		tpl++;
		v = *tpl == '%' ? "%" : vals[(unsigned char)*tpl & 127];
		while (v && *v && o + 1 < size)
			dst[o++] = *v++;
	}
	dst[o] = 0;
}

/* recipient_domain - the part after the last "@", printable characters
 * only (others become "?"), at most MAX_DOMAIN: it is only shown */
static void recipient_domain(char *dst, const char *rcpt)
{
	const char *at = strrchr(rcpt, '@');
	size_t o = 0;

	for (rcpt = at ? at + 1 : rcpt; *rcpt && o < MAX_DOMAIN; rcpt++) {
		unsigned char c = (unsigned char)*rcpt;

		dst[o++] = (char)(c > 32 && c < 127 ? c : '?');
	}
	dst[o] = 0;
}

/* reply_text - the --greylist-text of a deferral for "rcpt" after
 * "seconds" (defer), or the --x-greylist-header of a first pass after
 * "seconds" */
static void reply_text(char *buf, size_t size, int defer, const char *rcpt,
		       long long seconds)
{
	const char *vals[128] = { 0 };
	char num[24], domain[MAX_DOMAIN + 1], date[64];

	snprintf(num, sizeof(num), "%lld", seconds);
	vals['s'] = vals['t'] = num;
	if (defer) {
		recipient_domain(domain, rcpt ? rcpt : "");
		vals['r'] = domain;
		expand(buf, size, cfg.greylist_text, vals);
		return;
	}
	format_time(date, sizeof(date), TS_HEADER, time(NULL));
	vals['v'] = VERSION;
	vals['h'] = cfg.hostname;
	vals['d'] = date;
	expand(buf, size, cfg.header, vals);
}

/* format_reply - the "action=..." answer, ended by an empty line */
static size_t format_reply(char *buf, size_t size, const struct request *r,
			   const struct outcome *o, int prepend)
{
	char text[MAX_TEXT + MAX_DOMAIN + 64];
	int n;

	if (verdicts[o->v].defer) {
		reply_text(text, sizeof(text), 1, r->attr[A_RECIPIENT],
			   o->seconds);
		n = snprintf(buf, size, "action=%s%s%s\n\n",
			     cfg.greylist_action, *text ? " " : "", text);
	} else if (prepend) {
		reply_text(text, sizeof(text), 0, NULL, o->seconds);
		n = snprintf(buf, size, "action=PREPEND %s\n\n", text);
	} else {
		n = snprintf(buf, size, "action=DUNNO\n\n");
	}
	return n < 0 ? 0 : (size_t)n < size ? (size_t)n : size - 1;
}

/* The request attributes a decision line shows, in postgrey's order. */
static const struct {
	enum attr_id id;
	const char *field;		/* journal field */
} logged_attrs[] = {
	{ A_CLIENT_NAME, "GREYLISTD_CLIENT_NAME=" },
	{ A_CLIENT_ADDRESS, "GREYLISTD_CLIENT_ADDRESS=" },
	{ A_SENDER, "GREYLISTD_SENDER=" },
	{ A_RECIPIENT, "GREYLISTD_RECIPIENT=" },
};
#define NLOGGED (sizeof(logged_attrs) / sizeof(logged_attrs[0]))

/* A journal field, "NAME=value", at most this long. */
#define MAX_FIELD	(LOG_VALUE_MAX + 48)

/* The decision line being built, and its journal fields. */
struct logline {
	char text[2048];
	size_t n;
	const char *sep;		/* before the next part */
	char fields[NLOGGED + 3][MAX_FIELD];
	size_t nf;
};

/* add - one more ", name=value" (name NULL: the value as it is) to the
 * line, and under systemd the journal field FIELD=value */
static void add(struct logline *l, const char *name, const char *field,
		const char *value)
{
	const char *part[4] = { l->sep, name ? name : "", name ? "=" : "",
				value };
	size_t i, len;

	for (i = 0; i < 4; i++) {	/* not snprintf: a third of a request */
		len = strnlen(part[i], sizeof(l->text) - 1 - l->n);
		memcpy(l->text + l->n, part[i], len);
		l->n += len;
	}
	l->text[l->n] = 0;
	l->sep = ", ";
	if (use_journal && field)
		snprintf(l->fields[l->nf++], MAX_FIELD, "%s%s", field, value);
}

/* log_decision - one line per RCPT decision, in postgrey's format, and
 * under systemd the same facts as journal fields */
static void log_decision(const struct request *r, const struct outcome *o)
{
	static struct logline l;
	char reason[240], val[LOG_VALUE_MAX + 8], num[24];
	struct iovec iov[NLOGGED + 3];
	size_t i;

	if (!verdicts[o->v].action)
		return;
	verdict_reason(o, reason, sizeof(reason));
	l.n = l.nf = 0;
	l.sep = "";
	if (r->attr[A_QUEUE_ID] && *r->attr[A_QUEUE_ID]) {
		add(&l, NULL, NULL, log_value(val, sizeof(val),
					      r->attr[A_QUEUE_ID]));
		l.sep = ": ";
	}
	add(&l, "action", "GREYLISTD_ACTION=", verdicts[o->v].action);
	add(&l, "reason", "GREYLISTD_REASON=", reason);
	snprintf(num, sizeof(num), "%lld", o->seconds);
	if (o->v == V_PASS_FIRST)
		add(&l, "delay", "GREYLISTD_DELAY=", num);
	for (i = 0; i < NLOGGED; i++)
		if (r->attr[logged_attrs[i].id] && *r->attr[logged_attrs[i].id])
			add(&l, attr_names[logged_attrs[i].id],
			    logged_attrs[i].field, log_value(val, sizeof(val),
			    r->attr[logged_attrs[i].id]));
	for (i = 0; i < l.nf; i++)
		iov[i] = (struct iovec){ l.fields[i], strlen(l.fields[i]) };
	log_emit(verdicts[o->v].log_prio, l.text, iov, (int)l.nf);
}

/* judge - the verdict for one request, logged: whitelists checked for
 * changes first (for RCPT), then policy(); both protocols come here */
static void judge(const struct request *r, struct outcome *o)
{
	if (!r->attr[A_PROTOCOL_STATE]
	    || strcmp(r->attr[A_PROTOCOL_STATE], "RCPT") == 0)
		wl_refresh();
	policy(r, o);
	log_decision(r, o);
}

/* held_new - a new message: the last one's held deferrals are dropped.
 * Had they met no DATA request, and none has come on this connection,
 * the admin is told once: without check_policy_service in
 * smtpd_data_restrictions, --defer-at=data defers nothing. */
static void held_new(struct held *h, const char *inst)
{
	if (h->deferred && !h->data_seen && !h->warned++)
		msg_warn("defer-at = data: a message's %u deferred recipients met"
			 " no DATA request, and none has come on this connection:"
			 " check_policy_service must be in smtpd_data_restrictions"
			 " too (said once per connection)", h->deferred);
	memcpy(h->instance, inst, strlen(inst) + 1);
	h->rcpts = h->deferred = 0;
	h->seconds = 0;
}

/* at_data - --defer-at=data: a RCPT request's deferral is held for its
 * message and answered DUNNO (NULL). The message's DATA request is
 * deferred when any of its recipients was, and logged; the request
 * returned names the first deferred recipient, for %r. */
static const struct request *at_data(struct conn *c, const struct request *r,
				     struct outcome *o)
{
	struct held *h = &c->held;
	const char *state = r->attr[A_PROTOCOL_STATE];
	int data = state && strcmp(state, "DATA") == 0;

	if (strcmp(h->instance, r->attr[A_INSTANCE]) != 0)
		held_new(h, r->attr[A_INSTANCE]);
	h->data_seen |= data;
	if (data && h->deferred) {
		h->data = *r;
		h->data.attr[A_RECIPIENT] = NULL;
		o->v = V_DATA;
		o->seconds = h->seconds;
		snprintf(o->why, sizeof(o->why), "defer-at-data (%u of %u"
			 " recipients greylisted)", h->deferred, h->rcpts);
		log_decision(&h->data, o);
		h->data.attr[A_RECIPIENT] = h->rcpt;
		h->deferred = 0;
		return &h->data;
	}
	if (data || o->v == V_NOT_RCPT)
		return r;
	h->rcpts++;
	if (!verdicts[o->v].defer)
		return r;
	if (!h->deferred++)
		memcpy(h->rcpt, r->attr[A_RECIPIENT],
		       strlen(r->attr[A_RECIPIENT]) + 1);
	if (o->seconds > h->seconds)
		h->seconds = o->seconds;
	return NULL;
}

/* answer - decide, log and answer one policy request; -1 if the answer
 * could not be sent */
static int answer(struct conn *c, const struct request *r)
{
	static const char dunno[] = "action=DUNNO\n\n";
	char reply[MAX_REPLY];
	const char *inst = r->attr[A_INSTANCE];
	struct outcome o;
	int prepend = 0;

	judge(r, &o);
	if (cfg.defer_at_data && inst && !(r = at_data(c, r, &o)))
		return write_all(c, dunno, sizeof(dunno) - 1);
	if (o.v == V_PASS_FIRST && *cfg.header) {
		prepend = !inst || strcmp(inst, c->instance) != 0;
		if (inst)
			snprintf(c->instance, sizeof(c->instance), "%s", inst);
	}
	return write_all(c, reply, format_reply(reply, sizeof(reply), r, &o,
						prepend));
}

/*
 * The milter protocol (--milter).
 */

static void maintain(const struct conn *c);	/* Serving, below */

/* A milter packet: a 4-byte length, then a command byte and its data.
 * libmilter refuses data over 64 KiB, and with the body and headers
 * switched off (OPTNEG) neither MTA sends a packet near that; the bound
 * is what the connection's buffer holds. */
#define MILTER_MAX	(MAX_REQUEST - 4)

/* The protocol as both MTAs speak it: version 6; of the actions, adding
 * a header; of the stages, those greylisting needs (NOHELO, NOBODY,
 * NOHDRS, NOEOH, NOUNKNOWN, NODATA switch the others off). */
#define MILTER_VERSION		6
#define MILTER_ACTIONS		0x01	/* SMFIF_ADDHDRS */
#define MILTER_NO_STAGES	0x372

/* The macros asked for, by stage: the verified name (Postfix's
 * {client_name}, Sendmail's with {client_resolve}), and the queue id. */
static const struct {
	uint32_t stage;			/* SMFIM_CONNECT 0, ENVFROM 2, ENVRCPT 3 */
	const char *names;
} milter_macros[] = {
	{ 0, "{client_name} {client_resolve}" },
	{ 2, "{i}" },
	{ 3, "{i}" },
};

/* What a milter connection knows: its client, and the message. */
struct milter {
	char addr[INET6_ADDRSTRLEN + 1];	/* CONNECT's, "" when local */
	char name[LOG_VALUE_MAX + 1];		/* {client_name} */
	char resolve[16];			/* {client_resolve} */
	char queue_id[64];			/* {i} */
	char sender[MAX_LINE + 1];		/* MAIL's, without <> */
	char instance[24];			/* "milter-N": the message */
	unsigned messages;
	long long header;			/* a first pass's delay, or -1 */
};

/* be32 - four bytes, big-endian, as a number */
static uint32_t be32(const char *p)
{
	const unsigned char *u = (const unsigned char *)p;

	return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16
		| (uint32_t)u[2] << 8 | u[3];
}

/* put32 - a number as four bytes, big-endian */
static void put32(char *p, uint32_t v)
{
	p[0] = (char)(v >> 24);
	p[1] = (char)(v >> 16);
	p[2] = (char)(v >> 8);
	p[3] = (char)v;
}

/* read_packet - the next packet, before the idle deadline: *cmd, and
 * its data in [*data, *data + *len) */
static enum read_status read_packet(struct conn *c, char *cmd, char **data,
				    size_t *len)
{
	struct timespec deadline = deadline_in(cfg.timeout);
	enum read_status st;
	uint32_t n = 0;

	for (;;) {
		if (c->end - c->start >= 4) {
			n = be32(c->buf + c->start);
			if (n < 1 || n > MILTER_MAX)
				return violation("milter packet length out of"
						 " range (1 to 65532)");
			if (c->end - c->start >= 4 + (size_t)n)
				break;
		}
		st = fill(c, &deadline);
		if (st == RD_OK)
			continue;
		if (st == RD_EOF && c->end > c->start)
			return violation("connection closed inside a milter"
					 " packet");
		if (st == RD_IDLE && c->end > c->start)
			return violation("milter packet not completed before"
					 " the timeout");
		return st;
	}
	*cmd = c->buf[c->start + 4];
	*data = c->buf + c->start + 5;
	*len = n - 1;
	c->start += 4 + (size_t)n;
	c->scan = c->start;
	return RD_OK;
}

/* send_packet - one reply packet */
static int send_packet(const struct conn *c, char cmd, const char *data,
		       size_t len)
{
	char buf[MAX_REPLY + 8];

	if (len + 5 > sizeof(buf))
		return -1;
	put32(buf, (uint32_t)(len + 1));
	buf[4] = cmd;
	if (len)
		memcpy(buf + 5, data, len);
	return write_all(c, buf, len + 5);
}

/* take - the NUL-terminated string at *p, moving *p past it; NULL when
 * the data ends before its NUL */
static const char *take(const char **p, const char *end)
{
	const char *s = *p, *nul = memchr(s, 0, (size_t)(end - s));

	if (!nul)
		return NULL;
	*p = nul + 1;
	return s;
}

/* unbracket - "<addr>" as addr, into dst (MAX_LINE + 1); -1 if too long */
static int unbracket(char *dst, const char *s)
{
	size_t n = strlen(s);

	if (n >= 2 && s[0] == '<' && s[n - 1] == '>') {
		s++;
		n -= 2;
	}
	if (n > MAX_LINE)
		return -1;
	memcpy(dst, s, n);
	dst[n] = 0;
	return 0;
}

/* milter_optneg - answer OPTNEG: version 6, the one action, the stages
 * greylisting does not want (masked with the MTA's offer), the macros */
static int milter_optneg(const struct conn *c, const char *p)
{
	char buf[256];
	size_t o = 12, i, n;

	put32(buf, MILTER_VERSION);
	put32(buf + 4, MILTER_ACTIONS & be32(p + 4));
	put32(buf + 8, MILTER_NO_STAGES & be32(p + 8));
	for (i = 0; i < sizeof(milter_macros) / sizeof(milter_macros[0]); i++) {
		n = strlen(milter_macros[i].names) + 1;
		put32(buf + o, milter_macros[i].stage);
		memcpy(buf + o + 4, milter_macros[i].names, n);
		o += 4 + n;
	}
	return send_packet(c, 'O', buf, o);
}

/* milter_macro - keep the macros a decision uses */
static enum read_status milter_macro(struct milter *m, const char *p,
				     const char *end)
{
	static const struct { const char *name; size_t off, size; } keep[] = {
		{ "client_name", offsetof(struct milter, name), LOG_VALUE_MAX + 1 },
		{ "client_resolve", offsetof(struct milter, resolve), 16 },
		{ "i", offsetof(struct milter, queue_id), 64 },
	};
	const char *name, *value;
	size_t i, n;

	for (p++; p < end; ) {		/* after the stage's command byte */
		if (!(name = take(&p, end)) || !(value = take(&p, end)))
			return violation("milter macro without its NUL");
		n = strlen(name);
		if (n >= 2 && name[0] == '{' && name[n - 1] == '}') {
			name++;
			n -= 2;
		}
		for (i = 0; i < sizeof(keep) / sizeof(keep[0]); i++)
			if (strlen(keep[i].name) == n
			    && memcmp(keep[i].name, name, n) == 0)
				snprintf((char *)m + keep[i].off, keep[i].size,
					 "%s", value);
	}
	return RD_OK;
}

/* milter_connect - CONNECT: the client's address (none for a local
 * submission: family 'L' or 'U'), a new connection's client */
static enum read_status milter_connect(struct milter *m, const char *p,
				       const char *end)
{
	const char *addr;
	char family;

	m->addr[0] = 0;
	if (!take(&p, end) || p >= end)
		return violation("milter CONNECT cut short");
	family = *p++;
	if (family != '4' && family != '6')
		return RD_OK;
	p += 2;				/* the port */
	if (p > end || !(addr = take(&p, end)))
		return violation("milter CONNECT without its address");
	if (strncmp(addr, "IPv6:", 5) == 0)
		addr += 5;
	if (strlen(addr) >= sizeof(m->addr))
		return violation("milter CONNECT address too long");
	memcpy(m->addr, addr, strlen(addr) + 1);
	return RD_OK;
}

/* milter_reset - ABORT, and the end of a message: the next is new */
static void milter_reset(struct milter *m)
{
	m->sender[0] = m->queue_id[0] = 0;
	m->header = -1;
}

/* verified - a name a whitelist may match: Postfix's {client_name} is
 * verified or "unknown"; Sendmail's counts when {client_resolve} is OK */
static int verified(const struct milter *m)
{
	return *m->name && *m->name != '[' && strcmp(m->name, "unknown") != 0
		&& (!*m->resolve || strcmp(m->resolve, "OK") == 0);
}

/* milter_defer - REPLYCODE "4NN 4.N.N text": the configured code (451
 * for DEFER_IF_PERMIT and the other words), 4.7.1 unless the code or the
 * text has an enhanced status already (as Postfix adds it), every "%"
 * doubled (a single one makes Sendmail answer 550 5.7.1, a permanent
 * failure) */
static int milter_defer(const struct conn *c, const struct request *r,
			const struct outcome *o)
{
	char text[MAX_TEXT + MAX_DOMAIN + 64], code[16], buf[MAX_REPLY];
	const char *a = cfg.greylist_action, *t;
	size_t n;

	reply_text(text, sizeof(text), 1, r->attr[A_RECIPIENT], o->seconds);
	snprintf(code, sizeof(code), "%s", isdigit((unsigned char)*a)
		 ? a : "451");
	n = status_len(text);
	n = (size_t)snprintf(buf, sizeof(buf), "%s%s ", code, strchr(code, ' ')
			     || (n > 0 && text[n] == ' ') ? "" : " 4.7.1");
	for (t = text; *t && n + 3 < sizeof(buf); t++) {
		if (*t == '%')
			buf[n++] = '%';
		buf[n++] = *t;
	}
	buf[n++] = 0;
	return send_packet(c, 'y', buf, n);
}

/* milter_rcpt - RCPT: the same request, rules and decision as the
 * policy protocol's (judge), answered 451 or CONTINUE */
static enum read_status milter_rcpt(const struct conn *c, struct milter *m,
				    const char *p, const char *end)
{
	static char rcpt[MAX_LINE + 1];
	struct request r;
	struct outcome o;
	const char *s = take(&p, end);

	if (!s || unbracket(rcpt, s) != 0)
		return violation("milter RCPT without its address, or too long");
	memset(&r, 0, sizeof(r));
	r.attr[A_REQUEST] = "smtpd_access_policy";
	r.attr[A_PROTOCOL_STATE] = "RCPT";
	r.attr[A_CLIENT_ADDRESS] = *m->addr ? m->addr : NULL;
	r.attr[A_CLIENT_NAME] = verified(m) ? m->name : "unknown";
	r.attr[A_SENDER] = m->sender;
	r.attr[A_RECIPIENT] = rcpt;
	r.attr[A_INSTANCE] = m->instance;
	r.attr[A_QUEUE_ID] = m->queue_id;
	judge(&r, &o);
	if (o.v == V_PASS_FIRST && m->header < 0)
		m->header = o.seconds;	/* one header, at the end of data */
	if (verdicts[o.v].defer)
		return milter_defer(c, &r, &o) == 0 ? RD_OK : RD_IOERR;
	return send_packet(c, 'c', NULL, 0) == 0 ? RD_OK : RD_IOERR;
}

/* milter_eob - the end of the message: the X-Greylist header above the
 * MTA's own (INSHEADER at index 0) when it had a first pass, and go on */
static enum read_status milter_eob(const struct conn *c, struct milter *m)
{
	char text[MAX_TEXT + 64], buf[MAX_REPLY];
	const char *value;
	char *colon;
	size_t n;

	if (m->header >= 0 && *cfg.header) {
		reply_text(text, sizeof(text), 0, NULL, m->header);
		colon = strchr(text, ':');	/* config_check saw one */
		value = colon ? colon + 1 + (colon[1] == ' ') : "";
		if (colon)
			*colon = 0;
		put32(buf, 0);
		n = (size_t)snprintf(buf + 4, sizeof(buf) - 4, "%s%c%s", text, 0,
				     value);
		if (send_packet(c, 'i', buf, 4 + n + 1) != 0)
			return RD_IOERR;
	}
	milter_reset(m);
	return send_packet(c, 'c', NULL, 0) == 0 ? RD_OK : RD_IOERR;
}

/* milter_command - one packet: the table of the protocol's commands */
static enum read_status milter_command(const struct conn *c, struct milter *m,
				       char cmd, const char *p, size_t len)
{
	const char *end = p + len, *s;

	switch (cmd) {
	case 'O':			/* OPTNEG */
		return len < 12 ? violation("milter OPTNEG shorter than 12"
					     " bytes")
			: milter_optneg(c, p) == 0 ? RD_OK : RD_IOERR;
	case 'D':			/* MACRO: no reply */
		return len < 1 ? violation("milter MACRO without its stage")
			: milter_macro(m, p, end);
	case 'C':			/* CONNECT */
		if (milter_connect(m, p, end) != RD_OK)
			return RD_VIOLATION;
		break;
	case 'M':			/* MAIL: a new message */
		if (!(s = take(&p, end)) || unbracket(m->sender, s) != 0)
			return violation("milter MAIL without its address, or"
					 " too long");
		m->header = -1;
		snprintf(m->instance, sizeof(m->instance), "milter-%u",
			 ++m->messages);
		break;
	case 'R':
		return milter_rcpt(c, m, p, end);
	case 'E':			/* EOB */
		return milter_eob(c, m);
	case 'A':			/* ABORT: no reply */
		milter_reset(m);
		return RD_OK;
	case 'K':			/* QUIT_NC: a new connection follows */
		memset(m, 0, sizeof(*m));
		milter_reset(m);
		return RD_OK;
	case 'Q':			/* QUIT */
		return RD_EOF;
	case 'H': case 'T': case 'L': case 'N': case 'B': case 'U':
		break;			/* HELO, DATA, HEADER, EOH, BODY, UNKNOWN */
	default:
		return violation("unknown milter command");
	}
	return send_packet(c, 'c', NULL, 0) == 0 ? RD_OK : RD_IOERR;
}

/* milter_serve - a milter connection's packets until QUIT or EOF */
static enum read_status milter_serve(struct conn *c)
{
	static struct milter m;
	enum read_status st;
	char cmd, *data;
	size_t len;

	milter_reset(&m);
	do {
		st = read_packet(c, &cmd, &data, &len);
		if (st == RD_OK)
			st = milter_command(c, &m, cmd, data, len);
		if (st == RD_OK)
			maintain(c);
	} while (st == RD_OK);
	return st;
}

/*
 * Debian greylistd's protocol (--greylistd-protocol).
 */

/* The words of a line, at most this many: the command and its options,
 * the client, a sender, recipients (Exim's $recipients: a null-sender
 * message to more recipients is not judged, and so passes) */
#define GP_MAX_WORDS	64

/* Debian greylistd's commands other than "update": its operator's
 * (greylistctl's here), and "check" and "status", which look without
 * recording (greylistctl explain). Refused, answered "false". */
static const char *const gp_refused[] = {
	"check", "status", "add", "delete", "list", "stats", "mrtg", "save",
	"reload", "clear",
};

/* gp_line - one line before the idle deadline, or the input up to EOF
 * (Exim half-closes after sending it): NUL-terminated in place, CR and LF
 * cut; NULL (said why) on a timeout, a line longer than the buffer or one
 * with a NUL byte in it */
static char *gp_line(struct conn *c)
{
	struct timespec deadline = deadline_in(cfg.timeout);
	enum read_status st = RD_OK;
	const char *why = NULL;
	char *nl;

	while (!(nl = memchr(c->buf, '\n', c->end)) && st == RD_OK
	       && c->end < sizeof(c->buf))
		st = fill(c, &deadline);
	if (!nl && c->end == sizeof(c->buf))
		why = "a line longer than 64 KiB";
	else if (!nl && st != RD_EOF)
		why = st == RD_IDLE ? "no line before the timeout"
			: "the line could not be read";
	if (!nl)
		nl = c->buf + c->end;
	if (!why && memchr(c->buf, 0, (size_t)(nl - c->buf)))
		why = "a NUL byte in the line";
	if (why) {
		msg_warn("greylistd protocol: %s; answered false", why);
		return NULL;
	}
	*nl = 0;
	if (nl > c->buf && nl[-1] == '\r')
		nl[-1] = 0;
	return c->buf;
}

/* gp_words - split a line at white space into w[], lower-cased as
 * Debian's greylistd takes it; the count, or -1 (said why) with too many
 * words or a word longer than a policy value may be (MAX_LINE: the
 * triplet's buffers) */
static int gp_words(char *s, char **w)
{
	char *save = NULL;
	int n = 0;

	for (s = strtok_r(s, " \t", &save); s;
	     s = strtok_r(NULL, " \t", &save)) {
		if (n == GP_MAX_WORDS || strlen(s) > MAX_LINE) {
			msg_warn("greylistd protocol: %s; answered false",
				 n == GP_MAX_WORDS ? "more than 64 words"
				 : "a word longer than 8448 bytes");
			return -1;
		}
		lower(s, s);
		w[n++] = s;
	}
	return n;
}

/* gp_client - the client as Exim's ${mask:IP/N} writes it, taken as it
 * is: "/N" cut; an IPv6 network, which ${mask} writes in full with dots
 * for colons (2001.0db8.0001.0000.0000.0000.0000.0000), given its
 * colons back. The result is parsed as an address like any other. */
static void gp_client(char *w)
{
	char *p;
	int dots = 0;

	w[strcspn(w, "/")] = 0;
	for (p = w; *p; p++)
		dots += *p == '.';
	if (dots == 7 && !strchr(w, ':'))
		for (p = w; *p; p++)
			if (*p == '.')
				*p = ':';
}

/* gp_shape - where the recipients of w[0..n-1] start: 2 for "IP SENDER
 * RCPT" (acl_check_rcpt), 1 for "IP RCPT[, RCPT...]" (acl_check_data:
 * Exim's $recipients, for the null sender); -1 for neither. A comma may
 * only end a recipient before the last one. */
static int gp_shape(char **w, int n)
{
	int i, data = n == 2 || (n > 2 && w[1][strlen(w[1]) - 1] == ',');
	size_t len;

	if (n < 2 || (!data && n != 3))
		return -1;
	for (i = data ? 1 : 2; i < n; i++) {
		len = strlen(w[i]) - (data && i < n - 1);
		if (len == 0 || strcspn(w[i], ",") != len)
			return -1;
	}
	return data ? 1 : 2;
}

/* gp_decide - the client w[0] and the sender and recipients after it:
 * deferred? Each recipient is judged as a policy request; any deferral
 * defers. -1 if the words are not of either shape (gp_shape). */
static int gp_decide(char **w, int n)
{
	struct request r;
	struct outcome o;
	int i, first = gp_shape(w, n), defer = 0;

	if (first < 0)
		return -1;
	memset(&r, 0, sizeof(r));
	r.attr[A_REQUEST] = "smtpd_access_policy";
	r.attr[A_PROTOCOL_STATE] = "RCPT";
	r.attr[A_CLIENT_ADDRESS] = w[0];
	r.attr[A_SENDER] = first == 2 ? w[1] : "";
	for (i = first; i < n; i++) {
		w[i][strcspn(w[i], ",")] = 0;
		r.attr[A_RECIPIENT] = w[i];
		judge(&r, &o);
		defer |= verdicts[o.v].defer;
	}
	return defer;
}

/* gp_is_refused - is "word" one of Debian greylistd's commands that are
 * not served? */
static int gp_is_refused(const char *word)
{
	size_t i;

	for (i = 0; i < sizeof(gp_refused) / sizeof(gp_refused[0]); i++)
		if (strcmp(word, gp_refused[i]) == 0)
			return 1;
	return 0;
}

/* gp_refuse - a line greylistd does not serve: a warning showing it, and
 * "false" */
static int gp_refuse(const char *shown)
{
	msg_warn("greylistd protocol: not \"[update] --grey|--white|--black"
		 " IP SENDER RCPT\" or \"... IP RCPT[, RCPT...]\": %s;"
		 " answered false", *shown ? shown : "(an empty line)");
	return 0;
}

/* gp_answer - 1 ("true") or 0 ("false") for a line's n > 0 words, as
 * Debian's greylistd answers "[update] --grey|--white|--black DATA":
 * --grey is true when the mail is deferred, --white when it passes (a
 * request that cannot be judged, such as one whose client is not an
 * address, passes, as with DUNNO). --black is false: greylistd keeps no
 * blacklist. Any other line is refused (gp_refuse). */
static int gp_answer(char **w, int n, const char *shown)
{
	int i = strcmp(w[0], "update") == 0, d = -1;
	const char *opt = i < n ? w[i] : "";

	if (gp_is_refused(w[0])) {
		msg_warn("greylistd protocol: \"%s\" is a command of Debian's"
			 " greylistd that greylistd does not serve; answered"
			 " false", w[0]);
		return 0;
	}
	if (n - i >= 3 && strcmp(opt, "--black") == 0)
		return 0;
	if (n - i >= 3 && (strcmp(opt, "--grey") == 0
			   || strcmp(opt, "--white") == 0)) {
		gp_client(w[i + 1]);
		d = gp_decide(w + i + 1, n - i - 1);
	}
	if (d < 0)
		return gp_refuse(shown);
	return strcmp(opt, "--grey") == 0 ? d : !d;
}

/* gp_serve - one line, one word: "true" or "false", as Debian's
 * greylistd answers; then the connection is closed */
static enum read_status gp_serve(struct conn *c)
{
	char *line = gp_line(c), *w[GP_MAX_WORDS], shown[LOG_VALUE_MAX + 8];
	int n, yes = 0;

	if (line) {
		log_value(shown, sizeof(shown), line);
		n = gp_words(line, w);
		yes = n > 0 ? gp_answer(w, n, shown) : n == 0 && gp_refuse(shown);
	}
	return write_all(c, yes ? "true" : "false", yes ? 4 : 5) == 0
		? RD_EOF : RD_IOERR;
}

/*
 * Serving: the loop, maintenance, start-up.
 */

/* The serving process's own arguments, passed on to greylistctl. */
static char **server_argv;
static int server_argc;

/* run_greylistctl - in the child: greylistctl maintain (--repair when
 * the file was found damaged), with this process's options, from the
 * directory this binary is in (where make install puts both) */
static void run_greylistctl(int damaged)
{
	static char command[] = "maintain", repair[] = "--repair";
	char self[PATH_MAX], path[PATH_MAX + 16], *args[256], *slash = NULL;
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	int i, k = 0;

	if (n > 0) {
		self[n] = 0;
		slash = strrchr(self, '/');
	}
	if (!slash)
		_exit(1);
	*slash = 0;
	snprintf(path, sizeof(path), "%s/greylistctl", self);
	args[k++] = path;
	args[k++] = command;
	if (damaged)
		args[k++] = repair;
	for (i = 1; i < server_argc && k < 255; i++)
		args[k++] = server_argv[i];
	args[k] = NULL;
	execv(path, args);
	msg_warn("cannot run %s for maintenance: %m", path);
	_exit(1);
}

/* null_fds - point the descriptors from "lowest" to 2 at /dev/null */
static int null_fds(int lowest)
{
	int fd = open("/dev/null", O_RDWR | O_CLOEXEC), i, rc = 0;

	for (i = lowest; i <= 2; i++)
		if (fd < 0 || dup2(fd, i) < 0)
			rc = -1;
	if (fd > 2)
		close(fd);
	return rc;
}

/* maintain - when a look-up found maintenance due (an expiry, a damaged
 * file, whitelist lines not yet logged), start greylistctl maintain in
 * a child, after the answer has gone, so that no request waits for it.
 * The child does not keep the connection. */
static void maintain(const struct conn *c)
{
	static int children;
	int damaged = lookup.damaged;
	pid_t pid;

	while (children > 0 && waitpid(-1, NULL, WNOHANG) > 0)
		children--;
	if (!lookup.expiry_due && !whitelist_problems && !lookup.damaged)
		return;
	lookup.expiry_due = whitelist_problems = lookup.damaged = 0;
	pid = fork();
	if (pid < 0)
		msg_warn("cannot start maintenance: %m");
	children += pid > 0;
	if (pid != 0)
		return;
	if (c->in > 2)
		close(c->in);
	if (c->out > 2 && c->out != c->in)
		close(c->out);
	if (null_fds(0) != 0)
		_exit(1);
	run_greylistctl(damaged);
}

/* is_same - do two descriptors' stats name one file? */
static int is_same(const struct stat *a, const struct stat *b)
{
	return a->st_ino == b->st_ino && a->st_dev == b->st_dev;
}

/* check_socket - is the connection one socket (in and out), and is
 * stderr that socket too (spawn, inetd)? Then stderr is pointed at
 * /dev/null, so that no library message can enter the protocol. */
static int check_socket(int in, int out)
{
	struct stat a, b;
	int sock = fstat(in, &a) == 0 && S_ISSOCK(a.st_mode);

	if (sock && fstat(2, &b) == 0 && is_same(&a, &b))
		(void)null_fds(2);	/* if it fails, nothing writes there */
	return in == out || (sock && fstat(out, &b) == 0 && is_same(&a, &b));
}

/* policy_serve - Postfix policy requests until EOF (with --exim, one) */
static enum read_status policy_serve(struct conn *c)
{
	enum read_status st;
	struct request r;

	while ((st = read_request(c, &r)) == RD_OK) {
		if (answer(c, &r) != 0)
			return RD_IOERR;
		maintain(c);
		if (cfg.exim)
			return RD_EOF;
	}
	return st;
}

/* serve - one connection, in its protocol; the exit code */
static int serve(int in, int out)
{
	static struct conn c;
	enum read_status st;

	c.in = in;
	c.out = out;
	c.sock = check_socket(in, out);
	st = cfg.milter ? milter_serve(&c) : cfg.greylistd_protocol
		? gp_serve(&c) : policy_serve(&c);
	if (st == RD_IDLE)
		msg_info("idle for %llds; closing the connection", cfg.timeout);
	return st == RD_VIOLATION ? 76 : st == RD_IOERR ? 74 : 0;
}

/* connection - the client socket: fd 3 when systemd passed it
 * (LISTEN_FDS=1), stdin/stdout otherwise. -1 on a wrong hand-over. */
static int connection(int *in, int *out)
{
	*in = 0;
	*out = 1;
	if (!getenv("LISTEN_FDS"))
		return 0;
	if (sd_stream_socket(in) != 0)
		return -1;
	*out = *in;
	return 0;
}

/* The operator commands, which are greylistctl's. */
static const char *const ctl_commands[] = {
	"check", "stats", "dump", "load", "expire", "report", "explain",
	"maintain",
};

/* argument_error - what to say of a word on the command line */
static void argument_error(const char *word)
{
	size_t i;

	for (i = 0; i < sizeof(ctl_commands) / sizeof(ctl_commands[0]); i++)
		if (strcmp(word, ctl_commands[i]) == 0) {
			config_error("%s is an operator command: run greylistctl"
				     " %s", word, word);
			return;
		}
	config_error("unexpected argument: %.80s", word);
}

/* usage - what greylistd takes */
static int usage(void)
{
	printf("usage: greylistd [--option=value ...]\n"
	       "Serves one connection on stdin/stdout (spawn, inetd) or fd 3"
	       " (systemd).\nOptions (also in " DEFAULT_CONFIG "):\n");
	config_usage(stdout, NULL, 0);
	printf("The operator commands are greylistctl's (man greylistctl).\n");
	return fflush(stdout) == 0 && !ferror(stdout) ? 0 : 1;
}

int main(int argc, char **argv)
{
	struct sigaction sa;
	const char *word = NULL;
	int in, out, rc;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_IGN;	/* a closed connection is an error, */
	sigaction(SIGPIPE, &sa, NULL);	/* not a death */
	server_argc = argc;
	server_argv = argv;
	if (config_parse(argc - 1, argv + 1, NULL, 0, &word, 1) > 0)
		argument_error(word);
	log_open();
	if (!config_errors && cfg.help)
		return usage();
	if (!config_errors && cfg.version)
		return printf("greylistd %s\n", VERSION) < 0 || fflush(stdout);
	config_check();
	if (config_errors) {
		config_report();
		return 64;
	}
	if (connection(&in, &out) != 0)
		return 64;
	rc = serve(in, out);
	/* Under systemd the unit's processes are killed when the main one
	 * exits: let a maintenance child finish first. The connection is
	 * shut down before, so that the client does not wait for it (close
	 * alone would not end it: systemd keeps a copy of the socket). */
	shutdown(in, SHUT_RDWR);
	close(in);
	close(out);
	while (wait(NULL) > 0 || errno == EINTR)
		;
	return rc;
}
