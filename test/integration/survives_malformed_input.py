"""Bad input never breaks tiktok_capi.  A corpus of more than 5,000 malformed
values, generated from a fixed seed plus hand-picked edge cases (broken UTF-8
in a SQL_ASCII database, control characters, lone combining and RTL marks,
strings of 1 MB and more, NaN, Infinity, 1e130000, -0, thousands of decimals,
infinite and out-of-range times, jsonb nested thousands of levels deep,
arrays of 100,000 elements, contents and fields of the wrong type, order
columns of the wrong types) goes through every SQL function and through the
order trigger, in a UTF8 database and in a SQL_ASCII one.  It proves that:
- no server process crashes, and no call ends in an internal error;
- every call ends in a value of the documented shape, a documented NULL, or
  an error with a SQLSTATE and a clear message;
- every malformed order commits (INSERT and UPDATE, plain and deferred
  triggers, columns of the wrong types), its bad fields dropped and noted;
- every captured event ends sent, or failed with a reason, and the Events
  API (the mock) is sent nothing it rejects."""
import json
import random
import re
import subprocess
import time

from harness import PIXEL, Mock, Tap, configure, install, no_crash, server_log, wait_until

SEED = 20261122
UTF8_DB = "postgres"          # the worker's database at first
ASCII_DB = "fuzz_ascii"       # SQL_ASCII: text may hold any byte but NUL
N_RANDOM_TEXT = 4300
N_BROKEN = 700                # SQL_ASCII only
N_RANDOM_NUMERIC = 300
N_RANDOM_TS = 60
N_RANDOM_JSON = 300

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


# A SQL expression for a text the script itself cannot carry (non-ASCII):
# its UTF-8 bytes, taken as the database's encoding.
def utf8(s):
    return f"convert_from(decode('{s.encode().hex()}', 'hex'), getdatabaseencoding())"


# ---------------------------------------------------------------- the corpus

POOLS = {
    "ascii": [chr(c) for c in range(0x20, 0x7f)],
    "ctrl": [chr(c) for c in range(1, 0x20)] + ["\x7f"] + [chr(c) for c in range(0x80, 0xa0)],
    "space": list("\u00a0\u1680\u2000\u2003\u2007\u200a\u200b\u200c\u200d\u2028\u2029\u202f\u205f"
                  "\u3000\ufeff\u180e\u2060"),
    "mark": [chr(c) for c in range(0x300, 0x370)] + list("\u0483\u0489\u0591\u05c7\u0e31\u20dd\u20e3\ufe0f"),
    "bidi": list("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u061c"),
    "letter": list("ÀÉÎÕÜßÇÑĞİıŞȘȚĂÂăâșțƠƯơưẠỹẞǅΑΒΓΣσςΩабвгдЁёЇїІіҚқӘәЖKÅﬀﬁ"),
    "script": list("ԱႠ中文日本語한국어עברيةहिंदीไทยᏣᎳᎩ"),
    "astral": ["\U0001F600", "\U0001F1FA\U0001F1F8", "\U00010000", "\U0010FFFD", "\U0001D400",
               "\U0001F469\u200d\U0001F4BB"],
    "nonchar": list("\ufffe\uffff\ufdd0\ufffd\U0001fffe"),
    "special": list("@.+-_()[]{}<>,;:\"'\\/%$#!?*&|^~`= \t"),
    "digit": list("0123456789"),
    "fancydigit": list("٠١٢٣٤٥٦٧٨٩۰۱۲０１２３４５６７８９①²³"),
}
WEIGHTED_POOLS = (["ascii"] * 6 + ["digit"] * 3 + ["special"] * 3 + ["ctrl", "space", "mark", "bidi",
                  "letter", "letter", "script", "astral", "nonchar", "fancydigit"])
SEEDS = ["alice@example.com", "Alice_ABC@Gmail.com", "x@y.co", "user+tag@sub.domain.org",
         "+1 (415) 555-0123", "07911 123456", "(+1)2133734253", "+44 (0)20 7946 0958",
         "0044 20 7946 0958", "8 912 345-67-89", "12.50", "0", "-1", "1e5", "203.0.113.7", "::1",
         "2001:db8::1", "USD", "eur", "Purchase", "AddToCart", "CompletePayment", "US", "GB", "de",
         "10045", "CUST-0042", "en-US", "product", "https://shop.example/thanks?ttclid=E.C.P",
         "848a771458438fc2ec420560d769fb9b9b86851ee338ec56517baabd79d3bb4f", "C4XXXXXXXXXXXXXXXX"]


