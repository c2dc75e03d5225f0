/* mr_gen (moonreel_gen.h) on the default model, linked as a host links it:
   libmoonreel_gen.so and libmoonreel.so only. Checks the stages and frames
   the callbacks see against the files the same runs write, cancelling from a
   callback and from another thread (no file left), one-line errors, and two
   contexts generating at once in two threads with their own callbacks.
   usage: test_gen MODEL_DIR TMP_DIR */
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "moonreel_gen.h"

int mr_test_failures;
static const char *model, *tmp;

static bool exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

/* Files in tmp whose name starts with prefix (temporaries included). */
static int count_files(const char *prefix) {
  DIR *d = opendir(tmp);
  int n = 0;
  for (struct dirent *e; d && (e = readdir(d));)
    if (strncmp(e->d_name, prefix, strlen(prefix)) == 0) n++;
  if (d) closedir(d);
  return n;
}

/* What the callbacks saw. */
typedef struct seen {
  int stage_calls[5], last_done[5], last_total[5];
  int order_errors;  /* a stage reported after a later one, or done going back */
  int max_stage;
  int frames, frame_errors, count, width, height;
  uint8_t *pixels;   /* every frame, in order */
  int cancel_stage, cancel_done;  /* progress answers false there (-1 = never) */
  int cancel_frame;               /* frame answers false there (-1 = never) */
  atomic_bool *denoising;         /* set at the first denoise step */
  int previews, preview_errors, pw, ph, cancel_preview;
  uint8_t *preview_first, *preview_last;
  pthread_t thread;               /* the thread the callbacks must run on */
} seen;

static void seen_init(seen *s) {
  memset(s, 0, sizeof *s);
  s->max_stage = -1;
  s->cancel_stage = s->cancel_frame = s->cancel_preview = -1;
  s->thread = pthread_self();
}

static bool on_progress(mr_gen_stage stage, int done, int total, void *user) {
  seen *s = user;
  if (!pthread_equal(pthread_self(), s->thread)) s->order_errors++;
  if ((int)stage < s->max_stage || (s->stage_calls[stage] && done < s->last_done[stage]) || done > total)
    s->order_errors++;
  if ((int)stage > s->max_stage) s->max_stage = (int)stage;
  s->stage_calls[stage]++;
  s->last_done[stage] = done;
  s->last_total[stage] = total;
  if (stage == MR_GEN_DENOISE && done >= 1 && s->denoising) atomic_store(s->denoising, true);
  return !((int)stage == s->cancel_stage && done == s->cancel_done);
}

static bool on_frame(int index, int count, const uint8_t *rgb, int width, int height, void *user) {
  seen *s = user;
  if (index != s->frames || (s->frames && (width != s->width || height != s->height))) s->frame_errors++;
  s->count = count;
  s->width = width;
  s->height = height;
  size_t frame = (size_t)width * (size_t)height * 3;
  s->pixels = realloc(s->pixels, frame * (size_t)(index + 1));
  memcpy(s->pixels + frame * (size_t)index, rgb, frame);
  s->frames++;
  return index != s->cancel_frame;
}

static bool on_preview(int step, int steps, const uint8_t *rgb, int frames, int width, int height, void *user) {
  seen *s = user;
  if (step != s->previews + 1 || steps != 4 || frames != 3 || width != s->pw || height != s->ph) s->preview_errors++;
  size_t n = (size_t)frames * width * height * 3;
  s->preview_first = s->preview_first ? s->preview_first : memcpy(malloc(n), rgb, n);
  s->preview_last = realloc(s->preview_last, n);
  memcpy(s->preview_last, rgb, n);
  s->previews++;
  return step != s->cancel_preview;
}

static mr_gen_params small(const char *prompt, const char *seed, const char *out) {
  mr_gen_params p = mr_gen_params_default();
  p.prompt = prompt;
  p.seed = seed;
  p.steps = 4;
  p.frames = 9;
  p.out = out;
  return p;
}

/* One run with every callback: stages in order, frames in order and equal
   to the PNGs the same run writes (a PNG read back differs by at most one
   level: bytes -> [-1, 1] -> bytes truncates), and a second run with no file
   gives the same frames bit for bit. */
