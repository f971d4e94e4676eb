// The aggregator over real in-process gRPC: fake agents stream synthetic deltas, pods and tap
// events through the generated stub, and the client API is asked about them. The clock is
// the test's, so windows are exact and nothing sleeps to let time pass. What the answers
// mean is queries_test's subject; here, that agents' news reaches them and they reach clients.
#include "aggregator/server.h"

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "aggregator/test_util.h"
#include "nodemesh/v1/nodemesh.grpc.pb.h"
#include "test/lib/fake_agent.h"

namespace nodemesh::aggregator {
namespace {

using namespace std::chrono_literals;
using nodemesh::testing::FakeAgent;
using testing::Cast;
using testing::DeltaBuilder;
using testing::External;
using testing::FindEdge;
using testing::FindRow;
using testing::MakePod;
using testing::Resource;

constexpr int64_t kStart = 1'700'000'000;

// The server handles agents' messages on its own threads: tests wait for their effects.
template <typename Condition>
bool Eventually(Condition condition, std::chrono::milliseconds timeout = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

class FakeClock {
 public:
  Clock clock() {
    return [this] { return std::chrono::system_clock::time_point(std::chrono::seconds(now())); };
  }
  int64_t now() const { return seconds_.load(); }
  void Set(int64_t seconds) { seconds_.store(seconds); }
  void Advance(int64_t seconds) { seconds_.fetch_add(seconds); }

 private:
  std::atomic<int64_t> seconds_{kStart};
};

// A client's side of Api.Tap, read on its own thread.
class TapClient {
 public:
  TapClient(v1::Api::Stub& api, const v1::TapRequestSpec& spec)
      : reader_(api.Tap(&context_, spec)) {
    thread_ = std::thread([this] {
      v1::TapStreamMessage message;
      while (reader_->Read(&message)) {
        std::lock_guard lock(mutex_);
        if (message.has_event()) events_.push_back(message.event());
        if (message.has_drops()) {
          agent_dropped_ += message.drops().agent_dropped();
          stream_dropped_ += message.drops().stream_dropped();
        }
        changed_.notify_all();
      }
      grpc::Status status = reader_->Finish();
      std::lock_guard lock(mutex_);
      status_ = std::move(status);
      changed_.notify_all();
    });
  }
  ~TapClient() {
    Cancel();
    thread_.join();
  }

  void Cancel() { context_.TryCancel(); }

  template <typename Condition>
  bool WaitUntil(Condition condition, std::chrono::milliseconds timeout = 10s) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return condition(*this); });
  }
  template <typename Look>
  auto Read(Look look) {
    std::lock_guard lock(mutex_);
    return look(*this);
  }
  // Read under the client's lock: from WaitUntil's condition, or Read.
  const std::vector<v1::TapEvent>& events() const { return events_; }
  uint64_t agent_dropped() const { return agent_dropped_; }
  uint64_t stream_dropped() const { return stream_dropped_; }
  const std::optional<grpc::Status>& status() const { return status_; }

 private:
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReader<v1::TapStreamMessage>> reader_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<v1::TapEvent> events_;
  uint64_t agent_dropped_ = 0;
  uint64_t stream_dropped_ = 0;
  std::optional<grpc::Status> status_;
  std::thread thread_;
};

struct Harness {
  explicit Harness(ServerOptions options = {}) {
    options.listen_address = "127.0.0.1:0";
    options.clock = clock.clock();
    options.housekeeping_interval = 0ms;  // the tests run it when they mean to
    // Started an hour before kStart, so that its history holds every second the tests file.
    clock.Set(kStart - 3600);
    server = std::make_unique<AggregatorServer>(std::move(options));
    clock.Set(kStart);
    const absl::StatusOr<int> port = server->Start();
    REQUIRE(port.ok());
    address = "127.0.0.1:" + std::to_string(*port);
    api = v1::Api::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  }

  // Connects an agent and waits until the aggregator has taken its hello.
  std::unique_ptr<FakeAgent> Connect(const std::string& node, std::vector<v1::Pod> pods,
                                     const std::string& instance = "") {
    auto agent = std::make_unique<FakeAgent>(address, node, std::move(pods), instance);
    REQUIRE(Eventually([&] {
      const std::vector<std::string> agents = server->tap_hub().agents();
      return std::find(agents.begin(), agents.end(), node) != agents.end();
    }));
    return agent;
  }

  // Sends a delta and waits until it is stored.
  void Deliver(FakeAgent& agent, const v1::MetricsDelta& delta) {
    const uint64_t before = server->store().stats().deltas;
    v1::AgentMessage message;
    *message.mutable_metrics() = delta;
    agent.Send(message);
    REQUIRE(Eventually([&] { return server->store().stats().deltas > before; }));
  }

  v1::StatSummaryResponse Stat(const v1::Resource& selector, int64_t window_seconds) {
    grpc::ClientContext context;
    v1::StatSummaryRequest request;
    *request.mutable_selector() = selector;
    request.set_window_seconds(window_seconds);
    v1::StatSummaryResponse response;
    const grpc::Status status = api->StatSummary(&context, request, &response);
    INFO(status.error_message());
    REQUIRE(status.ok());
    return response;
  }
  v1::EdgesResponse Edges(const v1::Resource& selector, int64_t window_seconds) {
    grpc::ClientContext context;
    v1::EdgesRequest request;
    *request.mutable_selector() = selector;
    request.set_window_seconds(window_seconds);
    v1::EdgesResponse response;
    const grpc::Status status = api->Edges(&context, request, &response);
    INFO(status.error_message());
    REQUIRE(status.ok());
    return response;
  }
  v1::TopRoutesResponse Routes(const v1::TopRoutesRequest& request) {
    grpc::ClientContext context;
    v1::TopRoutesResponse response;
    const grpc::Status status = api->TopRoutes(&context, request, &response);
    INFO(status.error_message());
    REQUIRE(status.ok());
    return response;
  }
  v1::ListPodsResponse Pods(const std::string& namespace_name = "") {
    grpc::ClientContext context;
    v1::ListPodsRequest request;
    request.set_namespace_(namespace_name);
    v1::ListPodsResponse response;
    const grpc::Status status = api->ListPods(&context, request, &response);
    CHECK(status.ok());
    return response;
  }

