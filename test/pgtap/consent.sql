-- Consent: without it no identifier leaves the database.  A consent column
-- (boolean, or text) decides per order; tiktok_capi.consent_denied says what
-- is queued without consent (anonymous | skip), tiktok_capi.consent_unknown
-- how NULL or unrecognised consent is taken (denied | granted).  A change of
-- consent reaches an event still pending; sent and failed ones stay as they are.
BEGIN;
SELECT plan(79);

SELECT tiktok_capi.tt_add_pixel('CSHOP01', 'token-that-must-stay-secret');

-- boolean consent under its default column name, every identifier column
CREATE TABLE public.orders (
    id integer PRIMARY KEY,
    email text,
    phone text,
    customer_id text,
    ttclid text,
    ttp text,
    ip inet,
    user_agent text,
    total numeric(12, 2),
    currency text DEFAULT 'USD',
    limited_data_use boolean,
    consent boolean);
-- text consent under another name, mapped
CREATE TABLE public.signups (
    id integer PRIMARY KEY,
    email text,
    phone text,
    ttclid text,
    tracking_consent text);
-- no consent column at all
CREATE TABLE public.leads (id integer PRIMARY KEY, email text, phone text, ttclid text, ip inet);
-- the other text types
CREATE TABLE public.contacts (id integer PRIMARY KEY, email text, consent varchar(12));
CREATE TABLE public.bookings (id integer PRIMARY KEY, email text, consent char(8));
-- a consent column of a type that cannot say yes or no
CREATE TABLE public.visits (id integer PRIMARY KEY, email text, consent timestamptz);
-- a hand-made trigger whose consent mapping names no column
CREATE TABLE public.downloads (id integer PRIMARY KEY, email text);

CREATE ROLE tt_app NOLOGIN;
GRANT USAGE ON SCHEMA public TO tt_app;
GRANT SELECT, INSERT, UPDATE ON public.orders, public.signups, public.leads TO tt_app;

-- the identifier keys of an event's user object, sorted; NULL when no event is queued
CREATE FUNCTION pg_temp.ids(ev text, eid text) RETURNS text[] LANGUAGE sql AS $f$
    SELECT (SELECT coalesce(array_agg(k ORDER BY k), '{}')
              FROM jsonb_object_keys(coalesce(o.payload -> 'user', '{}')) AS k
             WHERE k IN ('email', 'phone', 'external_id', 'ip', 'user_agent', 'ttp', 'ttclid'))
      FROM tiktok_capi.outbox o WHERE o.event = ev AND o.event_id = eid
$f$;
CREATE FUNCTION pg_temp.warnings(ev text, eid text) RETURNS text[] LANGUAGE sql AS $f$
    SELECT warnings FROM tiktok_capi.outbox WHERE event = ev AND event_id = eid
$f$;
CREATE FUNCTION pg_temp.queued(ev text, eid text) RETURNS integer LANGUAGE sql AS $f$
    SELECT count(*)::integer FROM tiktok_capi.outbox WHERE event = ev AND event_id = eid
$f$;
-- an order with every identifier, and its consent
CREATE FUNCTION pg_temp.order_values(n integer) RETURNS TABLE (
        id integer, email text, phone text, customer_id text, ttclid text, ttp text, ip inet,
        user_agent text, total numeric)
    LANGUAGE sql AS $f$
    SELECT n, 'buyer' || n || '@example.com', '+1415555' || lpad(n::text, 4, '0'), 'CUST-' || n,
           'E.C.P.' || n, 'ttp-' || n, '203.0.113.7'::inet, 'Mozilla/5.0', (10 + n)::numeric
$f$;

-- every identifier, as the builder writes them (keys sorted)
CREATE TEMP TABLE every_id AS
SELECT '{email,external_id,ip,phone,ttclid,ttp,user_agent}'::text[] AS orders,
       '{email,phone,ttclid}'::text[] AS signups;

