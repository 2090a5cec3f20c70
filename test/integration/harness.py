"""What every integration test shares.

Each test runs inside its own throw-away cluster (pg_virtualenv sets PGHOST,
PGPORT, PGUSER, PG_CLUSTER_CONF_ROOT) with tiktok_capi preloaded, and starts
its own mock Events API on 127.0.0.1.  Tests print TAP (the plan first, then
one "ok" / "not ok" line per check) and "# " lines with the figures they
measured.  Standard library only.
"""
import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
MOCK = os.path.join(HERE, "..", "mock", "events_api.py")
PIXEL = "CTESTPIXEL01"
TOKEN = "test-token-never-logged"


class Tap:
    """TAP output: plan up front, then numbered checks."""

    def __init__(self, plan):
        self.n = 0
        self.failed = 0
        print(f"1..{plan}", flush=True)

    def ok(self, cond, desc, got=None):
        self.n += 1
        print(f"{'ok' if cond else 'not ok'} {self.n} - {desc}", flush=True)
        if not cond:
            self.failed += 1
            if got is not None:
                print(f"#   got: {got}", flush=True)
        return cond

    def diag(self, msg):
        print(f"# {msg}", flush=True)

    def done(self):
        sys.exit(1 if self.failed else 0)


class Mock:
    """The mock Events API as a subprocess, driven over its control endpoints."""

    def __init__(self, *args):
        self.dir = tempfile.mkdtemp(prefix="tt-mock-")
        port_file = os.path.join(self.dir, "port")
        self.proc = subprocess.Popen([sys.executable, MOCK, "--port-file", port_file, "--quiet", *args])
        deadline = time.time() + 10
        while not os.path.exists(port_file):
            if time.time() > deadline or self.proc.poll() is not None:
                raise RuntimeError("the mock Events API did not start")
            time.sleep(0.02)
        self.port = int(open(port_file).read())
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/open_api/v1.3/event/track/"
        # a test that dies must not leave the mock holding its output open
        atexit.register(self.stop)

    def _call(self, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method="GET" if data is None else "POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def config(self, **kw):
        return self._call("/_mock/config", kw)

    def stats(self):
        return self._call("/_mock/stats")

    def keys(self):
        """{(pixel, event, event_id): times accepted}"""
        return {(p, e, i): n for p, e, i, n, _ in self._call("/_mock/keys")}

    def events(self):
        """{(pixel, event, event_id): the event as last accepted}"""
        return {(p, e, i): ev for p, e, i, ev in self._call("/_mock/events")}

    def first_seen(self):
        return {(p, e, i): t for p, e, i, _, t in self._call("/_mock/keys")}

    def requests(self, pixel=None):
        """the track requests in arrival order (of pixel, if given): {seq, pixel, events,
        event_ids (the first 10), held, arrived, closed, outcome}"""
        return self._call("/_mock/requests" + (f"?pixel={urllib.parse.quote(pixel)}" if pixel else ""))

    def reset(self):
        """counters, keys, the request log and the config back to the defaults"""
        return self._call("/_mock/reset", {})

    def reset_max_open(self):
        return self._call("/_mock/reset_max_open", {})

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)


def psql(sql, db=None, check=True, port=None):
    """Run SQL (in db, else $PGDATABASE, else postgres); the unaligned,
    tuples-only output, stripped.  port: a second cluster of the test's
    own (a standby, a restore target), as postgres over 127.0.0.1."""
    db = db or os.environ.get("PGDATABASE") or "postgres"
    where = ["-h", "127.0.0.1", "-p", str(port), "-U", "postgres"] if port else []
    r = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", *where, "-d", db, "-c", sql],
                       capture_output=True, text=True, timeout=60)
    if check and r.returncode != 0:
        raise RuntimeError(f"psql failed: {r.stderr.strip()}\n  in: {sql[:200]}")
    return r.stdout.strip() if r.returncode == 0 else None


def psql_notices(sql, db=None):
    """Run SQL as psql() does; its output and the lines of the NOTICEs it
    raised (NOTICE:, DETAIL:, HINT:)"""
    db = db or os.environ.get("PGDATABASE") or "postgres"
    r = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", db, "-c", sql],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"psql failed: {r.stderr.strip()}\n  in: {sql[:200]}")
    return r.stdout.strip(), [line for line in r.stderr.splitlines()
                              if line.startswith(("NOTICE:", "DETAIL:", "HINT:"))]


