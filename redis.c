/*
 * redis.c - the Redis store (--redis, --redis-sentinel): several MX hosts,
 * each with its own greylistd, sharing one greylist
 *
 *	hiredis is the client: it connects with a timeout, writes commands
 *	in RESP and parses the replies, which code of ours would do no
 *	better. Like libsystemd it is loaded with dlopen(3) (log.c) only when
 *	Redis is configured, so that a site on the GDBM file neither pays for
 *	it at start-up nor needs it installed. hiredis 0.14 (Debian 12) has
 *	no Sentinel support: asking a Sentinel for the primary is one
 *	command of ours (ask_sentinels).
 *
 * KEYS AND VALUES
 *	A record's key is the GDBM file's (greylist.h), after a Redis hash
 *	tag of the client network: "{NET}T\nNET\nSENDER\nRECIPIENT" and
 *	"{NET}C\nCLIENT", so that a triplet and its client lie in one Cluster
 *	slot. With --privacy the tag is the digest's first 16 hex digits
 *	(the network is what the key hides). Notes are "M\nNAME", untagged.
 *	Values are the file's. Every T and C record is written with a TTL
 *	that ends when expired() would delete it from the file (record_end,
 *	rule.c): the retry window for a pending triplet, max-age for a passed
 *	one and for a client. A record is rewritten, and its TTL renewed, no
 *	more often than in the file; no expiry pass runs against Redis.
 *
 * ONE RULE
 *	decide() (rule.c) stays the only statement of the rule. A request
 *	reads its two records with one MGET and decides; when nothing
 *	changes, that was its only round trip. A change is written by
 *	CAS_SCRIPT, which stores the new records only if the old ones are
 *	still what decide() saw, and otherwise returns what is there now, to
 *	decide again: concurrent processes on one triplet give exactly one
 *	"new". The script compares and stores; it knows nothing of the rule.
 *
 * FAILURE
 *	Every command of a request runs within --lock-timeout of its start.
 *	A refused or broken connection, a timeout, an error reply (OOM,
 *	NOAUTH, WRONGTYPE, ...) or a reply of the wrong shape fails open: the
 *	request is answered DUNNO and the cause logged, once per connection.
 *	A broken connection is dropped and made again at the next request, so
 *	a Redis that comes back is used again. With --redis-sentinel the
 *	primary is asked of the Sentinels at each connection; a READONLY
 *	reply (a primary demoted under us) or a broken connection makes the
 *	request ask them again, once, within the same budget.
 */

#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "greylist.h"

/* hiredis's functions, in the order log.c's table loads them. */
enum { HR_CONNECT, HR_CONNECT_UNIX, HR_TIMEOUT, HR_COMMAND, HR_FREE_REPLY,
       HR_FREE };
typedef redisContext *hr_connect_fn(const char *, int, const struct timeval);
typedef redisContext *hr_connect_unix_fn(const char *, const struct timeval);
typedef int hr_timeout_fn(redisContext *, const struct timeval);
typedef void *hr_command_fn(redisContext *, int, const char **,
			    const size_t *);
typedef void hr_free_reply_fn(void *);
typedef void hr_free_fn(redisContext *);

/* HR - hiredis's function i, of type t (redis_check has loaded them) */
#define HR(i, t)	((t *)lib_symbol(LIB_HIREDIS, (i)))

/* A request decides again at most this often when its records changed
 * under it: each time, another process wrote that triplet meanwhile,
 * which the few deliveries of one triplet cannot keep doing. */
#define CAS_TRIES	8

/* A Redis password is read up to this length: far beyond a generated
 * one, and AUTH's line stays small. */
#define MAX_PASSWORD	512

/* A key's hash tag: "{" the client network "}". */
#define MAX_TAG		(INET6_ADDRSTRLEN + 2)
#define MAX_RKEY	(MAX_TAG + MAX_KEY)

/* A SCAN page: keys asked for at once by greylistctl's walk. */
#define SCAN_COUNT	"1000"

/* Compare and set: KEYS are a triplet and (with the AWL) its client;
 * for each, ARGV has the value decide() saw ("" when absent), the value
 * to store ("" to leave it), its TTL in seconds. 1 when stored, else the
 * values there now, to decide again. */
