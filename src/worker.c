/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The delivery worker's loop: keep the pipeline fed with claims while
 *	  it has room, record each answer as it arrives, delete old sent
 *	  events; and the transactions each step runs in.  The steps are
 *	  worker_claim.c, worker_send.c and worker_record.c; worker.h says
 *	  what the words mean.
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
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "utils/hsearch.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/plancache.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "policy.h"
#include "tiktok_capi.h"
#include "worker.h"

/* Most requests' worth of events one claim takes */
#define TT_CLAIM_BATCHES 4
/* Longest wait between two looks at retention and the settings */
#define TT_LOOK_MS 1000

PGDLLEXPORT void tt_worker_main(Datum arg);

static void set_session_options(void);
static void record_settled(void);
static long feed_pipeline(bool woken);
static bool claim_some(int limit, bool newest);
static void retention_slice(void);
static void end_url_pause(const char *why);
static double url_pause_ms(void);
static void settle_url_pause(void);
static bool begin_transaction(const char *activity, bool claiming);
static LOCKTAG sending_lock_tag(void);
static bool erasure_waits(void);
static void release_sending_lock(void);
static void end_transaction(void);

/* the database this worker delivers, as the launcher named it */
static char worker_database[NAMEDATALEN];
static bool said_no_extension = false;
/* the URL pause (worker.h): the api_url it is about, NULL while none */
static char *paused_url = NULL;
static TimestampTz paused_since;
static TimestampTz pause_retry_at;
/* the extension the current transaction saw: a record is only written to
 * the outbox its events were claimed from */
static Oid	transaction_extension = InvalidOid;

/* the claims whose events are not all recorded, and those events' ids */
static List *claims = NIL;
static HTAB *owned = NULL;
static MemoryContext claims_context = NULL;
/* pixels paused since the claims in the pipeline read them */
static List *paused_now = NIL;
/* more events are due than the last claim took (a backlog drains) */
static bool more_due = true;
/* a commit woke us during a backlog: the newest events go first */
static bool fresh_pending = false;
/* a commit woke us: claim once there is room, however long that takes */
static bool wake_pending = false;
/* when the next event not yet due becomes due */
static TimestampTz next_due_at = 0;
static bool holding_sending_lock = false;

/*
 * The worker's loop: record what the answers settled, feed the pipeline
 * while it has room and events are due, then wait for an answer, a
 * commit's wake-up, or the next due event, whichever comes first.
 */
