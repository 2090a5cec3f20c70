"""With 30% of requests faulted (HTTP 503, code 40100, code 50002,
connection resets, and hangs past the client timeout), every event still
ends sent and none is lost.  A hang is the API accepting a batch whose
answer never arrives, so some events reach it twice: always with the same
event_id, which TikTok deduplicates.  The test reports how many."""
import time

from harness import (PIXEL, Mock, Tap, configure, counts, drained, enqueue, install, no_crash,
                     psql, wait_until)

N = 10000
tap = Tap(7)
mock = Mock()
configure(mock, batch_size=50, http_timeout="1s", retry_delay="50ms", retry_delay_max="1s")
install()
mock.config(fault_rate=0.3, faults=["5xx", "40100", "50002", "reset", "hang"], hang_seconds=3)

start = time.time()
ids = enqueue(N)
tap.ok(wait_until(lambda: drained(N), 240), f"all {N} events settled", counts())
elapsed = time.time() - start
c = counts()
tap.ok(c.get("sent") == N, "every event is sent, none failed", c)
keys = mock.keys()
expected = {(PIXEL, "Purchase", i) for i in ids}
tap.ok(set(keys) == expected, "the API accepted every event (none lost, none invented)",
       len(set(keys) ^ expected))
stats = mock.stats()
faults = stats["faults"]
tap.ok(all(faults.get(k, 0) > 0 for k in ("5xx", "40100", "50002", "reset", "hang")),
       "every kind of fault happened", faults)
retried = int(psql("SELECT count(*) FROM tiktok_capi.outbox WHERE attempts > 1"))
tap.ok(retried > 0, "faulted events were retried", retried)
twice = sum(1 for n in keys.values() if n > 1)
tap.ok(twice <= faults.get("hang", 0) * 100,
       "only events of a request whose answer was lost reached the API twice", twice)
tap.diag(f"{N} events in {elapsed:.1f} s through {stats['requests']} requests, faults {faults}; "
         f"sent more than once (same event_id): {twice}; retried: {retried}")
no_crash(tap)
mock.stop()
tap.done()
