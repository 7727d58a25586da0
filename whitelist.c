/*
 * whitelist.c - the whitelist files, and matching a request against them
 *
 *	TRUSTED INPUT: the files are the admin's (greylistd's own format, and
 *	postgrey's whitelist_clients and whitelist_recipients, read
 *	unchanged). They are still parsed with bounds (MAX_WL_FILE, lines of
 *	at most MAX_WL_LINE) and every bad line is reported as FILE:LINE.
 *	NETWORK INPUT: the values matched against the entries (client
 *	address, verified client name, recipient) come from the request.
 *
 *	Regular expressions are Perl's, as postgrey's are, compiled by PCRE2
 *	(caseless, no JIT: the unit forbids writable executable memory) when
 *	the files are loaded, so a pattern PCRE2 refuses is a bad line at
 *	once. libpcre2-8 is loaded (log.c, lib_symbol) when a file holds a
 *	regular expression: linking it costs every process's start-up some
 *	27,000 instructions and 8 system calls, and most lists hold none. Every match is bounded by a match limit, a depth limit and a
 *	heap limit, so that no entry can stall a request; an entry that hits
 *	one counts as no match and is logged once per process.
 *
 *	Entries that cost nothing to test (addresses, names) are tested
 *	before the regexes. The built-in entries postmaster@ and abuse@ are
 *	always there.
 */

#define _GNU_SOURCE
#define PCRE2_CODE_UNIT_WIDTH 8

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pcre2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "greylist.h"

/* Each file is read whole; a bigger one is refused. 4 MiB is some
 * 100,000 lines, twenty times the largest lists seen in use. */
#define MAX_WL_FILE	(4 << 20)

/* A longer line is no entry anyone wrote by hand. */
#define MAX_WL_LINE	1000

/* A match gives up after this many backtracking steps (about 5 ms on the
 * test machine for /^(a+)+$/ against 30 a's and a b), this nesting, and
 * this much heap: a sane entry needs a few hundred steps. */
#define RE_MATCH_LIMIT	100000
#define RE_DEPTH_LIMIT	1000
#define RE_HEAP_KIB	1024

/* The match data and limits every match uses (one thread). */
static pcre2_match_data *md;
static pcre2_match_context *mc;

/* PCRE2's functions, in the order log.c's table loads them. */
enum { RE_COMPILE, RE_MATCH, RE_FREE, RE_MESSAGE, RE_DATA, RE_CONTEXT,
       RE_MATCH_LIMIT_FN, RE_DEPTH_LIMIT_FN, RE_HEAP_LIMIT_FN };
typedef pcre2_code *re_compile_fn(PCRE2_SPTR, PCRE2_SIZE, uint32_t, int *,
				  PCRE2_SIZE *, pcre2_compile_context *);
typedef int re_match_fn(const pcre2_code *, PCRE2_SPTR, PCRE2_SIZE,
			PCRE2_SIZE, uint32_t, pcre2_match_data *,
			pcre2_match_context *);
typedef void re_free_fn(pcre2_code *);
typedef int re_message_fn(int, PCRE2_UCHAR *, PCRE2_SIZE);
typedef pcre2_match_data *re_data_fn(uint32_t, pcre2_general_context *);
typedef pcre2_match_context *re_context_fn(pcre2_general_context *);
typedef int re_limit_fn(pcre2_match_context *, uint32_t);

/* RE - PCRE2's function i, of type t (re_ready() has loaded them all) */
#define RE(i, t)	((t *)lib_symbol(LIB_PCRE2, (i)))

/* How the set being loaded reports bad lines. */
static struct wl_set *loading;

/* wl_problem - a bad line: printed (check), logged, or only counted */
__attribute__((format(printf, 3, 4)))
static void wl_problem(const char *file, unsigned line, const char *fmt, ...)
{
	char msg[300];
	va_list ap;

	loading->problems++;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (loading->how == WLR_PRINT && line)
		printf("%s:%u: %s\n", file, line, msg);
	else if (loading->how == WLR_PRINT)
		printf("%s: %s\n", file, msg);
	else if (loading->how == WLR_LOG && line)
		msg_warn("%s:%u: %s; line skipped", file, line, msg);
	else if (loading->how == WLR_LOG)
		msg_warn("%s: %s; file skipped", file, msg);
}

