"""The page and the server send the same event: the snippet the database gives
the thank-you page (tt_pixel_call), run in a real browser (Debian's chromium,
headless, loopback only) against a stub ttq that records its calls, carries
the event name, event_id, value, currency and contents of the outbox row the
worker delivered under the same (pixel, event, event_id) key, so TikTok counts
the pair once.  A hostile product name runs no script and arrives intact; the
same name inlined without escaping does run its script, so the detector
works.  The dataLayer object for Google Tag Manager holds the same event_id."""
import html
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from harness import PIXEL, Mock, Tap, configure, install, no_crash, psql, wait_until

CHROMIUM = "/usr/bin/chromium"
CLICK_ID = "E.C.P.Cq0B/pair=="                  # as TikTok issues it
CLICK_PARAM = "E.C.P.Cq0B%2Fpair%3D%3D"         # as it arrives on the landing URL
# closes the script element, opens a new one, opens a comment, and carries
# both quotes and the line separators JavaScript once refused in strings
HOSTILE = ("Mug</script><script>document.documentElement.setAttribute('data-pwned','1')</script>"
           "<!--<script> \"double\" 'single' \u2028 \u2029 & --> \\ end")

tap = Tap(16)
if not os.access(CHROMIUM, os.X_OK):
    tap.diag(f"{CHROMIUM} is missing: apt-get install chromium (test/install-deps.sh does)")

mock = Mock()
configure(mock)
install()

# A shop's orders: the click id kept from the landing URL, the items as jsonb
psql("""CREATE TABLE orders (
            id bigint PRIMARY KEY, email text, phone text, total numeric(12,2), currency text,
            items jsonb, landing_url text,
            ttclid text GENERATED ALWAYS AS (tiktok_capi.tt_ttclid(landing_url)) STORED)""")
psql("SELECT tiktok_capi.tt_attach('orders', 'Purchase')")
# the web application's role: may ask for the page's call, may not read the outbox
psql("CREATE ROLE shop_web NOLOGIN")
psql("""GRANT EXECUTE ON FUNCTION tiktok_capi.tt_pixel_call(text, text, text, boolean),
                                 tiktok_capi.tt_datalayer(text, text, text) TO shop_web""")


class Pages(BaseHTTPRequestHandler):
    pages = {}

    def do_GET(self):
        body = self.pages.get(self.path.split("?")[0])
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.end_headers()
        self.wfile.write((body or "not found").encode())

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Pages)
threading.Thread(target=server.serve_forever, daemon=True).start()
base = f"http://127.0.0.1:{server.server_address[1]}"

items = [{"content_id": "SKU-1", "content_name": "Mug", "quantity": 2, "price": 8.00},
         {"content_id": "SKU-2", "content_name": "Tea", "quantity": 1, "price": 30.00}]
hostile_items = [{"content_id": "SKU-666", "content_name": HOSTILE, "quantity": 1, "price": 5}]
landing = f"{base}/thanks?utm_source=tiktok&ttclid={CLICK_PARAM}"
psql(f"""INSERT INTO orders (id, email, phone, total, currency, items, landing_url) VALUES
         (1001, 'pair@example.com', '+14155550101', 46.00, 'USD', $j${json.dumps(items)}$j$, $u${landing}$u$),
         (1002, 'evil@example.com', NULL, 5, 'EUR', $j${json.dumps(hostile_items)}$j$, NULL)""")



def delivered():
    k = mock.keys()
    return k if {(PIXEL, "Purchase", "1001"), (PIXEL, "Purchase", "1002")} <= set(k) else None


keys = wait_until(delivered, 20)
tap.ok(keys is not None and keys[(PIXEL, "Purchase", "1001")] == 1,
       "the worker delivered the order to the Events API", keys)
keys = keys or {}


def outbox(event_id):
    out = psql(f"""SELECT json_build_array(pixel_code, event, event_id, payload)
                     FROM tiktok_capi.outbox WHERE event = 'Purchase' AND event_id = '{event_id}'""")
    return json.loads(out)


