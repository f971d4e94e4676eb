#include "test/lib/kube_apiserver.h"

#include <absl/strings/escaping.h>
#include <absl/strings/numbers.h>
#include <curl/curl.h>
#include <fmt/format.h>

#include <filesystem>
#include <random>
#include <stdexcept>

#include "test/lib/certificates.h"
#include "test/lib/peers.h"
#include "test/lib/process.h"

namespace nodemesh::testing {
namespace {

using namespace std::chrono_literals;

constexpr std::chrono::milliseconds kStartTimeout = 15s;
constexpr long kRequestTimeoutMs = 10000;

std::string RandomToken() {
  std::random_device random;
  std::string token;
  for (int i = 0; i < 4; ++i) token += fmt::format("{:08x}", random());
  return token;
}

size_t AppendBody(char* data, size_t size, size_t count, void* body) {
  static_cast<std::string*>(body)->append(data, size * count);
  return size * count;
}

void InitCurlOnce() {
  static const bool initialised = [] {
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
  }();
  if (!initialised) throw std::runtime_error("curl_global_init failed");
}

std::string Quoted(std::string_view text) { return nlohmann::json(std::string(text)).dump(); }

}  // namespace

nlohmann::json KubeApiServer::Response::json() const { return nlohmann::json::parse(body); }

KubeApiServer::KubeApiServer(KubeApiServerOptions options)
    : options_(std::move(options)), admin_token_(RandomToken()) {
  InitCurlOnce();
  MakeCa(dir_, "ca");
  MakeCa(dir_, "other-ca");
  MakeServerCertificate(dir_, "ca");
  MakeCa(dir_, "front-proxy-ca");
  MakeClientCertificate(dir_, "front-proxy-ca", "front-proxy-client", "/CN=front-proxy-client");
  MakeClientCertificate(dir_, "front-proxy-ca", "not-allowed", "/CN=not-allowed");
  Start();
}

KubeApiServer::~KubeApiServer() = default;  // the Process stops the server

std::string KubeApiServer::url() const { return fmt::format("https://{}:{}", host(), port_); }
std::string KubeApiServer::host() const { return "127.0.0.1"; }
int KubeApiServer::port() const { return port_; }
std::string KubeApiServer::ca_file() const { return dir_.path() + "/ca.crt"; }
std::string KubeApiServer::other_ca_file() const { return dir_.path() + "/other-ca.crt"; }
std::string KubeApiServer::admin_token() const { return admin_token_; }
std::string KubeApiServer::front_proxy_ca_file() const {
  return dir_.path() + "/front-proxy-ca.crt";
}
std::string KubeApiServer::front_proxy_client_cert() const {
  return dir_.path() + "/front-proxy-client.crt";
}
std::string KubeApiServer::front_proxy_client_key() const {
  return dir_.path() + "/front-proxy-client.key";
}
std::string KubeApiServer::not_allowed_client_cert() const {
  return dir_.path() + "/not-allowed.crt";
}
std::string KubeApiServer::not_allowed_client_key() const {
  return dir_.path() + "/not-allowed.key";
}

void KubeApiServer::Start() {
  if (running()) throw std::runtime_error("KubeApiServer::Start: already running");
  const std::string ready_file = dir_.path() + "/ready";
  std::filesystem::remove(ready_file);
  const std::string& d = dir_.path();
  std::vector<std::string> argv = {kPython, "-u", SourcePath("test/lib/kube_apiserver.py")};
  argv.insert(argv.end(), {"--port", std::to_string(port_), "--ready-file", ready_file});
  argv.insert(argv.end(), {"--cert", d + "/server.crt", "--key", d + "/server.key"});
  argv.insert(argv.end(), {"--admin-token", admin_token_});
  if (options_.seed_file.empty()) {
    argv.insert(argv.end(), {"--state", d + "/state.json"});
  } else {
    argv.insert(argv.end(), {"--seed", options_.seed_file});
  }
  argv.insert(argv.end(),
              {"--client-ca", ca_file(), "--front-proxy-ca", front_proxy_ca_file(),
               "--front-proxy-allowed-name", "front-proxy-client", "--front-proxy-client-cert",
               front_proxy_client_cert(), "--front-proxy-client-key", front_proxy_client_key()});
  argv.insert(argv.end(), {"--bookmark-interval",
                           fmt::format("{:.3f}", options_.bookmark_interval.count() / 1e3)});
  if (!options_.rbac_file.empty()) {
    argv.insert(argv.end(), {"--rbac", options_.rbac_file});
  }
  process_ = std::make_unique<Process>(std::move(argv));
  const bool ready = PollUntil(
      [&] { return !process_->IsRunning() || !ReadFile(ready_file).empty(); }, kStartTimeout);
  if (!process_->IsRunning() || !ready) {
    const std::string output = process_->output();
    process_.reset();
    throw std::runtime_error(
        fmt::format("the test Kubernetes API server {}:\n{}",
                    ready ? "exited before it listened" : "did not listen in time", Tail(output)));
  }
  port_ = std::stoi(ReadFile(ready_file));
}

void KubeApiServer::Stop() {
  if (!process_) return;
  try {
    earlier_requests_ = Requests();
  } catch (const std::exception&) {
    // It died already: the requests it answered are gone with it.
  }
  earlier_log_ += process_->output();
  process_.reset();  // SIGTERM; the state file is written on every change, so nothing is lost
}

bool KubeApiServer::running() const { return process_ && process_->IsRunning(); }

pid_t KubeApiServer::pid() const { return running() ? process_->pid() : 0; }

std::string KubeApiServer::log() const {
  return earlier_log_ + (process_ ? process_->output() : std::string());
}

KubeApiServer::Response KubeApiServer::Call(std::string_view method, std::string_view path,
                                            std::string_view token, std::string_view body,
                                            std::string_view content_type) const {
  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), curl_easy_cleanup);
  if (!curl) throw std::runtime_error("curl_easy_init failed");
  curl_slist* headers = nullptr;
  const std::string authorization = fmt::format("Authorization: Bearer {}", token);
  const std::string type = fmt::format("Content-Type: {}", content_type);
  if (!token.empty()) headers = curl_slist_append(headers, authorization.c_str());
  headers = curl_slist_append(headers, type.c_str());
  headers = curl_slist_append(headers, "Accept: application/json");
  headers = curl_slist_append(headers, "Expect:");
  std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> header_list(headers,
                                                                          curl_slist_free_all);
  const std::string target = url() + std::string(path);
  const std::string verb(method);
  const std::string ca = ca_file();
  Response response;
  char error[CURL_ERROR_SIZE] = {};
  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_URL, target.c_str());
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, verb.c_str());
  if (!body.empty()) {
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  }
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(c, CURLOPT_CAINFO, ca.c_str());
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, kRequestTimeoutMs);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, error);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, AppendBody);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &response.body);
  const CURLcode result = curl_easy_perform(c);
  if (result != CURLE_OK) {
    throw std::runtime_error(
        fmt::format("{} {}: {} ({})", verb, target, curl_easy_strerror(result), error));
  }
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  response.status = static_cast<int>(status);
  return response;
}

