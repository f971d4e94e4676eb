// The options of an aggregator serving the HTTPS API (http_api.h) for the test Kubernetes
// API server, shared by the tests that run one.
#pragma once

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "aggregator/server.h"
#include "common/tls/tls.h"
#include "test/lib/fake_agent.h"
#include "test/lib/files.h"
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

// node-a's agent with `pods`, known by its certificate: <dir>/node-a.crt and .key, of the CA
// <dir>/serving-ca.crt that signed the aggregator's certificate too.
inline std::unique_ptr<nodemesh::testing::FakeAgent> CertifiedAgent(
    const std::string& address, const nodemesh::testing::TempDir& dir, std::vector<v1::Pod> pods) {
  const auto credentials = ClientCredentials(TlsFiles{.ca = dir.path() + "/serving-ca.crt",
                                                      .cert = dir.path() + "/node-a.crt",
                                                      .key = dir.path() + "/node-a.key",
                                                      .server_name = ""},
                                             "--tls-");
  if (!credentials.ok()) throw std::runtime_error(credentials.status().ToString());
  return std::make_unique<nodemesh::testing::FakeAgent>(address, "node-a", std::move(pods), "",
                                                        *credentials);
}

}  // namespace nodemesh::aggregator
