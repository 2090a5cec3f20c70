"""An order's whole life, not just its INSERT: what reaches the API is the order as
committed, once per order, whatever path wrote it and whatever trigger the shop wrote.

Each scenario is run on a table attached with tt_attach and on one with a hand-written
plain AFTER INSERT OR UPDATE trigger, and asserts the exact events the mock accepted.
"""
import hashlib
import time

from harness import (Mock, Tap, configure, psql, server_log, wait_until)

P_ATTACH = "CATTACHPIXEL01"
P_HAND = "CHANDPIXEL0001"
P_SHARED = "CSHAREDPIXEL01"
P_TYPO = "CTYPOPIXEL0001"

tap = Tap(52)
mock = Mock()
configure(mock, batch_size=100)
psql("CREATE EXTENSION tiktok_capi")
for p in (P_ATTACH, P_HAND, P_SHARED, P_TYPO):
    psql(f"SELECT tiktok_capi.tt_add_pixel('{p}', 'token-{p}')")


def sha(s):
    return hashlib.sha256(s.encode()).hexdigest()


def shop_table(name):
    psql(f"""CREATE TABLE {name} (id bigint PRIMARY KEY, customer_email text,
               total numeric(12,2), currency text DEFAULT 'USD', status text NOT NULL DEFAULT 'new',
               created_at timestamptz NOT NULL DEFAULT now());
             CREATE TABLE {name}_items (order_id bigint, product_id int, qty int,
               unit_price numeric(12,2))""")


# orders: tt_attach with a condition, as the README shows
shop_table("orders")
psql(f"""SELECT tiktok_capi.tt_attach('orders', 'Purchase',
           mapping => '{{email=customer_email, contents_from=orders_items(order_id)}}',
           pixel => '{P_ATTACH}', condition => $$NEW.status = 'paid'$$)""")
# shop_orders: a hand-written plain trigger, as the README shows
shop_table("shop_orders")
psql(f"""CREATE TRIGGER tt_capture_purchase AFTER INSERT OR UPDATE ON shop_orders
           FOR EACH ROW WHEN (NEW.status = 'paid')
           EXECUTE FUNCTION tiktok_capi.tt_capture('Purchase', 'email=customer_email',
             'contents_from=public.shop_orders_items(order_id)', 'pixel={P_HAND}')""")
TABLES = (("orders", P_ATTACH, "tt_attach"), ("shop_orders", P_HAND, "hand-written trigger"))


def scenarios(t):
    """The writes of the issue's table, on table t; ids 1 to 9"""
    psql(f"""BEGIN; INSERT INTO {t} (id, customer_email, total, status) VALUES (1, 'a@example.com', 30, 'paid');
             UPDATE {t} SET total = 25 WHERE id = 1; COMMIT""")
    psql(f"""BEGIN;
             INSERT INTO {t} (id, customer_email, total, status) VALUES (2, 'b@example.com', 220, 'paid')
               ON CONFLICT (id) DO UPDATE SET total = EXCLUDED.total, status = EXCLUDED.status;
             INSERT INTO {t} (id, customer_email, total, status) VALUES (2, 'b@example.com', 225, 'paid')
               ON CONFLICT (id) DO UPDATE SET total = EXCLUDED.total, status = EXCLUDED.status;
             COMMIT""")
    psql(f"""BEGIN; INSERT INTO {t} (id, total, status) VALUES (3, 10, 'paid');
             DELETE FROM {t} WHERE id = 3; COMMIT""")
    psql(f"""BEGIN; INSERT INTO {t} (id, total, status) VALUES (4, 10, 'paid');
             UPDATE {t} SET status = 'cancelled' WHERE id = 4; COMMIT""")
    # fired many times in one transaction: one event, the final state
    psql(f"""BEGIN; INSERT INTO {t} (id, total, status) VALUES (5, 1, 'paid');
             {' '.join(f'UPDATE {t} SET total = total + 1 WHERE id = 5;' for _ in range(50))}
             COMMIT""")
    # a savepoint rolled back after an update: the update is not in the event
    psql(f"""BEGIN; INSERT INTO {t} (id, total, status) VALUES (6, 40, 'paid');
             SAVEPOINT s; UPDATE {t} SET total = 99 WHERE id = 6; ROLLBACK TO s; COMMIT""")
    # the order first, its items after, in one transaction
    psql(f"""BEGIN; INSERT INTO {t} (id, total, status) VALUES (7, 30, 'paid');
             INSERT INTO {t}_items VALUES (7, 11, 1, 10), (7, 12, 2, 10); COMMIT""")
    # the same with deferred triggers made immediate
    psql(f"""BEGIN; SET CONSTRAINTS ALL IMMEDIATE;
             INSERT INTO {t} (id, total, status) VALUES (8, 30, 'paid');
             INSERT INTO {t}_items VALUES (8, 21, 3, 10); COMMIT""")
    # a savepoint rolled back over the whole insert, then inserted again
    psql(f"""BEGIN; SAVEPOINT s; INSERT INTO {t} (id, total, status) VALUES (9, 70, 'paid');
             ROLLBACK TO s; INSERT INTO {t} (id, total, status) VALUES (9, 71, 'paid'); COMMIT""")


