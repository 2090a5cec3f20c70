/*-------------------------------------------------------------------------
 *
 * event_contents.c
 *	  What the Events API accepts in properties.contents[], the order's
 *	  items: an array of objects, content_id a string, price and quantity
 *	  numbers (quantity a whole one), nothing it would reject at any depth.
 *
 * The items are copied, made right where they can be (a numeric
 * content_id becomes a string, "8.00" a number), and checked strictly or
 * leniently as the caller asks (see util.c).
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

static bool push_content_item(JsonbParseState **st, JsonbContainer *item,
							  List **notes);

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
			else if (!tt_checked_value(v.val.numeric,
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
		if ((problem = tt_json_problem(&k, &sqlstate)) != NULL)
		{
			tt_problem(notes, sqlstate,
					   tt_hint_for(sqlstate, CONTENTS_HINT),
					   "contents: a key %s", problem);
			continue;
		}
		if ((problem = tt_json_problem(&v, &sqlstate)) != NULL)
		{
			tt_problem(notes, sqlstate,
					   tt_hint_for(sqlstate, CONTENTS_HINT),
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
Jsonb *
tt_checked_contents(Jsonb *contents, List **notes)
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
