-- tt_event: one element of the Events API request's data[] array
SET search_path = tiktok_capi, public;

-- a purchase with everything: identifiers hashed, plain fields plain,
-- event_time in unix seconds, event_id and content_id strings, value and price numbers
SELECT jsonb_pretty(tt_event(
    event => 'Purchase',
    event_id => '10045',
    event_time => '2025-01-01 00:00:00+00',
    email => ' Alice_ABC@Gmail.com ',
    phone => '(+1)2133734253',
    external_id => 'CUST-0042',
    ttclid => 'E.C.P.abc123',
    ttp => '2Xk3pZ0aN1',
    ip => '203.0.113.7',
    user_agent => 'Mozilla/5.0 (X11; Linux x86_64)',
    locale => 'en-US',
    value => 46.00,
    currency => 'usd',
    contents => '[{"content_id": 1077218, "content_name": "Mug", "quantity": 2, "price": "8.00"},
                  {"content_id": "SKU-9", "brand": null, "quantity": 1, "price": 30}]',
    content_type => 'product',
    order_id => '10045',
    description => 'Order 10045',
    page_url => 'https://shop.example/thanks?order=10045',
    referrer => 'https://shop.example/checkout',
    limited_data_use => false,
    properties => '{"shop_id": "s-1"}'));

-- the identifiers are exactly the tt_hash_* values
SELECT e #>> '{user,email}' = tt_hash_email('alice_abc@gmail.com') AS email,
       e #>> '{user,phone}' = tt_hash_phone('+12133734253') AS phone,
       e #>> '{user,external_id}' = tt_hash_external_id('CUST-0042') AS external_id,
       jsonb_typeof(e -> 'event_id') AS event_id_type,
       jsonb_typeof(e -> 'event_time') AS event_time_type,
       (e ->> 'event_time')::bigint = extract(epoch FROM timestamptz '2025-01-01 00:00:00+00') AS unix_seconds
FROM tt_event('Purchase', '10045', '2025-01-01 00:00:00+00',
              email => 'ALICE_ABC@gmail.com', phone => '+1 213 373 4253',
              external_id => ' CUST-0042 ') AS e;

-- the minimum: NULLs and empty objects are left out
SELECT tt_event('Lead', 'L-1', '2025-06-01 12:00:00+00');
SELECT tt_event('Lead', 'L-1', '2025-06-01 12:00:00+00', email => 'not an email', phone => '12',
                ttclid => '  ', contents => '[]', properties => '{}');

-- event_time defaults to the transaction's start; the first second TikTok takes is 1
SELECT (tt_event('Purchase', '1') ->> 'event_time')::bigint = floor(extract(epoch FROM now())) AS defaults_to_now,
       (tt_event('Purchase', '1', NULL) ->> 'event_time')::bigint = floor(extract(epoch FROM now())) AS null_is_now;
SELECT tt_event('Purchase', '1', '1970-01-01 00:00:01+00') ->> 'event_time' AS first_second;

-- a whole quantity goes as an integer; amounts just below 1e15 pass unrounded
SELECT tt_event('Purchase', '1', '2025-01-01 00:00:00+00', value => 999999999999999.99,
                contents => '[{"content_id": "1", "quantity": "2.00", "price": 2.50}]') -> 'properties';

-- an event_id of 500 bytes is sent whole
SELECT length(tt_event('Purchase', repeat('7', 500)) ->> 'event_id') AS event_id_500;

-- standard, legacy and custom names all pass as given: never renamed
SELECT tt_event(n, '1', '2025-01-01 00:00:00+00') ->> 'event' AS event
FROM (VALUES ('CompletePayment'), ('PlaceAnOrder'), ('SubmitForm'), ('ClickButton'),
             ('ViewContent'), ('MyCustomSignup')) AS t(n);

-- national phone numbers: the argument, else the setting
SELECT tt_event('Lead', '1', '2025-01-01 00:00:00+00', phone => '07911 123456') ? 'user' AS without_country,
       tt_event('Lead', '1', '2025-01-01 00:00:00+00', phone => '07911 123456', default_country => 'GB')
         #>> '{user,phone}' = tt_hash_phone('+447911123456') AS with_country;
SET tiktok_capi.default_country = 'GB';
SELECT tt_event('Lead', '1', '2025-01-01 00:00:00+00', phone => '07911 123456')
         #>> '{user,phone}' = tt_hash_phone('+447911123456') AS from_setting;
RESET tiktok_capi.default_country;

-- properties: extra keys pass through; the named arguments win
SELECT tt_event('Purchase', '1', '2025-01-01 00:00:00+00', value => 10, currency => 'EUR',
                properties => '{"value": 99, "shop_id": "s-1", "nested": {"a": [1, 2]}}') -> 'properties';

-- ip is canonicalized; IPv6 accepted
SELECT tt_event('Purchase', '1', '2025-01-01 00:00:00+00', ip => ' 2001:DB8:0:0:0:0:0:1 ') #>> '{user,ip}' AS ipv6;

