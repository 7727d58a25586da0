/*
 * client.c - the bench's load generator, for greylistd and postgrey alike.
 *
 * It speaks Postfix's SMTPD access policy protocol over a UNIX socket,
 * sending every attribute Postfix 3.7 sends, and checks every answer
 * against what the triplet class calls for (see triplet.h):
 *
 *	known	the triplet passed long ago	action=DUNNO
 *	early	deferred inside --delay		defer, fewer seconds than DELAY
 *	new	never seen			defer, exactly DELAY seconds
 *
 * (both servers run with --greylist-text "...try again in %s seconds").
 *
 * MODES
 *   client -s SOCK [-c CLIENTS] [-t SECS] [-n MAX] [-f] -m MIX ...
 *	CLIENTS threads, each with its own connection (or, with -f, a fresh
 *	connection for every request), for SECS seconds or MAX requests per
 *	thread. MIX: "known", "new", "early" or e.g. "new:20,early:20,
 *	known:60" (percentages). -k/-p: how many known/pending triplets
 *	were prefilled; -r: a run id that makes new triplets unique across
 *	runs; -d: the servers' --delay; -o FILE: append every latency (ns,
 *	uint32) to FILE. Prints one line:
 *	  n=N secs=S rps=R p50_us=X p99_us=Y wrong=W errors=E
 *   client -R FILE...		percentiles of the latencies in the files
 *   client -s SOCK -W SECS	wait until SOCK answers a request; prints
 *				the CLOCK_REALTIME of the answer (ns)
 *   client -x N [-o FILE] -- CMD ARGS...
 *	start CMD N times with a socketpair as its stdin and stdout (as
 *	spawn(8) and inetd do), send one known-triplet request, and time
 *	exec to first answer; then close and reap it.
 *
 * With -M every mode speaks the milter protocol (greylistd --milter) in
 * place of the policy protocol: a "request" is a whole milter session on
 * a connection of its own, as Sendmail and Postfix open one per SMTP
 * session: OPTNEG, CONNECT (with the {client_name} macros), MAIL, one
 * RCPT, then EOB when the RCPT was accepted (ABORT when it got 451, as the
 * MTAs do), each packet waiting for its answer, and QUIT. Its latency runs
 * from connect(2) to the last answer. known: CONTINUE at RCPT and EOB;
 * new and early: 451 4.7.1 at RCPT, with the seconds as above. -x -M
 * times exec to the answer to OPTNEG.
 *
 * Exit status: 0 when every answer was right, 1 otherwise, 2 on usage.
 */

#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "triplet.h"

extern char **environ;

enum cls { C_KNOWN, C_EARLY, C_NEW, C_COUNT };
static const char *const cls_name[C_COUNT] = { "known", "early", "new" };

static struct {
	const char *sock;
	int clients;
	double secs;
	long max;
	int fresh;
	int pct[C_COUNT];		/* percentages */
	unsigned long known, pending;
	unsigned long runid;
	long delay;
	const char *latfile;
	int milter;			/* -M */
} opt = {
	.clients = 1, .secs = 3, .max = 0, .known = 1000, .pending = 0,
	.delay = 3600,
};

static uint64_t now_ns(clockid_t clk)
{
	struct timespec ts;

	clock_gettime(clk, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* xorshift64* */
static uint64_t rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ull;
}

struct worker {
	int idx;
	pthread_t th;
	uint64_t rng;
	unsigned long seq;
	uint32_t *lat;
	size_t n, cap;
	long wrong, errors;
	long by_cls[C_COUNT];
	uint64_t end;
	char req[4096];
	char ans[4096];
};

static uint64_t start_ns, deadline_ns;
static pthread_barrier_t barrier;
static pthread_mutex_t report_lock = PTHREAD_MUTEX_INITIALIZER;
static int reports;			/* problems printed so far */

__attribute__((format(printf, 1, 2)))
static void problem(const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&report_lock);
	if (reports++ < 8) {
		va_start(ap, fmt);
		fputs("client: ", stderr);
		vfprintf(stderr, fmt, ap);
		fputc('\n', stderr);
		va_end(ap);
	}
	pthread_mutex_unlock(&report_lock);
}