-- the settings: two documented choices each, superuser-only
SELECT tiktok_capi.tt_flush();
SELECT results_eq(
    $$SELECT name, context, boot_val, enumvals FROM pg_settings
       WHERE name IN ('tiktok_capi.consent_denied', 'tiktok_capi.consent_unknown') ORDER BY name$$,
    $$VALUES ('tiktok_capi.consent_denied'::text, 'superuser'::text, 'anonymous'::text, '{anonymous,skip}'::text[]),
             ('tiktok_capi.consent_unknown', 'superuser', 'denied', '{denied,granted}')$$,
    'consent_denied (anonymous | skip) and consent_unknown (denied | granted) are superuser settings');
SELECT throws_ok($$SET tiktok_capi.consent_denied = 'forget'$$, '22023', NULL,
    'consent_denied takes only its documented values');
SET ROLE tt_app;
SELECT throws_ok($$SET tiktok_capi.consent_denied = 'anonymous'$$, '42501', NULL,
    'the application role cannot SET consent_denied');
SELECT throws_ok($$SET tiktok_capi.consent_unknown = 'granted'$$, '42501', NULL,
    'the application role cannot SET consent_unknown');
SELECT throws_ok($$SELECT set_config('tiktok_capi.consent_unknown', 'granted', true)$$, '42501', NULL,
    'nor loosen it with set_config');
RESET ROLE;
SELECT tiktok_capi.tt_flush();
SELECT is(current_setting('tiktok_capi.consent_unknown'), 'denied', 'so unknown consent is still denied');

-- attaching: a consent column must be able to say yes or no
SELECT throws_ok($$SELECT tiktok_capi.tt_attach('visits', 'ViewContent')$$,
    '22023', 'column "consent" of type timestamp with time zone cannot feed consent',
    'tt_attach refuses a consent column of another type under the default name');
SELECT throws_ok($$SELECT tiktok_capi.tt_attach('orders', 'Purchase', '{consent=total}')$$,
    '22023', 'column "total" of type numeric cannot feed consent',
    'tt_attach refuses a mapped consent column of another type');
SELECT throws_ok($$SELECT tiktok_capi.tt_attach('signups', 'CompleteRegistration', '{consent=consnet}')$$,
    '22023', 'column "consnet" does not exist (mapping consent=consnet)',
    'tt_attach refuses a mistyped consent column');
SELECT lives_ok($$SELECT tiktok_capi.tt_attach('visits', 'ViewContent', '{consent=}')$$,
    'consent= turns the default off');
SELECT lives_ok($$SELECT tiktok_capi.tt_attach('orders', 'Purchase')$$,
    'a boolean column named consent is mapped by default');
SELECT lives_ok($$SELECT tiktok_capi.tt_attach('signups', 'CompleteRegistration', '{consent=tracking_consent}')$$,
    'a text column is mapped with consent=column');
SELECT lives_ok($$SELECT tiktok_capi.tt_attach('contacts', 'Contact')$$, 'a varchar consent column attaches');
SELECT lives_ok($$SELECT tiktok_capi.tt_attach('bookings', 'Schedule')$$, 'a char(n) consent column attaches');
SELECT lives_ok($$SELECT tiktok_capi.tt_attach('leads', 'Lead')$$, 'a table without consent attaches as before');

-- boolean consent, the defaults: anonymous, unknown taken as denied
SET ROLE tt_app;
INSERT INTO public.orders (id, email, phone, customer_id, ttclid, ttp, ip, user_agent, total, consent)
SELECT v.*, c FROM (VALUES (1, true), (2, false), (3, NULL)) AS t(n, c), pg_temp.order_values(n) v;
RESET ROLE;
SELECT tiktok_capi.tt_flush();
INSERT INTO public.visits VALUES (1, 'visitor@example.com', now());
SELECT tiktok_capi.tt_flush();
SELECT is(pg_temp.ids('Purchase', '1'), (SELECT orders FROM every_id), 'consent true: every identifier is sent');
SELECT tiktok_capi.tt_flush();
SELECT is(pg_temp.warnings('Purchase', '1'), NULL, 'with no note');
SELECT tiktok_capi.tt_flush();
SELECT is((SELECT payload - 'event_time' FROM tiktok_capi.outbox WHERE event = 'Purchase' AND event_id = '2'),
    '{"event": "Purchase", "event_id": "2", "properties": {"value": 12.00, "currency": "USD", "order_id": "2"}}'::jsonb,
    'consent false: the event is queued with its value and no identifier at all');
