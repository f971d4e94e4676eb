// k8s tier: the container image (Dockerfile), built with podman by test/k8s/build-image.sh
// (the image_build fixture), the agent run from it the way the chart's DaemonSet says, and
// the aggregator the way its Deployment says, registered with the test API server's
// aggregation layer as the chart's APIService registers it and asked through it with kubectl.
//
// The podman command line is derived from `helm template` of the chart with values for this
// machine (the image just built, the node's cgroup v2 mount and cgroup root, free ports):
// the container's command and arguments ($(NODE_NAME) expanded from its fieldRef),
// environment, user, groups (fsGroup), capabilities (everything else dropped), seccomp and
// privilege settings, read-only root, resources, volumes and mounts (hostPath bind mounts,
// emptyDir directories made as the kubelet makes them, Secret volumes written from the
// Secrets of the same render, with their modes), the host's network (a pod with a network of
// its own gets it too, on the free ports of its render: PodmanArgs) and probes. Any field of the
// pod or container spec this file does not know how to run fails the test, so the chart, the image
// and this test cannot drift apart unnoticed. As the kubelet would, the test adds the in-cluster
// credentials: KUBERNETES_SERVICE_HOST/PORT (the test API server, reached over the host network)
// and the service account's token, ca.crt and namespace mounted at
// /var/run/secrets/kubernetes.io/serviceaccount, the token issued for the pod's
// ServiceAccount; the API server enforces the chart's rendered roles and bindings.
//
// Containers are labelled with their test process and run for at most ten minutes; each is
// removed when its test ends, and those of a test process that died are removed by the next.
#include <fmt/format.h>
#include <linux/capability.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "common/httpapi/json.h"
#include "nodemesh/v1/nodemesh.pb.h"
#include "test/k8s/k8s_tools.h"
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
using nlohmann::json;
namespace fs = std::filesystem;

const std::string kSourceDir = NODEMESH_SOURCE_DIR;
const std::string kBuildImage = kSourceDir + "/test/k8s/build-image.sh";
const std::string kProjectVersion = NODEMESH_VERSION;
const std::string kKubectl = kToolsDir + "/bin/kubectl";
// The release's namespace, which the ServiceAccount's user name includes.
const std::string kReleaseNamespace = "nodemesh";
// Where the kubelet mounts a pod's service account credentials.
const std::string kServiceAccountMount = "/var/run/secrets/kubernetes.io/serviceaccount";
const std::vector<std::string> kBinaries = {"nodemesh-agent", "nodemesh-aggregator", "meshctl"};
constexpr std::string_view kMeshLabel = "nodemesh.io/mesh";

// The image test/k8s/build-image.sh builds (and the image_build fixture has built).
const std::string& ImageName() {
  static const std::string name = [] {
    const CommandResult result = RunCommand({"bash", kBuildImage, "--tag"});
    if (result.exit_code != 0) throw std::runtime_error("build-image.sh --tag: " + result.output);
    return result.output.substr(0, result.output.find('\n'));
  }();
  return name;
}

// --- a Secret's data ------------------------------------------------------------------

// Standard base64, as a Secret's data is. Throws on anything else.
std::string Base64Decode(std::string_view text) {
  static constexpr std::string_view kAlphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string decoded;
  uint32_t bits = 0;
  int count = 0;
  for (const char c : text) {
    if (c == '=') break;
    const size_t value = kAlphabet.find(c);
    if (value == std::string_view::npos)
      throw std::runtime_error("not base64: " + std::string(text));
    bits = (bits << 6) | static_cast<uint32_t>(value);
    count += 6;
    if (count >= 8) {
      count -= 8;
      decoded.push_back(static_cast<char>((bits >> count) & 0xff));
    }
  }
  return decoded;
}

// --- the chart ------------------------------------------------------------------------

// `helm template` of the chart as release nodemesh in namespace nodemesh with `values`
// (--set-string NAME=VALUE each), every object as JSON, typed. Fails the test if Helm does.
json RenderChart(const std::map<std::string, std::string>& values) {
  std::vector<std::string> settings;
  for (const auto& [name, value] : values) {
    // Integers as integers, for the schema's types; everything else as a string.
    const bool integer = std::regex_match(value, std::regex("[0-9]+"));
    settings.insert(settings.end(), {integer ? "--set" : "--set-string", name + "=" + value});
  }
  return YamlDocuments(Helm().Template(kChart, settings), YamlScalars::kTyped);
}

// The object Kind/name of the render; throws if there is none.
json Find(const json& objects, std::string_view kind, std::string_view name) {
  json object = ObjectOf(objects, kind, name);
  if (object.is_null()) {
    throw std::runtime_error(fmt::format("the chart renders no {} {}", kind, name));
  }
  return object;
}

// --- the DaemonSet, run ---------------------------------------------------------------

// Fails with the field named when `object` has a key outside `known`.
void OnlyKnown(const json& object, const std::set<std::string>& known, std::string_view where) {
  for (const auto& [key, value] : object.items()) {
    if (!known.contains(key)) {
      throw std::runtime_error(
          fmt::format("{}.{} ({}) is not something image_test.cc knows how to run: teach it", where,
                      key, value.dump()));
    }
  }
}

// A Kubernetes quantity ("128Mi", "1Gi", "100m", "2") in its base unit.
double Quantity(const json& value) {
  if (value.is_number()) return value.get<double>();
  const std::string text = value.get<std::string>();
  static const std::vector<std::pair<std::string, double>> kSuffixes = {
      {"Ki", 1024.0}, {"Mi", 1048576.0}, {"Gi", 1073741824.0}, {"Ti", 1099511627776.0},
      {"k", 1e3},     {"M", 1e6},        {"G", 1e9},           {"T", 1e12},
      {"m", 1e-3}};
  for (const auto& [suffix, factor] : kSuffixes) {
    if (text.ends_with(suffix)) {
      return std::stod(text.substr(0, text.size() - suffix.size())) * factor;
    }
  }
  return std::stod(text);
}

// $(NAME) replaced by the variable's value when `env` defines it, $$ by $, as the kubelet
// expands a container's command and arguments.
std::string Expand(const std::string& text, const std::map<std::string, std::string>& env) {
  std::string expanded;
  for (size_t at = 0; at < text.size();) {
    if (text.compare(at, 2, "$$") == 0) {
      expanded += '$';
      at += 2;
      continue;
    }
    if (text.compare(at, 2, "$(") == 0) {
      const size_t end = text.find(')', at);
      if (end != std::string::npos) {
        const auto value = env.find(text.substr(at + 2, end - at - 2));
        if (value != env.end()) {
          expanded += value->second;
          at = end + 1;
          continue;
        }
      }
    }
    expanded += text[at++];
  }
  return expanded;
}

