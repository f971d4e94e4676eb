#include "test/k8s/k8s_tools.h"

#include <fmt/format.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <utility>

#include "test/lib/proc_stats.h"
#include "test/lib/tier.h"

namespace nodemesh::testing {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

// Containers of this file carry it, valued "<pid>:<start time>" of the test process.
constexpr std::string_view kOwnerLabel = "io.nodemesh.test.owner";
// podman kills a test container after this long, even if its test was killed first.
constexpr int kContainerLifetimeSeconds = 600;

// A test process as the owner label names it: its pid and start time (so a reused pid is
// not taken for it); "" if it is gone.
std::string ProcessIdentity(int pid) {
  const std::optional<unsigned long long> start = ProcessStartTime(pid);
  return start ? fmt::format("{}:{}", pid, *start) : "";
}

nlohmann::json JsonOf(const YAML::Node& node, YamlScalars scalars) {
  switch (node.Type()) {
    case YAML::NodeType::Map: {
      nlohmann::json object = nlohmann::json::object();
      for (const auto& entry : node) {
        object[entry.first.as<std::string>()] = JsonOf(entry.second, scalars);
      }
      return object;
    }
    case YAML::NodeType::Sequence: {
      nlohmann::json array = nlohmann::json::array();
      for (const auto& item : node) array.push_back(JsonOf(item, scalars));
      return array;
    }
    case YAML::NodeType::Scalar: {
      const std::string text = node.as<std::string>();
      if (scalars == YamlScalars::kStrings || node.Tag() == "!") return text;  // "!": quoted
      if (text == "true" || text == "false") return text == "true";
      if (text == "null" || text == "~") return nullptr;
      if (std::regex_match(text, std::regex("[-+]?[0-9]+"))) return std::stoll(text);
      return text;
    }
    default:
      return nullptr;
  }
}

}  // namespace

std::string Join(const std::vector<std::string>& words, std::string_view separator) {
  std::string joined;
  for (const std::string& word : words) {
    joined += (joined.empty() ? "" : std::string(separator)) + word;
  }
  return joined;
}

void RequireTools() {
  for (const std::string& path : {kHelm, kKubectl, kValidatorModules + "/typescript/package.json",
                                  kValidatorModules + "/kubernetes-models/package.json"}) {
    if (!fs::exists(path)) {
      FAIL(path << " is missing: run `bash test/install-deps.sh`, which installs Helm, kubectl "
                   "and the manifest validator under "
                << kToolsDir);
    }
  }
}

Helm::Helm() { RequireTools(); }

CommandResult Helm::Run(std::vector<std::string> args, const std::string& kubeconfig) const {
  args.insert(args.begin(), kHelm);
  return RunCommand(args, 120s,
                    {.env = {{"HELM_CACHE_HOME", home_.path() + "/cache"},
                             {"HELM_CONFIG_HOME", home_.path() + "/config"},
                             {"HELM_DATA_HOME", home_.path() + "/data"},
                             {"KUBECONFIG", kubeconfig.empty() ? "/dev/null" : kubeconfig}}});
}

std::string Helm::Template(const std::string& chart, std::vector<std::string> args) const {
  std::vector<std::string> command = {"template", "nodemesh",       chart,       "--namespace",
                                      "nodemesh", "--kube-version", kKubeVersion};
  command.insert(command.end(), args.begin(), args.end());
  const CommandResult result = Run(command);
  INFO("helm " << Join(command) << ":\n" << result.output);
  REQUIRE(result.exit_code == 0);
  return result.output;
}

nlohmann::json YamlDocuments(const std::string& text, YamlScalars scalars) {
  nlohmann::json documents = nlohmann::json::array();
  for (const YAML::Node& document : YAML::LoadAll(text)) {
    if (document.IsMap()) documents.push_back(JsonOf(document, scalars));
  }
  return documents;
}

nlohmann::json ObjectOf(const nlohmann::json& documents, std::string_view kind,
                        std::string_view name) {
  for (const nlohmann::json& object : documents) {
    if (object.value("kind", "") == kind && object["metadata"].value("name", "") == name) {
      return object;
    }
  }
  return nullptr;
}

Podman::Podman() {
  conf_ = dir_.Write("containers.conf", R"([containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
)");
  SweepStale();
}

CommandResult Podman::Run(std::vector<std::string> args, std::chrono::milliseconds timeout) const {
  args.insert(args.begin(), "podman");
  return RunCommand(std::move(args), timeout, {.env = {{"CONTAINERS_CONF", conf_}}});
}

std::string Podman::Check(std::vector<std::string> args, std::chrono::milliseconds timeout) const {
  const CommandResult result = Run(args, timeout);
  if (result.exit_code != 0) {
    throw std::runtime_error("podman " + Join(args) + ": " + Describe(result));
  }
  return result.output;
}

void Podman::SweepStale() const {
  const CommandResult listed =
      Run({"ps", "--all", "--filter", fmt::format("label={}", kOwnerLabel), "--format",
           fmt::format("{{{{.ID}}}} {{{{index .Labels \"{}\"}}}}", kOwnerLabel)});
  std::istringstream lines(listed.output);
  std::string id, owner;
  while (lines >> id >> owner) {
    const int pid = std::atoi(owner.c_str());
    if (pid > 0 && ProcessIdentity(pid) == owner) continue;
    Run({"rm", "--force", "--time", "0", id});
  }
}

Container::Container(const Podman& podman, std::vector<std::string> args) : podman_(podman) {
  const std::string cid_file = dir_.path() + "/cid";
  std::vector<std::string> run = {
      "run",       "--detach",
      "--cidfile", cid_file,
      "--label",   fmt::format("{}={}", kOwnerLabel, ProcessIdentity(::getpid())),
      "--timeout", std::to_string(kContainerLifetimeSeconds)};
  run.insert(run.end(), args.begin(), args.end());
  command_ = "podman " + Join(run);
  const CommandResult result = podman_.Run(run);
  id_ = ReadFile(cid_file);
  if (result.exit_code != 0) {
    Remove();
    throw std::runtime_error(command_ + ": " + Describe(result));
  }
}

Container::~Container() { Remove(); }

int Container::pid() const {
  const CommandResult result = podman_.Run({"inspect", "--format", "{{.State.Pid}}", id_});
  return result.exit_code == 0 ? std::atoi(result.output.c_str()) : 0;
}

std::optional<int> Container::WaitForExit(std::chrono::milliseconds timeout) const {
  std::optional<int> code;
  PollUntil(
      [&] {
        const CommandResult result =
            podman_.Run({"inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", id_});
        if (result.output.starts_with("exited ")) code = std::atoi(result.output.c_str() + 7);
        return code.has_value();
      },
      timeout, 250ms);
  return code;
}

std::string Container::Logs() const { return podman_.Run({"logs", id_}).output; }

std::optional<int> Container::Stop(std::chrono::seconds grace) const {
  podman_.Run({"stop", "--time", std::to_string(grace.count()), id_}, grace + 30s);
  return WaitForExit(5s);
}

void Container::Remove() noexcept {
  if (id_.empty()) return;
  try {
    podman_.Run({"rm", "--force", "--time", "5", id_});
  } catch (...) {
  }
}

}  // namespace nodemesh::testing
