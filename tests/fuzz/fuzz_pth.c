/* PyTorch .pth archives: the zip directory (ZIP64 included, engine/io/zip.c),
   the data.pkl it holds, the storages and the views cut from them
   (engine/io/pth.c), through mr_weights_open. The seeds are whole small
   archives; the pickle inside has its own target (fuzz_pickle.c). */
#include "fuzz.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* mr_weights_open picks the format by the local-header magic; keeping it
     sends every mutation to the zip reader instead of the safetensors one,
     which has its own target. */
  uint8_t *copy = malloc(size ? size : 1);
  if (copy == NULL) return 0;
  memcpy(copy, data, size);
  if (size >= 4) memcpy(copy, "PK\x03\x04", 4);
  mr_fuzz_file f;
  mr_fuzz_file_open(&f, copy, size);
  free(copy);
  mr_fuzz_weights(mr_fuzz_host_ctx(), f.path);
  mr_fuzz_file_close(&f);
  return 0;
}
