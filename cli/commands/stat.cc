// meshctl stat TYPE[/NAME]: golden metrics per workload.
#include <fmt/format.h>

#include <memory>

#include "absl/strings/str_join.h"
#include "cli/commands/command.h"
#include "cli/commands/scope.h"
#include "cli/views/views.h"

namespace nodemesh::cli {
namespace {

struct StatFlags {
  ScopeFlags scope{{.command = "stat",
                    .all_namespaces = true,
                    .namespace_list = true,
                    .services = true,
                    .default_window = "1m",
                    .outputs = {OutputFormat::kTable, OutputFormat::kWide, OutputFormat::kJson},
                    .output_help = "table, wide or json"}};
  std::string from, to, from_namespace, to_namespace;
};

int RunStat(const StatFlags& flags, const Invocation& invocation) {
  const absl::StatusOr<Scope> scope = flags.scope.Parse();
  if (!scope.ok()) return invocation.Fail(scope.status());
  if (!flags.from.empty() && !flags.to.empty()) {
    return invocation.Fail(absl::InvalidArgumentError(
        "--from and --to cannot be combined: ask for the traffic from one resource, or to one"));
  }

  const bool several = scope->namespaces.size() > 1;
  if (several) {
    absl::Status refused = absl::OkStatus();
    if (!flags.from.empty() || !flags.to.empty()) {
      refused = absl::InvalidArgumentError(
          "--from and --to take one namespace: give -n NAMESPACE, not a list");
    } else if (!scope->resource.name.empty()) {
      refused = absl::InvalidArgumentError(fmt::format(
          "{} names one resource: give its one namespace with -n, or drop the name to list "
          "every one of the namespaces",
          scope->What()));
    } else if (!scope->service && scope->resource.type == ResourceType::kNamespace) {
      refused = absl::InvalidArgumentError(
          "stat ns lists every namespace: give no -n (or stat ns/NAME for one)");
    }
    if (!refused.ok()) return invocation.Fail(refused);
  }

  v1::StatSummaryRequest request;
  *request.mutable_selector() = scope->Selector();
  request.set_window_seconds(scope->window_seconds);
  if (!flags.from.empty()) {
    absl::StatusOr<v1::Resource> from = scope->Peer(flags.from, flags.from_namespace, "from");
    if (!from.ok()) return invocation.Fail("--from", from.status());
    *request.mutable_from() = *std::move(from);
  }
  if (!flags.to.empty()) {
    absl::StatusOr<v1::Resource> to = scope->Peer(flags.to, flags.to_namespace, "to");
    if (!to.ok()) return invocation.Fail("--to", to.status());
    *request.mutable_to() = *std::move(to);
  }

  absl::StatusOr<std::unique_ptr<AggregatorApi>> client = invocation.Client();
  if (!client.ok()) return invocation.Fail(client.status());
  absl::StatusOr<v1::StatSummaryResponse> response;
  if (several) {
    // One View of them all (the dashboard's call), its rows as stat's.
    const absl::StatusOr<v1::ViewResponse> view =
        (*client)->View(scope->View(v1::ViewRequest::WORKLOADS));
    if (!view.ok()) return invocation.Fail(view.status());
    response = StatsOfView(*view);
  } else {
    response = (*client)->StatSummary(request);
  }
  if (!response.ok()) return invocation.Fail(response.status());

  const Context& context = invocation.context;
  const bool namespaces = !scope->service && scope->resource.type == ResourceType::kNamespace;
  if (response->rows().empty() && scope->output != OutputFormat::kJson) {
    context.err << fmt::format(
        "No {} found{}.\n",
        scope->service ? std::string_view("services") : PluralName(scope->resource.type),
        namespaces || scope->all_namespaces ? std::string()
                                            : fmt::format(" in namespace{} {}", several ? "s" : "",
                                                          absl::StrJoin(scope->namespaces, ", ")));
  } else {
    context.out << RenderStat(*response, scope->output,
                              (scope->all_namespaces || several) && !namespaces);
  }
  context.err << RenderWindowNotes(*response, scope->window_seconds, context.now_unix_seconds());
  return 0;
}

}  // namespace

void AddStatCommand(CLI::App& app, Invocation& invocation) {
  auto flags = std::make_shared<StatFlags>();
  CLI::App* command = app.add_subcommand(
      "stat", "Success rate, request rate, latencies and connections of workloads");
  flags->scope.AddTarget(*command);
  command->add_option("--from", flags->from,
                      "Only traffic from this resource (TYPE/NAME, e.g. deploy/web)");
  command->add_option("--to", flags->to,
                      "Only traffic to this resource (TYPE/NAME; svc/NAME: dialled to a Service)");
  AddPeerNamespaceOption(*command, "from", flags->from_namespace);
  AddPeerNamespaceOption(*command, "to", flags->to_namespace);
  flags->scope.AddAnswer(*command);
  command->footer(
      "Examples:\n"
      "  meshctl stat deploy -n emojivoto\n"
      "  meshctl stat deploy -n emojivoto --from deploy/web\n"
      "  meshctl stat deploy -n emojivoto,books\n"
      "  meshctl stat svc -n emojivoto\n"
      "  meshctl stat deploy -n emojivoto --to svc/web-svc\n"
      "  meshctl stat pods -A -t 10m -o wide");
  invocation.RunWhenChosen(*command, [flags, &invocation] { return RunStat(*flags, invocation); });
}

}  // namespace nodemesh::cli