// A tmpfs mounted on a directory for the object's life (a memory-backed emptyDir).
class TmpfsMount {
 public:
  TmpfsMount(const std::string& directory, uint64_t size_bytes) : directory_(directory) {
    const std::string options = fmt::format("size={},mode=0777", size_bytes);
    if (::mount("tmpfs", directory.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, options.c_str()) != 0) {
      throw std::runtime_error(
          fmt::format("mount tmpfs on {}: {}", directory, std::strerror(errno)));
    }
  }
  ~TmpfsMount() { ::umount2(directory_.c_str(), MNT_DETACH); }
  TmpfsMount(const TmpfsMount&) = delete;
  TmpfsMount& operator=(const TmpfsMount&) = delete;

 private:
  std::string directory_;
};

// What the kubelet of the simulated node brings to the pod.
struct NodeSide {
  std::string node_name;
  std::string pod_name;
  std::string service_account_dir;                       // token, ca.crt, namespace
  std::vector<std::pair<std::string, std::string>> env;  // KUBERNETES_SERVICE_HOST/PORT
  std::string volumes_dir;                               // where emptyDir volumes are made
  // A token of the pod's ServiceAccount for `audience`, valid `expiration`, as the kubelet
  // requests one for a projected serviceAccountToken volume.
  std::function<std::string(const std::string& audience, std::chrono::seconds expiration)>
      project_token;
};

// An HTTP probe of a container: what the kubelet asks for, and where.
struct HttpProbeSpec {
  std::string path;
  int port = 0;
  bool https = false;  // scheme HTTPS: the kubelet verifies no certificate
};

// One container of a DaemonSet's or a Deployment's pod template, as podman runs it.
class PodContainer {
 public:
  // `objects`: the render the workload is from, whose Secrets its secret volumes name.
  PodContainer(const json& workload, std::string_view container_name, json objects = json::array())
      : objects_(std::move(objects)) {
    const json& pod = workload["spec"]["template"]["spec"];
    pod_ = pod;
    // Scheduling (node selector, tolerations, affinity, priority), pulling (pull secrets) and
    // the DNS policy (there is no cluster DNS here) do not change how the container runs.
    OnlyKnown(
        pod,
        {"serviceAccountName", "automountServiceAccountToken", "hostNetwork", "hostPID", "hostIPC",
         "dnsPolicy", "priorityClassName", "terminationGracePeriodSeconds", "imagePullSecrets",
         "securityContext", "containers", "volumes", "nodeSelector", "tolerations", "affinity"},
        "spec.template.spec");
    for (const json& container : pod["containers"]) {
      if (container["name"] == container_name) container_ = container;
    }
    if (container_.is_null()) {
      throw std::runtime_error(fmt::format("the pod template has no container {}", container_name));
    }
    OnlyKnown(container_,
              {"name", "image", "imagePullPolicy", "command", "args", "env", "ports",
               "readinessProbe", "livenessProbe", "resources", "securityContext", "volumeMounts"},
              "container " + std::string(container_name));
    for (const json& port : container_.value("ports", json::array())) {
      if (port.contains("name")) ports_[port["name"]] = port["containerPort"];
    }
  }

  std::string image() const { return container_["image"]; }
  std::string service_account() const { return pod_.value("serviceAccountName", "default"); }
  // Capabilities added, as the chart spells them (SYS_ADMIN, ...).
  std::vector<std::string> added_capabilities() const {
    const json caps = SecurityContext().value("capabilities", json::object());
    return caps.value("add", std::vector<std::string>());
  }
  // An HTTP probe ("readinessProbe", "livenessProbe").
  HttpProbeSpec HttpProbe(std::string_view probe) const {
    const json& spec = container_.at(std::string(probe));
    OnlyKnown(spec,
              {"httpGet", "initialDelaySeconds", "periodSeconds", "failureThreshold",
               "timeoutSeconds", "successThreshold"},
              probe);
    const json& get = spec.at("httpGet");
    OnlyKnown(get, {"path", "port", "scheme"}, std::string(probe) + ".httpGet");
    const json& port = get["port"];
    const std::string scheme = get.value("scheme", "HTTP");
    if (scheme != "HTTP" && scheme != "HTTPS") {
      throw std::runtime_error(fmt::format("{}.httpGet.scheme {}", probe, scheme));
    }
    return {.path = get.value("path", "/"),
            .port = port.is_string() ? ports_.at(port.get<std::string>()) : port.get<int>(),
            .https = scheme == "HTTPS"};
  }

  // The container's arguments after expansion (--node=node-a, ...).
  std::vector<std::string> Arguments(const NodeSide& node) const {
    std::vector<std::string> args;
    const auto env = Environment(node);
    const std::map<std::string, std::string> variables(env.begin(), env.end());
    for (const json& arg : container_.value("args", json::array())) {
      args.push_back(Expand(arg.get<std::string>(), variables));
    }
    return args;
  }

