/*
 * postgrey.c - greylistctl load --from-postgrey=DIR: postgrey's database
 *
 *	postgrey 1.37 keeps two Berkeley DB files in its --dbdir, read here
 *	as /usr/sbin/postgrey writes them:
 *	  postgrey.db		key lc "NET/SENDER/RECIPIENT", value "FIRST,LAST"
 *	  postgrey_clients.db	key ADDRESS, value "COUNT,LAST"
 *	NET is the client's network under --ipv4cidr or --ipv6cidr, in
 *	NetAddr::IP's text ("198.51.100.0"; IPv6 in full, "2001:db8:1:0:0:0:0:0"),
 *	or with --lookup-by-host the address and its prefix length
 *	("198.51.100.7/32"). SENDER is normalised as greylistd normalises
 *	it. A triplet has passed when LAST - FIRST >= --delay; until then it
 *	is pending since FIRST. ADDRESS is the client's whole address (IPv6
 *	in full and in capitals); its COUNT is greylistd's. With --privacy
 *	both keys are SHA-1 digests, from which no triplet can be recovered:
 *	such a database is refused.
 *
 *	So the options postgrey ran with decide the keys' shape: greylistctl
 *	is given the same (they are greylistd's, under the same names), and
 *	a key of another shape (a network with host bits under the prefix, a
 *	missing or extra "/32") is a record not imported, never a guess.
 *
 *	Berkeley DB is not linked: db5.3_dump -p (Debian's db5.3-util) is run
 *	on each file as a child, joining postgrey's environment (-h DIR), and
 *	its printable output read from a pipe. postgrey must not run meanwhile:
 *	its lock file (postgrey.lock) is held shared throughout, so that a
 *	running postgrey is seen (it holds the file exclusively) and one
 *	started meanwhile refuses to start.
 *
 *	Each record becomes one of greylistd's: a triplet "T FIRST LAST
 *	PASSED", PASSED being FIRST + --delay for a passed one (the earliest
 *	its first pass can have been: postgrey does not keep it) and 0 for a
 *	pending one; a client "C COUNT LAST" under greylistd's client key. An
 *	IPv6 client is its --ipv6cidr network in greylistd, so postgrey's
 *	addresses of one network become one client, with the largest count
 *	and the latest time. load (greylistctl.c) checks and writes them as it
 *	writes a dump's.
 */

#define _GNU_SOURCE

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "greylist.h"
#include "greylistctl.h"

/* The program that reads a Berkeley DB file for us. */
#define DB_DUMP		"db5.3_dump"

/* A line of db_dump's printable output: a key of greylistd's longest,
 * every byte written as "\xx". A longer one is no triplet greylistd
 * keeps. */
#define PG_LINE		(3 * MAX_KEY + 16)

/* Complaints about single records, at most this many; the summary
 * counts them all. */
#define PG_SAID		10

/* One of postgrey's clients, under greylistd's client key. */
struct pg_client {
	char key[INET6_ADDRSTRLEN];
	long long count, last;
};

struct pg_import {
	char dir[PATH_MAX];
	int lock;			/* postgrey.lock, held shared; or -1 */
	FILE *in;			/* db5.3_dump's output */
	pid_t pid;
	const char *file;		/* the file being read */
	int state;			/* 0 clients out, 1 triplets, 2 done */
	struct pg_client *c;
	size_t nc, cap, next;
	size_t triplets, passed, pending, clients, bad, said;
	size_t seen;			/* records of postgrey.db read */
	const struct pg_record *handed;	/* the last one pg_next gave */
	char key[PG_LINE], value[PG_LINE], where[LOG_VALUE_MAX + 8];
	char net[INET6_ADDRSTRLEN];
};

/* pg_bad - a record not imported, and why (said for the first PG_SAID):
 * one of postgrey's, or the one pg_next gave last, which load refused
 * (and which is then no longer counted as imported) */
