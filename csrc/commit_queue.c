/* commit_queue.c - the store's commit queue: durable writes on a worker
 * thread, so a host's loop never waits for an fsync.
 *
 * The loop thread stages a write as usual (records and catalogue entries
 * into a transaction), then detaches it (store.c odo_txn_detach) and
 * queues it here. One worker thread per store takes the queued writes in
 * order and writes each with one synced LevelDB write; a descriptor (an
 * eventfd) becomes readable when writes are done. The loop then collects
 * them: only then do the catalogue entries in memory change (odo_txn_settle),
 * so a reader or subscriber never sees an event that is not durable, and
 * each write's results go back to Lua. While writes are in flight, the next
 * one stages after them (a stream's tip); a transaction of the loop's own
 * that touches such a stream first waits for them (odo_writer.settle), so
 * a stream's writes reach the disk in order. A failed write (ENOSPC, EIO)
 * fails every write queued behind it with the same error, nothing of them
 * written, until the loop has collected them all: they were staged after
 * it. Group commits of `node:append(..., cb)` use it, and so do received
 * batches (pipelined catch-up, sync_recv.c): the loop decrypts, decodes
 * and checks a batch's place, stages the head and the catalogue entry,
 * and queues the events with a chain to compute (odo_chain); the worker
 * computes and checks each chain hash and the head's signature, puts the
 * event records into the write, and a batch whose chain does not end at
 * its head, or whose head its source did not sign, is refused (EVERIFY)
 * with nothing of it stored, as is
 * every write of that stream queued after it (they were staged on it),
 * the other streams' writes go on. The worker takes the writes queued
 * when it wakes, up to a merged write's worth of received batches, and
 * merges them into one LevelDB write (one sync when any asked for it, a
 * group commit): received batches' events are put straight into that
 * write, the loop's own unsynced writes go alone (merging them would copy
 * their events; see write_jobs). A small received batch of a stream with
 * nothing in flight (live traffic, odo_chain.urgent) is queued ahead of
 * the others, after the urgent ones before it: it waits for one merged
 * write at most, not for megabytes of another stream's catch-up. Verifier
 * threads ("odo-verify", by default one per core beside the loop's, see
 * l_commit_queue) compute and check the queued chains ahead of the
 * worker, each its own, so one batch's hashing overlaps the write and
 * sync of the one before and a catch-up's hashes and signatures spread
 * over the machine's cores (the worker checks a chain itself when no
 * verifier has begun it). Touches no Lua state on any of these threads;
 * LevelDB writes are thread-safe. */

/***
 * @submodule odo.core
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <openssl/err.h>

#include "store.h"
#include "thread_prio.h"

#define QUEUE_CLASS "odo.commit_queue"
/* the most verifier threads a queue runs */
#define VERIFIERS_MAX 16

typedef struct cq_job {
  struct cq_job *next;
  lua_Integer id;
  odo_detached d;
  int sync, failed, applied;
  int writes; /* has records: a stream it holds, or a core writer's own (heads) */
  odo_err err;
  odo_chain *chain;     /* events to chain into the write, or NULL */
  int vstate;           /* its chain's check: VERIFY_* */
  int vok;              /* the verifier's result, and why not */
  odo_err verr;
  odo_write_done *done; /* the core writer to tell, or NULL */
  odo_group *groups; /* per group: its last revision or its error */
  size_t ngroups;
} cq_job;

/* A chain's check: not begun, under way on the verifier, done by the
 * verifier (vok, verr), or taken by the writer (which checks it itself). */
enum { VERIFY_NONE, VERIFY_BUSY, VERIFY_DONE, VERIFY_WRITER };

struct commit_queue;

/* One verifier thread and its SHA-256 context. */
typedef struct cq_verifier {
  struct commit_queue *q;
  pthread_t thread;
  odo_hasher hasher;
  int hasher_ok, started;
} cq_verifier;

