// meshctl check: the aggregator answers, the nodes report, the meshed pods are enrolled.
#include <fmt/format.h>

#include "cli/commands/command.h"
#include "cli/views/views.h"

namespace nodemesh::cli {
namespace {

int RunCheck(const Invocation& invocation) {
  absl::StatusOr<std::unique_ptr<AggregatorApi>> client = invocation.Client();
  if (!client.ok()) return invocation.Fail(client.status());
  const absl::StatusOr<v1::ListPodsResponse> pods = (*client)->ListPods(v1::ListPodsRequest());
  if (!pods.ok()) return invocation.Fail(pods.status());
  const CheckReport report =
      RenderCheck((*client)->address(), *pods, invocation.context.now_unix_seconds());
  invocation.context.out << report.text;
  if (report.problems == 0) return 0;
  invocation.context.err << fmt::format("meshctl: check found {} problem{} (marked ×)\n",
                                        report.problems, report.problems == 1 ? "" : "s");
  return 1;
}

}  // namespace

void AddCheckCommand(CLI::App& app, Invocation& invocation) {
  CLI::App* command = app.add_subcommand(
      "check", "Check that the aggregator answers, the nodes report and meshed pods are enrolled");
  invocation.RunWhenChosen(*command, [&invocation] { return RunCheck(invocation); });
}

}  // namespace nodemesh::cli
