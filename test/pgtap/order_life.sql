-- An order's whole life: one event per order, built from the order as
-- committed (tt_flush() builds where a commit would: this file runs in one
-- transaction), never queued again once sent, kept or erased, and never
-- under another table's key.
BEGIN;
SELECT plan(27);

SELECT tiktok_capi.tt_add_pixel('CLIFE01', 'token');
CREATE TABLE public.life_orders (id bigint PRIMARY KEY, email text, total numeric(12, 2),
    currency text DEFAULT 'USD', status text NOT NULL DEFAULT 'new');
CREATE TABLE public.life_items (order_id bigint, sku text, qty int);
SELECT tiktok_capi.tt_attach('life_orders', 'Purchase', '{contents_from=life_items(order_id)}',
                             condition => $$NEW.status = 'paid'$$);

CREATE FUNCTION pg_temp.ev(eid text) RETURNS jsonb LANGUAGE sql AS
$$SELECT payload FROM tiktok_capi.outbox WHERE pixel_code = 'CLIFE01' AND event = 'Purchase' AND event_id = eid$$;

-- written many ways before the commit
INSERT INTO public.life_orders VALUES (1, 'a@example.com', 30, 'USD', 'paid');
UPDATE public.life_orders SET total = 25 WHERE id = 1;
INSERT INTO public.life_orders VALUES (2, 'b@example.com', 220, 'USD', 'paid')
    ON CONFLICT (id) DO UPDATE SET total = EXCLUDED.total;
INSERT INTO public.life_orders VALUES (2, 'b@example.com', 225, 'USD', 'paid')
    ON CONFLICT (id) DO UPDATE SET total = EXCLUDED.total;
