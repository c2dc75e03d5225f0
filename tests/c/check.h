/* CHECK and REQUIRE: plain checks that report file:line and count failures
   in mr_test_failures (defined by testutil.c, or by a test that links only
   the installed libraries, as tests/gen/test_gen.c does). */
#ifndef MR_CHECK_H
#define MR_CHECK_H

#include <stdio.h>

extern int mr_test_failures;

#define CHECK(c)                                                                   \
  do {                                                                             \
    if (!(c)) {                                                                    \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #c);        \
      mr_test_failures++;                                                          \
    }                                                                              \
  } while (0)

/* A CHECK that also leaves the (void) test function when it fails. */
#define REQUIRE(c)                                                                 \
  do {                                                                             \
    if (!(c)) {                                                                    \
      fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #c);      \
      mr_test_failures++;                                                          \
      return;                                                                      \
    }                                                                              \
  } while (0)

#endif
