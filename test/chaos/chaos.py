#!/usr/bin/env python3
"""The reliability scorecard of tiktok_capi: everything at once.

While a loader commits orders through the capture trigger in many small
transactions spread over the run, the mock Events API faults 30% of the
requests (HTTP 503, code 40100, code 50002, connection resets, hangs past
the worker's timeout), the worker is killed with SIGKILL at random moments,
the server is stopped with an immediate shutdown (no checkpoint, as in a
power cut) and started again, and a REPEATABLE READ transaction holds its
snapshot, and so the xmin horizon, for a minute.  Then the faults stop and
the outbox drains.

What one run proves, as TAP checks that can each fail:
- every committed order was queued once, and every queued event was
  accepted by the API: none lost (promise 1 and 2 of the design);
- none ended failed: faults, kills and restarts only delay delivery;
- the API accepted nothing but committed events; a key it accepted twice
  (a request whose answer was lost to a hang, a kill or a shutdown) always
  carries the same event_id, which TikTok deduplicates (promise 3);
- nothing stays pending once the faults stop;
- no server process crashed but the worker we killed, and every kill and
  shutdown really happened (a new worker pid; a new postmaster).

It ends with a Markdown table (events committed, accepted by the mock,
lost, sent more than once, ended failed, time to drain, outbox dead tuples)
and the same figures as "# " lines.

    python3 chaos.py [--short] [--seed=N]

run inside a throw-away cluster (test/chaos/run.sh).  The default is the
full run (50,000 events, 10 kills, 2 immediate shutdowns, a 60 s snapshot,
about five minutes); --short is the make test size (5,000 events, 2 kills,
1 shutdown, a 15 s snapshot, about a minute).  Standard library only.
"""
import argparse
import os
import random
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from harness import (PIXEL, Mock, Tap, configure, counts, create_orders, install,  # noqa: E402
                     no_crash, psql, wait_until, worker_pid)

SIZES = {
    # load_s: how long the loader spreads its commits; the chaos happens inside it
    "full": dict(events=50000, load_s=240, kills=10, shutdowns=2, hold_s=60, drain_timeout=300),
    "short": dict(events=5000, load_s=40, kills=2, shutdowns=1, hold_s=15, drain_timeout=120),
}
FAULTS = ["5xx", "40100", "50002", "reset", "hang"]
SNAPSHOT_APP = "tiktok_capi chaos snapshot"
PGVERSION = os.environ.get("PGVERSION", "15")


# Every figure is also a "# " line, so a runner that greps them shows it
def diag(msg):
    print(f"# {msg}", flush=True)


# Returns None instead of raising: the server may be restarting under us,
# and a figure for a progress line is not worth stopping the run for
def try_psql(sql):
    try:
        return psql(sql)
    except RuntimeError:
        return None


# The outbox's counts by status for a progress line; {} while the server restarts
def try_counts():
    try:
        return counts()
    except RuntimeError:
        return {}


class Loader:
    """The shop: orders committed in many transactions of 1 to 60 orders,
    with now and then a bulk import of 200 to 1,000 (a backlog for the
    worker to be caught in), due at even intervals over the load period, on
    two connections at once.
    One transaction in ten waits up to two seconds before its COMMIT, so
    its events are committed later than others that were queued after
    them.  A transaction cut off by a kill or a shutdown is retried; it may
    have committed before the cut, so the insert skips orders that exist."""

    THREADS = 2

    # The schedule is drawn up front from the run's seed
    def __init__(self, n, seconds, rng):
        self.batches = []
        lo = 1
        while lo <= n:
            size = rng.randint(200, 1000) if rng.random() < 0.03 else rng.randint(1, 60)
            hi = min(n, lo + size - 1)
            pause = rng.uniform(0.2, 2.0) if rng.random() < 0.1 else 0.0
            self.batches.append((lo, hi, pause))
            lo = hi + 1
        self.seconds = seconds
        self.lock = threading.Lock()
        self.next = 0
        self.retries = 0
        self.gave_up = []
        self.threads = []

    # t0 is also the clock the kills and shutdowns are scheduled on
    def start(self):
        self.t0 = time.time()
        for _ in range(self.THREADS):
            t = threading.Thread(target=self.run, daemon=True)
            t.start()
            self.threads.append(t)

    # The chaos ends when the last order is committed
    def join(self):
        for t in self.threads:
            t.join()

    # One connection's loop: take the next transaction, wait for its time, commit it
    def run(self):
        while True:
            with self.lock:
                if self.next >= len(self.batches):
                    return
                i = self.next
                self.next += 1
            lo, hi, pause = self.batches[i]
            delay = self.t0 + self.seconds * i / len(self.batches) - time.time()
            if delay > 0:
                time.sleep(delay)
            sleep = f"SELECT pg_sleep({pause:.2f});" if pause else ""
            sql = f"""BEGIN;
                INSERT INTO orders (id, email, phone, total, currency)
                SELECT g, 'buyer' || g || '@example.com',
                       '+1415555' || lpad((g % 10000)::text, 4, '0'), (g % 500) + 0.99, 'USD'
                  FROM generate_series({lo}, {hi}) g
                    ON CONFLICT (id) DO NOTHING;
                {sleep}
                COMMIT;"""
            deadline = time.time() + 120
            while True:
                try:
                    psql(sql)
                    break
                except RuntimeError as e:
                    with self.lock:
                        self.retries += 1
                    if time.time() > deadline:
                        with self.lock:
                            self.gave_up.append((lo, hi, str(e)[:200]))
                        break
                    time.sleep(0.2)


