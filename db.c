/*
 * db.c - the GDBM file: locked open, records, notes, one request's session
 *
 *	One GDBM file is shared by all processes. Each request opens it,
 *	locks it (flock on the file itself, the lock GDBM's own tools take
 *	too), reads, and closes it again: GDBM caches cannot be shared
 *	between processes. The shared (reader) lock is taken first; the
 *	exclusive (writer) lock only when a record must change, because
 *	closing a writer syncs the file and costs about ten readers. Under
 *	the writer lock the decision is made again, so two processes racing
 *	on one triplet cannot lose an update.
 *
 *	The file's contents are not trusted: every record is validated
 *	(rule.c), a file that is not a regular file is refused before GDBM
 *	sees it, and a damaged one makes the request fail open while
 *	greylistctl repairs it. Serving never moves, recovers or reorganizes
 *	the file; it only does what must happen before a writer touches a
 *	file a killed writer left behind (fix_next_block).
 */

#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/falloc.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "greylist.h"

/* on_alarm - interrupts a blocked flock(2); see lock_wait() */
static void on_alarm(int sig)
{
	(void)sig;			/* it only has to interrupt */
}

/* lock_wait - flock with a deadline. A repeating 10 ms timer interrupts
 * the blocking call, so a signal that arrives just before flock(2) is
 * entered cannot leave it blocked for ever. 0 locked at once, 1 locked
 * after a wait, -1 with errno (ETIMEDOUT when the deadline passed). */
int lock_wait(int fd, int op, const struct timespec *deadline)
{
	struct itimerval tick = { { 0, 10000 }, { 0, 10000 } };
	struct itimerval off = { { 0, 0 }, { 0, 0 } };
	struct sigaction sa;
	int rc, err;

	if (flock(fd, op | LOCK_NB) == 0)
		return 0;
	if (errno != EWOULDBLOCK)
		return -1;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_alarm;	/* no SA_RESTART: flock must return */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGALRM, &sa, NULL);
	setitimer(ITIMER_REAL, &tick, NULL);
	for (;;) {
		rc = flock(fd, op);
		err = errno;
		if (rc == 0 || err != EINTR || ms_left(deadline) == 0)
			break;
	}
	setitimer(ITIMER_REAL, &off, NULL);
	if (rc == 0)
		return 1;
	errno = err == EINTR ? ETIMEDOUT : err;
	return -1;
}

/* is_damage - a GDBM error that means the file itself is damaged (its
 * structure points past what was written, as after a disk filled up in
 * the middle of a write) */
int is_damage(int err)
{
	static const int damage[] = {
		GDBM_BAD_MAGIC_NUMBER, GDBM_BLOCK_SIZE_ERROR, GDBM_BYTE_SWAPPED,
		GDBM_BAD_FILE_OFFSET, GDBM_FILE_EOF, GDBM_NEED_RECOVERY,
		GDBM_DIR_OVERFLOW, GDBM_BAD_BUCKET, GDBM_BAD_HEADER,
		GDBM_BAD_AVAIL, GDBM_BAD_HASH_TABLE, GDBM_BAD_DIR_ENTRY,
		GDBM_BAD_HASH_ENTRY, GDBM_BUCKET_CACHE_CORRUPTED,
		GDBM_FILE_READ_ERROR, GDBM_FILE_SEEK_ERROR,
	};
	size_t i;

	for (i = 0; i < sizeof(damage) / sizeof(damage[0]); i++)
		if (err == damage[i])
			return 1;
	return 0;
}

/* db_fault - record why the database could not be used */
enum db_status db_fault(struct db *db, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(db->why, sizeof(db->why), fmt, ap);
	va_end(ap);
	return DB_FAULT;
}

/* Space kept allocated past the end of the file: at least this, and at
 * least an eighth of the file (GDBM doubles its directory in one write). */
#define MIN_SLACK	(1 << 20)

/* reserve_space - make sure the next writes cannot run out of disk half
 * way, which leaves a GDBM file damaged: keep slack allocated past its
 * end (FALLOC_FL_KEEP_SIZE: the size does not change). -1 when the disk
 * is full, before anything is written. */
static int reserve_space(int fd, const struct stat *st)
{
	off_t want, have;

	want = st->st_size / 8 > MIN_SLACK ? st->st_size / 8 : MIN_SLACK;
	have = (off_t)st->st_blocks * 512 - st->st_size;
	if (have >= want / 2)
		return 0;
	if (fallocate(fd, FALLOC_FL_KEEP_SIZE, st->st_size, want) == 0)
		return 0;
	return errno == EOPNOTSUPP || errno == ENOSYS ? 0 : -1;
}

