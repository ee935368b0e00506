/*
 * segment.c - segment files and the record format inside them
 * (doc/queue.md "Segment files").
 *
 * Called by the committer (prepare), the housekeeping thread (prepare the
 * spare), queue_open() (recovery scan) and readers (queue_read_body via
 * seg_record_read). Stateless: every function works on the fd or path it
 * is given. The bytes read back are untrusted (torn writes, stale data in
 * recycled segments, disk corruption): every length is bounded by the
 * file before use, and nothing here aborts on bad input.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tern/envelope.h"
#include "tern/log.h"
#include "tern/util.h"
#include "queue_int.h"

#define SEG_CHUNK       (1u << 20)

void
queue_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

void
queue_be64(uint8_t *p, uint64_t v)
{
	queue_be32(p, (uint32_t)(v >> 32));
	queue_be32(p + 4, (uint32_t)v);
}

uint32_t
queue_get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	    (uint32_t)p[2] << 8 | p[3];
}

uint64_t
queue_get_be64(const uint8_t *p)
{
	return (uint64_t)queue_get_be32(p) << 32 | queue_get_be32(p + 4);
}

void
seg_hdr_encode(const struct seg_hdr *h, uint8_t out[SEG_HDR_LEN])
{
	queue_be32(out, h->magic);
	out[4] = (uint8_t)(h->version >> 8);
	out[5] = (uint8_t)h->version;
	out[6] = (uint8_t)(h->flags >> 8);
	out[7] = (uint8_t)h->flags;
	queue_be32(out + 8, h->epoch);
	queue_be64(out + 12, h->seq);
	queue_be32(out + 20, h->payload_len);
	queue_be32(out + 24, h->crc);
}

void
seg_hdr_decode(const uint8_t in[SEG_HDR_LEN], struct seg_hdr *h)
{
	h->magic = queue_get_be32(in);
	h->version = (uint16_t)(in[4] << 8 | in[5]);
	h->flags = (uint16_t)(in[6] << 8 | in[7]);
	h->epoch = queue_get_be32(in + 8);
	h->seq = queue_get_be64(in + 12);
	h->payload_len = queue_get_be32(in + 20);
	h->crc = queue_get_be32(in + 24);
}

void
seg_path(const char *segdir, uint32_t num, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%08x.seg", segdir, num);
}

int
seg_prepare(const char *segdir, const char *tmp, const char *final,
    uint64_t size)
{
	char *zero = NULL;
	int fd = -1, saved;

	if ((zero = calloc(1, SEG_CHUNK)) == NULL)
		goto fail;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		goto fail;
	for (uint64_t done = 0; done < size; ) {
		size_t n = size - done > SEG_CHUNK ? SEG_CHUNK : (size_t)(size - done);
		if (write_all(fd, zero, n) < 0)
			goto fail;
		done += n;
	}
	/* fsync, not fdatasync: the file's size and blocks are new metadata */
	if (fsync(fd) < 0)
		goto fail;
	if (close(fd) < 0) {
		fd = -1;
		goto fail;
	}
	fd = -1;
	if (rename(tmp, final) < 0)
		goto fail;
	if (fsync_dir(segdir) < 0)
		goto fail;
	free(zero);
	return 0;
fail:
	saved = errno;
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	free(zero);
	errno = saved;
	return -1;
}

static int
seg_pread_all(int fd, void *buf, size_t len, uint64_t off)
{
	char *p = buf;

	while (len > 0) {
		ssize_t n = pread(fd, p, len, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0) {
			errno = EIO;
			return -1;
		}
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

static int
seg_all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != 0)
			return 0;
	return 1;
}

/* An envelope standing in for a record whose envelope cannot be decoded. */
static struct envelope *
seg_placeholder(uint64_t id)
{
	struct envelope *e = envelope_new();
	e->id = id;
	e->sender = xstrdup("");
	e->last_error = xstrdup("segment record unreadable");
	return e;
}

