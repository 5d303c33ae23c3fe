/*
 * test_socket_torture.c - SocketId torture: the versioned reference count
 * under concurrent address / dereference / set_failed / create.
 *
 * Why: every layer above keeps SocketIds for ever and addresses them from
 * any thread or fiber at any time; the design promises that a stale id
 * never reaches a socket that reused its slot, that a socket is recycled
 * exactly once and only after its last reference is gone, and that failing
 * is idempotent. Those are races, so they are tested as races.
 *
 * Each socket gets a test object (its `user`) that counts on_failed and
 * on_recycle calls, the references the test holds, and writes and their
 * done() calls; on_recycle frees a payload that holders read, so a
 * recycle under a holder's feet is a use-after-free ASan reports. Then
 * threads and fibers, for a few seconds, randomly: address sockets (current
 * or long dead) and hold them, fail them, replace failed ones with new
 * sockets (reusing freed slots), write to them, and close or corrupt the
 * peer so that sockets also fail by themselves (EOF, bad input).
 * `sequential` checks the same rules one step at a time first;
 * `failed_without_error` watches sockets being failed for the moment where
 * one reads as failed but weft_socket_error() still says 0.
 */
#include "net_test_util.h"

#include <sched.h>
#include <sys/stat.h>

enum {
    TABLE = 128,            /* sockets in play at a time */
    MAX_OBJS = 1 << 19,     /* sockets created at most */
    SLOT_SPACE = 1 << 20,   /* slots below this are tracked for reuse */
    THREADS = 3,
    FIBERS = 8,
    PAYLOAD_MAGIC = 0x5eed,
};

typedef struct tobj {
    weft_socket_id_t id;    /* 0 if creation failed */
    ino_t ino;              /* of the socket's fd */
    int peer;               /* the other end; -1 once closed */
    int32_t recycled;       /* on_recycle calls */
    int32_t failed;         /* on_failed calls */
    int32_t wins;           /* set_failed calls of the test that returned 0 */
    int32_t holders;        /* references the test holds right now */
    int32_t writes;         /* writes accepted */
    int32_t dones;          /* done() calls */
    int32_t done_errors;
    uint64_t *payload;      /* freed by on_recycle, read by holders */
} tobj_t;

typedef struct {
    int64_t lookups, hits, holds, stale_lookups, stale_hits, fails, fail_wins, writes,
        writes_refused, replaces, peer_closes;
} counts_t;

static struct {
    tobj_t *table[TABLE];
    tobj_t **all;
    int32_t nall;
    int32_t stop;
    uint8_t *slot_seen;
    int64_t creations, create_failures, slot_reuses, recycles;
    counts_t total;
    weft_mutex_t total_mu;
} T;

/* ---- the handler ---- */

static weft_socket_msg_t *torture_cut(weft_socket_t *s, weft_iobuf_t *in, int *error)
{
    (void)s;
    *error = 0;
    char c;
    if (weft_iobuf_copy_out(in, 0, &c, 1) == 1 && c == 'X')
        *error = -EBADMSG;
    weft_iobuf_clear(in);
    return NULL;
}

static void torture_process(weft_socket_msg_t *msg)
{
    (void)msg;
    WT_ASSERT_MSG(false, "no message is ever cut");
}

static void torture_on_failed(weft_socket_t *s)
{
    tobj_t *t = weft_socket_user(s);
    WT_EQ(NT_ADD(&t->failed, 1), 1);
}

static void close_peer(tobj_t *t)
{
    int p = __atomic_exchange_n(&t->peer, -1, __ATOMIC_SEQ_CST);
    if (p >= 0)
        close(p);
}

static void torture_on_recycle(weft_socket_t *s)
{
    tobj_t *t = weft_socket_user(s);
    WT_ASSERT_MSG(NT_ADD(&t->recycled, 1) == 1, "socket %#llx recycled twice",
                  (unsigned long long)t->id);
    WT_ASSERT_MSG(NT_LOAD(&t->holders) == 0, "socket %#llx recycled while the test holds it",
                  (unsigned long long)t->id);
    free(t->payload);
    close_peer(t);
    NT_ADD(&T.recycles, 1);
}

static const weft_socket_handler_t torture_handler = {
    .cut = torture_cut,
    .process = torture_process,
    .on_failed = torture_on_failed,
    .on_recycle = torture_on_recycle,
};

static void torture_done(void *arg, int error)
{
    tobj_t *t = arg;
    if (error)
        NT_ADD(&t->done_errors, 1);
    NT_ADD(&t->dones, 1);
}

