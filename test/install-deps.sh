#!/usr/bin/env bash
# Installs, with apt, what building and testing tiktok_capi needs and this
# machine lacks.  Does nothing when everything is there.
set -euo pipefail

PGVER=${PGVER:-15}
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo

missing=()
need() { # package, test command
	local pkg=$1; shift
	"$@" >/dev/null 2>&1 || missing+=("$pkg")
}

need postgresql-$PGVER test -x /usr/lib/postgresql/$PGVER/bin/postgres
need postgresql-server-dev-$PGVER test -f /usr/lib/postgresql/$PGVER/lib/pgxs/src/makefiles/pgxs.mk
need postgresql-$PGVER-pgtap test -f /usr/share/postgresql/$PGVER/extension/pgtap.control
need libcurl4-openssl-dev compgen -G "/usr/include/*/curl/curl.h"
need libssl-dev test -f /usr/include/openssl/sha.h
need libtap-parser-sourcehandler-pgtap-perl command -v pg_prove
need libipc-run-perl perl -MIPC::Run -e 1
need gcc command -v gcc
need make command -v make
need python3 command -v python3
need chromium test -x /usr/bin/chromium
need valgrind command -v valgrind
need clang-14 command -v clang-14
need libclang-rt-14-dev compgen -G "/usr/lib/llvm-14/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a"

if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
