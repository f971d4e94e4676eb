// What each meshctl shell command prints, as pure functions of the agent's admin API
// answers (JSON, see the README): no I/O and no clock, checked against golden files.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace nodemesh::cli {

// GET /pods: a row per pod of the node's inventory.
std::string RenderShellPods(const nlohmann::json& pods);
// The connections of GET /connections (an array, filtered by the caller).
std::string RenderShellConnections(const nlohmann::json& connections);
// The recently_closed of GET /connections (filtered by the caller): how each ended, how long
// it lasted, how long ago.
std::string RenderShellClosedConnections(const nlohmann::json& connections);
// The routes of GET /routes (an array, filtered by the caller): counts since the agent
// started and latency percentiles.
std::string RenderShellRoutes(const nlohmann::json& routes);
// GET /stats: the proxy's counters, then the kernel's.
std::string RenderShellStats(const nlohmann::json& stats);
// GET /kernel: programs, maps, counters.
std::string RenderShellKernel(const nlohmann::json& kernel);
// GET /kernel/maps/NAME: a column per field of the decoded entries.
std::string RenderShellKernelMap(const nlohmann::json& map);
// GET /config: one setting a line.
std::string RenderShellConfig(const nlohmann::json& config);
// meshctl's version and GET /version.
std::string RenderShellVersion(std::string_view meshctl_version, const nlohmann::json& agent);
// explain's checklist (shell/explain.h's Explain): the steps, the first failure, the kernel
// counters and the connections that match.
std::string RenderShellExplain(const nlohmann::json& explanation);

// "350ms", "12s", "1m30s".
std::string FormatAge(int64_t milliseconds);

}  // namespace nodemesh::cli
