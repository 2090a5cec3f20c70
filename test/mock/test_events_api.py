#!/usr/bin/env python3
"""Self-test of the Events API mock (events_api.py), in TAP. Standard library only.

Starts the mock on port 0 in a temp dir, drives it with http.client, checks each rule the
mock must enforce, and exits non-zero if any check failed.
"""
import hashlib, http.client, json, os, signal, socket, ssl, subprocess, sys, tempfile, threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TRACK = "/open_api/v1.3/event/track/"
PIXEL = "CPIXEL0001"
TOKEN = "secret-token-do-not-echo"
results = []


def check(ok, desc, detail=""):
    results.append(bool(ok))
    print("%s %d - %s" % ("ok" if ok else "not ok", len(results), desc), flush=True)
    if not ok and detail:
        print("#   " + str(detail).replace("\n", "\n#   "), flush=True)


def sha(s):
    return hashlib.sha256(s.encode()).hexdigest()


def event(i, **over):
    ev = {"event": "Purchase", "event_time": int(time.time()) - 60, "event_id": "order-%d" % i,
          "user": {"email": [sha("a%d@example.com" % i)], "phone": sha("+12133734253"),
                   "external_id": [sha("c%d" % i)], "ip": "203.0.113.7", "user_agent": "UA",
                   "ttclid": "E.C.P.x", "ttp": "ttp-1", "locale": "en-US"},
          "properties": {"currency": "USD", "value": 46.0, "content_type": "product",
                         "contents": [{"content_id": "1077218", "quantity": 2, "price": 8.0}]},
          "page": {"url": "https://shop.example/thanks", "referrer": "https://shop.example/"},
          "limited_data_use": False}
    ev.update(over)
    return ev


def batch(events, pixel=PIXEL, **top):
    return dict({"event_source": "web", "event_source_id": pixel, "data": events}, **top)


class Mock:
    def __init__(self, port):
        self.port = port

    def conn(self, timeout=5):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    # One request on a connection (new unless given); returns (status, parsed body or text).
    def call(self, method, path, body=None, headers=None, conn=None, timeout=5):
        c = conn or self.conn(timeout)
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        c.request(method, path, body=data, headers=headers or {})
        r = c.getresponse()
        raw = r.read()
        if conn is None:
            c.close()
        try:
            return r.status, json.loads(raw)
        except ValueError:
            return r.status, raw.decode(errors="replace")

    def track(self, body, token=TOKEN, ctype="application/json", **kw):
        h = {"Content-Type": ctype}
        if token is not None:
            h["Access-Token"] = token
        return self.call("POST", TRACK, body, h, **kw)

    # Two events posted one after the other on one kept-alive connection; for each
    # answer: (status, the named headers..., raw body).
    def track_twice_kept_alive(self, *header_names):
        c = self.conn()
        answers = []
        for i in range(2):
            c.request("POST", TRACK, body=json.dumps(batch([event(i)])).encode(),
                      headers={"Content-Type": "application/json", "Access-Token": TOKEN})
            r = c.getresponse()
            answers.append((r.status, *(r.getheader(h) for h in header_names), r.read()))
        c.close()
        return answers

    def stats(self):
        return self.call("GET", "/_mock/stats")[1]

    def config(self, **cfg):
        return self.call("POST", "/_mock/config", cfg)

    def reset(self):
        self.call("POST", "/_mock/reset", {})


def code(resp):
    return resp[1].get("code") if isinstance(resp[1], dict) else None


def msg(resp):
    return resp[1].get("message", "") if isinstance(resp[1], dict) else ""


