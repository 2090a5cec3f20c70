#!/usr/bin/env bash
# Installs, with apt, what building and testing tiktok_capi needs and this
# machine lacks.  Does nothing when everything is there.
#
# A package counts as present only when dpkg says it is installed: a file
# test would be fooled by another package shipping the same file (pgxs.mk
# comes with postgresql-client, the server headers only with -dev).
set -euo pipefail

PGVER=${PGVER:-15}
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo

packages=(
	postgresql-$PGVER
	postgresql-server-dev-$PGVER
	postgresql-$PGVER-pgtap
	libcurl4-openssl-dev
	libssl-dev
	libtap-parser-sourcehandler-pgtap-perl
	libipc-run-perl
	gcc
	make
	python3
	chromium
	valgrind
	clang-14
	libclang-rt-14-dev
	dpkg-dev
	debhelper
	fakeroot
	postgresql-server-dev-all
)

installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

missing=()
for pkg in "${packages[@]}"; do
	installed "$pkg" || missing+=("$pkg")
done

if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
