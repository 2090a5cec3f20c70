"""One orders table with web, store (offline) and CRM rows, routed by
pixel_from=channel_set to a web pixel, an offline event set and a CRM event
set: every request is accepted by the mock, which knows each id's source and
rejects an id sent as another, browser fields on offline and CRM events, and
a CRM event without its lead; each event arrives with its source's fields,
once.  A row naming an unknown or disabled id is a failed row with the
reason, never a dropped event."""
from harness import Mock, Tap, configure, counts, drained, no_crash, psql, wait_until

WEB, STORE, CRM, OFF = "CCHANWEB01", "CCHANSTORE1", "CCHANCRM01", "CCHANOFF01"
N = 100
tap = Tap(12)
mock = Mock()
mock.config(sources={WEB: "web", STORE: "offline", CRM: "crm", OFF: "web"},
            tokens={WEB: "tok-web", STORE: "tok-store", CRM: "tok-crm"})
configure(mock)
psql("CREATE EXTENSION tiktok_capi")
psql(f"SELECT tiktok_capi.tt_add_pixel('{WEB}', 'tok-web')")
psql(f"SELECT tiktok_capi.tt_add_pixel('{STORE}', 'tok-store', event_source => 'offline')")
psql(f"SELECT tiktok_capi.tt_add_pixel('{CRM}', 'tok-crm', 'TEST-CRM-1', event_source => 'crm')")
psql(f"SELECT tiktok_capi.tt_add_pixel('{OFF}', 'tok-off')")
psql(f"SELECT tiktok_capi.tt_update_pixel('{OFF}', enabled => false)")

psql("""CREATE TABLE orders (id bigint PRIMARY KEY, channel_set text, email text, total numeric(12,2),
          currency text DEFAULT 'USD', ip text, user_agent text, ttclid text, store_id text,
          lead_id text, status text DEFAULT 'paid')""")
psql("""SELECT tiktok_capi.tt_attach('orders', 'Purchase', '{pixel_from=channel_set, lead_event_source=''HubSpot''}',
                                     condition => $$NEW.status = 'paid'$$)""")
# every row carries the browser's fields, as a shop's single table would: the offline and
# CRM events must leave them out
psql(f"""INSERT INTO orders (id, channel_set, email, total, ip, user_agent, ttclid, store_id, lead_id)
         SELECT g, CASE g % 3 WHEN 0 THEN '{WEB}' WHEN 1 THEN '{STORE}' ELSE '{CRM}' END,
                'buyer' || g || '@example.com', g + 0.5, '203.0.113.7', 'Mozilla/5.0', 'E.C.P.' || g,
                CASE WHEN g % 3 = 1 THEN 'store-' || (g % 4) END,
                CASE WHEN g % 3 = 2 THEN 'lead-' || g END
           FROM generate_series(1, {3 * N}) g""")
psql(f"""INSERT INTO orders (id, channel_set, email, total) VALUES
           (9001, 'CNOSUCHSET', 'x@example.com', 1), (9002, '{OFF}', 'y@example.com', 2)""")

tap.ok(wait_until(lambda: drained(3 * N + 2), 30), "every event is settled", counts())
tap.ok(counts() == {"sent": 3 * N, "failed": 2}, "the routed events are sent, the two bad rows failed",
       counts())
st = mock.stats()
tap.ok(st["rejected"] == {} and st["events_accepted"] == 3 * N,
       "the mock rejected no request: each id went as its own source", st["rejected"])
keys = mock.keys()
by_pixel = {p: sum(1 for k in keys if k[0] == p) for p in (WEB, STORE, CRM)}
tap.ok(by_pixel == {WEB: N, STORE: N, CRM: N} and set(keys.values()) == {1},
       "each row reached the id it named, once", by_pixel)
events = mock.events()
web = [ev for (p, _, _), ev in events.items() if p == WEB]
store = [ev for (p, _, _), ev in events.items() if p == STORE]
crm = [ev for (p, _, _), ev in events.items() if p == CRM]
tap.ok(all({"ip", "user_agent", "ttclid"} <= set(ev["user"]) for ev in web),
       "web events carry ip, user_agent and ttclid")
tap.ok(all(not ({"ip", "user_agent", "ttclid", "ttp"} & set(ev["user"])) and "page" not in ev
           and "email" in ev["user"] for ev in store + crm),
       "offline and CRM events carry the hashed email and none of the browser's fields")
tap.ok(all(ev["properties"].get("shop_id", "").startswith("store-") for ev in store),
       "offline events carry properties.shop_id from store_id")
tap.ok(all(ev.get("lead") == {"lead_id": "lead-" + ev["event_id"], "lead_event_source": "HubSpot"}
           for ev in crm) and not any("lead" in ev for ev in web + store),
       "CRM events carry their lead (lead_id column, HubSpot constant), the others none")
crm_requests = sum(1 for r in mock.requests(CRM) if r["outcome"] == "accepted")
tap.ok(crm_requests > 0 and st["test_event_codes"] == {"TEST-CRM-1": crm_requests},
       "the CRM set's test code went with its events only: no request mixes ids", st["test_event_codes"])
fails = dict(line.split("|", 1) for line in psql(
    "SELECT event_id, last_error FROM tiktok_capi.outbox WHERE status = 'failed'").splitlines())
tap.ok("CNOSUCHSET" in fails.get("9001", "") and "is not configured" in fails.get("9001", ""),
       "a row naming an unknown id: failed, with the reason", fails.get("9001"))
tap.ok(OFF in fails.get("9002", "") and "is disabled" in fails.get("9002", ""),
       "a row naming a disabled id: failed, with the reason", fails.get("9002"))
no_crash(tap)
mock.stop()
tap.done()
