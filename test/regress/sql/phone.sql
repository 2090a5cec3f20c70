-- Phone numbers: E.164 with its '+', then SHA-256 (tiktok_capi.tt_hash_phone)
SET search_path = tiktok_capi, public;

-- TikTok's published example: (+1)2133734253 is hashed as +12133734253
SELECT tt_normalize_phone('(+1)2133734253') AS e164,
       tt_hash_phone('(+1)2133734253') AS hashed,
       tt_hash_phone('(+1)2133734253') = encode(sha256('+12133734253'::bytea), 'hex') AS is_sha256_of_e164,
       tt_hash_phone('(+1)2133734253') <> encode(sha256('12133734253'::bytea), 'hex') AS not_without_plus;

-- separators go; '+' or '00' means the number carries its country code
SELECT v AS input, tt_normalize_phone(v) AS e164
FROM (VALUES ('+1 (213) 373-4253'), ('+44 7911.123.456'), ('0044 7911 123456'),
             ('+49/30/1234567'), (U&'+33\00A06\00A012\00A034\00A056\00A078'), ('  +81 3-1234-5678  ')) AS t(v);

-- a national number needs a country: the argument, else tiktok_capi.default_country
SELECT tt_normalize_phone('07911 123456') IS NULL AS national_without_country,
       tt_normalize_phone('07911 123456', 'GB') AS gb,
       tt_normalize_phone('(213) 373-4253', 'us') AS us,
       tt_normalize_phone('1-213-373-4253', 'US') AS us_trunk_1,
       tt_normalize_phone('06 1234 5678', 'IT') AS it_keeps_zero,
       tt_normalize_phone('06 30 123 4567', 'HU') AS hu_trunk_06,
       tt_normalize_phone('8 (912) 345-67-89', 'RU') AS ru_trunk_8,
       tt_normalize_phone('030 1234567', 'DE') AS de,
       tt_normalize_phone('+44 7911 123456', 'DE') AS plus_wins_over_country;

SET tiktok_capi.default_country = 'GB';
SELECT tt_normalize_phone('07911 123456') AS from_setting,
       tt_hash_phone('07911 123456') = tt_hash_phone('+447911123456') AS same_hash;
SET tiktok_capi.default_country = 'fr';
SELECT tt_normalize_phone('06 12 34 56 78') AS fr;
RESET tiktok_capi.default_country;

-- unusable: NULL
SELECT v AS input, tt_normalize_phone(v, 'US') AS e164, tt_hash_phone(v, 'US') AS hashed
FROM (VALUES (''), ('   '), ('555-CALL'), ('213 373 4253 ext 12'), ('213+3734253'),
             ('++12133734253'), ('+1234567'), ('+1234567890123456'), ('+0123456789'),
             ('12345'), (repeat('9', 40)), ('0000'), ('+'), ('()-.')) AS t(v);

-- a 64-hex input is a hash already
SELECT tt_hash_phone(upper(encode(sha256('+12133734253'::bytea), 'hex')))
         = encode(sha256('+12133734253'::bytea), 'hex') AS passthrough;

-- a country that does not exist is the caller's mistake: an error
SELECT tt_normalize_phone('07911 123456', 'XX');
SELECT tt_hash_phone('07911 123456', 'GBR');
SET tiktok_capi.default_country = 'England';
SET tiktok_capi.default_country = '';
SELECT tt_normalize_phone('07911 123456') IS NULL AS empty_setting_means_none;

-- STRICT
SELECT tt_hash_phone(NULL) IS NULL AS one_arg, tt_hash_phone('+12133734253', NULL) IS NULL AS null_country;
