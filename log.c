/*
 * log.c - log lines, times, and the libraries loaded on demand
 *
 *	A log line goes to one place: the file --log-file names (one
 *	write(2) per line, so that lines of concurrent processes never
 *	interleave), the systemd journal when running under systemd (with
 *	fields), or syslog (facility mail, ident greylistd). Never to stdout
 *	or stderr while serving: under spawn(8) and inetd both are the client
 *	connection.
 *
 *	Every value that came from the network passes through log_value()
 *	before it is part of a line; every format string is a constant.
 *
 *	libsystemd, libnettle, libpcre2-8 and libhiredis are loaded with
 *	dlopen(3) only when they are needed, not linked: linking makes every
 *	process pay for its relocations at start-up (libsystemd pulls in five
 *	more and doubles a start; nettle adds some 380,000 instructions, and
 *	PCRE2 27,000 and 8 system calls, counted with callgrind and strace),
 *	and most processes use none of them. libsystemd is needed to take a
 *	socket systemd passed or to log to the journal; nettle for the HMAC
 *	of --privacy; PCRE2 for a whitelist's regular expressions; hiredis
 *	for the Redis store (redis.c).
 */

#define _GNU_SOURCE

#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "greylist.h"

long my_pid;				/* for --log-file lines */
int use_journal;			/* running under systemd */
int log_stderr;				/* warnings to stderr too (greylistctl) */
static int log_fd = -1;			/* --log-file, or -1 */

/*
 * Libraries on demand.
 */

/* The symbols each library must have, in the order lib_symbol numbers
 * them. */
#define MAX_SYMBOLS	10

static const struct {
	const char *soname;
	const char *names[MAX_SYMBOLS];
} libraries[LIB_COUNT] = {
	[LIB_SYSTEMD] = { "libsystemd.so.0",
			  { "sd_listen_fds", "sd_is_socket", "sd_journal_sendv",
			    NULL } },
	[LIB_NETTLE] = { "libnettle.so.8",
			 { "nettle_hmac_sha256_set_key",
			   "nettle_hmac_sha256_update",
			   "nettle_hmac_sha256_digest", NULL } },
	[LIB_PCRE2] = { "libpcre2-8.so.0",
			{ "pcre2_compile_8", "pcre2_match_8", "pcre2_code_free_8",
			  "pcre2_get_error_message_8",
			  "pcre2_match_data_create_8",
			  "pcre2_match_context_create_8",
			  "pcre2_set_match_limit_8", "pcre2_set_depth_limit_8",
			  "pcre2_set_heap_limit_8", NULL } },
	[LIB_HIREDIS] = { "libhiredis.so.0.14",
			  { "redisConnectWithTimeout",
			    "redisConnectUnixWithTimeout", "redisSetTimeout",
			    "redisCommandArgv", "freeReplyObject", "redisFree",
			    NULL } },
};

static struct {
	int state;			/* 0 not tried, 1 loaded, -1 failed */
	void *sym[MAX_SYMBOLS];
} loaded[LIB_COUNT];

/* lib_load - load a library and find all its symbols; 0 when done */
static int lib_load(enum library lib)
{
	void *h;
	size_t i;

	if (loaded[lib].state)
		return loaded[lib].state > 0 ? 0 : -1;
	loaded[lib].state = -1;
	if (!(h = dlopen(libraries[lib].soname, RTLD_NOW | RTLD_LOCAL)))
		return -1;
	for (i = 0; libraries[lib].names[i]; i++)
		if (!(loaded[lib].sym[i] = dlsym(h, libraries[lib].names[i]))) {
			dlclose(h);
			return -1;
		}
	loaded[lib].state = 1;
	return 0;
}

/* lib_symbol - symbol i of a library, loading it first; NULL if the
 * library or the symbol is missing. Callers cast it to the function's
 * type, as dlsym(3) is meant to be used. */
void *lib_symbol(enum library lib, size_t i)
{
	return lib_load(lib) == 0 ? loaded[lib].sym[i] : NULL;
}

/* sd_stream_socket - the one connected stream socket systemd passed
 * (LISTEN_FDS=1, Accept=yes); 0 with *fd, -1 with a log line */
int sd_stream_socket(int *fd)
{
	typedef int listen_fds_fn(int);
	typedef int is_socket_fn(int, int, int, int);

	if (!lib_symbol(LIB_SYSTEMD, 0)) {
		msg_error("LISTEN_FDS is set, but libsystemd.so.0 cannot be"
			  " loaded to take the socket");
		return -1;
	}
	if (((listen_fds_fn *)lib_symbol(LIB_SYSTEMD, 0))(1) != 1) {
		msg_error("expected exactly one socket from systemd");
		return -1;
	}
	*fd = 3;			/* SD_LISTEN_FDS_START */
	if (((is_socket_fn *)lib_symbol(LIB_SYSTEMD, 1))(*fd, AF_UNSPEC,
							 SOCK_STREAM, 0) <= 0) {
		msg_error("fd 3 is not a connected stream socket: use"
			  " Accept=yes in greylistd.socket");
		return -1;
	}
	return 0;
}

/* grow - make room for n elements of size in *p (doubling); the new
 * array, or NULL (the old one kept) without memory */
void *grow(void *p, size_t *cap, size_t n, size_t size)
{
	size_t c = *cap ? *cap : 64;

	if (n <= *cap)
		return p;
	while (c < n)
		c *= 2;
	if (!(p = reallocarray(p, c, size)))
		return NULL;
	*cap = c;
	return p;
}

