/*
 * greylistctl - greylistd's operator program
 *
 * SYNOPSIS
 *	greylistctl COMMAND [--option=value ...]
 *
 *	check		the configuration, the whitelists (every line), the
 *			database (a regular file, readable, of the configured
 *			key kind); each problem printed as FILE:LINE: or WHAT:
 *	stats		the database's figures, one key=value per line, or
 *			in the OpenMetrics text format (stats.c)
 *	dump		every record as a line of text, sorted (a backup)
 *	load		read a dump from stdin into the database, or with
 *			--from-postgrey=DIR postgrey's (postgrey.c)
 *	expire		delete what has outlived its use, now; reorganize the
 *			file when most of it has become free
 *	repair		recover a damaged file (GDBM's recovery), or move a
 *			file that cannot be recovered aside
 *	report		which mail did greylisting cost: postgreyreport's
 *			report, from a log on stdin (report.c)
 *	explain		why a request gets its answer, and from when it
 *			changes; writes nothing (explain.c)
 *	maintain	what a serving greylistd starts after an answer when
 *			maintenance is due: repair, log bad whitelist lines
 *			once per version, and the daily expiry
 *
 *	It reads the same configuration file as greylistd (greylist.h), and
 *	takes every greylistd option, so that both see one database with the
 *	same durations and key kind.
 *
 * TRUTH
 *	No command exits 0 on a partial or wrong answer. Every read of the
 *	database walks it under its lock (a private copy is taken under the
 *	shared lock, never without it) and notices damage: a walk that ends
 *	early, or sees fewer records than GDBM counts, is an error. dump
 *	never writes a partial file as if it were whole.
 *
 * EXIT CODES
 *	0 done; 1 the command could not give a whole and true answer (the
 *	reason is on stderr); 64 bad command line or configuration.
 *
 * LOG FORMAT
 *	maintain and expire log as greylistd does (greylistd.c): lines that
 *	start with "info: ", "warning: " or "error: ".
 */

#define _GNU_SOURCE

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "greylist.h"
#include "greylistctl.h"

/* Longest wait for the lock in an operator command or maintenance, which
 * no client waits for. */
#define CTL_LOCK_WAIT	cfg.wait

/* The command's own options (extra tables, see main). */
static long long opt_raw, opt_recover, opt_if_due, opt_repair;
static long long opt_openmetrics;
static const char *opt_output;
static const char *opt_from_postgrey;

/* say - an operator command's complaint, to stderr */
void say(const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	(void)fprintf(stderr, "greylistctl: %s\n", msg);
}

/* flush_stdout - 0 when everything printed reached its place, else 1
 * (a full disk, a closed pipe), which the command's exit status says */
int flush_stdout(void)
{
	if (fflush(stdout) == 0 && !ferror(stdout))
		return 0;
	say("writing the output: %s", strerror(errno));
	return 1;
}

/* output_open - where a command writes: stdout (path NULL), or a new
 * file in path's directory, renamed over path by output_close when all
 * of it has been written, so that a reader (node_exporter, a web
 * server) never sees half of it. 0, or -1 (said). */
int output_open(struct output *o, const char *path)
{
	mode_t mask = umask(0);
	int fd;

	umask(mask);
	memset(o, 0, sizeof(*o));
	o->path = path;
	o->f = stdout;
	if (!path)
		return 0;
	o->f = NULL;
	if (snprintf(o->tmp, sizeof(o->tmp), "%s.XXXXXX", path)
	    >= (int)sizeof(o->tmp)) {
		say("%.100s...: name too long", path);
		return -1;
	}
	/* not ".prom" at the end: node_exporter reads *.prom only */
	fd = mkostemp(o->tmp, O_CLOEXEC);
	if (fd < 0 || fchmod(fd, 0666 & ~mask) != 0
	    || !(o->f = fdopen(fd, "w"))) {
		say("%s: %s", fd < 0 ? path : o->tmp, strerror(errno));
		if (fd >= 0) {
			close(fd);
			unlink(o->tmp);
		}
		return -1;
	}
	return 0;
}

/* output_close - end what output_open began: when ok, and everything
 * reached the file, it replaces path; otherwise path is left as it was.
 * 0, or 1 (said), for the exit status. */
int output_close(struct output *o, int ok)
{
	int err = 0;

	if (!o->path)
		return flush_stdout() || !ok;
	if (!o->f)
		return 1;
	if (fflush(o->f) != 0 || ferror(o->f) || fsync(fileno(o->f)) != 0)
		err = errno ? errno : EIO;
	if (fclose(o->f) != 0 && !err)
		err = errno;
	o->f = NULL;
	if (ok && !err && rename(o->tmp, o->path) == 0)
		return 0;
	if (ok)
		say("writing %s: %s", o->path, strerror(err ? err : errno));
	unlink(o->tmp);
	return 1;
}

/*
 * Reading the database: a private copy, walked with damage noticed.
 */

/* copy_fd - copy a whole file; 0 or -1 */
static int copy_fd(int from, int to)
{
	char buf[65536];
	ssize_t n, w, k;

	while ((n = copy_file_range(from, NULL, to, NULL, 1 << 30, 0)) > 0)
		;
	if (n == 0)
		return 0;
	if (errno != EXDEV && errno != EINVAL && errno != ENOSYS
	    && errno != EOPNOTSUPP)
		return -1;
	while ((n = read(from, buf, sizeof(buf))) > 0)
		for (w = 0; w < n; w += k)
			if ((k = write(to, buf + w, (size_t)(n - w))) < 0)
				return -1;
	return n < 0 ? -1 : 0;
}

/* snap_dir - a private directory for the copy: next to the database
 * (the copy is fast), or in $TMPDIR when that fails or "far" is set
 * (its disk may be full: an admin looks at the database exactly then) */
static int snap_dir(struct snap *s, int far)
{
	const char *slash = strrchr(cfg.db_path, '/'), *tmp = getenv("TMPDIR");
	size_t len = slash ? (size_t)(slash - cfg.db_path) : 0;

	if (len + 32 > sizeof(s->dir))
		return -1;
	if (!far && slash) {
		memcpy(s->dir, cfg.db_path, len);
		snprintf(s->dir + len, sizeof(s->dir) - len,
			 "/.greylistctl.XXXXXX");
	} else if (!far) {
		snprintf(s->dir, sizeof(s->dir), ".greylistctl.XXXXXX");
	} else {
		snprintf(s->dir, sizeof(s->dir), "%s/greylistctl.XXXXXX",
			 tmp && *tmp ? tmp : "/tmp");
	}
	if (!mkdtemp(s->dir))
		return -1;
	snprintf(s->file, sizeof(s->file), "%s/db", s->dir);
	return 0;
}

