/*
 * tiktok_capi 0.2.0 -> 0.3.0: one order, one event, for the order's whole
 * life.  A new install runs 0.1.0, 0.1.0 -> 0.2.0 and this script.
 *
 * Vocabulary added here:
 *	- key: (pixel_code, event, event_id), TikTok's deduplication key and the
 *	  outbox's unique constraint.  An order converts once: its key, once
 *	  settled, is never queued again.
 *	- kept: a sent event whose payload retention dropped; its key stays, with
 *	  sent_at, for tiktok_capi.keep_keys (400 days by default), so a later
 *	  change to the order does not send the conversion again.
 *	- erased: an event removed by tt_forget(); its key stays, without the
 *	  payload, so the person's order is not queued again.
 *	- source: the table whose tt_capture trigger queued the event
 *	  (schema-qualified), so two tables never share a key silently.
 */

\echo Use "ALTER EXTENSION tiktok_capi UPDATE TO '0.3.0'" to load this file. \quit

ALTER TABLE tiktok_capi.outbox ALTER COLUMN payload DROP NOT NULL;
ALTER TABLE tiktok_capi.outbox DROP CONSTRAINT outbox_status_check;
ALTER TABLE tiktok_capi.outbox ADD CONSTRAINT outbox_status_check
    CHECK (status IN ('pending', 'sent', 'failed', 'kept', 'erased'));
ALTER TABLE tiktok_capi.outbox ADD COLUMN source text;
COMMENT ON COLUMN tiktok_capi.outbox.source IS
'The table whose tt_capture trigger queued the event (schema-qualified); NULL for tt_enqueue';
COMMENT ON COLUMN tiktok_capi.outbox.status IS
'pending, sent, failed; kept: sent, payload dropped by retention, key kept; erased: removed by tt_forget, key kept';
-- The end of the keys' horizon (tiktok_capi.keep_keys).
CREATE INDEX outbox_kept_idx ON tiktok_capi.outbox (sent_at) WHERE status = 'kept';
-- The last hour's warnings (tt_health, recent_warnings), without a scan of
-- every kept key; a clean event has no entry here.
CREATE INDEX outbox_warned_idx ON tiktok_capi.outbox (created_at) WHERE warnings IS NOT NULL;

/*
 * tt_purge_sent: what retention does, on demand: the payloads of sent
 * events older than the interval are dropped; their keys are kept.
 */
CREATE OR REPLACE FUNCTION tiktok_capi.tt_purge_sent(older_than interval DEFAULT '7 days')
RETURNS bigint LANGUAGE sql
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    WITH purged AS (
        UPDATE tiktok_capi.outbox o
           SET status = 'kept', payload = NULL, warnings = NULL, last_error = NULL
         WHERE o.status = 'sent' AND o.sent_at < now() - tt_purge_sent.older_than
        RETURNING 1)
    SELECT count(*) FROM purged;
END;
COMMENT ON FUNCTION tiktok_capi.tt_purge_sent IS
'Drop the payloads of delivered events older than the interval, keeping their keys so the orders are not sent again; returns how many';

/*
 * tt_forget: every event carrying one of the person's identifiers loses its
 * payload and becomes erased; its key stays, so a later change to the order
 * queues nothing of theirs again.  A name identifies nobody alone: the
 * first name, last name and zip code are taken together, or not at all.
 */