SELECT tiktok_capi.tt_flush();
SELECT is(pg_temp.warnings('Purchase', '2'), ARRAY['consent denied: identifiers withheld'],
    'and one note says why');
SELECT tiktok_capi.tt_flush();
SELECT is(pg_temp.ids('Purchase', '3'), '{}'::text[], 'consent NULL under consent_unknown = denied: no identifier');
SELECT tiktok_capi.tt_flush();
SELECT is(pg_temp.warnings('Purchase', '3'), ARRAY['consent unknown: identifiers withheld'],
    'and the note says consent was unknown');
SELECT tiktok_capi.tt_flush();
SELECT is(pg_temp.ids('ViewContent', '1'), '{email}'::text[], 'consent= turned off: consent is granted');

SELECT tiktok_capi.tt_flush();
SET tiktok_capi.consent_unknown = 'granted';
SET ROLE tt_app;
INSERT INTO public.orders (id, email, phone, customer_id, ttclid, ttp, ip, user_agent, total, consent)
SELECT v.*, NULL FROM pg_temp.order_values(4) v;
RESET ROLE;
SELECT tiktok_capi.tt_flush();
RESET tiktok_capi.consent_unknown;
SELECT tiktok_capi.tt_flush();
SELECT is(pg_temp.ids('Purchase', '4'), (SELECT orders FROM every_id),
    'consent NULL under consent_unknown = granted: every identifier is sent');
SELECT tiktok_capi.tt_flush();
SELECT is(pg_temp.warnings('Purchase', '4'), NULL, 'with no note');

-- limited_data_use: a boolean column reaches the event's top level as a JSON boolean
SET ROLE tt_app;
INSERT INTO public.orders (id, email, phone, customer_id, ttclid, ttp, ip, user_agent, total, limited_data_use, consent)
SELECT v.*, l, c FROM (VALUES (5, true, true), (6, false, true), (7, true, false)) AS t(n, l, c),
                      pg_temp.order_values(n) v;
RESET ROLE;
SELECT tiktok_capi.tt_flush();
SELECT results_eq(
    $$SELECT event_id, jsonb_typeof(payload -> 'limited_data_use'), payload -> 'limited_data_use',
             payload #> '{properties,limited_data_use}'
        FROM tiktok_capi.outbox WHERE event = 'Purchase' AND event_id IN ('1', '5', '6', '7') ORDER BY event_id$$,
    $$VALUES ('1'::text, NULL::text, NULL::jsonb, NULL::jsonb), ('5', 'boolean', 'true', NULL),
             ('6', 'boolean', 'false', NULL), ('7', 'boolean', 'true', NULL)$$,
    'limited_data_use is a top-level JSON boolean, left out when NULL, kept without consent');

-- text consent: what boolean input takes, and granted/denied, in any case, trimmed
CREATE TEMP TABLE text_cases (n integer, v text, granted boolean);
INSERT INTO text_cases VALUES
    (101, 'true', true), (102, 'false', false), (103, 'yes', true), (104, 'no', false),
    (105, 'on', true), (106, 'off', false), (107, '1', true), (108, '0', false),
    (109, 't', true), (110, 'f', false), (111, 'y', true), (112, 'n', false),
    (113, 'granted', true), (114, 'denied', false), (115, ' GRANTED ', true), (116, 'Denied', false),
    (117, 'TRUE', true), (118, E'\tNo\n', false), (119, 'Yes', true), (120, 'OFF', false),
    (121, 'tru', true), (122, 'of', false);
GRANT SELECT ON text_cases TO tt_app;
SET ROLE tt_app;
INSERT INTO public.signups (id, email, phone, ttclid, tracking_consent)
SELECT n, 'reader' || n || '@example.com', '+14155550' || n, 'E.C.P.' || n, v FROM text_cases;
RESET ROLE;
SELECT tiktok_capi.tt_flush();
SELECT is(pg_temp.ids('CompleteRegistration', n::text),
          CASE WHEN granted THEN (SELECT signups FROM every_id) ELSE '{}' END,
          format('text consent %s counts as %s', to_json(v), CASE WHEN granted THEN 'granted' ELSE 'denied' END))
  FROM text_cases ORDER BY n;