/* snap_copy - copy the locked file into the private directory */
static int snap_copy(struct snap *s, int src)
{
	int far, dst, err = 0;

	for (far = 0; far < 2; far++) {
		if (lseek(src, 0, SEEK_SET) != 0 || snap_dir(s, far) != 0)
			continue;
		dst = open(s->file, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (dst >= 0 && copy_fd(src, dst) == 0 && fsync(dst) == 0) {
			close(dst);
			return 0;
		}
		err = errno;
		if (dst >= 0)
			close(dst);
		snap_free(s);
		if (err != ENOSPC && err != EDQUOT)
			break;
	}
	errno = err ? err : errno;
	return -1;
}

/* snap_free - remove the private copy (and what a recovery left in its
 * directory, which is ours alone) */
void snap_free(struct snap *s)
{
	char path[PATH_MAX + 300];
	struct dirent *e;
	DIR *d;

	if (s->dbf)
		gdbm_close(s->dbf);
	s->dbf = NULL;
	if (!*s->dir)
		return;
	if ((d = opendir(s->dir))) {
		/* one thread, so readdir is safe; cppcheck's readdir_r is
		 * deprecated */
		/* cppcheck-suppress readdirCalled */
		while ((e = readdir(d)))
			if (strcmp(e->d_name, ".") != 0
			    && strcmp(e->d_name, "..") != 0) {
				snprintf(path, sizeof(path), "%s/%s", s->dir,
					 e->d_name);
				unlink(path);
			}
		closedir(d);
	}
	rmdir(s->dir);
	*s->dir = 0;
}

/* A snapshot of the Redis store being written. */
struct copy {
	GDBM_FILE dbf;
	int failed;
};

/* copy_in - redis_walk's step for a snapshot: one record into the copy */
static void copy_in(datum key, datum value, void *arg)
{
	struct copy *w = arg;

	if (gdbm_store(w->dbf, key, value, GDBM_REPLACE) != 0)
		w->failed = 1;
}

/* snap_redis - snap_take of the Redis store: a private GDBM file of its
 * records, walked with SCAN (not one moment's state, as a file's copy
 * is: a record written or deleted meanwhile may or may not be in it) */
static enum snap_status snap_redis(struct snap *s)
{
	struct timespec deadline = deadline_in(CTL_LOCK_WAIT);
	struct copy w = { NULL, 0 };
	long long n;

	if (redis_open(&deadline) != 0) {
		say("%s: %s", redis_where(), redis_why());
		return SNAP_ERROR;
	}
	if (snap_dir(s, 1) != 0 || !(w.dbf = gdbm_open(s->file, 0, GDBM_NEWDB
	    | GDBM_NOLOCK | GDBM_NOMMAP | GDBM_CLOEXEC, 0600, NULL))) {
		say("a private copy of %s: %s", redis_where(), *s->dir
		    ? gdbm_strerror(gdbm_errno) : strerror(errno));
		return SNAP_ERROR;
	}
	s->dbf = w.dbf;
	n = redis_walk(copy_in, &w, CTL_LOCK_WAIT);
	if (n < 0 || w.failed) {
		say("%s: %s", redis_where(), n < 0 ? redis_why()
		    : gdbm_strerror(gdbm_errno));
		return SNAP_ERROR;
	}
	return n == 0 ? SNAP_ABSENT : SNAP_OK;
}

/* snap_take - a private copy of the database, taken under the shared
 * lock (about 50 ms for a million records), so that long reads hold no
 * lock and see one consistent state. SNAP_OK, SNAP_ABSENT (no database
 * yet: an error for most commands), SNAP_DAMAGED (GDBM cannot open the
 * copy) or SNAP_ERROR (said on stderr). */
enum snap_status snap_take(struct snap *s)
{
	struct timespec deadline = deadline_in(CTL_LOCK_WAIT);
	struct stat st;
	int src;

	memset(s, 0, sizeof(*s));
	if (redis_in_use())
		return snap_redis(s);
	src = db_lock_fd(cfg.db_path, 0, &deadline, &st);
	if (src < 0 && errno == ENOENT)
		return SNAP_ABSENT;
	if (src < 0) {
		if (errno == ETIMEDOUT)
			say("%s: the lock was not had within %llds (a writer"
			    " holds it; --wait waits longer)", cfg.db_path,
			    cfg.wait);
		else
			say("%s: %s", cfg.db_path, errno == EINVAL
			    ? "not a regular file" : strerror(errno));
		return SNAP_ERROR;
	}
	if (st.st_size == 0) {
		close(src);
		return SNAP_ABSENT;
	}
	if (snap_copy(s, src) != 0) {
		say("copying %s: %s", cfg.db_path, strerror(errno));
		close(src);
		return SNAP_ERROR;
	}
	close(src);
	s->dbf = gdbm_open(s->file, 0, GDBM_READER | GDBM_NOLOCK | GDBM_NOMMAP
			   | GDBM_XVERIFY | GDBM_CLOEXEC, 0600, NULL);
	if (s->dbf)
		return gdbm_needs_recovery(s->dbf) ? SNAP_DAMAGED : SNAP_OK;
	if (is_damage(gdbm_errno))
		return SNAP_DAMAGED;
	say("%s: %s", cfg.db_path, gdbm_strerror(gdbm_errno));
	return SNAP_ERROR;
}

/* snap_need - snap_take for a command that needs the database: "absent"
 * and "damaged" are errors with a word on what to do */
int snap_need(struct snap *s)
{
	switch (snap_take(s)) {
	case SNAP_OK:
		return 0;
	case SNAP_ABSENT:
		if (redis_in_use())
			say("%s: no records of greylistd's there (none has been"
			    " written yet)", redis_where());
		else
			say("%s: no database there (none has been written yet,"
			    " or --db names the wrong file)", cfg.db_path);
		break;
	case SNAP_DAMAGED:
		say("%s is damaged: run greylistctl repair", cfg.db_path);
		break;
	case SNAP_ERROR:
		break;
	}
	snap_free(s);
	return -1;
}

/* walk - call fn on every record of a copy; the count, or -1 when the
 * walk did not see the whole file (it ended on an error, or saw fewer
 * records than GDBM counts: a damaged bucket hides the rest) */
long long walk(GDBM_FILE dbf, void (*fn)(datum, datum, void *), void *arg)
{
	datum key = gdbm_firstkey(dbf), next, value;
	gdbm_count_t count;
	long long n = 0;
	int err;

	while (key.dptr) {
		value = gdbm_fetch(dbf, key);
		if (!value.dptr) {
			free(key.dptr);
			return -1;
		}
		fn(key, value, arg);
		n++;
		free(value.dptr);
		next = gdbm_nextkey(dbf, key);
		free(key.dptr);
		key = next;
	}
	err = gdbm_errno;
	if ((err != GDBM_ITEM_NOT_FOUND && err != GDBM_NO_ERROR)
	    || gdbm_count(dbf, &count) != 0 || (long long)count != n)
		return -1;
	return n;
}

/* walk_said - walk, and say what a short walk means */
long long walk_said(GDBM_FILE dbf, void (*fn)(datum, datum, void *),
			   void *arg)
{
	long long n = walk(dbf, fn, arg);

	if (n < 0)
		say("%s is damaged: its records cannot all be read (%s); run"
		    " greylistctl repair", cfg.db_path,
		    gdbm_strerror(gdbm_errno));
	return n;
}

/* The record kinds: numbers in the value, parts in the key (a digest
 * with --privacy is one part). */
static const struct {
	char kind;
	int nf;
	int nparts;
} kinds[] = { { 'T', T_FIELDS, 3 }, { 'C', C_FIELDS, 1 } };

/* rec_split - take a record apart; kind 'X' when it fits no shape */
void rec_split(datum key, datum value, struct rec *r)
{
	const char *p = key.dptr, *end = key.dptr + key.dsize, *nl = NULL;
	size_t i;

	memset(r, 0, sizeof(*r));
	r->kind = 'X';
	if (key.dsize < 3 || p[1] != '\n' || memchr(p, 0, (size_t)key.dsize))
		return;
	if (p[0] == 'M') {
		r->kind = 'M';
		r->part[0] = p + 2;
		r->len[0] = (size_t)key.dsize - 2;
		r->nparts = 1;
		return;
	}
	for (i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
		if (kinds[i].kind == p[0])
			break;
	if (i == sizeof(kinds) / sizeof(kinds[0])
	    || record_decode(value, r->f, kinds[i].nf) != 0
	    || (p[0] == 'T' && !triplet_record(value, r->f)))
		return;
	for (p += 2; r->nparts < 3; p = nl + 1) {
		nl = memchr(p, '\n', (size_t)(end - p));
		r->part[r->nparts] = p;
		r->len[r->nparts++] = (size_t)((nl ? nl : end) - p);
		if (!nl)
			break;
	}
	if ((nl && r->nparts == 3)
	    || (r->nparts != kinds[i].nparts
		&& !(r->nparts == 1 && is_digest(r->part[0], r->len[0]))))
		return;
	r->kind = kinds[i].kind;
	r->nf = kinds[i].nf;
}

/* print_escaped - a text field: "<>" when empty; "\", "<", ">" and bytes
 * outside "!".."~" as \xHH, so that fields never hold a space or a
 * control character (a crafted value cannot reach an admin's terminal) */
void print_escaped(const char *p, size_t len)
{
	size_t i;

	/* Errors of these writes are seen once, by flush_stdout(). */
	if (len == 0)
		(void)fputs("<>", stdout);
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)p[i];

		if (c < '!' || c > '~' || c == '\\' || c == '<' || c == '>')
			printf("\\x%02x", c);
		else
			putchar(c);
	}
}

/* print_time - a record's time: ISO 8601 UTC, or Unix seconds with
 * --raw; "-" for 0 (not yet) */
static void print_time(long long t)
{
	char buf[32];

	if (opt_raw)
		printf(" %lld", t);
	else
		printf(" %s", t <= 0 ? "-"
		       : format_time(buf, sizeof(buf), TS_UTC, (time_t)t));
}

/*
 * check, dump (stats is in stats.c).
 */

/* check_db - the database: absent (fine: the first request makes it),
 * or a readable, whole GDBM file of the configured key kind */
static int check_db(void)
{
	struct key_kind kk;
	struct snap s;
	struct db db = { 0 };
	int present, rc = 0;
	enum snap_status st = snap_take(&s);

	if (st == SNAP_ABSENT) {
		snap_free(&s);
		return 0;		/* the first request creates it */
	}
	/* a Redis walk that failed leaves a copy it had begun */
	if (!s.dbf || st == SNAP_ERROR) {
		printf("%s: cannot be read (see above)\n", store_name());
		snap_free(&s);
		return 1;
	}
	db.dbf = s.dbf;
	if (key_kind_read(&db, &kk, &present) != 0) {
		printf("%s: %s\n", store_name(), db.why);
		rc = 1;
	} else if (present && kk.hashed != (cfg.privacy != 0)) {
		printf("%s: holds %s keys, but privacy is %s\n", store_name(),
		       kk.hashed ? "hashed" : "plain", cfg.privacy ? "on" : "off");
		rc = 1;
	}
	snap_free(&s);
	return rc;
}

/* cmd_check - the whitelists (every line), the database, the GDBM
 * version fix_next_block was written for */
static int cmd_check(void)
{
	struct wl_set set = { 0 };
	int bad = wl_load(&set, &cfg.whitelists, WLR_PRINT, 1);

	wl_free(&set);
	if (!fix_next_block_supported()) {
		printf("GDBM %d.%d: greylistd's repair of files a killed writer"
		       " left is written for GDBM %s only and is off\n",
		       gdbm_version_number[0], gdbm_version_number[1], "1.23");
		bad++;
	}
	bad += check_db();
	return bad || flush_stdout() ? 1 : 0;
}

