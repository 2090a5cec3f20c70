/* tiktok_capi 0.1.0: install script. Objects grouped by stage. */

\echo Use "CREATE EXTENSION tiktok_capi" to load this file. \quit

-- Every role may call the pure functions; tables added later carry their own grants.
GRANT USAGE ON SCHEMA tiktok_capi TO PUBLIC;

/*
 * Hashing: normalized SHA-256 hex of customer identifiers, as TikTok's
 * advanced matching wants them.  NULL when the input holds nothing usable;
 * a 64-hex input passes through lowercased.
 */
CREATE FUNCTION tiktok_capi.tt_normalize_email(email text) RETURNS text
AS 'MODULE_PATHNAME', 'tt_normalize_email_sql'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION tiktok_capi.tt_normalize_email(text) IS
'Trimmed, lowercased email, or NULL when it does not look like local@domain';

CREATE FUNCTION tiktok_capi.tt_hash_email(email text) RETURNS text
AS 'MODULE_PATHNAME', 'tt_hash_email_sql'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION tiktok_capi.tt_hash_email(text) IS
'SHA-256 hex of the normalized email; NULL when unusable; a 64-hex input passes through lowercased';

-- The one-argument forms read tiktok_capi.default_country, so they are STABLE.
CREATE FUNCTION tiktok_capi.tt_normalize_phone(phone text) RETURNS text
AS 'MODULE_PATHNAME', 'tt_normalize_phone_sql'
LANGUAGE C STABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION tiktok_capi.tt_normalize_phone(text) IS
'E.164 form with its +, national numbers taken as from tiktok_capi.default_country; NULL when unusable';

CREATE FUNCTION tiktok_capi.tt_normalize_phone(phone text, default_country text) RETURNS text
AS 'MODULE_PATHNAME', 'tt_normalize_phone_sql'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION tiktok_capi.tt_normalize_phone(text, text) IS
'E.164 form with its +, national numbers taken as from the given ISO 3166 country; NULL when unusable';

CREATE FUNCTION tiktok_capi.tt_hash_phone(phone text) RETURNS text
AS 'MODULE_PATHNAME', 'tt_hash_phone_sql'
LANGUAGE C STABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION tiktok_capi.tt_hash_phone(text) IS
'SHA-256 hex of the E.164 phone (with +), national numbers taken as from tiktok_capi.default_country';

CREATE FUNCTION tiktok_capi.tt_hash_phone(phone text, default_country text) RETURNS text
AS 'MODULE_PATHNAME', 'tt_hash_phone_sql'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION tiktok_capi.tt_hash_phone(text, text) IS
'SHA-256 hex of the E.164 phone (with +), national numbers taken as from the given ISO 3166 country';

CREATE FUNCTION tiktok_capi.tt_hash_external_id(external_id text) RETURNS text
AS 'MODULE_PATHNAME', 'tt_hash_external_id_sql'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION tiktok_capi.tt_hash_external_id(text) IS
'SHA-256 hex of the trimmed external id; NULL when blank; a 64-hex input passes through lowercased';

/*
 * Events: one element of the Events API request's data[] array.
 */
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
    default_country text DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'tt_event_sql'
LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL SAFE;
COMMENT ON FUNCTION tiktok_capi.tt_event IS
'One Events API event (an element of data[]): identifiers hashed, NULLs left out, misuse an error';

