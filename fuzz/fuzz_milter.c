/*
 * fuzz_milter - greylistd.c's milter protocol (--milter) under libFuzzer:
 * the packet reader (read_packet), the commands (milter_command: OPTNEG,
 * MACRO, CONNECT, MAIL, RCPT, EOB, ABORT, QUIT_NC, QUIT and the stages
 * that are only continued) and their replies, and the whole session
 * (milter_serve).
 *
 * The bytes after a 3-byte header are what an MTA sends on a --milter
 * connection: they are put in a memfd that serves as the connection's
 * input, read through fuzz.h's short reads; the replies go to another
 * memfd, the log to a third. The store is fuzz_serve.h's (the real rule
 * over scenarios, no database). A model of the protocol, written from the
 * milter documentation and greylistd's header, not from its code, says
 * for each packet what must come of it:
 *   - a packet is a 4-byte big-endian length (1 to MILTER_MAX), then
 *     that many bytes: the command and its data; another length, or an
 *     input that ends inside a packet, is a violation;
 *   - OPTNEG with less than 12 bytes of data, MACRO without its stage,
 *     CONNECT without its host name's NUL, its family, or (families 4
 *     and 6) its port and its address's NUL, an address too long, MAIL
 *     or RCPT without the address's NUL or with one over MAX_LINE, a
 *     macro name or value without its NUL, or an unknown command, is a
 *     violation;
 *   - OPTNEG is answered O, RCPT y (REPLYCODE) when the verdict defers
 *     and c otherwise, EOB i (INSHEADER) when the message had a first
 *     pass and a header is configured, then c; CONNECT, MAIL, HELO,
 *     DATA, HEADER, EOH, BODY and UNKNOWN c; MACRO, ABORT and QUIT_NC
 *     nothing; QUIT ends the session.
 * The model keeps the client (CONNECT's address, the macros {client_name},
 * {client_resolve}, {i}) and the message (MAIL's sender, the header due)
 * as the protocol defines them, and from them the request each RCPT must
 * be judged as. Invariants, packet by packet (h[0] & 1 clear):
 *   - read_packet gives exactly the model's packets, none longer than
 *     MILTER_MAX, and a violation exactly where the model finds one; the
 *     packet's data are handed to milter_command in a buffer of exactly
 *     their size, so that a read past them is an ASan finding;
 *   - milter_command returns a violation exactly when the model says so,
 *     logs it, and writes nothing for that packet; QUIT ends it;
 *   - every reply is a well-formed packet (length, then a command
 *     greylistd may send: O, c, y, i) and the one the model expects: O
 *     gives version 6, the actions and stages of the MTA's offer masked
 *     with greylistd's, then macro lists; y is "4NN " and the defer text
 *     with every "%" doubled (a single one makes Sendmail answer 550),
 *     NUL-terminated, exactly as the model builds it from the configured
 *     action and text; i is index 0, the configured header's name and a
 *     printable value;
 *   - the store is asked exactly when the model's request needs it (an
 *     address, a triplet, no whitelist entry), and the decision line is
 *     that request's (check_decision), the only line besides the
 *     auto-whitelist's;
 * and for the whole session through milter_serve (h[0] & 1 set; a
 * QUIT_NC packet is put first, so that its static state starts empty
 * whatever the last input left): the replies are the model's, in order,
 * nothing after a violation, and its status RD_VIOLATION after one
 * (serve() then exits 76), RD_EOF otherwise.
 *
 * Header: h[0] & 1: the whole session (milter_serve); h[0] >> 1 & 7: short-read
 * schedule; h[0] >> 4 & 3: the defer text; h[0] >> 6: the action;
 * h[1] & 3: the header; h[1] & 4: --learn; h[1] & 8: --lookup-by-host;
 * h[1] & 16: a MACRO packet of MILTER_MAX - 17 * h[2] bytes comes first
 * (the rest straddles the end of the 64 KiB buffer); h[2] and the
 * recipient's length: the store's scenario for a RCPT.
 */

#include "fuzz.h"

#include <arpa/inet.h>
#include <ctype.h>

#include "fuzz_serve.h"

/* The store's scenario for a RCPT: h[2] and the recipient's length. */
static unsigned scene_base;

