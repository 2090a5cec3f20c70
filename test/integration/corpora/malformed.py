"""The corpus of survives_malformed_input.py: more than 5,000 malformed
values, generated from a fixed seed plus hand-picked edge cases.

Text of every sort (mutated plausible values, control characters, lone
combining and RTL marks, astral and non-characters, long runs), bytes that
are not UTF-8 (for a SQL_ASCII database), numbers (NaN, Infinity,
1e130000, -0, thousands of decimals), times and dates at and past
PostgreSQL's limits, JSON of the wrong shapes and types, and giants built
in the database (strings of 1 MB and more, jsonb nested thousands of
levels deep, arrays of 100,000 elements).  corpus() gives the values as
rows for one database; GIANTS are SQL expressions.  The same seed gives
the same corpus on every run.  Standard library only; no database here.
"""
import json
import random

SEED = 20261122
N_RANDOM_TEXT = 4300
N_BROKEN = 700                # SQL_ASCII only
N_RANDOM_NUMERIC = 300
N_RANDOM_TS = 60
N_RANDOM_JSON = 300


# A SQL expression for a text the script itself cannot carry (non-ASCII):
# its UTF-8 bytes, taken as the database's encoding.
def utf8(s):
    return f"convert_from(decode('{s.encode().hex()}', 'hex'), getdatabaseencoding())"


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
