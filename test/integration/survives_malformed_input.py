"""Bad input never breaks tiktok_capi.  A corpus of more than 5,000 malformed
values (corpora/malformed.py), generated from a fixed seed plus hand-picked
edge cases (broken UTF-8 in a SQL_ASCII database, control characters, lone
combining and RTL marks, strings of 1 MB and more, NaN, Infinity, 1e130000,
-0, thousands of decimals, infinite and out-of-range times, jsonb nested
thousands of levels deep, arrays of 100,000 elements, contents and fields of
the wrong type, order columns of the wrong types) goes through every SQL
function and through the order trigger, in a UTF8 database and in a SQL_ASCII
one.  It proves that:
- no server process crashes, and no call ends in an internal error;
- every call ends in a value of the documented shape, a documented NULL, or
  an error with a SQLSTATE and a clear message;
- every malformed order commits (INSERT and UPDATE, plain and deferred
  triggers, columns of the wrong types), its bad fields dropped and noted;
- every captured event ends sent, or failed with a reason, and the Events
  API (the mock) is sent nothing it rejects."""
import random
import re
import subprocess
import time

from corpora.malformed import GIANTS, SEED, corpus
from harness import PIXEL, Mock, Tap, configure, install, no_crash, server_log, wait_until

UTF8_DB = "postgres"          # the worker's database at first
ASCII_DB = "fuzz_ascii"       # SQL_ASCII: text may hold any byte but NUL

SEP = "\x1f"                  # between the columns of psql's answers

tap = Tap(24)


# psql reading a script on stdin and going on past errors; returns
# (exit code, stdout, stderr).  Bytes are decoded with replacement: the
# SQL_ASCII database may answer with any byte.
def run(script, db):
    r = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-F", SEP, "-v", "VERBOSITY=verbose", "-d", db,
                        "-f", "-"], input=script.encode(), capture_output=True)
    return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")


# A statement whose answer the test needs: an error here is the test's own.
def query(sql, db):
    rc, out, err = run(sql, db)
    if rc != 0 or "ERROR:" in err:
        raise RuntimeError(f"{db}: {err.strip()[:800]}\n  in: {sql[:300]}")
    return out.strip()


# The rows of a query, as lists of text.
def rows(sql, db):
    return [line.split(SEP) for line in query(sql, db).splitlines() if line]


READY = "database system is ready to accept connections"


# After a crash the postmaster resets every process and starts again: wait
# until the log says it is ready once more than before, and it answers.
def server_back(ready_before):
    return wait_until(lambda: server_log().count(READY) > ready_before
                      and run("SELECT 1", UTF8_DB)[1].strip() == "1", 60, 0.5)


# A SQL literal for any Python text.
def lit(s):
    return "'" + s.replace("'", "''") + "'"


SCHEMA = """
CREATE SCHEMA fuzz;
CREATE TABLE fuzz.raw (id int, kind text, origin text, hex text);
CREATE TABLE fuzz.corpus (id int PRIMARY KEY, kind text NOT NULL, origin text NOT NULL,
    hand boolean NOT NULL, t text, n numeric, ts timestamptz, d date, j jsonb);
CREATE TABLE fuzz.results (corpus_id int, grp text, fn text, outcome text, good boolean,
    sqlstate text, msg text, msg_len int, msg_ok boolean, leak boolean);
-- a message is clear only if it is text of the database's encoding
CREATE FUNCTION fuzz.valid(s text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM convert_to(s, getdatabaseencoding());
    RETURN true;
EXCEPTION WHEN OTHERS THEN
    RETURN false;
END $$;
CREATE TABLE fuzz.attach_target (id bigint, email text, phone text, total numeric, items jsonb, status text);
CREATE TABLE fuzz.attach_items (order_id bigint, product_id text);
"""

# Typed values that PostgreSQL itself refuses (out of range, bad syntax) are
# not values of their type: they are left out of the corpus.
LOAD = """
INSERT INTO fuzz.corpus (id, kind, origin, hand, t)
SELECT id, kind, origin, origin <> 'random', convert_from(decode(hex, 'hex'), getdatabaseencoding())
  FROM fuzz.raw WHERE kind = 'text';
DO $load$
DECLARE r record;
BEGIN
    FOR r IN SELECT id, kind, origin, convert_from(decode(hex, 'hex'), getdatabaseencoding()) AS s
               FROM fuzz.raw WHERE kind <> 'text' LOOP
        BEGIN
            INSERT INTO fuzz.corpus (id, kind, origin, hand, t, n, ts, d, j)
            VALUES (r.id, r.kind, r.origin, r.origin <> 'random', r.s,
                    CASE WHEN r.kind = 'numeric' THEN r.s::numeric END,
                    CASE WHEN r.kind = 'timestamptz' THEN r.s::timestamptz END,
                    CASE WHEN r.kind = 'date' THEN r.s::date END,
                    CASE WHEN r.kind = 'jsonb' THEN r.s::jsonb END);
        EXCEPTION WHEN OTHERS THEN
            NULL;
        END;
    END LOOP;
END $load$;
"""


# One database's corpus, loaded; returns the number of values in it.
def load_corpus(db):
    ascii_db = db == ASCII_DB
    data = "".join(f"{i}\t{k}\t{o}\t{b.hex()}\n" for i, k, o, b in corpus(ascii_db))
    query(SCHEMA + "COPY fuzz.raw FROM STDIN;\n" + data + "\\.\n" + LOAD, db)
    stmts = []
    for i, (kind, col, expr, ascii_only) in enumerate(GIANTS):
        if ascii_only and not ascii_db:
            continue
        stmts.append(f"INSERT INTO fuzz.corpus (id, kind, origin, hand, {col}) "
                     f"SELECT {1000000 + i}, '{kind}', 'giant', true, {expr};")
    run("\n".join(stmts), db)       # a giant PostgreSQL refuses is left out
    return int(query("SELECT count(*) FROM fuzz.corpus", db))


# ------------------------------------------------------------ the SQL calls

HEX64 = "r_text ~ '^[0-9a-f]{64}$'"
EMAIL = "r_text LIKE '_%@_%._%' AND octet_length(r_text) <= 320 AND strpos(r_text, ' ') = 0"
E164 = "r_text ~ '^[+][1-9][0-9]{7,14}$'"
NAME = ("octet_length(r_text) BETWEEN 1 AND 255 AND r_text = btrim(r_text) "
        "AND r_text !~ '[\\x01-\\x1f\\x7f]' AND r_text !~ '[A-Z]'")
EVENT = ("jsonb_typeof(r_json) = 'object' AND jsonb_typeof(r_json->'event') = 'string' "
         "AND jsonb_typeof(r_json->'event_id') = 'string' AND jsonb_typeof(r_json->'event_time') = 'number' "
         "AND CASE WHEN jsonb_typeof(coalesce(r_json->'user', '{}')) = 'object' THEN NOT EXISTS ("
         "SELECT FROM jsonb_each_text(coalesce(r_json->'user', '{}')) u "
         "WHERE u.key IN ('email', 'phone', 'external_id') AND u.value !~ '^[0-9a-f]{64}$') ELSE false END")
# the SQLSTATEs the README documents for tt_event misuse
EVENT_STATES = {"22023", "22004", "22003", "22008", "22P02", "22001", "22021"}
EV = "tiktok_capi.tt_event('Purchase', 'fz-1', {arg} => {val})"


