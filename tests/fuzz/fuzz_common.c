/* Helpers of the fuzz targets (fuzz.h). */
#define _GNU_SOURCE /* memfd_create */
#include "fuzz.h"

#include "core/ctx_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static void silent_log(mr_log_level level, const char *msg, void *user) {
  (void)level;
  (void)msg;
  (void)user;
}

mr_ctx *mr_fuzz_host_ctx(void) {
  static mr_ctx *ctx;
  if (ctx == NULL) {
    /* The fields a context without a GPU needs: a log and an error buffer
       (core/ctx_impl.h); everything else stays zero, as mr_ctx_new leaves
       it before the device is made. */
    ctx = calloc(1, sizeof *ctx);
    if (ctx == NULL) abort();
    ctx->log = silent_log;
    atomic_init(&ctx->interrupt, 0);
    atomic_init(&ctx->validation_messages, 0);
  }
  return ctx;
}

static mr_ctx *device_ctx;

/* At exit the context goes with everything it holds, so LeakSanitizer's
   report at the end lists only what was really lost. */
static void device_ctx_free(void) {
  mr_ctx_free(device_ctx);
  device_ctx = NULL;
}

mr_ctx *mr_fuzz_device_ctx(void) {
  mr_ctx *ctx = device_ctx;
  if (ctx == NULL) {
    mr_ctx_opts o = mr_ctx_opts_default();
    o.validation = 0;
    o.profile = 0;
    o.cache_dir = "";
    o.log = silent_log;
    mr_status st = mr_ctx_new(&o, &ctx);
    if (st != MR_OK) {
      fprintf(stderr, "fuzz: no device context (%s); this target needs one\n", mr_status_name(st));
      exit(1);
    }
    device_ctx = ctx;
    atexit(device_ctx_free);
  }
  return ctx;
}

void mr_fuzz_clear_error(mr_ctx *ctx) { ctx->last_error[0] = '\0'; }

void mr_fuzz_file_open(mr_fuzz_file *f, const void *data, size_t n) {
  f->fd = memfd_create("fuzz-input", MFD_CLOEXEC);
  if (f->fd < 0) {
    perror("fuzz: memfd_create");
    abort();
  }
  const uint8_t *p = data;
  size_t done = 0;
  while (done < n) {
    ssize_t w = write(f->fd, p + done, n - done);
    if (w <= 0) {
      perror("fuzz: writing the input");
      abort();
    }
    done += (size_t)w;
  }
  snprintf(f->path, sizeof f->path, "/proc/self/fd/%d", f->fd);
}

void mr_fuzz_file_close(mr_fuzz_file *f) {
  if (f->fd >= 0) close(f->fd);
  f->fd = -1;
}

const char *mr_fuzz_source_path(const char *rel) {
  /* A few fixed files per target, each asked for once at start. */
  static char bufs[8][1024];
  static int next;
  char *b = bufs[next++ % 8];
  snprintf(b, sizeof bufs[0], "%s/%s", MR_SOURCE_DIR, rel);
  return b;
}

void mr_fuzz_env_default(const char *name, const char *value) {
  if (getenv(name) == NULL) setenv(name, value, 0);
}

_Noreturn void mr_fuzz_fail(const char *expr, const char *file, int line) {
  fprintf(stderr, "%s:%d: fuzz invariant failed: %s\n", file, line, expr);
  abort();
}

void mr_fuzz_check_refusal(mr_ctx *ctx, mr_status st, const char *name) {
  if (st == MR_OK) return;
  const char *msg = mr_ctx_last_error(ctx);
  /* MR_FUZZ_VERBOSE=1: each refusal's message, to see how far seeds get */
  static int verbose = -1;
  if (verbose < 0) verbose = getenv("MR_FUZZ_VERBOSE") != NULL;
  if (verbose) fprintf(stderr, "  refused (%s): %s\n", mr_status_name(st), msg);
  if (msg[0] == '\0') {
    fprintf(stderr, "fuzz: %s with no message\n", mr_status_name(st));
    abort();
  }
  if (name != NULL && strstr(msg, name) == NULL) {
    fprintf(stderr, "fuzz: a refusal that does not name the file '%s': %s\n", name, msg);
    abort();
  }
}

/* Elements times element size, or false when it does not fit in size_t. */
static bool shape_bytes(const mr_weight_info *e, size_t *out) {
  size_t n = mr_dtype_size(e->dtype);
  bool zero = false;
  for (int d = 0; d < e->ndim; d++) {
    if (e->shape[d] < 0) return false;
    if (e->shape[d] == 0) zero = true;
  }
  if (zero) {
    *out = 0;
    return true;
  }
  for (int d = 0; d < e->ndim; d++) {
    if ((uint64_t)e->shape[d] > SIZE_MAX / n) return false;
    n *= (size_t)e->shape[d];
  }
  *out = n;
  return true;
}

void mr_fuzz_weights(mr_ctx *ctx, const char *path) {
  mr_weights *w = NULL;
  mr_fuzz_clear_error(ctx);
  mr_status st = mr_weights_open(ctx, path, &w);
  mr_fuzz_check_refusal(ctx, st, path);
  if (st != MR_OK) {
    MR_FUZZ_CHECK(w == NULL);
    return;
  }
  int n = mr_weights_count(w);
  MR_FUZZ_CHECK(n >= 0);
  const char *prev = NULL;
  volatile uint8_t sink = 0;
  for (int i = 0; i < n; i++) {
    mr_weight_info e;
    MR_FUZZ_CHECK(mr_weights_get(w, i, &e) == MR_OK);
    MR_FUZZ_CHECK(e.name != NULL);
    MR_FUZZ_CHECK(e.dtype >= 0 && e.dtype < MR_DTYPE_COUNT);
    MR_FUZZ_CHECK(e.ndim >= 0 && e.ndim <= MR_WEIGHT_MAX_DIMS);
    size_t want;
    MR_FUZZ_CHECK(shape_bytes(&e, &want));
    MR_FUZZ_CHECK(e.nbytes == want);
    /* every byte it points at must be there: a sanitizer sees each read */
    const uint8_t *p = e.data;
    uint8_t x = 0;
    for (size_t k = 0; k < e.nbytes; k++) x ^= p[k];
    sink ^= x;
    /* sorted by name, no duplicates, each found by name */
    MR_FUZZ_CHECK(prev == NULL || strcmp(prev, e.name) < 0);
    MR_FUZZ_CHECK(mr_weights_find(w, e.name) == i);
    prev = e.name;
  }
  const char *meta = mr_weights_metadata(w);
  if (meta) sink ^= (uint8_t)strlen(meta);
  (void)sink;
  /* detection reads only names and shapes, whatever they claim */
  mr_model_info info;
  mr_fuzz_clear_error(ctx);
  st = mr_model_detect(ctx, w, NULL, &info);
  mr_fuzz_check_refusal(ctx, st, NULL);
  if (st == MR_OK) MR_FUZZ_CHECK(info.kind != MR_MODEL_UNKNOWN);
  mr_weights_free(w);
}
