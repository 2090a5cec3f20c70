"""A hot standby (pg_basebackup -R) with tiktok_capi preloaded sends
nothing: the outbox replicates to it, pending events too, yet no launcher
or worker runs there and the Events API it is pointed at hears nothing,
and the standby does not crash.  Promoted, it becomes a primary: its
launcher starts and delivers the pending events, each once, and none of
those the old primary had already sent -- which also proves the standby
really had the extension loaded while it kept quiet."""
import os
import shutil
import subprocess
import tempfile
import time

from harness import (PIXEL, Mock, Tap, configure, counts, drained, enqueue, free_port, install, psql,
                     wait_until)

BIN = "/usr/lib/postgresql/15/bin"
SENT, PENDING, LATER = 20, 100, 50   # sent before the backup; pending before; pending after
QUIET_S = 4                          # how long the standby is watched for a request

tap = Tap(13)


# The standby runs as the postgres OS user: we are root, and postgres
# refuses to run as root.
def as_postgres(*cmd, timeout=60):
    return subprocess.run(["runuser", "-u", "postgres", "--", *cmd],
                          capture_output=True, text=True, timeout=timeout)


# pg_basebackup connects over TCP to 127.0.0.1 with the replication
# protocol: the primary's pg_hba must let it in.  Debian's template has
# such a line; add one (and reload) only when it is missing.
def allow_replication():
    have = psql("SELECT count(*) FROM pg_hba_file_rules WHERE error IS NULL "
                "AND 'replication' = ANY (database) AND type = 'host' "
                "AND address = '127.0.0.1' AND ('all' = ANY (user_name) OR 'postgres' = ANY (user_name))")
    if have != "0":
        return "already allowed by the cluster's pg_hba.conf"
    hba = psql("SHOW hba_file")
    with open(hba) as f:
        rules = f.read()
    with open(hba, "w") as f:
        f.write("host replication all 127.0.0.1/32 scram-sha-256\n" + rules)
    psql("SELECT pg_reload_conf()")
    time.sleep(0.3)
    return "a line was added to the cluster's pg_hba.conf"


# A Debian cluster keeps postgresql.conf and pg_hba.conf outside its data
# directory, so the backup has neither: write the standby's own.  Settings
# the primary made with ALTER SYSTEM (api_url at the first mock, enabled =
# off) came along in postgresql.auto.conf; lines appended there win.
def configure_standby(datadir, port, api_url):
    hot = {name: psql(f"SHOW {name}") for name in
           ("max_connections", "max_worker_processes", "max_wal_senders",
            "max_prepared_transactions", "max_locks_per_transaction")}
    with open(os.path.join(datadir, "postgresql.conf"), "w") as f:
        f.write(f"port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n"
                "shared_preload_libraries = 'tiktok_capi'\nhot_standby = on\n"
                "logging_collector = off\n")
        for name, value in hot.items():
            f.write(f"{name} = '{value}'\n")
    with open(os.path.join(datadir, "pg_hba.conf"), "w") as f:
        f.write("host all all 127.0.0.1/32 trust\n")
    open(os.path.join(datadir, "pg_ident.conf"), "w").close()
    with open(os.path.join(datadir, "postgresql.auto.conf"), "a") as f:
        f.write(f"tiktok_capi.api_url = '{api_url}'\ntiktok_capi.enabled = 'on'\n")


# Stop the standby (fast, then immediate) and remove its directory, whatever
# the checks said, so the throw-away cluster's teardown finds nothing of ours.
def remove_standby(top, datadir):
    if os.path.exists(os.path.join(datadir, "postmaster.pid")):
        r = as_postgres(f"{BIN}/pg_ctl", "-D", datadir, "-m", "fast", "-w", "-t", "20", "stop")
        if r.returncode != 0:
            as_postgres(f"{BIN}/pg_ctl", "-D", datadir, "-m", "immediate", "-w", "stop")
    shutil.rmtree(top, ignore_errors=True)


