/* What the fuzz targets (tests/fuzz/fuzz_*.c) share. Each target is one
   LLVMFuzzerTestOneInput over one parser of outside data, reached through the
   engine's own entry points. The same source builds two ways: with libFuzzer
   (clang, -DMOONREEL_FUZZ=ON, tests/fuzz/run.sh) and, in every ordinary build,
   as a replay program (replay.c) that feeds it the inputs kept under
   tests/fuzz/regressions/ and the seed corpus, so every crash ever found stays
   a test. */
#ifndef MR_FUZZ_H
#define MR_FUZZ_H

#include "moonreel.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A context without a device, for parsers that use their context for
   messages only: it costs no Vulkan instance per process, and no lavapipe
   thread shows up in leak reports. Its log is silent (a fuzzer's stderr is
   for findings). Made once; lives for the process. */
mr_ctx *mr_fuzz_host_ctx(void);
/* A real context (lavapipe here), for the targets whose parser feeds the
   device (LoRA). No validation layer and no pipeline cache on disk. Made
   once; exits the process when there is no device, since the target then
   cannot run at all. */
mr_ctx *mr_fuzz_device_ctx(void);
/* Forgets the context's last message, so a check can tell a refusal that
   says nothing from one that says why. */
void mr_fuzz_clear_error(mr_ctx *ctx);

/* The input as a file: most entry points take a path, and a memfd gives
   them one ("/proc/self/fd/N") without touching the disk. */
typedef struct mr_fuzz_file {
  int fd;
  char path[64];
} mr_fuzz_file;
void mr_fuzz_file_open(mr_fuzz_file *f, const void *data, size_t n);
void mr_fuzz_file_close(mr_fuzz_file *f);

/* A file of the source tree (the fixed model a target loads once). */
const char *mr_fuzz_source_path(const char *rel);

/* Sets an environment default unless the caller set it: the targets lower
   MOONREEL_MAX_PIXELS so the fuzzer spends its time on what a file says,
   not on decoding legal 64-megapixel pictures. */
void mr_fuzz_env_default(const char *name, const char *value);

/* An invariant of the engine's contract: a failed one aborts, which
   libFuzzer reports as a crash and the replay program as a failed test. */
#define MR_FUZZ_CHECK(c)                                                       \
  do {                                                                         \
    if (!(c)) mr_fuzz_fail(#c, __FILE__, __LINE__);                            \
  } while (0)
_Noreturn void mr_fuzz_fail(const char *expr, const char *file, int line);

/* A refusal (st != MR_OK) must say why, naming `name` (the file) when it is
   not NULL. Checks both. */
void mr_fuzz_check_refusal(mr_ctx *ctx, mr_status st, const char *name);

/* Opens path as a checkpoint (mr_weights_open) and, when it loads, walks
   what it promises: every entry's name, dtype and shape, its bytes readable
   and as many as its shape says, the table sorted and searchable, then the
   model detection that runs on names and shapes. Shared by the safetensors,
   .pth and pickle targets. */
void mr_fuzz_weights(mr_ctx *ctx, const char *path);

#endif
