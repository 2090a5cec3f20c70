/*-------------------------------------------------------------------------
 *
 * capture.c
 *	  The order trigger, tt_capture(), and the commit that builds what it
 *	  saw: an order's event is built from the order as committed.
 *
 * Vocabulary:
 *	- touched row: a row version a tt_capture trigger fired for in this
 *	  transaction, whatever wrote it (INSERT, COPY, upsert, MERGE, UPDATE)
 *	  and whatever kind of trigger it is (plain, constraint, deferred or
 *	  not).  The trigger only remembers it.
 *	- flush: at commit (PRE_COMMIT, or PRE_PREPARE), each touched row is
 *	  followed to its final version in this transaction; a row deleted, or
 *	  whose final version the trigger's WHEN condition kept it from firing
 *	  on (paid, then cancelled), queues nothing; the
 *	  others are built once per row however often the trigger fired, with
 *	  the items that exist by then (capture_row.c).  tt_flush() does it
 *	  early, for a page rendered in the order's own transaction; the rows
 *	  touched after it are flushed at commit.
 *
 * The flush never aborts the order: it runs in a subtransaction, and when
 * that fails, each row again in one of its own; a row that still fails is
 * queued as a failed event naming the row and the error.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"

#include "capture.h"

PG_FUNCTION_INFO_V1(tt_capture_sql);
PG_FUNCTION_INFO_V1(tt_capture);
PG_FUNCTION_INFO_V1(tt_flush_sql);

/* A row version a tt_capture trigger fired for */
typedef struct TouchedRow
{
	Oid			relid;
	Oid			tgoid;
	ItemPointerData tid;
	TransactionId xmin;			/* its writer: a reused line pointer is not it */
	bool		inserted;		/* fired by an INSERT */
} TouchedRow;

/* A final row version, built once per flush */
typedef struct BuiltKey
{
	Oid			tgoid;
	ItemPointerData tid;
} BuiltKey;

/* A slice of touched rows to build in a subtransaction, and what came of it */
typedef struct BuildJob
{
	TouchedRow *rows;
	int			n;
	int			nread;			/* out: how many rows were read */
	const char *error;			/* for queue_build_error: why the build failed */
} BuildJob;

/* This transaction's touched rows, in TopTransactionContext */
static TouchedRow *touched = NULL;
/* who builds them: tt_capture()'s owner, as its SECURITY DEFINER firing saw */
static Oid	builder = InvalidOid;
static int	ntouched = 0;
static int	maxtouched = 0;

static void remember_row(Relation rel, Oid tgoid, HeapTuple tup, bool inserted);
static int	row_cmp(const void *a, const void *b);
static bool when_holds(Trigger *tg, TouchedRow *rows, int n, ItemPointer final);
static bool final_version(Relation rel, const TouchedRow *r, Snapshot snap,
						  TupleTableSlot *slot);
static Trigger *find_trigger(Relation rel, Oid tgoid);
static int	build_rows(TouchedRow *rows, int n);
static void build_job(BuildJob *job);
static void queue_build_error(BuildJob *job);
static bool in_subtransaction(void (*fn) (BuildJob *), BuildJob *job, char **error);
static int	flush_touched(void);
static int	flush_as_builder(void);
static void capture_xact_callback(XactEvent event, void *arg);

/* Register the flush at commit, and the configs' invalidation */
void
tt_capture_init(void)
{
	tt_capture_config_init();
	RegisterXactCallback(capture_xact_callback, NULL);
}

