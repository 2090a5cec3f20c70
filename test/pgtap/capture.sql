-- The order trigger and the outbox: committed orders become queued events,
-- once per key, without rights for the application on the outbox, and bad
-- customer data never aborts an order.  Events are built at commit; this
-- file runs in one transaction, so tt_flush() builds them where a commit
-- would (test/integration/sends_each_order_as_committed commits for real).
BEGIN;
SELECT plan(54);

SELECT tiktok_capi.tt_add_pixel('CSHOP01', 'token-that-must-stay-secret', 'TEST123');

CREATE TABLE public.orders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_email text,
    phone text,
    total numeric(12, 2),
    currency text DEFAULT 'USD',
    status text NOT NULL DEFAULT 'new',
    ttclid text,
    ip inet,
    created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE public.order_items (
    order_id bigint NOT NULL,
    product_id integer,
    qty integer,
    unit_price numeric(12, 2),
    name text);
CREATE TABLE public.leads (lead_id text PRIMARY KEY, email text);

CREATE ROLE tt_app NOLOGIN;
GRANT USAGE ON SCHEMA public TO tt_app;
GRANT SELECT, INSERT, UPDATE ON public.orders, public.order_items, public.leads TO tt_app;

-- pixels: a bad call never prints the token
CREATE FUNCTION pg_temp.error_text(call text) RETURNS text LANGUAGE plpgsql AS $f$
DECLARE msg text; detail text; hint text;
BEGIN
    EXECUTE call;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    -- the context would quote this function's own EXECUTE, so it is left out
    GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL,
                            hint = PG_EXCEPTION_HINT;
    RETURN concat_ws(' | ', msg, detail, hint);
END $f$;
SELECT unalike(pg_temp.error_text(c), '%sekrit%', 'no token in the error of ' || c)
FROM (VALUES ($$SELECT tiktok_capi.tt_add_pixel('bad code!', 'sekrit-token')$$),
             ($$SELECT tiktok_capi.tt_add_pixel(NULL, 'sekrit-token')$$),
             ($$SELECT tiktok_capi.tt_add_pixel('CSHOP01', 'sekrit-token')$$)) AS t(c);
SELECT alike(pg_temp.error_text($$SELECT tiktok_capi.tt_add_pixel('CSHOP01', 'sekrit-token')$$),
    'duplicate key value violates unique constraint%', 'adding a pixel twice is an error');
SELECT ok(tiktok_capi.tt_update_pixel('CSHOP01', test_event_code => ''), 'tt_update_pixel finds the pixel');
SELECT throws_ok($$SELECT tiktok_capi.tt_update_pixel('CSHOPO1', enabled => true)$$, '42704',
                 'pixel "CSHOPO1" is not configured', 'tt_update_pixel of an unknown pixel is an error, not false');
SELECT is((SELECT test_event_code FROM tiktok_capi.pixels), NULL,
          'tt_update_pixel clears the test_event_code with an empty string');

-- attaching: typos are errors now, not at the first order
SELECT throws_ok($$SELECT tiktok_capi.tt_attach('orders', 'Purchase', '{email=custmer_email}')$$,
    '22023', 'column "custmer_email" does not exist (mapping email=custmer_email)',
    'a mistyped column is an error at attach time');
SELECT throws_ok($$SELECT tiktok_capi.tt_attach('orders', 'Purchase', '{emial=customer_email}')$$,
    '22023', 'unknown field "emial" in mapping "emial=customer_email"',
    'a mistyped field is an error at attach time');
SELECT throws_ok($$SELECT tiktok_capi.tt_attach('orders', 'purchase')$$,
    '22023', 'event name "purchase" is not spelled as TikTok''s "Purchase"',
    'a misspelled standard event name is an error at attach time');
SELECT throws_ok($$SELECT tiktok_capi.tt_attach('orders', 'Purchase', '{value=created_at}')$$,
    '22023', 'column "created_at" of type timestamp with time zone cannot feed value',
    'a column of the wrong type is an error at attach time');