typedef struct commit_queue {
  odo_writer writer; /* first: the store calls settle through it */
  odo_dependent dep;
  odo_store *store;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t work, done, vwork;
  cq_verifier verifiers[VERIFIERS_MAX];
  int nverifiers; /* how many start with the worker */
  int started, stop, broken, efd;
  int ready;         /* the worker has its name and priority (or failed) */
  odo_err start_err; /* why it could not take its priority */
  odo_err broken_err;
  cq_job *todo, *todo_tail; /* queued for the worker */
  cq_job *urgent_tail;      /* the last urgent job at the front of todo */
  cq_job *busy;             /* being written */
  cq_job *fin, *fin_tail;   /* written (or failed), not yet collected */
  size_t inflight;          /* queued and not yet collected */
  lua_Integer next_id;
  /* streams whose write was refused: their writes queued after it fail */
  odo_stream **refused;
  size_t nrefused, caprefused;
  /* the worker's own: chain hashing, record encoding, merged writes */
  odo_hasher hasher;
  int hasher_ok;
  odo_buf val;
  leveldb_writebatch_t *merged;
} commit_queue;

static long long queue_submit(odo_writer *w, int sync, odo_chain *chain,
                              odo_write_done *done, odo_err *e);

static void job_free(cq_job *j) {
  if (j == NULL) return;
  if (j->d.batch) leveldb_writebatch_destroy(j->d.batch);
  free(j->d.streams);
  free(j->d.cats);
  free(j->groups);
  odo_chain_free(j->chain);
  free(j);
}

/* Whether a stream of j had a write refused (mutex held). */
static int follows_refused(const commit_queue *q, const cq_job *j) {
  for (size_t i = 0; i < j->d.n; i++)
    for (size_t k = 0; k < q->nrefused; k++)
      if (q->refused[k] == j->d.streams[i]) return 1;
  return 0;
}

/* Remembers j's streams as refused (mutex held); 0 when out of memory
 * (the queue breaks instead: nothing queued after it is written). */
static int mark_refused(commit_queue *q, const cq_job *j) {
  for (size_t i = 0; i < j->d.n; i++) {
    if (q->nrefused == q->caprefused) {
      size_t n = q->caprefused ? 2 * q->caprefused : 8;
      odo_stream **r = realloc(q->refused, n * sizeof *r);
      if (r == NULL) return 0;
      q->refused = r;
      q->caprefused = n;
    }
    q->refused[q->nrefused++] = j->d.streams[i];
  }
  return 1;
}

/* ---- the verifier -----------------------------------------------------------
 * A second thread computes and checks the chains of queued batches ahead
 * of the writer (the worker), in order, so that one batch's SHA-256 runs
 * while the batch before it is written and synced. The writer takes a
 * chain's result when the verifier has it (waiting when it is under way),
 * and checks the chain itself when the verifier has not begun it; what a
 * result means (a refused stream, the jobs after it) is the writer's, in
 * order, as before. */

/* The next chain to check (mutex held): in the writer's list first. */
static cq_job *next_unverified(commit_queue *q) {
  for (cq_job *j = q->busy; j; j = j->next)
    if (j->chain && j->vstate == VERIFY_NONE) return j;
  for (cq_job *j = q->todo; j; j = j->next)
    if (j->chain && j->vstate == VERIFY_NONE) return j;
  return NULL;
}

static void *verifier(void *arg) {
  cq_verifier *v = arg;
  commit_queue *q = v->q;
  odo_err e = {0};
  int ok;
  odo_thread_name("odo-verify");
  /* without its priority it ends: the others (or the writer) check the
   * chains */
  ok = odo_thread_nice(q->store->worker_nice, "chain verifier", &e) && v->hasher_ok;
  pthread_mutex_lock(&q->mu);
  while (ok) {
    cq_job *j;
    while ((j = next_unverified(q)) == NULL && !q->stop) pthread_cond_wait(&q->vwork, &q->mu);
    if (j == NULL) break;
    j->vstate = VERIFY_BUSY;
    pthread_mutex_unlock(&q->mu);
    j->vok = odo_chain_check(&v->hasher, j->chain, &j->verr);
    pthread_mutex_lock(&q->mu);
    j->vstate = VERIFY_DONE;
    pthread_cond_broadcast(&q->done);
  }
  pthread_mutex_unlock(&q->mu);
  return NULL;
}