/* Remember a row version for the flush */
static void
remember_row(Relation rel, Oid tgoid, HeapTuple tup, bool inserted)
{
	TouchedRow *r;

	if (ntouched == maxtouched)
	{
		maxtouched = Max(64, maxtouched * 2);
		if (touched == NULL)
			touched = MemoryContextAlloc(TopTransactionContext,
										 sizeof(TouchedRow) * maxtouched);
		else
			touched = repalloc_huge(touched, sizeof(TouchedRow) * maxtouched);
	}
	builder = GetUserId();
	r = &touched[ntouched++];
	r->relid = RelationGetRelid(rel);
	r->tgoid = tgoid;
	r->tid = tup->t_self;
	r->xmin = HeapTupleHeaderGetRawXmin(tup->t_data);
	r->inserted = inserted;
}

/*
 * tt_capture(): AFTER INSERT OR UPDATE ... FOR EACH ROW trigger.  It only
 * remembers the row: the event is built at commit, from the order as
 * committed.
 */
Datum
tt_capture_sql(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	HeapTuple	tup;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("tt_capture() must be called as a trigger")));
	if (!TRIGGER_FIRED_AFTER(td->tg_event) || !TRIGGER_FIRED_FOR_ROW(td->tg_event) ||
		TRIGGER_FIRED_BY_DELETE(td->tg_event) || TRIGGER_FIRED_BY_TRUNCATE(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("tt_capture() must fire AFTER INSERT OR UPDATE ... FOR EACH ROW")));
	if (td->tg_relation->rd_rel->relkind != RELKIND_RELATION)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("tt_capture() works on tables, not on \"%s\"",
						RelationGetRelationName(td->tg_relation))));
	tup = TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? td->tg_newtuple : td->tg_trigtuple;
	remember_row(td->tg_relation, td->tg_trigger->tgoid, tup,
				 TRIGGER_FIRED_BY_INSERT(td->tg_event));
	return PointerGetDatum(NULL);
}

/*
 * The name the released 0.1.0 script binds tt_capture() to, and so every
 * trigger created since
 */
Datum
tt_capture(PG_FUNCTION_ARGS)
{
	return tt_capture_sql(fcinfo);
}

/* Touched rows in the order the flush wants them: by table and trigger */
static int
row_cmp(const void *a, const void *b)
{
	const TouchedRow *x = a;
	const TouchedRow *y = b;

	if (x->relid != y->relid)
		return x->relid < y->relid ? -1 : 1;
	if (x->tgoid != y->tgoid)
		return x->tgoid < y->tgoid ? -1 : 1;
	return ItemPointerCompare((ItemPointer) &x->tid, (ItemPointer) &y->tid);
}

/*
 * Does the trigger's WHEN condition hold for the row as committed?  The
 * trigger machinery tested it on every version the trigger could fire on,
 * as the writing role: the condition holds exactly when the trigger fired
 * for the final version, i.e. when that version is among the touched rows
 * (rows[0..n), sorted).  A trigger limited to some columns (UPDATE OF) may
 * not fire for the final version at all: its firing stands.
 */
