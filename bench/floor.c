/*
 * floor.c - the least a policy helper can do: answer every request on
 * stdin/stdout with action=DUNNO, touching nothing. Run in greylistd's
 * place it gives the floor of the process-per-connection harness on this
 * machine (fork and exec under systemd-socket-activate, dynamic linking
 * of libc), against which greylistd's start-up and fresh-connection
 * figures can be read.
 */
#define _GNU_SOURCE

#include <string.h>
#include <unistd.h>

int main(void)
{
	static const char answer[] = "action=DUNNO\n\n";
	char buf[65536];
	size_t got = 0;

	for (;;) {
		ssize_t n = read(0, buf + got, sizeof(buf) - got);
		char *end;

		if (n <= 0)
			return 0;
		got += (size_t)n;
		while ((end = memmem(buf, got, "\n\n", 2)) != NULL) {
			size_t used = (size_t)(end + 2 - buf);

			if (write(1, answer, sizeof(answer) - 1) < 0)
				return 74;
			memmove(buf, buf + used, got - used);
			got -= used;
		}
		if (got == sizeof(buf))
			return 76;
	}
}
