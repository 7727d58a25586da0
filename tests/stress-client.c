/*
 * stress-client.c - the load and the slow clients of tests/stress.sh.
 *
 * It speaks Postfix's SMTPD access policy protocol over a UNIX socket.
 * bash and socat cannot keep 64 connections busy with a time stamp on
 * every request, hence this program; stress.sh builds it and judges what
 * it records (this program only checks that each answer is well formed).
 *
 * MODES
 *   stress-client load -s SOCK -o OUT [-c CONNS] [-t SECS] [-w POOL]
 *		[-r TURNOVER] [-R RACERS] [-d DELAY]
 *	CONNS connections (threads) for SECS seconds, sending RCPT requests
 *	for triplets of a sliding pool: at time t the pool is the POOL
 *	triplets from floor(t x TURNOVER) on, so new triplets keep entering
 *	and old ones leaving. At every one of the TURNOVER ticks a second,
 *	RACERS of the connections send at once a request for the triplet
 *	entering the pool, and one for the triplet that entered DELAY + 0.5 s
 *	before (see load_thread); each connection also asks for a random
 *	triplet of the pool between its races.
 *   stress-client steady -s SOCK -o OUT [-t SECS] [-p PAUSE_MS] [-d DELAY]
 *	One connection; each step (then a pause of PAUSE_MS) sends a new
 *	triplet (a writer), a retry of each triplet deferred more than
 *	DELAY + 0.3 s ago (a writer: its first pass), and one already passed
 *	(a reader).
 *   stress-client dribble|partial|noread -s SOCK [-t LIMIT]
 *	A slow client: "dribble" sends a request a byte a second; "partial"
 *	sends most of a request at once and never finishes it; "noread"
 *	sends RCPT requests as fast as the server takes them and never
 *	reads an answer. Each waits (at most LIMIT s) until the server ends
 *	the connection and prints one line, times in ms from its connect:
 *	  MODE end=HOW ms=N [last_write_ms=N stuck_ms=N] sent=BYTES
 *	HOW is hup, eof, reset or limit (still open after LIMIT s).
 *   stress-client watch -P PID -f DBFILE -o OUT [-t SECS] [-x PID...]
 *	Every 10 ms for SECS seconds: the children of PID (the socket
 *	activator; -x: children not to watch) and /proc/locks for DBFILE.
 *	Writes one line per child seen:
 *	  pid first_ms last_ms lock_samples longest_lock_ms late_samples
 *	(times from the start of the watch; longest_lock_ms is the longest
 *	run of consecutive samples in which the child held a lock;
 *	late_samples counts those taken more than 1 s after it was first
 *	seen, when a slow client's greylistd has long been only waiting).
 *
 * OUTPUT of load and steady: "# base B" (B: a whole Unix second), then
 * one line per answer:
 *	conn seq idx sent_us recv_us latency_us kind n
 * sent_us: CLOCK_REALTIME_COARSE before sending, recv_us: CLOCK_REALTIME
 * after the answer, both in us from B. time(2), which greylistd uses, is
 * the coarse clock, so the request's "now" lies in
 * [floor(sent), floor(recv)] exactly. latency_us is monotonic. kind:
 * D defer (n: seconds asked), P PREPEND (n: delay in the header),
 * U DUNNO, X malformed, T no answer within 10 s (the connection is
 * dropped). Every request carries queue_id=C<conn>S<seq>, which
 * greylistd logs, so its log lines join the answers.
 *
 * Triplet idx, on the wire and as greylistd keys it (-n A: network A.x,
 * 10 for load, 172 for steady):
 *	client_address	A.(idx>>8&255).(idx&255).(1..254, any)	net A.x.y.0
 *	sender		Alice+<any>@S<idx%13>.Example	alice@s<idx%13>.example
 *	   (odd idx)	Bounce-<any>@S<idx%13>.Example	bounce-#@s<idx%13>.example
 *	recipient	Rcpt@R<idx>.Example		rcpt@r<idx>.example
 *
 * Exit status: 0 when every answer was well formed and in time, 1 when
 * not, 2 on usage or set-up errors.
 */

