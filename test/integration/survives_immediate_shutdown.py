"""An immediate shutdown of the server in the middle of a drain (no
checkpoint, as in a power cut) and a restart lose nothing: the outbox is
WAL-logged, and the new worker takes back what was in flight."""
import os
import subprocess

from harness import PIXEL, Tap, counts, drained, no_crash, slow_backlog, wait_until

N = 20000
tap = Tap(6)
mock, ids = slow_backlog(N)

wait_until(lambda: counts().get("sent", 0) > 2000, 60, 0.05)
version = os.environ["PGVERSION"]
stop = subprocess.run(["pg_ctlcluster", version, "regress", "stop", "-m", "immediate"],
                      capture_output=True, text=True)
tap.ok(stop.returncode == 0, "the server stopped immediately mid-drain", stop.stderr)
start = subprocess.run(["pg_ctlcluster", version, "regress", "start"], capture_output=True, text=True)
tap.ok(start.returncode == 0, "the server restarted", start.stderr)
sent_after_restart = counts().get("sent", 0)
tap.ok(sent_after_restart < N, "the shutdown came before the end of the drain", sent_after_restart)
tap.ok(wait_until(lambda: drained(N), 180), f"all {N} events settled after the restart", counts())
keys = mock.keys()
tap.ok(counts().get("sent") == N and set(keys) == {(PIXEL, "Purchase", i) for i in ids},
       "every event is sent and the API accepted each one", (counts(), len(keys)))
tap.diag(f"sent more than once (same event_id): {sum(1 for n in keys.values() if n > 1)}")
no_crash(tap)
mock.stop()
tap.done()
