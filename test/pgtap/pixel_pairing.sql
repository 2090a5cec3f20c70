-- Pairing with the browser pixel: the page's call is built from the queued
-- event (same name, event_id, value, currency, contents), is safe inside a
-- <script> element, carries no customer identifiers unless asked, and only
-- a role the owner granted may ask for it.
BEGIN;
SELECT plan(80);

SELECT tiktok_capi.tt_add_pixel('CPAIR01', 'pairing-token');

-- a known event, with every identifier and the properties the page repeats
SELECT tiktok_capi.tt_enqueue('CPAIR01', tiktok_capi.tt_event(
    'Purchase', '10045', '2025-01-01 00:00:00+00',
    email => ' Alice_ABC@Gmail.com ', phone => '(+1)2133734253', external_id => 'CUST-0042',
    ttclid => 'E.C.P.click', ttp => 'ttp-cookie', ip => '203.0.113.7', user_agent => 'Mozilla/5.0 pair',
    value => 46.00, currency => 'usd',
    contents => '[{"content_id": 1077218, "quantity": 2, "price": "8.00", "content_name": "Mug"}]',
    content_type => 'product', description => 'Two mugs', search_string => 'mug')) AS known \gset
-- no properties, no identifiers
SELECT tiktok_capi.tt_enqueue('CPAIR01', tiktok_capi.tt_event('Lead', 'L-77', '2025-01-01 00:00:00+00')) AS bare \gset
-- hand-built: a raw email (never to reach the page) and an array of phone hashes
SELECT tiktok_capi.tt_enqueue('CPAIR01', jsonb_build_object(
    'event', 'CompleteRegistration', 'event_id', 'R-1', 'event_time', 1735689600,
    'user', jsonb_build_object('email', 'alice@example.com',
                               'phone', jsonb_build_array(repeat('ab', 32), repeat('cd', 32)),
                               'external_id', 'not-a-hash'))) AS raw \gset
-- a hostile product name
SELECT 'Mug</script><script>document.title="pwned"</script> "q" ''s'' <!-- x --> & '
       || chr(8232) || ' ' || chr(8233) || ' \ end' AS hostile \gset
SELECT tiktok_capi.tt_enqueue('CPAIR01', tiktok_capi.tt_event(
    'Purchase', 'H-1', '2025-01-01 00:00:00+00', email => 'h@example.com', value => 1, currency => 'EUR',
    contents => jsonb_build_array(jsonb_build_object('content_id', 'X<1>', 'content_name', :'hostile',
                                                     'quantity', 1, 'price', 1)))) AS hostile_id \gset

-- the exact call for a known event
SELECT tiktok_capi.tt_flush();
SELECT is(tiktok_capi.tt_pixel_call(:known),
    'ttq.track("Purchase", {"value":46.00,"currency":"USD",'
    '"contents":[{"price":8.00,"quantity":2,"content_id":"1077218","content_name":"Mug"}],'
    '"content_type":"product","description":"Two mugs","query":"mug"}, {"event_id":"10045"});',
    'tt_pixel_call gives the thank-you page''s exact ttq.track call');
SELECT tiktok_capi.tt_flush();
SELECT is(tiktok_capi.tt_pixel_call('CPAIR01', 'Purchase', '10045'), tiktok_capi.tt_pixel_call(:known),
    'the dedup key finds the same call as the outbox id');
SELECT tiktok_capi.tt_flush();
SELECT is(tiktok_capi.tt_pixel_call(:bare), 'ttq.track("Lead", {}, {"event_id":"L-77"});',
    'an event without properties gives an empty properties object');
SELECT tiktok_capi.tt_flush();
SELECT results_eq(
    format($$SELECT a ->> 0, a #>> '{2,event_id}', a #> '{1,value}', a #>> '{1,currency}', a #> '{1,contents}'
               FROM (SELECT ('[' || substring(tiktok_capi.tt_pixel_call(%s) FROM '^ttq\.track\((.*)\);$') || ']')::jsonb) AS t(a)$$,
           :known),
    format($$SELECT event, event_id, payload #> '{properties,value}', payload #>> '{properties,currency}',
                    payload #> '{properties,contents}'
               FROM tiktok_capi.outbox WHERE id = %s$$, :known),
    'the call''s arguments, read as JSON, are the outbox row''s event, event_id, value, currency and contents');