# The standby's server log, crashes being what we look for.
def standby_log(logfile):
    try:
        with open(logfile, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


# Events the primary has: some sent to the first mock, the rest held back
# (enabled = off) so they are still pending when the backup is taken.
primary_mock = Mock()
configure(primary_mock)
install()
sent_ids = enqueue(SENT, prefix="sent")
if not wait_until(lambda: drained(SENT), 15):
    raise SystemExit(f"Bail out! the primary did not deliver its first events: {counts()}")
psql("ALTER SYSTEM SET tiktok_capi.enabled = off")
psql("SELECT pg_reload_conf()")
if not wait_until(lambda: psql("SELECT count(*) FROM pg_stat_activity "
                               "WHERE backend_type = 'tiktok_capi worker'") == "0", 10):
    raise SystemExit("Bail out! enabled = off did not stop the primary's worker")
pending_ids = enqueue(PENDING, prefix="held")

tap.diag("replication from 127.0.0.1: " + allow_replication())

standby_mock = Mock()       # only the standby knows it
top = tempfile.mkdtemp(prefix="tt-standby-")
datadir = os.path.join(top, "data")
logfile = os.path.join(top, "standby.log")
port = free_port()
try:
    t0 = time.time()
    backup = subprocess.run([f"{BIN}/pg_basebackup", "-h", "127.0.0.1", "-p", os.environ["PGPORT"],
                             "-U", "postgres", "-D", datadir, "-R", "-X", "stream", "-c", "fast"],
                            capture_output=True, text=True, timeout=60)
    if backup.returncode != 0:
        raise SystemExit(f"Bail out! pg_basebackup failed: {backup.stderr.strip()}")
    configure_standby(datadir, port, standby_mock.url)
    subprocess.run(["chown", "-R", "postgres:postgres", top], check=True)
    os.chmod(top, 0o700)
    os.chmod(datadir, 0o700)
    start = as_postgres(f"{BIN}/pg_ctl", "-D", datadir, "-l", logfile, "-w", "-t", "30", "start")
    if start.returncode != 0:
        raise SystemExit(f"Bail out! the standby did not start: {start.stderr.strip()} "
                         f"{standby_log(logfile)[-2000:]}")
    tap.diag(f"pg_basebackup and standby start: {time.time() - t0:.2f} s")

    # 1. it is a hot standby, with the extension preloaded and pointed at its own mock
    tap.ok(psql("SELECT pg_is_in_recovery()", port=port) == "t", "the standby is in recovery")
    seen = (psql("SHOW shared_preload_libraries", port=port), psql("SHOW tiktok_capi.api_url", port=port))
    tap.ok(seen == ("tiktok_capi", standby_mock.url),
           "the standby preloads tiktok_capi and points at the second mock", seen)

    # 2. the outbox replicates, pending events too, including those queued after the backup
    later_ids = enqueue(LATER, prefix="later")
    want = {"sent": SENT, "pending": PENDING + LATER}
    tap.ok(counts() == want, "the primary holds its sent and pending events", counts())
    got = wait_until(lambda: counts(port=port) == want, 15)
    tap.ok(got, f"the standby's outbox has them too: {SENT} sent, {PENDING + LATER} pending",
           psql("SELECT status, count(*) FROM tiktok_capi.outbox GROUP BY 1", check=False, port=port))

    # 3. a few seconds of watching: no launcher nor worker, no request, no crash
    seen_workers = set()
    deadline = time.time() + QUIET_S
    while time.time() < deadline:
        out = psql("SELECT backend_type FROM pg_stat_activity "
                                "WHERE backend_type LIKE 'tiktok_capi%'", port=port)
        seen_workers.update(line for line in out.splitlines() if line)
        time.sleep(0.2)
    tap.ok(not seen_workers, f"no tiktok_capi launcher or worker ran on the standby in {QUIET_S} s",
           seen_workers)
    quiet = standby_mock.stats()["requests"]
    tap.ok(quiet == 0, "the standby's mock received no request", quiet)
    log = standby_log(logfile)
    bad = [line for line in log.splitlines()
           if "terminated by signal" in line or "PANIC" in line or "exited with exit code" in line
           or "delivery worker started" in line]
    tap.ok("database system is ready to accept read-only connections" in log and not bad,
           "the standby's log shows it accepting read-only connections, and no crash nor worker",
           bad[:3] or log[-1500:])
    tap.ok(counts(port=port) == want, "the standby's outbox is unchanged", counts(port=port))

    # 4. promoted, it delivers the pending events to its own mock, and only those
    t0 = time.time()
    promote = as_postgres(f"{BIN}/pg_ctl", "-D", datadir, "-w", "-t", "30", "promote")
    tap.ok(promote.returncode == 0 and psql("SELECT pg_is_in_recovery()", port=port) == "f",
           "pg_ctl promote made it a primary", promote.stderr)
    total = SENT + PENDING + LATER
    done = wait_until(lambda: counts(port=port).get("sent", 0) == total, 20)
    took = time.time() - t0
    tap.ok(done, f"after promotion all {PENDING + LATER} pending events were sent", counts(port=port))
    keys = standby_mock.keys()
    expected = {(PIXEL, "Purchase", i) for i in pending_ids | later_ids}
    tap.ok(set(keys) == expected and all(n == 1 for n in keys.values()),
           "the second mock got each pending event once, and none the first had",
           (len(keys), len(set(keys) - expected), len(expected - set(keys))))
    tap.diag(f"promotion to all pending events delivered: {took:.2f} s")
    kinds = psql("SELECT string_agg(backend_type, ',' ORDER BY backend_type) "
                              "FROM pg_stat_activity WHERE backend_type LIKE 'tiktok_capi%'", port=port)
    tap.ok(kinds == "tiktok_capi launcher,tiktok_capi worker" and
           not [line for line in standby_log(logfile).splitlines() if "terminated by signal" in line],
           "the promoted server runs the launcher and the worker, and nothing crashed", kinds)
    first = primary_mock.keys()
    tap.ok(set(first) == {(PIXEL, "Purchase", i) for i in sent_ids},
           "the first mock got only the events sent before the backup", len(first))
finally:
    remove_standby(top, datadir)
    standby_mock.stop()
    primary_mock.stop()
tap.done()
