"""One bad event must not sink its batch: with 1% of events rejected by the
API (40002), the worker splits the rejected requests until each bad event
stands alone; exactly those end failed, with TikTok's message, and every
other event is sent."""
import random

from harness import PIXEL, Mock, Tap, configure, counts, drained, enqueue, install, no_crash, psql, wait_until

N = 5000
tap = Tap(7)
mock = Mock()
configure(mock)
install()
rng = random.Random(7)
poison = {f"e{i}" for i in rng.sample(range(1, N + 1), N // 100)}
mock.config(poison=sorted(poison))
ids = enqueue(N)

tap.ok(wait_until(lambda: drained(N), 120), f"all {N} events settled", counts())
failed = dict(line.split("|", 1) for line in
              psql("SELECT event_id, last_error FROM tiktok_capi.outbox WHERE status = 'failed'").splitlines())
tap.ok(set(failed) == poison, "exactly the poisoned events failed", len(set(failed) ^ poison))
tap.ok(all(f"poisoned event {i}" in msg and "40002" in msg for i, msg in failed.items()),
       "each carries TikTok's code and message", next(iter(failed.values()), None))
tap.ok(counts().get("sent") == N - len(poison), "every other event is sent", counts())
keys = mock.keys()
tap.ok(set(keys) == {(PIXEL, "Purchase", i) for i in ids - poison}, "the API accepted every good event",
       len(keys))
attempts = psql("SELECT max(attempts) FROM tiktok_capi.outbox")
tap.ok(attempts == "1", "isolating the bad events cost no extra attempt", attempts)
stats = mock.stats()
tap.diag(f"{len(poison)} poisoned of {N}: {stats['requests']} requests, "
         f"{stats['rejected']} rejected on the way")
no_crash(tap)
mock.stop()
tap.done()
