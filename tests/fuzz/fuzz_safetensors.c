/* safetensors files: the 8-byte length, the JSON header, the data ranges
   (engine/io/safetensors.c), through mr_weights_open as a user's file
   reaches it, then everything the loaded table promises (mr_fuzz_weights). */
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  mr_fuzz_file f;
  mr_fuzz_file_open(&f, data, size);
  mr_fuzz_weights(mr_fuzz_host_ctx(), f.path);
  mr_fuzz_file_close(&f);
  return 0;
}