/* The writer's turn for j's chain (mutex not held): 1 the verifier found
 * it sound, 0 not (j->verr), -1 the writer checks it (it is its now). */
static int chain_checked(commit_queue *q, cq_job *j) {
  int v;
  pthread_mutex_lock(&q->mu);
  while (j->vstate == VERIFY_BUSY) pthread_cond_wait(&q->done, &q->mu);
  v = j->vstate;
  if (v == VERIFY_NONE) j->vstate = VERIFY_WRITER;
  pthread_mutex_unlock(&q->mu);
  return v == VERIFY_DONE ? j->vok : -1;
}

/* Waits until the verifier holds none of list (mutex held), and keeps it
 * from taking any: the list goes to the loop, which frees it. */
static void release_from_verifier(commit_queue *q, cq_job *list) {
  for (cq_job *j = list; j; j = j->next) {
    while (j->vstate == VERIFY_BUSY) pthread_cond_wait(&q->done, &q->mu);
    if (j->vstate == VERIFY_NONE) j->vstate = VERIFY_WRITER;
  }
}

/* Prepares one job of a write the worker took (mutex not held): a job
 * behind a failure fails, a chain is computed and checked. */
static void prepare_job(commit_queue *q, cq_job *j) {
  int broken, after_refused;
  pthread_mutex_lock(&q->mu);
  broken = q->broken;
  if (broken) j->err = q->broken_err;
  after_refused = !broken && follows_refused(q, j);
  pthread_mutex_unlock(&q->mu);
  if (broken) {
    j->failed = 1; /* staged after a write that failed: write nothing */
  } else if (after_refused) {
    j->failed = 1;
    odo_err_set(&j->err, "ECANCELED",
                "not written: a batch of the same stream queued before it was "
                "refused");
  } else if (j->chain) {
    int ok = chain_checked(q, j); /* -1: the writer checks it */
    if (ok == 0) j->err = j->verr;
    if (ok < 0 && !q->hasher_ok) {
      j->failed = !odo_err_set(&j->err, "EIO", "no SHA-256 context for the worker");
    } else if (ok == 0 || (ok < 0 && !odo_chain_check(&q->hasher, j->chain, &j->err))) {
      j->failed = 1;
      pthread_mutex_lock(&q->mu);
      if (!mark_refused(q, j) && !q->broken) {
        q->broken = 1;
        q->broken_err = j->err;
      }
      pthread_mutex_unlock(&q->mu);
    }
    if (j->failed) leveldb_writebatch_clear(j->d.batch);
  }
}

/* A merged write stops taking jobs past this many bytes of received
 * batches: the worker's batch stays bounded whatever the backlog. */
#define MERGE_BYTES (512u << 10)
/* ... and, when they are synced, past this many: an fsync costs more
 * than reading a larger write back, so a backlog of durable batches
 * shares fewer of them. */
#define MERGE_SYNC_BYTES (4u << 20)
static size_t merge_limit(int sync) { return sync ? MERGE_SYNC_BYTES : MERGE_BYTES; }

/* Fails the jobs from first up to (not including) end that write and
 * have not failed yet, with e. */
static void fail_jobs(cq_job *first, const cq_job *end, const odo_err *e) {
  for (cq_job *j = first; j && j != end; j = j->next)
    if (!j->failed && j->writes) {
      j->failed = 1;
      j->err = *e;
    }
}

/* Writes q->merged (sync when any job in it asked) and fails the jobs
 * first..last in it when the write fails; returns whether it succeeded. */
static int write_merged(commit_queue *q, cq_job *first, cq_job *last, int sync,
                        odo_err *e) {
  char *err = NULL;
  leveldb_write(q->store->db, sync ? q->store->wsync : q->store->wnosync, q->merged,
                &err);
  leveldb_writebatch_clear(q->merged);
  if (err == NULL) return 1;
  odo_store_dberr(e, err, "group commit");
  fail_jobs(first, last->next, e);
  return 0;
}

