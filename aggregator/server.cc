#include "aggregator/server.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <deque>
#include <map>
#include <utility>
#include <vector>

#include "aggregator/queries.h"
#include "aggregator/reports.h"
#include "common/base/log.h"
#include "common/tls/tls.h"
#include "nodemesh/v1/nodemesh.grpc.pb.h"

namespace nodemesh::aggregator {
namespace {

using AgentStream = grpc::ServerReaderWriter<v1::AggregatorMessage, v1::AgentMessage>;

// Messages waiting for an agent: subscriptions, cancels, a delta's acknowledgement each
// second. An agent that lets this many pile up is not reading its stream, and it is ended.
constexpr size_t kMaxQueuedForAgent = 4096;
// A tap's handler looks this often whether its client is still there.
constexpr auto kTapPollInterval = std::chrono::milliseconds(100);
// Delta errors are logged at most this often per agent stream.
constexpr auto kDeltaErrorLogInterval = std::chrono::seconds(60);
// An admin API path and query: a few parameters.
constexpr size_t kMaxAdminTarget = 4096;
// Agent deltas of a large node (tens of thousands of series) exceed gRPC's default 4 MiB.
constexpr int kMaxMessageBytes = 64 << 20;

grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message().data(), status.message().size()));
}

v1::AggregatorMessage MetricsAck(uint64_t sequence) {
  v1::AggregatorMessage message;
  message.mutable_metrics_ack()->set_sequence(sequence);
  return message;
}

std::vector<v1::Pod> PodsOf(const google::protobuf::RepeatedPtrField<v1::Pod>& pods) {
  return std::vector<v1::Pod>(pods.begin(), pods.end());
}

// The stream down to one agent: messages are queued by whoever sends them (the tap hub, under
// its lock) and written by this link's own thread, so no sender ever waits on the network.
class StreamLink : public AgentLink {
 public:
  StreamLink(grpc::ServerContext* context, AgentStream* stream, std::string node)
      : context_(context), stream_(stream), node_(std::move(node)) {}
  ~StreamLink() override { Stop(); }

  void Start() {
    writer_ = std::thread([this] { WriteLoop(); });
  }

  void Send(v1::AggregatorMessage message) override {
    {
      std::lock_guard lock(mutex_);
      if (stopped_ || failed_) return;
      if (queue_.size() >= kMaxQueuedForAgent) {
        Log(LogLevel::kWarning, "agent of node {} is not reading its stream; ending it", node_);
        failed_ = true;
        context_->TryCancel();
        return;
      }
      queue_.push_back(std::move(message));
    }
    wake_.notify_one();
  }

  // Ends the stream from this side: the node connected again on a new one.
  void Cancel() {
    std::lock_guard lock(mutex_);
    if (!stopped_) context_->TryCancel();
  }

  // Stops the writer before the handler returns and gRPC frees the stream; a write blocked
  // on an agent that stopped reading is cut short by cancelling the call.
  void Stop() {
    {
      std::lock_guard lock(mutex_);
      if (stopped_) return;
      stopped_ = true;
      if (writing_) context_->TryCancel();
    }
    wake_.notify_one();
    if (writer_.joinable()) writer_.join();
  }

 private:
  void WriteLoop() {
    std::unique_lock lock(mutex_);
    for (;;) {
      wake_.wait(lock, [&] { return stopped_ || !queue_.empty(); });
      if (stopped_) return;
      v1::AggregatorMessage message = std::move(queue_.front());
      queue_.pop_front();
      writing_ = true;
      lock.unlock();
      const bool written = stream_->Write(message);
      lock.lock();
      writing_ = false;
      if (!written) {
        failed_ = true;
        return;
      }
    }
  }

  grpc::ServerContext* const context_;
  AgentStream* const stream_;
  const std::string node_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<v1::AggregatorMessage> queue_;
  bool writing_ = false;
  bool stopped_ = false;
  bool failed_ = false;
  std::thread writer_;
};

}  // namespace

class AggregatorServer::AgentServiceImpl final : public v1::AgentService::Service {
 public:
  explicit AgentServiceImpl(AggregatorServer& server) : server_(server) {}

