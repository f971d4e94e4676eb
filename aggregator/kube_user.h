// A user as the Kubernetes API server authenticated them: what its front proxy passes on to
// an aggregated API (front_proxy.h) and what a SubjectAccessReview asks about
// (kube_authorizer.h), in the fields of Kubernetes' own UserInfo.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace nodemesh::aggregator {

struct KubeUser {
  std::string name{};  // "alice", "system:serviceaccount:ns:sa"
  std::string uid{};   // empty unless the API server passes it on
  std::vector<std::string> groups{};
  // Keys as Kubernetes has them ("authentication.kubernetes.io/pod-name"), values in order.
  std::map<std::string, std::vector<std::string>> extra{};

  bool operator==(const KubeUser&) const = default;
};

}  // namespace nodemesh::aggregator
