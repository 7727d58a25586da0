/*
 * fuzz_gp - greylistd.c's Debian greylistd protocol
 * (--greylistd-protocol: gp_serve, gp_line, gp_words, gp_client,
 * gp_shape, gp_decide, gp_answer, gp_refuse) under libFuzzer.
 *
 * The bytes after a 2-byte header are what Exim's ${readsocket} sends:
 * they are put in a memfd that serves as the connection's input, read
 * through fuzz.h's short reads, and gp_serve() answers on another memfd;
 * the log goes to a third. The store is fuzz_serve.h's (the real rule
 * over scenarios). A model of the protocol, written from greylistd.8's
 * DEBIAN GREYLISTD'S PROTOCOL and README's "Switching from Debian's
 * greylistd" (it calls none of the gp_ functions), says what the one
 * answer and the log must be:
 *   - the line is the input up to its first LF, or all of it when it
 *     ends first (Exim half-closes), one CR at its end cut. Refused with
 *     a warning naming why, and "false": 64 KiB without a LF ("a line
 *     longer than 64 KiB"), a NUL byte anywhere in the line ("a NUL byte
 *     in the line"); no timeout here: the input is a memfd, which ends;
 *   - its words are split at spaces and tabs, in ASCII lower case; more
 *     than GP_MAX_WORDS ("more than 64 words") or a word longer than
 *     MAX_LINE ("a word longer than 8448 bytes"; a policy value's bound:
 *     a sender or recipient must fit a triplet), whichever comes first,
 *     refuse it: that warning, "false";
 *   - no word at all: refused (the warning shows "(an empty line)");
 *   - a first word that is one of Debian greylistd's other commands
 *     (check status add delete list stats mrtg save reload clear):
 *     refused with a warning naming it;
 *   - "[update] --black" and at least 3 words: "false", nothing logged;
 *   - "[update] --grey|--white IP ..." with at least 3 words: the client
 *     is IP cut at a "/" (Exim's ${mask:...}), and an IPv6 network as
 *     ${mask} writes it (7 dots, no colon) has its dots made colons; the
 *     words after it are "SENDER RCPT" (exactly two, the first not ending
 *     in a comma, the second without one) or "RCPT[, RCPT...]" (one word,
 *     or the first ending in a comma: each recipient but the last ends in
 *     one comma and has no other, and is more than that comma; the last
 *     has none), with the null sender. Any other shape is refused: a
 *     warning showing the line, "false". Each recipient is judged as a
 *     policy request (RCPT state): --grey answers "true" when any is
 *     deferred, --white when none is (so with --learn, which defers
 *     nothing, --grey is "false" and --white "true");
 *   - anything else (too few words, another option): refused, a warning
 *     showing the line, "false".
 * Invariants:
 *   - gp_serve returns (no hang: it reads at most one buffer) with the
 *     end of the connection, and writes exactly "true" or "false", the
 *     model's answer, nothing more;
 *   - the store is asked for exactly the recipients the model finds an
 *     address, a triplet and no whitelist entry for, and each judged
 *     recipient's decision line is its request's (check_decision), in
 *     order; a refused line logs exactly the model's one warning, and
 *     nothing else is logged.
 *
 * Header: h[0] & 7: short-read schedule; h[0] & 8: --learn; h[0] & 16:
 * --lookup-by-host; h[0] & 32: the line starts with MAX_REQUEST - 17 *
 * h[1] spaces (so that it ends near or past the 64 KiB buffer); h[0] &
 * 64: 64 * h[1] bytes "x" follow the input (its last word grows past
 * MAX_LINE); h[0] & 128: then 56 + h[1] % 16 recipients, " rNN@x.example,"
 * each, the last without its comma (a data-shape line at and past the
 * 64 words); h[1]: the store's first scenario (one more per recipient it
 * is asked for).
 */

#include "fuzz.h"

#include <ctype.h>

#include "fuzz_serve.h"

static const char whitelist[] =
	"client 192.0.2.25\n"
	"client 2001:db8:77::/48\n"
	"recipient postmaster@\n"
	"recipient @sub.example.net\n";

