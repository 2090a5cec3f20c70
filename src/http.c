/*-------------------------------------------------------------------------
 *
 * http.c
 *	  libcurl transport of the delivery worker: requests started one by
 *	  one and finished as their answers arrive, while the worker waits on
 *	  its latch and curl's sockets together.
 *
 * One multi handle lives as long as the worker: it keeps the connections
 * to the API open between requests (keep-alive), and a share handle keeps
 * TLS sessions, so a steady stream of requests pays for the TLS handshake
 * once.  Easy handles are pooled and reused, as many as requests are in
 * flight at most.
 *
 * The wait is a WaitEventSet of the worker's latch and the sockets curl
 * asks to watch (its socket callback), with curl's own timer as the
 * timeout: a commit's wake-up is seen while slow requests are in flight.
 *
 * What is never done: following a redirect, printing headers (verbose
 * stays off, so the Access-Token header is never logged), talking to a
 * proxy taken from the environment, skipping TLS verification (of the API
 * and of an https proxy), or using a protocol other than http(s), to the
 * API or to the proxy.  Every option set is checked: an option this
 * libcurl ignores would silently lose one of these.
 *
 * A proxy is always asked for a tunnel (CONNECT), for http as for https
 * URLs: it passes bytes on and never reads or rewrites a request.  A
 * failed handshake or proxy is a transport error like a refused
 * connection: curl's text for it is the call's transport_error, with any
 * URL password in it hidden.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "http.h"
#include "policy.h"

/* CURLOPT_PROTOCOLS_STR, which keeps requests to http(s), came in 7.85 */
#if LIBCURL_VERSION_NUM < 0x075500
#error "tiktok_capi needs libcurl 7.85 or later"
#endif

/* The version the User-Agent names, from the control file (Makefile) */
#ifndef TT_VERSION
#error "TT_VERSION must be defined"
#endif

/* Most sockets curl watches at once: one per connection, and spare */
#define TT_HTTP_MAX_SOCKETS 1024

typedef struct PooledHandle
{
	CURL	   *easy;
	struct curl_slist *headers;
	char		error[CURL_ERROR_SIZE];
	TTHttpCall *call;			/* the call it carries now, or NULL */
} PooledHandle;

/* A socket curl asked us to watch, and for what (CURL_POLL_*) */
typedef struct WatchedSocket
{
	curl_socket_t fd;
	int			what;
} WatchedSocket;

static CURLM *multi = NULL;
static CURLSH *share = NULL;
static PooledHandle *pool = NULL;
static int	pool_size = 0;
static int	running = 0;
static WatchedSocket watched[TT_HTTP_MAX_SOCKETS];
static int	nwatched = 0;
static long timer_ms = -1;		/* curl's timer: -1 none, else ms from set */
static TimestampTz timer_set_at = 0;
static TTHttpCall **finished = NULL;
static int	nfinished = 0;

static void http_setup(void);
static void set_route(CURL *e, const TTHttpRoute *route);
static int	watch_socket(CURL *easy, curl_socket_t fd, int what, void *userp,
						 void *socketp);
static int	set_timer(CURLM *m, long timeout_ms, void *userp);
static size_t collect_answer(char *data, size_t size, size_t nmemb, void *arg);
static PooledHandle *free_handle(void);
static void finish_call(PooledHandle *h, CURLcode result);
static void collect_finished(void);

#define check_easy(e, opt, val) \
	do { \
		CURLcode	rc_ = curl_easy_setopt((e), (opt), (val)); \
		if (rc_ != CURLE_OK) \
			elog(ERROR, "tiktok_capi: libcurl refused option %s: %s", #opt, \
				 curl_easy_strerror(rc_)); \
	} while (0)

#define check_multi(m, opt, val) \
	do { \
		CURLMcode	rc_ = curl_multi_setopt((m), (opt), (val)); \
		if (rc_ != CURLM_OK) \
			elog(ERROR, "tiktok_capi: libcurl refused option %s: %s", #opt, \
				 curl_multi_strerror(rc_)); \
	} while (0)

/* Create the multi and share handles, once */
static void
http_setup(void)
{
	if (multi)
		return;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		elog(ERROR, "tiktok_capi: could not initialise libcurl");
	share = curl_share_init();
	multi = curl_multi_init();
	if (multi == NULL || share == NULL)
		elog(ERROR, "tiktok_capi: could not initialise libcurl");
	if (curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) != CURLSHE_OK ||
		curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) != CURLSHE_OK)
		elog(ERROR, "tiktok_capi: libcurl refused to share TLS sessions");
	check_multi(multi, CURLMOPT_SOCKETFUNCTION, watch_socket);
	check_multi(multi, CURLMOPT_TIMERFUNCTION, set_timer);
}

