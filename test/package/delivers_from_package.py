"""Run in a throw-away cluster started after the Debian package was
installed, so the library it preloads is the package's: the extension is
created from the package's files at the control file's version, its worker
runs, and one event reaches the mock Events API, once."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from harness import (PIXEL, Mock, Tap, configure, counts, drained, enqueue, install,  # noqa: E402
                     no_crash, psql, wait_until, worker_pid)

version = sys.argv[1]
tap = Tap(5)
mock = Mock()
configure(mock)
install()
tap.ok(psql("SELECT extversion FROM pg_extension WHERE extname = 'tiktok_capi'") == version,
       f"CREATE EXTENSION installs version {version}",
       psql("SELECT extversion FROM pg_extension WHERE extname = 'tiktok_capi'"))
tap.ok(wait_until(worker_pid, 30), "the worker runs from the preloaded library")
ids = enqueue(1)
tap.ok(wait_until(lambda: drained(1), 30) and counts() == {"sent": 1}, "the event is sent", counts())
keys = mock.keys()
tap.ok(keys == {(PIXEL, "Purchase", i): 1 for i in ids}, "the mock accepted it, once", keys)
no_crash(tap)
mock.stop()
tap.done()
