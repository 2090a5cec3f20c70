"""A wrong access token (40105) is the pixel's fault, not the events': the
worker pauses the pixel, says why in outbox_pixel_status, keeps its events
pending without spending their attempts, and once the token is fixed with
tt_update_pixel every event is delivered at once."""
import time

from harness import PIXEL, Mock, Tap, configure, counts, drained, enqueue, install, no_crash, psql, wait_until

N = 1500
tap = Tap(9)
mock = Mock()
configure(mock)
mock.config(tokens={PIXEL: "the-right-token"})
install(token="a-wrong-token")
ids = enqueue(N)

paused = wait_until(lambda: psql(f"SELECT paused FROM tiktok_capi.outbox_pixel_status "
                                 f"WHERE pixel_code = '{PIXEL}'") == "t", 30)
tap.ok(paused, "the pixel is paused")
err = psql(f"SELECT last_error FROM tiktok_capi.outbox_pixel_status WHERE pixel_code = '{PIXEL}'")
tap.ok("40105" in err, "its last_error gives TikTok's code", err)
time.sleep(1)
c = counts()
tap.ok(c == {"pending": N}, "its events stay pending", c)
tap.ok(psql("SELECT max(attempts) FROM tiktok_capi.outbox") == "0", "their attempts are not spent")
tap.ok(psql("SELECT count(*) FROM tiktok_capi.outbox WHERE next_attempt_at < now() + interval '50 minutes'")
       == "0", "they wait for the pause (an hour), not for the claim to find them again")
tap.ok(mock.stats()["events_accepted"] == 0, "the API accepted nothing")

t0 = time.time()
psql(f"SELECT tiktok_capi.tt_update_pixel('{PIXEL}', access_token => 'the-right-token')")
tap.ok(wait_until(lambda: drained(N), 30), "after the token is fixed, all events settle", counts())
resumed = time.time() - t0
tap.ok(counts().get("sent") == N and set(mock.keys()) == {(PIXEL, "Purchase", i) for i in ids},
       "every event is sent and accepted", counts())
tap.diag(f"delivered {resumed:.2f} s after tt_update_pixel")
no_crash(tap)
mock.stop()
tap.done()