/* ---- creating ---- */

/* A new socket on a socketpair, or NULL once MAX_OBJS were made. */
static tobj_t *create_obj(void)
{
    int32_t idx = NT_ADD(&T.nall, 1) - 1;
    if (idx >= MAX_OBJS) {
        NT_SUB(&T.nall, 1);
        return NULL;
    }
    tobj_t *t = calloc(1, sizeof(*t));
    WT_ASSERT(t);
    t->payload = malloc(8 * sizeof(uint64_t));
    WT_ASSERT(t->payload);
    for (int i = 0; i < 8; i++)
        t->payload[i] = PAYLOAD_MAGIC;
    int sv[2];
    nt_socketpair(sv);
    struct stat st;
    WT_EQ(fstat(sv[0], &st), 0);
    t->ino = st.st_ino;
    t->peer = sv[1];
    weft_socket_options_t o = {
        .fd = sv[0], .handler = &torture_handler, .user = t, .max_unwritten = 256 << 10};
    weft_socket_id_t id = 0;
    int rc = weft_socket_create(&id, &o);
    if (rc != 0) {
        /* It failed and was recycled (on_recycle closed the peer). */
        NT_ADD(&T.create_failures, 1);
        id = 0;
    } else {
        uint32_t slot = (uint32_t)id;
        if (slot < SLOT_SPACE && NT_XCHG(&T.slot_seen[slot], 1))
            NT_ADD(&T.slot_reuses, 1);
    }
    t->id = id;
    NT_ADD(&T.creations, 1);
    NT_STORE(&T.all[idx], t);
    return t;
}

/* ---- the operations ---- */

typedef struct {
    uint64_t rng;
    bool fiber;
    counts_t n;
} actor_t;

static void pause_briefly(actor_t *a)
{
    uint64_t r = nt_below(&a->rng, 8);
    if (r == 0)
        weft_fiber_usleep(nt_below(&a->rng, 200));
    else if (r < 4)
        a->fiber ? weft_fiber_yield() : (void)sched_yield();
}

static void check_held(tobj_t *t, weft_socket_t *s)
{
    WT_EQ(NT_LOAD(&t->recycled), 0);
    for (int i = 0; i < 8; i++)
        WT_EQ(t->payload[i], PAYLOAD_MAGIC);
    WT_EQ(weft_socket_id(s), t->id);
    struct stat st;
    WT_ASSERT_MSG(fstat(weft_socket_fd(s), &st) == 0 && st.st_ino == t->ino,
                  "the fd of a socket held by the test was closed or replaced");
}

/* Addresses t's id; if that works, it must be t's socket, alive until we
 * let go of it. */
static bool lookup(actor_t *a, tobj_t *t, bool hold)
{
    if (!t || !t->id)
        return false;
    weft_socket_t *s = weft_socket_address(t->id);
    if (!s)
        return false;
    WT_ASSERT_MSG(weft_socket_user(s) == t, "id %#llx resolved to another socket",
                  (unsigned long long)t->id);
    NT_ADD(&t->holders, 1);
    check_held(t, s);
    if (hold) {
        pause_briefly(a);
        check_held(t, s);
        a->n.holds++;
    }
    NT_SUB(&t->holders, 1);
    weft_socket_dereference(s);
    return true;
}

static void fail_op(actor_t *a, tobj_t *t)
{
    if (!t->id)
        return;
    int rc = weft_socket_set_failed(t->id, ECONNRESET);
    if (rc == 0) {
        WT_EQ(NT_ADD(&t->wins, 1), 1);
        a->n.fail_wins++;
    } else {
        WT_EQ(rc, -ESRCH);
    }
    WT_ASSERT_MSG(weft_socket_address(t->id) == NULL, "a failed socket was addressed");
    WT_EQ(weft_socket_set_failed(t->id, ECONNRESET), -ESRCH);
    a->n.fails++;
}

static void replace_op(actor_t *a, int i)
{
    tobj_t *t = NT_LOAD(&T.table[i]);
    if (t->id) {
        weft_socket_t *s = weft_socket_address(t->id);
        if (s) {
            weft_socket_dereference(s);
            return; /* still healthy */
        }
    }
    tobj_t *n = create_obj();
    if (!n)
        return;
    if (!__atomic_compare_exchange_n(&T.table[i], &t, n, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE) &&
        n->id)
        weft_socket_set_failed(n->id, ECONNABORTED); /* lost the race: retire it */
    a->n.replaces++;
}

