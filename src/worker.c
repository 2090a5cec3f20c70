/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The delivery worker: claim due events, send them to the Events API,
 *	  record what became of them, delete old sent ones.
 *
 * Vocabulary:
 *	- claim: a short read-only transaction that takes the due events,
 *	  oldest first, into the worker's memory.  It writes nothing: there is
 *	  one worker, which owns what it claimed until it records the results,
 *	  and its lease is its own life.  If it dies in between, the events are
 *	  still 'pending' in the table and the next worker sends them again.
 *	  No transaction is open while requests are in flight.
 *	- batch: the events of one pixel sent in one request (at most
 *	  tiktok_capi.batch_size, and at most TT_BATCH_BYTES of JSON).
 *	- attempt: one claim of an event.  A request that TikTok rejected as
 *	  a whole because of one event is split and resent within the same
 *	  attempt, so good events are not charged for a bad neighbour.
 *	- record: a short transaction that writes each claimed event's fate,
 *	  counting the attempt: sent; pending again after a backoff; failed
 *	  with a reason; or deferred (its pixel is paused or disabled: no
 *	  attempt is counted).  On the success path this is the one write per
 *	  event besides its insert: each write is a new row version and a new
 *	  entry in every index, which is what delivery throughput is made of.
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
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "http.h"
#include "policy.h"
#include "tiktok_capi.h"

/* Past TikTok's 48-hour deduplication window a resend would count twice */
#define TT_RESEND_WINDOW_MS (47.0 * 3600 * 1000)
/* How long a paused pixel waits before it is tried again */
#define TT_PAUSE_MS (3600 * 1000)
/* Keep a request's body well under what an HTTP server takes */
#define TT_BATCH_BYTES (4 * 1024 * 1024)
/* Requests a claim may fill; the transport sends up to 8 at once */
#define TT_CLAIM_BATCHES 4
/* Longest a claim cursor is followed before starting from the beginning */
#define TT_CURSOR_RESET_MS 30000
/* Sent events deleted per retention transaction */
#define TT_RETENTION_ROWS 5000

/* One pixel's configuration and what this cycle learned about it */
typedef struct Pixel
{
	char	   *code;
	char	   *access_token;
	char	   *test_event_code;	/* NULL: none */
	bool		deferred;		/* disabled, paused, or paused just now */
	bool		pause_now;		/* this cycle saw 40001/40105 */
	bool		succeeded;
	char	   *error;			/* last error this cycle, or NULL */
} Pixel;

typedef enum Fate
{
	FATE_SENT,
	FATE_RETRY,
	FATE_FAILED,
	FATE_DEFERRED
} Fate;

/* One claimed event */
typedef struct Claimed
{
	int64		id;
	char	   *pixel_code;
	Pixel	   *pixel;			/* NULL: not configured */
	char	   *payload;		/* the event's JSON text */
	int			attempts;		/* counting this one */
	double		age_ms;			/* since its first attempt */
	Fate		fate;
	double		delay_ms;		/* FATE_RETRY: wait before the next attempt */
	char	   *error;
	char	   *request_id;
} Claimed;

/* One request's worth of events (indexes into the claimed array) */
typedef struct Batch
{
	Pixel	   *pixel;
	int		   *items;
	int			nitems;
} Batch;

/* Everything one cycle works on; lives in cycle_context */
typedef struct Cycle
{
	Pixel	   *pixels;
	int			npixels;
	Claimed    *events;
	int			nevents;
	TimestampTz claimed_at;
} Cycle;

PGDLLEXPORT void tt_worker_main(Datum arg);

static void set_session_options(void);
static long run_cycle(void);
static bool begin_transaction(const char *activity, bool claiming);
static LOCKTAG sending_lock_tag(void);
static void release_sending_lock(void);
static void end_transaction(void);
static void load_pixels(Cycle *cycle);
static void claim(Cycle *cycle, int limit);
static void sort_out(Cycle *cycle, List **batches);
static List *cut_batches(Cycle *cycle, Pixel *pixel, int *items, int nitems);
static void build_body(Cycle *cycle, Batch *batch, StringInfo body);
static void send_all(Cycle *cycle, List *batches);
static void judge(Cycle *cycle, Batch *batch, TTHttpCall *call, List **resend);
static void set_fate(Claimed *ev, Fate fate, const char *error, const char *request_id);
static void retry_or_fail(Claimed *ev, const char *reason, double random01);
static void record(Cycle *cycle);
static bool same_record(const Claimed *a, const Claimed *b);
static void record_group(Cycle *cycle, const Claimed *lead, Datum *ids, int n);
static void record_pixels(Cycle *cycle);
static int	delete_old_sent(void);
static double ms_until_due(void);

