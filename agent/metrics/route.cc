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

RouteTable::Id RouteTable::Intern(const std::string& workload, const std::string& route) {
  std::lock_guard lock(mutex_);
  Workload& entry = workloads_[workload];
  if (const auto it = entry.routes.find(route); it != entry.routes.end()) return it->second;
  if (entry.routes.size() >= max_per_workload_) {
    ++overflowed_;
    if (!entry.has_overflow) {
      entry.overflow = static_cast<Id>(names_.size());
      entry.has_overflow = true;
      names_.emplace_back(kOverflowRoute);
    }
    return entry.overflow;
  }
  const Id id = static_cast<Id>(names_.size());
  names_.push_back(route);
  entry.routes.emplace(route, id);
  return id;
}

std::string RouteTable::Get(Id id) const {
  std::lock_guard lock(mutex_);
  return id < names_.size() ? names_[id] : std::string(kOverflowRoute);
}

uint64_t RouteTable::overflowed() const {
  std::lock_guard lock(mutex_);
  return overflowed_;
}

RouteTable::Id RouteCache::Lookup(IdentityTable::Id destination, const std::string& route) {
  auto& routes = cache_[destination];
  if (const auto it = routes.find(route); it != routes.end()) return it->second;
  // The cap is per workload: every pod of a Deployment shares its routes.
  const Identity identity = identities_.Get(destination);
  const std::string workload =
      identity.namespace_name + "/" + identity.owner_kind + "/" + identity.owner_name;
  const RouteTable::Id id = table_.Intern(workload, route);
  // Bounded: a flood of distinct paths (all overflowing) must not grow the cache forever;
  // past the bound they ask the table each time.
  if (routes.size() < kMaxCachedPerWorkload) routes.emplace(route, id);
  return id;
}

}  // namespace nodemesh::metrics
