/*
 * fuzz_whitelist - the whitelist parser and matcher under libFuzzer.
 *
 * The bytes are a whitelist file (a memfd), read by wl_file() in each of
 * the three formats (ours, postgrey's clients, postgrey's recipients):
 * wl_read, the line splitting and checks, wl_line, parse_value,
 * parse_net, translate_regex, required_suffix. Then fixed clients and
 * recipients are matched, every entry is matched against what it names
 * itself, every regex is compiled (as wl_check_all does) and all is
 * freed (wl_free). Invariants:
 *   - every entry is of its file's side, with a lower-case text, and a
 *     network entry's prefix is in range and its address masked;
 *   - an entry whitelists what it names: a network its own address, a
 *     host name itself and its subdomains, user@ that user at any
 *     domain, an address itself, a domain any address in it;
 *   - a regex's required suffix (which lets a request skip compiling it)
 *     ends every string the regex matches, among the strings tried.
 */

#include "fuzz.h"

#define main greylistd_main
#ifdef GREYLISTD_SRC
#include GREYLISTD_SRC
#else
#include "../greylistd.c"
#endif
#undef main

static int wl_fd = -1;
static char wl_path[64];

/* Strings every regex is tried on: fixed ones, then the input's words. */
static const char *const subjects[] = {
	"", "mail.example.com", "mx1.example.net", "mail12.perl.example",
	"relay.lazy.example", "fallback-3.example.org", "1-2-3.dyn.isp.example",
	"postmaster@example.org", "noc-1@example.com", "list-x@lists.example",
	"bob+ext@example.net", "a.b", "ab", "abc",
};

/* matches_plain - does regcomp'd re match s (for the suffix check)? */
static int matches_plain(const regex_t *re, const char *s)
{
	return regexec(re, s, 0, NULL, 0) == 0;
}

/* check_suffix - every subject the regex matches ends with its suffix */
static void check_suffix(const struct wl_entry *e, char **words, size_t nw)
{
	regex_t re;
	size_t i, m = strlen(e->suffix), n;
	const char *s;

	if (regcomp(&re, e->text, REG_EXTENDED | REG_ICASE | REG_NOSUB) != 0)
		return;
	for (i = 0; i < sizeof(subjects) / sizeof(subjects[0]) + nw; i++) {
		s = i < nw ? words[i] : subjects[i - nw];
		n = strlen(s);
		if (matches_plain(&re, s))
			CHECK(m <= n && memcmp(s + n - m, e->suffix, m) == 0,
			      "/%s/ matches \"%.80s\", which does not end with"
			      " its required suffix \"%s\"", e->text, s,
			      e->suffix);
	}
	regfree(&re);
}

