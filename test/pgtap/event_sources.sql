-- Event sources and a pixel per row: a configured id knows its source; the
-- builder applies each source's rules (offline and CRM carry no browser
-- fields, offline takes standard names, CRM needs a lead); pixel_from
-- routes each row to its own id, and an unusable id is a failed row, never
-- a dropped event.  tt_flush() builds where a commit would.
BEGIN;
SELECT plan(46);

-- ids of each source
SELECT tiktok_capi.tt_add_pixel('CSRCWEB', 'token');
SELECT tiktok_capi.tt_add_pixel('CSRCSTORE', 'token', event_source => 'offline');
SELECT tiktok_capi.tt_add_pixel('CSRCCRM', 'token', event_source => 'crm');
SELECT tiktok_capi.tt_add_pixel('CSRCOFF', 'token', event_source => 'web');
SELECT tiktok_capi.tt_update_pixel('CSRCOFF', enabled => false);
SELECT is((SELECT array_agg(pixel_code || ':' || event_source ORDER BY pixel_code) FROM tiktok_capi.pixels),
          ARRAY['CSRCCRM:crm', 'CSRCOFF:web', 'CSRCSTORE:offline', 'CSRCWEB:web'],
          'tt_add_pixel: event_source, web by default');
SELECT throws_ok($$SELECT tiktok_capi.tt_add_pixel('CSRCX', 'token', event_source => 'store')$$,
                 '22023', 'event_source must be web, app, offline or crm', 'an unknown source is refused');
SELECT throws_ok($$SELECT tiktok_capi.tt_update_pixel('CSRCWEB', event_source => 'pos')$$,
                 '22023', 'event_source must be web, app, offline or crm', 'tt_update_pixel refuses one too');
SELECT tiktok_capi.tt_update_pixel('CSRCOFF', event_source => 'app');
SELECT is((SELECT event_source FROM tiktok_capi.pixels WHERE pixel_code = 'CSRCOFF'), 'app',
          'tt_update_pixel changes the source');
SELECT tiktok_capi.tt_update_pixel('CSRCOFF', event_source => 'web');

-- tt_event: the rules of each source
SELECT tiktok_capi.tt_event('Purchase', 'S-1', '2025-01-01 00:00:00+00', email => 'a@example.com',
       ttclid => 'E.C.P.x', ttp => 'ttp-1', ip => '203.0.113.7', user_agent => 'UA', locale => 'en-US',
       page_url => 'https://shop.example/thanks', referrer => 'https://shop.example/',
       limited_data_use => false, order_id => 'S-1', shop_id => 'store-7', event_source => 'offline') AS off \gset
SELECT is((:'off'::jsonb -> 'user') ?| ARRAY['ttclid', 'ttp', 'ip', 'user_agent'], false,
          'offline: no ttclid, ttp, ip or user_agent');
SELECT ok((:'off'::jsonb) ? 'user' AND (:'off'::jsonb -> 'user') ?& ARRAY['email', 'locale'],
          'offline: the hashed email and the locale stay');
