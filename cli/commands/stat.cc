// meshctl stat TYPE[/NAME]: golden metrics per workload.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <memory>
#include <optional>

#include "cli/commands/command.h"
#include "cli/views/views.h"

namespace nodemesh::cli {
namespace {

struct StatFlags {
  std::vector<std::string> words;
  std::string namespace_name = "default";
  bool all_namespaces = false;
  const CLI::Option* namespace_option = nullptr;  // to tell -n given from its default
  std::string from, to, from_namespace, to_namespace;
  std::string window = "1m";
  std::string output = "table";
};

// "svc", "svc/NAME" or "svc NAME" (a Service is no ResourceType: see common/resource) as the
// API's resource; nullopt for any other type.
std::optional<absl::StatusOr<v1::Resource>> ServiceResource(const std::vector<std::string>& words,
                                                            std::string_view namespace_name) {
  if (words.empty() || words.size() > 2) return std::nullopt;
  const size_t slash = words[0].find('/');
  if (!IsServiceType(std::string_view(words[0]).substr(0, slash))) return std::nullopt;
  std::string name = slash == std::string::npos ? std::string() : words[0].substr(slash + 1);
  if ((slash != std::string::npos && name.empty()) || (!name.empty() && words.size() == 2) ||
      name.find('/') != std::string::npos) {
    return absl::InvalidArgumentError(
        fmt::format("'{}' is not svc/NAME: write e.g. svc/web-svc and give the namespace with -n",
                    fmt::join(words, " ")));
  }
  if (words.size() == 2) name = words[1];
  v1::Resource resource;
  resource.set_type(std::string(kServiceTypeName));
  resource.set_namespace_(std::string(namespace_name));
  resource.set_name(name);
  return resource;
}

// --from/--to name a resource in --from-namespace/--to-namespace, else in -n. With -A
// there is no -n to fall back on.
absl::StatusOr<v1::Resource> Peer(const StatFlags& flags, const std::string& text,
                                  const std::string& peer_namespace, std::string_view flag) {
  const std::string& in_namespace = peer_namespace.empty() ? flags.namespace_name : peer_namespace;
  if (std::optional<absl::StatusOr<v1::Resource>> service = ServiceResource({text}, in_namespace)) {
    if (service->ok() && (*service)->name().empty()) {
      return absl::InvalidArgumentError(
          fmt::format("'{}' names no Service: write svc/NAME, e.g. svc/web-svc", text));
    }
    if (service->ok() && flags.all_namespaces && peer_namespace.empty()) {
      return absl::InvalidArgumentError(
          fmt::format("with -A, say which namespace {} is in with --{}-namespace", text, flag));
    }
    return *std::move(service);
  }
  if (!peer_namespace.empty()) return PeerResource(text, peer_namespace);
  const absl::StatusOr<ResourceRef> ref = ParseResourceRef(text);
  if (flags.all_namespaces && ref.ok() && ref->type != ResourceType::kNamespace) {
    return absl::InvalidArgumentError(
        fmt::format("with -A, say which namespace {} is in with --{}-namespace", text, flag));
  }
  return PeerResource(text, flags.namespace_name);
}

int RunStat(const StatFlags& flags, const Invocation& invocation) {
  const std::string selector_namespace = flags.all_namespaces ? "" : flags.namespace_name;
  std::optional<absl::StatusOr<v1::Resource>> service =
      ServiceResource(flags.words, selector_namespace);
  if (service && !service->ok()) return invocation.Fail(service->status());
  // A Service selector stands in for a workload type below only where a type is printed.
  const absl::StatusOr<ResourceRef> ref = service
                                              ? ResourceRef{ResourceType::kPod, (*service)->name()}
                                              : ParseResourceWords(flags.words, "stat");
  if (!ref.ok()) return invocation.Fail(ref.status());
  if (flags.all_namespaces && flags.namespace_option->count() > 0) {
    return invocation.Fail(NamespaceOrAllError());
  }
  const absl::StatusOr<OutputFormat> format = ParseOutputFormat(
      flags.output, "stat", {OutputFormat::kTable, OutputFormat::kWide, OutputFormat::kJson});
  if (!format.ok()) return invocation.Fail(format.status());
  const absl::StatusOr<int64_t> window = ParseWindow(flags.window);
  if (!window.ok()) return invocation.Fail(window.status());

  if (!flags.from.empty() && !flags.to.empty()) {
    return invocation.Fail(absl::InvalidArgumentError(
        "--from and --to cannot be combined: ask for the traffic from one resource, or to one"));
  }

  v1::StatSummaryRequest request;
  *request.mutable_selector() = service ? **service : ToApiResource(*ref, selector_namespace);
  request.set_window_seconds(*window);
  if (!flags.from.empty()) {
    absl::StatusOr<v1::Resource> from = Peer(flags, flags.from, flags.from_namespace, "from");
    if (!from.ok()) return invocation.Fail("--from", from.status());
    *request.mutable_from() = *std::move(from);
  }
  if (!flags.to.empty()) {
    absl::StatusOr<v1::Resource> to = Peer(flags, flags.to, flags.to_namespace, "to");
    if (!to.ok()) return invocation.Fail("--to", to.status());
    *request.mutable_to() = *std::move(to);
  }

  absl::StatusOr<ApiClient> client = invocation.Client();
  if (!client.ok()) return invocation.Fail(client.status());
  const absl::StatusOr<v1::StatSummaryResponse> response = client->StatSummary(request);
  if (!response.ok()) return invocation.Fail(response.status());

  const Context& context = invocation.context;
  if (response->rows().empty() && *format != OutputFormat::kJson) {
    context.err << fmt::format(
        "No {} found{}.\n", service ? std::string_view("services") : PluralName(ref->type),
        (!service && ref->type == ResourceType::kNamespace) || flags.all_namespaces
            ? std::string()
            : fmt::format(" in namespace {}", flags.namespace_name));
  } else {
    context.out << RenderStat(
        *response, *format,
        flags.all_namespaces && (service || ref->type != ResourceType::kNamespace));
  }
  context.err << RenderWindowNotes(*response, *window, context.now_unix_seconds());
  return 0;
}

}  // namespace

void AddStatCommand(CLI::App& app, Invocation& invocation) {
  auto flags = std::make_shared<StatFlags>();
  CLI::App* command = app.add_subcommand(
      "stat", "Success rate, request rate, latencies and connections of workloads");
  AddResourceArgument(*command, flags->words);
  flags->namespace_option = AddNamespaceOption(*command, flags->namespace_name);
  command->add_flag("-A,--all-namespaces", flags->all_namespaces, "Every namespace");
  command->add_option("--from", flags->from,
                      "Only traffic from this resource (TYPE/NAME, e.g. deploy/web)");
  command->add_option("--to", flags->to,
                      "Only traffic to this resource (TYPE/NAME; svc/NAME: dialled to a Service)");
  command->add_option("--from-namespace", flags->from_namespace,
                      "Namespace of --from (default: -n)");
  command->add_option("--to-namespace", flags->to_namespace, "Namespace of --to (default: -n)");
  AddWindowOption(*command, flags->window);
  AddOutputOption(*command, flags->output, "table, wide or json");
  command->footer(
      "Examples:\n"
      "  meshctl stat deploy -n emojivoto\n"
      "  meshctl stat deploy -n emojivoto --from deploy/web\n"
      "  meshctl stat svc -n emojivoto\n"
      "  meshctl stat deploy -n emojivoto --to svc/web-svc\n"
      "  meshctl stat pods -A -t 10m -o wide");
  command->callback([flags, &invocation] {
    invocation.run = [flags, &invocation] { return RunStat(*flags, invocation); };
  });
}

}  // namespace nodemesh::cli
