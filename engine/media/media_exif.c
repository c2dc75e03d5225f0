/* EXIF orientation: TIFF byte order, the offset of IFD0, and its 0x0112
   entry. Nothing else of EXIF is read. Every offset is checked against n. */
#include "media/media_internal.h"

#include <string.h>

static unsigned rd16(const uint8_t *p, bool le) { return le ? p[0] | p[1] << 8 : p[0] << 8 | p[1]; }

static uint32_t rd32(const uint8_t *p, bool le) {
  return le ? (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24
            : (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

int mr_exif_orientation(const uint8_t *p, size_t n) {
  if (n >= 6 && memcmp(p, "Exif\0\0", 6) == 0) {
    p += 6;
    n -= 6;
  }
  if (n < 8) return 1;
  bool le;
  if (p[0] == 'I' && p[1] == 'I') le = true;
  else if (p[0] == 'M' && p[1] == 'M') le = false;
  else return 1;
  if (rd16(p + 2, le) != 42) return 1;
  uint32_t ifd = rd32(p + 4, le);
  if (ifd < 8 || ifd > n - 2) return 1;
  unsigned count = rd16(p + ifd, le);
  for (unsigned i = 0; i < count; i++) {
    size_t e = (size_t)ifd + 2 + (size_t)i * 12;
    if (e + 12 > n) break;
    if (rd16(p + e, le) != 0x0112) continue;
    unsigned type = rd16(p + e + 2, le);
    uint32_t v = type == 3 ? rd16(p + e + 8, le) : type == 4 ? rd32(p + e + 8, le) : 0; /* SHORT or LONG */
    return v >= 1 && v <= 8 ? (int)v : 1;
  }
  return 1;
}
