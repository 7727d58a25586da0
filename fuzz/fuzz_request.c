/*
 * fuzz_request - greylistd.c's request reader and parser, then the
 * answer to each request (with a store of scenarios), under libFuzzer.
 *
 * The bytes are a connection: they are put in a memfd that serves as the
 * connection's input, and read_request() reads them through the real
 * buffer, its compaction, the line checks (check_line, as each line
 * arrives) and the attribute parsing. read(2) is wrapped to return short
 * counts on a schedule the input chooses, as a socket does, so that
 * requests arrive in pieces. A simple model of the protocol says,
 * independently, what each request should give: its attributes, a
 * violation or the end of the input; the two must agree. The model: a
 * line ends at LF, and a CR just before the LF is not part of it
 * (telnet's CRLF); any other CR, a NUL, a line over MAX_LINE, a
 * non-empty line without "=" or starting with "=", input ending inside
 * a request, a request over MAX_REQUEST or MAX_ATTRS, an attribute
 * greylistd reads given twice, or no request=smtpd_access_policy is a
 * violation.
 *
 * Each request that parses is then answered by the real answer(): judge
 * (wl_refresh, policy: make_triplet, wl_match, the store), the decision
 * log into the --log-file (a memfd, opened by log_open), --defer-at=data
 * (at_data) and format_reply, the reply written to a memfd. The store is
 * fuzz_serve.h's: the GDBM file's look-up (db_greylist) is replaced by
 * the real rule (decide) over the records of a scenario the input picks.
 * A model says, on its own, what must come of each request: not RCPT, a
 * bad request (and why), a whitelist's pass, or the store's verdict (new,
 * early, first pass, pass, AWL, fail-open; with --learn, learning instead
 * of new or early); with --defer-at=data, which RCPT deferrals are held
 * (answered DUNNO) and which DATA request is deferred for its message,
 * with how many recipients and the longest wait, and when the warning of
 * deferrals that met no DATA request is due (once per connection). The
 * invariants:
 *   - attribute values hold no NUL, CR or newline;
 *   - make_triplet accepts exactly what inet_pton accepts, and its
 *     address, network and auto-whitelist key are consistent with the
 *     prefix lengths; the recipient is the value in ASCII lower case;
 *     the normalised sender is no longer than the value;
 *   - wl_match's entry is of the kind its verdict says; a match that
 *     gives up logs only its warning;
 *   - the store is asked exactly when no earlier rule decides;
 *   - the log holds, in order, the auto-whitelist's line when the client
 *     joined it, the decision line, the --defer-at=data warning and the
 *     DATA request's decision line (no recipient=), and nothing else;
 *     each decision line is printable, starts with the queue id and the
 *     verdict's action, gives the model's reason, and log_field (what
 *     greylistctl report reads it with) gives back each value that was
 *     not cut, and none that was not logged;
 *   - log_value's output is printable ASCII, at most LOG_VALUE_MAX + 3
 *     bytes, and unescapes to (a prefix of) the value;
 *   - a reply is one printable "action=..." line and an empty line; a
 *     deferral is the one format_reply makes of the request it answers
 *     (a deferred DATA request names its first deferred recipient for
 *     %r); a held deferral and every other pass is DUNNO, but a first
 *     pass, which gets the header once per message; --learn never
 *     defers.
 *
 * Input: a 4-byte header, then the connection's bytes.
 *   h[0] & 3 == 3	a filler of complete requests comes first, so that
 *			the rest straddles the end of the 64 KiB buffer
 *			(compaction); its length is MAX_REQUEST - 17 * h[3]
 *   h[0] & 3 == 2	as long a filler, but of one request left open, which
 *			the rest continues (a request too large for the
 *			buffer, with a short input)
 *   h[0] >> 2 & 7	short-read schedule (0: reads return all they can)
 *   h[0] & 0x20	--lookup-by-host
 *   h[0] >> 6		which templates and action (valid ones)
 *   h[1] % 33		--ipv4cidr;  h[2] % 129: --ipv6cidr
 *   h[3] & 0x80	--learn;  h[3] & 0x40: --defer-at=data
 *   h[3] + N		the store's scenario for the N-th request
 */

#include "fuzz.h"

#include <arpa/inet.h>
#include <ctype.h>

#include "fuzz_serve.h"

