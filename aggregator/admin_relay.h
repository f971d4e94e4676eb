// Admin requests relayed to node agents over the streams they hold open (Api.NodeAdmin, for
// meshctl shell --node): a request goes down the node's stream with an id, and its caller
// waits, for a bounded time, for the answer with that id coming up. No port of the node is
// dialled, and the relay carries GETs only (the messages have no method).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "aggregator/tap_hub.h"
#include "nodemesh/v1/nodemesh.pb.h"

namespace nodemesh::aggregator {

struct AdminRelayOptions {
  // Under meshctl's own deadline (10 s), so that its caller hears why.
  std::chrono::milliseconds timeout{8000};
  size_t max_pending = 64;  // calls waiting at once, over every node
};

class AdminRelay {
 public:
  explicit AdminRelay(AdminRelayOptions options = {}) : options_(options) {}

  // Sends a GET of `target` down `link` (node `node`'s stream) and waits for its answer.
  // DEADLINE_EXCEEDED when the agent does not answer within the timeout; UNAVAILABLE when
  // the stream ends first; CANCELLED when `cancelled` says the caller left.
  absl::StatusOr<v1::AdminResponse> Call(AgentLink& link, const std::string& node,
                                         const std::string& target,
                                         const std::function<bool()>& cancelled);
  // An answer from an agent's stream; one nobody waits for any more is dropped.
  void Deliver(const AgentLink& link, v1::AdminResponse response);
  // The stream of `link` ended: the calls waiting on it fail at once.
  void StreamEnded(const AgentLink& link);

 private:
  struct Pending {
    const AgentLink* link;
    std::optional<v1::AdminResponse> answer;
    bool stream_ended = false;
  };
  const AdminRelayOptions options_;
  std::mutex mutex_;
  std::condition_variable answered_;
  std::map<uint64_t, Pending> pending_;
  uint64_t next_id_ = 1;
};

}  // namespace nodemesh::aggregator
