# greylistd - see README.
#
#   make            build ./greylistd (make CC=clang works too)
#   make run        build and serve on ./run/greylistd.sock, one process per
#                   connection (systemd-socket-activate), database in ./run
#   make check      build and run test.sh (SANITIZE=1: with ASan and UBSan)
#   make bench      greylistd against postgrey (bench/results.md)
#   make fuzz       the fuzz targets, FUZZ_SECONDS (600) each
#   make install    install (PREFIX, DESTDIR)
#
# Our warning and hardening flags are appended to the CFLAGS, CPPFLAGS and
# LDFLAGS you give (as dpkg-buildflags would); CI adds CFLAGS=-Werror.
# `make run` and `make check` install the Debian packages they need when
# any is missing (./make.sh --need: as root, or through sudo); on a machine
# without make, ./make.sh run and ./make.sh check install make first.
# `make -s print-deps` prints the package lists.

PREFIX   ?= /usr/local
SBINDIR  ?= $(PREFIX)/sbin
MANDIR   ?= $(PREFIX)/share/man
UNITDIR  ?= /lib/systemd/system
SYSCONFDIR ?= /etc

CC       ?= cc
CFLAGS   ?= -O2 -g

WARN     = -std=c11 -Wall -Wextra -Wformat=2 -Wshadow -Wconversion \
	   -Wsign-conversion -Wstrict-prototypes -Wmissing-prototypes \
	   -Wcast-qual -Wvla -Wnull-dereference -Wundef -Wwrite-strings \
	   -Wpointer-arith
# GCC's alone: clang calls them unknown, an error under -Werror. Added when
# $(CC) takes them (tried once per make run, on an empty file).
WARN_GCC = -Wformat-overflow=2 -Wformat-truncation=2
ifeq (ok,$(shell $(CC) -Werror $(WARN_GCC) -fsyntax-only -x c /dev/null \
		>/dev/null 2>&1 && echo ok))
WARN    += $(WARN_GCC)
endif
HARDEN   = -fstack-protector-strong -fstack-clash-protection -fPIE \
	   -fcf-protection
ifeq (,$(findstring _FORTIFY_SOURCE,$(CPPFLAGS) $(CFLAGS)))
HARDEN_CPP = -D_FORTIFY_SOURCE=3
endif
LDHARDEN = -pie -Wl,-z,relro -Wl,-z,now -Wl,-z,noexecstack -Wl,--as-needed
LDLIBS   = -lgdbm

ifeq ($(SANITIZE),1)
SAN      = -fsanitize=address,undefined -fno-omit-frame-pointer \
	   -fno-sanitize-recover=all
HARDEN_CPP =
endif

ALL_CPPFLAGS = $(CPPFLAGS) $(HARDEN_CPP)
ALL_CFLAGS   = $(CFLAGS) $(WARN) $(HARDEN) $(SAN)
ALL_LDFLAGS  = $(LDFLAGS) $(LDHARDEN) $(SAN)

# Debian packages: to build, to test, to run under `make run`.
BUILD_DEPS = gcc make libc6-dev libgdbm-dev libsystemd-dev
TEST_DEPS  = gdbmtool systemd socat faketime postfix swaks procps \
	     util-linux strace iproute2 cppcheck clang-tidy openbsd-inetd \
	     valgrind man-db debootstrap git $(FUZZ_DEPS)
RUN_DEPS   = systemd socat
FUZZ_DEPS  = clang libclang-rt-14-dev
BENCH_DEPS = postgrey libberkeleydb-perl systemd time procps

all: greylistd

greylistd: greylistd.c Makefile
	$(CC) $(ALL_CPPFLAGS) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ greylistd.c \
		$(LDLIBS)

# need - install the named Debian packages that are missing (make.sh says
# how: as root, through sudo, or a message naming them and exit 1)
need = @./make.sh --need $(1)

deps-build:
	$(call need,$(BUILD_DEPS))
deps-test: deps-build
	$(call need,$(TEST_DEPS))
deps-run: deps-build
	$(call need,$(RUN_DEPS))

