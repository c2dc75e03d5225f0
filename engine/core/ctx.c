/* The context: owns the GPU state, the log and the last error. */
#include "core/ctx_impl.h"
#include "gpu/gpu.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

mr_ctx_opts mr_ctx_opts_default(void) {
  mr_ctx_opts o;
  memset(&o, 0, sizeof o);
  o.validation = -1;
  o.profile = -1;
  return o;
}

static void default_log(mr_log_level level, const char *msg, void *user) {
  (void)user;
  static const char *names[] = {"debug", "info", "warning", "error"};
  if (level >= MR_LOG_WARN) fprintf(stderr, "moonreel: %s: %s\n", names[level], msg);
}

mr_status mr_ctx_new(const mr_ctx_opts *opts, mr_ctx **out) {
  *out = NULL;
  mr_ctx_opts o = opts ? *opts : mr_ctx_opts_default();
  mr_ctx *ctx = calloc(1, sizeof *ctx);
  if (!ctx) return MR_ENOMEM;
  ctx->log = o.log ? o.log : default_log;
  ctx->log_user = o.log_user;
  atomic_init(&ctx->interrupt, 0);
  atomic_init(&ctx->validation_messages, 0);
  mr_status st = mr_gpu_new(ctx, &o, &ctx->gpu);
  if (st != MR_OK) {
    /* The message cannot outlive ctx; print it so a failed start is never silent. */
    ctx->log(MR_LOG_ERROR, ctx->last_error, ctx->log_user);
    free(ctx);
    return st;
  }
  *out = ctx;
  return MR_OK;
}

void mr_ctx_free(mr_ctx *ctx) {
  if (!ctx) return;
  mr_gpu_free_all(ctx->gpu);
  free(ctx);
}

const char *mr_ctx_last_error(const mr_ctx *ctx) { return ctx ? ctx->last_error : ""; }

mr_status mr_ctx_sync(mr_ctx *ctx) { return mr_gpu_sync(ctx); }

void mr_ctx_interrupt(mr_ctx *ctx) {
  if (ctx) atomic_store(&ctx->interrupt, 1);
}

bool mr_ctx_take_interrupt(mr_ctx *ctx) { return atomic_exchange(&ctx->interrupt, 0) != 0; }

uint64_t mr_ctx_validation_messages(const mr_ctx *ctx) {
  return atomic_load(&((mr_ctx *)ctx)->validation_messages);
}

size_t mr_ctx_profile_report(mr_ctx *ctx, char *buf, size_t cap) {
  return mr_gpu_profile_report(ctx->gpu, buf, cap);
}

/* Formats into a copy first: a message may quote the one it replaces
   (mr_ctx_last_error as an argument). */
static void set_error(mr_ctx *ctx, mr_status st, const char *fmt, va_list ap) {
  char msg[sizeof ctx->last_error];
  vsnprintf(msg, sizeof msg, fmt, ap);
  memcpy(ctx->last_error, msg, sizeof msg);
  ctx->last_status = st;
}

mr_status mr_error(mr_ctx *ctx, mr_status st, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  if (ctx) {
    set_error(ctx, st, fmt, ap);
  } else {
    fputs("moonreel: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
  }
  va_end(ap);
  return st;
}

mr_status mr_ctx_set_error(mr_ctx *ctx, mr_status st, const char *fmt, ...) {
  if (ctx == NULL) return st;
  va_list ap;
  va_start(ap, fmt);
  set_error(ctx, st, fmt ? fmt : "", ap);
  va_end(ap);
  return st;
}

mr_status mr_ctx_last_status(const mr_ctx *ctx) { return ctx ? ctx->last_status : MR_EINVAL; }

void mr_log(mr_ctx *ctx, mr_log_level level, const char *fmt, ...) {
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (ctx) ctx->log(level, msg, ctx->log_user);
  else default_log(level, msg, NULL);
}

void mr_assert_fail(const char *expr, const char *file, int line) {
  fprintf(stderr, "moonreel: internal error: %s (%s:%d)\n", expr, file, line);
  abort();
}