static const char whitelist[] =
	"client 192.0.2.25\n"
	"client 2001:db8:77::/48\n"
	"client google.com\n"
	"client /^mx[0-9]+\\.example\\.net$/\n"
	"recipient postmaster@\n"
	"recipient @sub.example.net\n"
	"recipient /^noc-.*@example\\.com$/\n";

/* What the model knows of the connection. */
struct mstate {
	char addr[INET6_ADDRSTRLEN + 1];	/* CONNECT's address, "" none */
	char name[LOG_VALUE_MAX + 1];		/* {client_name} */
	char resolve[16];			/* {client_resolve} */
	char queue_id[64];			/* {i} */
	char sender[MAX_LINE + 1];		/* MAIL's, without <> */
	char rcpt[MAX_LINE + 1];		/* the RCPT packet's */
	long long header;			/* a first pass's wait, or -1 */
};

/* What must come of a packet. */
enum { X_VIOLATION, X_NONE, X_CONTINUE, X_OPTNEG, X_RCPT, X_EOB, X_QUIT };

/* m_str - the NUL-terminated string at d[*pos], *pos moved past it; NULL
 * when the data end before its NUL */
static const char *m_str(const char *d, size_t len, size_t *pos)
{
	const char *s = d + *pos;
	size_t n = *pos < len ? strnlen(s, len - *pos) : 0;

	if (*pos >= len || *pos + n == len)
		return NULL;
	*pos += n + 1;
	return s;
}

/* m_copy - a value into a field of "size" bytes, cut as snprintf cuts */
static void m_copy(char *dst, size_t size, const char *s)
{
	size_t n = strlen(s);

	if (n > size - 1)
		n = size - 1;
	memcpy(dst, s, n);
	dst[n] = 0;
}

/* m_address - an envelope address, "<...>" unbracketed, at most MAX_LINE;
 * -1 without its NUL or too long */
static int m_address(const char *d, size_t len, char *dst)
{
	size_t pos = 0, n;
	const char *s = m_str(d, len, &pos);

	if (!s)
		return -1;
	n = strlen(s);
	if (n >= 2 && s[0] == '<' && s[n - 1] == '>') {
		s++;
		n -= 2;
	}
	if (n > MAX_LINE)
		return -1;
	memcpy(dst, s, n);
	dst[n] = 0;
	return 0;
}

/* m_is - the macro name [nm, nm+n) is "want" */
static int m_is(const char *nm, size_t n, const char *want)
{
	return n == strlen(want) && memcmp(nm, want, n) == 0;
}

/* m_macros - MACRO: the stage byte, then name and value pairs; a name
 * in braces is the name inside them */
static int m_macros(const char *d, size_t len, struct mstate *s)
{
	const char *name, *value;
	size_t pos = 1, n;

	if (len < 1)
		return X_VIOLATION;
	while (pos < len) {
		if (!(name = m_str(d, len, &pos))
		    || !(value = m_str(d, len, &pos)))
			return X_VIOLATION;
		n = strlen(name);
		if (n >= 2 && name[0] == '{' && name[n - 1] == '}') {
			name++;
			n -= 2;
		}
		if (m_is(name, n, "client_name"))
			m_copy(s->name, sizeof(s->name), value);
		else if (m_is(name, n, "client_resolve"))
			m_copy(s->resolve, sizeof(s->resolve), value);
		else if (m_is(name, n, "i"))
			m_copy(s->queue_id, sizeof(s->queue_id), value);
	}
	return X_NONE;
}

/* m_connect - CONNECT: host name, family, port (families 4 and 6 only),
 * address; "IPv6:" before an IPv6 address is Sendmail's */
static int m_connect(const char *d, size_t len, struct mstate *s)
{
	const char *addr;
	size_t pos = 0;
	char family;

	s->addr[0] = 0;
	if (!m_str(d, len, &pos) || pos >= len)
		return X_VIOLATION;
	family = d[pos++];
	if (family != '4' && family != '6')
		return X_CONTINUE;
	pos += 2;
	if (pos > len || !(addr = m_str(d, len, &pos)))
		return X_VIOLATION;
	if (strncmp(addr, "IPv6:", 5) == 0)
		addr += 5;
	if (strlen(addr) > INET6_ADDRSTRLEN)
		return X_VIOLATION;
	strcpy(s->addr, addr);
	return X_CONTINUE;
}

/* m_reset - ABORT and the end of a message */
static void m_reset(struct mstate *s)
{
	s->sender[0] = s->queue_id[0] = 0;
	s->header = -1;
}

