#include "cli/views/common.h"

#include <fmt/format.h>

#include <algorithm>

#include "cli/views/views.h"

namespace nodemesh::cli::views {

std::vector<std::string> LatencyCells(const v1::Latencies& latency, bool has_responses) {
  if (!has_responses) return {"-", "-", "-"};
  return {FormatLatency(latency.p50_ns()), FormatLatency(latency.p95_ns()),
          FormatLatency(latency.p99_ns())};
}

Json LatencyJson(const v1::Latencies& latency, bool has_responses) {
  if (!has_responses) return nullptr;
  const auto milliseconds = [](int64_t nanoseconds) {
    return static_cast<double>(nanoseconds) / 1e6;
  };
  Json json;
  json["p50"] = milliseconds(latency.p50_ns());
  json["p95"] = milliseconds(latency.p95_ns());
  json["p99"] = milliseconds(latency.p99_ns());
  return json;
}

Json ResourceJson(const v1::Resource& resource) {
  Json json;
  json["namespace"] = resource.namespace_();
  json["type"] = resource.type();
  json["name"] = resource.name();
  return json;
}

Json NodesJson(const google::protobuf::RepeatedPtrField<v1::NodeStatus>& nodes) {
  std::vector<const v1::NodeStatus*> sorted;
  for (const v1::NodeStatus& node : nodes) sorted.push_back(&node);
  std::sort(sorted.begin(), sorted.end(),
            [](const auto* a, const auto* b) { return a->node() < b->node(); });
  Json json = Json::array();
  for (const v1::NodeStatus* node : sorted) {
    Json entry;
    entry["node"] = node->node();
    entry["connected"] = node->connected();
    entry["last_report_unix_seconds"] = node->last_report_unix_seconds();
    json.push_back(std::move(entry));
  }
  return json;
}

std::string Document(const Json& json) { return json.dump(2) + "\n"; }

std::string OrDash(const std::string& text) { return text.empty() ? "-" : text; }

}  // namespace nodemesh::cli::views

namespace nodemesh::cli {

absl::StatusOr<OutputFormat> ParseOutputFormat(std::string_view text, std::string_view command,
                                               const std::vector<OutputFormat>& accepted) {
  const auto name = [](OutputFormat format) -> std::string_view {
    switch (format) {
      case OutputFormat::kTable:
        return "table";
      case OutputFormat::kWide:
        return "wide";
      case OutputFormat::kJson:
        return "json";
    }
    return "";
  };
  std::string choices;
  size_t index = 0;
  for (OutputFormat format : accepted) {
    if (text == name(format)) return format;
    if (index > 0) choices += index + 1 == accepted.size() ? " or " : ", ";
    choices += fmt::format("-o {}", name(format));
    ++index;
  }
  return absl::InvalidArgumentError(
      fmt::format("unknown output format '{}' for {}: use {}", text, command, choices));
}

std::string RenderStaleWarnings(const google::protobuf::RepeatedPtrField<v1::NodeStatus>& nodes,
                                int64_t now_unix_seconds) {
  std::vector<const v1::NodeStatus*> sorted;
  for (const v1::NodeStatus& node : nodes) sorted.push_back(&node);
  std::sort(sorted.begin(), sorted.end(),
            [](const auto* a, const auto* b) { return a->node() < b->node(); });
  std::string text;
  for (const v1::NodeStatus* node : sorted) {
    std::string silence =
        node->last_report_unix_seconds() > 0
            ? fmt::format("has not reported for {}",
                          FormatSeconds(now_unix_seconds - node->last_report_unix_seconds()))
            : std::string("has not reported yet");
    if (!node->connected()) silence = "is disconnected and " + silence;
    text += fmt::format("warning: node {} {}; its data may be missing from this window\n",
                        node->node(), silence);
  }
  return text;
}

std::string RenderSourceNote(v1::AnswerSource source) {
  if (source != v1::ANSWER_SOURCE_PROMETHEUS) return "";
  return "note: answered from the Prometheus-compatible store (a window longer than the "
         "aggregator's hour): latency percentiles are interpolated within the agents' "
         "histogram buckets\n";
}

std::string SourceName(v1::AnswerSource source) {
  switch (source) {
    case v1::ANSWER_SOURCE_MEMORY:
      return "memory";
    case v1::ANSWER_SOURCE_PROMETHEUS:
      return "prometheus";
    default:
      return "";
  }
}

std::string RenderShortWindow(int64_t asked_seconds, int64_t covered_seconds) {
  if (covered_seconds >= asked_seconds) return "";
  return fmt::format(
      "note: this window holds only the last {}: the aggregator started then (what it had before "
      "went with it), and rates are over the seconds it holds\n",
      FormatSeconds(covered_seconds));
}

}  // namespace nodemesh::cli
