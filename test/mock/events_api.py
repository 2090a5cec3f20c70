#!/usr/bin/env python3
"""A mock of TikTok's Events API 2.0 (POST /open_api/v1.3/event/track/), for tests.

It validates requests the way TikTok does (HTTP 200 with a JSON body whose `code` tells
the outcome; one bad event fails the whole request), counts every accepted event under
TikTok's dedup key (pixel, event, event_id), and can inject faults: 5xx, 40100, 50002,
connection resets and hangs. Standard library only; listens on 127.0.0.1 and nowhere else.

    python3 test/mock/events_api.py [--port N] [--port-file PATH] [--count-only] [--quiet]
                                    [--tls-cert PEM --tls-key PEM]

--port 0 (the default) lets the OS choose; --port-file gets the port once listening (written
atomically); --count-only skips per-field validation (for throughput runs); --quiet drops the
"listening on 127.0.0.1:PORT" line. Requests are never logged. SIGTERM/SIGINT exit 0.
--tls-cert and --tls-key (PEM files, given together) serve HTTPS instead of HTTP on the port,
control endpoints included, with that certificate (the line says "https://127.0.0.1:PORT"); the
TLS handshake happens in the request's thread, so a client that refuses the certificate stalls
nobody else.

Tests start it on port 0, read the chosen port from --port-file, point the extension at it
with tiktok_capi.api_url = 'http://127.0.0.1:PORT/open_api/v1.3/event/track/' (the full path:
any other path is answered 404), and drive it through control endpoints (no token needed):

    GET  /_mock/stats    counters: requests, accepted_requests, events_accepted, unique_keys,
                         duplicate_keys, max_batch, faults{kind:n}, rejected{code:n},
                         test_event_codes{code:n}, redirects (track requests answered 302),
                         html_answers (track requests answered with html_status),
                         not_found (requests answered 404: a wrong path, or GET on the
                         track path, as a client following a 302 would send); and the
                         concurrency seen: open_now (track requests open now), max_open (the
                         most open at once), concurrent_duplicates (requests that arrived
                         carrying a key that another still-open request carries; each such key
                         counts in concurrent_duplicate_keys), throttled (answered 40100 by
                         throttle_open), held (requests held by hold), abandoned (held requests
                         whose client hung up before the answer: nothing accepted)
    GET  /_mock/keys     [[pixel, event, event_id, times_accepted, first_seen], ...]; first_seen
                         is the wall-clock time (time.time()) the key was first accepted, taken
                         just before its answer is written
    GET  /_mock/events   [[pixel, event, event_id, the event as last accepted], ...] (not kept
                         with --count-only)
    GET  /_mock/requests the track requests in arrival order (the last 100,000; ?pixel=CODE:
                         those of one pixel), each
                         {seq, pixel, events, event_ids (the first 10), bytes (of its body),
                         held, arrived, closed, outcome}: arrived and closed are wall-clock times (closed null while
                         open), outcome null while open, then accepted, rejected:<code>,
                         throttled, fault:<kind> or abandoned
    POST /_mock/config   merge a JSON object into the config; answers the config, tokens masked
    POST /_mock/reset    counters, keys, the request log and config back to the defaults;
                         max_open restarts from open_now (requests in flight stay open)
    POST /_mock/reset_max_open   max_open restarts from open_now, nothing else changes

A track request is open from the moment its body is read until its answer is written, or
until its client hangs up while it is held or hung (a plain delay_ms is slept through).

Config keys: tokens {pixel: token}, sources {id: "web" | "app" | "offline" | "crm"} (what each
configured id is; an id not listed is a web pixel; a request whose event_source is not its id's
is rejected 40002 "Invalid value for event_source_id", as TikTok does), no_permission [pixel],
count_only bool, fault_rate 0..1,
faults [kinds], hang_seconds, poison [event_id], delay_ms, redirect_to (an http(s) URL, or null
for off: while set, every track request is counted in requests and redirects and answered
302 Found with Location: redirect_to and an empty body, before any delay, fault or check),
html_status (an HTTP status 100..599, or null for off: while set, every track request is counted
in requests and html_answers and answered with that status and an HTML page instead of the API's
JSON, as a web server or load balancer in front of the wrong place does, before any delay, fault
or check; redirect_to goes first),
hold {"requests": N, "seconds": S} (the next N track requests, throttled ones aside, are held
S seconds instead of delay_ms before they are judged and answered; a held request whose
client hangs up meanwhile is dropped, nothing of it accepted; the config shows the N still
to come), throttle_open K (null for off: a track request arriving while K or more others are
open is answered at once, HTTP 200 with code 40100, nothing accepted).
Tokens are never echoed or printed.
"""
import argparse, collections, hmac, itertools, json, os, random, select, signal, socket
import socketserver, ssl, struct, sys, threading, time, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TRACK_PATH = "/open_api/v1.3/event/track/"
FAULT_KINDS = ["5xx", "40100", "50002", "reset", "hang"]
CURRENCIES = set("""AED ARS AUD BDT BHD BIF BOB BRL CAD CHF CLP CNY COP CRC CZK DKK DZD EGP EUR
GBP GTQ HKD HNL HUF IDR ILS INR ISK JPY KES KHR KRW KWD KZT MAD MOP MXN MYR NGN NIO NOK NZD OMR
PEN PHP PKR PLN PYG QAR RON RUB SAR SEK SGD THB TRY TWD UAH USD VES VND ZAR""".split())
HEX = set("0123456789abcdef")
LOWER_ASCII = set("abcdefghijklmnopqrstuvwxyz")
SOURCES = ("web", "app", "offline", "crm")
# TikTok's event names (standard and legacy): offline events take no other
STANDARD_EVENTS = set("""AddPaymentInfo AddToCart AddToWishlist ApplicationApproval
CompleteRegistration Contact CustomizeProduct Download FindLocation InitiateCheckout Lead Purchase
Schedule Search StartTrial SubmitApplication Subscribe ViewContent CompletePayment SubmitForm
PlaceAnOrder ClickButton""".split())
# What offline and CRM events may not carry: the browser's fields
BROWSER_USER_FIELDS = ("ttclid", "ttp", "ip", "user_agent")
MAX_BODY = 64 * 1024 * 1024
REQUEST_LOG = 100_000
DEFAULTS = {"tokens": {}, "sources": {}, "no_permission": [], "count_only": False, "fault_rate": 0.0,
            "faults": list(FAULT_KINDS), "hang_seconds": 30.0, "poison": [], "delay_ms": 0,
            "redirect_to": None, "html_status": None, "hold": {"requests": 0, "seconds": 0},
            "throttle_open": None}


