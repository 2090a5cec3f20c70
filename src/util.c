/*-------------------------------------------------------------------------
 *
 * util.c
 *	  Small helpers every PostgreSQL-side stage uses: printf into palloc'd
 *	  memory, "an error when strict, a note when lenient", the blank test,
 *	  the prepared-plan cache and the array builder.
 *
 * Vocabulary:
 *	- strict: a direct call (tt_event(), tt_attach()); a problem is an
 *	  ERROR with its SQLSTATE and a hint.
 *	- lenient: the order trigger's build; a problem is a note (notes, a
 *	  List of char *) that ends up in the outbox row's warnings, and the
 *	  caller leaves the field out.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "storage/proc.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

#include "tiktok_capi.h"

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
 * A problem with a field or a mapping: an ERROR (sqlstate, hint) when
 * notes is NULL (strict); otherwise a note for the outbox row, and the
 * caller drops what it was about (lenient).
 */
void
tt_problem(List **notes, int sqlstate, const char *hint, const char *fmt,...)
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

/* NULL, empty or only white space: no event_id at all */
bool
tt_is_blank(const char *s)
{
	return s == NULL || s[strspn(s, " \t\r\n")] == '\0';
}

/*
 * Prepare a statement the first time it is needed, and keep it.
 * cursor_options: 0, or CURSOR_OPT_GENERIC_PLAN for a statement whose
 * plan must not follow the parameters' values (see worker.c).
 */
SPIPlanPtr
tt_prepare_once(SPIPlanPtr *plan, const char *sql, int nargs, Oid *argtypes,
				int cursor_options)
{
	if (*plan == NULL)
	{
		SPIPlanPtr	p = SPI_prepare_cursor(sql, nargs, argtypes, cursor_options);

		if (p == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(p);
		*plan = p;
	}
	return *plan;
}

/* A one-dimensional array of n elements of elemtype, as a Datum */
Datum
tt_array_datum(Datum *elems, int n, Oid elemtype)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;

	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_array(elems, n, elemtype,
										   typlen, typbyval, typalign));
}

/* A List of char * as a text[] Datum, or *null = 'n' when there are none */
Datum
tt_text_array(List *strings, char *null)
{
	Datum	   *elems;
	int			n = 0;
	ListCell   *lc;

	if (strings == NIL)
	{
		*null = 'n';
		return (Datum) 0;
	}
	elems = palloc(sizeof(Datum) * list_length(strings));
	foreach(lc, strings)
		elems[n++] = CStringGetTextDatum((char *) lfirst(lc));
	return tt_array_datum(elems, n, TEXTOID);
}

/*
 * Is the outbox of this database at least 0.3.0's (its source column)?  A
 * new library runs against the schema of an older version until ALTER
 * EXTENSION ... UPDATE: then it writes as that version did.
 */
bool
tt_outbox_is_current(void)
{
	static LocalTransactionId known_in = InvalidLocalTransactionId;
	static bool current = false;
	Oid			nsp;
	Oid			relid;

	/* asked once per row queued: looked up once per transaction */
	if (known_in == MyProc->lxid)
		return current;
	nsp = get_namespace_oid("tiktok_capi", true);
	relid = OidIsValid(nsp) ? get_relname_relid("outbox", nsp) : InvalidOid;
	current = OidIsValid(relid) && get_attnum(relid, "source") != InvalidAttrNumber;
	known_in = MyProc->lxid;
	return current;
}
