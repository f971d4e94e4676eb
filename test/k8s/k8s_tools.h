// The k8s tier's tools, for chart_test and image_test: Helm (renders of the chart, each Helm
// in directories of its own), YAML read as JSON, and podman (configured as this machine
// needs it, its test containers labelled with their test process and swept once it is
// gone).
//
// Helm, kubectl and the validator's packages come from test/install-deps.sh, under
// NODEMESH_TOOLS_DIR (a CMake cache variable, /opt/nodemesh-tools by default); without them
// a Helm fails its test, saying so. Include after catch.hpp.
#pragma once

#include <yaml-cpp/yaml.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "test/lib/files.h"
#include "test/lib/peers.h"
#include "test/lib/process.h"

namespace nodemesh::testing {

inline const std::string kChart = SourcePath("helm/nodemesh");
inline const std::string kToolsDir = NODEMESH_TOOLS_DIR;
inline const std::string kHelm = kToolsDir + "/bin/helm";
inline const std::string kKubectl = kToolsDir + "/bin/kubectl";
inline const std::string kValidatorModules = kToolsDir + "/validator/node_modules";
// Renders are made for one Kubernetes version, so that they do not depend on Helm's default.
inline const std::string kKubeVersion = "1.31.0";

// `words` with `separator` between them, for messages: a command line.
std::string Join(const std::vector<std::string>& words, std::string_view separator = " ");

// Fails the test, naming test/install-deps.sh, when Helm, kubectl or the validator's
// packages are missing.
void RequireTools();

// Helm with its own cache, configuration and data directories, so that tests running side
// by side never share them, and no kubeconfig unless `kubeconfig` names one.
class Helm {
 public:
  Helm();  // RequireTools()

  CommandResult Run(std::vector<std::string> args, const std::string& kubeconfig = "") const;
  // `helm template` of `chart` as release nodemesh in namespace nodemesh for kKubeVersion;
  // `args` are more flags (values, --api-versions). Fails the test if Helm does.
  std::string Template(const std::string& chart, std::vector<std::string> args = {}) const;

 private:
  TempDir home_;
};

// How YAML scalars become JSON: all as strings (enough for RBAC objects, and what a
// manifest's text says), or typed as YAML's core schema reads plain scalars (booleans,
// integers, null; quoted ones stay strings), as the Kubernetes API decodes a manifest.
enum class YamlScalars { kStrings, kTyped };
// The documents of a YAML stream that are maps (objects), as a JSON array.
nlohmann::json YamlDocuments(const std::string& text, YamlScalars scalars = YamlScalars::kStrings);
// The object Kind/name of `documents`, or null.
nlohmann::json ObjectOf(const nlohmann::json& documents, std::string_view kind,
                        std::string_view name);

// podman as this machine needs it (CONTAINERS_CONF): runc, which works with the hybrid
// cgroup layout (crun refuses it); cgroupfs, with no systemd to ask; and ulimits no higher
// than the host's own, which a container cannot raise. Making one removes the containers of
// test processes that are gone.
class Podman {
 public:
  Podman();

  CommandResult Run(std::vector<std::string> args,
                    std::chrono::milliseconds timeout = std::chrono::seconds(120)) const;
  // Its output; throws std::runtime_error with it unless podman succeeds.
  std::string Check(std::vector<std::string> args,
                    std::chrono::milliseconds timeout = std::chrono::seconds(120)) const;

 private:
  void SweepStale() const;

  TempDir dir_;
  std::string conf_;
};

// A detached container, labelled with this test process and killed by podman after ten
// minutes even if its test was killed first; removed (stopped first if running) when the
// object goes.
class Container {
 public:
  // `podman run --detach` with `args` (options, the image, its arguments). Throws
  // std::runtime_error if podman fails.
  Container(const Podman& podman, std::vector<std::string> args);
  ~Container();
  Container(const Container&) = delete;
  Container& operator=(const Container&) = delete;

  // Its main process's pid on the host; 0 once it has ended.
  int pid() const;
  // The exit code once it has ended within `timeout`.
  std::optional<int> WaitForExit(std::chrono::milliseconds timeout) const;
  std::string Logs() const;
  // `podman stop` with `grace` before SIGKILL; the exit code.
  std::optional<int> Stop(std::chrono::seconds grace) const;

 private:
  void Remove() noexcept;

  const Podman& podman_;
  TempDir dir_;
  std::string id_;
  std::string command_;
};

}  // namespace nodemesh::testing
