#include "cli/inject/local.h"

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>

#include "cli/views/inject.h"
#include "common/base/format.h"
#include "common/inventory/inventory.h"
#include "test/lib/files.h"

namespace nodemesh::cli {
namespace {

namespace fs = std::filesystem;

// One line, as the test nodes write it; web-2 has no "meshed" at all.
constexpr std::string_view kCompact =
    R"({"pods":[)"
    R"({"namespace":"emojivoto","name":"web-1","owner":{"kind":"Deployment","name":"web"},"labels":{"app":"web"},"serviceAccount":"web","ips":["10.77.0.11"],"cgroup":"/nodemesh/web-1","netns":"/var/run/netns/web-1","meshed":false,"inboundPorts":[8080],"node":"node-1"},)"
    R"({"namespace":"emojivoto","name":"web-2","owner":{"kind":"Deployment","name":"web"},"ips":["10.77.0.21"],"cgroup":"/nodemesh/web-2","netns":"/var/run/netns/web-2","node":"node-2"},)"
    R"({"namespace":"emojivoto","name":"emoji-0","owner":{"kind":"StatefulSet","name":"emoji"},"ips":["10.77.0.12"],"cgroup":"/nodemesh/emoji-0","netns":"/var/run/netns/emoji-0","meshed":false,"node":"node-1"},)"
    R"({"namespace":"emojivoto","name":"voting-1","owner":{"kind":"Deployment","name":"voting"},"ips":["10.77.0.13"],"cgroup":"/nodemesh/voting-1","netns":"/var/run/netns/voting-1","meshed":true,"node":"node-2"},)"
    R"({"namespace":"default","name":"debug","ips":["10.77.0.30"],"cgroup":"/nodemesh/debug","netns":"/var/run/netns/debug","meshed":false,"node":"node-1"})"
    R"(]})"
    "\n";

// Indented by another tool, with its own key order and a field the agent does not know.
constexpr std::string_view kIndented = R"({
    "comment": "written by hand",
    "pods": [
        {
            "name": "web-1",
            "namespace": "emojivoto",
            "meshed": false,
            "owner": {
                "name": "web",
                "kind": "Deployment"
            },
            "ips": [
                "10.77.0.11"
            ],
            "cgroup": "/nodemesh/web-1",
            "netns": "/var/run/netns/web-1",
            "inboundPorts": [],
            "labels": {}
        },
        {
            "name": "voting-1",
            "namespace": "emojivoto",
            "meshed": false,
            "owner": {
                "name": "voting",
                "kind": "Deployment"
            },
            "ips": [
                "10.77.0.13"
            ],
            "cgroup": "/nodemesh/voting-1",
            "netns": "/var/run/netns/voting-1"
        }
    ]
})";

using nodemesh::testing::ReadFile;
using nodemesh::testing::TempDir;

// The names in `directory`, sorted.
std::vector<std::string> Entries(const std::string& directory) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(directory)) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

ino_t Inode(const std::string& path) {
  struct stat info;
  REQUIRE(::stat(path.c_str(), &info) == 0);
  return info.st_ino;
}

// `text` with the first occurrence of `from` after `anchor` replaced by `to`.
std::string ReplaceAfter(std::string text, std::string_view anchor, std::string_view from,
                         std::string_view to) {
  const size_t at = text.find(from, text.find(anchor));
  REQUIRE(at != std::string::npos);
  return text.replace(at, from.size(), to);
}

std::string Message(const absl::Status& status) { return std::string(status.message()); }

