-- A shop's own schema without generated columns: amounts in cents, naive
-- timestamps, landing URLs, items under the keys shops give them, and the
-- ways a mapping is written (a text[] literal split at a comma, quoted
-- names).  Written from the README's promises; tt_flush() builds where a
-- commit would (this file runs in one transaction).
BEGIN;
SELECT plan(18);

SELECT tiktok_capi.tt_add_pixel('CMAP01', 'token');
CREATE FUNCTION pg_temp.ev(eid text) RETURNS jsonb LANGUAGE sql AS
$$SELECT payload FROM tiktok_capi.outbox WHERE pixel_code = 'CMAP01' AND event_id = eid$$;
CREATE FUNCTION pg_temp.notes(eid text) RETURNS text LANGUAGE sql AS
$$SELECT array_to_string(warnings, ' | ') FROM tiktok_capi.outbox WHERE pixel_code = 'CMAP01' AND event_id = eid$$;

-- a child table with its columns named in contents_from, written as a text[]
-- literal: PostgreSQL splits it at the comma inside the parentheses
CREATE TABLE public.m_orders (id bigint PRIMARY KEY, total_cents int, currency text,
    paid_at timestamp, landing text);
CREATE TABLE public.m_items (ord bigint, code text, cents int, n int);
SELECT lives_ok($$SELECT tiktok_capi.tt_attach('m_orders', 'Purchase',
                      '{event_id_prefix=m-, value_minor=total_cents, event_time=paid_at, ttclid=landing, contents_from=m_items(ord, content_id=code, price_minor=cents, quantity=n)}')$$,
    'contents_from=table(column, field=column, ...) attaches although the literal splits it at its commas');
SELECT ok((SELECT encode(tgargs, 'escape') LIKE '%contents_from=public.m_items(ord, content_id=code, price_minor=cents, quantity=n)%'
             FROM pg_trigger WHERE tgname = 'tt_capture_purchase' AND tgrelid = 'public.m_orders'::regclass),
          'the trigger keeps contents_from whole, in one argument');

SET LOCAL TimeZone = 'America/Los_Angeles';
INSERT INTO public.m_orders VALUES
    (1, 1999, 'USD', '2026-11-30 12:00:00', 'https://shop.example/p?utm_source=tt&ttclid=E.C.P.abc#top'),
    (2, 1999, 'JPY', '2026-11-30 12:00:00', '/landing?utm_source=tt'),
    (3, 12345, 'kwd', '2026-11-30 12:00:00', 'E.C.P.Cq0B/bare=='),
    (4, 500, NULL, NULL, NULL),
    (5, 500, 'BTC', NULL, NULL);
INSERT INTO public.m_items VALUES (1, 'SKU-1', 250, 2), (2, 'SKU-2', 1999, 1), (3, 'SKU-3', 12345, 1),
    (4, 'SKU-4', 500, 1);
SELECT tiktok_capi.tt_flush();

SELECT is(pg_temp.ev('m-1') -> 'properties',
          '{"value": 19.99, "currency": "USD", "order_id": "1", "contents": [{"content_id": "SKU-1", "price": 2.5, "quantity": 2}]}'::jsonb,
          'cents of USD are divided by 100, the total and each item''s price');
