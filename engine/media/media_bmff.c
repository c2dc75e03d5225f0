/*
 * The sample tables of an MP4/MOV file against the bytes that hold them,
 * before FFmpeg's mov demuxer sees the file.
 *
 * Why: that demuxer allocates a sample table from the entry count the box
 * declares, before reading any entry (FFmpeg 5.1's stco: 8 bytes an entry).
 * A 3 KB file whose stco declares 67,108,865 entries made it allocate
 * 512 MiB (found by the video fuzz target). A box cannot hold more entries
 * than its bytes: here every table box's count times its entry size is held
 * to its size, so a read costs memory in proportion to the file.
 *
 * Only box headers and the few bytes before each table's entries are read;
 * everything else is skipped by seeking. A file that is not ISO-BMFF (its
 * first box is none of the top-level types) is left to the demuxers.
 */
#define _FILE_OFFSET_BITS 64
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "media_internal.h"

/* Boxes that hold only boxes, down to the sample tables (and the fragments'). */
static const char *const CONTAINERS[] = {"moov", "trak", "mdia", "minf", "stbl", "edts", "mvex", "moof", "traf",
                                         NULL};

/* The sample-table boxes FFmpeg allocates by count: each is a full box
   (version, flags) whose entry count and entry size layout() reads. */
static const char *const TABLES[] = {"stco", "co64", "stts", "ctts", "stsc", "stss", "stps",
                                     "elst", "sbgp", "stsz", "stz2", "trun", NULL};

/* Top-level box types that mark a file as ISO-BMFF. */
static const char *const TOP[] = {"ftyp", "moov", "mdat", "wide", "free", "skip", "styp", "moof", "pnot", NULL};

static bool is_one_of(const char *const *list, const char type[4]) {
  for (; *list; list++)
    if (memcmp(*list, type, 4) == 0) return true;
  return false;
}

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

typedef struct {
  mr_ctx *ctx;
  const char *path;
  FILE *f;
  int64_t file_size;
  long boxes; /* visited so far: a bound on the work a file can ask for */
} walk;

enum { MAX_DEPTH = 12, MAX_BOXES = 1 << 20 };

/* Where the entries of table box `type` start (bytes into its body, after
   version and flags), and their count and size, from the body's first bytes
   h (n of them). False when the body is too short to say. */
static bool layout(const char type[4], const uint8_t *h, int64_t n, int64_t *start, uint32_t *count, int64_t *size) {
  int version = h[0];
  uint32_t flags = be32(h) & 0xffffff;
  int at = 4; /* the entry count's offset */
  *size = 4;
  if (!memcmp(type, "co64", 4) || !memcmp(type, "stts", 4) || !memcmp(type, "ctts", 4)) *size = 8;
  else if (!memcmp(type, "stsc", 4)) *size = 12;
  else if (!memcmp(type, "elst", 4)) *size = version == 1 ? 20 : 12;
  else if (!memcmp(type, "sbgp", 4)) at = version == 1 ? 12 : 8, *size = 8; /* grouping type (and parameter) */
  else if (!memcmp(type, "stsz", 4)) at = 8; /* sample size first: entries only when it is 0 */
  else if (!memcmp(type, "stz2", 4)) at = 8; /* reserved and the field size in bits first */
  if (n < at + 4) return false;
  *count = be32(h + at);
  *start = at + 4;
  if (!memcmp(type, "stsz", 4) && be32(h + 4) != 0) *size = 0;
  if (!memcmp(type, "stz2", 4)) *size = (h[7] + 7) / 8; /* 4, 8 or 16 bits: whole bytes bound it */
  if (!memcmp(type, "trun", 4)) {                       /* optional fields, then per-sample ones */
    *start += (flags & 0x1 ? 4 : 0) + (flags & 0x4 ? 4 : 0);
    *size = 4 * ((flags >> 8 & 1) + (flags >> 9 & 1) + (flags >> 10 & 1) + (flags >> 11 & 1));
  }
  return true;
}

static mr_status check_table(walk *w, const char type[4], int64_t body, int64_t len) {
  uint8_t h[16];
  int64_t n = len < 16 ? len : 16, start, size;
  uint32_t count;
  if (fseeko(w->f, body, SEEK_SET) != 0 || fread(h, 1, (size_t)n, w->f) != (size_t)n) return MR_OK;
  if (!layout(type, h, n, &start, &count, &size)) return MR_OK; /* the demuxer refuses it */
  if (start <= len && (int64_t)count * size <= len - start) return MR_OK;
  return mr_error(w->ctx, MR_EFORMAT,
                  "'%s': its %.4s box declares %" PRIu32 " entries of %" PRId64 " bytes in %" PRId64
                  " bytes (a damaged or crafted MP4/MOV)",
                  w->path, type, count, size, len > start ? len - start : 0);
}

/* The boxes in [start, end) of the file, at nesting depth. */
static mr_status walk_boxes(walk *w, int64_t start, int64_t end, int depth) {
  int64_t at = start;
  while (at + 8 <= end) {
    if (++w->boxes > MAX_BOXES) return MR_OK; /* FFmpeg's own limits take over */
    uint8_t h[16];
    if (fseeko(w->f, at, SEEK_SET) != 0 || fread(h, 1, 8, w->f) != 8) return MR_OK;
    int64_t size = be32(h), head = 8;
    if (size == 1) { /* 64-bit size */
      if (fread(h + 8, 1, 8, w->f) != 8) return MR_OK;
      size = (int64_t)((uint64_t)be32(h + 8) << 32 | be32(h + 12));
      head = 16;
    } else if (size == 0) {
      size = end - at; /* to the end of the enclosing box */
    }
    if (size < head) return MR_OK; /* malformed: the demuxer says so */
    int64_t box_end = size > end - at ? end : at + size;
    const char *type = (const char *)h + 4;
    if (depth < MAX_DEPTH && is_one_of(CONTAINERS, type)) {
      mr_status s = walk_boxes(w, at + head, box_end, depth + 1);
      if (s != MR_OK) return s;
    } else if (is_one_of(TABLES, type)) {
      mr_status s = check_table(w, type, at + head, box_end - at - head);
      if (s != MR_OK) return s;
    }
    at = box_end;
  }
  return MR_OK;
}

mr_status mr_media_bmff_check(mr_ctx *ctx, const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return MR_OK; /* the demuxer's open gives the message */
  walk w = {ctx, path, f, 0, 0};
  uint8_t h[8];
  mr_status s = MR_OK;
  if (fread(h, 1, 8, f) == 8 && is_one_of(TOP, (const char *)h + 4) && fseeko(f, 0, SEEK_END) == 0 &&
      (w.file_size = ftello(f)) > 0)
    s = walk_boxes(&w, 0, w.file_size, 0);
  fclose(f);
  return s;
}