/* The records of a dump, collected to be sorted. */
struct pairs {
	datum *d;			/* key, value, key, value, ... */
	size_t n, cap;
	int failed;
};

/* collect - keep a copy of one record */
static void collect(datum key, datum value, void *arg)
{
	struct pairs *p = arg;
	datum *d = grow(p->d, &p->cap, p->n + 2, sizeof(*d));
	char *k, *v;

	if (d)
		p->d = d;		/* grow may have moved it */
	k = d ? malloc((size_t)key.dsize + 1) : NULL;
	v = k ? malloc((size_t)value.dsize + 1) : NULL;
	if (!v) {
		free(k);
		p->failed = 1;
		return;
	}
	memcpy(k, key.dptr, (size_t)key.dsize);
	memcpy(v, value.dptr, (size_t)value.dsize);
	d[p->n].dptr = k;
	d[p->n++].dsize = key.dsize;
	d[p->n].dptr = v;
	d[p->n++].dsize = value.dsize;
}

/* cmp_key - the dump's order of two keys (of key-value pairs): the
 * notes first (load needs the key kind before the records), then
 * bytewise */
static int cmp_key(const void *a, const void *b)
{
	const datum *x = a, *y = b;
	int c = (y->dptr[0] == 'M') - (x->dptr[0] == 'M');

	if (!c)
		c = memcmp(x->dptr, y->dptr, (size_t)(x->dsize < y->dsize
						      ? x->dsize : y->dsize));
	return c ? c : (x->dsize > y->dsize) - (x->dsize < y->dsize);
}

/* The key kind as a dump shows it: "plain", or "hmac-sha256:" and the
 * secret in hex. */
#define KIND_HMAC	"hmac-sha256:"

/* print_kind - the value of the key-kind note, as text */
static void print_kind(datum value)
{
	struct key_kind kk;
	size_t i;

	if (key_kind_parse(value, &kk) != 0) {
		print_escaped(value.dptr, (size_t)value.dsize);
		return;
	}
	(void)fputs(kk.hashed ? KIND_HMAC : "plain", stdout);
	for (i = 0; kk.hashed && i < sizeof(kk.secret); i++)
		printf("%02x", kk.secret[i]);
}

/* dump_record - one record as one line (see the dump format in main) */
static void dump_record(datum key, datum value)
{
	struct rec r;
	size_t skip;
	int i;

	rec_split(key, value, &r);
	putchar(r.kind);
	if (r.kind == 'M' && key.dsize == note_key(NOTE_KEYS).dsize
	    && memcmp(key.dptr, note_key(NOTE_KEYS).dptr, (size_t)key.dsize)
	    == 0) {
		(void)fputs(" keys ", stdout);
		print_kind(value);
	} else if (r.kind == 'X' || r.kind == 'M') {
		putchar(' ');
		print_escaped(r.kind == 'M' ? r.part[0] : key.dptr, r.kind == 'M'
			      ? r.len[0] : (size_t)key.dsize);
		putchar(' ');
		skip = r.kind == 'M' && value.dsize > 2 ? 2 : 0;
		print_escaped(value.dptr + skip, (size_t)value.dsize - skip);
	} else if (r.kind == 'T') {
		for (i = 0; i < T_FIELDS; i++)
			print_time(r.f[i]);
	} else {
		printf(" %lld", r.f[C_COUNT]);
		print_time(r.f[C_LAST]);
	}
	for (i = 0; i < r.nparts && (r.kind == 'T' || r.kind == 'C'); i++) {
		putchar(' ');
		print_escaped(r.part[i], r.len[i]);
	}
	putchar('\n');
}

/* dump_copy - print every record of a copy, sorted by key; -1 when the
 * copy could not be read whole (said) */
static int dump_copy(struct snap *s)
{
	struct pairs p = { NULL, 0, 0, 0 };
	size_t i;
	int rc = 0;

	if (walk_said(s->dbf, collect, &p) < 0 || p.failed) {
		if (p.failed)
			say("out of memory");
		rc = -1;
	}
	qsort(p.d, p.n / 2, 2 * sizeof(*p.d), cmp_key);
	if (rc == 0) {
		printf("# greylistd dump 2: T FIRST LAST PASSED NET SENDER"
		       " RECIPIENT | C COUNT LAST CLIENT | M NAME VALUE |"
		       " X KEY VALUE; times %s\n", opt_raw ? "in Unix seconds"
		       : "ISO 8601 UTC, - for none");
		for (i = 0; i < p.n; i += 2)
			dump_record(p.d[i], p.d[i + 1]);
	}
	for (i = 0; i < p.n; i++)
		free(p.d[i].dptr);
	free(p.d);
	return rc;
}

/* recover_copy - gdbm_recover the private copy (the database itself is
 * left alone); 0 when every record GDBM counted was recovered */
static int recover_copy(struct snap *s)
{
	gdbm_recovery rcvr;
	gdbm_count_t before = 0, after = 0;
	int counted;

	if (s->dbf)
		gdbm_close(s->dbf);
	s->dbf = gdbm_open(s->file, 0, GDBM_WRITER | GDBM_NOLOCK | GDBM_NOMMAP,
			   0600, NULL);
	if (!s->dbf) {
		say("%s cannot be recovered: %s", cfg.db_path,
		    gdbm_strerror(gdbm_errno));
		return -1;
	}
	counted = gdbm_count(s->dbf, &before) == 0;
	memset(&rcvr, 0, sizeof(rcvr));
	if (gdbm_recover(s->dbf, &rcvr, GDBM_RCVR_FORCE) != 0
	    || gdbm_count(s->dbf, &after) != 0) {
		say("%s cannot be recovered: %s", cfg.db_path,
		    gdbm_strerror(gdbm_errno));
		return -1;
	}
	say("%s is damaged: dumping what a recovery of a copy kept: %llu"
	    " records%s%llu%s; the file itself is unchanged (greylistctl"
	    " repair mends it)", cfg.db_path, (unsigned long long)after,
	    counted ? ", of " : "", counted ? (unsigned long long)before : 0,
	    counted ? " GDBM counted before" : "");
	return counted && after >= before && !rcvr.failed_keys
		&& !rcvr.failed_buckets ? 0 : 1;
}

/* nothing - a walk that only counts */
static void nothing(datum key, datum value, void *arg)
{
	(void)key;
	(void)value;
	(void)arg;
}

/* cmd_dump - every record as one line of text. A damaged file is an
 * error; with --recover, a recovered copy is dumped, and the exit status
 * is 0 only when nothing was lost. */
static int cmd_dump(void)
{
	struct snap s;
	enum snap_status st = snap_take(&s);
	int rc = 1, partial;

	if (st == SNAP_OK && walk(s.dbf, nothing, NULL) < 0)
		st = SNAP_DAMAGED;
	if (st == SNAP_DAMAGED && !opt_recover)
		say("%s is damaged: no dump written (greylistctl dump --recover"
		    " dumps what can be saved; greylistctl repair mends it)",
		    cfg.db_path);
	else if (st == SNAP_DAMAGED && (partial = recover_copy(&s)) >= 0)
		rc = dump_copy(&s) == 0 ? partial : 1;
	else if (st == SNAP_OK)
		rc = dump_copy(&s) == 0 ? 0 : 1;
	else if (st == SNAP_ABSENT && redis_in_use())
		say("%s: no records of greylistd's there (none has been"
		    " written yet)", redis_where());
	else if (st == SNAP_ABSENT)
		say("%s: no database there (none has been written yet, or --db"
		    " names the wrong file)", cfg.db_path);
	snap_free(&s);
	return rc || flush_stdout() ? 1 : 0;
}

/*
 * Batches of records, written in slices.
 */

/* A writer holds the lock at most this long at a time, then pauses so
 * that waiting requests get it: no request waits long for maintenance. */
#define SLICE_MS	40
#define SLICE_PAUSE_MS	10

struct batch {
	datum *d;
	size_t n, cap;
};

/* gcc 12's analyzer loses a copy stored into an array on the heap and
 * reports it leaked at the caller; batch_free frees them. */
ANALYZER_LEAK_OFF

/* batch_add - keep a copy of a datum; -1 without memory */
static int batch_add(struct batch *b, datum x)
{
	datum *d = grow(b->d, &b->cap, b->n + 1, sizeof(*d));
	char *copy;

	if (!d)
		return -1;
	b->d = d;		/* grow may have moved it */
	if (!(copy = malloc((size_t)x.dsize + 1)))
		return -1;
	memcpy(copy, x.dptr, (size_t)x.dsize);
	b->d[b->n].dptr = copy;
	b->d[b->n++].dsize = x.dsize;
	return 0;
}
ANALYZER_LEAK_ON

/* batch_free - forget the collected data */
static void batch_free(struct batch *b)
{
	while (b->n > 0)
		free(b->d[--b->n].dptr);
	free(b->d);
	memset(b, 0, sizeof(*b));
}

