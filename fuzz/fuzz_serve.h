/*
 * fuzz/fuzz_serve.h - what the request and milter targets share, both of
 * which include greylistd.c: the checks of a decision line, and the store
 * they put in the place of the database.
 *
 * The store: greylistd.c's call to db_greylist() is renamed (#define
 * db_greylist fz_db_greylist before it is included), and this one gives
 * the real rule (rule.c's decide) the records of a scenario the harness
 * chose from the input, instead of the GDBM file's.
 * So the whole serving path runs (reading, judge, policy, the whitelist,
 * the rule with --learn, the answer, --defer-at=data, the log) with no
 * file, no lock and no state between inputs; db.c has tests of its own.
 *
 * The scenarios and what the rule must make of them (fz_scene_verdict, a
 * model of the rule at these points): no record: new; a pending triplet
 * younger than --delay: early; older: its first pass (and, every other
 * time, a client one pass short of --auto-whitelist-clients, which then
 * joins the auto-whitelist); a passed triplet: pass; a client with enough
 * passes: client AWL; the lock not had: fail-open. With --learn, new and
 * early are answered as learning, never deferred.
 *
 * fz_serve_init sets up what they share: the log, the connection, the
 * replies, the whitelists.
 *
 * The decision log: check_decision reads a decision line back as
 * greylistctl report does (log_field) and compares it with the request
 * and the outcome; next_line walks a log, past the whitelist's warnings
 * of a regex that gave up.
 *
 * It includes greylistd.c, with read(2) renamed to fuzz.h's short reads
 * (fz_read) and db_greylist to this store; include it after fuzz.h.
 */

#define read(fd, buf, n) fz_read(fd, buf, n)
#define main greylistd_main
#define db_greylist fz_db_greylist
#include "greylistd.c"
#undef db_greylist
#undef main
#undef read

/* The log (a memfd, the --log-file) and the replies (another). */
static int log_mem = -1, out_fd = -1;

/* fz_serve_init - what such a target sets up once: UTC, the log, the
 * connection (fz_conn_fd) and the replies, a host name, and whitelist
 * files (text[i], NULL-terminated, each a memfd of format[i]) loaded as
 * wl_refresh loads them; an abort unless they give "min" entries */
static void fz_serve_init(const char *const *text,
			  const enum wl_format *format, size_t min)
{
	static char path[MAX_WL_FILES + 1][64];
	size_t i;
	int fd;

	setenv("TZ", "UTC", 1);
	tzset();
	log_mem = fz_memfd("log");
	cfg.log_file = fz_path(log_mem, path[0], sizeof(path[0]));
	log_open();
	fz_conn_fd = fz_memfd("conn");
	out_fd = fz_memfd("replies");
	cfg.hostname = "mx.example";
	cfg.timeout = 5;
	for (i = 0; text[i] && i < MAX_WL_FILES; i++) {
		fd = fz_memfd("whitelist");
		fz_set(fd, text[i], strlen(text[i]));
		cfg.whitelists.path[i] = fz_path(fd, path[i + 1],
						 sizeof(path[0]));
		cfg.whitelists.format[i] = format[i];
	}
	cfg.whitelists.n = i;
	if (config_errors || wl_load(&whitelists, &cfg.whitelists, WLR_COUNT,
				     1) != 0 || whitelists.n < min) {
		fprintf(stderr, "%s: the log or the whitelists did not open (%d"
			" errors, %d problems, %zu entries)\n",
			program_invocation_short_name, config_errors,
			whitelists.problems, whitelists.n);
		abort();
	}
}

/*
 * The store.
 */

/* The scenario of the next look-up, set by the harness (each look-up
 * moves it on by one); the outcome the last one gave, and how many there
 * were; the outcomes of the first FZ_OUTS since fz_store_calls was 0. */
#define FZ_OUTS		64
static unsigned fz_scene;
static struct outcome fz_store_out, fz_store_outs[FZ_OUTS];
static unsigned fz_store_calls;