def as_web(sql):
    """What the web application's role gets: the snippet, or the dataLayer object."""
    return psql(f"SET ROLE shop_web; {sql}")


def script_safe(text):
    """The escaping tt_pixel_call applies, for the jsonb the page inlines itself."""
    for c, e in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"),
                 ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(c, e)
    return text


STUB = """<script>
window.ttq = {calls: [],
  rec: function (m, a) {
    this.calls.push([m].concat(Array.prototype.slice.call(a)));
    document.getElementById('calls').textContent = JSON.stringify(this.calls);
  },
  track: function () { this.rec('track', arguments); },
  identify: function () { this.rec('identify', arguments); },
  page: function () { this.rec('page', arguments); }};
document.getElementById('ttclid').textContent =
  JSON.stringify(new URLSearchParams(location.search).get('ttclid'));
</script>"""


def page(snippet):
    """The thank-you page: the stub where TikTok's base code would be, then
    the database's snippet.  Three script elements."""
    return ("<!doctype html><html><head><meta charset='utf-8'><title>Thank you</title></head><body>"
            "<pre id='calls'>[]</pre><pre id='ttclid'></pre><pre id='layer'>[]</pre>"
            f"{STUB}\n<script>\n{snippet}\n</script>\n"
            "<script>document.body.setAttribute('data-loaded', '1');</script></body></html>")


browser_seconds = 0.0


def browse(path):
    """Load a page in headless chromium; the DOM once loaded."""
    global browser_seconds
    profile = tempfile.mkdtemp(prefix="tt-chromium-")
    start = time.time()
    try:
        r = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                            "--disable-background-networking", "--disable-component-update",
                            "--disable-sync", "--disable-extensions", "--disable-dev-shm-usage",
                            "--no-proxy-server",
                            # loopback only: every other host name fails to resolve
                            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                            f"--user-data-dir={profile}", "--dump-dom", base + path],
                           capture_output=True, text=True, timeout=30)
        return r.stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        tap.diag(f"chromium failed: {e}")
        return ""
    finally:
        browser_seconds += time.time() - start
        shutil.rmtree(profile, ignore_errors=True)


def pre(dom, name, default):
    m = re.search(rf'<pre id="{name}">(.*?)</pre>', dom, re.S)
    try:
        return json.loads(html.unescape(m.group(1)))
    except (AttributeError, ValueError):
        return default


def root_attrs(dom):
    """The attributes of the <html> element, where the injected script would write."""
    m = re.search(r"<html([^>]*)>", dom)
    return m.group(1) if m else ""


def tracks(calls):
    return [c for c in calls if c[0] == "track"]


# 1. The paired order: the browser's call against the outbox row and the API
row = outbox("1001")
snippet = as_web(f"SELECT tiktok_capi.tt_pixel_call('{PIXEL}', 'Purchase', '1001')")
Pages.pages["/thanks"] = page(snippet)
dom = browse("/thanks?utm_source=tiktok&ttclid=" + CLICK_PARAM)
calls = pre(dom, "calls", [])
track = tracks(calls)
tap.ok(len(track) == 1 and 'data-loaded="1"' in dom, "the thank-you page ran exactly one ttq.track call", calls)
_, ev, props, opts = (track[0] + [None] * 4)[:4] if track else (None, None, {}, {})
props, opts = props or {}, opts or {}
tap.ok((ev, opts.get("event_id")) == (row[1], row[2]),
       "the browser's (event, event_id) is the outbox row's", (ev, opts.get("event_id"), row[1], row[2]))
server_props = row[3]["properties"]
tap.ok({k: props.get(k) for k in ("value", "currency", "contents")}
       == {k: server_props.get(k) for k in ("value", "currency", "contents")},
       "value, currency and contents in the browser equal the server event's", props)