#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define ANSWER_WAIT_MS	10000	/* longer than this is a hang: 'T' */
#define MAX_CONNS	1024
#define BUF_SIZE	4096

static struct {
	const char *sock, *out, *dbfile;
	int conns, secs, pool, turnover, racers, pause_ms, delay, net;
	pid_t parent;
	pid_t exclude[16];
	int nexclude;
} opt = { NULL, NULL, NULL, 64, 60, 300, 20, 16, 20, 2, 10, 0, { 0 }, 0 };

static long long base_sec;		/* B of the output */

static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("stress-client: ", stderr);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(2);
}

static long long clock_us(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static long long mono_us(void) { return clock_us(CLOCK_MONOTONIC); }

static void sleep_us(long long us)
{
	struct timespec ts = { (time_t)(us / 1000000), (long)(us % 1000000) * 1000 };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* xorshift64*, one state per connection */
static uint32_t rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return (uint32_t)((*s * 2685821657736338717ULL) >> 32);
}

static int connect_unix(const char *path)
{
	struct sockaddr_un sa;
	int fd;

	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sa.sun_path))
		die("socket path too long: %s", path);
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		die("socket: %s", strerror(errno));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* request - a Postfix 3.7-like RCPT request for triplet idx */
static size_t request(char *buf, size_t size, unsigned idx, unsigned any,
		      unsigned conn, unsigned seq)
{
	char sender[96];
	int n;

	if (idx & 1)
		snprintf(sender, sizeof(sender), "Bounce-%u@S%u.Example", any,
			 idx % 13);
	else
		snprintf(sender, sizeof(sender), "Alice+%u@S%u.Example", any,
			 idx % 13);
	n = snprintf(buf, size,
		"request=smtpd_access_policy\nprotocol_state=RCPT\n"
		"protocol_name=ESMTP\nclient_address=%d.%u.%u.%u\n"
		"client_name=mx%u.senders.example\n"
		"reverse_client_name=mx%u.senders.example\n"
		"helo_name=mx%u.senders.example\nsender=%s\n"
		"recipient=Rcpt@R%u.Example\nrecipient_count=0\n"
		"queue_id=C%uS%u\ninstance=%x.%x.%x.0\nsize=0\n"
		"etrn_domain=\nstress=\nsasl_method=\nsasl_username=\n"
		"sasl_sender=\nccert_subject=\nccert_issuer=\n"
		"ccert_fingerprint=\nccert_pubkey_fingerprint=\n"
		"encryption_protocol=TLSv1.3\n"
		"encryption_cipher=TLS_AES_256_GCM_SHA384\n"
		"encryption_keysize=256\nclient_port=%u\npolicy_context=\n"
		"server_address=192.0.2.1\nserver_port=25\n"
		"compatibility_level=3.6\nmail_version=3.7.11\n\n",
		opt.net, (idx >> 8) & 255, idx & 255, 1 + any % 254, idx, idx,
		idx, sender, idx, conn, seq, conn, seq, any, 1024 + any % 60000);
	if (n < 0 || (size_t)n >= size)
		die("request too long");
	return (size_t)n;
}

