/*
 * config.c - greylistd's options: one table, the configuration file, the
 * command line
 *
 *	Every process, the helper and each operator command, reads the
 *	configuration file (DEFAULT_CONFIG, or --config=FILE): one option per
 *	line, its long name without "--", "=", its value ("delay = 5m",
 *	"privacy = yes"). A "#" at the start of a line or after a space starts
 *	a comment. An option that takes several files (the whitelists) may be
 *	given on several lines. Then the command line: "--name=value",
 *	"--name value", "--flag", "-h". The command line wins: a value given
 *	there replaces the file's (for a list of files, the whole list).
 *
 *	A bad line, option or value is an error that names FILE:LINE or the
 *	option; the caller refuses to go on (a server then sends no reply:
 *	Postfix applies its default_action, and the error is in the log of
 *	every connection). The file is the admin's and trusted, but it is
 *	still parsed with bounds: at most MAX_CONFIG bytes, lines of at most
 *	MAX_CONFIG_LINE.
 */

#define _GNU_SOURCE

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include "greylist.h"

struct config cfg = {
	.config = DEFAULT_CONFIG,
	.db_path = DEFAULT_DB,
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
	.defer_at = "rcpt",
	.wait = 60,
};

/* One row per option. A bare number given to a duration option is in
 * "unit" seconds, so postgrey's --max-age=35 (days) means the same here. */
static const struct option_spec options[] = {
	{ "config", OPT_STRING, 0, 0, 0, &cfg.config,
	  "configuration file (" DEFAULT_CONFIG ")" },
	{ "db", OPT_STRING, 0, 0, 0, &cfg.db_path,
	  "GDBM file of triplets (" DEFAULT_DB ")" },
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
	  "action that defers: DEFER_IF_PERMIT, DEFER_IF_REJECT, DEFER,"
	  " 4NN or \"4NN 4.N.N\"" },
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
	{ "learn", OPT_FLAG, 0, 1, 0, &cfg.learn,
	  "learn before enforcing: record triplets as passed, answer DUNNO" },
	{ "defer-at", OPT_STRING, 0, 0, 0, &cfg.defer_at,
	  "rcpt: defer each new recipient; data: defer the whole message at"
	  " DATA (Postfix policy protocol)" },
	{ "privacy", OPT_FLAG, 0, 1, 0, &cfg.privacy,
	  "store keys as HMAC-SHA-256 digests, not addresses" },
	{ "exim", OPT_FLAG, 0, 1, 0, &cfg.exim,
	  "close the connection after one answer (as Exim expects)" },
	{ "milter", OPT_FLAG, 0, 1, 0, &cfg.milter,
	  "speak the milter protocol (Sendmail, Postfix's smtpd_milters)" },
	{ "greylistd-protocol", OPT_FLAG, 0, 1, 0, &cfg.greylistd_protocol,
	  "speak Debian greylistd's one-line protocol (--grey IP SENDER RCPT)" },
	{ "redis", OPT_STRING, 0, 0, 0, &cfg.redis,
	  "Redis store instead of the file: /socket/path or IP:PORT" },
	{ "redis-password-file", OPT_STRING, 0, 0, 0, &cfg.redis_password_file,
	  "file whose first line is the Redis password" },
	{ "redis-sentinel", OPT_STRING, 0, 0, 0, &cfg.redis_sentinel,
	  "Sentinels to ask for the Redis primary: IP:PORT[,IP:PORT...]" },
	{ "redis-master", OPT_STRING, 0, 0, 0, &cfg.redis_master,
	  "the primary's name at the Sentinels" },
	{ "redis-wait", OPT_NUMBER, 0, 16, 0, &cfg.redis_wait,
	  "replicas that must have each write before the answer (0)" },
	{ "log-file", OPT_STRING, 0, 0, 0, &cfg.log_file,
	  "append log lines to this file instead of syslog" },
	{ "wait", OPT_DURATION, 1, 3600, 1, &cfg.wait,
	  "greylistctl: longest wait for the database lock (60s)" },
	{ "help", OPT_FLAG, 0, 1, 0, &cfg.help, "show this help (also -h)" },
	{ "version", OPT_FLAG, 0, 1, 0, &cfg.version, "show the version" },
};
#define NOPTIONS (sizeof(options) / sizeof(options[0]))

/* postgrey's daemon options, which greylistd does not need: what to use
 * instead, so that an admin moving over is not left with "unknown". */
