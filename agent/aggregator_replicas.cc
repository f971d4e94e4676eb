#include "agent/aggregator_replicas.h"

#include <fmt/format.h>

#include <algorithm>
#include <random>
#include <utility>

#include "absl/strings/str_join.h"
#include "common/base/log.h"

namespace nodemesh::agent {
namespace {

// How often the replicas are resolved again: a replica that appears gets streams within it.
constexpr auto kResolveInterval = std::chrono::seconds(10);
// Deltas a replica that appears is sent first: more than it takes the agents to find it (the
// interval above, and the DNS records' time to live), so that no second after its start is
// missing from it.
constexpr size_t kRecentDeltas = 60;

std::string RandomInstance() {
  std::random_device random;
  return fmt::format("{:08x}{:08x}", random(), random());
}

}  // namespace

absl::StatusOr<std::unique_ptr<AggregatorReplicas>> AggregatorReplicas::Make(
    std::string addresses, TlsFiles tls, std::string node, TapSubscriptions& tap,
    AggregatorClient::Hooks hooks) {
  if (absl::Status checked = CheckReplicaAddresses(addresses, "--aggregator", tls, "--aggregator-");
      !checked.ok()) {
    return checked;
  }
  return std::unique_ptr<AggregatorReplicas>(new AggregatorReplicas(
      std::move(addresses), std::move(tls), std::move(node), tap, std::move(hooks)));
}

AggregatorReplicas::AggregatorReplicas(std::string addresses, TlsFiles tls, std::string node,
                                       TapSubscriptions& tap, AggregatorClient::Hooks hooks)
    : addresses_(std::move(addresses)),
      tls_(std::move(tls)),
      node_(std::move(node)),
      instance_(RandomInstance()),
      tap_(tap),
      hooks_(std::move(hooks)) {}

AggregatorReplicas::~AggregatorReplicas() { Stop(); }

void AggregatorReplicas::Start() {
  std::lock_guard lock(mutex_);
  if (started_) return;
  started_ = true;
  thread_ = std::thread([this] { Run(); });
}

void AggregatorReplicas::Stop() {
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  Follow({});
}

void AggregatorReplicas::Run() {
  for (;;) {
    Follow(ResolveReplicas(addresses_));
    std::unique_lock lock(mutex_);
    if (wake_.wait_for(lock, kResolveInterval, [&] { return stopping_; })) return;
  }
}

void AggregatorReplicas::Follow(const std::vector<ReplicaAddress>& resolved) {
  std::vector<std::unique_ptr<AggregatorClient>> gone;
  std::vector<std::string> added;
  {
    std::lock_guard lock(mutex_);
    // A replica no longer resolved is let go: its pod went, and its deltas with it.
    for (auto it = clients_.begin(); it != clients_.end();) {
      if (std::find(resolved.begin(), resolved.end(), it->first) != resolved.end()) {
        ++it;
        continue;
      }
      gone.push_back(std::move(it->second));
      it = clients_.erase(it);
    }
    for (const ReplicaAddress& replica : resolved) {
      const bool known = std::any_of(clients_.begin(), clients_.end(),
                                     [&](const auto& client) { return client.first == replica; });
      if (known || stopping_) continue;
      std::unique_ptr<AggregatorClient> client = ClientOf(replica);
      if (!client) continue;
      for (const auto& delta : recent_) client->SendMetrics(delta);
      client->Start();
      added.push_back(replica.address);
      clients_.emplace_back(replica, std::move(client));
    }
  }
  std::vector<std::string> removed;
  for (const std::unique_ptr<AggregatorClient>& client : gone) {
    removed.push_back(client->address());
    client->Stop();  // outside mutex_: its session may be draining tap events
    std::lock_guard lock(tap_mutex_);
    tap_boxes_.erase(client->address());
  }
  if (!added.empty() || !removed.empty()) {
    Log(LogLevel::kInfo, "aggregator replicas of {}:{}{}", addresses_,
        added.empty() ? "" : fmt::format(" streaming to {}", absl::StrJoin(added, ", ")),
        removed.empty() ? "" : fmt::format(" gone: {}", absl::StrJoin(removed, ", ")));
  }
}

std::unique_ptr<AggregatorClient> AggregatorReplicas::ClientOf(const ReplicaAddress& replica) {
  absl::StatusOr<AggregatorDialer> dialer = DialerFor(replica, tls_, "--aggregator-");
  if (!dialer.ok()) {
    Log(LogLevel::kWarning, "not streaming to the aggregator replica at {}: {}", replica.address,
        dialer.status().message());
    return nullptr;
  }
  AggregatorClient::Hooks hooks = hooks_;
  hooks.drain_tap = [this, address = replica.address](std::vector<v1::TapEvent>* out) {
    return DrainTap(address, out);
  };
  return std::make_unique<AggregatorClient>(*std::move(dialer), node_, instance_, tap_,
                                            std::move(hooks));
}

uint64_t AggregatorReplicas::DrainTap(const std::string& client, std::vector<v1::TapEvent>* out) {
  std::lock_guard tap_lock(tap_mutex_);
  std::vector<v1::TapEvent> drained;
  const uint64_t dropped = hooks_.drain_tap(&drained);
  {
    std::lock_guard lock(mutex_);
    if (dropped != 0) {
      for (const auto& [replica, owner] : clients_) tap_boxes_[replica.address].dropped += dropped;
    }
    for (v1::TapEvent& event : drained) {
      // An event of a subscription no stream holds any more is nobody's.
      const auto owner = std::find_if(clients_.begin(), clients_.end(), [&](const auto& entry) {
        return entry.second->subscribed(event.subscription());
      });
      if (owner != clients_.end()) {
        tap_boxes_[owner->first.address].events.push_back(std::move(event));
      }
    }
  }
  const auto box = tap_boxes_.find(client);
  if (box == tap_boxes_.end()) return 0;
  for (v1::TapEvent& event : box->second.events) out->push_back(std::move(event));
  box->second.events.clear();
  return std::exchange(box->second.dropped, 0);
}

void AggregatorReplicas::SendMetrics(v1::MetricsDelta delta) {
  std::lock_guard lock(mutex_);
  delta.set_sequence(next_sequence_++);
  auto shared = std::make_shared<const v1::MetricsDelta>(std::move(delta));
  recent_.push_back(shared);
  if (recent_.size() > kRecentDeltas) recent_.pop_front();
  for (const auto& [replica, client] : clients_) client->SendMetrics(shared);
}

void AggregatorReplicas::PodsChanged() {
  std::lock_guard lock(mutex_);
  for (const auto& [replica, client] : clients_) client->PodsChanged();
}

AggregatorReplicas::Status AggregatorReplicas::status() const {
  std::lock_guard lock(mutex_);
  Status status;
  status.replicas = clients_.size();
  for (const auto& [replica, client] : clients_) {
    status.connected += client->connected() ? 1 : 0;
    status.unacknowledged_deltas =
        std::max(status.unacknowledged_deltas, client->unacknowledged_deltas());
    status.dropped_deltas += client->dropped_deltas();
  }
  return status;
}

}  // namespace nodemesh::agent
