"""tiktok_capi.delivery_stats counts what the worker's requests did, the
way the Events API saw them: per pixel and in total, requests, events
sent, failed and retried, throttled requests, answers by TikTok code and
by HTTP status, bytes of the request bodies, request time and latency
buckets.  The counters are this database's only; they survive the
worker's restart (kill -TERM: the launcher starts a new one, which counts
on); tt_stats_reset() clears them and moves stats_reset; a clean restart
of the server keeps them (written at shutdown, read at start); a crash
restart (kill -9 of the worker) starts them from zero, as documented."""
import json
import os
import signal
import subprocess
import time

from harness import (PIXEL, Mock, Tap, configure, drained, enqueue, install, no_crash, psql,
                     wait_until, worker_pid)

PIXEL_B = "CTESTPIXEL02"
POISON = ["b5", "b17", "b33"]
DELAY_MS = 120
COLUMNS = ("requests", "events_sent", "events_failed", "events_retried", "throttled",
           "transport_errors", "answers_by_code", "answers_by_http_status", "bytes_sent",
           "request_time_count", "request_time_sum_ms", "latency_buckets", "last_request_at",
           "last_success_at", "stats_reset")
tap = Tap(29)
mock = Mock()
configure(mock, batch_size=10, retry_delay="20ms", retry_delay_max="50ms", max_attempts=1000)
install()
install(PIXEL_B, "token-b")


def stats(db=None):
    """{pixel_code or 'total': {column: value}} from delivery_stats"""
    out = psql("SELECT coalesce(pixel_code, 'total'), row_to_json(d) FROM tiktok_capi.delivery_stats d", db=db)
    rows = {}
    for line in out.splitlines():
        code, row = line.split("|", 1)
        rows[code] = json.loads(row)
    return rows


def expected(log):
    """what the counters should say for the mock's request log of one pixel"""
    outcomes = [r["outcome"] for r in log]
    by_code, by_status = {}, {}
    for o in outcomes:
        code = {"accepted": "0", "fault:40100": "40100", "fault:50002": "50002"}.get(o)
        if o.startswith("rejected:"):
            code = o.split(":")[1]
        if code:
            by_code[code] = by_code.get(code, 0) + 1
        status = "503" if o == "fault:5xx" else "200"
        by_status[status] = by_status.get(status, 0) + 1
    return {
        "requests": len(log),
        "events_sent": sum(r["events"] for r in log if r["outcome"] == "accepted"),
        # a rejected request of one event fails it; a larger one is split
        "events_failed": sum(1 for r in log if r["outcome"].startswith("rejected:") and r["events"] == 1),
        "events_retried": sum(r["events"] for r in log if r["outcome"] in ("fault:40100", "fault:5xx")),
        "throttled": outcomes.count("fault:40100"),
        "transport_errors": 0,
        "answers_by_code": by_code,
        "answers_by_http_status": by_status,
        "bytes_sent": sum(r["bytes"] for r in log),
        "request_time_count": len(log),
    }


def counted(row):
    return {k: row.get(k) for k in ("requests", "events_sent", "events_failed", "events_retried", "throttled",
                                "transport_errors", "answers_by_code", "answers_by_http_status",
                                "bytes_sent", "request_time_count")}


# 1. accepted and rejected: 100 events of one pixel, 40 of another with 3 poisoned, each
#    request answered after DELAY_MS
mock.config(poison=POISON, delay_ms=DELAY_MS)
enqueue(100, prefix="a")
enqueue(40, pixel=PIXEL_B, prefix="b")
tap.ok(wait_until(lambda: drained(140), 60), "140 events settle")
slow_requests = mock.stats()["requests"]

# 2. throttled (40100) and HTTP 503 for a while, then accepted: retried
mock.config(delay_ms=0, fault_rate=1.0, faults=["40100", "5xx"])
enqueue(30, prefix="t")
tap.ok(wait_until(lambda: sum(mock.stats()["faults"].values()) >= 8, 30), "requests are throttled and refused",
       mock.stats()["faults"])
mock.config(fault_rate=0.0)
tap.ok(wait_until(lambda: drained(170), 60), "all 170 events settle")
time.sleep(0.5)

got = stats()
log_a, log_b = mock.requests(PIXEL), mock.requests(PIXEL_B)
tap.ok(set(got) == {PIXEL, PIXEL_B, "total"}, "one row per pixel and the total", sorted(got))
tap.ok(all(set(COLUMNS) <= set(row) for row in got.values()), "every row has every column")
tap.ok(counted(got.get(PIXEL, {})) == expected(log_a),
       "the first pixel's counters are what the Events API saw of it", (got.get(PIXEL), expected(log_a)))
tap.ok(counted(got.get(PIXEL_B, {})) == expected(log_b),
       "the second pixel's counters (poisoned events split out and failed) are what the API saw",
       (got.get(PIXEL_B), expected(log_b)))
total = got.get("total", {})
tap.ok(total.get("requests") == mock.stats()["requests"] == len(log_a) + len(log_b)
       and total.get("events_sent") == mock.stats()["events_accepted"] == 167
       and total.get("events_failed") == 3,
       "the total: every request, 167 events sent and 3 failed", (total, mock.stats()))
tap.ok(all(total.get(k) == got[PIXEL][k] + got[PIXEL_B][k]
           for k in ("requests", "events_sent", "events_failed", "events_retried", "throttled", "bytes_sent")),
       "the total row sums the pixels' rows", total)
