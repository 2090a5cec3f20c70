/*-------------------------------------------------------------------------
 *
 * wake.c
 *	  Waking the delivery worker when a transaction that queued events
 *	  commits: the latch the worker publishes in shared memory, and the
 *	  transaction callback that sets it at commit.  The same shared memory
 *	  carries the worker's URL pause (see worker.h) to tt_health(), through
 *	  tt_worker_pause().
 *
 * Vocabulary:
 *	- wake-up: setting the worker's latch, so it claims at once instead of
 *	  at the end of its poll_interval.  Only a commit wakes it: an event
 *	  whose transaction aborts never existed.
 *
 * The outbox asks for a wake-up whenever it writes an event; this file
 * remembers the request until the transaction ends.  Loaded later than
 * shared_preload_libraries, the library has no shared memory and no
 * worker, and wake-ups are skipped.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "tiktok_capi.h"

PG_FUNCTION_INFO_V1(tt_wake_worker_sql);
PG_FUNCTION_INFO_V1(tt_worker_pause_sql);

/* Longest api_url and reason kept for tt_worker_pause(); longer are cut */
#define TT_PAUSE_TEXT 1024

/* What backends share with the worker */
typedef struct TTSharedState
{
	slock_t		mutex;
	Latch	   *worker_latch;	/* NULL while no worker runs */
	/* the URL pause; paused_url[0] == '\0' while delivery is not paused */
	char		paused_url[TT_PAUSE_TEXT];
	char		pause_reason[TT_PAUSE_TEXT];
	TimestampTz paused_since;
	TimestampTz pause_retry_at;
} TTSharedState;

static TTSharedState *shared = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static bool wake_pending = false;

static void shmem_request(void);
static void shmem_startup(void);
static void forget_worker_latch(int code, Datum arg);
static void wake_xact_callback(XactEvent event, void *arg);

/*
 * Register the wake-at-commit callback, and when preloaded, the shared
 * memory that holds the worker's latch.
 */
void
tt_wake_init(void)
{
	RegisterXactCallback(wake_xact_callback, NULL);
	if (!process_shared_preload_libraries_in_progress)
		return;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = shmem_startup;
}

static void
shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(TTSharedState)));
}

static void
shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("tiktok_capi", sizeof(TTSharedState), &found);
	if (!found)
	{
		memset(shared, 0, sizeof(TTSharedState));
		SpinLockInit(&shared->mutex);
		shared->worker_latch = NULL;
	}
	LWLockRelease(AddinShmemInitLock);
}

/* Wake the worker now (a no-op when none runs, or not preloaded) */
void
tt_wake_worker(void)
{
	Latch	   *latch;

	if (shared == NULL)
		return;
	SpinLockAcquire(&shared->mutex);
	latch = shared->worker_latch;
	SpinLockRelease(&shared->mutex);
	if (latch)
		SetLatch(latch);
}

/* Called by the worker: make its latch the one commits set */
void
tt_publish_worker_latch(void)
{
	if (shared == NULL)
		elog(ERROR, "tiktok_capi must be in shared_preload_libraries");
	SpinLockAcquire(&shared->mutex);
	shared->worker_latch = MyLatch;
	SpinLockRelease(&shared->mutex);
	before_shmem_exit(forget_worker_latch, (Datum) 0);
}

/* A worker that exits takes its latch and its URL pause with it */
static void
forget_worker_latch(int code, Datum arg)
{
	SpinLockAcquire(&shared->mutex);
	if (shared->worker_latch == MyLatch)
	{
		shared->worker_latch = NULL;
		shared->paused_url[0] = '\0';
	}
	SpinLockRelease(&shared->mutex);
}

/*
 * Called by the worker: show its URL pause to tt_health(), or with url
 * NULL, that delivery is not paused
 */
void
tt_publish_url_pause(const char *url, const char *reason,
					 TimestampTz since, TimestampTz retry_at)
{
	if (shared == NULL)
		return;
	SpinLockAcquire(&shared->mutex);
	strlcpy(shared->paused_url, url ? url : "", TT_PAUSE_TEXT);
	strlcpy(shared->pause_reason, reason ? reason : "", TT_PAUSE_TEXT);
	shared->paused_since = since;
	shared->pause_retry_at = retry_at;
	SpinLockRelease(&shared->mutex);
}

/*
 * tt_worker_pause(): one row while the worker's delivery is paused because
 * api_url does not answer as the Events API: the URL, why, since when,
 * and when it is tried again; no row otherwise
 */
Datum
tt_worker_pause_sql(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char		url[TT_PAUSE_TEXT];
	char		reason[TT_PAUSE_TEXT];
	TimestampTz since = 0;
	TimestampTz retry_at = 0;

	InitMaterializedSRF(fcinfo, 0);
	url[0] = '\0';
	if (shared != NULL)
	{
		SpinLockAcquire(&shared->mutex);
		memcpy(url, shared->paused_url, TT_PAUSE_TEXT);
		memcpy(reason, shared->pause_reason, TT_PAUSE_TEXT);
		since = shared->paused_since;
		retry_at = shared->pause_retry_at;
		SpinLockRelease(&shared->mutex);
	}
	if (url[0] != '\0')
	{
		Datum		values[4];
		bool		nulls[4] = {false, false, false, false};

		values[0] = CStringGetTextDatum(url);
		values[1] = CStringGetTextDatum(reason);
		values[2] = TimestampTzGetDatum(since);
		values[3] = TimestampTzGetDatum(retry_at);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* At commit of a transaction that queued events, wake the worker */
static void
wake_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (wake_pending)
				tt_wake_worker();
			wake_pending = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			wake_pending = false;
			break;
		default:
			break;
	}
}

/* Ask for the delivery worker to be woken when this transaction commits */
void
tt_wake_worker_at_commit(void)
{
	wake_pending = true;
}

/*
 * tt_wake_worker(): wake the worker when this transaction commits (for SQL
 * that changes what is due without queueing, such as fixing a pixel)
 */
Datum
tt_wake_worker_sql(PG_FUNCTION_ARGS)
{
	tt_wake_worker_at_commit();
	PG_RETURN_VOID();
}
