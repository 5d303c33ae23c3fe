/*
 * iobuf.c - see iobuf.h.
 *
 * Blocks. A pooled block is one WEFT_IOBUF_BLOCK_SIZE (8 KiB) allocation:
 * a 48-byte header followed by its bytes. The header lives inside the 8 KiB
 * rather than in front of an 8 KiB data area because 8 KiB is an exact size
 * class for tcmalloc and jemalloc and two whole pages, while 8 KiB + 48 would
 * round up to the next class (10-12 KiB) and waste a fifth of every block;
 * nobody needs the data area to be a power of two, since readv, writev and
 * memcpy take any length. External blocks are a bare header pointing at the
 * user's memory, with the user's deleter.
 *
 * Who writes a block. Bytes are written into a block only at its frontier
 * (`used`) and only by the thread that holds it as its share block, or that
 * has just taken it fresh from the cache; once a byte is below `used` and
 * referenced it never changes. So references to the bytes below the
 * frontier can be handed to other threads while the owner keeps appending
 * above it, and only the refcount is shared between threads.
 *
 * Share block. Each thread keeps one partly filled block (holding one
 * reference to it). Appends, formatted text, small protobuf messages and the
 * start of every read go into its free tail, so small messages from many
 * buffers pack into one block. A reference that ends exactly where a new
 * piece begins in the same block is extended instead of adding another
 * (push_ref), which is how a buffer "owns the tail" it keeps appending to.
 * When a fresh block is needed, whichever of it and the share block has more
 * room stays as the share block (space_put).
 *
 * Cache. Free blocks go to the cache of the thread that drops the last
 * reference (not the one that allocated them), up to CACHE_MAX; beyond that
 * they go back to malloc. Per-thread caches need no lock; a consumer thread
 * that frees more than it allocates just feeds malloc. Under AddressSanitizer
 * cached blocks are poisoned, so a stale reference into one is still caught.
 *
 * The thread-local state is reached through tls_get(), which is not inlined:
 * no function here blocks, so a call stays on one thread, but a fiber that
 * calls two of them can be on two threads, and the compiler must not reuse a
 * thread-local address computed for the first call.
 */
#include "net/iobuf.h"

#include "fiber/sanitizer_internal.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CACHE_MAX 32       /* free blocks kept per thread (256 KiB) */
#define READ_MAX_BLOCKS 16 /* one read fills at most 1 + 16 blocks (136 KiB) */
_Static_assert(WEFT_IOBUF_READ_MAX <= READ_MAX_BLOCKS * (WEFT_IOBUF_BLOCK_SIZE - 64),
               "WEFT_IOBUF_READ_MAX promises more than one read takes");
#define WRITE_MAX_IOV 256  /* iovecs per writev: 4 KiB of a fiber stack */
#define MIN_HEAP_REFS 8    /* first heap reference array */

_Static_assert(WRITE_MAX_IOV <= IOV_MAX, "writev takes at most IOV_MAX iovecs");
_Static_assert(sizeof(weft_iobuf_t) == 64, "weft_iobuf_t is one cache line");

struct weft__iobuf_block {
    uint32_t refs;     /* atomic */
    uint32_t used;     /* bytes written; see "who writes a block" */
    uint32_t cap;      /* bytes at data */
    uint32_t external; /* 1: data is user memory, given back by the deleter */
    char *data;
    union {
        struct {
            weft_iobuf_deleter_fn *fn;
            void *arg;
        } deleter;                       /* external blocks */
        struct weft__iobuf_block *next;  /* pooled blocks in a cache */
    } u;
    _Alignas(16) char payload[];
};

#define BLOCK_CAP ((uint32_t)(WEFT_IOBUF_BLOCK_SIZE - sizeof(struct weft__iobuf_block)))

#ifdef WEFT_ASAN
void __asan_poison_memory_region(void const volatile *addr, size_t size);
#define POISON(p, n) __asan_poison_memory_region((p), (n))
#define UNPOISON(p, n) __asan_unpoison_memory_region((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

static inline size_t min_size(size_t a, size_t b)
{
    return a < b ? a : b;
}

