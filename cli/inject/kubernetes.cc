#include "cli/inject/kubernetes.h"

#include <fmt/format.h>

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "common/base/format.h"
#include "common/base/percent_encoding.h"
#include "common/kube/object.h"

namespace nodemesh::cli {
namespace {

using kube::At;
using nlohmann::json;

constexpr std::string_view kEnabled = "enabled";
constexpr std::string_view kDisabled = "disabled";
// Two runs racing on one namespace's annotation: each conflict means the other run
// succeeded, so a few attempts are plenty.
constexpr int kAnnotationAttempts = 5;
constexpr std::string_view kPodPageSize = "500";

// The API's collection for a workload type ("deployments"), and its kubectl name for
// messages ("deployment").
std::string_view CollectionOf(ResourceType type) {
  switch (type) {
    case ResourceType::kDeployment:
      return "deployments";
    case ResourceType::kStatefulSet:
      return "statefulsets";
    case ResourceType::kDaemonSet:
      return "daemonsets";
    case ResourceType::kPod:
      return "pods";
    case ResourceType::kNamespace:
      return "namespaces";
  }
  return "";
}

std::string NamespacePath(std::string_view namespace_name) {
  return fmt::format("/api/v1/namespaces/{}", PercentEncode(namespace_name));
}

std::string PodPath(std::string_view namespace_name, std::string_view name) {
  return fmt::format("/api/v1/namespaces/{}/pods/{}", PercentEncode(namespace_name),
                     PercentEncode(name));
}

std::string WorkloadsPath(ResourceType type, std::string_view namespace_name) {
  return fmt::format("/apis/apps/v1/namespaces/{}/{}", PercentEncode(namespace_name),
                     CollectionOf(type));
}

// An API failure in words that say what to do. `verb` and `resource` are the permission
// the request needs ("patch", "pods"); `namespace_name` is empty for a namespace itself,
// whose name is then `name`.
absl::Status Explain(const absl::Status& status, const kube::Config& config, std::string_view verb,
                     std::string_view resource, std::string_view namespace_name,
                     std::string_view name) {
  const std::string source = config.source.empty() ? config.server : config.source;
  switch (status.code()) {
    case absl::StatusCode::kPermissionDenied: {
      const std::string permission =
          namespace_name.empty()
              ? fmt::format("{} {} {}", verb, resource, name)
              : fmt::format("{} {} in namespace {}", verb, resource, namespace_name);
      const std::string check =
          namespace_name.empty()
              ? fmt::format("kubectl auth can-i {} {}/{}", verb, resource, name)
              : fmt::format("kubectl auth can-i {} {} -n {}", verb, resource, namespace_name);
      return absl::PermissionDeniedError(
          fmt::format("{}: the credentials of {} lack the permission to {} (check with '{}')",
                      status.message(), source, permission, check));
    }
    case absl::StatusCode::kUnauthenticated:
      if (config.exec.has_value()) {
        return absl::UnauthenticatedError(fmt::format(
            "{}: the API server did not accept what exec plugin {} (user {} of {}) handed out, "
            "nor what it handed out when run again; check which identity the plugin logs in as "
            "(run it yourself) and that the cluster knows it",
            status.message(), config.exec->command, config.exec->user, source));
      }
      return absl::UnauthenticatedError(fmt::format(
          "{}: the API server did not accept the credentials of {}; if they are a token, it may "
          "have expired (kubectl create token SERVICE_ACCOUNT -n NAMESPACE makes a new one)",
          status.message(), source));
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded: {
      const std::string message(status.message());
      const std::string server = message.find(config.server) == std::string::npos
                                     ? fmt::format("server {}, ", config.server)
                                     : "";
      return absl::UnavailableError(
          fmt::format("{} ({}{}): check that the cluster is up, or choose another kubeconfig or "
                      "context (--kubeconfig, --context)",
                      message, server, source));
    }
    case absl::StatusCode::kInvalidArgument:
      // The client's word for an unusable server address: a problem of the kubeconfig, not of
      // meshctl's arguments (exit 1, not 2).
      return absl::FailedPreconditionError(fmt::format("{} (from {})", status.message(), source));
    default:
      // A credential's error (an exec plugin's) names the source already.
      if (absl::StrContains(status.message(), source)) return status;
      return absl::Status(status.code(), fmt::format("{} ({})", status.message(), source));
  }
}

// The requests of one run, each error explained.
class Api {
 public:
  explicit Api(kube::Client& client) : client_(client) {}