# One character from a pool chosen by weight.
def rand_char(rng):
    return rng.choice(POOLS[rng.choice(WEIGHTED_POOLS)])


# A plausible value with a few random cuts, insertions and repeats.
def mutate(rng, s):
    s = list(s)
    for _ in range(rng.randint(1, 4)):
        op, i = rng.randrange(6), rng.randint(0, len(s))
        if op == 0:
            s.insert(i, rand_char(rng))
        elif op == 1 and s:
            del s[min(i, len(s) - 1)]
        elif op == 2 and s:
            s[i:i] = s[i:rng.randint(i, len(s))] * rng.randint(1, 20)
        elif op == 3 and s:
            k = min(i, len(s) - 1)
            s[k] = s[k].swapcase()
        elif op == 4:
            s[i:i] = list(rng.choice(SEEDS))
        else:
            s = [rand_char(rng)] * rng.randint(0, 3) + s + [rand_char(rng)] * rng.randint(0, 3)
    return "".join(s)


# Text of every sort: mutated plausible values, random mixtures of the
# pools, long runs.
def random_text(rng):
    r = rng.random()
    if r < 0.45:
        return mutate(rng, rng.choice(SEEDS))
    if r < 0.80:
        return "".join(rand_char(rng) for _ in range(int(rng.expovariate(1 / 12))))
    if r < 0.95:
        return "".join(rand_char(rng) for _ in range(rng.randint(100, 3000)))
    return mutate(rng, rng.choice(SEEDS)) * rng.randint(100, 3000)


BROKEN_SEQUENCES = [b"\x80", b"\xbf", b"\xc0\xaf", b"\xc1\xbf", b"\xc3", b"\xe2\x80", b"\xe2\x28\xa1",
                    b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xf0\x9f\x98", b"\xf4\x90\x80\x80", b"\xf5",
                    b"\xf8\x88\x80\x80\x80", b"\xfc\x84\x80\x80\x80\x80", b"\xfe", b"\xff", b"\xe9",
                    b"\x93", b"\x94", b"\xa0"]


# Bytes that are not UTF-8 (for the SQL_ASCII database), never a NUL.
def broken_bytes(rng):
    if rng.random() < 0.3:
        b = bytes(rng.randint(1, 255) for _ in range(rng.randint(1, 40)))
    else:
        b = bytearray(random_text(rng)[:400].encode())
        for _ in range(rng.randint(1, 3)):
            i = rng.randint(0, len(b))
            b[i:i] = rng.choice(BROKEN_SEQUENCES)
        b = bytes(b)
    try:
        b.decode()
        return b + b"\xff"
    except UnicodeDecodeError:
        return b


