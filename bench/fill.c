/*
 * fill.c - write a greylistd database directly, for the bench.
 *
 *	fill DB KNOWN PENDING NOW [BLOCK_SIZE]
 *
 * creates DB (GDBM, as greylistd would create it: the default block size
 * unless BLOCK_SIZE is given)
 * with KNOWN passed triplets and PENDING triplets deferred 60 s before
 * NOW, in the record layout the README documents:
 *
 *	key	"T\n<network>\n<sender>\n<recipient>"
 *	value	"1 FIRST LAST PASSED"
 *
 * The sender goes through the same normalisation as greylistd's
 * (lower case, a +extension cut, each number standing alone in the local
 * part turned into '#'); triplet.h says which triplets these are.
 * Going through the socket instead would take about 20 minutes per
 * million records for postgrey.
 */

#include <ctype.h>
#include <gdbm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "triplet.h"

static int is_word(int c)
{
	return isalnum(c) || c == '_';
}

/* normalise - greylistd's (and postgrey's) sender rules, except BATV,
 * which the bench's senders do not use */
static void normalise(char *dst, const char *src)
{
	const char *at = strrchr(src, '@');
	size_t local = at ? (size_t)(at - src) : strlen(src), i = 0, o = 0;
	char tmp[512];

	for (i = 0; src[i] && i < sizeof(tmp) - 1; i++)
		tmp[i] = (char)tolower((unsigned char)src[i]);
	tmp[i] = 0;
	if (!at) {
		strcpy(dst, tmp);
		return;
	}
	if (strcspn(tmp, "+") < local)
		local = strcspn(tmp, "+");
	for (i = 0; i < local;) {
		size_t j = i;

		while (j < local && isdigit((unsigned char)tmp[j]))
			j++;
		if (j > i && (i == 0 || !is_word((unsigned char)tmp[i - 1]))
		    && (j == local || !is_word((unsigned char)tmp[j]))) {
			dst[o++] = '#';
			i = j;
		} else if (j > i) {
			memcpy(dst + o, tmp + i, j - i);
			o += j - i;
			i = j;
		} else {
			dst[o++] = tmp[i++];
		}
	}
	strcpy(dst + o, tmp + (at - src));
}

static int put(GDBM_FILE db, char cls, unsigned long i, long long first,
	       long long last, long long passed)
{
	char net[32], raw[160], sender[160], rcpt[96], key[320], val[80];
	datum k, v;
	int kn, vn;

	triplet_net(net, sizeof(net), i);
	triplet_sender(raw, sizeof(raw), cls, i, (unsigned)(i * 7919 % 100000));
	normalise(sender, raw);
	triplet_rcpt(raw, sizeof(raw), i);
	normalise(rcpt, raw);		/* the local part has no lone number */
	kn = snprintf(key, sizeof(key), "T\n%s\n%s\n%s", net, sender, rcpt);
	vn = snprintf(val, sizeof(val), "1 %lld %lld %lld", first, last,
		      passed);
	k = (datum){ key, kn };
	v = (datum){ val, vn };
	if (gdbm_store(db, k, v, GDBM_REPLACE) != 0) {
		fprintf(stderr, "fill: store: %s\n", gdbm_strerror(gdbm_errno));
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	unsigned long known, pending, i;
	long long now;
	GDBM_FILE db;
	char check[160];

	if (argc != 5 && argc != 6) {
		fprintf(stderr, "usage: fill DB KNOWN PENDING NOW [BLOCK_SIZE]\n");
		return 2;
	}
	known = strtoul(argv[2], NULL, 10);
	pending = strtoul(argv[3], NULL, 10);
	now = strtoll(argv[4], NULL, 10);

	/* the normalisation must give what triplet.h says the key is */
	triplet_sender(check, sizeof(check), 'k', 42, 31337);
	normalise(check, check);
	{
		char want[160];

		triplet_sender_key(want, sizeof(want), 'k', 42);
		if (strcmp(check, want) != 0) {
			fprintf(stderr, "fill: normalised %s, want %s\n", check,
				want);
			return 1;
		}
	}

	db = gdbm_open(argv[1], argc == 6 ? atoi(argv[5]) : 0,
		       GDBM_NEWDB | GDBM_NOLOCK, 0600, NULL);
	if (!db) {
		fprintf(stderr, "fill: %s: %s\n", argv[1],
			gdbm_strerror(gdbm_errno));
		return 1;
	}
	for (i = 0; i < known; i++)
		if (put(db, 'k', i, now - 86400, now - 60, now - 86400 + 600))
			return 1;
	for (i = 0; i < pending; i++)
		if (put(db, 'p', i, now - 60, now - 60, 0))
			return 1;
	if (gdbm_close(db) != 0) {
		fprintf(stderr, "fill: close: %s\n", gdbm_strerror(gdbm_errno));
		return 1;
	}
	return 0;
}
