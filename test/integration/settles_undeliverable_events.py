"""Every event ends sent or failed with a reason a person can act on, also
when it cannot be delivered: an API that keeps failing uses up
max_attempts; a pixel removed from the configuration fails its events; an
event whose first attempt is more than 47 hours old is not sent again
(TikTok deduplicates for 48); and sent events are deleted after
tiktok_capi.retention, by the worker, while the rest stay."""
import time

from harness import PIXEL, Mock, Tap, configure, counts, drained, enqueue, install, no_crash, psql, wait_until

tap = Tap(12)
mock = Mock()
configure(mock, max_attempts=3, retry_delay="20ms", retry_delay_max="50ms")
install()

# 1. an API that answers 503 to everything: failed after 3 attempts
mock.config(fault_rate=1.0, faults=["5xx"])
enqueue(200, prefix="down")
tap.ok(wait_until(lambda: drained(200), 30), "events meeting only errors settle", counts())
row = psql("SELECT count(*), min(attempts), max(attempts), min(last_error) FROM tiktok_capi.outbox "
           "WHERE status = 'failed'").split("|")
tap.ok(row[0] == "200" and row[1] == row[2] == "3", "all failed after max_attempts (3)", row)
tap.ok("gave up after 3 attempts" in row[3] and "HTTP 503" in row[3],
       "the reason says so and gives the last error", row[3])
tap.ok(psql(f"SELECT last_error FROM tiktok_capi.outbox_pixel_status WHERE pixel_code = '{PIXEL}'")
       .startswith("HTTP 503"), "the pixel's last_error shows the trouble")

# 2. requeued once the API is back: all sent
mock.config(fault_rate=0.0)
psql("SELECT tiktok_capi.tt_requeue_failed()")
tap.ok(wait_until(lambda: counts() == {"sent": 200}, 15), "tt_requeue_failed sends them again", counts())

# 3. a pixel removed from the configuration: its events fail, saying why
psql("SELECT tiktok_capi.tt_add_pixel('CGONE', 'tok')")
psql("ALTER SYSTEM SET tiktok_capi.enabled = off")
psql("SELECT pg_reload_conf()")
enqueue(20, pixel="CGONE", prefix="gone")
psql("DELETE FROM tiktok_capi.pixels WHERE pixel_code = 'CGONE'")
psql("ALTER SYSTEM SET tiktok_capi.enabled = on")
psql("SELECT pg_reload_conf()")
tap.ok(wait_until(lambda: drained(220), 20), "the removed pixel's events settle", counts())
reason = psql("SELECT DISTINCT last_error FROM tiktok_capi.outbox WHERE pixel_code = 'CGONE'")
tap.ok(psql("SELECT count(*) FROM tiktok_capi.outbox WHERE pixel_code = 'CGONE' AND status = 'failed'") == "20"
       and "not configured" in reason, "they failed: pixel not configured", reason)

# 4. first attempt 48 hours ago: failed, not sent again
psql("ALTER SYSTEM SET tiktok_capi.enabled = off")
psql("SELECT pg_reload_conf()")
wait_until(lambda: psql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'tiktok_capi worker'") == "0", 10)
enqueue(30, prefix="old")
psql("UPDATE tiktok_capi.outbox SET first_attempt_at = now() - interval '48 hours', attempts = 1 "
     "WHERE event_id LIKE 'old%'")
psql("ALTER SYSTEM SET tiktok_capi.enabled = on")
psql("SELECT pg_reload_conf()")
tap.ok(wait_until(lambda: drained(250), 20), "the old events settle", counts())
old = psql("SELECT count(*) FILTER (WHERE status = 'failed'), min(last_error) FROM tiktok_capi.outbox "
           "WHERE event_id LIKE 'old%'").split("|")
tap.ok(old[0] == "30" and "47 hours" in old[1], "they failed, saying a resend could count twice", old)
tap.ok(not any(k[2].startswith("old") for k in mock.keys()), "none of them was sent")

# 5. retention: sent events older than it are deleted by the worker
psql("ALTER SYSTEM SET tiktok_capi.retention = 0")
psql("SELECT pg_reload_conf()")
tap.ok(wait_until(lambda: counts().get("sent", 0) == 0, 15)
       and counts().get("failed") == 50, "retention 0: sent events are deleted, failed ones kept", counts())
no_crash(tap)
mock.stop()
tap.done()
