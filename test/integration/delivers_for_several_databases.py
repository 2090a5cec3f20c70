"""One database per tenant: tiktok_capi.database lists several, and each
gets a worker of its own, shown in pg_stat_activity with its database.
Each database's orders reach the Events API under its own pixel, and a
commit wakes the worker of its own database (with poll_interval at an hour,
nothing else would send them).  A database dropped while its worker
delivers stops only that worker: the others go on, and the launcher says
once that the database is gone instead of restarting its worker in a loop.
A database added to the list (reload) while the others deliver gets its
worker and delivers.  A launcher terminated and restarted leaves one worker
per database, not two (its predecessor's workers are stopped).  With fewer background worker slots than listed
databases (max_worker_processes), the log says so once, with the numbers,
and tt_health() of the database left without a worker says why."""
import os
import re
import subprocess
import time

from harness import Mock, Tap, no_crash, psql, server_log, wait_until

TENANTS = ["shop_a", "shop_b", "shop_c"]
PIXELS = {"shop_a": "CSHOPA000001", "shop_b": "CSHOPB000002", "shop_c": "CSHOPC000003",
          "shop_d": "CSHOPD000004"}

tap = Tap(25)
mock = Mock()


def setting(name, value):
    psql(f"ALTER SYSTEM SET tiktok_capi.{name} = '{value}'")
    psql("SELECT pg_reload_conf()")


def tenant(db):
    """A shop database: the extension, its own pixel, an orders table captured"""
    psql(f"CREATE DATABASE {db}")
    psql("CREATE EXTENSION tiktok_capi", db=db)
    psql(f"SELECT tiktok_capi.tt_add_pixel('{PIXELS[db]}', 'token-of-{db}')", db=db)
    psql("""CREATE TABLE orders (id bigint PRIMARY KEY, email text, total numeric(12,2),
              currency text DEFAULT 'USD')""", db=db)
    psql("SELECT tiktok_capi.tt_attach('orders', 'Purchase')", db=db)


def orders(db, lo, hi):
    psql(f"""INSERT INTO orders (id, email, total)
             SELECT g, 'buyer' || g || '@example.com', g % 100 + 0.99
               FROM generate_series({lo}, {hi}) g""", db=db)


def sent(db):
    return int(psql("SELECT count(*) FROM tiktok_capi.outbox WHERE status = 'sent'", db=db))


def at_mock(pixel):
    """the order ids the mock accepted under pixel"""
    return {int(i) for p, _, i in mock.keys() if p == pixel}


def workers():
    """{database: pid} of the running tiktok_capi workers"""
    out = psql("SELECT datname, pid FROM pg_stat_activity WHERE backend_type = 'tiktok_capi worker'")
    return {d: int(p) for d, p in (line.split("|") for line in out.splitlines() if line)}


setting("api_url", mock.url)
# a list the launcher could not follow is refused, and nothing is written
for bad, why in (("shop_a, shop_a", "a database listed twice"), ("shop_a,,shop_b", "an empty name")):
    refused = psql(f"ALTER SYSTEM SET tiktok_capi.database = '{bad}'", check=False) is None
    tap.ok(refused and psql("SELECT count(*) FROM pg_file_settings WHERE name = 'tiktok_capi.database'") == "0",
           f"ALTER SYSTEM refuses {why} in tiktok_capi.database")
setting("poll_interval", "1s")
for db in TENANTS:
    tenant(db)

# 1. three databases listed: three workers, each in its database
setting("database", ", ".join(TENANTS))
tap.ok(wait_until(lambda: sorted(workers()) == TENANTS, 15),
       "one worker per listed database shows in pg_stat_activity with its datname", workers())

# 2. each database's orders reach the mock under its own pixel; with
#    poll_interval at an hour, only a commit's wake-up of the right worker sends them
setting("poll_interval", "1h")
time.sleep(1)
for db in TENANTS:
    orders(db, 1, 300)
for db in TENANTS:
    tap.ok(wait_until(lambda: at_mock(PIXELS[db]) == set(range(1, 301)), 20),
           f"{db}'s 300 orders reach the Events API under its own pixel {PIXELS[db]}",
           len(at_mock(PIXELS[db])))
foreign = {p for p, _, _ in mock.keys()} - set(PIXELS.values())
tap.ok(not foreign, "no event under another pixel", foreign)
setting("poll_interval", "1s")

# 3. shop_c dropped while its worker delivers a backlog; the others deliver meanwhile
mock.config(delay_ms=500)
setting("batch_size", "100")
setting("max_in_flight", "2")
orders("shop_c", 1001, 6000)
wait_until(lambda: sent("shop_c") > 300, 15)
dropped_pid = workers().get("shop_c")
tap.diag(f"shop_c dropped with {sent('shop_c') - 300} of its 5000 new orders sent")
t0 = time.time()
psql("DROP DATABASE shop_c WITH (FORCE)")
tap.diag(f"DROP DATABASE shop_c WITH (FORCE) while its worker sent: {time.time() - t0:.2f} s")
orders("shop_a", 301, 600)
orders("shop_b", 301, 600)
tap.ok(wait_until(lambda: sent("shop_a") == 600 and sent("shop_b") == 600, 30),
       "after shop_c is dropped, shop_a and shop_b go on delivering",
       (sent("shop_a"), sent("shop_b")))
tap.ok(wait_until(lambda: "shop_c" not in workers(), 10) and dropped_pid is not None,
       "shop_c's worker is gone", workers())
