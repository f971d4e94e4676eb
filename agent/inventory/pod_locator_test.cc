// The pod locator over cgroup trees laid out as each kubelet setup makes them (cgroupfs and
// systemd drivers; containerd, CRI-O, Docker and crun; k3s, RKE2, kind, k3d), built as
// plain directories in a temporary directory, and a fake /proc for a pid namespace other
// than the agent's. Entering a pod's namespace needs root: that part is in the kernel tier
// (test/kernel/pod_locator_test.cc); here only the test's own, host, namespace is met.
#include "agent/inventory/pod_locator.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <string>
#include <vector>

#include "test/lib/files.h"

namespace nodemesh::agent {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;
using testing::WriteFile;

constexpr std::string_view kUid = "4f6b6d1c-7a1e-4c1e-9f4a-0b1f1e1f1e1f";
constexpr std::string_view kOtherUid = "0d3c8e5a-2b7f-4a90-8c61-5e4d3c2b1a09";
constexpr std::string_view kContainer =
    "5d8f1e2c3b4a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

// The UID as a systemd slice name spells it.
std::string Underscored(std::string_view uid) {
  std::string text(uid);
  std::replace(text.begin(), text.end(), '-', '_');
  return text;
}

std::string Replace(std::string text, std::string_view from, std::string_view to) {
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  return text;
}

// "{uid}", "{uid_}", "{cid}" in a layout's paths stand for the pod's UID, its systemd
// spelling and a container id.
std::string Expand(std::string_view pattern, std::string_view uid = kUid) {
  std::string text = Replace(std::string(pattern), "{uid_}", Underscored(uid));
  text = Replace(text, "{uid}", uid);
  return Replace(text, "{cid}", kContainer);
}

// A cgroup directory with its cgroup.procs (the processes listed one a line).
void MakeCgroup(const std::string& mount, const std::string& path, std::string_view procs = "") {
  fs::create_directories(mount + path);
  WriteFile(mount + path + "/cgroup.procs", procs);
}

NodePaths PathsOf(const TempDir& cgroups, std::string root, std::string proc_root = "/proc") {
  return {.cgroup_mount = cgroups.path(),
          .cgroup_root = std::move(root),
          .proc_root = std::move(proc_root)};
}

std::string Message(const absl::Status& status) { return std::string(status.message()); }

TEST_CASE("pod locator: a pod directory's name gives its UID, a container's or a look-alike's none",
          "[unit]") {
  const std::string uid(kUid);
  const std::string uid_ = Underscored(kUid);
  const std::string cid(kContainer);
  for (const std::string& name : {
           "pod" + uid,                                              // cgroupfs
           "kubepods-pod" + uid_ + ".slice",                         // systemd, Guaranteed
           "kubepods-burstable-pod" + uid_ + ".slice",               // systemd, Burstable
           "kubepods-besteffort-pod" + uid_ + ".slice",              // systemd, BestEffort
           "kubelet-kubepods-burstable-pod" + uid_ + ".slice",       // kind
           "kubelet-kubepods-pod" + uid_ + ".slice",                 // kind, Guaranteed
           "node-kubelet-kubepods-besteffort-pod" + uid_ + ".slice"  // a deeper --cgroup-root
       }) {
    INFO(name);
    CHECK(PodUidOfCgroupName(name) == uid);
  }
  // A static pod's cgroup is named after its manifest's hash (32 hex digits), which its
  // mirror pod carries in the kubernetes.io/config.mirror annotation.
  const std::string hash = Replace(uid, "-", "");
  CHECK(PodUidOfCgroupName("pod" + hash) == hash);
  CHECK(PodUidOfCgroupName("kubepods-burstable-pod" + hash + ".slice") == hash);
  CHECK_FALSE(PodUidOfCgroupName("pod" + hash.substr(1)));
  for (const std::string& name :
       {"cri-containerd-" + cid + ".scope",
        "crio-" + cid + ".scope",
        "crio-conmon-" + cid + ".scope",
        "docker-" + cid + ".scope",
        cid,
        std::string("container"),
        std::string("kubepods"),
        std::string("burstable"),
        std::string("kubepods.slice"),
        std::string("kubepods-burstable.slice"),
        std::string("pod"),
        std::string("pod.slice"),
        "pod" + Replace(uid, "4f6b", "4F6B"),                   // not lowercase
        "pod" + uid + "x",                                      // not 36 characters
        "pod" + uid.substr(1),                                  // not 36 characters
        "pod" + Replace(uid, "7a1e", "7a1g"),                   // not hex
        "pod" + uid_,                                           // cgroupfs with '_'
        "kubepods-burstable-pod" + uid + ".slice",              // systemd with '-'
        "kubepods-burstable-pod" + uid_,                        // no .slice
        "kubepods-burstable-pod" + uid_ + ".scope",             // a unit of another kind
        "user-pod" + uid_ + ".slice",                           // no kubepods
        "kubepods-guaranteed-pod" + uid_ + ".slice",            // no such QoS class
        "kubepods-burstable-besteffort-pod" + uid_ + ".slice",  // two classes
        "kubepods--pod" + uid_ + ".slice",                      // an empty parent
        "xpod" + uid,
        "pod-" + uid}) {
    INFO(name);
    CHECK_FALSE(PodUidOfCgroupName(name));
  }
}

TEST_CASE("pod locator: a process's cgroup file names its pod wherever the pod sits in the path",
          "[unit]") {
  const std::string uid(kUid);
  struct Case {
    std::string file;
    std::optional<std::string> uid;
  };
  const std::vector<Case> cases = {
      {Expand("0::/kubepods/burstable/pod{uid}/{cid}\n"), uid},
      {Expand("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/"
              "cri-containerd-{cid}.scope/container\n"),
       uid},
      // Read from inside a cgroup namespace: the path climbs out of it first.
      {Expand("0::/../kubepods-besteffort-pod{uid_}.slice/crio-{cid}.scope\n"), uid},
      {Expand("0::/../../pod{uid}/{cid}\n"), uid},
      // The pod's own directory: the pause process of a runtime without sandbox scope.
      {Expand("0::/kubepods/pod{uid}\n"), uid},
      {Expand("0::/docker/{cid}/kubepods/besteffort/pod{uid}/{cid}\n"), uid},
      // A hybrid host: the v1 lines come first and are not read.
      {Expand("12:pids:/kubepods/burstable/pod" + std::string(kOtherUid) +
              "/{cid}\n1:name=systemd:/kubepods/burstable/pod" + std::string(kOtherUid) +
              "/{cid}\n0::/kubepods/burstable/pod{uid}/{cid}\n"),
       uid},
      {Expand("0::/kubepods/burstable/pod{uid}/{cid} (deleted)\n"), uid},
      {Expand("0::/kubepods/burstable/pod{uid}"), uid},  // no final newline
      // Not a pod's.
      {"0::/\n", std::nullopt},
      {"0::/system.slice/containerd.service\n", std::nullopt},
      {"0::/user.slice/user-1000.slice/user@1000.service/app.slice\n", std::nullopt},
      {Expand("0::/kubepods.slice/kubepods-burstable.slice\n"), std::nullopt},
      // Cgroup v1 only: no unified line to read.
      {Expand("4:memory:/kubepods/burstable/pod{uid}/{cid}\n"), std::nullopt},
      {"", std::nullopt},
  };
  for (const Case& c : cases) {
    INFO(c.file);
    CHECK(PodUidOfProcessCgroup(c.file) == c.uid);
  }
}

// A node's cgroup tree with one pod in it, as each kubelet setup lays it out.
struct Layout {
  std::string name;
  std::string root;                     // the scanned subtree, under the mount
  std::vector<std::string> containers;  // the pod's cgroups below the mount, deepest first
  std::string pod;                      // the pod-level cgroup the locator should find
};

const std::vector<Layout>& Layouts() {
  static const std::vector<Layout> layouts = {
      {"cgroupfs, Burstable",
       "/",
       {"/kubepods/burstable/pod{uid}/{cid}"},
       "/kubepods/burstable/pod{uid}"},
      {"cgroupfs, BestEffort (containerd without systemd cgroups)",
       "/",
       {"/kubepods/besteffort/pod{uid}/{cid}"},
       "/kubepods/besteffort/pod{uid}"},
      {"cgroupfs, Guaranteed", "/", {"/kubepods/pod{uid}/{cid}"}, "/kubepods/pod{uid}"},
      {"systemd, containerd",
       "/",
       {"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/"
        "cri-containerd-{cid}.scope"},
       "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice"},
      {"systemd, containerd, Guaranteed",
       "/",
       {"/kubepods.slice/kubepods-pod{uid_}.slice/cri-containerd-{cid}.scope"},
       "/kubepods.slice/kubepods-pod{uid_}.slice"},
      {"systemd, containerd with crun's container sub-cgroup",
       "/",
       {"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/"
        "cri-containerd-{cid}.scope/container"},
       "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice"},
      {"systemd, CRI-O",
       "/",
       {"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/"
        "crio-{cid}.scope",
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/"
        "crio-conmon-{cid}.scope"},
       "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice"},
      {"systemd, Docker",
       "/",
       {"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/"
        "docker-{cid}.scope"},
       "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice"},
      {"k3s, under its own root",
       "/kubepods",
       {"/kubepods/besteffort/pod{uid}/{cid}"},
       "/kubepods/besteffort/pod{uid}"},
      {"RKE2, under its own root",
       "/kubepods",
       {"/kubepods/burstable/pod{uid}/{cid}"},
       "/kubepods/burstable/pod{uid}"},
      {"kind",
       "/",
       {"/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
        "kubelet-kubepods-besteffort-pod{uid_}.slice/cri-containerd-{cid}.scope"},
       "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
       "kubelet-kubepods-besteffort-pod{uid_}.slice"},
      {"kind, seen from a systemd host",
       "/",
       {"/system.slice/docker-{cid}.scope/kubelet.slice/kubelet-kubepods.slice/"
        "kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{uid_}.slice/"
        "cri-containerd-{cid}.scope"},
       "/system.slice/docker-{cid}.scope/kubelet.slice/kubelet-kubepods.slice/"
       "kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{uid_}.slice"},
      {"k3d, nested under Docker",
       "/",
       {"/docker/{cid}/kubepods/burstable/pod{uid}/{cid}"},
       "/docker/{cid}/kubepods/burstable/pod{uid}"},
      {"k3d, scanned from its node's root",
       "/docker/{cid}",
       {"/docker/{cid}/kubepods/besteffort/pod{uid}/{cid}"},
       "/docker/{cid}/kubepods/besteffort/pod{uid}"},
  };
  return layouts;
}

// What a node holds besides its pods: services, a user's units, the QoS parents, a symbolic
// link looping back to the top, another pod.
void MakeNeighbours(const TempDir& cgroups) {
  const std::string& mount = cgroups.path();
  MakeCgroup(mount, "/init.scope", "1\n");
  MakeCgroup(mount, "/system.slice/containerd.service");
  MakeCgroup(mount, "/system.slice/kubelet.service");
  MakeCgroup(mount, "/user.slice/user-1000.slice/user@1000.service/app.slice");
  MakeCgroup(mount, "/kubepods/burstable");
  MakeCgroup(mount, "/kubepods.slice/kubepods-besteffort.slice");
  MakeCgroup(mount, Expand("/kubepods/besteffort/pod{uid}/{cid}", kOtherUid));
  fs::create_directory_symlink(mount, mount + "/system.slice/loop");
}

TEST_CASE("pod locator: every kubelet layout's pod cgroup is found from the pod's UID", "[unit]") {
  for (const Layout& layout : Layouts()) {
    INFO(layout.name);
    TempDir cgroups;
    MakeNeighbours(cgroups);
    for (const std::string& container : layout.containers)
      MakeCgroup(cgroups.path(), Expand(container));
    PodLocator locator(PathsOf(cgroups, Expand(layout.root)));
    CHECK_FALSE(locator.CgroupOf(kUid));  // nothing before the first scan
    locator.Rescan();
    CHECK(locator.CgroupOf(kUid) == Expand(layout.pod));
    if (layout.root == "/") {
      CHECK(locator.CgroupOf(kOtherUid) == Expand("/kubepods/besteffort/pod{uid}", kOtherUid));
    }
    CHECK_FALSE(locator.CgroupOf("0d3c8e5a-2b7f-4a90-8c61-5e4d3c2b1a0a"));
  }
}

TEST_CASE(
    "pod locator: the scan finds pods that came, forgets pods that went, and skips look-alikes",
    "[unit]") {
  TempDir cgroups;
  const std::string& mount = cgroups.path();
  PodLocator locator(PathsOf(cgroups, "/"));
  locator.Rescan();
  CHECK_FALSE(locator.CgroupOf(kUid));

  MakeCgroup(mount, Expand("/kubepods/burstable/pod{uid}/{cid}"));
  // Look-alikes and a link: none of them is a pod's directory.
  MakeCgroup(mount, Expand("/kubepods/burstable/pod{uid_}", kOtherUid));
  MakeCgroup(mount, Expand("/user.slice/user-pod{uid_}.slice", kOtherUid));
  MakeCgroup(mount, "/kubepods/burstable/pod" + Replace(std::string(kOtherUid), "-", ""));
  fs::create_directories(mount + "/links");
  fs::create_directory_symlink(mount + Expand("/kubepods/burstable/pod{uid}"),
                               mount + Expand("/links/pod{uid}", kOtherUid));
  // Deeper than the scan goes (8 levels below the root).
  MakeCgroup(mount, Expand("/a/b/c/d/e/f/g/h/pod{uid}", kOtherUid));
  locator.Rescan();
  CHECK(locator.CgroupOf(kUid) == Expand("/kubepods/burstable/pod{uid}"));
  CHECK_FALSE(locator.CgroupOf(kOtherUid));

  fs::remove_all(mount + "/kubepods");
  locator.Rescan();
  CHECK_FALSE(locator.CgroupOf(kUid));
}

TEST_CASE("pod locator: a few hundred pods are found in one scan", "[unit]") {
  TempDir cgroups;
  const std::string& mount = cgroups.path();
  std::vector<std::string> uids;
  for (int i = 0; i < 300; ++i) {
    uids.push_back(fmt::format("{:08x}-7a1e-4c1e-9f4a-{:012x}", i, i * 7919));
    const char* qos = i % 3 == 0 ? "besteffort" : "burstable";
    MakeCgroup(mount, fmt::format("/kubepods.slice/kubepods-{}.slice/kubepods-{}-pod{}.slice/"
                                  "cri-containerd-{}.scope",
                                  qos, qos, Underscored(uids.back()), kContainer));
  }
  PodLocator locator(PathsOf(cgroups, "/"));
  locator.Rescan();
  for (const std::string& uid : uids) {
    INFO(uid);
    CHECK(locator.CgroupOf(uid));
  }
}

TEST_CASE("pod locator: a pod not found yet is reported with the directory searched", "[unit]") {
  TempDir cgroups;
  MakeCgroup(cgroups.path(), Expand("/kubepods/besteffort/pod{uid}/{cid}", kOtherUid));
  PodLocator locator(PathsOf(cgroups, "/"));
  locator.Rescan();
  const absl::StatusOr<PodLocation> location = locator.Locate(kUid, {});
  REQUIRE_FALSE(location.ok());
  CHECK(absl::IsUnavailable(location.status()));
  CHECK(Message(location.status()) ==
        fmt::format("no cgroup for pod {} under {}/ yet (its containers may not have started)",
                    kUid, cgroups.path()));

  PodLocator under_root(PathsOf(cgroups, "/kubepods/"));
  under_root.Rescan();
  CHECK(Message(under_root.Locate(kUid, {}).status()) ==
        fmt::format("no cgroup for pod {} under {}/kubepods yet (its containers may not have "
                    "started)",
                    kUid, cgroups.path()));

  PodLocator missing_root(PathsOf(cgroups, "/kubepods.slice"));
  missing_root.Rescan();
  CHECK(Message(missing_root.Locate(kUid, {}).status()) ==
        fmt::format("cannot read the cgroup tree at {}/kubepods.slice: No such file or directory",
                    cgroups.path()));
}

TEST_CASE("pod locator: a pod whose cgroups hold no process has none to locate", "[unit]") {
  TempDir cgroups;
  TempDir proc;
  MakeCgroup(cgroups.path(), Expand("/kubepods/besteffort/pod{uid}"));
  MakeCgroup(cgroups.path(), Expand("/kubepods/besteffort/pod{uid}/{cid}"));
  PodLocator locator(PathsOf(cgroups, "/", proc.path()));
  locator.Rescan();
  const absl::StatusOr<PodLocation> location = locator.Locate(kUid, {});
  REQUIRE_FALSE(location.ok());
  CHECK(absl::IsUnavailable(location.status()));
  CHECK(Message(location.status()) == "no process in its cgroup yet");
}

// A /proc of another pid namespace: <pid>/cgroup as the processes there read it (from a
// cgroup namespace: "/.."), and <pid>/ns/net a plain file standing for a pod's namespace.
struct FakeProc {
  TempDir root;

