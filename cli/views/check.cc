// meshctl check: is the aggregator there, do the nodes report, are the meshed pods
// intercepted.
#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <set>
#include <tuple>

#include "cli/views/format.h"
#include "cli/views/views.h"
#include "common/wire/convert.h"

namespace nodemesh::cli {
namespace {

constexpr std::string_view kPassed = "√";
constexpr std::string_view kFailed = "×";
// Enough names to find them in the agent's log; the count says how many there are.
constexpr size_t kMaxListedPods = 5;

struct NodePods {
  int running = 0;
  int meshed = 0;
  int enrolled = 0;
};

enum class NodeState { kConnected, kStale, kDisconnected };

// As the aggregator judged it (NodeStatus.stale), not by a threshold of our own.
NodeState StateOf(const v1::NodeStatus& node) {
  if (!node.connected()) return NodeState::kDisconnected;
  return node.stale() ? NodeState::kStale : NodeState::kConnected;
}

std::string_view StateName(NodeState state) {
  switch (state) {
    case NodeState::kConnected:
      return "connected";
    case NodeState::kStale:
      return "stale";
    case NodeState::kDisconnected:
      return "disconnected";
  }
  return "";
}

std::string LastReport(const v1::NodeStatus& node, int64_t now) {
  if (node.last_report_unix_seconds() <= 0) return "never";
  return FormatSeconds(now - node.last_report_unix_seconds()) + " ago";
}

std::vector<const v1::NodeStatus*> SortedNodes(const v1::ListPodsResponse& response) {
  std::vector<const v1::NodeStatus*> nodes;
  for (const v1::NodeStatus& node : response.nodes()) nodes.push_back(&node);
  std::sort(nodes.begin(), nodes.end(),
            [](const auto* a, const auto* b) { return a->node() < b->node(); });
  return nodes;
}

struct PodCounts {
  std::map<std::string, NodePods> by_node;
  NodePods total;
};

PodCounts CountPods(const v1::ListPodsResponse& response) {
  PodCounts counts;
  for (const v1::Pod& pod : response.pods()) {
    NodePods& node = counts.by_node[pod.identity().node()];
    for (NodePods* of : {&node, &counts.total}) {
      ++of->running;
      of->meshed += pod.meshed() ? 1 : 0;
      of->enrolled += pod.enrolled() ? 1 : 0;
    }
  }
  return counts;
}

// The checks' lines in the order they are made, each passed (√) or failed (×).
struct Findings {
  std::vector<std::string> lines;
  int problems = 0;