TEST_CASE("inject flips only `meshed` of the workload's pods, atomically", "[inject]") {
  TempDir dir;
  const std::string path = dir.Write("inventory.json", kCompact);
  REQUIRE(::chmod(path.c_str(), 0640) == 0);
  const ino_t before = Inode(path);

  const auto changes = SetMeshed({path}, {ResourceType::kDeployment, "web"}, "emojivoto", true);
  REQUIRE(changes.ok());
  CHECK(RenderMeshChanges(*changes, true) ==
        "pod emojivoto/web-1 meshed\n"
        "pod emojivoto/web-2 meshed\n");

  std::string expected = ReplaceAfter(std::string(kCompact), R"("name":"web-1")",
                                      R"("meshed":false)", R"("meshed":true)");
  // A pod without the field gets it, last, as the agent's writers would add it.
  expected = ReplaceAfter(expected, R"("name":"web-2")", R"("node":"node-2"})",
                          R"("node":"node-2","meshed":true})");
  CHECK(ReadFile(path) == expected);
  CHECK(Inode(path) != before);  // replaced by a rename, not rewritten in place
  struct stat info;
  REQUIRE(::stat(path.c_str(), &info) == 0);
  CHECK((info.st_mode & 07777) == 0640);
  CHECK(Entries(dir.path()) == std::vector<std::string>{"inventory.json"});  // no temporary left

  SECTION("again: no change, and the file is left alone") {
    const ino_t replaced = Inode(path);
    const auto again = SetMeshed({path}, {ResourceType::kDeployment, "web"}, "emojivoto", true);
    REQUIRE(again.ok());
    CHECK(RenderMeshChanges(*again, true) ==
          "pod emojivoto/web-1 already meshed (no change)\n"
          "pod emojivoto/web-2 already meshed (no change)\n");
    CHECK(ReadFile(path) == expected);
    CHECK(Inode(path) == replaced);
  }

  SECTION("uninject puts it back") {
    const auto undone = SetMeshed({path}, {ResourceType::kDeployment, "web"}, "emojivoto", false);
    REQUIRE(undone.ok());
    CHECK(RenderMeshChanges(*undone, false) ==
          "pod emojivoto/web-1 unmeshed\n"
          "pod emojivoto/web-2 unmeshed\n");
    // web-1 as it was; web-2 keeps the field, now false.
    CHECK(ReadFile(path) == ReplaceAfter(std::string(kCompact), R"("name":"web-2")",
                                         R"("node":"node-2"})",
                                         R"("node":"node-2","meshed":false})"));
  }
}

TEST_CASE("an indented inventory keeps its layout, key order and unknown fields", "[inject]") {
  TempDir dir;
  const std::string path = dir.Write("inventory.json", kIndented);
  const auto changes = SetMeshed({path}, {ResourceType::kPod, "voting-1"}, "emojivoto", true);
  REQUIRE(changes.ok());
  CHECK(RenderMeshChanges(*changes, true) == "pod emojivoto/voting-1 meshed\n");
  CHECK(ReadFile(path) == ReplaceAfter(std::string(kIndented), R"("name": "voting-1")",
                                       R"("meshed": false)", R"("meshed": true)"));
}

TEST_CASE("inject by statefulset, pod and namespace", "[inject]") {
  TempDir dir;
  const std::string path = dir.Write("inventory.json", kCompact);
  const auto emoji = SetMeshed({path}, {ResourceType::kStatefulSet, "emoji"}, "emojivoto", true);
  REQUIRE(emoji.ok());
  CHECK(*emoji == std::vector<MeshChange>{{"emojivoto/emoji-0", true}});

  const auto pod = SetMeshed({path}, {ResourceType::kPod, "debug"}, "default", true);
  REQUIRE(pod.ok());
  CHECK(*pod == std::vector<MeshChange>{{"default/debug", true}});

  // -n does not matter for a namespace: it names its own.
  const auto all = SetMeshed({path}, {ResourceType::kNamespace, "emojivoto"}, "default", false);
  REQUIRE(all.ok());
  CHECK(*all == std::vector<MeshChange>{{"emojivoto/emoji-0", true},
                                        {"emojivoto/voting-1", true},
                                        {"emojivoto/web-1", false},
                                        {"emojivoto/web-2", false}});
  const auto parsed = ParseInventory(ReadFile(path));
  REQUIRE(parsed.ok());
  for (const PodInfo& info : parsed->pods) {
    CHECK(info.meshed == (info.key() == "default/debug"));
  }
}

