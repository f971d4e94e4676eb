#include "aggregator/agent_session.h"

#include <fmt/format.h>

#include <utility>
#include <vector>

#include "aggregator/reports.h"
#include "common/base/log.h"

namespace nodemesh::aggregator {
namespace {

// Refusals and delta errors are logged at most this often per agent stream.
constexpr auto kErrorLogInterval = std::chrono::seconds(60);

std::vector<v1::Pod> PodsOf(const google::protobuf::RepeatedPtrField<v1::Pod>& pods) {
  return std::vector<v1::Pod>(pods.begin(), pods.end());
}

v1::AggregatorMessage MetricsAck(uint64_t sequence) {
  v1::AggregatorMessage message;
  message.mutable_metrics_ack()->set_sequence(sequence);
  return message;
}

}  // namespace

grpc::Status AgentSession::Admit() {
  v1::AgentMessage message;
  if (!stream_.Read(&message)) {
    return grpc::Status(grpc::StatusCode::CANCELLED, "the agent left before its hello");
  }
  if (!message.has_hello() || message.hello().node().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "the first message on the agent stream must be a Hello naming the "
                        "node; upgrade the agent to speak nodemesh.v1");
  }
  hello_ = std::move(*message.mutable_hello());
  const std::string& node = hello_.node();
  if (absl::Status may = MayReportFor(state_.authorizer, state_.agent_tokens, context_, node);
      !may.ok()) {
    Log(LogLevel::kWarning, "agent stream from {} refused: {}", context_.peer(), may.message());
    return ToGrpc(may);
  }
  if (!state_.agents.Admit(node)) {
    const size_t max_nodes = state_.agents.max_nodes();
    Log(LogLevel::kWarning,
        "agent stream of node {} refused: {} nodes are connected, the most this aggregator "
        "serves (--max-nodes)",
        node, max_nodes);
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        fmt::format("this aggregator serves at most {} nodes at once and has "
                                    "them: give it a larger --max-nodes",
                                    max_nodes));
  }
  return grpc::Status::OK;
}

void AgentSession::Register() {
  const std::string& node = hello_.node();
  link_ = std::make_shared<StreamLink>(&context_, &stream_, node);
  link_->Start();
  // Every report is checked against the node the agent speaks for (reports.h).
  const absl::Status hello_pods = CheckPodsOfNode(node, hello_.pods());
  generation_ = state_.cluster.Connect(
      node, hello_.version(), hello_pods.ok() ? PodsOf(hello_.pods()) : std::vector<v1::Pod>{},
      state_.NowSeconds());
  if (!hello_pods.ok()) Refused(hello_pods);
  const std::shared_ptr<StreamLink> replaced = state_.agents.Replace(node, generation_, link_);
  if (replaced) replaced->Cancel();
  state_.tap_hub.AttachAgent(node, link_);
  state_.tap_hub.PodsChanged();
  BroadcastPods();
  // Said once the node is whole here, its pods known and its stream taking taps: whoever
  // reads this line (an operator, a test) may tap the node's pods from then on.
  if (replaced) {
    Log(LogLevel::kInfo,
        "node {} connected again (agent {}, {} pods); its previous stream is replaced", node,
        hello_.version(), hello_.pods_size());
  } else {
    Log(LogLevel::kInfo, "node {} connected (agent {}, {} pods)", node, hello_.version(),
        hello_.pods_size());
  }
}

void AgentSession::Dispatch() {
  v1::AgentMessage message;
  while (stream_.Read(&message)) {
    switch (message.kind_case()) {
      case v1::AgentMessage::kMetrics:
        OnMetrics(message.metrics());
        break;
      case v1::AgentMessage::kPods:
        OnPods(message.pods().pods());
        break;
      case v1::AgentMessage::kHello:
        OnPods(message.hello().pods());  // a Hello is not expected twice; its pods are news
        break;
      case v1::AgentMessage::kTap:
        state_.tap_hub.Deliver(hello_.node(), message.tap());
        break;
      case v1::AgentMessage::kAdminResponse:
        state_.admin_relay.Deliver(*link_, std::move(*message.mutable_admin_response()));
        break;
      case v1::AgentMessage::KIND_NOT_SET:
        break;  // from a newer agent: what this aggregator does not know, it skips
    }
  }
}

void AgentSession::Teardown() {
  const std::string& node = hello_.node();
  // First, so that a node seen gone (from the tap hub or the cluster) has left room.
  state_.agents.Leave(node);
  state_.tap_hub.DetachAgent(node, link_.get());
  state_.admin_relay.StreamEnded(*link_);
  link_->Stop();
  state_.agents.Remove(node, generation_);
  if (state_.cluster.Disconnect(node, generation_, state_.NowSeconds())) {
    Log(LogLevel::kWarning,
        "node {} disconnected: marked stale; its pods and data are kept until it is back", node);
  }
}

void AgentSession::OnMetrics(const v1::MetricsDelta& delta) {
  const std::string& node = hello_.node();
  if (absl::Status own = CheckDeltaOfNode(node, delta); !own.ok()) {
    Refused(own);
    return;
  }
  const int64_t now = state_.NowSeconds();
  state_.cluster.Reported(node, generation_, now);
  // Numbered deltas are filed once (one the agent sent again is skipped) and acknowledged
  // either way, so that the agent stops keeping them.
  const uint64_t sequence = delta.sequence();
  // A second before this replica's start is a peer's to give (backfill.h): acknowledged, so
  // that the agent lets it go, and not filed.
  const bool first =
      delta.unix_seconds() >= state_.first_agent_second &&
      (sequence == 0 || state_.cluster.FirstDelivery(node, hello_.instance(), sequence));
  const absl::Status added = first ? state_.store.Add(delta, now) : absl::OkStatus();
  if (sequence != 0) link_->Send(MetricsAck(sequence));
  if (!added.ok() && ErrorLogDue()) Log(LogLevel::kWarning, "node {}: {}", node, added.message());
}

void AgentSession::OnPods(const google::protobuf::RepeatedPtrField<v1::Pod>& pods) {
  if (absl::Status own = CheckPodsOfNode(hello_.node(), pods); !own.ok()) {
    Refused(own);
    return;
  }
  state_.cluster.SetPods(hello_.node(), generation_, PodsOf(pods));
  state_.tap_hub.PodsChanged();
  BroadcastPods();
}

void AgentSession::Refused(const absl::Status& status) {
  state_.cluster.Refused(hello_.node(), generation_);
  if (ErrorLogDue())
    Log(LogLevel::kWarning, "node {}: refused: {}", hello_.node(), status.message());
}

void AgentSession::BroadcastPods() {
  v1::AggregatorMessage message;
  for (PodEntry& entry : state_.cluster.Pods()) {
    v1::Pod& pod = *message.mutable_cluster_pods()->add_pods() = std::move(entry.pod);
    pod.mutable_identity()->set_node(entry.node);
  }
  state_.agents.SendToAll(message);
}

bool AgentSession::ErrorLogDue() {
  const auto now = std::chrono::steady_clock::now();
  if (now - last_error_log_ < kErrorLogInterval) return false;
  last_error_log_ = now;
  return true;
}

}  // namespace nodemesh::aggregator