/* Prepares and writes the jobs of list, in order, in as few LevelDB
 * writes as it can. Each job is prepared (its chain checked) right before
 * its records are put, while its events are in the cache. A received
 * batch's events (a chain) are put straight
 * into one merged batch after its staged head and catalogue entry (no
 * batch of their own, so no copy of them); a synced write of the loop's
 * own is appended to it as well (one sync for all); an unsynced one is
 * written alone (merging would copy its events), as is a lone job. A
 * merged write stops growing past MERGE_BYTES (about what a core's cache
 * holds: the LevelDB write reads it back). A failed write fails its
 * jobs and every job after it (they were staged on it). */
static void write_jobs(commit_queue *q, cq_job *list) {
  cq_job *first = NULL, *last = NULL;
  int n = 0, sync = 0;
  size_t bytes = 0;
  char *err = NULL;
  odo_err e = {0};
  for (cq_job *j = list; j; j = j->next)
    if (j->writes) n++;
  for (cq_job *j = list; j; j = j->next) {
    if (e.name && j->writes) {
      j->failed = 1; /* queued after a write that failed */
      j->err = e;
      continue;
    }
    prepare_job(q, j);
    if (j->failed || !j->writes) continue;
    if (j->chain == NULL && (n == 1 || !j->sync)) {
      if (first && !write_merged(q, first, last, sync, &e)) {
        j->failed = 1;
        j->err = e;
        continue;
      }
      first = last = NULL;
      sync = 0;
      bytes = 0;
      leveldb_write(q->store->db, j->sync ? q->store->wsync : q->store->wnosync,
                    j->d.batch, &err);
      if (err) {
        odo_store_dberr(&e, err, "group commit");
        err = NULL;
        j->failed = 1;
        j->err = e;
      }
      continue;
    }
    leveldb_writebatch_append(q->merged, j->d.batch);
    if (j->chain && !odo_chain_put(&q->val, j->chain, q->merged, &j->err)) {
      /* its head is in the merged batch: nothing of it is written */
      e = j->err;
      leveldb_writebatch_clear(q->merged);
      fail_jobs(first, j, &e);
      j->failed = 1;
      first = last = NULL;
      continue;
    }
    if (first == NULL) first = j;
    last = j;
    sync |= j->sync;
    bytes += j->chain ? j->chain->bytes : 0;
    if (bytes >= merge_limit(sync)) {
      write_merged(q, first, last, sync, &e);
      first = last = NULL;
      sync = 0;
      bytes = 0;
    }
  }
  if (first) write_merged(q, first, last, sync, &e);
}

/* Takes every queued write and writes them together; first takes the
 * store's worker priority (worker_nice), and ends at once when it cannot. */
static void *worker(void *arg) {
  commit_queue *q = arg;
  uint64_t one = 1;
  odo_err e = {0};
  int ok;
  odo_thread_name("odo-commit");
  ok = odo_thread_nice(q->store->worker_nice, "commit worker", &e);
  pthread_mutex_lock(&q->mu);
  q->ready = 1;
  if (!ok) q->start_err = e;
  pthread_cond_broadcast(&q->done);
  while (ok) {
    cq_job *list, *tail;
    while (q->todo == NULL && !q->stop) pthread_cond_wait(&q->work, &q->mu);
    if (q->todo == NULL) break;
    /* the jobs queued, up to a merged write's worth of received batches,
     * so that an urgent job queued meanwhile waits for one write at most */
    list = tail = q->todo;
    for (size_t bytes = 0; tail->next; tail = tail->next) {
      if (tail == q->urgent_tail) q->urgent_tail = NULL;
      bytes += tail->chain ? tail->chain->bytes : 0;
      if (bytes >= merge_limit(list->sync)) break;
    }
    if (tail == q->urgent_tail) q->urgent_tail = NULL;
    q->todo = tail->next;
    if (q->todo == NULL) q->todo_tail = NULL;
    tail->next = NULL;
    q->busy = list;
    pthread_mutex_unlock(&q->mu);
    write_jobs(q, list);
    pthread_mutex_lock(&q->mu);
    release_from_verifier(q, list);
    for (cq_job *j = list; j; j = j->next)
      if (j->failed && !q->broken && strcmp(j->err.name, "EVERIFY") != 0 &&
          strcmp(j->err.name, "ECANCELED") != 0) {
        q->broken = 1; /* a write failed: what follows was staged on it */
        q->broken_err = j->err;
      }
    q->busy = NULL;
    if (q->fin_tail) q->fin_tail->next = list;
    else q->fin = list;
    q->fin_tail = tail;
    /* wake the loop with the mutex released: a woken loop thread that
     * preempts this one (it may be nicer) must not then wait for it */
    pthread_mutex_unlock(&q->mu);
    pthread_cond_broadcast(&q->done);
    if (write(q->efd, &one, sizeof one) < 0) {
      /* the counter cannot overflow here; collect() reads the list anyway */
    }
    pthread_mutex_lock(&q->mu);
  }
  pthread_mutex_unlock(&q->mu);
  return NULL;
}

