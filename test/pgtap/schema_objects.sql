-- The extension's SQL surface: every function exists with the declared
-- volatility and strictness, and a role with no grants can call the pure ones.
BEGIN;
SELECT plan(94);

SELECT has_schema('tiktok_capi');
SELECT has_extension('tiktok_capi');
SELECT is((SELECT extversion FROM pg_extension WHERE extname = 'tiktok_capi'), '0.3.0', 'version 0.3.0');
SELECT is((SELECT extrelocatable FROM pg_extension WHERE extname = 'tiktok_capi'), false, 'not relocatable');

-- name, argument types, volatility, strict
CREATE TEMP TABLE expected_functions (name text, args text[], volatility text, strict boolean);
INSERT INTO expected_functions VALUES
    ('tt_normalize_email', '{text}', 'immutable', true),
    ('tt_hash_email', '{text}', 'immutable', true),
    ('tt_normalize_phone', '{text}', 'stable', true),
    ('tt_normalize_phone', '{text,text}', 'immutable', true),
    ('tt_hash_phone', '{text}', 'stable', true),
    ('tt_hash_phone', '{text,text}', 'immutable', true),
    ('tt_hash_external_id', '{text}', 'immutable', true),
    ('tt_normalize_name', '{text}', 'immutable', true),
    ('tt_hash_name', '{text}', 'immutable', true),
    ('tt_event', '{text,text,"timestamp with time zone",text,text,text,text,text,text,text,text,numeric,text,jsonb,text,text,text,text,text,text,boolean,jsonb,text,text,text,text,text,text,text,text,text,text,text}', 'stable', false);

SELECT has_function('tiktok_capi', name, args, name || '(' || array_to_string(args, ', ') || ') exists')
FROM expected_functions;
SELECT volatility_is('tiktok_capi', name, args, volatility, name || '(' || array_length(args, 1) || ' args) is ' || volatility)
FROM expected_functions;
SELECT CASE WHEN strict THEN is_strict('tiktok_capi', name, args, name || '(' || array_length(args, 1) || ' args) is strict')
            ELSE isnt_strict('tiktok_capi', name, args, name || '(' || array_length(args, 1) || ' args) is called on NULL input') END
FROM expected_functions;
SELECT function_lang_is('tiktok_capi', name, args, 'c', name || '(' || array_length(args, 1) || ' args) is written in C')
FROM expected_functions;

SELECT has_function('tiktok_capi', 'tt_event_names', '{}'::name[], 'tt_event_names() exists');
SELECT has_function('tiktok_capi', 'tt_currencies', '{}'::name[], 'tt_currencies() exists');
SELECT has_function('tiktok_capi', 'tt_ttclid', '{text}'::name[], 'tt_ttclid(text) exists');
SELECT volatility_is('tiktok_capi', 'tt_ttclid', '{text}'::name[], 'immutable', 'tt_ttclid is immutable');
CREATE TEMP TABLE pure_functions AS
SELECT p.oid FROM pg_proc p
 WHERE pronamespace = 'tiktok_capi'::regnamespace
   AND (proname IN (SELECT name FROM expected_functions) OR proname IN ('tt_event_names', 'tt_currencies', 'tt_ttclid'));
SELECT is(count(*)::int, 13, 'thirteen pure functions') FROM pure_functions;
SELECT ok(bool_and(proparallel = 's'), 'every pure function is PARALLEL SAFE')
FROM pg_proc WHERE oid IN (SELECT oid FROM pure_functions);

-- a role with no grants at all can execute the pure functions
CREATE ROLE tt_no_grants NOLOGIN;
SELECT ok(has_function_privilege('tt_no_grants', p.oid, 'EXECUTE'),
          'PUBLIC can execute ' || p.oid::regprocedure::text)
FROM pg_proc p WHERE oid IN (SELECT oid FROM pure_functions)
ORDER BY p.oid::regprocedure::text;

-- and none of the functions that touch pixels or the outbox
SELECT ok(NOT has_function_privilege('tt_no_grants', p.oid, 'EXECUTE'),
          'PUBLIC cannot execute ' || p.oid::regprocedure::text)
FROM pg_proc p WHERE pronamespace = 'tiktok_capi'::regnamespace
   AND oid NOT IN (SELECT oid FROM pure_functions)
ORDER BY p.oid::regprocedure::text;

SET ROLE tt_no_grants;
SELECT is(tiktok_capi.tt_hash_email('Alice@Example.com'),
          encode(sha256('alice@example.com'::bytea), 'hex'), 'a role without grants hashes an email');
SELECT is(tiktok_capi.tt_event('Lead', 'L-9', '2025-01-01 00:00:00+00') ->> 'event_id', 'L-9',
          'a role without grants builds an event');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