SELECT is(pg_temp.ev('m-2') #> '{properties,value}', '1999'::jsonb, 'JPY has no minor unit: 1999 is 1999');
SELECT is(pg_temp.ev('m-3') #> '{properties,value}', '12.345'::jsonb, 'KWD has three decimals: 12345 fils are 12.345');
SELECT is((pg_temp.ev('m-1') ->> 'event_time')::bigint,
          extract(epoch FROM timestamptz '2026-11-30 12:00:00+00')::bigint,
          'a timestamp without time zone is read as UTC, not in the session''s TimeZone');
SELECT is(pg_temp.ev('m-1') #>> '{user,ttclid}', 'E.C.P.abc', 'a landing URL mapped to ttclid sends its click id');
SELECT is(pg_temp.ev('m-2') #> '{user,ttclid}', NULL, 'a landing URL without a click id sends no ttclid, never the URL');
SELECT is(pg_temp.ev('m-3') #>> '{user,ttclid}', 'E.C.P.Cq0B/bare==', 'a bare click id goes as it is, with its / and =');
SELECT ok(pg_temp.ev('m-4') #> '{properties,value}' IS NULL
          AND pg_temp.notes('m-4') LIKE '%value left out: it is in minor units and the event has no currency%',
          'cents without a currency are left out and noted, not sent as a guess');
SELECT ok(pg_temp.ev('m-5') #> '{properties,value}' IS NULL AND pg_temp.notes('m-5') LIKE '%currency "BTC" is not one TikTok accepts%',
          'cents in a currency TikTok does not take are left out, with the currency''s note');

-- the zone of naive times, for shops that store local time
SET LOCAL tiktok_capi.naive_timestamp_zone = 'Europe/Berlin';
INSERT INTO public.m_orders VALUES (6, 100, 'EUR', '2026-07-01 12:00:00', NULL);
SELECT tiktok_capi.tt_flush();
SELECT is((pg_temp.ev('m-6') ->> 'event_time')::bigint,
          extract(epoch FROM timestamptz '2026-07-01 10:00:00+00')::bigint,
          'naive_timestamp_zone = Europe/Berlin reads 12:00 in July as 10:00 UTC');
SELECT throws_ok($$SET tiktok_capi.naive_timestamp_zone = 'Mars/Olympus'$$, '22023', NULL,
                 'an unknown zone is refused when set, not at the first order');

-- a mapping that names the total twice is refused
CREATE TABLE public.m_twice (id int, total numeric, total_cents int, currency text);
SELECT throws_like($$SELECT tiktok_capi.tt_attach('m_twice', 'Lead', '{value=total, value_minor=total_cents}')$$,
                   '%map the total once%', 'value= and value_minor= together are an error');

-- quoted mixed-case names, as SQL writes them
CREATE TABLE public."M_Quoted" ("Id" int, "Email" text);
SELECT lives_ok($$SELECT tiktok_capi.tt_attach('"M_Quoted"', 'Lead', ARRAY['event_id="Id"', 'email="Email"', 'event_id_prefix=q-'])$$,
                'a mixed-case column may be named in double quotes');
INSERT INTO public."M_Quoted" VALUES (7, 'Q@Example.com');
SELECT tiktok_capi.tt_flush();
SELECT is(pg_temp.ev('q-7') #>> '{user,email}', tiktok_capi.tt_hash_email('q@example.com'),
          'and the quoted columns feed the event');

-- jsonb items as a platform exports them
CREATE TABLE public.m_shop (id bigint, currency text, total_price numeric, line_items jsonb);
SELECT tiktok_capi.tt_attach('m_shop', 'Purchase', '{event_id_prefix=s-}');
INSERT INTO public.m_shop VALUES (8, 'USD', 5, '[{"id": 1, "sku": "", "product_id": 77, "title": "Hat", "price": "2.50", "quantity": 2, "tax_lines": []},
                                              {"title": "Gift wrap", "price_cents": 0, "quantity": 1}]');
SELECT tiktok_capi.tt_flush();
SELECT is(pg_temp.ev('s-8') #> '{properties,contents}',
          '[{"content_id": "77", "content_name": "Hat", "price": 2.5, "quantity": 2}, {"content_name": "Gift wrap", "price": 0, "quantity": 1}]'::jsonb,
          'jsonb items: a blank sku gives way to product_id, title is the name, other keys are not sent');
SELECT ok(pg_temp.notes('s-8') LIKE '%an item has no content_id%', 'an item without any id is noted');

SELECT * FROM finish();
ROLLBACK;
