# tiktok_capi: PGXS build.  `make test` installs what is missing, builds,
# installs and runs every suite in a throw-away cluster.

EXTENSION = tiktok_capi
MODULE_big = tiktok_capi
OBJS = \
	src/settings.o \
	src/util.o \
	src/digest.o \
	src/normalize.o \
	src/countries.o \
	src/normalize_sql.o \
	src/event_rules.o \
	src/event_contents.o \
	src/event.o \
	src/capture_items.o \
	src/capture_mapping.o \
	src/capture_attach.o \
	src/capture_consent.o \
	src/capture_row.o \
	src/capture.o \
	src/capture_backfill.o \
	src/outbox.o \
	src/wake.o \
	src/stats.o \
	src/launcher.o \
	src/worker.o \
	src/worker_claim.o \
	src/worker_send.o \
	src/worker_record.o \
	src/http.o \
	src/log_redact.o \
	src/policy.o

DATA = sql/tiktok_capi--0.1.0.sql sql/tiktok_capi--0.1.0--0.2.0.sql \
	sql/tiktok_capi--0.2.0--0.3.0.sql
REGRESS = hashing phone event requeue
REGRESS_OPTS = --inputdir=test/regress --load-extension=tiktok_capi

# Warnings flags go in PG_CPPFLAGS so they reach gcc and the clang bitcode step
# the version the User-Agent says: the control file's
TT_VERSION := $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" tiktok_capi.control)
PG_CPPFLAGS = -DTT_VERSION='"$(TT_VERSION)"' -Isrc -Wall -Wextra -Werror -Wno-unused-parameter \
	-Wno-sign-compare -Wno-missing-field-initializers
SHLIB_LINK = -lcurl -lcrypto

EXTRA_CLEAN = test/unit/normalize_test test/unit/policy_test $(FUZZERS) build

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)
ifneq ($(wildcard $(PGXS)),)
include $(PGXS)
endif

# PGXS knows no header dependencies: every object follows every header
$(OBJS) $(OBJS:.o=.bc): $(wildcard src/*.h)

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: test deps unit demo bench fuzz fuzzers chaos deb dist

# Install the build and test dependencies that are missing (apt)
deps:
	bash test/install-deps.sh

# The standalone unit tests of the pure-C parts (no PostgreSQL headers)
UNIT_CFLAGS = -std=c99 -D_DEFAULT_SOURCE -O1 -g -Wall -Wextra -Werror -Isrc
unit: test/unit/normalize_test test/unit/policy_test

test/unit/normalize_test: test/unit/tap.h test/unit/normalize_test.c src/normalize.c src/digest.c src/countries.c src/normalize.h
	$(CC) $(UNIT_CFLAGS) -o $@ test/unit/normalize_test.c src/normalize.c src/digest.c src/countries.c -lcrypto

test/unit/policy_test: test/unit/tap.h test/unit/policy_test.c src/policy.c src/policy.h
	$(CC) $(UNIT_CFLAGS) -o $@ test/unit/policy_test.c src/policy.c

# libFuzzer harnesses of the pure-C parts, with ASan and UBSan (clang)
FUZZ_CC ?= clang-14
FUZZ_CFLAGS = -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Isrc
FUZZERS = test/fuzz/normalize_fuzz test/fuzz/policy_fuzz
FUZZ_SECONDS ?= 60
fuzzers: $(FUZZERS)

test/fuzz/normalize_fuzz: test/fuzz/normalize_fuzz.c src/normalize.c src/digest.c src/countries.c src/normalize.h
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ test/fuzz/normalize_fuzz.c src/normalize.c src/digest.c src/countries.c -lcrypto

test/fuzz/policy_fuzz: test/fuzz/policy_fuzz.c src/policy.c src/policy.h
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ test/fuzz/policy_fuzz.c src/policy.c

# Each harness for FUZZ_SECONDS (make test runs them for a few seconds)
fuzz: deps fuzzers
	bash test/fuzz/run.sh $(FUZZ_SECONDS)

# Everything, from a fresh machine: deps, build, install, all suites
test: deps
	$(MAKE) all unit fuzzers
	$(SUDO) $(MAKE) install
	bash test/run-tests.sh

# The main job on an embedded default: throw-away cluster, mock API, orders
demo: deps
	$(MAKE) all
	$(SUDO) $(MAKE) install
	bash test/demo.sh

# The reliability scorecard: 50,000 events under faults, kills and shutdowns
chaos: deps
	$(MAKE) all
	$(SUDO) $(MAKE) install
	bash test/chaos/run.sh

# The benchmarks at full size (several minutes); figures as ratios to baselines
bench: deps
	$(MAKE) all
	$(SUDO) $(MAKE) install
	bash test/bench/run.sh

# The Debian package, postgresql-15-tiktok-capi (debian/, pg_buildext).
# dpkg-buildpackage writes beside the tree it builds, so it builds a copy
# of the tracked and new files in DEB_BUILD_DIR: the .deb lands there,
# outside the repository.
DEB_BUILD_DIR ?= build/deb
deb:
	rm -rf $(DEB_BUILD_DIR)
	mkdir -p $(DEB_BUILD_DIR)/tiktok-capi
	git ls-files -z --cached --others --exclude-standard | \
		tar --null --ignore-failed-read -T - -cf - | tar -xf - -C $(DEB_BUILD_DIR)/tiktok-capi
	cd $(DEB_BUILD_DIR)/tiktok-capi && dpkg-buildpackage -us -uc -b
	rm -rf $(DEB_BUILD_DIR)/tiktok-capi
	ls $(DEB_BUILD_DIR)/*.deb

# The PGXN distribution (META.json) of the committed tree
dist:
	mkdir -p build
	git archive --format=zip --prefix=tiktok_capi-$(TT_VERSION)/ \
		-o build/tiktok_capi-$(TT_VERSION).zip HEAD