/* The log file (a memfd), as this process sees it; the replies. */
/* The first 12 bytes of an IPv4-mapped IPv6 address. */
static const unsigned char v4mapped[12] =
	{ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

/* A small whitelist of every kind, loaded once. */
static const char whitelist[] =
	"client 192.0.2.25\n"
	"client 198.51.100.0/24\n"
	"client 2001:db8:77::/48\n"
	"client ::ffff:203.0.113.0/120\n"
	"client google.com\n"
	"client /^mx[0-9]+\\.example\\.net$/\n"
	"client /^(?:smtp|relay)\\w*\\.lazy\\.example$/\n"
	"client /^fallback.*?\\.example\\.org$/\n"
	"client /\\d+-\\d+-\\d+\\.dyn\\./\n"
	"recipient postmaster@\n"
	"recipient sales@example.com\n"
	"recipient example.org\n"
	"recipient @sub.example.net\n"
	"recipient /^noc-.*@example\\.com$/\n"
	"recipient /^list-.*@lists\\.example$/\n"
	"recipient /(a|b)+c$/\n";

static const char postgrey_clients[] =
	"/^mail\\d+\\.perl\\.example$/\n203.0.113\n10.1\npartner.example\n";

/* The model's view of one request: where each attribute's value is. */
struct mreq {
	const char *v[A_COUNT];
	size_t len[A_COUNT];
};

enum { M_OK, M_EOF, M_VIOLATION };

/* model_line - the line at s[q, n): its length without the LF and
 * without a CR just before it, in *len, and where the next one starts,
 * in *next; -1 when it is incomplete or breaks a rule of every line:
 * over MAX_LINE, a NUL, another CR, not empty nor name=value */
static int model_line(const char *s, size_t n, size_t q, size_t *len,
		      size_t *next)
{
	const char *nl = memchr(s + q, '\n', n - q), *eq;
	size_t l;

	if (!nl)
		return -1;
	l = (size_t)(nl - (s + q));
	*next = q + l + 1;
	if (l > 0 && s[q + l - 1] == '\r')
		l--;
	*len = l;
	if (l > MAX_LINE || memchr(s + q, 0, l) || memchr(s + q, '\r', l))
		return -1;
	eq = memchr(s + q, '=', l);
	if (l > 0 && (!eq || eq == s + q))
		return -1;
	return 0;
}

/* model_next - the next request of s[*pos, n), as the protocol says it
 * must be read (see the header); M_EOF at the end of the input */
static int model_next(const char *s, size_t n, size_t *pos, struct mreq *m)
{
	size_t q = *pos, len, next, namelen, nattrs = 0;
	const char *eq;
	int i;

	memset(m, 0, sizeof(*m));
	if (q == n)
		return M_EOF;
	for (;; q = next) {
		if (model_line(s, n, q, &len, &next) != 0)
			return M_VIOLATION;
		if (len == 0)
			break;
		if (++nattrs > MAX_ATTRS)
			return M_VIOLATION;
		eq = memchr(s + q, '=', len);
		namelen = (size_t)(eq - (s + q));
		for (i = 0; i < A_COUNT; i++) {
			if (strlen(attr_names[i]) != namelen
			    || memcmp(attr_names[i], s + q, namelen) != 0)
				continue;
			if (m->v[i])
				return M_VIOLATION;
			m->v[i] = eq + 1;
			m->len[i] = len - namelen - 1;
		}
	}
	if (next - *pos > MAX_REQUEST)
		return M_VIOLATION;
	if (!m->v[A_REQUEST] || m->len[A_REQUEST] != 19
	    || memcmp(m->v[A_REQUEST], "smtpd_access_policy", 19) != 0)
		return M_VIOLATION;
	*pos = next;
	return M_OK;
}

/* unlog_n - log_value's escapes undone, into out (the "..." mark kept) */
static size_t unlog_n(const char *s, char *out)
{
	size_t o = 0;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] == 'x' && isxdigit((unsigned char)s[2])
		    && isxdigit((unsigned char)s[3])) {
			char hex[3] = { s[2], s[3], 0 };

			out[o++] = (char)strtol(hex, NULL, 16);
			s += 3;
		} else {
			out[o++] = *s;
		}
	}
	out[o] = 0;
	return o;
}

