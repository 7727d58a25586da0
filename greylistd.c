/*
 * greylistd - per-connection greylisting policy helper for Postfix
 *
 * SYNOPSIS
 *	greylistd [--option=value ...]		serve one connection
 *	greylistd COMMAND [--option=value ...]	operator commands (see below)
 *
 * DESIGN
 *	One process per connection. systemd (greylistd.socket, Accept=yes),
 *	Postfix spawn(8) or inetd starts greylistd with the connection on
 *	stdin/stdout (or as a passed socket, fd 3, with LISTEN_FDS=1). It
 *	reads Postfix SMTPD access policy requests until EOF, answers each
 *	one, and exits. There is no daemon and no thread.
 *
 *	Each RCPT request names a triplet: the client network (IPv4 /24,
 *	IPv6 /64 by default), the normalised sender and the recipient. A
 *	triplet seen for the first time is deferred and recorded; a retry
 *	after --delay and within --retry-window passes, and so does every
 *	later message of that triplet until it has been idle for --max-age.
 *
 *	State lives in one GDBM file shared by all processes. Each request
 *	opens it, locks it (flock on the file itself, the lock GDBM's own
 *	tools take too), reads, and closes it again: GDBM caches cannot be
 *	shared between processes. The shared (reader) lock is taken first;
 *	the exclusive (writer) lock only when a record must change, because
 *	closing a writer syncs the file and costs about ten readers. After
 *	the writer lock is held the decision is made again, so two processes
 *	racing on one triplet cannot lose an update.
 *
 * LIMITS (reject, never truncate: a cut key could collide with another)
 *	MAX_LINE	one "name=value" line, 8192 + 256 bytes
 *	MAX_ATTRS	attributes in one request, 128
 *	MAX_REQUEST	one request, 64 KiB
 *	Each limit is explained where it is defined.
 *
 * FAILURE RULES
 *	There are exactly two ways to fail while serving:
 *	- protocol violation (bad request type, over-long line, NUL byte, too
 *	  many attributes, too large a request, line without "="): one
 *	  warning is logged, no reply is sent, the connection is closed and
 *	  greylistd exits 76. Postfix then applies its default_action.
 *	- internal fault (database unreadable, lock not had within
 *	  --lock-timeout, disk full, out of memory): one warning is logged,
 *	  the request is answered "action=DUNNO" and serving goes on, so mail
 *	  keeps flowing while greylistd is unwell.
 *	Nothing but replies is ever written to stdout or stderr while
 *	serving: under spawn(8) and inetd both are the client socket.
 *
 * EXIT CODES
 *	0 end of input or idle timeout; 64 bad command line; 74 the
 *	connection failed (read/write error, client gone); 76 protocol
 *	violation; 1 an operator command failed.
 *
 * LOG FORMAT (syslog facility mail, ident greylistd; or --log-file)
 *	One line per RCPT decision, in postgrey's format so existing log
 *	tools keep working; empty values are left out, as postgrey does:
 *	  [QUEUEID: ]action=greylist, reason=new, client_name=N,
 *	      client_address=A, sender=S, recipient=R
 *	  action=greylist, reason=early-retry (123s missing), ...
 *	  action=pass, reason=triplet found, delay=312, ...
 *	  action=pass, reason=triplet found, ...
 *	  action=pass, reason=fail-open (WHY), ...	(internal fault)
 *	Other lines start with "warning: " or "error: ". Every value from
 *	the network passes through log_value(): at most LOG_VALUE_MAX bytes,
 *	control characters, bytes above 126, '\' and ',' written as \xHH.
 *	Under systemd the same line goes to the journal with the fields
 *	GREYLISTD_ACTION, GREYLISTD_REASON, GREYLISTD_CLIENT_ADDRESS, ...
 *
 * DATABASE RECORDS (version 1; see record_decode())
 *	key "T\n<net>\n<sender>\n<recipient>"	value "1 FIRST LAST PASSED"
 *	  FIRST: when greylisting of the triplet began; LAST: when it was
 *	  last seen (refreshed at most every TOUCH_INTERVAL); PASSED: when it
 *	  first passed, 0 while pending. All times are Unix seconds.
 *	A record that does not parse as exactly this shape is treated as
 *	absent and rewritten. "\n" separates fields because Postfix never
 *	sends a newline inside a value, so no two triplets share a key.
 */

#define _GNU_SOURCE

#include <arpa/inet.h>
#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <gdbm.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>
#include <systemd/sd-journal.h>

#define VERSION "0.1"

/*
 * Limits.
 */

/* Postfix sends values of up to 4 x line_length_limit = 8192 bytes; the
 * extra 256 leave room for the attribute name and "=". */
#define MAX_LINE	(8192 + 256)

/* Postfix 3.7 sends about 35 attributes; twice that leaves room for
 * future versions while bounding the work per request. */
#define MAX_ATTRS	128

/* A Postfix request with every attribute filled is a few KiB. 64 KiB
 * admits several maximal values and bounds the input buffer. */
#define MAX_REQUEST	65536

/* A reply is one action line: a defer text or a header, both checked
 * at start-up to fit, plus a recipient domain of up to MAX_DOMAIN. */
#define MAX_REPLY	2048
#define MAX_TEXT	512
#define MAX_DOMAIN	255

/* A key holds a network, a sender and a recipient, each from one line. */
#define MAX_KEY		(2 * MAX_LINE + 64)

/* A logged value is cut here (and marked "..."): a log line must stay
 * readable and within syslog's line limit. Keys are never cut. */
#define LOG_VALUE_MAX	256

/* A record's value: "1" and up to three decimal numbers. */
#define MAX_RECORD	80

/* Times in records must lie in [0, MAX_TIME]: year 4000 is far enough. */
#define MAX_TIME	64060588800LL

/* A passed triplet's LAST is refreshed at most this often, so known
 * triplets stay on the cheap reader path; max-age loses at most this. */
#define TOUCH_INTERVAL	3600

/* A database file replaced under us (by recovery) is reopened at most
 * this many times within one request. */
#define DB_REOPEN_TRIES	4

/*
 * Configuration.
 */

struct config {
	const char *db_path;
	long long delay;
	long long retry_window;
	long long max_age;
	long long ipv4cidr;
	long long ipv6cidr;
	long long lookup_by_host;
	long long timeout;
	long long lock_timeout;
	const char *greylist_action;
	const char *greylist_text;
	const char *header;
	const char *hostname;
	const char *log_file;
	long long help;
	long long version;
};

static struct config cfg = {
	.db_path = "/var/lib/greylistd/greylistd.db",
	.delay = 300,
	.retry_window = 2 * 86400,
	.max_age = 35 * 86400,
	.ipv4cidr = 24,
	.ipv6cidr = 64,
	.timeout = 360,
	.lock_timeout = 2,
	.greylist_action = "DEFER_IF_PERMIT",
	.greylist_text = "Greylisted, please try again in %s seconds",
	.header = "X-Greylist: delayed %t seconds by greylistd-%v at %h; %d",
};

enum opt_kind { OPT_FLAG, OPT_NUMBER, OPT_DURATION, OPT_STRING };