class Invalid(Exception):
    """A 40002: the message names the field, like TikTok's."""


class State:
    """Config and counters, shared by all handler threads, guarded by one lock."""

    def __init__(self, count_only):
        self.lock = threading.Lock()
        self.defaults = dict(DEFAULTS, count_only=count_only)
        self.ids = itertools.count(1)
        self.open_now = 0
        self.open_keys = {}  # key -> open requests carrying it
        self.max_open = 0
        self.reset()

    # Back to a clean slate between tests, without restarting the process.
    def reset(self):
        with self.lock:
            self.config = json.loads(json.dumps(self.defaults))
            self.keys = {}  # (pixel, event, event_id) -> [times accepted, first accepted]
            self.duplicate_keys = 0  # keys accepted more than once
            self.events = {}  # (pixel, event, event_id) -> the event as last accepted
            self.stats = {"requests": 0, "accepted_requests": 0, "events_accepted": 0,
                          "max_batch": 0, "faults": {}, "rejected": {}, "test_event_codes": {},
                          "redirects": 0, "not_found": 0, "html_answers": 0, "concurrent_duplicates": 0,
                          "concurrent_duplicate_keys": 0, "throttled": 0, "held": 0,
                          "abandoned": 0}
            self.log = collections.deque(maxlen=REQUEST_LOG)  # the requests' records
            self.seqs = itertools.count(1)
            self.max_open = self.open_now  # those in flight stay open

    def reset_max_open(self):
        with self.lock:
            self.max_open = self.open_now
            return {"max_open": self.max_open}

    # Shallow merge, refusing unknown keys and wrong types so a typo in a test fails loudly.
    def merge(self, new):
        for k, v in new.items():
            d = DEFAULTS.get(k)
            if k == "redirect_to":
                if v is not None and not (isinstance(v, str) and v.startswith(("http://", "https://"))):
                    raise ValueError("redirect_to must be an http(s) URL or null")
            elif k == "html_status":
                if v is not None and not (is_int(v) and 100 <= v <= 599):
                    raise ValueError("html_status must be an HTTP status (100..599) or null")
            elif k == "throttle_open":
                if v is not None and not (is_int(v) and v >= 1):
                    raise ValueError("throttle_open must be an integer of at least 1, or null")
            elif k == "hold":
                if not (isinstance(v, dict) and set(v) == {"requests", "seconds"}
                        and is_int(v["requests"]) and v["requests"] >= 0
                        and is_num(v["seconds"]) and v["seconds"] >= 0):
                    raise ValueError('hold must be {"requests": N >= 0, "seconds": S >= 0}')
            elif k not in DEFAULTS or not (is_num(v) if is_num(d) else type(v) is type(d)):
                raise ValueError("unknown config key or wrong type: %s" % k)
        if any(v not in SOURCES for v in (new.get("sources") or {}).values()):
            raise ValueError("sources must map ids to web, app, offline or crm")
        if any(f not in FAULT_KINDS for f in new.get("faults", [])):
            raise ValueError("unknown fault kind in %s" % new["faults"])
        with self.lock:
            self.config.update(json.loads(json.dumps(new)))
            return self.public_config()

    # The config as shown to clients: token values replaced, never echoed.
    def public_config(self):
        shown = dict(self.config)
        shown["tokens"] = {pixel: "***" for pixel in self.config.get("tokens") or {}}
        return shown

    # A plain counter (redirects, not_found), under the lock like the others.
    def bump_total(self, key):
        with self.lock:
            self.stats[key] += 1

    def bump(self, table, key):
        with self.lock:
            self.stats[table][key] = self.stats[table].get(key, 0) + 1

    # A track request arrives carrying keys: it is open from now on.  Decides, under the
    # lock, whether it is throttled (throttle_open) or held (hold); answers its record.
    def open_request(self, body, keys, cfg, size):
        events = body.get("data") if isinstance(body, dict) else None
        pixel = body.get("event_source_id") if isinstance(body, dict) else None
        with self.lock:
            st = self.stats
            others = self.open_now
            self.open_now += 1
            self.max_open = max(self.max_open, self.open_now)
            distinct = set(keys)
            clash = len(distinct & self.open_keys.keys())
            if clash:
                st["concurrent_duplicates"] += 1
                st["concurrent_duplicate_keys"] += clash
            for k in distinct:
                self.open_keys[k] = self.open_keys.get(k, 0) + 1
            limit = self.config["throttle_open"]
            throttled = limit is not None and others >= limit
            held, hold = False, self.config["hold"]
            if not throttled and hold["requests"] > 0:
                self.config["hold"] = dict(hold, requests=hold["requests"] - 1)
                held = True
                st["held"] += 1
            if throttled:
                st["throttled"] += 1
            rec = {"seq": next(self.seqs), "pixel": pixel if isinstance(pixel, str) else None,
                   "events": len(events) if isinstance(events, list) else 0,
                   "event_ids": [k[2] for k in keys[:10]], "bytes": size, "held": held,
                   "arrived": time.time(), "closed": None, "outcome": None}
            self.log.append(rec)
            return rec, distinct, throttled, (float(hold["seconds"]) if held else None)

    # The request is answered (or its client gone): no longer open.
    def close_request(self, rec, distinct, outcome):
        with self.lock:
            self.open_now -= 1
            for k in distinct:
                n = self.open_keys[k] - 1
                if n:
                    self.open_keys[k] = n
                else:
                    del self.open_keys[k]
            rec["closed"], rec["outcome"] = time.time(), outcome
            if outcome == "abandoned":
                self.stats["abandoned"] += 1

    # Count one accepted request: every event under its dedup key.
    def accept(self, body, keys):
        now, events = time.time(), body["data"]
        with self.lock:
            st = self.stats
            st["accepted_requests"] += 1
            st["events_accepted"] += len(events)
            st["max_batch"] = max(st["max_batch"], len(events))
            tec = body.get("test_event_code")
            if isinstance(tec, str):
                st["test_event_codes"][tec] = st["test_event_codes"].get(tec, 0) + 1
            keep = not self.config["count_only"]
            for ev, key in zip(events, keys):
                seen = self.keys.setdefault(key, [0, now])
                seen[0] += 1
                if seen[0] == 2:  # counted as it happens: stats stay cheap at a million keys
                    self.duplicate_keys += 1
                if keep:
                    self.events[key] = ev if isinstance(ev, dict) else {}

    def snapshot(self):
        with self.lock:
            out = json.loads(json.dumps(self.stats))
            out["unique_keys"] = len(self.keys)
            out["duplicate_keys"] = self.duplicate_keys
            out["open_now"], out["max_open"] = self.open_now, self.max_open
            return out

    def key_list(self):
        with self.lock:
            return [[*k, n, first] for k, (n, first) in self.keys.items()]

    def event_list(self):
        with self.lock:
            return [[*k, ev] for k, ev in self.events.items()]

    def request_list(self, pixel=None):
        with self.lock:
            return [dict(r) for r in self.log if pixel is None or r["pixel"] == pixel]


