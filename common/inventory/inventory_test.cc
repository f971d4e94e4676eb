// The local inventory format: what it accepts, its defaults, and that every rejection
// says which pod and which field are wrong.
#include "common/inventory/inventory.h"

#include <catch2/catch.hpp>
#include <string>

namespace nodemesh {
namespace {

// One pod entry with every field set; tests replace or remove fields from it.
std::string PodEntry(const std::string& name = "web-1", const std::string& extra = "") {
  return R"({"namespace":"emojivoto","name":")" + name +
         R"(","owner":{"kind":"Deployment","name":"web"},"labels":{"app":"web","version":"v11"},)"
         R"("serviceAccount":"web","ips":["10.77.0.11","fd00::11"],)"
         R"("cgroup":"/kubepods/pod-web-1","netns":"/var/run/netns/web-1","meshed":true)" +
         extra + "}";
}

std::string Pods(const std::string& entries) { return R"({"pods":[)" + entries + "]}"; }

// The error ParseInventory gives for `json`, or "" if it accepts it.
std::string ErrorOf(const std::string& json) {
  const absl::StatusOr<Inventory> parsed = ParseInventory(json);
  if (parsed.ok()) return "";
  CHECK(absl::IsInvalidArgument(parsed.status()));
  return std::string(parsed.status().message());
}

// A minimal pod ("namespace", "name", "ips", "cgroup", "netns") with `field` set to `value`
// (raw JSON) or, when value is empty, without it.
std::string PodWith(const std::string& field, const std::string& value) {
  const std::pair<std::string, std::string> fields[] = {{"namespace", R"("emojivoto")"},
                                                        {"name", R"("web-1")"},
                                                        {"ips", R"(["10.77.0.11"])"},
                                                        {"cgroup", R"("/kubepods/pod-web-1")"},
                                                        {"netns", R"("/var/run/netns/web-1")"}};
  std::string json = "{";
  bool replaced = false;
  for (const auto& [name, default_value] : fields) {
    const std::string& used = name == field ? value : default_value;
    replaced |= name == field;
    if (used.empty()) continue;
    if (json.size() > 1) json += ",";
    json += "\"" + name + "\":" + used;
  }
  if (!replaced && !value.empty()) json += ",\"" + field + "\":" + value;
  return Pods(json + "}");
}

TEST_CASE("ParseInventory reads the documented format") {
  const absl::StatusOr<Inventory> parsed =
      ParseInventory(Pods(PodEntry("web-1", R"(,"inboundPorts":[8080,9090],"node":"node-1")") +
                          "," + PodEntry("web-2")));
  INFO(parsed.status().ToString());
  REQUIRE(parsed.ok());
  REQUIRE(parsed->pods.size() == 2);
  const PodInfo& pod = parsed->pods[0];
  CHECK(pod.namespace_name == "emojivoto");
  CHECK(pod.name == "web-1");
  CHECK(pod.key() == "emojivoto/web-1");
  CHECK(pod.owner_kind == "Deployment");
  CHECK(pod.owner_name == "web");
  CHECK(pod.labels == std::map<std::string, std::string>{{"app", "web"}, {"version", "v11"}});
  CHECK(pod.service_account == "web");
  REQUIRE(pod.ips.size() == 2);
  CHECK(pod.ips[0] == *IpAddress::Parse("10.77.0.11"));
  CHECK(pod.ips[1] == *IpAddress::Parse("fd00::11"));
  CHECK(pod.cgroup == "/kubepods/pod-web-1");
  CHECK(pod.netns == "/var/run/netns/web-1");
  CHECK(pod.node == "node-1");
  CHECK(pod.meshed);
  CHECK(pod.inbound_ports == std::vector<uint16_t>{8080, 9090});
  CHECK(parsed->pods[1].name == "web-2");
  CHECK_FALSE(parsed->pods[1].inbound_ports.has_value());
}

TEST_CASE("ParseInventory fills in what a pod may leave out") {
  const absl::StatusOr<Inventory> parsed = ParseInventory(PodWith("", ""));
  INFO(parsed.status().ToString());
  REQUIRE(parsed.ok());
  REQUIRE(parsed->pods.size() == 1);
  const PodInfo& pod = parsed->pods[0];
  // A bare pod owns itself, runs as the default service account, and is not meshed.
  CHECK(pod.owner_kind == "Pod");
  CHECK(pod.owner_name == "web-1");
  CHECK(pod.labels.empty());
  CHECK(pod.service_account == "default");
  CHECK(pod.node.empty());
  CHECK_FALSE(pod.meshed);
  CHECK_FALSE(pod.inbound_ports.has_value());

  // null is the same as absent; an empty port list means "capture nothing".
  const absl::StatusOr<Inventory> nulls =
      ParseInventory(Pods(PodEntry("web-1", R"(,"inboundPorts":[])")));
  REQUIRE(nulls.ok());
  CHECK(nulls->pods[0].inbound_ports == std::vector<uint16_t>{});
  const absl::StatusOr<Inventory> null_meshed = ParseInventory(PodWith("meshed", "null"));
  REQUIRE(null_meshed.ok());
  CHECK_FALSE(null_meshed->pods[0].meshed);

  const absl::StatusOr<Inventory> empty = ParseInventory(R"({"pods":[]})");
  REQUIRE(empty.ok());
  CHECK(empty->pods.empty());
}

