# greylistd - see README.
#
#   make            build ./greylistd (the helper) and ./greylistctl (the
#                   operator's program); make CC=clang works too
#   make run        build and serve on ./run/greylistd.sock, one process per
#                   connection (systemd-socket-activate), database in ./run
#   make check      build and run test.sh (SANITIZE=1: with ASan and UBSan)
#   make bench      greylistd against postgrey (bench/results.md)
#   make bench-milter  a milter session's cost (bench/results.md, Milter)
#   make bench-exim what each Exim RCPT costs: a greylistd process per
#                   connection, under systemd (as root; bench/results.md)
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
UNITDIR  ?= $(PREFIX)/lib/systemd/system
SYSCONFDIR ?= /etc
LOCALSTATEDIR ?= /var/lib

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
# libgdbm: the database. greylistctl also links libsystemd, to read the
# journal for its report. Both load libsystemd, libnettle (the HMAC of
# --privacy), libpcre2-8 (postgrey's whitelists are Perl regular
# expressions) and libhiredis (the Redis store) with dlopen, only when
# needed (see log.c); their -dev packages are build dependencies for the
# headers.
LDLIBS   = -lgdbm
CTL_LIBS = -lsystemd
PATHS    = -DSYSCONFDIR='"$(SYSCONFDIR)"' -DLOCALSTATEDIR='"$(LOCALSTATEDIR)"'

ifeq ($(SANITIZE),1)
SAN      = -fsanitize=address,undefined -fno-omit-frame-pointer \
	   -fno-sanitize-recover=all
HARDEN_CPP =
endif

ALL_CPPFLAGS = $(CPPFLAGS) $(HARDEN_CPP) $(PATHS)
ALL_CFLAGS   = $(CFLAGS) $(WARN) $(HARDEN) $(SAN)
ALL_LDFLAGS  = $(LDFLAGS) $(LDHARDEN) $(SAN)

# Debian packages: to build, to test, to run under `make run`. The tests
# unpack Exim and Sendmail without installing them (they conflict with
# postfix), so the libraries those binaries link that nothing else in the
# list brings are in TEST_DEPS (libgnutls-dane0 ... libwrap0).
BUILD_DEPS = gcc make libc6-dev libgdbm-dev libsystemd-dev libpcre2-dev \
	     nettle-dev libhiredis-dev
TEST_DEPS  = gdbmtool systemd socat faketime postfix swaks procps \
	     dnsmasq-base postgrey db5.3-util m4 \
	     util-linux strace iproute2 cppcheck clang-tidy shellcheck \
	     openbsd-inetd valgrind man-db perl redis-server redis-tools \
	     debootstrap git python3 python3-prometheus-client chromium \
	     libgnutls-dane0 libidn12 libldap-2.5-0 liblockfile1 libwrap0 \
	     $(FUZZ_DEPS)
RUN_DEPS   = systemd socat
FUZZ_DEPS  = clang libclang-rt-14-dev
BENCH_DEPS = postgrey libberkeleydb-perl systemd time procps redis-server redis-tools

all: greylistd greylistctl

# The modules both programs share (greylist.h lists them).
SHARED = config.o log.o triplet.o rule.o whitelist.o db.o redis.o

greylistd: greylistd.o $(SHARED)
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ greylistd.o $(SHARED) \
		$(LDLIBS)

# greylistctl's own modules: the commands, stats, the report and its page,
# explain, the import of postgrey's database
CTL_OBJS = greylistctl.o stats.o report.o html.o explain.o postgrey.o

greylistctl: $(CTL_OBJS) $(SHARED)
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $(CTL_OBJS) \
		$(SHARED) $(LDLIBS) $(CTL_LIBS)

%.o: %.c greylist.h greylistctl.h .flags
	$(CC) $(ALL_CPPFLAGS) $(ALL_CFLAGS) -c -o $@ $<

# .flags changes when the compiler or its flags do (SANITIZE=1, CC=...),
# so that no object built with other flags is linked in.
FLAGS_NOW = $(CC) $(ALL_CPPFLAGS) $(ALL_CFLAGS) $(ALL_LDFLAGS)
.flags: FORCE
	@echo '$(FLAGS_NOW)' | cmp -s - $@ || echo '$(FLAGS_NOW)' > $@