static const struct {
	const char *names;		/* "|"-separated, as postgrey's */
	const char *instead;
} postgrey_options[] = {
	{ "inet|i|unix|u|socketmode|listen-queue-size",
	  "greylistd opens no socket: greylistd.socket (ListenStream=,"
	  " SocketMode=, Backlog=), spawn(8) or inetd hands it each"
	  " connection" },
	{ "daemonize|d|pidfile",
	  "greylistd is no daemon: systemd, spawn(8) or inetd starts one"
	  " process per connection" },
	{ "user|group",
	  "set the user where greylistd is started: User= in"
	  " greylistd@.service, user= in master.cf, or inetd.conf's field" },
	{ "dbdir",
	  "name the database file itself: --db=FILE (" DEFAULT_DB ")" },
	{ "syslog-facility|syslogfacility|facility",
	  "greylistd logs to the mail facility, or to --log-file=FILE" },
	{ "verbose|v|quiet|q",
	  "greylistd logs one line per decision; there are no levels" },
	{ "man", "run man greylistd" },
	{ "noaction|no-action|n", "greylistctl check tests the set-up" },
};

int config_errors;

/* Errors are kept until the log is open (a --log-file may come after
 * the bad option), then reported by config_report. */
#define MAX_CONFIG_ERRORS	16
static char errors[MAX_CONFIG_ERRORS][300];

/* config_error - a bad option, line or setting */
void config_error(const char *fmt, ...)
{
	va_list ap;

	if (config_errors < MAX_CONFIG_ERRORS) {
		va_start(ap, fmt);
		vsnprintf(errors[config_errors], sizeof(errors[0]), fmt, ap);
		va_end(ap);
	}
	config_errors++;
}

/* config_report - every error to the log, and to stderr unless that is
 * a socket (under spawn and inetd it is the client connection, which
 * must see nothing but replies) */
void config_report(void)
{
	struct stat st;
	int i, tty = fstat(2, &st) == 0 && !S_ISSOCK(st.st_mode);

	for (i = 0; i < config_errors && i < MAX_CONFIG_ERRORS; i++) {
		msg_log(LOG_ERR, "error: %s", errors[i]);
		if (tty)
			dprintf(2, "%s: %s\n", program_invocation_short_name,
				errors[i]);
	}
	if (config_errors > MAX_CONFIG_ERRORS && tty)
		dprintf(2, "%s: %d more errors\n",
			program_invocation_short_name,
			config_errors - MAX_CONFIG_ERRORS);
}

/* parse_number - a decimal integer in [min, max] after an optional unit
 * suffix (durations: s, m, h, d in either case; a bare number is in
 * "unit" seconds) */
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
			if (tolower((unsigned char)*end) == units[i].suffix)
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

/* parse_flag - a flag's value in the file: yes/no, true/false, on/off, 1/0 */
static int parse_flag(const char *s, long long *v)
{
	static const char *const words[] =
		{ "no", "yes", "false", "true", "off", "on", "0", "1" };
	size_t i;

	for (i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		if (strcasecmp(s, words[i]) == 0) {
			*v = (long long)(i % 2);
			return 0;
		}
	return -1;
}

/* find_in - the row for a name, exactly as written, in a table */
static const struct option_spec *find_in(const struct option_spec *t,
					 size_t n, const char *name,
					 size_t len)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (strlen(t[i].name) == len && memcmp(t[i].name, name, len) == 0)
			return &t[i];
	return NULL;
}

/* postgrey_advice - what to use instead of one of postgrey's daemon
 * options, or NULL */
static const char *postgrey_advice(const char *name, size_t len)
{
	const char *p;
	size_t i, l;

	for (i = 0; i < sizeof(postgrey_options) / sizeof(postgrey_options[0]);
	     i++)
		for (p = postgrey_options[i].names; *p; p += l + (p[l] == '|')) {
			l = strcspn(p, "|");
			if (l == len && memcmp(p, name, len) == 0)
				return postgrey_options[i].instead;
		}
	return NULL;
}

/* Where a value came from, for the where of an error. */
struct source {
	const char *file;		/* NULL: the command line */
	unsigned line;
	int cmdline_files[3];		/* a wl_format's list was reset */
};

/* where - "FILE:LINE: " or "" */
static const char *where(const struct source *src, char *buf, size_t size)
{
	if (!src->file)
		buf[0] = 0;	/* callers also use buf itself */
	else
		snprintf(buf, size, "%s:%u: ", src->file, src->line);
	return buf;
}

/* set_files - add one file to a whitelist list. The first one given on
 * the command line replaces those the configuration file named. */