void pg_bad(struct pg_import *p, const char *why)
{
	const struct pg_record *r = p->handed;

	if (r && r->kind == 'T') {
		p->triplets--;
		if (r->f[T_PASSED])
			p->passed--;
		else
			p->pending--;
	}
	if (r && r->kind == 'C')
		p->nc--;
	p->handed = NULL;
	p->bad++;
	if (p->said++ < PG_SAID)
		say("%s/%s: %s: not imported: %s", p->dir, p->file, p->where, why);
	else if (p->said == PG_SAID + 1)
		say("(more records not imported: the summary counts them)");
}

/* dump_start - db5.3_dump -p of one of postgrey's files, in postgrey's
 * environment; 1 started, 0 no such file, -1 (said) */
static int dump_start(struct pg_import *p, const char *file)
{
	char path[PATH_MAX + 32];
	int fd[2];

	p->file = file;
	snprintf(path, sizeof(path), "%s/%s", p->dir, file);
	if (access(path, F_OK) != 0)
		return errno == ENOENT ? 0 : (say("%s: %s", path, strerror(errno)), -1);
	if (pipe2(fd, O_CLOEXEC) != 0 || (p->pid = fork()) < 0) {
		say("cannot run %s: %s", DB_DUMP, strerror(errno));
		return -1;
	}
	if (p->pid == 0) {
		if (dup2(fd[1], 1) < 0)
			_exit(126);
		execlp(DB_DUMP, DB_DUMP, "-p", "-h", p->dir, file, (char *)NULL);
		_exit(errno == ENOENT ? 127 : 126);
	}
	close(fd[1]);
	if (!(p->in = fdopen(fd[0], "r"))) {
		close(fd[0]);
		say("reading %s: %s", DB_DUMP, strerror(errno));
		return -1;
	}
	return 1;
}

/* dump_end - the dump's end: db5.3_dump must have succeeded (when "ok":
 * the output was read to its end); -1 (said) otherwise */
static int dump_end(struct pg_import *p, int ok)
{
	int status = 0;

	if (p->in)
		(void)fclose(p->in);	/* read only: nothing to lose */
	p->in = NULL;
	while (p->pid > 0 && waitpid(p->pid, &status, 0) < 0 && errno == EINTR)
		;
	p->pid = 0;
	if (!ok)
		return -1;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
		say("%s not found: install Debian's db5.3-util", DB_DUMP);
	else
		say("%s -p -h %s %s failed (see above): postgrey's database could"
		    " not be read whole (after a crash, start and stop postgrey"
		    " once: it recovers its files at start)", DB_DUMP, p->dir,
		    p->file);
	return -1;
}

/* dump_line - one line of the dump into buf, without its newline; 1, 0
 * at the end of the output, 2 a line too long (consumed) */
static int dump_line(struct pg_import *p, char *buf, size_t size)
{
	size_t len;
	int c;

	if (!fgets(buf, (int)size, p->in))
		return 0;
	len = strlen(buf);
	if (len > 0 && buf[len - 1] == '\n') {
		buf[len - 1] = 0;
		return 1;
	}
	while ((c = getc(p->in)) != EOF && c != '\n')
		;
	return 2;
}

/* dump_header - up to "HEADER=END", which must say format=print; -1
 * (said, and the dump ended) when there is none */
static int dump_header(struct pg_import *p)
{
	int print = 0;

	while (dump_line(p, p->key, sizeof(p->key)) == 1) {
		print |= strcmp(p->key, "format=print") == 0;
		if (strcmp(p->key, "HEADER=END") == 0 && print)
			return 0;
	}
	if (dump_end(p, 1) == 0)	/* else it said why it failed */
		say("%s/%s: %s gave no printable header", p->dir, p->file,
		    DB_DUMP);
	return -1;
}

/* hex - one hex digit's value (the caller checked it is one) */
static unsigned hex(char c)
{
	return (unsigned)(isdigit((unsigned char)c) ? c - '0'
			  : tolower((unsigned char)c) - 'a' + 10);
}

/* unprint - a data line of the printable format (" " then the bytes,
 * "\\" for a backslash, "\xx" for any other byte) back into bytes, in
 * place; its length, or -1 when it is not of that format */