class Call:
    """One way to feed a corpus value to a function.  stmt sets r_<type>;
    check says whether a non-NULL result has the documented shape;
    rollback undoes what the call wrote, so the corpus leaves no state;
    states, when given, are the only SQLSTATEs it may raise."""

    def __init__(self, grp, fn, kind, stmt, result, check, every=1, rollback=False, ident=False,
                 null_ok=False, states=None):
        self.grp, self.fn, self.kind, self.stmt, self.result, self.check = grp, fn, kind, stmt, result, check
        self.every, self.rollback, self.ident, self.null_ok, self.states = every, rollback, ident, null_ok, states


CALLS = []


# The hashing functions: unusable input is a NULL; only an unknown country
# (an argument of the caller's own) may be an error.
def hashing(fn, stmt, check, country=False):
    CALLS.append(Call("hashing", fn, "text", stmt, "r_text", check, every=4 if country else 2,
                      null_ok=True, states={"22023"} if country else set()))


hashing("tt_normalize_email(email)", "r_text := tiktok_capi.tt_normalize_email(v.t);", EMAIL)
hashing("tt_hash_email(email)", "r_text := tiktok_capi.tt_hash_email(v.t);", HEX64)
hashing("tt_normalize_phone(phone)", "r_text := tiktok_capi.tt_normalize_phone(v.t);", E164)
hashing("tt_normalize_phone(phone, 'US')", "r_text := tiktok_capi.tt_normalize_phone(v.t, 'US');", E164)
hashing("tt_hash_phone(phone)", "r_text := tiktok_capi.tt_hash_phone(v.t);", HEX64)
hashing("tt_hash_phone(phone, 'GB')", "r_text := tiktok_capi.tt_hash_phone(v.t, 'GB');", HEX64)
hashing("tt_hash_external_id(external_id)", "r_text := tiktok_capi.tt_hash_external_id(v.t);", HEX64)
hashing("tt_normalize_name(name)", "r_text := tiktok_capi.tt_normalize_name(v.t);", NAME)
hashing("tt_hash_name(name)", "r_text := tiktok_capi.tt_hash_name(v.t);", HEX64)
hashing("tt_normalize_phone(_, country)", "r_text := tiktok_capi.tt_normalize_phone('07911 123456', v.t);",
        E164, country=True)
hashing("tt_hash_phone(_, country)", "r_text := tiktok_capi.tt_hash_phone('4155550123', v.t);", HEX64,
        country=True)
CALLS.append(Call("hashing", "tiktok_capi.default_country setting", "text",
                  "PERFORM set_config('tiktok_capi.default_country', v.t, true); "
                  "r_text := tiktok_capi.tt_hash_phone('4155550123');", "r_text", HEX64,
                  every=8, rollback=True, null_ok=True, states={"22023"}))

for arg in ["event", "event_id", "email", "phone", "external_id", "ttclid", "ttp", "ip", "user_agent",
            "locale", "currency", "content_type", "order_id", "description", "search_string", "page_url",
            "referrer", "default_country", "first_name", "last_name", "zip_code", "city", "state",
            "country"]:
    call = ("tiktok_capi.tt_event(v.t, 'fz-1')" if arg == "event" else
            "tiktok_capi.tt_event('Purchase', v.t)" if arg == "event_id" else EV.format(arg=arg, val="v.t"))
    CALLS.append(Call("tt_event", f"tt_event({arg})", "text", f"r_json := {call};", "r_json", EVENT,
                      every=5, ident=arg in ("email", "phone", "external_id", "ip", "first_name", "last_name",
                                             "zip_code"), states=EVENT_STATES))
CALLS.append(Call("tt_event", "tt_event(phone, default_country => 'GB')", "text",
                  "r_json := tiktok_capi.tt_event('Purchase', 'fz-1', phone => v.t, default_country => 'GB');",
                  "r_json", EVENT, every=5, ident=True, states=EVENT_STATES))
for fn, val in [("value", "v.n"),
                ("contents[].price", "jsonb_build_array(jsonb_build_object('content_id', '1', 'price', v.n))"),
                ("contents[].quantity", "jsonb_build_array(jsonb_build_object('content_id', '1', 'quantity', v.n))"),
                ("contents[].price as a string",
                 "jsonb_build_array(jsonb_build_object('content_id', '1', 'price', v.n::text))"),
                ("contents[].content_id", "jsonb_build_array(jsonb_build_object('content_id', v.n))")]:
    arg = "value" if fn == "value" else "contents"
    CALLS.append(Call("tt_event", f"tt_event({fn})", "numeric", f"r_json := {EV.format(arg=arg, val=val)};",
                      "r_json", EVENT, states=EVENT_STATES))
CALLS.append(Call("tt_event", "tt_event(event_time)", "timestamptz",
                  f"r_json := {EV.format(arg='event_time', val='v.ts')};", "r_json", EVENT, states=EVENT_STATES))
CALLS.append(Call("tt_event", "tt_event(event_time date)", "date",
                  f"r_json := {EV.format(arg='event_time', val='v.d')};", "r_json", EVENT, states=EVENT_STATES))
for fn, arg, val in [("contents", "contents", "v.j"), ("properties", "properties", "v.j"),
                     ("contents[] item", "contents", "jsonb_build_array(v.j)"),
                     ("properties.value", "properties", "jsonb_build_object('value', v.j)")]:
    CALLS.append(Call("tt_event", f"tt_event({fn})", "jsonb", f"r_json := {EV.format(arg=arg, val=val)};",
                      "r_json", EVENT, states=EVENT_STATES))


# A call that writes (the outbox, pixels, a trigger): undone after it.
def mutating(grp, fn, kind, stmt, result, check, every):
    CALLS.append(Call(grp, fn, kind, stmt, result, check, every=every, rollback=True))


for fn, stmt in [("tt_enqueue(pixel_code)", "r_int := tiktok_capi.tt_enqueue(v.t, ev);"),
                 ("tt_enqueue(event.event_id)",
                  f"r_int := tiktok_capi.tt_enqueue('{PIXEL}', ev || jsonb_build_object('event_id', v.t));"),
                 ("tt_enqueue(event.event)",
                  f"r_int := tiktok_capi.tt_enqueue('{PIXEL}', ev || jsonb_build_object('event', v.t));")]:
    mutating("tt_enqueue", fn, "text", stmt, "r_int", "r_int > 0", 6)
mutating("tt_enqueue", "tt_enqueue(event.event_time)", "numeric",
         f"r_int := tiktok_capi.tt_enqueue('{PIXEL}', ev || jsonb_build_object('event_time', v.n));",
         "r_int", "r_int > 0", 1)
mutating("tt_enqueue", "tt_enqueue(event_time from tt_event)", "timestamptz",
         f"r_int := tiktok_capi.tt_enqueue('{PIXEL}', tiktok_capi.tt_event('Purchase', 'fz-ts', event_time => v.ts));",
         "r_int", "r_int > 0", 1)
for fn, val in [("tt_enqueue(event)", "v.j"),
                ("tt_enqueue(event.event_time)", "ev || jsonb_build_object('event_time', v.j)"),
                ("tt_enqueue(event.event_id)", "ev || jsonb_build_object('event_id', v.j)")]:
    mutating("tt_enqueue", fn, "jsonb", f"r_int := tiktok_capi.tt_enqueue('{PIXEL}', {val});", "r_int",
             "r_int > 0", 1)