static void set_files(const struct option_spec *o, const char *value,
		      struct source *src)
{
	struct wl_list *l = o->dest;
	enum wl_format f = (enum wl_format)o->unit;
	char w[300];
	size_t i, k = 0;

	if (!src->file && !src->cmdline_files[f]) {
		src->cmdline_files[f] = 1;
		for (i = 0; i < l->n; i++)
			if (l->format[i] != f) {
				l->path[k] = l->path[i];
				l->format[k++] = l->format[i];
			}
		l->n = k;
	}
	if (l->n == MAX_WL_FILES) {
		config_error("%s%s: at most %d whitelist files",
			     where(src, w, sizeof(w)), o->name, MAX_WL_FILES);
		return;
	}
	l->path[l->n] = value;
	l->format[l->n++] = f;
}

/* set_option - store one option's value; value NULL: none given */
static void set_option(const struct option_spec *o, const char *value,
		       struct source *src)
{
	char w[300];
	long long v;

	where(src, w, sizeof(w));
	if (o->kind == OPT_FLAG && src->file) {
		if (!value || parse_flag(value, &v) != 0)
			config_error("%s%s = %.40s: use yes or no", w, o->name,
				     value ? value : "");
		else if (o->dest)
			*(long long *)o->dest = v;
	} else if (o->kind == OPT_FLAG) {
		if (value)
			config_error("--%s takes no value", o->name);
		else if (o->dest)
			*(long long *)o->dest = 1;
	} else if (!value) {
		config_error("%s%s%s needs a value", w, src->file ? "" : "--",
			     o->name);
	} else if (o->kind == OPT_STRING) {
		*(const char **)o->dest = value;
	} else if (o->kind == OPT_FILES) {
		set_files(o, value, src);
	} else if (parse_number(o, value, &v) != 0) {
		config_error(o->kind == OPT_DURATION
			     ? "%s%s%s=%.40s: not a duration from %llds to %llds"
			       " (suffix s, m, h or d)"
			     : "%s%s%s=%.40s: not a number from %lld to %lld",
			     w, src->file ? "" : "--", o->name, value, o->min,
			     o->max);
	} else {
		*(long long *)o->dest = v;
	}
}

/* lookup - the option of a name in the caller's extra table (a
 * command's own options, which come first: report's --delay is
 * postgreyreport's) or the shared one; an error that says what to use
 * instead when there is none */
static const struct option_spec *lookup(const char *name, size_t len,
					const struct option_spec *extra,
					size_t nextra, const struct source *src)
{
	const struct option_spec *o = extra ? find_in(extra, nextra, name, len)
		: NULL;
	const char *instead;
	char w[300];

	if (!o)
		o = find_in(options, NOPTIONS, name, len);
	if (o)
		return o;
	where(src, w, sizeof(w));
	instead = postgrey_advice(name, len);
	if (instead)
		config_error("%s%s%.*s is postgrey's; %s", w,
			     src->file ? "" : "--", (int)len, name, instead);
	else
		config_error("%sunknown option %s%.*s", w, src->file ? "" : "--",
			     (int)(len > 80 ? 80 : len), name);
	return NULL;
}

/* short_option - "-x": -h was taken as --help; the others are
 * postgrey's (-d, -v ...) or unknown */
static void short_option(const char *name)
{
	const char *instead = postgrey_advice(name, strlen(name));

	if (instead)
		config_error("-%.20s is postgrey's; %s", name, instead);
	else
		config_error("unknown option -%.20s", name);
}

/* Bounds of the configuration file: it holds some 30 short lines. */
#define MAX_CONFIG	(64 << 10)
#define MAX_CONFIG_LINE	1024

/* read_text - a whole small file, NUL-terminated (kept: values point
 * into it), its length in *size; NULL with errno (EFBIG over MAX_CONFIG) */
static char *read_text(const char *path, size_t *size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	char *buf = NULL;
	ssize_t n = 0;
	size_t len = 0;
	struct stat st;
	int err;

	if (fd < 0)
		return NULL;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
		errno = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
	else if (!(buf = malloc(MAX_CONFIG + 1)))
		errno = ENOMEM;
	while (buf && (n = read(fd, buf + len, MAX_CONFIG + 1 - len)) > 0)
		len += (size_t)n;
	err = n < 0 ? errno : len > MAX_CONFIG ? EFBIG : errno;
	close(fd);
	if (!buf || n < 0 || len > MAX_CONFIG) {
		free(buf);
		errno = err;
		return NULL;
	}
	buf[len] = 0;
	*size = len;
	return buf;
}

