/*-------------------------------------------------------------------------
 *
 * capture_row.c
 *	  One order row's event: read through its trigger's config
 *	  (capture_mapping.c), built, and queued in the outbox.  capture.c
 *	  calls it at commit, with the row as committed.
 *
 * It never aborts the order.  What it cannot use (an unusable email or
 * currency, a value without currency) is left out of the event and noted
 * in the outbox row's warnings; an event it cannot send at all (no
 * event_id, no pixel, a trigger whose mapping cannot work) is queued as
 * failed with the reason.
 *
 * Consent (capture_consent.c) decides whether the event goes with the
 * customer's identifiers, without them, or not at all.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/datetime.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "capture.h"

/* An over-long event_id is queued under this many of its first characters */
#define SHORTENED_EVENT_ID_CHARS 100

static char *column_cstring(const MappedColumn *c, HeapTuple tup, TupleDesc desc);
static Numeric column_numeric(const MappedColumn *c, HeapTuple tup,
							  TupleDesc desc, List **notes);
static Jsonb *json_to_jsonb(const char *json, List **notes);
static char *shortened_event_id(const char *event_id);
static TimestampTz naive_time(Timestamp t, int *overflow);
static char *column_ttclid(const CaptureConfig *cfg, HeapTuple tup, TupleDesc desc);
static char *field_cstring(const CaptureConfig *cfg, CaptureField f,
						   HeapTuple tup, TupleDesc desc);
static const char *row_pixel(const CaptureConfig *cfg, HeapTuple tup,
							 TupleDesc desc, TTEventSource *source,
							 const char **failed);
static void read_event_input(const CaptureConfig *cfg, HeapTuple tup,
							 TupleDesc desc, TTEventInput *in, List **notes);
static Jsonb *items_contents(CaptureConfig *cfg, HeapTuple tup, TupleDesc desc);
static char *row_key(const CaptureConfig *cfg, HeapTuple tup, CaptureMode mode);
static void warn_once(const CaptureConfig *cfg);

/* A column's value as text, or NULL */
static char *
column_cstring(const MappedColumn *c, HeapTuple tup, TupleDesc desc)
{
	bool		isnull;
	Datum		d;

	if (c->attnum == InvalidAttrNumber)
		return NULL;
	d = heap_getattr(tup, c->attnum, desc, &isnull);
	return isnull ? NULL : OutputFunctionCall((FmgrInfo *) &c->out, d);
}

/* The value column as numeric, or NULL (noted when it is not a number) */
static Numeric
column_numeric(const MappedColumn *c, HeapTuple tup, TupleDesc desc, List **notes)
{
	bool		isnull;
	Datum		d;
	char	   *s;
	Numeric		n;

	if (c->attnum == InvalidAttrNumber)
		return NULL;
	d = heap_getattr(tup, c->attnum, desc, &isnull);
	if (isnull)
		return NULL;
	switch (c->typid)
	{
		case NUMERICOID:
			return DatumGetNumeric(d);
		case INT2OID:
			return int64_to_numeric(DatumGetInt16(d));
		case INT4OID:
			return int64_to_numeric(DatumGetInt32(d));
		case INT8OID:
			return int64_to_numeric(DatumGetInt64(d));
		case FLOAT4OID:
			return DatumGetNumeric(DirectFunctionCall1(float4_numeric, d));
		case FLOAT8OID:
			return DatumGetNumeric(DirectFunctionCall1(float8_numeric, d));
		case CASHOID:
			return DatumGetNumeric(DirectFunctionCall1(cash_numeric, d));
		default:
			s = OutputFunctionCall((FmgrInfo *) &c->out, d);
			n = tt_numeric_from_string(s, strlen(s));
			if (n == NULL)
				*notes = lappend(*notes, psprintf("value \"%.*s\" is not a number",
												  pg_mbcliplen(s, strlen(s), 32), s));
			return n;
	}
}

/*
 * A json column's value as jsonb, or NULL with a note when jsonb cannot
 * hold it (\u0000, a lone surrogate, a number beyond numeric, an escape the
 * server encoding lacks): the order must not fail on it.  PostgreSQL 15
 * has no soft input errors, so jsonb_in runs in a subtransaction, as
 * PL/pgSQL's exception blocks do.  jsonb columns never pay for this.
 */