SELECT tiktok_capi.tt_flush();
SELECT ok((SELECT bool_and((v::boolean) = granted) FROM text_cases WHERE btrim(v) !~* '^(granted|denied)$'),
    'the boolean spellings mean what PostgreSQL''s boolean input says');
SELECT tiktok_capi.tt_flush();
SELECT is((SELECT count(*)::integer FROM text_cases c
             WHERE pg_temp.warnings('CompleteRegistration', c.n::text) IS NOT DISTINCT FROM
                   CASE WHEN c.granted THEN NULL ELSE ARRAY['consent denied: identifiers withheld'] END),
    (SELECT count(*)::integer FROM text_cases),
    'each denied one carries the one note, and the granted ones none');

-- unknown text: noted, then taken as consent_unknown says
SET ROLE tt_app;
INSERT INTO public.signups (id, email, phone, ttclid, tracking_consent)
VALUES (130, 'x130@example.com', '+14155550130', 'E.C.P.130', 'maybe'),
       (131, 'x131@example.com', '+14155550131', 'E.C.P.131', ''),
       (132, 'x132@example.com', '+14155550132', 'E.C.P.132', 'grant');
RESET ROLE;
SELECT tiktok_capi.tt_flush();
SELECT results_eq(
    $$SELECT event_id, pg_temp.ids(event, event_id), warnings FROM tiktok_capi.outbox
       WHERE event = 'CompleteRegistration' AND event_id IN ('130', '131', '132') ORDER BY event_id$$,
    $$VALUES ('130'::text, '{}'::text[], ARRAY['consent "maybe" is not granted, denied or a boolean',
                                               'consent unknown: identifiers withheld']),
             ('131', '{}', ARRAY['consent "" is not granted, denied or a boolean',
                                 'consent unknown: identifiers withheld']),
             ('132', '{}', ARRAY['consent "grant" is not granted, denied or a boolean',
                                 'consent unknown: identifiers withheld'])$$,
    'unrecognised text is unknown consent, noted, and denied by default');
-- the note quotes at most 32 bytes of the value, cut between characters
INSERT INTO public.signups (id, email, tracking_consent)
SELECT 136, 'x136@example.com', 'peut-être plus tard, quand jj’aurai réfléchi'
 WHERE current_setting('server_encoding') = 'UTF8';
SELECT tiktok_capi.tt_flush();
SELECT CASE WHEN current_setting('server_encoding') = 'UTF8'
    THEN is(pg_temp.warnings('CompleteRegistration', '136'),
            ARRAY['consent "peut-être plus tard, quand jj" is not granted, denied or a boolean',
                  'consent unknown: identifiers withheld'],
            'a long value is quoted in the note up to a whole character')
    ELSE skip('needs a UTF8 database', 1) END;
SELECT tiktok_capi.tt_flush();
SET tiktok_capi.consent_unknown = 'granted';
SET ROLE tt_app;
INSERT INTO public.signups (id, email, phone, ttclid, tracking_consent)
VALUES (133, 'x133@example.com', '+14155550133', 'E.C.P.133', 'perhaps'),
       (134, 'x134@example.com', '+14155550134', 'E.C.P.134', NULL);
RESET ROLE;
SELECT tiktok_capi.tt_flush();
RESET tiktok_capi.consent_unknown;
SELECT tiktok_capi.tt_flush();
SELECT results_eq(
    $$SELECT event_id, pg_temp.ids(event, event_id), warnings FROM tiktok_capi.outbox
       WHERE event = 'CompleteRegistration' AND event_id IN ('133', '134') ORDER BY event_id$$,
    $$VALUES ('133'::text, (SELECT signups FROM every_id), ARRAY['consent "perhaps" is not granted, denied or a boolean']),
             ('134', (SELECT signups FROM every_id), NULL)$$,
    'under consent_unknown = granted, unknown consent sends identifiers (unrecognised text still noted)');

