// libFuzzer target: the aggregator's gRPC API, served for real on loopback and called the way
// agents and clients call it, with messages the fuzzer writes. An input is a script
// (api_fuzz.proto): agent streams saying whatever they like (hellos, deltas with any indices
// and seconds, pod lists, tap events, admin answers), queries, taps and admin requests
// relayed to those agents. Whatever they say, every query is answered within its deadline,
// the server still lists its pods at the end, and it shuts down; ASan and UBSan watch the
// rest. Each input gets a fresh server on a fixed clock, so a finding replays on its own.
#include <fmt/format.h>
#include <grpcpp/grpcpp.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "aggregator/api_fuzz.pb.h"
#include "aggregator/server.h"
#include "common/base/log.h"
#include "nodemesh/v1/nodemesh.grpc.pb.h"

namespace {

using namespace nodemesh;
using namespace std::chrono_literals;

// Where every input's clock starts: the seeds stamp their deltas near it.
constexpr int64_t kStartSecond = 1'750'000'000;
constexpr size_t kMaxCalls = 64;
constexpr size_t kStreams = 4;
// More than one caller may hold (aggregator/tap_hub.h), so the refusal is reached too.
constexpr size_t kMaxTaps = 20;
// Far beyond what any answer here needs: a query that takes this long is hung.
constexpr auto kDeadline = 5s;

[[noreturn]] void Fail(const char* what) {
  fprintf(stderr, "api_fuzz: %s\n", what);
  __builtin_trap();
}

// One agent: the script writes its messages; its own thread reads what the aggregator sends
// down (as an agent must, or the aggregator ends the stream) and answers admin requests.
class ScriptedAgent {
 public:
  explicit ScriptedAgent(v1::AgentService::Stub& stub) : stream_(stub.Connect(&context_)) {
    reader_ = std::thread([this] { Read(); });
  }
  ~ScriptedAgent() { End(); }

  void Send(const fuzz::AgentSend& send) {
    if (send.has_admin_answer()) {
      std::lock_guard lock(mutex_);
      admin_answer_ = send.admin_answer();
    }
    for (const v1::AgentMessage& message : send.messages()) {
      if (!Write(message)) return;  // the aggregator ended the stream
    }
  }

  // Ends the stream as an agent leaving would, and waits for the aggregator to end it too.
  void End() {
    if (!reader_.joinable()) return;
    {
      std::lock_guard lock(mutex_);
      if (!closed_) stream_->WritesDone();
      closed_ = true;
    }
    reader_.join();
    stream_->Finish();
  }

 private:
  bool Write(const v1::AgentMessage& message) {
    std::lock_guard lock(mutex_);
    if (closed_) return false;
    closed_ = !stream_->Write(message);
    return !closed_;
  }

  void Read() {
    v1::AggregatorMessage message;
    while (stream_->Read(&message)) {
      if (!message.has_admin_request()) continue;
      v1::AgentMessage answer;
      {
        std::lock_guard lock(mutex_);
        if (!admin_answer_) continue;
        *answer.mutable_admin_response() = *admin_answer_;
      }
      answer.mutable_admin_response()->set_id(message.admin_request().id());
      Write(answer);
    }
  }

  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::AgentMessage, v1::AggregatorMessage>> stream_;
  std::mutex mutex_;  // writes (the script's and the answers'), and the two below
  bool closed_ = false;
  std::optional<v1::AdminResponse> admin_answer_;
  std::thread reader_;
};

// A tap client reading its events until it hangs up.
class TapClient {
 public:
  TapClient(v1::Api::Stub& stub, const v1::TapRequestSpec& spec)
      : stream_(stub.Tap(&context_, spec)) {
    reader_ = std::thread([this] {
      v1::TapStreamMessage message;
      while (stream_->Read(&message)) {
      }
    });
  }
  ~TapClient() {
    context_.TryCancel();
    reader_.join();
    stream_->Finish();
  }

