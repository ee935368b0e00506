/*
 * idn.c - domains to their A-label form (tern/idn.h) with libidn2's
 * IDNA2008 conversion (non-transitional, input normalized to NFC).
 *
 * Pure apart from libidn2's allocation; any thread. Untrusted input: the
 * domains of MAIL FROM and RCPT TO, already checked by the SMTP grammar
 * (smtp_parse.c: well-formed UTF-8, labels of letters, digits, hyphens and
 * non-ASCII octets); libidn2 decides what IDNA2008 allows.
 */
#include <stdlib.h>
#include <string.h>

#include <idn2.h>

#include "tern/idn.h"
#include "tern/util.h"

int
idn_to_ascii(const char *d, size_t len, char *out, size_t outcap)
{
	char *in, *a = NULL;
	int rc;
	size_t n;

	if (memchr(d, '\0', len) != NULL)
		return -1;
	if (!has_8bit(d, len)) {
		if (len + 1 > outcap)
			return -1;
		for (size_t i = 0; i < len; i++)
			out[i] = d[i] >= 'A' && d[i] <= 'Z' ?
			    (char)(d[i] - 'A' + 'a') : d[i];
		out[len] = '\0';
		return 0;
	}
	in = xstrndup(d, len);
	rc = idn2_to_ascii_8z(in, &a, IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL);
	free(in);
	if (rc != IDN2_OK || a == NULL) {
		idn2_free(a);
		return -1;
	}
	n = strlen(a);
	if (n + 1 > outcap) {
		idn2_free(a);
		return -1;
	}
	for (size_t i = 0; i <= n; i++)
		out[i] = a[i] >= 'A' && a[i] <= 'Z' ? (char)(a[i] - 'A' + 'a') :
		    a[i];
	idn2_free(a);
	return 0;
}

char *
idn_addr_to_ascii(const char *addr)
{
	const char *at = strrchr(addr, '@');
	char dom[256], *out;
	size_t ll;

	if (at == NULL)
		return xstrdup(addr);
	for (ll = 0; at[1 + ll] != '\0' && (unsigned char)at[1 + ll] < 0x80; ll++)
		;
	if (at[1 + ll] == '\0')
		return xstrdup(addr);           /* an ASCII domain stays as written */
	if (idn_to_ascii(at + 1, strlen(at + 1), dom, sizeof(dom)) < 0)
		return NULL;
	ll = (size_t)(at - addr) + 1;
	out = xmalloc(ll + strlen(dom) + 1);
	memcpy(out, addr, ll);
	strcpy(out + ll, dom);
	return out;
}