-- varchar and char(n)
INSERT INTO public.contacts VALUES (1, 'c1@example.com', ' Granted'), (2, 'c2@example.com', 'No');
INSERT INTO public.bookings VALUES (1, 'b1@example.com', 'yes'), (2, 'b2@example.com', 'denied');
SELECT tiktok_capi.tt_flush();
SELECT results_eq(
    $$SELECT event, event_id, pg_temp.ids(event, event_id) FROM tiktok_capi.outbox
       WHERE event IN ('Contact', 'Schedule') ORDER BY event, event_id$$,
    $$VALUES ('Contact'::text, '1'::text, '{email}'::text[]), ('Contact', '2', '{}'),
             ('Schedule', '1', '{email}'), ('Schedule', '2', '{}')$$,
    'varchar and padded char(n) consent columns are read as text');

-- consent_denied = skip: nothing is queued without consent
SELECT tiktok_capi.tt_flush();
SET tiktok_capi.consent_denied = 'skip';
SET ROLE tt_app;
INSERT INTO public.orders (id, email, phone, customer_id, ttclid, ttp, ip, user_agent, total, consent)
SELECT v.*, c FROM (VALUES (30, false), (31, NULL), (32, true)) AS t(n, c), pg_temp.order_values(n) v;
INSERT INTO public.signups (id, email, tracking_consent) VALUES (135, 'x135@example.com', 'denied');
RESET ROLE;
SELECT tiktok_capi.tt_flush();
SELECT is(pg_temp.queued('Purchase', '30'), 0, 'skip: an order with consent false queues no event');
SELECT tiktok_capi.tt_flush();
SELECT is(pg_temp.queued('Purchase', '31'), 0, 'skip: nor one with unknown consent, taken as denied');
SELECT tiktok_capi.tt_flush();
SELECT is(pg_temp.queued('CompleteRegistration', '135'), 0, 'skip: nor one whose text says denied');
SELECT tiktok_capi.tt_flush();
SELECT is(pg_temp.ids('Purchase', '32'), (SELECT orders FROM every_id), 'skip: an order with consent is sent whole');
SELECT tiktok_capi.tt_flush();
SET tiktok_capi.consent_unknown = 'granted';
SET ROLE tt_app;
INSERT INTO public.orders (id, email, total, consent) VALUES (33, 'buyer33@example.com', 5, NULL);
RESET ROLE;
SELECT tiktok_capi.tt_flush();
RESET tiktok_capi.consent_unknown;
SELECT tiktok_capi.tt_flush();
SELECT is(pg_temp.ids('Purchase', '33'), '{email}'::text[], 'skip with consent_unknown = granted: unknown consent is sent');
SELECT tiktok_capi.tt_flush();
RESET tiktok_capi.consent_denied;

-- a table without a consent column sends identifiers as before, whatever the settings
SELECT tiktok_capi.tt_flush();
SET tiktok_capi.consent_denied = 'skip';
SET ROLE tt_app;
INSERT INTO public.leads VALUES (1, 'lead@example.com', '+12133734253', 'E.C.P.lead', '198.51.100.4');
RESET ROLE;
SELECT tiktok_capi.tt_flush();
RESET tiktok_capi.consent_denied;
SELECT tiktok_capi.tt_flush();
SELECT is(pg_temp.ids('Lead', '1'), '{email,ip,phone,ttclid}'::text[],
    'no consent column: consent is granted, identifiers are sent even under skip');
