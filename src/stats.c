/*-------------------------------------------------------------------------
 *
 * stats.c
 *	  Delivery counters over time: what the worker's requests did, per
 *	  database and pixel, kept in shared memory since the last reset, and
 *	  the SQL functions behind the view tiktok_capi.delivery_stats and
 *	  tt_stats_reset().
 *
 * Vocabulary:
 *	- counters: cumulative numbers (requests, events sent, failed and
 *	  retried, throttled requests, answers by TikTok code and HTTP status,
 *	  bytes, request time and its latency buckets), as PostgreSQL's own
 *	  cumulative statistics views keep them: they only grow until a reset.
 *	- entry: the counters of one (database, pixel code); each database also
 *	  has a total entry (pixel code ""), counted with every request, which
 *	  holds the database's stats_reset.
 *	- other: when no entry is left for a new pixel, its requests count in
 *	  its database's total only; the view shows the difference between the
 *	  total and the pixels' entries as the row "(other)".
 *
 * The worker counts once per request, when its answer is judged, under one
 * exclusive LWLock: a request carries up to batch_size events, so the lock
 * is taken at most a few hundred times a second.  Readers take it shared
 * and copy their database's entries.
 *
 * The counters live in shared memory: a worker that exits and is started
 * again (SIGTERM, an error, a reload that changes its database) keeps
 * counting into the same entries.  A clean shutdown writes them to
 * TT_STATS_FILE and the next start reads them back, as pg_stat_statements
 * does, so a server restart keeps them.  A crash restart (kill -9 of any
 * server process, the worker included, makes the postmaster reinitialise
 * shared memory) starts them from zero, with stats_reset at that time, as
 * PostgreSQL's own statistics do after a crash: the file is removed once
 * read, so a crash never brings back older counters.  Loaded later than
 * shared_preload_libraries there are no counters, and the view is empty.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "tiktok_capi.h"

PG_FUNCTION_INFO_V1(tt_delivery_stats_sql);
PG_FUNCTION_INFO_V1(tt_stats_reset_sql);

/*
 * Entries for every database's pixels and totals.  A new pixel takes an
 * entry only while TT_STATS_TOTALS_RESERVE are left, kept for the totals of
 * databases that have not counted yet.
 */
#define TT_STATS_ENTRIES 512
#define TT_STATS_TOTALS_RESERVE 32

/* Distinct TikTok codes (and HTTP statuses) kept per entry; more: "other" */
#define TT_STATS_CODES 16
#define TT_STATS_OTHER_CODE PG_INT32_MIN

/* Upper bounds of the latency buckets, in ms; one more bucket for the rest */
static const int latency_bounds_ms[] = {50, 100, 200, 500, 1000, 2000, 5000};

#define TT_LATENCY_BUCKETS (lengthof(latency_bounds_ms) + 1)

/* pixel_code is at most 64 characters (the pixels table's check) */
#define TT_STATS_PIXEL_LEN 64

/*
 * Where a clean shutdown keeps the counters until the next start; the file
 * begins with TT_STATS_FILE_MAGIC and the size of an entry, so that a
 * build whose entries differ ignores it.
 */
#define TT_STATS_FILE PGSTAT_STAT_PERMANENT_DIRECTORY "/tiktok_capi_stats.stat"
#define TT_STATS_FILE_MAGIC 0x74740001

/* The name of the row of pixels that found no entry */
#define TT_STATS_OTHER_ROW "(other)"

typedef struct StatsKey
{
	Oid			dbid;
	char		pixel_code[TT_STATS_PIXEL_LEN + 1];	/* "": the total */
} StatsKey;

/* One code (or status) and how many answers carried it; count 0: free */
typedef struct CodeCount
{
	int32		code;
	int64		count;
} CodeCount;

