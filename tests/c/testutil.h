/* Minimal test helpers: no framework, plain checks that report file:line. */
#ifndef MR_TESTUTIL_H
#define MR_TESTUTIL_H

#include "moonreel.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "check.h"

/* Checks an mr_status and prints the context's message when it is not MR_OK. */
#define CHECK_OK(ctx, expr)                                                        \
  do {                                                                             \
    mr_status st_ = (expr);                                                        \
    if (st_ != MR_OK) {                                                            \
      fprintf(stderr, "%s:%d: %s -> %s: %s\n", __FILE__, __LINE__, #expr,          \
              mr_status_name(st_), mr_ctx_last_error(ctx));                        \
      mr_test_failures++;                                                          \
    }                                                                              \
  } while (0)

/* Ends a test program: prints a summary and returns the exit code. */
int mr_test_finish(const char *name);

/* A context on the default device (validation per the environment); exits on failure. */
mr_ctx *mr_test_ctx(void);

/* Deterministic random numbers (xorshift), for reproducible inputs. */
typedef struct mr_rng { uint64_t s; } mr_rng;
float mr_rng_uniform(mr_rng *r, float lo, float hi);
void mr_rng_fill(mr_rng *r, float *x, size_t n, float lo, float hi);

/* ‖a−b‖ / ‖b‖ (or ‖a−b‖ when ‖b‖ is 0). */
double mr_rel_l2(const float *a, const float *b, size_t n);

/* Rounds host values through a storage dtype, so CPU references see what the device stores. */
void mr_test_round(mr_dtype dt, float *x, size_t n);

/* The whole file in a new malloc'd buffer with a NUL after its n bytes (so
   text can be used as a string), or NULL when it cannot be read. n may be NULL. */
void *mr_test_read_bytes(const char *path, size_t *n);
/* mr_test_read_bytes without the size. */
char *mr_test_read_text(const char *path);
/* Writes n bytes to path (created or truncated); exits when it cannot, since
   the test's input is then missing. */
void mr_test_write_bytes(const char *path, const void *p, size_t n);

/* Writes a safetensors file listing `tensors` (a cJSON object: name -> shape
   array) packed in order as dtype ("F32", "BF16", ...; elem_size bytes each),
   and extends the file over its data without writing any: a sparse file of a
   checkpoint's exact names and shapes. Returns the data bytes; *params (may be
   NULL) gets the element count. */
struct cJSON;
uint64_t mr_test_write_sparse(const char *path, const struct cJSON *tensors, const char *dtype, int elem_size,
                              int64_t *params);

/* A component's parameter table against the checkpoint it was loaded from
   (official names): every entry is a tensor of the checkpoint with its
   shape, loaded and found by name, and there are n of them (-1: every tensor
   of the checkpoint, so none is missed and none listed twice); `probe` is
   one name the table must have. */
struct mr_params;
void mr_test_check_params(mr_ctx *ctx, const struct mr_params *p, const mr_weights *w, int n, const char *probe);

/* A released checkpoint at its real size: the entry `name` of
   dir/wan/manifests.json written as a sparse file (mr_test_write_sparse) at
   a new temporary path, stored as dtype. Returns the entry (its "config"
   and "tensors"), owned by *root (cJSON_Delete it; unlink path), or NULL
   after a failed CHECK. *bytes (may be NULL) gets the data bytes. */
const struct cJSON *mr_test_real_checkpoint(const char *dir, const char *name, const char *dtype, int elem_size,
                                            char *path, size_t cap, struct cJSON **root, uint64_t *bytes);

/* Reads a whole tensor as f32 into a new malloc'd buffer. */
float *mr_test_read(mr_ctx *ctx, mr_tensor *t);

#endif