void
tt_worker_main(Datum arg)
{
	HASHCTL		ctl;
	bool		woken = true;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	strlcpy(worker_database, MyBgworkerEntry->bgw_extra, NAMEDATALEN);
	BackgroundWorkerInitializeConnection(worker_database, NULL, 0);
	if (!tt_publish_worker_latch())
	{
		/* the launcher stopped that one; it starts this one again shortly */
		ereport(LOG,
				(errmsg("tiktok_capi: another delivery worker still runs in database \"%s\"; this one exits",
						worker_database)));
		proc_exit(1);
	}
	set_session_options();
	claims_context = AllocSetContextCreate(TopMemoryContext, "tiktok_capi claims",
										   ALLOCSET_DEFAULT_SIZES);
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(int64);
	ctl.hcxt = TopMemoryContext;
	owned = hash_create("tiktok_capi owned events", 16384, &ctl,
						HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	ereport(LOG, (errmsg("tiktok_capi: delivery worker started in database \"%s\"",
						 worker_database)));

	for (;;)
	{
		long		wait_ms;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		MemoryContextSwitchTo(TopMemoryContext);
		record_settled();
		settle_url_pause();
		wait_ms = feed_pipeline(woken);
		retention_slice();
		if (tt_pipeline_idle() && claims == NIL)
		{
			/* the requests are done: an erasure may go ahead */
			release_sending_lock();
			list_free_deep(paused_now);
			paused_now = NIL;
			if (wait_ms > 0)
			{
				/* flush the statistics held back while busy before sleeping */
				pgstat_report_stat(true);
				pgstat_report_activity(STATE_IDLE, NULL);
			}
		}
		woken = tt_pipeline_wait(wait_ms);
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
 * Record what the answers settled, in one transaction, then forget the
 * events: their ids leave the owned set only once the record has
 * committed, so no claim between takes them again.  A claim whose events
 * are all recorded is freed.
 */
static void
record_settled(void)
{
	List	   *settled = tt_pipeline_take_settled();
	List	   *news = tt_pipeline_take_news();
	double		retry_ms = tt_pipeline_min_retry_ms();
	ListCell   *lc;

	if (settled == NIL && news == NIL)
		return;
	if (begin_transaction("recording results", false))
	{
		/* in the transaction's (SPI's) memory, freed with it */
		List	   *recorded = NIL;
		int			lost = 0;

		foreach(lc, settled)
		{
			Claimed    *ev = lfirst(lc);

			if (ev->claim->extension == transaction_extension)
				recorded = lappend(recorded, ev);
			else
				lost++;
		}
		if (lost > 0)
			ereport(LOG,
					(errmsg("tiktok_capi: the extension was created again while %d events were being sent; their results are not recorded",
							lost),
					 errdetail("The events belonged to the dropped outbox.")));
		tt_record(recorded);
		tt_record_pixels(news);
		end_transaction();
	}
	foreach(lc, settled)
	{
		Claimed    *ev = lfirst(lc);

		(void) hash_search(owned, &ev->id, HASH_REMOVE, NULL);
		ev->claim->unsettled--;
	}
	foreach(lc, claims)
	{
		Claim	   *claim = lfirst(lc);

		if (claim->unsettled == 0)
		{
			claims = foreach_delete_current(claims, lc);
			MemoryContextDelete(claim->cxt);
		}
	}
	/* a pixel paused now: requests of earlier claims must not go */
	foreach(lc, news)
	{
		PixelNews  *pn = lfirst(lc);

		if (pn->pause_now)
			paused_now = lappend(paused_now, pstrdup(pn->code));
		pfree(pn->code);
		if (pn->error)
			pfree(pn->error);
	}
	list_free_deep(news);
	list_free(settled);
	/* a retried event is due again after its backoff */
	if (retry_ms >= 0)
	{
		TimestampTz at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), (int64) retry_ms);

		if (next_due_at == 0 || at < next_due_at)
			next_due_at = at;
	}
}

/*
 * Claim while the pipeline has room and events are due, and start what
 * the window allows.  A commit's wake-up during a backlog claims the
 * newest due events first.  No claim while a URL pause lasts, nor while an
 * erasure waits for the requests in flight (it goes first, then the
 * claims resume).  Returns how long the loop may wait.
 */
static long
feed_pipeline(bool woken)
{
	double		pause_ms = url_pause_ms();
	TimestampTz now = GetCurrentTimestamp();
	long		wait_ms;
	bool		due;

	wake_pending |= woken;
	if (pause_ms > 0)
		return (long) Min(pause_ms, (double) TT_LOOK_MS);
	if (erasure_waits())
	{
		tt_pipeline_start(paused_now);
		return TT_LOOK_MS;
	}
	due = wake_pending || more_due || (next_due_at != 0 && now >= next_due_at);
	/* a wake-up during a backlog: the newest events, past the window */
	if (woken && more_due)
		fresh_pending = true;
	if (fresh_pending && !tt_pipeline_express_out())
	{
		fresh_pending = false;
		(void) claim_some(tt_batch_size, true);
	}
	while (due && tt_pipeline_room() > 0)
	{
		int			batches = Min(tt_pipeline_room(), TT_CLAIM_BATCHES);

		wake_pending = false;
		if (!claim_some(batches * tt_batch_size, false))
			break;
		due = more_due;
	}
	tt_pipeline_start(paused_now);

	if (more_due && tt_pipeline_room() > 0)
		return 0;
	wait_ms = Min(tt_poll_interval_ms, TT_LOOK_MS);
	if (!more_due && next_due_at != 0)
	{
		long		secs;
		int			usecs;

		TimestampDifference(GetCurrentTimestamp(), next_due_at, &secs, &usecs);
		wait_ms = Min(wait_ms, secs * 1000 + usecs / 1000 + 1);
	}
	return Max(wait_ms, 0);
}

/*
 * One claim of up to limit events into the pipeline.  Sets more_due and
 * next_due_at from what it found; false when the extension is not there.
 */
static bool
claim_some(int limit, bool newest)
{
	MemoryContext cxt = AllocSetContextCreate(claims_context, "tiktok_capi claim",
											  ALLOCSET_DEFAULT_SIZES);
	Claim	   *claim = MemoryContextAllocZero(cxt, sizeof(Claim));
	int			read;

	claim->cxt = cxt;
	if (!begin_transaction("claiming events", true))
	{
		MemoryContextDelete(cxt);
		more_due = false;
		next_due_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), tt_poll_interval_ms);
		return false;
	}
	read = tt_claim(claim, limit, newest, owned);
	claim->extension = transaction_extension;
	/* pixels after the claim: every claimed event's pixel is seen */
	if (claim->nevents > 0)
		tt_load_pixels(claim);
	if (!newest)
	{
		more_due = read >= limit;
		/* the next due event, and a look at least every poll_interval */
		if (!more_due)
			next_due_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													  (int64) Min(tt_ms_until_due(),
																  (double) tt_poll_interval_ms));
	}
	end_transaction();
	if (claim->nevents == 0)
	{
		MemoryContextDelete(cxt);
		return true;
	}
	claims = lappend(claims, claim);
	tt_pipeline_add(claim, paused_now, newest);
	return true;
}

