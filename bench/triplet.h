/*
 * triplet.h - the bench's triplets, shared by client.c and fill.c
 * (bench/fill-postgrey.pl spells the same rules in Perl).
 *
 * A prefilled triplet is a class letter and a number i: 'k' known
 * (already passed), 'p' pending (deferred once, inside --delay, so a
 * request for it is an early retry). For triplet i the client sends
 *
 *	client_address	10.A.B.C	A = i>>16 & 255, B = i>>8 & 255,
 *					C = 1 + i % 250	(network 10.A.B.0/24)
 *	client_name	mx<i%1000>.senders.example.com
 *	sender		<class><i>.Bounce-<any number>@list<i%1000>.example.org
 *	recipient	User<i%50000>@example.net
 *
 * and both greylistd and postgrey key it on the network, the sender in
 * lower case with its standalone number turned into '#', and the
 * recipient in lower case:
 *
 *	greylistd	"T\n10.A.B.0\n<class><i>.bounce-#@list<i%1000>.example.org
 *			 \nuser<i%50000>@example.net"
 *	postgrey	"10.A.B.0/<class><i>.bounce-#@.../user<i%50000>@example.net"
 *
 * The varying VERP-like number in the sender makes every request differ
 * on the wire while the key stays the same: the normalisation is part of
 * what is measured, and a mismatch between the fillers and the servers
 * shows up as a wrong answer, not as a silently different workload.
 */
#ifndef BENCH_TRIPLET_H
#define BENCH_TRIPLET_H

#include <stdio.h>

/* the client network of triplet i, as both servers write it */
static inline void triplet_net(char *buf, size_t size, unsigned long i)
{
	snprintf(buf, size, "10.%lu.%lu.0", (i >> 16) & 255, (i >> 8) & 255);
}

/* the client address the request carries */
static inline void triplet_addr(char *buf, size_t size, unsigned long i)
{
	snprintf(buf, size, "10.%lu.%lu.%lu", (i >> 16) & 255, (i >> 8) & 255,
		 1 + i % 250);
}

/* the sender as the servers key it (normalised) */
static inline void triplet_sender_key(char *buf, size_t size, char cls,
				      unsigned long i)
{
	snprintf(buf, size, "%c%lu.bounce-#@list%lu.example.org", cls, i,
		 i % 1000);
}

/* the sender on the wire; "verp" is any number */
static inline void triplet_sender(char *buf, size_t size, char cls,
				  unsigned long i, unsigned verp)
{
	snprintf(buf, size, "%c%lu.Bounce-%u@list%lu.example.org", cls, i,
		 verp, i % 1000);
}

/* the recipient as keyed (lower case) and on the wire */
static inline void triplet_rcpt_key(char *buf, size_t size, unsigned long i)
{
	snprintf(buf, size, "user%lu@example.net", i % 50000);
}

static inline void triplet_rcpt(char *buf, size_t size, unsigned long i)
{
	snprintf(buf, size, "User%lu@example.net", i % 50000);
}

#endif
