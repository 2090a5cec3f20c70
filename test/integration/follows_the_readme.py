"""The README's "Use it in your database" path, followed as a user would on
a cluster of their own: a real cluster made with pg_createcluster (in
/etc/postgresql, not pg_virtualenv's), the README's createdb, its
postgresql.conf lines appended to the file `SHOW config_file` names, a
restart, the mock started with the README's command, the README's SQL run
in `psql <its database>` as postgres, and its order delivered as the README
shows it.

Nothing of the README is copied here: it is read at run time.  Only what a
user would change is substituted: the mock's port (a free one instead of
the README's), the cluster's port (PGPORT), sudo (runuser) and systemctl
(pg_ctlcluster).  If the section's shape changes so that its steps cannot
be found, the test bails out saying which part it missed.

Then the README's word on a server without shared_preload_libraries:
orders are queued but nothing is delivered, and tt_health() says why;
once preloaded again, the queued order goes out."""
import atexit
import hashlib
import json
import os
import re
import select
import shlex
import signal
import subprocess
import sys
import time

from harness import Tap, free_port, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
README = os.path.join(ROOT, "README.md")
PGV = "15"
SECTION = "## Use it in your database"


def bail(msg):
    print(f"Bail out! README.md: {msg}", flush=True)
    sys.exit(1)


# ---------------------------------------------------------------- the README

def section(text, heading):
    """The lines of the level-2 section under heading, up to the next one"""
    lines = text.splitlines()
    try:
        start = next(i for i, l in enumerate(lines) if l.rstrip() == heading)
    except StopIteration:
        bail(f"no section headed {heading!r}")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return lines[start + 1:end]


def blocks(lines):
    """The code blocks of some markdown lines, in order: dicts with
    lang (None for an indented block), text, and the prose before them."""
    out, prose, i = [], [], 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"^```(\w*)\s*$", line)
        if m:
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            if j == len(lines):
                bail("a fenced code block in the section is never closed")
            out.append({"lang": m.group(1) or "", "text": "\n".join(lines[i + 1:j]), "prose": "\n".join(prose)})
            prose, i = [], j + 1
            continue
        if line.startswith("    ") and (i == 0 or not lines[i - 1].strip()):
            j = i
            while j < len(lines) and (lines[j].startswith("    ") or not lines[j].strip()):
                j += 1
            body = [l[4:] for l in lines[i:j]]
            while body and not body[-1].strip():
                body.pop()
            out.append({"lang": None, "text": "\n".join(body), "prose": "\n".join(prose)})
            prose, i = [], j
            continue
        prose.append(line)
        i += 1
    return out


def strip_comment(line, mark="#"):
    """line without its trailing comment (not one inside quotes)"""
    quoted = False
    for k, c in enumerate(line):
        if c == "'":
            quoted = not quoted
        elif c == mark and not quoted and (mark != "-" or line[k:k + 2] == "--"):
            return line[:k].rstrip()
    return line.rstrip()


def sql_literals(values):
    """The items of a SQL VALUES list: strings unquoted, numbers as text"""
    items = re.findall(r"'((?:[^']|'')*)'|([^,\s()]+)", values)
    return [s.replace("''", "'") if s or not n else n for s, n in items]


def find(pattern, text, what, flags=0):
    m = re.search(pattern, text, flags)
    if not m:
        bail(f"cannot find {what} (looked for /{pattern}/)")
    return m


readme_text = open(README, encoding="utf-8").read()
use = blocks(section(readme_text, SECTION))

# step 1: createdb
createdb = next((strip_comment(l) for b in use if b["lang"] is None
                 for l in b["text"].splitlines() if l.startswith("createdb ")), None)
if not createdb:
    bail(f"no `createdb ...` line in a code block of {SECTION!r}")

# step 2: the postgresql.conf lines
SETTING = re.compile(r"^([a-z_][a-z0-9_.]*)\s*=\s*(.+)$")
conf_block = next((b for b in use if b["text"].strip() and all(
    SETTING.match(strip_comment(l)) for l in b["text"].splitlines() if strip_comment(l))
    and "shared_preload_libraries" in b["text"]), None)
if not conf_block:
    bail(f"no code block of `name = value` lines with shared_preload_libraries in {SECTION!r}")
if "postgresql.conf" not in conf_block["prose"]:
    bail("the settings block is not introduced as lines for postgresql.conf")