  void Pass(const std::string& line) { lines.push_back(fmt::format("{} {}", kPassed, line)); }
  void Fail(const std::string& line) {
    ++problems;
    lines.push_back(fmt::format("{} {}", kFailed, line));
  }
};

// A row per node: its state and its pods.
std::string NodeTable(const std::vector<const v1::NodeStatus*>& nodes, const PodCounts& counts,
                      int64_t now) {
  Table table({{"NODE", Align::kLeft},
               {"STATE", Align::kLeft},
               {"LAST_REPORT"},
               {"PODS"},
               {"MESHED"},
               {"ENROLLED"}});
  for (const v1::NodeStatus* node : nodes) {
    const auto it = counts.by_node.find(node->node());
    const NodePods pods = it == counts.by_node.end() ? NodePods() : it->second;
    table.AddRow({node->node(), std::string(StateName(StateOf(*node))), LastReport(*node, now),
                  fmt::format("{}", pods.running), fmt::format("{}", pods.meshed),
                  fmt::format("{}", pods.enrolled)});
  }
  return table.Render();
}

// Each node connected and reporting; returns the names of those that are.
std::set<std::string> CheckNodes(const std::vector<const v1::NodeStatus*>& nodes,
                                 std::string_view aggregator, int64_t now, Findings& findings) {
  std::set<std::string> healthy_nodes;
  for (const v1::NodeStatus* node : nodes) {
    switch (StateOf(*node)) {
      case NodeState::kConnected:
        healthy_nodes.insert(node->node());
        findings.Pass(fmt::format("node {} is connected and reporting", node->node()));
        break;
      case NodeState::kStale:
        findings.Fail(fmt::format(
            "node {} is connected but has not reported for {}: check its nodemesh-agent's log",
            node->node(), FormatSeconds(now - node->last_report_unix_seconds())));
        break;
      case NodeState::kDisconnected:
        findings.Fail(
            fmt::format("node {} is disconnected (last report {}): start its nodemesh-agent with "
                        "--aggregator {}",
                        node->node(), LastReport(*node, now), aggregator));
        break;
    }
  }
  return healthy_nodes;
}

// An agent reports for its own node only; what it sent about others' pods was refused.
void CheckRefusedReports(const std::vector<const v1::NodeStatus*>& nodes, Findings& findings) {
  for (const v1::NodeStatus* node : nodes) {
    if (node->refused_reports() == 0) continue;
    findings.Fail(fmt::format(
        "node {}'s agent sent {} report{} naming other nodes' pods, refused: check that "
        "its --node is the node's name (the aggregator's log says which pod)",
        node->node(), node->refused_reports(), node->refused_reports() == 1 ? "" : "s"));
  }
}

// `table_text`'s rows, indented under the line that introduces them.
std::string Indented(const std::string& table_text) {
  std::string text;
  for (size_t begin = 0; begin < table_text.size();) {
    const size_t end = table_text.find('\n', begin);
    const std::string_view row =
        std::string_view(table_text).substr(begin, end == std::string::npos ? end : end - begin);
    if (!row.empty()) text += fmt::format("    {}\n", row);
    if (end == std::string::npos) break;
    begin = end + 1;
  }
  return text;
}

// Meshed pods their agent has not enrolled, on the healthy nodes (those of a node reported
// above would only repeat that node's problem). Returns the list of them, each with what its
// agent says it waits for or failed at, to follow the findings.
std::string CheckEnrolment(const v1::ListPodsResponse& response,
                           const std::set<std::string>& healthy_nodes, Findings& findings) {
  std::vector<const v1::Pod*> not_enrolled;
  for (const v1::Pod& pod : response.pods()) {
    if (pod.meshed() && !pod.enrolled() && healthy_nodes.contains(pod.identity().node())) {
      not_enrolled.push_back(&pod);
    }
  }
  if (not_enrolled.empty()) return "";
  std::sort(not_enrolled.begin(), not_enrolled.end(), [](const auto* a, const auto* b) {
    return std::tie(a->identity().namespace_(), a->identity().pod()) <
           std::tie(b->identity().namespace_(), b->identity().pod());
  });
  findings.Fail(fmt::format("{} meshed pod{} not enrolled by {} agent:", not_enrolled.size(),
                            not_enrolled.size() == 1 ? " is" : "s are",
                            not_enrolled.size() == 1 ? "its" : "their"));
  Table pods({{"POD", Align::kLeft},
              {"NODE", Align::kLeft},
              {"STATE", Align::kLeft},
              {"WHY", Align::kLeft}});
  const size_t listed = std::min(not_enrolled.size(), kMaxListedPods);
  for (size_t i = 0; i < listed; ++i) {
    const v1::Pod& pod = *not_enrolled[i];
    const bool known = pod.state() != v1::POD_STATE_UNSPECIFIED;
    pods.AddRow({fmt::format("{}/{}", pod.identity().namespace_(), pod.identity().pod()),
                 pod.identity().node(),
                 known ? std::string(wire::PodStateName(pod.state())) : "not enrolled",
                 pod.state_reason().empty() ? "see the nodemesh-agent log on its node"
                                            : pod.state_reason()});
  }
  std::string text = Indented(pods.Render());
  if (listed < not_enrolled.size()) {
    text += fmt::format("    and {} more\n", not_enrolled.size() - listed);
  }
  return text;
}

}  // namespace

CheckReport RenderCheck(std::string_view aggregator, const v1::ListPodsResponse& response,
                        int64_t now_unix_seconds) {
  const std::vector<const v1::NodeStatus*> nodes = SortedNodes(response);
  const PodCounts counts = CountPods(response);
  Findings findings;
  findings.Pass(fmt::format("aggregator reachable at {}", aggregator));
  const std::set<std::string> healthy_nodes =
      CheckNodes(nodes, aggregator, now_unix_seconds, findings);
  CheckRefusedReports(nodes, findings);
  if (nodes.empty()) {
    findings.Fail(fmt::format(
        "no node agent has connected: start nodemesh-agent --aggregator {} on every node",
        aggregator));
  }
  findings.Pass(fmt::format("{} pods running, {} meshed, {} enrolled", counts.total.running,
                            counts.total.meshed, counts.total.enrolled));
  const std::string not_enrolled = CheckEnrolment(response, healthy_nodes, findings);

  CheckReport report;
  report.problems = findings.problems;
  report.text = nodes.empty() ? "" : NodeTable(nodes, counts, now_unix_seconds) + "\n";
  for (const std::string& line : findings.lines) report.text += line + "\n";
  report.text += not_enrolled;
  return report;
}

}  // namespace nodemesh::cli
