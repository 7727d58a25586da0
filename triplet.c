/*
 * triplet.c - from a request's values to a triplet and its keys
 *
 *	NETWORK INPUT. Everything here takes values a client sent: the client
 *	address, the sender, the recipient. Each is bounded before it gets
 *	here (a value of at most MAX_LINE bytes, no NUL, no newline), and each
 *	function writes only into buffers sized for that bound.
 *
 *	The triplet is postgrey's: the client network (IPv4 /24, IPv6 /64 by
 *	default), the sender with postgrey's normalisation, the recipient in
 *	lower case. Its key is "T\n" and the three joined by "\n"; with
 *	--privacy the joined text is replaced by its HMAC-SHA-256 under the
 *	database file's own secret (struct key_kind), computed by nettle.
 */

#define _GNU_SOURCE

#include <arpa/inet.h>
#include <ctype.h>
#include <nettle/hmac.h>
#include <stdio.h>
#include <string.h>

#include "greylist.h"

/* mask_bits - clear all but the first "bits" bits of an address */
void mask_bits(unsigned char *a, size_t len, long long bits)
{
	size_t i;

	for (i = 0; i < len; i++) {
		long long keep = bits - (long long)i * 8;

		if (keep <= 0)
			a[i] = 0;
		else if (keep < 8)
			a[i] &= (unsigned char)(0xff << (8 - keep));
	}
}