HAND_TEXT = [
    "", " ", "\t", "\n", "\r\n", "\x01", "\x1f", "\x7f", "\x1b[31mred", "\x08\x08", "\u0085",
    "\u00a0", "\u200b", "\ufeff", "\u200f", "\u202e", "\u061c", "\u0301", "\u0301" * 50, "\u20dd",
    "e\u0301@x.com", "\u0301a@b.co", "a@b.co\u0301", "\u200fa@b.co", "a@b.co\u200e", "\u202eoc.b@a",
    "\ufeffAlice@Example.com\u200b", "\u00a0 a@b.co \u3000", "İ@x.com", "ß@x.com", "ẞ@x.de",
    "K@x.com", "ǅ@x.com", "ΣΑΣ@x.gr", "ﬁ@x.com", "Ⴀ@x.ge", "\U0001F600@x.com", "a@\U0001F600.com",
    "\uffff", "\U0010ffff", "\ufffd", "\ufffe", "a@b", "@", "@@", "a@", "@b.co", "a@b.c", "a@@b.co",
    "a b@c.co", "\"a\"@b.co", "a@[1.2.3.4]", "a@b.co.", ".a@b.co", "a..b@c.co", "a@b..co",
    "a\x01@b.co", "a;b@c.co", "a<b>@c.co", "a@b.co\n", "a@b.co\x7f",
    "x" * 64 + "@" + "y" * 251 + ".com", "x" * 65 + "@b.co", "a@" + "b" * 400 + ".com",
    "0" * 64, "A" * 64, "F" * 64, "g" * 64, "0" * 63, "0" * 65, " " + "a" * 64 + " ",
    "848A771458438FC2EC420560D769FB9B9B86851EE338EC56517BAABD79D3BB4F",
    "848a771458438fc2ec420560d769fb9b9b86851ee338ec56517baabd79d3bb4\u0301",
    "848a771458438fc2ec420560d769\u200bfb9b9b86851ee338ec56517baabd79d3bb4f",
    "+", "++1", "+0", "+1", "+1 ", "+12", "+1234567", "+123456789012345", "+1234567890123456",
    "00", "0044", "00447911123456", "(0)", "+44 (0)20 7946 0958", "+44(0)", "1-800-FLOWERS",
    "٠١٢٣٤٥٦٧٨٩", "+１４１５５５５０１２３", "+1\u00a0415\u00a0555\u00a00123", "+1\u2012415\u2012555",
    "+1//415..555--0123", "0" * 20, "9" * 1000, "+" + "9" * 15, "+" + "9" * 16,
    "+1 (415) 555-0123 ext. 12", "tel:+14155550123", "+1\n4155550123", "#", "*", "-1", "1e10",
    "0x1F", "+1 415 555 0123\u202e", "8 (912) 345-67-89", "06 30 123 4567", "+7", "+999 123456789",
    "US", "us", " US", "US ", "USA", "U", "XX", "ZZ", "G\u0301B", "ＵＳ", "U\u200bS", "Us",
    "usd", "USD ", " USD", "US D", "USDX", "XXX", "ÜSD", "US\u00a0", "EUR\u200b", "€", "$", "U$D",
    "aéééééééé", "aééééééééééééééééééééééééééééééé",
    "1.2.3.4", "256.1.1.1", "1.2.3", "1.2.3.4.5", "01.02.03.04", "::", ":::", "1::2::3",
    "fe80::1%eth0", "::ffff:1.2.3.4", "1.2.3.4/32", "198.51.100.0/24", "0.0.0.0", " 1.2.3.4 ",
    "1.2.3.4\n", "1:2:3:4:5:6:7:8:9", "[::1]", "localhost", "1.2.3.4:80", "١.٢.٣.٤",
    "NaN", "nan", "Infinity", "-Infinity", "inf", "-0", "1e130000", "1e-130000",
    "0." + "0" * 200 + "1", "9" * 101, " 12.50 ", "12,50", "1 000", "+5", "--5", ".5", "5.", ".",
    "-", "１２", "0x10", "1_000",
    "Purchase", "purchase", "PURCHASE", "Add To Cart", "add_to_cart", "Add-To-Cart", "AddToCart ",
    " AddToCart", "Purchase\t", "completepayment", "Pürchase", "Purchase\u200b", "P\u0301urchase",
    "x" * 63, "x" * 64, "x" * 65, "Add To Cart" + " " * 100, "Ｐurchase", "Purchase\n",
    "product", "Product", "product ", "product_group", "products",
    "CTESTPIXEL01", "ctestpixel01", "C4XX", "a" * 64, "a" * 65, "a b", "a;DROP", "-", "_",
    "'", "''", "\"", "\\", "\\x41", "$$", "$1", "%s", "%n", "%s%s%s%s%n", "%.99999s", "{", "}",
    "{}", "[]", "null", "NULL", "true", "\\u0000", "%", ";", "--", "/*", "NEW.id", "OLD", "\"\"",
    "a,b", "{a,b}", "pixel=X", "email=", "=", "==", "email=email", "contents_from=",
    "contents_from=x(", "contents_from=fuzz.attach_items(order_id)", "event_id=nope", "value=email",
    "limited_data_use=email", "contents=email", "contents_from=)(", "contents_from=a(b)c",
    "https://x", "javascript:alert(1)", "http://" + "a" * 3000, "https://ex.com/?q=%00%ff",
    "ftp://[::1]:99999/", "\U0001F469\u200d\U0001F4BB" * 100, "\u202e" * 100 + "abc",
    "\u0301" * 5000, "\u200f" * 5000, "\x01\x02\x03" * 1000,
    "".join(f"{i:x}" for i in range(3000)),
]
HAND_BROKEN = [b"\xff", b"\xc3", b"a@b.co\xff", b"\xc2a@b.co", b"\xe2\x80" + b"a@b.co", b"\xe9@x.com",
               b"+1\xa0415 555 0123", b"USD\xff", b"U\xc3", b"\xc3SD", b"Purchase\xff", b"\xff" * 1000,
               b"\x93quoted\x94", b"\xed\xa0\x80@x.com", b"\xf0\x9f\x98", b"1.2.3.4\xff",
               b"84\xff" + b"8" * 61, b"\xc0\xae\xc0\xae/", b"CTEST\xffPIXEL", b"US\xc3",
               b"a\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9", b"\x80" * 100, b"\xf8\x88\x80\x80\x80" * 10]

