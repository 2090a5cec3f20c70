"""Shops whose schemas look nothing like the README's, and nothing like each other,
written the way their applications write them: what reaches the API is exactly the
order each shop committed.

- a Rails-style shop: amounts in cents (`value_minor=`), naive `timestamp` columns,
  items in a child table with `price_cents`;
- a Shopify export: no mapping at all, the defaults find contact_email, total_price,
  browser_ip, the ttclid inside landing_site and the line_items jsonb;
- a WooCommerce-like and a Magento-like table, defaults only (Magento's id mapped);
- a table partitioned by month, with rows moving between partitions;
- a quoted, mixed-case table in another schema, keyed by uuid;

through multi-row INSERT, COPY, upsert, MERGE, UPDATE into the condition, ROLLBACK,
SAVEPOINT ... ROLLBACK TO and multi-statement transactions, attached with tt_attach
and with hand-written CREATE TRIGGER.  Each event is compared field by field with what
the shop's row says, hashed as TikTok wants it.  tt_attach must say what it resolved,
and tiktok_capi.capture_triggers lists each trigger's fields and where they come from.
"""
import calendar
import csv
import hashlib
import io
import json
import re
import subprocess
import time

from harness import Mock, Tap, configure, psql, server_log, wait_until

P_RAILS = "CRAILSPIXEL001"
P_SHOPIFY = "CSHOPIFYPIXEL1"
P_WOO = "CWOOPIXEL00001"
P_MAGENTO = "CMAGENTOPIXEL1"
P_PART = "CPARTPIXEL0001"
P_QUOTED = "CQUOTEDPIXEL01"
P_CENTS = "CCENTSPIXEL001"
PIXELS = (P_RAILS, P_SHOPIFY, P_WOO, P_MAGENTO, P_PART, P_QUOTED, P_CENTS)

tap = Tap(52)
mock = Mock()
configure(mock)
psql("CREATE EXTENSION tiktok_capi")
for p in PIXELS:
    psql(f"SELECT tiktok_capi.tt_add_pixel('{p}', 'token-{p}')")
DB = psql("SELECT current_database()")


def run(script, stop=True):
    """A psql script fed on stdin, as an application's migration or import would
    run it: (ok, stdout, stderr).  stderr carries the NOTICEs and WARNINGs."""
    r = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", f"ON_ERROR_STOP={1 if stop else 0}",
                        "-d", DB, "-f", "-"], input=script, capture_output=True, text=True, timeout=60)
    return r.returncode == 0 and "ERROR" not in r.stderr, r.stdout.strip(), r.stderr.strip()


def sha(s):
    return hashlib.sha256(s.encode()).hexdigest()


def utc(*t):
    return calendar.timegm(t)


def user(e):
    """The event's user object, a one-element array written as its element
    (TikTok takes a string or an array of strings)"""
    u = (e or {}).get("user", {})
    return {k: (v[0] if isinstance(v, list) and len(v) == 1 else v) for k, v in u.items()}


def props(e):
    return (e or {}).get("properties", {})


def contents(e):
    return sorted(props(e).get("contents", []), key=lambda c: str(c.get("content_id")))


def pending():
    return psql("SELECT count(*) FROM tiktok_capi.outbox WHERE status = 'pending'")


def drain():
    wait_until(lambda: pending() == "0", 30)


# ---------------------------------------------------------------- the schemas
# 1. Rails: bigserial ids, cents, naive timestamps, line_items child table
psql("""CREATE TABLE orders (id bigserial PRIMARY KEY, email text, total_cents integer NOT NULL,
          currency text NOT NULL DEFAULT 'USD', created_at timestamp without time zone NOT NULL,
          updated_at timestamp without time zone NOT NULL, paid_at timestamp without time zone);
        CREATE TABLE line_items (id bigserial PRIMARY KEY, order_id bigint NOT NULL REFERENCES orders,
          product_id bigint NOT NULL, quantity integer NOT NULL DEFAULT 1, price_cents integer NOT NULL,
          created_at timestamp without time zone, updated_at timestamp without time zone)""")
ok, rails_attach, err = run(f"""SELECT tiktok_capi.tt_attach('orders', 'Purchase',
    mapping => '{{value_minor=total_cents, event_time=paid_at, contents_from=line_items(order_id)}}',
    pixel => '{P_RAILS}', condition => $$NEW.paid_at IS NOT NULL$$)""")
if not ok:
    tap.diag(f"tt_attach of the Rails orders table failed: {err}")

# a *_cents column mapped to value: attached, but warned about
ok, out, err = run(f"""BEGIN;
    CREATE TABLE cents_orders (id bigserial PRIMARY KEY, email text, total_cents integer, currency text);
    SELECT tiktok_capi.tt_attach('cents_orders', 'Purchase', mapping => '{{value=total_cents}}',
                                 pixel => '{P_CENTS}');
    ROLLBACK""")
