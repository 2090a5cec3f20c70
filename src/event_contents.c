/*-------------------------------------------------------------------------
 *
 * event_contents.c
 *	  What the Events API accepts in properties.contents[], the order's
 *	  items: an array of objects, content_id a string, price and quantity
 *	  numbers (quantity a whole one), nothing it would reject at any depth.
 *
 * The items are copied field by field, each read from the key shops give
 * it (a Shopify line item's sku, title and price: see tt_item_fields),
 * made right where they can be (a numeric content_id becomes a string,
 * "8.00" a number, 1999 cents 19.99), and checked strictly or leniently as
 * the caller asks (see util.c).  Other keys are not sent.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"

#include "tiktok_capi.h"

#define CONTENTS_HINT \
	"For example '[{\"content_id\": \"1077218\", \"quantity\": 2, \"price\": 8.0}]'."

/*
 * The item fields TikTok takes, each with the keys (or a child table's
 * columns) it is read from, first found first: the names shops and their
 * platforms give them.  price_minor is the price in the currency's minor
 * unit (cents), sent as price when the item has none.
 */
const TTItemField tt_item_fields[] = {
	{"content_id", {"content_id", "product_id", "sku", "variant_id", "item_id"}},
	{"content_name", {"content_name", "product_name", "name", "title"}},
	{"content_category", {"content_category", "category"}},
	{"brand", {"brand"}},
	{"quantity", {"quantity", "qty"}},
	{"price", {"price", "unit_price"}},
	{"price_minor", {"price_minor", "price_cents", "unit_price_cents", "amount_cents"}},
};
const int	tt_n_item_fields = lengthof(tt_item_fields);

static JsonbValue *item_field(JsonbContainer *item, const TTItemField *f);
static bool push_content_item(JsonbParseState **st, JsonbContainer *item,
							  const char *currency, List **notes);

/* The item's value of a field: its first key present, not null nor blank */
static JsonbValue *
item_field(JsonbContainer *item, const TTItemField *f)
{
	for (int a = 0; a < lengthof(f->keys) && f->keys[a] != NULL; a++)
	{
		JsonbValue *v = getKeyJsonValueFromContainer(item, f->keys[a],
													 strlen(f->keys[a]), NULL);

		if (v == NULL || v->type == jbvNull)
			continue;
		if (v->type == jbvString &&
			tt_is_blank(pnstrdup(v->val.string.val, v->val.string.len)))
			continue;
		return v;
	}
	return NULL;
}

/*
 * Copy one contents[] item as TikTok takes it: its fields read from their
 * usual keys (a Shopify line item's sku, title, price), content_id a
 * string, price and quantity numbers (quantity a whole one); other keys are
 * not sent.  false if it cannot be made right (in a lenient build; a
 * direct call gets an ERROR).  A fractional quantity, a price in minor
 * units without a currency, and a value the API would reject (text not
 * UTF-8, a huge number) are left out of the item, noted.
 */
static bool
push_content_item(JsonbParseState **st, JsonbContainer *item,
				  const char *currency, List **notes)
{
	bool		priced = false;

	pushJsonbValue(st, WJB_BEGIN_OBJECT, NULL);
	for (int i = 0; i < tt_n_item_fields; i++)
	{
		const char *name = tt_item_fields[i].name;
		bool		is_minor = strcmp(name, "price_minor") == 0;
		bool		is_number = is_minor || strcmp(name, "price") == 0 ||
			strcmp(name, "quantity") == 0;
		JsonbValue *found = item_field(item, &tt_item_fields[i]);
		JsonbValue	k;
		JsonbValue	v;
		const char *problem;
		int			sqlstate = 0;

		if (found == NULL && i == 0 && notes != NULL)
			*notes = lappend(*notes, "contents: an item has no content_id (nor product_id, sku, variant_id or item_id), so TikTok cannot match it to a product");
		if (found == NULL || (is_minor && priced))
			continue;
		v = *found;
		if (is_number && v.type == jbvString)
		{
			Numeric		n = tt_numeric_from_string(v.val.string.val, v.val.string.len);

			if (n != NULL)
			{
				v.type = jbvNumeric;
				v.val.numeric = n;
			}
		}
		else if (!is_number && v.type == jbvNumeric)
		{
			char	   *s = DatumGetCString(DirectFunctionCall1(numeric_out,
																NumericGetDatum(v.val.numeric)));

			v.type = jbvString;
			v.val.string.val = s;
			v.val.string.len = strlen(s);
		}
		if (is_number && v.type != jbvNumeric)
		{
			tt_problem(notes, ERRCODE_INVALID_PARAMETER_VALUE, CONTENTS_HINT,
					   "contents: %s must be a number", is_minor ? "price" : name);
			return false;
		}
		if (!is_number && v.type != jbvString)
		{
			if (i == 0)
			{
				tt_problem(notes, ERRCODE_INVALID_PARAMETER_VALUE, CONTENTS_HINT,
						   "contents: content_id must be a string or a number");
				return false;
			}
			tt_problem(notes, ERRCODE_INVALID_PARAMETER_VALUE, CONTENTS_HINT,
					   "contents: %s must be text", name);
			continue;
		}
		if (is_minor)
		{
			if (currency == NULL)
			{
				tt_problem(notes, ERRCODE_INVALID_PARAMETER_VALUE,
						   "Map the order's currency: a price in minor units is divided by the currency's own exponent.",
						   "contents: price in minor units left out: the event has no currency");
				continue;
			}
			if (!numeric_is_nan(v.val.numeric) && !numeric_is_inf(v.val.numeric))
				v.val.numeric = tt_minor_to_major(v.val.numeric, currency);
			name = "price";
		}
		if (is_number &&
			!tt_checked_value(v.val.numeric,
							  strcmp(name, "price") == 0 ? "contents: price" :
							  "contents: quantity", notes))
			return false;
		if (strcmp(name, "quantity") == 0)
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
		if ((problem = tt_json_problem(&v, &sqlstate)) != NULL)
		{
			tt_problem(notes, sqlstate, tt_hint_for(sqlstate, CONTENTS_HINT),
					   "contents: \"%s\" %s", name, problem);
			continue;
		}
		priced |= strcmp(name, "price") == 0;
		k.type = jbvString;
		k.val.string.val = (char *) name;
		k.val.string.len = strlen(name);
		pushJsonbValue(st, WJB_KEY, &k);
		pushJsonbValue(st, WJB_VALUE, &v);
	}
	pushJsonbValue(st, WJB_END_OBJECT, NULL);
	return true;
}

/*
 * contents must be an array of objects; returns the cleaned copy, or NULL
 * when it is empty or (in a lenient build) unusable.  currency: the
 * event's checked currency, or NULL (for prices in minor units).
 */
Jsonb *
tt_checked_contents(Jsonb *contents, const char *currency, List **notes)
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
		if (!push_content_item(&st, v.val.binary.data, currency, notes))
			return NULL;
		n++;
	}
	res = pushJsonbValue(&st, WJB_END_ARRAY, NULL);
	return n > 0 ? JsonbValueToJsonb(res) : NULL;
}