conf_lines = [l for l in conf_block["text"].splitlines() if l.strip()]
settings = {}
for l in conf_lines:
    k, v = SETTING.match(strip_comment(l)).groups()
    settings[k] = v.strip().strip("'")
DB = settings.get("tiktok_capi.database", "postgres")

# step 3: the mock's command, and what it prints
mock_block = next((b for b in use if "test/mock/events_api.py" in b["text"]), None)
if not mock_block:
    bail(f"no code block starting test/mock/events_api.py in {SECTION!r}")
mock_line = next(strip_comment(l) for l in mock_block["text"].splitlines() if "events_api.py" in l)
README_PORT = find(r"--port[ =](\d+)", mock_line, "the mock's --port in the README's command").group(1)
listening = re.search(r"#\s*(listening on \S+)", mock_block["text"])
if f":{README_PORT}" not in settings.get("tiktok_capi.api_url", ""):
    bail(f"tiktok_capi.api_url does not point at the mock's port {README_PORT}")

# steps 4 and 5: the SQL blocks up to the one that shows the event delivered
sql_blocks = [b for b in use if b["lang"] == "sql"]
shows = next((k for k, b in enumerate(sql_blocks) if re.search(r"\bFROM\s+tiktok_capi\.outbox\b", b["text"])), None)
if shows is None or shows == 0:
    bail(f"no ```sql block before one that SELECTs from tiktok_capi.outbox in {SECTION!r}")
setup_sql = "\n".join(b["text"] for b in sql_blocks[:shows])
show_sql = sql_blocks[shows]["text"].strip()
psql_db = find(r"`psql (\w+)`", sql_blocks[0]["prose"], "the database the SQL is run in (`psql NAME`)").group(1)
after = use[use.index(sql_blocks[shows]) + 1:]
if not after or after[0]["lang"] not in ("", "text"):
    bail("the outbox query is not followed by a fenced block of its expected output")
expected_rows = [l for l in after[0]["text"].splitlines() if l.strip()]
if len(expected_rows) < 3 or not re.match(r"^[-+]+$", expected_rows[1].strip()):
    bail("the outbox query's expected output is not a psql table (header, ----+----, rows)")
header = [c.strip() for c in expected_rows[0].split("|")]
expected = [dict(zip(header, (c.strip() for c in r.split("|")))) for r in expected_rows[2:]]
for col in ("event", "event_id", "status"):
    if col not in header:
        bail(f"the outbox query's expected output has no {col} column")
curl = next((strip_comment(l) for b in use if b["lang"] is None
             for l in b["text"].splitlines() if l.startswith("curl ") and "/_mock/events" in l), None)
if not curl:
    bail(f"no `curl .../_mock/events` line in {SECTION!r}")

# what the SQL says the order is
PIXEL = find(r"tt_add_pixel\(\s*'([^']+)'", setup_sql, "the pixel of tt_add_pixel").group(1)
table, event = find(r"tt_attach\(\s*'(\w+)',\s*'(\w+)'", setup_sql, "tt_attach(table, event)").groups()
ins = find(r"INSERT INTO (\w+)\s*\(([^)]*)\)\s*VALUES\s*\((.*?)\);", setup_sql,
           "the order's INSERT INTO t (cols) VALUES (...)", re.S)
if ins.group(1) != table:
    bail(f"the INSERT is into {ins.group(1)}, tt_attach into {table}")
order = dict(zip((c.strip() for c in ins.group(2).split(",")), sql_literals(ins.group(3))))
currency = order.get("currency") or find(r"\bcurrency\s+text\b[^,]*\bDEFAULT\s+'(\w+)'", setup_sql,
                                         "the orders' currency (in the INSERT or its column's DEFAULT)").group(1)
if "email" not in order or "phone" not in order or "total" not in order:
    bail(f"the README's order lacks email, phone or total: {sorted(order)}")
if not order["phone"].strip().startswith("+"):
    bail("the README's phone has no +country code; this test hashes international numbers only")
worker_name = find(r"shown in `pg_stat_activity` as `([^`]+)`", readme_text,
                   "the worker's name in pg_stat_activity (Delivery)").group(1)
no_preload = re.search(r"^\|\s*worker\s*\|.*critical: not preloaded", readme_text, re.M)