-- NULL when there is no such event
SELECT tiktok_capi.tt_flush();
SELECT is(tiktok_capi.tt_pixel_call(-1), NULL, 'an unknown outbox id gives NULL');
SELECT tiktok_capi.tt_flush();
SELECT is(tiktok_capi.tt_pixel_call(NULL::bigint), NULL, 'a NULL outbox id gives NULL');
SELECT tiktok_capi.tt_flush();
SELECT is(tiktok_capi.tt_pixel_call('CPAIR01', 'Purchase', '10046'), NULL, 'an unknown event_id gives NULL');
SELECT tiktok_capi.tt_flush();
SELECT is(tiktok_capi.tt_pixel_call('CPAIR01', 'purchase', '10045'), NULL,
    'another spelling of the event name gives NULL, not the Purchase');
SELECT tiktok_capi.tt_flush();
SELECT is(tiktok_capi.tt_pixel_call('COTHER', 'Purchase', '10045'), NULL, 'another pixel gives NULL');
SELECT tiktok_capi.tt_flush();
SELECT is(tiktok_capi.tt_datalayer(-1), NULL, 'tt_datalayer of an unknown outbox id is NULL');
SELECT tiktok_capi.tt_flush();
SELECT is(tiktok_capi.tt_datalayer('CPAIR01', 'Purchase', '10046'), NULL, 'tt_datalayer of an unknown key is NULL');

-- no customer identifiers by default, hashed or not
SELECT tiktok_capi.tt_flush();
SELECT unalike(tiktok_capi.tt_pixel_call(:known), '%identify%', 'no ttq.identify by default');
SELECT tiktok_capi.tt_flush();
SELECT ok(tiktok_capi.tt_pixel_call(:known) !~ '[0-9a-f]{64}', 'no hash in the default call');
SELECT tiktok_capi.tt_flush();
SELECT ok(strpos(tiktok_capi.tt_pixel_call(:known), s) = 0, 'the default call does not carry ' || s)
  FROM unnest(ARRAY['E.C.P.click', 'ttp-cookie', '203.0.113.7', 'Mozilla', 'email', 'phone', 'external_id']) AS s;
SELECT tiktok_capi.tt_flush();
SELECT is(tiktok_capi.tt_pixel_call(:known, false), tiktok_capi.tt_pixel_call(:known),
    'advanced_matching => false is the default');
SELECT tiktok_capi.tt_flush();
SELECT is(tiktok_capi.tt_pixel_call(:known, NULL), tiktok_capi.tt_pixel_call(:known),
    'advanced_matching => NULL adds no identifiers');
SELECT tiktok_capi.tt_flush();
SELECT ok(tiktok_capi.tt_datalayer(:known)::text !~ '[0-9a-f]{64}|E\.C\.P|203\.0\.113|Mozilla|ttp-cookie',
    'tt_datalayer carries no identifier');

-- ttq.identify only with advanced_matching, with the payload's hashes only
SELECT tiktok_capi.tt_flush();
SELECT is(tiktok_capi.tt_pixel_call(:known, advanced_matching => true),
    'ttq.identify({"email":"' || tiktok_capi.tt_hash_email('alice_abc@gmail.com')
    || '","phone_number":"' || tiktok_capi.tt_hash_phone('+12133734253')
    || '","external_id":"' || tiktok_capi.tt_hash_external_id('CUST-0042') || '"});' || E'\n'
    || tiktok_capi.tt_pixel_call(:known),
    'advanced_matching adds ttq.identify with the hashed email, phone_number and external_id before the track call');
SELECT tiktok_capi.tt_flush();
SELECT is(tiktok_capi.tt_pixel_call('CPAIR01', 'Purchase', '10045', true),
    tiktok_capi.tt_pixel_call(:known, true), 'and so does the dedup-key form');
SELECT tiktok_capi.tt_flush();
SELECT is(tiktok_capi.tt_pixel_call(:raw, true),
    'ttq.identify({"phone_number":"' || repeat('ab', 32) || '"});' || E'\n'
    || 'ttq.track("CompleteRegistration", {}, {"event_id":"R-1"});',
    'only SHA-256 hex reaches the page: a raw email and a non-hash external_id are left out, the first of several hashes kept');
SELECT tiktok_capi.tt_flush();
SELECT is(tiktok_capi.tt_pixel_call(:bare, true), tiktok_capi.tt_pixel_call(:bare),
    'an event without identifiers gets no ttq.identify');

-- safe inside <script>: no product name closes the element or opens a comment
SELECT tiktok_capi.tt_flush();
SELECT ok(strpos(tiktok_capi.tt_pixel_call(:hostile_id, true), c) = 0, 'no raw ' || d || ' in the call')
  FROM (VALUES ('<', '<'), ('>', '>'), ('&', '&'), (chr(8232), 'U+2028'), (chr(8233), 'U+2029')) AS t(c, d);