# TikTok's dedup key of each event of a parsed body (pixel, event, event_id), one per element
# of data[]; a value that is not a plain scalar is keyed by its JSON text.
def event_keys(body):
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        return []
    pixel = body.get("event_source_id")
    pixel = json.dumps(pixel) if isinstance(pixel, (dict, list)) else pixel
    keys = []
    for ev in body["data"]:
        ev = ev if isinstance(ev, dict) else {}
        e, i = ev.get("event"), ev.get("event_id")
        keys.append((pixel, json.dumps(e) if isinstance(e, (dict, list)) else e,
                     json.dumps(i) if isinstance(i, (dict, list)) else i))
    return keys


def is_int(v):  # JSON true/false parse to bool, a subclass of int: not a number here
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def need(ok, field, why):
    if not ok:
        raise Invalid("Invalid value for %s: %s." % (field, why))


# Optional plain-string fields of an object.
def strings(obj, fields, at):
    for f in fields:
        if f in obj:
            need(isinstance(obj[f], str), at + "." + f if at else f, "not a valid string")


# The per-field rules of one request body, as documented in tiktok-events-api.md; sources:
# the configured ids' sources (an id not listed is a web pixel).
def validate(body, sources=None):
    source = body.get("event_source")
    need(source in SOURCES, "event_source", "must be web, app, offline or crm")
    pixel = body.get("event_source_id")
    need(isinstance(pixel, str) and pixel != "", "event_source_id", "not a valid string")
    need((sources or {}).get(pixel, "web") == source, "event_source_id",
         "not a %s id" % ("pixel code" if source == "web" else source + " event set"
                         if source in ("offline", "crm") else "TikTok app id"))
    strings(body, ("test_event_code",), "")
    data = body.get("data")
    need(isinstance(data, list) and 1 <= len(data) <= 1000, "data",
         "must be an array of 1 to 1000 events")
    for i, ev in enumerate(data):
        validate_event(ev, "data[%d]" % i)
        validate_source(ev, "data[%d]" % i, source)


