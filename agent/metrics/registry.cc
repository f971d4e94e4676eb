#include "agent/metrics/registry.h"

#include <fmt/format.h>

#include <algorithm>

namespace nodemesh::metrics {
namespace {

// Prometheus label values escape backslash, double quote and newline.
std::string Escape(const std::string& value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

void AppendIdentity(std::string* out, const char* prefix, const Identity& identity) {
  *out += fmt::format(
      "{0}_namespace=\"{1}\",{0}_pod=\"{2}\",{0}_owner_kind=\"{3}\",{0}_owner_name=\"{4}\","
      "{0}_service_account=\"{5}\"",
      prefix, Escape(identity.namespace_name), Escape(identity.pod), Escape(identity.owner_kind),
      Escape(identity.owner_name), Escape(identity.service_account));
}

// Exposition lines of one histogram family member.
void AppendHistogram(std::string* out, const std::string& name, const std::string& labels,
                     const Histogram& histogram) {
  for (double bound : kLatencyBoundsSeconds) {
    const auto limit_ns = static_cast<int64_t>(bound * 1e9);
    *out += fmt::format("{}_bucket{{{},le=\"{}\"}} {}\n", name, labels, bound,
                        histogram.CountAtOrBelow(limit_ns));
  }
  *out += fmt::format("{}_bucket{{{},le=\"+Inf\"}} {}\n", name, labels, histogram.count());
  *out += fmt::format("{}_sum{{{}}} {:.9f}\n", name, labels, double(histogram.sum_ns()) / 1e9);
  *out += fmt::format("{}_count{{{}}} {}\n", name, labels, histogram.count());
}

void Header(std::string* out, const char* name, const char* type, const char* help) {
  *out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

}  // namespace

void Registry::Add(const Delta& delta, int64_t now_s) {
  std::lock_guard lock(mutex_);
  for (const RequestSample& sample : delta.requests) {
    RequestTotals& totals = requests_[sample.key];
    totals.requests += sample.requests;
    totals.updated_s = now_s;
  }
  for (const ResponseSample& sample : delta.responses) {
    ResponseTotals& totals = responses_[sample.key];
    totals.responses += sample.responses;
    totals.updated_s = now_s;
    totals.latency.Add(sample.latency.buckets, static_cast<uint64_t>(sample.latency.sum_ns));
    totals.first_byte.Add(sample.first_byte.buckets,
                          static_cast<uint64_t>(sample.first_byte.sum_ns));
  }
  // Several workers may report the same key: their gauges add up, so reset first.
  absl::flat_hash_map<TrafficKey, int64_t> open_now;
  for (const TcpSample& sample : delta.tcp) {
    TcpTotals& totals = tcp_[sample.key];
    totals.opened += sample.opened;
    totals.closed += sample.closed;
    totals.closed_failed += sample.closed_failed;
    totals.read_bytes += sample.read_bytes;
    totals.write_bytes += sample.write_bytes;
    totals.duration.Add(sample.duration.buckets, static_cast<uint64_t>(sample.duration.sum_ns));
    totals.updated_s = now_s;
    open_now[sample.key] += sample.open_now;
  }
  for (auto& [key, totals] : tcp_) {
    const auto it = open_now.find(key);
    totals.open_now = it == open_now.end() ? 0 : it->second;
  }
}

void Registry::ForgetIdle(int64_t oldest_s) {
  std::lock_guard lock(mutex_);
  const auto idle = [oldest_s](const auto& entry) { return entry.second.updated_s < oldest_s; };
  absl::erase_if(requests_, idle);
  absl::erase_if(responses_, idle);
  absl::erase_if(tcp_, idle);
}

void Registry::AddReferencedIdentities(absl::flat_hash_set<uint32_t>* ids) const {
  std::lock_guard lock(mutex_);
  for (const auto& [key, totals] : requests_) AddIdentitiesOf(key.traffic, ids);
  for (const auto& [key, totals] : responses_) AddIdentitiesOf(key.request.traffic, ids);
  for (const auto& [key, totals] : tcp_) AddIdentitiesOf(key, ids);
}

void Registry::AddReferencedRoutes(absl::flat_hash_set<uint32_t>* ids) const {
  std::lock_guard lock(mutex_);
  for (const auto& [key, totals] : requests_) ids->insert(key.route);
  for (const auto& [key, totals] : responses_) ids->insert(key.request.route);
}

void Registry::SetInternal(const std::string& family, const std::string& help,
                           const std::string& labels, uint64_t value) {
  std::lock_guard lock(mutex_);
  InternalCounter& counter = internal_[family];
  counter.help = help;
  counter.values[labels] = value;
}

std::string Registry::PrometheusText() const {
  std::lock_guard lock(mutex_);
  const auto traffic_labels = [&](const TrafficKey& key) {
    std::string labels = fmt::format("direction=\"{}\",", DirectionName(key.direction));
    AppendIdentity(&labels, "src", identities_.Get(key.source));
    labels += ',';
    AppendIdentity(&labels, "dst", identities_.Get(key.destination));
    if (key.service != IdentityTable::kExternal) {
      // The Service the caller dialled; its namespace too, so that two Services of one name
      // never make two series with the same labels.
      const Identity service = identities_.Get(key.service);
      labels += fmt::format(",dst_service_namespace=\"{}\",dst_service=\"{}\"",
                            Escape(service.namespace_name), Escape(service.owner_name));
    }
    return labels;
  };
  const auto route_label = [&](uint32_t route) {
    return fmt::format("route=\"{}\"", Escape(routes_.Get(route)));
  };
  const auto response_labels = [&](const ResponseKey& key) {
    return fmt::format("{},{},status_code=\"{}\",grpc_status=\"{}\",classification=\"{}\"",
                       traffic_labels(key.request.traffic), route_label(key.request.route),
                       key.status == 0 ? std::string() : std::to_string(key.status),
                       key.grpc_status < 0 ? std::string() : std::to_string(key.grpc_status),
                       key.failure ? "failure" : "success");
  };

  std::string out;
  Header(&out, "request_total", "counter", "Requests received, by route.");
  for (const auto& [key, totals] : requests_) {
    out += fmt::format("request_total{{{},{}}} {}\n", traffic_labels(key.traffic),
                       route_label(key.route), totals.requests);
  }
  Header(&out, "response_total", "counter",
         "Responses (and streams ended without one), by status and classification.");
  for (const auto& [key, totals] : responses_) {
    out += fmt::format("response_total{{{}}} {}\n", response_labels(key), totals.responses);
  }
  Header(&out, "response_latency_seconds", "histogram",
         "From the first byte of the request to the end of the response.");
  for (const auto& [key, totals] : responses_) {
    AppendHistogram(&out, "response_latency_seconds", response_labels(key), totals.latency);
  }
  Header(&out, "response_first_byte_seconds", "histogram",
         "From the first byte of the request to the first byte of the response.");
  for (const auto& [key, totals] : responses_) {
    if (totals.first_byte.empty()) continue;
    AppendHistogram(&out, "response_first_byte_seconds", response_labels(key), totals.first_byte);
  }
  Header(&out, "tcp_open_total", "counter", "TCP connections opened.");
  for (const auto& [key, totals] : tcp_) {
    out += fmt::format("tcp_open_total{{{}}} {}\n", traffic_labels(key), totals.opened);
  }
  Header(&out, "tcp_close_total", "counter",
         "TCP connections closed; failure: reset, refused or timed out.");
  for (const auto& [key, totals] : tcp_) {
    out += fmt::format("tcp_close_total{{{},classification=\"success\"}} {}\n", traffic_labels(key),
                       totals.closed - totals.closed_failed);
    out += fmt::format("tcp_close_total{{{},classification=\"failure\"}} {}\n", traffic_labels(key),
                       totals.closed_failed);
  }
  Header(&out, "tcp_open_connections", "gauge", "TCP connections open now.");
  for (const auto& [key, totals] : tcp_) {
    out += fmt::format("tcp_open_connections{{{}}} {}\n", traffic_labels(key), totals.open_now);
  }
  Header(&out, "tcp_read_bytes_total", "counter", "Bytes received from the client.");
  for (const auto& [key, totals] : tcp_) {
    out += fmt::format("tcp_read_bytes_total{{{}}} {}\n", traffic_labels(key), totals.read_bytes);
  }
  Header(&out, "tcp_write_bytes_total", "counter", "Bytes sent to the client.");
  for (const auto& [key, totals] : tcp_) {
    out += fmt::format("tcp_write_bytes_total{{{}}} {}\n", traffic_labels(key), totals.write_bytes);
  }
  Header(&out, "tcp_connection_duration_seconds", "histogram", "Lifetime of closed connections.");
  for (const auto& [key, totals] : tcp_) {
    if (totals.duration.empty()) continue;
    AppendHistogram(&out, "tcp_connection_duration_seconds", traffic_labels(key), totals.duration);
  }
  for (const auto& [family, counter] : internal_) {
    Header(&out, family.c_str(), "counter", counter.help.c_str());
    for (const auto& [labels, value] : counter.values) {
      out += fmt::format("{}{{{}}} {}\n", family, labels, value);
    }
  }
  return out;
}

std::vector<Registry::RouteTotals> Registry::Routes() const {
  std::lock_guard lock(mutex_);
  absl::flat_hash_map<RequestKey, std::pair<RouteTotals, Histogram>> merged;
  for (const auto& [key, totals] : responses_) {
    auto& [route, latency] = merged[key.request];
    route.responses += totals.responses;
    if (key.failure) route.failures += totals.responses;
    latency.Merge(totals.latency);
  }
  std::vector<RouteTotals> out;
  for (auto& [key, entry] : merged) {
    auto& [route, latency] = entry;
    route.traffic = key.traffic;
    route.route = routes_.Get(key.route);
    route.p50_ns = latency.Quantile(0.5);
    route.p95_ns = latency.Quantile(0.95);
    route.p99_ns = latency.Quantile(0.99);
    out.push_back(std::move(route));
  }
  return out;
}

Forgotten ForgetUnused(IdentityTable& identities, RouteTable& routes, Registry& registry,
                       InUse in_use, int64_t oldest_s) {
  registry.ForgetIdle(oldest_s);
  registry.AddReferencedIdentities(&in_use.identities);
  registry.AddReferencedRoutes(&in_use.routes);
  return Forgotten{identities.Retain(in_use.identities), routes.Retain(in_use.routes)};
}

}  // namespace nodemesh::metrics
