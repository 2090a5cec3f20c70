/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The delivery worker's loop: claim due events, send them to the Events
 *	  API, record what became of them, delete old sent ones; and the
 *	  transactions each step runs in.  The steps are worker_claim.c,
 *	  worker_send.c and worker_record.c; worker.h says what the words mean.
 *
 * Delivery is at least once: an event can be sent again after a crash
 * between the answer and the record.  It keeps its event_id, so TikTok
 * counts it once; and no event is sent again once its first attempt is 47
 * hours old, inside TikTok's 48-hour deduplication window.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "tiktok_capi.h"
#include "worker.h"

/* Requests a claim may fill; the transport sends up to 8 at once */
#define TT_CLAIM_BATCHES 4

PGDLLEXPORT void tt_worker_main(Datum arg);

static void set_session_options(void);
static long run_cycle(void);
static bool begin_transaction(const char *activity, bool claiming);
static LOCKTAG sending_lock_tag(void);
static void release_sending_lock(void);
static void end_transaction(void);

static MemoryContext cycle_context = NULL;
static bool said_no_extension = false;
/* the extension the current transaction saw: a record is only written to
 * the outbox its events were claimed from */
static Oid	transaction_extension = InvalidOid;

/*
 * The worker's loop: deliver while there is work, else sleep until the
 * next event is due, a commit wakes us, or poll_interval passes.
 */
void
tt_worker_main(Datum arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(tt_database, NULL, 0);
	tt_publish_worker_latch();
	set_session_options();
	cycle_context = AllocSetContextCreate(TopMemoryContext, "tiktok_capi cycle",
										  ALLOCSET_DEFAULT_SIZES);
	ereport(LOG, (errmsg("tiktok_capi: delivery worker started in database \"%s\"",
						 tt_database)));

	for (;;)
	{
		long		sleep_ms;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		MemoryContextReset(cycle_context);
		MemoryContextSwitchTo(cycle_context);
		sleep_ms = run_cycle();
		MemoryContextSwitchTo(TopMemoryContext);

		if (sleep_ms > 0)
		{
			/* flush the statistics held back while busy before sleeping */
			pgstat_report_stat(true);
			pgstat_report_activity(STATE_IDLE, NULL);
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 sleep_ms, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
		}
	}
}