SELECT throws_ok($$SELECT tiktok_capi.tt_attach('orders', 'Purchase', pixel => 'CNOPE')$$,
    '42704', 'pixel "CNOPE" is not configured',
    'an unknown pixel is an error at attach time');
SELECT throws_ok($$SELECT tiktok_capi.tt_attach('orders', 'Purchase', '{contents_from=order_itemz(order_id)}')$$,
    '22023', 'contents_from table "order_itemz" does not exist',
    'a mistyped child table is an error at attach time');
SELECT is((SELECT count(*)::int FROM pg_trigger WHERE tgrelid = 'public.orders'::regclass), 0,
    'no trigger was created by the failed attempts');

SELECT lives_ok($$SELECT tiktok_capi.tt_attach('orders', 'Purchase', '{email=customer_email}',
                                                condition => $c$NEW.status = 'paid'$c$)$$,
    'a correct mapping attaches (the only pixel is the default)');
SELECT matches((SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = 'public.orders'::regclass),
    'AFTER INSERT OR UPDATE ON public.orders FOR EACH ROW WHEN \(\(new.status = ''paid''::text\)\) EXECUTE FUNCTION tiktok_capi.tt_capture\(''Purchase'', ''email=customer_email'', ''pixel=CSHOP01''\)',
    'the trigger names its pixel and keeps the condition');

-- the application role: inserts orders, reads no pixel, token or outbox row
SET ROLE tt_app;
INSERT INTO public.orders (customer_email, phone, total, ttclid, ip, status)
VALUES (' Alice@Example.com ', '+1 (213) 373-4253', 46.00, 'E.C.P.click', '203.0.113.7', 'paid');
SELECT throws_ok('SELECT access_token FROM tiktok_capi.pixels', '42501', NULL,
    'the application role cannot read tokens');
SELECT throws_ok('SELECT * FROM tiktok_capi.outbox', '42501', NULL,
    'the application role cannot read the outbox');
SELECT throws_ok($$SELECT tiktok_capi.tt_enqueue('CSHOP01', tiktok_capi.tt_event('Lead', '1'))$$, '42501', NULL,
    'the application role cannot enqueue directly');
RESET ROLE;
SELECT tiktok_capi.tt_flush();

SELECT is((SELECT count(*)::int FROM tiktok_capi.outbox), 1, 'the paid order queued one event');
SELECT results_eq(
    $$SELECT pixel_code, event, event_id, status, payload #>> '{user,email}', payload #>> '{user,phone}',
             payload #>> '{user,ip}', payload #>> '{user,ttclid}', payload #> '{properties,value}',
             payload #>> '{properties,order_id}' FROM tiktok_capi.outbox$$,
    $$VALUES ('CSHOP01'::text, 'Purchase'::text, '1'::text, 'pending'::text,
              tiktok_capi.tt_hash_email('alice@example.com'), tiktok_capi.tt_hash_phone('+12133734253'),
              '203.0.113.7'::text, 'E.C.P.click'::text, '46.00'::jsonb, '1'::text)$$,
    'the event carries the order id as event_id, hashed identifiers and the plain ones');
SELECT ok((SELECT payload::text NOT LIKE '%lice@%' AND payload::text NOT LIKE '%213%373%' FROM tiktok_capi.outbox),
    'no raw email or phone in the outbox');

-- the WHEN condition: a new order queues nothing until it is paid
SET ROLE tt_app;
INSERT INTO public.orders (customer_email, total) VALUES ('bob@example.com', 10);
RESET ROLE;
SELECT tiktok_capi.tt_flush();
SELECT is((SELECT count(*)::int FROM tiktok_capi.outbox), 1, 'an unpaid order queues nothing');
SET ROLE tt_app;
UPDATE public.orders SET status = 'paid' WHERE id = 2;
RESET ROLE;
SELECT tiktok_capi.tt_flush();
SELECT is((SELECT count(*)::int FROM tiktok_capi.outbox), 2, 'paying it queues its event');