/* curl's socket callback: which sockets the wait watches, and for what */
static int
watch_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	int			i;

	for (i = 0; i < nwatched && watched[i].fd != fd; i++)
		;
	if (what == CURL_POLL_REMOVE)
	{
		if (i < nwatched)
			watched[i] = watched[--nwatched];
		return 0;
	}
	if (i == nwatched)
	{
		if (nwatched == TT_HTTP_MAX_SOCKETS)
			return -1;			/* curl fails the transfer */
		watched[nwatched++].fd = fd;
	}
	watched[i].what = what;
	return 0;
}

/* curl's timer callback: when it wants to be called without socket news */
static int
set_timer(CURLM *m, long timeout_ms, void *userp)
{
	timer_ms = timeout_ms;
	timer_set_at = GetCurrentTimestamp();
	return 0;
}

/* libcurl write callback: keep at most TT_ANSWER_MAX bytes of the answer */
static size_t
collect_answer(char *data, size_t size, size_t nmemb, void *arg)
{
	StringInfo	answer = (StringInfo) arg;
	size_t		n = size * nmemb;
	size_t		room = TT_ANSWER_MAX - answer->len;

	appendBinaryStringInfo(answer, data, Min(n, room));
	return n;
}

/* An idle easy handle, the pool growing by one when all are busy */
static PooledHandle *
free_handle(void)
{
	for (int i = 0; i < pool_size; i++)
		if (pool[i].call == NULL)
			return &pool[i];
	/* the pool never moves while a handle is in flight: it only grows idle */
	if (running > 0)
		elog(ERROR, "tiktok_capi: no idle HTTP handle while %d are in flight", running);
	return NULL;
}

/*
 * Make room for n requests in flight, and say how many fit.  The pool
 * grows only while none is in flight (curl points to its handles while
 * they are busy); it never shrinks.
 */
int
tt_http_reserve(int n)
{
	http_setup();
	if (n <= pool_size || running > 0)
		return pool_size;
	pool = pool ? repalloc(pool, sizeof(PooledHandle) * n) :
		MemoryContextAlloc(TopMemoryContext, sizeof(PooledHandle) * n);
	finished = finished ? repalloc(finished, sizeof(TTHttpCall *) * n) :
		MemoryContextAlloc(TopMemoryContext, sizeof(TTHttpCall *) * n);
	for (int i = pool_size; i < n; i++)
	{
		memset(&pool[i], 0, sizeof(PooledHandle));
		pool[i].easy = curl_easy_init();
		if (pool[i].easy == NULL)
			elog(ERROR, "tiktok_capi: could not initialise libcurl");
	}
	/* the easy handles point at their pool entry: set it again after a move */
	for (int i = 0; i < n; i++)
		check_easy(pool[i].easy, CURLOPT_PRIVATE, &pool[i]);
	pool_size = n;
	check_multi(multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long) n);
	check_multi(multi, CURLMOPT_MAXCONNECTS, (long) n);
	return pool_size;
}

/* Requests in flight now */
int
tt_http_running(void)
{
	return running;
}

/*
 * Start POSTing call's body to url.  There must be room (tt_http_reserve
 * and tt_http_running tell).  Its outcome comes back from tt_http_wait.
 */
