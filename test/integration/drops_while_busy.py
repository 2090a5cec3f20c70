"""Dropping what the worker works on while it is busy sending (a large
backlog, a slow API) neither crashes nor hangs anything.  DROP EXTENSION
tiktok_capi CASCADE completes; the worker says once that it waits for
CREATE EXTENSION, and after a fresh CREATE EXTENSION new events are
delivered again -- also when the extension is dropped and created again
while the worker's requests are still in flight: the answers to them must
not settle the new outbox's events.  In another database, a plain DROP
DATABASE fails after PostgreSQL's 5-second wait because the worker is
connected ("being accessed by other users"), and the worker goes on
delivering; DROP DATABASE ... WITH (FORCE) then succeeds, the worker goes
away, and the launcher says once that it waits for the database."""
import time

from harness import (PIXEL, TOKEN, Tap, counts, drained, enqueue, install, no_crash, psql,
                     server_log, slow_backlog, wait_until, worker_pid)

N = 20000           # backlog: at 150 ms a request, far more than these steps take
BOUND_S = 20        # generous: no statement here may take longer
tap = Tap(17)


# The outbox of another database, by status (counts() reads postgres only).
def counts_in(db):
    out = psql("SELECT status, count(*) FROM tiktok_capi.outbox GROUP BY status", db=db)
    return {s: int(c) for s, c in (line.split("|") for line in out.splitlines() if line)}


# Run a statement that may fail; its error, or None, and how long it took.
def timed(sql):
    t0 = time.time()
    try:
        psql(sql)
        err = None
    except RuntimeError as e:
        err = str(e)
    return err, time.time() - t0


# The database the worker is connected to, or None while none runs.
def worker_db():
    return psql("SELECT datname FROM pg_stat_activity WHERE backend_type = 'tiktok_capi worker'") or None


mock, ids = slow_backlog(N)

# 1. DROP EXTENSION ... CASCADE in the middle of the drain
busy = wait_until(lambda: counts().get("sent", 0) >= 1000, 30, 0.05)
if not busy:
    raise SystemExit(f"Bail out! the worker did not start draining: {counts()}")
waiting = 'extension not installed in database "postgres"'
said_before = server_log().count(waiting)
pid = worker_pid()
err, took = timed("DROP EXTENSION tiktok_capi CASCADE")
tap.diag(f"DROP EXTENSION tiktok_capi CASCADE mid-drain: {took:.2f} s")
tap.ok(err is None and took < BOUND_S, f"DROP EXTENSION completes mid-drain (under {BOUND_S} s)", err)
if err:   # go on with the other checks
    psql("DROP EXTENSION IF EXISTS tiktok_capi CASCADE")
tap.ok(psql("SELECT count(*) FROM pg_extension WHERE extname = 'tiktok_capi'") == "0",
       "the extension is gone")
said = wait_until(lambda: server_log().count(waiting) == said_before + 1, 10)
time.sleep(1.5)   # a worker that kept failing and restarting would say it again
tap.ok(said and server_log().count(waiting) == said_before + 1,
       "the worker says once that it waits for CREATE EXTENSION")
tap.ok(worker_pid() == pid, "the same worker process waits: it neither failed nor was restarted",
       (pid, worker_pid()))

# 2. CREATE EXTENSION again: new events are delivered, each one to the API
mock.config(delay_ms=0)
install()
again = enqueue(300, prefix="again")
tap.ok(wait_until(lambda: drained(300), 15) and counts() == {"sent": 300},
       "after a fresh CREATE EXTENSION the 300 new events are sent", counts())
got = {i for (p, e, i) in mock.keys() if i.startswith("again")}
tap.ok(got == again, "and the API received every one of them", (len(got), len(again)))

# 3. DROP and CREATE EXTENSION at once, while requests are in flight: the
#    answers that come back belong to the old outbox, and must not settle
#    the new events that reuse its ids (the new outbox's ids start at 1 again)
mock.config(delay_ms=3000)
asked = mock.stats()["requests"]
enqueue(2000, prefix="inflight")          # ids 301 to 2300
if not wait_until(lambda: mock.stats()["requests"] > asked, 10, 0.02):
    raise SystemExit("Bail out! the worker sent no request")
