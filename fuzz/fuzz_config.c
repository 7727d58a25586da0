/*
 * fuzz_config - config.c's configuration file parser under libFuzzer.
 *
 * The bytes (after a one-byte header) are a configuration file (a
 * memfd), read by config_parse() with --config=/proc/self/fd/N, as
 * every process reads it: read_text, config_file, config_line, lookup,
 * postgrey_advice, set_option, parse_number, parse_flag, set_files. A
 * model of the file says, independently, what each line is (nothing, an
 * error, or "name = value" for an option of the table) and what the
 * settings must be after it. Then, with h & 2, config_check() judges
 * the settings. The settings and the errors are reset between inputs;
 * the file's buffer, which the settings point into and config.c keeps,
 * is freed by the harness. Invariants:
 *   - it never crashes, and never reads past a line;
 *   - every error of a line names FILE:LINE, in the order of the lines,
 *     and exactly the lines the model finds wrong are errors (a file
 *     with a NUL byte or over 64 KiB is one error naming FILE, and
 *     changes nothing);
 *   - a line longer than MAX_CONFIG_LINE is refused, whatever it holds;
 *   - every setting is the model's: the last good line of its option
 *     (numbers and durations parsed and within each option's range,
 *     flags yes/no, strings the value as written, whitelist files in
 *     order), or its default;
 *   - config_check finds no error exactly when the model finds the
 *     templates printable, within MAX_TEXT and with only their
 *     placeholders, the action one Postfix takes, the host name a host
 *     name, the durations in order, --defer-at rcpt or data, at most
 *     one of --milter, --greylistd-protocol and --exim, and the Redis
 *     options (redis_check) good: each address a socket path or an IP
 *     address and port, --redis-sentinel with --redis-master and never
 *     with --redis, --redis-password-file and --redis-wait only with a
 *     Redis store; and --defer-at=data is kept for the policy protocol
 *     only (defer_at_data).
 *
 * Header: h & 1: the file is padded with a comment to more than 64 KiB
 * (it must be refused whole); h & 2: config_check() runs after.
 */

#include "fuzz.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <limits.h>

/* config.c keeps the file's buffer (the settings point into it): the
 * harness takes note of it, to free it after each input, unless config.c
 * freed it. */
static void *kept[4];
static size_t nkept;

static void *fz_malloc(size_t n)
{
	void *p = malloc(n);

	if (p && nkept < sizeof(kept) / sizeof(kept[0]))
		kept[nkept++] = p;
	return p;
}

/* fz_free - a buffer config.c frees itself (a file it refused) */
static void fz_free(void *p)
{
	size_t i;

	for (i = 0; i < nkept; i++)
		if (kept[i] == p)
			kept[i] = kept[--nkept];
	free(p);
}

#define malloc(n) fz_malloc(n)
#define free(p) fz_free(p)
#include "config.c"
#undef malloc
#undef free

static int conf_fd = -1;
static char conf_path[64], conf_arg[80];

/* The settings before any file: restored for each input. */
static struct config defaults;

/* What the model expects: the settings, and the lines in error. */
static struct config want;
static unsigned err_line[MAX_CONFIG_ERRORS];
static int nerr;

/* m_error - the model finds line n (0: the whole file) wrong */
static void m_error(unsigned n)
{
	if (nerr < MAX_CONFIG_ERRORS)
		err_line[nerr] = n;
	nerr++;
}

/* m_number - a decimal number with an optional unit suffix (durations:
 * s, m, h or d, either case; a bare number in the option's unit), in
 * the option's range; 0 with *v */
static int m_number(const struct option_spec *o, const char *s,
		    long long *v)
{
	long long n = 0, mult = o->kind == OPT_DURATION ? o->unit : 1;
	const char *p = s, *units = "smhd";
	static const long long secs[] = { 1, 60, 3600, 86400 };
	const char *u;

	if (!isdigit((unsigned char)*p))
		return -1;
	for (; isdigit((unsigned char)*p); p++) {
		if (n > (LLONG_MAX - (*p - '0')) / 10)
			return -1;
		n = n * 10 + (*p - '0');
	}
	if (*p) {
		if (o->kind != OPT_DURATION || p[1]
		    || !(u = strchr(units, tolower((unsigned char)*p))))
			return -1;
		mult = secs[u - units];
	}
	if (n > LLONG_MAX / mult)
		return -1;
	*v = n * mult;
	return *v >= o->min && *v <= o->max ? 0 : -1;
}

