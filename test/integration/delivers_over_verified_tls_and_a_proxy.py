"""Egress as companies have it, over real TLS on 127.0.0.1: the mock Events API
serves https with certificates this test makes (openssl).  TLS verification is
always on: without tiktok_capi.ca_file the test CA is unknown and nothing is
sent, the events stay pending and are retried, and curl's reason is the
pixel's last_error and in the server log (said once, not at each retry); with
ca_file (a reload) every event is delivered.  A certificate for another name
and an expired one are refused the same way.  Through a CONNECT proxy
(tiktok_capi.proxy = 'http://user:secret@127.0.0.1:PORT'): a wrong password
is a transport error like the others, the right one delivers through a
tunnel; the password never reaches the server log (not even PostgreSQL's own
"parameter changed" line, nor a refused ALTER SYSTEM's), SHOW gives *** in
its place, and a non-superuser cannot read the setting at all.
An https proxy (its certificate from ca_file's CA) carries them as well.
tiktok_capi.no_proxy = '127.0.0.1' bypasses the proxy."""
import json
import re
import ssl
import urllib.request

from egress.certificates import Certificates
from egress.connect_proxy import ConnectProxy
from harness import PIXEL, Mock, Tap, configure, counts, drained, enqueue, install, no_crash, psql, \
    server_log, wait_until

N = 40
tap = Tap(26)


class TlsMock(Mock):
    """The mock Events API over https, with cert; the test itself talks to its
    control endpoints without checking the certificate (some are meant to fail)"""

    def __init__(self, cert, key):
        super().__init__("--tls-cert", cert, "--tls-key", key)
        self.base = f"https://127.0.0.1:{self.port}"
        self.url = f"{self.base}/open_api/v1.3/event/track/"
        self.context = ssl.create_default_context()
        self.context.check_hostname = False
        self.context.verify_mode = ssl.CERT_NONE

    def _call(self, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method="GET" if data is None else "POST")
        with urllib.request.urlopen(req, timeout=10, context=self.context) as r:
            return json.loads(r.read())


certs = Certificates()
good = TlsMock(*certs.server("IP:127.0.0.1"))
elsewhere = TlsMock(*certs.server("DNS:elsewhere.example"))
expired = TlsMock(*certs.server("IP:127.0.0.1", expired=True))
proxy = ConnectProxy(user="user", password="secret")
tls_proxy = ConnectProxy(user="user", password="secret", tls=certs.server("IP:127.0.0.1"))
proxy_url = f"http://user:secret@127.0.0.1:{proxy.port}"
proxy_shown = f"http://user:***@127.0.0.1:{proxy.port}"


def pixel_error():
    return psql(f"SELECT coalesce(last_error, '') FROM tiktok_capi.outbox_pixel_status "
                f"WHERE pixel_code = '{PIXEL}'") or ""


def unreachable_lines(why):
    return [line for line in server_log().splitlines()
            if "tiktok_capi: could not reach the Events API: " + why in line]


def min_attempts(prefix):
    return int(psql(f"SELECT coalesce(min(attempts), 0) FROM tiktok_capi.outbox "
                    f"WHERE event_id LIKE '{prefix}%'"))


def pending(prefix):
    return int(psql(f"SELECT count(*) FROM tiktok_capi.outbox "
                    f"WHERE event_id LIKE '{prefix}%' AND status = 'pending'"))


def reload(**settings):
    """ALTER SYSTEM and a reload, waiting until a new session sees the settings: the
    postmaster has then passed the reload on to the worker, which takes it before
    its next claim (a commit after this is sent with the new settings)"""
    for name, value in settings.items():
        psql(f"ALTER SYSTEM SET tiktok_capi.{name} = '{value}'")
    psql("SELECT pg_reload_conf()")
    for name, value in settings.items():
        shown = re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", value)
        if not wait_until(lambda: psql(f"SHOW tiktok_capi.{name}") in (shown, value), 10):
            raise RuntimeError(f"tiktok_capi.{name} was not reloaded")


def refused(mock, prefix, why, desc):
    """Events to mock stay pending, retried, with curl's reason on the pixel and in the log"""
    tap.ok(wait_until(lambda: why in pixel_error() and min_attempts(prefix) >= 5, 30),
           f"{desc}: refused in the handshake, retried; the pixel's last_error says why",
           (pixel_error(), min_attempts(prefix)))
    tap.diag(f"{desc}: last_error {pixel_error()!r}")
    lines = unreachable_lines(why)
    tap.ok(pending(prefix) == N and mock.stats()["requests"] == 0 and 1 <= len(lines) < 5,
           f"{desc}: the events stay pending, nothing reached the API; the log says it "
           f"({len(lines)} line(s) for 5+ attempts)", (pending(prefix), mock.stats()["requests"], lines))
    return lines


# quick retries and attempts to spare: the test waits for retries, not for backoff
configure(good, retry_delay="20ms", retry_delay_max="200ms", max_attempts=100000)
install()

# 1. the test CA is nobody's: unknown without ca_file
ids_a = enqueue(N, prefix="a")
lines = refused(good, "a", "SSL certificate problem: unable to get local issuer certificate",
                "no ca_file, a certificate of an unknown CA")
tap.diag(f"log: {lines[0] if lines else '(nothing)'}")

# 2. ca_file names the test CA: delivered
reload(ca_file=certs.ca)
tap.ok(wait_until(lambda: drained(N), 30), "with ca_file (a reload), every event is delivered", counts())
keys = good.keys()
tap.ok(counts() == {"sent": N} and keys == {(PIXEL, "Purchase", i): 1 for i in ids_a},
       "each accepted exactly once", (counts(), len(keys)))