for fn, stmt, result, check in [
        ("tt_add_pixel(pixel_code)", "PERFORM tiktok_capi.tt_add_pixel(v.t, 'token'); r_text := '';", "r_text", "true"),
        ("tt_add_pixel(access_token)", "PERFORM tiktok_capi.tt_add_pixel('CFUZZPIXEL', v.t); r_text := '';",
         "r_text", "true"),
        ("tt_add_pixel(test_event_code)",
         "PERFORM tiktok_capi.tt_add_pixel('CFUZZPIXEL', 'token', v.t); r_text := '';", "r_text", "true"),
        ("tt_update_pixel(pixel_code)", "r_bool := tiktok_capi.tt_update_pixel(v.t);", "r_bool", "true"),
        ("tt_update_pixel(access_token)",
         f"r_bool := tiktok_capi.tt_update_pixel('{PIXEL}', access_token => v.t);", "r_bool", "r_bool"),
        ("tt_update_pixel(test_event_code)",
         f"r_bool := tiktok_capi.tt_update_pixel('{PIXEL}', test_event_code => v.t);", "r_bool", "r_bool"),
        ("tt_requeue_failed(pixel_code)", "r_int := tiktok_capi.tt_requeue_failed(v.t);", "r_int", "r_int >= 0"),
        ("tt_requeue_failed(event)", "r_int := tiktok_capi.tt_requeue_failed(event => v.t);", "r_int", "r_int >= 0"),
        ("tt_requeue_failed(event_id)", "r_int := tiktok_capi.tt_requeue_failed(event_id => v.t);", "r_int",
         "r_int >= 0"),
        ("tt_purge_sent(older_than text)", "r_int := tiktok_capi.tt_purge_sent(v.t::interval);", "r_int",
         "r_int >= 0")]:
    mutating("admin", fn, "text", stmt, result, check, 8)
mutating("admin", "tt_purge_sent(older_than seconds)", "numeric",
         "r_int := tiktok_capi.tt_purge_sent(make_interval(secs => v.n::float8));", "r_int", "r_int >= 0", 1)
mutating("admin", "tt_purge_sent(older_than since)", "timestamptz",
         "r_int := tiktok_capi.tt_purge_sent(now() - v.ts);", "r_int", "r_int >= 0", 1)

ATTACH = "r_text := tiktok_capi.tt_attach('fuzz.attach_target', {args});"
for fn, args in [("tt_attach(event)", "v.t"),
                 ("tt_attach(mapping)", "'Purchase', ARRAY[v.t]"),
                 ("tt_attach(mapping field=)", "'Purchase', ARRAY['email=' || v.t]"),
                 ("tt_attach(mapping =column)", "'Purchase', ARRAY[v.t || '=email']"),
                 ("tt_attach(contents_from)", "'Purchase', ARRAY['contents_from=' || v.t]"),
                 ("tt_attach(pixel)", "'Purchase', pixel => v.t"),
                 ("tt_attach(condition)", "'Purchase', condition => v.t"),
                 ("tt_attach(trigger_name)", "'Purchase', trigger_name => v.t::name")]:
    mutating("tt_attach", fn, "text", ATTACH.format(args=args), "r_text", "r_text LIKE 'CREATE %TRIGGER %'", 16)
mutating("tt_attach", "tt_attach(orders)", "text", "r_text := tiktok_capi.tt_attach(v.t::regclass, 'Purchase');",
         "r_text", "r_text LIKE 'CREATE %TRIGGER %'", 16)

# tt_enqueue of a hand-made event
def enqueue_of(event):
    return f"SELECT tiktok_capi.tt_enqueue('{PIXEL}', {lit(event)})"


# Arguments of the wrong type or outright nonsense, one statement each.
WRONG_TYPES = [
    "SELECT tiktok_capi.tt_hash_email(42)", "SELECT tiktok_capi.tt_hash_email('{\"a\": 1}'::jsonb)",
    "SELECT tiktok_capi.tt_hash_email(ARRAY['a@b.co'])", "SELECT tiktok_capi.tt_hash_phone(14155550123)",
    "SELECT tiktok_capi.tt_hash_phone('+14155550123', 1)", "SELECT tiktok_capi.tt_normalize_phone(NULL, NULL)",
    "SELECT tiktok_capi.tt_hash_external_id(true)", "SELECT tiktok_capi.tt_hash_external_id(now())",
    "SELECT tiktok_capi.tt_event(42, 42)", "SELECT tiktok_capi.tt_event(NULL, NULL)",
    "SELECT tiktok_capi.tt_event('Purchase', NULL)", "SELECT tiktok_capi.tt_event(NULL, '1')",
    "SELECT tiktok_capi.tt_event('Purchase', '1', event_time => 'not a time')",
    "SELECT tiktok_capi.tt_event('Purchase', '1', event_time => 42)",
    "SELECT tiktok_capi.tt_event('Purchase', '1', event_time => 'infinity')",
    "SELECT tiktok_capi.tt_event('Purchase', '1', value => 'abc')",
    "SELECT tiktok_capi.tt_event('Purchase', '1', value => 'NaN')",
    "SELECT tiktok_capi.tt_event('Purchase', '1', value => true)",
    "SELECT tiktok_capi.tt_event('Purchase', '1', value => '1e131072')",
    "SELECT tiktok_capi.tt_event('Purchase', '1', contents => 'not json')",
    "SELECT tiktok_capi.tt_event('Purchase', '1', contents => '[1')",
    "SELECT tiktok_capi.tt_event('Purchase', '1', contents => '[{\"content_id\": \"\\u0000\"}]')",
    "SELECT tiktok_capi.tt_event('Purchase', '1', contents => ARRAY[1, 2])",
    "SELECT tiktok_capi.tt_event('Purchase', '1', limited_data_use => 'maybe')",
    "SELECT tiktok_capi.tt_event('Purchase', '1', limited_data_use => 2)",
    "SELECT tiktok_capi.tt_event('Purchase', '1', properties => 42)",
    "SELECT tiktok_capi.tt_event('Purchase', '1', properties => '\"x\"')",
    "SELECT tiktok_capi.tt_event('Purchase', '1', ip => '198.51.100.1'::inet)",
    "SELECT tiktok_capi.tt_event('Purchase', '1', nope => 1)", "SELECT tiktok_capi.tt_event()",
    "SELECT tiktok_capi.tt_enqueue(NULL, NULL)", "SELECT tiktok_capi.tt_enqueue(NULL, '{}')",
    f"SELECT tiktok_capi.tt_enqueue('{PIXEL}', '[]')", f"SELECT tiktok_capi.tt_enqueue('{PIXEL}', '\"x\"')",
    f"SELECT tiktok_capi.tt_enqueue('{PIXEL}', 'null')",
    enqueue_of('{"event": "Purchase", "event_id": 1, "event_time": 1}'),
    enqueue_of('{"event": "Purchase", "event_id": "1", "event_time": "1"}'),
    enqueue_of('{"event": "Purchase", "event_id": "1", "event_time": 1e300}'),
    enqueue_of('{"event": "Purchase", "event_id": "1", "event_time": -1e300}'),
    enqueue_of('{"event": "Purchase", "event_id": "1", "event_time": 1e-300}'),
    enqueue_of('{"event": "", "event_id": "1", "event_time": 1}'),
    enqueue_of('{"event": "Purchase", "event_id": "", "event_time": 1}'),
    enqueue_of('{"event": "Purchase", "event_id": "1", "event_time": 9223372036854.775807}'),
    f"SELECT tiktok_capi.tt_enqueue('{PIXEL}', "
    + lit('{"event": "Purchase", "event_id": "1", "event_time": 1}') + "::json)",
    "SELECT tiktok_capi.tt_enqueue(42, '{}')", "SELECT tiktok_capi.tt_add_pixel(NULL, NULL)",
    f"SELECT tiktok_capi.tt_add_pixel('{PIXEL}', 'a second time')", "SELECT tiktok_capi.tt_add_pixel(42, 42)",
    "SELECT tiktok_capi.tt_update_pixel(NULL)", f"SELECT tiktok_capi.tt_update_pixel('{PIXEL}', enabled => 'maybe')",
    f"SELECT tiktok_capi.tt_update_pixel('{PIXEL}', '')", "SELECT tiktok_capi.tt_requeue_failed(1, 2, 3)",
    "SELECT tiktok_capi.tt_purge_sent(NULL)", "SELECT tiktok_capi.tt_purge_sent('abc')",
    "SELECT tiktok_capi.tt_purge_sent(42)", "SELECT tiktok_capi.tt_purge_sent('-178000000 years')",
    "SELECT tiktok_capi.tt_purge_sent('178000000 years')",
    "SELECT tiktok_capi.tt_attach(NULL, NULL)", "SELECT tiktok_capi.tt_attach('fuzz.attach_target', NULL)",
    "SELECT tiktok_capi.tt_attach(NULL, 'Purchase')", "SELECT tiktok_capi.tt_attach(0, 'Purchase')",
    "SELECT tiktok_capi.tt_attach(2147483647, 'Purchase')", "SELECT tiktok_capi.tt_attach('pg_class', 'Purchase')",
    "SELECT tiktok_capi.tt_attach('pg_class_oid_index', 'Purchase')",
    "SELECT tiktok_capi.tt_attach('tiktok_capi.outbox_status', 'Purchase')",
    "SELECT tiktok_capi.tt_attach('tiktok_capi.outbox_id_seq', 'Purchase')",
    "SELECT tiktok_capi.tt_attach('fuzz.attach_target', 'Purchase', '{{email=email},{phone=phone}}')",
    "SELECT tiktok_capi.tt_attach('fuzz.attach_target', 'Purchase', ARRAY[NULL, 'email=email'])",
    "SELECT tiktok_capi.tt_attach('fuzz.attach_target', 'Purchase', '{pixel=X}')",
    "SELECT tiktok_capi.tt_attach('fuzz.attach_target', 'Purchase', '{contents_from=fuzz.attach_items(nope)}')",
    "SELECT tiktok_capi.tt_attach('fuzz.attach_target', 'Purchase', '{contents_from=fuzz.attach_items(order_id)}')",
    "SELECT tiktok_capi.tt_attach('fuzz.attach_target', 'Purchase', '{contents_from=a.b.c.d(x)}')",
    "SELECT tiktok_capi.tt_attach('fuzz.attach_target', 'Purchase', '{\"contents_from=(x)\"}')",
    "SELECT tiktok_capi.tt_attach('fuzz.attach_target', 'Purchase', '{contents_from=pg_class(oid)}')",
    "SELECT tiktok_capi.tt_attach('fuzz.attach_target', 'Purchase', "
    "'{contents_from=fuzz.attach_items(order_id), order_id=}')",
    "SELECT tiktok_capi.tt_attach('fuzz.attach_target', 'Purchase', '{event_id=}')",
    "SELECT tiktok_capi.tt_attach('fuzz.attach_target', 'Purchase', '{contents=email}')",
    "SELECT tiktok_capi.tt_attach('fuzz.attach_target', 'Purchase', '{limited_data_use=total}')",
    "SELECT tiktok_capi.tt_attach('fuzz.attach_target', 'Purchase', condition => 'NEW.nope')",
    "SELECT tiktok_capi.tt_attach('fuzz.attach_target', 'Purchase', trigger_name => '')",
    "SELECT tiktok_capi.tt_attach('fuzz.attach_target', 'Purchase', pixel => '')",
    "SELECT tiktok_capi.tt_attach('fuzz.attach_target', 'Purchase', pixel => 'CNOSUCHPIXEL')",
    "SELECT tiktok_capi.tt_attach('fuzz.attach_target', 'purchase')",
    "SELECT tiktok_capi.tt_attach('fuzz.attach_target', '')",
    "SELECT tiktok_capi.tt_capture()",
    "SET tiktok_capi.default_country = 'XX'", "SET tiktok_capi.default_country = 'usa'",
]


