// meshctl edges TYPE: who calls whom.
#include <fmt/format.h>

#include <memory>

#include "cli/commands/command.h"
#include "cli/views/views.h"

namespace nodemesh::cli {
namespace {

struct EdgesFlags {
  std::vector<std::string> words;
  std::string namespace_name = "default";
  bool all_namespaces = false;
  const CLI::Option* namespace_option = nullptr;  // to tell -n given from its default
  std::string window = "1m";
  std::string output = "table";
};

int RunEdges(const EdgesFlags& flags, const Invocation& invocation) {
  const absl::StatusOr<ResourceRef> ref = ParseResourceWords(flags.words, "edges");
  if (!ref.ok()) return invocation.Fail(ref.status());
  if (flags.all_namespaces && flags.namespace_option->count() > 0) {
    return invocation.Fail(NamespaceOrAllError());
  }
  const absl::StatusOr<OutputFormat> format =
      ParseOutputFormat(flags.output, "edges", {OutputFormat::kTable, OutputFormat::kJson});
  if (!format.ok()) return invocation.Fail(format.status());
  const absl::StatusOr<int64_t> window = ParseWindow(flags.window);
  if (!window.ok()) return invocation.Fail(window.status());

  v1::EdgesRequest request;
  *request.mutable_selector() =
      ToApiResource(*ref, flags.all_namespaces ? "" : flags.namespace_name);
  request.set_window_seconds(*window);
  absl::StatusOr<ApiClient> client = invocation.Client();
  if (!client.ok()) return invocation.Fail(client.status());
  const absl::StatusOr<v1::EdgesResponse> response = client->Edges(request);
  if (!response.ok()) return invocation.Fail(response.status());

  const Context& context = invocation.context;
  if (response->edges().empty() && *format != OutputFormat::kJson) {
    context.err << fmt::format("No edges of {} found in the last {}.\n",
                               flags.all_namespaces ? Label(*ref)
                                                    : fmt::format("{} in namespace {}", Label(*ref),
                                                                  request.selector().namespace_()),
                               flags.window);
  } else {
    context.out << RenderEdges(*response, *format);
  }
  context.err << RenderWindowNotes(*response, *window, context.now_unix_seconds());
  return 0;
}

}  // namespace

void AddEdgesCommand(CLI::App& app, Invocation& invocation) {
  auto flags = std::make_shared<EdgesFlags>();
  CLI::App* command = app.add_subcommand(
      "edges", "Who calls whom: callers and callees of resources, with service accounts");
  AddResourceArgument(*command, flags->words);
  flags->namespace_option = AddNamespaceOption(*command, flags->namespace_name);
  command->add_flag("-A,--all-namespaces", flags->all_namespaces, "Every namespace");
  AddWindowOption(*command, flags->window);
  AddOutputOption(*command, flags->output, "table or json");
  command->footer("Example:\n  meshctl edges deploy -n emojivoto");
  command->callback([flags, &invocation] {
    invocation.run = [flags, &invocation] { return RunEdges(*flags, invocation); };
  });
}

}  // namespace nodemesh::cli