tap.ok(pixel_error() == "", "the pixel's last_error is gone once it delivers", pixel_error())

# 3. a certificate of the same CA for another name, 4. an expired one: refused
reload(api_url=elsewhere.url)
ids_b = enqueue(N, prefix="b")
refused(elsewhere, "b",
        "SSL: no alternative certificate subject name matches target host name '127.0.0.1'",
        "a certificate for elsewhere.example only")
reload(api_url=expired.url)
before = min_attempts("b")
refused(expired, "b", "SSL certificate problem: certificate has expired", "an expired certificate")
tap.ok(min_attempts("b") > before, "the events are retried against the new api_url", before)

# 5. through the proxy with a wrong password: a transport error like the others
reload(api_url=good.url, proxy=f"http://user:not-the-password@127.0.0.1:{proxy.port}")
tap.ok(wait_until(lambda: "407" in pixel_error() and proxy.stats()["unauthorized"] >= 3, 30),
       "a proxy refusing the password (407): the pixel's last_error says so, retried",
       (pixel_error(), proxy.stats()))
tap.diag(f"a proxy refusing the password: last_error {pixel_error()!r}")
tap.ok(pending("b") == N and proxy.stats()["tunnels"] == 0, "the events stay pending, no tunnel",
       (pending("b"), proxy.stats()))
log = server_log()
said = [line for line in log.splitlines() if "Requests go through the proxy" in line]
tap.ok(said and f"Requests go through the proxy http://user:***@127.0.0.1:{proxy.port}." in said[-1]
       and "not-the-password" not in log,
       "the log names the proxy with its password hidden; the password is nowhere in it", said[-1:])

# 6. the right password: delivered through a CONNECT tunnel
reload(proxy=proxy_url)
tap.ok(wait_until(lambda: drained(2 * N), 30), "through the proxy, every event is delivered", counts())
tap.ok(proxy.stats()["tunnels"] >= 1 and proxy.stats()["bytes"] > 0,
       "the proxy served the requests in CONNECT tunnels", proxy.stats())
keys = good.keys()
tap.ok(all(keys.get((PIXEL, "Purchase", i)) == 1 for i in ids_b) and elsewhere.stats()["requests"] == 0
       and expired.stats()["requests"] == 0, "each accepted exactly once, by the right server",
       (len(keys), elsewhere.stats()["requests"], expired.stats()["requests"]))
tap.diag(f"proxy: {proxy.stats()}")

# the password: never in the log, hidden from SHOW, unreadable by others
log = server_log()
changed = [line for line in log.splitlines() if 'parameter "tiktok_capi.proxy" changed to' in line]
tap.ok("secret" not in log and changed and f'changed to "{proxy_shown}"' in changed[-1],
       "the password is nowhere in the server log; PostgreSQL's own 'parameter changed' line "
       "shows *** in its place", changed[-1:])
tap.ok(psql("SHOW tiktok_capi.proxy") == proxy_shown, "SHOW gives *** for the password, to a superuser",
       psql("SHOW tiktok_capi.proxy"))
psql("CREATE ROLE shop_reader")
tap.ok(psql("SET ROLE shop_reader; SHOW tiktok_capi.proxy", check=False) is None and
       psql("SET ROLE shop_reader; SELECT current_setting('tiktok_capi.proxy')", check=False) is None and
       psql("SET ROLE shop_reader; SELECT count(*) FROM pg_settings WHERE name = 'tiktok_capi.proxy'") == "0",
       "a non-superuser can neither SHOW it, nor read it with current_setting() or pg_settings")
bad = psql("ALTER SYSTEM SET tiktok_capi.proxy = 'socks5://user:hunter2@127.0.0.1:1080'", check=False)
log = server_log()
tap.ok(bad is None and "hunter2" not in log and "socks5://user:***@127.0.0.1:1080" in log,
       "a refused proxy URL (socks5) is quoted in the log with its password hidden, its "
       "statement left out", [line for line in log.splitlines() if "socks5" in line][-2:])
tap.ok(psql("SHOW tiktok_capi.proxy") == proxy_shown, "the refused value changed nothing")

# 7. an https proxy, whose certificate ca_file's CA signed
reload(proxy=f"https://user:secret@127.0.0.1:{tls_proxy.port}")
ids_d = enqueue(N, prefix="d")
tap.ok(wait_until(lambda: drained(3 * N), 30), "through an https proxy, every event is delivered",
       (counts(), pixel_error()))
keys = good.keys()
tap.ok(all(keys.get((PIXEL, "Purchase", i)) == 1 for i in ids_d) and tls_proxy.stats()["tunnels"] >= 1,
       "each accepted once, in a CONNECT tunnel inside TLS to the proxy", tls_proxy.stats())

# 8. no_proxy: 127.0.0.1 is reached directly
reload(no_proxy="127.0.0.1")
seen = (proxy.stats(), tls_proxy.stats())
ids_c = enqueue(N, prefix="c")
tap.ok(wait_until(lambda: drained(4 * N), 30), "with no_proxy = 127.0.0.1, every event is delivered",
       counts())
keys = good.keys()
tap.ok(all(keys.get((PIXEL, "Purchase", i)) == 1 for i in ids_c) and (proxy.stats(), tls_proxy.stats()) == seen,
       "directly: the proxy carried not a byte of them", (seen, tls_proxy.stats()))
no_crash(tap)
proxy.stop()
tls_proxy.stop()
for m in (good, elsewhere, expired):
    m.stop()
tap.done()
