"""A backfill of the orders written before the trigger, run in slices
(CALL tt_backfill_in_slices) while the shop keeps writing, queues each
order once: the mock receives every paid order of the last 7 days exactly
once, whether the backfill or the trigger got to it first (an order updated
in a slice being read, an order updated in a transaction left open across
the backfill, orders inserted meanwhile), and nothing older or unpaid.  The
backfill commits each slice: its progress is visible from another session
while it runs, it holds only the lock a SELECT holds on the orders table,
and an insert commits while it runs.  A second run queues nothing."""
import os
import re
import subprocess
import threading

from harness import PIXEL, Mock, Tap, configure, counts, install, no_crash, psql, wait_until

N = 20000            # orders there before the trigger
SLICE = 2000
NEW = 500            # orders inserted while the backfill runs
GATE = 4242          # the advisory lock a row of a middle slice waits on
DB = ["-d", os.environ.get("PGDATABASE") or "postgres"]
tap = Tap(16)
mock = Mock()
configure(mock)
install()

psql("""CREATE TABLE orders (id bigint PRIMARY KEY, email text, total numeric(12,2),
          currency text DEFAULT 'USD', status text NOT NULL, created_at timestamptz NOT NULL)""")
psql(f"""INSERT INTO orders
         SELECT g, 'buyer' || g || '@example.com', (g % 500) + 0.99, 'USD',
                CASE WHEN g % 10 = 0 THEN 'new' ELSE 'paid' END,
                CASE WHEN g % 97 = 0 THEN now() - interval '10 days'
                     ELSE now() - (g % 150) * interval '1 hour' END
           FROM generate_series(1, {N}) g""")
# the gate: the backfill's condition waits on it at one row (a test hook; a
# shop's condition is NEW.status = 'paid')
gate_row = 9001     # paid: the condition calls the gate only for paid orders
psql(f"""CREATE FUNCTION public.gate(id bigint) RETURNS boolean LANGUAGE plpgsql AS $$
         BEGIN
             IF id = {gate_row} THEN
                 PERFORM pg_advisory_lock_shared({GATE});
                 PERFORM pg_advisory_unlock_shared({GATE});
             END IF;
             RETURN true;
         END $$""")
psql("SELECT tiktok_capi.tt_attach('orders', 'Purchase', condition => $$NEW.status = 'paid' AND public.gate(NEW.id)$$)")
tap.ok(counts() == {}, "the orders written before the trigger queued nothing", counts())

# an order read in the gated slice before the gate row (same block): the trigger will queue it first
same_block = psql(f"""SELECT id FROM orders
                       WHERE (ctid::text::point)[0] = (SELECT (ctid::text::point)[0] FROM orders WHERE id = {gate_row})
                         AND id < {gate_row} AND status = 'paid' AND created_at > now() - interval '7 days'
                       ORDER BY id DESC LIMIT 1""")
late_row = 15001     # in a later slice: updated in a transaction left open across the backfill



def wait_for_line(proc, text):
    """Read a psql session's output until it echoes text"""
    for line in proc.stdout:
        if line.strip() == text:
            return
        if "ERROR" in line:
            raise RuntimeError(line)
    raise RuntimeError(f"psql ended before {text!r}")