# What one event may carry for its source: offline and CRM no browser fields, offline
# standard names only, a lead (with its lead_id) for CRM only.
def validate_source(ev, at, source):
    if source in ("offline", "crm"):
        for f in BROWSER_USER_FIELDS:
            need(f not in ev.get("user", {}), "%s.user.%s" % (at, f),
                 "not accepted for %s events" % source)
        for f in ("page", "limited_data_use"):
            need(f not in ev, "%s.%s" % (at, f), "not accepted for %s events" % source)
    if source == "offline":
        need(ev["event"] in STANDARD_EVENTS, at + ".event",
             "offline events take standard event names only")
    if source == "crm":
        lead = ev.get("lead")
        need(isinstance(lead, dict), at + ".lead", "required for crm events")
        need(isinstance(lead.get("lead_id"), str) and lead["lead_id"] != "",
             at + ".lead.lead_id", "not a valid string")
        strings(lead, ("lead_event_source",), at + ".lead")
    else:
        need("lead" not in ev, at + ".lead", "not accepted for %s events" % source)


def validate_event(ev, at):
    need(isinstance(ev, dict), at, "not an object")
    need(isinstance(ev.get("event"), str) and ev["event"] != "", at + ".event",
         "not a valid string")
    t = ev.get("event_time")
    need(is_int(t) and t > 0, at + ".event_time", "not a valid integer of unix seconds")
    need(t <= time.time() + 300, at + ".event_time", "in the future")
    need(isinstance(ev.get("event_id"), str) and ev["event_id"] != "", at + ".event_id",
         "not a valid string")
    user = ev.get("user", {})
    need(isinstance(user, dict), at + ".user", "not an object")
    for f in ("email", "phone", "external_id"):
        if f in user:
            vals = user[f] if isinstance(user[f], list) else [user[f]]
            for v in vals:
                need(isinstance(v, str) and len(v) == 64 and set(v) <= HEX,
                     "%s.user.%s" % (at, f), "not a lowercase SHA-256 hex digest")
    strings(user, ("ttclid", "ttp", "ip", "user_agent", "locale"), at + ".user")
    # more match keys: names and zip code hashed; city, state, country plain
    for f in ("first_name", "last_name", "zip_code"):
        if f in user:
            v = user[f]
            need(isinstance(v, str) and len(v) == 64 and set(v) <= HEX,
                 "%s.user.%s" % (at, f), "not a lowercase SHA-256 hex digest")
    for f in ("city", "state"):
        if f in user:
            v = user[f]
            need(isinstance(v, str) and v != "" and v == v.lower()
                 and not any(c.isspace() for c in v),
                 "%s.user.%s" % (at, f), "not lowercase without spaces")
    if "country" in user:
        v = user["country"]
        need(isinstance(v, str) and len(v) == 2 and set(v) <= LOWER_ASCII,
             at + ".user.country", "not a lowercase ISO 3166 alpha-2 code")
    props = ev.get("properties", {})
    need(isinstance(props, dict), at + ".properties", "not an object")
    if "currency" in props:
        need(props["currency"] in CURRENCIES, at + ".properties.currency",
             "not a supported currency")
    if "value" in props:
        need(is_num(props["value"]) and props["value"] >= 0, at + ".properties.value",
             "not a valid non-negative number")
    strings(props, ("order_id", "shop_id"), at + ".properties")
    if "content_type" in props:
        need(props["content_type"] in ("product", "product_group"),
             at + ".properties.content_type", "must be product or product_group")
    contents = props.get("contents", [])
    need(isinstance(contents, list), at + ".properties.contents", "not an array")
    for j, c in enumerate(contents):
        cat = "%s.properties.contents[%d]" % (at, j)
        need(isinstance(c, dict), cat, "not an object")
        strings(c, ("content_id",), cat)
        if "quantity" in c:
            need(is_int(c["quantity"]), cat + ".quantity", "not a valid integer")
        if "price" in c:
            need(is_num(c["price"]), cat + ".price", "not a valid number")
    page = ev.get("page", {})
    need(isinstance(page, dict), at + ".page", "not an object")
    strings(page, ("url", "referrer"), at + ".page")
    if "limited_data_use" in ev:
        need(isinstance(ev["limited_data_use"], bool), at + ".limited_data_use",
             "not a valid boolean")