/* Debian greylistd's commands that greylistd does not serve
 * (greylistd.8) */
static const char *const m_refused[] = {
	"check", "status", "add", "delete", "list", "stats", "mrtg", "save",
	"reload", "clear",
};

/* The model's line: as sent (for the warning that shows it), and its
 * words, lower-cased, in a buffer of their own. */
struct mline {
	char raw[MAX_REQUEST + 1];
	char text[MAX_REQUEST + 1];
	char *w[GP_MAX_WORDS + 1];
	int n;
	const char *bad;		/* no words, and why (the warning) */
};

/* m_line - the line of s[0, n) and its words, as the protocol reads
 * them */
static void m_line(const char *s, size_t n, struct mline *l)
{
	const char *nl = memchr(s, '\n', n < MAX_REQUEST ? n : MAX_REQUEST);
	size_t len = nl ? (size_t)(nl - s) : n, i, k;
	char c;

	l->n = 0;
	l->bad = NULL;
	if (!nl && n >= MAX_REQUEST) {
		l->bad = "a line longer than 64 KiB";
		return;
	}
	if (memchr(s, 0, len)) {
		l->bad = "a NUL byte in the line";
		return;
	}
	if (len > 0 && s[len - 1] == '\r')
		len--;
	memcpy(l->raw, s, len);
	l->raw[len] = 0;
	for (i = 0; i < len; i++) {
		c = s[i];
		l->text[i] = c == ' ' || c == '\t' ? 0
			: c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
	}
	l->text[len] = 0;
	for (i = 0; i < len; i = k) {
		for (k = i; k < len && l->text[k]; k++)
			;
		if (k == i) {
			k++;			/* a space or a tab */
			continue;
		}
		if (l->n == GP_MAX_WORDS) {
			l->bad = "more than 64 words";
			return;
		}
		if (k - i > MAX_LINE) {
			l->bad = "a word longer than 8448 bytes";
			return;
		}
		l->w[l->n++] = l->text + i;
	}
}

/* m_client - Exim's ${mask:IP/N} as the client: what is before the "/";
 * 7 dots and no colon: an IPv6 network written with dots for colons */
static void m_client(char *ip)
{
	char *p, *slash = strchr(ip, '/');
	int dots = 0;

	if (slash)
		*slash = 0;
	for (p = ip; *p; p++)
		dots += *p == '.';
	if (dots != 7 || strchr(ip, ':'))
		return;
	for (p = ip; *p; p++)
		if (*p == '.')
			*p = ':';
}

/* commas - how many commas w holds */
static int commas(const char *w)
{
	int n = 0;

	for (; *w; w++)
		n += *w == ',';
	return n;
}

/* ends_comma - does w end in a comma? */
static int ends_comma(const char *w)
{
	size_t n = strlen(w);

	return n > 0 && w[n - 1] == ',';
}

/* m_recipient - one recipient's request and the verdict before the
 * store (V_NEW: the store is asked) */
static void m_recipient(struct request *r, const char *client,
			const char *sender, const char *rcpt,
			struct outcome *o)
{
	static struct triplet t;
	size_t len;

	memset(r, 0, sizeof(*r));
	memset(o, 0, sizeof(*o));
	r->attr[A_REQUEST] = "smtpd_access_policy";
	r->attr[A_PROTOCOL_STATE] = "RCPT";
	r->attr[A_CLIENT_ADDRESS] = client;
	r->attr[A_SENDER] = sender;
	r->attr[A_RECIPIENT] = rcpt;
	if (make_triplet(client, sender, rcpt, &t) != 0) {
		o->v = V_BAD_REQUEST;
		snprintf(o->why, sizeof(o->why), "bad request (client_address"
			 " is not an IP address)");
	} else {
		wl_match(&whitelists, &t, NULL, &o->v);
	}
	(void)fz_take(log_mem, &len);	/* a regex's warning, if any */
}

/* The model's answer: the recipients it judges, in order, or the one
 * warning. */