  // Everything after `podman run --detach`: options, the image, its arguments. Makes the
  // emptyDir volumes under node.volumes_dir (kept in `volumes`). `without` names a
  // capability to leave out of those the container adds.
  std::vector<std::string> PodmanArgs(const NodeSide& node, std::string_view without,
                                      std::vector<std::unique_ptr<TmpfsMount>>& volumes) const {
    std::vector<std::string> args = {"--name", node.pod_name, "--pull", "never"};
    // The pod. A pod of the host's network runs on it, and so does one with a network of its
    // own: Kubernetes would give that one an address of its own, which the API server and
    // the test would reach; here they reach it on 127.0.0.1. Its ports are then the host's:
    // the test renders the chart with free ones, so that tests side by side never collide.
    args.insert(args.end(), {"--network", "host"});
    if (pod_.value("hostPID", false)) args.insert(args.end(), {"--pid", "host"});
    if (pod_.value("hostIPC", false)) args.insert(args.end(), {"--ipc", "host"});
    if (pod_.contains("terminationGracePeriodSeconds")) {
      args.insert(args.end(), {"--stop-timeout",
                               std::to_string(pod_["terminationGracePeriodSeconds"].get<int>())});
    }
    // Its security context, the container's own over the pod's.
    const json context = SecurityContext();
    if (context.contains("runAsUser") || context.contains("runAsGroup")) {
      args.insert(args.end(), {"--user", fmt::format("{}:{}", context.value("runAsUser", 0),
                                                     context.value("runAsGroup", 0))});
    }
    if (context.value("runAsNonRoot", false) && context.value("runAsUser", 0) == 0) {
      throw std::runtime_error("runAsNonRoot with user 0: the kubelet would refuse to start it");
    }
    // fsGroup: a supplementary group of the container's processes, and the group of its
    // volumes' files (written below).
    const std::optional<int> fs_group = FsGroup();
    if (fs_group) args.insert(args.end(), {"--group-add", std::to_string(*fs_group)});
    if (context.value("privileged", false)) args.push_back("--privileged");
    if (!context.value("allowPrivilegeEscalation", true)) {
      args.insert(args.end(), {"--security-opt", "no-new-privileges"});
    }
    if (context.value("readOnlyRootFilesystem", false)) {
      // Kubernetes adds no tmpfs of its own under a read-only root; podman would.
      args.insert(args.end(), {"--read-only", "--read-only-tmpfs=false"});
    }
    const std::string seccomp = context.value("seccompProfile", json::object()).value("type", "");
    if (seccomp == "Unconfined" || seccomp.empty()) {  // Kubernetes' default: unconfined
      args.insert(args.end(), {"--security-opt", "seccomp=unconfined"});
    } else if (seccomp != "RuntimeDefault") {  // RuntimeDefault: podman's default profile
      throw std::runtime_error("seccompProfile " + seccomp + " is not known to image_test.cc");
    }
    const json caps = context.value("capabilities", json::object());
    OnlyKnown(caps, {"add", "drop"}, "securityContext.capabilities");
    for (const std::string& cap : caps.value("drop", std::vector<std::string>())) {
      args.insert(args.end(), {"--cap-drop", cap == "ALL" ? "all" : cap});
    }
    for (const std::string& cap : added_capabilities()) {
      if (cap != without) args.insert(args.end(), {"--cap-add", cap});
    }
    // Resources, as the kubelet sets the container's cgroup.
    const json resources = container_.value("resources", json::object());
    OnlyKnown(resources, {"requests", "limits"}, "resources");
    const json limits = resources.value("limits", json::object());
    const json requests = resources.value("requests", json::object());
    if (limits.contains("memory")) {
      args.insert(args.end(), {"--memory", fmt::format("{:.0f}", Quantity(limits["memory"]))});
    }
    if (limits.contains("cpu")) {
      args.insert(args.end(), {"--cpus", fmt::format("{:.3f}", Quantity(limits["cpu"]))});
    }
    if (requests.contains("cpu")) {
      const int shares = std::max(2, static_cast<int>(Quantity(requests["cpu"]) * 1024));
      args.insert(args.end(), {"--cpu-shares", std::to_string(shares)});
    }
    // Environment: the container's, then what the kubelet adds.
    for (const auto& [name, value] : Environment(node)) {
      args.insert(args.end(), {"--env", name + "=" + value});
    }
    // Volumes.
    std::map<std::string, std::string> sources;  // volume name -> host path
    std::map<std::string, bool> host_paths;
    for (const json& volume : pod_.value("volumes", json::array())) {
      const std::string name = volume["name"];
      OnlyKnown(volume, {"name", "hostPath", "emptyDir", "secret", "projected"}, "volume " + name);
      if (volume.contains("hostPath")) {
        const json& host_path = volume["hostPath"];
        OnlyKnown(host_path, {"path", "type"}, "volume " + name + ".hostPath");
        const std::string path = host_path["path"];
        const std::string type = host_path.value("type", "");
        if (type == "DirectoryOrCreate") fs::create_directories(path);
        if ((type == "Directory" || type == "DirectoryOrCreate") && !fs::is_directory(path)) {
          throw std::runtime_error(
              fmt::format("volume {}: hostPath {} is not a directory "
                          "(type {}): the kubelet would not start the pod",
                          name, path, type));
        }
        if (type == "File" && !fs::is_regular_file(path)) {
          throw std::runtime_error(fmt::format(
              "volume {}: hostPath {} is not a file (type File): the kubelet would not start "
              "the pod",
              name, path));
        }
        if (!type.empty() && type != "Directory" && type != "DirectoryOrCreate" && type != "File") {
          throw std::runtime_error("hostPath type " + type + " is not known to image_test.cc");
        }
        sources[name] = path;
      } else if (volume.contains("emptyDir")) {
        const json& empty_dir = volume["emptyDir"];
        OnlyKnown(empty_dir, {"medium", "sizeLimit"}, "volume " + name + ".emptyDir");
        const std::string directory = node.volumes_dir + "/" + name;
        fs::create_directories(directory);
        fs::permissions(directory, fs::perms::all);
        if (empty_dir.value("medium", "") == "Memory") {
          const uint64_t size = empty_dir.contains("sizeLimit")
                                    ? static_cast<uint64_t>(Quantity(empty_dir["sizeLimit"]))
                                    : 64u << 20;
          volumes.push_back(std::make_unique<TmpfsMount>(directory, size));
        } else if (empty_dir.contains("medium") && empty_dir["medium"] != "") {
          throw std::runtime_error("emptyDir medium " + empty_dir["medium"].dump());
        }
        sources[name] = directory;
      } else if (volume.contains("secret")) {
        // As the kubelet projects a Secret: each of `items` (else every key) decoded into a
        // file of its own, in a directory made for the volume, with defaultMode (else 0644),
        // owned by root and the fsGroup.
        const json& secret = volume["secret"];
        OnlyKnown(secret, {"secretName", "items", "defaultMode"}, "volume " + name + ".secret");
        const json& data = SecretData(secret["secretName"]);
        std::vector<std::pair<std::string, std::string>> files;  // key, path
        if (secret.contains("items")) {
          for (const json& item : secret["items"]) {
            OnlyKnown(item, {"key", "path"}, "volume " + name + ".secret.items");
            files.emplace_back(item["key"].get<std::string>(), item["path"].get<std::string>());
          }
        } else {
          for (const auto& [key, value] : data.items()) files.emplace_back(key, key);
        }
        const std::string directory = node.volumes_dir + "/" + name;
        fs::create_directories(directory);
        for (const auto& [key, path] : files) {
          if (!data.contains(key)) {
            throw std::runtime_error(fmt::format("volume {}: Secret {} has no key {}", name,
                                                 secret["secretName"].get<std::string>(), key));
          }
          const std::string file = directory + "/" + path;
          WriteFile(file, Base64Decode(data[key].get<std::string>()));
          fs::permissions(file, static_cast<fs::perms>(secret.value("defaultMode", 0644)));
          if (fs_group && ::chown(file.c_str(), 0, static_cast<gid_t>(*fs_group)) != 0) {
            throw std::runtime_error(fmt::format("chown {}: {}", file, std::strerror(errno)));
          }
        }
        sources[name] = directory;
      } else if (volume.contains("projected")) {
        // Projected ServiceAccount tokens only, each written where its path says.
        OnlyKnown(volume["projected"], {"sources"}, "volume " + name + ".projected");
        const std::string directory = node.volumes_dir + "/" + name;
        fs::create_directories(directory);
        for (const json& source : volume["projected"]["sources"]) {
          OnlyKnown(source, {"serviceAccountToken"}, "volume " + name + ".projected.sources");
          const json& token = source["serviceAccountToken"];
          OnlyKnown(token, {"audience", "expirationSeconds", "path"},
                    "volume " + name + ".projected.sources.serviceAccountToken");
          WriteFile(
              directory + "/" + token["path"].get<std::string>(),
              node.project_token(token.value("audience", std::string(kApiAudience)),
                                 std::chrono::seconds(token.value("expirationSeconds", 3600))));
        }
        sources[name] = directory;
      }
    }
    for (const json& mount : container_.value("volumeMounts", json::array())) {
      OnlyKnown(mount, {"name", "mountPath", "readOnly", "mountPropagation"}, "volumeMount");
      std::vector<std::string> options;
      if (mount.value("readOnly", false)) options.push_back("ro");
      const std::string propagation = mount.value("mountPropagation", "None");
      if (propagation == "HostToContainer") options.push_back("rslave");
      if (propagation == "Bidirectional") options.push_back("rshared");
      args.insert(
          args.end(),
          {"--volume", fmt::format("{}:{}{}{}", sources.at(mount["name"].get<std::string>()),
                                   mount["mountPath"].get<std::string>(),
                                   options.empty() ? "" : ":", Join(options, ","))});
    }
    // The service account's credentials, where the kubelet mounts them, readable by any user
    // of the container (the kubelet's mode 0644).
    if (pod_.value("automountServiceAccountToken", true)) {
      for (const fs::directory_entry& file : fs::directory_iterator(node.service_account_dir)) {
        fs::permissions(file.path(), static_cast<fs::perms>(0644));
      }
      args.insert(args.end(),
                  {"--volume", node.service_account_dir + ":" + kServiceAccountMount + ":ro"});
    }
    // The command, the image, the arguments.
    const std::vector<std::string> command =
        container_.value("command", std::vector<std::string>());
    if (command.empty()) throw std::runtime_error("the container names no command");
    args.insert(args.end(), {"--entrypoint", json(command).dump(), image()});
    for (const std::string& arg : Arguments(node)) args.push_back(arg);
    return args;
  }

