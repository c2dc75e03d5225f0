/* Internal helpers every engine module uses: errors, logging, interrupts.
   Not part of the public API. */
#ifndef MR_CORE_H
#define MR_CORE_H

#include "moonreel.h"

#include <stdarg.h>

#if defined(__GNUC__)
#define MR_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define MR_PRINTF(f, a)
#endif

/* Records a formatted message as ctx's last error and returns st, so that
   `return mr_error(ctx, MR_EINVAL, "...")` reads as one step. ctx may be NULL
   (the message then goes to stderr). */
mr_status mr_error(mr_ctx *ctx, mr_status st, const char *fmt, ...) MR_PRINTF(3, 4);
void mr_log(mr_ctx *ctx, mr_log_level level, const char *fmt, ...) MR_PRINTF(3, 4);

/* True once after mr_ctx_interrupt; clears the flag. Long calls poll this. */
bool mr_ctx_take_interrupt(mr_ctx *ctx);

/* Internal invariants only: never for anything a caller can cause. */
#define MR_ASSERT(c)                                                                   \
  do {                                                                                 \
    if (!(c)) mr_assert_fail(#c, __FILE__, __LINE__);                                  \
  } while (0)
void mr_assert_fail(const char *expr, const char *file, int line);


/* ------------------------------------------------------------------ files */
/* Messages name path, the file the caller asked for (never the temporary). */

/* errno of a failed open/stat as a status (ENOENT, ENOTDIR -> MR_ENOTFOUND,
   else MR_EIO). */
mr_status mr_file_errno_status(int err);

/* Writes n bytes to fd (EINTR retried); false with errno set. */
bool mr_file_write_all(int fd, const void *p, size_t n);

/* A temporary name beside path, ".<base>.tmp-<pid>" (then "-2", "-3", ... on
   attempts > 1). New malloc'd string, or NULL when out of memory. */
char *mr_file_temp_name(const char *path, int attempt);

/* Creates a fresh temporary file beside path (O_EXCL): *tmp is its malloc'd
   name, *fd the open descriptor. */
mr_status mr_file_temp_create(mr_ctx *ctx, const char *path, char **tmp, int *fd);

/* Syncs and closes fd, renames tmp to path and syncs the folder. On failure
   tmp is removed. */
mr_status mr_file_commit(mr_ctx *ctx, int fd, const char *tmp, const char *path);

/* Closes fd and removes tmp, for a write that failed; errno is kept. */
void mr_file_discard(int fd, const char *tmp);

/* mr_file_write_atomic (mr_file_temp_create, then mr_file_commit) is public: moonreel.h. */

#endif