struct mjudged {
	struct request r[GP_MAX_WORDS];
	struct outcome o[GP_MAX_WORDS];
	int n, stored;
	int white;			/* --white: "true" when none deferred */
	char warn[LOG_VALUE_MAX + 256];	/* after "greylistd protocol: " */
	int whole;			/* warn is all of it, not its start */
	char tail[LOG_VALUE_MAX + 32];	/* and then how it ends, if set */
};

enum { A_FALSE, A_WARNED, A_JUDGED };

/* m_refuse - a line not served: the warning shows it as sent */
static int m_refuse(const struct mline *l, struct mjudged *j)
{
	char shown[LOG_VALUE_MAX + 8];

	log_value(shown, sizeof(shown), l->raw);
	snprintf(j->warn, sizeof(j->warn), "not \"[update] --grey|--white|"
		 "--black IP SENDER RCPT\" or ");
	snprintf(j->tail, sizeof(j->tail), ": %s; answered false",
		 *shown ? shown : "(an empty line)");
	return A_WARNED;
}

/* m_grey - "--grey" or "--white" and its n >= 2 words w (the client
 * first): the requests and their verdicts before the store, or refused
 * for its shape */
static int m_grey(const struct mline *l, char **w, int n,
		  struct mjudged *j)
{
	const char *sender = "";
	char **rcpt = w + 1;
	int k = n - 1, i;

	m_client(w[0]);
	if (k == 2 && !ends_comma(w[1])) {	/* IP SENDER RCPT */
		sender = w[1];
		rcpt = w + 2;
		k = 1;
	} else if (k != 1 && !ends_comma(w[1])) {
		return m_refuse(l, j);
	}
	for (i = 0; i < k; i++)		/* RCPT[, RCPT...] */
		if (i < k - 1 ? !ends_comma(rcpt[i]) || commas(rcpt[i]) != 1
		    || strlen(rcpt[i]) < 2 : commas(rcpt[i]) != 0)
			return m_refuse(l, j);
	for (i = 0; i < k; i++) {
		if (i < k - 1)
			rcpt[i][strlen(rcpt[i]) - 1] = 0;
		m_recipient(&j->r[j->n], w[0], sender, rcpt[i], &j->o[j->n]);
		j->stored += j->o[j->n].v == V_NEW;
		j->n++;
	}
	return A_JUDGED;
}

/* m_answer - what the line asks: a warning and "false", "false"
 * (--black), or the recipients to judge (j) */
static int m_answer(struct mline *l, struct mjudged *j)
{
	const char *opt;
	size_t k;
	int i;

	j->n = j->stored = j->white = j->whole = 0;
	j->warn[0] = j->tail[0] = 0;
	if (l->bad) {
		snprintf(j->warn, sizeof(j->warn), "%s; answered false",
			 l->bad);
		j->whole = 1;
		return A_WARNED;
	}
	if (l->n == 0)
		return m_refuse(l, j);
	for (k = 0; k < sizeof(m_refused) / sizeof(m_refused[0]); k++)
		if (strcmp(l->w[0], m_refused[k]) == 0) {
			snprintf(j->warn, sizeof(j->warn), "\"%s\" is a command"
				 " of Debian's greylistd that greylistd does not"
				 " serve; answered false", m_refused[k]);
			j->whole = 1;
			return A_WARNED;
		}
	i = strcmp(l->w[0], "update") == 0;
	opt = i < l->n ? l->w[i] : "";
	if (l->n - i < 3)
		return m_refuse(l, j);
	if (strcmp(opt, "--black") == 0)
		return A_FALSE;
	j->white = strcmp(opt, "--white") == 0;
	if (!j->white && strcmp(opt, "--grey") != 0)
		return m_refuse(l, j);
	return m_grey(l, l->w + i + 1, l->n - i - 1, j);
}

/* check_gp_log - the log: the model's one warning, nothing, or each
 * judged recipient's decision line in order; *defer: any of them
 * deferred */
