/*-------------------------------------------------------------------------
 *
 * capture_mapping.c
 *	  A trigger's mapping resolved against its table (the config), cached
 *	  per trigger and resolved again after DDL.  capture_attach.c applies
 *	  the same resolution to attach a trigger and to check them all.
 *
 * A mapping the trigger cannot use (an unknown column or field, a column
 * of the wrong type, no id, an unknown pixel, a misspelled event name)
 * breaks the trigger: its orders are queued as failed with a reason that
 * names the trigger and the fix, never sent half-built, and the first
 * such order of each backend logs a WARNING.  tt_attach() applies the
 * same resolution strictly, so a typo is an error when the trigger is
 * attached, not at the first order; tt_check_triggers() applies it to
 * every tt_capture trigger, for tt_health().
 *
 * The event_id is the order's id within its table: the event_id= column,
 * else the order_id= column, else order_id or id.  event_id_prefix=
 * (e.g. app-) makes the ids of a second table on the same pixel and
 * event distinct; tt_attach() refuses a second table without one.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/partition.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/formatting.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/varlena.h"

#include "capture.h"


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
#define MAPPING_HINT "Mappings are field=column, pixel=CODE, event_id_prefix=TEXT or contents_from=table(column)."

/*
 * A mapping problem: an ERROR when attaching (strict), a note for every
 * event otherwise.
 */
#define mapping_problem(strict, notes, ...) \
	tt_problem((strict) ? NULL : (notes), ERRCODE_INVALID_PARAMETER_VALUE, \
			   MAPPING_HINT, __VA_ARGS__)

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

static HTAB *config_cache = NULL;

static AttrNumber column_by_name(TupleDesc desc, const char *name);
static bool type_fits(CaptureField f, Oid typid);
static void map_column(CaptureConfig *cfg, TupleDesc desc, CaptureField f,
					   const char *column, bool strict, MemoryContext cxt);
static char *items_query(const char *spec, bool strict, List **notes,
						 char **qualified_spec);
static void invalidate_configs(Datum arg, Oid relid);
static char *config_problem(CaptureConfig *cfg);
static char *trigger_source(Relation rel, Trigger *tg);

/* Register the invalidation of cached configs after DDL */
void
tt_capture_config_init(void)
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
void
tt_resolve_mapping(CaptureConfig *cfg, Relation rel, int nargs, char **args,
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
		if (strcmp(key, "event_id_prefix") == 0)
		{
			cfg->prefix = MemoryContextStrdup(cxt, val);
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

	/* the event_id follows an order_id mapping */
	if (!explicit[CF_EVENT_ID] && explicit[CF_ORDER_ID] &&
		cfg->cols[CF_ORDER_ID].attnum != InvalidAttrNumber)
	{
		cfg->cols[CF_EVENT_ID] = cfg->cols[CF_ORDER_ID];
		explicit[CF_EVENT_ID] = true;
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
	if (cfg->prefix == NULL)
		cfg->prefix = "";
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

/*
 * What keeps a leniently resolved config from working, as the reason its
 * orders fail with: the first mapping problem, or a misspelled event name,
 * or a named pixel that is not configured.  NULL when it works.  The
 * caller is connected to SPI.
 */
static char *
config_problem(CaptureConfig *cfg)
{
	const char *why = NULL;

	if (cfg->notes != NIL)
		why = linitial(cfg->notes);
	else if (cfg->event_problem != NULL)
		why = cfg->event_problem;
	else if (cfg->pixel != NULL && !tt_pixel_exists(cfg->pixel))
		why = psprintf("pixel \"%s\" is not configured (add it with tiktok_capi.tt_add_pixel())",
					   cfg->pixel);
	if (why == NULL)
		return NULL;
	return psprintf("trigger \"%s\" on %s cannot work: %s; fix its arguments (tiktok_capi.tt_attach() checks a mapping), then update the orders to queue them again",
					cfg->trigger_name, cfg->source, why);
}

/* The table a trigger was created on: a partition's clone names its root */
static char *
trigger_source(Relation rel, Trigger *tg)
{
	Oid			relid = RelationGetRelid(rel);

	if (tg->tgisclone)
	{
		List	   *ancestors = get_partition_ancestors(relid);

		if (ancestors != NIL)
			relid = llast_oid(ancestors);
	}
	return quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
									  get_rel_name(relid));
}

/*
 * Resolve a trigger's arguments leniently into cfg, in cxt: what cannot
 * work goes to cfg->broken.  The caller is connected to SPI.
 */
void
tt_resolve_trigger(CaptureConfig *cfg, Relation rel, Trigger *tg, MemoryContext cxt)
{
	MemoryContext old;

	cfg->tgoid = tg->tgoid;
	cfg->relid = RelationGetRelid(rel);
	tt_resolve_mapping(cfg, rel, tg->tgnargs, tg->tgargs, false, cxt);
	old = MemoryContextSwitchTo(cxt);
	cfg->trigger_name = pstrdup(tg->tgname);
	cfg->source = trigger_source(rel, tg);
	cfg->broken = config_problem(cfg);
	MemoryContextSwitchTo(old);
}

/*
 * The trigger's config, resolved at its first row and after any DDL.  The
 * caller is connected to SPI.
 */
CaptureConfig *
tt_capture_config(Relation rel, Trigger *tg)
{
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
	tt_resolve_trigger(cfg, rel, tg, CacheMemoryContext);
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