enum { S_NEW, S_EARLY, S_FIRST, S_PASS, S_AWL, S_FAULT, S_COUNT };

/* fz_scene_verdict - what the rule must say for a scenario */
static enum verdict fz_scene_verdict(unsigned scene)
{
	static const enum verdict v[S_COUNT] = {
		V_NEW, V_EARLY, V_PASS_FIRST, V_PASS, V_AWL, V_FAIL_OPEN,
	};
	enum verdict want = v[scene % S_COUNT];

	if (want == V_AWL && !cfg.awl)
		want = V_PASS_FIRST;	/* the triplet of that scenario */
	return cfg.learn && (want == V_NEW || want == V_EARLY) ? V_LEARN
		: want;
}

/* fz_db_greylist - db_greylist's part (greylist.h declares it, renamed):
 * the scenario's records through the rule, checked against the model */
void fz_db_greylist(const struct triplet *t, struct lookup *lk,
		    struct outcome *o)
{
	long long now = (long long)time(NULL), tr[T_FIELDS] = { 0 },
		cr[C_FIELDS] = { 0 }, j = (long long)(fz_scene / S_COUNT);
	const long long *tp = tr, *cp = NULL;
	enum verdict want = fz_scene_verdict(fz_scene);

	(void)t;
	(void)lk;
	tr[T_FIRST] = tr[T_LAST] = now - j % cfg.delay;
	switch (fz_scene % S_COUNT) {
	case S_NEW:
		tp = NULL;
		break;
	case S_FIRST:
		tr[T_FIRST] = tr[T_LAST] = now - cfg.delay - j % 1000;
		cr[C_COUNT] = cfg.awl > 0 ? cfg.awl - 1 : 0;
		cr[C_LAST] = now - 2 * AWL_INTERVAL;
		cp = j & 1 ? cr : NULL;
		break;
	case S_PASS:
		tr[T_FIRST] = now - 9000;
		tr[T_PASSED] = now - 8000;
		tr[T_LAST] = now - j % 4000;
		break;
	case S_AWL:
		tr[T_FIRST] = tr[T_LAST] = now - cfg.delay - 1;
		cr[C_COUNT] = cfg.awl + j % 3;
		cr[C_LAST] = now - j % 3000;
		cp = cr;
		break;
	}
	if (fz_scene % S_COUNT == S_FAULT)
		fail_open(o, "lock not had within 2s");
	else
		decide(tp, cp, now, o);
	CHECK(o->v == want, "scenario %u: the rule says %d, the model %d"
	      " (learn %lld)", fz_scene % S_COUNT, o->v, want, cfg.learn);
	CHECK(o->v != V_LEARN || o->learned == V_NEW
	      || o->learned == V_EARLY, "learning, but would have been %d",
	      o->learned);
	fz_store_out = *o;
	if (fz_store_calls < FZ_OUTS)
		fz_store_outs[fz_store_calls] = *o;
	fz_store_calls++;
	fz_scene++;
}

/*
 * The decision log.
 */

/* escaped_len - how long log_value's escaped form of v is, uncut */
static size_t escaped_len(const char *v)
{
	size_t n = 0;

	for (; *v; v++) {
		unsigned char c = (unsigned char)*v;

		n += c >= 32 && c < 127 && c != '\\' && c != ',' ? 1 : 4;
	}
	return n;
}

/* is_gave_up - the line the whitelist logs when a regex gives up:
 * "warning: FILE:LINE: the regular expression gave up (WHY); taken as no
 * match", FILE one of the target's (a value in a decision line may hold
 * any of these words, but not right after "greylistd[PID]: ") */
static int is_gave_up(const char *line)
{
	static const char end[] = "; taken as no match";
	const char *p = strstr(line, "]: ");
	size_t n = strlen(line);

	return p && strncmp(p + 3, "warning: /proc/self/fd/", 23) == 0
		&& strstr(p, ": the regular expression gave up (")
		&& n > sizeof(end) && strcmp(line + n - sizeof(end) + 1, end)
		== 0;
}

