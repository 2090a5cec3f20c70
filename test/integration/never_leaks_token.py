"""The access token never appears in the server log at log_min_messages =
debug5, in pg_stat_activity, in the errors SQL calls get back, or in the
outbox and its status views, whatever path handled it: successful
deliveries, a wrong token that pauses the pixel, tt_update_pixel with the
right one, 5xx answers and connection resets, and failing calls of the
functions that take a token.  Neither the whole token nor its first 8
characters may appear.

The token reaches SQL through a setting given at connection time
(PGOPTIONS, read with current_setting()), so no statement text carries it
and PostgreSQL has nothing of the user's own to echo.  Only at the end is
the token typed into a statement, as the README shows, in one call that
fails: PostgreSQL then logs that statement after the error
("STATEMENT: ..."), an echo of what the user typed, not something the
extension wrote.  The log check excuses exactly that line, and checks
that it is there, which also shows the scan finds the token when present.
A successful call with the token typed in is not logged at all."""
import json
import os
import secrets
import string
import subprocess
import threading
import time

from harness import (PIXEL, Mock, Tap, configure, counts, drained, enqueue, no_crash, psql,
                     server_log, wait_until)


# Distinctive tokens: random, and starting with letters that no hex digest,
# LSN or number in the log can contain, so a hit is a leak, not a coincidence.
def distinctive_token():
    alphabet = string.ascii_letters + string.digits
    return "Qz" + "".join(secrets.choice(alphabet) for _ in range(38))


RIGHT = distinctive_token()
WRONG = distinctive_token()
SECRETS = {"the token": RIGHT, "its first 8 characters": RIGHT[:8],
           "the wrong token": WRONG, "the wrong token's first 8 characters": WRONG[:8]}
TOKEN_SQL = "current_setting('tt_test.token')"
tap = Tap(26)
seen_by_client = []   # everything psql printed back to the test
literal_statements = []  # statements the test itself typed the token into


# Which secrets a text contains; [] is the only good answer.
def leaks(text):
    return [name for name, s in SECRETS.items() if s in text]


# psql with the token handed over at connection time, never in the statement;
# verbose errors with their context, so the whole of what comes back is checked.
def psql_token(sql, token=RIGHT, role=None):
    env = dict(os.environ, PGOPTIONS=f"-c tt_test.token={token}")
    if role:
        sql = f"SET ROLE {role}; {sql}"
    r = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "VERBOSITY=verbose",
                        "-v", "SHOW_CONTEXT=always", "-d", "postgres", "-c", sql],
                       capture_output=True, text=True, env=env)
    seen_by_client.append(r.stdout + r.stderr)
    return r.returncode, r.stdout.strip(), r.stderr.strip()


# Every text the extension shows in its tables and views, one JSON row each.
def outbox_texts():
    return psql("""SELECT row_to_json(o)::text FROM tiktok_capi.outbox o
                   UNION ALL SELECT row_to_json(s)::text FROM tiktok_capi.outbox_status s
                   UNION ALL SELECT row_to_json(p)::text FROM tiktok_capi.outbox_pixel_status p""")