nlohmann::json KubeApiServer::Admin(std::string_view method, std::string_view path,
                                    const nlohmann::json& body, std::string_view content_type) {
  const Response response =
      Call(method, path, admin_token_, body.is_null() ? "" : body.dump(), content_type);
  if (response.status < 200 || response.status > 299) {
    throw std::runtime_error(
        fmt::format("{} {}: HTTP {}: {}", method, path, response.status, response.body));
  }
  return response.json();
}

nlohmann::json KubeApiServer::Create(std::string_view collection_path,
                                     const nlohmann::json& object) {
  return Admin("POST", collection_path, object);
}

nlohmann::json KubeApiServer::Get(std::string_view path) { return Admin("GET", path, nullptr); }

nlohmann::json KubeApiServer::MergePatch(std::string_view path, const nlohmann::json& patch) {
  return Admin("PATCH", path, patch, "application/merge-patch+json");
}

void KubeApiServer::Delete(std::string_view path) { Admin("DELETE", path, nullptr); }

std::string KubeApiServer::IssueToken(std::string_view namespace_name,
                                      std::string_view service_account,
                                      const TokenOptions& options) {
  nlohmann::json request = {
      {"user", fmt::format("system:serviceaccount:{}:{}", namespace_name, service_account)},
      {"audiences", options.audiences}};
  if (options.expiration) request["expirationSeconds"] = options.expiration->count();
  if (!options.pod_name.empty()) {
    request["pod"] = {{"name", options.pod_name}, {"uid", options.pod_uid}};
  }
  if (!options.node_name.empty()) {
    request["node"] = {{"name", options.node_name}, {"uid", options.node_uid}};
  }
  return Admin("POST", "/_test/tokens", request).at("token").get<std::string>();
}

