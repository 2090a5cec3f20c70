#!/usr/bin/env bash
# `make demo`: tiktok_capi doing its job end to end, in a throw-away cluster.
#
# Starts PostgreSQL with the extension preloaded, the bundled mock Events
# API on 127.0.0.1 (or, when TIKTOK_ACCESS_TOKEN and TIKTOK_PIXEL_CODE are
# set, TikTok's real API, with TIKTOK_TEST_EVENT_CODE if given), creates an
# example orders table with the capture trigger, inserts a few hundred
# orders, shows the worker delivering them, and prints what arrived.
set -euo pipefail
cd "$(dirname "$0")/.."

ORDERS=${ORDERS:-300}

if [ "${1:-}" != inside ]; then
	PGVER=$(pg_config --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
	exec pg_virtualenv -t -v "$PGVER" -o shared_preload_libraries=tiktok_capi \
		bash "$0" inside
fi

q() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }

if [ -n "${TIKTOK_ACCESS_TOKEN:-}" ] && [ -n "${TIKTOK_PIXEL_CODE:-}" ]; then
	echo "== Sending to TikTok's Events API, pixel $TIKTOK_PIXEL_CODE"
	PIXEL=$TIKTOK_PIXEL_CODE
	TOKEN=$TIKTOK_ACCESS_TOKEN
	TEST_CODE=${TIKTOK_TEST_EVENT_CODE:-}
	MOCK_PID=
else
	echo "== Starting the mock Events API on 127.0.0.1"
	PIXEL=CDEMOPIXEL0001
	TOKEN=demo-token
	TEST_CODE=TEST12345
	portfile=$(mktemp -u)
	python3 test/mock/events_api.py --port-file "$portfile" --quiet &
	MOCK_PID=$!
	trap 'kill $MOCK_PID 2>/dev/null || true' EXIT
	for _ in $(seq 100); do [ -s "$portfile" ] && break; sleep 0.05; done
	MOCK=http://127.0.0.1:$(cat "$portfile")
	q -c "ALTER SYSTEM SET tiktok_capi.api_url = '$MOCK/open_api/v1.3/event/track/'" \
	  -c "SELECT pg_reload_conf()" >/dev/null
fi

echo "== CREATE EXTENSION tiktok_capi; a pixel; an orders table with the trigger"
q -v pixel="$PIXEL" -v token="$TOKEN" -v test_code="$TEST_CODE" <<'SQL'
CREATE EXTENSION tiktok_capi;
SELECT tiktok_capi.tt_add_pixel(:'pixel', :'token', nullif(:'test_code', '')) \gset
CREATE TABLE orders (
    id         bigserial PRIMARY KEY,
    email      text,
    phone      text,
    total      numeric(12,2) NOT NULL,
    currency   text NOT NULL DEFAULT 'USD',
    ttclid     text,
    ip         inet,
    user_agent text,
    created_at timestamptz NOT NULL DEFAULT now()
);
SELECT tiktok_capi.tt_attach('orders', 'Purchase') AS "trigger created";
-- the shop's phone numbers are national (US) numbers
ALTER DATABASE postgres SET tiktok_capi.default_country = 'US';
SQL

echo "== Inserting $ORDERS orders, 10 per transaction, while the worker delivers"
for ((i = 0; i < ORDERS; i += 10)); do
	q -c "INSERT INTO orders (email, phone, total, currency, ttclid, ip, user_agent)
	      SELECT ' Buyer' || g || '@Example.com ', '(415) 555-' || lpad(g::text, 4, '0'),
	             round((random() * 200 + 5)::numeric, 2), (ARRAY['USD','EUR','GBP'])[1 + g % 3],
	             'E.C.P.demo' || g, ('203.0.113.' || (g % 250 + 1))::inet, 'Mozilla/5.0 (demo)'
	        FROM generate_series($i + 1, $i + 10) g" >/dev/null
	if ((i % 50 == 0)); then
		q -At -c "SELECT format('   queued %s, sent %s, pending %s',
		                 count(*), count(*) FILTER (WHERE status = 'sent'),
		                 count(*) FILTER (WHERE status IN ('pending', 'sending')))
		            FROM tiktok_capi.outbox"
	fi
done

for _ in $(seq 100); do
	left=$(q -At -c "SELECT count(*) FROM tiktok_capi.outbox WHERE status IN ('pending', 'sending')")
	[ "$left" = 0 ] && break
	sleep 0.1
done

echo "== One event as it was sent (identifiers hashed in the database)"
q -c "SELECT jsonb_pretty(payload) AS payload FROM tiktok_capi.outbox ORDER BY id LIMIT 1"
echo "== tiktok_capi.outbox_status"
q -c "SELECT status, events, lag FROM tiktok_capi.outbox_status"
echo "== tiktok_capi.outbox_pixel_status"
q -x -c "SELECT * FROM tiktok_capi.outbox_pixel_status"
if [ -n "$MOCK_PID" ]; then
	echo "== What the mock Events API received"
	python3 - "$MOCK" <<'PY'
import json, sys, urllib.request
s = json.load(urllib.request.urlopen(sys.argv[1] + "/_mock/stats"))
print(f"   {s['accepted_requests']} requests accepted, {s['events_accepted']} events, "
      f"{s['unique_keys']} distinct (pixel, event, event_id), largest batch {s['max_batch']}, "
      f"test_event_code {s['test_event_codes']}")
PY
fi
