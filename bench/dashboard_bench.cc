// The dashboard's call graph at scale: a real nodemesh-aggregator fed by fake agents (one per
// namespace, test/lib/fake_agent.h) with a seeded synthetic call graph (1,000 workloads in 20
// namespaces, 5,000 calls: layered, mostly one level deeper, a few back edges, some failing),
// the real `meshctl dashboard --no-browser`, and its page in headless Chromium
// (test/lib/browser.py) opening the graph of the 20 namespaces, drawn anyway. Prints the
// page's layout and render times (svg[data-layout-ms][data-render-ms]); fails when a node or
// a call is not drawn, when the page's first refresh cost the aggregator more than one graph
// view query (its debug log names each view it answered), or past the time budget.
//
// --dump-view writes the aggregator's answer in the API's JSON (what the page is given)
// instead, and exits.
#include <fmt/format.h>
#include <grpcpp/grpcpp.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "aggregator/test_util.h"
#include "common/httpapi/json.h"
#include "nodemesh/v1/nodemesh.grpc.pb.h"
#include "test/lib/aggregator_process.h"
#include "test/lib/browser.h"
#include "test/lib/dashboard_process.h"
#include "test/lib/fake_agent.h"

namespace nodemesh {
namespace {

using aggregator::testing::DeltaBuilder;
using aggregator::testing::MakePod;
using testing::AggregatorProcess;
using testing::DashboardProcess;
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

struct Options {
  Shape shape;
  std::string dump_view;
  std::string screenshot;
  int64_t budget_ms = 8000;
};

// The page's first drawing of the graph, through meshctl dashboard, as the browser saw it.
struct Drawing {
  std::string state;     // body[data-state]
  std::string drawn_at;  // when it was ready, as an ISO 8601 UTC time with milliseconds
  int64_t layout_ms = 0;
  int64_t render_ms = 0;
  int64_t nodes = 0;
  int64_t edges = 0;
};

Drawing Draw(const std::string& address, const Options& options) {
  std::string namespaces;
  for (int i = 0; i < options.shape.namespaces; ++i) {
    namespaces += (i ? "," : "") + NamespaceName(i);
  }
  nlohmann::json steps = nlohmann::json::array({
      {{"open", address + "#/graph?ns=" + namespaces + "&all=1"}},
      {{"wait", "['ready', 'error', 'withheld'].includes(document.body.dataset.state)"},
       {"timeout", 120}},
      {{"eval",
        "(() => { const svg = document.querySelector('svg[data-layout-ms]'); return {"
        "state: document.body.dataset.state, drawnAt: new Date().toISOString(), "
        "layoutMs: svg ? Number(svg.dataset.layoutMs) : 0, "
        "renderMs: svg ? Number(svg.dataset.renderMs) : 0, "
        "nodes: document.querySelectorAll('g[data-workload]').length, "
        "edges: document.querySelectorAll('path[data-edge]').length}; })()"}},
  });
  if (!options.screenshot.empty()) steps.push_back({{"screenshot", options.screenshot}});
  const testing::BrowserRun run = testing::RunBrowser(steps, std::chrono::seconds(240));
  if (!run.ok) throw std::runtime_error("the page failed:\n" + run.output);
  const nlohmann::json& value = run.Value(2);
  return Drawing{value.at("state"),    value.at("drawnAt"), value.at("layoutMs"),
                 value.at("renderMs"), value.at("nodes"),   value.at("edges")};
}

// The graph views the aggregator logged answering, up to `until` when given (its log lines
// start with the time, in the format of `until`). The page asks for other views besides (the
// namespaces, for its picker), once.
int GraphViewsAnswered(const std::string& log, const std::optional<std::string>& until = {}) {
  int views = 0;
  std::istringstream lines(log);
  for (std::string line; std::getline(lines, line);) {
    if (line.find(" view GRAPH ") != std::string::npos &&
        line.find(" answered ") != std::string::npos &&
        (!until || line.substr(0, until->size()) <= *until)) {
      ++views;
    }
  }
  return views;
}

int Run(const Options& options) {
  const Shape& shape = options.shape;
  // At debug level it logs each view it answers.
  AggregatorProcess aggregator(
      {.binary = NODEMESH_AGGREGATOR_BINARY, .extra_args = {"--log-level", "debug"}});
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
  if (!options.dump_view.empty()) {
    std::ofstream(options.dump_view) << httpapi::MessageJson(view);
    std::printf("view written to %s\n", options.dump_view.c_str());
    return 0;
  }

  const DashboardProcess dashboard(
      {.binary = NODEMESH_MESHCTL_BINARY, .args = {"--aggregator", aggregator.address()}});
  const int views_before = GraphViewsAnswered(aggregator.output());
  const Drawing drawing = Draw(dashboard.origin() + "/?token=" + dashboard.token(), options);
  const int views = GraphViewsAnswered(aggregator.output(), drawing.drawn_at) - views_before;
  const int64_t total_ms = drawing.layout_ms + drawing.render_ms;
  std::printf(
      "page: %s, %lld workloads and %lld calls drawn\n"
      "layout %lld ms + render %lld ms = %lld ms (aim 2000 ms, budget %lld ms)\n"
      "graph view queries the aggregator answered for it: %d\n",
      drawing.state.c_str(), static_cast<long long>(drawing.nodes),
      static_cast<long long>(drawing.edges), static_cast<long long>(drawing.layout_ms),
      static_cast<long long>(drawing.render_ms), static_cast<long long>(total_ms),
      static_cast<long long>(options.budget_ms), views);
  bool ok = true;
  const auto fail = [&](const std::string& what) {
    std::fprintf(stderr, "FAIL %s\n", what.c_str());
    ok = false;
  };
  if (drawing.state != "ready") fail("the page is " + drawing.state + ", not ready");
  if (drawing.nodes != view.stats().rows_size() || drawing.edges != shape.calls) {
    fail(fmt::format("drawn {} of {} workloads and {} of {} calls", drawing.nodes,
                     view.stats().rows_size(), drawing.edges, shape.calls));
  }
  if (views != 1) fail(fmt::format("{} graph view queries for one drawing, not 1", views));
  if (total_ms > options.budget_ms) {
    fail(fmt::format("{} ms is past the budget of {} ms", total_ms, options.budget_ms));
  }
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace nodemesh

int main(int argc, char** argv) {
  CLI::App app{"The dashboard's call graph of a synthetic 1,000-workload cluster"};
  nodemesh::Options options;
  app.add_option("--seed", options.shape.seed, "seed of the synthetic graph");
  app.add_option("--dump-view", options.dump_view,
                 "write the aggregator's graph view (the API's JSON) to this file and exit");
  app.add_option("--screenshot", options.screenshot, "a PNG of the drawn graph to this file");
  app.add_option("--budget-ms", options.budget_ms,
                 "fail when layout and render take longer (the aim is 2000)");
  CLI11_PARSE(app, argc, argv);
  try {
    return nodemesh::Run(options);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "FAIL %s\n", error.what());
    return 1;
  }
}
