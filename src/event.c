/*-------------------------------------------------------------------------
 *
 * event.c
 *	  The event builder: raw order data in, one Events API event (an
 *	  element of the request's data[] array) out, as jsonb.  Also the SQL
 *	  functions over it: tt_event(), tt_event_names(), tt_currencies().
 *
 * The builder hashes identifiers, turns event_time into unix seconds,
 * makes event_id and content_id JSON strings and value and price JSON
 * numbers, and leaves out what is NULL or empty.  Misuse is an ERROR with
 * a hint; in a lenient build (the order trigger's) a bad optional field is
 * dropped and noted instead, so tracking never breaks the shop.
 * Identifier values never appear in messages: they end up in logs.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/timestamp.h"

#include "tiktok_capi.h"

PG_FUNCTION_INFO_V1(tt_event_sql);
PG_FUNCTION_INFO_V1(tt_event_names_sql);
PG_FUNCTION_INFO_V1(tt_currencies_sql);

/* An event may be at most this far ahead of the server's clock */
#define TT_MAX_FUTURE_USECS (5 * 60 * USECS_PER_SEC)

/* One event name TikTok knows, and what became of it */
typedef struct EventName
{
	const char *name;
	const char *current;		/* the name it was renamed to, or NULL */
} EventName;

/* Standard web events, then the legacy names TikTok still accepts */
static const EventName event_names[] = {
	{"AddPaymentInfo", NULL},
	{"AddToCart", NULL},
	{"AddToWishlist", NULL},
	{"ApplicationApproval", NULL},
	{"CompleteRegistration", NULL},
	{"Contact", NULL},
	{"CustomizeProduct", NULL},
	{"Download", NULL},
	{"FindLocation", NULL},
	{"InitiateCheckout", NULL},
	{"Lead", NULL},
	{"Purchase", NULL},
	{"Schedule", NULL},
	{"Search", NULL},
	{"StartTrial", NULL},
	{"SubmitApplication", NULL},
	{"Subscribe", NULL},
	{"ViewContent", NULL},
	{"CompletePayment", "Purchase"},
	{"SubmitForm", "Lead"},
	{"PlaceAnOrder", NULL},
	{"ClickButton", NULL},
};
#define N_EVENT_NAMES (sizeof(event_names) / sizeof(event_names[0]))
/* the legacy names start here */
#define FIRST_LEGACY_NAME 18

/* ISO 4217 codes TikTok accepts, sorted for bsearch */
static const char *const currencies[] = {
	"AED", "ARS", "AUD", "BDT", "BHD", "BIF", "BOB", "BRL", "CAD", "CHF",
	"CLP", "CNY", "COP", "CRC", "CZK", "DKK", "DZD", "EGP", "EUR", "GBP",
	"GTQ", "HKD", "HNL", "HUF", "IDR", "ILS", "INR", "ISK", "JPY", "KES",
	"KHR", "KRW", "KWD", "KZT", "MAD", "MOP", "MXN", "MYR", "NGN", "NIO",
	"NOK", "NZD", "OMR", "PEN", "PHP", "PKR", "PLN", "PYG", "QAR", "RON",
	"RUB", "SAR", "SEK", "SGD", "THB", "TRY", "TWD", "UAH", "USD", "VES",
	"VND", "ZAR",
};
#define N_CURRENCIES (sizeof(currencies) / sizeof(currencies[0]))

#define CONTENTS_HINT \
	"For example '[{\"content_id\": \"1077218\", \"quantity\": 2, \"price\": 8.0}]'."

/* Up to this many named fields in one object of the event */
#define MAX_FIELDS 12

/* The fields of one object of the event (user, properties or page) */
typedef struct FieldList
{
	int			n;
	const char *keys[MAX_FIELDS];
	JsonbValue	vals[MAX_FIELDS];
} FieldList;

static void field_problem(List **notes, int sqlstate, const char *hint,
						  const char *fmt,...) pg_attribute_printf(4, 5);
static void squash_name(const char *in, char *out, size_t outsize);
static int	currency_cmp(const void *key, const void *elem);
static const char *checked_currency(const char *in, List **notes);
static bool checked_value(Numeric value, const char *what, List **notes);
static int64 unix_seconds(TimestampTz t, List **notes);
static Jsonb *checked_contents(Jsonb *contents, List **notes);
static bool push_content_item(JsonbParseState **st, JsonbContainer *item,
							  List **notes);