/* m_packet - what must come of one packet; the model's state follows it
 * (EOB's reset is the caller's, after its reply is checked) */
static int m_packet(char cmd, const char *d, size_t len, struct mstate *s)
{
	switch (cmd) {
	case 'O':
		return len < 12 ? X_VIOLATION : X_OPTNEG;
	case 'D':
		return m_macros(d, len, s);
	case 'C':
		return m_connect(d, len, s);
	case 'M':
		if (m_address(d, len, s->sender) != 0)
			return X_VIOLATION;
		s->header = -1;
		return X_CONTINUE;
	case 'R':
		return m_address(d, len, s->rcpt) != 0 ? X_VIOLATION : X_RCPT;
	case 'E':
		return X_EOB;
	case 'A':
		m_reset(s);
		return X_NONE;
	case 'K':
		memset(s, 0, sizeof(*s));
		m_reset(s);
		return X_NONE;
	case 'Q':
		return X_QUIT;
	case 'H': case 'T': case 'L': case 'N': case 'B': case 'U':
		return X_CONTINUE;
	}
	return X_VIOLATION;
}

/* m_split - the model's next packet of s[*pos, n): 1 with its command,
 * data and length; 0 at the end; -1 a violation */
static int m_split(const char *s, size_t n, size_t *pos, char *cmd,
		   const char **d, size_t *len)
{
	size_t left = n - *pos;
	uint32_t l;

	if (left == 0)
		return 0;
	if (left < 4)
		return -1;
	l = (uint32_t)(unsigned char)s[*pos] << 24
		| (uint32_t)(unsigned char)s[*pos + 1] << 16
		| (uint32_t)(unsigned char)s[*pos + 2] << 8
		| (unsigned char)s[*pos + 3];
	if (l < 1 || l > MILTER_MAX || left - 4 < l)
		return -1;
	*cmd = s[*pos + 4];
	*d = s + *pos + 5;
	*len = l - 1;
	*pos += 4 + l;
	return 1;
}

/*
 * The replies.
 */

/* A reply packet, as written. */
struct reply {
	char cmd;
	const char *d;
	size_t len;
};

/* next_reply - the next packet of the replies [*p, end): 1, 0 at their
 * end; a packet cut short or of length 0 is a finding */
static int next_reply(const char **p, const char *end, struct reply *r)
{
	uint32_t l;

	if (*p == end)
		return 0;
	CHECK(end - *p >= 5, "a reply of %zu bytes", (size_t)(end - *p));
	l = be32(*p);
	CHECK(l >= 1 && l <= (size_t)(end - *p) - 4, "a reply packet of"
	      " length %u, %zu bytes left", l, (size_t)(end - *p) - 4);
	r->cmd = (*p)[4];
	r->d = *p + 5;
	r->len = l - 1;
	*p += 4 + l;
	CHECK(strchr("Ocyi", r->cmd) && r->cmd, "reply command 0x%02x",
	      (unsigned char)r->cmd);
	CHECK(r->cmd != 'c' || r->len == 0, "a CONTINUE with data");
	return 1;
}

/* check_optneg - version 6, the offer masked, then macro lists: a stage
 * and a NUL-terminated list of printable names, to the packet's end */
static void check_optneg(const struct reply *r, const char *offer)
{
	size_t o = 12, n;

	CHECK(r->cmd == 'O' && r->len >= 12, "OPTNEG answered %c", r->cmd);
	CHECK(be32(r->d) == 6 && be32(r->d + 4) == (be32(offer + 4) & 1)
	      && be32(r->d + 8) == (be32(offer + 8) & 0x372),
	      "OPTNEG: version %u, actions %x, stages %x", be32(r->d),
	      be32(r->d + 4), be32(r->d + 8));
	while (o < r->len) {
		CHECK(r->len - o > 4 && be32(r->d + o) <= 6, "OPTNEG: a macro"
		      " list at %zu", o);
		n = strnlen(r->d + o + 4, r->len - o - 4);
		CHECK(o + 4 + n < r->len && fz_printable(r->d + o + 4, n),
		      "OPTNEG: a macro list without its NUL");
		o += 4 + n + 1;
	}
}