static long unprint(char *s)
{
	char *o = s, *p = s + 1;

	if (*s != ' ')
		return -1;
	while (*p) {
		if (*p != '\\') {
			*o++ = *p++;
		} else if (p[1] == '\\') {
			*o++ = '\\';
			p += 2;
		} else if (isxdigit((unsigned char)p[1])
			   && isxdigit((unsigned char)p[2])) {
			*o++ = (char)(hex(p[1]) << 4 | hex(p[2]));
			p += 3;
		} else {
			return -1;
		}
	}
	*o = 0;
	return o - s;
}

/* dump_pair - the next key and value, unescaped into p->key and
 * p->value, p->where naming the key; 1, 0 at DATA=END, 2 a record that
 * cannot be read (counted), -1 on a fault (said) */
static int dump_pair(struct pg_import *p)
{
	int k = dump_line(p, p->key, sizeof(p->key)), v;
	long klen, vlen;

	if (k == 1 && strcmp(p->key, "DATA=END") == 0)
		return 0;
	v = k ? dump_line(p, p->value, sizeof(p->value)) : 0;
	if (!k || !v) {
		say("%s/%s: %s's output ends inside a record", p->dir, p->file,
		    DB_DUMP);
		return -1;
	}
	klen = k == 1 ? unprint(p->key) : -1;
	vlen = v == 1 ? unprint(p->value) : -1;
	log_value(p->where, sizeof(p->where), klen < 0 ? "(a key too long to"
		  " show)" : p->key);
	if (k == 2 || v == 2) {
		pg_bad(p, "longer than any record greylistd keeps");
		return 2;
	}
	if (klen < 0 || vlen < 0) {
		say("%s/%s: %s wrote a line of no printable format", p->dir,
		    p->file, DB_DUMP);
		return -1;
	}
	if ((size_t)klen != strlen(p->key) || (size_t)vlen != strlen(p->value)
	    || strchr(p->key, '\n')) {
		pg_bad(p, "a NUL byte or a newline, which no request holds");
		return 2;
	}
	return 1;
}

/* is_sha1 - 40 hex digits: a key postgrey's --privacy made */
static int is_sha1(const char *s)
{
	return strlen(s) == 40 && strspn(s, "0123456789abcdef") == 40;
}

/* pair_numbers - postgrey's "A,B" (a third field, an older postgrey's
 * host, is ignored), each in [0, max]; -1 if of another shape */
static int pair_numbers(const char *s, long long *a, long long *b,
			long long max)
{
	long long *f[2] = { a, b };
	char *end;
	int i;

	for (i = 0; i < 2; i++) {
		if (!isdigit((unsigned char)*s))
			return -1;
		errno = 0;
		*f[i] = strtoll(s, &end, 10);
		if (errno || *f[i] > max || (i == 0 ? *end != ',' : *end && *end != ','))
			return -1;
		s = end + 1;
	}
	return 0;
}

/* pg_net - postgrey's NET as greylistd writes the triplet's network,
 * into p->net; *rest moved past it and its "/". NULL, or why the key is
 * not of the shape the options give. */
static const char *pg_net(struct pg_import *p, char *key, char **rest)
{
	char *slash = strchr(key, '/'), *len = NULL;
	unsigned char a[16], m[16];
	size_t n;
	int family;

	if (!slash)
		return "not NET/SENDER/RECIPIENT";
	*slash = 0;
	*rest = slash + 1;
	if (cfg.lookup_by_host && (slash = strchr(*rest, '/'))) {
		len = *rest;		/* NetAddr::IP's "ADDRESS/LENGTH" */
		*slash = 0;
		*rest = slash + 1;
	}
	if (parse_address(key, &family, a) != 0)
		return "its network is not an IP address";
	n = family == AF_INET ? 4 : 16;
	memcpy(m, a, n);
	mask_bits(m, n, family == AF_INET ? cfg.ipv4cidr : cfg.ipv6cidr);
	if (cfg.lookup_by_host
	    && (!len || strcmp(len, n == 4 ? "32" : "128") != 0))
		return "not a key of --lookup-by-host (ADDRESS/32 or /128): give"
			" the options postgrey ran with";
	if (!cfg.lookup_by_host && memcmp(m, a, n) != 0)
		return "its network has host bits under --ipv4cidr or --ipv6cidr:"
			" give the options postgrey ran with";
	inet_ntop(family, a, p->net, sizeof(p->net));
	return NULL;
}

