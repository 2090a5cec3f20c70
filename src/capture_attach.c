/*-------------------------------------------------------------------------
 *
 * capture_attach.c
 *	  tt_attach(), which checks a mapping and creates the trigger, and
 *	  tt_check_triggers(), which checks every tt_capture trigger of the
 *	  database, both through the resolver of capture_mapping.c.
 *
 * Two tables on one pixel and event would queue their orders under the
 * same keys: tt_attach() refuses the second unless its ids are made
 * distinct (event_id_prefix=), and tt_check_triggers() names such a pair
 * among hand-written triggers, for tt_health().
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/formatting.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/tuplestore.h"

#include "capture.h"

PG_FUNCTION_INFO_V1(tt_attach_sql);
PG_FUNCTION_INFO_V1(tt_attach);
PG_FUNCTION_INFO_V1(tt_check_triggers_sql);
PG_FUNCTION_INFO_V1(tt_capture_triggers_sql);

static void report_mapping(const CaptureConfig *cfg, Relation rel,
						   const char *trigname, bool has_condition);
static void capture_triggers(void);
static bool resolve_listed(SPITupleTable *tt, uint64 i, Relation *rel,
						   CaptureConfig *cfg);
static char **trigger_args(HeapTuple tup, TupleDesc desc, int *nargs);
static const char *trigger_arg(char **args, int nargs, const char *key);
static char *shared_key_owner(Oid relid, const char *event, const char *pixel,
							  const char *prefix);
static void refuse_shared_key(Oid relid, const char *event, const char *pixel,
							  const char *prefix);

/*
 * tt_attach(orders, event, mapping, pixel, condition, trigger_name):
 * resolve the mapping strictly, then create the trigger.  It is a plain
 * AFTER INSERT OR UPDATE trigger: the event is built at commit anyway
 * (capture.c), when the order's items exist.  A second table on the same
 * pixel and event is refused unless its ids are made distinct.
 */
Datum
tt_attach_sql(PG_FUNCTION_ARGS)
{
	Oid			relid;
	char	   *event;
	ArrayType  *mapping;
	Datum	   *elems = NULL;
	bool	   *elem_nulls = NULL;
	int			nmap = 0;
	char	  **args;
	int			nargs;
	char	   *pixel = NULL;
	bool		pixel_from = false;
	char	   *source_problem;
	Relation	rel;
	CaptureConfig cfg;
	StringInfoData sql;
	char	   *trigname;
	bool		qualify;
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

	/* a pixel in the mapping is said to be misplaced before it is looked for */
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
					 errmsg("name the pixel with the pixel argument, not in the mapping"),
					 errhint("tiktok_capi.tt_attach('orders', 'Purchase', pixel => '%s')", args[nargs] + 6)));
		if (strncmp(args[nargs], "pixel_from=", 11) == 0 && args[nargs][11] != '\0')
			pixel_from = true;
		nargs++;
	}
	nargs = tt_join_mapping(args, nargs);
	if (pixel_from && !PG_ARGISNULL(3))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("pixel and pixel_from both name the pixel"),
				 errdetail("pixel_from=column takes each row's pixel from the row; pixel names one for every row."),
				 errhint("Keep one of them.")));
	SPI_connect();
	/* with pixel_from, each row names its pixel: the trigger names none */
	if (!pixel_from)
	{
		pixel = tt_pixel_for_call(PG_ARGISNULL(3) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(3)));
		args[nargs++] = psprintf("pixel=%s", pixel);
	}

	rel = table_open(relid, AccessShareLock);
	if (rel->rd_rel->relkind != RELKIND_RELATION &&
		rel->rd_rel->relkind != RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a table", RelationGetRelationName(rel))));
	memset(&cfg, 0, sizeof(cfg));
	tt_resolve_mapping(&cfg, rel, nargs, args, true, CurrentMemoryContext);
	if ((source_problem = tt_source_mapping_problem(&cfg, pixel)) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg_internal("%s", source_problem),
				 errhint("tiktok_capi.tt_event_names() lists the standard names; tt_add_pixel's event_source says what a pixel is.")));
	if (pixel != NULL)
		refuse_shared_key(relid, event, pixel, cfg.prefix);
	qualify = cfg.items_sql != NULL;
	/* the trigger runs with a pinned search_path: qualify the child table */
	for (int i = 1; i < nargs && qualify; i++)
		if (strncmp(args[i], "contents_from=", 14) == 0)
			args[i] = psprintf("contents_from=%s", cfg.items_spec);

	trigname = PG_ARGISNULL(5) ?
		psprintf("tt_capture_%s", asc_tolower(event, strlen(event))) :
		NameStr(*PG_GETARG_NAME(5));
	initStringInfo(&sql);
	appendStringInfo(&sql, "CREATE TRIGGER %s AFTER INSERT OR UPDATE ON %s FOR EACH ROW",
					 quote_identifier(trigname),
					 quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
												RelationGetRelationName(rel)));
	if (!PG_ARGISNULL(4))
		appendStringInfo(&sql, " WHEN (%s)", text_to_cstring(PG_GETARG_TEXT_PP(4)));
	appendStringInfoString(&sql, " EXECUTE FUNCTION tiktok_capi.tt_capture(");
	for (int i = 0; i < nargs; i++)
		appendStringInfo(&sql, "%s%s", i ? ", " : "", quote_literal_cstr(args[i]));
	appendStringInfoChar(&sql, ')');
	report_mapping(&cfg, rel, trigname, !PG_ARGISNULL(4));
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