INSERT INTO public.life_orders VALUES (3, 'c@example.com', 10, 'USD', 'paid');
DELETE FROM public.life_orders WHERE id = 3;
INSERT INTO public.life_orders VALUES (4, 'd@example.com', 10, 'USD', 'paid');
UPDATE public.life_orders SET status = 'cancelled' WHERE id = 4;
INSERT INTO public.life_orders VALUES (5, 'e@example.com', 40, 'USD', 'paid');
SAVEPOINT s;
UPDATE public.life_orders SET total = 99 WHERE id = 5;
ROLLBACK TO SAVEPOINT s;
INSERT INTO public.life_orders VALUES (6, 'f@example.com', 30, 'USD', 'paid');
INSERT INTO public.life_items VALUES (6, 'SKU-1', 1), (6, 'SKU-2', 2);
SELECT is((SELECT count(*)::int FROM tiktok_capi.outbox), 0, 'nothing is queued before the commit');
SELECT is(tiktok_capi.tt_flush(), 4, 'the flush reads each live, qualifying order once');
SELECT is(pg_temp.ev('1') #> '{properties,value}', '25.00'::jsonb, 'insert then update: the committed value');
SELECT is(pg_temp.ev('2') #> '{properties,value}', '225.00'::jsonb, 'two upserts: the last value');
SELECT is(pg_temp.ev('3'), NULL, 'inserted then deleted: nothing');
SELECT is(pg_temp.ev('4'), NULL, 'paid then cancelled: nothing');
SELECT is(pg_temp.ev('5') #> '{properties,value}', '40.00'::jsonb, 'an update rolled back to a savepoint is not in the event');
SELECT is(jsonb_array_length(pg_temp.ev('6') #> '{properties,contents}'), 2, 'items inserted after the order are in its event');

-- once sent, never again: a refund and a new payment, retention, erasure
UPDATE tiktok_capi.outbox SET status = 'sent', sent_at = now() - interval '8 days' WHERE event_id IN ('1', '2', '5');
UPDATE public.life_orders SET status = 'refunded' WHERE id = 1;
UPDATE public.life_orders SET status = 'paid', total = 24 WHERE id = 1;
SELECT tiktok_capi.tt_flush();
SELECT is(pg_temp.ev('1') #> '{properties,value}', '25.00'::jsonb, 'paid, refunded, paid: the sent event stands');
SELECT is(tiktok_capi.tt_purge_sent('7 days'), 3::bigint, 'retention drops the payloads of old sent events');
SELECT is((SELECT array_agg(status || coalesce(payload::text, '-') ORDER BY event_id) FROM tiktok_capi.outbox
            WHERE event_id IN ('1', '2', '5')), ARRAY['kept-', 'kept-', 'kept-'], 'and keeps their keys');
UPDATE public.life_orders SET total = total + 1;
SELECT tiktok_capi.tt_flush();
SELECT is((SELECT count(*)::int FROM tiktok_capi.outbox WHERE status = 'pending'), 1,
          'a bulk update after retention queues nothing new (only order 6 is pending)');
SELECT is(pg_temp.ev('6') #> '{properties,value}', '31.00'::jsonb, 'and the pending one follows the order');
SELECT is(tiktok_capi.tt_forget(email => 'f@example.com'), 1::bigint, 'tt_forget erases the pending event');
UPDATE public.life_orders SET total = 50 WHERE id = 6;
SELECT tiktok_capi.tt_flush();
SELECT is((SELECT status || coalesce(payload::text, '-') FROM tiktok_capi.outbox WHERE event_id = '6'), 'erased-',
          'an update after the erasure queues nothing of the person');

-- two tables, one pixel: refused, unless the ids are made distinct
CREATE TABLE public.app_orders (id bigint PRIMARY KEY, total numeric, currency text DEFAULT 'USD');
SELECT throws_ok($$SELECT tiktok_capi.tt_attach('app_orders', 'Purchase')$$, '42710', NULL,
                 'tt_attach refuses a second table on the same pixel and event');
SELECT lives_ok($$SELECT tiktok_capi.tt_attach('app_orders', 'Purchase', '{event_id_prefix=app-}')$$,
                'and takes it with event_id_prefix');
INSERT INTO public.app_orders VALUES (1, 7);
CREATE TABLE public.pos_orders (id bigint PRIMARY KEY, total numeric, currency text DEFAULT 'USD');
CREATE TRIGGER pos_capture AFTER INSERT ON public.pos_orders FOR EACH ROW
    EXECUTE FUNCTION tiktok_capi.tt_capture('Purchase', 'pixel=CLIFE01');
INSERT INTO public.pos_orders VALUES (2, 9);
SELECT tiktok_capi.tt_flush();
SELECT is(pg_temp.ev('app-1') #> '{properties,value}', '7'::jsonb, 'the second table''s order 1 is app-1');
SELECT alike((SELECT status || ': ' || last_error FROM tiktok_capi.outbox WHERE event_id = 'public.pos_orders:2'),
             'failed: order "2" of public.pos_orders has the event_id of an event from public.life_orders%',
             'a hand-written trigger on a third table: the colliding order is a failed row naming both');
SELECT is((SELECT status FROM tiktok_capi.outbox WHERE event_id = '2'), 'kept', 'and the first table''s key is untouched');
SELECT alike((SELECT problem FROM tiktok_capi.tt_check_triggers() WHERE trigger_name = 'pos_capture'),
             'its event_ids collide with those of public.life_orders%', 'tt_check_triggers names the collision');

-- the event_id follows order_id=; an order without an id has a key of its own
CREATE TABLE public.numbered (uid uuid DEFAULT gen_random_uuid(), order_number text, total numeric, currency text DEFAULT 'USD');
CREATE TRIGGER numbered_capture AFTER INSERT ON public.numbered FOR EACH ROW
    EXECUTE FUNCTION tiktok_capi.tt_capture('AddToCart', 'order_id=order_number', 'pixel=CLIFE01');
INSERT INTO public.numbered (order_number, total) VALUES ('N-1', 1), (NULL, 2), (NULL, 3);
SELECT tiktok_capi.tt_flush();
SELECT is((SELECT payload ->> 'event_id' FROM tiktok_capi.outbox WHERE event = 'AddToCart' AND status = 'pending'), 'N-1',
          'order_id=order_number alone: the event_id is the order number');
SELECT is((SELECT count(DISTINCT event_id)::int FROM tiktok_capi.outbox
            WHERE event = 'AddToCart' AND status = 'failed' AND event_id LIKE 'public.numbered row (%'
              AND last_error LIKE 'the row has no event_id%'), 2,
          'two orders without an id: two failed rows, each under a key naming its row');

-- a build that fails: the order commits, and its event is a failed row naming the row and why
CREATE TABLE public.wish_orders (id bigint PRIMARY KEY, total numeric, currency text DEFAULT 'USD');
CREATE TABLE public.wish_items (order_id bigint, sku text);
SELECT tiktok_capi.tt_attach('wish_orders', 'AddToWishlist', '{contents_from=wish_items(order_id)}');
INSERT INTO public.wish_orders VALUES (1, 5);
SELECT tiktok_capi.tt_flush();
DROP TABLE public.wish_items;
INSERT INTO public.wish_orders VALUES (2, 6);
SELECT lives_ok($$SELECT tiktok_capi.tt_flush()$$, 'a build that fails does not fail the transaction');
SELECT alike((SELECT event_id || ': ' || last_error FROM tiktok_capi.outbox WHERE event = 'capture error'),
             'wish_orders row (%) of transaction %: the event could not be built: %wish_items%',
             'its event is a failed row naming the row and the error');

-- with several pixels, a pixel put in the mapping is said to be misplaced
SELECT tiktok_capi.tt_add_pixel('CLIFE02', 'token');
CREATE TABLE public.misplaced (id bigint, total numeric);
SELECT throws_ok($$SELECT tiktok_capi.tt_attach('misplaced', 'Lead', mapping => '{pixel=CLIFE02}')$$, '22023',
                 'name the pixel with the pixel argument, not in the mapping',
                 'a pixel in the mapping: where it goes, even with several pixels configured');
SELECT throws_ok($$SELECT tiktok_capi.tt_attach('misplaced', 'Lead')$$, '22023',
                 'no pixel given and several pixels are configured: name one with pixel=CODE',
                 'no pixel with several configured: an error that asks for one');

SELECT * FROM finish();
ROLLBACK;