/* ---- statistics ---------------------------------------------------------- */

static int64_t stat_blocks;   /* pooled blocks malloc'ed and not freed */
static int64_t stat_external; /* external blocks alive */

static inline void stat_add(int64_t *counter, int64_t d)
{
    __atomic_fetch_add(counter, d, __ATOMIC_RELAXED);
}

/* ---- per-thread state ---------------------------------------------------- */

struct iobuf_tls {
    struct weft__iobuf_block *share; /* share block (one reference) or NULL */
    struct weft__iobuf_block *free;  /* cached free blocks */
    uint32_t nfree;                  /* written by the owner, read by stats */
    int registered;
    struct iobuf_tls *next, **pprev; /* in `registry`, for stats */
};

static __thread struct iobuf_tls tls_state __attribute__((tls_model("initial-exec")));
static pthread_key_t tls_key;
static pthread_once_t tls_key_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct iobuf_tls *registry;

static void block_unref(struct weft__iobuf_block *blk);
static void thread_flush(struct iobuf_tls *t);

/* Thread exit: give everything back and leave the registry. A block freed
 * later by another destructor on this thread registers the thread again, and
 * the key's destructor runs once more. */
static void tls_exit(void *arg)
{
    struct iobuf_tls *t = arg;
    thread_flush(t);
    pthread_mutex_lock(&registry_lock);
    *t->pprev = t->next;
    if (t->next)
        t->next->pprev = t->pprev;
    pthread_mutex_unlock(&registry_lock);
    t->registered = 0;
}

static void tls_key_create(void)
{
    if (pthread_key_create(&tls_key, tls_exit) != 0)
        abort();
}

static void tls_register(struct iobuf_tls *t)
{
    pthread_once(&tls_key_once, tls_key_create);
    pthread_mutex_lock(&registry_lock);
    t->next = registry;
    if (t->next)
        t->next->pprev = &t->next;
    t->pprev = &registry;
    registry = t;
    pthread_mutex_unlock(&registry_lock);
    pthread_setspecific(tls_key, t);
    t->registered = 1;
}

/* The calling thread's state; see the comment at the top for noinline. */
static __attribute__((noinline)) struct iobuf_tls *tls_get(void)
{
    struct iobuf_tls *t = &tls_state;
    __asm__ volatile("" : "+r"(t)::"memory");
    if (__builtin_expect(!t->registered, 0))
        tls_register(t);
    return t;
}

/* ---- blocks -------------------------------------------------------------- */

static inline uint32_t room(const struct weft__iobuf_block *blk)
{
    return blk->cap - blk->used;
}

static inline void block_ref(struct weft__iobuf_block *blk)
{
    __atomic_fetch_add(&blk->refs, 1, __ATOMIC_RELAXED);
}

/* An empty block holding one reference (the caller's), or NULL. */
static struct weft__iobuf_block *block_new(struct iobuf_tls *t)
{
    struct weft__iobuf_block *blk = t->free;
    if (blk) {
        t->free = blk->u.next;
        __atomic_store_n(&t->nfree, t->nfree - 1, __ATOMIC_RELAXED);
        UNPOISON(blk->data, blk->cap);
    } else {
        blk = malloc(WEFT_IOBUF_BLOCK_SIZE);
        if (!blk)
            return NULL;
        stat_add(&stat_blocks, 1);
        blk->cap = BLOCK_CAP;
        blk->external = 0;
        blk->data = blk->payload;
    }
    __atomic_store_n(&blk->refs, 1, __ATOMIC_RELAXED);
    blk->used = 0;
    return blk;
}

static void block_free_pooled(struct weft__iobuf_block *blk)
{
    free(blk);
    stat_add(&stat_blocks, -1);
}