/* One row per option. A bare number given to a duration option is in
 * "unit" seconds, so postgrey's --max-age=35 (days) means the same here. */
struct option_spec {
	const char *name;
	enum opt_kind kind;
	long long min, max, unit;
	void *dest;
	const char *help;
};

#define DAY 86400LL
static const struct option_spec options[] = {
	{ "db", OPT_STRING, 0, 0, 0, &cfg.db_path,
	  "GDBM file of triplets (/var/lib/greylistd/greylistd.db)" },
	{ "delay", OPT_DURATION, 1, 7 * DAY, 1, &cfg.delay,
	  "seconds a new triplet is deferred (300)" },
	{ "retry-window", OPT_DURATION, 60, 30 * DAY, DAY, &cfg.retry_window,
	  "time a deferred triplet may take to retry (2d)" },
	{ "max-age", OPT_DURATION, 60, 3650 * DAY, DAY, &cfg.max_age,
	  "idle time after which a triplet is forgotten (35d)" },
	{ "ipv4cidr", OPT_NUMBER, 0, 32, 0, &cfg.ipv4cidr,
	  "prefix length grouping IPv4 clients (24)" },
	{ "ipv6cidr", OPT_NUMBER, 0, 128, 0, &cfg.ipv6cidr,
	  "prefix length grouping IPv6 clients (64)" },
	{ "lookup-by-host", OPT_FLAG, 0, 1, 0, &cfg.lookup_by_host,
	  "key on the full client address, not its network" },
	{ "lookup-by-subnet", OPT_FLAG, 0, 0, 0, NULL,
	  "key on the client network (the default; for postgrey users)" },
	{ "greylist-action", OPT_STRING, 0, 0, 0, &cfg.greylist_action,
	  "action that defers: DEFER_IF_PERMIT, DEFER or 4NN" },
	{ "greylist-text", OPT_STRING, 0, 0, 0, &cfg.greylist_text,
	  "defer text; %s seconds left, %r recipient domain" },
	{ "x-greylist-header", OPT_STRING, 0, 0, 0, &cfg.header,
	  "header on first pass; %t delay, %v version, %h host, %d date;"
	  " empty: none" },
	{ "hostname", OPT_STRING, 0, 0, 0, &cfg.hostname,
	  "host name for %h (the system's name)" },
	{ "timeout", OPT_DURATION, 1, DAY, 1, &cfg.timeout,
	  "idle time after which the connection is closed (360s)" },
	{ "lock-timeout", OPT_DURATION, 1, 60, 1, &cfg.lock_timeout,
	  "longest wait for the database lock before answering DUNNO (2s)" },
	{ "log-file", OPT_STRING, 0, 0, 0, &cfg.log_file,
	  "append log lines to this file instead of syslog" },
	{ "help", OPT_FLAG, 0, 1, 0, &cfg.help, "show this help" },
	{ "version", OPT_FLAG, 0, 1, 0, &cfg.version, "show the version" },
};
#define NOPTIONS (sizeof(options) / sizeof(options[0]))

/*
 * Logging. Never to stdout or stderr while serving.
 */

static int log_fd = -1;			/* --log-file, or -1 for syslog */
static int use_journal;			/* running under systemd */

/* libsystemd is loaded only under systemd: linking it doubles the cost
 * of starting a process, which spawn(8) and inetd would pay for nothing. */
static struct sd_api {
	void *handle;
	__typeof__(sd_listen_fds) *listen_fds;
	__typeof__(sd_is_socket) *is_socket;
	__typeof__(sd_journal_sendv) *journal_sendv;
} sd;

static const struct {
	const char *name;
	size_t offset;
} sd_symbols[] = {
	{ "sd_listen_fds", offsetof(struct sd_api, listen_fds) },
	{ "sd_is_socket", offsetof(struct sd_api, is_socket) },
	{ "sd_journal_sendv", offsetof(struct sd_api, journal_sendv) },
};

/* sd_load - load libsystemd; 0 when every symbol was found */
static int sd_load(void)
{
	size_t i;

	if (sd.handle)
		return 0;
	sd.handle = dlopen("libsystemd.so.0", RTLD_NOW | RTLD_LOCAL);
	if (!sd.handle)
		return -1;
	for (i = 0; i < sizeof(sd_symbols) / sizeof(sd_symbols[0]); i++) {
		void *sym = dlsym(sd.handle, sd_symbols[i].name);

		if (!sym)
			return -1;
		memcpy((char *)&sd + sd_symbols[i].offset, &sym, sizeof(sym));
	}
	return 0;
}

/* log_value - a network-supplied string made safe for one log line */
static const char *log_value(char *dst, size_t size, const char *src)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	for (; *src; src++) {
		unsigned char c = (unsigned char)*src;
		int plain = c >= 32 && c < 127 && c != '\\' && c != ',';

		if (o + (plain ? 1 : 4) + 4 > size || o >= LOG_VALUE_MAX) {
			memcpy(dst + o, "...", 4);
			return dst;
		}
		if (plain) {
			dst[o++] = (char)c;
		} else {
			dst[o++] = '\\';
			dst[o++] = 'x';
			dst[o++] = hex[c >> 4];
			dst[o++] = hex[c & 15];
		}
	}
	dst[o] = 0;
	return dst;
}

/* log_file_write - one timestamped line, written with one write(2) so
 * that lines of concurrent processes never interleave */
static void log_file_write(const char *line)
{
	char buf[2048], stamp[40];
	struct timespec ts;
	struct tm tm;
	int n;

	clock_gettime(CLOCK_REALTIME, &ts);
	localtime_r(&ts.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S%z", &tm);
	n = snprintf(buf, sizeof(buf), "%s greylistd[%ld]: %s\n", stamp,
		     (long)getpid(), line);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(buf)) {
		n = sizeof(buf) - 1;
		buf[n - 1] = '\n';
	}
	if (write(log_fd, buf, (size_t)n) < 0)
		return;			/* nowhere left to complain */
}

/* log_emit - send one line, with optional journal fields, to its place */
static void log_emit(int prio, const char *line, struct iovec *fields,
		     int nfields)
{
	if (log_fd >= 0) {
		log_file_write(line);
		return;
	}
	if (use_journal) {
		static char ident[] = "SYSLOG_IDENTIFIER=greylistd";
		static char facility[] = "SYSLOG_FACILITY=2";
		struct iovec iov[16];
		char msg[2100], pri[24];
		int n = 0, i;

		snprintf(msg, sizeof(msg), "MESSAGE=%s", line);
		snprintf(pri, sizeof(pri), "PRIORITY=%d", prio);
		iov[n++] = (struct iovec){ msg, strlen(msg) };
		iov[n++] = (struct iovec){ pri, strlen(pri) };
		iov[n++] = (struct iovec){ ident, sizeof(ident) - 1 };
		iov[n++] = (struct iovec){ facility, sizeof(facility) - 1 };
		for (i = 0; i < nfields && n < 16; i++)
			iov[n++] = fields[i];
		if (sd.journal_sendv(iov, n) >= 0)
			return;
	}
	syslog(prio, "%s", line);
}

