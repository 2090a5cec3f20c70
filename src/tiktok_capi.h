/*-------------------------------------------------------------------------
 *
 * tiktok_capi.h
 *	  What the PostgreSQL-side stages of tiktok_capi share, in sections
 *	  named for the file that owns each symbol, in the order the data
 *	  flows: normalize -> event -> capture -> outbox -> wake <- worker.
 *	  The capture and the worker have private headers of their own
 *	  (capture.h, worker.h); the pure-C parts have normalize.h, policy.h,
 *	  and the transport http.h.
 *
 * Vocabulary, used the same way in code, SQL, logs and docs:
 *	- event: one element of the Events API request's data[] array, a jsonb
 *	  object built by tt_build_event (and so by tt_event()).
 *	- identifier: a customer's email, phone, external id, first name, last
 *	  name or zip code; it leaves the builder hashed, never raw.  City,
 *	  state and country are match keys sent plain.
 *	- lenient build: the one the order trigger uses; bad customer data is
 *	  dropped with a WARNING instead of aborting the order.  A strict one
 *	  (a direct call) makes it an ERROR; see tt_problem() in util.c.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TIKTOK_CAPI_H
#define TIKTOK_CAPI_H

#include "datatype/timestamp.h"
#include "executor/spi.h"
#include "nodes/pg_list.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#include "normalize.h"

/*
 * The advisory lock key (pg_advisory_xact_lock(bigint)) the worker holds
 * shared from its claim until its requests are done; tt_forget() takes it
 * exclusively (see the 0.1.0--0.2.0 script).  The bytes spell "tiktok"+1.
 */
#define TT_SENDING_LOCK INT64CONST(0x74696b746f6b0001)

/* in settings.c: every tiktok_capi.* setting (see the README's table) */

/* tiktok_capi.consent_denied: what is queued for an order without consent */
typedef enum ConsentDenied
{
	CONSENT_DENIED_ANONYMOUS,
	CONSENT_DENIED_SKIP
} ConsentDenied;

/* tiktok_capi.consent_unknown: how unknown consent is taken */
typedef enum ConsentUnknown
{
	CONSENT_UNKNOWN_DENIED,
	CONSENT_UNKNOWN_GRANTED
} ConsentUnknown;

extern char *tt_default_country;
extern struct pg_tz *tt_naive_tz;
extern int	tt_consent_denied;
extern int	tt_consent_unknown;
extern char *tt_database;

/*
 * Most databases tiktok_capi.database may list: each has a slot in the
 * shared memory of wake.c, and a worker (so also a background worker slot).
 */
#define TT_MAX_DATABASES 256

extern List *tt_database_list(void);
extern char *tt_api_url;
extern int	tt_batch_size;
extern int	tt_max_in_flight;
extern int	tt_poll_interval_ms;
extern int	tt_http_timeout_ms;
extern int	tt_max_attempts;
extern int	tt_retention_s;
extern int	tt_keep_keys_s;
extern bool tt_enabled;
extern int	tt_retry_delay_ms;
extern int	tt_retry_delay_max_ms;
extern int	tt_backfill_max_age_s;
extern char *tt_proxy;
extern char *tt_no_proxy;
extern char *tt_ca_file;

/* in log_redact.c */
extern void tt_log_redact_init(void);

/* in util.c */
extern char *tt_vpsprintf(const char *fmt, va_list args) pg_attribute_printf(1, 0);
extern void tt_problem(List **notes, int sqlstate, const char *hint,
					   const char *fmt,...) pg_attribute_printf(4, 5);
extern bool tt_is_blank(const char *s);
extern bool tt_outbox_is_current(void);
extern SPIPlanPtr tt_prepare_once(SPIPlanPtr *plan, const char *sql,
								  int nargs, Oid *argtypes, int cursor_options);
extern Datum tt_array_datum(Datum *elems, int n, Oid elemtype);
extern Datum tt_text_array(List *strings, char *null);

/* in normalize_sql.c */
extern const TTCountry *tt_country_or_default(const char *iso);

/* in event_rules.c */

/*
 * What an event's configured id is (event_source): each source takes its
 * own fields (web: page, ttclid, ttp; crm: lead), and the offline and CRM
 * ones none of the browser's.
 */
typedef enum TTEventSource
{
	TT_SOURCE_WEB = 0,
	TT_SOURCE_APP,
	TT_SOURCE_OFFLINE,
	TT_SOURCE_CRM
} TTEventSource;

/*
 * The longest event_id sent, in bytes.  TikTok publishes no limit; order
 * ids are short, and the outbox's unique index holds at most about 2,700.
 */
#define TT_MAX_EVENT_ID_LEN 500

/* The hint of every problem with text that is not UTF-8 */
#define TT_UTF8_HINT \
	"A SQL_ASCII database keeps text as bytes, and TikTok takes UTF-8 only: store the text as UTF-8."

extern bool tt_sendable_text(const char *s, size_t len);
extern const char *tt_json_problem(JsonbValue *v, int *sqlstate);
extern const char *tt_hint_for(int sqlstate, const char *otherwise);
extern const char *tt_event_id_problem(const char *event_id, int *sqlstate);
extern bool tt_check_event_name(const char *name, List **notes);
extern const char *tt_checked_currency(const char *in, List **notes);
extern Numeric tt_minor_to_major(Numeric minor, const char *currency);
extern bool tt_checked_value(Numeric value, const char *what, List **notes);
extern int64 tt_unix_seconds(TimestampTz t, List **notes);
extern const char *tt_event_source_name(TTEventSource source);
extern bool tt_event_source_from_name(const char *name, TTEventSource *source);
extern bool tt_is_standard_event_name(const char *name);
extern Numeric tt_numeric_from_string(const char *s, int len);

