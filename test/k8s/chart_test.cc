// k8s tier: the Helm chart (helm/nodemesh). helm lint; helm template against golden files
// with the default values and with test/k8s/custom-values.yaml (UPDATE_GOLDEN=1 rewrites
// them); values the schema refuses, naming the key; every rendered object checked against
// the Kubernetes API's types, unknown fields refused (test/k8s/validate.js), and a copy of the
// chart with a misspelt field refused; the PodMonitor only where the cluster serves it; the
// install refused in a namespace whose Pod Security level would refuse the agent's pods,
// checked against the test API server; and the real agent, on a simulated node, run with the
// chart's ClusterRole enforced by that server (this one needs root).
//
// Helm, kubectl and the validator's packages come from test/install-deps.sh, under
// NODEMESH_TOOLS_DIR (a CMake cache variable, /opt/nodemesh-tools by default); without
// them the tests fail, saying so.
#include <yaml-cpp/yaml.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "test/lib/agent_process.h"
#include "test/lib/files.h"
#include "test/lib/kube_apiserver.h"
#include "test/lib/kubelet.h"
#include "test/lib/process.h"
#include "test/lib/test_node.h"
#include "test/lib/tier.h"

namespace nodemesh::testing {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

const std::string kSourceDir = NODEMESH_SOURCE_DIR;
const std::string kChart = kSourceDir + "/helm/nodemesh";
const std::string kToolsDir = NODEMESH_TOOLS_DIR;
const std::string kHelm = kToolsDir + "/bin/helm";
const std::string kValidatorModules = kToolsDir + "/validator/node_modules";
const std::string kValidator = kSourceDir + "/test/k8s/validate.js";
const std::string kCustomValues = kSourceDir + "/test/k8s/custom-values.yaml";
// Renders are made for one Kubernetes version, so that they do not depend on Helm's default.
const std::string kKubeVersion = "1.31.0";
// What Prometheus Operator's CRDs serve: the PodMonitor is rendered only where this is.
const std::string kPodMonitorApi = "monitoring.coreos.com/v1/PodMonitor";

void RequireTools() {
  for (const std::string& path : {kHelm, kValidatorModules + "/typescript/package.json",
                                  kValidatorModules + "/kubernetes-models/package.json"}) {
    if (!fs::exists(path)) {
      FAIL(path << " is missing: run `bash test/install-deps.sh`, which installs Helm and the "
                   "manifest validator under "
                << kToolsDir);
    }
  }
}

// Helm with its own cache, configuration and data directories, so that tests running side
// by side never share them, and no kubeconfig unless `kubeconfig` names one.
class Helm {
 public:
  Helm() { RequireTools(); }

  CommandResult Run(std::vector<std::string> args, const std::string& kubeconfig = "") const {
    args.insert(args.begin(), kHelm);
    return RunCommand(args, 120s,
                      {.env = {{"HELM_CACHE_HOME", home_.path() + "/cache"},
                               {"HELM_CONFIG_HOME", home_.path() + "/config"},
                               {"HELM_DATA_HOME", home_.path() + "/data"},
                               {"KUBECONFIG", kubeconfig.empty() ? "/dev/null" : kubeconfig}}});
  }

  // `helm template` of `chart` as release nodemesh in namespace nodemesh; `args` are more
  // flags (values, --api-versions). Fails the test if Helm does.
  std::string Template(const std::string& chart, std::vector<std::string> args = {}) const {
    std::vector<std::string> command = {"template", "nodemesh",       chart,       "--namespace",
                                        "nodemesh", "--kube-version", kKubeVersion};
    command.insert(command.end(), args.begin(), args.end());
    const CommandResult result = Run(command);
    INFO("helm " << Join(command) << ":\n" << result.output);
    REQUIRE(result.exit_code == 0);
    return result.output;
  }

  static std::string Join(const std::vector<std::string>& words) {
    std::string joined;
    for (const std::string& word : words) joined += (joined.empty() ? "" : " ") + word;
    return joined;
  }

