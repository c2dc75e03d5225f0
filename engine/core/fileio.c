/* Files every writer shares: errno as a status, full writes, and atomic
   replacement (a temporary file beside the destination, fsync, rename, folder
   fsync), so a reader never sees half a file. */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE /* kill */
#include "core/core.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

mr_status mr_file_errno_status(int err) { return err == ENOENT || err == ENOTDIR ? MR_ENOTFOUND : MR_EIO; }

bool mr_file_write_all(int fd, const void *buf, size_t n) {
  const uint8_t *p = buf;
  while (n > 0) {
    ssize_t k = write(fd, p, n);
    if (k < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += k;
    n -= (size_t)k;
  }
  return true;
}

char *mr_file_temp_name(const char *path, int attempt) {
  size_t len = strlen(path);
  while (len > 1 && path[len - 1] == '/') len--; /* "out/" names the folder "out" */
  size_t cut = len;
  while (cut > 0 && path[cut - 1] != '/') cut--;
  size_t cap = len + 64;
  char *s = malloc(cap);
  if (s == NULL) return NULL;
  int k = snprintf(s, cap, "%.*s.%.*s.tmp-%ld", (int)cut, path, (int)(len - cut), path + cut, (long)getpid());
  if (attempt > 1) snprintf(s + k, cap - (size_t)k, "-%d", attempt);
  return s;
}

/* Removes the temporaries a killed run left for path: ".<name>.tmp-<pid>"
   (or "-<n>" after it) whose process no longer exists. A live process's
   are left alone, so two runs writing beside each other never collide. */
static void remove_stale_temps(const char *path) {
  size_t len = strlen(path);
  while (len > 1 && path[len - 1] == '/') len--;
  size_t cut = len;
  while (cut > 0 && path[cut - 1] != '/') cut--;
  char dir[4096], prefix[1024];
  if (cut >= sizeof dir || len - cut + 8 >= sizeof prefix) return;
  snprintf(dir, sizeof dir, "%.*s", (int)(cut ? cut : 1), cut ? path : ".");
  int plen = snprintf(prefix, sizeof prefix, ".%.*s.tmp-", (int)(len - cut), path + cut);
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (strncmp(e->d_name, prefix, (size_t)plen) != 0) continue;
    char *end;
    long pid = strtol(e->d_name + plen, &end, 10);
    if (end == e->d_name + plen || (*end && *end != '-') || pid <= 0) continue;
    if (pid == (long)getpid() || kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
    char full[4096 + 256];
    snprintf(full, sizeof full, "%s/%s", dir, e->d_name);
    unlink(full);
  }
  closedir(d);
}

mr_status mr_file_temp_create(mr_ctx *ctx, const char *path, char **tmp, int *fd) {
  *tmp = NULL;
  *fd = -1;
  remove_stale_temps(path);
  for (int attempt = 1; attempt <= 100; attempt++) {
    char *name = mr_file_temp_name(path, attempt);
    if (name == NULL) return mr_error(ctx, MR_ENOMEM, "'%s': out of memory", path);
    int f = open(name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (f >= 0) {
      *tmp = name;
      *fd = f;
      return MR_OK;
    }
    int e = errno;
    free(name);
    if (e != EEXIST) return mr_error(ctx, mr_file_errno_status(e), "cannot create '%s': %s", path, strerror(e));
  }
  return mr_error(ctx, MR_EIO, "cannot create '%s': 100 temporary names beside it are taken", path);
}

/* Makes a rename durable; failures here lose nothing, so they are ignored. */
static void sync_folder_of(const char *path) {
  size_t len = strlen(path);
  while (len > 1 && path[len - 1] == '/') len--;
  while (len > 0 && path[len - 1] != '/') len--;
  char *dir = malloc(len + 2);
  if (dir == NULL) return;
  if (len == 0) strcpy(dir, ".");
  else {
    memcpy(dir, path, len);
    dir[len] = '\0';
  }
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    fsync(fd);
    close(fd);
  }
  free(dir);
}

mr_status mr_file_commit(mr_ctx *ctx, int fd, const char *tmp, const char *path) {
  mr_status s = MR_OK;
  if (fsync(fd) != 0) s = mr_error(ctx, MR_EIO, "cannot write '%s': %s", path, strerror(errno));
  if (close(fd) != 0 && s == MR_OK) s = mr_error(ctx, MR_EIO, "cannot write '%s': %s", path, strerror(errno));
  if (s == MR_OK && rename(tmp, path) != 0)
    s = mr_error(ctx, MR_EIO, "cannot rename '%s' to '%s': %s", tmp, path, strerror(errno));
  if (s != MR_OK) unlink(tmp);
  else sync_folder_of(path);
  return s;
}

void mr_file_discard(int fd, const char *tmp) {
  int e = errno; /* callers may still report it */
  close(fd);
  unlink(tmp);
  errno = e;
}

mr_status mr_file_write_atomic(mr_ctx *ctx, const char *path, const void *data, size_t n) {
  char *tmp;
  int fd;
  mr_status s = mr_file_temp_create(ctx, path, &tmp, &fd);
  if (s != MR_OK) return s;
  if (mr_file_write_all(fd, data, n)) s = mr_file_commit(ctx, fd, tmp, path);
  else {
    s = mr_error(ctx, MR_EIO, "cannot write '%s': %s", path, strerror(errno));
    mr_file_discard(fd, tmp);
  }
  free(tmp);
  return s;
}
