// Pieces the views share, so that a latency or a node reads the same in every command.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/views/format.h"
#include "nodemesh/v1/nodemesh.pb.h"

namespace nodemesh::cli::views {

// Keys stay in the order written: the JSON documents are part of the interface.
using Json = nlohmann::ordered_json;

// p50, p95, p99 cells, or "-" each when there were no responses.
std::vector<std::string> LatencyCells(const v1::Latencies& latency, bool has_responses);
// {"p50": ms, "p95": ms, "p99": ms}, or null when there were no responses.
Json LatencyJson(const v1::Latencies& latency, bool has_responses);
Json ResourceJson(const v1::Resource& resource);
Json NodesJson(const google::protobuf::RepeatedPtrField<v1::NodeStatus>& nodes);
// Indented, with a final newline.
std::string Document(const Json& json);
// "-" for an empty cell, so that columns never look shifted.
std::string OrDash(const std::string& text);

}  // namespace nodemesh::cli::views