static Jsonb *
json_to_jsonb(const char *json, List **notes)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	Jsonb	   *volatile result = NULL;

	BeginInternalSubTransaction(NULL);
	/* the result lives in the caller's context, past the subtransaction */
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		result = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(json)));
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
		/* a cancel is not bad data: as in PL/pgSQL, it is not caught */
		if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
			ReThrowError(edata);
		*notes = lappend(*notes, psprintf("contents dropped: not valid as jsonb (%s)",
										  edata->message));
		FreeErrorData(edata);
		result = NULL;
	}
	PG_END_TRY();
	return result;
}

/*
 * An over-long event_id as a failed row keeps it: its first characters,
 * "..." and the SHA-256 hex of the whole id.  It fits the outbox's unique
 * index, and stays unique, so a repeat of the order adds no row.
 */
static char *
shortened_event_id(const char *event_id)
{
	size_t		len = strlen(event_id);
	char		hash[TT_HASH_BUFSIZE];

	tt_sha256_hex(event_id, len, hash);
	return psprintf("%.*s...%s",
					pg_mbcharcliplen(event_id, len, SHORTENED_EVENT_ID_CHARS),
					event_id, hash);
}

/*
 * A timestamp without time zone as the moment it names: in
 * tiktok_capi.naive_timestamp_zone (UTC by default), never in the
 * session's TimeZone, which would move an order's time with whoever
 * wrote it.  overflow: not 0 when the moment has no timestamptz.
 */
static TimestampTz
naive_time(Timestamp t, int *overflow)
{
	struct pg_tm tm;
	fsec_t		fsec;
	int			tz;
	TimestampTz result;

	if (*overflow != 0)
		return 0;
	/* UTC, and the infinities, are the same microseconds in timestamptz */
	if (tt_naive_tz == NULL || TIMESTAMP_NOT_FINITE(t))
		return t;
	if (timestamp2tm(t, NULL, &tm, &fsec, NULL, NULL) != 0)
	{
		*overflow = 1;
		return 0;
	}
	tz = DetermineTimeZoneOffset(&tm, tt_naive_tz);
	if (tm2timestamp(&tm, fsec, &tz, &result) != 0 || !IS_VALID_TIMESTAMP(result))
	{
		*overflow = 1;
		return 0;
	}
	return result;
}

/*
 * The ttclid column's click id: a landing URL (Shopify's landing_site)
 * gives its ttclid parameter through tt_ttclid(), or nothing, never the
 * URL; a bare click id goes as it is.
 */
static char *
column_ttclid(const CaptureConfig *cfg, HeapTuple tup, TupleDesc desc)
{
	char	   *v = column_cstring(&cfg->cols[CF_TTCLID], tup, desc);
	LOCAL_FCINFO(fcinfo, 1);
	Datum		id;

	/* a click id may hold '/' and '=' (E.C.P.Cq0B/x==): a URL has more */
	if (v == NULL || cfg->ttclid_fn.fn_oid == InvalidOid ||
		(strchr(v, '?') == NULL && strchr(v, '#') == NULL && v[0] != '/' &&
		 strstr(v, "://") == NULL && strstr(v, "ttclid=") == NULL))
		return v;
	InitFunctionCallInfoData(*fcinfo, (FmgrInfo *) &cfg->ttclid_fn, 1, InvalidOid,
							 NULL, NULL);
	fcinfo->args[0].value = PointerGetDatum(cstring_to_text(v));
	fcinfo->args[0].isnull = false;
	id = FunctionCallInvoke(fcinfo);
	/* a URL without a click id gives NULL */
	return fcinfo->isnull ? NULL : TextDatumGetCString(id);
}

/*
 * The moment the row's time column names, as timestamptz (a timestamp
 * without time zone or a date read in naive_timestamp_zone).  False when
 * the column is not mapped, NULL, or out of range (noted); tt_backfill
 * reads a row's time this way too, so it filters on the time it sends.
 */
bool
tt_row_event_time(const MappedColumn *c, HeapTuple tup, TupleDesc desc,
				  TimestampTz *event_time, List **notes)
{
	bool		isnull;
	Datum		d;
	int			overflow = 0;

	if (c->attnum == InvalidAttrNumber)
		return false;
	d = heap_getattr(tup, c->attnum, desc, &isnull);
	if (isnull)
		return false;
	/* near their limits, dates and timestamps have no timestamptz */
	if (c->typid == TIMESTAMPOID)
		*event_time = naive_time(DatumGetTimestamp(d), &overflow);
	else if (c->typid == DATEOID)
		*event_time = naive_time(date2timestamp_opt_overflow(DatumGetDateADT(d), &overflow),
								 &overflow);
	else
		*event_time = DatumGetTimestampTz(d);
	if (overflow != 0 && notes != NULL)
		*notes = lappend(*notes,
						 "event_time dropped: out of the range of timestamp with time zone");
	return overflow == 0;
}

