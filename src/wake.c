/*-------------------------------------------------------------------------
 *
 * wake.c
 *	  Waking the delivery worker when a transaction that queued events
 *	  commits: the latch the worker publishes in shared memory, and the
 *	  transaction callback that sets it at commit.  The same shared memory
 *	  carries the worker's URL pause (see worker.h) to tt_health(), through
 *	  tt_worker_pause(), and the launcher's word that a database got no
 *	  worker for want of a background worker slot, through
 *	  tt_worker_shortage().
 *
 * Vocabulary:
 *	- wake-up: setting the worker's latch, so it claims at once instead of
 *	  at the end of its poll_interval.  Only a commit wakes it: an event
 *	  whose transaction aborts never existed.
 *	- database slot: what a database's worker shares with the backends of
 *	  that database (each listed database has its own worker, see
 *	  launcher.c).  A backend finds its database's slot by MyDatabaseId, so
 *	  a commit wakes the worker of its own database, and tt_health() sees
 *	  the pause of its own.  A slot is taken by a worker when it starts, or
 *	  by the launcher for a database it could not start a worker for, and
 *	  is free again once neither holds it.
 *
 * The outbox asks for a wake-up whenever it writes an event; this file
 * remembers the request until the transaction ends.  Loaded later than
 * shared_preload_libraries, the library has no shared memory and no
 * worker, and wake-ups are skipped.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

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
PG_FUNCTION_INFO_V1(tt_worker_shortage_sql);

/* Longest api_url and reason kept for tt_worker_pause(); longer are cut */
#define TT_PAUSE_TEXT 1024

/* What the backends of one database share with its worker */
typedef struct TTDatabaseSlot
{
	Oid			database;		/* InvalidOid: the slot is free */
	Latch	   *worker_latch;	/* NULL while its worker does not run */
	pid_t		worker_pid;		/* its worker's, 0 while none */
	/* the URL pause; paused_url[0] == '\0' while delivery is not paused */
	char		paused_url[TT_PAUSE_TEXT];
	char		pause_reason[TT_PAUSE_TEXT];
	TimestampTz paused_since;
	TimestampTz pause_retry_at;
	/* the launcher found no background worker slot for its worker */
	bool		shortage;
	int			shortage_listed;	/* databases listed then */
	int			shortage_started;	/* of them, with a worker */
} TTDatabaseSlot;

/* The shared memory: one slot per delivered database, under one mutex */
typedef struct TTSharedState
{
	slock_t		mutex;
	TTDatabaseSlot databases[TT_MAX_DATABASES];
} TTSharedState;

static TTSharedState *shared = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static bool wake_pending = false;

static void shmem_request(void);
static void shmem_startup(void);
static TTDatabaseSlot *database_slot(Oid database, bool take);
static void free_unheld_slot(TTDatabaseSlot *slot);
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
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * The slot of a database, or NULL when it has none; with take, a free slot
 * is given to it (NULL when all are taken).  The caller holds the mutex.
 */
static TTDatabaseSlot *
database_slot(Oid database, bool take)
{
	TTDatabaseSlot *free_slot = NULL;

	for (int i = 0; i < TT_MAX_DATABASES; i++)
	{
		TTDatabaseSlot *slot = &shared->databases[i];

		if (slot->database == database)
			return slot;
		if (free_slot == NULL && slot->database == InvalidOid)
			free_slot = slot;
	}
	if (!take || free_slot == NULL)
		return NULL;
	memset(free_slot, 0, sizeof(TTDatabaseSlot));
	free_slot->database = database;
	return free_slot;
}

/* A slot neither a worker nor the launcher holds is free again */
static void
free_unheld_slot(TTDatabaseSlot *slot)
{
	if (slot->worker_latch == NULL && !slot->shortage)
		slot->database = InvalidOid;
}

/*
 * Wake this database's worker now (a no-op when none runs, or not
 * preloaded); the workers of other databases sleep on
 */
void
tt_wake_worker(void)
{
	TTDatabaseSlot *slot;
	Latch	   *latch = NULL;

	if (shared == NULL)
		return;
	SpinLockAcquire(&shared->mutex);
	slot = database_slot(MyDatabaseId, false);
	if (slot)
		latch = slot->worker_latch;
	SpinLockRelease(&shared->mutex);
	if (latch)
		SetLatch(latch);
}

/*
 * Called by the worker: make its latch the one its database's commits set.
 * False when another worker of this database already runs (one started by
 * a launcher that has since restarted, and not yet stopped): two workers
 * would each own the same events, so this one must not deliver.  With
 * every slot taken (more workers than databases may be listed, for a
 * moment after a reload), it runs on without wake-ups: it still looks at
 * the outbox every poll_interval.
 */
