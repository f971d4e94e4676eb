// meshctl edges: who calls whom, with the service accounts on both ends.
#include <fmt/format.h>

#include <algorithm>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "cli/views/common.h"
#include "cli/views/format.h"
#include "cli/views/views.h"

namespace nodemesh::cli {
namespace {

using views::Json;

std::vector<const v1::Edge*> SortedEdges(const v1::EdgesResponse& response) {
  std::vector<const v1::Edge*> edges;
  for (const v1::Edge& edge : response.edges()) edges.push_back(&edge);
  // Grouped by caller; its callees by name, wherever they are (an address has no namespace).
  const auto key = [](const v1::Edge* edge) {
    return std::tie(edge->source().namespace_(), edge->source().name(), edge->destination().name(),
                    edge->destination().namespace_());
  };
  std::sort(edges.begin(), edges.end(),
            [&key](const v1::Edge* a, const v1::Edge* b) { return key(a) < key(b); });
  return edges;
}

Json EndJson(const v1::Resource& resource, const std::string& service_account) {
  Json json = views::ResourceJson(resource);
  json["service_account"] = service_account;
  return json;
}

std::string EdgesJson(const v1::EdgesResponse& response) {
  Json edges = Json::array();
  for (const v1::Edge* edge : SortedEdges(response)) {
    Json json;
    json["source"] = EndJson(edge->source(), edge->source_service_account());
    json["destination"] = EndJson(edge->destination(), edge->destination_service_account());
    json["requests"] = edge->requests();
    json["success_rate"] = edge->requests() > 0 ? Json(edge->success_rate()) : Json(nullptr);
    json["rps"] = edge->rps();
    json["latency_ms"] = views::LatencyJson(edge->latency(), edge->requests() > 0);
    json["tcp_conn"] = edge->tcp_open_connections();
    edges.push_back(std::move(json));
  }
  Json document;
  document["window_seconds"] = response.window_seconds();
  document["edges"] = std::move(edges);
  document["stale_nodes"] = views::NodesJson(response.stale_nodes());
  // Which source answered; absent from an aggregator that does not say.
  if (const std::string source = SourceName(response.source()); !source.empty()) {
    document["source"] = source;
  }
  return views::Document(document);
}

}  // namespace

std::string RenderWithheldGraph(const v1::GraphSize& size) {
  std::string note = fmt::format(
      "note: the graph is withheld ({} nodes, {} edges: more than the aggregator draws at once).\n"
      "Narrow it with a filter, or draw it anyway with --all:\n",
      size.nodes(), size.edges());
  note += fmt::format("  --failing keeps {} edges\n", size.failing_edges());
  // The namespaces holding most nodes first: hiding them helps most.
  std::vector<std::pair<std::string, uint32_t>> namespaces(size.nodes_by_namespace().begin(),
                                                           size.nodes_by_namespace().end());
  std::sort(namespaces.begin(), namespaces.end(), [](const auto& a, const auto& b) {
    return std::tie(b.second, a.first) < std::tie(a.second, b.first);
  });
  for (const auto& [name, nodes] : namespaces) {
    note += fmt::format("  --hide-namespace {} hides {} nodes\n", name, nodes);
  }
  note += "  --around TYPE/NAME keeps one resource and its neighbours\n";
  return note;
}

std::string RenderEdges(const v1::EdgesResponse& response, OutputFormat format) {
  if (format == OutputFormat::kJson) return EdgesJson(response);
  Table table({{"SRC", Align::kLeft},
               {"DST", Align::kLeft},
               {"SRC_NS", Align::kLeft},
               {"DST_NS", Align::kLeft},
               {"SRC_SA", Align::kLeft},
               {"DST_SA", Align::kLeft},
               {"RPS"},
               {"SUCCESS"},
               {"LATENCY_P99"}});
  for (const v1::Edge* edge : SortedEdges(response)) {
    const bool has_responses = edge->requests() > 0;
    table.AddRow({views::OrDash(edge->source().name()), views::OrDash(edge->destination().name()),
                  views::OrDash(edge->source().namespace_()),
                  views::OrDash(edge->destination().namespace_()),
                  views::OrDash(edge->source_service_account()),
                  views::OrDash(edge->destination_service_account()), FormatRps(edge->rps()),
                  has_responses ? FormatSuccessRate(edge->success_rate()) : "-",
                  has_responses ? FormatLatency(edge->latency().p99_ns()) : "-"});
  }
  return table.Render();
}

}  // namespace nodemesh::cli
