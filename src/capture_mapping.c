/*-------------------------------------------------------------------------
 *
 * capture_mapping.c
 *	  A trigger's mapping resolved against its table (the config), cached
 *	  per trigger and resolved again after DDL.  capture_attach.c applies
 *	  the same resolution to attach a trigger and to check them all;
 *	  capture_items.c reads a mapping's column names and contents_from.
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
#include "nodes/value.h"
#include "parser/parse_func.h"
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

PG_FUNCTION_INFO_V1(tt_reload_trigger_configs_sql);


/*
 * A field's name in a mapping, and the column names it takes by default:
 * the usual ones, then those of Shopify's, WooCommerce's and Magento's
 * order exports.  value_minor is the total in the currency's minor unit
 * (cents); its defaults count only where no value column is found.  A
 * landing URL feeds ttclid through tt_ttclid().
 */
typedef struct FieldDef
{
	const char *name;
	const char *defaults[8];
} FieldDef;

static const FieldDef field_defs[N_CAPTURE_FIELDS] = {
	[CF_EVENT_ID] = {"event_id", {"order_id", "id", "order_number", "increment_id"}},
	[CF_EVENT_TIME] = {"event_time", {"event_time"}},
	[CF_EMAIL] = {"email", {"email", "customer_email", "email_address",
	"contact_email", "billing_email"}},
	[CF_PHONE] = {"phone", {"phone", "customer_phone", "phone_number",
	"billing_phone"}},
	[CF_EXTERNAL_ID] = {"external_id", {"external_id", "customer_id", "user_id"}},
	[CF_TTCLID] = {"ttclid", {"ttclid", "landing_site", "landing_page",
	"landing_url", "landing_page_url"}},
	[CF_TTP] = {"ttp", {"ttp"}},
	[CF_IP] = {"ip", {"ip", "ip_address", "client_ip", "browser_ip",
	"customer_ip_address", "remote_ip"}},
	[CF_USER_AGENT] = {"user_agent", {"user_agent", "customer_user_agent"}},
	[CF_LOCALE] = {"locale", {"locale"}},
	[CF_VALUE] = {"value", {"value", "total", "amount", "total_amount",
	"grand_total", "total_price", "order_total"}},
	[CF_VALUE_MINOR] = {"value_minor", {"total_cents", "value_cents", "amount_cents",
	"total_amount_cents", "grand_total_cents", "total_price_cents"}},
	[CF_CURRENCY] = {"currency", {"currency", "currency_code"}},
	[CF_CONTENTS] = {"contents", {"contents", "items", "line_items"}},
	[CF_CONTENT_TYPE] = {"content_type", {"content_type"}},
	[CF_ORDER_ID] = {"order_id", {"order_id", "id", "order_number", "increment_id"}},
	[CF_DESCRIPTION] = {"description", {NULL}},
	[CF_SEARCH_STRING] = {"search_string", {"search_string"}},
	[CF_PAGE_URL] = {"page_url", {"page_url"}},
	[CF_REFERRER] = {"referrer", {"referrer"}},
	[CF_LIMITED_DATA_USE] = {"limited_data_use", {"limited_data_use"}},
	[CF_COUNTRY] = {"country", {"country", "country_code", "billing_country",
	"billing_country_code"}},
	[CF_CONSENT] = {"consent", {"consent"}},
	/*
	 * more match keys: the billing address's, never the shipping one's (a
	 * gift's recipient is not the buyer).  A bare "state" column is an
	 * order's state as often as an address's (Magento's sales_order; see
	 * tt_attach's status columns): state=state maps it.
	 */
	[CF_FIRST_NAME] = {"first_name", {"first_name", "given_name",
	"billing_first_name", "customer_first_name", "customer_firstname"}},
	[CF_LAST_NAME] = {"last_name", {"last_name", "family_name", "surname",
	"billing_last_name", "customer_last_name", "customer_lastname"}},
	[CF_ZIP_CODE] = {"zip_code", {"zip", "zip_code", "postal_code", "postcode",
	"billing_zip", "billing_postcode", "billing_postal_code"}},
	[CF_CITY] = {"city", {"city", "billing_city"}},
	[CF_STATE] = {"state", {"province", "region", "state_code", "billing_state",
	"billing_province", "billing_region"}},
	/* event sources and a pixel per row */
	[CF_LEAD_ID] = {"lead_id", {"lead_id"}},
	[CF_LEAD_EVENT_SOURCE] = {"lead_event_source", {"lead_event_source"}},
	[CF_SHOP_ID] = {"shop_id", {"store_id", "location_id", "shop_id"}},
	[CF_PIXEL_FROM] = {"pixel_from", {NULL}},
};