tap.ok(ok and "WARNING" in err and "value_minor" in err,
       "tt_attach with value=total_cents warns that a cents column wants value_minor=", (ok, err))

# 2. Shopify export: no mapping, only the condition
psql("""CREATE TABLE shopify_orders (id bigint PRIMARY KEY, order_number int, contact_email text,
          total_price numeric, currency text, browser_ip text, landing_site text,
          financial_status text, line_items jsonb)""")
ok, shopify_attach, err = run(f"""SELECT tiktok_capi.tt_attach('shopify_orders', 'Purchase',
    pixel => '{P_SHOPIFY}', condition => $$NEW.financial_status = 'paid'$$)""")
said = f"{shopify_attach}\n{err}"
resolved = {"email": "contact_email", "value": "total_price", "ip": "browser_ip",
            "ttclid": "landing_site", "contents": "line_items", "event_id": "id"}


def names(field, col):
    return (re.search(rf"\b{field}\b\s*(=|:|<-|←|<=|is|from)\s*[\w.(\"]*?\b{col}\b", said)
            or re.search(rf"\b{col}\b\)?\s*(->|→|=>)\s*{field}\b", said))


missing = [f"{f}<-{c}" for f, c in resolved.items() if not names(f, c)]
tap.ok(ok and not missing,
       "tt_attach of the Shopify table says which column feeds each field (email <- contact_email, ...)",
       (missing, said[:600]))

# 3. WooCommerce: defaults only
psql("""CREATE TABLE wc_orders (order_id bigint PRIMARY KEY, billing_email text, billing_phone text,
          order_total numeric(10,2), currency text, customer_ip_address text, customer_user_agent text,
          status text NOT NULL DEFAULT 'wc-pending')""")
ok, _, err = run(f"""SELECT tiktok_capi.tt_attach('wc_orders', 'Purchase', pixel => '{P_WOO}',
    condition => $$NEW.status IN ('wc-processing', 'wc-completed')$$)""")
if not ok:
    tap.diag(f"tt_attach of wc_orders failed: {err}")

# Magento: a hand-written trigger; entity_id is Magento's key, increment_id the order number
psql(f"""CREATE TABLE sales_order (entity_id integer PRIMARY KEY, increment_id text UNIQUE NOT NULL,
           state text NOT NULL DEFAULT 'new', customer_email text, grand_total numeric(20,4),
           order_currency_code text, remote_ip text);
         CREATE TRIGGER sales_order_tiktok AFTER INSERT OR UPDATE ON sales_order
           FOR EACH ROW WHEN (NEW.state IN ('processing', 'complete'))
           EXECUTE FUNCTION tiktok_capi.tt_capture('Purchase', 'event_id=increment_id',
             'currency=order_currency_code', 'pixel={P_MAGENTO}')""")

# 4. partitioned by month on created_at; user_agent deliberately not sent
psql("""CREATE TABLE monthly_orders (id bigint NOT NULL, email text, total numeric(12,2),
          currency text NOT NULL DEFAULT 'EUR', user_agent text, status text NOT NULL DEFAULT 'new',
          created_at timestamptz NOT NULL, PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at);
        CREATE TABLE monthly_orders_2026_10 PARTITION OF monthly_orders
          FOR VALUES FROM ('2026-10-01 00:00+00') TO ('2026-11-01 00:00+00');
        CREATE TABLE monthly_orders_2026_11 PARTITION OF monthly_orders
          FOR VALUES FROM ('2026-11-01 00:00+00') TO ('2026-12-01 00:00+00')""")
ok, _, err = run(f"""SELECT tiktok_capi.tt_attach('monthly_orders', 'Purchase',
    mapping => '{{event_time=created_at, user_agent=}}', pixel => '{P_PART}',
    condition => $$NEW.status = 'paid'$$)""")
tap.ok(ok, "tt_attach accepts a table partitioned by month", err)

# a quoted, mixed-case table in its own schema, uuid keys, a hand-written trigger
psql(f"""CREATE SCHEMA "Shop";
         CREATE TABLE "Shop"."Orders" ("Id" uuid PRIMARY KEY, "Email" text, "Total" numeric(12,2),
           "Currency" text, "Status" text NOT NULL, "PaidAt" timestamptz);
         CREATE TABLE shop_import (id uuid, email text, total numeric, currency text, status text,
           paid_at timestamptz);
         CREATE TRIGGER "CapturePurchase" AFTER INSERT OR UPDATE ON "Shop"."Orders"
           FOR EACH ROW WHEN (NEW."Status" = 'Paid')
           EXECUTE FUNCTION tiktok_capi.tt_capture('Purchase', 'event_id=Id', 'email=Email',
             'value=Total', 'currency=Currency', 'event_time=PaidAt', 'pixel={P_QUOTED}')""")
