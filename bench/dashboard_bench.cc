// The dashboard's call graph at scale: a real nodemesh-aggregator fed by fake agents (one per
// namespace, test/lib/fake_agent.h) with a seeded synthetic call graph (1,000 workloads in 20
// namespaces, 5,000 calls: layered, mostly one level deeper, a few back edges, some failing),
// then asked for the graph view of all the namespaces, as the dashboard asks it.
//
// --dump-view writes that answer in the API's JSON (what the dashboard's page is given) and
// exits: the input of the page's layout measurement.
#include <fmt/format.h>
#include <grpcpp/grpcpp.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "aggregator/test_util.h"
#include "common/httpapi/json.h"
#include "nodemesh/v1/nodemesh.grpc.pb.h"
#include "test/lib/aggregator_process.h"
#include "test/lib/fake_agent.h"

namespace nodemesh {
namespace {

using aggregator::testing::DeltaBuilder;
using aggregator::testing::MakePod;
using testing::AggregatorProcess;
using testing::AggregatorProcessOptions;
using testing::FakeAgent;

struct Shape {
  int workloads = 1000;
  int namespaces = 20;
  int calls = 5000;
  int layers = 8;
  uint64_t seed = 1;
};

struct Workload {
  std::string namespace_name;
  std::string name;
  std::string node;
  int layer = 0;
  v1::Pod pod;
};

struct Call {
  int caller = 0;
  int callee = 0;
  uint64_t responses = 0;
  uint64_t failures = 0;
};

std::string NamespaceName(int index) { return fmt::format("ns{:02}", index); }

// A layered service graph: each call goes one level deeper (80 %) or two, 3 % go one level
// back (cycles); 70 % stay in the caller's namespace. Every 17th call fails one response in
// five; rates vary over two orders of magnitude.
std::pair<std::vector<Workload>, std::vector<Call>> Generate(const Shape& shape) {
  std::mt19937_64 random(shape.seed);
  const auto uniform = [&] { return std::uniform_real_distribution<double>(0, 1)(random); };
  std::vector<Workload> workloads;
  std::vector<std::vector<int>> by_layer(shape.layers);
  for (int i = 0; i < shape.workloads; ++i) {
    Workload workload;
    workload.namespace_name = NamespaceName(i % shape.namespaces);
    workload.name = fmt::format("w{:04}", i);
    workload.node = "node-" + workload.namespace_name;
    workload.layer = static_cast<int>(uniform() * shape.layers);
    workload.pod = MakePod(workload.namespace_name, workload.name + "-0", "Deployment",
                           workload.name, workload.node, true);
    by_layer[workload.layer].push_back(i);
    workloads.push_back(std::move(workload));
  }
  std::vector<Call> calls;
  std::set<std::pair<int, int>> seen;
  while (static_cast<int>(calls.size()) < shape.calls) {
    const int caller = static_cast<int>(uniform() * shape.workloads);
    int layer = workloads[caller].layer + (uniform() < 0.8 ? 1 : 2);
    if (uniform() < 0.03) layer = workloads[caller].layer - 1;
    if (layer < 0 || layer >= shape.layers || by_layer[layer].empty()) continue;
    std::vector<int> candidates;
    if (uniform() >= 0.3) {
      for (int index : by_layer[layer]) {
        if (workloads[index].namespace_name == workloads[caller].namespace_name) {
          candidates.push_back(index);
        }
      }
    }
    if (candidates.empty()) candidates = by_layer[layer];
    const int callee = candidates[static_cast<size_t>(uniform() * candidates.size())];
    if (callee == caller || !seen.insert({caller, callee}).second) continue;
    const uint64_t responses = 6 + 6 * (calls.size() % 100);
    calls.push_back(Call{caller, callee, responses, calls.size() % 17 == 0 ? responses / 5 : 0});
  }
  return {std::move(workloads), std::move(calls)};
}

v1::ViewRequest GraphRequest(const Shape& shape) {
  v1::ViewRequest request;
  request.set_kind(v1::ViewRequest::GRAPH);
  for (int i = 0; i < shape.namespaces; ++i) request.add_namespaces(NamespaceName(i));
  request.set_type("deployment");
  request.set_window_seconds(60);
  request.mutable_filter()->set_draw_anyway(true);
  return request;
}

int Run(const Shape& shape, const std::string& dump_view) {
  AggregatorProcess aggregator({.binary = NODEMESH_AGGREGATOR_BINARY});
  auto [workloads, calls] = Generate(shape);
  std::map<std::string, std::vector<v1::Pod>> pods_by_node;
  for (const Workload& workload : workloads) pods_by_node[workload.node].push_back(workload.pod);
  std::vector<std::unique_ptr<FakeAgent>> agents;
  for (const auto& [node, pods] : pods_by_node) {
    agents.push_back(std::make_unique<FakeAgent>(aggregator.address(), node, pods));
  }
  for (const auto& agent : agents) {
    if (!aggregator.WaitForNode(agent->node())) {
      std::fprintf(stderr, "the aggregator did not take the hello of %s:\n%s\n",
                   agent->node().c_str(), aggregator.output().c_str());
      return 1;
    }
  }
  // Each node reports its callers' side, for the current second: one the aggregator's history
  // holds (it begins when the aggregator started), in its windows once the second is over.
  const int64_t second = std::chrono::duration_cast<std::chrono::seconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  std::map<std::string, DeltaBuilder> deltas;
  for (const Call& call : calls) {
    const Workload& caller = workloads[call.caller];
    const Workload& callee = workloads[call.callee];
    DeltaBuilder& delta = deltas.try_emplace(caller.node, second).first->second;
    delta.Responses(caller.pod.identity(), callee.pod.identity(), v1::OUTBOUND, "/api",
                    call.responses - call.failures, 2'000'000 + 1000 * call.callee);
    if (call.failures > 0) {
      delta.Responses(caller.pod.identity(), callee.pod.identity(), v1::OUTBOUND, "/api",
                      call.failures, 9'000'000, 503, true);
    }
  }
  for (const auto& agent : agents) {
    v1::AgentMessage message;
    *message.mutable_metrics() = deltas.at(agent->node()).delta();
    agent->Send(message);
  }
  // The deltas are filed on the aggregator's threads: ask until the graph is whole.
  auto api = v1::Api::NewStub(
      grpc::CreateChannel(aggregator.address(), grpc::InsecureChannelCredentials()));
  v1::ViewResponse view;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  for (;;) {
    grpc::ClientContext context;
    const grpc::Status status = api->View(&context, GraphRequest(shape), &view);
    if (!status.ok()) {
      std::fprintf(stderr, "View failed: %s\n", status.error_message().c_str());
      return 1;
    }
    if (view.edges().edges_size() == shape.calls) break;
    if (std::chrono::steady_clock::now() > deadline) {
      std::fprintf(stderr, "the aggregator shows %d of %d calls after 30 s:\n%s\n",
                   view.edges().edges_size(), shape.calls, aggregator.output().c_str());
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::printf("graph: %d workloads, %d calls, %u failing\n", view.stats().rows_size(),
              view.edges().edges_size(), view.size().failing_edges());
  if (!dump_view.empty()) {
    std::ofstream(dump_view) << httpapi::MessageJson(view);
    std::printf("view written to %s\n", dump_view.c_str());
  }
  return 0;
}

}  // namespace
}  // namespace nodemesh

int main(int argc, char** argv) {
  CLI::App app{"The dashboard's call graph of a synthetic 1,000-workload cluster"};
  nodemesh::Shape shape;
  std::string dump_view;
  app.add_option("--seed", shape.seed, "seed of the synthetic graph");
  app.add_option("--dump-view", dump_view,
                 "write the aggregator's graph view (the API's JSON) to this file");
  CLI11_PARSE(app, argc, argv);
  return nodemesh::Run(shape, dump_view);
}
