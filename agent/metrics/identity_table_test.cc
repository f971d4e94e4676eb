// The agent's identity table follows the cluster's pods as they are: pods come and go, their
// series age out of the shards and the registry, and the identities nothing refers to any
// more are forgotten, as the agent's control loop does every few seconds.
#include "agent/metrics/identity_table.h"

#include <catch2/catch.hpp>
#include <deque>
#include <string>

#include "agent/metrics/registry.h"
#include "agent/metrics/shard.h"

namespace nodemesh::metrics {
namespace {

Identity PodIdentity(int pod) {
  return Identity{"churn",      "pod-" + std::to_string(pod),
                  "ReplicaSet", "rs-" + std::to_string(pod),
                  "default",    "node-1"};
}

TEST_CASE("identity table: interning is stable, External is id 0 and never forgotten", "[unit]") {
  IdentityTable table;
  CHECK(table.Get(IdentityTable::kExternal) == ExternalIdentity());
  const IdentityTable::Id a = table.Intern(PodIdentity(1));
  CHECK(table.Intern(PodIdentity(1)) == a);
  CHECK(table.Get(a) == PodIdentity(1));
  CHECK(table.Retain({}) == std::vector<IdentityTable::Id>{a});
  CHECK(table.size() == 1);
  CHECK(table.Get(a) == ExternalIdentity());  // a forgotten id names no pod any more
  CHECK(table.Intern(PodIdentity(2)) == a);   // and is given out again
}

TEST_CASE("identity table: 100,000 pods churned through leave it the size of the cluster",
          "[unit]") {
  constexpr int kPods = 100'000;
  constexpr int kLivePods = 200;       // pods that exist at any moment
  constexpr int kPodsPerSecond = 100;  // new pods (and calls) each second
  constexpr int kForgetEverySeconds = 10;
  constexpr int64_t kRetainSeconds = 60;
  constexpr int kShardEvictAfter = 60;  // collections

  IdentityTable identities;
  RouteTable routes(100);
  Registry registry(identities, routes);
  Shard shard;
  std::deque<IdentityTable::Id> live;
  size_t peak = 0;
  int64_t second = 1'000;
  const auto forget = [&] {
    // What the agent holds besides series: its pods (and the address directory of them).
    InUse in_use{.identities = {live.begin(), live.end()}, .routes = {}};
    routes.StartForgetting();
    shard.AddReferencedIdentities(&in_use.identities);
    ForgetUnused(identities, routes, registry, std::move(in_use), second - kRetainSeconds);
  };
  for (int pod = 0; pod < kPods; ++pod) {
    const IdentityTable::Id id = identities.Intern(PodIdentity(pod));
    // Each new pod calls the one before it over a connection, which ends.
    const IdentityTable::Id callee = live.empty() ? IdentityTable::kExternal : live.back();
    const TrafficKey traffic{id, callee, Direction::kOutbound};
    TcpSeries* connection = shard.OpenConnection(traffic);
    shard.CountRequest({traffic, 0});
    Shard::CloseConnection(connection, 1'000, false);
    live.push_back(id);
    if (live.size() > kLivePods) live.pop_front();
    if ((pod + 1) % kPodsPerSecond == 0) {
      Delta delta;
      shard.Collect(&delta, kShardEvictAfter);
      registry.Add(delta, second++);
      if (second % kForgetEverySeconds == 0) forget();
    }
    peak = std::max(peak, identities.size());
  }
  // Bounded by what the shard and the registry keep, not by the pods there ever were: a
  // pod's series live at most kShardEvictAfter collections in the shard and kRetainSeconds
  // in the registry, plus the time until the next forgetting.
  const size_t bound = kPodsPerSecond * (std::max<int64_t>(kShardEvictAfter, kRetainSeconds) +
                                         kForgetEverySeconds + 2) +
                       kLivePods + 1;
  CHECK(peak <= bound);
  CHECK(peak < kPods / 10);

  // Once the traffic is older than every retention, only the live pods remain, still named.
  for (int i = 0; i <= kShardEvictAfter + 1; ++i) {
    Delta delta;
    shard.Collect(&delta, kShardEvictAfter);
    registry.Add(delta, second++);
  }
  second += kRetainSeconds + 1;
  forget();
  CHECK(identities.size() == live.size() + 1);  // and External
  CHECK(identities.Get(live.back()) == PodIdentity(kPods - 1));
  CHECK(identities.Get(live.front()) == PodIdentity(kPods - kLivePods));
}

}  // namespace
}  // namespace nodemesh::metrics