/* pause_ms - let waiting requests take the lock */
static void pause_ms(long ms)
{
	struct timespec ts = { 0, ms * 1000000 };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* in_slices - op(db, i, arg) for each i < n under the writer lock, at
 * most SLICE_MS at a time with a pause between; -1 on a fault (said in
 * db->why, and on stderr when "loud") */
static int in_slices(size_t n, int (*op)(struct db *, size_t, void *),
		     void *arg, int loud)
{
	struct timespec deadline, start;
	struct db db;
	size_t i = 0;

	while (i < n) {
		deadline = deadline_in(CTL_LOCK_WAIT);
		if (db_open(&db, 1, &deadline) != DB_OK) {
			db_close(&db);
			if (loud)
				say("%s", *db.why ? db.why : "the database is"
				    " damaged: run greylistctl repair");
			return -1;
		}
		start = now_mono();
		for (; i < n && elapsed_ms(&start) < SLICE_MS; i++)
			if (op(&db, i, arg) != 0) {
				if (loud)
					say("%s", db.why);
				db_close(&db);
				return -1;
			}
		if (db_close(&db) != 0) {
			if (loud)
				say("%s", db.why);
			return -1;
		}
		if (i < n && !db.redis)	/* Redis has no lock to yield */
			pause_ms(SLICE_PAUSE_MS);
	}
	return 0;
}

/*
 * load: a dump back into the database.
 */

/* Records that load reads with the database closed, then writes under
 * the writer lock: input that pauses (a pipe) never holds the lock. */
#define LOAD_BATCH	4000

/* A dump line: a kind, up to three times, up to three escaped parts,
 * each up to a value escaped fourfold. */
#define MAX_DUMP_LINE	(3 * 4 * MAX_LINE + 256)

/* What load knows of the dump's keys and of the file's. */
struct loader {
	int version;			/* the dump's format: 1 or 2 */
	struct key_kind dump, file;
	int dump_known, file_known, file_new;
	unsigned long line;
	size_t loaded, bad;
	struct batch keys, vals;
	struct pg_import *pg;		/* --from-postgrey, or NULL: stdin */
};

/* unescape - a dump field back into bytes ("<>" is empty); -1 if bad */
static int unescape(const char *s, char *out, size_t size, size_t *len)
{
	size_t o = 0;
	unsigned v, i;

	if (strcmp(s, "<>") == 0)
		s = "";
	for (; *s; s++) {
		if (o + 1 >= size)
			return -1;
		if (*s != '\\') {
			out[o++] = *s;
			continue;
		}
		if (s[1] != 'x' || !isxdigit((unsigned char)s[2])
		    || !isxdigit((unsigned char)s[3]))
			return -1;
		for (v = 0, i = 2; i < 4; i++)
			v = v * 16 + (unsigned)(isdigit((unsigned char)s[i])
						? s[i] - '0'
						: (s[i] | 32) - 'a' + 10);
		out[o++] = (char)v;
		s += 3;
	}
	out[o] = 0;
	*len = o;
	return 0;
}

/* parse_dump_time - a dump's time: Unix seconds, ISO 8601 UTC
 * ("2026-11-29T10:03:36Z"), or "-" (0: none); -1 if bad */
static int parse_dump_time(const char *s, long long *t)
{
	struct tm tm;
	const char *end;
	char *e;

	if (strcmp(s, "-") == 0) {
		*t = 0;
		return 0;
	}
	if (isdigit((unsigned char)*s) && !strchr(s, '-')) {
		errno = 0;
		*t = strtoll(s, &e, 10);
		return errno || *e || *t < 0 || *t > MAX_TIME ? -1 : 0;
	}
	memset(&tm, 0, sizeof(tm));
	end = strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm);
	if (!end || *end)
		return -1;
	*t = (long long)timegm(&tm);
	return *t < 0 || *t > MAX_TIME ? -1 : 0;
}

/* canonical_address - text is an IP address written as greylistd writes
 * it (inet_ntop's form) */
static int canonical_address(const char *text)
{
	char back[INET6_ADDRSTRLEN];
	unsigned char a[16];
	int family;

	return parse_address(text, &family, a) == 0
		&& inet_ntop(family, a, back, sizeof(back))
		&& strcmp(back, text) == 0;
}

/* check_part - a plain key part is what the server would have made */
static const char *check_part(char kind, size_t i, const char *p)
{
	static char norm[MAX_LINE + 1];

	if (strlen(p) > MAX_LINE)
		return "a field longer than a request value";
	if (i == 0 && !canonical_address(p))
		return kind == 'T' ? "the network is not an IP address in"
			" canonical form" : "the client is not an IP address"
			" in canonical form";
	if (kind == 'T' && i == 1)
		normalise_sender(norm, p);
	if (kind == 'T' && i == 2)
		lower(norm, p);
	if (kind == 'T' && i > 0 && strcmp(norm, p) != 0)
		return i == 1 ? "the sender is not normalised as greylistd"
			" stores it" : "the recipient is not in lower case";
	return NULL;
}

/* settle_kinds - before the first record: the dump's key kind (plain
 * unless its note said otherwise) and the file's (its own, or for a new
 * file the dump's or the configured one); NULL, or why the dump cannot
 * go into this file */
static const char *settle_kinds(struct loader *l)
{
	if (!l->dump_known)
		key_kind_new(&l->dump, 0);
	l->dump_known = 1;
	if (!l->file_known && l->dump.hashed)
		l->file = l->dump;
	else if (!l->file_known && key_kind_new(&l->file, cfg.privacy != 0))
		return "no random bytes for the --privacy secret";
	l->file_new |= !l->file_known;
	l->file_known = 1;
	if (l->file.hashed != (cfg.privacy != 0))
		return l->file.hashed ? "the keys are hashed but privacy is off"
			" (set privacy = yes)" : "the database holds plain keys"
			" but privacy is on";
	if (l->dump.hashed && !l->file.hashed)
		return "a dump of hashed keys cannot go into a file of plain"
			" keys";
	if (l->dump.hashed && memcmp(l->dump.secret, l->file.secret,
				     sizeof(l->file.secret)) != 0)
		return "the dump's keys are digests under another file's"
			" secret: they cannot be read in this file";
	return NULL;
}

/* hexval - one hex digit's value (is_digest checked it) */
static unsigned hexval(char c)
{
	return (unsigned)(c <= '9' ? c - '0' : c - 'a' + 10);
}

/* load_kind - the dump's key-kind note (it comes before its records) */
static const char *load_kind(struct loader *l, char *value, size_t len,
			     int *fatal)
{
	const char *hex = value + strlen(KIND_HMAC), *why;
	size_t i;

	*fatal = 1;
	if (l->dump_known)
		return "the key-kind note comes after records";
	memset(&l->dump, 0, sizeof(l->dump));
	if (strcmp(value, "plain") != 0
	    && (strncmp(value, KIND_HMAC, strlen(KIND_HMAC)) != 0
		|| len != strlen(KIND_HMAC) + 64 || !is_digest(hex, 64)))
		return "the key-kind note is neither plain nor"
			" hmac-sha256:SECRET";
	l->dump.hashed = *value == 'h';
	for (i = 0; l->dump.hashed && i < sizeof(l->dump.secret); i++)
		l->dump.secret[i] = (unsigned char)(hexval(hex[2 * i]) << 4
						    | hexval(hex[2 * i + 1]));
	l->dump_known = 1;
	why = settle_kinds(l);
	*fatal = why != NULL;	/* load_read keeps it for the later lines */
	return why;
}

/* load_note - "M NAME VALUE" ("M VALUE NAME" in a dump of version 1): a
 * note greylistd keeps (the key kind is the file's, see load_kind) */
static const char *load_note(struct loader *l, char **w, size_t nw,
			     int *fatal)
{
	char name[64], value[MAX_RECORD] = { 0 };
	long long v;
	size_t len, i;

	if (nw != 3 || unescape(w[l->version == 1 ? 2 : 1], name, sizeof(name),
				&len) != 0
	    || unescape(w[l->version == 1 ? 1 : 2], value + 2,
			sizeof(value) - 2, &len) != 0)
		return "a note is M NAME VALUE";
	for (i = 0; i < NOTE_COUNT && strcmp(name, note_names[i]) != 0; i++)
		;
	if (i == NOTE_KEYS)
		return load_kind(l, value + 2, len, fatal);
	if (i == NOTE_COUNT || parse_dump_time(value + 2, &v) != 0)
		return "not a note greylistd keeps";
	len = (size_t)snprintf(value, sizeof(value), "1 %lld", v);
	if (batch_add(&l->keys, note_key((enum note)i)) != 0
	    || batch_add(&l->vals, (datum){ value, (int)len }) != 0) {
		*fatal = 1;
		return "out of memory";
	}
	return NULL;
}

/* load_number - a dump's count: a decimal number up to MAX_AWL_COUNT */
static int load_number(const char *s, long long *v)
{
	char *end;

	errno = 0;
	*v = strtoll(s, &end, 10);
	return !isdigit((unsigned char)*s) || errno || *end || *v > MAX_AWL_COUNT
		? -1 : 0;
}

/* load_record - a T or C record's numbers and parts into a key and a
 * value, checked as the server would have made them. A plain record goes
 * into a hashed file as a digest under its secret. */