/* GDBM's file header as GDBM 1.23 writes it (gdbmconst.h and the header
 * struct of gdbmdefs.h: the format it creates without the numsync
 * extension, with 64-bit offsets): the fields fix_next_block reads. The
 * layout is not part of GDBM's interface, so the fix runs only on the
 * version it was written for (and test.sh checks the layout). */
#define GDBM_HEADER_MAGIC64	0x13579acf
#define GDBM_HEADER_BLOCK_SIZE	4	/* int */
#define GDBM_HEADER_NEXT_BLOCK	32	/* off_t: where the file ends */
#define GDBM_FIX_MAJOR		1
#define GDBM_FIX_MINOR		23

/* fix_next_block_supported - is the linked GDBM the one whose header
 * fix_next_block knows? */
int fix_next_block_supported(void)
{
	return gdbm_version_number[0] == GDBM_FIX_MAJOR
		&& gdbm_version_number[1] == GDBM_FIX_MINOR;
}

/* fix_next_block - GDBM writes an update's buckets and directory first
 * and its header last. A writer killed between the two (SIGKILL cannot
 * be held) leaves the header's end mark (next_block) before buckets that
 * the directory already points to: the next writer would allocate over
 * them, and gdbm_recover drops them with every record they hold (84 of
 * 166 records in the faults test without this). A healthy GDBM 1.23 file
 * never extends past the mark, so when it does, the mark is moved past
 * the end (with a margin for blocks the killed writer had taken but not
 * yet written); at worst a few free blocks are never reused. The caller
 * holds the exclusive lock. */
static void fix_next_block(int fd, const struct stat *st)
{
	unsigned char h[GDBM_HEADER_NEXT_BLOCK + 8];
	int32_t magic, block;
	int64_t next, fixed;

	if (!fix_next_block_supported()
	    || pread(fd, h, sizeof(h), 0) != (ssize_t)sizeof(h))
		return;
	memcpy(&magic, h, sizeof(magic));
	memcpy(&block, h + GDBM_HEADER_BLOCK_SIZE, sizeof(block));
	memcpy(&next, h + GDBM_HEADER_NEXT_BLOCK, sizeof(next));
	if (magic != GDBM_HEADER_MAGIC64 || block < 512 || block > (1 << 24)
	    || next <= 0 || next >= (int64_t)st->st_size)
		return;
	fixed = ((int64_t)st->st_size + block - 1) / block * block
		+ (int64_t)8 * block;
	if (pwrite(fd, &fixed, sizeof(fixed), GDBM_HEADER_NEXT_BLOCK)
	    != (ssize_t)sizeof(fixed) || fsync(fd) != 0)
		return;
	msg_warn("database %s: a writer was stopped in the middle of an"
		 " update: moved the header's end mark from %lld to %lld",
		 cfg.db_path, (long long)next, (long long)fixed);
}

/* hold_signals - while a writer has the file open, a stop request
 * (SIGTERM from systemd, SIGINT, SIGHUP, SIGQUIT) waits until it is
 * closed: GDBM updates a file in several writes, and a process ended
 * between them can leave a bucket split half done. (SIGKILL cannot be
 * held: see fix_next_block.) */
static void hold_signals(int hold)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGQUIT);
	sigprocmask(hold ? SIG_BLOCK : SIG_UNBLOCK, &set, NULL);
}

/* db_lock_fd - open the file at the path and lock it, as a reader or a
 * writer (which may create it), before the deadline; the descriptor, or
 * -1 with errno (ENOENT: no file, for a reader; ETIMEDOUT; EINVAL: not
 * a regular file; ESTALE: it keeps being replaced). A process that
 * waited may hold a file a repair has since renamed away: it compares
 * inodes and opens again. *st describes the locked file. */
