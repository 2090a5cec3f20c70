-- tt_backfill: the events a table's tt_capture trigger would have queued
-- for rows written before it existed, each key once for good (a second run
-- queues nothing; keys pending, sent, kept after retention, erased or failed
-- are left alone), the trigger's condition honoured, rows too old for TikTok
-- counted and skipped, the event dated by the row, in slices of blocks.
-- This file runs in one transaction: the function, which does not commit.
BEGIN;
SELECT plan(32);

SELECT tiktok_capi.tt_add_pixel('CBF01', 'token');
-- fillfactor 10: a dozen rows a block, so slices of a few rows are many
CREATE TABLE public.bf_orders (id bigint PRIMARY KEY, email text, total numeric(12, 2),
    currency text DEFAULT 'USD', status text NOT NULL, created_at timestamptz)
    WITH (fillfactor = 10);
INSERT INTO public.bf_orders
SELECT i, 'c' || i || '@example.com', 10 + i, 'USD',
       CASE WHEN i BETWEEN 31 AND 35 THEN 'new' ELSE 'paid' END,
       CASE WHEN i BETWEEN 36 AND 38 THEN now() - interval '10 days'
            WHEN i = 39 THEN now() - interval '40 days'
            WHEN i = 40 THEN NULL
            ELSE now() - interval '1 day' - i * interval '1 minute' END
  FROM generate_series(1, 40) AS i;
SELECT tiktok_capi.tt_attach('bf_orders', 'Purchase', condition => $$NEW.status = 'paid'$$);
SELECT is((SELECT count(*)::int FROM tiktok_capi.outbox), 0, 'rows written before the trigger queued nothing');

