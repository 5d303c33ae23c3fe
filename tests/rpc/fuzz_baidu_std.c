/*
 * fuzz_baidu_std.c - libFuzzer target for the server side of baidu_std:
 * frame parsing (parse), request processing (process_request: meta,
 * limits, attachment, service lookup, decompression, checksum, nesting
 * check, unpacking, authentication) and the handlers' replies.
 *
 * Why: the server reads bytes any peer chose; DESIGN.md promises they never
 * crash it. The target uses the public API only: servers of
 * weft.test.TestService on unix sockets, and each input written as-is into
 * a fresh connection, whose write side is then shut so the server answers
 * what it can and closes. Every complete reply that comes back must be a
 * well-formed response frame (a reply cut short by the close is fine: bad
 * bytes after a request may close the connection while its reply is being
 * written), and the server must close the connection within 10 s (a hang
 * is a bug too). The low bit of the first
 * byte picks the server: without or with an authenticator (which accepts
 * credentials starting with 'k'); the rest is the byte stream.
 *
 *   ninja -C <clang build> tests/rpc/fuzz_baidu_std
 *   tests/rpc/fuzz_baidu_std WORKDIR ../tests/rpc/fuzz_baidu_std_corpus
 *
 * The rpc/ sources are compiled into the target so that the fuzzer sees their
 * coverage (see meson.build).
 */
#include "rpc_test_util.h"

static rt_server_t *servers[2];
static char paths[2][128];

/* libFuzzer ends with exit(): leave no socket files behind. */
static void remove_paths(void)
{
    for (int i = 0; i < 2; i++)
        if (paths[i][0])
            unlink(paths[i] + 5);
}

static int fuzz_authenticate(const void *cred, size_t len, const weft_endpoint_t *remote,
                             void **ctx, void *arg)
{
    (void)remote;
    (void)arg;
    *ctx = NULL;
    return len > 0 && ((const char *)cred)[0] == 'k' ? 0 : -1;
}

static rt_server_t *fuzz_server(int which)
{
    char *path = paths[which];
    snprintf(path, sizeof(paths[which]), "unix:/tmp/weft-fuzz-baidu-std-%d-%d.sock",
             (int)getpid(), which);
    unlink(path + 5);
    weft_server_options_t o = {
        .max_body_size = 256 * RT_KiB, /* big claims are refused at once */
        .max_concurrency = which ? 8 : 0,
        .authenticate = which ? fuzz_authenticate : NULL,
    };
    rt_server_t *s = rt_server_start(&o, path, 7);
    s->max_sleep_ms = 1; /* no request is answered yet: set before any */
    return s;
}

/* Each complete frame in the bytes the server sent is a response. */
static void check_replies(const uint8_t *p, size_t n)
{
    while (n >= 12) {
        WT_ASSERT_MSG(!memcmp(p, "PRPC", 4), "a reply without the PRPC magic");
        uint32_t be[2];
        memcpy(be, p + 4, 8);
        uint32_t body = ntohl(be[0]), meta = ntohl(be[1]);
        WT_LE(meta, body);
        if (n - 12 < body)
            return; /* cut short by the close */
        Weft__Baidu__RpcMeta *m = weft__baidu__rpc_meta__unpack(NULL, meta, p + 12);
        WT_ASSERT_MSG(m && m->response && !m->request && m->has_correlation_id,
                      "a reply whose meta is not a response meta");
        if (m->response->has_error_code && m->response->error_code != 0)
            WT_EQ(body, meta); /* error replies carry no payload */
        weft__baidu__rpc_meta__free_unpacked(m, NULL);
        p += 12 + body;
        n -= 12 + body;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!servers[0]) {
        signal(SIGPIPE, SIG_IGN);
        servers[0] = fuzz_server(0);
        servers[1] = fuzz_server(1);
        atexit(remove_paths);
    }
    if (size == 0)
        return 0;
    rt_server_t *s = servers[data[0] & 1];
    int fd = rt_raw_connect(weft_server_endpoint(s->server));
    rt_write_all(fd, data + 1, size - 1); /* the server may close first */
    shutdown(fd, SHUT_WR);
    size_t len = 0, cap = 1 << 16;
    uint8_t *in = malloc(cap);
    int64_t end = rt_now() + 10 * WEFT_NS_PER_SEC;
    for (;;) {
        if (len == cap)
            in = realloc(in, cap *= 2);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        WT_ASSERT_MSG(rt_now() < end, "the server did not close the connection in 10 s");
        if (poll(&p, 1, 100) <= 0)
            continue;
        ssize_t r = read(fd, in + len, cap - len);
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    check_replies(in, len);
    free(in);
    return 0;
}
