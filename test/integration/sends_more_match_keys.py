"""The match keys beyond email and phone reach the Events API as TikTok
takes them: first_name, last_name and zip_code SHA-256 hashed after
trimming and lowercasing, city and state plain, lowercased without spaces,
country as a lowercase ISO 3166 alpha-2 code.  A shop's orders table with
its customers' names and billing address is captured by its default column
names (given_name, surname, billing_postcode, city, province, country_code),
an order without consent sends none of them, and an event built by
tt_event() carries them too.  The mock checks the shape of each key and
rejects a request with a key TikTok would refuse: every event is accepted.
"""
import hashlib

from harness import PIXEL, Mock, Tap, configure, counts, drained, install, no_crash, psql, wait_until

N = 60


def sha(s):
    return hashlib.sha256(s.encode()).hexdigest()


CITIES = ["New York", " SÃO PAULO ", "Saint-Étienne", "Los Angeles"]
PROVINCES = ["NY", "São Paulo", "Loire", "CA"]
COUNTRIES = ["US", "br", " FR ", "us"]

tap = Tap(8)
mock = Mock()
configure(mock)
install()
psql("""CREATE TABLE shop_orders (
          id integer PRIMARY KEY, email text, given_name text, surname text,
          billing_postcode text, city text, province text, country_code text,
          total numeric(12, 2), currency text, consent boolean)""")
psql("SELECT tiktok_capi.tt_attach('shop_orders', 'Purchase')")
rows = []
for i in range(1, N + 1):
    k = i % 4
    rows.append("(%d, 'buyer%d@example.com', '  Ann%d ', 'LEE-%d', 'SW1A %dAA', '%s', '%s', '%s', 10.5, 'GBP', %s)"
                % (i, i, i, i, i, CITIES[k], PROVINCES[k], COUNTRIES[k], "false" if i % 10 == 0 else "true"))
psql("INSERT INTO shop_orders VALUES " + ", ".join(rows))
# one event built by hand, with a name already hashed by the shop
psql(f"""SELECT tiktok_capi.tt_enqueue('{PIXEL}', tiktok_capi.tt_event('Lead', 'lead-1',
           first_name => 'Zoe', last_name => '{sha("kim").upper()}', zip_code => ' 02139 ',
           city => 'Cambridge', state => 'MA', country => 'US'))""")

tap.ok(wait_until(lambda: drained(N + 1), 60), "every event is delivered", counts())
stats = mock.stats()
tap.ok(stats["rejected"] == {} and stats["events_accepted"] == N + 1,
       "the mock, which checks each key's shape, rejects nothing", stats)

sent = {i: ev for (p, e, i), ev in mock.events().items()}
want = {}
for i in range(1, N + 1):
    k = i % 4
    if i % 10 == 0:
        continue
    want[str(i)] = {"first_name": sha("ann%d" % i), "last_name": sha("lee-%d" % i),
                    "zip_code": sha("sw1a %daa" % i),
                    "city": CITIES[k].strip().lower().replace(" ", ""),
                    "state": PROVINCES[k].lower().replace(" ", ""),
                    "country": COUNTRIES[k].strip().lower()}
KEYS = ("first_name", "last_name", "zip_code", "city", "state", "country")
bad = [i for i, w in want.items()
       if {f: sent.get(i, {}).get("user", {}).get(f) for f in KEYS} != w]
tap.ok(not bad, "each order with consent carries its names and zip code hashed, its city, state and country plain",
       [(i, sent.get(i, {}).get("user")) for i in bad[:2]])
tap.ok(sent["1"]["user"]["city"] == "s\u00e3opaulo" and sent["2"]["user"]["city"] == "saint-\u00e9tienne",
       "a city is lowercased beyond ASCII", (sent["1"]["user"], sent["2"]["user"]))
withheld = [i for i in range(10, N + 1, 10) if set(KEYS) & set(sent[str(i)].get("user", {}))]
tap.ok(not withheld and all(str(i) in sent for i in range(10, N + 1, 10)),
       "an order without consent is delivered without any of them", withheld)
lead = sent["lead-1"]["user"]
tap.ok(lead == {"first_name": sha("zoe"), "last_name": sha("kim"), "zip_code": sha("02139"),
                "city": "cambridge", "state": "ma", "country": "us"},
       "tt_event's keys are delivered, a hashed one passed through", lead)
tap.ok(psql("SELECT count(*) FROM tiktok_capi.outbox WHERE warnings IS NOT NULL AND event_id NOT IN "
            "(SELECT id::text FROM shop_orders WHERE NOT consent)") == "0",
       "no order with consent lost a key (no warning)")
no_crash(tap)
tap.done()