static void test_run(mr_gen *gen, mr_ctx *ctx) {
  char out[512], png[512];
  snprintf(out, sizeof out, "%s/run_%%04d.png", tmp);
  seen s;
  seen_init(&s);
  mr_gen_callbacks cb = {on_progress, NULL, on_frame, &s};
  mr_gen_params p = small("a red circle moving right on a black background", "7", out);
  mr_gen_result *r = NULL;
  mr_status st = mr_gen_run(gen, &p, &cb, &r);
  if (st != MR_OK) fprintf(stderr, "run: %s\n", mr_ctx_last_error(ctx));
  REQUIRE(st == MR_OK && r != NULL);
  CHECK(strcmp(r->seed, "7") == 0);
  CHECK(r->out && strcmp(r->out, out) == 0);
  CHECK(r->sidecar && exists(r->sidecar));
  CHECK(r->frames == 9 && r->width == 64 && r->height == 64 && r->fps > 0 && r->seconds > 0);
  CHECK(strstr(r->plan_json, "\"steps\":4") != NULL);
  CHECK(s.order_errors == 0);
  for (int k = 0; k < 5; k++) CHECK(s.stage_calls[k] >= 2 && s.last_done[k] == s.last_total[k]);
  CHECK(s.last_total[MR_GEN_DENOISE] == 4 && s.stage_calls[MR_GEN_DENOISE] == 5);
  CHECK(s.last_total[MR_GEN_DECODE] == 3); /* 9 frames = 3 latent frames */
  CHECK(s.frames == 9 && s.count == 9 && s.frame_errors == 0 && s.width == 64 && s.height == 64);

  size_t frame = 64 * 64 * 3;
  int worst = 0;
  for (int i = 0; i < 9 && s.frames == 9; i++) {
    snprintf(png, sizeof png, "%s/run_%04d.png", tmp, i + 1);
    mr_tensor *img = NULL;
    float *px = malloc(frame * sizeof *px);
    CHECK(mr_image_read(ctx, png, NULL, &img, NULL) == MR_OK);
    if (img && mr_tensor_read(img, MR_F32, px, frame) == MR_OK) {
      for (int c = 0; c < 3; c++)
        for (int y = 0; y < 64 * 64; y++) {
          int b = (int)((px[c * 64 * 64 + y] + 1.0f) / 2.0f * 255.0f + 0.5f);
          int d = abs(b - s.pixels[frame * i + (size_t)y * 3 + c]);
          if (d > worst) worst = d;
        }
    } else {
      CHECK(!"reading the PNG back");
    }
    free(px);
    mr_tensor_free(img);
  }
  CHECK(worst <= 1);
  printf("frames: 9 delivered in order; largest difference from the written PNGs %d level\n", worst);
  mr_gen_result_free(r);

  seen again;
  seen_init(&again);
  mr_gen_callbacks cb2 = {NULL, NULL, on_frame, &again};
  p.out = NULL;
  r = NULL;
  CHECK(mr_gen_run(gen, &p, &cb2, &r) == MR_OK);
  CHECK(r && r->out == NULL && r->sidecar == NULL);
  CHECK(again.frames == 9 && memcmp(again.pixels, s.pixels, frame * 9) == 0);
  mr_gen_result_free(r);
  free(s.pixels);
  free(again.pixels);
}

/* The preview of each step: the latent's frames (3 for 9 video frames) at
   latent resolution, one per step, changing from the first step to the last
   and close to the decoded frames at the end (the default model's fitted
   factors: 0.2 mean error in [-1, 1], docs/lua-api.md); answering false
   cancels like the other callbacks. */
static void test_preview(mr_gen *gen, mr_ctx *ctx) {
  seen s;
  seen_init(&s);
  s.pw = s.ph = 8; /* 64 / the VAE's stride 8 */
  mr_gen_callbacks cb = {on_progress, on_preview, on_frame, &s};
  mr_gen_params p = small("a red circle moving right on a black background", "7", NULL);
  mr_gen_result *r = NULL;
  mr_status st = mr_gen_run(gen, &p, &cb, &r);
  if (st != MR_OK) fprintf(stderr, "preview: %s\n", mr_ctx_last_error(ctx));
  REQUIRE(st == MR_OK);
  mr_gen_result_free(r);
  CHECK(s.previews == 4 && s.preview_errors == 0);
  size_t n = 3 * 8 * 8 * 3;
  if (s.previews == 4) {
    CHECK(memcmp(s.preview_first, s.preview_last, n) != 0);
    /* the last preview against the first video frame, averaged over 8x8 cells */
    double err = 0;
    for (int y = 0; y < 8; y++)
      for (int x = 0; x < 8; x++)
        for (int c = 0; c < 3; c++) {
          double sum = 0;
          for (int yy = 0; yy < 8; yy++)
            for (int xx = 0; xx < 8; xx++) sum += s.pixels[((y * 8 + yy) * 64 + x * 8 + xx) * 3 + c];
          err += fabs(sum / 64 - s.preview_last[(y * 8 + x) * 3 + c]);
        }
    err /= 8 * 8 * 3;
    printf("preview: 4 steps of 3x8x8; last step against the first decoded frame %.1f levels mean\n", err);
    CHECK(err < 40);
  }
  s.cancel_preview = 2;
  s.previews = 0;
  r = NULL;
  CHECK(mr_gen_run(gen, &p, &cb, &r) == MR_ECANCELED && r == NULL);
  free(s.pixels), free(s.preview_first), free(s.preview_last);
}

