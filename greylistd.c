/*
 * greylistd - per-connection greylisting policy helper for Postfix
 *
 * SYNOPSIS
 *	greylistd [--option=value ...]		serve one connection
 *	greylistd check|stats|dump|load|expire|report [--option=value ...]
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
 *	Whitelisted clients and recipients, and clients that have passed
 *	often enough (auto-whitelist), pass without writing anything.
 *
 *	State lives in one GDBM file shared by all processes. Each request
 *	opens it, locks it (flock on the file itself, the lock GDBM's own
 *	tools take too), reads, and closes it again: GDBM caches cannot be
 *	shared between processes. The shared (reader) lock is taken first;
 *	the exclusive (writer) lock only when a record must change, because
 *	closing a writer syncs the file and costs about ten readers. After
 *	the writer lock is held the decision is made again, so two processes
 *	racing on one triplet cannot lose an update. Work that can wait
 *	(expiry once a day, with a reorganization of the file when most of
 *	it has become free; recovery of a damaged file; logging a bad
 *	whitelist line) runs in a child after the answer has been sent.
 *
 *	The file reads top to bottom in the order data flows: limits and
 *	options, logging, reading a request, the triplet, whitelists, the
 *	database, the decision, the answer, maintenance, serving; then the
 *	operator commands and start-up.
 *
 * LIMITS (reject, never truncate: a cut key could collide with another)
 *	MAX_LINE	one "name=value" line, 8192 + 256 bytes
 *	MAX_ATTRS	attributes in one request, 128
 *	MAX_REQUEST	one request, 64 KiB
 *	MAX_WL_FILE	one whitelist file, 4 MiB
 *	Each limit is explained where it is defined.
 *
 * FAILURE RULES
 *	There are exactly two ways to fail while serving:
 *	- protocol violation (bad request type, over-long line, NUL byte, too
 *	  many attributes, too large a request, line without "=", attribute
 *	  given twice, input ending or stalling inside a request): one
 *	  warning is logged, no reply is sent, the connection is closed and
 *	  greylistd exits 76 (violation()). Postfix then applies its
 *	  default_action.
 *	- internal fault (database unreadable, lock not had within
 *	  --lock-timeout, disk full, out of memory): one warning is logged,
 *	  the request is answered "action=DUNNO" and serving goes on, so mail
 *	  keeps flowing while greylistd is unwell (fail_open()).
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
 *	  action=pass, reason=triplet found | client whitelist |
 *	      recipient whitelist | client AWL, ...
 *	  action=pass, reason=fail-open (WHY), ...	(internal fault)
 *	  action=pass, reason=bad request (WHY), ...
 *	Other lines start with "warning: " or "error: ". Every value from
 *	the network passes through log_value(): at most LOG_VALUE_MAX bytes,
 *	control characters, bytes above 126, '\' and ',' written as \xHH.
 *	Under systemd the same line goes to the journal with the fields
 *	GREYLISTD_ACTION, GREYLISTD_REASON, GREYLISTD_CLIENT_ADDRESS, ...
 *
 * DATABASE RECORDS (version 1; see record_decode())
 *	key "T\n<net>\n<sender>\n<recipient>"	value "1 FIRST LAST PASSED"
 *	  a triplet. FIRST: when its greylisting began; LAST: when it was
 *	  last seen (refreshed at most every TOUCH_INTERVAL); PASSED: when
 *	  it first passed, 0 while pending. Times are Unix seconds.
 *	key "C\n<client>"			value "1 COUNT LAST"
 *	  a client of the auto-whitelist: passes counted, last counted.
 *	key "M\n<name>"				value "1 VALUE"
 *	  greylistd's notes: "expire" (last expiry), "whitelist", "peak"
 *	  (the most records seen since the file was last reorganized).
 *	With --privacy the parts after "T\n" and "C\n" are a SHA-256 digest.
 *	A record that does not parse as exactly its shape is treated as
 *	absent and rewritten. "\n" separates fields because Postfix never
 *	sends a newline inside a value, so no two triplets share a key.
 */

#define _GNU_SOURCE

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <gdbm.h>
#include <linux/falloc.h>
#include <limits.h>
#include <poll.h>
#include <regex.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>
#include <systemd/sd-journal.h>

#define VERSION "0.1"
#define DEFAULT_WHITELIST "/etc/greylistd/whitelist"

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

/* A passing client counts towards --auto-whitelist-clients at most once
 * in this time, and an auto-whitelisted one is refreshed as often. */
#define AWL_INTERVAL	3600

/* Expiry runs at most once in this time, in a child of a serving process
 * after it has answered; `greylistd expire` runs it at once. */
#define EXPIRE_INTERVAL	86400

/* A database file replaced under us (by recovery) is reopened at most
 * this many times within one request. */
#define DB_REOPEN_TRIES	4

/*
 * Configuration.
 */

/* Whitelist files: our own format, and postgrey's two. */
enum wl_format { WLF_GREYLISTD, WLF_CLIENTS, WLF_RECIPIENTS };

/* --whitelist, --whitelist-clients and --whitelist-recipients files. */
#define MAX_WL_FILES	16

/* Log files named to `greylistd report`. */
#define MAX_FILE_ARGS	64

struct wl_list {
	const char *path[MAX_WL_FILES];
	enum wl_format format[MAX_WL_FILES];
	size_t n;
};

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
	struct wl_list whitelists;
	const char *files[MAX_FILE_ARGS];	/* report's log files */
	int nfiles;
	long long window;
	long long top;
	long long since;
	long long awl;
	long long privacy;
	long long exim;
	long long help;
	long long version;
};

#define DAY 86400LL

static struct config cfg = {
	.db_path = "/var/lib/greylistd/greylistd.db",
	.delay = 300,
	.retry_window = 2 * DAY,
	.max_age = 35 * DAY,
	.ipv4cidr = 24,
	.ipv6cidr = 64,
	.timeout = 360,
	.lock_timeout = 2,
	.greylist_action = "DEFER_IF_PERMIT",
	.greylist_text = "Greylisted, please try again in %s seconds",
	.header = "X-Greylist: delayed %t seconds by greylistd-%v at %h; %d",
	.awl = 5,
};

enum opt_kind { OPT_FLAG, OPT_NUMBER, OPT_DURATION, OPT_STRING, OPT_FILES };

/* One row per option. A bare number given to a duration option is in
 * "unit" seconds, so postgrey's --max-age=35 (days) means the same here;
 * for a list of files (OPT_FILES), "unit" is their wl_format. */
struct option_spec {
	const char *name;
	enum opt_kind kind;
	long long min, max, unit;
	void *dest;
	const char *help;
};

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
	{ "whitelist", OPT_FILES, 0, 0, WLF_GREYLISTD, &cfg.whitelists,
	  "whitelist file, repeatable (" DEFAULT_WHITELIST ")" },
	{ "whitelist-clients", OPT_FILES, 0, 0, WLF_CLIENTS, &cfg.whitelists,
	  "postgrey's client whitelist file, repeatable" },
	{ "whitelist-recipients", OPT_FILES, 0, 0, WLF_RECIPIENTS,
	  &cfg.whitelists, "postgrey's recipient whitelist file, repeatable" },
	{ "auto-whitelist-clients", OPT_NUMBER, 0, 1000000, 0, &cfg.awl,
	  "passes after which a client is no longer greylisted (5; 0: off)" },
	{ "privacy", OPT_FLAG, 0, 1, 0, &cfg.privacy,
	  "store keys as SHA-256 digests, not addresses" },
	{ "exim", OPT_FLAG, 0, 1, 0, &cfg.exim,
	  "close the connection after one answer (as Exim expects)" },
	{ "log-file", OPT_STRING, 0, 0, 0, &cfg.log_file,
	  "append log lines to this file instead of syslog" },
	{ "window", OPT_DURATION, 1, 365 * DAY, 1, &cfg.window,
	  "report: triplets not retried within this are lost (--delay)" },
	{ "top", OPT_NUMBER, 0, 1000000, 0, &cfg.top,
	  "report: also the N client networks and recipients most hit" },
	{ "since", OPT_DURATION, 1, 3650 * DAY, 1, &cfg.since,
	  "report: only this recent part of the logs (all of it)" },
	{ "help", OPT_FLAG, 0, 1, 0, &cfg.help, "show this help" },
	{ "version", OPT_FLAG, 0, 1, 0, &cfg.version, "show the version" },
};
#define NOPTIONS (sizeof(options) / sizeof(options[0]))

/*
 * Logging. Never to stdout or stderr while serving.
 */

static int log_fd = -1;			/* --log-file, or -1 for syslog */
static long my_pid;			/* for --log-file lines */
static int use_journal;			/* running under systemd */

/* libsystemd is loaded only under systemd: linking it doubles the cost
 * of starting a process, which spawn(8) and inetd would pay for nothing. */
static struct sd_api {
	void *handle;
	__typeof__(sd_listen_fds) *listen_fds;
	__typeof__(sd_is_socket) *is_socket;
	__typeof__(sd_journal_sendv) *journal_sendv;
	__typeof__(sd_journal_open) *journal_open;
	__typeof__(sd_journal_add_match) *journal_add_match;
	__typeof__(sd_journal_seek_realtime_usec) *journal_seek_realtime_usec;
	__typeof__(sd_journal_next) *journal_next;
	__typeof__(sd_journal_get_data) *journal_get_data;
	__typeof__(sd_journal_get_realtime_usec) *journal_get_realtime_usec;
	__typeof__(sd_journal_close) *journal_close;
} sd;

