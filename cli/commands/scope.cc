#include "cli/commands/scope.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <optional>

#include "absl/strings/str_split.h"

namespace nodemesh::cli {
namespace {

absl::Status NamespaceOrAllError() {
  return absl::InvalidArgumentError("use -n NAMESPACE or -A (every namespace), not both");
}

// "svc", "svc/NAME" or "svc NAME" (a Service is no ResourceType: see common/resource): the
// Service's name, empty for every Service; nullopt for any other type.
std::optional<absl::StatusOr<std::string>> ServiceName(const std::vector<std::string>& words) {
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
  return name;
}

v1::Resource ServiceResource(const std::string& name, std::string_view namespace_name) {
  v1::Resource resource;
  resource.set_type(std::string(kServiceTypeName));
  resource.set_namespace_(std::string(namespace_name));
  resource.set_name(name);
  return resource;
}

absl::StatusOr<v1::Resource> ApiResource(const std::string& text, std::string_view namespace_name) {
  absl::StatusOr<ResourceRef> ref = ParseResourceRef(text);
  if (!ref.ok()) return ref.status();
  return ToApiResource(*ref, namespace_name);
}

}  // namespace

v1::Resource Scope::Selector() const {
  const std::string_view in_namespace = all_namespaces ? std::string_view() : namespace_name;
  if (service) return ServiceResource(resource.name, in_namespace);
  return ToApiResource(resource, in_namespace);
}

v1::ViewRequest Scope::View(v1::ViewRequest::Kind kind) const {
  v1::ViewRequest request;
  request.set_kind(kind);
  for (const std::string& name : namespaces) request.add_namespaces(name);
  request.set_type(Selector().type());
  request.set_window_seconds(window_seconds);
  return request;
}

std::string Scope::What() const {
  if (!service) return Label(resource);
  return resource.name.empty() ? "svc" : "svc/" + resource.name;
}

absl::StatusOr<v1::Resource> Scope::Peer(const std::string& text, const std::string& peer_namespace,
                                         std::string_view flag) const {
  const absl::Status needs_namespace = absl::InvalidArgumentError(
      fmt::format("with -A, say which namespace {} is in with --{}-namespace", text, flag));
  const std::string& in_namespace = peer_namespace.empty() ? namespace_name : peer_namespace;
  if (takes_services) {
    if (std::optional<absl::StatusOr<std::string>> name = ServiceName({text})) {
      if (!name->ok()) return name->status();
      if ((*name)->empty()) {
        return absl::InvalidArgumentError(
            fmt::format("'{}' names no Service: write svc/NAME, e.g. svc/web-svc", text));
      }
      if (all_namespaces && peer_namespace.empty()) return needs_namespace;
      return ServiceResource(**name, in_namespace);
    }
  }
  if (all_namespaces && peer_namespace.empty()) {
    const absl::StatusOr<ResourceRef> ref = ParseResourceRef(text);
    if (ref.ok() && ref->type != ResourceType::kNamespace) return needs_namespace;
  }
  return ApiResource(text, in_namespace);
}

void ScopeFlags::AddTarget(CLI::App& command) {
  command.add_option(
      "resource", words_,
      spec_.services
          ? "TYPE[/NAME]: pod (po), deployment (deploy), statefulset (sts), daemonset (ds), "
            "namespace (ns) or service (svc); e.g. deploy/web, svc/web-svc"
          : "TYPE[/NAME]: pod (po), deployment (deploy), statefulset (sts), daemonset (ds) or "
            "namespace (ns); e.g. deploy/web");
  namespace_name_ = std::string(spec_.default_namespace);
  namespace_option_ =
      command
          .add_option("-n,--namespace", namespace_name_,
                      spec_.namespace_list
                          ? fmt::format("{}; several as a comma list (a,b)", spec_.namespace_help)
                          : std::string(spec_.namespace_help))
          ->capture_default_str();
  if (spec_.all_namespaces) {
    command.add_flag("-A,--all-namespaces", all_namespaces_, "Every namespace");
  }
}

void ScopeFlags::AddAnswer(CLI::App& command) {
  if (!spec_.default_window.empty()) {
    window_ = std::string(spec_.default_window);
    command
        .add_option("-t,--time-window", window_,
                    "Window the metrics are taken over, from 10s to 1h (e.g. 30s, 5m, 1h)")
        ->capture_default_str();
  }
  if (!spec_.outputs.empty()) {
    output_ = std::string(spec_.default_output);
    AddOutputOption(command, output_, spec_.output_help);
  }
}

absl::StatusOr<Scope> ScopeFlags::Parse() const {
  Scope scope;
  scope.takes_services = spec_.services;
  std::optional<absl::StatusOr<std::string>> service =
      spec_.services ? ServiceName(words_) : std::nullopt;
  if (service) {
    if (!service->ok()) return service->status();
    scope.service = true;
    scope.resource.name = **service;
  } else {
    absl::StatusOr<ResourceRef> ref = ParseResourceWords(words_, spec_.command);
    if (!ref.ok()) return ref.status();
    scope.resource = *std::move(ref);
  }
  scope.all_namespaces = all_namespaces_;
  if (all_namespaces_ && namespace_option_->count() > 0) return NamespaceOrAllError();
  // An empty default (inject's) leaves the namespace to the command.
  std::vector<std::string> names;
  if (!namespace_name_.empty()) names = absl::StrSplit(namespace_name_, ',');
  for (const std::string& name : names) {
    if (name.empty()) {
      return absl::InvalidArgumentError(
          fmt::format("-n '{}' has an empty namespace: write -n NAMESPACE{}", namespace_name_,
                      spec_.namespace_list ? " or a comma list, -n emojivoto,books" : ""));
    }
    if (std::find(scope.namespaces.begin(), scope.namespaces.end(), name) ==
        scope.namespaces.end()) {
      scope.namespaces.emplace_back(name);
    }
  }
  if (scope.namespaces.size() > 1 && !spec_.namespace_list) {
    return absl::InvalidArgumentError(fmt::format(
        "{} takes one namespace, not '{}': give -n NAMESPACE", spec_.command, namespace_name_));
  }
  if (!scope.namespaces.empty()) scope.namespace_name = scope.namespaces.front();

  // An empty default (tap) is the command's own line format, whatever -o "" would be.
  if (!spec_.outputs.empty() && !(output_.empty() && spec_.default_output.empty())) {
    absl::StatusOr<OutputFormat> output = ParseOutputFormat(output_, spec_.command, spec_.outputs);
    if (!output.ok()) return output.status();
    scope.output = *output;
  }
  if (!spec_.default_window.empty()) {
    absl::StatusOr<int64_t> window = ParseWindow(window_);
    if (!window.ok()) return window.status();
    scope.window_seconds = *window;
    scope.window = window_;
  }
  return scope;
}

namespace {

template <typename Part>
Part PartOfView(Part part, const v1::ViewResponse& view) {
  *part.mutable_stale_nodes() = view.stale_nodes();
  part.set_window_seconds(view.window_seconds());
  return part;
}

}  // namespace

v1::StatSummaryResponse StatsOfView(const v1::ViewResponse& view) {
  return PartOfView(view.stats(), view);
}

v1::EdgesResponse EdgesOfView(const v1::ViewResponse& view) {
  return PartOfView(view.edges(), view);
}

CLI::Option* AddOutputOption(CLI::App& command, std::string& output, std::string_view formats) {
  return command.add_option("-o,--output", output, fmt::format("Output format: {}", formats))
      ->capture_default_str();
}

CLI::Option* AddPeerNamespaceOption(CLI::App& command, std::string_view peer,
                                    std::string& namespace_name) {
  return command.add_option(fmt::format("--{}-namespace", peer), namespace_name,
                            fmt::format("Namespace of --{} (default: -n)", peer));
}

}  // namespace nodemesh::cli