class Snapshot(threading.Thread):
    """A REPEATABLE READ transaction that keeps its snapshot for hold
    seconds while orders and deliveries go on: no dead outbox row can be
    removed meanwhile, and the worker must keep delivering regardless."""

    # The result is read by the main thread once the session has ended
    def __init__(self, hold):
        super().__init__(daemon=True)
        self.hold = hold
        self.result = {}

    # A failure here must show as a failed check, not as a thread's traceback
    def run(self):
        try:
            self.hold_and_watch()
        except Exception as e:  # noqa: BLE001
            self.result["error"] = repr(e)

    # The session, and what it saw: an xmin held, deliveries meanwhile
    def hold_and_watch(self):
        r = self.result
        env = dict(os.environ, PGAPPNAME=SNAPSHOT_APP)
        start = time.time()
        # one session, one -c per statement: the snapshot is taken by the SELECT
        proc = subprocess.Popen(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", "postgres",
                                 "-c", "BEGIN ISOLATION LEVEL REPEATABLE READ",
                                 "-c", "SELECT count(*) FROM tiktok_capi.outbox",
                                 "-c", f"SELECT pg_sleep({self.hold})",
                                 "-c", "COMMIT"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env)
        r["xmin"] = wait_until(lambda: psql(
            f"SELECT backend_xmin FROM pg_stat_activity WHERE application_name = '{SNAPSHOT_APP}'"
            " AND backend_xmin IS NOT NULL"), min(10, self.hold / 2), 0.2)
        r["sent_before"] = try_counts().get("sent", 0)
        time.sleep(max(0.0, start + self.hold - 1.5 - time.time()))
        r["sent_after"] = try_counts().get("sent", 0)
        r["dead_at_end"] = try_psql("SELECT n_dead_tup FROM pg_stat_user_tables"
                                    " WHERE relid = 'tiktok_capi.outbox'::regclass")
        try:
            out, err = proc.communicate(timeout=self.hold + 120)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        r["rc"] = proc.returncode
        r["seconds"] = time.time() - start
        r["err"] = err.strip()[:300]


# When each kill and shutdown comes: random moments of the load period,
# uniform over the time the snapshot is not held (an immediate shutdown, or
# the restart of every process that a killed worker causes, would end it),
# at least GAP seconds apart.  They run one after the other, each until the
# server and a new worker are back, so a late one only comes later.
# Returns [(seconds, kind)] and the snapshot's start.
GAP = 3


def schedule(rng, size):
    load, hold = size["load_s"], size["hold_s"]
    kinds = ["shutdown"] * size["shutdowns"] + ["kill"] * size["kills"]
    snap = rng.uniform(0.1 * load, 0.9 * load - hold)
    window = hold + 2  # the snapshot's time, and a second either side
    for _ in range(100000):
        # drawn on the load period without the window, then shifted past it
        times = sorted(rng.uniform(2, load - 2 - window) for _ in kinds)
        times = [t + window if t > snap - 1 else t for t in times]
        if all(b - a >= GAP for a, b in zip(times, times[1:])):
            rng.shuffle(kinds)
            return list(zip(times, kinds)), snap
    raise RuntimeError("no schedule fits the load period")


