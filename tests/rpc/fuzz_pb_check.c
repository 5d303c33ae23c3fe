/*
 * fuzz_pb_check.c - libFuzzer target for weft__pb_check (rpc/pb_check.c).
 *
 * The check is a filter in front of protobuf-c, so the fuzzer holds it to
 * protobuf-c itself: bytes protobuf-c unpacks must never be called
 * malformed, and when the check passes them their tree must be no deeper
 * than the limit. The first input byte picks the limit (0..100), the rest
 * is a weft_test.Node. protobuf-c is only run on bytes the check did not
 * call too deep, so the fuzzer itself cannot overflow its stack.
 */
#include "rpc/codec_internal.h"

#include <errno.h>
#include <stdlib.h>

#include "test_codec.pb-c.h"

static size_t tree_depth(const WeftTest__Node *n)
{
    size_t d = 0, k;
    if (n->child && (k = 1 + tree_depth(n->child)) > d)
        d = k;
    for (size_t i = 0; i < n->n_kids; i++)
        if ((k = 1 + tree_depth(n->kids[i])) > d)
            d = k;
    return d;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    int max_depth = data[0] % (WEFT__PB_CHECK_MAX_DEPTH + 1);
    data++;
    size--;
    int rc = weft__pb_check(&weft_test__node__descriptor, data, size, max_depth);
    if (rc != 0 && rc != -EINVAL && rc != -E2BIG)
        abort();
    if (rc == -E2BIG)
        return 0;
    WeftTest__Node *m = weft_test__node__unpack(NULL, size, data);
    if (m && (rc != 0 || tree_depth(m) > (size_t)max_depth))
        abort();
    weft_test__node__free_unpacked(m, NULL);
    return 0;
}
