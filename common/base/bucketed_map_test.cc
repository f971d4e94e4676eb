// BucketedMap: a map whose versions share what they did not change.
#include "common/base/bucketed_map.h"

#include <catch2/catch.hpp>
#include <map>
#include <string>
#include <vector>

namespace nodemesh {
namespace {

using Map = BucketedMap<std::string, int>;

struct Change {
  std::string key;
  int before = -1;  // -1: not held
  int after = -1;
  bool operator==(const Change&) const = default;
};

std::vector<Change> ChangesBetween(const Map& before, const Map& after) {
  std::vector<Change> changes;
  Map::Diff(before, after, [&](const std::string& key, const int* was, const int* is) {
    changes.push_back({key, was ? *was : -1, is ? *is : -1});
  });
  std::sort(changes.begin(), changes.end(),
            [](const Change& a, const Change& b) { return a.key < b.key; });
  return changes;
}

TEST_CASE("bucketed map: finds, sets and erases like a map", "[unit]") {
  Map map;
  CHECK(map.empty());
  CHECK(map.Find("a") == nullptr);
  map.Set("a", 1);
  map.Set("b", 2);
  map.Set("a", 3);
  CHECK(map.size() == 2);
  CHECK(*map.Find("a") == 3);
  CHECK(map.Erase("a"));
  CHECK_FALSE(map.Erase("a"));
  CHECK(map.Find("a") == nullptr);
  CHECK(map.size() == 1);
  std::map<std::string, int> all;
  map.ForEach([&](const std::string& key, int value) { all[key] = value; });
  CHECK(all == std::map<std::string, int>{{"b", 2}});
}

TEST_CASE("bucketed map: a copy never sees the changes made after it", "[unit]") {
  Map map;
  for (int i = 0; i < 10'000; ++i) map.Set("service-" + std::to_string(i), i);
  const Map before = map;
  map.Set("service-7", 70);
  map.Erase("service-8");
  map.Set("new", 1);
  CHECK(*before.Find("service-7") == 7);
  CHECK(*before.Find("service-8") == 8);
  CHECK(before.Find("new") == nullptr);
  CHECK(before.size() == 10'000);
  CHECK(map.size() == 10'000);
  CHECK(*map.Find("service-7") == 70);
  CHECK_FALSE(before == map);
  // Diff names exactly what changed, each once.
  CHECK(ChangesBetween(before, map) ==
        std::vector<Change>{{"new", -1, 1}, {"service-7", 7, 70}, {"service-8", 8, -1}});
  CHECK(ChangesBetween(map, map).empty());
  // The same contents, reached apart, are equal.
  Map again = map;
  again.Set("service-7", 7);
  again.Set("service-7", 70);
  CHECK(again == map);
  CHECK(ChangesBetween(map, again).empty());
}

}  // namespace
}  // namespace nodemesh