SELECT tiktok_capi.tt_flush();
SELECT ok(strpos(tiktok_capi.tt_pixel_call(:hostile_id), s) > 0, 'the call holds ' || s)
  FROM unnest(ARRAY['\u003c/script\u003e\u003cscript\u003e', '\u003c!--', '--\u003e', '\u0026', '\u2028', '\u2029']) AS s;
SELECT tiktok_capi.tt_flush();
SELECT is(('[' || substring(tiktok_capi.tt_pixel_call(:hostile_id) FROM '^ttq\.track\((.*)\);$') || ']')::jsonb
              #>> '{1,contents,0,content_name}',
    :'hostile', 'the escaped name reads back, as JSON, exactly as the product''s name');
SELECT tiktok_capi.tt_flush();
SELECT is(('[' || substring(tiktok_capi.tt_pixel_call(:hostile_id) FROM '^ttq\.track\((.*)\);$') || ']')::jsonb
              #>> '{1,contents,0,content_id}',
    'X<1>', 'and so does an escaped content_id');
SELECT tiktok_capi.tt_flush();
SELECT is(tiktok_capi.tt_datalayer(:hostile_id) #>> '{ecommerce,items,0,item_name}', :'hostile',
    'tt_datalayer holds the name unchanged (jsonb: the page''s template escapes it)');

-- the dataLayer object for Google Tag Manager
SELECT tiktok_capi.tt_flush();
SELECT is(tiktok_capi.tt_datalayer(:known),
    '{"event": "Purchase", "event_id": "10045",
      "ecommerce": {"value": 46.00, "currency": "USD",
                    "items": [{"item_id": "1077218", "item_name": "Mug", "price": 8.00, "quantity": 2}]}}'::jsonb,
    'tt_datalayer maps the event to event, event_id and ecommerce {value, currency, items}');
SELECT tiktok_capi.tt_flush();
SELECT is(tiktok_capi.tt_datalayer('CPAIR01', 'Purchase', '10045'), tiktok_capi.tt_datalayer(:known),
    'the dedup key finds the same dataLayer object');
SELECT tiktok_capi.tt_flush();
SELECT is(tiktok_capi.tt_datalayer(:bare), '{"event": "Lead", "event_id": "L-77"}'::jsonb,
    'an event without properties has no ecommerce object');
SELECT tiktok_capi.tt_flush();
SELECT is(tiktok_capi.tt_datalayer(:known) ->> 'event_id',
    ('[' || substring(tiktok_capi.tt_pixel_call(:known) FROM '^ttq\.track\((.*)\);$') || ']')::jsonb #>> '{2,event_id}',
    'the dataLayer object and the pixel call carry the same event_id');

-- tt_ttclid: the click id from a landing URL
SELECT tiktok_capi.tt_flush();
SELECT is(tiktok_capi.tt_ttclid(u), want, d)
  FROM (VALUES
    ('https://shop.example/p?ttclid=E.C.P.abc', 'E.C.P.abc', 'the only parameter'),
    ('https://shop.example/p?utm_source=tiktok&ttclid=E.C.P.abc&utm_campaign=x', 'E.C.P.abc', 'among several parameters'),
    ('https://shop.example/p?xttclid=A&ttclid_old=B&ttclid=C', 'C', 'not from parameters whose names only contain ttclid'),
    ('https://shop.example/p', NULL, 'absent: no query string'),
    ('https://shop.example/p?utm_source=tiktok', NULL, 'absent among other parameters'),
    ('https://shop.example/p?ttclid=', NULL, 'empty'),
    ('https://shop.example/p?ttclid&a=1', NULL, 'empty, without ='),
    ('https://shop.example/p?ttclid=&ttclid=E.C.P.later', 'E.C.P.later', 'the first non-empty one'),
    ('https://shop.example/p?ttclid=E.C.P.a%2Bb%2F%3D%3D', 'E.C.P.a+b/==', 'percent-decoded'),
    ('https://shop.example/p?ttclid=E.C.P.a+b', 'E.C.P.a+b', 'a + stays a +'),
    ('https://shop.example/p?ttclid=%E2%82%ACuro', NULL, 'an escape beyond ASCII gives NULL: click ids are ASCII'),
    ('https://shop.example/p?ttclid=%zz', NULL, 'a malformed escape gives NULL'),
    ('https://shop.example/p?ttclid=%C3', NULL, 'a truncated UTF-8 sequence gives NULL'),
    ('https://shop.example/p?ttclid=a%00b', NULL, 'an encoded NUL gives NULL'),
    ('https://shop.example/p?ttclid=a%0Ab', NULL, 'an encoded control character gives NULL'),
    ('https://shop.example/p?ttclid=E.C.P.abc#reviews', 'E.C.P.abc', 'the fragment is not part of the value'),
    ('https://shop.example/p#ttclid=E.C.P.frag', 'E.C.P.frag', 'in the fragment'),
    ('https://shop.example/#/thanks?a=1&ttclid=E.C.P.route', 'E.C.P.route', 'in a hash route''s query'),
    ('https://shop.example/p?ttclid=E.C.P.query#/r?ttclid=E.C.P.route', 'E.C.P.query', 'the query string wins over the fragment'),
    ('https://shop.example/p#reviews?x=1', NULL, 'absent from query and fragment')) AS t(u, want, d);