/* Starts the worker and waits until it has taken its priority (a moment:
 * once per store); 0 with e set when it cannot start or take it. */
static int queue_start(commit_queue *q, odo_err *e) {
  int rc = pthread_create(&q->thread, NULL, worker, q);
  if (rc != 0)
    return odo_err_set(e, "EAGAIN", "cannot start the commit worker: %s", strerror(rc));
  pthread_mutex_lock(&q->mu);
  while (!q->ready) pthread_cond_wait(&q->done, &q->mu);
  pthread_mutex_unlock(&q->mu);
  if (q->start_err.name) {
    pthread_join(q->thread, NULL); /* it ended */
    q->ready = 0;
    *e = q->start_err;
    q->start_err.name = NULL;
    return 0;
  }
  q->started = 1;
  /* without verifiers the writer checks every chain itself */
  for (int i = 0; i < q->nverifiers; i++) {
    cq_verifier *v = &q->verifiers[i];
    v->started = pthread_create(&v->thread, NULL, verifier, v) == 0;
  }
  return 1;
}

/* Applies the catalogue entries of every finished write not applied yet
 * (loop thread, mutex held). */
static void apply_finished(commit_queue *q) {
  for (cq_job *j = q->fin; j; j = j->next) {
    if (j->applied) continue;
    j->applied = 1;
    /* a refused stream's last write in flight: it is writable again */
    for (size_t i = 0; i < j->d.n; i++)
      if (j->d.streams[i]->inflight == 1)
        for (size_t k = 0; k < q->nrefused; k++)
          if (q->refused[k] == j->d.streams[i]) q->refused[k--] = q->refused[--q->nrefused];
    odo_txn_settle(q->store, &j->d, !j->failed);
    if (j->done) j->done->fn(j->done, !j->failed, &j->err);
    j->done = NULL;
  }
}

/* Whether a write is queued, being written or not yet collected. */
static int queue_busy(odo_writer *w) {
  return ((commit_queue *)w)->inflight > 0; /* counted on the loop thread only */
}

/* Waits until nothing is queued or being written, then applies. */
static void queue_settle(odo_writer *w) {
  commit_queue *q = (commit_queue *)w;
  pthread_mutex_lock(&q->mu);
  while (q->todo || q->busy) pthread_cond_wait(&q->done, &q->mu);
  apply_finished(q);
  pthread_mutex_unlock(&q->mu);
}

static void queue_release(commit_queue *q) {
  cq_job *j;
  if (q->store == NULL) return;
  if (q->started) {
    queue_settle(&q->writer);
    pthread_mutex_lock(&q->mu);
    q->stop = 1;
    pthread_cond_signal(&q->work);
    pthread_cond_broadcast(&q->vwork);
    pthread_mutex_unlock(&q->mu);
    pthread_join(q->thread, NULL);
    for (int i = 0; i < q->nverifiers; i++)
      if (q->verifiers[i].started) pthread_join(q->verifiers[i].thread, NULL);
    q->started = 0;
  }
  while ((j = q->fin) != NULL) {
    q->fin = j->next;
    job_free(j);
  }
  q->fin_tail = NULL;
  free(q->refused);
  q->refused = NULL;
  q->nrefused = q->caprefused = 0;
  if (q->hasher_ok) odo_hasher_free(&q->hasher);
  for (int i = 0; i < q->nverifiers; i++) {
    cq_verifier *v = &q->verifiers[i];
    if (v->hasher_ok) odo_hasher_free(&v->hasher);
    v->hasher_ok = v->started = 0;
  }
  q->hasher_ok = 0;
  odo_buf_free(&q->val);
  if (q->merged) leveldb_writebatch_destroy(q->merged);
  q->merged = NULL;
  pthread_mutex_destroy(&q->mu);
  pthread_cond_destroy(&q->work);
  pthread_cond_destroy(&q->done);
  pthread_cond_destroy(&q->vwork);
  if (q->efd >= 0) close(q->efd);
  q->efd = -1;
  odo_store_remove_dependent(q->store, &q->dep);
  q->store->writer = NULL;
  q->store = NULL;
}

