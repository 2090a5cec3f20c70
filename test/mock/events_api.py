#!/usr/bin/env python3
"""A mock of TikTok's Events API 2.0 (POST /open_api/v1.3/event/track/), for tests.

It validates requests the way TikTok does (HTTP 200 with a JSON body whose `code` tells
the outcome; one bad event fails the whole request), counts every accepted event under
TikTok's dedup key (pixel, event, event_id), and can inject faults: 5xx, 40100, 50002,
connection resets and hangs. Standard library only; listens on 127.0.0.1 and nowhere else.

    python3 test/mock/events_api.py [--port N] [--port-file PATH] [--count-only] [--quiet]

--port 0 (the default) lets the OS choose; --port-file gets the port once listening (written
atomically); --count-only skips per-field validation (for throughput runs); --quiet drops the
"listening on 127.0.0.1:PORT" line. Requests are never logged. SIGTERM/SIGINT exit 0.

Tests start it on port 0, read the chosen port from --port-file, point the extension at it
with tiktok_capi.api_url = 'http://127.0.0.1:PORT/open_api/v1.3/event/track/' (the full path:
any other path is answered 404), and drive it through control endpoints (no token needed):

    GET  /_mock/stats    counters: requests, accepted_requests, events_accepted, unique_keys,
                         duplicate_keys, max_batch, faults{kind:n}, rejected{code:n},
                         test_event_codes{code:n}, redirects (track requests answered 302),
                         html_answers (track requests answered with html_status),
                         not_found (requests answered 404: a wrong path, or GET on the
                         track path, as a client following a 302 would send)
    GET  /_mock/keys     [[pixel, event, event_id, times_accepted, first_seen], ...]
    GET  /_mock/events   [[pixel, event, event_id, the event as last accepted], ...] (not kept
                         with --count-only)
    POST /_mock/config   merge a JSON object into the config; answers the config, tokens masked
    POST /_mock/reset    counters and config back to the defaults

Config keys: tokens {pixel: token}, no_permission [pixel], count_only bool, fault_rate 0..1,
faults [kinds], hang_seconds, poison [event_id], delay_ms, redirect_to (an http(s) URL, or null
for off: while set, every track request is counted in requests and redirects and answered
302 Found with Location: redirect_to and an empty body, before any delay, fault or check),
html_status (an HTTP status 100..599, or null for off: while set, every track request is counted
in requests and html_answers and answered with that status and an HTML page instead of the API's
JSON, as a web server or load balancer in front of the wrong place does, before any delay, fault
or check; redirect_to goes first).
Tokens are never echoed or printed.
"""
import argparse, hmac, itertools, json, os, random, signal, socket, socketserver
import struct, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TRACK_PATH = "/open_api/v1.3/event/track/"
FAULT_KINDS = ["5xx", "40100", "50002", "reset", "hang"]
CURRENCIES = set("""AED ARS AUD BDT BHD BIF BOB BRL CAD CHF CLP CNY COP CRC CZK DKK DZD EGP EUR
GBP GTQ HKD HNL HUF IDR ILS INR ISK JPY KES KHR KRW KWD KZT MAD MOP MXN MYR NGN NIO NOK NZD OMR
PEN PHP PKR PLN PYG QAR RON RUB SAR SEK SGD THB TRY TWD UAH USD VES VND ZAR""".split())
HEX = set("0123456789abcdef")
MAX_BODY = 64 * 1024 * 1024
DEFAULTS = {"tokens": {}, "no_permission": [], "count_only": False, "fault_rate": 0.0,
            "faults": list(FAULT_KINDS), "hang_seconds": 30.0, "poison": [], "delay_ms": 0,
            "redirect_to": None, "html_status": None}


class Invalid(Exception):
    """A 40002: the message names the field, like TikTok's."""


class State:
    """Config and counters, shared by all handler threads, guarded by one lock."""

    def __init__(self, count_only):
        self.lock = threading.Lock()
        self.defaults = dict(DEFAULTS, count_only=count_only)
        self.ids = itertools.count(1)
        self.reset()

    # Back to a clean slate between tests, without restarting the process.
    def reset(self):
        with self.lock:
            self.config = json.loads(json.dumps(self.defaults))
            self.keys = {}  # (pixel, event, event_id) -> [times accepted, first accepted]
            self.events = {}  # (pixel, event, event_id) -> the event as last accepted
            self.stats = {"requests": 0, "accepted_requests": 0, "events_accepted": 0,
                          "max_batch": 0, "faults": {}, "rejected": {}, "test_event_codes": {},
                          "redirects": 0, "not_found": 0, "html_answers": 0}

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
            elif k not in DEFAULTS or not (is_num(v) if is_num(d) else type(v) is type(d)):
                raise ValueError("unknown config key or wrong type: %s" % k)
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

    # Count one accepted request: every event under its dedup key.
    def accept(self, body):
        now, pixel, events = time.time(), body.get("event_source_id"), body["data"]
        with self.lock:
            st = self.stats
            st["accepted_requests"] += 1
            st["events_accepted"] += len(events)
            st["max_batch"] = max(st["max_batch"], len(events))
            tec = body.get("test_event_code")
            if isinstance(tec, str):
                st["test_event_codes"][tec] = st["test_event_codes"].get(tec, 0) + 1
            for ev in events:
                ev = ev if isinstance(ev, dict) else {}
                key = tuple(json.dumps(v) if isinstance(v, (dict, list)) else v
                            for v in (pixel, ev.get("event"), ev.get("event_id")))
                self.keys.setdefault(key, [0, now])[0] += 1
                if not self.config["count_only"]:
                    self.events[key] = ev

    def snapshot(self):
        with self.lock:
            out = json.loads(json.dumps(self.stats))
            out["unique_keys"] = len(self.keys)
            out["duplicate_keys"] = sum(1 for n, _ in self.keys.values() if n > 1)
            return out

    def key_list(self):
        with self.lock:
            return [[*k, n, first] for k, (n, first) in self.keys.items()]

    def event_list(self):
        with self.lock:
            return [[*k, ev] for k, ev in self.events.items()]


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