-- updates that fire the trigger again do not duplicate
SET ROLE tt_app;
UPDATE public.orders SET total = total;
UPDATE public.orders SET ttclid = 'later';
RESET ROLE;
SELECT tiktok_capi.tt_flush();
SELECT is((SELECT count(*)::int FROM tiktok_capi.outbox), 2, 'updates re-firing the trigger add no rows');
SELECT is((SELECT payload #>> '{user,ttclid}' FROM tiktok_capi.outbox WHERE event_id = '1'), 'later',
    'while pending, the event follows the order as it is now');

-- a rolled-back order leaves nothing
SAVEPOINT before_rollback;
SET ROLE tt_app;
INSERT INTO public.orders (customer_email, total, status) VALUES ('carol@example.com', 5, 'paid');
RESET ROLE;
ROLLBACK TO SAVEPOINT before_rollback;
SELECT tiktok_capi.tt_flush();
SELECT is((SELECT count(*)::int FROM tiktok_capi.outbox), 2, 'a rolled-back order leaves no outbox row');

-- bad customer data: the order commits, the event is degraded and says why
SET ROLE tt_app;
SELECT lives_ok($$INSERT INTO public.orders (customer_email, phone, total, currency, status)
                  VALUES ('not-an-email', 'call me', -5, 'BTC', 'paid')$$,
    'an order with bad customer data commits');
RESET ROLE;
SELECT tiktok_capi.tt_flush();
SELECT results_eq(
    $$SELECT status, payload ? 'user', payload #> '{properties}', warnings FROM tiktok_capi.outbox WHERE event_id = '4'$$,
    $$VALUES ('pending'::text, false, '{"order_id": "4"}'::jsonb,
              ARRAY['email dropped: not a usable address',
                    'phone dropped: not a usable number (E.164 with its +, or a national number with a country)',
                    'value must not be negative', 'currency "BTC" is not one TikTok accepts'])$$,
    'the bad fields are left out and noted in warnings, never with the identifiers');

-- contents from a child table: the event is built at commit, with the items
SELECT lives_ok($$SELECT tiktok_capi.tt_attach('orders', 'InitiateCheckout', '{email=customer_email,contents_from=order_items(order_id)}')$$,
    'a child-table mapping attaches');
SELECT ok((SELECT NOT tgdeferrable FROM pg_trigger WHERE tgname = 'tt_capture_initiatecheckout'),
    'as a plain AFTER trigger');
SET ROLE tt_app;
INSERT INTO public.orders (customer_email, total, currency) VALUES ('dave@example.com', 28, 'EUR');
INSERT INTO public.order_items VALUES (5, 1077218, 2, 8.00, 'Mug'), (5, 42, 1, 12.00, NULL);
RESET ROLE;
SELECT is((SELECT count(*)::int FROM tiktok_capi.outbox WHERE event = 'InitiateCheckout'), 0,
    'the event waits for commit');
SET CONSTRAINTS ALL IMMEDIATE;
SELECT tiktok_capi.tt_flush();
SELECT is((SELECT payload #> '{properties,contents}' FROM tiktok_capi.outbox WHERE event = 'InitiateCheckout'),
    '[{"price": 8.00, "quantity": 2, "content_id": "1077218", "content_name": "Mug"},
      {"price": 12.00, "quantity": 1, "content_id": "42"}]'::jsonb,
    'the event carries the items inserted after the order, content_id as strings');
SET CONSTRAINTS ALL DEFERRED;

-- a hand-made trigger with a typo still never aborts the order
CREATE TRIGGER lead_capture AFTER INSERT ON public.leads FOR EACH ROW
    EXECUTE FUNCTION tiktok_capi.tt_capture('Lead', 'event_id=lead_id', 'email=e_mail');
SET ROLE tt_app;
SELECT lives_ok($$INSERT INTO public.leads VALUES ('L-1', 'erin@example.com')$$,
    'an order still commits under a mistyped hand-made mapping');
RESET ROLE;
SELECT tiktok_capi.tt_flush();
SELECT is((SELECT status || ': ' || last_error FROM tiktok_capi.outbox WHERE event = 'Lead'),
    'failed: trigger "lead_capture" on public.leads cannot work: column "e_mail" does not exist (mapping email=e_mail); fix its arguments (tiktok_capi.tt_attach() checks a mapping), then update the orders to queue them again',
    'and its event is failed, not sent half-built, with a reason naming the trigger and the column');

-- tt_enqueue: the dedup key
SELECT is(tiktok_capi.tt_enqueue('CSHOP01', tiktok_capi.tt_event('Lead', 'L-1')),
          (SELECT id FROM tiktok_capi.outbox WHERE event = 'Lead' AND event_id = 'L-1'),
          'enqueueing an existing key returns the queued row''s id');
SELECT is((SELECT count(*)::int FROM tiktok_capi.outbox WHERE event_id = 'L-1'), 1, 'and adds no row');
SELECT throws_ok($$SELECT tiktok_capi.tt_enqueue('CSHOP01', '{"event": "Lead"}')$$, '22023', NULL,
    'an event without event_id is refused');
SELECT throws_ok($$SELECT tiktok_capi.tt_enqueue('CNOPE', tiktok_capi.tt_event('Lead', 'L-2'))$$,
    '42704', 'pixel "CNOPE" is not configured', 'enqueueing for an unknown pixel is refused');

-- monitoring and maintenance
SELECT results_eq($$SELECT status, events FROM tiktok_capi.outbox_status$$,
    $$VALUES ('pending'::text, 4::bigint), ('sent', 0), ('failed', 1)$$,
    'outbox_status counts every status');
UPDATE tiktok_capi.outbox SET status = 'failed', last_error = 'test' WHERE event = 'Lead' OR event_id = '4';
UPDATE tiktok_capi.outbox SET status = 'sent', sent_at = now() - interval '30 days' WHERE event_id = '1';
SELECT is(tiktok_capi.tt_requeue_failed(event => 'Lead'), 0::bigint,
          'tt_requeue_failed leaves the event the broken trigger never built (payload {}) failed');
SELECT is(tiktok_capi.tt_requeue_failed(event => 'Purchase'), 1::bigint, 'tt_requeue_failed requeues by event');
SELECT is(tiktok_capi.tt_purge_sent('7 days'), 1::bigint, 'tt_purge_sent drops the payloads of old delivered events');
SELECT results_eq($$SELECT pixel_code, pending, sent FROM tiktok_capi.outbox_pixel_status$$,
    $$VALUES ('CSHOP01'::text, 3::bigint, 0::bigint)$$, 'outbox_pixel_status counts per pixel');

-- more bad data, each order committing with the field dropped and noted
CREATE TABLE public.dated (id bigint, event_time date);
CREATE TABLE public.stamped (id bigint, event_time timestamp);
CREATE TABLE public.json_items (id bigint, items json);
CREATE TABLE public.typed (id text, total text, country text);
CREATE TABLE public.amounts (id bigint, total numeric);
GRANT INSERT ON public.dated, public.stamped, public.json_items, public.typed, public.amounts TO tt_app;
SELECT tiktok_capi.tt_attach(t, 'AddToCart')
FROM unnest(ARRAY['public.dated', 'public.stamped', 'public.json_items', 'public.typed',
                  'public.amounts']::regclass[]) AS t;
SET ROLE tt_app;
SET LOCAL TimeZone = 'America/New_York';
SELECT lives_ok($$INSERT INTO public.dated VALUES (101, '294277-01-01');
                  INSERT INTO public.stamped VALUES (102, '294276-12-31 23:59:59'), (103, '1960-01-01')$$,
    'orders with event times out of timestamptz''s range, or before 1970, commit');
RESET ROLE;
SELECT tiktok_capi.tt_flush();          -- in the session's time zone, as a commit would
SET ROLE tt_app;
RESET TimeZone;
SELECT lives_ok($$INSERT INTO public.json_items VALUES (104, '[{"content_id": "\u0000"}]'),
                      (105, '[{"content_id": "\ud800"}]'), (106, '1e-130000'),
                      (107, '[{"content_id": "1", "quantity": 2.5, "price": 8}]')$$,
    'orders with json items jsonb cannot hold, or a fractional quantity, commit');
SELECT lives_ok($$INSERT INTO public.typed VALUES ('108', 'a' || repeat('é', 20), repeat('é', 12));
                  INSERT INTO public.amounts VALUES (109, 1e20), (110, ('1' || repeat('0', 5000))::numeric)$$,
    'orders with a non-UTF-8-safe quoted value or an absurd amount commit');
SELECT lives_ok($$INSERT INTO public.typed VALUES (repeat('x', 3200), '1', NULL);
                  INSERT INTO public.typed VALUES (repeat('x', 3200), '2', NULL)$$,
    'orders with an id too long for the outbox''s index commit, twice');
RESET ROLE;
SELECT tiktok_capi.tt_flush();
SELECT results_eq(
    $$SELECT event_id, warnings, (payload ->> 'event_time')::bigint = floor(extract(epoch FROM now()))
        FROM tiktok_capi.outbox WHERE event_id IN ('101', '102', '103') ORDER BY event_id$$,
    $$VALUES ('101'::text, ARRAY['event_time dropped: out of the range of timestamp with time zone'], true),
             ('102', ARRAY['event_time is in the future'], true),
             ('103', ARRAY['event_time is before 1970-01-01 00:00:01 UTC'], true)$$,
    'an event_time TikTok cannot take is noted and replaced by the transaction''s start');
SELECT results_eq(
    $$SELECT event_id, warnings, payload #> '{properties,contents}'
        FROM tiktok_capi.outbox WHERE event_id BETWEEN '104' AND '107' ORDER BY event_id$$,
    $$VALUES ('104'::text, ARRAY['contents dropped: not valid as jsonb (unsupported Unicode escape sequence)'], NULL::jsonb),
             ('105', ARRAY['contents dropped: not valid as jsonb (invalid input syntax for type json)'], NULL),
             ('106', ARRAY['contents dropped: not valid as jsonb (value overflows numeric format)'], NULL),
             ('107', ARRAY['contents: quantity must be a whole number'], '[{"price": 8, "content_id": "1"}]')$$,
    'json items jsonb cannot hold are dropped, a fractional quantity alone, noted');
SELECT results_eq(
    $$SELECT event_id, warnings FROM tiktok_capi.outbox WHERE event_id IN ('108', '109', '110') ORDER BY event_id$$,
    $$VALUES ('108'::text, ARRAY['value "a' || repeat('é', 15) || '" is not a number',
                                 'country "' || repeat('é', 8) || '" is not an ISO 3166 alpha-2 code']),
             ('109', ARRAY['value must be less than 1e15']),
             ('110', ARRAY['value must be less than 1e15'])$$,
    'quoted values are cut at a character boundary; absurd amounts are dropped, noted');
SELECT results_eq(
    $$SELECT event_id, status, last_error, payload FROM tiktok_capi.outbox
       WHERE event = 'AddToCart' AND event_id LIKE 'xxx%'$$,
    $$VALUES (repeat('x', 100) || '...' || encode(sha256(convert_to(repeat('x', 3200), 'UTF8')), 'hex'),
              'failed'::text,
              'event_id is longer than 500 bytes (3200); queued under the event_id''s first 100 characters, "..." and the SHA-256 of the whole id',
              '{}'::jsonb)$$,
    'an over-long event_id queues one failed row under a shortened, unique key, saying why');
SELECT is((SELECT count(*)::int FROM tiktok_capi.outbox WHERE event = 'AddToCart'), 11,
    'every one of those orders queued its event');
SELECT ok((SELECT bool_and(array_to_string(warnings, ' ') NOT LIKE '%call me%'
                           AND array_to_string(warnings, ' ') NOT LIKE '%not-an-email%')
             FROM tiktok_capi.outbox), 'no warning repeats an identifier');

SELECT * FROM finish();
ROLLBACK;