/* A callback answering false cancels: MR_ECANCELED, no result, nothing
   under the output's name (nor a temporary), and the generator still works. */
static void test_cancel(mr_gen *gen, mr_ctx *ctx) {
  char out[512];
  snprintf(out, sizeof out, "%s/cancel.mp4", tmp);
  for (int how = 0; how < 3; how++) {
    seen s;
    seen_init(&s);
    if (how == 0) s.cancel_stage = MR_GEN_DENOISE, s.cancel_done = 2;
    if (how == 1) s.cancel_stage = MR_GEN_DECODE, s.cancel_done = 1;
    if (how == 2) s.cancel_frame = 3;
    mr_gen_callbacks cb = {on_progress, NULL, on_frame, &s};
    mr_gen_params p = small("a blue square", "3", out);
    mr_gen_result *r = (mr_gen_result *)&s; /* must come back NULL */
    mr_status st = mr_gen_run(gen, &p, &cb, &r);
    printf("cancel %d: %s: %s\n", how, mr_status_name(st), mr_ctx_last_error(ctx));
    CHECK(st == MR_ECANCELED && r == NULL);
    CHECK(strstr(mr_ctx_last_error(ctx), "cancel") != NULL);
    CHECK(count_files("cancel") == 0);
    if (how == 0) CHECK(s.stage_calls[MR_GEN_DECODE] == 0);
    if (how == 2) CHECK(s.frames == 4);
    free(s.pixels);
  }
  mr_gen_params p = small("a blue square", "3", out);
  mr_gen_result *r = NULL;
  CHECK(mr_gen_run(gen, &p, NULL, &r) == MR_OK && exists(out));
  mr_gen_result_free(r);
}

static void *interrupter(void *arg) {
  void **a = arg;
  atomic_bool *denoising = a[0];
  while (!atomic_load(denoising)) usleep(1000);
  mr_ctx_interrupt(a[1]);
  return NULL;
}

/* mr_ctx_interrupt from another thread while the run denoises. */
static void test_interrupt(mr_gen *gen, mr_ctx *ctx) {
  char out[512];
  snprintf(out, sizeof out, "%s/interrupted.mp4", tmp);
  atomic_bool denoising = false;
  seen s;
  seen_init(&s);
  s.denoising = &denoising;
  void *args[2] = {&denoising, ctx};
  pthread_t th;
  REQUIRE(pthread_create(&th, NULL, interrupter, args) == 0);
  mr_gen_callbacks cb = {on_progress, NULL, NULL, &s};
  mr_gen_params p = small("a green triangle", "5", out);
  p.steps = 12; /* long enough that the interrupt lands while sampling */
  mr_gen_result *r = NULL;
  mr_status st = mr_gen_run(gen, &p, &cb, &r);
  pthread_join(th, NULL);
  printf("interrupt: %s: %s\n", mr_status_name(st), mr_ctx_last_error(ctx));
  CHECK(st == MR_ECANCELED && r == NULL);
  CHECK(count_files("interrupted") == 0);
  CHECK(s.last_done[MR_GEN_DENOISE] < 12);
}