/* check_replycode - "4NN ...", NUL-terminated, every "%" doubled */
static void check_replycode(const struct reply *r)
{
	const char *t = r->d;
	size_t i, n = r->len ? r->len - 1 : 0;

	CHECK(r->len >= 5 && t[n] == 0 && strlen(t) == n, "REPLYCODE of"
	      " %zu bytes, not one string", r->len);
	CHECK(t[0] == '4' && isdigit((unsigned char)t[1])
	      && isdigit((unsigned char)t[2]) && t[3] == ' ',
	      "REPLYCODE not 4NN: %s", t);
	CHECK(fz_printable(t, n), "REPLYCODE not printable: %s", t);
	for (i = 0; i < n; i++)
		if (t[i] == '%')
			CHECK(t[++i] == '%', "a single %% in REPLYCODE: %s", t);
}

/* check_insheader - index 0, the header's name, a printable value */
static void check_insheader(const struct reply *r)
{
	size_t nl = strcspn(cfg.header, ":"), vl;

	CHECK(r->cmd == 'i' && r->len > 4 + nl + 1 && be32(r->d) == 0
	      && memcmp(r->d + 4, cfg.header, nl) == 0 && r->d[4 + nl] == 0,
	      "INSHEADER: not index 0 and the name %.*s", (int)nl,
	      cfg.header);
	vl = strnlen(r->d + 5 + nl, r->len - 5 - nl);
	CHECK(5 + nl + vl + 1 == r->len && fz_printable(r->d + 5 + nl, vl),
	      "INSHEADER: the value is not one printable string");
}

/* check_header_value - the header's value, when its template shows no
 * date (which a second may change): the template's after "Name:" and a
 * space, for the first pass's wait */
static void check_header_value(const struct reply *r, long long seconds)
{
	char text[MAX_TEXT + 64];
	const char *v;

	if (strstr(cfg.header, "%d"))
		return;
	reply_text(text, sizeof(text), 0, NULL, seconds);
	v = strchr(text, ':') + 1;
	v += *v == ' ';
	CHECK(strcmp(r->d + 5 + strcspn(cfg.header, ":"), v) == 0, "the header"
	      " of a first pass after %llds is \"%s\", not \"%s\"", seconds,
	      r->d + 5 + strcspn(cfg.header, ":"), v);
}

/* want_replycode - the REPLYCODE's text as the protocol wants it: the
 * action's code (451 for a word), 4.7.1 unless the code or the text
 * brings an enhanced status, the text with every "%" doubled */
static void want_replycode(char *buf, size_t size, const char *rcpt,
			   long long seconds)
{
	char text[MAX_TEXT + MAX_DOMAIN + 64];
	const char *a = cfg.greylist_action, *t;
	size_t n, st;

	reply_text(text, sizeof(text), 1, rcpt, seconds);
	st = status_len(text);
	n = (size_t)snprintf(buf, size, "%s%s ", isdigit((unsigned char)*a)
			     ? a : "451", strchr(a, ' ') || (st && text[st]
							     == ' ')
			     ? "" : " 4.7.1");
	for (t = text; *t && n + 3 < size; t++) {
		if (*t == '%')
			buf[n++] = '%';
		buf[n++] = *t;
	}
	buf[n] = 0;
}

/*
 * Packet by packet.
 */

/* m_request - the policy request a RCPT must be judged as: the client's
 * address (none for a local client), its name when verified (Postfix's
 * {client_name}, not "unknown" nor "[address]"; Sendmail's with
 * {client_resolve} OK), MAIL's sender, the recipient, {i} */
static void m_request(const struct mstate *s, struct request *r)
{
	int verified = s->name[0] && s->name[0] != '['
		&& strcmp(s->name, "unknown") != 0
		&& (!s->resolve[0] || strcmp(s->resolve, "OK") == 0);

	memset(r, 0, sizeof(*r));
	r->attr[A_REQUEST] = "smtpd_access_policy";
	r->attr[A_PROTOCOL_STATE] = "RCPT";
	r->attr[A_CLIENT_ADDRESS] = s->addr[0] ? s->addr : NULL;
	r->attr[A_CLIENT_NAME] = verified ? s->name : "unknown";
	r->attr[A_SENDER] = s->sender;
	r->attr[A_RECIPIENT] = s->rcpt;
	r->attr[A_QUEUE_ID] = s->queue_id;
}