# The PL/pgSQL that makes one call and records its outcome.  The
# outcome is noted before a rollback call raises, so it survives.
def call_block(c):
    cond = f"v.kind = '{c.kind}'" + ("" if c.every == 1 else
                                     f" AND (v.hand OR (v.id + {CALLS.index(c)}) % {c.every} = 0)")
    leak = "leak := octet_length(v.t) >= 6 AND strpos(msg, v.t) > 0;" if c.ident else ""
    raise_ = "RAISE SQLSTATE 'TTFZ0';" if c.rollback else ""
    catch = "WHEN SQLSTATE 'TTFZ0' THEN NULL;" if c.rollback else ""
    return f"""
    IF {cond} THEN
        r_text := NULL; r_json := NULL; r_int := NULL; r_bool := NULL;
        st := NULL; msg := NULL; leak := NULL; good := NULL;
        BEGIN
            {c.stmt}
            o := CASE WHEN {c.result} IS NULL THEN 'null' ELSE 'value' END;
            good := CASE WHEN {c.result} IS NULL THEN NULL ELSE ({c.check}) END;
            {raise_}
        EXCEPTION {catch}
            WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
                o := 'error';
                {leak}
        END;
        INSERT INTO fuzz.results VALUES (v.id, '{c.grp}', {lit(c.fn)}, o, good, st,
            CASE WHEN octet_length(msg) <= 2000 THEN msg ELSE left(msg, 500) END, octet_length(msg),
            CASE WHEN msg IS NOT NULL THEN fuzz.valid(msg) END, leak);
    END IF;"""


# One group of calls over the whole corpus (the giants last), as one DO
# block that commits every 200 values: a crash loses little of the record.
def group_block(grp):
    blocks = "".join(call_block(c) for c in CALLS if c.grp == grp)
    return f"""
DO $fuzz$
DECLARE
    v record; r_text text; r_json jsonb; r_int bigint; r_bool boolean;
    o text; good boolean; st text; msg text; leak boolean;
    ev jsonb := tiktok_capi.tt_event('Purchase', 'fz-enqueue', email => 'buyer@example.com',
                                     value => 1, currency => 'USD');
    done int := 0;
BEGIN
    FOR v IN SELECT * FROM fuzz.corpus ORDER BY id LOOP
        IF done % 200 = 0 THEN
            COMMIT;
            PERFORM set_config('tiktok_capi.default_country', 'DE', true);
        END IF;
        done := done + 1;
        {blocks}
    END LOOP;
END
$fuzz$;"""


WRONG_TYPES_BLOCK = """
DO $fuzz$
DECLARE s text; st text; msg text;
BEGIN
    FOREACH s IN ARRAY ARRAY[%s] LOOP
        st := NULL; msg := NULL;
        BEGIN
            EXECUTE s;
            RAISE SQLSTATE 'TTFZ0';
        EXCEPTION WHEN SQLSTATE 'TTFZ0' THEN NULL;
            WHEN OTHERS THEN GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
        END;
        INSERT INTO fuzz.results VALUES (NULL, 'wrong types', s, CASE WHEN st IS NULL THEN 'value' ELSE 'error' END,
            true, st, msg, octet_length(msg), CASE WHEN msg IS NOT NULL THEN fuzz.valid(msg) END, NULL);
    END LOOP;
END
$fuzz$;""" % ", ".join(lit(s) for s in WRONG_TYPES)


