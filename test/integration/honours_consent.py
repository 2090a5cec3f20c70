"""Consent changed while an event waits is honoured at send time.

Orders with a consent column are queued while the worker is off
(tiktok_capi.enabled = off). Consent is then withdrawn for some, under
tiktok_capi.consent_denied = anonymous and under skip, and granted for
others, including orders that skip had left out. Then the worker is
enabled. A withdrawn order is either not delivered at all (skip) or
delivered without email, phone, external_id, ip, user_agent, ttp and ttclid
(anonymous); a granted one is delivered with them, hashed; every order
committed. What was delivered is read three ways: the mock's accepted keys,
the outbox payload of the sent rows, and the request bodies themselves, seen
by a tap on 127.0.0.1 between the worker and the mock.
"""
import hashlib
import json
import socketserver
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from harness import (PIXEL, Mock, Tap, configure, counts, drained, install, no_crash, psql,
                     wait_until)

IDENTIFIERS = {"email", "phone", "external_id", "ip", "user_agent", "ttp", "ttclid"}
# (first id, last id): what happens to the order's consent
WITHDRAWN_ANONYMOUS = range(1, 121)     # granted, then withdrawn under anonymous
WITHDRAWN_SKIP = range(121, 241)        # granted, then withdrawn under skip
GRANTED_LATER = range(241, 361)         # denied (anonymous), then granted
GRANTED_AFTER_SKIP = range(361, 481)    # denied under skip (nothing queued), then granted
ALWAYS_GRANTED = range(481, 601)
N = 600


class WireTap:
    """Forwards each track request to the mock and keeps the events of the
    requests the mock accepted, exactly as the worker sent them."""

    def __init__(self, upstream):
        self.lock = threading.Lock()
        self.events = {}  # event_id -> [event as sent, ...]
        self.requests = 0
        tap = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # the token is in the headers: log nothing
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() in ("content-type", "access-token")}
                req = urllib.request.Request(upstream, data=raw, method="POST", headers=headers)
                try:
                    with urllib.request.urlopen(req, timeout=30) as r:
                        status, answer = r.status, r.read()
                except urllib.error.HTTPError as e:
                    status, answer = e.code, e.read()
                try:
                    accepted = status == 200 and json.loads(answer).get("code") == 0
                except ValueError:
                    accepted = False
                with tap.lock:
                    tap.requests += 1
                    if accepted:
                        for ev in json.loads(raw)["data"]:
                            tap.events.setdefault(ev.get("event_id"), []).append(ev)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def server_bind(self):  # no reverse DNS lookup of 127.0.0.1
                socketserver.TCPServer.server_bind(self)
                self.server_name, self.server_port = self.server_address[:2]

        self.server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/open_api/v1.3/event/track/"

    def stop(self):
        self.server.shutdown()


def ids(r):
    return ",".join(str(i) for i in r)


def keys_of(*ranges):
    return {(PIXEL, "Purchase", str(i)) for r in ranges for i in r}


def sha256(s):
    return hashlib.sha256(s.encode()).hexdigest()


tap = Tap(14)
mock = Mock()
wire = WireTap(mock.url)
configure(mock, api_url=wire.url, enabled="off")
install()
psql("""CREATE TABLE orders (id bigint PRIMARY KEY, email text, phone text, customer_id text,
          ttclid text, ttp text, ip inet, user_agent text, total numeric(12,2), currency text,
          consent text)""")
psql("SELECT tiktok_capi.tt_attach('orders', 'Purchase')")


def insert(r, consent, setting=""):
    psql(f"""{setting}
        INSERT INTO orders SELECT g, 'buyer' || g || '@example.com', '+1415555' || lpad(g::text, 4, '0'),
               'CUST-' || g, 'E.C.P.' || g, 'ttp-' || g, '203.0.113.7', 'Mozilla/5.0', g + 0.99, 'USD', {consent}
          FROM unnest('{{{ids(r)}}}'::bigint[]) g""")


# queued while the worker is off
insert(WITHDRAWN_ANONYMOUS, "'granted'")
insert(WITHDRAWN_SKIP, "'yes'")
insert(GRANTED_LATER, "'no'")
insert(GRANTED_AFTER_SKIP, "'denied'", "SET tiktok_capi.consent_denied = 'skip';")
insert(ALWAYS_GRANTED, "'true'")
queued = psql("SELECT count(*) FROM tiktok_capi.outbox WHERE status = 'pending'")
tap.ok(queued == str(N - len(GRANTED_AFTER_SKIP)),
       "every order is queued but those skip left out", queued)