/* m_verdict - the verdict before the store (V_NEW: the store decides):
 * a bad request without an address or with one that is none, else the
 * whitelist's; what the whitelist logs is let go */
static void m_verdict(const struct request *r, struct outcome *o)
{
	static struct triplet t;
	size_t len;

	memset(o, 0, sizeof(*o));
	if (!r->attr[A_CLIENT_ADDRESS]) {
		o->v = V_BAD_REQUEST;
		snprintf(o->why, sizeof(o->why), "bad request (no"
			 " client_address)");
	} else if (make_triplet(r->attr[A_CLIENT_ADDRESS], r->attr[A_SENDER],
				r->attr[A_RECIPIENT], &t) != 0) {
		o->v = V_BAD_REQUEST;
		snprintf(o->why, sizeof(o->why), "bad request (client_address"
			 " is not an IP address)");
	} else {
		wl_match(&whitelists, &t, r->attr[A_CLIENT_NAME], &o->v);
	}
	(void)fz_take(log_mem, &len);
}

/* check_rcpt_log - the log of a RCPT: the auto-whitelist's line when the
 * client joined it, then the request's decision line, nothing else */
static void check_rcpt_log(const struct request *r, const struct outcome *o)
{
	size_t len;
	char *s = fz_take(log_mem, &len), *end = s + len, *line;

	line = check_judged(next_line(&s, end, 1), &s, end, r, o, NULL);
	CHECK(!line, "logged more for a RCPT: %s", line);
}

/* check_rcpt - RCPT: the store asked when needed, y when the verdict
 * defers (the model's REPLYCODE, exactly), else c; a first pass makes the
 * message's header due */
static void check_rcpt(struct mstate *s, const struct request *r,
		       struct outcome *o, const char **p, const char *end)
{
	char want[MAX_REPLY];
	struct reply rp;

	CHECK(fz_store_calls == (o->v == V_NEW), "%u look-ups for verdict"
	      " %d", fz_store_calls, o->v);
	if (o->v == V_NEW)
		*o = fz_store_out;
	check_rcpt_log(r, o);
	CHECK(next_reply(p, end, &rp), "no reply to a RCPT");
	if (!verdicts[o->v].defer) {
		CHECK(rp.cmd == 'c', "RCPT of verdict %d answered %c", o->v,
		      rp.cmd);
	} else {
		CHECK(rp.cmd == 'y', "a deferred RCPT answered %c", rp.cmd);
		check_replycode(&rp);
		want_replycode(want, sizeof(want), s->rcpt, o->seconds);
		CHECK(strcmp(rp.d, want) == 0, "REPLYCODE \"%s\", not \"%s\"",
		      rp.d, want);
	}
	if (o->v == V_PASS_FIRST && s->header < 0)
		s->header = o->seconds;
}

/* check_replies - what one packet was answered, against the model */
static void check_replies(int want, struct mstate *s, const char *offer,
			  const struct request *r, struct outcome *o)
{
	static char copy[4 * MAX_REPLY];	/* fz_take's buffer is shared */
	size_t n;
	const char *p = fz_take(out_fd, &n), *end;
	struct reply rp;

	CHECK(n <= sizeof(copy), "%zu bytes of replies to one packet", n);
	p = memcpy(copy, p, n);
	end = p + n;
	if (want == X_RCPT) {
		check_rcpt(s, r, o, &p, end);
	} else {
		(void)fz_take(log_mem, &n);
		CHECK(n == 0, "command %d logged", want);
	}
	if (want == X_OPTNEG) {
		CHECK(next_reply(&p, end, &rp), "no reply to OPTNEG");
		check_optneg(&rp, offer);
	}
	if (want == X_EOB && s->header >= 0 && *cfg.header) {
		CHECK(next_reply(&p, end, &rp), "no header at EOB");
		check_insheader(&rp);
		check_header_value(&rp, s->header);
	}
	if (want == X_EOB)
		m_reset(s);
	if (want == X_CONTINUE || want == X_EOB)
		CHECK(next_reply(&p, end, &rp) && rp.cmd == 'c', "command"
		      " answered %s, not CONTINUE", p == end ? "nothing"
		      : "another packet");
	CHECK(!next_reply(&p, end, &rp), "a reply more (%c)", rp.cmd);
}

/* is_violation - the line a violation logs (a decision line, whose
 * values may hold any words, always holds "action=") */
