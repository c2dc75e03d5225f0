/* The pickle machine (engine/io/pickle.c) and the state-dict walk after it
   (engine/io/pth.c): the input is the data.pkl of a .pth archive that this
   target wraps in a well-formed zip with storages "0".."15" of 1 KiB each,
   so every mutation reaches the pickle instead of breaking the zip first. */
#include "fuzz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_STORAGES 16
#define STORAGE_BYTES 1024

typedef struct zbuf {
  uint8_t *p;
  size_t n, cap;
} zbuf;

static void zput(zbuf *b, const void *p, size_t n) {
  if (b->n + n > b->cap) {
    size_t cap = (b->n + n) * 2;
    uint8_t *q = realloc(b->p, cap);
    if (q == NULL) abort();
    b->p = q;
    b->cap = cap;
  }
  memcpy(b->p + b->n, p, n);
  b->n += n;
}

static void zle(zbuf *b, uint64_t v, int bytes) {
  uint8_t t[8];
  for (int i = 0; i < bytes; i++) t[i] = (uint8_t)(v >> (8 * i));
  zput(b, t, (size_t)bytes);
}

typedef struct zentry {
  char name[64];
  const uint8_t *data;
  size_t n;
  size_t local; /* offset of its local header */
} zentry;

/* A stored zip of the entries (no CRCs: the reader does not check them,
   and torch's own reader neither). */
static void zip_build(zbuf *b, zentry *e, int n) {
  for (int i = 0; i < n; i++) {
    size_t nl = strlen(e[i].name);
    e[i].local = b->n;
    zle(b, 0x04034b50u, 4);
    zle(b, 20, 2); /* version */
    zle(b, 0, 2);  /* flags */
    zle(b, 0, 2);  /* stored */
    zle(b, 0, 4);  /* time, date */
    zle(b, 0, 4);  /* crc */
    zle(b, e[i].n, 4);
    zle(b, e[i].n, 4);
    zle(b, nl, 2);
    zle(b, 0, 2);
    zput(b, e[i].name, nl);
    zput(b, e[i].data, e[i].n);
  }
  size_t cd = b->n;
  for (int i = 0; i < n; i++) {
    size_t nl = strlen(e[i].name);
    zle(b, 0x02014b50u, 4);
    zle(b, 20, 2);
    zle(b, 20, 2);
    zle(b, 0, 2);
    zle(b, 0, 2);
    zle(b, 0, 4);
    zle(b, 0, 4);
    zle(b, e[i].n, 4);
    zle(b, e[i].n, 4);
    zle(b, nl, 2);
    zle(b, 0, 2); /* extra */
    zle(b, 0, 2); /* comment */
    zle(b, 0, 2); /* disk */
    zle(b, 0, 2); /* internal attributes */
    zle(b, 0, 4); /* external attributes */
    zle(b, e[i].local, 4);
    zput(b, e[i].name, nl);
  }
  size_t cd_size = b->n - cd;
  zle(b, 0x06054b50u, 4);
  zle(b, 0, 4);
  zle(b, (uint64_t)n, 2);
  zle(b, (uint64_t)n, 2);
  zle(b, cd_size, 4);
  zle(b, cd, 4);
  zle(b, 0, 2);
}

static uint8_t storage[STORAGE_BYTES];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  /* small finite values of every width: bytes 0..15 repeating */
  for (size_t i = 0; i < sizeof storage; i++) storage[i] = (uint8_t)(i % 16);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  zentry e[N_STORAGES + 2];
  int n = 0;
  snprintf(e[n].name, sizeof e[n].name, "archive/data.pkl");
  e[n].data = data;
  e[n++].n = size;
  snprintf(e[n].name, sizeof e[n].name, "archive/byteorder");
  e[n].data = (const uint8_t *)"little";
  e[n++].n = 6;
  for (int i = 0; i < N_STORAGES; i++) {
    snprintf(e[n].name, sizeof e[n].name, "archive/data/%d", i);
    e[n].data = storage;
    e[n++].n = sizeof storage;
  }
  zbuf b = {0};
  zip_build(&b, e, n);
  mr_fuzz_file f;
  mr_fuzz_file_open(&f, b.p, b.n);
  free(b.p);
  mr_fuzz_weights(mr_fuzz_host_ctx(), f.path);
  mr_fuzz_file_close(&f);
  return 0;
}