static const char CAS_SCRIPT[] =
	"local now, same = {}, true\n"
	"for i = 1, #KEYS do\n"
	"  now[i] = redis.call('GET', KEYS[i]) or ''\n"
	"  if now[i] ~= ARGV[3 * i - 2] then same = false end\n"
	"end\n"
	"if not same then return now end\n"
	"for i = 1, #KEYS do\n"
	"  if ARGV[3 * i - 1] ~= '' then\n"
	"    redis.call('SET', KEYS[i], ARGV[3 * i - 1], 'EX', ARGV[3 * i])\n"
	"  end\n"
	"end\n"
	"return 1\n";

/* An address: a UNIX socket's path, or an IP address and a port. */
struct raddr {
	char host[INET6_ADDRSTRLEN];
	int port;			/* 0: a UNIX socket at path */
	char path[108];			/* sockaddr_un's sun_path */
};

static redisContext *conn;		/* the process's connection */
static char why[240];			/* the last fault */
static int readonly;			/* it was READONLY: ask again */
static struct key_kind kind;		/* the store's, once known */
static int kind_known;

/* fault - say why the store could not be used; -1 */
__attribute__((format(printf, 1, 2)))
static int fault(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	return -1;
}

const char *redis_why(void)
{
	return why;
}

/* redis_in_use - the store is Redis, not the GDBM file */
int redis_in_use(void)
{
	return cfg.redis || cfg.redis_sentinel;
}

/*
 * Addresses and connections.
 */

/* parse_addr - "/path", "IP:PORT" or "[IPv6]:PORT" (len bytes of s)
 * into *a; -1 when it is none of them. An IP address, never a name: a
 * name would be looked up in the DNS at every connection, with no bound
 * on the wait. */
static int parse_addr(const char *s, size_t len, struct raddr *a)
{
	const char *end = s + len, *colon = memrchr(s, ':', len), *p;
	unsigned char bin[16];
	size_t hlen;
	int family;
	long port = 0;

	memset(a, 0, sizeof(*a));
	if (len > 0 && s[0] == '/') {
		if (len >= sizeof(a->path))
			return -1;
		memcpy(a->path, s, len);
		return 0;
	}
	if (!colon || end - colon < 2 || end - colon > 6)
		return -1;
	for (p = colon + 1; p < end; p++) {
		if (*p < '0' || *p > '9')
			return -1;
		port = port * 10 + (*p - '0');
	}
	hlen = (size_t)(colon - s);
	if (hlen > 2 && s[0] == '[' && s[hlen - 1] == ']') {
		s++;
		hlen -= 2;
	} else if (memchr(s, ':', hlen)) {
		return -1;		/* an IPv6 address needs its brackets */
	}
	if (port < 1 || port > 65535 || hlen == 0 || hlen >= sizeof(a->host))
		return -1;
	memcpy(a->host, s, hlen);
	a->port = (int)port;
	return parse_address(a->host, &family, bin);
}

/* addr_text - an address as the admin wrote it, for messages */
static const char *addr_text(const struct raddr *a, char *buf, size_t size)
{
	if (!a->port)
		return a->path;
	snprintf(buf, size, strchr(a->host, ':') ? "[%s]:%d" : "%s:%d",
		 a->host, a->port);
	return buf;
}

/* each_sentinel - the i-th address of --redis-sentinel's list into *a;
 * 0, or -1 past its end or on a bad one */
static int each_sentinel(size_t i, struct raddr *a)
{
	const char *s = cfg.redis_sentinel, *end;

	for (;;) {
		end = s + strcspn(s, ",");
		if (i-- == 0)
			return parse_addr(s, (size_t)(end - s), a);
		if (!*end)
			return -1;
		s = end + 1;
	}
}

/* sentinel_count - the addresses in --redis-sentinel's list */
static size_t sentinel_count(void)
{
	const char *p;
	size_t n = 1;

	for (p = cfg.redis_sentinel; *p; p++)
		n += *p == ',';
	return n;
}

/* redis_check - the Redis options, at start-up (config_check): the
 * addresses, the Sentinels with a name, one of the two ways, and
 * hiredis itself */
