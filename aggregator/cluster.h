// The nodes whose agents report to the aggregator, and the pods they run. A node is known
// from its first Hello on; when its stream goes, or it stops sending deltas, it is stale, and
// stays listed (with its pods) so that results can say whose data may be missing. Only a node
// gone longer than the retention, whose data has aged out too, is forgotten.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "nodemesh/v1/nodemesh.pb.h"

namespace nodemesh::aggregator {

// A pod as some agent reported it, with the node of that agent.
struct PodEntry {
  v1::Pod pod;
  std::string node;
};

class Cluster {
 public:
  // A node is stale once this long passes without a delta (or since it connected).
  explicit Cluster(int stale_after_seconds = 5) : stale_after_seconds_(stale_after_seconds) {}

  // A Hello: `node`'s stream is now a new one, replacing any previous. Returns the stream's
  // generation, which the other calls pass so that a replaced stream's late calls are ignored.
  uint64_t Connect(const std::string& node, const std::string& version, std::vector<v1::Pod> pods,
                   int64_t now_seconds);
  // The stream of `generation` ended. False when a newer stream had replaced it already.
  bool Disconnect(const std::string& node, uint64_t generation, int64_t now_seconds);
  // The node's whole pod list, replacing the previous one.
  void SetPods(const std::string& node, uint64_t generation, std::vector<v1::Pod> pods);
  // A delta arrived from the node.
  void Reported(const std::string& node, uint64_t generation, int64_t now_seconds);
  // A report of the node's agent was refused (reports.h).
  void Refused(const std::string& node, uint64_t generation);
  // Delta `sequence` of the node's agent `instance` (MetricsDelta.sequence): true the first
  // time it arrives, false (and counted) when it was filed before, whichever stream brought it.
  // An agent sends each delta in order and again, in order, on its next stream until it is
  // acknowledged, so "filed before" is "at most the highest filed". A new instance (the
  // agent restarted) counts from 1 again.
  bool FirstDelivery(const std::string& node, const std::string& instance, uint64_t sequence);

  // Every known pod once: the union of all nodes' lists (a pod reported by two nodes, as
  // when a stale node's list is out of date, counts for the one that reported it last).
  std::vector<PodEntry> Pods() const;
  // Every node, sorted by name.
  std::vector<v1::NodeStatus> Nodes(int64_t now_seconds) const;
  // The nodes whose data may be missing: disconnected, or no delta for too long.
  std::vector<v1::NodeStatus> StaleNodes(int64_t now_seconds) const;
  // Forgets nodes disconnected for more than `after_seconds`; returns their names.
  std::vector<std::string> ForgetDisconnected(int64_t now_seconds, int64_t after_seconds);

 private:
  struct Node {
    uint64_t generation = 0;
    bool connected = false;
    std::string version;
    int64_t connected_at = 0;
    int64_t disconnected_at = 0;
    int64_t last_report = 0;       // 0: no delta yet
    uint64_t pods_updated = 0;     // order of the last pod list among all nodes'
    uint64_t refused_reports = 0;  // since the stream of `generation` connected
    std::string instance;          // of the agent whose deltas were filed last
    uint64_t filed_sequence = 0;   // the highest of its deltas filed
    uint64_t duplicate_deltas = 0;
    std::vector<v1::Pod> pods;
  };
  v1::NodeStatus StatusOf(const std::string& name, const Node& node, int64_t now_seconds) const;

  const int stale_after_seconds_;
  mutable std::mutex mutex_;
  std::map<std::string, Node> nodes_;
  uint64_t next_generation_ = 1;
  uint64_t pod_updates_ = 0;
};

}  // namespace nodemesh::aggregator
