-- Who may do what: every cell of the matrix of roles (PUBLIC, the shop's
-- application role, a monitoring role granted the views, the owner) and
-- actions (read tokens, read the outbox, read the monitoring views,
-- configure pixels, queue, requeue, purge, wake the worker, reset the
-- delivery counters, attach the trigger, backfill, change the worker's settings).
BEGIN;
SELECT plan(97);

CREATE ROLE tt_sec_app NOLOGIN;          -- inserts orders, nothing else
CREATE ROLE tt_sec_reader NOLOGIN;       -- monitoring
GRANT SELECT ON tiktok_capi.outbox_status, tiktok_capi.outbox_pixel_status TO tt_sec_reader;
-- the counters: the view and the function under it, as README's Monitoring says
GRANT SELECT ON tiktok_capi.delivery_stats TO tt_sec_reader;
GRANT EXECUTE ON FUNCTION tiktok_capi.tt_delivery_stats() TO tt_sec_reader;

CREATE TEMP TABLE roles (role name);
INSERT INTO roles VALUES ('public'), ('tt_sec_app'), ('tt_sec_reader');

-- tables: no ordinary role reads tokens or payloads, or writes either table
SELECT ok(NOT has_table_privilege(CASE WHEN role = 'public' THEN 'tt_sec_app' ELSE role END,
                                  'tiktok_capi.' || t, priv),
          role || ' cannot ' || priv || ' tiktok_capi.' || t)
  FROM roles, (VALUES ('pixels'), ('outbox'), ('backfills')) AS tables(t),
       (VALUES ('SELECT'), ('INSERT'), ('UPDATE'), ('DELETE')) AS privs(priv)
 WHERE role <> 'public';
SELECT ok(NOT EXISTS (SELECT 1 FROM information_schema.role_table_grants
                       WHERE table_schema = 'tiktok_capi' AND grantee = 'PUBLIC'
                         AND table_name IN ('pixels', 'outbox', 'backfills', 'backfill_progress')),
          'PUBLIC holds no privilege on pixels, outbox, backfills or backfill_progress');
SELECT ok(NOT has_column_privilege('tt_sec_reader', 'tiktok_capi.pixels', 'access_token', 'SELECT'),
          'the monitoring role cannot read access_token');

-- the monitoring views: the reader only
SELECT ok(has_table_privilege('tt_sec_reader', 'tiktok_capi.' || v, 'SELECT'),
          'the monitoring role reads ' || v)
  FROM (VALUES ('outbox_status'), ('outbox_pixel_status'), ('delivery_stats')) AS views(v);
SELECT ok(NOT has_table_privilege('tt_sec_app', 'tiktok_capi.' || v, 'SELECT'),
          'the application role cannot read ' || v)
  FROM (VALUES ('outbox_status'), ('outbox_pixel_status'), ('backfill_progress'), ('delivery_stats')) AS views(v);
SELECT ok(NOT EXISTS (SELECT 1 FROM information_schema.columns
                       WHERE table_schema = 'tiktok_capi' AND table_name = v
                         AND column_name IN ('access_token', 'payload')),
          v || ' shows no token and no payload')
  FROM (VALUES ('outbox_status'), ('outbox_pixel_status'), ('delivery_stats')) AS views(v);
SELECT ok(NOT EXISTS (SELECT 1 FROM information_schema.role_table_grants
                       WHERE table_schema = 'tiktok_capi' AND grantee = 'PUBLIC'
                         AND table_name = 'delivery_stats')
          AND NOT has_function_privilege('tt_sec_app', 'tiktok_capi.tt_delivery_stats()', 'EXECUTE'),
          'PUBLIC holds no privilege on delivery_stats or tt_delivery_stats()');

-- functions that configure, queue or change events: the owner only
SELECT ok(NOT has_function_privilege(role, f, 'EXECUTE'),
          role || ' cannot execute ' || f)
  FROM (VALUES ('tt_sec_app'), ('tt_sec_reader')) AS r(role),
       (VALUES ('tiktok_capi.tt_add_pixel(text, text, text, text)'),
               ('tiktok_capi.tt_update_pixel(text, text, text, boolean, text)'),
               ('tiktok_capi.tt_require_web_pixel(text, text)'),
               ('tiktok_capi.tt_reload_trigger_configs()'),
               ('tiktok_capi.tt_enqueue(text, jsonb)'),
               ('tiktok_capi.tt_requeue_failed(text, text, text, boolean)'),
               ('tiktok_capi.tt_purge_sent(interval)'),
               ('tiktok_capi.tt_wake_worker()'),
               ('tiktok_capi.tt_stats_reset()'),
               ('tiktok_capi.tt_attach(regclass, text, text[], text, text, name)'),
               ('tiktok_capi.tt_capture()'),
               ('tiktok_capi.tt_backfill(regclass, timestamptz, timestamptz, integer)'),
               ('tiktok_capi.tt_backfill_in_slices(regclass, timestamptz, timestamptz, integer, bigint)'),
               ('tiktok_capi.tt_backfill_run(regclass, timestamptz, timestamptz, integer, boolean, bigint)'),
               ('tiktok_capi.tt_backfill_slice(regclass, timestamptz, timestamptz, bigint, bigint, integer)')) AS fs(f);

-- and the owner can do each of those things
SELECT lives_ok($$SELECT tiktok_capi.tt_add_pixel('CSEC01', 'sec-token')$$, 'the owner adds a pixel');
SELECT lives_ok($$SELECT tiktok_capi.tt_requeue_failed()$$, 'the owner requeues');
SELECT lives_ok($$SELECT tiktok_capi.tt_purge_sent()$$, 'the owner purges');
SELECT is((SELECT access_token FROM tiktok_capi.pixels WHERE pixel_code = 'CSEC01'), 'sec-token',
          'the owner reads the token');

-- as the roles themselves, not just per the catalog
SET ROLE tt_sec_reader;
SELECT throws_ok($$SELECT access_token FROM tiktok_capi.pixels$$, '42501', NULL,
                 'the monitoring role is refused the tokens');
SELECT throws_ok($$SELECT payload FROM tiktok_capi.outbox$$, '42501', NULL,
                 'the monitoring role is refused the payloads');
SELECT lives_ok($$SELECT * FROM tiktok_capi.outbox_pixel_status$$, 'the monitoring role reads pixel health');
SELECT lives_ok($$SELECT * FROM tiktok_capi.delivery_stats$$, 'the monitoring role reads the delivery counters');
SELECT throws_ok($$SELECT tiktok_capi.tt_stats_reset()$$, '42501', NULL,
                 'the monitoring role cannot reset the delivery counters');
RESET ROLE;
SET ROLE tt_sec_app;
SELECT throws_ok($$SELECT tiktok_capi.tt_requeue_failed()$$, '42501', NULL, 'the application role cannot requeue');
SELECT throws_ok($$SELECT tiktok_capi.tt_purge_sent()$$, '42501', NULL, 'the application role cannot purge');
SELECT throws_ok($$SELECT * FROM tiktok_capi.delivery_stats$$, '42501', NULL,
                 'the application role cannot read the delivery counters');
SELECT throws_ok($$SELECT tiktok_capi.tt_backfill('pg_class', now() - interval '1 day')$$, '42501', NULL,
                 'the application role cannot backfill');
RESET ROLE;

-- a role the owner lets backfill reads only the tables it may read
CREATE TABLE public.sec_orders (id bigint PRIMARY KEY, total numeric, currency text, created_at timestamptz);
SELECT tiktok_capi.tt_attach('sec_orders', 'Purchase', '{event_id_prefix=sec-}', pixel => 'CSEC01');
GRANT EXECUTE ON FUNCTION tiktok_capi.tt_backfill, tiktok_capi.tt_backfill_slice TO tt_sec_reader;
GRANT EXECUTE ON PROCEDURE tiktok_capi.tt_backfill_run TO tt_sec_reader;
SET ROLE tt_sec_reader;
SELECT throws_ok($$SELECT tiktok_capi.tt_backfill('public.sec_orders', now() - interval '1 day')$$, '42501',
                 'permission denied for table sec_orders',
                 'a role granted tt_backfill still needs SELECT on the table it backfills');
RESET ROLE;
SELECT lives_ok($$SELECT tiktok_capi.tt_stats_reset()$$, 'the owner resets the delivery counters');

-- the worker's settings: set in the server's configuration only (superuser),
-- never by a session: SET cannot steer where data goes
SELECT throws_ok(format('SET tiktok_capi.%s = %L', name, value), '55P02', NULL,
                 'no session can SET tiktok_capi.' || name)
  FROM (VALUES ('api_url', 'https://example.com/'), ('database', 'other'), ('enabled', 'off'),
               ('batch_size', '10'), ('retention', '0'), ('proxy', 'http://proxy.example:3128'),
               ('no_proxy', '*'), ('ca_file', '/tmp/ca.pem')) AS s(name, value);
SELECT is(context, 'sighup', 'tiktok_capi.' || name || ' is changed only with the server configuration')
  FROM pg_settings WHERE name IN ('tiktok_capi.api_url', 'tiktok_capi.database', 'tiktok_capi.proxy',
                                  'tiktok_capi.no_proxy', 'tiktok_capi.ca_file') ORDER BY name;
-- the proxy URL may hold a password: superusers only may read it
SET ROLE tt_sec_reader;
SELECT throws_ok($$SHOW tiktok_capi.proxy$$, '42501', NULL, 'a monitoring role cannot read tiktok_capi.proxy');
RESET ROLE;
SELECT is((SELECT context FROM pg_settings WHERE name = 'tiktok_capi.default_country'), 'user',
          'default_country, which steers no data, is a session setting');

SELECT * FROM finish();
ROLLBACK;