static const char *load_record(struct loader *l, char kind, const long long *f,
			       const char *const *parts, size_t np, datum *k,
			       datum *v)
{
	static char key[MAX_KEY], val[MAX_RECORD];
	size_t plain = kind == 'T' ? 3 : 1, i;
	int digest = np == 1 && is_digest(parts[0], strlen(parts[0]));
	long long scratch[T_FIELDS];
	const char *why;

	if (np != plain && !digest)
		return "wrong number of fields";
	if (digest && !l->dump.hashed)
		return "a digest in a dump of plain keys";
	for (i = 0; !digest && i < np; i++)
		if ((why = check_part(kind, i, parts[i])))
			return why;
	if (record_key(kind, parts, np, digest ? NULL : &l->file, key,
		       sizeof(key), k) != 0)
		return "too long";
	*v = record_encode(val, sizeof(val), f, kind == 'T' ? T_FIELDS
			   : C_FIELDS);
	if (kind == 'T' && !triplet_record(*v, scratch))
		return "times out of order";
	return NULL;
}

/* load_fields - the numbers and parts of a T or C line into a key and a
 * value (load_record) */
static const char *load_fields(struct loader *l, char kind, char **w,
			       size_t nw, datum *k, datum *v)
{
	static char part[3][MAX_LINE * 4 + 1];
	int nf = kind == 'T' ? T_FIELDS : C_FIELDS, count;
	size_t plain = kind == 'T' ? 3 : 1, np = nw - 1 - (size_t)nf, i, len = 0;
	long long f[T_FIELDS];
	const char *parts[3];

	if (nw < 2 + (size_t)nf || (np != plain && np != 1))
		return "wrong number of fields";
	for (i = 0; i < (size_t)nf; i++) {
		count = kind == 'C' && i == C_COUNT;
		if (count ? load_number(w[1 + i], &f[i]) != 0
		    : parse_dump_time(w[1 + i], &f[i]) != 0)
			return "bad time or number";
	}
	for (i = 0; i < np; i++) {
		if (unescape(w[1 + (size_t)nf + i], part[i], sizeof(part[i]),
			     &len) != 0 || memchr(part[i], '\n', len)
		    || strlen(part[i]) != len)
			return "bad escape, newline or NUL in a field";
		parts[i] = part[i];
	}
	if (np != plain && !(np == 1 && is_digest(part[0], len)))
		return "wrong number of fields";
	return load_record(l, kind, f, parts, np, k, v);
}

/* split - the line's space-separated words, at most max (then -1) */
static int split(char *line, char **w, int max)
{
	char *save = NULL, *p;
	int n = 0;

	for (p = strtok_r(line, " ", &save); p; p = strtok_r(NULL, " ", &save))
		if (n < max)
			w[n++] = p;
		else
			return -1;
	return n;
}

/* load_line - one dump line: a record into the batch, a note, or a
 * comment; NULL, or what is wrong with it (*fatal: the whole load) */
static const char *load_line(struct loader *l, char *line, int *fatal)
{
	char *w[8];
	const char *why;
	datum k, v;
	int nw;

	if (line[0] == '#') {
		if (l->line == 1 && strncmp(line, "# greylistd dump 1", 18) == 0)
			l->version = 1;
		return NULL;
	}
	if (!line[0])
		return NULL;
	if ((nw = split(line, w, 8)) < 0)
		return "too many fields";
	if (nw == 0)
		return NULL;		/* spaces only */
	if (strlen(w[0]) != 1 || !strchr("TCMX", w[0][0]))
		return "not a record (T, C or M)";
	if (w[0][0] == 'X')
		return "a record of no known shape (X): not loaded";
	if (w[0][0] == 'M')
		return load_note(l, w, (size_t)nw, fatal);
	if (!l->dump_known && (why = settle_kinds(l))) {
		*fatal = 1;
		return why;
	}
	if ((why = load_fields(l, w[0][0], w, (size_t)nw, &k, &v)))
		return why;
	if (batch_add(&l->keys, k) != 0 || batch_add(&l->vals, v) != 0) {
		*fatal = 1;
		return "out of memory";
	}
	return NULL;
}

/* load_postgrey - the next record of postgrey's into the batch: 0, 1
 * at the end, -1 on a fatal error (said) */
static int load_postgrey(struct loader *l)
{
	struct pg_record r;
	const char *why;
	datum k, v;
	int rc = pg_next(l->pg, &r);

	if (rc <= 0)
		return rc == 0 ? 1 : -1;
	if (!l->dump_known && (why = settle_kinds(l))) {
		say("%s", why);
		return -1;
	}
	if ((why = load_record(l, r.kind, r.f, r.part, r.nparts, &k, &v))) {
		pg_bad(l->pg, why);
		return 0;
	}
	if (batch_add(&l->keys, k) != 0 || batch_add(&l->vals, v) != 0) {
		say("out of memory");
		return -1;
	}
	return 0;
}

/* load_read - parse up to LOAD_BATCH records of stdin (or of postgrey's
 * database); 1 at the end of the input, -1 on a fatal error */
static int load_read(struct loader *l)
{
	static char line[MAX_DUMP_LINE + 2];
	const char *why;
	size_t len;
	int c, fatal = 0;

	while (l->keys.n < LOAD_BATCH) {
		if (l->pg && (c = load_postgrey(l)) != 0)
			return c;
		if (l->pg)
			continue;
		if (!fgets(line, sizeof(line), stdin)) {
			if (!ferror(stdin))
				return 1;
			say("reading stdin: %s", strerror(errno));
			return -1;
		}
		l->line++;
		len = strlen(line);
		if (len > 0 && line[len - 1] == '\n') {
			line[--len] = 0;
		} else if (!feof(stdin)) {
			say("stdin:%lu: line too long", l->line);
			l->bad++;
			while ((c = getchar()) != EOF && c != '\n')
				;
			continue;
		}
		if ((why = load_line(l, line, &fatal)) && fatal) {
			say("stdin:%lu: %s", l->line, why);
			return -1;
		}
		if (why) {
			say("stdin:%lu: %s", l->line, why);
			l->bad++;
		}
	}
	return 0;
}

/* store_one - in_slices' step for load: store record i */
static int store_one(struct db *db, size_t i, void *arg)
{
	struct loader *l = arg;

	return db_store(db, l->keys.d[i], l->vals.d[i]);
}

/* load_kind_note - a new file gets its key-kind note before its first
 * record, unless a process made one meanwhile; -1 when that one differs */
static int load_kind_note(struct loader *l)
{
	struct timespec deadline = deadline_in(CTL_LOCK_WAIT);
	struct key_kind kk;
	struct db db;
	int present, rc;

	if (db_open(&db, 1, &deadline) != DB_OK) {
		say("%s", *db.why ? db.why : "the database is damaged: run"
		    " greylistctl repair");
		db_close(&db);
		return -1;
	}
	rc = key_kind_read(&db, &kk, &present);
	if (rc == 0 && !present)
		rc = key_kind_write(&db, &l->file);
	else if (rc == 0 && (kk.hashed != l->file.hashed
			     || memcmp(kk.secret, l->file.secret,
				       sizeof(kk.secret)) != 0)) {
		db_fault(&db, "another process gave %s other keys meanwhile",
			 store_name());
		rc = -1;
	}
	if (rc != 0)
		say("%s", db.why);
	if (db_close(&db) != 0 && rc == 0) {
		say("%s", db.why);
		rc = -1;
	}
	l->file_new = 0;
	return rc;
}

/* own_new_file - the database file, when root makes it here, takes the
 * owner of its directory, and the directory's read and write bits for
 * owner and group: the service, not root, must own it. -1 when it
 * cannot (said). */
static int own_new_file(const char *path)
{
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/');
	size_t len = !slash ? 0 : slash == path ? 1 : (size_t)(slash - path);
	struct stat d;

	int fd, rc = 0;

	if (geteuid() != 0 || len >= sizeof(dir))
		return 0;
	memcpy(dir, len ? path : ".", len ? len : 1);
	dir[len ? len : 1] = 0;
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY
		  | O_NONBLOCK, 0600);
	if (fd < 0)
		return 0;	/* there already, or db_open will say why not */
	if (stat(dir, &d) != 0 || fchown(fd, d.st_uid, d.st_gid) != 0
	    || fchmod(fd, d.st_mode & 0660) != 0) {
		say("%s: cannot give it the owner of %s: %s", path, dir,
		    strerror(errno));
		unlink(path);
		rc = -1;
	}
	close(fd);
	return rc;
}

/* load_file_kind - what the database says of its keys before loading */
static int load_file_kind(struct loader *l)
{
	struct timespec deadline = deadline_in(CTL_LOCK_WAIT);
	struct db db;
	int present = 0, rc = 0;

	switch (db_open(&db, 0, &deadline)) {
	case DB_ABSENT:
		return 0;
	case DB_OK:
		rc = key_kind_read(&db, &l->file, &present);
		l->file_known = present;
		break;
	case DB_DAMAGED:
		snprintf(db.why, sizeof(db.why), "%s is damaged: run greylistctl"
			 " repair", cfg.db_path);
		rc = -1;
		break;
	case DB_FAULT:
		rc = -1;
		break;
	}
	if (rc != 0)
		say("%s", db.why);
	db_close(&db);
	return rc;
}