/*
 * Say what tt_attach() resolved, so nobody reads the source to learn why
 * an email is missing: which column feeds which field (a NOTICE), a
 * column of cents mapped as value (a WARNING: 100 times the value), and
 * a table with a status but no condition (every write converts).
 */
static void
report_mapping(const CaptureConfig *cfg, Relation rel, const char *trigname,
			   bool has_condition)
{
	static const char *const status_columns[] = {"financial_status", "payment_status",
	"status", "state", NULL};
	StringInfoData fed;
	StringInfoData empty;
	char	   *value_col = tt_field_source(cfg, rel, CF_VALUE);

	initStringInfo(&fed);
	initStringInfo(&empty);
	for (int f = 0; f < N_CAPTURE_FIELDS; f++)
	{
		char	   *source = tt_field_source(cfg, rel, f);

		if (f == CF_ORDER_ID || f == CF_VALUE_MINOR || f == CF_VALUE)
		{
			/* one line for the total, whatever its unit; order_id is event_id's */
			if (f == CF_VALUE_MINOR && source != NULL)
				appendStringInfo(&fed, "%svalue_minor=%s", fed.len ? ", " : "", source);
			else if (f == CF_VALUE && source != NULL)
				appendStringInfo(&fed, "%svalue=%s", fed.len ? ", " : "", source);
			else if (f == CF_VALUE && cfg->cols[CF_VALUE_MINOR].attnum == InvalidAttrNumber)
				appendStringInfo(&empty, "%svalue", empty.len ? ", " : "");
			continue;
		}
		if (source != NULL && f == CF_CONTENTS && cfg->items_spec != NULL)
			appendStringInfo(&fed, "%s%s", fed.len ? ", " : "", source);
		else if (source != NULL)
			appendStringInfo(&fed, "%s%s=%s", fed.len ? ", " : "", tt_field_name(f), source);
		else
			appendStringInfo(&empty, "%s%s", empty.len ? ", " : "", tt_field_name(f));
	}
	ereport(NOTICE,
			(errmsg("%s on %s sends %s events: %s", trigname, RelationGetRelationName(rel),
					cfg->event, fed.data),
			 errdetail("Nothing feeds: %s.", empty.len ? empty.data : "(none)"),
			 errhint("Map a field with field=column; tiktok_capi.capture_triggers shows every trigger's mapping.")));
	if (value_col != NULL && strlen(value_col) > 6 &&
		pg_strcasecmp(value_col + strlen(value_col) - 6, "_cents") == 0)
		ereport(WARNING,
				(errmsg("column \"%s\" is sent as the value in the currency's unit, but its name says cents",
						value_col),
				 errdetail("1999 cents would be sent as a value of 1999, not 19.99."),
				 errhint("For amounts in minor units map value_minor=%s: it is divided by the currency's own exponent.",
						 value_col)));
	for (int i = 0; !has_condition && status_columns[i] != NULL; i++)
		if (tt_column_by_name(RelationGetDescr(rel), status_columns[i]) != InvalidAttrNumber)
		{
			ereport(NOTICE,
					(errmsg("no condition: every insert and update of %s queues its %s event, whatever its %s",
							RelationGetRelationName(rel), cfg->event, status_columns[i]),
					 errhint("To send paid orders only, attach with condition => $$NEW.%s = 'paid'$$.",
							 quote_identifier(status_columns[i]))));
			break;
		}
}

/* The name the released 0.1.0 script binds tt_attach() to */
Datum
tt_attach(PG_FUNCTION_ARGS)
{
	return tt_attach_sql(fcinfo);
}

/*
 * The tt_capture triggers created on tables (not their partitions' clones):
 * oid, table oid, name, argument count and arguments.  The caller is
 * connected to SPI; the result is in SPI_tuptable.
 */
