"""delivery_stats has room for 512 rows across all databases (32 kept for
databases' totals): a shop with more pixels than that still has every
request in its total, and what the pixels' rows miss shows as the row
"(other)", so the rows always add up to the total.  tt_stats_reset()
frees the room."""
import json

from harness import Mock, Tap, configure, drained, install, psql, wait_until

N = 520
ROOM = 512 - 32 - 1     # entries a pixel may take, less this database's total
tap = Tap(7)
mock = Mock()
configure(mock, batch_size=10)
install()
psql(f"SELECT count(tiktok_capi.tt_add_pixel('CP' || lpad(g::text, 4, '0'), 'token'))"
     f"  FROM generate_series(1, {N}) g")
psql(f"""SELECT count(tiktok_capi.tt_enqueue('CP' || lpad(g::text, 4, '0'),
             tiktok_capi.tt_event('Purchase', 'o' || g, email => 'u' || g || '@example.com',
                                  value => 1, currency => 'EUR')))
           FROM generate_series(1, {N}) g""")
tap.ok(wait_until(lambda: drained(N), 120), f"{N} events of {N} pixels settle")


def rows():
    out = psql("SELECT coalesce(pixel_code, 'total'), row_to_json(d) FROM tiktok_capi.delivery_stats d")
    return {code: json.loads(row) for code, row in (line.split("|", 1) for line in out.splitlines())}


got = rows()
pixels = [c for c in got if c not in ("total", "(other)")]
tap.ok(len(pixels) == ROOM, f"{ROOM} pixels have a row of their own", len(pixels))
tap.ok(got.get("total", {}).get("requests") == N == mock.stats()["requests"]
       and got["total"]["events_sent"] == N, "the total has every request and event", got.get("total"))
other = got.get("(other)", {})
tap.ok(other.get("requests") == N - ROOM and other.get("events_sent") == N - ROOM
       and other.get("answers_by_code") == {"0": N - ROOM},
       f"the row (other) has the {N - ROOM} requests of the pixels without a row", other)
tap.ok(all(sum(r[k] for c, r in got.items() if c != "total") == got["total"][k]
           for k in ("requests", "events_sent", "bytes_sent")),
       "the rows add up to the total")
tap.ok(list(got) == sorted(pixels) + ["(other)", "total"],
       "the rows come in the order of the pixel codes, then (other), then the total", list(got)[-3:])
psql("SELECT tiktok_capi.tt_stats_reset()")
tap.ok(list(rows()) == ["total"], "tt_stats_reset() frees the room: only the total is left")
mock.stop()
tap.done()
