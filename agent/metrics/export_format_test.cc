#include "agent/metrics/export_format.h"

#include <fmt/format.h>

#include <catch2/catch.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "agent/metrics/registry.h"
#include "agent/metrics/shard.h"

namespace nodemesh::metrics {
namespace {

// Two client pods of one workload calling two server pods of another, through a Service and
// not, with three statuses: every label the export may leave out varies.
struct ExportFixture {
  IdentityTable identities;
  RouteTable routes{100};
  IdentityTable::Id web_1 = identities.Intern({"shop", "web-1", "Deployment", "web", "web", "n1"});
  IdentityTable::Id web_2 = identities.Intern({"shop", "web-2", "Deployment", "web", "web", "n1"});
  IdentityTable::Id api_1 = identities.Intern({"shop", "api-1", "Deployment", "api", "api", "n1"});
  IdentityTable::Id api_2 = identities.Intern({"shop", "api-2", "Deployment", "api", "api", "n1"});
  IdentityTable::Id api_service = identities.Intern({"shop", "", "Service", "api", "", ""});
  RouteTable::Id get_item = routes.Intern("shop/Deployment/api", "GET /items/{id}").id;
  RouteTable::Id put_item = routes.Intern("shop/Deployment/api", "PUT /items/{id}").id;
  Delta delta;

