/*
 * echo_service.c - example.EchoService: replies with the message it got,
 * and echoes the request attachment back.
 */
#include "echo_service.h"

#include "echo.weft.h"

static void echo(weft_controller_t *cntl, const Example__EchoRequest *request,
                 Example__EchoResponse *response, weft_closure_t *done, void *arg)
{
    (void)arg;
    /* The request lives until the reply is sent: point into it. */
    response->message = request->message;
    weft_iobuf_append_buf(weft_controller_response_attachment(cntl),
                          weft_controller_request_attachment(cntl));
    weft_closure_run(done);
}

static const Example__EchoService_Handlers handlers = {.echo = echo};

int echo_service_register(weft_server_t *server)
{
    return example__echo_service__register(server, &handlers);
}