int db_lock_fd(const char *path, int writer,
	       const struct timespec *deadline, struct stat *st)
{
	struct stat now;
	int attempt, fd, err, waited;

	for (attempt = 0; attempt < DB_REOPEN_TRIES; attempt++) {
		fd = open(path, (writer ? O_RDWR | O_CREAT : O_RDONLY)
			  | O_CLOEXEC | O_NONBLOCK | O_NOCTTY, 0600);
		if (fd < 0)
			return -1;
		if (fstat(fd, st) != 0 || !S_ISREG(st->st_mode)) {
			close(fd);
			errno = EINVAL;
			return -1;
		}
		if ((waited = lock_wait(fd, writer ? LOCK_EX : LOCK_SH,
					deadline)) < 0) {
			err = errno;
			close(fd);
			errno = err;
			return -1;
		}
		/* after a wait the file may have grown, or been replaced */
		if ((!waited || fstat(fd, st) == 0) && stat(path, &now) == 0
		    && st->st_ino == now.st_ino && st->st_dev == now.st_dev)
			return fd;
		close(fd);
	}
	errno = ESTALE;
	return -1;
}

/* open_fault - db_lock_fd's failure, as the log says it */
static enum db_status open_fault(struct db *db, int err)
{
	if (err == ETIMEDOUT)
		return db_fault(db, "lock not had within %llds",
				cfg.lock_timeout);
	if (err == EINVAL)
		return db_fault(db, "%s is not a regular file", cfg.db_path);
	if (err == ESTALE)
		return db_fault(db, "%s keeps being replaced", cfg.db_path);
	return db_fault(db, "cannot open %s: %s", cfg.db_path, strerror(err));
}

/* store_name - the store, for messages: the file, or the Redis server */
const char *store_name(void)
{
	return redis_in_use() ? redis_where() : cfg.db_path;
}

/* store_open - db_open of the Redis store: its connection, whose
 * commands run until the deadline; there is no lock (a request's
 * writes are its compare-and-set, redis.c) */
static enum db_status store_open(struct db *db,
				 const struct timespec *deadline)
{
	db->redis = 1;
	db->deadline = *deadline;
	if (redis_open(deadline) != 0)
		return db_fault(db, "%s", redis_why());
	return DB_OK;
}

/* db_open - open and lock the database before the deadline. A reader
 * finds DB_ABSENT when there is no file yet; a writer creates it.
 * DB_DAMAGED: the file needs repair (db->dbf is open when GDBM could
 * open it and says it needs recovery). Stop signals are held while a
 * writer has the file (see hold_signals). */
enum db_status db_open(struct db *db, int writer,
		       const struct timespec *deadline)
{
	int flags = (writer ? GDBM_WRCREAT : GDBM_READER) | GDBM_NOLOCK
		| GDBM_NOMMAP | GDBM_CLOEXEC;
	struct stat st;
	int fd, err;

	memset(db, 0, sizeof(*db));
	db->writer = writer;
	if (redis_in_use())
		return store_open(db, deadline);
	fd = db_lock_fd(cfg.db_path, writer, deadline, &st);
	if (fd < 0 && !writer && errno == ENOENT)
		return DB_ABSENT;
	if (fd < 0)
		return open_fault(db, errno);
	db->ino = st.st_ino;
	if (!writer && st.st_size == 0) {
		close(fd);
		return DB_ABSENT;
	}
	if (writer) {
		hold_signals(1);
		if (reserve_space(fd, &st) != 0) {
			err = errno;
			close(fd);
			hold_signals(0);
			return db_fault(db, "no space for %s: %s", cfg.db_path,
					strerror(err));
		}
		fix_next_block(fd, &st);
	}
	db->dbf = gdbm_fd_open(fd, cfg.db_path, 0, flags, NULL);
	if (db->dbf)
		return gdbm_needs_recovery(db->dbf) ? DB_DAMAGED : DB_OK;
	err = gdbm_errno;
	close(fd);
	if (writer)
		hold_signals(0);
	if (!is_damage(err))
		return db_fault(db, "cannot open %s: %s", cfg.db_path,
				gdbm_strerror(err));
	snprintf(db->why, sizeof(db->why), "%s", gdbm_strerror(err));
	return DB_DAMAGED;
}

/* db_close - close, and with a writer, sync; -1 if that failed */
int db_close(struct db *db)
{
	int rc = 0;

	if (db->dbf && gdbm_close(db->dbf) != 0) {
		db_fault(db, "closing %s: %s", cfg.db_path,
			 gdbm_strerror(gdbm_errno));
		rc = -1;
	}
	if (db->dbf && db->writer)
		hold_signals(0);
	db->dbf = NULL;
	return rc;
}

/* db_fetch - one record's value (NULL when absent; free it); -1 on a
 * fault, which is noted */