def run(m):
    r = m.track(batch([event(1), event(2), event(3)], test_event_code="TEST123"))
    check(r[0] == 200 and code(r) == 0 and msg(r) == "OK" and r[1]["data"] == {}
          and isinstance(r[1]["request_id"], str), "valid batch of 3 events -> code 0", r)
    s = m.stats()
    keys = m.call("GET", "/_mock/keys")[1]
    check(s["events_accepted"] == 3 and s["unique_keys"] == 3 and s["accepted_requests"] == 1
          and s["max_batch"] == 3 and s["test_event_codes"] == {"TEST123": 1}
          and sorted(k[2] for k in keys) == ["order-1", "order-2", "order-3"]
          and all(k[0] == PIXEL and k[1] == "Purchase" and k[3] == 1 for k in keys),
          "the 3 events are counted under (pixel, event, event_id)", (s, keys))
    r2 = m.track(batch([event(1)]))
    check(r2[1]["request_id"] != r[1]["request_id"], "request_id differs per request")
    s = m.stats()
    check(s["duplicate_keys"] == 1 and s["unique_keys"] == 3 and s["events_accepted"] == 4,
          "a resent key is counted in duplicate_keys", s)
    evs = {e[2]: e[3] for e in m.call("GET", "/_mock/events")[1]}
    check(sorted(evs) == ["order-1", "order-2", "order-3"]
          and evs["order-2"]["user"]["email"] == [sha("a2@example.com")],
          "/_mock/events answers each key's event as accepted", evs)

    def rejects(body, want_code, want_in, desc, **kw):
        before = m.stats()["events_accepted"]
        r = m.track(body, **kw)
        after = m.stats()["events_accepted"]
        check(code(r) == want_code and want_in in msg(r) and after == before, desc, r)
        return r

    r = rejects(batch([event(1), event(2, event_id=10046)]), 40002, "data[1].event_id",
                "number event_id -> 40002 naming data[1].event_id")
    check(msg(r) == "Invalid value for data[1].event_id: not a valid string.",
          "40002 message has TikTok's form", msg(r))
    bad_user = dict(event(1)["user"], email=["alice@example.com"])
    rejects(batch([event(0, user=bad_user)]), 40002, "data[0].user.email", "unhashed email -> 40002")
    upper = dict(event(1)["user"], phone=sha("+1").upper())
    rejects(batch([event(0, user=upper)]), 40002, "data[0].user.phone", "uppercase hex hash -> 40002")
    keys = dict(event(1)["user"], first_name=sha("ann"), last_name=sha("lee"),
                zip_code=sha("sw1a 1aa"), city="newyork", state="ny", country="us")
    check(code(m.track(batch([event(0, user=keys)]))) == 0,
          "hashed names and zip code, plain city, state and country -> accepted")
    rejects(batch([event(0, user=dict(keys, first_name="Ann"))]), 40002, "data[0].user.first_name",
            "unhashed first_name -> 40002")
    rejects(batch([event(0, user=dict(keys, zip_code=sha("x").upper()))]), 40002,
            "data[0].user.zip_code", "uppercase hex zip_code -> 40002")
    rejects(batch([event(0, user=dict(keys, city="New York"))]), 40002, "data[0].user.city",
            "city with capitals and a space -> 40002")
    rejects(batch([event(0, user=dict(keys, state="n y"))]), 40002, "data[0].user.state",
            "state with a space -> 40002")
    rejects(batch([event(0, user=dict(keys, country="US"))]), 40002, "data[0].user.country",
            "uppercase country -> 40002")
    rejects(batch([event(0, user=dict(keys, country="usa"))]), 40002, "data[0].user.country",
            "three-letter country -> 40002")
    rejects(batch([event(0, user=dict(keys, city=""))]), 40002, "data[0].user.city",
            "empty city -> 40002")
    rejects(batch([event(0, properties={"currency": "XYZ", "value": 1})]), 40002,
            "properties.currency", "bad currency -> 40002")
    rejects(batch([event(0, properties={"currency": "USD", "value": "46.0"})]), 40002,
            "properties.value", "string value -> 40002")
    rejects(batch([event(0, properties={"contents": [{"content_id": 1077218}]})]), 40002,
            "contents[0].content_id", "number content_id -> 40002")
    rejects(batch([event(0, event_time=int(time.time()) + 3600)]), 40002, "data[0].event_time",
            "event_time an hour in the future -> 40002")
    rejects(batch([event(0, event_time=int(time.time()) * 1000)]), 40002, "event_time",
            "event_time in milliseconds -> 40002")
    rejects(batch([event(0, event_time=float(int(time.time())) + 0.5)]), 40002, "event_time",
            "fractional event_time -> 40002")
    rejects(batch([event(0, limited_data_use="no")]), 40002, "limited_data_use",
            "non-bool limited_data_use -> 40002")
    rejects(batch([event(i) for i in range(1001)]), 40002, "data", "1001 events -> 40002")
    rejects(batch([]), 40002, "data", "empty data -> 40002")
    rejects(dict(batch([event(0)]), event_source="pos"), 40002, "event_source",
            "event_source not web, app, offline or crm -> 40002")
    rejects(dict(batch([event(0)]), event_source="offline"), 40002, "event_source_id",
            "a pixel (an id not configured as another source) sent as offline -> 40002")
    sources(m, rejects)
    r = m.track(batch([event(i) for i in range(1000)]))
    check(code(r) == 0 and m.stats()["max_batch"] == 1000, "1000 events accepted; max_batch", r)
    rejects(batch([event(0)]), 40105, "Access token", "missing token -> 40105", token=None)
    rejects(batch([event(0)]), 40105, "Access token", "empty token -> 40105", token="")
    rejects(batch([event(0)]), 40002, "Content-Type", "text/plain body -> 40002", ctype="text/plain")

    m.config(tokens={PIXEL: TOKEN})
    rejects(batch([event(0)]), 40105, "", "tokens config: wrong token -> 40105", token="other")
    check(code(m.track(batch([event(0)]))) == 0, "tokens config: right token -> 0")
    check(code(m.track(batch([event(0)], pixel="OTHERPIX"), token="x")) == 0,
          "tokens config: pixel not listed accepts any token")
    st, shown = m.config(no_permission=["NOPERM"])
    check(st == 200 and TOKEN not in json.dumps(shown) and shown["tokens"] == {PIXEL: "***"}
          and TOKEN not in json.dumps(m.stats()), "/_mock/config and stats never echo a token",
          shown)
    rejects(batch([event(0)], pixel="NOPERM"), 40001, "", "no_permission pixel -> 40001")
    check(m.config(bogus=1)[0] == 400 and m.config(fault_rate="1")[0] == 400
          and m.config(faults=["boom"])[0] == 400 and m.config(count_only=1)[0] == 400,
          "unknown config key, wrong type or fault kind -> HTTP 400")

    m.reset()
    m.config(poison=["order-7"])
    r = rejects(batch([event(5), event(6), event(7)]), 40002, "", "poisoned event -> 40002")
    check(msg(r) == "Invalid value for data[2].properties: poisoned event order-7"
          and m.stats()["unique_keys"] == 0, "poison message names data[2]; nothing counted", r)
    s = m.stats()
    check(s["rejected"] == {"40002": 1} and s["requests"] == 1, "rejected counts by code", s)

    m.reset()
    for kind, want in (("5xx", 503), ("40100", 40100), ("50002", 50002)):
        m.config(fault_rate=1, faults=[kind])
        r = m.track(batch([event(1)]))
        got = r[0] if kind == "5xx" else code(r)
        extra = not isinstance(r[1], dict) if kind == "5xx" else r[0] == 200
        check(got == want and extra and m.stats()["faults"].get(kind) == 1
              and m.stats()["unique_keys"] == 0, "fault %s -> %s, nothing counted" % (kind, want), r)
    m.config(faults=["reset"])
    try:
        r = m.track(batch([event(1)]))
        check(False, "fault reset -> connection reset on the client", r)
    except (ConnectionResetError, http.client.RemoteDisconnected) as e:
        check(isinstance(e, ConnectionResetError) and m.stats()["unique_keys"] == 0,
              "fault reset -> connection reset on the client, nothing counted", repr(e))
    m.config(faults=["hang"], hang_seconds=1)
    t0 = time.time()
    try:
        r = m.track(batch([event(1), event(2)]), timeout=0.5)
        check(False, "fault hang -> client times out", r)
    except (socket.timeout, TimeoutError):
        s = m.stats()
        check(time.time() - t0 < 0.9 and s["events_accepted"] == 2 and s["unique_keys"] == 2,
              "fault hang -> client times out, yet the events ARE counted", s)
    try:
        m.track(batch([event(3, event_id=3)]), timeout=0.5)
    except (socket.timeout, TimeoutError):
        pass
    check(m.stats()["unique_keys"] == 2, "fault hang counts nothing for an invalid request")
    m.config(fault_rate=0.5, faults=["40100"])
    codes = [code(m.track(batch([event(i)]))) for i in range(40)]
    check(0 < codes.count(40100) < 40 and set(codes) == {0, 40100}, "fault_rate 0.5 mixes", codes)

    m.reset()
    m.config(delay_ms=200)
    t0 = time.time()
    m.track(batch([event(1)]))
    check(time.time() - t0 >= 0.2, "delay_ms delays the answer")

    m.reset()
    elsewhere = "http://127.0.0.1:9/open_api/v1.3/event/track/"
    st, shown = m.config(redirect_to=elsewhere, tokens={PIXEL: TOKEN})
    check(st == 200 and shown.get("redirect_to") == elsewhere, "redirect_to is set", shown)
    answers = m.track_twice_kept_alive("Location", "Content-Length")
    check(answers == [(302, elsewhere, "0", b"")] * 2,
          "redirect_to: 302 Found, Location, empty body, connection kept", answers)
    s = m.stats()
    check(s["requests"] == 2 and s["redirects"] == 2 and s["accepted_requests"] == 0
          and s["events_accepted"] == 0 and s["unique_keys"] == 0 and s["rejected"] == {},
          "a redirected request is counted in requests and redirects, nothing accepted", s)
    r = m.track(batch([event(1)]), token="a-wrong-token")
    check(r[0] == 302 and m.stats()["rejected"] == {},
          "redirect_to answers 302 before the token is judged", r)
    check(m.config(redirect_to="elsewhere")[0] == 400 and m.config(redirect_to=1)[0] == 400
          and m.config(redirect_to=False)[0] == 400,
          "redirect_to that is not an http(s) URL or null -> HTTP 400")
    st, shown = m.config(redirect_to=None)
    r = m.track(batch([event(1)]))
    s = m.stats()
    check(st == 200 and shown["redirect_to"] is None and code(r) == 0 and s["redirects"] == 3
          and s["requests"] == 4 and s["unique_keys"] == 1,
          "redirect_to null turns it off: the next request is accepted", (shown, r, s))
    m.config(redirect_to=elsewhere)
    m.reset()
    check(code(m.track(batch([event(1)]))) == 0 and m.stats()["redirects"] == 0,
          "reset turns redirect_to off and zeroes redirects")

    m.reset()
    st, shown = m.config(html_status=200, tokens={PIXEL: TOKEN})
    check(st == 200 and shown.get("html_status") == 200, "html_status is set", shown)
    answers = m.track_twice_kept_alive("Content-Type")
    check(all(a[0] == 200 and a[1].startswith("text/html") and a[2].startswith(b"<!DOCTYPE html>")
              for a in answers) and len(answers) == 2,
          "html_status 200: an HTML page with HTTP 200, connection kept", answers)
    s = m.stats()
    check(s["requests"] == 2 and s["html_answers"] == 2 and s["accepted_requests"] == 0
          and s["unique_keys"] == 0 and s["rejected"] == {},
          "an HTML answer is counted in requests and html_answers, nothing accepted", s)
    r = m.track(batch([event(1)]), token="a-wrong-token")
    check(r[0] == 200 and isinstance(r[1], str) and "<html>" in r[1] and m.stats()["rejected"] == {},
          "html_status answers before the token is judged", r)
    m.config(html_status=502)
    r = m.track(batch([event(1)]))
    check(r[0] == 502 and "<html>" in r[1], "html_status 502: a load balancer's error page", r)
    m.config(redirect_to="http://127.0.0.1:9/", html_status=200)
    r = m.track(batch([event(1)]))
    check(r[0] == 302 and m.stats()["html_answers"] == 4, "redirect_to goes before html_status", r)
    check(m.config(html_status="200")[0] == 400 and m.config(html_status=99)[0] == 400
          and m.config(html_status=600)[0] == 400 and m.config(html_status=True)[0] == 400,
          "html_status that is not a status 100..599 or null -> HTTP 400")
    m.config(redirect_to=None, html_status=None)
    r = m.track(batch([event(1)]))
    check(code(r) == 0 and m.stats()["unique_keys"] == 1, "html_status null turns it off", r)
    m.config(html_status=404)
    m.reset()
    check(code(m.track(batch([event(1)]))) == 0 and m.stats()["html_answers"] == 0,
          "reset turns html_status off and zeroes html_answers")

    m.reset()
    m.config(count_only=True)
    junk = batch([{"event": "Purchase", "event_id": 42, "event_time": "soon"}], event_source="x")
    r = m.track(junk)
    check(code(r) == 0 and m.stats()["unique_keys"] == 1, "count-only accepts an invalid body", r)

    m.reset()
    c = m.conn()
    codes = [code(m.track(batch([event(i)]), conn=c)) for i in range(50)]
    check(codes == [0] * 50 and m.stats()["unique_keys"] == 50,
          "keep-alive: 50 requests on one connection", codes)
    c.close()

    m.reset()
    outcome, barrier = {}, threading.Barrier(300, timeout=10)

    def one(i):
        try:
            c = m.conn(timeout=10)
            c.connect()
            barrier.wait()
            outcome[i] = code(m.track(batch([event(i)]), conn=c))
            c.close()
        except Exception as e:
            outcome[i] = repr(e)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(300)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bad = {i: v for i, v in outcome.items() if v != 0}
    check(len(outcome) == 300 and not bad and m.stats()["unique_keys"] == 300,
          "300 concurrent connections all get code 0", bad)

    check(m.call("POST", "/open_api/v1.3/event/track", b"{}")[0] == 404, "path without slash -> 404")
    check(m.call("GET", TRACK)[0] == 404 and m.call("POST", "/x")[0] == 404,
          "GET on the track path, POST without a body elsewhere -> 404")
    check(m.call("GET", "/nowhere")[0] == 404, "wrong GET path -> 404")
    check(m.stats()["not_found"] == 4 and m.stats()["requests"] == 300,
          "not_found counts the four 404s; they are not track requests", m.stats())
    c = m.conn()
    c.putrequest("POST", TRACK)
    c.putheader("Transfer-Encoding", "chunked")
    c.endheaders(b"2\r\n{}\r\n0\r\n\r\n")
    r1 = c.getresponse().status
    c.close()
    c = m.conn()
    c.putrequest("POST", TRACK)
    c.endheaders()
    r2 = c.getresponse().status
    c.close()
    check(r1 == 411 and r2 == 411, "chunked or missing Content-Length -> 411", (r1, r2))

    before = m.stats()["requests"]
    s = socket.create_connection(("127.0.0.1", m.port))
    s.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{\"da" % TRACK.encode())
    s.close()
    time.sleep(0.2)
    check(m.stats()["requests"] == before, "a client leaving mid-body is not a request")

    listen = []
    for ip in ("127.0.0.2", "::1"):
        try:
            socket.create_connection((ip, m.port), timeout=1).close()
            listen.append(ip)
        except OSError:
            pass
    check(not listen, "listens on 127.0.0.1 only (not 127.0.0.2, not ::1)", listen)
    if os.path.exists("/proc/net/tcp"):
        rows = [l.split() for l in open("/proc/net/tcp").read().splitlines()[1:]]
        mine = [r[1] for r in rows if r[3] == "0A" and int(r[1].split(":")[1], 16) == m.port]
        check(mine == ["0100007F:%04X" % m.port], "/proc/net/tcp: bound to 127.0.0.1", mine)
    else:
        check(True, "/proc/net/tcp: bound to 127.0.0.1 # SKIP no /proc/net/tcp")


