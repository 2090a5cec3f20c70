-- delivery_stats: the columns a dashboard and the postgres_exporter query
-- file read, with their types; a total row (pixel_code NULL) even before
-- any request, with zero counters and the latency buckets in place; and
-- tt_stats_reset() moves stats_reset forward.  Who may read and reset is
-- in security_matrix.sql.
BEGIN;
SELECT plan(7);

SELECT columns_are('tiktok_capi', 'delivery_stats',
    ARRAY['pixel_code', 'requests', 'events_sent', 'events_failed', 'events_retried', 'throttled',
          'transport_errors', 'answers_by_code', 'answers_by_http_status', 'bytes_sent',
          'request_time_count', 'request_time_sum_ms', 'latency_buckets', 'last_request_at',
          'last_success_at', 'stats_reset'],
    'delivery_stats has the documented columns');

SELECT results_eq(
    $$SELECT attname::text COLLATE "default", format_type(atttypid, atttypmod) COLLATE "default"
        FROM pg_attribute WHERE attrelid = 'tiktok_capi.delivery_stats'::regclass AND attnum > 0
       ORDER BY attnum$$,
    $$VALUES ('pixel_code', 'text'), ('requests', 'bigint'), ('events_sent', 'bigint'),
             ('events_failed', 'bigint'), ('events_retried', 'bigint'), ('throttled', 'bigint'),
             ('transport_errors', 'bigint'), ('answers_by_code', 'jsonb'),
             ('answers_by_http_status', 'jsonb'), ('bytes_sent', 'bigint'),
             ('request_time_count', 'bigint'), ('request_time_sum_ms', 'double precision'),
             ('latency_buckets', 'jsonb'), ('last_request_at', 'timestamp with time zone'),
             ('last_success_at', 'timestamp with time zone'), ('stats_reset', 'timestamp with time zone')$$,
    'each column has its type: counters bigint, maps jsonb, times timestamptz');

-- this database has no worker in the pgTAP cluster: nothing counted yet
SELECT results_eq(
    $$SELECT pixel_code, requests, events_sent, answers_by_code, stats_reset IS NOT NULL
        FROM tiktok_capi.delivery_stats$$,
    $$VALUES (NULL::text, 0::bigint, 0::bigint, '{}'::jsonb, true)$$,
    'before any request: one row, the total, at zero, with stats_reset');
SELECT is((SELECT latency_buckets FROM tiktok_capi.delivery_stats),
          '{"50": 0, "100": 0, "200": 0, "500": 0, "1000": 0, "2000": 0, "5000": 0, "+Inf": 0}'::jsonb,
          'the latency buckets: their bounds in ms, cumulative, up to +Inf');

CREATE TEMP TABLE before_reset AS SELECT stats_reset FROM tiktok_capi.delivery_stats;
SELECT pg_sleep(0.01);
SELECT lives_ok($$SELECT tiktok_capi.tt_stats_reset()$$, 'the owner resets the counters');
SELECT ok((SELECT d.stats_reset > b.stats_reset FROM tiktok_capi.delivery_stats d, before_reset b),
          'tt_stats_reset() moves stats_reset forward');
SELECT is((SELECT count(*) FROM tiktok_capi.delivery_stats WHERE pixel_code IS NULL), 1::bigint,
          'after a reset, the total row is still there');

SELECT * FROM finish();
ROLLBACK;