TEST_CASE("ParseInventory rejects a document that is not an inventory") {
  CHECK(ErrorOf("") == "not valid JSON");
  CHECK(ErrorOf(R"({"pods":[)") == "not valid JSON");
  CHECK(ErrorOf("[]") == R"(expected {"pods": [...]})");
  CHECK(ErrorOf("{}") == R"(expected {"pods": [...]})");
  CHECK(ErrorOf(R"({"pods":{}})") == R"(expected {"pods": [...]})");
  CHECK(ErrorOf(R"({"pods":["web-1"]})") == "pods[0]: a pod must be a JSON object");
}

TEST_CASE("ParseInventory names the entry when its identity is missing or wrong") {
  CHECK(ErrorOf(PodWith("name", "")) == R"(pods[0]: "name" is missing)");
  CHECK(ErrorOf(PodWith("namespace", "")) == R"(pods[0]: "namespace" is missing)");
  CHECK(ErrorOf(PodWith("name", R"("")")) ==
        R"(pods[0]: "namespace" and "name" must not be empty)");
  CHECK(ErrorOf(PodWith("name", "7")) == R"(pods[0]: "name" must be a string, not 7)");
  // The index counts every entry, valid ones before it included.
  CHECK(ErrorOf(Pods(PodEntry("web-1") + R"(,{"namespace":"emojivoto"})")) ==
        R"(pods[1]: "name" is missing)");
}

TEST_CASE("ParseInventory names the pod and the field of a bad entry") {
  const std::string pod = "pods[0]: pod emojivoto/web-1: ";
  SECTION("addresses") {
    CHECK(ErrorOf(PodWith("ips", R"(["10.77.0"])")) ==
          pod + R"("ips"[0]: "10.77.0" is not an IP address)");
    CHECK(ErrorOf(PodWith("ips", R"(["10.77.0.11","10.77.0.300"])")) ==
          pod + R"("ips"[1]: "10.77.0.300" is not an IP address)");
    CHECK(ErrorOf(PodWith("ips", "[10]")) == pod + R"("ips"[0]: 10 is not an IP address)");
    CHECK(ErrorOf(PodWith("ips", "[]")) == pod + R"("ips" must list at least one address)");
    CHECK(ErrorOf(PodWith("ips", "")) == pod + R"("ips" is missing)");
    CHECK(ErrorOf(PodWith("ips", R"("10.77.0.11")")) ==
          pod + R"("ips" must be an array, not "10.77.0.11")");
  }
  SECTION("wrong types") {
    CHECK(ErrorOf(PodWith("meshed", R"("yes")")) ==
          pod + R"("meshed" must be true or false, not "yes")");
    CHECK(ErrorOf(PodWith("owner", R"("web")")) == pod + R"("owner" must be an object, not "web")");
    CHECK(ErrorOf(PodWith("owner", R"({"kind":"Deployment"})")) ==
          pod + R"("owner"."name" is missing)");
    CHECK(ErrorOf(PodWith("owner", R"({"kind":1,"name":"web"})")) ==
          pod + R"("owner"."kind" must be a string, not 1)");
    CHECK(ErrorOf(PodWith("labels", R"(["app"])")) ==
          pod + R"("labels" must be an object, not ["app"])");
    CHECK(ErrorOf(PodWith("labels", R"({"app":"web","replicas":3})")) ==
          pod + R"("labels"."replicas" must be a string)");
    CHECK(ErrorOf(PodWith("serviceAccount", "false")) ==
          pod + R"("serviceAccount" must be a string, not false)");
  }
  SECTION("where the pod lives") {
    CHECK(ErrorOf(PodWith("cgroup", "")) == pod + R"("cgroup" is missing)");
    CHECK(ErrorOf(PodWith("cgroup", R"("kubepods/pod-web-1")")) ==
          pod + R"("cgroup" must be a path under the cgroup v2 mount, starting with /)");
    CHECK(ErrorOf(PodWith("netns", "")) == pod + R"("netns" is missing)");
    CHECK(ErrorOf(PodWith("netns", R"("")")) == pod + R"("netns" must not be empty)");
  }
  SECTION("inbound ports") {
    for (const char* bad : {"0", "65536", "-80", "80.5", R"("80")", "null"}) {
      INFO(bad);
      CHECK(ErrorOf(PodWith("inboundPorts", std::string("[80,") + bad + "]")) ==
            pod + R"("inboundPorts": )" + bad + " is not a port number");
    }
    CHECK(ErrorOf(PodWith("inboundPorts", "80")) ==
          pod + R"("inboundPorts" must be an array, not 80)");
    const absl::StatusOr<Inventory> edges = ParseInventory(PodWith("inboundPorts", "[1,65535]"));
    REQUIRE(edges.ok());
    CHECK(edges->pods[0].inbound_ports == std::vector<uint16_t>{1, 65535});
  }
}