/* A slice of retention each second, or each turn while old sent events pile up */
static void
retention_slice(void)
{
	static TimestampTz last_retention = 0;
	static bool retention_behind = false;

	if (tt_retention_s < 0 ||
		!(retention_behind ||
		  TimestampDifferenceExceeds(last_retention, GetCurrentTimestamp(), TT_LOOK_MS)))
		return;
	if (begin_transaction("deleting old sent events", false))
	{
		retention_behind = tt_delete_old_sent() == TT_RETENTION_ROWS;
		end_transaction();
	}
	last_retention = GetCurrentTimestamp();
}

/* The URL pause is over: say why, and stop showing it */
static void
end_url_pause(const char *why)
{
	ereport(LOG, (errmsg_internal("%s", why)));
	pfree(paused_url);
	paused_url = NULL;
	tt_publish_url_pause(NULL, NULL, 0, 0);
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
		end_url_pause(psprintf("tiktok_capi: tiktok_capi.api_url changed to \"%s\"; delivery resumes",
							   tt_api_url));
		return 0;
	}
	if (GetCurrentTimestamp() >= pause_retry_at)
		return 0;
	TimestampDifference(GetCurrentTimestamp(), pause_retry_at, &secs, &usecs);
	return Max(secs * 1000.0 + usecs / 1000.0, 1);
}

/*
 * After answers: pause delivery when one was not the Events API's, saying
 * so once for each api_url that is found wrong; end the pause once the API
 * answers.  Called with no transaction open.
 */
