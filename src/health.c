/*-------------------------------------------------------------------------
 *
 * health.c
 *	  The thresholds of tt_health(): when the lag, the failure rate and the
 *	  outbox size turn a check from ok to warn and to critical.
 *
 * tt_health() itself is SQL (see the install scripts); it asks for the
 * thresholds through tt_health_thresholds(), which also makes sure this
 * library, and so these settings, are loaded in the calling session.
 * They are USERSET: a monitoring query may pass its own.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/guc.h"

#include "tiktok_capi.h"

PG_FUNCTION_INFO_V1(tt_health_thresholds);

static int	lag_warn_s = 300;
static int	lag_critical_s = 3600;
static double failure_warn_pct = 1.0;
static double failure_critical_pct = 10.0;
static int	outbox_warn_kb = 2 * 1024 * 1024;
static int	outbox_critical_kb = 8 * 1024 * 1024;

/* Register this stage's settings */
void
tt_health_init(void)
{
	DefineCustomIntVariable("tiktok_capi.health_lag_warn",
							"Age of the oldest pending event at which tt_health() warns.",
							NULL, &lag_warn_s, 300, 1, INT_MAX,
							PGC_USERSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("tiktok_capi.health_lag_critical",
							"Age of the oldest pending event at which tt_health() is critical.",
							NULL, &lag_critical_s, 3600, 1, INT_MAX,
							PGC_USERSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomRealVariable("tiktok_capi.health_failure_warn",
							 "Percent of the last hour's settled events that failed at which tt_health() warns.",
							 NULL, &failure_warn_pct, 1.0, 0.0, 100.0,
							 PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomRealVariable("tiktok_capi.health_failure_critical",
							 "Percent of the last hour's settled events that failed at which tt_health() is critical.",
							 NULL, &failure_critical_pct, 10.0, 0.0, 100.0,
							 PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("tiktok_capi.health_outbox_warn",
							"Outbox size (table, indexes and TOAST) at which tt_health() warns.",
							NULL, &outbox_warn_kb, 2 * 1024 * 1024, 1, INT_MAX,
							PGC_USERSET, GUC_UNIT_KB, NULL, NULL, NULL);
	DefineCustomIntVariable("tiktok_capi.health_outbox_critical",
							"Outbox size (table, indexes and TOAST) at which tt_health() is critical.",
							NULL, &outbox_critical_kb, 8 * 1024 * 1024, 1, INT_MAX,
							PGC_USERSET, GUC_UNIT_KB, NULL, NULL, NULL);
}

/*
 * The six thresholds as one row: lags in seconds, failure rates in
 * percent, sizes in bytes, so the SQL compares like with like.
 */
Datum
tt_health_thresholds(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[6];
	bool		nulls[6] = {0};

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "tt_health_thresholds must return a row");
	values[0] = Int32GetDatum(lag_warn_s);
	values[1] = Int32GetDatum(lag_critical_s);
	values[2] = Float8GetDatum(failure_warn_pct);
	values[3] = Float8GetDatum(failure_critical_pct);
	values[4] = Int64GetDatum((int64) outbox_warn_kb * 1024);
	values[5] = Int64GetDatum((int64) outbox_critical_kb * 1024);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}