tap.ok(keys.get((row[0], ev, opts.get("event_id"))) == 1,
       "the Events API accepted the same (pixel, event, event_id) once: the pair deduplicates",
       (row[0], ev, opts.get("event_id")))
tap.ok(not any(c[0] == "identify" for c in calls) and not re.search(r"[0-9a-f]{64}", json.dumps(calls)),
       "by default the page gets no customer identifier, hashed or not", calls)
tap.ok(pre(dom, "ttclid", None) == CLICK_ID == row[3]["user"].get("ttclid"),
       "the server event carries the ttclid the browser landed with", (pre(dom, "ttclid", None), row[3]["user"]))

# 2. A hostile product name
hrow = outbox("1002")
hsnippet = as_web(f"SELECT tiktok_capi.tt_pixel_call('{PIXEL}', 'Purchase', '1002', advanced_matching => true)")
Pages.pages["/hostile"] = page(hsnippet)
dom = browse("/hostile")
calls = pre(dom, "calls", [])
track = tracks(calls)
tap.ok(len(track) == 1 and 'data-loaded="1"' in dom, "with a hostile product name, exactly one track call ran", calls)
tap.ok("data-pwned" not in root_attrs(dom) and dom.count("<script") == 3,
       "the injected script never ran, and no script element was added", dom[:300])
name = track[0][2]["contents"][0].get("content_name") if track else None
tap.ok(name == HOSTILE == hrow[3]["properties"]["contents"][0]["content_name"],
       "the name arrives intact, quotes, U+2028 and all", repr(name))
identify = [c for c in calls if c[0] == "identify"]
tap.ok(len(identify) == 1 and calls.index(identify[0]) < calls.index(track[0])
       and identify[0][1] == {"email": hrow[3]["user"]["email"]},
       "advanced_matching identifies first, with the event's hashed email only", identify)

# The control: the same name inlined without escaping runs its script, so the
# check above can fail
naive = f"ttq.track({json.dumps(hrow[1])}, {json.dumps(hrow[3]['properties'], ensure_ascii=False)}, " \
        f"{json.dumps({'event_id': hrow[2]})});"
Pages.pages["/naive"] = page(naive)
dom = browse("/naive")
tap.ok('data-pwned="1"' in root_attrs(dom) and not tracks(pre(dom, "calls", [])),
       "control: the same name inlined without escaping runs the injected script", dom[:300])

# 3. The dataLayer object, for shops that fire the pixel from Google Tag Manager
layer = as_web(f"SELECT tiktok_capi.tt_datalayer('{PIXEL}', 'Purchase', '1001')")
Pages.pages["/gtm"] = page(
    "window.dataLayer = window.dataLayer || [];\n"
    f"dataLayer.push({script_safe(layer)});\n"
    "document.getElementById('layer').textContent = JSON.stringify(window.dataLayer);")
dom = browse("/gtm")
pushed = pre(dom, "layer", [])
obj = pushed[0] if len(pushed) == 1 and isinstance(pushed[0], dict) else {}
tap.ok((obj.get("event"), obj.get("event_id")) == (row[1], row[2]),
       "the dataLayer object pushed on the page holds the outbox row's event and event_id", pushed)
ecommerce = obj.get("ecommerce", {})
tap.ok((ecommerce.get("value"), ecommerce.get("currency")) == (server_props["value"], server_props["currency"])
       and [(i.get("item_id"), i.get("item_name"), i.get("price"), i.get("quantity")) for i in ecommerce.get("items", [])]
       == [(c["content_id"], c.get("content_name"), c["price"], c["quantity"]) for c in server_props["contents"]],
       "its ecommerce value, currency and items are the server event's", ecommerce)

tap.ok(psql("SET ROLE shop_web; SELECT 1 FROM tiktok_capi.outbox LIMIT 1", check=False) is None,
       "the web role that got the snippets cannot read the outbox")
tap.diag(f"chromium: 4 pages in {browser_seconds:.1f} s")
no_crash(tap)
server.shutdown()
mock.stop()
tap.done()
