/*
 * greylist.h - what greylistd and greylistctl share
 *
 *	One definition of the limits, the configuration, the triplet and its
 *	keys, the record layout, the greylisting rule and the locked open of
 *	the database, compiled into both programs, so that the writer
 *	(greylistd) and the readers (greylistctl) can never drift apart.
 *
 *	config.c	the options: one table, the configuration file and
 *			the command line (the admin's input, trusted)
 *	log.c		log lines to syslog, the journal or a file; the
 *			sanitiser every network value passes through
 *	triplet.c	from request values to a triplet and its keys
 *			(network input)
 *	rule.c		the greylisting rule: records in, verdict out; no I/O
 *	whitelist.c	the whitelist files (admin's input) and matching a
 *			request against them (network input)
 *	db.c		the GDBM file: locked open, records, notes, and one
 *			request's read-decide-write session
 *	redis.c		the Redis store instead of the file (--redis): the
 *			same records, with TTLs, and a compare-and-set
 *
 * DATABASE RECORDS (version 1)
 *	key "T\n<net>\n<sender>\n<recipient>"	value "1 FIRST LAST PASSED"
 *	  a triplet. FIRST: when its greylisting began; LAST: when it was
 *	  last seen (refreshed at most every TOUCH_INTERVAL); PASSED: when
 *	  it first passed, 0 while pending. Times are Unix seconds.
 *	key "C\n<client>"			value "1 COUNT LAST"
 *	  a client of the auto-whitelist: passes counted, last counted.
 *	key "M\n<name>"				value "1 TEXT"
 *	  greylistd's notes (enum note): the key kind of the file ("plain",
 *	  or "hmac-sha256 SECRET" when the parts after "T\n" and "C\n" are
 *	  HMAC-SHA-256 digests, --privacy), the last expiry, the most records
 *	  seen since the last reorganization, the whitelist version logged,
 *	  the last reorganization.
 *	A record that does not parse as exactly its shape is treated as
 *	absent and rewritten. "\n" separates fields because Postfix never
 *	sends a newline inside a value (greylistd refuses one from any other
 *	source), so no two triplets share a key.
 */

#ifndef GREYLIST_H
#define GREYLIST_H

#include <gdbm.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

#define VERSION "0.2"

/* Paths: the Makefile passes its own (SYSCONFDIR, LOCALSTATEDIR). */
#ifndef SYSCONFDIR
#define SYSCONFDIR "/etc"
#endif
#ifndef LOCALSTATEDIR
#define LOCALSTATEDIR "/var/lib"
#endif
#define DEFAULT_CONFIG		SYSCONFDIR "/greylistd/greylistd.conf"
#define DEFAULT_WHITELIST	SYSCONFDIR "/greylistd/whitelist"
#define DEFAULT_DB		LOCALSTATEDIR "/greylistd/greylistd.db"

/* gcc 12's analyzer loses track of copies kept in arrays on the heap and
 * reports them leaked; these bracket the functions where it does (the
 * reason is given at each). Only gcc has the warning. */
#if defined(__GNUC__) && !defined(__clang__)
#define ANALYZER_LEAK_OFF _Pragma("GCC diagnostic push") \
	_Pragma("GCC diagnostic ignored \"-Wanalyzer-malloc-leak\"")
#define ANALYZER_LEAK_ON _Pragma("GCC diagnostic pop")
#else
#define ANALYZER_LEAK_OFF
#define ANALYZER_LEAK_ON
#endif

/*
 * Limits.
 */

/* Postfix sends values of up to 4 x line_length_limit = 8192 bytes; the
 * extra 256 leave room for the attribute name and "=". A value that fits
 * a line fits every buffer that holds a part of a triplet. */
#define MAX_LINE	(8192 + 256)

/* A key holds a network, a sender and a recipient, each from one line. */
#define MAX_KEY		(2 * MAX_LINE + 64)

/* A logged value is cut here (and marked "..."): a log line must stay
 * readable and within syslog's line limit. Keys are never cut. */
#define LOG_VALUE_MAX	256

/* A defer text or a header template; a recipient domain shown in one. */
#define MAX_TEXT	512
#define MAX_DOMAIN	255

/* A record's value: "1" and up to three decimal numbers, or a note. */
#define MAX_RECORD	160

/* Times in records must lie in [0, MAX_TIME]: year 4000 is far enough. */
#define MAX_TIME	64060588800LL

