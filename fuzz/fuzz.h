/*
 * fuzz/fuzz.h - what the libFuzzer targets share
 *
 * Each target is one file that includes at most one of the tree's .c
 * files (greylistd.c or greylistctl.c with main renamed, report.c,
 * whitelist.c, config.c), so that it can call that file's static
 * functions on the real code, not a copy; fuzz/run.sh links the other
 * modules as objects built with the same sanitizers. This header comes
 * first: the system headers, an invariant check that aborts (libFuzzer
 * keeps the input), and helpers for memory-backed files (memfd), which
 * stand in for the connection, the log file, stdout, stderr and the
 * admins' files, and a read(2) that returns short counts on the
 * connection, as a socket does.
 */

#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* CHECK - an invariant of greylistd; its violation is a finding */
#define CHECK(cond, ...)						\
	do {								\
		if (!(cond)) {						\
			fprintf(stderr, "\nINVARIANT FAILED %s:%d: %s\n  ", \
				__FILE__, __LINE__, #cond);		\
			fprintf(stderr, __VA_ARGS__);			\
			fputc('\n', stderr);				\
			abort();					\
		}							\
	} while (0)

/* fz_memfd - a memory-backed file; the fuzzer cannot go on without it */
__attribute__((unused))
static int fz_memfd(const char *name)
{
	int fd = memfd_create(name, 0);

	if (fd < 0) {
		perror("memfd_create");
		abort();
	}
	return fd;
}

/* fz_path - a name open(2) and fopen(3) take for the memfd */
__attribute__((unused))
static const char *fz_path(int fd, char *buf, size_t size)
{
	snprintf(buf, size, "/proc/self/fd/%d", fd);
	return buf;
}

/* fz_set - make the file hold exactly [p, p+n), offset 0 */
__attribute__((unused))
static void fz_set(int fd, const void *p, size_t n)
{
	size_t o = 0;
	ssize_t w;

	if (ftruncate(fd, 0) != 0)
		abort();
	while (o < n) {
		w = pwrite(fd, (const char *)p + o, n - o, (off_t)o);
		if (w <= 0)
			abort();
		o += (size_t)w;
	}
	if (lseek(fd, 0, SEEK_SET) != 0)
		abort();
}

/* fz_take - what was written to the file since the last call, as a
 * NUL-terminated string (valid until the next call); the file is emptied */
__attribute__((unused))
static char *fz_take(int fd, size_t *len)
{
	static char *buf;
	static size_t cap;
	struct stat st;
	size_t n, o = 0;
	ssize_t r;

	if (fstat(fd, &st) != 0)
		abort();
	n = (size_t)st.st_size;
	if (n + 1 > cap) {
		cap = n + 1 + 4096;
		buf = realloc(buf, cap);
		if (!buf)
			abort();
	}
	while (o < n) {
		r = pread(fd, buf + o, n - o, (off_t)o);
		if (r <= 0)
			abort();
		o += (size_t)r;
	}
	buf[n] = 0;
	*len = n;
	if (ftruncate(fd, 0) != 0 || lseek(fd, 0, SEEK_SET) != 0)
		abort();
	return buf;
}

/* fz_printable - [p, p+n) is printable ASCII only */
__attribute__((unused))
static int fz_printable(const char *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if ((unsigned char)p[i] < 32 || (unsigned char)p[i] > 126)
			return 0;
	return 1;
}

/* The connection (fz_conn_fd), and the schedule of its short reads: a
 * target that includes greylistd.c renames read(2) to fz_read, so that
 * requests and packets arrive in pieces (fz_sched 0: whole reads). */
__attribute__((unused)) static int fz_conn_fd = -1;
__attribute__((unused)) static unsigned fz_sched, fz_nreads;

__attribute__((unused))
static ssize_t fz_read(int fd, void *buf, size_t n)
{
	static const size_t chunk[] = { 1, 2, 5, 13, 64, 511, 4096, 9000 };

	if (fd == fz_conn_fd && fz_sched) {
		size_t cap = chunk[(fz_sched * 3 + fz_nreads++) % 8];

		if (n > cap)
			n = cap;
	}
	return read(fd, buf, n);
}
