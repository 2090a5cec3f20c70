-- tt_requeue_failed() sends again the failed events a resend can fix, and
-- leaves alone those it cannot: an event never built (payload {}) stays
-- failed even with force, one TikTok rejected as invalid (code 400xx)
-- unless force => true.  Pending and sent events are never touched.
BEGIN;
SELECT plan(17);

SELECT has_function('tiktok_capi', 'tt_requeue_failed', ARRAY['text', 'text', 'text', 'boolean'],
                    'tt_requeue_failed(pixel_code, event, event_id, force)');
SELECT hasnt_function('tiktok_capi', 'tt_requeue_failed', ARRAY['text', 'text', 'text'],
                      'the three-argument version is gone');

SELECT tiktok_capi.tt_add_pixel('CREQ01', 'token');
SELECT tiktok_capi.tt_add_pixel('CREQ02', 'token');
INSERT INTO tiktok_capi.outbox (pixel_code, event, event_id, event_time, payload, status, attempts, last_error)
SELECT pixel, 'Purchase', id, now(),
       CASE WHEN built THEN tiktok_capi.tt_event('Purchase', id) ELSE '{}' END,
       status, attempts, last_error
  FROM (VALUES
    ('CREQ01', 'net', true, 'failed', 100,
     'gave up after 100 attempts (tiktok_capi.max_attempts); last: HTTP 503 from the Events API'),
    ('CREQ01', 'throttled', true, 'failed', 100,
     'gave up after 100 attempts (tiktok_capi.max_attempts); last: TikTok code 40100: Too many requests'),
    ('CREQ01', 'nopixel', true, 'failed', 1,
     'its pixel is not configured in tiktok_capi.pixels (add it with tt_add_pixel, then tt_requeue_failed)'),
    ('CREQ01', 'bad1', true, 'failed', 1, 'TikTok code 40002: Invalid value for event_id: not a valid string.'),
    ('CREQ01', 'bad2', true, 'failed', 1, 'TikTok code 40000: Invalid parameter'),
    ('CREQ01', 'unbuilt', false, 'failed', 0,
     'trigger "orders_capture" on public.orders cannot work: column "e_mail" does not exist (mapping email=e_mail)'),
    ('CREQ01', 'collided', false, 'failed', 0,
     'order "7" of public.orders has the event_id of an event public.leads queued for pixel CREQ01, event Purchase: the ids of two tables collide'),
    ('CREQ01', 'waiting', true, 'pending', 3, 'HTTP 503 from the Events API'),
    ('CREQ02', 'bad3', true, 'failed', 1, 'TikTok code 40002: Invalid value for properties.currency.'),
    ('CREQ02', 'net2', true, 'failed', 100, 'gave up after 100 attempts (tiktok_capi.max_attempts); last: network: Connection refused')
  ) AS v(pixel, id, built, status, attempts, last_error);

-- without force: what a resend can fix
SELECT is(tiktok_capi.tt_requeue_failed(pixel_code => 'CREQ01'), 3::bigint,
          'requeues the events that met trouble on the way, throttling, or a missing pixel');
SELECT results_eq(
    $$SELECT event_id, status, attempts, last_error FROM tiktok_capi.outbox
       WHERE event_id IN ('net', 'throttled', 'nopixel') ORDER BY event_id$$,
    $$VALUES ('net'::text, 'pending'::text, 0, NULL::text), ('nopixel', 'pending', 0, NULL),
             ('throttled', 'pending', 0, NULL)$$,
    'they are pending again, attempts and last_error reset');
SELECT results_eq(
    $$SELECT event_id, status FROM tiktok_capi.outbox
       WHERE event_id IN ('bad1', 'bad2', 'unbuilt', 'collided') ORDER BY event_id$$,
    $$VALUES ('bad1'::text, 'failed'::text), ('bad2', 'failed'), ('collided', 'failed'), ('unbuilt', 'failed')$$,
    'TikTok''s validation rejects and the events never built stay failed');
SELECT is((SELECT last_error FROM tiktok_capi.outbox WHERE event_id = 'bad1'),
          'TikTok code 40002: Invalid value for event_id: not a valid string.',
          'a rejected event keeps TikTok''s message');
SELECT is((SELECT attempts || ' ' || last_error FROM tiktok_capi.outbox WHERE event_id = 'waiting'),
          '3 HTTP 503 from the Events API', 'a pending event is not touched');
SELECT is((SELECT count(*)::int FROM tiktok_capi.outbox WHERE pixel_code = 'CREQ02' AND status = 'failed'), 2,
          'nor another pixel''s events');

-- the filters, and nothing left to do
SELECT is(tiktok_capi.tt_requeue_failed(pixel_code => 'CREQ01'), 0::bigint,
          'a second call requeues nothing more');
SELECT is(tiktok_capi.tt_requeue_failed(event_id => 'bad3'), 0::bigint,
          'a rejected event named by its event_id is still left alone without force');

-- force: TikTok's rejects are sent again; an event never built never is
SELECT is(tiktok_capi.tt_requeue_failed(pixel_code => 'CREQ01', force => true), 2::bigint,
          'force => true requeues the rejected events');
SELECT results_eq(
    $$SELECT event_id, status, attempts FROM tiktok_capi.outbox
       WHERE event_id IN ('bad1', 'bad2') ORDER BY event_id$$,
    $$VALUES ('bad1'::text, 'pending'::text, 0), ('bad2', 'pending', 0)$$,
    'they are pending again');
SELECT results_eq(
    $$SELECT event_id, status, payload FROM tiktok_capi.outbox
       WHERE event_id IN ('unbuilt', 'collided') ORDER BY event_id$$,
    $$VALUES ('collided'::text, 'failed'::text, '{}'::jsonb), ('unbuilt', 'failed', '{}')$$,
    'events never built (payload {}) stay failed even with force: there is nothing to send');
SELECT is(tiktok_capi.tt_requeue_failed(force => true, event_id => 'unbuilt'), 0::bigint,
          'not even when named by their event_id');

-- the rest, without a filter
SELECT is(tiktok_capi.tt_requeue_failed(), 1::bigint, 'without a filter: every pixel''s fixable events');
SELECT is((SELECT status FROM tiktok_capi.outbox WHERE event_id = 'net2'), 'pending', 'the other pixel''s one too');
SELECT is((SELECT string_agg(event_id, ',' ORDER BY event_id) FROM tiktok_capi.outbox WHERE status = 'failed'),
          'bad3,collided,unbuilt', 'left failed: a reject (no force) and the events never built');

SELECT * FROM finish();
ROLLBACK;
