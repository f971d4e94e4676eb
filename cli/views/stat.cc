// meshctl stat: Linkerd's columns, with exact latencies.
#include <fmt/format.h>

#include <algorithm>
#include <tuple>

#include "cli/views/common.h"
#include "cli/views/format.h"
#include "cli/views/views.h"
#include "common/resource/resource.h"

namespace nodemesh::cli {
namespace {

using views::Json;

std::vector<const v1::StatRow*> SortedRows(const v1::StatSummaryResponse& response) {
  std::vector<const v1::StatRow*> rows;
  for (const v1::StatRow& row : response.rows()) rows.push_back(&row);
  std::sort(rows.begin(), rows.end(), [](const v1::StatRow* a, const v1::StatRow* b) {
    return std::tie(a->resource().namespace_(), a->resource().name(), a->resource().type()) <
           std::tie(b->resource().namespace_(), b->resource().name(), b->resource().type());
  });
  return rows;
}

bool HasResponses(const v1::StatRow& row) { return row.has_traffic() && row.requests() > 0; }

std::string StatJson(const v1::StatSummaryResponse& response) {
  Json rows = Json::array();
  for (const v1::StatRow* row : SortedRows(response)) {
    Json json;
    json["namespace"] = row->resource().namespace_();
    json["type"] = row->resource().type();
    json["name"] = row->resource().name();
    json["meshed"] = row->meshed_pods();
    json["running"] = row->running_pods();
    json["requests"] = row->requests();
    json["successes"] = row->successes();
    json["success_rate"] = HasResponses(*row) ? Json(row->success_rate()) : Json(nullptr);
    json["rps"] = row->rps();
    json["latency_ms"] = views::LatencyJson(row->latency(), HasResponses(*row));
    json["tcp_conn"] = row->tcp_open_connections();
    json["read_bytes_per_sec"] = row->read_bytes_per_second();
    json["write_bytes_per_sec"] = row->write_bytes_per_second();
    rows.push_back(std::move(json));
  }
  Json document;
  document["window_seconds"] = response.window_seconds();
  document["rows"] = std::move(rows);
  document["stale_nodes"] = views::NodesJson(response.stale_nodes());
  // Which source answered; absent from an aggregator that does not say.
  if (const std::string source = SourceName(response.source()); !source.empty()) {
    document["source"] = source;
  }
  return views::Document(document);
}

}  // namespace

std::string RenderStat(const v1::StatSummaryResponse& response, OutputFormat format,
                       bool namespace_column) {
  if (format == OutputFormat::kJson) return StatJson(response);
  std::vector<Table::Column> columns;
  if (namespace_column) columns.push_back({"NAMESPACE", Align::kLeft});
  columns.insert(columns.end(), {{"NAME", Align::kLeft},
                                 {"MESHED"},
                                 {"SUCCESS"},
                                 {"RPS"},
                                 {"LATENCY_P50"},
                                 {"LATENCY_P95"},
                                 {"LATENCY_P99"},
                                 {"TCP_CONN"}});
  const bool wide = format == OutputFormat::kWide;
  if (wide) columns.insert(columns.end(), {{"READ_BYTES/SEC"}, {"WRITE_BYTES/SEC"}});
  Table table(std::move(columns));
  for (const v1::StatRow* row : SortedRows(response)) {
    std::vector<std::string> cells;
    if (namespace_column) cells.push_back(row->resource().namespace_());
    cells.push_back(row->resource().name());
    // No pod belongs to a Service by owner: nothing to count.
    cells.push_back(row->resource().type() == kServiceTypeName
                        ? std::string("-")
                        : fmt::format("{}/{}", row->meshed_pods(), row->running_pods()));
    cells.push_back(HasResponses(*row) ? FormatSuccessRate(row->success_rate()) : "-");
    cells.push_back(row->has_traffic() ? FormatRps(row->rps()) : "-");
    for (std::string& cell : views::LatencyCells(row->latency(), HasResponses(*row))) {
      cells.push_back(std::move(cell));
    }
    // Long-lived connections can stay open through a window with no traffic.
    const bool has_connections = row->has_traffic() || row->tcp_open_connections() > 0;
    cells.push_back(has_connections ? fmt::format("{}", row->tcp_open_connections()) : "-");
    if (wide) {
      cells.push_back(row->has_traffic() ? FormatBytesPerSecond(row->read_bytes_per_second())
                                         : "-");
      cells.push_back(row->has_traffic() ? FormatBytesPerSecond(row->write_bytes_per_second())
                                         : "-");
    }
    table.AddRow(std::move(cells));
  }
  return table.Render();
}

}  // namespace nodemesh::cli
