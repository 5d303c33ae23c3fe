/*
 * weft.h - the whole public API of weft, an M:N fiber RPC framework.
 * Include this, or the headers of the parts you use.
 */
#ifndef WEFT_H
#define WEFT_H

#include "fiber/runtime.h"
#include "net/acceptor.h"
#include "net/endpoint.h"
#include "net/fd.h"
#include "net/iobuf.h"
#include "net/socket.h"
#include "rpc/channel.h"
#include "rpc/controller.h"
#include "rpc/server.h"

#endif
