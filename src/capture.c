/*-------------------------------------------------------------------------
 *
 * capture.c
 *	  The order trigger, tt_capture(), and tt_attach(), which checks a
 *	  mapping and creates the trigger.
 *
 * Vocabulary:
 *	- mapping: the trigger's arguments after the event name: field=column
 *	  pairs (field= alone turns a default off), pixel=CODE, and
 *	  contents_from=table(column) for order items kept in a child table.
 *	- config: a mapping resolved against the table (column numbers, types,
 *	  output functions, the items query), cached per trigger.
 *
 * The trigger never aborts the order.  What it cannot use (an unknown
 * column, an unusable email or currency) is left out of the event and
 * noted in the outbox row's warnings; an event it cannot send at all (no
 * event_id, no pixel, a misspelled event name) is queued as failed with
 * the reason.  tt_attach() applies the same resolution strictly, so a typo
 * is an error when the trigger is attached, not at the first order.
 *
 * Consent: without it, no identifier leaves the database.  The consent
 * field (consent=column, by default the column "consent") is a boolean
 * column, or a text column holding what PostgreSQL's boolean input takes
 * (true/false, yes/no, on/off, 1/0, and unique prefixes such as t/f, y/n)
 * or granted/denied, in any case, trimmed.  NULL and other text are
 * unknown consent, which tiktok_capi.consent_unknown treats as denied (the
 * default) or granted; other text is also noted in warnings.  A consent column the trigger
 * cannot read (a hand-made mapping to a missing or wrongly typed column)
 * leaves consent unknown, never granted.  Without consent,
 * tiktok_capi.consent_denied decides: anonymous (the default) queues the
 * event without email, phone, external_id, ip, user_agent, ttp and
 * ttclid, noted in warnings; skip queues nothing.  A table without a
 * consent column is as before: consent is granted.  Both settings are
 * superuser-only, so the application role cannot loosen them.
 *
 * When an UPDATE changes the consent, the event still pending for the
 * order follows it: rebuilt from the row as it is now (identifiers
 * withheld or restored), withdrawn (skip), or queued if skip had left it
 * out.  Events already sent or failed stay as they are, and so does one
 * the worker is sending in that moment (see outbox.c).  Only an UPDATE
 * that changes the consent does this extra work.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/fmgrprotos.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/formatting.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include "tiktok_capi.h"

PG_FUNCTION_INFO_V1(tt_capture);
PG_FUNCTION_INFO_V1(tt_attach);

/* The event fields a column can feed */
typedef enum CaptureField
{
	CF_EVENT_ID,
	CF_EVENT_TIME,
	CF_EMAIL,
	CF_PHONE,
	CF_EXTERNAL_ID,
	CF_TTCLID,
	CF_TTP,
	CF_IP,
	CF_USER_AGENT,
	CF_LOCALE,
	CF_VALUE,
	CF_CURRENCY,
	CF_CONTENTS,
	CF_CONTENT_TYPE,
	CF_ORDER_ID,
	CF_DESCRIPTION,
	CF_SEARCH_STRING,
	CF_PAGE_URL,
	CF_REFERRER,
	CF_LIMITED_DATA_USE,
	CF_COUNTRY,
	CF_CONSENT,
	N_CAPTURE_FIELDS
} CaptureField;

/* A field's name in a mapping, and the column names it takes by default */
typedef struct FieldDef
{
	const char *name;
	const char *defaults[6];
} FieldDef;