def wait_until(cond, timeout, interval=0.1):
    """Poll cond() until it is true (its value) or timeout seconds pass (None).
    A server restarting under us shows as a failed psql: keep polling."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            v = cond()
            if v:
                return v
        except RuntimeError:
            pass
        time.sleep(interval)
    return None


def free_port():
    """A port of 127.0.0.1 nobody listens on now, for a second cluster"""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_log():
    root = os.environ["PG_CLUSTER_CONF_ROOT"]
    path = os.path.join(root, "..", "log", f"postgresql-{os.environ['PGVERSION']}-regress.log")
    with open(path, errors="replace") as f:
        return f.read()


def configure(mock, **settings):
    """Point the worker at the mock and apply settings (ALTER SYSTEM, reload)."""
    settings = {"api_url": mock.url, **settings}
    for name, value in settings.items():
        psql(f"ALTER SYSTEM SET tiktok_capi.{name} = '{value}'")
    psql("SELECT pg_reload_conf()")
    time.sleep(0.2)


def install(pixel=PIXEL, token=TOKEN):
    psql("CREATE EXTENSION IF NOT EXISTS tiktok_capi")
    psql(f"SELECT tiktok_capi.tt_add_pixel('{pixel}', '{token}')")


def create_orders(event="Purchase"):
    """An orders table like a shop's, with the capture trigger attached."""
    psql("""CREATE TABLE orders (id bigserial PRIMARY KEY, email text, phone text,
              total numeric(12,2), currency text, created_at timestamptz DEFAULT now())""")
    psql(f"SELECT tiktok_capi.tt_attach('orders', '{event}')")


def insert_orders(n, per_txn=500, start=1):
    """n orders, committed per_txn at a time; returns their ids as event_ids."""
    for lo in range(start, start + n, per_txn):
        hi = min(lo + per_txn, start + n) - 1
        psql(f"""INSERT INTO orders (id, email, phone, total, currency)
                 SELECT g, 'buyer' || g || '@example.com', '+1415555' || lpad((g % 10000)::text, 4, '0'),
                        (g % 500) + 0.99, 'USD'
                   FROM generate_series({lo}, {hi}) g""")
    return {str(i) for i in range(start, start + n)}


def enqueue(n, pixel=PIXEL, prefix="e", event="Purchase"):
    """n events through tt_enqueue in one transaction; returns their event_ids."""
    psql(f"""SELECT count(tiktok_capi.tt_enqueue('{pixel}',
                 tiktok_capi.tt_event('{event}', '{prefix}' || g, email => 'u' || g || '@example.com',
                                      value => g % 100, currency => 'EUR')))
               FROM generate_series(1, {n}) g""")
    return {f"{prefix}{i}" for i in range(1, n + 1)}


def slow_backlog(n):
    """A mock that answers each request after 150 ms, batches of 200, and n
    events queued: a drain long enough to be interrupted mid-way.
    Returns the mock and the event_ids."""
    mock = Mock()
    configure(mock, batch_size=200)
    install()
    mock.config(delay_ms=150)
    return mock, enqueue(n)


def counts(port=None):
    """{status: events} from the outbox (of the cluster on port, if given)"""
    out = psql("SELECT status, count(*) FROM tiktok_capi.outbox GROUP BY status", port=port)
    return {s: int(c) for s, c in (line.split("|") for line in out.splitlines() if line)}


def drained(total):
    """True once every one of total events is sent or failed"""
    c = counts()
    return c.get("sent", 0) + c.get("failed", 0) == total


def worker_pid():
    out = psql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'tiktok_capi worker'")
    return int(out) if out else None


def outbox_keys(status="sent"):
    out = psql(f"SELECT pixel_code, event, event_id FROM tiktok_capi.outbox WHERE status = '{status}'")
    return {tuple(line.split("|")) for line in out.splitlines() if line}


def no_crash(tap, allowed_kills=0):
    """The server log shows no process that died of anything but our kill -9s"""
    log = server_log()
    crashes = [l for l in log.splitlines() if "terminated by signal" in l and "signal 9" not in l]
    kills = sum(1 for l in log.splitlines() if "terminated by signal 9" in l)
    tap.ok(not crashes and kills <= allowed_kills, "no server process crashed", crashes[:3])