static HTAB *config_cache = NULL;

static bool type_fits(CaptureField f, Oid typid);
static void map_column(CaptureConfig *cfg, TupleDesc desc, CaptureField f,
					   const char *column, bool strict, MemoryContext cxt);
static void invalidate_configs(Datum arg, Oid relid);
static char *config_problem(CaptureConfig *cfg);
static char *trigger_source(Relation rel, Trigger *tg);

/* A field's name in mappings */
const char *
tt_field_name(CaptureField f)
{
	return field_defs[f].name;
}

/*
 * What feeds a field of a resolved config, as a mapping would say it: a
 * column's name, the items' contents_from=, or NULL (nothing does).
 */
char *
tt_field_source(const CaptureConfig *cfg, Relation rel, CaptureField f)
{
	if (f == CF_CONTENTS && cfg->items_spec != NULL)
		return psprintf("contents_from=%s", cfg->items_spec);
	if (cfg->literals[f] != NULL)
		return quote_literal_cstr(cfg->literals[f]);
	if (cfg->cols[f].attnum == InvalidAttrNumber)
		return NULL;
	return pstrdup(NameStr(TupleDescAttr(RelationGetDescr(rel),
										 cfg->cols[f].attnum - 1)->attname));
}

/* Register the invalidation of cached configs after DDL */
void
tt_capture_config_init(void)
{
	CacheRegisterRelcacheCallback(invalidate_configs, (Datum) 0);
}

/* Can a column of this type feed the field? */
static bool
type_fits(CaptureField f, Oid typid)
{
	switch (f)
	{
		case CF_VALUE:
		case CF_VALUE_MINOR:
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
	AttrNumber	attnum = tt_column_by_name(desc, column);
	MappedColumn  *c = &cfg->cols[f];
	Oid			outfunc;
	bool		varlena;

	/* a consent column that cannot be read leaves consent unknown */
	if (f == CF_CONSENT)
		cfg->consent_unreadable = true;
	if (attnum == InvalidAttrNumber)
	{
		mapping_problem(strict, &cfg->notes, "column \"%s\" does not exist (mapping %s=%s)",
						tt_bare_name(column), field_defs[f].name, column);
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
	c->origin = ORIGIN_DEFAULT;
}

/*
 * Resolve a trigger's arguments against its table: explicit mappings
 * first, then default column names for the fields left.  value and
 * value_minor are one field in two units: mapping either turns the
 * other's defaults off, and value_minor's defaults count only where no
 * value column is found.
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
			cfg->items_sql = tt_items_query(val, strict, &cfg->notes, &cfg->items_spec);
			if (cfg->items_sql != NULL)
			{
				cfg->items_sql = MemoryContextStrdup(cxt, cfg->items_sql);
				cfg->items_spec = MemoryContextStrdup(cxt, cfg->items_spec);
			}
			explicit[CF_CONTENTS] = true;
			cfg->cols[CF_CONTENTS].origin = ORIGIN_MAPPING;
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
		/* a constant: 'HubSpot' (a CRM's name), a single store's id */
		if ((f == CF_LEAD_EVENT_SOURCE || f == CF_SHOP_ID) && val[0] == '\'' &&
			strlen(val) >= 2 && val[strlen(val) - 1] == '\'')
		{
			cfg->literals[f] = MemoryContextStrdup(cxt, pnstrdup(val + 1, strlen(val) - 2));
			cfg->cols[f].origin = ORIGIN_MAPPING;
			continue;
		}
		if (val[0] != '\0')
			map_column(cfg, desc, f, val, strict, cxt);
		cfg->cols[f].origin = val[0] != '\0' ? ORIGIN_MAPPING : ORIGIN_OFF;
	}
	if (cfg->cols[CF_VALUE].attnum != InvalidAttrNumber &&
		cfg->cols[CF_VALUE_MINOR].attnum != InvalidAttrNumber)
		mapping_problem(strict, &cfg->notes, "map the total once: value=column in the currency's unit, or value_minor=column in its minor unit (cents), not both");
	if (explicit[CF_VALUE] || explicit[CF_VALUE_MINOR])
		explicit[CF_VALUE] = explicit[CF_VALUE_MINOR] = true;

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
		if (f == CF_VALUE_MINOR && cfg->cols[CF_VALUE].attnum != InvalidAttrNumber)
			continue;
		for (int d = 0; d < lengthof(field_defs[f].defaults) && field_defs[f].defaults[d] != NULL; d++)
		{
			if (tt_column_by_name(desc, field_defs[f].defaults[d]) == InvalidAttrNumber)
				continue;
			map_column(cfg, desc, f, field_defs[f].defaults[d], strict, cxt);
			break;
		}
	}
	/* a landing URL (or a bare click id) as ttclid goes through tt_ttclid() */
	if (cfg->cols[CF_TTCLID].attnum != InvalidAttrNumber)
	{
		Oid			argtype = TEXTOID;
		Oid			fn = LookupFuncName(list_make2(makeString("tiktok_capi"),
												   makeString("tt_ttclid")),
										1, &argtype, true);

		if (OidIsValid(fn))
			fmgr_info_cxt(fn, &cfg->ttclid_fn, cxt);
	}
	if (cfg->pixel != NULL && cfg->cols[CF_PIXEL_FROM].attnum != InvalidAttrNumber)
		mapping_problem(strict, &cfg->notes, "pixel=%s and pixel_from= both name the pixel: keep one",
						cfg->pixel);
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
 * Why a mapping cannot feed the source of its fixed pixel, or NULL: an
 * offline event set takes standard event names only, a CRM one needs a
 * lead_id.  tt_attach() refuses it; a row's own pixel (pixel_from=) is
 * known at the row only, and there the same rules make a failed row.  The
 * caller is connected to SPI.
 */