FORCE:

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
	$(MAKE) all
	./test.sh

# make bench: greylistd against postgrey, both on this machine, in one run
# (bench/bench.sh; writes bench/results.md, which the README quotes)
bench: deps-build
	$(call need,$(BENCH_DEPS))
	$(MAKE) all
	GREYLISTD=$(CURDIR)/greylistd GREYLISTCTL=$(CURDIR)/greylistctl bench/bench.sh

# make bench-milter: a milter session's cost against the same session
# through the policy protocol (bench/milter.sh; the section "Milter" of
# bench/results.md)
bench-milter: deps-build
	$(call need,systemd perl hyperfine)
	$(MAKE) all
	GREYLISTD=$(CURDIR)/greylistd bench/bench.sh milter

# make bench-exim: the cost of a connection per RCPT, without systemd and
# under a real one booted in private namespaces (bench/exim-rcpt.sh; root)
bench-exim: deps-build
	$(call need,$(BENCH_DEPS) socat perl util-linux)
	$(MAKE) all
	GREYLISTD=$(CURDIR)/greylistd bench/exim-rcpt.sh

# make fuzz: every libFuzzer target for FUZZ_SECONDS each (fuzz/run.sh;
# make check runs 15 s each, and replays fuzz/regressions/)
FUZZ_SECONDS ?= 600
fuzz: deps-build
	$(call need,$(FUZZ_DEPS))
	fuzz/run.sh $(FUZZ_SECONDS)

RUNDIR = $(CURDIR)/run
run: deps-run
	$(MAKE) all
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

# install - the two programs, the units (Postfix's policy protocol, the
# milter's, Debian greylistd's protocol for Exim, the metrics timer), the
# man pages, the configuration
# file and the whitelist (an admin's own are never overwritten), the
# greylistd system user (sysusers.d) and the Exim ACL. Every path inside
# them (/usr/sbin/greylistd, /etc/greylistd/, the database) is rewritten to
# this install's. Units go where systemd looks for local ones
# ($(PREFIX)/lib/systemd/system), never /lib/systemd/system. A file that
# another Debian package owns (Debian's unrelated greylistd package has
# /usr/sbin/greylistd, greylistd.socket, /etc/greylistd/config ...) is never
# overwritten: make install checks with dpkg -S and refuses. With DESTDIR
# (packaging), nothing outside it is touched, no check is made unless
# OWNER_CHECK=yes, and an ordinary user can run it.
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
DOCDIR      ?= $(PREFIX)/share/doc/greylistd
OWNER_CHECK ?= $(if $(DESTDIR),no,yes)
# Debian's prometheus-node-exporter reads *.prom here (the default of its
# --collector.textfile.directory), a directory of root's; the symlink
# greylistd.prom in it names the file greylistd-metrics.service writes as
# the user greylistd, elsewhere (see that unit).
TEXTFILEDIR ?= /var/lib/prometheus/node-exporter
METRICS_FILE = /var/lib/greylistd-metrics/greylistd.prom
REWRITE = sed -e 's|/usr/sbin/greylist|$(SBINDIR)/greylist|g' \
	-e 's|/etc/greylistd/|$(SYSCONFDIR)/greylistd/|g' \
	-e 's|/var/lib/greylistd/greylistd.db|$(LOCALSTATEDIR)/greylistd/greylistd.db|g'
# source:destination, and whether an existing file is kept (keep)
INSTALL_FILES = \
	greylistd:$(SBINDIR)/greylistd:755 \
	greylistctl:$(SBINDIR)/greylistctl:755 \
	greylistd.socket:$(UNITDIR)/greylistd.socket:644 \
	greylistd@.service:$(UNITDIR)/greylistd@.service:644 \
	greylistd-milter.socket:$(UNITDIR)/greylistd-milter.socket:644 \
	greylistd-milter@.service:$(UNITDIR)/greylistd-milter@.service:644 \
	greylistd-metrics.service:$(UNITDIR)/greylistd-metrics.service:644 \
	greylistd-metrics.timer:$(UNITDIR)/greylistd-metrics.timer:644 \
	greylistd-protocol.socket:$(UNITDIR)/greylistd-protocol.socket:644 \
	greylistd-protocol@.service:$(UNITDIR)/greylistd-protocol@.service:644 \
	greylistd.8:$(MANDIR)/man8/greylistd.8:644 \
	greylistctl.8:$(MANDIR)/man8/greylistctl.8:644 \
	exim4-acl.conf:$(DOCDIR)/exim4-acl.conf:644 \
	greylistd-lan.conf:$(DOCDIR)/greylistd-lan.conf:644 \
	doc/prometheus-rules.yml:$(DOCDIR)/prometheus-rules.yml:644 \
	greylistd.conf:$(SYSCONFDIR)/greylistd/greylistd.conf:644:keep \
	whitelist:$(SYSCONFDIR)/greylistd/whitelist:644:keep