/*
 * Times.
 */

/* now_mono - monotonic time, for deadlines */
struct timespec now_mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts;
}

/* deadline_in - the monotonic time "seconds" from now */
struct timespec deadline_in(long long seconds)
{
	struct timespec ts = now_mono();

	ts.tv_sec += (time_t)seconds;
	return ts;
}

/* ms_left - milliseconds until a deadline, at least 0 */
int ms_left(const struct timespec *deadline)
{
	struct timespec now = now_mono();
	long long ms = (deadline->tv_sec - now.tv_sec) * 1000LL
		+ (deadline->tv_nsec - now.tv_nsec) / 1000000;

	return ms < 0 ? 0 : ms > INT_MAX ? INT_MAX : (int)ms;
}

/* elapsed_ms - milliseconds since a monotonic time */
long long elapsed_ms(const struct timespec *since)
{
	struct timespec now = now_mono();

	return (now.tv_sec - since->tv_sec) * 1000LL
		+ (now.tv_nsec - since->tv_nsec) / 1000000;
}

/* format_time - a time as text; "-" for a time the calendar cannot show
 * (a clock gone wild) */
const char *format_time(char *buf, size_t size, enum time_style style,
			time_t t)
{
	struct tm tm;
	size_t n;

	if (!(style == TS_UTC || style == TS_FILE ? gmtime_r(&t, &tm)
	      : localtime_r(&t, &tm))) {
		snprintf(buf, size, "-");
		return buf;
	}
	/* a literal format per style: -Wformat-nonliteral checks them */
	n = strftime(buf, size, style == TS_LOG ? "%Y-%m-%dT%H:%M:%S%z"
		     : style == TS_HEADER ? "%a, %d %b %Y %H:%M:%S %z"
		     : style == TS_UTC ? "%Y-%m-%dT%H:%M:%SZ"
		     : "%Y%m%dT%H%M%SZ", &tm);
	if (n == 0)
		snprintf(buf, size, "-");
	return buf;
}

/*
 * Log lines.
 */

/* log_value - a network-supplied string made safe for one log line: at
 * most LOG_VALUE_MAX bytes (then "..."), and control characters, bytes
 * above 126, "\" and "," as \xHH */
const char *log_value(char *dst, size_t size, const char *src)
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

/* log_unescape - undo log_value's \xHH escapes in place */
static char *log_unescape(char *s)
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

/* log_field - the value of ", name=" in a decision line, read back as
 * log_value wrote it (greylistctl report reads the log with this) */
const char *log_field(const char *line, const char *name, char *buf,
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
	return log_unescape(buf);
}

/* log_open - syslog, the --log-file, or the journal under systemd (when
 * journald listens: without it sd_journal_sendv succeeds and the line
 * would be lost) */
void log_open(void)
{
	my_pid = (long)getpid();
	openlog("greylistd", LOG_PID, LOG_MAIL);
	if (cfg.log_file) {
		log_fd = open(cfg.log_file, O_WRONLY | O_APPEND | O_CREAT
			      | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, 0640);
		if (log_fd < 0)
			config_error("--log-file=%.100s: %s", cfg.log_file,
				     strerror(errno));
		return;
	}
	use_journal = getenv("INVOCATION_ID")
		&& access("/run/systemd/journal/socket", W_OK) == 0
		&& lib_symbol(LIB_SYSTEMD, 2);
}

/* log_file_write - one timestamped line, written with one write(2) */
static void log_file_write(const char *line)
{
	char buf[2100], stamp[40];
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

/* journal_send - the line and its fields to the journal; 0 when sent */
static int journal_send(int prio, const char *line,
			const struct iovec *fields, int nfields)
{
	static char ident[] = "SYSLOG_IDENTIFIER=greylistd";
	static char facility[] = "SYSLOG_FACILITY=2";
	typedef int sendv_fn(const struct iovec *, int);
	sendv_fn *sendv = (sendv_fn *)lib_symbol(LIB_SYSTEMD, 2);
	struct iovec iov[16];
	char msg[2100], pri[24];
	int n = 0, i;

	if (!sendv)
		return -1;
	snprintf(msg, sizeof(msg), "MESSAGE=%s", line);
	snprintf(pri, sizeof(pri), "PRIORITY=%d", prio);
	iov[n++] = (struct iovec){ msg, strlen(msg) };
	iov[n++] = (struct iovec){ pri, strlen(pri) };
	iov[n++] = (struct iovec){ ident, sizeof(ident) - 1 };
	iov[n++] = (struct iovec){ facility, sizeof(facility) - 1 };
	for (i = 0; i < nfields && n < 16; i++)
		iov[n++] = fields[i];
	return sendv(iov, n) >= 0 ? 0 : -1;
}

/* log_emit - send one line, with optional journal fields, to its place */
void log_emit(int prio, const char *line, const struct iovec *fields,
	      int nfields)
{
	if (log_fd >= 0)
		log_file_write(line);
	else if (!use_journal || journal_send(prio, line, fields, nfields) != 0)
		syslog(prio, "%s", line);
	if (log_stderr && prio <= LOG_WARNING)
		(void)fprintf(stderr, "%s: %s\n", program_invocation_short_name,
			      line);
}

/* msg_log - a formatted line; every argument from the network must
 * already have passed through log_value() */
void msg_log(int prio, const char *fmt, ...)
{
	char line[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	log_emit(prio, line, NULL, 0);
}
