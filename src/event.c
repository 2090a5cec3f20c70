/*-------------------------------------------------------------------------
 *
 * event.c
 *	  The event builder: raw order data in, one Events API event (an
 *	  element of the request's data[] array) out, as jsonb; and tt_event(),
 *	  the SQL function over it.
 *
 * The builder hashes identifiers, turns event_time into unix seconds,
 * makes event_id and content_id JSON strings and value and price JSON
 * numbers, and leaves out what is NULL or empty.  What the API accepts is
 * decided in event_rules.c and event_contents.c; misuse is an ERROR with
 * a hint; in a lenient build (the order trigger's) a bad optional field is
 * dropped and noted instead, so tracking never breaks the shop.
 * Identifier values never appear in messages: they end up in logs.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "tiktok_capi.h"

PG_FUNCTION_INFO_V1(tt_event_sql);

/* Up to this many named fields in one object of the event */
#define MAX_FIELDS 16

/* The fields of one object of the event (user, properties or page) */
typedef struct FieldList
{
	const char *name;			/* the object's key, for messages */
	int			n;
	const char *keys[MAX_FIELDS];
	JsonbValue	vals[MAX_FIELDS];
} FieldList;

static void add_value(FieldList *l, const char *key, JsonbValue v);
static void add_string(FieldList *l, const char *key, const char *s, size_t len);
static void add_plain(FieldList *l, const char *key, const char *s,
					  List **notes);
static void add_hashed(FieldList *l, const char *key, const char *raw,
					   const char *hash, const char *why, List **notes);
static void add_hashed_name(FieldList *l, const char *key, const char *raw,
							List **notes);
static void add_place(FieldList *l, const char *key, const char *raw,
					  List **notes);
static void add_numeric(FieldList *l, const char *key, Numeric n);
static void push_key(JsonbParseState **st, const char *key);
static void push_object(JsonbParseState **st, const char *key,
						FieldList *l, Jsonb *extra);
static void build_user(FieldList *user, const TTEventInput *in, List **notes);
static void build_properties(FieldList *props, const TTEventInput *in,
							 List **notes);
static void build_page(FieldList *page, const TTEventInput *in, List **notes);
static void drop_for_source(TTEventInput *in, List **notes);
static void build_lead(FieldList *lead, const TTEventInput *in, List **notes);
static char *arg_cstring(FunctionCallInfo fcinfo, int argno);

/* Add a field to an object under construction */
static void
add_value(FieldList *l, const char *key, JsonbValue v)
{
	Assert(l->n < MAX_FIELDS);
	l->keys[l->n] = key;
	l->vals[l->n] = v;
	l->n++;
}

/* Add a JSON string field */
static void
add_string(FieldList *l, const char *key, const char *s, size_t len)
{
	JsonbValue	v;

	v.type = jbvString;
	v.val.string.val = (char *) s;
	v.val.string.len = len;
	add_value(l, key, v);
}

/*
 * Add a field sent as given, trimmed; nothing when NULL or blank.  Text
 * that is not UTF-8 is an error, or left out and noted.
 */
static void
add_plain(FieldList *l, const char *key, const char *s, List **notes)
{
	size_t		len;

	if (s == NULL)
		return;
	len = strlen(s);
	tt_trim(&s, &len);
	if (len == 0)
		return;
	if (tt_sendable_text(s, len))
		add_string(l, key, s, len);
	else
		tt_problem(notes, ERRCODE_CHARACTER_NOT_IN_REPERTOIRE, TT_UTF8_HINT,
				   "%s.%s is not valid UTF-8", l->name, key);
}

/*
 * Add an identifier's hash; hash NULL means the value was unusable.  It is
 * left out, and in a lenient build noted unless blank, so a shop learns
 * why its events match nobody.  The note never carries the value.
 */
