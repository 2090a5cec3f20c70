"""ALTER EXTENSION tiktok_capi UPDATE from 0.2.0 keeps every pixel, each a
web pixel with its token, test code and enabled flag; the new library's
worker and trigger work on the 0.2.0 schema before the update (every pixel
sent as web); after it, tt_add_pixel takes an event_source and the worker
sends each id as its own source."""
from harness import Mock, Tap, configure, counts, drained, no_crash, psql, wait_until

tap = Tap(8)
mock = Mock()
mock.config(sources={"CUPGSTORE1": "offline"})
configure(mock)
psql("CREATE EXTENSION tiktok_capi VERSION '0.2.0'")
psql("SELECT tiktok_capi.tt_add_pixel('CUPGWEB01', 'tok-1', 'TEST-UPG')")
psql("SELECT tiktok_capi.tt_add_pixel('CUPGWEB02', 'tok-2')")
psql("SELECT tiktok_capi.tt_update_pixel('CUPGWEB02', enabled => false)")
psql("CREATE TABLE orders (id bigint PRIMARY KEY, email text, total numeric(12,2), currency text DEFAULT 'USD')")
psql("SELECT tiktok_capi.tt_attach('orders', 'Purchase', pixel => 'CUPGWEB01')")
tap.ok(psql("SELECT to_regproc('tiktok_capi.tt_flush') IS NULL") == "t", "0.2.0 is installed")
before = psql("SELECT string_agg(pixel_code || ':' || access_token || ':' || coalesce(test_event_code, '-') || ':' || enabled, ',' ORDER BY pixel_code) FROM tiktok_capi.pixels")

psql("INSERT INTO orders (id, email, total) SELECT g, 'b' || g || '@example.com', g FROM generate_series(1, 100) g")
tap.ok(wait_until(lambda: drained(100), 30) and mock.stats()["rejected"] == {},
       "the new library's worker sends from a 0.2.0 schema, as web", (counts(), mock.stats()["rejected"]))

psql("ALTER EXTENSION tiktok_capi UPDATE")
after = psql("SELECT string_agg(pixel_code || ':' || access_token || ':' || coalesce(test_event_code, '-') || ':' || enabled, ',' ORDER BY pixel_code) FROM tiktok_capi.pixels")
tap.ok(after == before and before.count(",") == 1, "every pixel is kept: token, test code, enabled", (before, after))
tap.ok(psql("SELECT string_agg(DISTINCT event_source, ',') FROM tiktok_capi.pixels") == "web",
       "every pixel of 0.2.0 is a web pixel")
tap.ok(psql("SELECT has_function_privilege('public', 'tiktok_capi.tt_add_pixel(text, text, text, text)', 'EXECUTE')") == "f"
       and psql("SELECT has_function_privilege('public', 'tiktok_capi.tt_update_pixel(text, text, text, boolean, text)', 'EXECUTE')") == "f",
       "tt_add_pixel and tt_update_pixel stay the owner's")

psql("SELECT tiktok_capi.tt_add_pixel('CUPGSTORE1', 'tok-3', event_source => 'offline')")
psql("CREATE TABLE store_orders (id bigint PRIMARY KEY, email text, total numeric(12,2), currency text DEFAULT 'USD', ip text)")
psql("SELECT tiktok_capi.tt_attach('store_orders', 'Purchase', pixel => 'CUPGSTORE1')")
psql("INSERT INTO store_orders SELECT g, 's' || g || '@example.com', g, 'USD', '203.0.113.9' FROM generate_series(1, 50) g")
psql("INSERT INTO orders (id, email, total) SELECT g, 'b' || g || '@example.com', g FROM generate_series(101, 150) g")
tap.ok(wait_until(lambda: drained(200), 30), "after the update every event is delivered", counts())
tap.ok(mock.stats()["rejected"] == {} and
       sum(1 for k in mock.keys() if k[0] == "CUPGSTORE1") == 50 and
       sum(1 for k in mock.keys() if k[0] == "CUPGWEB01") == 150,
       "the offline set's events went as offline, the web pixel's as web, none rejected",
       mock.stats()["rejected"])
no_crash(tap)
mock.stop()
tap.done()
