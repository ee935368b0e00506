/*
 * fuzz_segment.c - the segment record reader (queue/store/segment.c
 * seg_record_read) over arbitrary bytes, read the way recovery scans a
 * segment (queue.c queue_rec_scan): the input is the whole file (a memfd,
 * from offset 0, limit = its size, segment number 1), records are read one
 * after another, each with the previous record's seq, advancing by
 * rec_len, until END or BAD or a record that runs past the end.
 *
 * Oracles:
 *  - the status is one of the four; *reason is a non-empty text;
 *  - END and BAD return no envelope (and rec_len 0 when nothing could
 *    be sized);
 *  - OK and DAMAGED return an envelope whose location fields describe
 *    the record read (seg, off, rec_len, crc as in its header), with a
 *    seq above the previous one; DAMAGED ones are flagged corrupt;
 *  - OK means the whole record is inside the file, its CRC-32C
 *    (recomputed here over the input bytes) matches, the envelope is
 *    not flagged corrupt, has a real id (non-zero, no placeholder bit)
 *    and body_off + size fills the record exactly (what queue_read_body
 *    later relies on);
 *  - the loop ends: each record is at least a header long, and the loop
 *    is capped anyway.
 *
 * Seeds (tests/fuzz/corpus/segment/): prefixes of segment files written by
 * the real committer (queue_commit_submit), and copies of them with one
 * header or envelope field damaged, cut short, or followed by garbage.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "tern/envelope.h"
#include "tern/log.h"
#include "tern/util.h"
#include "queue_int.h"

#define FUZZ_SEG_NUM    1u
#define FUZZ_SEG_MAXREC 100000u

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int seg_fd = -1;

static uint32_t
fuzz_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	    (uint32_t)p[2] << 8 | p[3];
}

/*
 * The CRC of the record at data[off..off+rec_len), as the writer makes it:
 * the CRC field and the flags (removal marks, written later) as zeros.
 */
static uint32_t
fuzz_record_crc(const uint8_t *data, uint64_t off, uint64_t rec_len)
{
	uint8_t hb[SEG_HDR_LEN];

	memcpy(hb, data + off, SEG_HDR_LEN);
	memset(hb + 24, 0, 4);
	memset(hb + SEG_FLAGS_OFF, 0, 2);
	return crc32c(crc32c(0, hb, SEG_HDR_LEN), data + off + SEG_HDR_LEN,
	    (size_t)(rec_len - SEG_HDR_LEN));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t off = 0, prev = 0;

	if (seg_fd < 0) {
		log_init("fuzz_segment", 0, 0);
		seg_fd = memfd_create("fuzz_segment", MFD_CLOEXEC);
		if (seg_fd < 0)
			abort();
	}
	if (ftruncate(seg_fd, 0) < 0 ||
	    (size > 0 && pwrite(seg_fd, data, size, 0) != (ssize_t)size))
		abort();

	for (unsigned n = 0; n < FUZZ_SEG_MAXREC; n++) {
		struct envelope *env = (struct envelope *)1;
		const char *reason = NULL;
		uint64_t rec_len = 1, seq = 0;
		/* CRC salt 0: the seeds' records were written unsalted */
		enum seg_rec_status st = seg_record_read(seg_fd, FUZZ_SEG_NUM, 0,
		    off, size, prev, &env, &rec_len, &seq, &reason);

		if (reason == NULL || reason[0] == '\0')
			abort();
		if (st == SEG_REC_END || st == SEG_REC_BAD) {
			if (env != NULL)
				abort();
			break;
		}
		if (st != SEG_REC_OK && st != SEG_REC_DAMAGED &&
		    st != SEG_REC_REMOVED)
			abort();
		/* REMOVED is an OK record whose header carries the mark */
		if (st == SEG_REC_REMOVED) {
			if (!(data[off + SEG_FLAGS_OFF + 1] & SEG_F_REMOVED))
				abort();
			st = SEG_REC_OK;
		}
		if (env == NULL || seq <= prev || rec_len < SEG_HDR_LEN + 4 ||
		    rec_len > SEG_HDR_LEN + (uint64_t)UINT32_MAX)
			abort();
		/* the header read is inside the input */
		if (off + SEG_HDR_LEN > size)
			abort();
		if (env->seg != FUZZ_SEG_NUM || env->off != off ||
		    env->rec_len != (uint32_t)rec_len ||
		    env->crc != fuzz_be32(data + off + 24))
			abort();
		if (st == SEG_REC_DAMAGED && !(env->flags & ENV_F_CORRUPT))
			abort();
		if (st == SEG_REC_OK) {
			if (rec_len > size - off ||
			    (env->flags & ENV_F_CORRUPT) || env->id == 0 ||
			    (env->id & SEG_PLACEHOLDER_ID) ||
			    (uint64_t)env->body_off + env->size + SEG_HDR_LEN !=
			    rec_len ||
			    fuzz_record_crc(data, off, rec_len) != env->crc)
				abort();
		}
		envelope_free(env);
		prev = seq;
		if (rec_len > size - off)
			break;      /* cut short: nothing follows */
		off += rec_len;
	}
	return 0;
}