for t, _, _ in TABLES:
    scenarios(t)
wait_until(lambda: psql("SELECT count(*) FROM tiktok_capi.outbox WHERE status = 'pending'") == "0", 30)
ev = mock.events()
keys = mock.keys()


def got(pixel, eid):
    return ev.get((pixel, "Purchase", eid))


for t, pixel, how in TABLES:
    e = got(pixel, "1")
    tap.ok(e is not None and e["properties"]["value"] == 25, f"{how}: insert then update in one transaction sends the committed value 25", e)
    e = got(pixel, "2")
    tap.ok(e is not None and e["properties"]["value"] == 225, f"{how}: two upserts in one transaction send the last value 225", e)
    tap.ok(got(pixel, "3") is None, f"{how}: an order inserted and deleted in one transaction sends nothing", got(pixel, "3"))
    tap.ok(got(pixel, "4") is None, f"{how}: an order paid then cancelled in one transaction sends nothing", got(pixel, "4"))
    e = got(pixel, "5")
    tap.ok(e is not None and e["properties"]["value"] == 51 and keys.get((pixel, "Purchase", "5")) == 1,
           f"{how}: fired 51 times in one transaction, one event with the final value", (e, keys.get((pixel, "Purchase", "5"))))
    e = got(pixel, "6")
    tap.ok(e is not None and e["properties"]["value"] == 40, f"{how}: an update rolled back to a savepoint is not sent", e)
    e = got(pixel, "7")
    items = sorted((c.get("content_id"), c.get("quantity")) for c in (e or {}).get("properties", {}).get("contents", []))
    tap.ok(items == [("11", 1), ("12", 2)], f"{how}: items inserted after the order are in its event", e)
    e = got(pixel, "8")
    items = [(c.get("content_id"), c.get("quantity")) for c in (e or {}).get("properties", {}).get("contents", [])]
    tap.ok(items == [("21", 3)], f"{how}: SET CONSTRAINTS ALL IMMEDIATE does not strip the items", e)
    e = got(pixel, "9")
    tap.ok(e is not None and e["properties"]["value"] == 71, f"{how}: an insert rolled back to a savepoint and redone sends the redone row", e)
    n = psql(f"SELECT count(*) FROM tiktok_capi.outbox WHERE pixel_code = '{pixel}' AND event_id IN ('3', '4')")
    tap.ok(n == "0", f"{how}: nothing queued for the deleted and the cancelled order", n)

# an order converts once: re-paid after a refund, after retention, after an erasure
for t, pixel, how in TABLES:
    psql(f"UPDATE {t} SET status = 'refunded' WHERE id = 1")
    psql(f"UPDATE {t} SET status = 'paid', total = 24 WHERE id = 1")
    # retention: the worker's, with the event aged past it, and tt_purge_sent on demand
    psql(f"UPDATE tiktok_capi.outbox SET sent_at = now() - interval '8 days' WHERE pixel_code = '{pixel}' AND event_id IN ('2', '5')")
    psql(f"SELECT tiktok_capi.tt_purge_sent('7 days')")
    psql(f"UPDATE {t} SET total = total + 1 WHERE id IN (2, 5)")
    psql(f"INSERT INTO {t} (id, total, status) VALUES (2, 1, 'paid') ON CONFLICT (id) DO UPDATE SET total = 500")
    # erasure
    psql(f"SELECT tiktok_capi.tt_forget(email => 'b@example.com')")
    psql(f"UPDATE {t} SET total = 300 WHERE id = 2")
    psql(f"UPDATE {t} SET customer_email = 'B@Example.com ' WHERE id = 2")