DROP FUNCTION tiktok_capi.tt_forget(text, text, text);
CREATE FUNCTION tiktok_capi.tt_forget(
    email text DEFAULT NULL, phone text DEFAULT NULL, external_id text DEFAULT NULL,
    country text DEFAULT NULL,
    first_name text DEFAULT NULL, last_name text DEFAULT NULL, zip_code text DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    email_hash text := tiktok_capi.tt_hash_email(email);
    -- a national number needs its country, as for tt_hash_phone
    phone_hash text := CASE WHEN country IS NULL THEN tiktok_capi.tt_hash_phone(phone)
                            ELSE tiktok_capi.tt_hash_phone(phone, country) END;
    external_id_hash text := tiktok_capi.tt_hash_external_id(external_id);
    first_name_hash text := tiktok_capi.tt_hash_name(first_name);
    last_name_hash text := tiktok_capi.tt_hash_name(last_name);
    zip_code_hash text := tiktok_capi.tt_hash_name(zip_code);
    kinds text[];
    removed bigint;
BEGIN
    IF (first_name IS NULL OR last_name IS NULL OR zip_code IS NULL)
       AND (first_name IS NOT NULL OR last_name IS NOT NULL OR zip_code IS NOT NULL) THEN
        RAISE EXCEPTION 'tt_forget() takes a name only as first_name, last_name and zip_code together'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A name, even with its zip code missing, is shared by many people: give all three, or an email, a phone or an external_id.';
    END IF;
    IF email IS NOT NULL AND email_hash IS NULL
       OR phone IS NOT NULL AND phone_hash IS NULL
       OR external_id IS NOT NULL AND external_id_hash IS NULL
       OR first_name IS NOT NULL AND first_name_hash IS NULL
       OR last_name IS NOT NULL AND last_name_hash IS NULL
       OR zip_code IS NOT NULL AND zip_code_hash IS NULL THEN
        RAISE EXCEPTION 'an identifier given to tt_forget() cannot be normalized'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the email as stored, the phone in E.164 (+country code) or set tiktok_capi.default_country.';
    END IF;
    kinds := array_remove(ARRAY[CASE WHEN email_hash IS NOT NULL THEN 'email' END,
                                CASE WHEN phone_hash IS NOT NULL THEN 'phone' END,
                                CASE WHEN external_id_hash IS NOT NULL THEN 'external_id' END,
                                CASE WHEN zip_code_hash IS NOT NULL THEN 'name_and_zip_code' END], NULL);
    IF cardinality(kinds) = 0 THEN
        RAISE EXCEPTION 'tt_forget() needs an email, a phone, an external_id, or a first name, last name and zip code'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;

    PERFORM pg_advisory_xact_lock(8388353928783921153);
    -- a string, or an array of them: @> matches an element of either
    UPDATE tiktok_capi.outbox o
       SET status = 'erased', payload = NULL, warnings = NULL, last_error = NULL,
           request_id = NULL
     WHERE o.payload->'user'->'email' @> to_jsonb(email_hash)
        OR o.payload->'user'->'phone' @> to_jsonb(phone_hash)
        OR o.payload->'user'->'external_id' @> to_jsonb(external_id_hash)
        OR (o.payload->'user'->'first_name' @> to_jsonb(first_name_hash)
            AND o.payload->'user'->'last_name' @> to_jsonb(last_name_hash)
            AND o.payload->'user'->'zip_code' @> to_jsonb(zip_code_hash));
    GET DIAGNOSTICS removed = ROW_COUNT;
    INSERT INTO tiktok_capi.erasures (identifiers, events_removed) VALUES (kinds, removed);
    RETURN removed;
END
$$;
COMMENT ON FUNCTION tiktok_capi.tt_forget IS
'Erase a person: every outbox event carrying their email, phone (national numbers with country, or tiktok_capi.default_country), external_id, or first name, last name and zip code together (hashed as the trigger does) loses its payload and is never queued again; returns how many; logs the erasure without the identifier';
REVOKE ALL ON FUNCTION tiktok_capi.tt_forget FROM PUBLIC;

/*
 * tt_flush(): build now, instead of at commit, the events of the orders
 * this transaction has written so far (for a page rendered in the order's
 * own transaction, or a test).  At commit, the orders written since are
 * built too, and those changed since are rebuilt.
 */
CREATE FUNCTION tiktok_capi.tt_flush() RETURNS integer
AS 'MODULE_PATHNAME', 'tt_flush_sql'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION tiktok_capi.tt_flush IS
'Build now the events of the orders this transaction has written so far (normally done at commit); returns how many orders were read';

/*
 * Every tt_capture trigger of the database, its mapping resolved the way the
 * trigger resolves it; problem is NULL for a trigger that works.
 */
CREATE FUNCTION tiktok_capi.tt_check_triggers(
    OUT trigger_name name, OUT table_name text, OUT event text, OUT problem text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'tt_check_triggers_sql'
LANGUAGE C STABLE;
COMMENT ON FUNCTION tiktok_capi.tt_check_triggers IS
'Each tt_capture trigger with its table and event, and what keeps it from working (NULL: nothing)';
REVOKE ALL ON FUNCTION tiktok_capi.tt_flush, tiktok_capi.tt_check_triggers FROM PUBLIC;

/*
 * Field-level problems of the last hour's events, by kind and table: what
 * the trigger left out of an event (an unusable email, a value without
 * currency, ...).  The kind is the warning up to its first colon.
 */
CREATE VIEW tiktok_capi.recent_warnings AS
SELECT split_part(w.warning, ':', 1) AS kind,
       o.source,
       count(DISTINCT o.id) AS events,
       max(o.created_at) AS last_seen,
       min(w.warning) AS example
  FROM tiktok_capi.outbox o
 CROSS JOIN LATERAL unnest(o.warnings) AS w(warning)
 WHERE o.warnings IS NOT NULL AND o.created_at > now() - interval '1 hour'
 GROUP BY 1, 2;
COMMENT ON VIEW tiktok_capi.recent_warnings IS
'The last hour''s warnings by kind and source table: what the trigger left out of events, and how often';
REVOKE ALL ON tiktok_capi.recent_warnings FROM PUBLIC;

/*
 * tt_update_pixel of a pixel that is not configured is an error, not a
 * quiet false: a typo in a pixel code must not look like a fix.  It is
 * defined once, with event_source, in the event sources block below.
 */

/*
 * An api_url whose answer is not the Events API's (HTTP 404, an HTML page,
 * JSON without a code) pauses the worker's delivery instead of spending
 * the events' attempts for hours.  tt_worker_pause() shows that pause (no
 * row while delivery is not paused); tt_health()'s worker check is
 * critical meanwhile.
 */
CREATE FUNCTION tiktok_capi.tt_worker_pause(
    OUT api_url text, OUT reason text, OUT since timestamptz, OUT retry_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'tt_worker_pause_sql'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION tiktok_capi.tt_worker_pause IS
'While the worker''s delivery is paused because tiktok_capi.api_url does not answer as the Events API: the URL, why, since when and when it is tried again; no row otherwise';
REVOKE ALL ON FUNCTION tiktok_capi.tt_worker_pause FROM PUBLIC;

/*
 * Health: three more checks, and the worker check says when a wrong
 * api_url paused delivery.  triggers: every tt_capture trigger resolves
 * (a broken one queues its orders as failed).  warnings: the share of the
 * last hour's events that lost a field.  pixels: none configured, a live
 * pixel still sending to Test Events only, a disabled one with events
 * waiting.
 */
CREATE OR REPLACE FUNCTION tiktok_capi.tt_health(
    OUT "check" text, OUT status text, OUT severity integer, OUT value numeric, OUT reason text)
RETURNS SETOF record LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t record;
    lvl integer;
    db text := current_setting('tiktok_capi.database', true);
    shortage text;
    oldest timestamptz;
    sent bigint;
    failed bigint;
    total bigint;
    warned bigint;
    paused text[];
    broken text[];
    pixel_notes text[];
    size bigint;
    warnings_warn float8;
    warnings_critical float8;
    statuses CONSTANT text[] := ARRAY['ok', 'warn', 'critical'];
BEGIN
    SELECT * INTO t FROM tiktok_capi.tt_health_thresholds();
    warnings_warn := current_setting('tiktok_capi.health_warnings_warn')::float8;
    warnings_critical := current_setting('tiktok_capi.health_warnings_critical')::float8;

    -- the worker
    "check" := 'worker';
    IF NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.backend_type = 'tiktok_capi launcher') THEN
        lvl := 2; value := 0;
        reason := 'tiktok_capi is not in shared_preload_libraries: nothing is delivered';
    ELSIF current_setting('tiktok_capi.enabled') = 'off' THEN
        lvl := 1; value := 0;
        reason := 'delivery is off (tiktok_capi.enabled = off): events wait in the outbox';
    ELSIF NOT current_database() = ANY (tiktok_capi.tt_listed_databases()) THEN
        lvl := 2; value := 0;
        reason := format('this database is not in tiktok_capi.database, which lists %s: no worker delivers from it', db);
    ELSIF NOT EXISTS (SELECT 1 FROM pg_stat_activity a
                       WHERE a.backend_type = 'tiktok_capi worker' AND a.datname = current_database()) THEN
        lvl := 2; value := 0;
        shortage := tiktok_capi.tt_worker_shortage();
        reason := CASE WHEN shortage IS NULL THEN 'the delivery worker is not running: see the server log'
                       ELSE format('the delivery worker of this database is not running: %s; '
                                   'raise max_worker_processes (a restart)', shortage) END;
    ELSIF EXISTS (SELECT 1 FROM tiktok_capi.tt_worker_pause()) THEN
        -- what answered at api_url is not the Events API: nothing is sent
        SELECT format('delivery is paused since %s, events wait: %s (api_url %s); it resumes when '
                      'tiktok_capi.api_url changes, and api_url is tried again at %s',
                      date_trunc('second', w.since), w.reason, w.api_url, date_trunc('second', w.retry_at))
          INTO reason FROM tiktok_capi.tt_worker_pause() w;
        lvl := 2; value := 0;
    ELSE
        lvl := 0; value := 1;
        reason := 'the delivery worker is running';
    END IF;
    status := statuses[lvl + 1]; severity := lvl;
    RETURN NEXT;

    -- lag: the age of the oldest pending event
    "check" := 'lag';
    SELECT min(o.created_at) INTO oldest FROM tiktok_capi.outbox o WHERE o.status = 'pending';
    value := round(coalesce(extract(epoch FROM now() - oldest), 0), 1);
    lvl := CASE WHEN value >= t.lag_critical_s THEN 2 WHEN value >= t.lag_warn_s THEN 1 ELSE 0 END;
    reason := CASE WHEN oldest IS NULL THEN 'no event is waiting'
                   ELSE format('the oldest pending event waits for %s s (warn %s s, critical %s s)',
                               value, t.lag_warn_s, t.lag_critical_s) END;
    status := statuses[lvl + 1]; severity := lvl;
    RETURN NEXT;

    -- failures: the share of the last hour's settled events that failed
    "check" := 'failures';
    SELECT count(*) INTO sent FROM tiktok_capi.outbox o
     WHERE o.status = 'sent' AND o.sent_at > now() - interval '1 hour';
    SELECT count(*) INTO failed FROM tiktok_capi.outbox o
     WHERE o.status = 'failed' AND o.next_attempt_at > now() - interval '1 hour';
    value := CASE WHEN sent + failed = 0 THEN 0 ELSE round(100.0 * failed / (sent + failed), 2) END;
    lvl := CASE WHEN failed = 0 THEN 0
                WHEN value >= t.failure_critical_pct THEN 2 WHEN value >= t.failure_warn_pct THEN 1 ELSE 0 END;
    reason := format('%s of %s events settled in the last hour failed (%s%%; warn %s%%, critical %s%%)',
                     failed, sent + failed, value, t.failure_warn_pct, t.failure_critical_pct);
    status := statuses[lvl + 1]; severity := lvl;
    RETURN NEXT;

    -- paused pixels: TikTok refused their token or permission
    "check" := 'paused_pixels';
    SELECT array_agg(p.pixel_code ORDER BY p.pixel_code) INTO paused FROM tiktok_capi.pixels p
     WHERE p.enabled AND p.paused_until > now();
    value := coalesce(cardinality(paused), 0);
    lvl := CASE WHEN value > 0 THEN 2 ELSE 0 END;
    reason := CASE WHEN value = 0 THEN 'no pixel is paused'
                   ELSE format('paused, TikTok refused the token or permission: %s (fix with tt_update_pixel)',
                               array_to_string(paused, ', ')) END;
    status := statuses[lvl + 1]; severity := lvl;
    RETURN NEXT;

    -- outbox size, TOAST and indexes included
    "check" := 'outbox_size';
    size := pg_total_relation_size('tiktok_capi.outbox');
    value := size;
    lvl := CASE WHEN size >= t.outbox_critical_bytes THEN 2 WHEN size >= t.outbox_warn_bytes THEN 1 ELSE 0 END;
    reason := format('the outbox takes %s (warn %s, critical %s)', pg_size_pretty(size),
                     pg_size_pretty(t.outbox_warn_bytes), pg_size_pretty(t.outbox_critical_bytes));
    status := statuses[lvl + 1]; severity := lvl;
    RETURN NEXT;

    -- triggers: a tt_capture trigger whose mapping cannot work queues failed events
    "check" := 'triggers';
    SELECT array_agg(format('%s on %s: %s', c.trigger_name, c.table_name, c.problem)
                     ORDER BY c.table_name, c.trigger_name)
      INTO broken FROM tiktok_capi.tt_check_triggers() c WHERE c.problem IS NOT NULL;
    value := coalesce(cardinality(broken), 0);
    lvl := CASE WHEN value > 0 THEN 2 ELSE 0 END;
    reason := CASE WHEN value = 0 THEN 'every tt_capture trigger resolves its mapping'
                   ELSE format('broken, their orders are queued as failed: %s',
                               array_to_string(broken, '; ')) END;
    status := statuses[lvl + 1]; severity := lvl;
    RETURN NEXT;

    -- warnings: the share of the last hour's events that lost a field
    "check" := 'warnings';
    -- the last hour's events: sent in it, still pending, or failed in it
    SELECT count(*) INTO warned FROM tiktok_capi.outbox o
     WHERE o.warnings IS NOT NULL AND o.created_at > now() - interval '1 hour';
    SELECT count(*) + sent + failed INTO total FROM tiktok_capi.outbox o WHERE o.status = 'pending';
    total := greatest(total, warned);
    value := CASE WHEN total = 0 THEN 0 ELSE round(100.0 * warned / total, 2) END;
    lvl := CASE WHEN warned = 0 THEN 0
                WHEN value >= warnings_critical THEN 2 WHEN value >= warnings_warn THEN 1 ELSE 0 END;
    reason := format('%s of %s events queued in the last hour have warnings (%s%%; warn %s%%, critical %s%%): see tiktok_capi.recent_warnings',
                     warned, total, value, warnings_warn, warnings_critical);
    status := statuses[lvl + 1]; severity := lvl;
    RETURN NEXT;

    -- pixels: configured, live, and not left disabled with events waiting
    "check" := 'pixels';
    SELECT array_agg(n ORDER BY n) INTO pixel_notes FROM (
        SELECT 'no pixel is configured: add one with tt_add_pixel()' AS n
         WHERE NOT EXISTS (SELECT 1 FROM tiktok_capi.pixels)
        UNION ALL
        SELECT format('pixel %s sends to Test Events only (test_event_code %s): clear it with tt_update_pixel(%L, test_event_code => %L)',
                      p.pixel_code, p.test_event_code, p.pixel_code, '')
          FROM tiktok_capi.pixels p WHERE p.enabled AND p.test_event_code IS NOT NULL
        UNION ALL
        SELECT format('pixel %s is disabled and %s of its events wait: enable it with tt_update_pixel(%L, enabled => true)',
                      p.pixel_code, count(*), p.pixel_code)
          FROM tiktok_capi.pixels p JOIN tiktok_capi.outbox o ON o.pixel_code = p.pixel_code AND o.status = 'pending'
         WHERE NOT p.enabled GROUP BY p.pixel_code) notes;
    value := coalesce(cardinality(pixel_notes), 0);
    lvl := CASE WHEN value > 0 THEN 1 ELSE 0 END;
    reason := CASE WHEN value = 0 THEN 'every pixel is live and delivering'
                   ELSE array_to_string(pixel_notes, '; ') END;
    status := statuses[lvl + 1]; severity := lvl;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION tiktok_capi.tt_health IS
'One row per check (worker, lag, failures, paused_pixels, outbox_size, triggers, warnings, pixels): ok/warn/critical, the measured value and a reason; thresholds are the tiktok_capi.health_* settings';

/*
 * What each tt_capture trigger reads its fields from, the way it resolves
 * its mapping: so nobody reads the source to learn why an email is
 * missing.  One row per trigger and field; origin is 'mapping'
 * (field=column), 'default' (a column found by its name), 'off' (field=)
 * or 'none' (nothing feeds the field; source is NULL).
 */
CREATE FUNCTION tiktok_capi.tt_capture_triggers(
    OUT table_name regclass, OUT trigger_name name, OUT event text, OUT pixel_code text,
    OUT field text, OUT source text, OUT origin text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'tt_capture_triggers_sql'
LANGUAGE C STABLE;
COMMENT ON FUNCTION tiktok_capi.tt_capture_triggers IS
'Each field of each tt_capture trigger and the column (or contents_from) that feeds it; origin mapping, default, off or none';
REVOKE ALL ON FUNCTION tiktok_capi.tt_capture_triggers FROM PUBLIC;

CREATE VIEW tiktok_capi.capture_triggers AS
SELECT * FROM tiktok_capi.tt_capture_triggers();
COMMENT ON VIEW tiktok_capi.capture_triggers IS
'What each tt_capture trigger reads each event field from (origin mapping, default, off or none)';
REVOKE ALL ON tiktok_capi.capture_triggers FROM PUBLIC;

/*
 * outbox_pixel_status: last_error and last_error_at only while no success
 * came after them.  A pixel that delivers again is healthy, and an error
 * left on show after it read as trouble still going on.  The pixels table
 * keeps the last error (and its time) for the owner.
 */
CREATE OR REPLACE VIEW tiktok_capi.outbox_pixel_status AS
SELECT coalesce(p.pixel_code, o.pixel_code) AS pixel_code,
       coalesce(o.pending, 0) AS pending,
       coalesce(o.sent, 0) AS sent,
       coalesce(o.failed, 0) AS failed,
       o.lag,
       o.last_sent_at,
       p.enabled,
       CASE WHEN p.pixel_code IS NOT NULL THEN coalesce(p.paused_until > now(), false) END AS paused,
       p.paused_until,
       p.last_success_at,
       CASE WHEN p.last_error_at >= p.last_success_at OR p.last_success_at IS NULL
            THEN p.last_error END AS last_error,
       CASE WHEN p.last_error_at >= p.last_success_at OR p.last_success_at IS NULL
            THEN p.last_error_at END AS last_error_at
  FROM (SELECT pixel_code,
               count(*) FILTER (WHERE status = 'pending') AS pending,
               count(*) FILTER (WHERE status = 'sent') AS sent,
               count(*) FILTER (WHERE status = 'failed') AS failed,
               now() - min(created_at) FILTER (WHERE status = 'pending') AS lag,
               max(sent_at) AS last_sent_at
          FROM tiktok_capi.outbox
         GROUP BY pixel_code) o
  FULL JOIN tiktok_capi.pixels p ON p.pixel_code = o.pixel_code;
COMMENT ON VIEW tiktok_capi.outbox_pixel_status IS
'Per pixel: events by status, the lag of the oldest pending one, and its health (paused, last success, and the last error while no success came after it); no token';

/*
 * tt_requeue_failed leaves alone the failed events a resend cannot fix:
 *	- never built (payload {}: a trigger that could not work, an id that
 *	  collides): there is no event to send, with force or without; once
 *	  the trigger works, updating the order queues it again;
 *	- rejected by TikTok as invalid (last_error "TikTok code 400xx: ...",
 *	  as the worker writes it): the same event gets the same answer, so
 *	  they are sent again only with force => true.
 * A NOTICE says how many were left, and why.  Returns how many were
 * requeued, as before.
 */
DROP FUNCTION tiktok_capi.tt_requeue_failed(text, text, text);
CREATE FUNCTION tiktok_capi.tt_requeue_failed(
    pixel_code text DEFAULT NULL, event text DEFAULT NULL, event_id text DEFAULT NULL,
    force boolean DEFAULT false)
RETURNS bigint LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rejection CONSTANT text := '^TikTok code 400[0-9][0-9]: ';
    unbuilt bigint;
    rejected bigint;
    requeued bigint;
    message text;
    detail text;
BEGIN
    SELECT count(*) FILTER (WHERE o.payload IS NULL OR o.payload = '{}'),
           count(*) FILTER (WHERE o.payload <> '{}' AND o.last_error ~ rejection)
      INTO unbuilt, rejected
      FROM tiktok_capi.outbox o
     WHERE o.status = 'failed'
       AND (tt_requeue_failed.pixel_code IS NULL OR o.pixel_code = tt_requeue_failed.pixel_code)
       AND (tt_requeue_failed.event IS NULL OR o.event = tt_requeue_failed.event)
       AND (tt_requeue_failed.event_id IS NULL OR o.event_id = tt_requeue_failed.event_id);

    WITH requeue AS (
        UPDATE tiktok_capi.outbox o
           SET status = 'pending', attempts = 0, next_attempt_at = now(), first_attempt_at = NULL,
               last_error = NULL
         WHERE o.status = 'failed' AND o.payload <> '{}'
           AND (force OR o.last_error IS NULL OR o.last_error !~ rejection)
           AND (tt_requeue_failed.pixel_code IS NULL OR o.pixel_code = tt_requeue_failed.pixel_code)
           AND (tt_requeue_failed.event IS NULL OR o.event = tt_requeue_failed.event)
           AND (tt_requeue_failed.event_id IS NULL OR o.event_id = tt_requeue_failed.event_id)
        RETURNING 1)
    SELECT count(*) INTO requeued FROM requeue;

    IF force THEN
        rejected := 0;
    END IF;
    IF unbuilt + rejected > 0 THEN
        message := format('tt_requeue_failed left %s failed events alone: %s', unbuilt + rejected,
            concat_ws(', ',
                      CASE WHEN unbuilt > 0 THEN format('%s never built (payload {})', unbuilt) END,
                      CASE WHEN rejected > 0 THEN format('%s rejected by TikTok as invalid (code 400xx)', rejected) END));
        detail := concat_ws(' ',
            CASE WHEN unbuilt > 0 THEN 'An event never built has nothing to send, not even with force: fix what its last_error names, then update its order and it is queued again.' END,
            CASE WHEN rejected > 0 THEN 'TikTok answers a resend of a rejected event the same way.' END);
        IF rejected > 0 THEN
            RAISE NOTICE '%', message
                USING DETAIL = detail, HINT = 'force => true sends the rejected events again anyway.';
        ELSE
            RAISE NOTICE '%', message USING DETAIL = detail;
        END IF;
    END IF;
    IF requeued > 0 THEN
        PERFORM tiktok_capi.tt_wake_worker();
    END IF;
    RETURN requeued;
END
$$;
COMMENT ON FUNCTION tiktok_capi.tt_requeue_failed IS
'Send failed events again (all, or those of a pixel, event or event_id); returns how many. Events never built (payload {}) stay failed; those TikTok rejected as invalid (code 400xx) too, unless force => true. A NOTICE says how many were left and why';
REVOKE ALL ON FUNCTION tiktok_capi.tt_requeue_failed FROM PUBLIC;

/*
 * ---- More match keys ----
 * first_name, last_name and zip_code (hashed after trimming and
 * lowercasing, as email is) and city, state and country (plain:
 * lowercased, spaces removed; country as ISO 3166 alpha-2) in user{}.
 * tt_hash_name / tt_normalize_name are to names what tt_hash_email /
 * tt_normalize_email are to emails; tt_event takes the new keys as its
 * last arguments.
 */
CREATE FUNCTION tiktok_capi.tt_normalize_name(name text) RETURNS text
AS 'MODULE_PATHNAME', 'tt_normalize_name_sql'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION tiktok_capi.tt_normalize_name(text) IS
'Trimmed, lowercased first name, last name or zip code (what tt_hash_name hashes), or NULL when blank, longer than 255 bytes or holding control characters';

CREATE FUNCTION tiktok_capi.tt_hash_name(name text) RETURNS text
AS 'MODULE_PATHNAME', 'tt_hash_name_sql'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION tiktok_capi.tt_hash_name(text) IS
'SHA-256 hex of the normalized first name, last name or zip code; NULL when unusable; a 64-hex input passes through lowercased';

/*
 * ---------------------------------------------------------------------
 * Event sources and a pixel per row (issue 17).
 *
 * A configured id knows what it is: a web pixel, an app, an offline event
 * set (store and phone orders) or a CRM event set.  The worker sends each
 * request with its id's source; the builder applies each source's rules.
 * Every pixel configured before 0.3.0 is a web pixel.
 * ---------------------------------------------------------------------
 */
ALTER TABLE tiktok_capi.pixels
    ADD COLUMN event_source text NOT NULL DEFAULT 'web'
        CONSTRAINT pixels_event_source_check CHECK (event_source IN ('web', 'app', 'offline', 'crm'));
COMMENT ON COLUMN tiktok_capi.pixels.event_source IS
'What pixel_code is: web (a pixel), app (an app id), offline (an offline event set: store, phone orders) or crm (a CRM event set); sent as the request''s event_source';

DROP FUNCTION tiktok_capi.tt_add_pixel(text, text, text);
-- Checked before writing, so no constraint error can print the row (and its token).
CREATE FUNCTION tiktok_capi.tt_add_pixel(
    pixel_code text, access_token text, test_event_code text DEFAULT NULL,
    event_source text DEFAULT 'web')
RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF pixel_code IS NULL OR pixel_code !~ '^[A-Za-z0-9_-]{1,64}$' THEN
        RAISE EXCEPTION 'pixel_code must be 1 to 64 letters, digits, underscores or dashes'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF coalesce(access_token, '') = '' THEN
        RAISE EXCEPTION 'access_token must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF event_source IS NULL OR event_source NOT IN ('web', 'app', 'offline', 'crm') THEN
        RAISE EXCEPTION 'event_source must be web, app, offline or crm'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'web: a pixel code; offline: an offline event set (store, phone orders); crm: a CRM event set; app: an app id.';
    END IF;
    INSERT INTO tiktok_capi.pixels (pixel_code, access_token, test_event_code, event_source)
    VALUES (tt_add_pixel.pixel_code, tt_add_pixel.access_token, tt_add_pixel.test_event_code,
            tt_add_pixel.event_source);
END
$$;
COMMENT ON FUNCTION tiktok_capi.tt_add_pixel IS
'Add a pixel (or an app, offline or CRM event set: event_source) and its Events API access token';
REVOKE ALL ON FUNCTION tiktok_capi.tt_add_pixel FROM PUBLIC;

/*
 * event_source may change (an id added with the wrong one): the events
 * still pending go with the new one, built as they were queued.
 */
-- Every backend resolves its triggers again after the commit: a trigger's
-- config keeps its fixed pixel's event source.
CREATE FUNCTION tiktok_capi.tt_reload_trigger_configs() RETURNS void
AS 'MODULE_PATHNAME', 'tt_reload_trigger_configs_sql' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION tiktok_capi.tt_reload_trigger_configs() FROM PUBLIC;

DROP FUNCTION tiktok_capi.tt_update_pixel(text, text, text, boolean);
CREATE FUNCTION tiktok_capi.tt_update_pixel(
    pixel_code text, access_token text DEFAULT NULL,
    test_event_code text DEFAULT NULL, enabled boolean DEFAULT NULL,
    event_source text DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF access_token = '' THEN
        RAISE EXCEPTION 'access_token must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF event_source NOT IN ('web', 'app', 'offline', 'crm') THEN
        RAISE EXCEPTION 'event_source must be web, app, offline or crm'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT FROM tiktok_capi.pixels p WHERE p.pixel_code = tt_update_pixel.pixel_code
                  AND p.event_source <> tt_update_pixel.event_source) THEN
        PERFORM tiktok_capi.tt_reload_trigger_configs();
    END IF;
    UPDATE tiktok_capi.pixels p
       SET access_token = coalesce(tt_update_pixel.access_token, p.access_token),
           test_event_code = CASE WHEN tt_update_pixel.test_event_code IS NULL THEN p.test_event_code
                                  ELSE nullif(tt_update_pixel.test_event_code, '') END,
           enabled = coalesce(tt_update_pixel.enabled, p.enabled),
           event_source = coalesce(tt_update_pixel.event_source, p.event_source),
           paused_until = NULL,
           updated_at = now()
     WHERE p.pixel_code = tt_update_pixel.pixel_code;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pixel "%" is not configured', tt_update_pixel.pixel_code
            USING ERRCODE = 'undefined_object',
                  HINT = 'Add it with tiktok_capi.tt_add_pixel(); tiktok_capi.outbox_pixel_status lists the configured ones.';
    END IF;
    -- A fixed pixel resumes at once: its events that waited for it are due now.
    UPDATE tiktok_capi.outbox o
       SET next_attempt_at = now()
     WHERE o.pixel_code = tt_update_pixel.pixel_code
       AND o.status = 'pending' AND o.next_attempt_at > now();
    PERFORM tiktok_capi.tt_wake_worker();
    RETURN true;
END
$$;
COMMENT ON FUNCTION tiktok_capi.tt_update_pixel IS
'Change a pixel''s token, test_event_code (an empty string clears it), enabled flag or event_source (NULL keeps the value) and resume its delivery; an error when no such pixel';
REVOKE ALL ON FUNCTION tiktok_capi.tt_update_pixel FROM PUBLIC;

/*
 * tt_event takes what only some sources carry (a CRM lead, an offline
 * store's shop_id) and the source whose rules to apply.  New arguments go
 * at the end, so calls by position keep working.
 */
DROP FUNCTION tiktok_capi.tt_event(text, text, timestamptz, text, text, text, text, text, text,
    text, text, numeric, text, jsonb, text, text, text, text, text, text, boolean, jsonb, text);
CREATE FUNCTION tiktok_capi.tt_event(
    event text,
    event_id text,
    event_time timestamptz DEFAULT now(),
    email text DEFAULT NULL,
    phone text DEFAULT NULL,
    external_id text DEFAULT NULL,
    ttclid text DEFAULT NULL,
    ttp text DEFAULT NULL,
    ip text DEFAULT NULL,
    user_agent text DEFAULT NULL,
    locale text DEFAULT NULL,
    value numeric DEFAULT NULL,
    currency text DEFAULT NULL,
    contents jsonb DEFAULT NULL,
    content_type text DEFAULT NULL,
    order_id text DEFAULT NULL,
    description text DEFAULT NULL,
    search_string text DEFAULT NULL,
    page_url text DEFAULT NULL,
    referrer text DEFAULT NULL,
    limited_data_use boolean DEFAULT NULL,
    properties jsonb DEFAULT NULL,
    default_country text DEFAULT NULL,
    -- more match keys
    first_name text DEFAULT NULL,
    last_name text DEFAULT NULL,
    zip_code text DEFAULT NULL,
    city text DEFAULT NULL,
    state text DEFAULT NULL,
    country text DEFAULT NULL,
    -- event sources
    lead_id text DEFAULT NULL,
    lead_event_source text DEFAULT NULL,
    shop_id text DEFAULT NULL,
    event_source text DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'tt_event_sql'
LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL SAFE;
COMMENT ON FUNCTION tiktok_capi.tt_event IS
'One Events API event (an element of data[]): identifiers hashed, NULLs left out, misuse an error; event_source (web, app, offline, crm; NULL: web) applies that source''s rules';
/* ---- end of more match keys ---- */
/* ------------------------------------------------------------------------
 * Backfill: the events the tt_capture triggers would have queued for rows
 * already there (capture_backfill.c), in slices, with progress.
 * ------------------------------------------------------------------------ */

-- One row per backfill: its progress, written after each slice
CREATE TABLE tiktok_capi.backfills (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source        text NOT NULL,                 -- the table, schema-qualified
    since         timestamptz NOT NULL,
    until         timestamptz NOT NULL,
    slice_rows    integer NOT NULL,
    committing    boolean NOT NULL,              -- a commit after each slice (the procedure)
    started_by    name NOT NULL DEFAULT current_user,
    pid           integer NOT NULL DEFAULT pg_backend_pid(),
    backend_start timestamptz,
    started_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at   timestamptz,
    blocks        bigint NOT NULL,               -- the table's size when it started
    next_block    bigint,
    slices        integer NOT NULL DEFAULT 0,
    scanned       bigint NOT NULL DEFAULT 0,
    queued        bigint NOT NULL DEFAULT 0,
    failed        bigint NOT NULL DEFAULT 0,
    known         bigint NOT NULL DEFAULT 0,
    too_old       bigint NOT NULL DEFAULT 0,
    not_matching  bigint NOT NULL DEFAULT 0);
COMMENT ON TABLE tiktok_capi.backfills IS
'One row per tt_backfill run and its counts, updated after each slice; tiktok_capi.backfill_progress reads it';
REVOKE ALL ON tiktok_capi.backfills FROM PUBLIC;

CREATE FUNCTION tiktok_capi.tt_backfill_slice(
    "table" regclass, since timestamptz, until timestamptz,
    first_block bigint, end_block bigint, slice_rows integer,
    OUT next_block bigint, OUT scanned bigint, OUT queued bigint, OUT failed bigint,
    OUT known bigint, OUT too_old bigint, OUT not_matching bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'tt_backfill_slice_sql'
LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION tiktok_capi.tt_backfill_slice IS
'One slice of a backfill: the rows of blocks first_block to end_block - 1, stopping at a block boundary after slice_rows rows; tt_backfill and tt_backfill_in_slices call it';
REVOKE ALL ON FUNCTION tiktok_capi.tt_backfill_slice FROM PUBLIC;

-- The loop of both ways to backfill: commit says whether to commit after
-- each slice (a procedure called by CALL outside a transaction block)
CREATE PROCEDURE tiktok_capi.tt_backfill_run(
    "table" regclass, since timestamptz, until timestamptz, slice_rows integer,
    commit boolean, INOUT queued bigint DEFAULT NULL)
LANGUAGE plpgsql
AS $$
DECLARE
    run_id bigint;
    blocks bigint;
    next bigint := 0;
    slice_start timestamptz;
    s record;
    n integer := 0;
    too_old bigint := 0;
    max_age interval := pg_catalog.current_setting('tiktok_capi.backfill_max_age')::interval;
BEGIN
    IF "table" IS NULL OR since IS NULL OR until IS NULL OR slice_rows IS NULL THEN
        RAISE EXCEPTION 'tt_backfill: table, since, until and slice_rows must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF since >= until THEN
        RAISE EXCEPTION 'tt_backfill: since (%) must be before until (%)', since, until
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- refuse what cannot work before writing anything
    PERFORM tiktok_capi.tt_backfill_slice("table", since, until, 0, 0, slice_rows);
    IF since < pg_catalog.now() - max_age THEN
        RAISE NOTICE 'tt_backfill %: rows older than % (tiktok_capi.backfill_max_age = %) are counted and skipped, not queued',
            "table", pg_catalog.now() - max_age, max_age
            USING DETAIL = 'TikTok publishes no limit on how old an event may be; events older than about 7 days risk being rejected or ignored.';
    END IF;
    blocks := pg_catalog.pg_relation_size("table") / pg_catalog.current_setting('block_size')::bigint;
    INSERT INTO tiktok_capi.backfills (source, since, until, slice_rows, committing, blocks, next_block,
                                       backend_start)
    VALUES ("table"::text, since, until, slice_rows, commit, blocks, 0,
            (SELECT a.backend_start FROM pg_catalog.pg_stat_activity a WHERE a.pid = pg_catalog.pg_backend_pid()))
    RETURNING id INTO run_id;
    queued := 0;
    IF commit THEN
        COMMIT;
    END IF;
    WHILE next IS NOT NULL AND next < blocks LOOP
        slice_start := pg_catalog.clock_timestamp();
        s := tiktok_capi.tt_backfill_slice("table", since, until, next, blocks, slice_rows);
        n := n + 1;
        queued := queued + s.queued;
        too_old := too_old + s.too_old;
        UPDATE tiktok_capi.backfills b
           SET slices = b.slices + 1, next_block = s.next_block, updated_at = pg_catalog.clock_timestamp(),
               scanned = b.scanned + s.scanned, queued = b.queued + s.queued, failed = b.failed + s.failed,
               known = b.known + s.known, too_old = b.too_old + s.too_old,
               not_matching = b.not_matching + s.not_matching
         WHERE b.id = run_id;
        RAISE NOTICE 'tt_backfill % slice %: blocks % to % of %, % rows scanned, % queued, % failed, % already known, % too old, % outside the range or condition; % rows/s',
            "table", n, next, coalesce(s.next_block, blocks) - 1, blocks, s.scanned, s.queued, s.failed,
            s.known, s.too_old, s.not_matching,
            pg_catalog.round(s.scanned / greatest(extract(epoch FROM pg_catalog.clock_timestamp() - slice_start), 0.000001));
        next := s.next_block;
        IF commit THEN
            COMMIT;
        END IF;
    END LOOP;
    UPDATE tiktok_capi.backfills b SET finished_at = pg_catalog.clock_timestamp(), next_block = NULL
     WHERE b.id = run_id;
    IF too_old > 0 THEN
        RAISE NOTICE 'tt_backfill %: % rows older than tiktok_capi.backfill_max_age (%) were skipped', "table", too_old, max_age;
    END IF;
    IF commit THEN
        COMMIT;
    END IF;
END
$$;
COMMENT ON PROCEDURE tiktok_capi.tt_backfill_run IS
'The loop of tt_backfill and tt_backfill_in_slices';
REVOKE ALL ON PROCEDURE tiktok_capi.tt_backfill_run FROM PUBLIC;

CREATE FUNCTION tiktok_capi.tt_backfill(
    "table" regclass, since timestamptz, until timestamptz DEFAULT now(),
    slice_rows integer DEFAULT 10000)
RETURNS bigint LANGUAGE plpgsql
AS $$
DECLARE
    queued bigint;
BEGIN
    CALL tiktok_capi.tt_backfill_run("table", since, until, slice_rows, false, queued);
    RETURN queued;
END
$$;
COMMENT ON FUNCTION tiktok_capi.tt_backfill IS
'Queue the events the table''s tt_capture triggers would have queued for its rows with a time in [since, until), in one transaction; returns how many. Known keys are skipped, so a second run queues 0. For large tables, CALL tiktok_capi.tt_backfill_in_slices';
REVOKE ALL ON FUNCTION tiktok_capi.tt_backfill FROM PUBLIC;

CREATE PROCEDURE tiktok_capi.tt_backfill_in_slices(
    "table" regclass, since timestamptz, until timestamptz DEFAULT now(),
    slice_rows integer DEFAULT 10000, INOUT queued bigint DEFAULT NULL)
LANGUAGE plpgsql
AS $$
BEGIN
    CALL tiktok_capi.tt_backfill_run("table", since, until, slice_rows, true, queued);
END
$$;
COMMENT ON PROCEDURE tiktok_capi.tt_backfill_in_slices IS
'tt_backfill committing after each slice of about slice_rows rows: for large tables, CALLed outside a transaction block; queued says how many it queued';
REVOKE ALL ON PROCEDURE tiktok_capi.tt_backfill_in_slices FROM PUBLIC;

-- Each backfill, running or done, as other sessions see it
CREATE VIEW tiktok_capi.backfill_progress AS
SELECT b.id, b.source AS "table", b.started_by, b.started_at,
       CASE WHEN b.finished_at IS NOT NULL THEN 'finished'
            WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a
                          WHERE a.pid = b.pid AND a.backend_start IS NOT DISTINCT FROM b.backend_start
                            AND a.state = 'active')
            THEN 'running'
            ELSE 'interrupted' END AS state,
       b.slices, b.scanned, b.queued, b.failed, b.known, b.too_old, b.not_matching,
       CASE WHEN b.blocks = 0 THEN 100
            ELSE pg_catalog.round(100.0 * coalesce(b.next_block, b.blocks) / b.blocks, 1) END AS percent_done,
       pg_catalog.round(b.scanned / greatest(extract(epoch FROM coalesce(b.finished_at, b.updated_at) - b.started_at), 0.001))
           AS rows_per_s,
       b.updated_at, b.finished_at
  FROM tiktok_capi.backfills b;
COMMENT ON VIEW tiktok_capi.backfill_progress IS
'Each backfill: running (its session still at it), finished or interrupted (an error, a cancel, a lost session), its counts so far, how far through the table and how fast';
REVOKE ALL ON tiktok_capi.backfill_progress FROM PUBLIC;

/*
 * Several databases: tiktok_capi.database lists the databases delivered,
 * one worker each.  tt_listed_databases() reads the list as the launcher
 * does; tt_worker_shortage() says why this database has no worker when no
 * background worker slot was free for it (max_worker_processes).
 * tt_health()'s worker check uses both.
 */
CREATE FUNCTION tiktok_capi.tt_listed_databases() RETURNS text[]
AS 'MODULE_PATHNAME', 'tt_listed_databases_sql'
LANGUAGE C STABLE;
COMMENT ON FUNCTION tiktok_capi.tt_listed_databases IS
'The databases tiktok_capi.database lists, each delivered by a worker of its own';
REVOKE ALL ON FUNCTION tiktok_capi.tt_listed_databases FROM PUBLIC;

CREATE FUNCTION tiktok_capi.tt_worker_shortage() RETURNS text
AS 'MODULE_PATHNAME', 'tt_worker_shortage_sql'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION tiktok_capi.tt_worker_shortage IS
'Why this database has no delivery worker when no background worker slot was free for it (max_worker_processes); NULL otherwise';
REVOKE ALL ON FUNCTION tiktok_capi.tt_worker_shortage FROM PUBLIC;
/* ------------------------------------------------------------------------
 * Delivery counters over time (src/stats.c).
 *
 * delivery_stats: cumulative counters of the worker's requests for this
 * database, one row per pixel, "(other)" for pixels past the counters'
 * room, and the total (pixel_code NULL), kept in shared memory since
 * stats_reset: a worker restart keeps them, a clean server restart too
 * (written at shutdown, read at start), a crash restart starts them from
 * zero.  tt_stats_reset() clears this database's.
 * Both are the owner's: a monitoring role is granted SELECT on the view and
 * EXECUTE on tt_delivery_stats(), as for tt_health().
 * ------------------------------------------------------------------------
 */
CREATE FUNCTION tiktok_capi.tt_delivery_stats(
    OUT pixel_code text, OUT requests bigint, OUT events_sent bigint, OUT events_failed bigint,
    OUT events_retried bigint, OUT throttled bigint, OUT transport_errors bigint,
    OUT answers_by_code jsonb, OUT answers_by_http_status jsonb, OUT bytes_sent bigint,
    OUT request_time_count bigint, OUT request_time_sum_ms double precision,
    OUT latency_buckets jsonb, OUT last_request_at timestamptz, OUT last_success_at timestamptz,
    OUT stats_reset timestamptz)
RETURNS SETOF record LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'tt_delivery_stats_sql';
COMMENT ON FUNCTION tiktok_capi.tt_delivery_stats IS
'The delivery counters of this database, per pixel and in total; the view delivery_stats selects it';

CREATE VIEW tiktok_capi.delivery_stats AS
    SELECT * FROM tiktok_capi.tt_delivery_stats();
COMMENT ON VIEW tiktok_capi.delivery_stats IS
'Cumulative delivery counters since stats_reset, one row per pixel and a total (pixel_code NULL): requests, events sent, failed and retried, throttled requests, answers by TikTok code and HTTP status, bytes of request bodies, request time and cumulative latency buckets (ms, Prometheus-style), last request and success. Kept over a clean restart; reset by tt_stats_reset() or a crash restart';

CREATE FUNCTION tiktok_capi.tt_stats_reset()
RETURNS void LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'tt_stats_reset_sql';
COMMENT ON FUNCTION tiktok_capi.tt_stats_reset IS
'Set this database''s delivery counters (delivery_stats) back to zero, with stats_reset now';

REVOKE ALL ON FUNCTION tiktok_capi.tt_delivery_stats, tiktok_capi.tt_stats_reset FROM PUBLIC;
REVOKE ALL ON tiktok_capi.delivery_stats FROM PUBLIC;


/*
 * The browser pixel pairs with web events only: an offline or CRM event
 * set has no pixel on a page.  A helper so that the pairing functions
 * refuse such an event with a clear message rather than print a call that
 * pairs with nothing.  Executed by the SECURITY DEFINER functions only.
 */
CREATE FUNCTION tiktok_capi.tt_require_web_pixel(pixel_code text, caller text)
RETURNS boolean LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    source text;
BEGIN
    SELECT p.event_source INTO source FROM tiktok_capi.pixels p
     WHERE p.pixel_code = tt_require_web_pixel.pixel_code;
    IF source IS NOT NULL AND source <> 'web' THEN
        RAISE EXCEPTION '% is for web events: "%" is an % event set, which no browser pixel pairs with',
                        caller, tt_require_web_pixel.pixel_code, source
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Only events sent to a web pixel (event_source web) have a pixel call or a dataLayer object.';
    END IF;
    RETURN true;
END
$$;
REVOKE ALL ON FUNCTION tiktok_capi.tt_require_web_pixel(text, text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION tiktok_capi.tt_pixel_call(outbox_id bigint, advanced_matching boolean DEFAULT false)
RETURNS text LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT regexp_replace(regexp_replace(replace(replace(replace(
               CASE WHEN coalesce(tt_pixel_call.advanced_matching, false) AND idn.ident::text <> '{}'
                    THEN 'ttq.identify(' || idn.ident::text || E');\n' ELSE '' END
               || 'ttq.track(' || to_json(o.event)::text || ', '
               || json_strip_nulls(json_build_object(
                      'value', props.p -> 'value',
                      'currency', props.p -> 'currency',
                      'contents', props.p -> 'contents',
                      'content_type', props.p -> 'content_type',
                      'description', props.p -> 'description',
                      'query', coalesce(props.p -> 'search_string', props.p -> 'query')))::text
               || ', ' || json_strip_nulls(json_build_object('event_id', o.event_id))::text || ');',
               '&', '\u0026'), '<', '\u003c'), '>', '\u003e'),
               '\u2028', '\\u2028', 'g'), '\u2029', '\\u2029', 'g')
      FROM tiktok_capi.outbox o
     CROSS JOIN LATERAL (SELECT o.payload -> 'properties', o.payload -> 'user') AS props(p, u)
     CROSS JOIN LATERAL (
           SELECT json_strip_nulls(json_build_object(
                      'email', (array_agg(h.v ORDER BY h.n) FILTER (WHERE f.k = 'email'))[1],
                      'phone_number', (array_agg(h.v ORDER BY h.n) FILTER (WHERE f.k = 'phone'))[1],
                      'external_id', (array_agg(h.v ORDER BY h.n) FILTER (WHERE f.k = 'external_id'))[1]))
             FROM (VALUES ('email'), ('phone'), ('external_id')) AS f(k)
             -- a string or an array of strings; only SHA-256 hex ever reaches the page
             CROSS JOIN LATERAL jsonb_array_elements_text(
                   CASE jsonb_typeof(props.u -> f.k) WHEN 'array' THEN props.u -> f.k
                        WHEN 'string' THEN jsonb_build_array(props.u -> f.k) ELSE '[]' END) WITH ORDINALITY AS h(v, n)
            WHERE h.v ~ '^[0-9a-f]{64}$') AS idn(ident)
     WHERE o.id = tt_pixel_call.outbox_id
       AND tiktok_capi.tt_require_web_pixel(o.pixel_code, 'tt_pixel_call');
END;

CREATE OR REPLACE FUNCTION tiktok_capi.tt_datalayer(outbox_id bigint) RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT jsonb_strip_nulls(jsonb_build_object(
               'event', o.event,
               'event_id', o.event_id,
               'ecommerce', nullif(jsonb_strip_nulls(jsonb_build_object(
                   'value', props.p -> 'value',
                   'currency', props.p -> 'currency',
                   'items', (SELECT jsonb_agg(jsonb_build_object(
                                                  'item_id', i.c -> 'content_id',
                                                  'item_name', i.c -> 'content_name',
                                                  'price', i.c -> 'price',
                                                  'quantity', i.c -> 'quantity') ORDER BY i.n)
                               FROM jsonb_array_elements(
                                      CASE jsonb_typeof(props.p -> 'contents')
                                           WHEN 'array' THEN props.p -> 'contents' ELSE '[]' END)
                                    WITH ORDINALITY AS i(c, n)))),
                   '{}')))
      FROM tiktok_capi.outbox o
     CROSS JOIN LATERAL (SELECT o.payload -> 'properties') AS props(p)
     WHERE o.id = tt_datalayer.outbox_id
       AND tiktok_capi.tt_require_web_pixel(o.pixel_code, 'tt_datalayer');
END;
-- end of event sources and a pixel per row
