/*-------------------------------------------------------------------------
 *
 * capture_backfill.c
 *	  tt_backfill's slice: the events a table's tt_capture triggers would
 *	  have queued for rows already there, through the trigger's own code
 *	  path for a row (capture_row.c).
 *
 * Vocabulary:
 *	- backfill: queueing the events of orders written before the trigger
 *	  existed (or while it was disabled), each under the key the trigger
 *	  would have used, so an order is still queued once for good.
 *	- slice: the rows of a range of the table's blocks, about slice_rows
 *	  of them, read with one snapshot.  The SQL procedure commits after
 *	  each slice (sql/tiktok_capi--0.2.0--0.3.0.sql); a slice takes the
 *	  lock a plain SELECT takes, so writers of the table never wait.
 *	- known key: a key already in the outbox, whatever its status
 *	  (pending, sent, kept after retention, erased, failed): left alone.
 *
 * A row's time is the trigger's event_time column, else a created_at
 * column; a table with neither is refused.  Rows outside [since, until),
 * or whose time is older than tiktok_capi.backfill_max_age, or for which
 * the trigger's WHEN condition does not hold (evaluated as for an
 * INSERT: OLD is all NULL), are counted and skipped.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/relscan.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "optimizer/optimizer.h"
#include "parser/parse_func.h"
#include "rewrite/prs2lock.h"
#include "rewrite/rewriteManip.h"
#include "utils/acl.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "capture.h"

PG_FUNCTION_INFO_V1(tt_backfill_slice_sql);

/* One tt_capture trigger of the table, ready to backfill */
typedef struct BackfillTrigger
{
	CaptureConfig cfg;			/* its config, event_time from the row's time */
	ExprState  *when;			/* its WHEN condition, or NULL */
} BackfillTrigger;

/* A row a trigger would have queued, for the build */
typedef struct BackfillRow
{
	int			trigger;		/* index into the BackfillTrigger array */
	HeapTuple	tup;
} BackfillRow;

/* What a slice counted */
typedef struct BackfillCounts
{
	int64		scanned;		/* rows read */
	int64		queued;			/* new pending events */
	int64		failed;			/* new failed events (a bad order id, ...) */
	int64		known;			/* keys already in the outbox */
	int64		too_old;		/* older than backfill_max_age */
	int64		not_matching;	/* outside [since, until), no time, WHEN false, consent */
} BackfillCounts;

static Oid	capture_function(Oid *owner);
static int	backfill_triggers(Relation rel, Oid fn, EState *estate,
							  BackfillTrigger **out);
static void use_row_time(BackfillTrigger *bt, Relation rel, Trigger *tg);
static ExprState *prepare_when(Trigger *tg, EState *estate);
static void build_as_owner(Oid owner, TupleDesc desc, BackfillTrigger *triggers,
						   BackfillRow *rows, int nrows, BackfillCounts *counts);

/* tt_capture()'s oid, and its owner: whom the trigger builds as */
static Oid
capture_function(Oid *owner)
{
	List	   *name = list_make2(makeString("tiktok_capi"), makeString("tt_capture"));
	Oid			fn = LookupFuncName(name, 0, NULL, false);
	HeapTuple	tp = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));

	if (!HeapTupleIsValid(tp))
		elog(ERROR, "cache lookup failed for function %u", fn);
	*owner = ((Form_pg_proc) GETSTRUCT(tp))->proowner;
	ReleaseSysCache(tp);
	return fn;
}

/*
 * The table's enabled tt_capture triggers, each resolved as the trigger
 * resolves it; a trigger that could only queue failed events (a broken
 * mapping, no pixel) or a table without a time column is refused here,
 * before any row is read; fn is tt_capture()'s oid.  Returns how many.
 * The caller is connected to SPI (resolving a mapping looks its pixel up).
 */
static int
backfill_triggers(Relation rel, Oid fn, EState *estate, BackfillTrigger **out)
{
	TriggerDesc *td = rel->trigdesc;
	BackfillTrigger *triggers;
	int			n = 0;

	/* the array outlives the caller's SPI connection */
	triggers = MemoryContextAllocZero(estate->es_query_cxt,
									  sizeof(BackfillTrigger) * Max(1, td ? td->numtriggers : 0));
	for (int i = 0; td != NULL && i < td->numtriggers; i++)
	{
		Trigger    *tg = &td->triggers[i];
		CaptureConfig *cfg;

		if (tg->tgfoid != fn || tg->tgenabled == TRIGGER_DISABLED)
			continue;
		cfg = tt_capture_config(rel, tg);
		if (cfg->broken != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("trigger \"%s\" on %s cannot be backfilled: %s",
							tg->tgname, RelationGetRelationName(rel), cfg->broken),
					 errhint("tiktok_capi.tt_check_triggers() says what to fix.")));
		triggers[n].cfg = *cfg;
		use_row_time(&triggers[n], rel, tg);
		triggers[n].when = prepare_when(tg, estate);
		n++;
	}
	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table %s has no enabled tt_capture trigger", RelationGetRelationName(rel)),
				 errhint("Attach one first with tiktok_capi.tt_attach(): the backfill queues what it would have queued.")));
	/*
	 * Without a pixel every event would be a failed row: say it once.  A
	 * trigger whose rows name their pixel (pixel_from=) needs no default.
	 */
	for (int t = 0; t < n; t++)
	{
		const char *why = NULL;

		if (triggers[t].cfg.pixel == NULL &&
			triggers[t].cfg.cols[CF_PIXEL_FROM].attnum == InvalidAttrNumber &&
			tt_default_pixel(&why) == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("cannot backfill %s: %s", RelationGetRelationName(rel), why)));
	}
	*out = triggers;
	return n;
}