 private:
  TempDir home_;
};

// test/k8s/golden/NAME, compared byte for byte; UPDATE_GOLDEN=1 rewrites it instead.
void CheckGolden(const std::string& name, const std::string& actual) {
  const std::string path = kSourceDir + "/test/k8s/golden/" + name;
  if (const char* update = std::getenv("UPDATE_GOLDEN"); update && std::string(update) == "1") {
    fs::create_directories(fs::path(path).parent_path());
    WriteFile(path, actual);
    WARN("rewrote test/k8s/golden/" << name);
    return;
  }
  if (!fs::exists(path))
    FAIL("test/k8s/golden/" << name << " is missing: run with UPDATE_GOLDEN=1");
  INFO("golden file test/k8s/golden/" << name << " (UPDATE_GOLDEN=1 rewrites it; review the diff)");
  CHECK(actual == ReadFile(path));
}

// What test/k8s/validate.js says of the manifests.
CommandResult Validate(const std::string& manifests) {
  TempDir dir;
  const std::string file = dir.Write("manifests.yaml", manifests);
  return RunCommand({"node", kValidator, kValidatorModules, file}, 120s);
}

// The kinds and names of the objects in `manifests`, "Kind/name" each.
std::vector<std::string> Objects(const std::string& manifests) {
  std::vector<std::string> objects;
  std::istringstream lines(manifests);
  std::string line, kind;
  bool in_metadata = false;
  while (std::getline(lines, line)) {
    if (line == "---") kind.clear();
    if (line.rfind("kind: ", 0) == 0) kind = line.substr(6);
    if (line == "metadata:") in_metadata = true;
    if (in_metadata && line.rfind("  name: ", 0) == 0) {
      objects.push_back(kind + "/" + line.substr(8));
      in_metadata = false;
    }
  }
  return objects;
}

// A copy of the chart in a temporary directory, to break or extend.
class ChartCopy {
 public:
  ChartCopy() { fs::copy(kChart, path(), fs::copy_options::recursive); }
  std::string path() const { return dir_.path() + "/nodemesh"; }

  // Replaces the first `from` in the chart's file `relative` by `to`; fails if it is absent.
  void Replace(const std::string& relative, const std::string& from, const std::string& to) {
    const std::string file = path() + "/" + relative;
    std::string text = ReadFile(file);
    const size_t at = text.find(from);
    REQUIRE(at != std::string::npos);
    text.replace(at, from.size(), to);
    WriteFile(file, text);
  }

  // Adds templates/zz-notes.yaml, whose output is `notes: "<NOTES.txt rendered>"`, so that
  // `helm template` shows what `helm install` would print.
  void RenderNotes() {
    fs::copy_file(path() + "/templates/NOTES.txt", path() + "/notes.txt.tpl");
    WriteFile(path() + "/templates/zz-notes.yaml",
              "notes: {{ tpl (.Files.Get \"notes.txt.tpl\") . | toJson }}\n");
  }

 private:
  TempDir dir_;
};

// The NOTES text from the output of a ChartCopy with RenderNotes().
std::string NotesOf(const std::string& manifests) {
  static const std::string kKey = "\nnotes: ";
  const size_t at = manifests.find(kKey);
  REQUIRE(at != std::string::npos);
  const size_t end = manifests.find('\n', at + kKey.size());
  return nlohmann::json::parse(manifests.substr(at + kKey.size(), end - at - kKey.size()))
      .get<std::string>();
}

// The documents of a YAML stream as JSON, every scalar a string (enough for RBAC objects).
nlohmann::json JsonOf(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map: {
      nlohmann::json object = nlohmann::json::object();
      for (const auto& entry : node) object[entry.first.as<std::string>()] = JsonOf(entry.second);
      return object;
    }
    case YAML::NodeType::Sequence: {
      nlohmann::json array = nlohmann::json::array();
      for (const auto& item : node) array.push_back(JsonOf(item));
      return array;
    }
    case YAML::NodeType::Scalar:
      return node.as<std::string>();
    default:
      return nullptr;
  }
}

nlohmann::json YamlDocuments(const std::string& text) {
  nlohmann::json documents = nlohmann::json::array();
  for (const YAML::Node& document : YAML::LoadAll(text)) {
    if (document.IsMap()) documents.push_back(JsonOf(document));
  }
  return documents;
}