/* cmd_load - read a dump from stdin (or, --from-postgrey, postgrey's
 * database: postgrey.c) into the database (new or not); a record
 * replaces one with the same key. Bad lines are reported and skipped,
 * and make the exit status 1. A serving database keeps answering
 * meanwhile. */
static int cmd_load(void)
{
	static struct loader l = { .version = 2 };
	int end = 0, rc = load_file_kind(&l);

	if (rc == 0 && opt_from_postgrey && !(l.pg = pg_open(opt_from_postgrey)))
		rc = -1;
	if (rc == 0 && !redis_in_use())
		rc = own_new_file(cfg.db_path);
	while (rc == 0 && !end) {
		end = load_read(&l);
		if (end < 0 || (l.keys.n && l.file_new && load_kind_note(&l))
		    || (l.keys.n && in_slices(l.keys.n, store_one, &l, 1) != 0))
			rc = -1;
		else
			l.loaded += l.keys.n;
		batch_free(&l.keys);
		batch_free(&l.vals);
	}
	if (l.pg && pg_close(l.pg, l.loaded) != 0)
		rc = -1;
	else if (!l.pg && !opt_from_postgrey)
		printf("%zu records loaded, %zu bad lines\n", l.loaded, l.bad);
	return rc || l.bad || flush_stdout() ? 1 : 0;
}

/*
 * Maintenance: repair, expiry, reorganization.
 */


/* move_aside - rename a file GDBM cannot open out of the way (the caller
 * holds its exclusive lock), so that the next request starts a fresh
 * one; -1 if it cannot */
static int move_aside(const char *why, FILE *out)
{
	char aside[PATH_MAX], stamp[32];

	format_time(stamp, sizeof(stamp), TS_FILE, time(NULL));
	if (snprintf(aside, sizeof(aside), "%s.damaged-%s-%ld", cfg.db_path,
		     stamp, (long)getpid()) >= (int)sizeof(aside)
	    || rename(cfg.db_path, aside) != 0) {
		msg_error("database %s is damaged (%s) and cannot be moved"
			  " aside: %m", cfg.db_path, why);
		return -1;
	}
	msg_error("database %s is damaged (%s): moved to %s, starting a fresh"
		  " one", cfg.db_path, why, aside);
	if (out)
		(void)fprintf(out, "moved the damaged file to %s\n", aside);
	return 0;
}

/* recover - gdbm_recover the locked file (GDBM copies what it can read
 * into a new file, renamed over the old one, and keeps the damaged file
 * as a backup); what was kept and lost is counted before and after */
static int recover(struct db *db, FILE *out)
{
	gdbm_count_t before = 0, after = 0;
	gdbm_recovery rcvr;
	int counted = gdbm_count(db->dbf, &before) == 0;
	char lost[80];

	memset(&rcvr, 0, sizeof(rcvr));
	if (gdbm_recover(db->dbf, &rcvr, GDBM_RCVR_FORCE | GDBM_RCVR_BACKUP)
	    != 0)
		return move_aside(gdbm_strerror(gdbm_errno), out);
	if (gdbm_count(db->dbf, &after) != 0)
		after = (gdbm_count_t)rcvr.recovered_keys;
	if (counted)
		snprintf(lost, sizeof(lost), "%llu", before > after
			 ? (unsigned long long)(before - after) : 0ULL);
	else
		snprintf(lost, sizeof(lost), "an unknown number (GDBM could not"
			 " count the damaged file)");
	msg_warn("database %s recovered: %llu records after, %s lost; the"
		 " damaged file is kept as %s", cfg.db_path,
		 (unsigned long long)after, lost, rcvr.backup_name
		 ? rcvr.backup_name : "(no backup)");
	if (out)
		(void)fprintf(out, "recovered: %llu records kept, %s lost; the"
			      " damaged file is kept as %s\n",
			      (unsigned long long)after, lost, rcvr.backup_name
			      ? rcvr.backup_name : "(no backup)");
	free(rcvr.backup_name);
	return 0;
}

/* repair - make the file whole: recover it, or move it aside when GDBM
 * cannot open it. A file GDBM opens without complaint is walked for a
 * damaged bucket first (under the writer lock), unless "known": the
 * caller has just read one. 0 whole or repaired, -1 not. */
static int repair(int known, FILE *out)
{
	struct timespec deadline = deadline_in(CTL_LOCK_WAIT);
	struct db db;
	int rc = 0;

	switch (db_open(&db, 1, &deadline)) {
	case DB_OK:
		if (!known && walk(db.dbf, nothing, NULL) >= 0) {
			if (out)
				(void)fprintf(out, "%s is whole\n", cfg.db_path);
			break;
		}
		__attribute__((fallthrough));	/* a bucket GDBM cannot read */
	case DB_DAMAGED:
		rc = db.dbf ? recover(&db, out) : move_aside(db.why, out);
		break;
	case DB_ABSENT:
	case DB_FAULT:
		msg_warn("database repair: %s", db.why);
		if (out)
			say("%s", db.why);
		rc = -1;
	}
	db_close(&db);
	return rc;
}

/* Expired keys collected in one pass over the database before they are
 * deleted (about 100 bytes each): a bigger backlog takes several passes. */
#define EXPIRE_MAX_KEYS	200000

/* Why the last expiry pass stopped, and whether the file is damaged. */
static char expire_why[200];
static int expire_damage;

/* scan_start - the first key of a slice: the file's first, or the key
 * the last slice stopped at (which must still be there: GDBM can only go
 * on from a key it has) */
static datum scan_start(struct db *db, datum cursor, int *rc)
{
	datum value;

	if (!cursor.dptr)
		return gdbm_firstkey(db->dbf);
	value = gdbm_fetch(db->dbf, cursor);
	if (!value.dptr) {
		*rc = -1;
		return (datum){ NULL, 0 };
	}
	free(value.dptr);
	return cursor;
}

/* scan_fault - why a scan stopped, and whether it found damage */
static void scan_fault(struct db *db)
{
	snprintf(expire_why, sizeof(expire_why), "%s",
		 gdbm_errno == GDBM_ITEM_NOT_FOUND
		 ? "its place vanished: the file changed under it"
		 : gdbm_strerror(gdbm_errno));
	expire_damage |= gdbm_needs_recovery(db->dbf) || is_damage(gdbm_errno);
}

ANALYZER_LEAK_OFF	/* see batch_add */

/* expire_scan - under one shared lock for at most SLICE_MS, visit keys
 * from *cursor (NULL: the first) and collect the expired ones, up to
 * EXPIRE_MAX_KEYS. *cursor becomes the next key to visit, or NULL at the
 * end. -1 on a fault. */
static int expire_scan(datum *cursor, struct batch *b, long long now,
		       size_t *visited)
{
	struct timespec deadline = deadline_in(CTL_LOCK_WAIT), start;
	datum key, value, next;
	struct db db;
	int rc = 0;

	switch (db_open(&db, 0, &deadline)) {
	case DB_OK:
		break;
	case DB_ABSENT:
		return 0;		/* nothing to expire */
	case DB_DAMAGED:
		expire_damage = 1;
		/* fall through */
	case DB_FAULT:
		snprintf(expire_why, sizeof(expire_why), "%s", *db.why
			 ? db.why : "the file is damaged");
		db_close(&db);
		return -1;
	}
	start = now_mono();
	key = scan_start(&db, *cursor, &rc);
	*cursor = (datum){ NULL, 0 };
	for (; rc == 0 && key.dptr; key = next) {
		if (b->n >= EXPIRE_MAX_KEYS || elapsed_ms(&start) >= SLICE_MS) {
			*cursor = key;
			break;
		}
		value = gdbm_fetch(db.dbf, key);
		if (!value.dptr || (expired(key, value, now)
				    && batch_add(b, key) != 0))
			rc = -1;
		free(value.dptr);
		(*visited)++;
		next = gdbm_nextkey(db.dbf, key);
		free(key.dptr);
	}
	if (key.dptr && key.dptr != cursor->dptr)
		free(key.dptr);		/* a fault stopped the walk */
	if (rc == 0 && !key.dptr && gdbm_errno != GDBM_ITEM_NOT_FOUND
	    && gdbm_errno != GDBM_NO_ERROR)
		rc = -1;
	if (rc != 0)
		scan_fault(&db);
	db_close(&db);
	return rc;
}
ANALYZER_LEAK_ON

/* One expiry run: the keys collected by a pass, and its counts. */
struct expiry {
	struct batch b;
	long long now;
	size_t visited, deleted;
};

/* delete_one - in_slices' step for expiry: delete key i if it is still
 * expired (a request may have refreshed it since the scan) */
static int delete_one(struct db *db, size_t i, void *arg)
{
	struct expiry *x = arg;
	datum value = gdbm_fetch(db->dbf, x->b.d[i]);

	if (value.dptr && expired(x->b.d[i], value, x->now)
	    && gdbm_delete(db->dbf, x->b.d[i]) == 0)
		x->deleted++;
	free(value.dptr);
	return 0;
}

/* A pass reorganizes the file when the records left are at most
 * 1/REORG_RATIO of the most it has held since it was last reorganized
 * (the note "peak", which each pass raises), and at least REORG_MIN
 * records' room is free: GDBM reuses freed room for new records, so a
 * file whose records come and go at the same pace never needs it, but
 * after a flood has expired most of the file is empty for good. */