static const struct {
	const char *name;
	size_t offset;
} sd_symbols[] = {
	{ "sd_listen_fds", offsetof(struct sd_api, listen_fds) },
	{ "sd_is_socket", offsetof(struct sd_api, is_socket) },
	{ "sd_journal_sendv", offsetof(struct sd_api, journal_sendv) },
	{ "sd_journal_open", offsetof(struct sd_api, journal_open) },
	{ "sd_journal_add_match", offsetof(struct sd_api, journal_add_match) },
	{ "sd_journal_seek_realtime_usec",
	  offsetof(struct sd_api, journal_seek_realtime_usec) },
	{ "sd_journal_next", offsetof(struct sd_api, journal_next) },
	{ "sd_journal_get_data", offsetof(struct sd_api, journal_get_data) },
	{ "sd_journal_get_realtime_usec",
	  offsetof(struct sd_api, journal_get_realtime_usec) },
	{ "sd_journal_close", offsetof(struct sd_api, journal_close) },
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

		if (!sym) {
			dlclose(sd.handle);
			memset(&sd, 0, sizeof(sd));
			return -1;
		}
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

		if (o + (plain ? 1 : 4) + 4 > size
		    || o + (plain ? 1 : 4) > LOG_VALUE_MAX) {
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

/* The ways a time is shown. */
enum time_style {
	TS_LOG,				/* log lines, local: 2026-11-29T11:03:36+0100 */
	TS_HEADER,			/* X-Greylist %d, local: RFC 5322 date */
	TS_UTC,				/* stats and report: 2026-11-29T10:03:36Z */
	TS_FILE,			/* in file names: 20261129T100336Z */
};

/* format_time - a time as text; "-" for a time the calendar cannot show
 * (a clock gone wild) */
static const char *format_time(char *buf, size_t size, enum time_style style,
			       time_t t)
{
	struct tm tm;
	size_t n = 0;

	if (!(style == TS_UTC || style == TS_FILE ? gmtime_r(&t, &tm)
	      : localtime_r(&t, &tm))) {
		snprintf(buf, size, "-");
		return buf;
	}
	switch (style) {
	case TS_LOG:
		n = strftime(buf, size, "%Y-%m-%dT%H:%M:%S%z", &tm);
		break;
	case TS_HEADER:
		n = strftime(buf, size, "%a, %d %b %Y %H:%M:%S %z", &tm);
		break;
	case TS_UTC:
		n = strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
		break;
	case TS_FILE:
		n = strftime(buf, size, "%Y%m%dT%H%M%SZ", &tm);
		break;
	}
	if (n == 0)
		snprintf(buf, size, "-");
	return buf;
}

/* log_file_write - one timestamped line, written with one write(2) so
 * that lines of concurrent processes never interleave */
static void log_file_write(const char *line)
{
	char buf[2048], stamp[40];
	int n;

	format_time(stamp, sizeof(stamp), TS_LOG, time(NULL));
	n = snprintf(buf, sizeof(buf), "%s greylistd[%ld]: %s\n", stamp,
		     my_pid, line);
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
static void log_emit(int prio, const char *line,
		     const struct iovec *fields, int nfields)
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
static enum read_status parse_request(char *p, const char *end,
				      struct request *r)
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
 * written with MSG_DONTWAIT, pipes (in tests) in PIPE_BUF pieces after
 * POLLOUT, so no write blocks and the descriptors' flags, which other
 * processes may share, are left alone. */
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
 * The triplet.
 */

struct triplet {
	int family;			/* AF_INET or AF_INET6 */
	unsigned char bin[16];		/* client address */
	char addr[INET6_ADDRSTRLEN];	/* client address, canonical text */
	char net[INET6_ADDRSTRLEN];	/* client network, canonical text */
	char client[INET6_ADDRSTRLEN];	/* auto-whitelist key: see client_net */
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

/* The first 12 bytes of an IPv4-mapped IPv6 address (::ffff:a.b.c.d). */
static const unsigned char v4mapped[12] =
	{ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

/* client_net - parse client_address into the triplet's address, network
 * and auto-whitelist key. IPv4-mapped IPv6 counts as IPv4. The key is
 * the IPv4 address, as postgrey's; for IPv6 it is the network, because
 * a /64 is one site whose servers change address within it (Gmail sends
 * from many addresses of one /64). -1 if it is not an IP address. */
static int client_net(const char *text, struct triplet *t)
{
	unsigned char *a = t->bin;
	size_t len = 16;
	long long bits = cfg.ipv6cidr;

	t->family = AF_INET6;
	if (inet_pton(AF_INET, text, a) == 1) {
		t->family = AF_INET;
	} else if (inet_pton(AF_INET6, text, a) != 1) {
		return -1;
	} else if (memcmp(a, v4mapped, sizeof(v4mapped)) == 0) {
		memmove(a, a + 12, 4);
		t->family = AF_INET;
	}
	if (t->family == AF_INET) {
		len = 4;
		bits = cfg.ipv4cidr;
	}
	if (!inet_ntop(t->family, a, t->addr, sizeof(t->addr)))
		return -1;
	if (cfg.lookup_by_host) {
		memcpy(t->net, t->addr, sizeof(t->net));
	} else {
		unsigned char m[16];

		memcpy(m, a, len);
		mask_bits(m, len, bits);
		if (!inet_ntop(t->family, m, t->net, sizeof(t->net)))
			return -1;
	}
	memcpy(t->client, t->family == AF_INET ? t->addr : t->net,
	       sizeof(t->client));
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

/* --privacy: keys are stored as SHA-256 digests (FIPS 180-4). */
struct sha256 {
	uint32_t h[8];
	unsigned char block[64];
	uint64_t bytes;
};

static const uint32_t sha256_k[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1,
	0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
	0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
	0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
	0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
	0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
	0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
	0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
	0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t ror(uint32_t x, int n)
{
	return x >> n | x << (32 - n);
}

/* sha256_block - compress one 64-byte block into the state */
static void sha256_block(struct sha256 *c, const unsigned char *p)
{
	uint32_t w[64], s[8], t1, t2;
	size_t i;

	for (i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16
			| (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
	for (i = 16; i < 64; i++)
		w[i] = w[i - 16] + w[i - 7]
			+ (ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ w[i - 15] >> 3)
			+ (ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ w[i - 2] >> 10);
	memcpy(s, c->h, sizeof(s));
	for (i = 0; i < 64; i++) {
		t1 = s[7] + (ror(s[4], 6) ^ ror(s[4], 11) ^ ror(s[4], 25))
			+ ((s[4] & s[5]) ^ (~s[4] & s[6])) + sha256_k[i] + w[i];
		t2 = (ror(s[0], 2) ^ ror(s[0], 13) ^ ror(s[0], 22))
			+ ((s[0] & s[1]) ^ (s[0] & s[2]) ^ (s[1] & s[2]));
		memmove(s + 1, s, 7 * sizeof(s[0]));
		s[4] += t1;
		s[0] = t1 + t2;
	}
	for (i = 0; i < 8; i++)
		c->h[i] += s[i];
}

/* sha256_hex - the digest of [p, p+len) as 64 hex digits and a NUL */
static void sha256_hex(const void *data, size_t len, char out[65])
{
	static const uint32_t init[8] = {
		0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
		0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
	};
	const unsigned char *p = data;
	struct sha256 c;
	size_t used, i;

	memcpy(c.h, init, sizeof(init));
	c.bytes = len;
	for (; len >= 64; p += 64, len -= 64)
		sha256_block(&c, p);
	memset(c.block, 0, sizeof(c.block));
	memcpy(c.block, p, len);
	c.block[len] = 0x80;
	used = len + 1;
	if (used > 56) {
		sha256_block(&c, c.block);
		memset(c.block, 0, sizeof(c.block));
	}
	for (i = 0; i < 8; i++)
		c.block[63 - i] = (unsigned char)(c.bytes * 8 >> (8 * i));
	sha256_block(&c, c.block);
	for (i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x",
			 (unsigned)(c.h[i / 4] >> (24 - 8 * (i % 4))) & 0xff);
}

/* is_digest - 64 lower-case hex digits: a key hashed by --privacy */
static int is_digest(const char *s)
{
	return strlen(s) == 64 && strspn(s, "0123456789abcdef") == 64;
}

/* record_key - "KIND\n" then the parts joined by "\n" (newline never
 * occurs in a Postfix value, so no two keys collide), or when hashing
 * (--privacy) the SHA-256 of that joined text; NUL-terminated, though
 * the datum does not count the NUL. -1 if it cannot fit. */
static int record_key(char kind, const char *const *parts, size_t n,
		      int hash, char *key, size_t size, datum *out)
{
	size_t len = 2, i, plen;

	key[0] = kind;
	key[1] = '\n';
	for (i = 0; i < n; i++) {
		plen = strlen(parts[i]);
		if (len + plen + 1 > size)
			return -1;
		memcpy(key + len, parts[i], plen);
		len += plen;
		key[len++] = '\n';
	}
	key[--len] = 0;			/* no newline after the last part */
	if (hash) {
		char hex[65];

		if (size < 2 + sizeof(hex))
			return -1;
		sha256_hex(key + 2, len - 2, hex);
		memcpy(key + 2, hex, sizeof(hex));
		len = 2 + 64;
	}
	*out = (datum){ key, (int)len };
	return 0;
}

/*
 * Whitelists.
 *
 * Files are read once per process, at its first RCPT request. Entries
 * that cost nothing to test (addresses, names) are tested first; a
 * regular expression is compiled only when a request needs it, and not
 * even then when the name cannot end the way the expression requires
 * (see required_suffix), so a long list costs little per connection.
 */

/* Each file is read whole; a bigger one is refused. 4 MiB is some
 * 100,000 lines, twenty times the largest lists seen in use. */
#define MAX_WL_FILE	(4 << 20)

/* A count past which an auto-whitelisted client's count stops growing. */
#define MAX_AWL_COUNT	1000000000LL

enum wl_kind {
	WL_NET,				/* client address in a CIDR block */
	WL_HOST,			/* client_name, or a subdomain of it */
	WL_CLIENT_RE,			/* /regex/ on client_name */
	WL_USER,			/* recipient local part, any domain */
	WL_ADDRESS,			/* recipient address */
	WL_DOMAIN,			/* recipient domain, or a subdomain */
	WL_RCPT_RE,			/* /regex/ on the recipient */
};

struct wl_entry {
	enum wl_kind kind;
	int family;			/* WL_NET: AF_INET or AF_INET6 */
	unsigned char net[16];		/* WL_NET: masked address */
	long long bits;			/* WL_NET: prefix length */
	const char *text;		/* lower-cased value; a translated regex */
	char *owned;			/* the translated regex, to free */
	char *suffix;			/* regex: lower-cased required ending */
	int re_state;			/* regex: 0 not compiled, 1 ok, -1 bad */
	regex_t *re;			/* regex: compiled when first needed */
	const char *file;
	unsigned line;
};

static struct {
	struct wl_entry *e;
	size_t n, cap;
	int loaded;
	int problems;			/* bad lines this process has seen */
	int report;			/* print problems (check) or count them */
	char *bufs[MAX_WL_FILES + 1];	/* file contents the entries point into */
	size_t nbufs;
} wl;

/* wl_problem - a bad line: printed by `check`, counted while serving
 * (wl_report logs them once per version of the files) */
__attribute__((format(printf, 3, 4)))
static void wl_problem(const char *file, unsigned line, const char *fmt, ...)
{
	char msg[300];
	va_list ap;

	wl.problems++;
	if (!wl.report)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (wl.report == 1 && line)
		printf("%s:%u: %s\n", file, line, msg);
	else if (wl.report == 1)
		printf("%s: %s\n", file, msg);
	else if (line)
		msg_warn("%s:%u: %s; line skipped", file, line, msg);
	else
		msg_warn("%s: %s; file skipped", file, msg);
}

/* perl_escape - the POSIX form of a Perl escape outside brackets */
static const char *perl_escape(char c)
{
	switch (c) {
	case 'd': return "[0-9]";
	case 'D': return "[^0-9]";
	case 'w': return "[[:alnum:]_]";
	case 'W': return "[^[:alnum:]_]";
	case 's': return "[[:space:]]";
	case 'S': return "[^[:space:]]";
	default: return NULL;
	}
}

/* translate_regex - the Perl regex dialect of postgrey's lists into POSIX
 * extended: \d \w \s and their negations, (?:...) groups, lazy
 * quantifiers (which match the same strings). Anything else Perl-only
 * (\b, look-arounds, back-references) is refused. 0 or -1 with *why. */
static int translate_regex(const char *s, char *dst, size_t size,
			   size_t *len, const char **why)
{
	size_t o = 0;
	int bracket = 0;
	const char *add;
	char one[4];			/* "[^]" and its NUL at most */

	for (; *s; s++) {
		add = one;
		one[0] = *s;
		one[1] = one[2] = one[3] = 0;
		if (*s == '\\' && !s[1]) {
			*why = "ends with a backslash";
			return -1;
		} else if (*s == '\\' && bracket) {
			s++;
			add = *s == 'd' ? "0-9" : *s == 'w' ? "[:alnum:]_"
				: *s == 's' ? "[:space:]"
				: strchr(".+*?()|$/", *s) ? (one[0] = *s, one)
				: NULL;
		} else if (*s == '\\') {
			s++;
			add = isalnum((unsigned char)*s) ? perl_escape(*s)
				: strchr(".[]()*+?{}|^$\\", *s)
				? (one[1] = *s, one)	/* still special */
				: (one[0] = *s, one);	/* \' \< are GNU's */
		} else if (*s == '[' && !bracket) {
			bracket = 1;
			if (s[1] == '^')
				one[1] = *++s;
			if (s[1] == ']')
				one[one[1] ? 2 : 1] = *++s;
		} else if (*s == ']' && bracket) {
			bracket = 0;
		} else if (*s == '(' && s[1] == '?' && !bracket) {
			if (s[2] != ':') {
				*why = "Perl (?...) groups other than (?:...)"
					" are not supported";
				return -1;
			}
			s += 2;
		} else if (strchr("*+?}", *s) && s[1] == '?' && !bracket) {
			s++;		/* lazy: the same strings match */
		}
		if (!add) {
			*why = "this backslash escape is not supported";
			return -1;
		}
		if (o + strlen(add) >= size) {
			*why = "too long";
			return -1;
		}
		memcpy(dst + o, add, strlen(add));
		o += strlen(add);
	}
	dst[o] = 0;
	*len = o;
	if (bracket) {
		*why = "unclosed [";
		return -1;
	}
	return 0;
}

/* required_suffix - the literal text every match must end with, lower
 * case: the run of plain characters (or escaped punctuation) just before
 * a final "$", in an expression without "|". NULL when there is none. */
static char *required_suffix(const char *re, size_t len)
{
	size_t start = 0, i, o = 0;
	char *suffix;

	if (len < 2 || re[len - 1] != '$' || re[len - 2] == '\\'
	    || strchr(re, '|'))
		return NULL;
	for (i = 0; i + 1 < len; i++) {
		if (re[i] == '\\' && isalnum((unsigned char)re[i + 1]))
			start = ++i + 1;	/* a class, not a literal */
		else if (re[i] == '\\')
			i++;			/* escaped punctuation */
		else if (!isalnum((unsigned char)re[i]) && !strchr("-_@", re[i]))
			start = i + 1;
	}
	if (start + 1 >= len || !(suffix = malloc(len - start)))
		return NULL;
	for (i = start; i + 1 < len; i++) {
		if (re[i] == '\\')
			i++;
		suffix[o++] = (char)tolower((unsigned char)re[i]);
	}
	suffix[o] = 0;
	return suffix;
}

/* parse_net - "address", "address/bits", or postgrey's partial IPv4
 * "a.b.c" (/24) and "a.b" (/16); IPv4-mapped IPv6 counts as IPv4 */
static int parse_net(const char *s, struct wl_entry *e)
{
	char addr[INET6_ADDRSTRLEN + 8];
	const char *slash = strchr(s, '/');
	size_t len = slash ? (size_t)(slash - s) : strlen(s);
	int dots = 0;
	char *end;
	size_t i;

	if (len >= sizeof(addr) - 4)
		return -1;
	memcpy(addr, s, len);
	addr[len] = 0;
	for (i = 0; i < len; i++)
		dots += addr[i] == '.';
	if (!slash && !strchr(addr, ':') && (dots == 1 || dots == 2)) {
		e->bits = dots * 8 + 8;
		memcpy(addr + len, dots == 1 ? ".0.0" : ".0", dots == 1 ? 5 : 3);
	}
	if (inet_pton(AF_INET, addr, e->net) == 1) {
		e->family = AF_INET;
	} else if (inet_pton(AF_INET6, addr, e->net) == 1) {
		e->family = AF_INET6;
	} else {
		return -1;
	}
	if (slash) {
		errno = 0;
		e->bits = strtoll(slash + 1, &end, 10);
		if (errno || *end || end == slash + 1
		    || !isdigit((unsigned char)slash[1]))
			return -1;
	} else if (dots != 1 && dots != 2) {
		e->bits = e->family == AF_INET ? 32 : 128;
	}
	if (e->family == AF_INET6 && memcmp(e->net, v4mapped, 12) == 0
	    && e->bits >= 96) {
		memmove(e->net, e->net + 12, 4);
		e->family = AF_INET;
		e->bits -= 96;
	}
	if (e->bits < 0 || e->bits > (e->family == AF_INET ? 32 : 128))
		return -1;
	mask_bits(e->net, e->family == AF_INET ? 4 : 16, e->bits);
	return 0;
}

/* is_name - letters, digits, "-", "_" and "." only: a host or domain */
static int is_name(const char *s)
{
	unsigned char c;

	if (!*s || *s == '.')
		return 0;
	while ((c = (unsigned char)*s++))
		if (!((c | 32) >= 'a' && (c | 32) <= 'z') && !(c >= '0' && c <= '9')
		    && c != '-' && c != '_' && c != '.')
			return 0;
	return 1;
}
/* is_local_part - what may stand before "@" in an entry */
static int is_local_part(const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if ((unsigned char)s[i] <= 32 || s[i] == '@' || s[i] == 127)
			return 0;
	return len > 0;
}

/* Compiling x{1,1000}{1,1000} takes glibc's regcomp gigabytes: it copies
 * a repeated part once per repetition ("+": twice), and repetitions of
 * repetitions multiply. The length times every repetition count bounds
 * those copies; past this (about 14 MB) an expression is refused. */
#define MAX_RE_COST	65536

/* regex_too_costly - the bound above, of a POSIX extended regex */
static int regex_too_costly(const char *re)
{
	long long cost = (long long)strlen(re), n, m;

	for (; *re && cost <= MAX_RE_COST; re++) {
		if (*re == '\\' && re[1]) {
			re++;
		} else if (*re == '+') {
			cost *= 2;
		} else if (*re == '{') {
			for (n = m = 0; re[1] && re[1] != '}' && m <= MAX_RE_COST;
			     re++) {
				n = isdigit((unsigned char)re[1])
					? n * 10 + (re[1] - '0') : 0;
				m = n > m ? n : m;
			}
			cost *= m + 1;
		}
	}
	return cost > MAX_RE_COST;
}

/* A repetition (*, +, {}) of what can match the empty string, as in a**
 * or (a*)*, sends glibc's regcomp into exponential time (70 bytes take
 * minutes); Perl calls a** a nested quantifier. Such an expression is
 * refused, and so is one whose groups nest deeper than this. */
#define MAX_RE_DEPTH	16

/* skip_bracket - the "]" that ends the bracket expression at re, or the
 * end of the string */
static const char *skip_bracket(const char *re)
{
	const char *end;

	re += 1 + (re[1] == '^');
	if (*re == ']')
		re++;
	for (; *re && *re != ']'; re++) {
		if (*re != '[' || !re[1] || !strchr(":.=", re[1]))
			continue;
		end = strchr(re + 2, ']');
		while (end && end[-1] != re[1])
			end = strchr(end + 1, ']');
		if (!end)
			return re + strlen(re);
		re = end;
	}
	return re;
}

/* regex_loops_on_empty - does a repetition apply to something that can
 * match the empty string (an anchor, a repetition that allows none, a
 * group that can be empty)? The "empty" state of the sequence so far
 * and of the alternatives is kept for each open group. */
static int regex_loops_on_empty(const char *re)
{
	int seq[MAX_RE_DEPTH + 1] = { 1 }, alt[MAX_RE_DEPTH + 1] = { 0 };
	int d = 0, last = -1, before = 1, atom;

	for (; *re; re++) {
		atom = 0;
		if (*re == '(') {
			if (++d > MAX_RE_DEPTH)
				return 1;
			seq[d] = 1;
			alt[d] = 0;
			last = -1;
			continue;
		} else if (*re == '|') {
			alt[d] |= seq[d];
			seq[d] = 1;
			last = -1;
			continue;
		} else if (*re == ')' && d > 0) {
			atom = alt[d] || seq[d];
			d--;
		} else if ((strchr("*?+", *re) || (*re == '{'
			    && isdigit((unsigned char)re[1]))) && last >= 0) {
			if (last && *re != '?')
				return 1;	/* a loop over nothing */
			last = last || *re == '*' || *re == '?'
				|| (*re == '{' && re[1] == '0' && !isdigit(
				    (unsigned char)re[2]));
			if (*re == '{')
				while (*re && *re != '}')
					re++;
			seq[d] = before && last;
			if (!*re)
				break;
			continue;
		} else if (*re == '^' || *re == '$') {
			atom = 1;
		} else if (*re == '\\' && re[1]) {
			re++;
		} else if (*re == '[') {
			re = skip_bracket(re);
			if (!*re)
				break;
		}
		before = seq[d];
		seq[d] = before && atom;
		last = atom;
	}
	return 0;
}

/* parse_value - one entry of a given side ('c'lient or 'r'ecipient). The
 * value is lower-cased in place: entries point into the file's buffer. */
static const char *parse_value(int side, char *v, struct wl_entry *e)
{
	size_t len = strlen(v), rlen;
	char *at = strchr(v, '@');
	const char *why = NULL;

	if (len >= 3 && v[0] == '/' && v[len - 1] == '/') {
		v[len - 1] = 0;
		e->kind = side == 'c' ? WL_CLIENT_RE : WL_RCPT_RE;
		e->owned = malloc(6 * len);	/* "\w" grows six-fold */
		if (!e->owned)
			return "out of memory";
		if (translate_regex(v + 1, e->owned, 6 * len, &rlen, &why) != 0)
			return why;
		if (regex_too_costly(e->owned))
			return "too costly to compile (large or nested"
			       " repetitions)";
		if (regex_loops_on_empty(e->owned))
			return "a repetition of what can match nothing, as"
			       " (a*)*: too costly to compile";
		e->text = e->owned;
		e->suffix = required_suffix(e->text, rlen);
		return NULL;
	}
	lower(v, v);
	if (side == 'c') {
		if ((strchr(v, ':') || strspn(v, "0123456789./") == len)
		    && parse_net(v, e) == 0) {
			e->kind = WL_NET;
			return NULL;
		}
		if (strchr(v, '/') || strspn(v, "0123456789.") == len
		    || (!strchr(v, ':') && !is_name(v)))
			return "not an address, a CIDR block, a host name or"
			       " a /regex/";
		if (strchr(v, ':'))
			return "not an IPv6 address or block";
		e->kind = WL_HOST;
	} else if (at && !at[1] && is_local_part(v, len - 1)) {
		e->kind = WL_USER;
		*at = 0;
	} else if (at && at != v && is_local_part(v, (size_t)(at - v))
		   && is_name(at + 1)) {
		e->kind = WL_ADDRESS;
	} else if (is_name(at == v ? v + 1 : v)) {
		e->kind = WL_DOMAIN;
		v += at == v;
	} else {
		return "not user@, user@domain, a domain or a /regex/";
	}
	e->text = v;
	return NULL;
}

/* wl_add - append an entry; -1 when memory runs out */
static int wl_add(const struct wl_entry *e)
{
	if (wl.n == wl.cap) {
		size_t cap = wl.cap ? wl.cap * 2 : 64;
		struct wl_entry *p = realloc(wl.e, cap * sizeof(*p));

		if (!p)
			return -1;
		wl.e = p;
		wl.cap = cap;
	}
	wl.e[wl.n++] = *e;
	return 0;
}

/* wl_line - parse one line of a file in its format; comments and blank
 * lines are skipped. Our format is "client VALUE" or "recipient VALUE";
 * postgrey's files hold bare values of one side each. */
static void wl_line(char *s, enum wl_format fmt, const char *file,
		    unsigned line)
{
	struct wl_entry e;
	const char *why;
	char *hash, *end;
	int side;

	memset(&e, 0, sizeof(e));
	e.file = file;
	e.line = line;
	if (fmt == WLF_GREYLISTD) {
		for (hash = s; (hash = strchr(hash, '#')); hash++)
			if (hash == s || isspace((unsigned char)hash[-1])) {
				*hash = 0;
				break;
			}
	} else if ((hash = strchr(s, '#'))) {
		*hash = 0;		/* postgrey: "#" always starts one */
	}
	while (isspace((unsigned char)*s))
		s++;
	end = s + strlen(s);
	while (end > s && isspace((unsigned char)end[-1]))
		*--end = 0;
	if (!*s)
		return;
	side = fmt == WLF_CLIENTS ? 'c' : 'r';
	if (fmt == WLF_GREYLISTD) {
		size_t kw = strcspn(s, " \t");

		if (kw == 6 && strncmp(s, "client", 6) == 0) {
			side = 'c';
		} else if (kw == 9 && strncmp(s, "recipient", 9) == 0) {
			side = 'r';
		} else {
			wl_problem(file, line, "a line must start with"
				   " \"client\" or \"recipient\"");
			return;
		}
		s += kw;
		s += strspn(s, " \t");
		if (!*s || (s[0] != '/' && strpbrk(s, " \t"))) {
			wl_problem(file, line, "one value is expected after"
				   " the keyword");
			return;
		}
	}
	why = parse_value(side, s, &e);
	if (!why && wl_add(&e) != 0)
		why = "out of memory";
	if (why) {
		wl_problem(file, line, "%s", why);
		free(e.owned);
		free(e.suffix);
	}
}

/* wl_read - read a whole file; NULL when it cannot be read (errno set;
 * EFBIG when it is over MAX_WL_FILE) */
static char *wl_read(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	struct stat st;
	char *buf = NULL;
	ssize_t n = 0;
	size_t size = 0;

	*len = 0;
	if (fd < 0)
		return NULL;
	if (fstat(fd, &st) == 0 && st.st_size <= MAX_WL_FILE) {
		size = (size_t)st.st_size + 1;	/* one more byte: EOF seen */
		buf = malloc(size + 1);
	}
	while (buf && (n = read(fd, buf + *len, size - *len)) > 0)
		*len += (size_t)n;
	close(fd);
	if (!buf || n < 0 || *len == size) {
		free(buf);
		errno = size == 0 ? EFBIG : !buf ? ENOMEM : n < 0 ? EIO : EFBIG;
		return NULL;
	}
	buf[*len] = 0;
	return buf;
}

/* wl_file - read and parse one file; a missing file that no option named
 * is not a problem */
static void wl_file(const char *path, enum wl_format fmt, int optional)
{
	size_t len, linelen;
	char *buf = wl_read(path, &len), *line, *end, *nl;
	unsigned n = 0;
	int nul;

	if (!buf) {
		if (!(optional && errno == ENOENT))
			wl_problem(path, 0, "cannot read: %s", errno == EFBIG
				   ? "larger than 4 MiB" : strerror(errno));
		return;
	}
	end = buf + len;
	nul = memchr(buf, 0, len) != NULL;
	for (line = buf; line < end; line = nl + 1) {
		nl = memchr(line, '\n', (size_t)(end - line));
		if (!nl)
			nl = end;
		linelen = (size_t)(nl - line);
		*nl = 0;
		n++;
		if (nul && memchr(line, 0, linelen))
			wl_problem(path, n, "NUL byte in the line");
		else if (linelen > 1000)
			wl_problem(path, n, "line longer than 1000 bytes");
		else
			wl_line(line, fmt, path, n);
	}
	wl.bufs[wl.nbufs++] = buf;	/* the entries point into it */
}

/* wl_load - the built-in entries, then every file, once per process */
static void wl_load(const struct wl_list *files)
{
	static const char *const builtin[] = { "postmaster", "abuse" };
	struct wl_entry e;
	size_t i;
	int named = 0;

	if (wl.loaded)
		return;
	wl.loaded = 1;
	for (i = 0; i < sizeof(builtin) / sizeof(builtin[0]); i++) {
		memset(&e, 0, sizeof(e));
		e.kind = WL_USER;
		e.text = builtin[i];
		e.file = "(built-in)";
		if (wl_add(&e) != 0)
			wl_problem(e.file, 0, "out of memory");
	}
	for (i = 0; i < files->n; i++)
		named |= files->format[i] == WLF_GREYLISTD;
	if (!named)
		wl_file(DEFAULT_WHITELIST, WLF_GREYLISTD, 1);
	for (i = 0; i < files->n; i++)
		wl_file(files->path[i], files->format[i], 0);
}

/* wl_free - forget the loaded entries (to load them again) */
static void wl_free(void)
{
	size_t i;

	for (i = 0; i < wl.n; i++) {
		if (wl.e[i].re_state == 1)
			regfree(wl.e[i].re);
		free(wl.e[i].re);
		free(wl.e[i].owned);
		free(wl.e[i].suffix);
	}
	for (i = 0; i < wl.nbufs; i++)
		free(wl.bufs[i]);
	free(wl.e);
	memset(&wl, 0, sizeof(wl));
}

/* wl_regex - does a regex entry match the lower-case subject? It is not
 * compiled when the subject lacks the ending it requires. */
static int wl_regex(struct wl_entry *e, const char *subject)
{
	size_t n = strlen(subject), m;

	if (e->suffix) {
		m = strlen(e->suffix);
		if (m > n || memcmp(subject + n - m, e->suffix, m) != 0)
			return 0;
	}
	if (e->re_state == 0) {
		e->re = malloc(sizeof(*e->re));
		e->re_state = e->re && regcomp(e->re, e->text, REG_EXTENDED
					       | REG_ICASE | REG_NOSUB) == 0
			? 1 : -1;
		if (e->re_state < 0)
			wl_problem(e->file, e->line, "not a valid regular"
				   " expression");
	}
	return e->re_state == 1 && regexec(e->re, subject, 0, NULL, 0) == 0;
}

/* ends_with_name - name is domain, or a subdomain of it */
static int ends_with_name(const char *name, const char *domain)
{
	size_t n = strlen(name), m = strlen(domain);

	return n >= m && memcmp(name + n - m, domain, m) == 0
		&& (n == m || name[n - m - 1] == '.');
}

/* client_matches - does entry e whitelist the client? Addresses and
 * names (pass 0) are tested before regexes (pass 1), which cost more. */
static int client_matches(struct wl_entry *e, int pass, int family,
			  const unsigned char *a, const char *name)
{
	unsigned char masked[16];
	size_t len = family == AF_INET ? 4 : 16;

	if (pass == 0 && e->kind == WL_NET && e->family == family) {
		memcpy(masked, a, len);
		mask_bits(masked, len, e->bits);
		return memcmp(masked, e->net, len) == 0;
	}
	if (pass == 0 && e->kind == WL_HOST)
		return *name && ends_with_name(name, e->text);
	return pass == 1 && e->kind == WL_CLIENT_RE && *name
		&& wl_regex(e, name);
}

/* wl_client - the entry that whitelists this client, or NULL. Names and
 * regexes are tested against the verified client_name only. */
static const struct wl_entry *wl_client(int family, const unsigned char *a,
					const char *name)
{
	size_t i;
	int pass;

	for (pass = 0; pass < 2; pass++)
		for (i = 0; i < wl.n; i++)
			if (client_matches(&wl.e[i], pass, family, a, name))
				return &wl.e[i];
	return NULL;
}

/* local_matches - the recipient's local part is the entry's, or the
 * entry's with a +extension after it (as postgrey matches) */
static int local_matches(const char *r, size_t rlen, const char *l,
			 size_t llen)
{
	return rlen >= llen && memcmp(r, l, llen) == 0
		&& (rlen == llen || r[llen] == '+');
}

/* rcpt_matches - does entry e whitelist the (lower-case) recipient, whose
 * "@" is at? Regexes (pass 1) come last. */
static int rcpt_matches(struct wl_entry *e, int pass, const char *rcpt,
			const char *at)
{
	const char *eat;

	if (pass == 1)
		return e->kind == WL_RCPT_RE && wl_regex(e, rcpt);
	if (!at)
		return 0;
	switch (e->kind) {
	case WL_USER:
		return local_matches(rcpt, (size_t)(at - rcpt), e->text,
				     strlen(e->text));
	case WL_ADDRESS:
		eat = strrchr(e->text, '@');
		return eat && strcmp(at, eat) == 0
			&& local_matches(rcpt, (size_t)(at - rcpt), e->text,
					 (size_t)(eat - e->text));
	case WL_DOMAIN:
		return ends_with_name(at + 1, e->text);
	default:
		return 0;
	}
}

/* wl_recipient - the entry that whitelists this (lower-case) recipient,
 * or NULL; "user+ext@domain" matches the entries for user@domain */
static const struct wl_entry *wl_recipient(const char *rcpt)
{
	const char *at = strrchr(rcpt, '@');
	size_t i;
	int pass;

	if (!wl.e)
		return NULL;
	for (pass = 0; pass < 2; pass++)
		for (i = 0; i < wl.n; i++)
			if (rcpt_matches(&wl.e[i], pass, rcpt, at))
				return &wl.e[i];
	return NULL;
}

/* wl_check_all - compile every regex too, so that every bad line is
 * reported (by `check`, or once per version of the files while serving) */
static void wl_check_all(const struct wl_list *files)
{
	size_t i;

	wl_load(files);
	for (i = 0; i < wl.n; i++)
		if (wl.e[i].kind == WL_CLIENT_RE || wl.e[i].kind == WL_RCPT_RE) {
			free(wl.e[i].suffix);
			wl.e[i].suffix = NULL;
			wl_regex(&wl.e[i], "");
		}
}

/* wl_signature - identifies this version of the whitelist files */
static long long wl_signature(const struct wl_list *files)
{
	uint64_t h = 14695981039346656037ULL;
	struct stat st;
	long long v[5];
	size_t i, j;

	for (i = 0; i <= files->n; i++) {
		memset(&st, 0, sizeof(st));
		if (stat(i < files->n ? files->path[i] : DEFAULT_WHITELIST,
			 &st) != 0)
			st.st_ino = (ino_t)errno;
		v[0] = (long long)st.st_dev;
		v[1] = (long long)st.st_ino;
		v[2] = (long long)st.st_size;
		v[3] = (long long)st.st_mtim.tv_sec;
		v[4] = (long long)st.st_mtim.tv_nsec;
		for (j = 0; j < 5; j++)
			h = (h ^ (uint64_t)v[j]) * 1099511628211ULL;
	}
	return (long long)(h % (uint64_t)MAX_TIME);
}

/*
 * The database.
 */

/* on_alarm - interrupts a blocked flock(2); see lock_wait() */
static void on_alarm(int sig)
{
	(void)sig;			/* it only has to interrupt */
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

/* gdbm errors that mean the file itself is damaged (a read or seek
 * error: its structure points past what was written, as after a disk
 * filled up in the middle of a write) */
static int is_damage(int err)
{
	static const int damage[] = {
		GDBM_BAD_MAGIC_NUMBER, GDBM_BLOCK_SIZE_ERROR, GDBM_BYTE_SWAPPED,
		GDBM_BAD_FILE_OFFSET, GDBM_FILE_EOF, GDBM_NEED_RECOVERY,
		GDBM_DIR_OVERFLOW, GDBM_BAD_BUCKET, GDBM_BAD_HEADER,
		GDBM_BAD_AVAIL, GDBM_BAD_HASH_TABLE, GDBM_BAD_DIR_ENTRY,
		GDBM_BAD_HASH_ENTRY, GDBM_BUCKET_CACHE_CORRUPTED,
		GDBM_FILE_READ_ERROR, GDBM_FILE_SEEK_ERROR,
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
 * its exclusive lock) so that a fresh one is started; -1 if it cannot */
static int db_move_aside(const char *why)
{
	char aside[PATH_MAX], stamp[32];

	format_time(stamp, sizeof(stamp), TS_FILE, time(NULL));
	if (snprintf(aside, sizeof(aside), "%s.damaged-%s-%ld", cfg.db_path,
		     stamp, (long)getpid()) >= (int)sizeof(aside)
	    || rename(cfg.db_path, aside) != 0) {
		return -1;
	}
	msg_error("database %s is damaged (%s): moved to %s, starting a"
		  " fresh one", cfg.db_path, why, aside);
	return 0;
}

/* same_file - the locked descriptor is still the file at the path; a
 * recovery may have renamed a new file over it while we waited. *st is
 * the descriptor's */
static int same_file(int fd, struct stat *st)
{
	struct stat b;

	return fstat(fd, st) == 0 && stat(cfg.db_path, &b) == 0
		&& st->st_ino == b.st_ino && st->st_dev == b.st_dev;
}

/* Space kept allocated past the end of the file: at least this, and at
 * least an eighth of the file (GDBM doubles its directory in one write). */
#define MIN_SLACK	(1 << 20)

/* reserve_space - make sure the next writes cannot run out of disk half
 * way, which leaves a GDBM file damaged: keep slack allocated past its
 * end (FALLOC_FL_KEEP_SIZE: the size does not change). -1 when the disk
 * is full, before anything is written. */
static int reserve_space(int fd, const struct stat *st)
{
	off_t want, have;

	want = st->st_size / 8 > MIN_SLACK ? st->st_size / 8 : MIN_SLACK;
	have = (off_t)st->st_blocks * 512 - st->st_size;
	if (have >= want / 2)
		return 0;
	if (fallocate(fd, FALLOC_FL_KEEP_SIZE, st->st_size, want) == 0)
		return 0;
	return errno == EOPNOTSUPP || errno == ENOSYS ? 0 : -1;
}

/* GDBM's file header (gdbmconst.h, the format GDBM 1.23 creates without
 * the numsync extension, with 64-bit offsets): the fields fix_next_block
 * reads. */
#define GDBM_HEADER_MAGIC64	0x13579acf
#define GDBM_HEADER_BLOCK_SIZE	4	/* int */
#define GDBM_HEADER_NEXT_BLOCK	32	/* off_t: where the file ends */

/* fix_next_block - GDBM writes an update's buckets and directory first
 * and its header last. A writer killed between the two (SIGKILL cannot
 * be held) leaves the header's end mark (next_block) before buckets that
 * the directory already points to: GDBM then takes them for damage, and
 * gdbm_recover drops them with every record they hold. A healthy file
 * never extends past the mark, so when it does, the mark is moved past
 * the end (with a margin for the blocks the killed writer had taken but
 * not yet written); at worst a few free blocks are never reused. The
 * caller holds the exclusive lock. */
static void fix_next_block(int fd, const struct stat *st)
{
	unsigned char h[GDBM_HEADER_NEXT_BLOCK + 8];
	int32_t magic, block;
	int64_t next, fixed;

	if (pread(fd, h, sizeof(h), 0) != (ssize_t)sizeof(h))
		return;
	memcpy(&magic, h, sizeof(magic));
	memcpy(&block, h + GDBM_HEADER_BLOCK_SIZE, sizeof(block));
	memcpy(&next, h + GDBM_HEADER_NEXT_BLOCK, sizeof(next));
	if (magic != GDBM_HEADER_MAGIC64 || block < 512 || block > (1 << 24)
	    || next <= 0 || next >= (int64_t)st->st_size)
		return;
	fixed = ((int64_t)st->st_size + block - 1) / block * block
		+ (int64_t)8 * block;
	if (pwrite(fd, &fixed, sizeof(fixed), GDBM_HEADER_NEXT_BLOCK)
	    != (ssize_t)sizeof(fixed) || fsync(fd) != 0)
		return;
	msg_warn("database %s: a writer was stopped in the middle of an"
		 " update: moved the header's end mark from %lld to %lld",
		 cfg.db_path, (long long)next, (long long)fixed);
}

/* hold_signals - while a writer has the file open, a stop request
 * (SIGTERM from systemd, SIGINT, SIGHUP, SIGQUIT) waits until it is
 * closed: GDBM updates a file in several writes, and a process ended
 * between them can leave a bucket split half done, whose records the
 * repair then cannot find. (SIGKILL cannot be held; see README.) */
static void hold_signals(int hold)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGQUIT);
	sigprocmask(hold ? SIG_BLOCK : SIG_UNBLOCK, &set, NULL);
}

/* db_open - open and lock the database before the deadline. A reader
 * finds DB_ABSENT when there is no file yet. A writer creates the file,
 * and moves a damaged one aside. DB_DAMAGED: the open file needs
 * gdbm_recover, which the caller schedules after answering. */
static enum db_status db_open_locked(struct db *db, int writer,
				     const struct timespec *deadline)
{
	int flags = (writer ? GDBM_WRCREAT : GDBM_READER) | GDBM_NOLOCK
		| GDBM_NOMMAP | GDBM_CLOEXEC;
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
			if (err == ETIMEDOUT)
				return db_fault(db, "lock not had within %llds",
						cfg.lock_timeout);
			return db_fault(db, "cannot lock %s: %s", cfg.db_path,
					strerror(err));
		}
		if (writer)
			hold_signals(1);
		if (!same_file(fd, &st)) {
			close(fd);
			continue;
		}
		if (writer && reserve_space(fd, &st) != 0) {
			err = errno;
			close(fd);
			return db_fault(db, "no space for %s: %s", cfg.db_path,
					strerror(err));
		}
		if (writer)
			fix_next_block(fd, &st);
		if (!writer && st.st_size == 0) {
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
			if (db_move_aside(gdbm_strerror(err)) != 0) {
				int rename_err = errno;

				close(fd);
				return db_fault(db, "%s is damaged (%s) and"
						" cannot be moved aside: %s",
						cfg.db_path, gdbm_strerror(err),
						strerror(rename_err));
			}
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

/* db_open - db_open_locked, with stop signals held while a writer has
 * the file (see hold_signals) */
static enum db_status db_open(struct db *db, int writer,
			      const struct timespec *deadline)
{
	enum db_status st = db_open_locked(db, writer, deadline);

	if (writer && !db->dbf)
		hold_signals(0);
	return st;
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
	if (db->dbf && db->writer)
		hold_signals(0);
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
	V_NEW, V_EARLY, V_PASS_FIRST, V_PASS, V_AWL, V_WL_CLIENT, V_WL_RCPT,
	V_FAIL_OPEN, V_NOT_RCPT, V_BAD_REQUEST,
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
	[V_AWL] = { "pass", "client AWL", 0, LOG_INFO },
	[V_WL_CLIENT] = { "pass", "client whitelist", 0, LOG_INFO },
	[V_WL_RCPT] = { "pass", "recipient whitelist", 0, LOG_INFO },
	[V_FAIL_OPEN] = { "pass", NULL, 0, LOG_WARNING },
	[V_NOT_RCPT] = { NULL, NULL, 0, 0 },
	[V_BAD_REQUEST] = { "pass", NULL, 0, LOG_WARNING },
};

/* Record fields: a triplet (T), a client of the auto-whitelist (C). */
enum { T_FIRST, T_LAST, T_PASSED, T_FIELDS };
enum { C_COUNT, C_LAST, C_FIELDS };

struct outcome {
	enum verdict v;
	long long seconds;		/* waited (pass) or missing (early) */
	int store_t, store_c;		/* the records below must be written */
	long long t[T_FIELDS], c[C_FIELDS];
	int awl_new;			/* the client just became whitelisted */
	char why[200];			/* fail-open or bad-request reason */
};

/* The keys of one request's records: c.dptr is NULL without the AWL;
 * m, the time of the last expiry, is read at a process's first request. */
struct keys {
	datum t, c, m;
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
	if (!d.dptr || record_decode(d, rec, T_FIELDS) != 0
	    || rec[T_FIRST] > rec[T_LAST]
	    || (rec[T_PASSED] != 0 && (rec[T_PASSED] < rec[T_FIRST]
				       || rec[T_PASSED] > rec[T_LAST])))
		return NULL;
	return rec;
}

/* client_record - decode a C record; NULL if absent or of another shape */
static const long long *client_record(datum d, long long *rec)
{
	if (!d.dptr || record_decode(d, rec, C_FIELDS) != 0)
		return NULL;
	return rec;
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
 * (NULL when absent or of another shape) and the time. Pure: no I/O. */
static void decide(const long long *t, const long long *c, long long now,
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
	if (cfg.awl && o->v == V_PASS_FIRST) {
		count_client(now, o);
		o->awl_new = o->store_c && o->c[C_COUNT] == cfg.awl;
	}
}

/* Maintenance the serving process does after it has answered. */
static struct {
	int repair;			/* gdbm_recover the file */
	ino_t repair_ino;		/* ... if it is still this one */
	int wl_report;			/* log the whitelists' bad lines */
	int expire;			/* expiry is due */
} pending;

/* fail_open - an internal fault: the request will be answered DUNNO */
static void fail_open(struct outcome *o, const char *why)
{
	o->v = V_FAIL_OPEN;
	o->store_t = o->store_c = o->awl_new = 0;
	snprintf(o->why, sizeof(o->why), "fail-open (%s)", why);
}

/* note_damage - after a failed read or write: schedule a repair of this
 * file (identified by its inode, so that a file already replaced by
 * another process's repair is left alone) */
static void note_damage(struct db *db)
{
	struct stat st;

	if (!gdbm_needs_recovery(db->dbf) && !is_damage(gdbm_errno))
		return;
	pending.repair = 1;
	if (fstat(gdbm_fdesc(db->dbf), &st) == 0)
		pending.repair_ino = st.st_ino;
}

/* fetch - one record's value (free it); -1 on a fault, which is noted */
static int fetch(struct db *db, datum key, datum *value)
{
	*value = gdbm_fetch(db->dbf, key);
	if (value->dptr || gdbm_errno == GDBM_ITEM_NOT_FOUND)
		return 0;
	note_damage(db);
	db_fault(db, "reading %s: %s", cfg.db_path, gdbm_strerror(gdbm_errno));
	return -1;
}

/* put - write one record; -1 on a fault, which is noted */
static int put(struct db *db, datum key, const long long *f, int n)
{
	char buf[MAX_RECORD];

	if (gdbm_store(db->dbf, key, record_encode(buf, sizeof(buf), f, n),
		       GDBM_REPLACE) == 0)
		return 0;
	note_damage(db);
	db_fault(db, "writing %s: %s", cfg.db_path, gdbm_strerror(gdbm_errno));
	return -1;
}

/* evaluate - fetch the request's records and decide; -1 on a fault */
static int evaluate(struct db *db, const struct keys *k, long long now,
		    struct outcome *o)
{
	long long trec[T_FIELDS], crec[C_FIELDS], last;
	datum t = { NULL, 0 }, c = { NULL, 0 }, m = { NULL, 0 };
	int rc = -1;

	if ((!k->c.dptr || fetch(db, k->c, &c) == 0)
	    && (!k->m.dptr || fetch(db, k->m, &m) == 0)
	    && fetch(db, k->t, &t) == 0) {
		decide(triplet_record(t, trec), client_record(c, crec), now, o);
		pending.expire |= k->m.dptr && (!m.dptr
			|| record_decode(m, &last, 1) != 0
			|| now - last >= EXPIRE_INTERVAL || last > now);
		rc = 0;
	}
	free(t.dptr);
	free(c.dptr);
	free(m.dptr);
	return rc;
}

/* session - one locked open of the database: decide, and as a writer
 * store the result. 1 when a writer is needed, 0 done, -1 fault. The
 * time is read once the lock is held: a process that waited for it must
 * not take a record written meanwhile as one from the future. */
static int session(int writer, const struct keys *k,
		   const struct timespec *deadline, struct outcome *o)
{
	struct db db;
	int rc;

	switch (db_open(&db, writer, deadline)) {
	case DB_ABSENT:
		decide(NULL, NULL, (long long)time(NULL), o);
		return 1;
	case DB_DAMAGED:
		if (!db.dbf && !writer)
			return 1;	/* the writer moves it aside */
		note_damage(&db);
		db_close(&db);
		fail_open(o, "database damaged, repair scheduled");
		return -1;
	case DB_FAULT:
		fail_open(o, db.why);
		return -1;
	case DB_OK:
		break;
	}
	rc = evaluate(&db, k, (long long)time(NULL), o);
	if (rc == 0 && (o->store_t || o->store_c) && !writer)
		rc = 1;
	if (rc == 0 && o->store_c && put(&db, k->c, o->c, C_FIELDS) != 0)
		rc = -1;
	if (rc == 0 && o->store_t && put(&db, k->t, o->t, T_FIELDS) != 0)
		rc = -1;
	if (db_close(&db) != 0 && writer)
		rc = -1;
	if (rc < 0)
		fail_open(o, db.why);
	return rc;
}

/* greylist - decide one triplet: a reader first, a writer only when a
 * record must change; the writer decides again under its lock */
static void greylist(const struct triplet *t, struct outcome *o)
{
	static char tkey[MAX_KEY], ckey[INET6_ADDRSTRLEN + 72];
	static char mkey[] = "M\nexpire";
	static int expiry_checked;
	const char *tparts[] = { t->net, t->sender, t->recipient };
	struct timespec deadline = deadline_in(cfg.lock_timeout);
	struct keys k = { { NULL, 0 }, { NULL, 0 }, { NULL, 0 } };
	const char *cparts[] = { t->client };

	if (!expiry_checked) {
		k.m = (datum){ mkey, (int)sizeof(mkey) - 1 };
		expiry_checked = 1;
	}
	if (record_key('T', tparts, 3, (int)cfg.privacy, tkey, sizeof(tkey),
		       &k.t) != 0
	    || (cfg.awl && record_key('C', cparts, 1, (int)cfg.privacy, ckey,
				      sizeof(ckey), &k.c) != 0)) {
		fail_open(o, "key too long");
		return;
	}
	if (session(0, &k, &deadline, o) == 1)
		session(1, &k, &deadline, o);
}

/* bad_request - a request greylistd cannot judge: answer DUNNO */
static void bad_request(struct outcome *o, const char *why)
{
	o->v = V_BAD_REQUEST;
	snprintf(o->why, sizeof(o->why), "bad request (%s)", why);
}

/* whitelisted - the whitelist verdict for a request, or V_NEW when no
 * entry applies; the files are loaded at the first RCPT request */
static enum verdict whitelisted(const struct triplet *t, const char *name)
{
	char lname[MAX_LINE + 1];

	if (!wl.loaded) {
		wl_load(&cfg.whitelists);
		pending.wl_report = wl.problems > 0;
	}
	lower(lname, name ? name : "");
	if (wl_client(t->family, t->bin, lname))
		return V_WL_CLIENT;
	if (wl_recipient(t->recipient))
		return V_WL_RCPT;
	return V_NEW;
}

/* policy - the verdict for one request */
static void policy(const struct request *r, struct outcome *o)
{
	static const enum attr_id needed[] =
		{ A_CLIENT_ADDRESS, A_SENDER, A_RECIPIENT };
	static struct triplet t;
	const char *state = r->attr[A_PROTOCOL_STATE];
	char why[64], name[LOG_VALUE_MAX + 8];
	size_t i;

	o->why[0] = 0;
	o->seconds = 0;
	o->awl_new = 0;
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
	lower(t.recipient, r->attr[A_RECIPIENT]);
	o->v = whitelisted(&t, r->attr[A_CLIENT_NAME]);
	if (o->v != V_NEW)
		return;
	normalise_sender(t.sender, r->attr[A_SENDER]);
	greylist(&t, o);
	if (o->awl_new)
		msg_info("whitelisted: %s[%s]", log_value(name, sizeof(name),
			 r->attr[A_CLIENT_NAME] ? r->attr[A_CLIENT_NAME] : ""),
			 t.addr);
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

		dst[o++] = (char)(c > 32 && c < 127 ? c : '?');
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
		format_time(date, sizeof(date), TS_HEADER, time(NULL));
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

/* A journal field, "NAME=value", at most this long. */
#define MAX_FIELD	(LOG_VALUE_MAX + 48)

/* add_field - one more journal field; nothing when not logging there */
__attribute__((format(printf, 3, 4)))
static void add_field(char (*fields)[MAX_FIELD], size_t *nf,
		      const char *fmt, ...)
{
	va_list ap;

	if (!use_journal)
		return;
	va_start(ap, fmt);
	vsnprintf(fields[(*nf)++], MAX_FIELD, fmt, ap);
	va_end(ap);
}

/* log_decision - one line per RCPT decision, in postgrey's format, and
 * under systemd the same facts as journal fields */
static void log_decision(const struct request *r, const struct outcome *o)
{
	char line[2048], reason[240], val[LOG_VALUE_MAX + 8];
	char fields[NLOGGED + 3][MAX_FIELD];
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
	add_field(fields, &nf, "GREYLISTD_ACTION=%s", verdicts[o->v].action);
	add_field(fields, &nf, "GREYLISTD_REASON=%s", reason);
	if (o->v == V_PASS_FIRST) {
		append(line, sizeof(line), &n, ", delay=%lld", o->seconds);
		add_field(fields, &nf, "GREYLISTD_DELAY=%lld", o->seconds);
	}
	for (i = 0; i < NLOGGED; i++) {
		const char *v = r->attr[logged_attrs[i].id];

		if (!v || !*v)
			continue;
		log_value(val, sizeof(val), v);
		append(line, sizeof(line), &n, ", %s=%s",
		       attr_names[logged_attrs[i].id], val);
		add_field(fields, &nf, "%s%s", logged_attrs[i].field, val);
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

/* db_repair - gdbm_recover the file found damaged (unless another
 * process's repair has replaced it meanwhile); a file that cannot be
 * recovered is moved aside */
static void db_repair(ino_t damaged)
{
	struct timespec deadline = deadline_in(MAINT_LOCK_WAIT);
	gdbm_recovery rcvr;
	struct stat st;
	struct db db;

	memset(&rcvr, 0, sizeof(rcvr));
	switch (db_open(&db, 1, &deadline)) {
	case DB_OK:
		if (fstat(gdbm_fdesc(db.dbf), &st) != 0 || st.st_ino != damaged) {
			db_close(&db);	/* repaired meanwhile */
			return;
		}
		break;
	case DB_DAMAGED:
		break;
	case DB_ABSENT:
	case DB_FAULT:
		msg_warn("database repair: %s", db.why);
		return;
	}
	if (gdbm_recover(db.dbf, &rcvr, GDBM_RCVR_FORCE | GDBM_RCVR_BACKUP)
	    == 0) {
		msg_warn("database %s recovered: %zu records kept, %zu records"
			 " and %zu whole buckets (their records uncounted) lost;"
			 " the damaged file is kept as %s", cfg.db_path,
			 rcvr.recovered_keys, rcvr.failed_keys,
			 rcvr.failed_buckets, rcvr.backup_name
			 ? rcvr.backup_name : "(no backup)");
		free(rcvr.backup_name);
	} else if (db_move_aside(gdbm_strerror(gdbm_errno)) != 0) {
		msg_error("database %s is damaged, cannot be recovered, and"
			  " cannot be moved aside: %m", cfg.db_path);
	}
	db_close(&db);
}

/* meta_get - the number kept in a meta record ("M\nNAME"), -1 if none */
static long long meta_get(char *key, const struct timespec *deadline)
{
	long long v = -1;
	struct db db;
	datum d = { NULL, 0 };

	if (db_open(&db, 0, deadline) != DB_OK)
		return -1;
	if (fetch(&db, (datum){ key, (int)strlen(key) }, &d) != 0
	    || !d.dptr || record_decode(d, &v, 1) != 0)
		v = -1;
	free(d.dptr);
	db_close(&db);
	return v;
}

/* meta_put - keep a number in a meta record; -1 on a fault */
static int meta_put(char *key, long long v, const struct timespec *deadline)
{
	struct db db;
	int rc;

	if (db_open(&db, 1, deadline) != DB_OK)
		return -1;
	rc = put(&db, (datum){ key, (int)strlen(key) }, &v, 1);
	return db_close(&db) != 0 ? -1 : rc;
}

/* wl_report - log the whitelists' bad lines once per version of the
 * files, not once per connection: the version last logged is kept in
 * the database. Every regex is compiled so that all of them are seen. */
static void wl_report(void)
{
	static char key[] = "M\nwhitelist";
	struct timespec deadline = deadline_in(MAINT_LOCK_WAIT);
	long long sig = wl_signature(&cfg.whitelists);

	if (meta_get(key, &deadline) == sig)
		return;
	wl_free();
	wl.report = 2;
	wl_check_all(&cfg.whitelists);
	meta_put(key, sig, &deadline);
}

/* Expiry holds a lock at most this long at a time, then pauses so that
 * waiting requests get it: no request waits long for an expiry. */
#define SLICE_MS	40
#define SLICE_PAUSE_MS	10

/* Expired keys collected in one pass over the database before they are
 * deleted (about 100 bytes each): a bigger backlog takes several passes. */
#define EXPIRE_MAX_KEYS	200000

/* expired - the record has outlived its use: a triplet or client idle
 * past max-age, a triplet still pending after the retry window (its next
 * try starts over anyway), or a T or C record of another shape */
static int expired(datum key, datum value, long long now)
{
	long long f[T_FIELDS];

	if (key.dsize < 2 || key.dptr[1] != '\n')
		return 0;
	if (key.dptr[0] == 'T')
		return !triplet_record(value, f) || now - f[T_LAST] > cfg.max_age
			|| (f[T_PASSED] == 0
			    && now - f[T_FIRST] > cfg.retry_window);
	if (key.dptr[0] == 'C')
		return !client_record(value, f) || now - f[C_LAST] > cfg.max_age;
	return 0;
}

/* pause_ms - let waiting requests take the lock */
static void pause_ms(long ms)
{
	struct timespec ts = { 0, ms * 1000000 };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* elapsed_ms - milliseconds since a monotonic time */
static long long elapsed_ms(const struct timespec *since)
{
	struct timespec now = now_mono();

	return (now.tv_sec - since->tv_sec) * 1000LL
		+ (now.tv_nsec - since->tv_nsec) / 1000000;
}

struct batch {
	datum *key;
	size_t n, cap;
};

/* batch_add - keep a copy of a key; -1 without memory */
static int batch_add(struct batch *b, datum key)
{
	char *copy;

	if (b->n == b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 1024;
		datum *p = realloc(b->key, cap * sizeof(*p));

		if (!p)
			return -1;
		b->key = p;
		b->cap = cap;
	}
	if (!(copy = malloc((size_t)key.dsize + 1)))
		return -1;
	memcpy(copy, key.dptr, (size_t)key.dsize);
	b->key[b->n].dptr = copy;
	b->key[b->n].dsize = key.dsize;
	b->n++;
	return 0;
}

/* batch_free - forget the collected keys */
static void batch_free(struct batch *b)
{
	while (b->n > 0)
		free(b->key[--b->n].dptr);
	free(b->key);
	memset(b, 0, sizeof(*b));
}

/* Why the last expiry pass stopped, for its warning. */
static char expire_why[80];

/* expire_scan - under one shared lock for at most SLICE_MS, visit keys
 * from *cursor (NULL: the first) and collect the expired ones, up to
 * EXPIRE_MAX_KEYS. *cursor becomes the next key to visit, or NULL at the
 * end. -1 on a fault, or when the cursor key vanished (GDBM can only go
 * on from a key it has). */
static int expire_scan(datum *cursor, struct batch *b, long long now,
		       size_t *visited)
{
	struct timespec deadline = deadline_in(MAINT_LOCK_WAIT);
	struct timespec start;
	struct db db;
	datum key, value, next;
	int rc = 0;

	switch (db_open(&db, 0, &deadline)) {
	case DB_OK:
		break;
	case DB_ABSENT:
		return 0;		/* nothing to expire */
	default:
		db_close(&db);
		return -1;
	}
	start = now_mono();
	if (!cursor->dptr) {
		key = gdbm_firstkey(db.dbf);
	} else {
		key = *cursor;
		value = gdbm_fetch(db.dbf, key);
		if (!value.dptr)
			rc = -1;
		free(value.dptr);
	}
	*cursor = (datum){ NULL, 0 };
	while (rc == 0 && key.dptr) {
		if (b->n >= EXPIRE_MAX_KEYS || elapsed_ms(&start) >= SLICE_MS) {
			*cursor = key;
			key.dptr = NULL;
			break;
		}
		value = gdbm_fetch(db.dbf, key);
		if (value.dptr && expired(key, value, now)
		    && batch_add(b, key) != 0)
			rc = -1;
		free(value.dptr);
		(*visited)++;
		next = gdbm_nextkey(db.dbf, key);
		free(key.dptr);
		key = next;
	}
	free(key.dptr);
	if (rc == 0 && !cursor->dptr && gdbm_errno != GDBM_ITEM_NOT_FOUND
	    && gdbm_errno != GDBM_NO_ERROR)
		rc = -1;
	if (rc != 0) {
		snprintf(expire_why, sizeof(expire_why), "%s",
			 gdbm_errno == GDBM_ITEM_NOT_FOUND
			 ? "its place vanished: the file changed under it"
			 : gdbm_strerror(gdbm_errno));
		note_damage(&db);	/* a damaged bucket: repair it */
	}
	db_close(&db);
	return rc;
}

/* expire_delete - delete the batch's keys that are still expired (a
 * request may have refreshed one since the scan), in slices of at most
 * SLICE_MS under the writer lock. -1 on a fault. */
static int expire_delete(struct batch *b, long long now, size_t *deleted)
{
	struct timespec deadline, start;
	struct db db;
	datum value;
	size_t i = 0;

	while (i < b->n) {
		deadline = deadline_in(MAINT_LOCK_WAIT);
		if (db_open(&db, 1, &deadline) != DB_OK)
			return -1;
		start = now_mono();
		for (; i < b->n && elapsed_ms(&start) < SLICE_MS; i++) {
			value = gdbm_fetch(db.dbf, b->key[i]);
			if (value.dptr && expired(b->key[i], value, now)
			    && gdbm_delete(db.dbf, b->key[i]) == 0)
				(*deleted)++;
			free(value.dptr);
		}
		if (db_close(&db) != 0)
			return -1;
		if (i < b->n)
			pause_ms(SLICE_PAUSE_MS);
	}
	return 0;
}

/* A pass reorganizes the file when the records left are at most
 * 1/REORG_RATIO of the most it has held since it was last reorganized
 * (the note "peak", which each pass raises), and at least REORG_MIN
 * records' room is free: GDBM reuses freed room for new records, so a
 * file whose records come and go at the same pace never needs it, but
 * after a flood has expired most of the file is empty for good.
 * gdbm_reorganize copies the live records into a new file (synced, same
 * owner and mode, locked) and renames it over the old one; a request
 * that waited on the old file's lock finds the new one by db_open's
 * inode check. */
#define REORG_RATIO	2
#define REORG_MIN	1000

/* The copy holds the exclusive lock throughout, about 2 us a record on
 * the test machine (50,000: 80 ms; 1,000,000: 2 s). The daily pass, which
 * requests may be waiting on, reorganizes files of at most this many
 * records and logs what to run for a bigger one; `greylistd expire`, run
 * by hand at a quiet time, reorganizes at any size. */
#define REORG_AUTO_MAX	50000

/* gdbm_copy_cleanup - remove what a failed gdbm_reorganize left: GDBM
 * copies into "<file>.XXXXXX" (mkstemp) and keeps the copy when copying
 * fails (seen with a full disk). Only files of that name, regular, ours
 * and modified since `since` are removed. */
static void gdbm_copy_cleanup(time_t since)
{
	const char *slash = strrchr(cfg.db_path, '/');
	const char *base = slash ? slash + 1 : cfg.db_path;
	size_t dlen = (size_t)(base - cfg.db_path), blen = strlen(base), i;
	char path[PATH_MAX];
	struct dirent *e;
	struct stat st;
	DIR *d;

	/* path: the directory with its slash, then each name in turn */
	if (dlen + blen + 8 > sizeof(path))
		return;
	memcpy(path, cfg.db_path, dlen);
	path[dlen] = '\0';
	if (!(d = opendir(dlen ? path : ".")))
		return;
	/* greylistd has one thread, so readdir is safe; cppcheck's advice,
	 * readdir_r, is deprecated in glibc and POSIX */
	/* cppcheck-suppress readdirCalled */
	while ((e = readdir(d))) {
		if (strlen(e->d_name) != blen + 7
		    || strncmp(e->d_name, base, blen) != 0
		    || e->d_name[blen] != '.')
			continue;
		for (i = blen + 1; i < blen + 7; i++)
			if (!isalnum((unsigned char)e->d_name[i]))
				break;
		if (i < blen + 7)
			continue;
		memcpy(path + dlen, e->d_name, blen + 8);
		if (lstat(path, &st) == 0 && S_ISREG(st.st_mode)
		    && st.st_uid == geteuid() && st.st_mtime >= since
		    && unlink(path) == 0)
			msg_info("removed %s, a copy left by the failed"
				 " reorganization", path);
	}
	closedir(d);
}

/* Room asked for a reorganized copy beyond its share of the file. */
#define COPY_MARGIN	(64 << 10)

/* room_for_copy - the file system has room for a copy of the live
 * records: their share of the file, estimated as live/peak of its size,
 * and a margin. A wrong guess costs a failed copy, never a record. */
static int room_for_copy(int fd, const struct stat *st, size_t live,
			 long long peak)
{
	unsigned long long need;
	struct statvfs v;

	need = (unsigned long long)st->st_size / (unsigned long long)peak
		* live + COPY_MARGIN;
	return fstatvfs(fd, &v) == 0
		&& (unsigned long long)v.f_bavail * v.f_frsize > need;
}

/* reorganize - after a whole expiry pass that saw `seen` records and
 * left `live`: raise the peak, and reorganize when it pays. `out`: the
 * operator command's stdout, which also hears of it, and allows any size;
 * NULL in the daily pass. -1 on a fault. */
static int reorganize(size_t seen, size_t live, FILE *out)
{
	static char key[] = "M\npeak";
	struct timespec deadline = deadline_in(MAINT_LOCK_WAIT);
	struct timespec start;
	struct stat before, after;
	long long peak = meta_get(key, &deadline);
	time_t since;
	struct db db;
	int rc;

	if ((long long)seen > peak && seen >= REORG_MIN) {
		peak = (long long)seen;
		if (meta_put(key, peak, &deadline) != 0)
			return -1;
	}
	if (peak < (long long)live * REORG_RATIO
	    || peak - (long long)live < REORG_MIN)
		return 0;
	if (!out && live > REORG_AUTO_MAX) {
		msg_info("%s holds %zu records, room for %lld: to shrink it,"
			 " run `greylistd expire` at a quiet time (requests"
			 " wait for it, about 2 s a million records)",
			 cfg.db_path, live, peak);
		return 0;
	}
	if (db_open(&db, 1, &deadline) != DB_OK) {
		db_close(&db);
		return -1;
	}
	start = now_mono();
	since = time(NULL);
	if (fstat(gdbm_fdesc(db.dbf), &before) != 0
	    || !room_for_copy(gdbm_fdesc(db.dbf), &before, live, peak)) {
		msg_warn("not reorganizing %s: no room for a copy of it",
			 cfg.db_path);
		db_close(&db);
		return 0;
	}
	errno = 0;
	rc = gdbm_reorganize(db.dbf);
	if (rc != 0) {
		/* GDBM may have reset its error on the way out: say errno's */
		msg_warn("reorganizing %s failed (%s); the file is kept as it"
			 " was", cfg.db_path, gdbm_errno != GDBM_NO_ERROR
			 ? gdbm_strerror(gdbm_errno)
			 : errno ? strerror(errno) : "no reason given");
		db_close(&db);
		gdbm_copy_cleanup(since);
		return -1;
	}
	if (fstat(gdbm_fdesc(db.dbf), &after) != 0)
		after.st_size = 0;
	/* nothing more through this handle: the new file's lock is held
	 * by GDBM's own descriptor, and closing it lets the waiters in */
	if (db_close(&db) != 0)
		return -1;
	msg_info("reorganized %s: %zu records, %lld KiB -> %lld KiB, %lld ms",
		 cfg.db_path, live, (long long)before.st_size / 1024,
		 (long long)after.st_size / 1024, elapsed_ms(&start));
	if (out)		/* the command's flush_stdout sees errors */
		(void)fprintf(out, "reorganized: %lld KiB -> %lld KiB\n",
			(long long)before.st_size / 1024,
			(long long)after.st_size / 1024);
	return meta_put(key, (long long)live, &deadline);
}

/* expire - delete what has outlived its use. A pass visits every record
 * in slices under the shared lock and collects the expired keys; only
 * then are they deleted, in slices under the writer lock (GDBM's
 * iteration skips keys when the table changes under it). A pause between
 * slices lets waiting requests in. A key moved by another process's
 * insert during the pass may be missed until the next run. */
static int expire(long long now, size_t *visited, size_t *deleted,
		  FILE *out)
{
	struct batch b = { NULL, 0, 0 };
	datum cursor = { NULL, 0 };
	struct timespec start = now_mono();
	size_t seen = 0, deleted_before = 0;
	int rc = 0, pass, full = 0;

	for (pass = 0; pass < 100 && rc == 0; pass++) {
		*visited = 0;
		deleted_before = *deleted;
		do {
			rc = expire_scan(&cursor, &b, now, visited);
			full = b.n >= EXPIRE_MAX_KEYS;
			if (rc == 0 && cursor.dptr && !full)
				pause_ms(SLICE_PAUSE_MS);
		} while (rc == 0 && cursor.dptr && !full);
		free(cursor.dptr);
		cursor = (datum){ NULL, 0 };
		if (pass == 0)
			seen = *visited;
		if (rc == 0)
			rc = expire_delete(&b, now, deleted);
		batch_free(&b);
		if (!full)
			break;		/* a whole pass: done */
	}
	if (rc != 0)
		msg_warn("expiry of %s stopped after %zu records (%s); the"
			 " next run goes on", cfg.db_path, *visited,
			 *expire_why ? expire_why
			 : "the database changed too much under it");
	msg_info("expiry of %s: %zu records seen, %zu deleted, %lld ms",
		 cfg.db_path, *visited, *deleted, elapsed_ms(&start));
	if (out)
		(void)fprintf(out, "%zu records seen, %zu deleted\n", *visited,
			*deleted);
	/* the last pass was whole: it saw every record left, and deleted
	 * some of them */
	if (rc == 0 && !full
	    && reorganize(seen, *visited - (*deleted - deleted_before), out) < 0)
		rc = -1;
	return rc;
}

/* expire_due - claim today's expiry: true when the last one began
 * EXPIRE_INTERVAL ago or more (or never), and notes this one's start */
static int expire_due(long long now)
{
	static char key[] = "M\nexpire";
	struct timespec deadline = deadline_in(MAINT_LOCK_WAIT);
	long long last;
	struct db db;
	datum d = { NULL, 0 };
	int due = 0;

	if (db_open(&db, 1, &deadline) != DB_OK)
		return 0;
	if (fetch(&db, (datum){ key, (int)sizeof(key) - 1 }, &d) == 0) {
		due = !d.dptr || record_decode(d, &last, 1) != 0
			|| now - last >= EXPIRE_INTERVAL || last > now;
		if (due && put(&db, (datum){ key, (int)sizeof(key) - 1 },
			       &now, 1) != 0)
			due = 0;
	}
	free(d.dptr);
	if (db_close(&db) != 0)
		due = 0;
	return due;
}

/* maintenance - run pending work in a child, so that this connection's
 * next request is not kept waiting; the child closes the connection */
static void maintenance(const struct conn *c)
{
	pid_t pid;
	int fd;

	static int children;

	while (children > 0 && waitpid(-1, NULL, WNOHANG) > 0)
		children--;
	if (!pending.repair && !pending.wl_report && !pending.expire)
		return;
	pid = fork();
	if (pid < 0)
		msg_warn("cannot start maintenance: %m");
	if (pid != 0) {
		children += pid > 0;
		memset(&pending, 0, sizeof(pending));
		return;
	}
	my_pid = (long)getpid();
	if (c->in > 2)
		close(c->in);
	if (c->out > 2 && c->out != c->in)
		close(c->out);
	fd = open("/dev/null", O_RDWR);
	if (fd < 0 || dup2(fd, 0) < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
		_exit(1);
	if (fd > 2)
		close(fd);
	if (pending.repair)
		db_repair(pending.repair_ino);
	if (pending.wl_report)
		wl_report();
	if (pending.expire && expire_due((long long)time(NULL))) {
		size_t seen = 0, deleted = 0;

		if (expire((long long)time(NULL), &seen, &deleted, NULL) != 0
		    && pending.repair)
			db_repair(pending.repair_ino);	/* found damaged */
	}
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
		maintenance(&c);
		if (cfg.exim)
			return 0;
	}
}

/*
 * Operator commands: stats, dump, load, expire. They print to stdout and
 * stderr (they are run by hand, never as the policy service).
 */

/* op_error - an operator command's complaint, to stderr */
__attribute__((format(printf, 1, 2)))
static void op_error(const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	(void)fprintf(stderr, "greylistd: %s\n", msg);
}

/* flush_stdout - 0 when everything printed reached its place, else 1
 * (a full disk, a closed pipe), which the command's exit status says */
static int flush_stdout(void)
{
	return fflush(stdout) == 0 && !ferror(stdout) ? 0 : 1;
}

/* copy_fd - copy a whole file; 0 or -1 */
static int copy_fd(int from, int to)
{
	char buf[65536];
	ssize_t n, w;

	for (;;) {
		n = copy_file_range(from, NULL, to, NULL, 1 << 30, 0);
		if (n == 0)
			return 0;
		if (n < 0)
			break;
	}
	if (errno != EXDEV && errno != EINVAL && errno != ENOSYS
	    && errno != EOPNOTSUPP)
		return -1;
	while ((n = read(from, buf, sizeof(buf))) > 0)
		for (w = 0; w < n; ) {
			ssize_t k = write(to, buf + w, (size_t)(n - w));

			if (k < 0)
				return -1;
			w += k;
		}
	return n < 0 ? -1 : 0;
}

/* tmpfile_near - an unnamed file (gone when closed) in the database's
 * directory (near: the copy is fast), or, when that fails or "far" is
 * set, in $TMPDIR or /tmp */
static int tmpfile_near(const char *path, int far)
{
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/'), *tmp = getenv("TMPDIR");
	int fd = -1;

	if (far) {
		/* straight to $TMPDIR */
	} else if (slash && (size_t)(slash - path) < sizeof(dir)) {
		memcpy(dir, path, (size_t)(slash - path));
		dir[slash - path] = 0;
		fd = open(*dir ? dir : "/", O_TMPFILE | O_RDWR | O_CLOEXEC,
			  0600);
	} else {
		fd = open(".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	}
	if (fd < 0)
		fd = open(tmp && *tmp ? tmp : "/tmp",
			  O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	return fd;
}

/* copy_to_tmp - a copy of the locked file in an unnamed temporary file,
 * next to it, or in $TMPDIR when its disk is full (an admin looks at the
 * database exactly then); the copy's descriptor, at offset 0, or -1 */
static int copy_to_tmp(int src)
{
	int far, dst, err;

	for (far = 0; far < 2; far++) {
		if (lseek(src, 0, SEEK_SET) != 0)
			return -1;
		if ((dst = tmpfile_near(cfg.db_path, far)) < 0)
			continue;
		if (copy_fd(src, dst) == 0 && lseek(dst, 0, SEEK_SET) == 0)
			return dst;
		err = errno;
		close(dst);
		errno = err;
		if (err != ENOSPC && err != EDQUOT)
			return -1;
	}
	return -1;
}

/* snapshot - a private copy of the database, taken under the shared lock
 * (about 50 ms for a million records), so that long reads hold no lock
 * and see one consistent state. NULL, with a message, if there is none;
 * *absent when the database does not exist yet. */
static GDBM_FILE snapshot(int *absent)
{
	struct timespec deadline = deadline_in(MAINT_LOCK_WAIT);
	int src = -1, dst, attempt;
	GDBM_FILE dbf;
	struct stat st;

	*absent = 0;
	for (attempt = 0; attempt < DB_REOPEN_TRIES; attempt++) {
		src = open(cfg.db_path, O_RDONLY | O_CLOEXEC);
		if (src < 0 || lock_wait(src, LOCK_SH, &deadline) != 0
		    || same_file(src, &st))
			break;
		close(src);
		src = -1;
	}
	if (src < 0 || fstat(src, &st) != 0 || st.st_size == 0) {
		*absent = src >= 0 || errno == ENOENT;
		if (!*absent)
			op_error("%s: %s", cfg.db_path,
				strerror(errno));
		if (src >= 0)
			close(src);
		return NULL;
	}
	dst = copy_to_tmp(src);
	if (dst < 0) {
		op_error("copying %s: %s", cfg.db_path, strerror(errno));
		close(src);
		return NULL;
	}
	close(src);
	dbf = gdbm_fd_open(dst, cfg.db_path, 0, GDBM_READER | GDBM_NOLOCK
			   | GDBM_NOMMAP | GDBM_CLOEXEC | GDBM_CLOERROR, NULL);
	if (!dbf)
		op_error("%s: %s", cfg.db_path,
			gdbm_strerror(gdbm_errno));
	return dbf;
}

/* A record taken apart: its kind, numbers and key parts. */
struct rec {
	char kind;			/* 'T', 'C', 'M'; 'X' any other shape */
	long long f[T_FIELDS];
	int nf;
	const char *part[3];
	size_t len[3];
	int nparts;
};

/* The record kinds: numbers in the value, parts in the key (a digest
 * with --privacy is one part). */
static const struct {
	char kind;
	int nf;
	int nparts;
} kinds[] = { { 'T', T_FIELDS, 3 }, { 'C', C_FIELDS, 1 }, { 'M', 1, 1 } };

/* rec_split - take a record apart; kind 'X' when it fits no shape */
static void rec_split(datum key, datum value, struct rec *r)
{
	const char *p = key.dptr, *end = key.dptr + key.dsize, *nl;
	long long scratch[T_FIELDS];
	size_t i;

	memset(r, 0, sizeof(*r));
	r->kind = 'X';
	if (key.dsize < 3 || p[1] != '\n' || memchr(p, 0, (size_t)key.dsize))
		return;			/* a NUL: only X shows it */
	for (i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
		if (kinds[i].kind == p[0])
			break;
	if (i == sizeof(kinds) / sizeof(kinds[0])
	    || record_decode(value, r->f, kinds[i].nf) != 0
	    || (p[0] == 'T' && !triplet_record(value, scratch)))
		return;
	for (p += 2;; p = nl + 1) {
		if (r->nparts == 3)
			return;		/* too many parts */
		nl = memchr(p, '\n', (size_t)(end - p));
		r->part[r->nparts] = p;
		r->len[r->nparts++] = (size_t)((nl ? nl : end) - p);
		if (!nl)
			break;
	}
	if (r->nparts != kinds[i].nparts && r->nparts != 1)
		return;
	r->kind = kinds[i].kind;
	r->nf = kinds[i].nf;
}

/* print_escaped - a dump field: "<>" when empty; "\", "<", ">" and bytes
 * outside "!".."~" as \xHH, so that fields never hold a space */
static void print_escaped(const char *p, size_t len)
{
	size_t i;

	/* Errors of these writes are seen once, by flush_stdout(). */
	if (len == 0)
		(void)fputs(" <>", stdout);
	else
		(void)putchar(' ');
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)p[i];

		if (c < '!' || c > '~' || c == '\\' || c == '<' || c == '>')
			printf("\\x%02x", c);
		else
			putchar(c);
	}
}

/* dump_record - one record as one line (see the dump format above) */
static void dump_record(datum key, datum value)
{
	struct rec r;
	int i;

	rec_split(key, value, &r);
	putchar(r.kind);
	if (r.kind == 'X') {
		print_escaped(key.dptr, (size_t)key.dsize);
		print_escaped(value.dptr, (size_t)value.dsize);
	}
	for (i = 0; i < r.nf; i++)
		printf(" %lld", r.f[i]);
	for (i = 0; i < r.nparts && r.kind != 'X'; i++)
		print_escaped(r.part[i], r.len[i]);
	putchar('\n');
}

/* for_each - call fn on every record of a snapshot; the count */
static size_t for_each(GDBM_FILE dbf, void (*fn)(datum, datum, void *),
		       void *arg)
{
	datum key = gdbm_firstkey(dbf), next, value;
	size_t n = 0;

	while (key.dptr) {
		value = gdbm_fetch(dbf, key);
		if (value.dptr) {
			fn(key, value, arg);
			n++;
		}
		free(value.dptr);
		next = gdbm_nextkey(dbf, key);
		free(key.dptr);
		key = next;
	}
	return n;
}

struct stats {
	size_t n[128];			/* records of each kind */
	size_t pending, passed, awl;
	long long oldest, newest, last_expiry;
};

/* count_record - add one record to the figures */
static void count_record(datum key, datum value, void *arg)
{
	struct stats *st = arg;
	struct rec r;

	rec_split(key, value, &r);
	st->n[(unsigned char)r.kind]++;
	if (r.kind == 'T') {
		st->pending += r.f[T_PASSED] == 0;
		st->passed += r.f[T_PASSED] != 0;
		if (!st->oldest || r.f[T_FIRST] < st->oldest)
			st->oldest = r.f[T_FIRST];
	}
	if (r.kind == 'C')
		st->awl += cfg.awl && r.f[C_COUNT] >= cfg.awl;
	if ((r.kind == 'T' || r.kind == 'C')
	    && r.f[r.kind == 'T' ? T_LAST : C_LAST] > st->newest)
		st->newest = r.f[r.kind == 'T' ? T_LAST : C_LAST];
	if (r.kind == 'M' && r.len[0] == 6 && memcmp(r.part[0], "expire", 6) == 0)
		st->last_expiry = r.f[0];
}

/* print_time - "key=2026-11-29T11:03:36Z", or "key=none" */
static void print_time(const char *name, long long t)
{
	char buf[32];

	printf("%s=%s\n", name, t <= 0 ? "none"
	       : format_time(buf, sizeof(buf), TS_UTC, (time_t)t));
}

/* cmd_stats - the database's figures, one "key=value" per line */
static int cmd_stats(void)
{
	struct stats st;
	struct stat sb;
	int absent;
	GDBM_FILE dbf = snapshot(&absent);
	size_t total;

	if (!dbf && !absent)
		return 1;
	memset(&st, 0, sizeof(st));
	total = dbf ? for_each(dbf, count_record, &st) : 0;
	printf("file=%s\n", cfg.db_path);
	printf("file_size=%lld\n", stat(cfg.db_path, &sb) == 0
	       ? (long long)sb.st_size : 0LL);
	printf("records=%zu\n", total);
	printf("triplets=%zu\n", st.n['T']);
	printf("pending=%zu\n", st.pending);
	printf("passed=%zu\n", st.passed);
	printf("clients=%zu\n", st.n['C']);
	printf("auto_whitelisted=%zu\n", st.awl);
	printf("unknown=%zu\n", st.n['X']);
	print_time("oldest", st.oldest);
	print_time("newest", st.newest);
	print_time("last_expiry", st.last_expiry);
	if (dbf)
		gdbm_close(dbf);
	return flush_stdout();
}

/* dump_one - for_each's adapter to dump_record */
static void dump_one(datum key, datum value, void *arg)
{
	(void)arg;
	dump_record(key, value);
}

/* cmd_dump - every record as one line of text */
static int cmd_dump(void)
{
	int absent;
	GDBM_FILE dbf = snapshot(&absent);

	if (!dbf && !absent)
		return 1;
	printf("# greylistd dump 1: T FIRST LAST PASSED NET SENDER RECIPIENT,"
	       " C COUNT LAST CLIENT, M VALUE NAME, X KEY VALUE\n");
	if (dbf) {
		for_each(dbf, dump_one, NULL);
		gdbm_close(dbf);
	}
	return flush_stdout();
}

/* unescape - a dump field back into bytes ("<>" is empty); -1 if bad */
static int unescape(const char *s, char *out, size_t size, size_t *len)
{
	size_t o = 0;
	unsigned hi, lo;

	if (strcmp(s, "<>") == 0) {
		out[0] = 0;
		*len = 0;
		return 0;
	}
	for (; *s; s++) {
		if (o + 1 >= size)
			return -1;
		if (*s != '\\') {
			out[o++] = *s;
			continue;
		}
		if (s[1] != 'x' || !isxdigit((unsigned char)s[2])
		    || !isxdigit((unsigned char)s[3]))
			return -1;
		hi = (unsigned)(isdigit((unsigned char)s[2]) ? s[2] - '0'
				: (s[2] | 32) - 'a' + 10);
		lo = (unsigned)(isdigit((unsigned char)s[3]) ? s[3] - '0'
				: (s[3] | 32) - 'a' + 10);
		out[o++] = (char)(hi << 4 | lo);
		s += 3;
	}
	out[o] = 0;
	*len = o;
	return 0;
}

/* A dump line: a kind, up to three numbers, up to three escaped parts,
 * each up to a Postfix value escaped fourfold. */
#define MAX_DUMP_LINE	(3 * 4 * MAX_LINE + 256)

/* load_line - one dump line into a key and a value; NULL, or what is
 * wrong with it */
static const char *load_line(char *line, char *key, size_t ksize, datum *k,
			     char *val, size_t vsize, datum *v)
{
	static char part[3][MAX_LINE * 4 + 1];
	const char *parts[3], *word[8] = { NULL };
	long long f[T_FIELDS] = { 0 }, scratch[T_FIELDS];
	size_t nw = 0, i, j, plen;
	char *save = NULL, *w;
	char *end;

	for (w = strtok_r(line, " ", &save); w; w = strtok_r(NULL, " ", &save))
		if (nw < 8)
			word[nw++] = w;
		else
			return "too many fields";
	if (nw == 0 || strlen(word[0]) != 1)
		return "not a record";
	if (word[0][0] == 'X') {
		if (nw != 3 || unescape(word[1], key, ksize, &plen) != 0
		    || plen == 0)
			return "bad X record";
		*k = (datum){ key, (int)plen };
		if (unescape(word[2], val, vsize, &plen) != 0)
			return "bad X record";
		*v = (datum){ val, (int)plen };
		return NULL;
	}
	for (i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
		if (kinds[i].kind == word[0][0])
			break;
	if (i == sizeof(kinds) / sizeof(kinds[0]))
		return "unknown record kind";
	if (nw != 1 + (size_t)kinds[i].nf + (size_t)kinds[i].nparts
	    && nw != 2 + (size_t)kinds[i].nf)
		return "wrong number of fields";
	for (j = 0; j < (size_t)kinds[i].nf && 1 + j < nw; j++) {
		errno = 0;
		f[j] = strtoll(word[1 + j], &end, 10);
		if (errno || *end || f[j] < 0 || f[j] > MAX_TIME
		    || !isdigit((unsigned char)word[1 + j][0]))
			return "bad number";
	}
	for (j = 0; j + 1 + (size_t)kinds[i].nf < nw; j++) {
		if (unescape(word[1 + (size_t)kinds[i].nf + j], part[j],
			     sizeof(part[j]), &plen) != 0
		    || memchr(part[j], '\n', plen) || strlen(part[j]) != plen)
			return "bad escape, newline or NUL in a field";
		parts[j] = part[j];
	}
	/* With --privacy, plain keys are hashed; digests stay as they are. */
	if (record_key(word[0][0], parts, j, cfg.privacy && word[0][0] != 'M'
		       && !(j == 1 && is_digest(parts[0])), key, ksize, k) != 0)
		return "too long";
	*v = record_encode(val, vsize, f, kinds[i].nf);
	if (word[0][0] == 'T' && !triplet_record(*v, scratch))
		return "times out of order";
	return NULL;
}

/* Records that load reads with the database closed, then writes under
 * the writer lock: input that pauses (a pipe) never holds the lock. */
#define LOAD_BATCH	4000

/* load_read - parse up to LOAD_BATCH lines of stdin into keys and values;
 * 1 at the end of the input */
static int load_read(struct batch *keys, struct batch *vals,
		     unsigned long *n, size_t *bad)
{
	static char line[MAX_DUMP_LINE + 2], key[MAX_KEY];
	static char val[MAX_RECORD * 4 + 1];
	const char *why;
	size_t len;
	datum k, v;
	int c;

	while (keys->n < LOAD_BATCH) {
		if (!fgets(line, sizeof(line), stdin))
			return 1;
		++*n;
		len = strlen(line);
		if (len > 0 && line[len - 1] == '\n') {
			line[--len] = 0;
		} else if (!feof(stdin)) {
			op_error("stdin:%lu: line too long", *n);
			++*bad;
			while ((c = getchar()) != EOF && c != '\n')
				;
			continue;
		}
		if (line[0] == '#' || line[0] == 0)
			continue;
		why = load_line(line, key, sizeof(key), &k, val, sizeof(val), &v);
		if (why) {
			op_error("stdin:%lu: %s", *n, why);
			++*bad;
		} else if (batch_add(keys, k) != 0 || batch_add(vals, v) != 0) {
			op_error("out of memory");
			return -1;
		}
	}
	return 0;
}

/* load_write - store a batch, in slices of at most SLICE_MS under the
 * writer lock; -1 on a fault */
static int load_write(const struct batch *keys, const struct batch *vals)
{
	struct timespec deadline, start;
	struct db db;
	size_t i = 0;

	while (i < keys->n) {
		deadline = deadline_in(MAINT_LOCK_WAIT);
		if (db_open(&db, 1, &deadline) != DB_OK) {
			op_error("%s", db.why);
			return -1;
		}
		start = now_mono();
		for (; i < keys->n && elapsed_ms(&start) < SLICE_MS; i++)
			if (gdbm_store(db.dbf, keys->key[i], vals->key[i],
				       GDBM_REPLACE) != 0) {
				op_error("writing %s: %s", cfg.db_path,
					 gdbm_strerror(gdbm_errno));
				db_close(&db);
				return -1;
			}
		if (db_close(&db) != 0) {
			op_error("%s", db.why);
			return -1;
		}
		if (i < keys->n)
			pause_ms(SLICE_PAUSE_MS);
	}
	return 0;
}

/* cmd_load - read a dump from stdin into the database (new or not); a
 * record replaces one with the same key. Bad lines are reported and
 * skipped. A serving database keeps answering meanwhile. */
static int cmd_load(void)
{
	struct batch keys = { NULL, 0, 0 }, vals = { NULL, 0, 0 };
	unsigned long n = 0;
	size_t loaded = 0, bad = 0;
	int end = 0, rc = 0;

	while (!end && rc == 0) {
		end = load_read(&keys, &vals, &n, &bad);
		rc = end < 0 || load_write(&keys, &vals) != 0 ? -1 : 0;
		loaded += rc == 0 ? keys.n : 0;
		batch_free(&keys);
		batch_free(&vals);
	}
	if (rc != 0)
		return 1;
	printf("%zu records loaded, %zu bad lines\n", loaded, bad);
	return bad || flush_stdout() ? 1 : 0;
}

/* cmd_expire - today's expiry, now */
static int cmd_expire(void)
{
	static char key[] = "M\nexpire";
	struct timespec deadline = deadline_in(MAINT_LOCK_WAIT);
	long long now = (long long)time(NULL);
	size_t seen = 0, deleted = 0;
	int rc;

	rc = expire(now, &seen, &deleted, stdout);
	meta_put(key, now, &deadline);
	return rc || flush_stdout() ? 1 : 0;
}

/*
 * `greylistd report`: which mail is greylisting costing? It reads
 * Postfix's greylisting rejects ("reject: RCPT from NAME[ADDR]: 4NN ...
 * Greylisted...; from=<S> to=<R>") and greylistd's own decision lines,
 * from log files, stdin ("-") or the systemd journal, and lists the
 * triplets that were deferred and did not try again within --window
 * (--delay by default: 300 s, as postgreyreport): mail the sender gave up
 * on. The database, when readable, confirms passes the log missed.
 */

/* One deferred (or passed) triplet seen in the logs. */
struct seen {
	struct seen *next;		/* hash chain */
	char *key;			/* net \n sender \n recipient, normalised */
	char *addr, *name, *sender, *recipient;	/* as logged, for the report */
	long long first, last, passed;	/* first defer, last try, first pass */
	unsigned defers[2];		/* counted in greylistd's, Postfix's lines */
};

#ifndef SEEN_BUCKETS			/* a fuzz build makes it small */
#define SEEN_BUCKETS	65536
#endif

static struct {
	struct seen *bucket[SEEN_BUCKETS];
	size_t n;
	long long end;			/* the last time in the input */
	const char *marker;		/* what marks Postfix's greylisting lines */
	uint64_t seed;			/* of the hash, see seen_get */
	int seeded;
} rep;

/* An event of the report's input. */
enum event { EV_DEFER_GL, EV_DEFER_PF, EV_PASS };

/* seen_get - the triplet's entry, made on first sight; NULL without memory */
static struct seen *seen_get(const char *key, const char *addr,
			     const char *name, const char *sender,
			     const char *rcpt)
{
	uint64_t h;
	const char *p;
	struct seen *s;

	/* Senders choose what is hashed: a secret seed keeps them from
	 * piling their triplets into one chain. */
	if (!rep.seeded && getrandom(&rep.seed, sizeof(rep.seed), 0) >= 0)
		rep.seeded = 1;
	h = 14695981039346656037ULL ^ rep.seed;
	for (p = key; *p; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ULL;
	for (s = rep.bucket[h % SEEN_BUCKETS]; s; s = s->next)
		if (strcmp(s->key, key) == 0)
			return s;
	s = calloc(1, sizeof(*s));
	if (!s || !(s->key = strdup(key)) || !(s->addr = strdup(addr))
	    || !(s->name = strdup(name)) || !(s->sender = strdup(sender))
	    || !(s->recipient = strdup(rcpt))) {
		if (s) {
			free(s->key);
			free(s->addr);
			free(s->name);
			free(s->sender);
		}
		free(s);
		return NULL;		/* the report says memory ran out */
	}
	s->next = rep.bucket[h % SEEN_BUCKETS];
	rep.bucket[h % SEEN_BUCKETS] = s;
	rep.n++;
	return s;
}

/* note_event - count one defer or pass of a triplet at time t */
static int note_event(enum event ev, long long t, const char *addr,
		      const char *name, const char *sender, const char *rcpt)
{
	static struct triplet tr;
	static char key[MAX_KEY];
	const char *parts[] = { tr.net, tr.sender, tr.recipient };
	struct seen *s;
	datum k;

	if (client_net(addr, &tr) != 0 || strlen(sender) > MAX_LINE
	    || strlen(rcpt) > MAX_LINE)
		return 0;		/* not a triplet greylistd keeps */
	normalise_sender(tr.sender, sender);
	lower(tr.recipient, rcpt);
	if (record_key('T', parts, 3, 0, key, sizeof(key), &k) != 0)
		return 0;
	if (!(s = seen_get(key + 2, addr, name, sender, rcpt)))
		return -1;
	if (ev == EV_PASS) {
		if (!s->passed || t < s->passed)
			s->passed = t;
	} else {
		s->defers[ev == EV_DEFER_PF]++;
		if (!s->first || t < s->first)
			s->first = t;
	}
	if (t > s->last)
		s->last = t;
	return 0;
}

/* month_of - 0..11 for "Jan".."Dec", -1 otherwise */
static int month_of(const char *p)
{
	static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
	int i;

	for (i = 0; i < 12; i++)
		if (memcmp(p, months + 3 * (size_t)i, 3) == 0)
			return i;
	return -1;
}

/* parse_stamp - the time at the start of a syslog line: ISO 8601 with a
 * zone ("2026-11-29T11:03:36.123+00:00", greylistd's --log-file, rsyslog's
 * high-precision format) or the traditional "Nov 29 11:03:36" (local
 * time, this year unless that is in the future). The rest of the line,
 * or NULL. */
static const char *parse_stamp(const char *line, long long *t)
{
	struct tm tm, here;
	const char *p;
	time_t now = time(NULL);
	long off;
	int sign;

	memset(&tm, 0, sizeof(tm));
	if ((p = strptime(line, "%Y-%m-%dT%H:%M:%S", &tm))) {
		while (*p == '.' || isdigit((unsigned char)*p))
			p++;
		sign = *p == '-' ? -1 : 1;
		if (*p == 'Z') {
			off = 0;
			p++;
		} else if ((*p == '+' || *p == '-')
			   && isdigit((unsigned char)p[1])
			   && isdigit((unsigned char)p[2])) {
			off = 60L * ((p[1] - '0') * 10 + (p[2] - '0'));
			p += 3;
			if (*p == ':' && isdigit((unsigned char)p[1]))
				p++;
			if (isdigit((unsigned char)p[0])
			    && isdigit((unsigned char)p[1])) {
				off += (p[0] - '0') * 10 + (p[1] - '0');
				p += 2;
			}
		} else {
			return NULL;
		}
		*t = (long long)timegm(&tm) - sign * off * 60;
		return p;
	}
	if (strlen(line) < 16 || month_of(line) < 0 || line[3] != ' ')
		return NULL;
	if (!(p = strptime(line + 4, "%d %H:%M:%S", &tm)))
		return NULL;
	tm.tm_mon = month_of(line);
	if (!localtime_r(&now, &here))
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

/* unlog - undo log_value's \xHH escapes in place */
static char *unlog(char *s)
{
	char *o = s, *p;

	for (p = s; *p; p++) {
		if (p[0] == '\\' && p[1] == 'x' && isxdigit((unsigned char)p[2])
		    && isxdigit((unsigned char)p[3])) {
			char hex[3] = { p[2], p[3], 0 };

			*o++ = (char)strtol(hex, NULL, 16);
			p += 3;
		} else {
			*o++ = *p;
		}
	}
	*o = 0;
	return s;
}

/* field - the value of ", name=" in a greylistd decision line, copied */
static const char *field(const char *line, const char *name, char *buf,
			 size_t size)
{
	char pat[32];
	const char *p, *end;
	size_t len;

	snprintf(pat, sizeof(pat), ", %s=", name);
	if (!(p = strstr(line, pat)))
		return NULL;
	p += strlen(pat);
	end = strstr(p, ", ");
	len = end ? (size_t)(end - p) : strlen(p);
	if (len >= size)
		return NULL;
	memcpy(buf, p, len);
	buf[len] = 0;
	return unlog(buf);
}

/* report_greylistd - a greylistd decision line (after "greylistd[PID]: ") */
static int report_greylistd(const char *msg, long long t)
{
	static char addr[64], name[MAX_LINE], sender[MAX_LINE], rcpt[MAX_LINE];
	const char *a;
	enum event ev;

	if ((a = strstr(msg, "action=greylist, reason=")))
		ev = EV_DEFER_GL;
	else if ((a = strstr(msg, "action=pass, reason=triplet found")))
		ev = EV_PASS;
	else
		return 0;
	if (!field(a, "client_address", addr, sizeof(addr))
	    || !field(a, "recipient", rcpt, sizeof(rcpt)))
		return 0;
	if (!field(a, "client_name", name, sizeof(name)))
		name[0] = 0;
	if (!field(a, "sender", sender, sizeof(sender)))
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

/* report_postfix - a Postfix reject line: "reject: RCPT from NAME[ADDR]:
 * 4NN ...MARKER...; from=<SENDER> to=<RCPT> ..." */
static int report_postfix(const char *msg, long long t)
{
	static char name[MAX_LINE], addr[64], sender[MAX_LINE], rcpt[MAX_LINE];
	const char *p = strstr(msg, "reject: RCPT from "), *lb, *rb, *f, *to;

	if (!p)
		return 0;
	p += strlen("reject: RCPT from ");
	lb = strchr(p, '[');
	rb = lb ? strstr(lb, "]: ") : NULL;
	if (!copy_span(p, lb, name, sizeof(name))
	    || !copy_span(lb + 1, rb, addr, sizeof(addr)))
		return 0;
	p = rb + 3;
	if (p[0] != '4' || !isdigit((unsigned char)p[1])
	    || !isdigit((unsigned char)p[2]) || p[3] != ' '
	    || !strstr(p, rep.marker))
		return 0;
	f = strstr(p, "; from=<");
	to = f ? strstr(f, "> to=<") : NULL;
	if (!copy_span(f ? f + 8 : NULL, to, sender, sizeof(sender))
	    || !copy_span(to + 6, strchr(to + 6, '>'), rcpt, sizeof(rcpt)))
		return 0;
	return note_event(EV_DEFER_PF, t, addr, strcmp(name, "unknown") == 0
			  ? "" : name, sender, rcpt);
}

/* report_line - one message of the input, at time t, from greylistd or
 * from another program (Postfix) */
static int report_line(int ours, const char *msg, long long t)
{
	if (cfg.since && t < (long long)time(NULL) - cfg.since)
		return 0;
	if (t > rep.end)
		rep.end = t;		/* the logs reach this far */
	return ours ? report_greylistd(msg, t) : report_postfix(msg, t);
}

/* report_file - every line of a log file ("-": stdin). After the time
 * comes "HOST PROGRAM[PID]: MESSAGE" (syslog) or "greylistd[PID]:
 * MESSAGE" (--log-file). */
static int report_file(const char *path)
{
	static char line[4 * MAX_LINE];
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
	const char *rest, *colon, *tag;
	long long t;
	int rc = 0;

	if (!f) {
		op_error("%s: %s", path, strerror(errno));
		return -1;
	}
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
		op_error("%s: %s", path, strerror(errno));
		rc = -1;
	}
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

	if (sd.journal_get_data(j, name, &data, &len) < 0 || len < skip
	    || len - skip >= size)
		return NULL;
	memcpy(buf, (const char *)data + skip, len - skip);
	buf[len - skip] = 0;
	return buf;
}

/* report_journal - the mail facility's messages in the systemd journal;
 * 1 when there is no journal to read */
static int report_journal(void)
{
	static char msg[4 * MAX_LINE];
	char ident[64];
	sd_journal *j = NULL;
	uint64_t usec;
	int rc = 0;

	if ((access("/run/log/journal", F_OK) != 0
	     && access("/var/log/journal", F_OK) != 0)
	    || sd_load() != 0 || sd.journal_open(&j, SD_JOURNAL_LOCAL_ONLY) < 0)
		return 1;
	if (sd.journal_add_match(j, "SYSLOG_FACILITY=2", 0) < 0
	    || (cfg.since && sd.journal_seek_realtime_usec(j,
			(uint64_t)((long long)time(NULL) - cfg.since)
			* 1000000ULL) < 0)) {
		sd.journal_close(j);
		return 1;
	}
	while (rc == 0 && sd.journal_next(j) > 0) {
		if (!journal_field(j, "MESSAGE", msg, sizeof(msg))
		    || sd.journal_get_realtime_usec(j, &usec) < 0)
			continue;
		rc = report_line(journal_field(j, "SYSLOG_IDENTIFIER", ident,
					       sizeof(ident))
				 && strcmp(ident, "greylistd") == 0,
				 msg, (long long)(usec / 1000000));
	}
	sd.journal_close(j);
	if (rep.end < (long long)time(NULL))
		rep.end = (long long)time(NULL);	/* the journal is live */
	return rc < 0 ? -1 : 0;
}

/* confirm_passes - the database knows of passes the logs do not show
 * (rotated away, or logged elsewhere): ask it about each deferred triplet
 * without a pass */
static void confirm_passes(void)
{
	static char key[MAX_KEY + 4];
	long long f[T_FIELDS];
	struct seen *s;
	const char *parts[1];
	GDBM_FILE dbf;
	datum k, v;
	size_t b;
	int absent;

	if (!(dbf = snapshot(&absent)))
		return;
	for (b = 0; b < SEEN_BUCKETS; b++)
		for (s = rep.bucket[b]; s; s = s->next) {
			if (s->passed && s->passed >= s->first)
				continue;
			parts[0] = s->key;
			if (record_key('T', parts, 1, (int)cfg.privacy, key,
				       sizeof(key), &k) != 0)
				continue;
			v = gdbm_fetch(dbf, k);
			if (triplet_record(v, f) && f[T_PASSED]
			    && f[T_PASSED] >= s->first)
				s->passed = f[T_PASSED];
			free(v.dptr);
		}
	gdbm_close(dbf);
}

/* cmp_first - order fatal triplets by their first deferral */
static int cmp_first(const void *a, const void *b)
{
	const struct seen *x = *(struct seen *const *)a;
	const struct seen *y = *(struct seen *const *)b;

	return (x->first > y->first) - (x->first < y->first);
}

/* cmp_str, cmp_count - for --top */
static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

struct tally {
	const char *what;
	size_t n;
};

static int cmp_count(const void *a, const void *b)
{
	const struct tally *x = a, *y = b;

	return x->n != y->n ? (x->n < y->n) - (x->n > y->n)
		: strcmp(x->what, y->what);
}

/* print_top - the N most frequent strings, as "uniq -c | sort -rn" */
static void print_top(const char *title, const char **items, size_t n)
{
	struct tally *t = calloc(n ? n : 1, sizeof(*t));
	size_t i, m = 0;

	if (!t)
		return;
	qsort(items, n, sizeof(*items), cmp_str);
	for (i = 0; i < n; i++) {
		if (m && strcmp(t[m - 1].what, items[i]) == 0)
			t[m - 1].n++;
		else
			t[m++] = (struct tally){ items[i], 1 };
	}
	qsort(t, m, sizeof(*t), cmp_count);
	printf("# top %s\n", title);
	for (i = 0; i < m && i < (size_t)cfg.top; i++)
		printf("%7zu %s\n", t[i].n, t[i].what);
	free(t);
}

/* cmp_ll - for the median */
static int cmp_ll(const void *a, const void *b)
{
	long long x = *(const long long *)a, y = *(const long long *)b;

	return (x > y) - (x < y);
}

/* report_print - the fatal triplets, the tops, and the summary */
static int report_print(void)
{
	struct seen **fatal = calloc(rep.n ? rep.n : 1, sizeof(struct seen *));
	struct seen *s;
	long long *delays = calloc(rep.n ? rep.n : 1, sizeof(*delays));
	const char **nets = calloc(rep.n ? rep.n : 1, sizeof(*nets));
	const char **rcpts = calloc(rep.n ? rep.n : 1, sizeof(*rcpts));
	long long window = cfg.window ? cfg.window : cfg.delay;
	size_t nf = 0, nd = 0, deferred = 0, waiting = 0, b, i;
	char stamp[32];

	if (!fatal || !delays || !nets || !rcpts) {
		free(fatal);
		free(delays);
		free(nets);
		free(rcpts);
		op_error("out of memory");
		return 1;
	}
	for (b = 0; b < SEEN_BUCKETS; b++)
		for (s = rep.bucket[b]; s; s = s->next) {
			if (!s->defers[0] && !s->defers[1])
				continue;	/* only seen passing */
			deferred++;
			if (s->passed && s->passed >= s->first)
				delays[nd++] = s->passed - s->first;
			else if (s->last - s->first < window
				 && rep.end - s->first >= window)
				fatal[nf++] = s;
			else
				waiting++;
		}
	qsort(fatal, nf, sizeof(struct seen *), cmp_first);
	for (i = 0; i < nf; i++) {
		s = fatal[i];
		format_time(stamp, sizeof(stamp), TS_UTC, (time_t)s->first);
		/* fields escaped as in a dump: a crafted log line puts
		 * no control character on the admin's terminal */
		printf("%s %u", stamp, s->defers[0] > s->defers[1]
		       ? s->defers[0] : s->defers[1]);
		print_escaped(s->addr, strlen(s->addr));
		print_escaped(*s->name ? s->name : "unknown",
			      strlen(*s->name ? s->name : "unknown"));
		print_escaped(s->sender, strlen(s->sender));
		print_escaped(s->recipient, strlen(s->recipient));
		(void)putchar('\n');
		nets[i] = s->key;	/* the key starts with the network */
		rcpts[i] = s->recipient;
	}
	if (cfg.top) {
		for (i = 0; i < nf; i++)
			*strchr(fatal[i]->key, '\n') = 0;
		print_top("client networks", nets, nf);
		print_top("recipients", rcpts, nf);
	}
	qsort(delays, nd, sizeof(*delays), cmp_ll);
	printf("# deferred=%zu passed_later=%zu never_retried=%zu pending=%zu"
	       " median_delay=%llds\n", deferred, nd, nf, waiting,
	       nd ? delays[nd / 2] : 0);
	free(fatal);
	free(delays);
	free(nets);
	free(rcpts);
	return flush_stdout();
}

/* cmd_report - read the logs, confirm with the database, print */
static int cmd_report(void)
{
	static char marker[MAX_TEXT + 1];
	int i, rc = 0;

	/* Postfix's line holds the defer text: its part before the first
	 * placeholder marks greylisting, as postgreyreport's --greylist-text */
	snprintf(marker, sizeof(marker), "%s", cfg.greylist_text);
	marker[strcspn(marker, "%")] = 0;
	rep.marker = marker;
	for (i = 0; i < cfg.nfiles && rc == 0; i++)
		rc = report_file(cfg.files[i]);
	if (cfg.nfiles == 0) {
		rc = report_journal();
		if (rc == 1) {
			op_error("no systemd journal to read here: name log"
				 " files, or - for stdin");
			return 1;
		}
	}
	if (rc != 0)
		return 1;
	confirm_passes();
	return report_print();
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
	if (*end) {
		if (o->kind != OPT_DURATION || end[1])
			return -1;
		for (i = 0; i < sizeof(units) / sizeof(units[0]); i++)
			if (*end == units[i].suffix)
				break;
		if (i == sizeof(units) / sizeof(units[0]))
			return -1;
		mult = units[i].seconds;
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
	if (o->kind == OPT_FILES) {
		struct wl_list *l = o->dest;

		if (l->n == MAX_WL_FILES) {
			config_error("--%s: at most %d whitelist files", o->name,
				     MAX_WL_FILES);
			return;
		}
		l->path[l->n] = value;
		l->format[l->n++] = (enum wl_format)o->unit;
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
			if (cfg.nfiles < MAX_FILE_ARGS)
				cfg.files[cfg.nfiles++] = arg;
			else
				config_error("too many files (at most %d)",
					     MAX_FILE_ARGS);
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
		if (!eq && o->dest == &cfg.awl
		    && (i + 1 == argc || strncmp(argv[i + 1], "--", 2) == 0))
			set_option(o, "5");	/* postgrey: a bare one means 5 */
		else if (!eq && o->kind != OPT_FLAG && i + 1 < argc)
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
	if (sd_load() != 0) {
		msg_error("LISTEN_FDS is set, but libsystemd.so.0 cannot be"
			  " loaded to take the socket");
		return -1;
	}
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

	/* Errors of these writes are seen by the caller's flush_stdout(). */
	(void)fprintf(f, "usage: greylistd [COMMAND] [--option=value ...]\n"
		"commands: serve (the default), check, stats, dump, load,"
		" expire, report\n");
	for (i = 0; i < NOPTIONS; i++)
		(void)fprintf(f, "  --%-20s %s\n", options[i].name,
			      options[i].help);
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

/* cmd_check - every whitelist line, each regex compiled; bad lines are
 * printed as FILE:LINE: what is wrong */
static int cmd_check(void)
{
	wl.report = 1;
	wl_check_all(&cfg.whitelists);
	return wl.problems || flush_stdout() ? 1 : 0;
}

/* The commands; serve is the policy service itself. */
static const struct {
	const char *name;
	int (*run)(void);
	int takes_files;
} commands[] = {
	{ "serve", NULL, 0 },
	{ "check", cmd_check, 0 },
	{ "stats", cmd_stats, 0 },
	{ "dump", cmd_dump, 0 },
	{ "load", cmd_load, 0 },
	{ "expire", cmd_expire, 0 },
	{ "report", cmd_report, 1 },
};

int main(int argc, char **argv)
{
	size_t c = 0;
	int in, out, rc;

	my_pid = (long)getpid();
	setup_signals();
	/* Under systemd, log to the journal, when it listens: with no
	 * journald, sd_journal_sendv succeeds and the line would be lost. */
	if (getenv("INVOCATION_ID") || getenv("LISTEN_FDS"))
		use_journal = sd_load() == 0 && getenv("INVOCATION_ID")
			&& access("/run/systemd/journal/socket", W_OK) == 0;
	if (argc > 1 && argv[1][0] != '-') {
		for (c = 0; c < sizeof(commands) / sizeof(commands[0]); c++)
			if (strcmp(argv[1], commands[c].name) == 0)
				break;
		argc--;
		argv++;
	}
	parse_options(argc - 1, argv + 1);
	if (cfg.help || cfg.version) {
		if (cfg.help)
			usage(stdout);
		else
			printf("greylistd %s\n", VERSION);
		return flush_stdout();
	}
	open_log();
	check_config();
	if (c == sizeof(commands) / sizeof(commands[0]))
		config_error("unknown command %.40s", argv[0]);
	else if (cfg.nfiles && !commands[c].takes_files)
		config_error("unexpected argument: %.80s", cfg.files[0]);
	if (config_errors)
		return 64;
	if (commands[c].run)
		return commands[c].run();
	if (connection(&in, &out) != 0)
		return 64;
	quiet_stderr(in);
	rc = serve(in, out);
	/* Under systemd the unit's processes are killed when the main one
	 * exits: let a maintenance child finish first. The connection is
	 * shut down before, so that the client does not wait for it (close
	 * alone would not end it: systemd keeps a copy of the socket). */
	shutdown(in, SHUT_RDWR);		/* systemd holds a copy of it */
	close(in);
	close(out);
	while (wait(NULL) > 0 || errno == EINTR)
		;
	return rc;
}