# Send track requests from threads, each on its own connection; answers
# {i: (seconds taken, code or the exception's name)} once all are done.
# Event sources: each configured id has one; each source takes its own fields.
def sources(m, rejects):
    m.config(sources={"OFFSET1": "offline", "CRMSET1": "crm", "APP1": "app"})
    st, shown = m.config()
    check(st == 200 and shown["sources"]["OFFSET1"] == "offline", "sources config is kept", shown)
    check(m.config(sources={"X": "store"})[0] == 400, "sources config: an unknown source -> 400")
    plain = {"email": [sha("s@example.com")], "locale": "en-US"}
    store = event(0, event_id="store-1", user=plain, properties={"order_id": "store-1", "shop_id": "s-7",
                                                                "currency": "USD", "value": 20.0})
    del store["page"], store["limited_data_use"]
    check(code(m.track(batch([store], pixel="OFFSET1", event_source="offline"))) == 0,
          "an offline event to its offline set -> 0")
    rejects(batch([store], pixel="OFFSET1"), 40002, "Invalid value for event_source_id",
            "an offline set sent as web -> 40002 event_source_id")
    rejects(batch([store], pixel="CRMSET1", event_source="offline"), 40002, "event_source_id",
            "a CRM set sent as offline -> 40002")
    for field in ("ttclid", "ttp", "ip", "user_agent"):
        rejects(batch([dict(store, user=dict(plain, **{field: "x"}))], pixel="OFFSET1",
                      event_source="offline"), 40002, "data[0].user." + field,
                "offline with user.%s -> 40002" % field)
    rejects(batch([dict(store, page={"url": "https://x.example/"})], pixel="OFFSET1",
                  event_source="offline"), 40002, "data[0].page", "offline with page -> 40002")
    rejects(batch([dict(store, limited_data_use=False)], pixel="OFFSET1", event_source="offline"),
            40002, "data[0].limited_data_use", "offline with limited_data_use -> 40002")
    rejects(batch([dict(store, event="StoreVisit")], pixel="OFFSET1", event_source="offline"),
            40002, "data[0].event", "offline with a custom event name -> 40002")
    rejects(batch([dict(store, properties={"shop_id": 7})], pixel="OFFSET1", event_source="offline"),
            40002, "properties.shop_id", "a number shop_id -> 40002")
    lead = dict(store, event="Lead", event_id="lead-1", properties={},
                lead={"lead_id": "L-1", "lead_event_source": "HubSpot"})
    check(code(m.track(batch([lead], pixel="CRMSET1", event_source="crm"))) == 0,
          "a CRM event with its lead to its CRM set -> 0")
    check(code(m.track(batch([dict(lead, event="QualifiedLead")], pixel="CRMSET1",
                             event_source="crm"))) == 0, "a CRM event with a custom name -> 0")
    rejects(batch([dict(lead, lead={"lead_event_source": "HubSpot"})], pixel="CRMSET1",
                  event_source="crm"), 40002, "data[0].lead.lead_id", "CRM without lead_id -> 40002")
    rejects(batch([dict(store, event="Lead")], pixel="CRMSET1", event_source="crm"), 40002,
            "data[0].lead", "CRM without a lead -> 40002")
    rejects(batch([dict(lead, user=dict(plain, ip="203.0.113.7"))], pixel="CRMSET1",
                  event_source="crm"), 40002, "data[0].user.ip", "CRM with user.ip -> 40002")
    rejects(batch([dict(event(0), lead={"lead_id": "L-1"})]), 40002, "data[0].lead",
            "a web event with a lead -> 40002")
    check(code(m.track(batch([event(0)], pixel="APP1", event_source="app"))) == 0,
          "an app id sent as app -> 0")
    m.config(sources={})