/* Settings of the worker's own session, chosen for a queue's statements */
static void
set_session_options(void)
{
	/*
	 * The worker's commits need not wait for the WAL flush: losing the last
	 * records in a crash means sending those events again, with the same
	 * event_id, which delivery at least once allows anyway.
	 */
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);

	/*
	 * Every statement of the worker is meant to walk an index: the claim the
	 * due index in order, the record the primary key row by row.  A queue
	 * table's statistics are stale by nature (a backlog arrives between two
	 * ANALYZEs), and a plan built on them can turn a 4 ms claim into a sort
	 * of the whole backlog, or a record into a scan of the whole outbox.
	 * The statements are also prepared for generic plans only: a custom
	 * plan for a 4,000-element array once put the outbox on the outer side
	 * of the record's join, rescanning the array for every row.
	 */
	SetConfigOption("enable_seqscan", "off", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("enable_bitmapscan", "off", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("enable_sort", "off", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("enable_hashjoin", "off", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("enable_mergejoin", "off", PGC_SUSET, PGC_S_OVERRIDE);
	/* the disabled plans' cost would otherwise make every query JIT-compiled */
	SetConfigOption("jit", "off", PGC_SUSET, PGC_S_OVERRIDE);
}

/*
 * One round: claim, send, record, then a slice of retention.  Returns how
 * long to sleep: 0 while work is left, else until the next event is due,
 * at most poll_interval.
 */
static long
run_cycle(void)
{
	static TimestampTz last_retention = 0;
	static bool retention_behind = false;
	int			limit = tt_batch_size * TT_CLAIM_BATCHES;
	Cycle		cycle = {.cxt = cycle_context};
	double		due_ms = tt_poll_interval_ms;
	Oid			claimed_from;

	/* when the next event is due is asked in the round's last transaction */
	if (!begin_transaction("claiming events", true))
		return tt_poll_interval_ms;
	/* pixels after the claim: every claimed event's pixel is seen */
	tt_claim(&cycle, limit);
	claimed_from = transaction_extension;
	if (cycle.nevents > 0)
		tt_load_pixels(&cycle);
	else
		due_ms = tt_ms_until_due();
	end_transaction();
	if (cycle.nevents == 0)
		release_sending_lock();

	if (cycle.nevents > 0)
	{
		List	   *batches = NIL;

		tt_sort_out(&cycle, &batches);
		tt_send_all(&cycle, batches);
		release_sending_lock();
		if (begin_transaction("recording results", false))
		{
			if (transaction_extension == claimed_from)
				tt_record(&cycle);
			else
				ereport(LOG,
						(errmsg("tiktok_capi: the extension was created again while %d events were being sent; their results are not recorded",
								cycle.nevents),
						 errdetail("The events belonged to the dropped outbox.")));
			if (cycle.nevents < limit)
				due_ms = tt_ms_until_due();
			end_transaction();
		}
	}

	/* a slice each second, or one each round while old sent events pile up */
	if (tt_retention_s >= 0 &&
		(retention_behind ||
		 TimestampDifferenceExceeds(last_retention, GetCurrentTimestamp(), 1000)) &&
		begin_transaction("deleting old sent events", false))
	{
		retention_behind = tt_delete_old_sent() == TT_RETENTION_ROWS;
		last_retention = GetCurrentTimestamp();
		end_transaction();
	}

	if (cycle.nevents >= limit || retention_behind)
		return 0;
	return (long) Min(due_ms, (double) tt_poll_interval_ms);
}

/*
 * Start a transaction with SPI and a snapshot.  Returns false (and has
 * ended the transaction) while the extension is not installed in this
 * database; says so in the log once.
 *
 * Each transaction first holds the extension itself in share mode: a DROP
 * EXTENSION locks the extension before its tables, so it waits for the
 * transaction (never the other way round, which could deadlock on the
 * outbox and pixels locks) and runs while the requests are in flight.
 *
 * A claim then takes the sending lock (shared, held until the claimed
 * events' requests are done), before its snapshot: tt_forget() takes it
 * exclusively, so an erasure waits for the requests in flight, and the
 * next claim waits for the erasure to commit and then cannot see the
 * events it deleted.
 */
static bool
begin_transaction(const char *activity, bool claiming)
{
	Oid			extension;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	extension = get_extension_oid("tiktok_capi", true);
	if (OidIsValid(extension))
	{
		LockDatabaseObject(ExtensionRelationId, extension, 0, AccessShareLock);
		/* a DROP EXTENSION we waited for has committed */
		if (get_extension_oid("tiktok_capi", true) != extension)
			extension = InvalidOid;
	}
	transaction_extension = extension;
	if (!OidIsValid(extension))
	{
		CommitTransactionCommand();
		MemoryContextSwitchTo(cycle_context);
		if (!said_no_extension)
			ereport(LOG,
					(errmsg("tiktok_capi: extension not installed in database \"%s\"; the worker waits for CREATE EXTENSION tiktok_capi",
							tt_database)));
		said_no_extension = true;
		return false;
	}
	said_no_extension = false;
	if (claiming)
	{
		LOCKTAG		tag = sending_lock_tag();

		if (LockAcquire(&tag, ShareLock, true, true) == LOCKACQUIRE_NOT_AVAIL)
		{
			pgstat_report_activity(STATE_RUNNING, "waiting for an erasure (tt_forget) to commit");
			(void) LockAcquire(&tag, ShareLock, true, false);
		}
	}
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	if (activity)
		pgstat_report_activity(STATE_RUNNING, activity);
	return true;
}

/* The sending lock: what pg_advisory_xact_lock(TT_SENDING_LOCK) takes */
static LOCKTAG
sending_lock_tag(void)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) (TT_SENDING_LOCK >> 32),
						 (uint32) TT_SENDING_LOCK, 1);
	return tag;
}

/* The claimed events' requests are done: an erasure may go ahead */
static void
release_sending_lock(void)
{
	LOCKTAG		tag = sending_lock_tag();

	(void) LockRelease(&tag, ShareLock, true);
}

/*
 * Commit, and report table statistics so autovacuum sees our churn.  Work
 * goes on in the cycle's memory context (a commit leaves us in
 * TopMemoryContext).
 */
static void
end_transaction(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	MemoryContextSwitchTo(cycle_context);
}