t0 = time.time()
psql("DROP EXTENSION tiktok_capi CASCADE")
install()
mock.config(delay_ms=0)
after = enqueue(2500, prefix="after")      # ids 1 to 2500: every id in flight again
took = time.time() - t0
tap.diag(f"DROP EXTENSION, CREATE EXTENSION and 2500 events queued while requests were in flight: {took:.2f} s")
stats = mock.stats()
tap.ok(took < BOUND_S and stats["requests"] > stats["accepted_requests"],
       "DROP and CREATE EXTENSION completed while the worker's requests were still in flight",
       (took, stats))
wait_until(lambda: drained(2500), 15)
got = {i for (p, e, i) in mock.keys() if i.startswith("after")}
tap.ok(got == after, "every event queued after the re-CREATE reached the API",
       f"{len(got)} of {len(after)} received; outbox {counts()}")

# 4. the worker moved to another database, busy there
psql("CREATE DATABASE shop")
psql("CREATE EXTENSION tiktok_capi", db="shop")
psql(f"SELECT tiktok_capi.tt_add_pixel('{PIXEL}', '{TOKEN}')", db="shop")
psql("ALTER SYSTEM SET tiktok_capi.database = 'shop'")
psql("SELECT pg_reload_conf()")
tap.ok(wait_until(lambda: worker_db() == "shop", 15), "the worker moved to database shop", worker_db())
mock.config(delay_ms=1000)   # 800 events a second: the drain outlasts the drops
psql(f"""SELECT count(tiktok_capi.tt_enqueue('{PIXEL}',
             tiktok_capi.tt_event('Purchase', 'shop' || g, email => 'u' || g || '@example.com',
                                  value => g % 100, currency => 'EUR')))
           FROM generate_series(1, {N}) g""", db="shop")
if not wait_until(lambda: counts_in("shop").get("sent", 0) >= 1000, 30, 0.05):
    raise SystemExit(f"Bail out! the worker did not start draining in shop: {counts_in('shop')}")

# 5. a plain DROP DATABASE: PostgreSQL 15 waits 5 s for the worker to
#    leave, then refuses; nothing hangs and the worker carries on
pid = worker_pid()
err, took = timed("DROP DATABASE shop")
tap.diag(f"plain DROP DATABASE shop while the worker sends there: {took:.2f} s, "
         f"{'refused' if err else 'dropped'}")
tap.ok(err is not None and "is being accessed by other users" in err and took < BOUND_S,
       f"a plain DROP DATABASE is refused (the worker is connected), in under {BOUND_S} s", err)
tap.ok(psql("SELECT count(*) FROM pg_database WHERE datname = 'shop'") == "1", "shop still exists")
sent = counts_in("shop").get("sent", 0)
tap.ok(worker_pid() == pid and wait_until(lambda: counts_in("shop").get("sent", 0) > sent, 10),
       "the same worker goes on delivering there", (pid, worker_pid(), sent))

# 6. DROP DATABASE ... WITH (FORCE): done, the worker gone, the launcher waits
missing = 'database "shop" does not exist; the delivery worker will start'
err, took = timed("DROP DATABASE shop WITH (FORCE)")
tap.diag(f"DROP DATABASE shop WITH (FORCE) while the worker sends there: {took:.2f} s")
tap.ok(err is None and took < BOUND_S, f"DROP DATABASE ... WITH (FORCE) completes in under {BOUND_S} s", err)
tap.ok(psql("SELECT count(*) FROM pg_database WHERE datname = 'shop'") == "0", "shop is gone")
said = wait_until(lambda: missing in server_log(), 20)
time.sleep(2)     # a launcher that repeated itself would have done so by now
tap.ok(said and server_log().count(missing) == 1, "the launcher says once that it waits for the database")
tap.ok(worker_pid() is None and psql("SELECT count(*) FROM pg_stat_activity "
                                     "WHERE backend_type = 'tiktok_capi launcher'") == "1",
       "no worker runs; the launcher does", worker_pid())
no_crash(tap)
mock.stop()
tap.done()