# tt_attach on the quoted table, the README's field=column with the columns' own names
ok, out, err = run(f"""BEGIN;
    SELECT tiktok_capi.tt_attach('"Shop"."Orders"', 'CompletePayment',
      mapping => '{{event_id=Id, email=Email, value=Total, currency=Currency, event_time=PaidAt}}',
      pixel => '{P_QUOTED}', condition => $$NEW."Status" = 'Paid'$$);
    ROLLBACK""")
tap.ok(ok and '"Shop"."Orders"' in out, 'tt_attach takes "Shop"."Orders" and its mixed-case columns (event_id=Id)',
       (out[:300], err[:300]))
# the same columns written as SQL writes them, "Id": tt_attach must take them too
ok, out, err = run(f"""BEGIN;
    SELECT tiktok_capi.tt_attach('"Shop"."Orders"', 'CompletePayment',
      mapping => ARRAY['event_id="Id"', 'email="Email"', 'value="Total"', 'currency="Currency"'],
      pixel => '{P_QUOTED}');
    ROLLBACK""")
tap.ok(ok, 'a mapping may name a mixed-case column as SQL quotes it: event_id="Id"', err[:300])

# ---------------------------------------------------------------- phase 1: the writes
t0 = int(time.time())

# Rails: one multi-row INSERT of three orders, their items after them, in one
# transaction, in a session whose TimeZone is not UTC (the naive timestamps are UTC)
run("""SET TimeZone = 'America/Los_Angeles';
BEGIN;
INSERT INTO orders (email, total_cents, currency, created_at, updated_at, paid_at) VALUES
  ('USD.Buyer@Rails.example', 1999, 'USD', '2026-11-30 11:58:00', '2026-11-30 12:00:00', '2026-11-30 12:00:00'),
  ('jpy.buyer@rails.example', 1999, 'JPY', '2026-11-30 11:58:00', '2026-11-30 12:00:00', '2026-11-30 12:00:00'),
  ('kwd.buyer@rails.example', 12345, 'KWD', '2026-11-30 11:58:00', '2026-11-30 12:00:00', '2026-11-30 12:00:00')
RETURNING id;
INSERT INTO line_items (order_id, product_id, quantity, price_cents, created_at, updated_at)
  SELECT o.id, v.product_id, v.quantity, v.price_cents, o.created_at, o.created_at
    FROM orders o JOIN (VALUES ('USD.Buyer@Rails.example', 101, 2, 999), ('USD.Buyer@Rails.example', 102, 1, 1),
                               ('jpy.buyer@rails.example', 201, 1, 1999),
                               ('kwd.buyer@rails.example', 301, 3, 4115)) v (email, product_id, quantity, price_cents)
      ON o.email = v.email;
COMMIT;""")
# naive_timestamp_zone set in the writing session
berlin_session = run("""SET TimeZone = 'America/Los_Angeles';
SET tiktok_capi.naive_timestamp_zone = 'Europe/Berlin';
INSERT INTO orders (email, total_cents, currency, created_at, updated_at, paid_at)
  VALUES ('berlin.session@rails.example', 500, 'EUR', '2026-11-30 11:00:00', '2026-11-30 11:00:00', '2026-11-30 12:00:00');
""", stop=False)
# naive_timestamp_zone set for the database, as an operator would
berlin_db = run(f"""ALTER DATABASE "{DB}" SET tiktok_capi.naive_timestamp_zone = 'Europe/Berlin'""")
run("""SET TimeZone = 'America/Los_Angeles';
INSERT INTO orders (email, total_cents, currency, created_at, updated_at, paid_at)
  VALUES ('berlin.database@rails.example', 700, 'EUR', '2026-11-30 11:00:00', '2026-11-30 11:00:00', '2026-11-30 12:00:00');
""")
run(f"""ALTER DATABASE "{DB}" RESET tiktok_capi.naive_timestamp_zone""")
# a checkout that failed: rolled back
run("""BEGIN;
INSERT INTO orders (email, total_cents, currency, created_at, updated_at, paid_at)
  VALUES ('rolled.back@rails.example', 4200, 'USD', '2026-11-30 12:00:00', '2026-11-30 12:00:00', '2026-11-30 12:00:00');
INSERT INTO line_items (order_id, product_id, quantity, price_cents)
  SELECT id, 999, 1, 4200 FROM orders WHERE email = 'rolled.back@rails.example';
ROLLBACK;""")
rails_ids = dict(line.split("|") for line in psql("SELECT email, id FROM orders").splitlines())