void
tt_http_start(TTHttpCall *call, const char *url, const TTHttpRoute *route,
			  int timeout_ms)
{
	PooledHandle *h = free_handle();
	CURL	   *e;
	char	   *token_header;

	if (h == NULL)
		elog(ERROR, "tiktok_capi: no room for another request in flight");
	e = h->easy;
	curl_easy_reset(e);
	token_header = psprintf("Access-Token: %s", call->access_token);
	h->headers = curl_slist_append(NULL, "Content-Type: application/json");
	h->headers = curl_slist_append(h->headers, token_header);
	/* no "Expect: 100-continue" round trip before large bodies */
	h->headers = curl_slist_append(h->headers, "Expect:");
	explicit_bzero(token_header, strlen(token_header));
	pfree(token_header);
	if (h->headers == NULL)
		elog(ERROR, "tiktok_capi: out of memory building request headers");

	h->error[0] = '\0';
	call->transport_error = NULL;
	call->http_status = 0;
	call->elapsed_ms = 0;
	call->bytes_sent = 0;
	initStringInfo(&call->answer);

	check_easy(e, CURLOPT_URL, url);
	check_easy(e, CURLOPT_PROTOCOLS_STR, "http,https");
	check_easy(e, CURLOPT_FOLLOWLOCATION, 0L);
	set_route(e, route);
	check_easy(e, CURLOPT_VERBOSE, 0L);
	check_easy(e, CURLOPT_NOSIGNAL, 1L);
	check_easy(e, CURLOPT_SSL_VERIFYPEER, 1L);
	check_easy(e, CURLOPT_SSL_VERIFYHOST, 2L);
	check_easy(e, CURLOPT_SHARE, share);
	check_easy(e, CURLOPT_TCP_KEEPALIVE, 1L);
	check_easy(e, CURLOPT_TIMEOUT_MS, (long) timeout_ms);
	check_easy(e, CURLOPT_CONNECTTIMEOUT_MS, (long) Min(timeout_ms, 10000));
	check_easy(e, CURLOPT_USERAGENT, "tiktok_capi/" TT_VERSION);
	check_easy(e, CURLOPT_HTTPHEADER, h->headers);
	check_easy(e, CURLOPT_POST, 1L);
	check_easy(e, CURLOPT_POSTFIELDS, call->body->data);
	check_easy(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) call->body->len);
	check_easy(e, CURLOPT_WRITEFUNCTION, collect_answer);
	check_easy(e, CURLOPT_WRITEDATA, &call->answer);
	check_easy(e, CURLOPT_ERRORBUFFER, h->error);
	check_easy(e, CURLOPT_PRIVATE, h);

	if (curl_multi_add_handle(multi, e) != CURLM_OK)
		elog(ERROR, "tiktok_capi: could not start an HTTP request");
	h->call = call;
	running++;
}

/*
 * The proxy and CAs of a request, after curl_easy_reset (which forgets
 * them).  Without a proxy, "" keeps curl from taking one from the
 * environment (http_proxy, HTTPS_PROXY, ALL_PROXY).
 */
static void
set_route(CURL *e, const TTHttpRoute *route)
{
	bool		proxied = route->proxy != NULL && route->proxy[0] != '\0';

	check_easy(e, CURLOPT_PROXY, proxied ? route->proxy : "");
	if (proxied)
	{
		check_easy(e, CURLOPT_PROXYTYPE,
				   strncmp(route->proxy, "https://", 8) == 0 ?
				   (long) CURLPROXY_HTTPS : (long) CURLPROXY_HTTP);
		check_easy(e, CURLOPT_HTTPPROXYTUNNEL, 1L);
		check_easy(e, CURLOPT_NOPROXY, route->no_proxy ? route->no_proxy : "");
		check_easy(e, CURLOPT_PROXY_SSL_VERIFYPEER, 1L);
		check_easy(e, CURLOPT_PROXY_SSL_VERIFYHOST, 2L);
	}
	if (route->ca_file != NULL && route->ca_file[0] != '\0')
	{
		check_easy(e, CURLOPT_CAINFO, route->ca_file);
		if (proxied)
			check_easy(e, CURLOPT_PROXY_CAINFO, route->ca_file);
	}
}

/* Record the outcome of h's call and free h for the next one */
static void
finish_call(PooledHandle *h, CURLcode result)
{
	TTHttpCall *call = h->call;
	curl_off_t	micros = 0;
	curl_off_t	uploaded = 0;

	curl_multi_remove_handle(multi, h->easy);
	/* the token header is not needed any more: do not leave it in memory */
	for (struct curl_slist *s = h->headers; s; s = s->next)
		explicit_bzero(s->data, strlen(s->data));
	curl_slist_free_all(h->headers);
	h->headers = NULL;
	h->call = NULL;
	running--;

	/* for the delivery counters: the request's time and the bytes it sent */
	if (curl_easy_getinfo(h->easy, CURLINFO_TOTAL_TIME_T, &micros) == CURLE_OK)
		call->elapsed_ms = micros / 1000.0;
	if (curl_easy_getinfo(h->easy, CURLINFO_SIZE_UPLOAD_T, &uploaded) == CURLE_OK)
		call->bytes_sent = uploaded;

	/* in the call's own memory (its answer's), which its owner frees */
	if (result != CURLE_OK)
	{
		const char *why = h->error[0] ? h->error : curl_easy_strerror(result);
		char		shown[2 * CURL_ERROR_SIZE + 8];

		tt_hide_passwords(why, shown, sizeof(shown));
		call->transport_error = MemoryContextStrdup(GetMemoryChunkContext(call->answer.data),
													shown);
	}
	else
		curl_easy_getinfo(h->easy, CURLINFO_RESPONSE_CODE, &call->http_status);
	finished[nfinished++] = call;
}