static int send_all(int fd, const char *p, size_t len)
{
	while (len > 0) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

struct rec {
	unsigned conn, seq, idx;
	long long sent, recv, lat;
	char kind;
	int n;
};

struct conn {
	unsigned id;
	int fd;
	uint64_t rng;
	char buf[BUF_SIZE];
	size_t have;
	struct rec *recs;
	size_t nrecs, cap;
	int malformed, hung, ioerr;
};

/* classify - the kind of one answer's action text; n its number */
static char classify(const char *t, int *n)
{
	const char *defer = "DEFER_IF_PERMIT Greylisted, please try again in ";
	const char *prepend = "PREPEND X-Greylist: delayed ";
	char tail[64];
	int len;

	*n = 0;
	if (strcmp(t, "DUNNO") == 0)
		return 'U';
	if (strncmp(t, defer, strlen(defer)) == 0
	    && sscanf(t + strlen(defer), "%d seconds%n", n, &len) == 1
	    && t[strlen(defer) + (size_t)len] == 0)
		return *n >= 1 && *n <= opt.delay ? 'D' : 'X';
	if (strncmp(t, prepend, strlen(prepend)) == 0
	    && sscanf(t + strlen(prepend), "%d seconds by greylistd-%63s", n,
		      tail) == 2
	    && strstr(t, " at ") && strstr(t, "; "))
		return *n >= opt.delay ? 'P' : 'X';
	return 'X';
}

static void complain(const struct conn *c, const char *what, const char *p,
		     size_t len)
{
	size_t i;

	flockfile(stderr);
	fprintf(stderr, "stress-client: connection %u: %s: \"", c->id, what);
	for (i = 0; i < len && i < 300; i++)
		fprintf(stderr, (unsigned char)p[i] < ' ' || p[i] == '"'
			|| (unsigned char)p[i] > '~' ? "\\x%02x" : "%c",
			(unsigned char)p[i]);
	fprintf(stderr, "\"\n");
	funlockfile(stderr);
}

/* answer - read one answer: "action=TEXT\n\n" and nothing more. 'T' when
 * none came in time, 'E' when the connection failed. */
static char answer(struct conn *c, int *n)
{
	long long deadline = mono_us() + ANSWER_WAIT_MS * 1000LL;
	char *end, *nl;
	char kind;

	for (;;) {
		end = c->have >= 2 ? memmem(c->buf, c->have, "\n\n", 2) : NULL;
		if (end)
			break;
		if (c->have == sizeof(c->buf)) {
			complain(c, "answer too long", c->buf, c->have);
			return 'E';
		}
		struct pollfd p = { c->fd, POLLIN, 0 };
		long long left = (deadline - mono_us()) / 1000;

		if (left <= 0 || poll(&p, 1, (int)left) == 0) {
			complain(c, "no answer within 10 s; got so far", c->buf,
				 c->have);
			return 'T';
		}
		ssize_t r = recv(c->fd, c->buf + c->have,
				 sizeof(c->buf) - c->have, MSG_DONTWAIT);
		if (r > 0)
			c->have += (size_t)r;
		else if (r == 0 || (errno != EINTR && errno != EAGAIN)) {
			complain(c, r == 0 ? "connection closed; got so far"
				 : strerror(errno), c->buf, c->have);
			return 'E';
		}
	}
	*end = 0;
	nl = memchr(c->buf, '\n', (size_t)(end - c->buf));
	if (strncmp(c->buf, "action=", 7) != 0 || nl) {
		*end = '\n';
		complain(c, "malformed answer", c->buf, (size_t)(end - c->buf) + 2);
		kind = 'X';
	} else {
		kind = classify(c->buf + 7, n);
		if (kind == 'X')
			complain(c, "unexpected action", c->buf,
				 (size_t)(end - c->buf));
	}
	end += 2;
	if (end != c->buf + c->have) {	/* bytes nobody asked for */
		complain(c, "bytes after the answer", end,
			 (size_t)(c->buf + c->have - end));
		kind = 'X';
	}
	c->have = 0;
	return kind;
}

static void add_rec(struct conn *c, const struct rec *r)
{
	if (c->nrecs == c->cap) {
		c->cap = c->cap ? c->cap * 2 : 1024;
		c->recs = realloc(c->recs, c->cap * sizeof(*c->recs));
		if (!c->recs)
			die("out of memory");
	}
	c->recs[c->nrecs++] = *r;
}

/* ask - one request for triplet idx and its answer, recorded; -1 when the
 * connection is unusable */
static int ask(struct conn *c, unsigned idx)
{
	char req[BUF_SIZE];
	struct rec r = { c->id, (unsigned)c->nrecs, idx, 0, 0, 0, 0, 0 };
	size_t len = request(req, sizeof(req), idx, rnd(&c->rng), c->id, r.seq);
	long long t0;

	r.sent = clock_us(CLOCK_REALTIME_COARSE) - base_sec * 1000000;
	t0 = mono_us();
	if (send_all(c->fd, req, len) != 0) {
		complain(c, strerror(errno), "", 0);
		c->ioerr++;
		return -1;
	}
	r.kind = answer(c, &r.n);
	r.lat = mono_us() - t0;
	r.recv = clock_us(CLOCK_REALTIME) - base_sec * 1000000;
	if (r.kind == 'E') {
		c->ioerr++;
		return -1;
	}
	add_rec(c, &r);
	if (r.kind == 'X')
		c->malformed++;
	if (r.kind == 'T') {
		c->hung++;
		return -1;
	}
	return 0;
}

/* finish - end the connection as Postfix does, and check that the
 * server sends nothing more and closes */
static void finish(struct conn *c)
{
	char extra[256];
	ssize_t n;

	shutdown(c->fd, SHUT_WR);
	for (;;) {
		struct pollfd p = { c->fd, POLLIN, 0 };

		if (poll(&p, 1, ANSWER_WAIT_MS) <= 0) {
			complain(c, "no end of connection after EOF", "", 0);
			c->hung++;
			break;
		}
		n = recv(c->fd, extra, sizeof(extra), 0);
		if (n == 0)
			break;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			complain(c, strerror(errno), "", 0);
			c->ioerr++;
			break;
		}
		complain(c, "bytes after the last answer", extra, (size_t)n);
		c->malformed++;
	}
	close(c->fd);
}

