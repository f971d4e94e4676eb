// meshctl edges TYPE: who calls whom.
#include <fmt/format.h>

#include <memory>

#include "cli/commands/command.h"
#include "cli/commands/scope.h"
#include "cli/views/views.h"

namespace nodemesh::cli {
namespace {

struct EdgesFlags {
  ScopeFlags scope{{.command = "edges",
                    .all_namespaces = true,
                    .services = true,
                    .default_window = "1m",
                    .outputs = {OutputFormat::kTable, OutputFormat::kJson},
                    .output_help = "table or json"}};
};

int RunEdges(const EdgesFlags& flags, const Invocation& invocation) {
  const absl::StatusOr<Scope> scope = flags.scope.Parse();
  if (!scope.ok()) return invocation.Fail(scope.status());

  v1::EdgesRequest request;
  *request.mutable_selector() = scope->Selector();
  request.set_window_seconds(scope->window_seconds);
  absl::StatusOr<std::unique_ptr<AggregatorApi>> client = invocation.Client();
  if (!client.ok()) return invocation.Fail(client.status());
  const absl::StatusOr<v1::EdgesResponse> response = (*client)->Edges(request);
  if (!response.ok()) return invocation.Fail(response.status());

  const Context& context = invocation.context;
  if (response->edges().empty() && scope->output != OutputFormat::kJson) {
    const std::string what = scope->What();
    context.err << fmt::format("No edges of {} found in the last {}.\n",
                               scope->all_namespaces ? what
                                                     : fmt::format("{} in namespace {}", what,
                                                                   request.selector().namespace_()),
                               scope->window);
  } else {
    context.out << RenderEdges(*response, scope->output);
  }
  context.err << RenderWindowNotes(*response, scope->window_seconds, context.now_unix_seconds());
  return 0;
}

}  // namespace

void AddEdgesCommand(CLI::App& app, Invocation& invocation) {
  auto flags = std::make_shared<EdgesFlags>();
  CLI::App* command = app.add_subcommand(
      "edges", "Who calls whom: callers and callees of resources, with service accounts");
  flags->scope.AddTarget(*command);
  flags->scope.AddAnswer(*command);
  command->footer(
      "Examples:\n"
      "  meshctl edges deploy -n emojivoto\n"
      "  meshctl edges svc -n emojivoto     (callers -> Service -> the workloads behind it)");
  invocation.RunWhenChosen(*command, [flags, &invocation] { return RunEdges(*flags, invocation); });
}

}  // namespace nodemesh::cli
