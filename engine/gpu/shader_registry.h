/* The SPIR-V of every shaders/NAME.comp, embedded at build time. */
#ifndef MR_SHADER_REGISTRY_H
#define MR_SHADER_REGISTRY_H
#include <stddef.h>
#include <stdint.h>

typedef struct mr_shader_blob {
  const char *name;      /* file name without .comp */
  const uint32_t *words;
  size_t size;           /* bytes */
} mr_shader_blob;

/* Terminated by an entry with name == NULL. */
extern const mr_shader_blob mr_shader_blobs[];

#endif