char *
tt_source_mapping_problem(const CaptureConfig *cfg, const char *pixel)
{
	TTEventSource source;
	bool		enabled;

	if (pixel == NULL || !tt_pixel_source(pixel, &source, &enabled))
		return NULL;
	if (source == TT_SOURCE_OFFLINE && !tt_is_standard_event_name(cfg->event))
		return psprintf("pixel \"%s\" is an offline event set, which takes standard event names only, not \"%s\"",
						pixel, cfg->event);
	if (source == TT_SOURCE_CRM && cfg->cols[CF_LEAD_ID].attnum == InvalidAttrNumber)
		return psprintf("pixel \"%s\" is a CRM event set: its events need lead_id; the table has no lead_id column, map one with lead_id=column",
						pixel);
	return NULL;
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
	char	   *problem;
	char	  **args = palloc(sizeof(char *) * Max(tg->tgnargs, 1));
	int			nargs;

	memcpy(args, tg->tgargs, sizeof(char *) * tg->tgnargs);
	nargs = tt_join_mapping(args, tg->tgnargs);
	cfg->tgoid = tg->tgoid;
	cfg->relid = RelationGetRelid(rel);
	tt_resolve_mapping(cfg, rel, nargs, args, false, cxt);
	old = MemoryContextSwitchTo(cxt);
	cfg->trigger_name = pstrdup(tg->tgname);
	cfg->source = trigger_source(rel, tg);
	MemoryContextSwitchTo(old);
	/* an SPI call returns in SPI's memory, gone at SPI_finish: copy it */
	problem = config_problem(cfg);
	cfg->broken = problem != NULL ? MemoryContextStrdup(cxt, problem) : NULL;
	/* a fixed pixel's source, read once: tt_update_pixel resolves again */
	cfg->pixel_source = TT_SOURCE_WEB;
	if (cfg->pixel != NULL)
	{
		bool		enabled;

		(void) tt_pixel_source(cfg->pixel, &cfg->pixel_source, &enabled);
	}
}

/*
 * tt_reload_trigger_configs(): every backend resolves its triggers again
 * after this transaction commits (a relcache invalidation of every table).
 * tt_update_pixel calls it when a pixel's event source changes, since a
 * trigger's config keeps its fixed pixel's source.
 */
Datum
tt_reload_trigger_configs_sql(PG_FUNCTION_ARGS)
{
	CacheInvalidateRelcacheAll();
	PG_RETURN_VOID();
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