/* m_flag - yes/no, true/false, on/off, 1/0 in any case */
static int m_flag(const char *s, long long *v)
{
	static const char *const yes[] = { "yes", "true", "on", "1" };
	static const char *const no[] = { "no", "false", "off", "0" };
	size_t i;

	for (i = 0; i < 4; i++) {
		if (strcasecmp(s, yes[i]) == 0)
			*v = 1;
		else if (strcasecmp(s, no[i]) == 0)
			*v = 0;
		else
			continue;
		return 0;
	}
	return -1;
}

/* m_dest - where an option's setting lives in the model's config */
static void *m_dest(const struct option_spec *o)
{
	return o->dest ? (char *)&want + ((char *)o->dest - (char *)&cfg)
		: NULL;
}

/* m_set - the model's "name = value" for option o; -1 if wrong */
static int m_set(const struct option_spec *o, const char *value)
{
	struct wl_list *l;
	long long v;

	if (o->dest == &cfg.config || (!value && o->kind != OPT_FLAG))
		return -1;
	switch (o->kind) {
	case OPT_FLAG:
		if (!value || m_flag(value, &v) != 0)
			return -1;
		if (o->dest)
			*(long long *)m_dest(o) = v;
		return 0;
	case OPT_STRING:
		*(const char **)m_dest(o) = value;
		return 0;
	case OPT_FILES:
		l = m_dest(o);
		if (l->n == MAX_WL_FILES)
			return -1;
		l->path[l->n] = value;
		l->format[l->n++] = (enum wl_format)o->unit;
		return 0;
	case OPT_NUMBER:
	case OPT_DURATION:
		if (m_number(o, value, &v) != 0)
			return -1;
		*(long long *)m_dest(o) = v;
		return 0;
	}
	return -1;
}

/* m_line - one line of the file (cut in place, as config.c cuts it: the
 * model's values point into the same buffer); -1 if it is wrong */
static int m_line(char *s)
{
	const struct option_spec *t;
	size_t i, n = config_options(&t), len;
	char *p, *end, *value;

	for (p = s; *p; p++)
		if (*p == '#' && (p == s || isspace((unsigned char)p[-1]))) {
			*p = 0;
			break;
		}
	s += strspn(s, " \t");
	end = s + strlen(s);
	while (end > s && isspace((unsigned char)end[-1]))
		*--end = 0;
	if (!*s)
		return 0;
	len = strcspn(s, " \t=");
	value = s + len + strspn(s + len, " \t");
	if (len == 0 || (*value && *value != '='))
		return -1;
	if (*value == '=')
		value += 1 + strspn(value + 1, " \t");
	s[len] = 0;
	for (i = 0; i < n && strcmp(t[i].name, s) != 0; i++)
		;
	return i < n ? m_set(&t[i], *value ? value : NULL) : -1;
}

/* m_file - the model of the whole file, in buf (a copy of config.c's,
 * cut as it cuts it) */
static void m_file(char *buf, size_t size)
{
	unsigned n = 0;
	char *line, *nl;

	want = defaults;
	nerr = 0;
	if (size > MAX_CONFIG || memchr(buf, 0, size)) {
		m_error(0);
		return;
	}
	for (line = buf; line < buf + size; line = nl + 1) {
		nl = memchr(line, '\n', (size_t)(buf + size - line));
		if (!nl)
			nl = buf + size;
		*nl = 0;
		n++;
		if (strlen(line) > MAX_CONFIG_LINE || m_line(line) != 0)
			m_error(n);
	}
}

/* check_errors - config.c's errors are the model's, each naming FILE:LINE
 * (or FILE, for the whole file) */
static void check_errors(void)
{
	char want_where[96];
	size_t wl;
	int i;

	CHECK(config_errors == nerr, "%d errors, the model finds %d (first:"
	      " %s)", config_errors, nerr, config_errors ? errors[0] : "none");
	for (i = 0; i < nerr && i < MAX_CONFIG_ERRORS; i++) {
		if (err_line[i])
			snprintf(want_where, sizeof(want_where), "%s:%u: ",
				 conf_path, err_line[i]);
		else
			snprintf(want_where, sizeof(want_where), "%s: ",
				 conf_path);
		wl = strlen(want_where);
		CHECK(strncmp(errors[i], want_where, wl) == 0, "error %d does"
		      " not start with \"%s\": %s", i, want_where, errors[i]);
	}
}