static bool
when_holds(Trigger *tg, TouchedRow *rows, int n, ItemPointer final)
{
	int			lo = 0;
	int			hi = n - 1;

	if (tg->tgqual == NULL || tg->tgnattr > 0)
		return true;
	while (lo <= hi)
	{
		int			mid = (lo + hi) / 2;
		int			c = ItemPointerCompare(&rows[mid].tid, final);

		if (c == 0)
			return true;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return false;
}

/*
 * Follow a touched row to its version as committed, into slot.  False
 * when there is none: deleted, moved to another partition (whose trigger
 * saw the insert), or written by a subtransaction that rolled back.
 */
static bool
final_version(Relation rel, const TouchedRow *r, Snapshot snap,
			  TupleTableSlot *slot)
{
	ItemPointerData tid = r->tid;
	TableScanDesc scan;
	bool		isnull;

	/* a rolled-back version's line pointer may hold another row now */
	if (!table_tuple_fetch_row_version(rel, &tid, SnapshotAny, slot) ||
		!TransactionIdEquals(DatumGetTransactionId(slot_getsysattr(slot, MinTransactionIdAttributeNumber,
																   &isnull)),
							 r->xmin))
		return false;
	scan = table_beginscan_tid(rel, snap);
	table_tuple_get_latest_tid(scan, &tid);
	table_endscan(scan);
	return table_tuple_fetch_row_version(rel, &tid, snap, slot);
}

/* The trigger of rel with this oid, or NULL once dropped */
static Trigger *
find_trigger(Relation rel, Oid tgoid)
{
	for (int i = 0; rel->trigdesc != NULL && i < rel->trigdesc->numtriggers; i++)
		if (rel->trigdesc->triggers[i].tgoid == tgoid)
			return &rel->trigdesc->triggers[i];
	return NULL;
}

/*
 * Build the events of n touched rows (sorted by table and trigger), each
 * final version once.  Returns how many rows were read.
 */
static int
build_rows(TouchedRow *rows, int n)
{
	Snapshot	snap = RegisterSnapshot(GetLatestSnapshot());
	HTAB	   *built = NULL;
	int			nread = 0;

	/* one row (the common commit) needs no de-duplication */
	if (n > 1)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(BuiltKey);
		ctl.entrysize = sizeof(BuiltKey);
		ctl.hcxt = CurrentMemoryContext;
		built = hash_create("tiktok_capi built rows", n, &ctl,
							HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	SPI_connect();
	for (int i = 0; i < n;)
	{
		Relation	rel = table_open(rows[i].relid, AccessShareLock);
		Oid			tgoid = rows[i].tgoid;
		Trigger    *tg = find_trigger(rel, tgoid);
		CaptureConfig *cfg = tg ? tt_capture_config(rel, tg) : NULL;
		TupleTableSlot *slot = table_slot_create(rel, NULL);
		int			start = i;
		int			end = i;

		while (end < n && rows[end].relid == rows[i].relid && rows[end].tgoid == tgoid)
			end++;
		for (; i < end; i++)
		{
			BuiltKey	key;
			bool		found;

			if (cfg == NULL || !final_version(rel, &rows[i], snap, slot) ||
				!when_holds(tg, &rows[start], end - start, &slot->tts_tid))
				continue;
			if (built != NULL)
			{
				memset(&key, 0, sizeof(key));
				key.tgoid = tgoid;
				key.tid = slot->tts_tid;
				hash_search(built, &key, HASH_ENTER, &found);
				if (found)
					continue;
			}
			(void) tt_capture_row(cfg, ExecFetchSlotHeapTuple(slot, false, NULL),
								  RelationGetDescr(rel),
								  rows[i].inserted ? CAPTURE_INSERTED : CAPTURE_UPDATED);
			nread++;
		}
		ExecDropSingleTupleTableSlot(slot);
		table_close(rel, AccessShareLock);
	}
	SPI_finish();
	if (built != NULL)
		hash_destroy(built);
	UnregisterSnapshot(snap);
	return nread;
}

/* Build a slice's events (a job for in_subtransaction) */
static void
build_job(BuildJob *job)
{
	job->nread = build_rows(job->rows, job->n);
}

/*
 * A row whose event could not be built even alone: a failed event under a
 * key naming the row, with the error, so the order is not lost silently
 * (a job for in_subtransaction).
 */
static void
queue_build_error(BuildJob *job)
{
	const TouchedRow *r = &job->rows[0];
	char	   *rel = get_rel_name(r->relid);
	TTQueueItem item = {0};

	item.pixel_code = "";
	item.event = "capture error";
	item.event_id = psprintf("%s row (%u,%u) of transaction %u",
							 rel ? rel : "a dropped table",
							 ItemPointerGetBlockNumber(&r->tid),
							 ItemPointerGetOffsetNumber(&r->tid),
							 GetTopTransactionId());
	item.source = rel ? quote_qualified_identifier(get_namespace_name(get_rel_namespace(r->relid)), rel) : "";
	item.event_time = GetCurrentTransactionStartTimestamp();
	item.failed_reason = psprintf("the event could not be built: %s", job->error);
	SPI_connect();
	(void) tt_outbox_queue(&item);
	SPI_finish();
}

/*
 * Run fn(job) in a subtransaction, as PL/pgSQL's exception blocks do.
 * False, with *error set, when it failed: its work is undone.  A cancel is
 * not caught.
 */
static bool
in_subtransaction(void (*fn) (BuildJob *), BuildJob *job, char **error)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	volatile bool ok = true;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		fn(job);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
			ReThrowError(edata);
		*error = pstrdup(edata->message);
		FreeErrorData(edata);
		ok = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);
	CurrentResourceOwner = oldowner;
	return ok;
}