/* The last reference went away. */
static void block_free(struct weft__iobuf_block *blk)
{
    if (blk->external) {
        weft_iobuf_deleter_fn *fn = blk->u.deleter.fn;
        void *data = blk->data, *arg = blk->u.deleter.arg;
        free(blk);
        stat_add(&stat_external, -1);
        if (fn)
            fn(data, arg);
        return;
    }
    struct iobuf_tls *t = tls_get();
    if (t->nfree >= CACHE_MAX) {
        block_free_pooled(blk);
        return;
    }
    POISON(blk->data, blk->cap);
    blk->u.next = t->free;
    t->free = blk;
    __atomic_store_n(&t->nfree, t->nfree + 1, __ATOMIC_RELAXED);
}

static void block_unref(struct weft__iobuf_block *blk)
{
    /* Holding the only reference, nobody else can take one: skip the
     * locked instruction, the common case for blocks nobody shares. */
    if (__atomic_load_n(&blk->refs, __ATOMIC_ACQUIRE) == 1 ||
        __atomic_sub_fetch(&blk->refs, 1, __ATOMIC_ACQ_REL) == 0)
        block_free(blk);
}

static void thread_flush(struct iobuf_tls *t)
{
    struct weft__iobuf_block *s = t->share;
    t->share = NULL;
    if (s)
        block_unref(s);
    while (t->free) {
        struct weft__iobuf_block *blk = t->free;
        t->free = blk->u.next;
        UNPOISON(blk->data, blk->cap);
        block_free_pooled(blk);
    }
    __atomic_store_n(&t->nfree, 0, __ATOMIC_RELAXED);
}

void weft__iobuf_thread_flush(void)
{
    thread_flush(tls_get());
}

/* Space to write at least `want` contiguous bytes (1 <= want <= BLOCK_CAP):
 * the share block if it has that much room, else a fresh block. The caller
 * writes at blk->data + blk->used, commits, then hands the block to
 * space_put(). NULL when out of memory. */
static struct weft__iobuf_block *space_get(struct iobuf_tls *t, size_t want)
{
    struct weft__iobuf_block *s = t->share;
    if (s && room(s) >= want)
        return s;
    return block_new(t);
}

/* Ends a space_get(): keeps as share block whichever of blk and the share
 * block has more room, dropping the thread's reference to the other, and
 * drops a share block with no room left. */
static void space_put(struct iobuf_tls *t, struct weft__iobuf_block *blk)
{
    struct weft__iobuf_block *s = t->share;
    if (blk != s) {
        if (s && room(s) >= room(blk)) {
            block_unref(blk);
            blk = s;
        } else {
            t->share = blk;
            if (s)
                block_unref(s);
        }
    }
    if (room(blk) == 0) {
        t->share = NULL;
        block_unref(blk);
    }
}

/* ---- the reference ring -------------------------------------------------- */

static inline uint32_t ring_cap(const weft_iobuf_t *b)
{
    return b->heap ? b->cap : WEFT_IOBUF_INLINE_REFS;
}

/* Reference i (0 = first) of b. */
static inline weft_iobuf_ref_t *ref_at(const weft_iobuf_t *b, size_t i)
{
    weft_iobuf_ref_t *ring = b->heap ? b->heap : (weft_iobuf_ref_t *)b->small;
    return &ring[(b->start + i) & (ring_cap(b) - 1)];
}

static inline char *ref_data(const weft_iobuf_ref_t *r)
{
    return r->block->data + r->offset;
}

/* Makes room for k more references, so that the pushes that follow cannot
 * fail. Returns 0 or -ENOMEM. */
static int ensure_refs(weft_iobuf_t *b, size_t k)
{
    size_t need = (size_t)b->nref + k;
    uint32_t cap = ring_cap(b);
    if (need <= cap)
        return 0;
    size_t ncap = cap < MIN_HEAP_REFS ? MIN_HEAP_REFS : (size_t)cap * 2;
    while (ncap < need)
        ncap *= 2;
    if (ncap > UINT32_MAX / 2 + 1)
        return -ENOMEM;
    weft_iobuf_ref_t *ring = malloc(ncap * sizeof(*ring));
    if (!ring)
        return -ENOMEM;
    for (uint32_t i = 0; i < b->nref; i++)
        ring[i] = *ref_at(b, i);
    free(b->heap);
    b->heap = ring;
    b->cap = (uint32_t)ncap;
    b->start = 0;
    return 0;
}