  absl::StatusOr<json> GetNamespace(std::string_view name) {
    absl::StatusOr<json> object = client_.Get(NamespacePath(name));
    if (object.status().code() == absl::StatusCode::kNotFound) {
      return absl::NotFoundError(fmt::format(
          "namespace {} not found (kubectl get namespaces lists them; {})", name, Source()));
    }
    if (!object.ok()) return Explain(object.status(), "get", "namespaces", "", name);
    return object;
  }

  // GET of one workload or pod; a 404 says which was not found where.
  absl::StatusOr<json> GetNamed(ResourceType type, std::string_view namespace_name,
                                std::string_view name) {
    const std::string path =
        type == ResourceType::kPod
            ? PodPath(namespace_name, name)
            : fmt::format("{}/{}", WorkloadsPath(type, namespace_name), PercentEncode(name));
    absl::StatusOr<json> object = client_.Get(path);
    if (object.status().code() == absl::StatusCode::kNotFound) {
      return absl::NotFoundError(
          fmt::format("{} {} not found in namespace {} (kubectl get {} -n {} lists them; {})",
                      ResourceTypeName(type), name, namespace_name, CollectionOf(type),
                      namespace_name, Source()));
    }
    if (!object.ok()) {
      return Explain(object.status(), "get", CollectionOf(type), namespace_name, name);
    }
    return object;
  }

  // The items of a collection, every page of it.
  absl::StatusOr<std::vector<json>> List(std::string_view path, std::string_view resource,
                                         std::string_view namespace_name,
                                         std::string_view label_selector = {}) {
    std::vector<json> items;
    std::string continue_token;
    do {
      std::string query = fmt::format("?limit={}", kPodPageSize);
      if (!label_selector.empty()) query += "&labelSelector=" + PercentEncode(label_selector);
      if (!continue_token.empty()) query += "&continue=" + PercentEncode(continue_token);
      absl::StatusOr<json> page = client_.Get(fmt::format("{}{}", path, query));
      if (!page.ok()) return Explain(page.status(), "list", resource, namespace_name, "");
      if (const json& page_items = At(*page, "items"); page_items.is_array()) {
        for (const json& item : page_items) items.push_back(item);
      }
      continue_token = MetadataString(*page, "continue");
    } while (!continue_token.empty());
    return items;
  }

  absl::StatusOr<std::vector<json>> ListPods(std::string_view namespace_name,
                                             std::string_view label_selector = {}) {
    return List(fmt::format("/api/v1/namespaces/{}/pods", PercentEncode(namespace_name)), "pods",
                namespace_name, label_selector);
  }

  // The merge patch of `edit` on the object at `path`; returns the object as it is now. A
  // 409 Conflict (the resourceVersion moved) comes back as ABORTED, unexplained, so the
  // caller can read the object again and retry.
  absl::StatusOr<json> Patch(const std::string& path, const KubeEdit& edit) {
    absl::StatusOr<json> object = client_.MergePatch(path, edit.patch);
    if (object.ok() || object.status().code() == absl::StatusCode::kAborted) return object;
    const bool is_namespace = edit.change.type == "namespace";
    return Explain(object.status(), "patch", is_namespace ? "namespaces" : "pods",
                   edit.change.namespace_name, edit.change.name);
  }

 private:
  absl::Status Explain(const absl::Status& status, std::string_view verb, std::string_view resource,
                       std::string_view namespace_name, std::string_view name) {
    return cli::Explain(status, client_.config(), verb, resource, namespace_name, name);
  }
  std::string Source() const {
    return client_.config().source.empty() ? client_.config().server : client_.config().source;
  }