# kill -9 of the worker: it must come back as a new process.  Returns
# (happened, what to print)
def kill_worker():
    pid = wait_until(worker_pid, 60)
    if not pid:
        return False, "no worker to kill"
    pending = try_counts().get("pending", 0)
    doing = try_psql(f"SELECT CASE WHEN state = 'active' THEN query ELSE state END"
                     f"  FROM pg_stat_activity WHERE pid = {pid}")
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False, f"worker {pid} was gone before the kill"
    new = wait_until(lambda: (lambda p: p if p not in (None, pid) else None)(worker_pid()), 60)
    return new is not None, (f"worker pid {pid} -> {new}; {pending} events pending, "
                             f"the worker: {doing or 'unknown'}")


# An immediate shutdown and a start: a new postmaster, and a new worker
def immediate_shutdown():
    before = wait_until(lambda: psql("SELECT pg_postmaster_start_time()"), 60)
    old = worker_pid()
    pending = try_counts().get("pending", 0)
    stop = subprocess.run(["pg_ctlcluster", PGVERSION, "regress", "stop", "-m", "immediate"],
                          capture_output=True, text=True)
    start = subprocess.run(["pg_ctlcluster", PGVERSION, "regress", "start"],
                           capture_output=True, text=True)
    after = wait_until(lambda: psql("SELECT pg_postmaster_start_time()"), 60)
    new = wait_until(lambda: (lambda p: p if p not in (None, old) else None)(worker_pid()), 60)
    ok = stop.returncode == 0 and start.returncode == 0 and after and after != before and new
    why = "" if ok else f" (stop: {stop.stderr.strip()[:200]} start: {start.stderr.strip()[:200]})"
    return bool(ok), (f"server started {before} -> {after}, worker pid {old} -> {new}, "
                      f"{pending} events pending at the shutdown{why}")


