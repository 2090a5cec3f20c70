-- Email and external_id: normalization and hashing (tiktok_capi.tt_hash_*)
SET search_path = tiktok_capi, public;

-- what gets hashed: trimmed, lowercased
SELECT tt_normalize_email('  Alice_ABC@Gmail.com ') AS trimmed_lowered,
       tt_normalize_email(E'\tbob@example.org\n') AS tabs_and_newlines,
       tt_normalize_email(U&'\00A0carol@example.org\00A0') AS no_break_spaces;

-- lowercase is UTF-8 aware and the same in every database (no locale)
SELECT tt_normalize_email('ÉLODIE@Exemple.FR') AS latin,
       tt_normalize_email('ИВАН@Почта.РФ') AS cyrillic,
       tt_normalize_email('ΑΝΝΑ@example.gr') AS greek;

-- the hash is SHA-256 hex of exactly the normalized bytes
SELECT tt_hash_email(' Alice_ABC@Gmail.com ') AS hashed,
       tt_hash_email(' Alice_ABC@Gmail.com ')
         = encode(sha256(convert_to('alice_abc@gmail.com', 'UTF8')), 'hex') AS same_as_sha256;
SELECT tt_hash_email('ÉLODIE@Exemple.FR')
         = encode(sha256(convert_to('élodie@exemple.fr', 'UTF8')), 'hex') AS utf8_bytes_hashed;

-- unusable addresses give NULL, never an error
SELECT v AS input, tt_normalize_email(v) AS normalized, tt_hash_email(v) AS hashed
FROM (VALUES (''), ('   '), ('alice'), ('alice@'), ('@example.com'), ('a@@example.com'),
             ('a@b@example.com'), ('alice@example'), ('alice@.example.com'),
             ('alice@example..com'), ('alice@example.c'), ('alice@example.com.'),
             ('al ice@example.com'), ('<alice@example.com>'), ('alice@example.com, bob@example.com'),
             (E'alice\u0001@example.com'), ('mailto:alice@example.com')) AS t(v);

-- longer than 320 bytes: NULL
SELECT tt_normalize_email(repeat('a', 310) || '@example.com') IS NULL AS too_long,
       tt_normalize_email(repeat('a', 300) || '@example.com') IS NOT NULL AS long_ok;

-- an input that already is 64 hex characters is a hash: lowercased, not hashed again
SELECT tt_hash_email('FF8D9819FC0E12BF0D24892E45987E249A28DCE836A85CAD60E28EAAA8C6D976') AS email_passthrough,
       tt_hash_external_id(' FF8D9819FC0E12BF0D24892E45987E249A28DCE836A85CAD60E28EAAA8C6D976 ') AS external_id_passthrough,
       tt_hash_email(tt_hash_email('alice@example.com')) = tt_hash_email('alice@example.com') AS idempotent;
-- 63 hex characters are not a hash
SELECT tt_hash_external_id(repeat('a', 63)) = encode(sha256(convert_to(repeat('a', 63), 'UTF8')), 'hex') AS hashed_once;

-- external_id: trimmed, case kept
SELECT tt_hash_external_id('  CUST-0042 ') = encode(sha256('CUST-0042'::bytea), 'hex') AS trimmed,
       tt_hash_external_id('CUST-0042') <> tt_hash_external_id('cust-0042') AS case_kept,
       tt_hash_external_id('   ') IS NULL AS blank_is_null;

-- STRICT: NULL in, NULL out
SELECT tt_hash_email(NULL) IS NULL AS email, tt_hash_external_id(NULL) IS NULL AS external_id,
       tt_normalize_email(NULL) IS NULL AS normalize;

-- the lists the builder checks against
SELECT count(*) AS currencies, bool_and(currency ~ '^[A-Z]{3}$') AS all_iso FROM tt_currencies();
SELECT kind, count(*) FROM tt_event_names() GROUP BY kind ORDER BY kind;
SELECT name, current_name FROM tt_event_names() WHERE current_name IS NOT NULL ORDER BY name;
-- every listed currency is accepted by the builder (the table is searched by bisection)
SELECT count(*) AS accepted
FROM tt_currencies() AS c
WHERE tt_event('Purchase', '1', currency => lower(c)) #>> '{properties,currency}' = c;
-- and every listed event name passes as given
SELECT count(*) AS passed_as_given
FROM tt_event_names() AS n
WHERE tt_event(n.name, '1') ->> 'event' = n.name;