static void write_op(actor_t *a, tobj_t *t)
{
    if (!t->id)
        return;
    weft_socket_t *s = weft_socket_address(t->id);
    if (!s)
        return;
    WT_ASSERT(weft_socket_user(s) == t);
    NT_ADD(&t->holders, 1);
    size_t n = nt_below(&a->rng, 16) ? 1 + nt_below(&a->rng, 512) : 64 << 10;
    static const char junk[64 << 10];
    weft_iobuf_t b = WEFT_IOBUF_INIT;
    WT_EQ(weft_iobuf_append(&b, junk, n), 0);
    weft_write_options_t wo = {.done = torture_done, .arg = t};
    int rc = weft_socket_write(s, &b, &wo);
    if (rc == 0) {
        NT_ADD(&t->writes, 1);
        WT_ASSERT_MSG(weft_iobuf_empty(&b), "write returned 0 but left the data with the caller");
        a->n.writes++;
    } else {
        WT_ASSERT_MSG(rc == -WEFT_EOVERCROWDED || (rc < 0 && weft_socket_failed(s)),
                      "write: %d", rc);
        a->n.writes_refused++;
    }
    weft_iobuf_clear(&b);
    NT_SUB(&t->holders, 1);
    weft_socket_dereference(s);
}

/* The peer goes away, after sending a bad byte or not: the socket fails by
 * itself (EOF or bad input) unless someone fails it first. */
static void peer_op(actor_t *a, tobj_t *t)
{
    int p = __atomic_exchange_n(&t->peer, -1, __ATOMIC_SEQ_CST);
    if (p < 0)
        return;
    if (nt_below(&a->rng, 2)) {
        ssize_t w = write(p, "X", 1);
        (void)w;
    }
    close(p);
    a->n.peer_closes++;
}

static void actor_step(actor_t *a)
{
    int i = (int)nt_below(&a->rng, TABLE);
    tobj_t *t = NT_LOAD(&T.table[i]);
    uint64_t r = nt_below(&a->rng, 100);
    if (r < 40) {
        a->n.lookups++;
        a->n.hits += lookup(a, t, nt_below(&a->rng, 4) == 0);
    } else if (r < 55) {
        int32_t nall = NT_LOAD(&T.nall);
        tobj_t *old = nall ? NT_LOAD(&T.all[nt_below(&a->rng, (uint64_t)nall)]) : NULL;
        a->n.stale_lookups++;
        a->n.stale_hits += lookup(a, old, false);
    } else if (r < 63) {
        fail_op(a, t);
    } else if (r < 80) {
        replace_op(a, i);
    } else if (r < 95) {
        write_op(a, t);
    } else {
        peer_op(a, t);
    }
}

static void actor_run(actor_t *a)
{
    while (!NT_LOAD(&T.stop))
        actor_step(a);
    weft_mutex_lock(&T.total_mu);
    int64_t *dst = (int64_t *)&T.total, *src = (int64_t *)&a->n;
    for (size_t k = 0; k < sizeof(counts_t) / sizeof(int64_t); k++)
        dst[k] += src[k];
    weft_mutex_unlock(&T.total_mu);
}

static void actor_fiber(void *p)
{
    actor_run(p);
}

static void *actor_thread(void *p)
{
    actor_run(p);
    return NULL;
}

/* ---- checks ---- */

static bool all_recycled(void)
{
    int32_t n = NT_LOAD(&T.nall);
    for (int32_t i = 0; i < n; i++) {
        tobj_t *t = NT_LOAD(&T.all[i]);
        if (!t || !NT_LOAD(&t->recycled))
            return false;
    }
    return true;
}

static bool all_done(void)
{
    int32_t n = NT_LOAD(&T.nall);
    for (int32_t i = 0; i < n; i++) {
        tobj_t *t = NT_LOAD(&T.all[i]);
        if (NT_LOAD(&t->dones) != NT_LOAD(&t->writes))
            return false;
    }
    return true;
}

static int64_t sockets_alive(void)
{
    weft_socket_stats_t st;
    weft_socket_stats(&st);
    return st.alive;
}

/* ---- cases ---- */

