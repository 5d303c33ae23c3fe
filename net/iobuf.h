/*
 * iobuf.h - IOBuf: a byte sequence made of references into shared blocks.
 *
 * An IOBuf is a list of references (block, offset, length) into refcounted
 * blocks of memory. Appending one IOBuf to another, cutting the first n bytes
 * off, or splitting a buffer in two moves references and adjusts refcounts;
 * the bytes stay where they are. Bytes are copied once, when they enter (a
 * read from a socket, an append of plain memory, protobuf packing), and leave
 * through writev straight from the blocks. Memory the user already owns can
 * join a buffer without a copy (weft_iobuf_append_external), with a deleter
 * called when the last reference to it goes.
 *
 * Blocks are WEFT_IOBUF_BLOCK_SIZE bytes (header included) and come from a
 * per-thread cache. Each thread also keeps one partly filled "share block":
 * small appends from any number of buffers in that thread are packed into it
 * one after another, so a 20-byte message costs 20 bytes of a block, not a
 * block of its own.
 *
 * weft_iobuf_t is a small value (64 bytes) that lives on the stack or inside
 * other structs: {0} (or WEFT_IOBUF_INIT) is an empty buffer, and
 * weft_iobuf_clear() releases everything it holds. The struct holds no
 * pointer to itself, so it may be moved by copying its bytes, provided the
 * source is not used again. Its fields are private.
 *
 * Threads and fibers: one IOBuf must not be changed by two threads at once,
 * but functions taking a const buffer may run concurrently on it, and
 * different IOBufs sharing blocks may be used from any threads at the same
 * time (block refcounts are atomic). A block may be released on another
 * thread than the one that allocated it. No function here blocks, so all are
 * safe from fibers.
 *
 * Errors follow weft's convention: 0 or a count on success, a negative errno
 * on failure. A function that fails leaves its buffers as they were.
 */
#ifndef WEFT_NET_IOBUF_H
#define WEFT_NET_IOBUF_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <protobuf-c/protobuf-c.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bytes malloc'ed for one block, its header included. */
#define WEFT_IOBUF_BLOCK_SIZE 8192

/* weft_iobuf_read_fd() reads at most this much in one call, whatever max it
 * is given (a lower bound: the thread's share block may add a little). A
 * caller that takes a short read as "the fd is drained" must not ask for
 * more. */
#define WEFT_IOBUF_READ_MAX (16 * (WEFT_IOBUF_BLOCK_SIZE - 64))

/* References kept inside weft_iobuf_t before it needs a heap array. */
#define WEFT_IOBUF_INLINE_REFS 2

struct weft__iobuf_block;

/* A reference to `length` bytes at `offset` in a block. Private. */
typedef struct weft_iobuf_ref {
    struct weft__iobuf_block *block;
    uint32_t offset;
    uint32_t length;
} weft_iobuf_ref_t;

/* A byte sequence. Private fields: use the functions below. The references
 * form a ring (start, nref) over small[] or, past WEFT_IOBUF_INLINE_REFS
 * references, over heap[cap], so popping the front is O(1). */
typedef struct weft_iobuf {
    size_t length;            /* bytes in the buffer */
    weft_iobuf_ref_t *heap;   /* NULL while the refs fit in small[] */
    uint32_t start;           /* ring index of the first reference */
    uint32_t nref;            /* references in use */
    uint32_t cap;             /* size of heap[] (a power of two) */
    weft_iobuf_ref_t small[WEFT_IOBUF_INLINE_REFS];
} weft_iobuf_t;

#define WEFT_IOBUF_INIT {0}

/* Called once with (data, arg) when the last reference to external memory
 * goes away, on whatever thread drops it, from inside the IOBuf call that
 * dropped it: it may use other IOBufs, not the one being changed. */
typedef void weft_iobuf_deleter_fn(void *data, void *arg);

/* --- life cycle ---------------------------------------------------------- */

/* Makes *b an empty buffer (same as = WEFT_IOBUF_INIT). */
void weft_iobuf_init(weft_iobuf_t *b);

