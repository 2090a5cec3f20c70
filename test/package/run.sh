#!/usr/bin/env bash
# The Debian package, from build to purge, and the PGXN META.json: builds
# postgresql-15-tiktok-capi (make deb), installs it with apt, checks where
# dpkg put its files, creates the extension from it in a throw-away cluster
# that preloads it and delivers one event to the mock Events API, then purges
# it.  Prints TAP; the cluster's checks are a subtest, indented.
#
# The package installs to the paths `make install` uses, and the other
# suites run on those: whatever happens, the package is purged at the end
# and the tree's build installed again (make install).  Needs root (or sudo).
set -u
cd "$(dirname "$0")/../.."
PGVER=${PGVER:-$(pg_config --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')}
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
PKG=postgresql-$PGVER-tiktok-capi
LIBDIR=$(pg_config --pkglibdir)
EXTDIR=$(pg_config --sharedir)/extension
log=$(mktemp -d)
n=0
check() {	# check DESCRIPTION COMMAND...: one TAP line, the command's output as diagnostics when it fails
	n=$((n + 1))
	if "${@:2}" > "$log/out" 2>&1; then
		echo "ok $n - $1"
	else
		echo "not ok $n - $1"
		tail -20 "$log/out" | sed 's/^/#   /'
		return 1
	fi
}

# whatever happened: no package left, the tree's build installed again
restored=0
restore() {
	if dpkg-query -W -f='${Status}' "$PKG" 2>/dev/null | grep -q installed; then
		$SUDO apt-get purge -y -qq "$PKG" > /dev/null 2>&1
	fi
	[ "$restored" = 1 ] || $SUDO make -s install > /dev/null 2>&1
	rm -rf "$log"
}
trap restore EXIT

echo "1..12"

# META.json: valid JSON, at the control file's version
version=$(sed -n "s/^default_version = '\(.*\)'/\1/p" tiktok_capi.control)
meta_version() {
	python3 -c 'import json, sys; m = json.load(open("META.json"))
v = {m["version"], m["provides"]["tiktok_capi"]["version"]}
print(v); sys.exit(v != {sys.argv[1]})' "$version"
}
check "META.json's version and its extension's are the control file's default_version ($version)" meta_version
deb_version() { dpkg-parsechangelog -S Version | grep -qx "$version-[0-9]*"; }
check "debian/changelog's version is $version-N" deb_version

# the package, built once, from a copy of the tree
before=$(git status --porcelain --untracked-files=all)
start=$SECONDS
check "make deb builds $PKG" make -s deb
echo "# make deb: $((SECONDS - start)) s"
deb=$(ls build/deb/${PKG}_"$version"-*_*.deb 2>/dev/null | head -1)
after=$(git status --porcelain --untracked-files=all)
same_status() { [ "$before" = "$after" ] || { diff <(echo "$before") <(echo "$after"); false; }; }
check "make deb leaves the repository as it was (its output is in build/deb)" same_status

check "apt-get installs $(basename "${deb:-the .deb}")" \
	env DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "./$deb"
dpkg -L "$PKG" > "$log/files" 2>&1
listed() { for f in "$@"; do grep -qx "$f" "$log/files" || { echo "missing: $f"; return 1; }; done; }
check "dpkg -L lists the library in $LIBDIR" listed "$LIBDIR/tiktok_capi.so"
check "dpkg -L lists the control file in $EXTDIR" listed "$EXTDIR/tiktok_capi.control"
check "dpkg -L lists every install and upgrade script in $EXTDIR" \
	listed $(ls sql/tiktok_capi--*.sql | sed "s|^sql/|$EXTDIR/|")
check "the files on disk are the package's (dpkg --verify)" dpkg --verify "$PKG" && from_package=1

# a cluster started now preloads the package's library
in_cluster() {
	pg_virtualenv -t -v "$PGVER" -o shared_preload_libraries=tiktok_capi \
		-o "tiktok_capi.api_url=http://127.0.0.1:9/open_api/v1.3/event/track/" \
		python3 test/package/delivers_from_package.py "$version" > "$log/cluster.tap" 2>&1
}
if [ "${from_package:-0}" = 1 ]; then
	in_cluster
else
	printf '1..1\nnot ok 1 - the cluster is not started: the package is not installed\n' > "$log/cluster.tap"
fi
grep -v -e '^Creating new PostgreSQL cluster' -e '^Dropping cluster' "$log/cluster.tap" | sed 's/^/    /'

check "apt-get purge removes $PKG" env DEBIAN_FRONTEND=noninteractive $SUDO apt-get purge -y -qq "$PKG"
gone() { for f in "$LIBDIR/tiktok_capi.so" "$EXTDIR/tiktok_capi.control"; do [ ! -e "$f" ] || { echo "left: $f"; return 1; }; done; }
check "the purge leaves no library and no control file behind" gone
reinstall() { $SUDO make -s install && [ -e "$LIBDIR/tiktok_capi.so" ] && [ -e "$EXTDIR/tiktok_capi.control" ]; }
check "make install puts the tree's build back for the suites after this one" reinstall && restored=1