# Every call of the corpus in one database; returns the parts the server
# did not finish (it crashed or the block failed), with what it said.
def run_calls(db):
    unfinished = []
    for grp, block in [(g, group_block(g)) for g in ("hashing", "tt_event", "tt_enqueue", "admin", "tt_attach")] \
            + [("wrong types", WRONG_TYPES_BLOCK)]:
        ready = server_log().count(READY)
        rc, _, err = run(block, db)
        if rc != 0 or "ERROR:" in err:
            last = err.strip().splitlines()[-1][:200] if err.strip() else rc
            done = query(f"SELECT count(DISTINCT corpus_id) FROM fuzz.results WHERE grp = {lit(grp)}", db) \
                if server_back(ready) else "?"
            unfinished.append(f"{db}: {grp}, stopped after {done} values: {last}")
    return unfinished


# ------------------------------------------------------------ the orders

# Each orders table: its columns (with the sane value a column holds when
# it is not the one under test), how its trigger is attached, and how a
# corpus value of each kind becomes a value of one of its columns.
TABLES = {
    "orders": dict(
        key="id", event="Purchase", every=5, hand_cols=2,
        columns="""id bigint PRIMARY KEY, email text DEFAULT 'buyer@example.com',
            phone text DEFAULT '+1 415 555 0123', customer_id text DEFAULT 'CUST-0042', ttclid text,
            ttp text, ip text DEFAULT '203.0.113.7', user_agent text DEFAULT 'Mozilla/5.0',
            locale text DEFAULT 'en-US', total numeric DEFAULT 46.00, currency text DEFAULT 'USD',
            items jsonb DEFAULT '[{"content_id": "1077218", "quantity": 2, "price": "8.00"}]',
            content_type text DEFAULT 'product', search_string text,
            page_url text DEFAULT 'https://shop.example/thanks', referrer text, event_time timestamptz,
            limited_data_use boolean, country text DEFAULT 'US', description text,
            status text NOT NULL DEFAULT 'new'""",
        attach="SELECT tiktok_capi.tt_attach('fuzz.orders', 'Purchase', '{description=description}')",
        specs={"text": [(c, "v.t") for c in ("email", "phone", "customer_id", "ttclid", "ttp", "ip", "user_agent",
                                            "locale", "currency", "content_type", "search_string", "page_url",
                                            "referrer", "country", "description")],
               "numeric": [("total", "v.n")], "timestamptz": [("event_time", "v.ts")],
               "date": [("event_time", "v.d")], "jsonb": [("items", "v.j")]}),
    "orders_wrong": dict(
        key="rn", event="CompletePayment", every=10, hand_cols=1,
        columns="""rn int, id text DEFAULT 'pending-id', email integer DEFAULT 12345,
            phone jsonb DEFAULT '{"number": "+14155550123"}', customer_id numeric DEFAULT 42.5,
            ttclid bytea DEFAULT '\\x00ff', ttp text[] DEFAULT '{a,NULL,"b c"}', ip text DEFAULT '1.2.3.4',
            user_agent jsonb DEFAULT '["Mozilla"]', locale integer DEFAULT 0, total text DEFAULT '12.50',
            currency integer DEFAULT 840, line_items json DEFAULT '[{"content_id": 1, "price": "2.50"}]',
            content_type integer DEFAULT 1, event_time date DEFAULT current_date, country integer DEFAULT 1,
            page_url point DEFAULT '(1,2)', referrer interval DEFAULT '1 day',
            limited_data_use boolean DEFAULT true""",
        attach="SELECT tiktok_capi.tt_attach('fuzz.orders_wrong', 'CompletePayment')",
        specs={"text": [("id", "v.t"), ("total", "v.t"), ("ip", "v.t"), ("ttp", "ARRAY[v.t, NULL]"),
                        ("ttclid", "convert_to(v.t, getdatabaseencoding())")],
               "jsontext": [("line_items", "v.t::json")],
               "numeric": [("email", "v.n::int"), ("customer_id", "v.n"), ("currency", "v.n::int"),
                           ("locale", "v.n::int"), ("country", "v.n::int"), ("content_type", "v.n::int"),
                           ("total", "v.n::text"), ("referrer", "make_interval(secs => v.n::float8)")],
               "jsonb": [("phone", "v.j"), ("user_agent", "v.j"), ("line_items", "v.j::text::json")],
               "timestamptz": [("event_time", "v.ts::date")], "date": [("event_time", "v.d")]},
        every_kind={"numeric": 2, "jsonb": 2}),
    "orders_wrong2": dict(
        key="id", event="AddToCart", every=20, hand_cols=1,
        columns="""id bigint PRIMARY KEY, event_time timestamp, total double precision DEFAULT 1.5,
            phone bigint DEFAULT 14155550123, email bytea DEFAULT 'a@b.co', ip cidr DEFAULT '198.51.100.0/24',
            currency "char" DEFAULT 'U'""",
        attach="SELECT tiktok_capi.tt_attach('fuzz.orders_wrong2', 'AddToCart')",
        specs={"text": [("email", "convert_to(v.t, getdatabaseencoding())"), ("ip", "v.t::cidr"),
                        ("currency", "v.t::\"char\"")],
               "numeric": [("total", "v.n::float8"), ("phone", "v.n::bigint")],
               "timestamptz": [("event_time", "v.ts AT TIME ZONE 'UTC'")],
               "date": [("event_time", "v.d::timestamp")]}),
    "orders_wrong3": dict(
        key="order_id", event="InitiateCheckout", every=20, hand_cols=1,
        columns="""order_id integer PRIMARY KEY, amount money DEFAULT 5, ip_address inet DEFAULT '203.0.113.7',
            phone_number numeric DEFAULT 14155550123, currency_code char(3) DEFAULT 'usd',
            email_address varchar(320) DEFAULT 'A@B.CO', external_id bigint DEFAULT 42""",
        attach="SELECT tiktok_capi.tt_attach('fuzz.orders_wrong3', 'InitiateCheckout')",
        specs={"text": [("ip_address", "v.t::inet"), ("currency_code", "v.t::char(3)"),
                        ("email_address", "v.t::varchar(320)")],
               "numeric": [("amount", "v.n::money"), ("phone_number", "v.n"), ("external_id", "v.n::bigint")]}),
    "order_items": dict(
        key="order_id", event="PlaceAnOrder", every=50, hand_cols=1,
        columns="""order_id bigint, product_id text DEFAULT 'SKU-1', qty numeric DEFAULT 1,
            unit_price numeric DEFAULT 9.99, name text DEFAULT 'Socks', category text, brand text""",
        attach=None,
        specs={"text": [("product_id", "v.t"), ("name", "v.t"), ("category", "v.t"), ("brand", "v.t")],
               "numeric": [("qty", "v.n"), ("unit_price", "v.n")]},
        every_kind={"numeric": 2}),
    "orders_misc": dict(
        key="id", event=None, every=100, hand_cols=0,
        columns="id bigint PRIMARY KEY, email text DEFAULT 'a@b.co', total text DEFAULT '1', mail text",
        attach=None,
        specs={"text": [("email", "v.t"), ("total", "v.t"), ("mail", "v.t")]}),
}

# Hand-written triggers with bad arguments: the lenient path queues what it
# can and says why in warnings or last_error.
MISC_TRIGGERS = [
    "tt_capture('purchase')",
    "tt_capture('Lead', 'email=nope', 'bogus', 'colour=mail', 'contents=total', 'value=', "
    "'contents_from=nope(x)', 'contents_from=garbage')",
    "tt_capture('Subscribe', 'pixel=CNOSUCHPIXEL')",
    "tt_capture('')",
    "tt_capture('Contact', 'pixel=')",
    "tt_capture(E'Custom\\tEvent')",
]

