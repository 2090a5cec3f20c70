"""tt_forget() while the worker is sending: once it has returned, no event
of the person reaches the Events API, neither one already claimed (the
erasure waits for the requests in flight) nor one still queued (the worker
waits for the erasure to commit, and then no longer sees it).  Everyone
else's events are delivered once each."""
import subprocess
import time

from harness import PIXEL, Mock, Tap, configure, counts, install, no_crash, psql, wait_until

PERSON = "ann.lee@example.com"
N = 1000  # events of the person, and as many of others, interleaved

tap = Tap(9)
mock = Mock()
configure(mock, batch_size=50)
install()
# slow answers: each round of 4 requests takes about a second
mock.config(delay_ms=1000)
psql(f"""SELECT count(tiktok_capi.tt_enqueue('{PIXEL}',
             CASE WHEN g % 2 = 0 THEN tiktok_capi.tt_event('Purchase', 'a' || g, email => '{PERSON}')
                  ELSE tiktok_capi.tt_event('Purchase', 'b' || g, email => 'b' || g || '@example.com') END))
           FROM generate_series(1, {2 * N}) g""")


# event_ids of the person the mock accepted
def persons_at_mock():
    return {i for (_, _, i) in mock.keys() if i.startswith("a")}


def forget_lock_granted():
    return psql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                "AND mode = 'ExclusiveLock' AND granted") == "1"


tap.ok(wait_until(lambda: mock.stats()["events_accepted"] > 0, 20), "the worker is sending")
# the erasure, in a transaction that stays open for 3 s after it returns
session = subprocess.Popen(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
session.stdin.write(f"BEGIN;\nSELECT tiktok_capi.tt_forget(email => '{PERSON}');\n"
                    "SELECT pg_sleep(3);\nCOMMIT;\n")
session.stdin.close()
tap.ok(wait_until(forget_lock_granted, 30, interval=0.01), "the erasure gets its lock once the requests in flight end")
at_erasure = persons_at_mock()
time.sleep(2)
waiting = psql("SELECT wait_event_type FROM pg_stat_activity WHERE backend_type = 'tiktok_capi worker'")
tap.ok(waiting == "Lock", "while the erasure is uncommitted the worker waits on it", waiting)
tap.ok(persons_at_mock() == at_erasure, "and sends nothing meanwhile")
out = session.stdout.read()
session.wait(30)
removed = int(out.split()[0]) if out.split() else -1
tap.diag(f"{len(at_erasure)} of the person's {N} events had been accepted before the erasure; it removed {removed} rows")

total = 2 * N - removed
tap.ok(wait_until(lambda: counts() == {"sent": total, "erased": removed}, 60),
       "everyone else's events are delivered after the erasure commits; the person's stay erased", counts())
tap.ok(persons_at_mock() == at_erasure, "no event of the person reached the API after the erasure",
       len(persons_at_mock() - at_erasure))
tap.ok(removed == N, "tt_forget removed every event of the person, sent or pending", removed)
others = {k: n for k, n in mock.keys().items() if k[2].startswith("b")}
tap.ok(len(others) == N and set(others.values()) == {1}, "everyone else's events were accepted once each",
       (len(others), set(others.values())))
no_crash(tap)
mock.stop()
tap.done()