static int is_violation(const char *line)
{
	const char *p = strstr(line, "]: ");

	return p && strncmp(p + 3, "warning: protocol violation: ", 29) == 0
		&& !strstr(line, "action=");
}

/* check_violation - a violation is logged, and nothing else */
static void check_violation(void)
{
	size_t len;
	char *s = fz_take(log_mem, &len), *end = s + len, *line;

	line = next_line(&s, end, 0);
	CHECK(line && is_violation(line) && !next_line(&s, end, 0),
	      "a violation not logged as one line: %s", line);
}

/* one_packet - milter_command on one packet, the data in a buffer of
 * their size; the status */
static enum read_status one_packet(struct conn *c, struct milter *m,
				   struct mstate *s, char cmd,
				   const char *data, size_t len)
{
	struct request r;
	struct outcome o;
	enum read_status st;
	char *copy = malloc(len ? len : 1);
	int want = m_packet(cmd, data, len, s);

	CHECK(copy, "out of memory");
	memcpy(copy, data, len);
	memset(&o, 0, sizeof(o));
	if (want == X_RCPT) {
		m_request(s, &r);
		m_verdict(&r, &o);
	}
	fz_scene = scene_base + (unsigned)strlen(s->rcpt);
	fz_store_calls = 0;
	st = milter_command(c, m, cmd, copy, len);
	free(copy);
	CHECK(st == (want == X_VIOLATION ? RD_VIOLATION : want == X_QUIT
		     ? RD_EOF : RD_OK), "command %c (%zu bytes): status %d,"
	      " the model says %d", cmd, len, st, want);
	if (want == X_VIOLATION) {
		CHECK(lseek(out_fd, 0, SEEK_END) == 0, "a reply to a packet"
		      " that is a violation");
		check_violation();
		return st;
	}
	check_replies(want, s, data, &r, &o);
	return st;
}

/* by_packet - the packets of stream[0, n), each read by read_packet and
 * given to milter_command, as milter_serve does */
static void by_packet(const char *stream, size_t n)
{
	static struct conn c;
	static struct milter m;
	static struct mstate s;
	size_t pos = 0, before, len, mlen;
	enum read_status st;
	const char *mdata;
	char cmd, mcmd, *data;
	int want;

	memset(&c, 0, sizeof(c));
	memset(&m, 0, sizeof(m));
	memset(&s, 0, sizeof(s));
	c.in = fz_conn_fd;
	c.out = out_fd;
	milter_reset(&m);
	m_reset(&s);
	for (;;) {
		before = pos;
		want = m_split(stream, n, &pos, &mcmd, &mdata, &mlen);
		st = read_packet(&c, &cmd, &data, &len);
		CHECK(st == (want < 0 ? RD_VIOLATION : want ? RD_OK : RD_EOF),
		      "packet at byte %zu: read_packet %d, the model says %d",
		      before, st, want);
		if (st != RD_OK) {
			if (st == RD_VIOLATION)
				check_violation();
			return;
		}
		CHECK(cmd == mcmd && len == mlen && data == c.buf + c.start
		      - len && memcmp(data, mdata, len) == 0 && len + 1
		      <= MILTER_MAX, "packet at byte %zu: another packet read"
		      " (%c, %zu bytes)", before, cmd, len);
		if (one_packet(&c, &m, &s, cmd, data, len) != RD_OK)
			return;
		maintain(&c);
	}
}

/*
 * The whole session.
 */

/* check_session_log - a violation logged as the last line exactly when
 * the session ended in one */
static void check_session_log(int violated)
{
	size_t len;
	char *s = fz_take(log_mem, &len), *end = s + len, *line, *last = NULL;

	while ((line = next_line(&s, end, 0))) {
		CHECK(!last || !is_violation(last), "logged after a violation:"
		      " %s", line);
		last = line;
	}
	CHECK(!violated == !(last && is_violation(last)), "%s violation"
	      " logged (last line: %s)", violated ? "no" : "a",
	      last ? last : "none");
}

/* check_session - milter_serve's replies to stream[0, n), in the
 * model's order (a RCPT's c or y, an EOB's header optional: the verdicts
 * are the packet-by-packet mode's to check), nothing after a violation or
 * QUIT; its status: RD_VIOLATION (serve() exits 76) after a violation,
 * else RD_EOF */