int db_fetch(struct db *db, datum key, datum *value)
{
	if (db->redis)
		return redis_fetch(key, value, &db->deadline) == 0 ? 0
			: (db_fault(db, "%s", redis_why()), -1);
	*value = gdbm_fetch(db->dbf, key);
	if (value->dptr || gdbm_errno == GDBM_ITEM_NOT_FOUND)
		return 0;
	db_fault(db, "reading %s: %s", cfg.db_path, gdbm_strerror(gdbm_errno));
	return -1;
}

/* db_store - write one record; -1 on a fault, which is noted */
int db_store(struct db *db, datum key, datum value)
{
	if (db->redis)
		return redis_store(key, value, &db->deadline) == 0 ? 0
			: (db_fault(db, "%s", redis_why()), -1);
	if (gdbm_store(db->dbf, key, value, GDBM_REPLACE) == 0)
		return 0;
	db_fault(db, "writing %s: %s", cfg.db_path, gdbm_strerror(gdbm_errno));
	return -1;
}

/* db_put - write a record of numbers */
int db_put(struct db *db, datum key, const long long *f, int n)
{
	char buf[MAX_RECORD];

	return db_store(db, key, record_encode(buf, sizeof(buf), f, n));
}

/* note_get_number - a note's number, -1 when absent, of another shape,
 * or unreadable */
long long note_get_number(struct db *db, enum note n)
{
	long long v = -1;
	datum d;

	if (db_fetch(db, note_key(n), &d) != 0 || !d.dptr
	    || record_decode(d, &v, 1) != 0)
		v = -1;
	free(d.dptr);
	return v;
}

/* note_put_number - keep a number in a note */
int note_put_number(struct db *db, enum note n, long long v)
{
	return db_put(db, note_key(n), &v, 1);
}

/* The key-kind note: "1 0" for plain keys; "1 1" and the secret as
 * KEY_WORDS numbers of 32 bits for HMAC digests. */
#define KEY_WORDS	8

/* key_kind_parse - a key-kind note's value; -1 if of no known shape */
int key_kind_parse(datum d, struct key_kind *kk)
{
	long long f[1 + KEY_WORDS];
	size_t i;

	memset(kk, 0, sizeof(*kk));
	if (record_decode(d, f, 1) == 0 && f[0] == 0)
		return 0;
	if (record_decode(d, f, 1 + KEY_WORDS) != 0 || f[0] != 1)
		return -1;
	for (i = 0; i < sizeof(kk->secret); i++) {
		if (f[1 + i / 4] > 0xffffffffLL)
			return -1;
		kk->secret[i] = (unsigned char)(f[1 + i / 4] >> (24 - 8 * (i % 4)));
	}
	kk->hashed = 1;
	return 0;
}

/* key_kind_read - the file's key kind; *present 0 when the file has no
 * note (a new file, or one from before the note). -1 on a fault or a
 * note of another shape. */
int key_kind_read(struct db *db, struct key_kind *kk, int *present)
{
	datum d;
	int rc = 0;

	memset(kk, 0, sizeof(*kk));
	if (db_fetch(db, note_key(NOTE_KEYS), &d) != 0)
		return -1;
	*present = d.dptr != NULL;
	if (d.dptr && key_kind_parse(d, kk) != 0) {
		db_fault(db, "%s: its key-kind note has no known shape",
			 cfg.db_path);
		rc = -1;
	}
	free(d.dptr);
	return rc;
}

/* key_kind_encode - the key-kind note's value, in buf (MAX_RECORD) */
datum key_kind_encode(const struct key_kind *kk, char *buf, size_t size)
{
	long long f[1 + KEY_WORDS] = { kk->hashed };
	size_t i;

	for (i = 0; kk->hashed && i < sizeof(kk->secret); i++)
		f[1 + i / 4] = f[1 + i / 4] << 8 | kk->secret[i];
	return record_encode(buf, size, f, kk->hashed ? 1 + KEY_WORDS : 1);
}

/* key_kind_write - keep the key kind in the file's note */
int key_kind_write(struct db *db, const struct key_kind *kk)
{
	char buf[MAX_RECORD];

	return db_store(db, note_key(NOTE_KEYS),
			key_kind_encode(kk, buf, sizeof(buf)));
}

/* key_kind_new - the key kind of a new file: with --privacy, a new
 * random secret, so that digests differ from file to file; -1 when the
 * kernel gives no random bytes */
int key_kind_new(struct key_kind *kk, int hashed)
{
	memset(kk, 0, sizeof(*kk));
	kk->hashed = hashed;
	if (hashed && getrandom(kk->secret, sizeof(kk->secret), 0)
	    != (ssize_t)sizeof(kk->secret))
		return -1;
	return 0;
}

