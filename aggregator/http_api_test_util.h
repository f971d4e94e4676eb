// The options of an aggregator serving the HTTPS API (http_api.h) for the test Kubernetes
// API server, shared by the tests that run one.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "aggregator/server.h"
#include "test/lib/kube_apiserver.h"

namespace nodemesh::aggregator {

// On loopback, any free ports: gRPC and the HTTPS API with the serving certificate `cert`
// and its `key` (PEM files), reaching `api` as its ServiceAccount nodemesh/`service_account`;
// no housekeeping thread (tests run it when they mean to).
inline ServerOptions HttpApiServerOptions(nodemesh::testing::KubeApiServer& api,
                                          const std::string& cert, const std::string& key,
                                          std::string_view service_account) {
  ServerOptions options;
  options.listen_address = "127.0.0.1:0";
  options.tls.cert = cert;
  options.tls.key = key;
  kube::Config config;
  config.server = api.url();
  config.ca_file = api.ca_file();
  config.token = api.IssueToken("nodemesh", service_account);
  options.kubernetes.api_server = config;
  options.kubernetes.api_listen = "127.0.0.1:0";
  options.housekeeping_interval = std::chrono::milliseconds(0);
  return options;
}

}  // namespace nodemesh::aggregator
