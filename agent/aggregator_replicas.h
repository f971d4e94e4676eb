// The agent's streams to the aggregator's replicas: one AggregatorClient per replica that
// --aggregator names (a list, or a name resolving to one address per replica, resolved again
// every 10 s), so that every replica holds every node and one going away costs the others
// nothing. Deltas are numbered once for the process and shared: each replica's client keeps
// them until that replica acknowledges them, and a replica that appears is first sent the
// last minute's, which it files from the second it started in (older ones a peer replica
// gives it). Tap events go to the replica whose subscription they match.
// Threads: a resolver thread of its own; each client its session threads; the public calls
// from any thread. Lock order: tap_mutex_, then mutex_, then a client's own.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "agent/aggregator_client.h"
#include "common/tls/replicas.h"

namespace nodemesh::agent {

class AggregatorReplicas {
 public:
  // `addresses`: --aggregator (checked: INVALID_ARGUMENT when it is no list of HOST:PORT, or
  // a replica given as an address may not be dialled with `tls`). `hooks.drain_tap` drains
  // the workers' outboxes, whoever's subscriptions the events are of.
  static absl::StatusOr<std::unique_ptr<AggregatorReplicas>> Make(std::string addresses,
                                                                  TlsFiles tls, std::string node,
                                                                  TapSubscriptions& tap,
                                                                  AggregatorClient::Hooks hooks);
  ~AggregatorReplicas();

  void Start();
  void Stop();

  // Numbers the delta (1, 2, 3... within this process) and hands it to every replica's client.
  void SendMetrics(v1::MetricsDelta delta);
  void PodsChanged();

  struct Status {
    size_t replicas = 0;
    size_t connected = 0;
    // The most any replica's client keeps unacknowledged.
    size_t unacknowledged_deltas = 0;
    // Given up, over every replica's client (each a second missing at that replica).
    uint64_t dropped_deltas = 0;
  };
  Status status() const;

 private:
  AggregatorReplicas(std::string addresses, TlsFiles tls, std::string node, TapSubscriptions& tap,
                     AggregatorClient::Hooks hooks);

  void Run();
  // Streams to the replicas resolved now: new ones started (and sent the last minute's
  // deltas), gone ones stopped.
  void Follow(const std::vector<ReplicaAddress>& resolved);
  std::unique_ptr<AggregatorClient> ClientOf(const ReplicaAddress& replica);
  // `client`'s tap events: the workers' outboxes drained and their events sorted by the
  // client whose subscription they match; drops are told to every client.
  uint64_t DrainTap(const std::string& client, std::vector<v1::TapEvent>* out);

  const std::string addresses_;
  const TlsFiles tls_;
  const std::string node_;
  const std::string instance_;
  TapSubscriptions& tap_;
  const AggregatorClient::Hooks hooks_;

  struct TapBox {
    std::vector<v1::TapEvent> events;
    uint64_t dropped = 0;
  };
  std::mutex tap_mutex_;
  absl::flat_hash_map<std::string, TapBox> tap_boxes_;  // by the client's address

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool started_ = false;
  bool stopping_ = false;
  uint64_t next_sequence_ = 1;
  // The last minute's deltas, for a replica that appears.
  std::deque<std::shared_ptr<const v1::MetricsDelta>> recent_;
  std::vector<std::pair<ReplicaAddress, std::unique_ptr<AggregatorClient>>> clients_;
  std::thread thread_;
};

}  // namespace nodemesh::agent