static void
capture_triggers(void)
{
	if (SPI_execute("SELECT t.oid, t.tgrelid, t.tgname, t.tgnargs, t.tgargs"
					"  FROM pg_catalog.pg_trigger t"
					" WHERE t.tgfoid = 'tiktok_capi.tt_capture()'::pg_catalog.regprocedure"
					"   AND t.tgparentid = 0"
					" ORDER BY t.tgrelid, t.tgname", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not list the tt_capture triggers");
}

/* A trigger's arguments from pg_trigger.tgargs (NUL-separated) */
static char **
trigger_args(HeapTuple tup, TupleDesc desc, int *nargs)
{
	bool		isnull;
	bytea	   *b;
	char	   *p;
	char	  **args;

	*nargs = DatumGetInt16(SPI_getbinval(tup, desc, 4, &isnull));
	b = DatumGetByteaPP(SPI_getbinval(tup, desc, 5, &isnull));
	p = VARDATA_ANY(b);
	args = palloc0(sizeof(char *) * (*nargs + 1));
	for (int i = 0; i < *nargs; i++)
	{
		args[i] = pstrdup(p);
		p += strlen(p) + 1;
	}
	return args;
}

/* The value of a key=value trigger argument, or NULL */
static const char *
trigger_arg(char **args, int nargs, const char *key)
{
	size_t		len = strlen(key);

	for (int i = 1; i < nargs; i++)
		if (strncmp(args[i], key, len) == 0 && args[i][len] == '=')
			return args[i] + len + 1;
	return NULL;
}

/*
 * Another table whose tt_capture trigger queues the same keys as
 * (event, pixel, prefix) would on relid: the same event, pixel (a trigger
 * without one uses the only pixel) and event_id prefix.  NULL if none.
 * The caller is connected to SPI.
 */
static char *
shared_key_owner(Oid relid, const char *event, const char *pixel,
				 const char *prefix)
{
	const char *why;
	char	   *only = tt_default_pixel(&why);
	SPITupleTable *tt;
	uint64		n;

	capture_triggers();
	tt = SPI_tuptable;
	n = SPI_processed;
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;
		Oid			other = DatumGetObjectId(SPI_getbinval(tt->vals[i], tt->tupdesc, 2, &isnull));
		int			nargs;
		char	  **args = trigger_args(tt->vals[i], tt->tupdesc, &nargs);
		const char *other_pixel = trigger_arg(args, nargs, "pixel");
		const char *other_prefix = trigger_arg(args, nargs, "event_id_prefix");

		if (other == relid || nargs < 1 || strcmp(args[0], event) != 0)
			continue;
		/* a row's own pixel is known at the row: a collision fails that row */
		if (trigger_arg(args, nargs, "pixel_from") != NULL)
			continue;
		if (other_pixel == NULL || other_pixel[0] == '\0')
			other_pixel = only;
		if (pixel == NULL || other_pixel == NULL || strcmp(pixel, other_pixel) != 0)
			continue;
		if (strcmp(prefix ? prefix : "", other_prefix ? other_prefix : "") != 0)
			continue;
		return psprintf("%s (trigger %s)",
						quote_qualified_identifier(get_namespace_name(get_rel_namespace(other)),
												   get_rel_name(other)),
						SPI_getvalue(tt->vals[i], tt->tupdesc, 3));
	}
	return NULL;
}

/* tt_attach's refusal of a second table on the same keys */
static void
refuse_shared_key(Oid relid, const char *event, const char *pixel,
				  const char *prefix)
{
	char	   *owner = shared_key_owner(relid, event, pixel, prefix);

	if (owner != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("%s already queues %s events for pixel %s with the same event_ids",
						owner, event, pixel),
				 errdetail("An order id found in both tables would be one event: the second order would be refused."),
				 errhint("Make this table's ids distinct with a prefix, e.g. mapping => '{event_id_prefix=app-}'.")));
}

/*
 * Resolve the i-th listed trigger (capture_triggers()) as it resolves
 * itself, into cfg; its table stays open in *rel.  false when the
 * trigger is gone.
 */
static bool
resolve_listed(SPITupleTable *tt, uint64 i, Relation *rel, CaptureConfig *cfg)
{
	bool		isnull;
	Oid			tgoid = DatumGetObjectId(SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull));
	Oid			relid = DatumGetObjectId(SPI_getbinval(tt->vals[i], tt->tupdesc, 2, &isnull));
	Trigger    *tg = NULL;

	*rel = table_open(relid, AccessShareLock);
	for (int t = 0; (*rel)->trigdesc != NULL && t < (*rel)->trigdesc->numtriggers; t++)
		if ((*rel)->trigdesc->triggers[t].tgoid == tgoid)
			tg = &(*rel)->trigdesc->triggers[t];
	if (tg == NULL)
	{
		table_close(*rel, AccessShareLock);
		return false;
	}
	memset(cfg, 0, sizeof(*cfg));
	tt_resolve_trigger(cfg, *rel, tg, CurrentMemoryContext);
	if (cfg->items_plan != NULL)
		SPI_freeplan(cfg->items_plan);
	return true;
}

