/*-------------------------------------------------------------------------
 *
 * settings.c
 *	  Entry point of the tiktok_capi library, _PG_init, and every
 *	  tiktok_capi.* setting with its check hook: the country of national
 *	  phone numbers, consent, the delivery worker and its way out (proxy,
 *	  CAs), and the thresholds of tt_health(), which tt_health_thresholds()
 *	  reports.
 *
 * The library works both from shared_preload_libraries (where the
 * launcher of the delivery worker is registered) and loaded on first use
 * of one of its SQL functions (then nothing is delivered).  The settings'
 * variables are defined here, and each stage reads the ones it needs;
 * the README's table lists them all.
 *
 * tt_health() itself is SQL (see the install scripts); it asks for the
 * thresholds through tt_health_thresholds(), which also makes sure this
 * library, and so these settings, are loaded in the calling session.
 * They are USERSET: a monitoring query may pass its own.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "access/htup_details.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgtime.h"
#include "utils/guc.h"
#include "utils/varlena.h"

#include "policy.h"
#include "tiktok_capi.h"

PG_MODULE_MAGIC;

PG_FUNCTION_INFO_V1(tt_health_thresholds_sql);
PG_FUNCTION_INFO_V1(tt_health_thresholds);
PG_FUNCTION_INFO_V1(tt_listed_databases_sql);

#define TT_DEFAULT_API_URL "https://business-api.tiktok.com/open_api/v1.3/event/track/"

/* tiktok_capi.default_country: ISO 3166 alpha-2, or '' for none */
char	   *tt_default_country = NULL;

/* tiktok_capi.naive_timestamp_zone, and the zone it names (NULL: UTC) */
char	   *tt_naive_timestamp_zone = NULL;
pg_tz	   *tt_naive_tz = NULL;

/* Consent: superuser-only, so the application role cannot loosen them */
int			tt_consent_denied = CONSENT_DENIED_ANONYMOUS;
int			tt_consent_unknown = CONSENT_UNKNOWN_DENIED;

/* The worker's.  All but enabled steer the worker only. */
char	   *tt_database = NULL;
char	   *tt_api_url = NULL;
int			tt_batch_size = 1000;
int			tt_max_in_flight = 16;
int			tt_poll_interval_ms = 10000;
int			tt_http_timeout_ms = 30000;
int			tt_max_attempts = 100;
int			tt_retention_s = 7 * 24 * 3600;
int			tt_keep_keys_s = 400 * 24 * 3600;
bool		tt_enabled = true;
int			tt_retry_delay_ms = 1000;
int			tt_retry_delay_max_ms = 300000;
int			tt_backfill_max_age_s = 7 * 24 * 3600;

/* The worker's way out: a proxy, hosts it skips, CAs it trusts besides */
char	   *tt_proxy = NULL;
char	   *tt_no_proxy = NULL;
char	   *tt_ca_file = NULL;

/* tt_health()'s thresholds; only tt_health_thresholds() reads them */
static int	lag_warn_s = 300;
static int	lag_critical_s = 3600;
static double failure_warn_pct = 1.0;
static double failure_critical_pct = 10.0;
static double warnings_warn_pct = 5.0;
static double warnings_critical_pct = 25.0;
static int	outbox_warn_kb = 2 * 1024 * 1024;
static int	outbox_critical_kb = 8 * 1024 * 1024;

static const struct config_enum_entry consent_denied_options[] = {
	{"anonymous", CONSENT_DENIED_ANONYMOUS, false},
	{"skip", CONSENT_DENIED_SKIP, false},
	{NULL, 0, false}
};

static const struct config_enum_entry consent_unknown_options[] = {
	{"denied", CONSENT_UNKNOWN_DENIED, false},
	{"granted", CONSENT_UNKNOWN_GRANTED, false},
	{NULL, 0, false}
};

void		_PG_init(void);