CREATE FUNCTION tiktok_capi.tt_event_names(
    OUT name text, OUT kind text, OUT current_name text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'tt_event_names_sql'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE ROWS 22;
COMMENT ON FUNCTION tiktok_capi.tt_event_names() IS
'Event names TikTok knows: standard, and legacy (with the name it became, where renamed)';

CREATE FUNCTION tiktok_capi.tt_currencies(OUT currency text)
RETURNS SETOF text
AS 'MODULE_PATHNAME', 'tt_currencies_sql'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE ROWS 62;
COMMENT ON FUNCTION tiktok_capi.tt_currencies() IS
'ISO 4217 currency codes TikTok accepts';

/*
 * Configuration: one row per TikTok pixel.  The access token is readable by
 * no ordinary role: PUBLIC has no privileges on the table or its functions.
 */
CREATE TABLE tiktok_capi.pixels (
    pixel_code text PRIMARY KEY CHECK (pixel_code ~ '^[A-Za-z0-9_-]{1,64}$'),
    access_token text NOT NULL CHECK (access_token <> ''),
    test_event_code text,
    enabled boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- health, written by the worker
    last_success_at timestamptz,
    last_error text,
    last_error_at timestamptz,
    paused_until timestamptz
);
REVOKE ALL ON tiktok_capi.pixels FROM PUBLIC;
COMMENT ON TABLE tiktok_capi.pixels IS
'TikTok pixels events are sent to, with their access tokens; readable by the owner only';
COMMENT ON COLUMN tiktok_capi.pixels.paused_until IS
'Set by the worker when TikTok refused the token or permission (40105, 40001); cleared by tt_update_pixel';

-- Wakes the delivery worker at commit (used when a pixel is fixed).
CREATE FUNCTION tiktok_capi.tt_wake_worker() RETURNS void
AS 'MODULE_PATHNAME', 'tt_wake_worker_sql' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION tiktok_capi.tt_wake_worker() FROM PUBLIC;

-- Checked before writing, so no constraint error can print the row (and its token).
CREATE FUNCTION tiktok_capi.tt_add_pixel(
    pixel_code text, access_token text, test_event_code text DEFAULT NULL)
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
    INSERT INTO tiktok_capi.pixels (pixel_code, access_token, test_event_code)
    VALUES (tt_add_pixel.pixel_code, tt_add_pixel.access_token, tt_add_pixel.test_event_code);
END
$$;
COMMENT ON FUNCTION tiktok_capi.tt_add_pixel IS
'Add a pixel and its Events API access token';

-- NULL arguments keep the current value; test_event_code => '' removes it.
CREATE FUNCTION tiktok_capi.tt_update_pixel(
    pixel_code text, access_token text DEFAULT NULL,
    test_event_code text DEFAULT NULL, enabled boolean DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF access_token = '' THEN
        RAISE EXCEPTION 'access_token must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE tiktok_capi.pixels p
       SET access_token = coalesce(tt_update_pixel.access_token, p.access_token),
           test_event_code = CASE WHEN tt_update_pixel.test_event_code IS NULL THEN p.test_event_code
                                  ELSE nullif(tt_update_pixel.test_event_code, '') END,
           enabled = coalesce(tt_update_pixel.enabled, p.enabled),
           paused_until = NULL,
           updated_at = now()
     WHERE p.pixel_code = tt_update_pixel.pixel_code;
    IF NOT FOUND THEN
        RETURN false;
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
'Change a pixel''s token, test_event_code or enabled flag (NULL keeps the value) and resume its delivery; false when no such pixel';
REVOKE ALL ON FUNCTION tiktok_capi.tt_add_pixel, tiktok_capi.tt_update_pixel FROM PUBLIC;

/*
 * The outbox: one row per event, written in the order's transaction (so it
 * exists if and only if the order committed), WAL-logged so a crash cannot
 * lose it.  (pixel_code, event, event_id) is TikTok's deduplication key.
 *
 * status: pending (waiting to be sent, due at next_attempt_at), sent,
 * failed (last_error says why).  The worker claims pending events in
 * memory and writes each one once, when it knows its fate.
 */
CREATE TABLE tiktok_capi.outbox (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pixel_code text NOT NULL,
    event text NOT NULL,
    event_id text NOT NULL,
    event_time timestamptz NOT NULL,
    payload jsonb NOT NULL,
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sent', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    first_attempt_at timestamptz,
    last_error text,
    warnings text[],
    request_id text,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz,
    CONSTRAINT outbox_dedup_key UNIQUE (pixel_code, event, event_id)
) WITH (fillfactor = 90,
       -- a queue: most rows die soon after birth, so vacuum it early and
       -- unthrottled, or a burst of events outgrows the vacuum
       autovacuum_vacuum_cost_delay = 0,
       autovacuum_vacuum_scale_factor = 0.01,
       autovacuum_vacuum_insert_scale_factor = 0.01,
       autovacuum_analyze_scale_factor = 0.02);
REVOKE ALL ON tiktok_capi.outbox FROM PUBLIC;
COMMENT ON TABLE tiktok_capi.outbox IS
'Events waiting for, or done with, delivery to TikTok; one row per (pixel_code, event, event_id)';
COMMENT ON COLUMN tiktok_capi.outbox.warnings IS
'What the trigger dropped from the event (an unusable email, currency, ...); the order committed regardless';

-- The worker's claim: due pending events, oldest first.
CREATE INDEX outbox_due_idx ON tiktok_capi.outbox (next_attempt_at, id)
    WHERE status = 'pending';
-- Retention and purge of delivered rows.
CREATE INDEX outbox_sent_idx ON tiktok_capi.outbox (sent_at) WHERE status = 'sent';
-- Requeue of failed rows.
CREATE INDEX outbox_failed_idx ON tiktok_capi.outbox (pixel_code) WHERE status = 'failed';

CREATE FUNCTION tiktok_capi.tt_enqueue(pixel_code text, event jsonb) RETURNS bigint
AS 'MODULE_PATHNAME', 'tt_enqueue_sql'
LANGUAGE C VOLATILE CALLED ON NULL INPUT;
COMMENT ON FUNCTION tiktok_capi.tt_enqueue IS
'Queue an event built by tt_event for a pixel (NULL: the only pixel); returns its outbox id, the existing one for a repeat';
REVOKE ALL ON FUNCTION tiktok_capi.tt_enqueue FROM PUBLIC;

CREATE FUNCTION tiktok_capi.tt_requeue_failed(
    pixel_code text DEFAULT NULL, event text DEFAULT NULL, event_id text DEFAULT NULL)
RETURNS bigint LANGUAGE sql
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT tiktok_capi.tt_wake_worker();
    WITH requeued AS (
        UPDATE tiktok_capi.outbox o
           SET status = 'pending', attempts = 0, next_attempt_at = now(), first_attempt_at = NULL,
               last_error = NULL
         WHERE o.status = 'failed'
           AND (tt_requeue_failed.pixel_code IS NULL OR o.pixel_code = tt_requeue_failed.pixel_code)
           AND (tt_requeue_failed.event IS NULL OR o.event = tt_requeue_failed.event)
           AND (tt_requeue_failed.event_id IS NULL OR o.event_id = tt_requeue_failed.event_id)
        RETURNING 1)
    SELECT count(*) FROM requeued;
END;
COMMENT ON FUNCTION tiktok_capi.tt_requeue_failed IS
'Send failed events again (all, or those of a pixel, event or event_id); returns how many';

CREATE FUNCTION tiktok_capi.tt_purge_sent(older_than interval DEFAULT '7 days')
RETURNS bigint LANGUAGE sql
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    WITH purged AS (
        DELETE FROM tiktok_capi.outbox o
         WHERE o.status = 'sent' AND o.sent_at < now() - tt_purge_sent.older_than
        RETURNING 1)
    SELECT count(*) FROM purged;
END;
COMMENT ON FUNCTION tiktok_capi.tt_purge_sent IS
'Delete delivered events older than the interval; returns how many';
REVOKE ALL ON FUNCTION tiktok_capi.tt_requeue_failed, tiktok_capi.tt_purge_sent FROM PUBLIC;

/*
 * Monitoring views: no tokens, no payloads.  GRANT SELECT to a monitoring role.
 */
CREATE VIEW tiktok_capi.outbox_status AS
SELECT s.status,
       count(o.id) AS events,
       min(o.created_at) AS oldest,
       max(o.created_at) AS newest,
       CASE WHEN s.status = 'pending' THEN now() - min(o.created_at) END AS lag
  FROM (VALUES (1, 'pending'), (2, 'sent'), (3, 'failed')) AS s(ord, status)
  LEFT JOIN tiktok_capi.outbox o ON o.status = s.status
 GROUP BY s.ord, s.status
 ORDER BY s.ord;
COMMENT ON VIEW tiktok_capi.outbox_status IS
'Events per status, oldest and newest, and the lag: the age of the oldest pending event';

CREATE VIEW tiktok_capi.outbox_pixel_status AS
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
       p.last_error,
       p.last_error_at
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
'Per pixel: events by status, the lag of the oldest pending one, and its health (paused, last success, last error); no token';
REVOKE ALL ON tiktok_capi.outbox_status, tiktok_capi.outbox_pixel_status FROM PUBLIC;

/*
 * Capture: the order trigger.  SECURITY DEFINER with a pinned search_path,
 * the one such entry point, so the application role needs no rights on
 * the outbox.  Only the owner may attach it (EXECUTE is checked at CREATE
 * TRIGGER, not when it fires).
 */
CREATE FUNCTION tiktok_capi.tt_capture() RETURNS trigger
AS 'MODULE_PATHNAME', 'tt_capture'
LANGUAGE C SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION tiktok_capi.tt_capture() IS
'Trigger: queue a TikTok event for each row. Arguments: event name, then field=column mappings and pixel=CODE';
REVOKE ALL ON FUNCTION tiktok_capi.tt_capture() FROM PUBLIC;

CREATE FUNCTION tiktok_capi.tt_attach(
    orders regclass, event text, mapping text[] DEFAULT '{}',
    pixel text DEFAULT NULL, condition text DEFAULT NULL, trigger_name name DEFAULT NULL)
RETURNS text
AS 'MODULE_PATHNAME', 'tt_attach'
LANGUAGE C VOLATILE CALLED ON NULL INPUT;
COMMENT ON FUNCTION tiktok_capi.tt_attach IS
'Check a field=column mapping against the table and create the tt_capture trigger; returns the statement it ran';
REVOKE ALL ON FUNCTION tiktok_capi.tt_attach FROM PUBLIC;

-- pg_dump keeps the configuration and the queue
SELECT pg_catalog.pg_extension_config_dump('tiktok_capi.pixels', '');
SELECT pg_catalog.pg_extension_config_dump('tiktok_capi.outbox', '');
SELECT pg_catalog.pg_extension_config_dump('tiktok_capi.outbox_id_seq', '');