/* check_log_value - the sanitiser's promises for one value */
static void check_log_value(const char *v)
{
	static char plain[LOG_VALUE_MAX + 16];
	char out[LOG_VALUE_MAX + 8];
	size_t len, cut, plen;

	log_value(out, sizeof(out), v);
	len = strlen(out);
	CHECK(len <= LOG_VALUE_MAX + 3, "log_value gave %zu bytes: %s", len,
	      out);
	CHECK(fz_printable(out, len), "log_value gave a non-printable: %s",
	      out);
	cut = escaped_len(v) > LOG_VALUE_MAX;
	CHECK(!cut || (len >= 3 && strcmp(out + len - 3, "...") == 0),
	      "a cut value is not marked: %s", out);
	if (cut)
		out[len - 3] = 0;
	CHECK(!strchr(out, ','), "a comma in a logged value: %s", out);
	plen = unlog_n(out, plain);
	CHECK(cut ? strncmp(plain, v, plen) == 0 : strcmp(plain, v) == 0,
	      "log_value does not unescape to the value: %s", out);
}

/* check_triplet - make_triplet against inet_pton and the prefix
 * lengths; its return code */
static int check_triplet(const struct request *r, struct triplet *t)
{
	const char *text = r->attr[A_CLIENT_ADDRESS];
	const char *rcpt = r->attr[A_RECIPIENT], *sender = r->attr[A_SENDER];
	unsigned char b[16], a2[16], n2[16], m[16];
	int v4 = inet_pton(AF_INET, text, b) == 1;
	int v6 = !v4 && inet_pton(AF_INET6, text, b) == 1;
	int mapped = v6 && memcmp(b, v4mapped, 12) == 0;
	int rc = make_triplet(text, sender, rcpt, t), fam;
	size_t len, i;
	long long bits;

	CHECK((rc == 0) == (v4 || v6), "make_triplet(%.80s) = %d", text, rc);
	if (rc != 0)
		return rc;
	fam = v4 || mapped ? AF_INET : AF_INET6;
	len = fam == AF_INET ? 4 : 16;
	CHECK(t->family == fam, "make_triplet(%.80s): family", text);
	CHECK(memcmp(t->bin, mapped ? b + 12 : b, len) == 0,
	      "make_triplet(%.80s): address", text);
	CHECK(inet_pton(fam, t->addr, a2) == 1 && memcmp(a2, t->bin, len) == 0,
	      "make_triplet(%.80s): text %s", text, t->addr);
	memcpy(m, t->bin, len);
	bits = cfg.lookup_by_host ? (long long)len * 8
		: fam == AF_INET ? cfg.ipv4cidr : cfg.ipv6cidr;
	for (i = 0; i < len * 8; i++)
		if ((long long)i >= bits)
			m[i / 8] &= (unsigned char)~(0x80 >> (i % 8));
	CHECK(inet_pton(fam, t->net, n2) == 1 && memcmp(n2, m, len) == 0,
	      "make_triplet(%.80s): network %s", text, t->net);
	CHECK(strcmp(t->client, fam == AF_INET ? t->addr : t->net) == 0,
	      "make_triplet(%.80s): client key %s", text, t->client);
	CHECK(strlen(t->recipient) == strlen(rcpt),
	      "lower changed the recipient's length");
	for (i = 0; rcpt[i]; i++)
		CHECK(t->recipient[i] == (rcpt[i] >= 'A' && rcpt[i] <= 'Z'
					  ? rcpt[i] + 32 : rcpt[i]),
		      "the recipient %.80s lower-cased as %.80s", rcpt,
		      t->recipient);
	CHECK(strlen(t->sender) <= strlen(sender),
	      "normalise_sender made %.80s longer: %.80s", sender, t->sender);
	return 0;
}

/* check_reply - one action line and an empty line, printable */
static void check_reply(const char *reply, size_t n)
{
	CHECK(n == strlen(reply), "a NUL in the reply");
	CHECK(n >= 9 && strncmp(reply, "action=", 7) == 0
	      && reply[n - 2] == '\n' && reply[n - 1] == '\n'
	      && memchr(reply, '\n', n) == reply + n - 2,
	      "reply not action=...\\n\\n: %s", reply);
	CHECK(fz_printable(reply, n - 2), "reply not printable: %s", reply);
}

