/*
 * fuzz_whitelist - whitelist.c's parser and matcher (PCRE2) under
 * libFuzzer.
 *
 * The bytes are a whitelist file (a memfd), loaded by wl_load() in each
 * of the three formats (ours, with the built-in entries; postgrey's
 * clients and recipients): wl_read, the line splitting and checks,
 * wl_line, strip, keyword, client_value, recipient_value, parse_net,
 * compile. A model of the file's lines says, independently, which lines
 * are nothing (blank, comment), which are bad, and which are /regex/
 * entries; it compiles each regex itself with PCRE2 as whitelist.c says
 * it does (caseless, no JIT). Then clients and recipients (fixed ones,
 * the input's words, and subjects as long as a request value may be)
 * are matched by wl_client() and wl_recipient() and by the model, and
 * all is freed (wl_free). Invariants:
 *   - every line gives one entry or one counted problem, never both: a
 *     bad line or a pattern PCRE2 refuses is a problem, never an entry;
 *     blank and comment lines give neither;
 *   - every entry is of its file's side, with a lower-case text; a
 *     network entry is the address and prefix inet_pton gives for its
 *     line, masked;
 *   - an entry whitelists what it names: a network its own address, a
 *     host name itself and its subdomains, user@ that user at any domain
 *     (with a +extension too), an address itself, a domain any address in
 *     it;
 *   - wl_client and wl_recipient give the entry the model gives: the
 *     first that matches, addresses and names before regexes, a regex
 *     matching as the model's own compiled pattern under the same match,
 *     depth and heap limits (one that gives up is no match);
 *   - no call takes longer than its regexes' limits allow: at most
 *     MATCH_CPU_MS of CPU time for each regex entry it tries (libFuzzer's
 *     -timeout catches a hang outright);
 *   - nothing leaks (libFuzzer's leak check, after wl_free).
 */

#include "fuzz.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <time.h>

#include "whitelist.c"

/* A match gives up after RE_MATCH_LIMIT steps, which whitelist.c puts at
 * about 5 ms; a call that takes more than this much CPU time for each
 * regex it tries is not bounded by the limits. */
#define MATCH_CPU_MS	100

/* The longest subject a request can bring: one value of a line. */
#define MAX_SUBJECT	MAX_LINE

static int wl_fd = -1;
static char wl_path[64];

/* The model's match data and limits: those whitelist.c says it uses. */
static pcre2_match_data *m_md;
static pcre2_match_context *m_mc;

/* Strings every entry is tried on: fixed ones, long ones, then the
 * input's words. */
static const char *const fixed[] = {
	"", "mail.example.com", "mx1.example.net", "mail12.perl.example",
	"relay.lazy.example", "fallback-3.example.org", "1-2-3.dyn.isp.example",
	"postmaster@example.org", "noc-1@example.com", "list-x@lists.example",
	"bob+ext@example.net", "a.b", "ab", "abc", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaa!",
	"x@", "@x", "sales+@example.com",
};
#define NFIXED (sizeof(fixed) / sizeof(fixed[0]))
#define MAX_WORDS 16

/* What the model says of one line. */
enum m_kind { ML_NONE, ML_BAD, ML_REGEX, ML_OTHER };

struct m_line {
	enum m_kind kind;
	int side;			/* 'c' or 'r' */
	pcre2_code *re;			/* ML_REGEX: the model's own */
	char value[MAX_WL_LINE + 1];	/* ML_OTHER: the value */
	const struct wl_entry *e;	/* the set's entry of this line */
};

/* The model of the current file: one element per line. */
static struct m_line *lines;
static size_t nlines, cap_lines;

/* m_strip - whitelist.c's documented comment rule: in our format "#"
 * starts a comment at the start or after white space, in postgrey's
 * anywhere; then white space is cut at both ends */
