/*
 * fuzz_dump - greylistctl's dump loader (load_line: load_note, load_kind,
 * settle_kinds, load_fields, check_part, unescape, parse_dump_time) and
 * dump_record under libFuzzer: the round trip load -> dump -> load.
 *
 * The bytes (after a two-byte header) are the lines `greylistctl load`
 * reads: each is cut as load_read cuts it (at a newline, at most
 * MAX_DUMP_LINE bytes, else skipped as too long; a NUL ends it, as fgets
 * and strlen do) and given to load_line() with one struct loader for the
 * whole input, as cmd_load does; a fatal error ends the input, as it
 * ends the load. A record that loads is written by dump_record() (stdout
 * is a memfd), and that line is loaded by a second loader that knows the
 * file's key kind, as a dump of that file would tell it. Invariants:
 *   - a line that loads adds exactly one record to the batch, or is a
 *     comment, a blank line (empty, or spaces only: split() finds no
 *     word, and load skips it as it skips an empty one) or the key-kind
 *     note; a line that does not load gives a reason and adds nothing;
 *   - a loaded record is of a shape the reader knows (rec_split: a T
 *     record is a valid triplet, a C record a client) or a note
 *     greylistd keeps, with a key that fits MAX_KEY;
 *   - dump_record writes one line of printable ASCII;
 *   - that line loads again, to the very same key and value, with plain
 *     keys and with hashed ones (--privacy: a plain record loaded into a
 *     hashed file becomes a digest under the file's secret, and its dump
 *     loads as that digest);
 *   - the key-kind note the loader learned ("M keys plain" or "M keys
 *     hmac-sha256:HEX", load_kind), stored as the file keeps it and
 *     dumped, loads as the same key kind.
 * Lines of a dump of version 1 ("# greylistd dump 1" first, notes as
 * "M VALUE NAME") are read as such.
 *
 * Header: h[0] & 1: --privacy; h[0] & 2: the database already holds a
 * key kind (a fixed secret when hashed), else it is new; h[0] & 4: that
 * kind is the other one than --privacy says (load must refuse); h[0] & 8:
 * --raw (dump times as Unix seconds). h[1] is not used (it held a key
 * buffer's size for an older load_line).
 */

#include "fuzz.h"

#define main greylistctl_main
#include "greylistctl.c"
#undef main

static int out_fd = -1;

/* The database's key kind when it has one (h[0] & 2). */
static struct key_kind file_kind;

/* redump - dump_record's line for a record, without its newline; it is
 * checked to be one printable line */