bool
tt_publish_worker_latch(void)
{
	TTDatabaseSlot *slot;
	bool		alone = true;

	if (shared == NULL)
		elog(ERROR, "tiktok_capi must be in shared_preload_libraries");
	SpinLockAcquire(&shared->mutex);
	slot = database_slot(MyDatabaseId, true);
	if (slot && slot->worker_latch != NULL)
		alone = false;
	else if (slot)
	{
		slot->worker_latch = MyLatch;
		slot->worker_pid = MyProcPid;
		slot->shortage = false;
	}
	SpinLockRelease(&shared->mutex);
	if (!alone)
		return false;
	if (slot == NULL)
		ereport(WARNING,
				(errmsg("tiktok_capi: no shared memory slot is free for this database's worker; commits will not wake it"),
				 errdetail("At most %d databases can be delivered at once.", TT_MAX_DATABASES)));
	before_shmem_exit(forget_worker_latch, (Datum) 0);
	return true;
}

/* A worker that exits takes its latch and its URL pause with it */
static void
forget_worker_latch(int code, Datum arg)
{
	TTDatabaseSlot *slot;

	SpinLockAcquire(&shared->mutex);
	slot = database_slot(MyDatabaseId, false);
	if (slot && slot->worker_latch == MyLatch)
	{
		slot->worker_latch = NULL;
		slot->worker_pid = 0;
		slot->paused_url[0] = '\0';
		free_unheld_slot(slot);
	}
	SpinLockRelease(&shared->mutex);
}

/*
 * Called by the launcher: whether a listed database got no worker because
 * no background worker slot was free, with how many databases are listed
 * and how many of them have a worker, for tt_health() to say
 */
void
tt_publish_worker_shortage(Oid database, bool shortage, int listed, int started)
{
	TTDatabaseSlot *slot;

	if (shared == NULL)
		return;
	SpinLockAcquire(&shared->mutex);
	slot = database_slot(database, shortage);
	if (slot)
	{
		slot->shortage = shortage;
		slot->shortage_listed = listed;
		slot->shortage_started = started;
		free_unheld_slot(slot);
	}
	SpinLockRelease(&shared->mutex);
}

/*
 * Called by a launcher that starts: what an earlier launcher said about
 * missing workers no longer holds, and the workers it started (a launcher
 * that exits leaves its workers running) are asked to stop, since this
 * launcher can neither watch nor stop them; it starts its own.
 */
void
tt_forget_earlier_launcher(void)
{
	pid_t		orphans[TT_MAX_DATABASES];
	int			norphans = 0;

	if (shared == NULL)
		return;
	SpinLockAcquire(&shared->mutex);
	for (int i = 0; i < TT_MAX_DATABASES; i++)
	{
		TTDatabaseSlot *slot = &shared->databases[i];

		if (slot->database == InvalidOid)
			continue;
		if (slot->worker_pid != 0)
			orphans[norphans++] = slot->worker_pid;
		slot->shortage = false;
		free_unheld_slot(slot);
	}
	SpinLockRelease(&shared->mutex);
	for (int i = 0; i < norphans; i++)
	{
		ereport(LOG,
				(errmsg("tiktok_capi: stopping the delivery worker with PID %d, started by an earlier launcher",
						(int) orphans[i])));
		(void) kill(orphans[i], SIGTERM);
	}
}

/*
 * Called by the worker: show its URL pause to tt_health(), or with url
 * NULL, that delivery is not paused
 */
void
tt_publish_url_pause(const char *url, const char *reason,
					 TimestampTz since, TimestampTz retry_at)
{
	TTDatabaseSlot *slot;

	if (shared == NULL)
		return;
	SpinLockAcquire(&shared->mutex);
	slot = database_slot(MyDatabaseId, false);
	if (slot)
	{
		strlcpy(slot->paused_url, url ? url : "", TT_PAUSE_TEXT);
		strlcpy(slot->pause_reason, reason ? reason : "", TT_PAUSE_TEXT);
		slot->paused_since = since;
		slot->pause_retry_at = retry_at;
	}
	SpinLockRelease(&shared->mutex);
}

/*
 * tt_worker_pause(): one row while the delivery of this database's worker
 * is paused because api_url does not answer as the Events API: the URL,
 * why, since when, and when it is tried again; no row otherwise
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
		TTDatabaseSlot *slot;

		SpinLockAcquire(&shared->mutex);
		slot = database_slot(MyDatabaseId, false);
		if (slot)
		{
			memcpy(url, slot->paused_url, TT_PAUSE_TEXT);
			memcpy(reason, slot->pause_reason, TT_PAUSE_TEXT);
			since = slot->paused_since;
			retry_at = slot->pause_retry_at;
		}
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

/*
 * tt_worker_shortage(): why this database has no worker when the launcher
 * found no background worker slot free for it; NULL otherwise
 */
Datum
tt_worker_shortage_sql(PG_FUNCTION_ARGS)
{
	bool		shortage = false;
	int			listed = 0;
	int			started = 0;

	if (shared != NULL)
	{
		TTDatabaseSlot *slot;

		SpinLockAcquire(&shared->mutex);
		slot = database_slot(MyDatabaseId, false);
		if (slot && slot->shortage)
		{
			shortage = true;
			listed = slot->shortage_listed;
			started = slot->shortage_started;
		}
		SpinLockRelease(&shared->mutex);
	}
	if (!shortage)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(psprintf("no background worker slot was free for this database's worker "
											  "(max_worker_processes = %d; %d of the %d databases in "
											  "tiktok_capi.database have a worker)",
											  max_worker_processes, started, listed)));
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
