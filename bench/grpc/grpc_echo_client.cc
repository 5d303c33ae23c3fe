// grpc_echo_client.cc - load for example.EchoService over gRPC C++, the gRPC
// client of bench/compare: an asynchronous completion-queue client.
//
//   grpc_echo_client --server HOST:PORT [--payload-size N] [--concurrency D]
//                    [--duration S] [--warmup S] [--threads T]
//
// One channel (one HTTP/2 connection) carries D calls in flight: each call
// that completes starts the next one at once. T threads poll one completion
// queue each and the D calls are spread over them; T defaults to the number
// of online CPUs (at most D), as in gRPC's own async benchmark client: on
// the 2-CPU machine of docs/benchmarks.md two pollers gave 5-15% more QPS
// and a lower p99 than one at 16 and 64 in flight. Every call
// sends a message of N bytes and checks that the reply is the same message.
// A call's latency runs from just before it is started to the moment its
// completion comes off the queue. Calls that complete during the warm-up
// are not counted; those that complete in the timed window (--duration) are;
// then no new call starts and the ones in flight are drained.
//
// Prints one JSON line: qps, p50_us, p90_us, p99_us, p999_us, max_us (of the
// calls completed in the window), calls, errors (failed calls or wrong
// replies in the window) and what was asked. Exits 1 if nothing completed.
#include <grpcpp/grpcpp.h>

#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cinttypes>
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

int64_t NowNs() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

struct Options {
    std::string server;
    size_t payload = 16;
    int concurrency = 1;
    double duration = 5;
    double warmup = 1;
    int threads = static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
};

// What one polling thread saw in the timed window.
struct Tally {
    std::vector<int64_t> latencies_ns;
    uint64_t errors = 0;
};

class Call;

// One thread's completion queue and its share of the calls in flight.
struct Worker {
    EchoService::Stub *stub;
    const EchoRequest *request;
    int64_t start_ns, end_ns;  // the timed window
    grpc::CompletionQueue cq;
    Tally tally;
    int in_flight = 0;
};

class Call {
  public:
    explicit Call(Worker *w) : w_(w) {}

    void Start() {
        // The reader lives in the previous call's arena: drop it before the
        // context that holds that call. A context serves one call only.
        reader_.reset();
        ctx_ = std::make_unique<grpc::ClientContext>();
        response_.Clear();
        sent_ns_ = NowNs();
        reader_ = w_->stub->PrepareAsyncEcho(ctx_.get(), *w_->request, &w_->cq);
        reader_->StartCall();
        reader_->Finish(&response_, &status_, this);
        w_->in_flight++;
    }

    // Its completion came off the queue: count it, start the next call
    // unless the window is over.
    void Done() {
        int64_t now = NowNs();
        w_->in_flight--;
        if (now >= w_->start_ns && now < w_->end_ns) {
            bool good = status_.ok() && response_.message() == w_->request->message();
            if (good)
                w_->tally.latencies_ns.push_back(now - sent_ns_);
            else
                w_->tally.errors++;
        }
        if (!status_.ok() && errors_printed_++ < 3)
            std::fprintf(stderr, "grpc_echo_client: call failed: %d %s\n",
                         static_cast<int>(status_.error_code()), status_.error_message().c_str());
        if (now < w_->end_ns)
            Start();
    }

  private:
    static std::atomic<int> errors_printed_;
    Worker *w_;
    std::unique_ptr<grpc::ClientContext> ctx_;
    std::unique_ptr<grpc::ClientAsyncResponseReader<EchoResponse>> reader_;
    EchoResponse response_;
    grpc::Status status_;
    int64_t sent_ns_ = 0;
};

std::atomic<int> Call::errors_printed_{0};

void Poll(Worker *w, std::vector<std::unique_ptr<Call>> *calls) {
    for (auto &c : *calls)
        c->Start();
    void *tag;
    bool ok;
    // The deadline only guards against a server that stopped answering.
    while (w->in_flight > 0) {
        auto deadline = std::chrono::system_clock::now() + std::chrono::seconds(30);
        grpc::CompletionQueue::NextStatus st = w->cq.AsyncNext(&tag, &ok, deadline);
        if (st != grpc::CompletionQueue::GOT_EVENT) {
            std::fprintf(stderr, "grpc_echo_client: %d calls never completed\n", w->in_flight);
            break;
        }
        static_cast<Call *>(tag)->Done();
    }
}