TEST_CASE("ParseInventory rejects a pod listed twice") {
  CHECK(ErrorOf(Pods(PodEntry("web-1") + "," + PodEntry("web-2") + "," + PodEntry("web-1"))) ==
        "pods[2]: pod emojivoto/web-1 is listed twice");
  // The same name in another namespace is another pod.
  const std::string other_namespace =
      R"({"namespace":"other","name":"web-1","ips":["10.77.0.12"],"cgroup":"/a","netns":"/b"})";
  const absl::StatusOr<Inventory> parsed =
      ParseInventory(Pods(PodEntry("web-1") + "," + other_namespace));
  REQUIRE(parsed.ok());
  CHECK(parsed->pods.size() == 2);
}

// An inventory of one pod and the Services `services` (raw JSON: the array's entries).
std::string WithServices(const std::string& services) {
  return R"({"pods":[)" + PodEntry() + R"(],"services":[)" + services + "]}";
}

TEST_CASE("ParseInventory reads Services and their cluster IPs, optional") {
  const absl::StatusOr<Inventory> parsed = ParseInventory(WithServices(
      R"({"namespace":"emojivoto","name":"web-svc","clusterIPs":["10.96.0.10","fd00:96::10"]},)"
      R"({"namespace":"emojivoto","name":"emoji-svc","clusterIPs":["10.96.0.11"]})"));
  INFO(parsed.status().ToString());
  REQUIRE(parsed.ok());
  REQUIRE(parsed->services.size() == 2);
  const ServiceInfo* web = parsed->services.Find("emojivoto/web-svc");
  REQUIRE(web != nullptr);
  CHECK(*web == ServiceInfo{"emojivoto",
                            "web-svc",
                            {*IpAddress::Parse("10.96.0.10"), *IpAddress::Parse("fd00:96::10")}});
  CHECK(parsed->services.Find("emojivoto/emoji-svc") != nullptr);
  // Without "services", none.
  const absl::StatusOr<Inventory> none = ParseInventory(Pods(PodEntry()));
  REQUIRE(none.ok());
  CHECK(none->services.empty());
  CHECK(ParseInventory(WithServices("")).ok());
}

TEST_CASE("ParseInventory names the Service and the field of a bad entry") {
  const std::string service = "services[0]: service emojivoto/web-svc: ";
  const auto with_ips = [](const std::string& ips) {
    return WithServices(R"({"namespace":"emojivoto","name":"web-svc","clusterIPs":)" + ips + "}");
  };
  CHECK(ErrorOf(with_ips(R"(["10.96.0"])")) ==
        service + R"("clusterIPs"[0]: "10.96.0" is not an IP address)");
  CHECK(ErrorOf(with_ips("[]")) == service + R"("clusterIPs" must list at least one address)");
  CHECK(ErrorOf(with_ips(R"("10.96.0.10")")) ==
        service + R"("clusterIPs" must be an array, not "10.96.0.10")");
  CHECK(ErrorOf(WithServices(R"({"namespace":"emojivoto","name":"web-svc"})")) ==
        service + R"("clusterIPs" is missing)");
  CHECK(ErrorOf(WithServices(R"({"namespace":"emojivoto","clusterIPs":["10.96.0.10"]})")) ==
        R"(services[0]: "name" is missing)");
  CHECK(ErrorOf(WithServices(R"({"namespace":"","name":"x","clusterIPs":["10.96.0.10"]})")) ==
        R"(services[0]: "namespace" and "name" must not be empty)");
  CHECK(ErrorOf(WithServices(R"("web-svc")")) == "services[0]: a service must be a JSON object");
  CHECK(ErrorOf(R"({"pods":[],"services":{}})") == R"("services" must be an array, not {})");
}

TEST_CASE("ParseInventory rejects a Service listed twice, or an address of two Services") {
  const std::string web =
      R"({"namespace":"emojivoto","name":"web-svc","clusterIPs":["10.96.0.10"]})";
  CHECK(ErrorOf(WithServices(web + "," + web)) ==
        "services[1]: service emojivoto/web-svc is listed twice");
  CHECK(
      ErrorOf(WithServices(
          web + R"(,{"namespace":"emojivoto","name":"emoji-svc","clusterIPs":["10.96.0.10"]})")) ==
      R"(services[1]: service emojivoto/emoji-svc: "clusterIPs": 10.96.0.10 is service )"
      "emojivoto/web-svc's already");
}

}  // namespace
}  // namespace nodemesh
