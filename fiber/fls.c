/*
 * fls.c - fiber-local storage.
 *
 * A key is an index into a per-fiber table plus a version, so a deleted key
 * that is created again does not see the old values. Tables are allocated on
 * first set and grow to the highest index used. Outside fibers the table
 * belongs to the thread and is destroyed at thread exit.
 */
#include "fiber/fiber_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MAX_KEYS 1024
#define DTOR_ROUNDS 4

struct weft__fls {
    uint32_t cap;
    struct {
        uint32_t version;
        void *value;
    } e[];
};

static struct {
    pthread_mutex_t lock;
    uint32_t version[MAX_KEYS]; /* odd: in use */
    void (*dtor[MAX_KEYS])(void *);
    pthread_key_t thread_key;
    int thread_key_made;
} keys = {.lock = PTHREAD_MUTEX_INITIALIZER};

static __thread struct weft__fls *tls_fls;

static void thread_fls_exit(void *arg)
{
    (void)arg;
    weft__fls_destroy(&tls_fls);
}

int weft_fiber_key_create(weft_fiber_key_t *key, void (*dtor)(void *))
{
    pthread_mutex_lock(&keys.lock);
    if (!keys.thread_key_made) {
        if (pthread_key_create(&keys.thread_key, thread_fls_exit) != 0) {
            pthread_mutex_unlock(&keys.lock);
            return -EAGAIN;
        }
        keys.thread_key_made = 1;
    }
    for (uint32_t i = 0; i < MAX_KEYS; i++) {
        if (keys.version[i] & 1)
            continue;
        keys.dtor[i] = dtor;
        __atomic_store_n(&keys.version[i], keys.version[i] + 1, __ATOMIC_RELEASE);
        key->index = i;
        key->version = keys.version[i];
        pthread_mutex_unlock(&keys.lock);
        return 0;
    }
    pthread_mutex_unlock(&keys.lock);
    return -EAGAIN;
}

int weft_fiber_key_delete(weft_fiber_key_t key)
{
    int rc = -EINVAL;
    pthread_mutex_lock(&keys.lock);
    if (key.index < MAX_KEYS && keys.version[key.index] == key.version) {
        __atomic_store_n(&keys.version[key.index], key.version + 1, __ATOMIC_RELEASE);
        keys.dtor[key.index] = NULL;
        rc = 0;
    }
    pthread_mutex_unlock(&keys.lock);
    return rc;
}

static struct weft__fls **current_table(void)
{
    weft__fiber_t *f = weft__current_fiber();
    return f ? &f->fls : &tls_fls;
}

static bool key_live(weft_fiber_key_t key)
{
    return key.index < MAX_KEYS &&
           __atomic_load_n(&keys.version[key.index], __ATOMIC_ACQUIRE) == key.version;
}

void *weft_fiber_getspecific(weft_fiber_key_t key)
{
    struct weft__fls *t = *current_table();
    if (!t || key.index >= t->cap || t->e[key.index].version != key.version)
        return NULL;
    return t->e[key.index].value;
}

int weft_fiber_setspecific(weft_fiber_key_t key, void *value)
{
    if (!key_live(key))
        return -EINVAL;
    struct weft__fls **tp = current_table();
    struct weft__fls *t = *tp;
    if (!t || key.index >= t->cap) {
        uint32_t cap = t ? t->cap : 0;
        uint32_t ncap = cap ? cap : 8;
        while (ncap <= key.index)
            ncap *= 2;
        struct weft__fls *n = realloc(t, sizeof(*n) + ncap * sizeof(n->e[0]));
        if (!n)
            return -ENOMEM;
        memset(&n->e[cap], 0, (ncap - cap) * sizeof(n->e[0]));
        n->cap = ncap;
        if (!t && tp == &tls_fls)
            pthread_setspecific(keys.thread_key, (void *)1);
        *tp = t = n;
    }
    t->e[key.index].version = key.version;
    t->e[key.index].value = value;
    return 0;
}

void weft__fls_destroy(struct weft__fls **tp)
{
    /* Destructors may set values again (POSIX allows it), hence rounds. */
    for (int round = 0; round < DTOR_ROUNDS && *tp; round++) {
        bool ran = false;
        for (uint32_t i = 0; i < (*tp)->cap; i++) {
            struct weft__fls *t = *tp;
            void *v = t->e[i].value;
            uint32_t ver = t->e[i].version;
            if (!v)
                continue;
            t->e[i].value = NULL;
            void (*dtor)(void *) = NULL;
            pthread_mutex_lock(&keys.lock);
            if (keys.version[i] == ver)
                dtor = keys.dtor[i];
            pthread_mutex_unlock(&keys.lock);
            if (dtor) {
                dtor(v);
                ran = true;
            }
        }
        if (!ran)
            break;
    }
    free(*tp);
    *tp = NULL;
}