static void
add_hashed(FieldList *l, const char *key, const char *raw, const char *hash,
		   const char *why, List **notes)
{
	size_t		len = strlen(raw);

	if (hash != NULL)
	{
		add_string(l, key, hash, 64);
		return;
	}
	tt_trim(&raw, &len);
	if (notes != NULL && len > 0)
		*notes = lappend(*notes, psprintf("%s dropped: %s", key, why));
}

/* Add a first name, last name or zip code, hashed; unusable: noted */
static void
add_hashed_name(FieldList *l, const char *key, const char *raw, List **notes)
{
	char	   *hash;

	if (raw == NULL)
		return;
	hash = palloc(TT_HASH_BUFSIZE);
	add_hashed(l, key, raw, tt_hash_name(raw, strlen(raw), hash) ? hash : NULL,
			   "not usable text (a control character, invalid UTF-8, or longer than 255 bytes)",
			   notes);
}

/*
 * Add a city or state, plain: lowercased, spaces removed.  Unusable text
 * is left out, and noted as an identifier is, without the value.
 */
static void
add_place(FieldList *l, const char *key, const char *raw, List **notes)
{
	char	   *place;
	size_t		len;

	if (raw == NULL)
		return;
	place = palloc(TT_NAME_MAXLEN + 1);
	if (tt_normalize_place(raw, strlen(raw), place, &len))
		add_string(l, key, place, len);
	else if (notes != NULL && !tt_is_blank(raw))
		*notes = lappend(*notes, psprintf("%s dropped: not usable text (a control character, invalid UTF-8, or longer than 255 bytes)",
										  key));
}

/* Add a JSON number field */
static void
add_numeric(FieldList *l, const char *key, Numeric n)
{
	JsonbValue	v;

	v.type = jbvNumeric;
	v.val.numeric = n;
	add_value(l, key, v);
}

/* Push an object key */
static void
push_key(JsonbParseState **st, const char *key)
{
	JsonbValue	k;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	pushJsonbValue(st, WJB_KEY, &k);
}

/*
 * Push "key": {fields}, with the keys of extra (an object) first so the
 * named fields win; nothing at all when both are empty.
 */
static void
push_object(JsonbParseState **st, const char *key, FieldList *l, Jsonb *extra)
{
	bool		has_extra = extra != NULL && JB_ROOT_COUNT(extra) > 0;

	if (l->n == 0 && !has_extra)
		return;
	push_key(st, key);
	pushJsonbValue(st, WJB_BEGIN_OBJECT, NULL);
	if (has_extra)
	{
		JsonbIterator *it = JsonbIteratorInit(&extra->root);
		JsonbValue	v;
		JsonbIteratorToken tok;

		while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
			if (tok == WJB_KEY || tok == WJB_VALUE)
				pushJsonbValue(st, tok, &v);
	}
	for (int i = 0; i < l->n; i++)
	{
		push_key(st, l->keys[i]);
		pushJsonbValue(st, WJB_VALUE, &l->vals[i]);
	}
	pushJsonbValue(st, WJB_END_OBJECT, NULL);
}

