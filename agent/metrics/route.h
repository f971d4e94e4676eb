// Routes: what a request asked for, with the variable parts taken out, so that per-route
// metrics need no hand-written profile. gRPC: the method, exactly
// ("/emojivoto.v1.VotingService/VoteDoughnut"). HTTP: the method and the path with numeric
// and UUID-like segments as placeholders ("GET /api/users/{id}"), without the query.
// Each destination workload keeps at most a fixed number of routes; the rest share one
// overflow route, counted, so one noisy client cannot blow up the series count.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "agent/metrics/identity_table.h"
#include "parsers/parser.h"

namespace nodemesh::metrics {

inline constexpr std::string_view kOverflowRoute = "[overflow]";

// Writes the route of `request` into `out` (reusing its storage).
void TemplateRoute(const parsers::RequestStart& request, std::string* out);

// The routes of all workloads, shared by the workers. Workers keep their own cache in
// front of it (RouteCache), so the lock is taken only for a route a worker has not seen.
class RouteTable {
 public:
  using Id = uint32_t;
  explicit RouteTable(size_t max_routes_per_workload)
      : max_per_workload_(max_routes_per_workload) {}

  // The id of `route` for destination workload `workload`, or of that workload's overflow
  // route once it has max_routes_per_workload routes.
  Id Intern(const std::string& workload, const std::string& route);
  std::string Get(Id id) const;
  uint64_t overflowed() const;

 private:
  struct Workload {
    absl::flat_hash_map<std::string, Id> routes;
    Id overflow = 0;
    bool has_overflow = false;
  };
  mutable std::mutex mutex_;
  const size_t max_per_workload_;
  absl::flat_hash_map<std::string, Workload> workloads_;
  std::vector<std::string> names_;
  uint64_t overflowed_ = 0;
};

// A worker's lock-free view of the RouteTable.
class RouteCache {
 public:
  RouteCache(RouteTable& table, const IdentityTable& identities)
      : table_(table), identities_(identities) {}
  // The route id of `route` (as from TemplateRoute) for requests to `destination`.
  RouteTable::Id Lookup(IdentityTable::Id destination, const std::string& route);
  // Drops what is cached for identities the agent forgot: their ids will name others.
  void Forget(const std::vector<IdentityTable::Id>& destinations) {
    for (IdentityTable::Id id : destinations) cache_.erase(id);
  }

 private:
  static constexpr size_t kMaxCachedPerWorkload = 4096;
  RouteTable& table_;
  const IdentityTable& identities_;
  absl::flat_hash_map<uint32_t, absl::flat_hash_map<std::string, RouteTable::Id>> cache_;
};

}  // namespace nodemesh::metrics
