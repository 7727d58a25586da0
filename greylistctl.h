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
void print_escaped(const char *p, size_t len);
void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int flush_stdout(void);

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
