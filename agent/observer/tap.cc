#include "agent/observer/tap.h"

#include <algorithm>

namespace nodemesh::agent {
namespace {

bool Listed(const std::vector<std::string>& pods, const metrics::Identity& identity) {
  if (pods.empty()) return true;
  if (identity.pod.empty()) return false;  // external peers are never a named pod
  const std::string key = identity.namespace_name + "/" + identity.pod;
  return std::find(pods.begin(), pods.end(), key) != pods.end();
}

bool ListedService(const std::vector<std::string>& services, const metrics::Identity* service) {
  if (services.empty()) return true;
  if (service == nullptr) return false;
  const std::string key = service->namespace_name + "/" + service->owner_name;
  return std::find(services.begin(), services.end(), key) != services.end();
}

}  // namespace

TapFilter TapFilter::FromProto(const v1::TapSubscription& subscription) {
  TapFilter filter;
  filter.id = subscription.id();
  const v1::TapMatch& match = subscription.match();
  filter.sources.assign(match.source_pods().begin(), match.source_pods().end());
  filter.destinations.assign(match.destination_pods().begin(), match.destination_pods().end());
  filter.services.assign(match.destination_services().begin(), match.destination_services().end());
  filter.method = match.method();
  filter.path_prefix = match.path_prefix();
  filter.authority = match.authority();
  filter.scheme = match.scheme();
  filter.max_rps = subscription.max_rps();
  return filter;
}

bool TapFilter::Matches(const metrics::Identity& source, const metrics::Identity& destination,
                        const metrics::Identity* service, const parsers::RequestStart& request,
                        std::string_view path) const {
  return Listed(sources, source) && Listed(destinations, destination) &&
         ListedService(services, service) &&
         (either.empty() || Listed(either, source) || Listed(either, destination)) &&
         (method.empty() || method == request.method) &&
         (path_prefix.empty() || path.starts_with(path_prefix)) &&
         (authority.empty() || authority == request.authority) &&
         (scheme.empty() || scheme == request.scheme);
}

void TapSubscriptions::Add(TapFilter filter) {
  std::lock_guard lock(mutex_);
  List list = *Current();
  std::erase_if(list, [&](const TapFilter& f) { return f.id == filter.id; });
  list.push_back(std::move(filter));
  Publish(std::move(list));
}

void TapSubscriptions::Remove(uint64_t id) {
  std::lock_guard lock(mutex_);
  List list = *Current();
  std::erase_if(list, [&](const TapFilter& f) { return f.id == id; });
  Publish(std::move(list));
}

void TapSubscriptions::Publish(List list) {
  const bool any = !list.empty();
  list_.store(std::make_shared<const List>(std::move(list)), std::memory_order_release);
  active_.store(any, std::memory_order_relaxed);
}

void TapOutbox::Push(v1::TapEvent event) {
  std::lock_guard lock(mutex_);
  if (events_.size() >= capacity_) {
    ++dropped_;
    return;
  }
  events_.push_back(std::move(event));
}

uint64_t TapOutbox::Drain(std::vector<v1::TapEvent>* out) {
  std::lock_guard lock(mutex_);
  for (v1::TapEvent& event : events_) out->push_back(std::move(event));
  events_.clear();
  return std::exchange(dropped_, 0);
}

bool TapRateLimiter::Allow(uint64_t subscription, double rate, int64_t now_ns) {
  if (rate <= 0) return true;
  Bucket& bucket = buckets_[subscription];
  if (bucket.refilled_ns == 0) bucket.tokens = rate;  // a new subscription starts full
  const double elapsed_s = double(now_ns - bucket.refilled_ns) / 1e9;
  bucket.tokens = std::min(rate, bucket.tokens + (bucket.refilled_ns == 0 ? 0 : elapsed_s * rate));
  bucket.refilled_ns = now_ns;
  if (bucket.tokens < 1) return false;
  bucket.tokens -= 1;
  return true;
}

std::string TapHeaderValue(const TapRedaction& redaction, const parsers::Header& header) {
  // Names are lowercase on both sides (parsers give them so; the flag is lowered).
  const bool redacted = std::find(redaction.headers.begin(), redaction.headers.end(),
                                  header.name) != redaction.headers.end();
  return redacted ? "[redacted]" : header.value;
}

std::string_view TapPath(const TapRedaction& redaction, std::string_view path,
                         std::string* storage) {
  if (!redaction.strip_query) return path;
  const size_t query = path.find('?');
  if (query == std::string_view::npos) return path;
  *storage = std::string(path.substr(0, query)) + "?[redacted]";
  return *storage;
}

}  // namespace nodemesh::agent