/* The user object: identifiers hashed, the rest plain */
static void
build_user(FieldList *user, const TTEventInput *in, List **notes)
{
	char	   *hash;

	if (in->email != NULL)
	{
		hash = palloc(TT_HASH_BUFSIZE);
		add_hashed(user, "email", in->email,
				   tt_hash_email(in->email, strlen(in->email), hash) ? hash : NULL,
				   "not a usable address", notes);
	}
	if (in->phone != NULL)
	{
		hash = palloc(TT_HASH_BUFSIZE);
		add_hashed(user, "phone", in->phone,
				   tt_hash_phone(in->phone, strlen(in->phone), in->country, hash) ? hash : NULL,
				   "not a usable number (E.164 with its +, or a national number with a country)",
				   notes);
	}
	if (in->external_id != NULL)
	{
		hash = palloc(TT_HASH_BUFSIZE);
		add_hashed(user, "external_id", in->external_id,
				   tt_hash_external_id(in->external_id, strlen(in->external_id), hash) ? hash : NULL,
				   "not a usable id", notes);
	}
	add_plain(user, "ttclid", in->ttclid, notes);
	add_plain(user, "ttp", in->ttp, notes);
	if (in->ip != NULL)
	{
		char	   *ip = palloc(TT_IP_BUFSIZE);

		if (tt_normalize_ip(in->ip, strlen(in->ip), ip))
			add_string(user, "ip", ip, strlen(ip));
		else
			tt_problem(notes, ERRCODE_INVALID_TEXT_REPRESENTATION,
					   "Pass the customer's address as text, such as '203.0.113.7', or NULL.",
					   "ip is not an IPv4 or IPv6 address");
	}
	add_plain(user, "user_agent", in->user_agent, notes);
	add_plain(user, "locale", in->locale, notes);
	/* more match keys: names and zip code hashed; places plain */
	add_hashed_name(user, "first_name", in->first_name, notes);
	add_hashed_name(user, "last_name", in->last_name, notes);
	add_hashed_name(user, "zip_code", in->zip_code, notes);
	add_place(user, "city", in->city, notes);
	add_place(user, "state", in->state, notes);
	if (in->user_country != NULL && !tt_is_blank(in->user_country))
	{
		char	   *code = palloc(TT_COUNTRY_BUFSIZE);

		if (tt_normalize_country(in->user_country, strlen(in->user_country), code))
			add_string(user, "country", code, 2);
		else
			tt_problem(notes, ERRCODE_INVALID_PARAMETER_VALUE,
					   "Use an ISO 3166 alpha-2 code such as US, GB or DE.",
					   "country is not an ISO 3166 alpha-2 code");
	}
}

/* The properties object: the value, its currency, the items and the rest */
static void
build_properties(FieldList *props, const TTEventInput *in, List **notes)
{
	JsonbValue	v;
	Jsonb	   *contents = NULL;
	const char *currency = NULL;
	Numeric		value = in->value;
	List	   *currency_notes = NIL;

	/* the currency first, for amounts in minor units; its note after value's */
	if (in->currency != NULL)
		currency = tt_checked_currency(in->currency, notes ? &currency_notes : NULL);
	if (value != NULL && in->value_minor && currency == NULL)
	{
		if (in->currency == NULL)
			tt_problem(notes, ERRCODE_INVALID_PARAMETER_VALUE,
					   "Map the order's currency: an amount in minor units is divided by the currency's own exponent.",
					   "value left out: it is in minor units and the event has no currency");
		value = NULL;
	}
	else if (value != NULL && in->value_minor && !numeric_is_nan(value) &&
			 !numeric_is_inf(value))
		value = tt_minor_to_major(value, currency);
	if (value != NULL && tt_checked_value(value, "value", notes))
	{
		add_numeric(props, "value", value);
		/* a lenient build says so; tt_event() leaves it to the caller */
		if (in->currency == NULL && notes != NULL)
			*notes = lappend(*notes, "currency missing: the value is sent without a currency, so TikTok cannot count it as revenue");
	}
	else if (in->value == NULL && currency != NULL && notes != NULL)
		*notes = lappend(*notes, "value missing: the event has a currency but no value (map value= or value_minor=)");
	if (notes != NULL)
		*notes = list_concat(*notes, currency_notes);
	if (currency != NULL)
		add_string(props, "currency", currency, 3);
	if (in->contents != NULL)
		contents = tt_checked_contents(in->contents, currency, notes);
	if (contents != NULL)
	{
		v.type = jbvBinary;
		v.val.binary.data = &contents->root;
		v.val.binary.len = VARSIZE(contents) - VARHDRSZ;
		add_value(props, "contents", v);
	}
	if (in->content_type != NULL)
	{
		if (strcmp(in->content_type, "product") == 0 ||
			strcmp(in->content_type, "product_group") == 0)
			add_plain(props, "content_type", in->content_type, notes);
		else
			tt_problem(notes, ERRCODE_INVALID_PARAMETER_VALUE,
					   "Use \"product\" when content_id names products, \"product_group\" when it names groups of variants.",
					   "content_type must be \"product\" or \"product_group\"");
	}
	add_plain(props, "order_id", in->order_id, notes);
	add_plain(props, "shop_id", in->shop_id, notes);
	add_plain(props, "description", in->description, notes);
	add_plain(props, "search_string", in->search_string, notes);
}

