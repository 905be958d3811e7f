/* thread_prio.c - the priority (nice value) and names of the threads the
 * core runs beside the host's loop thread (thread_prio.h): the node's
 * `worker_nice` policy, so that on a busy machine the host's thread gets
 * the CPU before the core's background work.
 *
 * On Linux the nice value is a thread's own (setpriority(PRIO_PROCESS,
 * tid) changes that thread alone) and a new thread inherits its creator's.
 * The commit worker and the snapshot workers set their own as they start.
 * LevelDB's background thread (compactions and memtable flushes) is one
 * per process, started by LevelDB's Env on the first compaction it
 * schedules, from whichever thread schedules it; it has no name of its
 * own. So the first store a process opens is opened on a short-lived
 * thread named ODO_LEVELDB_THREAD that also asks for an empty compaction
 * (the range ["", ""]: it flushes the memtable, empty right after an open,
 * and compacts nothing), which starts the background thread from there:
 * it inherits the name, and every later open finds it by that name in
 * /proc/self/task and sets its nice value by its thread id.
 *
 * Also `odo.core.thread_cpu_ns`: the calling thread's CPU time, exact
 * (what bench/embed.lua counts a step's time on a CPU with). */

/***
 * @submodule odo.core
 */

#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef __linux__
#include <dirent.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "thread_prio.h"

#ifdef __linux__

static const char *errno_name(int err) {
  switch (err) {
  case EACCES: return "EACCES";
  case EPERM: return "EPERM";
  case ESRCH: return "ESRCH";
  case EINVAL: return "EINVAL";
  default: return "EIO";
  }
}

void odo_thread_name(const char *name) {
  /* only fails for a bad pointer; a name is a diagnostic aid */
  (void)prctl(PR_SET_NAME, name, 0, 0, 0);
}

/* Raises thread tid's nice value to nice unless it is already there. */
static int task_nice(pid_t tid, int nice, const char *who, odo_err *e) {
  int cur;
  errno = 0;
  cur = getpriority(PRIO_PROCESS, (id_t)tid);
  if (cur == -1 && errno != 0)
    return odo_err_set(e, errno_name(errno), "cannot read the %s thread's nice value: %s",
                       who, strerror(errno));
  if (cur >= nice) return 1;
  if (setpriority(PRIO_PROCESS, (id_t)tid, nice) != 0)
    return odo_err_set(e, errno_name(errno),
                       "cannot set the %s thread's nice value to %d (it is %d): %s", who,
                       nice, cur, strerror(errno));
  return 1;
}

int odo_thread_nice(int nice, const char *who, odo_err *e) {
  if (nice <= 0) return 1; /* 0: the creator's, whatever it is */
  return task_nice((pid_t)syscall(SYS_gettid), nice, who, e);
}

/* The id of a thread of this process named `name`: > 0, 0 when there is
 * none, -1 with e set when /proc cannot be read. */
static pid_t find_thread(const char *name, odo_err *e) {
  DIR *d = opendir("/proc/self/task");
  struct dirent *ent;
  pid_t found = 0;
  if (d == NULL) {
    odo_err_set(e, "EIO", "cannot list this process's threads: /proc/self/task: %s",
                strerror(errno));
    return -1;
  }
  while (found == 0 && (ent = readdir(d)) != NULL) {
    char path[64], comm[32];
    char *end;
    long tid = strtol(ent->d_name, &end, 10);
    FILE *f;
    int n;
    if (*end != '\0' || tid <= 0) continue;
    n = snprintf(path, sizeof path, "/proc/self/task/%ld/comm", tid);
    if (n < 0 || (size_t)n >= sizeof path) continue;
    f = fopen(path, "r");
    if (f == NULL) continue; /* it ended meanwhile */
    if (fgets(comm, sizeof comm, f) != NULL) {
      comm[strcspn(comm, "\n")] = '\0';
      if (strcmp(comm, name) == 0) found = (pid_t)tid;
    }
    fclose(f);
  }
  closedir(d);
  return found;
}

typedef struct opener {
  const leveldb_options_t *o;
  const char *path;
  leveldb_t *db;
  char *dberr;
} opener;

/* The short-lived thread the first store is opened on (see the top). */
static void *open_and_start_compactions(void *arg) {
  opener *op = arg;
  odo_thread_name(ODO_LEVELDB_THREAD);
  op->db = leveldb_open(op->o, op->path, &op->dberr);
  if (op->db) leveldb_compact_range(op->db, "", 0, "", 0);
  return NULL;
}

leveldb_t *odo_prio_open_db(const leveldb_options_t *o, const char *path, int nice,
                            char **dberr, odo_err *e) {
  opener op = {o, path, NULL, NULL};
  pthread_t t;
  pid_t bg = find_thread(ODO_LEVELDB_THREAD, e);
  int rc;
  if (bg < 0 && nice > 0) return NULL;
  if (bg > 0) {
    op.db = leveldb_open(o, path, dberr);
  } else {
    rc = pthread_create(&t, NULL, open_and_start_compactions, &op);
    if (rc != 0) {
      odo_err_set(e, "EAGAIN", "cannot start a thread to open the store on: %s", strerror(rc));
      return NULL;
    }
    pthread_join(t, NULL);
    *dberr = op.dberr;
    if (op.db && nice > 0 && (bg = find_thread(ODO_LEVELDB_THREAD, e)) == 0)
      odo_err_set(e, "ESRCH",
                  "LevelDB's background thread was started before this process opened a "
                  "store (by another part of it), so the worker_nice policy cannot reach "
                  "it; use worker_nice = 0");
  }
  if (op.db == NULL || nice <= 0) return op.db;
  if (bg <= 0 || !task_nice(bg, nice, "LevelDB background", e)) {
    leveldb_close(op.db);
    return NULL;
  }
  return op.db;
}

#else /* not Linux: threads keep their creator's priority */

void odo_thread_name(const char *name) { (void)name; }

int odo_thread_nice(int nice, const char *who, odo_err *e) {
  (void)nice;
  (void)who;
  (void)e;
  return 1;
}

leveldb_t *odo_prio_open_db(const leveldb_options_t *o, const char *path, int nice,
                            char **dberr, odo_err *e) {
  (void)nice;
  (void)e;
  return leveldb_open(o, path, dberr);
}

#endif

/***
 * The CPU time the calling thread has used, in nanoseconds
 * (CLOCK_THREAD_CPUTIME_ID: exact, where /proc's schedstat lags by up to
 * a scheduler tick for a running thread).
 * @function thread_cpu_ns
 * @treturn integer
 * @treturn[2] nil
 * @treturn[2] string "EIO: ..."
 */
static int l_thread_cpu_ns(lua_State *L) {
  struct timespec ts;
  if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
    return odo_fail(L, "EIO", "cannot read this thread's CPU time: %s", strerror(errno));
  odo_pushu64(L, (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec);
  return 1;
}

void odo_thread_prio_open(lua_State *L) {
  lua_pushcfunction(L, l_thread_cpu_ns);
  lua_setfield(L, -2, "thread_cpu_ns");
}
