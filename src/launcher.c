/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  Starting and supervising the delivery workers, one per database that
 *	  tiktok_capi.database lists: the launcher's registration and its loop.
 *	  The workers' settings are in settings.c, the shared memory that lets
 *	  a committing backend wake its database's worker in wake.c.
 *
 * Vocabulary:
 *	- the launcher: a background worker registered at server start (only
 *	  from shared_preload_libraries), connected to no database.  For each
 *	  listed database it starts a worker once the database exists, starts
 *	  it again when it stops, and stops it when delivery is disabled or the
 *	  database leaves the list.
 *	- a worker: the one process connected to a listed database that
 *	  delivers its outbox (worker.c).  It is named for its database in the
 *	  server log; pg_stat_activity shows it as backend_type "tiktok_capi
 *	  worker" with its datname.
 *	- a shortage: a listed database whose worker could not be registered
 *	  because every background worker slot (max_worker_processes) is in
 *	  use.  The launcher says so once for each change of the set of
 *	  databases in want, with the numbers, and marks those databases for
 *	  tt_health(); it tries again at each look.
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
#include "lib/stringinfo.h"
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


/* A database the launcher delivers, or has just stopped delivering */
typedef struct ListedDatabase
{
	char		name[NAMEDATALEN];
	bool		listed;			/* in tiktok_capi.database now */
	BackgroundWorkerHandle *handle; /* NULL while no worker is started */
	TimestampTz started_at;
	TimestampTz next_start;		/* no start before this */
	int			quick_exits;	/* its worker stopped soon after its start */
	bool		stopping;		/* we asked its worker to stop */
	bool		said_missing;	/* we said it does not exist */
	Oid			shortage_oid;	/* no worker slot was free; else InvalidOid */
} ListedDatabase;

PGDLLEXPORT void tt_launcher_main(Datum arg);

static List *follow_database_list(List *databases);
static void watch_worker(ListedDatabase *db, TimestampTz now);
static Oid *database_oids(List *databases);
static void end_shortage(ListedDatabase *db);
static bool start_due(const ListedDatabase *db, TimestampTz now);
static void start_due_workers(List *databases, TimestampTz now);
static BackgroundWorkerHandle *start_worker(const char *name);
static void report_shortage(List *databases);

/* tiktok_capi.database as the launcher last followed it */
static char *followed_list = NULL;
/* the databases named in the last shortage said; NULL or "" when none */
static char *said_shortage = NULL;

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
 * Follow tiktok_capi.database after a reload: a database new to the list
 * is added, one no longer in it is marked so that its worker stops.  The
 * list of ListedDatabase lives in TopMemoryContext.
 */
static List *
follow_database_list(List *databases)
{
	MemoryContext old;
	List	   *names;
	ListCell   *lc;

	if (followed_list && strcmp(followed_list, tt_database) == 0)
		return databases;
	old = MemoryContextSwitchTo(TopMemoryContext);
	if (followed_list)
		pfree(followed_list);
	followed_list = pstrdup(tt_database);
	names = tt_database_list();
	foreach(lc, databases)
		((ListedDatabase *) lfirst(lc))->listed = false;
	foreach(lc, names)
	{
		char	   *name = lfirst(lc);
		ListedDatabase *db = NULL;
		ListCell   *known;

		foreach(known, databases)
		{
			if (strcmp(((ListedDatabase *) lfirst(known))->name, name) == 0)
				db = lfirst(known);
		}
		if (db == NULL)
		{
			db = palloc0(sizeof(ListedDatabase));
			strlcpy(db->name, name, NAMEDATALEN);
			databases = lappend(databases, db);
		}
		db->listed = true;
	}
	list_free(names);
	MemoryContextSwitchTo(old);
	return databases;
}

/*
 * Look at a database's worker: one that stopped soon after its start is
 * started again after a growing pause (1 s doubling to 64 s), so a worker
 * that keeps failing cannot flood the log; one whose database left the
 * list, or all of them when delivery is disabled, is asked to stop.
 */
static void
watch_worker(ListedDatabase *db, TimestampTz now)
{
	BgwHandleStatus status;
	pid_t		pid;

	if (db->handle == NULL)
		return;
	status = GetBackgroundWorkerPid(db->handle, &pid);
	if (status == BGWH_POSTMASTER_DIED)
		proc_exit(1);
	if (status == BGWH_STOPPED)
	{
		pfree(db->handle);
		db->handle = NULL;
		if (db->stopping || TimestampDifferenceExceeds(db->started_at, now, 60 * 1000))
			db->quick_exits = 0;
		else
			db->quick_exits = Min(db->quick_exits + 1, 6);
		db->next_start = TimestampTzPlusMilliseconds(now, 1000 << db->quick_exits);
		db->stopping = false;
	}
	else if ((!tt_enabled || !db->listed) && !db->stopping)
	{
		TerminateBackgroundWorker(db->handle);
		db->stopping = true;
	}
}

/*
 * The oid of each database in the list (InvalidOid: none of that name), in
 * an array in the caller's memory.  The launcher is connected to no
 * database, so it can use no index: a plain scan of pg_database, as the
 * autovacuum launcher does.
 */
static Oid *
database_oids(List *databases)
{
	Oid		   *oids = palloc0(sizeof(Oid) * Max(list_length(databases), 1));
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tuple;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tuple = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database row = (Form_pg_database) GETSTRUCT(tuple);
		ListCell   *lc;

		foreach(lc, databases)
		{
			ListedDatabase *db = lfirst(lc);

			if (strcmp(NameStr(row->datname), db->name) == 0)
				oids[foreach_current_index(lc)] = row->oid;
		}
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	return oids;
}

/*
 * A database is no longer short of a worker (it has one, wants none, or
 * does not exist): tt_health() stops saying so
 */
