#include "common/kube/pods.h"

#include <catch2/catch.hpp>

namespace nodemesh::kube {
namespace {

using nlohmann::json;

json Owner(std::string_view kind, std::string_view name, bool controller = true) {
  return {{"apiVersion", "apps/v1"}, {"kind", kind}, {"name", name}, {"controller", controller}};
}

// The owners as a vector: a braced list of one json is an array for one compiler and a copy
// of its element for another.
json PodOwnedBy(const std::vector<json>& owners, json labels = json::object()) {
  return {{"metadata",
           {{"name", "web-5f7c9-abcde"},
            {"namespace", "emojivoto"},
            {"labels", std::move(labels)},
            {"ownerReferences", json(owners)}}}};
}

TEST_CASE("the workload of a pod comes from its controller reference alone", "[kube]") {
  // A Deployment's ReplicaSet: <deployment>-<pod-template-hash>.
  CHECK(WorkloadOf(PodOwnedBy({Owner("ReplicaSet", "web-5f7c9")},
                              {{"pod-template-hash", "5f7c9"}})) == Workload{"Deployment", "web"});
  // A ReplicaSet of its own (the hash does not match its name), or without the label.
  CHECK(WorkloadOf(
            PodOwnedBy({Owner("ReplicaSet", "web-5f7c9")}, {{"pod-template-hash", "99999"}})) ==
        Workload{"ReplicaSet", "web-5f7c9"});
  CHECK(WorkloadOf(PodOwnedBy({Owner("ReplicaSet", "web")})) == Workload{"ReplicaSet", "web"});
  // A CronJob's Job: <cronjob>-<scheduled minutes>.
  CHECK(WorkloadOf(PodOwnedBy({Owner("Job", "report-29001234")})) == Workload{"CronJob", "report"});
  CHECK(WorkloadOf(PodOwnedBy({Owner("Job", "migrate-db")})) == Workload{"Job", "migrate-db"});
  CHECK(WorkloadOf(PodOwnedBy({Owner("StatefulSet", "db")})) == Workload{"StatefulSet", "db"});
  CHECK(WorkloadOf(PodOwnedBy({Owner("DaemonSet", "fluentd")})) ==
        Workload{"DaemonSet", "fluentd"});
  // Only the controller counts; none, or a static pod's Node, is the pod itself.
  CHECK(WorkloadOf(PodOwnedBy({Owner("ConfigMap", "settings", false),
                               Owner("StatefulSet", "db")})) == Workload{"StatefulSet", "db"});
  CHECK(WorkloadOf(PodOwnedBy({})) == Workload{"Pod", "web-5f7c9-abcde"});
  CHECK(WorkloadOf(PodOwnedBy({Owner("Node", "node-1")})) == Workload{"Pod", "web-5f7c9-abcde"});
  CHECK(WorkloadOf(json::object()) == Workload{"Pod", ""});
}

json Namespace(json labels, json annotations = json::object()) {
  return {{"metadata",
           {{"name", "emojivoto"},
            {"labels", std::move(labels)},
            {"annotations", std::move(annotations)}}}};
}

TEST_CASE("a pod's label wins over its workload's annotation, which wins over its namespace",
          "[kube]") {
  const json web = PodOwnedBy({Owner("ReplicaSet", "web-5f7c9")}, {{"pod-template-hash", "5f7c9"}});
  const json meshed_ns = Namespace({{"nodemesh.io/mesh", "enabled"}});
  const json plain_ns = Namespace(json::object());

  CHECK(DecideMeshing(web, &meshed_ns).meshed);
  CHECK(DecideMeshing(web, &meshed_ns).because ==
        "namespace emojivoto is labelled nodemesh.io/mesh=enabled");
  CHECK_FALSE(DecideMeshing(web, &plain_ns).meshed);
  CHECK_FALSE(DecideMeshing(web, nullptr).meshed);
  CHECK(DecideMeshing(web, nullptr).because == "namespace emojivoto is not known yet");

  const json annotated = Namespace({{"nodemesh.io/mesh", "enabled"}},
                                   {{"nodemesh.io/mesh-workloads",
                                     R"({"Deployment/web":"disabled","Deployment/x":"enabled"})"}});
  CHECK_FALSE(DecideMeshing(web, &annotated).meshed);
  const json only_web = Namespace(
      json::object(), {{"nodemesh.io/mesh-workloads", R"({"Deployment/web":"enabled"})"}});
  CHECK(DecideMeshing(web, &only_web).meshed);
  // An annotation that is not JSON says nothing.
  const json broken = Namespace({{"nodemesh.io/mesh", "enabled"}},
                                {{"nodemesh.io/mesh-workloads", "Deployment/web=disabled"}});
  CHECK(DecideMeshing(web, &broken).meshed);

  json labelled = web;
  labelled["metadata"]["labels"]["nodemesh.io/mesh"] = "enabled";
  CHECK(DecideMeshing(labelled, &annotated).meshed);
  CHECK(DecideMeshing(labelled, &annotated).because ==
        "the pod is labelled nodemesh.io/mesh=enabled");
  labelled["metadata"]["labels"]["nodemesh.io/mesh"] = "disabled";
  CHECK_FALSE(DecideMeshing(labelled, &meshed_ns).meshed);
  // Another value is no opinion.
  labelled["metadata"]["labels"]["nodemesh.io/mesh"] = "yes";
  CHECK(DecideMeshing(labelled, &meshed_ns).meshed);
}

TEST_CASE("host-network pods and nodemesh's own are never meshed, whatever their labels",
          "[kube]") {
  const json meshed_ns = Namespace({{"nodemesh.io/mesh", "enabled"}});
  json host = PodOwnedBy({}, {{"nodemesh.io/mesh", "enabled"}});
  host["spec"]["hostNetwork"] = true;
  CHECK_FALSE(DecideMeshing(host, &meshed_ns).meshed);
  CHECK(DecideMeshing(host, &meshed_ns).because.find("hostNetwork") != std::string::npos);
  const json own = PodOwnedBy(
      json::array(), {{"nodemesh.io/mesh", "enabled"}, {"app.kubernetes.io/part-of", "nodemesh"}});
  CHECK_FALSE(DecideMeshing(own, &meshed_ns).meshed);
}

}  // namespace
}  // namespace nodemesh::kube
