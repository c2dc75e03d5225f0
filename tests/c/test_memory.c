/* Device memory in stream order: freed bytes serve the next op at once, so a
   long chain of ops holds what is live, not what was ever allocated; the
   budget is respected and named; trimming and fault injection leave a
   context that still computes. */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

#define MiB (1024.0 * 1024.0)

static mr_tensor *filled(mr_ctx *ctx, int64_t n, float v) {
  mr_tensor *t = NULL;
  CHECK_OK(ctx, mr_tensor_new(ctx, MR_F32, 1, &n, &t));
  if (t) CHECK_OK(ctx, mr_tensor_fill(t, v));
  return t;
}

/* t's first element (read through a one-element view). */
static float first_value(mr_ctx *ctx, mr_tensor *t) {
  mr_tensor *v = NULL;
  float x = -1e30f;
  CHECK_OK(ctx, mr_tensor_slice(t, 0, 0, 1, 1, &v));
  if (v) CHECK_OK(ctx, mr_tensor_read(v, MR_F32, &x, 1));
  mr_tensor_free(v);
  return x;
}

/* x <- x + y, n times, freeing each old x: returns the final x. */
static mr_tensor *add_chain(mr_ctx *ctx, mr_tensor *x, mr_tensor *y, int n) {
  for (int i = 0; i < n && x; i++) {
    mr_tensor *next = NULL;
    CHECK_OK(ctx, mr_op_binary(MR_BINARY_ADD, x, y, &next));
    mr_tensor_free(x);
    x = next;
  }
  return x;
}

static void print_stats(const char *what, const mr_memory_stats *m) {
  printf("%-28s live %8.1f MiB  held %8.1f MiB  peak live %8.1f MiB  peak held %8.1f MiB  blocks %d  "
         "vkAllocateMemory %llu\n",
         what, m->live_bytes / MiB, m->held_bytes / MiB, m->peak_live_bytes / MiB, m->peak_held_bytes / MiB, m->blocks,
         (unsigned long long)m->device_allocations);
}

/* The case: 600 adds with 2 MiB tensors held 512 MiB when frees
   waited for the fence. Now the peak held is within one small block of the
   peak live. Run for a small (shared-block) and a large (own-block) size. */
static void test_chain(mr_ctx *ctx, int64_t n, int steps, const char *what) {
  CHECK_OK(ctx, mr_ctx_memory_trim(ctx));
  mr_ctx_memory_reset_peak(ctx);
  mr_memory_stats m0, m;
  mr_ctx_memory_stats(ctx, &m0);
  mr_tensor *y = filled(ctx, n, 0.5f);
  mr_tensor *x = add_chain(ctx, filled(ctx, n, 1.0f), y, steps);
  REQUIRE(x != NULL);
  float first = first_value(ctx, x);
  mr_ctx_memory_stats(ctx, &m);
  print_stats(what, &m);
  CHECK(first == 1.0f + 0.5f * (float)steps);
  uint64_t bytes = (uint64_t)n * 4;
  /* x, y and the sum being made: three tensors live at the peak */
  CHECK(m.peak_live_bytes - m0.live_bytes <= 3 * ((bytes + 255) / 256 * 256));
  /* slack: one small block (4 MiB) or the MiB rounding of three large blocks */
  CHECK(m.peak_held_bytes <= m.peak_live_bytes + (uint64_t)(4 * MiB));
  CHECK(m.device_allocations - m0.device_allocations <= 3);
  mr_tensor_free(x);
  mr_tensor_free(y);
  /* freed memory stays held for reuse until trimmed */
  CHECK_OK(ctx, mr_ctx_memory_trim(ctx));
  mr_ctx_memory_stats(ctx, &m);
  CHECK(m.held_bytes == m0.live_bytes && m.live_bytes == m0.live_bytes);
}

/* A freed tensor's bytes are taken by the next allocation while recorded
   work still reads them: the stream must order the new writes after the
   old reads (write-after-read through reuse). */
static void test_reuse_ordering(mr_ctx *ctx) {
  const int64_t n = 4099;
  for (int round = 0; round < 20; round++) {
    mr_tensor *a = filled(ctx, n, (float)round);
    mr_tensor *b = NULL;
    CHECK_OK(ctx, mr_op_scale(a, 2.0f, 0.0f, &b)); /* reads a */
    mr_tensor_free(a);                              /* a's bytes are free now */
    mr_tensor *c = filled(ctx, n, -7.0f);           /* most likely in a's bytes: writes them */
    mr_tensor *d = NULL;
    CHECK_OK(ctx, mr_op_binary(MR_BINARY_ADD, b, c, &d));
    float y[4099];
    CHECK_OK(ctx, mr_tensor_read(d, MR_F32, y, (size_t)n));
    CHECK(y[0] == 2.0f * round - 7.0f && y[n - 1] == 2.0f * round - 7.0f);
    mr_tensor_free(b);
    mr_tensor_free(c);
    mr_tensor_free(d);
  }
}

