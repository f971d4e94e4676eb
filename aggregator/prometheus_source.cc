#include "aggregator/prometheus_source.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <tuple>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "common/base/file.h"
#include "common/base/format.h"
#include "common/base/percent_encoding.h"
#include "nlohmann/json.hpp"

namespace nodemesh::aggregator {
namespace {

using Json = nlohmann::json;

constexpr std::string_view kStore = "the Prometheus-compatible store";
// A window evaluates this many steps at most (see the top of prometheus_source.h).
constexpr int64_t kMaxSteps = 3600;

// The labels a traffic series is summed by: the agents' (registry.cc), without the scrape's
// own (job, instance) and without status codes, which no query reads.
constexpr std::string_view kTrafficLabels =
    "direction,src_namespace,src_pod,src_owner_kind,src_owner_name,src_service_account,"
    "dst_namespace,dst_pod,dst_owner_kind,dst_owner_name,dst_service_account,"
    "dst_service_namespace,dst_service";

kube::Config StoreConfig(const PrometheusOptions& options) {
  kube::Config config;
  config.server = options.url;
  config.ca_file = options.ca_file;
  config.token_file = options.bearer_token_file;
  config.source = "--prometheus";
  config.server_role = std::string(kStore);
  return config;
}

// What a refusal in the store's own words means for the user.
absl::Status Refusal(long http_status, std::string_view error_type, std::string_view error) {
  const std::string said = fmt::format("{} answered HTTP {} ({}: {})", kStore, http_status,
                                       error_type.empty() ? "error" : error_type, error);
  switch (http_status) {
    case 400:
      return absl::InvalidArgumentError(
          fmt::format("{}: it found the query bad; is it a Prometheus-compatible API?", said));
    case 401:
      return absl::UnauthenticatedError(fmt::format(
          "{}: check --prometheus-bearer-token-file or --prometheus-basic-auth-file", said));
    case 403:
      return absl::PermissionDeniedError(
          fmt::format("{}: the credentials given may not query it; grant them read access", said));
    case 422:
    case 503:
      return absl::ResourceExhaustedError(fmt::format(
          "{}: the store refused or gave up on the query for its size; ask for a shorter window "
          "(-t), or raise the store's limits (Prometheus: --query.max-samples, --query.timeout; "
          "VictoriaMetrics: -search.maxSamplesPerQuery, -search.maxUniqueTimeseries, "
          "-search.maxQueryDuration)",
          said));
    default:
      return absl::UnavailableError(said);
  }
}

double SampleValue(const Json& value) {
  // [unix_time, "value"]; the value is a string so that NaN and Inf can be written.
  const std::string& text = value.at(1).get_ref<const std::string&>();
  char* end = nullptr;
  const double parsed = std::strtod(text.c_str(), &end);
  if (end == text.c_str() || *end != '\0') throw std::invalid_argument("a value is no number");
  return parsed;
}

// A count from a sum of a counter's steps: an integer unless a counter was fractional.
uint64_t CountOf(double value) {
  if (!std::isfinite(value) || value <= 0) return 0;
  return static_cast<uint64_t>(std::llround(value));
}

double BoundOf(std::string_view le) {
  if (le == "+Inf" || le == "Inf" || le == "inf") return std::numeric_limits<double>::infinity();
  const std::string text(le);
  char* end = nullptr;
  const double bound = std::strtod(text.c_str(), &end);
  return end == text.c_str() || *end != '\0' ? std::numeric_limits<double>::quiet_NaN() : bound;
}

// A response series as grouped by the queries: its traffic, route and classification.
struct ResponseKey {
  TrafficLabels traffic;
  RouteId route = 0;
  bool failure = false;

