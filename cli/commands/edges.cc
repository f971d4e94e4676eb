// meshctl edges TYPE: who calls whom.
#include <fmt/format.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "cli/commands/command.h"
#include "cli/commands/scope.h"
#include "cli/views/views.h"

namespace nodemesh::cli {
namespace {

struct EdgesFlags {
  ScopeFlags scope{{.command = "edges",
                    .all_namespaces = true,
                    .namespace_list = true,
                    .services = true,
                    .default_window = "1m",
                    .outputs = {OutputFormat::kTable, OutputFormat::kJson},
                    .output_help = "table or json"}};
  // The graph's filters (GraphFilter): any of them, or several namespaces, make the answer
  // one View of the call graph, the dashboard's.
  bool failing = false;
  std::string around;
  std::string around_namespace;
  std::vector<std::string> hide_namespaces;
  bool hide_external = false;
  bool all = false;

  bool filtered() const {
    return failing || !around.empty() || !hide_namespaces.empty() || hide_external || all;
  }
};

// The View of the graph the flags ask for; a usage error for what a graph cannot answer.
absl::StatusOr<v1::ViewRequest> GraphRequest(const EdgesFlags& flags, const Scope& scope) {
  if (scope.all_namespaces) {
    return absl::InvalidArgumentError(
        "the graph's filters are for chosen namespaces: give -n NAMESPACE[,NAMESPACE...] "
        "instead of -A");
  }
  if (!scope.resource.name.empty()) {
    return absl::InvalidArgumentError(fmt::format(
        "{} names one resource, and a graph is of every {} of its namespaces: ask "
        "for its neighbours with --around {}",
        scope.What(), scope.service ? "svc" : Label({scope.resource.type, ""}), scope.What()));
  }
  v1::ViewRequest request = scope.View(v1::ViewRequest::GRAPH);
  v1::GraphFilter& filter = *request.mutable_filter();
  filter.set_only_failing(flags.failing);
  if (!flags.around.empty()) {
    absl::StatusOr<v1::Resource> around =
        scope.Peer(flags.around, flags.around_namespace, "around");
    if (!around.ok()) {
      return absl::Status(around.status().code(),
                          fmt::format("--around: {}", around.status().message()));
    }
    *filter.mutable_around() = *std::move(around);
  }
  for (const std::string& name : flags.hide_namespaces) {
    if (name.empty()) {
      return absl::InvalidArgumentError("--hide-namespace is empty: name the namespace to hide");
    }
    filter.add_hide_namespaces(name);
  }
  filter.set_hide_external(flags.hide_external);
  filter.set_draw_anyway(flags.all);
  return request;
}

int RunEdges(const EdgesFlags& flags, const Invocation& invocation) {
  const absl::StatusOr<Scope> scope = flags.scope.Parse();
  if (!scope.ok()) return invocation.Fail(scope.status());
  const bool graph = scope->namespaces.size() > 1 || flags.filtered();
  absl::StatusOr<v1::ViewRequest> graph_request;
  if (graph) {
    graph_request = GraphRequest(flags, *scope);
    if (!graph_request.ok()) return invocation.Fail(graph_request.status());
  }

  absl::StatusOr<std::unique_ptr<AggregatorApi>> client = invocation.Client();
  if (!client.ok()) return invocation.Fail(client.status());
  absl::StatusOr<v1::EdgesResponse> response;
  std::string withheld;
  if (graph) {
    const absl::StatusOr<v1::ViewResponse> view = (*client)->View(*graph_request);
    if (!view.ok()) return invocation.Fail(view.status());
    response = EdgesOfView(*view);
    if (view->size().withheld()) withheld = RenderWithheldGraph(view->size());
  } else {
    v1::EdgesRequest request;
    *request.mutable_selector() = scope->Selector();
    request.set_window_seconds(scope->window_seconds);
    response = (*client)->Edges(request);
  }
  if (!response.ok()) return invocation.Fail(response.status());

  const Context& context = invocation.context;
  if (!withheld.empty()) {
    if (scope->output == OutputFormat::kJson) context.out << RenderEdges(*response, scope->output);
    context.err << withheld;
  } else if (response->edges().empty() && scope->output != OutputFormat::kJson) {
    const std::string what = scope->What();
    context.err << fmt::format(
        "No edges of {}{} found in the last {}.\n",
        scope->all_namespaces
            ? what
            : fmt::format("{} in namespace{} {}", what, scope->namespaces.size() > 1 ? "s" : "",
                          absl::StrJoin(scope->namespaces, ", ")),
        flags.filtered() ? " under these filters" : "", scope->window);
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
  command->add_flag("--failing", flags->failing,
                    "Only edges whose success rate is below 95%, and their ends");
  command->add_option("--around", flags->around,
                      "Only edges with this resource at one end (TYPE/NAME, e.g. deploy/web)");
  AddPeerNamespaceOption(*command, "around", flags->around_namespace);
  command->add_option("--hide-namespace", flags->hide_namespaces,
                      "Hide the resources of this namespace (repeatable)");
  command->add_flag("--hide-external", flags->hide_external, "Hide peers outside the cluster");
  command->add_flag("--all", flags->all,
                    "Draw the graph even past the size the aggregator withholds it at");
  flags->scope.AddAnswer(*command);
  command->footer(
      "The filters, or -n with several namespaces, ask the aggregator for the call graph in one\n"
      "view (the dashboard's); past 300 nodes or 1500 edges it is withheld, with the size under\n"
      "each filter.\n"
      "Examples:\n"
      "  meshctl edges deploy -n emojivoto\n"
      "  meshctl edges svc -n emojivoto     (callers -> Service -> the workloads behind it)\n"
      "  meshctl edges deploy -n emojivoto,books --failing --hide-namespace kube-system\n"
      "  meshctl edges deploy -n emojivoto --around deploy/web");
  invocation.RunWhenChosen(*command, [flags, &invocation] { return RunEdges(*flags, invocation); });
}

}  // namespace nodemesh::cli