/* Appends a reference to len > 0 bytes at off in blk, extending the last
 * reference when the bytes follow it in the same block. owned: the caller
 * hands over a reference it holds; else one is taken. Room must have been
 * made with ensure_refs(). */
static void push_ref(weft_iobuf_t *b, struct weft__iobuf_block *blk, uint32_t off,
                     uint32_t len, bool owned)
{
    b->length += len;
    if (b->nref) {
        weft_iobuf_ref_t *back = ref_at(b, b->nref - 1);
        if (back->block == blk && back->offset + back->length == off &&
            back->length <= UINT32_MAX - len) {
            back->length += len;
            if (owned)
                block_unref(blk); /* never the last: back holds one */
            return;
        }
    }
    assert(b->nref < ring_cap(b));
    weft_iobuf_ref_t *r = ref_at(b, b->nref);
    r->block = blk;
    r->offset = off;
    r->length = len;
    b->nref++;
    if (!owned)
        block_ref(blk);
}

/* Takes the first reference out of b, handing its block reference to the
 * caller. */
static weft_iobuf_ref_t unlink_front(weft_iobuf_t *b)
{
    weft_iobuf_ref_t r = *ref_at(b, 0);
    b->length -= r.length;
    b->nref--;
    b->start = b->nref ? (b->start + 1) & (ring_cap(b) - 1) : 0;
    return r;
}

static weft_iobuf_ref_t unlink_back(weft_iobuf_t *b)
{
    weft_iobuf_ref_t r = *ref_at(b, b->nref - 1);
    b->length -= r.length;
    b->nref--;
    if (!b->nref)
        b->start = 0;
    return r;
}

/* Adds k bytes just written at blk's frontier to the end of b. */
static void commit(weft_iobuf_t *b, struct weft__iobuf_block *blk, size_t k)
{
    if (!k)
        return;
    push_ref(b, blk, blk->used, (uint32_t)k, false);
    blk->used += (uint32_t)k;
}

/* Finds byte `offset` (< length): reference *i, *off bytes into it. */
static void seek(const weft_iobuf_t *b, size_t offset, size_t *i, size_t *off)
{
    size_t j = 0;
    for (;;) {
        size_t len = ref_at(b, j)->length;
        if (offset < len)
            break;
        offset -= len;
        j++;
    }
    *i = j;
    *off = offset;
}

/* ---- life cycle ---------------------------------------------------------- */

void weft_iobuf_init(weft_iobuf_t *b)
{
    memset(b, 0, sizeof(*b));
}

void weft_iobuf_clear(weft_iobuf_t *b)
{
    for (uint32_t i = 0; i < b->nref; i++)
        block_unref(ref_at(b, i)->block);
    if (b->heap)
        free(b->heap);
    weft_iobuf_init(b);
}

void weft_iobuf_move(weft_iobuf_t *dst, weft_iobuf_t *src)
{
    if (dst == src)
        return;
    weft_iobuf_clear(dst);
    *dst = *src;
    weft_iobuf_init(src);
}

void weft_iobuf_swap(weft_iobuf_t *a, weft_iobuf_t *b)
{
    weft_iobuf_t tmp = *a;
    *a = *b;
    *b = tmp;
}

/* ---- adding bytes -------------------------------------------------------- */

int weft_iobuf_append(weft_iobuf_t *b, const void *data, size_t n)
{
    struct iobuf_tls *t = tls_get();
    const char *p = data;
    size_t done = 0;
    while (done < n) {
        struct weft__iobuf_block *blk;
        if (ensure_refs(b, 1) < 0 || !(blk = space_get(t, 1))) {
            weft_iobuf_pop_back(b, done);
            return -ENOMEM;
        }
        size_t k = min_size(n - done, room(blk));
        memcpy(blk->data + blk->used, p + done, k);
        commit(b, blk, k);
        space_put(t, blk);
        done += k;
    }
    return 0;
}

