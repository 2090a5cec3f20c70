"""A statement of the worker that fails is logged with its text, as a
client's would be: a DBA holds the outbox locked (LOCK TABLE, as an ALTER
TABLE or VACUUM FULL would) in a database whose lock_timeout is short;
the worker's claim gives up, and the server log shows the error followed by
the claim's SQL (STATEMENT:), so the DBA sees which statement of
tiktok_capi waited and on what.  Once the lock is gone the launcher's next
worker delivers every event."""
import atexit
import subprocess

from harness import Mock, Tap, configure, drained, enqueue, install, no_crash, psql, server_log, wait_until

tap = Tap(5)
mock = Mock()
configure(mock, poll_interval="200ms")
install()
# the worker reads the database's lock_timeout when it connects: a new one
psql("ALTER DATABASE postgres SET lock_timeout = '300ms'")
configure(mock, enabled="off")
wait_until(lambda: psql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'tiktok_capi worker'") == "0",
           10)
configure(mock, enabled="on")
enqueue(50, prefix="before")
tap.ok(wait_until(lambda: drained(50), 20), "the worker delivers (its statements are prepared)")

# a session that holds the outbox locked, as a long ALTER TABLE would; the
# worker looks at the outbox every poll_interval with its prepared claim
locker = subprocess.Popen(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", "postgres"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
atexit.register(locker.kill)
locker.stdin.write("SET lock_timeout = 0;\nBEGIN;\nLOCK TABLE tiktok_capi.outbox IN ACCESS EXCLUSIVE MODE;\n"
                   "SELECT 'locked';\n")
locker.stdin.flush()
assert locker.stdout.readline().strip() == "locked"

timeout = "canceling statement due to lock timeout"
tap.ok(wait_until(lambda: timeout in server_log(), 20), "the worker's statement gave up on the lock")
log = server_log()
# the first one: a prepared statement, whose error carries no QUERY of its own
first = log[log.find(timeout):].splitlines()[1:3]
statement = next((line.split("STATEMENT:", 1)[1].strip() for line in first if "STATEMENT:" in line), None)
tap.ok(statement is not None and "tiktok_capi.outbox" in statement,
       "the log shows the failing statement's SQL right after the error", first)
tap.diag(f"logged: {statement[:110] if statement else None}")

locker.stdin.write("COMMIT;\n")
locker.stdin.close()
locker.wait(10)
psql("ALTER DATABASE postgres RESET lock_timeout")
enqueue(50, prefix="after")
tap.ok(wait_until(lambda: drained(100), 30), "the lock gone, every event is delivered")
no_crash(tap)
mock.stop()
tap.done()