  void Add(int pid, const std::string& cgroup_file, bool with_netns = true) const {
    fs::create_directories(fmt::format("{}/{}/ns", root.path(), pid));
    WriteFile(fmt::format("{}/{}/cgroup", root.path(), pid), cgroup_file);
    if (with_netns) WriteFile(fmt::format("{}/{}/ns/net", root.path(), pid), "");
  }
};

TEST_CASE("pod locator: processes outside the agent's pid namespace are found from the proc root",
          "[unit]") {
  TempDir cgroups;
  FakeProc proc;
  proc.Add(1, "0::/init.scope\n");
  proc.Add(77, Expand("0::/../kubepods-besteffort-pod{uid_}.slice/crio-{cid}.scope\n", kOtherUid));
  proc.Add(4242, Expand("0::/../kubepods-besteffort-pod{uid_}.slice/crio-{cid}.scope\n"));
  proc.Add(4250, Expand("0::/../kubepods-besteffort-pod{uid_}.slice/crio-conmon-{cid}.scope\n"));
  const std::string pod =
      Expand("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice");

  SECTION("listed as 0 in cgroup.procs") {
    MakeCgroup(cgroups.path(), pod);
    MakeCgroup(cgroups.path(), pod + Expand("/crio-{cid}.scope"), "0\n");
    MakeCgroup(cgroups.path(), pod + Expand("/crio-conmon-{cid}.scope"), "0\n");
  }
  SECTION("listed with pids the proc root does not have") {
    MakeCgroup(cgroups.path(), pod);
    MakeCgroup(cgroups.path(), pod + Expand("/crio-{cid}.scope"), "31337\n");
  }
  SECTION("cgroup.procs unreadable") {
    fs::create_directories(cgroups.path() + pod + Expand("/crio-{cid}.scope"));
  }
  PodLocator locator(PathsOf(cgroups, "/", proc.root.path()));
  locator.Rescan();
  const absl::StatusOr<PodLocation> location = locator.Locate(kUid, {});
  INFO(location.status());
  REQUIRE(location.ok());
  CHECK(location->cgroup == pod);
  CHECK(location->pid == 4242);
  CHECK(location->netns == proc.root.path() + "/4242/ns/net");
}

TEST_CASE("pod locator: processes listed in the pod's cgroups are taken as listed", "[unit]") {
  TempDir cgroups;
  FakeProc proc;
  proc.Add(1, "0::/init.scope\n");
  // The cgroup files are not read: cgroup.procs already said whose the process is.
  proc.Add(300, "", true);
  const std::string pod = Expand("/kubepods/burstable/pod{uid}");
  MakeCgroup(cgroups.path(), pod);
  MakeCgroup(cgroups.path(), pod + Expand("/{cid}"), "300\n");
  PodLocator locator(PathsOf(cgroups, "/", proc.root.path()));
  locator.Rescan();
  const absl::StatusOr<PodLocation> location = locator.Locate(kUid, {});
  INFO(location.status());
  REQUIRE(location.ok());
  CHECK(location->cgroup == pod);
  CHECK(location->pid == 300);
  CHECK(location->netns == proc.root.path() + "/300/ns/net");
}

TEST_CASE("pod locator: a pod whose processes share the host's network namespace is refused",
          "[unit]") {
  TempDir cgroups;
  const std::string pod =
      Expand("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice");
  std::vector<IpAddress> ips = {*IpAddress::Parse("10.1.0.4")};

  SECTION("the real /proc, with this test's own process in the pod's cgroup") {
    MakeCgroup(cgroups.path(), pod);
    MakeCgroup(cgroups.path(), pod + Expand("/cri-containerd-{cid}.scope"),
               fmt::format("{}\n", ::getpid()));
    PodLocator locator(PathsOf(cgroups, "/"));
    locator.Rescan();
    const absl::StatusOr<PodLocation> location = locator.Locate(kUid, ips);
    REQUIRE_FALSE(location.ok());
    CHECK(absl::IsUnavailable(location.status()));
    CHECK(Message(location.status()) == "its processes are in the host's network namespace");
    // Even when there is no address to check yet.
    CHECK(Message(locator.Locate(kUid, {}).status()) ==
          "its processes are in the host's network namespace");
  }
  SECTION("a proc root whose process links to the agent's own namespace") {
    FakeProc proc;
    proc.Add(1, "0::/init.scope\n");
    proc.Add(500, Expand("0::/../kubepods-burstable-pod{uid_}.slice/cri-containerd-{cid}.scope\n"),
             false);
    fs::create_symlink("/proc/self/ns/net", proc.root.path() + "/500/ns/net");
    MakeCgroup(cgroups.path(), pod, "0\n");
    PodLocator locator(PathsOf(cgroups, "/", proc.root.path()));
    locator.Rescan();
    CHECK(Message(locator.Locate(kUid, ips).status()) ==
          "its processes are in the host's network namespace");
  }
}

}  // namespace
}  // namespace nodemesh::agent
