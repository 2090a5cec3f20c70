-- More match keys: first_name, last_name and zip_code leave hashed (trimmed,
-- lowercased; 64 hex passes through), city and state plain (lowercased,
-- spaces removed), country as its lowercase ISO 3166 alpha-2 code.  The
-- builder, the SQL hashing functions, the mapping's default column names,
-- consent, and tt_forget (a name only with its last name and zip code).
BEGIN;
SELECT plan(38);

SELECT tiktok_capi.tt_add_pixel('CKEYS001', 'token');

-- sha256 hex of text, independent of the code under test
CREATE FUNCTION pg_temp.sha(t text) RETURNS text LANGUAGE sql AS $f$
    SELECT encode(sha256(convert_to(t, 'UTF8')), 'hex')
$f$;

-- the builder: tt_event's new last arguments
SELECT is(tiktok_capi.tt_event('Purchase', 'k1', '2025-01-01 00:00:00+00',
                               first_name => '  Ann ', last_name => 'LEE', zip_code => 'SW1A 1AA',
                               city => ' New York ', state => 'NY', country => 'us') -> 'user',
          jsonb_build_object('first_name', pg_temp.sha('ann'), 'last_name', pg_temp.sha('lee'),
                             'zip_code', pg_temp.sha('sw1a 1aa'),
                             'city', 'newyork', 'state', 'ny', 'country', 'us'),
          'tt_event hashes first_name, last_name, zip_code; sends city, state, country plain');
SELECT is(tiktok_capi.tt_event('Purchase', 'k1', first_name => chr(201) || 'LODIE') #>> '{user,first_name}',
          pg_temp.sha('élodie'), 'a first name is lowercased beyond ASCII before it is hashed');
SELECT is(tiktok_capi.tt_event('Purchase', 'k1', last_name => upper(pg_temp.sha('lee'))) #>> '{user,last_name}',
          pg_temp.sha('lee'), 'a hashed last name passes through, lowercased, not hashed twice');
SELECT is(tiktok_capi.tt_event('Purchase', 'k1', city => 'S' || chr(195) || 'O PAULO') #>> '{user,city}',
          's' || chr(227) || 'opaulo', 'a city is lowercased beyond ASCII, its spaces removed');
SELECT is(tiktok_capi.tt_event('Purchase', 'k1', country => ' gb ') #>> '{user,country}', 'gb',
          'a country code is trimmed and lowercased');
SELECT throws_ok($$SELECT tiktok_capi.tt_event('Purchase', 'k1', country => 'England')$$, '22023',
                 'country is not an ISO 3166 alpha-2 code', 'a country that is no ISO code is an error in a direct call');
SELECT is(tiktok_capi.tt_event('Purchase', 'k1', first_name => '   ', city => '', zip_code => 'a' || chr(9) || 'b') -> 'user',
          NULL, 'blank or unusable keys are left out');
SELECT is(tiktok_capi.tt_event('Lead', 'k1', phone => '07911 123456', country => 'GB') #>> '{user,phone}',
          pg_temp.sha('+447911123456'), 'a national phone number takes the person''s country');
SELECT is(tiktok_capi.tt_event('Lead', 'k1', phone => '07911 123456', country => 'US', default_country => 'GB')
              #>> '{user,phone}',
          pg_temp.sha('+447911123456'), 'default_country, when given, wins for the phone');
SELECT is(tiktok_capi.tt_event('Lead', 'k1', phone => '+14155550100') -> 'user' ? 'country', false,
          'no country argument, no user.country');

-- the SQL functions
SELECT is(tiktok_capi.tt_hash_name(' Mary Ann '), pg_temp.sha('mary ann'), 'tt_hash_name keeps inner spaces');
SELECT is(tiktok_capi.tt_normalize_name(' Mary Ann '), 'mary ann', 'tt_normalize_name shows what is hashed');
SELECT is(tiktok_capi.tt_hash_name(' '), NULL, 'tt_hash_name of a blank is NULL');

-- the mapping: default column names
CREATE TABLE public.shop_orders (
    id integer PRIMARY KEY, email text, given_name text, surname text, postcode text,
    city text, province text, country_code text, phone text, total numeric, currency text,
    consent boolean);
CREATE TABLE public.wc_orders (
    order_id integer PRIMARY KEY, billing_first_name text, billing_last_name text,
    billing_postcode text, billing_city text, billing_state text, billing_country text,
    shipping_first_name text, shipping_city text, state text);
CREATE TABLE public.plain_orders (id integer PRIMARY KEY, first_name text, zip text, state text);
SELECT tiktok_capi.tt_attach('public.shop_orders', 'Purchase');
SELECT tiktok_capi.tt_attach('public.wc_orders', 'Purchase', mapping => ARRAY['event_id_prefix=wc-']);
SELECT tiktok_capi.tt_attach('public.plain_orders', 'Purchase', mapping => ARRAY['state=state', 'event_id_prefix=pl-']);