enum seg_rec_status
seg_record_read(int fd, uint32_t num, uint32_t salt, uint64_t off,
    uint64_t limit, uint64_t prev_seq, struct envelope **envp,
    uint64_t *rec_lenp, uint64_t *seqp, const char **reason)
{
	uint8_t hb[SEG_HDR_LEN], lb[4], *buf = NULL;
	struct seg_hdr h;
	struct envelope *env = NULL;
	uint64_t rec_len, avail;
	uint32_t envlen = 0, crc;
	int truncated, damaged = 0;

	*envp = NULL;
	*rec_lenp = 0;
	*reason = "end";
	if (off >= limit || limit - off < SEG_HDR_LEN)
		return SEG_REC_END;
	if (seg_pread_all(fd, hb, SEG_HDR_LEN, off) < 0) {
		*reason = "header unreadable";
		return SEG_REC_BAD;
	}
	if (seg_all_zero(hb, sizeof(hb)))
		return SEG_REC_END;
	seg_hdr_decode(hb, &h);
	if (h.magic != SEG_MAGIC) {
		*reason = "bad magic";
		return SEG_REC_BAD;
	}
	if (h.version != SEG_VERSION) {
		*reason = "unknown record version";
		return SEG_REC_BAD;
	}
	if (h.epoch != num) {
		*reason = "stale record from an earlier use of the file";
		return SEG_REC_END;
	}
	if (h.seq <= prev_seq) {
		*reason = "sequence not increasing";
		return SEG_REC_BAD;
	}
	if (seqp != NULL)
		*seqp = h.seq;
	if (h.payload_len < 4 || h.payload_len > UINT32_MAX - SEG_HDR_LEN) {
		*reason = "payload length out of bounds";
		return SEG_REC_BAD;
	}
	rec_len = SEG_HDR_LEN + (uint64_t)h.payload_len;
	avail = limit - off;
	truncated = rec_len > avail;
	*rec_lenp = rec_len;

	/* the envelope: a damaged one becomes a held placeholder */
	if (avail < SEG_HDR_LEN + 4 ||
	    seg_pread_all(fd, lb, 4, off + SEG_HDR_LEN) < 0) {
		*reason = "record cut before its envelope";
		damaged = 1;
	} else {
		envlen = queue_get_be32(lb);
		if (envlen > SEG_ENV_MAX || (uint64_t)envlen + 4 > h.payload_len) {
			*reason = "envelope length out of bounds";
			damaged = 1;
		} else if ((uint64_t)envlen + 4 + SEG_HDR_LEN > avail) {
			*reason = "record cut inside its envelope";
			damaged = 1;
		} else if ((buf = malloc(envlen ? envlen : 1)) == NULL ||
		    seg_pread_all(fd, buf, envlen, off + SEG_HDR_LEN + 4) < 0) {
			*reason = "envelope unreadable";
			damaged = 1;
		} else if (envelope_decode(buf, envlen, &env) != ENV_DECODE_OK) {
			*reason = "envelope undecodable";
			damaged = 1;
		} else if (env->id == 0 || (env->id & SEG_PLACEHOLDER_ID) ||
		    env->size != h.payload_len - 4 - (uint64_t)envlen) {
			*reason = "envelope does not match its record";
			damaged = 1;
			envelope_free(env);
			env = NULL;
		}
	}
	free(buf);
	buf = NULL;

	if (!damaged && truncated) {
		*reason = "record truncated";
		damaged = 1;
	}
	if (!damaged) {
		/* stream the CRC over the whole payload */
		uint64_t pos = 0;
		hb[24] = hb[25] = hb[26] = hb[27] = 0;
		hb[SEG_FLAGS_OFF] = hb[SEG_FLAGS_OFF + 1] = 0;
		crc = crc32c(salt, hb, SEG_HDR_LEN);
		if ((buf = malloc(SEG_CHUNK)) == NULL) {
			*reason = "out of memory";
			envelope_free(env);
			return SEG_REC_BAD;
		}
		while (pos < h.payload_len) {
			size_t n = h.payload_len - pos > SEG_CHUNK ? SEG_CHUNK :
			    (size_t)(h.payload_len - pos);
			if (seg_pread_all(fd, buf, n, off + SEG_HDR_LEN + pos) < 0)
				break;
			crc = crc32c(crc, buf, n);
			pos += n;
		}
		free(buf);
		if (pos < h.payload_len) {
			*reason = "payload unreadable";
			damaged = 1;
		} else if (crc != h.crc) {
			*reason = "crc mismatch";
			damaged = 1;
		}
	}
	if (env == NULL)   /* ids never have the top bit: no clash with real ones */
		env = seg_placeholder(h.seq | SEG_PLACEHOLDER_ID);
	env->seg = num;
	env->off = off;
	env->rec_len = (uint32_t)rec_len;
	env->body_off = 4 + envlen;
	env->crc = h.crc;
	if (damaged)
		env->flags |= ENV_F_CORRUPT;
	*envp = env;
	if (damaged)
		return SEG_REC_DAMAGED;
	*reason = "ok";
	return (h.flags & SEG_F_REMOVED) ? SEG_REC_REMOVED : SEG_REC_OK;
}