typedef struct StatsCounts
{
	int64		requests;
	int64		events_sent;
	int64		events_failed;
	int64		events_retried;
	int64		throttled;
	int64		transport_errors;
	int64		bytes_sent;
	double		time_sum_ms;
	int64		latency[TT_LATENCY_BUCKETS];	/* per bucket, not cumulative */
	CodeCount	by_code[TT_STATS_CODES];
	CodeCount	by_http_status[TT_STATS_CODES];
	TimestampTz last_request_at;	/* 0: none */
	TimestampTz last_success_at;
} StatsCounts;

typedef struct StatsEntry
{
	StatsKey	key;
	StatsCounts counts;
	TimestampTz stats_reset;	/* the total's: since when it counts */
} StatsEntry;

/* What the shared memory holds besides the entries */
typedef struct StatsShared
{
	LWLock	   *lock;
	int			nentries;
	TimestampTz started_at;		/* shared memory's (re)initialisation */
} StatsShared;

static StatsShared *stats_shared = NULL;
static HTAB *stats_hash = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void stats_shmem_request(void);
static void stats_shmem_startup(void);
static void read_stats_file(void);
static void write_stats_file(int code, Datum arg);
static void make_key(StatsKey *key, Oid dbid, const char *pixel_code);
static StatsEntry *entry_for(Oid dbid, const char *pixel_code, bool is_total);
static void add_code(CodeCount *codes, int32 code, int64 n);
static void add_counts(StatsCounts *into, const StatsCounts *from, int sign);
static void add_outcome(StatsCounts *c, const TTRequestOutcome *o);
static Datum codes_jsonb(const CodeCount *codes);
static Datum latency_jsonb(const StatsCounts *c);
static void put_row(ReturnSetInfo *rsinfo, const char *pixel_code,
					const StatsCounts *c, TimestampTz stats_reset);
static int	by_pixel_code(const void *a, const void *b);

/* When preloaded, ask for the shared memory of the counters */
void
tt_stats_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		return;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = stats_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = stats_shmem_startup;
}

/* The counters' room in shared memory, and their lock */
static void
stats_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(add_size(MAXALIGN(sizeof(StatsShared)),
									hash_estimate_size(TT_STATS_ENTRIES, sizeof(StatsEntry))));
	RequestNamedLWLockTranche("tiktok_capi stats", 1);
}

/*
 * At server start (the counters of the last clean shutdown) and after a
 * crash (from zero)
 */
static void
stats_shmem_startup(void)
{
	bool		found;
	HASHCTL		info;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	stats_shared = ShmemInitStruct("tiktok_capi stats", sizeof(StatsShared), &found);
	if (!found)
	{
		stats_shared->lock = &(GetNamedLWLockTranche("tiktok_capi stats"))->lock;
		stats_shared->nentries = 0;
		stats_shared->started_at = GetCurrentTimestamp();
	}
	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(StatsKey);
	info.entrysize = sizeof(StatsEntry);
	stats_hash = ShmemInitHash("tiktok_capi stats entries", TT_STATS_ENTRIES, TT_STATS_ENTRIES,
							   &info, HASH_ELEM | HASH_BLOBS);
	LWLockRelease(AddinShmemInitLock);

	/* the postmaster writes the counters at a clean shutdown */
	if (!IsUnderPostmaster)
		on_shmem_exit(write_stats_file, (Datum) 0);
	if (!found)
		read_stats_file();
}

/*
 * At start, before any other process runs: the counters a clean shutdown
 * wrote, if any; the file goes once read.
 */