  grpc::Status Connect(grpc::ServerContext* context, AgentStream* stream) override {
    v1::AgentMessage message;
    if (!stream->Read(&message)) {
      return grpc::Status(grpc::StatusCode::CANCELLED, "the agent left before its hello");
    }
    if (!message.has_hello() || message.hello().node().empty()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "the first message on the agent stream must be a Hello naming the "
                          "node; upgrade the agent to speak nodemesh.v1");
    }
    const std::string node = message.hello().node();
    const std::string instance = message.hello().instance();
    if (absl::Status may = server_.authorizer_.Report(*context, node); !may.ok()) {
      Log(LogLevel::kWarning, "agent stream from {} refused: {}", context->peer(), may.message());
      return ToGrpc(may);
    }
    if (!Admit(node)) {
      server_.refused_nodes_.fetch_add(1, std::memory_order_relaxed);
      Log(LogLevel::kWarning,
          "agent stream of node {} refused: {} nodes are connected, the most this aggregator "
          "serves (--max-nodes)",
          node, server_.options_.max_nodes);
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          fmt::format("this aggregator serves at most {} nodes at once and has "
                                      "them: give it a larger --max-nodes",
                                      server_.options_.max_nodes));
    }
    auto link = std::make_shared<StreamLink>(context, stream, node);
    link->Start();
    // Every report is checked against the node the agent speaks for (reports.h).
    const absl::Status hello_pods = CheckPodsOfNode(node, message.hello().pods());
    const uint64_t generation = server_.cluster_.Connect(
        node, message.hello().version(),
        hello_pods.ok() ? PodsOf(message.hello().pods()) : std::vector<v1::Pod>{},
        server_.NowSeconds());
    std::chrono::steady_clock::time_point last_error_log{};
    const auto refused = [&](const absl::Status& status) {
      server_.cluster_.Refused(node, generation);
      const auto now = std::chrono::steady_clock::now();
      if (now - last_error_log >= kDeltaErrorLogInterval) {
        last_error_log = now;
        Log(LogLevel::kWarning, "node {}: refused: {}", node, status.message());
      }
    };
    if (!hello_pods.ok()) refused(hello_pods);
    std::shared_ptr<StreamLink> replaced;
    {
      std::lock_guard lock(mutex_);
      Current& current = streams_[node];
      replaced = std::exchange(current.link, link);
      current.generation = generation;
    }
    if (replaced) {
      replaced->Cancel();
      Log(LogLevel::kInfo,
          "node {} connected again (agent {}, {} pods); its previous stream is "
          "replaced",
          node, message.hello().version(), message.hello().pods_size());
    } else {
      Log(LogLevel::kInfo, "node {} connected (agent {}, {} pods)", node, message.hello().version(),
          message.hello().pods_size());
    }
    server_.tap_hub_.AttachAgent(node, link);
    server_.tap_hub_.PodsChanged();
    BroadcastPods();

    while (stream->Read(&message)) {
      switch (message.kind_case()) {
        case v1::AgentMessage::kMetrics: {
          if (absl::Status own = CheckDeltaOfNode(node, message.metrics()); !own.ok()) {
            refused(own);
            break;
          }
          const int64_t now = server_.NowSeconds();
          server_.cluster_.Reported(node, generation, now);
          // Numbered deltas are filed once (one the agent sent again is skipped) and
          // acknowledged either way, so that the agent stops keeping them.
          const uint64_t sequence = message.metrics().sequence();
          const bool first =
              sequence == 0 || server_.cluster_.FirstDelivery(node, instance, sequence);
          const absl::Status added =
              first ? server_.store_.Add(message.metrics(), now) : absl::OkStatus();
          if (sequence != 0) link->Send(MetricsAck(sequence));
          const auto steady_now = std::chrono::steady_clock::now();
          if (!added.ok() && steady_now - last_error_log >= kDeltaErrorLogInterval) {
            last_error_log = steady_now;
            Log(LogLevel::kWarning, "node {}: {}", node, added.message());
          }
          break;
        }
        case v1::AgentMessage::kPods:
        case v1::AgentMessage::kHello: {
          // A Hello is not expected twice; its pods are still the node's news.
          const auto& pods = message.has_pods() ? message.pods().pods() : message.hello().pods();
          if (absl::Status own = CheckPodsOfNode(node, pods); !own.ok()) {
            refused(own);
            break;
          }
          server_.cluster_.SetPods(node, generation, PodsOf(pods));
          server_.tap_hub_.PodsChanged();
          BroadcastPods();
          break;
        }
        case v1::AgentMessage::kTap:
          server_.tap_hub_.Deliver(node, message.tap());
          break;
        case v1::AgentMessage::kAdminResponse:
          server_.admin_relay_.Deliver(*link, std::move(*message.mutable_admin_response()));
          break;
        case v1::AgentMessage::KIND_NOT_SET:
          break;  // from a newer agent: what this aggregator does not know, it skips
      }
    }

    // First, so that a node seen gone (from the tap hub or the cluster) has left room.
    Leave(node);
    server_.tap_hub_.DetachAgent(node, link.get());
    server_.admin_relay_.StreamEnded(*link);
    link->Stop();
    {
      std::lock_guard lock(mutex_);
      const auto found = streams_.find(node);
      if (found != streams_.end() && found->second.generation == generation) streams_.erase(found);
    }
    if (server_.cluster_.Disconnect(node, generation, server_.NowSeconds())) {
      Log(LogLevel::kWarning,
          "node {} disconnected: marked stale; its pods and data are kept until it is back", node);
    }
    return grpc::Status::OK;
  }

  // Tells every agent about every pod of the cluster, so that each names peers on other
  // nodes as the pods they are rather than as external addresses.
  void BroadcastPods() {
    v1::AggregatorMessage message;
    for (PodEntry& entry : server_.cluster_.Pods()) {
      v1::Pod& pod = *message.mutable_cluster_pods()->add_pods() = std::move(entry.pod);
      pod.mutable_identity()->set_node(entry.node);
    }
    std::lock_guard lock(mutex_);
    for (auto& [node, current] : streams_) current.link->Send(message);
  }

  // The stream of `node`'s agent, or null with the nodes that have one.
  std::shared_ptr<StreamLink> LinkOf(const std::string& node, std::vector<std::string>* nodes) {
    std::lock_guard lock(mutex_);
    if (const auto found = streams_.find(node); found != streams_.end()) return found->second.link;
    for (const auto& [name, current] : streams_) nodes->push_back(name);
    return nullptr;
  }

  // Counts the node's stream in, unless max_nodes other nodes have streams open.
  bool Admit(const std::string& node) {
    std::lock_guard lock(mutex_);
    if (!admitted_.contains(node) && admitted_.size() >= server_.options_.max_nodes) return false;
    ++admitted_[node];
    return true;
  }
  void Leave(const std::string& node) {
    std::lock_guard lock(mutex_);
    if (const auto found = admitted_.find(node); found != admitted_.end() && --found->second == 0) {
      admitted_.erase(found);
    }
  }

  // Ends every agent stream (shutting down).
  void CancelAll() {
    std::lock_guard lock(mutex_);
    for (auto& [node, current] : streams_) current.link->Cancel();
  }

 private:
  struct Current {
    uint64_t generation = 0;
    std::shared_ptr<StreamLink> link;
  };
  AggregatorServer& server_;
  std::mutex mutex_;
  std::map<std::string, Current> streams_;
  // Streams open per node, the one being replaced included: what max_nodes counts.
  std::map<std::string, int> admitted_;
};

