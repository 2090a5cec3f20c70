"""One bad event must not sink its batch: with 1% of events rejected by the
API (40002), the worker splits the rejected requests until each bad event
stands alone; exactly those end failed, with TikTok's message, and every
other event is sent.  tt_requeue_failed() leaves such rejects alone, saying
so, unless force => true: then they are sent again, and rejected again."""
import random

from harness import (PIXEL, Mock, Tap, configure, counts, drained, enqueue, install, no_crash, psql,
                     psql_notices, wait_until)

N = 5000
tap = Tap(11)
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

# a resend of a rejected event gets the same answer: left alone, said why
out, notices = psql_notices("SELECT tiktok_capi.tt_requeue_failed()")
tap.ok(out == "0" and counts().get("failed") == len(poison),
       "tt_requeue_failed() requeues none of TikTok's rejects", (out, counts()))
tap.ok(len(notices) == 3 and f"left {len(poison)} failed events alone: {len(poison)} rejected by TikTok "
       "as invalid" in notices[0] and "the same way" in notices[1] and "force => true" in notices[2],
       "a NOTICE says how many it left, why, and how to force them", notices)
out, notices = psql_notices("SELECT tiktok_capi.tt_requeue_failed(force => true)")
tap.ok(out == str(len(poison)) and notices == [], "force => true requeues them all, without a NOTICE",
       (out, notices))
tap.ok(wait_until(lambda: drained(N) and counts().get("failed") == len(poison)
                  and psql("SELECT count(*) FROM tiktok_capi.outbox WHERE status = 'failed' "
                           "AND last_error LIKE 'TikTok code 40002: %poisoned event%'") == str(len(poison)), 60),
       "sent again, they are rejected again, with TikTok's message", counts())
no_crash(tap)
mock.stop()
tap.done()
