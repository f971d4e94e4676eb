// Kernel tier for the pod locator: processes in real network namespaces and in cgroups laid
// out as the kubelet makes them below a simulated node. The locator finds a pod from its
// UID, enters the namespace of one of its processes and checks the pod's address there.
#include "agent/inventory/pod_locator.h"

#include <fmt/format.h>
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <string>

#include "test/lib/process.h"
#include "test/lib/test_node.h"
#include "test/lib/tier.h"

namespace nodemesh::testing {
namespace {

using agent::NodePaths;
using agent::PodLocation;
using agent::PodLocator;

constexpr std::string_view kContainer =
    "5d8f1e2c3b4a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

bool SameFile(const std::string& a, const std::string& b) {
  struct stat sa, sb;
  return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev &&
         sa.st_ino == sb.st_ino;
}

std::string Message(const absl::Status& status) { return std::string(status.message()); }

TEST_CASE("the pod locator finds a pod's cgroup and network namespace from its UID") {
  RequireRoot("kernel");
  PodNetwork network;
  TestNode node(network, "node-a");
  // web-1, under the systemd driver's names, its process in a containerd scope.
  const std::string web_uid = "4f6b6d1c-7a1e-4c1e-9f4a-0b1f1e1f1e1f";
  const Pod& web = node.AddPod(
      {.namespace_name = "emojivoto",
       .name = "web-1",
       .cgroup_subpath = "kubepods.slice/kubepods-burstable.slice/"
                         "kubepods-burstable-pod4f6b6d1c_7a1e_4c1e_9f4a_0b1f1e1f1e1f.slice",
       .container_cgroup = fmt::format("cri-containerd-{}.scope", kContainer)});
  const IpAddress web_ip = *IpAddress::Parse(web.ip);
  Process pause = web.Run({"sleep", "300"});

  // A pod whose process runs in the host's namespace (as a hostNetwork pod's does), under
  // the cgroupfs driver's names.
  const std::string host_uid = "0d3c8e5a-2b7f-4a90-8c61-5e4d3c2b1a09";
  const Pod& host_pod = node.AddPod({.namespace_name = "kube-system",
                                     .name = "node-exporter-1",
                                     .cgroup_subpath = "kubepods/besteffort/pod" + host_uid,
                                     .container_cgroup = std::string(kContainer)});
  Process host_process({"sleep", "300"}, {.cgroup_dir = host_pod.process_cgroup_dir});

  // A pod whose cgroup is made but whose containers have not started.
  const std::string empty_uid = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
  node.AddPod({.namespace_name = "emojivoto",
               .name = "voting-1",
               .cgroup_subpath = "kubepods/pod" + empty_uid});

  PodLocator locator(NodePaths{.cgroup_mount = CgroupMount(), .cgroup_root = node.cgroup_path()});
  locator.Rescan();

  const absl::StatusOr<PodLocation> location = locator.Locate(web_uid, {web_ip});
  INFO(location.status());
  REQUIRE(location.ok());
  CHECK(location->cgroup == web.cgroup_path);
  CHECK(location->pid == pause.pid());
  CHECK(location->netns == fmt::format("/proc/{}/ns/net", pause.pid()));
  CHECK(SameFile(location->netns, web.netns_path));

  // Any of the pod's addresses will do; none of them there, no namespace.
  const IpAddress elsewhere = *IpAddress::Parse("10.77.250.250");
  CHECK(locator.Locate(web_uid, {elsewhere, web_ip}).ok());
  const absl::StatusOr<PodLocation> wrong = locator.Locate(web_uid, {elsewhere});
  REQUIRE_FALSE(wrong.ok());
  CHECK(absl::IsUnavailable(wrong.status()));
  CHECK(Message(wrong.status()) == "no network namespace of its processes holds 10.77.250.250");

  const absl::StatusOr<PodLocation> host = locator.Locate(host_uid, {web_ip});
  REQUIRE_FALSE(host.ok());
  CHECK(Message(host.status()) == "its processes are in the host's network namespace");

  CHECK(Message(locator.Locate(empty_uid, {web_ip}).status()) == "no process in its cgroup yet");
}

}  // namespace
}  // namespace nodemesh::testing
