/*
 * fuzz_dump - the dump loader (load_line) under libFuzzer, and the round
 * trip load -> dump_record -> load.
 *
 * The bytes (after a two-byte header) are the lines `greylistd load`
 * reads: each is cut as cmd_load cuts it (at a newline; a NUL ends the
 * string, as fgets and strlen do; "#" lines and empty ones skipped) and
 * given to load_line(). A line it accepts is a record; that record is
 * written by dump_record() (stdout is a memfd) and the line read back
 * must load again. Invariants:
 *   - a loaded T record is a valid triplet (triplet_record);
 *   - dump_record writes one line of printable ASCII;
 *   - without --privacy the line loads to the very same key and value;
 *   - with --privacy (plain keys are hashed on load), loading is stable
 *     after one round: dump, load, dump, load gives the same record.
 *
 * Header: h[0] & 1: --privacy; h[0] & 2: a small key buffer of
 * 67 + h[1] bytes (load_line takes its size: the bounds are tested with
 * short inputs; 67 holds "T\n", a digest and the NUL, as MAX_KEY does);
 * otherwise MAX_KEY, as cmd_load.
 */

#include "fuzz.h"

#define main greylistd_main
#ifdef GREYLISTD_SRC
#include GREYLISTD_SRC
#else
#include "../greylistd.c"
#endif
#undef main

static int out_fd = -1;

struct loaded {
	char key[MAX_KEY];
	char val[MAX_RECORD * 4 + 1];
	datum k, v;
};

/* fz_redump - dump_record's line for a record, without its newline; it is
 * also checked to be one printable line */
static char *fz_redump(const struct loaded *l)
{
	static char *line;
	size_t len;
	char *out;

	dump_record(l->k, l->v);
	CHECK(fflush(stdout) == 0, "stdout");
	out = fz_take(out_fd, &len);
	CHECK(len > 0 && out[len - 1] == '\n'
	      && memchr(out, '\n', len) == out + len - 1,
	      "dump_record wrote not one line: %s", out);
	CHECK(fz_printable(out, len - 1), "dump_record wrote a"
	      " non-printable: %s", out);
	out[len - 1] = 0;
	free(line);
	line = strdup(out);
	CHECK(line, "out of memory");
	return line;
}

/* fz_load - load_line into l; NULL or why not */
static const char *fz_load(char *line, size_t ksize, struct loaded *l)
{
	return load_line(line, l->key, ksize, &l->k, l->val, sizeof(l->val),
			 &l->v);
}

/* fz_same - two loaded records are byte for byte one */
static int fz_same(const struct loaded *a, const struct loaded *b)
{
	return a->k.dsize == b->k.dsize && a->v.dsize == b->v.dsize
		&& memcmp(a->k.dptr, b->k.dptr, (size_t)a->k.dsize) == 0
		&& memcmp(a->v.dptr, b->v.dptr, (size_t)a->v.dsize) == 0;
}

/* check_dump_line - load one line; when it loads, the round trip */
static void check_dump_line(char *line, size_t ksize)
{
	static struct loaded a, b, c;
	static char orig[MAX_DUMP_LINE + 2];
	const char *why;
	long long f[T_FIELDS];
	char *d1, *d2, kind;

	snprintf(orig, sizeof(orig), "%s", line);
	kind = orig[strspn(orig, " ")];
	if (fz_load(line, ksize, &a))
		return;
	CHECK(a.k.dsize >= 0 && (size_t)a.k.dsize < ksize && a.v.dsize >= 0
	      && (kind == 'X' || a.v.dsize > 0),
	      "sizes %d %d", a.k.dsize, a.v.dsize);
	if (kind == 'T')
		CHECK(triplet_record(a.v, f), "a T record that is no triplet:"
		      " %.200s", orig);
	d1 = fz_redump(&a);
	why = fz_load(d1, ksize, &b);
	CHECK(!why, "\"%.300s\" loaded, dumped as \"%.300s\", which does not"
	      " load: %s", orig, fz_redump(&a), why);
	if (!cfg.privacy) {
		CHECK(fz_same(&a, &b), "\"%.300s\" loaded, dumped as \"%.300s\","
		      " loads as another record", orig, fz_redump(&a));
		return;
	}
	d2 = fz_redump(&b);
	why = fz_load(d2, ksize, &c);
	CHECK(!why, "--privacy: \"%.300s\" dumped as \"%.300s\" does not"
	      " load: %s", orig, fz_redump(&b), why);
	CHECK(fz_same(&b, &c), "--privacy: \"%.300s\" is not stable after one"
	      " round: %s", orig, fz_redump(&b));
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	out_fd = fz_memfd("stdout");
	if (dup2(out_fd, 1) != 1)
		abort();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char line[MAX_DUMP_LINE + 2];
	size_t i = 2, n, ksize;

	if (size < 2)
		return 0;
	cfg.privacy = data[0] & 1;
	ksize = data[0] & 2 ? 67 + (size_t)data[1] : MAX_KEY;
	while (i < size) {
		const uint8_t *nl = memchr(data + i, '\n', size - i);

		n = nl ? (size_t)(nl - (data + i)) : size - i;
		if (n <= MAX_DUMP_LINE) {
			memcpy(line, data + i, n);
			line[n] = 0;
			if (line[0] != '#' && line[0] != 0)
				check_dump_line(line, ksize);
		}
		i += n + 1;
	}
	return 0;
}
