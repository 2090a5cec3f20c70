/*-------------------------------------------------------------------------
 *
 * capture.h
 *	  What the stages of capture share: the order trigger and the build at
 *	  commit (capture.c), one row's event (capture_row.c), the mapping
 *	  (capture_mapping.c, its text and items query in capture_items.c),
 *	  tt_attach() and tt_check_triggers()
 *	  (capture_attach.c), consent (capture_consent.c), and tt_backfill's
 *	  slices of rows already there (capture_backfill.c).
 *
 * Vocabulary:
 *	- mapping: the trigger's arguments after the event name: field=column
 *	  pairs (field= alone turns a default off), pixel=CODE, and
 *	  contents_from=table(column) for order items kept in a child table;
 *	  lead_event_source= and shop_id= also take a constant, 'HubSpot';
 *	  pixel_from=column names the row's own pixel (a merchant's).
 *	- config: a mapping resolved against the table (column numbers, types,
 *	  output functions, the items query), cached per trigger.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TT_CAPTURE_H
#define TT_CAPTURE_H

#include "access/htup.h"
#include "utils/relcache.h"
#include "commands/trigger.h"
#include "fmgr.h"

#include "tiktok_capi.h"

/* The event fields a column can feed */
typedef enum CaptureField
{
	CF_EVENT_ID,
	CF_EVENT_TIME,
	CF_EMAIL,
	CF_PHONE,
	CF_EXTERNAL_ID,
	CF_TTCLID,
	CF_TTP,
	CF_IP,
	CF_USER_AGENT,
	CF_LOCALE,
	CF_VALUE,
	CF_VALUE_MINOR,
	CF_CURRENCY,
	CF_CONTENTS,
	CF_CONTENT_TYPE,
	CF_ORDER_ID,
	CF_DESCRIPTION,
	CF_SEARCH_STRING,
	CF_PAGE_URL,
	CF_REFERRER,
	CF_LIMITED_DATA_USE,
	CF_COUNTRY,
	CF_CONSENT,
	/* more match keys (country, above, feeds user.country too) */
	CF_FIRST_NAME,
	CF_LAST_NAME,
	CF_ZIP_CODE,
	CF_CITY,
	CF_STATE,
	/* event sources and a pixel per row */
	CF_LEAD_ID,
	CF_LEAD_EVENT_SOURCE,
	CF_SHOP_ID,
	CF_PIXEL_FROM,
	N_CAPTURE_FIELDS
} CaptureField;

/* Where a field's column came from (the capture_triggers view shows it) */
typedef enum FieldOrigin
{
	ORIGIN_NONE,				/* nothing feeds it */
	ORIGIN_DEFAULT,				/* a column found by its name */
	ORIGIN_MAPPING,				/* field=column */
	ORIGIN_OFF					/* field= turned the default off */
} FieldOrigin;

/* One mapped column */
typedef struct MappedColumn
{
	AttrNumber	attnum;			/* InvalidAttrNumber: not mapped */
	Oid			typid;
	FmgrInfo	out;
	FieldOrigin origin;
} MappedColumn;

/* A trigger's mapping resolved against its table; cached per trigger */
typedef struct CaptureConfig
{
	Oid			tgoid;			/* hash key */
	Oid			relid;
	bool		valid;
	char	   *event;
	char	   *event_problem;	/* a misspelled name: events queue as failed */
	char	   *pixel;			/* NULL: the only configured pixel */
	TTEventSource pixel_source;	/* pixel's event source, read when resolved */
	char	   *prefix;			/* event_id_prefix=, or "" */
	char	   *source;			/* the trigger's table, schema-qualified */
	char	   *trigger_name;
	char	   *broken;			/* a mapping that cannot work: events fail */
	MappedColumn	cols[N_CAPTURE_FIELDS];
	char	   *literals[N_CAPTURE_FIELDS];	/* field='text': a constant, or NULL */
	char	   *items_sql;		/* contents_from: the items query */
	char	   *items_spec;		/* contents_from, schema-qualified */
	SPIPlanPtr	items_plan;
	FmgrInfo	ttclid_fn;		/* tt_ttclid(), for a landing URL as ttclid */
	List	   *notes;			/* mapping problems (when strict: an ERROR) */
	bool		consent_unreadable; /* a consent mapping failed: unknown */
} CaptureConfig;