gone = 'database "shop_c" does not exist; the delivery worker will start when it does'
wait_until(lambda: gone in server_log(), 20)
starts = 'delivery worker started in database "shop_c"'
before = server_log().count(starts)
time.sleep(4)
log = server_log()
tap.ok(log.count(gone) == 1, "the launcher says once that shop_c does not exist", log.count(gone))
tap.ok(log.count(starts) == before, f"and starts no worker for it again ({before} starts in all)",
       (before, log.count(starts)))
tap.ok(sorted(workers()) == ["shop_a", "shop_b"], "shop_a's and shop_b's workers run on", workers())

# 4. shop_d added to the list while the others deliver
tenant("shop_d")
orders("shop_d", 1, 500)
orders("shop_a", 601, 1600)
setting("database", "shop_a, shop_b, shop_c, shop_d")
t0 = time.time()
tap.ok(wait_until(lambda: "shop_d" in workers(), 15, interval=0.02), "shop_d, added with a reload, gets its worker",
       workers())
tap.diag(f"reload to shop_d's worker in pg_stat_activity: {time.time() - t0:.2f} s")
tap.ok(wait_until(lambda: at_mock(PIXELS["shop_d"]) == set(range(1, 501)), 30),
       "shop_d's orders reach the Events API under its pixel", len(at_mock(PIXELS["shop_d"])))
tap.ok(wait_until(lambda: sent("shop_a") == 1600, 30), "shop_a delivered its orders meanwhile",
       sent("shop_a"))
tap.ok(psql("SELECT status FROM tiktok_capi.tt_health() WHERE \"check\" = 'worker'", db="shop_d") == "ok",
       "tt_health() in shop_d: its worker runs")

# 4b. the launcher itself stopped (a DBA's pg_terminate_backend): its restart stops the
#     workers it cannot watch and starts its own, never two in one database
launcher = "SELECT pid FROM pg_stat_activity WHERE backend_type = 'tiktok_capi launcher'"
old_launcher = psql(launcher)
psql(f"SELECT pg_terminate_backend({old_launcher})")
tap.ok(wait_until(lambda: psql(launcher) not in ("", old_launcher), 15), "the launcher is restarted")
orphans = "started by an earlier launcher"
wait_until(lambda: server_log().count(orphans) >= 3, 10)
per_db = ("SELECT string_agg(datname || '=' || n, ',' ORDER BY datname) FROM (SELECT datname, count(*) n "
          "FROM pg_stat_activity WHERE backend_type = 'tiktok_capi worker' GROUP BY datname) w")
wait_until(lambda: psql(per_db) == "shop_a=1,shop_b=1,shop_d=1", 15)
time.sleep(3)
tap.ok(psql(per_db) == "shop_a=1,shop_b=1,shop_d=1",
       "then one worker per database, the earlier launcher's stopped", (psql(per_db), server_log().count(orphans)))
orders("shop_b", 601, 700)
tap.ok(wait_until(lambda: sent("shop_b") == 700, 20), "and shop_b's new orders are delivered", sent("shop_b"))

# 5. fewer background worker slots than databases: the log says it once, tt_health too
mock.config(delay_ms=0)
setting("poll_interval", "200ms")     # the launcher tries again each second
used = int(psql("SELECT count(*) FROM pg_stat_activity WHERE backend_type NOT IN "
                "('client backend', 'checkpointer', 'background writer', 'walwriter', "
                "'autovacuum launcher', 'archiver', 'startup', 'tiktok_capi worker')"))
# the launchers (ours, logical replication's) and one tiktok_capi worker
slots = used + 1
psql(f"ALTER SYSTEM SET max_worker_processes = {slots}")
version = os.environ.get("PGVERSION", "15")
subprocess.run(["pg_ctlcluster", version, "regress", "restart"], check=True, capture_output=True)
short = "tiktok_capi: no background worker slot is free for the delivery worker of 2 of the 4 databases"
tap.ok(wait_until(lambda: short in server_log(), 20),
       f"max_worker_processes = {slots}: the log says 2 of the 4 databases get no worker",
       [l for l in server_log().splitlines() if "background worker slot" in l][-3:])
time.sleep(3)
log = server_log()
tap.ok(log.count(short) == 1, "and says it once, though the launcher tries again", log.count(short))
m = re.search(r"DETAIL:\s+max_worker_processes is (\d+); tiktok_capi's launcher and (\d+) delivery workers",
              log)
tap.ok(m is not None and m.group(1) == str(slots) and m.group(2) == "1",
       "its detail gives max_worker_processes and the workers running", m and m.group(0))
running = workers()
without = [db for db in ("shop_a", "shop_b", "shop_d") if db not in running]
health = psql("SELECT status || '|' || reason FROM tiktok_capi.tt_health() WHERE \"check\" = 'worker'",
              db=without[0]) if without else None
tap.ok(health is not None and health.startswith("critical|") and "no background worker slot was free" in health
       and f"max_worker_processes = {slots}" in health,
       f"tt_health() in {without[:1]}, left without a worker, says why", health)
psql("ALTER SYSTEM RESET max_worker_processes")
subprocess.run(["pg_ctlcluster", version, "regress", "restart"], check=True, capture_output=True)
tap.ok(wait_until(lambda: sorted(workers()) == ["shop_a", "shop_b", "shop_d"], 15),
       "max_worker_processes back to its default: every existing listed database has its worker", workers())
no_crash(tap)
mock.stop()
tap.done()
