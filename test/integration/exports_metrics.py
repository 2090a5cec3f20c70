"""docs/postgres_exporter.yaml works as postgres_exporter would use it:
the file parses as its queries format (each metric name -> query, master,
metrics with usage LABEL, COUNTER or GAUGE), and every query runs against
a real server after real deliveries, as a monitoring role given only the
grants the file's header names; each declared column is in the result and
no other, labels are text, counters are numbers, gauges numbers (or NULL,
which the exporter reports as NaN)."""
import json
import os
import re

from harness import PIXEL, Mock, Tap, configure, drained, enqueue, install, psql, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
QUERIES = os.path.join(HERE, "..", "..", "docs", "postgres_exporter.yaml")
USAGES = {"LABEL", "COUNTER", "GAUGE"}


def parse_queries(text):
    """The subset of YAML the queries file is written in (no PyYAML on a fresh machine):
    name:, then query: | (a literal block) or query: "...", master: true|false, metrics:
    and its "- column:" items with usage: and description:.  Anything else is an error."""
    out, query, metric = {}, None, None
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line, n = lines[i], i + 1
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if m := re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*):", line):
            query = out[m[1]] = {}
        elif query is not None and line == "  query: |":
            block = []
            while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
                block.append(lines[i][4:])
                i += 1
            while block and not block[-1]:
                block.pop()
            query["query"] = "\n".join(block) + "\n"
        elif query is not None and (m := re.fullmatch(r'  query: (".*")', line)):
            query["query"] = json.loads(m[1])
        elif query is not None and (m := re.fullmatch(r"  master: (true|false)", line)):
            query["master"] = m[1] == "true"
        elif query is not None and line == "  metrics:":
            query["metrics"] = []
        elif query is not None and "metrics" in query and (m := re.fullmatch(r"    - ([A-Za-z_][A-Za-z0-9_]*):", line)):
            metric = {}
            query["metrics"].append({m[1]: metric})
        elif metric is not None and (m := re.fullmatch(r'        (usage|description): (".*")', line)):
            metric[m[1]] = json.loads(m[2])
        else:
            raise ValueError(f"line {n} is not in the queries format: {line!r}")
    return out


tap = Tap(12)
text = open(QUERIES).read()
queries = parse_queries(text)
tap.ok(len(queries) >= 5 and all(set(q) == {"query", "master", "metrics"} for q in queries.values()),
       "the file parses: each metric has a query, master and metrics", list(queries))
try:
    import yaml  # only to cross-check the small parser where PyYAML happens to be installed
    tap.ok(yaml.safe_load(text) == queries, "PyYAML reads the file the same way")
except ImportError:
    tap.ok(True, "PyYAML reads the file the same way # SKIP PyYAML is not installed")
usages = [(name, col, spec.get("usage")) for name, q in queries.items()
          for m in q["metrics"] for col, spec in m.items()]
tap.ok(all(u in USAGES and queries[name]["metrics"] for name, col, u in usages)
       and all(spec.get("description") for q in queries.values() for m in q["metrics"] for spec in m.values()),
       "every column has a usage (LABEL, COUNTER or GAUGE) and a description",
       [u for u in usages if u[2] not in USAGES])
tap.ok({"tiktok_capi_delivery", "tiktok_capi_health"} <= set(queries),
       "it covers delivery_stats and tt_health", list(queries))

# real deliveries: accepted, and one rejected event, so the maps have rows
mock = Mock()
configure(mock, batch_size=10)
install()
mock.config(poison=["p3"])
enqueue(25, prefix="p")
tap.ok(wait_until(lambda: drained(25), 60), "25 events settle, one rejected")

# the monitoring role gets exactly the grants the file's header names
psql("CREATE ROLE tt_monitoring")
grants = re.findall(r"^#\s+(GRANT .*? TO )monitoring;$", text, re.M)
for g in grants:
    psql(g + "tt_monitoring")
tap.ok(len(grants) == 3, "the header names the grants for the monitoring role", grants)

results = {}
problems = []
for name, q in queries.items():
    out = psql(f"SET ROLE tt_monitoring; SELECT json_agg(row_to_json(r)) FROM ({q['query']}) r", check=False)
    rows = json.loads(out) if out else None
    results[name] = rows
    if not rows:
        problems.append((name, "no rows, or the query failed"))
        continue
    declared = {col: spec["usage"] for m in q["metrics"] for col, spec in m.items()}
    for row in rows:
        if set(row) != set(declared):
            problems.append((name, "columns", sorted(row), sorted(declared)))
            break
        for col, usage in declared.items():
            v = row[col]
            if usage == "LABEL" and not isinstance(v, str):
                problems.append((name, col, "label not text", v))
            elif usage == "COUNTER" and not (isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0):
                problems.append((name, col, "counter not a number", v))
            elif usage == "GAUGE" and not (v is None or isinstance(v, (int, float)) and not isinstance(v, bool)):
                problems.append((name, col, "gauge not a number", v))
tap.ok(not problems, f"all {len(queries)} queries run as the monitoring role; each declared column, "
       "and no other, with labels text, counters and gauges numbers", problems[:5])

delivery = {r["pixel_code"]: r for r in results.get("tiktok_capi_delivery") or []}
tap.ok(delivery.get(PIXEL, {}).get("requests") == mock.stats()["requests"]
       and delivery.get("total", {}).get("events_sent") == 24
       and delivery.get(PIXEL, {}).get("events_failed") == 1,
       "tiktok_capi_delivery: the pixel's and the total's counters", delivery)
codes = {(r["pixel_code"], r["code"]): r["answers"] for r in results.get("tiktok_capi_delivery_answers_by_code") or []}
tap.ok(codes.get((PIXEL, "0"), 0) >= 1 and codes.get((PIXEL, "40002"), 0) >= 1,
       "answers by code: code 0 and 40002 as labels", codes)
statuses = {(r["pixel_code"], r["status"]): r["answers"]
            for r in results.get("tiktok_capi_delivery_answers_by_http_status") or []}
tap.ok(statuses.get((PIXEL, "200")) == mock.stats()["requests"], "answers by HTTP status: 200", statuses)
buckets = {r["le"]: r["requests"] for r in results.get("tiktok_capi_delivery_latency") or []
           if r["pixel_code"] == "total"}
tap.ok(set(buckets) == {"50", "100", "200", "500", "1000", "2000", "5000", "+Inf"}
       and buckets["+Inf"] == mock.stats()["requests"],
       "latency: one series per bucket, le the bound, +Inf every request", buckets)
health = {r["check"]: r for r in results.get("tiktok_capi_health") or []}
tap.ok(health.get("worker", {}).get("severity") == 0 and "lag" in health,
       "tiktok_capi_health: one series per check, the worker ok", health)
mock.stop()
tap.done()