static void add_value(FieldList *l, const char *key, JsonbValue v);
static void add_string(FieldList *l, const char *key, const char *s, size_t len);
static void add_plain(FieldList *l, const char *key, const char *s);
static void add_numeric(FieldList *l, const char *key, Numeric n);
static void push_key(JsonbParseState **st, const char *key);
static void push_object(JsonbParseState **st, const char *key,
						FieldList *l, Jsonb *extra);
static char *arg_cstring(FunctionCallInfo fcinfo, int argno);

/* vsprintf into palloc'd memory (what psprintf does, for a va_list) */
char *
tt_vpsprintf(const char *fmt, va_list args)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (;;)
	{
		va_list		copy;
		int			needed;

		va_copy(copy, args);
		needed = appendStringInfoVA(&buf, fmt, copy);
		va_end(copy);
		if (needed == 0)
			break;
		enlargeStringInfo(&buf, needed);
	}
	return buf.data;
}

/*
 * A bad field: an ERROR for a direct call; in a lenient build (notes not
 * NULL) a note for the outbox row, and the caller drops the field.
 */
static void
field_problem(List **notes, int sqlstate, const char *hint, const char *fmt,...)
{
	va_list		args;
	char	   *msg;

	va_start(args, fmt);
	msg = tt_vpsprintf(fmt, args);
	va_end(args);
	if (notes == NULL)
		ereport(ERROR,
				(errcode(sqlstate),
				 errmsg_internal("%s", msg),
				 errhint("%s", hint)));
	*notes = lappend(*notes, msg);
}

/*
 * Lowercase ASCII with spaces, underscores and dashes removed: the form in
 * which "Add To Cart", "add_to_cart" and "AddToCart" are the same name.
 */
static void
squash_name(const char *in, char *out, size_t outsize)
{
	size_t		o = 0;

	for (; *in != '\0' && o + 1 < outsize; in++)
	{
		char		c = *in;

		if (c == ' ' || c == '_' || c == '-' || c == '\t')
			continue;
		out[o++] = (c >= 'A' && c <= 'Z') ? (char) (c - 'A' + 'a') : c;
	}
	out[o] = '\0';
}

/*
 * A name TikTok knows passes as given, and so does a custom name; a name
 * that is a standard one misspelled by case or spacing is an error (or a
 * note, and false, when notes is given), since TikTok would count it as a
 * custom event and the pixel's would not pair.
 */
bool
tt_check_event_name(const char *name, List **notes)
{
	char		squashed[64];
	char		known[64];

	if (name[0] == '\0')
	{
		field_problem(notes, ERRCODE_INVALID_PARAMETER_VALUE,
					  "Use a standard name such as \"Purchase\"; tiktok_capi.tt_event_names() lists them.",
					  "event name must not be empty");
		return false;
	}
	for (size_t i = 0; i < N_EVENT_NAMES; i++)
		if (strcmp(name, event_names[i].name) == 0)
			return true;

	squash_name(name, squashed, sizeof(squashed));
	for (size_t i = 0; i < N_EVENT_NAMES; i++)
	{
		squash_name(event_names[i].name, known, sizeof(known));
		if (strcmp(squashed, known) != 0)
			continue;
		field_problem(notes, ERRCODE_INVALID_PARAMETER_VALUE,
					  event_names[i].current != NULL ?
					  psprintf("Event names are case-sensitive. Use \"%s\" (legacy) or its current name \"%s\", the same as the pixel does.",
							   event_names[i].name, event_names[i].current) :
					  psprintf("Event names are case-sensitive. Use \"%s\", the same as the pixel does.",
							   event_names[i].name),
					  "event name \"%s\" is not spelled as TikTok's \"%s\"",
					  name, event_names[i].name);
		return false;
	}
	return true;
}

/* bsearch comparator over the currency table */
static int
currency_cmp(const void *key, const void *elem)
{
	return strcmp((const char *) key, *(const char *const *) elem);
}

/*
 * The ISO 4217 code, trimmed and uppercased, if TikTok accepts it; NULL in
 * a lenient build when it does not.
 */
static const char *
checked_currency(const char *in, List **notes)
{
	size_t		len = strlen(in);
	char		code[4];

	tt_trim(&in, &len);
	if (len == 3)
	{
		for (int i = 0; i < 3; i++)
			code[i] = pg_ascii_toupper((unsigned char) in[i]);
		code[3] = '\0';
		if (bsearch(code, currencies, N_CURRENCIES, sizeof(char *),
					currency_cmp) != NULL)
			return pstrdup(code);
	}
	field_problem(notes, ERRCODE_INVALID_PARAMETER_VALUE,
				  "Use an ISO 4217 code from tiktok_capi.tt_currencies().",
				  "currency \"%.*s\" is not one TikTok accepts",
					(int) Min(len, 16), in);
	return NULL;
}

