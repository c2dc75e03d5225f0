/* The fields of mr_ctx, shared by the engine's own files only. */
#ifndef MR_CTX_IMPL_H
#define MR_CTX_IMPL_H

#include "core/core.h"

#include <stdatomic.h>

typedef struct mr_gpu mr_gpu;

struct mr_ctx {
  mr_gpu *gpu;
  mr_log_fn log;
  void *log_user;
  atomic_int interrupt;             /* set from other threads or a signal handler */
  atomic_uint_fast64_t validation_messages;
  bool validation_strict;           /* a validation message aborts (test suites) */
  char last_error[2048];
  mr_status last_status;            /* of the failure last_error describes */
};

#endif