time.sleep(1.5)
wait_until(lambda: psql("SELECT count(*) FROM tiktok_capi.outbox WHERE status = 'pending'") == "0", 20)
keys = mock.keys()
for t, pixel, how in TABLES:
    tap.ok(keys.get((pixel, "Purchase", "1")) == 1, f"{how}: paid, refunded, paid again: still one Purchase", keys.get((pixel, "Purchase", "1")))
    tap.ok(keys.get((pixel, "Purchase", "5")) == 1 and keys.get((pixel, "Purchase", "2")) == 1,
           f"{how}: orders updated after retention removed their sent events are not sent again",
           (keys.get((pixel, "Purchase", "5")), keys.get((pixel, "Purchase", "2"))))
    q = psql(f"""SELECT count(*) FROM tiktok_capi.outbox
                  WHERE pixel_code = '{pixel}' AND event_id IN ('1', '2', '5') AND status = 'pending'""")
    tap.ok(q == "0", f"{how}: nothing pending for orders already converted", q)
    n = psql(f"""SELECT count(*) FROM tiktok_capi.outbox
                  WHERE payload::text LIKE '%{sha('b@example.com')}%'""")
    tap.ok(n == "0", f"{how}: after tt_forget, updates of the person's order queue nothing of theirs", n)

# the worker's own retention, then an update: not sent again
psql(f"UPDATE tiktok_capi.outbox SET sent_at = now() - interval '8 days' WHERE pixel_code = '{P_ATTACH}' AND event_id = '6'")
configure(mock, retention="7d")
wait_until(lambda: psql(f"""SELECT count(*) FROM tiktok_capi.outbox WHERE pixel_code = '{P_ATTACH}'
                              AND event_id = '6' AND payload IS NOT NULL AND payload <> '{{}}'""") == "0", 10)
psql("UPDATE orders SET total = 41 WHERE id = 6")
time.sleep(1.5)
tap.ok(mock.keys().get((P_ATTACH, "Purchase", "6")) == 1,
       "tt_attach: an order updated after the worker's retention is not sent again",
       mock.keys().get((P_ATTACH, "Purchase", "6")))

# two tables on one pixel: refused unless the ids are made distinct
shop_table("web_orders")
shop_table("app_orders")
shop_table("pos_orders")
psql(f"SELECT tiktok_capi.tt_attach('web_orders', 'Purchase', pixel => '{P_SHARED}')")
err = psql(f"SELECT tiktok_capi.tt_attach('app_orders', 'Purchase', pixel => '{P_SHARED}')", check=False)
tap.ok(err is None, "tt_attach refuses a second table on the same pixel and event")
psql(f"""SELECT tiktok_capi.tt_attach('app_orders', 'Purchase', pixel => '{P_SHARED}',
           mapping => '{{event_id_prefix=app-}}')""")
psql(f"""CREATE TRIGGER pos_capture AFTER INSERT OR UPDATE ON pos_orders FOR EACH ROW
           EXECUTE FUNCTION tiktok_capi.tt_capture('Purchase', 'pixel={P_SHARED}')""")
psql("INSERT INTO web_orders (id, total, status) VALUES (5, 10, 'paid')")
psql("INSERT INTO app_orders (id, total, status) VALUES (5, 20, 'paid')")
psql("INSERT INTO pos_orders (id, total, status) VALUES (5, 30, 'paid')")
wait_until(lambda: psql(f"SELECT count(*) FROM tiktok_capi.outbox WHERE pixel_code = '{P_SHARED}' AND status = 'pending'") == "0", 20)
ev = mock.events()
w, a = ev.get((P_SHARED, "Purchase", "5")), ev.get((P_SHARED, "Purchase", "app-5"))
tap.ok(w is not None and w["properties"]["value"] == 10, "two tables, one pixel: the first table's order 5 is sent as 5", w)
tap.ok(a is not None and a["properties"]["value"] == 20, "the second table's order 5 is sent as app-5 (event_id_prefix)", a)
call = psql(f"SELECT tiktok_capi.tt_pixel_call('{P_SHARED}', 'Purchase', 'app-5')")
tap.ok(call is not None and "app-5" in call and "20" in call, "tt_pixel_call with the prefixed id tells the browser the app order", call)
row = psql(f"""SELECT status || ' ' || last_error FROM tiktok_capi.outbox
                WHERE pixel_code = '{P_SHARED}' AND status = 'failed'""")