static MemoryContext cycle_context = NULL;
/* where the next claim starts; DT_NOBEGIN: from the first due event */
static TimestampTz cursor_time = DT_NOBEGIN;
static int64 cursor_id = 0;
static TimestampTz cursor_started = 0;
static bool said_no_extension = false;
/* the extension the current transaction saw: a record is only written to
 * the outbox its events were claimed from */
static Oid	transaction_extension = InvalidOid;
static SPIPlanPtr pixels_plan = NULL;
static SPIPlanPtr claim_plan = NULL;
static SPIPlanPtr record_plan = NULL;
static SPIPlanPtr pixel_health_plan = NULL;
static SPIPlanPtr pause_plan = NULL;
static SPIPlanPtr retention_plan = NULL;
static SPIPlanPtr due_plan = NULL;

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
	Cycle		cycle = {0};
	double		due_ms = tt_poll_interval_ms;
	Oid			claimed_from;

	/* when the next event is due is asked in the round's last transaction */
	if (!begin_transaction("claiming events", true))
		return tt_poll_interval_ms;
	/* pixels after the claim: every claimed event's pixel is seen */
	claim(&cycle, limit);
	claimed_from = transaction_extension;
	if (cycle.nevents > 0)
		load_pixels(&cycle);
	else
		due_ms = ms_until_due();
	end_transaction();
	if (cycle.nevents == 0)
		release_sending_lock();

	if (cycle.nevents > 0)
	{
		List	   *batches = NIL;

		sort_out(&cycle, &batches);
		send_all(&cycle, batches);
		release_sending_lock();
		if (begin_transaction("recording results", false))
		{
			if (transaction_extension == claimed_from)
				record(&cycle);
			else
				ereport(LOG,
						(errmsg("tiktok_capi: the extension was created again while %d events were being sent; their results are not recorded",
								cycle.nevents),
						 errdetail("The events belonged to the dropped outbox.")));
			if (cycle.nevents < limit)
				due_ms = ms_until_due();
			end_transaction();
		}
	}

	/* a slice each second, or one each round while old sent events pile up */
	if (tt_retention_s >= 0 &&
		(retention_behind ||
		 TimestampDifferenceExceeds(last_retention, GetCurrentTimestamp(), 1000)) &&
		begin_transaction("deleting old sent events", false))
	{
		retention_behind = delete_old_sent() == TT_RETENTION_ROWS;
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

/* Read the pixels table into the cycle; find each claimed event's pixel */
static void
load_pixels(Cycle *cycle)
{
	SPIPlanPtr	plan = tt_prepare_once(&pixels_plan,
									   "SELECT pixel_code, access_token, test_event_code, enabled,"
									   "       coalesce(paused_until > now(), false)"
									   "  FROM tiktok_capi.pixels",
									   0, NULL, CURSOR_OPT_GENERIC_PLAN);
	MemoryContext cxt = cycle_context;

	if (SPI_execute_plan(plan, NULL, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "tiktok_capi: could not read the pixels");
	cycle->npixels = SPI_processed;
	cycle->pixels = MemoryContextAllocZero(cxt, sizeof(Pixel) * Max(1, SPI_processed));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	t = SPI_tuptable->vals[i];
		TupleDesc	d = SPI_tuptable->tupdesc;
		Pixel	   *p = &cycle->pixels[i];
		bool		isnull;
		char	   *test_code = SPI_getvalue(t, d, 3);

		p->code = MemoryContextStrdup(cxt, SPI_getvalue(t, d, 1));
		p->access_token = MemoryContextStrdup(cxt, SPI_getvalue(t, d, 2));
		p->test_event_code = test_code ? MemoryContextStrdup(cxt, test_code) : NULL;
		p->deferred = !DatumGetBool(SPI_getbinval(t, d, 4, &isnull)) ||
			DatumGetBool(SPI_getbinval(t, d, 5, &isnull));
	}
	for (int i = 0; i < cycle->nevents; i++)
	{
		Claimed    *ev = &cycle->events[i];

		for (int p = 0; p < cycle->npixels && ev->pixel == NULL; p++)
			if (strcmp(cycle->pixels[p].code, ev->pixel_code) == 0)
				ev->pixel = &cycle->pixels[p];
	}
}

/*
 * Claim up to limit due pending events, oldest first.  attempts counts
 * this attempt; age_ms is 0 for a first attempt.
 *
 * While a backlog drains, each claim starts where the last one ended (the
 * cursor): the index entries of events already sent stay in the due index
 * until vacuum, and starting from the beginning each time would walk them
 * all, again and again.  An event committed late by a long transaction
 * can sort before the cursor, so the claim starts from the beginning again
 * once it has caught up (a claim short of limit) and at least every
 * TT_CURSOR_RESET_MS.
 */
static void
claim(Cycle *cycle, int limit)
{
	Oid			argtypes[3] = {INT4OID, TIMESTAMPTZOID, INT8OID};
	Datum		values[3];
	SPIPlanPtr	plan = tt_prepare_once(&claim_plan,
									   "SELECT id, pixel_code, payload::text, attempts + 1,"
									   "   coalesce(extract(epoch FROM now() - first_attempt_at)::float8 * 1000, 0),"
									   "   next_attempt_at"
									   "  FROM tiktok_capi.outbox"
									   " WHERE status = 'pending' AND next_attempt_at <= now()"
									   "   AND (next_attempt_at, id) > ($2, $3)"
									   " ORDER BY next_attempt_at, id LIMIT $1",
									   3, argtypes, CURSOR_OPT_GENERIC_PLAN);
	MemoryContext old;
	TimestampTz now = GetCurrentTimestamp();

	if (TimestampDifferenceExceeds(cursor_started, now, TT_CURSOR_RESET_MS))
	{
		cursor_time = DT_NOBEGIN;
		cursor_id = 0;
	}
	if (cursor_time == DT_NOBEGIN)
		cursor_started = now;
	values[0] = Int32GetDatum(limit);
	values[1] = TimestampTzGetDatum(cursor_time);
	values[2] = Int64GetDatum(cursor_id);
	if (SPI_execute_plan(plan, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "tiktok_capi: could not claim events");
	if (SPI_processed < limit)
	{
		cursor_time = DT_NOBEGIN;
		cursor_id = 0;
	}
	else
	{
		HeapTuple	last = SPI_tuptable->vals[SPI_processed - 1];
		bool		isnull;

		cursor_id = DatumGetInt64(SPI_getbinval(last, SPI_tuptable->tupdesc, 1, &isnull));
		cursor_time = DatumGetTimestampTz(SPI_getbinval(last, SPI_tuptable->tupdesc, 6, &isnull));
	}

	old = MemoryContextSwitchTo(cycle_context);
	cycle->claimed_at = GetCurrentTransactionStartTimestamp();
	cycle->nevents = SPI_processed;
	cycle->events = palloc0(sizeof(Claimed) * Max(1, SPI_processed));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	t = SPI_tuptable->vals[i];
		TupleDesc	d = SPI_tuptable->tupdesc;
		Claimed    *ev = &cycle->events[i];
		bool		isnull;

		ev->id = DatumGetInt64(SPI_getbinval(t, d, 1, &isnull));
		ev->pixel_code = SPI_getvalue(t, d, 2);
		ev->payload = TextDatumGetCString(SPI_getbinval(t, d, 3, &isnull));
		/* TikTok reads UTF-8; a LATIN1 (or other) database stores its own */
		if (GetDatabaseEncoding() != PG_UTF8 && GetDatabaseEncoding() != PG_SQL_ASCII)
			ev->payload = pg_server_to_any(ev->payload, strlen(ev->payload), PG_UTF8);
		ev->attempts = DatumGetInt32(SPI_getbinval(t, d, 4, &isnull));
		ev->age_ms = DatumGetFloat8(SPI_getbinval(t, d, 5, &isnull));
	}
	MemoryContextSwitchTo(old);
}

/*
 * Settle the events that must not be sent (pixel not configured, paused
 * or disabled; first attempt too long ago), and cut the rest into batches
 * per pixel.
 */
static void
sort_out(Cycle *cycle, List **batches)
{
	int		   *items = palloc(sizeof(int) * cycle->nevents);

	for (int p = 0; p < cycle->npixels; p++)
	{
		Pixel	   *pixel = &cycle->pixels[p];
		int			n = 0;

		for (int i = 0; i < cycle->nevents; i++)
		{
			Claimed    *ev = &cycle->events[i];

			if (ev->pixel != pixel)
				continue;
			if (pixel->deferred)
				set_fate(ev, FATE_DEFERRED, NULL, NULL);
			else if (ev->age_ms > TT_RESEND_WINDOW_MS)
				set_fate(ev, FATE_FAILED,
						 "not sent again: its first attempt was more than 47 hours ago, and past TikTok's 48-hour deduplication window a resend could be counted twice",
						 NULL);
			else
				items[n++] = i;
		}
		*batches = list_concat(*batches, cut_batches(cycle, pixel, items, n));
	}
	for (int i = 0; i < cycle->nevents; i++)
	{
		Claimed    *ev = &cycle->events[i];

		if (ev->pixel == NULL)
			set_fate(ev, FATE_FAILED,
					 "its pixel is not configured in tiktok_capi.pixels (add it with tt_add_pixel, then tt_requeue_failed)",
					 NULL);
	}
}

/* Cut one pixel's events into batches of batch_size events and TT_BATCH_BYTES */
static List *
cut_batches(Cycle *cycle, Pixel *pixel, int *items, int nitems)
{
	List	   *batches = NIL;
	int			start = 0;

	while (start < nitems)
	{
		Batch	   *b = palloc0(sizeof(Batch));
		size_t		bytes = 0;
		int			n = 0;

		while (start + n < nitems && n < tt_batch_size)
		{
			size_t		len = strlen(cycle->events[items[start + n]].payload) + 1;

			if (n > 0 && bytes + len > TT_BATCH_BYTES)
				break;
			bytes += len;
			n++;
		}
		b->pixel = pixel;
		b->items = palloc(sizeof(int) * n);
		memcpy(b->items, items + start, sizeof(int) * n);
		b->nitems = n;
		batches = lappend(batches, b);
		start += n;
	}
	return batches;
}

/* The request body: {"event_source":"web","event_source_id":...,"data":[...]} */
static void
build_body(Cycle *cycle, Batch *batch, StringInfo body)
{
	initStringInfo(body);
	appendStringInfoString(body, "{\"event_source\":\"web\",\"event_source_id\":");
	escape_json(body, batch->pixel->code);
	if (batch->pixel->test_event_code)
	{
		appendStringInfoString(body, ",\"test_event_code\":");
		escape_json(body, batch->pixel->test_event_code);
	}
	appendStringInfoString(body, ",\"data\":[");
	for (int i = 0; i < batch->nitems; i++)
	{
		if (i > 0)
			appendStringInfoChar(body, ',');
		appendStringInfoString(body, cycle->events[batch->items[i]].payload);
	}
	appendStringInfoString(body, "]}");
}

/*
 * Send every batch, all at once, and judge the answers.  A batch rejected
 * for one bad event comes back as two halves, sent in the next round,
 * until every bad event stands alone.
 */
static void
send_all(Cycle *cycle, List *batches)
{
	while (batches != NIL)
	{
		int			ncalls = list_length(batches);
		TTHttpCall *calls = palloc0(sizeof(TTHttpCall) * ncalls);
		List	   *resend = NIL;
		int			nevents = 0;
		ListCell   *lc;
		int			i = 0;

		foreach(lc, batches)
		{
			Batch	   *b = lfirst(lc);

			calls[i].access_token = b->pixel->access_token;
			calls[i].body = palloc(sizeof(StringInfoData));
			build_body(cycle, b, calls[i].body);
			nevents += b->nitems;
			i++;
		}
		pgstat_report_activity(STATE_RUNNING,
								psprintf("sending %d events in %d requests", nevents, ncalls));
		tt_http_perform(calls, ncalls, tt_api_url, tt_http_timeout_ms);

		i = 0;
		foreach(lc, batches)
		{
			judge(cycle, lfirst(lc), &calls[i], &resend);
			pfree(calls[i].body->data);
			i++;
		}
		batches = resend;
	}
}

/* Turn one request's answer into its events' fates (and its pixel's) */
static void
judge(Cycle *cycle, Batch *batch, TTHttpCall *call, List **resend)
{
	TTAnswer	answer;
	char		reason[TT_MESSAGE_MAX + 64];
	TTVerdict	verdict;
	Pixel	   *pixel = batch->pixel;

	tt_read_answer(call->answer.data, call->answer.len, &answer);
	verdict = tt_judge(call->transport_error, call->http_status, &answer,
					   batch->nitems, reason, sizeof(reason));
	if (verdict == TT_SENT)
		pixel->succeeded = true;
	else
		pixel->error = pstrdup(reason);

	switch (verdict)
	{
		case TT_SENT:
			for (int i = 0; i < batch->nitems; i++)
				set_fate(&cycle->events[batch->items[i]], FATE_SENT, NULL,
						 answer.request_id[0] ? answer.request_id : NULL);
			break;
		case TT_RETRY:
			{
				/* one draw per request: its events are retried together */
				double		random01 = pg_prng_double(&pg_global_prng_state);

				for (int i = 0; i < batch->nitems; i++)
					retry_or_fail(&cycle->events[batch->items[i]], reason, random01);
			}
			break;
		case TT_REJECT:
			set_fate(&cycle->events[batch->items[0]], FATE_FAILED, reason,
					 answer.request_id[0] ? answer.request_id : NULL);
			break;
		case TT_PAUSE_PIXEL:
			pixel->pause_now = true;
			pixel->deferred = true;
			for (int i = 0; i < batch->nitems; i++)
				set_fate(&cycle->events[batch->items[i]], FATE_DEFERRED, NULL, NULL);
			break;
		case TT_SPLIT:
			{
				int			half = batch->nitems / 2;

				*resend = list_concat(*resend, cut_batches(cycle, pixel, batch->items, half));
				*resend = list_concat(*resend, cut_batches(cycle, pixel, batch->items + half,
														   batch->nitems - half));
			}
			break;
	}
}

/* Settle one event; the strings are copied */
static void
set_fate(Claimed *ev, Fate fate, const char *error, const char *request_id)
{
	ev->fate = fate;
	ev->error = error ? pstrdup(error) : NULL;
	ev->request_id = request_id ? pstrdup(request_id) : NULL;
}

/*
 * A failed attempt: try again after a backoff, unless the attempts are
 * spent or the next try would come too late for TikTok's deduplication.
 */
static void
retry_or_fail(Claimed *ev, const char *reason, double random01)
{
	double		delay = tt_backoff_ms(ev->attempts, tt_retry_delay_ms,
									  tt_retry_delay_max_ms, random01);

	if (ev->attempts >= tt_max_attempts)
		set_fate(ev, FATE_FAILED,
				 psprintf("gave up after %d attempts (tiktok_capi.max_attempts); last: %s",
						  ev->attempts, reason), NULL);
	else if (ev->age_ms + delay > TT_RESEND_WINDOW_MS)
		set_fate(ev, FATE_FAILED,
				 psprintf("gave up 47 hours after the first attempt (TikTok deduplicates for 48); last: %s",
						  reason), NULL);
	else
	{
		set_fate(ev, FATE_RETRY, reason, NULL);
		ev->delay_ms = delay;
	}
}

/*
 * Write every claimed event's fate, then the pixels' health.  Events with
 * the same fate, reason, request_id and delay (as a request's events
 * mostly are) are written by one UPDATE of "id = ANY (ids)", a statement
 * whose only possible plan walks the primary key: joined with unnest()
 * instead, the planner once put the outbox on the outer side and rescanned
 * the array for each of its rows.  Only rows still pending are touched (a
 * row a person changed meanwhile keeps that change), tested as "neither
 * sent nor failed": "status = 'pending'" would let the planner walk the
 * whole due index instead, which it did, at 6,000 events/s.  The first
 * attempt's time is the claim's.
 */
static void
record(Cycle *cycle)
{
	bool	   *done = palloc0(sizeof(bool) * cycle->nevents);
	Datum	   *ids = palloc(sizeof(Datum) * cycle->nevents);

	for (int first = 0; first < cycle->nevents; first++)
	{
		Claimed    *lead = &cycle->events[first];
		int			n = 0;

		if (done[first])
			continue;
		for (int i = first; i < cycle->nevents; i++)
		{
			if (!done[i] && same_record(lead, &cycle->events[i]))
			{
				done[i] = true;
				ids[n++] = Int64GetDatum(cycle->events[i].id);
			}
		}
		record_group(cycle, lead, ids, n);
	}
	record_pixels(cycle);
}

/* Whether two events' records are written the same way */
static bool
same_record(const Claimed *a, const Claimed *b)
{
	return a->fate == b->fate && a->delay_ms == b->delay_ms &&
		(a->error == b->error ||
		 (a->error && b->error && strcmp(a->error, b->error) == 0)) &&
		(a->request_id == b->request_id ||
		 (a->request_id && b->request_id && strcmp(a->request_id, b->request_id) == 0));
}

/* One UPDATE for the n events in ids, whose record is lead's */
static void
record_group(Cycle *cycle, const Claimed *lead, Datum *ids, int n)
{
	static const char *status_of[] = {"sent", "pending", "failed", "pending"};
	Oid			argtypes[7] = {INT8ARRAYOID, TEXTOID, INT4OID, TIMESTAMPTZOID,
	FLOAT8OID, TEXTOID, TEXTOID};
	Datum		values[7];
	char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};
	SPIPlanPtr	plan = tt_prepare_once(&record_plan,
									   "UPDATE tiktok_capi.outbox"
									   "   SET status = $2,"
									   "       attempts = attempts + $3,"
									   "       first_attempt_at = CASE WHEN $3 = 1"
									   "            THEN coalesce(first_attempt_at, $4) ELSE first_attempt_at END,"
									   "       next_attempt_at = CASE WHEN $2 = 'pending'"
									   "            THEN now() + $5 * interval '1 millisecond' ELSE next_attempt_at END,"
									   "       last_error = $6,"
									   "       request_id = coalesce($7, request_id),"
									   "       sent_at = CASE WHEN $2 = 'sent' THEN now() END"
									   " WHERE id = ANY ($1) AND status <> 'sent' AND status <> 'failed'",
									   7, argtypes, CURSOR_OPT_GENERIC_PLAN);

	values[0] = tt_array_datum(ids, n, INT8OID);
	values[1] = CStringGetTextDatum(status_of[lead->fate]);
	/* a deferred event's attempt does not count: its pixel was at fault */
	values[2] = Int32GetDatum(lead->fate == FATE_DEFERRED ? 0 : 1);
	values[3] = TimestampTzGetDatum(cycle->claimed_at);
	/* a deferred event waits for its pixel: an hour, or until it is fixed */
	values[4] = Float8GetDatum(lead->fate == FATE_DEFERRED ? TT_PAUSE_MS : lead->delay_ms);
	values[5] = lead->error ? CStringGetTextDatum(lead->error) : (Datum) 0;
	nulls[5] = lead->error ? ' ' : 'n';
	values[6] = lead->request_id ? CStringGetTextDatum(lead->request_id) : (Datum) 0;
	nulls[6] = lead->request_id ? ' ' : 'n';
	if (SPI_execute_plan(plan, values, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "tiktok_capi: could not record delivery results");
}

/*
 * Per-pixel health: last success, last error; and for a pixel whose token
 * or permission TikTok refused, a pause, with its other pending events
 * moved past the pause so that the claim does not keep finding them.
 */
static void
record_pixels(Cycle *cycle)
{
	Oid			argtypes[4] = {TEXTOID, BOOLOID, TEXTOID, FLOAT8OID};
	SPIPlanPtr	health = tt_prepare_once(&pixel_health_plan,
										 "UPDATE tiktok_capi.pixels"
										 "   SET last_success_at = CASE WHEN $2 THEN now() ELSE last_success_at END,"
										 "       last_error = coalesce($3, last_error),"
										 "       last_error_at = CASE WHEN $3 IS NULL THEN last_error_at ELSE now() END,"
										 "       paused_until = CASE WHEN $4 > 0"
										 "            THEN now() + $4 * interval '1 millisecond' ELSE paused_until END"
										 " WHERE pixel_code = $1",
										 4, argtypes, CURSOR_OPT_GENERIC_PLAN);
	SPIPlanPtr	pause = tt_prepare_once(&pause_plan,
										"UPDATE tiktok_capi.outbox"
										"   SET next_attempt_at = now() + $2 * interval '1 millisecond'"
										" WHERE pixel_code = $1 AND status = 'pending'"
										"   AND next_attempt_at < now() + $2 * interval '1 millisecond'",
										2, (Oid[]) {TEXTOID, FLOAT8OID}, CURSOR_OPT_GENERIC_PLAN);

	for (int p = 0; p < cycle->npixels; p++)
	{
		Pixel	   *pixel = &cycle->pixels[p];
		Datum		values[4];
		char		nulls[4] = {' ', ' ', ' ', ' '};

		if (!pixel->succeeded && pixel->error == NULL)
			continue;
		values[0] = CStringGetTextDatum(pixel->code);
		values[1] = BoolGetDatum(pixel->succeeded);
		values[2] = pixel->error ? CStringGetTextDatum(pixel->error) : (Datum) 0;
		nulls[2] = pixel->error ? ' ' : 'n';
		values[3] = Float8GetDatum(pixel->pause_now ? TT_PAUSE_MS : 0);
		if (SPI_execute_plan(health, values, nulls, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "tiktok_capi: could not record pixel health");
		if (pixel->pause_now)
		{
			values[1] = Float8GetDatum(TT_PAUSE_MS);
			if (SPI_execute_plan(pause, values, NULL, false, 0) != SPI_OK_UPDATE)
				elog(ERROR, "tiktok_capi: could not pause a pixel's events");
			ereport(LOG,
					(errmsg("tiktok_capi: pixel %s paused for an hour: %s", pixel->code, pixel->error),
					 errhint("Fix the pixel's access token or permissions with tiktok_capi.tt_update_pixel(); its events are kept and resume at once.")));
		}
	}
}

/* Delete one slice of sent events older than the retention; how many */
static int
delete_old_sent(void)
{
	Oid			argtypes[2] = {FLOAT8OID, INT4OID};
	Datum		values[2];
	SPIPlanPtr	plan = tt_prepare_once(&retention_plan,
									   "DELETE FROM tiktok_capi.outbox WHERE id IN ("
									   " SELECT id FROM tiktok_capi.outbox"
									   "  WHERE status = 'sent' AND sent_at < now() - $1 * interval '1 second'"
									   "  ORDER BY sent_at LIMIT $2)",
									   2, argtypes, CURSOR_OPT_GENERIC_PLAN);

	values[0] = Float8GetDatum((double) tt_retention_s);
	values[1] = Int32GetDatum(TT_RETENTION_ROWS);
	if (SPI_execute_plan(plan, values, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "tiktok_capi: could not delete old sent events");
	return (int) SPI_processed;
}

/* Milliseconds until the next pending event is due; 0 if now */
static double
ms_until_due(void)
{
	SPIPlanPtr	plan = tt_prepare_once(&due_plan,
									   "SELECT extract(epoch FROM min(next_attempt_at) - now())::float8 * 1000"
									   "  FROM tiktok_capi.outbox WHERE status = 'pending'",
									   0, NULL, CURSOR_OPT_GENERIC_PLAN);
	bool		isnull;
	double		ms;

	if (SPI_execute_plan(plan, NULL, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "tiktok_capi: could not look for due events");
	ms = DatumGetFloat8(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (isnull)
		return tt_poll_interval_ms;
	return Max(ms + 1, 0);
}
