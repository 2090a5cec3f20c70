/*-------------------------------------------------------------------------
 *
 * capture.c
 *	  The order trigger, tt_capture(): it reads the order row through its
 *	  config (capture_mapping.c), builds the event and queues it in the
 *	  outbox, in the order's transaction.
 *
 * The trigger never aborts the order.  What it cannot use (an unknown
 * column, an unusable email or currency) is left out of the event and
 * noted in the outbox row's warnings; an event it cannot send at all (no
 * event_id, no pixel, a misspelled event name) is queued as failed with
 * the reason.  tt_attach() applies the same resolution strictly, so a typo
 * is an error when the trigger is attached, not at the first order.
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
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "capture.h"

PG_FUNCTION_INFO_V1(tt_capture_sql);
PG_FUNCTION_INFO_V1(tt_capture);

/* An over-long event_id is queued under this many of its first characters */
#define SHORTENED_EVENT_ID_CHARS 100

static char *column_cstring(const MappedColumn *c, HeapTuple tup, TupleDesc desc);
static Numeric column_numeric(const MappedColumn *c, HeapTuple tup,
							  TupleDesc desc, List **notes);
static Jsonb *json_to_jsonb(const char *json, List **notes);
static char *shortened_event_id(const char *event_id);
static void read_event_input(const CaptureConfig *cfg, HeapTuple tup,
							 TupleDesc desc, TTEventInput *in, List **notes);
static Jsonb *items_contents(CaptureConfig *cfg, HeapTuple tup, TupleDesc desc);

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
	if (cols[CF_EVENT_TIME].attnum != InvalidAttrNumber)
	{
		d = heap_getattr(tup, cols[CF_EVENT_TIME].attnum, desc, &isnull);
		if (!isnull)
		{
			int			overflow = 0;

			/* near their limits, dates and timestamps have no timestamptz */
			if (cols[CF_EVENT_TIME].typid == TIMESTAMPOID)
				in->event_time = timestamp2timestamptz_opt_overflow(DatumGetTimestamp(d),
																	&overflow);
			else if (cols[CF_EVENT_TIME].typid == DATEOID)
				in->event_time = date2timestamptz_opt_overflow(DatumGetDateADT(d),
															   &overflow);
			else
				in->event_time = DatumGetTimestampTz(d);
			in->has_event_time = overflow == 0;
			if (overflow != 0)
				*notes = lappend(*notes,
								 "event_time dropped: out of the range of timestamp with time zone");
		}
	}
	in->email = column_cstring(&cols[CF_EMAIL], tup, desc);
	in->phone = column_cstring(&cols[CF_PHONE], tup, desc);
	in->external_id = column_cstring(&cols[CF_EXTERNAL_ID], tup, desc);
	in->ttclid = column_cstring(&cols[CF_TTCLID], tup, desc);
	in->ttp = column_cstring(&cols[CF_TTP], tup, desc);
	in->ip = column_cstring(&cols[CF_IP], tup, desc);
	in->user_agent = column_cstring(&cols[CF_USER_AGENT], tup, desc);
	in->locale = column_cstring(&cols[CF_LOCALE], tup, desc);
	in->value = column_numeric(&cols[CF_VALUE], tup, desc, notes);
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
	if (in->country == NULL)
		in->country = tt_country_or_default(NULL);
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
 * tt_capture(): AFTER INSERT OR UPDATE ... FOR EACH ROW trigger that queues
 * the row's event in the outbox, in the same transaction.  As a deferred
 * constraint trigger it fires at commit, when the order's items exist.
 * Without the customer's consent the event goes without identifiers, or
 * not at all; an UPDATE that changes the consent reaches the pending event.
 */
