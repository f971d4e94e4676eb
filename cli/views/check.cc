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

}  // namespace

CheckReport RenderCheck(std::string_view aggregator, const v1::ListPodsResponse& response,
                        int64_t now_unix_seconds) {
  std::map<std::string, NodePods> by_node;
  NodePods total;
  for (const v1::Pod& pod : response.pods()) {
    NodePods& node = by_node[pod.identity().node()];
    for (NodePods* counts : {&node, &total}) {
      ++counts->running;
      counts->meshed += pod.meshed() ? 1 : 0;
      counts->enrolled += pod.enrolled() ? 1 : 0;
    }
  }
  std::vector<const v1::NodeStatus*> nodes;
  for (const v1::NodeStatus& node : response.nodes()) nodes.push_back(&node);
  std::sort(nodes.begin(), nodes.end(),
            [](const auto* a, const auto* b) { return a->node() < b->node(); });

  CheckReport report;
  using Align = Table::Align;
  Table table({{"NODE", Align::kLeft},
               {"STATE", Align::kLeft},
               {"LAST_REPORT"},
               {"PODS"},
               {"MESHED"},
               {"ENROLLED"}});
  std::set<std::string> healthy_nodes;
  std::vector<std::string> lines = {
      fmt::format("{} aggregator reachable at {}", kPassed, aggregator)};
  for (const v1::NodeStatus* node : nodes) {
    const NodeState state = StateOf(*node);
    const NodePods counts = by_node[node->node()];
    table.AddRow({node->node(), std::string(StateName(state)), LastReport(*node, now_unix_seconds),
                  fmt::format("{}", counts.running), fmt::format("{}", counts.meshed),
                  fmt::format("{}", counts.enrolled)});
    switch (state) {
      case NodeState::kConnected:
        healthy_nodes.insert(node->node());
        lines.push_back(
            fmt::format("{} node {} is connected and reporting", kPassed, node->node()));
        break;
      case NodeState::kStale:
        ++report.problems;
        lines.push_back(fmt::format(
            "{} node {} is connected but has not reported for {}: check its nodemesh-agent's log",
            kFailed, node->node(),
            FormatSeconds(now_unix_seconds - node->last_report_unix_seconds())));
        break;
      case NodeState::kDisconnected:
        ++report.problems;
        lines.push_back(fmt::format(
            "{} node {} is disconnected (last report {}): start its nodemesh-agent with "
            "--aggregator {}",
            kFailed, node->node(), LastReport(*node, now_unix_seconds), aggregator));
        break;
    }
  }
  // An agent reports for its own node only; what it sent about others' pods was refused.
  for (const v1::NodeStatus* node : nodes) {
    if (node->refused_reports() == 0) continue;
    ++report.problems;
    lines.push_back(fmt::format(
        "{} node {}'s agent sent {} report{} naming other nodes' pods, refused: check that "
        "its --node is the node's name (the aggregator's log says which pod)",
        kFailed, node->node(), node->refused_reports(), node->refused_reports() == 1 ? "" : "s"));
  }
  if (nodes.empty()) {
    ++report.problems;
    lines.push_back(fmt::format(
        "{} no node agent has connected: start nodemesh-agent --aggregator {} on every node",
        kFailed, aggregator));
  }
  lines.push_back(fmt::format("{} {} pods running, {} meshed, {} enrolled", kPassed, total.running,
                              total.meshed, total.enrolled));

  // Pods of a node already reported above would only repeat that node's problem.
  std::vector<const v1::Pod*> not_enrolled;
  for (const v1::Pod& pod : response.pods()) {
    if (pod.meshed() && !pod.enrolled() && healthy_nodes.contains(pod.identity().node())) {
      not_enrolled.push_back(&pod);
    }
  }
  std::string not_enrolled_list;
  if (!not_enrolled.empty()) {
    ++report.problems;
    std::sort(not_enrolled.begin(), not_enrolled.end(), [](const auto* a, const auto* b) {
      return std::tie(a->identity().namespace_(), a->identity().pod()) <
             std::tie(b->identity().namespace_(), b->identity().pod());
    });
    lines.push_back(fmt::format("{} {} meshed pod{} not enrolled by {} agent:", kFailed,
                                not_enrolled.size(), not_enrolled.size() == 1 ? " is" : "s are",
                                not_enrolled.size() == 1 ? "its" : "their"));
    // Each with what its agent says it waits for or failed at.
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
    std::string table_text = pods.Render();
    for (size_t begin = 0; begin < table_text.size();) {
      const size_t end = table_text.find('\n', begin);
      const std::string_view row =
          std::string_view(table_text).substr(begin, end == std::string::npos ? end : end - begin);
      if (!row.empty()) not_enrolled_list += fmt::format("    {}\n", row);
      if (end == std::string::npos) break;
      begin = end + 1;
    }
    if (listed < not_enrolled.size()) {
      not_enrolled_list += fmt::format("    and {} more\n", not_enrolled.size() - listed);
    }
  }

  report.text = nodes.empty() ? "" : table.Render() + "\n";
  for (const std::string& line : lines) report.text += line + "\n";
  report.text += not_enrolled_list;
  return report;
}

}  // namespace nodemesh::cli