/* A budget from the environment: work that fits runs (reusing memory), an
   allocation past it fails with a message naming the budget, and the context
   goes on working. A budget that does not parse is named at creation. */
static void test_budget(void) {
  setenv("MOONREEL_DEVICE_BUDGET", "nonsense", 1);
  mr_ctx *bad = NULL;
  mr_status st = mr_ctx_new(NULL, &bad);
  CHECK(st == MR_EINVAL && bad == NULL);

  setenv("MOONREEL_DEVICE_BUDGET", "12M", 1);
  mr_ctx *ctx = mr_test_ctx();
  unsetenv("MOONREEL_DEVICE_BUDGET");
  mr_memory_stats m;
  mr_ctx_memory_stats(ctx, &m);
  CHECK(m.budget_bytes == (uint64_t)(12 * MiB));
  CHECK(strcmp(m.budget_source, "MOONREEL_DEVICE_BUDGET") == 0);
  /* 200 adds of 2 MiB tensors under 12 MiB: only possible with reuse */
  const int64_t n = 512 * 1024;
  mr_tensor *y = filled(ctx, n, 1.0f);
  mr_tensor *x = add_chain(ctx, filled(ctx, n, 0.0f), y, 200);
  CHECK(x && first_value(ctx, x) == 200.0f);
  mr_ctx_memory_stats(ctx, &m);
  CHECK(m.peak_held_bytes <= m.budget_bytes);
  /* 16 MiB does not fit next to what is held */
  int64_t big = 4 * 1024 * 1024;
  mr_tensor *t = NULL;
  st = mr_tensor_new(ctx, MR_F32, 1, &big, &t);
  CHECK(st == MR_EDEVMEM && t == NULL);
  CHECK(strstr(mr_ctx_last_error(ctx), "budget 12.0 MiB (MOONREEL_DEVICE_BUDGET)") != NULL);
  mr_tensor_free(x);
  /* with x gone, unused blocks are given back and 8 MiB fits */
  int64_t mid = 2 * 1024 * 1024;
  CHECK_OK(ctx, mr_tensor_new(ctx, MR_F32, 1, &mid, &t));
  mr_tensor_free(t);
  mr_tensor_free(y);
  CHECK(mr_ctx_validation_messages(ctx) == 0);
  mr_ctx_free(ctx);
}

/* The injection switch: the chosen allocation fails cleanly, nothing leaks,
   and the same context computes afterwards. */
static void test_fail_at(mr_ctx *ctx) {
  CHECK_OK(ctx, mr_ctx_memory_trim(ctx));
  mr_memory_stats m0, m;
  mr_ctx_memory_stats(ctx, &m0);
  mr_ctx_memory_fail_at(ctx, 2);
  int64_t n = 8 * 1024 * 1024; /* 32 MiB: each its own block */
  mr_tensor *a = NULL, *b = NULL;
  CHECK_OK(ctx, mr_tensor_new(ctx, MR_F32, 1, &n, &a));
  mr_status st = mr_tensor_new(ctx, MR_F32, 1, &n, &b);
  CHECK(st == MR_EDEVMEM && b == NULL);
  CHECK(strstr(mr_ctx_last_error(ctx), "injected") != NULL);
  mr_ctx_memory_fail_at(ctx, 0);
  mr_tensor *c = NULL;
  CHECK_OK(ctx, mr_op_scale(a, 3.0f, 1.0f, &c));
  CHECK(c && first_value(ctx, c) == 1.0f);
  mr_tensor_free(a);
  mr_tensor_free(c);
  CHECK_OK(ctx, mr_ctx_memory_trim(ctx));
  mr_ctx_memory_stats(ctx, &m);
  CHECK(m.live_bytes == m0.live_bytes && m.held_bytes == m0.held_bytes);
}

int main(void) {
  mr_ctx *ctx = mr_test_ctx();
  mr_memory_stats m;
  mr_ctx_memory_stats(ctx, &m);
  printf("budget %.1f MiB (%s)\n", m.budget_bytes / MiB, m.budget_source);
  CHECK(m.budget_bytes > 0 && m.budget_source != NULL);
  test_chain(ctx, 512 * 1024, 600, "600 adds of 2 MiB");
  test_chain(ctx, 6 * 1024 * 1024, 60, "60 adds of 24 MiB");
  test_reuse_ordering(ctx);
  test_fail_at(ctx);
  CHECK(mr_ctx_validation_messages(ctx) == 0);
  mr_ctx_free(ctx);
  test_budget();
  return mr_test_finish("test_memory");
}