# Shopify: the export loaded with COPY FROM STDIN (CSV, a header line)
SHOP = [
    (820982911946154508, 1001, " Jon.Snow@Example.com ", "46.48", "USD", "203.0.113.7",
     "/products/x?ttclid=E.C.P.abc&utm_source=tiktok", "paid",
     [{"sku": "TEE-RED-M", "quantity": 2, "price": "19.99", "title": "Red tee"},
      {"product_id": 632910392, "quantity": 1, "price": "5.00", "title": "Sticker"},
      {"variant_id": 808950810, "quantity": 3, "price": "0.50", "title": "Pin"}]),
    (820982911946154509, 1002, "arya@example.com", "12.00", "EUR", "2001:db8::1",
     "/collections/all?utm_source=google&utm_medium=cpc", "paid",
     [{"sku": "MUG", "quantity": 1, "price": "12.00", "title": "Mug"}]),
    (820982911946154510, 1003, "sansa@example.com", "8.00", "USD", "198.51.100.4", None, "pending",
     [{"sku": "CARD", "quantity": 4, "price": "2.00", "title": "Card"}]),
]
buf = io.StringIO()
w = csv.writer(buf, lineterminator="\n")
w.writerow(["id", "order_number", "contact_email", "total_price", "currency", "browser_ip",
            "landing_site", "financial_status", "line_items"])
for r in SHOP:
    w.writerow([*r[:6], "" if r[6] is None else r[6], r[7], json.dumps(r[8])])
copied = run("COPY shopify_orders (id, order_number, contact_email, total_price, currency, browser_ip, "
             "landing_site, financial_status, line_items) FROM STDIN WITH (FORMAT csv, HEADER true);\n"
             + buf.getvalue() + "\\.\n")
if not copied[0]:
    tap.diag(f"COPY into shopify_orders failed: {copied[2]}")
# a webhook handler: two orders, the second rolled back to a savepoint
run("""BEGIN;
INSERT INTO shopify_orders (id, order_number, contact_email, total_price, currency, financial_status, line_items)
  VALUES (820982911946154511, 1004, 'kept@example.com', 3.00, 'USD', 'paid', '[{"sku": "KEPT", "quantity": 1, "price": "3.00"}]');
SAVEPOINT webhook;
INSERT INTO shopify_orders (id, order_number, contact_email, total_price, currency, financial_status, line_items)
  VALUES (820982911946154512, 1005, 'undone@example.com', 9.00, 'USD', 'paid', '[{"sku": "UNDONE", "quantity": 1, "price": "9.00"}]');
ROLLBACK TO SAVEPOINT webhook;
COMMIT;""")

# WooCommerce: checkout then payment in one multi-statement transaction; one left unpaid
run("""BEGIN;
INSERT INTO wc_orders (order_id, billing_email, billing_phone, order_total, currency, customer_ip_address,
                       customer_user_agent, status)
  VALUES (7001, 'Ann.Lee@Example.co.uk', '+44 20 7946 0958', 59.90, 'GBP', '192.0.2.44',
          'Mozilla/5.0 (Windows NT 10.0; Win64; x64) Firefox/133.0', 'wc-pending');
UPDATE wc_orders SET status = 'wc-processing' WHERE order_id = 7001;
INSERT INTO wc_orders (order_id, billing_email, order_total, currency, status)
  VALUES (7002, 'unpaid@example.com', 10, 'GBP', 'wc-pending');
COMMIT;""")

# Magento: the order saved twice in one transaction by upserts, the total changed by the second
run("""BEGIN;
INSERT INTO sales_order (entity_id, increment_id, state, customer_email, grand_total, order_currency_code, remote_ip)
  VALUES (101, '000000101', 'processing', 'max@example.de', 50.0000, 'EUR', '198.51.100.23')
  ON CONFLICT (entity_id) DO UPDATE SET grand_total = EXCLUDED.grand_total, state = EXCLUDED.state;
INSERT INTO sales_order (entity_id, increment_id, state, customer_email, grand_total, order_currency_code, remote_ip)
  VALUES (101, '000000101', 'processing', 'max@example.de', 45.5000, 'EUR', '198.51.100.23')
  ON CONFLICT (entity_id) DO UPDATE SET grand_total = EXCLUDED.grand_total, state = EXCLUDED.state;
COMMIT;""")

# partitioned: inserted in October's partition, moved to November's in the same transaction
run("""BEGIN;
INSERT INTO monthly_orders (id, email, total, user_agent, status, created_at)
  VALUES (1, 'part.one@example.com', 10, 'Mozilla/5.0 secret', 'paid', '2026-10-31 23:30:00+00');
UPDATE monthly_orders SET created_at = '2026-11-01 00:30:00+00', total = 11 WHERE id = 1;
COMMIT;""")
# inserted unpaid, then one UPDATE pays it and moves it to another partition
run("""INSERT INTO monthly_orders (id, email, total, user_agent, status, created_at)
  VALUES (2, 'part.two@example.com', 20, 'Mozilla/5.0 secret', 'new', '2026-10-15 09:00:00+00');""")
