/*-------------------------------------------------------------------------
 *
 * http.c
 *	  libcurl transport of the delivery worker.
 *
 * One multi handle lives as long as the worker: it keeps the connections
 * to the API open between requests (keep-alive), and a share handle keeps
 * TLS sessions, so a steady stream of batches pays for the TLS handshake
 * once.  A small pool of easy handles is reused call after call.
 *
 * What is never done: following a redirect, printing headers (verbose
 * stays off, so the Access-Token header is never logged), talking to a
 * proxy taken from the environment, skipping TLS verification, or using a
 * protocol other than http(s).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>

#include "miscadmin.h"

#include "http.h"

/* Requests in flight at once; more calls wait for a free handle */
#define TT_HTTP_PARALLEL 8

typedef struct PooledHandle
{
	CURL	   *easy;
	struct curl_slist *headers;
	char		error[CURL_ERROR_SIZE];
	TTHttpCall *call;			/* the call it carries now, or NULL */
} PooledHandle;

static CURLM *multi = NULL;
static CURLSH *share = NULL;
static PooledHandle pool[TT_HTTP_PARALLEL];

static void http_setup(void);
static size_t collect_answer(char *data, size_t size, size_t nmemb, void *arg);
static void start_call(PooledHandle *h, TTHttpCall *call, const char *url,
					   int timeout_ms);
static void finish_call(PooledHandle *h, CURLcode result);

/* Create the multi and share handles and the easy handle pool, once */
static void
http_setup(void)
{
	if (multi)
		return;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		elog(ERROR, "tiktok_capi: could not initialise libcurl");
	share = curl_share_init();
	curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
	curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	multi = curl_multi_init();
	if (multi == NULL || share == NULL)
		elog(ERROR, "tiktok_capi: could not initialise libcurl");
	curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long) TT_HTTP_PARALLEL);
	for (int i = 0; i < TT_HTTP_PARALLEL; i++)
	{
		pool[i].easy = curl_easy_init();
		if (pool[i].easy == NULL)
			elog(ERROR, "tiktok_capi: could not initialise libcurl");
	}
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

/* Set h up for call and hand it to the multi handle */
static void
start_call(PooledHandle *h, TTHttpCall *call, const char *url, int timeout_ms)
{
	CURL	   *e = h->easy;
	char	   *token_header;

	curl_easy_reset(e);
	curl_slist_free_all(h->headers);
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
	h->call = call;
	call->transport_error = NULL;
	call->http_status = 0;
	initStringInfo(&call->answer);

	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_PROXY, "");
	curl_easy_setopt(e, CURLOPT_VERBOSE, 0L);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(e, CURLOPT_SHARE, share);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long) timeout_ms);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long) Min(timeout_ms, 10000));
	curl_easy_setopt(e, CURLOPT_USERAGENT, "tiktok_capi/0.1.0");
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, h->headers);
	curl_easy_setopt(e, CURLOPT_POST, 1L);
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, call->body->data);
	curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) call->body->len);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, collect_answer);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, &call->answer);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, h->error);
	curl_easy_setopt(e, CURLOPT_PRIVATE, h);

	if (curl_multi_add_handle(multi, e) != CURLM_OK)
		elog(ERROR, "tiktok_capi: could not start an HTTP request");
}

/* Record the outcome of h's call and free h for the next one */
static void
finish_call(PooledHandle *h, CURLcode result)
{
	TTHttpCall *call = h->call;

	curl_multi_remove_handle(multi, h->easy);
	/* the token header is not needed any more: do not leave it in memory */
	for (struct curl_slist *s = h->headers; s; s = s->next)
		explicit_bzero(s->data, strlen(s->data));
	curl_slist_free_all(h->headers);
	h->headers = NULL;
	h->call = NULL;

	if (result != CURLE_OK)
		call->transport_error = pstrdup(h->error[0] ? h->error : curl_easy_strerror(result));
	else
		curl_easy_getinfo(h->easy, CURLINFO_RESPONSE_CODE, &call->http_status);
}

/*
 * POST each call's body to url, up to TT_HTTP_PARALLEL at a time, and wait
 * for them all.  Interrupts are served every 100 ms, so a SIGTERM does
 * not wait for a slow API.  Results land in the calls.
 */
void
tt_http_perform(TTHttpCall *calls, int ncalls, const char *url, int timeout_ms)
{
	int			next = 0;
	int			running = 0;

	http_setup();
	while (next < ncalls || running > 0)
	{
		CURLMsg    *msg;
		int			left;
		int			active;

		for (int i = 0; i < TT_HTTP_PARALLEL && next < ncalls; i++)
		{
			if (pool[i].call == NULL)
			{
				start_call(&pool[i], &calls[next++], url, timeout_ms);
				running++;
			}
		}
		if (curl_multi_perform(multi, &active) != CURLM_OK)
			elog(ERROR, "tiktok_capi: libcurl failed");
		while ((msg = curl_multi_info_read(multi, &left)) != NULL)
		{
			PooledHandle *h;

			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &h);
			finish_call(h, msg->data.result);
			running--;
		}
		/* every handle is busy, or every call has started: wait a little */
		if (running > 0)
			curl_multi_poll(multi, NULL, 0, 100, NULL);
		CHECK_FOR_INTERRUPTS();
	}
}
