"""An api_url that does not answer as the Events API is a configuration
error, loud at once, not hours of quiet retries: a 404 (the track path's
trailing slash forgotten) or an HTML page with HTTP 200 pauses delivery,
says so once in the server log with the URL and a hint, shows in
tt_health() and outbox_pixel_status, and keeps the events pending with
their attempts untouched; a load balancer's 502 page stays trouble on the
way, retried; and once api_url is fixed (ALTER SYSTEM, pg_reload_conf())
every event is delivered, each once."""
import time

from harness import (PIXEL, Mock, Tap, configure, counts, drained, enqueue, install, no_crash,
                     psql, server_log, wait_until)

N = 300
tap = Tap(22)
mock = Mock()
wrong = mock.base + "/open_api/v1.3/event/track"    # no trailing slash: HTTP 404
by_name = f"http://localhost:{mock.port}/open_api/v1.3/event/track/"
# quick retries and attempts to spare: spent attempts would show at once
configure(mock, api_url=wrong, retry_delay="20ms", retry_delay_max="50ms", max_attempts=1000)
install()
ids = enqueue(N)


def pause():
    """tt_worker_pause() as api_url|reason|pause length, or '' while not paused"""
    return psql("SELECT api_url, reason, retry_at - since FROM tiktok_capi.tt_worker_pause()")


def worker_health():
    return psql("SELECT status || '|' || reason FROM tiktok_capi.tt_health() WHERE \"check\" = 'worker'")


def paused_lines():
    return [line for line in server_log().splitlines() if "tiktok_capi: delivery paused" in line]


def attempts():
    return psql("SELECT min(attempts) || '|' || max(attempts) || '|' || sum(attempts) FROM tiktok_capi.outbox")


# 1. a 404: the wrong path
tap.ok(wait_until(pause, 30), "a 404 from api_url pauses delivery", counts())
row = (pause() or "||").split("|")
tap.ok(row[0] == wrong and "HTTP 404" in row[1] and row[2] == "00:05:00",
       "tt_worker_pause() names the URL and the 404; api_url is tried again in 5 minutes", row)
seen = mock.stats()["not_found"]
time.sleep(2)
c = counts()
tap.ok(c == {"pending": N}, "the events stay pending", c)
tap.ok(attempts() == "0|0|0" and
       psql("SELECT count(*) FROM tiktok_capi.outbox WHERE last_error IS NOT NULL") == "0",
       "their attempts are not spent (the events are not even written)", attempts())
tap.ok(mock.stats()["not_found"] == seen and mock.stats()["events_accepted"] == 0,
       "no request is sent while paused (none in 2 s)", (seen, mock.stats()))
health = worker_health() or ""
tap.ok(health.startswith("critical|") and "HTTP 404" in health and wrong in health
       and "/open_api/v1.3/event/track/" in health,
       "tt_health()'s worker check is critical, naming the URL, the 404 and the path to use", health)
err = psql(f"SELECT last_error FROM tiktok_capi.outbox_pixel_status WHERE pixel_code = '{PIXEL}'") or ""
tap.ok("HTTP 404" in err and "tiktok_capi.api_url" in err,
       "outbox_pixel_status gives the pixel's last_error: the 404 and what to check", err)
tap.diag(f"tt_health worker: {health}")
lines = paused_lines()
tap.diag(f"log: {lines[0] if lines else '(nothing)'}")
tap.ok(len(lines) == 1 and f'"{wrong}"' in lines[0] and "WARNING" in lines[0],
       "the server log says it once, as a WARNING with the URL", lines)
tap.ok("HINT:  Check tiktok_capi.api_url; it should end in /open_api/v1.3/event/track/." in server_log(),
       "with the hint: what api_url should end in")

# 2. api_url changed, to the right path behind a load balancer answering 502 pages: retried
mock.config(html_status=502)
psql(f"ALTER SYSTEM SET tiktok_capi.api_url = '{by_name}'")
psql("SELECT pg_reload_conf()")
tap.ok(wait_until(lambda: int(attempts().split("|")[0]) >= 2, 30),
       "a changed api_url resumes at once; a 502 page is retried, attempts counted", attempts())
tap.ok(not pause() and (worker_health() or "").startswith("ok|"),
       "a 502 page pauses nothing", (pause(), worker_health()))
tap.ok(len(paused_lines()) == 1 and f'api_url changed to "{by_name}"; delivery resumes' in server_log(),
       "the log says delivery resumed with the new api_url, and no second pause", paused_lines())

# 3. an HTML page with HTTP 200 at that URL: paused again, said again (a new state)
mock.config(html_status=200)
tap.ok(wait_until(pause, 30), "an HTML page with HTTP 200 pauses delivery", attempts())
row = (pause() or "||").split("|")
tap.ok(row[0] == by_name and "HTTP 200" in row[1] and "not the Events API's" in row[1],
       "tt_worker_pause() names the URL and an answer that is not the API's", row)
before = attempts()
time.sleep(1.5)
tap.ok(attempts() == before and counts() == {"pending": N},
       "the events stay pending, no more attempts spent", (before, attempts(), counts()))
lines = paused_lines()
tap.ok(len(lines) == 2 and f'"{by_name}"' in lines[1], "the log says this pause once more, with its URL", lines)
tap.ok(psql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'tiktok_capi worker'") == "1",
       "the worker runs on, sleeping out the pause")

# 4. api_url fixed: everything is delivered, each event once
mock.config(html_status=None)
t0 = time.time()
psql(f"ALTER SYSTEM SET tiktok_capi.api_url = '{mock.url}'")
psql("SELECT pg_reload_conf()")
tap.ok(wait_until(lambda: drained(N), 30), "after api_url is fixed, every event settles", counts())
tap.diag(f"delivered {time.time() - t0:.2f} s after the reload")
keys = mock.keys()
tap.ok(counts() == {"sent": N} and keys == {(PIXEL, "Purchase", i): 1 for i in ids},
       "every event is sent, and accepted exactly once", (counts(), len(keys)))
tap.ok(not pause() and (worker_health() or "").startswith("ok|") and len(paused_lines()) == 2,
       "delivery is no longer paused and tt_health()'s worker check is ok", (pause(), worker_health()))
err = psql(f"SELECT coalesce(last_error, '(none)') FROM tiktok_capi.outbox_pixel_status WHERE pixel_code = '{PIXEL}'")
tap.ok(err == "(none)", "outbox_pixel_status shows no last_error once the pixel delivers again", err)
no_crash(tap)
mock.stop()
tap.done()