def concurrently(m, bodies, timeout=10, barrier=True):
    out, gate = {}, threading.Barrier(len(bodies), timeout=10) if barrier else None

    def one(i, body):
        try:
            c = m.conn(timeout=timeout)
            c.connect()
            if gate:
                gate.wait()
            t0 = time.time()
            r = m.track(body, conn=c)
            out[i] = (time.time() - t0, code(r))
            c.close()
        except Exception as e:
            out[i] = (None, type(e).__name__)
    threads = [threading.Thread(target=one, args=(i, b)) for i, b in enumerate(bodies)]
    for t in threads:
        t.start()
    return threads, out


def join(threads):
    for t in threads:
        t.join()


def wait_for(cond, timeout=5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return False


# What the worker's delivery pipeline is measured by: requests open at once, the same key in
# two open requests, holding some requests, throttling on concurrency, the request log.
def concurrency(m):
    m.reset()
    s = m.stats()
    check(s["open_now"] == 0 and s["max_open"] == 0 and s["concurrent_duplicates"] == 0
          and s["throttled"] == 0 and s["held"] == 0 and s["abandoned"] == 0,
          "stats start with open_now, max_open, concurrent_duplicates, throttled, held 0", s)

    m.config(delay_ms=400)
    threads, out = concurrently(m, [batch([event(i)]) for i in range(5)])
    seen_open = wait_for(lambda: m.stats()["open_now"] == 5)
    join(threads)
    s = m.stats()
    check(seen_open and s["open_now"] == 0 and s["max_open"] == 5
          and all(v[1] == 0 for v in out.values()),
          "open_now counts requests in flight (5, then 0); max_open keeps the 5", (s, out))
    st, body = m.call("POST", "/_mock/reset_max_open", b"")
    check(st == 200 and body == {"max_open": 0} and m.stats()["max_open"] == 0
          and m.stats()["unique_keys"] == 5, "reset_max_open restarts max_open, keeps the keys",
          (st, body))

    # one request holds order-1 for 1 s: another carrying order-1 meanwhile is a concurrent
    # duplicate, one carrying order-3 is not, and order-1 after the hold is not either
    m.reset()
    st, shown = m.config(hold={"requests": 1, "seconds": 1})
    check(st == 200 and shown["hold"] == {"requests": 1, "seconds": 1}, "hold is set", shown)
    t0 = time.time()
    held, held_out = concurrently(m, [batch([event(1), event(9)])], barrier=False)
    wait_for(lambda: m.stats()["open_now"] == 1)
    r_dup = m.track(batch([event(1), event(2)]))
    r_other = m.track(batch([event(3)]))
    fast = time.time() - t0
    mid = m.stats()
    keys_mid = {k[2]: k[3] for k in m.call("GET", "/_mock/keys")[1]}
    join(held)
    took = held_out[0][0]
    s = m.stats()
    check(code(r_dup) == 0 and code(r_other) == 0 and fast < 0.8 and took is not None
          and took >= 1.0 and held_out[0][1] == 0,
          "hold: the first request is answered after 1 s, the next ones at once", (fast, held_out))
    check(mid["open_now"] == 1 and keys_mid == {"order-1": 1, "order-2": 1, "order-3": 1}
          and s["held"] == 1 and m.config()[1]["hold"] == {"requests": 0, "seconds": 1},
          "a held request is open and not yet accepted; hold counts down to 0", (mid, keys_mid))
    check(mid["concurrent_duplicates"] == 1 and mid["concurrent_duplicate_keys"] == 1
          and s["concurrent_duplicates"] == 1,
          "a key sent while another open request carries it is a concurrent duplicate (once)", s)
    keys = {k[2]: k for k in m.call("GET", "/_mock/keys")[1]}
    check(keys["order-1"][3] == 2 and keys["order-3"][4] < keys["order-9"][4] - 0.5,
          "first_seen orders keys by acceptance: order-3 before the held order-9", keys)
    m.track(batch([event(1)]))
    check(m.stats()["concurrent_duplicates"] == 1, "the same key after its request closed is not")
    log = m.call("GET", "/_mock/requests")[1]
    check([(r["seq"], r["events"], r["event_ids"], r["held"], r["outcome"]) for r in log]
          == [(1, 2, ["order-1", "order-9"], True, "accepted"), (2, 2, ["order-1", "order-2"], False, "accepted"),
              (3, 1, ["order-3"], False, "accepted"), (4, 1, ["order-1"], False, "accepted")]
          and log[0]["closed"] > log[2]["closed"] > log[2]["arrived"] > log[0]["arrived"],
          "/_mock/requests: each request in arrival order, with its times and outcome", log)
    check([r["bytes"] for r in log] == [len(json.dumps(b).encode()) for b in
                                        (batch([event(1), event(9)]), batch([event(1), event(2)]),
                                         batch([event(3)]), batch([event(1)]))],
          "/_mock/requests: each request's body size in bytes", [r["bytes"] for r in log])

    # a held request whose client gives up is dropped, and stops being open at once
    m.reset()
    m.config(hold={"requests": 1, "seconds": 3})
    c = m.conn(timeout=0.3)
    try:
        m.track(batch([event(7)]), conn=c)
        check(False, "hold longer than the client waits: the client times out")
    except (socket.timeout, TimeoutError):
        c.close()  # as a client that gives up does
        closed = wait_for(lambda: m.stats()["open_now"] == 0, 1.5)
        s = m.stats()
        check(closed and s["abandoned"] == 1 and s["unique_keys"] == 0 and s["held"] == 1
              and m.call("GET", "/_mock/requests")[1][0]["outcome"] == "abandoned",
              "a held request whose client hangs up is closed at once, nothing accepted", s)
    r = m.track(batch([event(7)]))
    check(code(r) == 0 and m.stats()["concurrent_duplicates"] == 0 and m.stats()["unique_keys"] == 1,
          "the retry of the abandoned request is accepted, not a concurrent duplicate", m.stats())
    m.config(faults=["hang"], fault_rate=1, hang_seconds=5)
    c = m.conn(timeout=0.3)
    try:
        m.track(batch([event(8)]), conn=c)
    except (socket.timeout, TimeoutError):
        c.close()
    check(wait_for(lambda: m.stats()["open_now"] == 0, 1.5) and m.stats()["unique_keys"] == 2,
          "a hung request is accepted, and closed when its client hangs up", m.stats())

    # throttle_open 2: a third request while two are open is answered 40100 at once
    m.reset()
    st, shown = m.config(throttle_open=2, delay_ms=600)
    check(st == 200 and shown["throttle_open"] == 2, "throttle_open is set", shown)
    slow, slow_out = concurrently(m, [batch([event(1)]), batch([event(2)])])
    wait_for(lambda: m.stats()["open_now"] == 2)
    t0 = time.time()
    r = m.track(batch([event(3)]))
    quick = time.time() - t0
    join(slow)
    s = m.stats()
    check(r[0] == 200 and code(r) == 40100 and quick < 0.3 and s["throttled"] == 1
          and [v[1] for v in slow_out.values()] == [0, 0] and s["unique_keys"] == 2
          and s["max_open"] == 3 and s["faults"] == {} and s["rejected"] == {},
          "throttle_open: a request arriving while 2 are open -> HTTP 200 code 40100 at once, "
          "nothing accepted, counted in throttled", (r, quick, s))
    r = m.track(batch([event(3)], pixel="CPIXEL0002"))
    log = m.call("GET", "/_mock/requests")[1]
    mine = m.call("GET", "/_mock/requests?pixel=CPIXEL0002")[1]
    check(len(mine) == 1 and mine[0]["event_ids"] == ["order-3"] and mine[0]["pixel"] == "CPIXEL0002",
          "/_mock/requests?pixel=CODE: that pixel's requests only", mine)
    check(code(r) == 0 and [x["outcome"] for x in log][-2:] == ["throttled", "accepted"],
          "with fewer than 2 open, the next request is accepted", log)
    m.config(throttle_open=None, delay_ms=0)
    check(m.config(throttle_open=0)[0] == 400 and m.config(throttle_open="3")[0] == 400
          and m.config(throttle_open=True)[0] == 400 and m.config(hold={"requests": 1})[0] == 400
          and m.config(hold={"requests": -1, "seconds": 1})[0] == 400
          and m.config(hold={"requests": 1, "seconds": "1"})[0] == 400
          and m.config(hold=[1, 1])[0] == 400,
          "throttle_open other than null or an integer >= 1, a malformed hold -> HTTP 400")

    # a reset while requests are open: they stay open, max_open restarts from them
    m.config(delay_ms=800)
    threads, _ = concurrently(m, [batch([event(i)]) for i in range(3)])
    wait_for(lambda: m.stats()["open_now"] == 3)
    m.reset()
    s = m.stats()
    join(threads)
    s2 = m.stats()
    check(s["open_now"] == 3 and s["max_open"] == 3 and s2["open_now"] == 0
          and m.config()[1]["hold"] == {"requests": 0, "seconds": 0}
          and m.config()[1]["throttle_open"] is None,
          "reset keeps open requests open; max_open restarts from them", (s, s2))

    # the mock is no ceiling for a pipeline: 300 requests at once, each answered after 150 ms
    m.reset()
    m.config(delay_ms=150)
    t0 = time.time()
    threads, out = concurrently(m, [batch([event(i)]) for i in range(300)])
    join(threads)
    wall = time.time() - t0
    s = m.stats()
    bad = {i: v for i, v in out.items() if v[1] != 0}
    slowest = max((v[0] for v in out.values() if v[0] is not None), default=None)
    check(not bad and s["unique_keys"] == 300 and s["max_open"] >= 250 and slowest is not None
          and slowest < 1.5,
          "300 requests at once at delay_ms 150: all open together (max_open %d), the slowest "
          "answered in %.2f s" % (s["max_open"], slowest or -1), (bad, s))
    m.reset()


# The CLI flags --count-only and --quiet, on a second short-lived mock with a fixed port.
def cli_flags(tmp):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    pf = os.path.join(tmp, "port2")
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "events_api.py"), "--port", str(port),
                          "--port-file", pf, "--count-only", "--quiet"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 5
    while not os.path.exists(pf) and time.time() < deadline and p.poll() is None:
        time.sleep(0.02)
    try:
        got = int(open(pf).read()) if os.path.exists(pf) else 0
        m = Mock(port)
        r = m.track(batch([{"event_id": 7}], event_source="x")) if got == port else None
        check(got == port and code(r) == 0, "--port N and --count-only", (got, r))
    finally:
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=5)
    check(p.returncode == 0 and out == "" and err == "", "--quiet prints nothing; SIGINT exits 0",
          (p.returncode, out, err))