/* A passed triplet's LAST is refreshed at most this often, so known
 * triplets stay on the cheap reader path; max-age loses at most this. */
#define TOUCH_INTERVAL	3600

/* A passing client counts towards --auto-whitelist-clients at most once
 * in this time, and an auto-whitelisted one is refreshed as often. */
#define AWL_INTERVAL	3600

/* A count past which an auto-whitelisted client's count stops growing. */
#define MAX_AWL_COUNT	1000000000LL

/* Expiry runs at most once in this time (greylistctl maintain). */
#define EXPIRE_INTERVAL	86400

/* Whitelist files named by options (and the configuration file). */
#define MAX_WL_FILES	16

#define DAY 86400LL

/*
 * Configuration (config.c). Every process reads DEFAULT_CONFIG, or the
 * file --config names; the command line wins over the file.
 */

/* Whitelist files: our own format, and postgrey's two. */
enum wl_format { WLF_GREYLISTD, WLF_CLIENTS, WLF_RECIPIENTS };

struct wl_list {
	const char *path[MAX_WL_FILES];
	enum wl_format format[MAX_WL_FILES];
	size_t n;
};

struct config {
	const char *config;
	const char *db_path;
	long long delay;
	long long retry_window;
	long long max_age;
	long long ipv4cidr;
	long long ipv6cidr;
	long long lookup_by_host;
	long long timeout;
	long long lock_timeout;
	const char *greylist_action;
	const char *greylist_text;
	const char *header;
	const char *hostname;
	const char *log_file;
	struct wl_list whitelists;
	long long awl;
	long long learn;
	const char *defer_at;		/* "rcpt" or "data" */
	long long defer_at_data;	/* "data", for the policy protocol */
	long long privacy;
	long long exim;
	long long milter;
	long long greylistd_protocol;
	const char *redis;
	const char *redis_password_file;
	const char *redis_sentinel;
	const char *redis_master;
	long long redis_wait;
	long long wait;
	long long help;
	long long version;
};

extern struct config cfg;

/* Where an option may be given: everywhere, or only on greylistctl's
 * command line after the command that takes it. */
enum opt_kind { OPT_FLAG, OPT_NUMBER, OPT_DURATION, OPT_STRING, OPT_FILES };

struct option_spec {
	const char *name;
	enum opt_kind kind;
	long long min, max, unit;	/* OPT_FILES: unit is the wl_format */
	void *dest;
	const char *help;
};

extern int config_errors;

void config_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int config_parse(int argc, char **argv, const struct option_spec *extra,
		 size_t nextra, const char **words, int maxwords);
void config_usage(FILE *f, const struct option_spec *extra, size_t nextra);
void config_check(void);
size_t status_len(const char *s);
void config_report(void);
size_t config_options(const struct option_spec **table);

/*
 * Logging (log.c). Never to stdout or stderr while serving.
 */

/* The ways a time is shown. */
enum time_style {
	TS_LOG,			/* log lines, local: 2026-11-29T11:03:36+0100 */
	TS_HEADER,		/* X-Greylist %d, local: RFC 5322 date */
	TS_UTC,			/* dump, stats, report: 2026-11-29T10:03:36Z */
	TS_FILE,		/* in file names: 20261129T100336Z */
};

extern long my_pid;
extern int use_journal;
extern int log_stderr;

/* Libraries loaded (dlopen) only when they are used, because linking
 * them costs every process's start-up (see log.c). */
enum library { LIB_SYSTEMD, LIB_NETTLE, LIB_PCRE2, LIB_HIREDIS, LIB_COUNT };
void *lib_symbol(enum library lib, size_t i);

int sd_stream_socket(int *fd);
const char *log_value(char *dst, size_t size, const char *src);
const char *log_field(const char *line, const char *name, char *buf,
		      size_t size);
const char *format_time(char *buf, size_t size, enum time_style style,
			time_t t);
void log_open(void);
void log_emit(int prio, const char *line, const struct iovec *fields,
	      int nfields);
