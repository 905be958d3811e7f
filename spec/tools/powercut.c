/* spec/tools/powercut.c - an LD_PRELOAD shim that records what a process
 * has made durable, so a spec can simulate a power cut after killing it.
 *
 * SIGKILL keeps the page cache: everything written survives, synced or
 * not, so it cannot catch a missing fsync. This shim appends one line to
 * the file named by POWERCUT_LOG for each file opened for writing under
 * the folder POWERCUT_DIR ("open SIZE PATH", SIZE being its length then)
 * and for each fsync or fdatasync of one ("sync SIZE PATH", its length at
 * the sync). After the process is killed, spec/tools/powercut-apply cuts
 * every such file back to its last synced length (or its length when
 * opened, if it was never synced): what a machine that lost power would
 * have kept of those files. The model fits stores that only append to
 * their files and create new ones, as LevelDB does (logs, tables, the
 * manifest); renames count as durable (LevelDB syncs the files it
 * renames first). Each line is written with one write(2) to a file opened
 * with O_APPEND, so lines never interleave. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef int (*open_fn)(const char *, int, ...);
typedef int (*openat_fn)(int, const char *, int, ...);
typedef int (*sync_fn)(int);

static void note(const char *what, int fd) {
  const char *log = getenv("POWERCUT_LOG");
  const char *dir = getenv("POWERCUT_DIR");
  char link[64], path[PATH_MAX], line[PATH_MAX + 64];
  struct stat st;
  if (log == NULL || dir == NULL || fd < 0) return;
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, path, sizeof path - 1);
  if (n <= 0) return;
  path[n] = '\0';
  if (strncmp(path, dir, strlen(dir)) != 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return;
  int len = snprintf(line, sizeof line, "%s %lld %s\n", what, (long long)st.st_size, path);
  if (len <= 0 || (size_t)len >= sizeof line) return;
  static open_fn real_open;
  if (real_open == NULL) real_open = (open_fn)dlsym(RTLD_NEXT, "open");
  int lfd = real_open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (lfd < 0) return;
  if (write(lfd, line, (size_t)len) != len) { /* nothing more to do in a shim */ }
  close(lfd);
}

static int writes(int flags) { return (flags & (O_WRONLY | O_RDWR)) != 0; }

/* The mode argument open and openat take only with O_CREAT. */
#define MODE_ARG(flags, last, mode)          \
  do {                                       \
    if ((flags) & O_CREAT) {                 \
      va_list ap;                            \
      va_start(ap, last);                    \
      (mode) = (mode_t)va_arg(ap, int);      \
      va_end(ap);                            \
    }                                        \
  } while (0)

/* open and open64 (one symbol each in glibc): the real one, then a note. */
#define OPEN_SHIM(name)                                        \
  int name(const char *path, int flags, ...);                  \
  int name(const char *path, int flags, ...) {                 \
    static open_fn real;                                       \
    mode_t mode = 0;                                           \
    if (real == NULL) real = (open_fn)dlsym(RTLD_NEXT, #name); \
    MODE_ARG(flags, flags, mode);                              \
    int fd = real(path, flags, mode);                          \
    if (writes(flags)) note("open", fd);                       \
    return fd;                                                 \
  }
OPEN_SHIM(open)
OPEN_SHIM(open64)

int openat(int dirfd, const char *path, int flags, ...);
int openat(int dirfd, const char *path, int flags, ...) {
  static openat_fn real;
  mode_t mode = 0;
  if (real == NULL) real = (openat_fn)dlsym(RTLD_NEXT, "openat");
  MODE_ARG(flags, flags, mode);
  int fd = real(dirfd, path, flags, mode);
  if (writes(flags)) note("open", fd);
  return fd;
}

/* fsync and fdatasync: the real one, then a note when it succeeded. */
#define SYNC_SHIM(name)                                        \
  int name(int fd);                                            \
  int name(int fd) {                                           \
    static sync_fn real;                                       \
    if (real == NULL) real = (sync_fn)dlsym(RTLD_NEXT, #name); \
    int rc = real(fd);                                         \
    if (rc == 0) note("sync", fd);                             \
    return rc;                                                 \
  }
SYNC_SHIM(fsync)
SYNC_SHIM(fdatasync)