static const FieldDef field_defs[N_CAPTURE_FIELDS] = {
	[CF_EVENT_ID] = {"event_id", {"order_id", "id"}},
	[CF_EVENT_TIME] = {"event_time", {"event_time"}},
	[CF_EMAIL] = {"email", {"email", "customer_email", "email_address"}},
	[CF_PHONE] = {"phone", {"phone", "customer_phone", "phone_number"}},
	[CF_EXTERNAL_ID] = {"external_id", {"external_id", "customer_id", "user_id"}},
	[CF_TTCLID] = {"ttclid", {"ttclid"}},
	[CF_TTP] = {"ttp", {"ttp"}},
	[CF_IP] = {"ip", {"ip", "ip_address", "client_ip"}},
	[CF_USER_AGENT] = {"user_agent", {"user_agent"}},
	[CF_LOCALE] = {"locale", {"locale"}},
	[CF_VALUE] = {"value", {"value", "total", "amount", "total_amount", "grand_total"}},
	[CF_CURRENCY] = {"currency", {"currency", "currency_code"}},
	[CF_CONTENTS] = {"contents", {"contents", "items", "line_items"}},
	[CF_CONTENT_TYPE] = {"content_type", {"content_type"}},
	[CF_ORDER_ID] = {"order_id", {"order_id", "id"}},
	[CF_DESCRIPTION] = {"description", {NULL}},
	[CF_SEARCH_STRING] = {"search_string", {"search_string"}},
	[CF_PAGE_URL] = {"page_url", {"page_url"}},
	[CF_REFERRER] = {"referrer", {"referrer"}},
	[CF_LIMITED_DATA_USE] = {"limited_data_use", {"limited_data_use"}},
	[CF_COUNTRY] = {"country", {"country", "country_code"}},
	[CF_CONSENT] = {"consent", {"consent"}},
};

/* A mapping's hint, for every mapping problem */
#define MAPPING_HINT "Mappings are field=column, pixel=CODE or contents_from=table(column)."

/*
 * A mapping problem: an ERROR when attaching (strict), a note for every
 * event otherwise.
 */
#define mapping_problem(strict, notes, ...) \
	tt_problem((strict) ? NULL : (notes), ERRCODE_INVALID_PARAMETER_VALUE, \
			   MAPPING_HINT, __VA_ARGS__)

/* An over-long event_id is queued under this many of its first characters */
#define SHORTENED_EVENT_ID_CHARS 100

/* Item fields of a child table, and the column names they take */
static const FieldDef item_defs[] = {
	{"content_id", {"content_id", "product_id", "sku", "variant_id", "item_id"}},
	{"quantity", {"quantity", "qty"}},
	{"price", {"price", "unit_price"}},
	{"content_name", {"content_name", "product_name", "name", "title"}},
	{"content_category", {"content_category", "category"}},
	{"brand", {"brand"}},
};
#define N_ITEM_FIELDS (sizeof(item_defs) / sizeof(item_defs[0]))

/* One mapped column */
typedef struct MappedColumn
{
	AttrNumber	attnum;			/* InvalidAttrNumber: not mapped */
	Oid			typid;
	FmgrInfo	out;
} MappedColumn;

/* A trigger's mapping resolved against its table; cached per trigger */
typedef struct CaptureConfig
{
	Oid			tgoid;			/* hash key */
	Oid			relid;
	bool		valid;
	char	   *event;
	char	   *event_problem;	/* a misspelled name: events queue as failed */
	char	   *pixel;			/* NULL: the only configured pixel */
	MappedColumn	cols[N_CAPTURE_FIELDS];
	char	   *items_sql;		/* contents_from: the items query */
	char	   *items_spec;		/* contents_from, schema-qualified */
	SPIPlanPtr	items_plan;
	List	   *notes;			/* mapping problems, noted on every event */
	bool		consent_unreadable; /* a consent mapping failed: unknown */
} CaptureConfig;

/* What an order row says about consent */
typedef enum RowConsent
{
	ROW_CONSENT_GRANTED,
	ROW_CONSENT_DENIED,
	ROW_CONSENT_UNKNOWN			/* NULL, unrecognised text, unreadable column */
} RowConsent;

static HTAB *config_cache = NULL;

static AttrNumber column_by_name(TupleDesc desc, const char *name);
static bool type_fits(CaptureField f, Oid typid);
static void map_column(CaptureConfig *cfg, TupleDesc desc, CaptureField f,
					   const char *column, bool strict, MemoryContext cxt);
