/*-------------------------------------------------------------------------
 *
 * tap.h
 *	  TAP output for the standalone unit tests in test/unit.
 *
 * Checks are collected in memory and printed after the plan ("1..N"), so
 * the plan is right however many checks a test runs.  A test calls
 * tap_begin() first and returns tap_end().  Define TAP_NONE before the
 * include to name what a NULL result means in diagnostics.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TT_TAP_H
#define TT_TAP_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef TAP_NONE
#define TAP_NONE "(none)"
#endif

static FILE *tap;				/* check lines, printed after the plan */
static char *tapbuf;
static size_t tapsize;
static int	nchecks;
static int	nfailed;

/* Start collecting checks; exits if that cannot be done */
static inline void
tap_begin(void)
{
	tap = open_memstream(&tapbuf, &tapsize);
	if (tap == NULL)
	{
		perror("open_memstream");
		exit(2);
	}
}

/* Print the plan, then the checks; the exit status */
static inline int
tap_end(void)
{
	fclose(tap);
	printf("1..%d\n", nchecks);
	fwrite(tapbuf, 1, tapsize, stdout);
	free(tapbuf);
	if (nfailed > 0)
		printf("# %d of %d checks failed\n", nfailed, nchecks);
	return nfailed == 0 ? 0 : 1;
}

/*
 * Quote a result for a diagnostic line: NULL is TAP_NONE, bytes outside
 * printable ASCII are escaped.
 */
static inline const char *
show(const char *s, char *buf, size_t bufsize)
{
	size_t		o = 0;

	if (s == NULL)
		return TAP_NONE;
	buf[o++] = '"';
	for (; *s != '\0' && o + 6 < bufsize; s++)
	{
		unsigned char c = (unsigned char) *s;

		if (c >= 0x20 && c < 0x7F && c != '"' && c != '\\')
			buf[o++] = (char) c;
		else
			o += snprintf(buf + o, bufsize - o, "\\x%02X", c);
	}
	buf[o++] = '"';
	buf[o] = '\0';
	return buf;
}

/* Record one check */
static inline void
report(const char *desc, bool ok, const char *got, const char *expected)
{
	nchecks++;
	fprintf(tap, "%sok %d - %s\n", ok ? "" : "not ", nchecks, desc);
	if (!ok)
	{
		nfailed++;
		fprintf(tap, "# got: %s\n# expected: %s\n", got, expected);
	}
}

/* A string result; NULL on either side means TAP_NONE */
static inline void
check_str(const char *desc, const char *got, const char *expected)
{
	char		gbuf[1500];
	char		ebuf[1500];
	bool		ok;

	if (got == NULL || expected == NULL)
		ok = (got == expected);
	else
		ok = (strcmp(got, expected) == 0);
	report(desc, ok, show(got, gbuf, sizeof(gbuf)),
		   show(expected, ebuf, sizeof(ebuf)));
}

static inline void
check_bool(const char *desc, bool got, bool expected)
{
	report(desc, got == expected, got ? "true" : "false",
		   expected ? "true" : "false");
}

static inline void
check_int(const char *desc, long got, long expected)
{
	char		gbuf[32];
	char		ebuf[32];

	snprintf(gbuf, sizeof(gbuf), "%ld", got);
	snprintf(ebuf, sizeof(ebuf), "%ld", expected);
	report(desc, got == expected, gbuf, ebuf);
}

#endif							/* TT_TAP_H */