static struct conn *conns;
static pthread_barrier_t barrier;
static long long start_mono, stop_mono;

/* sleep_until - sleep until the monotonic time t (us) */
static void sleep_until(long long t)
{
	long long now = mono_us();

	if (t > now)
		sleep_us(t - now);
}

/* The load. Time is cut in ticks of 1/TURNOVER s; at tick k, triplet
 * k + POOL - 1 enters the pool and triplet k - 1 leaves it. Connection
 * c races at the ticks k = c, c + STRIDE, c + 2 x STRIDE, ... with
 * STRIDE = CONNS / RACERS, so that RACERS connections race at every tick.
 * Racing at tick k, it sends at once, as the others do (racer r of the
 * tick r x 50 us after it; see run_load):
 *	- the triplet entering at k: RACERS processes see it first together;
 *	- the one that entered DELAY + 0.5 s ago (raced for then, deferred
 *	  since): RACERS processes find it due for its first pass together;
 * and between two races, at a random moment, a request for any triplet
 * of the pool (an early retry or a pass, mostly). */
static void *load_thread(void *arg)
{
	struct conn *c = arg;
	long long period = 1000000 / opt.turnover, tick_at, now;
	unsigned stride = (unsigned)(opt.conns / opt.racers);
	unsigned back = (unsigned)(opt.delay * opt.turnover + opt.turnover / 2);
	unsigned k = c->id % stride, lo, top;

	pthread_barrier_wait(&barrier);
	for (;; k += stride) {
		tick_at = start_mono + (long long)k * period;
		if (tick_at >= stop_mono)
			break;
		/* any triplet, at a random moment before the race */
		now = mono_us();
		if (tick_at - now > 2000) {
			sleep_until(now + rnd(&c->rng) % (tick_at - now - 1000));
			now = mono_us();
			lo = (unsigned)((now - start_mono) / period);
			if (ask(c, lo + rnd(&c->rng) % (unsigned)opt.pool) != 0)
				return NULL;
		}
		sleep_until(tick_at + (long long)(c->id / stride) * 50);
		top = k + (unsigned)opt.pool - 1;
		if (ask(c, top) != 0
		    || (k >= back && ask(c, top - back) != 0))
			return NULL;
	}
	finish(c);
	return NULL;
}

