/*
 * tiktok_capi 0.1.0 -> 0.2.0.  A new install runs the 0.1.0 script and then
 * this one, so there is one definition of every object and the upgrade path
 * is the path every install takes.
 */

\echo Use "ALTER EXTENSION tiktok_capi UPDATE TO '0.2.0'" to load this file. \quit

/*
 * Pairing with the browser pixel: the page's ttq.track call and the server
 * event carry the same name and event_id, so TikTok counts the pair once.
 */

/*
 * There is no tt_pixel_base: the pixel's base code (the snippet that loads
 * TikTok's script and defines ttq) is TikTok's own, copied from its Events
 * Manager, and TikTok changes it over time.  A copy shipped here would go
 * stale and would be ours to keep safe; the page keeps TikTok's snippet and
 * the database hands it only the event it queued.
 */

-- The server event matches best with the click id, which only the landing
-- URL carries: the shop keeps it with the session or the order.  The query
-- string first, then the fragment, where hash-routed shops end up with it.
-- Only percent escapes are decoded ('+' stays: a click id has no spaces);
-- an escape that is not of printable ASCII gives NULL, never an error, as
-- for other customer data.
CREATE FUNCTION tiktok_capi.tt_ttclid(url text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
BEGIN ATOMIC
    WITH raw AS (
        SELECT substr(q.param, 8) AS v
          FROM (VALUES (1, substring(url FROM '^[^#?]*\?([^#]*)')),
                       (2, (SELECT coalesce(substring(f.f FROM '\?(.*)$'), f.f)
                              FROM substring(url FROM '#(.*)$') AS f(f)))) AS part(ord, params),
               unnest(string_to_array(part.params, '&')) WITH ORDINALITY AS q(param, n)
         WHERE q.param LIKE 'ttclid=_%'
         ORDER BY part.ord, q.n
         LIMIT 1)
    -- click ids are printable ASCII: an escape of anything else, or one
    -- that is malformed, makes the value unusable
    SELECT CASE WHEN raw.v !~* '%(?![2-6][0-9a-f]|7[0-9a-e])' AND raw.v !~ '[[:cntrl:]]'
                THEN (SELECT string_agg(CASE WHEN t.m[1] IS NULL THEN t.m[2]
                                             ELSE convert_from(decode(replace(t.m[1], '%', ''), 'hex'), 'UTF8')
                                        END, '' ORDER BY t.k)
                        FROM regexp_matches(raw.v, '((?:%[0-9A-Fa-f]{2})+)|([^%]+)', 'g')
                             WITH ORDINALITY AS t(m, k))
           END
      FROM raw;
END;
COMMENT ON FUNCTION tiktok_capi.tt_ttclid(text) IS
'The ttclid parameter of a landing URL, percent-decoded (query string first, then a hash route''s); NULL when absent, empty or not valid text';

-- The thank-you page's call, built from the queued event itself, so name,
-- event_id, value, currency and contents cannot drift from the server's.
-- It is inlined in a <script> element: JSON text with <, >, & and the line
-- terminators U+2028, U+2029 written as \u escapes, so no product name can
-- close the element or open a comment.  Only already-hashed identifiers,
-- and only when asked: most pages need none.  SECURITY DEFINER so that the
-- web application reads one event, never the outbox.
CREATE FUNCTION tiktok_capi.tt_pixel_call(outbox_id bigint, advanced_matching boolean DEFAULT false)
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
     WHERE o.id = tt_pixel_call.outbox_id;
END;
COMMENT ON FUNCTION tiktok_capi.tt_pixel_call(bigint, boolean) IS
'The thank-you page''s ttq.track(event, properties, {event_id}) for a queued event, safe to inline in <script>; with advanced_matching, a ttq.identify of its hashed email, phone and external_id first. NULL when no such outbox row. SECURITY DEFINER, not for PUBLIC: the owner grants EXECUTE to the web application''s role';

-- The page knows the order, not the outbox id: find the event by its
-- deduplication key, the key the pixel call must repeat.
CREATE FUNCTION tiktok_capi.tt_pixel_call(
    pixel_code text, event text, event_id text, advanced_matching boolean DEFAULT false)
RETURNS text LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT tiktok_capi.tt_pixel_call(o.id, tt_pixel_call.advanced_matching)
      FROM tiktok_capi.outbox o
     WHERE o.pixel_code = tt_pixel_call.pixel_code
       AND o.event = tt_pixel_call.event
       AND o.event_id = tt_pixel_call.event_id;
END;
COMMENT ON FUNCTION tiktok_capi.tt_pixel_call(text, text, text, boolean) IS
'tt_pixel_call for the event queued under (pixel_code, event, event_id); NULL when there is none (not queued, not yet committed, rolled back, purged or erased). SECURITY DEFINER, not for PUBLIC: the owner grants EXECUTE to the web application''s role';

-- Shops that fire the pixel from Google Tag Manager read the event from the
-- dataLayer: the same event and event_id, ecommerce in GA4's shape.  jsonb,
-- for the page's template to serialize; inlined in a <script>, it needs the
-- same escaping as tt_pixel_call's text.
CREATE FUNCTION tiktok_capi.tt_datalayer(outbox_id bigint) RETURNS jsonb
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
     WHERE o.id = tt_datalayer.outbox_id;
END;
COMMENT ON FUNCTION tiktok_capi.tt_datalayer(bigint) IS
'The queued event as a Google Tag Manager dataLayer object: event, event_id, ecommerce {value, currency, items [{item_id, item_name, price, quantity}]}. NULL when no such outbox row. SECURITY DEFINER, not for PUBLIC: the owner grants EXECUTE to the web application''s role';

CREATE FUNCTION tiktok_capi.tt_datalayer(pixel_code text, event text, event_id text) RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT tiktok_capi.tt_datalayer(o.id)
      FROM tiktok_capi.outbox o
     WHERE o.pixel_code = tt_datalayer.pixel_code
       AND o.event = tt_datalayer.event
       AND o.event_id = tt_datalayer.event_id;
END;
COMMENT ON FUNCTION tiktok_capi.tt_datalayer(text, text, text) IS
'tt_datalayer for the event queued under (pixel_code, event, event_id); NULL when there is none (not queued, not yet committed, rolled back, purged or erased). SECURITY DEFINER, not for PUBLIC: the owner grants EXECUTE to the web application''s role';

REVOKE ALL ON FUNCTION tiktok_capi.tt_pixel_call(bigint, boolean),
    tiktok_capi.tt_pixel_call(text, text, text, boolean),
    tiktok_capi.tt_datalayer(bigint),
    tiktok_capi.tt_datalayer(text, text, text) FROM PUBLIC;

/*
 * Production duties: consent, erasure, backups and health.
 */

/*
 * Erasure.  tt_forget() deletes every outbox row, queued, sent or failed,
 * whose payload carries one of a person's identifiers, hashed the way the
 * trigger hashes them, and leaves a line here that names which kinds of
 * identifier were given, never the identifier or its hash.
 */
CREATE TABLE tiktok_capi.erasures (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    erased_at timestamptz NOT NULL DEFAULT now(),
    erased_by name NOT NULL DEFAULT current_user,
    identifiers text[] NOT NULL,
    events_removed bigint NOT NULL
);
REVOKE ALL ON tiktok_capi.erasures FROM PUBLIC;
COMMENT ON TABLE tiktok_capi.erasures IS
'One line per tt_forget() call: when, by whom, which kinds of identifier, how many events; never the identifier';
SELECT pg_catalog.pg_extension_config_dump('tiktok_capi.erasures', '');
SELECT pg_catalog.pg_extension_config_dump('tiktok_capi.erasures_id_seq', '');

/*
 * The exclusive side of the worker's sending lock (TT_SENDING_LOCK in
 * tiktok_capi.h) waits for the requests in flight and holds off the next
 * claim until this transaction ends: no event of the person is sent once
 * tt_forget() has returned, and none is sent after a commit.
 */
CREATE FUNCTION tiktok_capi.tt_forget(
    email text DEFAULT NULL, phone text DEFAULT NULL, external_id text DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    email_hash text := tiktok_capi.tt_hash_email(email);
    phone_hash text := tiktok_capi.tt_hash_phone(phone);
    external_id_hash text := tiktok_capi.tt_hash_external_id(external_id);
    kinds text[];
    removed bigint;
BEGIN
    IF email IS NOT NULL AND email_hash IS NULL
       OR phone IS NOT NULL AND phone_hash IS NULL
       OR external_id IS NOT NULL AND external_id_hash IS NULL THEN
        RAISE EXCEPTION 'an identifier given to tt_forget() cannot be normalized'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the email as stored, the phone in E.164 (+country code) or set tiktok_capi.default_country.';
    END IF;
    kinds := array_remove(ARRAY[CASE WHEN email_hash IS NOT NULL THEN 'email' END,
                                CASE WHEN phone_hash IS NOT NULL THEN 'phone' END,
                                CASE WHEN external_id_hash IS NOT NULL THEN 'external_id' END], NULL);
    IF cardinality(kinds) = 0 THEN
        RAISE EXCEPTION 'tt_forget() needs an email, a phone or an external_id'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;

    PERFORM pg_advisory_xact_lock(8388353928783921153);
    -- a string, or an array of them: @> matches an element of either
    DELETE FROM tiktok_capi.outbox o
     WHERE o.payload->'user'->'email' @> to_jsonb(email_hash)
        OR o.payload->'user'->'phone' @> to_jsonb(phone_hash)
        OR o.payload->'user'->'external_id' @> to_jsonb(external_id_hash);
    GET DIAGNOSTICS removed = ROW_COUNT;
    INSERT INTO tiktok_capi.erasures (identifiers, events_removed) VALUES (kinds, removed);
    RETURN removed;
END
$$;
COMMENT ON FUNCTION tiktok_capi.tt_forget IS
'Erase a person: delete every outbox event carrying their email, phone or external_id (hashed as the trigger does); returns how many; logs the erasure without the identifier';
REVOKE ALL ON FUNCTION tiktok_capi.tt_forget FROM PUBLIC;

/* Health thresholds (settings tiktok_capi.health_*), read by tt_health() */
CREATE FUNCTION tiktok_capi.tt_health_thresholds(
    OUT lag_warn_s integer, OUT lag_critical_s integer,
    OUT failure_warn_pct float8, OUT failure_critical_pct float8,
    OUT outbox_warn_bytes bigint, OUT outbox_critical_bytes bigint)
AS 'MODULE_PATHNAME', 'tt_health_thresholds'
LANGUAGE C STABLE;

/*
 * Health: one row per check, for an alert or postgres_exporter.  severity
 * is 0 ok, 1 warn, 2 critical; value is the measured figure (seconds,
 * percent, pixels, bytes).  SECURITY DEFINER so a monitoring role granted
 * EXECUTE needs no rights on the outbox or the pixels.
 *
 * A failed event keeps the next_attempt_at of its last attempt, which is
 * when it failed, within one round: that dates the last hour's failures
 * without a column of its own.
 */
CREATE FUNCTION tiktok_capi.tt_health(
    OUT "check" text, OUT status text, OUT severity integer, OUT value numeric, OUT reason text)
RETURNS SETOF record LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t record;
    lvl integer;
    db text := current_setting('tiktok_capi.database', true);
    oldest timestamptz;
    sent bigint;
    failed bigint;
    paused text[];
    size bigint;
    statuses CONSTANT text[] := ARRAY['ok', 'warn', 'critical'];
BEGIN
    SELECT * INTO t FROM tiktok_capi.tt_health_thresholds();

    -- the worker
    "check" := 'worker';
    IF NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.backend_type = 'tiktok_capi launcher') THEN
        lvl := 2; value := 0;
        reason := 'tiktok_capi is not in shared_preload_libraries: nothing is delivered';
    ELSIF current_setting('tiktok_capi.enabled') = 'off' THEN
        lvl := 1; value := 0;
        reason := 'delivery is off (tiktok_capi.enabled = off): events wait in the outbox';
    ELSIF db IS DISTINCT FROM current_database() THEN
        lvl := 2; value := 0;
        reason := format('the worker delivers from database %s (tiktok_capi.database), not this one', db);
    ELSIF NOT EXISTS (SELECT 1 FROM pg_stat_activity a
                       WHERE a.backend_type = 'tiktok_capi worker' AND a.datname = current_database()) THEN
        lvl := 2; value := 0;
        reason := 'the delivery worker is not running: see the server log';
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
END
$$;
COMMENT ON FUNCTION tiktok_capi.tt_health IS
'One row per check (worker, lag, failures, paused_pixels, outbox_size): ok/warn/critical, the measured value and a reason; thresholds are the tiktok_capi.health_* settings';
REVOKE ALL ON FUNCTION tiktok_capi.tt_health, tiktok_capi.tt_health_thresholds FROM PUBLIC;
