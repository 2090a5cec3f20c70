/*-------------------------------------------------------------------------
 *
 * event_rules.c
 *	  What the Events API accepts in an event: the event names and the
 *	  currencies it knows, event_ids, amounts, times, and text and JSON it
 *	  can read.  Also the SQL functions that list the names and currencies:
 *	  tt_event_names(), tt_currencies().
 *
 * Each check is strict or lenient as its caller asks (notes NULL or not,
 * see util.c): misuse is an ERROR with a hint; in a lenient build (the
 * order trigger's) a bad optional field is dropped and noted instead.
 * Identifier values never appear in messages: they end up in logs.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "tiktok_capi.h"

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

static bool within_max_amount(Numeric n);
static void squash_name(const char *in, char *out, size_t outsize);
static int	currency_cmp(const void *key, const void *elem);

/*
 * Can this text go into the request body?  It must be UTF-8: in a SQL_ASCII
 * database text may hold any bytes, and one bad byte makes the whole body
 * invalid JSON.  Other encodings are valid text, converted when sent.
 */
bool
tt_sendable_text(const char *s, size_t len)
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
const char *
tt_json_problem(JsonbValue *v, int *sqlstate)
{
	JsonbIterator *it;
	JsonbValue	sub;
	JsonbIteratorToken tok;
	const char *problem = NULL;

	if (v->type == jbvString && !tt_sendable_text(v->val.string.val, v->val.string.len))
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
			problem = tt_json_problem(&sub, sqlstate);
	return problem;
}

/*
 * The hint for a problem with sqlstate: the UTF-8 one for text that is not
 * UTF-8, else otherwise.
 */
const char *
tt_hint_for(int sqlstate, const char *otherwise)
{
	return sqlstate == ERRCODE_CHARACTER_NOT_IN_REPERTOIRE ? TT_UTF8_HINT : otherwise;
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
	if (!tt_sendable_text(event_id, len))
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
	if (!tt_sendable_text(name, strlen(name)))
	{
		tt_problem(notes, ERRCODE_CHARACTER_NOT_IN_REPERTOIRE, TT_UTF8_HINT,
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

/* The event sources, by TTEventSource */
static const char *const event_source_names[] = {
	[TT_SOURCE_WEB] = "web",
	[TT_SOURCE_APP] = "app",
	[TT_SOURCE_OFFLINE] = "offline",
	[TT_SOURCE_CRM] = "crm",
};

/* A source's name as the API spells it */
const char *
tt_event_source_name(TTEventSource source)
{
	return event_source_names[source];
}

/*
 * The source a name spells (web, app, offline, crm); false when none.
 * The pixels table's CHECK keeps the worker's and capture's names valid.
 */
bool
tt_event_source_from_name(const char *name, TTEventSource *source)
{
	for (int i = 0; i < lengthof(event_source_names); i++)
		if (strcmp(name, event_source_names[i]) == 0)
		{
			*source = (TTEventSource) i;
			return true;
		}
	return false;
}

/*
 * Is the name one TikTok defines (standard or legacy)?  Offline events
 * take no other.
 */
bool
tt_is_standard_event_name(const char *name)
{
	for (size_t i = 0; i < N_EVENT_NAMES; i++)
		if (strcmp(name, event_names[i].name) == 0)
			return true;
	return false;
}

/*
 * Why an event cannot go to its source at all, or NULL: an offline event
 * with a custom name, a CRM event without lead_id.  tt_event() makes it
 * an ERROR, the order trigger a failed row.
 */
const char *
tt_event_source_problem(const TTEventInput *in)
{
	if (in->source == TT_SOURCE_OFFLINE && in->event != NULL &&
		!tt_is_standard_event_name(in->event))
		return psprintf("event name \"%s\" is not a standard one: offline events take standard names only",
						in->event);
	if (in->source == TT_SOURCE_CRM && tt_is_blank(in->lead_id))
		return "a CRM event needs lead_id (the lead's id in the CRM)";
	return NULL;
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
const char *
tt_checked_currency(const char *in, List **notes)
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

/*
 * An amount kept in the currency's minor unit (cents), in its major unit:
 * divided by 10 to the currency's ISO 4217 exponent, which is 2 for most,
 * 0 for those without a minor unit (JPY, KRW, ...) and 3 for the dinars.
 * currency is one tt_checked_currency() returned.
 */
Numeric
tt_minor_to_major(Numeric minor, const char *currency)
{
	static const char *const exponent0[] = {"BIF", "CLP", "ISK", "JPY", "KRW",
	"PYG", "VND", NULL};
	static const char *const exponent3[] = {"BHD", "JOD", "KWD", "OMR", "TND",
	NULL};
	const char *scale = "0.01";
	Datum		major;

	for (int i = 0; exponent0[i] != NULL; i++)
		if (strcmp(currency, exponent0[i]) == 0)
			return minor;
	for (int i = 0; exponent3[i] != NULL; i++)
		if (strcmp(currency, exponent3[i]) == 0)
			scale = "0.001";
	/* an exact product: 1999 * 0.01 is 19.99, never 19.9900000000000000 */
	major = DirectFunctionCall2(numeric_mul, NumericGetDatum(minor),
								DirectFunctionCall3(numeric_in, CStringGetDatum(scale),
													ObjectIdGetDatum(InvalidOid),
													Int32GetDatum(-1)));
	return DatumGetNumeric(DirectFunctionCall1(numeric_trim_scale, major));
}

/* A money amount must be a finite number, zero or more, below 1e15 */
bool
tt_checked_value(Numeric value, const char *what, List **notes)
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
int64
tt_unix_seconds(TimestampTz t, List **notes)
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