/* check_settings - every option of the table holds the model's value */
static void check_settings(void)
{
	const struct option_spec *t, *o;
	size_t i, n = config_options(&t), k;
	const struct wl_list *a, *b;
	long long v;
	const char *s, *w;

	for (i = 0; i < n; i++) {
		o = &t[i];
		if (!o->dest)
			continue;
		switch (o->kind) {
		case OPT_FLAG:
		case OPT_NUMBER:
		case OPT_DURATION:
			v = *(long long *)o->dest;
			CHECK(v == *(long long *)m_dest(o), "%s is %lld, the"
			      " model says %lld", o->name, v,
			      *(long long *)m_dest(o));
			CHECK(v == *(long long *)((char *)&defaults
				  + ((char *)o->dest - (char *)&cfg))
			      || (o->kind == OPT_FLAG ? v == 0 || v == 1
				  : v >= o->min && v <= o->max),
			      "%s = %lld is out of its range", o->name, v);
			break;
		case OPT_STRING:
			s = *(const char **)o->dest;
			w = *(const char **)m_dest(o);
			CHECK(s == w || (s && w && strcmp(s, w) == 0),
			      "%s is \"%.80s\", the model says \"%.80s\"",
			      o->name, s ? s : "(none)", w ? w : "(none)");
			break;
		case OPT_FILES:
			a = o->dest;
			b = m_dest(o);
			CHECK(a->n == b->n, "%zu whitelist files, the model says"
			      " %zu", a->n, b->n);
			for (k = 0; k < a->n; k++)
				CHECK(strcmp(a->path[k], b->path[k]) == 0
				      && a->format[k] == b->format[k],
				      "whitelist file %zu is %.80s (%d), the"
				      " model says %.80s (%d)", k, a->path[k],
				      a->format[k], b->path[k], b->format[k]);
			break;
		}
	}
}

/* m_template - printable ASCII, at most MAX_TEXT, and "%" only before
 * "%" or one of the allowed placeholders */
static int m_template(const char *t, const char *allowed)
{
	size_t i;

	if (strlen(t) > MAX_TEXT)
		return 0;
	for (i = 0; t[i]; i++) {
		if ((unsigned char)t[i] < 32 || (unsigned char)t[i] > 126)
			return 0;
		if (t[i] == '%') {
			if (!t[i + 1] || (t[i + 1] != '%'
					  && !strchr(allowed, t[i + 1])))
				return 0;
			i++;
		}
	}
	return 1;
}

/* m_digits - n decimal digits, n in [lo, hi], at s; their count or 0 */
static size_t m_digits(const char *s, size_t lo, size_t hi)
{
	size_t n = strspn(s, "0123456789");

	return n >= lo && n <= hi ? n : 0;
}

/* m_action - DEFER_IF_PERMIT, DEFER, DEFER_IF_REJECT, 4NN, or "4NN
 * 4.X.Y" with X and Y of one to three digits */
static int m_action(const char *a)
{
	size_t x, y;

	if (!strcmp(a, "DEFER_IF_PERMIT") || !strcmp(a, "DEFER")
	    || !strcmp(a, "DEFER_IF_REJECT"))
		return 1;
	if (a[0] != '4' || m_digits(a + 1, 2, 2) != 2)
		return 0;
	if (!a[3])
		return 1;
	if (strncmp(a + 3, " 4.", 3) != 0 || !(x = m_digits(a + 6, 1, 3))
	    || a[6 + x] != '.' || !(y = m_digits(a + 7 + x, 1, 3)))
		return 0;
	return !a[7 + x + y];
}

/* m_host - labels of letters, digits and "-", 1 to 63 long, not
 * starting or ending with "-", joined by dots; 253 in all */
static int m_host(const char *h)
{
	size_t len = strlen(h), i = 0, l;

	if (len == 0 || len > 253)
		return 0;
	for (;;) {
		for (l = 0; (h[i + l] >= 'a' && h[i + l] <= 'z')
			     || (h[i + l] >= 'A' && h[i + l] <= 'Z')
			     || (h[i + l] >= '0' && h[i + l] <= '9')
			     || h[i + l] == '-'; l++)
			;
		if (l < 1 || l > 63 || h[i] == '-' || h[i + l - 1] == '-')
			return 0;
		i += l;
		if (!h[i])
			return 1;
		if (h[i++] != '.')
			return 0;
	}
}

/* m_raddr - a Redis address, [s, s+len): "/path" (shorter than
 * sun_path's 108), or an IP address (IPv6 in brackets) ":" a port from 1
 * to 65535 of at most five digits; never a name */
static int m_raddr(const char *s, size_t len)
{
	char host[INET6_ADDRSTRLEN];
	unsigned char bin[16];
	size_t i = len, hl, digits;
	long port = 0;

	if (len > 0 && s[0] == '/')
		return len < 108;
	while (i > 0 && s[i - 1] != ':')
		i--;
	if (i == 0)
		return 0;
	digits = len - i;
	if (digits < 1 || digits > 5)
		return 0;
	for (; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return 0;
		port = port * 10 + (s[i] - '0');
	}
	hl = len - digits - 1;
	if (hl > 2 && s[0] == '[' && s[hl - 1] == ']') {
		s++;
		hl -= 2;
	} else if (memchr(s, ':', hl)) {
		return 0;
	}
	if (port < 1 || port > 65535 || hl == 0 || hl >= sizeof(host))
		return 0;
	memcpy(host, s, hl);
	host[hl] = 0;
	return inet_pton(AF_INET, host, bin) == 1
		|| inet_pton(AF_INET6, host, bin) == 1;
}

