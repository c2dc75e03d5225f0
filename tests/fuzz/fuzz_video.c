/* Videos: MP4, WebM/MKV and GIF through libavformat and libavcodec, animated
   WebP through libwebp's demuxer and animation decoder, each frame's
   declared size checked before its decoder opens, frames fitted to one size
   (engine/media/video_read.c): mr_video_probe, then the host half of
   mr_video_read (mr_media_video_decode), which needs no device. */
#include "fuzz.h"

#include "media/media_internal.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  mr_fuzz_env_default("MOONREEL_MAX_PIXELS", "1048576");
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  mr_ctx *ctx = mr_fuzz_host_ctx();
  mr_media_init();
  mr_fuzz_file f;
  mr_fuzz_file_open(&f, data, size);

  mr_video_info info;
  mr_fuzz_clear_error(ctx);
  mr_status st = mr_video_probe(ctx, f.path, &info);
  mr_fuzz_check_refusal(ctx, st, f.path);
  if (st == MR_OK) {
    MR_FUZZ_CHECK(memchr(info.codec, '\0', sizeof info.codec) != NULL);
    MR_FUZZ_CHECK(memchr(info.container, '\0', sizeof info.container) != NULL);
    /* only the demuxers of the formats moonreel reads: a playlist or concat list would open other files */
    MR_FUZZ_CHECK(strcmp(info.container, "mov,mp4,m4a,3gp,3g2,mj2") == 0 || strcmp(info.container, "matroska,webm") == 0 ||
                  strcmp(info.container, "gif") == 0 || strcmp(info.container, "webp") == 0);

    mr_video_read_opts o = mr_video_read_opts_default();
    o.max_frames = 8;
    o.start = (int64_t)(size % 3);
    o.resize.width = 32;
    o.resize.height = 32;
    o.resize.fit = (mr_fit)(size % 3);
    o.resize.filter = (mr_filter)((size / 3) % 5);
    mr_media_frames fr;
    mr_fuzz_clear_error(ctx);
    st = mr_media_video_decode(ctx, f.path, &o, &fr, NULL);
    mr_fuzz_check_refusal(ctx, st, f.path);
    if (st == MR_OK) {
      MR_FUZZ_CHECK(fr.n >= 1 && fr.n <= 8);
      MR_FUZZ_CHECK(fr.w == 32 && fr.h == 32);
      volatile uint8_t sink = 0;
      for (size_t k = 0; k < (size_t)fr.n * 3 * 32 * 32; k++) sink ^= fr.px[k];
      (void)sink;
      free(fr.px);
    } else {
      MR_FUZZ_CHECK(fr.px == NULL);
    }
  }
  mr_fuzz_file_close(&f);
  return 0;
}