/* Move the calls curl has finished to the finished list */
static void
collect_finished(void)
{
	CURLMsg    *msg;
	int			left;

	while ((msg = curl_multi_info_read(multi, &left)) != NULL)
	{
		PooledHandle *h;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &h);
		finish_call(h, msg->data.result);
	}
}

/*
 * Wait until a request finishes, the worker's latch is set (a commit, a
 * reload, a shutdown) or timeout_ms pass, whichever comes first; then
 * let curl do what its sockets and timer ask.  Returns the finished calls
 * (*done points to them until the next call) and says whether the latch
 * was set.  Without requests in flight it is a plain latch wait.
 */
int
tt_http_wait(long timeout_ms, TTHttpCall ***done, bool *woken)
{
	WaitEventSet *set;
	WaitEvent	events[64];
	int			nevents;
	int			still;
	long		wait_ms = timeout_ms;

	http_setup();
	*woken = false;
	nfinished = 0;
	/* a request may have ended as it started (a refused connection) */
	if (running > 0)
		collect_finished();
	if (nfinished > 0)
		wait_ms = 0;
	/* curl's timer bounds the wait; an expired one means act now */
	if (running > 0 && timer_ms >= 0)
	{
		long		left = timer_ms - (long) (TimestampDifferenceMilliseconds(timer_set_at,
																				GetCurrentTimestamp()));

		wait_ms = Max(0, Min(wait_ms, left));
	}
	set = CreateWaitEventSet(CurrentMemoryContext, nwatched + 2);
	AddWaitEventToSet(set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	for (int i = 0; i < nwatched; i++)
	{
		uint32		ev = 0;

		if (watched[i].what & CURL_POLL_IN)
			ev |= WL_SOCKET_READABLE;
		if (watched[i].what & CURL_POLL_OUT)
			ev |= WL_SOCKET_WRITEABLE;
		if (ev != 0)
			AddWaitEventToSet(set, ev, watched[i].fd, NULL, NULL);
	}
	nevents = WaitEventSetWait(set, wait_ms, events, lengthof(events), PG_WAIT_EXTENSION);
	/*
	 * A set latch returns at once, without looking at the sockets: with
	 * commits waking us hundreds of times a second, answers would wait for
	 * curl's timer.  So reset it and look at the sockets too, not waiting.
	 */
	if (nevents == 1 && (events[0].events & WL_LATCH_SET))
	{
		ResetLatch(MyLatch);
		*woken = true;
		nevents = WaitEventSetWait(set, 0, events, lengthof(events), PG_WAIT_EXTENSION);
	}
	FreeWaitEventSet(set);

	for (int i = 0; i < nevents; i++)
	{
		int			flags = 0;

		if (events[i].events & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			*woken = true;
			continue;
		}
		if (events[i].events & WL_SOCKET_READABLE)
			flags |= CURL_CSELECT_IN;
		if (events[i].events & WL_SOCKET_WRITEABLE)
			flags |= CURL_CSELECT_OUT;
		if (flags != 0 &&
			curl_multi_socket_action(multi, events[i].fd, flags, &still) != CURLM_OK)
			elog(ERROR, "tiktok_capi: libcurl failed");
	}
	/* curl's timer: timeouts, connection setup, retransmits */
	if (running > 0 && timer_ms >= 0 &&
		TimestampDifferenceExceeds(timer_set_at, GetCurrentTimestamp(), (int) timer_ms))
	{
		timer_ms = -1;
		if (curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &still) != CURLM_OK)
			elog(ERROR, "tiktok_capi: libcurl failed");
	}
	collect_finished();
	*done = finished;
	return nfinished;
}

/*
 * Let curl start the requests just added (it asks for a timer of 0 ms)
 * without waiting; what finishes comes back from the next tt_http_wait.
 */
void
tt_http_kick(void)
{
	int			still;

	if (running > 0 &&
		curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &still) != CURLM_OK)
		elog(ERROR, "tiktok_capi: libcurl failed");
}