static void check_gp_log(int answer, const struct mjudged *j, int *defer)
{
	static const char head[] = "]: warning: greylistd protocol: ";
	size_t len, n;
	char *s = fz_take(log_mem, &len), *end = s + len, *line, *w;
	struct outcome o;
	int i, k = 0;

	*defer = 0;
	line = next_line(&s, end, 1);
	if (answer == A_WARNED) {
		w = line ? strstr(line, head) : NULL;
		CHECK(w, "no warning for a refused line (%s): %s", j->warn,
		      line ? line : "(none)");
		w += sizeof(head) - 1;
		n = strlen(w);
		CHECK(j->whole ? strcmp(w, j->warn) == 0
		      : strncmp(w, j->warn, strlen(j->warn)) == 0
		      && n >= strlen(j->tail)
		      && strcmp(w + n - strlen(j->tail), j->tail) == 0,
		      "not the warning \"%s...%s\": %s", j->warn, j->tail, w);
		line = next_line(&s, end, 0);
	}
	for (i = 0; answer == A_JUDGED && i < j->n; i++) {
		o = j->o[i];
		if (o.v == V_NEW) {
			CHECK(k < FZ_OUTS, "more look-ups than kept");
			o = fz_store_outs[k++];
		}
		*defer |= verdicts[o.v].defer;
		line = check_judged(line, &s, end, &j->r[i], &o, NULL);
	}
	CHECK(!line, "logged more: %s", line);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static const char *const text[] = { whitelist, NULL };
	static const enum wl_format format[] = { WLF_GREYLISTD };

	(void)argc;
	(void)argv;
	fz_serve_init(text, format, 4);
	cfg.greylistd_protocol = 1;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* the spaces before, the input, the x's and the recipients after */
	static char stream[MAX_REQUEST + (1 << 20) + 64 * 255 + 4096];
	static struct mline l;
	static struct mjudged j;
	static struct conn c;
	size_t n = 0, len;
	const char *got;
	int answer, defer, yes, i, k;

	if (size < 2 || size - 2 > 1 << 20)
		return 0;
	fz_sched = data[0] & 7;
	fz_nreads = 0;
	cfg.learn = data[0] >> 3 & 1;
	cfg.lookup_by_host = data[0] >> 4 & 1;
	fz_scene = data[1];
	if (data[0] & 32) {
		n = MAX_REQUEST - 17 * (size_t)data[1];
		memset(stream, ' ', n);
	}
	memcpy(stream + n, data + 2, size - 2);
	n += size - 2;
	if (data[0] & 64) {
		memset(stream + n, 'x', 64 * (size_t)data[1]);
		n += 64 * (size_t)data[1];
	}
	for (i = 0, k = data[0] & 128 ? 56 + data[1] % 16 : 0; i < k; i++)
		n += (size_t)sprintf(stream + n, " r%02d@x.example%s", i,
				     i < k - 1 ? "," : "");
	fz_set(fz_conn_fd, stream, n);
	m_line(stream, n, &l);
	answer = m_answer(&l, &j);
	memset(&c, 0, sizeof(c));
	c.in = fz_conn_fd;
	c.out = out_fd;
	fz_store_calls = 0;
	CHECK(gp_serve(&c) == RD_EOF, "gp_serve did not end the connection");
	CHECK(fz_store_calls == (unsigned)j.stored, "%u look-ups, the model"
	      " says %d", fz_store_calls, j.stored);
	check_gp_log(answer, &j, &defer);
	got = fz_take(out_fd, &len);
	CHECK((len == 4 && memcmp(got, "true", 4) == 0)
	      || (len == 5 && memcmp(got, "false", 5) == 0),
	      "answered \"%.*s\"", (int)(len < 80 ? len : 80), got);
	yes = len == 4;
	CHECK(yes == (answer == A_JUDGED && defer != j.white), "answered %s,"
	      " the model says %s", got, yes ? "false" : "true");
	CHECK(!cfg.learn || answer != A_JUDGED || yes == j.white,
	      "--learn, but --%s answered %s", j.white ? "white" : "grey",
	      got);
	return 0;
}