int weft_iobuf_append_buf(weft_iobuf_t *dst, const weft_iobuf_t *src)
{
    if (dst == src) {
        /* Pushing onto the buffer being read could extend a reference not
         * yet copied; go through a copy of the references. */
        weft_iobuf_t tmp = WEFT_IOBUF_INIT;
        ssize_t rc = weft_iobuf_append_buf(&tmp, src);
        if (rc == 0)
            rc = weft_iobuf_cutn(dst, &tmp, tmp.length);
        weft_iobuf_clear(&tmp);
        return rc < 0 ? (int)rc : 0;
    }
    if (ensure_refs(dst, src->nref) < 0)
        return -ENOMEM;
    for (uint32_t i = 0; i < src->nref; i++) {
        const weft_iobuf_ref_t *r = ref_at(src, i);
        push_ref(dst, r->block, r->offset, r->length, false);
    }
    return 0;
}

int weft_iobuf_append_external(weft_iobuf_t *b, void *data, size_t n,
                               weft_iobuf_deleter_fn *deleter, void *arg)
{
    if (n > UINT32_MAX)
        return -EINVAL;
    if (n == 0) {
        if (deleter)
            deleter(data, arg);
        return 0;
    }
    if (ensure_refs(b, 1) < 0)
        return -ENOMEM;
    struct weft__iobuf_block *blk = malloc(sizeof(*blk));
    if (!blk)
        return -ENOMEM;
    __atomic_store_n(&blk->refs, 1, __ATOMIC_RELAXED);
    blk->used = blk->cap = (uint32_t)n;
    blk->external = 1;
    blk->data = data;
    blk->u.deleter.fn = deleter;
    blk->u.deleter.arg = arg;
    stat_add(&stat_external, 1);
    push_ref(b, blk, 0, (uint32_t)n, true);
    return 0;
}

ssize_t weft_iobuf_vappendf(weft_iobuf_t *b, const char *fmt, va_list ap)
{
    if (ensure_refs(b, 1) < 0)
        return -ENOMEM;
    struct iobuf_tls *t = tls_get();
    /* First try the room there is; if the text is longer, a block with
     * room for it (vsnprintf also writes a NUL, past what we commit). */
    size_t need = 1;
    while (need <= BLOCK_CAP) {
        struct weft__iobuf_block *blk = space_get(t, need);
        if (!blk)
            return -ENOMEM;
        size_t avail = room(blk);
        va_list aq;
        va_copy(aq, ap);
        int r = vsnprintf(blk->data + blk->used, avail, fmt, aq);
        va_end(aq);
        bool fits = r >= 0 && (size_t)r < avail;
        if (fits)
            commit(b, blk, (size_t)r);
        space_put(t, blk);
        if (r < 0)
            return -EINVAL;
        if (fits)
            return r;
        need = (size_t)r + 1;
    }
    /* Longer than a block: format into the heap, then copy. */
    char *tmp = malloc(need);
    if (!tmp)
        return -ENOMEM;
    int r = vsnprintf(tmp, need, fmt, ap);
    ssize_t rc = r < 0 ? -EINVAL : weft_iobuf_append(b, tmp, (size_t)r);
    free(tmp);
    return rc < 0 ? rc : r;
}

ssize_t weft_iobuf_appendf(weft_iobuf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    ssize_t rc = weft_iobuf_vappendf(b, fmt, ap);
    va_end(ap);
    return rc;
}

/* ---- taking bytes out ---------------------------------------------------- */

/* How many references hold the first n bytes. */
static size_t refs_spanning(const weft_iobuf_t *b, size_t n)
{
    size_t k = 0;
    while (n > 0 && k < b->nref) {
        n -= min_size(n, ref_at(b, k)->length);
        k++;
    }
    return k;
}