/* in event_contents.c */
/* An item field of contents[] and the keys it is read from */
typedef struct TTItemField
{
	const char *name;
	const char *keys[5];
} TTItemField;
extern const TTItemField tt_item_fields[];
extern const int tt_n_item_fields;
extern Jsonb *tt_checked_contents(Jsonb *contents, const char *currency,
								  List **notes);

/* in event.c */

/* The raw inputs of one event; NULL (or has_* false) means absent */
typedef struct TTEventInput
{
	const char *event;
	const char *event_id;
	bool		has_event_time;
	TimestampTz event_time;
	/* user */
	const char *email;
	const char *phone;
	const char *external_id;
	const char *ttclid;
	const char *ttp;
	const char *ip;
	const char *user_agent;
	const char *locale;
	/* properties */
	Numeric		value;
	bool		value_minor;	/* value is in the currency's minor unit */
	const char *currency;
	Jsonb	   *contents;
	const char *content_type;
	const char *order_id;
	const char *description;
	const char *search_string;
	Jsonb	   *properties;
	/* page */
	const char *page_url;
	const char *referrer;
	/* top level */
	bool		has_limited_data_use;
	bool		limited_data_use;
	/* for national phone numbers; NULL: none */
	const TTCountry *country;
	/* more match keys in user: hashed names and zip code, plain places */
	const char *first_name;
	const char *last_name;
	const char *zip_code;
	const char *city;
	const char *state;
	const char *user_country;	/* user.country, an ISO 3166 alpha-2 code */
	/* the event source's rules, and what only some sources take */
	TTEventSource source;
	const char *lead_id;		/* crm: lead.lead_id, required */
	const char *lead_event_source;	/* crm: lead.lead_event_source */
	const char *shop_id;		/* properties.shop_id (offline's store) */
} TTEventInput;

extern Jsonb *tt_build_event(const TTEventInput *in, List **notes);

/* in event_rules.c, over a whole input */
extern const char *tt_event_source_problem(const TTEventInput *in);

/* in capture.c (the rest of capture shares capture.h) */
extern void tt_capture_init(void);

/* in outbox.c */

/* One captured order's event, to queue under its key */
typedef struct TTQueueItem
{
	const char *pixel_code;
	const char *event;
	const char *event_id;
	const char *source;			/* the capturing table, schema-qualified */
	TimestampTz event_time;
	Jsonb	   *payload;		/* NULL (and not failed): withdraw the pending event */
	List	   *warnings;		/* the builder's notes, char * */
	const char *failed_reason;	/* set: queued as failed, with the payload {} */
	bool		only_new;		/* a backfill: write a new key, never touch one */
} TTQueueItem;

/* What tt_outbox_queue() did */
typedef enum TTQueued
{
	TT_QUEUED_NEW,
	TT_QUEUED_REBUILT,
	TT_QUEUED_UNCHANGED,		/* settled, or pending and already so */
	TT_QUEUED_WITHDRAWN,
	TT_QUEUED_COLLISION			/* another table's key: a failed row */
} TTQueued;

extern TTQueued tt_outbox_queue(const TTQueueItem *item);
extern bool tt_outbox_settled(const char *pixel_code, const char *event,
							  const char *event_id);
extern bool tt_outbox_known(const char *pixel_code, const char *event,
							const char *event_id);
extern char *tt_default_pixel(const char **why);
extern bool tt_pixel_exists(const char *pixel_code);
extern bool tt_pixel_source(const char *pixel_code, TTEventSource *source,
							bool *enabled);
extern char *tt_pixel_for_call(const char *named);

/* in wake.c */
extern void tt_wake_init(void);
extern void tt_wake_worker_at_commit(void);
extern void tt_wake_worker(void);
extern bool tt_publish_worker_latch(void);
extern void tt_publish_url_pause(const char *url, const char *reason,
								 TimestampTz since, TimestampTz retry_at);
extern void tt_publish_worker_shortage(Oid database, bool shortage,
									   int listed, int started);
extern void tt_forget_earlier_launcher(void);

/* in stats.c */

/* What one request did, for the delivery counters (or events settled alone) */
typedef struct TTRequestOutcome
{
	bool		is_request;		/* false: only the events_* below */
	int			events_sent;
	int			events_failed;
	int			events_retried;
	bool		throttled;		/* a throttling code (40100 and kin) */
	bool		succeeded;		/* accepted */
	const char *transport_error;	/* NULL when an HTTP answer came */
	long		http_status;
	bool		has_code;		/* the body had TikTok's code */
	long		code;
	int64		bytes_sent;
	double		elapsed_ms;
	TimestampTz at;
} TTRequestOutcome;

extern void tt_stats_init(void);
extern void tt_stats_count(const char *pixel_code, const TTRequestOutcome *outcome);

/* in launcher.c (the worker shares worker.h) */
extern void tt_launcher_init(void);

#endif							/* TIKTOK_CAPI_H */
