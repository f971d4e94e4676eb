#include "test/lib/two_node_cluster.h"

#include <fmt/format.h>

#include <stdexcept>
#include <utility>

namespace nodemesh::testing {

TwoNodeCluster::TwoNodeCluster(const TwoNodeClusterOptions& options)
    : root_required(options.tier),
      network(options.network),
      node_a(network, options.node_a),
      node_b(network, options.node_b) {}

TwoNodeCluster::~TwoNodeCluster() {
  StopAgents();
  aggregator_.reset();
}

AggregatorProcess& TwoNodeCluster::StartAggregator(AggregatorProcessOptions options) {
  aggregator_.reset();
  aggregator_.emplace(std::move(options));
  return *aggregator_;
}

AggregatorProcess& TwoNodeCluster::aggregator() {
  if (!aggregator_) throw std::logic_error("TwoNodeCluster: no aggregator started");
  return *aggregator_;
}

AgentProcess& TwoNodeCluster::StartAgent(TestNode& node, AgentProcessOptions options) {
  if (&node != &node_a && &node != &node_b) {
    throw std::logic_error("TwoNodeCluster::StartAgent: not a node of this cluster");
  }
  std::unique_ptr<AgentProcess>& agent = &node == &node_a ? agent_a : agent_b;
  agent.reset();
  int connections = 0;
  if (aggregator_) {
    options.extra_args.insert(options.extra_args.end(), {"--aggregator", aggregator_->address()});
    connections = aggregator_->Connections(node.name());
  }
  agent = std::make_unique<AgentProcess>(node, std::move(options));
  if (aggregator_ &&
      !aggregator_->WaitForNode(node.name(), std::chrono::seconds(15), connections + 1)) {
    throw std::runtime_error(fmt::format(
        "the agent of {} did not connect to the aggregator at {}:\naggregator:\n{}\nagent:\n{}",
        node.name(), aggregator_->address(), Tail(aggregator_->output()), Tail(agent->output())));
  }
  return *agent;
}

void TwoNodeCluster::StartAgents(const AgentProcessOptions& options) {
  StartAgent(node_a, options);
  StartAgent(node_b, options);
}

void TwoNodeCluster::StopAgents() {
  agent_a.reset();
  agent_b.reset();
}

}  // namespace nodemesh::testing
