/*-------------------------------------------------------------------------
 *
 * normalize_sql.c
 *	  SQL functions that normalize and hash customer identifiers
 *	  (tt_hash_email, tt_hash_phone, tt_hash_external_id, tt_hash_name and the
 *	  tt_normalize_* functions that show what gets hashed), over the pure-C
 *	  rules of normalize.c, and the country of national phone numbers
 *	  (tiktok_capi.default_country, defined in settings.c).
 *
 * Unusable input gives NULL, never an error: a bad email must not abort an
 * order.  Only a caller's own mistake (a country code that does not exist)
 * is an error.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"

#include "tiktok_capi.h"

PG_FUNCTION_INFO_V1(tt_hash_email_sql);
PG_FUNCTION_INFO_V1(tt_normalize_email_sql);
PG_FUNCTION_INFO_V1(tt_hash_phone_sql);
PG_FUNCTION_INFO_V1(tt_normalize_phone_sql);
PG_FUNCTION_INFO_V1(tt_hash_external_id_sql);
PG_FUNCTION_INFO_V1(tt_hash_name_sql);
PG_FUNCTION_INFO_V1(tt_normalize_name_sql);

/* The last country name a call site looked up (fn_extra), and its row */
typedef struct CountryCache
{
	char		iso[16];		/* the name as given, not NUL-terminated */
	size_t		len;
	const TTCountry *country;
} CountryCache;

static const TTCountry *country_arg(FunctionCallInfo fcinfo, int argno);

/*
 * The country for a national phone number: the one named (an error when it
 * does not exist), else the default_country setting, else none.
 */
const TTCountry *
tt_country_or_default(const char *iso)
{
	const TTCountry *c;

	if (iso == NULL)
		iso = tt_default_country;
	if (iso == NULL || iso[0] == '\0')
		return NULL;
	c = tt_country_lookup(iso, strlen(iso));
	if (c == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown country code \"%s\"", iso),
				 errhint("Use an ISO 3166 alpha-2 code such as US, GB or DE.")));
	return c;
}

/*
 * The country named by an optional text argument, else the default, as
 * tt_country_or_default gives it.  Each call site keeps its last answer in
 * fn_extra: a query hashes many phones with the same country, and a
 * lookup per row (cstring copy, trim, bsearch with strncmp) cost a tenth
 * of each hash.  Keyed on the bytes of the name, not on where they lie, so a
 * changed argument or default_country setting is seen at once.
 */
static const TTCountry *
country_arg(FunctionCallInfo fcinfo, int argno)
{
	CountryCache *cache;
	const char *iso;
	size_t		len;
	const TTCountry *c;

	if (PG_NARGS() > argno)
	{
		text	   *arg = PG_GETARG_TEXT_PP(argno);

		iso = VARDATA_ANY(arg);
		len = VARSIZE_ANY_EXHDR(arg);
	}
	else
	{
		iso = tt_default_country;
		len = (iso != NULL) ? strlen(iso) : 0;
	}
	if (len == 0)
		return NULL;			/* '' is no country, as in the setting */

	cache = (fcinfo->flinfo != NULL) ?
		(CountryCache *) fcinfo->flinfo->fn_extra : NULL;
	if (cache != NULL && cache->len == len &&
		memcmp(cache->iso, iso, len) == 0)
		return cache->country;

	c = tt_country_lookup(iso, len);
	if (c == NULL)
		return tt_country_or_default(pnstrdup(iso, len));	/* the error */
	if (fcinfo->flinfo != NULL && len <= sizeof(cache->iso))
	{
		if (cache == NULL)
		{
			cache = MemoryContextAlloc(fcinfo->flinfo->fn_mcxt,
									   sizeof(CountryCache));
			fcinfo->flinfo->fn_extra = cache;
		}
		memcpy(cache->iso, iso, len);
		cache->len = len;
		cache->country = c;
	}
	return c;
}