static int cmp_ll(const void *a, const void *b)
{
	long long x = *(const long long *)a, y = *(const long long *)b;

	return x < y ? -1 : x > y;
}

/* report - write the records, print the summary; the exit status */
static int report(const char *mode, int nconns, long long secs_us)
{
	FILE *f = fopen(opt.out, "w");
	size_t total = 0, k = 0, i;
	int bad = 0, hung = 0, ioerr = 0, c;
	long long *lat;

	if (!f)
		die("%s: %s", opt.out, strerror(errno));
	fprintf(f, "# base %lld\n", base_sec);
	for (c = 0; c < nconns; c++) {
		total += conns[c].nrecs;
		bad += conns[c].malformed;
		hung += conns[c].hung;
		ioerr += conns[c].ioerr;
		for (i = 0; i < conns[c].nrecs; i++) {
			const struct rec *r = &conns[c].recs[i];

			fprintf(f, "%u %u %u %lld %lld %lld %c %d\n", r->conn,
				r->seq, r->idx, r->sent, r->recv, r->lat,
				r->kind, r->n);
		}
	}
	if (fclose(f) != 0)
		die("%s: %s", opt.out, strerror(errno));
	lat = calloc(total + 1, sizeof(*lat));
	if (!lat)
		die("out of memory");
	for (c = 0; c < nconns; c++)
		for (i = 0; i < conns[c].nrecs; i++)
			lat[k++] = conns[c].recs[i].lat;
	qsort(lat, total, sizeof(*lat), cmp_ll);
	printf("%s conns=%d requests=%zu secs=%.1f rps=%.0f p50_ms=%.2f"
	       " p99_ms=%.2f max_ms=%.2f malformed=%d hung=%d ioerr=%d\n",
	       mode, nconns, total, secs_us / 1e6,
	       total / (secs_us / 1e6), total ? lat[total / 2] / 1e3 : 0,
	       total ? lat[total * 99 / 100] / 1e3 : 0,
	       total ? lat[total - 1] / 1e3 : 0, bad, hung, ioerr);
	free(lat);
	return bad || hung || ioerr ? 1 : 0;
}

/* time_lag - how long after a second of the real-time clock begins
 * time(2) turns to it, in us: time(2) reads the coarse clock, which moves
 * on at the next timer tick (up to 1/HZ later); 0 if not seen */
static long long time_lag(void)
{
	long long r = clock_us(CLOCK_REALTIME), f, sec;

	sleep_us(1000000 - r % 1000000 + 1000000 - 3000);  /* 3 ms before */
	sec = clock_us(CLOCK_REALTIME_COARSE) / 1000000;
	do {
		f = clock_us(CLOCK_REALTIME);
		if (time(NULL) != sec)
			return f / 1000000 > sec ? f % 1000000 : 0;
	} while (f % 1000000 > 900000 || f % 1000000 < 50000);
	return 0;
}