/*
 * One request's session: read, decide, and write what changed.
 */

/* The key kind of the file, learned at the process's first look-up. */
static struct key_kind kind;
static int kind_known;

/* learn_kind - the file's key kind, read once per process and checked
 * against the configured one (a file of the other kind is a fault, never
 * served: every triplet would look new); a writer gives a file without
 * the note the configured kind. 1: a reader found no note. */
static int learn_kind(struct db *db)
{
	struct key_kind kk;
	int present;

	if (kind_known)
		return 0;
	if (key_kind_read(db, &kk, &present) != 0)
		return -1;
	if (!present && !db->writer)
		return 1;
	if (!present && key_kind_new(&kk, cfg.privacy != 0) != 0) {
		db_fault(db, "no random bytes for the --privacy secret: %s",
			 strerror(errno));
		return -1;
	}
	if (!present && key_kind_write(db, &kk) != 0)
		return -1;
	if (kk.hashed != (cfg.privacy != 0)) {
		db_fault(db, "%s holds %s keys but privacy is %s: set privacy"
			 " = %s, or use another file", cfg.db_path, kk.hashed
			 ? "hashed" : "plain", cfg.privacy ? "on" : "off",
			 kk.hashed ? "yes" : "no");
		return -1;
	}
	kind = kk;
	kind_known = 1;
	return 0;
}

/* evaluate - fetch the request's records and decide; -1 on a fault. The
 * time is read once the lock is held: a process that waited for it must
 * not take a record written meanwhile as one from the future. */
static int evaluate(struct db *db, const struct triplet *t,
		    struct keys *k, struct lookup *lk, struct outcome *o)
{
	long long trec[T_FIELDS], crec[C_FIELDS], now = (long long)time(NULL);
	datum tv = { NULL, 0 }, cv = { NULL, 0 };
	int rc = -1;

	triplet_keys(t, &kind, k);
	if ((!k->ckey.dptr || db_fetch(db, k->ckey, &cv) == 0)
	    && db_fetch(db, k->tkey, &tv) == 0) {
		decide(triplet_record(tv, trec), client_record(cv, crec), now, o);
		rc = 0;
	}
	free(tv.dptr);
	free(cv.dptr);
	if (rc == 0 && lk->first) {	/* is the last expiry a day old? */
		lk->expiry_due = expiry_due(note_get_number(db, NOTE_EXPIRE),
					    now);
		lk->first = 0;
	}
	return rc;
}

/* store - write what the decision changed */
static int store(struct db *db, const struct keys *k, const struct outcome *o)
{
	if (o->store_c && db_put(db, k->ckey, o->c, C_FIELDS) != 0)
		return -1;
	if (o->store_t && db_put(db, k->tkey, o->t, T_FIELDS) != 0)
		return -1;
	return 0;
}

/* session - one locked open of the database: decide, and as a writer
 * store the result. 1 when a writer is needed, 0 done, -1 fault (the
 * outcome is then fail-open). */
static int session(int writer, const struct triplet *t, struct lookup *lk,
		   const struct timespec *deadline, struct outcome *o)
{
	static struct keys k;
	struct db db;
	int rc;

	switch (db_open(&db, writer, deadline)) {
	case DB_ABSENT:
		return 1;
	case DB_DAMAGED:
		lk->damaged = 1;
		db_close(&db);
		fail_open(o, "database damaged, repair scheduled");
		return -1;
	case DB_FAULT:
		fail_open(o, db.why);
		return -1;
	case DB_OK:
		break;
	}
	rc = learn_kind(&db);
	if (rc == 0)
		rc = evaluate(&db, t, &k, lk, o);
	if (rc == 0 && (o->store_t || o->store_c))
		rc = writer ? store(&db, &k, o) : 1;
	if (rc < 0 && (gdbm_needs_recovery(db.dbf) || is_damage(gdbm_errno)))
		lk->damaged = 1;
	if (db_close(&db) != 0 && writer)
		rc = -1;
	if (rc < 0)
		fail_open(o, db.why);
	return rc;
}

/* db_greylist - decide one triplet: a reader first, a writer only when a
 * record must change; the writer decides again under its lock */
void db_greylist(const struct triplet *t, struct lookup *lk,
		 struct outcome *o)
{
	struct timespec deadline = deadline_in(cfg.lock_timeout);

	if (session(0, t, lk, &deadline, o) == 1)
		session(1, t, lk, &deadline, o);
}
