/*
 * mailhdr.c - header fields and address lists for tern-sendmail -t. See
 * include/tern/mailhdr.h for the contract. Pure functions.
 */
#include <string.h>
#include <strings.h>

#include "tern/mailhdr.h"

/* Length of the line at p (through its LF, or to the end). */
static size_t
mailhdr_line(const char *p, size_t len)
{
	const char *nl = memchr(p, '\n', len);
	return nl != NULL ? (size_t)(nl - p) + 1 : len;
}

int
mailhdr_next(const char *p, size_t len, struct mailhdr_field *f)
{
	size_t n = 0, i;

	if (len == 0 || p[0] == '\n' || (p[0] == '\r' && len > 1 && p[1] == '\n'))
		return 0;
	/* field name: printable ASCII but colon, then ':' (RFC 5322 3.6.8) */
	for (i = 0; i < len && p[i] != ':'; i++)
		if ((unsigned char)p[i] <= 32 || (unsigned char)p[i] >= 127)
			return 0;
	if (i == 0 || i == len)
		return 0;
	f->name = p;
	f->name_len = i;
	f->value = p + i + 1;
	n = mailhdr_line(p, len);
	/* continuation lines start with a blank */
	while (n < len && (p[n] == ' ' || p[n] == '\t'))
		n += mailhdr_line(p + n, len - n);
	f->value_len = n - (i + 1);
	f->len = n;
	return 1;
}

int
mailhdr_is(const struct mailhdr_field *f, const char *name)
{
	return strlen(name) == f->name_len &&
	    strncasecmp(f->name, name, f->name_len) == 0;
}

/* Append ch to out (bounded); *n counts even what did not fit. */
static void
mailhdr_put(char *out, size_t outlen, size_t *n, char ch)
{
	if (*n + 1 < outlen)
		out[*n] = ch;
	(*n)++;
}

int
mailhdr_addr_next(const char *v, size_t len, size_t *off, char *out,
    size_t outlen)
{
	size_t i = *off, n = 0, an = 0;
	int depth = 0, quoted = 0, angle = 0, have_angle = 0;
	char abuf[1024];

	for (; i < len; i++) {
		char ch = v[i];
		if (quoted) {           /* kept as written, escapes too */
			if (ch == '"')
				quoted = 0;
			if (angle)
				mailhdr_put(abuf, sizeof(abuf), &an, ch);
			else
				mailhdr_put(out, outlen, &n, ch);
			if (ch == '\\' && i + 1 < len) {
				i++;
				if (angle)
					mailhdr_put(abuf, sizeof(abuf), &an, v[i]);
				else
					mailhdr_put(out, outlen, &n, v[i]);
			}
			continue;
		}
		if (depth > 0) {           /* comment */
			if (ch == '\\' && i + 1 < len)
				i++;
			else if (ch == '(')
				depth++;
			else if (ch == ')')
				depth--;
			continue;
		}
		if (ch == '(') {
			depth = 1;
			continue;
		}
		if (angle) {
			if (ch == '>')
				angle = 0;
			else if (ch == '"') {
				quoted = 1;
				mailhdr_put(abuf, sizeof(abuf), &an, ch);
			} else if (ch != ' ' && ch != '\t' && ch != '\r' && ch != '\n')
				mailhdr_put(abuf, sizeof(abuf), &an, ch);
			continue;
		}
		if (ch == '<') {
			angle = have_angle = 1;
			an = 0;
			continue;
		}
		if (ch == ':') {           /* group: its display name goes */
			n = 0;
			continue;
		}
		if (ch == ',' || ch == ';') {
			if (n > 0 || have_angle) {
				i++;
				break;
			}
			continue;
		}
		if (ch == '"')
			quoted = 1;
		if (ch != ' ' && ch != '\t' && ch != '\r' && ch != '\n')
			mailhdr_put(out, outlen, &n, ch);
	}
	*off = i;
	if (have_angle) {
		if (an == 0 || an >= outlen || an >= sizeof(abuf))
			return i < len ? mailhdr_addr_next(v, len, off, out, outlen) : 0;
		memcpy(out, abuf, an);
		out[an] = '\0';
		return 1;
	}
	if (n == 0 || n >= outlen)
		return i < len ? mailhdr_addr_next(v, len, off, out, outlen) : 0;
	out[n] = '\0';
	return 1;
}