static int run_load(void)
{
	long long now_real, now_mono, period, lag;
	pthread_t *th;
	int i;

	if (opt.conns < 1 || opt.conns > MAX_CONNS || opt.turnover < 1
	    || opt.turnover > 1000 || opt.racers < 1 || opt.racers > opt.conns
	    || opt.pool <= opt.delay * opt.turnover + opt.turnover / 2)
		die("bad -c, -w, -r or -R");
	conns = calloc((size_t)opt.conns, sizeof(*conns));
	th = calloc((size_t)opt.conns, sizeof(*th));
	if (!conns || !th)
		die("out of memory");
	pthread_barrier_init(&barrier, NULL, (unsigned)opt.conns + 1);
	for (i = 0; i < opt.conns; i++) {
		conns[i].id = (unsigned)i;
		conns[i].rng = 0x9e3779b97f4a7c15ULL * (uint64_t)(i + 1)
			^ (uint64_t)getpid();
		conns[i].fd = connect_unix(opt.sock);
		if (conns[i].fd < 0)
			die("connection %d: connect %s: %s", i, opt.sock,
			    strerror(errno));
	}
	for (i = 0; i < opt.conns; i++)
		if (pthread_create(&th[i], NULL, load_thread, &conns[i]) != 0)
			die("pthread_create failed");
	/* Every TURNOVER-th tick falls 0.4 ms before time(2) turns to the
	 * next second, and the racers of a tick send 50 us apart: some of
	 * them decide with the earlier second and some with the later one,
	 * in whatever order they get the lock. */
	lag = time_lag();
	now_real = clock_us(CLOCK_REALTIME);
	now_mono = mono_us();
	base_sec = now_real / 1000000 - 1;
	period = 1000000 / opt.turnover;
	start_mono = now_mono + period
		+ ((1000000 + lag - 400 - now_real % 1000000) % period + period)
		% period;
	stop_mono = start_mono + opt.secs * 1000000LL;
	pthread_barrier_wait(&barrier);
	for (i = 0; i < opt.conns; i++)
		pthread_join(th[i], NULL);
	free(th);
	return report("load", opt.conns, mono_us() - start_mono);
}

static int run_steady(void)
{
	unsigned next = 0, retry = 0, passed = 0;
	long long end, *first = NULL;
	size_t cap = 0;
	struct conn *c;

	conns = calloc(1, sizeof(*conns));
	if (!conns)
		die("out of memory");
	c = &conns[0];
	c->rng = 0x2545f4914f6cdd1dULL ^ (uint64_t)getpid();
	c->fd = connect_unix(opt.sock);
	if (c->fd < 0)
		die("connect %s: %s", opt.sock, strerror(errno));
	base_sec = clock_us(CLOCK_REALTIME) / 1000000 - 1;
	start_mono = mono_us();
	end = start_mono + opt.secs * 1000000LL;
	while (mono_us() < end) {
		/* a new triplet: a writer */
		if (next == cap) {
			cap = cap ? cap * 2 : 1024;
			first = realloc(first, cap * sizeof(*first));
			if (!first)
				die("out of memory");
		}
		if (ask(c, next) != 0)
			goto out;
		first[next++] = c->recs[c->nrecs - 1].recv;
		/* the oldest ones deferred long enough: first passes */
		while (retry < next && clock_us(CLOCK_REALTIME)
		       - base_sec * 1000000 - first[retry]
		       >= (opt.delay * 1000LL + 300) * 1000) {
			if (ask(c, retry++) != 0)
				goto out;
			passed = retry;
		}
		/* one that passed: a reader */
		if (passed > 0 && ask(c, rnd(&c->rng) % passed) != 0)
			goto out;
		sleep_us(opt.pause_ms * 1000LL);
	}
	finish(c);
out:
	free(first);
	return report("steady", 1, mono_us() - start_mono);
}

