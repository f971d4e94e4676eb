// meshctl routes and meshctl top: per-route metrics from templated routes, with no
// hand-written profile.
#include <fmt/format.h>

#include <algorithm>
#include <tuple>

#include "cli/resource.h"
#include "cli/views/common.h"
#include "cli/views/format.h"
#include "cli/views/views.h"

namespace nodemesh::cli {
namespace {

using views::Json;

std::vector<const v1::RouteRow*> Rows(const v1::TopRoutesResponse& response) {
  std::vector<const v1::RouteRow*> rows;
  for (const v1::RouteRow& row : response.routes()) rows.push_back(&row);
  return rows;
}

bool ByRoute(const v1::RouteRow* a, const v1::RouteRow* b) {
  return std::tie(a->route(), a->destination().namespace_(), a->destination().name()) <
         std::tie(b->route(), b->destination().namespace_(), b->destination().name());
}

std::string RoutesJson(const v1::TopRoutesResponse& response) {
  std::vector<const v1::RouteRow*> rows = Rows(response);
  std::sort(rows.begin(), rows.end(), ByRoute);
  Json routes = Json::array();
  for (const v1::RouteRow* row : rows) {
    Json json;
    json["route"] = row->route();
    json["destination"] = views::ResourceJson(row->destination());
    json["requests"] = row->requests();
    json["success_rate"] = row->requests() > 0 ? Json(row->success_rate()) : Json(nullptr);
    json["rps"] = row->rps();
    json["latency_ms"] = views::LatencyJson(row->latency(), row->requests() > 0);
    routes.push_back(std::move(json));
  }
  Json document;
  document["window_seconds"] = response.window_seconds();
  document["routes"] = std::move(routes);
  document["stale_nodes"] = views::NodesJson(response.stale_nodes());
  // Which source answered; absent from an aggregator that does not say.
  if (const std::string source = SourceName(response.source()); !source.empty()) {
    document["source"] = source;
  }
  return views::Document(document);
}

void AddMetricCells(const v1::RouteRow& row, std::vector<std::string>& cells) {
  for (std::string& cell : views::LatencyCells(row.latency(), row.requests() > 0)) {
    cells.push_back(std::move(cell));
  }
}

std::string SuccessCell(const v1::RouteRow& row) {
  return row.requests() > 0 ? FormatSuccessRate(row.success_rate()) : "-";
}

}  // namespace

std::string RenderRoutes(const v1::TopRoutesResponse& response, OutputFormat format) {
  if (format == OutputFormat::kJson) return RoutesJson(response);
  std::vector<Table::Column> columns = {
      {"ROUTE", Align::kLeft}, {"SERVICE", Align::kLeft}, {"SUCCESS"},    {"RPS"},
      {"LATENCY_P50"},         {"LATENCY_P95"},           {"LATENCY_P99"}};
  const bool wide = format == OutputFormat::kWide;
  if (wide) columns.push_back({"REQUESTS"});
  Table table(std::move(columns));
  std::vector<const v1::RouteRow*> rows = Rows(response);
  std::sort(rows.begin(), rows.end(), ByRoute);
  for (const v1::RouteRow* row : rows) {
    std::vector<std::string> cells = {row->route(), views::OrDash(row->destination().name()),
                                      SuccessCell(*row), FormatRps(row->rps())};
    AddMetricCells(*row, cells);
    if (wide) cells.push_back(fmt::format("{}", row->requests()));
    table.AddRow(std::move(cells));
  }
  return table.Render();
}

std::string RenderTop(const v1::TopRoutesResponse& response, std::string_view title,
                      bool clear_screen) {
  Table table({{"ROUTE", Align::kLeft},
               {"DESTINATION", Align::kLeft},
               {"RPS"},
               {"SUCCESS"},
               {"LATENCY_P50"},
               {"LATENCY_P95"},
               {"LATENCY_P99"}});
  std::vector<const v1::RouteRow*> rows = Rows(response);
  // Busiest first; equal rates by route, so that a refresh does not reshuffle them.
  std::stable_sort(rows.begin(), rows.end(), [](const v1::RouteRow* a, const v1::RouteRow* b) {
    if (a->rps() != b->rps()) return a->rps() > b->rps();
    return ByRoute(a, b);
  });
  for (const v1::RouteRow* row : rows) {
    std::vector<std::string> cells = {row->route(), ResourceLabel(row->destination()),
                                      FormatRps(row->rps()), SuccessCell(*row)};
    AddMetricCells(*row, cells);
    table.AddRow(std::move(cells));
  }
  // Home and clear-to-end rather than a full reset: the terminal's scrollback survives.
  std::string frame = clear_screen ? "\x1b[H\x1b[2J" : "";
  if (!title.empty()) frame += fmt::format("{}\n\n", title);
  return frame + table.Render();
}

}  // namespace nodemesh::cli
