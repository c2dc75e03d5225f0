/* A windowed host (SDL2): generates a clip in a worker thread and shows each
   frame in the window as the VAE decodes it, then plays the clip in a loop.
   Closing the window (or Escape) cancels a generation still running.

     player ["prompt"] [--seed N] [--steps N]

   Prints "decoding" when the first frame arrives and "playing N frames"
   when the clip is whole (the tests take their screenshot after it). */
#include <SDL.h>
#include <moonreel_gen.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCALE 4 /* window pixels per video pixel */

/* Frames handed from the generating thread to the window's. */
typedef struct clip {
  SDL_mutex *lock;
  uint8_t *rgb; /* count frames of w * h * 3 bytes */
  int w, h, count, ready;
  double fps;
  atomic_bool quit;     /* the window closed: the callbacks cancel */
  atomic_int finished;  /* 1 done, -1 failed */
  mr_gen_params params;
  char error[512];
} clip;

static bool on_frame(int index, int count, const uint8_t *rgb, int w, int h, void *user) {
  clip *c = user;
  SDL_LockMutex(c->lock);
  if (c->rgb == NULL) {
    c->rgb = malloc((size_t)count * w * h * 3);
    c->w = w, c->h = h, c->count = count;
  }
  if (c->rgb) memcpy(c->rgb + (size_t)index * w * h * 3, rgb, (size_t)w * h * 3);
  c->ready = index + 1;
  SDL_UnlockMutex(c->lock);
  if (index == 0) printf("decoding\n"), fflush(stdout);
  return c->rgb != NULL && !atomic_load(&c->quit);
}

static bool on_progress(mr_gen_stage stage, int done, int total, void *user) {
  clip *c = user;
  fprintf(stderr, "\r%-8s %3d/%-3d", mr_gen_stage_name(stage), done, total);
  return !atomic_load(&c->quit);
}

static int generate(void *user) {
  clip *c = user;
  mr_ctx *ctx = NULL;
  mr_gen *gen = NULL;
  mr_gen_result *r = NULL;
  mr_gen_callbacks cb = {.progress = on_progress, .frame = on_frame, .user = c};
  mr_status st = mr_ctx_new(NULL, &ctx);
  if (st == MR_OK) st = mr_gen_new(ctx, NULL, &gen);
  if (st == MR_OK) st = mr_gen_run(gen, &c->params, &cb, &r);
  if (st == MR_OK) c->fps = r->fps;
  else snprintf(c->error, sizeof c->error, "%s", ctx ? mr_ctx_last_error(ctx) : mr_status_str(st));
  mr_gen_result_free(r);
  mr_gen_free(gen);
  mr_ctx_free(ctx);
  atomic_store(&c->finished, st == MR_OK ? 1 : -1);
  return 0;
}

int main(int argc, char **argv) {
  clip c = {.params = mr_gen_params_default()};
  c.params.prompt = "a red circle moving right on a black background";
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) c.params.seed = argv[++i];
    else if (strcmp(argv[i], "--steps") == 0 && i + 1 < argc) c.params.steps = atoi(argv[++i]);
    else c.params.prompt = argv[i];
  }
  if (SDL_Init(SDL_INIT_VIDEO) != 0) {
    fprintf(stderr, "SDL: %s\n", SDL_GetError());
    return 1;
  }
  SDL_Window *win = SDL_CreateWindow("moonreel", SDL_WINDOWPOS_UNDEFINED, SDL_WINDOWPOS_UNDEFINED, 64 * SCALE,
                                     64 * SCALE, 0);
  SDL_Renderer *ren = win ? SDL_CreateRenderer(win, -1, 0) : NULL;
  if (ren == NULL) {
    fprintf(stderr, "SDL: %s\n", SDL_GetError());
    return 1;
  }
  c.lock = SDL_CreateMutex();
  SDL_Thread *worker = SDL_CreateThread(generate, "moonreel", &c);
  SDL_Texture *tex = NULL;
  int shown = -1, announced = 0;
  Uint64 start = 0;
  while (!atomic_load(&c.quit)) {
    for (SDL_Event e; SDL_PollEvent(&e);)
      if (e.type == SDL_QUIT || (e.type == SDL_KEYDOWN && e.key.keysym.sym == SDLK_ESCAPE)) atomic_store(&c.quit, true);
    int finished = atomic_load(&c.finished);
    if (finished < 0) break;
    SDL_LockMutex(c.lock);
    int frame = c.ready - 1; /* while decoding: the newest frame */
    if (finished > 0 && c.count > 0) {
      if (!announced) printf("playing %d frames\n", c.count), fflush(stdout), announced = 1, start = SDL_GetTicks64();
      frame = (int)((SDL_GetTicks64() - start) * (c.fps > 0 ? c.fps : 16) / 1000) % c.count;
    }
    if (frame >= 0 && frame != shown) {
      if (tex == NULL) {
        SDL_SetWindowSize(win, c.w * SCALE, c.h * SCALE);
        tex = SDL_CreateTexture(ren, SDL_PIXELFORMAT_RGB24, SDL_TEXTUREACCESS_STREAMING, c.w, c.h);
      }
      if (tex) SDL_UpdateTexture(tex, NULL, c.rgb + (size_t)frame * c.w * c.h * 3, c.w * 3);
      shown = frame;
    }
    SDL_UnlockMutex(c.lock);
    SDL_RenderClear(ren);
    if (tex) SDL_RenderCopy(ren, tex, NULL, NULL);
    SDL_RenderPresent(ren);
    SDL_Delay(10);
  }
  atomic_store(&c.quit, true);
  SDL_WaitThread(worker, NULL);
  if (atomic_load(&c.finished) < 0) fprintf(stderr, "\n%s\n", c.error);
  free(c.rgb);
  SDL_DestroyMutex(c.lock);
  if (tex) SDL_DestroyTexture(tex);
  SDL_DestroyRenderer(ren);
  SDL_DestroyWindow(win);
  SDL_Quit();
  return atomic_load(&c.finished) > 0 ? 0 : 1;
}