run("""UPDATE monthly_orders SET status = 'paid', created_at = '2026-11-02 08:00:00+00' WHERE id = 2;""")
# paid and sent in October's partition; moved later (phase 2)
run("""INSERT INTO monthly_orders (id, email, total, user_agent, status, created_at)
  VALUES (3, 'part.three@example.com', 30, 'Mozilla/5.0 secret', 'paid', '2026-10-20 12:00:00+00');""")

# a month backfilled after tt_attach: its new partition captures too
run("""CREATE TABLE monthly_orders_2026_09 PARTITION OF monthly_orders
  FOR VALUES FROM ('2026-09-01 00:00+00') TO ('2026-10-01 00:00+00');
INSERT INTO monthly_orders (id, email, total, status, created_at)
  VALUES (7, 'part.seven@example.com', 70, 'paid', '2026-09-30 18:00:00+00');""")
# one multi-row INSERT whose rows land in two partitions
run("""INSERT INTO monthly_orders (id, email, total, status, created_at) VALUES
  (4, 'part.four@example.com', 40, 'paid', '2026-10-05 10:00:00+00'),
  (5, 'part.five@example.com', 50, 'paid', '2026-11-05 10:00:00+00'),
  (6, 'part.six@example.com', 60, 'new', '2026-11-06 10:00:00+00');""")

# "Shop"."Orders": one order waiting, then an import MERGEd: it is paid, and a new one arrives paid
UA = "6f1c1c9e-3c1a-4b8e-9d1e-0a7b4a2c9f01"
UB = "0D4C6E0B-8F2A-4C7B-A1E3-5B9D2F4E6A8C"
run(f"""INSERT INTO "Shop"."Orders" ("Id", "Email", "Total", "Currency", "Status")
  VALUES ('{UA}', 'uuid.a@example.com', 25, 'CHF', 'Pending');""")
merged = run(f"""INSERT INTO shop_import VALUES
  ('{UA}', 'uuid.a@example.com', 30, 'CHF', 'Paid', '2026-11-29 10:00:00+00'),
  ('{UB}', 'uuid.b@example.com', 15.5, 'CHF', 'Paid', '2026-11-29 11:00:00+00');
MERGE INTO "Shop"."Orders" o USING shop_import s ON o."Id" = s.id
  WHEN MATCHED THEN UPDATE SET "Status" = s.status, "Total" = s.total, "PaidAt" = s.paid_at
  WHEN NOT MATCHED THEN INSERT ("Id", "Email", "Total", "Currency", "Status", "PaidAt")
    VALUES (s.id, s.email, s.total, s.currency, s.status, s.paid_at);""")
if not merged[0]:
    tap.diag(f"MERGE failed: {merged[2]}")
t1 = int(time.time())
drain()
before_phase2 = mock.events()
sent_before = mock.keys()

# ---------------------------------------------------------------- phase 2
t2 = int(time.time())
run("UPDATE shopify_orders SET financial_status = 'paid' WHERE order_number = 1003")
run("UPDATE monthly_orders SET created_at = '2026-11-03 12:00:00+00' WHERE id = 3")
t3 = int(time.time())
drain()
time.sleep(1.5)
drain()
ev = mock.events()
keys = mock.keys()


def got(pixel, eid):
    return ev.get((pixel, "Purchase", str(eid)))


def with_hash(pixel, h):
    return [k for k, e in ev.items() if k[0] == pixel and user(e).get("email") == h]


# ---------------------------------------------------------------- Rails
NOON = utc(2026, 11, 30, 12, 0, 0)
usd, jpy, kwd = (got(P_RAILS, rails_ids.get(e)) for e in
                 ("USD.Buyer@Rails.example", "jpy.buyer@rails.example", "kwd.buyer@rails.example"))
tap.ok(usd is not None and props(usd).get("value") == 19.99 and props(usd).get("currency") == "USD"
       and user(usd).get("email") == sha("usd.buyer@rails.example"),
       "Rails: total_cents 1999 USD is sent as value 19.99 USD, event_id the order's id, email hashed", usd)
tap.ok(jpy is not None and props(jpy).get("value") == 1999 and props(jpy).get("currency") == "JPY",
       "Rails: total_cents 1999 JPY (no minor unit) is sent as value 1999", jpy)
tap.ok(kwd is not None and props(kwd).get("value") == 12.345 and props(kwd).get("currency") == "KWD",
       "Rails: total_cents 12345 KWD (three decimals) is sent as value 12.345", kwd)