/* A slow client. The times are ms from its connect. */
static int run_slow(const char *mode)
{
	char req[BUF_SIZE];
	long long t0, last_write = -1, limit_at, now;
	size_t len, off = 0, sent = 0;
	const char *how = "limit";
	unsigned seq = 0;
	int fd, bad = 0;
	struct conn dummy = { 0 };

	fd = connect_unix(opt.sock);
	if (fd < 0)
		die("connect %s: %s", opt.sock, strerror(errno));
	t0 = mono_us();
	limit_at = t0 + opt.secs * 1000000LL;
	dummy.id = 9999;
	len = request(req, sizeof(req), 7, 1, dummy.id, seq);
	if (strcmp(mode, "partial") == 0)
		len = len * 2 / 3;	/* most of it, never the end */
	if (strcmp(mode, "noread") == 0)
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	while ((now = mono_us()) < limit_at) {
		struct pollfd p = { fd, POLLIN, 0 };
		int wait_ms = 1000;

		if (strcmp(mode, "noread") == 0) {
			ssize_t n;

			while ((n = send(fd, req + off, len - off,
					 MSG_NOSIGNAL | MSG_DONTWAIT)) > 0) {
				last_write = mono_us();
				sent += (size_t)n;
				off += (size_t)n;
				if (off == len) {
					/* the next request: a new triplet,
					 * then its early retry; each a
					 * database access, half of them
					 * writers */
					seq++;
					len = request(req, sizeof(req),
						      (seq / 2) % 2000, seq,
						      dummy.id, seq);
					off = 0;
				}
			}
			if (n < 0 && errno != EAGAIN && errno != EINTR) {
				how = errno == EPIPE ? "hup" : "reset";
				break;
			}
			p.events = POLLOUT;	/* never POLLIN: never read */
			wait_ms = 50;
		} else if (off < len && (off == 0
			   || strcmp(mode, "dribble") == 0)) {
			size_t n = strcmp(mode, "dribble") == 0 ? 1 : len;

			if (send_all(fd, req + off, n) != 0) {
				how = errno == EPIPE ? "hup" : "reset";
				break;
			}
			last_write = mono_us();
			off += n;
			sent += n;
			if (strcmp(mode, "partial") == 0)
				len = off;	/* nothing more, ever */
		}
		if (poll(&p, 1, wait_ms) < 0 && errno != EINTR)
			die("poll: %s", strerror(errno));
		if (p.revents & POLLIN) {	/* only the end can come */
			char b[256];
			ssize_t n = recv(fd, b, sizeof(b), 0);

			if (n <= 0) {
				how = n == 0 ? "eof" : "reset";
				break;
			}
			fprintf(stderr, "stress-client: %s: unexpected answer"
				" to an unfinished request\n", mode);
			bad = 1;
		}
		if (p.revents & (POLLHUP | POLLERR)) {
			how = p.revents & POLLHUP ? "hup" : "reset";
			break;
		}
	}
	now = mono_us();
	printf("%s end=%s ms=%lld", mode, how, (now - t0) / 1000);
	if (strcmp(mode, "noread") == 0)
		printf(" last_write_ms=%lld stuck_ms=%lld requests=%u",
		       (last_write - t0) / 1000, (now - last_write) / 1000, seq);
	printf(" sent=%zu\n", sent);
	close(fd);
	return strcmp(how, "limit") == 0 || bad;
}

/* lock_pids - the PIDs holding a flock on the file st, from /proc/locks */
static int lock_pids(const struct stat *st, pid_t *pids, int max)
{
	FILE *f = fopen("/proc/locks", "r");
	char line[256];
	int n = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f) && n < max) {
		char kind[16];
		unsigned maj, min;
		unsigned long ino;
		long pid;

		/* "1: FLOCK  ADVISORY  WRITE 123 fe:00:456 0 EOF"; a waiter
		 * is shown as "1: -> FLOCK ..." and does not hold it */
		if (strstr(line, "->")
		    || sscanf(line, "%*s %15s %*s %*s %ld %x:%x:%lu", kind, &pid,
			      &maj, &min, &ino) != 5
		    || strcmp(kind, "FLOCK") != 0)
			continue;
		if (ino == (unsigned long)st->st_ino && maj == major(st->st_dev)
		    && min == minor(st->st_dev))
			pids[n++] = (pid_t)pid;
	}
	fclose(f);
	return n;
}

struct watched {
	pid_t pid;
	long long first, last, run_start, longest;
	int samples, late, holding;
};