/* m_redis - the Redis options: each address good, the Sentinels (a
 * comma-separated list) only with a primary's name and the other way
 * round, not both ways at once, a password file or --redis-wait only
 * with one of them (hiredis is there: LLVMFuzzerInitialize saw it) */
static int m_redis(void)
{
	const char *s = cfg.redis_sentinel, *comma;
	int store = cfg.redis || cfg.redis_sentinel;

	if (cfg.redis && !m_raddr(cfg.redis, strlen(cfg.redis)))
		return 0;
	for (; s; s = *comma ? comma + 1 : NULL) {
		comma = s + strcspn(s, ",");
		if (!m_raddr(s, (size_t)(comma - s)))
			return 0;
	}
	return !cfg.redis_sentinel == !cfg.redis_master
		&& !(cfg.redis && cfg.redis_sentinel)
		&& (store || (!cfg.redis_password_file && !cfg.redis_wait));
}

/* check_check - config_check finds an error exactly when the model
 * does, and --defer-at=data holds for the policy protocol only */
static void check_check(void)
{
	int ok, before = config_errors, data;

	data = strcmp(cfg.defer_at, "data") == 0;
	ok = m_action(cfg.greylist_action)
		&& m_template(cfg.greylist_text, "sr")
		&& m_template(cfg.header, "tvhd")
		&& (!*cfg.header || strchr(cfg.header, ':'))
		&& cfg.retry_window > cfg.delay && cfg.max_age >= cfg.delay
		&& *cfg.db_path && (!cfg.hostname || m_host(cfg.hostname))
		&& (data || strcmp(cfg.defer_at, "rcpt") == 0)
		&& cfg.milter + cfg.greylistd_protocol + cfg.exim <= 1
		&& m_redis();
	data = data && !cfg.milter && !cfg.greylistd_protocol && !cfg.exim;
	config_check();
	CHECK(ok == (config_errors == before), "config_check: %d errors (%s),"
	      " the model finds the settings %s (action %.40s, text %.60s,"
	      " header %.60s, host %.60s, redis %.60s, sentinel %.60s)",
	      config_errors - before, config_errors > before
	      && before < MAX_CONFIG_ERRORS ? errors[before] : "none",
	      ok ? "good" : "bad", cfg.greylist_action, cfg.greylist_text,
	      cfg.header, cfg.hostname ? cfg.hostname : "(none)",
	      cfg.redis ? cfg.redis : "(none)",
	      cfg.redis_sentinel ? cfg.redis_sentinel : "(none)");
	CHECK(cfg.defer_at_data == data, "defer_at_data is %lld, the model"
	      " says %d", cfg.defer_at_data, data);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	conf_fd = fz_memfd("greylistd.conf");
	fz_path(conf_fd, conf_path, sizeof(conf_path));
	snprintf(conf_arg, sizeof(conf_arg), "--config=%s", conf_path);
	defaults = cfg;
	defaults.config = conf_path;	/* as the command line sets it */
	if (!lib_symbol(LIB_HIREDIS, 0) || !lib_symbol(LIB_NETTLE, 0)) {
		fprintf(stderr, "fuzz_config: libhiredis.so.0.14 or"
			" libnettle.so.8 cannot be loaded: config_check would"
			" refuse --redis or --privacy\n");
		abort();
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char file[MAX_CONFIG + 4096], copy[MAX_CONFIG + 4096];
	char *argv[] = { conf_arg, NULL };
	const char *words[1];
	size_t n, i;

	if (size < 1 || size - 1 > MAX_CONFIG)
		return 0;
	n = size - 1;
	memcpy(file, data + 1, n);
	if (data[0] & 1) {		/* past MAX_CONFIG, in a comment */
		file[n++] = '\n';
		file[n++] = '#';
		while (n <= MAX_CONFIG)
			file[n++] = 'x';
	}
	fz_set(conf_fd, file, n);
	memcpy(copy, file, n);
	m_file(copy, n);
	cfg = defaults;
	config_errors = 0;
	nkept = 0;
	CHECK(config_parse(1, argv, NULL, 0, words, 1) == 0, "a word");
	check_errors();
	check_settings();
	if (data[0] & 2)
		check_check();
	for (i = 0; i < nkept; i++)
		free(kept[i]);
	return 0;
}