  FakeClock clock;
  std::unique_ptr<AggregatorServer> server;
  std::string address;
  std::unique_ptr<v1::Api::Stub> api;
};

bool IsStale(const google::protobuf::RepeatedPtrField<v1::NodeStatus>& stale,
             const std::string& node, bool* connected = nullptr) {
  for (const v1::NodeStatus& status : stale) {
    if (status.node() != node) continue;
    if (connected != nullptr) *connected = status.connected();
    return true;
  }
  return false;
}

TEST_CASE("Every client RPC answers from all agents' deltas and pod lists, at the server's clock",
          "[unit]") {
  Harness harness;
  Cast cast;
  v1::Pod web_b_unenrolled = cast.web_b;
  web_b_unenrolled.set_enrolled(false);
  web_b_unenrolled.set_meshed(false);
  auto node_a = harness.Connect("node-a", {cast.web_a, cast.vote_bot});
  auto node_b = harness.Connect("node-b", {web_b_unenrolled});
  harness.Deliver(*node_a, DeltaBuilder(kStart - 1)
                               .Responses(cast.vote_bot.identity(), cast.web_a.identity(),
                                          v1::INBOUND, "GET /api/vote", 7, 1'000'000)
                               .delta());
  harness.Deliver(
      *node_b, DeltaBuilder(kStart - 1)
                   .Responses(External(), cast.web_b.identity(), v1::INBOUND, "GET /", 3, 1'000'000)
                   .delta());

  // One store holds both agents' deltas, one cluster both nodes' pods.
  const v1::StatSummaryResponse stat = harness.Stat(Resource("deploy", ""), 10);
  const v1::StatRow* web = FindRow(stat, "web");
  REQUIRE(web != nullptr);
  CHECK(web->requests() == 10);
  CHECK(web->meshed_pods() == 1);
  CHECK(web->running_pods() == 2);

  const v1::EdgesResponse edges = harness.Edges(Resource("deploy", "web"), 10);
  CHECK(edges.edges_size() == 2);
  const v1::Edge* bot_web = FindEdge(edges, "vote-bot", "web");
  REQUIRE(bot_web != nullptr);
  CHECK(bot_web->requests() == 7);

  v1::TopRoutesRequest routes;
  *routes.mutable_selector() = Resource("deploy", "web");
  routes.set_window_seconds(10);
  const v1::TopRoutesResponse top = harness.Routes(routes);
  REQUIRE(top.routes_size() == 2);
  CHECK(top.routes(0).route() == "GET /api/vote");

  const v1::ListPodsResponse pods = harness.Pods("emojivoto");
  CHECK(pods.pods_size() == 3);
  CHECK(pods.nodes_size() == 2);
  CHECK(harness.Pods("other").pods_size() == 0);

  // A node's new pod list replaces its old one in the answers: the agent enrolled web-b.
  node_b->SendPods({cast.web_b});
  CHECK(Eventually([&] {
    const v1::StatSummaryResponse after = harness.Stat(Resource("deploy", "web"), 10);
    return after.rows_size() == 1 && after.rows(0).meshed_pods() == 2;
  }));

  // Windows end at the server's clock: ten seconds on, the deltas are out of a 10 s window.
  harness.clock.Advance(10);
  CHECK(harness.Stat(Resource("deploy", "web"), 10).rows(0).requests() == 0);
  CHECK(harness.Stat(Resource("deploy", "web"), 20).rows(0).requests() == 10);
}

TEST_CASE("An agent reports for its own node only: others' pods are refused and counted",
          "[unit]") {
  Harness harness;
  Cast cast;
  // node-a's Hello lists voting-1, a pod of node-b: the list is refused, the node connects.
  auto node_a = harness.Connect("node-a", {cast.web_a, cast.voting});
  const auto refused = [&] {
    const v1::ListPodsResponse pods = harness.Pods();  // nodes() must not outlive it
    for (const v1::NodeStatus& node : pods.nodes()) {
      if (node.node() == "node-a") return node.refused_reports();
    }
    return uint64_t{0};
  };
  CHECK(Eventually([&] { return refused() == 1; }));
  CHECK(harness.Pods("emojivoto").pods_size() == 0);

  // Its own pods, and traffic it intercepted at its own pod (whoever the other end is).
  node_a->SendPods({cast.web_a, cast.emoji});
  CHECK(Eventually([&] { return harness.Pods("emojivoto").pods_size() == 2; }));
  harness.Deliver(
      *node_a, DeltaBuilder(kStart - 1)
                   .Responses(cast.web_a.identity(), cast.voting.identity(), v1::OUTBOUND,
                              "GET /vote", 2, 1'000'000)
                   .Responses(External(), cast.web_a.identity(), v1::INBOUND, "GET /", 1, 1'000'000)
                   .delta());
  CHECK(harness.Stat(Resource("deploy", "web"), 10).rows(0).requests() == 1);

  // Traffic intercepted at node-b's pod, from node-a's agent: the whole delta is refused.
  const uint64_t series_before = harness.server->store().stats().deltas;
  v1::AgentMessage forged;
  *forged.mutable_metrics() = DeltaBuilder(kStart - 1)
                                  .Responses(cast.web_a.identity(), cast.voting.identity(),
                                             v1::INBOUND, "GET /vote", 50, 1'000'000)
                                  .Responses(cast.web_a.identity(), cast.web_b.identity(),
                                             v1::OUTBOUND, "GET /", 1, 1'000'000)
                                  .delta();
  node_a->Send(forged);
  CHECK(Eventually([&] { return refused() == 2; }));
  node_a->SendPods({cast.web_a, cast.voting});
  CHECK(Eventually([&] { return refused() == 3; }));
  CHECK(harness.server->store().stats().deltas == series_before);
  // voting-1 counts only what web-a called it, seen outbound (stat: the callers' view when
  // the destination's own agent says nothing), never the 50 forged inbound.
  CHECK(harness.Stat(Resource("deploy", "voting"), 10).rows(0).requests() == 2);
  CHECK(harness.Pods("emojivoto").pods_size() == 2);
}

