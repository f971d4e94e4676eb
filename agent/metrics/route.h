// Routes: what a request asked for, with the variable parts taken out, so that per-route
// metrics need no hand-written profile. gRPC: the method, exactly
// ("/emojivoto.v1.VotingService/VoteDoughnut"). HTTP: the method and the path with numeric
// and UUID-like segments as placeholders ("GET /api/users/{id}"), without the query.
// Each destination workload keeps at most a fixed number of routes at once; the rest share
// one overflow route, counted, so one noisy client cannot blow up the series count.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "agent/metrics/identity_table.h"
#include "parsers/parser.h"

namespace nodemesh::metrics {

inline constexpr std::string_view kOverflowRoute = "[overflow]";

// Writes the route of `request` into `out` (reusing its storage).
void TemplateRoute(const parsers::RequestStart& request, std::string* out);

// The routes of all workloads, shared by the workers. Workers keep their own cache in
// front of it (RouteCache), so the lock is taken only for a route a worker has not seen.
//
// Routes follow the traffic as identities follow the pods: the agent forgets the routes that
// nothing refers to any more (no series of a shard or of the registry, no stream in flight,
// no worker's cache), and their ids are given out again. Forgetting is two steps around the
// gathering of those references, StartForgetting() before and Retain() after, so that a
// route handed out meanwhile (by Intern, to a worker that already said what it holds) is
// kept whatever the gathering missed: an id is never reused while someone may still read it
// as the old route.
class RouteTable {
 public:
  using Id = uint32_t;
  struct Interned {
    Id id = 0;
    bool overflow = false;  // the workload's overflow route: `route` did not fit its cap
  };
  explicit RouteTable(size_t max_routes_per_workload)
      : max_per_workload_(max_routes_per_workload) {}

  // The id of `route` for destination workload `workload`, or of that workload's overflow
  // route while it holds max_routes_per_workload routes: the cap bounds the routes a
  // workload has at once, and a forgotten route makes room for a new one.
  Interned Intern(const std::string& workload, const std::string& route);
  // The route `id` names; kOverflowRoute for an id not (or no longer) given out.
  std::string Get(Id id) const;
  uint64_t overflowed() const;
  size_t size() const;  // routes (overflow routes included) given out and not forgotten

  // The first step of forgetting: routes handed out from now on are kept by the next Retain.
  void StartForgetting();
  // Forgets every route neither in `in_use` nor handed out since StartForgetting; their ids
  // may be given out again from now on. Returns how many were forgotten.
  size_t Retain(const absl::flat_hash_set<Id>& in_use);

 private:
  struct Entry {
    std::string workload;
    std::string route;   // kOverflowRoute for a workload's overflow route
    uint64_t epoch = 0;  // the forgetting epoch it was last handed out in
    bool live = false;
  };
  struct Workload {
    absl::flat_hash_map<std::string, Id> routes;
    std::optional<Id> overflow;
  };
  Id Allocate(const std::string& workload, const std::string& route);

  mutable std::mutex mutex_;
  const size_t max_per_workload_;
  absl::flat_hash_map<std::string, Workload> workloads_;
  std::vector<Entry> entries_;  // by id
  std::vector<Id> free_;        // ids forgotten, to give out again
  uint64_t epoch_ = 0;
  uint64_t overflowed_ = 0;
};

// A worker's lock-free view of the RouteTable, and the count of its streams in flight on each
// route (see StreamRoutes). Only its worker's thread touches it.
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

  void StreamStarted(RouteTable::Id route) { ++in_flight_[route]; }
  void StreamEnded(RouteTable::Id route) { --in_flight_[route]; }

  // The worker's part of a forgetting pass (between RouteTable::StartForgetting and Retain):
  // adds the routes of its streams in flight to `in_use`, which holds those of its series
  // already, and drops the cached routes not in it, so that whatever it can read from its
  // cache from now on is in `in_use`. Overflow answers are dropped too: a route sent to
  // overflow may fit once the workload's routes were forgotten.
  void KeepOnly(absl::flat_hash_set<RouteTable::Id>* in_use);

 private:
  static constexpr size_t kMaxCachedPerWorkload = 4096;
  RouteTable& table_;
  const IdentityTable& identities_;
  absl::flat_hash_map<uint32_t, absl::flat_hash_map<std::string, RouteTable::Interned>> cache_;
  absl::flat_hash_map<RouteTable::Id, uint32_t> in_flight_;
};

// The route of each stream in flight on one connection, by stream id. A stream holds its
// route in the worker's RouteCache from Start until End (or until the connection goes), so
// that the agent does not forget a route a long stream will still count under.
class StreamRoutes {
 public:
  explicit StreamRoutes(RouteCache& cache) : cache_(cache) {}
  ~StreamRoutes() {
    for (const auto& [stream, route] : routes_) cache_.StreamEnded(route);
  }
  StreamRoutes(const StreamRoutes&) = delete;
  StreamRoutes& operator=(const StreamRoutes&) = delete;

  void Start(uint32_t stream, RouteTable::Id route);
  // The route of `stream`, which ends; nullopt for a stream that was not started.
  std::optional<RouteTable::Id> End(uint32_t stream);
  // With no stream in flight, gives back the map's storage (its next stream takes it again).
  void ReleaseIdleMemory() {
    if (routes_.empty()) routes_ = {};
  }

 private:
  RouteCache& cache_;
  absl::flat_hash_map<uint32_t, RouteTable::Id> routes_;
};

}  // namespace nodemesh::metrics
