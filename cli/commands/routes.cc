// meshctl routes and meshctl top: per-route metrics, as a table or a live view.
#include <fmt/format.h>

#include <chrono>
#include <memory>

#include "cli/commands/command.h"
#include "cli/views/views.h"

namespace nodemesh::cli {
namespace {

constexpr std::chrono::seconds kTopRefresh{2};

struct RoutesFlags {
  std::vector<std::string> words;
  std::string namespace_name = "default";
  std::string from, from_namespace;
  std::string window = "1m";
  std::string output = "table";
};

int RunRoutes(const RoutesFlags& flags, const Invocation& invocation) {
  const absl::StatusOr<ResourceRef> ref = ParseResourceWords(flags.words, "routes");
  if (!ref.ok()) return invocation.Fail(ref.status());
  const absl::StatusOr<OutputFormat> format = ParseOutputFormat(
      flags.output, "routes", {OutputFormat::kTable, OutputFormat::kWide, OutputFormat::kJson});
  if (!format.ok()) return invocation.Fail(format.status());
  const absl::StatusOr<int64_t> window = ParseWindow(flags.window);
  if (!window.ok()) return invocation.Fail(window.status());

  v1::TopRoutesRequest request;
  *request.mutable_selector() = ToApiResource(*ref, flags.namespace_name);
  request.set_window_seconds(*window);
  if (!flags.from.empty()) {
    absl::StatusOr<v1::Resource> from = PeerResource(
        flags.from, flags.from_namespace.empty() ? flags.namespace_name : flags.from_namespace);
    if (!from.ok()) return invocation.Fail("--from", from.status());
    *request.mutable_from() = *std::move(from);
  }
  absl::StatusOr<ApiClient> client = invocation.Client();
  if (!client.ok()) return invocation.Fail(client.status());
  const absl::StatusOr<v1::TopRoutesResponse> response = client->TopRoutes(request);
  if (!response.ok()) return invocation.Fail(response.status());

  const Context& context = invocation.context;
  if (response->routes().empty() && *format != OutputFormat::kJson) {
    context.err << fmt::format("No routes with traffic to {} in namespace {} in the last {}.\n",
                               Label(*ref), request.selector().namespace_(), flags.window);
  } else {
    context.out << RenderRoutes(*response, *format);
  }
  context.err << RenderWindowNotes(*response, *window, context.now_unix_seconds());
  return 0;
}

struct TopFlags {
  std::vector<std::string> words;
  std::string namespace_name = "default";
  std::string window = "10s";
  uint32_t limit = 20;
};

int RunTop(const TopFlags& flags, const Invocation& invocation) {
  const absl::StatusOr<ResourceRef> ref = ParseResourceWords(flags.words, "top");
  if (!ref.ok()) return invocation.Fail(ref.status());
  const absl::StatusOr<int64_t> window = ParseWindow(flags.window);
  if (!window.ok()) return invocation.Fail(window.status());
  v1::TopRoutesRequest request;
  *request.mutable_selector() = ToApiResource(*ref, flags.namespace_name);
  request.set_window_seconds(*window);
  request.set_limit(flags.limit);
  absl::StatusOr<ApiClient> client = invocation.Client();
  if (!client.ok()) return invocation.Fail(client.status());

  const Context& context = invocation.context;
  absl::StatusOr<v1::TopRoutesResponse> response = client->TopRoutes(request);
  if (!response.ok()) return invocation.Fail(response.status());
  if (!context.out_is_tty) {
    context.out << RenderTop(*response, "", false);
    context.err << RenderWindowNotes(*response, *window, context.now_unix_seconds());
    return 0;
  }
  const std::string what =
      ref->type == ResourceType::kNamespace
          ? fmt::format("in namespace {}", request.selector().namespace_())
          : fmt::format("of {} in namespace {}", Label(*ref), request.selector().namespace_());
  const std::string title =
      fmt::format("Busiest routes {} over the last {} (every {}s; Ctrl-C to quit)", what,
                  flags.window, kTopRefresh.count());
  for (;;) {
    std::string frame;
    if (response.ok()) {
      frame = RenderTop(*response, title, true) +
              RenderWindowNotes(*response, *window, context.now_unix_seconds());
    } else {
      // A live view outlasts an aggregator restart: say so and keep trying.
      frame = fmt::format("\x1b[H\x1b[2J{}\n\nmeshctl: {} (retrying)\n", title,
                          response.status().message());
    }
    context.out << frame << std::flush;
    if (!context.out || context.cancel.WaitFor(kTopRefresh)) return 0;
    response = client->TopRoutes(request);
  }
}

}  // namespace

void AddRoutesCommand(CLI::App& app, Invocation& invocation) {
  auto flags = std::make_shared<RoutesFlags>();
  CLI::App* command = app.add_subcommand(
      "routes", "Per-route metrics of the requests a resource serves (no profile needed)");
  AddResourceArgument(*command, flags->words);
  AddNamespaceOption(*command, flags->namespace_name);
  command->add_option("--from", flags->from, "Only requests from this resource (TYPE/NAME)");
  command->add_option("--from-namespace", flags->from_namespace,
                      "Namespace of --from (default: -n)");
  AddWindowOption(*command, flags->window);
  AddOutputOption(*command, flags->output, "table, wide or json");
  command->footer(
      "Examples:\n"
      "  meshctl routes deploy/voting -n emojivoto\n"
      "  meshctl routes deploy/voting -n emojivoto --from deploy/web -o wide");
  command->callback([flags, &invocation] {
    invocation.run = [flags, &invocation] { return RunRoutes(*flags, invocation); };
  });
}

void AddTopCommand(CLI::App& app, Invocation& invocation) {
  auto flags = std::make_shared<TopFlags>();
  CLI::App* command = app.add_subcommand(
      "top", "The busiest routes of a resource, refreshed in place (one table when piped)");
  AddResourceArgument(*command, flags->words);
  AddNamespaceOption(*command, flags->namespace_name);
  AddWindowOption(*command, flags->window);
  command->add_option("--limit", flags->limit, "Most routes to show (0: all)")
      ->capture_default_str();
  command->footer("Example:\n  meshctl top deploy/voting -n emojivoto");
  command->callback([flags, &invocation] {
    invocation.run = [flags, &invocation] { return RunTop(*flags, invocation); };
  });
}

}  // namespace nodemesh::cli