want = {"USD": [{"content_id": "101", "quantity": 2, "price": 9.99}, {"content_id": "102", "quantity": 1, "price": 0.01}],
        "JPY": [{"content_id": "201", "quantity": 1, "price": 1999}],
        "KWD": [{"content_id": "301", "quantity": 3, "price": 4.115}]}
have = {c: contents(e) for c, e in (("USD", usd), ("JPY", jpy), ("KWD", kwd))}
tap.ok(have == want,
       "Rails: line_items become contents: product_id as content_id, quantity, price_cents divided by the currency's minor unit",
       have)
times = [(e or {}).get("event_time") for e in (usd, jpy, kwd)]
tap.ok(times == [NOON] * 3,
       "Rails: naive paid_at '2026-11-30 12:00:00', written in a Los Angeles session, is sent as 12:00 UTC",
       (times, NOON))
e = got(P_RAILS, rails_ids.get("berlin.session@rails.example"))
tap.ok(e is not None and e.get("event_time") == NOON - 3600,
       "Rails: with SET tiktok_capi.naive_timestamp_zone = 'Europe/Berlin' the same paid_at is sent as 11:00 UTC",
       ((e or {}).get("event_time"), NOON - 3600, berlin_session[2][:300]))
e = got(P_RAILS, rails_ids.get("berlin.database@rails.example"))
tap.ok(e is not None and e.get("event_time") == NOON - 3600,
       "Rails: with ALTER DATABASE ... SET tiktok_capi.naive_timestamp_zone = 'Europe/Berlin' it is sent as 11:00 UTC",
       ((e or {}).get("event_time"), NOON - 3600, berlin_db[2][:300]))
rb = psql(f"SELECT count(*) FROM tiktok_capi.outbox WHERE payload::text LIKE '%{sha('rolled.back@rails.example')}%'")
tap.ok(rb == "0" and not any(user(x).get("email") == sha("rolled.back@rails.example") for x in ev.values()),
       "Rails: a rolled-back checkout queues and sends nothing", rb)

# ---------------------------------------------------------------- Shopify
s1, s2, s3 = (got(P_SHOPIFY, r[0]) for r in SHOP)
tap.ok(copied[0] and s1 is not None and s2 is not None,
       "Shopify: the paid orders of an export loaded by COPY FROM STDIN are sent, event_id = id",
       (copied[2][:200], [k for k in keys if k[0] == P_SHOPIFY]))
tap.ok(props(s1).get("value") == 46.48 and props(s1).get("currency") == "USD",
       "Shopify: value from total_price, currency from currency", props(s1))
tap.ok(got(P_SHOPIFY, 1001) is None and got(P_SHOPIFY, 1002) is None,
       "Shopify: id wins over order_number as the event_id", [k for k in keys if k[0] == P_SHOPIFY])
u = user(s1)
tap.ok(u == {"email": sha("jon.snow@example.com"), "ip": "203.0.113.7", "ttclid": "E.C.P.abc"},
       "Shopify: email from contact_email (trimmed, lowercased, hashed), ip from browser_ip, ttclid from landing_site's query",
       u)
tap.ok(user(s2) == {"email": sha("arya@example.com"), "ip": "2001:db8::1"},
       "Shopify: a landing_site without ttclid sends no ttclid (never the URL)", user(s2))
want = [{"content_id": "632910392", "content_name": "Sticker", "quantity": 1, "price": 5.0},
        {"content_id": "808950810", "content_name": "Pin", "quantity": 3, "price": 0.5},
        {"content_id": "TEE-RED-M", "content_name": "Red tee", "quantity": 2, "price": 19.99}]
tap.ok(contents(s1) == want,
       "Shopify: line_items jsonb become contents: sku / product_id / variant_id as content_id, title as content_name, price \"19.99\" as 19.99",
       contents(s1))
tap.ok(props(s2).get("value") == 12.0 and props(s2).get("currency") == "EUR"
       and contents(s2) == [{"content_id": "MUG", "content_name": "Mug", "quantity": 1, "price": 12.0}],
       "Shopify: the second COPY'd order carries its own value, currency and items", s2)
times = [(e or {}).get("event_time") for e in (s1, s2)]
tap.ok(all(isinstance(t, int) and t0 - 5 <= t <= t1 + 5 for t in times),
       "Shopify: without a time column, event_time is the commit's unix time", (times, t0, t1))
tap.ok((P_SHOPIFY, "Purchase", str(SHOP[2][0])) not in sent_before,
       "Shopify: an order COPY'd as pending is not sent", sent_before.get((P_SHOPIFY, "Purchase", str(SHOP[2][0]))))