/* A money amount must be a finite number, zero or more */
static bool
checked_value(Numeric value, const char *what, List **notes)
{
	const char *problem = NULL;

	if (numeric_is_nan(value) || numeric_is_inf(value))
		problem = "must be a finite number";
	else if (DatumGetBool(DirectFunctionCall2(numeric_lt,
											  NumericGetDatum(value),
											  NumericGetDatum(int64_to_numeric(0)))))
		problem = "must not be negative";
	if (problem == NULL)
		return true;
	field_problem(notes, ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
				  "Amounts are sent as JSON numbers of zero or more, in the event's currency.",
				  "%s %s", what, problem);
	return false;
}

/*
 * The event time as unix seconds.  Infinite times and times more than five
 * minutes ahead of the clock are errors; in a lenient build they become
 * the current time.
 */
static int64
unix_seconds(TimestampTz t, List **notes)
{
	TimestampTz now = GetCurrentTimestamp();
	const char *problem = NULL;

	if (TIMESTAMP_NOT_FINITE(t))
		problem = "must be finite";
	else if (t > now + TT_MAX_FUTURE_USECS)
		problem = "is in the future";
	if (problem != NULL)
	{
		field_problem(notes, ERRCODE_DATETIME_VALUE_OUT_OF_RANGE,
				  "TikTok takes events that have happened, up to now.",
				  "event_time %s", problem);
		t = now;
	}
	/* floor division: times before 1970 stay correct */
	t += (TimestampTz) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY;
	return (t >= 0) ? t / USECS_PER_SEC : -((-t + USECS_PER_SEC - 1) / USECS_PER_SEC);
}

/*
 * A numeric from a JSON string that spells a plain decimal number, or NULL.
 * Spelled out here so NaN, Infinity and garbage never reach numeric_in.
 */
Numeric
tt_numeric_from_string(const char *s, int len)
{
	int			i = 0;
	int			digits = 0;
	char	   *copy;

	while (i < len && s[i] == ' ')
		i++;
	if (i < len && (s[i] == '-' || s[i] == '+'))
		i++;
	for (; i < len && isdigit((unsigned char) s[i]); i++)
		digits++;
	if (i < len && s[i] == '.')
		for (i++; i < len && isdigit((unsigned char) s[i]); i++)
			digits++;
	while (i < len && s[i] == ' ')
		i++;
	if (digits == 0 || digits > 100 || i != len)
		return NULL;
	copy = pnstrdup(s, len);
	return DatumGetNumeric(DirectFunctionCall3(numeric_in,
											   CStringGetDatum(copy),
											   ObjectIdGetDatum(InvalidOid),
											   Int32GetDatum(-1)));
}

/*
 * Copy one contents[] item, making content_id a string and price and
 * quantity numbers, and dropping JSON nulls.  false if it cannot be made
 * right (in a lenient build; a direct call gets an ERROR).
 */
static bool
push_content_item(JsonbParseState **st, JsonbContainer *item, List **notes)
{
	JsonbIterator *it = JsonbIteratorInit(item);
	JsonbValue	k;
	JsonbValue	v;
	JsonbIteratorToken tok;

	pushJsonbValue(st, WJB_BEGIN_OBJECT, NULL);
	(void) JsonbIteratorNext(&it, &k, true);	/* WJB_BEGIN_OBJECT */
	while ((tok = JsonbIteratorNext(&it, &k, true)) == WJB_KEY)
	{
		const char *bad = NULL;

		tok = JsonbIteratorNext(&it, &v, true);
		Assert(tok == WJB_VALUE);
		if (v.type == jbvNull)
			continue;
#define KEY_IS(s) (k.val.string.len == strlen(s) && \
				   memcmp(k.val.string.val, s, strlen(s)) == 0)
		if (KEY_IS("content_id"))
		{
			if (v.type == jbvNumeric)
			{
				char	   *s = DatumGetCString(DirectFunctionCall1(numeric_out,
																	NumericGetDatum(v.val.numeric)));

				v.type = jbvString;
				v.val.string.val = s;
				v.val.string.len = strlen(s);
			}
			else if (v.type != jbvString)
				bad = "content_id must be a string or a number";
		}
		else if (KEY_IS("price") || KEY_IS("quantity"))
		{
			if (v.type == jbvString)
			{
				Numeric		n = tt_numeric_from_string(v.val.string.val,
													v.val.string.len);

				if (n != NULL)
				{
					v.type = jbvNumeric;
					v.val.numeric = n;
				}
			}
			if (v.type != jbvNumeric)
				bad = KEY_IS("price") ? "price must be a number" :
					"quantity must be a number";
			else if (!checked_value(v.val.numeric,
									KEY_IS("price") ? "contents: price" :
									"contents: quantity",
									notes))
				return false;
		}
#undef KEY_IS
		if (bad != NULL)
		{
			field_problem(notes, ERRCODE_INVALID_PARAMETER_VALUE, CONTENTS_HINT,
				  "contents: %s", bad);
			return false;
		}
		pushJsonbValue(st, WJB_KEY, &k);
		pushJsonbValue(st, WJB_VALUE, &v);
	}
	pushJsonbValue(st, WJB_END_OBJECT, NULL);
	return true;
}

