/* Zip central-directory reader, enough for torch.save archives: ZIP64 for
   files past 4 GB (the official umT5 .pth is 11 GB), stored entries only.
   torch writes every entry uncompressed, so a deflated one means the file
   was repacked by some other tool; we refuse it by name. */
#include "io/io_internal.h"

#include <stdlib.h>
#include <string.h>

#define SIG_EOCD 0x06054b50u
#define SIG_EOCD64 0x06064b50u
#define SIG_LOCATOR64 0x07064b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_LOCAL 0x04034b50u

#define EOCD_SIZE 22
#define LOCATOR64_SIZE 20
#define EOCD64_SIZE 56
#define CENTRAL_SIZE 46
#define LOCAL_SIZE 30

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

/* True if [off, off+len) lies inside the file. */
static bool in_file(const mr_io_source *src, uint64_t off, uint64_t len) {
  return off <= src->size && len <= src->size - off;
}

static mr_status bad(const mr_io_source *src, const char *what) {
  return mr_error(src->ctx, MR_EFORMAT, "%s: bad zip archive: %s", src->path, what);
}

/* The end record sits in the last 22 + 65535 (comment) bytes; scanning
   backwards finds the real one before any signature inside a comment. */
static bool find_eocd(const mr_io_source *src, uint64_t *pos) {
  if (src->size < EOCD_SIZE) return false;
  uint64_t last = src->size - EOCD_SIZE;
  uint64_t first = last > 65535 ? last - 65535 : 0;
  for (uint64_t p = last + 1; p-- > first;) {
    const uint8_t *q = src->data + p;
    if (rd32(q) == SIG_EOCD && p + EOCD_SIZE + rd16(q + 20) <= src->size) {
      *pos = p;
      return true;
    }
  }
  return false;
}

/* Replaces the 0xFFFFFFFF fields of a central header from its ZIP64 extra
   field, which lists them in a fixed order, each present only if needed. */
static bool apply_zip64_extra(const uint8_t *extra, size_t len, uint64_t *usize, uint64_t *csize, uint64_t *offset) {
  size_t k = 0;
  while (k + 4 <= len) {
    uint16_t id = rd16(extra + k), sz = rd16(extra + k + 2);
    if (sz > len - k - 4) return false;
    if (id == 0x0001) {
      const uint8_t *f = extra + k + 4;
      size_t left = sz;
      uint64_t *fields[3] = {usize, csize, offset};
      for (int i = 0; i < 3; i++) {
        if (*fields[i] != 0xFFFFFFFFu) continue;
        if (left < 8) return false;
        *fields[i] = rd64(f);
        f += 8;
        left -= 8;
      }
      return true;
    }
    k += 4 + (size_t)sz;
  }
  /* No ZIP64 field: fine only if nothing needed one. */
  return *usize != 0xFFFFFFFFu && *csize != 0xFFFFFFFFu && *offset != 0xFFFFFFFFu;
}

static int name_cmp(const char *a, size_t alen, const char *b, size_t blen) {
  int c = memcmp(a, b, alen < blen ? alen : blen);
  if (c != 0) return c;
  return alen < blen ? -1 : alen > blen;
}

static int entry_cmp(const void *x, const void *y) {
  const mr_io_zip_entry *a = x, *b = y;
  return name_cmp(a->name, a->name_len, b->name, b->name_len);
}