  ExportFixture() {
    Shard shard;
    const TrafficKey a{web_1, api_1, Direction::kOutbound, api_service};
    const TrafficKey b{web_2, api_2, Direction::kOutbound};
    // web-1 -> api-1 (through the Service): GET 200 x2 at 1.9 ms, PUT 500 at 4 ms.
    Shard::CloseConnection(shard.OpenConnection(a), 2'000'000'000, /*failed=*/false);
    for (int i = 0; i < 2; ++i) {
      shard.CountRequest({a, get_item});
      shard.CountResponse({{a, get_item}, 200, -1, false}, 1'900'000, 1'000'000);
    }
    shard.CountRequest({a, put_item});
    shard.CountResponse({{a, put_item}, 500, -1, true}, 4'000'000, 3'000'000);
    // web-2 -> api-2 (dialled directly): GET 404 at 30 ms, one connection left open.
    TcpSeries* open = shard.OpenConnection(b);
    open->read_bytes += 10;
    shard.CountRequest({b, get_item});
    shard.CountResponse({{b, get_item}, 404, -1, false}, 30'000'000, 20'000'000);
    shard.Collect(&delta);
    Shard::CloseConnection(open, 1, false);
  }

  // The lines of /metrics exported with `format` whose metric name is `name`.
  std::vector<std::string> Lines(const ExportFormat& format, const std::string& name) const {
    Registry registry(identities, routes, format);
    registry.Add(delta, 1);
    std::vector<std::string> lines;
    std::istringstream text(registry.PrometheusText());
    for (std::string line; std::getline(text, line);) {
      if (line.starts_with(name + "{")) lines.push_back(line);
    }
    return lines;
  }
};

const std::string kShopCall =
    "direction=\"outbound\",src_namespace=\"shop\",src_owner_kind=\"Deployment\","
    "src_owner_name=\"web\",src_service_account=\"web\",dst_namespace=\"shop\","
    "dst_owner_kind=\"Deployment\",dst_owner_name=\"api\",dst_service_account=\"api\"";

TEST_CASE("export: the default keeps every label and the 28 fine latency bounds") {
  ExportFixture f;
  const ExportFormat format;
  CHECK(f.Lines(format, "request_total").size() == 3);  // (pod pair, route)
  CHECK(f.Lines(format, "response_total").size() == 3);
  CHECK(f.Lines(format, "response_latency_seconds_bucket").size() == 3 * (28 + 1));
  CHECK(f.Lines(format, "tcp_open_total").size() == 2);
  CHECK(f.Lines(format, "tcp_close_total").size() == 2 * 2);
  CHECK(f.Lines(format, "tcp_connection_duration_seconds_bucket").size() == 1 * (28 + 1));
}

TEST_CASE("export: coarse latency buckets are the 11 of the Prometheus clients") {
  ExportFixture f;
  const ExportFormat format{.latency_buckets = "coarse", .dropped_labels = {}};
  const std::string labels =
      "direction=\"outbound\",src_namespace=\"shop\",src_pod=\"web-1\","
      "src_owner_kind=\"Deployment\",src_owner_name=\"web\",src_service_account=\"web\","
      "dst_namespace=\"shop\",dst_pod=\"api-1\",dst_owner_kind=\"Deployment\","
      "dst_owner_name=\"api\",dst_service_account=\"api\",dst_service_namespace=\"shop\","
      "dst_service=\"api\",route=\"GET /items/{id}\",status_code=\"200\",grpc_status=\"\","
      "classification=\"success\"";
  std::vector<std::string> expected;
  for (const char* le :
       {"0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"}) {
    expected.push_back("response_latency_seconds_bucket{" + labels + ",le=\"" + le + "\"} 2");
  }
  std::vector<std::string> buckets;
  for (const std::string& line : f.Lines(format, "response_latency_seconds_bucket")) {
    if (line.starts_with("response_latency_seconds_bucket{" + labels + ",le=")) {
      buckets.push_back(line);
    }
  }
  CHECK(buckets == expected);
  CHECK(f.Lines(format, "response_latency_seconds_bucket").size() == 3 * (11 + 1));
  CHECK(f.Lines(format, "tcp_connection_duration_seconds_bucket").size() == 11 + 1);
}

TEST_CASE("export: series that differ only in dropped pod and Service labels are summed") {
  ExportFixture f;
  const ExportFormat format{.dropped_labels = {"src_pod", "dst_pod", "dst_service"}};
  CHECK(f.Lines(format, "request_total") ==
        std::vector<std::string>{
            "request_total{" + kShopCall + ",route=\"GET /items/{id}\"} 3",
            "request_total{" + kShopCall + ",route=\"PUT /items/{id}\"} 1",
        });
  const std::string get = kShopCall + ",route=\"GET /items/{id}\",status_code=\"";
  CHECK(f.Lines(format, "response_total") ==
        std::vector<std::string>{
            "response_total{" + get + "200\",grpc_status=\"\",classification=\"success\"} 2",
            "response_total{" + get + "404\",grpc_status=\"\",classification=\"success\"} 1",
            "response_total{" + kShopCall +
                ",route=\"PUT /items/{id}\",status_code=\"500\",grpc_status=\"\","
                "classification=\"failure\"} 1",
        });
  // Both connections, one closed and one open, in one series of each family.
  CHECK(f.Lines(format, "tcp_open_total") ==
        std::vector<std::string>{"tcp_open_total{" + kShopCall + "} 2"});
  CHECK(f.Lines(format, "tcp_open_connections") ==
        std::vector<std::string>{"tcp_open_connections{" + kShopCall + "} 1"});
  CHECK(f.Lines(format, "tcp_read_bytes_total") ==
        std::vector<std::string>{"tcp_read_bytes_total{" + kShopCall + "} 10"});
  CHECK(f.Lines(format, "tcp_close_total") ==
        std::vector<std::string>{
            "tcp_close_total{" + kShopCall + ",classification=\"success\"} 1",
            "tcp_close_total{" + kShopCall + ",classification=\"failure\"} 0",
        });
}

TEST_CASE("export: dropping route and statuses sums histograms bucket by bucket") {
  ExportFixture f;
  const ExportFormat format{.latency_buckets = "coarse",
                            .dropped_labels = {"src_pod", "dst_pod", "dst_service", "route",
                                               "status_code", "grpc_status"}};
  const std::string success = kShopCall + ",classification=\"success\"";
  const std::string failure = kShopCall + ",classification=\"failure\"";
  CHECK(f.Lines(format, "request_total") ==
        std::vector<std::string>{"request_total{" + kShopCall + "} 4"});
  CHECK(f.Lines(format, "response_total") ==
        std::vector<std::string>{"response_total{" + failure + "} 1",
                                 "response_total{" + success + "} 3"});
  // Successes: 1.9 ms twice and 30 ms once; the failure: 4 ms. Counts at or below each
  // coarse bound, +Inf last.
  const std::vector<std::string> bounds = {"0.005", "0.01", "0.025", "0.05", "0.1", "0.25",
                                           "0.5",   "1",    "2.5",   "5",    "10",  "+Inf"};
  std::vector<std::string> expected;
  for (const auto& [labels, counts] :
       {std::pair{failure, std::vector<int>{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}},
        {success, std::vector<int>{2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3}}}) {
    for (size_t i = 0; i < bounds.size(); ++i) {
      expected.push_back(fmt::format("response_latency_seconds_bucket{{{},le=\"{}\"}} {}", labels,
                                     bounds[i], counts[i]));
    }
  }
  CHECK(f.Lines(format, "response_latency_seconds_bucket") == expected);
  CHECK(f.Lines(format, "response_latency_seconds_sum") ==
        std::vector<std::string>{
            "response_latency_seconds_sum{" + failure + "} 0.004000000",
            "response_latency_seconds_sum{" + success + "} 0.033800000",
        });
  CHECK(f.Lines(format, "response_first_byte_seconds_count") ==
        std::vector<std::string>{
            "response_first_byte_seconds_count{" + failure + "} 1",
            "response_first_byte_seconds_count{" + success + "} 3",
        });
}

TEST_CASE("export: labels that would break the counting rule or merge workloads are kept") {
  for (const char* label : {"src_pod", "dst_pod", "src_service_account", "dst_service_account",
                            "dst_service", "route", "status_code", "grpc_status"}) {
    CAPTURE(label);
    CHECK(WhyLabelIsKept(label).empty());
  }
  CHECK_THAT(WhyLabelIsKept("direction"), Catch::Contains("count twice"));
  CHECK_THAT(WhyLabelIsKept("classification"), Catch::Contains("success rates"));
  for (const char* label : {"src_namespace", "src_owner_kind", "src_owner_name", "dst_namespace",
                            "dst_owner_kind", "dst_owner_name"}) {
    CAPTURE(label);
    CHECK_THAT(WhyLabelIsKept(label), Catch::Contains("two workloads"));
  }
  CHECK_THAT(WhyLabelIsKept("dst_service_namespace"), Catch::Contains("drop dst_service"));
  CHECK_THAT(WhyLabelIsKept("pod"), Catch::Contains("no series has a label pod"));
  CHECK_THAT(WhyLabelIsKept("le"), Catch::Contains("no series has a label le"));
}

TEST_CASE("export: latency bound sets by name") {
  CHECK(LatencyBoundsNamed("fine")->size() == 28);
  CHECK(LatencyBoundsNamed("coarse")->size() == 11);
  CHECK_FALSE(LatencyBoundsNamed("medium").has_value());
}

}  // namespace
}  // namespace nodemesh::metrics