ssize_t weft_iobuf_cutn(weft_iobuf_t *dst, weft_iobuf_t *src, size_t n)
{
    n = min_size(n, src->length);
    /* Room for every reference moved (dst == src rotates the buffer: each
     * move frees the slot it fills, so this is more than enough). */
    if (ensure_refs(dst, refs_spanning(src, n)) < 0)
        return -ENOMEM;
    size_t left = n;
    while (left > 0) {
        weft_iobuf_ref_t *r = ref_at(src, 0);
        if (r->length <= left) {
            weft_iobuf_ref_t m = unlink_front(src);
            left -= m.length;
            push_ref(dst, m.block, m.offset, m.length, true);
        } else {
            weft_iobuf_ref_t m = {r->block, r->offset, (uint32_t)left};
            r->offset += (uint32_t)left;
            r->length -= (uint32_t)left;
            src->length -= left;
            left = 0;
            push_ref(dst, m.block, m.offset, m.length, false);
        }
    }
    return (ssize_t)n;
}

size_t weft_iobuf_pop_front(weft_iobuf_t *b, size_t n)
{
    n = min_size(n, b->length);
    size_t left = n;
    while (left > 0) {
        weft_iobuf_ref_t *r = ref_at(b, 0);
        if (r->length <= left) {
            weft_iobuf_ref_t m = unlink_front(b);
            left -= m.length;
            block_unref(m.block);
        } else {
            r->offset += (uint32_t)left;
            r->length -= (uint32_t)left;
            b->length -= left;
            left = 0;
        }
    }
    return n;
}

size_t weft_iobuf_pop_back(weft_iobuf_t *b, size_t n)
{
    n = min_size(n, b->length);
    size_t left = n;
    while (left > 0) {
        weft_iobuf_ref_t *r = ref_at(b, b->nref - 1);
        if (r->length <= left) {
            weft_iobuf_ref_t m = unlink_back(b);
            left -= m.length;
            block_unref(m.block);
        } else {
            r->length -= (uint32_t)left;
            b->length -= left;
            left = 0;
        }
    }
    return n;
}

size_t weft_iobuf_copy_out(const weft_iobuf_t *b, size_t offset, void *out, size_t n)
{
    if (offset >= b->length)
        return 0;
    n = min_size(n, b->length - offset);
    size_t i, off, done = 0;
    seek(b, offset, &i, &off);
    for (; done < n; i++, off = 0) {
        const weft_iobuf_ref_t *r = ref_at(b, i);
        size_t k = min_size(n - done, r->length - off);
        memcpy((char *)out + done, ref_data(r) + off, k);
        done += k;
    }
    return n;
}

const void *weft_iobuf_fetch(const weft_iobuf_t *b, void *buf, size_t n)
{
    if (n > b->length)
        return NULL;
    if (b->nref && ref_at(b, 0)->length >= n)
        return ref_data(ref_at(b, 0));
    weft_iobuf_copy_out(b, 0, buf, n);
    return buf;
}

/* Whether the n bytes starting off bytes into reference i equal p[0..n);
 * the buffer must hold them. */
static bool match_at(const weft_iobuf_t *b, size_t i, size_t off, const char *p, size_t n)
{
    for (; n > 0; i++, off = 0) {
        const weft_iobuf_ref_t *r = ref_at(b, i);
        size_t k = min_size(n, r->length - off);
        if (memcmp(ref_data(r) + off, p, k) != 0)
            return false;
        p += k;
        n -= k;
    }
    return true;
}

bool weft_iobuf_equals(const weft_iobuf_t *b, const void *data, size_t n)
{
    return b->length == n && match_at(b, 0, 0, data, n);
}

ssize_t weft_iobuf_find(const weft_iobuf_t *b, const void *needle, size_t n, size_t from)
{
    if (from > b->length || n > b->length - from)
        return -ENOENT;
    if (n == 0)
        return (ssize_t)from;
    const char *p = needle;
    size_t last = b->length - n; /* the last position where it can start */
    size_t pos = from, i, off;
    seek(b, from, &i, &off);
    for (; pos <= last; i++, off = 0) {
        const weft_iobuf_ref_t *r = ref_at(b, i);
        const char *base = ref_data(r);
        while (off < r->length && pos <= last) {
            size_t span = min_size(r->length - off, last - pos + 1);
            const char *hit = memchr(base + off, p[0], span);
            if (!hit) {
                pos += span;
                off += span;
                continue;
            }
            size_t skip = (size_t)(hit - (base + off));
            pos += skip;
            off += skip;
            if (match_at(b, i, off, p, n))
                return (ssize_t)pos;
            pos++;
            off++;
        }
    }
    return -ENOENT;
}