  // The container's path `container_path` on the host (through its emptyDir or hostPath).
  std::string HostPath(const NodeSide& node, const std::string& container_path) const {
    for (const json& mount : container_.value("volumeMounts", json::array())) {
      const std::string mount_path = mount["mountPath"];
      if (!container_path.starts_with(mount_path + "/")) continue;
      for (const json& volume : pod_["volumes"]) {
        if (volume["name"] != mount["name"]) continue;
        const std::string rest = container_path.substr(mount_path.size());
        if (volume.contains("emptyDir") || volume.contains("secret"))
          return node.volumes_dir + "/" + mount["name"].get<std::string>() + rest;
        return volume["hostPath"]["path"].get<std::string>() + rest;
      }
    }
    throw std::runtime_error(container_path + " is on no volume of the container");
  }

 private:
  // The data of the render's Secret `name`: the chart's own (an operator's Secret is not in
  // the render, and not known here).
  const json& SecretData(const std::string& name) const {
    for (const json& object : objects_) {
      if (object.value("kind", "") == "Secret" && object["metadata"]["name"] == name) {
        return object.at("data");
      }
    }
    throw std::runtime_error("the render has no Secret " + name + " for the DaemonSet's volume");
  }

  std::optional<int> FsGroup() const {
    const json context = pod_.value("securityContext", json::object());
    if (!context.contains("fsGroup")) return std::nullopt;
    return context["fsGroup"].get<int>();
  }

  json SecurityContext() const {
    json context = pod_.value("securityContext", json::object());
    OnlyKnown(context, {"seccompProfile", "runAsUser", "runAsGroup", "runAsNonRoot", "fsGroup"},
              "spec.template.spec.securityContext");
    context.erase("fsGroup");  // the pod's only: FsGroup()
    const json own = container_.value("securityContext", json::object());
    OnlyKnown(own,
              {"runAsUser", "runAsGroup", "runAsNonRoot", "privileged", "allowPrivilegeEscalation",
               "readOnlyRootFilesystem", "capabilities", "seccompProfile"},
              "container securityContext");
    context.update(own);
    return context;
  }

  std::vector<std::pair<std::string, std::string>> Environment(const NodeSide& node) const {
    std::vector<std::pair<std::string, std::string>> env;
    std::map<std::string, std::string> defined;
    for (const json& variable : container_.value("env", json::array())) {
      const std::string name = variable["name"];
      OnlyKnown(variable, {"name", "value", "valueFrom"}, "env " + name);
      std::string value;
      if (variable.contains("valueFrom")) {
        const json& from = variable["valueFrom"];
        OnlyKnown(from, {"fieldRef"}, "env " + name + ".valueFrom");
        const std::string field = from["fieldRef"]["fieldPath"];
        if (field == "spec.nodeName") {
          value = node.node_name;
        } else if (field == "metadata.name") {
          value = node.pod_name;
        } else if (field == "metadata.namespace") {
          value = kReleaseNamespace;
        } else if (field == "spec.serviceAccountName") {
          value = service_account();
        } else {
          throw std::runtime_error("fieldRef " + field + " is not known to image_test.cc");
        }
      } else {
        value = Expand(variable.value("value", ""), defined);
      }
      defined[name] = value;
      env.emplace_back(name, value);
    }
    env.insert(env.end(), node.env.begin(), node.env.end());
    return env;
  }

  json objects_;
  json pod_;
  json container_;
  std::map<std::string, int> ports_;
};

// The CapEff mask of `names` (SYS_ADMIN, ...).
uint64_t CapabilityMask(const std::vector<std::string>& names) {
  static const std::map<std::string, int> kNumbers = {
      {"CHOWN", CAP_CHOWN},
      {"DAC_OVERRIDE", CAP_DAC_OVERRIDE},
      {"FOWNER", CAP_FOWNER},
      {"KILL", CAP_KILL},
      {"SETUID", CAP_SETUID},
      {"SETGID", CAP_SETGID},
      {"NET_BIND_SERVICE", CAP_NET_BIND_SERVICE},
      {"NET_RAW", CAP_NET_RAW},
      {"NET_ADMIN", CAP_NET_ADMIN},
      {"SYS_ADMIN", CAP_SYS_ADMIN},
      {"SYS_PTRACE", CAP_SYS_PTRACE},
      {"SYS_RESOURCE", CAP_SYS_RESOURCE},
      {"PERFMON", CAP_PERFMON},
      {"BPF", CAP_BPF},
      {"CHECKPOINT_RESTORE", CAP_CHECKPOINT_RESTORE}};
  uint64_t mask = 0;
  for (const std::string& name : names) mask |= uint64_t{1} << kNumbers.at(name);
  return mask;
}