/*
 * contents must be an array of objects; returns the cleaned copy, or NULL
 * when it is empty or (in a lenient build) unusable.
 */
static Jsonb *
checked_contents(Jsonb *contents, List **notes)
{
	JsonbParseState *st = NULL;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbValue *res;
	JsonbIteratorToken tok;
	int			n = 0;

	if (!JB_ROOT_IS_ARRAY(contents) || JB_ROOT_IS_SCALAR(contents))
	{
		field_problem(notes, ERRCODE_INVALID_PARAMETER_VALUE, CONTENTS_HINT,
				  "contents must be a JSON array of objects");
		return NULL;
	}
	it = JsonbIteratorInit(&contents->root);
	pushJsonbValue(&st, WJB_BEGIN_ARRAY, NULL);
	(void) JsonbIteratorNext(&it, &v, true);	/* WJB_BEGIN_ARRAY */
	while ((tok = JsonbIteratorNext(&it, &v, true)) == WJB_ELEM)
	{
		if (v.type != jbvBinary || !JsonContainerIsObject(v.val.binary.data))
		{
			field_problem(notes, ERRCODE_INVALID_PARAMETER_VALUE, CONTENTS_HINT,
						  "contents must be a JSON array of objects (item %d is not an object)",
						  n + 1);
			return NULL;
		}
		if (!push_content_item(&st, v.val.binary.data, notes))
			return NULL;
		n++;
	}
	res = pushJsonbValue(&st, WJB_END_ARRAY, NULL);
	return n > 0 ? JsonbValueToJsonb(res) : NULL;
}

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