/*
 * Become the builder: tt_capture()'s owner (role), with its pinned
 * search_path, as the flush and tt_backfill build events.  The committing
 * or calling role has no right on the outbox, and its search_path must not
 * choose what the build calls.  tt_end_builder() undoes it.
 */
void
tt_begin_builder(Oid role, BuilderState *state)
{
	GetUserIdAndSecContext(&state->userid, &state->sec_context);
	SetUserIdAndSecContext(role, state->sec_context | SECURITY_LOCAL_USERID_CHANGE);
	state->nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp", PGC_USERSET,
							 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
}

/* Back to the role and search_path tt_begin_builder() found */
void
tt_end_builder(BuilderState *state)
{
	AtEOXact_GUC(true, state->nestlevel);
	SetUserIdAndSecContext(state->userid, state->sec_context);
}

/*
 * Build the events of the rows touched so far, as the builder.  Rows
 * touched while this runs (none, unless something writes an order from
 * inside the build) are taken in the next round.  Returns how many rows
 * were read.
 */
static int
flush_touched(void)
{
	int			nread;
	BuilderState state;

	tt_begin_builder(builder, &state);
	nread = flush_as_builder();
	tt_end_builder(&state);
	return nread;
}

/* flush_touched(), once the builder's identity and search_path are set */
static int
flush_as_builder(void)
{
	int			nread = 0;

	while (ntouched > 0)
	{
		BuildJob	all = {touched, ntouched};
		char	   *error;

		touched = NULL;
		ntouched = maxtouched = 0;
		/* after DROP EXTENSION in this transaction there is no outbox */
		if (!OidIsValid(get_extension_oid("tiktok_capi", true)))
			return nread;
		qsort(all.rows, all.n, sizeof(TouchedRow), row_cmp);
		CommandCounterIncrement();
		PushActiveSnapshot(GetTransactionSnapshot());
		if (in_subtransaction(build_job, &all, &error))
			nread += all.nread;
		else
		{
			/* one row is at fault: find it, and keep the others */
			for (int i = 0; i < all.n; i++)
			{
				BuildJob	one = {&all.rows[i], 1};

				if (in_subtransaction(build_job, &one, &error))
				{
					nread += one.nread;
					continue;
				}
				one.error = error;
				if (!in_subtransaction(queue_build_error, &one, &error))
					ereport(WARNING,
							(errmsg("tiktok_capi: the event of a row of \"%s\" was not queued: %s",
									get_rel_name(one.rows[0].relid), one.error),
							 errdetail("Queueing the failure failed too: %s", error)));
			}
		}
		PopActiveSnapshot();
		pfree(all.rows);
	}
	return nread;
}

/* At commit (or PREPARE), build what the triggers saw; forget it after */
static void
capture_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
		case XACT_EVENT_PRE_PREPARE:
			if (ntouched > 0)
				(void) flush_touched();
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
			/* the memory went with TopTransactionContext */
			touched = NULL;
			ntouched = maxtouched = 0;
			break;
		default:
			break;
	}
}

/*
 * tt_flush(): build now the events of the rows this transaction has
 * touched so far; returns how many rows were read
 */
Datum
tt_flush_sql(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(flush_touched());
}
