/*
 * greylistctl.h - what greylistctl.c and report.c share: the private
 * copy of the database, walking it, and the command's output
 */

#ifndef GREYLISTCTL_H
#define GREYLISTCTL_H

#include <limits.h>

/* A private copy of the database, taken under its shared lock. */
struct snap {
	GDBM_FILE dbf;
	char dir[PATH_MAX];		/* a private directory, removed after */
	char file[PATH_MAX + 8];	/* the copy in it */
};

enum snap_status { SNAP_OK, SNAP_ABSENT, SNAP_DAMAGED, SNAP_ERROR };

enum snap_status snap_take(struct snap *s);
int snap_need(struct snap *s);
void snap_free(struct snap *s);
long long walk(GDBM_FILE dbf, void (*fn)(datum, datum, void *), void *arg);

/* A record taken apart: its kind, numbers and key parts. */
struct rec {
	char kind;			/* 'T', 'C', 'M'; 'X' any other shape */
	long long f[T_FIELDS];
	int nf;
	const char *part[3];
	size_t len[3];
	int nparts;
};

void rec_split(datum key, datum value, struct rec *r);
long long walk_said(GDBM_FILE dbf, void (*fn)(datum, datum, void *),
		    void *arg);
void print_escaped(const char *p, size_t len);
void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int flush_stdout(void);

/* A command's output: stdout, or a file replaced whole or not at all. */
struct output {
	FILE *f;
	const char *path;		/* NULL: stdout */
	char tmp[PATH_MAX];		/* the new file, until it is renamed */
};

int output_open(struct output *o, const char *path);
int output_close(struct output *o, int ok);

/* What became of a deferred triplet: passed later, never retried within
 * the window, or still pending (deferred less than the window ago). */
enum fate { FATE_PASSED, FATE_LOST, FATE_PENDING, NFATES };
extern const char *const fate_names[NFATES];

/* stats.c */
int stats(int openmetrics, const char *path);
#define NDELAY_BUCKETS	11
extern const long long delay_buckets[NDELAY_BUCKETS];
const char *format_span(char *buf, size_t size, long long seconds);

/* A string and how often it came (the report's tops). */
struct count {
	const char *what;
	size_t n;
};

/* One deferred triplet as the report judged it. */
struct judged {
	long long first, passed;	/* first deferral; first pass, or 0 */
	enum fate fate;
};

/* What the report found, for its page (html.c). */
struct report_view {
	const struct judged *judged;	/* each deferred triplet */
	size_t n;
	const long long *delays;	/* of those passed later, sorted */
	size_t ndelays;
	const struct count *nets, *rcpts;	/* the lost, most first */
	size_t nnets, nrcpts, top;	/* top: how many to show (0: default) */
	long long start, end, window;	/* the log's first and last time */
	const char *summary;		/* the text report's summary line */
};

/* html.c */
int html_write(const char *path, const struct report_view *v);

/* report.c */
extern const struct option_spec report_options[];
extern const size_t nreport_options;
int cmd_report(const char *const *files, int nfiles);

/* postgrey.c: postgrey's database, record by record, for load */
struct pg_record {
	char kind;			/* 'T' or 'C' */
	long long f[T_FIELDS];
	const char *part[3];
	size_t nparts;
};
struct pg_import;
struct pg_import *pg_open(const char *dir);
int pg_next(struct pg_import *p, struct pg_record *r);
void pg_bad(struct pg_import *p, const char *why);
int pg_close(struct pg_import *p, size_t loaded);

/* explain.c */
#define NEXPLAIN_OPTIONS 4
extern const struct option_spec explain_options[NEXPLAIN_OPTIONS];
int cmd_explain(void);

#endif