static void queue_dep_release(odo_dependent *d) {
  queue_release((commit_queue *)((char *)d - offsetof(commit_queue, dep)));
}

static int l_queue_gc(lua_State *L) {
  queue_release(luaL_checkudata(L, 1, QUEUE_CLASS));
  return 0;
}

static int l_queue_tostring(lua_State *L) {
  commit_queue *q = luaL_checkudata(L, 1, QUEUE_CLASS);
  lua_pushfstring(L, "odo.commit_queue (%d in flight%s)", (int)q->inflight,
                  q->store ? "" : ", closed");
  return 1;
}

static commit_queue *check_queue(lua_State *L) {
  commit_queue *q = luaL_checkudata(L, 1, QUEUE_CLASS);
  if (q->store == NULL || q->store->db == NULL)
    luaL_error(L, "attempt to use a closed commit queue");
  if (q->store->txn_open) odo_txn_abort(q->store);
  return q;
}

/* One verifier per online core beside the loop's thread, 1 to
 * VERIFIERS_MAX. */
static int default_verifiers(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN) - 1;
  return n < 1 ? 1 : n > VERIFIERS_MAX ? VERIFIERS_MAX : (int)n;
}

/***
 * The store's commit queue: durable writes on a worker thread, with a
 * descriptor that becomes readable when writes are done. One per store.
 * The worker, named "odo-commit", takes the store's `worker_nice`; with
 * one (above 0) it starts here, so a priority it cannot take fails this.
 * Verifier threads ("odo-verify", at the same priority) check received
 * batches' chain hashes and signatures ahead of the worker.
 * @function commit_queue
 * @tparam odo.store store
 * @tparam[opt] table opts `verifiers`: how many verifier threads, 0 to 16
 *   (0: the worker checks every batch itself); default one per online
 *   core beside the caller's thread, at least 1, at most 16
 * @return queue with `submit`, `fd`, `collect`, `wait`, `pending`, `close`
 * @return[2] nil
 * @return[2] string "EIO: ...", "EAGAIN: ...", "EACCES: ...", "EPERM: ..."
 */
static int l_commit_queue(lua_State *L) {
  odo_store *s = odo_store_check(L, 1);
  int nverifiers = default_verifiers();
  commit_queue *q;
  if (!lua_isnoneornil(L, 2)) {
    uint64_t n;
    luaL_checktype(L, 2, LUA_TTABLE);
    n = odo_fieldu64(L, 2, "verifiers", (uint64_t)nverifiers);
    if (n > VERIFIERS_MAX) return luaL_error(L, "opts.verifiers must be 0 to %d", VERIFIERS_MAX);
    nverifiers = (int)n;
  }
  if (s->writer) return luaL_error(L, "the store already has a commit queue");
  q = lua_newuserdatauv(L, sizeof *q, 1);
  memset(q, 0, sizeof *q);
  q->efd = -1;
  luaL_setmetatable(L, QUEUE_CLASS);
  lua_pushvalue(L, 1); /* keeps the store alive */
  odo_setuservalue(L, -2);
  q->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (q->efd < 0) return odo_fail(L, "EIO", "eventfd: %s", strerror(errno));
  q->hasher_ok = odo_hasher_init(&q->hasher);
  if (!q->hasher_ok) ERR_clear_error(); /* a received batch then fails, said why */
  q->nverifiers = nverifiers;
  for (int i = 0; i < nverifiers; i++) {
    cq_verifier *v = &q->verifiers[i];
    v->q = q;
    v->hasher_ok = odo_hasher_init(&v->hasher);
    if (!v->hasher_ok) ERR_clear_error(); /* that one ends: the others check */
  }
  odo_buf_init(&q->val);
  q->merged = leveldb_writebatch_create();
  pthread_mutex_init(&q->mu, NULL);
  pthread_cond_init(&q->work, NULL);
  pthread_cond_init(&q->done, NULL);
  pthread_cond_init(&q->vwork, NULL);
  q->writer.settle = queue_settle;
  q->writer.submit = queue_submit;
  q->writer.busy = queue_busy;
  q->writer.verifiers = nverifiers;
  q->dep.release = queue_dep_release;
  q->store = s;
  q->next_id = 1;
  s->writer = &q->writer;
  odo_store_add_dependent(s, &q->dep);
  if (s->worker_nice > 0) {
    /* started now, so a priority it cannot take is said here */
    odo_err e = {0};
    if (!queue_start(q, &e)) {
      queue_release(q);
      return odo_err_push(L, &e);
    }
  }
  return 1;
}