void redis_check(void)
{
	struct raddr a;
	size_t i;

	if (cfg.redis && parse_addr(cfg.redis, strlen(cfg.redis), &a) != 0)
		config_error("--redis=%.80s: use /path/to/redis.sock, IP:PORT or"
			     " [IPv6]:PORT (an address, not a name: a name"
			     " would be looked up at every connection)",
			     cfg.redis);
	for (i = 0; cfg.redis_sentinel && i < sentinel_count(); i++)
		if (each_sentinel(i, &a) != 0)
			config_error("--redis-sentinel=%.80s: use IP:PORT or"
				     " [IPv6]:PORT, joined by commas",
				     cfg.redis_sentinel);
	if (!cfg.redis_sentinel != !cfg.redis_master)
		config_error("--redis-sentinel and --redis-master go together");
	if (cfg.redis && cfg.redis_sentinel)
		config_error("--redis or --redis-sentinel: one of the two");
	if (!redis_in_use() && (cfg.redis_password_file || cfg.redis_wait))
		config_error("--redis-password-file and --redis-wait are for"
			     " the Redis store: set --redis or"
			     " --redis-sentinel");
	if (redis_in_use() && !lib_symbol(LIB_HIREDIS, HR_FREE))
		config_error("the Redis store needs libhiredis.so.0.14 (Debian"
			     " package libhiredis0.14)");
}

/* budget - what is left of the request's time, at most 1/share of it,
 * as a timeval; -1 when it is spent */
static int budget(const struct timespec *deadline, int share,
		  struct timeval *tv)
{
	int ms = ms_left(deadline) / share;

	if (ms <= 0)
		return fault("no answer within the time left (--lock-timeout"
			     " or --wait)");
	tv->tv_sec = ms / 1000;
	tv->tv_usec = (suseconds_t)(ms % 1000) * 1000;
	return 0;
}

/* connect_to - a connection to one server, within 1/share of the time
 * left; NULL with the fault said */
static redisContext *connect_to(const struct raddr *a,
				const struct timespec *deadline, int share)
{
	struct timeval tv = { 0, 0 };
	redisContext *c;
	char buf[INET6_ADDRSTRLEN + 16];

	if (budget(deadline, share, &tv) != 0)
		return NULL;
	c = a->port ? HR(HR_CONNECT, hr_connect_fn)(a->host, a->port, tv)
		: HR(HR_CONNECT_UNIX, hr_connect_unix_fn)(a->path, tv);
	if (c && !c->err)
		return c;
	fault("Redis at %s: %s", addr_text(a, buf, sizeof(buf)),
	      c ? c->errstr : "out of memory");
	if (c)
		HR(HR_FREE, hr_free_fn)(c);
	return NULL;
}

/* drop - close the connection; the next request makes a new one */
static void drop(void)
{
	if (conn)
		HR(HR_FREE, hr_free_fn)(conn);
	conn = NULL;
}

/* command_on - one command on c within the time left: its reply, or
 * NULL with the fault said (a broken connection, a timeout, an error
 * reply); a reply is freed with free_reply */
static redisReply *command_on(redisContext *c, const struct timespec *deadline,
			      int argc, const char **argv, const size_t *len)
{
	struct timeval tv = { 0, 0 };
	redisReply *r;

	if (budget(deadline, 1, &tv) != 0)
		return NULL;
	if (HR(HR_TIMEOUT, hr_timeout_fn)(c, tv) != REDIS_OK) {
		fault("Redis: %s", c->errstr);
		return NULL;
	}
	r = HR(HR_COMMAND, hr_command_fn)(c, argc, argv, len);
	if (!r) {
		fault("Redis: %s", c->err == REDIS_ERR_EOF ? "the server closed"
		      " the connection" : c->errstr);
		return NULL;
	}
	if (r->type != REDIS_REPLY_ERROR)
		return r;
	readonly = strncmp(r->str, "READONLY", 8) == 0;
	fault("Redis answered %s: %.160s", argv[0], r->str);
	HR(HR_FREE_REPLY, hr_free_reply_fn)(r);
	return NULL;
}

static void free_reply(redisReply *r)
{
	if (r)
		HR(HR_FREE_REPLY, hr_free_reply_fn)(r);
}

/* command - command_on the process's connection; one that broke, or
 * whose server turned replica, is dropped */
static redisReply *command(const struct timespec *deadline, int argc,
			   const char **argv, const size_t *len)
{
	redisReply *r;

	readonly = 0;
	r = command_on(conn, deadline, argc, argv, len);
	if (!r && (conn->err || readonly))
		drop();
	return r;
}

/* ask_sentinels - the primary's address, from the first Sentinel that
 * knows it; each is given an equal share of the time left, and the
 * process starts at a Sentinel of its own (its PID's), so that one
 * Sentinel that is down delays few connections, and only by its share */
