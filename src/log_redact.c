/*-------------------------------------------------------------------------
 *
 * log_redact.c
 *	  Keeps the password of tiktok_capi.proxy out of the server log.
 *
 * The extension prints the proxy URL only with its password hidden.  But
 * PostgreSQL prints setting values itself: the postmaster logs
 * 'parameter "tiktok_capi.proxy" changed to "..."' on each reload that
 * changes it, an invalid value is quoted in its error, log_statement logs
 * an ALTER SYSTEM with its text, and an error logs its statement.  So a
 * log hook (emit_log_hook, set in every process that loads the library,
 * the postmaster included when it is preloaded) hides the password of
 * any URL written user:password@ in what goes to the server log, and
 * leaves out the STATEMENT line of a statement that holds one.  It hides
 * such passwords whatever the message, not only the proxy's: a password
 * in a URL belongs in no log.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "tcop/tcopprot.h"
#include "utils/elog.h"

#include "policy.h"
#include "tiktok_capi.h"

static emit_log_hook_type prev_emit_log_hook = NULL;

static void hide_passwords_in_log(ErrorData *edata);
static char *hidden(char *text, bool *any);

/* Install the log hook, once per process (from _PG_init) */
void
tt_log_redact_init(void)
{
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = hide_passwords_in_log;
}

/*
 * The log hook: each text of the message with URL passwords hidden; the
 * statement left out when it holds one.  Called in ErrorContext, where the
 * copies are made and freed with the message.
 */
static void
hide_passwords_in_log(ErrorData *edata)
{
	bool		any = false;

	edata->message = hidden(edata->message, &any);
	edata->detail = hidden(edata->detail, &any);
	edata->detail_log = hidden(edata->detail_log, &any);
	edata->hint = hidden(edata->hint, &any);
	edata->context = hidden(edata->context, &any);
	if (debug_query_string != NULL && strstr(debug_query_string, "://") != NULL)
	{
		bool		in_statement = false;

		pfree(hidden(pstrdup(debug_query_string), &in_statement));
		if (in_statement)
			edata->hide_stmt = true;
	}
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

/*
 * text, or a copy of it with its URL passwords hidden (*any set then).
 * Most messages hold no URL: they are passed on as they are.
 */
static char *
hidden(char *text, bool *any)
{
	size_t		size;
	char	   *copy;

	if (text == NULL || strstr(text, "://") == NULL || strchr(text, '@') == NULL)
		return text;
	size = 2 * strlen(text) + 8;
	copy = palloc(size);
	if (!tt_hide_passwords(text, copy, size))
	{
		pfree(copy);
		return text;
	}
	*any = true;
	return copy;
}