static char *items_query(const char *spec, bool strict, List **notes,
						 char **qualified_spec);
static void resolve_config(CaptureConfig *cfg, Relation rel, int nargs,
						   char **args, bool strict, MemoryContext cxt);
static CaptureConfig *cached_config(TriggerData *td);
static void invalidate_configs(Datum arg, Oid relid);
static char *column_cstring(const MappedColumn *c, HeapTuple tup, TupleDesc desc);
static Numeric column_numeric(const MappedColumn *c, HeapTuple tup,
							  TupleDesc desc, List **notes);
static Jsonb *json_to_jsonb(const char *json, List **notes);
static char *shortened_event_id(const char *event_id);
static void read_event_input(const CaptureConfig *cfg, HeapTuple tup,
							 TupleDesc desc, TTEventInput *in, List **notes);
static RowConsent row_consent(const CaptureConfig *cfg, HeapTuple tup,
							  TupleDesc desc, List **notes);
static bool consent_given(RowConsent rc);
static void withhold_identifiers(TTEventInput *in);
static Jsonb *items_contents(CaptureConfig *cfg, HeapTuple tup, TupleDesc desc);

/* Register the invalidation of cached configs after DDL */
void
tt_capture_init(void)
{
	CacheRegisterRelcacheCallback(invalidate_configs, (Datum) 0);
}

/* A live column's number, or InvalidAttrNumber */
static AttrNumber
column_by_name(TupleDesc desc, const char *name)
{
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (!att->attisdropped && strcmp(NameStr(att->attname), name) == 0)
			return att->attnum;
	}
	return InvalidAttrNumber;
}

/* Can a column of this type feed the field? */
static bool
type_fits(CaptureField f, Oid typid)
{
	switch (f)
	{
		case CF_VALUE:
			return typid == NUMERICOID || typid == INT2OID || typid == INT4OID ||
				typid == INT8OID || typid == FLOAT4OID || typid == FLOAT8OID ||
				typid == CASHOID || typid == TEXTOID || typid == VARCHAROID;
		case CF_EVENT_TIME:
			return typid == TIMESTAMPTZOID || typid == TIMESTAMPOID || typid == DATEOID;
		case CF_CONTENTS:
			return typid == JSONBOID || typid == JSONOID;
		case CF_LIMITED_DATA_USE:
			return typid == BOOLOID;
		case CF_CONSENT:
			return typid == BOOLOID || typid == TEXTOID ||
				typid == VARCHAROID || typid == BPCHAROID;
		default:
			return true;
	}
}

/* Point a field at a column, checking it exists and fits */
static void
map_column(CaptureConfig *cfg, TupleDesc desc, CaptureField f,
		   const char *column, bool strict, MemoryContext cxt)
{
	AttrNumber	attnum = column_by_name(desc, column);
	MappedColumn  *c = &cfg->cols[f];
	Oid			outfunc;
	bool		varlena;

	/* a consent column that cannot be read leaves consent unknown */
	if (f == CF_CONSENT)
		cfg->consent_unreadable = true;
	if (attnum == InvalidAttrNumber)
	{
		mapping_problem(strict, &cfg->notes, "column \"%s\" does not exist (mapping %s=%s)",
						column, field_defs[f].name, column);
		return;
	}
	c->typid = TupleDescAttr(desc, attnum - 1)->atttypid;
	if (!type_fits(f, c->typid))
	{
		mapping_problem(strict, &cfg->notes, "column \"%s\" of type %s cannot feed %s",
						column, format_type_be(c->typid), field_defs[f].name);
		return;
	}
	c->attnum = attnum;
	getTypeOutputInfo(c->typid, &outfunc, &varlena);
	fmgr_info_cxt(outfunc, &c->out, cxt);
	if (f == CF_CONSENT)
		cfg->consent_unreadable = false;
}

/*
 * The query that builds contents[] from a child table, for the mapping
 * contents_from=table(column): the items whose column equals the order id.
 */