# The per-field rules of one request body, as documented in tiktok-events-api.md.
def validate(body):
    need(body.get("event_source") == "web", "event_source", "must be web")
    pixel = body.get("event_source_id")
    need(isinstance(pixel, str) and pixel != "", "event_source_id", "not a valid string")
    strings(body, ("test_event_code",), "")
    data = body.get("data")
    need(isinstance(data, list) and 1 <= len(data) <= 1000, "data",
         "must be an array of 1 to 1000 events")
    for i, ev in enumerate(data):
        validate_event(ev, "data[%d]" % i)


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
    props = ev.get("properties", {})
    need(isinstance(props, dict), at + ".properties", "not an object")
    if "currency" in props:
        need(props["currency"] in CURRENCIES, at + ".properties.currency",
             "not a supported currency")
    if "value" in props:
        need(is_num(props["value"]) and props["value"] >= 0, at + ".properties.value",
             "not a valid non-negative number")
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
        else:
            self.not_found()

    def do_POST(self):
        if self.path not in (TRACK_PATH, "/_mock/reset", "/_mock/config"):
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
        else:
            try:
                new = json.loads(raw)
                assert isinstance(new, dict), "config must be a JSON object"
                self.reply(200, state.merge(new))
            except (ValueError, AssertionError) as e:
                self.reply(400, {"error": str(e)})
        return None

    # One track request: redirect, HTML page, delay, fault, auth, parse, validate, poison, count.
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
        if cfg["delay_ms"]:
            time.sleep(cfg["delay_ms"] / 1000.0)
        fault = None
        if cfg["fault_rate"] and cfg["faults"] and random.random() < cfg["fault_rate"]:
            fault = random.choice(cfg["faults"])
            state.bump("faults", fault)
        if fault == "5xx":
            return self.reply(503, text="Service Unavailable")
        if fault == "40100":
            return self.api(40100, "Too many requests")
        if fault == "50002":
            return self.api(50002, "Internal service error")
        if fault == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return None
        code, message, body = self.judge(cfg, raw)
        if fault == "hang":  # accepted, but the answer never arrives
            if code == 0:
                state.accept(body)
            time.sleep(float(cfg["hang_seconds"]))
            self.close_connection = True
            return None
        if code == 0:
            state.accept(body)
        else:
            state.bump("rejected", str(code))
        self.api(code, message)

    # The verdict TikTok would give: (code, message, parsed body).
    def judge(self, cfg, raw):
        token = self.headers.get("Access-Token", "")
        if not token:
            return 40105, "Access token is missing or invalid", None
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return 40002, "Invalid value for Content-Type: must be application/json.", None
        try:
            body = json.loads(raw, parse_constant=reject_constant)
        except (ValueError, UnicodeDecodeError):
            return 40002, "Invalid value for body: not valid JSON.", None
        if not isinstance(body, dict):
            return 40002, "Invalid value for body: not a JSON object.", None
        pixel = body.get("event_source_id")
        tokens = cfg.get("tokens") or {}
        if isinstance(pixel, str) and pixel in tokens \
                and not hmac.compare_digest(str(tokens[pixel]).encode(), token.encode()):
            return 40105, "Access token is missing or invalid", None
        if isinstance(pixel, str) and pixel in (cfg.get("no_permission") or []):
            return 40001, "No permission to operate pixel %s" % pixel, None
        try:
            if cfg["count_only"]:
                need(isinstance(body.get("data"), list), "data", "not an array")
            else:
                validate(body)
        except Invalid as e:
            return 40002, str(e), None
        poison = set(cfg.get("poison") or [])
        for i, ev in enumerate(body["data"]):
            eid = ev.get("event_id") if isinstance(ev, dict) else None
            if isinstance(eid, str) and eid in poison:
                return 40002, "Invalid value for data[%d].properties: poisoned event %s" % (i, eid), None
        return 0, "OK", body


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024

    # Skip HTTPServer's reverse DNS lookup (getfqdn), which can stall without a resolver.
    def server_bind(self):
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

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
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM acts as Ctrl-C
    signal.signal(signal.SIGINT, signal.default_int_handler)
    server = Server(("127.0.0.1", args.port), Handler)
    server.state = State(args.count_only)
    port = server.server_address[1]
    if args.port_file:
        tmp = "%s.%d.tmp" % (args.port_file, os.getpid())
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.replace(tmp, args.port_file)
    if not args.quiet:
        print("listening on 127.0.0.1:%d" % port, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
