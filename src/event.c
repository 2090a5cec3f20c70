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
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "tiktok_capi.h"

PG_FUNCTION_INFO_V1(tt_event_sql);
PG_FUNCTION_INFO_V1(tt_event_names_sql);
PG_FUNCTION_INFO_V1(tt_currencies_sql);

/* An event may be at most this far ahead of the server's clock */
#define TT_MAX_FUTURE_USECS (5 * 60 * USECS_PER_SEC)

/* The earliest event time sent: TikTok takes positive unix seconds only */
#define TT_MIN_EVENT_TIME \
	((TimestampTz) (UNIX_EPOCH_JDATE - POSTGRES_EPOCH_JDATE) * USECS_PER_DAY + USECS_PER_SEC)

/*
 * Numbers of the event stay below this in magnitude (1e15): no order total
 * or price reaches a quadrillion in any currency, and a number of thousands
 * of digits makes a request body the API cannot parse.
 */
#define TT_MAX_AMOUNT INT64CONST(1000000000000000)

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
#define UTF8_HINT \
	"A SQL_ASCII database keeps text as bytes, and TikTok takes UTF-8 only: store the text as UTF-8."

/* Up to this many named fields in one object of the event */
#define MAX_FIELDS 12

/* The fields of one object of the event (user, properties or page) */
typedef struct FieldList
{
	const char *name;			/* the object's key, for messages */
	int			n;
	const char *keys[MAX_FIELDS];
	JsonbValue	vals[MAX_FIELDS];
} FieldList;

static bool sendable_text(const char *s, size_t len);
static bool within_max_amount(Numeric n);
static const char *json_problem(JsonbValue *v, int *sqlstate);
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
static void add_plain(FieldList *l, const char *key, const char *s,
					  List **notes);
static void add_hashed(FieldList *l, const char *key, const char *raw,
					   const char *hash, const char *why, List **notes);
static void add_numeric(FieldList *l, const char *key, Numeric n);
static void push_key(JsonbParseState **st, const char *key);
static void push_object(JsonbParseState **st, const char *key,
						FieldList *l, Jsonb *extra);
static char *arg_cstring(FunctionCallInfo fcinfo, int argno);

/*
 * Can this text go into the request body?  It must be UTF-8: in a SQL_ASCII
 * database text may hold any bytes, and one bad byte makes the whole body
 * invalid JSON.  Other encodings are valid text, converted when sent.
 */
static bool
sendable_text(const char *s, size_t len)
{
	return GetDatabaseEncoding() != PG_SQL_ASCII ||
		pg_encoding_verifymbstr(PG_UTF8, s, len) == len;
}

/* Is |n| below TT_MAX_AMOUNT?  NaN and infinities are not */
static bool
within_max_amount(Numeric n)
{
	static Numeric max = NULL;

	if (max == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		max = int64_to_numeric(TT_MAX_AMOUNT);
		MemoryContextSwitchTo(old);
	}
	return DatumGetBool(DirectFunctionCall2(numeric_lt,
											DirectFunctionCall1(numeric_abs,
																NumericGetDatum(n)),
											NumericGetDatum(max)));
}

/*
 * What the Events API would reject in a JSON value passed through as given
 * (a key or value of contents[], or properties): text that is not UTF-8,
 * or a number of absurd magnitude, at any depth.  NULL when there is none;
 * *sqlstate gets the error code.  Walks nested values without recursion.
 */
static const char *
json_problem(JsonbValue *v, int *sqlstate)
{
	JsonbIterator *it;
	JsonbValue	sub;
	JsonbIteratorToken tok;
	const char *problem = NULL;

	if (v->type == jbvString && !sendable_text(v->val.string.val, v->val.string.len))
	{
		*sqlstate = ERRCODE_CHARACTER_NOT_IN_REPERTOIRE;
		return "holds text that is not valid UTF-8";
	}
	if (v->type == jbvNumeric && !within_max_amount(v->val.numeric))
	{
		*sqlstate = ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE;
		return "holds a number of 1e15 or more in magnitude";
	}
	if (v->type != jbvBinary)
		return NULL;
	it = JsonbIteratorInit(v->val.binary.data);
	while (problem == NULL &&
		   (tok = JsonbIteratorNext(&it, &sub, false)) != WJB_DONE)
		if (tok == WJB_KEY || tok == WJB_VALUE || tok == WJB_ELEM)
			problem = json_problem(&sub, sqlstate);
	return problem;
}

/*
 * Why an event_id cannot be sent, or NULL: longer than TT_MAX_EVENT_ID_LEN
 * (22001), or not UTF-8 (22021, SQL_ASCII databases only).  *sqlstate gets
 * the error code.  Shared with the trigger, which queues such an event as
 * failed instead of calling the builder.
 */
