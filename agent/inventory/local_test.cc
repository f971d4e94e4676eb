// The local inventory source: every valid version of the file reaches the agent, whether a
// tool replaces the file (a temporary renamed over it, as meshctl inject does) or rewrites
// it in place; an invalid version is reported and skipped.
#include "agent/inventory/local.h"

#include <stdio.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <vector>

#include "test/lib/files.h"

namespace nodemesh::agent {
namespace {

using testing::TempDir;

std::string OnePod(bool meshed) {
  return std::string(R"({"pods":[{"namespace":"emojivoto","name":"web-1","ips":["10.77.0.11"],)") +
         R"("cgroup":"/nodemesh/web-1","netns":"/var/run/netns/web-1","meshed":)" +
         (meshed ? "true" : "false") + "}]}";
}

// Collects the versions the source hands over.
class Versions {
 public:
  void Add(const Inventory& inventory) {
    std::lock_guard lock(mutex_);
    versions_.push_back(inventory);
    changed_.notify_all();
  }
  // Waits until there are `count` versions; the newest then.
  std::optional<Inventory> WaitFor(size_t count) {
    std::unique_lock lock(mutex_);
    if (!changed_.wait_for(lock, std::chrono::seconds(10),
                           [&] { return versions_.size() >= count; })) {
      return std::nullopt;
    }
    return versions_.back();
  }
  size_t size() {
    std::lock_guard lock(mutex_);
    return versions_.size();
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<Inventory> versions_;
};

TEST_CASE("the local inventory follows a file replaced by rename and one rewritten in place",
          "[unit]") {
  TempDir dir;
  const std::string path = dir.Write("inventory.json", OnePod(false));
  Versions versions;
  LocalInventory source(path);
  REQUIRE(source.Start([&](const Inventory& inventory) { versions.Add(inventory); }).ok());
  REQUIRE(versions.size() == 1);  // the first version before Start returns

  // Replaced: a temporary in the same directory renamed over the file (a new inode).
  const std::string temporary = dir.Write(".inventory.json.tmp", OnePod(true));
  REQUIRE(::rename(temporary.c_str(), path.c_str()) == 0);
  std::optional<Inventory> latest = versions.WaitFor(2);
  REQUIRE(latest);
  REQUIRE(latest->pods.size() == 1);
  CHECK(latest->pods[0].meshed);

  // Rewritten in place: the same inode, truncated and written again.
  testing::WriteFile(path, OnePod(false));
  latest = versions.WaitFor(3);
  REQUIRE(latest);
  CHECK_FALSE(latest->pods[0].meshed);
  source.Stop();
}

TEST_CASE("the local inventory skips an invalid version and keeps the last valid one", "[unit]") {
  TempDir dir;
  const std::string path = dir.Write("inventory.json", OnePod(false));
  Versions versions;
  LocalInventory source(path);
  REQUIRE(source.Start([&](const Inventory& inventory) { versions.Add(inventory); }).ok());
  testing::WriteFile(path, R"({"pods":[{"namespace":"emojivoto"}]})");
  testing::WriteFile(path, OnePod(true));
  const std::optional<Inventory> latest = versions.WaitFor(2);
  REQUIRE(latest);
  CHECK(latest->pods[0].meshed);
  source.Stop();
  CHECK(versions.size() == 2);  // the invalid version never reached the agent
}

TEST_CASE("the local inventory refuses to start on an invalid first version", "[unit]") {
  TempDir dir;
  const std::string path = dir.Write("inventory.json", R"({"pods":[{"name":"web-1"}]})");
  LocalInventory source(path);
  const absl::Status status = source.Start([](const Inventory&) {});
  REQUIRE_FALSE(status.ok());
  CHECK(std::string(status.message()).find(R"("namespace" is missing)") != std::string::npos);
}

}  // namespace
}  // namespace nodemesh::agent