static void
settle_url_pause(void)
{
	TimestampTz now = GetCurrentTimestamp();
	bool		api_answered;
	char	   *url_problem = tt_pipeline_url_problem(&api_answered);

	if (url_problem != NULL)
	{
		if (paused_url == NULL)
		{
			paused_url = MemoryContextStrdup(TopMemoryContext, tt_api_url);
			paused_since = now;
			ereport(WARNING,
					(errmsg("tiktok_capi: delivery paused: tiktok_capi.api_url \"%s\" does not answer as the Events API",
							tt_api_url),
					 errdetail("%s.  The events stay pending, their attempts not counted.",
							   url_problem),
					 errhint("Check tiktok_capi.api_url; it should end in %s.  Delivery resumes when it changes (ALTER SYSTEM SET tiktok_capi.api_url, then SELECT pg_reload_conf()), and it is tried again every %d minutes.",
							 TT_TRACK_PATH, TT_URL_PAUSE_MS / 60000)));
		}
		pause_retry_at = TimestampTzPlusMilliseconds(now, TT_URL_PAUSE_MS);
		tt_publish_url_pause(paused_url, url_problem, paused_since,
							 pause_retry_at);
		/* the events held back come first when delivery resumes */
		tt_claim_from_start();
	}
	else if (paused_url != NULL && api_answered)
	{
		end_url_pause(psprintf("tiktok_capi: delivery resumed: tiktok_capi.api_url \"%s\" answers as the Events API",
							   paused_url));
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
		MemoryContextSwitchTo(TopMemoryContext);
		if (!said_no_extension)
			ereport(LOG,
					(errmsg("tiktok_capi: extension not installed in database \"%s\"; the worker waits for CREATE EXTENSION tiktok_capi",
							worker_database)));
		said_no_extension = true;
		return false;
	}
	said_no_extension = false;
	if (claiming && !holding_sending_lock)
	{
		LOCKTAG		tag = sending_lock_tag();

		if (LockAcquire(&tag, ShareLock, true, true) == LOCKACQUIRE_NOT_AVAIL)
		{
			pgstat_report_activity(STATE_RUNNING, "waiting for an erasure (tt_forget) to commit");
			(void) LockAcquire(&tag, ShareLock, true, false);
		}
		holding_sending_lock = true;
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

	if (!holding_sending_lock)
		return;
	(void) LockRelease(&tag, ShareLock, true);
	holding_sending_lock = false;
}

/*
 * Does an erasure (tt_forget) wait for the sending lock?  Then no claim
 * adds to the requests it waits for: once those are done the lock goes,
 * the erasure commits, and the next claim (which waits for it) cannot see
 * the events it erased.  So an erasure waits for the requests in flight
 * when it starts, and the pipeline for one erasure.
 */
static bool
erasure_waits(void)
{
	LOCKTAG		tag = sending_lock_tag();

	return holding_sending_lock && LockHasWaiters(&tag, ShareLock, true);
}

/*
 * Prepare one of the worker's statements once (tt_prepare_once), its SQL
 * text shown meanwhile as the statement being run: planning takes the
 * statement's locks, and can fail as running it can.
 */
SPIPlanPtr
tt_worker_prepare(SPIPlanPtr *plan, const char *sql, int nargs, Oid *argtypes,
				  int cursor_options)
{
	SPIPlanPtr	prepared;

	debug_query_string = sql;
	prepared = tt_prepare_once(plan, sql, nargs, argtypes, cursor_options);
	debug_query_string = NULL;
	return prepared;
}

/*
 * Run one of the worker's prepared statements with its SQL text as the
 * statement being run, as a client's would be: a statement that fails (a
 * lock_timeout, a statement_timeout, a permission taken away) is logged
 * with its text (STATEMENT: in the server log), not as a bare error.
 * Left set by an error, the text goes with the worker, which exits.
 */
int
tt_worker_execute(SPIPlanPtr plan, Datum *values, const char *nulls,
				  bool read_only, long count)
{
	CachedPlanSource *source = linitial(SPI_plan_get_plan_sources(plan));
	int			result;

	debug_query_string = source->query_string;
	result = SPI_execute_plan(plan, values, nulls, read_only, count);
	debug_query_string = NULL;
	return result;
}

/*
 * Commit, and report table statistics so autovacuum sees our churn.  The
 * caller goes on in TopMemoryContext, where the worker's own state lives.
 */
static void
end_transaction(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(TopMemoryContext);
	pgstat_report_stat(false);
}