/* What an order row says about consent */
typedef enum RowConsent
{
	ROW_CONSENT_GRANTED,
	ROW_CONSENT_DENIED,
	ROW_CONSENT_UNKNOWN			/* NULL, unrecognised text, unreadable column */
} RowConsent;

/* Why tt_capture_row() is given a row */
typedef enum CaptureMode
{
	CAPTURE_INSERTED,			/* the trigger fired for an INSERT: the key is most likely new */
	CAPTURE_UPDATED,			/* the trigger fired for an UPDATE: the key may be settled */
	CAPTURE_BACKFILL			/* tt_backfill: a known key, whatever its status, is left alone */
} CaptureMode;

/* What tt_capture_row() did with a row (tt_backfill counts them) */
typedef enum CaptureOutcome
{
	CAPTURE_QUEUED,				/* a new pending event */
	CAPTURE_QUEUED_FAILED,		/* a new failed event, with the reason */
	CAPTURE_KNOWN,				/* the key was already in the outbox */
	CAPTURE_NOTHING				/* rebuilt, unchanged, withdrawn or skipped for consent */
} CaptureOutcome;

/* Who ran before tt_begin_builder(), for tt_end_builder() */
typedef struct BuilderState
{
	Oid			userid;
	int			sec_context;
	int			nestlevel;
} BuilderState;

/* A mapping's hint, for every mapping problem */
#define MAPPING_HINT "Mappings are field=column, pixel=CODE, pixel_from=column, event_id_prefix=TEXT or contents_from=table(column)."

/*
 * A mapping problem: an ERROR when attaching (strict), a note for every
 * event otherwise.
 */
#define mapping_problem(strict, notes, ...) \
	tt_problem((strict) ? NULL : (notes), ERRCODE_INVALID_PARAMETER_VALUE, \
			   MAPPING_HINT, __VA_ARGS__)

/* in capture_items.c */
extern const char *tt_bare_name(const char *name);
extern AttrNumber tt_column_by_name(TupleDesc desc, const char *name);
extern int	tt_join_mapping(char **args, int nargs);
extern char *tt_items_query(const char *spec, bool strict, List **notes,
							char **qualified_spec);

/* in capture_mapping.c */
extern void tt_capture_config_init(void);
extern CaptureConfig *tt_capture_config(Relation rel, Trigger *tg);
extern const char *tt_field_name(CaptureField f);
extern char *tt_field_source(const CaptureConfig *cfg, Relation rel, CaptureField f);
extern char *tt_source_mapping_problem(const CaptureConfig *cfg, const char *pixel);

/* outbox.c: the only enabled pixel and its event source, in one lookup */
extern char *tt_default_pixel_source(const char **why, TTEventSource *source);
extern void tt_resolve_mapping(CaptureConfig *cfg, Relation rel, int nargs,
							   char **args, bool strict, MemoryContext cxt);
extern void tt_resolve_trigger(CaptureConfig *cfg, Relation rel, Trigger *tg,
							   MemoryContext cxt);

/* in capture.c */
extern void tt_begin_builder(Oid role, BuilderState *state);
extern void tt_end_builder(BuilderState *state);

/* in capture_row.c */
extern CaptureOutcome tt_capture_row(CaptureConfig *cfg, HeapTuple tup,
									 TupleDesc desc, CaptureMode mode);
extern bool tt_row_event_time(const MappedColumn *c, HeapTuple tup, TupleDesc desc,
							  TimestampTz *event_time, List **notes);

/* in capture_consent.c */
extern RowConsent tt_row_consent(const CaptureConfig *cfg, HeapTuple tup,
								 TupleDesc desc, List **notes);
extern bool tt_consent_given(RowConsent rc);
extern void tt_withhold_identifiers(TTEventInput *in);

#endif							/* TT_CAPTURE_H */