SELECT tiktok_capi.tt_flush();
SELECT is((SELECT payload #>> '{user,email}' FROM tiktok_capi.outbox WHERE event = 'Lead'),
    tiktok_capi.tt_hash_email('lead@example.com'), 'hashed as before');
SELECT tiktok_capi.tt_flush();
SELECT is(pg_temp.warnings('Lead', '1'), NULL, 'with no note');

-- a hand-made trigger whose consent column cannot be read: consent unknown, never granted
CREATE TRIGGER downloads_capture AFTER INSERT ON public.downloads FOR EACH ROW
    EXECUTE FUNCTION tiktok_capi.tt_capture('Download', 'consent=consnet');
SELECT lives_ok($$INSERT INTO public.downloads VALUES (1, 'dl@example.com')$$,
    'an order commits under a mistyped consent mapping');
SELECT tiktok_capi.tt_flush();
SELECT is(pg_temp.ids('Download', '1'), '{}'::text[], 'its identifiers are withheld');
SELECT tiktok_capi.tt_flush();
SELECT alike((SELECT status || ': ' || last_error FROM tiktok_capi.outbox WHERE event = 'Download' AND event_id = '1'),
    'failed: trigger "downloads_capture" on public.downloads cannot work: column "consnet" does not exist (mapping consent=consnet)%',
    'and it is queued failed, never sent on a guess, saying why');

-- a change of consent reaches the pending event: granted -> denied (anonymous)
SET ROLE tt_app;
INSERT INTO public.orders (id, email, phone, customer_id, ttclid, ttp, ip, user_agent, total, consent)
SELECT v.*, c FROM (VALUES (40, true), (41, false), (42, true), (43, true)) AS t(n, c), pg_temp.order_values(n) v;
RESET ROLE;
SELECT tiktok_capi.tt_flush();
-- as if queued long before this transaction
UPDATE tiktok_capi.outbox SET event_time = to_timestamp(1700000000),
       payload = jsonb_set(payload, '{event_time}', '1700000000')
 WHERE event = 'Purchase' AND event_id = '40';
CREATE TEMP TABLE before_40 AS SELECT id FROM tiktok_capi.outbox WHERE event = 'Purchase' AND event_id = '40';
SET ROLE tt_app;
UPDATE public.orders SET consent = false WHERE id = 40;
RESET ROLE;
SELECT tiktok_capi.tt_flush();
SELECT is(pg_temp.ids('Purchase', '40'), '{}'::text[], 'granted -> denied: the pending event loses its identifiers');
SELECT tiktok_capi.tt_flush();
SELECT results_eq(
    $$SELECT id, status, warnings, payload -> 'event_time', event_time, payload #> '{properties,value}'
        FROM tiktok_capi.outbox WHERE event = 'Purchase' AND event_id = '40'$$,
    $$SELECT id, 'pending'::text, ARRAY['consent denied: identifiers withheld'], '1700000000'::jsonb,
             to_timestamp(1700000000), '50.00'::jsonb FROM before_40$$,
    'in the same pending row, noted, with its queued event_time and its value');

-- denied -> granted (anonymous)
SET ROLE tt_app;
UPDATE public.orders SET consent = true WHERE id = 41;
RESET ROLE;
SELECT tiktok_capi.tt_flush();
SELECT is(pg_temp.ids('Purchase', '41'), (SELECT orders FROM every_id),
    'denied -> granted: the pending event gets its identifiers back');
SELECT tiktok_capi.tt_flush();
SELECT is(pg_temp.warnings('Purchase', '41'), NULL, 'and loses the note');
SELECT tiktok_capi.tt_flush();
SELECT is((SELECT payload #>> '{user,email}' FROM tiktok_capi.outbox WHERE event = 'Purchase' AND event_id = '41'),
    tiktok_capi.tt_hash_email('buyer41@example.com'), 'hashed');

-- while pending, any change to the order reaches the event
SET ROLE tt_app;
UPDATE public.orders SET ttclid = 'later' WHERE id = 42;
RESET ROLE;
SELECT tiktok_capi.tt_flush();
SELECT is((SELECT payload #>> '{user,ttclid}' FROM tiktok_capi.outbox WHERE event = 'Purchase' AND event_id = '42'),
    'later', 'an update that does not change consent rebuilds the pending event too');

-- text: granted -> denied
SET ROLE tt_app;
UPDATE public.signups SET tracking_consent = 'no' WHERE id = 113;
RESET ROLE;
SELECT tiktok_capi.tt_flush();
SELECT is(pg_temp.ids('CompleteRegistration', '113'), '{}'::text[],
    'text granted -> no: the pending event loses its identifiers');

-- skip: granted -> denied withdraws the pending event; denied -> granted queues it
SELECT tiktok_capi.tt_flush();
SET tiktok_capi.consent_denied = 'skip';
SET ROLE tt_app;
UPDATE public.orders SET consent = false WHERE id = 43;
INSERT INTO public.orders (id, email, phone, customer_id, ttclid, ttp, ip, user_agent, total, consent)
SELECT v.*, false FROM pg_temp.order_values(50) v;
RESET ROLE;
SELECT tiktok_capi.tt_flush();
SELECT is(pg_temp.queued('Purchase', '43'), 0, 'skip, granted -> denied: the pending event is withdrawn');
SELECT tiktok_capi.tt_flush();
SELECT is(pg_temp.queued('Purchase', '50'), 0, 'skip: a denied order queued nothing');
SET ROLE tt_app;
UPDATE public.orders SET total = 99 WHERE id = 50;
RESET ROLE;
SELECT tiktok_capi.tt_flush();
SELECT is(pg_temp.queued('Purchase', '50'), 0, 'skip: an update that leaves it denied queues nothing');
SET ROLE tt_app;
UPDATE public.orders SET consent = true WHERE id = 50;
RESET ROLE;
SELECT tiktok_capi.tt_flush();
SELECT is(pg_temp.ids('Purchase', '50'), (SELECT orders FROM every_id),
    'skip -> granted: the event is queued, with every identifier');
SELECT tiktok_capi.tt_flush();
SELECT results_eq(
    $$SELECT status, warnings, payload #> '{properties,value}' FROM tiktok_capi.outbox
       WHERE event = 'Purchase' AND event_id = '50'$$,
    $$VALUES ('pending'::text, NULL::text[], '99.00'::jsonb)$$,
    'pending, without a note, built from the order as it is now');
SET ROLE tt_app;
UPDATE public.orders SET consent = false WHERE id = 41;
RESET ROLE;
SELECT tiktok_capi.tt_flush();
SELECT is(pg_temp.queued('Purchase', '41'), 0, 'skip: a pending event queued under anonymous is withdrawn too');
SELECT tiktok_capi.tt_flush();
RESET tiktok_capi.consent_denied;

-- sent and failed events are never touched
SET ROLE tt_app;
INSERT INTO public.orders (id, email, phone, customer_id, ttclid, ttp, ip, user_agent, total, consent)
SELECT v.*, true FROM (VALUES (60), (61), (62)) AS t(n), pg_temp.order_values(n) v;
RESET ROLE;
SELECT tiktok_capi.tt_flush();
UPDATE tiktok_capi.outbox SET status = 'sent', sent_at = now(), request_id = 'r-60'
 WHERE event = 'Purchase' AND event_id IN ('60', '61');
UPDATE tiktok_capi.outbox SET status = 'failed', last_error = 'test'
 WHERE event = 'Purchase' AND event_id = '62';
CREATE TEMP TABLE before_sent AS
SELECT id, status, payload, warnings FROM tiktok_capi.outbox WHERE event = 'Purchase' AND event_id IN ('60', '61', '62');
SET ROLE tt_app;
UPDATE public.orders SET consent = false WHERE id IN (60, 62);
RESET ROLE;
SELECT tiktok_capi.tt_flush();
SET tiktok_capi.consent_denied = 'skip';
SET ROLE tt_app;
UPDATE public.orders SET consent = false WHERE id = 61;
RESET ROLE;
SELECT tiktok_capi.tt_flush();
RESET tiktok_capi.consent_denied;
SELECT tiktok_capi.tt_flush();
SELECT set_eq(
    $$SELECT id, status, payload, warnings FROM tiktok_capi.outbox WHERE event = 'Purchase' AND event_id IN ('60', '61', '62')$$,
    $$SELECT * FROM before_sent$$,
    'withdrawing consent leaves sent and failed events as they were, under anonymous and under skip');
SELECT tiktok_capi.tt_flush();
SELECT is(pg_temp.ids('Purchase', '60'), (SELECT orders FROM every_id), 'a sent event keeps what it was sent with');

SELECT * FROM finish();
ROLLBACK;