static char *
items_query(const char *spec, bool strict, List **notes, char **qualified_spec)
{
	char	   *copy = pstrdup(spec);
	char	   *open = strchr(copy, '(');
	char	   *close = strrchr(copy, ')');
	char	   *fkcol;
	Oid			relid;
	Relation	child;
	TupleDesc	desc;
	StringInfoData sql;
	bool		any = false;

	if (open == NULL || close == NULL || close < open || close[1] != '\0')
	{
		mapping_problem(strict, notes, "contents_from must be table(column), not \"%s\"", spec);
		return NULL;
	}
	*open = '\0';
	*close = '\0';
	fkcol = open + 1;
	relid = RangeVarGetRelid(makeRangeVarFromNameList(stringToQualifiedNameList(copy)),
							 AccessShareLock, true);
	if (!OidIsValid(relid))
	{
		mapping_problem(strict, notes, "contents_from table \"%s\" does not exist", copy);
		return NULL;
	}
	child = table_open(relid, NoLock);
	desc = RelationGetDescr(child);
	if (column_by_name(desc, fkcol) == InvalidAttrNumber)
	{
		mapping_problem(strict, notes, "column \"%s\" of contents_from table \"%s\" does not exist",
						fkcol, copy);
		table_close(child, NoLock);
		return NULL;
	}

	initStringInfo(&sql);
	appendStringInfoString(&sql, "SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(");
	for (size_t i = 0; i < N_ITEM_FIELDS; i++)
	{
		for (int d = 0; d < 6 && item_defs[i].defaults[d] != NULL; d++)
		{
			const char *col = item_defs[i].defaults[d];

			if (column_by_name(desc, col) == InvalidAttrNumber)
				continue;
			appendStringInfo(&sql, "%s%s, c.%s%s", any ? ", " : "",
							 quote_literal_cstr(item_defs[i].name),
							 quote_identifier(col),
							 i == 0 ? "::pg_catalog.text" : "");
			any = true;
			break;
		}
		if (i == 0 && !any)
		{
			mapping_problem(strict, notes, "contents_from table \"%s\" has no content_id, product_id or sku column",
							copy);
			table_close(child, NoLock);
			return NULL;
		}
	}
	*qualified_spec = psprintf("%s(%s)",
							   quote_qualified_identifier(get_namespace_name(RelationGetNamespace(child)),
														  RelationGetRelationName(child)),
							   fkcol);
	appendStringInfo(&sql, "))) FROM %s c WHERE c.%s OPERATOR(pg_catalog.=) $1",
					 quote_qualified_identifier(get_namespace_name(RelationGetNamespace(child)),
												RelationGetRelationName(child)),
					 quote_identifier(fkcol));
	table_close(child, NoLock);
	return sql.data;
}

/*
 * Resolve a trigger's arguments against its table: explicit mappings
 * first, then default column names for the fields left.
 */