# print-deps - the package lists, one `NAME = packages` line each (the
# README's lists are checked against these by test.sh deps)
print-deps:
	@echo "BUILD_DEPS = $(BUILD_DEPS)"
	@echo "TEST_DEPS = $(TEST_DEPS)"
	@echo "RUN_DEPS = $(RUN_DEPS)"
	@echo "FUZZ_DEPS = $(FUZZ_DEPS)"
	@echo "BENCH_DEPS = $(BENCH_DEPS)"

check: deps-test
	$(MAKE) greylistd
	./test.sh

# make bench: greylistd against postgrey, both on this machine, in one run
# (bench/bench.sh; writes bench/results.md, which the README quotes)
bench: deps-build
	$(call need,$(BENCH_DEPS))
	$(MAKE) greylistd
	GREYLISTD=$(CURDIR)/greylistd bench/bench.sh

# make fuzz: every libFuzzer target for FUZZ_SECONDS each (fuzz/run.sh;
# make check runs 15 s each, and replays fuzz/regressions/)
FUZZ_SECONDS ?= 600
fuzz: deps-build
	$(call need,$(FUZZ_DEPS))
	fuzz/run.sh $(FUZZ_SECONDS)

RUNDIR = $(CURDIR)/run
run: deps-run
	$(MAKE) greylistd
	@mkdir -p $(RUNDIR)
	@echo "greylistd: one process per connection on $(RUNDIR)/greylistd.sock"
	@echo "  database $(RUNDIR)/greylistd.db, log $(RUNDIR)/greylistd.log"
	@echo "  talk to it:  socat - UNIX-CONNECT:$(RUNDIR)/greylistd.sock"
	@echo "  then type a request (name=value lines, an empty line ends it):"
	@echo "    request=smtpd_access_policy"
	@echo "    protocol_state=RCPT"
	@echo "    client_address=192.0.2.1"
	@echo "    sender=alice@example.org"
	@echo "    recipient=bob@example.net"
	@echo "  the delay is 60s here (--delay); Ctrl-C stops the server"
	exec systemd-socket-activate --accept --inetd \
		-l $(RUNDIR)/greylistd.sock $(CURDIR)/greylistd \
		--db=$(RUNDIR)/greylistd.db --log-file=$(RUNDIR)/greylistd.log \
		--delay=60s

# install - the binary, the units (with this SBINDIR in ExecStart), the
# man page, the whitelist (an admin's own is never overwritten) and the
# greylistd system user (sysusers.d). With DESTDIR, nothing outside it is
# touched, and an ordinary user can run it.
SYSUSERSDIR ?= /usr/lib/sysusers.d
install: greylistd
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(UNITDIR) \
		$(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(SYSCONFDIR)/greylistd \
		$(DESTDIR)$(SYSUSERSDIR)
	install -m 0755 greylistd $(DESTDIR)$(SBINDIR)/greylistd
	install -m 0644 greylistd.socket $(DESTDIR)$(UNITDIR)/greylistd.socket
	sed 's|/usr/sbin/greylistd|$(SBINDIR)/greylistd|g' greylistd@.service \
		> $(DESTDIR)$(UNITDIR)/greylistd@.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/greylistd@.service
	install -m 0644 greylistd.8 $(DESTDIR)$(MANDIR)/man8/greylistd.8
	[ -e $(DESTDIR)$(SYSCONFDIR)/greylistd/whitelist ] || \
		install -m 0644 whitelist $(DESTDIR)$(SYSCONFDIR)/greylistd/whitelist
	printf 'u greylistd - "greylistd policy helper" /var/lib/greylistd /usr/sbin/nologin\n' \
		> $(DESTDIR)$(SYSUSERSDIR)/greylistd.conf
	@if [ -z "$(DESTDIR)" ]; then \
	  systemd-sysusers greylistd.conf; \
	  [ ! -d /run/systemd/system ] || systemctl daemon-reload; \
	  echo "Now: systemctl enable --now greylistd.socket, and in main.cf:"; \
	  echo "  smtpd_recipient_restrictions = permit_mynetworks,"; \
	  echo "    reject_unauth_destination,"; \
	  echo "    check_policy_service { inet:127.0.0.1:10023, default_action=DUNNO }"; \
	fi

clean:
	rm -f greylistd
	rm -rf run

.PHONY: all check run bench fuzz install clean deps-build deps-test deps-run \
	print-deps