CREATE FUNCTION pg_temp.fed(t text) RETURNS text[] LANGUAGE sql AS $f$
    SELECT array_agg(field || '=' || coalesce(source, '-') || ':' || origin ORDER BY field)
      FROM tiktok_capi.capture_triggers
     WHERE table_name = t::regclass
       AND field IN ('first_name', 'last_name', 'zip_code', 'city', 'state', 'country')
$f$;
SELECT is(pg_temp.fed('public.shop_orders'),
          ARRAY['city=city:default', 'country=country_code:default', 'first_name=given_name:default',
                'last_name=surname:default', 'state=province:default', 'zip_code=postcode:default'],
          'given_name, surname, postcode, city, province, country_code are found by default');
SELECT is(pg_temp.fed('public.wc_orders'),
          ARRAY['city=billing_city:default', 'country=billing_country:default',
                'first_name=billing_first_name:default', 'last_name=billing_last_name:default',
                'state=billing_state:default', 'zip_code=billing_postcode:default'],
          'WooCommerce''s billing_* columns are found by default, never shipping_* nor an order state');
SELECT is(pg_temp.fed('public.plain_orders'),
          ARRAY['city=-:none', 'country=-:none', 'first_name=first_name:default', 'last_name=-:none',
                'state=state:mapping', 'zip_code=zip:default'],
          'a bare state column feeds state only when mapped; zip is a zip_code');

INSERT INTO public.shop_orders VALUES
    (1, 'ann@example.com', 'Ann', 'Lee', 'SW1A 1AA', 'London', 'Greater London', 'GB', '07911 123456', 10, 'GBP', true),
    (2, 'bob@example.com', 'Bob', 'Ray', '94103', 'San Francisco', 'CA', 'US', NULL, 10, 'USD', false),
    (3, 'cy@example.com', 'Cy', 'Ode', '10115', 'Berlin', NULL, 'Deutschland', NULL, 10, 'EUR', true);
INSERT INTO public.wc_orders VALUES
    (7, 'Dee', 'Fox', '75001', 'Paris', 'IDF', 'FR', 'Gift', 'Lyon', 'processing');
INSERT INTO public.plain_orders VALUES (8, 'Eve', '2000', 'NSW');
SELECT tiktok_capi.tt_flush();

CREATE FUNCTION pg_temp.user_of(eid text) RETURNS jsonb LANGUAGE sql AS $f$
    SELECT payload -> 'user' FROM tiktok_capi.outbox WHERE event_id = eid
$f$;
SELECT is(pg_temp.user_of('1') - 'email' - 'phone',
          jsonb_build_object('first_name', pg_temp.sha('ann'), 'last_name', pg_temp.sha('lee'),
                             'zip_code', pg_temp.sha('sw1a 1aa'), 'city', 'london',
                             'state', 'greaterlondon', 'country', 'gb'),
          'an order with consent sends every new key, normalized');
SELECT is(pg_temp.user_of('1') ->> 'phone', pg_temp.sha('+447911123456'),
          'its country column still makes the national phone number E.164');
SELECT is(pg_temp.user_of('2'), NULL, 'without consent no key leaves: not the name, zip code, city, state or country');
SELECT is((SELECT warnings FROM tiktok_capi.outbox WHERE event_id = '2'), ARRAY['consent denied: identifiers withheld'],
          'the order without consent says why');
SELECT ok(NOT pg_temp.user_of('3') ? 'country', 'a country column that is no ISO code sends no country');
SELECT is((SELECT warnings FROM tiktok_capi.outbox WHERE event_id = '3'),
          ARRAY['country "Deutschland" is not an ISO 3166 alpha-2 code'], 'and says so once');
SELECT is(pg_temp.user_of('wc-7'),
          jsonb_build_object('first_name', pg_temp.sha('dee'), 'last_name', pg_temp.sha('fox'),
                             'zip_code', pg_temp.sha('75001'), 'city', 'paris', 'state', 'idf', 'country', 'fr'),
          'WooCommerce: the billing address is sent, the shipping one and the order state are not');
SELECT is(pg_temp.user_of('pl-8'),
          jsonb_build_object('first_name', pg_temp.sha('eve'), 'zip_code', pg_temp.sha('2000'), 'state', 'nsw'),
          'a mapped state column feeds state');

