/* thread_prio.h - the scheduling priority (nice value) and names of the
 * threads the core runs beside the loop thread: the commit queue's worker,
 * the snapshot workers, and LevelDB's background thread (the node's
 * `worker_nice` policy). Linux only; elsewhere every call is a no-op that
 * succeeds. */
#ifndef ODO_THREAD_PRIO_H
#define ODO_THREAD_PRIO_H

#include <leveldb/c.h>

#include "odo.h"

/* What LevelDB's background thread is called (it inherits the name of
 * the thread that starts it: the one odo_prio_open_db starts it from). */
#define ODO_LEVELDB_THREAD "odo-leveldb"

/* Names the calling thread (what `ps -L`, `top -H` and
 * /proc/PID/task/TID/comm show; at most 15 bytes). */
void odo_thread_name(const char *name);

/* Gives the calling thread the nice value `nice` (1..19) unless it is
 * already at least that nice: a thread never gets ahead of the thread
 * that started it (lowering a nice value needs CAP_SYS_NICE). nice <= 0
 * leaves it (the creator's). `who` names the thread in the error. 1, or 0 with e set
 * (EACCES, EPERM, ...: setpriority's error, with its text). */
int odo_thread_nice(int nice, const char *who, odo_err *e);

/* Opens the LevelDB database at path (leveldb_open's contract: NULL with
 * *dberr set when LevelDB fails) so that LevelDB's background thread,
 * one per process, is one the core can find: when no thread of the
 * process has its name yet, the open and one empty compaction (which
 * starts that thread) run on a short-lived thread of that name, so the
 * background thread inherits it. Then, with nice > 0, gives it that nice
 * value (unless it is already nicer). NULL with e set (and *dberr NULL)
 * when a thread cannot be started or the priority cannot be set. */
leveldb_t *odo_prio_open_db(const leveldb_options_t *o, const char *path,
                            int nice, char **dberr, odo_err *e);

#endif
