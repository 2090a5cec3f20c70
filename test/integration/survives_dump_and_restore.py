"""pg_dump of a shop's database and pg_restore into a fresh cluster keep the
pixels (token included), the queue and the erasure audit: the restored
cluster's worker delivers what was pending, never what was already sent,
and the restored trigger keeps queueing new orders."""
import atexit
import os
import shutil
import subprocess
import tempfile

from harness import PIXEL, TOKEN, Mock, Tap, configure, free_port, insert_orders, psql, wait_until, worker_pid

tap = Tap(9)
PGV = os.environ["PGVERSION"]


def fresh_cluster(**settings):
    """A second throw-away cluster with tiktok_capi preloaded, removed at
    exit; returns its port.  initdb runs as postgres, as pg_virtualenv's."""
    port = free_port()
    d = tempfile.mkdtemp(prefix="tt-restored-")
    shutil.chown(d, "postgres")
    opts = [a for k, v in {"shared_preload_libraries": "tiktok_capi", **settings}.items()
            for a in ("-o", f"{k}={v}")]
    subprocess.run(["pg_createcluster", PGV, "restored", "-p", str(port), "-d", f"{d}/data", "-l", f"{d}/log",
                    *opts, "--", "--auth=trust"], check=True, capture_output=True)
    atexit.register(lambda: (subprocess.run(["pg_dropcluster", "--stop", PGV, "restored"], capture_output=True),
                             shutil.rmtree(d, ignore_errors=True)))
    subprocess.run(["pg_ctlcluster", PGV, "restored", "start"], check=True, capture_output=True)
    return port, f"{d}/log"


# the shop: 200 orders delivered, 300 queued while delivery is off, one erasure
mock = Mock()
psql("CREATE DATABASE shop")
configure(mock, database="shop")
os.environ["PGDATABASE"] = "shop"
psql("CREATE EXTENSION tiktok_capi")
psql(f"SELECT tiktok_capi.tt_add_pixel('{PIXEL}', '{TOKEN}')")
psql("""CREATE TABLE orders (id bigserial PRIMARY KEY, email text, phone text,
          total numeric(12,2), currency text, created_at timestamptz DEFAULT now())""")
psql("SELECT tiktok_capi.tt_attach('orders', 'Purchase')")
sent = insert_orders(200)
wait_until(lambda: psql("SELECT count(*) FROM tiktok_capi.outbox WHERE status = 'sent'") == "200", 30)
psql("ALTER SYSTEM SET tiktok_capi.enabled = off", db="postgres")
psql("SELECT pg_reload_conf()", db="postgres")
wait_until(lambda: worker_pid() is None, 10)
pending = insert_orders(300, start=201)
psql("SELECT tiktok_capi.tt_forget(email => 'buyer500@example.com')")
pending.discard("500")
before = psql("SELECT status, count(*) FROM tiktok_capi.outbox GROUP BY 1 ORDER BY 1")

dump = os.path.join(tempfile.mkdtemp(prefix="tt-dump-"), "shop.dump")
subprocess.run(["pg_dump", "-Fc", "-d", "shop", "-f", dump], check=True)

# a fresh cluster whose worker posts to a second mock
mock2 = Mock()
port, log = fresh_cluster(**{"tiktok_capi.api_url": mock2.url, "tiktok_capi.database": "shop",
                             "tiktok_capi.enabled": "off"})
psql("CREATE DATABASE shop", db="postgres", port=port)
r = subprocess.run(["pg_restore", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", "shop",
                    "--exit-on-error", dump], capture_output=True, text=True)
tap.ok(r.returncode == 0, "pg_restore into the fresh cluster succeeds", r.stderr[-500:])
tap.ok(psql("""SELECT e.extversion = a.default_version FROM pg_extension e
                 JOIN pg_available_extensions a ON a.name = e.extname WHERE e.extname = 'tiktok_capi'""",
            port=port) == "t",
       "the extension is created by the restore, at its current version")
tap.ok(psql("SELECT status, count(*) FROM tiktok_capi.outbox GROUP BY 1 ORDER BY 1", port=port) == before,
       "the outbox comes back with every event in its status", before)
tap.ok(psql(f"SELECT access_token = '{TOKEN}' FROM tiktok_capi.pixels WHERE pixel_code = '{PIXEL}'", port=port) == "t",
       "the pixel comes back with its token")
tap.ok(psql("SELECT identifiers::text || events_removed FROM tiktok_capi.erasures", port=port) == "{email}1",
       "the erasure audit comes back")

# delivery on in the restored cluster, and a new order through the restored trigger
psql("ALTER SYSTEM SET tiktok_capi.enabled = on", db="postgres", port=port)
psql("SELECT pg_reload_conf()", db="postgres", port=port)
top = int(psql("SELECT max(id) FROM tiktok_capi.outbox", port=port))
psql("INSERT INTO orders (id, email, total, currency) VALUES (501, 'new@example.com', 9.99, 'USD')", port=port)
new_id = "501"
added = psql("SELECT id FROM tiktok_capi.outbox WHERE event_id = '501'", port=port)
tap.ok(added and int(added) > top, "the restored trigger queues a new order, and the outbox's ids continue", added)
tap.ok(wait_until(lambda: psql("SELECT count(*) FROM tiktok_capi.outbox WHERE status IN ('pending', 'failed')", port=port) == "0", 30),
       "the restored cluster's worker delivers what was pending and the new order")
keys = mock2.keys()
ids = {i for (_, _, i) in keys}
tap.ok(ids == pending | {new_id} and set(keys.values()) == {1},
       "it sent exactly the pending events and the new one, once each, nothing already sent",
       (len(ids), len(ids & sent)))
with open(log, errors="replace") as f:
    tap.ok("terminated by signal" not in f.read(), "no process of the restored cluster crashed")
mock.stop()
mock2.stop()
tap.done()