/*
 * tt_check_triggers(): every tt_capture trigger of the database, resolved
 * as the trigger resolves it; problem says what keeps it from working
 * (NULL: nothing).  For tt_health()'s triggers check.
 */
Datum
tt_check_triggers_sql(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	SPITupleTable *tt;
	uint64		n;

	InitMaterializedSRF(fcinfo, 0);
	SPI_connect();
	capture_triggers();
	tt = SPI_tuptable;
	n = SPI_processed;
	for (uint64 i = 0; i < n; i++)
	{
		Relation	rel;
		CaptureConfig cfg;
		char	   *problem;
		char	   *owner;
		const char *why;
		Datum		values[4];
		bool		nulls[4] = {false, false, false, false};

		if (!resolve_listed(tt, i, &rel, &cfg))
			continue;
		problem = cfg.broken;
		if (problem == NULL &&
			(owner = shared_key_owner(RelationGetRelid(rel), cfg.event,
									  cfg.pixel ? cfg.pixel : tt_default_pixel(&why),
									  cfg.prefix)) != NULL)
			problem = psprintf("its event_ids collide with those of %s on the same pixel and event: give one a distinct event_id_prefix=",
							   owner);
		values[0] = DirectFunctionCall1(namein, CStringGetDatum(cfg.trigger_name));
		values[1] = PointerGetDatum(cstring_to_text(cfg.source));
		values[2] = PointerGetDatum(cstring_to_text(cfg.event));
		if (problem != NULL)
			values[3] = PointerGetDatum(cstring_to_text(problem));
		else
			nulls[3] = true;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		table_close(rel, AccessShareLock);
	}
	SPI_finish();
	return (Datum) 0;
}

/*
 * tt_capture_triggers(): for the capture_triggers view, every field of
 * every tt_capture trigger and what feeds it, as the trigger resolves
 * it: origin 'mapping' (field=column), 'default' (found by its name),
 * 'off' (field=) or 'none' (nothing: the field stays empty).
 */
Datum
tt_capture_triggers_sql(PG_FUNCTION_ARGS)
{
	static const char *const origins[] = {
		[ORIGIN_NONE] = "none", [ORIGIN_DEFAULT] = "default",
		[ORIGIN_MAPPING] = "mapping", [ORIGIN_OFF] = "off"};
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	SPITupleTable *tt;
	uint64		n;

	InitMaterializedSRF(fcinfo, 0);
	SPI_connect();
	capture_triggers();
	tt = SPI_tuptable;
	n = SPI_processed;
	for (uint64 i = 0; i < n; i++)
	{
		Relation	rel;
		CaptureConfig cfg;
		const char *why;
		char	   *pixel;

		if (!resolve_listed(tt, i, &rel, &cfg))
			continue;
		/* pixel_from: each row names its pixel */
		pixel = cfg.cols[CF_PIXEL_FROM].attnum != InvalidAttrNumber ? NULL :
			cfg.pixel ? cfg.pixel : tt_default_pixel(&why);
		for (int f = 0; f < N_CAPTURE_FIELDS; f++)
		{
			char	   *source = tt_field_source(&cfg, rel, f);
			FieldOrigin origin = cfg.cols[f].origin;
			Datum		values[7];
			bool		nulls[7] = {false};

			/* a mapped column that cannot feed the field feeds nothing */
			if (source == NULL && origin != ORIGIN_OFF)
				origin = ORIGIN_NONE;
			values[0] = ObjectIdGetDatum(RelationGetRelid(rel));
			values[1] = DirectFunctionCall1(namein, CStringGetDatum(cfg.trigger_name));
			values[2] = PointerGetDatum(cstring_to_text(cfg.event));
			values[3] = pixel ? PointerGetDatum(cstring_to_text(pixel)) : (Datum) 0;
			nulls[3] = pixel == NULL;
			values[4] = PointerGetDatum(cstring_to_text(tt_field_name(f)));
			values[5] = source ? PointerGetDatum(cstring_to_text(source)) : (Datum) 0;
			nulls[5] = source == NULL;
			values[6] = PointerGetDatum(cstring_to_text(origins[origin]));
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
		table_close(rel, AccessShareLock);
	}
	SPI_finish();
	return (Datum) 0;
}