/* The identifiers the SQL functions take */
typedef enum Identifier
{
	ID_EMAIL,
	ID_PHONE,
	ID_EXTERNAL_ID,
	ID_NAME						/* a first name, last name or zip code */
} Identifier;

/*
 * The body of every tt_hash_* and tt_normalize_* function: the identifier
 * in the first argument, hashed (hex SHA-256 of its normalized form) or
 * normalized, or NULL when it is unusable.  The result is written in
 * place into a new text: no copy through cstring_to_text.  The phone
 * functions' optional second argument is the country.
 */
static Datum
identifier_sql(FunctionCallInfo fcinfo, Identifier id, bool hashed)
{
	text	   *in = PG_GETARG_TEXT_PP(0);
	const char *s = VARDATA_ANY(in);
	size_t		len = VARSIZE_ANY_EXHDR(in);
	const TTCountry *country = id == ID_PHONE ? country_arg(fcinfo, 1) : NULL;
	size_t		size = hashed ? TT_HASH_BUFSIZE :
		id == ID_EMAIL ? TT_EMAIL_MAXLEN + 1 :
		id == ID_NAME ? TT_NAME_MAXLEN + 1 : TT_PHONE_BUFSIZE;
	text	   *result = (text *) palloc(VARHDRSZ + size);
	char	   *out = VARDATA(result);
	size_t		outlen = 64;
	bool		ok;

	if (id == ID_EMAIL)
		ok = hashed ? tt_hash_email(s, len, out) :
			tt_normalize_email(s, len, out, &outlen);
	else if (id == ID_PHONE)
		ok = hashed ? tt_hash_phone(s, len, country, out) :
			tt_normalize_phone(s, len, country, out);
	else if (id == ID_NAME)
		ok = hashed ? tt_hash_name(s, len, out) :
			tt_normalize_name(s, len, out, &outlen);
	else
		ok = tt_hash_external_id(s, len, out);
	if (!ok)
	{
		pfree(result);
		PG_RETURN_NULL();
	}
	if (id == ID_PHONE && !hashed)
		outlen = strlen(out);
	SET_VARSIZE(result, VARHDRSZ + outlen);
	PG_RETURN_TEXT_P(result);
}

/* tt_hash_email(text): hex SHA-256 of the trimmed, lowercased email */
Datum
tt_hash_email_sql(PG_FUNCTION_ARGS)
{
	return identifier_sql(fcinfo, ID_EMAIL, true);
}

/* tt_normalize_email(text): what tt_hash_email hashes */
Datum
tt_normalize_email_sql(PG_FUNCTION_ARGS)
{
	return identifier_sql(fcinfo, ID_EMAIL, false);
}

/* tt_hash_phone(text [, country text]): hex SHA-256 of the E.164 number */
Datum
tt_hash_phone_sql(PG_FUNCTION_ARGS)
{
	return identifier_sql(fcinfo, ID_PHONE, true);
}

/* tt_normalize_phone(text [, country text]): the E.164 form, with '+' */
Datum
tt_normalize_phone_sql(PG_FUNCTION_ARGS)
{
	return identifier_sql(fcinfo, ID_PHONE, false);
}

/* tt_hash_external_id(text): hex SHA-256 of the trimmed id */
Datum
tt_hash_external_id_sql(PG_FUNCTION_ARGS)
{
	return identifier_sql(fcinfo, ID_EXTERNAL_ID, true);
}

/*
 * tt_hash_name(text): hex SHA-256 of the trimmed, lowercased first name,
 * last name or zip code
 */
Datum
tt_hash_name_sql(PG_FUNCTION_ARGS)
{
	return identifier_sql(fcinfo, ID_NAME, true);
}

/* tt_normalize_name(text): what tt_hash_name hashes */
Datum
tt_normalize_name_sql(PG_FUNCTION_ARGS)
{
	return identifier_sql(fcinfo, ID_NAME, false);
}