# ---------------------------------------------------------------- the cluster

tap = Tap(15)
NAME = f"ttreadme{os.getpid()}"
PORT = free_port()
MOCK_PORT = free_port()
# the user's shell: no pg_virtualenv around it (no PG_CLUSTER_CONF_ROOT: the
# cluster goes to /etc/postgresql), only the cluster's port as PGPORT
ENV = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
ENV["PGPORT"] = str(PORT)
procs = []


def cleanup():
    for p in procs:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    subprocess.run(["pg_dropcluster", "--stop", PGV, NAME], env=ENV, capture_output=True)


atexit.register(cleanup)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
signal.signal(signal.SIGINT, lambda *_: sys.exit(1))


def sub(s):
    """What the user changes: the mock's port"""
    return s.replace(f"--port {README_PORT}", f"--port {MOCK_PORT}").replace(f":{README_PORT}", f":{MOCK_PORT}")


def as_postgres(argv, **kw):
    return subprocess.run(["runuser", "-u", "postgres", "--", *argv], env=ENV, cwd="/",
                          capture_output=True, text=True, timeout=60, **kw)


def psql(sql, db=DB, check=True):
    """sql in `psql db` as postgres on the cluster: unaligned tuples, stripped"""
    r = as_postgres(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", db], input=sql)
    if check and r.returncode != 0:
        raise RuntimeError(f"psql failed: {r.stderr.strip()}\n  in: {sql[:200]}")
    return r.stdout.strip() if r.returncode == 0 else None


def ctl(action):
    """systemctl restart postgresql, on a pg_createcluster cluster"""
    subprocess.run(["pg_ctlcluster", PGV, NAME, action], env=ENV, check=True, capture_output=True, timeout=60)


def mock_events():
    r = subprocess.run(shlex.split(sub(curl)), capture_output=True, text=True, timeout=20)
    return {(p, e, i): ev for p, e, i, ev in json.loads(r.stdout)}


def outbox(event_id):
    return psql(f"SELECT status FROM tiktok_capi.outbox WHERE event_id = '{event_id}'")


t_start = time.time()
subprocess.run(["pg_createcluster", PGV, NAME, "-p", str(PORT)], env=ENV, check=True, capture_output=True)
ctl("start")
tap.diag(f"cluster {PGV}/{NAME} on port {PORT}, made by pg_createcluster")

# 1. createdb, as the README's Debian note says: as postgres
r = as_postgres(shlex.split(createdb))
if r.returncode != 0:
    bail(f"`{createdb}` failed: {r.stderr.strip()}")

# 2. the lines appended to the file SHOW config_file names, then a restart
config_file = psql("SHOW config_file", db="postgres")
tap.ok(config_file == f"/etc/postgresql/{PGV}/{NAME}/postgresql.conf",
       "SHOW config_file names the cluster's postgresql.conf in /etc/postgresql", config_file)
appended = [sub(l) for l in conf_lines]
with open(config_file, "a") as f:
    f.write("\n# tiktok_capi, as README.md says\n" + "\n".join(appended) + "\n")
ctl("restart")
shown = {k: psql(f"SHOW {k}", db="postgres") for k in settings}
tap.ok(all(shown[k] == sub(v) for k, v in settings.items()),
       f"after the restart the README's {len(settings)} settings are in effect", shown)

# 3. the mock, with the README's command from the repository's directory
mock = subprocess.Popen(shlex.split(sub(mock_line)), cwd=ROOT, stdout=subprocess.PIPE, text=True)
procs.append(mock)
ready, _, _ = select.select([mock.stdout], [], [], 10)
said = mock.stdout.readline().strip() if ready else None
tap.ok(listening is not None and said == sub(listening.group(1)),
       "the mock says what the README says it says", f"{said!r}, README: {listening and listening.group(1)!r}")

# 4. the extension, the pixel, the orders table with its trigger, an order
r = as_postgres(["psql", "-X", "-v", "ON_ERROR_STOP=1", psql_db], input=setup_sql)
t_order = time.time()
tap.ok(r.returncode == 0 and psql_db == DB,
       f"the README's SQL runs in `psql {psql_db}`, the database of tiktok_capi.database",
       r.stderr.strip() if r.returncode else f"psql {psql_db}, tiktok_capi.database = {DB}")

# 5. the README's query shows it sent, as the README shows it
want = expected[0]
EVENT_ID = want["event_id"]


def rows():
    out = as_postgres(["psql", "-X", "-A", "-t", "-F", "|", "-v", "ON_ERROR_STOP=1", DB], input=show_sql)
    return [dict(zip(header, l.split("|"))) for l in out.stdout.splitlines() if l] if out.returncode == 0 else None


got = wait_until(lambda: (lambda rs: rs if rs and all(x["status"] == want["status"] for x in rs) else None)(rows()),
                 15, 0.02)
waited = time.time() - t_order
got = got or rows()
tap.ok(got is not None and len(got) == len(expected)
       and all(g[c] == e[c] for g, e in zip(got, expected) for c in ("event", "event_id", "status"))
       and all(g.get(c) for g in got for c in header),
       f"the README's outbox query shows {len(expected)} row(s) as the README does: "
       f"{want['event']} {want['event_id']} {want['status']}, every column filled", got)
tap.ok(waited < 1, f"{want['status']} within a second of the INSERT, as the README says", f"{waited:.2f} s")

worker = wait_until(lambda: psql(f"SELECT count(*) FROM pg_stat_activity WHERE backend_type = '{worker_name}' "
                                 f"AND datname = '{DB}'") == "1", 10)
tap.ok(worker, f"pg_stat_activity shows one {worker_name!r} in {DB}")

events = mock_events()
ev = events.get((PIXEL, event, EVENT_ID))
tap.ok(list(events) == [(PIXEL, event, EVENT_ID)],
       f"the mock (the README's curl) has the README's order and nothing else: {PIXEL} {event} {EVENT_ID}",
       list(events))
ev = ev or {}
email = order["email"].strip().lower()
tap.ok(ev.get("user", {}).get("email") == hashlib.sha256(email.encode()).hexdigest(),
       f"its email is sha256 of {email!r}, the INSERT's {order['email']!r} normalized", ev.get("user"))
phone = "+" + re.sub(r"\D", "", order["phone"])
tap.ok(ev.get("user", {}).get("phone") == hashlib.sha256(phone.encode()).hexdigest(),
       f"its phone is sha256 of {phone!r}", ev.get("user"))
props = ev.get("properties", {})
tap.ok(props.get("value") == float(order["total"]) and props.get("currency") == currency,
       f"its properties carry the value {order['total']} and the currency {currency}", props)

# Without shared_preload_libraries: queued, not delivered, and tt_health() says why
if no_preload:
    spl = next(l for l in appended if l.startswith("shared_preload_libraries"))
    with open(config_file) as f:
        conf = f.read()
    with open(config_file, "w") as f:
        f.write(conf.replace(spl + "\n", "#" + spl + "\n"))
    ctl("restart")
    # the README's order once more: a second order, the next id
    insert = ins.group(0)
    psql(insert)
    second = psql(f"SELECT max(event_id::bigint) FROM tiktok_capi.outbox")
    time.sleep(2)
    tap.ok(outbox(second) == "pending" and (PIXEL, event, second) not in mock_events(),
           f"without shared_preload_libraries order {second} is queued pending, nothing delivered after 2 s",
           (outbox(second), list(mock_events())))
    health = psql("SELECT severity || '|' || reason FROM tiktok_capi.tt_health() WHERE \"check\" = 'worker'")
    tap.ok(health and health.startswith("2|") and "shared_preload_libraries" in health,
           "tt_health()'s worker check is critical: not preloaded (as the README's Monitoring table says)", health)
    with open(config_file, "w") as f:
        f.write(conf)
    ctl("restart")
    tap.ok(wait_until(lambda: outbox(second) == "sent", 15) and (PIXEL, event, second) in mock_events(),
           f"preloaded again, the queued order {second} is delivered", outbox(second))
else:
    for what in ("queued without preload", "tt_health() says not preloaded", "delivered once preloaded"):
        tap.ok(True, f"# SKIP the README no longer says what happens without shared_preload_libraries: {what}")

logfile = f"/var/log/postgresql/postgresql-{PGV}-{NAME}.log"
crashes = [l for l in open(logfile, errors="replace") if "terminated by signal" in l or "PANIC" in l]
tap.ok(not crashes, "no server process crashed", crashes[:3])
tap.diag(f"the README's path took {time.time() - t_start:.1f} s")
tap.done()