std::string KubeApiServer::IssueUserToken(
    std::string_view user, const std::vector<std::string>& groups,
    const std::map<std::string, std::vector<std::string>>& extra,
    std::optional<std::chrono::seconds> expiration) {
  nlohmann::json request = {{"user", std::string(user)}, {"groups", groups}, {"extra", extra}};
  if (expiration) request["expirationSeconds"] = expiration->count();
  return Admin("POST", "/_test/tokens", request).at("token").get<std::string>();
}

void KubeApiServer::SetReviewFaults(ReviewFaults faults) {
  Admin("POST", "/_test/reviews",
        {{"delaySeconds", faults.delay.count() / 1e3}, {"unavailable", faults.unavailable}});
}

void KubeApiServer::RevokeToken(std::string_view token) {
  Admin("DELETE", fmt::format("/_test/tokens/{}", token), nullptr);
}

void KubeApiServer::ExpireHistory(GoneMode mode) {
  Admin("POST", "/_test/expire-history",
        {{"mode", mode == GoneMode::kHttpStatus ? "status" : "event"}});
}

void KubeApiServer::StallWatches(bool stalled) {
  Admin("POST", "/_test/stall-watches", {{"stalled", stalled}});
}

void KubeApiServer::CloseWatches() {
  Admin("POST", "/_test/close-watches", nlohmann::json::object());
}

int KubeApiServer::OpenWatches() {
  return Admin("GET", "/_test/watches", nullptr).at("open").get<int>();
}