# The HTTPS mock on port, whose certificate is cert: refused untrusted, served trusted, not plain.
def tls_requests(port, cert):
    # a client that does not trust the certificate is refused in the handshake...
    refused = None
    try:
        c = http.client.HTTPSConnection("127.0.0.1", port, timeout=5,
                                        context=ssl.create_default_context())
        c.request("GET", "/_mock/stats")
    except ssl.SSLCertVerificationError as e:
        refused = e.verify_message
    check(refused is not None, "--tls-cert: an untrusting client fails verification", refused)
    # ...and one that trusts it is served, the track path and the control endpoints alike
    m = Mock(port)
    m.conn = lambda timeout=5: http.client.HTTPSConnection(
        "127.0.0.1", port, timeout=timeout, context=ssl.create_default_context(cafile=cert))
    r = m.track(batch([event(1)]))
    st = m.stats()
    check(code(r) == 0 and st.get("events_accepted") == 1,
          "--tls-cert: a track request over https is accepted, stats over https", (r, st))
    # plain http on the TLS port gets no HTTP answer
    try:
        s2 = socket.create_connection(("127.0.0.1", port), timeout=5)
        s2.sendall(b"GET /_mock/stats HTTP/1.0\r\n\r\n")
        plain = s2.recv(100)
        s2.close()
    except OSError:
        plain = b""
    check(not plain.startswith(b"HTTP/"), "--tls-cert: plain http gets no HTTP answer", plain)