/* ---- segments ------------------------------------------------------------ */

size_t weft_iobuf_segments(const weft_iobuf_t *b)
{
    return b->nref;
}

const void *weft_iobuf_segment(const weft_iobuf_t *b, size_t i, size_t *len)
{
    if (i >= b->nref) {
        *len = 0;
        return NULL;
    }
    const weft_iobuf_ref_t *r = ref_at(b, i);
    *len = r->length;
    return ref_data(r);
}

/* Adds b's segments to iov[0..n), at most max entries, merging segments
 * that are contiguous in memory. Returns the new n. */
static size_t fill_iov(const weft_iobuf_t *b, struct iovec *iov, size_t n, size_t max)
{
    for (uint32_t i = 0; i < b->nref; i++) {
        const weft_iobuf_ref_t *r = ref_at(b, i);
        char *p = ref_data(r);
        if (n && (char *)iov[n - 1].iov_base + iov[n - 1].iov_len == p) {
            iov[n - 1].iov_len += r->length;
            continue;
        }
        if (n == max)
            break;
        iov[n].iov_base = p;
        iov[n].iov_len = r->length;
        n++;
    }
    return n;
}

size_t weft_iobuf_fill_iov(const weft_iobuf_t *b, struct iovec *iov, size_t max)
{
    return fill_iov(b, iov, 0, max);
}

/* ---- file descriptors ---------------------------------------------------- */

ssize_t weft_iobuf_read_fd(weft_iobuf_t *b, int fd, size_t max)
{
    struct iovec iov[READ_MAX_BLOCKS + 1];
    struct weft__iobuf_block *blk[READ_MAX_BLOCKS + 1];
    if (max == 0)
        return -EINVAL;
    struct iobuf_tls *t = tls_get();
    struct weft__iobuf_block *s = t->share;
    size_t n = 0, space = 0;
    /* The share block's tail first, then fresh blocks. */
    while (space < max && n < READ_MAX_BLOCKS + 1) {
        struct weft__iobuf_block *x = (n == 0 && s && room(s)) ? s : block_new(t);
        if (!x)
            break;
        blk[n] = x;
        iov[n].iov_base = x->data + x->used;
        iov[n].iov_len = min_size(room(x), max - space);
        space += iov[n].iov_len;
        n++;
    }
    ssize_t rc = -ENOMEM;
    if (n == 0 || ensure_refs(b, n) < 0)
        goto out;
    do
        rc = readv(fd, iov, (int)n);
    while (rc < 0 && errno == EINTR);
    if (rc < 0)
        rc = -errno;
out:;
    /* Commit what was read; the last block written keeps or takes the share
     * role, every other fresh block is dropped (to the buffer or cache). */
    size_t left = rc > 0 ? (size_t)rc : 0;
    for (size_t i = 0; i < n; i++) {
        size_t k = min_size(left, iov[i].iov_len);
        commit(b, blk[i], k);
        left -= k;
        if (k && left == 0)
            space_put(t, blk[i]);
        else if (blk[i] != s)
            block_unref(blk[i]);
    }
    return rc;
}

ssize_t weft_iobuf_write_fd_many(int fd, weft_iobuf_t *const *bufs, size_t nbufs)
{
    struct iovec iov[WRITE_MAX_IOV];
    size_t n = 0;
    for (size_t j = 0; j < nbufs && n < WRITE_MAX_IOV; j++)
        n = fill_iov(bufs[j], iov, n, WRITE_MAX_IOV);
    if (n == 0)
        return 0;
    ssize_t rc;
    do
        rc = writev(fd, iov, (int)n);
    while (rc < 0 && errno == EINTR);
    if (rc < 0)
        return -errno;
    size_t left = (size_t)rc;
    for (size_t j = 0; j < nbufs && left > 0; j++)
        left -= weft_iobuf_pop_front(bufs[j], left);
    return rc;
}