void KubeApiServer::RegisterExtension(const ExtensionOptions& options) {
  const size_t colon = options.address.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(options.address.substr(colon + 1), &port)) {
    throw std::invalid_argument(
        fmt::format("RegisterExtension: address \"{}\" is not HOST:PORT (\"127.0.0.1:8443\")",
                    options.address));
  }
  const std::string& ns = options.namespace_name;
  const nlohmann::json service = {
      {"apiVersion", "v1"},
      {"kind", "Service"},
      {"metadata", {{"name", options.service}, {"namespace", ns}}},
      {"spec",
       {{"ports",
         {{{"name", "https"}, {"port", 443}, {"protocol", "TCP"}, {"targetPort", "https"}}}}}}};
  const nlohmann::json endpoints = {
      {"apiVersion", "discovery.k8s.io/v1"},
      {"kind", "EndpointSlice"},
      {"metadata",
       {{"name", options.service},
        {"namespace", ns},
        {"labels", {{"kubernetes.io/service-name", options.service}}}}},
      {"addressType", "IPv4"},
      {"endpoints",
       {{{"addresses", {options.address.substr(0, colon)}}, {"conditions", {{"ready", true}}}}}},
      {"ports", {{{"name", "https"}, {"port", port}, {"protocol", "TCP"}}}}};
  const std::string name = fmt::format("{}.{}", options.version, options.group);
  const nlohmann::json apiservice = {
      {"apiVersion", "apiregistration.k8s.io/v1"},
      {"kind", "APIService"},
      {"metadata", {{"name", name}}},
      {"spec",
       {{"group", options.group},
        {"version", options.version},
        {"service", {{"namespace", ns}, {"name", options.service}, {"port", 443}}},
        {"caBundle", absl::Base64Escape(options.ca_bundle_pem)},
        {"groupPriorityMinimum", 1000},
        {"versionPriority", 100}}}};
  for (const auto& [collection, object] :
       {std::pair{fmt::format("/api/v1/namespaces/{}/services", ns), &service},
        std::pair{fmt::format("/apis/discovery.k8s.io/v1/namespaces/{}/endpointslices", ns),
                  &endpoints},
        std::pair{std::string("/apis/apiregistration.k8s.io/v1/apiservices"), &apiservice}}) {
    const std::string object_name = object->at("metadata").at("name");
    if (Call("GET", collection + "/" + object_name, admin_token_).status == 200) {
      Admin("PUT", collection + "/" + object_name, *object);
    } else {
      Create(collection, *object);
    }
  }
  extension_apiservice_ = name;
  Admin("POST", fmt::format("/_test/apiservices/{}/probe", name), nlohmann::json::object());
}

nlohmann::json KubeApiServer::ExtensionStatus() {
  if (extension_apiservice_.empty()) {
    throw std::logic_error("ExtensionStatus: no extension registered (call RegisterExtension)");
  }
  return Admin("GET", fmt::format("/_test/apiservices/{}/probe", extension_apiservice_), nullptr);
}

std::vector<KubeApiServer::Request> KubeApiServer::Requests() {
  std::vector<Request> requests = earlier_requests_;
  const nlohmann::json answer = Admin("GET", "/_test/requests", nullptr);
  for (const nlohmann::json& r : answer.at("requests")) {
    requests.push_back({.method = r.at("method"),
                        .path = r.at("path"),
                        .user = r.at("user"),
                        .status = r.at("status"),
                        .watch = r.at("watch"),
                        .rule = r.at("rule"),
                        .review = r.value("review", nlohmann::json())});
  }
  return requests;
}

std::map<std::string, int> KubeApiServer::RbacRuleUses() {
  std::map<std::string, int> uses;
  const nlohmann::json answer = Admin("GET", "/_test/rbac", nullptr);
  for (const nlohmann::json& rule : answer.at("rules")) {
    uses[rule.at("rule")] = rule.at("uses");
  }
  return uses;
}

void KubeApiServer::WriteServiceAccountDir(const std::string& dir, std::string_view token,
                                           std::string_view namespace_name) const {
  std::filesystem::create_directories(dir);
  WriteFile(dir + "/ca.crt", ReadFile(ca_file()));
  WriteFile(dir + "/token", token);
  WriteFile(dir + "/namespace", namespace_name);
}

void KubeApiServer::WriteKubeconfig(const std::string& path, std::string_view token,
                                    std::string_view context) const {
  // Double-quoted JSON strings are YAML strings too.
  const std::string name = Quoted(context);
  WriteFile(path, fmt::format("apiVersion: v1\n"
                              "kind: Config\n"
                              "clusters:\n"
                              "- name: {0}\n"
                              "  cluster:\n"
                              "    server: {1}\n"
                              "    certificate-authority: {2}\n"
                              "users:\n"
                              "- name: {0}\n"
                              "  user:\n"
                              "    token: {3}\n"
                              "contexts:\n"
                              "- name: {0}\n"
                              "  context:\n"
                              "    cluster: {0}\n"
                              "    user: {0}\n"
                              "current-context: {0}\n",
                              name, Quoted(url()), Quoted(ca_file()), Quoted(token)));
}

}  // namespace nodemesh::testing