/* One request's triplet and the values around it. */
struct trip {
	char addr[32], sender[160], rcpt[96], name[64];
	uint64_t r;
};

/* pick_triplet - the triplet of a request of class c */
static void pick_triplet(struct worker *w, enum cls c, struct trip *t)
{
	unsigned long i;
	uint64_t r = rnd(&w->rng);

	if (c == C_NEW) {
		/* a triplet no run has used: run id, thread, sequence */
		i = (unsigned long)(r >> 40);
		triplet_addr(t->addr, sizeof(t->addr), i);
		snprintf(t->sender, sizeof(t->sender),
			 "n%lux%dx%lu.Bounce-%u@list%lu.example.org",
			 opt.runid, w->idx, w->seq, (unsigned)(r % 100000),
			 w->seq % 1000);
		w->seq++;
	} else {
		char k = c == C_KNOWN ? 'k' : 'p';
		unsigned long range = c == C_KNOWN ? opt.known : opt.pending;

		i = (unsigned long)((r >> 16) % range);
		triplet_addr(t->addr, sizeof(t->addr), i);
		triplet_sender(t->sender, sizeof(t->sender), k, i,
			       (unsigned)(r % 100000));
	}
	triplet_rcpt(t->rcpt, sizeof(t->rcpt), i);
	snprintf(t->name, sizeof(t->name), "mx%lu.senders.example.com", i % 1000);
	t->r = r;
}

/* build - one RCPT request as Postfix 3.7 sends it; returns its length */
static size_t build(struct worker *w, enum cls c, char *buf, size_t size)
{
	struct trip t;
	uint64_t r;
	int n;

	pick_triplet(w, c, &t);
	r = t.r;
	n = snprintf(buf, size,
		"request=smtpd_access_policy\n"
		"protocol_state=RCPT\n"
		"protocol_name=ESMTP\n"
		"helo_name=%s\n"
		"queue_id=\n"
		"sender=%s\n"
		"recipient=%s\n"
		"recipient_count=0\n"
		"client_address=%s\n"
		"client_name=%s\n"
		"reverse_client_name=%s\n"
		"instance=%llx.%x.%lx.0\n"
		"sasl_method=\n"
		"sasl_username=\n"
		"sasl_sender=\n"
		"size=%u\n"
		"ccert_subject=\n"
		"ccert_issuer=\n"
		"ccert_fingerprint=\n"
		"ccert_pubkey_fingerprint=\n"
		"encryption_protocol=TLSv1.3\n"
		"encryption_cipher=TLS_AES_256_GCM_SHA384\n"
		"encryption_keysize=256\n"
		"etrn_domain=\n"
		"stress=\n"
		"client_port=%u\n"
		"policy_context=\n"
		"server_address=192.0.2.25\n"
		"server_port=25\n"
		"compatibility_level=3.6\n"
		"mail_version=3.7.11\n"
		"\n",
		t.name, t.sender, t.rcpt, t.addr, t.name, t.name,
		(unsigned long long)(r & 0xfffff), w->idx, w->seq,
		(unsigned)(r >> 20) % 10000000, 1024 + (unsigned)(r >> 44) % 60000);
	return n > 0 && (size_t)n < size ? (size_t)n : 0;
}

/* check - the answer fits the class; 0 right, -1 wrong */
static int check(enum cls c, const char *ans)
{
	const char *p;
	long secs;

	if (strncmp(ans, "action=", 7) != 0)
		return -1;
	ans += 7;
	if (c == C_KNOWN)
		return strncmp(ans, "DUNNO\n", 6) == 0 ? 0 : -1;
	if (strncmp(ans, "DEFER_IF_PERMIT ", 16) != 0)
		return -1;
	p = strstr(ans, "try again in ");
	if (!p)
		return -1;
	secs = strtol(p + 13, NULL, 10);
	if (c == C_NEW)
		return secs == opt.delay ? 0 : -1;
	return secs > 0 && secs < opt.delay ? 0 : -1;
}

