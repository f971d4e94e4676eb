#include "aggregator/connected_agents.h"

#include <utility>

#include "aggregator/stream_link.h"

namespace nodemesh::aggregator {

bool ConnectedAgents::Admit(const std::string& node) {
  std::lock_guard lock(mutex_);
  if (!admitted_.contains(node) && admitted_.size() >= max_nodes_) {
    refused_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  ++admitted_[node];
  return true;
}

void ConnectedAgents::Leave(const std::string& node) {
  std::lock_guard lock(mutex_);
  if (const auto found = admitted_.find(node); found != admitted_.end() && --found->second == 0) {
    admitted_.erase(found);
  }
}

std::shared_ptr<StreamLink> ConnectedAgents::Replace(const std::string& node, uint64_t generation,
                                                     std::shared_ptr<StreamLink> link) {
  std::lock_guard lock(mutex_);
  Current& current = streams_[node];
  current.generation = generation;
  return std::exchange(current.link, std::move(link));
}

void ConnectedAgents::Remove(const std::string& node, uint64_t generation) {
  std::lock_guard lock(mutex_);
  const auto found = streams_.find(node);
  if (found != streams_.end() && found->second.generation == generation) streams_.erase(found);
}

std::shared_ptr<StreamLink> ConnectedAgents::LinkOf(const std::string& node,
                                                    std::vector<std::string>* nodes) const {
  std::lock_guard lock(mutex_);
  if (const auto found = streams_.find(node); found != streams_.end()) return found->second.link;
  for (const auto& [name, current] : streams_) nodes->push_back(name);
  return nullptr;
}

void ConnectedAgents::SendToAll(const v1::AggregatorMessage& message) const {
  std::lock_guard lock(mutex_);
  for (const auto& [node, current] : streams_) current.link->Send(message);
}

void ConnectedAgents::CancelAll() const {
  std::lock_guard lock(mutex_);
  for (const auto& [node, current] : streams_) current.link->Cancel();
}

}  // namespace nodemesh::aggregator
