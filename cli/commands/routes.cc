// meshctl routes RESOURCE: per-route metrics of the requests a resource serves.
#include <fmt/format.h>

#include <memory>

#include "cli/commands/command.h"
#include "cli/commands/scope.h"
#include "cli/views/views.h"

namespace nodemesh::cli {
namespace {

struct RoutesFlags {
  ScopeFlags scope{{.command = "routes",
                    .services = true,
                    .default_window = "1m",
                    .outputs = {OutputFormat::kTable, OutputFormat::kWide, OutputFormat::kJson},
                    .output_help = "table, wide or json"}};
  std::string from, from_namespace;
};

int RunRoutes(const RoutesFlags& flags, const Invocation& invocation) {
  const absl::StatusOr<Scope> scope = flags.scope.Parse();
  if (!scope.ok()) return invocation.Fail(scope.status());

  v1::TopRoutesRequest request;
  *request.mutable_selector() = scope->Selector();
  request.set_window_seconds(scope->window_seconds);
  if (!flags.from.empty()) {
    absl::StatusOr<v1::Resource> from = scope->Peer(flags.from, flags.from_namespace, "from");
    if (!from.ok()) return invocation.Fail("--from", from.status());
    *request.mutable_from() = *std::move(from);
  }
  absl::StatusOr<std::unique_ptr<AggregatorApi>> client = invocation.Client();
  if (!client.ok()) return invocation.Fail(client.status());
  const absl::StatusOr<v1::TopRoutesResponse> response = (*client)->TopRoutes(request);
  if (!response.ok()) return invocation.Fail(response.status());

  const Context& context = invocation.context;
  if (response->routes().empty() && scope->output != OutputFormat::kJson) {
    context.err << fmt::format("No routes with traffic to {} in namespace {} in the last {}.\n",
                               scope->What(), request.selector().namespace_(), scope->window);
  } else {
    context.out << RenderRoutes(*response, scope->output);
  }
  context.err << RenderWindowNotes(*response, scope->window_seconds, context.now_unix_seconds());
  return 0;
}

}  // namespace

void AddRoutesCommand(CLI::App& app, Invocation& invocation) {
  auto flags = std::make_shared<RoutesFlags>();
  CLI::App* command = app.add_subcommand(
      "routes", "Per-route metrics of the requests a resource serves (no profile needed)");
  flags->scope.AddTarget(*command);
  command->add_option("--from", flags->from, "Only requests from this resource (TYPE/NAME)");
  AddPeerNamespaceOption(*command, "from", flags->from_namespace);
  flags->scope.AddAnswer(*command);
  command->footer(
      "Examples:\n"
      "  meshctl routes deploy/voting -n emojivoto\n"
      "  meshctl routes deploy/voting -n emojivoto --from deploy/web -o wide\n"
      "  meshctl routes svc/voting-svc -n emojivoto   (what callers dialled to the Service)");
  invocation.RunWhenChosen(*command,
                           [flags, &invocation] { return RunRoutes(*flags, invocation); });
}

}  // namespace nodemesh::cli
