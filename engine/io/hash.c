/* The SHA-256 of a file, as sidecars and templates record adapters by it,
   and of bytes in memory (batch job ids); FFmpeg's libavutil (already a
   dependency) does the hashing. */
#include "core/core.h"

#include <errno.h>
#include <libavutil/mem.h>
#include <libavutil/sha.h>
#include <stdio.h>
#include <string.h>

static void to_hex(const uint8_t digest[32], char hex[65]) {
  for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", digest[i]);
}

mr_status mr_sha256(mr_ctx *ctx, const void *data, size_t size, char hex[65]) {
  hex[0] = 0;
  if (!data && size) return mr_error(ctx, MR_EINVAL, "mr_sha256: NULL data of %zu bytes", size);
  struct AVSHA *sha = av_sha_alloc();
  if (!sha || av_sha_init(sha, 256) < 0) {
    av_free(sha);
    return mr_error(ctx, MR_ENOMEM, "out of host memory");
  }
  /* FFmpeg 4's av_sha_update takes an unsigned int length: feed in pieces */
  const uint8_t *p = data;
  while (size > 0) {
    size_t n = size < (1u << 30) ? size : (1u << 30);
    av_sha_update(sha, p, n);
    p += n;
    size -= n;
  }
  uint8_t digest[32];
  av_sha_final(sha, digest);
  av_free(sha);
  to_hex(digest, hex);
  return MR_OK;
}

mr_status mr_file_sha256(mr_ctx *ctx, const char *path, char hex[65]) {
  hex[0] = 0;
  FILE *f = fopen(path, "rb");
  if (!f) return mr_error(ctx, mr_file_errno_status(errno), "cannot open '%s': %s", path, strerror(errno));
  struct AVSHA *sha = av_sha_alloc();
  if (!sha || av_sha_init(sha, 256) < 0) {
    fclose(f);
    av_free(sha);
    return mr_error(ctx, MR_ENOMEM, "out of host memory");
  }
  uint8_t buf[1 << 15];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) av_sha_update(sha, buf, n);
  bool bad = ferror(f);
  fclose(f);
  uint8_t digest[32];
  av_sha_final(sha, digest);
  av_free(sha);
  if (bad) return mr_error(ctx, MR_EIO, "cannot read '%s'", path);
  to_hex(digest, hex);
  return MR_OK;
}
