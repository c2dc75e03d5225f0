/* Pictures: PNG and JPEG headers scanned by us (the size against the pixel
   limit, the EXIF orientation) and decoded by FFmpeg, WebP by libwebp
   (engine/media/image_read.c), then oriented and fitted with each fit mode
   and filter (media_fit.c): the host half of mr_image_read, which needs no
   device. The input's length picks the fitting, so the corpus covers all. */
#include "fuzz.h"

#include "media/media_internal.h"

#include <stdlib.h>

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
  mr_rgba8 img = {0};
  mr_image_info info;
  mr_fuzz_clear_error(ctx);
  mr_status st = mr_media_decode_still(ctx, f.path, &img, &info);
  mr_fuzz_check_refusal(ctx, st, f.path);
  if (st == MR_OK) {
    MR_FUZZ_CHECK(img.px != NULL && img.w > 0 && img.h > 0);
    MR_FUZZ_CHECK((uint64_t)img.w * (uint64_t)img.h <= mr_media_max_pixels());
    MR_FUZZ_CHECK(info.width == img.w && info.height == img.h);
    MR_FUZZ_CHECK(info.orientation >= 1 && info.orientation <= 8);

    static const int sizes[4][2] = {{24, 16}, {0, 0}, {17, 0}, {0, 9}};
    mr_fit_opts o = {0};
    o.width = sizes[size % 4][0];
    o.height = sizes[size % 4][1];
    o.fit = (mr_fit)((size / 4) % 3);
    o.filter = (mr_filter)((size / 12) % 5);
    o.multiple = (size / 60) % 2 ? 8 : 0;
    o.pad_color[0] = 200;
    o.drop_alpha = (size / 120) % 2;
    if (o.width == 0 && o.height == 0 && (uint64_t)img.w * (uint64_t)img.h > 65536) o.width = 64; /* bound the render */
    mr_fit_plan plan;
    mr_fuzz_clear_error(ctx);
    st = mr_media_plan(ctx, f.path, img.w, img.h, &o, &plan);
    mr_fuzz_check_refusal(ctx, st, f.path);
    if (st == MR_OK) {
      MR_FUZZ_CHECK(plan.out_w > 0 && plan.out_h > 0);
      float *px = malloc((size_t)3 * (size_t)plan.out_w * (size_t)plan.out_h * sizeof *px);
      if (px != NULL) {
        MR_FUZZ_CHECK(mr_media_render(&img, &plan, &o, px));
        free(px);
      }
    }
  }
  free(img.px);
  mr_fuzz_file_close(&f);
  return 0;
}
