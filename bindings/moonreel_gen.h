/*
 * moonreel_gen.h — one-call video generation from C.
 *
 *   mr_ctx *ctx;
 *   mr_gen *gen;
 *   if (mr_ctx_new(NULL, &ctx) != MR_OK) return 1;
 *   if (mr_gen_new(ctx, NULL, &gen) != MR_OK) { puts(mr_ctx_last_error(ctx)); return 1; }  // the default model
 *   mr_gen_params p = mr_gen_params_default();
 *   p.prompt = "a red circle moving right on a black background";
 *   p.out = "circle.mp4";
 *   mr_gen_result *r;
 *   if (mr_gen_run(gen, &p, NULL, &r) == MR_OK) printf("%s, seed %s\n", r->out, r->seed);
 *   mr_gen_result_free(r);
 *   mr_gen_free(gen);
 *   mr_ctx_free(ctx);
 *
 * A generator runs the same recipe modes as the CLI and the Lua module
 * (recipes/t2v.lua, ti2v.lua, flf2v.lua, r2v.lua, or a mode file of your own)
 * in a private Lua state on the context you give it, with the model pack
 * loaded once for every run. It keeps no process-global state: generators on
 * different contexts run at once in different threads, each with its own
 * callbacks. One generator (and its context) is used by one thread at a time;
 * mr_ctx_interrupt(ctx) is the one call meant for another thread.
 *
 * Errors: every call that fails returns its status and leaves one line in
 * mr_ctx_last_error(ctx) naming the parameter, field or file.
 *
 * Link: pkg-config --cflags --libs moonreel (libmoonreel_gen.so, on
 * libmoonreel.so and libmoonreel_lua.so), or CMake's moonreel::gen.
 */
#ifndef MOONREEL_GEN_H
#define MOONREEL_GEN_H

#include <stdbool.h>
#include <stdint.h>

#include "moonreel.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

typedef struct mr_gen mr_gen;

typedef struct mr_gen_opts {
  const char *model;   /* model pack folder; NULL = $MOONREEL_MODEL, else the installed default model */
  const char *weights; /* weight storage "f32", "f16" or "bf16"; NULL = f32 on a CPU device, else bf16 */
  const char *recipes; /* a folder searched first for recipe modes; NULL = none ($MOONREEL_RECIPES and
                          the installed recipes are searched as for the Lua module) */
} mr_gen_opts;

mr_gen_opts mr_gen_opts_default(void);

/* Loads the pack on ctx (text encoder, DiT, VAE). ctx is borrowed: it must
   outlive the generator, which never frees it. opts may be NULL. */
mr_status mr_gen_new(mr_ctx *ctx, const mr_gen_opts *opts, mr_gen **out);
void mr_gen_free(mr_gen *gen);
/* The pack's description as JSON (name, model type, sizes, defaults); borrowed, lives with gen. */
const char *mr_gen_model_json(const mr_gen *gen);

/* The stages a run goes through, in order (image: the mode's conditioning,
   encoding its images and references; instant for t2v). */
typedef enum mr_gen_stage {
  MR_GEN_TEXT,
  MR_GEN_IMAGE,
  MR_GEN_DENOISE,
  MR_GEN_DECODE,
  MR_GEN_WRITE,
} mr_gen_stage;

/* "text", "image", "denoise", "decode", "write". */
const char *mr_gen_stage_name(mr_gen_stage stage);

/* Called on the thread that runs mr_gen_run. Returning false cancels the run
   (MR_ECANCELED, no file left behind). Any callback may be NULL. Pixel
   buffers are packed RGB8 (stride width * 3), borrowed for the call. */
typedef struct mr_gen_callbacks {
  /* Each stage starts with done = 0 and ends with done = total: text encodings,
     1 conditioning, sampling steps, decoded latent frames, 1 write. */
  bool (*progress)(mr_gen_stage stage, int done, int total, void *user);
  /* After each sampling step: the clean video the step predicts, projected
     from the latent (frames x height x width at latent resolution, one
     buffer of frames * height * width * 3 bytes). Costs a device read per step. */
  bool (*preview)(int step, int steps, const uint8_t *rgb, int frames, int width, int height, void *user);
  /* Each decoded video frame, in order, as the VAE finishes it (before the
     file is written); count is the video's frame count. */
  bool (*frame)(int index, int count, const uint8_t *rgb, int width, int height, void *user);
  void *user;
} mr_gen_callbacks;

/* What to generate. Strings are borrowed for the call; 0 / NULL = the pack's
   default (or the mode's). Any recipe option the struct lacks goes in
   options_json (e.g. {"sampler": "euler", "lora": ["fx.safetensors:0.8"],
   "cfg_img": 5}); its keys are the Lua option names (docs/recipes.md). */
typedef struct mr_gen_params {
  const char *mode;         /* "t2v" (default), "ti2v", "flf2v", "r2v", or a path to a mode file *.lua */
  const char *prompt;       /* required unless the pack has a sample prompt */
  const char *negative;
  const char *image;        /* first frame (ti2v, flf2v): PNG, JPEG or WebP */
  const char *last_image;   /* last frame (flf2v) */
  const char *const *refs;  /* r2v references, "FILE" or "FILE:ROLE", n_refs of them */
  int n_refs;
  int width, height, frames, steps;
  float cfg, shift;         /* 0 = the pack's */
  const char *seed;         /* decimal 0 .. 2^64-1; NULL = a fresh random seed (returned in the result) */
  double fps;
  const char *out;          /* .mp4, .webp or a PNG pattern, written atomically with its .json sidecar;
                               NULL = no file (frames reach the frame callback only) */
  const char *options_json; /* a JSON object of further recipe options, or NULL */
} mr_gen_params;

mr_gen_params mr_gen_params_default(void);

/* Owned by the caller: free with mr_gen_result_free. Strings are NUL-terminated. */
typedef struct mr_gen_result {
  char *out;          /* the file written, NULL when params.out was NULL */
  char *sidecar;      /* its settings file (out + ".json"), NULL when none was written */
  char *seed;         /* the seed used, decimal (reproduces the run) */
  char *plan_json;    /* every parameter of the run as JSON (the sidecar's "params") */
  int frames, width, height;
  double fps;
  double seconds;     /* wall time of the run */
} mr_gen_result;

/* Runs one generation. cb may be NULL. On failure *out is NULL, the status
   says why (MR_ECANCELED when a callback returned false or mr_ctx_interrupt
   was called; MR_EINVAL for a bad parameter, named in the message) and no
   file is left under out's name. */
mr_status mr_gen_run(mr_gen *gen, const mr_gen_params *params, const mr_gen_callbacks *cb, mr_gen_result **out);
void mr_gen_result_free(mr_gen_result *result);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif
#endif /* MOONREEL_GEN_H */