ssize_t weft_iobuf_write_fd(weft_iobuf_t *b, int fd)
{
    return weft_iobuf_write_fd_many(fd, &b, 1);
}

/* ---- protobuf-c ---------------------------------------------------------- */

static void pb_append(ProtobufCBuffer *base, size_t len, const uint8_t *data)
{
    weft_iobuf_pb_buffer_t *pb = (weft_iobuf_pb_buffer_t *)base;
    /* After a failure, stop: later bytes would follow a hole. */
    if (pb->error == 0)
        pb->error = weft_iobuf_append(pb->buf, data, len);
}

void weft_iobuf_pb_buffer_init(weft_iobuf_pb_buffer_t *pb, weft_iobuf_t *buf)
{
    pb->base.append = pb_append;
    pb->buf = buf;
    pb->error = 0;
}

ssize_t weft_iobuf_append_pb(weft_iobuf_t *b, const ProtobufCMessage *msg)
{
    size_t size = protobuf_c_message_get_packed_size(msg);
    if (size == 0)
        return 0;
    if (size <= BLOCK_CAP) {
        /* Pack in place: one pass, no per-field append calls. */
        struct iobuf_tls *t = tls_get();
        struct weft__iobuf_block *blk;
        if (ensure_refs(b, 1) < 0 || !(blk = space_get(t, size)))
            return -ENOMEM;
        size_t packed = protobuf_c_message_pack(msg, (uint8_t *)blk->data + blk->used);
        assert(packed == size);
        commit(b, blk, packed);
        space_put(t, blk);
        return (ssize_t)packed;
    }
    weft_iobuf_pb_buffer_t pb;
    size_t before = b->length;
    weft_iobuf_pb_buffer_init(&pb, b);
    protobuf_c_message_pack_to_buffer(msg, &pb.base);
    if (pb.error) {
        weft_iobuf_pop_back(b, b->length - before);
        return pb.error;
    }
    return (ssize_t)(b->length - before);
}

int weft_iobuf_unpack_pb(const weft_iobuf_t *b, const ProtobufCMessageDescriptor *desc,
                         ProtobufCAllocator *allocator, ProtobufCMessage **out)
{
    static const uint8_t empty[1];
    const uint8_t *p = empty;
    void *tmp = NULL;
    if (b->nref == 1) {
        p = (const uint8_t *)ref_data(ref_at(b, 0));
    } else if (b->nref > 1) {
        /* protobuf-c copies what it keeps, so the copy can go at once. */
        tmp = malloc(b->length);
        if (!tmp)
            return -ENOMEM;
        weft_iobuf_copy_out(b, 0, tmp, b->length);
        p = tmp;
    }
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, allocator, b->length, p);
    free(tmp);
    if (!m)
        return -EBADMSG;
    *out = m;
    return 0;
}

/* ---- statistics and checks ----------------------------------------------- */

void weft_iobuf_stats(weft_iobuf_stats_t *out)
{
    int64_t cached = 0;
    pthread_mutex_lock(&registry_lock);
    for (struct iobuf_tls *t = registry; t; t = t->next)
        cached += __atomic_load_n(&t->nfree, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&registry_lock);
    out->blocks = __atomic_load_n(&stat_blocks, __ATOMIC_RELAXED);
    out->blocks_cached = cached;
    out->external = __atomic_load_n(&stat_external, __ATOMIC_RELAXED);
}

int weft__iobuf_check(const weft_iobuf_t *b)
{
    uint32_t cap = ring_cap(b);
    if ((cap & (cap - 1)) != 0 || b->nref > cap || b->start >= cap)
        return -EINVAL;
    size_t total = 0;
    for (uint32_t i = 0; i < b->nref; i++) {
        const weft_iobuf_ref_t *r = ref_at(b, i);
        /* cap, not used: another thread may be appending to the block. */
        if (r->length == 0 || r->offset > r->block->cap ||
            r->length > r->block->cap - r->offset ||
            __atomic_load_n(&r->block->refs, __ATOMIC_RELAXED) == 0)
            return -EINVAL;
        total += r->length;
    }
    return total == b->length ? 0 : -EINVAL;
}
