"""A shop whose database is LATIN1 (not UTF-8): its events, with accented
product names, reach the Events API as valid UTF-8 JSON and are accepted.
The outbox stores text in the database's encoding; the worker converts
each payload when it claims it."""
import os

from harness import PIXEL, TOKEN, Mock, Tap, configure, no_crash, psql, wait_until

tap = Tap(5)
mock = Mock()
psql("CREATE DATABASE shop ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
configure(mock, database="shop")
os.environ["PGDATABASE"] = "shop"
# the test's own text is UTF-8: the server converts it to LATIN1 on the way in
os.environ["PGCLIENTENCODING"] = "UTF8"
psql("CREATE EXTENSION tiktok_capi")
psql(f"SELECT tiktok_capi.tt_add_pixel('{PIXEL}', '{TOKEN}')")
psql("""SELECT count(tiktok_capi.tt_enqueue(NULL, tiktok_capi.tt_event('Purchase', 'l' || g,
            email => 'zoë' || g || '@example.com', value => 12.5, currency => 'EUR',
            description => 'Café crème, größe ' || g,
            contents => jsonb_build_array(jsonb_build_object('content_id', 'sku-' || g,
                                                             'content_name', 'Crème brûlée', 'quantity', 1)))))
          FROM generate_series(1, 50) g""")
tap.ok(psql("SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = 'shop'") == "LATIN1",
       "the shop's database is LATIN1")
tap.ok(psql("SELECT payload->'properties'->>'description' = 'Café crème, größe 1' "
            "FROM tiktok_capi.outbox WHERE event_id = 'l1'") == "t",
       "the outbox holds the accented text as LATIN1 characters")
tap.ok(wait_until(lambda: psql("SELECT count(*) FROM tiktok_capi.outbox WHERE status <> 'pending'") == "50", 20),
       "every event settled")
out = psql("SELECT status, count(*) FROM tiktok_capi.outbox GROUP BY 1")
tap.ok(out == "sent|50" and len(mock.keys()) == 50,
       "all 50 were accepted: the API got valid UTF-8", (out, psql("SELECT last_error FROM tiktok_capi.outbox LIMIT 1")))
no_crash(tap)
mock.stop()
tap.done()
