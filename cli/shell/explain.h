// explain: the fate of traffic to or from one pod or address, end to end, as a checklist
// worked out from what the agent and its kernel maps say now (Explain is pure: the answers
// are fetched by FetchExplainInputs, and the checklist printed by RenderShellExplain,
// cli/views/shell.h). The shell's explain and meshctl dashboard's share them.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "absl/status/statusor.h"
#include "cli/shell/admin_client.h"

namespace nodemesh::cli {

// What explain reads, as the admin API answers it.
struct ExplainInputs {
  nlohmann::json pods;              // GET /pods
  nlohmann::json kernel;            // GET /kernel
  nlohmann::json enrolled_cgroups;  // GET /kernel/maps/enrolled_cgroups
  nlohmann::json config;            // GET /config
  nlohmann::json connections;       // GET /connections
};

// Asks the agent for what Explain reads; the first failure as AdminClient::Get says it.
absl::StatusOr<ExplainInputs> FetchExplainInputs(AdminClient& agent);

// `target`: a pod ("ns/name" or "name") or "IP[:PORT]". The result: {"target", "pod" (the
// pod's key, or null), "steps": [{"check", "ok" (true, false, or null: not reached),
// "detail", "fix"}], "first_failure" (its index, or null), "counters_of" (the pod's key, or
// "node") and "counters", "connections" (live) and "recently_closed"}. An
// error when the target is neither a pod of the node nor an address.
absl::StatusOr<nlohmann::json> Explain(const std::string& target, const ExplainInputs& inputs);

}  // namespace nodemesh::cli