TEST_CASE("every node's inventory that lists the pod is edited: one line per pod", "[inject]") {
  TempDir dir;
  const std::string node1 = dir.Write("node-1.json", kCompact);
  const std::string node2 = dir.Write("node-2.json", kCompact);
  const auto changes =
      SetMeshed({node1, node2, node1}, {ResourceType::kDeployment, "voting"}, "emojivoto", false);
  REQUIRE(changes.ok());
  CHECK(RenderMeshChanges(*changes, false) == "pod emojivoto/voting-1 unmeshed\n");
  const std::string expected = ReplaceAfter(std::string(kCompact), R"("name":"voting-1")",
                                            R"("meshed":true)", R"("meshed":false)");
  CHECK(ReadFile(node1) == expected);
  CHECK(ReadFile(node2) == expected);
}

TEST_CASE("a resource with no pod is named, with the workloads there", "[inject]") {
  TempDir dir;
  const std::string path = dir.Write("inventory.json", kCompact);
  const auto missing = SetMeshed({path}, {ResourceType::kDeployment, "webb"}, "emojivoto", true);
  REQUIRE_FALSE(missing.ok());
  CHECK(Message(missing.status()) ==
        fmt::format("deploy/webb matches no pod in namespace emojivoto in {}: its workloads are "
                    "deploy/voting, deploy/web, sts/emoji",
                    path));

  const auto no_namespace = SetMeshed({path}, {ResourceType::kDeployment, "web"}, "emoji", true);
  REQUIRE_FALSE(no_namespace.ok());
  CHECK(Message(no_namespace.status()) ==
        fmt::format("namespace emoji has no pods in {}: use -n with one of default, emojivoto",
                    path));
  CHECK(ReadFile(path) == kCompact);
}

TEST_CASE("unreadable and invalid inventories are reported, nothing is written", "[inject]") {
  TempDir dir;
  const std::string missing = dir.path() + "/absent.json";
  const auto absent = SetMeshed({missing}, {ResourceType::kDeployment, "web"}, "emojivoto", true);
  REQUIRE_FALSE(absent.ok());
  CHECK(Message(absent.status()) ==
        fmt::format("cannot read the inventory {} (No such file or directory): pass --inventory "
                    "PATH or set NODEMESH_INVENTORY",
                    missing));

  const std::string nowhere = dir.path() + "/absent/inventory.json";
  const auto no_directory =
      SetMeshed({nowhere}, {ResourceType::kDeployment, "web"}, "emojivoto", true);
  REQUIRE_FALSE(no_directory.ok());
  CHECK(Message(no_directory.status()) ==
        fmt::format("cannot read the inventory {} (its directory: No such file or directory): "
                    "pass --inventory PATH or set NODEMESH_INVENTORY",
                    nowhere));

  const std::string good = dir.Write("good.json", kCompact);
  const std::string bad = dir.Write("bad.json", R"({"pods":[{"namespace":"a"}]})");
  const auto invalid =
      SetMeshed({good, bad}, {ResourceType::kDeployment, "web"}, "emojivoto", true);
  REQUIRE_FALSE(invalid.ok());
  CHECK(Message(invalid.status()) ==
        fmt::format("inventory {} is invalid (pods[0]: \"name\" is missing): fix it first", bad));
  CHECK(ReadFile(good) == kCompact);
}

TEST_CASE("inventory paths: flags, else the environment's list, else the default", "[inject]") {
  CHECK(InventoryPaths({"/a.json"}, "/b.json") == std::vector<std::string>{"/a.json"});
  CHECK(InventoryPaths({}, "/b.json:/c.json") == std::vector<std::string>{"/b.json", "/c.json"});
  CHECK(InventoryPaths({}, "/b.json::") == std::vector<std::string>{"/b.json"});
  CHECK(InventoryPaths({}, std::nullopt) ==
        std::vector<std::string>{"/run/nodemesh/inventory.json"});
  CHECK(InventoryPaths({}, "") == std::vector<std::string>{"/run/nodemesh/inventory.json"});
}

}  // namespace
}  // namespace nodemesh::cli