SETUP_ORDERS = "".join(f"CREATE TABLE fuzz.{t} ({d['columns']});\n"
                       f"CREATE TABLE fuzz.{t}_rows (LIKE fuzz.{t} INCLUDING DEFAULTS);\n"
                       for t, d in TABLES.items()) + """
CREATE TABLE fuzz.orders_itemized (id bigint PRIMARY KEY, email text DEFAULT 'buyer@example.com',
    currency text DEFAULT 'EUR', total numeric DEFAULT 10);
SELECT tiktok_capi.tt_attach('fuzz.orders_itemized', 'PlaceAnOrder', '{contents_from=fuzz.order_items(order_id)}');
-- stage a value into a column; false when it is no value of the column's type
CREATE FUNCTION fuzz.stage(tbl text, keycol text, key int, col text, expr text, cid int) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('INSERT INTO fuzz.%I (%I, %I) SELECT $1, %s FROM fuzz.corpus v WHERE v.id = $2',
                   tbl, keycol, col, expr) USING key, cid;
    RETURN true;
EXCEPTION WHEN OTHERS THEN
    RETURN false;
END $$;
""" + "".join(f"{d['attach']};\n" for d in TABLES.values() if d["attach"]) + "".join(
    f"CREATE TRIGGER misc{i} AFTER INSERT OR UPDATE ON fuzz.orders_misc FOR EACH ROW "
    f"EXECUTE FUNCTION tiktok_capi.{t};\n" for i, t in enumerate(MISC_TRIGGERS))


# Staging: one row per (value, column), the value in that column and sane
# values elsewhere, kept in fuzz.<table>_rows until the orders are written.
def stage_block(table, d):
    kinds = []
    by_kind = dict(d["specs"])
    if "text" in by_kind:      # JSON spellings are text too, where no column wants them as json
        by_kind.setdefault("jsontext", by_kind["text"])
    for kind, specs in by_kind.items():
        every = d.get("every_kind", {}).get(kind, d["every"] if kind in ("text", "jsontext") else 1)
        arr = "ARRAY[" + ", ".join(lit(f"{c}|{e}") for c, e in specs) + "]::text[]"
        kinds.append(f"WHEN '{kind}' THEN CASE WHEN v.id % {every} = 0 OR (v.hand AND {d['hand_cols']} > 0) "
                     f"THEN {arr} END")
    return f"""
DO $stage$
DECLARE v record; specs text[]; n int; k int; spec text; rn int := 0;
BEGIN
    FOR v IN SELECT id, CASE WHEN origin = 'jsontext' THEN 'jsontext' ELSE kind END AS kind, hand
               FROM fuzz.corpus ORDER BY id LOOP
        specs := CASE v.kind {" ".join(kinds)} END;
        n := coalesce(array_length(specs, 1), 0);
        CONTINUE WHEN n = 0;
        FOR k IN 0 .. CASE WHEN v.hand THEN least(n, greatest({d['hand_cols']}, 1)) - 1 ELSE 0 END LOOP
            spec := specs[1 + (v.id + k) % n];
            IF fuzz.stage('{table}_rows', '{d['key']}', rn + 1, split_part(spec, '|', 1),
                          substr(spec, strpos(spec, '|') + 1), v.id) THEN
                rn := rn + 1;
            END IF;
        END LOOP;
    END LOOP;
END
$stage$;"""


STAGE_EXTRA = """
UPDATE fuzz.orders_wrong_rows SET id = rn::text WHERE id = 'pending-id';
UPDATE fuzz.orders_misc_rows SET id = id + 900000;
-- the items of one order of 100,000 lines
INSERT INTO fuzz.order_items_rows (order_id, product_id, qty, unit_price)
SELECT 500000, 'SKU-' || g, 1 + g % 3, g % 100 FROM generate_series(1, 100000) g;
"""

MOVED = 10000000


# The statements that write the orders, one transaction each as a shop
# would (a deferred trigger fires at COMMIT); then UPDATEs of some of them:
# an order takes another staged row's malformed fields, or a new id.
# Returns both scripts, and what they attempt.
def orders_scripts(db):
    rng = random.Random(SEED + 1)
    keys = {t: [int(k) for (k,) in rows(f"SELECT DISTINCT {d['key']} FROM fuzz.{t}_rows ORDER BY 1", db)]
            for t, d in TABLES.items()}
    cols = [c for (c,) in rows("SELECT attname FROM pg_attribute WHERE attrelid = 'fuzz.orders'::regclass "
                               "AND attnum > 0 AND NOT attisdropped ORDER BY attnum", db)]
    # a shop's time zone: timestamp columns near the limits overflow timestamptz
    inserts = ["SET TimeZone = 'America/New_York';"]
    for t in ("orders", "orders_wrong", "orders_wrong2", "orders_wrong3", "orders_misc"):
        k = TABLES[t]["key"]
        inserts += [f"INSERT INTO fuzz.{t} SELECT * FROM fuzz.{t}_rows WHERE {k} = {i};" for i in keys[t]]
    for i in keys["order_items"]:
        inserts.append(f"BEGIN; INSERT INTO fuzz.orders_itemized (id) VALUES ({i}); INSERT INTO fuzz.order_items "
                       f"SELECT * FROM fuzz.order_items_rows WHERE order_id = {i}; COMMIT;")
    updates = ["SET TimeZone = 'America/New_York';"]
    picked = rng.sample(keys["orders"], min(700, len(keys["orders"])))
    upd, moved = picked[:600], picked[600:]
    set_cols = [c for c in cols if c not in ("id", "status")]
    for i in upd:
        updates.append(f"UPDATE fuzz.orders o SET ({', '.join(set_cols)}, status) = "
                       f"(SELECT {', '.join('r.' + c for c in set_cols)}, 'updated' FROM fuzz.orders_rows r "
                       f"WHERE r.id = {rng.choice(keys['orders'])}) WHERE o.id = {i};")
    for i in moved:
        updates.append(f"UPDATE fuzz.orders SET id = id + {MOVED}, status = 'moved' WHERE id = {i};")
    wcols = ["total", "ip", "phone", "line_items", "event_time", "user_agent", "email", "currency"]
    for i in rng.sample(keys["orders_wrong"], min(200, len(keys["orders_wrong"]))):
        updates.append(f"UPDATE fuzz.orders_wrong o SET ({', '.join(wcols)}) = (SELECT "
                       f"{', '.join('r.' + c for c in wcols)} FROM fuzz.orders_wrong_rows r "
                       f"WHERE r.rn = {rng.choice(keys['orders_wrong'])}) WHERE o.rn = {i};")
    attempted = {t: len(keys[t]) for t in TABLES if t != "order_items"}
    attempted["orders_itemized"] = len(keys["order_items"])
    return "\n".join(inserts), "\n".join(updates), attempted, len(updates) - 1, len(upd), len(moved)


# psql's errors in a script's output: {SQLSTATE: [messages]}.
def errors_of(err):
    found = {}
    for code, msg in re.findall(r"ERROR:\s+([0-9A-Z]{5}): (.*)", err):
        found.setdefault(code, []).append(msg)
    return found


# Write the orders of one database: what was attempted and committed.
def write_orders(db):
    query(SETUP_ORDERS, db)
    query("".join(stage_block(t, d) for t, d in TABLES.items()) + STAGE_EXTRA, db)
    inserts, updates, attempted, n_updates, n_upd, n_moved = orders_scripts(db)
    ready = server_log().count(READY)
    rc, _, err = run(inserts, db)
    if rc != 0:
        server_back(ready)
    ready = server_log().count(READY)
    rc2, _, err2 = run(updates, db)
    if rc2 != 0:
        server_back(ready)
    committed = {t: int(query(f"SELECT count(*) FROM fuzz.{t}", db)) for t in attempted}
    upd, mov = rows("SELECT count(*) FILTER (WHERE status = 'updated'), count(*) FILTER (WHERE status = 'moved') "
                    "FROM fuzz.orders", db)[0]
    return dict(attempted=attempted, committed=committed, errors=errors_of(err), n_updates=n_updates,
                update_errors=errors_of(err2), updated=(n_upd, int(upd)), moved=(n_moved, int(mov)))