static int ask_sentinels(struct raddr *primary, const struct timespec *deadline)
{
	const char *argv[] = { "SENTINEL", "get-master-addr-by-name",
			       cfg.redis_master };
	size_t n = sentinel_count(), i;
	struct raddr s;
	redisContext *c;
	redisReply *r;
	char buf[INET6_ADDRSTRLEN + 16];
	int rc = -1;

	for (i = 0; i < n && rc != 0; i++) {
		if (each_sentinel(((size_t)my_pid + i) % n, &s) != 0
		    || !(c = connect_to(&s, deadline, (int)(n - i + 1))))
			continue;
		r = command_on(c, deadline, 3, argv, NULL);
		HR(HR_FREE, hr_free_fn)(c);
		if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2
		    && r->element[0]->type == REDIS_REPLY_STRING
		    && r->element[1]->type == REDIS_REPLY_STRING) {
			snprintf(buf, sizeof(buf), strchr(r->element[0]->str,
				 ':') ? "[%s]:%s" : "%s:%s",
				 r->element[0]->str, r->element[1]->str);
			rc = parse_addr(buf, strlen(buf), primary);
		}
		if (r && rc != 0)
			fault("Sentinel %s does not name a primary %s",
			      addr_text(&s, buf, sizeof(buf)), cfg.redis_master);
		free_reply(r);
	}
	return rc;
}

/* read_password - the first line of --redis-password-file; -1 (said)
 * when it cannot be read or is empty */