static void check_session(const char *stream, size_t n, enum read_status st)
{
	static struct mstate s;
	size_t pos = 0, len, on;
	const char *d, *p = fz_take(out_fd, &on), *end = p + on;
	struct reply rp;
	int k, want = X_NONE;
	char cmd;

	memset(&s, 0, sizeof(s));
	while ((k = m_split(stream, n, &pos, &cmd, &d, &len)) > 0) {
		want = m_packet(cmd, d, len, &s);
		if (want == X_VIOLATION || want == X_QUIT)
			break;
		if (want == X_NONE)
			continue;
		CHECK(next_reply(&p, end, &rp), "no reply to %c", cmd);
		if (want == X_OPTNEG)
			check_optneg(&rp, d);
		if (want == X_RCPT && rp.cmd == 'y')
			check_replycode(&rp);
		if (want == X_RCPT)
			CHECK(rp.cmd == 'y' || rp.cmd == 'c', "RCPT answered"
			      " %c", rp.cmd);
		if (want == X_EOB && rp.cmd == 'i') {
			check_insheader(&rp);
			CHECK(next_reply(&p, end, &rp), "no reply after the"
			      " header");
		}
		if (want == X_CONTINUE || want == X_EOB)
			CHECK(rp.cmd == 'c', "%c answered %c", cmd, rp.cmd);
	}
	CHECK(!next_reply(&p, end, &rp), "a reply after the session ended"
	      " (%c)", rp.cmd);
	k = k < 0 || want == X_VIOLATION;
	CHECK(st == (k ? RD_VIOLATION : RD_EOF), "status %d, the model says"
	      " %s", st, k ? "violation (exit 76)" : "the end (exit 0)");
	check_session_log(k);
}

/* session - the whole stream through milter_serve, on a connection of
 * its own (serve()'s is static: it serves one connection per process) */
static void session(const char *stream, size_t n)
{
	static struct conn c;

	memset(&c, 0, sizeof(c));
	c.in = fz_conn_fd;
	c.out = out_fd;
	check_session(stream, n, milter_serve(&c));
}

/*
 * The input.
 */

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static const char *const text[] = { whitelist, NULL };
	static const enum wl_format format[] = { WLF_GREYLISTD };

	(void)argc;
	(void)argv;
	fz_serve_init(text, format, 7);
	cfg.milter = 1;
	return 0;
}

/* setup - the options the header chooses (see the file's header) */
static void setup(const uint8_t *h)
{
	static const char *const texts[] = {
		"Greylisted, please try again in %s seconds",
		"4.2.0 %r: wait %s s (%%)", "%%%r%%", "",
	};
	static const char *const actions[] = {
		"DEFER_IF_PERMIT", "450", "451 4.7.1", "DEFER",
	};
	static const char *const headers[] = {
		"X-Greylist: delayed %t seconds by greylistd-%v at %h; %d", "",
		"X-Greylist: %t%%", "X-G:%d",
	};

	fz_sched = h[0] >> 1 & 7;
	fz_nreads = 0;
	cfg.greylist_text = texts[h[0] >> 4 & 3];
	cfg.greylist_action = actions[h[0] >> 6];
	cfg.header = headers[h[1] & 3];
	cfg.learn = h[1] >> 2 & 1;
	cfg.lookup_by_host = h[1] >> 3 & 1;
	scene_base = h[2];
}

/* filler - a MACRO packet of n bytes (length word included): one macro
 * whose value fills it */
static size_t filler(char *p, size_t n)
{
	memset(p, 'f', n);
	put32(p, (uint32_t)(n - 4));
	memcpy(p + 4, "DH{f}", 6);	/* with the name's NUL */
	p[n - 1] = 0;
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char stream[MAX_REQUEST + (1 << 20)];
	size_t n = 0;

	if (size < 3 || size - 3 > sizeof(stream) - MAX_REQUEST - 8)
		return 0;
	setup(data);
	if (data[0] & 1) {		/* a new connection's state first */
		memcpy(stream, "\0\0\0\1K", 5);
		n = 5;
	}
	if (data[1] & 16)
		n += filler(stream + n, MILTER_MAX + 4 - 17 * (size_t)data[2]);
	memcpy(stream + n, data + 3, size - 3);
	n += size - 3;
	fz_set(fz_conn_fd, stream, n);
	if (data[0] & 1)
		session(stream, n);
	else
		by_packet(stream, n);
	return 0;
}