// "CapEff:\t..." of a process's status, as a number.
uint64_t EffectiveCapabilities(int pid) {
  static const std::regex kCapEff(R"(CapEff:\s*([0-9a-f]+))");
  std::smatch match;
  const std::string status = ReadFile(fmt::format("/proc/{}/status", pid));
  if (!std::regex_search(status, match, kCapEff)) return ~uint64_t{0};
  return std::stoull(match[1], nullptr, 16);
}

// The sum of the samples of `metric` whose labels include every one of `labels`.
double MetricSum(const std::string& text, const std::string& metric,
                 const std::map<std::string, std::string>& labels) {
  double sum = 0;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (!line.starts_with(metric + "{")) continue;
    bool matches = true;
    for (const auto& [name, value] : labels) {
      matches = matches && line.find(fmt::format("{}=\"{}\"", name, value)) != std::string::npos;
    }
    if (matches) sum += std::stod(line.substr(line.rfind(' ') + 1));
  }
  return sum;
}

// The render's ClusterRoles, Roles and their bindings of `component` ("agent",
// "aggregator"), for the API server to enforce.
json RbacOf(const json& manifests, std::string_view component) {
  json rbac = json::array();
  for (const json& object : manifests) {
    const std::string kind = object.value("kind", "");
    const json labels = object["metadata"].value("labels", json::object());
    if ((kind == "ClusterRole" || kind == "ClusterRoleBinding" || kind == "Role" ||
         kind == "RoleBinding") &&
        labels.value("app.kubernetes.io/component", "") == component) {
      rbac.push_back(object);
    }
  }
  return rbac;
}

// The render's values for the image test/k8s/build-image.sh built.
std::map<std::string, std::string> ImageValues() {
  const std::string& image = ImageName();
  return {{"image.repository", image.substr(0, image.rfind(':'))},
          {"image.tag", image.substr(image.rfind(':') + 1)}};
}

// --- a node with the agent from the image ---------------------------------------------

// A simulated node, an API server enforcing the chart's RBAC, the kubelet, and the agent
// from the image as the chart's DaemonSet runs it.
struct ImageNode {
  ImageNode()
      : manifests(RenderChart([this] {
          std::map<std::string, std::string> values = ImageValues();
          values.insert({{"agent.hostCgroupPath", CgroupMount()},
                         {"agent.cgroupRoot", node.cgroup_path()},
                         {"agent.metricsPort", std::to_string(FreeLoopbackPort())},
                         {"agent.logLevel", "debug"}});
          return values;
        }())),
        daemonset(Find(manifests, "DaemonSet", "nodemesh-agent")),
        container(daemonset, "agent", manifests),
        api({.rbac_file = directory.Write("rbac.json", RbacOf(manifests, "agent").dump())}),
        kubelet(api, node, CgroupDriver::kSystemd) {
    user =
        fmt::format("system:serviceaccount:{}:{}", kReleaseNamespace, container.service_account());
    token = api.IssueToken(kReleaseNamespace, container.service_account());
    node_side = {
        .node_name = node.name(),
        .pod_name = "nodemesh-agent-" + network.id() + "-" + node.name(),
        .service_account_dir = directory.path() + "/serviceaccount",
        .env = {{"KUBERNETES_SERVICE_HOST", api.host()},
                {"KUBERNETES_SERVICE_PORT", std::to_string(api.port())}},
        .volumes_dir = directory.path() + "/volumes",
        .project_token = [this](const std::string& audience, std::chrono::seconds expiration) {
          return api.IssueToken(kReleaseNamespace, container.service_account(),
                                {.audiences = {audience}, .expiration = expiration});
        }};
    api.WriteServiceAccountDir(node_side.service_account_dir, token, kReleaseNamespace);
    const HttpProbeSpec readiness_probe = container.HttpProbe("readinessProbe");
    readiness = readiness_probe.path;
    liveness = container.HttpProbe("livenessProbe").path;
    http_address = fmt::format("127.0.0.1:{}", readiness_probe.port);
  }
  // Shows what the agent and the API server said (ctest --output-on-failure prints it when
  // the test fails), then removes the container before its volumes are unmounted.
  ~ImageNode() {
    std::cout << "--- " << Describe() << "--- API server:\n" << api.log() << std::flush;
    agent.reset();
  }

  // Starts the agent's container, without the capability `without` if one is named.
  Container& StartAgent(std::string_view without = "") {
    command = container.PodmanArgs(node_side, without, volumes);
    agent.emplace(podman, command);
    return *agent;
  }

  std::optional<HttpReply> Http(std::string_view path) const {
    return HttpGetTcp(http_address, path, 5s);
  }
  int HttpStatus(std::string_view path) const {
    const std::optional<HttpReply> reply = Http(path);
    return reply ? reply->status : 0;
  }
  // The admin API, through the emptyDir the socket is in.
  std::string AdminSocket() const {
    std::string socket = "/run/nodemesh/agent.sock";  // the agent's default
    const std::vector<std::string> args = container.Arguments(node_side);
    for (size_t i = 0; i < args.size(); ++i) {
      if (args[i].starts_with("--admin-socket=")) socket = args[i].substr(15);
      if (args[i] == "--admin-socket" && i + 1 < args.size()) socket = args[i + 1];
    }
    return container.HostPath(node_side, socket);
  }
  json Admin(std::string_view path) const {
    const std::optional<HttpReply> reply = HttpGetUnix(AdminSocket(), path);
    if (!reply || reply->status != 200) return nullptr;
    return json::parse(reply->body, nullptr, false);
  }
  json AgentPod(const KubePod& pod) const {
    const json pods = Admin("/pods");
    if (!pods.is_object()) return nullptr;
    for (const json& entry : pods["pods"]) {
      if (entry["namespace"] == pod.spec.namespace_name && entry["name"] == pod.spec.name) {
        return entry;
      }
    }
    return nullptr;
  }
  std::string StateOf(const KubePod& pod) const {
    const json entry = AgentPod(pod);
    return entry.is_null() ? "absent" : entry.value("state", "");
  }
  bool WaitForState(const KubePod& pod, std::string_view state,
                    std::chrono::milliseconds timeout = 30s) const {
    return PollUntil([&] { return StateOf(pod) == state; }, timeout, 100ms);
  }
  std::string Describe() const {
    return fmt::format("agent: {}\n{}", Join(command), agent ? agent->Logs() : "(not started)");
  }

  RootRequired root_required{"k8s"};
  Podman podman;
  TempDir directory;
  PodNetwork network;
  TestNode node{network, "node-a"};
  json manifests;
  json daemonset;
  PodContainer container;
  KubeApiServer api;
  Kubelet kubelet;
  std::string user, token, readiness, liveness, http_address;
  NodeSide node_side;
  std::vector<std::string> command;
  std::vector<std::unique_ptr<TmpfsMount>> volumes;
  std::optional<Container> agent;
};

// --- the aggregator from the image ----------------------------------------------------