tap.ok(total.get("throttled", 0) >= 1 and total.get("events_retried", 0) >= 8
       and total.get("answers_by_http_status", {}).get("503", 0) >= 1,
       "throttled requests, retried events and HTTP 503 answers are counted", total)
buckets = total.get("latency_buckets", {})
values = [buckets.get(k) for k in ("50", "100", "200", "500", "1000", "2000", "5000", "+Inf")]
tap.ok(None not in values and values == sorted(values) and values[-1] == total["requests"],
       "latency buckets are cumulative, +Inf holding every request", buckets)
# each of the slow_requests took at least DELAY_MS: none is in the buckets up to 100 ms
tap.ok(values[1] is not None and values[1] <= total["requests"] - slow_requests
       and total.get("request_time_sum_ms", 0) >= slow_requests * DELAY_MS,
       f"the {slow_requests} requests answered after {DELAY_MS} ms are timed so", (buckets, total))
tap.ok(psql("SELECT count(*) FROM tiktok_capi.delivery_stats WHERE last_request_at IS NULL "
            "OR last_success_at IS NULL OR last_request_at > now() OR stats_reset > last_request_at") == "0",
       "last_request_at and last_success_at are set, after stats_reset")
tap.diag("total: " + json.dumps({k: total.get(k) for k in ("requests", "events_sent", "events_failed",
                                                           "events_retried", "throttled", "answers_by_code",
                                                           "answers_by_http_status", "latency_buckets")}))

# 3. another database with the extension sees its own counters only, and its reset
#    leaves ours alone
psql("CREATE DATABASE other_shop")
psql("CREATE EXTENSION tiktok_capi", db="other_shop")
other = stats("other_shop")
tap.ok(list(other) == ["total"] and other["total"]["requests"] == 0,
       "another database's view shows its own total only, at zero", other)
psql("SELECT tiktok_capi.tt_stats_reset()", db="other_shop")
tap.ok(stats() == got, "a reset in another database leaves this one's counters")

# 4. kill -TERM of the worker: the launcher starts another, the counters stay and go on
pid = worker_pid()
os.kill(pid, signal.SIGTERM)
tap.ok(wait_until(lambda: worker_pid() not in (None, pid), 60), "the launcher starts a new worker")
tap.ok(stats() == got, "the counters survive the worker's restart", stats())
before = mock.stats()["requests"]
enqueue(20, prefix="n")
tap.ok(wait_until(lambda: drained(190), 60), "the new worker delivers 20 more events")
time.sleep(0.3)
after = stats()
tap.ok(after["total"]["requests"] == got["total"]["requests"] + mock.stats()["requests"] - before
       and after["total"]["events_sent"] == got["total"]["events_sent"] + 20
       and after[PIXEL]["events_sent"] == got[PIXEL]["events_sent"] + 20,
       "the new worker counts on from where the old one left", (got["total"], after["total"]))
tap.ok(after["total"]["stats_reset"] == got["total"]["stats_reset"], "stats_reset is unchanged")

# 5. tt_stats_reset(): this database's counters from zero, stats_reset now
t0 = psql("SELECT now()")
psql("SELECT tiktok_capi.tt_stats_reset()")
cleared = stats()
tap.ok(list(cleared) == ["total"], "after tt_stats_reset() only the total row is left", list(cleared))
row = cleared["total"]
tap.ok(row["requests"] == 0 and row["events_sent"] == 0 and row["bytes_sent"] == 0
       and row["answers_by_code"] == {} and row["latency_buckets"]["+Inf"] == 0
       and row["last_request_at"] is None,
       "its counters are zero", row)
tap.ok(psql(f"SELECT stats_reset >= '{t0}' FROM tiktok_capi.delivery_stats") == "t",
       "stats_reset is the time of the reset", (t0, row["stats_reset"]))
enqueue(5, prefix="r")
tap.ok(wait_until(lambda: drained(195) and stats().get(PIXEL, {}).get("events_sent") == 5, 30),
       "counting starts again from zero", stats())

# 6. a clean restart of the server: the counters are written at shutdown and read back
kept = stats()
subprocess.run(["pg_ctlcluster", os.environ["PGVERSION"], "regress", "restart", "-m", "fast"],
               check=True, capture_output=True, timeout=120)
tap.ok(wait_until(lambda: stats() == kept, 30), "a clean restart keeps the counters and stats_reset",
       (kept, wait_until(stats, 10)))
tap.ok(wait_until(worker_pid, 30), "a worker runs after the restart")

# 7. kill -9 of the worker: the postmaster reinitialises shared memory, and the counters
#    start from zero (the README says so)
pid = worker_pid()
t0 = psql("SELECT now()")
os.kill(pid, signal.SIGKILL)
tap.ok(wait_until(lambda: worker_pid() not in (None, pid), 60), "after kill -9 a new worker runs")
crashed = wait_until(stats, 30) or {}
tap.ok(list(crashed) == ["total"] and crashed["total"]["requests"] == 0
       and psql(f"SELECT stats_reset > '{t0}' FROM tiktok_capi.delivery_stats") == "t",
       "a crash restart starts the counters from zero, stats_reset then", crashed)
no_crash(tap, allowed_kills=1)
mock.stop()
tap.done()