/* check_gave_up - what the whitelist logged: nothing, or only that a
 * regex gave up (once per entry) */
static void check_gave_up(void)
{
	size_t len;
	char *s = fz_take(log_mem, &len), *line;

	line = next_line(&s, s + len, 1);
	CHECK(!line, "the whitelist logged: %s", line);
}

/* expect - the verdict policy() must give before the store (V_NEW: the
 * store decides), found on its own: the stage, the attributes a triplet
 * needs, make_triplet against inet_pton, the whitelist (wl_match, whose
 * entry must be of the kind its verdict says) */
static void expect(const struct request *r, struct triplet *t,
		   struct outcome *o)
{
	static const enum attr_id needed[] =
		{ A_CLIENT_ADDRESS, A_SENDER, A_RECIPIENT };
	const char *state = r->attr[A_PROTOCOL_STATE];
	const struct wl_entry *e;
	size_t i;

	memset(o, 0, sizeof(*o));
	if (state && strcmp(state, "RCPT") != 0) {
		o->v = V_NOT_RCPT;
		return;
	}
	for (i = 0; i < 3; i++)
		if (!r->attr[needed[i]]) {
			o->v = V_BAD_REQUEST;
			snprintf(o->why, sizeof(o->why), "bad request (no %s)",
				 attr_names[needed[i]]);
			return;
		}
	if (check_triplet(r, t) != 0) {
		o->v = V_BAD_REQUEST;
		snprintf(o->why, sizeof(o->why), "bad request (client_address"
			 " is not an IP address)");
		return;
	}
	e = wl_match(&whitelists, t, r->attr[A_CLIENT_NAME], &o->v);
	CHECK(o->v == V_NEW ? !e : o->v == V_WL_CLIENT ? e->kind == WL_NET
	      || e->kind == WL_HOST || e->kind == WL_CLIENT_RE
	      : o->v == V_WL_RCPT && (e->kind == WL_USER
				      || e->kind == WL_ADDRESS
				      || e->kind == WL_DOMAIN
				      || e->kind == WL_RCPT_RE),
	      "wl_match: verdict %d, an entry of kind %d", o->v,
	      e ? (int)e->kind : -1);
	check_gave_up();
}

/* The model of --defer-at=data on one connection: the message whose
 * deferrals are held, and the header's message. */
static struct {
	char inst[MAX_LINE + 1], rcpt[MAX_LINE + 1], header[MAX_LINE + 1];
	unsigned rcpts, deferred;
	long long seconds;
	int data_seen, warned;
} mh;

enum { H_ANSWER, H_HELD, H_DATA };

/* model_held - what --defer-at=data makes of request r with outcome o
 * (instance set): H_HELD, answered DUNNO; H_DATA, the message deferred at
 * its DATA request (o becomes that outcome); else H_ANSWER. *warn: the
 * warning of deferrals that met no DATA request is due. */
static int model_held(const struct request *r, struct outcome *o, int *warn)
{
	const char *inst = r->attr[A_INSTANCE], *state;
	int data;

	state = r->attr[A_PROTOCOL_STATE];
	data = state && strcmp(state, "DATA") == 0;
	*warn = 0;
	if (strcmp(mh.inst, inst) != 0) {
		*warn = mh.deferred && !mh.data_seen && !mh.warned;
		mh.warned |= *warn;
		snprintf(mh.inst, sizeof(mh.inst), "%s", inst);
		mh.rcpts = mh.deferred = 0;
		mh.seconds = 0;
	}
	mh.data_seen |= data;
	if (data && mh.deferred) {
		memset(o, 0, sizeof(*o));
		o->v = V_DATA;
		o->seconds = mh.seconds;
		snprintf(o->why, sizeof(o->why), "defer-at-data (%u of %u"
			 " recipients greylisted)", mh.deferred, mh.rcpts);
		mh.deferred = 0;
		return H_DATA;
	}
	if (data || o->v == V_NOT_RCPT)
		return H_ANSWER;
	mh.rcpts++;
	if (!verdicts[o->v].defer)
		return H_ANSWER;
	if (!mh.deferred++)
		snprintf(mh.rcpt, sizeof(mh.rcpt), "%s", r->attr[A_RECIPIENT]);
	if (o->seconds > mh.seconds)
		mh.seconds = o->seconds;
	return H_HELD;
}