/* msg_log - a formatted line; every argument from the network must
 * already have passed through log_value() */
__attribute__((format(printf, 2, 3)))
static void msg_log(int prio, const char *fmt, ...)
{
	char line[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	log_emit(prio, line, NULL, 0);
}

#define msg_info(...)	msg_log(LOG_INFO, __VA_ARGS__)
#define msg_warn(...)	msg_log(LOG_WARNING, "warning: " __VA_ARGS__)
#define msg_error(...)	msg_log(LOG_ERR, "error: " __VA_ARGS__)

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
};

enum read_status { RD_OK, RD_EOF, RD_IDLE, RD_VIOLATION, RD_IOERR };

/* now_mono - monotonic time, for deadlines */
static struct timespec now_mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts;
}

/* deadline_in - the monotonic time "seconds" from now */
static struct timespec deadline_in(long long seconds)
{
	struct timespec ts = now_mono();

	ts.tv_sec += (time_t)seconds;
	return ts;
}

/* ms_left - milliseconds until a deadline, at least 0 */
static int ms_left(const struct timespec *deadline)
{
	struct timespec now = now_mono();
	long long ms = (deadline->tv_sec - now.tv_sec) * 1000LL
		+ (deadline->tv_nsec - now.tv_nsec) / 1000000;

	return ms < 0 ? 0 : ms > INT_MAX ? INT_MAX : (int)ms;
}

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

/* check_line - the line [p, p+len) is within bounds and free of NUL */
static enum read_status check_line(const char *p, size_t len)
{
	char why[80];

	if (len > MAX_LINE) {
		snprintf(why, sizeof(why), "line longer than %d bytes",
			 MAX_LINE);
		return violation(why);
	}
	if (memchr(p, 0, len))
		return violation("NUL byte in request");
	return RD_OK;
}

/* find_request_end - scan complete lines; 1 when the empty line that
 * ends a request has been found, 0 when more input is needed */
