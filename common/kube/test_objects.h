// What the Kubernetes library's tests make again and again: a Pod object to create in the
// test API server (test/lib/kube_apiserver.h), and a client configuration with its
// administrator's rights.
#pragma once

#include <string>

#include "common/kube/config.h"
#include "nlohmann/json.hpp"
#include "test/lib/kube_apiserver.h"

namespace nodemesh::kube {

inline nlohmann::json TestPod(const std::string& namespace_name, const std::string& name,
                              const nlohmann::json& labels = nlohmann::json::object()) {
  return {
      {"apiVersion", "v1"},
      {"kind", "Pod"},
      {"metadata", {{"name", name}, {"namespace", namespace_name}, {"labels", labels}}},
      {"spec", {{"containers", nlohmann::json::array({{{"name", "app"}, {"image", "app:1"}}})}}}};
}

inline Config AdminConfigOf(const nodemesh::testing::KubeApiServer& server) {
  Config config;
  config.server = server.url();
  config.ca_file = server.ca_file();
  config.token = server.admin_token();
  config.source = "test";
  return config;
}

}  // namespace nodemesh::kube