static int run_watch(void)
{
	static struct watched w[4096];
	char path[64], line[8192];
	int nw = 0, i, j;
	long long t0 = mono_us(), now;
	struct stat st;
	FILE *f;

	if (!opt.parent || !opt.dbfile || !opt.out)
		die("watch needs -P, -f and -o");
	snprintf(path, sizeof(path), "/proc/%d/task/%d/children",
		 (int)opt.parent, (int)opt.parent);
	while ((now = mono_us()) < t0 + opt.secs * 1000000LL) {
		pid_t held[256];
		int nheld = 0;
		char *p, *q;

		if (stat(opt.dbfile, &st) == 0)
			nheld = lock_pids(&st, held, 256);
		f = fopen(path, "r");
		if (!f)
			break;		/* the activator is gone */
		if (!fgets(line, sizeof(line), f))
			line[0] = 0;
		fclose(f);
		for (p = line;; p = q) {
			long pid = strtol(p, &q, 10);

			if (q == p)
				break;
			for (j = 0; j < opt.nexclude; j++)
				if (opt.exclude[j] == pid)
					break;
			if (j < opt.nexclude)
				continue;
			for (i = 0; i < nw && w[i].pid != pid; i++)
				;
			if (i == nw) {
				if (nw == (int)(sizeof(w) / sizeof(w[0])))
					continue;
				memset(&w[nw], 0, sizeof(w[0]));
				w[nw].pid = (pid_t)pid;
				w[nw].first = now;
				nw++;
			}
			w[i].last = now;
		}
		for (i = 0; i < nw; i++) {
			int h = 0;

			if (w[i].last != now) {	/* gone */
				w[i].holding = 0;
				continue;
			}
			for (j = 0; j < nheld; j++)
				h |= held[j] == w[i].pid;
			if (h) {
				w[i].samples++;
				w[i].late += now - w[i].first > 1000000;
				if (!w[i].holding)
					w[i].run_start = now;
				if (now - w[i].run_start > w[i].longest)
					w[i].longest = now - w[i].run_start;
			}
			w[i].holding = h;
		}
		sleep_us(10000);
	}
	f = fopen(opt.out, "w");
	if (!f)
		die("%s: %s", opt.out, strerror(errno));
	for (i = 0; i < nw; i++)
		fprintf(f, "%d %lld %lld %d %lld %d\n", (int)w[i].pid,
			(w[i].first - t0) / 1000, (w[i].last - t0) / 1000,
			w[i].samples, w[i].longest / 1000, w[i].late);
	return fclose(f) != 0 ? 2 : 0;
}

int main(int argc, char **argv)
{
	const char *mode;
	int c;

	if (argc < 2)
		die("usage: stress-client load|steady|dribble|partial|noread|watch"
		    " [options]; see the comment at the top of the source");
	mode = argv[1];
	argv++;
	argc--;
	opt.secs = strcmp(mode, "load") == 0 ? 60 : 15;
	while ((c = getopt(argc, argv, "s:o:c:t:w:r:R:p:d:n:P:f:x:")) != -1) {
		switch (c) {
		case 's': opt.sock = optarg; break;
		case 'o': opt.out = optarg; break;
		case 'c': opt.conns = atoi(optarg); break;
		case 't': opt.secs = atoi(optarg); break;
		case 'w': opt.pool = atoi(optarg); break;
		case 'r': opt.turnover = atoi(optarg); break;
		case 'p': opt.pause_ms = atoi(optarg); break;
		case 'R': opt.racers = atoi(optarg); break;
		case 'd': opt.delay = atoi(optarg); break;
		case 'n': opt.net = atoi(optarg); break;
		case 'P': opt.parent = (pid_t)atol(optarg); break;
		case 'f': opt.dbfile = optarg; break;
		case 'x':
			if (opt.nexclude < 16)
				opt.exclude[opt.nexclude++] = (pid_t)atol(optarg);
			break;
		default: die("bad option");
		}
	}
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (strcmp(mode, "watch") == 0)
		return run_watch();
	if (!opt.sock)
		die("-s SOCK is needed");
	if (strcmp(mode, "load") == 0 || strcmp(mode, "steady") == 0) {
		if (!opt.out)
			die("-o OUT is needed");
		return strcmp(mode, "load") == 0 ? run_load() : run_steady();
	}
	if (strcmp(mode, "dribble") == 0 || strcmp(mode, "partial") == 0
	    || strcmp(mode, "noread") == 0)
		return run_slow(mode);
	die("unknown mode %s", mode);
	return 2;
}
