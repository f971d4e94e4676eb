// Answers from a Prometheus-compatible store (Prometheus, Thanos, Mimir, VictoriaMetrics) that
// scrapes the agents' /metrics (agent/metrics/registry.h): PrometheusClient asks its HTTP API
// (/api/v1/query) over the project's HTTP/1.1 transport (common/kube/transport.h), with the
// store's auth and a deadline on every step; PrometheusSource turns the answers into the
// series a query's window holds (traffic_source.h).
//
// Counting in the store. PromQL's increase() extrapolates to the window's edges and gives
// fractions, so counts are summed from the counters' own steps instead:
//   sum_over_time(((C - C offset S) >= 0 or C + 0)[W:S])
// over steps of S seconds aligned to the window: each step adds what the counter gained since
// the step before; a counter lower than before (an agent restarted) or new (a series created,
// or dropped when idle and created again) adds its whole value, as counted from zero. The sum
// is exact when no counter restarts within one step: S is 1 s for windows up to an hour, and
// W / 3600 beyond (so that a query evaluates 3600 steps; a restart then loses at most the one
// step's traffic before it). The window ends at the next multiple of S, so its first S - 1
// seconds may be left out, its latest never.
// Latencies: the same sums per bucket of the export's fixed bounds, and percentiles
// interpolated within the bucket (LatencyBuckets), as histogram_quantile does; their error is
// the width of the bucket the percentile falls in, where memory is exact to about 1%.
//
// Threads: a PrometheusClient is shared by the query threads (each request has a connection of
// its own); a PrometheusSource belongs to the one query that made it.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "aggregator/traffic_source.h"
#include "common/kube/config.h"
#include "common/kube/credentials.h"
#include "common/kube/transport.h"

namespace nodemesh::aggregator {

struct PrometheusOptions {
  std::string url{};  // http(s)://HOST:PORT[/PATH], the prefix under which /api/v1 is served
  // A file holding a bearer token, read again whenever it changes (a projected token).
  std::string bearer_token_file{};
  // A file holding USER:PASSWORD for basic authentication, read for every query.
  std::string basic_auth_file{};
  std::string ca_file{};  // PEM CA of an https store; empty: the system's
  // Each query's deadline, connecting included; the store is told it too, to give up.
  std::chrono::milliseconds timeout{10'000};
};

// One element of an instant vector: its labels and value.
struct PromSample {
  std::vector<std::pair<std::string, std::string>> labels;  // sorted by name
  double value = 0;

  // The label's value; "" when absent, as PromQL reads a missing label.
  std::string_view Label(std::string_view name) const;
};

// The samples of the store's answer to /api/v1/query, an instant vector. `http_status` and
// `body` as received. Errors say what is wrong and what to do: RESOURCE_EXHAUSTED when the
// store refused the query for its size (too many samples or series) or it timed out there,
// UNAUTHENTICATED / PERMISSION_DENIED for its auth, INVALID_ARGUMENT when it found the query
// bad, UNAVAILABLE for an answer that is no Prometheus API answer.
absl::StatusOr<std::vector<PromSample>> ParseVectorAnswer(long http_status, std::string_view body);

class PrometheusClient {
 public:
  explicit PrometheusClient(PrometheusOptions options);
  PrometheusClient(const PrometheusClient&) = delete;
  PrometheusClient& operator=(const PrometheusClient&) = delete;

  // What `expression` evaluates to at `unix_seconds`, an instant vector. Errors name the store
  // and what to check: one down (UNAVAILABLE), slow (DEADLINE_EXCEEDED), or refusing.
  absl::StatusOr<std::vector<PromSample>> Query(std::string_view expression,
                                                int64_t unix_seconds) const;
  const std::string& url() const { return options_.url; }

 private:
  absl::StatusOr<std::string> Authorization() const;

  const PrometheusOptions options_;
  const kube::Config config_;
  const kube::Endpoint endpoint_;
  mutable std::atomic<uint64_t> token_reloads_{0};
  mutable kube::BearerToken bearer_;
};

// The series of a window as the store's counters give them: one query per figure (responses
// by classification, latency buckets, bytes read and written, open connections), summed by
// the labels the queries group by. Ids are this source's own.
class PrometheusSource final : public TrafficSource {
 public:
  explicit PrometheusSource(const PrometheusClient& client) : client_(client) {}
  v1::AnswerSource kind() const override { return v1::ANSWER_SOURCE_PROMETHEUS; }
  absl::Status Scan(const Window& window, bool by_route, TrafficVisitor& visitor) override;
  std::optional<metrics::Identity> identity(IdentityId id) const override;
  std::optional<std::string> route(RouteId id) const override;

  // The expression summing counter `metric`'s gain over `window_seconds` in steps of
  // `step_seconds`, by `labels` (comma-separated). For tests and docs.
  static std::string IncreaseExpression(std::string_view metric, std::string_view labels,
                                        int64_t window_seconds, int64_t step_seconds);

 private:
  // The ids of a sample's traffic labels (direction, src_*, dst_*, dst_service*); nullopt
  // for a sample without a known direction.
  std::optional<TrafficLabels> TrafficOf(const PromSample& sample);
  IdentityId Intern(metrics::Identity identity);

  const PrometheusClient& client_;
  std::vector<metrics::Identity> identities_;  // by id; 0 is External
  absl::flat_hash_map<metrics::Identity, IdentityId> identity_ids_;
  std::vector<std::string> routes_;  // by id; 0 is none
  absl::flat_hash_map<std::string, RouteId> route_ids_;
};

}  // namespace nodemesh::aggregator
