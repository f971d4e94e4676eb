#include "agent/metrics/registry.h"

#include <fmt/format.h>

#include <algorithm>
#include <span>
#include <string_view>

namespace nodemesh::metrics {
namespace {

// Prometheus label values escape backslash, double quote and newline.
std::string Escape(std::string_view value) {
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

// The label pairs of one series in exposition syntax, without those the format leaves out.
class LabelText {
 public:
  // `text`: pairs already written, e.g. a series' traffic labels before its route.
  explicit LabelText(const ExportFormat& format, std::string text = {})
      : format_(format), text_(std::move(text)) {}

  void Add(std::string_view name, std::string_view value) {
    if (!format_.Keeps(name)) return;
    if (!text_.empty()) text_ += ',';
    text_ += fmt::format("{}=\"{}\"", name, Escape(value));
  }
  void AddIdentity(const std::string& prefix, const Identity& identity) {
    Add(prefix + "_namespace", identity.namespace_name);
    Add(prefix + "_pod", identity.pod);
    Add(prefix + "_owner_kind", identity.owner_kind);
    Add(prefix + "_owner_name", identity.owner_name);
    Add(prefix + "_service_account", identity.service_account);
  }
  std::string Take() { return std::move(text_); }

 private:
  const ExportFormat& format_;
  std::string text_;
};

// One family's exported series: their labels (the format's) to the sum of the registry's
// series that have them. Ordered, so that /metrics lists series in a stable order.
template <typename Value>
using ExportedSeries = std::map<std::string, Value>;

void AppendFamily(std::string* out, const std::string& name, const auto& series) {
  for (const auto& [labels, value] : series) {
    *out += fmt::format("{}{{{}}} {}\n", name, labels, value);
  }
}

// Exposition lines of one histogram family member: the sum of `histograms`, on `bounds`.
void AppendHistogram(std::string* out, const std::string& name, const std::string& labels,
                     const std::vector<const Histogram*>& histograms,
                     std::span<const double> bounds) {
  const auto total = [&](auto count_of) {
    uint64_t sum = 0;
    for (const Histogram* histogram : histograms) sum += count_of(*histogram);
    return sum;
  };
  for (double bound : bounds) {
    const auto limit_ns = static_cast<int64_t>(bound * 1e9);
    *out += fmt::format("{}_bucket{{{},le=\"{}\"}} {}\n", name, labels, bound,
                        total([&](const Histogram& h) { return h.CountAtOrBelow(limit_ns); }));
  }
  const uint64_t count = total([](const Histogram& h) { return h.count(); });
  const uint64_t sum_ns =
      total([](const Histogram& h) { return static_cast<uint64_t>(h.sum_ns()); });
  *out += fmt::format("{}_bucket{{{},le=\"+Inf\"}} {}\n", name, labels, count);
  *out += fmt::format("{}_sum{{{}}} {:.9f}\n", name, labels, double(sum_ns) / 1e9);
  *out += fmt::format("{}_count{{{}}} {}\n", name, labels, count);
}

void AppendHistograms(std::string* out, const std::string& name,
                      const ExportedSeries<std::vector<const Histogram*>>& series,
                      std::span<const double> bounds) {
  for (const auto& [labels, histograms] : series) {
    AppendHistogram(out, name, labels, histograms, bounds);
  }
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
    LabelText labels(format_);
    labels.Add("direction", DirectionName(key.direction));
    labels.AddIdentity("src", identities_.Get(key.source));
    labels.AddIdentity("dst", identities_.Get(key.destination));
    if (key.service != IdentityTable::kExternal) {
      // The Service the caller dialled; its namespace too, so that two Services of one name
      // never make two series with the same labels.
      const Identity service = identities_.Get(key.service);
      labels.Add("dst_service_namespace", service.namespace_name);
      labels.Add("dst_service", service.owner_name);
    }
    return labels.Take();
  };
  const auto request_labels = [&](const RequestKey& key) {
    LabelText labels(format_, traffic_labels(key.traffic));
    labels.Add("route", routes_.Get(key.route));
    return labels.Take();
  };
  const auto response_labels = [&](const ResponseKey& key) {
    LabelText labels(format_, request_labels(key.request));
    labels.Add("status_code", key.status == 0 ? std::string() : std::to_string(key.status));
    labels.Add("grpc_status",
               key.grpc_status < 0 ? std::string() : std::to_string(key.grpc_status));
    labels.Add("classification", key.failure ? "failure" : "success");
    return labels.Take();
  };

  ExportedSeries<uint64_t> requests, responses;
  ExportedSeries<std::vector<const Histogram*>> latency, first_byte, duration;
  for (const auto& [key, totals] : requests_) requests[request_labels(key)] += totals.requests;
  for (const auto& [key, totals] : responses_) {
    const std::string labels = response_labels(key);
    responses[labels] += totals.responses;
    latency[labels].push_back(&totals.latency);
    if (!totals.first_byte.empty()) first_byte[labels].push_back(&totals.first_byte);
  }
  ExportedSeries<uint64_t> opened, closed_succeeded, closed_failed, read_bytes, write_bytes;
  ExportedSeries<int64_t> open_now;
  for (const auto& [key, totals] : tcp_) {
    const std::string labels = traffic_labels(key);
    opened[labels] += totals.opened;
    closed_succeeded[labels] += totals.closed - totals.closed_failed;
    closed_failed[labels] += totals.closed_failed;
    open_now[labels] += totals.open_now;
    read_bytes[labels] += totals.read_bytes;
    write_bytes[labels] += totals.write_bytes;
    if (!totals.duration.empty()) duration[labels].push_back(&totals.duration);
  }

  const std::span<const double> bounds = format_.latency_bounds();
  std::string out;
  Header(&out, "request_total", "counter", "Requests received, by route.");
  AppendFamily(&out, "request_total", requests);
  Header(&out, "response_total", "counter",
         "Responses (and streams ended without one), by status and classification.");
  AppendFamily(&out, "response_total", responses);
  Header(&out, "response_latency_seconds", "histogram",
         "From the first byte of the request to the end of the response.");
  AppendHistograms(&out, "response_latency_seconds", latency, bounds);
  Header(&out, "response_first_byte_seconds", "histogram",
         "From the first byte of the request to the first byte of the response.");
  AppendHistograms(&out, "response_first_byte_seconds", first_byte, bounds);
  Header(&out, "tcp_open_total", "counter", "TCP connections opened.");
  AppendFamily(&out, "tcp_open_total", opened);
  Header(&out, "tcp_close_total", "counter",
         "TCP connections closed; failure: reset, refused or timed out.");
  for (const auto& [labels, succeeded] : closed_succeeded) {
    out += fmt::format("tcp_close_total{{{},classification=\"success\"}} {}\n", labels, succeeded);
    out += fmt::format("tcp_close_total{{{},classification=\"failure\"}} {}\n", labels,
                       closed_failed.at(labels));
  }
  Header(&out, "tcp_open_connections", "gauge", "TCP connections open now.");
  AppendFamily(&out, "tcp_open_connections", open_now);
  Header(&out, "tcp_read_bytes_total", "counter", "Bytes received from the client.");
  AppendFamily(&out, "tcp_read_bytes_total", read_bytes);
  Header(&out, "tcp_write_bytes_total", "counter", "Bytes sent to the client.");
  AppendFamily(&out, "tcp_write_bytes_total", write_bytes);
  Header(&out, "tcp_connection_duration_seconds", "histogram", "Lifetime of closed connections.");
  AppendHistograms(&out, "tcp_connection_duration_seconds", duration, bounds);
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