// An API server enforcing the chart's aggregator RBAC, and its user role nodemesh-read bound
// to user carol in namespace shop; the aggregator from the image as the chart's Deployment
// runs it (auth.mode kubernetes, the default), in-cluster with the token of its
// ServiceAccount.
struct ImageAggregator {
  static constexpr std::string_view kReader = "carol";

  ImageAggregator()
      : manifests(RenderChart([] {
          std::map<std::string, std::string> values = ImageValues();
          // Free ports: the pod runs on the host's network (PodContainer::PodmanArgs).
          values.insert({{"aggregator.port", std::to_string(FreeLoopbackPort())},
                         {"aggregator.apiPort", std::to_string(FreeLoopbackPort())},
                         {"aggregator.logLevel", "debug"}});
          return values;
        }())),
        container(Find(manifests, "Deployment", "nodemesh-aggregator"), "aggregator", manifests),
        api({.rbac_file = directory.Write("rbac.json", Rbac().dump())}) {
    user =
        fmt::format("system:serviceaccount:{}:{}", kReleaseNamespace, container.service_account());
    node_side = {.node_name = "node-a",
                 // Its API server's port: unique on the machine while the test runs.
                 .pod_name = fmt::format("nodemesh-aggregator-{}", api.port()),
                 .service_account_dir = directory.path() + "/serviceaccount",
                 .env = {{"KUBERNETES_SERVICE_HOST", api.host()},
                         {"KUBERNETES_SERVICE_PORT", std::to_string(api.port())}},
                 .volumes_dir = directory.path() + "/volumes",
                 .project_token = {}};  // the Deployment projects no token
    api.WriteServiceAccountDir(node_side.service_account_dir,
                               api.IssueToken(kReleaseNamespace, container.service_account()),
                               kReleaseNamespace);
  }
  // Shows what the aggregator and the API server said (ctest --output-on-failure prints it
  // when the test fails), then removes the container before its volumes go.
  ~ImageAggregator() {
    std::cout << "--- aggregator: " << Join(command) << "\n"
              << (aggregator ? aggregator->Logs() : "(not started)") << "--- API server:\n"
              << api.log() << std::flush;
    aggregator.reset();
  }

  // The chart's aggregator RBAC, its ClusterRole nodemesh-read, and a RoleBinding of that
  // role to kReader in namespace shop, as a cluster's administrator would make it.
  json Rbac() const {
    json rbac = RbacOf(manifests, "aggregator");
    rbac.push_back(Find(manifests, "ClusterRole", "nodemesh-read"));
    rbac.push_back(
        {{"apiVersion", "rbac.authorization.k8s.io/v1"},
         {"kind", "RoleBinding"},
         {"metadata", {{"name", fmt::format("{}-nodemesh-read", kReader)}, {"namespace", "shop"}}},
         {"roleRef",
          {{"apiGroup", "rbac.authorization.k8s.io"},
           {"kind", "ClusterRole"},
           {"name", "nodemesh-read"}}},
         {"subjects",
          {{{"apiGroup", "rbac.authorization.k8s.io"}, {"kind", "User"}, {"name", kReader}}}}});
    return rbac;
  }

  Container& Start() {
    command = container.PodmanArgs(node_side, "", volumes);
    aggregator.emplace(podman, command);
    return *aggregator;
  }

  // `kubectl get --raw path` as user `caller` (a token of its own; RBAC binds it or not).
  CommandResult KubectlGetRaw(std::string_view caller, const std::string& path) {
    const std::string kubeconfig = fmt::format("{}/{}.kubeconfig", directory.path(), caller);
    if (!fs::exists(kubeconfig)) api.WriteKubeconfig(kubeconfig, api.IssueUserToken(caller));
    return RunCommand({kKubectl, "--kubeconfig", kubeconfig, "get", "--raw", path}, 30s);
  }

  RootRequired root_required{"k8s"};
  Podman podman;
  TempDir directory;
  json manifests;
  PodContainer container;
  KubeApiServer api;
  std::string user;
  NodeSide node_side;
  std::vector<std::string> command;
  std::vector<std::unique_ptr<TmpfsMount>> volumes;
  std::optional<Container> aggregator;
};

std::vector<std::string> PythonHttpServer(const std::string& directory, uint16_t port) {
  return {kPython,  "-u",      "-m",          "http.server", std::to_string(port),
          "--bind", "0.0.0.0", "--directory", directory};
}

// --- tests ----------------------------------------------------------------------------

TEST_CASE("image: the three binaries, their runtime libraries only, and the project version") {
  RequireRoot("k8s");
  Podman podman;
  const std::string image = ImageName();
  CHECK(image.ends_with(":" + kProjectVersion));
  CHECK(podman.Check({"image", "inspect", "--format",
                      "{{index .Labels \"org.opencontainers.image.version\"}}", image}) ==
        kProjectVersion + "\n");
  // No ENTRYPOINT or CMD: whoever runs the image names the binary.
  CHECK(podman.Check({"image", "inspect", "--format",
                      "{{json .Config.Entrypoint}} {{json .Config.Cmd}}", image}) == "null null\n");

  const auto run = [&](const std::vector<std::string>& command) {
    std::vector<std::string> args = {"run",    "--rm",  "--network",    "host",
                                     "--pull", "never", "--entrypoint", json(command).dump(),
                                     image};
    return podman.Run(args);
  };
  for (const std::string& binary : kBinaries) {
    INFO(binary);
    const CommandResult help = run({"/usr/local/bin/" + binary, "--help"});
    INFO(Describe(help));
    CHECK(help.exit_code == 0);
    CHECK_THAT(help.output, Catch::Contains("Usage"));
    const CommandResult version = run({"/usr/local/bin/" + binary, "--version"});
    INFO(Describe(version));
    CHECK(version.exit_code == 0);
    CHECK_THAT(version.output, Catch::Contains(kProjectVersion));
  }

  // Runtime libraries, no compiler and no headers: every library the binaries load resolves,
  // and no installed package is a compiler, a binutils or a -dev one.
  const CommandResult contents =
      run({"/bin/sh", "-c",
           "ldd /usr/local/bin/* | grep 'not found'; "
           "dpkg-query -W -f '${Package}\\n' | grep -E -- "
           "'-dev$|^(gcc|g\\+\\+|cpp|clang|llvm|binutils)(-[0-9]+|-x86-64-linux-gnu)?$'; "
           "for tool in cc c++ gcc g++ clang ld as make cmake; do command -v $tool; done; "
           "find /usr/include -type f 2>/dev/null | head -5; echo end"});
  INFO(Describe(contents));
  CHECK(contents.exit_code == 0);
  CHECK(contents.output == "end\n");
}