static void
read_stats_file(void)
{
	FILE	   *file;
	uint32		magic;
	uint32		entry_size;
	TimestampTz started_at;
	int32		n;

	file = AllocateFile(TT_STATS_FILE, PG_BINARY_R);
	if (file == NULL)
	{
		if (errno != ENOENT)
			ereport(LOG,
					(errcode_for_file_access(),
					 errmsg("could not read file \"%s\": %m", TT_STATS_FILE)));
		return;
	}
	if (fread(&magic, sizeof(magic), 1, file) != 1 ||
		fread(&entry_size, sizeof(entry_size), 1, file) != 1 ||
		fread(&started_at, sizeof(started_at), 1, file) != 1 ||
		fread(&n, sizeof(n), 1, file) != 1 ||
		magic != TT_STATS_FILE_MAGIC || entry_size != sizeof(StatsEntry))
	{
		ereport(LOG,
				(errmsg("tiktok_capi: ignoring the delivery counters in \"%s\": not written by this version",
						TT_STATS_FILE)));
		n = 0;
	}
	else
		stats_shared->started_at = started_at;
	for (int i = 0; i < n && stats_shared->nentries < TT_STATS_ENTRIES; i++)
	{
		StatsEntry	saved;
		StatsEntry *entry;

		if (fread(&saved, sizeof(saved), 1, file) != 1)
		{
			ereport(LOG,
					(errmsg("tiktok_capi: the delivery counters in \"%s\" are cut short", TT_STATS_FILE)));
			break;
		}
		entry = hash_search(stats_hash, &saved.key, HASH_ENTER, NULL);
		*entry = saved;
		stats_shared->nentries++;
	}
	FreeFile(file);
	unlink(TT_STATS_FILE);
}

/*
 * In the postmaster as it exits: at a clean shutdown (code 0), keep the
 * counters for the next start.  Written to a temporary file and renamed,
 * so a failure leaves no half file.
 */
static void
write_stats_file(int code, Datum arg)
{
	FILE	   *file;
	uint32		magic = TT_STATS_FILE_MAGIC;
	uint32		entry_size = sizeof(StatsEntry);
	int32		n;
	HASH_SEQ_STATUS seq;
	StatsEntry *entry;

	if (code != 0 || stats_shared == NULL || stats_hash == NULL)
		return;
	file = AllocateFile(TT_STATS_FILE ".tmp", PG_BINARY_W);
	if (file == NULL)
		goto error;
	n = hash_get_num_entries(stats_hash);
	if (fwrite(&magic, sizeof(magic), 1, file) != 1 ||
		fwrite(&entry_size, sizeof(entry_size), 1, file) != 1 ||
		fwrite(&stats_shared->started_at, sizeof(TimestampTz), 1, file) != 1 ||
		fwrite(&n, sizeof(n), 1, file) != 1)
		goto error;
	hash_seq_init(&seq, stats_hash);
	while ((entry = hash_seq_search(&seq)) != NULL)
	{
		if (fwrite(entry, sizeof(StatsEntry), 1, file) != 1)
		{
			hash_seq_term(&seq);
			goto error;
		}
	}
	if (FreeFile(file) != 0)
	{
		file = NULL;
		goto error;
	}
	(void) durable_rename(TT_STATS_FILE ".tmp", TT_STATS_FILE, LOG);
	return;

error:
	ereport(LOG,
			(errcode_for_file_access(),
			 errmsg("could not write file \"%s\": %m", TT_STATS_FILE ".tmp")));
	if (file)
		FreeFile(file);
	unlink(TT_STATS_FILE ".tmp");
}

/* A key with no stray bytes (the hash compares them all) */
static void
make_key(StatsKey *key, Oid dbid, const char *pixel_code)
{
	memset(key, 0, sizeof(StatsKey));
	key->dbid = dbid;
	strlcpy(key->pixel_code, pixel_code, sizeof(key->pixel_code));
}

/*
 * The entry of (dbid, pixel_code), made when first needed; NULL when none
 * is left for it.  Called with the lock held exclusively.
 */
