// meshctl inject / uninject against a Kubernetes API server (test/lib/kube_apiserver.py: real
// HTTPS, tokens, RBAC), meshctl run as its own process the way a person runs it.
#include <fmt/format.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "test/lib/files.h"
#include "test/lib/kube_apiserver.h"
#include "test/lib/peers.h"
#include "test/lib/process.h"

namespace nodemesh::testing {
namespace {

using nlohmann::json;

constexpr std::string_view kNamespace = "emojivoto";

// A Deployment's pod: owned by its ReplicaSet <deployment>-<hash>, labelled with the hash.
json DeploymentPod(std::string_view name, std::string_view deployment, std::string_view hash,
                   std::string_view app) {
  return {{"apiVersion", "v1"},
          {"kind", "Pod"},
          {"metadata",
           {{"name", name},
            {"namespace", kNamespace},
            {"labels", {{"app", app}, {"pod-template-hash", hash}}},
            {"ownerReferences",
             {{{"apiVersion", "apps/v1"},
               {"kind", "ReplicaSet"},
               {"name", fmt::format("{}-{}", deployment, hash)},
               {"uid", fmt::format("uid-{}-{}", deployment, hash)},
               {"controller", true}}}}}},
          {"spec", {{"containers", {{{"name", "app"}, {"image", "app:1"}}}}}}};
}

json Deployment(std::string_view name, std::string_view app) {
  return {{"apiVersion", "apps/v1"},
          {"kind", "Deployment"},
          {"metadata", {{"name", name}, {"namespace", kNamespace}}},
          {"spec",
           {{"replicas", 2},
            {"selector", {{"matchLabels", {{"app", app}}}}},
            {"template",
             {{"metadata", {{"labels", {{"app", app}}}}},
              {"spec", {{"containers", {{{"name", "app"}, {"image", "app:1"}}}}}}}}}}};
}

// emojivoto with web (two pods), web-canary (one pod whose labels web's selector also
// matches) and voting (one pod), none meshed.
void CreateApp(KubeApiServer& server) {
  server.Create(
      "/api/v1/namespaces",
      {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", kNamespace}}}});
  const std::string deployments =
      fmt::format("/apis/apps/v1/namespaces/{}/deployments", kNamespace);
  server.Create(deployments, Deployment("web", "web"));
  server.Create(deployments, Deployment("web-canary", "web"));
  server.Create(deployments, Deployment("voting", "voting"));
  const std::string pods = fmt::format("/api/v1/namespaces/{}/pods", kNamespace);
  server.Create(pods, DeploymentPod("web-5f7c-aaaaa", "web", "5f7c", "web"));
  server.Create(pods, DeploymentPod("web-5f7c-bbbbb", "web", "5f7c", "web"));
  server.Create(pods, DeploymentPod("web-canary-9d8e-ccccc", "web-canary", "9d8e", "web"));
  server.Create(pods, DeploymentPod("voting-6b6b-ddddd", "voting", "6b6b", "voting"));
}

std::string PodPath(std::string_view name) {
  return fmt::format("/api/v1/namespaces/{}/pods/{}", kNamespace, name);
}

std::string NamespacePath() { return fmt::format("/api/v1/namespaces/{}", kNamespace); }

// The mesh label of an object, or "-" without one.
std::string MeshLabel(const json& object) {
  const json& labels = object["metadata"].value("labels", json::object());
  return labels.value("nodemesh.io/mesh", "-");
}

json WorkloadsAnnotation(KubeApiServer& server) {
  const json ns = server.Get(NamespacePath());
  const json annotations = ns["metadata"].value("annotations", json::object());
  if (!annotations.contains("nodemesh.io/mesh-workloads")) return nullptr;
  return json::parse(annotations["nodemesh.io/mesh-workloads"].get<std::string>());
}

// meshctl with no kubeconfig but the one it is given and no local inventory in its
// environment: HOME is an empty directory.
class Meshctl {
 public:
  CommandResult Run(std::vector<std::string> args,
                    std::vector<std::pair<std::string, std::string>> env = {}) const {
    args.insert(args.begin(), NODEMESH_MESHCTL_BINARY);
    env.emplace_back("HOME", home_.path());
    env.emplace_back("NODEMESH_INVENTORY", "");
    bool kubeconfig_set = false;
    for (const auto& [name, value] : env) kubeconfig_set |= name == "KUBECONFIG";
    if (!kubeconfig_set) env.emplace_back("KUBECONFIG", "");
    CommandResult result = RunCommand(args, std::chrono::seconds(60), {.env = env});
    UNSCOPED_INFO("meshctl " << fmt::format("{}", fmt::join(args.begin() + 1, args.end(), " "))
                             << " -> exit " << result.exit_code << ":\n"
                             << result.output);
    return result;
  }
  const TempDir& home() const { return home_; }

 private:
  TempDir home_;
};

TEST_CASE("inject and uninject a namespace, a deployment and a pod through the API server",
          "[meshctl][kube]") {
  KubeApiServer server;
  CreateApp(server);
  const Meshctl meshctl;
  const std::string kubeconfig = meshctl.home().path() + "/kubeconfig";
  // meshctl's own token, so that its requests can be told from the test's.
  const std::string token = server.IssueToken(kNamespace, "meshctl");
  server.WriteKubeconfig(kubeconfig, token, "test");
  const json web_before =
      server.Get(fmt::format("/apis/apps/v1/namespaces/{}/deployments/web", kNamespace));

  // A namespace, with the kubeconfig from KUBECONFIG, then from ~/.kube/config.
  CommandResult result = meshctl.Run({"inject", "ns/emojivoto"}, {{"KUBECONFIG", kubeconfig}});
  CHECK(result.exit_code == 0);
  CHECK(result.output == "namespace emojivoto labelled nodemesh.io/mesh=enabled\n");
  CHECK(MeshLabel(server.Get(NamespacePath())) == "enabled");
  std::filesystem::create_directories(meshctl.home().path() + "/.kube");
  server.WriteKubeconfig(meshctl.home().path() + "/.kube/config", token, "home");
  result = meshctl.Run({"inject", "namespace", "emojivoto"});
  CHECK(result.exit_code == 0);
  CHECK(result.output ==
        "namespace emojivoto already labelled nodemesh.io/mesh=enabled (no change)\n");
  std::filesystem::remove_all(meshctl.home().path() + "/.kube");

  // A deployment: the annotation for its pods to come, its running pods labelled, no other
  // pod touched (web-canary's pod matches web's selector but is not web's).
  result = meshctl.Run({"inject", "deploy/web", "-n", "emojivoto", "--kubeconfig", kubeconfig});
  CHECK(result.exit_code == 0);
  CHECK(result.output ==
        "namespace emojivoto annotated nodemesh.io/mesh-workloads Deployment/web=enabled\n"
        "pod emojivoto/web-5f7c-aaaaa labelled nodemesh.io/mesh=enabled\n"
        "pod emojivoto/web-5f7c-bbbbb labelled nodemesh.io/mesh=enabled\n");
  CHECK(WorkloadsAnnotation(server) == json{{"Deployment/web", "enabled"}});
  CHECK(MeshLabel(server.Get(PodPath("web-5f7c-aaaaa"))) == "enabled");
  CHECK(MeshLabel(server.Get(PodPath("web-5f7c-bbbbb"))) == "enabled");
  CHECK(MeshLabel(server.Get(PodPath("web-canary-9d8e-ccccc"))) == "-");
  CHECK(MeshLabel(server.Get(PodPath("voting-6b6b-ddddd"))) == "-");

  // Again, as JSON: nothing to change.
  result = meshctl.Run(
      {"inject", "deploy/web", "-n", "emojivoto", "--kubeconfig", kubeconfig, "-o", "json"});
  CHECK(result.exit_code == 0);
  const json document = json::parse(result.output);
  REQUIRE(document["changes"].size() == 3);
  for (const json& change : document["changes"]) CHECK(change["changed"] == false);
  CHECK(document["changes"][0]["entry"] == "Deployment/web");
  CHECK(document["changes"][1]["name"] == "web-5f7c-aaaaa");

  // Uninject of the namespace removes its label; web's pods keep their own, and meshctl
  // says so.
  result = meshctl.Run({"uninject", "ns/emojivoto", "--kubeconfig", kubeconfig});
  CHECK(result.exit_code == 0);
  CHECK(result.output ==
        "namespace emojivoto unlabelled nodemesh.io/mesh (was enabled)\n"
        "meshctl: note: deploy/web: 2 pods stay meshed: the pod is labelled "
        "nodemesh.io/mesh=enabled ('meshctl uninject deploy/web -n emojivoto' changes that)\n");
  CHECK(MeshLabel(server.Get(NamespacePath())) == "-");

  // Uninject of the deployment: "disabled" in the annotation and on its pods.
  result = meshctl.Run({"uninject", "deploy/web", "-n", "emojivoto", "--kubeconfig", kubeconfig});
  CHECK(result.exit_code == 0);
  CHECK(result.output ==
        "namespace emojivoto annotated nodemesh.io/mesh-workloads Deployment/web=disabled\n"
        "pod emojivoto/web-5f7c-aaaaa labelled nodemesh.io/mesh=disabled\n"
        "pod emojivoto/web-5f7c-bbbbb labelled nodemesh.io/mesh=disabled\n");
  CHECK(WorkloadsAnnotation(server) == json{{"Deployment/web", "disabled"}});
  CHECK(MeshLabel(server.Get(PodPath("web-5f7c-aaaaa"))) == "disabled");
  CHECK(MeshLabel(server.Get(PodPath("web-canary-9d8e-ccccc"))) == "-");

  // One pod, with -n from the context's namespace.
  const std::string with_namespace = meshctl.home().path() + "/kubeconfig-emojivoto";
  WriteFile(with_namespace,
            fmt::format("clusters:\n- name: c\n  cluster:\n    server: {}\n"
                        "    certificate-authority: {}\n"
                        "users:\n- name: u\n  user:\n    token: {}\n"
                        "contexts:\n- name: apps\n  context: {{cluster: c, user: u, "
                        "namespace: emojivoto}}\n"
                        "current-context: apps\n",
                        server.url(), server.ca_file(), token));
  result = meshctl.Run({"inject", "pod/voting-6b6b-ddddd", "--kubeconfig", with_namespace});
  CHECK(result.exit_code == 0);
  CHECK(result.output == "pod emojivoto/voting-6b6b-ddddd labelled nodemesh.io/mesh=enabled\n");
  CHECK(MeshLabel(server.Get(PodPath("voting-6b6b-ddddd"))) == "enabled");

  // Not found: said plainly.
  result = meshctl.Run({"inject", "deploy/webb", "-n", "emojivoto", "--kubeconfig", kubeconfig});
  CHECK(result.exit_code == 1);
  CHECK(result.output.find("meshctl: deployment webb not found in namespace emojivoto") == 0);

  // No pod template was touched: no write to any Deployment, its generation unchanged.
  const json web_after =
      server.Get(fmt::format("/apis/apps/v1/namespaces/{}/deployments/web", kNamespace));
  CHECK(web_after["metadata"]["generation"] == web_before["metadata"]["generation"]);
  CHECK(web_after["spec"] == web_before["spec"]);
  CHECK(web_after["metadata"]["resourceVersion"] == web_before["metadata"]["resourceVersion"]);
  // meshctl's writes: patches of the namespace and of web's and voting's pods, nothing else.
  std::vector<std::string> writes;
  for (const KubeApiServer::Request& request : server.Requests()) {
    if (request.user != "system:serviceaccount:emojivoto:meshctl" || request.method == "GET") {
      continue;
    }
    writes.push_back(fmt::format("{} {} {}", request.method, request.path, request.status));
  }
  const std::string ns_patch = fmt::format("PATCH {} 200", NamespacePath());
  const auto pod_patch = [](std::string_view pod) {
    return fmt::format("PATCH {} 200", PodPath(pod));
  };
  CHECK(writes == std::vector<std::string>{
                      ns_patch,  // inject ns
                      ns_patch,
                      pod_patch("web-5f7c-aaaaa"),
                      pod_patch("web-5f7c-bbbbb"),
                      ns_patch,  // uninject ns
                      ns_patch,
                      pod_patch("web-5f7c-aaaaa"),
                      pod_patch("web-5f7c-bbbbb"),
                      pod_patch("voting-6b6b-ddddd"),
                  });
}

TEST_CASE("inject with credentials that may not patch: exit 1, the permission named",
          "[meshctl][kube][errors]") {
  TempDir dir;
  // A service account that may read namespaces, pods and deployments, but not change them.
  const std::string rbac = dir.Write("rbac.json", R"([
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
     "metadata": {"name": "viewer"},
     "rules": [{"apiGroups": [""], "resources": ["namespaces", "pods"], "verbs": ["get", "list"]},
               {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list"]}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
     "metadata": {"name": "viewer"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "viewer"},
     "subjects": [{"kind": "ServiceAccount", "name": "viewer", "namespace": "emojivoto"}]}
  ])");
  KubeApiServer server({.rbac_file = rbac});
  CreateApp(server);
  const Meshctl meshctl;
  const std::string kubeconfig = dir.path() + "/kubeconfig";
  server.WriteKubeconfig(kubeconfig, server.IssueToken(kNamespace, "viewer"), "viewer");

  CommandResult result =
      meshctl.Run({"inject", "deploy/web", "-n", "emojivoto", "--kubeconfig", kubeconfig});
  CHECK(result.exit_code == 1);
  CHECK(result.output.find("meshctl: patch namespaces emojivoto: 403 Forbidden: ") == 0);
  CHECK(result.output.find(R"(cannot patch resource "namespaces")") != std::string::npos);
  CHECK(result.output.find(fmt::format(
            "the credentials of kubeconfig {}, context viewer lack the permission to patch "
            "namespaces emojivoto (check with 'kubectl auth can-i patch namespaces/emojivoto')",
            kubeconfig)) != std::string::npos);
  CHECK(std::count(result.output.begin(), result.output.end(), '\n') == 1);

  result =
      meshctl.Run({"inject", "pod/web-5f7c-aaaaa", "-n", "emojivoto", "--kubeconfig", kubeconfig});
  CHECK(result.exit_code == 1);
  CHECK(result.output.find(R"(cannot patch resource "pods" in API group "" in the namespace )"
                           R"("emojivoto")") != std::string::npos);
  CHECK(result.output.find("lack the permission to patch pods in namespace emojivoto (check "
                           "with 'kubectl auth can-i patch pods -n emojivoto')") !=
        std::string::npos);

  // Nothing changed.
  CHECK(WorkloadsAnnotation(server).is_null());
  CHECK(MeshLabel(server.Get(PodPath("web-5f7c-aaaaa"))) == "-");
}

TEST_CASE("an API server that cannot be reached: which server, which kubeconfig",
          "[meshctl][kube][errors]") {
  KubeApiServer server;
  const Meshctl meshctl;
  const std::string kubeconfig = meshctl.home().path() + "/kubeconfig";
  server.WriteKubeconfig(kubeconfig, server.admin_token(), "test");
  server.Stop();
  const CommandResult result = meshctl.Run({"inject", "ns/emojivoto", "--kubeconfig", kubeconfig});
  CHECK(result.exit_code == 1);
  CHECK(result.output ==
        fmt::format("meshctl: get namespaces emojivoto: cannot connect to the API server at {0} "
                    "(Connection refused) (kubeconfig {1}, context test): check "
                    "that the cluster is up, or choose another kubeconfig or context "
                    "(--kubeconfig, --context)\n",
                    server.url(), kubeconfig));

  // No kubeconfig where one was named.
  const CommandResult missing =
      meshctl.Run({"inject", "ns/emojivoto", "--kubeconfig", kubeconfig + ".missing"});
  CHECK(missing.exit_code == 1);
  CHECK(missing.output.find(
            fmt::format("meshctl: cannot read kubeconfig {}.missing", kubeconfig)) == 0);
}

// A kubeconfig at `path` whose user runs `exec` (the YAML of the exec stanza's fields, each
// line indented by six).
void WriteExecKubeconfig(const std::string& path, const KubeApiServer& server,
                         std::string_view exec) {
  WriteFile(path,
            fmt::format("apiVersion: v1\nkind: Config\n"
                        "clusters:\n- name: c\n  cluster:\n    server: {}\n"
                        "    certificate-authority: {}\n"
                        "users:\n- name: cloud-user\n  user:\n    exec:\n{}"
                        "contexts:\n- name: cloud\n  context: {{cluster: c, user: cloud-user}}\n"
                        "current-context: cloud\n",
                        server.url(), server.ca_file(), exec));
}

// test/lib/exec_plugin.sh copied to <home>/bin/get-token, with its state in <home>/plugin:
// the counting plugin a managed cluster's kubeconfig would name.
struct CountingPlugin {
  explicit CountingPlugin(const Meshctl& meshctl) : dir(meshctl.home().path() + "/plugin") {
    std::filesystem::create_directories(dir);
    std::filesystem::create_directories(meshctl.home().path() + "/bin");
    std::filesystem::copy_file(SourcePath("test/lib/exec_plugin.sh"),
                               meshctl.home().path() + "/bin/get-token");
  }
  int Calls() const {
    const std::string text = ReadFile(dir + "/calls");
    return text.empty() ? 0 : std::stoi(text);
  }
  void HandOut(const std::vector<std::string>& tokens, std::optional<int> lifetime) const {
    std::string lines;
    for (const std::string& token : tokens) lines += token + "\n";
    WriteFile(dir + "/tokens", lines);
    std::filesystem::remove(dir + "/calls");
    if (lifetime.has_value()) {
      WriteFile(dir + "/lifetime", std::to_string(*lifetime));
    } else {
      std::filesystem::remove(dir + "/lifetime");
    }
  }
  std::string dir;
};

// The API requests of `user` from the `first`th on, as "METHOD PATH STATUS".
std::vector<std::string> RequestsOf(KubeApiServer& server, std::string_view user, size_t first) {
  std::vector<std::string> requests;
  const std::vector<KubeApiServer::Request> all = server.Requests();
  for (size_t i = first; i < all.size(); ++i) {
    if (all[i].user != user) continue;
    requests.push_back(fmt::format("{} {} {}", all[i].method, all[i].path, all[i].status));
  }
  return requests;
}

TEST_CASE("inject with an exec plugin's kubeconfig: run once, again after expiry and after a 401",
          "[meshctl][kube][exec]") {
  KubeApiServer server;
  CreateApp(server);
  const Meshctl meshctl;
  const CountingPlugin plugin(meshctl);
  const std::string kubeconfig = meshctl.home().path() + "/kubeconfig";
  // v1beta1 as GKE and EKS write it: interactiveMode left to its default; the command
  // relative to the kubeconfig's directory.
  WriteExecKubeconfig(kubeconfig, server,
                      fmt::format("      apiVersion: client.authentication.k8s.io/v1beta1\n"
                                  "      command: ./bin/get-token\n"
                                  "      args: [--cluster, test]\n"
                                  "      env: [{{name: PLUGIN_DIR, value: {}}}]\n",
                                  plugin.dir));
  WriteFile(plugin.dir + "/api-version", "client.authentication.k8s.io/v1beta1");
  const std::string first = server.IssueToken(kNamespace, "cloud-1");
  const std::string second = server.IssueToken(kNamespace, "cloud-2");
  constexpr std::string_view kFirst = "system:serviceaccount:emojivoto:cloud-1";
  constexpr std::string_view kSecond = "system:serviceaccount:emojivoto:cloud-2";

  // Good for an hour: one run for all of inject's requests.
  plugin.HandOut({first}, 3600);
  size_t start = server.Requests().size();
  CommandResult result =
      meshctl.Run({"inject", "deploy/web", "-n", "emojivoto", "--kubeconfig", kubeconfig});
  CHECK(result.exit_code == 0);
  CHECK(result.output.find("pod emojivoto/web-5f7c-bbbbb labelled nodemesh.io/mesh=enabled\n") !=
        std::string::npos);
  // Its stderr, on meshctl's.
  CHECK(result.output.find("exec plugin run 1\n") != std::string::npos);
  const size_t requests = RequestsOf(server, kFirst, start).size();
  CHECK(requests >= 4);  // get deployment, get and patch namespace, list and patch pods
  CHECK(plugin.Calls() == 1);
  CHECK(ReadFile(plugin.dir + "/exec-info") ==
        R"({"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1beta1",)"
        R"("spec":{"interactive":false}})");

  // Expired as soon as handed out: a run per request.
  plugin.HandOut({first}, 0);
  start = server.Requests().size();
  result = meshctl.Run({"uninject", "deploy/web", "-n", "emojivoto", "--kubeconfig", kubeconfig});
  CHECK(result.exit_code == 0);
  CHECK(plugin.Calls() == static_cast<int>(RequestsOf(server, kFirst, start).size()));
  CHECK(plugin.Calls() >= 4);

  // Revoked by the API server: its 401 runs the plugin again, the request goes once more
  // with the new token, and inject carries on.
  server.RevokeToken(first);
  plugin.HandOut({first, second}, 3600);
  start = server.Requests().size();
  result = meshctl.Run({"inject", "deploy/web", "-n", "emojivoto", "--kubeconfig", kubeconfig});
  CHECK(result.exit_code == 0);
  CHECK(plugin.Calls() == 2);
  const std::vector<KubeApiServer::Request> all = server.Requests();
  REQUIRE(all.size() > start + 1);
  CHECK(all[start].status == 401);
  CHECK(all[start + 1].user == kSecond);
  CHECK(all[start + 1].path == all[start].path);
  CHECK(RequestsOf(server, kSecond, start).size() == requests);
  CHECK(WorkloadsAnnotation(server) == json{{"Deployment/web", "enabled"}});
}

TEST_CASE("an exec plugin that fails, is missing or cannot be interactive is named",
          "[meshctl][kube][exec][errors]") {
  KubeApiServer server;
  const Meshctl meshctl;
  const std::string kubeconfig = meshctl.home().path() + "/kubeconfig";
  const std::string script = meshctl.home().path() + "/failing-plugin";
  WriteFile(script, "#!/bin/sh\necho 'boom: no credentials' >&2\nexit 3\n");
  std::filesystem::permissions(script, std::filesystem::perms::owner_all);
  const std::string prefix = fmt::format(
      "meshctl: get namespaces emojivoto: getting credentials for user cloud-user of kubeconfig "
      "{}, context cloud: ",
      kubeconfig);

  WriteExecKubeconfig(kubeconfig, server,
                      "      apiVersion: client.authentication.k8s.io/v1\n"
                      "      command: ./failing-plugin\n"
                      "      interactiveMode: Never\n");
  CommandResult result = meshctl.Run({"inject", "ns/emojivoto", "--kubeconfig", kubeconfig});
  CHECK(result.exit_code == 1);
  CHECK(result.output == fmt::format("{}exec plugin {} failed with exit code 3; its stderr:\n"
                                     "  boom: no credentials\n",
                                     prefix, script));

  WriteExecKubeconfig(kubeconfig, server,
                      "      apiVersion: client.authentication.k8s.io/v1\n"
                      "      command: aws-iam-authenticator-23\n"
                      "      interactiveMode: IfAvailable\n"
                      "      installHint: 'install it with: brew install aws-iam-authenticator'\n");
  result = meshctl.Run({"inject", "ns/emojivoto", "--kubeconfig", kubeconfig});
  CHECK(result.exit_code == 1);
  CHECK(result.output.find(prefix + "exec plugin aws-iam-authenticator-23 not found (looked in "
                                    "PATH=") == 0);
  CHECK(result.output.find("the kubeconfig says: install it with: brew install "
                           "aws-iam-authenticator. See https://kubernetes.io/") !=
        std::string::npos);

  WriteExecKubeconfig(kubeconfig, server,
                      "      apiVersion: client.authentication.k8s.io/v1\n"
                      "      command: ./failing-plugin\n"
                      "      interactiveMode: Always\n");
  result = meshctl.Run({"inject", "ns/emojivoto", "--kubeconfig", kubeconfig});
  CHECK(result.exit_code == 1);
  CHECK(result.output == prefix +
                             "exec plugin cannot support interactive mode: standard input is not "
                             "a terminal\n");

  // A plugin whose token the API server refuses, again after a second run: named.
  const CountingPlugin plugin(meshctl);
  const std::string revoked = server.IssueToken(kNamespace, "cloud-1");
  server.RevokeToken(revoked);
  plugin.HandOut({revoked}, std::nullopt);
  WriteExecKubeconfig(kubeconfig, server,
                      fmt::format("      apiVersion: client.authentication.k8s.io/v1\n"
                                  "      command: bin/get-token\n"
                                  "      interactiveMode: Never\n"
                                  "      env: [{{name: PLUGIN_DIR, value: {}}}]\n",
                                  plugin.dir));
  result = meshctl.Run({"inject", "ns/emojivoto", "--kubeconfig", kubeconfig});
  CHECK(result.exit_code == 1);
  CHECK(plugin.Calls() == 2);
  CHECK(result.output.find(fmt::format(
            "meshctl: get namespaces emojivoto: 401 Unauthorized: Unauthorized: the API server "
            "did not accept what exec plugin {}/bin/get-token (user cloud-user of kubeconfig {}, "
            "context cloud) handed out, nor what it handed out when run again",
            meshctl.home().path(), kubeconfig)) != std::string::npos);

  // A kubeconfig client-go would refuse, refused with its words.
  WriteExecKubeconfig(kubeconfig, server,
                      "      apiVersion: client.authentication.k8s.io/v1\n"
                      "      command: ./failing-plugin\n");
  result = meshctl.Run({"inject", "ns/emojivoto", "--kubeconfig", kubeconfig});
  CHECK(result.exit_code == 1);
  CHECK(result.output == fmt::format("meshctl: kubeconfig {}: interactiveMode must be specified "
                                     "for cloud-user to use exec authentication plugin\n",
                                     kubeconfig));
}

}  // namespace
}  // namespace nodemesh::testing
