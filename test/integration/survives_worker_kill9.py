"""kill -9 of the worker, three times during a drain, loses nothing: the
server restarts its processes, the launcher starts a new worker, the
events the dead one had claimed are still pending in the table (its claim
lived in its memory), and all are delivered."""
import os
import signal
import time

from harness import PIXEL, Tap, counts, drained, no_crash, slow_backlog, wait_until, worker_pid

N = 20000
KILLS = 3
tap = Tap(6)
mock, ids = slow_backlog(N)

killed = 0
for k in range(KILLS):
    pid = wait_until(worker_pid, 30)
    before = counts().get("sent", 0)
    # kill while it is busy: after it has made progress since its start
    wait_until(lambda: counts().get("sent", 0) > before + 200, 30, 0.05)
    if pid and worker_pid() == pid:
        os.kill(pid, signal.SIGKILL)
        killed += 1
        wait_until(lambda: worker_pid() not in (None, pid), 30)
tap.ok(killed == KILLS, f"the worker was killed {KILLS} times mid-drain", killed)
sent_at_last_kill = counts().get("sent", 0)
tap.ok(sent_at_last_kill < N, "the kills came before the end of the drain", sent_at_last_kill)
tap.ok(wait_until(lambda: drained(N), 180), f"all {N} events settled after the kills", counts())
tap.ok(counts().get("sent") == N, "every event is sent", counts())
keys = mock.keys()
tap.ok(set(keys) == {(PIXEL, "Purchase", i) for i in ids}, "the API accepted every event",
       len(keys))
twice = sum(1 for n in keys.values() if n > 1)
tap.diag(f"sent more than once (same event_id, requests in flight at a kill): {twice}")
no_crash(tap, allowed_kills=KILLS)
mock.stop()
tap.done()