static int find_request_end(struct conn *c, enum read_status *st)
{
	char *nl;

	*st = RD_OK;
	while ((nl = memchr(c->buf + c->scan, '\n', c->end - c->scan))) {
		size_t len = (size_t)(nl - (c->buf + c->scan));

		if ((*st = check_line(c->buf + c->scan, len)) != RD_OK)
			return 0;
		c->scan += len + 1;
		if (len == 0)
			return 1;
	}
	if (c->end - c->scan > MAX_LINE)
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

/* parse_request - split a complete request into its attributes */
static enum read_status parse_request(char *p, char *end, struct request *r)
{
	int nattrs = 0, i;

	memset(r, 0, sizeof(*r));
	while (p < end && *p != '\n') {
		char *nl = memchr(p, '\n', (size_t)(end - p));
		char *eq = memchr(p, '=', (size_t)(nl - p));
		char why[80];

		if (!eq || eq == p)
			return violation("line is not name=value");
		if (++nattrs > MAX_ATTRS) {
			snprintf(why, sizeof(why),
				 "more than %d attributes", MAX_ATTRS);
			return violation(why);
		}
		*eq = *nl = 0;
		for (i = 0; i < A_COUNT; i++) {
			if (strcmp(p, attr_names[i]) != 0)
				continue;
			if (r->attr[i]) {
				snprintf(why, sizeof(why),
					 "attribute %s given twice", p);
				return violation(why);
			}
			r->attr[i] = eq + 1;
		}
		p = nl + 1;
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
			return st == RD_IDLE ? RD_IDLE : st;
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
 * written with MSG_DONTWAIT, pipes (in tests) in PIPE_BUF pieces after
 * POLLOUT, so no write blocks and the descriptors' flags, which other
 * processes may share, are left alone. */
static int write_all(const struct conn *c, const char *p, size_t len)
{
	struct timespec deadline = deadline_in(cfg.timeout);
	ssize_t n;

	while (len > 0) {
		if (wait_fd(c->out, POLLOUT, &deadline) < 0) {
			msg_warn("client does not read its answers;"
				 " closing the connection");
			return -1;
		}
		n = c->sock ? send(c->out, p, len, MSG_DONTWAIT | MSG_NOSIGNAL)
			: write(c->out, p, len < PIPE_BUF ? len : PIPE_BUF);
		if (n > 0) {
			p += n;
			len -= (size_t)n;
		} else if (n < 0 && errno != EINTR && errno != EAGAIN) {
			msg_warn("writing the answer: %m");
			return -1;
		}
	}
	return 0;
}

/*
 * The triplet.
 */

struct triplet {
	char net[INET6_ADDRSTRLEN];	/* client network, canonical text */
	char addr[INET6_ADDRSTRLEN];	/* client address, canonical text */
	char sender[MAX_LINE + 1];	/* normalised sender */
	char recipient[MAX_LINE + 1];	/* lower-cased recipient */
};

/* mask_bits - clear all but the first "bits" bits of an address */
static void mask_bits(unsigned char *a, size_t len, long long bits)
{
	size_t i;

	for (i = 0; i < len; i++) {
		long long keep = bits - (long long)i * 8;

		if (keep <= 0)
			a[i] = 0;
		else if (keep < 8)
			a[i] &= (unsigned char)(0xff << (8 - keep));
	}
}

/* client_net - parse client_address; fill the canonical address and
 * network. IPv4-mapped IPv6 counts as IPv4. -1 if not an IP address */
static int client_net(const char *text, struct triplet *t)
{
	static const unsigned char mapped[12] =
		{ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	unsigned char a[16];
	int family = AF_INET6;
	size_t len = 16;
	long long bits = cfg.ipv6cidr;

	if (inet_pton(AF_INET, text, a) == 1) {
		family = AF_INET;
	} else if (inet_pton(AF_INET6, text, a) != 1) {
		return -1;
	} else if (memcmp(a, mapped, sizeof(mapped)) == 0) {
		memmove(a, a + 12, 4);
		family = AF_INET;
	}
	if (family == AF_INET) {
		len = 4;
		bits = cfg.ipv4cidr;
	}
	if (!inet_ntop(family, a, t->addr, sizeof(t->addr)))
		return -1;
	if (!cfg.lookup_by_host)
		mask_bits(a, len, bits);
	if (!inet_ntop(family, a, t->net, sizeof(t->net)))
		return -1;
	return 0;
}

/* lower - ASCII lower-case copy; dst has room for strlen(src) + 1 */
static void lower(char *dst, const char *src)
{
	while (*src) {
		unsigned char c = (unsigned char)*src++;

		*dst++ = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
	}
	*dst = 0;
}

/* is_word - a character of Perl's \w, as postgrey's \b sees it */
static int is_word(int c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z')
		|| (c >= 'A' && c <= 'Z') || c == '_';
}

/* looks_like_tag - a BATV tag starts with ten of [0-9a-z] */
static int looks_like_tag(const char *p, size_t len)
{
	size_t i;

	if (len < 10)
		return 0;
	for (i = 0; i < 10; i++)
		if (!(isdigit((unsigned char)p[i])
		      || (p[i] >= 'a' && p[i] <= 'z')))
			return 0;
	return 1;
}

/* unwrap_batv - "prvs=TAG=user" (or "prvs=user=TAG") becomes "user",
 * as postgrey decides which part is the tag; returns the new length */
static size_t unwrap_batv(char *local, size_t len)
{
	char *a, *b;
	size_t alen, blen;

	if (len < 5 || memcmp(local, "prvs=", 5) != 0)
		return len;
	a = local + 5;
	b = memchr(a, '=', len - 5);
	if (!b || memchr(b + 1, '=', len - (size_t)(b + 1 - local)))
		return len;		/* not exactly three parts */
	alen = (size_t)(b - a);
	b++;
	blen = len - (size_t)(b - local);
	if (blen == 0)
		return len;		/* Perl's split drops the empty part */
	if (looks_like_tag(b, blen) && !looks_like_tag(a, alen)) {
		memmove(local, a, alen);
		return alen;
	}
	memmove(local, b, blen);
	return blen;
}

/* collapse_numbers - each digit run standing alone (between non-word
 * characters, as postgrey's \b\d+\b) becomes '#'; returns the length */
static size_t collapse_numbers(char *s, size_t len)
{
	size_t i = 0, o = 0;

	while (i < len) {
		size_t j = i;

		while (j < len && isdigit((unsigned char)s[j]))
			j++;
		if (j > i && (i == 0 || !is_word(s[i - 1]))
		    && (j == len || !is_word(s[j]))) {
			s[o++] = '#';
			i = j;
		} else if (j > i) {
			memmove(s + o, s + i, j - i);
			o += j - i;
			i = j;
		} else {
			s[o++] = s[i++];
		}
	}
	return o;
}

/* normalise_sender - postgrey's sender rules: lower case, BATV unwrapped,
 * +extension cut, standalone numbers collapsed. An address without "@"
 * (the null sender among them) is kept as it is. */
static void normalise_sender(char *dst, const char *src)
{
	char *at;
	size_t local, dom, plus;

	lower(dst, src);
	at = strrchr(dst, '@');
	if (!at)
		return;
	local = (size_t)(at - dst);
	dom = strlen(at);
	local = unwrap_batv(dst, local);
	plus = strcspn(dst, "+");
	if (plus < local)
		local = plus;
	local = collapse_numbers(dst, local);
	memmove(dst + local, at, dom + 1);
}

/* triplet_key - "T\n<net>\n<sender>\n<recipient>"; -1 if it cannot fit */
static int triplet_key(const struct triplet *t, char *key, size_t size,
		       size_t *len)
{
	int n = snprintf(key, size, "T\n%s\n%s\n%s", t->net, t->sender,
			 t->recipient);

	if (n < 0 || (size_t)n >= size)
		return -1;
	*len = (size_t)n;
	return 0;
}

/*
 * The database.
 */

static volatile sig_atomic_t alarm_fired;

/* on_alarm - interrupts a blocked flock(2); see lock_wait() */
static void on_alarm(int sig)
{
	(void)sig;
	alarm_fired = 1;
}

/* lock_wait - flock with a deadline. A repeating 10 ms timer interrupts
 * the blocking call, so a signal that arrives just before flock(2) is
 * entered cannot leave it blocked for ever. 0 locked, -1 with errno
 * (ETIMEDOUT when the deadline passed). */
static int lock_wait(int fd, int op, const struct timespec *deadline)
{
	struct itimerval tick = { { 0, 10000 }, { 0, 10000 } };
	struct itimerval off = { { 0, 0 }, { 0, 0 } };
	int rc, err;

	if (flock(fd, op | LOCK_NB) == 0)
		return 0;
	if (errno != EWOULDBLOCK)
		return -1;
	setitimer(ITIMER_REAL, &tick, NULL);
	for (;;) {
		rc = flock(fd, op);
		err = errno;
		if (rc == 0 || err != EINTR || ms_left(deadline) == 0)
			break;
	}
	setitimer(ITIMER_REAL, &off, NULL);
	if (rc == 0)
		return 0;
	errno = err == EINTR ? ETIMEDOUT : err;
	return -1;
}

/* gdbm errors that mean the file itself is damaged, not the system */
static int is_damage(int err)
{
	static const int damage[] = {
		GDBM_BAD_MAGIC_NUMBER, GDBM_BLOCK_SIZE_ERROR, GDBM_BYTE_SWAPPED,
		GDBM_BAD_FILE_OFFSET, GDBM_FILE_EOF, GDBM_NEED_RECOVERY,
		GDBM_DIR_OVERFLOW, GDBM_BAD_BUCKET, GDBM_BAD_HEADER,
		GDBM_BAD_AVAIL, GDBM_BAD_HASH_TABLE, GDBM_BAD_DIR_ENTRY,
		GDBM_BAD_HASH_ENTRY, GDBM_BUCKET_CACHE_CORRUPTED,
	};
	size_t i;

	for (i = 0; i < sizeof(damage) / sizeof(damage[0]); i++)
		if (err == damage[i])
			return 1;
	return 0;
}

struct db {
	GDBM_FILE dbf;
	int writer;
	char why[160];			/* the fault, for the log */
};

enum db_status { DB_OK, DB_ABSENT, DB_DAMAGED, DB_FAULT };

/* db_fault - record why the database could not be used */
__attribute__((format(printf, 2, 3)))
static enum db_status db_fault(struct db *db, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(db->why, sizeof(db->why), fmt, ap);
	va_end(ap);
	return DB_FAULT;
}

/* db_move_aside - rename a damaged file out of the way (the caller holds
 * its exclusive lock) so that a fresh one is started */
static void db_move_aside(const char *why)
{
	char aside[PATH_MAX], stamp[32];
	time_t now = time(NULL);
	struct tm tm;

	gmtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	if (snprintf(aside, sizeof(aside), "%s.damaged-%s-%ld", cfg.db_path,
		     stamp, (long)getpid()) >= (int)sizeof(aside)
	    || rename(cfg.db_path, aside) != 0) {
		msg_error("database %s is damaged (%s) and could not be"
			  " moved aside: %m", cfg.db_path, why);
		return;
	}
	msg_error("database %s is damaged (%s): moved to %s, starting a"
		  " fresh one", cfg.db_path, why, aside);
}

/* same_file - the locked descriptor is still the file at the path; a
 * recovery may have renamed a new file over it while we waited */
static int same_file(int fd)
{
	struct stat a, b;

	return fstat(fd, &a) == 0 && stat(cfg.db_path, &b) == 0
		&& a.st_ino == b.st_ino && a.st_dev == b.st_dev;
}

/* db_open - open and lock the database before the deadline. A reader
 * finds DB_ABSENT when there is no file yet. A writer creates the file,
 * and moves a damaged one aside. DB_DAMAGED: the open file needs
 * gdbm_recover, which the caller schedules after answering. */
static enum db_status db_open(struct db *db, int writer,
			      const struct timespec *deadline)
{
	int flags = (writer ? GDBM_WRCREAT : GDBM_READER) | GDBM_NOLOCK
		| GDBM_CLOEXEC;
	int attempt, fd, err;
	struct stat st;

	db->dbf = NULL;
	db->writer = writer;
	for (attempt = 0; attempt < DB_REOPEN_TRIES; attempt++) {
		fd = open(cfg.db_path, writer ? O_RDWR | O_CREAT | O_CLOEXEC
			  : O_RDONLY | O_CLOEXEC, 0600);
		if (fd < 0 && !writer && errno == ENOENT)
			return DB_ABSENT;
		if (fd < 0)
			return db_fault(db, "cannot open %s: %m", cfg.db_path);
		if (lock_wait(fd, writer ? LOCK_EX : LOCK_SH, deadline) < 0) {
			err = errno;
			close(fd);
			errno = err;
			return db_fault(db, err == ETIMEDOUT
					? "lock not had within %llds"
					: "cannot lock: %m", cfg.lock_timeout);
		}
		if (!same_file(fd)) {
			close(fd);
			continue;
		}
		if (!writer && fstat(fd, &st) == 0 && st.st_size == 0) {
			close(fd);
			return DB_ABSENT;
		}
		db->dbf = gdbm_fd_open(fd, cfg.db_path, 0, flags, NULL);
		if (db->dbf) {
			if (gdbm_needs_recovery(db->dbf))
				return DB_DAMAGED;
			return DB_OK;
		}
		err = gdbm_errno;
		if (is_damage(err) && writer) {
			db_move_aside(gdbm_strerror(err));
			close(fd);
			continue;
		}
		close(fd);
		if (is_damage(err))
			return DB_DAMAGED;
		return db_fault(db, "cannot open %s: %s", cfg.db_path,
				gdbm_strerror(err));
	}
	return db_fault(db, "%s keeps being replaced", cfg.db_path);
}

/* db_close - close, and with a writer, sync; -1 if that failed */
static int db_close(struct db *db)
{
	int rc = 0;

	if (db->dbf && gdbm_close(db->dbf) != 0) {
		db_fault(db, "closing %s: %s", cfg.db_path,
			 gdbm_strerror(gdbm_errno));
		rc = -1;
	}
	db->dbf = NULL;
	return rc;
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
static int record_decode(datum d, long long *f, int n)
{
	const char *p = d.dptr, *end = d.dptr + d.dsize;
	int i;

	if (!p || d.dsize < 2 || p[0] != '1')
		return -1;
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
static datum record_encode(char *buf, size_t size, const long long *f, int n)
{
	size_t o = 1;
	int i;

	buf[0] = '1';
	for (i = 0; i < n; i++)
		o += (size_t)snprintf(buf + o, size - o, " %lld", f[i]);
	return (datum){ buf, (int)o };
}

/*
 * The decision.
 */

enum verdict {
	V_NEW, V_EARLY, V_PASS_FIRST, V_PASS, V_FAIL_OPEN,
	V_NOT_RCPT, V_BAD_REQUEST,
};

/* How each verdict is answered and logged. */
static const struct {
	const char *action;		/* log: action=... */
	const char *reason;		/* log: reason=... (NULL: see code) */
	int defer;			/* reply with --greylist-action */
	int log_prio;
} verdicts[] = {
	[V_NEW] = { "greylist", "new", 1, LOG_INFO },
	[V_EARLY] = { "greylist", NULL, 1, LOG_INFO },
	[V_PASS_FIRST] = { "pass", "triplet found", 0, LOG_INFO },
	[V_PASS] = { "pass", "triplet found", 0, LOG_INFO },
	[V_FAIL_OPEN] = { "pass", NULL, 0, LOG_WARNING },
	[V_NOT_RCPT] = { NULL, NULL, 0, 0 },
	[V_BAD_REQUEST] = { "pass", NULL, 0, LOG_WARNING },
};

/* T record fields */
enum { T_FIRST, T_LAST, T_PASSED, T_FIELDS };

struct outcome {
	enum verdict v;
	long long seconds;		/* waited (pass) or missing (early) */
	int store;			/* the record below must be written */
	long long rec[T_FIELDS];
	char why[200];			/* fail-open reason */
};

/* touch_interval - how stale a passed triplet's LAST may grow before a
 * pass refreshes it: TOUCH_INTERVAL, or max-age/100 when that is less */
static long long touch_interval(void)
{
	long long t = cfg.max_age / 100;

	return t < TOUCH_INTERVAL ? t : TOUCH_INTERVAL;
}

/* triplet_record - decode and check a T record; NULL if it is absent or
 * has any other shape, so that it is treated as new and rewritten */
static const long long *triplet_record(datum d, long long *rec)
{
	if (record_decode(d, rec, T_FIELDS) != 0 || rec[T_FIRST] > rec[T_LAST]
	    || (rec[T_PASSED] != 0 && (rec[T_PASSED] < rec[T_FIRST]
				       || rec[T_PASSED] > rec[T_LAST])))
		return NULL;
	return rec;
}

/* decide - the greylisting rule, given the stored record (NULL when there
 * is none or it did not parse) and the time. Pure: no I/O. */
static void decide(const long long *rec, long long now, struct outcome *o)
{
	long long waited;

	o->store = 0;
	if (rec)
		memcpy(o->rec, rec, sizeof(o->rec));
	if (!rec || now - rec[T_LAST] > cfg.max_age
	    || (rec[T_PASSED] == 0 && (now - rec[T_FIRST] > cfg.retry_window
				       || rec[T_FIRST] > now))) {
		o->v = V_NEW;
		o->seconds = cfg.delay;
		o->rec[T_FIRST] = o->rec[T_LAST] = now;
		o->rec[T_PASSED] = 0;
		o->store = 1;
		return;
	}
	waited = now - rec[T_FIRST];
	if (rec[T_PASSED] == 0 && waited < cfg.delay) {
		o->v = V_EARLY;
		o->seconds = cfg.delay - waited;
		return;
	}
	if (rec[T_PASSED] == 0) {
		o->v = V_PASS_FIRST;
		o->seconds = waited;
		o->rec[T_PASSED] = o->rec[T_LAST] = now;
		o->store = 1;
		return;
	}
	o->v = V_PASS;
	o->seconds = 0;
	if (now - rec[T_LAST] >= touch_interval()) {
		o->rec[T_LAST] = now;
		o->store = 1;
	}
}

/* Maintenance the serving process does after it has answered. */
static struct {
	int repair;			/* gdbm_recover the file */
} pending;

/* fail_open - an internal fault: the request will be answered DUNNO */
static void fail_open(struct outcome *o, const char *why)
{
	o->v = V_FAIL_OPEN;
	o->store = 0;
	snprintf(o->why, sizeof(o->why), "fail-open (%s)", why);
}

/* evaluate - fetch the triplet's record and decide; -1 on a fault */
static int evaluate(struct db *db, datum key, long long now, struct outcome *o)
{
	long long rec[T_FIELDS];
	datum d = gdbm_fetch(db->dbf, key);

	if (!d.dptr && gdbm_errno != GDBM_ITEM_NOT_FOUND) {
		if (gdbm_needs_recovery(db->dbf))
			pending.repair = 1;
		db_fault(db, "reading %s: %s", cfg.db_path,
			 gdbm_strerror(gdbm_errno));
		return -1;
	}
	decide(d.dptr ? triplet_record(d, rec) : NULL, now, o);
	free(d.dptr);
	return 0;
}

/* store - write the decided record; -1 on a fault */
static int store(struct db *db, datum key, const struct outcome *o)
{
	char buf[MAX_RECORD];

	if (gdbm_store(db->dbf, key, record_encode(buf, sizeof(buf), o->rec,
						   T_FIELDS),
		       GDBM_REPLACE) == 0)
		return 0;
	if (gdbm_needs_recovery(db->dbf))
		pending.repair = 1;
	db_fault(db, "writing %s: %s", cfg.db_path, gdbm_strerror(gdbm_errno));
	return -1;
}

/* session - one locked open of the database: decide, and as a writer
 * store the result. 1 when a writer is needed, 0 done, -1 fault. */
static int session(int writer, datum key, long long now,
		   const struct timespec *deadline, struct outcome *o)
{
	struct db db;
	int rc;

	switch (db_open(&db, writer, deadline)) {
	case DB_ABSENT:
		decide(NULL, now, o);
		return 1;
	case DB_DAMAGED:
		if (!db.dbf && !writer)
			return 1;	/* the writer moves it aside */
		db_close(&db);
		pending.repair = 1;
		fail_open(o, "database damaged, repair scheduled");
		return -1;
	case DB_FAULT:
		fail_open(o, db.why);
		return -1;
	case DB_OK:
		break;
	}
	rc = evaluate(&db, key, now, o);
	if (rc == 0 && o->store)
		rc = writer ? store(&db, key, o) : 1;
	if (db_close(&db) != 0 && writer)
		rc = -1;
	if (rc < 0)
		fail_open(o, db.why);
	return rc;
}

/* greylist - decide one triplet: a reader first, a writer only when a
 * record must change; the writer decides again under its lock */
static void greylist(const struct triplet *t, long long now,
		     struct outcome *o)
{
	static char key[MAX_KEY];
	struct timespec deadline = deadline_in(cfg.lock_timeout);
	datum k;
	size_t len;

	if (triplet_key(t, key, sizeof(key), &len) != 0) {
		fail_open(o, "key too long");
		return;
	}
	k = (datum){ key, (int)len };
	if (session(0, k, now, &deadline, o) == 1)
		session(1, k, now, &deadline, o);
}

/* bad_request - a request greylistd cannot judge: answer DUNNO */
static void bad_request(struct outcome *o, const char *why)
{
	o->v = V_BAD_REQUEST;
	snprintf(o->why, sizeof(o->why), "bad request (%s)", why);
}

/* policy - the verdict for one request */
static void policy(const struct request *r, struct outcome *o)
{
	static const enum attr_id needed[] =
		{ A_CLIENT_ADDRESS, A_SENDER, A_RECIPIENT };
	static struct triplet t;
	const char *state = r->attr[A_PROTOCOL_STATE];
	char why[64];
	size_t i;

	o->why[0] = 0;
	o->seconds = 0;
	if (state && strcmp(state, "RCPT") != 0) {
		o->v = V_NOT_RCPT;
		return;
	}
	for (i = 0; i < sizeof(needed) / sizeof(needed[0]); i++) {
		if (!r->attr[needed[i]]) {
			snprintf(why, sizeof(why), "no %s",
				 attr_names[needed[i]]);
			bad_request(o, why);
			return;
		}
	}
	if (client_net(r->attr[A_CLIENT_ADDRESS], &t) != 0) {
		bad_request(o, "client_address is not an IP address");
		return;
	}
	normalise_sender(t.sender, r->attr[A_SENDER]);
	lower(t.recipient, r->attr[A_RECIPIENT]);
	greylist(&t, (long long)time(NULL), o);
}

/*
 * Answering.
 */

/* expand - copy a template, replacing %X by vals[X] (%% is "%"); the
 * templates were checked at start-up (check_template) */
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

		dst[o++] = c > 32 && c < 127 ? (char)c : '?';
	}
	dst[o] = 0;
}

/* format_reply - the "action=..." answer, ended by an empty line */
static size_t format_reply(char *buf, size_t size, const struct request *r,
			   const struct outcome *o, int prepend)
{
	const char *vals[128] = { 0 };
	char text[MAX_TEXT + MAX_DOMAIN + 64], num[24], domain[MAX_DOMAIN + 1];
	char date[64];
	int n;

	if (verdicts[o->v].defer) {
		snprintf(num, sizeof(num), "%lld", o->seconds);
		recipient_domain(domain, r->attr[A_RECIPIENT]);
		vals['s'] = num;
		vals['r'] = domain;
		expand(text, sizeof(text), cfg.greylist_text, vals);
		n = snprintf(buf, size, "action=%s%s%s\n\n",
			     cfg.greylist_action, *text ? " " : "", text);
	} else if (prepend) {
		time_t now = time(NULL);
		struct tm tm;

		localtime_r(&now, &tm);
		strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z", &tm);
		snprintf(num, sizeof(num), "%lld", o->seconds);
		vals['t'] = num;
		vals['v'] = VERSION;
		vals['h'] = cfg.hostname;
		vals['d'] = date;
		expand(text, sizeof(text), cfg.header, vals);
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

/* append - printf at the end of a string, never past its buffer */
__attribute__((format(printf, 4, 5)))
static void append(char *buf, size_t size, size_t *len, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (*len + 1 >= size)
		return;
	va_start(ap, fmt);
	n = vsnprintf(buf + *len, size - *len, fmt, ap);
	va_end(ap);
	if (n > 0)
		*len = *len + (size_t)n < size ? *len + (size_t)n : size - 1;
}

/* log_decision - one line per RCPT decision, in postgrey's format, and
 * under systemd the same facts as journal fields */
static void log_decision(const struct request *r, const struct outcome *o)
{
	char line[2048], reason[240], val[LOG_VALUE_MAX + 8];
	char fields[NLOGGED + 3][LOG_VALUE_MAX + 48];
	struct iovec iov[NLOGGED + 3];
	size_t n = 0, nf = 0, i;

	if (!verdicts[o->v].action)
		return;
	if (o->v == V_EARLY)
		snprintf(reason, sizeof(reason), "early-retry (%llds missing)",
			 o->seconds);
	else
		snprintf(reason, sizeof(reason), "%s",
			 verdicts[o->v].reason ? verdicts[o->v].reason
			 : o->why);
	line[0] = 0;
	if (r->attr[A_QUEUE_ID] && *r->attr[A_QUEUE_ID])
		append(line, sizeof(line), &n, "%s: ",
		       log_value(val, sizeof(val), r->attr[A_QUEUE_ID]));
	append(line, sizeof(line), &n, "action=%s, reason=%s",
	       verdicts[o->v].action, reason);
	snprintf(fields[nf++], sizeof(fields[0]), "GREYLISTD_ACTION=%s",
		 verdicts[o->v].action);
	snprintf(fields[nf++], sizeof(fields[0]), "GREYLISTD_REASON=%s",
		 reason);
	if (o->v == V_PASS_FIRST) {
		append(line, sizeof(line), &n, ", delay=%lld", o->seconds);
		snprintf(fields[nf++], sizeof(fields[0]),
			 "GREYLISTD_DELAY=%lld", o->seconds);
	}
	for (i = 0; i < NLOGGED; i++) {
		const char *v = r->attr[logged_attrs[i].id];

		if (!v || !*v)
			continue;
		log_value(val, sizeof(val), v);
		append(line, sizeof(line), &n, ", %s=%s",
		       attr_names[logged_attrs[i].id], val);
		snprintf(fields[nf++], sizeof(fields[0]), "%s%s",
			 logged_attrs[i].field, val);
	}
	for (i = 0; i < nf; i++)
		iov[i] = (struct iovec){ fields[i], strlen(fields[i]) };
	log_emit(verdicts[o->v].log_prio, line, iov, (int)nf);
}

/*
 * Maintenance, after the answer has been sent.
 */

/* Longest wait for the exclusive lock in maintenance, which no client
 * waits for. */
#define MAINT_LOCK_WAIT	60

/* db_repair - gdbm_recover a file that GDBM says needs it; a file that
 * cannot be recovered is moved aside */
static void db_repair(void)
{
	struct timespec deadline = deadline_in(MAINT_LOCK_WAIT);
	gdbm_recovery rcvr;
	struct db db;

	memset(&rcvr, 0, sizeof(rcvr));
	switch (db_open(&db, 1, &deadline)) {
	case DB_OK:
		db_close(&db);		/* repaired meanwhile */
		return;
	case DB_DAMAGED:
		break;
	case DB_ABSENT:
	case DB_FAULT:
		msg_warn("database repair: %s", db.why);
		return;
	}
	if (gdbm_recover(db.dbf, &rcvr, GDBM_RCVR_FORCE) == 0) {
		msg_warn("database %s recovered: %zu records kept, %zu lost",
			 cfg.db_path, rcvr.recovered_keys, rcvr.failed_keys);
	} else {
		db_move_aside(gdbm_strerror(gdbm_errno));
	}
	db_close(&db);
}

/* maintenance - run pending work in a child, so that this connection's
 * next request is not kept waiting; the child has no connection */
static void maintenance(void)
{
	pid_t pid;
	int fd;

	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
	if (!pending.repair)
		return;
	pending.repair = 0;
	pid = fork();
	if (pid < 0)
		msg_warn("cannot start maintenance: %m");
	if (pid != 0)
		return;
	fd = open("/dev/null", O_RDWR);
	if (fd < 0 || dup2(fd, 0) < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
		_exit(1);
	db_repair();
	_exit(0);
}

/*
 * Serving.
 */

/* serve - answer requests until EOF; returns the exit code */
static int serve(int in, int out)
{
	static struct conn c;
	char reply[MAX_REPLY];
	struct stat a, b;
	struct request r;
	struct outcome o;
	size_t n;
	int prepend;

	c.in = in;
	c.out = out;
	c.sock = in == out || (fstat(in, &a) == 0 && fstat(out, &b) == 0
			       && S_ISSOCK(a.st_mode) && a.st_ino == b.st_ino
			       && a.st_dev == b.st_dev);
	for (;;) {
		switch (read_request(&c, &r)) {
		case RD_OK:
			break;
		case RD_EOF:
			return 0;
		case RD_IDLE:
			msg_info("idle for %llds; closing the connection",
				 cfg.timeout);
			return 0;
		case RD_VIOLATION:
			return 76;
		case RD_IOERR:
			return 74;
		}
		policy(&r, &o);
		prepend = 0;
		if (o.v == V_PASS_FIRST && *cfg.header) {
			const char *inst = r.attr[A_INSTANCE];

			prepend = !inst || strcmp(inst, c.instance) != 0;
			if (inst)
				snprintf(c.instance, sizeof(c.instance), "%s",
					 inst);
		}
		log_decision(&r, &o);
		n = format_reply(reply, sizeof(reply), &r, &o, prepend);
		if (write_all(&c, reply, n) != 0)
			return 74;
		maintenance();
	}
}

/*
 * Start-up: options, configuration checks, the connection.
 */

static int config_errors;

/* config_error - report a bad option or setting. To the log always; to
 * stderr only when it is not a socket (under spawn and inetd it is the
 * client connection, which must see nothing but replies). */
__attribute__((format(printf, 1, 2)))
static void config_error(const char *fmt, ...)
{
	char line[1024];
	struct stat st;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	config_errors++;
	msg_log(LOG_ERR, "error: %s", line);
	if (fstat(2, &st) == 0 && !S_ISSOCK(st.st_mode))
		dprintf(2, "greylistd: %s\n", line);
}

/* parse_number - a decimal integer in [min, max] after an optional unit
 * suffix (durations: s, m, h, d; a bare number is in "unit" seconds) */
static int parse_number(const struct option_spec *o, const char *s,
			long long *v)
{
	static const struct { char suffix; long long seconds; } units[] = {
		{ 's', 1 }, { 'm', 60 }, { 'h', 3600 }, { 'd', 86400 },
	};
	long long n, mult = o->kind == OPT_DURATION ? o->unit : 1;
	char *end;
	size_t i;

	errno = 0;
	n = strtoll(s, &end, 10);
	if (end == s || errno || n < 0 || !isdigit((unsigned char)*s))
		return -1;
	if (*end && o->kind == OPT_DURATION) {
		for (i = 0; i < sizeof(units) / sizeof(units[0]); i++)
			if (*end == units[i].suffix)
				mult = units[i].seconds;
		if (mult == o->unit && *end != 's' && o->unit != 1)
			return -1;
		if (end[1] || (mult == 1 && *end != 's'))
			return -1;
	} else if (*end) {
		return -1;
	}
	if (n > LLONG_MAX / mult)
		return -1;
	*v = n * mult;
	return *v >= o->min && *v <= o->max ? 0 : -1;
}

/* find_option - the table row for a name, exactly as written */
static const struct option_spec *find_option(const char *name, size_t len)
{
	size_t i;

	for (i = 0; i < NOPTIONS; i++)
		if (strlen(options[i].name) == len
		    && memcmp(options[i].name, name, len) == 0)
			return &options[i];
	return NULL;
}

/* set_option - store one option's value */
static void set_option(const struct option_spec *o, const char *value)
{
	long long v;

	if (o->kind == OPT_FLAG) {
		if (value)
			config_error("--%s takes no value", o->name);
		else if (o->dest)
			*(long long *)o->dest = 1;
		return;
	}
	if (!value) {
		config_error("--%s needs a value", o->name);
		return;
	}
	if (o->kind == OPT_STRING) {
		*(const char **)o->dest = value;
		return;
	}
	if (parse_number(o, value, &v) != 0) {
		if (o->kind == OPT_DURATION)
			config_error("--%s=%.40s: not a duration from %llds"
				     " to %llds (suffix s, m, h or d)",
				     o->name, value, o->min, o->max);
		else
			config_error("--%s=%.40s: not a number from %lld to"
				     " %lld", o->name, value, o->min, o->max);
		return;
	}
	*(long long *)o->dest = v;
}

/* parse_options - "--name=value", "--name value" or "--flag" */
static void parse_options(int argc, char **argv)
{
	const struct option_spec *o;
	const char *arg, *eq;
	int i;

	for (i = 0; i < argc; i++) {
		arg = argv[i];
		if (strncmp(arg, "--", 2) != 0) {
			config_error("unexpected argument: %.80s", arg);
			continue;
		}
		arg += 2;
		eq = strchr(arg, '=');
		o = find_option(arg, eq ? (size_t)(eq - arg) : strlen(arg));
		if (!o) {
			config_error("unknown option --%.*s",
				     (int)(eq ? eq - arg : 80), arg);
			continue;
		}
		if (!eq && o->kind != OPT_FLAG && i + 1 < argc)
			set_option(o, argv[++i]);
		else
			set_option(o, eq ? eq + 1 : NULL);
	}
}

/* check_template - only printable ASCII, at most MAX_TEXT bytes, and
 * only the placeholders in "allowed" (and %%) */
static void check_template(const char *name, const char *tpl,
			   const char *allowed)
{
	const char *p;

	if (strlen(tpl) > MAX_TEXT)
		config_error("--%s: longer than %d bytes", name, MAX_TEXT);
	for (p = tpl; *p; p++) {
		if (*p < 32 || *p > 126) {
			config_error("--%s: only printable ASCII is allowed",
				     name);
			return;
		}
		if (*p == '%' && (!p[1] || (p[1] != '%'
					    && !strchr(allowed, p[1])))) {
			config_error("--%s: unknown placeholder %%%c (use %s)",
				     name, p[1] ? p[1] : ' ', allowed);
			return;
		}
		if (*p == '%')
			p++;
	}
}

/* check_action - what Postfix accepts as a deferring action */
static void check_action(const char *a)
{
	static const char *const words[] =
		{ "DEFER_IF_PERMIT", "DEFER", "DEFER_IF_REJECT" };
	size_t i;

	for (i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		if (strcmp(a, words[i]) == 0)
			return;
	if (a[0] == '4' && isdigit((unsigned char)a[1])
	    && isdigit((unsigned char)a[2]) && !a[3])
		return;
	config_error("--greylist-action=%.40s: use DEFER_IF_PERMIT, DEFER,"
		     " DEFER_IF_REJECT or a 4NN code", a);
}

/* check_config - settings that are wrong together */
static void check_config(void)
{
	static char host[256];

	check_action(cfg.greylist_action);
	check_template("greylist-text", cfg.greylist_text, "sr");
	check_template("x-greylist-header", cfg.header, "tvhd");
	if (*cfg.header && !strchr(cfg.header, ':'))
		config_error("--x-greylist-header: must be \"Name: value\"");
	if (cfg.retry_window <= cfg.delay)
		config_error("--retry-window (%llds) must be longer than"
			     " --delay (%llds)", cfg.retry_window, cfg.delay);
	if (cfg.max_age < cfg.delay)
		config_error("--max-age (%llds) must not be shorter than"
			     " --delay (%llds)", cfg.max_age, cfg.delay);
	if (!*cfg.db_path)
		config_error("--db: empty path");
	if (!cfg.hostname) {
		if (gethostname(host, sizeof(host) - 1) != 0)
			snprintf(host, sizeof(host), "localhost");
		cfg.hostname = host;
	}
	check_template("hostname", cfg.hostname, "");
}

/* open_log - syslog, or the --log-file */
static void open_log(void)
{
	openlog("greylistd", LOG_PID, LOG_MAIL);
	if (cfg.log_file) {
		log_fd = open(cfg.log_file, O_WRONLY | O_APPEND | O_CREAT
			      | O_CLOEXEC | O_NOCTTY, 0640);
		if (log_fd < 0)
			config_error("--log-file=%.100s: %m", cfg.log_file);
	}
}

/* connection - the client socket: fd 3 when systemd passed it
 * (LISTEN_FDS=1), stdin/stdout otherwise. -1 on a wrong hand-over. */
static int connection(int *in, int *out)
{
	int fd;

	*in = 0;
	*out = 1;
	if (!getenv("LISTEN_FDS"))
		return 0;
	if (!sd.handle)
		return -1;
	if (sd.listen_fds(1) != 1) {
		msg_error("expected exactly one socket from systemd");
		return -1;
	}
	fd = SD_LISTEN_FDS_START;
	if (sd.is_socket(fd, AF_UNSPEC, SOCK_STREAM, 0) <= 0) {
		msg_error("fd %d is not a connected stream socket: use"
			  " Accept=yes in greylistd.socket", fd);
		return -1;
	}
	*in = *out = fd;
	return 0;
}

/* quiet_stderr - when stderr is the client socket (spawn, inetd), point
 * it at /dev/null so that no library message can enter the protocol */
static void quiet_stderr(int in)
{
	struct stat a, b;
	int fd;

	if (fstat(in, &a) != 0 || fstat(2, &b) != 0 || !S_ISSOCK(b.st_mode)
	    || a.st_ino != b.st_ino || a.st_dev != b.st_dev)
		return;
	fd = open("/dev/null", O_WRONLY);
	if (fd >= 0 && fd != 2) {
		dup2(fd, 2);
		close(fd);
	}
}

/* usage - the options, from the table */
static void usage(FILE *f)
{
	size_t i;

	fprintf(f, "usage: greylistd [COMMAND] [--option=value ...]\n"
		"commands: serve (the default), check\n");
	for (i = 0; i < NOPTIONS; i++)
		fprintf(f, "  --%-20s %s\n", options[i].name, options[i].help);
}

/* setup_signals - SIGPIPE would kill us on a closed connection; SIGALRM
 * must interrupt flock(2), so it is installed without SA_RESTART */
static void setup_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
	sa.sa_handler = on_alarm;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGALRM, &sa, NULL);
}

int main(int argc, char **argv)
{
	const char *command = "serve";
	int in, out;

	setup_signals();
	if (getenv("INVOCATION_ID") || getenv("LISTEN_FDS"))
		use_journal = sd_load() == 0 && getenv("INVOCATION_ID");
	if (argc > 1 && argv[1][0] != '-') {
		command = argv[1];
		argc--;
		argv++;
	}
	parse_options(argc - 1, argv + 1);
	if (cfg.help || cfg.version) {
		if (cfg.help)
			usage(stdout);
		else
			printf("greylistd %s\n", VERSION);
		return 0;
	}
	open_log();
	check_config();
	if (strcmp(command, "check") != 0 && strcmp(command, "serve") != 0)
		config_error("unknown command %.40s", command);
	if (config_errors)
		return 64;
	if (strcmp(command, "check") == 0)
		return 0;
	if (connection(&in, &out) != 0)
		return 64;
	quiet_stderr(in);
	return serve(in, out);
}
