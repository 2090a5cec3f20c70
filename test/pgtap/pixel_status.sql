-- outbox_pixel_status shows a pixel's last error only while it is the
-- news: once a success comes after it, last_error and last_error_at are
-- NULL (the pixels table keeps them for the owner), so a pixel that
-- delivers again does not read as one in trouble.
BEGIN;
SELECT plan(8);

SELECT tiktok_capi.tt_add_pixel('CSTATUS01', 'token');

-- an error, and never a success
UPDATE tiktok_capi.pixels
   SET last_error = 'HTTP 503 from the Events API', last_error_at = now() - interval '1 minute'
 WHERE pixel_code = 'CSTATUS01';
SELECT results_eq(
    $$SELECT last_error, last_error_at IS NOT NULL FROM tiktok_capi.outbox_pixel_status
       WHERE pixel_code = 'CSTATUS01'$$,
    $$VALUES ('HTTP 503 from the Events API'::text, true)$$,
    'an error with no success yet is shown, with its time');

-- a success after it
UPDATE tiktok_capi.pixels SET last_success_at = now() WHERE pixel_code = 'CSTATUS01';
SELECT results_eq(
    $$SELECT last_error, last_error_at FROM tiktok_capi.outbox_pixel_status WHERE pixel_code = 'CSTATUS01'$$,
    $$VALUES (NULL::text, NULL::timestamptz)$$,
    'a success after the error clears last_error and last_error_at from the view');
SELECT isnt((SELECT last_success_at FROM tiktok_capi.outbox_pixel_status WHERE pixel_code = 'CSTATUS01'),
            NULL, 'last_success_at is shown');
SELECT is((SELECT last_error FROM tiktok_capi.pixels WHERE pixel_code = 'CSTATUS01'),
          'HTTP 503 from the Events API', 'the pixels table keeps the past error for the owner');

-- an error after the success
UPDATE tiktok_capi.pixels
   SET last_error = 'TikTok code 40105: Access token is missing or invalid',
       last_error_at = now() + interval '1 second'
 WHERE pixel_code = 'CSTATUS01';
SELECT is((SELECT last_error FROM tiktok_capi.outbox_pixel_status WHERE pixel_code = 'CSTATUS01'),
          'TikTok code 40105: Access token is missing or invalid',
          'an error after the last success is shown');

-- both in one record (one batch sent, another refused): the error is news
UPDATE tiktok_capi.pixels
   SET last_success_at = now(), last_error = 'TikTok code 40002: bad event', last_error_at = now()
 WHERE pixel_code = 'CSTATUS01';
SELECT is((SELECT last_error FROM tiktok_capi.outbox_pixel_status WHERE pixel_code = 'CSTATUS01'),
          'TikTok code 40002: bad event', 'an error recorded with a success, at the same moment, is shown');

-- a pixel that never failed, and one that only ever succeeded
SELECT tiktok_capi.tt_add_pixel('CSTATUS02', 'token');
SELECT is((SELECT last_error FROM tiktok_capi.outbox_pixel_status WHERE pixel_code = 'CSTATUS02'),
          NULL, 'a new pixel has no last_error');
UPDATE tiktok_capi.pixels SET last_success_at = now() WHERE pixel_code = 'CSTATUS02';
SELECT is((SELECT last_error_at FROM tiktok_capi.outbox_pixel_status WHERE pixel_code = 'CSTATUS02'),
          NULL, 'nor a pixel that only ever succeeded');

SELECT * FROM finish();
ROLLBACK;