double Percentile(const std::vector<int64_t> &sorted, double q) {
    if (sorted.empty())
        return 0;
    size_t i = static_cast<size_t>(q * static_cast<double>(sorted.size()));
    if (i >= sorted.size())
        i = sorted.size() - 1;
    return static_cast<double>(sorted[i]) / 1000.0;
}

[[noreturn]] void Usage() {
    std::fprintf(stderr,
                 "usage: grpc_echo_client --server HOST:PORT [--payload-size N] [--concurrency D]\n"
                 "                        [--duration S] [--warmup S] [--threads T]\n");
    std::exit(2);
}

Options ParseArgs(int argc, char **argv) {
    Options o;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        if (i + 1 >= argc)
            Usage();
        const char *v = argv[++i];
        if (a == "--server")
            o.server = v;
        else if (a == "--payload-size")
            o.payload = std::strtoull(v, nullptr, 10);
        else if (a == "--concurrency")
            o.concurrency = std::atoi(v);
        else if (a == "--duration")
            o.duration = std::atof(v);
        else if (a == "--warmup")
            o.warmup = std::atof(v);
        else if (a == "--threads")
            o.threads = std::atoi(v);
        else
            Usage();
    }
    if (o.server.empty() || o.concurrency < 1 || o.duration <= 0 || o.warmup < 0 ||
        o.threads < 1 || o.payload > (64u << 20))
        Usage();
    o.threads = std::min(o.threads, o.concurrency);
    return o;
}

}  // namespace

int main(int argc, char **argv) {
    Options o = ParseArgs(argc, argv);

    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(64 << 20);
    args.SetMaxSendMessageSize(64 << 20);
    std::shared_ptr<grpc::Channel> channel =
        grpc::CreateCustomChannel(o.server, grpc::InsecureChannelCredentials(), args);
    if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(5))) {
        std::fprintf(stderr, "grpc_echo_client: cannot connect to %s\n", o.server.c_str());
        return 1;
    }
    std::unique_ptr<EchoService::Stub> stub = EchoService::NewStub(channel);

    // Printable bytes: proto3 checks that a string is UTF-8.
    EchoRequest request;
    std::string *msg = request.mutable_message();
    msg->resize(o.payload);
    for (size_t i = 0; i < o.payload; i++)
        (*msg)[i] = static_cast<char>('a' + i % 26);

    int64_t start = NowNs() + static_cast<int64_t>(o.warmup * 1e9);
    int64_t end = start + static_cast<int64_t>(o.duration * 1e9);
    std::vector<std::unique_ptr<Worker>> workers;
    std::vector<std::vector<std::unique_ptr<Call>>> calls(o.threads);
    for (int t = 0; t < o.threads; t++) {
        auto w = std::make_unique<Worker>();
        w->stub = stub.get();
        w->request = &request;
        w->start_ns = start;
        w->end_ns = end;
        w->tally.latencies_ns.reserve(1 << 20);
        workers.push_back(std::move(w));
    }
    for (int d = 0; d < o.concurrency; d++)
        calls[d % o.threads].push_back(std::make_unique<Call>(workers[d % o.threads].get()));
    std::vector<std::thread> threads;
    for (int t = 0; t < o.threads; t++)
        threads.emplace_back(Poll, workers[t].get(), &calls[t]);
    for (auto &t : threads)
        t.join();

    std::vector<int64_t> lat;
    uint64_t errors = 0;
    for (auto &w : workers) {
        lat.insert(lat.end(), w->tally.latencies_ns.begin(), w->tally.latencies_ns.end());
        errors += w->tally.errors;
        w->cq.Shutdown();
        void *tag;
        bool ok;
        while (w->cq.Next(&tag, &ok)) {
        }
    }
    std::sort(lat.begin(), lat.end());
    std::printf("{\"qps\": %.1f, \"p50_us\": %.1f, \"p90_us\": %.1f, \"p99_us\": %.1f, "
                "\"p999_us\": %.1f, \"max_us\": %.1f, \"calls\": %zu, \"errors\": %" PRIu64 ", "
                "\"payload_size\": %zu, \"concurrency\": %d, \"duration\": %.3f, "
                "\"threads\": %d}\n",
                static_cast<double>(lat.size()) / o.duration, Percentile(lat, 0.50),
                Percentile(lat, 0.90), Percentile(lat, 0.99), Percentile(lat, 0.999),
                lat.empty() ? 0.0 : static_cast<double>(lat.back()) / 1000.0, lat.size(), errors,
                o.payload, o.concurrency, o.duration, o.threads);
    return lat.empty() ? 1 : 0;
}