/* Drops every reference and frees the reference array. *b is then empty and
 * may be reused or forgotten; call this once for every buffer that held
 * bytes. */
void weft_iobuf_clear(weft_iobuf_t *b);

/* Clears *dst, then moves the contents of *src into it; *src ends empty. */
void weft_iobuf_move(weft_iobuf_t *dst, weft_iobuf_t *src);

/* Exchanges the contents of two buffers. */
void weft_iobuf_swap(weft_iobuf_t *a, weft_iobuf_t *b);

static inline size_t weft_iobuf_length(const weft_iobuf_t *b)
{
    return b->length;
}

static inline bool weft_iobuf_empty(const weft_iobuf_t *b)
{
    return b->length == 0;
}

/* --- adding bytes -------------------------------------------------------- */

/* Copies n bytes to the end of b. Returns 0 or -ENOMEM. */
int weft_iobuf_append(weft_iobuf_t *b, const void *data, size_t n);

/* Appends the bytes of src to dst by reference: no byte is copied and src is
 * unchanged. dst == src doubles the buffer. Returns 0 or -ENOMEM. */
int weft_iobuf_append_buf(weft_iobuf_t *dst, const weft_iobuf_t *src);

/* Appends n bytes of memory the caller owns, without copying them. The
 * memory must stay valid and unchanged until deleter(data, arg) is called,
 * once, when no buffer refers to it any more (deleter may be NULL for memory
 * that lives for ever). n may be at most UINT32_MAX. n == 0 calls the
 * deleter at once. Returns 0, -EINVAL (n too large) or -ENOMEM; on failure
 * the deleter is not called and the memory stays the caller's. */
int weft_iobuf_append_external(weft_iobuf_t *b, void *data, size_t n,
                               weft_iobuf_deleter_fn *deleter, void *arg);

/* Appends printf-style formatted text (without the terminating NUL),
 * formatting straight into block memory when it fits. Returns the number of
 * bytes appended, -EINVAL for a bad format, or -ENOMEM. */