tap.ok(row is not None and "pos_orders" in row and "web_orders" in row,
       "a hand-written trigger on a third table with the same ids: a failed row naming both tables", row)
tap.ok(mock.keys().get((P_SHARED, "Purchase", "5")) == 1 and w["properties"]["value"] == 10,
       "the colliding order did not replace or resend the first one", mock.keys().get((P_SHARED, "Purchase", "5")))

# a misspelled mapping in a hand-written trigger: not sent half-built; loud
shop_table("typo_orders")
psql(f"""CREATE TRIGGER typo_capture AFTER INSERT OR UPDATE ON typo_orders FOR EACH ROW
           EXECUTE FUNCTION tiktok_capi.tt_capture('Purchase', 'email=emial', 'value=totl', 'pixel={P_TYPO}')""")
psql("""INSERT INTO typo_orders (id, customer_email, total) VALUES (1, 'x@example.com', 5);
        INSERT INTO typo_orders (id, customer_email, total) VALUES (2, 'y@example.com', 6);
        INSERT INTO typo_orders (id, customer_email, total) VALUES (3, 'z@example.com', 7)""")
time.sleep(1.5)
sent = [k for k in mock.keys() if k[0] == P_TYPO]
tap.ok(sent == [], "a trigger with misspelled columns sends nothing", sent)
rows = psql(f"SELECT status, last_error FROM tiktok_capi.outbox WHERE pixel_code = '{P_TYPO}' ORDER BY event_id")
lines = rows.splitlines() if rows else []
tap.ok(len(lines) == 3 and all(l.startswith("failed|") and "typo_capture" in l and "emial" in l for l in lines),
       "each order of it is queued failed with a reason naming the trigger and the column", rows)
warned = [l for l in server_log().splitlines() if "WARNING" in l and "typo_capture" in l]
tap.ok(len(warned) == 1, "one WARNING in the log for the trigger, not one per order", warned)
h = psql("""SELECT status || ' ' || reason FROM tiktok_capi.tt_health() WHERE "check" = 'triggers'""")
tap.ok(h is not None and h.startswith("critical") and "typo_capture" in h, "tt_health's triggers check is critical and names it", h)

# order_id= mapped, no event_id mapping: the event_id is the order number
psql("""CREATE TABLE numbered_orders (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), order_number text NOT NULL,
          email text, total numeric, currency text DEFAULT 'EUR')""")
psql(f"""CREATE TRIGGER numbered_capture AFTER INSERT OR UPDATE ON numbered_orders FOR EACH ROW
           EXECUTE FUNCTION tiktok_capi.tt_capture('Purchase', 'order_id=order_number', 'pixel={P_HAND}')""")
psql("INSERT INTO numbered_orders (order_number, total) SELECT 'N-' || g, g FROM generate_series(1, 1000) g")
wait_until(lambda: psql(f"SELECT count(*) FROM tiktok_capi.outbox WHERE event_id LIKE 'N-%' AND status <> 'pending'") == "1000", 30)
ids = {k[2] for k in mock.keys() if k[0] == P_HAND and k[2].startswith("N-")}
tap.ok(ids == {f"N-{g}" for g in range(1, 1001)}, "order_id=order_number alone: 1,000 events whose event_id is the order number", len(ids))
ev = mock.events()
tap.ok(all(ev[(P_HAND, "Purchase", i)]["properties"].get("order_id") == i for i in list(ids)[:50]),
       "their order_id is the order number too")