class AggregatorServer::ApiServiceImpl final : public v1::Api::Service {
 public:
  explicit ApiServiceImpl(AggregatorServer& server) : server_(server) {}

  grpc::Status StatSummary(grpc::ServerContext* context, const v1::StatSummaryRequest* request,
                           v1::StatSummaryResponse* response) override {
    if (absl::Status may = server_.authorizer_.Read(*context); !may.ok()) return ToGrpc(may);
    return Answer(aggregator::StatSummary(Context(), server_.cluster_.Pods(), *request), response);
  }

  grpc::Status Edges(grpc::ServerContext* context, const v1::EdgesRequest* request,
                     v1::EdgesResponse* response) override {
    if (absl::Status may = server_.authorizer_.Read(*context); !may.ok()) return ToGrpc(may);
    return Answer(aggregator::Edges(Context(), *request), response);
  }

  grpc::Status TopRoutes(grpc::ServerContext* context, const v1::TopRoutesRequest* request,
                         v1::TopRoutesResponse* response) override {
    if (absl::Status may = server_.authorizer_.Read(*context); !may.ok()) return ToGrpc(may);
    return Answer(aggregator::TopRoutes(Context(), *request), response);
  }

  grpc::Status ListPods(grpc::ServerContext* context, const v1::ListPodsRequest* request,
                        v1::ListPodsResponse* response) override {
    if (absl::Status may = server_.authorizer_.Read(*context); !may.ok()) return ToGrpc(may);
    *response = aggregator::ListPods(server_.cluster_.Pods(),
                                     server_.cluster_.Nodes(server_.NowSeconds()), *request);
    return grpc::Status::OK;
  }