/*
 * A backfilled event's time is the order's own: the trigger's event_time
 * column, else a created_at column.  Without either the backfill would
 * date every old order now, so it is refused.
 */
static void
use_row_time(BackfillTrigger *bt, Relation rel, Trigger *tg)
{
	MappedColumn *c = &bt->cfg.cols[CF_EVENT_TIME];
	TupleDesc	desc = RelationGetDescr(rel);
	AttrNumber	attnum;
	Oid			typid;

	if (c->attnum != InvalidAttrNumber)
		return;
	attnum = tt_column_by_name(desc, "created_at");
	typid = attnum > 0 ? TupleDescAttr(desc, attnum - 1)->atttypid : InvalidOid;
	if (typid != TIMESTAMPTZOID && typid != TIMESTAMPOID && typid != DATEOID)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot backfill %s: trigger \"%s\" maps no event_time and the table has no created_at column of a time type",
						RelationGetRelationName(rel), tg->tgname),
				 errdetail("Each order's event must carry the time the order was placed, not the time of the backfill."),
				 errhint("Attach the trigger again with the order's time column in its mapping, e.g. mapping => '{event_time=placed_at}'.")));
	c->attnum = attnum;
	c->typid = typid;
	c->origin = ORIGIN_DEFAULT;
}

/*
 * The trigger's WHEN condition, prepared as the trigger machinery does
 * (trigger.c's TriggerEnabled): OLD reads the inner tuple, NEW the outer.
 */
static ExprState *
prepare_when(Trigger *tg, EState *estate)
{
	Node	   *qual;
	MemoryContext old;
	ExprState  *state;

	if (tg->tgqual == NULL)
		return NULL;
	old = MemoryContextSwitchTo(estate->es_query_cxt);
	qual = stringToNode(tg->tgqual);
	ChangeVarNodes(qual, PRS2_OLD_VARNO, INNER_VAR, 0);
	ChangeVarNodes(qual, PRS2_NEW_VARNO, OUTER_VAR, 0);
	qual = (Node *) make_ands_implicit((Expr *) qual);
	state = ExecPrepareQual((List *) qual, estate);
	MemoryContextSwitchTo(old);
	return state;
}

/*
 * Build and queue the rows' events as the builder (tt_capture()'s owner,
 * with its pinned search_path), as the flush at commit does
 */
static void
build_as_owner(Oid owner, TupleDesc desc, BackfillTrigger *triggers,
			   BackfillRow *rows, int nrows, BackfillCounts *counts)
{
	BuilderState state;

	tt_begin_builder(owner, &state);
	SPI_connect();
	for (int i = 0; i < nrows; i++)
	{
		switch (tt_capture_row(&triggers[rows[i].trigger].cfg, rows[i].tup, desc,
							   CAPTURE_BACKFILL))
		{
			case CAPTURE_QUEUED:
				counts->queued++;
				break;
			case CAPTURE_QUEUED_FAILED:
				counts->failed++;
				break;
			case CAPTURE_KNOWN:
				counts->known++;
				break;
			case CAPTURE_NOTHING:
				counts->not_matching++;
				break;
		}
	}
	SPI_finish();
	tt_end_builder(&state);
}

/*
 * tt_backfill_slice(table, since, until, first_block, end_block,
 * slice_rows): queue the events of the rows in blocks first_block..
 * end_block-1, stopping at the first block boundary after slice_rows
 * rows.  Returns next_block (NULL when the range is done) and the counts.
 * The rows are read as the caller (who must be allowed to SELECT them),
 * and the WHEN conditions evaluated as the caller, as the trigger
 * machinery evaluates them as the writer.
 */