/* A field's constant ('HubSpot'), else its column's value as text, or NULL */
static char *
field_cstring(const CaptureConfig *cfg, CaptureField f, HeapTuple tup,
			  TupleDesc desc)
{
	if (cfg->literals[f] != NULL)
		return cfg->literals[f];
	return column_cstring(&cfg->cols[f], tup, desc);
}

/*
 * The pixel a row's event goes to, and its source: the row's own
 * (pixel_from=column), else the trigger's, else the only one.  A row
 * naming no pixel, an unknown one or a disabled one sets *failed with the
 * reason: its event is queued failed, never dropped.  The result is the
 * key's pixel_code (a failed row keeps the code it named when it fits).
 */
static const char *
row_pixel(const CaptureConfig *cfg, HeapTuple tup, TupleDesc desc,
		  TTEventSource *source, const char **failed)
{
	const MappedColumn *from = &cfg->cols[CF_PIXEL_FROM];
	const char *why = NULL;
	char	   *pixel;
	char	   *column;
	bool		enabled;

	*source = TT_SOURCE_WEB;
	/* a fixed pixel's source was read with the trigger's config */
	if (from->attnum == InvalidAttrNumber && cfg->pixel != NULL)
	{
		*source = cfg->pixel_source;
		return cfg->pixel;
	}
	if (from->attnum == InvalidAttrNumber)
	{
		pixel = tt_default_pixel_source(&why, source);
		if (pixel == NULL)
			*failed = why;
		return pixel;
	}
	column = NameStr(TupleDescAttr(desc, from->attnum - 1)->attname);
	pixel = column_cstring(from, tup, desc);
	if (tt_is_blank(pixel))
	{
		*failed = psprintf("the row names no pixel: its pixel_from column \"%s\" is NULL or blank",
						   column);
		return NULL;
	}
	if (!tt_pixel_source(pixel, source, &enabled))
		*failed = psprintf("the row's pixel \"%.*s\" (pixel_from column \"%s\") is not configured: add it with tiktok_capi.tt_add_pixel(), then update the order to queue it again",
						   pg_mbcliplen(pixel, strlen(pixel), 64), pixel, column);
	else if (!enabled)
		*failed = psprintf("the row's pixel \"%s\" (pixel_from column \"%s\") is disabled: enable it with tiktok_capi.tt_update_pixel(), then update the order to queue it again",
						   pixel, column);
	/* the outbox's key holds a configured pixel's code, or what fits one */
	return strlen(pixel) <= 64 ? pixel : NULL;
}