/* The rules one at a time, before the races. */
static void sequential(void)
{
    int64_t alive0 = sockets_alive();
    T.all = calloc(1000, sizeof(tobj_t *));
    T.slot_seen = calloc(SLOT_SPACE, 1);
    tobj_t *t = create_obj();
    WT_NE(t->id, 0);
    weft_socket_t *s = weft_socket_address(t->id);
    WT_ASSERT(s && weft_socket_user(s) == t);
    WT_EQ(weft_socket_set_failed(t->id, ECONNRESET), 0);
    WT_EQ(weft_socket_set_failed(t->id, ECONNRESET), -ESRCH);
    WT_ASSERT(weft_socket_address(t->id) == NULL);
    WT_EQ(t->failed, 1);
    /* Still ours until we let go. */
    nt_sleep_ms(5);
    WT_EQ(NT_LOAD(&t->recycled), 0);
    WT_ASSERT(weft_socket_failed(s));
    WT_EQ(weft_socket_error(s), ECONNRESET);
    WT_EQ(weft_socket_id(s), t->id);
    weft_socket_dereference(s);
    NT_AWAIT(NT_LOAD(&t->recycled) == 1, 5);

    /* New sockets reuse freed slots (fail each one that does not, so it
     * frees its own): the older ids of a reused slot must neither address
     * nor fail the new socket. */
    tobj_t *n = NULL, *old = NULL;
    while (!n && T.nall < 1000) {
        tobj_t *c = create_obj();
        for (int32_t i = 0; i < T.nall - 1 && !n; i++)
            if ((uint32_t)T.all[i]->id == (uint32_t)c->id)
                n = c, old = T.all[i];
        if (!n) {
            WT_EQ(weft_socket_set_failed(c->id, ECONNRESET), 0);
            NT_AWAIT(NT_LOAD(&c->recycled) == 1, 5);
        }
    }
    WT_ASSERT_MSG(n, "no slot was reused by %d new sockets", T.nall);
    WT_NE(n->id, old->id);
    WT_ASSERT(weft_socket_address(old->id) == NULL);
    WT_EQ(weft_socket_set_failed(old->id, ECONNRESET), -ESRCH);
    s = weft_socket_address(n->id);
    WT_ASSERT(s && weft_socket_user(s) == n && !weft_socket_failed(s));
    weft_socket_dereference(s);
    WT_EQ(weft_socket_set_failed(n->id, ECONNRESET), 0);
    NT_AWAIT(all_recycled(), 10);
    NT_AWAIT(sockets_alive() == alive0, 10);
    for (int32_t i = 0; i < T.nall; i++) {
        WT_EQ(T.all[i]->recycled, 1);
        WT_EQ(T.all[i]->failed, 1);
        free(T.all[i]);
    }
    free(T.all);
    free(T.slot_seen);
    memset(&T, 0, sizeof(T));
}

static void torture(void)
{
    int fds0 = nt_count_fds();
    int64_t alive0 = sockets_alive();
    weft_mutex_init(&T.total_mu);
    T.all = calloc(MAX_OBJS, sizeof(tobj_t *));
    T.slot_seen = calloc(SLOT_SPACE, 1);
    WT_ASSERT(T.all && T.slot_seen);
    for (int i = 0; i < TABLE; i++)
        T.table[i] = create_obj();

    actor_t actors[THREADS + FIBERS];
    pthread_t threads[THREADS];
    weft_fiber_t fibers[FIBERS];
    for (int i = 0; i < THREADS + FIBERS; i++)
        actors[i] = (actor_t){.rng = 0x1234567ull * (uint64_t)(i + 1), .fiber = i >= THREADS};
    for (int i = 0; i < THREADS; i++)
        threads[i] = nt_thread(actor_thread, &actors[i]);
    for (int i = 0; i < FIBERS; i++)
        fibers[i] = nt_start(actor_fiber, &actors[THREADS + i]);
    const int64_t duration = 3 * WEFT_NS_PER_SEC;
    int64_t t0 = nt_now();
    while (nt_now() - t0 < duration && NT_LOAD(&T.nall) < MAX_OBJS)
        nt_sleep_ms(20);
    NT_STORE(&T.stop, 1);
    for (int i = 0; i < THREADS; i++)
        nt_thread_join(threads[i]);
    for (int i = 0; i < FIBERS; i++)
        nt_join(fibers[i]);
    int64_t dt = nt_now() - t0;

    for (int i = 0; i < TABLE; i++)
        if (T.table[i]->id)
            weft_socket_set_failed(T.table[i]->id, WEFT_ECLOSE);
    NT_AWAIT(all_recycled(), 30);
    NT_AWAIT(all_done(), 30);
    NT_AWAIT(sockets_alive() == alive0, 30);
    nt_sleep_ms(50); /* a second recycle would show up now */

    int64_t wins = 0, done_errors = 0, writes = 0;
    for (int32_t i = 0; i < T.nall; i++) {
        tobj_t *t = T.all[i];
        WT_EQ(t->recycled, 1);
        WT_EQ(t->failed, 1);
        WT_LE(t->wins, 1);
        WT_EQ(t->holders, 0);
        WT_EQ(t->dones, t->writes);
        wins += t->wins;
        done_errors += t->done_errors;
        writes += t->writes;
    }
    WT_EQ(T.recycles, T.nall);
    counts_t *c = &T.total;
    WT_NOTE("torture: %.1f s, %d threads + %d fibers, %lld sockets created (%lld slot reuses, "
            "%lld creations failed)",
            nt_ms(dt) / 1e3, THREADS, FIBERS, (long long)T.creations, (long long)T.slot_reuses,
            (long long)T.create_failures);
    WT_NOTE("torture: %lld lookups (%lld hits, %lld held), %lld stale lookups (%lld hits), "
            "%lld set_failed (%lld won by the test, the rest of %lld failures by EOF, bad input "
            "or I/O), %lld writes (%lld refused, %lld done with an error), %lld peers closed",
            (long long)c->lookups, (long long)c->hits, (long long)c->holds,
            (long long)c->stale_lookups, (long long)c->stale_hits, (long long)c->fails,
            (long long)wins, (long long)T.nall, (long long)writes, (long long)c->writes_refused,
            (long long)done_errors, (long long)c->peer_closes);
    WT_GT(T.slot_reuses, 0);
    WT_GT(c->hits, 0);
    WT_GT(c->stale_hits, 0);
    for (int32_t i = 0; i < T.nall; i++)
        free(T.all[i]);
    free(T.all);
    free(T.slot_seen);
    NT_AWAIT(nt_count_fds() == fds0, 10);
}