# Committed orders whose event is missing from the outbox.
MISSING_EVENTS = """
SELECT (SELECT count(*) FROM fuzz.orders o WHERE NOT EXISTS (SELECT FROM tiktok_capi.outbox b
            WHERE b.event = 'Purchase' AND b.event_id = o.id::text))
     + (SELECT count(*) FROM fuzz.orders_wrong2 o WHERE NOT EXISTS (SELECT FROM tiktok_capi.outbox b
            WHERE b.event = 'AddToCart' AND b.event_id = o.id::text))
     + (SELECT count(*) FROM fuzz.orders_wrong3 o WHERE NOT EXISTS (SELECT FROM tiktok_capi.outbox b
            WHERE b.event = 'InitiateCheckout' AND b.event_id = o.order_id::text))
     + (SELECT count(*) FROM fuzz.orders_itemized o WHERE NOT EXISTS (SELECT FROM tiktok_capi.outbox b
            WHERE b.event = 'PlaceAnOrder' AND b.event_id = o.id::text))
     -- an order without an id has a failed row of its own, under a key naming the row
     + greatest(0, (SELECT count(*) FROM fuzz.orders_wrong o WHERE coalesce(btrim(o.id, E' \t\r\n'), '') = '')
                   - (SELECT count(*) FROM tiktok_capi.outbox b WHERE b.event = 'CompletePayment'
                         AND b.status = 'failed' AND b.event_id LIKE 'fuzz.orders_wrong row (%'))
     + (SELECT count(*) FROM fuzz.orders_wrong o WHERE coalesce(btrim(o.id, E' \t\r\n'), '') <> ''
         AND NOT EXISTS (SELECT FROM tiktok_capi.outbox b
            WHERE b.event = 'CompletePayment' AND (b.event_id = o.id
               -- an id too long for the key is queued failed, shortened: its start, '...', its SHA-256
               OR b.status = 'failed' AND b.event_id = left(o.id, 100) || '...'
                  || encode(sha256(convert_to(o.id, getdatabaseencoding())), 'hex'))))
     + (SELECT count(*) FROM fuzz.orders_misc o WHERE NOT EXISTS (SELECT FROM tiktok_capi.outbox b
            WHERE b.event = 'purchase' AND b.event_id = o.id::text AND b.status = 'failed'))
"""

# Fields of fuzz.orders the trigger left out of the event without a note.
# A field counts as given when it holds a letter, digit, @ or +, so a blank
# one (which the README says is left out silently) is not counted.
UNNOTED = """
SELECT f.field, count(*)
  FROM fuzz.orders o
  JOIN tiktok_capi.outbox b ON b.event = 'Purchase' AND b.event_id = o.id::text
 CROSS JOIN LATERAL (VALUES
        ('email', o.email ~ '[0-9A-Za-z@]', b.payload->'user' ? 'email'),
        ('phone', o.phone ~ '[0-9A-Za-z+]', b.payload->'user' ? 'phone'),
        ('ip', o.ip ~ '[0-9A-Za-z:]', b.payload->'user' ? 'ip'),
        ('currency', o.currency ~ '[0-9A-Za-z]', b.payload->'properties' ? 'currency'),
        ('value', o.total IS NOT NULL, b.payload->'properties' ? 'value'),
        ('contents', o.items IS NOT NULL AND o.items <> '[]', b.payload->'properties' ? 'contents'),
        ('content_type', o.content_type ~ '[0-9A-Za-z]', b.payload->'properties' ? 'content_type')
    ) AS f(field, given, kept)
 WHERE o.status <> 'updated' AND f.given AND NOT f.kept
   AND NOT coalesce(strpos(array_to_string(b.warnings, ' '), f.field) > 0, false)
 GROUP BY 1 ORDER BY 1
"""


# How the outbox of one database stands: {status: events}.
def outbox(db):
    return {s: int(n) for s, n in rows("SELECT status, count(*) FROM tiktok_capi.outbox GROUP BY 1", db)}


# No event waits any more: each is sent or failed.
def settled(db):
    return outbox(db).get("pending", 0) == 0


# ------------------------------------------------------------ the run

started = time.time()
mock = Mock()
configure(mock)
install()
query(f"CREATE DATABASE {ASCII_DB} ENCODING 'SQL_ASCII' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'", UTF8_DB)
query(f"CREATE EXTENSION tiktok_capi; SELECT tiktok_capi.tt_add_pixel('{PIXEL}', 'test-token-never-logged');",
      ASCII_DB)

DBS = (UTF8_DB, ASCII_DB)
phase = time.time()
values = {db: load_corpus(db) for db in DBS}
tap.diag(f"corpus loaded in {time.time() - phase:.1f} s"); phase = time.time()
unfinished = []
for db in DBS:
    unfinished += run_calls(db)
    tap.diag(f"{db}: calls in {time.time() - phase:.1f} s"); phase = time.time()
orders = {}
for db in DBS:
    orders[db] = write_orders(db)
    tap.diag(f"{db}: orders in {time.time() - phase:.1f} s"); phase = time.time()

# The calls, from the results tables: outcomes by function and SQLSTATE.
by_fn = {}
for db in DBS:
    for grp, fn, outcome, state, n, bad, empty, unclear, leaks in rows(
            "SELECT grp, fn, outcome, coalesce(sqlstate, ''), count(*), count(*) FILTER (WHERE good IS FALSE), "
            "count(*) FILTER (WHERE outcome = 'error' AND coalesce(msg, '') = ''), "
            "count(*) FILTER (WHERE msg_ok IS FALSE), count(*) FILTER (WHERE leak) "
            "FROM fuzz.results GROUP BY 1, 2, 3, 4", db):
        by_fn.setdefault((db, grp, fn), []).append((outcome, state, int(n), int(bad), int(empty), int(unclear),
                                                   int(leaks)))
spec = {c.fn: c for c in CALLS}
calls = sum(n for outs in by_fn.values() for _, _, n, *_ in outs)
internal = [(db, fn, st, n) for (db, _, fn), outs in by_fn.items() for o, st, n, *_ in outs
            if o == "error" and (st.startswith("XX") or st.startswith("58"))]
empty_msgs = sum(e for outs in by_fn.values() for *_, e, _, _ in outs)
unclear = [(db, fn, n) for (db, _, fn), outs in by_fn.items() for *_, n, _ in outs if n]
nulls = [(db, fn, n) for (db, _, fn), outs in by_fn.items() for o, _, n, *_ in outs
         if o == "null" and not (fn in spec and spec[fn].null_ok)]
misshapen = [(db, fn, b) for (db, _, fn), outs in by_fn.items() for _, _, _, b, *_ in outs if b]
undocumented = [(db, fn, st, n) for (db, grp, fn), outs in by_fn.items() for o, st, n, *_ in outs
                if o == "error" and fn in spec and spec[fn].states is not None and st not in spec[fn].states]
leaked = [(db, fn, n) for (db, _, fn), outs in by_fn.items() for *_, n in outs if n]

tap.ok(all(v >= 5000 for v in values.values()), "each database's corpus holds at least 5,000 malformed values",
       values)