def reject_constant(name):
    raise ValueError("%s is not JSON" % name)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # headers and body leave in separate writes; with Nagle's algorithm the
    # body would wait for the client's delayed ACK (40 ms), an artefact of
    # the mock that latency figures must not carry
    disable_nagle_algorithm = True
    server_version = "events-api-mock"

    def log_message(self, *args):  # never log each request
        pass

    def reply(self, status, obj=None, text=None):
        data = (json.dumps(obj) if obj is not None else text or "").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if obj is not None else "text/plain")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    # 302 Found to url, with an empty body: what a moved endpoint or a meddling proxy answers.
    def redirect(self, url):
        self.send_response(302)
        self.send_header("Location", url)
        self.send_header("Content-Length", "0")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()

    # A page for people, not the API's JSON: what a server in front of the wrong place answers.
    def html(self, status):
        data = ("<!DOCTYPE html>\n<html><head><title>%d</title></head>"
                "<body><h1>%d</h1><p>Not the Events API.</p></body></html>\n" % (status, status)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    # Every 404 is counted, so a test can tell that nothing at all reached this mock.
    def not_found(self):
        self.server.state.bump_total("not_found")
        self.reply(404, text="not found")

    def api(self, code, message):
        rid = "%s%08d" % (time.strftime("%Y%m%d%H%M%S"), next(self.server.state.ids))
        self.reply(200, {"code": code, "message": message, "request_id": rid, "data": {}})

    # Content-Length bodies only; None means the request was answered or the peer left.
    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower() \
                or self.headers.get("Content-Length") is None:
            self.close_connection = True
            self.reply(411, text="Content-Length required")
            return None
        try:
            n = int(self.headers["Content-Length"])
            assert 0 <= n <= MAX_BODY
        except (ValueError, AssertionError):
            self.close_connection = True
            self.reply(400, text="bad Content-Length")
            return None
        body = self.rfile.read(n)
        if len(body) < n:  # the client went away mid-body
            self.close_connection = True
            return None
        return body

    def do_GET(self):
        state = self.server.state
        if self.path == "/_mock/stats":
            self.reply(200, state.snapshot())
        elif self.path == "/_mock/keys":
            self.reply(200, state.key_list())
        elif self.path == "/_mock/events":
            self.reply(200, state.event_list())
        elif self.path.split("?")[0] == "/_mock/requests":
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            self.reply(200, state.request_list(query.get("pixel", [None])[0]))
        else:
            self.not_found()

    def do_POST(self):
        if self.path not in (TRACK_PATH, "/_mock/reset", "/_mock/config", "/_mock/reset_max_open"):
            self.close_connection = True  # the body is left unread
            return self.not_found()
        raw = self.read_body()
        if raw is None:
            return None
        state = self.server.state
        if self.path == TRACK_PATH:
            self.track(state, raw)
        elif self.path == "/_mock/reset":
            state.reset()
            self.reply(200, {"ok": True})
        elif self.path == "/_mock/reset_max_open":
            self.reply(200, state.reset_max_open())
        else:
            try:
                new = json.loads(raw)
                assert isinstance(new, dict), "config must be a JSON object"
                self.reply(200, state.merge(new))
            except (ValueError, AssertionError) as e:
                self.reply(400, {"error": str(e)})
        return None

    # Sleep secs, or less if the client hangs up meanwhile: False then.
    def wait_for_client(self, secs):
        end = time.monotonic() + secs
        poller = select.poll()
        poller.register(self.connection, select.POLLIN | select.POLLHUP | select.POLLERR)
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return True
            if not poller.poll(left * 1000):
                continue
            try:
                more = self.connection.recv(1, socket.MSG_PEEK)
            except OSError:  # reset
                return False
            if not more:  # closed
                return False
            time.sleep(max(0.0, end - time.monotonic()))  # it pipelined a request: just wait
            return True

    # One track request: redirect, HTML page, count as open, throttle, hold or delay, fault, auth,
    # validate, poison, count what was accepted.
    def track(self, state, raw):
        with state.lock:
            state.stats["requests"] += 1
            cfg = dict(state.config)
            if cfg["redirect_to"] is not None:
                state.stats["redirects"] += 1
            elif cfg["html_status"] is not None:
                state.stats["html_answers"] += 1
        if cfg["redirect_to"] is not None:
            return self.redirect(cfg["redirect_to"])
        if cfg["html_status"] is not None:
            return self.html(cfg["html_status"])
        try:
            body = json.loads(raw, parse_constant=reject_constant)
        except (ValueError, UnicodeDecodeError):
            body = None
        keys = event_keys(body)
        rec, distinct, throttled, hold = state.open_request(body, keys, cfg, len(raw))
        outcome = "abandoned"
        try:
            outcome = self.answer(state, cfg, body, keys, throttled, hold)
        finally:
            state.close_request(rec, distinct, outcome)
        return None

    # The answer to an open request; its outcome for the request log.
    def answer(self, state, cfg, body, keys, throttled, hold):
        if throttled:
            self.api(40100, "Too many requests")
            return "throttled"
        if hold is not None:
            if not self.wait_for_client(hold):
                self.close_connection = True
                return "abandoned"
        elif cfg["delay_ms"]:
            time.sleep(cfg["delay_ms"] / 1000.0)
        fault = None
        if cfg["fault_rate"] and cfg["faults"] and random.random() < cfg["fault_rate"]:
            fault = random.choice(cfg["faults"])
            state.bump("faults", fault)
        if fault == "5xx":
            self.reply(503, text="Service Unavailable")
        elif fault == "40100":
            self.api(40100, "Too many requests")
        elif fault == "50002":
            self.api(50002, "Internal service error")
        elif fault == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
        if fault in ("5xx", "40100", "50002", "reset"):
            return "fault:" + fault
        code, message = self.judge(cfg, body)
        if fault == "hang":  # accepted, but the answer never arrives
            if code == 0:
                state.accept(body, keys)
            self.wait_for_client(float(cfg["hang_seconds"]))
            self.close_connection = True
            return "fault:hang"
        if code == 0:
            state.accept(body, keys)
        else:
            state.bump("rejected", str(code))
        self.api(code, message)
        return "accepted" if code == 0 else "rejected:%d" % code

    # The verdict TikTok would give on a body (None if it was not JSON): (code, message).
    def judge(self, cfg, body):
        token = self.headers.get("Access-Token", "")
        if not token:
            return 40105, "Access token is missing or invalid"
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return 40002, "Invalid value for Content-Type: must be application/json."
        if body is None:
            return 40002, "Invalid value for body: not valid JSON."
        if not isinstance(body, dict):
            return 40002, "Invalid value for body: not a JSON object."
        pixel = body.get("event_source_id")
        tokens = cfg.get("tokens") or {}
        if isinstance(pixel, str) and pixel in tokens \
                and not hmac.compare_digest(str(tokens[pixel]).encode(), token.encode()):
            return 40105, "Access token is missing or invalid"
        if isinstance(pixel, str) and pixel in (cfg.get("no_permission") or []):
            return 40001, "No permission to operate pixel %s" % pixel
        try:
            if cfg["count_only"]:
                need(isinstance(body.get("data"), list), "data", "not an array")
            else:
                validate(body, cfg.get("sources"))
        except Invalid as e:
            return 40002, str(e)
        poison = set(cfg.get("poison") or [])
        for i, ev in enumerate(body["data"]):
            eid = ev.get("event_id") if isinstance(ev, dict) else None
            if isinstance(eid, str) and eid in poison:
                return 40002, "Invalid value for data[%d].properties: poisoned event %s" % (i, eid)
        return 0, "OK"


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024

    # Skip HTTPServer's reverse DNS lookup (getfqdn), which can stall without a resolver.
    def server_bind(self):
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    tls = None  # an ssl.SSLContext: HTTPS on the port

    # With TLS, each connection's handshake is done by its own thread, on its first read.
    def get_request(self):
        sock, addr = self.socket.accept()
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    # A client that hangs up is normal for a mock that injects faults: no traceback for it.
    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], OSError):  # resets, broken pipes, timeouts
            super().handle_error(request, client_address)


def main():
    ap = argparse.ArgumentParser(description="Mock of TikTok's Events API (127.0.0.1 only)")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    ap.add_argument("--count-only", action="store_true")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    args = ap.parse_args()
    if bool(args.tls_cert) != bool(args.tls_key):
        ap.error("--tls-cert and --tls-key go together")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM acts as Ctrl-C
    signal.signal(signal.SIGINT, signal.default_int_handler)
    server = Server(("127.0.0.1", args.port), Handler)
    server.state = State(args.count_only)
    if args.tls_cert:
        server.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.tls.load_cert_chain(args.tls_cert, args.tls_key)
    port = server.server_address[1]
    if args.port_file:
        tmp = "%s.%d.tmp" % (args.port_file, os.getpid())
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.replace(tmp, args.port_file)
    if not args.quiet:
        print("listening on %s127.0.0.1:%d" % ("https://" if args.tls_cert else "", port), flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