static void define_country_setting(void);
static bool check_default_country(char **newval, void **extra, GucSource source);
static bool check_naive_timestamp_zone(char **newval, void **extra, GucSource source);
static void assign_naive_timestamp_zone(const char *newval, void *extra);
static void define_consent_settings(void);
static void define_worker_settings(void);
static bool check_api_url(char **newval, void **extra, GucSource source);
static bool check_database(char **newval, void **extra, GucSource source);
static void define_egress_settings(void);
static bool check_proxy(char **newval, void **extra, GucSource source);
static const char *show_proxy(void);
static bool check_ca_file(char **newval, void **extra, GucSource source);
static void define_health_settings(void);

/*
 * Register every setting, the callbacks of capture and of the wake-up at
 * commit, and when preloaded, the shared memory (the worker's latch, the
 * delivery counters) and the launcher; once
 * per process.
 */
void
_PG_init(void)
{
	/* first: a refused proxy URL from the configuration is logged at once */
	tt_log_redact_init();
	define_country_setting();
	define_consent_settings();
	tt_capture_init();
	tt_wake_init();
	tt_stats_init();
	define_worker_settings();
	define_egress_settings();
	tt_launcher_init();
	define_health_settings();
	MarkGUCPrefixReserved("tiktok_capi");
}

/* tiktok_capi.default_country, for national phone numbers */
static void
define_country_setting(void)
{
	DefineCustomStringVariable("tiktok_capi.default_country",
							   "Country of phone numbers stored without a country code.",
							   "ISO 3166 alpha-2 code such as US or GB; empty for none. "
							   "National numbers need it to become E.164.",
							   &tt_default_country,
							   "",
							   PGC_USERSET,
							   0,
							   check_default_country, NULL, NULL);
	DefineCustomStringVariable("tiktok_capi.naive_timestamp_zone",
							   "Time zone of order times kept as timestamp without time zone.",
							   "UTC by default, whatever the session's TimeZone: a naive time "
							   "is most often UTC (Rails, Django). A shop that stores local "
							   "times names its zone, such as Europe/Berlin.",
							   &tt_naive_timestamp_zone,
							   "UTC",
							   PGC_USERSET,
							   0,
							   check_naive_timestamp_zone, assign_naive_timestamp_zone, NULL);
}

/* A zone PostgreSQL knows, checked when set; UTC needs no lookup */
static bool
check_naive_timestamp_zone(char **newval, void **extra, GucSource source)
{
	pg_tz	   *tz;

	if (*newval == NULL || pg_strcasecmp(*newval, "UTC") == 0)
		return true;
	tz = pg_tzset(*newval);
	if (tz == NULL || !pg_tz_acceptable(tz))
	{
		GUC_check_errdetail("\"%s\" is not a time zone name PostgreSQL knows.", *newval);
		return false;
	}
	/* the setting's extra is malloc'd: PostgreSQL frees it */
	*extra = malloc(sizeof(pg_tz *));
	if (*extra == NULL)
		return false;
	*((pg_tz **) *extra) = tz;
	return true;
}

/* The zone the capture reads naive timestamps in */
static void
assign_naive_timestamp_zone(const char *newval, void *extra)
{
	tt_naive_tz = extra != NULL ? *((pg_tz **) extra) : NULL;
}

/* Refuse a country the table does not know, when it is set, not when used */
static bool
check_default_country(char **newval, void **extra, GucSource source)
{
	if (*newval == NULL || (*newval)[0] == '\0')
		return true;
	if (tt_country_lookup(*newval, strlen(*newval)) == NULL)
	{
		GUC_check_errdetail("\"%s\" is not an ISO 3166 alpha-2 country code.",
							*newval);
		return false;
	}
	return true;
}

/*
 * The consent settings.  They are superuser-only: the application role,
 * which fires the trigger, must not loosen them.
 */
