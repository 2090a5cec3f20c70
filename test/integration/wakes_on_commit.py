"""An order on an idle system reaches the API in milliseconds, not at the
next poll: the commit sets the worker's latch.  poll_interval stays at its
default of 10 s, so a worker that only polled would fail this test."""
import statistics
import time

from harness import PIXEL, Mock, Tap, configure, create_orders, install, no_crash, psql, wait_until

ROUNDS = 10
tap = Tap(4)
mock = Mock()
configure(mock, poll_interval="10s")
install()
create_orders()
tap.ok(psql("SHOW tiktok_capi.poll_interval") == "10s", "poll_interval is 10 s")

latencies = []
for i in range(1, ROUNDS + 1):
    time.sleep(0.3)  # let the worker go idle
    # the order's transaction start (created_at) is on the same clock as the mock's
    psql(f"INSERT INTO orders (id, email, total, currency) VALUES ({i}, 'w{i}@example.com', 10, 'USD')")
    t0 = float(psql(f"SELECT extract(epoch FROM created_at) FROM tiktok_capi.outbox WHERE event_id = '{i}'"))
    seen = wait_until(lambda: mock.first_seen().get((PIXEL, "Purchase", str(i))), 12, 0.005)
    latencies.append((seen - t0) * 1000 if seen else float("inf"))
worst = max(latencies)
tap.ok(len([x for x in latencies if x != float("inf")]) == ROUNDS, f"all {ROUNDS} orders arrived")
tap.ok(worst < 1000, "each arrived within 1 s, a tenth of poll_interval", f"{worst:.0f} ms")
tap.diag(f"commit to accepted by the mock, {ROUNDS} orders on an idle system: "
         f"median {statistics.median(latencies):.1f} ms, worst {worst:.1f} ms ")
no_crash(tap)
mock.stop()
tap.done()