ssize_t weft_iobuf_appendf(weft_iobuf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
ssize_t weft_iobuf_vappendf(weft_iobuf_t *b, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

/* --- taking bytes out ---------------------------------------------------- */

/* Moves the first n bytes of src (all of it if n is larger) to the end of
 * dst, by reference. Returns the number of bytes moved or -ENOMEM. */
ssize_t weft_iobuf_cutn(weft_iobuf_t *dst, weft_iobuf_t *src, size_t n);

/* Drop the first / last n bytes (fewer if the buffer is shorter). Return the
 * number of bytes dropped. */
size_t weft_iobuf_pop_front(weft_iobuf_t *b, size_t n);
size_t weft_iobuf_pop_back(weft_iobuf_t *b, size_t n);

/* Copies up to n bytes starting at byte `offset` into out, consuming
 * nothing. Returns the number of bytes copied (0 if offset >= length). */
size_t weft_iobuf_copy_out(const weft_iobuf_t *b, size_t offset, void *out, size_t n);

/* A contiguous view of the first n bytes: a pointer into the first block when
 * they lie in one, else a copy in buf (which must hold n bytes). NULL if b
 * holds fewer than n bytes. The view is valid until b changes. */
const void *weft_iobuf_fetch(const weft_iobuf_t *b, void *buf, size_t n);

/* True if b holds exactly the n bytes at data. */
bool weft_iobuf_equals(const weft_iobuf_t *b, const void *data, size_t n);

/* Offset of the first occurrence of needle[0..n) at or after offset `from`,
 * or -ENOENT. An empty needle is found at `from` if from <= length. A parser
 * that waits for more bytes can resume at length - n + 1. */
ssize_t weft_iobuf_find(const weft_iobuf_t *b, const void *needle, size_t n,
                        size_t from);

/* --- segments ------------------------------------------------------------ */

/* The buffer as segments of contiguous memory, for writev, checksums and
 * parsers: segment i (i < weft_iobuf_segments(b)) starts at the returned
 * pointer and holds *len bytes (never 0). Both are O(1). */
size_t weft_iobuf_segments(const weft_iobuf_t *b);
const void *weft_iobuf_segment(const weft_iobuf_t *b, size_t i, size_t *len);

/* Fills up to max iovecs with the first segments, one iovec for segments
 * that are contiguous in memory; returns how many were filled. */
size_t weft_iobuf_fill_iov(const weft_iobuf_t *b, struct iovec *iov, size_t max);

/* --- file descriptors ---------------------------------------------------- */

/* Reads at most max bytes (and at most 17 blocks, ~136 KiB) with one readv(2)
 * into the free tail of this thread's share block and fresh blocks, and
 * appends what was read to b. Returns the number of bytes read, 0 at end of
 * file, -EINVAL if max is 0, -ENOMEM, or -errno from readv (-EAGAIN on an
 * empty non-blocking fd); EINTR is retried. */
ssize_t weft_iobuf_read_fd(weft_iobuf_t *b, int fd, size_t max);

/* Writes b with one writev(2) straight from its blocks (at most 256
 * segments) and drops what was written from the front. Returns the number
 * of bytes written (0 if b is empty) or -errno (-EAGAIN on a full
 * non-blocking fd); EINTR is retried. Writing to a socket whose peer has
 * gone raises SIGPIPE unless the program ignores it. */
ssize_t weft_iobuf_write_fd(weft_iobuf_t *b, int fd);

/* Like weft_iobuf_write_fd for several buffers written in order with one
 * writev: the written bytes are dropped from bufs[0], then bufs[1], ... */
ssize_t weft_iobuf_write_fd_many(int fd, weft_iobuf_t *const *bufs, size_t nbufs);

/* --- protobuf-c ---------------------------------------------------------- */

/* A ProtobufCBuffer that appends to an IOBuf: pass &pb.base to
 * protobuf_c_message_pack_to_buffer(). protobuf-c's append callback cannot
 * fail, so a failed append is recorded in `error` (0 or -ENOMEM); the bytes
 * appended by then stay in the buffer. */
typedef struct weft_iobuf_pb_buffer {
    ProtobufCBuffer base;
    weft_iobuf_t *buf;
    int error;
} weft_iobuf_pb_buffer_t;

void weft_iobuf_pb_buffer_init(weft_iobuf_pb_buffer_t *pb, weft_iobuf_t *buf);

/* Packs msg at the end of b: directly into block memory when it fits in one
 * block, through the adapter otherwise. Returns the packed size or -ENOMEM
 * (b unchanged). */
ssize_t weft_iobuf_append_pb(weft_iobuf_t *b, const ProtobufCMessage *msg);

/* Unpacks all of b as a message of type desc (allocator may be NULL for
 * malloc). Reads the bytes in place when they lie in one block, else from a
 * temporary copy. Returns 0 with *out set (free it with
 * protobuf_c_message_free_unpacked), -EBADMSG if the bytes are not a valid
 * message (or protobuf-c ran out of memory), or -ENOMEM. */
int weft_iobuf_unpack_pb(const weft_iobuf_t *b, const ProtobufCMessageDescriptor *desc,
                         ProtobufCAllocator *allocator, ProtobufCMessage **out);

/* --- statistics ---------------------------------------------------------- */

typedef struct weft_iobuf_stats {
    int64_t blocks;         /* blocks allocated (in use or cached), each
                               WEFT_IOBUF_BLOCK_SIZE bytes of memory */
    int64_t blocks_cached;  /* of those, free in per-thread caches */
    int64_t external;       /* pieces of user memory still referenced */
} weft_iobuf_stats_t;

/* A snapshot of the counters; thread-safe and cheap (for metrics). */
void weft_iobuf_stats(weft_iobuf_stats_t *out);

/* --- internal, for tests ------------------------------------------------- */

/* Checks the structure of b (lengths add up, every reference lies inside
 * its block, refcounts are positive); returns 0 or -EINVAL. */
int weft__iobuf_check(const weft_iobuf_t *b);

/* Gives back this thread's share block and cached blocks (as thread exit
 * does), so a test can see every block freed. */
void weft__iobuf_thread_flush(void);

#ifdef __cplusplus
}
#endif
#endif
