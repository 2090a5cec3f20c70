-- Erasure: tt_forget() erases every event carrying a person's identifiers,
-- hashed as the trigger hashes them, whatever the event's status (its key
-- stays, status erased, without payload, so the order is never queued
-- again), and leaves an audit line that holds neither the identifier nor
-- its hash.
BEGIN;
SELECT plan(18);

SELECT tiktok_capi.tt_add_pixel('CERASE01', 'token');
-- the person: two events by email (one already sent, one failed), one by
-- phone, one by external_id; someone else: one event
SELECT tiktok_capi.tt_enqueue('CERASE01', tiktok_capi.tt_event('Purchase', 'a1', email => 'Ann.Lee@Example.com'));
SELECT tiktok_capi.tt_enqueue('CERASE01', tiktok_capi.tt_event('Purchase', 'a2', email => 'ann.lee@example.com', value => 5, currency => 'EUR'));
SELECT tiktok_capi.tt_enqueue('CERASE01', tiktok_capi.tt_event('Lead', 'a3', email => 'ann.lee@example.com'));
SELECT tiktok_capi.tt_enqueue('CERASE01', tiktok_capi.tt_event('Purchase', 'a4', phone => '+44 20 7946 0958'));
SELECT tiktok_capi.tt_enqueue('CERASE01', tiktok_capi.tt_event('Purchase', 'a5', external_id => 'customer-77'));
SELECT tiktok_capi.tt_enqueue('CERASE01', tiktok_capi.tt_event('Purchase', 'b1', email => 'bob@example.com',
                                                                phone => '+14155550100', external_id => 'customer-78'));
UPDATE tiktok_capi.outbox SET status = 'sent', sent_at = now() WHERE event_id = 'a2';
UPDATE tiktok_capi.outbox SET status = 'failed', last_error = 'x' WHERE event_id = 'a3';
-- an event queued by hand with an array of emails
SELECT tiktok_capi.tt_enqueue('CERASE01', jsonb_build_object('event', 'Purchase', 'event_id', 'a6',
    'event_time', extract(epoch FROM now())::bigint,
    'user', jsonb_build_object('email', jsonb_build_array(tiktok_capi.tt_hash_email('other@example.com'),
                                                          tiktok_capi.tt_hash_email('ann.lee@example.com')))));

-- misuse is a clear error, and erases nothing
SELECT throws_ok($$SELECT tiktok_capi.tt_forget()$$, '22004',
                 'tt_forget() needs an email, a phone, an external_id, or a first name, last name and zip code', 'no identifier: an error');
SELECT throws_ok($$SELECT tiktok_capi.tt_forget(email => 'not an email')$$, '22023',
                 'an identifier given to tt_forget() cannot be normalized', 'an unusable identifier: an error, not a silent 0');
SELECT is((SELECT count(*) FROM tiktok_capi.erasures), 0::bigint, 'a refused call leaves no audit line');

-- by email, written differently from how it was captured
SELECT is(tiktok_capi.tt_forget(email => '  ANN.LEE@example.COM '), 4::bigint,
          'forgetting an email removes its pending, sent, failed and array-held events');
SELECT is(array_agg(event_id ORDER BY event_id), ARRAY['a4', 'a5', 'b1'], 'the events by phone, external_id and of others stay')
  FROM tiktok_capi.outbox WHERE status <> 'erased';
SELECT is(array_agg(event_id || ' ' || coalesce(payload::text, 'no payload') ORDER BY event_id),
          ARRAY['a1 no payload', 'a2 no payload', 'a3 no payload', 'a6 no payload'],
          'the erased events keep their keys and nothing else')
  FROM tiktok_capi.outbox WHERE status = 'erased';

SELECT is(tiktok_capi.tt_forget(phone => '+442079460958', external_id => 'customer-77'), 2::bigint,
          'phone and external_id together remove both');
SELECT is(array_agg(event_id), ARRAY['b1'], 'only the other person''s event is left') FROM tiktok_capi.outbox
 WHERE status <> 'erased';
SELECT is(tiktok_capi.tt_forget(email => 'nobody@example.com'), 0::bigint, 'a person with no events: 0');

-- a national number, with its country as for tt_hash_phone
SELECT tiktok_capi.tt_enqueue('CERASE01', tiktok_capi.tt_event('Purchase', 'c1', phone => '+33 6 12 34 56 78'));
SELECT throws_ok($$SELECT tiktok_capi.tt_forget(phone => '06 12 34 56 78')$$, '22023', NULL,
                 'a national number without a country cannot be normalized: an error');
SELECT is(tiktok_capi.tt_forget(phone => '06 12 34 56 78', country => 'FR'), 1::bigint,
          'tt_forget takes the country of a national number');

-- the audit: kinds and counts, never the identifier or its hash
SELECT is(array_agg(identifiers::text || ':' || events_removed ORDER BY id),
          ARRAY['{email}:4', '{phone,external_id}:2', '{email}:0', '{phone}:1'], 'one audit line per erasure, with its count')
  FROM tiktok_capi.erasures;
SELECT is((SELECT count(*) FROM tiktok_capi.erasures WHERE erased_by = current_user AND erased_at = now()), 4::bigint,
          'the audit says who and when');
SELECT ok(NOT EXISTS (SELECT 1 FROM tiktok_capi.erasures e
                       WHERE e::text ILIKE '%ann%' OR e::text LIKE '%' || tiktok_capi.tt_hash_email('ann.lee@example.com') || '%'
                          OR e::text LIKE '%7946%' OR e::text LIKE '%customer-77%'),
          'the audit holds neither the identifiers nor their hashes');

-- who may erase: the owner, or whom the owner grants
SELECT ok(NOT has_function_privilege('public', 'tiktok_capi.tt_forget(text, text, text, text, text, text, text)', 'EXECUTE'),
          'PUBLIC cannot call tt_forget');
SELECT ok(NOT has_table_privilege('public', 'tiktok_capi.erasures', 'SELECT'), 'PUBLIC cannot read the erasures');

-- the dump keeps the audit
SELECT ok((SELECT 'tiktok_capi.erasures'::regclass = ANY (extconfig) FROM pg_extension WHERE extname = 'tiktok_capi'),
          'pg_dump keeps the erasures');
SELECT ok((SELECT 'tiktok_capi.outbox'::regclass = ANY (extconfig) AND 'tiktok_capi.pixels'::regclass = ANY (extconfig)
             FROM pg_extension WHERE extname = 'tiktok_capi'),
          'pg_dump keeps the pixels and the outbox');

SELECT * FROM finish();
ROLLBACK;