/* check_entry - the entry's shape and what it must whitelist */
static void check_entry(const struct wl_entry *e, enum wl_format fmt)
{
	static char buf[2200];
	int client = e->kind == WL_NET || e->kind == WL_HOST
		|| e->kind == WL_CLIENT_RE;
	size_t i, len = e->family == AF_INET ? 4 : 16;

	CHECK(e->text || e->kind == WL_NET, "an entry without text");
	CHECK(fmt == WLF_GREYLISTD || client == (fmt == WLF_CLIENTS),
	      "an entry of the wrong side (kind %d) in format %d", e->kind, fmt);
	if (e->kind != WL_CLIENT_RE && e->kind != WL_RCPT_RE && e->text)
		for (i = 0; e->text[i]; i++)
			CHECK(!isupper((unsigned char)e->text[i]),
			      "upper case in \"%s\": it can never match", e->text);
	switch (e->kind) {
	case WL_NET:
		CHECK((e->family == AF_INET && e->bits >= 0 && e->bits <= 32)
		      || (e->family == AF_INET6 && e->bits >= 0
			  && e->bits <= 128), "a network /%lld", e->bits);
		for (i = 0; i < len * 8; i++)
			if ((long long)i >= e->bits)
				CHECK(!(e->net[i / 8] & (0x80 >> (i % 8))),
				      "a network not masked to /%lld", e->bits);
		CHECK(wl_client(e->family, e->net, ""),
		      "a network entry does not whitelist its own address");
		break;
	case WL_HOST:
		CHECK(wl_client(AF_INET, (const unsigned char *)"\0\0\0\0",
				e->text), "host %s not whitelisted", e->text);
		snprintf(buf, sizeof(buf), "mx.%s", e->text);
		CHECK(wl_client(AF_INET, (const unsigned char *)"\0\0\0\0", buf),
		      "subdomain %s not whitelisted", buf);
		break;
	case WL_USER:
		snprintf(buf, sizeof(buf), "%s@example.org", e->text);
		CHECK(wl_recipient(buf), "user %s not whitelisted", buf);
		snprintf(buf, sizeof(buf), "%s+ext@example.org", e->text);
		CHECK(wl_recipient(buf), "user %s not whitelisted", buf);
		break;
	case WL_ADDRESS:
		CHECK(wl_recipient(e->text), "address %s not whitelisted",
		      e->text);
		break;
	case WL_DOMAIN:
		snprintf(buf, sizeof(buf), "x@%s", e->text);
		CHECK(wl_recipient(buf), "domain %s not whitelisted", buf);
		snprintf(buf, sizeof(buf), "x@a.%s", e->text);
		CHECK(wl_recipient(buf), "subdomain %s not whitelisted", buf);
		break;
	case WL_CLIENT_RE:
	case WL_RCPT_RE:
		break;
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	wl_fd = fz_memfd("whitelist");
	fz_path(wl_fd, wl_path, sizeof(wl_path));
	log_fd = open("/dev/null", O_WRONLY);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const unsigned char v4[][4] = {
		{ 192, 0, 2, 25 }, { 198, 51, 100, 7 }, { 10, 1, 2, 3 },
		{ 0, 0, 0, 0 }, { 255, 255, 255, 255 },
	};
	static const unsigned char v6[16] =
		{ 0x20, 0x01, 0x0d, 0xb8, 0, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 };
	static char *words[64];
	char *copy, *w, *save = NULL;
	size_t nw = 0, i, j;
	int fmt;

	if (size > 1 << 16)
		return 0;
	/* Words of the input, lower-cased, as extra regex subjects. */
	copy = malloc(size + 1);
	if (!copy)
		return 0;
	memcpy(copy, data, size);
	copy[size] = 0;
	for (w = strtok_r(copy, " \t\n/^$#", &save); w && nw < 64;
	     w = strtok_r(NULL, " \t\n/^$#", &save)) {
		lower(w, w);
		words[nw++] = w;
	}
	fz_set(wl_fd, data, size);
	for (fmt = WLF_GREYLISTD; fmt <= WLF_RECIPIENTS; fmt++) {
		wl.loaded = 1;
		wl_file(wl_path, (enum wl_format)fmt, 0);
		for (i = 0; i < sizeof(v4) / sizeof(v4[0]); i++)
			for (j = 0; j < sizeof(subjects) / sizeof(subjects[0]); j++)
				wl_client(AF_INET, v4[i], subjects[j]);
		wl_client(AF_INET6, v6, "mail.example.com");
		for (j = 0; j < sizeof(subjects) / sizeof(subjects[0]); j++)
			wl_recipient(subjects[j]);
		for (j = 0; j < nw; j++) {
			wl_recipient(words[j]);
			wl_client(AF_INET, v4[0], words[j]);
		}
		for (i = 0; i < wl.n; i++) {
			check_entry(&wl.e[i], (enum wl_format)fmt);
			if ((wl.e[i].kind == WL_CLIENT_RE
			     || wl.e[i].kind == WL_RCPT_RE) && wl.e[i].suffix)
				check_suffix(&wl.e[i], words, nw);
		}
		/* wl_check_all's loop: compile every regex. */
		for (i = 0; i < wl.n; i++)
			if (wl.e[i].kind == WL_CLIENT_RE
			    || wl.e[i].kind == WL_RCPT_RE) {
				free(wl.e[i].suffix);
				wl.e[i].suffix = NULL;
				wl_regex(&wl.e[i], "");
			}
		wl_free();
	}
	free(copy);
	return 0;
}