/* Fill the builder's input from an order row */
static void
read_event_input(const CaptureConfig *cfg, HeapTuple tup, TupleDesc desc,
				 TTEventInput *in, List **notes)
{
	const MappedColumn *cols = cfg->cols;
	bool		isnull;
	Datum		d;
	char	   *country;

	in->event = cfg->event;
	in->event_id = column_cstring(&cols[CF_EVENT_ID], tup, desc);
	if (cfg->prefix[0] != '\0' && !tt_is_blank(in->event_id))
		in->event_id = psprintf("%s%s", cfg->prefix, in->event_id);
	in->has_event_time = tt_row_event_time(&cols[CF_EVENT_TIME], tup, desc,
										   &in->event_time, notes);
	in->email = column_cstring(&cols[CF_EMAIL], tup, desc);
	in->phone = column_cstring(&cols[CF_PHONE], tup, desc);
	in->external_id = column_cstring(&cols[CF_EXTERNAL_ID], tup, desc);
	in->ttclid = column_ttclid(cfg, tup, desc);
	in->ttp = column_cstring(&cols[CF_TTP], tup, desc);
	in->ip = column_cstring(&cols[CF_IP], tup, desc);
	in->user_agent = column_cstring(&cols[CF_USER_AGENT], tup, desc);
	in->locale = column_cstring(&cols[CF_LOCALE], tup, desc);
	/* the total comes from one column: value= or value_minor= (cents) */
	in->value_minor = cols[CF_VALUE_MINOR].attnum != InvalidAttrNumber;
	in->value = column_numeric(&cols[in->value_minor ? CF_VALUE_MINOR : CF_VALUE],
							   tup, desc, notes);
	in->currency = column_cstring(&cols[CF_CURRENCY], tup, desc);
	if (cols[CF_CONTENTS].attnum != InvalidAttrNumber)
	{
		d = heap_getattr(tup, cols[CF_CONTENTS].attnum, desc, &isnull);
		if (!isnull && cols[CF_CONTENTS].typid == JSONBOID)
			in->contents = DatumGetJsonbP(d);
		else if (!isnull)
			in->contents = json_to_jsonb(column_cstring(&cols[CF_CONTENTS], tup, desc),
										 notes);
	}
	in->content_type = column_cstring(&cols[CF_CONTENT_TYPE], tup, desc);
	in->order_id = column_cstring(&cols[CF_ORDER_ID], tup, desc);
	in->description = column_cstring(&cols[CF_DESCRIPTION], tup, desc);
	in->search_string = column_cstring(&cols[CF_SEARCH_STRING], tup, desc);
	in->page_url = column_cstring(&cols[CF_PAGE_URL], tup, desc);
	in->referrer = column_cstring(&cols[CF_REFERRER], tup, desc);
	if (cols[CF_LIMITED_DATA_USE].attnum != InvalidAttrNumber)
	{
		d = heap_getattr(tup, cols[CF_LIMITED_DATA_USE].attnum, desc, &isnull);
		in->has_limited_data_use = !isnull;
		in->limited_data_use = !isnull && DatumGetBool(d);
	}
	country = column_cstring(&cols[CF_COUNTRY], tup, desc);
	if (country != NULL && (in->country = tt_country_lookup(country, strlen(country))) == NULL)
		*notes = lappend(*notes, psprintf("country \"%.*s\" is not an ISO 3166 alpha-2 code",
										  pg_mbcliplen(country, strlen(country), 16), country));
	/* the row's country is the person's too; the setting is not */
	if (in->country != NULL)
		in->user_country = in->country->iso;
	if (in->country == NULL)
		in->country = tt_country_or_default(NULL);
	/* more match keys */
	in->first_name = column_cstring(&cols[CF_FIRST_NAME], tup, desc);
	in->last_name = column_cstring(&cols[CF_LAST_NAME], tup, desc);
	in->zip_code = column_cstring(&cols[CF_ZIP_CODE], tup, desc);
	in->city = column_cstring(&cols[CF_CITY], tup, desc);
	in->state = column_cstring(&cols[CF_STATE], tup, desc);
	/* a lead is for CRM events: other sources never read the column */
	if (in->source == TT_SOURCE_CRM)
	{
		in->lead_id = field_cstring(cfg, CF_LEAD_ID, tup, desc);
		in->lead_event_source = field_cstring(cfg, CF_LEAD_EVENT_SOURCE, tup, desc);
	}
	in->shop_id = field_cstring(cfg, CF_SHOP_ID, tup, desc);
}