/* A socket that reads as failed must say why: weft_socket_error() is 0 only
 * while healthy, and weft_socket_write() turns the error into its return
 * value (a 0 there would claim the data was queued). A checker thread
 * watches each socket while the main thread fails it. */
static struct {
    weft_socket_t *cur;
    int32_t round;   /* bumped by main to start a round */
    int32_t seen;    /* round the checker finished */
    int32_t zero_errors;
    int32_t stop;
} R;

static void *error_checker(void *unused)
{
    (void)unused;
    int32_t done = 0;
    while (!NT_LOAD(&R.stop)) {
        int32_t round = NT_LOAD(&R.round);
        if (round == done) {
            sched_yield();
            continue;
        }
        weft_socket_t *s = NT_LOAD(&R.cur);
        /* Spin (the window is a few instructions wide), but let a main
         * thread that shares our CPU get on with failing the socket. */
        for (unsigned n = 1; !weft_socket_failed(s); n++)
            if (n % 256 == 0)
                sched_yield();
        if (weft_socket_error(s) == 0)
            NT_ADD(&R.zero_errors, 1);
        done = round;
        NT_STORE(&R.seen, round);
    }
    return NULL;
}

static void failed_without_error(void)
{
    int rounds = 200000, i; /* bounded by time, not scaled: a race detector */
    int64_t end = nt_now() + 3 * WEFT_NS_PER_SEC;
    pthread_t t = nt_thread(error_checker, NULL);
    for (i = 1; i <= rounds && nt_now() < end; i++) {
        int sv[2];
        nt_socketpair(sv);
        weft_socket_options_t o = {.fd = sv[0]};
        weft_socket_id_t id;
        WT_EQ(weft_socket_create(&id, &o), 0);
        weft_socket_t *s = weft_socket_address(id);
        NT_STORE(&R.cur, s);
        NT_STORE(&R.round, i);
        for (volatile int k = 0; k < (i & 63); k++)
            ; /* vary the moment */
        WT_EQ(weft_socket_set_failed(id, ECONNRESET), 0);
        while (NT_LOAD(&R.seen) != i)
            sched_yield();
        weft_socket_dereference(s);
        close(sv[1]);
    }
    NT_STORE(&R.stop, 1);
    nt_thread_join(t);
    WT_NOTE("failed_without_error: %d rounds, %d saw a failed socket with error 0", i - 1,
            R.zero_errors);
    WT_EQ(R.zero_errors, 0);
}

int main(int argc, char **argv)
{
    static const nt_case_t cases[] = {
        NT_CASE(sequential),
        NT_CASE(torture),
        NT_CASE(failed_without_error),
    };
    nt_run_cases(argc, argv, cases, NT_NCASES(cases));
    WT_EQ(weft_fiber_shutdown(), 0);
    return 0;
}