-- misuse is an error with a hint
SELECT tt_event('purchase', '1');
SELECT tt_event('Add To Cart', '1');
SELECT tt_event('complete_payment', '1');
SELECT tt_event('', '1');
SELECT tt_event(NULL, '1');
SELECT tt_event('Purchase', '');
SELECT tt_event('Purchase', '   ');
SELECT tt_event('Purchase', NULL);
SELECT tt_event('Purchase', '1', currency => 'XYZ');
SELECT tt_event('Purchase', '1', currency => 'BTC');
SELECT tt_event('Purchase', '1', value => -1);
SELECT tt_event('Purchase', '1', value => 'NaN');
SELECT tt_event('Purchase', '1', value => 'Infinity');
SELECT tt_event('Purchase', '1', event_time => now() + interval '1 hour');
SELECT tt_event('Purchase', '1', event_time => 'infinity');
SELECT tt_event('Purchase', '1', contents => '{"content_id": "1"}');
SELECT tt_event('Purchase', '1', contents => '"1077218"');
SELECT tt_event('Purchase', '1', contents => '[{"content_id": "1"}, 2]');
SELECT tt_event('Purchase', '1', contents => '[{"content_id": true}]');
SELECT tt_event('Purchase', '1', contents => '[{"content_id": "1", "price": "eight"}]');
SELECT tt_event('Purchase', '1', contents => '[{"content_id": "1", "price": -8}]');
SELECT tt_event('Purchase', '1', content_type => 'products');
SELECT tt_event('Purchase', '1', ip => 'localhost');
SELECT tt_event('Purchase', '1', ip => '1.2.3.256');
SELECT tt_event('Purchase', '1', properties => '[1]');
SELECT tt_event('Purchase', '1', default_country => 'ZZ');
-- what the Events API would reject
SELECT tt_event('Purchase', '1', event_time => '1970-01-01 00:00:00+00');
SELECT tt_event('Purchase', '1', event_time => '1969-12-31 23:59:59.5+00');
SELECT tt_event('Purchase', '1', contents => '[{"content_id": "1", "quantity": 2.5}]');
SELECT tt_event('Purchase', '1', value => ('1' || repeat('0', 5000))::numeric);
SELECT tt_event('Purchase', '1', value => 1e15);
SELECT tt_event('Purchase', '1', contents => '[{"content_id": "1", "price": 1e15}]');
SELECT tt_event('Purchase', '1', contents => '[{"content_id": "1", "quantity": "1000000000000000"}]');
SELECT tt_event('Purchase', '1', contents => '[{"content_id": "1", "brand": {"n": [-1e20]}}]');
SELECT tt_event('Purchase', '1', properties => '{"big": 1e5000}');
SELECT tt_event('Purchase', repeat('7', 501));
-- a quoted value is cut at a character, never inside one
SELECT tt_event('Purchase', '1', currency => 'aéééééééé');

-- a time a little ahead of this server's clock (another server's) is fine
SELECT tt_event('Purchase', '1', event_time => now() + interval '1 minute') ? 'event_time' AS small_skew_ok;

-- every misuse above carries its SQLSTATE
CREATE FUNCTION pg_temp.sqlstate_of(call text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE call;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END $$;
SELECT call, pg_temp.sqlstate_of('SELECT tiktok_capi.tt_event(' || call || ')') AS sqlstate
FROM (VALUES ($$'purchase', '1'$$), ($$NULL, '1'$$), ($$'Purchase', ''$$),
             ($$'Purchase', '1', currency => 'XYZ'$$), ($$'Purchase', '1', value => -1$$),
             ($$'Purchase', '1', event_time => now() + interval '1 hour'$$),
             ($$'Purchase', '1', contents => '{}'$$), ($$'Purchase', '1', ip => 'x'$$),
             ($$'Purchase', '1', event_time => '1970-01-01 00:00:00+00'$$),
             ($$'Purchase', '1', contents => '[{"quantity": 2.5}]'$$),
             ($$'Purchase', '1', value => 1e15$$), ($$'Purchase', repeat('7', 501)$$)) AS t(call);

-- in a SQL_ASCII database text may hold any bytes: what is not UTF-8 is refused
SET client_min_messages = warning;
DROP DATABASE IF EXISTS tt_regress_ascii;
RESET client_min_messages;
CREATE DATABASE tt_regress_ascii ENCODING 'SQL_ASCII' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C';
\c tt_regress_ascii
CREATE EXTENSION tiktok_capi;
SET search_path = tiktok_capi, public;
CREATE FUNCTION pg_temp.bytes(hex text) RETURNS text LANGUAGE sql
    AS $$ SELECT convert_from(decode(hex, 'hex'), 'SQL_ASCII') $$;
SELECT tt_event('Purchase', pg_temp.bytes('41ff'));
SELECT tt_event(pg_temp.bytes('50ff'), '1');
SELECT tt_event('Purchase', '1', user_agent => pg_temp.bytes('4dc3'));
SELECT tt_event('Purchase', '1', page_url => pg_temp.bytes('68ff'));
SELECT tt_event('Purchase', '1', contents => jsonb_build_array(jsonb_build_object('content_id', pg_temp.bytes('31e9'))));
SELECT tt_event('Purchase', '1', properties => jsonb_build_object('shop', jsonb_build_array(pg_temp.bytes('ff'))));
CREATE FUNCTION pg_temp.sqlstate_of(call text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE call;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END $$;
SELECT pg_temp.sqlstate_of($$SELECT tiktok_capi.tt_event('Purchase', pg_temp.bytes('41ff'))$$) AS event_id,
       pg_temp.sqlstate_of($$SELECT tiktok_capi.tt_event('Purchase', '1', referrer => pg_temp.bytes('ff'))$$) AS referrer;
-- UTF-8 passes, and so do identifiers, which leave hashed
SELECT tt_event('Purchase', '1', '2025-01-01 00:00:00+00', user_agent => pg_temp.bytes('4dc3a9'),
                external_id => pg_temp.bytes('41ff')) #>> '{user,user_agent}' = pg_temp.bytes('4dc3a9') AS utf8_passes;
\c contrib_regression
DROP DATABASE tt_regress_ascii;