/* next_line - the next log line of *p, NUL-terminated in place, NULL at
 * the end; the whitelist's gave-up warnings skipped when "skip" (they
 * come first: the matching is the first thing policy() logs) */
static char *next_line(char **p, char *end, int skip)
{
	char *line, *nl;

	for (;;) {
		if (*p >= end)
			return NULL;
		line = *p;
		nl = memchr(line, '\n', (size_t)(end - line));
		CHECK(nl, "a log line without its newline: %s", line);
		*nl = 0;
		*p = nl + 1;
		if (!skip || !is_gave_up(line))
			return line;
	}
}

/* check_decision - one decision line (NUL-terminated, without its
 * newline), read back as `greylistctl report` does: the action and reason
 * of o, and the values of r that it logs */
static void check_decision(const char *s, const struct request *r,
			   const struct outcome *o)
{
	static char got[MAX_LINE];
	char reason[240], qid[LOG_VALUE_MAX + 8];
	const char *line, *msg, *f;
	size_t i;

	CHECK(fz_printable(s, strlen(s)), "a non-printable in the log: %s", s);
	line = strstr(s, "]: ");
	CHECK(line, "no \"greylistd[PID]: \" in %s", s);
	msg = line + 3;
	if (r->attr[A_QUEUE_ID] && *r->attr[A_QUEUE_ID]) {
		log_value(qid, sizeof(qid), r->attr[A_QUEUE_ID]);
		CHECK(strncmp(msg, qid, strlen(qid)) == 0
		      && strncmp(msg + strlen(qid), ": ", 2) == 0,
		      "not the queue id %s first: %s", qid, s);
		msg += strlen(qid) + 2;
	}
	CHECK(strncmp(msg, "action=", 7) == 0
	      && strncmp(msg + 7, verdicts[o->v].action,
			 strlen(verdicts[o->v].action)) == 0,
	      "not action=%s first: %s", verdicts[o->v].action, s);
	f = log_field(msg, "reason", got, sizeof(got));
	verdict_reason(o, reason, sizeof(reason));
	CHECK(f && strcmp(f, reason) == 0, "reason=%s wanted: %s", reason, s);
	for (i = 0; i < NLOGGED; i++) {
		const char *v = r->attr[logged_attrs[i].id];

		f = log_field(msg, attr_names[logged_attrs[i].id], got,
			      sizeof(got));
		if (!v || !*v) {
			CHECK(!f, "%s read back though not logged: %s",
			      attr_names[logged_attrs[i].id], s);
			continue;
		}
		CHECK(f, "%s not read back: %s", attr_names[logged_attrs[i].id],
		      s);
		if (escaped_len(v) <= LOG_VALUE_MAX)
			CHECK(strcmp(f, v) == 0, "%s read back as %s: %s",
			      attr_names[logged_attrs[i].id], f, s);
	}
}

/* check_judged - the lines judge() logs for request r with outcome o,
 * the first one in "line", the others from *p: the auto-whitelist's
 * line when the client joined it (ending "[addr]" unless addr is NULL),
 * then the decision line when the verdict has one; the line after them */
static char *check_judged(char *line, char **p, char *end,
			  const struct request *r, const struct outcome *o,
			  const char *addr)
{
	char tail[INET6_ADDRSTRLEN + 4];
	size_t n = line ? strlen(line) : 0;

	snprintf(tail, sizeof(tail), "[%s]", addr ? addr : "");
	if (o->awl_new) {
		CHECK(line && strstr(line, "]: whitelisted: ")
		      && (!addr || (n > strlen(tail) && strcmp(line + n
			  - strlen(tail), tail) == 0)),
		      "no \"whitelisted: NAME%s\": %s", tail,
		      line ? line : "(none)");
		line = next_line(p, end, 0);
	}
	if (verdicts[o->v].action) {
		CHECK(line, "no decision logged for verdict %d", o->v);
		check_decision(line, r, o);
		line = next_line(p, end, 0);
	}
	return line;
}
