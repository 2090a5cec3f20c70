"""The worker's life as a DBA sees it: it waits (and says so once) until
the extension is created, then delivers without a restart; it shows itself
in pg_stat_activity; tiktok_capi.enabled = off stops it and keeps events
queued; api_url refuses plain http to another host; when its database is
dropped (WITH (FORCE)) nothing crashes or hangs, nor does dropping another and the launcher says once
that it waits for the database; under pg_upgrade (binary-upgrade mode) nothing starts."""
import time

from harness import (PIXEL, Mock, Tap, configure, counts, drained, enqueue, install, no_crash, psql,
                     server_log, wait_until, worker_pid)

tap = Tap(17)
mock = Mock()
configure(mock)

# 1. no extension yet: the worker waits and says so once
time.sleep(1.5)
waiting = "extension not installed in database \"postgres\""
tap.ok(server_log().count(waiting) == 1, "without the extension, the worker says once that it waits")
install()
ids = enqueue(100)
tap.ok(wait_until(lambda: drained(100), 15), "after CREATE EXTENSION it delivers, no restart needed",
       counts())

# the worker reports its table statistics, so autovacuum sees its churn
tap.ok(wait_until(lambda: int(psql("SELECT n_tup_upd FROM pg_stat_user_tables "
                                   "WHERE relid = 'tiktok_capi.outbox'::regclass")) >= 100, 5),
       "the worker's updates show in pg_stat_user_tables")

# 2. visible in pg_stat_activity
kinds = psql("SELECT string_agg(backend_type, ',' ORDER BY backend_type) FROM pg_stat_activity "
             "WHERE backend_type LIKE 'tiktok_capi%'")
tap.ok(kinds == "tiktok_capi launcher,tiktok_capi worker", "launcher and worker show in pg_stat_activity",
       kinds)

# 3. enabled = off: the worker stops, events stay queued; on: delivered
pid = worker_pid()
psql("ALTER SYSTEM SET tiktok_capi.enabled = off")
psql("SELECT pg_reload_conf()")
tap.ok(wait_until(lambda: worker_pid() is None, 10), "enabled = off stops the worker")
enqueue(50, prefix="off")
time.sleep(1)
tap.ok(counts().get("pending") == 50, "events committed meanwhile stay pending", counts())
tap.ok("terminated by signal" not in server_log(), "the worker exited cleanly on SIGTERM")
psql("ALTER SYSTEM SET tiktok_capi.enabled = on")
psql("SELECT pg_reload_conf()")
tap.ok(wait_until(lambda: drained(150), 15), "enabled = on delivers them", counts())
tap.ok(worker_pid() not in (None, pid), "a new worker runs")

# 4. api_url: plain http only to loopback
refused = psql("ALTER SYSTEM SET tiktok_capi.api_url = 'http://example.com/open_api/v1.3/event/track/'",
               check=False)
tap.ok(refused is None, "ALTER SYSTEM refuses a plain-http api_url to another host")
tap.ok(psql("SELECT count(*) FROM pg_file_settings WHERE name = 'tiktok_capi.api_url' "
            "AND setting LIKE 'http://example.com%'") == "0", "and nothing was written")

# 5. dropping another database is not held up by the worker (it answers
#    the drop's barrier while it waits or sends)
psql("CREATE DATABASE other")
enqueue(2000, prefix="busy")
t0 = time.time()
psql("DROP DATABASE other")
took = time.time() - t0
tap.ok(took < 5, f"DROP DATABASE of another database took {took:.2f} s while the worker was busy")

# 6. its database dropped: no crash, no hang, one line saying it waits
psql("CREATE DATABASE shop")
psql("CREATE EXTENSION tiktok_capi", db="shop")
psql("ALTER SYSTEM SET tiktok_capi.database = 'shop'")
psql("SELECT pg_reload_conf()")
tap.ok(wait_until(lambda: psql("SELECT datname FROM pg_stat_activity "
                               "WHERE backend_type = 'tiktok_capi worker'") == "shop", 15),
       "a changed tiktok_capi.database moves the worker there")
t0 = time.time()
psql("DROP DATABASE shop WITH (FORCE)")
dropped = time.time() - t0
line = "database \"shop\" does not exist; the delivery worker will start"
wait_until(lambda: line in server_log(), 20)
time.sleep(2)
tap.ok(server_log().count(line) == 1,
       f"DROP DATABASE took {dropped:.2f} s; the launcher says once that it waits for the database")

# 7. pg_upgrade runs the cluster in binary-upgrade mode (-b): no launcher, no worker, nothing sent
import os
import subprocess
version = os.environ.get("PGVERSION", "15")


def bg_workers():
    return psql("SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'tiktok_capi%'")


subprocess.run(["pg_ctlcluster", version, "regress", "restart", "--", "-o", "-b"],
               check=True, capture_output=True)
time.sleep(3)
tap.ok(bg_workers() == "0", "in binary-upgrade mode (pg_upgrade) neither launcher nor worker starts",
       bg_workers())
subprocess.run(["pg_ctlcluster", version, "regress", "restart"], check=True, capture_output=True)
launcher = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'tiktok_capi launcher'"
tap.ok(wait_until(lambda: psql(launcher) == "1", 15),
       "restarted normally, the launcher is back", bg_workers())
no_crash(tap)
mock.stop()
tap.done()