Datum
tt_backfill_slice_sql(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	TimestampTz since = PG_GETARG_TIMESTAMPTZ(1);
	TimestampTz until = PG_GETARG_TIMESTAMPTZ(2);
	int64		first_block = PG_GETARG_INT64(3);
	int64		end_block = PG_GETARG_INT64(4);
	int32		slice_rows = PG_GETARG_INT32(5);
	TimestampTz now = GetCurrentTransactionStartTimestamp();
	TimestampTz oldest = now - (TimestampTz) tt_backfill_max_age_s * USECS_PER_SEC;
	BackfillCounts counts = {0};
	int64		next_block = -1;
	Relation	rel;
	EState	   *estate;
	ExprContext *econtext;
	BackfillTrigger *triggers;
	int			ntriggers;
	BackfillRow *rows;
	int			nrows = 0;
	int			maxrows;
	Oid			fn;
	Oid			owner;
	AclResult	aclresult;
	TupleDesc	resultdesc;
	Datum		values[7];
	bool		nulls[7] = {0};

	if (get_call_result_type(fcinfo, NULL, &resultdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (slice_rows < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("slice_rows must be at least 1")));
	if (until > now)
		until = now;

	rel = table_open(relid, AccessShareLock);
	if (rel->rd_rel->relkind != RELKIND_RELATION)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("cannot backfill \"%s\": it is not a table", RelationGetRelationName(rel)),
				 errhint(rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE ?
						 "Backfill each of its partitions." : "Backfill the table it reads.")));
	aclresult = pg_class_aclcheck(relid, GetUserId(), ACL_SELECT);
	if (aclresult != ACLCHECK_OK)
		aclcheck_error(aclresult, OBJECT_TABLE, RelationGetRelationName(rel));

	estate = CreateExecutorState();
	econtext = GetPerTupleExprContext(estate);
	fn = capture_function(&owner);
	SPI_connect();
	ntriggers = backfill_triggers(rel, fn, estate, &triggers);
	SPI_finish();

	maxrows = Max(64, Min(slice_rows, 1000000)) * ntriggers;
	rows = palloc(sizeof(BackfillRow) * maxrows);
	if (first_block < end_block)
	{
		ItemPointerData mintid;
		ItemPointerData maxtid;
		TableScanDesc scan;
		TupleTableSlot *slot = table_slot_create(rel, NULL);
		TupleTableSlot *oldslot = MakeSingleTupleTableSlot(RelationGetDescr(rel),
														   &TTSOpsVirtual);
		BlockNumber current = InvalidBlockNumber;

		ExecStoreAllNullTuple(oldslot);
		ItemPointerSet(&mintid, (BlockNumber) first_block, FirstOffsetNumber);
		ItemPointerSet(&maxtid, (BlockNumber) (end_block - 1), MaxOffsetNumber);
		scan = table_beginscan_tidrange(rel, GetActiveSnapshot(), &mintid, &maxtid);
		while (table_scan_getnextslot_tidrange(scan, ForwardScanDirection, slot))
		{
			BlockNumber block = ItemPointerGetBlockNumber(&slot->tts_tid);
			HeapTuple	tup = NULL;

			CHECK_FOR_INTERRUPTS();
			if (block != current)
			{
				/* a slice ends between blocks, so the next starts at one */
				if (counts.scanned >= slice_rows)
				{
					next_block = block;
					break;
				}
				current = block;
			}
			counts.scanned++;
			for (int t = 0; t < ntriggers; t++)
			{
				TimestampTz time;

				if (!tt_row_event_time(&triggers[t].cfg.cols[CF_EVENT_TIME],
									   ExecFetchSlotHeapTuple(slot, false, NULL),
									   RelationGetDescr(rel), &time, NULL) ||
					time < since || time >= until)
				{
					counts.not_matching++;
					continue;
				}
				if (triggers[t].when != NULL)
				{
					ResetExprContext(econtext);
					econtext->ecxt_innertuple = oldslot;
					econtext->ecxt_outertuple = slot;
					if (!ExecQual(triggers[t].when, econtext))
					{
						counts.not_matching++;
						continue;
					}
				}
				/* counted among the orders the trigger would have queued */
				if (time < oldest)
				{
					counts.too_old++;
					continue;
				}
				if (tup == NULL)
					tup = ExecCopySlotHeapTuple(slot);
				if (nrows == maxrows)
				{
					maxrows *= 2;
					rows = repalloc_huge(rows, sizeof(BackfillRow) * maxrows);
				}
				rows[nrows].trigger = t;
				rows[nrows].tup = tup;
				nrows++;
			}
		}
		table_endscan(scan);
		ExecDropSingleTupleTableSlot(slot);
		ExecDropSingleTupleTableSlot(oldslot);
	}
	if (nrows > 0)
		build_as_owner(owner, RelationGetDescr(rel), triggers, rows, nrows, &counts);
	FreeExecutorState(estate);
	table_close(rel, AccessShareLock);

	if (next_block >= 0)
		values[0] = Int64GetDatum(next_block);
	else
		nulls[0] = true;
	values[1] = Int64GetDatum(counts.scanned);
	values[2] = Int64GetDatum(counts.queued);
	values[3] = Int64GetDatum(counts.failed);
	values[4] = Int64GetDatum(counts.known);
	values[5] = Int64GetDatum(counts.too_old);
	values[6] = Int64GetDatum(counts.not_matching);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(resultdesc),
													  values, nulls)));
}