  grpc::Status NodeAdmin(grpc::ServerContext* context, const v1::NodeAdminRequest* request,
                         v1::NodeAdminResponse* response) override {
    if (absl::Status may = server_.authorizer_.RelayToNode(*context, request->node()); !may.ok()) {
      return ToGrpc(may);
    }
    const std::string& target = request->target();
    if (target.empty() || target[0] != '/' || target.size() > kMaxAdminTarget) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          fmt::format("target must be an admin API path with its query, starting "
                                      "with / and at most {} bytes, e.g. /pods",
                                      kMaxAdminTarget));
    }
    std::vector<std::string> nodes;
    const std::shared_ptr<StreamLink> link =
        server_.agent_service_->LinkOf(request->node(), &nodes);
    if (link == nullptr) {
      return grpc::Status(
          grpc::StatusCode::NOT_FOUND,
          fmt::format("no agent of node '{}' is connected to this aggregator (connected: {})",
                      request->node(),
                      nodes.empty() ? "none" : fmt::format("{}", fmt::join(nodes, ", "))));
    }
    absl::StatusOr<v1::AdminResponse> answer = server_.admin_relay_.Call(
        *link, request->node(), target, [context] { return context->IsCancelled(); });
    if (!answer.ok()) return ToGrpc(answer.status());
    response->set_status(answer->status());
    response->set_content_type(std::move(*answer->mutable_content_type()));
    response->set_body(std::move(*answer->mutable_body()));
    return grpc::Status::OK;
  }

  grpc::Status Tap(grpc::ServerContext* context, const v1::TapRequestSpec* spec,
                   grpc::ServerWriter<v1::TapStreamMessage>* writer) override {
    if (absl::Status may = server_.authorizer_.Tap(*context, *spec); !may.ok()) {
      Log(LogLevel::kWarning, "tap refused for {}: {}", context->peer(), may.message());
      return ToGrpc(may);
    }
    absl::StatusOr<std::shared_ptr<TapSession>> opened =
        server_.tap_hub_.Open(*spec, CallerKey(*context));
    if (!opened.ok()) {
      Log(LogLevel::kInfo, "tap refused for {}: {}", context->peer(), opened.status().message());
      return ToGrpc(opened.status());
    }
    const std::shared_ptr<TapSession> session = *std::move(opened);
    Log(LogLevel::kInfo, "tap {} started for {} ({}/{})", session->id(), context->peer(),
        spec->target().type(), spec->target().name());

    const auto poll =
        std::min<std::chrono::milliseconds>(kTapPollInterval, server_.options_.tap_drops_interval);
    auto last_drops = std::chrono::steady_clock::now();
    std::vector<v1::TapEvent> events;
    bool client_there = true;
    while (client_there && !context->IsCancelled()) {
      events.clear();
      const bool open = session->Wait(poll, &events);
      for (v1::TapEvent& event : events) {
        v1::TapStreamMessage message;
        *message.mutable_event() = std::move(event);
        if (!writer->Write(message)) {
          client_there = false;
          break;
        }
      }
      const auto now = std::chrono::steady_clock::now();
      if (client_there && now - last_drops >= server_.options_.tap_drops_interval) {
        last_drops = now;
        v1::TapDrops drops = session->TakeDrops();
        if (drops.agent_dropped() != 0 || drops.stream_dropped() != 0) {
          v1::TapStreamMessage message;
          *message.mutable_drops() = std::move(drops);
          client_there = writer->Write(message);
        }
      }
      if (!open) break;  // the aggregator is shutting down
    }
    server_.tap_hub_.Close(session);
    Log(LogLevel::kInfo, "tap {} ended", session->id());
    if (context->IsCancelled() || !client_there) {
      return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
    }
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the aggregator is shutting down");
  }

 private:
  QueryContext Context() const {
    const int64_t now = server_.NowSeconds();
    return QueryContext{server_.store_, server_.cluster_.StaleNodes(now), now,
                        server_.history_start_second_};
  }

  template <typename Response>
  static grpc::Status Answer(absl::StatusOr<Response> answer, Response* response) {
    if (!answer.ok()) return ToGrpc(answer.status());
    *response = *std::move(answer);
    return grpc::Status::OK;
  }

  AggregatorServer& server_;
};

AggregatorServer::AggregatorServer(ServerOptions options)
    : options_(std::move(options)),
      history_start_second_(NowSeconds()),
      store_(options_.store),
      cluster_(options_.stale_after_seconds),
      tap_hub_([this] { return cluster_.Pods(); }, options_.tap),
      admin_relay_(options_.admin_relay),
      authorizer_(!options_.tls.ca.empty()),
      agent_service_(std::make_unique<AgentServiceImpl>(*this)),
      api_service_(std::make_unique<ApiServiceImpl>(*this)) {}

AggregatorServer::~AggregatorServer() { Shutdown(); }