/* The first 12 bytes of an IPv4-mapped IPv6 address (::ffff:a.b.c.d). */
static const unsigned char v4mapped[12] =
	{ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

/* parse_address - an IPv4 or IPv6 address; IPv4-mapped IPv6 counts as
 * IPv4. 0, or -1 if it is not an address. */
int parse_address(const char *text, int *family, unsigned char *a)
{
	*family = AF_INET6;
	if (inet_pton(AF_INET, text, a) == 1) {
		*family = AF_INET;
	} else if (inet_pton(AF_INET6, text, a) != 1) {
		return -1;
	} else if (memcmp(a, v4mapped, sizeof(v4mapped)) == 0) {
		memmove(a, a + 12, 4);
		*family = AF_INET;
	}
	return 0;
}

/* network_of - the network an address is keyed by, as text (a buffer of
 * INET6_ADDRSTRLEN): masked to --ipv4cidr or --ipv6cidr bits, or the
 * address itself with --lookup-by-host; -1 if it cannot be written */
int network_of(int family, const unsigned char *bin, char *out)
{
	unsigned char m[16];
	size_t len = family == AF_INET ? 4 : 16;

	memcpy(m, bin, len);
	if (!cfg.lookup_by_host)
		mask_bits(m, len, family == AF_INET ? cfg.ipv4cidr
			  : cfg.ipv6cidr);
	return inet_ntop(family, m, out, INET6_ADDRSTRLEN) ? 0 : -1;
}

/* client_net - parse client_address into the triplet's address, network
 * and auto-whitelist key. The key is the IPv4 address, as postgrey's;
 * for IPv6 it is the network, because a /64 is one site whose servers
 * change address within it (Gmail sends from many addresses of one
 * /64). -1 if it is not an IP address. */
int client_net(const char *text, struct triplet *t)
{
	if (parse_address(text, &t->family, t->bin) != 0
	    || !inet_ntop(t->family, t->bin, t->addr, sizeof(t->addr))
	    || network_of(t->family, t->bin, t->net) != 0)
		return -1;
	memcpy(t->client, t->family == AF_INET ? t->addr : t->net,
	       sizeof(t->client));
	return 0;
}

/* lower - ASCII lower-case copy; dst has room for strlen(src) + 1 */
void lower(char *dst, const char *src)
{
	while (*src) {
		unsigned char c = (unsigned char)*src++;

		*dst++ = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
	}
	*dst = 0;
}

/* is_word - a character of Perl's \w, as postgrey's \b sees it */
static int is_word(int c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z')
		|| (c >= 'A' && c <= 'Z') || c == '_';
}

/* looks_like_tag - a BATV tag starts with ten of [0-9a-z] */
static int looks_like_tag(const char *p, size_t len)
{
	size_t i;

	if (len < 10)
		return 0;
	for (i = 0; i < 10; i++)
		if (!(isdigit((unsigned char)p[i])
		      || (p[i] >= 'a' && p[i] <= 'z')))
			return 0;
	return 1;
}

/* unwrap_batv - "prvs=TAG=user" (or "prvs=user=TAG") becomes "user",
 * as postgrey decides which part is the tag; returns the new length */
static size_t unwrap_batv(char *local, size_t len)
{
	char *a, *b;
	size_t alen, blen;

	if (len < 5 || memcmp(local, "prvs=", 5) != 0)
		return len;
	a = local + 5;
	b = memchr(a, '=', len - 5);
	if (!b || memchr(b + 1, '=', len - (size_t)(b + 1 - local)))
		return len;		/* not exactly three parts */
	alen = (size_t)(b - a);
	b++;
	blen = len - (size_t)(b - local);
	if (blen == 0)
		return len;		/* Perl's split drops the empty part */
	if (looks_like_tag(b, blen) && !looks_like_tag(a, alen)) {
		memmove(local, a, alen);
		return alen;
	}
	memmove(local, b, blen);
	return blen;
}

/* collapse_numbers - each digit run standing alone (between non-word
 * characters, as postgrey's \b\d+\b) becomes '#'; returns the length */
static size_t collapse_numbers(char *s, size_t len)
{
	size_t i = 0, o = 0;

	while (i < len) {
		size_t j = i;

		while (j < len && isdigit((unsigned char)s[j]))
			j++;
		if (j > i && (i == 0 || !is_word(s[i - 1]))
		    && (j == len || !is_word(s[j]))) {
			s[o++] = '#';
			i = j;
		} else if (j > i) {
			memmove(s + o, s + i, j - i);
			o += j - i;
			i = j;
		} else {
			s[o++] = s[i++];
		}
	}
	return o;
}

/* normalise_sender - postgrey's sender rules: lower case, BATV unwrapped,
 * +extension cut, standalone numbers collapsed. An address without "@"
 * (the null sender among them) is kept as it is. */
void normalise_sender(char *dst, const char *src)
{
	char *at;
	size_t local, dom, plus;

	lower(dst, src);
	at = strrchr(dst, '@');
	if (!at)
		return;
	local = (size_t)(at - dst);
	dom = strlen(at);
	local = unwrap_batv(dst, local);
	plus = strcspn(dst, "+");
	if (plus < local)
		local = plus;
	local = collapse_numbers(dst, local);
	memmove(dst + local, at, dom + 1);
}

/* make_triplet - the triplet of a client address, a sender and a
 * recipient, each at most MAX_LINE bytes; -1 if the address is not an
 * IP address */
int make_triplet(const char *addr, const char *sender, const char *rcpt,
		 struct triplet *t)
{
	if (client_net(addr, t) != 0)
		return -1;
	normalise_sender(t->sender, sender);
	lower(t->recipient, rcpt);
	return 0;
}

/* hmac_hex - HMAC-SHA-256 of [p, p+len) under the file's secret, as 64
 * hex digits and a NUL. nettle was loaded at start-up (config_check). */
static void hmac_hex(const struct key_kind *kk, const char *p, size_t len,
		     char out[65])
{
	typedef void feed_fn(struct hmac_sha256_ctx *, size_t, const uint8_t *);
	typedef void digest_fn(struct hmac_sha256_ctx *, size_t, uint8_t *);
	struct hmac_sha256_ctx ctx;
	uint8_t d[SHA256_DIGEST_SIZE];
	size_t i;

	((feed_fn *)lib_symbol(LIB_NETTLE, 0))(&ctx, sizeof(kk->secret),
					       kk->secret);
	((feed_fn *)lib_symbol(LIB_NETTLE, 1))(&ctx, len, (const uint8_t *)p);
	((digest_fn *)lib_symbol(LIB_NETTLE, 2))(&ctx, sizeof(d), d);
	for (i = 0; i < sizeof(d); i++)
		snprintf(out + 2 * i, 3, "%02x", d[i]);
}

/* record_key - "KIND\n" then the parts joined by "\n" (newline never
 * occurs in a part, so no two keys collide), or with a hashed key kind
 * the HMAC of that joined text; NUL-terminated, though the datum does
 * not count the NUL. -1 if the parts do not fit (only load, which reads
 * parts from a file, can give parts that long). */
int record_key(char kind, const char *const *parts, size_t n,
	       const struct key_kind *kk, char *key, size_t size, datum *out)
{
	size_t len = 2, i, plen;
	char hex[65];

	key[0] = kind;
	key[1] = '\n';
	for (i = 0; i < n; i++) {
		plen = strlen(parts[i]);
		if (len + plen + 1 > size)
			return -1;
		memcpy(key + len, parts[i], plen);
		len += plen;
		key[len++] = '\n';
	}
	key[--len] = 0;			/* no newline after the last part */
	if (kk && kk->hashed && kind != 'M') {
		hmac_hex(kk, key + 2, len - 2, hex);
		memcpy(key + 2, hex, sizeof(hex));
		len = 2 + 64;
	}
	*out = (datum){ key, (int)len };
	return 0;
}

/* The key buffers hold any triplet: a network, two values of at most
 * MAX_LINE bytes, the kind and the separators. */
_Static_assert(sizeof(((struct keys *)0)->t)
	       >= 2 + INET6_ADDRSTRLEN + 2 * (MAX_LINE + 1), "T key buffer");

/* triplet_keys - the T key and, with the auto-whitelist, the C key of a
 * triplet (record_key cannot fail on them: see the assertion above) */
void triplet_keys(const struct triplet *t, const struct key_kind *kk,
		  struct keys *k)
{
	const char *tparts[] = { t->net, t->sender, t->recipient };
	const char *cparts[] = { t->client };

	k->ckey = (datum){ NULL, 0 };
	(void)record_key('T', tparts, 3, kk, k->t, sizeof(k->t), &k->tkey);
	if (cfg.awl)
		(void)record_key('C', cparts, 1, kk, k->c, sizeof(k->c),
				 &k->ckey);
}

/* is_digest - s[0, len) is 64 lower-case hex digits: a key part hashed by
 * --privacy. s need not end in a NUL (a GDBM key does not): only len
 * bytes are read. */
int is_digest(const char *s, size_t len)
{
	size_t i;

	if (len != 64)
		return 0;
	for (i = 0; i < len; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return 1;
}