/* check_logged - the log of one request: the auto-whitelist's line
 * (awl_new), the decision, then with --defer-at=data the warning and the
 * DATA request's decision (without recipient=), in that order */
static void check_logged(const struct request *r, const struct outcome *o,
			 const struct triplet *t, int held, int warn,
			 const struct outcome *od)
{
	size_t len;
	char *s = fz_take(log_mem, &len), *end = s + len, *line;
	struct request d = *r;

	line = check_judged(next_line(&s, end, 1), &s, end, r, o, t->addr);
	if (warn) {
		CHECK(line && strstr(line, "]: warning: defer-at = data: "),
		      "no warning of deferrals without DATA: %s", line);
		line = next_line(&s, end, 0);
	}
	if (held == H_DATA) {
		CHECK(line, "no decision logged for the DATA request");
		d.attr[A_RECIPIENT] = NULL;
		check_decision(line, &d, od);
		line = next_line(&s, end, 0);
	}
	CHECK(!line, "logged more: %s", line);
}

/* check_answered - the reply: DUNNO for a held deferral; for a deferral
 * the one format_reply makes of the request it answers (the DATA
 * request's names its message's first deferred recipient); a header on
 * a message's first pass; never a deferral with --learn */
static void check_answered(const struct request *r, const struct outcome *o,
			   int held)
{
	char want[MAX_REPLY], *got;
	const char *inst = r->attr[A_INSTANCE];
	struct request d = *r;
	size_t n;

	got = fz_take(out_fd, &n);
	check_reply(got, n);
	CHECK(!cfg.learn || !verdicts[o->v].defer || held == H_HELD,
	      "--learn, but deferred: %s", got);
	if (held == H_HELD || (!verdicts[o->v].defer
			       && (o->v != V_PASS_FIRST || !*cfg.header))) {
		CHECK(strcmp(got, "action=DUNNO\n\n") == 0, "not DUNNO: %s",
		      got);
		return;
	}
	if (held == H_DATA)
		d.attr[A_RECIPIENT] = mh.rcpt;
	if (verdicts[o->v].defer) {
		format_reply(want, sizeof(want), &d, o, 0);
		CHECK(strcmp(got, want) == 0, "the reply is %s, not %s", got,
		      want);
		return;
	}
	if (!inst || strcmp(inst, mh.header) != 0)
		CHECK(strncmp(got, "action=PREPEND ", 15) == 0, "a first pass"
		      " without its header: %s", got);
	else
		CHECK(strcmp(got, "action=DUNNO\n\n") == 0, "a header twice for"
		      " one message: %s", got);
	if (inst)
		snprintf(mh.header, sizeof(mh.header), "%s", inst);
}

/* check_request - answer() on one request that parsed, with the store of
 * scenario k; the verdict, the log and the reply against the model */
static void check_request(struct conn *c, const struct request *r,
			  unsigned k)
{
	static struct triplet t;
	struct outcome o, od;
	int held = H_ANSWER, warn = 0;
	size_t i;

	for (i = 0; i < A_COUNT; i++)
		if (r->attr[i]) {
			CHECK(!strpbrk(r->attr[i], "\r\n"), "CR or LF in %s",
			      attr_names[i]);
			check_log_value(r->attr[i]);
		}
	expect(r, &t, &o);
	fz_scene = k;
	fz_store_calls = 0;
	CHECK(answer(c, r) == 0, "answer() failed");
	CHECK(fz_store_calls == (o.v == V_NEW), "%u look-ups for verdict %d",
	      fz_store_calls, o.v);
	if (o.v == V_NEW)
		o = fz_store_out;
	od = o;
	if (cfg.defer_at_data && r->attr[A_INSTANCE])
		held = model_held(r, &od, &warn);
	check_logged(r, &o, &t, held, warn, &od);
	check_answered(r, &od, held);
}

/* fill_requests - n bytes of complete, valid requests */
static void fill_requests(char *p, size_t n)
{
	static const char head[] = "request=smtpd_access_policy\nx=";
	size_t size;

	while (n > 0) {
		size = n <= 8000 ? n : 4000;
		memcpy(p, head, sizeof(head) - 1);
		memset(p + sizeof(head) - 1, 'f', size - (sizeof(head) - 1) - 2);
		memcpy(p + size - 2, "\n\n", 2);
		p += size;
		n -= size;
	}
}