-- a name or city that is not usable text is dropped, noted, never shown
UPDATE public.shop_orders SET given_name = 'A' || chr(10) || 'nn', city = 'Lon' || chr(9) || 'don' WHERE id = 1;
SELECT tiktok_capi.tt_flush();
SELECT ok(NOT pg_temp.user_of('1') ? 'first_name' AND NOT pg_temp.user_of('1') ? 'city'
          AND pg_temp.user_of('1') ? 'last_name', 'an unusable first name and city are left out, the rest kept');
SELECT is((SELECT warnings FROM tiktok_capi.outbox WHERE event_id = '1'),
          ARRAY['first_name dropped: not usable text (a control character, invalid UTF-8, or longer than 255 bytes)',
                'city dropped: not usable text (a control character, invalid UTF-8, or longer than 255 bytes)'],
          'each is noted without its value');

-- consent denied: the keys are withheld from tt_event's own inputs too (consent.sql's rule)
UPDATE public.shop_orders SET consent = false, given_name = 'Ann', city = 'London' WHERE id = 1;
SELECT tiktok_capi.tt_flush();
SELECT is(pg_temp.user_of('1'), NULL, 'withdrawn consent withholds the new keys of a pending event');

-- tt_forget by name: only first name, last name and zip code together
SELECT tiktok_capi.tt_enqueue('CKEYS001', tiktok_capi.tt_event('Lead', 'f1', first_name => 'Zoe', last_name => 'Kim', zip_code => '02139'));
SELECT tiktok_capi.tt_enqueue('CKEYS001', tiktok_capi.tt_event('Lead', 'f2', first_name => 'ZOE ', last_name => ' kim', zip_code => '02139', city => 'Cambridge'));
SELECT tiktok_capi.tt_enqueue('CKEYS001', tiktok_capi.tt_event('Lead', 'f3', first_name => 'Zoe', last_name => 'Kim', zip_code => '10001'));
SELECT tiktok_capi.tt_enqueue('CKEYS001', tiktok_capi.tt_event('Lead', 'f4', first_name => 'Zoe', last_name => 'Park', zip_code => '02139'));
SELECT tiktok_capi.tt_enqueue('CKEYS001', tiktok_capi.tt_event('Lead', 'f5', first_name => 'Zoe'));
SELECT throws_ok($$SELECT tiktok_capi.tt_forget(first_name => 'Zoe')$$, '22023',
                 'tt_forget() takes a name only as first_name, last_name and zip_code together',
                 'a first name alone is refused');
SELECT throws_ok($$SELECT tiktok_capi.tt_forget(first_name => 'Zoe', last_name => 'Kim')$$, '22023',
                 'tt_forget() takes a name only as first_name, last_name and zip_code together',
                 'a first and last name without a zip code are refused');
SELECT throws_ok($$SELECT tiktok_capi.tt_forget(last_name => 'Kim', zip_code => '02139')$$, '22023',
                 'tt_forget() takes a name only as first_name, last_name and zip_code together',
                 'a last name and zip code without the first name are refused');
SELECT throws_ok($$SELECT tiktok_capi.tt_forget(email => 'zoe@example.com', first_name => 'Zoe')$$, '22023',
                 'tt_forget() takes a name only as first_name, last_name and zip_code together',
                 'a first name alone is refused beside an email too');
SELECT throws_ok($$SELECT tiktok_capi.tt_forget(first_name => ' ', last_name => 'Kim', zip_code => '02139')$$, '22023',
                 'an identifier given to tt_forget() cannot be normalized', 'a blank first name is refused');
SELECT is((SELECT count(*) FROM tiktok_capi.outbox WHERE status = 'erased'), 0::bigint, 'a refused call erases nothing');
SELECT is(tiktok_capi.tt_forget(first_name => ' zoe', last_name => 'KIM', zip_code => '02139 '), 2::bigint,
          'first name, last name and zip code together erase the events carrying all three');
SELECT is(array_agg(event_id ORDER BY event_id), ARRAY['f1', 'f2'], 'those two, written differently, are erased')
  FROM tiktok_capi.outbox WHERE status = 'erased';
SELECT is(array_agg(event_id ORDER BY event_id), ARRAY['f3', 'f4', 'f5'],
          'another zip code, another last name, a first name alone: kept')
  FROM tiktok_capi.outbox WHERE event_id LIKE 'f%' AND status <> 'erased';
SELECT is((SELECT identifiers FROM tiktok_capi.erasures ORDER BY id DESC LIMIT 1), ARRAY['name_and_zip_code'],
          'the audit names the kind, not the name');
SELECT ok(NOT EXISTS (SELECT 1 FROM tiktok_capi.erasures e WHERE e::text ILIKE '%zoe%' OR e::text ILIKE '%kim%'
                          OR e::text LIKE '%02139%' OR e::text LIKE '%' || pg_temp.sha('zoe') || '%'),
          'the audit holds neither the name nor its hash');

SELECT * FROM finish();
ROLLBACK;
