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