  bool operator==(const ResponseKey&) const = default;
  template <typename H>
  friend H AbslHashValue(H h, const ResponseKey& k) {
    return H::combine(std::move(h), k.traffic, k.route, k.failure);
  }
};

struct ResponseSeries {
  double responses = 0;
  LatencyBuckets latency;
};

}  // namespace

std::string_view PromSample::Label(std::string_view name) const {
  const auto found = std::lower_bound(labels.begin(), labels.end(), name,
                                      [](const std::pair<std::string, std::string>& label,
                                         std::string_view key) { return label.first < key; });
  return found != labels.end() && found->first == name ? std::string_view(found->second)
                                                       : std::string_view();
}

absl::StatusOr<std::vector<PromSample>> ParseVectorAnswer(long http_status, std::string_view body) {
  const Json answer = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  const auto garbage = [&](std::string_view why) {
    return absl::UnavailableError(fmt::format(
        "{} answered HTTP {} with what is no Prometheus API answer ({}): is --prometheus the "
        "URL under which it serves /api/v1? The answer began: {}",
        kStore, http_status, why, absl::CHexEscape(std::string(body.substr(0, 120)))));
  };
  if (!answer.is_object() || !answer.contains("status")) return garbage("no JSON with a status");
  if (answer.value("status", "") != "success") {
    return Refusal(http_status, answer.value("errorType", ""), answer.value("error", ""));
  }
  if (http_status / 100 != 2) return garbage("success with an error status");
  try {
    const Json& data = answer.at("data");
    if (data.at("resultType") != "vector") return garbage("not an instant vector");
    std::vector<PromSample> samples;
    for (const Json& element : data.at("result")) {
      PromSample sample;
      for (const auto& [name, value] : element.at("metric").items()) {
        sample.labels.emplace_back(name, value.get<std::string>());
      }
      std::sort(sample.labels.begin(), sample.labels.end());
      sample.value = SampleValue(element.at("value"));
      samples.push_back(std::move(sample));
    }
    return samples;
  } catch (const std::exception& error) {
    return garbage(error.what());
  }
}

PrometheusClient::PrometheusClient(PrometheusOptions options)
    : options_(std::move(options)),
      config_(StoreConfig(options_)),
      endpoint_(config_),
      bearer_(config_, token_reloads_) {}

absl::StatusOr<std::string> PrometheusClient::Authorization() const {
  if (!options_.basic_auth_file.empty()) {
    absl::StatusOr<std::string> pair = ReadFile(options_.basic_auth_file);
    if (!pair.ok()) {
      return absl::UnauthenticatedError(
          fmt::format("cannot read --prometheus-basic-auth-file: {}", pair.status().message()));
    }
    std::string trimmed = *std::move(pair);
    while (!trimmed.empty() && absl::ascii_isspace(static_cast<unsigned char>(trimmed.back()))) {
      trimmed.pop_back();
    }
    if (trimmed.find(':') == std::string::npos) {
      return absl::UnauthenticatedError(fmt::format(
          "--prometheus-basic-auth-file {} holds no USER:PASSWORD", options_.basic_auth_file));
    }
    return "Basic " + absl::Base64Escape(trimmed);
  }
  return bearer_.Header();
}

absl::StatusOr<std::vector<PromSample>> PrometheusClient::Query(std::string_view expression,
                                                                int64_t unix_seconds) const {
  const absl::StatusOr<std::string> authorization = Authorization();
  if (!authorization.ok()) return authorization.status();
  kube::RequestCredentials credentials;
  credentials.authorization = *authorization;
  const std::string body = fmt::format("query={}&time={}&timeout={}ms", PercentEncode(expression),
                                       unix_seconds, options_.timeout.count());
  kube::Exchange exchange(config_, endpoint_, "query the store");
  const kube::Exchange::Clock::time_point deadline =
      kube::Exchange::Clock::now() + options_.timeout;
  const absl::Status sent = exchange.Send(
      "POST", "/api/v1/query", body, "application/x-www-form-urlencoded", credentials, deadline);
  absl::StatusOr<kube::Response> answer = sent.ok() ? exchange.Receive(deadline) : sent;
  if (!answer.ok()) {
    const std::string_view hint = answer.status().code() == absl::StatusCode::kDeadlineExceeded
                                      ? "; raise --prometheus-timeout, or ask a shorter window"
                                      : "; is the store up, and --prometheus its URL?";
    return absl::Status(answer.status().code(),
                        fmt::format("{}{}", answer.status().message(), hint));
  }
  return ParseVectorAnswer(answer->status, answer->body);
}

std::string PrometheusSource::IncreaseExpression(std::string_view metric, std::string_view labels,
                                                 int64_t window_seconds, int64_t step_seconds) {
  return fmt::format(
      "sum by ({1}) (sum_over_time((({0} - {0} offset {3}s) >= 0 or {0} + 0)[{2}s:{3}s]))", metric,
      labels, window_seconds, step_seconds);
}

IdentityId PrometheusSource::Intern(metrics::Identity identity) {
  if (identities_.empty()) {
    identities_.push_back(metrics::ExternalIdentity());
    identity_ids_.emplace(metrics::ExternalIdentity(), 0);
  }
  const auto [it, inserted] = identity_ids_.try_emplace(identity, identities_.size());
  if (inserted) identities_.push_back(std::move(identity));
  return it->second;
}

std::optional<metrics::Identity> PrometheusSource::identity(IdentityId id) const {
  if (id >= identities_.size()) return std::nullopt;
  return identities_[id];
}

std::optional<std::string> PrometheusSource::route(RouteId id) const {
  if (id == 0 || id >= routes_.size()) return std::nullopt;
  return routes_[id];
}

std::optional<TrafficLabels> PrometheusSource::TrafficOf(const PromSample& sample) {
  TrafficLabels labels;
  const std::string_view direction = sample.Label("direction");
  if (direction == "inbound") {
    labels.direction = metrics::Direction::kInbound;
  } else if (direction == "outbound") {
    labels.direction = metrics::Direction::kOutbound;
  } else {
    return std::nullopt;
  }
  const auto end = [&](std::string_view prefix) {
    const auto label = [&](std::string_view name) {
      return std::string(sample.Label(fmt::format("{}_{}", prefix, name)));
    };
    return Intern(metrics::Identity{label("namespace"), label("pod"), label("owner_kind"),
                                    label("owner_name"), label("service_account"), ""});
  };
  labels.source = end("src");
  labels.destination = end("dst");
  const std::string_view service = sample.Label("dst_service");
  labels.service =
      service.empty()
          ? kNoService
          : Intern(metrics::ServiceIdentity(std::string(sample.Label("dst_service_namespace")),
                                            std::string(service)));
  return labels;
}

absl::Status PrometheusSource::Scan(const Window& window, bool by_route, TrafficVisitor& visitor) {
  if (window.seconds <= 0) return absl::OkStatus();
  const int64_t step = std::max<int64_t>(1, (window.seconds + kMaxSteps - 1) / kMaxSteps);
  // Steps are aligned to multiples of `step` since the epoch: the window ends at the next one,
  // so that the latest seconds are in it (the steps past the present add nothing).
  const int64_t end = (window.last_second + step) / step * step;
  const std::string by =
      by_route ? fmt::format("{},route", kTrafficLabels) : std::string(kTrafficLabels);
  const auto query = [&](const std::string& expression) { return client_.Query(expression, end); };

  absl::StatusOr<std::vector<PromSample>> responses = query(IncreaseExpression(
      "response_total", fmt::format("{},classification", by), window.seconds, step));
  if (!responses.ok()) return responses.status();
  absl::StatusOr<std::vector<PromSample>> buckets =
      query(IncreaseExpression("response_latency_seconds_bucket",
                               fmt::format("{},classification,le", by), window.seconds, step));
  if (!buckets.ok()) return buckets.status();

  absl::flat_hash_map<ResponseKey, ResponseSeries> series;
  const auto key_of = [&](const PromSample& sample) -> std::optional<ResponseKey> {
    std::optional<TrafficLabels> traffic = TrafficOf(sample);
    if (!traffic) return std::nullopt;
    RouteId route = 0;
    if (by_route) {
      if (routes_.empty()) routes_.emplace_back();
      const auto [it, inserted] =
          route_ids_.try_emplace(std::string(sample.Label("route")), routes_.size());
      if (inserted) routes_.emplace_back(sample.Label("route"));
      route = it->second;
    }
    return ResponseKey{*traffic, route, sample.Label("classification") == "failure"};
  };
  for (const PromSample& sample : *responses) {
    if (std::optional<ResponseKey> key = key_of(sample)) series[*key].responses += sample.value;
  }
  for (const PromSample& sample : *buckets) {
    const double bound = BoundOf(sample.Label("le"));
    if (std::isnan(bound)) continue;
    if (std::optional<ResponseKey> key = key_of(sample)) {
      series[*key].latency.Add(bound, sample.value);
    }
  }
  for (const auto& [key, figures] : series) {
    const uint64_t count = CountOf(figures.responses);
    if (count == 0) continue;
    ResponseLabels labels;
    labels.traffic = key.traffic;
    labels.route = key.route;
    labels.failure = key.failure;
    visitor.Response(
        labels,
        ResponseFigures{.responses = count,
                        .latency_buckets = figures.latency.empty() ? nullptr : &figures.latency});
  }

  struct Tcp {
    double read = 0, write = 0, open = 0;
  };
  absl::flat_hash_map<TrafficLabels, Tcp> tcp;
  const std::string traffic_by(kTrafficLabels);
  for (const auto& [expression, field] :
       {std::pair{IncreaseExpression("tcp_read_bytes_total", traffic_by, window.seconds, step),
                  &Tcp::read},
        std::pair{IncreaseExpression("tcp_write_bytes_total", traffic_by, window.seconds, step),
                  &Tcp::write},
        std::pair{fmt::format("sum by ({}) (last_over_time(tcp_open_connections[{}s]))", traffic_by,
                              window.seconds),
                  &Tcp::open}}) {
    absl::StatusOr<std::vector<PromSample>> answer = query(expression);
    if (!answer.ok()) return answer.status();
    for (const PromSample& sample : *answer) {
      if (std::optional<TrafficLabels> traffic = TrafficOf(sample)) {
        tcp[*traffic].*field += sample.value;
      }
    }
  }
  for (const auto& [labels, figures] : tcp) {
    TcpCounts counts;
    counts.read_bytes = CountOf(figures.read);
    counts.write_bytes = CountOf(figures.write);
    counts.open_now = std::isfinite(figures.open) ? std::llround(figures.open) : 0;
    if (counts.read_bytes == 0 && counts.write_bytes == 0 && counts.open_now == 0) continue;
    visitor.Tcp(labels, counts);
  }
  return absl::OkStatus();
}

}  // namespace nodemesh::aggregator