 private:
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReader<v1::TapStreamMessage>> stream_;
  std::thread reader_;
};

// A query, which must be answered (with an answer or an error) within the deadline.
template <typename Request, typename Response, typename Method>
void Ask(v1::Api::Stub& stub, Method method, const Request& request) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + kDeadline);
  Response response;
  const auto started = std::chrono::steady_clock::now();
  const grpc::Status status = (stub.*method)(&context, request, &response);
  // The relay's own timeout also answers DEADLINE_EXCEEDED, long before the client's.
  if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED &&
      std::chrono::steady_clock::now() - started >= kDeadline) {
    Fail("a call was not answered within its deadline");
  }
}

void Run(const fuzz::ApiScript& script) {
  std::atomic<int64_t> now{kStartSecond};
  aggregator::ServerOptions options;
  options.listen_address = "127.0.0.1:0";
  options.clock = [&now] {
    return std::chrono::system_clock::time_point(std::chrono::seconds(now));
  };
  options.store.max_memory_bytes = 16 << 20;  // small, so that the budget's evictions run too
  options.admin_relay.timeout = 100ms;
  options.tap_pacing.drops_interval = 50ms;
  options.housekeeping_interval = 0ms;  // the script's clock steps run it
  aggregator::AggregatorServer server(options);
  const absl::StatusOr<int> port = server.Start();
  if (!port.ok()) Fail("the aggregator did not start");

  const auto channel =
      grpc::CreateChannel(fmt::format("127.0.0.1:{}", *port), grpc::InsecureChannelCredentials());
  const auto agents_stub = v1::AgentService::NewStub(channel);
  const auto api = v1::Api::NewStub(channel);
  std::array<std::unique_ptr<ScriptedAgent>, kStreams> agents;
  std::vector<std::unique_ptr<TapClient>> taps;

  const size_t calls = std::min<size_t>(script.calls_size(), kMaxCalls);
  for (size_t i = 0; i < calls; ++i) {
    const fuzz::ApiCall& call = script.calls(static_cast<int>(i));
    switch (call.kind_case()) {
      case fuzz::ApiCall::kAgent: {
        std::unique_ptr<ScriptedAgent>& agent = agents[call.agent().stream() % kStreams];
        if (!agent) agent = std::make_unique<ScriptedAgent>(*agents_stub);
        agent->Send(call.agent());
        break;
      }
      case fuzz::ApiCall::kEndAgent:
        agents[call.end_agent() % kStreams].reset();
        break;
      case fuzz::ApiCall::kStat:
        Ask<v1::StatSummaryRequest, v1::StatSummaryResponse>(*api, &v1::Api::Stub::StatSummary,
                                                             call.stat());
        break;
      case fuzz::ApiCall::kEdges:
        Ask<v1::EdgesRequest, v1::EdgesResponse>(*api, &v1::Api::Stub::Edges, call.edges());
        break;
      case fuzz::ApiCall::kRoutes:
        Ask<v1::TopRoutesRequest, v1::TopRoutesResponse>(*api, &v1::Api::Stub::TopRoutes,
                                                         call.routes());
        break;
      case fuzz::ApiCall::kPods:
        Ask<v1::ListPodsRequest, v1::ListPodsResponse>(*api, &v1::Api::Stub::ListPods, call.pods());
        break;
      case fuzz::ApiCall::kNodeAdmin:
        Ask<v1::NodeAdminRequest, v1::NodeAdminResponse>(*api, &v1::Api::Stub::NodeAdmin,
                                                         call.node_admin());
        break;
      case fuzz::ApiCall::kTap:
        if (taps.size() < kMaxTaps) taps.push_back(std::make_unique<TapClient>(*api, call.tap()));
        break;
      case fuzz::ApiCall::kAdvanceSeconds:
        now += call.advance_seconds() % 3601;
        server.Housekeep();
        break;
      case fuzz::ApiCall::KIND_NOT_SET:
        break;
    }
  }

  for (std::unique_ptr<ScriptedAgent>& agent : agents) agent.reset();
  taps.clear();
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + kDeadline);
  v1::ListPodsResponse pods;
  if (!api->ListPods(&context, v1::ListPodsRequest(), &pods).ok()) {
    Fail("the aggregator no longer lists its pods");
  }
  server.Shutdown();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  SetLogLevel(LogLevel::kError);  // every input connects agents: the log would drown the run
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::ApiScript script;
  if (!script.ParseFromArray(data, static_cast<int>(size))) return -1;  // not a script: not kept
  Run(script);
  return 0;
}