/* config_line - one line of the file: "name = value", a comment, or
 * nothing. The line is cut in place. */
static void config_line(char *s, struct source *src)
{
	const struct option_spec *o;
	char *hash, *eq, *end, *name, w[300];

	for (hash = s; (hash = strchr(hash, '#')); hash++)
		if (hash == s || isspace((unsigned char)hash[-1])) {
			*hash = 0;
			break;
		}
	s += strspn(s, " \t");
	end = s + strlen(s);
	while (end > s && isspace((unsigned char)end[-1]))
		*--end = 0;
	if (!*s)
		return;
	name = s;
	s += strcspn(s, " \t=");
	eq = s + strspn(s, " \t");
	if (s == name || (*eq && *eq != '=')) {
		config_error("%sexpected \"name = value\"",
			     where(src, w, sizeof(w)));
		return;
	}
	if (*eq == '=')		/* before the cut: "name=value" */
		eq += 1 + strspn(eq + 1, " \t");
	*s = 0;
	if (!(o = lookup(name, strlen(name), NULL, 0, src)))
		return;
	if (o->dest == &cfg.config) {
		config_error("%sconfig: only on the command line",
			     where(src, w, sizeof(w)));
		return;
	}
	set_option(o, *eq ? eq : NULL, src);
}

/* config_file - read the configuration file (shared options only); a
 * missing default file is no error, a missing named one is */
static void config_file(const char *path, int named)
{
	struct source src = { path, 0, { 0 } };
	size_t size;
	char *buf = read_text(path, &size), *line, *nl;

	if (!buf) {
		if (named || errno != ENOENT)
			config_error("%s: %s", path, errno == EFBIG
				     ? "larger than 64 KiB" : strerror(errno));
		return;
	}
	if (memchr(buf, 0, size)) {
		config_error("%s: a NUL byte in the file", path);
		return;
	}
	for (line = buf; *line; line = nl) {
		nl = line + strcspn(line, "\n");
		if (*nl)
			*nl++ = 0;
		src.line++;
		if (strlen(line) > MAX_CONFIG_LINE)
			config_error("%s:%u: line longer than %d bytes", path,
				     src.line, MAX_CONFIG_LINE);
		else
			config_line(line, &src);
	}
	/* buf is kept: the settings point into it */
}

/* named_config - the --config the command line gives, or NULL */
static const char *named_config(int argc, char **argv)
{
	const char *found = NULL;
	int i;

	for (i = 0; i < argc; i++) {
		if (strncmp(argv[i], "--config=", 9) == 0)
			found = argv[i] + 9;
		else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
			found = argv[++i];
		else if (strcmp(argv[i], "--") == 0)
			break;
	}
	return found;
}

/* takes_value - does this command-line option consume the next word? */
static int takes_value(const struct option_spec *o, int i, int argc,
		       char **argv)
{
	if (o->kind == OPT_FLAG || i + 1 >= argc)
		return 0;
	/* postgrey: a bare --auto-whitelist-clients means 5 */
	return argv[i + 1]
		&& !(o->dest == &cfg.awl && strncmp(argv[i + 1], "--", 2) == 0);
}

/* config_parse - the configuration file, then the command line
 * (argv[0] excluded); the words that are not options, up to maxwords,
 * go to words in order. Returns how many there were. */
int config_parse(int argc, char **argv, const struct option_spec *extra,
		 size_t nextra, const char **words, int maxwords)
{
	struct source src = { NULL, 0, { 0 } };
	const struct option_spec *o;
	const char *named = named_config(argc, argv), *arg, *eq;
	int i, nwords = 0, only_words = 0;

	config_file(named ? named : DEFAULT_CONFIG, named != NULL);
	for (i = 0; i < argc; i++) {
		arg = argv[i];
		if (only_words || arg[0] != '-' || !arg[1]) {
			if (nwords < maxwords)
				words[nwords] = arg;
			nwords++;
			continue;
		}
		if (strcmp(arg, "--") == 0) {
			only_words = 1;
			continue;
		}
		if (strcmp(arg, "-h") == 0)
			arg = "--help";
		if (arg[1] != '-') {
			short_option(arg + 1);
			continue;
		}
		arg += 2;
		eq = strchr(arg, '=');
		o = lookup(arg, eq ? (size_t)(eq - arg) : strlen(arg), extra,
			   nextra, &src);
		if (!o)
			continue;
		if (!eq && o->dest == &cfg.awl && !takes_value(o, i, argc, argv))
			set_option(o, "5", &src);
		else if (!eq && takes_value(o, i, argc, argv))
			set_option(o, argv[++i], &src);
		else
			set_option(o, eq ? eq + 1 : NULL, &src);
	}
	return nwords;
}