HAND_NUMERIC = [
    "NaN", "Infinity", "-Infinity", "-0", "0", "0.0", "-0.0", "1e130000", "-1e130000",
    "1e-16383", "1e-16384", "1e131071", "1e131072", "9" * 1000, "-" + "9" * 1000,
    "0." + "0" * 5000 + "1", "1." + "5" * 10000, "2147483647", "2147483648", "-2147483648",
    "-2147483649", "9223372036854775807", "9223372036854775808", "-9223372036854775808",
    "-9223372036854775809", "18446744073709551616", "1.7976931348623157e308", "1.8e308",
    "2.2250738585072014e-308", "4.9e-324", "1e-400", "0.000001", "0.005", "0.015", "12.345",
    "-0.01", "-1", "1", "1e2", "1E+2", "+1", "0000001", "1.0000000000000000000001",
    "92233720368547758.07", "-92233720368547758.08", "92233720368547758.08", "1e15", "1e16",
    "999999999999.99", "1e300", "-1e-300", "1e100", "0.5", "2.5", "-2.5",
]


# A decimal spelling with any sign, width, scale and exponent.
def random_numeric(rng):
    sign = rng.choice(["", "", "-", "+"])
    whole = "".join(rng.choice("0123456789") for _ in range(rng.choice([0, 1, 2, 5, 10, 20, 40, 300])))
    frac = "".join(rng.choice("0123456789") for _ in range(rng.choice([0, 0, 1, 2, 3, 10, 50, 1000])))
    s = sign + (whole or "0") + ("." + frac if frac else "")
    r = rng.random()
    if r < 0.03:
        s += f"e{rng.choice([-1, 1]) * rng.randint(100000, 131000)}"
    elif r < 0.3:
        s += f"e{rng.choice([-1, 1]) * rng.choice([rng.randint(0, 400), rng.randint(1000, 16000)])}"
    return s


HAND_TS = [
    "infinity", "-infinity", "epoch", "4713-01-01 00:00:00+00 BC", "4714-11-24 00:00:00+00 BC",
    "294276-12-31 23:59:59.999999+00", "294276-12-31 23:59:59.999999-14",
    "294276-12-31 23:59:59.999999+14", "1900-01-01 00:00:00+00", "1969-12-31 23:59:59.999999+00",
    "1970-01-01 00:00:00+00", "1970-01-01 00:00:00.000001+00", "2038-01-19 03:14:08+00",
    "2106-02-07 06:28:16+00", "9999-12-31 23:59:59+00", "10000-01-01 00:00:00+00",
    "2000-02-29 12:00:00+00", "0001-01-01 00:00:00+00", "0001-01-01 00:00:00+00 BC", "J0",
    "2025-01-01 00:00:00+15:59", "2025-01-01T00:00:00Z", " 2025-01-01 ", "2025-01-01 24:00:00+00",
    "2025-06-30 23:59:60+00", "2001-02-29", "2025-13-01",
]
# times relative to the server's clock: the 5-minute future limit
TS_EXPRESSIONS = ["now()", "now() + interval '299 seconds'", "now() + interval '301 seconds'",
                  "now() + interval '1 day'", "now() + interval '100 years'",
                  "now() - interval '47 hours'", "now() - interval '100 years'",
                  "now() + interval '1 microsecond'"]
