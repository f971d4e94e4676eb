#include "aggregator/cluster.h"

#include <algorithm>
#include <tuple>

#include "absl/container/flat_hash_map.h"

namespace nodemesh::aggregator {

uint64_t Cluster::Connect(const std::string& name, const std::string& version,
                          std::vector<v1::Pod> pods, int64_t now_seconds) {
  std::lock_guard lock(mutex_);
  Node& node = nodes_[name];
  node.generation = next_generation_++;
  node.connected = true;
  node.version = version;
  node.connected_at = now_seconds;
  node.pods = std::move(pods);
  node.pods_updated = ++pod_updates_;
  node.refused_reports = 0;
  return node.generation;
}

bool Cluster::Disconnect(const std::string& name, uint64_t generation, int64_t now_seconds) {
  std::lock_guard lock(mutex_);
  const auto found = nodes_.find(name);
  if (found == nodes_.end() || found->second.generation != generation) return false;
  found->second.connected = false;
  found->second.disconnected_at = now_seconds;
  return true;
}

void Cluster::SetPods(const std::string& name, uint64_t generation, std::vector<v1::Pod> pods) {
  std::lock_guard lock(mutex_);
  const auto found = nodes_.find(name);
  if (found == nodes_.end() || found->second.generation != generation) return;
  found->second.pods = std::move(pods);
  found->second.pods_updated = ++pod_updates_;
}

void Cluster::Reported(const std::string& name, uint64_t generation, int64_t now_seconds) {
  std::lock_guard lock(mutex_);
  const auto found = nodes_.find(name);
  if (found == nodes_.end() || found->second.generation != generation) return;
  found->second.last_report = std::max(found->second.last_report, now_seconds);
}

void Cluster::Refused(const std::string& name, uint64_t generation) {
  std::lock_guard lock(mutex_);
  const auto found = nodes_.find(name);
  if (found == nodes_.end() || found->second.generation != generation) return;
  ++found->second.refused_reports;
}

bool Cluster::FirstDelivery(const std::string& name, const std::string& instance,
                            uint64_t sequence) {
  std::lock_guard lock(mutex_);
  Node& node = nodes_[name];
  if (node.instance != instance) {
    node.instance = instance;
    node.filed_sequence = 0;
  }
  if (sequence <= node.filed_sequence) {
    ++node.duplicate_deltas;
    return false;
  }
  node.filed_sequence = sequence;
  return true;
}

std::vector<PodEntry> Cluster::Pods() const {
  std::lock_guard lock(mutex_);
  struct Chosen {
    const v1::Pod* pod;
    const std::string* node;
    uint64_t updated;
  };
  absl::flat_hash_map<std::string, Chosen> chosen;
  for (const auto& [name, node] : nodes_) {
    for (const v1::Pod& pod : node.pods) {
      const std::string key = pod.identity().namespace_() + "/" + pod.identity().pod();
      auto [it, inserted] = chosen.try_emplace(key, Chosen{&pod, &name, node.pods_updated});
      if (!inserted && it->second.updated < node.pods_updated) {
        it->second = Chosen{&pod, &name, node.pods_updated};
      }
    }
  }
  std::vector<PodEntry> pods;
  pods.reserve(chosen.size());
  for (const auto& [key, entry] : chosen) pods.push_back(PodEntry{*entry.pod, *entry.node});
  std::sort(pods.begin(), pods.end(), [](const PodEntry& a, const PodEntry& b) {
    return std::tie(a.pod.identity().namespace_(), a.pod.identity().pod()) <
           std::tie(b.pod.identity().namespace_(), b.pod.identity().pod());
  });
  return pods;
}

v1::NodeStatus Cluster::StatusOf(const std::string& name, const Node& node,
                                 int64_t now_seconds) const {
  v1::NodeStatus status;
  status.set_node(name);
  status.set_connected(node.connected);
  status.set_last_report_unix_seconds(node.last_report);
  const int64_t heard = std::max(node.last_report, node.connected_at);
  status.set_stale(!node.connected || now_seconds - heard > stale_after_seconds_);
  status.set_refused_reports(node.refused_reports);
  status.set_duplicate_deltas(node.duplicate_deltas);
  return status;
}

std::vector<v1::NodeStatus> Cluster::Nodes(int64_t now_seconds) const {
  std::lock_guard lock(mutex_);
  std::vector<v1::NodeStatus> statuses;
  for (const auto& [name, node] : nodes_) statuses.push_back(StatusOf(name, node, now_seconds));
  return statuses;
}

std::vector<v1::NodeStatus> Cluster::StaleNodes(int64_t now_seconds) const {
  std::vector<v1::NodeStatus> stale = Nodes(now_seconds);
  std::erase_if(stale, [](const v1::NodeStatus& status) { return !status.stale(); });
  return stale;
}

std::vector<std::string> Cluster::ForgetDisconnected(int64_t now_seconds, int64_t after_seconds) {
  std::lock_guard lock(mutex_);
  std::vector<std::string> forgotten;
  for (auto it = nodes_.begin(); it != nodes_.end();) {
    if (!it->second.connected && now_seconds - it->second.disconnected_at > after_seconds) {
      forgotten.push_back(it->first);
      it = nodes_.erase(it);
    } else {
      ++it;
    }
  }
  return forgotten;
}

}  // namespace nodemesh::aggregator
