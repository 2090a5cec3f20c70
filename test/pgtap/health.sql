-- tt_health(): one row per check, ok / warn / critical by the
-- tiktok_capi.health_* thresholds, readable by a monitoring role that has
-- no rights on the outbox.  (This database is not the worker's: the
-- pgTAP cluster's worker serves "postgres".)
BEGIN;
SELECT plan(30);

CREATE TEMP VIEW health AS SELECT * FROM tiktok_capi.tt_health();

SELECT is(array_agg("check"), ARRAY['worker', 'lag', 'failures', 'paused_pixels', 'outbox_size', 'triggers', 'warnings', 'pixels'],
          'the eight checks, in order')
  FROM tiktok_capi.tt_health();
SELECT is((SELECT status || ' ' || severity FROM health WHERE "check" = 'worker'), 'critical 2',
          'worker: critical when the worker serves another database');
SELECT matches((SELECT reason FROM health WHERE "check" = 'worker'),
               'not in tiktok_capi.database, which lists postgres',
               'and the reason names the databases delivered');
SELECT is((SELECT status FROM health WHERE "check" NOT IN ('worker', 'pixels') AND status <> 'ok'), NULL,
          'an empty outbox is ok on every other check');
SELECT is((SELECT status || ': ' || reason FROM health WHERE "check" = 'pixels'),
          'warn: no pixel is configured: add one with tt_add_pixel()', 'pixels: none configured warns');

SELECT tiktok_capi.tt_add_pixel('CHEALTH01', 'token');
SELECT tiktok_capi.tt_add_pixel('CHEALTH02', 'token');
INSERT INTO tiktok_capi.outbox (pixel_code, event, event_id, event_time, payload, created_at)
VALUES ('CHEALTH01', 'Purchase', 'old', now(), '{}', now() - interval '10 minutes');

-- lag: 10 minutes is past the default warn (5 min), short of critical (1 h)
SELECT is((SELECT status FROM health WHERE "check" = 'lag'), 'warn', 'lag: a 10-minute-old pending event warns');
SELECT cmp_ok((SELECT value FROM health WHERE "check" = 'lag'), '>=', 600::numeric, 'lag: the value is its age in seconds');
SET LOCAL tiktok_capi.health_lag_critical = '10min';
SELECT is((SELECT status FROM health WHERE "check" = 'lag'), 'critical', 'lag: critical past health_lag_critical');

-- failures: 1 of 3 settled in the last hour failed (33%)
INSERT INTO tiktok_capi.outbox (pixel_code, event, event_id, event_time, payload, status, sent_at, next_attempt_at)
VALUES ('CHEALTH01', 'Purchase', 's1', now(), '{}', 'sent', now(), now()),
       ('CHEALTH01', 'Purchase', 's2', now(), '{}', 'sent', now(), now()),
       ('CHEALTH01', 'Purchase', 'f1', now(), '{}', 'failed', NULL, now()),
       ('CHEALTH01', 'Purchase', 'f0', now(), '{}', 'failed', NULL, now() - interval '2 hours');
SELECT is((SELECT value FROM health WHERE "check" = 'failures'), 33.33::numeric,
          'failures: the last hour''s share, an older failure left out');
SELECT is((SELECT status FROM health WHERE "check" = 'failures'), 'critical', 'failures: 33% is critical (default 10%)');
SET LOCAL tiktok_capi.health_failure_critical = 50;
SELECT is((SELECT status FROM health WHERE "check" = 'failures'), 'warn', 'failures: warn under health_failure_critical');

-- paused pixels
UPDATE tiktok_capi.pixels SET paused_until = now() + interval '1 hour' WHERE pixel_code = 'CHEALTH02';
SELECT is((SELECT status FROM health WHERE "check" = 'paused_pixels'), 'critical', 'a paused pixel is critical');
SELECT matches((SELECT reason FROM health WHERE "check" = 'paused_pixels'), 'CHEALTH02', 'and is named');

-- outbox size
SET LOCAL tiktok_capi.health_outbox_warn = '8kB';
SELECT is((SELECT status FROM health WHERE "check" = 'outbox_size'), 'warn', 'outbox_size: warn past health_outbox_warn');
SELECT cmp_ok((SELECT value FROM health WHERE "check" = 'outbox_size'), '=',
              pg_total_relation_size('tiktok_capi.outbox')::numeric, 'outbox_size: the value is in bytes');

-- triggers: a hand-written trigger that cannot work is critical, and named
CREATE TABLE public.h_orders (id bigint, total numeric);
CREATE TRIGGER h_capture AFTER INSERT ON public.h_orders FOR EACH ROW
    EXECUTE FUNCTION tiktok_capi.tt_capture('Purchase', 'value=totl', 'pixel=CHEALTH01');
SELECT is((SELECT status FROM health WHERE "check" = 'triggers'), 'critical', 'triggers: a broken trigger is critical');
SELECT matches((SELECT reason FROM health WHERE "check" = 'triggers'), 'h_capture on public.h_orders: .*"totl"',
               'and the reason names the trigger, its table and the column');
DROP TRIGGER h_capture ON public.h_orders;
SELECT is((SELECT status FROM health WHERE "check" = 'triggers'), 'ok', 'triggers: ok once it is gone');

-- warnings: 1 of the last hour's 5 events lost a field (20%)
INSERT INTO tiktok_capi.outbox (pixel_code, event, event_id, event_time, payload, warnings)
VALUES ('CHEALTH01', 'Purchase', 'w1', now(), '{}', ARRAY['currency missing: test']);
SELECT is((SELECT status || ' ' || value FROM health WHERE "check" = 'warnings'), 'warn 20.00',
          'warnings: 20% of the last hour''s events warns (default 5%)');
SET LOCAL tiktok_capi.health_warnings_critical = 20;
SELECT is((SELECT status FROM health WHERE "check" = 'warnings'), 'critical', 'warnings: critical past health_warnings_critical');

-- pixels: a live pixel still on Test Events, a disabled one with events waiting
SELECT is((SELECT status FROM health WHERE "check" = 'pixels'), 'ok', 'pixels: ok once they are configured and live');
UPDATE tiktok_capi.pixels SET test_event_code = 'TEST42' WHERE pixel_code = 'CHEALTH02';
UPDATE tiktok_capi.pixels SET enabled = false WHERE pixel_code = 'CHEALTH01';
SELECT is((SELECT status || ' ' || value FROM health WHERE "check" = 'pixels'), 'warn 2',
          'pixels: a live pixel with a test_event_code and a disabled one with pending events warn');
SELECT matches((SELECT reason FROM health WHERE "check" = 'pixels'),
               'pixel CHEALTH01 is disabled and 2 of its events wait.*pixel CHEALTH02 sends to Test Events only',
               'and the reason names each, with the fix');

-- the worker's URL pause (a wrong api_url): none here
SELECT is((SELECT count(*) FROM tiktok_capi.tt_worker_pause()), 0::bigint,
          'tt_worker_pause(): no row while delivery is not paused');
SELECT ok(NOT has_function_privilege('public', 'tiktok_capi.tt_worker_pause()', 'EXECUTE'),
          'PUBLIC cannot call tt_worker_pause');

-- the databases delivered, and a shortage of worker slots: none here
SELECT is(tiktok_capi.tt_listed_databases(), ARRAY['postgres'],
          'tt_listed_databases(): the databases of tiktok_capi.database');
SELECT is(tiktok_capi.tt_worker_shortage(), NULL,
          'tt_worker_shortage(): NULL while no worker is missing for want of a slot');
SELECT ok(NOT has_function_privilege('public', 'tiktok_capi.tt_worker_shortage()', 'EXECUTE'),
          'PUBLIC cannot call tt_worker_shortage');

-- a monitoring role: EXECUTE granted, no rights on the tables
SELECT ok(NOT has_function_privilege('public', 'tiktok_capi.tt_health()', 'EXECUTE'), 'PUBLIC cannot call tt_health');
CREATE ROLE tt_health_reader NOLOGIN;
GRANT EXECUTE ON FUNCTION tiktok_capi.tt_health() TO tt_health_reader;
SET LOCAL ROLE tt_health_reader;
SELECT is((SELECT count(*) FROM tiktok_capi.tt_health()), 8::bigint,
          'a role granted EXECUTE, with no rights on the outbox, gets every check');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
