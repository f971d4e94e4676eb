// The agents connected now: each node's current stream (a node connecting again replaces its
// stream), and the streams open per node, which is what --max-nodes bounds. Thread-safe (one
// mutex): the agents' sessions register and leave on their handler threads, the Api's relay
// to a node looks its stream up on gRPC's pool, and shutdown cancels them all.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "nodemesh/v1/nodemesh.pb.h"

namespace nodemesh::aggregator {

class StreamLink;

class ConnectedAgents {
 public:
  explicit ConnectedAgents(size_t max_nodes) : max_nodes_(max_nodes) {}

  // Counts a stream of `node` in, unless max_nodes other nodes have streams open: a refusal,
  // counted in refused(). A stream admitted Leaves when it ends.
  bool Admit(const std::string& node);
  void Leave(const std::string& node);

  // Makes `link`, of the stream `generation` (Cluster::Connect), the current stream of
  // `node`; returns the one it replaces, if any.
  std::shared_ptr<StreamLink> Replace(const std::string& node, uint64_t generation,
                                      std::shared_ptr<StreamLink> link);
  // Forgets the current stream of `node` if it is still the one of `generation`.
  void Remove(const std::string& node, uint64_t generation);

  // The current stream of `node`, or null with the nodes that have one.
  std::shared_ptr<StreamLink> LinkOf(const std::string& node,
                                     std::vector<std::string>* nodes) const;
  // Queues `message` on every current stream.
  void SendToAll(const v1::AggregatorMessage& message) const;
  // Ends every current stream (shutting down).
  void CancelAll() const;

  size_t max_nodes() const { return max_nodes_; }
  // Streams of new nodes refused because max_nodes were connected.
  uint64_t refused() const { return refused_.load(std::memory_order_relaxed); }

 private:
  struct Current {
    uint64_t generation = 0;
    std::shared_ptr<StreamLink> link;
  };
  const size_t max_nodes_;
  mutable std::mutex mutex_;
  std::map<std::string, Current> streams_;
  // Streams open per node, the one being replaced included: what max_nodes counts.
  std::map<std::string, int> admitted_;
  std::atomic<uint64_t> refused_{0};
};

}  // namespace nodemesh::aggregator
