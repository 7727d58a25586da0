/*
 * fuzz/fuzz_store.h - the store the request and milter targets put in
 * the place of the database: greylistd.c's call to db_greylist() is
 * renamed (#define db_greylist fz_db_greylist before it is included), and
 * this one gives the real rule (rule.c's decide) the records of a
 * scenario the harness chose from the input, instead of the GDBM file's.
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
 * Include it after greylistd.c.
 */

/* The scenario of the next look-up, set by the harness; the outcome the
 * last one gave, and how many there were. */
static unsigned fz_scene;
static struct outcome fz_store_out;
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
	fz_store_calls++;
}
