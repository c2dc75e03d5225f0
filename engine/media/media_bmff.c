/*
 * The tables of an MP4/MOV file against the bytes that hold them, before
 * FFmpeg's mov demuxer sees the file.
 *
 * Why: that demuxer allocates a table from the entry count its box
 * declares, before reading any entry (FFmpeg 5.1's stco: 8 bytes an entry).
 * A 3 KB file whose stco declares 67,108,865 entries made it allocate
 * 512 MiB (found by the video fuzz target). A box cannot hold more entries
 * than its bytes: here every such table's count times its entry size is
 * held to its size, so a read costs memory in proportion to the file.
 *
 * Only box headers and the first bytes of each table are read; everything
 * else is skipped by seeking. Every file is walked as boxes, whatever its
 * first one: FFmpeg's mov probe finds a moov box after any first box (the
 * fuzzer's second file began with a "WEBP" box), and walking a file of
 * another format costs a few reads.
 */
#define _FILE_OFFSET_BITS 64
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "media_internal.h"

/* Boxes that hold only boxes, down to the tables (and the fragments'). */
static const char *const CONTAINERS[] = {"moov", "trak", "mdia", "minf", "stbl", "edts", "dinf", "mvex",
                                         "moof", "traf", "mfra", NULL};

/* The boxes FFmpeg allocates by a declared count: each is a full box
   (version, flags) whose entry count and entry size layout() reads. */
static const char *const TABLES[] = {"stco", "co64", "stts", "ctts", "stsc", "stss", "stps", "elst", "sbgp", "stsz",
                                     "stz2", "trun", "tfra", "dref", "saiz", "saio", "pssh", NULL};

static bool is_one_of(const char *const *list, const char type[4]) {
  for (; *list; list++)
    if (memcmp(*list, type, 4) == 0) return true;
  return false;
}

static bool is(const char type[4], const char *name) { return memcmp(type, name, 4) == 0; }

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

typedef struct {
  mr_ctx *ctx;
  const char *path;
  FILE *f;
  long boxes; /* visited so far: a bound on the work a file can ask for */
} walk;

enum { MAX_DEPTH = 12, MAX_BOXES = 1 << 20, HEAD = 32 };

/* Where the entries of table box `type` start (bytes into its body, which
   begins with version and flags), and their count and size, from the
   body's first bytes h (n of them). False when the body cannot say. */
static bool layout(const char type[4], const uint8_t *h, int64_t n, int64_t *start, uint32_t *count, int64_t *size) {
  int version = h[0];
  uint32_t flags = be32(h) & 0xffffff;
  int at = 4; /* the entry count's offset */
  *size = 4;
  if (is(type, "co64") || is(type, "stts") || is(type, "ctts")) *size = 8;
  else if (is(type, "stsc")) *size = 12;
  else if (is(type, "elst")) *size = version == 1 ? 20 : 12;
  else if (is(type, "sbgp")) at = version == 1 ? 12 : 8, *size = 8; /* grouping type (and parameter) first */
  else if (is(type, "stsz") || is(type, "stz2")) at = 8;            /* a sample size or a field size first */
  else if (is(type, "tfra")) at = 12;                               /* track, field lengths first */
  else if (is(type, "dref")) *size = 8;                             /* entries are boxes */
  else if (is(type, "saiz")) at = flags & 1 ? 13 : 5, *size = 1;    /* (aux type), a default size first */
  else if (is(type, "saio")) at = flags & 1 ? 12 : 4, *size = version == 1 ? 8 : 4;
  else if (is(type, "pssh")) { /* a system id, then key ids (version 1) */
    if (version == 0) return false;
    at = 20, *size = 16;
  }
  if (n < at + 4) return false;
  *count = be32(h + at);
  *start = at + 4;
  if (is(type, "stsz") && be32(h + 4) != 0) *size = 0;     /* one size for every sample */
  if (is(type, "stz2")) *size = (h[7] + 7) / 8;            /* 4, 8 or 16 bits: whole bytes bound it */
  if (is(type, "saiz") && h[at - 1] != 0) *size = 0;       /* one size for every sample */
  if (is(type, "tfra")) {                                  /* time and offset, then three sized fields */
    uint8_t l = h[11];
    *size = (version == 1 ? 16 : 8) + (l >> 4 & 3) + (l >> 2 & 3) + (l & 3) + 3;
  }
  if (is(type, "trun")) { /* optional fields, then the per-sample ones its flags name */
    *start += (flags & 0x1 ? 4 : 0) + (flags & 0x4 ? 4 : 0);
    *size = 4 * ((flags >> 8 & 1) + (flags >> 9 & 1) + (flags >> 10 & 1) + (flags >> 11 & 1));
  }
  return true;
}

/* The header is read from the file whatever the box's length: FFmpeg reads
   a table's version, flags and count past the end of a box that its parent
   cuts short (the fuzzer's third file), and allocates by that count. */
static mr_status check_table(walk *w, const char type[4], int64_t body, int64_t len) {
  uint8_t h[HEAD];
  int64_t start, size;
  uint32_t count;
  if (fseeko(w->f, body, SEEK_SET) != 0) return MR_OK;
  int64_t n = (int64_t)fread(h, 1, HEAD, w->f);
  if (n < 4 || !layout(type, h, n, &start, &count, &size)) return MR_OK; /* the demuxer refuses it */
  int64_t room = len > start ? len - start : 0;
  if ((int64_t)count * size <= room) return MR_OK;
  return mr_error(w->ctx, MR_EFORMAT,
                  "'%s': its %.4s box declares %" PRIu32 " entries of %" PRId64 " bytes in %" PRId64
                  " bytes (a damaged or crafted MP4/MOV)",
                  w->path, type, count, size, room);
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
    mr_status s = MR_OK;
    if (is(type, "cmov")) /* FFmpeg inflates it into a buffer of the length it declares */
      s = mr_error(w->ctx, MR_EUNSUPPORTED, "'%s': a compressed movie header (cmov) is not read", w->path);
    else if (depth < MAX_DEPTH && is_one_of(CONTAINERS, type))
      s = walk_boxes(w, at + head, box_end, depth + 1);
    else if (is_one_of(TABLES, type))
      s = check_table(w, type, at + head, box_end - at - head);
    if (s != MR_OK) return s;
    at = box_end;
  }
  return MR_OK;
}

mr_status mr_media_bmff_check(mr_ctx *ctx, const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return MR_OK; /* the demuxer's open gives the message */
  walk w = {ctx, path, f, 0};
  mr_status s = MR_OK;
  int64_t n;
  if (fseeko(f, 0, SEEK_END) == 0 && (n = ftello(f)) >= 8) s = walk_boxes(&w, 0, n, 0);
  fclose(f);
  return s;
}