/* pg_triplet - a record of postgrey.db as greylistd's triplet; NULL, or
 * why not */
static const char *pg_triplet(struct pg_import *p, struct pg_record *r)
{
	char *rest, *slash;
	const char *why;
	long long first = 0, last = 0;

	if ((why = pg_net(p, p->key, &rest)))
		return why;
	slash = strchr(rest, '/');
	if (!slash || strchr(slash + 1, '/'))
		return slash ? "a \"/\" in its sender or recipient: where one"
			" ends is ambiguous" : "not NET/SENDER/RECIPIENT";
	*slash = 0;
	if (pair_numbers(p->value, &first, &last, MAX_TIME) != 0 || first > last)
		return "its value is not FIRST,LAST";
	r->kind = 'T';
	r->f[T_FIRST] = first;
	r->f[T_LAST] = last;
	r->f[T_PASSED] = last - first >= cfg.delay ? first + cfg.delay : 0;
	r->part[0] = p->net;
	r->part[1] = rest;
	r->part[2] = slash + 1;
	r->nparts = 3;
	return NULL;
}

/* pg_client - a record of postgrey_clients.db, kept under greylistd's
 * client key; NULL, or why not */
static const char *pg_client(struct pg_import *p)
{
	static struct triplet t;
	struct pg_client *c;
	long long count = 0, last = 0;

	if (client_net(p->key, &t) != 0)
		return "not an IP address";
	if (pair_numbers(p->value, &count, &last, MAX_TIME) != 0
	    || count > MAX_AWL_COUNT)
		return "its value is not COUNT,LAST";
	if (!(c = grow(p->c, &p->cap, p->nc + 1, sizeof(*c))))
		return "out of memory";
	p->c = c;
	c = &p->c[p->nc++];
	memcpy(c->key, t.client, sizeof(c->key));
	c->count = count;
	c->last = last;
	return NULL;
}

/* cmp_client - by key */
static int cmp_client(const void *a, const void *b)
{
	return strcmp(((const struct pg_client *)a)->key,
		      ((const struct pg_client *)b)->key);
}

/* merge_clients - sort, and make the clients of one key one: the largest
 * count, the latest time */
static void merge_clients(struct pg_import *p)
{
	size_t i, o = 0;

	if (p->nc)
		qsort(p->c, p->nc, sizeof(*p->c), cmp_client);
	for (i = 0; i < p->nc; i++) {
		if (o && strcmp(p->c[o - 1].key, p->c[i].key) == 0) {
			if (p->c[i].count > p->c[o - 1].count)
				p->c[o - 1].count = p->c[i].count;
			if (p->c[i].last > p->c[o - 1].last)
				p->c[o - 1].last = p->c[i].last;
		} else {
			p->c[o++] = p->c[i];
		}
	}
	p->nc = o;
}

/* privacy - the first key is a SHA-1 digest: postgrey ran with --privacy */
static int privacy(struct pg_import *p)
{
	if (!is_sha1(p->key))
		return 0;
	say("%s/%s: the keys are SHA-1 digests (postgrey ran with --privacy):"
	    " no triplet or client can be recovered from them; nothing"
	    " imported", p->dir, p->file);
	return 1;
}

/* read_clients - all of postgrey_clients.db, merged; -1 (said) */
static int read_clients(struct pg_import *p)
{
	const char *why;
	int rc = dump_start(p, "postgrey_clients.db"), first = 1;

	if (rc <= 0)
		return rc;
	if (dump_header(p) != 0)
		return -1;
	while ((rc = dump_pair(p)) > 0) {
		if (rc == 2)
			continue;
		if (first && privacy(p))
			return dump_end(p, 0);
		first = 0;
		if ((why = pg_client(p)))
			pg_bad(p, why);
		else
			p->clients++;
	}
	if (dump_end(p, rc == 0) != 0)
		return -1;
	merge_clients(p);
	return 0;
}