SELECT is((:'off'::jsonb) ?| ARRAY['page', 'limited_data_use', 'lead'], false, 'offline: no page, no limited_data_use, no lead');
SELECT is(:'off'::jsonb #>> '{properties,shop_id}', 'store-7', 'offline: properties.shop_id');
SELECT is(:'off'::jsonb #>> '{properties,order_id}', 'S-1', 'offline: properties.order_id');
SELECT throws_ok($$SELECT tiktok_capi.tt_event('StoreVisit', 'S-2', event_source => 'offline')$$,
                 '22023', 'event name "StoreVisit" is not a standard one: offline events take standard names only',
                 'offline: a custom name is refused');
SELECT lives_ok($$SELECT tiktok_capi.tt_event('CompletePayment', 'S-3', event_source => 'offline')$$,
                'offline: a legacy standard name is taken');
SELECT tiktok_capi.tt_event('Lead', 'L-1', '2025-01-01 00:00:00+00', email => 'b@example.com', ip => '203.0.113.7',
       ttclid => 'E.C.P.y', page_url => 'https://x.example/', lead_id => 'crm-77',
       lead_event_source => 'HubSpot', event_source => 'crm') AS crm \gset
SELECT is(:'crm'::jsonb -> 'lead', '{"lead_id": "crm-77", "lead_event_source": "HubSpot"}'::jsonb, 'crm: the lead object');
SELECT is((:'crm'::jsonb -> 'user') ?| ARRAY['ttclid', 'ip'], false, 'crm: no browser fields');
SELECT is((:'crm'::jsonb) ? 'page', false, 'crm: no page');
SELECT throws_ok($$SELECT tiktok_capi.tt_event('Lead', 'L-2', email => 'b@example.com', event_source => 'crm')$$,
                 '22023', 'a CRM event needs lead_id (the lead''s id in the CRM)', 'crm: no lead_id is refused');
SELECT lives_ok($$SELECT tiktok_capi.tt_event('QualifiedLead', 'L-3', lead_id => 'x', event_source => 'crm')$$,
                'crm: a custom name is taken');
SELECT tiktok_capi.tt_event('Purchase', 'W-1', ttclid => 'E.C.P.z', ip => '203.0.113.7', page_url => 'https://shop.example/',
       lead_id => 'crm-1', shop_id => 'web-shop') AS web \gset
SELECT ok((:'web'::jsonb -> 'user') ?& ARRAY['ttclid', 'ip'] AND (:'web'::jsonb) ? 'page',
          'web (the default): the browser fields go');
SELECT is((:'web'::jsonb) ? 'lead', false, 'web: no lead');
SELECT throws_ok($$SELECT tiktok_capi.tt_event('Purchase', 'X', event_source => 'pos')$$,
                 '22023', 'event_source must be web, app, offline or crm', 'tt_event: an unknown source is refused');

-- tt_attach knows a fixed pixel's rules
CREATE TABLE public.src_leads (id bigint PRIMARY KEY, email text);
SELECT throws_ok($$SELECT tiktok_capi.tt_attach('src_leads', 'StoreVisit', pixel => 'CSRCSTORE')$$,
                 '22023', NULL, 'attach: an offline set with a custom name is refused');
SELECT throws_ok($$SELECT tiktok_capi.tt_attach('src_leads', 'Lead', pixel => 'CSRCCRM')$$,
                 '22023', NULL, 'attach: a CRM set on a table without lead_id is refused');
SELECT throws_ok($$SELECT tiktok_capi.tt_attach('src_leads', 'Lead', '{pixel_from=email}', pixel => 'CSRCCRM')$$,
                 '22023', 'pixel and pixel_from both name the pixel', 'attach: pixel and pixel_from together are refused');

-- one table, every channel: pixel_from routes each row
CREATE TABLE public.src_orders (
    id bigint PRIMARY KEY, channel_set text, email text, total numeric(12, 2),
    currency text DEFAULT 'USD', ip text, user_agent text, ttclid text, store_id text,
    crm_lead text, status text DEFAULT 'paid');
SELECT tiktok_capi.tt_attach('src_orders', 'Purchase',
       '{pixel_from=channel_set, lead_id=crm_lead, lead_event_source=''HubSpot''}',
       condition => $$NEW.status = 'paid'$$);
SELECT is((SELECT pixel_code FROM tiktok_capi.capture_triggers WHERE table_name = 'src_orders'::regclass LIMIT 1), NULL,
          'capture_triggers: a pixel_from trigger names no pixel');
SELECT is((SELECT source FROM tiktok_capi.capture_triggers WHERE table_name = 'src_orders'::regclass AND field = 'lead_event_source'),
          '''HubSpot''', 'capture_triggers: a constant is shown quoted');
INSERT INTO public.src_orders (id, channel_set, email, total, ip, user_agent, ttclid, store_id, crm_lead) VALUES
    (1, 'CSRCWEB',   'w@example.com', 10, '203.0.113.7', 'UA', 'E.C.P.w', NULL, NULL),
    (2, 'CSRCSTORE', 's@example.com', 20, '203.0.113.8', 'UA', 'E.C.P.s', 'store-9', NULL),
    (3, 'CSRCCRM',   'c@example.com', 30, NULL, NULL, NULL, NULL, 'lead-3'),
    (4, 'CNOSUCH',   'u@example.com', 40, NULL, NULL, NULL, NULL, NULL),
    (5, 'CSRCOFF',   'd@example.com', 50, NULL, NULL, NULL, NULL, NULL),
    (6, NULL,        'n@example.com', 60, NULL, NULL, NULL, NULL, NULL),
    (7, 'CSRCCRM',   'l@example.com', 70, NULL, NULL, NULL, NULL, NULL);
SELECT is(tiktok_capi.tt_flush(), 7, 'every row is captured');
CREATE FUNCTION pg_temp.ev(eid text) RETURNS tiktok_capi.outbox LANGUAGE sql AS
$$SELECT * FROM tiktok_capi.outbox WHERE event = 'Purchase' AND event_id = eid$$;
SELECT is((pg_temp.ev('1')).pixel_code, 'CSRCWEB', 'a web row goes to its pixel');
SELECT ok((pg_temp.ev('1')).payload -> 'user' ?& ARRAY['ip', 'ttclid', 'user_agent'], 'with its browser fields');
SELECT is((pg_temp.ev('2')).pixel_code, 'CSRCSTORE', 'a store row goes to its offline set');
SELECT is(((pg_temp.ev('2')).payload -> 'user') ?| ARRAY['ip', 'ttclid', 'user_agent'], false, 'without browser fields');
SELECT ok((pg_temp.ev('2')).warnings::text LIKE '%ttclid, ip, user_agent dropped: offline events do not take them%',
          'and says so in its warnings');
SELECT is((pg_temp.ev('2')).payload #>> '{properties,shop_id}', 'store-9', 'shop_id from store_id by default');
SELECT is((pg_temp.ev('3')).pixel_code, 'CSRCCRM', 'a CRM row goes to its CRM set');
SELECT is((pg_temp.ev('3')).payload -> 'lead', '{"lead_id": "lead-3", "lead_event_source": "HubSpot"}'::jsonb,
          'with its lead: a column and a constant');
SELECT is((pg_temp.ev('4')).status || ' ' || (pg_temp.ev('4')).pixel_code, 'failed CNOSUCH', 'an unknown pixel: a failed row under it');
SELECT ok((pg_temp.ev('4')).last_error LIKE 'the row''s pixel "CNOSUCH" (pixel_from column "channel_set") is not configured%',
          'naming the pixel and the column');
SELECT is((pg_temp.ev('5')).status, 'failed', 'a disabled pixel: a failed row');
SELECT ok((pg_temp.ev('5')).last_error LIKE '%"CSRCOFF"%is disabled%', 'saying so');
SELECT ok((pg_temp.ev('6')).status = 'failed' AND (pg_temp.ev('6')).last_error LIKE 'the row names no pixel%',
          'no pixel in the row: a failed row');
SELECT ok((pg_temp.ev('7')).status = 'failed' AND (pg_temp.ev('7')).last_error LIKE 'a CRM event needs lead_id%',
          'a CRM row without its lead: a failed row');

-- an unknown pixel, once added, takes the order at its next update
SELECT tiktok_capi.tt_add_pixel('CNOSUCH', 'token');
UPDATE public.src_orders SET total = 41 WHERE id = 4;
SELECT tiktok_capi.tt_flush();
SELECT is((pg_temp.ev('4')).status, 'pending', 'the pixel added, the order updated: queued');

-- a row moved to another pixel after its event was queued: a new key (the
-- pixel is part of it), the first pixel keeps its event
UPDATE public.src_orders SET channel_set = 'CNOSUCH' WHERE id = 1;
SELECT tiktok_capi.tt_flush();
SELECT is((SELECT array_agg(pixel_code ORDER BY pixel_code) FROM tiktok_capi.outbox WHERE event_id = '1'),
          ARRAY['CNOSUCH', 'CSRCWEB'], 'moved to another pixel: each pixel has the order once');
UPDATE public.src_orders SET total = 11 WHERE id = 1;
SELECT tiktok_capi.tt_flush();
SELECT is((SELECT count(*)::int FROM tiktok_capi.outbox WHERE event_id = '1'), 2, 'and a later change adds nothing');

-- a fixed pixel's source is read with the trigger; changing it resolves the triggers again
SELECT tiktok_capi.tt_add_pixel('CSRCFIX', 'token');
CREATE TABLE public.src_fixed (id bigint PRIMARY KEY, email text, ip text);
SELECT tiktok_capi.tt_attach('src_fixed', 'Purchase', pixel => 'CSRCFIX');
INSERT INTO public.src_fixed VALUES (1, 'f@example.com', '203.0.113.7');
SELECT tiktok_capi.tt_flush();
SELECT tiktok_capi.tt_update_pixel('CSRCFIX', event_source => 'offline');
INSERT INTO public.src_fixed VALUES (2, 'g@example.com', '203.0.113.7');
SELECT tiktok_capi.tt_flush();
SELECT is((SELECT array_agg(event_id || ':' || (payload -> 'user' ? 'ip')::text ORDER BY event_id)
             FROM tiktok_capi.outbox WHERE pixel_code = 'CSRCFIX'),
          ARRAY['1:true', '2:false'], 'a fixed pixel made offline: its next events are built as offline');

-- the browser pixel pairs with web events only
SELECT ok(tiktok_capi.tt_pixel_call('CSRCWEB', 'Purchase', '1') LIKE 'ttq.track(%', 'tt_pixel_call: the row''s web pixel');
SELECT throws_ok($$SELECT tiktok_capi.tt_pixel_call('CSRCSTORE', 'Purchase', '2')$$, '0A000',
                 'tt_pixel_call is for web events: "CSRCSTORE" is an offline event set, which no browser pixel pairs with',
                 'tt_pixel_call refuses an offline event');
SELECT throws_ok($$SELECT tiktok_capi.tt_datalayer('CSRCCRM', 'Purchase', '3')$$, '0A000', NULL,
                 'tt_datalayer refuses a CRM event');

SELECT * FROM finish();
ROLLBACK;