static char *redump(datum k, datum v)
{
	static char *line;
	size_t len;
	char *out;

	dump_record(k, v);
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

/* is_note_key - the key of a note greylistd keeps, other than the key
 * kind (which load never stores) */
static int is_note_key(datum k)
{
	int i;

	for (i = 0; i < NOTE_COUNT; i++)
		if (i != NOTE_KEYS && k.dsize == note_key((enum note)i).dsize
		    && memcmp(k.dptr, note_key((enum note)i).dptr,
			      (size_t)k.dsize) == 0)
			return 1;
	return 0;
}

/* check_shape - a loaded record is one the reader knows */
static void check_shape(datum k, datum v, const char *orig)
{
	long long f[T_FIELDS];
	struct rec r;

	CHECK(k.dsize > 2 && (size_t)k.dsize < MAX_KEY && v.dsize > 0
	      && (size_t)v.dsize < MAX_RECORD,
	      "sizes %d %d: %.200s", k.dsize, v.dsize, orig);
	if (k.dptr[0] == 'M') {
		CHECK(is_note_key(k) && record_decode(v, f, 1) == 0,
		      "a note greylistd does not keep: %.200s", orig);
		return;
	}
	rec_split(k, v, &r);
	CHECK(r.kind == k.dptr[0] && (r.kind == 'T' || r.kind == 'C'),
	      "\"%.200s\" loaded as a record of no known shape (%c)", orig,
	      r.kind);
	if (r.kind == 'T')
		CHECK(triplet_record(v, f), "a T record that is no triplet:"
		      " %.200s", orig);
}

/* same - two records are byte for byte one */
static int same(datum a, datum b)
{
	return a.dsize == b.dsize
		&& memcmp(a.dptr, b.dptr, (size_t)a.dsize) == 0;
}

/* check_round_trip - the record last loaded, dumped and loaded again by
 * a loader that knows the file's key kind */
static void check_round_trip(const struct loader *l, const char *orig)
{
	static char line[MAX_DUMP_LINE + 2];
	struct loader b = { .version = 2 };
	datum k = l->keys.d[l->keys.n - 1], v = l->vals.d[l->vals.n - 1];
	const char *why;
	int fatal = 0;
	char *d;

	check_shape(k, v, orig);
	d = redump(k, v);
	snprintf(line, sizeof(line), "%s", d);
	b.dump = b.file = l->file;
	b.dump_known = b.file_known = 1;
	b.line = 2;
	why = load_line(&b, line, &fatal);
	CHECK(!why && b.keys.n == 1, "\"%.300s\" loaded, dumped as \"%.300s\","
	      " which does not load: %s", orig, d, why ? why : "no record");
	CHECK(same(b.keys.d[0], k) && same(b.vals.d[0], v), "\"%.300s\""
	      " loaded, dumped as \"%.300s\", loads as another record", orig,
	      d);
	batch_free(&b.keys);
	batch_free(&b.vals);
}

/* check_kind_note - the key kind the loader learned from a note, stored
 * as the file keeps it (key_kind_encode) and dumped, loads as the same
 * kind */
static void check_kind_note(const struct loader *l, const char *orig)
{
	static char line[MAX_DUMP_LINE + 2];
	struct loader b = { .version = 2 };
	char value[MAX_RECORD];
	const char *why;
	int fatal = 0;
	char *d;

	d = redump(note_key(NOTE_KEYS), key_kind_encode(&l->dump, value,
							sizeof(value)));
	snprintf(line, sizeof(line), "%s", d);
	b.file = l->file;
	b.file_known = l->file_known;
	b.line = 2;
	why = load_line(&b, line, &fatal);
	CHECK(!why && b.keys.n == 0 && b.dump_known
	      && b.dump.hashed == l->dump.hashed
	      && memcmp(b.dump.secret, l->dump.secret, sizeof(b.dump.secret))
	      == 0, "the key-kind note \"%.200s\", dumped as \"%.200s\", does"
	      " not load as the same kind: %s", orig, d, why ? why : "another");
}

/* check_line - load one line; what it adds, and the round trip */
static int check_line(struct loader *l, char *line)
{
	static char orig[MAX_DUMP_LINE + 2];
	size_t nkeys = l->keys.n;
	int fatal = 0, knew = l->dump_known, blank;
	const char *why;

	snprintf(orig, sizeof(orig), "%s", line);
	blank = orig[0] == '#' || !orig[strspn(orig, " ")];
	l->line++;
	why = load_line(l, line, &fatal);
	CHECK(l->keys.n == l->vals.n, "%zu keys, %zu values", l->keys.n,
	      l->vals.n);
	CHECK(!blank || !why, "the comment or blank line \"%.200s\" refused:"
	      " %s", orig, why);
	if (why) {
		CHECK(l->keys.n == nkeys, "\"%.200s\" added a record, but: %s",
		      orig, why);
		return fatal;
	}
	CHECK(!fatal, "fatal without a reason");
	if (blank) {
		CHECK(l->keys.n == nkeys, "a comment or a blank line added a"
		      " record: %.200s", orig);
		return 0;
	}
	if (l->keys.n == nkeys) {
		CHECK(!knew && l->dump_known && orig[strspn(orig, " ")] == 'M',
		      "\"%.200s\" loaded, but added nothing", orig);
		check_kind_note(l, orig);
		return 0;
	}
	CHECK(l->keys.n == nkeys + 1, "\"%.200s\" added %zu records", orig,
	      l->keys.n - nkeys);
	check_round_trip(l, orig);
	return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	size_t i;

	(void)argc;
	(void)argv;
	setenv("TZ", "UTC", 1);
	tzset();
	out_fd = fz_memfd("stdout");
	if (dup2(out_fd, 1) != 1)
		abort();
	if (!lib_symbol(LIB_NETTLE, 2)) {
		fprintf(stderr, "fuzz_dump: libnettle.so.8 cannot be loaded:"
			" hashed keys cannot be tested\n");
		abort();
	}
	for (i = 0; i < sizeof(file_kind.secret); i++)
		file_kind.secret[i] = (unsigned char)(i * 37 + 11);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char line[MAX_DUMP_LINE + 2];
	struct loader l = { .version = 2 };
	size_t i = 2, n;
	const uint8_t *nl;

	if (size < 2)
		return 0;
	cfg.privacy = data[0] & 1;
	opt_raw = (data[0] & 8) != 0;
	if (data[0] & 2) {
		l.file = file_kind;
		l.file.hashed = (int)(cfg.privacy ^ ((data[0] & 4) != 0));
		l.file_known = 1;
	}
	while (i < size) {
		nl = memchr(data + i, '\n', size - i);
		n = nl ? (size_t)(nl - (data + i)) : size - i;
		if (n <= MAX_DUMP_LINE || (!nl && n == MAX_DUMP_LINE + 1)) {
			memcpy(line, data + i, n);
			line[n] = 0;
			if (check_line(&l, line))
				break;
		} else {
			l.line++;	/* "line too long", skipped */
		}
		i += n + 1;
	}
	batch_free(&l.keys);
	batch_free(&l.vals);
	return 0;
}