SELECT tiktok_capi.tt_flush();
SELECT is(tiktok_capi.tt_ttclid(NULL), NULL, 'NULL gives NULL');
SELECT tiktok_capi.tt_flush();
SELECT ok(p.provolatile = 'i' AND p.proisstrict AND p.proparallel = 's',
    'tt_ttclid is IMMUTABLE STRICT PARALLEL SAFE')
  FROM pg_proc p WHERE p.oid = 'tiktok_capi.tt_ttclid(text)'::regprocedure;

-- privileges: SECURITY DEFINER with a pinned search_path, not for PUBLIC
SELECT tiktok_capi.tt_flush();
SELECT ok(p.prosecdef AND p.proconfig = ARRAY['search_path=pg_catalog, pg_temp'],
    p.oid::regprocedure::text || ' is SECURITY DEFINER with a pinned search_path')
  FROM pg_proc p
 WHERE p.oid IN ('tiktok_capi.tt_pixel_call(bigint, boolean)'::regprocedure,
                 'tiktok_capi.tt_pixel_call(text, text, text, boolean)'::regprocedure,
                 'tiktok_capi.tt_datalayer(bigint)'::regprocedure,
                 'tiktok_capi.tt_datalayer(text, text, text)'::regprocedure)
 ORDER BY 1;

CREATE ROLE tt_pair_web NOLOGIN;        -- the web application, granted by the owner
CREATE ROLE tt_pair_nobody NOLOGIN;     -- any other role: PUBLIC's rights only
GRANT EXECUTE ON FUNCTION tiktok_capi.tt_pixel_call(bigint, boolean),
    tiktok_capi.tt_pixel_call(text, text, text, boolean),
    tiktok_capi.tt_datalayer(bigint), tiktok_capi.tt_datalayer(text, text, text) TO tt_pair_web;

SET ROLE tt_pair_nobody;
SELECT throws_ok(format('SELECT tiktok_capi.tt_pixel_call(%s)', :known), '42501', NULL,
    'PUBLIC cannot call tt_pixel_call(outbox_id)');
SELECT throws_ok($$SELECT tiktok_capi.tt_pixel_call('CPAIR01', 'Purchase', '10045')$$, '42501', NULL,
    'PUBLIC cannot call tt_pixel_call(pixel_code, event, event_id)');
SELECT throws_ok(format('SELECT tiktok_capi.tt_datalayer(%s)', :known), '42501', NULL,
    'PUBLIC cannot call tt_datalayer(outbox_id)');
SELECT throws_ok($$SELECT tiktok_capi.tt_datalayer('CPAIR01', 'Purchase', '10045')$$, '42501', NULL,
    'PUBLIC cannot call tt_datalayer(pixel_code, event, event_id)');
SELECT is(tiktok_capi.tt_ttclid('https://shop.example/?ttclid=E.C.P.pub'), 'E.C.P.pub', 'PUBLIC can call tt_ttclid');
RESET ROLE;

SELECT tiktok_capi.tt_pixel_call(:known) AS owner_call, tiktok_capi.tt_datalayer(:known) AS owner_layer \gset
SET ROLE tt_pair_web;
SELECT is(tiktok_capi.tt_pixel_call(:known), :'owner_call', 'the granted role gets the call by outbox id');
SELECT is(tiktok_capi.tt_pixel_call('CPAIR01', 'Purchase', '10045'), :'owner_call',
    'the granted role gets the call by dedup key');
SELECT is(tiktok_capi.tt_datalayer('CPAIR01', 'Purchase', '10045'), :'owner_layer'::jsonb,
    'the granted role gets the dataLayer object');
SELECT throws_ok('SELECT payload FROM tiktok_capi.outbox', '42501', NULL,
    'the granted role still cannot read the outbox');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