install: all
	@if [ "$(OWNER_CHECK)" = yes ]; then \
	  for f in $(INSTALL_FILES) link:$(TEXTFILEDIR)/greylistd.prom; do \
	    dst=$${f#*:}; dst=$${dst%%:*}; \
	    case $$dst in */systemd/system/*) \
	      dst="$$dst */systemd/system/$${dst##*/}" ;; esac; \
	    for d in $$dst; do \
	      if owner=$$(dpkg -S "$$d" 2>/dev/null); then \
	        echo "make install: refusing: $$d belongs to a Debian package:" >&2; \
	        echo "  $$owner" >&2; \
	        echo "  (Debian's own greylistd package is an unrelated greylister" \
	             "for Exim; remove it, or install with another PREFIX)" >&2; \
	        exit 1; \
	      fi; \
	    done; \
	  done; \
	fi
	@for f in $(INSTALL_FILES); do \
	  src=$${f%%:*}; rest=$${f#*:}; dst=$(DESTDIR)$${rest%%:*}; \
	  mode=$${rest#*:}; keep=$${mode#*:}; mode=$${mode%%:*}; \
	  install -d "$${dst%/*}" || exit 1; \
	  if [ "$$keep" = keep ] && [ -e "$$dst" ]; then \
	    echo "kept $$dst (yours; the new one is $$src)"; continue; \
	  fi; \
	  case $$mode in \
	  755) install -m 0755 "$$src" "$$dst" ;; \
	  *) $(REWRITE) "$$src" > "$$dst.new" && chmod 0644 "$$dst.new" \
	     && mv -f "$$dst.new" "$$dst" ;; \
	  esac || exit 1; \
	  echo "installed $$dst"; \
	done
	@install -d $(DESTDIR)$(TEXTFILEDIR) \
	  && ln -sfn $(METRICS_FILE) $(DESTDIR)$(TEXTFILEDIR)/greylistd.prom \
	  && echo "installed $(DESTDIR)$(TEXTFILEDIR)/greylistd.prom -> $(METRICS_FILE)"
	@install -d $(DESTDIR)$(SYSUSERSDIR)
	printf 'u greylistd - "greylistd policy helper" $(LOCALSTATEDIR)/greylistd /usr/sbin/nologin\n' \
		> $(DESTDIR)$(SYSUSERSDIR)/greylistd.conf
	@if [ -z "$(DESTDIR)" ]; then \
	  systemd-sysusers $(SYSUSERSDIR)/greylistd.conf; \
	  [ ! -d /run/systemd/system ] || systemctl daemon-reload; \
	  echo "Now: edit $(SYSCONFDIR)/greylistd/greylistd.conf," \
	       "run greylistctl check, then systemctl enable --now" \
	       "greylistd.socket, and in main.cf:"; \
	  echo "  smtpd_recipient_restrictions = permit_mynetworks,"; \
	  echo "    reject_unauth_destination,"; \
	  echo "    check_policy_service { inet:127.0.0.1:10023, default_action=DUNNO }"; \
	  echo "Metrics for Prometheus (node_exporter's textfile collector):" \
	       "systemctl enable --now greylistd-metrics.timer"; \
	  echo "For Exim with Debian greylistd's ACL statements:" \
	       "systemctl enable --now greylistd-protocol.socket (README)."; \
	fi

clean:
	rm -f greylistd greylistctl *.o .flags
	rm -rf run

.PHONY: FORCE all check run bench bench-milter bench-exim fuzz install \
	clean deps-build deps-test deps-run print-deps
