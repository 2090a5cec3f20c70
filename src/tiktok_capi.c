/*-------------------------------------------------------------------------
 *
 * tiktok_capi.c
 *	  Entry point of the tiktok_capi extension: _PG_init, which asks each
 *	  stage to register its settings.  Nothing else lives here.
 *
 * The library works both from shared_preload_libraries (where the
 * launcher of the delivery worker is registered) and loaded on first use
 * of one of its SQL functions (then nothing is delivered).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/guc.h"

#include "tiktok_capi.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/* Register every stage's settings, once per process */
void
_PG_init(void)
{
	tt_hashing_init();
	tt_capture_init();
	tt_launcher_init();
	tt_health_init();
	MarkGUCPrefixReserved("tiktok_capi");
}