tap.ok(s3 is not None and t2 - 5 <= s3.get("event_time", 0) <= t3 + 5
       and keys.get((P_SHOPIFY, "Purchase", str(SHOP[2][0]))) == 1,
       "Shopify: the UPDATE that marks it paid sends it, at the time it was paid", (s3, t2, t3))
k = got(P_SHOPIFY, 820982911946154511)
tap.ok(k is not None and keys.get((P_SHOPIFY, "Purchase", "820982911946154511")) == 1,
       "Shopify: the order written before the savepoint is sent", k)
n = psql("SELECT count(*) FROM tiktok_capi.outbox WHERE event_id = '820982911946154512'")
tap.ok(got(P_SHOPIFY, 820982911946154512) is None and n == "0",
       "Shopify: the order rolled back to the savepoint is neither queued nor sent", n)

# ---------------------------------------------------------------- WooCommerce, Magento
wc = got(P_WOO, 7001)
tap.ok(wc is not None and keys.get((P_WOO, "Purchase", "7001")) == 1,
       "WooCommerce: pending then processing in one transaction: one event, event_id = order_id", wc)
tap.ok(user(wc) == {"email": sha("ann.lee@example.co.uk"), "phone": sha("+442079460958"), "ip": "192.0.2.44",
                    "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Firefox/133.0"},
       "WooCommerce: billing_email, billing_phone (E.164 '+442079460958'), customer_ip_address and customer_user_agent found by default",
       user(wc))
tap.ok(props(wc).get("value") == 59.9 and props(wc).get("currency") == "GBP",
       "WooCommerce: value from order_total, currency from currency", props(wc))
tap.ok(got(P_WOO, 7002) is None, "WooCommerce: an order left wc-pending sends nothing", got(P_WOO, 7002))
mg = got(P_MAGENTO, "000000101")
tap.ok(mg is not None and props(mg).get("value") == 45.5 and props(mg).get("currency") == "EUR"
       and user(mg).get("email") == sha("max@example.de") and keys.get((P_MAGENTO, "Purchase", "000000101")) == 1,
       "Magento: two upserts in one transaction send one event, event_id = increment_id, with the final grand_total 45.50",
       mg)
tap.ok(user(mg).get("ip") == "198.51.100.23", "Magento: ip found in remote_ip by default", user(mg))

# ---------------------------------------------------------------- partitioned
p1, p2, p3 = (got(P_PART, i) for i in (1, 2, 3))
tap.ok(p1 is not None and props(p1).get("value") == 11 and p1.get("event_time") == utc(2026, 11, 1, 0, 30, 0)
       and keys.get((P_PART, "Purchase", "1")) == 1,
       "partitioned: inserted in October's partition and moved to November's in one transaction: one event, as committed",
       (p1, keys.get((P_PART, "Purchase", "1"))))
tap.ok(p2 is not None and props(p2).get("value") == 20 and p2.get("event_time") == utc(2026, 11, 2, 8, 0, 0),
       "partitioned: one UPDATE that pays an order and moves it to another partition sends it", p2)
tap.ok(all(e is not None and "user_agent" not in user(e) and user(e).get("email") for e in (p1, p2, p3)),
       "partitioned: user_agent= turns the user_agent off; the email is still sent", [user(e) for e in (p1, p2, p3)])
p4, p5 = got(P_PART, 4), got(P_PART, 5)
tap.ok(p4 is not None and p5 is not None and props(p4).get("value") == 40 and props(p5).get("value") == 50
       and p4.get("event_time") == utc(2026, 10, 5, 10, 0, 0) and p5.get("event_time") == utc(2026, 11, 5, 10, 0, 0)
       and got(P_PART, 6) is None,
       "partitioned: a multi-row INSERT into two partitions sends each paid row, not the unpaid one", (p4, p5, got(P_PART, 6)))
p7 = got(P_PART, 7)
tap.ok(p7 is not None and props(p7).get("value") == 70 and p7.get("event_time") == utc(2026, 9, 30, 18, 0, 0),
       "partitioned: a partition created after tt_attach (a backfilled month) sends its paid orders", p7)
rows = psql(f"SELECT event_id || ':' || status FROM tiktok_capi.outbox WHERE pixel_code = '{P_PART}' ORDER BY 1")
tap.ok(p3 is not None and p3.get("event_time") == utc(2026, 10, 20, 12, 0, 0)
       and keys.get((P_PART, "Purchase", "3")) == 1 and rows == "1:sent\n2:sent\n3:sent\n4:sent\n5:sent\n7:sent",
       "partitioned: an order already sent, moved to another partition later, is not sent again",
       (keys.get((P_PART, "Purchase", "3")), rows))

