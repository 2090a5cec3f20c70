/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  Starting and supervising the delivery worker: its settings, the
 *	  shared memory that lets a committing backend wake it, and the
 *	  launcher process.
 *
 * Vocabulary:
 *	- the launcher: a background worker registered at server start (only
 *	  from shared_preload_libraries), connected to no database.  It starts
 *	  the worker once tiktok_capi.database exists, starts it again when it
 *	  stops, and stops it when delivery is disabled or the database
 *	  setting changes.
 *	- the worker: the one process, connected to tiktok_capi.database, that
 *	  delivers the outbox (worker.c).
 *
 * Why a launcher: a worker that cannot connect (the database was dropped,
 * or is not created yet) would otherwise fail and be restarted forever;
 * the launcher instead says once that it waits, and checks again later.
 * Both start only when recovery has finished, so a standby sends nothing.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "policy.h"
#include "tiktok_capi.h"

#define TT_DEFAULT_API_URL "https://business-api.tiktok.com/open_api/v1.3/event/track/"

/* Settings; see the README's table.  All but enabled steer the worker only. */
char	   *tt_database = NULL;
char	   *tt_api_url = NULL;
int			tt_batch_size = 1000;
int			tt_poll_interval_ms = 10000;
int			tt_http_timeout_ms = 30000;
int			tt_max_attempts = 100;
int			tt_retention_s = 7 * 24 * 3600;
bool		tt_enabled = true;
int			tt_retry_delay_ms = 1000;
int			tt_retry_delay_max_ms = 300000;

/* What backends share with the worker */
typedef struct TTSharedState
{
	slock_t		mutex;
	Latch	   *worker_latch;	/* NULL while no worker runs */
} TTSharedState;

static TTSharedState *shared = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

PGDLLEXPORT void tt_launcher_main(Datum arg);

static void define_settings(void);
static bool check_api_url(char **newval, void **extra, GucSource source);
static void shmem_request(void);
static void shmem_startup(void);
static void forget_worker_latch(int code, Datum arg);
static bool database_exists(const char *name);
static BackgroundWorkerHandle *start_worker(void);

/*
 * Register the settings, and when preloaded, the shared memory and the
 * launcher.  Loaded later (on first use of a function), the library has
 * no worker to wake and wake-ups are skipped.
 */
void
tt_launcher_init(void)
{
	BackgroundWorker launcher;

	define_settings();
	if (!process_shared_preload_libraries_in_progress)
		return;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = shmem_startup;

	memset(&launcher, 0, sizeof(launcher));
	launcher.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	launcher.bgw_start_time = BgWorkerStart_RecoveryFinished;
	launcher.bgw_restart_time = 1;
	snprintf(launcher.bgw_library_name, BGW_MAXLEN, "tiktok_capi");
	snprintf(launcher.bgw_function_name, BGW_MAXLEN, "tt_launcher_main");
	snprintf(launcher.bgw_name, BGW_MAXLEN, "tiktok_capi launcher");
	snprintf(launcher.bgw_type, BGW_MAXLEN, "tiktok_capi launcher");
	RegisterBackgroundWorker(&launcher);
}

/*
 * The worker's settings.  They are read by the worker, so they are set in
 * postgresql.conf or with ALTER SYSTEM (PGC_SIGHUP: superuser only) and
 * take effect on reload; a SET in a session could not reach the worker.
 */