TEST_CASE("the chart version and image tag and the Dockerfile label are the binaries version") {
  const YAML::Node chart = YAML::LoadFile(kChart + "/Chart.yaml");
  CHECK(chart["version"].as<std::string>() == NODEMESH_VERSION);
  CHECK(chart["appVersion"].as<std::string>() == NODEMESH_VERSION);
  CHECK_THAT(ReadFile(kSourceDir + "/Dockerfile"),
             Catch::Contains(std::string("ARG VERSION=") + NODEMESH_VERSION + "\n"));
}

TEST_CASE("helm lint --strict passes with the default and the custom values") {
  Helm helm;
  for (const std::vector<std::string>& values :
       {std::vector<std::string>{}, std::vector<std::string>{"--values", kCustomValues}}) {
    std::vector<std::string> command = {"lint", "--strict", kChart};
    command.insert(command.end(), values.begin(), values.end());
    const CommandResult result = helm.Run(command);
    INFO("helm " << Helm::Join(command) << ":\n" << result.output);
    CHECK(result.exit_code == 0);
    CHECK(result.output.find("0 chart(s) failed") != std::string::npos);
  }
}

TEST_CASE("helm template with the default values matches golden/default.yaml") {
  Helm helm;
  const std::string manifests = helm.Template(kChart);
  CheckGolden("default.yaml", manifests);
  // What the image's run of the DaemonSet and the agents' RBAC rely on.
  CHECK(Objects(manifests) == std::vector<std::string>{
                                  "ServiceAccount/nodemesh-agent",
                                  "ServiceAccount/nodemesh-aggregator",
                                  "ClusterRole/nodemesh-agent",
                                  "ClusterRoleBinding/nodemesh-agent",
                                  "Service/nodemesh-aggregator",
                                  "DaemonSet/nodemesh-agent",
                                  "Deployment/nodemesh-aggregator",
                                  "Pod/nodemesh-check",
                              });
}

TEST_CASE("helm template with every value changed matches golden/custom.yaml") {
  Helm helm;
  const std::string manifests =
      helm.Template(kChart, {"--values", kCustomValues, "--api-versions", kPodMonitorApi});
  CheckGolden("custom.yaml", manifests);
  CHECK(Objects(manifests) == std::vector<std::string>{
                                  "Namespace/nodemesh",
                                  "ServiceAccount/nodemesh-agent",
                                  "ServiceAccount/nodemesh-aggregator",
                                  "ClusterRole/nodemesh-agent",
                                  "ClusterRoleBinding/nodemesh-agent",
                                  "Service/nodemesh-aggregator",
                                  "DaemonSet/nodemesh-agent",
                                  "Deployment/nodemesh-aggregator",
                                  "PodMonitor/nodemesh-agent",
                              });
}

TEST_CASE("NOTES.txt as helm install prints it matches the golden notes files") {
  Helm helm;
  ChartCopy chart;
  chart.RenderNotes();
  CheckGolden("notes-default.txt", NotesOf(helm.Template(chart.path())));
  CheckGolden("notes-custom.txt",
              NotesOf(helm.Template(chart.path(), {"--values", kCustomValues})));
}

TEST_CASE("every rendered object is valid for the Kubernetes API with unknown fields refused") {
  Helm helm;
  // Both renders at once: one run of the validator.
  const std::string manifests =
      helm.Template(kChart) + "---\n" +
      helm.Template(kChart, {"--values", kCustomValues, "--api-versions", kPodMonitorApi});
  const CommandResult result = Validate(manifests);
  INFO(result.output);
  CHECK(result.exit_code == 0);
  CHECK(result.output.find("17 objects, 0 problems") != std::string::npos);
}