static StatsEntry *
entry_for(Oid dbid, const char *pixel_code, bool is_total)
{
	StatsKey	key;
	StatsEntry *entry;
	bool		found;

	make_key(&key, dbid, pixel_code);
	entry = hash_search(stats_hash, &key, HASH_FIND, NULL);
	if (entry != NULL)
		return entry;
	if (stats_shared->nentries >= TT_STATS_ENTRIES -
		(is_total ? 0 : TT_STATS_TOTALS_RESERVE))
		return NULL;
	entry = hash_search(stats_hash, &key, HASH_ENTER_NULL, &found);
	if (entry == NULL)
		return NULL;
	stats_shared->nentries++;
	memset(&entry->counts, 0, sizeof(StatsCounts));
	entry->stats_reset = stats_shared->started_at;
	return entry;
}

/* Count n answers with code; past TT_STATS_CODES codes, under "other" */
static void
add_code(CodeCount *codes, int32 code, int64 n)
{
	int			i;

	for (i = 0; i < TT_STATS_CODES; i++)
		if (codes[i].count != 0 && codes[i].code == code)
		{
			codes[i].count += n;
			return;
		}
	/* the last place is for "other" */
	for (i = 0; i < TT_STATS_CODES - 1 && codes[i].count != 0; i++)
		;
	codes[i].code = i < TT_STATS_CODES - 1 ? code : TT_STATS_OTHER_CODE;
	codes[i].count += n;
}

/* into += from (sign 1) or into -= from (sign -1), the times aside */
static void
add_counts(StatsCounts *into, const StatsCounts *from, int sign)
{
	into->requests += sign * from->requests;
	into->events_sent += sign * from->events_sent;
	into->events_failed += sign * from->events_failed;
	into->events_retried += sign * from->events_retried;
	into->throttled += sign * from->throttled;
	into->transport_errors += sign * from->transport_errors;
	into->bytes_sent += sign * from->bytes_sent;
	into->time_sum_ms += sign * from->time_sum_ms;
	for (int i = 0; i < TT_LATENCY_BUCKETS; i++)
		into->latency[i] += sign * from->latency[i];
	for (int i = 0; i < TT_STATS_CODES; i++)
	{
		if (from->by_code[i].count != 0)
			add_code(into->by_code, from->by_code[i].code, sign * from->by_code[i].count);
		if (from->by_http_status[i].count != 0)
			add_code(into->by_http_status, from->by_http_status[i].code,
					 sign * from->by_http_status[i].count);
	}
}

/* One request's outcome (or, with is_request false, events settled alone) */
static void
add_outcome(StatsCounts *c, const TTRequestOutcome *o)
{
	int			bucket = 0;

	c->events_sent += o->events_sent;
	c->events_failed += o->events_failed;
	c->events_retried += o->events_retried;
	if (!o->is_request)
		return;
	c->requests++;
	c->throttled += o->throttled ? 1 : 0;
	c->bytes_sent += o->bytes_sent;
	c->time_sum_ms += o->elapsed_ms;
	while (bucket < lengthof(latency_bounds_ms) && o->elapsed_ms > latency_bounds_ms[bucket])
		bucket++;
	c->latency[bucket]++;
	if (o->transport_error)
		c->transport_errors++;
	else
		add_code(c->by_http_status, (int32) o->http_status, 1);
	if (o->has_code)
		add_code(c->by_code, (int32) Min(Max(o->code, PG_INT32_MIN + 1), PG_INT32_MAX), 1);
	c->last_request_at = o->at;
	if (o->succeeded)
		c->last_success_at = o->at;
}

/*
 * Called by the worker once per answered request (and for events settled
 * without one): count it for its pixel and its database's total.
 */
void
tt_stats_count(const char *pixel_code, const TTRequestOutcome *outcome)
{
	StatsEntry *total;
	StatsEntry *pixel;

	if (stats_shared == NULL)
		return;
	LWLockAcquire(stats_shared->lock, LW_EXCLUSIVE);
	total = entry_for(MyDatabaseId, "", true);
	if (total != NULL)
	{
		add_outcome(&total->counts, outcome);
		pixel = pixel_code[0] ? entry_for(MyDatabaseId, pixel_code, false) : NULL;
		if (pixel != NULL)
			add_outcome(&pixel->counts, outcome);
	}
	LWLockRelease(stats_shared->lock);
}