/* fill_open - n bytes of the start of one request, not ended */
static void fill_open(char *p, size_t n)
{
	static const char head[] = "request=smtpd_access_policy\n";
	size_t size;

	memcpy(p, head, sizeof(head) - 1);
	p += sizeof(head) - 1;
	n -= sizeof(head) - 1;
	while (n > 0) {
		size = n <= 8000 ? n : 4000;
		memcpy(p, "x=", 2);
		memset(p + 2, 'f', size - 3);
		p[size - 1] = '\n';
		p += size;
		n -= size;
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static const char *const text[] = { whitelist, postgrey_clients, NULL };
	static const enum wl_format format[] = { WLF_GREYLISTD, WLF_CLIENTS };

	(void)argc;
	(void)argv;
	fz_serve_init(text, format, 22);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const texts[] = {
		"Greylisted, please try again in %s seconds", "",
		"%r: wait %s s (%%)", "Greylisted",
	};
	static const char *const headers[] = {
		"X-Greylist: delayed %t seconds by greylistd-%v at %h; %d", "",
		"X-Greylist: %t%%", "X-G: %d %d %h",
	};
	static const char *const actions[] = {
		"DEFER_IF_PERMIT", "450", "DEFER", "DEFER_IF_REJECT",
	};
	static char stream[MAX_REQUEST + (1 << 20)];
	static struct conn c;
	size_t n = 0, pos = 0, filler = 0, i, loglen;
	unsigned k = 0;
	struct request r;
	struct mreq m;
	int want, got;
	char *logged;

	if (size < 4 || size - 4 > sizeof(stream) - MAX_REQUEST)
		return 0;
	fz_sched = data[0] >> 2 & 7;
	fz_nreads = 0;
	cfg.lookup_by_host = data[0] >> 5 & 1;
	cfg.greylist_text = texts[data[0] >> 6];
	cfg.header = headers[data[0] >> 6];
	cfg.greylist_action = actions[data[1] >> 6];
	cfg.ipv4cidr = data[1] % 33;
	cfg.ipv6cidr = data[2] % 129;
	cfg.learn = data[3] >> 7 & 1;
	cfg.defer_at_data = data[3] >> 6 & 1;
	if ((data[0] & 3) == 3) {
		filler = MAX_REQUEST - 17 * (size_t)data[3];
		fill_requests(stream, filler);
		n = filler;
	} else if ((data[0] & 3) == 2) {
		n = MAX_REQUEST - 17 * (size_t)data[3];
		fill_open(stream, n);
	}
	memcpy(stream + n, data + 4, size - 4);
	n += size - 4;
	fz_set(fz_conn_fd, stream, n);

	memset(&c, 0, sizeof(c));
	c.in = fz_conn_fd;
	c.out = out_fd;
	memset(&mh, 0, sizeof(mh));
	for (;;) {
		size_t before = pos;

		want = model_next(stream, n, &pos, &m);
		got = read_request(&c, &r);
		logged = fz_take(log_mem, &loglen);
		if (want == M_EOF) {
			CHECK(got == RD_EOF, "end of input read as %d", got);
			CHECK(loglen == 0, "logged at the end: %s", logged);
			break;
		}
		if (want == M_VIOLATION) {
			CHECK(got == RD_VIOLATION, "request %u at byte %zu: the"
			      " model says violation, read_request %d", k,
			      before, got);
			CHECK(strstr(logged, "warning: protocol violation: "),
			      "violation not logged: %s", logged);
			break;
		}
		CHECK(got == RD_OK, "request %u at byte %zu: the model says"
		      " ok, read_request %d (log: %s)", k, before, got, logged);
		CHECK(loglen == 0, "a good request logged: %s", logged);
		for (i = 0; i < A_COUNT; i++) {
			CHECK(!m.v[i] == !r.attr[i], "request %u: %s %s", k,
			      attr_names[i], m.v[i] ? "missing" : "invented");
			if (m.v[i])
				CHECK(strlen(r.attr[i]) == m.len[i]
				      && memcmp(r.attr[i], m.v[i], m.len[i]) == 0,
				      "request %u: %s differs", k, attr_names[i]);
		}
		if (before >= filler)
			check_request(&c, &r, k + data[3]);
		k++;
	}
	return 0;
}