# ---------------------------------------------------------------- "Shop"."Orders"
qa, qb = got(P_QUOTED, UA), got(P_QUOTED, UB.lower())
tap.ok(qa is not None and props(qa).get("value") == 30 and props(qa).get("currency") == "CHF"
       and user(qa) == {"email": sha("uuid.a@example.com")} and qa.get("event_id") == UA
       and qa.get("event_time") == utc(2026, 11, 29, 10, 0, 0),
       'quoted "Shop"."Orders": MERGE WHEN MATCHED pays a waiting order: sent with event_id = its uuid, "PaidAt" as event_time',
       (merged[2][:200], qa))
tap.ok(qb is not None and props(qb).get("value") == 15.5 and user(qb) == {"email": sha("uuid.b@example.com")}
       and qb.get("event_time") == utc(2026, 11, 29, 11, 0, 0),
       'quoted "Shop"."Orders": MERGE WHEN NOT MATCHED inserts a paid order: sent, its uuid lowercased as PostgreSQL prints it',
       qb)

# ---------------------------------------------------------------- capture_triggers
def view(sql):
    ok, out, err = run(sql)
    return out if ok else f"ERROR: {err[:200]}"


V = "tiktok_capi.capture_triggers"
r = view(f"""SELECT coalesce(source, '<NULL>') || '|' || origin FROM {V}
              WHERE table_name::text IN ('shopify_orders', 'public.shopify_orders') AND field = 'email'""")
tap.ok(r == "contact_email|default", "capture_triggers: the Shopify table's email comes from contact_email, by default", r)
r = view(f"""SELECT coalesce(source, '<NULL>') || '|' || origin FROM {V}
              WHERE table_name::text IN ('shopify_orders', 'public.shopify_orders') AND field = 'phone'""")
tap.ok(r == "<NULL>|none", "capture_triggers: the Shopify table's phone, which nothing feeds, has source NULL and origin none", r)
r = view(f"""SELECT coalesce(source, '<NULL>') || '|' || origin FROM {V}
              WHERE table_name::text IN ('orders', 'public.orders') AND field = 'event_time'""")
tap.ok(r == "paid_at|mapping", "capture_triggers: the Rails table's event_time comes from paid_at, by mapping", r)
r = view(f"""SELECT coalesce(source, '<NULL>') || '|' || origin FROM {V}
              WHERE table_name::text IN ('monthly_orders', 'public.monthly_orders') AND field = 'user_agent'""")
tap.ok(r == "<NULL>|off", "capture_triggers: the partitioned table's user_agent= shows as origin off", r)
r = view(f"""SELECT event || '|' || pixel_code || '|' || coalesce(source, '<NULL>') || '|' || origin FROM {V}
              WHERE trigger_name::text = 'CapturePurchase' AND field IN ('event_id', 'email') ORDER BY field""")
tap.ok(r == f"Purchase|{P_QUOTED}|Email|mapping\nPurchase|{P_QUOTED}|Id|mapping",
       'capture_triggers: the hand-written trigger on "Shop"."Orders" is listed, its event, pixel and mapped columns',
       r)
r = view(f"""SELECT string_agg(DISTINCT replace(table_name::text, '"', ''), ',' ORDER BY replace(table_name::text, '"', '')) FROM {V}""")
tables = {t.removeprefix("public.") for t in r.split(",")} if not r.startswith("ERROR") else r
tap.ok(isinstance(tables, set) and {"orders", "shopify_orders", "wc_orders", "sales_order", "monthly_orders",
                                    "Shop.Orders"} <= tables,
       "capture_triggers lists every attached or hand-written trigger's table", r)
r = view(f"""SELECT count(*) FROM (SELECT 1 FROM {V} GROUP BY table_name, trigger_name, field HAVING count(*) > 1) d""")
tap.ok(r == "0", "capture_triggers has one row per trigger and field", r)

# ---------------------------------------------------------------- all of it
dup = [k for k, n in keys.items() if n != 1]
tap.ok(not dup, "no order was accepted twice", dup[:5])
tap.ok(mock.stats()["rejected"] == {}, "the mock rejected nothing", mock.stats()["rejected"])
failed = psql("SELECT event_id || ': ' || coalesce(last_error, '') FROM tiktok_capi.outbox WHERE status = 'failed'")
tap.ok(failed == "", "no order ended failed", failed[:600])
warned = psql("SELECT event_id || ': ' || warnings::text FROM tiktok_capi.outbox WHERE warnings IS NOT NULL "
              "AND warnings::text NOT IN ('{}', '[]', '')")
tap.ok(warned == "", "no order lost a field to a warning", warned[:600])
h = psql("""SELECT status || ' ' || reason FROM tiktok_capi.tt_health() WHERE "check" = 'triggers'""")
tap.ok(h is not None and h.startswith("ok"), "tt_health: every trigger here resolves its mapping", h)
tap.ok("terminated by signal" not in server_log(), "no server process crashed")
tap.done()
