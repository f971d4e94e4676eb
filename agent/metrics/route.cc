#include "agent/metrics/route.h"

#include <algorithm>

namespace nodemesh::metrics {
namespace {

bool IsHex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

bool AllDigits(std::string_view segment) {
  return !segment.empty() &&
         std::all_of(segment.begin(), segment.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// 8-4-4-4-12 hex digits, or 32 hex digits without dashes.
bool LooksLikeUuid(std::string_view segment) {
  if (segment.size() == 32) return std::all_of(segment.begin(), segment.end(), IsHex);
  if (segment.size() != 36) return false;
  for (size_t i = 0; i < segment.size(); ++i) {
    const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? segment[i] != '-' : !IsHex(segment[i])) return false;
  }
  return true;
}

}  // namespace

void TemplateRoute(const parsers::RequestStart& request, std::string* out) {
  out->clear();
  if (request.grpc) {
    out->append(request.path);
    return;
  }
  out->append(request.method);
  if (request.method == "CONNECT") return;  // the target is an authority, not a route
  out->push_back(' ');
  std::string_view path = request.path;
  path = path.substr(0, path.find_first_of("?#"));
  // An absolute-form target (a proxy request) carries scheme and authority before the path.
  if (const size_t scheme = path.find("://"); scheme != std::string_view::npos) {
    const size_t slash = path.find('/', scheme + 3);
    path = slash == std::string_view::npos ? std::string_view("/") : path.substr(slash);
  }
  if (path.empty() || path[0] != '/') {
    out->append(path.empty() ? std::string_view("/") : path);  // "*" of OPTIONS, and oddities
    return;
  }
  while (!path.empty()) {
    path.remove_prefix(1);  // the '/'
    const size_t end = std::min(path.find('/'), path.size());
    const std::string_view segment = path.substr(0, end);
    out->push_back('/');
    if (AllDigits(segment)) {
      out->append("{id}");
    } else if (LooksLikeUuid(segment)) {
      out->append("{uuid}");
    } else {
      out->append(segment);
    }
    path.remove_prefix(end);
  }
}

RouteTable::Interned RouteTable::Intern(const std::string& workload, const std::string& route) {
  std::lock_guard lock(mutex_);
  Workload& entry = workloads_[workload];
  Interned interned;
  if (const auto it = entry.routes.find(route); it != entry.routes.end()) {
    interned.id = it->second;
  } else if (entry.routes.size() >= max_per_workload_) {
    ++overflowed_;
    if (!entry.overflow) entry.overflow = Allocate(workload, std::string(kOverflowRoute));
    interned = {*entry.overflow, true};
  } else {
    interned.id = Allocate(workload, route);
    entry.routes.emplace(route, interned.id);
  }
  entries_[interned.id].epoch = epoch_;
  return interned;
}

RouteTable::Id RouteTable::Allocate(const std::string& workload, const std::string& route) {
  Id id;
  if (free_.empty()) {
    id = static_cast<Id>(entries_.size());
    entries_.emplace_back();
  } else {
    id = free_.back();
    free_.pop_back();
  }
  entries_[id] = Entry{workload, route, epoch_, true};
  return id;
}

std::string RouteTable::Get(Id id) const {
  std::lock_guard lock(mutex_);
  return id < entries_.size() && entries_[id].live ? entries_[id].route
                                                   : std::string(kOverflowRoute);
}

uint64_t RouteTable::overflowed() const {
  std::lock_guard lock(mutex_);
  return overflowed_;
}

size_t RouteTable::size() const {
  std::lock_guard lock(mutex_);
  return entries_.size() - free_.size();
}

void RouteTable::StartForgetting() {
  std::lock_guard lock(mutex_);
  ++epoch_;
}

size_t RouteTable::Retain(const absl::flat_hash_set<Id>& in_use) {
  std::lock_guard lock(mutex_);
  size_t forgotten = 0;
  for (Id id = 0; id < entries_.size(); ++id) {
    Entry& entry = entries_[id];
    if (!entry.live || entry.epoch == epoch_ || in_use.contains(id)) continue;
    const auto workload = workloads_.find(entry.workload);
    if (workload->second.overflow == id) {
      workload->second.overflow.reset();
    } else {
      workload->second.routes.erase(entry.route);
    }
    if (workload->second.routes.empty() && !workload->second.overflow) workloads_.erase(workload);
    entry = Entry{};
    free_.push_back(id);
    ++forgotten;
  }
  return forgotten;
}

RouteTable::Id RouteCache::Lookup(IdentityTable::Id destination, const std::string& route) {
  auto& routes = cache_[destination];
  if (const auto it = routes.find(route); it != routes.end()) return it->second.id;
  // The cap is per workload: every pod of a Deployment shares its routes.
  const Identity identity = identities_.Get(destination);
  const std::string workload =
      identity.namespace_name + "/" + identity.owner_kind + "/" + identity.owner_name;
  const RouteTable::Interned interned = table_.Intern(workload, route);
  // Bounded: a flood of distinct paths (all overflowing) must not grow the cache forever;
  // past the bound they ask the table each time.
  if (routes.size() < kMaxCachedPerWorkload) routes.emplace(route, interned);
  return interned.id;
}

void RouteCache::KeepOnly(absl::flat_hash_set<RouteTable::Id>* in_use) {
  absl::erase_if(in_flight_, [](const auto& entry) { return entry.second == 0; });
  for (const auto& [route, streams] : in_flight_) in_use->insert(route);
  for (auto it = cache_.begin(); it != cache_.end();) {
    absl::erase_if(it->second, [&](const auto& entry) {
      return entry.second.overflow || !in_use->contains(entry.second.id);
    });
    if (it->second.empty()) {
      cache_.erase(it++);
    } else {
      ++it;
    }
  }
}

void StreamRoutes::Start(uint32_t stream, RouteTable::Id route) {
  const auto [it, inserted] = routes_.try_emplace(stream, route);
  if (!inserted) {  // a stream id used again before its end was reported
    cache_.StreamEnded(it->second);
    it->second = route;
  }
  cache_.StreamStarted(route);
}

std::optional<RouteTable::Id> StreamRoutes::End(uint32_t stream) {
  const auto it = routes_.find(stream);
  if (it == routes_.end()) return std::nullopt;
  const RouteTable::Id route = it->second;
  routes_.erase(it);
  cache_.StreamEnded(route);
  return route;
}

}  // namespace nodemesh::metrics