/* contents[] from the child table's rows for this order, or NULL */
static Jsonb *
items_contents(CaptureConfig *cfg, HeapTuple tup, TupleDesc desc)
{
	const MappedColumn *key = &cfg->cols[CF_ORDER_ID];
	bool		isnull;
	Datum		d = heap_getattr(tup, key->attnum, desc, &isnull);
	Datum		agg;

	if (isnull)
		return NULL;
	if (SPI_execute_plan(cfg->items_plan, &d, NULL, true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		return NULL;
	agg = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? NULL : DatumGetJsonbP(agg);
}

/*
 * The key of an order row without a usable id: its own, naming the row
 * (table, row version and transaction), so it never takes another
 * order's key and nothing vanishes.  A backfill names the transaction
 * that wrote the row, so a second backfill finds the key known.
 */
static char *
row_key(const CaptureConfig *cfg, HeapTuple tup, CaptureMode mode)
{
	return psprintf("%s row (%u,%u) of transaction %u: no event_id", cfg->source,
					ItemPointerGetBlockNumber(&tup->t_self),
					ItemPointerGetOffsetNumber(&tup->t_self),
					mode == CAPTURE_BACKFILL ? HeapTupleHeaderGetRawXmin(tup->t_data) :
					GetTopTransactionId());
}

/* A broken trigger logs one WARNING per backend, at its first order */
static void
warn_once(const CaptureConfig *cfg)
{
	static List *warned = NIL;
	MemoryContext old;

	if (list_member_oid(warned, cfg->tgoid))
		return;
	old = MemoryContextSwitchTo(TopMemoryContext);
	warned = lappend_oid(warned, cfg->tgoid);
	MemoryContextSwitchTo(old);
	ereport(WARNING,
			(errmsg("tiktok_capi: %s", cfg->broken),
			 errdetail("Its orders are queued as failed with this reason; tiktok_capi.tt_health() lists broken triggers.")));
}

/*
 * Build the event of one order row, as committed, and queue it under its
 * key (outbox.c decides between new, rebuilt and settled).  mode
 * CAPTURE_INSERTED: the row was created by this transaction, so its key is
 * most likely new; CAPTURE_UPDATED: the key is looked up first, and an
 * order already converted costs no build; CAPTURE_BACKFILL: a key already
 * in the outbox, whatever its status, is left as it is and costs no build,
 * and only a new key is written (a pending event is never rebuilt from the
 * backfill's older view of the order).  Bad data never fails here: it is
 * left out with a note, or the event is queued as failed with the reason.
 * The caller is connected to SPI.
 */
CaptureOutcome
tt_capture_row(CaptureConfig *cfg, HeapTuple tup, TupleDesc desc, CaptureMode mode)
{
	TTEventInput in = {0};
	TTQueueItem item = {0};
	List	   *notes = NIL;
	const char *failed = cfg->broken;
	const char *why = NULL;
	int			sqlstate;
	const char *pixel;
	const char *pixel_failed = NULL;
	RowConsent	consent = ROW_CONSENT_GRANTED;
	bool		granted = true;
	TTQueued	queued;

	if (failed != NULL)
		warn_once(cfg);
	pixel = row_pixel(cfg, tup, desc, &in.source, &pixel_failed);
	if (failed == NULL)
		failed = pixel_failed;
	read_event_input(cfg, tup, desc, &in, &notes);
	/* an event its source refuses (offline custom name, CRM without lead) */
	if (failed == NULL)
		failed = tt_event_source_problem(&in);

	/* the key: the order's id, or one of the row's own */
	item.event_id = in.event_id;
	if (tt_is_blank(in.event_id))
	{
		item.event_id = row_key(cfg, tup, mode);
		if (failed == NULL)
			failed = psprintf("the row has no event_id (its order id is NULL or blank): %s", item.event_id);
	}
	else if (failed == NULL && (why = tt_event_id_problem(in.event_id, &sqlstate)) != NULL)
		failed = why;
	/* an over-long id (so a failed event) would not fit the key */
	if (strlen(item.event_id) > TT_MAX_EVENT_ID_LEN)
	{
		item.event_id = shortened_event_id(item.event_id);
		failed = psprintf("%s; queued under the event_id's first %d characters, \"...\" and the SHA-256 of the whole id",
						  failed, SHORTENED_EVENT_ID_CHARS);
	}
	item.pixel_code = pixel != NULL ? pixel : "";
	item.event = cfg->event;
	item.source = cfg->source;
	item.event_time = in.has_event_time ? in.event_time : GetCurrentTransactionStartTimestamp();
	item.only_new = mode == CAPTURE_BACKFILL;
	if (mode == CAPTURE_UPDATED && tt_outbox_settled(item.pixel_code, item.event, item.event_id))
		return CAPTURE_KNOWN;
	if (mode == CAPTURE_BACKFILL && tt_outbox_known(item.pixel_code, item.event, item.event_id))
		return CAPTURE_KNOWN;

	/* consent, only when the table has it */
	if (cfg->cols[CF_CONSENT].attnum != InvalidAttrNumber || cfg->consent_unreadable)
	{
		consent = tt_row_consent(cfg, tup, desc, &notes);
		granted = tt_consent_given(consent);
	}
	/* without consent under skip: the pending event goes, nothing comes */
	if (!granted && tt_consent_denied == CONSENT_DENIED_SKIP)
	{
		if (failed == NULL && mode != CAPTURE_BACKFILL)
			(void) tt_outbox_queue(&item);
		return CAPTURE_NOTHING;
	}
	if (!granted)
	{
		tt_withhold_identifiers(&in);
		notes = lappend(notes, consent == ROW_CONSENT_DENIED ?
						"consent denied: identifiers withheld" :
						"consent unknown: identifiers withheld");
	}

	if (failed == NULL)
	{
		if (cfg->items_plan != NULL)
			in.contents = items_contents(cfg, tup, desc);
		item.payload = tt_build_event(&in, &notes);
		item.warnings = notes;
	}
	item.failed_reason = failed;
	queued = tt_outbox_queue(&item);
	if (queued == TT_QUEUED_NEW)
		return failed != NULL ? CAPTURE_QUEUED_FAILED : CAPTURE_QUEUED;
	/* the backfill met an order its trigger queued meanwhile */
	if (mode == CAPTURE_BACKFILL && queued == TT_QUEUED_UNCHANGED)
		return CAPTURE_KNOWN;
	return CAPTURE_NOTHING;
}
