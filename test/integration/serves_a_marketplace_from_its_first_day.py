"""A marketplace's first day, as the README and issue 17 tell it, all the
parts together: two merchants' web pixels and a store's offline event set,
one orders table naming each row's id (pixel_from), the buyer's name and
billing address as match keys, the orders of the last week already there
backfilled in slices while new orders keep coming, and the delivery
counters afterwards.  Each paid order of the last 7 days reaches the mock
exactly once, under the id its row names and as that id's source, with the
mock rejecting nothing; the counters say what the mock saw."""
import hashlib
import threading

from harness import Mock, Tap, configure, counts, drained, no_crash, psql, wait_until

M1, M2, STORE = "CMKTMERCH01", "CMKTMERCH02", "CMKTSTORE01"
OLD = 600          # orders already there when the trigger is attached
NEW = 200          # orders written while the backfill runs
tap = Tap(13)
mock = Mock()
mock.config(sources={M1: "web", M2: "web", STORE: "offline"})
configure(mock)
psql("CREATE EXTENSION tiktok_capi")
psql(f"SELECT tiktok_capi.tt_add_pixel('{M1}', 'tok-1')")
psql(f"SELECT tiktok_capi.tt_add_pixel('{M2}', 'tok-2')")
psql(f"SELECT tiktok_capi.tt_add_pixel('{STORE}', 'tok-s', event_source => 'offline')")

# the shop's table, as it was before the extension: names and the billing address in
# the columns shops name them by; ip and user agent on every row, store rows too
psql("""CREATE TABLE orders (id bigint PRIMARY KEY, merchant_pixel text NOT NULL, email text,
          first_name text, last_name text, zip text, city text, country text, ip text,
          user_agent text, store_id text, total numeric(12,2), currency text DEFAULT 'USD',
          status text NOT NULL DEFAULT 'paid', created_at timestamptz NOT NULL DEFAULT now())""")
ROW = """SELECT g, CASE g % 3 WHEN 0 THEN '{m1}' WHEN 1 THEN '{m2}' ELSE '{st}' END,
                'buyer' || g || '@example.com', ' Ann ', 'Lee', ' 94107 ', 'San Francisco', 'US',
                '203.0.113.9', 'Mozilla/5.0', CASE WHEN g % 3 = 2 THEN 'store-' || (g % 5) END,
                g + 0.5, 'USD', {status}, {created}
           FROM generate_series({lo}, {hi}) g"""
# the week's orders (one in ten still 'new'), and 30 older than TikTok will take
psql("INSERT INTO orders " + ROW.format(
    m1=M1, m2=M2, st=STORE, lo=1, hi=OLD,
    status="CASE WHEN g % 10 = 0 THEN 'new' ELSE 'paid' END",
    created="CASE WHEN g <= 30 THEN now() - interval '10 days' ELSE now() - g * interval '10 minutes' END"))
psql("""SELECT tiktok_capi.tt_attach('orders', 'Purchase', '{pixel_from=merchant_pixel}',
                                     condition => $$NEW.status = 'paid'$$)""")


def shop():
    """New orders committed one by one while the backfill runs"""
    for g in range(OLD + 1, OLD + NEW + 1):
        psql("INSERT INTO orders " + ROW.format(m1=M1, m2=M2, st=STORE, lo=g, hi=g,
                                                 status="'paid'", created="now()"))


writer = threading.Thread(target=shop)
writer.start()
queued = psql("CALL tiktok_capi.tt_backfill_in_slices('orders', now() - interval '7 days', slice_rows => 50)")
writer.join()

expected_old = {str(g) for g in range(31, OLD + 1) if g % 10 != 0}
expected = expected_old | {str(g) for g in range(OLD + 1, OLD + NEW + 1)}
tap.ok(queued == str(len(expected_old)), "the backfill queued each paid order of the week once",
       f"queued {queued}, expected {len(expected_old)}")
tap.ok(wait_until(lambda: drained(len(expected)), 60), "every event is settled", counts())
tap.ok(counts() == {"sent": len(expected)}, "all sent, none failed", counts())

st = mock.stats()
tap.ok(st["rejected"] == {}, "the mock rejected no request (each id as its own source)", st["rejected"])
keys = mock.keys()
tap.ok({k[2] for k in keys} == expected and set(keys.values()) == {1} and len(keys) == len(expected),
       "each paid order of the last 7 days reached the mock once; none older, none unpaid",
       f"{len(keys)} keys, extra {sorted({k[2] for k in keys} - expected)[:5]}, "
       f"missing {sorted(expected - {k[2] for k in keys})[:5]}")
want_pixel = {str(g): (M1, M2, STORE)[g % 3] for g in range(1, OLD + NEW + 1)}
tap.ok(all(p == want_pixel[i] for p, _, i in keys), "each under the id its row names")

events = mock.events()
web = [ev for (p, _, _), ev in events.items() if p in (M1, M2)]
store = [ev for (p, _, _), ev in events.items() if p == STORE]


def sha(s):
    return hashlib.sha256(s.encode()).hexdigest()


def matches(ev):
    u = ev["user"]
    first = u.get("first_name")
    zip_code = u.get("zip_code")
    return (first in (sha("ann"), [sha("ann")]) and u.get("last_name") in (sha("lee"), [sha("lee")])
            and zip_code in (sha("94107"), [sha("94107")]) and u.get("city") == "sanfrancisco"
            and u.get("country") == "us")


tap.ok(all(matches(ev) for ev in web + store),
       "names and zip code hashed trimmed and lowercased, city and country plain, on every event",
       next((ev["user"] for ev in web + store if not matches(ev)), None))
tap.ok(all({"ip", "user_agent"} <= set(ev["user"]) for ev in web), "web events keep ip and user agent")
tap.ok(store and all(not ({"ip", "user_agent"} & set(ev["user"])) for ev in store)
       and all(ev.get("properties", {}).get("shop_id", "").startswith("store-") for ev in store),
       "store events leave out the browser's fields and carry shop_id from store_id")

again = psql("SELECT tiktok_capi.tt_backfill('orders', now() - interval '7 days')")
tap.ok(again == "0", "a second backfill queues nothing", again)

# the counters: what the worker counted per id is what the mock accepted per id
rows = psql("SELECT coalesce(pixel_code, 'total'), events_sent, events_failed FROM tiktok_capi.delivery_stats")
stats = {p: (int(s), int(f)) for p, s, f in (line.split("|") for line in rows.splitlines())}
accepted = {p: sum(1 for k in keys if k[0] == p) for p in (M1, M2, STORE)}
tap.ok(all(stats.get(p, (None,))[0] == n for p, n in accepted.items()),
       "delivery_stats counts per id the events the mock accepted", (stats, accepted))
tap.ok(stats.get("total") == (len(expected), 0), "and the total, none failed", stats.get("total"))
no_crash(tap)
mock.stop()
tap.done()