  kube::Client& client_;
};

// Labels every pod of `pods` whose label is not `value` yet; returns the pods as they are
// now, and adds a change per pod.
absl::StatusOr<std::vector<json>> LabelPods(Api& api, std::vector<json> pods,
                                            std::string_view value,
                                            std::vector<KubeChange>& changes) {
  std::sort(pods.begin(), pods.end(), ByName);
  std::vector<json> now;
  for (json& pod : pods) {
    const KubeEdit edit = PlanMeshLabel(pod, "pod", value);
    if (!edit.patch.is_null()) {
      absl::StatusOr<json> patched =
          api.Patch(PodPath(edit.change.namespace_name, edit.change.name), edit);
      if (patched.status().code() == absl::StatusCode::kNotFound) {
        continue;  // the pod left between the list and the patch: nothing to mesh
      }
      if (!patched.ok()) return patched.status();
      pod = *std::move(patched);
    }
    changes.push_back(edit.change);
    now.push_back(std::move(pod));
  }
  return now;
}

// Sets the workloads' entries in the namespace's annotation, reading the namespace again
// when another writer got in between. Returns the namespace as it is now.
absl::StatusOr<json> AnnotateWorkloads(Api& api, std::string_view namespace_name,
                                       const std::vector<kube::Workload>& workloads,
                                       std::string_view value, std::vector<KubeChange>& changes) {
  for (int attempt = 1;; ++attempt) {
    absl::StatusOr<json> namespace_object = api.GetNamespace(namespace_name);
    if (!namespace_object.ok()) return namespace_object.status();
    absl::StatusOr<std::vector<KubeEdit>> edits =
        PlanWorkloadEntries(*namespace_object, workloads, value);
    if (!edits.ok()) return edits.status();
    // One patch carries every entry; it is on each edit.
    const auto with_patch = std::find_if(
        edits->begin(), edits->end(), [](const KubeEdit& edit) { return !edit.patch.is_null(); });
    if (with_patch != edits->end()) {
      absl::StatusOr<json> patched = api.Patch(NamespacePath(namespace_name), *with_patch);
      if (patched.status().code() == absl::StatusCode::kAborted) {
        if (attempt < kAnnotationAttempts) continue;
        return absl::AbortedError(fmt::format(
            "{}: the namespace kept changing while meshctl edited it ({} attempts); run meshctl "
            "again",
            patched.status().message(), kAnnotationAttempts));
      }
      if (!patched.ok()) return patched.status();
      namespace_object = *std::move(patched);
    }
    for (const KubeEdit& edit : *edits) changes.push_back(edit.change);
    return namespace_object;
  }
}

absl::StatusOr<KubeInjectResult> MeshNamespace(Api& api, std::string_view namespace_name,
                                               bool meshed) {
  absl::StatusOr<json> namespace_object = api.GetNamespace(namespace_name);
  if (!namespace_object.ok()) return namespace_object.status();
  // Uninject removes the label rather than writing "disabled": the namespace is as it was
  // before inject, and a namespace-wide "disabled" would be one more setting to undo later.
  const KubeEdit edit = PlanMeshLabel(*namespace_object, "namespace",
                                      meshed ? std::optional(kEnabled) : std::nullopt);
  if (!edit.patch.is_null()) {
    namespace_object = api.Patch(NamespacePath(namespace_name), edit);
    if (!namespace_object.ok()) return namespace_object.status();
  }
  KubeInjectResult result;
  result.changes.push_back(edit.change);
  // Advice only: credentials that may patch the namespace but not list its pods still did
  // what was asked.
  if (absl::StatusOr<std::vector<json>> pods = api.ListPods(namespace_name); pods.ok()) {
    result.notes = MeshNotes(*pods, *namespace_object, meshed);
  }
  return result;
}

absl::StatusOr<KubeInjectResult> MeshPods(Api& api, const ResourceRef& ref,
                                          std::string_view namespace_name, bool meshed) {
  std::vector<json> pods;
  if (!ref.name.empty()) {
    absl::StatusOr<json> pod = api.GetNamed(ResourceType::kPod, namespace_name, ref.name);
    if (!pod.ok()) return pod.status();
    pods.push_back(*std::move(pod));
  } else {
    absl::StatusOr<std::vector<json>> listed = api.ListPods(namespace_name);
    if (!listed.ok()) return listed.status();
    if (listed->empty()) {
      return absl::NotFoundError(fmt::format("namespace {} has no pods", namespace_name));
    }
    pods = *std::move(listed);
  }
  KubeInjectResult result;
  absl::StatusOr<std::vector<json>> labelled =
      LabelPods(api, std::move(pods), meshed ? kEnabled : kDisabled, result.changes);
  if (!labelled.ok()) return labelled.status();
  // The pods' own labels decide now; only what never meshes can disagree.
  result.notes = MeshNotes(*labelled, json::object(), meshed);
  return result;
}

absl::StatusOr<KubeInjectResult> MeshWorkloads(Api& api, const ResourceRef& ref,
                                               std::string_view namespace_name, bool meshed) {
  const std::string kind(OwnerKindOf(ref.type));
  std::vector<kube::Workload> workloads;
  std::string selector;
  if (!ref.name.empty()) {
    absl::StatusOr<json> workload = api.GetNamed(ref.type, namespace_name, ref.name);
    if (!workload.ok()) return workload.status();
    workloads.push_back({kind, ref.name});
    absl::StatusOr<std::string> workload_selector = LabelSelectorOf(*workload);
    if (!workload_selector.ok()) return workload_selector.status();
    selector = *std::move(workload_selector);
  } else {
    absl::StatusOr<std::vector<json>> listed =
        api.List(WorkloadsPath(ref.type, namespace_name), CollectionOf(ref.type), namespace_name);
    if (!listed.ok()) return listed.status();
    for (const json& workload : *listed) {
      workloads.push_back({kind, MetadataString(workload, "name")});
    }
    if (workloads.empty()) {
      return absl::NotFoundError(
          fmt::format("namespace {} has no {}", namespace_name, CollectionOf(ref.type)));
    }
    std::sort(workloads.begin(), workloads.end(),
              [](const auto& a, const auto& b) { return a.name < b.name; });
  }

  // The annotation first: a pod started after the list below follows it.
  const std::string_view value = meshed ? kEnabled : kDisabled;
  KubeInjectResult result;
  absl::StatusOr<json> namespace_object =
      AnnotateWorkloads(api, namespace_name, workloads, value, result.changes);
  if (!namespace_object.ok()) return namespace_object.status();

  absl::StatusOr<std::vector<json>> candidates = api.ListPods(namespace_name, selector);
  if (!candidates.ok()) return candidates.status();
  absl::StatusOr<std::vector<json>> labelled =
      LabelPods(api, PodsOfWorkloads(json(*candidates), workloads), value, result.changes);
  if (!labelled.ok()) return labelled.status();
  result.notes = MeshNotes(*labelled, *namespace_object, meshed);
  return result;
}

}  // namespace

absl::StatusOr<KubeInjectResult> SetMeshedInKubernetes(kube::Client& client, const ResourceRef& ref,
                                                       std::string_view namespace_name,
                                                       bool meshed) {
  Api api(client);
  switch (ref.type) {
    case ResourceType::kNamespace:
      return MeshNamespace(api, ref.name.empty() ? namespace_name : ref.name, meshed);
    case ResourceType::kPod:
      return MeshPods(api, ref, namespace_name, meshed);
    case ResourceType::kDeployment:
    case ResourceType::kStatefulSet:
    case ResourceType::kDaemonSet:
      return MeshWorkloads(api, ref, namespace_name, meshed);
  }
  return absl::InternalError("unknown resource type");
}

}  // namespace nodemesh::cli
