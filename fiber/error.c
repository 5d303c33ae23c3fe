/*
 * error.c - names for weft's error codes.
 *
 * errno values are named by strerrordesc_np(), which, unlike strerror(),
 * returns a static string and so is safe from any thread or fiber.
 */
#include "fiber/error.h"

#include <string.h>

static const struct {
    int code;
    const char *text;
} weft_errors[] = {
    {WEFT_ENOSERVICE, "ENOSERVICE: no such service"},
    {WEFT_ENOMETHOD, "ENOMETHOD: no such method"},
    {WEFT_EREQUEST, "EREQUEST: bad request"},
    {WEFT_ERPCAUTH, "ERPCAUTH: authentication failed"},
    {WEFT_ETOOMANYFAILS, "ETOOMANYFAILS: too many failures"},
    {WEFT_ERPCTIMEDOUT, "ERPCTIMEDOUT: call timed out"},
    {WEFT_EFAILEDSOCKET, "EFAILEDSOCKET: connection failed during the call"},
    {WEFT_EHTTP, "EHTTP: bad HTTP response"},
    {WEFT_EOVERCROWDED, "EOVERCROWDED: too many unsent bytes"},
    {WEFT_EEOF, "EEOF: connection closed by peer"},
    {WEFT_ESSL, "ESSL: TLS error"},
    {WEFT_EREJECT, "EREJECT: rejected"},
    {WEFT_EINTERNAL, "EINTERNAL: internal server error"},
    {WEFT_ERESPONSE, "ERESPONSE: bad response"},
    {WEFT_ELOGOFF, "ELOGOFF: server is stopping"},
    {WEFT_ELIMIT, "ELIMIT: concurrency limit reached"},
    {WEFT_ECLOSE, "ECLOSE: closed"},
    {WEFT_ESHUTDOWNWRITE, "ESHUTDOWNWRITE: shut down for writing"},
};

const char *weft_strerror(int code)
{
    if (code < 0)
        code = -code;
    if (code == 0)
        return "success";
    for (size_t i = 0; i < sizeof(weft_errors) / sizeof(weft_errors[0]); i++)
        if (weft_errors[i].code == code)
            return weft_errors[i].text;
    const char *s = strerrordesc_np(code);
    return s ? s : "unknown error";
}
