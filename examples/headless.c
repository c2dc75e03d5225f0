/* A headless host: the default model, one clip, progress on stderr; Ctrl-C cancels. */
#include <moonreel_gen.h>
#include <signal.h>
#include <stdio.h>

static mr_ctx *ctx;
static void on_sigint(int sig) { mr_ctx_interrupt(ctx); }
static bool progress(mr_gen_stage stage, int done, int total, void *user) {
  fprintf(stderr, "\r%-8s %3d/%-3d", mr_gen_stage_name(stage), done, total);
  return true;
}

int main(int argc, char **argv) {
  mr_gen *gen = NULL;
  mr_gen_result *r = NULL;
  mr_gen_params p = mr_gen_params_default();
  p.prompt = argc > 1 ? argv[1] : "a red circle moving right on a black background";
  p.out = argc > 2 ? argv[2] : "clip.mp4";
  mr_gen_callbacks cb = {.progress = progress};
  if (mr_ctx_new(NULL, &ctx) != MR_OK) return 1;
  signal(SIGINT, on_sigint);
  mr_status st = mr_gen_new(ctx, NULL, &gen); /* the default model */
  if (st == MR_OK) st = mr_gen_run(gen, &p, &cb, &r);
  if (st == MR_OK) printf("\n%s, seed %s\n", r->out, r->seed);
  else fprintf(stderr, "\n%s\n", mr_ctx_last_error(ctx));
  mr_gen_result_free(r);
  mr_gen_free(gen);
  mr_ctx_free(ctx);
  return st == MR_OK ? 0 : st == MR_ECANCELED ? 130 : 1;
}