static void
end_shortage(ListedDatabase *db)
{
	if (OidIsValid(db->shortage_oid))
		tt_publish_worker_shortage(db->shortage_oid, false, 0, 0);
	db->shortage_oid = InvalidOid;
}

/*
 * Whether a database's worker is to be started now: it is wanted, has
 * none, and its pause is over
 */
static bool
start_due(const ListedDatabase *db, TimestampTz now)
{
	return db->listed && tt_enabled && db->handle == NULL && now >= db->next_start;
}

/*
 * Start the worker of each listed database that has none and whose pause
 * is over.  A database that does not exist is said once and looked for
 * again later; one for which no background worker slot is free is a
 * shortage, tried again later too.
 */
static void
start_due_workers(List *databases, TimestampTz now)
{
	TimestampTz later = TimestampTzPlusMilliseconds(now, Min(tt_poll_interval_ms, 10000));
	bool		any_due = false;
	Oid		   *oids;
	ListCell   *lc;

	foreach(lc, databases)
	{
		ListedDatabase *db = lfirst(lc);

		if (!db->listed || !tt_enabled)
		{
			/* no worker is wanted, so none is missing */
			end_shortage(db);
		}
		else if (start_due(db, now))
			any_due = true;
	}
	if (!any_due)
		return;

	oids = database_oids(databases);
	foreach(lc, databases)
	{
		ListedDatabase *db = lfirst(lc);
		Oid			oid = oids[foreach_current_index(lc)];

		if (!start_due(db, now))
			continue;
		if (!OidIsValid(oid))
		{
			if (!db->said_missing)
				ereport(LOG,
						(errmsg("tiktok_capi: database \"%s\" does not exist; the delivery worker will start when it does",
								db->name),
						 errhint("List in tiktok_capi.database the databases where CREATE EXTENSION tiktok_capi was run.")));
			db->said_missing = true;
			db->next_start = later;
			end_shortage(db);
			continue;
		}
		db->said_missing = false;
		db->handle = start_worker(db->name);
		if (db->handle == NULL)
		{
			db->shortage_oid = oid;
			db->next_start = later;
			continue;
		}
		db->started_at = now;
		db->stopping = false;
		end_shortage(db);
	}
	pfree(oids);
}

/*
 * Start a database's worker as a dynamic background worker reporting to
 * us; NULL when no background worker slot is free
 */
static BackgroundWorkerHandle *
start_worker(const char *name)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "tiktok_capi");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "tt_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "tiktok_capi worker for %s", name);
	snprintf(worker.bgw_type, BGW_MAXLEN, "tiktok_capi worker");
	/* the worker connects to the database named here */
	strlcpy(worker.bgw_extra, name, BGW_EXTRALEN);
	worker.bgw_notify_pid = MyProcPid;
	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
		return NULL;
	return handle;
}

/*
 * Tell tt_health() which databases have no worker for want of a slot, and
 * say it in the log once for each change of that set: which databases,
 * and the numbers to raise max_worker_processes by.
 */
static void
report_shortage(List *databases)
{
	StringInfoData names;
	int			listed = 0;
	int			started = 0;
	int			missing = 0;
	ListCell   *lc;

	initStringInfo(&names);
	foreach(lc, databases)
	{
		ListedDatabase *db = lfirst(lc);

		if (!db->listed)
			continue;
		listed++;
		if (db->handle != NULL)
			started++;
		if (OidIsValid(db->shortage_oid))
		{
			appendStringInfo(&names, "%s\"%s\"", missing > 0 ? ", " : "", db->name);
			missing++;
		}
	}
	foreach(lc, databases)
	{
		ListedDatabase *db = lfirst(lc);

		if (db->listed && OidIsValid(db->shortage_oid))
			tt_publish_worker_shortage(db->shortage_oid, true, listed, started);
	}
	if (strcmp(names.data, said_shortage ? said_shortage : "") != 0)
	{
		if (missing > 0)
			ereport(WARNING,
					(errmsg("tiktok_capi: no background worker slot is free for the delivery worker of %d of the %d databases in tiktok_capi.database: %s",
							missing, listed, names.data),
					 errdetail("max_worker_processes is %d; tiktok_capi's launcher and %d delivery workers take slots, and so may other extensions' workers and parallel queries.",
							   max_worker_processes, started),
					 errhint("Raise max_worker_processes by at least %d (a server restart), or list fewer databases.  The launcher tries again meanwhile.",
							 missing)));
		else
			ereport(LOG,
					(errmsg("tiktok_capi: every database in tiktok_capi.database that exists has its delivery worker again")));
		if (said_shortage)
			pfree(said_shortage);
		said_shortage = MemoryContextStrdup(TopMemoryContext, names.data);
	}
	pfree(names.data);
}

/*
 * The launcher's loop: keep exactly one worker running for each listed
 * database that exists, while delivery is enabled.  A database out of the
 * list is forgotten once its worker has stopped.
 */
void
tt_launcher_main(Datum arg)
{
	List	   *databases = NIL;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_activity(STATE_IDLE, NULL);
	/* a launcher before us (it exited, we are its restart) left its workers */
	tt_forget_earlier_launcher();

	for (;;)
	{
		TimestampTz now = GetCurrentTimestamp();
		ListCell   *lc;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		MemoryContextSwitchTo(TopMemoryContext);
		databases = follow_database_list(databases);
		foreach(lc, databases)
			watch_worker(lfirst(lc), now);
		start_due_workers(databases, now);
		report_shortage(databases);
		foreach(lc, databases)
		{
			ListedDatabase *db = lfirst(lc);

			if (!db->listed && db->handle == NULL)
			{
				databases = foreach_delete_current(databases, lc);
				pfree(db);
			}
		}

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 1000L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