/* Add a field sent as given, trimmed; nothing when NULL or blank */
static void
add_plain(FieldList *l, const char *key, const char *s)
{
	size_t		len;

	if (s == NULL)
		return;
	len = strlen(s);
	tt_trim(&s, &len);
	if (len > 0)
		add_string(l, key, s, len);
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

/*
 * Build one event.  The event name and event_id are always checked
 * strictly: without them there is nothing to deduplicate on.
 */
Jsonb *
tt_build_event(const TTEventInput *in, List **notes)
{
	JsonbParseState *st = NULL;
	FieldList	user = {0};
	FieldList	props = {0};
	FieldList	page = {0};
	JsonbValue	v;
	char	   *hash;
	Jsonb	   *contents = NULL;
	TimestampTz event_time;

	if (in->event == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("event name must not be NULL"),
				 errhint("Use a standard name such as \"Purchase\"; tiktok_capi.tt_event_names() lists them.")));
	(void) tt_check_event_name(in->event, NULL);
	if (in->event_id == NULL || in->event_id[strspn(in->event_id, " \t\r\n")] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("event_id must not be empty"),
				 errhint("Use the order id, the same one the pixel sends as event_id, so TikTok counts the conversion once.")));
	if (in->properties != NULL &&
		(!JB_ROOT_IS_OBJECT(in->properties) || JB_ROOT_IS_SCALAR(in->properties)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("properties must be a JSON object"),
				 errhint("For example '{\"shop_id\": \"s-1\"}'; its keys are added to the event's properties.")));
	event_time = in->has_event_time ? in->event_time : GetCurrentTransactionStartTimestamp();

	/* user: identifiers hashed, the rest plain */
	hash = palloc(TT_HASH_BUFSIZE);
	if (in->email != NULL && tt_hash_email(in->email, strlen(in->email), hash))
	{
		add_string(&user, "email", hash, 64);
		hash = palloc(TT_HASH_BUFSIZE);
	}
	if (in->phone != NULL &&
		tt_hash_phone(in->phone, strlen(in->phone), in->country, hash))
	{
		add_string(&user, "phone", hash, 64);
		hash = palloc(TT_HASH_BUFSIZE);
	}
	if (in->external_id != NULL &&
		tt_hash_external_id(in->external_id, strlen(in->external_id), hash))
		add_string(&user, "external_id", hash, 64);
	add_plain(&user, "ttclid", in->ttclid);
	add_plain(&user, "ttp", in->ttp);
	if (in->ip != NULL)
	{
		char	   *ip = palloc(TT_IP_BUFSIZE);

		if (tt_normalize_ip(in->ip, strlen(in->ip), ip))
			add_string(&user, "ip", ip, strlen(ip));
		else
			field_problem(notes, ERRCODE_INVALID_TEXT_REPRESENTATION,
						  "Pass the customer's address as text, such as '203.0.113.7', or NULL.",
						  "ip is not an IPv4 or IPv6 address");
	}
	add_plain(&user, "user_agent", in->user_agent);
	add_plain(&user, "locale", in->locale);

	/* properties */
	if (in->value != NULL && checked_value(in->value, "value", notes))
		add_numeric(&props, "value", in->value);
	if (in->currency != NULL)
	{
		const char *currency = checked_currency(in->currency, notes);

		if (currency != NULL)
			add_string(&props, "currency", currency, 3);
	}
	if (in->contents != NULL)
		contents = checked_contents(in->contents, notes);
	if (contents != NULL)
	{
		v.type = jbvBinary;
		v.val.binary.data = &contents->root;
		v.val.binary.len = VARSIZE(contents) - VARHDRSZ;
		add_value(&props, "contents", v);
	}
	if (in->content_type != NULL)
	{
		if (strcmp(in->content_type, "product") == 0 ||
			strcmp(in->content_type, "product_group") == 0)
			add_plain(&props, "content_type", in->content_type);
		else
			field_problem(notes, ERRCODE_INVALID_PARAMETER_VALUE,
				  "Use \"product\" when content_id names products, \"product_group\" when it names groups of variants.",
				  "content_type must be \"product\" or \"product_group\"");
	}
	add_plain(&props, "order_id", in->order_id);
	add_plain(&props, "description", in->description);
	add_plain(&props, "search_string", in->search_string);

	/* page */
	add_plain(&page, "url", in->page_url);
	add_plain(&page, "referrer", in->referrer);

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
	v.val.numeric = int64_to_numeric(unix_seconds(event_time, notes));
	pushJsonbValue(&st, WJB_VALUE, &v);
	push_object(&st, "user", &user, NULL);
	push_object(&st, "properties", &props, in->properties);
	push_object(&st, "page", &page, NULL);
	if (in->has_limited_data_use)
	{
		push_key(&st, "limited_data_use");
		v.type = jbvBool;
		v.val.boolean = in->limited_data_use;
		pushJsonbValue(&st, WJB_VALUE, &v);
	}
	return JsonbValueToJsonb(pushJsonbValue(&st, WJB_END_OBJECT, NULL));
}

/* A text argument as a C string, or NULL */
static char *
arg_cstring(FunctionCallInfo fcinfo, int argno)
{
	return PG_ARGISNULL(argno) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(argno));
}

/*
 * tt_event(event, event_id, event_time, email, phone, external_id, ttclid,
 *			ttp, ip, user_agent, locale, value, currency, contents,
 *			content_type, order_id, description, search_string, page_url,
 *			referrer, limited_data_use, properties, default_country)
 */
Datum
tt_event_sql(PG_FUNCTION_ARGS)
{
	TTEventInput in = {0};

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
	in.country = tt_country_or_default(arg_cstring(fcinfo, 22));

	PG_RETURN_JSONB_P(tt_build_event(&in, NULL));
}

/* tt_event_names(): the names TikTok knows, so a user can check spelling */
Datum
tt_event_names_sql(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, 0);
	for (size_t i = 0; i < N_EVENT_NAMES; i++)
	{
		Datum		values[3];
		bool		nulls[3] = {false, false, false};

		values[0] = CStringGetTextDatum(event_names[i].name);
		values[1] = CStringGetTextDatum(i < FIRST_LEGACY_NAME ? "standard" : "legacy");
		if (event_names[i].current != NULL)
			values[2] = CStringGetTextDatum(event_names[i].current);
		else
			nulls[2] = true;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* tt_currencies(): the ISO 4217 codes TikTok accepts */
Datum
tt_currencies_sql(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	for (size_t i = 0; i < N_CURRENCIES; i++)
	{
		Datum		value = CStringGetTextDatum(currencies[i]);
		bool		null = false;

		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &value, &null);
	}
	return (Datum) 0;
}