static void
define_consent_settings(void)
{
	DefineCustomEnumVariable("tiktok_capi.consent_denied",
							 "What the order trigger queues for an order without consent.",
							 "anonymous: the event without email, phone, external_id, ip, "
							 "user_agent, ttp and ttclid (the conversion is counted, the "
							 "person is not matched); skip: no event.",
							 &tt_consent_denied, CONSENT_DENIED_ANONYMOUS,
							 consent_denied_options,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomEnumVariable("tiktok_capi.consent_unknown",
							 "How the order trigger takes unknown consent (NULL or unrecognised text).",
							 "denied: as no consent; granted: as consent.  A table without a "
							 "consent column is always taken as consent granted.",
							 &tt_consent_unknown, CONSENT_UNKNOWN_DENIED,
							 consent_unknown_options,
							 PGC_SUSET, 0, NULL, NULL, NULL);
}

/*
 * The worker's settings.  They are read by the worker, so they are set in
 * postgresql.conf or with ALTER SYSTEM (PGC_SIGHUP: superuser only) and
 * take effect on reload; a SET in a session could not reach the worker.
 */
static void
define_worker_settings(void)
{
	DefineCustomStringVariable("tiktok_capi.database",
							   "Databases whose outboxes are delivered, one worker each.",
							   "A comma-separated list; a name with a comma or spaces "
							   "in double quotes.",
							   &tt_database, "postgres",
							   PGC_SIGHUP, GUC_LIST_INPUT, check_database, NULL, NULL);
	DefineCustomStringVariable("tiktok_capi.api_url",
							   "Events API track URL events are posted to.",
							   "https is required, except to a loopback host.",
							   &tt_api_url, TT_DEFAULT_API_URL,
							   PGC_SIGHUP, 0, check_api_url, NULL, NULL);
	DefineCustomIntVariable("tiktok_capi.batch_size",
							"Most events in one request.",
							"TikTok takes 1 to 1000.",
							&tt_batch_size, 1000, 1, 1000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("tiktok_capi.max_in_flight",
							"Most Events API requests in flight at once.",
							"Far from TikTok, throughput is requests in flight times "
							"batch_size per round trip. Fewer go out while TikTok "
							"throttles.",
							&tt_max_in_flight, 16, 1, 256,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("tiktok_capi.poll_interval",
							"Longest the worker sleeps between looks at the outbox.",
							"Commits wake it at once; this is the fallback.",
							&tt_poll_interval_ms, 10000, 10, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("tiktok_capi.http_timeout",
							"Longest wait for one Events API request.",
							NULL, &tt_http_timeout_ms, 30000, 100, 600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("tiktok_capi.max_attempts",
							"Attempts after which an event that keeps meeting errors is failed.",
							"Events are also failed once their first attempt is 47 hours old.",
							&tt_max_attempts, 100, 1, 100000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("tiktok_capi.retention",
							"How long sent events keep their payload.",
							"Then the worker drops the payload and keeps the key (status kept), so "
							"the order is never sent again; -1 keeps payloads forever.",
							&tt_retention_s, 7 * 24 * 3600, -1, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("tiktok_capi.keep_keys",
							"How long the keys of sent events are kept after their payload went.",
							"Within it, a change to an order already sent queues nothing; -1 keeps "
							"them forever.  Erased keys are always kept.",
							&tt_keep_keys_s, 400 * 24 * 3600, -1, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomBoolVariable("tiktok_capi.enabled",
							 "Whether the worker delivers events.",
							 "Off stops the worker; events keep being queued.",
							 &tt_enabled, true,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("tiktok_capi.retry_delay",
							"First retry's longest wait; each retry doubles it.",
							NULL, &tt_retry_delay_ms, 1000, 1, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("tiktok_capi.retry_delay_max",
							"Cap on the wait between retries.",
							NULL, &tt_retry_delay_max_ms, 300000, 1, 24 * 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("tiktok_capi.backfill_max_age",
							"Oldest order tt_backfill queues, by its event_time.",
							"TikTok publishes no limit for web events (28 days is reported "
							"for offline ones); older rows are counted and skipped, not sent "
							"to be rejected.",
							&tt_backfill_max_age_s, 7 * 24 * 3600, 60, 400 * 24 * 3600,
							PGC_USERSET, GUC_UNIT_S, NULL, NULL, NULL);
}

/* Refuse an api_url that would send events in the clear to another host */
static bool
check_api_url(char **newval, void **extra, GucSource source)
{
	const char *why;

	if (tt_url_allowed(*newval, &why))
		return true;
	GUC_check_errdetail("%s", why);
	return false;
}

/*
 * Split a list of databases as tiktok_capi.database spells it: names
 * separated by commas, a name with a comma or spaces in double quotes,
 * kept as written (not lowercased: a database name is matched exactly).
 * Returns NIL, with *problem set, when the list cannot be read.
 */
static List *
split_database_list(const char *value, const char **problem)
{
	char	   *copy = pstrdup(value);
	List	   *names = NIL;
	ListCell   *lc;

	*problem = NULL;
	if (!SplitGUCList(copy, ',', &names))
		*problem = "The list is not valid: a name with a comma or spaces goes in double quotes.";
	else if (names == NIL)
		*problem = "The list is empty: name at least one database.";
	else if (list_length(names) > TT_MAX_DATABASES)
		*problem = psprintf("It lists %d databases; at most %d can be delivered.",
							list_length(names), TT_MAX_DATABASES);
	else
	{
		foreach(lc, names)
		{
			char	   *name = lfirst(lc);

			if (name[0] == '\0')
				*problem = "A name in the list is empty.";
			else if (strlen(name) >= NAMEDATALEN)
				*problem = psprintf("The name \"%s\" is longer than a database name can be.", name);
			else
			{
				for (ListCell *earlier = list_head(names); lfirst(earlier) != name;
					 earlier = lnext(names, earlier))
					if (strcmp(lfirst(earlier), name) == 0)
						*problem = psprintf("The database \"%s\" is listed twice.", name);
			}
			if (*problem)
				break;
		}
	}
	if (*problem)
	{
		list_free(names);
		return NIL;
	}
	return names;
}

/* Refuse a list of databases the launcher could not follow */
static bool
check_database(char **newval, void **extra, GucSource source)
{
	const char *problem;

	(void) split_database_list(*newval, &problem);
	if (problem)
	{
		GUC_check_errdetail("%s", problem);
		return false;
	}
	return true;
}

/*
 * The databases tiktok_capi.database lists, in the order written, palloc'd
 * in the current memory context
 */
List *
tt_database_list(void)
{
	const char *problem;

	/* the check hook let only a readable list in */
	return split_database_list(tt_database, &problem);
}

/*
 * How the worker reaches the API where it may not connect directly: an
 * HTTP proxy, and the CAs of a TLS-inspecting proxy or a private CA.
 * Read by the worker, so PGC_SIGHUP as api_url.  The proxy URL may hold
 * a password: only superusers may read it (GUC_SUPERUSER_ONLY), SHOW
 * hides its password from them too, and the log hook (log_redact.c) hides
 * it in PostgreSQL's own "parameter changed" lines.  TLS verification has
 * no setting: it is always on.
 */
static void
define_egress_settings(void)
{
	DefineCustomStringVariable("tiktok_capi.proxy",
							   "HTTP proxy the worker reaches the Events API through.",
							   "http://[user:password@]host:port or https://..., the port "
							   "always given; empty for "
							   "none (proxy variables of the environment are never used). "
							   "Every request goes through a CONNECT tunnel.",
							   &tt_proxy, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY,
							   check_proxy, NULL, show_proxy);
	DefineCustomStringVariable("tiktok_capi.no_proxy",
							   "Hosts the worker reaches without tiktok_capi.proxy.",
							   "Comma-separated host names, domains and IP addresses, as curl's "
							   "NO_PROXY; * for all.",
							   &tt_no_proxy, "",
							   PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("tiktok_capi.ca_file",
							   "CA certificates (PEM bundle) the worker trusts besides the system's.",
							   "For a TLS-inspecting proxy or a private CA; an absolute path "
							   "readable by the server. Empty for the system's CAs only.",
							   &tt_ca_file, "",
							   PGC_SIGHUP, 0, check_ca_file, NULL, NULL);
}

/* Refuse a proxy that is not http(s); the reason never repeats the URL */
static bool
check_proxy(char **newval, void **extra, GucSource source)
{
	const char *why;

	if (tt_proxy_allowed(*newval, &why))
		return true;
	GUC_check_errdetail("%s", why);
	return false;
}

/* SHOW tiktok_capi.proxy, for the superusers who may: its password hidden */
static const char *
show_proxy(void)
{
	static char shown[1024];

	tt_hide_passwords(tt_proxy ? tt_proxy : "", shown, sizeof(shown));
	return shown;
}

/* A CA file is named by an absolute path: the server's directory is no base */
static bool
check_ca_file(char **newval, void **extra, GucSource source)
{
	if (*newval == NULL || (*newval)[0] == '\0' || is_absolute_path(*newval))
		return true;
	GUC_check_errdetail("tiktok_capi.ca_file must be an absolute path.");
	return false;
}

/* tt_health()'s thresholds, USERSET */
static void
define_health_settings(void)
{
	DefineCustomIntVariable("tiktok_capi.health_lag_warn",
							"Age of the oldest pending event at which tt_health() warns.",
							NULL, &lag_warn_s, 300, 1, INT_MAX,
							PGC_USERSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("tiktok_capi.health_lag_critical",
							"Age of the oldest pending event at which tt_health() is critical.",
							NULL, &lag_critical_s, 3600, 1, INT_MAX,
							PGC_USERSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomRealVariable("tiktok_capi.health_failure_warn",
							 "Percent of the last hour's settled events that failed at which tt_health() warns.",
							 NULL, &failure_warn_pct, 1.0, 0.0, 100.0,
							 PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomRealVariable("tiktok_capi.health_failure_critical",
							 "Percent of the last hour's settled events that failed at which tt_health() is critical.",
							 NULL, &failure_critical_pct, 10.0, 0.0, 100.0,
							 PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomRealVariable("tiktok_capi.health_warnings_warn",
							 "Percent of the last hour's events with warnings at which tt_health() warns.",
							 NULL, &warnings_warn_pct, 5.0, 0.0, 100.0,
							 PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomRealVariable("tiktok_capi.health_warnings_critical",
							 "Percent of the last hour's events with warnings at which tt_health() is critical.",
							 NULL, &warnings_critical_pct, 25.0, 0.0, 100.0,
							 PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("tiktok_capi.health_outbox_warn",
							"Outbox size (table, indexes and TOAST) at which tt_health() warns.",
							NULL, &outbox_warn_kb, 2 * 1024 * 1024, 1, INT_MAX,
							PGC_USERSET, GUC_UNIT_KB, NULL, NULL, NULL);
	DefineCustomIntVariable("tiktok_capi.health_outbox_critical",
							"Outbox size (table, indexes and TOAST) at which tt_health() is critical.",
							NULL, &outbox_critical_kb, 8 * 1024 * 1024, 1, INT_MAX,
							PGC_USERSET, GUC_UNIT_KB, NULL, NULL, NULL);
}

/*
 * The six thresholds as one row: lags in seconds, failure rates in
 * percent, sizes in bytes, so the SQL compares like with like.
 */
Datum
tt_health_thresholds_sql(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[6];
	bool		nulls[6] = {0};

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "tt_health_thresholds must return a row");
	values[0] = Int32GetDatum(lag_warn_s);
	values[1] = Int32GetDatum(lag_critical_s);
	values[2] = Float8GetDatum(failure_warn_pct);
	values[3] = Float8GetDatum(failure_critical_pct);
	values[4] = Int64GetDatum((int64) outbox_warn_kb * 1024);
	values[5] = Int64GetDatum((int64) outbox_critical_kb * 1024);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

/* The name the released 0.1.0--0.2.0 script binds tt_health_thresholds() to */
Datum
tt_health_thresholds(PG_FUNCTION_ARGS)
{
	return tt_health_thresholds_sql(fcinfo);
}

/*
 * tt_listed_databases(): the databases tiktok_capi.database lists, read as
 * the launcher reads them, so tt_health() can tell whether this database
 * is delivered
 */
Datum
tt_listed_databases_sql(PG_FUNCTION_ARGS)
{
	char		null = ' ';
	Datum		names = tt_text_array(tt_database_list(), &null);

	if (null == 'n')
		PG_RETURN_NULL();
	PG_RETURN_DATUM(names);
}