static char *m_strip(char *s, enum wl_format fmt)
{
	char *p, *end;

	for (p = s; *p; p++)
		if (*p == '#' && (fmt != WLF_GREYLISTD || p == s
				  || isspace((unsigned char)p[-1]))) {
			*p = 0;
			break;
		}
	while (isspace((unsigned char)*s))
		s++;
	end = s + strlen(s);
	while (end > s && isspace((unsigned char)end[-1]))
		*--end = 0;
	return s;
}

/* m_classify - one line (NUL-free, at most MAX_WL_LINE) into l */
static void m_classify(char *s, enum wl_format fmt, struct m_line *l)
{
	size_t kw, len;
	PCRE2_SIZE off;
	int err;

	s = m_strip(s, fmt);
	l->kind = ML_NONE;
	if (!*s)
		return;
	l->kind = ML_BAD;
	l->side = fmt == WLF_CLIENTS ? 'c' : 'r';
	if (fmt == WLF_GREYLISTD) {
		kw = strcspn(s, " \t");
		if (kw == 6 && strncmp(s, "client", 6) == 0)
			l->side = 'c';
		else if (kw == 9 && strncmp(s, "recipient", 9) == 0)
			l->side = 'r';
		else
			return;
		s += kw;
		s += strspn(s, " \t");
		if (!*s || (*s != '/' && strpbrk(s, " \t")))
			return;
	}
	len = strlen(s);
	if (len >= 3 && s[0] == '/' && s[len - 1] == '/') {
		l->re = pcre2_compile((PCRE2_SPTR)s + 1, len - 2,
				      PCRE2_CASELESS, &err, &off, NULL);
		if (l->re)
			l->kind = ML_REGEX;
		return;
	}
	l->kind = ML_OTHER;
	memcpy(l->value, s, len + 1);
}

/* m_lines - the model of a whole file, cut into lines as wl_file says */
static void m_lines(const uint8_t *data, size_t size, enum wl_format fmt)
{
	static char buf[MAX_WL_LINE + 1];
	size_t i = 0, n;
	const uint8_t *nl;

	nlines = 0;
	while (i < size) {
		nl = memchr(data + i, '\n', size - i);
		n = nl ? (size_t)(nl - (data + i)) : size - i;
		lines = grow(lines, &cap_lines, nlines + 1, sizeof(*lines));
		CHECK(lines, "out of memory");
		memset(&lines[nlines], 0, sizeof(lines[nlines]));
		if (memchr(data + i, 0, n) || n > MAX_WL_LINE) {
			lines[nlines].kind = ML_BAD;
		} else {
			memcpy(buf, data + i, n);
			buf[n] = 0;
			m_classify(buf, fmt, &lines[nlines]);
		}
		nlines++;
		i += n + 1;
	}
}

/* m_net - the network a client value names, by inet_pton: an address,
 * address/bits (IPv4-mapped IPv6 counts as IPv4: /120 is a /24), or
 * postgrey's "a.b.c" (/24) and "a.b" (/16); 0 when it names one */