/* {"0": 12, "40100": 3, "other": 1}: a code map as jsonb */
static Datum
codes_jsonb(const CodeCount *codes)
{
	StringInfoData buf;
	bool		first = true;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	for (int i = 0; i < TT_STATS_CODES; i++)
	{
		if (codes[i].count == 0)
			continue;
		if (!first)
			appendStringInfoString(&buf, ", ");
		first = false;
		if (codes[i].code == TT_STATS_OTHER_CODE)
			appendStringInfoString(&buf, "\"other\"");
		else
			appendStringInfo(&buf, "\"%d\"", codes[i].code);
		appendStringInfo(&buf, ": " INT64_FORMAT, codes[i].count);
	}
	appendStringInfoChar(&buf, '}');
	return DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data));
}

/*
 * The latency buckets, cumulative as Prometheus has them: each bound in
 * ms, then "+Inf", with the requests that took at most that long
 */
static Datum
latency_jsonb(const StatsCounts *c)
{
	StringInfoData buf;
	int64		below = 0;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	for (int b = 0; b < TT_LATENCY_BUCKETS; b++)
	{
		below += c->latency[b];
		if (b < lengthof(latency_bounds_ms))
			appendStringInfo(&buf, "\"%d\": " INT64_FORMAT ", ", latency_bounds_ms[b], below);
		else
			appendStringInfo(&buf, "\"+Inf\": " INT64_FORMAT, below);
	}
	appendStringInfoChar(&buf, '}');
	return DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data));
}

