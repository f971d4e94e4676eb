// The front proxy's settings as the API server publishes them, followed as they change
// through the test API server, and the user of a request as Kubernetes reads it from the
// front proxy's headers; nothing is read from anyone else.
#include "aggregator/front_proxy.h"

#include <catch2/catch.hpp>
#include <mutex>

#include "test/lib/files.h"
#include "test/lib/kube_apiserver.h"
#include "test/lib/process.h"

namespace nodemesh::aggregator {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

// The ConfigMap as kube-apiserver writes it on a kubeadm cluster.
json KubeadmConfigMap() {
  return {
      {"apiVersion", "v1"},
      {"kind", "ConfigMap"},
      {"metadata", {{"name", "extension-apiserver-authentication"}, {"namespace", "kube-system"}}},
      {"data",
       {{"client-ca-file", "-----BEGIN CERTIFICATE-----\ncluster\n-----END CERTIFICATE-----\n"},
        {"requestheader-client-ca-file",
         "-----BEGIN CERTIFICATE-----\nfront\n-----END CERTIFICATE-----\n"},
        {"requestheader-allowed-names", R"(["front-proxy-client"])"},
        {"requestheader-username-headers", R"(["X-Remote-User"])"},
        {"requestheader-uid-headers", "[]"},
        {"requestheader-group-headers", R"(["X-Remote-Group"])"},
        {"requestheader-extra-headers-prefix", R"(["X-Remote-Extra-"])"}}}};
}

RequestHeaderSettings KubeadmSettings() { return *ParseRequestHeaderSettings(KubeadmConfigMap()); }

TEST_CASE("the front proxy's settings are read from the requestheader keys") {
  const absl::StatusOr<RequestHeaderSettings> settings =
      ParseRequestHeaderSettings(KubeadmConfigMap());
  REQUIRE(settings.ok());
  CHECK(settings->client_ca_pem ==
        "-----BEGIN CERTIFICATE-----\nfront\n-----END CERTIFICATE-----\n");
  CHECK(settings->allowed_names == std::vector<std::string>{"front-proxy-client"});
  CHECK(settings->username_headers == std::vector<std::string>{"X-Remote-User"});
  CHECK(settings->uid_headers.empty());
  CHECK(settings->group_headers == std::vector<std::string>{"X-Remote-Group"});
  CHECK(settings->extra_header_prefixes == std::vector<std::string>{"X-Remote-Extra-"});

  // A list key left out reads as an empty list, as Kubernetes reads it.
  json no_names = KubeadmConfigMap();
  no_names["data"].erase("requestheader-allowed-names");
  CHECK(ParseRequestHeaderSettings(no_names)->allowed_names.empty());
}

TEST_CASE("a requestheader list that is not a JSON array of strings is named") {
  json bad = KubeadmConfigMap();
  bad["data"]["requestheader-group-headers"] = "X-Remote-Group";
  const absl::StatusOr<RequestHeaderSettings> settings = ParseRequestHeaderSettings(bad);
  CHECK(settings.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(settings.status().message() ==
        "kube-system/extension-apiserver-authentication has requestheader-group-headers "
        "'X-Remote-Group', which is not a JSON array of strings");
  bad["data"]["requestheader-group-headers"] = "[1]";
  CHECK(ParseRequestHeaderSettings(bad).status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("without a front-proxy CA the API server aggregates nothing") {
  json none = KubeadmConfigMap();
  none["data"].erase("requestheader-client-ca-file");
  const absl::StatusOr<RequestHeaderSettings> settings = ParseRequestHeaderSettings(none);
  CHECK(settings.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(settings.status().message() ==
        "kube-system/extension-apiserver-authentication has no requestheader-client-ca-file: "
        "the API server runs without a front proxy (--requestheader-client-ca-file), so it "
        "proxies to no aggregated API");
}

TEST_CASE("the user comes from the headers of a verified front proxy, as Kubernetes reads them") {
  // As kube-aggregator sends them over HTTP/1.1: names canonicalized by Go, extra keys escaped.
  const HeaderList headers = {
      {"X-Remote-User", "system:serviceaccount:shop:web"},
      {"X-Remote-Group", "system:serviceaccounts"},
      {"x-remote-group", "system:serviceaccounts:shop"},
      {"X-Remote-Group", ""},
      {"X-Remote-Group", "system:authenticated"},
      {"X-Remote-Extra-Authentication.kubernetes.io%2fpod-Name", "web-1"},
      {"X-Remote-Extra-Authentication.kubernetes.io%2fpod-Uid", "7f0c"},
      {"X-Remote-Extra-Scopes", "read"},
      {"X-REMOTE-EXTRA-scopes", "write"},
      {"Accept", "application/json"},
  };
  const absl::StatusOr<KubeUser> user =
      AuthenticateFrontProxy(KubeadmSettings(), "front-proxy-client", headers);
  REQUIRE(user.ok());
  CHECK(user->name == "system:serviceaccount:shop:web");
  CHECK(user->uid.empty());
  CHECK(user->groups == std::vector<std::string>{"system:serviceaccounts",
                                                 "system:serviceaccounts:shop",
                                                 "system:authenticated"});
  CHECK(user->extra == std::map<std::string, std::vector<std::string>>{
                           {"authentication.kubernetes.io/pod-name", {"web-1"}},
                           {"authentication.kubernetes.io/pod-uid", {"7f0c"}},
                           {"scopes", {"read", "write"}}});
}

TEST_CASE("the user's name and uid are the first non-empty of their headers") {
  RequestHeaderSettings settings = KubeadmSettings();
  settings.username_headers = {" X-Remote-User ", "", "X-Other-User"};
  settings.uid_headers = {"X-Remote-Uid"};
  const absl::StatusOr<KubeUser> user = AuthenticateFrontProxy(settings, "front-proxy-client",
                                                               {{"X-Remote-User", ""},
                                                                {"X-Other-User", "bob"},
                                                                {"X-Other-User", "eve"},
                                                                {"X-Remote-Uid", "u-1"}});
  REQUIRE(user.ok());
  CHECK(user->name == "bob");
  CHECK(user->uid == "u-1");
}

TEST_CASE("an extra's key is lower-cased, then percent-decoded unless an escape is invalid") {
  CHECK(ExtraKey("Authentication.kubernetes.io%2fpod-Name") ==
        "authentication.kubernetes.io/pod-name");
  CHECK(ExtraKey("A%2FB") == "a/b");
  CHECK(ExtraKey("100%25") == "100%");
  // Go's PathUnescape fails on these, and Kubernetes keeps the key as it is then.
  CHECK(ExtraKey("A%2fB%zz") == "a%2fb%zz");
  CHECK(ExtraKey("Tail%2") == "tail%2");
  CHECK(ExtraKey("Plus+Sign") == "plus+sign");
}

TEST_CASE("headers without a verified front-proxy certificate are never read") {
  const HeaderList forged = {{"X-Remote-User", "admin"}, {"X-Remote-Group", "system:masters"}};
  const absl::StatusOr<KubeUser> none = AuthenticateFrontProxy(KubeadmSettings(), {}, forged);
  CHECK(none.status().code() == absl::StatusCode::kUnauthenticated);
  CHECK(none.status().message() ==
        "no client certificate of the Kubernetes API server's front proxy: this port serves "
        "the API server's aggregation layer only; call it through the API server (meshctl "
        "with a kubeconfig, or kubectl get --raw /apis/nodemesh.io/v1alpha1/...)");

  // The CA signed it, but for another purpose than the front proxy's.
  const absl::StatusOr<KubeUser> other =
      AuthenticateFrontProxy(KubeadmSettings(), "not-allowed", forged);
  CHECK(other.status().code() == absl::StatusCode::kUnauthenticated);
  CHECK(other.status().message() ==
        "the client certificate of 'not-allowed' is not the front proxy's: its common name is "
        "not in requestheader-allowed-names of kube-system/extension-apiserver-authentication "
        "(front-proxy-client)");
}

TEST_CASE("with no allowed names any certificate of the front-proxy CA is the front proxy") {
  RequestHeaderSettings settings = KubeadmSettings();
  settings.allowed_names.clear();
  const absl::StatusOr<KubeUser> user =
      AuthenticateFrontProxy(settings, "anything", {{"X-Remote-User", "alice"}});
  REQUIRE(user.ok());
  CHECK(user->name == "alice");
  CHECK(user->groups.empty());
  // Still a certificate: none is still no one.
  CHECK(AuthenticateFrontProxy(settings, {}, {{"X-Remote-User", "alice"}}).status().code() ==
        absl::StatusCode::kUnauthenticated);
}

TEST_CASE("a front-proxy request without a user is refused") {
  const absl::StatusOr<KubeUser> user = AuthenticateFrontProxy(
      KubeadmSettings(), "front-proxy-client", {{"X-Remote-Group", "system:authenticated"}});
  CHECK(user.status().code() == absl::StatusCode::kUnauthenticated);
  CHECK(user.status().message() ==
        "the front proxy 'front-proxy-client' named no user: none of the headers X-Remote-User "
        "is set");
}

// The aggregator may read the ConfigMap, as the bootstrap Role lets extension API servers.
json ConfigMapReaderRbac() {
  return json::parse(R"([
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
     "metadata": {"name": "aggregator-auth-reader", "namespace": "kube-system"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                 "name": "extension-apiserver-authentication-reader"},
     "subjects": [{"kind": "ServiceAccount", "name": "aggregator", "namespace": "nodemesh"}]}
  ])");
}

// What the TLS server's verify store was given, as on_client_ca hands it over.
class RecordedClientCa {
 public:
  std::function<void(const std::string&)> Recorder() {
    return [this](const std::string& pem) {
      std::lock_guard lock(mutex_);
      pems_.push_back(pem);
    };
  }
  std::vector<std::string> pems() const {
    std::lock_guard lock(mutex_);
    return pems_;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<std::string> pems_;
};

TEST_CASE("the front proxy's settings follow the ConfigMap as the API server changes it") {
  const nodemesh::testing::TempDir dir;
  nodemesh::testing::KubeApiServer api_server(
      {.rbac_file = dir.Write("rbac.json", ConfigMapReaderRbac().dump())});
  kube::Config config;
  config.server = api_server.url();
  config.ca_file = api_server.ca_file();
  config.token = api_server.IssueToken("nodemesh", "aggregator");
  kube::Client client(config);
  // An API server without a front proxy, to begin with: no ConfigMap.
  api_server.Delete("/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication");
  RecordedClientCa recorded;
  FrontProxyOptions options;
  options.reflector.initial_backoff = 50ms;
  options.reflector.max_backoff = 200ms;
  FrontProxy front_proxy(client, recorded.Recorder(), options);
  const HeaderList alice = {{"X-Remote-User", "alice"}, {"X-Remote-Group", "dev"}};

  // Before the ConfigMap is read nobody is let in, and the caller hears why.
  CHECK(front_proxy.Authenticate("front-proxy-client", alice).status().code() ==
        absl::StatusCode::kUnavailable);
  front_proxy.Start();
  REQUIRE(front_proxy.WaitForSync(10s));
  // No ConfigMap: the API server has no front proxy.
  const absl::StatusOr<KubeUser> missing = front_proxy.Authenticate("front-proxy-client", alice);
  CHECK(missing.status().code() == absl::StatusCode::kUnauthenticated);
  CHECK(missing.status().message() ==
        "kube-system/extension-apiserver-authentication does not exist: the API server "
        "publishes it when it has a front proxy");
  CHECK(front_proxy.client_ca_pem().empty());

  const std::string configmaps = "/api/v1/namespaces/kube-system/configmaps";
  api_server.Create(configmaps, KubeadmConfigMap());
  REQUIRE(nodemesh::testing::PollUntil(
      [&] { return front_proxy.Authenticate("front-proxy-client", alice).ok(); }, 10s));
  CHECK(front_proxy.Authenticate("front-proxy-client", alice)->groups ==
        std::vector<std::string>{"dev"});
  CHECK(front_proxy.client_ca_pem() == KubeadmSettings().client_ca_pem);
  REQUIRE(nodemesh::testing::PollUntil([&] { return !recorded.pems().empty(); }, 10s));
  CHECK(recorded.pems() == std::vector<std::string>{KubeadmSettings().client_ca_pem});

  // A rotation: a new CA and another proxy name. The old name is refused from then on.
  const std::string rotated = "-----BEGIN CERTIFICATE-----\nrotated\n-----END CERTIFICATE-----\n";
  api_server.MergePatch(configmaps + "/extension-apiserver-authentication",
                        {{"data",
                          {{"requestheader-client-ca-file", rotated},
                           {"requestheader-allowed-names", R"(["aggregator-proxy"])"}}}});
  // The settings change before the verify store hears of it: wait for both.
  REQUIRE(nodemesh::testing::PollUntil(
      [&] { return front_proxy.client_ca_pem() == rotated && recorded.pems().back() == rotated; },
      10s));
  CHECK(front_proxy.Authenticate("front-proxy-client", alice).status().code() ==
        absl::StatusCode::kUnauthenticated);
  CHECK(front_proxy.Authenticate("aggregator-proxy", alice).ok());
  CHECK(recorded.pems().back() == rotated);

  // A broken list leaves the last valid settings in force.
  api_server.MergePatch(configmaps + "/extension-apiserver-authentication",
                        {{"data", {{"requestheader-group-headers", "X-Remote-Group"}}}});
  CHECK(front_proxy.Authenticate("aggregator-proxy", alice).ok());

  // Gone: nobody is let in any more, and the verify store is emptied.
  api_server.Delete(configmaps + "/extension-apiserver-authentication");
  REQUIRE(nodemesh::testing::PollUntil(
      [&] { return front_proxy.client_ca_pem().empty() && recorded.pems().back().empty(); }, 10s));
  CHECK(front_proxy.Authenticate("aggregator-proxy", alice).status().code() ==
        absl::StatusCode::kUnauthenticated);
  CHECK(recorded.pems().back().empty());
  front_proxy.Stop();
}

}  // namespace
}  // namespace nodemesh::aggregator