HAND_DATE = ["infinity", "-infinity", "5874897-12-31", "5874897-01-01", "294277-01-01", "294276-12-31",
             "4714-11-24 BC", "4714-11-23 BC", "4713-01-01 BC", "1900-01-01", "0001-01-01",
             "2025-01-01", "epoch", "today", "tomorrow", "2100-01-01"]


# A timestamp anywhere in PostgreSQL's range, in odd time zones.
def random_ts(rng):
    y = rng.choice([rng.randint(1, 9999), rng.randint(1, 294276), rng.randint(1900, 2100)])
    return (f"{y:04d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} {rng.randint(0, 23):02d}:"
            f"{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}.{rng.randint(0, 999999):06d}"
            f"{rng.choice(['+00', '-14', '+14', '+05:30', '-00:01'])}{' BC' if rng.random() < 0.1 else ''}")


HAND_JSON = [
    "{}", "[]", "null", "true", "false", "0", "-0", "1e308", "1e-400", "1e400", "\"string\"", "\"\"",
    "\"[]\"", "[null]", "[1]", "[\"a\"]", "[[]]", "[{}]", "[{}, 1]", "[true]", "{\"content_id\": \"1\"}",
    "[{\"content_id\": null}]", "[{\"content_id\": true}]", "[{\"content_id\": []}]",
    "[{\"content_id\": {}}]", "[{\"content_id\": 1.5}]", "[{\"content_id\": -0}]",
    "[{\"content_id\": 1e300}]", "[{\"content_id\": \"\"}]", "[{\"content_id\": \"\\u0001\\u001f\"}]",
    "[{\"content_id\": \"\u202e1\"}]", "[{\"price\": \"abc\"}]", "[{\"price\": \"NaN\"}]",
    "[{\"price\": \"Infinity\"}]", "[{\"price\": \"-Infinity\"}]", "[{\"price\": \"1e5\"}]",
    "[{\"price\": -1}]", "[{\"price\": -0}]", "[{\"price\": true}]", "[{\"price\": []}]",
    "[{\"price\": {}}]", "[{\"price\": \"1,5\"}]", "[{\"price\": \" 1 \"}]", "[{\"price\": \"+1\"}]",
    "[{\"price\": \"-0\"}]", "[{\"price\": \"0x10\"}]", "[{\"price\": \"" + "9" * 101 + "\"}]",
    "[{\"price\": \"" + "9" * 100 + "\"}]", "[{\"price\": 1e130}]", "[{\"price\": 1e-130}]",
    "[{\"price\": \"\"}]", "[{\"price\": \".\"}]", "[{\"price\": \"-\"}]", "[{\"price\": \"１\"}]",
    "[{\"quantity\": \"2.5\"}]", "[{\"quantity\": 2.5}]", "[{\"quantity\": -1}]",
    "[{\"quantity\": 1e300}]", "[{\"quantity\": \"" + "9" * 200 + "\"}]", "[{\"quantity\": null}]",
    "[{\"quantity\": 0}]", "[{\"quantity\": 2147483648}]",
    "[{\"content_id\": \"1\", \"quantity\": 2, \"price\": 8}, 1]", "[{\"content_id\": \"1\"}, null]",
    "[{\"brand\": {\"deep\": [1, 2, {\"x\": null}]}, \"content_name\": 42}]", "[{\"\": \"\"}]",
    "[{\"content_id\": \"1\", \"content_id\": \"2\"}]", "{\"value\": \"abc\"}", "{\"value\": -1}",
    "{\"currency\": \"XXX\"}", "{\"currency\": 840}", "{\"contents\": \"x\"}",
    "{\"content_type\": \"products\"}", "{\"\": null}", "{\"user\": {\"email\": \"plain@text\"}}",
    "[{\"content_id\": \"\\ud83d\\ude00\"}]", "[{\"content_id\": \"\\ud800\"}]",
    "[{\"content_id\": \"\\u00e9\"}]", "[{\"content_id\": \"\\u0000\"}]", "{\"shop_id\": \"\\u0000\"}",
    "[{\"content_id\": \"é\", \"content_name\": \"\u0301\u200f\"}]",
]


# A JSON number as TikTok would never expect it, spelled for jsonb.
def json_number(rng):
    return rng.choice(["0", "-0", "1", "-1", "1.5", "2.50", "1e308", "1e-400", "1e400", "0.1", "-0.0",
                       "123456789012345678901234567890", "8", "1E2", str(rng.randint(-10 ** 6, 10 ** 6)),
                       random_numeric(rng).lstrip("+").replace(".e", ".0e") if rng.random() < 0.2 else "7"])


