"""A redirect from the API is not followed: while the Events API answers
302 Found pointing somewhere else, nothing reaches that other place, the
events stay pending and are retried with a last_error that names the 302,
and once the API stops redirecting every event is delivered to it exactly
once."""
from harness import (PIXEL, Mock, Tap, configure, counts, drained, enqueue, install, no_crash,
                     psql, wait_until)

N = 300
REASON = ("HTTP 302: the Events API redirected; redirects are not followed "
          "(check tiktok_capi.api_url)")
tap = Tap(12)
elsewhere = Mock()   # where the redirect points: it must never hear from the worker
api = Mock()         # the API the worker is configured with
api.config(redirect_to=elsewhere.url)
# quick retries, and enough attempts that no event fails while the redirect lasts
configure(api, retry_delay="50ms", retry_delay_max="200ms", max_attempts=1000)
install()
ids = enqueue(N)


# The fewest attempts any event has had: the worker keeps retrying while this grows.
def min_attempts():
    return int(psql("SELECT coalesce(min(attempts), 0) FROM tiktok_capi.outbox"))


tap.ok(wait_until(lambda: min_attempts() >= 3, 30), "every event met the redirect and was retried",
       psql("SELECT status, attempts, last_error FROM tiktok_capi.outbox LIMIT 1"))
c = counts()
tap.ok(c == {"pending": N}, "the events stay pending (none sent, none failed)", c)
errors = psql("SELECT DISTINCT last_error FROM tiktok_capi.outbox").splitlines()
tap.ok(errors == [REASON], "each event's last_error is the worker's reason for the 302", errors)
tap.ok(bool(errors) and "302" in errors[0] and "redirect" in errors[0] and "api_url" in errors[0],
       "the reason names the status, says it is a redirect and what to check", errors)
pixel_error = psql(f"SELECT last_error FROM tiktok_capi.outbox_pixel_status WHERE pixel_code = '{PIXEL}'")
tap.ok(pixel_error == REASON, "outbox_pixel_status shows the same reason for the pixel", pixel_error)
s = api.stats()
tap.ok(s["redirects"] >= 3 and s["requests"] == s["redirects"] and s["accepted_requests"] == 0,
       "every request the API saw was redirected; it accepted nothing", s)
e = elsewhere.stats()
tap.ok(e["requests"] == 0 and e["not_found"] == 0 and elsewhere.keys() == {},
       "nothing arrived where the redirect pointed (no POST, no GET)", e)

api.config(redirect_to=None)
tap.ok(wait_until(lambda: drained(N), 30), "after the API stops redirecting, every event settles",
       counts())
c = counts()
tap.ok(c == {"sent": N}, "every event is sent", c)
keys = api.keys()
tap.ok(keys == {(PIXEL, "Purchase", i): 1 for i in ids},
       "the API received each event exactly once",
       {"missing": N - len(keys), "more than once": sum(1 for n in keys.values() if n > 1)})
e = elsewhere.stats()
tap.ok(e["requests"] == 0 and e["not_found"] == 0 and elsewhere.keys() == {},
       "still nothing arrived where the redirect pointed", e)
tap.diag(f"{api.stats()['redirects']} requests redirected before delivery; last_error: {REASON}")
no_crash(tap)
api.stop()
elsewhere.stop()
tap.done()