Datum
tt_capture_sql(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	TupleDesc	desc;
	HeapTuple	tup;
	CaptureConfig *cfg;
	TTEventInput in = {0};
	List	   *notes;
	const char *failed = NULL;
	const char *event_id;
	const char *why;
	int			sqlstate;
	char	   *pixel;
	Jsonb	   *payload;
	RowConsent	consent = ROW_CONSENT_GRANTED;
	bool		granted = true;
	bool		consent_changed = false;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("tt_capture() must be called as a trigger")));
	if (!TRIGGER_FIRED_AFTER(td->tg_event) || !TRIGGER_FIRED_FOR_ROW(td->tg_event) ||
		TRIGGER_FIRED_BY_DELETE(td->tg_event) || TRIGGER_FIRED_BY_TRUNCATE(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("tt_capture() must fire AFTER INSERT OR UPDATE ... FOR EACH ROW")));

	desc = RelationGetDescr(td->tg_relation);
	tup = TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? td->tg_newtuple : td->tg_trigtuple;
	cfg = tt_capture_config(td);
	notes = list_copy(cfg->notes);

	/*
	 * Consent, only when the table has it.  On an UPDATE that changes it,
	 * the event still pending for the order must follow.
	 */
	if (cfg->cols[CF_CONSENT].attnum != InvalidAttrNumber || cfg->consent_unreadable)
	{
		consent = tt_row_consent(cfg, tup, desc, &notes);
		granted = tt_consent_given(consent);
		if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
			consent_changed = consent != tt_row_consent(cfg, td->tg_trigtuple, desc, NULL);
		if (!granted && tt_consent_denied == CONSENT_DENIED_SKIP && !consent_changed)
			return PointerGetDatum(NULL);
	}
	read_event_input(cfg, tup, desc, &in, &notes);
	if (!granted)
	{
		tt_withhold_identifiers(&in);
		notes = lappend(notes, consent == ROW_CONSENT_DENIED ?
						"consent denied: identifiers withheld" :
						"consent unknown: identifiers withheld");
	}

	SPI_connect();
	pixel = cfg->pixel != NULL ? cfg->pixel : tt_default_pixel(&failed);
	if (cfg->event_problem != NULL)
		failed = cfg->event_problem;
	else if (tt_is_blank(in.event_id))
		failed = "the row has no event_id (its order id is NULL or blank)";
	else if ((why = tt_event_id_problem(in.event_id, &sqlstate)) != NULL)
		failed = why;
	/* the row's key: an over-long id (so a failed event) would not fit */
	event_id = in.event_id != NULL ? in.event_id : "";
	if (strlen(event_id) > TT_MAX_EVENT_ID_LEN)
	{
		event_id = shortened_event_id(event_id);
		failed = psprintf("%s; queued under the event_id's first %d characters, \"...\" and the SHA-256 of the whole id",
						  failed, SHORTENED_EVENT_ID_CHARS);
	}

	/* consent withdrawn under skip: the pending event goes, nothing comes */
	if (!granted && tt_consent_denied == CONSENT_DENIED_SKIP)
	{
		if (failed == NULL)
			(void) tt_outbox_replace_pending(pixel, cfg->event, in.event_id,
											 NULL, NIL);
		SPI_finish();
		return PointerGetDatum(NULL);
	}

	if (cfg->items_plan != NULL)
		in.contents = items_contents(cfg, tup, desc);
	if (failed == NULL)
		payload = tt_build_event(&in, &notes);
	else
		payload = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")));
	/* a pending event follows a change of consent; else the first row stands */
	if (!consent_changed || failed != NULL ||
		!tt_outbox_replace_pending(pixel, cfg->event, in.event_id, payload, notes))
		(void) tt_outbox_insert(pixel != NULL ? pixel : "",
								cfg->event,
								event_id,
								in.has_event_time ? in.event_time : GetCurrentTransactionStartTimestamp(),
								payload, notes, failed);
	SPI_finish();
	return PointerGetDatum(NULL);
}

/*
 * The name the released 0.1.0 script binds tt_capture() to, and so every
 * trigger created since
 */
Datum
tt_capture(PG_FUNCTION_ARGS)
{
	return tt_capture_sql(fcinfo);
}