absl::StatusOr<int> AggregatorServer::Start() {
  grpc::ServerBuilder builder;
  int port = 0;
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (!options_.tls.empty()) {
    absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> tls =
        ServerCredentials(options_.tls, "--tls-");
    if (!tls.ok()) return tls.status();
    credentials = *std::move(tls);
  } else if (!IsLoopbackAddress(options_.listen_address)) {
    return absl::InvalidArgumentError(fmt::format(
        "--listen {} is not a loopback address, and plaintext is for loopback only (a local "
        "cluster): give --tls-cert and --tls-key, and --tls-ca to know agents and clients by "
        "their certificates",
        options_.listen_address));
  }
  builder.AddListeningPort(options_.listen_address, credentials, &port);
  builder.RegisterService(agent_service_.get());
  builder.RegisterService(api_service_.get());
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  grpc::ResourceQuota quota("nodemesh-aggregator");
  quota.SetMaxThreads(options_.max_threads > 0
                          ? options_.max_threads
                          : static_cast<int>(options_.max_nodes + options_.tap.max_taps) +
                                ServerOptions::kQueryThreads);
  builder.SetResourceQuota(quota);
  // Finds agents whose node vanished without closing the connection, and lets agents ping.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 30'000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10'000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5'000);
  server_ = builder.BuildAndStart();
  if (!server_ || port == 0) {
    server_.reset();
    return absl::UnavailableError(fmt::format(
        "cannot listen on {}: the address is in use or not an address of this host (give "
        "--listen HOST:PORT)",
        options_.listen_address));
  }
  if (options_.housekeeping_interval.count() > 0) {
    housekeeping_ = std::thread([this] { HousekeepingLoop(); });
  }
  return port;
}

void AggregatorServer::Shutdown() {
  {
    std::lock_guard lock(housekeeping_mutex_);
    if (stopping_) return;
    stopping_ = true;
  }
  housekeeping_wake_.notify_all();
  if (housekeeping_.joinable()) housekeeping_.join();
  if (!server_) return;
  tap_hub_.Shutdown();
  agent_service_->CancelAll();
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  server_->Wait();
}

void AggregatorServer::HousekeepingLoop() {
  std::unique_lock lock(housekeeping_mutex_);
  while (!housekeeping_wake_.wait_for(lock, options_.housekeeping_interval,
                                      [&] { return stopping_; })) {
    lock.unlock();
    Housekeep();
    lock.lock();
  }
}

void AggregatorServer::Housekeep() {
  const int64_t now = NowSeconds();
  store_.Expire(now);
  const Store::Stats stats = store_.stats();

  const std::vector<std::string> forgotten =
      cluster_.ForgetDisconnected(now, store_.retention_seconds());
  for (const std::string& node : forgotten) {
    Log(LogLevel::kInfo, "forgetting node {}: disconnected for over {} s, its data has aged out",
        node, store_.retention_seconds());
  }
  if (!forgotten.empty()) tap_hub_.PodsChanged();

  // Disconnects are logged as they happen; here, connected nodes that fell silent.
  std::map<std::string, v1::NodeStatus> stale;
  for (v1::NodeStatus& status : cluster_.StaleNodes(now)) {
    stale.emplace(status.node(), std::move(status));
  }
  std::lock_guard lock(stale_mutex_);
  if (stats.evicted_for_memory > evicted_for_memory_) {
    Log(LogLevel::kWarning,
        "memory budget of {} MiB reached: dropped the {} oldest seconds early, so long windows "
        "see less than {} s (give the aggregator more with --max-memory-mb)",
        options_.store.max_memory_bytes >> 20, stats.evicted_for_memory - evicted_for_memory_,
        store_.retention_seconds());
    evicted_for_memory_ = stats.evicted_for_memory;
  }
  for (const auto& [node, status] : stale) {
    if (stale_nodes_.contains(node) || !status.connected()) continue;
    if (status.last_report_unix_seconds() == 0) {
      Log(LogLevel::kWarning, "node {} is stale: connected but no metrics yet", node);
    } else {
      Log(LogLevel::kWarning, "node {} is stale: no metrics for {} s", node,
          now - status.last_report_unix_seconds());
    }
  }
  for (const std::string& node : stale_nodes_) {
    const bool gone = std::find(forgotten.begin(), forgotten.end(), node) != forgotten.end();
    if (!stale.contains(node) && !gone) Log(LogLevel::kInfo, "node {} reports again", node);
  }
  stale_nodes_.clear();
  for (const auto& [node, status] : stale) stale_nodes_.insert(node);
}

}  // namespace nodemesh::aggregator
