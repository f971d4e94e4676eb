// meshctl top RESOURCE: the busiest routes, as a live view on a terminal.
#include <fmt/format.h>

#include <chrono>
#include <memory>

#include "cli/commands/command.h"
#include "cli/commands/scope.h"
#include "cli/views/views.h"

namespace nodemesh::cli {
namespace {

constexpr std::chrono::seconds kTopRefresh{2};

struct TopFlags {
  ScopeFlags scope{{.command = "top", .services = true, .default_window = "10s"}};
  uint32_t limit = 20;
};

int RunTop(const TopFlags& flags, const Invocation& invocation) {
  const absl::StatusOr<Scope> scope = flags.scope.Parse();
  if (!scope.ok()) return invocation.Fail(scope.status());
  v1::TopRoutesRequest request;
  *request.mutable_selector() = scope->Selector();
  request.set_window_seconds(scope->window_seconds);
  request.set_limit(flags.limit);
  absl::StatusOr<std::unique_ptr<AggregatorApi>> client = invocation.Client();
  if (!client.ok()) return invocation.Fail(client.status());

  const Context& context = invocation.context;
  absl::StatusOr<v1::TopRoutesResponse> response = (*client)->TopRoutes(request);
  if (!response.ok()) return invocation.Fail(response.status());
  if (!context.out_is_tty) {
    context.out << RenderTop(*response, "", false);
    context.err << RenderWindowNotes(*response, scope->window_seconds, context.now_unix_seconds());
    return 0;
  }
  const std::string what =
      !scope->service && scope->resource.type == ResourceType::kNamespace
          ? fmt::format("in namespace {}", request.selector().namespace_())
          : fmt::format("of {} in namespace {}", scope->What(), request.selector().namespace_());
  const std::string title =
      fmt::format("Busiest routes {} over the last {} (every {}s; Ctrl-C to quit)", what,
                  scope->window, kTopRefresh.count());
  for (;;) {
    std::string frame;
    if (response.ok()) {
      frame = RenderTop(*response, title, true) +
              RenderWindowNotes(*response, scope->window_seconds, context.now_unix_seconds());
    } else {
      // A live view outlasts an aggregator restart: say so and keep trying.
      frame = fmt::format("\x1b[H\x1b[2J{}\n\nmeshctl: {} (retrying)\n", title,
                          response.status().message());
    }
    context.out << frame << std::flush;
    if (!context.out || context.cancel.WaitFor(kTopRefresh)) return 0;
    response = (*client)->TopRoutes(request);
  }
}

}  // namespace

void AddTopCommand(CLI::App& app, Invocation& invocation) {
  auto flags = std::make_shared<TopFlags>();
  CLI::App* command = app.add_subcommand(
      "top", "The busiest routes of a resource, refreshed in place (one table when piped)");
  flags->scope.AddTarget(*command);
  flags->scope.AddAnswer(*command);
  command->add_option("--limit", flags->limit, "Most routes to show (0: all)")
      ->capture_default_str();
  command->footer(
      "Examples:\n"
      "  meshctl top deploy/voting -n emojivoto\n"
      "  meshctl top svc/voting-svc -n emojivoto");
  invocation.RunWhenChosen(*command, [flags, &invocation] { return RunTop(*flags, invocation); });
}

}  // namespace nodemesh::cli
