"""10,000 orders committed through the trigger reach the Events API: every
one sent, each (pixel, event, event_id) accepted exactly once, in batches of
many events, nothing left pending."""
import time

from harness import (PIXEL, Mock, Tap, configure, counts, create_orders, drained, insert_orders,
                     install, no_crash, outbox_keys, psql, wait_until)

N = 10000
tap = Tap(8)
mock = Mock()
configure(mock)
install()
create_orders()

start = time.time()
ids = insert_orders(N, per_txn=250)
tap.ok(wait_until(lambda: drained(N), 120), f"all {N} orders were delivered", counts())
elapsed = time.time() - start
c = counts()
tap.ok(c.get("sent") == N, "every order is sent", c)
stats = mock.stats()
keys = mock.keys()
expected = {(PIXEL, "Purchase", i) for i in ids}
tap.ok(set(keys) == expected, "the API saw exactly the orders' keys", len(set(keys) ^ expected))
tap.ok(all(n == 1 for n in keys.values()), "each key was accepted exactly once",
       stats["duplicate_keys"])
tap.ok(outbox_keys("sent") == expected, "the outbox's sent rows are the orders")
tap.ok(stats["max_batch"] >= 100, "requests carried many events", stats["max_batch"])
missing_rid = psql("SELECT count(*) FROM tiktok_capi.outbox WHERE request_id IS NULL OR sent_at IS NULL")
tap.ok(missing_rid == "0", "every sent event records TikTok's request_id and sent_at", missing_rid)
tap.diag(f"{N} orders committed in {N // 250} transactions and delivered in {elapsed:.2f} s; "
         f"{stats['accepted_requests']} requests, largest {stats['max_batch']} events")
no_crash(tap)
mock.stop()
tap.done()