static int m_net(const char *v, int *family, unsigned char *net,
		 long long *bits)
{
	static const unsigned char mapped[12] =
		{ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	char addr[INET6_ADDRSTRLEN + 16], *end;
	const char *slash = strchr(v, '/');
	size_t len = slash ? (size_t)(slash - v) : strlen(v), i, dots = 0;
	unsigned char a[16];

	if (len >= INET6_ADDRSTRLEN + 4)
		return -1;
	memcpy(addr, v, len);
	addr[len] = 0;
	for (i = 0; i < len; i++)
		dots += addr[i] == '.';
	*bits = -1;
	if (!slash && !strchr(addr, ':') && (dots == 1 || dots == 2)) {
		strcat(addr, dots == 1 ? ".0.0" : ".0");
		*bits = (long long)dots * 8 + 8;
	}
	if (inet_pton(AF_INET, addr, a) == 1) {
		*family = AF_INET;
	} else if (inet_pton(AF_INET6, addr, a) == 1) {
		*family = AF_INET6;
		if (memcmp(a, mapped, 12) == 0) {
			*family = AF_INET;
			memmove(a, a + 12, 4);
			if (slash)
				*bits = -96;	/* added to the given bits */
		}
	} else {
		return -1;
	}
	if (slash) {
		if (!isdigit((unsigned char)slash[1]))
			return -1;
		errno = 0;
		*bits = (*bits == -96 ? -96 : 0) + strtoll(slash + 1, &end, 10);
		if (errno || *end)
			return -1;
	} else if (*bits < 0) {
		*bits = *family == AF_INET ? 32 : 128;
	}
	if (*bits < 0 || *bits > (*family == AF_INET ? 32 : 128))
		return -1;
	for (i = 0; i < 16; i++)
		if ((long long)i * 8 >= *bits)
			a[i] = 0;
		else if ((long long)i * 8 + 8 > *bits)
			a[i] &= (unsigned char)(0xff << (8 - (*bits - (long long)i * 8)));
	memcpy(net, a, 16);
	return 0;
}

/* m_looks_like_net - whitelist.c's rule for a client value that must be
 * a network if anything: a colon, or only digits, dots and slashes */
static int m_looks_like_net(const char *v)
{
	return strchr(v, ':') || strspn(v, "0123456789./") == strlen(v);
}

/* check_entry - one entry: its line, its side, its text, and what it
 * must whitelist */
static void check_entry(const struct wl_set *set, const struct wl_entry *e,
			enum wl_format fmt)
{
	static char buf[2 * MAX_WL_LINE + 64];
	int client = e->kind == WL_NET || e->kind == WL_HOST
		|| e->kind == WL_CLIENT_RE, family;
	int regex = e->kind == WL_CLIENT_RE || e->kind == WL_RCPT_RE;
	size_t i, len = e->family == AF_INET ? 4 : 16;
	unsigned char net[16];
	struct m_line *l;
	long long bits;

	if (strcmp(e->file, "(built-in)") == 0) {
		CHECK(fmt == WLF_GREYLISTD && e->kind == WL_USER,
		      "a built-in entry in format %d", fmt);
		return;
	}
	CHECK(e->file == wl_path || strcmp(e->file, wl_path) == 0,
	      "an entry of another file: %s", e->file);
	CHECK(e->line >= 1 && e->line <= nlines, "an entry of line %u of %zu",
	      e->line, nlines);
	l = &lines[e->line - 1];
	CHECK(!l->e, "line %u gave two entries", e->line);
	l->e = e;
	CHECK(l->kind == ML_REGEX || l->kind == ML_OTHER,
	      "line %u gave an entry, but it is %s", e->line,
	      l->kind == ML_NONE ? "blank or a comment" : "bad");
	CHECK((l->kind == ML_REGEX) == regex, "line %u: a regex %s", e->line,
	      regex ? "entry of a line that is no regex (or one PCRE2 refuses)"
	      : "line that gave another entry");
	CHECK(client == (l->side == 'c'), "line %u: an entry of the wrong side"
	      " (kind %d)", e->line, e->kind);
	CHECK(!regex || e->re, "line %u: a regex entry without its code",
	      e->line);
	if (regex)
		return;
	CHECK(e->text || e->kind == WL_NET, "line %u: an entry without text",
	      e->line);
	for (i = 0; e->text && e->text[i]; i++)
		CHECK(!isupper((unsigned char)e->text[i]),
		      "upper case in \"%s\": it can never match", e->text);
	if (l->side == 'c' && m_looks_like_net(l->value)) {
		CHECK(e->kind == WL_NET, "line %u: \"%s\" gave kind %d",
		      e->line, l->value, e->kind);
		CHECK(m_net(l->value, &family, net, &bits) == 0,
		      "line %u: \"%s\" is no network inet_pton reads", e->line,
		      l->value);
		CHECK(e->family == family && e->bits == bits
		      && memcmp(e->net, net, len) == 0,
		      "line %u: \"%s\" read as family %d /%lld", e->line,
		      l->value, e->family, e->bits);
	}
	switch (e->kind) {
	case WL_NET:
		CHECK(wl_client(set, e->family, e->net, ""),
		      "a network entry does not whitelist its own address");
		break;
	case WL_HOST:
		CHECK(wl_client(set, AF_INET, (const unsigned char *)"\0\0\0\0",
				e->text), "host %s not whitelisted", e->text);
		snprintf(buf, sizeof(buf), "mx.%s", e->text);
		CHECK(wl_client(set, AF_INET, (const unsigned char *)"\0\0\0\0",
				buf), "subdomain %s not whitelisted", buf);
		break;
	case WL_USER:
		snprintf(buf, sizeof(buf), "%s@example.org", e->text);
		CHECK(wl_recipient(set, buf), "user %s not whitelisted", buf);
		snprintf(buf, sizeof(buf), "%s+ext@example.org", e->text);
		CHECK(wl_recipient(set, buf), "user %s not whitelisted", buf);
		break;
	case WL_ADDRESS:
		CHECK(wl_recipient(set, e->text), "address %s not whitelisted",
		      e->text);
		break;
	case WL_DOMAIN:
		snprintf(buf, sizeof(buf), "x@%s", e->text);
		CHECK(wl_recipient(set, buf), "domain %s not whitelisted", buf);
		snprintf(buf, sizeof(buf), "x@a.%s", e->text);
		CHECK(wl_recipient(set, buf), "subdomain %s not whitelisted", buf);
		break;
	case WL_CLIENT_RE:
	case WL_RCPT_RE:
		break;
	}
}

/* m_regex - the model's own pattern of a regex entry matches s, under
 * the limits whitelist.c states (a match that gives up is no match; the
 * match limit is shared among the subject's start positions, as PCRE2
 * counts it afresh at each) */
static int m_regex(const struct wl_entry *e, const char *s)
{
	size_t len = strlen(s);

	pcre2_set_match_limit(m_mc, (uint32_t)(RE_MATCH_LIMIT / (len + 1) + 1));
	return pcre2_match(lines[e->line - 1].re, (PCRE2_SPTR)s, len, 0, 0,
			   m_md, m_mc) >= 0;
}

/* m_ends_with - name is domain, or a subdomain of it */
static int m_ends_with(const char *name, const char *domain)
{
	size_t n = strlen(name), m = strlen(domain);

	return n >= m && strcmp(name + n - m, domain) == 0
		&& (n == m || name[n - m - 1] == '.');
}

/* m_client - the entry that whitelists a client: the first address or
 * name entry that matches, else the first regex; NULL when none */
static const struct wl_entry *m_client(const struct wl_set *set,
				       int family, const unsigned char *a,
				       const char *name)
{
	size_t i, j, len = family == AF_INET ? 4 : 16;
	const struct wl_entry *e;
	unsigned char m[16];

	for (i = 0; i < set->n; i++) {
		e = &set->e[i];
		if (e->kind == WL_NET && e->family == family) {
			memcpy(m, a, len);
			for (j = 0; j < len; j++)
				if ((long long)j * 8 >= e->bits)
					m[j] = 0;
				else if ((long long)j * 8 + 8 > e->bits)
					m[j] &= (unsigned char)(0xff <<
						(8 - (e->bits - (long long)j * 8)));
			if (memcmp(m, e->net, len) == 0)
				return e;
		}
		if (e->kind == WL_HOST && *name && m_ends_with(name, e->text))
			return e;
	}
	for (i = 0; i < set->n; i++)
		if (set->e[i].kind == WL_CLIENT_RE && *name
		    && m_regex(&set->e[i], name))
			return &set->e[i];
	return NULL;
}

/* m_local - the local part [r, r+n) is the entry's, or the entry's and a
 * +extension */
static int m_local(const char *r, size_t n, const char *l, size_t m)
{
	return n >= m && memcmp(r, l, m) == 0 && (n == m || r[m] == '+');
}

/* m_recipient - the entry that whitelists a recipient, as m_client */
static const struct wl_entry *m_recipient(const struct wl_set *set,
					  const char *rcpt)
{
	const char *at = strrchr(rcpt, '@'), *eat;
	const struct wl_entry *e;
	size_t i;

	for (i = 0; at && i < set->n; i++) {
		e = &set->e[i];
		if (e->kind == WL_USER
		    && m_local(rcpt, (size_t)(at - rcpt), e->text, strlen(e->text)))
			return e;
		if (e->kind == WL_ADDRESS && (eat = strrchr(e->text, '@'))
		    && strcmp(at, eat) == 0
		    && m_local(rcpt, (size_t)(at - rcpt), e->text,
			       (size_t)(eat - e->text)))
			return e;
		if (e->kind == WL_DOMAIN && m_ends_with(at + 1, e->text))
			return e;
	}
	for (i = 0; i < set->n; i++)
		if (set->e[i].kind == WL_RCPT_RE && m_regex(&set->e[i], rcpt))
			return &set->e[i];
	return NULL;
}

/* cpu_ms - this thread's CPU time */
static double cpu_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* check_match - one subject as a client name (from each address) and as
 * a recipient: the set's verdict is the model's, within the time the
 * limits allow */
static void check_match(const struct wl_set *set, size_t nre,
			const char *s)
{
	static const unsigned char v4[][4] = {
		{ 192, 0, 2, 25 }, { 10, 1, 2, 3 }, { 255, 255, 255, 255 },
	};
	static const unsigned char v6[16] =
		{ 0x20, 0x01, 0x0d, 0xb8, 0, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 };
	const struct wl_entry *got, *want;
	double t, bound = (double)(nre + 1) * MATCH_CPU_MS;
	size_t i;

	for (i = 0; i <= sizeof(v4) / sizeof(v4[0]); i++) {
		int fam = i < sizeof(v4) / sizeof(v4[0]) ? AF_INET : AF_INET6;
		const unsigned char *a = fam == AF_INET ? v4[i] : v6;

		t = cpu_ms();
		got = wl_client(set, fam, a, s);
		t = cpu_ms() - t;
		CHECK(t <= bound, "wl_client took %.0f ms of CPU for \"%.60s\""
		      " (%zu bytes), %zu regexes", t, s, strlen(s), nre);
		want = m_client(set, fam, a, s);
		CHECK(got == want, "wl_client(\"%.60s\") gave line %u, the model"
		      " line %u", s, got ? got->line : 0, want ? want->line : 0);
	}
	t = cpu_ms();
	got = wl_recipient(set, s);
	t = cpu_ms() - t;
	CHECK(t <= bound, "wl_recipient took %.0f ms of CPU for \"%.60s\" (%zu"
	      " bytes), %zu regexes", t, s, strlen(s), nre);
	want = m_recipient(set, s);
	CHECK(got == want, "wl_recipient(\"%.60s\") gave line %u, the model"
	      " line %u", s, got ? got->line : 0, want ? want->line : 0);
}

/* check_set - the set loaded from the file in one format, against the
 * model of its lines */
static void check_set(const struct wl_set *set, enum wl_format fmt,
		      int problems)
{
	size_t i, want = 0;
	unsigned char net[16];
	long long bits;
	int family;

	for (i = 0; i < set->n; i++)
		check_entry(set, &set->e[i], fmt);
	for (i = 0; i < nlines; i++) {
		CHECK(lines[i].kind != ML_REGEX || lines[i].e, "line %zu: a"
		      " regex PCRE2 compiles gave no entry", i + 1);
		CHECK(lines[i].kind != ML_OTHER || lines[i].e
		      || lines[i].side != 'c'
		      || !m_looks_like_net(lines[i].value)
		      || m_net(lines[i].value, &family, net, &bits) != 0,
		      "line %zu: the network \"%s\" was refused", i + 1,
		      lines[i].value);
		want += lines[i].kind == ML_BAD
			|| (lines[i].kind == ML_OTHER && !lines[i].e);
	}
	CHECK(problems == set->problems && (size_t)problems == want,
	      "format %d: %d problems counted (%d returned), %zu lines bad or"
	      " without an entry", fmt, set->problems, problems, want);
}

/* words - the input's words, lower-cased, as extra subjects; and one
 * subject as long as a request value, of the first word repeated */
static size_t words(const uint8_t *data, size_t size, char **w, char *copy,
		    char *longest)
{
	char *p, *save = NULL;
	size_t n = 0, o = 0, len;

	memcpy(copy, data, size);
	copy[size] = 0;
	for (p = strtok_r(copy, " \t\n/^$#", &save); p && n < MAX_WORDS;
	     p = strtok_r(NULL, " \t\n/^$#", &save)) {
		lower(p, p);
		w[n++] = p;
	}
	len = n ? strlen(w[0]) : 0;
	while (len && o + len <= MAX_SUBJECT) {
		memcpy(longest + o, w[0], len);
		o += len;
	}
	longest[o] = 0;
	return n;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	wl_fd = fz_memfd("whitelist");
	fz_path(wl_fd, wl_path, sizeof(wl_path));
	cfg.log_file = "/dev/null";	/* a regex that gives up is logged */
	log_open();
	m_md = pcre2_match_data_create(1, NULL);
	m_mc = pcre2_match_context_create(NULL);
	if (!m_md || !m_mc)
		abort();
	pcre2_set_match_limit(m_mc, RE_MATCH_LIMIT);
	pcre2_set_depth_limit(m_mc, RE_DEPTH_LIMIT);
	pcre2_set_heap_limit(m_mc, RE_HEAP_KIB);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char copy[(1 << 16) + 1], longest[MAX_SUBJECT + 1];
	static char aaa[MAX_SUBJECT + 1];
	static char *w[MAX_WORDS];
	struct wl_list files = { { wl_path }, { WLF_GREYLISTD }, 1 };
	struct wl_set set;
	size_t nw, i, nre;
	int fmt, problems;

	if (size > 1 << 16)
		return 0;
	if (!aaa[0]) {
		memset(aaa, 'a', MAX_SUBJECT - 1);
		aaa[MAX_SUBJECT - 1] = '!';
	}
	nw = words(data, size, w, copy, longest);
	fz_set(wl_fd, data, size);
	for (fmt = WLF_GREYLISTD; fmt <= WLF_RECIPIENTS; fmt++) {
		memset(&set, 0, sizeof(set));
		files.format[0] = (enum wl_format)fmt;
		m_lines(data, size, (enum wl_format)fmt);
		problems = wl_load(&set, &files, WLR_COUNT, fmt == WLF_GREYLISTD);
		check_set(&set, (enum wl_format)fmt, problems);
		for (nre = i = 0; i < set.n; i++)
			nre += set.e[i].kind == WL_CLIENT_RE
				|| set.e[i].kind == WL_RCPT_RE;
		for (i = 0; i < NFIXED; i++)
			check_match(&set, nre, fixed[i]);
		for (i = 0; i < nw; i++)
			check_match(&set, nre, w[i]);
		check_match(&set, nre, aaa);
		check_match(&set, nre, longest);
		wl_free(&set);
		CHECK(set.n == 0 && !set.e && set.nbufs == 0, "wl_free left"
		      " entries");
		for (i = 0; i < nlines; i++)
			pcre2_code_free(lines[i].re);
	}
	return 0;
}