void msg_log(int prio, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define msg_info(...)	msg_log(6 /* LOG_INFO */, "info: " __VA_ARGS__)
#define msg_warn(...)	msg_log(4 /* LOG_WARNING */, "warning: " __VA_ARGS__)
#define msg_error(...)	msg_log(3 /* LOG_ERR */, "error: " __VA_ARGS__)

/* grow - make room for n elements of size in *p (doubling); the new
 * array, or NULL (the old one kept) without memory */
void *grow(void *p, size_t *cap, size_t n, size_t size);

/* Monotonic deadlines. */
struct timespec now_mono(void);
struct timespec deadline_in(long long seconds);
int ms_left(const struct timespec *deadline);
long long elapsed_ms(const struct timespec *since);

/*
 * The triplet and its keys (triplet.c).
 */

struct triplet {
	int family;			/* AF_INET or AF_INET6 */
	unsigned char bin[16];		/* client address */
	char addr[INET6_ADDRSTRLEN];	/* client address, canonical text */
	char net[INET6_ADDRSTRLEN];	/* client network, canonical text */
	char client[INET6_ADDRSTRLEN];	/* auto-whitelist key: see client_net */
	char sender[MAX_LINE + 1];	/* normalised sender */
	char recipient[MAX_LINE + 1];	/* lower-cased recipient */
};

void mask_bits(unsigned char *a, size_t len, long long bits);
int parse_address(const char *text, int *family, unsigned char *a);
int network_of(int family, const unsigned char *bin, char *out);
int client_net(const char *text, struct triplet *t);
void lower(char *dst, const char *src);
void normalise_sender(char *dst, const char *src);
int make_triplet(const char *addr, const char *sender, const char *rcpt,
		 struct triplet *t);

/* The key kind of a database file: how its T and C keys are written. */
struct key_kind {
	int hashed;			/* HMAC-SHA-256 digests (--privacy) */
	unsigned char secret[32];	/* the file's own HMAC key */
};

/* The keys of one request's records, in buffers of their own. */
struct keys {
	char t[MAX_KEY], c[INET6_ADDRSTRLEN + 72];
	datum tkey, ckey;		/* ckey.dptr is NULL without the AWL */
};

int record_key(char kind, const char *const *parts, size_t n,
	       const struct key_kind *kk, char *key, size_t size, datum *out);
void triplet_keys(const struct triplet *t, const struct key_kind *kk,
		  struct keys *k);
int is_digest(const char *s, size_t len);

/*
 * Records and the rule (rule.c).
 */

/* Record fields: a triplet (T), a client of the auto-whitelist (C). */
enum { T_FIRST, T_LAST, T_PASSED, T_FIELDS };
enum { C_COUNT, C_LAST, C_FIELDS };

/* Notes: "M\n" and the name. */
enum note {
	NOTE_KEYS, NOTE_EXPIRE, NOTE_PEAK, NOTE_WHITELIST, NOTE_REORGANIZE,
	NOTE_COUNT
};
extern const char *const note_names[NOTE_COUNT];
datum note_key(enum note n);

int expiry_due(long long last, long long now);
int record_decode(datum d, long long *f, int n);
datum record_encode(char *buf, size_t size, const long long *f, int n);
const long long *triplet_record(datum d, long long *rec);
const long long *client_record(datum d, long long *rec);

enum verdict {
	V_NEW, V_EARLY, V_PASS_FIRST, V_PASS, V_AWL, V_WL_CLIENT, V_WL_RCPT,
	V_FAIL_OPEN, V_NOT_RCPT, V_BAD_REQUEST, V_LEARN, V_DATA,
};

struct outcome {
	enum verdict v;
	long long seconds;		/* waited (pass) or missing (early) */
	int store_t, store_c;		/* the records below must be written */
	long long t[T_FIELDS], c[C_FIELDS];
	int awl_new;			/* the client just became whitelisted */
	enum verdict learned;		/* V_LEARN: what enforcing would say */
	char why[200];			/* fail-open or bad-request reason */
};

/* How each verdict is answered and logged: the words of postgrey's
 * decision lines, which greylistd logs and greylistctl explain shows. */
struct verdict_info {
	const char *action;		/* log: action=... (NULL: not logged) */
	const char *reason;		/* log: reason=... (NULL: verdict_reason) */
	int defer;			/* answered with --greylist-action */
	int log_prio;
};
extern const struct verdict_info verdicts[];

void decide(const long long *t, const long long *c, long long now,
	    struct outcome *o);
const char *verdict_reason(const struct outcome *o, char *buf, size_t size);
void fail_open(struct outcome *o, const char *why);
long long record_end(datum key, datum value);
int expired(datum key, datum value, long long now);
long long touch_interval(void);

/*
 * Whitelists (whitelist.c).
 */

enum wl_kind {
	WL_NET,				/* client address in a CIDR block */
	WL_HOST,			/* client_name, or a subdomain of it */
	WL_CLIENT_RE,			/* /regex/ on client_name */
	WL_USER,			/* recipient local part, any domain */
	WL_ADDRESS,			/* recipient address */
	WL_DOMAIN,			/* recipient domain, or a subdomain */
	WL_RCPT_RE,			/* /regex/ on the recipient */
};

struct wl_entry {
	enum wl_kind kind;
	int family;			/* WL_NET: AF_INET or AF_INET6 */
	unsigned char net[16];		/* WL_NET: masked address */
	long long bits;			/* WL_NET: prefix length */
	const char *text;		/* lower-cased value, or the /regex/ */
	void *re;			/* regex: compiled (pcre2_code) */
	const char *file;
	unsigned line;
	int failed;			/* regex: a match failure was logged */
};

/* How bad lines are reported: printed (check), logged, or counted. */
enum wl_report { WLR_COUNT, WLR_PRINT, WLR_LOG };

/* A set of entries, loaded from files. */
struct wl_set {
	struct wl_entry *e;
	size_t n, cap;
	int loaded;
	int problems;			/* bad lines seen by the last load */
	enum wl_report how;
	char *bufs[MAX_WL_FILES + 1];	/* file contents the entries point into */
	size_t nbufs;
	uint64_t sig;			/* the files' version, as wl_signature */
};

int wl_load(struct wl_set *set, const struct wl_list *files,
	    enum wl_report how, int defaults);
void wl_free(struct wl_set *set);
long long wl_signature(const struct wl_list *files);
const struct wl_entry *wl_client(const struct wl_set *set, int family,
				 const unsigned char *a, const char *name);
const struct wl_entry *wl_recipient(const struct wl_set *set,
				    const char *rcpt);
const struct wl_entry *wl_match(const struct wl_set *set,
				const struct triplet *t, const char *name,
				enum verdict *v);

/*
 * The database (db.c).
 */

enum db_status { DB_OK, DB_ABSENT, DB_DAMAGED, DB_FAULT };

struct db {
	GDBM_FILE dbf;
	int redis;			/* the Redis store, not the file */
	struct timespec deadline;	/* Redis: of the open's commands */
	int writer;
	ino_t ino;			/* the locked file */
	char why[200];			/* the fault, for the log */
};

/* A database file replaced under us (by a repair or reorganization) is
 * reopened at most this many times within one open. */
#define DB_REOPEN_TRIES	4

int lock_wait(int fd, int op, const struct timespec *deadline);
int is_damage(int err);
enum db_status db_open(struct db *db, int writer,
		       const struct timespec *deadline);
int db_close(struct db *db);
int db_fetch(struct db *db, datum key, datum *value);
int db_store(struct db *db, datum key, datum value);
int db_put(struct db *db, datum key, const long long *f, int n);
enum db_status db_fault(struct db *db, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
long long note_get_number(struct db *db, enum note n);
int note_put_number(struct db *db, enum note n, long long v);
int key_kind_parse(datum d, struct key_kind *kk);
int key_kind_read(struct db *db, struct key_kind *kk, int *present);
datum key_kind_encode(const struct key_kind *kk, char *buf, size_t size);
int key_kind_write(struct db *db, const struct key_kind *kk);
int key_kind_new(struct key_kind *kk, int hashed);
int db_lock_fd(const char *path, int writer,
	       const struct timespec *deadline, struct stat *st);
int fix_next_block_supported(void);

/* What one request's look-up asks of the database, and what it leaves
 * for the maintenance that runs after the answer. */
struct lookup {
	int first;			/* the process's first look-up */
	int expiry_due;			/* out: the last expiry is a day old */
	int damaged;			/* out: the file needs repair */
};

void db_greylist(const struct triplet *t, struct lookup *lk,
		 struct outcome *o);

/*
 * The Redis store (redis.c), used instead of the file when --redis or
 * --redis-sentinel is set.
 */

int redis_in_use(void);
const char *store_name(void);
void redis_check(void);
void redis_greylist(const struct triplet *t, struct outcome *o);
const char *redis_why(void);
const char *redis_where(void);
int redis_open(const struct timespec *deadline);
int redis_fetch(datum key, datum *value, const struct timespec *deadline);
int redis_store(datum key, datum value, const struct timespec *deadline);
long long redis_walk(void (*fn)(datum, datum, void *), void *arg,
		     long long seconds);
long long redis_memory(const struct timespec *deadline);

#endif
