// meshctl tap RESOURCE: live requests, as they happen.
#include <fmt/format.h>

#include <memory>

#include "cli/commands/command.h"
#include "cli/commands/scope.h"
#include "cli/views/views.h"

namespace nodemesh::cli {
namespace {

struct TapFlags {
  ScopeFlags scope{{.command = "tap",
                    .services = true,
                    .outputs = {OutputFormat::kWide, OutputFormat::kJson},
                    .output_help = "wide or json (default: one line per event)",
                    .default_output = ""}};
  std::string to, to_namespace;
  std::string method, path, authority, scheme;
  double max_rps = 0;
  uint64_t max_events = 0;
};

int RunTap(const TapFlags& flags, const Invocation& invocation) {
  const absl::StatusOr<Scope> scope = flags.scope.Parse();
  if (!scope.ok()) return invocation.Fail(scope.status());
  if (scope->service) {
    return invocation.Fail(absl::InvalidArgumentError(fmt::format(
        "a Service makes no requests and serves none itself: tap its callers' requests to it "
        "with --to, e.g. meshctl tap deploy/web -n {} --to {}",
        scope->namespace_name, scope->What())));
  }
  if (!flags.path.empty() && flags.path[0] != '/') {
    return invocation.Fail(absl::InvalidArgumentError(
        fmt::format("--path '{}' must start with /: e.g. --path /api", flags.path)));
  }
  if (flags.max_rps < 0) {
    return invocation.Fail(absl::InvalidArgumentError(
        "--max-rps must be positive (0 leaves the aggregator's default, 100)"));
  }

  v1::TapRequestSpec spec;
  *spec.mutable_target() = scope->Selector();
  if (!flags.to.empty()) {
    absl::StatusOr<v1::Resource> to = scope->Peer(flags.to, flags.to_namespace, "to");
    if (!to.ok()) return invocation.Fail("--to", to.status());
    *spec.mutable_to() = *std::move(to);
  }
  spec.set_method(flags.method);
  spec.set_path_prefix(flags.path);
  spec.set_authority(flags.authority);
  spec.set_scheme(flags.scheme);
  spec.set_max_rps(flags.max_rps);
  // The aggregator ends the stream there too (through the API server, a clean end).
  spec.set_max_events(flags.max_events);

  absl::StatusOr<std::unique_ptr<AggregatorApi>> client = invocation.Client();
  if (!client.ok()) return invocation.Fail(client.status());
  const Context& context = invocation.context;
  uint64_t events = 0;
  const absl::Status status =
      (*client)->Tap(spec, context.cancel, [&](const v1::TapStreamMessage& message) {
        if (message.has_drops()) {
          context.err << RenderTapDrops(message.drops()) << std::flush;
          return true;
        }
        if (!message.has_event()) return true;
        // Flushed per line: tap is read live, often through a pipe.
        context.out << RenderTapEvent(message.event(), scope->output) << std::flush;
        // A reader that went away (a closed pipe) ends the stream too.
        if (!context.out) return false;
        ++events;
        return flags.max_events == 0 || events < flags.max_events;
      });
  if (!status.ok()) return invocation.Fail(status);
  return 0;
}

}  // namespace

void AddTapCommand(CLI::App& app, Invocation& invocation) {
  auto flags = std::make_shared<TapFlags>();
  CLI::App* command =
      app.add_subcommand("tap", "Watch requests to and from a resource live, until Ctrl-C");
  flags->scope.AddTarget(*command);
  command->add_option("--to", flags->to,
                      "Only requests to this resource (TYPE/NAME; svc/NAME: dialled to a Service)");
  AddPeerNamespaceOption(*command, "to", flags->to_namespace);
  command->add_option("--method", flags->method, "Only requests with this method (e.g. POST)");
  command->add_option("--path", flags->path, "Only requests whose path starts with this prefix");
  command->add_option("--authority", flags->authority, "Only requests to this authority");
  command->add_option("--scheme", flags->scheme, "Only requests with this scheme (http, https)");
  command->add_option("--max-rps", flags->max_rps,
                      "Most requests per second to tap, cluster-wide (default 100)");
  command->add_option("--max-events", flags->max_events,
                      "Stop after this many events (default: until Ctrl-C)");
  flags->scope.AddAnswer(*command);
  command->footer(
      "Examples:\n"
      "  meshctl tap deploy/web -n emojivoto --to deploy/voting\n"
      "  meshctl tap deploy/web -n emojivoto --to svc/voting-svc\n"
      "  meshctl tap deploy/voting -n emojivoto --path /emojivoto.v1.VotingService/ -o json");
  invocation.RunWhenChosen(*command, [flags, &invocation] { return RunTap(*flags, invocation); });
}

}  // namespace nodemesh::cli