TEST_CASE(
    "image: the agent from the image, run as the chart's DaemonSet says with its RBAC enforced, "
    "enrols, proxies and counts") {
  ImageNode cluster;
  cluster.kubelet.CreateNamespace("shop", {{std::string(kMeshLabel), "enabled"}});
  TempDir site;
  site.Write("hello.txt", "hello from cart\n");
  KubePod& server = cluster.kubelet.StartPod({.namespace_name = "shop",
                                              .name = "cart-7f9c4-x2k8p",
                                              .workload_name = "cart",
                                              .labels = {{"app", "cart"}},
                                              .service_account = "cart"},
                                             PythonHttpServer(site.path(), 8080));
  KubePod& client = cluster.kubelet.StartPod(
      {.namespace_name = "shop", .name = "web-5d8c9-q7w2e", .workload_name = "web"},
      {"sleep", "3600"});
  REQUIRE(server.process->WaitForOutput("Serving HTTP", 20s));

  Container& agent = cluster.StartAgent();
  // Ready as the kubelet's readiness probe asks, alive as its liveness probe asks.
  REQUIRE(PollUntil([&] { return cluster.HttpStatus(cluster.readiness) == 200; }, 60s, 250ms));
  CHECK(cluster.HttpStatus(cluster.liveness) == 200);
  // Exactly the chart's capabilities, nothing else.
  const int pid = agent.pid();
  REQUIRE(pid > 0);
  CHECK(EffectiveCapabilities(pid) == CapabilityMask(cluster.container.added_capabilities()));

  // The node it was given ($(NODE_NAME) from spec.nodeName), the project's version.
  const json version = cluster.Admin("/version");
  CHECK(version.value("node", "") == cluster.node.name());
  CHECK(version.value("version", "") == kProjectVersion);

  REQUIRE(cluster.WaitForState(server, "enrolled"));
  REQUIRE(cluster.WaitForState(client, "enrolled"));
  // Captured inbound once the agent has seen the server listen.
  REQUIRE(PollUntil(
      [&] {
        const json entry = cluster.AgentPod(server);
        const std::string endpoint = server.pod->ip + ":8080";
        return entry.is_object() && entry.contains("inbound") &&
               std::find(entry["inbound"].begin(), entry["inbound"].end(), endpoint) !=
                   entry["inbound"].end();
      },
      20s));

  // Real HTTP between the pods, through the agent once (dialled straight into the server
  // pod) and counted as both pods see it: the server sees the client's own address.
  const std::string url = fmt::format("http://{}:8080/hello.txt", server.pod->ip);
  for (int i = 0; i < 3; ++i) {
    const CommandResult curl =
        client.pod->RunCommand({"curl", "-sS", "--max-time", "10", url}, 20s);
    INFO(Describe(curl));
    CHECK(curl.output == "hello from cart\n");
  }
  CHECK(CountLines(server.process->output(), client.pod->ip + " - - ") == 3);
  const json stats = cluster.Admin("/stats");
  INFO(stats.dump(2));
  CHECK(stats["proxy"]["accepted_outbound"] == 3);
  CHECK(stats["proxy"]["same_node_direct"] == 3);
  CHECK(stats["proxy"]["accepted_inbound"] == 0);
  // Counted, on /metrics over the node's network: each request once from each side.
  const std::map<std::string, std::string> pair = {{"src_pod", client.spec.name},
                                                   {"dst_pod", server.spec.name}};
  CHECK(PollUntil(
      [&] {
        const std::optional<HttpReply> metrics = cluster.Http("/metrics");
        if (!metrics) return false;
        std::map<std::string, std::string> outbound = pair, inbound = pair;
        outbound["direction"] = "outbound";
        inbound["direction"] = "inbound";
        return MetricSum(metrics->body, "request_total", outbound) == 3 &&
               MetricSum(metrics->body, "request_total", inbound) == 3;
      },
      10s, 250ms));

  // The rest of the Kubernetes-mode lifecycle, with the chart's permissions only.
  // A pod added once the agent runs.
  KubePod& late = cluster.kubelet.StartPod(
      {.namespace_name = "shop", .name = "late-6c5d4-r2d2x", .workload_name = "late"},
      {"sleep", "3600"});
  REQUIRE(cluster.WaitForState(late, "enrolled"));
  // A pod labelled out of the mesh.
  cluster.api.MergePatch(client.path(), {{"metadata", {{"labels", {{kMeshLabel, "disabled"}}}}}});
  REQUIRE(cluster.WaitForState(client, "unmeshed"));
  // A pod deleted.
  cluster.kubelet.DeletePod(server);
  REQUIRE(cluster.WaitForState(server, "absent"));
  // History expired: the watches' next start is refused with 410 Gone and they list again.
  const json before = cluster.Admin("/stats")["kubernetes"];
  cluster.api.ExpireHistory(KubeApiServer::GoneMode::kHttpStatus);
  cluster.api.CloseWatches();
  // The namespace's label removed: its pods leave the mesh.
  cluster.api.MergePatch("/api/v1/namespaces/shop",
                         {{"metadata", {{"labels", {{kMeshLabel, nullptr}}}}}});
  REQUIRE(cluster.WaitForState(late, "unmeshed"));
  const json after = cluster.Admin("/stats")["kubernetes"];
  INFO("before: " << before.dump() << "\nafter: " << after.dump());
  for (const std::string watch : {"pods", "namespaces", "services"}) {
    CHECK(after[watch]["gone"].get<uint64_t>() >= 1);
    CHECK(after[watch]["lists"].get<uint64_t>() > before[watch]["lists"].get<uint64_t>());
  }

  // Every request of the agent's service account was allowed by a rule of the chart's
  // ClusterRole (410 is the expired history answering), and every rule was used.
  int requests = 0;
  for (const KubeApiServer::Request& request : cluster.api.Requests()) {
    if (request.user != cluster.user) continue;
    ++requests;
    INFO(request.method << " " << request.path << ": " << request.status << " by " << request.rule);
    CHECK((request.status == 200 || request.status == 410));
    CHECK(request.rule.starts_with("ClusterRole/"));
  }
  CHECK(requests >= 6);
  const std::map<std::string, int> uses = cluster.api.RbacRuleUses();
  CHECK_FALSE(uses.empty());
  for (const auto& [rule, count] : uses) {
    INFO(rule);
    CHECK(count > 0);
  }
  // What the role does not grant is refused with the same token.
  CHECK(cluster.api.Call("GET", "/api/v1/namespaces/nodemesh/secrets", cluster.token).status ==
        403);
  CHECK(cluster.api.Call("GET", late.path(), cluster.token).status == 403);

  // Its programs are attached to the node's cgroup root while it runs.
  CHECK_FALSE(RunCommand({"bpftool", "cgroup", "show", cluster.node.cgroup_dir()}).output.empty());
  // Stopped as the kubelet stops it (SIGTERM, the grace period): a clean exit.
  CHECK(agent.Stop(30s) == std::optional<int>(0));
  // As after `helm uninstall`: nothing of nodemesh stays attached to the node's cgroups.
  CHECK(RunCommand({"bpftool", "cgroup", "show", cluster.node.cgroup_dir()}).output.empty());
}