gate = subprocess.Popen(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", *DB], stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
gate.stdin.write(f"SELECT pg_advisory_lock({GATE});\n\\echo gate closed\n")
gate.stdin.flush()
wait_for_line(gate, "gate closed")
open_txn = subprocess.Popen(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", *DB], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
open_txn.stdin.write(f"BEGIN;\nUPDATE orders SET total = total + 1 WHERE id = {late_row};\n\\echo updated\n")
open_txn.stdin.flush()
wait_for_line(open_txn, "updated")

result = {}


def backfill():
    r = subprocess.run(["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", *DB, "-c",
                        f"CALL tiktok_capi.tt_backfill_in_slices('orders', now() - interval '30 days', slice_rows => {SLICE})"],
                       capture_output=True, text=True, timeout=600)
    result.update(rc=r.returncode, out=r.stdout.strip(), err=r.stderr)


runner = threading.Thread(target=backfill)
runner.start()


def progress():
    return psql("SELECT state || '|' || slices || '|' || scanned || '|' || queued FROM tiktok_capi.backfill_progress")


seen = wait_until(lambda: (lambda p: p if p and p.startswith("running|") and int(p.split("|")[1]) >= 3 else None)(progress()), 60)
tap.ok(seen is not None, "while it runs, another session sees its progress, slice by slice (committed)", progress())
pid = psql("SELECT pid FROM tiktok_capi.backfills")
locks = psql(f"""SELECT string_agg(DISTINCT mode, ',') FROM pg_locks
                  WHERE pid = {pid} AND relation = 'orders'::regclass""")
tap.ok(locks == "AccessShareLock", "it holds on the orders table only the lock a SELECT holds", locks)
psql(f"""INSERT INTO orders SELECT g, 'new' || g || '@example.com', 5, 'USD', 'paid', now()
           FROM generate_series({N + 1}, {N + NEW}) g""")
tap.ok(psql(f"SELECT count(*) FROM tiktok_capi.outbox WHERE event_id::bigint > {N}") == str(NEW),
       "orders inserted meanwhile commit, and their trigger queues them", NEW)
psql(f"UPDATE orders SET total = total + 1 WHERE id = {same_block}")
tap.ok(psql(f"SELECT count(*) FROM tiktok_capi.outbox WHERE event_id = '{same_block}'") == "1",
       "an order of the slice being read, updated meanwhile, is queued by its trigger", same_block)

gate.stdin.write(f"SELECT pg_advisory_unlock({GATE});\n\\q\n")
gate.stdin.flush()
gate.wait(30)
runner.join(600)
slices = [line for line in result.get("err", "").splitlines() if re.match(r"NOTICE:  tt_backfill orders slice \d+:", line)]
tap.diag(slices[0] if slices else result.get("err", "")[:500])
tap.ok(result.get("rc") == 0, "the backfill finishes", result.get("err", "")[-500:])
open_txn.stdin.write("COMMIT;\n\\q\n")
open_txn.stdin.flush()
open_txn.wait(30)

row = psql("SELECT state, slices, scanned, queued, known, too_old FROM tiktok_capi.backfill_progress").split("|")
tap.diag(f"backfill_progress: {row}")
tap.ok(row[0] == "finished" and int(row[1]) == len(slices) and int(row[1]) >= N // SLICE,
       "a NOTICE per slice, as many as the progress row counts", (row, len(slices)))
tap.ok(result.get("out") == row[3], "CALL returns in queued what it queued", (result.get("out"), row[3]))
too_old = sum(1 for g in range(1, N + 1) if g % 97 == 0 and g % 10 != 0)
tap.ok(int(row[5]) == too_old, "the paid orders 10 days old are counted as too old", (row[5], too_old))
tap.ok(int(row[4]) >= 1, "the order its trigger queued first is found known", row[4])

expected = set(psql("""SELECT id FROM orders WHERE status = 'paid' AND created_at > now() - interval '7 days'""").split())
tap.ok(wait_until(lambda: counts() == {"sent": len(expected)}, 120), "every event is sent", (counts(), len(expected)))
keys = mock.keys()
got = {i for (p, e, i) in keys if p == PIXEL and e == "Purchase"}
tap.ok(got == expected, "the mock received every paid order of the last 7 days, and nothing else",
       (len(got), len(expected), sorted(got ^ expected)[:5]))
twice = {k: n for k, n in keys.items() if n != 1}
tap.ok(not twice, "each exactly once", list(twice.items())[:5])
tap.ok(str(late_row) in got and same_block in got, "the orders the trigger and the backfill raced on among them")

again = psql("CALL tiktok_capi.tt_backfill_in_slices('orders', now() - interval '30 days', slice_rows => 5000)")
tap.ok(again == "0", "a second run queues nothing", again)
no_crash(tap)
tap.done()