# --tls-cert/--tls-key: HTTPS with a certificate for 127.0.0.1 made here (openssl), on a third mock.
def tls_flags(tmp):
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    made = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                           "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1",
                           "-addext", "subjectAltName=IP:127.0.0.1"], capture_output=True, text=True)
    pf = os.path.join(tmp, "port3")
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "events_api.py"), "--port-file", pf,
                          "--tls-cert", cert, "--tls-key", key],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 5
        while not os.path.exists(pf) and time.time() < deadline and p.poll() is None:
            time.sleep(0.02)
        port = int(open(pf).read()) if made.returncode == 0 and os.path.exists(pf) else 0
        line = p.stdout.readline().strip() if port else ""
        check(port > 0 and line == "listening on https://127.0.0.1:%d" % port,
              "--tls-cert/--tls-key: the line says https", (made.returncode, line))
        if port:
            tls_requests(port, cert)
        else:
            for desc in ("an untrusting client", "a track request over https", "plain http"):
                check(False, "--tls-cert: %s (not run: no mock)" % desc)
    finally:
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=5)
    check(p.returncode == 0 and err == "", "--tls-cert: no traceback for refused handshakes; exit 0",
          (p.returncode, err))
    for f in (cert, key):
        if os.path.exists(f):
            os.unlink(f)