class Sampler(threading.Thread):
    """pg_stat_activity, every row and column, sampled again and again while
    the worker sends: the token must never be a query or an activity."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.samples = 0
        self.rows = []
        self.worker_sending = 0
        self.worker_pids = set()

    def run(self):
        while not self.stop.is_set():
            r = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-d", "postgres", "-c",
                                "SELECT row_to_json(a)::text FROM pg_stat_activity a"],
                               capture_output=True, text=True)
            if r.returncode == 0:
                self.samples += 1
                for line in r.stdout.splitlines():
                    self.rows.append(line)
                    row = json.loads(line)
                    if row.get("backend_type") == "tiktok_capi worker":
                        self.worker_pids.add(row["pid"])
                        if (row.get("query") or "").startswith("sending"):
                            self.worker_sending += 1
            time.sleep(0.03)


mock = Mock()
# quick retries, and enough attempts that no event fails while the faults last
configure(mock, retry_delay="50ms", retry_delay_max="200ms", max_attempts=1000, batch_size=50,
          poll_interval="500ms")
psql("CREATE EXTENSION tiktok_capi")
snapshots = []

# debug5, for the worker too: it rereads the configuration on SIGHUP
before = len(server_log())
psql("ALTER SYSTEM SET log_min_messages = debug5")
psql("SELECT pg_reload_conf()")
wpid = wait_until(lambda: psql("SELECT pid FROM pg_stat_activity "
                               "WHERE backend_type = 'tiktok_capi worker'"), 10)


# The worker's own DEBUG5 lines (transaction states) logged since offset since in the log.
def worker_debug5_lines(pid, since):
    return [l for l in server_log()[since:].splitlines()
            if f"[{pid}] DEBUG:" in l and "blockState" in l]


tap.ok(psql("SHOW log_min_messages") == "debug5"
       and wait_until(lambda: worker_debug5_lines(wpid, before), 10),
       "log_min_messages = debug5 reached the worker: its DEBUG5 lines are in the log", wpid)

sampler = Sampler()
sampler.start()

# 1. successful deliveries
mock.config(tokens={PIXEL: RIGHT}, delay_ms=150)
rc, _, err = psql_token(f"SELECT tiktok_capi.tt_add_pixel('{PIXEL}', {TOKEN_SQL})")
tap.ok(rc == 0, "tt_add_pixel with the token from the connection's settings", err)
enqueue(300, prefix="ok")
tap.ok(wait_until(lambda: drained(300), 30) and counts() == {"sent": 300},
       "successful deliveries: every event sent", counts())
snapshots.append(outbox_texts())

# 2. a wrong token: TikTok refuses it and the pixel pauses
rc, out, err = psql_token(f"SELECT tiktok_capi.tt_update_pixel('{PIXEL}', access_token => {TOKEN_SQL})",
                          token=WRONG)
tap.ok(rc == 0 and out == "t", "tt_update_pixel to a wrong token", err)
enqueue(100, prefix="wt")
paused = wait_until(lambda: psql(f"SELECT paused FROM tiktok_capi.outbox_pixel_status "
                                 f"WHERE pixel_code = '{PIXEL}'") == "t", 30)
pixel_error = psql(f"SELECT last_error FROM tiktok_capi.outbox_pixel_status WHERE pixel_code = '{PIXEL}'")
tap.ok(paused and "40105" in pixel_error, "the wrong token pauses the pixel with TikTok's 40105",
       pixel_error)
snapshots.append(outbox_texts())

# 3. tt_update_pixel with the right token resumes it
rc, out, err = psql_token(f"SELECT tiktok_capi.tt_update_pixel('{PIXEL}', access_token => {TOKEN_SQL})")
tap.ok(rc == 0 and out == "t" and wait_until(lambda: drained(400), 30)
       and counts() == {"sent": 400}, "tt_update_pixel with the right token: all delivered", counts())
snapshots.append(outbox_texts())

# 4. 5xx answers and connection resets, then recovery
faults_began = len(server_log())
mock.config(fault_rate=1.0, faults=["5xx", "reset"], delay_ms=50)
enqueue(200, prefix="f")


# Both kinds of fault have hit the worker's requests, and the outbox, read
# each time, has shown the reason of each as some event's last_error.
def faults_recorded():
    snapshots.append(outbox_texts())
    seen, f = "\n".join(snapshots[-200:]), mock.stats()["faults"]
    return f.get("5xx", 0) >= 2 and f.get("reset", 0) >= 2 and "HTTP 503" in seen and "network:" in seen


tap.ok(wait_until(faults_recorded, 30), "the worker met HTTP 503s and connection resets, "
       "and recorded each", mock.stats()["faults"])
errs = psql("SELECT DISTINCT last_error FROM tiktok_capi.outbox "
            "WHERE status = 'pending' AND last_error IS NOT NULL")
tap.ok(errs and all(e.startswith(("HTTP 503", "network:")) for e in errs.splitlines()),
       "faulted events carry the fault as last_error", errs)
mock.config(fault_rate=0.0, delay_ms=0)
tap.ok(wait_until(lambda: drained(600), 30) and counts() == {"sent": 600},
       "after the faults, every event is sent", counts())
snapshots.append(outbox_texts())

# 5. failing calls of the functions that take a token: (what, role, SQL, SQLSTATE)
bad_calls = [
    ("a duplicate tt_add_pixel", None,
     f"SELECT tiktok_capi.tt_add_pixel('{PIXEL}', {TOKEN_SQL})", "23505"),
    ("tt_add_pixel with an invalid pixel code", None,
     f"SELECT tiktok_capi.tt_add_pixel('not a pixel!', {TOKEN_SQL})", "22023"),
    ("tt_add_pixel with a NULL pixel code", None,
     f"SELECT tiktok_capi.tt_add_pixel(NULL, {TOKEN_SQL})", "22023"),
    ("tt_add_pixel with a wrongly typed argument", None,
     f"SELECT tiktok_capi.tt_add_pixel('CTESTPIXEL02', {TOKEN_SQL}, test_event_code => 42)", "42883"),
    ("tt_update_pixel with a non-boolean enabled", None,
     f"SELECT tiktok_capi.tt_update_pixel('{PIXEL}', access_token => {TOKEN_SQL}, enabled => 'maybe')",
     "22P02"),
    ("tt_add_pixel by a role without the right", "tt_app",
     f"SELECT tiktok_capi.tt_add_pixel('CTESTPIXEL03', {TOKEN_SQL})", "42501"),
    ("tt_update_pixel by a role without the right", "tt_app",
     f"SELECT tiktok_capi.tt_update_pixel('{PIXEL}', access_token => {TOKEN_SQL})", "42501"),
]
psql("CREATE ROLE tt_app")
failed_as_meant = []
for what, role, sql, state in bad_calls:
    rc, out, err = psql_token(sql, role=role)
    if rc != 0 and f"ERROR:  {state}:" in err:
        failed_as_meant.append(what)
    else:
        tap.diag(f"{what}: rc {rc}, {err[:300]}")
tap.ok(len(failed_as_meant) == len(bad_calls), "each bad call fails with its own SQLSTATE",
       sorted(set(w for w, *_ in bad_calls) - set(failed_as_meant)))
rc, out, err = psql_token("SELECT tiktok_capi.tt_update_pixel('CNOSUCHPIXEL', "
                          f"access_token => {TOKEN_SQL})")
tap.ok(rc != 0 and "42704" in err and "is not configured" in err,
       "tt_update_pixel of an unknown pixel is an error (42704)", (rc, out, err))
tap.ok(len(seen_by_client) == 4 + len(bad_calls) and not leaks("\n".join(seen_by_client)),
       "no error, context or answer the calls got back shows the token",
       leaks("\n".join(seen_by_client)))

sampler.stop.set()
sampler.join()
activity = "\n".join(sampler.rows)
tap.ok(sampler.samples >= 10 and sampler.worker_sending >= 1,
       "pg_stat_activity was sampled while the worker was sending",
       (sampler.samples, sampler.worker_sending))
tap.ok(not leaks(activity), "no pg_stat_activity sample shows the token (any column)", leaks(activity))
tap.ok(sampler.worker_pids == {int(wpid)}, "one worker did all the work (it kept debug5)",
       sampler.worker_pids)

# 6. the token typed into a statement, as the README shows; this call fails
#    (duplicate pixel), so PostgreSQL logs the statement after the error.
#    It runs after the sampling: while it runs, its own session's row in
#    pg_stat_activity shows the statement the user typed, token and all.
literal = f"SELECT tiktok_capi.tt_add_pixel('{PIXEL}', '{RIGHT}')"
literal_statements.append(literal)
r = subprocess.run(["psql", "-X", "-q", "-v", "VERBOSITY=verbose", "-v", "SHOW_CONTEXT=always",
                    "-d", "postgres", "-c", literal], capture_output=True, text=True)
tap.ok(r.returncode != 0 and "ERROR:  23505:" in r.stderr and not leaks(r.stderr),
       "a duplicate tt_add_pixel with the token typed in: its error does not show it",
       (r.returncode, leaks(r.stderr), r.stderr[:300]))
# A call with the token typed in that succeeds is not logged at all, not
# even at debug5 (log_statement is 'none'): the log check below covers it.
r = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-d", "postgres", "-c",
                    f"SELECT tiktok_capi.tt_update_pixel('{PIXEL}', access_token => '{RIGHT}')"],
                   capture_output=True, text=True)
tap.ok(r.returncode == 0 and r.stdout.strip() == "t" and not leaks(r.stdout + r.stderr),
       "tt_update_pixel with the token typed in succeeds and answers only true", r.stderr[:300])

snapshots.append(outbox_texts())
tables = "\n".join(snapshots)
tap.ok(len(snapshots) >= 6 and "TikTok code 40105" in tables and "HTTP 503" in tables
       and "network:" in tables, "the outbox and views were read with the errors they recorded",
       (len(snapshots), len(tables)))
tap.ok(not leaks(tables), "no text column of the outbox, outbox_status or outbox_pixel_status "
       "shows the token", leaks(tables))
tap.ok(mock.keys() and all(n == 1 for n in mock.keys().values()) and len(mock.keys()) == 600,
       "the API received all 600 events, once each", len(mock.keys()))

# 7. the whole server log
time.sleep(0.5)  # the logging collector writes the last lines
log = server_log()
lines = log.splitlines()
echoes = [l for l in lines if any(l.endswith("STATEMENT:  " + s) for s in literal_statements)]
hits = [l for l in lines if leaks(l) and l not in echoes]
tap.ok(not hits, "no line of the server log shows the token, except PostgreSQL's STATEMENT echo "
       "of the test's own typed statement", hits[:5])
tap.ok(len(echoes) == 1 and leaks(echoes[0]) == list(SECRETS)[:2],
       "that echo is there once, found by the same scan (so the scan works)", echoes)
worker_lines = [l for l in lines if f"[{wpid}] DEBUG:" in l]
late = worker_debug5_lines(wpid, before)
later = worker_debug5_lines(wpid, faults_began)
tap.ok(len(late) >= 20 and later, "the worker kept writing debug5 lines, through the faults too",
       (len(late), len(later)))
paused_lines = [l for l in lines if f"[{wpid}] LOG:" in l and "paused for an hour" in l]
tap.ok(paused_lines and "40105" in paused_lines[0] and not leaks(paused_lines[0]),
       "the worker logged the pause with TikTok's code and no token", paused_lines[:1])
tap.ok(psql("SELECT count(*) FROM tiktok_capi.pixels") == "1"
       and psql_token(f"SELECT access_token = {TOKEN_SQL} FROM tiktok_capi.pixels")[1] == "t",
       "the pixel still holds the right token (the checks looked for the real one)")
tap.diag(f"{sampler.samples} pg_stat_activity samples ({sampler.worker_sending} with the worker "
         f"sending); {len(lines)} log lines, {len(worker_lines)} of them the worker's DEBUG lines; "
         f"token found only in {len(echoes)} STATEMENT echo of the test's own typed call")
no_crash(tap)
mock.stop()
tap.done()
