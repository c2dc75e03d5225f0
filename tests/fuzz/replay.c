/* The replay program: runs a fuzz target's LLVMFuzzerTestOneInput on files
   and on every file of folders (sorted, not recursive), as libFuzzer would
   run one input, without libFuzzer. The ordinary build links each target
   with it, and ctest runs it on tests/fuzz/regressions/<target>/ and on the
   seed corpus, so an input that once crashed a target keeps being run. A
   path that does not exist fails the run (a renamed folder must not turn
   the test into one that runs nothing). */
#define _DEFAULT_SOURCE
#include "fuzz.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static long runs;

static int run_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    perror(path);
    return 1;
  }
  size_t cap = 1 << 16, n = 0;
  uint8_t *buf = malloc(cap);
  for (;;) {
    if (buf == NULL) {
      fclose(f);
      fprintf(stderr, "%s: out of memory\n", path);
      return 1;
    }
    n += fread(buf + n, 1, cap - n, f);
    if (n < cap) break;
    cap *= 2;
    uint8_t *b = realloc(buf, cap);
    if (b == NULL) free(buf);
    buf = b;
  }
  fclose(f);
  /* an exact-size copy, so a sanitizer sees a read past the input's end */
  uint8_t *input = malloc(n ? n : 1);
  if (input == NULL) {
    free(buf);
    return 1;
  }
  memcpy(input, buf, n);
  free(buf);
  fprintf(stderr, "replay %s (%zu bytes)\n", path, n);
  LLVMFuzzerTestOneInput(input, n);
  free(input);
  runs++;
  return 0;
}

static int name_cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int run_dir(const char *dir) {
  DIR *d = opendir(dir);
  if (d == NULL) {
    perror(dir);
    return 1;
  }
  char **names = NULL;
  size_t n = 0, cap = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue; /* ., .. and a README-free folder's dotfiles */
    if (n == cap) {
      cap = cap ? cap * 2 : 64;
      char **p = realloc(names, cap * sizeof *p);
      if (p == NULL) abort();
      names = p;
    }
    names[n++] = strdup(e->d_name);
  }
  closedir(d);
  qsort(names, n, sizeof *names, name_cmp);
  int bad = 0;
  for (size_t i = 0; i < n; i++) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    struct stat st;
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) bad |= run_file(path);
    free(names[i]);
  }
  free(names);
  return bad;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s FILE|DIR...\n", argv[0]);
    return 2;
  }
  LLVMFuzzerInitialize(&argc, &argv);
  int bad = 0;
  for (int i = 1; i < argc; i++) {
    struct stat st;
    if (stat(argv[i], &st) != 0) {
      perror(argv[i]);
      bad = 1;
    } else if (S_ISDIR(st.st_mode)) {
      bad |= run_dir(argv[i]);
    } else {
      bad |= run_file(argv[i]);
    }
  }
  printf("%s: %ld inputs run\n", argv[0], runs);
  return bad;
}