# A JSON string of random text or of a number-like spelling.
def json_string(rng):
    s = rng.choice([random_text(rng)[:200], "NaN", "Infinity", "1e5", " 2 ", "1,5", "-", "", "１", "8.00"])
    return json.dumps(s, ensure_ascii=rng.random() < 0.3)


CONTENT_KEYS = ["content_id", "price", "quantity", "content_name", "content_category", "brand", "value",
                "currency", "", "a"]


# Any JSON value, nested up to a few levels.
def json_value(rng, depth):
    r = rng.random()
    if depth > 4 or r < 0.4:
        return rng.choice([json_number, json_string, lambda _: rng.choice(["true", "false", "null"])])(rng)
    if r < 0.7:
        return "[" + ", ".join(json_value(rng, depth + 1) for _ in range(rng.randint(0, 5))) + "]"
    keys = [json_string(rng) if rng.random() < 0.3 else json.dumps(rng.choice(CONTENT_KEYS))
            for _ in range(rng.randint(0, 5))]
    return "{" + ", ".join(f"{k}: {json_value(rng, depth + 1)}" for k in keys) + "}"


# Mostly contents-shaped arrays, with the fields' types perturbed.
def random_json(rng):
    if rng.random() < 0.6:   # shaped like contents, with the types perturbed
        items = []
        for _ in range(rng.randint(1, 4)):
            fields = [f"\"{k}\": {json_value(rng, 3) if rng.random() < 0.4 else v}" for k, v in
                      (("content_id", json_string(rng)), ("quantity", json_number(rng)),
                       ("price", json_number(rng)), ("content_name", json_string(rng)))
                      if rng.random() < 0.8]
            items.append("{" + ", ".join(fields) + "}")
        return "[" + ", ".join(items) + "]"
    return json_value(rng, 0)


# Values built in the database: too big to send as literals, or ASCII-only.
# (kind, corpus column, SQL expression, SQL_ASCII only)
GIANTS = [
    ("text", "t", "repeat('a', 1048576)", False),
    ("text", "t", f"repeat({utf8('é')}, 600000)", False),
    ("text", "t", "repeat(' ', 1048576) || 'buyer@example.com'", False),
    ("text", "t", "repeat('1', 1100000)", False),
    ("text", "t", "'+' || repeat('9', 1048576)", False),
    ("text", "t", f"repeat({utf8(chr(0x301))}, 400000)", False),
    ("text", "t", f"repeat({utf8(chr(0x200f))}, 400000) || 'a@b.co'", False),
    ("text", "t", f"repeat({utf8(chr(0x202e))}, 350000)", False),
    ("text", "t", "(SELECT string_agg(md5(g::text), '') FROM generate_series(1, 40000) g)", False),
    ("text", "t", "(SELECT string_agg(md5(g::text), '') FROM generate_series(1, 200) g)", False),
    ("text", "t", "repeat(E'\\x01\\x02\\x1b\\x7f', 300000)", False),
    ("text", "t", "repeat('a@b.co ', 200000)", False),
    ("text", "t", "repeat('Mozilla/5.0 (X11; Linux x86_64) ', 170000)", False),
    ("text", "t", f"repeat({utf8(chr(0x1F600))}, 300000)", False),
    ("text", "t", "repeat('9', 131072)", False),
    ("text", "t", "convert_from(decode(repeat('ff', 1048576), 'hex'), 'SQL_ASCII')", True),
    ("text", "t", "convert_from(decode(repeat('c3', 1048577), 'hex'), 'SQL_ASCII')", True),
    ("text", "t", "convert_from(decode(repeat('e280', 524288) || '40782e636f', 'hex'), 'SQL_ASCII')", True),
    ("numeric", "n", "('1' || repeat('0', 130000))::numeric", False),
    ("numeric", "n", "('0.' || repeat('3', 16383))::numeric", False),
    ("numeric", "n", "('-' || repeat('9', 131072))::numeric", False),
    ("jsonb", "j", "(repeat('[', 1000) || repeat(']', 1000))::jsonb", False),
    ("jsonb", "j", "(repeat('[', 10000) || repeat(']', 10000))::jsonb", False),
    ("jsonb", "j", "(repeat('{\"a\": ', 2000) || '1' || repeat('}', 2000))::jsonb", False),
    ("jsonb", "j", "('[{\"content_id\": ' || repeat('[', 1500) || '1' || repeat(']', 1500) || '}]')::jsonb", False),
    ("jsonb", "j", "('[{\"content_id\": \"1\", \"price\": ' || repeat('{\"p\": ', 1500) || '1' "
                   "|| repeat('}', 1500) || '}]')::jsonb", False),
    ("jsonb", "j", "('{\"shop\": ' || repeat('[', 3000) || repeat(']', 3000) || '}')::jsonb", False),
    ("jsonb", "j", "(SELECT jsonb_agg(jsonb_build_object('content_id', g::text, 'quantity', 1, 'price', g)) "
                   "FROM generate_series(1, 100000) g)", False),
    ("jsonb", "j", "(SELECT jsonb_agg(g) FROM generate_series(1, 100000) g)", False),
    ("jsonb", "j", "(SELECT jsonb_agg(g::text) FROM generate_series(1, 100000) g)", False),
    ("jsonb", "j", "(SELECT jsonb_agg(NULL::int) FROM generate_series(1, 100000) g)", False),
    ("jsonb", "j", "(SELECT jsonb_object_agg('k' || g, g) FROM generate_series(1, 100000) g)", False),
    ("jsonb", "j", "jsonb_build_array(jsonb_build_object('content_id', repeat('x', 1100000)))", False),
    ("jsonb", "j", "(SELECT jsonb_agg(jsonb_build_object('content_id', g::text, 'price', 'NaN')) "
                   "FROM generate_series(1, 20000) g)", False),
    ("jsonb", "j", "(SELECT jsonb_agg(jsonb_build_object('content_id', g::text, 'price', "
                   "CASE WHEN g = 99999 THEN -1 ELSE 1 END)) FROM generate_series(1, 100000) g)", False),
] + [("timestamptz", "ts", e, False) for e in TS_EXPRESSIONS]


