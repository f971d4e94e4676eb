// What each command prints, as pure functions of the API's answers: no I/O and no clock
// (the time is a parameter), so every format is checked byte for byte against golden files.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nodemesh/v1/nodemesh.pb.h"

namespace nodemesh::cli {

enum class OutputFormat { kTable, kWide, kJson };

// `-o` of `command`: one of the accepted names ("table", "wide", "json"), or an error
// listing them.
absl::StatusOr<OutputFormat> ParseOutputFormat(std::string_view text, std::string_view command,
                                               const std::vector<OutputFormat>& accepted);

// One "warning: node n2 has not reported for 12s; ..." line per node, by node name.
std::string RenderStaleWarnings(const google::protobuf::RepeatedPtrField<v1::NodeStatus>& nodes,
                                int64_t now_unix_seconds);

// "note: this window holds only the last 23s: ..." when the aggregator answered for fewer
// seconds than asked (it started within the window); nothing otherwise.
std::string RenderShortWindow(int64_t asked_seconds, int64_t covered_seconds);

// "note: answered from the Prometheus-compatible store ..." for an answer from the store;
// nothing for one from the aggregator's memory.
std::string RenderSourceNote(v1::AnswerSource source);
// "prometheus" or "memory" for -o json; "" for an aggregator that does not say.
std::string SourceName(v1::AnswerSource source);

// All of the above for an answer over a window (stat, edges, routes): what a person reading
// it should know, for stderr.
template <typename WindowResponse>
std::string RenderWindowNotes(const WindowResponse& response, int64_t asked_seconds,
                              int64_t now_unix_seconds) {
  return RenderStaleWarnings(response.stale_nodes(), now_unix_seconds) +
         RenderShortWindow(asked_seconds, response.window_seconds()) +
         RenderSourceNote(response.source());
}

// stat: rows by namespace and name. `namespace_column` adds NAMESPACE first (-A).
std::string RenderStat(const v1::StatSummaryResponse& response, OutputFormat format,
                       bool namespace_column);

// tap: one line per event, with its newline. kTable is Linkerd's line, kWide adds addresses
// and workloads, kJson is one JSON object.
std::string RenderTapEvent(const v1::TapEvent& event, OutputFormat format);
// "tap: 12 events dropped (agents 2, stream 10): ...", for stderr.
std::string RenderTapDrops(const v1::TapDrops& drops);

// top: the busiest routes first. `title` heads a frame; `clear_screen` starts it by moving
// to the top of a cleared terminal.
std::string RenderTop(const v1::TopRoutesResponse& response, std::string_view title,
                      bool clear_screen);

// routes: by route, then destination.
std::string RenderRoutes(const v1::TopRoutesResponse& response, OutputFormat format);

// edges: by source namespace and name, then destination name and namespace.
std::string RenderEdges(const v1::EdgesResponse& response, OutputFormat format);
// "note: the graph is withheld: ..." with what each filter would leave, for stderr: the
// aggregator answered a graph's size instead of a graph too large to draw.
std::string RenderWithheldGraph(const v1::GraphSize& size);

struct CheckReport {
  std::string text;
  int problems = 0;
};
// check: the nodes and pods the aggregator knows, and a line per check passed or failed.
CheckReport RenderCheck(std::string_view aggregator, const v1::ListPodsResponse& pods,
                        int64_t now_unix_seconds);

}  // namespace nodemesh::cli