TEST_CASE("a misspelt field in the chart is refused by the validator though helm accepts it") {
  Helm helm;
  ChartCopy chart;
  chart.Replace("templates/agent-daemonset.yaml", "hostNetwork: true", "hostNetwrok: true");
  chart.Replace("templates/aggregator.yaml", "readOnlyRootFilesystem: true",
                "readOnlyRootFilesystem: \"yes\"");
  chart.Replace("templates/aggregator.yaml", "targetPort: grpc", "targetport: grpc");
  // Helm itself sees nothing wrong: the schema checks values, not what templates make.
  const CommandResult lint = helm.Run({"lint", "--strict", chart.path()});
  INFO(lint.output);
  CHECK(lint.exit_code == 0);

  const CommandResult result = Validate(helm.Template(chart.path()));
  INFO(result.output);
  CHECK(result.exit_code == 1);
  CHECK(result.output.find("DaemonSet nodemesh/nodemesh-agent: spec.template.spec.hostNetwrok: "
                           "unknown field \"hostNetwrok\" (not in IPodSpec)") != std::string::npos);
  CHECK(result.output.find("Service nodemesh/nodemesh-aggregator: spec.ports[0].targetport: "
                           "unknown field \"targetport\" (not in IServicePort)") !=
        std::string::npos);
  CHECK(result.output.find("Deployment nodemesh/nodemesh-aggregator: "
                           "spec.template.spec.containers[0].securityContext."
                           "readOnlyRootFilesystem: Type 'string' is not assignable to type "
                           "'boolean | undefined'") != std::string::npos);
  // The same wrong type, as kubernetes-models' JSON-schema validator says it.
  CHECK(result.output.find("Deployment nodemesh/nodemesh-aggregator: data/spec/template/spec/"
                           "containers/0/securityContext/readOnlyRootFilesystem must be "
                           "boolean") != std::string::npos);
  CHECK(result.output.find("8 objects, 4 problems") != std::string::npos);
}

TEST_CASE("the values schema refuses wrong values and names the key") {
  Helm helm;
  TempDir dir;
  struct Case {
    std::string values;   // a values file
    std::string message;  // what Helm must say
  };
  const std::vector<Case> cases = {
      // wrong types
      {"agent:\n  logLevel: 3\n", "agent.logLevel: Invalid type. Expected: string, given: integer"},
      {"agent:\n  excludePorts: \"22,2379\"\n",
       "agent.excludePorts: Invalid type. Expected: array, given: string"},
      {"agent:\n  l7: \"off\"\n", "agent.l7: Invalid type. Expected: boolean, given: string"},
      {"aggregator:\n  port: \"8085\"\n",
       "aggregator.port: Invalid type. Expected: integer, given: string"},
      // unknown keys, at the top and deeper
      {"agent:\n  toleration:\n    - operator: Exists\n",
       "agent: Additional property toleration is not allowed"},
      {"agents:\n  logLevel: debug\n", "(root): Additional property agents is not allowed"},
      {"agent:\n  tolerations:\n    - operator: Exists\n      efect: NoSchedule\n",
       "agent.tolerations.0: Additional property efect is not allowed"},
      {"metrics:\n  podMonitor:\n    enable: true\n",
       "metrics.podMonitor: Additional property enable is not allowed"},
      // values out of their enum or range
      {"agent:\n  logLevel: verbose\n",
       "agent.logLevel: agent.logLevel must be one of the following: \"debug\", \"info\", "
       "\"warning\", \"error\""},
      {"image:\n  pullPolicy: Sometimes\n",
       "image.pullPolicy: image.pullPolicy must be one of the following: \"Always\", "
       "\"IfNotPresent\", \"Never\""},
      {"agent:\n  excludePorts: [22, 70000]\n",
       "agent.excludePorts.1: Must be less than or equal to 65535"},
      {"agent:\n  maxUnavailable: ten\n",
       "agent.maxUnavailable: Must validate at least one schema"},
      {"agent:\n  cgroupRoot: kubepods.slice\n", "agent.cgroupRoot: Does not match pattern '^/'"},
      // header names as the agent compares them: lowercase, one token each
      {"tap:\n  redactHeaders: [Authorization]\n",
       "tap.redactHeaders.0: Does not match pattern"},
  };
  int index = 0;
  for (const Case& c : cases) {
    const std::string file = dir.Write("values-" + std::to_string(index++) + ".yaml", c.values);
    const CommandResult result =
        helm.Run({"template", "nodemesh", kChart, "--namespace", "nodemesh", "--kube-version",
                  kKubeVersion, "--values", file});
    INFO("values:\n" << c.values << "helm said:\n" << result.output);
    CHECK(result.exit_code != 0);
    CHECK(result.output.find("values don't meet the specifications of the schema") !=
          std::string::npos);
    CHECK(result.output.find(c.message) != std::string::npos);
  }
}

