"""ALTER EXTENSION tiktok_capi UPDATE from 0.1.0: the worker and the trigger
of the new library work on a 0.1.0 schema, events queued before the update
are delivered after it, exactly once, and the update brings the objects of
0.2.0 and 0.3.0."""
from harness import (Mock, Tap, configure, counts, create_orders, drained, insert_orders, no_crash, psql,
                     wait_until, worker_pid, PIXEL, TOKEN)

tap = Tap(8)
mock = Mock()
configure(mock)
psql("CREATE EXTENSION tiktok_capi VERSION '0.1.0'")
psql(f"SELECT tiktok_capi.tt_add_pixel('{PIXEL}', '{TOKEN}')")
create_orders()
tap.ok(psql("SELECT to_regproc('tiktok_capi.tt_health') IS NULL") == "t", "0.1.0 is installed, without 0.2.0's objects")

before = insert_orders(300)
tap.ok(wait_until(lambda: drained(300), 30), "the new library's worker delivers from a 0.1.0 schema", counts())

# events queued while nothing delivers, then the update
psql("ALTER SYSTEM SET tiktok_capi.enabled = off")
psql("SELECT pg_reload_conf()")
wait_until(lambda: worker_pid() is None, 10)
during = insert_orders(300, start=301)
psql("ALTER EXTENSION tiktok_capi UPDATE")
tap.ok(psql("""SELECT e.extversion = a.default_version FROM pg_extension e
                 JOIN pg_available_extensions a ON a.name = e.extname WHERE e.extname = 'tiktok_capi'""") == "t",
       "updated to the current version")
tap.ok(counts().get("pending") == 300, "the events queued before the update are still pending", counts())
tap.ok(psql("SELECT count(*) FROM tiktok_capi.tt_health()") == "8"
       and psql("SELECT to_regproc('tiktok_capi.tt_forget') IS NOT NULL") == "t"
       and psql("SELECT to_regproc('tiktok_capi.tt_flush') IS NOT NULL") == "t",
       "the functions of 0.2.0 and 0.3.0 are there after the update")

psql("ALTER SYSTEM SET tiktok_capi.enabled = on")
psql("SELECT pg_reload_conf()")
after = insert_orders(100, start=601)
tap.ok(wait_until(lambda: drained(700), 30), "after the update every event is delivered", counts())
keys = mock.keys()
ids = {i for (_, _, i) in keys}
tap.ok(ids == before | during | after and set(keys.values()) == {1},
       "each order, before, across and after the update, was accepted exactly once",
       (len(ids), set(keys.values())))
no_crash(tap)
mock.stop()
tap.done()