/* One row of tt_delivery_stats(); pixel_code NULL: the total */
static void
put_row(ReturnSetInfo *rsinfo, const char *pixel_code, const StatsCounts *c,
		TimestampTz stats_reset)
{
	Datum		values[16];
	bool		nulls[16];
	int			i = 0;

	memset(nulls, 0, sizeof(nulls));
	nulls[i] = pixel_code == NULL;
	values[i++] = pixel_code ? CStringGetTextDatum(pixel_code) : (Datum) 0;
	values[i++] = Int64GetDatum(c->requests);
	values[i++] = Int64GetDatum(c->events_sent);
	values[i++] = Int64GetDatum(c->events_failed);
	values[i++] = Int64GetDatum(c->events_retried);
	values[i++] = Int64GetDatum(c->throttled);
	values[i++] = Int64GetDatum(c->transport_errors);
	values[i++] = codes_jsonb(c->by_code);
	values[i++] = codes_jsonb(c->by_http_status);
	values[i++] = Int64GetDatum(c->bytes_sent);
	values[i++] = Int64GetDatum(c->requests);	/* every request is timed */
	values[i++] = Float8GetDatum(c->time_sum_ms);
	values[i++] = latency_jsonb(c);
	nulls[i] = c->last_request_at == 0;
	values[i++] = TimestampTzGetDatum(c->last_request_at);
	nulls[i] = c->last_success_at == 0;
	values[i++] = TimestampTzGetDatum(c->last_success_at);
	values[i++] = TimestampTzGetDatum(stats_reset);
	Assert(i == lengthof(values));
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

/* qsort order of entries: by pixel code */
static int
by_pixel_code(const void *a, const void *b)
{
	return strcmp(((const StatsEntry *) a)->key.pixel_code,
				  ((const StatsEntry *) b)->key.pixel_code);
}

/*
 * tt_delivery_stats(): this database's counters, one row per pixel (in
 * the order of their codes), the row "(other)" for pixels that found no
 * entry, and the total (pixel_code NULL) last, always there, zero before
 * the first request
 */
Datum
tt_delivery_stats_sql(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	StatsEntry *mine;
	int			nmine = 0;
	StatsCounts total;
	StatsCounts other;
	TimestampTz stats_reset;
	HASH_SEQ_STATUS seq;
	StatsEntry *entry;
	bool		has_total = false;

	InitMaterializedSRF(fcinfo, 0);
	if (stats_shared == NULL)
		return (Datum) 0;

	mine = palloc(sizeof(StatsEntry) * TT_STATS_ENTRIES);
	memset(&total, 0, sizeof(total));
	LWLockAcquire(stats_shared->lock, LW_SHARED);
	stats_reset = stats_shared->started_at;
	hash_seq_init(&seq, stats_hash);
	while ((entry = hash_seq_search(&seq)) != NULL)
	{
		if (entry->key.dbid != MyDatabaseId)
			continue;
		if (entry->key.pixel_code[0] == '\0')
		{
			total = entry->counts;
			stats_reset = entry->stats_reset;
			has_total = true;
		}
		else
			mine[nmine++] = *entry;
	}
	LWLockRelease(stats_shared->lock);

	other = total;
	qsort(mine, nmine, sizeof(StatsEntry), by_pixel_code);
	for (int i = 0; i < nmine; i++)
	{
		put_row(rsinfo, mine[i].key.pixel_code, &mine[i].counts, stats_reset);
		add_counts(&other, &mine[i].counts, -1);
	}
	if (has_total && (other.requests != 0 || other.events_sent != 0 ||
					  other.events_failed != 0 || other.events_retried != 0))
	{
		/* the last times of pixels without an entry are not known apart */
		other.last_request_at = 0;
		other.last_success_at = 0;
		put_row(rsinfo, TT_STATS_OTHER_ROW, &other, stats_reset);
	}
	put_row(rsinfo, NULL, &total, stats_reset);
	return (Datum) 0;
}

/*
 * tt_stats_reset(): this database's counters back to zero, stats_reset to
 * now; other databases' stay, but those of dropped databases go, to free
 * their room (nothing else learns of a DROP DATABASE)
 */
Datum
tt_stats_reset_sql(PG_FUNCTION_ARGS)
{
	HASH_SEQ_STATUS seq;
	StatsEntry *entry;
	StatsEntry *total;
	Oid		   *dropped = palloc(sizeof(Oid) * TT_STATS_ENTRIES);
	int			ndropped = 0;

	if (stats_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("tiktok_capi keeps no delivery statistics"),
				 errdetail("The statistics live in shared memory, which only a library in shared_preload_libraries has."),
				 errhint("Add tiktok_capi to shared_preload_libraries and restart the server.")));

	/* the dropped databases, looked up in the catalog without the lock */
	LWLockAcquire(stats_shared->lock, LW_SHARED);
	hash_seq_init(&seq, stats_hash);
	while ((entry = hash_seq_search(&seq)) != NULL)
		if (entry->key.pixel_code[0] == '\0' && entry->key.dbid != MyDatabaseId)
			dropped[ndropped++] = entry->key.dbid;
	LWLockRelease(stats_shared->lock);
	for (int i = 0; i < ndropped; i++)
		if (SearchSysCacheExists1(DATABASEOID, ObjectIdGetDatum(dropped[i])))
			dropped[i--] = dropped[--ndropped];

	LWLockAcquire(stats_shared->lock, LW_EXCLUSIVE);
	hash_seq_init(&seq, stats_hash);
	while ((entry = hash_seq_search(&seq)) != NULL)
	{
		bool		gone = entry->key.dbid == MyDatabaseId && entry->key.pixel_code[0] != '\0';

		for (int i = 0; i < ndropped && !gone; i++)
			gone = entry->key.dbid == dropped[i];
		if (!gone)
			continue;
		hash_search(stats_hash, &entry->key, HASH_REMOVE, NULL);
		stats_shared->nentries--;
	}
	total = entry_for(MyDatabaseId, "", true);
	if (total != NULL)
	{
		memset(&total->counts, 0, sizeof(StatsCounts));
		total->stats_reset = GetCurrentTimestamp();
	}
	LWLockRelease(stats_shared->lock);
	PG_RETURN_VOID();
}
