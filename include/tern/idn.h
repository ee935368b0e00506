/*
 * idn.h - internationalized domain names (IDNA2008, RFC 5891, with
 * libidn2): the A-label form of a domain, used wherever tern decides or
 * looks something up by domain (relay-domains, routes, DNS, the
 * scheduler's destinations), so that a domain written with U-labels
 * ("exämple.de") and its A-label form ("xn--exmple-cua.de") are one.
 */
#ifndef TERN_IDN_H
#define TERN_IDN_H

#include <stddef.h>

/*
 * The A-label form of domain d[0..len) (UTF-8), lower case, into out
 * (outcap bytes, NUL-terminated). An all-ASCII domain is only lowered
 * (it is not checked here: the SMTP grammar already did). 0, or -1 when
 * a non-ASCII domain is not a valid IDNA2008 name, d holds a NUL, or the
 * result does not fit.
 */
int idn_to_ascii(const char *d, size_t len, char *out, size_t outcap);

/*
 * addr ("local@domain", NUL-terminated) with a non-ASCII domain in its
 * A-label form, newly allocated; the local part, and an ASCII domain, are
 * kept as written. NULL when the domain is not a valid IDNA2008 name.
 */
char *idn_addr_to_ascii(const char *addr);

#endif