mr_status mr_io_zip_open(const mr_io_source *src, mr_io_zip *zip) {
  memset(zip, 0, sizeof *zip);
  uint64_t eocd;
  if (!find_eocd(src, &eocd)) return bad(src, "no end-of-central-directory record");
  const uint8_t *e = src->data + eocd;
  if (rd16(e + 4) != 0 || rd16(e + 6) != 0) return bad(src, "multi-disk archives are not supported");
  uint64_t count = rd16(e + 10);
  uint64_t cd_size = rd32(e + 12);
  uint64_t cd_off = rd32(e + 16);

  if (count == 0xFFFF || cd_size == 0xFFFFFFFFu || cd_off == 0xFFFFFFFFu) {
    if (eocd < LOCATOR64_SIZE) return bad(src, "ZIP64 locator missing");
    const uint8_t *l = src->data + eocd - LOCATOR64_SIZE;
    if (rd32(l) != SIG_LOCATOR64) return bad(src, "ZIP64 locator missing");
    uint64_t off64 = rd64(l + 8);
    if (!in_file(src, off64, EOCD64_SIZE) || rd32(src->data + off64) != SIG_EOCD64)
      return bad(src, "ZIP64 end record missing or out of range");
    const uint8_t *z = src->data + off64;
    count = rd64(z + 32);
    cd_size = rd64(z + 40);
    cd_off = rd64(z + 48);
  }
  if (!in_file(src, cd_off, cd_size)) return bad(src, "central directory out of range");
  /* Each central header takes at least 46 bytes, which bounds count by the
     file itself before we allocate for it. */
  if (count > cd_size / CENTRAL_SIZE) return bad(src, "entry count larger than the central directory");

  zip->entries = calloc(count ? (size_t)count : 1, sizeof *zip->entries);
  if (zip->entries == NULL) return mr_error(src->ctx, MR_ENOMEM, "%s: out of memory for the zip directory", src->path);

  uint64_t p = cd_off, cd_end = cd_off + cd_size;
  for (uint64_t i = 0; i < count; i++) {
    if (p > cd_end || cd_end - p < CENTRAL_SIZE || rd32(src->data + p) != SIG_CENTRAL) {
      mr_io_zip_close(zip);
      return bad(src, "central directory entry corrupt");
    }
    const uint8_t *c = src->data + p;
    uint16_t flags = rd16(c + 8), method = rd16(c + 10);
    uint64_t csize = rd32(c + 20), usize = rd32(c + 24);
    size_t name_len = rd16(c + 28), extra_len = rd16(c + 30), comment_len = rd16(c + 32);
    uint64_t local = rd32(c + 42);
    uint64_t var = (uint64_t)name_len + extra_len + comment_len;
    if (cd_end - p - CENTRAL_SIZE < var) {
      mr_io_zip_close(zip);
      return bad(src, "central directory entry runs past the directory");
    }
    const char *name = (const char *)c + CENTRAL_SIZE;
    if (!apply_zip64_extra(c + CENTRAL_SIZE + name_len, extra_len, &usize, &csize, &local)) {
      mr_io_zip_close(zip);
      return bad(src, "ZIP64 extra field corrupt");
    }
    /* The data starts after the local header, whose extra field may differ
       from the central one (torch pads it to align the data to 64 bytes). */
    if (!in_file(src, local, LOCAL_SIZE) || rd32(src->data + local) != SIG_LOCAL) {
      mr_io_zip_close(zip);
      return bad(src, "local header out of range or corrupt");
    }
    const uint8_t *lh = src->data + local;
    uint64_t data_off = local + LOCAL_SIZE + rd16(lh + 26) + rd16(lh + 28);
    if (!in_file(src, data_off, csize)) {
      mr_io_zip_close(zip);
      return mr_error(src->ctx, MR_EFORMAT, "%s: bad zip archive: entry '%.*s' data out of range", src->path,
                      (int)name_len, name);
    }
    if (flags & 1u) {
      mr_io_zip_close(zip);
      return mr_error(src->ctx, MR_EUNSUPPORTED, "%s: zip entry '%.*s' is encrypted", src->path, (int)name_len, name);
    }
    /* A stored entry's sizes must agree; compressed ones are only refused
       when someone asks for their data. */
    if (method == 0 && csize != usize) {
      mr_io_zip_close(zip);
      return mr_error(src->ctx, MR_EFORMAT, "%s: bad zip archive: stored entry '%.*s' has differing sizes",
                      src->path, (int)name_len, name);
    }
    mr_io_zip_entry *z = &zip->entries[zip->count++];
    z->name = name;
    z->name_len = name_len;
    z->offset = data_off;
    z->size = usize;
    z->method = method;
    p += CENTRAL_SIZE + var;
  }
  if (zip->count > 1) qsort(zip->entries, zip->count, sizeof *zip->entries, entry_cmp);
  return MR_OK;
}

void mr_io_zip_close(mr_io_zip *zip) {
  free(zip->entries);
  zip->entries = NULL;
  zip->count = 0;
}

const mr_io_zip_entry *mr_io_zip_find(const mr_io_zip *zip, const char *name, size_t name_len) {
  /* Entries are sorted by name (zip_open), so a lookup per storage stays
     cheap even for an archive with many entries. */
  size_t lo = 0, hi = zip->count;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    const mr_io_zip_entry *e = &zip->entries[mid];
    int c = name_cmp(e->name, e->name_len, name, name_len);
    if (c == 0) return e;
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return NULL;
}

mr_status mr_io_zip_data(const mr_io_source *src, const mr_io_zip_entry *e, const uint8_t **data) {
  *data = NULL;
  if (e->method != 0)
    return mr_error(src->ctx, MR_EUNSUPPORTED, "%s: zip entry '%.*s' is compressed (method %d); only stored entries are supported",
                    src->path, (int)e->name_len, e->name, e->method);
  *data = src->data + e->offset;
  return MR_OK;
}
