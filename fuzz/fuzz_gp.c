/*
 * fuzz_gp - greylistd.c's Debian greylistd protocol
 * (--greylistd-protocol: gp_serve, gp_line, gp_words, gp_decide) under
 * libFuzzer.
 *
 * The bytes after a 2-byte header are what Exim's ${readsocket} sends:
 * they are put in a memfd that serves as the connection's input, read
 * through fuzz.h's short reads, and gp_serve() answers on another memfd;
 * the log goes to a third. The store is fuzz_serve.h's (the real rule
 * over scenarios). A model of the protocol, from Debian greylistd's
 * documentation and greylistd's header, says what the one answer must be:
 *   - the line is the input up to its first LF, or all of it when it
 *     ends first (Exim half-closes), a CR at its end cut; none when
 *     64 KiB come without a LF (said in the log); a NUL ends it, as it
 *     ends a C string;
 *   - its words are split at spaces and tabs, in ASCII lower case; more
 *     than GP_MAX_WORDS, or one longer than MAX_LINE (a request value's
 *     bound, which a sender or recipient must keep to fit a triplet),
 *     make it unreadable: a warning and "false";
 *   - "[update] --grey IP SENDER RCPT" (the client cut at a "/", Exim's
 *     ${mask:...}) judges the recipient as a policy request: deferred,
 *     "true"; "--grey IP RCPT[, RCPT...]" (the null sender; also more
 *     than three words, or a comma after the second) judges each
 *     recipient, each word cut at its comma, empty ones skipped: any
 *     deferral answers "true"; "--black ..." is "false"; anything else is
 *     "false" and one warning.
 * Invariants:
 *   - gp_serve returns (no hang: it reads at most one buffer) with the
 *     end of the connection, and writes exactly "true" or "false", the
 *     model's answer, nothing more (--learn: always "false");
 *   - the store is asked for exactly the recipients the model finds an
 *     address, a triplet and no whitelist entry for, and each judged
 *     recipient's decision line is its request's (check_decision), in
 *     order; a line that is not a command logs one warning, and nothing
 *     else is logged.
 *
 * Header: h[0] & 7: short-read schedule; h[0] & 8: --learn; h[0] & 16:
 * --lookup-by-host; h[0] & 32: the line starts with MAX_REQUEST - 17 *
 * h[1] spaces (so that it ends near or past the 64 KiB buffer); h[0] &
 * 64: 64 * h[1] bytes "x" follow the input (its last word grows past
 * MAX_LINE); h[1]: the store's first scenario (one more per recipient it
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

/* The model's line: its words, lower-cased, in a buffer of its own. */
struct mline {
	char text[MAX_REQUEST + 1];
	char *w[GP_MAX_WORDS + 1];
	int n;				/* -1: too many words */
	int none;			/* no line: 64 KiB without a LF */
};

/* m_line - the line of s[0, n), as the protocol reads it */
static void m_line(const char *s, size_t n, struct mline *l)
{
	const char *nl = memchr(s, '\n', n < MAX_REQUEST ? n : MAX_REQUEST);
	size_t len = nl ? (size_t)(nl - s) : n, i;
	char *p;

	memset(l, 0, sizeof(*l));
	l->none = !nl && n >= MAX_REQUEST;
	if (l->none)
		return;
	memcpy(l->text, s, len);
	if (len > 0 && l->text[len - 1] == '\r')
		len--;
	l->text[len] = 0;
	for (p = l->text; *p; p++)
		*p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
	for (p = l->text; *p; ) {
		p += strspn(p, " \t");
		if (!*p)
			break;
		i = strcspn(p, " \t");
		if (l->n == GP_MAX_WORDS || i > MAX_LINE) {
			l->n = -1;
			return;
		}
		l->w[l->n++] = p;
		p += i;
		if (*p)
			*p++ = 0;
	}
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

/* The recipients the model judges, in order. */
struct mjudged {
	struct request r[GP_MAX_WORDS];
	struct outcome o[GP_MAX_WORDS];
	int n, stored;
};

/* m_grey - "--grey" and its n words w (the client first): the requests,
 * the verdicts before the store */
static void m_grey(char **w, int n, struct mjudged *j)
{
	const char *sender = "";
	char *slash = strchr(w[0], '/');
	int i, first = 1;
	size_t len;

	if (slash)
		*slash = 0;
	if (n == 3 && !strchr(w[1], ',')) {
		sender = w[1];
		first = 2;
	}
	for (i = first; i < n; i++) {
		len = strcspn(w[i], ",");
		if (len == 0)
			continue;
		w[i][len] = 0;
		m_recipient(&j->r[j->n], w[0], sender, w[i], &j->o[j->n]);
		j->stored += j->o[j->n].v == V_NEW;
		j->n++;
	}
}

/* The model's answer. */
enum { A_FALSE, A_FALSE_WARNED, A_GREY };

/* m_answer - what the line asks: a warning and "false", "false"
 * (--black), or the recipients to judge (j) */
static int m_answer(struct mline *l, struct mjudged *j)
{
	int i = 0;

	memset(j, 0, sizeof(*j));
	if (l->none)
		return A_FALSE_WARNED;
	if (l->n > 0 && strcmp(l->w[0], "update") == 0)
		i = 1;
	if (l->n - i >= 3 && strcmp(l->w[i], "--grey") == 0) {
		m_grey(l->w + i + 1, l->n - i - 1, j);
		return A_GREY;
	}
	if (l->n - i >= 3 && strcmp(l->w[i], "--black") == 0)
		return A_FALSE;
	return A_FALSE_WARNED;
}

/* check_gp_log - the log: one warning, nothing, or each judged
 * recipient's decision line in order; *defer: any of them deferred */
static void check_gp_log(int answer, const struct mjudged *j, int *defer)
{
	size_t len;
	char *s = fz_take(log_mem, &len), *end = s + len, *line;
	struct outcome o;
	int i, k = 0;

	*defer = 0;
	line = next_line(&s, end, 1);
	if (answer == A_FALSE_WARNED) {
		CHECK(line && strstr(line, "]: warning: greylistd protocol: "),
		      "no warning for a line that is no command: %s", line);
		line = next_line(&s, end, 0);
	}
	for (i = 0; answer == A_GREY && i < j->n; i++) {
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
	static char stream[MAX_REQUEST + (1 << 20)];
	static struct mline l;
	static struct mjudged j;
	static struct conn c;
	size_t n = 0, len;
	const char *got;
	int answer, defer;

	if (size < 2 || size - 2 > sizeof(stream) - MAX_REQUEST)
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
	CHECK(!defer == (len == 5), "answered %.*s, the model says %s",
	      (int)len, got, defer ? "true" : "false");
	CHECK(!cfg.learn || len == 5, "--learn, but answered true");
	return 0;
}
