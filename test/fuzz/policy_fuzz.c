/*-------------------------------------------------------------------------
 *
 * policy_fuzz.c
 *	  libFuzzer harness for the delivery worker's rules (src/policy.c):
 *	  answer bodies as they come off the network, api_url and proxy
 *	  values, and text whose URL passwords are hidden.
 *
 * Checked beyond "no crash": an answer's strings are NUL-terminated
 * printable ASCII (they are stored as text in the database), a body read
 * as an answer has a code, every verdict has a reason, and an allowed URL
 * is https or plain http to a loopback host; an allowed proxy is http(s);
 * text with its passwords hidden fits the size promised, and hiding them
 * again changes nothing (every password is already ***).
 * Build and run with `make fuzz`.
 *
 *-------------------------------------------------------------------------
 */
#include "policy.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* NUL-terminated within size, and printable ASCII only */
static void
check_text(const char *s, size_t size)
{
	size_t		n = strnlen(s, size);

	if (n == size)
		abort();
	for (size_t i = 0; i < n; i++)
		if ((unsigned char) s[i] < 0x20 || (unsigned char) s[i] >= 0x7f)
			abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	TTAnswer	answer;
	char		reason[TT_MESSAGE_MAX + 64];
	char	   *copy;
	char	   *shown;
	size_t		shown_size;
	const char *why = NULL;
	bool		read;

	/* the body exactly as received: no NUL after it */
	read = tt_read_answer((const char *) data, size, &answer);
	if (read && !answer.has_code)
		abort();
	check_text(answer.message, sizeof(answer.message));
	check_text(answer.request_id, sizeof(answer.request_id));
	for (long status = 200; status <= 503; status += 101)
	{
		reason[0] = '\0';
		(void) tt_judge(NULL, status, &answer, 1 + (int) (size % 3), reason, sizeof(reason));
		if (reason[0] == '\0' || strnlen(reason, sizeof(reason)) == sizeof(reason))
			abort();
	}

	/* the same bytes as an api_url */
	copy = malloc(size + 1);
	memcpy(copy, data, size);
	copy[size] = '\0';
	if (tt_url_allowed(copy, &why))
	{
		if (strncmp(copy, "https://", 8) != 0 &&
			strncmp(copy, "http://127.", 11) != 0 &&
			strncmp(copy, "http://localhost", 16) != 0 &&
			strncmp(copy, "http://[::1]", 12) != 0)
			abort();
	}
	else if (why == NULL || why[0] == '\0')
		abort();

	/* as a proxy URL */
	why = NULL;
	if (tt_proxy_allowed(copy, &why))
	{
		if (copy[0] != '\0' && strncmp(copy, "https://", 8) != 0 &&
			strncmp(copy, "http://", 7) != 0)
			abort();
	}
	else if (why == NULL || why[0] == '\0')
		abort();

	/* as text to log: the promised size is never short, hiding is idempotent */
	shown_size = 2 * strlen(copy) + 8;
	shown = malloc(shown_size);
	(void) tt_hide_passwords(copy, shown, shown_size);
	if (strnlen(shown, shown_size) >= shown_size - 1 && strlen(copy) > 0)
		abort();
	{
		char	   *again = malloc(2 * strlen(shown) + 8);

		if (tt_hide_passwords(shown, again, 2 * strlen(shown) + 8) &&
			strcmp(again, shown) != 0)
			abort();
		free(again);
	}
	free(shown);
	free(copy);
	return 0;
}
