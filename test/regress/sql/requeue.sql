-- tt_requeue_failed: what it leaves alone, and the NOTICE that says why
SET search_path = tiktok_capi, public;

SELECT tt_add_pixel('CREGRESS01', 'token');
INSERT INTO outbox (pixel_code, event, event_id, event_time, payload, status, last_error)
VALUES ('CREGRESS01', 'Purchase', 'net', now(), tt_event('Purchase', 'net'), 'failed',
        'gave up after 3 attempts (tiktok_capi.max_attempts); last: HTTP 503 from the Events API'),
       ('CREGRESS01', 'Purchase', 'bad', now(), tt_event('Purchase', 'bad'), 'failed',
        'TikTok code 40002: Invalid value for event_id: not a valid string.'),
       ('CREGRESS01', 'Purchase', 'unbuilt', now(), '{}', 'failed',
        'trigger "orders_capture" on public.orders cannot work: column "e_mail" does not exist');

-- a resend fixes only the first; the NOTICE names the other two
SELECT tt_requeue_failed();
-- force sends TikTok's reject again, never the event that was not built
SELECT tt_requeue_failed(force => true);
SELECT tt_requeue_failed(force => true);
-- nothing left but what cannot be sent: no NOTICE for an empty filter
SELECT tt_requeue_failed(event_id => 'nothing-here');
SELECT event_id, status FROM outbox ORDER BY event_id;

DELETE FROM outbox;
DELETE FROM pixels;