# rows with no id: each a failed row of its own, naming the row
psql("""CREATE TABLE anon_orders (ref text, email text, total numeric, currency text DEFAULT 'USD')""")
psql(f"""CREATE TRIGGER anon_capture AFTER INSERT ON anon_orders FOR EACH ROW
           EXECUTE FUNCTION tiktok_capi.tt_capture('Purchase', 'event_id=ref', 'pixel={P_HAND}')""")
psql("INSERT INTO anon_orders (ref, total) VALUES (NULL, 1), ('  ', 2), (NULL, 3)")
rows = psql(f"""SELECT event_id, last_error FROM tiktok_capi.outbox
                 WHERE pixel_code = '{P_HAND}' AND status = 'failed' AND last_error LIKE '%no event_id%'""")
lines = rows.splitlines() if rows else []
tap.ok(len(lines) == 3 and len({l.split('|')[0] for l in lines}) == 3 and all("anon_orders" in l for l in lines),
       "three orders without an id: three failed rows, each naming its row", rows)
ok_before = [k for k in mock.keys() if k[0] == P_HAND and k[2] == ""]
tap.ok(ok_before == [], "no event with an empty id is sent", ok_before)

# value without currency is a field-level warning, counted where a DBA looks
psql("CREATE TABLE bare_orders (id bigint PRIMARY KEY, total numeric)")
psql(f"SELECT tiktok_capi.tt_attach('bare_orders', 'CompletePayment', pixel => '{P_HAND}')")
psql("INSERT INTO bare_orders SELECT g, g FROM generate_series(1, 20) g")
w = psql(f"SELECT warnings::text FROM tiktok_capi.outbox WHERE event = 'CompletePayment' LIMIT 1")
tap.ok(w is not None and "currency" in w, "value without currency is noted in warnings", w)
h = psql("""SET tiktok_capi.health_warnings_warn = 1;
           SELECT status FROM tiktok_capi.tt_health() WHERE "check" = 'warnings'""")
tap.ok(h in ("warn", "critical"), "tt_health's warnings check rises with the share of events with warnings", h)
v = psql("""SELECT count(*) FROM tiktok_capi.recent_warnings WHERE kind LIKE '%currency%' AND events >= 20""")
tap.ok(v == "1", "recent_warnings counts them by kind", v)

# a bulk UPDATE of every converted order queues nothing
n_sent_before = sum(mock.keys().values())
psql("UPDATE numbered_orders SET total = total + 1")
psql("UPDATE orders SET total = total + 1")
psql("UPDATE shop_orders SET total = total + 1")
time.sleep(1.5)
pend = psql("SELECT count(*) FROM tiktok_capi.outbox WHERE status = 'pending'")
tap.ok(pend == "0" and sum(mock.keys().values()) == n_sent_before,
       "a bulk UPDATE of orders already sent sends nothing", (pend, sum(mock.keys().values()) - n_sent_before))

# while pending, a change rebuilds the event
psql(f"SELECT tiktok_capi.tt_update_pixel('{P_ATTACH}', enabled => false)")
psql("INSERT INTO orders (id, customer_email, total, status) VALUES (40, 'p@example.com', 10, 'paid')")
psql("UPDATE orders SET total = 12 WHERE id = 40")
psql("INSERT INTO orders_items VALUES (40, 99, 1, 12)")
psql("UPDATE orders SET status = 'paid' WHERE id = 40")
psql(f"SELECT tiktok_capi.tt_update_pixel('{P_ATTACH}', enabled => true)")
wait_until(lambda: (P_ATTACH, "Purchase", "40") in mock.keys(), 20)
e = mock.events().get((P_ATTACH, "Purchase", "40"))
tap.ok(e is not None and e["properties"]["value"] == 12 and len(e["properties"].get("contents", [])) == 1,
       "while pending, later transactions' changes (value, items) rebuild the event", e)
tap.ok(mock.keys().get((P_ATTACH, "Purchase", "40")) == 1, "and it is sent once", mock.keys().get((P_ATTACH, "Purchase", "40")))

tap.ok(all(n == 1 for k, n in mock.keys().items()), "no key was accepted twice",
       [k for k, n in mock.keys().items() if n != 1][:5])
tap.ok(mock.stats()["rejected"] == {}, "the mock rejected nothing", mock.stats()["rejected"])
log = server_log()
tap.ok("terminated by signal" not in log, "no server process crashed")
tap.done()