static void
resolve_config(CaptureConfig *cfg, Relation rel, int nargs, char **args,
			   bool strict, MemoryContext cxt)
{
	TupleDesc	desc = RelationGetDescr(rel);
	bool		explicit[N_CAPTURE_FIELDS] = {false};
	List	   *name_notes = NIL;

	if (nargs < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("tt_capture needs the event name as its first argument"),
				 errhint("For example EXECUTE FUNCTION tiktok_capi.tt_capture('Purchase').")));
	cfg->event = MemoryContextStrdup(cxt, args[0]);
	if (!tt_check_event_name(args[0], strict ? NULL : &name_notes))
		cfg->event_problem = MemoryContextStrdup(cxt, linitial(name_notes));

	for (int i = 1; i < nargs; i++)
	{
		char	   *eq = strchr(args[i], '=');
		char	   *key;
		char	   *val;
		int			f;

		if (eq == NULL)
		{
			mapping_problem(strict, &cfg->notes, "mapping \"%s\" is not field=column", args[i]);
			continue;
		}
		key = pnstrdup(args[i], eq - args[i]);
		val = eq + 1;
		if (strcmp(key, "pixel") == 0)
		{
			cfg->pixel = val[0] ? MemoryContextStrdup(cxt, val) : NULL;
			continue;
		}
		if (strcmp(key, "contents_from") == 0)
		{
			cfg->items_sql = items_query(val, strict, &cfg->notes, &cfg->items_spec);
			if (cfg->items_sql != NULL)
				cfg->items_sql = MemoryContextStrdup(cxt, cfg->items_sql);
			explicit[CF_CONTENTS] = true;
			continue;
		}
		for (f = 0; f < N_CAPTURE_FIELDS; f++)
			if (strcmp(key, field_defs[f].name) == 0)
				break;
		if (f == N_CAPTURE_FIELDS)
		{
			mapping_problem(strict, &cfg->notes, "unknown field \"%s\" in mapping \"%s\"", key, args[i]);
			continue;
		}
		explicit[f] = true;
		if (val[0] != '\0')
			map_column(cfg, desc, f, val, strict, cxt);
	}

	for (int f = 0; f < N_CAPTURE_FIELDS; f++)
	{
		if (explicit[f])
			continue;
		for (int d = 0; d < 6 && field_defs[f].defaults[d] != NULL; d++)
		{
			if (column_by_name(desc, field_defs[f].defaults[d]) == InvalidAttrNumber)
				continue;
			map_column(cfg, desc, f, field_defs[f].defaults[d], strict, cxt);
			break;
		}
	}
	if (cfg->cols[CF_EVENT_ID].attnum == InvalidAttrNumber)
		mapping_problem(strict, &cfg->notes, "no event_id column: the table has no order_id or id column; map one with event_id=column");
	if (cfg->items_sql != NULL)
	{
		if (cfg->cols[CF_ORDER_ID].attnum == InvalidAttrNumber)
			mapping_problem(strict, &cfg->notes, "contents_from needs the order id: map it with order_id=column");
		else
		{
			/* when attaching, this proves the query (and its = operator) */
			Oid			argtype = cfg->cols[CF_ORDER_ID].typid;

			SPI_connect();
			cfg->items_plan = SPI_prepare(cfg->items_sql, 1, &argtype);
			if (cfg->items_plan == NULL)
				elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
			if (strict)
				SPI_freeplan(cfg->items_plan);
			else
				SPI_keepplan(cfg->items_plan);
			SPI_finish();
		}
	}
	if (!strict)
	{
		MemoryContext old = MemoryContextSwitchTo(cxt);
		List	   *kept = NIL;
		ListCell   *lc;

		foreach(lc, cfg->notes)
			kept = lappend(kept, pstrdup((char *) lfirst(lc)));
		cfg->notes = kept;
		MemoryContextSwitchTo(old);
	}
}

