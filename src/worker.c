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

#include "policy.h"
#include "tiktok_capi.h"
#include "worker.h"

/* Requests a claim may fill; the transport sends up to 8 at once */
#define TT_CLAIM_BATCHES 4

PGDLLEXPORT void tt_worker_main(Datum arg);

static void set_session_options(void);
static long run_cycle(void);
static bool deliver(Cycle *cycle, int limit, double *due_ms);
static double url_pause_ms(void);
static void settle_url_pause(Cycle *cycle);
static bool begin_transaction(const char *activity, bool claiming);
static LOCKTAG sending_lock_tag(void);
static void release_sending_lock(void);
static void end_transaction(void);

static MemoryContext cycle_context = NULL;
static bool said_no_extension = false;
/* the URL pause (worker.h): the api_url it is about, NULL while none */
static char *paused_url = NULL;
static TimestampTz paused_since;
static TimestampTz pause_retry_at;
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
 * at most poll_interval.  During a URL pause only retention runs: it keeps
 * its promise about old payloads whatever becomes of delivery.
 */
static long
run_cycle(void)
{
	static TimestampTz last_retention = 0;
	static bool retention_behind = false;
	int			limit = tt_batch_size * TT_CLAIM_BATCHES;
	Cycle		cycle = {.cxt = cycle_context};
	double		due_ms = url_pause_ms();

	if (due_ms == 0)
	{
		due_ms = tt_poll_interval_ms;
		if (!deliver(&cycle, limit, &due_ms))
			return tt_poll_interval_ms;
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
 * Claim, send and record; *due_ms is lowered to when the next event is
 * due.  False while the extension is not installed.
 */
static bool
deliver(Cycle *cycle, int limit, double *due_ms)
{
	Oid			claimed_from;
	List	   *batches = NIL;

	/* when the next event is due is asked in the round's last transaction */
	if (!begin_transaction("claiming events", true))
		return false;
	/* pixels after the claim: every claimed event's pixel is seen */
	tt_claim(cycle, limit);
	claimed_from = transaction_extension;
	if (cycle->nevents > 0)
		tt_load_pixels(cycle);
	else
		*due_ms = tt_ms_until_due();
	end_transaction();
	if (cycle->nevents == 0)
	{
		release_sending_lock();
		return true;
	}

	tt_sort_out(cycle, &batches);
	tt_send_all(cycle, batches);
	release_sending_lock();
	settle_url_pause(cycle);
	if (begin_transaction("recording results", false))
	{
		if (transaction_extension == claimed_from)
			tt_record(cycle);
		else
			ereport(LOG,
					(errmsg("tiktok_capi: the extension was created again while %d events were being sent; their results are not recorded",
							cycle->nevents),
					 errdetail("The events belonged to the dropped outbox.")));
		if (cycle->nevents < limit && cycle->url_problem == NULL)
			*due_ms = tt_ms_until_due();
		end_transaction();
	}
	return true;
}

/*
 * Milliseconds the URL pause still lasts; 0 when delivery may go on.  A
 * changed api_url (a reload) ends the pause at once; when the pause has run
 * out, the next round tries api_url again and the pause stays on record
 * until an answer tells how it went.
 */
static double
url_pause_ms(void)
{
	long		secs;
	int			usecs;

	if (paused_url == NULL)
		return 0;
	if (strcmp(paused_url, tt_api_url) != 0)
	{
		ereport(LOG,
				(errmsg("tiktok_capi: tiktok_capi.api_url changed to \"%s\"; delivery resumes",
						tt_api_url)));
		pfree(paused_url);
		paused_url = NULL;
		tt_publish_url_pause(NULL, NULL, 0, 0);
		return 0;
	}
	if (GetCurrentTimestamp() >= pause_retry_at)
		return 0;
	TimestampDifference(GetCurrentTimestamp(), pause_retry_at, &secs, &usecs);
	return Max(secs * 1000.0 + usecs / 1000.0, 1);
}

/*
 * After a round's requests: pause delivery when an answer was not the
 * Events API's, saying so once for each api_url that is found wrong; end
 * the pause once the API answers.  Called with no transaction open.
 */
static void
settle_url_pause(Cycle *cycle)
{
	TimestampTz now = GetCurrentTimestamp();

	if (cycle->url_problem != NULL)
	{
		if (paused_url == NULL)
		{
			paused_url = MemoryContextStrdup(TopMemoryContext, tt_api_url);
			paused_since = now;
			ereport(WARNING,
					(errmsg("tiktok_capi: delivery paused: tiktok_capi.api_url \"%s\" does not answer as the Events API",
							tt_api_url),
					 errdetail("%s.  The events stay pending, their attempts not counted.",
							   cycle->url_problem),
					 errhint("Check tiktok_capi.api_url; it should end in %s.  Delivery resumes when it changes (ALTER SYSTEM SET tiktok_capi.api_url, then SELECT pg_reload_conf()), and it is tried again every %d minutes.",
							 TT_TRACK_PATH, TT_URL_PAUSE_MS / 60000)));
		}
		pause_retry_at = TimestampTzPlusMilliseconds(now, TT_URL_PAUSE_MS);
		tt_publish_url_pause(paused_url, cycle->url_problem, paused_since,
							 pause_retry_at);
		/* the events held back come first when delivery resumes */
		tt_claim_from_start();
	}
	else if (paused_url != NULL && cycle->api_answered)
	{
		ereport(LOG,
				(errmsg("tiktok_capi: delivery resumed: tiktok_capi.api_url \"%s\" answers as the Events API",
						paused_url)));
		pfree(paused_url);
		paused_url = NULL;
		tt_publish_url_pause(NULL, NULL, 0, 0);
	}
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