static int read_password(char *pw, size_t size)
{
	int fd = open(cfg.redis_password_file, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : read(fd, pw, size - 1);

	if (fd >= 0)
		close(fd);
	if (n < 0)
		return fault("--redis-password-file=%s: %s",
			     cfg.redis_password_file, strerror(errno));
	pw[n] = 0;
	pw[strcspn(pw, "\r\n")] = 0;
	if (!*pw)
		return fault("--redis-password-file=%s: no password on its"
			     " first line", cfg.redis_password_file);
	return 0;
}

/* connect_store - the process's connection, made when there is none: to
 * --redis, or to the primary the Sentinels name; with the password */
static int connect_store(const struct timespec *deadline)
{
	static char pw[MAX_PASSWORD + 2];
	const char *argv[] = { "AUTH", pw };
	struct raddr a;
	redisReply *r;

	if (conn)
		return 0;
	(void)signal(SIGPIPE, SIG_IGN);	/* a closed server's write: EPIPE */
	if (cfg.redis_sentinel ? ask_sentinels(&a, deadline) != 0
	    : parse_addr(cfg.redis, strlen(cfg.redis), &a) != 0)
		return -1;
	if (!(conn = connect_to(&a, deadline, 1)))
		return -1;
	if (!cfg.redis_password_file)
		return 0;
	if (!*pw && read_password(pw, sizeof(pw)) != 0) {
		drop();
		return -1;
	}
	r = command(deadline, 2, argv, NULL);
	free_reply(r);
	if (!r)
		drop();
	return r ? 0 : -1;
}

/*
 * Keys, and the key kind.
 */

/* tag_key - the Redis key of a record's GDBM key, in out: the hash tag,
 * then the key. The tag is the client network: a T key's first part, a
 * C key's client as a triplet's network masks it, with --privacy the
 * digest's first 16 hex digits; a note has none. The tag's length, or
 * -1 for a key of no known shape (or too long). */
static int tag_key(datum key, char *out, size_t size, size_t *len)
{
	const char *p = key.dptr + 2, *end = key.dptr + key.dsize, *nl;
	char part[INET6_ADDRSTRLEN], net[INET6_ADDRSTRLEN];
	unsigned char bin[16];
	size_t plen;
	int n, family;

	if (key.dsize < 3 || key.dptr[1] != '\n')
		return -1;
	nl = memchr(p, '\n', (size_t)(end - p));
	plen = (size_t)((nl ? nl : end) - p);
	if (key.dptr[0] == 'M') {
		*net = 0;
	} else if (is_digest(p, (size_t)(end - p))) {
		snprintf(net, sizeof(net), "%.16s", p);
	} else if (plen < sizeof(part) && (key.dptr[0] == 'T'
					   || (key.dptr[0] == 'C' && !nl))) {
		memcpy(part, p, plen);
		part[plen] = 0;
		if (key.dptr[0] == 'T')
			memcpy(net, part, plen + 1);
		else if (parse_address(part, &family, bin) != 0
			 || network_of(family, bin, net) != 0)
			return -1;
	} else {
		return -1;
	}
	n = snprintf(out, size, *net ? "{%s}" : "%s", net);
	if (n < 0 || (size_t)n + (size_t)key.dsize > size)
		return -1;
	memcpy(out + n, key.dptr, (size_t)key.dsize);
	*len = (size_t)n + (size_t)key.dsize;
	return n;
}

/* untag - a Redis key back to the GDBM key it holds: the part after a
 * leading "{...}"; NULL for a key not of greylistd's shapes */
static char *untag(char *k, size_t len, size_t *klen)
{
	char *brace = len > 0 && k[0] == '{' ? memchr(k, '}', len) : NULL;

	if (brace) {
		len -= (size_t)(brace + 1 - k);
		k = brace + 1;
	}
	if (len < 3 || k[1] != '\n' || !strchr(brace ? "TC" : "M", k[0]))
		return NULL;
	*klen = len;
	return k;
}

/* get_note_kind - the store's key-kind note into kk; 1 when there is
 * none, -1 on a fault or a note of no known shape */
static int get_note_kind(struct key_kind *kk, const struct timespec *deadline)
{
	datum key = note_key(NOTE_KEYS);
	const char *argv[] = { "GET", key.dptr };
	size_t len[] = { 3, (size_t)key.dsize };
	redisReply *r = command(deadline, 2, argv, len);
	int rc = -1;

	if (r && r->type == REDIS_REPLY_NIL)
		rc = 1;
	else if (r && r->type == REDIS_REPLY_STRING && r->len < MAX_RECORD
		 && key_kind_parse((datum){ r->str, (int)r->len }, kk) == 0)
		rc = 0;
	else if (r)
		fault("Redis: the key-kind note (M\\nkeys) has no known shape");
	free_reply(r);
	return rc;
}

/* learn_kind - the store's key kind, read once per process and checked
 * against --privacy; the first process gives a new store the configured
 * one (SET NX: of two at once, one wins and both use its) */
static int learn_kind(const struct timespec *deadline)
{
	datum key = note_key(NOTE_KEYS), v;
	char buf[MAX_RECORD];
	const char *argv[4] = { "SET", key.dptr, buf, "NX" };
	size_t len[4] = { 3, (size_t)key.dsize, 0, 2 };
	struct key_kind kk;
	redisReply *r;
	int rc;

	if (kind_known)
		return 0;
	if ((rc = get_note_kind(&kk, deadline)) == 1) {
		if (key_kind_new(&kk, cfg.privacy != 0) != 0)
			return fault("no random bytes for the --privacy secret");
		v = key_kind_encode(&kk, buf, sizeof(buf));
		len[2] = (size_t)v.dsize;
		free_reply(r = command(deadline, 4, argv, len));
		rc = r ? get_note_kind(&kk, deadline) : -1;
	}
	if (rc != 0)
		return rc > 0 ? fault("Redis: the key-kind note vanished") : -1;
	if (kk.hashed != (cfg.privacy != 0))
		return fault("Redis holds %s keys but privacy is %s: set privacy"
			     " = %s, or use another Redis database",
			     kk.hashed ? "hashed" : "plain",
			     cfg.privacy ? "on" : "off",
			     kk.hashed ? "yes" : "no");
	kind = kk;
	kind_known = 1;
	return 0;
}

/*
 * One request: read, decide, compare and set.
 */

/* The records of one request, as Redis holds them. */
struct pair {
	char key[2][MAX_RKEY];
	size_t klen[2], tlen[2];	/* the key, and its tag's length */
	char val[2][MAX_RECORD];
	size_t vlen[2];			/* 0: absent */
	int n;				/* 1, or 2 with the AWL */
};

/* pair_keys - the Redis keys of a triplet's records */
static int pair_keys(const struct triplet *t, struct pair *q)
{
	static struct keys k;
	datum d[2];
	int i, tl;

	triplet_keys(t, &kind, &k);
	d[0] = k.tkey;
	d[1] = k.ckey;			/* dptr NULL without the AWL */
	for (i = 0; i < 2 && d[i].dptr; i++) {
		if ((tl = tag_key(d[i], q->key[i], sizeof(q->key[i]),
				  &q->klen[i])) < 0)
			return fault("a key too long for Redis");
		q->tlen[i] = (size_t)tl;
	}
	q->n = i;
	return 0;
}

/* take_values - the records from a reply: an array of q->n strings or
 * nils (MGET's), or of strings, "" for none (CAS_SCRIPT's) */
static int take_values(struct pair *q, const redisReply *r)
{
	const redisReply *e;
	int i;

	if (r->type != REDIS_REPLY_ARRAY || r->elements != (size_t)q->n)
		return fault("Redis: a reply of the wrong shape");
	for (i = 0; i < q->n; i++) {
		e = r->element[i];
		if (e->type == REDIS_REPLY_NIL) {
			q->vlen[i] = 0;
		} else if (e->type == REDIS_REPLY_STRING && e->len < MAX_RECORD) {
			memcpy(q->val[i], e->str, e->len);
			q->vlen[i] = e->len;
		} else {
			return fault("Redis: %.*s holds no record of greylistd's",
				     (int)(q->klen[i] < 80 ? q->klen[i] : 80),
				     q->key[i]);
		}
	}
	return 0;
}

/* value - record i of the pair as a datum (dptr NULL when absent) */
static datum value(struct pair *q, int i)
{
	return (datum){ q->vlen[i] ? q->val[i] : NULL,
			(int)q->vlen[i] };
}

/* fetch_pair - the request's records, with one MGET */
static int fetch_pair(struct pair *q, const struct timespec *deadline)
{
	const char *argv[3] = { "MGET", q->key[0], q->key[1] };
	size_t len[3] = { 4, q->klen[0], q->klen[1] };
	redisReply *r = command(deadline, 1 + q->n, argv, len);
	int rc = r ? take_values(q, r) : -1;

	free_reply(r);
	return rc;
}

/* cas - store what decide() returned, if the records are still those it
 * saw: 1 stored, 0 they changed (q now holds them), -1 a fault. Each TTL
 * ends at the record's end (record_end), a second after it at least. */
static int cas(struct pair *q, const struct outcome *o, long long now,
	       const struct timespec *deadline)
{
	const char *argv[3 + 2 + 6] = { "EVAL", CAS_SCRIPT };
	size_t len[3 + 2 + 6] = { 4, sizeof(CAS_SCRIPT) - 1 };
	char nv[2][MAX_RECORD], ttl[2][24];
	int i, store[2] = { o->store_t, o->store_c }, argc = 3 + q->n, rc;
	const long long *f[2] = { o->t, o->c };
	datum d, key;
	redisReply *r;

	argv[2] = q->n == 2 ? "2" : "1";
	len[2] = 1;
	for (i = 0; i < q->n && i < 2; i++) {
		argv[3 + i] = q->key[i];
		len[3 + i] = q->klen[i];
		d = store[i] ? record_encode(nv[i], sizeof(nv[i]), f[i],
					     i ? C_FIELDS : T_FIELDS)
			: (datum){ nv[i], 0 };
		key = (datum){ q->key[i] + q->tlen[i],
			       (int)(q->klen[i] - q->tlen[i]) };
		snprintf(ttl[i], sizeof(ttl[i]), "%lld", store[i]
			 ? record_end(key, d) - now + 1 : 1);
		argv[argc] = q->val[i];
		len[argc++] = q->vlen[i];
		argv[argc] = nv[i];
		len[argc++] = (size_t)d.dsize;
		argv[argc] = ttl[i];
		len[argc++] = strlen(ttl[i]);
	}
	if (!(r = command(deadline, argc, argv, len)))
		return -1;
	rc = r->type == REDIS_REPLY_INTEGER && r->integer == 1 ? 1
		: take_values(q, r) == 0 ? 0 : -1;
	free_reply(r);
	return rc;
}

/* wait_replicas - with --redis-wait, that many replicas have the write
 * (WAIT, within the time left); fewer is logged, once, not a fault: the
 * primary has it */
static void wait_replicas(const struct timespec *deadline)
{
	static int said;
	char n[24], ms[24];
	const char *argv[] = { "WAIT", n, ms };
	redisReply *r;

	if (!cfg.redis_wait)
		return;
	snprintf(n, sizeof(n), "%lld", cfg.redis_wait);
	snprintf(ms, sizeof(ms), "%d", ms_left(deadline) > 1
		 ? ms_left(deadline) : 1);
	r = command(deadline, 3, argv, NULL);
	if ((!r || r->type != REDIS_REPLY_INTEGER || r->integer < cfg.redis_wait)
	    && !said++)
		msg_warn("redis: a write reached %lld of the %lld replicas"
			 " --redis-wait asks for", r && r->type
			 == REDIS_REPLY_INTEGER ? r->integer : 0, cfg.redis_wait);
	free_reply(r);
}

/* greylist_once - read, decide, and store what changed; 0 or -1 */
static int greylist_once(const struct triplet *t, struct outcome *o,
			 const struct timespec *deadline)
{
	static struct pair q;
	long long trec[T_FIELDS], crec[C_FIELDS], now;
	int i, rc;

	if (pair_keys(t, &q) != 0 || fetch_pair(&q, deadline) != 0)
		return -1;
	for (i = 0; i < CAS_TRIES; i++) {
		now = (long long)time(NULL);
		decide(triplet_record(value(&q, 0), trec), q.n == 2
		       ? client_record(value(&q, 1), crec) : NULL, now, o);
		if (!o->store_t && !o->store_c)
			return 0;
		if ((rc = cas(&q, o, now, deadline)) < 0)
			return -1;
		if (rc == 1) {
			wait_replicas(deadline);
			return 0;
		}
	}
	return fault("the records of this triplet changed %d times while it"
		     " was decided", CAS_TRIES);
}

/* redis_greylist - decide one triplet against Redis: db_greylist's twin
 * for the Redis store. A fault fails open, logged once per connection;
 * with Sentinels, a dropped connection is made again once, to the
 * primary they name now. */
void redis_greylist(const struct triplet *t, struct outcome *o)
{
	static int said;
	struct timespec deadline = deadline_in(cfg.lock_timeout);
	int tries, rc = -1;

	for (tries = 0; tries < 2 && rc != 0; tries++) {
		rc = connect_store(&deadline);
		if (rc == 0 && (rc = learn_kind(&deadline)) == 0)
			rc = greylist_once(t, o, &deadline);
		if (rc != 0 && (!cfg.redis_sentinel || conn))
			break;
	}
	if (rc == 0)
		return;
	if (!said++)
		msg_warn("redis: %s", why);
	fail_open(o, why);
}

/*
 * For greylistctl, and db.c's records and notes: one key at a time, and
 * a walk of every record.
 */

/* redis_open - the connection and the key kind, within the deadline */
int redis_open(const struct timespec *deadline)
{
	return connect_store(deadline);
}

/* redis_fetch - the record of a GDBM key: 0 with *value (malloc'd; dptr
 * NULL when absent), or -1 */
int redis_fetch(datum key, datum *value, const struct timespec *deadline)
{
	static char k[MAX_RKEY];
	const char *argv[] = { "GET", k };
	size_t len[] = { 3, 0 };
	redisReply *r;

	*value = (datum){ NULL, 0 };
	if (tag_key(key, k, sizeof(k), &len[1]) < 0)
		return fault("a key of no known shape");
	if (!(r = command(deadline, 2, argv, len)))
		return -1;
	if (r->type == REDIS_REPLY_STRING && r->len < INT_MAX
	    && (value->dptr = malloc(r->len ? r->len : 1))) {
		memcpy(value->dptr, r->str, r->len);
		value->dsize = (int)r->len;
	} else if (r->type != REDIS_REPLY_NIL) {
		free_reply(r);
		return fault(r->type == REDIS_REPLY_STRING ? "out of memory"
			     : "Redis: a reply of the wrong shape");
	}
	free_reply(r);
	return 0;
}

/* redis_store - write a record under its GDBM key, with the TTL of its
 * end; one already past its end is deleted instead. 0 or -1. */
int redis_store(datum key, datum value, const struct timespec *deadline)
{
	static char k[MAX_RKEY];
	long long end = record_end(key, value), ttl;
	char ex[24];
	const char *argv[] = { end == LLONG_MAX ? "SET" : "DEL", k,
			       value.dptr, "EX", ex };
	size_t len[] = { 3, 0, (size_t)value.dsize, 2, 0 };
	int argc = 3;
	redisReply *r;

	if (tag_key(key, k, sizeof(k), &len[1]) < 0)
		return fault("a key of no known shape");
	ttl = end == LLONG_MAX ? 0 : end - (long long)time(NULL) + 1;
	if (ttl > 0) {
		argv[0] = "SET";
		len[4] = (size_t)snprintf(ex, sizeof(ex), "%lld", ttl);
		argc = 5;
	} else if (end != LLONG_MAX) {
		argc = 2;		/* DEL: it has outlived its use */
	}
	if (!(r = command(deadline, argc, argv, len)))
		return -1;
	free_reply(r);
	return 0;
}

/* scan_page - the records of one SCAN page's keys (one MGET), to fn;
 * -1 on a fault */
static int scan_page(const redisReply *keys, void (*fn)(datum, datum, void *),
		     void *arg, long long *n, const struct timespec *deadline)
{
	const char **argv = calloc(keys->elements + 1, sizeof(*argv));
	size_t *len = calloc(keys->elements + 1, sizeof(*len)), i, klen;
	redisReply *r = NULL;
	char *k;
	int rc = -1;

	if (argv && len) {
		argv[0] = "MGET";
		len[0] = 4;
		for (i = 0; i < keys->elements; i++) {
			argv[i + 1] = keys->element[i]->str;
			len[i + 1] = keys->element[i]->len;
		}
		r = command(deadline, (int)keys->elements + 1, argv, len);
	} else {
		fault("out of memory");
	}
	if (r && r->type == REDIS_REPLY_ARRAY && r->elements == keys->elements) {
		for (i = 0; i < r->elements; i++) {
			k = untag(keys->element[i]->str, len[i + 1], &klen);
			if (!k || r->element[i]->type != REDIS_REPLY_STRING)
				continue;	/* not ours, or gone since */
			fn((datum){ k, (int)klen },
			   (datum){ r->element[i]->str, (int)r->element[i]->len },
			   arg);
			(*n)++;
		}
		rc = 0;
	} else if (r) {
		fault("Redis: a reply of the wrong shape");
	}
	free_reply(r);
	free(argv);
	free(len);
	return rc;
}

/* redis_walk - call fn on every record of greylistd's in the store,
 * untagged, page by page with SCAN (never KEYS, which blocks the server),
 * each page's commands within "seconds":
 * a record that lives through the walk is seen, one written or deleted
 * meanwhile may or may not be. The count, or -1 on a fault. */
long long redis_walk(void (*fn)(datum, datum, void *), void *arg,
		     long long seconds)
{
	char cursor[32] = "0";
	const char *argv[] = { "SCAN", cursor, "COUNT", SCAN_COUNT };
	struct timespec d, *deadline = &d;
	redisReply *r;
	long long n = 0;
	int rc;

	do {
		d = deadline_in(seconds);	/* for each page */
		if (!(r = command(deadline, 4, argv, NULL)))
			return -1;
		rc = r->type == REDIS_REPLY_ARRAY && r->elements == 2
			&& r->element[0]->type == REDIS_REPLY_STRING
			&& r->element[0]->len < sizeof(cursor)
			&& r->element[1]->type == REDIS_REPLY_ARRAY ? 0
			: fault("Redis: SCAN's reply of the wrong shape");
		if (rc == 0) {
			memcpy(cursor, r->element[0]->str, r->element[0]->len);
			cursor[r->element[0]->len] = 0;
			if (r->element[1]->elements > 0)
				rc = scan_page(r->element[1], fn, arg, &n,
					       deadline);
		}
		free_reply(r);
	} while (rc == 0 && strcmp(cursor, "0") != 0);
	return rc == 0 ? n : -1;
}

/* redis_memory - the server's used_memory (INFO memory), or -1 */
long long redis_memory(const struct timespec *deadline)
{
	const char *argv[] = { "INFO", "memory" };
	redisReply *r = command(deadline, 2, argv, NULL);
	const char *p = r && r->type == REDIS_REPLY_STRING
		? strstr(r->str, "\nused_memory:") : NULL;
	long long v = p ? strtoll(p + 13, NULL, 10) : -1;

	free_reply(r);
	return v;
}

/* redis_where - the store, for messages: "redis:ADDRESS" or
 * "redis-sentinel:LIST/NAME" */
const char *redis_where(void)
{
	static char buf[300];

	snprintf(buf, sizeof(buf), cfg.redis ? "redis:%s" : "redis-sentinel:"
		 "%s/%s", cfg.redis ? cfg.redis : cfg.redis_sentinel,
		 cfg.redis_master ? cfg.redis_master : "");
	return buf;
}