TEST_CASE("image: with any one of the chart's capabilities removed the agent names it") {
  const std::vector<std::string> granted =
      PodContainer(Find(RenderChart({}), "DaemonSet", "nodemesh-agent"), "agent")
          .added_capabilities();
  REQUIRE_FALSE(granted.empty());
  const std::string missing = GENERATE_COPY(from_range(granted));
  const std::string name = "CAP_" + missing;
  CAPTURE(name);
  ImageNode cluster;
  cluster.kubelet.CreateNamespace("shop", {{std::string(kMeshLabel), "enabled"}});
  KubePod& pod = cluster.kubelet.StartPod(
      {.namespace_name = "shop", .name = "web-5d8c9-q7w2e", .workload_name = "web"},
      {"sleep", "3600"});
  Container& agent = cluster.StartAgent(missing);
  const std::string lacks = "the agent lacks " + name;

  if (missing == "SYS_ADMIN" || missing == "NET_ADMIN") {
    // Checked at start: the agent stops at once and says what to grant.
    const std::optional<int> code = agent.WaitForExit(30s);
    REQUIRE(code.has_value());
    CHECK(*code != 0);
    const std::string logs = agent.Logs();
    CHECK_THAT(logs, Catch::Contains(lacks) && Catch::Contains("grant it"));
  } else if (missing == "SYS_PTRACE") {
    // Needed to open pods' network namespaces: the agent runs, every meshed pod is pending
    // with the capability named, on /pods and in the log.
    REQUIRE(cluster.WaitForState(pod, "pending"));
    CHECK_THAT(cluster.AgentPod(pod).value("state_reason", ""), Catch::Contains(lacks));
    CHECK(PollUntil([&] { return agent.Logs().find(lacks) != std::string::npos; }, 10s));
  } else {
    FAIL("the chart grants " << name
                             << ", which this test has no expectation for: add what the "
                                "agent does without it");
  }
}

TEST_CASE(
    "image: the aggregator from the image, run as the chart's Deployment says with its RBAC "
    "enforced, serves nodemesh.io/v1alpha1 through the API server's aggregation layer") {
  ImageAggregator cluster;
  Container& aggregator = cluster.Start();
  // Ready as the kubelet's HTTPS readiness probe asks (no certificate verified): it has read
  // the front proxy's CA and names with its ServiceAccount's token.
  const HttpProbeSpec readiness = cluster.container.HttpProbe("readinessProbe");
  REQUIRE(readiness.https);
  const auto probe = [&] {
    return RunCommand({"curl", "-sS", "-k", "-o", "/dev/null", "-w", "%{http_code}", "--max-time",
                       "5", fmt::format("https://127.0.0.1:{}{}", readiness.port, readiness.path)},
                      10s)
        .output;
  };
  REQUIRE(PollUntil([&] { return probe() == "200"; }, 60s, 250ms));
  // The chart's security context: its user and group, the fsGroup, no capability at all.
  const int pid = aggregator.pid();
  REQUIRE(pid > 0);
  const std::string status = ReadFile(fmt::format("/proc/{}/status", pid));
  CHECK_THAT(status, Catch::Contains("Uid:\t65534\t65534\t65534\t65534") &&
                         Catch::Contains("Gid:\t65534\t65534\t65534\t65534"));
  CHECK(EffectiveCapabilities(pid) == 0);

  // Registered as the chart's APIService registers it: its Service's name, the CA the
  // render generated (spec.caBundle), the port its container serves the API on.
  const json apiservice = Find(cluster.manifests, "APIService", "v1alpha1.nodemesh.io");
  cluster.api.RegisterExtension(
      {.namespace_name = apiservice["spec"]["service"]["namespace"],
       .service = apiservice["spec"]["service"]["name"],
       .address = fmt::format("127.0.0.1:{}", readiness.port),
       .ca_bundle_pem = Base64Decode(apiservice["spec"]["caBundle"].get<std::string>())});
  const json extension = cluster.api.ExtensionStatus();
  INFO(extension.dump(1));
  REQUIRE(extension["available"] == true);

  // Through the API server, with the real kubectl: discovery, and a stat of namespace shop
  // as the user bound to nodemesh-read there.
  const CommandResult discovery =
      cluster.KubectlGetRaw(ImageAggregator::kReader, "/apis/nodemesh.io/v1alpha1");
  INFO(Describe(discovery));
  REQUIRE(discovery.exit_code == 0);
  const json resources = json::parse(discovery.output);
  CHECK(resources["kind"] == "APIResourceList");
  CHECK(resources["groupVersion"] == "nodemesh.io/v1alpha1");
  std::set<std::string> names;
  for (const json& resource : resources["resources"]) names.insert(resource["name"]);
  CHECK(names.contains("stats"));

  const std::string stats_path = "/apis/nodemesh.io/v1alpha1/namespaces/shop/stats/deployment";
  const CommandResult stats = cluster.KubectlGetRaw(ImageAggregator::kReader, stats_path);
  INFO(Describe(stats));
  REQUIRE(stats.exit_code == 0);
  v1::StatSummaryResponse response;
  const absl::Status parsed = httpapi::ParseMessageJson(stats.output, &response);
  INFO(parsed.ToString());
  CHECK(parsed.ok());
  // A user bound to nothing: 403, from the API server's own authorization, before its
  // aggregation layer proxies anything.
  const CommandResult refused = cluster.KubectlGetRaw("dave", stats_path);
  INFO(Describe(refused));
  CHECK(refused.exit_code != 0);
  CHECK_THAT(refused.output, Catch::Contains("(Forbidden)"));
  CHECK(cluster.api.Call("GET", stats_path, cluster.api.IssueUserToken("dave")).status == 403);

  // The aggregator asked the API server with the chart's permissions only: nothing it asked
  // was refused, and it had the reader's access reviewed.
  std::set<std::string> reviewed;
  for (const KubeApiServer::Request& request : cluster.api.Requests()) {
    if (request.user != cluster.user) continue;
    INFO(request.method << " " << request.path << ": " << request.status << " by " << request.rule);
    CHECK((request.status == 200 || request.status == 201));
    if (request.review.is_object() && request.review.contains("allowed")) {
      reviewed.insert(fmt::format("{} {}", request.review.value("user", ""),
                                  request.review["allowed"].get<bool>()));
    }
  }
  CHECK(reviewed == std::set<std::string>{fmt::format("{} true", ImageAggregator::kReader)});
  // Stopped as the kubelet stops it: a clean exit.
  CHECK(aggregator.Stop(30s) == std::optional<int>(0));
}

}  // namespace
}  // namespace nodemesh::testing
