/*-------------------------------------------------------------------------
 *
 * capture_consent.c
 *	  What an order row says about the customer's consent, and what the
 *	  order trigger withholds without it.
 *
 * Consent: without it, no identifier leaves the database.  The consent
 * field (consent=column, by default the column "consent") is a boolean
 * column, or a text column holding what PostgreSQL's boolean input takes
 * (true/false, yes/no, on/off, 1/0, and unique prefixes such as t/f, y/n)
 * or granted/denied, in any case, trimmed.  NULL and other text are
 * unknown consent, which tiktok_capi.consent_unknown treats as denied (the
 * default) or granted; other text is also noted in warnings.  A consent column the trigger
 * cannot read (a hand-made mapping to a missing or wrongly typed column)
 * leaves consent unknown, never granted.  Without consent,
 * tiktok_capi.consent_denied decides: anonymous (the default) queues the
 * event without email, phone, external_id, ip, user_agent, ttp and
 * ttclid, noted in warnings; skip queues nothing.  A table without a
 * consent column is as before: consent is granted.  Both settings are
 * superuser-only, so the application role cannot loosen them.
 *
 * When an UPDATE changes the consent, the event still pending for the
 * order follows it: rebuilt from the row as it is now (identifiers
 * withheld or restored), withdrawn (skip), or queued if skip had left it
 * out.  Events already sent or failed stay as they are, and so does one
 * the worker is sending in that moment (see outbox.c).  Only an UPDATE
 * that changes the consent does this extra work.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"

#include "capture.h"

/*
 * What the row says about consent.  notes, when not NULL, gets a note for
 * text that is neither a boolean nor granted/denied.  Only called when a
 * consent column is mapped (or its mapping failed).
 */
RowConsent
tt_row_consent(const CaptureConfig *cfg, HeapTuple tup, TupleDesc desc,
			   List **notes)
{
	const MappedColumn *c = &cfg->cols[CF_CONSENT];
	bool		isnull;
	Datum		d;
	char	   *s;
	size_t		len;
	bool		b;

	if (cfg->consent_unreadable)
		return ROW_CONSENT_UNKNOWN;
	d = heap_getattr(tup, c->attnum, desc, &isnull);
	if (isnull)
		return ROW_CONSENT_UNKNOWN;
	if (c->typid == BOOLOID)
		return DatumGetBool(d) ? ROW_CONSENT_GRANTED : ROW_CONSENT_DENIED;

	/* text: trimmed as boolin trims, then granted/denied or a boolean */
	s = OutputFunctionCall((FmgrInfo *) &c->out, d);
	len = strlen(s);
	while (len > 0 && isspace((unsigned char) s[len - 1]))
		len--;
	while (len > 0 && isspace((unsigned char) *s))
	{
		s++;
		len--;
	}
	if (len == 7 && pg_strncasecmp(s, "granted", 7) == 0)
		return ROW_CONSENT_GRANTED;
	if (len == 6 && pg_strncasecmp(s, "denied", 6) == 0)
		return ROW_CONSENT_DENIED;
	if (len > 0 && parse_bool_with_len(s, len, &b))
		return b ? ROW_CONSENT_GRANTED : ROW_CONSENT_DENIED;
	if (notes != NULL)
		*notes = lappend(*notes,
						 psprintf("consent \"%.*s\" is not granted, denied or a boolean",
								  pg_mbcliplen(s, len, 32), s));
	return ROW_CONSENT_UNKNOWN;
}

/* May the order's identifiers leave the database? */
bool
tt_consent_given(RowConsent rc)
{
	return rc == ROW_CONSENT_GRANTED ||
		(rc == ROW_CONSENT_UNKNOWN && tt_consent_unknown == CONSENT_UNKNOWN_GRANTED);
}

/*
 * Without consent, the event keeps what counts the conversion and loses
 * what matches the person.
 */
void
tt_withhold_identifiers(TTEventInput *in)
{
	in->email = NULL;
	in->phone = NULL;
	in->external_id = NULL;
	in->ip = NULL;
	in->user_agent = NULL;
	in->ttp = NULL;
	in->ttclid = NULL;
	/* more match keys: a name, an address, match the person too */
	in->first_name = NULL;
	in->last_name = NULL;
	in->zip_code = NULL;
	in->city = NULL;
	in->state = NULL;
	in->user_country = NULL;
}
