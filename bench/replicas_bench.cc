// What a second aggregator replica costs, in process and through the real gRPC API: the
// agent's side (the bytes of one node's delta each second, which every extra replica is sent
// again, and the time to serialize it) and a restarted replica's catch-up (the seconds, bytes
// and wall time of an hour of history taken from its peer, AgentService.Backfill). Synthetic
// agents feed the first replica an hour under a test clock; the second starts at its end.
//
//   replicas_bench [--nodes 10] [--pods 20] [--seconds 3600]
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "aggregator/server.h"
#include "common/base/log.h"
#include "test/lib/fake_agent.h"

namespace {

using namespace std::chrono_literals;
using nodemesh::aggregator::AggregatorServer;
using nodemesh::aggregator::ServerOptions;

constexpr int64_t kEnd = 1'700'000'000;

// One node's delta for `second`: each of its pods called by a pod of the next node (an
// inbound response series with a latency histogram of a few buckets) and its TCP series.
nodemesh::v1::MetricsDelta NodeDelta(int node, int nodes, int pods, int64_t second) {
  nodemesh::v1::MetricsDelta delta;
  delta.set_unix_seconds(second);
  delta.add_routes("GET /api/items/{id}");
  for (int pod = 0; pod < pods; ++pod) {
    for (const int of : {node, (node + 1) % nodes}) {
      nodemesh::v1::Identity& identity = *delta.add_identities();
      identity.set_namespace_("bench");
      identity.set_pod(fmt::format("app-{}-{}", of, pod));
      identity.set_owner_kind("Deployment");
      identity.set_owner_name(fmt::format("app-{}", pod));
      identity.set_service_account("app");
      identity.set_node(fmt::format("node-{}", of));
    }
    const uint32_t server = static_cast<uint32_t>(2 * pod);
    nodemesh::v1::ResponseSeries& series = *delta.add_responses();
    series.mutable_traffic()->set_source(server + 1);
    series.mutable_traffic()->set_destination(server);
    series.mutable_traffic()->set_direction(nodemesh::v1::INBOUND);
    series.set_status_code(200);
    series.set_grpc_status(-1);
    series.set_responses(20);
    for (uint32_t bucket : {180u, 190u, 200u, 210u}) {
      series.mutable_latency()->add_buckets(bucket + static_cast<uint32_t>(second % 5));
      series.mutable_latency()->add_counts(5);
    }
    nodemesh::v1::TcpSeries& tcp = *delta.add_tcp();
    *tcp.mutable_traffic() = series.traffic();
    tcp.set_open_now(2);
    tcp.set_read_bytes(4000);
    tcp.set_write_bytes(12000);
  }
  return delta;
}

}  // namespace

int main(int argc, char** argv) {
  int nodes = 10;
  int pods = 20;
  int64_t seconds = 3600;
  CLI::App app{"The cost of aggregator replicas: the agent's, and a restarted one's catch-up"};
  app.add_option("--nodes", nodes)->check(CLI::Range(2, 1000));
  app.add_option("--pods", pods, "pods per node")->check(CLI::Range(1, 500));
  app.add_option("--seconds", seconds, "history the first replica holds")
      ->check(CLI::Range(10, 3600));
  CLI11_PARSE(app, argc, argv);
  nodemesh::SetLogLevel(nodemesh::LogLevel::kWarning);

  // The agent's side: one node's delta, as every replica is sent it each second.
  const nodemesh::v1::MetricsDelta sample = NodeDelta(0, nodes, pods, kEnd);
  constexpr int kRounds = 2000;
  std::string wire;
  const auto serialize_start = std::chrono::steady_clock::now();
  for (int i = 0; i < kRounds; ++i) sample.SerializeToString(&wire);
  const double serialize_us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - serialize_start)
          .count() /
      kRounds;
  fmt::print(
      "agent, per extra replica, a node of {} pods: {} bytes/s upstream, {:.1f} us/s of "
      "serializing; a replica gone for the 300 s kept: {:.0f} KiB held for it\n",
      pods, wire.size(), serialize_us, 300.0 * double(wire.size()) / 1024);

  // The first replica, holding `seconds` of `nodes` agents.
  std::atomic<int64_t> now{kEnd - seconds};
  const auto clock = [&] {
    return std::chrono::system_clock::time_point(std::chrono::seconds(now));
  };
  ServerOptions first_options;
  first_options.listen_address = "127.0.0.1:0";
  first_options.clock = clock;
  first_options.housekeeping_interval = 0ms;
  AggregatorServer first(first_options);
  const absl::StatusOr<int> first_port = first.Start();
  if (!first_port.ok()) return 1;
  const std::string first_address = fmt::format("127.0.0.1:{}", *first_port);
  now = kEnd;
  {
    std::vector<std::unique_ptr<nodemesh::testing::FakeAgent>> agents;
    for (int node = 0; node < nodes; ++node) {
      agents.push_back(std::make_unique<nodemesh::testing::FakeAgent>(
          first_address, fmt::format("node-{}", node), std::vector<nodemesh::v1::Pod>{}));
    }
    for (int64_t second = kEnd - seconds; second < kEnd; ++second) {
      for (int node = 0; node < nodes; ++node) {
        nodemesh::v1::AgentMessage message;
        *message.mutable_metrics() = NodeDelta(node, nodes, pods, second);
        agents[static_cast<size_t>(node)]->Send(message);
      }
    }
    const uint64_t expected = static_cast<uint64_t>(seconds) * static_cast<uint64_t>(nodes);
    while (first.store().stats().deltas < expected) std::this_thread::sleep_for(10ms);
  }
  const auto held = first.store().stats();

  // The second starts at the end of that history and takes it from the first.
  ServerOptions second_options = first_options;
  second_options.backfill.peers = first_address;
  second_options.backfill.grace = 0ms;
  const auto started = std::chrono::steady_clock::now();
  AggregatorServer second(second_options);
  if (!second.Start().ok()) return 1;
  while (second.catching_up()) std::this_thread::sleep_for(1ms);
  const double took_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  size_t bytes = 0;
  for (int64_t s = kEnd - seconds; s < kEnd; ++s) {
    if (const auto delta = first.store().ExportSecond(s)) bytes += delta->ByteSizeLong();
  }
  fmt::print(
      "catch-up of {} s of {} nodes x {} pods ({} series, {} MiB in the peer's store): "
      "{:.2f} s, {:.1f} MiB sent ({:.0f} KiB a second of history); windows from {} s "
      "before the start\n",
      seconds, nodes, pods, held.series, held.memory_bytes >> 20, took_s, double(bytes) / (1 << 20),
      double(bytes) / 1024 / double(seconds), kEnd - second.history_start_second());
  second.Shutdown();
  first.Shutdown();
  return 0;
}
