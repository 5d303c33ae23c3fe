// grpc_echo_server.cc - example.EchoService over gRPC C++, the gRPC peer of
// bench/compare: replies with the message it got.
//
//   grpc_echo_server [--port N] [--mode async|callback|sync] [--threads N]
//
// Prints the bound address ("127.0.0.1:PORT") on the first line of stdout,
// then serves until SIGINT or SIGTERM. Port 0 (the default) picks a free
// port.
//
// Modes. "async" (the default) is the completion-queue server of gRPC's own
// performance suite (test/cpp/qps/server_async.cc): one ServerCompletionQueue
// per thread, each polled by its thread, with a pool of calls posted on each
// so a new request never waits for one to be posted; the thread that takes
// a request off its queue answers it at once. No handoff between threads, no
// thread pool. It also owns each request, so the reply takes the request's
// string by swapping it instead of copying it (which matters at 1 MiB).
// "callback" is the reactor API gRPC recommends for new code (its own
// executor runs the handlers; the reply must copy the const request) and
// "sync" the server with gRPC's thread pool. On the 2-CPU machine of
// docs/benchmarks.md (16 B, 1/16/64 in flight; 64 KiB and 1 MiB, 1 in
// flight; 2 or 3 alternating runs each) async and callback were within noise of
// each other for 16 B, async 5-15% ahead at 64 KiB and 1 MiB; sync was
// slower and much less steady at 64 in flight. So bench/compare uses async,
// which is also what gRPC's own benchmarks run; the other modes stay here
// for checking that.
//
// Threads: one per online CPU by default (the async mode's pollers).
#include <grpcpp/grpcpp.h>

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "echo.grpc.pb.h"

using example::EchoRequest;
using example::EchoResponse;
using example::EchoService;

namespace {

constexpr int kCallsPerQueue = 256;        // calls posted on each queue
constexpr int kMaxMessage = 64 << 20;      // far above the 1 MiB the bench sends

// ---- async: completion queues ----

class AsyncCall {
  public:
    AsyncCall(EchoService::AsyncService *service, grpc::ServerCompletionQueue *cq)
        : service_(service), cq_(cq), responder_(&ctx_) {
        service_->RequestEcho(&ctx_, &request_, &responder_, cq_, cq_, this);
    }

    // Called with the result of the operation this call last started.
    void Proceed(bool ok) {
        if (state_ == kWaiting) {
            if (!ok) {  // the server is shutting down
                delete this;
                return;
            }
            new AsyncCall(service_, cq_);  // keep the pool full
            response_.mutable_message()->swap(*request_.mutable_message());
            state_ = kReplying;
            responder_.Finish(response_, grpc::Status::OK, this);
        } else {
            delete this;
        }
    }

  private:
    enum State { kWaiting, kReplying };
    EchoService::AsyncService *service_;
    grpc::ServerCompletionQueue *cq_;
    grpc::ServerContext ctx_;
    EchoRequest request_;
    EchoResponse response_;
    grpc::ServerAsyncResponseWriter<EchoResponse> responder_;
    State state_ = kWaiting;
};

void PollQueue(EchoService::AsyncService *service, grpc::ServerCompletionQueue *cq) {
    for (int i = 0; i < kCallsPerQueue; i++)
        new AsyncCall(service, cq);
    void *tag;
    bool ok;
    while (cq->Next(&tag, &ok))
        static_cast<AsyncCall *>(tag)->Proceed(ok);
}

// ---- callback (reactor) API ----

class CallbackEcho final : public EchoService::CallbackService {
    grpc::ServerUnaryReactor *Echo(grpc::CallbackServerContext *ctx, const EchoRequest *request,
                                   EchoResponse *response) override {
        response->set_message(request->message());
        grpc::ServerUnaryReactor *reactor = ctx->DefaultReactor();
        reactor->Finish(grpc::Status::OK);
        return reactor;
    }
};

// ---- sync ----

class SyncEcho final : public EchoService::Service {
    grpc::Status Echo(grpc::ServerContext *, const EchoRequest *request,
                      EchoResponse *response) override {
        response->set_message(request->message());
        return grpc::Status::OK;
    }
};

[[noreturn]] void Usage() {
    std::fprintf(stderr,
                 "usage: grpc_echo_server [--port N] [--mode async|callback|sync] [--threads N]\n");
    std::exit(2);
}

}  // namespace

int main(int argc, char **argv) {
    int port = 0;
    int threads = static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
    std::string mode = "async";
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        if (i + 1 >= argc)
            Usage();
        const char *v = argv[++i];
        if (a == "--port")
            port = std::atoi(v);
        else if (a == "--mode")
            mode = v;
        else if (a == "--threads")
            threads = std::atoi(v);
        else
            Usage();
    }
    if (threads < 1 || port < 0 || port > 65535 ||
        (mode != "async" && mode != "callback" && mode != "sync"))
        Usage();

    // Every thread gRPC or we start inherits this mask; the main thread
    // takes the signals with sigwait.
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, nullptr);

    EchoService::AsyncService async_service;
    CallbackEcho callback_service;
    SyncEcho sync_service;
    grpc::ServerBuilder builder;
    int bound = 0;
    builder.AddListeningPort("127.0.0.1:" + std::to_string(port), grpc::InsecureServerCredentials(),
                             &bound);
    builder.SetMaxReceiveMessageSize(kMaxMessage);
    builder.SetMaxSendMessageSize(kMaxMessage);
    std::vector<std::unique_ptr<grpc::ServerCompletionQueue>> queues;
    if (mode == "async") {
        builder.RegisterService(&async_service);
        for (int i = 0; i < threads; i++)
            queues.push_back(builder.AddCompletionQueue());
    } else if (mode == "callback") {
        builder.RegisterService(&callback_service);
    } else {
        builder.RegisterService(&sync_service);
    }
    std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
    if (!server || bound == 0) {
        std::fprintf(stderr, "grpc_echo_server: cannot listen on 127.0.0.1:%d\n", port);
        return 1;
    }
    std::printf("127.0.0.1:%d\n", bound);
    std::fflush(stdout);

    std::vector<std::thread> pollers;
    for (auto &cq : queues)
        pollers.emplace_back(PollQueue, &async_service, cq.get());

    int sig = 0;
    sigwait(&stop, &sig);
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    for (auto &cq : queues)
        cq->Shutdown();
    for (auto &t : pollers)
        t.join();
    return 0;
}