/* The page object */
static void
build_page(FieldList *page, const TTEventInput *in, List **notes)
{
	add_plain(page, "url", in->page_url, notes);
	add_plain(page, "referrer", in->referrer, notes);
}

/* The lead object: CRM events only (drop_for_source clears it elsewhere) */
static void
build_lead(FieldList *lead, const TTEventInput *in, List **notes)
{
	add_plain(lead, "lead_id", in->lead_id, notes);
	add_plain(lead, "lead_event_source", in->lead_event_source, notes);
}

/*
 * Clear what the event's source does not take: offline and CRM events
 * carry none of the browser's fields (ttclid, ttp, ip, user_agent, page,
 * limited_data_use), and only CRM events a lead.  They are never sent;
 * a lenient build notes them, tt_event() warns, since the caller may
 * pass one row's fields to events of every source.
 */
static void
drop_for_source(TTEventInput *in, List **notes)
{
	StringInfoData dropped;
	bool		browserless = in->source == TT_SOURCE_OFFLINE ||
		in->source == TT_SOURCE_CRM;

	initStringInfo(&dropped);
#define DROP_FIELD(cond, name, clear) \
	do { \
		if (cond) \
		{ \
			appendStringInfo(&dropped, "%s%s", dropped.len > 0 ? ", " : "", name); \
			clear; \
		} \
	} while (0)
	DROP_FIELD(browserless && !tt_is_blank(in->ttclid), "ttclid", in->ttclid = NULL);
	DROP_FIELD(browserless && !tt_is_blank(in->ttp), "ttp", in->ttp = NULL);
	DROP_FIELD(browserless && !tt_is_blank(in->ip), "ip", in->ip = NULL);
	DROP_FIELD(browserless && !tt_is_blank(in->user_agent), "user_agent", in->user_agent = NULL);
	DROP_FIELD(browserless && !tt_is_blank(in->page_url), "page_url", in->page_url = NULL);
	DROP_FIELD(browserless && !tt_is_blank(in->referrer), "referrer", in->referrer = NULL);
	DROP_FIELD(browserless && in->has_limited_data_use, "limited_data_use",
			   in->has_limited_data_use = false);
	DROP_FIELD(in->source != TT_SOURCE_CRM && !tt_is_blank(in->lead_id), "lead_id",
			   in->lead_id = NULL);
	DROP_FIELD(in->source != TT_SOURCE_CRM && !tt_is_blank(in->lead_event_source),
			   "lead_event_source", in->lead_event_source = NULL);
#undef DROP_FIELD
	if (dropped.len == 0)
		return;
	if (notes != NULL)
		*notes = lappend(*notes, psprintf("%s dropped: %s events do not take them",
										  dropped.data, tt_event_source_name(in->source)));
	else
		ereport(WARNING,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s left out: %s events do not take them",
						dropped.data, tt_event_source_name(in->source)),
				 errhint("Offline and CRM events carry no browser fields (ttclid, ttp, ip, user_agent, page, limited_data_use); only CRM events carry a lead.")));
}

/*
 * Build one event.  The event name and event_id are always checked
 * strictly: without them there is nothing to deduplicate on.
 */