def main():
    t_start = time.time()
    tmp = tempfile.mkdtemp(prefix="events_api_mock.")
    port_file = os.path.join(tmp, "port")
    errf = open(os.path.join(tmp, "stderr"), "w+")
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "events_api.py"), "--port", "0",
                             "--port-file", port_file], stdout=subprocess.PIPE, stderr=errf,
                            text=True)
    try:
        deadline = time.time() + 5
        while not os.path.exists(port_file) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        port = int(open(port_file).read()) if os.path.exists(port_file) else 0
        line = proc.stdout.readline().strip() if port else ""
        print("1..128")
        check(port > 0 and line == "listening on 127.0.0.1:%d" % port,
              "mock starts, writes --port-file and prints the port", line)
        if port:
            run(Mock(port))
            concurrency(Mock(port))
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=5)
        check(rc == 0, "SIGTERM -> clean exit 0", rc)
        cli_flags(tmp)
        tls_flags(tmp)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    errf.seek(0)
    err = errf.read()
    check(err == "", "nothing on the mock's stderr (no tracebacks, no access log)", err)
    check(time.time() - t_start < 20, "finished in under 20 s (%.1f s)" % (time.time() - t_start))
    for f in os.listdir(tmp):
        os.unlink(os.path.join(tmp, f))
    os.rmdir(tmp)
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
