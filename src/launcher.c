/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  Starting and supervising the delivery worker: the launcher's
 *	  registration and its loop.  The worker's settings are in settings.c,
 *	  the shared memory that lets a committing backend wake it in wake.c.
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
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "tiktok_capi.h"

PGDLLEXPORT void tt_launcher_main(Datum arg);

static bool database_exists(const char *name);
static BackgroundWorkerHandle *start_worker(void);

/*
 * When preloaded, register the launcher.  Loaded later (on first use of a
 * function), the library starts no worker.
 */
void
tt_launcher_init(void)
{
	BackgroundWorker launcher;

	if (!process_shared_preload_libraries_in_progress)
		return;
	/* pg_upgrade runs the cluster to copy the schema: nothing is sent then */
	if (IsBinaryUpgrade)
		return;
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