Jsonb *
tt_build_event(const TTEventInput *given, List **notes)
{
	JsonbParseState *st = NULL;
	FieldList	user = {.name = "user"};
	FieldList	props = {.name = "properties"};
	FieldList	page = {.name = "page"};
	FieldList	lead = {.name = "lead"};
	TTEventInput source_input = *given;
	const TTEventInput *in = &source_input;
	JsonbValue	v;
	Jsonb	   *properties = in->properties;
	TimestampTz event_time;
	const char *problem;
	int			sqlstate = 0;

	if (in->event == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("event name must not be NULL"),
				 errhint("Use a standard name such as \"Purchase\"; tiktok_capi.tt_event_names() lists them.")));
	(void) tt_check_event_name(in->event, NULL);
	if ((problem = tt_event_source_problem(in)) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg_internal("%s", problem),
				 errhint("%s", in->source == TT_SOURCE_CRM ?
						 "Pass the CRM's id of the lead as lead_id." :
						 "tiktok_capi.tt_event_names() lists the standard names; custom names go to web events only.")));
	if (tt_is_blank(in->event_id))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("event_id must not be empty"),
				 errhint("Use the order id, the same one the pixel sends as event_id, so TikTok counts the conversion once.")));
	if ((problem = tt_event_id_problem(in->event_id, &sqlstate)) != NULL)
		ereport(ERROR,
				(errcode(sqlstate),
				 errmsg_internal("%s", problem),
				 errhint("%s", tt_hint_for(sqlstate,
										   "Use the order id, the same one the pixel sends as event_id: order ids are short."))));
	if (in->properties != NULL &&
		(!JB_ROOT_IS_OBJECT(in->properties) || JB_ROOT_IS_SCALAR(in->properties)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("properties must be a JSON object"),
				 errhint("For example '{\"shop_id\": \"s-1\"}'; its keys are added to the event's properties.")));
	if (in->properties != NULL)
	{
		v.type = jbvBinary;
		v.val.binary.data = &in->properties->root;
		v.val.binary.len = VARSIZE(in->properties) - VARHDRSZ;
		if ((problem = tt_json_problem(&v, &sqlstate)) != NULL)
		{
			tt_problem(notes, sqlstate,
					   tt_hint_for(sqlstate, "Numbers of the event stay below 1e15 in magnitude."),
					   "properties %s", problem);
			properties = NULL;
		}
	}
	event_time = in->has_event_time ? in->event_time : GetCurrentTransactionStartTimestamp();

	drop_for_source(&source_input, notes);
	build_user(&user, in, notes);
	build_properties(&props, in, notes);
	build_page(&page, in, notes);
	build_lead(&lead, in, notes);

	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	push_key(&st, "event");
	v.type = jbvString;
	v.val.string.val = (char *) in->event;
	v.val.string.len = strlen(in->event);
	pushJsonbValue(&st, WJB_VALUE, &v);
	push_key(&st, "event_id");
	v.val.string.val = (char *) in->event_id;
	v.val.string.len = strlen(in->event_id);
	pushJsonbValue(&st, WJB_VALUE, &v);
	push_key(&st, "event_time");
	v.type = jbvNumeric;
	v.val.numeric = int64_to_numeric(tt_unix_seconds(event_time, notes));
	pushJsonbValue(&st, WJB_VALUE, &v);
	push_object(&st, "user", &user, NULL);
	push_object(&st, "properties", &props, properties);
	push_object(&st, "page", &page, NULL);
	push_object(&st, "lead", &lead, NULL);
	if (in->has_limited_data_use)
	{
		push_key(&st, "limited_data_use");
		v.type = jbvBool;
		v.val.boolean = in->limited_data_use;
		pushJsonbValue(&st, WJB_VALUE, &v);
	}
	return JsonbValueToJsonb(pushJsonbValue(&st, WJB_END_OBJECT, NULL));
}

/*
 * A text argument as a C string, or NULL; NULL too for an argument the
 * function does not have, as in a database whose extension is not yet
 * updated to this library's version.
 */