static void
define_settings(void)
{
	DefineCustomStringVariable("tiktok_capi.database",
							   "Database whose outbox the worker delivers.",
							   NULL, &tt_database, "postgres",
							   PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("tiktok_capi.api_url",
							   "Events API track URL events are posted to.",
							   "https is required, except to a loopback host.",
							   &tt_api_url, TT_DEFAULT_API_URL,
							   PGC_SIGHUP, 0, check_api_url, NULL, NULL);
	DefineCustomIntVariable("tiktok_capi.batch_size",
							"Most events in one request.",
							"TikTok takes 1 to 1000.",
							&tt_batch_size, 1000, 1, 1000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("tiktok_capi.poll_interval",
							"Longest the worker sleeps between looks at the outbox.",
							"Commits wake it at once; this is the fallback.",
							&tt_poll_interval_ms, 10000, 10, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("tiktok_capi.http_timeout",
							"Longest wait for one Events API request.",
							NULL, &tt_http_timeout_ms, 30000, 100, 600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("tiktok_capi.max_attempts",
							"Attempts after which an event that keeps meeting errors is failed.",
							"Events are also failed once their first attempt is 47 hours old.",
							&tt_max_attempts, 100, 1, 100000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("tiktok_capi.retention",
							"How long sent events are kept before the worker deletes them.",
							"-1 keeps them forever.",
							&tt_retention_s, 7 * 24 * 3600, -1, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomBoolVariable("tiktok_capi.enabled",
							 "Whether the worker delivers events.",
							 "Off stops the worker; events keep being queued.",
							 &tt_enabled, true,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("tiktok_capi.retry_delay",
							"First retry's longest wait; each retry doubles it.",
							NULL, &tt_retry_delay_ms, 1000, 1, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("tiktok_capi.retry_delay_max",
							"Cap on the wait between retries.",
							NULL, &tt_retry_delay_max_ms, 300000, 1, 24 * 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
}

/* Refuse an api_url that would send events in the clear to another host */
static bool
check_api_url(char **newval, void **extra, GucSource source)
{
	const char *why;

	if (tt_url_allowed(*newval, &why))
		return true;
	GUC_check_errdetail("%s", why);
	return false;
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

static void
forget_worker_latch(int code, Datum arg)
{
	SpinLockAcquire(&shared->mutex);
	if (shared->worker_latch == MyLatch)
		shared->worker_latch = NULL;
	SpinLockRelease(&shared->mutex);
}

/*
 * Whether a database of that name exists.  The launcher is connected to no
 * database, so it can use no index: a plain scan of pg_database, as the
 * autovacuum launcher does.
 */
static bool
database_exists(const char *name)
{
	bool		exists = false;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tuple;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while (!exists && (tuple = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tuple);

		exists = strcmp(NameStr(db->datname), name) == 0;
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	return exists;
}

/* Start the worker as a dynamic background worker reporting to us */
static BackgroundWorkerHandle *
start_worker(void)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "tiktok_capi");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "tt_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "tiktok_capi worker");
	snprintf(worker.bgw_type, BGW_MAXLEN, "tiktok_capi worker");
	worker.bgw_notify_pid = MyProcPid;
	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
	{
		ereport(WARNING,
				(errmsg("tiktok_capi: no free background worker slot for the delivery worker"),
				 errhint("Raise max_worker_processes.")));
		return NULL;
	}
	return handle;
}

/*
 * The launcher's loop: keep exactly one worker running while delivery is
 * enabled and the database exists.  A worker that stops soon after its
 * start is started again after a growing pause (1 s doubling to 60 s), so
 * a worker that keeps failing cannot flood the log.
 */
void
tt_launcher_main(Datum arg)
{
	BackgroundWorkerHandle *handle = NULL;
	char	   *worker_database = NULL;
	TimestampTz started_at = 0;
	TimestampTz next_start = 0;
	int			quick_exits = 0;
	bool		said_missing = false;
	bool		stopping = false;	/* we asked the worker to stop */

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_activity(STATE_IDLE, NULL);

	for (;;)
	{
		TimestampTz now = GetCurrentTimestamp();
		pid_t		pid;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		if (handle)
		{
			BgwHandleStatus status = GetBackgroundWorkerPid(handle, &pid);

			if (status == BGWH_POSTMASTER_DIED)
				proc_exit(1);
			if (status == BGWH_STOPPED)
			{
				pfree(handle);
				handle = NULL;
				if (stopping || TimestampDifferenceExceeds(started_at, now, 60 * 1000))
					quick_exits = 0;
				else
					quick_exits = Min(quick_exits + 1, 6);
				next_start = TimestampTzPlusMilliseconds(now, 1000 << quick_exits);
			}
			else if (!tt_enabled || strcmp(worker_database, tt_database) != 0)
			{
				TerminateBackgroundWorker(handle);
				stopping = true;
			}
		}

		if (handle == NULL && tt_enabled && now >= next_start)
		{
			if (database_exists(tt_database))
			{
				handle = start_worker();
				said_missing = false;
				stopping = false;
				started_at = now;
				if (worker_database)
					pfree(worker_database);
				worker_database = MemoryContextStrdup(TopMemoryContext, tt_database);
			}
			else if (!said_missing)
			{
				ereport(LOG,
						(errmsg("tiktok_capi: database \"%s\" does not exist; the delivery worker will start when it does",
								tt_database),
						 errhint("Set tiktok_capi.database to the database where CREATE EXTENSION tiktok_capi was run.")));
				said_missing = true;
			}
			if (handle == NULL)
				next_start = TimestampTzPlusMilliseconds(now, Min(tt_poll_interval_ms, 10000));
		}

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 1000L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