/* The trigger's config, resolved at its first row and after any DDL */
static CaptureConfig *
cached_config(TriggerData *td)
{
	Trigger    *tg = td->tg_trigger;
	CaptureConfig *cfg;
	bool		found;

	if (config_cache == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(CaptureConfig);
		ctl.hcxt = CacheMemoryContext;
		config_cache = hash_create("tiktok_capi trigger configs", 16, &ctl,
								   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	cfg = hash_search(config_cache, &tg->tgoid, HASH_ENTER, &found);
	if (found && cfg->valid)
		return cfg;
	if (found && cfg->items_plan != NULL)
		SPI_freeplan(cfg->items_plan);
	memset(cfg, 0, sizeof(CaptureConfig));
	cfg->tgoid = tg->tgoid;
	cfg->relid = RelationGetRelid(td->tg_relation);
	resolve_config(cfg, td->tg_relation, tg->tgnargs, tg->tgargs, false,
				   CacheMemoryContext);
	cfg->valid = true;
	return cfg;
}

/* DDL on a table: its triggers' configs are resolved again */
static void
invalidate_configs(Datum arg, Oid relid)
{
	HASH_SEQ_STATUS status;
	CaptureConfig *cfg;

	if (config_cache == NULL)
		return;
	hash_seq_init(&status, config_cache);
	while ((cfg = hash_seq_search(&status)) != NULL)
		if (relid == InvalidOid || cfg->relid == relid)
			cfg->valid = false;
}

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

/*
 * What the row says about consent.  notes, when not NULL, gets a note for
 * text that is neither a boolean nor granted/denied.  Only called when a
 * consent column is mapped (or its mapping failed).
 */
static RowConsent
row_consent(const CaptureConfig *cfg, HeapTuple tup, TupleDesc desc,
			List **notes)
{
	const MappedColumn *c = &cfg->cols[CF_CONSENT];
	bool		isnull;
	Datum		d;
	char	   *s;
	size_t		len;
	bool		b;

	if (cfg->consent_unreadable)
		return ROW_CONSENT_UNKNOWN;
	d = heap_getattr(tup, c->attnum, desc, &isnull);
	if (isnull)
		return ROW_CONSENT_UNKNOWN;
	if (c->typid == BOOLOID)
		return DatumGetBool(d) ? ROW_CONSENT_GRANTED : ROW_CONSENT_DENIED;

	/* text: trimmed as boolin trims, then granted/denied or a boolean */
	s = OutputFunctionCall((FmgrInfo *) &c->out, d);
	len = strlen(s);
	while (len > 0 && isspace((unsigned char) s[len - 1]))
		len--;
	while (len > 0 && isspace((unsigned char) *s))
	{
		s++;
		len--;
	}
	if (len == 7 && pg_strncasecmp(s, "granted", 7) == 0)
		return ROW_CONSENT_GRANTED;
	if (len == 6 && pg_strncasecmp(s, "denied", 6) == 0)
		return ROW_CONSENT_DENIED;
	if (len > 0 && parse_bool_with_len(s, len, &b))
		return b ? ROW_CONSENT_GRANTED : ROW_CONSENT_DENIED;
	if (notes != NULL)
		*notes = lappend(*notes,
						 psprintf("consent \"%.*s\" is not granted, denied or a boolean",
								  pg_mbcliplen(s, len, 32), s));
	return ROW_CONSENT_UNKNOWN;
}

/* May the order's identifiers leave the database? */
static bool
consent_given(RowConsent rc)
{
	return rc == ROW_CONSENT_GRANTED ||
		(rc == ROW_CONSENT_UNKNOWN && tt_consent_unknown == CONSENT_UNKNOWN_GRANTED);
}

/*
 * Without consent, the event keeps what counts the conversion and loses
 * what matches the person.
 */
static void
withhold_identifiers(TTEventInput *in)
{
	in->email = NULL;
	in->phone = NULL;
	in->external_id = NULL;
	in->ip = NULL;
	in->user_agent = NULL;
	in->ttp = NULL;
	in->ttclid = NULL;
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
tt_capture(PG_FUNCTION_ARGS)
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
	cfg = cached_config(td);
	notes = list_copy(cfg->notes);

	/*
	 * Consent, only when the table has it.  On an UPDATE that changes it,
	 * the event still pending for the order must follow.
	 */
	if (cfg->cols[CF_CONSENT].attnum != InvalidAttrNumber || cfg->consent_unreadable)
	{
		consent = row_consent(cfg, tup, desc, &notes);
		granted = consent_given(consent);
		if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
			consent_changed = consent != row_consent(cfg, td->tg_trigtuple, desc, NULL);
		if (!granted && tt_consent_denied == CONSENT_DENIED_SKIP && !consent_changed)
			return PointerGetDatum(NULL);
	}
	read_event_input(cfg, tup, desc, &in, &notes);
	if (!granted)
	{
		withhold_identifiers(&in);
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
 * tt_attach(orders, event, mapping, pixel, condition, trigger_name):
 * resolve the mapping strictly, then create the trigger.  A mapping with
 * contents_from makes a deferred constraint trigger, so the items inserted
 * after the order row are there when it fires.
 */
Datum
tt_attach(PG_FUNCTION_ARGS)
{
	Oid			relid;
	char	   *event;
	ArrayType  *mapping;
	Datum	   *elems = NULL;
	bool	   *elem_nulls = NULL;
	int			nmap = 0;
	char	  **args;
	int			nargs;
	char	   *pixel;
	Relation	rel;
	CaptureConfig cfg;
	StringInfoData sql;
	char	   *trigname;
	bool		deferred;
	text	   *result;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("the table and the event name are required")));
	relid = PG_GETARG_OID(0);
	if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	event = text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (!PG_ARGISNULL(2))
	{
		mapping = PG_GETARG_ARRAYTYPE_P(2);
		deconstruct_array(mapping, TEXTOID, -1, false, TYPALIGN_INT,
						  &elems, &elem_nulls, &nmap);
	}

	SPI_connect();
	pixel = tt_pixel_for_call(PG_ARGISNULL(3) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(3)));

	nargs = 0;
	args = palloc(sizeof(char *) * (nmap + 2));
	args[nargs++] = event;
	for (int i = 0; i < nmap; i++)
	{
		if (elem_nulls[i])
			continue;
		args[nargs] = TextDatumGetCString(elems[i]);
		if (strncmp(args[nargs], "pixel=", 6) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("name the pixel with the pixel argument, not in the mapping")));
		nargs++;
	}
	args[nargs++] = psprintf("pixel=%s", pixel);

	rel = table_open(relid, AccessShareLock);
	if (rel->rd_rel->relkind != RELKIND_RELATION &&
		rel->rd_rel->relkind != RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a table", RelationGetRelationName(rel))));
	memset(&cfg, 0, sizeof(cfg));
	resolve_config(&cfg, rel, nargs, args, true, CurrentMemoryContext);
	deferred = cfg.items_sql != NULL;
	/* the trigger runs with a pinned search_path: qualify the child table */
	for (int i = 1; i < nargs && deferred; i++)
		if (strncmp(args[i], "contents_from=", 14) == 0)
			args[i] = psprintf("contents_from=%s", cfg.items_spec);

	trigname = PG_ARGISNULL(5) ?
		psprintf("tt_capture_%s", asc_tolower(event, strlen(event))) :
		NameStr(*PG_GETARG_NAME(5));
	initStringInfo(&sql);
	appendStringInfo(&sql, "CREATE %sTRIGGER %s AFTER INSERT OR UPDATE ON %s",
					 deferred ? "CONSTRAINT " : "",
					 quote_identifier(trigname),
					 quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
												RelationGetRelationName(rel)));
	if (deferred)
		appendStringInfoString(&sql, " DEFERRABLE INITIALLY DEFERRED");
	appendStringInfoString(&sql, " FOR EACH ROW");
	if (!PG_ARGISNULL(4))
		appendStringInfo(&sql, " WHEN (%s)", text_to_cstring(PG_GETARG_TEXT_PP(4)));
	appendStringInfoString(&sql, " EXECUTE FUNCTION tiktok_capi.tt_capture(");
	for (int i = 0; i < nargs; i++)
		appendStringInfo(&sql, "%s%s", i ? ", " : "", quote_literal_cstr(args[i]));
	appendStringInfoChar(&sql, ')');
	table_close(rel, NoLock);

	if (SPI_execute(sql.data, false, 0) != SPI_OK_UTILITY)
		elog(ERROR, "could not create the trigger");
	/* the statement lives in SPI's memory, which SPI_finish frees */
	result = SPI_palloc(VARHDRSZ + sql.len);
	SET_VARSIZE(result, VARHDRSZ + sql.len);
	memcpy(VARDATA(result), sql.data, sql.len);
	SPI_finish();
	PG_RETURN_TEXT_P(result);
}