/* Bad parameters: one line naming what is wrong, before any sampling. */
static void test_errors(mr_gen *gen, mr_ctx *ctx) {
  struct {
    const char *mode, *json, *image, *expect;
  } cases[] = {
    {"nope", NULL, NULL, "nope"},
    {"t2v", "{\"num_inference_steps\": 2}", NULL, "num_inference_steps"},
    {"t2v", "[1, 2", NULL, "options_json"},
    {"t2v", "{\"prompt\": \"twice\"}", NULL, "prompt"},
    {"ti2v", NULL, "/nonexistent/photo.png", "/nonexistent/photo.png"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    seen s;
    seen_init(&s);
    mr_gen_callbacks cb = {on_progress, NULL, NULL, &s};
    mr_gen_params p = small("a red circle", "1", NULL);
    p.mode = cases[i].mode;
    p.options_json = cases[i].json;
    p.image = cases[i].image;
    mr_gen_result *r = NULL;
    mr_status st = mr_gen_run(gen, &p, &cb, &r);
    const char *msg = mr_ctx_last_error(ctx);
    printf("error %zu: %s: %s\n", i, mr_status_name(st), msg);
    CHECK(st != MR_OK && st != MR_ECANCELED && r == NULL);
    CHECK(strstr(msg, cases[i].expect) != NULL && strchr(msg, '\n') == NULL);
    CHECK(s.stage_calls[MR_GEN_DENOISE] == 0);
  }
  mr_gen *bad = (mr_gen *)ctx;
  mr_gen_opts o = mr_gen_opts_default();
  o.model = "/nonexistent/pack";
  CHECK(mr_gen_new(ctx, &o, &bad) != MR_OK && bad == NULL);
  CHECK(strstr(mr_ctx_last_error(ctx), "/nonexistent/pack") != NULL);
  printf("bad model: %s\n", mr_ctx_last_error(ctx));
}

/* Two contexts, two generators, two threads at once: each run's callbacks
   reach its own user pointer on its own thread, and each gives the frames the
   same parameters give when run alone. */
typedef struct job {
  const char *prompt, *seed;
  mr_gen *gen;
  seen s;
  mr_status st;
} job;

static void *run_job(void *arg) {
  job *j = arg;
  seen_init(&j->s);
  mr_gen_callbacks cb = {on_progress, NULL, on_frame, &j->s};
  mr_gen_params p = small(j->prompt, j->seed, NULL);
  mr_gen_result *r = NULL;
  j->st = mr_gen_run(j->gen, &p, &cb, &r);
  mr_gen_result_free(r);
  return NULL;
}

static void test_threads(mr_gen *gen_a) {
  mr_ctx *ctx_b = NULL;
  mr_gen *gen_b = NULL;
  REQUIRE(mr_ctx_new(NULL, &ctx_b) == MR_OK);
  mr_gen_opts o = mr_gen_opts_default();
  o.model = model;
  mr_status st = mr_gen_new(ctx_b, &o, &gen_b);
  if (st != MR_OK) fprintf(stderr, "second generator: %s\n", mr_ctx_last_error(ctx_b));
  if (st == MR_OK) {
    job a = {"a yellow square moving up on a gray background", "11", gen_a};
    job b = {"a white circle moving left on a black background", "12", gen_b};
    pthread_t ta, tb;
    CHECK(pthread_create(&ta, NULL, run_job, &a) == 0);
    CHECK(pthread_create(&tb, NULL, run_job, &b) == 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    CHECK(a.st == MR_OK && b.st == MR_OK);
    CHECK(a.s.order_errors == 0 && b.s.order_errors == 0 && a.s.frames == 9 && b.s.frames == 9);
    /* each again, alone, on the other generator */
    job a1 = {a.prompt, a.seed, gen_b}, b1 = {b.prompt, b.seed, gen_a};
    run_job(&a1);
    run_job(&b1);
    size_t bytes = 64 * 64 * 3 * 9;
    CHECK(a1.s.frames == 9 && memcmp(a1.s.pixels, a.s.pixels, bytes) == 0);
    CHECK(b1.s.frames == 9 && memcmp(b1.s.pixels, b.s.pixels, bytes) == 0);
    CHECK(memcmp(a.s.pixels, b.s.pixels, bytes) != 0);
    printf("two threads: both runs equal to the same runs alone\n");
    free(a.s.pixels), free(b.s.pixels), free(a1.s.pixels), free(b1.s.pixels);
  } else {
    mr_test_failures++;
  }
  mr_gen_free(gen_b);
  mr_ctx_free(ctx_b);
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: test_gen MODEL_DIR TMP_DIR\n");
    return 2;
  }
  model = argv[1];
  tmp = argv[2];
  mr_ctx *ctx = NULL;
  if (mr_ctx_new(NULL, &ctx) != MR_OK) return 1;
  mr_gen_opts o = mr_gen_opts_default();
  o.model = model;
  mr_gen *gen = NULL;
  if (mr_gen_new(ctx, &o, &gen) != MR_OK) {
    fprintf(stderr, "mr_gen_new: %s\n", mr_ctx_last_error(ctx));
    return 1;
  }
  CHECK(strstr(mr_gen_model_json(gen), "\"name\"") != NULL);
  test_run(gen, ctx);
  test_preview(gen, ctx);
  test_cancel(gen, ctx);
  test_interrupt(gen, ctx);
  test_errors(gen, ctx);
  test_threads(gen);
  mr_gen_free(gen);
  uint64_t vmsg = mr_ctx_validation_messages(ctx);
  mr_ctx_free(ctx);
  CHECK(vmsg == 0);
  if (mr_test_failures) fprintf(stderr, "%d check(s) failed\n", mr_test_failures);
  else printf("all checks passed\n");
  return mr_test_failures ? 1 : 0;
}
