// What a command points at and how it answers, declared and checked in one place for every
// command: the resource (the words TYPE[/NAME]), its namespace (-n, or -A for every
// namespace), the window the metrics are taken over (-t) and the output format (-o). Each
// command says which of them it takes (ScopeSpec); their spelling, help and errors are then
// the same wherever they appear.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "cli/resource.h"
#include "cli/views/views.h"
#include "nodemesh/v1/nodemesh.pb.h"

namespace nodemesh::cli {

struct ScopeSpec {
  // Named in the errors: "stat needs a resource, ...", "unknown output format 'x' for stat".
  std::string_view command{};
  // -n's help and default. An empty default leaves the namespace to the command (inject's is
  // the kubeconfig context's on Kubernetes).
  std::string_view namespace_help = "Namespace of the resource";
  std::string_view default_namespace = "default";
  bool all_namespaces = false;  // -A
  // -n takes a comma list, "a,b" (stat, edges: answered by one View of those namespaces).
  bool namespace_list = false;
  // A Service (svc or svc/NAME) too, beside the ResourceTypes (stat: see common/resource).
  bool services = false;
  std::string_view default_window{};  // -t's default; empty: no -t
  // What -o accepts (empty: no -o), its help ("table, wide or json") and its default. An
  // empty default is the command's own line format (kTable): tap's one line per event.
  std::vector<OutputFormat> outputs{};
  std::string_view output_help{};
  std::string_view default_output = "table";
};

// The flags of a ScopeSpec, checked.
struct Scope {
  // What the words name. A Service has no ResourceType: `service` is set and only
  // `resource.name` (its name, or empty for every Service) counts.
  ResourceRef resource;
  bool service = false;
  std::string namespace_name;  // -n, else its default; the first of a list
  // -n's namespaces, each once, in the order given: one, or more where the spec takes a list.
  std::vector<std::string> namespaces;
  bool all_namespaces = false;  // -A
  int64_t window_seconds = 0;   // -t
  std::string window;           // -t as written, for messages ("in the last 1m")
  OutputFormat output = OutputFormat::kTable;
  bool takes_services = false;  // ScopeSpec::services, for Peer

  // The API's selector: the resource in its namespace, or in every namespace with -A.
  v1::Resource Selector() const;
  // A View of `kind` over -n's namespaces, of the words' type, over -t.
  v1::ViewRequest View(v1::ViewRequest::Kind kind) const;
  // What the words name, for messages: "deploy/web", "deploy", "svc/web-svc", "svc".
  std::string What() const;
  // --from or --to (`flag`: "from" or "to"): TYPE/NAME, or svc/NAME where the scope takes
  // Services, in `peer_namespace` (--from-namespace, --to-namespace), else in -n. With -A
  // there is no -n to fall back on: only a namespace needs none.
  absl::StatusOr<v1::Resource> Peer(const std::string& text, const std::string& peer_namespace,
                                    std::string_view flag) const;
};

class ScopeFlags {
 public:
  explicit ScopeFlags(ScopeSpec spec) : spec_(std::move(spec)) {}

  // The resource, -n and (when the spec has it) -A: what the command points at.
  void AddTarget(CLI::App& command);
  // -t and -o, when the spec has them: how the answer is taken and shown. Added after the
  // command's own flags, so that --help lists them last.
  void AddAnswer(CLI::App& command);

  // The flags given, checked in the order a person reads them: the resource, -n with -A,
  // -o, -t. Each error is a usage error (InvalidArgument) saying what to write instead.
  absl::StatusOr<Scope> Parse() const;

 private:
  ScopeSpec spec_;
  std::vector<std::string> words_;
  std::string namespace_name_;
  const CLI::Option* namespace_option_ = nullptr;  // to tell -n given from its default
  bool all_namespaces_ = false;
  std::string window_;
  std::string output_;
};

// A View's rows (or edges) as StatSummary's (Edges') answer, with the view's stale nodes and
// window, so that stat and edges print a view as their own answers.
v1::StatSummaryResponse StatsOfView(const v1::ViewResponse& view);
v1::EdgesResponse EdgesOfView(const v1::ViewResponse& view);

// -o, for a command with no other scope (shell): "Output format: <formats>".
CLI::Option* AddOutputOption(CLI::App& command, std::string& output, std::string_view formats);

// --from-namespace or --to-namespace (`peer`: "from" or "to"), the namespace of that flag's
// resource (Scope::Peer).
CLI::Option* AddPeerNamespaceOption(CLI::App& command, std::string_view peer,
                                    std::string& namespace_name);

}  // namespace nodemesh::cli
