#include "cli/views/inject.h"

#include "cli/views/common.h"
#include "common/base/format.h"

namespace nodemesh::cli {

std::string RenderMeshChanges(const std::vector<MeshChange>& changes, bool meshed,
                              OutputFormat format) {
  if (format == OutputFormat::kJson) {
    views::Json list = views::Json::array();
    for (const MeshChange& change : changes) {
      const size_t slash = change.pod.find('/');
      views::Json entry;
      entry["type"] = "pod";
      entry["namespace"] = change.pod.substr(0, slash);
      entry["name"] = slash == std::string::npos ? change.pod : change.pod.substr(slash + 1);
      entry["meshed"] = meshed;
      entry["changed"] = change.changed;
      list.push_back(std::move(entry));
    }
    views::Json document;
    document["changes"] = std::move(list);
    return views::Document(document);
  }
  const std::string_view state = meshed ? "meshed" : "unmeshed";
  std::string text;
  for (const MeshChange& change : changes) {
    text += change.changed ? fmt::format("pod {} {}\n", change.pod, state)
                           : fmt::format("pod {} already {} (no change)\n", change.pod, state);
  }
  return text;
}

std::string RenderKubeChanges(const std::vector<KubeChange>& changes, OutputFormat format) {
  if (format == OutputFormat::kJson) {
    views::Json list = views::Json::array();
    for (const KubeChange& change : changes) {
      views::Json entry;
      entry["type"] = change.type;
      entry["namespace"] = change.type == "namespace" ? change.name : change.namespace_name;
      entry["name"] = change.name;
      entry["field"] = change.entry.empty() ? "label" : "annotation";
      entry["key"] = change.key;
      entry["entry"] = change.entry.empty() ? views::Json(nullptr) : views::Json(change.entry);
      entry["value"] = change.value ? views::Json(*change.value) : views::Json(nullptr);
      entry["previous"] = change.previous ? views::Json(*change.previous) : views::Json(nullptr);
      entry["changed"] = change.changed;
      list.push_back(std::move(entry));
    }
    views::Json document;
    document["changes"] = std::move(list);
    return views::Document(document);
  }
  std::string text;
  for (const KubeChange& change : changes) {
    const std::string object =
        change.type == "namespace"
            ? fmt::format("namespace {}", change.name)
            : fmt::format("{} {}/{}", change.type, change.namespace_name, change.name);
    std::string line;
    if (!change.entry.empty()) {
      const std::string what =
          fmt::format("annotated {} {}={}", change.key, change.entry, change.value.value_or(""));
      line = change.changed ? fmt::format("{} {}", object, what)
                            : fmt::format("{} already {} (no change)", object, what);
    } else if (change.value) {
      const std::string what = fmt::format("labelled {}={}", change.key, *change.value);
      line = change.changed ? fmt::format("{} {}", object, what)
                            : fmt::format("{} already {} (no change)", object, what);
    } else {
      line = change.changed ? fmt::format("{} unlabelled {} (was {})", object, change.key,
                                          change.previous.value_or(""))
                            : fmt::format("{} not labelled {} (no change)", object, change.key);
    }
    text += line + "\n";
  }
  return text;
}

}  // namespace nodemesh::cli