/* parse_net - "address", "address/bits", or postgrey's partial IPv4
 * "a.b.c" (/24) and "a.b" (/16); IPv4-mapped IPv6 counts as IPv4 */
static int parse_net(const char *s, struct wl_entry *e)
{
	char addr[INET6_ADDRSTRLEN + 8];
	const char *slash = strchr(s, '/');
	size_t len = slash ? (size_t)(slash - s) : strlen(s), i;
	int dots = 0, mapped;
	char *end;

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
	mapped = strchr(addr, ':') != NULL;	/* IPv6 text, IPv4 family */
	if (parse_address(addr, &e->family, e->net) != 0)
		return -1;
	if (slash) {
		errno = 0;
		e->bits = strtoll(slash + 1, &end, 10);
		if (errno || *end || !isdigit((unsigned char)slash[1]))
			return -1;
		if (mapped && e->family == AF_INET)
			e->bits -= 96;	/* ::ffff:a.b.c.d/120 is a /24 */
	} else if (dots != 1 && dots != 2) {
		e->bits = e->family == AF_INET ? 32 : 128;
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

/* re_ready - PCRE2 loaded, with the match data and the limits every
 * match runs under; -1 when it cannot be */
static int re_ready(void)
{
	if (md && mc)
		return 0;
	if (!lib_symbol(LIB_PCRE2, RE_COMPILE))
		return -1;
	if (!md)
		md = RE(RE_DATA, re_data_fn)(1, NULL);
	if (!mc && (mc = RE(RE_CONTEXT, re_context_fn)(NULL))) {
		RE(RE_MATCH_LIMIT_FN, re_limit_fn)(mc, RE_MATCH_LIMIT);
		RE(RE_DEPTH_LIMIT_FN, re_limit_fn)(mc, RE_DEPTH_LIMIT);
		RE(RE_HEAP_LIMIT_FN, re_limit_fn)(mc, RE_HEAP_KIB);
	}
	return md && mc ? 0 : -1;
}

/* re_free - a compiled entry's memory back (PCRE2 is loaded if any is) */
static void re_free(void *re)
{
	if (re)
		RE(RE_FREE, re_free_fn)(re);
}

/* compile - a /regex/ entry; NULL, or what PCRE2 says is wrong */
static const char *compile(const char *re, size_t len, struct wl_entry *e)
{
	static char why[200];
	char msg[120];
	PCRE2_SIZE off;
	int err;

	if (re_ready() != 0)
		return "libpcre2-8.so.0 (Debian package libpcre2-8-0) cannot be"
			" loaded for regular expressions";
	e->re = RE(RE_COMPILE, re_compile_fn)((PCRE2_SPTR)re, len,
					      PCRE2_CASELESS, &err, &off, NULL);
	if (e->re)
		return NULL;
	RE(RE_MESSAGE, re_message_fn)(err, (PCRE2_UCHAR *)msg, sizeof(msg));
	snprintf(why, sizeof(why), "not a valid regular expression: %s (at"
		 " offset %zu)", msg, (size_t)off);
	return why;
}

/* client_value - one client entry: an address, a CIDR block, a host
 * name (lower-cased in place), or a regex */
static const char *client_value(char *v, size_t len, struct wl_entry *e)
{
	if (len >= 3 && v[0] == '/' && v[len - 1] == '/') {
		e->kind = WL_CLIENT_RE;
		e->text = v;		/* shown by greylistctl explain */
		return compile(v + 1, len - 2, e);
	}
	lower(v, v);
	if ((strchr(v, ':') || strspn(v, "0123456789./") == len)
	    && parse_net(v, e) == 0) {
		e->kind = WL_NET;
		return NULL;
	}
	if (strchr(v, '/') || strspn(v, "0123456789.") == len
	    || (!strchr(v, ':') && !is_name(v)))
		return "not an address, a CIDR block, a host name or a /regex/";
	if (strchr(v, ':'))
		return "not an IPv6 address or block";
	e->kind = WL_HOST;
	e->text = v;
	return NULL;
}

/* recipient_value - one recipient entry: user@, user@domain, a domain
 * (lower-cased in place), or a regex */
static const char *recipient_value(char *v, size_t len, struct wl_entry *e)
{
	char *at = strchr(v, '@');

	if (len >= 3 && v[0] == '/' && v[len - 1] == '/') {
		e->kind = WL_RCPT_RE;
		e->text = v;
		return compile(v + 1, len - 2, e);
	}
	lower(v, v);
	if (at && !at[1] && is_local_part(v, len - 1)) {
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
static int wl_add(struct wl_set *set, const struct wl_entry *e)
{
	struct wl_entry *p = grow(set->e, &set->cap, set->n + 1, sizeof(*p));

	if (!p)
		return -1;
	set->e = p;
	set->e[set->n++] = *e;
	return 0;
}

/* strip - cut a comment and surrounding white space, in place. In our
 * format "#" starts a comment at the start or after a space; in
 * postgrey's anywhere, as postgrey reads them. */
static char *strip(char *s, enum wl_format fmt)
{
	char *hash, *end;

	for (hash = s; (hash = strchr(hash, '#')); hash++)
		if (fmt != WLF_GREYLISTD || hash == s
		    || isspace((unsigned char)hash[-1])) {
			*hash = 0;
			break;
		}
	while (isspace((unsigned char)*s))
		s++;
	end = s + strlen(s);
	while (end > s && isspace((unsigned char)end[-1]))
		*--end = 0;
	return s;
}

/* keyword - our format's "client VALUE" or "recipient VALUE": the side
 * ('c' or 'r') and *s moved to the value, or 0 with *why */
static int keyword(char **s, const char **why)
{
	size_t kw = strcspn(*s, " \t");
	int side = 0;

	if (kw == 6 && strncmp(*s, "client", 6) == 0)
		side = 'c';
	else if (kw == 9 && strncmp(*s, "recipient", 9) == 0)
		side = 'r';
	*s += kw;
	*s += strspn(*s, " \t");
	if (!side)
		*why = "a line must start with \"client\" or \"recipient\"";
	else if (!**s || (**s != '/' && strpbrk(*s, " \t")))
		*why = "one value is expected after the keyword";
	return *why ? 0 : side;
}

/* wl_line - parse one line of a file in its format; comments and blank
 * lines are skipped */
static void wl_line(char *s, enum wl_format fmt, const char *file,
		    unsigned line)
{
	struct wl_entry e;
	const char *why = NULL;
	int side = fmt == WLF_CLIENTS ? 'c' : 'r';

	memset(&e, 0, sizeof(e));
	e.file = file;
	e.line = line;
	s = strip(s, fmt);
	if (!*s)
		return;
	if (fmt == WLF_GREYLISTD)
		side = keyword(&s, &why);
	if (!why)
		why = side == 'c' ? client_value(s, strlen(s), &e)
			: recipient_value(s, strlen(s), &e);
	if (!why && wl_add(loading, &e) != 0)
		why = "out of memory";
	if (why) {
		wl_problem(file, line, "%s", why);
		re_free(e.re);
	}
}

/* file_sig - what identifies one version of a file (its inode, size and
 * modification time), or its absence (the error); wl_signature sums them */
static uint64_t file_sig(const struct stat *st, int err)
{
	const long long v[5] = { (long long)st->st_dev, err ? err
		: (long long)st->st_ino, (long long)st->st_size,
		(long long)st->st_mtim.tv_sec, (long long)st->st_mtim.tv_nsec };
	uint64_t h = 14695981039346656037ULL;
	size_t i;

	for (i = 0; i < 5; i++)
		h = (h ^ (uint64_t)v[i]) * 1099511628211ULL;
	return h;
}

/* wl_read - read a whole regular file; NULL when it cannot be read
 * (errno set; EFBIG when it is over MAX_WL_FILE). Its version is added
 * to the set's signature. */
static char *wl_read(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	struct stat st;
	char *buf = NULL;
	ssize_t n = 0;
	size_t size = 0;

	*len = 0;
	memset(&st, 0, sizeof(st));
	if (fd < 0) {
		loading->sig += file_sig(&st, errno);
		return NULL;
	}
	if (fstat(fd, &st) == 0)
		loading->sig += file_sig(&st, 0);
	if (S_ISREG(st.st_mode)
	    && st.st_size <= MAX_WL_FILE) {
		size = (size_t)st.st_size + 1;	/* one more byte: EOF seen */
		buf = malloc(size + 1);
	}
	while (buf && (n = read(fd, buf + *len, size - *len)) > 0)
		*len += (size_t)n;
	close(fd);
	if (!buf || n < 0 || *len == size) {
		free(buf);
		errno = size == 0 ? (S_ISREG(st.st_mode) ? EFBIG : EINVAL)
			: !buf ? ENOMEM : n < 0 ? EIO : EFBIG;
		return NULL;
	}
	buf[*len] = 0;
	return buf;
}

/* optional - a file that may be missing: the default whitelist, and any
 * "*.local" file, as postgrey skips those */
static int optional(const char *path, int is_default)
{
	size_t n = strlen(path);

	return is_default || (n > 6 && strcmp(path + n - 6, ".local") == 0);
}

/* wl_file - read and parse one file */
static void wl_file(const char *path, enum wl_format fmt, int is_default)
{
	size_t len, linelen;
	char *buf = wl_read(path, &len), *line, *end, *nl;
	unsigned n = 0;

	if (!buf) {
		if (!(errno == ENOENT && optional(path, is_default)))
			wl_problem(path, 0, "cannot read: %s", errno == EFBIG
				   ? "larger than 4 MiB" : errno == EINVAL
				   ? "not a regular file" : strerror(errno));
		return;
	}
	end = buf + len;
	for (line = buf; line < end; line = nl + 1) {
		nl = memchr(line, '\n', (size_t)(end - line));
		if (!nl)
			nl = end;
		linelen = (size_t)(nl - line);
		*nl = 0;
		n++;
		if (memchr(line, 0, linelen))
			wl_problem(path, n, "NUL byte in the line");
		else if (linelen > MAX_WL_LINE)
			wl_problem(path, n, "line longer than %d bytes",
				   MAX_WL_LINE);
		else
			wl_line(line, fmt, path, n);
	}
	loading->bufs[loading->nbufs++] = buf;	/* entries point into it */
}



/* wl_builtin - postmaster@ and abuse@, never greylisted */
static void wl_builtin(struct wl_set *set)
{
	static char builtin[][16] = { "postmaster", "abuse" };
	struct wl_entry e;
	size_t i;

	for (i = 0; i < sizeof(builtin) / sizeof(builtin[0]); i++) {
		memset(&e, 0, sizeof(e));
		e.kind = WL_USER;
		e.text = builtin[i];
		e.file = "(built-in)";
		if (wl_add(set, &e) != 0)
			wl_problem(e.file, 0, "out of memory");
	}
}

/* wl_load - read a set from its files: with "defaults", the built-in
 * entries and the default whitelist (unless a file of our format is
 * named) first. The number of bad lines, reported as "how" says. */
int wl_load(struct wl_set *set, const struct wl_list *files,
	    enum wl_report how, int defaults)
{
	size_t i;
	int named = 0;

	wl_free(set);
	set->loaded = 1;
	set->how = how;
	loading = set;
	if (defaults)
		wl_builtin(set);
	for (i = 0; i < files->n; i++)
		named |= files->format[i] == WLF_GREYLISTD;
	if (defaults && !named)
		wl_file(DEFAULT_WHITELIST, WLF_GREYLISTD, 1);
	for (i = 0; i < files->n; i++)
		wl_file(files->path[i], files->format[i], 0);
	set->sig %= (uint64_t)MAX_TIME;
	loading = NULL;
	return set->problems;
}

/* wl_free - forget a set's entries (to load them again) */
void wl_free(struct wl_set *set)
{
	size_t i;

	for (i = 0; i < set->n; i++)
		re_free(set->e[i].re);
	for (i = 0; i < set->nbufs; i++)
		free(set->bufs[i]);
	free(set->e);
	memset(set, 0, sizeof(*set));
}

/* wl_signature - identifies this version of the files a set with the
 * defaults reads (wl_load adds up the same while it reads them) */
long long wl_signature(const struct wl_list *files)
{
	struct stat st;
	uint64_t sig = 0;
	size_t i;
	int named = 0;

	for (i = 0; i <= files->n; i++) {
		if (i == files->n && named)
			break;
		named |= i < files->n && files->format[i] == WLF_GREYLISTD;
		memset(&st, 0, sizeof(st));
		sig += stat(i < files->n ? files->path[i] : DEFAULT_WHITELIST, &st)
			== 0 ? file_sig(&st, 0) : file_sig(&st, errno);
	}
	return (long long)(sig % (uint64_t)MAX_TIME);
}

/* wl_regex - does a regex entry match the subject? A match that runs
 * into a limit is no match, and is logged once per entry. PCRE2 counts
 * the match limit afresh at each start position in the subject, so each
 * position gets its share of RE_MATCH_LIMIT: the whole match stays
 * within it (without the share, /.+x/ took 0.7 s on an 8 KiB value). */
static int wl_regex(struct wl_entry *e, const char *subject)
{
	size_t len = strlen(subject);
	int rc;

	RE(RE_MATCH_LIMIT_FN, re_limit_fn)(mc, (uint32_t)(RE_MATCH_LIMIT
							  / (len + 1) + 1));
	rc = RE(RE_MATCH, re_match_fn)(e->re, (PCRE2_SPTR)subject, len, 0, 0,
				       md, mc);

	if (rc >= 0)
		return 1;
	if (rc != PCRE2_ERROR_NOMATCH && !e->failed) {
		char why[120];

		e->failed = 1;
		RE(RE_MESSAGE, re_message_fn)(rc, (PCRE2_UCHAR *)why,
					      sizeof(why));
		msg_warn("%s:%u: the regular expression gave up (%s);"
			 " taken as no match", e->file, e->line, why);
	}
	return 0;
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
 * regexes are tested against a verified, lower-case name only ("" when
 * there is none). */
const struct wl_entry *wl_client(const struct wl_set *set, int family,
				 const unsigned char *a, const char *name)
{
	size_t i;
	int pass;

	for (pass = 0; pass < 2; pass++)
		for (i = 0; i < set->n; i++)
			if (client_matches(&set->e[i], pass, family, a, name))
				return &set->e[i];
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
const struct wl_entry *wl_recipient(const struct wl_set *set,
				    const char *rcpt)
{
	const char *at = strrchr(rcpt, '@');
	size_t i;
	int pass;

	for (pass = 0; pass < 2; pass++)
		for (i = 0; i < set->n; i++)
			if (rcpt_matches(&set->e[i], pass, rcpt, at))
				return &set->e[i];
	return NULL;
}

/* wl_match - the entry that whitelists a request's client (its address,
 * or its name when Postfix verified it: client_name is "unknown"
 * otherwise) or else its recipient, or NULL; *v says which: V_WL_CLIENT,
 * V_WL_RCPT, or V_NEW for none. The server and greylistctl explain both
 * ask here. The name is at most MAX_LINE bytes. */
const struct wl_entry *wl_match(const struct wl_set *set,
				const struct triplet *t, const char *name,
				enum verdict *v)
{
	char lname[MAX_LINE + 1];
	const struct wl_entry *e;

	lower(lname, name && strcmp(name, "unknown") != 0 ? name : "");
	if ((e = wl_client(set, t->family, t->bin, lname))) {
		*v = V_WL_CLIENT;
		return e;
	}
	e = wl_recipient(set, t->recipient);
	*v = e ? V_WL_RCPT : V_NEW;
	return e;
}