static char *
arg_cstring(FunctionCallInfo fcinfo, int argno)
{
	if (argno >= PG_NARGS() || PG_ARGISNULL(argno))
		return NULL;
	return text_to_cstring(PG_GETARG_TEXT_PP(argno));
}

/*
 * tt_event(event, event_id, event_time, email, phone, external_id, ttclid,
 *			ttp, ip, user_agent, locale, value, currency, contents,
 *			content_type, order_id, description, search_string, page_url,
 *			referrer, limited_data_use, properties, default_country,
 *			first_name, last_name, zip_code, city, state, country,
 *			lead_id, lead_event_source, shop_id, event_source)
 *
 * country is the person's; a national phone number takes default_country,
 * else country, else the tiktok_capi.default_country setting, as a
 * trigger takes its country column for both.
 */
Datum
tt_event_sql(PG_FUNCTION_ARGS)
{
	TTEventInput in = {0};
	char	   *default_country;
	char	   *event_source;

	in.event = arg_cstring(fcinfo, 0);
	in.event_id = arg_cstring(fcinfo, 1);
	in.has_event_time = !PG_ARGISNULL(2);
	if (in.has_event_time)
		in.event_time = PG_GETARG_TIMESTAMPTZ(2);
	in.email = arg_cstring(fcinfo, 3);
	in.phone = arg_cstring(fcinfo, 4);
	in.external_id = arg_cstring(fcinfo, 5);
	in.ttclid = arg_cstring(fcinfo, 6);
	in.ttp = arg_cstring(fcinfo, 7);
	in.ip = arg_cstring(fcinfo, 8);
	in.user_agent = arg_cstring(fcinfo, 9);
	in.locale = arg_cstring(fcinfo, 10);
	in.value = PG_ARGISNULL(11) ? NULL : PG_GETARG_NUMERIC(11);
	in.currency = arg_cstring(fcinfo, 12);
	in.contents = PG_ARGISNULL(13) ? NULL : PG_GETARG_JSONB_P(13);
	in.content_type = arg_cstring(fcinfo, 14);
	in.order_id = arg_cstring(fcinfo, 15);
	in.description = arg_cstring(fcinfo, 16);
	in.search_string = arg_cstring(fcinfo, 17);
	in.page_url = arg_cstring(fcinfo, 18);
	in.referrer = arg_cstring(fcinfo, 19);
	in.has_limited_data_use = !PG_ARGISNULL(20);
	if (in.has_limited_data_use)
		in.limited_data_use = PG_GETARG_BOOL(20);
	in.properties = PG_ARGISNULL(21) ? NULL : PG_GETARG_JSONB_P(21);
	/* more match keys */
	in.first_name = arg_cstring(fcinfo, 23);
	in.last_name = arg_cstring(fcinfo, 24);
	in.zip_code = arg_cstring(fcinfo, 25);
	in.city = arg_cstring(fcinfo, 26);
	in.state = arg_cstring(fcinfo, 27);
	in.user_country = arg_cstring(fcinfo, 28);
	default_country = arg_cstring(fcinfo, 22);
	if (default_country == NULL && in.user_country != NULL)
		in.country = tt_country_lookup(in.user_country, strlen(in.user_country));
	if (in.country == NULL)
		in.country = tt_country_or_default(default_country);
	/* event sources */
	in.lead_id = arg_cstring(fcinfo, 29);
	in.lead_event_source = arg_cstring(fcinfo, 30);
	in.shop_id = arg_cstring(fcinfo, 31);
	event_source = arg_cstring(fcinfo, 32);
	if (event_source != NULL && !tt_event_source_from_name(event_source, &in.source))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("event_source must be web, app, offline or crm"),
				 errhint("It is the source of the pixel or event set the event goes to, as tt_add_pixel() was told.")));

	PG_RETURN_JSONB_P(tt_build_event(&in, NULL));
}