TEST_CASE("the PodMonitor is rendered only when asked for and served by the cluster") {
  Helm helm;
  const auto has_pod_monitor = [](const std::string& manifests) {
    return manifests.find("kind: PodMonitor") != std::string::npos;
  };
  CHECK_FALSE(has_pod_monitor(helm.Template(kChart, {"--api-versions", kPodMonitorApi})));
  CHECK_FALSE(has_pod_monitor(helm.Template(kChart, {"--set", "metrics.podMonitor.enabled=true"})));
  CHECK(has_pod_monitor(helm.Template(
      kChart, {"--set", "metrics.podMonitor.enabled=true", "--api-versions", kPodMonitorApi})));
  // The annotations, on by default, go with their value.
  CHECK(helm.Template(kChart).find("prometheus.io/scrape: \"true\"") != std::string::npos);
  CHECK(
      helm.Template(kChart, {"--set", "metrics.scrapeAnnotations=false"}).find("prometheus.io/") ==
      std::string::npos);
}

TEST_CASE("the chart renders from Kubernetes 1.25 on and refuses older clusters") {
  Helm helm;
  for (const std::string version : {"1.25.0", "1.35.0"}) {
    const CommandResult result = helm.Run(
        {"template", "nodemesh", kChart, "--namespace", "nodemesh", "--kube-version", version});
    INFO(version << ": " << result.output);
    CHECK(result.exit_code == 0);
  }
  const CommandResult old = helm.Run(
      {"template", "nodemesh", kChart, "--namespace", "nodemesh", "--kube-version", "1.24.9"});
  INFO(old.output);
  CHECK(old.exit_code != 0);
  CHECK(old.output.find("chart requires kubeVersion: >=1.25.0-0 which is incompatible with "
                        "Kubernetes v1.24.9") != std::string::npos);
}

// `helm template --dry-run=server` renders as `helm install` does, reading the cluster (here
// the test API server) with `lookup`.
TEST_CASE("installing into a namespace whose Pod Security level refuses the agent fails first") {
  Helm helm;
  KubeApiServer server;
  TempDir dir;
  const std::string kubeconfig = dir.path() + "/kubeconfig";
  server.WriteKubeconfig(kubeconfig, server.admin_token());
  ChartCopy chart;
  chart.RenderNotes();
  const auto render = [&](std::vector<std::string> args = {}) {
    std::vector<std::string> command = {"template",    "nodemesh", chart.path(),
                                        "--namespace", "nodemesh", "--dry-run=server"};
    command.insert(command.end(), args.begin(), args.end());
    return helm.Run(command, kubeconfig);
  };
  const auto label_namespace = [&](const std::string& level) {
    server.MergePatch(
        "/api/v1/namespaces/nodemesh",
        {{"metadata", {{"labels", {{"pod-security.kubernetes.io/enforce", level}}}}}});
  };

  SECTION("a namespace not made yet, or unlabelled: installed, and NOTES say how to label it") {
    const CommandResult absent = render();
    INFO(absent.output);
    REQUIRE(absent.exit_code == 0);
    CHECK(NotesOf(absent.output)
              .find("kubectl label namespace nodemesh "
                    "pod-security.kubernetes.io/enforce=privileged "
                    "--overwrite") != std::string::npos);
    server.Create("/api/v1/namespaces", {{"metadata", {{"name", "nodemesh"}}}});
    const CommandResult unlabelled = render();
    INFO(unlabelled.output);
    CHECK(unlabelled.exit_code == 0);
  }
  SECTION("baseline or restricted: refused with the command that relabels the namespace") {
    server.Create("/api/v1/namespaces", {{"metadata", {{"name", "nodemesh"}}}});
    for (const std::string level : {"baseline", "restricted"}) {
      label_namespace(level);
      const CommandResult refused = render();
      INFO(refused.output);
      CHECK(refused.exit_code != 0);
      CHECK(refused.output.find("namespace nodemesh enforces Pod Security level \"" + level +
                                "\", which refuses the agent's pods") != std::string::npos);
      CHECK(refused.output.find("kubectl label namespace nodemesh "
                                "pod-security.kubernetes.io/enforce=privileged --overwrite") !=
            std::string::npos);
      // Turned off, for clusters whose admission configuration exempts the pods.
      CHECK(render({"--set", "namespace.checkPodSecurity=false"}).exit_code == 0);
    }
  }
  SECTION("privileged: installed, and NOTES say there is nothing to do") {
    server.Create("/api/v1/namespaces", {{"metadata", {{"name", "nodemesh"}}}});
    label_namespace("privileged");
    const CommandResult installed = render();
    INFO(installed.output);
    REQUIRE(installed.exit_code == 0);
    const std::string notes = NotesOf(installed.output);
    CHECK(notes.find("The namespace enforces \"privileged\": nothing to do.") != std::string::npos);
    CHECK(notes.find("kubectl label namespace nodemesh pod-security") == std::string::npos);
  }
}