#define REORG_RATIO	2
#define REORG_MIN	1000

/* The copy holds the exclusive lock throughout, about 2 us a record on
 * the test machine (50,000: 80 ms; 1,000,000: 2 s). The daily pass, which
 * requests may be waiting on, reorganizes files of at most this many
 * records and logs what to run for a bigger one; `greylistctl expire`,
 * run by hand at a quiet time, reorganizes at any size. */
#define REORG_AUTO_MAX	50000

/* Room asked for a reorganized copy beyond its share of the file. */
#define COPY_MARGIN	(64 << 10)

/* room_for_copy - the file system has room for a copy of the live
 * records: their share of the file, estimated as live/peak of its size,
 * and a margin. A wrong guess costs a failed copy, never a record. */
static int room_for_copy(int fd, const struct stat *st, size_t live,
			 long long peak)
{
	unsigned long long need;
	struct statvfs v;

	need = (unsigned long long)st->st_size / (unsigned long long)peak
		* live + COPY_MARGIN;
	return fstatvfs(fd, &v) == 0
		&& (unsigned long long)v.f_bavail * v.f_frsize > need;
}

/* copy_records - every record of one file into another; the count, or
 * -1 on a fault */
static long long copy_records(GDBM_FILE from, GDBM_FILE to)
{
	datum key = gdbm_firstkey(from), next, value;
	long long n = 0;

	while (key.dptr) {
		value = gdbm_fetch(from, key);
		if (!value.dptr || gdbm_store(to, key, value, GDBM_INSERT) != 0)
			n = -1;
		else
			n++;
		free(value.dptr);
		next = n < 0 ? (datum){ NULL, 0 } : gdbm_nextkey(from, key);
		free(key.dptr);
		key = next;
	}
	if (n >= 0 && gdbm_errno != GDBM_ITEM_NOT_FOUND
	    && gdbm_errno != GDBM_NO_ERROR)
		n = -1;
	return n;
}

/* new_like - a new, locked file of the old one's owner and mode, under a
 * name of our own; the descriptor, or -1 */
static int new_like(const char *tmp, int old)
{
	struct stat st;
	int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY,
		      0600);

	if (fd < 0)
		return -1;
	if (fstat(old, &st) != 0
	    || (fchown(fd, st.st_uid, st.st_gid) != 0 && errno != EPERM)
	    || (st.st_uid != geteuid() && geteuid() != 0)
	    || fchmod(fd, st.st_mode & 07777) != 0
	    || flock(fd, LOCK_EX | LOCK_NB) != 0) {
		close(fd);
		unlink(tmp);
		return -1;
	}
	return fd;
}

/* reorganize_copy - under the old file's writer lock: copy its records
 * into "<db>.reorganize-PID" (a name of our own, removed if anything
 * fails), synced, with the old file's owner and mode, locked until it
 * has been renamed over the old one. Requests that waited on the old
 * file's lock find the new one by db_lock_fd's inode check. */
static int reorganize_copy(struct db *old, long long *records)
{
	char tmp[PATH_MAX];
	GDBM_FILE to = NULL;
	int fd, err;

	snprintf(tmp, sizeof(tmp), "%s.reorganize-%ld", cfg.db_path,
		 (long)getpid());
	fd = new_like(tmp, gdbm_fdesc(old->dbf));
	if (fd >= 0)
		to = gdbm_fd_open(fd, tmp, 0, GDBM_NEWDB | GDBM_NOLOCK
				  | GDBM_NOMMAP | GDBM_CLOEXEC | GDBM_CLOERROR,
				  NULL);
	if (!to || (*records = copy_records(old->dbf, to)) < 0
	    || gdbm_sync(to) != 0 || rename(tmp, cfg.db_path) != 0) {
		err = to && gdbm_last_syserr(to) ? gdbm_last_syserr(to)
			: errno ? errno : EIO;
		snprintf(old->why, sizeof(old->why), "%s", strerror(err));
		if (to)
			gdbm_close(to);
		unlink(tmp);
		return -1;
	}
	return gdbm_close(to) == 0 ? 0 : -1;	/* lets the waiters in */
}

/* reorganize_now - copy the file when there is room; 1 when it was
 * copied, 0 when there was no room, -1 on a fault */
static int reorganize_now(size_t live, long long peak, FILE *out)
{
	struct timespec deadline = deadline_in(CTL_LOCK_WAIT), start;
	struct stat before, after;
	long long records = 0;
	struct db db;

	if (db_open(&db, 1, &deadline) != DB_OK) {
		db_close(&db);
		return -1;
	}
	start = now_mono();
	if (fstat(gdbm_fdesc(db.dbf), &before) != 0
	    || !room_for_copy(gdbm_fdesc(db.dbf), &before, live, peak)) {
		msg_warn("not reorganizing %s: no room for a copy of it",
			 cfg.db_path);
		db_close(&db);
		return 0;
	}
	if (reorganize_copy(&db, &records) != 0) {
		msg_warn("reorganizing %s failed (%s); the file is kept as it"
			 " was", cfg.db_path, db.why);
		db_close(&db);
		return -1;
	}
	db_close(&db);
	if (stat(cfg.db_path, &after) != 0)
		after.st_size = 0;
	msg_info("reorganized %s: %lld records, %lld KiB -> %lld KiB, %lld ms",
		 cfg.db_path, records, (long long)before.st_size / 1024,
		 (long long)after.st_size / 1024, elapsed_ms(&start));
	if (out)		/* the command's flush_stdout sees errors */
		(void)fprintf(out, "reorganized: %lld KiB -> %lld KiB\n",
			      (long long)before.st_size / 1024,
			      (long long)after.st_size / 1024);
	return 1;
}

/* note_rw - read a note's number and, if "set" is not -1, write it; the
 * old number (-1: none), or -2 on a fault */
static long long note_rw(enum note n, long long set)
{
	struct timespec deadline = deadline_in(CTL_LOCK_WAIT);
	struct db db;
	long long v = -2;

	if (db_open(&db, set >= 0, &deadline) == DB_OK) {
		v = note_get_number(&db, n);
		if (set >= 0 && note_put_number(&db, n, set) != 0)
			v = -2;
	}
	if (db_close(&db) != 0 && set >= 0)
		v = -2;
	return v;
}

/* reorganize - after a whole expiry pass that saw `seen` records and
 * left `live`: raise the peak, and reorganize when it pays (noting when,
 * in the note "reorganize", for stats). `out`: the
 * operator command's stdout, which also hears of it, and allows any
 * size; NULL in the daily pass. -1 on a fault. */
static int reorganize(size_t seen, size_t live, FILE *out)
{
	long long peak = note_rw(NOTE_PEAK, -1);
	int done;

	if (peak < -1)
		return -1;
	if ((long long)seen > peak && seen >= REORG_MIN) {
		peak = (long long)seen;
		if (note_rw(NOTE_PEAK, peak) < -1)
			return -1;
	}
	if (peak < (long long)live * REORG_RATIO
	    || peak - (long long)live < REORG_MIN)
		return 0;
	if (!out && live > REORG_AUTO_MAX) {
		msg_info("%s holds %zu records, room for %lld: to shrink it,"
			 " run `greylistctl expire` at a quiet time (requests"
			 " wait for it, about 2 s a million records)",
			 cfg.db_path, live, peak);
		return 0;
	}
	if ((done = reorganize_now(live, peak, out)) < 0
	    || (done && note_rw(NOTE_REORGANIZE, (long long)time(NULL)) < -1))
		return -1;
	return note_rw(NOTE_PEAK, (long long)live) < -1 ? -1 : 0;
}

/* expire_pass - one pass: visit every record in slices under the shared
 * lock and collect the expired keys; then delete them in slices under
 * the writer lock (GDBM's iteration skips keys when the table changes
 * under it). 1 when the pass stopped at EXPIRE_MAX_KEYS, 0 when whole,
 * -1 on a fault. */
static int expire_pass(struct expiry *x)
{
	datum cursor = { NULL, 0 };
	int rc, full;

	x->visited = 0;
	do {
		rc = expire_scan(&cursor, &x->b, x->now, &x->visited);
		full = x->b.n >= EXPIRE_MAX_KEYS;
		if (rc == 0 && cursor.dptr && !full)
			pause_ms(SLICE_PAUSE_MS);
	} while (rc == 0 && cursor.dptr && !full);
	free(cursor.dptr);
	if (rc == 0 && x->b.n && in_slices(x->b.n, delete_one, x, 0) != 0)
		rc = -1;
	batch_free(&x->b);
	return rc < 0 ? -1 : full;
}

/* expire - delete what has outlived its use (rule.c, expired()), then
 * reorganize when most of the file has become free. A key moved by
 * another process's insert during a pass may be missed until the next
 * run. -1 on a fault (expire_damage: the file is damaged). */
