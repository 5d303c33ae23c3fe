/*
 * error.h - weft's one error convention.
 *
 * Every function that can fail returns 0 (or a count, or a pointer) on
 * success and a negative code on failure: -errno for what the OS would call
 * an errno (-EINVAL, -ETIMEDOUT, ...), and -WEFT_E* for the RPC errors below,
 * whose numbers are shared with Apache brpc so they mean the same on the wire.
 * weft_strerror() names any of them, with or without the minus sign.
 */
#ifndef WEFT_FIBER_ERROR_H
#define WEFT_FIBER_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

enum {
    WEFT_ENOSERVICE = 1001,     /* no such service */
    WEFT_ENOMETHOD = 1002,      /* no such method */
    WEFT_EREQUEST = 1003,       /* bad request or response bytes */
    WEFT_ERPCAUTH = 1004,       /* authentication failed */
    WEFT_ETOOMANYFAILS = 1005,  /* too many sub-call failures */
    WEFT_ERPCTIMEDOUT = 1008,   /* the call's deadline passed */
    WEFT_EFAILEDSOCKET = 1009,  /* the connection broke during the call */
    WEFT_EHTTP = 1010,          /* bad HTTP status */
    WEFT_EOVERCROWDED = 1011,   /* too many unsent bytes on a connection */
    WEFT_EEOF = 1014,           /* the peer closed the connection */
    WEFT_ESSL = 1016,           /* TLS failure */
    WEFT_EREJECT = 1018,        /* rejected by a policy */
    WEFT_EINTERNAL = 2001,      /* internal server error */
    WEFT_ERESPONSE = 2002,      /* the handler left a bad response */
    WEFT_ELOGOFF = 2003,        /* the server is stopping */
    WEFT_ELIMIT = 2004,         /* the concurrency limit was reached */
    WEFT_ECLOSE = 2005,         /* closed by the handler */
    WEFT_ESHUTDOWNWRITE = 2007, /* the connection was shut down for writing */
};

/* Name of an error code: an errno, a WEFT_E* code, negated or not. The
 * string is static; unknown codes get "unknown error". Thread-safe. */
const char *weft_strerror(int code);

#ifdef __cplusplus
}
#endif
#endif