static int connect_to(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { 10, 0 };
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -1;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		int e = errno;

		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

static int write_all(int fd, const char *p, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* read_answer - read up to the empty line that ends an answer; 0 ok */
static int read_answer(int fd, char *buf, size_t size)
{
	size_t got = 0;

	for (;;) {
		ssize_t n = read(fd, buf + got, size - 1 - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n == 0 ? -2 : -1;
		got += (size_t)n;
		buf[got] = 0;
		if (got >= 2 && buf[got - 1] == '\n' && buf[got - 2] == '\n')
			return 0;
		if (got >= size - 1)
			return -1;
	}
}

/* exchange - one request and its answer on fd; 0 ok */
static int exchange(int fd, const char *req, size_t len, char *ans,
		    size_t size)
{
	int rc;

	if (write_all(fd, req, len) != 0)
		return -1;
	rc = read_answer(fd, ans, size);
	return rc;
}

/* --- the milter protocol (-M) --- */

/* read_full - exactly len bytes; 0 ok, -2 EOF, -1 error */
static int read_full(int fd, char *p, size_t len)
{
	while (len > 0) {
		ssize_t n = read(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n == 0 ? -2 : -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* m_send - one packet: length, command, data */
static int m_send(int fd, char cmd, const char *data, size_t len)
{
	char buf[1024];
	uint32_t n = (uint32_t)len + 1;

	if (len + 5 > sizeof(buf))
		return -1;
	buf[0] = (char)(n >> 24);
	buf[1] = (char)(n >> 16);
	buf[2] = (char)(n >> 8);
	buf[3] = (char)n;
	buf[4] = cmd;
	memcpy(buf + 5, data, len);
	return write_all(fd, buf, len + 5);
}

/* m_reply - one answer packet: its command, data NUL-terminated in ans;
 * 0 ok, -2 EOF, -1 error */
static int m_reply(int fd, char *cmd, char *ans, size_t size)
{
	unsigned char h[5];
	uint32_t n;
	int rc = read_full(fd, (char *)h, 5);

	if (rc != 0)
		return rc;
	n = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
	if (n < 1 || n > size) {
		errno = EPROTO;
		return -1;
	}
	*cmd = (char)h[4];
	rc = read_full(fd, ans, n - 1);
	ans[n - 1] = 0;
	return rc;
}

/* m_ask - send a packet, read its answer, which must be "want" */
static int m_ask(int fd, char cmd, const char *data, size_t len, char want,
		 char *ans, size_t size, char *got)
{
	int rc;

	if (m_send(fd, cmd, data, len) != 0)
		return -1;
	rc = m_reply(fd, got, ans, size);
	return rc != 0 ? rc : *got == want ? 0 : 1;
}

/* m_str - "a\0b\0..." from NUL-separated parts; its length */
static size_t m_str(char *buf, size_t size, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, size, fmt, ap);
	va_end(ap);
	return n > 0 && (size_t)n < size ? (size_t)n + 1 : 0;
}

/* m_optneg - OPTNEG as both MTAs offer it: version 6, every action and
 * stage; 0 when answered with an OPTNEG */
static int m_optneg(int fd, char *ans, size_t size)
{
	static const char offer[12] = { 0, 0, 0, 6, 0, 0, 1, (char)0xff,
					0, 0x1f, (char)0xff, (char)0xff };
	char got;

	return m_ask(fd, 'O', offer, sizeof(offer), 'O', ans, size, &got);
}

/* m_session - one milter session for a triplet of class c on fd, up to
 * its last answer (QUIT is sent after it); 0 ok, -2/-1 failed (errno),
 * 1 a wrong answer (left in ans) */
static int m_session(struct worker *w, enum cls c, int fd, char *ans,
		     size_t size)
{
	struct trip t;
	char d[512], got;
	size_t n;
	int rc;

	pick_triplet(w, c, &t);
	if ((rc = m_optneg(fd, ans, size)) != 0)
		return rc;
	n = m_str(d, sizeof(d), "C%s%c%s%c%s%c%s", "{client_name}", 0, t.name,
		  0, "{client_resolve}", 0, "OK");
	if (m_send(fd, 'D', d, n) != 0)
		return -1;
	n = m_str(d, sizeof(d), "%s%c4%c%c%s", t.name, 0, 0x00, 0x19, t.addr);
	if ((rc = m_ask(fd, 'C', d, n, 'c', ans, size, &got)) != 0)
		return rc;
	n = m_str(d, sizeof(d), "<%s>", t.sender);
	if ((rc = m_ask(fd, 'M', d, n, 'c', ans, size, &got)) != 0)
		return rc;
	n = m_str(d, sizeof(d), "<%s>", t.rcpt);
	rc = m_ask(fd, 'R', d, n, c == C_KNOWN ? 'c' : 'y', ans, size, &got);
	if (rc != 0)
		return rc;
	if (c == C_KNOWN)
		rc = m_ask(fd, 'E', NULL, 0, 'c', ans, size, &got);
	else
		rc = m_send(fd, 'A', NULL, 0);
	if (rc == 0)
		(void)m_send(fd, 'Q', NULL, 0);
	return rc;
}

/* m_check - a deferral's text says the right seconds; 0 right */
static int m_check(enum cls c, const char *ans)
{
	const char *p = strstr(ans, "try again in ");
	long secs;

	if (c == C_KNOWN)
		return 0;
	if (strncmp(ans, "451 4.7.1 ", 10) != 0 || !p)
		return -1;
	secs = strtol(p + 13, NULL, 10);
	return c == C_NEW ? (secs == opt.delay ? 0 : -1)
		: (secs > 0 && secs < opt.delay ? 0 : -1);
}

static void record(struct worker *w, uint64_t ns)
{
	if (w->n == w->cap) {
		w->cap = w->cap ? w->cap * 2 : 65536;
		w->lat = realloc(w->lat, w->cap * sizeof(*w->lat));
		if (!w->lat) {
			perror("client: realloc");
			exit(2);
		}
	}
	w->lat[w->n++] = ns > UINT32_MAX ? UINT32_MAX : (uint32_t)ns;
}

static enum cls pick(struct worker *w)
{
	int x = (int)(rnd(&w->rng) % 100), c;

	for (c = 0; c < C_COUNT; c++) {
		if (x < opt.pct[c])
			return (enum cls)c;
		x -= opt.pct[c];
	}
	return C_KNOWN;
}

static void *run(void *arg)
{
	struct worker *w = arg;
	int fd = -1;

	if (!opt.fresh && !opt.milter) {
		fd = connect_to(opt.sock);
		if (fd < 0) {
			problem("connect %s: %s", opt.sock, strerror(errno));
			w->errors++;
		}
	}
	pthread_barrier_wait(&barrier);		/* all connected */
	pthread_barrier_wait(&barrier);		/* deadline set: go */
	for (;;) {
		uint64_t t0, t1;
		enum cls c;
		size_t len;
		int rc;

		if (opt.max && (long)(w->n + (size_t)w->errors) >= opt.max)
			break;
		t0 = now_ns(CLOCK_MONOTONIC);
		if (t0 >= deadline_ns)
			break;
		c = pick(w);
		len = opt.milter ? 0 : build(w, c, w->req, sizeof(w->req));
		if (fd < 0) {
			fd = connect_to(opt.sock);
			if (fd < 0) {
				problem("connect %s: %s", opt.sock,
					strerror(errno));
				w->errors++;
				usleep(1000);
				continue;
			}
		}
		if (opt.milter) {
			rc = m_session(w, c, fd, w->ans, sizeof(w->ans));
			if (rc == 0 && m_check(c, w->ans) != 0)
				rc = 1;
			t1 = now_ns(CLOCK_MONOTONIC);
			close(fd);
			fd = -1;
			if (rc == 1) {
				problem("wrong milter answer for a %s triplet: %s",
					cls_name[c], w->ans);
				w->wrong++;
			} else if (rc != 0) {
				problem("%s milter session: %s", cls_name[c],
					rc == -2 ? "connection closed early"
					: strerror(errno));
				w->errors++;
				continue;
			}
			record(w, t1 - t0);
			w->by_cls[c]++;
			continue;
		}
		rc = exchange(fd, w->req, len, w->ans, sizeof(w->ans));
		t1 = now_ns(CLOCK_MONOTONIC);
		if (rc != 0) {
			problem("%s request: %s", cls_name[c], rc == -2
				? "connection closed without an answer"
				: strerror(errno));
			w->errors++;
			close(fd);
			fd = -1;
			continue;
		}
		if (opt.fresh) {
			close(fd);
			fd = -1;
		}
		record(w, t1 - t0);
		w->by_cls[c]++;
		if (check(c, w->ans) != 0) {
			char *nl = strchr(w->ans, '\n');
			char *s = strstr(w->req, "\nsender=");

			if (nl)
				*nl = 0;
			if (s)
				*strchr(s + 1, '\n') = 0;
			problem("wrong answer for a %s triplet (%s): %s",
				cls_name[c], s ? s + 1 : "?", w->ans);
			w->wrong++;
		}
	}
	if (fd >= 0)
		close(fd);
	w->end = now_ns(CLOCK_MONOTONIC);
	return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* pct - nearest-rank percentile of sorted samples, in microseconds */
static double pct(const uint32_t *v, size_t n, double p)
{
	size_t k;

	if (n == 0)
		return 0;
	k = (size_t)(p / 100.0 * (double)n + 0.999999);
	if (k < 1)
		k = 1;
	if (k > n)
		k = n;
	return v[k - 1] / 1000.0;
}

static void save(const uint32_t *v, size_t n)
{
	FILE *f;

	if (!opt.latfile)
		return;
	f = fopen(opt.latfile, "ab");
	if (!f || fwrite(v, sizeof(*v), n, f) != n || fclose(f) != 0) {
		perror(opt.latfile);
		exit(2);
	}
}

static int parse_mix(const char *s)
{
	char *dup = strdup(s), *tok, *save_p = NULL;
	int total = 0, c;

	memset(opt.pct, 0, sizeof(opt.pct));
	for (tok = strtok_r(dup, ",", &save_p); tok;
	     tok = strtok_r(NULL, ",", &save_p)) {
		char *colon = strchr(tok, ':');
		int p = colon ? atoi(colon + 1) : 100;

		if (colon)
			*colon = 0;
		for (c = 0; c < C_COUNT; c++)
			if (strcmp(tok, cls_name[c]) == 0)
				break;
		if (c == C_COUNT || p < 0)
			return -1;
		opt.pct[c] += p;
		total += p;
	}
	free(dup);
	return total == 100 ? 0 : -1;
}

static int load(void)
{
	struct worker *w = calloc((size_t)opt.clients, sizeof(*w));
	uint32_t *all;
	size_t n = 0, k;
	long wrong = 0, errors = 0, by[C_COUNT] = { 0 };
	uint64_t end = 0;
	double secs;
	int i, c;

	if ((opt.pct[C_KNOWN] && !opt.known)
	    || (opt.pct[C_EARLY] && !opt.pending)) {
		fprintf(stderr, "client: the mix needs -k/-p triplets\n");
		return 2;
	}
	pthread_barrier_init(&barrier, NULL, (unsigned)opt.clients + 1);
	for (i = 0; i < opt.clients; i++) {
		w[i].idx = i;
		w[i].rng = 0x9e3779b97f4a7c15ull * (opt.runid * 64 + (unsigned)i + 1);
		pthread_create(&w[i].th, NULL, run, &w[i]);
	}
	pthread_barrier_wait(&barrier);
	start_ns = now_ns(CLOCK_MONOTONIC);
	deadline_ns = start_ns + (uint64_t)(opt.secs * 1e9);
	pthread_barrier_wait(&barrier);
	for (i = 0; i < opt.clients; i++)
		pthread_join(w[i].th, NULL);
	for (i = 0; i < opt.clients; i++) {
		n += w[i].n;
		wrong += w[i].wrong;
		errors += w[i].errors;
		for (c = 0; c < C_COUNT; c++)
			by[c] += w[i].by_cls[c];
		if (w[i].end > end)
			end = w[i].end;
	}
	all = malloc((n ? n : 1) * sizeof(*all));
	for (i = 0, k = 0; i < opt.clients; i++) {
		memcpy(all + k, w[i].lat, w[i].n * sizeof(*all));
		k += w[i].n;
	}
	save(all, n);
	qsort(all, n, sizeof(*all), cmp_u32);
	secs = (double)(end - start_ns) / 1e9;
	printf("n=%zu secs=%.6f rps=%.1f p50_us=%.1f p99_us=%.1f wrong=%ld"
	       " errors=%ld known=%ld early=%ld new=%ld\n", n, secs,
	       secs > 0 ? (double)n / secs : 0, pct(all, n, 50),
	       pct(all, n, 99), wrong, errors, by[C_KNOWN], by[C_EARLY],
	       by[C_NEW]);
	return wrong || errors ? 1 : 0;
}

static int report(int argc, char **argv)
{
	uint32_t *v = NULL;
	size_t n = 0, cap = 0;
	int i;

	for (i = 0; i < argc; i++) {
		FILE *f = fopen(argv[i], "rb");
		size_t got;

		if (!f) {
			perror(argv[i]);
			return 2;
		}
		for (;;) {
			if (n == cap) {
				cap = cap ? cap * 2 : 65536;
				v = realloc(v, cap * sizeof(*v));
				if (!v)
					return 2;
			}
			got = fread(v + n, sizeof(*v), cap - n, f);
			n += got;
			if (got == 0)
				break;
		}
		fclose(f);
	}
	qsort(v, n, sizeof(*v), cmp_u32);
	printf("n=%zu p50_us=%.1f p99_us=%.1f max_us=%.1f\n", n,
	       pct(v, n, 50), pct(v, n, 99), n ? v[n - 1] / 1000.0 : 0);
	return 0;
}

static int wait_ready(void)
{
	uint64_t until = now_ns(CLOCK_MONOTONIC) + (uint64_t)(opt.secs * 1e9);
	struct worker w = { .rng = 12345 };

	opt.pct[C_KNOWN] = 100;
	while (now_ns(CLOCK_MONOTONIC) < until) {
		int fd = connect_to(opt.sock);

		if (fd >= 0 && opt.milter) {
			int rc = m_session(&w, C_KNOWN, fd, w.ans, sizeof(w.ans));

			close(fd);
			if (rc >= 0) {
				printf("answered_ns=%llu\n", (unsigned long long)
				       now_ns(CLOCK_REALTIME));
				return rc == 0 ? 0 : 1;
			}
		} else if (fd >= 0) {
			size_t len = build(&w, C_KNOWN, w.req, sizeof(w.req));

			if (exchange(fd, w.req, len, w.ans, sizeof(w.ans))
			    == 0) {
				close(fd);
				printf("answered_ns=%llu\n", (unsigned long long)
				       now_ns(CLOCK_REALTIME));
				return check(C_KNOWN, w.ans) == 0 ? 0 : 1;
			}
			close(fd);
		}
		usleep(2000);
	}
	fprintf(stderr, "client: %s did not answer within %.0fs\n", opt.sock,
		opt.secs);
	return 1;
}

static int spawn_loop(long times, char **cmd)
{
	struct worker w = { .rng = 777 };
	uint32_t *lat = calloc((size_t)times, sizeof(*lat));
	long i, wrong = 0, errors = 0;

	for (i = 0; i < times; i++) {
		posix_spawn_file_actions_t fa;
		uint64_t t0, t1;
		size_t len;
		pid_t pid;
		int sv[2], st;

		len = build(&w, C_KNOWN, w.req, sizeof(w.req));
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
			return 2;
		posix_spawn_file_actions_init(&fa);
		posix_spawn_file_actions_adddup2(&fa, sv[1], 0);
		posix_spawn_file_actions_adddup2(&fa, sv[1], 1);
		t0 = now_ns(CLOCK_MONOTONIC);
		if (posix_spawn(&pid, cmd[0], &fa, NULL, cmd, environ) != 0) {
			perror(cmd[0]);
			return 2;
		}
		posix_spawn_file_actions_destroy(&fa);
		close(sv[1]);
		if (opt.milter) {
			if (m_optneg(sv[0], w.ans, sizeof(w.ans)) != 0) {
				problem("spawned %s: no OPTNEG answer", cmd[0]);
				errors++;
			} else {
				(void)m_send(sv[0], 'Q', NULL, 0);
			}
		} else if (exchange(sv[0], w.req, len, w.ans, sizeof(w.ans)) != 0) {
			problem("spawned %s: no answer", cmd[0]);
			errors++;
		} else if (check(C_KNOWN, w.ans) != 0) {
			problem("spawned %s: wrong answer %s", cmd[0], w.ans);
			wrong++;
		}
		t1 = now_ns(CLOCK_MONOTONIC);
		close(sv[0]);
		while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
			;
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			problem("spawned %s: exit status %d", cmd[0], st);
			errors++;
		}
		lat[i] = (uint32_t)(t1 - t0);
	}
	save(lat, (size_t)times);
	qsort(lat, (size_t)times, sizeof(*lat), cmp_u32);
	printf("n=%ld p50_us=%.1f p99_us=%.1f wrong=%ld errors=%ld\n", times,
	       pct(lat, (size_t)times, 50), pct(lat, (size_t)times, 99), wrong,
	       errors);
	return wrong || errors ? 1 : 0;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: client -s SOCK [-c N] [-t SECS] [-n MAX] [-f] -m MIX"
		" [-k N] [-p N] [-r RUNID] [-d DELAY] [-o FILE]\n"
		"       client -R FILE...\n"
		"       client -s SOCK -W SECS\n"
		"       client -x N [-k N] [-d DELAY] [-o FILE] -- CMD ARGS...\n"
		"       (-M with any of them: the milter protocol)\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *mix = NULL;
	long spawn_n = 0;
	int ch, want_report = 0, want_wait = 0;

	signal(SIGPIPE, SIG_IGN);
	while ((ch = getopt(argc, argv, "s:c:t:n:fm:k:p:r:d:o:RW:x:M")) != -1) {
		switch (ch) {
		case 's': opt.sock = optarg; break;
		case 'c': opt.clients = atoi(optarg); break;
		case 't': opt.secs = atof(optarg); break;
		case 'n': opt.max = atol(optarg); break;
		case 'f': opt.fresh = 1; break;
		case 'm': mix = optarg; break;
		case 'k': opt.known = strtoul(optarg, NULL, 10); break;
		case 'p': opt.pending = strtoul(optarg, NULL, 10); break;
		case 'r': opt.runid = strtoul(optarg, NULL, 10); break;
		case 'd': opt.delay = atol(optarg); break;
		case 'o': opt.latfile = optarg; break;
		case 'R': want_report = 1; break;
		case 'W': want_wait = 1; opt.secs = atof(optarg); break;
		case 'x': spawn_n = atol(optarg); break;
		case 'M': opt.milter = 1; break;
		default: usage();
		}
	}
	if (want_report)
		return report(argc - optind, argv + optind);
	if (spawn_n > 0) {
		if (optind >= argc)
			usage();
		return spawn_loop(spawn_n, argv + optind);
	}
	if (!opt.sock)
		usage();
	if (want_wait)
		return wait_ready();
	if (!mix || parse_mix(mix) != 0 || opt.clients < 1)
		usage();
	return load();
}
