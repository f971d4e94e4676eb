// The Services' store kept per event of the watch: each version shares with the one before
// it what the event did not change.
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "agent/inventory/kubernetes.h"

namespace nodemesh::agent {
namespace {

nlohmann::json Service(const std::string& name, const std::vector<std::string>& ips,
                       const std::string& label = "") {
  nlohmann::json service = {{"metadata", {{"namespace", "shop"}, {"name", name}}},
                            {"spec", {{"clusterIPs", ips}}}};
  if (!label.empty()) service["metadata"]["labels"] = {{"app", label}};
  return service;
}

std::vector<std::string> ChangedKeys(const ServiceMap& before, const ServiceMap& after) {
  std::vector<std::string> keys;
  ServiceMap::Diff(
      before, after,
      [&](const std::string& key, const ServiceInfo*, const ServiceInfo*) { keys.push_back(key); });
  return keys;
}

TEST_CASE("service store: kept per event, headless Services left out, unchanged ones shared") {
  ServiceStore store;
  store.Replace({{"shop/cart", Service("cart", {"10.96.0.10"})},
                 {"shop/web", Service("web", {"10.96.0.11", "fd00:96::11"})},
                 {"shop/db", Service("db", {"None"})}});
  const ServiceMap listed = store.Snapshot();
  CHECK(listed.size() == 2);  // db is headless
  REQUIRE(listed.Find("shop/web") != nullptr);
  CHECK(listed.Find("shop/web")->cluster_ips.size() == 2);

  // A label changed: nothing the agent keeps, so the same version.
  store.Put("shop/cart", Service("cart", {"10.96.0.10"}, "cart"));
  CHECK(ChangedKeys(listed, store.Snapshot()).empty());
  // Its address changed: that Service only.
  store.Put("shop/cart", Service("cart", {"10.96.0.20"}));
  const ServiceMap moved = store.Snapshot();
  CHECK(ChangedKeys(listed, moved) == std::vector<std::string>{"shop/cart"});
  CHECK(listed.Find("shop/cart")->cluster_ips[0].ToString() == "10.96.0.10");  // unchanged
  CHECK_FALSE(store.Remove("shop/db"));  // never held: nothing changed
  CHECK(store.Remove("shop/web"));
  // A list again (after a 410) with web back and cart gone.
  store.Replace({{"shop/web", Service("web", {"10.96.0.11", "fd00:96::11"})}});
  CHECK(ChangedKeys(listed, store.Snapshot()) == std::vector<std::string>{"shop/cart"});
}

}  // namespace
}  // namespace nodemesh::agent
