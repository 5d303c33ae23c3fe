/*
 * check_names.c - proves, by compiling, that the stubs generated from the
 * test protos have the names and types docs/stubs.md promises, and that
 * they sit on protoc-c's own names: every method is checked through
 * protoc-c's caller function for it (<service>__<method>), whose name the
 * stub names extend. Nothing here runs; if a name or a type drifts, this
 * file stops compiling and the build fails.
 *
 * The expected names are spelled out by hand from what protoc-c 1.4
 * generates for the same files, mangling quirks included
 * ("get_URL2Thing" -> "get__url2_thing").
 */
#include <stddef.h>

#include "c_package.weft.h"
#include "mangle.weft.h"
#include "mangle_types.weft.h"
#include "no_package.weft.h"
#include "sub/dir/nested.weft.h"

#define SAME_TYPE(a, b) __builtin_types_compatible_p(a, b)
#define CHECK_TYPE(expr, type) \
    _Static_assert(SAME_TYPE(__typeof__(expr), type), #expr " is not " #type)

/* A service: protoc-c's descriptor, the handlers struct (arg first) and
 * register(). */
#define CHECK_SERVICE(svc, Svc)                                                   \
    CHECK_TYPE(svc##__descriptor, const ProtobufCServiceDescriptor);              \
    CHECK_TYPE(svc##__register, int(weft_server_t *, const Svc##_Handlers *));    \
    CHECK_TYPE(((Svc##_Handlers *)0)->arg, void *);                               \
    _Static_assert(offsetof(Svc##_Handlers, arg) == 0, #Svc "_Handlers: arg first")

/* A method: protoc-c's caller, the two client stubs named after it, the
 * typed done callback, and the handler member. */
#define CHECK_METHOD(caller, Svc, Method, member, In, Out)                            \
    CHECK_TYPE(caller, void(ProtobufCService *, const In *, Out##_Closure, void *));  \
    CHECK_TYPE(caller##_call, int(weft_channel_t *, weft_controller_t *, const In *,  \
                                  Out **));                                          \
    CHECK_TYPE(caller##_call_async, int(weft_channel_t *, weft_controller_t *,        \
                                        const In *, Svc##_##Method##_Done *, void *)); \
    _Static_assert(SAME_TYPE(Svc##_##Method##_Done, void(weft_controller_t *, Out *,  \
                                                         void *)),                   \
                   #Svc "_" #Method "_Done");                                         \
    CHECK_TYPE(((Svc##_Handlers *)0)->member,                                         \
               void (*)(weft_controller_t *, const In *, Out *, weft_closure_t *, void *))

/* ---- mangle.proto: package weft_test.my_pkg.HTTPStuff.v2 ---- */

CHECK_SERVICE(weft_test__my_pkg__httpstuff__v2__echo_service,
              WeftTest__MyPkg__HTTPStuff__V2__EchoService);
CHECK_METHOD(weft_test__my_pkg__httpstuff__v2__echo_service__echo,
             WeftTest__MyPkg__HTTPStuff__V2__EchoService, Echo, echo,
             WeftTest__MyPkg__HTTPStuff__V2__EchoRequest,
             WeftTest__MyPkg__HTTPStuff__V2__EchoResponse);

CHECK_SERVICE(weft_test__my_pkg__httpstuff__v2__httpserver_svc,
              WeftTest__MyPkg__HTTPStuff__V2__HTTPServerSvc);
CHECK_METHOD(weft_test__my_pkg__httpstuff__v2__httpserver_svc__get__url2_thing,
             WeftTest__MyPkg__HTTPStuff__V2__HTTPServerSvc, get_URL2Thing, get__url2_thing,
             WeftTest__MyPkg__HTTPStuff__V2__Outer__Inner__Deep,
             WeftTest__MyPkg__HTTPStuff__V2__URL2thing);
CHECK_METHOD(weft_test__my_pkg__httpstuff__v2__httpserver_svc__httpget,
             WeftTest__MyPkg__HTTPStuff__V2__HTTPServerSvc, HTTPGet, httpget,
             WeftTest__CommonV1__HTTPHeader, WeftTest__CommonV1__HTTPHeader__InnerMsg);
CHECK_METHOD(weft_test__my_pkg__httpstuff__v2__httpserver_svc__do_it_3x,
             WeftTest__MyPkg__HTTPStuff__V2__HTTPServerSvc, do_it_3x, do_it_3x,
             WeftTest__MyPkg__HTTPStuff__V2__Outer, WeftTest__MyPkg__HTTPStuff__V2__Outer__Inner);
CHECK_METHOD(weft_test__my_pkg__httpstuff__v2__httpserver_svc__x,
             WeftTest__MyPkg__HTTPStuff__V2__HTTPServerSvc, X, x,
             WeftTest__MyPkg__HTTPStuff__V2__EchoRequest,
             WeftTest__MyPkg__HTTPStuff__V2__EchoRequest);
CHECK_METHOD(weft_test__my_pkg__httpstuff__v2__httpserver_svc__foo_bar__baz9,
             WeftTest__MyPkg__HTTPStuff__V2__HTTPServerSvc, fooBar_Baz9, foo_bar__baz9,
             Sub__Dir__Nested, NewPkg__Sub__Local);

/* A service without methods still has handlers (only arg) and register(). */
CHECK_SERVICE(weft_test__my_pkg__httpstuff__v2__empty, WeftTest__MyPkg__HTTPStuff__V2__Empty);

/* ---- c_package.proto: orig.pkg renamed to new_Pkg.Sub; the imported
 * HTTPHeader keeps its own file's name ---- */

CHECK_SERVICE(new__pkg__sub__renamed, NewPkg__Sub__Renamed);
CHECK_METHOD(new__pkg__sub__renamed__fetch, NewPkg__Sub__Renamed, Fetch, fetch,
             NewPkg__Sub__Local, WeftTest__CommonV1__HTTPHeader);

/* ---- no_package.proto ---- */

CHECK_SERVICE(lower_svc, LowerSvc);
CHECK_METHOD(lower_svc__do_it, LowerSvc, do_it, do_it, Top, Top);

/* ---- sub/dir/nested.proto ---- */

CHECK_SERVICE(sub__dir__nested_service, Sub__Dir__NestedService);
CHECK_METHOD(sub__dir__nested_service__get, Sub__Dir__NestedService, Get, get, Sub__Dir__Nested,
             Sub__Dir__Nested);

/* ---- mangle_types.proto: no services, an empty pair ---- */

#ifndef WEFT_STUBS_mangle_5ftypes_2eproto__INCLUDED
#error "mangle_types.weft.h has the wrong include guard"
#endif