TEST_CASE("Numbered deltas are acknowledged and filed once whichever stream brings them again",
          "[unit]") {
  Harness harness;
  Cast cast;
  const auto delta = [&](uint64_t sequence, uint64_t responses) {
    v1::AgentMessage message;
    *message.mutable_metrics() =
        DeltaBuilder(kStart - 1)
            .Responses(External(), cast.web_a.identity(), v1::INBOUND, "GET /", responses, 1'000)
            .delta();
    message.mutable_metrics()->set_sequence(sequence);
    return message;
  };
  const auto acks = [](FakeAgent& agent) {
    std::vector<uint64_t> sequences;
    for (const v1::AggregatorMessage& message : agent.received()) {
      if (message.has_metrics_ack()) sequences.push_back(message.metrics_ack().sequence());
    }
    return sequences;
  };
  const auto requests = [&] {
    const v1::StatSummaryResponse stat = harness.Stat(Resource("deploy", "web"), 10);
    return stat.rows_size() == 0 ? uint64_t{0} : stat.rows(0).requests();
  };
  const auto duplicates = [&] {
    const v1::ListPodsResponse pods = harness.Pods();
    for (const v1::NodeStatus& node : pods.nodes()) {
      if (node.node() == "node-a") return node.duplicate_deltas();
    }
    return uint64_t{0};
  };

  auto agent = harness.Connect("node-a", {cast.web_a}, "instance-1");
  agent->Send(delta(1, 2));
  REQUIRE(Eventually([&] { return acks(*agent) == std::vector<uint64_t>{1}; }));
  CHECK(requests() == 2);
  // The same delta again on the same stream: acknowledged, skipped, counted.
  agent->Send(delta(1, 2));
  REQUIRE(Eventually([&] { return acks(*agent).size() == 2; }));
  CHECK(requests() == 2);
  CHECK(duplicates() == 1);

  // The stream breaks before the acknowledgement of 2 arrives; the next brings 2 and 3.
  agent->Send(delta(2, 5));
  REQUIRE(Eventually([&] { return acks(*agent).size() == 3; }));
  agent->Disconnect();
  agent = harness.Connect("node-a", {cast.web_a}, "instance-1");
  agent->Send(delta(2, 5));
  agent->Send(delta(3, 1));
  REQUIRE(Eventually([&] { return acks(*agent) == std::vector<uint64_t>{2, 3}; }));
  CHECK(requests() == 8);
  CHECK(duplicates() == 2);

  // A restarted agent counts from 1 again, and is filed.
  agent->Disconnect();
  agent = harness.Connect("node-a", {cast.web_a}, "instance-2");
  agent->Send(delta(1, 10));
  REQUIRE(Eventually([&] { return acks(*agent) == std::vector<uint64_t>{1}; }));
  CHECK(requests() == 18);
  CHECK(duplicates() == 2);

  // An unnumbered delta (an agent before numbering) is filed and never acknowledged.
  harness.Deliver(*agent, delta(0, 1).metrics());
  CHECK(requests() == 19);
  agent->Send(delta(2, 1));
  REQUIRE(Eventually([&] { return acks(*agent).size() == 2; }));
  CHECK(acks(*agent) == std::vector<uint64_t>{1, 2});
}

TEST_CASE("A second aggregator on an address already served fails, naming who serves it",
          "[unit]") {
  Harness first;
  auto agent =
      first.Connect("n1", {MakePod("emojivoto", "web-1", "Deployment", "web", "n1", true)});
  ServerOptions options;
  options.listen_address = first.address;
  options.housekeeping_interval = 0ms;
  AggregatorServer second(options);
  const absl::StatusOr<int> port = second.Start();
  REQUIRE_FALSE(port.ok());
  CHECK(port.status().code() == absl::StatusCode::kAlreadyExists);
  // The holder is this very process: both servers run in the test.
  CHECK_THAT(std::string(port.status().message()),
             Catch::Contains(
                 fmt::format("cannot listen on {}: the address is in use by", first.address)) &&
                 Catch::Contains(fmt::format("(pid {})", getpid())) &&
                 Catch::Contains("give --listen another HOST:PORT"));
  // The first still serves, alone: every new connection reaches it.
  for (int i = 0; i < 4; ++i) {
    auto api =
        v1::Api::NewStub(grpc::CreateChannel(first.address, grpc::InsecureChannelCredentials()));
    grpc::ClientContext context;
    v1::ListPodsResponse response;
    REQUIRE(api->ListPods(&context, v1::ListPodsRequest(), &response).ok());
    CHECK(response.pods_size() == 1);
  }
}

TEST_CASE("A query's error reaches the client as its gRPC status code and message", "[unit]") {
  Harness harness;
  {
    grpc::ClientContext context;
    v1::StatSummaryRequest request;
    *request.mutable_selector() = Resource("deploy", "");
    request.set_window_seconds(5);
    v1::StatSummaryResponse response;
    const grpc::Status status = harness.api->StatSummary(&context, request, &response);
    CHECK(status.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
    CHECK_THAT(status.error_message(), Catch::Contains("10 to 3600"));
  }
  {
    grpc::ClientContext context;
    v1::EdgesRequest request;  // no selector
    request.set_window_seconds(10);
    v1::EdgesResponse response;
    const grpc::Status status = harness.api->Edges(&context, request, &response);
    CHECK(status.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
    CHECK_THAT(status.error_message(), Catch::Contains("selector type is missing"));
  }
  {
    grpc::ClientContext context;
    v1::TopRoutesRequest request;
    *request.mutable_selector() = Resource("deploy", "voting");
    *request.mutable_from() = Resource("svc", "web");
    v1::TopRoutesResponse response;
    const grpc::Status status = harness.api->TopRoutes(&context, request, &response);
    CHECK(status.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
    CHECK_THAT(status.error_message(), Catch::Contains("from type 'svc'"));
  }
}

TEST_CASE("Housekeeping ages the store out by the server's clock, which judges deltas too",
          "[unit]") {
  Harness harness;
  Cast cast;
  auto agent = harness.Connect("node-a", {cast.web_a, cast.vote_bot});
  const v1::MetricsDelta delta = DeltaBuilder(kStart - 1)
                                     .Responses(cast.vote_bot.identity(), cast.web_a.identity(),
                                                v1::INBOUND, "GET /api/vote", 10, 1'000'000)
                                     .delta();
  harness.Deliver(*agent, delta);
  CHECK(harness.server->store().stats().identities == 2);

  // Past the retention and the store's margin for identities: all of it goes.
  harness.clock.Set(kStart + 3600 + 121);
  harness.server->Housekeep();
  CHECK(harness.server->store().stats().identities == 0);

  // The delta's second is older than the retention by the server's clock: refused.
  harness.Deliver(*agent, delta);
  CHECK(harness.server->store().stats().dropped_too_old == 1);
}

TEST_CASE("A lost agent's node is stale and its pods and data stay", "[unit]") {
  Harness harness;
  Cast cast;
  auto node_a = harness.Connect("node-a", {cast.web_a, cast.vote_bot});
  auto node_b = harness.Connect("node-b", {cast.web_b, cast.voting});
  harness.Deliver(*node_a, DeltaBuilder(kStart - 1)
                               .Responses(cast.vote_bot.identity(), cast.web_a.identity(),
                                          v1::INBOUND, "GET /", 7, 1'000'000)
                               .delta());
  harness.Deliver(
      *node_b, DeltaBuilder(kStart - 1)
                   .Responses(External(), cast.web_b.identity(), v1::INBOUND, "GET /", 3, 1'000'000)
                   .delta());
  CHECK(harness.Stat(Resource("deploy", "web"), 10).stale_nodes().empty());

  node_b->Disconnect();
  REQUIRE(Eventually([&] {
    const v1::ListPodsResponse pods = harness.Pods();
    for (const v1::NodeStatus& node : pods.nodes()) {
      if (node.node() == "node-b") return !node.connected();
    }
    return false;
  }));
  const v1::StatSummaryResponse after = harness.Stat(Resource("deploy", "web"), 10);
  bool connected = true;
  REQUIRE(IsStale(after.stale_nodes(), "node-b", &connected));
  CHECK_FALSE(connected);
  CHECK_FALSE(IsStale(after.stale_nodes(), "node-a"));
  for (const v1::NodeStatus& node : after.stale_nodes()) {
    if (node.node() == "node-b") CHECK(node.last_report_unix_seconds() == kStart);
  }
  REQUIRE(after.rows_size() == 1);
  CHECK(after.rows(0).requests() == 10);  // node-b's 3 are still counted
  CHECK(after.rows(0).running_pods() == 2);
  CHECK(harness.Pods().pods_size() == 4);  // and its pods listed

  // ListPods (meshctl check) carries the same judgement, node by node.
  const auto listed_stale = [&](const std::string& name) {
    const v1::ListPodsResponse listed = harness.Pods();
    for (const v1::NodeStatus& node : listed.nodes()) {
      if (node.node() == name) return node.stale();
    }
    FAIL("no node " << name);
    return false;
  };
  CHECK(listed_stale("node-b"));
  CHECK_FALSE(listed_stale("node-a"));

  // Silence is stale too: a connected node with no delta for more than five seconds, and
  // one that connected more than five seconds ago and never reported.
  auto node_c = harness.Connect("node-c", {});
  harness.clock.Advance(6);
  const v1::StatSummaryResponse silent = harness.Stat(Resource("deploy", "web"), 10);
  REQUIRE(IsStale(silent.stale_nodes(), "node-a", &connected));
  CHECK(connected);
  CHECK(IsStale(silent.stale_nodes(), "node-c"));
  CHECK(listed_stale("node-a"));
  CHECK(listed_stale("node-c"));
  harness.server->Housekeep();  // logs the change; nothing is dropped
  CHECK(harness.Pods().pods_size() == 4);

  // The node comes back and reports: no longer stale.
  auto node_b_again = harness.Connect("node-b", {cast.web_b, cast.voting});
  harness.Deliver(*node_b_again, DeltaBuilder(harness.clock.now() - 1).delta());
  CHECK_FALSE(IsStale(harness.Stat(Resource("deploy", "web"), 10).stale_nodes(), "node-b"));
}

TEST_CASE("A reconnect of the same node replaces its old stream", "[unit]") {
  Harness harness;
  Cast cast;
  auto first = harness.Connect("node-a", {cast.web_a});
  auto second = std::make_unique<FakeAgent>(harness.address, "node-a",
                                            std::vector<v1::Pod>{cast.web_a, cast.emoji});
  CHECK(first->WaitClosed());
  REQUIRE(Eventually([&] { return harness.Pods().pods_size() == 2; }));
  // The old stream's end does not mark the node disconnected: the new one holds it.
  const v1::ListPodsResponse pods = harness.Pods();
  REQUIRE(pods.nodes_size() == 1);
  CHECK(pods.nodes(0).connected());
  harness.Deliver(*second, DeltaBuilder(kStart - 1).delta());
  CHECK(harness.Stat(Resource("deploy", ""), 10).stale_nodes().empty());
}

TEST_CASE(
    "A new node past the most the aggregator serves is refused saying so and a node "
    "connecting again is not new",
    "[unit]") {
  ServerOptions options;
  options.max_nodes = 2;
  Harness harness(options);
  Cast cast;
  auto node_a = harness.Connect("node-a", {cast.web_a});
  auto node_b = harness.Connect("node-b", {cast.voting});
  {
    FakeAgent node_c(harness.address, "node-c", {});
    REQUIRE(node_c.WaitClosed());
    const grpc::Status refused = node_c.Disconnect();
    CHECK(refused.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
    CHECK(refused.error_message() ==
          "this aggregator serves at most 2 nodes at once and has them: give it a larger "
          "--max-nodes");
  }
  CHECK(harness.server->refused_nodes() == 1);
  CHECK(harness.Pods().nodes_size() == 2);

  // node-a's agent connects again before its old stream has ended: its node is not new.
  auto node_a_again = harness.Connect("node-a", {cast.web_a, cast.emoji});
  CHECK(node_a->WaitClosed());
  CHECK(harness.server->refused_nodes() == 1);

  // Once a node has left, a new one is served.
  node_b->Disconnect();
  REQUIRE(Eventually([&] {
    const std::vector<std::string> agents = harness.server->tap_hub().agents();
    return std::find(agents.begin(), agents.end(), "node-b") == agents.end();
  }));
  auto node_c = harness.Connect("node-c", {});
  CHECK(harness.server->refused_nodes() == 1);
}

TEST_CASE(
    "Calls past the threads the aggregator may take are refused and it serves again once "
    "they end",
    "[unit]") {
  ServerOptions options;
  options.max_threads = 4;
  Harness harness(options);
  Cast cast;
  auto node_a = harness.Connect("node-a", {cast.web_a});
  v1::TapRequestSpec spec;
  *spec.mutable_target() = Resource("deploy", "web");
  // Each open tap holds a thread: open taps until one is refused, well before the tap hub's
  // own limits (64, and 16 per caller).
  std::vector<std::unique_ptr<TapClient>> taps;
  std::optional<grpc::Status> refused;
  while (!refused && taps.size() < 8) {
    taps.push_back(std::make_unique<TapClient>(*harness.api, spec));
    const auto ended = [&] {
      return taps.back()->Read([](const TapClient& c) { return c.status(); });
    };
    REQUIRE(Eventually([&] {
      return ended().has_value() || harness.server->tap_hub().sessions() == taps.size();
    }));
    refused = ended();
  }
  REQUIRE(refused.has_value());
  INFO(refused->error_message());
  CHECK(refused->error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
  CHECK(taps.size() < 8);

  taps.clear();
  REQUIRE(Eventually([&] { return harness.server->tap_hub().sessions() == 0; }));
  // gRPC takes the threads back once it has finished the calls, a moment after the taps
  // ended: until then a new tap may still be refused.
  const auto tap_opens = [&] {
    TapClient again(*harness.api, spec);
    const auto again_ended = [&] {
      return again.Read([](const TapClient& c) { return c.status().has_value(); });
    };
    REQUIRE(Eventually([&] { return again_ended() || harness.server->tap_hub().sessions() == 1; }));
    return !again_ended();
  };
  CHECK(Eventually(tap_opens));
  CHECK(harness.Pods().nodes_size() == 1);
}

TEST_CASE("Every agent hears of every pod of the cluster, with its node, as pods change",
          "[unit]") {
  Harness harness;
  Cast cast;
  auto node_a = harness.Connect("node-a", {cast.web_a, cast.emoji});
  auto node_b = harness.Connect("node-b", {cast.voting});
  // Both hear of all three, node-a also of node-b's pod that arrived after it.
  for (FakeAgent* agent : {node_a.get(), node_b.get()}) {
    CAPTURE(agent->node());
    const std::optional<v1::PodList> pods = agent->WaitForClusterPods(3);
    REQUIRE(pods.has_value());
    std::map<std::string, std::string> node_of;
    for (const v1::Pod& pod : pods->pods()) node_of[pod.identity().pod()] = pod.identity().node();
    CHECK(node_of == std::map<std::string, std::string>{
                         {"web-a", "node-a"}, {"emoji-1", "node-a"}, {"voting-1", "node-b"}});
  }
  node_b->SendPods({cast.voting, cast.web_b});
  CHECK(node_a->WaitForClusterPods(4).has_value());
}

v1::TapEvent Event(uint64_t subscription, const std::string& request_id, const v1::Pod& source,
                   const v1::Pod& destination) {
  v1::TapEvent event;
  event.set_subscription(subscription);
  event.set_request_id(request_id);
  *event.mutable_source() = source.identity();
  *event.mutable_destination() = destination.identity();
  event.mutable_request()->set_method("POST");
  event.mutable_request()->set_path("/emojivoto.v1.VotingService/VotePizza");
  return event;
}

std::vector<std::string> Pods(const google::protobuf::RepeatedPtrField<std::string>& pods) {
  return std::vector<std::string>(pods.begin(), pods.end());
}

TEST_CASE("Tap subscribes the target's agents, forwards their events, cancels with the client",
          "[unit]") {
  Harness harness;
  Cast cast;
  auto node_a = harness.Connect("node-a", {cast.web_a, cast.emoji});
  auto node_b = harness.Connect("node-b", {cast.voting});

  v1::TapRequestSpec spec;
  *spec.mutable_target() = Resource("deploy", "voting");
  spec.set_method("POST");
  spec.set_path_prefix("/emojivoto.v1.VotingService/");
  spec.set_authority("voting-svc:8080");
  spec.set_scheme("http");
  auto client = std::make_unique<TapClient>(*harness.api, spec);

  const std::vector<v1::AggregatorMessage> subscribed = node_b->WaitForMessages(2);
  REQUIRE(subscribed.size() == 2);
  uint64_t from_voting = 0, to_voting = 0;
  for (const v1::AggregatorMessage& message : subscribed) {
    REQUIRE(message.has_subscribe());
    const v1::TapSubscription& subscription = message.subscribe();
    CHECK(subscription.max_rps() == Approx(50.0));  // the default 100, over two subscriptions
    CHECK(subscription.match().method() == "POST");
    CHECK(subscription.match().path_prefix() == "/emojivoto.v1.VotingService/");
    CHECK(subscription.match().authority() == "voting-svc:8080");
    CHECK(subscription.match().scheme() == "http");
    if (subscription.match().source_pods_size() != 0) {
      CHECK(Pods(subscription.match().source_pods()) ==
            std::vector<std::string>{"emojivoto/voting-1"});
      CHECK(subscription.match().destination_pods_size() == 0);
      from_voting = subscription.id();
    } else {
      CHECK(Pods(subscription.match().destination_pods()) ==
            std::vector<std::string>{"emojivoto/voting-1"});
      to_voting = subscription.id();
    }
  }
  REQUIRE(from_voting != 0);
  REQUIRE(to_voting != 0);
  CHECK(from_voting != to_voting);

  node_b->SendTap({Event(to_voting, "node-b:1:1", cast.web_a, cast.voting),
                   Event(from_voting, "node-b:2:1", cast.voting, cast.web_a),
                   // voting calling itself matches both subscriptions: one copy goes through.
                   Event(from_voting, "node-b:3:1", cast.voting, cast.voting),
                   Event(to_voting, "node-b:3:1", cast.voting, cast.voting),
                   Event(999, "node-b:4:1", cast.web_a, cast.voting),
                   // Sent last: once it is through, the duplicate and the unknown
                   // subscription's event would have been too.
                   Event(to_voting, "node-b:5:1", cast.web_a, cast.voting)});
  REQUIRE(client->WaitUntil([](const TapClient& c) {
    return !c.events().empty() && c.events().back().request_id() == "node-b:5:1";
  }));
  const std::vector<std::string> ids = client->Read([](const TapClient& c) {
    std::vector<std::string> out;
    for (const v1::TapEvent& event : c.events()) out.push_back(event.request_id());
    return out;
  });
  CHECK(ids == std::vector<std::string>{"node-b:1:1", "node-b:2:1", "node-b:3:1", "node-b:5:1"});
  // node-a hosts no voting pod: it heard nothing.
  CHECK(node_a->received().empty());

  client->Cancel();
  const std::vector<v1::AggregatorMessage> all = node_b->WaitForMessages(4);
  REQUIRE(all.size() == 4);
  std::vector<uint64_t> cancelled;
  for (size_t i = 2; i < all.size(); ++i) {
    REQUIRE(all[i].has_cancel());
    cancelled.push_back(all[i].cancel().id());
  }
  std::sort(cancelled.begin(), cancelled.end());
  CHECK(cancelled ==
        std::vector<uint64_t>{std::min(from_voting, to_voting), std::max(from_voting, to_voting)});
  CHECK(Eventually([&] { return harness.server->tap_hub().sessions() == 0; }));
  client.reset();
}

TEST_CASE("Tap with --to: one subscription per node of the target, rate split", "[unit]") {
  Harness harness;
  Cast cast;
  auto node_a = harness.Connect("node-a", {cast.web_a, cast.emoji});
  auto node_b = harness.Connect("node-b", {cast.web_b, cast.voting});

  v1::TapRequestSpec spec;
  *spec.mutable_target() = Resource("deploy", "web");
  *spec.mutable_to() = Resource("deploy", "voting");
  spec.set_max_rps(10);
  TapClient client(*harness.api, spec);
  const std::vector<v1::AggregatorMessage> on_a = node_a->WaitForMessages(1);
  const std::vector<v1::AggregatorMessage> on_b = node_b->WaitForMessages(1);
  REQUIRE(on_a.size() == 1);
  REQUIRE(on_b.size() == 1);
  CHECK(on_a[0].subscribe().id() == on_b[0].subscribe().id());
  CHECK(Pods(on_a[0].subscribe().match().source_pods()) ==
        std::vector<std::string>{"emojivoto/web-a"});
  CHECK(Pods(on_b[0].subscribe().match().source_pods()) ==
        std::vector<std::string>{"emojivoto/web-b"});
  for (const auto* message : {&on_a[0], &on_b[0]}) {
    CHECK(Pods(message->subscribe().match().destination_pods()) ==
          std::vector<std::string>{"emojivoto/voting-1"});
    CHECK(message->subscribe().max_rps() == Approx(5.0));
  }

  // An agent connecting later with a target pod gets the tap, and the rate is split again.
  v1::Pod web_c = MakePod("emojivoto", "web-c", "Deployment", "web", "node-c", true);
  auto node_c = harness.Connect("node-c", {web_c});
  const std::vector<v1::AggregatorMessage> on_c = node_c->WaitForMessages(1);
  REQUIRE(on_c.size() == 1);
  CHECK(on_c[0].subscribe().id() == on_a[0].subscribe().id());
  CHECK(Pods(on_c[0].subscribe().match().source_pods()) ==
        std::vector<std::string>{"emojivoto/web-c"});
  CHECK(on_c[0].subscribe().max_rps() == Approx(10.0 / 3));
  const std::vector<v1::AggregatorMessage> updated = node_a->WaitForMessages(2);
  REQUIRE(updated.size() == 2);
  CHECK(updated[1].subscribe().max_rps() == Approx(10.0 / 3));
}

// node-a runs web-a, node-b voting-1, node-c web-u: a web pod that is not enrolled.
struct UnenrolledWeb {
  Harness harness;
  Cast cast;
  v1::Pod web_u = MakePod("emojivoto", "web-u", "Deployment", "web", "node-c", false);
  std::unique_ptr<FakeAgent> node_a = harness.Connect("node-a", {cast.web_a});
  std::unique_ptr<FakeAgent> node_b = harness.Connect("node-b", {cast.voting});
  std::unique_ptr<FakeAgent> node_c = harness.Connect("node-c", {web_u});
};

TEST_CASE("Tap with --to sees unenrolled targets' requests where they arrive", "[unit]") {
  UnenrolledWeb f;
  v1::TapRequestSpec spec;
  *spec.mutable_target() = Resource("deploy", "web");
  *spec.mutable_to() = Resource("deploy", "voting");
  spec.set_max_rps(30);
  TapClient client(*f.harness.api, spec);
  const std::vector<v1::AggregatorMessage> on_a = f.node_a->WaitForMessages(1);
  const std::vector<v1::AggregatorMessage> on_b = f.node_b->WaitForMessages(1);
  const std::vector<v1::AggregatorMessage> on_c = f.node_c->WaitForMessages(1);
  REQUIRE(on_a.size() == 1);
  REQUIRE(on_b.size() == 1);
  REQUIRE(on_c.size() == 1);
  CHECK(Pods(on_a[0].subscribe().match().source_pods()) ==
        std::vector<std::string>{"emojivoto/web-a", "emojivoto/web-u"});
  // node-b hosts no web pod, but web-u's calls to voting-1 are seen only there.
  CHECK(Pods(on_b[0].subscribe().match().source_pods()) ==
        std::vector<std::string>{"emojivoto/web-u"});
  CHECK(Pods(on_b[0].subscribe().match().destination_pods()) ==
        std::vector<std::string>{"emojivoto/voting-1"});
  for (const auto* message : {&on_a[0], &on_b[0], &on_c[0]}) {
    CHECK(message->subscribe().max_rps() == Approx(10.0));
  }
}

TEST_CASE("Tap with --to a Service: the callers' agents match the Service dialled", "[unit]") {
  UnenrolledWeb f;
  v1::TapRequestSpec spec;
  *spec.mutable_target() = Resource("deploy", "web");
  *spec.mutable_to() = Resource("svc", "voting-svc");
  TapClient client(*f.harness.api, spec);
  // One subscription per node of the target, on the Service and on no pod: only the caller's
  // agent knows the Service dialled, so the server's node (node-b) is not asked, and web-u,
  // not enrolled, makes no request its own agent sees (node-c's share is for nothing).
  const std::vector<v1::AggregatorMessage> on_a = f.node_a->WaitForMessages(1);
  REQUIRE(on_a.size() == 1);
  const v1::TapMatch& match = on_a[0].subscribe().match();
  CHECK(Pods(match.source_pods()) == std::vector<std::string>{"emojivoto/web-a"});
  CHECK(match.destination_pods_size() == 0);
  CHECK(Pods(match.destination_services()) == std::vector<std::string>{"emojivoto/voting-svc"});
  const std::vector<v1::AggregatorMessage> on_c = f.node_c->WaitForMessages(1);
  REQUIRE(on_c.size() == 1);
  CHECK(Pods(on_c[0].subscribe().match().destination_services()) ==
        std::vector<std::string>{"emojivoto/voting-svc"});

  v1::TapEvent event = Event(on_a[0].subscribe().id(), "node-a:1:1", f.cast.web_a, f.cast.voting);
  event.mutable_destination_service()->set_namespace_("emojivoto");
  event.mutable_destination_service()->set_owner_kind("Service");
  event.mutable_destination_service()->set_owner_name("voting-svc");
  f.node_a->SendTap({event});
  REQUIRE(client.WaitUntil([](const TapClient& c) { return c.events().size() == 1; }));
  CHECK(client.Read([](const TapClient& c) { return c.events()[0].request_id(); }) == "node-a:1:1");
  CHECK(f.node_b->received().empty());

  // A Service with no name, or no namespace, is refused, saying what to give.
  for (const v1::Resource& to : {Resource("service", ""), Resource("svc", "voting-svc", "")}) {
    v1::TapRequestSpec bad = spec;
    *bad.mutable_to() = to;
    TapClient refused(*f.harness.api, bad);
    REQUIRE(refused.WaitUntil([](const TapClient& c) { return c.status().has_value(); }));
    CHECK(refused.status()->error_code() == grpc::StatusCode::INVALID_ARGUMENT);
    CHECK_THAT(refused.status()->error_message(), Catch::Contains("needs a name and a namespace"));
  }
}

TEST_CASE("Tap refuses oversized filters and taps past the most it serves, saying so", "[unit]") {
  ServerOptions options;
  options.tap.max_taps = 1;
  Harness harness(options);
  Cast cast;
  auto node_a = harness.Connect("node-a", {cast.web_a});
  v1::TapRequestSpec spec;
  *spec.mutable_target() = Resource("deploy", "web");
  {
    v1::TapRequestSpec huge = spec;
    huge.set_path_prefix("/" + std::string(5000, 'a'));
    TapClient client(*harness.api, huge);
    REQUIRE(client.WaitUntil([](const TapClient& c) { return c.status().has_value(); }));
    CHECK(client.status()->error_code() == grpc::StatusCode::INVALID_ARGUMENT);
    CHECK(client.status()->error_message() ==
          "the tap's path_prefix filter is 5001 bytes, more than a tap matches (4096): give a "
          "shorter one");
  }
  TapClient first(*harness.api, spec);
  // The first tap is open once its subscription reached the agent.
  REQUIRE(Eventually([&] {
    const std::vector<v1::AggregatorMessage> received = node_a->received();
    return std::any_of(received.begin(), received.end(),
                       [](const v1::AggregatorMessage& m) { return m.has_subscribe(); });
  }));
  {
    TapClient second(*harness.api, spec);
    REQUIRE(second.WaitUntil([](const TapClient& c) { return c.status().has_value(); }));
    CHECK(second.status()->error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
    CHECK(second.status()->error_message() ==
          "1 taps are open on this aggregator, the most it serves at once: end one, or try "
          "again later");
  }
  CHECK_FALSE(first.status().has_value());
}

TEST_CASE(
    "Tap refuses a caller past the taps one caller may hold, and lets it open more once "
    "it ends one",
    "[unit]") {
  ServerOptions options;
  options.tap.max_taps_per_caller = 2;
  Harness harness(options);
  Cast cast;
  auto node_a = harness.Connect("node-a", {cast.web_a});
  v1::TapRequestSpec spec;
  *spec.mutable_target() = Resource("deploy", "web");
  const auto subscriptions = [&] {
    const std::vector<v1::AggregatorMessage> received = node_a->received();
    return std::count_if(received.begin(), received.end(),
                         [](const v1::AggregatorMessage& m) { return m.has_subscribe(); });
  };
  auto first = std::make_unique<TapClient>(*harness.api, spec);
  REQUIRE(Eventually([&] { return subscriptions() >= 1; }));
  TapClient second(*harness.api, spec);
  REQUIRE(Eventually([&] { return subscriptions() >= 2; }));
  {
    // Without a certificate, a caller is its host: every client here is 127.0.0.1.
    TapClient third(*harness.api, spec);
    REQUIRE(third.WaitUntil([](const TapClient& c) { return c.status().has_value(); }));
    CHECK(third.status()->error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
    CHECK(third.status()->error_message() ==
          "ipv4:127.0.0.1 has 2 taps open, the most one caller may: end one of them first");
  }
  first.reset();
  REQUIRE(Eventually([&] { return harness.server->tap_hub().sessions() == 1; }));
  TapClient again(*harness.api, spec);
  CHECK(Eventually([&] { return subscriptions() >= 3; }));
  CHECK_FALSE(again.status().has_value());
  CHECK_FALSE(second.status().has_value());
}

TEST_CASE("Tap of a target without pods is NOT_FOUND, saying so", "[unit]") {
  Harness harness;
  Cast cast;
  auto node_a = harness.Connect("node-a", {cast.web_a});
  {
    v1::TapRequestSpec spec;
    *spec.mutable_target() = Resource("deploy", "nope");
    TapClient client(*harness.api, spec);
    REQUIRE(client.WaitUntil([](const TapClient& c) { return c.status().has_value(); }));
    CHECK(client.status()->error_code() == grpc::StatusCode::NOT_FOUND);
    CHECK_THAT(client.status()->error_message(),
               Catch::Contains("no pods of deployment/nope in namespace emojivoto"));
  }
  {
    v1::TapRequestSpec spec;
    *spec.mutable_target() = Resource("deploy", "web");
    *spec.mutable_to() = Resource("sts", "db");
    TapClient client(*harness.api, spec);
    REQUIRE(client.WaitUntil([](const TapClient& c) { return c.status().has_value(); }));
    CHECK(client.status()->error_code() == grpc::StatusCode::NOT_FOUND);
  }
  {
    v1::TapRequestSpec spec;
    *spec.mutable_target() = Resource("svc", "web");
    TapClient client(*harness.api, spec);
    REQUIRE(client.WaitUntil([](const TapClient& c) { return c.status().has_value(); }));
    CHECK(client.status()->error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  }
  CHECK(node_a->received().empty());
}

TEST_CASE("Tap ends once max_events events have been sent, and cancels its subscriptions",
          "[unit]") {
  Harness harness;
  Cast cast;
  auto node_b = harness.Connect("node-b", {cast.voting});
  v1::TapRequestSpec spec;
  *spec.mutable_target() = Resource("deploy", "voting");
  spec.set_max_events(2);
  TapClient client(*harness.api, spec);
  const std::vector<v1::AggregatorMessage> subscribed = node_b->WaitForMessages(2);
  REQUIRE(subscribed.size() == 2);
  const uint64_t id = subscribed[0].subscribe().id();
  node_b->SendTap({Event(id, "node-b:1:1", cast.voting, cast.web_a),
                   Event(id, "node-b:2:1", cast.voting, cast.web_a),
                   Event(id, "node-b:3:1", cast.voting, cast.web_a)});
  REQUIRE(client.WaitUntil([](const TapClient& c) { return c.status().has_value(); }));
  CHECK(client.Read([](const TapClient& c) { return c.status()->ok(); }));
  CHECK(client.Read([](const TapClient& c) { return c.events().size(); }) == 2);
  CHECK(node_b->WaitForMessages(4).size() == 4);  // both subscriptions cancelled
  CHECK(Eventually([&] { return harness.server->tap_hub().sessions() == 0; }));
}

TEST_CASE("A tap session's queue is bounded, its drops counted and reported", "[unit]") {
  TapSession session(1, 4);
  for (int i = 0; i < 10; ++i) session.Push(v1::TapEvent());
  session.AddAgentDrops(3);
  std::vector<v1::TapEvent> events;
  CHECK(session.Wait(0ms, &events));
  CHECK(events.size() == 4);
  v1::TapDrops drops = session.TakeDrops();
  CHECK(drops.stream_dropped() == 6);
  CHECK(drops.agent_dropped() == 3);
  drops = session.TakeDrops();
  CHECK(drops.stream_dropped() == 0);
  CHECK(drops.agent_dropped() == 0);
  session.Close();
  events.clear();
  CHECK_FALSE(session.Wait(0ms, &events));
}

TEST_CASE("Tap drops at the agents and at the client's queue reach the client", "[unit]") {
  ServerOptions options;
  options.tap.queue_capacity = 8;
  options.tap_pacing.drops_interval = 20ms;
  Harness harness(options);
  Cast cast;
  auto node_b = harness.Connect("node-b", {cast.voting});
  v1::TapRequestSpec spec;
  *spec.mutable_target() = Resource("deploy", "voting");
  TapClient client(*harness.api, spec);
  const std::vector<v1::AggregatorMessage> subscribed = node_b->WaitForMessages(2);
  REQUIRE(subscribed.size() == 2);

  constexpr size_t kSent = 2000;
  std::vector<v1::TapEvent> burst;
  for (size_t i = 0; i < kSent; ++i) {
    burst.push_back(Event(subscribed[0].subscribe().id(), "node-b:1:" + std::to_string(i),
                          cast.voting, cast.web_a));
  }
  node_b->SendTap(burst, 7);
  REQUIRE(client.WaitUntil([&](const TapClient& c) {
    return c.events().size() + c.stream_dropped() == kSent && c.agent_dropped() == 7;
  }));
  // 2000 at once into a queue of 8: most cannot wait for the client.
  CHECK(client.Read([](const TapClient& c) { return c.stream_dropped(); }) > 0);
  CHECK(client.Read([](const TapClient& c) { return c.events().size(); }) < kSent);
}

}  // namespace
}  // namespace nodemesh::aggregator