static int expire(long long now, FILE *out)
{
	struct expiry x = { .now = now };
	struct timespec start = now_mono();
	size_t seen = 0, before = 0;
	int rc = 1, pass;

	*expire_why = 0;
	expire_damage = 0;
	for (pass = 0; pass < 100 && rc == 1; pass++) {
		before = x.deleted;
		rc = expire_pass(&x);
		if (pass == 0)
			seen = x.visited;
	}
	if (rc != 0)
		msg_warn("expiry of %s stopped after %zu records (%s); the"
			 " next run goes on", cfg.db_path, x.visited,
			 *expire_why ? expire_why : "the file changed too much");
	msg_info("expiry of %s: %zu records seen, %zu deleted, %lld ms",
		 cfg.db_path, x.visited, x.deleted, elapsed_ms(&start));
	if (out)
		(void)fprintf(out, "%zu records seen, %zu deleted\n", x.visited,
			      x.deleted);
	/* the last pass was whole: it saw every record left, and deleted
	 * some of them */
	if (rc == 0 && reorganize(seen, x.visited - (x.deleted - before), out)
	    < 0)
		rc = -1;
	return rc;
}

/* expire_repairing - expire; a file found damaged is repaired (as the
 * daily pass does) and the expiry run again once */
static int expire_repairing(long long now, FILE *out)
{
	if (expire(now, out) == 0)
		return 0;
	if (!expire_damage)
		return -1;
	if (out)
		(void)fprintf(out, "the database is damaged: repairing it\n");
	if (repair(1, out) != 0)
		return -1;
	return expire(now, out);
}

/* claim_expiry - today's expiry is due (the last one began
 * EXPIRE_INTERVAL ago or more, or never): note this one's start, so
 * that no other process runs it too */
static int claim_expiry(long long now)
{
	struct timespec deadline = deadline_in(CTL_LOCK_WAIT);
	struct db db;
	int due = 0;

	if (db_open(&db, 1, &deadline) == DB_OK) {
		due = expiry_due(note_get_number(&db, NOTE_EXPIRE), now)
			&& note_put_number(&db, NOTE_EXPIRE, now) == 0;
	}
	if (db_close(&db) != 0)
		due = 0;
	return due;
}

/* cmd_expire - the expiry, now (--if-due: only when today's is due);
 * the run is noted as today's */
static int cmd_expire(void)
{
	long long now = (long long)time(NULL);

	if (redis_in_use()) {
		printf("nothing to do: Redis expires greylistd's records itself"
		       " (each has a TTL)\n");
		return flush_stdout();
	}

	if (opt_if_due && !claim_expiry(now)) {
		printf("no expiry due\n");
		return flush_stdout();
	}
	if (!opt_if_due && note_rw(NOTE_EXPIRE, now) < -1)
		say("%s: cannot note the expiry", cfg.db_path);
	if (expire_repairing(now, stdout) != 0)
		return 1;		/* the warnings said why, on stderr too */
	return flush_stdout();
}

/* cmd_stats - the database's figures (stats.c) */
static int cmd_stats(void)
{
	return stats(opt_openmetrics != 0, opt_output);
}

/* cmd_repair - make a damaged file whole, after a full check */
static int cmd_repair(void)
{
	if (redis_in_use()) {
		printf("nothing to do: greylistctl repairs the GDBM file; Redis"
		       " keeps its own data (its AOF or RDB files)\n");
		return flush_stdout();
	}
	return repair(0, stdout) != 0 || flush_stdout() ? 1 : 0;
}

/* report_whitelists - log the whitelists' bad lines once per version of
 * the files, not once per connection: the version last logged is kept
 * in the database (the note "whitelist") */
static void report_whitelists(void)
{
	long long sig = wl_signature(&cfg.whitelists);
	struct wl_set set = { 0 };

	if (note_rw(NOTE_WHITELIST, -1) == sig)
		return;
	if (wl_load(&set, &cfg.whitelists, WLR_LOG, 1) > 0)
		note_rw(NOTE_WHITELIST, sig);
	wl_free(&set);
}

/* cmd_maintain - what a serving greylistd found due: a repair (it saw
 * damage: --repair), the whitelists' bad lines, the daily expiry. It
 * runs detached from any client, and logs what it does. */
static int cmd_maintain(void)
{
	long long now = (long long)time(NULL);
	int rc = 0;

	if (opt_repair && !redis_in_use() && repair(0, NULL) != 0)
		rc = 1;
	report_whitelists();
	if (!redis_in_use() && claim_expiry(now) && expire_repairing(now, NULL) != 0)
		rc = 1;
	return rc;
}

/*
 * The commands.
 */

/* Each command's own options, which come before the shared ones on its
 * command line (report's --delay is postgreyreport's). */
static const struct option_spec dump_options[] = {
	{ "raw", OPT_FLAG, 0, 1, 0, &opt_raw,
	  "dump: times as Unix seconds, not ISO 8601" },
	{ "recover", OPT_FLAG, 0, 1, 0, &opt_recover,
	  "dump: of a damaged file, what a recovery of a copy keeps" },
};
static const struct option_spec stats_options[] = {
	{ "openmetrics", OPT_FLAG, 0, 1, 0, &opt_openmetrics,
	  "stats: in the OpenMetrics text format (for node_exporter)" },
	{ "output", OPT_STRING, 0, 0, 0, &opt_output,
	  "stats: write this file (whole or not at all), not stdout" },
};
static const struct option_spec expire_options[] = {
	{ "if-due", OPT_FLAG, 0, 1, 0, &opt_if_due,
	  "expire: only when today's expiry is due" },
};
static const struct option_spec load_options[] = {
	{ "from-postgrey", OPT_STRING, 0, 0, 0, &opt_from_postgrey,
	  "load: postgrey's database, from its --dbdir (run with the options"
	  " postgrey ran with)" },
};
static const struct option_spec maintain_options[] = {
	{ "repair", OPT_FLAG, 0, 1, 0, &opt_repair,
	  "maintain: the server found the file damaged" },
};

static const struct {
	const char *name;
	int (*run)(void);
	const struct option_spec *options;
	size_t noptions;
	const char *what;
} commands[] = {
	{ "check", cmd_check, NULL, 0,
	  "test the configuration, the whitelists and the database" },
	{ "stats", cmd_stats, stats_options, 2, "the database's figures" },
	{ "dump", cmd_dump, dump_options, 2, "every record, as text (sorted)" },
	{ "load", cmd_load, load_options, 1,
	  "read a dump from stdin (or postgrey's database) into the database" },
	{ "expire", cmd_expire, expire_options, 1,
	  "delete what has outlived its use; reorganize when it pays" },
	{ "repair", cmd_repair, NULL, 0, "recover a damaged database" },
	{ "report", NULL, NULL, 0,
	  "triplets deferred and never retried, from a log (postgreyreport)" },
	{ "explain", cmd_explain, explain_options, NEXPLAIN_OPTIONS,
	  "why a request gets its answer, and from when it changes" },
	{ "maintain", cmd_maintain, maintain_options, 1,
	  "what greylistd starts when maintenance is due" },
};
#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

/* find_command - the command named by the first word of the command
 * line, wherever it stands among the options; NCOMMANDS if none */
static size_t find_command(int argc, char **argv)
{
	size_t c;
	int i;

	for (i = 1; i < argc; i++) {
		if (argv[i][0] == '-')
			continue;
		for (c = 0; c < NCOMMANDS; c++)
			if (strcmp(argv[i], commands[c].name) == 0)
				return c;
		return NCOMMANDS;
	}
	return NCOMMANDS;
}

/* usage - the commands and options */
static int usage(size_t c)
{
	size_t i;

	printf("usage: greylistctl COMMAND [--option=value ...]\n"
	       "commands:\n");
	for (i = 0; i < NCOMMANDS; i++)
		printf("  %-10s %s\n", commands[i].name, commands[i].what);
	printf("options (also in " DEFAULT_CONFIG "):\n");
	if (c < NCOMMANDS && strcmp(commands[c].name, "report") == 0)
		config_usage(stdout, report_options, nreport_options);
	else
		config_usage(stdout, c < NCOMMANDS ? commands[c].options : NULL,
			     c < NCOMMANDS ? commands[c].noptions : 0);
	return flush_stdout();
}

int main(int argc, char **argv)
{
	size_t c = find_command(argc, argv);
	int report = c < NCOMMANDS && strcmp(commands[c].name, "report") == 0;
	const char *words[64];
	int n;

	n = config_parse(argc - 1, argv + 1, report ? report_options
			 : c < NCOMMANDS ? commands[c].options : NULL,
			 report ? nreport_options
			 : c < NCOMMANDS ? commands[c].noptions : 0, words, 64);
	log_open();
	if (!config_errors && cfg.help)
		return usage(c);
	if (!config_errors && cfg.version)
		return printf("greylistctl %s\n", VERSION) < 0 || flush_stdout();
	config_check();
	if (c == NCOMMANDS && n)
		config_error("unknown command %.40s (greylistctl --help lists"
			     " them)", words[0]);
	else if (c == NCOMMANDS)
		config_error("no command given (greylistctl --help lists them)");
	else if (n > 1 && !report)
		config_error("unexpected argument: %.80s", words[1]);
	else if (n > 64)
		config_error("more than 63 files named");
	if (config_errors) {
		config_report();
		return 64;
	}
	/* a command run by hand says its warnings on stderr too */
	log_stderr = strcmp(commands[c].name, "maintain") != 0;
	if (report)
		return cmd_report(words + 1, n - 1);
	return commands[c].run();
}
