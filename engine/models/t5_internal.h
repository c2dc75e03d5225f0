/* Internals of the umT5 encoder (t5.c) that the tests reach: the relative
   position buckets. Engine-internal. */
#ifndef MR_T5_INTERNAL_H
#define MR_T5_INTERNAL_H

#include "core/core.h"

/* umT5's max_distance: relative distances of 128 and more share the last
   bucket of their direction. A constant of the model, not stored in the
   checkpoint (HF's relative_attention_max_distance, 128 for every T5/umT5). */
#define MR_T5_MAX_DISTANCE 128

/* The bidirectional relative-position bucket of rel = key_pos - query_pos, as
   umT5 computes it (docs/wan-architecture.md §1.2): half the buckets per direction
   (keys after the query in the upper half), exact buckets for |rel| below a
   quarter of num_buckets, logarithmic ones up to max_distance. The log is
   taken in f32 as the reference does, so the bucket edges match. */
int mr_t5_rel_bucket(int rel, int num_buckets, int max_distance);

/* The [n, n] table of buckets for a sequence of n tokens: out[q * n + k] =
   bucket(k - q). out holds n * n entries. */
void mr_t5_bucket_table(int n, int num_buckets, int max_distance, int32_t *out);

#endif
