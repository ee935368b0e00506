/*
 * dns_wire.h - test helper: build DNS messages by hand (RFC 1035 4.1), for
 * test_mx.c (parsers) and test_resolver.c (its in-test DNS server). Include
 * after <cmocka.h>. Overflowing the buffer fails the test.
 */
#ifndef TERN_TEST_DNS_WIRE_H
#define TERN_TEST_DNS_WIRE_H

#include <stdint.h>
#include <string.h>

struct wire {
	unsigned char b[4096];
	size_t n;
};

static inline void
w_u8(struct wire *w, unsigned v)
{
	assert_true(w->n < sizeof(w->b));
	w->b[w->n++] = (unsigned char)v;
}

static inline void
w_u16(struct wire *w, unsigned v)
{
	w_u8(w, v >> 8 & 0xff);
	w_u8(w, v & 0xff);
}

static inline void
w_u32(struct wire *w, uint32_t v)
{
	w_u16(w, v >> 16);
	w_u16(w, v & 0xffff);
}

/* An uncompressed name; "" and "." are the root. */
static inline void
w_name(struct wire *w, const char *name)
{
	while (*name != '\0' && strcmp(name, ".") != 0) {
		const char *dot = strchr(name, '.');
		size_t len = dot ? (size_t)(dot - name) : strlen(name);

		w_u8(w, (unsigned)len);
		for (size_t i = 0; i < len; i++)
			w_u8(w, (unsigned char)name[i]);
		name += len + (dot ? 1 : 0);
	}
	w_u8(w, 0);
}

#endif