// The agent's permissions are those its Kubernetes source needs: with the chart's
// ClusterRole and binding enforced by the test API server, the real agent lists and watches
// what it should and enrols a meshed pod, nothing it asks is refused, and each of the six
// permissions (list and watch of pods, namespaces and Services) is asked for.
TEST_CASE("the agent works with exactly the permissions of the chart's ClusterRole") {
  RequireRoot("k8s");
  Helm helm;
  TempDir dir;
  const nlohmann::json rbac =
      YamlDocuments(helm.Template(kChart, {"--show-only", "templates/agent-rbac.yaml"}));
  REQUIRE(rbac.size() == 2);
  KubeApiServer api({.rbac_file = dir.Write("rbac.json", rbac.dump())});
  PodNetwork network;
  TestNode node{network, "node-a"};
  Kubelet kubelet(api, node, CgroupDriver::kSystemd);
  kubelet.CreateNamespace("shop", {{"nodemesh.io/mesh", "enabled"}});
  const KubePod& web =
      kubelet.StartPod({.namespace_name = "shop", .name = "web-5d8c-x2k", .workload_name = "web"},
                       {"sleep", "3600"});
  // The DaemonSet's pods run as ServiceAccount nodemesh-agent of the release's namespace.
  const std::string user = "system:serviceaccount:nodemesh:nodemesh-agent";
  const std::string kubeconfig = dir.path() + "/kubeconfig";
  api.WriteKubeconfig(kubeconfig, api.IssueToken("nodemesh", "nodemesh-agent"));

  AgentProcess agent(node,
                     {.binary = NODEMESH_AGENT_BINARY,
                      .inventory = {"--inventory", "kubernetes", "--kubeconfig", kubeconfig}});
  INFO("agent:\n" << agent.output() << "\nAPI server:\n" << api.log());
  CHECK(agent.WaitUntilEnrolled(*web.pod));

  std::set<std::string> asked;
  for (const KubeApiServer::Request& request : api.Requests()) {
    if (request.user != user) continue;
    INFO(request.method << " " << request.path << ": " << request.status);
    CHECK(request.status == 200);
    const std::string path = request.path.substr(0, request.path.find('?'));
    const std::string resource = path.substr(path.rfind('/') + 1);
    CHECK(path == "/api/v1/" + resource);  // collections, cluster-wide: never one object
    asked.insert(
        (request.watch ? "watch " : (request.method == "GET" ? "list " : request.method + " ")) +
        resource);
  }
  CHECK(asked == std::set<std::string>{"list pods", "watch pods", "list namespaces",
                                       "watch namespaces", "list services", "watch services"});
  for (const auto& [rule, uses] : api.RbacRuleUses()) {
    INFO(rule);
    CHECK(uses > 0);
  }
}

}  // namespace
}  // namespace nodemesh::testing