# consent changes while the events wait
psql(f"UPDATE orders SET consent = 'denied' WHERE id = ANY ('{{{ids(WITHDRAWN_ANONYMOUS)}}}')")
psql(f"""SET tiktok_capi.consent_denied = 'skip';
         UPDATE orders SET consent = 'no' WHERE id = ANY ('{{{ids(WITHDRAWN_SKIP)}}}')""")
psql(f"UPDATE orders SET consent = 'granted' WHERE id = ANY ('{{{ids(GRANTED_LATER)}}}')")
psql(f"""SET tiktok_capi.consent_denied = 'skip';
         UPDATE orders SET consent = 'yes' WHERE id = ANY ('{{{ids(GRANTED_AFTER_SKIP)}}}')""")
tap.ok(mock.stats()["requests"] == 0 and wire.requests == 0,
       "nothing was sent while the worker was off", (mock.stats()["requests"], wire.requests))

expected = keys_of(WITHDRAWN_ANONYMOUS, GRANTED_LATER, GRANTED_AFTER_SKIP, ALWAYS_GRANTED)
configure(mock, api_url=wire.url, enabled="on")
tap.ok(wait_until(lambda: drained(len(expected)), 60), f"all {len(expected)} queued events were delivered",
       counts())

committed = psql("SELECT count(*) FROM orders")
tap.ok(committed == str(N), "every order committed", committed)
keys = mock.keys()
tap.ok(set(keys) == expected, "the API accepted the queued orders' keys and no others",
       sorted(set(keys) ^ expected)[:5])
tap.ok(all(n == 1 for n in keys.values()), "each once", [k for k, n in keys.items() if n != 1][:5])
tap.ok(not set(keys) & keys_of(WITHDRAWN_SKIP) and not any(str(i) in wire.events for i in WITHDRAWN_SKIP),
       "orders withdrawn under skip never reached the API")
left = psql(f"SELECT count(*) FROM tiktok_capi.outbox WHERE event_id = ANY ('{{{ids(WITHDRAWN_SKIP)}}}')")
tap.ok(left == "0", "and have no outbox row", left)

# the outbox payloads of the sent rows, and their warnings
sent = {}
for line in psql("""SELECT event_id, payload::text, coalesce(array_to_string(warnings, '|'), '')
                      FROM tiktok_capi.outbox WHERE status = 'sent'""").splitlines():
    eid, payload, warnings = line.split("|", 2)
    sent[eid] = (json.loads(payload), warnings)
anonymous_ok = [i for i in WITHDRAWN_ANONYMOUS
                if str(i) in sent and not IDENTIFIERS & set(sent[str(i)][0].get("user", {}))
                and sent[str(i)][1] == "consent denied: identifiers withheld"
                and sent[str(i)][0].get("properties", {}).get("order_id") == str(i)]
tap.ok(len(anonymous_ok) == len(WITHDRAWN_ANONYMOUS),
       "orders withdrawn under anonymous were sent without identifiers, with the note (outbox)",
       sorted(set(WITHDRAWN_ANONYMOUS) - set(anonymous_ok))[:5])
granted = [i for r in (GRANTED_LATER, GRANTED_AFTER_SKIP, ALWAYS_GRANTED) for i in r]
with_ids = [i for i in granted
            if str(i) in sent and set(sent[str(i)][0].get("user", {})) == IDENTIFIERS
            and sent[str(i)][0]["user"]["email"] == sha256(f"buyer{i}@example.com")
            and sent[str(i)][0]["user"]["ttclid"] == f"E.C.P.{i}"
            and sent[str(i)][1] == ""]
tap.ok(len(with_ids) == len(granted),
       "orders with consent, granted before or after queueing, were sent with every identifier (outbox)",
       sorted(set(granted) - set(with_ids))[:5])

# the request bodies: what left the database
on_wire = {eid: evs[-1] for eid, evs in wire.events.items()}
tap.ok(all(on_wire.get(eid) == payload for eid, (payload, _) in sent.items()) and len(on_wire) == len(sent),
       "each sent row's payload is what went over the wire",
       [eid for eid, (p, _) in sent.items() if on_wire.get(eid) != p][:5])
leaked = [i for i in WITHDRAWN_ANONYMOUS
          if any(IDENTIFIERS & set(ev.get("user", {})) for ev in wire.events.get(str(i), []))]
tap.ok(str(WITHDRAWN_ANONYMOUS[0]) in wire.events and not leaked,
       "no request carried an identifier of an order withdrawn under anonymous", leaked[:5])
raw_seen = [i for evs in wire.events.values() for ev in evs for i in [ev.get("event_id")]
            if f"buyer{i}@example.com" in json.dumps(ev) or f"CUST-{i}" in json.dumps(ev)]
tap.ok(not raw_seen, "no raw email or external id was ever sent", raw_seen[:5])

no_crash(tap)
wire.stop()
mock.stop()
tap.done()