# One run: set up, chaos during the load, faults off, drain, then checks and scorecard
def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--short", action="store_true", help="the make test size")
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    size = SIZES["short" if args.short else "full"]
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 30)
    rng = random.Random(seed)
    n, kills, shutdowns, hold = size["events"], size["kills"], size["shutdowns"], size["hold_s"]

    tap = Tap(11 + kills + shutdowns)
    diag(f"chaos ({'short' if args.short else 'full'}): {n} events over {size['load_s']} s, "
         f"30% of requests faulted, {kills} kill -9 of the worker, {shutdowns} immediate "
         f"shutdowns, a {hold} s REPEATABLE READ snapshot; seed {seed}")

    mock = Mock()
    # hangs cost the worker one http_timeout (1 s), not minutes; retries come within a second
    configure(mock, batch_size=100, http_timeout="1s", retry_delay="50ms", retry_delay_max="1s")
    install()
    create_orders()
    mock.config(fault_rate=0.3, faults=FAULTS, hang_seconds=3)

    plan, snap_at = schedule(rng, size)
    loader = Loader(n, size["load_s"], rng)
    snapshot = Snapshot(hold)
    actions = sorted(plan + [(snap_at, "snapshot")])
    results = []
    loader.start()
    t0 = loader.t0
    for at, kind in actions:
        time.sleep(max(0.0, t0 + at - time.time()))
        if kind == "snapshot":
            diag(f"t={time.time() - t0:5.1f} s: REPEATABLE READ snapshot held for {hold} s")
            snapshot.start()
            continue
        # a kill or a shutdown ends every session: never while the snapshot is held
        if snapshot.is_alive():
            snapshot.join()
        when = time.time() - t0
        ok, what = kill_worker() if kind == "kill" else immediate_shutdown()
        label = "kill -9 of the worker" if kind == "kill" else "immediate shutdown and restart"
        diag(f"t={when:5.1f} s: {label}: {what}")
        results.append((ok, f"{label} #{sum(1 for r in results if r[2] == kind) + 1} "
                            f"at {when:.0f} s happened", kind, what))
    if snapshot.is_alive() or not snapshot.result:
        snapshot.join()
    loader.join()
    diag(f"t={time.time() - t0:5.1f} s: the loader is done; faults off")

    mock.config(fault_rate=0.0)
    drain_start = time.time()

    # settled: nothing pending, and an outbox row for every committed order
    def settled():
        c = counts()
        total = int(psql("SELECT count(*) FROM orders"))
        return c.get("pending", 0) == 0 and sum(c.values()) >= total
    drained = wait_until(settled, size["drain_timeout"], 0.25)
    drain_s = time.time() - drain_start

    # the figures: orders are the truth of what committed
    committed = {(PIXEL, "Purchase", i) for i in psql("SELECT id FROM orders").split()}
    c = counts()
    outbox = psql("SELECT event_id FROM tiktok_capi.outbox WHERE pixel_code = "
                  f"'{PIXEL}' AND event = 'Purchase'").split()
    outbox_rows = int(psql("SELECT count(*) FROM tiktok_capi.outbox"))
    keys = mock.keys()
    accepted = set(keys)
    lost = committed - accepted
    invented = accepted - committed
    twice = sum(1 for k in keys.values() if k > 1)
    failed = c.get("failed", 0)
    stats = mock.stats()
    time.sleep(2)  # the worker's statistics reach pg_stat once it sleeps
    dead = psql("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = 'tiktok_capi.outbox'::regclass")
    exact_dead = None
    if try_psql("CREATE EXTENSION IF NOT EXISTS pgstattuple") is not None:
        exact_dead = try_psql("SELECT dead_tuple_count FROM pgstattuple('tiktok_capi.outbox')")

    snap = snapshot.result
    tap.ok(len(committed) == n and not loader.gave_up,
           f"the loader committed all {n} orders, retrying {loader.retries} cut-off transactions",
           (len(committed), loader.gave_up[:3]))
    tap.ok(snap.get("rc") == 0 and snap.get("seconds", 0) >= hold and snap.get("xmin"),
           f"a REPEATABLE READ snapshot was held for {hold} s during the load",
           snap)
    tap.ok(snap.get("sent_after", 0) > snap.get("sent_before", 0),
           "the worker kept delivering while the snapshot was held",
           (snap.get("sent_before"), snap.get("sent_after")))
    for ok, desc, _, what in results:
        tap.ok(ok, desc, what)
    tap.ok(all(stats["faults"].get(k, 0) > 0 for k in FAULTS), "every kind of fault was injected",
           stats["faults"])
    tap.ok(drained, "the outbox drained once the faults stopped", c)
    tap.ok(outbox_rows == len(committed) and {(PIXEL, "Purchase", i) for i in outbox} == committed,
           "the outbox holds one event per committed order, and nothing else",
           (outbox_rows, len(committed)))
    tap.ok(not lost, "lost: none (every committed event was accepted by the API)",
           (len(lost), sorted(lost)[:5]))
    tap.ok(failed == 0, "failed: none", (failed, psql(
        "SELECT last_error FROM tiktok_capi.outbox WHERE status = 'failed' LIMIT 3")))
    tap.ok(not invented, "every key the API accepted is a committed event",
           (len(invented), sorted(invented)[:5]))
    tap.ok(set(c) <= {"sent", "failed"}, "nothing stays pending", c)
    no_crash(tap, allowed_kills=kills)

    # the scorecard
    drain = f"{drain_s:.1f} s" if drained else f"not drained after {drain_s:.0f} s"
    print()
    print("| events committed | accepted by the mock | lost | sent more than once | ended failed"
          " | time to drain | outbox dead tuples after the run |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {len(committed)} | {len(accepted)} | {len(lost)} | {twice} | {failed} | {drain} | {dead} |")
    print()
    diag(f"scorecard: events committed {len(committed)}; accepted by the mock {len(accepted)}; "
         f"lost {len(lost)}; sent more than once {twice} (same event_id); ended failed {failed}; "
         f"time to drain {drain}; outbox dead tuples after the run {dead}")
    diag(f"requests {stats['requests']}, accepted {stats['accepted_requests']}, "
         f"events accepted {stats['events_accepted']}, faults {stats['faults']}; "
         f"loader transactions {len(loader.batches)}, retried after a cut {loader.retries}")
    diag(f"snapshot: held {snap.get('seconds', 0):.1f} s, xmin {snap.get('xmin')}, "
         f"sent {snap.get('sent_before')} -> {snap.get('sent_after')} meanwhile, "
         f"outbox n_dead_tup at its end {snap.get('dead_at_end')}")
    diag(f"outbox dead tuples: n_dead_tup {dead} (statistics restart at each crash and shutdown), "
         f"counted by pgstattuple {exact_dead}; {outbox_rows} rows")
    mock.stop()
    tap.done()


if __name__ == "__main__":
    main()