# The corpus as rows (id, kind, origin, bytes) for one database; broken
# UTF-8 only where the encoding allows it.
def corpus(ascii_db):
    rng = random.Random(SEED)
    out = []

    def add(kind, origin, value):
        out.append((len(out) + 1, kind, origin, value if isinstance(value, bytes) else value.encode()))

    for s in HAND_TEXT:
        add("text", "hand", s)
    for s in HAND_JSON:
        add("text", "jsontext", s)
    for _ in range(N_RANDOM_TEXT):
        add("text", "random", random_text(rng))
    broken = HAND_BROKEN + [broken_bytes(rng) for _ in range(N_BROKEN)]   # drawn in both: same seed path
    if ascii_db:
        for i, b in enumerate(broken):
            add("text", "hand" if i < len(HAND_BROKEN) else "random", b)
    for s in HAND_NUMERIC:
        add("numeric", "hand", s)
    for _ in range(N_RANDOM_NUMERIC):
        add("numeric", "random", random_numeric(rng))
    for s in HAND_TS:
        add("timestamptz", "hand", s)
    for _ in range(N_RANDOM_TS):
        add("timestamptz", "random", random_ts(rng))
    for s in HAND_DATE:
        add("date", "hand", s)
    for s in HAND_JSON:
        add("jsonb", "hand", s)
    for _ in range(N_RANDOM_JSON):
        add("jsonb", "random", random_json(rng))
    return out


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
            "referrer", "default_country"]:
    call = ("tiktok_capi.tt_event(v.t, 'fz-1')" if arg == "event" else
            "tiktok_capi.tt_event('Purchase', v.t)" if arg == "event_id" else EV.format(arg=arg, val="v.t"))
    CALLS.append(Call("tt_event", f"tt_event({arg})", "text", f"r_json := {call};", "r_json", EVENT,
                      every=5, ident=arg in ("email", "phone", "external_id", "ip"), states=EVENT_STATES))
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
     + (SELECT count(*) FROM fuzz.orders_wrong o WHERE NOT EXISTS (SELECT FROM tiktok_capi.outbox b
            WHERE b.event = 'CompletePayment' AND (b.event_id = coalesce(o.id, '')
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