tap.ok(calls >= 5000, f"at least 5,000 calls were made ({calls})", calls)
tap.ok(not unfinished, "every group of calls ran to its end (no crash, no error escaped a call)", unfinished)
tap.ok(not internal, "no call ended in an internal error (SQLSTATE class XX or 58)", internal[:8])
tap.ok(empty_msgs == 0, "every error carries a message", empty_msgs)
tap.ok(not unclear, "every error message is text of the database's encoding", unclear[:8])
tap.ok(not nulls, "NULL comes only from the functions documented to return it", nulls[:8])
tap.ok(not misshapen, "every value returned has the documented shape (hex digest, E.164, event object...)",
       misshapen[:8])
tap.ok(not [u for u in undocumented if u[1] in spec and spec[u[1]].grp == "hashing"],
       "the hashing functions give NULL for unusable input, never an error (but for an unknown country)",
       [u for u in undocumented if spec[u[1]].grp == "hashing"][:8])
tap.ok(not [u for u in undocumented if spec[u[1]].grp == "tt_event"],
       "tt_event fails only with the SQLSTATEs its README documents",
       [u for u in undocumented if spec[u[1]].grp == "tt_event"][:8])
tap.ok(not leaked, "no tt_event error message repeats the email, phone, external id or ip given", leaked[:8])

# The trigger: every order committed, every UPDATE too, every event queued.
for db in DBS:
    o = orders[db]
    tap.ok(o["attempted"] == o["committed"] and not o["errors"],
           f"{db}: every malformed order committed ({sum(o['committed'].values())} of "
           f"{sum(o['attempted'].values())})",
           {t: (o["attempted"][t], o["committed"][t]) for t in o["attempted"] if o["attempted"][t] != o["committed"][t]}
           | {code: (len(msgs), msgs[0][:160]) for code, msgs in o["errors"].items()})
tap.ok(all(not o["update_errors"] and o["updated"][0] == o["updated"][1] and o["moved"][0] == o["moved"][1]
           for o in orders.values()),
       "every UPDATE to malformed fields or a new id committed, the trigger firing again",
       {db: (o["updated"], o["moved"], {c: (len(m), m[0][:160]) for c, m in o["update_errors"].items()})
        for db, o in orders.items()})
missing = {db: int(query(MISSING_EVENTS, db)) for db in DBS}
tap.ok(not any(missing.values()), "every committed order has its event in the outbox", missing)
unnoted = {db: dict(rows(UNNOTED, db)) for db in DBS}
tap.ok(not any(unnoted.values()), "every bad field the trigger dropped is noted in the outbox row's warnings",
       unnoted)
bad_notes = int(query("SELECT count(*) FROM tiktok_capi.outbox WHERE NOT fuzz.valid(array_to_string(warnings, ' ')) "
                      "OR NOT fuzz.valid(last_error)", UTF8_DB))
tap.ok(bad_notes == 0, f"{UTF8_DB}: every warning and last_error is valid UTF-8", bad_notes)

# Delivery: the UTF8 database first, then the worker moves to the SQL_ASCII one.
ok_utf8 = wait_until(lambda: settled(UTF8_DB), 180, 0.5)
tap.ok(ok_utf8, f"{UTF8_DB}: every captured event settled, none stuck pending", outbox(UTF8_DB))
stats_utf8 = mock.stats()
query(f"ALTER SYSTEM SET tiktok_capi.database = '{ASCII_DB}'; SELECT pg_reload_conf();", UTF8_DB)
ok_ascii = wait_until(lambda: settled(ASCII_DB), 180, 0.5)
tap.ok(ok_ascii, f"{ASCII_DB}: every captured event settled, none stuck pending", outbox(ASCII_DB))
stats_all = mock.stats()
no_reason = {db: int(query("SELECT count(*) FROM tiktok_capi.outbox WHERE status = 'failed' "
                           "AND coalesce(btrim(last_error), '') = ''", db)) for db in DBS}
tap.ok(not any(no_reason.values()), "every failed event says why", no_reason)
rejected_utf8 = stats_utf8["rejected"]
rejected_ascii = {k: v - rejected_utf8.get(k, 0) for k, v in stats_all["rejected"].items()
                  if v - rejected_utf8.get(k, 0)}
reasons = {db: rows("SELECT left(regexp_replace(last_error, '\\[\\d+\\]', '[i]', 'g'), 110), count(*) "
                    "FROM tiktok_capi.outbox WHERE status = 'failed' AND last_error LIKE '%40002%' "
                    "GROUP BY 1 ORDER BY 2 DESC LIMIT 6", db) for db in DBS}
tap.ok(not rejected_utf8 and stats_utf8["requests"] > 0,
       f"{UTF8_DB}: the Events API rejected no request (all it was sent was valid)",
       {"rejected": rejected_utf8, "events failed by the API": reasons[UTF8_DB]})
tap.ok(not rejected_ascii and stats_all["requests"] > stats_utf8["requests"],
       f"{ASCII_DB}: the Events API rejected no request (all it was sent was valid)",
       {"rejected": rejected_ascii, "events failed by the API": reasons[ASCII_DB]})
sent_ids = {db: int(query("SELECT count(*) FROM tiktok_capi.outbox WHERE status = 'sent' "
                          "AND (request_id IS NULL OR sent_at IS NULL)", db)) for db in DBS}
tap.ok(not any(sent_ids.values()), "every sent event records TikTok's request_id and sent_at", sent_ids)

# The figures.
for db in DBS:
    giants = query("SELECT count(*) FROM fuzz.corpus WHERE origin = 'giant'", db)
    tap.diag(f"{db}: {values[db]} values in the corpus ({giants} built in the database: 1 MB+ strings, "
             f"deep and 100k-element jsonb...); "
             f"{sum(n for (d, _, _), outs in by_fn.items() if d == db for _, _, n, *_ in outs)} calls")
states = {}
for outs in by_fn.values():
    for o, st, n, *_ in outs:
        if o == "error":
            states[st] = states.get(st, 0) + n
tap.diag(f"{calls} calls: {sum(n for outs in by_fn.values() for o, _, n, *_ in outs if o == 'value')} values, "
         f"{sum(n for outs in by_fn.values() for o, _, n, *_ in outs if o == 'null')} NULLs, "
         f"{sum(states.values())} errors")
tap.diag("errors by SQLSTATE: " + ", ".join(f"{k} {v}" for k, v in sorted(states.items(), key=lambda x: -x[1])))
for db in DBS:
    o, b = orders[db], outbox(db)
    per_table = ", ".join(f"{t} {o['committed'][t]}/{n}" for t, n in o["attempted"].items())
    tap.diag(f"{db}: {sum(o['committed'].values())} of {sum(o['attempted'].values())} orders committed "
             f"({per_table}); {o['n_updates']} UPDATEs; events sent {b.get('sent', 0)}, "
             f"failed {b.get('failed', 0)}, pending {b.get('pending', 0)}")
    for code, msgs in (o["errors"] | o["update_errors"]).items():
        tap.diag(f"{db}: orders refused with {code} ({len(msgs)}): {msgs[0][:150]}")
    for reason, n in reasons[db]:
        tap.diag(f"{db}: {n} events failed by the API: {reason}")
tap.diag(f"the mock: {stats_all['requests']} requests, {stats_all['accepted_requests']} accepted, "
         f"{stats_all['events_accepted']} events accepted, rejected {stats_all['rejected']}")
for u in unfinished:
    tap.diag(f"unfinished: {u}")
tap.diag(f"ran in {time.time() - started:.0f} s")
no_crash(tap)
mock.stop()
tap.done()