/* config_usage - the options, from the tables */
void config_usage(FILE *f, const struct option_spec *extra, size_t nextra)
{
	size_t i;

	/* Errors of these writes are seen by the caller's flush. */
	for (i = 0; i < NOPTIONS; i++)
		(void)fprintf(f, "  --%-22s %s\n", options[i].name,
			      options[i].help);
	for (i = 0; extra && i < nextra; i++)
		(void)fprintf(f, "  --%-22s %s\n", extra[i].name, extra[i].help);
}

/* config_options - the shared table, for the docs' tests */
size_t config_options(const struct option_spec **table)
{
	*table = options;
	return NOPTIONS;
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

/* status_len - the length of the "4.N.N" that s starts with, an enhanced
 * status code of class 4 (RFC 3463: subject up to three digits, detail
 * up to three), or 0 */
size_t status_len(const char *s)
{
	size_t a, b;

	if (s[0] != '4' || s[1] != '.')
		return 0;
	a = strspn(s + 2, "0123456789");
	if (a < 1 || a > 3 || s[2 + a] != '.')
		return 0;
	b = strspn(s + 3 + a, "0123456789");
	return b >= 1 && b <= 3 && !isdigit((unsigned char)s[3 + a + b])
		? 3 + a + b : 0;
}

/* is_status - s is "4.N.N" and nothing else */
static int is_status(const char *s)
{
	size_t n = status_len(s);

	return n > 0 && !s[n];
}

/* check_action - what Postfix accepts as a deferring action: a word, a
 * 4NN code, or (as postgrey passes it on) a code and an enhanced status */
static void check_action(const char *a)
{
	static const char *const words[] =
		{ "DEFER_IF_PERMIT", "DEFER", "DEFER_IF_REJECT" };
	size_t i;

	for (i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		if (strcmp(a, words[i]) == 0)
			return;
	if (a[0] == '4' && isdigit((unsigned char)a[1])
	    && isdigit((unsigned char)a[2])
	    && (!a[3] || (a[3] == ' ' && is_status(a + 4))))
		return;
	config_error("--greylist-action=%.40s: use DEFER_IF_PERMIT, DEFER,"
		     " DEFER_IF_REJECT, a 4NN code or \"4NN 4.N.N\"", a);
}

/* is_host_name - letters, digits and "-" in dot-separated labels of 1 to
 * 63 characters, neither starting nor ending with "-"; 253 in all */
static int is_host_name(const char *s)
{
	size_t len;

	if (!*s || strlen(s) > 253)
		return 0;
	for (;;) {
		len = strspn(s, "abcdefghijklmnopqrstuvwxyz"
			     "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-");
		if (len < 1 || len > 63 || s[0] == '-' || s[len - 1] == '-')
			return 0;
		s += len;
		if (!*s)
			return 1;
		if (*s++ != '.')
			return 0;
	}
}

/* config_check - settings that are wrong on their own or together */
void config_check(void)
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
	if (strcmp(cfg.defer_at, "rcpt") != 0
	    && strcmp(cfg.defer_at, "data") != 0)
		config_error("--defer-at=%.40s: use rcpt or data", cfg.defer_at);
	/* the milter and Exim's protocols answer at RCPT, as they always
	 * have: one configuration file may serve all of them */
	cfg.defer_at_data = strcmp(cfg.defer_at, "data") == 0 && !cfg.milter
		&& !cfg.greylistd_protocol && !cfg.exim;
	if (cfg.milter + cfg.greylistd_protocol + cfg.exim > 1)
		config_error("--milter, --greylistd-protocol and --exim are"
			     " three protocols: choose one");
	if (!cfg.hostname && strstr(cfg.header, "%h")) {
		if (gethostname(host, sizeof(host) - 1) != 0
		    || !is_host_name(host))
			snprintf(host, sizeof(host), "localhost");
		cfg.hostname = host;	/* asked for only when a header needs it */
	} else if (cfg.hostname && !is_host_name(cfg.hostname)) {
		config_error("--hostname=%.80s: not a host name (letters,"
			     " digits and \"-\" in labels joined by dots)",
			     cfg.hostname);
	}
	redis_check();
	if (cfg.privacy && !lib_symbol(LIB_NETTLE, 2))
		config_error("--privacy needs libnettle.so.8 (Debian package"
			     " libnettle8) for its HMAC");
}
