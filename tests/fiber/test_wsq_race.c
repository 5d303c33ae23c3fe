/*
 * test_wsq_race.c - the scheduler's work-stealing deque against a thief
 * stalled in the middle of a steal.
 *
 * A thief reads `top`, then the item there, then claims it with a CAS on
 * `top`; between the read and the CAS it can be preempted for as long as the
 * kernel likes. The Chase-Lev deque survives that only because `top` never
 * goes down: if the CAS succeeds, nobody moved `top` since the thief read the
 * item. (An owner operation that lowered `top`, as weft__wsq_push_top() did
 * for yielding fibers in a80d626, lets `top` come back to the value the
 * stalled thief read after the owner popped that very item: the fiber was
 * handed out twice and `top` ended above `bottom`, hiding the next fiber
 * pushed.)
 *
 * This is a white-box test of an internal header, and a model check rather
 * than a stress: the stalled thief is weft__wsq_steal() cut in two at the
 * point where the preemption falls, and every sequence of up to 6 owner and
 * other-thief operations from every starting size up to 3 runs between its
 * two halves. Every item must then have been taken exactly once.
 */
#include "fiber/work_stealing_queue.h"

#include "fiber_test_util.h"

/* weft__wsq_steal() up to (not including) its CAS. */
static void *steal_begin(weft__wsq_t *q, int64_t *t_out)
{
    int64_t t = __atomic_load_n(&q->top, __ATOMIC_ACQUIRE);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    int64_t b = __atomic_load_n(&q->bottom, __ATOMIC_ACQUIRE);
    if (t >= b)
        return NULL;
    *t_out = t;
    return __atomic_load_n(&q->buf[t & q->mask], __ATOMIC_RELAXED);
}

/* ... and the CAS, when the thief runs again: true if it got the item. */
static bool steal_commit(weft__wsq_t *q, int64_t t)
{
    return __atomic_compare_exchange_n(&q->top, &t, t + 1, false, __ATOMIC_SEQ_CST,
                                       __ATOMIC_RELAXED);
}

/* The owner pops its last item under a stalled thief: one of them gets it. */
static void case_stalled_thief_last_item(void)
{
    static int x, z;
    weft__wsq_t q;
    WT_EQ(weft__wsq_init(&q, 16), 0);
    WT_ASSERT(weft__wsq_push(&q, &x));
    int64_t t;
    WT_EQ(steal_begin(&q, &t), &x);
    WT_EQ(weft__wsq_pop(&q), &x); /* last item: the owner races for it, wins */
    WT_ASSERT(!steal_commit(&q, t));
    WT_ASSERT(weft__wsq_push(&q, &z));
    WT_EQ(weft__wsq_size(&q), 1);
    WT_EQ(weft__wsq_pop(&q), &z);
    weft__wsq_destroy(&q);
}

enum { OP_PUSH, OP_POP, OP_STEAL, NOPS, MAX_SEQ = 6, MAX_ITEMS = 16 };

/* One run: `start` items queued, the thief stalls, ops[] run, it resumes. */
static void run_sequence(int start, const int *ops, int nops)
{
    weft__wsq_t q;
    WT_EQ(weft__wsq_init(&q, 64), 0);
    int taken[MAX_ITEMS + 1] = {0};
    uintptr_t next = 1;
    for (int i = 0; i < start; i++)
        WT_ASSERT(weft__wsq_push(&q, (void *)next++));
    int64_t t = 0;
    uintptr_t seen = (uintptr_t)steal_begin(&q, &t);
    for (int i = 0; i < nops; i++) {
        uintptr_t it = 0;
        switch (ops[i]) {
        case OP_PUSH:
            WT_ASSERT(weft__wsq_push(&q, (void *)next++));
            break;
        case OP_POP:
            it = (uintptr_t)weft__wsq_pop(&q);
            break;
        default:
            it = (uintptr_t)weft__wsq_steal(&q);
            break;
        }
        if (it)
            taken[it]++;
    }
    if (seen && steal_commit(&q, t))
        taken[seen]++;
    for (uintptr_t it; (it = (uintptr_t)weft__wsq_pop(&q));)
        taken[it]++;
    for (uintptr_t i = 1; i < next; i++) {
        if (taken[i] != 1) {
            char desc[64];
            int n = snprintf(desc, sizeof(desc), "start %d:", start);
            for (int k = 0; k < nops; k++)
                n += snprintf(desc + n, sizeof(desc) - (size_t)n, " %s",
                              ops[k] == OP_PUSH ? "push" : ops[k] == OP_POP ? "pop" : "steal");
            WT_ASSERT_MSG(false, "item %lu taken %d times (stalled thief, %s)",
                          (unsigned long)i, taken[i], desc);
        }
    }
    WT_EQ(weft__wsq_size(&q), 0);
    weft__wsq_destroy(&q);
}

static void case_stalled_thief_all_sequences(void)
{
    int ops[MAX_SEQ];
    long runs = 0;
    for (int start = 0; start <= 3; start++) {
        for (int len = 0; len <= MAX_SEQ; len++) {
            long combos = 1;
            for (int i = 0; i < len; i++)
                combos *= NOPS;
            for (long c = 0; c < combos; c++) {
                long v = c;
                for (int i = 0; i < len; i++, v /= NOPS)
                    ops[i] = (int)(v % NOPS);
                run_sequence(start, ops, len);
                runs++;
            }
        }
    }
    WT_NOTE("wsq_model_check: %ld operation sequences under a stalled thief, none lost or "
            "doubled an item",
            runs);
}

static const wt_case_t cases[] = {
    WT_CASE(case_stalled_thief_last_item),
    WT_CASE(case_stalled_thief_all_sequences),
};

int main(int argc, char **argv)
{
    wt_run_cases(argc, argv, cases, WT_NCASES(cases));
    WT_EQ(weft_fiber_shutdown(), 0);
    return 0;
}