/* Detaches the open transaction and queues it as one write, with the
 * groups' outcomes (gs, n: none for the core's own writers) to report, or
 * a core writer's chain and done. Returns its id, or 0 with e set, the
 * transaction aborted and the chain freed. */
static lua_Integer queue_txn(commit_queue *q, const odo_group *gs, size_t n,
                             int sync, odo_chain *chain, odo_write_done *done,
                             odo_err *e) {
  cq_job *j;
  if (!q->started && !queue_start(q, e)) {
    odo_chain_free(chain);
    odo_txn_abort(q->store);
    return 0;
  }
  j = calloc(1, sizeof *j);
  if (j) {
    j->chain = chain;
    j->groups = malloc((n ? n : 1) * sizeof *gs);
  } else {
    odo_chain_free(chain);
  }
  if (j == NULL || j->groups == NULL) {
    job_free(j);
    odo_txn_abort(q->store);
    return odo_err_set(e, "ENOMEM", "out of memory queueing a write");
  }
  if (!odo_txn_detach(q->store, &j->d, e)) {
    job_free(j);
    return 0;
  }
  j->done = done;
  /* a core writer's write may hold no stream (own heads: sync_serve.c) */
  j->writes = j->d.n > 0 || done != NULL;
  if (n) memcpy(j->groups, gs, n * sizeof *gs);
  for (size_t i = 0; i < n; i++) j->groups[i].evs = NULL; /* Lua's */
  j->ngroups = n;
  j->sync = sync;
  j->id = q->next_id++;
  pthread_mutex_lock(&q->mu);
  if (chain && chain->urgent) {
    /* ahead of the bulk jobs queued, after the urgent ones: it depends on
     * none of them (its stream had nothing in flight) */
    cq_job **at = q->urgent_tail ? &q->urgent_tail->next : &q->todo;
    j->next = *at;
    *at = j;
    if (j->next == NULL) q->todo_tail = j;
    q->urgent_tail = j;
  } else {
    if (q->todo_tail) q->todo_tail->next = j;
    else q->todo = j;
    q->todo_tail = j;
  }
  q->inflight++;
  pthread_cond_signal(&q->work);
  if (chain) pthread_cond_signal(&q->vwork);
  pthread_mutex_unlock(&q->mu);
  return j->id;
}

static long long queue_submit(odo_writer *w, int sync, odo_chain *chain,
                              odo_write_done *done, odo_err *e) {
  return (long long)queue_txn((commit_queue *)w, NULL, 0, sync, chain, done, e);
}

/***
 * Stages groups of own events, as `store:append_many` does, and queues
 * their write for the worker. Groups that fail their expected revision or
 * a limit are not written and report why when the write is collected.
 * @function queue:submit
 * @tparam table groups array of {stream=, events=, expected=}
 * @tparam[opt] table opts `sync` (default: the store's)
 * @treturn integer the write's id, as `collect` reports it
 * @treturn[2] nil
 * @treturn[2] string "ENOMEM: ...", "EAGAIN: ..."
 */