const char *
tt_event_id_problem(const char *event_id, int *sqlstate)
{
	size_t		len = strlen(event_id);

	if (len > TT_MAX_EVENT_ID_LEN)
	{
		*sqlstate = ERRCODE_STRING_DATA_RIGHT_TRUNCATION;
		return psprintf("event_id is longer than %d bytes (%zu)",
						TT_MAX_EVENT_ID_LEN, len);
	}
	if (!sendable_text(event_id, len))
	{
		*sqlstate = ERRCODE_CHARACTER_NOT_IN_REPERTOIRE;
		return "event_id is not valid UTF-8";
	}
	return NULL;
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
		tt_problem(notes, ERRCODE_INVALID_PARAMETER_VALUE,
				   "Use a standard name such as \"Purchase\"; tiktok_capi.tt_event_names() lists them.",
				   "event name must not be empty");
		return false;
	}
	if (!sendable_text(name, strlen(name)))
	{
		tt_problem(notes, ERRCODE_CHARACTER_NOT_IN_REPERTOIRE, UTF8_HINT,
				   "event name is not valid UTF-8");
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
		tt_problem(notes, ERRCODE_INVALID_PARAMETER_VALUE,
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
	tt_problem(notes, ERRCODE_INVALID_PARAMETER_VALUE,
			   "Use an ISO 4217 code from tiktok_capi.tt_currencies().",
			   "currency \"%.*s\" is not one TikTok accepts",
			   pg_mbcliplen(in, len, 16), in);
	return NULL;
}

/* A money amount must be a finite number, zero or more, below 1e15 */
static bool
checked_value(Numeric value, const char *what, List **notes)
{
	const char *problem = NULL;
	const char *hint = "Amounts are sent as JSON numbers of zero or more, in the event's currency.";

	if (numeric_is_nan(value) || numeric_is_inf(value))
		problem = "must be a finite number";
	else if (DatumGetBool(DirectFunctionCall2(numeric_lt,
											  NumericGetDatum(value),
											  NumericGetDatum(int64_to_numeric(0)))))
		problem = "must not be negative";
	else if (!within_max_amount(value))
	{
		problem = "must be less than 1e15";
		hint = "No total, price or quantity reaches a quadrillion in any currency: check the column's unit.";
	}
	if (problem == NULL)
		return true;
	tt_problem(notes, ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE, hint,
			   "%s %s", what, problem);
	return false;
}

/*
 * The event time as unix seconds, which TikTok takes positive only.
 * Infinite times, times more than five minutes ahead of the clock and
 * times before 1970-01-01 00:00:01 UTC are errors; in a lenient build they
 * become the transaction's start time, as a NULL one does.
 */
static int64
unix_seconds(TimestampTz t, List **notes)
{
	const char *problem = NULL;
	const char *hint = "TikTok takes events that have happened, up to now.";

	if (TIMESTAMP_NOT_FINITE(t))
		problem = "must be finite";
	else if (t > GetCurrentTimestamp() + TT_MAX_FUTURE_USECS)
		problem = "is in the future";
	else if (t < TT_MIN_EVENT_TIME)
	{
		problem = "is before 1970-01-01 00:00:01 UTC";
		hint = "TikTok takes event_time as unix seconds, which must be positive.";
	}
	if (problem != NULL)
	{
		tt_problem(notes, ERRCODE_DATETIME_VALUE_OUT_OF_RANGE, hint,
				   "event_time %s", problem);
		t = GetCurrentTransactionStartTimestamp();
	}
	t += (TimestampTz) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY;
	return t / USECS_PER_SEC;
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
 * Copy one contents[] item, making content_id a string, price and quantity
 * numbers (quantity a whole one), and dropping JSON nulls.  false if it
 * cannot be made right (in a lenient build; a direct call gets an ERROR).
 * A fractional quantity, and a key or value the API would reject (text
 * not UTF-8, a huge number), are left out of the item, noted.
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
		const char *problem;
		int			sqlstate = 0;

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
			else if (KEY_IS("quantity"))
			{
				/* 2.00 goes as 2; TikTok rejects 2.5 */
				Numeric		whole = DatumGetNumeric(DirectFunctionCall2(numeric_trunc,
																		NumericGetDatum(v.val.numeric),
																		Int32GetDatum(0)));

				if (!DatumGetBool(DirectFunctionCall2(numeric_eq,
													  NumericGetDatum(whole),
													  NumericGetDatum(v.val.numeric))))
				{
					tt_problem(notes, ERRCODE_INVALID_PARAMETER_VALUE, CONTENTS_HINT,
							   "contents: quantity must be a whole number");
					continue;
				}
				v.val.numeric = whole;
			}
		}
#undef KEY_IS
		if (bad != NULL)
		{
			tt_problem(notes, ERRCODE_INVALID_PARAMETER_VALUE, CONTENTS_HINT,
					   "contents: %s", bad);
			return false;
		}
		if ((problem = json_problem(&k, &sqlstate)) != NULL)
		{
			tt_problem(notes, sqlstate,
					   sqlstate == ERRCODE_CHARACTER_NOT_IN_REPERTOIRE ? UTF8_HINT : CONTENTS_HINT,
					   "contents: a key %s", problem);
			continue;
		}
		if ((problem = json_problem(&v, &sqlstate)) != NULL)
		{
			tt_problem(notes, sqlstate,
					   sqlstate == ERRCODE_CHARACTER_NOT_IN_REPERTOIRE ? UTF8_HINT : CONTENTS_HINT,
					   "contents: \"%.*s\" %s",
					   pg_mbcliplen(k.val.string.val, k.val.string.len, 32),
					   k.val.string.val, problem);
			continue;
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
		tt_problem(notes, ERRCODE_INVALID_PARAMETER_VALUE, CONTENTS_HINT,
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
			tt_problem(notes, ERRCODE_INVALID_PARAMETER_VALUE, CONTENTS_HINT,
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
	if (sendable_text(s, len))
		add_string(l, key, s, len);
	else
		tt_problem(notes, ERRCODE_CHARACTER_NOT_IN_REPERTOIRE, UTF8_HINT,
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
	FieldList	user = {.name = "user"};
	FieldList	props = {.name = "properties"};
	FieldList	page = {.name = "page"};
	JsonbValue	v;
	char	   *hash;
	Jsonb	   *contents = NULL;
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
	if (tt_is_blank(in->event_id))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("event_id must not be empty"),
				 errhint("Use the order id, the same one the pixel sends as event_id, so TikTok counts the conversion once.")));
	if ((problem = tt_event_id_problem(in->event_id, &sqlstate)) != NULL)
		ereport(ERROR,
				(errcode(sqlstate),
				 errmsg_internal("%s", problem),
				 errhint(sqlstate == ERRCODE_CHARACTER_NOT_IN_REPERTOIRE ? UTF8_HINT :
						 "Use the order id, the same one the pixel sends as event_id: order ids are short.")));
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
		if ((problem = json_problem(&v, &sqlstate)) != NULL)
		{
			tt_problem(notes, sqlstate,
					   sqlstate == ERRCODE_CHARACTER_NOT_IN_REPERTOIRE ? UTF8_HINT :
					   "Numbers of the event stay below 1e15 in magnitude.",
					   "properties %s", problem);
			properties = NULL;
		}
	}
	event_time = in->has_event_time ? in->event_time : GetCurrentTransactionStartTimestamp();

	/* user: identifiers hashed, the rest plain */
	if (in->email != NULL)
	{
		hash = palloc(TT_HASH_BUFSIZE);
		add_hashed(&user, "email", in->email,
				   tt_hash_email(in->email, strlen(in->email), hash) ? hash : NULL,
				   "not a usable address", notes);
	}
	if (in->phone != NULL)
	{
		hash = palloc(TT_HASH_BUFSIZE);
		add_hashed(&user, "phone", in->phone,
				   tt_hash_phone(in->phone, strlen(in->phone), in->country, hash) ? hash : NULL,
				   "not a usable number (E.164 with its +, or a national number with a country)",
				   notes);
	}
	if (in->external_id != NULL)
	{
		hash = palloc(TT_HASH_BUFSIZE);
		add_hashed(&user, "external_id", in->external_id,
				   tt_hash_external_id(in->external_id, strlen(in->external_id), hash) ? hash : NULL,
				   "not a usable id", notes);
	}
	add_plain(&user, "ttclid", in->ttclid, notes);
	add_plain(&user, "ttp", in->ttp, notes);
	if (in->ip != NULL)
	{
		char	   *ip = palloc(TT_IP_BUFSIZE);

		if (tt_normalize_ip(in->ip, strlen(in->ip), ip))
			add_string(&user, "ip", ip, strlen(ip));
		else
			tt_problem(notes, ERRCODE_INVALID_TEXT_REPRESENTATION,
					   "Pass the customer's address as text, such as '203.0.113.7', or NULL.",
					   "ip is not an IPv4 or IPv6 address");
	}
	add_plain(&user, "user_agent", in->user_agent, notes);
	add_plain(&user, "locale", in->locale, notes);

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
			add_plain(&props, "content_type", in->content_type, notes);
		else
			tt_problem(notes, ERRCODE_INVALID_PARAMETER_VALUE,
					   "Use \"product\" when content_id names products, \"product_group\" when it names groups of variants.",
					   "content_type must be \"product\" or \"product_group\"");
	}
	add_plain(&props, "order_id", in->order_id, notes);
	add_plain(&props, "description", in->description, notes);
	add_plain(&props, "search_string", in->search_string, notes);

	/* page */
	add_plain(&page, "url", in->page_url, notes);
	add_plain(&page, "referrer", in->referrer, notes);

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
	push_object(&st, "properties", &props, properties);
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