/* pg_open - start importing postgrey's --dbdir: its lock held (a running
 * postgrey is refused), its clients read; NULL (said) when it cannot */
struct pg_import *pg_open(const char *dir)
{
	static struct pg_import p;
	char path[PATH_MAX + 32];

	memset(&p, 0, sizeof(p));
	if (strlen(dir) >= sizeof(p.dir) - 32) {
		say("--from-postgrey: the path is too long");
		return NULL;
	}
	snprintf(p.dir, sizeof(p.dir), "%s", dir);
	snprintf(path, sizeof(path), "%s/postgrey.lock", dir);
	p.lock = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (p.lock >= 0 && flock(p.lock, LOCK_SH | LOCK_NB) != 0) {
		say("%s: postgrey runs (it holds the lock): stop it first, or"
		    " its database changes while it is read", path);
		close(p.lock);
		return NULL;
	}
	snprintf(path, sizeof(path), "%s/postgrey.db", dir);
	if (access(path, R_OK) != 0) {
		say("%s: %s (is %s postgrey's --dbdir?)", path, strerror(errno),
		    dir);
	} else if (read_clients(&p) == 0 && dump_start(&p, "postgrey.db") == 1
		   && dump_header(&p) == 0) {
		p.state = 0;
		return &p;
	}
	dump_end(&p, 0);
	pg_close(&p, 0);
	return NULL;
}

/* next_triplet - the next record of postgrey.db that is a triplet; 1, 0
 * at the end, -1 on a fault */
static int next_triplet(struct pg_import *p, struct pg_record *r)
{
	const char *why;
	int rc;

	p->handed = NULL;
	while ((rc = dump_pair(p)) > 0) {
		if (rc == 2)
			continue;
		if (!p->seen++ && privacy(p))
			return dump_end(p, 0);
		if ((why = pg_triplet(p, r))) {
			pg_bad(p, why);
			continue;
		}
		p->triplets++;
		p->passed += r->f[T_PASSED] != 0;
		p->pending += r->f[T_PASSED] == 0;
		p->handed = r;
		return 1;
	}
	p->state = 2;
	return dump_end(p, rc == 0) == 0 ? 0 : -1;
}

/* pg_next - the next record to load: the clients, then the triplets; 1,
 * 0 at the end, -1 on a fault (said). A record of postgrey's that is not
 * imported is said and counted (pg_bad) and skipped. */
int pg_next(struct pg_import *p, struct pg_record *r)
{
	memset(r, 0, sizeof(*r));
	p->handed = r;
	if (p->state == 0 && p->next < p->nc) {
		p->file = "postgrey_clients.db";
		log_value(p->where, sizeof(p->where), p->c[p->next].key);
		r->kind = 'C';
		r->f[C_COUNT] = p->c[p->next].count;
		r->f[C_LAST] = p->c[p->next].last;
		r->part[0] = p->c[p->next++].key;
		r->nparts = 1;
		return 1;
	}
	if (p->state == 0) {
		p->state = 1;
		p->file = "postgrey.db";
	}
	return p->state == 1 ? next_triplet(p, r) : 0;
}

/* pg_close - the summary; 0 when every record of postgrey's was
 * imported and "loaded" of greylistd's written */
int pg_close(struct pg_import *p, size_t loaded)
{
	int rc = p->bad || p->state != 2 ? 1 : 0;

	if (p->in || p->pid)
		dump_end(p, 0);
	if (p->state == 2)
		printf("postgrey %s: %zu triplets (%zu passed, %zu pending), %zu"
		       " clients (%zu in greylistd's keys); %zu records loaded,"
		       " %zu of postgrey's not imported\n", p->dir, p->triplets,
		       p->passed, p->pending, p->clients, p->nc, loaded, p->bad);
	if (p->lock >= 0)
		close(p->lock);
	p->lock = -1;
	free(p->c);
	p->c = NULL;
	return rc;
}