static int l_queue_submit(lua_State *L) {
  commit_queue *q = check_queue(L);
  odo_store *s = q->store;
  odo_err e = {0};
  size_t n;
  odo_group *gs;
  lua_Integer id;
  int sync = s->sync_default;
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    sync = odo_fieldbool(L, 3, "sync", s->sync_default);
  }
  gs = odo_read_groups(L, s, 2, &n);
  s->staging_async = 1; /* stage after the writes in flight, not wait */
  odo_stage_groups(s, gs, n);
  s->staging_async = 0;
  id = queue_txn(q, gs, n, sync, NULL, NULL, &e);
  if (id == 0) return odo_err_push(L, &e);
  lua_pushinteger(L, id);
  return 1;
}

/***
 * The descriptor that becomes readable when writes are done (watch it,
 * then `collect`).
 * @function queue:fd
 * @treturn integer
 */
static int l_queue_fd(lua_State *L) {
  commit_queue *q = check_queue(L);
  lua_pushinteger(L, q->efd);
  return 1;
}

/***
 * Writes queued and not yet collected.
 * @function queue:pending
 * @treturn integer
 */
static int l_queue_pending(lua_State *L) {
  commit_queue *q = luaL_checkudata(L, 1, QUEUE_CLASS);
  lua_pushinteger(L, (lua_Integer)q->inflight);
  return 1;
}

/***
 * Takes the writes that are done, in the order they were submitted, and
 * makes their catalogue entries the store's (see `store:changes`). Never
 * waits.
 * @function queue:collect
 * @treturn table array of {id=, results=} (results: per group the new
 *   last revision or "NAME: message") or {id=, err=, name=} when the
 *   write failed and no group was written
 */
static int l_queue_collect(lua_State *L) {
  commit_queue *q = check_queue(L);
  cq_job *list;
  uint64_t count;
  int i = 0;
  if (read(q->efd, &count, sizeof count) < 0) {
    /* EAGAIN: nothing signalled since the last read; the list says */
  }
  pthread_mutex_lock(&q->mu);
  apply_finished(q);
  list = q->fin;
  q->fin = q->fin_tail = NULL;
  for (cq_job *j = list; j; j = j->next) q->inflight--;
  if (q->inflight == 0) q->broken = 0; /* nothing staged after a failure */
  pthread_mutex_unlock(&q->mu);
  lua_newtable(L);
  while (list) {
    cq_job *j = list;
    list = j->next;
    j->next = NULL;
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, j->id);
    lua_setfield(L, -2, "id");
    if (j->failed) {
      lua_pushfstring(L, "%s: %s", j->err.name, j->err.msg);
      lua_setfield(L, -2, "err");
      lua_pushstring(L, j->err.name);
      lua_setfield(L, -2, "name");
    } else {
      odo_push_group_results(L, j->groups, j->ngroups);
      lua_setfield(L, -2, "results");
    }
    lua_rawseti(L, -2, ++i);
    job_free(j);
  }
  return 1;
}

/***
 * Waits (blocking the calling thread) until every queued write is done;
 * then `collect` takes them. For closing, and for hosts that must.
 * @function queue:wait
 */
static int l_queue_wait(lua_State *L) {
  commit_queue *q = check_queue(L);
  queue_settle(&q->writer);
  return 0;
}

/***
 * Waits for the queued writes, stops the worker and closes the
 * descriptor (stop watching it first). Uncollected results are dropped.
 * Idempotent.
 * @function queue:close
 */
static int l_queue_close(lua_State *L) {
  queue_release(luaL_checkudata(L, 1, QUEUE_CLASS));
  return 0;
}

void odo_commit_queue_open(lua_State *L) {
  static const luaL_Reg methods[] = {{"submit", l_queue_submit},
                                     {"fd", l_queue_fd},
                                     {"pending", l_queue_pending},
                                     {"collect", l_queue_collect},
                                     {"wait", l_queue_wait},
                                     {"close", l_queue_close},
                                     {NULL, NULL}};
  odo_newclass(L, QUEUE_CLASS, methods, l_queue_gc, l_queue_tostring);
  lua_pushcfunction(L, l_commit_queue);
  lua_setfield(L, -2, "commit_queue");
}