CREATE FUNCTION pg_temp.ev(eid text) RETURNS tiktok_capi.outbox LANGUAGE sql AS
$$SELECT o FROM tiktok_capi.outbox o WHERE pixel_code = 'CBF01' AND event = 'Purchase' AND event_id = eid$$;
CREATE FUNCTION pg_temp.last_run() RETURNS tiktok_capi.backfills LANGUAGE sql AS
$$SELECT b FROM tiktok_capi.backfills b ORDER BY id DESC LIMIT 1$$;
CREATE FUNCTION pg_temp.error_of(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    m text;
    h text;
    c text;
BEGIN
    EXECUTE q;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS m = MESSAGE_TEXT, h = PG_EXCEPTION_HINT, c = RETURNED_SQLSTATE;
    RETURN c || ': ' || m || ' HINT: ' || h;
END
$$;

-- the first run: the paid rows of the last 30 days, dated by created_at
SELECT is(tiktok_capi.tt_backfill('bf_orders', now() - interval '30 days', slice_rows => 5), 30::bigint,
          'the first run queues the 30 paid orders of the last 7 days');
SELECT is((SELECT array_agg(DISTINCT status) FROM tiktok_capi.outbox), ARRAY['pending'], 'as pending events');
SELECT is((SELECT count(*)::int FROM tiktok_capi.outbox WHERE event_id::int BETWEEN 31 AND 35), 0,
          'the trigger''s condition is honoured: orders still new are not queued');
SELECT is(((pg_temp.ev('7')).payload ->> 'event_time')::bigint,
          (SELECT floor(extract(epoch FROM created_at))::bigint FROM public.bf_orders WHERE id = 7),
          'the event is dated by the row''s created_at, not by the backfill');
SELECT is((pg_temp.ev('7')).event_time, (SELECT created_at FROM public.bf_orders WHERE id = 7),
          'and so is its outbox row');
SELECT is((pg_temp.ev('7')).payload #> '{properties,value}', '17.00'::jsonb,
          'built as the trigger builds it (the mapping by column names)');
SELECT is((pg_temp.ev('7')).source, 'public.bf_orders', 'under the trigger''s table as its source');
SELECT is((pg_temp.last_run()).too_old, 3::bigint, 'the 3 rows 10 days old are counted as too old');
SELECT is((SELECT count(*)::int FROM tiktok_capi.outbox WHERE event_id IN ('36', '37', '38', '39', '40')), 0,
          'and not queued, nor the row before since, nor the row without a time');
SELECT is((pg_temp.last_run()).scanned, 40::bigint, 'every row is scanned');
SELECT cmp_ok((pg_temp.last_run()).slices, '>', 3, 'in several slices of a few rows');
SELECT is((pg_temp.last_run()).slices::bigint,
          pg_relation_size('bf_orders') / current_setting('block_size')::bigint,
          'a slice of 5 rows is one block of a dozen: as many slices as blocks');
SELECT is((SELECT state FROM tiktok_capi.backfill_progress ORDER BY id DESC LIMIT 1), 'finished',
          'the progress view shows it finished');

-- the second run queues nothing
SELECT is(tiktok_capi.tt_backfill('bf_orders', now() - interval '30 days'), 0::bigint,
          'the second run queues nothing');
SELECT is((pg_temp.last_run()).known, 30::bigint, 'it finds the 30 keys known');

-- known keys in every status are left alone; the others are queued again
UPDATE tiktok_capi.outbox SET status = 'sent', sent_at = now() - interval '8 days' WHERE event_id IN ('1', '2');
SELECT tiktok_capi.tt_purge_sent('7 days');
UPDATE tiktok_capi.outbox SET status = 'sent', sent_at = now() WHERE event_id = '3';
SELECT tiktok_capi.tt_forget(email => 'c4@example.com');
UPDATE tiktok_capi.outbox SET status = 'failed', last_error = 'TikTok code 40002: bad' WHERE event_id = '5';
DELETE FROM tiktok_capi.outbox WHERE event_id::int BETWEEN 7 AND 30;
SELECT is(tiktok_capi.tt_backfill('bf_orders', now() - interval '30 days'), 24::bigint,
          'a run after the events of 7 to 30 were deleted queues those 24 again');
SELECT is((SELECT array_agg(status ORDER BY event_id::int) FROM tiktok_capi.outbox WHERE event_id::int <= 6),
          ARRAY['kept', 'kept', 'sent', 'erased', 'failed', 'pending'],
          'and leaves alone the keys kept after retention, sent, erased, failed and pending');
SELECT is((pg_temp.last_run()).known, 6::bigint, 'counting the 6 as known');
SELECT is((pg_temp.ev('4')).payload, NULL, 'the erased key stays without a payload');

-- the age limit is a setting
SET LOCAL tiktok_capi.backfill_max_age = '30d';
SELECT is(tiktok_capi.tt_backfill('bf_orders', now() - interval '30 days'), 3::bigint,
          'with backfill_max_age = 30 days the 3 rows 10 days old are queued');
SELECT is((pg_temp.last_run()).too_old, 0::bigint, 'and none is too old');
RESET tiktok_capi.backfill_max_age;

-- until: rows at or after it are left
UPDATE public.bf_orders SET status = 'paid' WHERE id = 31;
SELECT is(tiktok_capi.tt_backfill('bf_orders', now() - interval '30 days', now() - interval '2 days'), 0::bigint,
          'an order paid since, but placed after until, is not queued');
SELECT tiktok_capi.tt_flush();
SELECT ok((pg_temp.ev('31')).status = 'pending', 'its update queued it through the trigger');

-- a mapped event_time comes before created_at
CREATE TABLE public.bf_placed (id bigint PRIMARY KEY, total numeric, currency text DEFAULT 'USD',
    placed_at timestamp, created_at timestamptz);
INSERT INTO public.bf_placed VALUES (1, 5, 'USD', '2026-11-28 10:00', now());
SELECT tiktok_capi.tt_attach('bf_placed', 'Purchase', '{event_time=placed_at, event_id_prefix=placed-}');
SET LOCAL tiktok_capi.backfill_max_age = '400d';
SELECT is(tiktok_capi.tt_backfill('bf_placed', '2026-01-01'), 1::bigint, 'a table mapping event_time');
SELECT is((pg_temp.ev('placed-1')).event_time, '2026-11-28 10:00+00'::timestamptz,
          'is dated by its mapped column (a timestamp read as UTC), not by created_at');
RESET tiktok_capi.backfill_max_age;

-- refused: no time column, no trigger, a partitioned table
CREATE TABLE public.bf_timeless (id bigint PRIMARY KEY, total numeric, currency text DEFAULT 'USD');
INSERT INTO public.bf_timeless VALUES (1, 5, 'USD');
SELECT tiktok_capi.tt_attach('bf_timeless', 'Purchase', '{event_id_prefix=timeless-}');
SELECT matches(pg_temp.error_of($$SELECT tiktok_capi.tt_backfill('bf_timeless', now() - interval '1 day')$$),
               '^55000: cannot backfill bf_timeless: trigger "[^"]+" maps no event_time and the table has no created_at column.*HINT: .*event_time=',
               'a table with neither event_time nor created_at is refused, with a hint');
CREATE TABLE public.bf_untracked (id bigint PRIMARY KEY, created_at timestamptz);
SELECT matches(pg_temp.error_of($$SELECT tiktok_capi.tt_backfill('bf_untracked', now() - interval '1 day')$$),
               '^55000: table bf_untracked has no enabled tt_capture trigger.*HINT: .*tt_attach',
               'a table without the trigger is refused');
CREATE TABLE public.bf_parted (id bigint, created_at timestamptz) PARTITION BY RANGE (id);
SELECT matches(pg_temp.error_of($$SELECT tiktok_capi.tt_backfill('bf_parted', now() - interval '1 day')$$),
               '^42809: .*HINT: Backfill each of its partitions',
               'a partitioned table is refused: each partition is backfilled');
SELECT is((SELECT count(*)::int FROM tiktok_capi.outbox WHERE event_id LIKE 'timeless-%'), 0,
          'and nothing is queued by a refused backfill');

-- a marketplace: each row names its merchant's pixel (pixel_from), and with
-- several pixels there is no default one to need
SELECT tiktok_capi.tt_add_pixel('CBFM1', 'token');
SELECT tiktok_capi.tt_add_pixel('CBFM2', 'token');
CREATE TABLE public.bf_market (id bigint PRIMARY KEY, merchant_pixel text, total numeric,
    currency text DEFAULT 'USD', created_at timestamptz DEFAULT now() - interval '1 hour');
INSERT INTO public.bf_market (id, merchant_pixel, total) VALUES (1, 'CBFM1', 5), (2, 'CBFM2', 6), (3, 'CBFM2', 7);
SELECT tiktok_capi.tt_attach('bf_market', 'Purchase', '{pixel_from=merchant_pixel, event_id_prefix=m-}');
SELECT is(tiktok_capi.tt_backfill('bf_market', now() - interval '1 day'), 3::bigint,
          'a table whose rows name their pixel is backfilled, with several pixels configured');
SELECT is((SELECT array_agg(pixel_code || ':' || event_id ORDER BY event_id) FROM tiktok_capi.outbox
            WHERE event_id LIKE 'm-%'), ARRAY['CBFM1:m-1', 'CBFM2:m-2', 'CBFM2:m-3'],
          'each order under the pixel its row names');

SELECT * FROM finish();
ROLLBACK;
